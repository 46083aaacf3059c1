//! End-to-end scenarios across adapters and fakes.
