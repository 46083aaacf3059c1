//! The People API part of the fake: contact groups, connections with sync tokens, batch calls.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_core::{Contact, PostalAddress};
use crmsync_fake::Reply;
use serde_json::{Map, Value, json};
use wiremock::Request;

use super::people_search;
use super::routes::{mask, now, people_error, q1, query};
use super::state::{State, User};

/// Person fields a client may write (`contactPerson` / `updatePersonFields`).
const WRITABLE: &[&str] = &[
    "addresses",
    "biographies",
    "birthdays",
    "calendarUrls",
    "clientData",
    "emailAddresses",
    "events",
    "externalIds",
    "genders",
    "imClients",
    "interests",
    "locales",
    "locations",
    "memberships",
    "miscKeywords",
    "names",
    "nicknames",
    "occupations",
    "organizations",
    "phoneNumbers",
    "relations",
    "sipAddresses",
    "urls",
    "userDefined",
];
/// Valid `personFields` / `readMask` paths.
pub(crate) const READABLE: &[&str] = &[
    "addresses",
    "ageRanges",
    "biographies",
    "birthdays",
    "calendarUrls",
    "clientData",
    "coverPhotos",
    "emailAddresses",
    "events",
    "externalIds",
    "genders",
    "imClients",
    "interests",
    "locales",
    "locations",
    "memberships",
    "metadata",
    "miscKeywords",
    "names",
    "nicknames",
    "occupations",
    "organizations",
    "phoneNumbers",
    "photos",
    "relations",
    "sipAddresses",
    "skills",
    "urls",
    "userDefined",
];
/// Singleton fields for contacts (more than one value → 400).
const SINGLETONS: &[&str] = &["names", "biographies", "birthdays", "genders"];

pub(crate) const MY_CONTACTS: &str = "contactGroups/myContacts";

/// One stored contact.
#[derive(Clone, Debug)]
pub(crate) struct PersonRec {
    pub(crate) id: String,
    pub(crate) fields: Map<String, Value>,
    pub(crate) groups: BTreeSet<String>,
    pub(crate) etag: String,
    pub(crate) seq: u64,
    pub(crate) deleted: bool,
    pub(crate) updated: DateTime<Utc>,
}

/// One contact group.
#[derive(Clone, Debug)]
pub(crate) struct GroupRec {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) system: bool,
    pub(crate) etag: String,
    pub(crate) updated: DateTime<Utc>,
}

impl GroupRec {
    pub(crate) fn system(id: &str, name: &str) -> Self {
        Self { id: id.into(), name: name.into(), system: true, etag: format!("sys-{id}"), updated: now() }
    }
    fn resource_name(&self) -> String {
        format!("contactGroups/{}", self.id)
    }
}

