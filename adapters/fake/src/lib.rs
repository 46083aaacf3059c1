//! The chassis every crmsync service fake is built on (Salesforce, Microsoft Graph, Google).
//!
//! A fake is a [`Service`]: a state that names each request's endpoint and serves it. The
//! chassis runs it on a loopback `wiremock` server and owns what every fake needs the same way:
//! - fault injection with one vocabulary: a [`Fault`] kind, and a [`FaultRule`] that says which
//!   requests it hits (any, by endpoint, by method) and when (the next N, or a seeded rate);
//! - one seeded random generator per fake ([`Rng`]), so a seed reproduces a run;
//! - per-endpoint request counters and a bounded request log ([`LogEntry`]);
//! - the OAuth token store and form helpers of the token endpoints ([`Tokens`]);
//! - the handle ([`Handle`]: start on a random port or a given listener, `uri()`, counters,
//!   faults) and the shared state ([`Shared`]).
//!
//! - the control API under `/_crmsync/` (health, reset to the seed, snapshots, faults, the
//!   request log, and each fake's own routes), the HTTP face of the handle.
//!
//! Rules, faults and log entries are serde types, so the control API and CLI flags carry them.

mod chassis;
mod control;
mod fault;
mod log;
pub mod recurrence;
mod server;
mod token;

pub use chassis::{Chassis, Reply};
pub use control::SEED;
pub use control::{MailboxScenario, PREFIX as CONTROL_PREFIX, control_body, control_error};
pub use fault::{Fault, FaultRule, Rng, Schedule};
pub use log::LogEntry;
pub use server::{Handle, Service, Shared};
pub use token::{Tokens, oauth_error, oauth_form};
