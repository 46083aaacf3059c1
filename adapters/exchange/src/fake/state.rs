//! The fake's data (mailboxes, folders, contacts, events, delta rounds) and the handlers that
//! read and write it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use crmsync_fake::Tokens;
use serde_json::{Map, Value, json};

use super::filter;
use super::zones;

/// Who an access token belongs to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Principal {
    App,
    User(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Folder {
    pub name: String,
    pub parent: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Mailbox {
    pub id: String,
    pub root_folder: String,
    pub folders: BTreeMap<String, Folder>,
    pub contacts: BTreeMap<String, Value>,
    pub events: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Scope {
    Folder { mailbox: String, folder: String },
    Calendar { mailbox: String, start: DateTime<Utc>, end: DateTime<Utc> },
}

#[derive(Clone, Debug)]
pub(super) struct DeltaState {
    scope: Scope,
    /// Query options of the initial request that stay in force (`$expand`, `$select`).
    params: Vec<(String, String)>,
    path: String,
    seen: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub(super) struct PageState {
    delta: DeltaState,
    entries: Vec<Value>,
    pos: usize,
    empty_page_done: bool,
}

/// One request, from HTTP or from inside a `$batch`.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub method: String,
    /// Path below `/v1.0`, percent-decoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub origin: String,
}

impl Req {
    pub(super) fn q(&self, k: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.as_str())
    }
    pub(super) fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
    pub(super) fn page_size(&self) -> usize {
        let prefer =
            self.headers.iter().filter(|(n, _)| n == "prefer").map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(",");
        let from_prefer = prefer
            .split(',')
            .find_map(|p| p.trim().strip_prefix("odata.maxpagesize=").and_then(|n| n.trim().parse().ok()));
        from_prefer.or_else(|| self.q("$top").and_then(|t| t.parse().ok())).unwrap_or(10).clamp(1, 1000)
    }
}

/// What the handler answers.
#[derive(Clone, Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Resp {
    pub(super) fn json(status: u16, body: Value) -> Self {
        Self { status, headers: vec![], body: Some(body) }
    }
    pub(super) fn empty(status: u16) -> Self {
        Self { status, headers: vec![], body: None }
    }
}

/// The Graph error envelope.
pub(crate) fn error(status: u16, code: &str, message: &str) -> Resp {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    Resp::json(
        status,
        json!({ "error": { "code": code, "message": message, "innerError": {
            "date": now, "request-id": uuid::Uuid::new_v4().to_string(), "client-request-id": uuid::Uuid::new_v4().to_string() } } }),
    )
}

/// The fake's tenant.
pub const TENANT: &str = "contoso.onmicrosoft.com";
/// The fake's OAuth client id.
pub const CLIENT_ID: &str = "5c1f2a3b-7d8e-4f90-a1b2-c3d4e5f6a7b8";
/// The fake's OAuth client secret.
pub const CLIENT_SECRET: &str = "fake-graph-client-secret";

/// The whole fake service.
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub mailboxes: BTreeMap<String, Mailbox>,
    /// Access tokens and refresh tokens (a refresh token names its mailbox).
    pub tokens: Tokens<Principal>,
    deltas: HashMap<String, DeltaState>,
    pages: HashMap<String, PageState>,
    next_id: u64,
    pub empty_pages: bool,
    pub replay: bool,
    /// Refuse query options other than `$select` on contact delta (Graph documents only `$select`).
    pub strict_delta: bool,
    /// Served through a TLS proxy: links are `https://{Host}/…`.
    pub https: bool,
}

pub(super) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(super) fn new_change_key() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("EQAAABYAAAC{}", &u[..20])
}

pub(super) fn etag(ck: &str) -> String {
    format!("W/\"{ck}\"")
}

pub(crate) fn key(mailbox: &str) -> String {
    mailbox.trim().to_lowercase()
}

pub(super) fn fmt_dt(t: NaiveDateTime) -> String {
    crate::mapping::graph_datetime(t)
}

pub(super) fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