fn etag(seq: u64) -> String {
    format!("%EgsBAgMFBgcJCg4/{:016x}=", seq.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn invalid(msg: &str) -> Reply {
    people_error(400, "INVALID_ARGUMENT", msg, None)
}

fn not_found() -> Reply {
    people_error(404, "NOT_FOUND", "Requested entity was not found.", None)
}

fn ok(v: Value) -> Reply {
    Reply::json(200, v)
}

/// Render a stored person with the requested fields, as the API returns it.
pub(crate) fn render(p: &PersonRec, fields: &BTreeSet<String>) -> Value {
    let rn = format!("people/{}", p.id);
    let src = json!({"type": "CONTACT", "id": p.id});
    if p.deleted {
        let mut v = json!({"resourceName": rn, "etag": p.etag});
        v["metadata"] = json!({"sources": [{"type": "CONTACT", "id": p.id, "etag": p.etag, "updateTime": ts(p.updated)}],
            "deleted": true, "objectType": "PERSON"});
        return v;
    }
    let mut out = Map::new();
    out.insert("resourceName".into(), json!(rn));
    out.insert("etag".into(), json!(p.etag));
    for f in fields {
        match f.as_str() {
            "metadata" => {
                out.insert(
                    "metadata".into(),
                    json!({"sources": [{"type": "CONTACT", "id": p.id, "etag": p.etag, "updateTime": ts(p.updated)}],
                        "objectType": "PERSON"}),
                );
            }
            "memberships" => {
                let m: Vec<Value> = p
                    .groups
                    .iter()
                    .map(|g| {
                        json!({"metadata": {"source": src}, "contactGroupMembership": {
                            "contactGroupId": g.trim_start_matches("contactGroups/"), "contactGroupResourceName": g}})
                    })
                    .collect();
                out.insert("memberships".into(), json!(m));
            }
            name => {
                let Some(items) = p.fields.get(name).and_then(Value::as_array) else { continue };
                if items.is_empty() {
                    continue;
                }
                let items: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| {
                        let mut it = it.as_object().cloned().unwrap_or_default();
                        let mut md = json!({"source": src});
                        if name != "clientData" {
                            md["primary"] = json!(i == 0);
                            md["sourcePrimary"] = json!(i == 0);
                        }
                        it.insert("metadata".into(), md);
                        computed(name, &mut it);
                        Value::Object(it)
                    })
                    .collect();
                out.insert(name.into(), json!(items));
            }
        }
    }
    Value::Object(out)
}

/// Output-only fields Google derives from what was written.
fn computed(field: &str, it: &mut Map<String, Value>) {
    let s = |it: &Map<String, Value>, k: &str| it.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match field {
        "names" => {
            let (g, f) = (s(it, "givenName"), s(it, "familyName"));
            let display =
                [g.as_str(), f.as_str()].iter().filter(|x| !x.is_empty()).copied().collect::<Vec<_>>().join(" ");
            let last_first = match (g.is_empty(), f.is_empty()) {
                (false, false) => format!("{f}, {g}"),
                _ => display.clone(),
            };
            it.insert("displayName".into(), json!(display));
            it.insert("displayNameLastFirst".into(), json!(last_first));
            it.insert("unstructuredName".into(), json!(display));
        }
        "emailAddresses" | "phoneNumbers" | "addresses" | "organizations" => {
            let t = s(it, "type");
            if !t.is_empty() {
                let mut c = t.chars();
                let f = c.next().map(|x| x.to_uppercase().collect::<String>()).unwrap_or_default() + c.as_str();
                it.insert("formattedType".into(), json!(f));
            }
            if field == "phoneNumbers" {
                let v = s(it, "value");
                let digits: String = v.chars().filter(char::is_ascii_digit).collect();
                if v.trim_start().starts_with('+') && !digits.is_empty() {
                    it.insert("canonicalForm".into(), json!(format!("+{digits}")));
                }
            }
            if field == "addresses" {
                let parts: Vec<String> = ["streetAddress", "city", "region", "postalCode", "country"]
                    .iter()
                    .map(|k| s(it, k))
                    .filter(|x| !x.is_empty())
                    .collect();
                it.insert("formattedValue".into(), json!(parts.join("\n")));
            }
        }
        _ => {}
    }
}

fn user_or_404<'a>(st: &'a mut State, user: &str) -> Option<&'a mut User> {
    st.user(user)
}

/// Route one People request of an authenticated user.
pub(crate) fn route(st: &mut State, user: &str, method: &str, path: &str, req: &Request) -> Reply {
    let q = query(req);
    if st.user(user).is_none() {
        return people_error(403, "PERMISSION_DENIED", "The caller does not have permission", None);
    }
    match (method, path) {
        ("GET", "/v1/contactGroups") => list_groups(st, user, &q),
        ("POST", "/v1/contactGroups") => create_group(st, user, req),
        ("POST", p) if p.starts_with("/v1/contactGroups/") && p.ends_with("/members:modify") => {
            let id = p.trim_start_matches("/v1/contactGroups/").trim_end_matches("/members:modify").to_owned();
            modify_members(st, user, &id, req)
        }
        ("GET", p) if p.starts_with("/v1/contactGroups/") => {
            let id = p.trim_start_matches("/v1/contactGroups/").to_owned();
            get_group(st, user, &id, &q)
        }
        ("GET", "/v1/people/me/connections") => connections(st, user, &q),
        ("GET", "/v1/people/me") => match person_fields(q1(&q, "personFields")) {
            Ok(fields) => people_search::me(user, &fields),
            Err(()) => invalid("personFields mask is required. Please specify one or more valid paths."),
        },
        ("GET", "/v1/people:searchContacts") => people_search::search(st, user, &q),
        ("GET", "/v1/people:batchGet") => batch_get(st, user, &q),
        ("POST", "/v1/people:batchCreateContacts") => batch_create(st, user, req),
        ("POST", "/v1/people:batchUpdateContacts") => batch_update(st, user, req),
        ("POST", "/v1/people:batchDeleteContacts") => batch_delete(st, user, req),
        ("POST", "/v1/people:createContact") => create_one(st, user, req, &q),
        ("PATCH", p) if p.starts_with("/v1/people/") && p.ends_with(":updateContact") => {
            let rn = p.trim_start_matches("/v1/").trim_end_matches(":updateContact").to_owned();
            update_one(st, user, &rn, req, &q)
        }
        ("DELETE", p) if p.starts_with("/v1/people/") && p.ends_with(":deleteContact") => {
            let rn = p.trim_start_matches("/v1/").trim_end_matches(":deleteContact").to_owned();
            if delete_person(st, user, &rn) { ok(json!({})) } else { not_found() }
        }
        ("GET", p) if p.starts_with("/v1/people/") => {
            let Ok(fields) = person_fields(q1(&q, "personFields")) else {
                return invalid("personFields mask is required. Please specify one or more valid paths.");
            };
            let rn = p.trim_start_matches("/v1/").to_owned();
            let u = user_or_404(st, user).expect("checked");
            match u.persons.get(&rn).filter(|p| !p.deleted) {
                Some(p) => ok(render(p, &fields)),
                None => not_found(),
            }
        }
        _ => people_error(404, "NOT_FOUND", &format!("The fake does not serve {method} {path}"), None),
    }
}

