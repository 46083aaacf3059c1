//! The sync engine.
pub mod decide;
#[derive(Debug)]
pub struct Engine;
#[derive(Debug)]
pub struct ResetOutcome;
