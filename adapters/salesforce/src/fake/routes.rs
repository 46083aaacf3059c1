//! HTTP routing of the fake org: the [`Service`] the chassis serves, over the org's state.

use chrono::{DateTime, Duration, Utc};
use crmsync_fake::{Chassis, Fault, Reply, Service, oauth_error, oauth_form};
use serde_json::{Map, Value, json};
use wiremock::Request;

use super::schema::{Ty, Val, fmt_time, object, parse_time};
use super::soql::{self, Db};
use super::state::{RecErr, State};
use super::{CLIENT_ID, CLIENT_SECRET};

const JSON: &str = "application/json;charset=UTF-8";

fn ok(status: u16, body: Value) -> Reply {
    Reply::raw(status, serde_json::to_vec(&body).unwrap_or_default(), JSON)
}
fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    ok(status, json!([{"message": message.into(), "errorCode": code}]))
}
fn rec_err(status: u16, e: &RecErr) -> Reply {
    ok(status, json!([e.rest()]))
}
fn not_found() -> Reply {
    error(404, "NOT_FOUND", "The requested resource does not exist")
}

/// An RFC 1123 date; the weekday is not checked (clients get it wrong, e.g. the docs' example).
fn http_date_parse(s: &str) -> Option<DateTime<Utc>> {
    let rest = s.split_once(", ").map_or(s, |(_, r)| r).trim();
    let rest = rest.strip_suffix("GMT").unwrap_or(rest).trim();
    chrono::NaiveDateTime::parse_from_str(rest, "%d %b %Y %H:%M:%S").ok().map(|t| t.and_utc())
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

impl Service for State {
    fn endpoint(&self, method: &str, path: &str) -> String {
        endpoint_of(method, path)
    }

    fn serve(&mut self, req: &Request, chassis: &mut Chassis) -> Reply {
        let date = http_date(self.now());
        let query: Vec<(String, String)> =
            req.url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (reply, metered) =
            route(self, chassis, req.method.as_str(), req.url.path(), &query, &header, &req.body, true);
        let reply = reply.header("Date", date);
        if metered {
            reply.header("Sforce-Limit-Info", format!("api-usage={}/{}", self.api_used, self.api_max))
        } else {
            reply
        }
    }

    fn fault_reply(&self, fault: &Fault, _endpoint: &str) -> Reply {
        let reply = match fault {
            Fault::TooManyRequests { .. } => error(429, "REQUEST_LIMIT_EXCEEDED", "Too many requests"),
            Fault::Throttle403 => error(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
            Fault::ExpiredToken => error(401, "INVALID_SESSION_ID", "Session expired or invalid"),
            Fault::ServerError => error(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support.",
            ),
            _ => Reply::raw(
                503,
                b"<html><body><h1>503 Service Unavailable</h1>Server temporarily unavailable.</body></html>".to_vec(),
                "text/html",
            ),
        };
        let reply = reply.header("Date", http_date(self.now()));
        match fault.retry_after() {
            Some(s) => reply.header("Retry-After", s),
            None => reply,
        }
    }

    fn expire_tokens(&mut self) {
        self.tokens.expire();
        self.user_tokens.expire();
    }

    fn expire_cursors(&mut self) {
        State::expire_cursors(self);
    }

    fn keep_sessions(&mut self, before: Self) {
        self.tokens.keep_access(before.tokens);
    }

    fn control(&mut self, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
        super::control::route(self, method, path, body)
    }

    fn started(&mut self, uri: &str) {
        self.uri = uri.to_owned();
    }
}

/// The endpoint name of a request (`token`, `query`, `collections_upsert`, …).
fn endpoint_of(method: &str, path: &str) -> String {
    if path == "/services/oauth2/token" && method == "POST" {
        return "token".into();
    }
    if let Some(name) = path.strip_prefix("/services/oauth2/").filter(|p| matches!(*p, "authorize" | "userinfo")) {
        return name.into();
    }
    if matches!(path, "/services/data" | "/services/data/") && method == "GET" {
        return "versions".into();
    }
    match data_path(path) {
        Some((_, segs)) => label_of(method, &segs),
        None => "unknown".into(),
    }
}

/// `/services/data/vNN.N/rest…` → (`NN.N`, the segments of `rest`).
fn data_path(path: &str) -> Option<(&str, Vec<&str>)> {
    let rest = path.strip_prefix("/services/data/v")?;
    let (version, rest) = rest.split_once('/').unwrap_or((rest, ""));
    if version.split_once('.').is_none_or(|(a, b)| a.parse::<u32>().is_err() || b.parse::<u32>().is_err()) {
        return None;
    }
    Some((version, rest.split('/').filter(|s| !s.is_empty()).collect()))
}

type Header<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Route one request: (reply, whether it is metered against API limits).
#[allow(clippy::too_many_arguments)]
fn route(
    st: &mut State,
    ch: &mut Chassis,
    method: &str,
    path: &str,
    query: &[(String, String)],
    header: Header,
    body: &[u8],
    top: bool,
) -> (Reply, bool) {
    if path == "/services/oauth2/token" && method == "POST" {
        return (token(st, body), false);
    }
    match path {
        "/services/oauth2/authorize" => return (super::authorize::respond(st, ch, method, query, body), false),
        "/services/oauth2/userinfo" => {
            return (super::authorize::userinfo(st, header("authorization").as_deref()), false);
        }
        _ => {}
    }
    if matches!(path, "/services/data" | "/services/data/") && method == "GET" {
        return (ok(200, json!([{"label": "Winter '25", "url": "/services/data/v62.0", "version": "62.0"}])), false);
    }
    let Some((version, segs)) = data_path(path) else {
        return (not_found(), false);
    };
    if top {
        if st.tokens.bearer(header("authorization").as_deref()).is_none() {
            return (error(401, "INVALID_SESSION_ID", "Session expired or invalid"), false);
        }
        st.api_used += 1;
        if st.api_used > st.api_max {
            return (error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), true);
        }
    }
    st.api_version = version.to_owned();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let json_body = || -> Result<Value, Reply> {
        serde_json::from_slice(body).map_err(|e| error(400, "JSON_PARSER_ERROR", format!("Unexpected character: {e}")))
    };
    let reply = match (method, segs.as_slice()) {
        ("GET", ["query" | "queryAll"]) => {
            let all = segs[0] == "queryAll";
            let batch = header("sforce-query-options")
                .and_then(|h| {
                    h.split(';')
                        .find_map(|p| p.trim().strip_prefix("batchSize=").and_then(|n| n.trim().parse::<usize>().ok()))
                })
                .map(|n| n.clamp(200, 2000))
                .unwrap_or(2000)
                .min(st.page_size);
            run_query(st, &q("q").unwrap_or_default(), all, batch, version)
        }
        ("GET", ["query" | "queryAll", locator]) => query_more(st, locator, version),
        ("GET", ["limits"]) => ok(
            200,
            json!({"DailyApiRequests": {"Max": st.api_max, "Remaining": st.api_max.saturating_sub(st.api_used)},
                   "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                   "ConcurrentAsyncGetReportInstances": {"Max": 200, "Remaining": 200}}),
        ),
        ("POST", ["composite"]) => match json_body() {
            Ok(b) => composite(st, ch, &b, header),
            Err(r) => r,
        },
        ("POST" | "PATCH", ["composite", "sobjects"]) => match json_body() {
            Ok(b) => collections_write(st, &b, method == "POST", None),
            Err(r) => r,
        },
        ("GET", ["composite", "sobjects", ty]) => {
            let Some(obj) = object(ty) else { return (not_found(), true) };
            let fields: Option<Vec<String>> = q("fields").map(|f| f.split(',').map(|s| s.trim().to_owned()).collect());
            if let Some(bad) = fields.iter().flatten().find(|f| obj.field(f).is_none()) {
                return (
                    error(400, "INVALID_FIELD", format!("No such column '{bad}' on sobject of type {}", obj.name)),
                    true,
                );
            }
            let ids = q("ids").unwrap_or_default();
            let ids: Vec<&str> = ids.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
            if ids.len() > 2000 {
                return (error(400, "EXCEEDED_ID_LIMIT", "cannot retrieve more than 2000 records"), true);
            }
            let out: Vec<Value> = ids
                .iter()
                .map(|id| match st.by_id(id) {
                    Some((o, r)) if o.name == obj.name => st.record_json(obj, r, fields.as_deref()),
                    _ => Value::Null,
                })
                .collect();
            ok(200, json!(out))
        }
        ("PATCH", ["composite", "sobjects", ty, field]) => match json_body() {
            Ok(b) => collections_write(st, &b, false, Some((ty, field))),
            Err(r) => r,
        },
        ("DELETE", ["composite", "sobjects"]) => {
            collections_delete(st, &q("ids").unwrap_or_default(), q("allOrNone").as_deref() == Some("true"))
        }
        ("GET", ["sobjects"]) => global_describe(version),
        ("GET", ["search"]) => match super::sosl::search(&*st, &q("q").unwrap_or_default(), st.now(), version) {
            Ok(v) => ok(200, v),
            Err(e) => error(400, e.code, e.message),
        },
        (_, ["sobjects", ty, rest @ ..]) => {
            let Some(obj) = object(ty) else {
                return (
                    error(
                        404,
                        "NOT_FOUND",
                        format!("The requested resource does not exist: sObject type '{ty}' is not supported."),
                    ),
                    true,
                );
            };
            let actor = st.integration_user.clone();
            match (method, rest) {
                ("POST", []) => match json_body() {
                    Ok(Value::Object(m)) => match st.write(obj, None, &m, &actor, false) {
                        Ok(id) => ok(201, json!({"id": id, "success": true, "errors": []})),
                        Err(e) => rec_err(400, &e),
                    },
                    Ok(_) => error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object"),
                    Err(r) => r,
                },
                ("GET", []) => ok(200, json!({"objectDescribe": describe_entry(obj, version), "recentItems": []})),
                ("GET", ["describe"]) => describe(obj),
                ("GET", [kind @ ("updated" | "deleted")]) => replication(st, obj, kind, q("start"), q("end")),
                ("GET", [id]) => match st.find(obj, id) {
                    Some(r) if r.get("IsDeleted") == Some(&Val::Bool(true)) => {
                        error(404, "ENTITY_IS_DELETED", "entity is deleted")
                    }
                    Some(r) => {
                        let fields: Option<Vec<String>> =
                            q("fields").map(|f| f.split(',').map(|s| s.trim().to_owned()).collect());
                        if let Some(fs) = &fields {
                            if let Some(bad) = fs.iter().find(|f| obj.field(f).is_none()) {
                                return (
                                    error(
                                        400,
                                        "INVALID_FIELD",
                                        format!("No such column '{bad}' on sobject of type {}", obj.name),
                                    ),
                                    true,
                                );
                            }
                        }
                        ok(200, st.record_json(obj, r, fields.as_deref()))
                    }
                    None => not_found(),
                },
                ("PATCH", [id]) => match json_body() {
                    Ok(Value::Object(m)) => {
                        if let Some(h) = header("if-unmodified-since") {
                            let Some(since) = http_date_parse(&h) else {
                                return (
                                    error(400, "INVALID_HEADER", format!("Invalid If-Unmodified-Since header: {h}")),
                                    true,
                                );
                            };
                            let modified = st.find(obj, id).and_then(|r| match r.get("LastModifiedDate") {
                                Some(Val::DateTime(t)) => Some(*t),
                                _ => None,
                            });
                            if modified.is_some_and(|m| m.timestamp() > since.timestamp()) {
                                return (
                                    error(
                                        412,
                                        "PRECONDITION_FAILED",
                                        "The requested resource has been modified since the If-Unmodified-Since date",
                                    ),
                                    true,
                                );
                            }
                        }
                        match st.write(obj, Some(id), &m, &actor, false) {
                            Ok(_) => Reply::empty(204),
                            Err(e) if e.code == "INVALID_CROSS_REFERENCE_KEY" && e.fields.is_empty() => not_found(),
                            Err(e) if e.code == "ENTITY_IS_DELETED" => rec_err(404, &e),
                            Err(e) => rec_err(400, &e),
                        }
                    }
                    Ok(_) => error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object"),
                    Err(r) => r,
                },
                ("DELETE", [id]) => match st.delete(Some(obj), id) {
                    Ok(_) => Reply::empty(204),
                    Err(e) if e.code == "ENTITY_IS_DELETED" => rec_err(404, &e),
                    Err(_) => not_found(),
                },
                ("PATCH" | "GET", [field, value]) => {
                    let Some(f) = obj.field(field).filter(|f| obj.is_external_id(f.name) || f.name == "Id") else {
                        return (not_found(), true);
                    };
                    if method == "GET" {
                        let rows: Vec<Value> = st
                            .rows(obj, false)
                            .into_iter()
                            .filter(|r| {
                                r.get(f.name).and_then(Val::as_str).is_some_and(|k| k.eq_ignore_ascii_case(value))
                            })
                            .map(|r| st.record_json(obj, r, None))
                            .collect();
                        match rows.len() {
                            0 => not_found(),
                            1 => ok(200, rows.into_iter().next().expect("one")),
                            _ => {
                                ok(300, json!(rows.iter().map(|r| r["attributes"]["url"].clone()).collect::<Vec<_>>()))
                            }
                        }
                    } else {
                        match json_body() {
                            Ok(Value::Object(m)) => match st.upsert(obj, f.name, value, &m, &actor) {
                                Ok(Ok((id, created))) => ok(
                                    if created { 201 } else { 200 },
                                    json!({"id": id, "success": true, "errors": [], "created": created}),
                                ),
                                Ok(Err(e)) => rec_err(400, &e),
                                Err(ids) => ok(
                                    300,
                                    json!(
                                        ids.iter()
                                            .map(|i| format!("/services/data/v{version}/sobjects/{}/{i}", obj.name))
                                            .collect::<Vec<_>>()
                                    ),
                                ),
                            },
                            Ok(_) => error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object"),
                            Err(r) => r,
                        }
                    }
                }
                _ => error(
                    405,
                    "METHOD_NOT_ALLOWED",
                    format!("HTTP Method '{method}' not allowed. Allowed are GET,PATCH,DELETE"),
                ),
            }
        }
        _ => not_found(),
    };
    (reply, true)
}

fn label_of(method: &str, segs: &[&str]) -> String {
    match (method, segs) {
        ("GET", ["query"]) => "query",
        ("GET", ["queryAll"]) => "queryAll",
        ("GET", ["query" | "queryAll", _]) => "query_more",
        ("GET", ["limits"]) => "limits",
        ("POST", ["composite"]) => "composite",
        ("POST", ["composite", "sobjects"]) => "collections_create",
        ("PATCH", ["composite", "sobjects"]) => "collections_update",
        ("PATCH", ["composite", "sobjects", _, _]) => "collections_upsert",
        ("GET", ["composite", "sobjects", _]) => "collections_retrieve",
        ("DELETE", ["composite", "sobjects"]) => "collections_delete",
        ("GET", ["sobjects"]) => "describe_global",
        ("GET", ["search"]) => "search",
        ("POST", ["sobjects", _]) => "sobject_create",
        ("GET", ["sobjects", _]) => "sobject_info",
        ("GET", ["sobjects", _, "describe"]) => "describe",
        ("GET", ["sobjects", _, "updated"]) => "updated",
        ("GET", ["sobjects", _, "deleted"]) => "deleted",
        ("GET", ["sobjects", _, _]) => "sobject_get",
        ("PATCH", ["sobjects", _, _]) => "sobject_update",
        ("DELETE", ["sobjects", _, _]) => "sobject_delete",
        ("PATCH" | "GET", ["sobjects", _, _, _]) => "upsert",
        _ => "other",
    }
    .to_owned()
}

fn token(st: &mut State, body: &[u8]) -> Reply {
    let form = oauth_form(body);
    let f = |k: &str| form.get(k).map(String::as_str);
    let bad = |code: &str, desc: &str| oauth_error(400, code, desc);
    if f("client_id") != Some(CLIENT_ID) {
        return bad("invalid_client_id", "client identifier invalid");
    }
    if f("client_secret").is_some_and(|s| s != CLIENT_SECRET) {
        return bad("invalid_client", "invalid client credentials");
    }
    let mut user = None;
    match f("grant_type") {
        Some("authorization_code") => match super::authorize::exchange(st, &|k| f(k).map(str::to_owned)) {
            Ok(u) => user = Some(u),
            Err(why) => return bad("invalid_grant", why),
        },
        Some("refresh_token") => {
            if st.tokens.refresh(f("refresh_token")).is_none() {
                return bad("invalid_grant", "expired access/refresh token");
            }
        }
        Some("client_credentials") => {
            if f("client_secret").is_none() {
                return bad("invalid_client", "invalid client credentials");
            }
        }
        _ => return bad("unsupported_grant_type", "grant type not supported"),
    }
    let token = match &user {
        Some(u) => st.user_tokens.issue("00D5g000004FAKE!AR.fake-user-session-", u.clone()),
        None => st.issue_token(),
    };
    let user = user.unwrap_or_else(|| st.integration_user.clone());
    let org = "00D5g000004FAKEEAA";
    ok(
        200,
        json!({
            "access_token": token,
            "instance_url": st.uri,
            "id": format!("{}/id/{org}/{user}", st.uri),
            "token_type": "Bearer",
            "issued_at": st.now().timestamp_millis().to_string(),
            "signature": "ZmFrZS1zaWduYXR1cmU=",
            "scope": "api refresh_token",
        }),
    )
}

fn run_query(st: &mut State, text: &str, all: bool, batch: usize, version: &str) -> Reply {
    let parsed = match soql::parse(text, st.now()) {
        Ok(q) => q,
        Err(e) => return error(400, e.code, e.message),
    };
    let ex = match soql::execute(&*st, &parsed, all, st.now(), version, usize::MAX) {
        Ok(x) => x,
        Err(e) => return error(400, e.code, e.message),
    };
    if ex.count_only {
        return ok(200, json!({"totalSize": ex.total, "done": true, "records": []}));
    }
    page(st, ex.rows, 0, batch, version)
}

fn page(st: &mut State, mut rows: Vec<Value>, offset: usize, batch: usize, version: &str) -> Reply {
    let total = offset + rows.len();
    if rows.len() <= batch {
        return ok(200, json!({"totalSize": total, "done": true, "records": rows}));
    }
    let rest = rows.split_off(batch);
    st.next_id_for_locator();
    let locator = format!("{}-{}", st.last_locator(), offset + batch);
    st.open_locator(locator.clone(), rest, batch);
    ok(
        200,
        json!({"totalSize": total, "done": false, "nextRecordsUrl": format!("/services/data/v{version}/query/{locator}"), "records": rows}),
    )
}

fn query_more(st: &mut State, locator: &str, version: &str) -> Reply {
    let Some((rows, batch)) = st.locators.remove(locator) else {
        return error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    let offset: usize = locator.rsplit_once('-').and_then(|(_, o)| o.parse().ok()).unwrap_or(0);
    let base = locator.rsplit_once('-').map(|(b, _)| b.to_owned()).unwrap_or_default();
    let total = offset + rows.len();
    let mut rows = rows;
    if rows.len() <= batch {
        return ok(200, json!({"totalSize": total, "done": true, "records": rows}));
    }
    let rest = rows.split_off(batch);
    let next = format!("{base}-{}", offset + batch);
    st.open_locator(next.clone(), rest, batch);
    ok(
        200,
        json!({"totalSize": total, "done": false, "nextRecordsUrl": format!("/services/data/v{version}/query/{next}"), "records": rows}),
    )
}

/// Open query cursors kept at most (older ones answer `INVALID_QUERY_LOCATOR`).
const MAX_LOCATORS: usize = 50;

impl State {
    fn open_locator(&mut self, key: String, rows: Vec<Value>, batch: usize) {
        self.locator_order.push_back(key.clone());
        self.locators.insert(key, (rows, batch));
        while self.locator_order.len() > MAX_LOCATORS {
            if let Some(old) = self.locator_order.pop_front() {
                self.locators.remove(&old);
            }
        }
    }
    fn next_id_for_locator(&mut self) {
        self.token_seq_locator += 1;
    }
    fn last_locator(&self) -> String {
        super::schema::make_id("01g", self.token_seq_locator)
    }
}

/// `GET /sobjects`: every object the org serves, with its URLs.
fn global_describe(version: &str) -> Reply {
    let sobjects: Vec<Value> = super::schema::OBJECTS.iter().map(|o| describe_entry(o, version)).collect();
    ok(200, json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}))
}

/// An object as global describe lists it (and sObject basic information's `objectDescribe`).
fn describe_entry(o: &super::schema::ObjDef, version: &str) -> Value {
    let base = format!("/services/data/v{version}/sobjects/{}", o.name);
    json!({"name": o.name, "label": o.name, "labelPlural": format!("{}s", o.name), "keyPrefix": o.prefix,
           "custom": false, "createable": true, "updateable": true, "deletable": true, "queryable": true,
           "retrieveable": true, "searchable": true, "replicateable": true,
           "urls": {"sobject": base, "describe": format!("{base}/describe"), "rowTemplate": format!("{base}/{{ID}}")}})
}

fn describe(obj: &super::schema::ObjDef) -> Reply {
    let fields: Vec<Value> = obj
        .fields
        .iter()
        .map(|f| {
            let (ty, len) = match f.ty {
                Ty::Id => ("id", 18),
                Ty::Ref(_) => ("reference", 18),
                Ty::Str(n) => (if n > 255 { "textarea" } else { "string" }, n),
                Ty::Email => ("email", 80),
                Ty::Bool => ("boolean", 0),
                Ty::Int => ("int", 0),
                Ty::DateTime => ("datetime", 0),
                Ty::Date => ("date", 0),
                Ty::Picklist(_) => ("picklist", 40),
            };
            let picklist: Vec<Value> = match f.ty {
                Ty::Picklist(vs) => vs.iter().map(|v| json!({"value": v, "label": v, "active": true})).collect(),
                _ => vec![],
            };
            json!({"name": f.name, "label": f.label, "type": ty, "length": len, "createable": f.writable, "updateable": f.writable,
                   "nillable": !obj.required.contains(&f.name) && f.writable, "externalId": obj.is_external_id(f.name),
                   "unique": obj.is_external_id(f.name), "picklistValues": picklist})
        })
        .collect();
    ok(
        200,
        json!({"name": obj.name, "label": obj.name, "keyPrefix": obj.prefix, "createable": true, "updateable": true, "fields": fields}),
    )
}

fn replication(
    st: &mut State,
    obj: &'static super::schema::ObjDef,
    kind: &str,
    start: Option<String>,
    end: Option<String>,
) -> Reply {
    let (Some(start), Some(end)) = (start.as_deref().and_then(parse_time), end.as_deref().and_then(parse_time)) else {
        return error(400, "MISSING_ARGUMENT", "start and end are required (ISO 8601 dates)");
    };
    // Stamps are unique per millisecond, so a burst of writes can run ahead of the wall clock.
    let now = st.now().max(st.last_stamp());
    // Seconds are ignored: the window is whole minutes.
    let trunc = |t: DateTime<Utc>| {
        t - Duration::seconds(t.timestamp().rem_euclid(60)) - Duration::nanoseconds(t.timestamp_subsec_nanos() as i64)
    };
    let (start, end) = (trunc(start), if end >= now { now } else { trunc(end) });
    if end < start {
        return error(400, "INVALID_REPLICATION_DATE", "endDate must chronologically follow the startDate");
    }
    let stamp = |r: &soql::Rec| match r.get("SystemModstamp") {
        Some(Val::DateTime(t)) => Some(*t),
        _ => None,
    };
    if kind == "updated" {
        if now - start > Duration::days(30) {
            return error(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago");
        }
        let ids: Vec<Value> = st
            .rows(obj, false)
            .into_iter()
            .filter(|r| stamp(r).is_some_and(|t| t >= start && t <= end))
            .filter_map(|r| r.get("Id").map(Val::to_json))
            .collect();
        ok(200, json!({"ids": ids, "latestDateCovered": fmt_time(end)}))
    } else {
        if start < st.earliest_deleted - Duration::minutes(1) {
            return error(400, "INVALID_REPLICATION_DATE", "startDate cannot be before the earliest date available");
        }
        let recs: Vec<Value> = st
            .rows(obj, true)
            .into_iter()
            .filter(|r| r.get("IsDeleted") == Some(&Val::Bool(true)))
            .filter(|r| stamp(r).is_some_and(|t| t >= start && t <= end))
            .map(|r| json!({"id": r.get("Id").map(Val::to_json), "deletedDate": stamp(r).map(fmt_time)}))
            .collect();
        ok(
            200,
            json!({"deletedRecords": recs, "earliestDateAvailable": fmt_time(st.earliest_deleted), "latestDateCovered": fmt_time(end)}),
        )
    }
}

/// sObject Collections take at most 200 records.
fn too_many_records(n: usize) -> Option<Reply> {
    (n > 200).then(|| {
        error(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call")
    })
}

fn collections_write(st: &mut State, body: &Value, create: bool, upsert: Option<(&str, &str)>) -> Reply {
    let all_or_none = body.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return error(400, "JSON_PARSER_ERROR", "records is required");
    };
    if let Some(r) = too_many_records(records.len()) {
        return r;
    }
    let upsert_target = match upsert {
        Some((ty, field)) => {
            let Some(obj) = object(ty) else { return not_found() };
            let Some(f) = obj.field(field).filter(|f| obj.is_external_id(f.name)) else {
                return error(404, "NOT_FOUND", "The requested resource does not exist");
            };
            Some((obj, f.name))
        }
        None => None,
    };
    let backup = all_or_none.then(|| st.data.clone());
    let actor = st.integration_user.clone();
    let mut results = vec![];
    let mut failed = false;
    for r in records {
        let Some(m) = r.as_object() else {
            results.push(Err(RecErr::new("JSON_PARSER_ERROR", "each record must be an object", &[])));
            failed = true;
            continue;
        };
        let ty = m.get("attributes").and_then(|a| a.get("type")).and_then(Value::as_str);
        let res: Result<(String, Option<bool>), RecErr> = match upsert_target {
            Some((obj, field)) => {
                if ty.is_some_and(|t| !t.eq_ignore_ascii_case(obj.name)) {
                    Err(RecErr::new("INVALID_TYPE", "all records must be of the URI type", &[]))
                } else {
                    match m.get(field).and_then(Value::as_str) {
                        None => Err(RecErr::new(
                            "REQUIRED_FIELD_MISSING",
                            format!("Required fields are missing: [{field}]"),
                            &[field],
                        )),
                        Some(v) => {
                            let v = v.to_owned();
                            match st.upsert(obj, field, &v, m, &actor) {
                                Ok(r) => r.map(|(id, c)| (id, Some(c))),
                                Err(_) => Err(RecErr::new(
                                    "DUPLICATE_EXTERNAL_ID",
                                    format!("{field}: more than one record found for external id field: {v}"),
                                    &[field],
                                )),
                            }
                        }
                    }
                }
            }
            None => match ty.and_then(object) {
                None => Err(RecErr::new("INVALID_TYPE", "Must send a concrete entity type.", &[])),
                Some(obj) if create => {
                    if m.keys().any(|k| k.eq_ignore_ascii_case("id")) {
                        Err(RecErr::new("INVALID_FIELD", "cannot specify Id in an insert call", &["Id"]))
                    } else {
                        st.write(obj, None, m, &actor, false).map(|id| (id, None))
                    }
                }
                Some(obj) => match m.get("id").or_else(|| m.get("Id")).and_then(Value::as_str) {
                    None => Err(RecErr::new("MISSING_ARGUMENT", "Id not specified in an update call", &[])),
                    Some(id) => {
                        let id = id.to_owned();
                        st.write(obj, Some(&id), m, &actor, false).map(|id| (id, None))
                    }
                },
            },
        };
        failed |= res.is_err();
        results.push(res);
    }
    if failed && let Some(b) = backup {
        st.data = b;
        let rolled = RecErr::new(
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "Record rolled back because not all records were valid and the request was using AllOrNone header",
            &[],
        );
        let out: Vec<Value> = results
            .iter()
            .map(|r| match r {
                Err(e) => json!({"success": false, "errors": [e.collection()]}),
                Ok(_) => json!({"success": false, "errors": [rolled.collection()]}),
            })
            .collect();
        return ok(200, json!(out));
    }
    let out: Vec<Value> = results
        .into_iter()
        .map(|r| match r {
            Ok((id, created)) => {
                let mut v = json!({"id": id, "success": true, "errors": []});
                if let Some(c) = created {
                    v["created"] = json!(c);
                }
                v
            }
            Err(e) => json!({"success": false, "errors": [e.collection()]}),
        })
        .collect();
    ok(200, json!(out))
}

fn collections_delete(st: &mut State, ids: &str, all_or_none: bool) -> Reply {
    let ids: Vec<&str> = ids.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return error(400, "MISSING_ARGUMENT", "ids is required");
    }
    if let Some(r) = too_many_records(ids.len()) {
        return r;
    }
    let backup = all_or_none.then(|| st.data.clone());
    let results: Vec<Result<String, RecErr>> = ids.iter().map(|id| st.delete(None, id)).collect();
    if results.iter().any(Result::is_err)
        && let Some(b) = backup
    {
        st.data = b;
    }
    let out: Vec<Value> = ids
        .iter()
        .zip(results)
        .map(|(id, r)| match r {
            Ok(canon) => json!({"id": canon, "success": true, "errors": []}),
            Err(e) => json!({"id": id, "success": false, "errors": [e.collection()]}),
        })
        .collect();
    ok(200, json!(out))
}

fn composite(st: &mut State, ch: &mut Chassis, body: &Value, header: Header) -> Reply {
    let all_or_none = body.get("allOrNone").and_then(Value::as_bool).unwrap_or(false);
    let Some(subs) = body.get("compositeRequest").and_then(Value::as_array) else {
        return error(400, "JSON_PARSER_ERROR", "compositeRequest is required");
    };
    if subs.len() > 25 {
        return error(400, "LIMIT_EXCEEDED", "Composite request can have at most 25 subrequests");
    }
    let backup = all_or_none.then(|| st.data.clone());
    let mut out = vec![];
    let mut halted = false;
    // The bodies of the subrequests done so far, by reference id, for `@{ref.path}`.
    let mut done = Map::new();
    for s in subs {
        let reference = s.get("referenceId").cloned().unwrap_or(Value::Null);
        if halted {
            out.push(json!({"body": [{"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back since another operation in the same transaction failed."}],
                            "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference}));
            continue;
        }
        let method = s.get("method").and_then(Value::as_str).unwrap_or("GET").to_uppercase();
        let resolved = super::composite_ref::substitute(
            &json!({"url": s.get("url").cloned().unwrap_or(json!("")), "body": s.get("body").cloned()}),
            &done,
        );
        let resolved = match resolved {
            Ok(v) => v,
            Err(expr) => {
                out.push(json!({"body": [{"errorCode": "PROCESSING_HALTED", "message": super::composite_ref::unresolved(&expr)}],
                                "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference}));
                halted |= all_or_none;
                continue;
            }
        };
        let url = resolved["url"].as_str().unwrap_or("");
        let parsed = url::Url::parse(&format!("http://composite.invalid{url}"));
        let Ok(parsed) = parsed else {
            out.push(json!({"body": [{"errorCode": "INVALID_URL", "message": "invalid url"}], "httpHeaders": {}, "httpStatusCode": 400, "referenceId": reference}));
            continue;
        };
        let query: Vec<(String, String)> =
            parsed.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let sub_body = match &resolved["body"] {
            Value::Null => vec![],
            b => serde_json::to_vec(b).expect("json"),
        };
        let sub_headers: Map<String, Value> =
            s.get("httpHeaders").and_then(Value::as_object).cloned().unwrap_or_default();
        let sub_header = |name: &str| {
            sub_headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
                .or_else(|| header(name))
        };
        ch.count(&format!("composite/{}", endpoint_of(&method, parsed.path())));
        let (reply, _) = route(st, ch, &method, parsed.path(), &query, &sub_header, &sub_body, false);
        let ok = reply.status < 400;
        if let Some(r) = reference.as_str().filter(|_| ok) {
            done.insert(r.to_owned(), reply.json_body());
        }
        out.push(json!({"body": reply.json_body(), "httpHeaders": {}, "httpStatusCode": reply.status, "referenceId": reference}));
        if !ok && all_or_none {
            halted = true;
        }
    }
    if halted && let Some(b) = backup {
        st.data = b;
    }
    ok(200, json!({"compositeResponse": out}))
}
