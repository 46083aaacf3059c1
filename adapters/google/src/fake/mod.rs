//! Stateful fakes of Google's OAuth token endpoint, People API and Calendar API on one loopback
//! server, served by the `crmsync-fake` chassis (feature `fake`).
//!
//! Paths served (base = [`FakeGoogle::uri`]):
//! - `POST /token` — `urn:ietf:params:oauth:grant-type:jwt-bearer` (the assertion's `sub` picks
//!   the user; the signature is not verified) and `refresh_token` grants.
//! - People: `GET|POST /v1/contactGroups`, `GET /v1/contactGroups/{id}` (`maxMembers`),
//!   `POST /v1/contactGroups/{id}/members:modify`, `GET /v1/people/me/connections` (paging,
//!   `requestSyncToken`, `syncToken`, `sortOrder`), `GET /v1/people/me`, `GET /v1/people/{id}`,
//!   `GET /v1/people:batchGet` (≤ 200), `GET /v1/people:searchContacts` (with its warm-up),
//!   `createContact` / `updateContact` / `deleteContact`, `POST /v1/people:batchCreateContacts`
//!   (≤ 200), `…:batchUpdateContacts` (≤ 200), `…:batchDeleteContacts` (≤ 500).
//! - Calendar: `/calendar/v3/calendars/primary/events` list (window, `singleEvents`, `q`,
//!   `updatedMin`, page and sync tokens, 410), insert (client ids, 409), and `/{eventId}` get /
//!   patch / update (`If-Match`, 412) / delete; `calendars/primary`; `users/me/calendarList`.
//!
//! Errors use Google's envelopes: People `{"error":{"code","message","status","details"}}`,
//! Calendar `{"error":{"errors":[{"domain","reason","message"}],"code","message"}}`.
//!
//! The chassis counts requests per endpoint (`oauth.token`, `people.connections.list`,
//! `people.batchCreateContacts`, `calendar.events.list`, …; see [`Handle::counts`](crmsync_fake::Handle::counts)), keeps a
//! bounded request log and injects [`Fault`]s in the envelope of the API hit: 429
//! `RESOURCE_EXHAUSTED` / `rateLimitExceeded` with `Retry-After`, Calendar's 403
//! `rateLimitExceeded` (People answers 429), 503 `UNAVAILABLE` / `backendError`, 500, 401 with
//! every access token expired, dropped connections, lost replies, truncated bodies, latency,
//! expired sync tokens (People 400 `EXPIRED_SYNC_TOKEN`, Calendar 410 `fullSyncRequired`).

mod calendar;
mod calendars;
mod control;
mod people;
mod people_search;
mod routes;
mod series;
mod state;

use std::collections::BTreeMap;

use crmsync_core::{Contact, Event};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use state::State;

use crate::config::Config;

pub use calendar::EventEdit;

/// The fake service account the admin-managed [`FakeGoogle::config`] uses.
pub const SERVICE_ACCOUNT: &str = "crmsync-sync@fake-project.iam.gserviceaccount.com";
/// The OAuth client id the fake accepts for refresh-token grants.
pub const CLIENT_ID: &str = "fake-client-id.apps.googleusercontent.com";
/// A throwaway RSA key generated for the fake only (it signs assertions nobody verifies).
pub const SERVICE_ACCOUNT_TEST_KEY: &str = include_str!("service_account_test_key.pem");
/// The default contact group name.
pub const DEFAULT_GROUP: &str = "Salesforce Sync";

pub use crmsync_fake::{Fault, FaultRule, LogEntry, Schedule};

crmsync_fake::fake_handle!(
    /// The fake Google: OAuth, People and Calendar on one loopback server. Cheap to clone. It
    /// dereferences to its chassis [`Handle`](crmsync_fake::Handle): `uri()`, counters, the
    /// request log, faults, `expire_tokens()`, `expire_cursors()`.
    FakeGoogle,
    State,
    State::default()
);

