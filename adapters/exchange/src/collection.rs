//! The [`Collection`] over Graph shared by contacts and events: find, batched writes, get.
//! Reading differs per kind: the provider hands each collection its kind's [`Reader`]
//! ([`crate::contacts`], [`crate::events`]), so this file does not depend on them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use crmsync_core::model::{CONTACT_FIELDS, EVENT_FIELDS, check_batch};
use crmsync_core::{
    Capabilities, Change, Changes, Collection, Error, ErrorKind, Found, Item, Kind, MatchKey, NewItem, Record, Result,
    SyncKey, Update, Window,
};
use serde_json::Value;

use crmsync_http::create_reconciled;

use crate::client::{MAX_BATCH, Session, SubRequest, odata_str};
use crate::mapping::{self, SYNC_KEY_PROPERTY};

/// What a collection covers.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    /// The contacts folder with this id (and display name, for the category check).
    Folder { id: String, name: String },
    /// The primary calendar between these instants (whole UTC days).
    Calendar(Window),
}

/// Reads one kind in full or incrementally (the cursor is the kind's own).
#[async_trait]
pub(crate) trait Reader: Send + Sync {
    async fn changes(&self, c: &GraphCollection, cursor: Option<&str>) -> Result<Changes>;
}

/// A Graph collection: the rep's contacts folder or calendar window.
pub struct GraphCollection {
    pub(crate) kind: Kind,
    reader: &'static dyn Reader,
    pub(crate) session: Session,
    pub(crate) scope: Scope,
    /// Last-read Graph JSON per id (keeps what the model does not hold for partial updates).
    pub(crate) raw: Mutex<HashMap<String, Value>>,
    /// Set once the service refused `$expand` on contact delta.
    pub(crate) no_delta_expand: AtomicBool,
    /// Set once a full read of the whole scope carried every sync key into `raw` (the contacts
    /// folder; never the calendar window, as a stamped event may lie outside it): creates then
    /// need no look-up of their keys.
    pub(crate) scanned: AtomicBool,
}

impl std::fmt::Debug for GraphCollection {
    /// Kind, mailbox root, scope and request count; never the cached records.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphCollection")
            .field("kind", &self.kind)
            .field("root", &self.session.root)
            .field("scope", &self.scope)
            .field("requests", &self.session.requests())
            .finish_non_exhaustive()
    }
}

/// Clauses OR-ed into one `$filter` (keeps URLs short).
const FIND_CHUNK: usize = 10;

pub(crate) fn expand_sync_key() -> String {
    format!("singleValueExtendedProperties($filter=id eq {})", odata_str(SYNC_KEY_PROPERTY))
}

pub(crate) fn sync_key_clause(k: &SyncKey) -> String {
    format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq {} and ep/value eq {})",
        odata_str(SYNC_KEY_PROPERTY),
        odata_str(k.as_str())
    )
}

impl GraphCollection {
    pub(crate) fn new(kind: Kind, reader: &'static dyn Reader, session: Session, scope: Scope) -> Self {
        Self {
            kind,
            reader,
            session,
            scope,
            raw: Mutex::new(HashMap::new()),
            no_delta_expand: AtomicBool::new(false),
            scanned: AtomicBool::new(false),
        }
    }

    /// Keep the last-read JSON of an item. Replies that cannot carry the sync key (POST and
    /// PATCH replies, `calendarView/delta`) keep the one `key` names or the one known before.
    pub(crate) fn remember_keyed(&self, v: &Value, key: Option<&SyncKey>) {
        let Some(id) = v["id"].as_str() else { return };
        let mut raw = self.raw.lock().expect("raw cache");
        let mut v = v.clone();
        if v.get("singleValueExtendedProperties").is_none() {
            let known = key
                .map(mapping::sync_key_entry)
                .or_else(|| raw.get(id).and_then(|old| old.get("singleValueExtendedProperties")).cloned());
            if let Some(p) = known {
                v["singleValueExtendedProperties"] = p;
            }
        }
        raw.insert(id.to_owned(), v);
    }

