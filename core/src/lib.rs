//! crmsync-core: the domain model, the ports every adapter implements, in-memory reference
//! implementations of those ports, and the sync engine (cycle, Reset Sync, report).
//!
//! Start at [`engine::Engine`]; the ports are in [`port`]. With the `testkit` feature, `memory`
//! holds the reference implementations every adapter is compared with (production code never
//! uses them).

pub mod config;
pub mod engine;
pub mod error;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
pub mod model;
pub mod port;
pub mod report;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;

pub use config::{
    ConflictPolicy, ConnectionMode, ContactConfig, ContactFilter, Criterion, CriterionOp, DeletePolicy, Direction,
    EventConfig, EventFilter, HoldDeletes, Rep, SyncConfig, Window,
};
pub use engine::{Engine, LeaseTerms, Leased, Pair, Plan, ResetOutcome, synced_kinds};
pub use error::{Error, ErrorKind, Result, Retry};
pub use model::{Canon, Contact, Event, EventTime, Kind, PostalAddress, Record, Side, SyncKey};
pub use port::{
    Access, Acquire, Actor, Capabilities, Change, Changes, Collection, Crm, CrmUser, Cursors, Found, HeldDelete, Item,
    ItemError, ItemFailure, LeaseHolder, Leases, Link, LinkBatch, LinkState, MANAGE_SYNC, MANAGE_USERS, MatchKey,
    NewItem, Provider, Refusal, RepState, RepStatus, ResetRecord, ResetScope, ResetUndo, Skip, Store, SyncState,
    Update, Verdict, Verification,
};
pub use report::{CycleReport, KindReport, Requests};
/// Secrets (OAuth grants) as the ports take them.
pub use secrecy::SecretString;
