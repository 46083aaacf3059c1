//! A stateful Microsoft Graph fake on loopback (feature `fake`).
//!
//! Served by the `crmsync-fake` chassis, it speaks the Graph wire protocol the adapter (and any Graph client) uses: the token endpoint
//! (`/{tenant}/oauth2/v2.0/token`, client credentials and refresh-token grants), `/me` and
//! `/users/{id}` mailboxes, contact folders (list, `$filter`, create, child folders), contacts
//! CRUD (a generated `displayName`) and folder delta, `$orderby` on lists, events CRUD, `calendarView` and `calendarView/delta` with window
//! semantics, series expanded from their recurrence patterns (`instances`, `seriesMasterId`,
//! `originalStart`), times kept in their Windows or IANA zones, `$batch` (≤ 20), single-value extended
//! properties (`$expand` and `$filter` forms), etags that change on every write, paging that
//! honours `Prefer: odata.maxpagesize` (default 10) and the Graph error envelope.
//!
//! The chassis counts requests per endpoint (`token`, `$batch`, `contactFolders`, `contacts`,
//! `contacts.delta`, `events`, `calendarView`, `calendarView.delta`, `other`; `$batch`
//! sub-requests as `batch:{endpoint}`), keeps a bounded request log and injects [`Fault`]s in
//! Graph's shapes: 429 `TooManyRequests` with `Retry-After` (also for a 403 throttle), 503
//! `serviceNotAvailable`, 500 `generalException`, 401 `InvalidAuthenticationToken`, dropped
//! connections, lost replies, truncated bodies, latency, expired delta tokens (410). A rule with
//! an endpoint (`batch:*`) also hits `$batch` sub-requests, answered inside the 200 envelope.

mod control;
mod filter;
mod orderby;
mod routes;
mod state;
mod zones;

use chrono::{DateTime, Duration, Utc};
use crmsync_core::{Contact, Event, SyncKey};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::config::Config;
use crate::mapping as map;
use state::{State, key};

pub use state::{CLIENT_ID, CLIENT_SECRET, TENANT};

pub use crmsync_fake::{Fault, FaultRule, LogEntry, Schedule};

/// Something the fake can store as a contact or event: Graph JSON or a crmsync record.
pub trait GraphJson {
    /// The Graph JSON of the record (without id, change key or timestamps).
    fn graph_json(self) -> Value;
}

impl GraphJson for Value {
    fn graph_json(self) -> Value {
        self
    }
}

impl GraphJson for Contact {
    fn graph_json(self) -> Value {
        (&self).graph_json()
    }
}

impl GraphJson for &Contact {
    fn graph_json(self) -> Value {
        let mut v = map::contact_create(self, &SyncKey(String::new()));
        v.as_object_mut().expect("object").remove("singleValueExtendedProperties");
        v
    }
}

impl GraphJson for Event {
    fn graph_json(self) -> Value {
        (&self).graph_json()
    }
}

impl GraphJson for &Event {
    fn graph_json(self) -> Value {
        let mut v = map::event_create(self, &SyncKey(String::new()));
        v.as_object_mut().expect("object").remove("singleValueExtendedProperties");
        v["isCancelled"] = json!(self.cancelled);
        if let Some(o) = &self.organizer {
            v["organizer"] = json!({ "emailAddress": { "address": o, "name": o } });
        }
        if let Some(u) = &self.ical_uid {
            v["iCalUId"] = json!(u);
        }
        if let Some(tz) = &self.time_zone {
            v["originalStartTimeZone"] = json!(tz);
        }
        v
    }
}

crmsync_fake::fake_handle!(
    /// The fake Graph. Cheap to clone (shared state); dropping the last clone stops the server.
    /// It dereferences to its chassis [`Handle`](crmsync_fake::Handle): `uri()`, counters, the
    /// request log, faults, `expire_tokens()`, `expire_cursors()`.
    FakeGraph,
    State,
    State::default()
);

