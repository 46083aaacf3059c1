//! Stateful fakes of Google's OAuth token endpoint, People API and Calendar API on one
//! `wiremock::MockServer` (feature `fake`).
//!
//! Paths served (base = [`FakeGoogle::uri`]):
//! - `POST /token` — `urn:ietf:params:oauth:grant-type:jwt-bearer` (the assertion's `sub` picks
//!   the user; the signature is not verified) and `refresh_token` grants.
//! - People: `GET|POST /v1/contactGroups`, `GET /v1/contactGroups/{id}` (`maxMembers`),
//!   `POST /v1/contactGroups/{id}/members:modify`, `GET /v1/people/me/connections` (paging,
//!   `requestSyncToken`, `syncToken`), `GET /v1/people/{id}`, `GET /v1/people:batchGet` (≤ 200),
//!   `POST /v1/people:batchCreateContacts` (≤ 200), `…:batchUpdateContacts` (≤ 200),
//!   `…:batchDeleteContacts` (≤ 500).
//! - Calendar: `/calendar/v3/calendars/primary/events` list (window, `singleEvents`, page and
//!   sync tokens, 410), insert (client ids, 409), and `/{eventId}` get / patch (`If-Match`, 412) /
//!   delete.
//!
//! Errors use Google's envelopes: People `{"error":{"code","message","status","details"}}`,
//! Calendar `{"error":{"errors":[{"domain","reason","message"}],"code","message"}}`.

mod calendar;
mod people;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsync_core::{Contact, Event};
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

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

/// A fault injected into one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After` (People `RESOURCE_EXHAUSTED` / Calendar `rateLimitExceeded`).
    RateLimit { retry_after_secs: u64 },
    /// 403 `rateLimitExceeded` (Calendar's other throttle signal; People answers 429 instead).
    RateLimit403,
    /// 503 `UNAVAILABLE` / `backendError`.
    Unavailable,
    /// The server never answers (the client's timeout fires, as on a dropped connection).
    Drop,
    /// 401: the access token is treated as expired (the client must refresh).
    Unauthorized,
    /// 200 with a truncated JSON body.
    Truncated,
}

#[derive(Debug)]
struct RateFault {
    rng: u64,
    per_mille: u32,
    fault: Fault,
}

/// One user (mailbox) of the fake.
#[derive(Debug, Default)]
pub(crate) struct User {
    pub(crate) persons: BTreeMap<String, people::PersonRec>,
    pub(crate) groups: BTreeMap<String, people::GroupRec>,
    pub(crate) events: BTreeMap<String, calendar::EventRec>,
}

/// The whole fake's state.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) users: BTreeMap<String, User>,
    /// Access token → (user, generation).
    tokens: HashMap<String, (String, u64)>,
    token_generation: u64,
    refresh_tokens: HashMap<String, String>,
    /// Sync tokens issued before this epoch are expired.
    pub(crate) cursor_epoch: u64,
    /// Change sequence shared by every user and service.
    pub(crate) seq: u64,
    pub(crate) next_id: u64,
    requests: u64,
    counters: BTreeMap<String, u64>,
    faults: BTreeMap<u64, Fault>,
    rate_fault: Option<RateFault>,
}

impl State {
    pub(crate) fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
    pub(crate) fn user(&mut self, email: &str) -> Option<&mut User> {
        self.users.get_mut(&email.to_lowercase())
    }
}

/// Which API a request is for, to pick the error envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    People,
    Calendar,
    OAuth,
}

/// A People-style error (`google.rpc.Status`).
pub(crate) fn people_error(code: u16, status: &str, message: &str, reason: Option<&str>) -> ResponseTemplate {
    let details: Vec<Value> = reason
        .map(|r| json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "people.googleapis.com"}))
        .into_iter()
        .collect();
    let mut err = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        err["details"] = json!(details);
    }
    ResponseTemplate::new(code).set_body_json(json!({ "error": err }))
}

