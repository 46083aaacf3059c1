//! Reps and their sync configuration (docs/behaviour.md §2): directions, filters, conflict and delete policy.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Event, Kind};

/// Which way a kind of record flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Both,
    ProviderToCrm,
    CrmToProvider,
    Off,
}

impl Direction {
    pub fn provider_to_crm(self) -> bool {
        matches!(self, Direction::Both | Direction::ProviderToCrm)
    }
    pub fn crm_to_provider(self) -> bool {
        matches!(self, Direction::Both | Direction::CrmToProvider)
    }
}

/// Who wins when both sides changed since the last sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The CRM record wins as a whole.
    #[default]
    CrmWins,
    /// The provider record wins as a whole.
    ProviderWins,
    /// The record modified last wins as a whole (CRM on a tie or unknown time).
    NewestWins,
    /// Three-way merge against the last-synced snapshot: each side's changed fields are kept;
    /// a field changed differently on both sides goes to the CRM.
    FieldMerge,
}

/// What a deletion (or a move out of scope) on one side does to the linked record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// Delete the linked record on the other side.
    Propagate,
    /// Keep the other record, drop the link and suppress it until the rep re-adds the item.
    Unlink,
}

/// Which CRM contacts belong to a rep (docs/behaviour.md §2: contacts outside the filter never sync).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "criteria")]
pub enum ContactFilter {
    /// Contacts owned by the rep.
    #[default]
    Owned,
    /// Every contact the rep can see.
    Visible,
    /// Contacts owned by the rep that meet every criterion.
    Criteria(Vec<Criterion>),
}

/// `field op value` on a canonical contact field, e.g. `country = "Germany"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criterion {
    pub field: String,
    pub op: CriterionOp,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriterionOp {
    Eq,
    Ne,
    StartsWith,
}

impl Criterion {
    /// Evaluate against a canonical value (comparison is case-insensitive, as SOQL's is).
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("").to_lowercase();
        let want = self.value.to_lowercase();
        match self.op {
            CriterionOp::Eq => v == want,
            CriterionOp::Ne => v != want,
            CriterionOp::StartsWith => v.starts_with(&want),
        }
    }
}

/// An extra, pluggable event filter ("events outside any other configured filter").
/// Boxed in [`EventConfig`]; `dyn-clone` keeps the config `Clone`.
pub trait EventFilter: dyn_clone::DynClone + fmt::Debug + Send + Sync {
    /// `Some(reason)` to skip the event; the reason appears in the report's skip counts.
    fn skip(&self, event: &Event) -> Option<&'static str>;
}
dyn_clone::clone_trait_object!(EventFilter);

/// Skip events whose subject contains any of these words (case-insensitive).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubjectExcludes(pub Vec<String>);

impl EventFilter for SubjectExcludes {
    fn skip(&self, event: &Event) -> Option<&'static str> {
        let s = event.subject.as_deref().unwrap_or("").to_lowercase();
        self.0.iter().any(|w| s.contains(&w.to_lowercase())).then_some("outside_filter")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactConfig {
    pub direction: Direction,
    pub filter: ContactFilter,
    pub conflict: ConflictPolicy,
    pub delete: DeletePolicy,
    /// Exchange contacts folder name.
    pub folder: String,
    /// Google contact group name.
    pub group: String,
    /// Delete Safety: how many deletes one cycle may make before they are held.
    pub hold_deletes: HoldDeletes,
}

impl Default for ContactConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Both,
            filter: ContactFilter::Owned,
            conflict: ConflictPolicy::CrmWins,
            delete: DeletePolicy::Unlink,
            folder: "Salesforce_Sync".into(),
            group: "Salesforce Sync".into(),
            hold_deletes: HoldDeletes::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventConfig {
    pub direction: Direction,
    pub conflict: ConflictPolicy,
    pub delete: DeletePolicy,
    pub days_back: i64,
    pub days_ahead: i64,
    pub exclude_private: bool,
    /// Outlook category / Google marker that keeps an event out of the CRM.
    pub no_sync_marker: String,
    #[serde(skip)]
    pub filters: Vec<Box<dyn EventFilter>>,
    /// Delete Safety: how many deletes one cycle may make before they are held.
    pub hold_deletes: HoldDeletes,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            direction: Direction::ProviderToCrm,
            conflict: ConflictPolicy::CrmWins,
            delete: DeletePolicy::Propagate,
            days_back: 30,
            days_ahead: 365,
            exclude_private: true,
            no_sync_marker: "Don't Sync".into(),
            filters: vec![],
            hold_deletes: HoldDeletes::default(),
        }
    }
}

