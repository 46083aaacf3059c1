//! The Calendar API part of the fake: the primary calendar's events with page and sync tokens.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use crmsync_core::{Event, EventTime};
use crmsync_fake::Reply;
use serde_json::{Map, Value, json};
use wiremock::Request;

use super::calendars;
use super::routes::{calendar_error, now, parse_rfc3339, q1, query};
use super::series;
use super::state::{State, User};

/// Fields a client may set on insert / patch.
const WRITABLE: &[&str] = &[
    "summary",
    "description",
    "location",
    "start",
    "end",
    "visibility",
    "attendees",
    "extendedProperties",
    "recurrence",
    "colorId",
    "status",
    "transparency",
    "iCalUID",
    "organizer",
    "reminders",
    "guestsCanModify",
    "anyoneCanAddSelf",
];
/// Parameters forbidden together with `syncToken`.
const NOT_WITH_SYNC: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

/// One stored event (a single event or a series master).
#[derive(Clone, Debug)]
pub(crate) struct EventRec {
    pub(crate) id: String,
    pub(crate) data: Map<String, Value>,
    pub(crate) etag: String,
    pub(crate) seq: u64,
    pub(crate) created: DateTime<Utc>,
    pub(crate) updated: DateTime<Utc>,
    pub(crate) deleted: bool,
}

/// An edit of a seeded event, as a user would make it in the calendar UI.
#[derive(Clone, Debug, Default)]
pub struct EventEdit {
    /// New `summary`.
    pub subject: Option<String>,
    /// New start (the duration is kept unless `duration` is given too).
    pub start: Option<DateTime<Utc>>,
    /// New duration (from the new or the current start).
    pub duration: Option<Duration>,
}

impl EventEdit {
    pub(crate) fn apply(&self, e: &mut Map<String, Value>) {
        if let Some(s) = &self.subject {
            e.insert("summary".into(), json!(s));
        }
        if self.start.is_none() && self.duration.is_none() {
            return;
        }
        let (Some(s), Some(en)) = (e.get("start").and_then(instant), e.get("end").and_then(instant)) else { return };
        let start = self.start.unwrap_or(s);
        let dur = self.duration.unwrap_or(en - s);
        let tz = e["start"]["timeZone"].clone();
        let mut sj = json!({"dateTime": rfc(start)});
        let mut ej = json!({"dateTime": rfc(start + dur)});
        if tz.is_string() {
            sj["timeZone"] = tz.clone();
            ej["timeZone"] = tz;
        }
        e.insert("start".into(), sj);
        e.insert("end".into(), ej);
    }
}

fn etag(seq: u64) -> String {
    format!("\"{}\"", 3_180_000_000_000_000u64 + seq * 1000)
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The instant of a `{date}` / `{dateTime}` (midnight UTC for dates).
pub(super) fn instant(t: &Value) -> Option<DateTime<Utc>> {
    if let Some(d) = t["date"].as_str() {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc());
    }
    let dt = t["dateTime"].as_str()?;
    parse_rfc3339(dt).or_else(|| {
        // No offset: a local time in the zone `timeZone` names (the API allows it).
        let local = chrono::NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
        Some(crmsync_core::time::local_to_utc(local, crmsync_core::time::zone(t["timeZone"].as_str()?)?))
    })
}

/// A written `EventDateTime` as the API stores and answers it: a local time without offset
/// gains the offset of its zone; a zone the API does not know is refused.
fn normalize_time(t: &mut Value, which: &str) -> Result<(), Reply> {
    if let Some(name) = t["timeZone"].as_str()
        && crmsync_core::time::zone(name).is_none()
    {
        return Err(bad("invalid", &format!("Invalid time zone definition for {which} time.")));
    }
    if t["dateTime"].as_str().is_some_and(|d| parse_rfc3339(d).is_none()) {
        let Some(at) = instant(t) else {
            return Err(bad("invalid", &format!("Invalid {which} time.")));
        };
        let tz =
            crmsync_core::time::zone(t["timeZone"].as_str().unwrap_or("UTC")).unwrap_or(crmsync_core::time::Tz::UTC);
        t["dateTime"] = json!(at.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true));
    }
    Ok(())
}