/// A Calendar-style (legacy) error.
pub(crate) fn calendar_error(code: u16, domain: &str, reason: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({"error": {
        "errors": [{"domain": domain, "reason": reason, "message": message}],
        "code": code, "message": message}}))
}

fn fault_response(api: Api, fault: Fault) -> ResponseTemplate {
    match (fault, api) {
        (Fault::RateLimit { retry_after_secs }, Api::Calendar) => {
            calendar_error(429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded")
                .insert_header("Retry-After", retry_after_secs.to_string().as_str())
        }
        (Fault::RateLimit { retry_after_secs }, _) => people_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Critical read requests (Contact and Profile Reads)'.",
            Some("RATE_LIMIT_EXCEEDED"),
        )
        .insert_header("Retry-After", retry_after_secs.to_string().as_str()),
        (Fault::RateLimit403, Api::Calendar) => {
            calendar_error(403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded")
        }
        (Fault::RateLimit403, api) => fault_response(api, Fault::RateLimit { retry_after_secs: 0 }),
        (Fault::Unavailable, Api::Calendar) => calendar_error(503, "global", "backendError", "Backend Error"),
        (Fault::Unavailable, _) => people_error(503, "UNAVAILABLE", "The service is currently unavailable.", None),
        (Fault::Drop, _) => ResponseTemplate::new(200).set_delay(Duration::from_secs(30)),
        (Fault::Unauthorized, api) => unauthorized(api),
        (Fault::Truncated, _) => {
            ResponseTemplate::new(200).set_body_raw(b"{\"items\": [{\"id\": \"abc".to_vec(), "application/json")
        }
    }
}

fn unauthorized(api: Api) -> ResponseTemplate {
    match api {
        Api::Calendar => ResponseTemplate::new(401).set_body_json(json!({"error": {"errors": [{"domain": "global",
            "reason": "authError", "message": "Invalid Credentials", "locationType": "header", "location": "Authorization"}],
            "code": 401, "message": "Invalid Credentials"}})),
        _ => people_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            Some("ACCESS_TOKEN_EXPIRED"),
        ),
    }
}

struct Dispatcher {
    state: Arc<Mutex<State>>,
}

impl Respond for Dispatcher {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.state.lock().expect("fake state poisoned");
        let path = req.url.path().to_owned();
        let method = req.method.as_str().to_owned();
        let (api, endpoint) = endpoint_name(&method, &path);
        st.requests += 1;
        *st.counters.entry(endpoint.clone()).or_default() += 1;
        let n = st.requests;
        let mut fault = st.faults.remove(&n);
        if fault.is_none() {
            if let Some(rf) = st.rate_fault.as_mut() {
                // xorshift64*: deterministic for a seed.
                rf.rng ^= rf.rng << 13;
                rf.rng ^= rf.rng >> 7;
                rf.rng ^= rf.rng << 17;
                if (rf.rng % 1000) < rf.per_mille as u64 {
                    fault = Some(rf.fault);
                }
            }
        }
        if let Some(f) = fault {
            return fault_response(api, f);
        }
        if api == Api::OAuth {
            return token(&mut st, req);
        }
        let user = match bearer(req).and_then(|t| st.tokens.get(&t).cloned()) {
            Some((u, generation)) if generation == st.token_generation => u,
            _ => return unauthorized(api),
        };
        match api {
            Api::People => people::route(&mut st, &user, &method, &path, req),
            Api::Calendar => calendar::route(&mut st, &user, &method, &path, req),
            Api::OAuth => unreachable!("handled above"),
        }
    }
}

fn bearer(req: &Request) -> Option<String> {
    let h = req.headers.get("authorization")?.to_str().ok()?;
    h.strip_prefix("Bearer ").map(str::to_owned)
}