/// Delete Safety thresholds of one kind: a cycle whose planned deletes on one side exceed
/// `count`, or `percent` % of the kind's links (once they are at least
/// [`HoldDeletes::PERCENT_FLOOR`]), holds those deletes until an admin approves or discards them.
/// Unset: the kind's default (contacts 250 or 25 %, events 50 or 10 %); `0` disables a threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoldDeletes {
    pub count: Option<u64>,
    pub percent: Option<u64>,
}

impl HoldDeletes {
    /// Fewer deletes than this are never held by the percentage alone (two deletes out of
    /// five links are a rep tidying up, not a mass delete).
    pub const PERCENT_FLOOR: u64 = 10;
    /// The largest `count` accepted.
    pub const MAX_COUNT: u64 = 1_000_000;

    /// (count, percent) in force for `kind`.
    pub fn limits(&self, kind: Kind) -> (u64, u64) {
        let (count, percent) = match kind {
            Kind::Contact => (250, 25),
            Kind::Event => (50, 10),
        };
        (self.count.unwrap_or(count), self.percent.unwrap_or(percent))
    }

    /// Whether `deletes` on one side of a kind with `links` links must be held. Pure.
    pub fn exceeded(&self, kind: Kind, deletes: u64, links: u64) -> bool {
        let (count, percent) = self.limits(kind);
        let by_count = count > 0 && deletes > count;
        let by_share = percent > 0
            && deletes >= Self::PERCENT_FLOOR
            && u128::from(deletes) * 100 > u128::from(percent) * u128::from(links);
        by_count || by_share
    }
}

/// A rep's whole sync configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub contacts: ContactConfig,
    pub events: EventConfig,
}

/// The policy the engine applies to one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindPolicy {
    pub direction: Direction,
    pub conflict: ConflictPolicy,
    pub delete: DeletePolicy,
}

impl SyncConfig {
    pub fn policy(&self, kind: Kind) -> KindPolicy {
        match kind {
            Kind::Contact => KindPolicy {
                direction: self.contacts.direction,
                conflict: self.contacts.conflict,
                delete: self.contacts.delete,
            },
            Kind::Event => KindPolicy {
                direction: self.events.direction,
                conflict: self.events.conflict,
                delete: self.events.delete,
            },
        }
    }
    /// The Delete Safety thresholds of one kind (see [`HoldDeletes::limits`]).
    pub fn hold_deletes(&self, kind: Kind) -> HoldDeletes {
        match kind {
            Kind::Contact => self.contacts.hold_deletes,
            Kind::Event => self.events.hold_deletes,
        }
    }
    /// The event window around `now` (saturating: never panics, whatever the numbers).
    pub fn window(&self, now: DateTime<Utc>) -> Window {
        Window { start: shift(now, self.events.days_back, false), end: shift(now, self.events.days_ahead, true) }
    }

    /// The range checks a type cannot express; `InvalidConfig` naming the key and the range.
    pub fn validate(&self) -> crate::error::Result<()> {
        for (key, days) in [("events.days_back", self.events.days_back), ("events.days_ahead", self.events.days_ahead)]
        {
            if !(0..=MAX_WINDOW_DAYS).contains(&days) {
                return Err(crate::error::Error::invalid_config(format!(
                    "{key} = {days} is out of range (0 to {MAX_WINDOW_DAYS} days)"
                )));
            }
        }
        for (kind, h) in [("contacts", self.contacts.hold_deletes), ("events", self.events.hold_deletes)] {
            if let Some(p) = h.percent.filter(|p| *p > 100) {
                return Err(crate::error::Error::invalid_config(format!(
                    "{kind}.hold_deletes.percent = {p} is out of range (0 to 100; 0 disables it)"
                )));
            }
            if let Some(c) = h.count.filter(|c| *c > HoldDeletes::MAX_COUNT) {
                return Err(crate::error::Error::invalid_config(format!(
                    "{kind}.hold_deletes.count = {c} is out of range (0 to {}; 0 disables it)",
                    HoldDeletes::MAX_COUNT
                )));
            }
        }
        Ok(())
    }
}

/// The longest event window on either side of now, in days (ten years).
pub const MAX_WINDOW_DAYS: i64 = 3650;

