//! HTTP routing of the fake Graph: the [`Service`] the chassis serves, the token endpoint,
//! `$batch`, and the dispatch of one request to its handler.

use std::collections::BTreeSet;

use crmsync_fake::{Chassis, Fault, Reply, Service};
use serde_json::{Map, Value, json};

use chrono::DateTime;

use super::state::{
    Principal, Req, Resp, Scope, State, error, filtered, key, list, now, percent_decode, render, strip_expand, window,
};
use super::{CLIENT_ID, CLIENT_SECRET};

impl Service for State {
    fn endpoint(&self, _method: &str, path: &str) -> String {
        endpoint(path).to_owned()
    }

    fn serve(&mut self, req: &wiremock::Request, chassis: &mut Chassis) -> Reply {
        self.handle(req, chassis).reply()
    }

    fn fault_reply(&self, fault: &Fault, _endpoint: &str) -> Reply {
        fault_resp(fault).reply()
    }

    fn expire_tokens(&mut self) {
        self.tokens.expire();
    }

    fn expire_cursors(&mut self) {
        State::expire_cursors(self);
    }

    fn started(&mut self, uri: &str) {
        self.https = uri.starts_with("https://");
    }

    fn keep_sessions(&mut self, before: Self) {
        self.tokens.keep_access(before.tokens);
    }

    fn control(&mut self, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
        super::control::route(self, method, path, body)
    }
}

impl Resp {
    fn reply(self) -> Reply {
        let mut r = match self.body {
            Some(b) => Reply::json(self.status, b),
            None => Reply::empty(self.status),
        };
        r.headers = self.headers;
        r
    }
}

/// Graph's answer to a status fault (a 403 throttle is a 429 on Graph).
fn fault_resp(f: &Fault) -> Resp {
    match f {
        Fault::TooManyRequests { .. } | Fault::Throttle403 => {
            let mut r = error(429, "TooManyRequests", "Please retry again later.");
            r.headers.push(("Retry-After".into(), f.retry_after().unwrap_or_else(|| "1".into())));
            r
        }
        Fault::ExpiredToken => {
            error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        }
        Fault::ServerError => error(500, "generalException", "An unspecified error has occurred."),
        _ => error(503, "serviceNotAvailable", "The service is temporarily unavailable."),
    }
}

/// Endpoint names by a fragment of the path, the first match wins.
const ENDPOINTS: [(&str, &str); 8] = [
    ("/oauth2/", "token"),
    ("/$batch", "$batch"),
    ("/contacts/delta", "contacts.delta"),
    ("/calendarView/delta", "calendarView.delta"),
    ("/calendarView", "calendarView"),
    ("/contacts", "contacts"),
    ("/contactFolders", "contactFolders"),
    ("/events", "events"),
];

/// A mailbox's user id: a GUID derived from its key, stable across runs.
fn user_id(mailbox_key: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, mailbox_key.as_bytes()).to_string()
}

/// The endpoint name of a request path.
fn endpoint(path: &str) -> &'static str {
    ENDPOINTS.iter().find(|(fragment, _)| path.contains(fragment)).map_or("other", |(_, name)| name)
}