    pub(crate) fn remember(&self, v: &Value) {
        self.remember_keyed(v, None);
    }

    fn cached(&self, id: &str) -> Option<Value> {
        self.raw.lock().expect("raw cache").get(id).cloned()
    }

    /// Graph JSON → record; `Err(reason)` for an item that cannot be mapped.
    pub(crate) fn record(&self, v: &Value) -> std::result::Result<Record, String> {
        match self.kind {
            Kind::Contact => Ok(Record::Contact(mapping::contact_from_graph(v))),
            Kind::Event => mapping::event_from_graph(v).map(Record::Event),
        }
    }

    /// Graph JSON → item; the sync key comes from the JSON or `key`.
    pub(crate) fn item(&self, v: &Value, key: Option<&SyncKey>) -> Result<Item> {
        let rec = self.record(v).map_err(Error::invalid_item)?;
        let mut it = mapping::item(v, rec);
        if it.sync_key.is_none() {
            it.sync_key = key.cloned().or_else(|| self.cached(&it.id).and_then(|c| mapping::sync_key_of(&c)));
        }
        Ok(it)
    }

    fn item_path(&self, id: &str) -> String {
        match self.kind {
            Kind::Contact => format!("/contacts/{id}"),
            Kind::Event => format!("/events/{id}"),
        }
    }

    fn list_path(&self) -> String {
        match &self.scope {
            Scope::Folder { id, .. } => format!("/contactFolders/{id}/contacts"),
            Scope::Calendar(_) => "/events".into(),
        }
    }

    fn in_scope(&self, v: &Value) -> bool {
        match &self.scope {
            Scope::Folder { id, .. } => v["parentFolderId"].as_str().is_none_or(|p| p == id),
            Scope::Calendar(_) => v["type"].as_str() != Some("seriesMaster"),
        }
    }

    fn prefer(&self) -> Vec<String> {
        let mut p = vec![format!("odata.maxpagesize={}", self.session.config().page_size)];
        if self.kind == Kind::Event {
            p.push("outlook.timezone=\"UTC\"".into());
            p.push("outlook.body-content-type=\"text\"".into());
        }
        p
    }

    pub(crate) fn prefer_refs(p: &[String]) -> Vec<&str> {
        p.iter().map(String::as_str).collect()
    }

    fn batch_headers(&self) -> Vec<(String, String)> {
        let mut p = vec![format!("IdType=\"ImmutableId\"")];
        if self.kind == Kind::Event {
            p.push("outlook.timezone=\"UTC\"".into());
            p.push("outlook.body-content-type=\"text\"".into());
        }
        vec![("Prefer".into(), p.join(", "))]
    }

