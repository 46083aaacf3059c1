//! Contacts: the People API contact group ("Salesforce Sync") as a [`Collection`].
//!
//! Membership is the scope. `people.connections.list` has no group filter, so every read lists
//! all connections and keeps the group's members; the rest are reported as `outside_scope`
//! skips (full read) or `Removed` (incremental read: the contact left the group, or was never
//! in it — the engine ignores removals of ids it does not know).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmsync_core::model::{CONTACT_FIELDS, normalize_email, normalize_phone, normalize_text};
use crmsync_core::{
    Capabilities, Change, Changes, Collection, Contact, Error, ErrorKind, Found, Item, ItemFailure, MatchKey, NewItem,
    Record, Result, Skip, SyncKey, Update,
};
use crmsync_http::create_reconciled;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{Req, Session};
use crate::config::SYNC_KEY_PROPERTY;

/// The person fields every read asks for.
pub const PERSON_FIELDS: &str =
    "names,emailAddresses,phoneNumbers,organizations,addresses,biographies,memberships,clientData,metadata";
/// People batch limits (create/update/get 200, delete 500).
pub const MAX_BATCH: usize = 200;
/// `people:batchDeleteContacts` limit.
pub const MAX_DELETE_BATCH: usize = 500;

/// The rep's contact group as a collection.
pub struct ContactsCollection {
    s: Session,
    /// `contactGroups/{id}` of the sync group.
    group: String,
    /// Sync key → item, learned from full reads and creates (for idempotent creates).
    known: Mutex<HashMap<SyncKey, Item>>,
    scanned: AtomicBool,
}

impl std::fmt::Debug for ContactsCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactsCollection").field("group", &self.group).field("session", &self.s).finish()
    }
}

