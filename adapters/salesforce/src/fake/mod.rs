//! A stateful fake Salesforce org on loopback (feature `fake`).
//!
//! [`FakeSalesforce`] serves the REST API paths and JSON shapes of a real org from an
//! in-memory store: the OAuth endpoints (a login page for the authorization-code flow with PKCE,
//! `userinfo`; tokens by code, refresh token or client credentials),
//! `query` / `queryAll` with a SOQL subset (aggregates and `GROUP BY` included) and paging at
//! 2,000 through `nextRecordsUrl`, SOSL `search`, sObject rows (create, get, update with
//! `If-Unmodified-Since`, delete, upsert by external id), sObject Collections (create, update,
//! upsert, delete; ≤ 200 records, `allOrNone`), `/composite` (≤ 25 subrequests, `@{ref}`
//! references), `updated` / `deleted`, `limits`, global describe, basic information and
//! `describe` of each object, and the versions list. It keeps server-side 18-character ids, `CreatedDate` / `LastModifiedDate` /
//! `SystemModstamp` (strictly increasing, millisecond precision), validates fields (required
//! `LastName`, lengths, e-mail format, restricted picklists, lookups, unique external ids) with
//! Salesforce's error bodies and meters the daily API allocation (`Sforce-Limit-Info`).
//!
//! It runs on the `crmsync-fake` chassis, which counts requests per endpoint (`token`, `query`,
//! `query_more`, `queryAll`, `composite`, `collections_create`, `collections_upsert`,
//! `collections_update`, `collections_delete`, `collections_retrieve`, `sobject_create`,
//! `sobject_get`, `sobject_update`, `sobject_delete`, `upsert`, `updated`, `deleted`, `limits`,
//! `describe`, `describe_global`, `sobject_info`, `search`, `versions`, `authorize`, `userinfo`; composite subrequests as `composite/<endpoint>`), keeps a bounded
//! request log and injects [`Fault`]s: 429 `REQUEST_LIMIT_EXCEEDED` with `Retry-After`, 403
//! `REQUEST_LIMIT_EXCEEDED` (concurrent-request limit), 503 as a load balancer's HTML page,
//! 500 `UNKNOWN_EXCEPTION`, 401 `INVALID_SESSION_ID`, dropped connections, lost replies,
//! truncated bodies, latency; an expired cursor is the clock jumping past the deleted-records
//! window.

mod authorize;
mod composite_ref;
mod control;
mod routes;
mod schema;
mod soql;
mod sosl;
mod state;

use chrono::{DateTime, Utc};
use crmsync_core::{Contact, Event, Record};
use secrecy::SecretString;
use serde_json::{Value, json};

pub use crmsync_fake::{Fault, FaultRule, LogEntry, Schedule};
pub use schema::SYNC_KEY;
use schema::{fmt_time, object, object_of_id};
use soql::Db;
use state::State;

use crate::config::{Config, RetryConfig};

/// The consumer key the fake accepts.
pub const CLIENT_ID: &str = "crmsync-fake-client";
/// The consumer secret the fake accepts (client-credentials flow).
pub const CLIENT_SECRET: &str = "fake-client-secret";
/// A refresh token the fake accepts (refresh-token flow).
pub const REFRESH_TOKEN: &str = "fake-refresh-token";

crmsync_fake::fake_handle!(
    /// A fake Salesforce org served on loopback. Cheap to clone (shared state). It dereferences
    /// to its chassis [`Handle`](crmsync_fake::Handle): `uri()`, counters, the request log,
    /// faults, `expire_tokens()`, `expire_cursors()`.
    FakeSalesforce,
    State,
    State::new()
);

impl FakeSalesforce {
    /// A ready adapter config: client-credentials flow with the fake's consumer key and
    /// secret (admin-managed mode), millisecond retry delays.
    pub fn config(&self) -> Config {
        let mut c = Config::new(self.uri(), CLIENT_ID);
        c.client_secret = Some(SecretString::from(CLIENT_SECRET));
        c.retry = RetryConfig { max_retries: 4, min_delay_ms: 1, max_delay_ms: 20 };
        c.timeout_secs = 10;
        c
    }

    /// Like [`config`](Self::config), but with the refresh-token flow.
    pub fn config_with_refresh_token(&self) -> Config {
        let mut c = self.config();
        c.client_secret = None;
        c.refresh_token = Some(SecretString::from(REFRESH_TOKEN));
        c
    }

    /// Add an active user with permissions ([`MANAGE_USERS`] → System Administrator profile;
    /// [`MANAGE_SYNC`] → the `CrmSync_Admin` permission set). Returns the user id.
    pub fn add_user(&self, name: &str, permissions: &[&str]) -> String {
        self.lock().add_user(name, permissions)
    }

    /// The user the API runs as (owner of records created without `OwnerId`).
    pub fn integration_user(&self) -> String {
        self.lock().integration_user.clone()
    }