/// (API, endpoint name) of a request, the key of the per-endpoint counters.
fn endpoint_name(method: &str, path: &str) -> (Api, String) {
    if path == "/token" {
        return (Api::OAuth, "oauth.token".into());
    }
    if let Some(rest) = path.strip_prefix("/calendar/v3/") {
        let segs: Vec<&str> = rest.split('/').collect();
        let name = match (method, segs.len()) {
            ("GET", 3) => "calendar.events.list",
            ("POST", 3) => "calendar.events.insert",
            ("GET", 4) => "calendar.events.get",
            ("PATCH", 4) => "calendar.events.patch",
            ("PUT", 4) => "calendar.events.update",
            ("DELETE", 4) => "calendar.events.delete",
            _ => "calendar.other",
        };
        return (Api::Calendar, name.into());
    }
    let name = match (method, path) {
        ("GET", "/v1/contactGroups") => "people.contactGroups.list",
        ("POST", "/v1/contactGroups") => "people.contactGroups.create",
        ("POST", p) if p.ends_with("/members:modify") => "people.contactGroups.members.modify",
        ("GET", p) if p.starts_with("/v1/contactGroups/") => "people.contactGroups.get",
        ("GET", "/v1/people/me/connections") => "people.connections.list",
        ("GET", "/v1/people:batchGet") => "people.getBatchGet",
        ("POST", "/v1/people:batchCreateContacts") => "people.batchCreateContacts",
        ("POST", "/v1/people:batchUpdateContacts") => "people.batchUpdateContacts",
        ("POST", "/v1/people:batchDeleteContacts") => "people.batchDeleteContacts",
        ("GET", p) if p.starts_with("/v1/people/") => "people.get",
        _ => "people.other",
    };
    (Api::People, name.into())
}

fn token(st: &mut State, req: &Request) -> ResponseTemplate {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
    let bad = |e: &str, d: &str| ResponseTemplate::new(400).set_body_json(json!({"error": e, "error_description": d}));
    let user = match form.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(assertion) = form.get("assertion") else { return bad("invalid_request", "Missing assertion") };
            let Ok(data) = jsonwebtoken::dangerous::insecure_decode::<Value>(assertion) else {
                return bad("invalid_grant", "Invalid JWT Signature.");
            };
            if data.header.alg != jsonwebtoken::Algorithm::RS256 {
                return bad("invalid_grant", "Invalid JWT: algorithm must be RS256");
            }
            if data.claims["iss"].as_str() != Some(SERVICE_ACCOUNT) {
                return bad("invalid_client", "The OAuth client was not found.");
            }
            let sub = data.claims["sub"].as_str().unwrap_or("").to_lowercase();
            if !st.users.contains_key(&sub) {
                return bad("invalid_grant", "Invalid email or User ID");
            }
            sub
        }
        Some("refresh_token") => {
            if form.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
                return ResponseTemplate::new(401).set_body_json(
                    json!({"error": "invalid_client", "error_description": "The OAuth client was not found."}),
                );
            }
            match form.get("refresh_token").and_then(|t| st.refresh_tokens.get(t)) {
                Some(u) => u.clone(),
                None => return bad("invalid_grant", "Token has been expired or revoked."),
            }
        }
        _ => return bad("unsupported_grant_type", "Invalid grant_type"),
    };
    let n = st.id();
    let tok = format!("ya29.fake-{n:08}");
    st.tokens.insert(tok.clone(), (user, st.token_generation));
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": tok, "expires_in": 3599, "token_type": "Bearer", "scope": crate::config::SCOPES}))
}

/// The fake Google: OAuth, People and Calendar on one loopback server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FakeGoogle {
    server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
}

impl FakeGoogle {
    /// Start on a random loopback port.
    pub async fn start() -> Self {
        Self::serve(MockServer::builder().disable_request_recording().start().await).await
    }

    /// Start on a given listener (a fixed port, e.g. for `crmsync sandbox`).
    pub async fn start_on(listener: TcpListener) -> Self {
        Self::serve(MockServer::builder().listener(listener).disable_request_recording().start().await).await
    }

