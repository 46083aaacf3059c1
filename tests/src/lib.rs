//! End-to-end scenarios across adapters and fakes, and the chaos harness ([`chaos`]).

pub mod chaos;