impl State {
    fn handle(&mut self, req: &wiremock::Request, ch: &mut Chassis) -> Resp {
        let path = req.url.path();
        if req.method.as_str() == "POST" && path.ends_with("/oauth2/v2.0/token") {
            let form: Vec<(String, String)> = url::form_urlencoded::parse(&req.body).into_owned().collect();
            return self.token(&form);
        }
        let Some(rest) = path.strip_prefix("/v1.0") else {
            return error(404, "BadRequest", &format!("Invalid version: {path}"));
        };
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok());
        let Some(who) = self.tokens.bearer(auth) else {
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
                Some(host) => format!("{}://{host}", if self.https { "https" } else { "http" }),
                None => req.url.origin().ascii_serialization(),
            },
        };
        if r.path == "/$batch" && r.method == "POST" {
            return self.batch(ch, &who, &r);
        }
        self.dispatch(&who, &r)
    }

    /// The token endpoint (`/{tenant}/oauth2/v2.0/token`).
    fn token(&mut self, form: &[(String, String)]) -> Resp {
        let f = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let aad = |status: u16, err: &str, code: u32, desc: &str| {
            Resp::json(
                status,
                json!({ "error": err, "error_description": format!("AADSTS{code}: {desc}\r\nTrace ID: {}", uuid::Uuid::new_v4()),
                    "error_codes": [code], "timestamp": now(), "trace_id": uuid::Uuid::new_v4().to_string(),
                    "correlation_id": uuid::Uuid::new_v4().to_string(), "error_uri": format!("https://login.microsoftonline.com/error?code={code}") }),
            )
        };
        if f("client_id") != Some(CLIENT_ID) {
            return aad(400, "unauthorized_client", 700016, "Application was not found in the directory.");
        }
        let principal = match f("grant_type") {
            Some("client_credentials") => {
                if f("client_secret") != Some(CLIENT_SECRET) {
                    return aad(401, "invalid_client", 7000215, "Invalid client secret provided.");
                }
                Principal::App
            }
            Some("refresh_token") => match self.tokens.refresh(f("refresh_token")) {
                Some(p) => p,
                None => {
                    return aad(
                        400,
                        "invalid_grant",
                        70008,
                        "The provided authorization code or refresh token has expired due to inactivity.",
                    );
                }
            },
            _ => return aad(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."),
        };
        let token = self.tokens.issue("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.ZmFrZS1ncmFwaA.", principal.clone());
        let mut body = json!({ "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token,
            "scope": f("scope").unwrap_or("") });
        if principal != Principal::App {
            body["refresh_token"] = json!(f("refresh_token"));
        }
        Resp::json(200, body)
    }

    /// `POST /$batch`.
    fn batch(&mut self, ch: &mut Chassis, who: &Principal, outer: &Req) -> Resp {
        let Some(reqs) = outer.body.as_ref().and_then(|b| b["requests"].as_array()).cloned() else {
            return error(400, "BadRequest", "Invalid batch payload format.");
        };
        if reqs.len() > 20 {
            return error(
                400,
                "BadRequest",
                "Invalid batch payload format: the number of requests exceeds the limit of 20.",
            );
        }
        let ids: BTreeSet<&str> = reqs.iter().filter_map(|r| r["id"].as_str()).collect();
        if ids.len() != reqs.len() {
            return error(400, "BadRequest", "Batch request ids must be unique and present.");
        }
        let mut responses = vec![];
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for r in &reqs {
            let id = r["id"].as_str().unwrap_or_default();
            let url = r["url"].as_str().unwrap_or_default();
            let blocked =
                r["dependsOn"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|d| failed.contains(d));
            let resp = match url::Url::parse(&format!("http://sub/v1.0/{}", url.trim_start_matches('/'))) {
                _ if blocked => error(424, "FailedDependency", "A request this one depends on failed."),
                Err(_) => error(400, "BadRequest", "Invalid request URL."),
                Ok(u) => {
                    let path = u.path().trim_start_matches("/v1.0").to_owned();
                    let method = r["method"].as_str().unwrap_or("GET").to_uppercase();
                    match ch.sub_request(&method, &format!("batch:{}", endpoint(&path))) {
                        Some(f) if f.is_status() => fault_resp(&f),
                        Some(_) => error(502, "BadGateway", "The connection to the backend dropped."),
                        None => {
                            let sub = Req {
                                method,
                                path: percent_decode(&path),
                                query: u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
                                headers: r["headers"]
                                    .as_object()
                                    .map(|h| {
                                        h.iter()
                                            .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap_or("").to_owned()))
                                            .collect()
                                    })
                                    .unwrap_or_default(),
                                body: r.get("body").cloned(),
                                origin: outer.origin.clone(),
                            };
                            self.dispatch(who, &sub)
                        }
                    }
                }
            };
            let mut headers = Map::new();
            for (k, v) in &resp.headers {
                headers.insert(k.clone(), json!(v));
            }
            if resp.body.is_some() {
                headers.insert("Content-Type".into(), json!("application/json"));
            }
            let mut o = json!({ "id": id, "status": resp.status, "headers": headers });
            if let Some(b) = resp.body {
                o["body"] = b;
            }
            if !(200..300).contains(&o["status"].as_u64().unwrap_or(0)) {
                failed.insert(id.to_owned());
            }
            responses.push(o);
        }
        // Graph answers in any order.
        responses.reverse();
        Resp::json(200, json!({ "responses": responses }))
    }

    /// Route a request below `/v1.0` for `who`.
    pub(super) fn dispatch(&mut self, who: &Principal, r: &Req) -> Resp {
        let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let (mb_key, rest) = match segs.as_slice() {
            ["me", rest @ ..] => match who {
                Principal::User(mb) => (mb.clone(), rest),
                Principal::App => {
                    return error(400, "BadRequest", "/me request is only valid with delegated authentication flow.");
                }
            },
            ["users", id, rest @ ..] => {
                // A user is named by its user principal name (the mailbox address) or its id.
                let k = self.mailboxes.keys().find(|k| user_id(k) == id.to_lowercase()).cloned().unwrap_or(key(id));
                if let Principal::User(mb) = who {
                    if *mb != k {
                        return error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.");
                    }
                }
                (k, rest)
            }
            _ => {
                return error(
                    400,
                    "BadRequest",
                    &format!("Resource not found for the segment '{}'.", segs.first().unwrap_or(&"")),
                );
            }
        };
        if !self.mailboxes.contains_key(&mb_key) {
            return error(404, "ErrorInvalidUser", &format!("The requested user '{mb_key}' is invalid."));
        }
        let m = r.method.as_str();
        let is_delta = |s: &str| s == "delta" || s == "delta()";
        match (m, rest) {
            ("GET", []) => {
                let address = &self.mailboxes[&mb_key].id;
                let name = address.split('@').next().unwrap_or(address);
                Resp::json(
                    200,
                    json!({"@odata.context": format!("{}/v1.0/$metadata#users/$entity", r.origin),
                           "id": user_id(&mb_key), "userPrincipalName": address, "mail": address,
                           "displayName": name, "businessPhones": [], "givenName": null, "surname": null,
                           "jobTitle": null, "mobilePhone": null, "officeLocation": null, "preferredLanguage": null}),
                )
            }
            ("GET", ["contactFolders"]) => {
                let root = self.mailboxes[&mb_key].root_folder.clone();
                self.list_folders(&mb_key, &root, r)
            }
            ("POST", ["contactFolders"]) => {
                let root = self.mailboxes[&mb_key].root_folder.clone();
                self.create_folder(&mb_key, &root, r)
            }
            ("GET", ["contactFolders", id]) => match self.mailboxes[&mb_key].folders.get(*id) {
                Some(f) => Resp::json(200, json!({ "id": id, "displayName": f.name, "parentFolderId": f.parent })),
                None => error(404, "ErrorItemNotFound", "The specified object was not found in the store."),
            },
            ("GET", ["contactFolders", id, "childFolders"]) => self.list_folders(&mb_key, id, r),
            ("POST", ["contactFolders", id, "childFolders"]) => self.create_folder(&mb_key, id, r),
            ("GET", ["contactFolders", id, "contacts"]) => self.list_contacts(&mb_key, Some(id), r),
            ("POST", ["contactFolders", id, "contacts"]) => self.create_contact(&mb_key, id, r),
            ("GET", ["contactFolders", id, "contacts", d]) if is_delta(d) => {
                if !self.mailboxes[&mb_key].folders.contains_key(*id) {
                    return error(404, "ErrorItemNotFound", "The specified folder was not found in the store.");
                }
                self.delta(Scope::Folder { mailbox: mb_key.clone(), folder: (*id).to_owned() }, r)
            }
            ("GET", ["contacts"]) => self.list_contacts(&mb_key, None, r),
            ("POST", ["contacts"]) => {
                let root = self.mailboxes[&mb_key].root_folder.clone();
                self.create_contact(&mb_key, &root, r)
            }
            ("GET", ["contacts", d]) if is_delta(d) => {
                let root = self.mailboxes[&mb_key].root_folder.clone();
                self.delta(Scope::Folder { mailbox: mb_key.clone(), folder: root }, r)
            }
            ("GET", ["contacts", id]) => match self.mailboxes[&mb_key].contacts.get(*id) {
                Some(v) => Resp::json(200, render(v, r)),
                None => error(404, "ErrorItemNotFound", "The specified object was not found in the store."),
            },
            ("PATCH", ["contacts", id]) => self.patch(&mb_key, id, false, r),
            ("DELETE", ["contacts", id]) => {
                match self.mailboxes.get_mut(&mb_key).and_then(|mb| mb.contacts.remove(*id)) {
                    Some(_) => Resp::empty(204),
                    None => error(404, "ErrorItemNotFound", "The specified object was not found in the store."),
                }
            }
            ("GET", ["calendarView"]) => match window(r) {
                Ok((s, e)) => {
                    let items: Vec<Value> = Self::calendar_view(&self.mailboxes[&mb_key], s, e).into_values().collect();
                    match super::orderby::ordered(items, r, "event") {
                        Ok(items) => list(items, r),
                        Err(e) => e,
                    }
                }
                Err(resp) => resp,
            },
            ("GET", ["calendarView", d]) if is_delta(d) => {
                if r.q("$deltatoken").is_some() || r.q("$skiptoken").is_some() {
                    return self.delta(
                        Scope::Calendar {
                            mailbox: mb_key.clone(),
                            start: DateTime::UNIX_EPOCH,
                            end: DateTime::UNIX_EPOCH,
                        },
                        r,
                    );
                }
                match window(r) {
                    Ok((start, end)) => self.delta(Scope::Calendar { mailbox: mb_key.clone(), start, end }, r),
                    Err(resp) => resp,
                }
            }
            ("GET", ["events"] | ["calendar", "events"]) => {
                let items: Vec<Value> = self.mailboxes[&mb_key].events.values().cloned().collect();
                match filtered(items, r) {
                    Ok(items) => list(items, r),
                    Err(e) => e,
                }
            }
            ("POST", ["events"] | ["calendar", "events"]) => {
                let Some(Value::Object(_)) = &r.body else {
                    return error(400, "ErrorInvalidRequest", "The request body is not an event.");
                };
                let body = r.body.clone().unwrap_or_default();
                if body["start"]["dateTime"].as_str().is_none() || body["end"]["dateTime"].as_str().is_none() {
                    return error(400, "ErrorInvalidRequest", "The event must have a start and an end.");
                }
                if let Err(e) = super::zones::check(&body) {
                    return e;
                }
                if super::zones::instant(&body["end"]) < super::zones::instant(&body["start"]) {
                    return error(
                        400,
                        "ErrorInvalidRequest",
                        "The end time of the event must be after its start time.",
                    );
                }
                let id = self.insert_event(&mb_key, body);
                Resp::json(201, render(&self.mailboxes[&mb_key].events[&id], &strip_expand(r)))
            }
            ("GET", ["events", id] | ["calendar", "events", id]) => match Self::event(&self.mailboxes[&mb_key], id) {
                Some(v) => Resp::json(200, render(&v, r)),
                None => error(404, "ErrorItemNotFound", "The specified object was not found in the store."),
            },
            ("GET", ["events", id, "instances"] | ["calendar", "events", id, "instances"]) => {
                self.instances(&mb_key, id, r)
            }
            ("PATCH", ["events", id] | ["calendar", "events", id]) => self.patch(&mb_key, id, true, r),
            ("DELETE", ["events", id] | ["calendar", "events", id]) => {
                if self.delete_event(&mb_key, id) {
                    Resp::empty(204)
                } else {
                    error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
                }
            }
            _ => error(400, "BadRequest", &format!("Unsupported request {m} {}", r.path)),
        }
    }
}