impl ContactsCollection {
    /// Find the contact group named `group_name` (a user group), creating it when missing.
    pub(crate) async fn open(s: Session, group_name: &str) -> Result<Self> {
        let group = match find_group(&s, group_name).await? {
            Some(g) => g,
            None => {
                let body = json!({"contactGroup": {"name": group_name}, "readGroupFields": "name,groupType,memberCount,metadata"});
                match s.send(Req::write(Method::POST, s.cfg().people("v1/contactGroups"), Some(body))).await {
                    Ok(v) => str_of(&v, "resourceName")
                        .ok_or_else(|| Error::unexpected("google: created contact group has no resourceName"))?,
                    // Somebody created it meanwhile.
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        find_group(&s, group_name).await?.ok_or_else(|| {
                            Error::unexpected(format!(
                                "google: contact group {group_name:?} conflicts but is not listed"
                            ))
                        })?
                    }
                    Err(e) => return Err(e.context("google: creating the contact group")),
                }
            }
        };
        Ok(Self { s, group, known: Mutex::new(HashMap::new()), scanned: AtomicBool::new(false) })
    }

    /// The contact group's resource name (`contactGroups/…`).
    pub fn group(&self) -> &str {
        &self.group
    }

    fn is_member(&self, p: &Value) -> bool {
        p["memberships"].as_array().into_iter().flatten().any(|m| {
            m["contactGroupMembership"]["contactGroupResourceName"].as_str() == Some(&self.group)
                || m["contactGroupMembership"]["contactGroupId"]
                    .as_str()
                    .map(|id| format!("contactGroups/{id}"))
                    .as_deref()
                    == Some(&self.group)
        })
    }

    fn learn(&self, item: &Item) {
        if let Some(k) = &item.sync_key {
            self.known.lock().expect("poisoned").insert(k.clone(), item.clone());
        }
    }

    /// One `people:batchCreateContacts` of these people (sent non-idempotent): one result per
    /// person, in order.
    async fn batch_create(&self, people: Vec<&Value>) -> Result<Vec<Result<Item>>> {
        let contacts: Vec<Value> = people.iter().map(|p| json!({"contactPerson": p})).collect();
        let body = json!({"contacts": contacts, "readMask": PERSON_FIELDS, "sources": ["READ_SOURCE_TYPE_CONTACT"]});
        let url = self.s.cfg().people("v1/people:batchCreateContacts");
        let v = self.s.send(Req::write(Method::POST, url, Some(body)).once()).await?;
        let created = v["createdPeople"].as_array().cloned().unwrap_or_default();
        Ok((0..people.len())
            .map(|k| match created.get(k) {
                Some(pr) => person_response(pr),
                None => Err(Error::unexpected("google: batchCreateContacts returned fewer people than sent")),
            })
            .collect())
    }

    /// Read the group again and answer, per key, the contact stamped with it if there is one.
    async fn landed(&self, keys: Vec<&SyncKey>) -> Result<Vec<Option<Result<Item>>>> {
        self.read(None).await?;
        let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        Ok(keys.iter().map(|k| known.get(*k).cloned().map(Ok)).collect())
    }

    async fn read(&self, cursor: Option<&str>) -> Result<Changes> {
        let mut out = Changes { full: cursor.is_none(), ..Default::default() };
        let mut page: Option<String> = None;
        loop {
            let mut req = Req::get(self.s.cfg().people("v1/people/me/connections"))
                .q("personFields", PERSON_FIELDS)
                .q("pageSize", self.s.cfg().page_size.to_string())
                .q("requestSyncToken", "true");
            if let Some(c) = cursor {
                req = req.q("syncToken", c);
            }
            if let Some(p) = &page {
                req = req.q("pageToken", p.clone());
            }
            let v = self.s.send(req).await?;
            for p in v["connections"].as_array().into_iter().flatten() {
                let Some(id) = str_of(p, "resourceName") else {
                    return Err(Error::unexpected("google: person without resourceName in connections"));
                };
                if p["metadata"]["deleted"].as_bool() == Some(true) {
                    if cursor.is_some() {
                        out.items.push(Change::Removed(id));
                    }
                    continue;
                }
                if !self.is_member(p) {
                    if cursor.is_some() {
                        out.items.push(Change::Removed(id));
                    } else {
                        out.skipped.push(Skip { id, reason: "outside_scope".into() });
                    }
                    continue;
                }
                match person_to_item(p) {
                    Ok(item) => {
                        self.learn(&item);
                        out.items.push(Change::Upsert(item));
                    }
                    Err(error) => out.failures.push(ItemFailure { id, error }),
                }
            }
            match str_of(&v, "nextPageToken") {
                Some(t) => page = Some(t),
                None => {
                    out.cursor = str_of(&v, "nextSyncToken");
                    break;
                }
            }
        }
        if cursor.is_none() {
            self.scanned.store(true, Ordering::Relaxed);
        }
        Ok(out)
    }

    async fn batch_get(&self, ids: &[String]) -> Result<HashMap<String, Value>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(MAX_BATCH) {
            let mut req = Req::get(self.s.cfg().people("v1/people:batchGet")).q("personFields", PERSON_FIELDS);
            for id in chunk {
                req = req.q("resourceNames", id.clone());
            }
            let v = self.s.send(req).await?;
            for r in v["responses"].as_array().into_iter().flatten() {
                let ok = r["status"]["code"].as_i64().unwrap_or(0) == 0;
                let p = &r["person"];
                if ok && p.is_object() && p["metadata"]["deleted"].as_bool() != Some(true) && self.is_member(p) {
                    if let Some(id) = str_of(p, "resourceName") {
                        out.insert(id, p.clone());
                    }
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Collection for ContactsCollection {
    fn capabilities(&self) -> Capabilities {
        Capabilities { max_batch: MAX_BATCH, fields: CONTACT_FIELDS, incremental: true, find_beyond_scope: false }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        self.read(cursor).await.map_err(|e| e.context("google contacts"))
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let got = self.batch_get(ids).await?;
        ids.iter().filter_map(|id| got.get(id)).map(person_to_item).filter(Result::is_ok).collect()
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        let all = self.read(None).await?;
        Ok(all
            .items
            .into_iter()
            .filter_map(|c| match c {
                Change::Upsert(i) if keys.iter().any(|k| k.matches(&i)) => Some(Found { item: i, in_scope: true }),
                _ => None,
            })
            .collect())
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        if !self.scanned.load(Ordering::Relaxed) {
            // Learn the sync keys already stamped in the group so a repeated create is a no-op.
            self.read(None).await.map_err(|e| e.context("google contacts: scanning before create"))?;
        }
        let mut results: Vec<Option<Result<Item>>> = vec![None; items.len()];
        let mut to_send: Vec<(usize, Value)> = vec![];
        let mut batch_keys = BTreeSet::new();
        for (i, it) in items.iter().enumerate() {
            if let Some(existing) = self.known.lock().expect("poisoned").get(&it.sync_key) {
                results[i] = Some(Ok(existing.clone()));
                continue;
            }
            let Record::Contact(c) = &it.record else {
                results[i] = Some(Err(Error::invalid_item("not a contact")));
                continue;
            };
            if let Some(reason) = it.record.invalid_reason() {
                results[i] = Some(Err(Error::invalid_item(reason)));
                continue;
            }
            if !batch_keys.insert(it.sync_key.clone()) {
                results[i] = Some(Err(Error::invalid_item("sync key repeated within one batch")));
                continue;
            }
            let mut person = build_person(c, None, PERSON_WRITE_FIELDS);
            person.insert("clientData".into(), json!([{"key": SYNC_KEY_PROPERTY, "value": it.sync_key.as_str()}]));
            person.insert(
                "memberships".into(),
                json!([{"contactGroupMembership": {"contactGroupResourceName": self.group}}]),
            );
            to_send.push((i, Value::Object(person)));
        }
        // batchCreateContacts is not idempotent: after a lost reply, the group is read again
        // and only the people whose sync key is not there yet are sent again.
        for (n, chunk) in to_send.chunks(MAX_BATCH).enumerate() {
            let keys: Vec<&SyncKey> = chunk.iter().map(|(i, _)| &items[*i].sync_key).collect();
            let created = create_reconciled(
                chunk.len(),
                self.s.cfg().retry.max_retries,
                |which| self.batch_create(which.into_iter().map(|k| &chunk[k].1).collect()),
                |which| self.landed(which.into_iter().map(|k| keys[k]).collect()),
            )
            .await;
            match created {
                Ok(created) => {
                    for ((i, _), r) in chunk.iter().zip(created) {
                        if let Ok(item) = &r {
                            self.learn(item);
                        }
                        results[*i] = Some(r);
                    }
                }
                Err(e) if n == 0 && e.kind() != ErrorKind::InvalidItem => {
                    return Err(e.context("google contacts: create"));
                }
                Err(e) => {
                    for (i, _) in chunk {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::unexpected("google: no result")))).collect())
    }

    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        let ids: Vec<String> = items.iter().map(|u| u.id.clone()).collect();
        let current = self.batch_get(&ids).await.map_err(|e| e.context("google contacts: reading before update"))?;
        let mut results: Vec<Option<Result<Item>>> = vec![None; items.len()];
        let mut to_send: Vec<(usize, String, Contact, BTreeSet<&'static str>)> = vec![];
        for (i, u) in items.iter().enumerate() {
            let Some(cur) = current.get(&u.id) else {
                results[i] = Some(Err(Error::not_found(format!("google: contact {} is not in the group", u.id))));
                continue;
            };
            if str_of(cur, "etag").as_deref() != Some(u.version.as_str()) {
                results[i] = Some(Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("google: contact {} changed since {}", u.id, u.version),
                )));
                continue;
            }
            let mut rec = match person_to_item(cur) {
                Ok(item) => item.record,
                Err(_) => Record::Contact(Contact::default()),
            };
            u.apply_to(&mut rec);
            if let Some(reason) = rec.invalid_reason() {
                results[i] = Some(Err(Error::invalid_item(reason)));
                continue;
            }
            let masks: BTreeSet<&'static str> = u.fields.iter().filter_map(|f| person_field_of(f)).collect();
            let Record::Contact(c) = rec else { unreachable!("contacts collection holds contacts") };
            to_send.push((i, u.id.clone(), c, masks));
        }
        for chunk in to_send.chunks(MAX_BATCH) {
            let mask: BTreeSet<&'static str> = chunk.iter().flat_map(|(_, _, _, m)| m.iter().copied()).collect();
            if mask.is_empty() {
                for (i, id, _, _) in chunk {
                    results[*i] = Some(person_to_item(&current[id]));
                }
                continue;
            }
            let mask_fields: Vec<&str> = mask.iter().copied().collect();
            let mut contacts = Map::new();
            for (i, id, c, _) in chunk {
                let mut p = build_person(c, Some(&current[id]), &mask_fields);
                p.insert("etag".into(), json!(items[*i].version));
                p.insert("resourceName".into(), json!(id));
                contacts.insert(id.clone(), Value::Object(p));
            }
            let body = json!({"contacts": contacts, "updateMask": mask_fields.join(","), "readMask": PERSON_FIELDS,
                "sources": ["READ_SOURCE_TYPE_CONTACT"]});
            match self
                .s
                .send(Req::write(Method::POST, self.s.cfg().people("v1/people:batchUpdateContacts"), Some(body)))
                .await
            {
                Ok(v) => {
                    for (i, id, _, _) in chunk {
                        let r = match v["updateResult"].get(id) {
                            Some(pr) => person_response(pr),
                            None => {
                                Err(Error::unexpected(format!("google: batchUpdateContacts returned nothing for {id}")))
                            }
                        };
                        if let Ok(item) = &r {
                            self.learn(item);
                        }
                        results[*i] = Some(r);
                    }
                }
                Err(e) => {
                    // The whole batch is refused (e.g. one etag changed between our read and the
                    // write): nothing in it was written.
                    for (i, _, _, _) in chunk {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        Ok(results.into_iter().map(|r| r.expect("every input has a result")).collect())
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        let mut results: Vec<Result<()>> = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_DELETE_BATCH) {
            let url = self.s.cfg().people("v1/people:batchDeleteContacts");
            let mut res =
                self.s.send(Req::write(Method::POST, url.clone(), Some(json!({"resourceNames": chunk})))).await;
            if let Err(e) = &res {
                if e.kind() == ErrorKind::NotFound {
                    // Some are gone already: delete the ones that still exist.
                    let still = self.batch_get(chunk).await?;
                    let names: Vec<&String> = chunk.iter().filter(|id| still.contains_key(*id)).collect();
                    res = if names.is_empty() {
                        Ok(Value::Null)
                    } else {
                        self.s.send(Req::write(Method::POST, url, Some(json!({"resourceNames": names})))).await
                    };
                }
            }
            match res {
                Ok(_) => {
                    self.known.lock().expect("poisoned").retain(|_, item| !chunk.contains(&item.id));
                    results.extend(chunk.iter().map(|_| Ok(())));
                }
                Err(e) if results.is_empty() => return Err(e.context("google contacts: delete")),
                Err(e) => results.extend(chunk.iter().map(|_| Err(e.clone()))),
            }
        }
        Ok(results)
    }

    fn requests(&self) -> u64 {
        self.s.requests()
    }
}

async fn find_group(s: &Session, name: &str) -> Result<Option<String>> {
    let mut page: Option<String> = None;
    loop {
        let mut req =
            Req::get(s.cfg().people("v1/contactGroups")).q("pageSize", "1000").q("groupFields", "name,groupType");
        if let Some(p) = &page {
            req = req.q("pageToken", p.clone());
        }
        let v = s.send(req).await.map_err(|e| e.context("google: listing contact groups"))?;
        for g in v["contactGroups"].as_array().into_iter().flatten() {
            if g["groupType"].as_str() != Some("SYSTEM_CONTACT_GROUP") && g["name"].as_str() == Some(name) {
                return Ok(str_of(g, "resourceName"));
            }
        }
        match str_of(&v, "nextPageToken") {
            Some(t) => page = Some(t),
            None => return Ok(None),
        }
    }
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn person_response(pr: &Value) -> Result<Item> {
    let code = pr["status"]["code"].as_i64().unwrap_or(0);
    if code != 0 {
        let msg = pr["status"]["message"].as_str().unwrap_or("");
        let kind = match code {
            3 => ErrorKind::InvalidItem,
            5 => ErrorKind::NotFound,
            9 => ErrorKind::PreconditionFailed,
            _ => ErrorKind::Unexpected,
        };
        return Err(Error::new(kind, format!("google: person refused (rpc code {code}): {msg}")));
    }
    person_to_item(&pr["person"])
}

/// The People person field a canonical contact field lives in.
fn person_field_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "given_name" | "family_name" => "names",
        "email" => "emailAddresses",
        "phone" | "mobile" => "phoneNumbers",
        "company" | "title" | "department" => "organizations",
        "street" | "city" | "region" | "postal_code" | "country" => "addresses",
        "notes" => "biographies",
        _ => return None,
    })
}

const PERSON_WRITE_FIELDS: &[&str] =
    &["names", "emailAddresses", "phoneNumbers", "organizations", "addresses", "biographies"];

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).and_then(normalize_text)
}

