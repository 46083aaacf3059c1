//! A stateful Microsoft Graph fake on loopback (feature `fake`).
//!
//! One `wiremock::MockServer` with a single [`wiremock::Respond`] over shared state speaks the
//! Graph wire protocol the adapter (and any Graph client) uses: the token endpoint
//! (`/{tenant}/oauth2/v2.0/token`, client credentials and refresh-token grants), `/me` and
//! `/users/{id}` mailboxes, contact folders (list, `$filter`, create, child folders), contacts
//! CRUD and folder delta, events CRUD, `calendarView` and `calendarView/delta` with window
//! semantics and weekly/daily series expansion, `$batch` (≤ 20), single-value extended
//! properties (`$expand` and `$filter` forms), etags that change on every write, paging that
//! honours `Prefer: odata.maxpagesize` (default 10), the Graph error envelope, request
//! counters, and seeded fault injection.

mod filter;
mod state;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use crmsync_core::{Contact, Event, SyncKey};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate, matchers::any};

use crate::config::Config;
use crate::mapping as map;
use state::{Req, Resp, State, error, key, percent_decode};

pub use state::{CLIENT_ID, CLIENT_SECRET, TENANT};

/// A fault the fake injects instead of answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 `TooManyRequests` with a `Retry-After` header.
    Throttle {
        /// Seconds, decimals allowed (`"0.01"`, `"2.128"`).
        retry_after: String,
    },
    /// 503 `serviceNotAvailable` without `Retry-After`.
    Unavailable,
    /// The response is cut off mid-body (the connection drops).
    Drop,
    /// 401 `InvalidAuthenticationToken` (as for an expired access token).
    ExpiredToken,
    /// 200 with an HTML body instead of JSON (a misbehaving proxy).
    NotJson,
    /// The request is applied, then the connection drops before the reply arrives.
    LostReply,
}

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

struct Handler(Arc<Mutex<State>>);

impl Respond for Handler {
    fn respond(&self, req: &wiremock::Request) -> ResponseTemplate {
        let mut st = self.0.lock().expect("fake graph state poisoned");
        st.total += 1;
        let n = st.total;
        let path = req.url.path().to_owned();
        *st.counters.entry(State::endpoint(&path).to_owned()).or_default() += 1;
        let resp = match st.fault_for(n) {
            Some(Fault::LostReply) => Resp { drop: true, ..handle(&mut st, req) },
            Some(f) => State::fault_response(&f),
            None => handle(&mut st, req),
        };
        template(resp)
    }
}

fn handle(st: &mut State, req: &wiremock::Request) -> Resp {
    let path = req.url.path();
    if req.method.as_str() == "POST" && path.ends_with("/oauth2/v2.0/token") {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        return st.token(&form);
    }
    let Some(rest) = path.strip_prefix("/v1.0") else {
        return error(404, "BadRequest", &format!("Invalid version: {path}"));
    };
    let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok());
    let Some(who) = st.principal(auth) else {
        return error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.");
    };
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) => Some(v),
            Err(e) => return error(400, "BadRequest", &format!("Unable to read JSON request payload: {e}")),
        }
    };
    let r = Req {
        method: req.method.as_str().to_uppercase(),
        path: percent_decode(rest),
        query: req.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        headers: req
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_lowercase(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
        // wiremock sees origin-form targets as `http://localhost/…`: the Host header has the port.
        origin: match req.headers.get("host").and_then(|h| h.to_str().ok()) {
            Some(host) => format!("http://{host}"),
            None => req.url.origin().ascii_serialization(),
        },
    };
    if r.path == "/$batch" && r.method == "POST" {
        return st.batch(&who, &r);
    }
    st.dispatch(&who, &r)
}