impl FakeGoogle {
    /// A ready config pointing at the fake, with the fake service account (admin-managed
    /// mode), the fake OAuth client (user-managed mode), short retry delays and a 1 s timeout.
    pub fn config(&self) -> Config {
        Config {
            people_url: self.uri(),
            calendar_url: format!("{}/calendar/v3", self.uri()),
            token_url: format!("{}/token", self.uri()),
            client_id: Some(CLIENT_ID.into()),
            client_secret: Some(SecretString::from("fake-client-secret")),
            service_account_email: Some(SERVICE_ACCOUNT.into()),
            private_key: Some(SecretString::from(SERVICE_ACCOUNT_TEST_KEY)),
            page_size: 100,
            retry: crate::config::RetryConfig { max_retries: 3, ..crate::config::RetryConfig::fast() },
            timeout_ms: 1000,
            ..Config::default()
        }
    }

    /// Add a user (mailbox) with the system groups `myContacts` and `starred`. Idempotent.
    pub fn add_user(&self, email: &str) {
        self.lock().add_user(email);
    }

    /// Seed a refresh token for `user` (user-managed mode); returns it.
    pub fn add_refresh_token(&self, user: &str) -> String {
        self.lock().add_refresh_token(user)
    }

    /// Revoke a refresh token (the next refresh gets 400 `invalid_grant`).
    pub fn revoke_refresh_token(&self, token: &str) {
        self.lock().tokens.revoke_refresh(token);
    }

    // ----- People seed / edit / inspect -----

    /// Seed a contact (in the `Salesforce Sync` group when `in_group`, always in `myContacts`);
    /// returns its `resourceName`.
    pub fn insert_contact(&self, user: &str, in_group: bool, contact: &Contact) -> String {
        let groups: Vec<&str> = if in_group { vec![DEFAULT_GROUP] } else { vec![] };
        self.insert_contact_json(user, &groups, people::contact_json(contact))
    }

    /// Seed a contact from People JSON fields (`names`, `emailAddresses`, `clientData`, …) in
    /// the named user groups (created when missing); returns its `resourceName`.
    pub fn insert_contact_json(&self, user: &str, groups: &[&str], person: Value) -> String {
        let mut st = self.lock();
        people::seed_person(&mut st, user, groups, person).unwrap_or_else(|e| panic!("insert_contact_json: {e}"))
    }

    /// Edit a contact as the user would in Google Contacts (new etag, appears in sync).
    pub fn edit_contact(&self, user: &str, resource_name: &str, f: impl FnOnce(&mut Contact)) -> bool {
        let mut st = self.lock();
        people::edit_person(&mut st, user, resource_name, |p| {
            let mut c = people::json_contact(p);
            f(&mut c);
            people::apply_contact(p, &c);
        })
    }

    /// Edit a contact's People JSON fields directly.
    pub fn edit_contact_json(&self, user: &str, resource_name: &str, f: impl FnOnce(&mut Map<String, Value>)) -> bool {
        let mut st = self.lock();
        people::edit_person(&mut st, user, resource_name, f)
    }

    /// Take a contact out of a group (it stays in `myContacts`).
    pub fn remove_from_group(&self, user: &str, resource_name: &str, group: &str) -> bool {
        let mut st = self.lock();
        people::set_membership(&mut st, user, resource_name, group, false)
    }

    /// Put a contact into a group (created when missing).
    pub fn add_to_group(&self, user: &str, resource_name: &str, group: &str) -> bool {
        let mut st = self.lock();
        people::set_membership(&mut st, user, resource_name, group, true)
    }

    /// Delete a contact (sync reads then show it with `metadata.deleted`).
    pub fn delete_contact(&self, user: &str, resource_name: &str) -> bool {
        let mut st = self.lock();
        people::delete_person(&mut st, user, resource_name)
    }

    /// Every live contact of the user, as `people.get` returns it with all person fields.
    pub fn contacts(&self, user: &str) -> Vec<Value> {
        let mut st = self.lock();
        people::snapshot(&mut st, user)
    }

    /// Each contact (as [`FakeGoogle::contacts`] renders it) and event (as
    /// [`FakeGoogle::events`]) of the user, one at a time, without collecting them. `f` runs
    /// under the fake's lock: it must not call the fake.
    pub fn each_record(&self, user: &str, f: impl FnMut(&Value)) {
        let mut st = self.lock();
        people::each(&mut st, user, f);
    }

    /// `resourceName`s of the members of a group (by name).
    pub fn group_members(&self, user: &str, group: &str) -> Vec<String> {
        let mut st = self.lock();
        people::members(&mut st, user, group)
    }