fn bad(reason: &str, message: &str) -> Reply {
    calendar_error(400, "global", reason, message)
}

fn ok(v: Value) -> Reply {
    Reply::json(200, v)
}

fn not_found() -> Reply {
    calendar_error(404, "global", "notFound", "Not Found")
}

pub(super) fn render(u: &str, e: &EventRec) -> Value {
    if e.deleted {
        return json!({"kind": "calendar#event", "etag": e.etag, "id": e.id, "status": "cancelled"});
    }
    let mut v = Map::new();
    v.insert("kind".into(), json!("calendar#event"));
    v.insert("etag".into(), json!(e.etag));
    v.insert("id".into(), json!(e.id));
    v.insert("status".into(), e.data.get("status").cloned().unwrap_or(json!("confirmed")));
    v.insert("htmlLink".into(), json!(format!("https://www.google.com/calendar/event?eid={}", e.id)));
    v.insert("created".into(), json!(ts(e.created)));
    v.insert("updated".into(), json!(ts(e.updated)));
    v.insert("creator".into(), json!({"email": u, "self": true}));
    v.insert("organizer".into(), json!({"email": u, "self": true}));
    for (k, val) in &e.data {
        if k != "status" {
            v.insert(k.clone(), val.clone());
        }
    }
    v.entry("iCalUID").or_insert(json!(format!("{}@google.com", e.id)));
    v.insert("sequence".into(), json!(0));
    v.entry("reminders").or_insert(json!({"useDefault": true}));
    v.insert("eventType".into(), json!("default"));
    Value::Object(v)
}

pub(crate) fn calendar_ok(path_cal: &str, user: &str) -> bool {
    path_cal == "primary" || path_cal.replace("%40", "@").eq_ignore_ascii_case(user)
}

/// Route one Calendar request of an authenticated user.
pub(crate) fn route(st: &mut State, user: &str, method: &str, path: &str, req: &Request) -> Reply {
    let rest = path.trim_start_matches("/calendar/v3/");
    let segs: Vec<&str> = rest.split('/').collect();
    if st.user(user).is_none() {
        return calendar_error(403, "global", "forbidden", "Forbidden");
    }
    match (method, segs.as_slice()) {
        (_, ["calendars", cal, "events", ..]) if !calendar_ok(cal, user) => not_found(),
        ("GET", ["calendars", _, "events"]) => list(st, user, req),
        ("POST", ["calendars", _, "events"]) => insert(st, user, req),
        ("GET", ["calendars", _, "events", id]) => get(st, user, id),
        ("GET", ["calendars", _, "events", id, "instances"]) => {
            let q = query(req);
            let (min, max) = (q1(&q, "timeMin").and_then(parse_rfc3339), q1(&q, "timeMax").and_then(parse_rfc3339));
            let u = st.user(user).expect("checked");
            series::instances(user, u, id, min, max, q1(&q, "showDeleted") == Some("true")).map_or_else(not_found, ok)
        }
        ("PATCH", ["calendars", _, "events", id]) => patch(st, user, id, req, false),
        ("PUT", ["calendars", _, "events", id]) => patch(st, user, id, req, true),
        ("GET", ["calendars", cal]) => calendars::calendar_get(user, cal),
        ("GET", ["users", "me", "calendarList"]) => {
            calendars::calendar_list(user, q1(&query(req), "syncToken"), st.cursor_epoch)
        }
        ("GET", ["users", "me", "calendarList", cal]) => calendars::calendar_list_entry(user, cal),
        ("DELETE", ["calendars", _, "events", id]) => delete(st, user, id, req),
        _ => not_found(),
    }
}

fn page_token(t: Option<&str>) -> Result<(usize, Option<u64>), Reply> {
    match t {
        None => Ok((0, None)),
        Some(t) => {
            let p: Vec<&str> = t.split('.').collect();
            match p.as_slice() {
                ["cpt", o, s] => match (o.parse(), s.parse()) {
                    (Ok(o), Ok(s)) => Ok((o, Some(s))),
                    _ => Err(bad("invalid", "Invalid page token value.")),
                },
                _ => Err(bad("invalid", "Invalid page token value.")),
            }
        }
    }
}

