//! HTTP routing of the fake Google: the [`Service`] the chassis serves, the OAuth token
//! endpoint, the error envelopes, and the request helpers the People and Calendar handlers share.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use crmsync_fake::{Chassis, Fault, Reply, Service, oauth_error, oauth_form};
use serde_json::{Value, json};
use wiremock::Request;

use super::state::State;
use super::{CLIENT_ID, SERVICE_ACCOUNT, calendar, people};

impl Service for State {
    fn endpoint(&self, method: &str, path: &str) -> String {
        endpoint_name(method, path).1
    }

    fn serve(&mut self, req: &Request, _chassis: &mut Chassis) -> Reply {
        let (path, method) = (req.url.path(), req.method.as_str());
        let api = endpoint_name(method, path).0;
        if api == Api::OAuth {
            return token(self, req);
        }
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok());
        let Some(user) = self.tokens.bearer(auth) else { return unauthorized(api) };
        match api {
            Api::Calendar => calendar::route(self, &user, method, path, req),
            _ => people::route(self, &user, method, path, req),
        }
    }

    fn fault_reply(&self, fault: &Fault, endpoint: &str) -> Reply {
        let api = if endpoint.starts_with("calendar.") { Api::Calendar } else { Api::People };
        fault_reply(api, fault)
    }

    fn expire_tokens(&mut self) {
        self.tokens.expire();
    }

    fn expire_cursors(&mut self) {
        self.cursor_epoch += 1;
    }

    fn keep_sessions(&mut self, before: Self) {
        self.tokens.keep_access(before.tokens);
    }

    fn control(&mut self, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
        super::control::route(self, method, path, body)
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
pub(crate) fn people_error(code: u16, status: &str, message: &str, reason: Option<&str>) -> Reply {
    let details: Vec<Value> = reason
        .map(|r| json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r, "domain": "people.googleapis.com"}))
        .into_iter()
        .collect();
    let mut err = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        err["details"] = json!(details);
    }
    Reply::json(code, json!({ "error": err }))
}

/// A Calendar-style (legacy) error.
pub(crate) fn calendar_error(code: u16, domain: &str, reason: &str, message: &str) -> Reply {
    Reply::json(
        code,
        json!({"error": {
        "errors": [{"domain": domain, "reason": reason, "message": message}],
        "code": code, "message": message}}),
    )
}

/// Google's answer to a status fault, in the envelope of the API hit.
fn fault_reply(api: Api, fault: &Fault) -> Reply {
    let reply = match (fault, api) {
        (Fault::TooManyRequests { .. }, Api::Calendar) => {
            calendar_error(429, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded")
        }
        (Fault::Throttle403, Api::Calendar) => {
            calendar_error(403, "usageLimits", "rateLimitExceeded", "Rate Limit Exceeded")
        }
        (Fault::TooManyRequests { .. } | Fault::Throttle403, _) => people_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Critical read requests (Contact and Profile Reads)'.",
            Some("RATE_LIMIT_EXCEEDED"),
        ),
        (Fault::ExpiredToken, api) => unauthorized(api),
        (Fault::ServerError, Api::Calendar) => calendar_error(500, "global", "backendError", "Backend Error"),
        (Fault::ServerError, _) => people_error(500, "INTERNAL", "Internal error encountered.", None),
        (_, Api::Calendar) => calendar_error(503, "global", "backendError", "Backend Error"),
        (_, _) => people_error(503, "UNAVAILABLE", "The service is currently unavailable.", None),
    };
    match fault.retry_after() {
        Some(s) => reply.header("Retry-After", s),
        None => reply,
    }
}

fn unauthorized(api: Api) -> Reply {
    match api {
        Api::Calendar => Reply::json(
            401,
            json!({"error": {"errors": [{"domain": "global",
            "reason": "authError", "message": "Invalid Credentials", "locationType": "header", "location": "Authorization"}],
            "code": 401, "message": "Invalid Credentials"}}),
        ),
        _ => people_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            Some("ACCESS_TOKEN_EXPIRED"),
        ),
    }
}

/// (API, endpoint name) of a request, the key of the per-endpoint counters.
fn endpoint_name(method: &str, path: &str) -> (Api, String) {
    if path == "/token" {
        return (Api::OAuth, "oauth.token".into());
    }
    if let Some(rest) = path.strip_prefix("/calendar/v3/") {
        let segs: Vec<&str> = rest.split('/').collect();
        let name = match (method, segs.as_slice()) {
            ("GET", ["calendars", _, "events"]) => "calendar.events.list",
            ("POST", ["calendars", _, "events"]) => "calendar.events.insert",
            ("GET", ["calendars", _, "events", _]) => "calendar.events.get",
            ("PATCH", ["calendars", _, "events", _]) => "calendar.events.patch",
            ("PUT", ["calendars", _, "events", _]) => "calendar.events.update",
            ("DELETE", ["calendars", _, "events", _]) => "calendar.events.delete",
            ("GET", ["calendars", _, "events", _, "instances"]) => "calendar.events.instances",
            ("GET", ["calendars", _]) => "calendar.calendars.get",
            ("GET", ["users", "me", "calendarList"]) => "calendar.calendarList.list",
            ("GET", ["users", "me", "calendarList", _]) => "calendar.calendarList.get",
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
        ("GET", "/v1/people:searchContacts") => "people.searchContacts",
        ("POST", "/v1/people:batchCreateContacts") => "people.batchCreateContacts",
        ("POST", "/v1/people:batchUpdateContacts") => "people.batchUpdateContacts",
        ("POST", "/v1/people:batchDeleteContacts") => "people.batchDeleteContacts",
        ("POST", "/v1/people:createContact") => "people.createContact",
        ("PATCH", p) if p.ends_with(":updateContact") => "people.updateContact",
        ("DELETE", p) if p.ends_with(":deleteContact") => "people.deleteContact",
        ("GET", p) if p.starts_with("/v1/people/") => "people.get",
        _ => "people.other",
    };
    (Api::People, name.into())
}

fn token(st: &mut State, req: &Request) -> Reply {
    let form = oauth_form(&req.body);
    let bad = |e: &str, d: &str| oauth_error(400, e, d);
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
                return oauth_error(401, "invalid_client", "The OAuth client was not found.");
            }
            match st.tokens.refresh(form.get("refresh_token").map(String::as_str)) {
                Some(u) => u,
                None => return bad("invalid_grant", "Token has been expired or revoked."),
            }
        }
        _ => return bad("unsupported_grant_type", "Invalid grant_type"),
    };
    let tok = st.tokens.issue("ya29.fake-", user);
    Reply::json(
        200,
        json!({
        "access_token": tok, "expires_in": 3599, "token_type": "Bearer", "scope": crate::config::SCOPES}),
    )
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
