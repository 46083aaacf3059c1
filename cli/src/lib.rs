//! The crmsync command line: thin wiring of config, adapters, store and engine.
//!
//! `scenario` starts the three fakes and seeds the standard scenario; `demo` runs the story on
//! it; `sandbox` serves it on fixed ports with the admin console. `config` parses the config
//! file and wires the engine; `commands` holds `sync`, `reset`, `status` and `connect`; `table`
//! prints reports; `console` is `crmsync serve`, the admin console.

pub mod commands;
pub mod config;
pub mod console;
pub mod demo;
pub mod sandbox;
pub mod scenario;
pub mod table;
pub mod worker;