fn arr<'a>(p: &'a Value, k: &str) -> Vec<&'a Value> {
    p.get(k).and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
}

/// Primary entries first (People marks the primary value in `metadata.primary`).
fn primary_first(mut v: Vec<&Value>) -> Vec<&Value> {
    v.sort_by_key(|e| e["metadata"]["primary"].as_bool() != Some(true));
    v
}

fn phone_slot(t: Option<&str>) -> Option<&'static str> {
    match t {
        Some("mobile") | Some("workMobile") => Some("mobile"),
        Some("work") | Some("main") => Some("phone"),
        _ => None,
    }
}

fn address_index(addrs: &[&Value]) -> Option<usize> {
    addrs.iter().position(|a| a["type"].as_str() == Some("work")).or((!addrs.is_empty()).then_some(0))
}

/// Map a People `Person` to an [`Item`] (id = `resourceName`, version = `etag`).
pub fn person_to_item(p: &Value) -> Result<Item> {
    let id = str_of(p, "resourceName").ok_or_else(|| Error::unexpected("google: person without resourceName"))?;
    let version = str_of(p, "etag").ok_or_else(|| Error::unexpected(format!("google: person {id} without etag")))?;
    let names = primary_first(arr(p, "names"));
    let name = names.first().copied().unwrap_or(&Value::Null);
    let emails: Vec<String> = primary_first(arr(p, "emailAddresses")).iter().filter_map(|e| s(e, "value")).collect();
    let phones = primary_first(arr(p, "phoneNumbers"));
    let pick =
        |slot: &str| phones.iter().find(|n| phone_slot(n["type"].as_str()) == Some(slot)).and_then(|n| s(n, "value"));
    let mut phone = pick("phone");
    if phone.is_none() {
        phone = phones.iter().find(|n| phone_slot(n["type"].as_str()).is_none()).and_then(|n| s(n, "value"));
    }
    let orgs = primary_first(arr(p, "organizations"));
    let org = orgs.first().copied().unwrap_or(&Value::Null);
    let addrs = arr(p, "addresses");
    let addr = address_index(&addrs).map(|i| addrs[i]).unwrap_or(&Value::Null);
    let c = Contact {
        given_name: s(name, "givenName"),
        family_name: s(name, "familyName"),
        emails,
        phone,
        mobile: pick("mobile"),
        company: s(org, "name"),
        title: s(org, "title"),
        department: s(org, "department"),
        address: crmsync_core::PostalAddress {
            street: s(addr, "streetAddress"),
            city: s(addr, "city"),
            region: s(addr, "region"),
            postal_code: s(addr, "postalCode"),
            country: s(addr, "country"),
        },
        notes: arr(p, "biographies").first().and_then(|b| s(b, "value")),
        categories: vec![],
    };
    let record = Record::Contact(c);
    if let Some(reason) = record.invalid_reason() {
        return Err(Error::invalid_item(format!("google: person {id}: {reason}")));
    }
    let sync_key = arr(p, "clientData")
        .iter()
        .find(|d| d["key"].as_str() == Some(SYNC_KEY_PROPERTY))
        .and_then(|d| str_of(d, "value"))
        .map(SyncKey);
    let modified = arr(&p["metadata"], "sources")
        .iter()
        .find(|src| src["type"].as_str() == Some("CONTACT"))
        .and_then(|src| src["updateTime"].as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    Ok(Item { id, version, sync_key, modified, record })
}

fn put(o: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    match v {
        Some(v) => {
            o.insert(k.into(), json!(v));
        }
        None => {
            o.remove(k);
        }
    }
}

fn obj(v: Option<&&Value>) -> Map<String, Value> {
    let mut m = v.and_then(|v| v.as_object()).cloned().unwrap_or_default();
    m.remove("metadata");
    m
}

/// Build the given person fields of `c`, keeping whatever `base` holds that crmsync does not map
/// (other e-mail types, home phones, further organizations and addresses).
fn build_person(c: &Contact, base: Option<&Value>, fields: &[&str]) -> Map<String, Value> {
    let base = base.unwrap_or(&Value::Null);
    let mut p = Map::new();
    for &f in fields {
        let v = match f {
            "names" => {
                let names = arr(base, "names");
                let mut n = obj(names.first());
                for ro in ["displayName", "displayNameLastFirst", "unstructuredName"] {
                    n.remove(ro);
                }
                put(&mut n, "givenName", &c.given_name);
                put(&mut n, "familyName", &c.family_name);
                if n.is_empty() { json!([]) } else { json!([n]) }
            }
            "emailAddresses" => {
                let old = arr(base, "emailAddresses");
                let v: Vec<Value> = c
                    .emails
                    .iter()
                    .map(|e| {
                        let mut m = obj(old
                            .iter()
                            .find(|o| o["value"].as_str().and_then(normalize_email) == normalize_email(e)));
                        m.insert("value".into(), json!(e));
                        m.entry("type").or_insert(json!("work"));
                        m.remove("formattedType");
                        Value::Object(m)
                    })
                    .collect();
                json!(v)
            }
            "phoneNumbers" => {
                let old = arr(base, "phoneNumbers");
                // Which old entry did `phone` come from (typed work, or the untyped fallback)?
                let phone_idx = old
                    .iter()
                    .position(|n| phone_slot(n["type"].as_str()) == Some("phone"))
                    .or_else(|| old.iter().position(|n| phone_slot(n["type"].as_str()).is_none()));
                let mobile_idx = old.iter().position(|n| phone_slot(n["type"].as_str()) == Some("mobile"));
                let mut v: Vec<Value> = vec![];
                if let Some(ph) = &c.phone {
                    let keep_type = phone_idx.and_then(|i| old[i]["type"].as_str()).unwrap_or("work");
                    v.push(json!({"value": ph, "type": keep_type}));
                }
                if let Some(m) = &c.mobile {
                    v.push(json!({"value": m, "type": "mobile"}));
                }
                for (i, n) in old.iter().enumerate() {
                    if Some(i) != phone_idx && Some(i) != mobile_idx {
                        let mut m = obj(Some(n));
                        m.remove("canonicalForm");
                        m.remove("formattedType");
                        v.push(Value::Object(m));
                    }
                }
                // An unchanged number keeps its formatting (People would re-canonicalize anyway).
                for n in v.iter_mut() {
                    if let Some(o) = old.iter().find(|o| {
                        o["type"] == n["type"]
                            && o["value"].as_str().and_then(normalize_phone)
                                == n["value"].as_str().and_then(normalize_phone)
                    }) {
                        n["value"] = o["value"].clone();
                    }
                }
                json!(v)
            }
            "organizations" => {
                let old = arr(base, "organizations");
                let mut o = obj(old.first());
                o.remove("formattedType");
                put(&mut o, "name", &c.company);
                put(&mut o, "title", &c.title);
                put(&mut o, "department", &c.department);
                let mut v: Vec<Value> = vec![];
                if o.keys().any(|k| k != "type" && k != "current") {
                    v.push(Value::Object(o));
                }
                v.extend(old.iter().skip(1).map(|x| Value::Object(obj(Some(x)))));
                json!(v)
            }
            "addresses" => {
                let old = arr(base, "addresses");
                let idx = address_index(&old);
                let mut a = obj(idx.map(|i| &old[i]));
                for ro in ["formattedValue", "formattedType"] {
                    a.remove(ro);
                }
                let addr = &c.address;
                put(&mut a, "streetAddress", &addr.street);
                put(&mut a, "city", &addr.city);
                put(&mut a, "region", &addr.region);
                put(&mut a, "postalCode", &addr.postal_code);
                put(&mut a, "country", &addr.country);
                a.entry("type").or_insert(json!("work"));
                let mut v: Vec<Value> = vec![];
                if a.keys().any(|k| k != "type") {
                    v.push(Value::Object(a));
                }
                v.extend(
                    old.iter().enumerate().filter(|(i, _)| Some(*i) != idx).map(|(_, x)| Value::Object(obj(Some(x)))),
                );
                json!(v)
            }
            "biographies" => match &c.notes {
                Some(n) => json!([{"value": n, "contentType": "TEXT_PLAIN"}]),
                None => json!([]),
            },
            _ => continue,
        };
        p.insert(f.into(), v);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_maps_both_ways_and_keeps_unmapped_data() {
        let p = json!({
            "resourceName": "people/c1", "etag": "%E1",
            "names": [{"givenName": "Ada", "familyName": "Lovelace", "displayName": "Ada Lovelace"}],
            "emailAddresses": [{"value": "home@x.io", "type": "home"}, {"value": "ada@x.io", "type": "work", "metadata": {"primary": true}}],
            "phoneNumbers": [{"value": "+1 555", "type": "home"}, {"value": "+1 777", "type": "work"}, {"value": "+1 999", "type": "mobile"}],
            "organizations": [{"name": "Analytical", "title": "CTO", "department": "R&D"}],
            "addresses": [{"streetAddress": "1 Main", "city": "London", "type": "work"}],
            "biographies": [{"value": "likes engines"}],
            "clientData": [{"key": "crmsyncKey", "value": "cs1.k"}],
        });
        let item = person_to_item(&p).unwrap();
        let c = item.record.as_contact().unwrap();
        assert_eq!(c.emails, vec!["ada@x.io", "home@x.io"]);
        assert_eq!((c.phone.as_deref(), c.mobile.as_deref()), (Some("+1 777"), Some("+1 999")));
        assert_eq!((c.company.as_deref(), c.department.as_deref()), (Some("Analytical"), Some("R&D")));
        assert_eq!(item.sync_key, Some(SyncKey("cs1.k".into())));
        let mut c2 = c.clone();
        c2.phone = Some("+1 888".into());
        let out = build_person(&c2, Some(&p), &["phoneNumbers", "names"]);
        let phones = out["phoneNumbers"].as_array().unwrap();
        assert_eq!(phones.len(), 3, "home number kept: {phones:?}");
        assert!(phones.iter().any(|n| n["value"] == "+1 555" && n["type"] == "home"));
        assert!(out["names"][0].get("displayName").is_none());
        assert!(person_to_item(&json!({"resourceName": "people/c2", "etag": "e"})).is_err(), "no name, no e-mail");
    }
}
