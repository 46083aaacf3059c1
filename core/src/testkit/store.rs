//! Conformance checks of the [`crate::port::Store`] contract, run against the in-memory store,
//! SQLite and PostgreSQL (owned by the store issue).