/// `t` moved `days` forward (or back), saturating at the ends of time.
fn shift(t: DateTime<Utc>, days: i64, forward: bool) -> DateTime<Utc> {
    let moved =
        Duration::try_days(days).and_then(|d| if forward { t.checked_add_signed(d) } else { t.checked_sub_signed(d) });
    moved.unwrap_or(if forward == (days >= 0) { DateTime::<Utc>::MAX_UTC } else { DateTime::<Utc>::MIN_UTC })
}

/// How far beyond the event window providers are read: events that just left the window are
/// still seen (reported as `outside_window`, their links dropped quietly) instead of vanishing.
pub const READ_MARGIN_DAYS: i64 = 3;

/// A half-open time range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window widened by `days` on both sides.
    pub fn widened(&self, days: i64) -> Window {
        Window { start: shift(self.start, days, false), end: shift(self.end, days, true) }
    }

    /// An event overlaps the window when it starts before the end and ends after the start.
    pub fn contains(&self, e: &Event) -> bool {
        e.start.instant() < self.end && e.end.instant() > self.start
    }
}

/// How the provider connection was granted (docs/behaviour.md §5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionMode {
    /// Service account / app-level credentials: sync resumes on the next cycle after a reset.
    #[default]
    AdminManaged,
    /// The rep's own OAuth grant: a reset revokes it and the rep must reconnect.
    UserManaged,
}

/// A rep: a CRM user whose mailbox is synced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rep {
    /// Stable id used as the store key and in sync keys (the CRM user id is a good choice).
    pub id: String,
    pub name: String,
    /// The rep's CRM user id (owner of their contacts and events).
    pub crm_user_id: String,
    /// Provider name as registered with the engine (`exchange`, `google`, …).
    pub provider: String,
    /// The rep's mailbox on the provider (user principal name, e-mail or id).
    pub mailbox: String,
    pub connection: ConnectionMode,
    pub config: SyncConfig,
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn out_of_range_windows_are_refused_and_never_panic() {
        let now = Utc::now();
        for (back, ahead) in [(-1, 10), (10, -1), (i64::MAX, 1), (1, 9_999_999_999), (i64::MIN, i64::MAX), (3651, 0)] {
            let mut c = SyncConfig::default();
            (c.events.days_back, c.events.days_ahead) = (back, ahead);
            let e = c.validate().expect_err("out of range");
            assert_eq!(e.kind(), crate::error::ErrorKind::InvalidConfig);
            assert!(e.message().contains("out of range (0 to 3650 days)"), "{e}");
            let w = c.window(now).widened(READ_MARGIN_DAYS);
            assert!(w.start <= w.end || back < 0 || ahead < 0, "saturating window: {w:?}");
        }
        SyncConfig::default().validate().expect("the defaults are valid");
        let mut c = SyncConfig::default();
        (c.events.days_back, c.events.days_ahead) = (0, MAX_WINDOW_DAYS);
        c.validate().expect("the ends of the range are valid");
    }

    #[test]
    fn hold_thresholds_count_share_floor_and_zero() {
        let (h, c) = (HoldDeletes::default(), Kind::Contact);
        assert!(h.exceeded(c, 300, 1000), "over both");
        assert!(!h.exceeded(c, 250, 1000), "at the count and the share: not over");
        assert!(h.exceeded(c, 251, 100_000), "over the count alone");
        assert!(h.exceeded(c, 30, 100), "over the share alone");
        assert!(!h.exceeded(c, 9, 10), "under the floor the share never holds");
        assert!(h.exceeded(Kind::Event, 51, 100_000) && !h.exceeded(Kind::Event, 50, 1000), "events: 50 or 10 %");
        let off = HoldDeletes { count: Some(0), percent: Some(0) };
        assert!(!off.exceeded(c, u64::MAX, 1), "0 disables both");
        let share = HoldDeletes { count: Some(0), percent: None };
        assert!(!share.exceeded(c, 300, 100_000) && share.exceeded(c, 300, 1000), "the share alone");
        let mut c = SyncConfig::default();
        c.events.hold_deletes.percent = Some(101);
        assert!(c.validate().unwrap_err().message().contains("events.hold_deletes.percent = 101 is out of range"));
        let mut c = SyncConfig::default();
        c.contacts.hold_deletes.count = Some(HoldDeletes::MAX_COUNT + 1);
        assert!(c.validate().unwrap_err().message().contains("contacts.hold_deletes.count"));
    }
}