fn person_fields(s: Option<&str>) -> Result<BTreeSet<String>, ()> {
    let m = mask(s);
    if m.is_empty() || m.iter().any(|f| !READABLE.contains(&f.as_str())) {
        return Err(());
    }
    Ok(m)
}

fn group_json(g: &GroupRec, count: usize, fields: &BTreeSet<String>, members: Option<Vec<String>>) -> Value {
    let mut v = json!({"resourceName": g.resource_name(), "etag": g.etag});
    let all = fields.is_empty();
    if all || fields.contains("metadata") {
        v["metadata"] = json!({"updateTime": ts(g.updated)});
    }
    if all || fields.contains("groupType") {
        v["groupType"] = json!(if g.system { "SYSTEM_CONTACT_GROUP" } else { "USER_CONTACT_GROUP" });
    }
    if all || fields.contains("name") {
        v["name"] = json!(g.name);
        v["formattedName"] = json!(if g.id == "myContacts" { "My Contacts".to_owned() } else { g.name.clone() });
    }
    if all || fields.contains("memberCount") {
        v["memberCount"] = json!(count);
    }
    if let Some(m) = members {
        if !m.is_empty() {
            v["memberResourceNames"] = json!(m);
        }
    }
    v
}

fn member_names(u: &User, rn: &str) -> Vec<String> {
    u.persons.values().filter(|p| !p.deleted && p.groups.contains(rn)).map(|p| format!("people/{}", p.id)).collect()
}

fn list_groups(st: &mut State, user: &str, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let page_size = q1(q, "pageSize").and_then(|s| s.parse::<usize>().ok()).filter(|n| *n > 0).unwrap_or(30).min(1000);
    let offset = match q1(q, "pageToken") {
        None => 0,
        Some(t) => match t.strip_prefix("cgp.").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return invalid("Invalid pageToken."),
        },
    };
    let fields = mask(q1(q, "groupFields"));
    let epoch = st.cursor_epoch;
    let seq = st.seq;
    let u = user_or_404(st, user).expect("checked");
    let all: Vec<Value> =
        u.groups.values().map(|g| group_json(g, member_names(u, &g.resource_name()).len(), &fields, None)).collect();
    let page: Vec<Value> = all.iter().skip(offset).take(page_size).cloned().collect();
    let mut v = json!({"contactGroups": page, "totalItems": all.len()});
    if offset + page_size < all.len() {
        v["nextPageToken"] = json!(format!("cgp.{}", offset + page_size));
    } else {
        v["nextSyncToken"] = json!(format!("cgs.{epoch}.{seq}"));
    }
    ok(v)
}

pub(crate) fn ensure_group(st: &mut State, user: &str, name: &str) -> String {
    let n = st.id();
    let seq = st.tick();
    let u = st.user(user).expect("user exists");
    if let Some(g) = u.groups.values().find(|g| g.name == name || g.id == name) {
        return g.resource_name();
    }
    let g = GroupRec {
        id: format!("{:x}", 0x5a17_0000u64 + n),
        name: name.into(),
        system: false,
        etag: etag(seq),
        updated: now(),
    };
    let rn = g.resource_name();
    u.groups.insert(rn.clone(), g);
    rn
}

fn create_group(st: &mut State, user: &str, req: &Request) -> Reply {
    let Ok(body) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    let Some(name) = body["contactGroup"]["name"].as_str().map(str::trim).filter(|n| !n.is_empty()) else {
        return invalid("Contact group name must not be empty.");
    };
    let u = user_or_404(st, user).expect("checked");
    if u.groups.values().any(|g| g.name == name) {
        return people_error(409, "ALREADY_EXISTS", "Contact group name already exists.", None);
    }
    let rn = ensure_group(st, user, name);
    let u = st.user(user).expect("checked");
    let fields = mask(body["readGroupFields"].as_str());
    ok(group_json(&u.groups[&rn], 0, &fields, None))
}

