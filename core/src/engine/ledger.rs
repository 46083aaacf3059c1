//! The ledger of one kind's sync: its counters (the kind's report), the item errors waiting
//! for the next store commit, and which items failed or were watched this cycle.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::debug;

use crate::model::{Kind, Side};
use crate::port::ItemError;
use crate::report::{ItemErrorReport, KindReport};

/// How the reason of a watched skip (see [`Ledger::skip_and_watch`]) starts in the store.
pub(crate) const WATCHED: &str = "skipped: ";
#[derive(Debug, Serialize)]
pub(crate) struct Ledger {
    #[serde(skip)]
    kind: Kind,
    #[serde(skip)]
    now: DateTime<Utc>,
    /// The kind's counters so far.
    #[serde(flatten)]
    pub report: KindReport,
    /// Item errors waiting for the next commit.
    #[serde(skip)]
    errors: Vec<ItemError>,
    /// (side, id) of every item recorded this cycle.
    #[serde(skip)]
    failed_now: BTreeSet<(Side, String)>,
    /// (side, id) of the item errors of earlier cycles, retried by id this cycle.
    #[serde(skip)]
    retried: Vec<(Side, String)>,
}

impl Ledger {
    pub fn new(kind: Kind, now: DateTime<Utc>, old_errors: &[ItemError]) -> Self {
        Self {
            kind,
            now,
            report: KindReport::default(),
            errors: vec![],
            failed_now: BTreeSet::new(),
            retried: old_errors.iter().map(|e| (e.side, e.id.clone())).collect(),
        }
    }

    /// Count an item left out for `reason`.
    pub fn skip(&mut self, reason: &str) {
        self.report.skip(reason);
    }

    /// Record an item error: counted, reported, retried by id next cycle.
    pub fn fail(&mut self, side: Side, id: &str, reason: String) {
        debug!(side = side.as_str(), id, %reason, "item error");
        self.report.errors += 1;
        self.report.item_errors.push(ItemErrorReport {
            side: side.as_str().into(),
            id: id.into(),
            reason: reason.clone(),
        });
        self.watch(side, id, reason);
    }

    /// Skip an item because of what matched it on the other side, and look at it again next
    /// cycle (by id, like an item error, but not counted as one): the match may go away.
    pub fn skip_and_watch(&mut self, side: Side, id: &str, reason: &'static str) {
        self.report.skip(reason);
        self.watch(side, id, format!("{WATCHED}{reason}"));
    }

    /// Put an item on the retry-by-id list of the store.
    fn watch(&mut self, side: Side, id: &str, reason: String) {
        self.failed_now.insert((side, id.to_owned()));
        self.errors.push(ItemError {
            kind: self.kind,
            side,
            id: id.to_owned(),
            reason,
            attempts: 1,
            first_seen: self.now,
            last_seen: self.now,
        });
    }

    /// The item errors recorded since the last call (for the next store commit).
    pub fn take_errors(&mut self) -> Vec<ItemError> {
        std::mem::take(&mut self.errors)
    }

    /// Errors of earlier cycles that did not come back this cycle.
    pub fn resolved(&self) -> Vec<(Side, String)> {
        self.retried.iter().filter(|k| !self.failed_now.contains(*k)).cloned().collect()
    }

    /// The ids of `side` retried by id this cycle.
    pub fn retried(&self, side: Side) -> impl Iterator<Item = &String> {
        self.retried.iter().filter(move |(s, _)| *s == side).map(|(_, id)| id)
    }
}