    /// Batched GET of items by id: `Some(json)` when it exists, `None` when it does not.
    pub(crate) async fn fetch(&self, ids: &[String]) -> Result<Vec<Option<Value>>> {
        let expand = expand_sync_key();
        let reqs: Vec<SubRequest> = ids
            .iter()
            .map(|id| SubRequest {
                method: "GET",
                url: self.session.rel(&self.item_path(id), &[("$expand", &expand)]),
                headers: self.batch_headers(),
                body: None,
            })
            .collect();
        let mut out = vec![];
        for r in self.session.batch(&reqs).await? {
            match r {
                Ok(v) => out.push(Some(v)),
                Err(e) if e.kind() == ErrorKind::NotFound => out.push(None),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Items in scope matching a `$filter` clause list: OR-ed in chunks, the chunks sent
    /// together through `$batch` (one request per 20 chunks), further pages followed.
    async fn query(&self, clauses: &[String]) -> Result<Vec<Value>> {
        let expand = expand_sync_key();
        let prefer = self.prefer();
        // The page size and the kind's preferences, besides the immutable ids of every request.
        let headers = vec![("Prefer".to_owned(), format!("IdType=\"ImmutableId\", {}", prefer.join(", ")))];
        let reqs: Vec<SubRequest> = clauses
            .chunks(FIND_CHUNK)
            .map(|chunk| SubRequest {
                method: "GET",
                url: self.session.rel(&self.list_path(), &[("$filter", &chunk.join(" or ")), ("$expand", &expand)]),
                headers: headers.clone(),
                body: None,
            })
            .collect();
        let mut out: BTreeMap<String, Value> = BTreeMap::new();
        for page in self.session.batch(&reqs).await? {
            let mut page = page?;
            let mut values = match page["value"].take() {
                Value::Array(v) => v,
                _ => return Err(Error::unexpected("graph: a $filter reply has no `value` array")),
            };
            if let Some(next) = page["@odata.nextLink"].as_str() {
                values.extend(self.session.get_all(next, &Self::prefer_refs(&prefer)).await?);
            }
            for v in values {
                if let Some(id) = v["id"].as_str() {
                    out.insert(id.to_owned(), v);
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// Create `items[i]` for each `i` of `which` in one `$batch`, sent non-idempotent.
    async fn post(&self, items: &[NewItem], which: Vec<usize>) -> Result<Vec<Result<Item>>> {
        let reqs: Vec<SubRequest> = which
            .iter()
            .map(|&i| {
                let body = match &items[i].record {
                    Record::Contact(c) => mapping::contact_create(c, &items[i].sync_key),
                    Record::Event(e) => mapping::event_create(e, &items[i].sync_key),
                };
                SubRequest {
                    method: "POST",
                    url: self.session.rel(&self.list_path(), &[]),
                    headers: self.batch_headers(),
                    body: Some(body),
                }
            })
            .collect();
        let res = self.session.batch_opts(&reqs, false).await?;
        Ok(which
            .iter()
            .zip(res)
            .map(|(&i, r)| {
                r.and_then(|v| {
                    self.remember_keyed(&v, Some(&items[i].sync_key));
                    self.item(&v, Some(&items[i].sync_key))
                })
            })
            .collect())
    }

    /// For each `i` of `which`: the item stamped with `items[i]`'s sync key, if it exists.
    async fn landed(&self, items: &[NewItem], which: Vec<usize>) -> Result<Vec<Option<Result<Item>>>> {
        let keys: Vec<&SyncKey> = which.iter().map(|&i| &items[i].sync_key).collect();
        let found = self.by_keys(&keys).await?;
        Ok(keys
            .iter()
            .map(|k| {
                found.get(*k).map(|v| {
                    self.remember(v);
                    self.item(v, Some(k))
                })
            })
            .collect())
    }

    /// The records already stamped with these keys in scope, by key: those this handle knows,
    /// then, unless a full read showed every key of the scope, the others looked up.
    async fn stamped(&self, keys: &[&SyncKey]) -> Result<HashMap<SyncKey, Result<Item>>> {
        let wanted: HashSet<&SyncKey> = keys.iter().copied().collect();
        let known: Vec<(SyncKey, Value)> = self
            .raw
            .lock()
            .expect("raw cache")
            .values()
            .filter_map(|v| mapping::sync_key_of(v).filter(|k| wanted.contains(k)).map(|k| (k, v.clone())))
            .collect();
        let mut out: HashMap<SyncKey, Result<Item>> =
            known.into_iter().map(|(k, v)| (k.clone(), self.item(&v, Some(&k)))).collect();
        let missing: Vec<&SyncKey> = keys.iter().copied().filter(|k| !out.contains_key(*k)).collect();
        if !missing.is_empty() && !self.scanned.load(Ordering::Relaxed) {
            for (k, v) in self.by_keys(&missing).await? {
                self.remember(&v);
                out.insert(k.clone(), self.item(&v, Some(&k)));
            }
        }
        Ok(out)
    }

    /// Items stamped with these sync keys, by key.
    async fn by_keys(&self, keys: &[&SyncKey]) -> Result<HashMap<SyncKey, Value>> {
        let clauses: Vec<String> = keys.iter().map(|k| sync_key_clause(k)).collect();
        let mut out = HashMap::new();
        for v in self.query(&clauses).await? {
            if let Some(k) = mapping::sync_key_of(&v) {
                out.insert(k, v);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Collection for GraphCollection {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch: MAX_BATCH,
            fields: match self.kind {
                Kind::Contact => CONTACT_FIELDS,
                Kind::Event => EVENT_FIELDS,
            },
            incremental: true,
            find_beyond_scope: false,
        }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        let ch = self
            .reader
            .changes(self, cursor)
            .await
            .map_err(|e| e.context(format!("exchange {}s", self.kind.as_str())))?;
        let mut raw = self.raw.lock().expect("raw cache");
        for c in &ch.items {
            if let Change::Removed(id) = c {
                raw.remove(id);
            }
        }
        Ok(ch)
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let mut out = vec![];
        for v in self.fetch(ids).await?.into_iter().flatten() {
            if !self.in_scope(&v) {
                continue;
            }
            self.remember(&v);
            if let Ok(it) = self.item(&v, None) {
                out.push(it);
            }
        }
        Ok(out)
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        let clauses: Vec<String> = keys
            .iter()
            .filter_map(|k| match (k, self.kind) {
                (MatchKey::SyncKey(k), _) => Some(sync_key_clause(k)),
                (MatchKey::Email(e), Kind::Contact) => {
                    Some(format!("emailAddresses/any(a:a/address eq {})", odata_str(e)))
                }
                (MatchKey::ICalUid(u), Kind::Event) => Some(format!("iCalUId eq {}", odata_str(u))),
                // Phone numbers are stored as typed, so only the name is filtered here.
                (MatchKey::NamePhone { name, .. }, Kind::Contact) => Some(name_clause(name)),
                // `start/dateTime` is a zone-less string; the start is checked below.
                (MatchKey::SubjectStart { subject, .. }, Kind::Event) => {
                    Some(format!("subject eq {}", odata_str(subject)))
                }
                _ => None,
            })
            .collect();
        let mut out = vec![];
        for v in self.query(&clauses).await? {
            if !self.in_scope(&v) {
                continue;
            }
            self.remember(&v);
            // The filters are wider than the keys (names, subjects): keep exact matches only.
            match self.item(&v, None) {
                Ok(item) if keys.iter().any(|k| k.matches(&item)) => out.push(Found { item, in_scope: true }),
                _ => {}
            }
        }
        Ok(out)
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len(), MAX_BATCH)?;
        let mut results: Vec<Option<Result<Item>>> = vec![None; items.len()];
        let valid: Vec<usize> = (0..items.len())
            .filter(|&i| match items[i].record.invalid_reason() {
                Some(r) => {
                    results[i] = Some(Err(Error::invalid_item(r)));
                    false
                }
                None if items[i].record.kind() != self.kind => {
                    results[i] = Some(Err(Error::invalid_item("record of the wrong kind")));
                    false
                }
                None => true,
            })
            .collect();
        // The same key twice in one call: the later ones get the first's result.
        let mut first_of: HashMap<&SyncKey, usize> = HashMap::new();
        let mut send: Vec<usize> = vec![];
        for i in valid {
            if let std::collections::hash_map::Entry::Vacant(e) = first_of.entry(&items[i].sync_key) {
                e.insert(i);
                send.push(i);
            }
        }
        // Graph creates are not idempotent: a key already stamped in scope returns its record
        // instead of a second one. The rest goes out; when that batch's reply is lost, its keys
        // are looked up and only what did not land is sent again.
        let keys: Vec<&SyncKey> = send.iter().map(|&i| &items[i].sync_key).collect();
        let mut stamped = self.stamped(&keys).await?;
        send.retain(|&i| match stamped.remove(&items[i].sync_key) {
            Some(r) => {
                results[i] = Some(r);
                false
            }
            None => true,
        });
        let pick = |which: Vec<usize>| which.into_iter().map(|k| send[k]).collect::<Vec<_>>();
        let created = create_reconciled(
            send.len(),
            self.session.config().retry.max_retries,
            |which| self.post(items, pick(which)),
            |which| self.landed(items, pick(which)),
        )
        .await?;
        for (&i, r) in send.iter().zip(created) {
            results[i] = Some(r);
        }
        for (idx, it) in items.iter().enumerate() {
            if results[idx].is_none() {
                let first = first_of.get(&it.sync_key).copied().unwrap_or(idx);
                results[idx] = results[first].clone();
            }
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::unexpected("no result")))).collect())
    }

    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len(), MAX_BATCH)?;
        let mut results: Vec<Option<Result<Item>>> = vec![None; items.len()];
        let mut send = vec![];
        let mut reqs = vec![];
        for (i, u) in items.iter().enumerate() {
            let raw = self.cached(&u.id);
            let mut rec = raw.as_ref().and_then(|v| self.record(v).ok()).unwrap_or_else(|| u.record.clone());
            u.apply_to(&mut rec);
            if let Some(reason) = rec.invalid_reason() {
                results[i] = Some(Err(Error::invalid_item(reason)));
                continue;
            }
            let body = match &rec {
                Record::Contact(c) => mapping::contact_patch(c, raw.as_ref(), &u.fields),
                Record::Event(e) => mapping::event_patch(e, &u.fields),
            };
            reqs.push(SubRequest {
                method: "PATCH",
                url: self.session.rel(&self.item_path(&u.id), &[]),
                headers: [self.batch_headers(), vec![("If-Match".into(), u.version.clone())]].concat(),
                body: Some(body),
            });
            send.push(i);
        }
        for (&i, r) in send.iter().zip(self.session.batch(&reqs).await?) {
            let key = self.cached(&items[i].id).and_then(|c| mapping::sync_key_of(&c));
            results[i] = Some(r.and_then(|v| {
                let it = self.item(&v, key.as_ref())?;
                self.remember_keyed(&v, key.as_ref());
                Ok(it)
            }));
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::unexpected("no result")))).collect())
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        check_batch(ids.len(), MAX_BATCH)?;
        let reqs: Vec<SubRequest> = ids
            .iter()
            .map(|id| SubRequest {
                method: "DELETE",
                url: self.session.rel(&self.item_path(id), &[]),
                headers: vec![],
                body: None,
            })
            .collect();
        Ok(self
            .session
            .batch(&reqs)
            .await?
            .into_iter()
            .zip(ids)
            .map(|(r, id)| {
                self.raw.lock().expect("raw cache").remove(id);
                match r {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .collect())
    }

    fn requests(&self) -> u64 {
        self.session.requests()
    }
}

/// A `$filter` clause for contacts whose name is `name` (normalized "given family"): the display
/// name, or any split of its words into given name and surname.
fn name_clause(name: &str) -> String {
    let words: Vec<&str> = name.split(' ').collect();
    let mut any = vec![format!("displayName eq {}", odata_str(name))];
    for k in 0..=words.len() {
        let (given, family) = (words[..k].join(" "), words[k..].join(" "));
        any.push(match (given.is_empty(), family.is_empty()) {
            (true, _) => format!("surname eq {}", odata_str(&family)),
            (_, true) => format!("givenName eq {}", odata_str(&given)),
            _ => format!("(givenName eq {} and surname eq {})", odata_str(&given), odata_str(&family)),
        });
    }
    format!("({})", any.join(" or "))
}

/// Collapse repeated entries of one delta round (last wins, first position kept).
pub(crate) fn dedup(changes: Vec<Change>) -> Vec<Change> {
    let mut pos: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Change> = vec![];
    for c in changes {
        let id = match &c {
            Change::Upsert(i) => i.id.clone(),
            Change::Removed(id) => id.clone(),
        };
        match pos.get(&id) {
            Some(&p) => out[p] = c,
            None => {
                pos.insert(id, out.len());
                out.push(c);
            }
        }
    }
    out
}
