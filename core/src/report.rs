//! The cycle report: what one cycle did for one rep, per kind, and how many requests it cost.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Kind, RepState};

/// Counters for one kind in one cycle (the CLI's `COUNTS`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindReport {
    pub created_in_crm: u64,
    pub created_in_provider: u64,
    pub updated_in_crm: u64,
    pub updated_in_provider: u64,
    pub deleted_in_crm: u64,
    pub deleted_in_provider: u64,
    /// Links made this cycle by matching records that already existed on both sides.
    pub linked: u64,
    /// Links dropped this cycle (deleted, left scope or window).
    pub unlinked: u64,
    /// Links turned into suppressions by the delete policy `unlink` or a filter.
    pub suppressed: u64,
    /// Links the rep holds after the cycle.
    pub links_total: u64,
    /// Deletes Delete Safety holds after the cycle (in quarantine, waiting for an admin), per
    /// side whose record they would delete.
    pub held_deletes_in_crm: u64,
    pub held_deletes_in_provider: u64,
    /// Items left out, by reason (`outside_scope`, `outside_filter`, `outside_window`, `private`,
    /// `no_sync_marker`, `category_not_folder`, `suppressed`, `matches_linked_record`,
    /// `ambiguous_match` (another record of the same side with the same match took it),
    /// `source_missing`, …).
    pub skipped: BTreeMap<String, u64>,
    /// Records both sides changed since the last sync.
    pub conflicts: u64,
    /// How conflicts were resolved, by policy name.
    pub conflict_resolutions: BTreeMap<String, u64>,
    /// Items that failed this cycle (recorded with their reason and retried next cycle).
    pub errors: u64,
    pub item_errors: Vec<ItemErrorReport>,
    /// Whether each side was read in full (first sync, after a reset, or an expired cursor).
    pub full_read_provider: bool,
    pub full_read_crm: bool,
    /// A collection-level failure that stopped this kind (nothing after it was applied).
    pub fatal: Option<String>,
    /// Attendee addresses of events written to the CRM this cycle that the CRM did not relate
    /// the event to (no contact with that address, or past the CRM's limit of related
    /// contacts), with the number of events each was left off.
    pub unrelated_attendees: BTreeMap<String, u64>,
}

impl KindReport {
    pub fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_owned()).or_default() += 1;
    }
    /// Records written (created, updated or deleted) on either side.
    pub fn writes(&self) -> u64 {
        self.created_in_crm
            + self.created_in_provider
            + self.updated_in_crm
            + self.updated_in_provider
            + self.deleted_in_crm
            + self.deleted_in_provider
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemErrorReport {
    pub side: String,
    pub id: String,
    pub reason: String,
}

/// HTTP requests each side received during the cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    pub crm: u64,
    pub provider: u64,
}

/// One cycle for one rep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CycleReport {
    pub rep: String,
    pub provider: String,
    pub state: RepState,
    pub started: Option<DateTime<Utc>>,
    pub finished: Option<DateTime<Utc>>,
    pub contacts: KindReport,
    pub events: KindReport,
    pub requests: Requests,
    /// Set when the cycle (or a kind of it) failed; the next cycle repairs what is left.
    pub error: Option<String>,
}

impl CycleReport {
    pub fn writes(&self) -> u64 {
        self.contacts.writes() + self.events.writes()
    }
    pub fn kind_mut(&mut self, kind: Kind) -> &mut KindReport {
        match kind {
            Kind::Contact => &mut self.contacts,
            Kind::Event => &mut self.events,
        }
    }
}