    /// The user's contact groups, as `contactGroups.list` returns them.
    pub fn groups(&self, user: &str) -> Vec<Value> {
        let mut st = self.lock();
        people::groups(&mut st, user)
    }

    /// Live contacts carrying this sync key in `clientData`.
    pub fn count_contacts_with_key(&self, user: &str, key: &str) -> usize {
        self.contacts(user)
            .iter()
            .filter(|p| people::client_value(p, crate::config::SYNC_KEY_PROPERTY) == Some(key))
            .count()
    }

    /// Live contacts having this e-mail address (case-insensitive).
    pub fn count_contacts_with_email(&self, user: &str, email: &str) -> usize {
        let e = email.trim().to_lowercase();
        self.contacts(user)
            .iter()
            .filter(|p| {
                p["emailAddresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["value"].as_str().map(str::to_lowercase) == Some(e.clone()))
            })
            .count()
    }

    /// Sync keys stamped on more than one live contact (should be empty).
    pub fn duplicate_contact_keys(&self, user: &str) -> Vec<String> {
        let mut seen = BTreeMap::<String, usize>::new();
        for p in self.contacts(user) {
            if let Some(k) = people::client_value(&p, crate::config::SYNC_KEY_PROPERTY) {
                *seen.entry(k.to_owned()).or_default() += 1;
            }
        }
        seen.into_iter().filter(|(_, n)| *n > 1).map(|(k, _)| k).collect()
    }

    // ----- Calendar seed / edit / inspect -----

    /// Seed an event on the user's primary calendar; returns its id. `private` → visibility
    /// private, `cancelled` → status cancelled, any `categories` → the no-sync marker (private
    /// extended property `crmsyncNoSync=true`), `ical_uid` → `iCalUID`.
    pub fn insert_event(&self, user: &str, event: &Event) -> String {
        self.insert_event_json(user, calendar::event_json(event))
    }

    /// Seed a recurring series (`RRULE:FREQ=DAILY;INTERVAL={every_days};COUNT={count}`) whose
    /// first occurrence is `event`; returns the series (master) id.
    pub fn insert_series(&self, user: &str, event: &Event, count: u32, every_days: u32) -> String {
        let mut j = calendar::event_json(event);
        j["recurrence"] = json!([format!("RRULE:FREQ=DAILY;INTERVAL={every_days};COUNT={count}")]);
        if j["start"]["dateTime"].is_string() {
            j["start"]["timeZone"] = json!("UTC");
            j["end"]["timeZone"] = json!("UTC");
        }
        self.insert_event_json(user, j)
    }

    /// Seed an event from Calendar JSON (`summary`, `start`, `end`, `extendedProperties`, …;
    /// an `id` is generated when absent); returns its id.
    pub fn insert_event_json(&self, user: &str, event: Value) -> String {
        let mut st = self.lock();
        calendar::seed_event(&mut st, user, event).unwrap_or_else(|e| panic!("insert_event_json: {e}"))
    }

    /// Edit an event as the user would (subject, start, duration): new etag, appears in sync.
    pub fn edit_event(&self, user: &str, id: &str, edit: EventEdit) -> bool {
        let mut st = self.lock();
        calendar::edit_event(&mut st, user, id, |e| edit.apply(e))
    }

    /// Edit an event's Calendar JSON directly.
    pub fn edit_event_json(&self, user: &str, id: &str, f: impl FnOnce(&mut Map<String, Value>)) -> bool {
        let mut st = self.lock();
        calendar::edit_event(&mut st, user, id, f)
    }

    /// Delete (cancel) an event.
    pub fn delete_event(&self, user: &str, id: &str) -> bool {
        let mut st = self.lock();
        calendar::delete_event(&mut st, user, id)
    }

    /// Every event of the user's primary calendar (series masters unexpanded, cancelled ones
    /// included with `status: cancelled`), as `events.get` returns them.
    pub fn events(&self, user: &str) -> Vec<Value> {
        let mut st = self.lock();
        calendar::snapshot(&mut st, user)
    }

    /// Live (not cancelled) events carrying this sync key.
    pub fn count_events_with_key(&self, user: &str, key: &str) -> usize {
        self.events(user)
            .iter()
            .filter(|e| {
                e["status"] != "cancelled"
                    && e["extendedProperties"]["private"][crate::config::SYNC_KEY_PROPERTY] == key
            })
            .count()
    }
}
