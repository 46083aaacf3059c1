//! What every stage of one kind's sync shares: the rep, the kind, its policy, the fields both
//! sides store, the event window and the clock; and the one-value-per-side container.

use chrono::{DateTime, Utc};

use crate::config::{HoldDeletes, KindPolicy, Rep, Window};
use crate::model::{Canon, Event, Kind, Record, Side};

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