    fn seed(&self, obj: &str, owner: &str, fields: Value) -> Result<String, String> {
        let mut st = self.lock();
        let o = object(obj).expect("known object");
        let mut m = fields.as_object().cloned().ok_or("fields must be a JSON object")?;
        m.insert("OwnerId".into(), json!(owner));
        let actor = st.integration_user.clone();
        st.write(o, None, &m, &actor, false).map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// Insert a Contact owned by `owner` from Salesforce field JSON (`{"LastName": …}`).
    /// Panics with Salesforce's error when the org would reject it.
    pub fn insert_contact(&self, owner: &str, fields: Value) -> String {
        self.seed("Contact", owner, fields).unwrap_or_else(|e| panic!("insert_contact: {e}"))
    }

    /// Insert a Contact owned by `owner` from a crmsync [`Contact`].
    pub fn insert_contact_record(&self, owner: &str, c: &Contact) -> String {
        let fields = crate::mapping::fields_json(&Record::Contact(c.clone()), None, true);
        self.insert_contact(owner, Value::Object(fields))
    }

    /// Insert an Event owned by `owner` from Salesforce field JSON.
    pub fn insert_event(&self, owner: &str, fields: Value) -> String {
        self.seed("Event", owner, fields).unwrap_or_else(|e| panic!("insert_event: {e}"))
    }

    /// Insert an Event owned by `owner` from a crmsync [`Event`].
    pub fn insert_event_record(&self, owner: &str, e: &Event) -> String {
        let fields = crate::mapping::fields_json(&Record::Event(e.clone()), None, true);
        self.insert_event(owner, Value::Object(fields))
    }

    /// Edit any record as a user would (Salesforce field JSON). Returns Salesforce's error.
    pub fn edit(&self, id: &str, fields: Value) -> Result<(), String> {
        let mut st = self.lock();
        let o = object_of_id(id).ok_or_else(|| format!("unknown id {id}"))?;
        let m = fields.as_object().cloned().ok_or("fields must be a JSON object")?;
        let actor = st.integration_user.clone();
        st.write(o, Some(id), &m, &actor, false).map(|_| ()).map_err(|e| format!("{}: {}", e.code, e.message))
    }

    /// Edit a contact (see [`edit`](Self::edit)).
    pub fn edit_contact(&self, id: &str, fields: Value) -> Result<(), String> {
        self.edit(id, fields)
    }

    /// Move a record to the recycle bin. False when it is missing or already deleted.
    pub fn delete(&self, id: &str) -> bool {
        self.lock().delete(None, id).is_ok()
    }

    /// Delete a contact (see [`delete`](Self::delete)).
    pub fn delete_contact(&self, id: &str) -> bool {
        self.delete(id)
    }

    /// Delete an event (see [`delete`](Self::delete)).
    pub fn delete_event(&self, id: &str) -> bool {
        self.delete(id)
    }

    /// Give a record to another owner.
    pub fn set_owner(&self, id: &str, owner: &str) -> Result<(), String> {
        self.edit(id, json!({"OwnerId": owner}))
    }

    /// Every live Contact, as `GET /sobjects/Contact/{id}` returns it (all fields).
    pub fn contacts(&self) -> Vec<Value> {
        self.lock().snapshot("Contact", false)
    }

    /// Every live Event, with all fields.
    pub fn events(&self) -> Vec<Value> {
        self.lock().snapshot("Event", false)
    }

    /// Each live record of `sobject`, one at a time with all fields, without collecting them
    /// (for checks over a large org). `f` runs under the fake's lock: it must not call the fake.
    pub fn each_record(&self, sobject: &str, f: impl FnMut(&Value)) {
        self.lock().each(sobject, f);
    }

    /// Every live record of any object (`User`, `PermissionSet`, …).
    pub fn records(&self, sobject: &str) -> Vec<Value> {
        self.lock().snapshot(sobject, false)
    }

    /// The live `EventRelation` rows of one Event (Shared Activities), oldest first.
    pub fn relations(&self, event_id: &str) -> Vec<Value> {
        let id15 = |s: &str| s.get(..15).map(str::to_owned);
        self.records("EventRelation")
            .into_iter()
            .filter(|r| r["EventId"].as_str().and_then(id15) == id15(event_id))
            .collect()
    }

    /// The contacts one Event is related to (`IsParent`, not a What): their `Email`s, sorted.
    pub fn related_emails(&self, event_id: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .relations(event_id)
            .iter()
            .filter(|r| r["IsParent"] == true && r["IsWhat"] == false)
            .filter_map(|r| self.record(r["RelationId"].as_str()?))
            .filter_map(|c| c["Email"].as_str().map(str::to_lowercase))
            .collect();
        out.sort();
        out
    }

    /// One record by id (deleted ones included, with `IsDeleted`).
    pub fn record(&self, id: &str) -> Option<Value> {
        let st = self.lock();
        let o = object_of_id(id)?;
        st.find(o, id).map(|r| st.record_json(o, r, None))
    }

    /// Live records of `sobject` whose sync key is `key` (case-insensitive, as the unique
    /// external id compares).
    pub fn count_by_sync_key(&self, sobject: &str, key: &str) -> usize {
        self.count_live(sobject, SYNC_KEY, key)
    }

    /// Live contacts whose e-mail is `email` (case-insensitive).
    pub fn count_contacts_by_email(&self, email: &str) -> usize {
        self.count_live("Contact", "Email", email.trim())
    }

    /// Live records of `sobject` whose indexed `field` holds `value`.
    fn count_live(&self, sobject: &str, field: &str, value: &str) -> usize {
        let o = object(sobject).expect("known object");
        self.lock().lookup(o, field, &[state::fold_value(field, value)]).map_or(0, |rows| rows.len())
    }

    /// The fake's clock (real time plus any jump made by `expire_cursors`).
    pub fn now(&self) -> DateTime<Utc> {
        self.lock().now()
    }

    /// Set the daily API allocation (default 15,000, as a Developer Edition org).
    pub fn set_api_limit(&self, max: u64) {
        self.lock().api_max = max;
    }

    /// API requests metered so far (what `Sforce-Limit-Info` reports as used).
    pub fn api_usage(&self) -> u64 {
        self.lock().api_used
    }

    /// Records per query page (default 2,000, the real default and maximum).
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.clamp(1, 2000);
    }

    /// When each record's stamps make sense: `fmt_time` helper for tests.
    pub fn format_time(t: DateTime<Utc>) -> String {
        fmt_time(t)
    }
}