/// Merge a PATCH body: top-level properties replace, extended properties merge by id.
pub(super) fn merge(target: &mut Value, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if k == "singleValueExtendedProperties" {
            let mut props: Vec<Value> = target[k].as_array().cloned().unwrap_or_default();
            for p in v.as_array().into_iter().flatten() {
                props.retain(|q| !q["id"].as_str().unwrap_or("").eq_ignore_ascii_case(p["id"].as_str().unwrap_or("")));
                props.push(p.clone());
            }
            target[k] = Value::Array(props);
        } else if !matches!(
            k.as_str(),
            "id" | "changeKey" | "@odata.etag" | "parentFolderId" | "type" | "seriesMasterId"
        ) {
            target[k] = v.clone();
        }
    }
}

impl State {
    pub(super) fn id(&mut self, tag: &str) -> String {
        self.next_id += 1;
        format!("AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A{tag}{:010X}AAA=", self.next_id * 7919)
    }

    pub(crate) fn add_mailbox(&mut self, id: &str) -> &mut Mailbox {
        let k = key(id);
        if !self.mailboxes.contains_key(&k) {
            let root = self.id("F");
            let mut mb = Mailbox { id: id.trim().to_owned(), root_folder: root.clone(), ..Default::default() };
            mb.folders.insert(root, Folder { name: "Contacts".into(), parent: None });
            self.mailboxes.insert(k.clone(), mb);
        }
        self.mailboxes.get_mut(&k).expect("inserted")
    }

