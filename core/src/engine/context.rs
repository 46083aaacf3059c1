//! What every stage of one kind's sync shares: the rep, the kind, its policy, the fields both
//! sides store, the event window and the clock; and the one-value-per-side container.

use chrono::{DateTime, Utc};

use crate::config::{HoldDeletes, KindPolicy, Rep, Window};
use crate::model::{Canon, Event, Kind, PROVIDER_OWNED, Record, Side};

/// The fixed facts of one kind of one rep in one cycle.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub rep: &'a Rep,
    pub kind: Kind,
    pub policy: KindPolicy,
    /// Delete Safety thresholds.
    pub hold: HoldDeletes,
    /// The canonical fields both sides store: the only ones compared and written.
    pub fields: Vec<&'static str>,
    pub window: Window,
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    /// A record's canon restricted to the compared fields.
    pub fn canon(&self, r: &Record) -> Canon {
        r.canon().restrict(&self.fields)
    }

    /// A record read on `side` as the engine compares it: for the CRM, the fields only the
    /// provider originates ([`PROVIDER_OWNED`]) hold the `reference` values (the link's
    /// snapshot, or the provider record at first sight): what the CRM derived from them (its
    /// relations to the attendees that are contacts) is never a change. Without a reference
    /// (a CRM record alone) the record's own values stand.
    pub fn side_canon(&self, side: Side, r: &Record, reference: Option<&Canon>) -> Canon {
        let mut c = self.canon(r);
        if let (Side::Crm, Some(base)) = (side, reference) {
            for f in PROVIDER_OWNED.iter().filter(|f| self.fields.contains(f)) {
                match base.get(f) {
                    Some(v) => c.0.insert((*f).to_owned(), v.to_owned()),
                    None => c.0.remove(*f),
                };
            }
        }
        c
    }

    /// Why an event read on `side` stays out of sync: outside the window (either side), or
    /// private, carrying the no-sync marker or refused by a configured filter (provider side).
    pub fn event_skip(&self, side: Side, e: &Event) -> Option<&'static str> {
        if !self.window.contains(e) {
            return Some("outside_window");
        }
        if side == Side::Crm {
            return None;
        }
        let cfg = &self.rep.config.events;
        if cfg.exclude_private && e.private {
            return Some("private");
        }
        if e.categories.iter().any(|c| c.trim().eq_ignore_ascii_case(cfg.no_sync_marker.trim())) {
            return Some("no_sync_marker");
        }
        cfg.filters.iter().find_map(|f| f.skip(e))
    }

    /// Whether a last-synced snapshot lies outside the event window (never for contacts).
    pub fn aged(&self, snapshot: &Canon) -> bool {
        if self.kind != Kind::Event {
            return false;
        }
        let mut rec = Record::Event(Event::new("", self.window.start, self.window.start));
        for f in ["start", "end"] {
            rec.set_field(f, snapshot.get(f).map(str::to_owned));
        }
        !rec.as_event().is_some_and(|e| self.window.contains(e))
    }
}

/// One value per side.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sides<T> {
    pub provider: T,
    pub crm: T,
}

impl<T> Sides<T> {
    pub fn get(&self, side: Side) -> &T {
        match side {
            Side::Provider => &self.provider,
            Side::Crm => &self.crm,
        }
    }
    pub fn get_mut(&mut self, side: Side) -> &mut T {
        match side {
            Side::Provider => &mut self.provider,
            Side::Crm => &mut self.crm,
        }
    }
}