fn template(r: Resp) -> ResponseTemplate {
    if r.status == 0 {
        return ResponseTemplate::new(200)
            .set_body_raw(b"<html><body>Gateway says hi</body></html>".to_vec(), "text/html");
    }
    if r.drop {
        // Promise more bytes than are sent: the client sees the connection close mid-body.
        return ResponseTemplate::new(200)
            .insert_header("content-length", "4096")
            .set_body_raw(b"{\"value\":[".to_vec(), "application/json");
    }
    let mut t = ResponseTemplate::new(r.status);
    for (k, v) in &r.headers {
        t = t.insert_header(k.as_str(), v.as_str());
    }
    match r.body {
        Some(b) => t.set_body_raw(serde_json::to_vec(&b).expect("json"), "application/json"),
        None => t,
    }
}

/// The fake Graph. Cheap to clone (shared state); dropping the last clone stops the server.
#[derive(Clone)]
pub struct FakeGraph {
    server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGraph").field("uri", &self.uri()).finish_non_exhaustive()
    }
}

impl FakeGraph {
    /// Start on a random loopback port.
    pub async fn start() -> Self {
        Self::mount(MockServer::builder().disable_request_recording().start().await).await
    }

    /// Start on a given listener (fixed port, for `crmsync sandbox`).
    pub async fn start_on(listener: TcpListener) -> Self {
        Self::mount(MockServer::builder().listener(listener).disable_request_recording().start().await).await
    }