fn get_group(st: &mut State, user: &str, id: &str, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let rn = format!("contactGroups/{id}");
    let max = q1(q, "maxMembers").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let fields = mask(q1(q, "groupFields"));
    let u = user_or_404(st, user).expect("checked");
    let Some(g) = u.groups.get(&rn) else { return not_found() };
    let members = member_names(u, &rn);
    let count = members.len();
    ok(group_json(g, count, &fields, Some(members.into_iter().take(max).collect())))
}

fn modify_members(st: &mut State, user: &str, id: &str, req: &Request) -> Reply {
    let Ok(body) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    let names = |k: &str| -> Vec<String> {
        body[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    let (add, remove) = (names("resourceNamesToAdd"), names("resourceNamesToRemove"));
    if add.len() + remove.len() > 1000 {
        return invalid("Too many resource names: at most 1000 may be added and removed per request.");
    }
    let rn = format!("contactGroups/{id}");
    let seq_base = st.seq;
    let u = user_or_404(st, user).expect("checked");
    let Some(g) = u.groups.get(&rn) else { return not_found() };
    if !add.is_empty() && g.system && !matches!(g.id.as_str(), "myContacts" | "starred") {
        return invalid("Cannot add members to this system contact group.");
    }
    let mut not_found_names = vec![];
    let mut last_group = vec![];
    let mut touched = vec![];
    for p in &add {
        match u.persons.get_mut(p).filter(|r| !r.deleted) {
            Some(r) => {
                if r.groups.insert(rn.clone()) {
                    touched.push(p.clone());
                }
            }
            None => not_found_names.push(p.clone()),
        }
    }
    for p in &remove {
        match u.persons.get_mut(p).filter(|r| !r.deleted) {
            Some(r) if r.groups.len() == 1 && r.groups.contains(&rn) => last_group.push(p.clone()),
            Some(r) => {
                if r.groups.remove(&rn) {
                    touched.push(p.clone());
                }
            }
            None => not_found_names.push(p.clone()),
        }
    }
    let mut seq = seq_base;
    for p in &touched {
        seq += 1;
        let r = u.persons.get_mut(p).expect("touched exists");
        r.seq = seq;
        r.etag = etag(seq);
        r.updated = now();
    }
    st.seq = seq;
    let mut v = json!({});
    if !not_found_names.is_empty() {
        v["notFoundResourceNames"] = json!(not_found_names);
    }
    if !last_group.is_empty() {
        v["canNotRemoveLastContactGroupResourceNames"] = json!(last_group);
    }
    ok(v)
}

fn expired_sync_token() -> Reply {
    people_error(
        400,
        "FAILED_PRECONDITION",
        "Sync token is expired. Clear local cache and retry call without the sync token.",
        Some("EXPIRED_SYNC_TOKEN"),
    )
}

fn connections(st: &mut State, user: &str, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let Ok(fields) = person_fields(q1(q, "personFields")) else {
        return invalid("personFields mask is required. Please specify one or more valid paths.");
    };
    let page_size = match q1(q, "pageSize").map(|s| s.parse::<usize>()) {
        None => 100,
        Some(Ok(0)) => 100,
        Some(Ok(n)) if n <= 1000 => n,
        _ => return invalid("pageSize must be between 1 and 1000."),
    };
    let since = match q1(q, "syncToken") {
        None => None,
        Some(t) => {
            let parts: Vec<&str> = t.split('.').collect();
            match parts.as_slice() {
                ["pst", e, s] => match (e.parse::<u64>(), s.parse::<u64>()) {
                    (Ok(e), Ok(s)) if e >= st.cursor_epoch => Some(s),
                    _ => return expired_sync_token(),
                },
                _ => return expired_sync_token(),
            }
        }
    };
    let (offset, snapshot) = match q1(q, "pageToken") {
        None => (0, st.seq),
        Some(t) => {
            let parts: Vec<&str> = t.split('.').collect();
            match parts.as_slice() {
                ["ppt", o, s] => match (o.parse::<usize>(), s.parse::<u64>()) {
                    (Ok(o), Ok(s)) => (o, s),
                    _ => return invalid("Invalid pageToken."),
                },
                _ => return invalid("Invalid pageToken."),
            }
        }
    };
    let epoch = st.cursor_epoch;
    let u = user_or_404(st, user).expect("checked");
    let mut all: Vec<&PersonRec> = u
        .persons
        .values()
        .filter(|p| match since {
            None => !p.deleted && p.groups.contains(MY_CONTACTS),
            Some(s) => p.seq > s && p.seq <= snapshot,
        })
        .collect();
    if let Err(r) = people_search::sort(&mut all, q1(q, "sortOrder")) {
        return r;
    }
    let page: Vec<Value> = all.iter().skip(offset).take(page_size).map(|p| render(p, &fields)).collect();
    let mut v = json!({"totalItems": all.len(), "totalPeople": all.len()});
    if !page.is_empty() {
        v["connections"] = json!(page);
    }
    if offset + page_size < all.len() {
        v["nextPageToken"] = json!(format!("ppt.{}.{snapshot}", offset + page_size));
    } else if q1(q, "requestSyncToken") == Some("true") || since.is_some() {
        v["nextSyncToken"] = json!(format!("pst.{epoch}.{snapshot}"));
    }
    ok(v)
}

fn batch_get(st: &mut State, user: &str, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let Ok(fields) = person_fields(q1(q, "personFields")) else {
        return invalid("personFields mask is required. Please specify one or more valid paths.");
    };
    let names = q.get("resourceNames").cloned().unwrap_or_default();
    if names.is_empty() {
        return invalid("resourceNames must not be empty.");
    }
    if names.len() > 200 {
        return invalid("Too many resourceNames: at most 200 are allowed.");
    }
    let u = user_or_404(st, user).expect("checked");
    let responses: Vec<Value> = names
        .iter()
        .map(|rn| match u.persons.get(rn).filter(|p| !p.deleted) {
            Some(p) => {
                json!({"requestedResourceName": rn, "httpStatusCode": 200, "person": render(p, &fields), "status": {}})
            }
            None => json!({"requestedResourceName": rn, "httpStatusCode": 404,
                "status": {"code": 5, "message": "Requested entity was not found."}}),
        })
        .collect();
    ok(json!({ "responses": responses }))
}

/// Validate a written Person; returns the fields to store and the user groups it names.
fn validate_person(
    u: &User,
    p: &Value,
    at: &str,
    allowed: Option<&BTreeSet<String>>,
) -> Result<(Map<String, Value>, BTreeSet<String>), Reply> {
    let Some(obj) = p.as_object() else { return Err(invalid(&format!("{at}: a person must be an object"))) };
    let mut fields = Map::new();
    let mut groups = BTreeSet::new();
    for (k, v) in obj {
        match k.as_str() {
            "resourceName" | "etag" | "metadata" => continue,
            k if !WRITABLE.contains(&k) => {
                return Err(invalid(&format!(
                    "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
                )));
            }
            _ => {}
        }
        if allowed.is_some_and(|a| !a.contains(k)) {
            continue;
        }
        let Some(items) = v.as_array() else { return Err(invalid(&format!("{at}.{k} must be a list"))) };
        if SINGLETONS.contains(&k.as_str()) && items.len() > 1 {
            return Err(invalid(&format!("Too many values for singleton field {k} at '{at}'.")));
        }
        if k == "memberships" {
            for m in items {
                let g =
                    m["contactGroupMembership"]["contactGroupResourceName"].as_str().map(str::to_owned).or_else(|| {
                        m["contactGroupMembership"]["contactGroupId"].as_str().map(|id| format!("contactGroups/{id}"))
                    });
                match g {
                    Some(g) if u.groups.contains_key(&g) => {
                        groups.insert(g);
                    }
                    _ => return Err(invalid(&format!("{at}.memberships: contact group not found"))),
                }
            }
            continue;
        }
        if k == "clientData" && items.iter().any(|d| !d["key"].is_string() || !d["value"].is_string()) {
            return Err(invalid(&format!("{at}.clientData entries need a key and a value")));
        }
        let cleaned: Vec<Value> = items
            .iter()
            .map(|it| {
                let mut it = it.as_object().cloned().unwrap_or_default();
                for ro in [
                    "metadata",
                    "formattedType",
                    "displayName",
                    "displayNameLastFirst",
                    "canonicalForm",
                    "formattedValue",
                ] {
                    if !(k == "emailAddresses" && ro == "displayName") {
                        it.remove(ro);
                    }
                }
                if k == "names" {
                    it.remove("unstructuredName");
                }
                Value::Object(it)
            })
            .collect();
        fields.insert(k.clone(), json!(cleaned));
    }
    Ok((fields, groups))
}

fn batch_create(st: &mut State, user: &str, req: &Request) -> Reply {
    let Ok(body) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    create_people(st, user, &body).map_or_else(|e| e, ok)
}

/// `people:createContact`: one person, answered as the created person.
fn create_one(st: &mut State, user: &str, req: &Request, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let Ok(person) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    let read = q1(q, "personFields").map_or_else(|| READABLE.join(","), str::to_owned);
    let body = json!({ "contacts": [{ "contactPerson": person }], "readMask": read });
    match create_people(st, user, &body) {
        Ok(r) => ok(r["createdPeople"][0]["person"].clone()),
        Err(e) => e,
    }
}

/// `people/{id}:updateContact`: one person (with its etag), answered as the updated person.
fn update_one(st: &mut State, user: &str, rn: &str, req: &Request, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let Ok(person) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    let Some(update) = q1(q, "updatePersonFields") else { return invalid("updatePersonFields mask is required.") };
    let read = q1(q, "personFields").map_or_else(|| READABLE.join(","), str::to_owned);
    let body = json!({ "contacts": { rn: person }, "updateMask": update, "readMask": read });
    match update_people(st, user, &body) {
        Ok(r) => ok(r["updateResult"][rn]["person"].clone()),
        Err(e) => e,
    }
}

fn create_people(st: &mut State, user: &str, body: &Value) -> Result<Value, Reply> {
    let contacts = body["contacts"].as_array().cloned().unwrap_or_default();
    if contacts.is_empty() {
        return Err(invalid("contacts must not be empty."));
    }
    if contacts.len() > 200 {
        return Err(invalid("Too many contacts in the request: at most 200 are allowed."));
    }
    let read = mask(body["readMask"].as_str());
    if read.iter().any(|f| !READABLE.contains(&f.as_str())) {
        return Err(invalid("Invalid readMask."));
    }
    let mut valid = vec![];
    {
        let u = st.user(user).expect("checked");
        for (i, c) in contacts.iter().enumerate() {
            match validate_person(u, &c["contactPerson"], &format!("contacts[{i}].contact_person"), None) {
                Ok(v) => valid.push(v),
                Err(e) => return Err(e),
            }
        }
    }
    let mut created = vec![];
    for (fields, mut groups) in valid {
        let n = st.id();
        let seq = st.tick();
        groups.insert(MY_CONTACTS.into());
        let id = format!("c{}", 4_000_000_000_000_000u64 + n);
        let rec = PersonRec { id: id.clone(), fields, groups, etag: etag(seq), seq, deleted: false, updated: now() };
        let out = render(&rec, &read);
        st.user(user).expect("checked").persons.insert(format!("people/{id}"), rec);
        if !read.is_empty() {
            created.push(json!({"httpStatusCode": 200, "person": out, "status": {}}));
        }
    }
    Ok(if created.is_empty() { json!({}) } else { json!({ "createdPeople": created }) })
}

fn batch_update(st: &mut State, user: &str, req: &Request) -> Reply {
    let Ok(body) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    update_people(st, user, &body).map_or_else(|e| e, ok)
}

fn update_people(st: &mut State, user: &str, body: &Value) -> Result<Value, Reply> {
    let Some(contacts) = body["contacts"].as_object().cloned() else {
        return Err(invalid("contacts must not be empty."));
    };
    if contacts.is_empty() {
        return Err(invalid("contacts must not be empty."));
    }
    if contacts.len() > 200 {
        return Err(invalid("Too many contacts in the request: at most 200 are allowed."));
    }
    let update = mask(body["updateMask"].as_str());
    if update.is_empty() || update.iter().any(|f| !WRITABLE.contains(&f.as_str())) {
        return Err(invalid("updateMask is required and may name only updatable person fields."));
    }
    let read = mask(body["readMask"].as_str());
    let mut plan = vec![];
    {
        let u = st.user(user).expect("checked");
        for (rn, p) in &contacts {
            let Some(cur) = u.persons.get(rn).filter(|r| !r.deleted) else { return Err(not_found()) };
            let sent = p["etag"].as_str().map(str::to_owned).or_else(|| {
                p["metadata"]["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|s| s["etag"].as_str().map(str::to_owned))
            });
            match sent {
                None => {
                    return Err(people_error(
                        400,
                        "FAILED_PRECONDITION",
                        "Request must set person.etag or person.metadata.sources.etag for the source that is being updated.",
                        None,
                    ));
                }
                Some(e) if e != cur.etag => {
                    return Err(people_error(
                        400,
                        "FAILED_PRECONDITION",
                        "Request person.etag is different than the current person.etag. Clear local cache and get the latest person.",
                        None,
                    ));
                }
                Some(_) => {}
            }
            let (fields, groups) = validate_person(u, p, &format!("contacts[{rn}]"), Some(&update))?;
            if update.contains("memberships") && groups.is_empty() {
                return Err(invalid("A contact must always have at least one contact group membership."));
            }
            plan.push((rn.clone(), fields, groups));
        }
    }
    let mut result = Map::new();
    for (rn, fields, groups) in plan {
        let seq = st.tick();
        let u = st.user(user).expect("checked");
        let rec = u.persons.get_mut(&rn).expect("checked");
        for f in &update {
            if f == "memberships" {
                rec.groups = groups.clone();
                continue;
            }
            match fields.get(f) {
                Some(v) => {
                    rec.fields.insert(f.clone(), v.clone());
                }
                None => {
                    rec.fields.remove(f);
                }
            }
        }
        rec.seq = seq;
        rec.etag = etag(seq);
        rec.updated = now();
        if !read.is_empty() {
            result.insert(rn.clone(), json!({"httpStatusCode": 200, "person": render(rec, &read), "status": {}}));
        }
    }
    Ok(if result.is_empty() { json!({}) } else { json!({ "updateResult": result }) })
}

fn batch_delete(st: &mut State, user: &str, req: &Request) -> Reply {
    let Ok(body) = req.body_json::<Value>() else { return invalid("Invalid JSON payload received.") };
    let names: Vec<String> =
        body["resourceNames"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    if names.is_empty() {
        return invalid("resourceNames must not be empty.");
    }
    if names.len() > 500 {
        return invalid("Too many resourceNames: at most 500 contacts may be deleted per request.");
    }
    for rn in names {
        delete_person(st, user, &rn);
    }
    ok(json!({}))
}

// ----- seed / edit / inspect helpers -----

pub(crate) fn seed_person(st: &mut State, user: &str, groups: &[&str], person: Value) -> Result<String, String> {
    if st.user(user).is_none() {
        return Err(format!("unknown user {user}: add the user first"));
    }
    let mut gs: BTreeSet<String> = groups.iter().map(|g| ensure_group(st, user, g)).collect();
    gs.insert(MY_CONTACTS.into());
    let u = st.user(user).ok_or("checked")?;
    let (fields, _) = validate_person(u, &person, "seed", None).map_err(|_| format!("invalid person {person}"))?;
    let n = st.id();
    let seq = st.tick();
    let id = format!("c{}", 4_000_000_000_000_000u64 + n);
    let rec = PersonRec { id: id.clone(), fields, groups: gs, etag: etag(seq), seq, deleted: false, updated: now() };
    st.user(user).ok_or("checked")?.persons.insert(format!("people/{id}"), rec);
    Ok(format!("people/{id}"))
}

pub(crate) fn edit_person(st: &mut State, user: &str, rn: &str, f: impl FnOnce(&mut Map<String, Value>)) -> bool {
    let seq = st.seq + 1;
    let Some(u) = st.user(user) else { return false };
    let Some(rec) = u.persons.get_mut(rn).filter(|r| !r.deleted) else { return false };
    f(&mut rec.fields);
    rec.seq = seq;
    rec.etag = etag(seq);
    rec.updated = now();
    st.seq = seq;
    true
}

pub(crate) fn set_membership(st: &mut State, user: &str, rn: &str, group: &str, on: bool) -> bool {
    let g = ensure_group(st, user, group);
    let seq = st.seq + 1;
    let Some(u) = st.user(user) else { return false };
    let Some(rec) = u.persons.get_mut(rn).filter(|r| !r.deleted) else { return false };
    let changed = if on { rec.groups.insert(g) } else { rec.groups.remove(&g) };
    if changed {
        rec.seq = seq;
        rec.etag = etag(seq);
        rec.updated = now();
        st.seq = seq;
    }
    true
}

pub(crate) fn delete_person(st: &mut State, user: &str, rn: &str) -> bool {
    let seq = st.seq + 1;
    let Some(u) = st.user(user) else { return false };
    let Some(rec) = u.persons.get_mut(rn).filter(|r| !r.deleted) else { return false };
    rec.deleted = true;
    rec.fields.clear();
    rec.groups.clear();
    rec.seq = seq;
    rec.etag = etag(seq);
    rec.updated = now();
    st.seq = seq;
    true
}

pub(crate) fn each(st: &mut State, user: &str, mut f: impl FnMut(&Value)) {
    let all: BTreeSet<String> = READABLE.iter().map(|s| s.to_string()).collect();
    if let Some(u) = st.user(user) {
        for p in u.persons.values().filter(|p| !p.deleted) {
            f(&render(p, &all));
        }
    }
    super::calendar::each(st, user, f);
}

pub(crate) fn snapshot(st: &mut State, user: &str) -> Vec<Value> {
    let all: BTreeSet<String> = READABLE.iter().map(|s| s.to_string()).collect();
    st.user(user)
        .map(|u| u.persons.values().filter(|p| !p.deleted).map(|p| render(p, &all)).collect())
        .unwrap_or_default()
}

pub(crate) fn members(st: &mut State, user: &str, group: &str) -> Vec<String> {
    let Some(u) = st.user(user) else { return vec![] };
    let Some(g) = u.groups.values().find(|g| g.name == group || g.resource_name() == group) else { return vec![] };
    member_names(u, &g.resource_name())
}

pub(crate) fn groups(st: &mut State, user: &str) -> Vec<Value> {
    let Some(u) = st.user(user) else { return vec![] };
    u.groups
        .values()
        .map(|g| group_json(g, member_names(u, &g.resource_name()).len(), &BTreeSet::new(), None))
        .collect()
}

pub(crate) fn client_value<'a>(p: &'a Value, key: &str) -> Option<&'a str> {
    p["clientData"].as_array().into_iter().flatten().find(|d| d["key"] == key).and_then(|d| d["value"].as_str())
}

/// People JSON fields for a crmsync contact (first e-mail `work`, others `other`).
pub(crate) fn contact_json(c: &Contact) -> Value {
    let mut p = Map::new();
    apply_contact(&mut p, c);
    Value::Object(p)
}

/// Overwrite the mapped person fields with a contact's values.
pub(crate) fn apply_contact(p: &mut Map<String, Value>, c: &Contact) {
    let mut set = |k: &str, v: Vec<Value>| {
        if v.is_empty() {
            p.remove(k);
        } else {
            p.insert(k.into(), json!(v));
        }
    };
    let mut name = Map::new();
    if let Some(g) = &c.given_name {
        name.insert("givenName".into(), json!(g));
    }
    if let Some(f) = &c.family_name {
        name.insert("familyName".into(), json!(f));
    }
    set("names", if name.is_empty() { vec![] } else { vec![Value::Object(name)] });
    set(
        "emailAddresses",
        c.emails
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"value": e, "type": if i == 0 { "work" } else { "other" }}))
            .collect(),
    );
    let mut phones = vec![];
    if let Some(x) = &c.phone {
        phones.push(json!({"value": x, "type": "work"}));
    }
    if let Some(x) = &c.mobile {
        phones.push(json!({"value": x, "type": "mobile"}));
    }
    set("phoneNumbers", phones);
    let mut org = Map::new();
    for (k, v) in [("name", &c.company), ("title", &c.title), ("department", &c.department)] {
        if let Some(v) = v {
            org.insert(k.into(), json!(v));
        }
    }
    set("organizations", if org.is_empty() { vec![] } else { vec![Value::Object(org)] });
    let a = &c.address;
    let mut addr = Map::new();
    for (k, v) in [
        ("streetAddress", &a.street),
        ("city", &a.city),
        ("region", &a.region),
        ("postalCode", &a.postal_code),
        ("country", &a.country),
    ] {
        if let Some(v) = v {
            addr.insert(k.into(), json!(v));
        }
    }
    if !addr.is_empty() {
        addr.insert("type".into(), json!("work"));
    }
    set("addresses", if addr.is_empty() { vec![] } else { vec![Value::Object(addr)] });
    set("biographies", c.notes.iter().map(|n| json!({"value": n, "contentType": "TEXT_PLAIN"})).collect());
}