impl FakeGraph {
    /// The Graph root (`{uri}/v1.0`).
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.uri())
    }

    /// The token endpoint (`{uri}/{tenant}/oauth2/v2.0/token`).
    pub fn token_url(&self) -> String {
        format!("{}/{TENANT}/oauth2/v2.0/token", self.uri())
    }

    /// A ready adapter config pointing at the fake, with working app credentials and
    /// millisecond backoff.
    pub fn config(&self) -> Config {
        Config {
            graph_url: self.graph_url(),
            token_url: format!("{}/{{tenant}}/oauth2/v2.0/token", self.uri()),
            tenant: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: Some(SecretString::from(CLIENT_SECRET)),
            page_size: 50,
            retry: crate::config::RetryConfig::fast(),
            timeout_secs: 10,
            ..Config::default()
        }
    }

    /// Insert one empty page (with a next link) before the last page of every delta round.
    pub fn set_empty_pages(&self, on: bool) {
        self.lock().empty_pages = on;
    }

    /// Repeat the first entry of every delta round at its end (Graph may replay items).
    pub fn set_replay(&self, on: bool) {
        self.lock().replay = on;
    }

    /// Refuse `$expand` (anything but `$select`) on contact delta, as Graph's docs allow only
    /// `$select` there (the real service may accept it).
    pub fn set_strict_delta(&self, on: bool) {
        self.lock().strict_delta = on;
    }

    // ---- seeding and editing ----

    /// Create a mailbox (with its default Contacts folder); known by this id or e-mail.
    pub fn add_mailbox(&self, id: &str) {
        self.lock().add_mailbox(id);
    }

    /// A refresh token that grants delegated (`/me`) access to `mailbox`.
    pub fn add_refresh_token(&self, mailbox: &str) -> String {
        self.lock().add_refresh_token(mailbox)
    }

    /// The id of the contacts folder `name` (a child of the default folder), created if missing.
    pub fn ensure_folder(&self, mailbox: &str, name: &str) -> String {
        self.lock().folder(mailbox, name)
    }

    /// The id of the folder `name`, if it exists.
    pub fn folder_id(&self, mailbox: &str, name: &str) -> Option<String> {
        let st = self.lock();
        let mb = st.mailboxes.get(&key(mailbox))?;
        mb.folders
            .iter()
            .find(|(_, f)| f.parent.is_some() && f.name.eq_ignore_ascii_case(name))
            .map(|(id, _)| id.clone())
    }

    /// Store a contact in folder `folder` (created if missing) or, with `None`, in the default
    /// Contacts folder. Returns its id.
    pub fn insert_contact(&self, mailbox: &str, folder: Option<&str>, contact: impl GraphJson) -> String {
        self.lock().insert_contact(mailbox, folder, contact.graph_json())
    }

    /// Move a contact to folder `folder` (`None` = default folder). False if it is missing.
    pub fn move_contact(&self, mailbox: &str, id: &str, folder: Option<&str>) -> bool {
        let mut st = self.lock();
        let fid = match folder {
            Some(name) => st.folder(mailbox, name),
            None => match st.mailboxes.get(&key(mailbox)) {
                Some(mb) => mb.root_folder.clone(),
                None => return false,
            },
        };
        let Some(c) = st.mailboxes.get_mut(&key(mailbox)).and_then(|mb| mb.contacts.get_mut(id)) else { return false };
        c["parentFolderId"] = json!(fid);
        bump(c);
        true
    }

    /// Edit a contact's Graph JSON as a user would (change key bumped). False if missing.
    pub fn edit_contact(&self, mailbox: &str, id: &str, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.lock();
        let Some(c) = st.mailboxes.get_mut(&key(mailbox)).and_then(|mb| mb.contacts.get_mut(id)) else { return false };
        f(c);
        bump(c);
        true
    }

    /// Delete a contact. False if it was missing.
    pub fn delete_contact(&self, mailbox: &str, id: &str) -> bool {
        self.lock().mailboxes.get_mut(&key(mailbox)).and_then(|mb| mb.contacts.remove(id)).is_some()
    }

    /// Store an event (Graph JSON or a crmsync [`Event`]: private, categories, cancelled,
    /// attendees…); JSON with a `recurrence` makes a series master. Returns its id.
    pub fn insert_event(&self, mailbox: &str, event: impl GraphJson) -> String {
        self.lock().insert_event(mailbox, event.graph_json())
    }

    /// A weekly series of `count` occurrences starting at `first` (each `duration` long);
    /// returns the series master's id. Occurrence ids are `{master}_{yyyymmdd}`.
    pub fn insert_weekly_series(
        &self,
        mailbox: &str,
        subject: &str,
        first: DateTime<Utc>,
        duration: Duration,
        count: u32,
    ) -> String {
        let fmt = |t: DateTime<Utc>| map::graph_datetime(t.naive_utc());
        let day = first.format("%A").to_string().to_lowercase();
        self.insert_event(
            mailbox,
            json!({
                "subject": subject,
                "start": { "dateTime": fmt(first), "timeZone": "UTC" },
                "end": { "dateTime": fmt(first + duration), "timeZone": "UTC" },
                "recurrence": {
                    "pattern": { "type": "weekly", "interval": 1, "daysOfWeek": [day], "firstDayOfWeek": "sunday" },
                    "range": { "type": "numbered", "startDate": first.format("%Y-%m-%d").to_string(), "numberOfOccurrences": count, "recurrenceTimeZone": "UTC" }
                }
            }),
        )
    }

    /// Edit a stored event's Graph JSON (a single event or a series master; change key bumped).
    pub fn edit_event(&self, mailbox: &str, id: &str, f: impl FnOnce(&mut Value)) -> bool {
        let mut st = self.lock();
        let Some(e) = st.mailboxes.get_mut(&key(mailbox)).and_then(|mb| mb.events.get_mut(id)) else { return false };
        f(e);
        bump(e);
        true
    }

    /// Move a stored event to `start`, lasting `duration`, and optionally rename it.
    pub fn reschedule_event(
        &self,
        mailbox: &str,
        id: &str,
        subject: Option<&str>,
        start: DateTime<Utc>,
        duration: Duration,
    ) -> bool {
        let fmt = |t: DateTime<Utc>| map::graph_datetime(t.naive_utc());
        self.edit_event(mailbox, id, |e| {
            if let Some(s) = subject {
                e["subject"] = json!(s);
            }
            e["start"] = json!({ "dateTime": fmt(start), "timeZone": "UTC" });
            e["end"] = json!({ "dateTime": fmt(start + duration), "timeZone": "UTC" });
        })
    }

    /// Delete an event, a whole series (master id) or one occurrence. False if missing.
    pub fn delete_event(&self, mailbox: &str, id: &str) -> bool {
        self.lock().delete_event(&key(mailbox), id)
    }

    // ---- inspection ----

    /// The mailboxes the fake holds (as first named).
    pub fn mailboxes(&self) -> Vec<String> {
        self.lock().mailboxes.values().map(|m| m.id.clone()).collect()
    }

    /// Every contact of the mailbox as stored (Graph JSON with `parentFolderId` and
    /// `singleValueExtendedProperties`), by id.
    pub fn contacts(&self, mailbox: &str) -> Vec<Value> {
        self.lock().mailboxes.get(&key(mailbox)).map(|mb| mb.contacts.values().cloned().collect()).unwrap_or_default()
    }

    /// Each contact and event (singles and series masters) of the mailbox as stored, one at a
    /// time, without collecting them. `f` runs under the fake's lock: it must not call the fake.
    pub fn each_record(&self, mailbox: &str, mut f: impl FnMut(&Value)) {
        if let Some(mb) = self.lock().mailboxes.get(&key(mailbox)) {
            mb.contacts.values().chain(mb.events.values()).for_each(&mut f);
        }
    }

    /// The contacts inside folder `name`.
    pub fn folder_contacts(&self, mailbox: &str, name: &str) -> Vec<Value> {
        let Some(fid) = self.folder_id(mailbox, name) else { return vec![] };
        self.contacts(mailbox).into_iter().filter(|c| c["parentFolderId"].as_str() == Some(fid.as_str())).collect()
    }

    /// Every stored event (singles and series masters) as Graph JSON.
    pub fn events(&self, mailbox: &str) -> Vec<Value> {
        self.lock().mailboxes.get(&key(mailbox)).map(|mb| mb.events.values().cloned().collect()).unwrap_or_default()
    }

    /// The event instances (singles, occurrences, exceptions; never masters) overlapping
    /// `[start, end)`, as `calendarView` returns them (without the wire-only `@odata.etag`).
    pub fn calendar_view(&self, mailbox: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        let st = self.lock();
        st.mailboxes
            .get(&key(mailbox))
            .map(|mb| State::calendar_view(mb, start, end).into_values().collect())
            .unwrap_or_default()
    }

    /// Contacts and events of a mailbox, for before/after comparisons.
    pub fn snapshot(&self, mailbox: &str) -> Value {
        json!({ "contacts": self.contacts(mailbox), "events": self.events(mailbox) })
    }

    /// Contacts and events stamped with sync key `key`.
    pub fn count_by_sync_key(&self, mailbox: &str, key: &str) -> usize {
        let has = |v: &Value| {
            v["singleValueExtendedProperties"].as_array().into_iter().flatten().any(|p| {
                p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(map::SYNC_KEY_PROPERTY))
                    && p["value"].as_str() == Some(key)
            })
        };
        self.contacts(mailbox).iter().chain(self.events(mailbox).iter()).filter(|v| has(v)).count()
    }

    /// Contacts holding e-mail address `email` (case-insensitive).
    pub fn count_by_email(&self, mailbox: &str, email: &str) -> usize {
        let e = email.trim().to_lowercase();
        self.contacts(mailbox)
            .iter()
            .filter(|c| {
                c["emailAddresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["address"].as_str().is_some_and(|x| x.trim().to_lowercase() == e))
            })
            .count()
    }
}

fn bump(v: &mut Value) {
    let u = uuid::Uuid::new_v4().simple().to_string();
    v["changeKey"] = json!(format!("EQAAABYAAAC{}", &u[..20]));
    v["lastModifiedDateTime"] = json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
}