fn full_sync_required() -> Reply {
    Reply::json(
        410,
        json!({"error": {"errors": [{"domain": "calendar", "reason": "fullSyncRequired",
        "message": "Sync token is no longer valid, a full sync is required.", "locationType": "parameter", "location": "syncToken"}],
        "code": 410, "message": "Sync token is no longer valid, a full sync is required."}}),
    )
}

fn list(st: &mut State, user: &str, req: &Request) -> Reply {
    let q = query(req);
    let max = match q1(&q, "maxResults").map(str::parse::<usize>) {
        None => 250,
        Some(Ok(n)) if n > 0 => n.min(2500),
        _ => return bad("invalid", "Invalid value for: maxResults"),
    };
    let single = q1(&q, "singleEvents") == Some("true");
    let (offset, snap) = match page_token(q1(&q, "pageToken")) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let snapshot = snap.unwrap_or(st.seq);
    let epoch = st.cursor_epoch;
    let since = match q1(&q, "syncToken") {
        None => None,
        Some(t) => {
            if NOT_WITH_SYNC.iter().any(|p| q.contains_key(*p)) || q1(&q, "showDeleted") == Some("false") {
                return bad(
                    "syncTokenWithRequestRestrictions",
                    "Sync token cannot be used with other request restrictions.",
                );
            }
            let p: Vec<&str> = t.split('.').collect();
            match p.as_slice() {
                ["cst", e, s] => match (e.parse::<u64>(), s.parse::<u64>()) {
                    (Ok(e), Ok(s)) if e >= epoch => Some(s),
                    _ => return full_sync_required(),
                },
                _ => return full_sync_required(),
            }
        }
    };
    let time_min = match q1(&q, "timeMin").map(parse_rfc3339) {
        Some(None) => return bad("badRequest", "Bad Request"),
        v => v.flatten(),
    };
    let time_max = match q1(&q, "timeMax").map(parse_rfc3339) {
        Some(None) => return bad("badRequest", "Bad Request"),
        v => v.flatten(),
    };
    if let (Some(a), Some(b)) = (time_min, time_max) {
        if b <= a {
            return bad("timeRangeEmpty", "The specified time range is empty.");
        }
    }
    let updated_min = match calendars::updated_min(q1(&q, "updatedMin"), now()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let text = q1(&q, "q").filter(|t| !t.trim().is_empty());
    // Incremental (a sync token or `updatedMin`) lists deletions whatever `showDeleted` says.
    let show_deleted = since.is_some() || updated_min.is_some() || q1(&q, "showDeleted") == Some("true");
    let props: Vec<(String, String)> = q
        .get("privateExtendedProperty")
        .into_iter()
        .flatten()
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let ical = q1(&q, "iCalUID").map(str::to_owned);
    let u = st.user(user).expect("checked");
    let mut items: Vec<Value> = vec![];
    for e in u.events.values() {
        match since {
            Some(s) if e.seq <= s || e.seq > snapshot => continue,
            None if e.deleted && !show_deleted => continue,
            _ => {}
        }
        if updated_min.is_some_and(|m| e.updated < m) {
            continue;
        }
        let expanded = if single { series::expand(user, e, u) } else { vec![render(user, e)] };
        for v in expanded {
            let cancelled = v["status"] == "cancelled";
            if cancelled && !show_deleted {
                continue;
            }
            if since.is_none() && !cancelled {
                // (Times edited to garbage through the seed helpers are listed, not filtered.)
                if let (Some(s), Some(en)) = (instant(&v["start"]), instant(&v["end"])) {
                    if time_min.is_some_and(|m| en <= m) || time_max.is_some_and(|m| s >= m) {
                        continue;
                    }
                }
            }
            if props
                .iter()
                .any(|(k, val)| v["extendedProperties"]["private"][k.as_str()].as_str() != Some(val.as_str()))
            {
                continue;
            }
            if ical.as_ref().is_some_and(|i| v["iCalUID"].as_str() != Some(i.as_str())) {
                continue;
            }
            if text.is_some_and(|t| !cancelled && !calendars::matches_text(&v, t)) {
                continue;
            }
            items.push(v);
        }
    }
    if q1(&q, "orderBy") == Some("startTime") && single {
        items.sort_by_key(|v| instant(&v["start"]));
    }
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(max).collect();
    let mut v = json!({"kind": "calendar#events", "etag": etag(snapshot), "summary": user, "description": "",
        "updated": ts(now()), "timeZone": "UTC", "accessRole": "owner",
        "defaultReminders": [{"method": "popup", "minutes": 10}], "items": page});
    if offset + max < total {
        v["nextPageToken"] = json!(format!("cpt.{}.{snapshot}", offset + max));
    } else {
        v["nextSyncToken"] = json!(format!("cst.{epoch}.{snapshot}"));
    }
    ok(v)
}

/// Validate and normalize a written event's fields (times, ids, extended-property limits).
fn clean(data: &mut Map<String, Value>) -> Result<(), Reply> {
    data.retain(|k, v| WRITABLE.contains(&k.as_str()) && !v.is_null());
    for which in ["start", "end"] {
        let Some(t) = data.get_mut(which) else {
            return Err(bad("required", &format!("Missing {which} time.")));
        };
        normalize_time(t, which)?;
        let has_date = t["date"].is_string();
        let has_dt = t["dateTime"].is_string();
        if has_date == has_dt || instant(t).is_none() {
            return Err(bad("invalid", &format!("Invalid {which} time.")));
        }
    }
    let (s, e) = (instant(&data["start"]).expect("checked"), instant(&data["end"]).expect("checked"));
    if e < s {
        return Err(bad("timeRangeEmpty", "The specified time range is empty."));
    }
    if data.contains_key("recurrence")
        && data["start"]["dateTime"].is_string()
        && !data["start"]["timeZone"].is_string()
    {
        return Err(bad("required", "Missing time zone definition for start time."));
    }
    if let Some(props) = data.get_mut("extendedProperties").and_then(Value::as_object_mut) {
        for (_, scope) in props.iter_mut() {
            if let Some(m) = scope.as_object_mut() {
                // Keys over 44 characters are silently dropped, values over 1024 truncated.
                m.retain(|k, v| k.chars().count() <= 44 && !v.is_null());
                for v in m.values_mut() {
                    if let Some(s) = v.as_str() {
                        if s.chars().count() > 1024 {
                            *v = json!(s.chars().take(1024).collect::<String>());
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn valid_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.chars().all(|c| matches!(c, 'a'..='v' | '0'..='9'))
}

fn insert(st: &mut State, user: &str, req: &Request) -> Reply {
    let Ok(Value::Object(mut data)) = req.body_json::<Value>() else { return bad("parseError", "Parse Error") };
    let id = match data.remove("id") {
        Some(Value::String(id)) => {
            if !valid_id(&id) {
                return bad("invalid", "Invalid resource id value.");
            }
            id
        }
        _ => format!("{:026x}", 0x0a0b_0000_0000u64 + st.id()).chars().map(|c| if c > 'v' { 'v' } else { c }).collect(),
    };
    if let Err(e) = clean(&mut data) {
        return e;
    }
    let u = st.user(user).expect("checked");
    if u.events.contains_key(&id) {
        return calendar_error(409, "global", "duplicate", "The requested identifier already exists.");
    }
    let seq = st.tick();
    let rec = EventRec { id: id.clone(), data, etag: etag(seq), seq, created: now(), updated: now(), deleted: false };
    let out = render(user, &rec);
    st.user(user).expect("checked").events.insert(id, rec);
    ok(out)
}

/// Find an event or an instance (`{seriesId}_{suffix}`).
fn lookup(u: &User, user: &str, id: &str) -> Option<Value> {
    if let Some(e) = u.events.get(id) {
        return Some(render(user, e));
    }
    let (master, _) = id.rsplit_once('_')?;
    let e = u.events.get(master)?;
    series::expand(user, e, u).into_iter().find(|v| v["id"] == id)
}

fn get(st: &mut State, user: &str, id: &str) -> Reply {
    let u = st.user(user).expect("checked");
    match lookup(u, user, id) {
        Some(v) => ok(v),
        None => not_found(),
    }
}

fn precondition_failed() -> Reply {
    Reply::json(
        412,
        json!({"error": {"errors": [{"domain": "global", "reason": "conditionNotMet",
        "message": "Precondition Failed", "locationType": "header", "location": "If-Match"}], "code": 412, "message": "Precondition Failed"}}),
    )
}

fn if_match(req: &Request) -> Option<String> {
    req.headers.get("if-match").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// JSON merge patch (RFC 7386), as Calendar's PATCH applies it.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// `events.patch` (a merge patch) or, with `replace`, `events.update` (the body is the whole
/// new event: what it leaves out is cleared; `start` and `end` are required).
fn patch(st: &mut State, user: &str, id: &str, req: &Request, replace: bool) -> Reply {
    let Ok(body) = req.body_json::<Value>() else { return bad("parseError", "Parse Error") };
    let cond = if_match(req);
    let u = st.user(user).expect("checked");
    let Some(e) = u.events.get(id) else {
        // An instance of a series: the change becomes an exception stored under its id.
        let Some(inst) = lookup(u, user, id) else { return not_found() };
        if cond.as_deref().is_some_and(|c| Some(c) != inst["etag"].as_str() && c != "*") {
            return precondition_failed();
        }
        let mut data = Value::Object(series::exception_data(&inst));
        if replace {
            // A PUT replaces the instance's fields; it stays that instance of its series.
            data.as_object_mut().expect("object").retain(|k, _| k == "recurringEventId" || k == "originalStartTime");
        }
        let mut body = body;
        if let Some(o) = body.as_object_mut() {
            o.remove("id");
        }
        merge(&mut data, &body);
        let Value::Object(mut data) = data else { unreachable!("merged into an object") };
        let keep: Vec<(String, Value)> = ["recurringEventId", "originalStartTime"]
            .iter()
            .filter_map(|k| data.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        if let Err(r) = clean(&mut data) {
            return r;
        }
        data.extend(keep);
        let seq = st.tick();
        let rec =
            EventRec { id: id.to_owned(), data, etag: etag(seq), seq, created: now(), updated: now(), deleted: false };
        let out = render(user, &rec);
        st.user(user).expect("checked").events.insert(id.to_owned(), rec);
        return ok(out);
    };
    if e.deleted {
        return calendar_error(410, "global", "deleted", "Resource has been deleted");
    }
    if cond.as_deref().is_some_and(|c| c != e.etag && c != "*") {
        return precondition_failed();
    }
    let mut data = Value::Object(if replace { Map::new() } else { e.data.clone() });
    let mut body = body;
    if let Some(o) = body.as_object_mut() {
        o.remove("id");
    }
    if replace && !body.is_object() {
        return bad("parseError", "Parse Error");
    }
    merge(&mut data, &body);
    let Value::Object(mut data) = data else { unreachable!("merged into an object") };
    if let Err(r) = clean(&mut data) {
        return r;
    }
    let seq = st.tick();
    let e = st.user(user).expect("checked").events.get_mut(id).expect("checked");
    e.data = data;
    e.seq = seq;
    e.etag = etag(seq);
    e.updated = now();
    ok(render(user, e))
}

fn delete(st: &mut State, user: &str, id: &str, req: &Request) -> Reply {
    let cond = if_match(req);
    let u = st.user(user).expect("checked");
    let Some(e) = u.events.get(id) else {
        // An instance of a series: cancelled, as an exception (`status: cancelled`) that sync
        // reports.
        let Some(inst) = lookup(u, user, id) else { return not_found() };
        let mut data = Map::new();
        for k in ["recurringEventId", "originalStartTime", "start", "end"] {
            if let Some(v) = inst.get(k) {
                data.insert(k.to_owned(), v.clone());
            }
        }
        let seq = st.tick();
        let rec =
            EventRec { id: id.to_owned(), data, etag: etag(seq), seq, created: now(), updated: now(), deleted: true };
        st.user(user).expect("checked").events.insert(id.to_owned(), rec);
        return Reply::empty(204);
    };
    if e.deleted {
        return calendar_error(410, "global", "deleted", "Resource has been deleted");
    }
    if cond.as_deref().is_some_and(|c| c != e.etag && c != "*") {
        return precondition_failed();
    }
    delete_event(st, user, id);
    Reply::empty(204)
}

// ----- seed / edit / inspect helpers -----

fn time_json(t: &EventTime) -> Value {
    match t {
        EventTime::At(t) => json!({"dateTime": rfc(*t)}),
        EventTime::Date(d) => json!({"date": d.format("%Y-%m-%d").to_string()}),
    }
}

/// Calendar JSON for a crmsync event (see `FakeGoogle::insert_event`).
pub(crate) fn event_json(e: &Event) -> Value {
    let mut v = json!({"start": time_json(&e.start), "end": time_json(&e.end)});
    if let Some(s) = &e.subject {
        v["summary"] = json!(s);
    }
    if let Some(s) = &e.location {
        v["location"] = json!(s);
    }
    if let Some(s) = &e.description {
        v["description"] = json!(s);
    }
    if e.private {
        v["visibility"] = json!("private");
    }
    if e.cancelled {
        v["status"] = json!("cancelled");
    }
    if let Some(u) = &e.ical_uid {
        v["iCalUID"] = json!(u);
    }
    if !e.attendees.is_empty() {
        v["attendees"] =
            json!(e.attendees.iter().map(|a| json!({"email": a, "responseStatus": "needsAction"})).collect::<Vec<_>>());
    }
    if let Some(o) = &e.organizer {
        v["organizer"] = json!({"email": o});
    }
    if !e.categories.is_empty() {
        v["extendedProperties"] = json!({"private": {crate::config::DEFAULT_NO_SYNC_PROPERTY: "true"}});
    }
    v
}

pub(crate) fn seed_event(st: &mut State, user: &str, event: Value) -> Result<String, String> {
    if st.user(user).is_none() {
        return Err(format!("unknown user {user}: add the user first"));
    }
    let Value::Object(mut data) = event else { return Err("an event must be a JSON object".into()) };
    let id = match data.remove("id") {
        Some(Value::String(id)) => id,
        _ => format!("seed{:08}", st.id()).chars().map(|c| if c > 'v' { 'v' } else { c }).collect(),
    };
    if clean(&mut data).is_err() {
        return Err(format!("invalid event {}", Value::Object(data)));
    }
    let seq = st.tick();
    let rec = EventRec { id: id.clone(), data, etag: etag(seq), seq, created: now(), updated: now(), deleted: false };
    st.user(user).ok_or("checked")?.events.insert(id.clone(), rec);
    Ok(id)
}

pub(crate) fn edit_event(st: &mut State, user: &str, id: &str, f: impl FnOnce(&mut Map<String, Value>)) -> bool {
    let seq = st.seq + 1;
    let Some(u) = st.user(user) else { return false };
    let Some(e) = u.events.get_mut(id).filter(|e| !e.deleted) else { return false };
    f(&mut e.data);
    e.seq = seq;
    e.etag = etag(seq);
    e.updated = now();
    st.seq = seq;
    true
}

pub(crate) fn delete_event(st: &mut State, user: &str, id: &str) -> bool {
    let seq = st.seq + 1;
    let Some(u) = st.user(user) else { return false };
    let Some(e) = u.events.get_mut(id).filter(|e| !e.deleted) else { return false };
    e.deleted = true;
    e.seq = seq;
    e.etag = etag(seq);
    e.updated = now();
    st.seq = seq;
    true
}

pub(crate) fn each(st: &mut State, user: &str, mut f: impl FnMut(&Value)) {
    let Some(u) = st.user(user) else { return };
    for e in u.events.values() {
        if e.deleted {
            let mut full = render(user, &EventRec { deleted: false, ..e.clone() });
            full["status"] = json!("cancelled");
            f(&full);
        } else {
            f(&render(user, e));
        }
    }
}

pub(crate) fn snapshot(st: &mut State, user: &str) -> Vec<Value> {
    let Some(u) = st.user(user) else { return vec![] };
    u.events
        .values()
        .map(|e| {
            if e.deleted {
                // Keep the details for inspection; the API would only guarantee the id.
                let mut full = render(user, &EventRec { deleted: false, ..e.clone() });
                full["status"] = json!("cancelled");
                full
            } else {
                render(user, e)
            }
        })
        .collect()
}