    async fn serve(server: MockServer) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(wiremock::matchers::any()).respond_with(Dispatcher { state: state.clone() }).mount(&server).await;
        Self { server: Arc::new(server), state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake state poisoned")
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

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

    /// Requests served so far (all endpoints, including faulted ones and the token endpoint).
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// Requests served by one endpoint, e.g. `people.connections.list`,
    /// `people.batchCreateContacts`, `calendar.events.list`, `calendar.events.insert`,
    /// `oauth.token` (see [`FakeGoogle::counts`] for every name seen).
    pub fn count(&self, endpoint: &str) -> u64 {
        self.lock().counters.get(endpoint).copied().unwrap_or(0)
    }

    /// Every endpoint counter.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counters.clone()
    }

    /// Zero the request counters (total and per endpoint).
    pub fn reset_counts(&self) {
        let mut st = self.lock();
        st.requests = 0;
        st.counters.clear();
        st.faults.clear();
    }

    /// Inject `fault` on the `n`-th request from now (1 = the next one).
    pub fn fail_nth(&self, n: u64, fault: Fault) {
        let mut st = self.lock();
        let at = st.requests + n;
        st.faults.insert(at, fault);
    }

    /// Inject `fault` into a seeded, reproducible `per_mille`/1000 of requests (0 turns it off).
    pub fn fail_rate(&self, seed: u64, per_mille: u32, fault: Fault) {
        self.lock().rate_fault = (per_mille > 0).then_some(RateFault { rng: seed | 1, per_mille, fault });
    }

    /// Invalidate every access token issued so far (the next API call gets 401).
    pub fn expire_tokens(&self) {
        self.lock().token_generation += 1;
    }

    /// Expire every People and Calendar sync token issued so far (People: 400
    /// `EXPIRED_SYNC_TOKEN`; Calendar: 410 `fullSyncRequired`).
    pub fn expire_cursors(&self) {
        let mut st = self.lock();
        st.cursor_epoch += 1;
    }

    /// Add a user (mailbox) with the system groups `myContacts` and `starred`. Idempotent.
    pub fn add_user(&self, email: &str) {
        let mut st = self.lock();
        if st.users.contains_key(&email.to_lowercase()) {
            return;
        }
        let mut u = User::default();
        for (id, name) in [("myContacts", "myContacts"), ("starred", "starred")] {
            u.groups.insert(format!("contactGroups/{id}"), people::GroupRec::system(id, name));
        }
        st.users.insert(email.to_lowercase(), u);
    }

    /// Seed a refresh token for `user` (user-managed mode); returns it.
    pub fn add_refresh_token(&self, user: &str) -> String {
        let mut st = self.lock();
        let n = st.id();
        let t = format!("1//fake-refresh-{n:06}");
        st.refresh_tokens.insert(t.clone(), user.to_lowercase());
        t
    }

    /// Revoke a refresh token (the next refresh gets 400 `invalid_grant`).
    pub fn revoke_refresh_token(&self, token: &str) {
        self.lock().refresh_tokens.remove(token);
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
        people::seed_person(&mut st, user, groups, person)
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
        calendar::seed_event(&mut st, user, event)
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

/// Parse RFC 3339 (with offset), as Google requires for times in query parameters.
pub(crate) fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Query parameters, repeated ones kept in order.
pub(crate) fn query(req: &Request) -> BTreeMap<String, Vec<String>> {
    let mut q: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.url.query_pairs() {
        q.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    q
}

pub(crate) fn q1<'a>(q: &'a BTreeMap<String, Vec<String>>, k: &str) -> Option<&'a str> {
    q.get(k).and_then(|v| v.first()).map(String::as_str)
}

/// A set of field names parsed from a comma-separated mask.
pub(crate) fn mask(s: Option<&str>) -> BTreeSet<String> {
    s.unwrap_or("").split(',').map(|f| f.trim().to_owned()).filter(|f| !f.is_empty()).collect()
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}