/// A crmsync contact read from People JSON fields (for edit helpers).
pub(crate) fn json_contact(p: &Map<String, Value>) -> Contact {
    let first = |k: &str| p.get(k).and_then(|v| v.get(0)).cloned().unwrap_or(Value::Null);
    let s = |v: &Value, k: &str| v[k].as_str().map(str::to_owned);
    let name = first("names");
    let org = first("organizations");
    let addr = first("addresses");
    let phones: Vec<Value> = p.get("phoneNumbers").and_then(Value::as_array).cloned().unwrap_or_default();
    let phone_of = |t: &str| phones.iter().find(|n| n["type"] == t).and_then(|n| s(n, "value"));
    Contact {
        given_name: s(&name, "givenName"),
        family_name: s(&name, "familyName"),
        emails: p
            .get("emailAddresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| s(e, "value"))
            .collect(),
        phone: phone_of("work"),
        mobile: phone_of("mobile"),
        company: s(&org, "name"),
        title: s(&org, "title"),
        department: s(&org, "department"),
        address: PostalAddress {
            street: s(&addr, "streetAddress"),
            city: s(&addr, "city"),
            region: s(&addr, "region"),
            postal_code: s(&addr, "postalCode"),
            country: s(&addr, "country"),
        },
        notes: s(&first("biographies"), "value"),
        categories: vec![],
    }
}
