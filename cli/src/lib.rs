//! The crmsync command line: thin wiring of config, adapters, store and engine.
//!
//! `scenario` starts the three fakes and seeds the standard scenario (SPEC §7); `demo` runs the
//! story on it. The other commands live in their own modules.

pub mod demo;
pub mod scenario;