    async fn mount(server: MockServer) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any()).respond_with(Handler(state.clone())).mount(&server).await;
        Self { server: Arc::new(server), state }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake graph state poisoned")
    }

    /// The server root, e.g. `http://127.0.0.1:41234`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

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

    // ---- counters ----

    /// Every HTTP request served (token endpoint included; a `$batch` counts once).
    pub fn requests(&self) -> u64 {
        self.st().total
    }

    /// Requests served per endpoint: `token`, `$batch`, `contactFolders`, `contacts`,
    /// `contacts.delta`, `events`, `calendarView`, `calendarView.delta`, `other`; sub-requests
    /// of `$batch` are counted as `batch:{endpoint}`.
    pub fn count(&self, endpoint: &str) -> u64 {
        self.st().counters.get(endpoint).copied().unwrap_or(0)
    }

    /// All per-endpoint counters.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.st().counters.clone()
    }

    /// Zero every counter.
    pub fn reset_counters(&self) {
        let mut st = self.st();
        st.counters.clear();
    }

    // ---- faults ----

    /// Fail the `n`-th request from now (1 = the next one) with `fault`.
    pub fn fail_request(&self, n: u64, fault: Fault) {
        let mut st = self.st();
        let at = st.total + n.max(1);
        st.faults.insert(at, fault);
    }

    /// Fail a pseudo-random `per_mille` of all requests with `fault`, reproducibly from `seed`
    /// (`per_mille = 0` turns it off).
    pub fn fail_rate(&self, seed: u64, per_mille: u32, fault: Fault) {
        self.st().rate = (per_mille > 0).then_some((seed, per_mille, fault));
    }

    /// Answer the `n`-th `$batch` sub-request from now (1 = the next) with `fault` inside a
    /// 200 envelope (e.g. a throttled item).
    pub fn fail_batch_item(&self, n: u64, fault: Fault) {
        let mut st = self.st();
        let at = st.batch_items + n.max(1);
        st.batch_faults.insert(at, fault);
    }

    /// Make every access token handed out so far invalid (401 `InvalidAuthenticationToken`).
    pub fn expire_tokens(&self) {
        self.st().expire_tokens();
    }

    /// Make every delta and skip token handed out so far expire (410 `SyncStateNotFound`).
    pub fn expire_cursors(&self) {
        self.st().expire_cursors();
    }

    /// Insert one empty page (with a next link) before the last page of every delta round.
    pub fn set_empty_pages(&self, on: bool) {
        self.st().empty_pages = on;
    }

    /// Repeat the first entry of every delta round at its end (Graph may replay items).
    pub fn set_replay(&self, on: bool) {
        self.st().replay = on;
    }

    /// Refuse `$expand` (anything but `$select`) on contact delta, as Graph's docs allow only
    /// `$select` there ([U] in API-NOTES: the real service may accept it).
    pub fn set_strict_delta(&self, on: bool) {
        self.st().strict_delta = on;
    }

    // ---- seeding and editing ----

    /// Create a mailbox (with its default Contacts folder); known by this id or e-mail.
    pub fn add_mailbox(&self, id: &str) {
        self.st().add_mailbox(id);
    }

    /// A refresh token that grants delegated (`/me`) access to `mailbox`.
    pub fn add_refresh_token(&self, mailbox: &str) -> String {
        self.st().add_refresh_token(mailbox)
    }

    /// The id of the contacts folder `name` (a child of the default folder), created if missing.
    pub fn ensure_folder(&self, mailbox: &str, name: &str) -> String {
        self.st().folder(mailbox, name)
    }

    /// The id of the folder `name`, if it exists.
    pub fn folder_id(&self, mailbox: &str, name: &str) -> Option<String> {
        let st = self.st();
        let mb = st.mailboxes.get(&key(mailbox))?;
        mb.folders
            .iter()
            .find(|(_, f)| f.parent.is_some() && f.name.eq_ignore_ascii_case(name))
            .map(|(id, _)| id.clone())
    }

    /// Store a contact in folder `folder` (created if missing) or, with `None`, in the default
    /// Contacts folder. Returns its id.
    pub fn insert_contact(&self, mailbox: &str, folder: Option<&str>, contact: impl GraphJson) -> String {
        self.st().insert_contact(mailbox, folder, contact.graph_json())
    }

    /// Move a contact to folder `folder` (`None` = default folder). False if it is missing.
    pub fn move_contact(&self, mailbox: &str, id: &str, folder: Option<&str>) -> bool {
        let mut st = self.st();
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
        let mut st = self.st();
        let Some(c) = st.mailboxes.get_mut(&key(mailbox)).and_then(|mb| mb.contacts.get_mut(id)) else { return false };
        f(c);
        bump(c);
        true
    }

    /// Delete a contact. False if it was missing.
    pub fn delete_contact(&self, mailbox: &str, id: &str) -> bool {
        self.st().mailboxes.get_mut(&key(mailbox)).and_then(|mb| mb.contacts.remove(id)).is_some()
    }

    /// Store an event (Graph JSON or a crmsync [`Event`]: private, categories, cancelled,
    /// attendees…); JSON with a `recurrence` makes a series master. Returns its id.
    pub fn insert_event(&self, mailbox: &str, event: impl GraphJson) -> String {
        self.st().insert_event(mailbox, event.graph_json())
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
        let mut st = self.st();
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
        self.st().delete_event(&key(mailbox), id)
    }

    // ---- inspection ----

    /// The mailboxes the fake holds (as first named).
    pub fn mailboxes(&self) -> Vec<String> {
        self.st().mailboxes.values().map(|m| m.id.clone()).collect()
    }

    /// Every contact of the mailbox as stored (Graph JSON with `parentFolderId` and
    /// `singleValueExtendedProperties`), by id.
    pub fn contacts(&self, mailbox: &str) -> Vec<Value> {
        self.st().mailboxes.get(&key(mailbox)).map(|mb| mb.contacts.values().cloned().collect()).unwrap_or_default()
    }

    /// The contacts inside folder `name`.
    pub fn folder_contacts(&self, mailbox: &str, name: &str) -> Vec<Value> {
        let Some(fid) = self.folder_id(mailbox, name) else { return vec![] };
        self.contacts(mailbox).into_iter().filter(|c| c["parentFolderId"].as_str() == Some(fid.as_str())).collect()
    }

    /// Every stored event (singles and series masters) as Graph JSON.
    pub fn events(&self, mailbox: &str) -> Vec<Value> {
        self.st().mailboxes.get(&key(mailbox)).map(|mb| mb.events.values().cloned().collect()).unwrap_or_default()
    }

    /// The event instances (singles, occurrences, exceptions; never masters) overlapping
    /// `[start, end)`, as `calendarView` returns them (without the wire-only `@odata.etag`).
    pub fn calendar_view(&self, mailbox: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Value> {
        let st = self.st();
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