    pub(crate) fn add_refresh_token(&mut self, mailbox: &str) -> String {
        self.add_mailbox(mailbox);
        let t = format!("0.AXEA{}-{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        self.tokens.add_refresh(t.clone(), Principal::User(key(mailbox)));
        t
    }

    pub(crate) fn expire_cursors(&mut self) {
        self.deltas.clear();
        self.pages.clear();
    }

    /// The folder named `name` under the mailbox's root (created when missing).
    pub(crate) fn folder(&mut self, mailbox: &str, name: &str) -> String {
        let new_id = self.id("F");
        let mb = self.add_mailbox(mailbox);
        let root = mb.root_folder.clone();
        if let Some((id, _)) =
            mb.folders.iter().find(|(_, f)| f.parent.as_deref() == Some(&root) && f.name.eq_ignore_ascii_case(name))
        {
            return id.clone();
        }
        mb.folders.insert(new_id.clone(), Folder { name: name.to_owned(), parent: Some(root) });
        new_id
    }

    pub(crate) fn insert_contact(&mut self, mailbox: &str, folder: Option<&str>, mut v: Value) -> String {
        let folder = match folder {
            Some(name) => self.folder(mailbox, name),
            None => self.add_mailbox(mailbox).root_folder.clone(),
        };
        let id = self.id("C");
        stamp_new(&mut v, &id, true);
        super::orderby::name_new_contact(&mut v);
        v["parentFolderId"] = json!(folder);
        self.add_mailbox(mailbox).contacts.insert(id.clone(), v);
        id
    }

    pub(crate) fn insert_event(&mut self, mailbox: &str, mut v: Value) -> String {
        let id = self.id("E");
        stamp_new(&mut v, &id, false);
        zones::remember(&mut v);
        if v["iCalUId"].as_str().is_none() {
            v["iCalUId"] = json!(format!("040000008200E00074C5B7101A82E008{}", uuid::Uuid::new_v4().simple()));
        }
        if v["type"].as_str().is_none() {
            v["type"] = json!(if v["recurrence"].is_object() { "seriesMaster" } else { "singleInstance" });
        }
        for k in ["isCancelled", "isAllDay"] {
            if v[k].is_null() {
                v[k] = json!(false);
            }
        }
        if v["sensitivity"].is_null() {
            v["sensitivity"] = json!("normal");
        }
        self.add_mailbox(mailbox).events.insert(id.clone(), v);
        id
    }

    // ---- events: series expansion ----

    /// Occurrences of a series master (exceptions applied, cancelled ones left out), by id,
    /// starting before the end of `until`. The Graph pattern becomes an RFC 5545 rule
    /// ([`zones::rrule`]) expanded in the master's zone, so occurrences keep their local time
    /// across DST changes.
    pub(super) fn occurrences(master: &Value, until: NaiveDate) -> Vec<(String, Value)> {
        let (Some((start, tz)), Some(end)) = (zones::local(&master["start"]), zones::local(&master["end"])) else {
            return vec![];
        };
        let dur = end.0 - start;
        let Some(rule) = zones::rrule(&master["recurrence"], start.date()) else { return vec![] };
        let all_day = master["isAllDay"].as_bool() == Some(true);
        let limit = (until + Duration::days(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc() + Duration::days(1);
        let Ok(starts) = crmsync_fake::recurrence::starts(start, tz, all_day, &[rule], limit) else { return vec![] };
        let cancelled: BTreeSet<&str> =
            master["cancelledOccurrences"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mid = master["id"].as_str().unwrap_or_default();
        let zone_name = master["start"]["timeZone"].as_str().unwrap_or("UTC");
        let mut out = vec![];
        for o_start in starts.into_iter().filter(|t| t.date() <= until) {
            let d = o_start.date();
            let oid = format!("{mid}_{}", d.format("%Y%m%d"));
            if cancelled.contains(oid.as_str()) {
                continue;
            }
            let mut o = master.clone();
            let obj = o.as_object_mut().expect("object");
            obj.remove("recurrence");
            obj.remove("cancelledOccurrences");
            obj.remove("_exceptions");
            o["id"] = json!(oid);
            o["type"] = json!("occurrence");
            o["seriesMasterId"] = json!(mid);
            o["iCalUId"] = json!(format!("{}{}", master["iCalUId"].as_str().unwrap_or(""), d.format("%Y%m%d")));
            o["start"] = json!({ "dateTime": fmt_dt(o_start), "timeZone": zone_name });
            o["end"] = json!({ "dateTime": fmt_dt(o_start + dur), "timeZone": master["end"]["timeZone"].as_str().unwrap_or(zone_name) });
            let original =
                crmsync_core::time::local_to_utc(o_start, if all_day { crmsync_core::time::Tz::UTC } else { tz });
            o["originalStart"] = json!(original.to_rfc3339_opts(SecondsFormat::Secs, true));
            o["changeKey"] = json!(format!("{}{}", master["changeKey"].as_str().unwrap_or(""), d.format("%m%d")));
            if let Some(ex) = master["_exceptions"].get(&oid).and_then(Value::as_object) {
                merge(&mut o, ex);
                o["type"] = json!("exception");
                // Master edits reach exceptions too (their own overrides stay).
                let own = ex.get("changeKey").and_then(Value::as_str).unwrap_or("");
                o["changeKey"] = json!(format!("{}{own}", master["changeKey"].as_str().unwrap_or("")));
            }
            out.push((oid, o));
        }
        out
    }

    /// Every event instance (singles, occurrences, exceptions) overlapping `[start, end)`.
    pub(crate) fn calendar_view(mb: &Mailbox, start: DateTime<Utc>, end: DateTime<Utc>) -> BTreeMap<String, Value> {
        let overlaps = |v: &Value| match (zones::instant(&v["start"]), zones::instant(&v["end"])) {
            (Some(s), Some(e)) => s < end && e > start,
            // Unparsable times: shown, so clients meet them (they cannot be placed, Graph would refuse them).
            _ => true,
        };
        let mut out = BTreeMap::new();
        for (id, v) in &mb.events {
            if v["type"].as_str() == Some("seriesMaster") {
                for (oid, o) in Self::occurrences(v, end.date_naive()) {
                    if overlaps(&o) {
                        out.insert(oid, o);
                    }
                }
            } else if overlaps(v) {
                out.insert(id.clone(), v.clone());
            }
        }
        out
    }

    /// `GET /events/{id}/instances?startDateTime&endDateTime`: a series master's occurrences
    /// and exceptions in the window (cancelled ones left out), or a single event itself.
    pub(super) fn instances(&self, mb_key: &str, id: &str, r: &Req) -> Resp {
        let (start, end) = match window(r) {
            Ok(w) => w,
            Err(e) => return e,
        };
        let Some(v) = self.mailboxes[mb_key].events.get(id) else {
            return error(404, "ErrorItemNotFound", "The specified object was not found in the store.");
        };
        let overlaps = |o: &Value| matches!((zones::instant(&o["start"]), zones::instant(&o["end"])), (Some(s), Some(e)) if s < end && e > start);
        let items: Vec<Value> = if v["type"].as_str() == Some("seriesMaster") {
            Self::occurrences(v, end.date_naive()).into_iter().map(|(_, o)| o).filter(|o| overlaps(o)).collect()
        } else {
            [v.clone()].into_iter().filter(|o| overlaps(o)).collect()
        };
        list(items, r)
    }

    /// A stored event or an occurrence by id.
    pub(super) fn event(mb: &Mailbox, id: &str) -> Option<Value> {
        if let Some(v) = mb.events.get(id) {
            return Some(v.clone());
        }
        let (mid, date) = id.rsplit_once('_')?;
        let master = mb.events.get(mid)?;
        let d = NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
        Self::occurrences(master, d).into_iter().find(|(oid, _)| oid == id).map(|(_, o)| o)
    }

    pub(crate) fn delete_event(&mut self, mb_key: &str, id: &str) -> bool {
        let Some(mb) = self.mailboxes.get_mut(mb_key) else { return false };
        if mb.events.remove(id).is_some() {
            return true;
        }
        if Self::event(mb, id).is_some() {
            if let Some((mid, _)) = id.rsplit_once('_') {
                let master = mb.events.get_mut(mid).expect("occurrence has a master");
                let mut c = master["cancelledOccurrences"].as_array().cloned().unwrap_or_default();
                c.push(json!(id));
                master["cancelledOccurrences"] = Value::Array(c);
                master["changeKey"] = json!(new_change_key());
                return true;
            }
        }
        false
    }

    pub(super) fn list_folders(&self, mb_key: &str, parent: &str, r: &Req) -> Resp {
        let mb = &self.mailboxes[mb_key];
        if !mb.folders.contains_key(parent) {
            return error(404, "ErrorItemNotFound", "The specified folder was not found in the store.");
        }
        let items: Vec<Value> = mb
            .folders
            .iter()
            .filter(|(_, f)| f.parent.as_deref() == Some(parent))
            .map(|(id, f)| json!({ "id": id, "displayName": f.name, "parentFolderId": parent }))
            .collect();
        match filtered(items, r) {
            Ok(items) => list(items, r),
            Err(e) => e,
        }
    }

    pub(super) fn create_folder(&mut self, mb_key: &str, parent: &str, r: &Req) -> Resp {
        let Some(name) = r.body.as_ref().and_then(|b| b["displayName"].as_str()).map(str::to_owned) else {
            return error(400, "ErrorInvalidRequest", "displayName is required.");
        };
        let new_id = self.id("F");
        let mb = self.mailboxes.get_mut(mb_key).expect("checked");
        if !mb.folders.contains_key(parent) {
            return error(404, "ErrorItemNotFound", "The specified folder was not found in the store.");
        }
        if mb.folders.values().any(|f| f.parent.as_deref() == Some(parent) && f.name.eq_ignore_ascii_case(&name)) {
            return error(409, "ErrorFolderExists", "A folder with the specified name already exists.");
        }
        mb.folders.insert(new_id.clone(), Folder { name: name.clone(), parent: Some(parent.to_owned()) });
        Resp::json(201, json!({ "id": new_id, "displayName": name, "parentFolderId": parent }))
    }

    pub(super) fn list_contacts(&self, mb_key: &str, folder: Option<&str>, r: &Req) -> Resp {
        let mb = &self.mailboxes[mb_key];
        let folder = folder.unwrap_or(&mb.root_folder);
        if !mb.folders.contains_key(folder) {
            return error(404, "ErrorItemNotFound", "The specified folder was not found in the store.");
        }
        let items: Vec<Value> =
            mb.contacts.values().filter(|c| c["parentFolderId"].as_str() == Some(folder)).cloned().collect();
        match filtered(items, r) {
            Ok(items) => list(items, r),
            Err(e) => e,
        }
    }

    pub(super) fn create_contact(&mut self, mb_key: &str, folder: &str, r: &Req) -> Resp {
        let Some(Value::Object(_)) = &r.body else {
            return error(400, "ErrorInvalidRequest", "The request body is not a contact.");
        };
        if !self.mailboxes[mb_key].folders.contains_key(folder) {
            return error(404, "ErrorItemNotFound", "The specified folder was not found in the store.");
        }
        let mut v = r.body.clone().unwrap_or_default();
        if v["emailAddresses"].as_array().is_some_and(|a| a.len() > 3) {
            return error(400, "ErrorInvalidRequest", "A contact can hold at most three e-mail addresses.");
        }
        let id = self.id("C");
        stamp_new(&mut v, &id, true);
        super::orderby::name_new_contact(&mut v);
        v["parentFolderId"] = json!(folder);
        let mb = self.mailboxes.get_mut(mb_key).expect("checked");
        mb.contacts.insert(id.clone(), v);
        Resp::json(201, render(&mb.contacts[&id], &strip_expand(r)))
    }

    pub(super) fn patch(&mut self, mb_key: &str, id: &str, event: bool, r: &Req) -> Resp {
        let Some(Value::Object(patch)) = r.body.clone() else {
            return error(400, "ErrorInvalidRequest", "The request body is not an object.");
        };
        if event && let Err(e) = zones::check(&Value::Object(patch.clone())) {
            return e;
        }
        let mb = self.mailboxes.get_mut(mb_key).expect("checked");
        let current = if event { Self::event(mb, id) } else { mb.contacts.get(id).cloned() };
        let Some(current) = current else {
            return error(404, "ErrorItemNotFound", "The specified object was not found in the store.");
        };
        if let Some(m) = r.header("if-match") {
            let ck = current["changeKey"].as_str().unwrap_or("");
            if m != "*" && m != etag(ck) && m != ck {
                return error(
                    412,
                    "ErrorIrresolvableConflict",
                    "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
                );
            }
        }
        let ck = new_change_key();
        let stamp = |v: &mut Value| {
            v["changeKey"] = json!(ck);
            v["lastModifiedDateTime"] = json!(now());
        };
        let out = if !event {
            let v = mb.contacts.get_mut(id).expect("present");
            merge(v, &patch);
            super::orderby::rename_after_patch(v, &patch);
            stamp(v);
            v.clone()
        } else if let Some(v) = mb.events.get_mut(id) {
            merge(v, &patch);
            zones::remember(v);
            stamp(v);
            v.clone()
        } else {
            // An occurrence: store the change as an exception on its master.
            let (mid, _) = id.rsplit_once('_').expect("occurrence id");
            let master = mb.events.get_mut(mid).expect("master");
            let mut ex = master["_exceptions"][id].as_object().cloned().unwrap_or_default();
            for (k, v) in patch {
                ex.insert(k, v);
            }
            ex.insert("changeKey".into(), json!(ck));
            if !master["_exceptions"].is_object() {
                master["_exceptions"] = json!({});
            }
            master["_exceptions"][id] = Value::Object(ex);
            Self::event(mb, id).expect("occurrence still exists")
        };
        Resp::json(200, render(&out, &strip_expand(r)))
    }

    pub(super) fn view(&self, scope: &Scope) -> BTreeMap<String, Value> {
        match scope {
            Scope::Folder { mailbox, folder } => self.mailboxes[mailbox]
                .contacts
                .iter()
                .filter(|(_, c)| c["parentFolderId"].as_str() == Some(folder))
                .map(|(id, c)| (id.clone(), c.clone()))
                .collect(),
            Scope::Calendar { mailbox, start, end } => Self::calendar_view(&self.mailboxes[mailbox], *start, *end),
        }
    }

    /// A delta round: the initial request, a `$skiptoken` page or a `$deltatoken` round.
    pub(super) fn delta(&mut self, scope: Scope, r: &Req) -> Resp {
        if self.strict_delta && matches!(scope, Scope::Folder { .. }) {
            if let Some((k, _)) = r
                .query
                .iter()
                .find(|(k, _)| k.starts_with('$') && !["$select", "$skiptoken", "$deltatoken"].contains(&k.as_str()))
            {
                return error(
                    400,
                    "ErrorInvalidUrlQuery",
                    &format!(
                        "The following parameters are not supported with change tracking over the 'Contacts' resource: '{k}'."
                    ),
                );
            }
        }
        let expired = || {
            error(
                410,
                "SyncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            )
        };
        let page_state = if let Some(t) = r.q("$skiptoken") {
            match self.pages.remove(t) {
                Some(p) if same_mailbox(&p.delta.scope, &scope) => p,
                _ => return expired(),
            }
        } else {
            let (delta, seen) = if let Some(t) = r.q("$deltatoken") {
                match self.deltas.get(t) {
                    Some(d) if same_mailbox(&d.scope, &scope) => (d.clone(), Some(d.seen.clone())),
                    _ => return expired(),
                }
            } else {
                let params = r.query.iter().filter(|(k, _)| k == "$expand" || k == "$select").cloned().collect();
                (DeltaState { scope: scope.clone(), params, path: r.path.clone(), seen: BTreeMap::new() }, None)
            };
            let view = self.view(&delta.scope);
            let sub = Req { query: delta.params.clone(), ..r.clone() };
            let kind = match delta.scope {
                Scope::Folder { .. } => "#microsoft.graph.contact",
                Scope::Calendar { .. } => "#microsoft.graph.event",
            };
            let mut entries = vec![];
            for (id, v) in &view {
                let ck = v["changeKey"].as_str().unwrap_or("");
                if seen.as_ref().and_then(|s| s.get(id)).map(String::as_str) != Some(ck) {
                    entries.push(render(v, &sub));
                }
            }
            if let Some(seen) = &seen {
                for id in seen.keys().filter(|id| !view.contains_key(*id)) {
                    entries.push(json!({ "@odata.type": kind, "id": id, "@removed": { "reason": "deleted" } }));
                }
            }
            if self.replay {
                if let Some(first) = entries.first().cloned() {
                    entries.push(first);
                }
            }
            let seen_now =
                view.iter().map(|(id, v)| (id.clone(), v["changeKey"].as_str().unwrap_or("").to_owned())).collect();
            PageState { delta: DeltaState { seen: seen_now, ..delta }, entries, pos: 0, empty_page_done: false }
        };
        self.serve_page(page_state, r)
    }

    pub(super) fn serve_page(&mut self, mut p: PageState, r: &Req) -> Resp {
        let size = r.page_size();
        let end = (p.pos + size).min(p.entries.len());
        let value: Vec<Value> = p.entries[p.pos..end].to_vec();
        p.pos = end;
        let link = |tok_name: &str, tok: &str| {
            let mut u = url::Url::parse(&format!("{}/v1.0", r.origin)).expect("origin");
            u.set_path(&format!("/v1.0{}", p.delta.path));
            u.query_pairs_mut().append_pair(tok_name, tok);
            u.to_string()
        };
        let more = p.pos < p.entries.len() || (self.empty_pages && !p.empty_page_done && !value.is_empty());
        if more {
            if p.pos >= p.entries.len() {
                p.empty_page_done = true;
            }
            let tok = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            let next = link("$skiptoken", &tok);
            self.pages.insert(tok, p);
            return Resp::json(200, json!({ "@odata.context": context(r), "@odata.nextLink": next, "value": value }));
        }
        let tok = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let delta_link = link("$deltatoken", &tok);
        self.deltas.insert(tok, p.delta);
        Resp::json(200, json!({ "@odata.context": context(r), "@odata.deltaLink": delta_link, "value": value }))
    }
}

pub(super) fn same_mailbox(a: &Scope, b: &Scope) -> bool {
    match (a, b) {
        (Scope::Folder { mailbox: m1, folder: f1 }, Scope::Folder { mailbox: m2, folder: f2 }) => m1 == m2 && f1 == f2,
        (Scope::Calendar { mailbox: m1, .. }, Scope::Calendar { mailbox: m2, .. }) => m1 == m2,
        _ => false,
    }
}

pub(super) fn context(r: &Req) -> String {
    format!("{}/v1.0/$metadata#Collection", r.origin)
}

pub(super) fn window(r: &Req) -> Result<(DateTime<Utc>, DateTime<Utc>), Resp> {
    let s = r.q("startDateTime").and_then(parse_instant);
    let e = r.q("endDateTime").and_then(parse_instant);
    match (s, e) {
        (Some(s), Some(e)) if s < e => Ok((s, e)),
        _ => Err(error(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )),
    }
}

/// A new item: id, change key, timestamps.
pub(super) fn stamp_new(v: &mut Value, id: &str, contact: bool) {
    if !v.is_object() {
        *v = json!({});
    }
    let t = now();
    v["id"] = json!(id);
    v["changeKey"] = json!(new_change_key());
    v["createdDateTime"] = json!(t);
    v["lastModifiedDateTime"] = json!(t);
    for k in ["categories", "emailAddresses", "businessPhones"] {
        if v.get(k).is_none() && contact {
            v[k] = json!([]);
        }
    }
}

pub(super) fn strip_expand(r: &Req) -> Req {
    Req { query: vec![], ..r.clone() }
}

/// An item as the wire shows it: etag added, internal fields and extended properties removed
/// unless `$expand`ed, `$select` applied.
pub(super) fn render(v: &Value, r: &Req) -> Value {
    let mut out = v.clone();
    zones::present(&mut out, r);
    let obj = out.as_object_mut().expect("stored items are objects");
    let props = obj.remove("singleValueExtendedProperties");
    obj.retain(|k, _| !k.starts_with('_'));
    let ck = obj.get("changeKey").and_then(Value::as_str).unwrap_or("").to_owned();
    obj.insert("@odata.etag".into(), json!(etag(&ck)));
    if let Some(exp) = r.q("$expand") {
        if let Some(inner) = exp.strip_prefix("singleValueExtendedProperties") {
            let f = inner
                .trim()
                .strip_prefix("($filter=")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| filter::parse(s).ok());
            let list: Vec<Value> = props
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|p| f.as_ref().is_none_or(|f| filter::eval(f, p)))
                .cloned()
                .collect();
            if !list.is_empty() {
                obj.insert("singleValueExtendedProperties".into(), Value::Array(list));
            }
        }
    }
    if let Some(sel) = r.q("$select") {
        let keep: Vec<String> = sel.split(',').map(|s| s.trim().to_lowercase()).collect();
        obj.retain(|k, _| {
            k == "id" || k.starts_with('@') || k == "singleValueExtendedProperties" || keep.contains(&k.to_lowercase())
        });
    }
    out
}

pub(super) fn filtered(items: Vec<Value>, r: &Req) -> Result<Vec<Value>, Resp> {
    let entity = if r.path.contains("/events") || r.path.contains("/calendarView") {
        "event"
    } else if r.path.trim_end_matches('/').ends_with("/contacts") {
        "contact"
    } else {
        "contactFolder"
    };
    let items = super::orderby::ordered(items, r, entity)?;
    let Some(f) = r.q("$filter") else { return Ok(items) };
    let e = filter::parse(f)
        .map_err(|m| error(400, "ErrorInvalidUrlQueryFilter", &format!("Invalid filter clause: {m}")))?;
    Ok(items.into_iter().filter(|v| filter::eval(&e, v)).collect())
}

/// A paged list (`$skip` in the next link).
pub(super) fn list(items: Vec<Value>, r: &Req) -> Resp {
    let size = r.page_size();
    let skip: usize = r.q("$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let value: Vec<Value> = items.iter().skip(skip).take(size).map(|v| render(v, r)).collect();
    let mut body = json!({ "@odata.context": context(r), "value": value });
    if skip + size < items.len() {
        let mut u = url::Url::parse(&format!("{}/v1.0{}", r.origin, r.path)).expect("origin");
        {
            let mut q = u.query_pairs_mut();
            for (k, v) in r.query.iter().filter(|(k, _)| k != "$skip") {
                q.append_pair(k, v);
            }
            q.append_pair("$skip", &(skip + size).to_string());
        }
        body["@odata.nextLink"] = json!(u.to_string());
    }
    Resp::json(200, body)
}

pub(crate) fn percent_decode(p: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", p.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| p.to_owned())
}
