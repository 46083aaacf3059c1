//! In-memory reference implementations of every port.
//!
//! They define the behaviour the adapters are held to (the `testkit` checks pass on them), and
//! they make engine tests fast and deterministic. A [`MemState`] is one "service": a set of
//! records with versions, scope tags, a change log for cursors, request counting and fault
//! injection. A [`MemCollection`] is a view of a state for one scope (a folder, an owner).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::config::{ContactFilter, Criterion, Rep};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Kind, Record, SyncKey, check_batch, normalize_text};
use crate::port::*;
use crate::report::CycleReport;

static CLOCK: AtomicI64 = AtomicI64::new(1_700_000_000);

/// One stored record of a [`MemState`].
#[derive(Clone, Debug)]
pub struct MemRecord {
    pub id: String,
    pub version: u64,
    pub sync_key: Option<SyncKey>,
    pub modified: DateTime<Utc>,
    pub record: Record,
    /// Scope memberships: `folder`, `calendar`, `owner:<user id>`, …
    pub tags: BTreeSet<String>,
}

impl MemRecord {
    fn item(&self) -> Item {
        Item {
            id: self.id.clone(),
            version: format!("v{}", self.version),
            sync_key: self.sync_key.clone(),
            modified: Some(self.modified),
            record: self.record.clone(),
        }
    }
}

/// A stateful in-memory service: records, change log, request counter, faults.
#[derive(Debug)]
pub struct MemState {
    pub prefix: String,
    pub records: BTreeMap<String, MemRecord>,
    log: Vec<(u64, String)>,
    seq: u64,
    next_id: u64,
    /// Cursors older than this sequence number are expired.
    cursor_floor: u64,
    /// Every request this service received.
    pub requests: u64,
    /// Request numbers (1-based, counted in `requests`) that fail with a temporary transport error.
    pub fail_requests: BTreeSet<u64>,
    /// Items a full or incremental read returns per page (each page is one request).
    pub page_size: usize,
    /// Reject records without a family name, as Salesforce rejects a Contact without LastName.
    pub require_family_name: bool,
    /// Writes (created, updated, deleted records) this service applied.
    pub writes: u64,
    clock: DateTime<Utc>,
}

impl MemState {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            records: BTreeMap::new(),
            log: vec![],
            seq: 0,
            next_id: 0,
            cursor_floor: 0,
            requests: 0,
            fail_requests: BTreeSet::new(),
            page_size: 100,
            require_family_name: false,
            writes: 0,
            clock: DateTime::from_timestamp(1_700_000_000, 0).expect("valid"),
        }
    }

    pub fn shared(prefix: &str) -> Arc<Mutex<MemState>> {
        Arc::new(Mutex::new(Self::new(prefix)))
    }

    fn touch(&mut self, id: &str) {
        self.seq += 1;
        self.log.push((self.seq, id.to_owned()));
        // One clock for every in-memory service, so modification times compare across sides.
        self.clock = DateTime::from_timestamp(CLOCK.fetch_add(1, Ordering::Relaxed), 0).expect("valid");
    }

    /// Seed a record directly (no request counted). Returns its id.
    pub fn insert(&mut self, record: Record, tags: &[&str], sync_key: Option<SyncKey>) -> String {
        self.next_id += 1;
        let id = format!("{}{:06}", self.prefix, self.next_id);
        self.touch(&id);
        self.records.insert(
            id.clone(),
            MemRecord {
                id: id.clone(),
                version: 1,
                sync_key,
                modified: self.clock,
                record,
                tags: tags.iter().map(|t| t.to_string()).collect(),
            },
        );
        id
    }

    /// Edit a record directly, as a user of the service would. Returns false if it is missing.
    pub fn edit(&mut self, id: &str, f: impl FnOnce(&mut Record)) -> bool {
        if !self.records.contains_key(id) {
            return false;
        }
        self.touch(id);
        let clock = self.clock;
        let r = self.records.get_mut(id).expect("checked");
        f(&mut r.record);
        r.version += 1;
        r.modified = clock;
        true
    }

    /// Delete a record directly.
    pub fn remove(&mut self, id: &str) -> bool {
        let had = self.records.remove(id).is_some();
        if had {
            self.touch(id);
        }
        had
    }

    /// Add or remove a scope tag (move into or out of a folder, change owner).
    pub fn set_tag(&mut self, id: &str, tag: &str, on: bool) -> bool {
        let Some(r) = self.records.get_mut(id) else {
            return false;
        };
        let changed = if on { r.tags.insert(tag.to_owned()) } else { r.tags.remove(tag) };
        if changed {
            r.version += 1;
            self.touch(id);
        }
        true
    }

    /// Make every cursor handed out so far expire.
    pub fn expire_cursors(&mut self) {
        self.cursor_floor = self.seq + 1;
    }

    /// Records whose sync key is `key`.
    pub fn by_key(&self, key: &SyncKey) -> Vec<&MemRecord> {
        self.records.values().filter(|r| r.sync_key.as_ref() == Some(key)).collect()
    }

    fn request(&mut self, counter: &AtomicU64) -> Result<()> {
        self.requests += 1;
        counter.fetch_add(1, Ordering::Relaxed);
        if self.fail_requests.contains(&self.requests) {
            return Err(Error::new(ErrorKind::Transport, format!("injected fault on request {}", self.requests))
                .temporary(Some(Duration::ZERO)));
        }
        Ok(())
    }
}

/// Which records of a state a collection sees.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Records carrying this tag.
    Tag(String),
    /// Every record.
    Any,
    /// Records carrying the tag whose canonical fields meet every criterion.
    TagWith(String, Vec<Criterion>),
}

impl Scope {
    fn contains(&self, r: &MemRecord) -> bool {
        match self {
            Scope::Tag(t) => r.tags.contains(t),
            Scope::Any => true,
            Scope::TagWith(t, crit) => {
                let canon = r.record.canon();
                r.tags.contains(t) && crit.iter().all(|c| c.matches(canon.get(&c.field)))
            }
        }
    }
    fn create_tag(&self) -> Option<&str> {
        match self {
            Scope::Tag(t) | Scope::TagWith(t, _) => Some(t),
            Scope::Any => None,
        }
    }
}

/// A view of a [`MemState`]: one folder, calendar or owner scope.
#[derive(Debug)]
pub struct MemCollection {
    pub state: Arc<Mutex<MemState>>,
    pub scope: Scope,
    /// Extra tags put on created records (e.g. the owner on CRM records of a `Visible` view).
    pub create_tags: Vec<String>,
    pub caps: Capabilities,
    /// Report records outside the scope as `outside_scope` skips (as Google's connection list does).
    pub report_out_of_scope: bool,
    requests: AtomicU64,
}

impl MemCollection {
    pub fn new(state: Arc<Mutex<MemState>>, scope: Scope, caps: Capabilities) -> Self {
        Self { state, scope, create_tags: vec![], caps, report_out_of_scope: false, requests: AtomicU64::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().expect("memory state poisoned")
    }
}

#[async_trait]
impl Collection for MemCollection {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        let mut st = self.lock();
        let mut out = Changes { full: cursor.is_none(), ..Default::default() };
        match cursor {
            None => {
                for r in st.records.values() {
                    if self.scope.contains(r) {
                        out.items.push(Change::Upsert(r.item()));
                    } else if self.report_out_of_scope {
                        out.skipped.push(Skip { id: r.id.clone(), reason: "outside_scope".into() });
                    }
                }
            }
            Some(c) => {
                let since: u64 =
                    c.parse().map_err(|_| Error::new(ErrorKind::CursorExpired, format!("unknown cursor {c:?}")))?;
                if since < st.cursor_floor {
                    st.request(&self.requests)?;
                    return Err(Error::new(ErrorKind::CursorExpired, "cursor expired; read everything again"));
                }
                let ids: BTreeSet<&String> = st.log.iter().filter(|(s, _)| *s > since).map(|(_, id)| id).collect();
                for id in ids {
                    match st.records.get(id) {
                        Some(r) if self.scope.contains(r) => out.items.push(Change::Upsert(r.item())),
                        _ => out.items.push(Change::Removed(id.clone())),
                    }
                }
            }
        }
        let pages = out.items.len().div_ceil(st.page_size.max(1)).max(1);
        for _ in 0..pages {
            st.request(&self.requests)?;
        }
        out.cursor = Some(st.seq.to_string());
        Ok(out)
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let mut st = self.lock();
        st.request(&self.requests)?;
        Ok(ids
            .iter()
            .filter_map(|id| st.records.get(id))
            .filter(|r| self.scope.contains(r))
            .map(MemRecord::item)
            .collect())
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        let mut st = self.lock();
        st.request(&self.requests)?;
        Ok(st
            .records
            .values()
            .filter(|r| keys.iter().any(|k| k.matches(&r.item())))
            .filter(|r| self.caps.find_beyond_scope || self.scope.contains(r))
            .map(|r| Found { item: r.item(), in_scope: self.scope.contains(r) })
            .collect())
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        let mut st = self.lock();
        check_batch(items.len(), self.caps.max_batch)?;
        st.request(&self.requests)?;
        let mut out = vec![];
        for it in items {
            // Idempotent within the scope: a copy the rep moved out of scope is not reused.
            if let Some(existing) = st.by_key(&it.sync_key).into_iter().find(|r| self.scope.contains(r)) {
                out.push(Ok(existing.item()));
                continue;
            }
            if let Some(reason) = it.record.invalid_reason() {
                out.push(Err(Error::invalid_item(reason)));
                continue;
            }
            if st.require_family_name
                && it.record.as_contact().is_some_and(|c| c.family_name.as_deref().and_then(normalize_text).is_none())
            {
                out.push(Err(Error::invalid_item("Required fields are missing: [LastName]")));
                continue;
            }
            let mut tags: Vec<&str> = self.scope.create_tag().into_iter().collect();
            tags.extend(self.create_tags.iter().map(String::as_str));
            let id = st.insert(it.record.clone(), &tags, Some(it.sync_key.clone()));
            st.writes += 1;
            out.push(Ok(st.records[&id].item()));
        }
        Ok(out)
    }

    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        let mut st = self.lock();
        check_batch(items.len(), self.caps.max_batch)?;
        st.request(&self.requests)?;
        let mut out = vec![];
        for u in items {
            let Some(r) = st.records.get(&u.id).filter(|r| self.scope.contains(r)) else {
                out.push(Err(Error::not_found(format!("no record {}", u.id))));
                continue;
            };
            if format!("v{}", r.version) != u.version {
                out.push(Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("{} changed since v{}", u.id, u.version),
                )));
                continue;
            }
            let mut rec = r.record.clone();
            u.apply_to(&mut rec);
            if let Some(reason) = rec.invalid_reason() {
                out.push(Err(Error::invalid_item(reason)));
                continue;
            }
            st.edit(&u.id, |r| *r = rec);
            st.writes += 1;
            out.push(Ok(st.records[&u.id].item()));
        }
        Ok(out)
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        let mut st = self.lock();
        check_batch(ids.len(), self.caps.max_batch)?;
        st.request(&self.requests)?;
        Ok(ids
            .iter()
            .map(|id| {
                if st.remove(id) {
                    st.writes += 1;
                }
                Ok(())
            })
            .collect())
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A mailbox of the in-memory provider: contacts (in scope when tagged `folder`) and events
/// (tagged `calendar`).
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub contacts: Arc<Mutex<MemState>>,
    pub events: Arc<Mutex<MemState>>,
}

/// The in-memory provider: mailboxes created on first use.
#[derive(Debug)]
pub struct MemProvider {
    name: String,
    mailboxes: Mutex<HashMap<String, Mailbox>>,
    pub max_batch: usize,
}

impl MemProvider {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), mailboxes: Mutex::new(HashMap::new()), max_batch: 20 }
    }
    /// The mailbox's state (created empty on first use).
    pub fn mailbox(&self, mailbox: &str) -> Mailbox {
        let mut m = self.mailboxes.lock().expect("poisoned");
        m.entry(mailbox.to_owned())
            .or_insert_with(|| Mailbox { contacts: MemState::shared("pc"), events: MemState::shared("pe") })
            .clone()
    }
}

#[async_trait]
impl Provider for MemProvider {
    fn name(&self) -> &str {
        &self.name
    }
    async fn collection(&self, rep: &Rep, kind: Kind, _access: &Access) -> Result<Arc<dyn Collection>> {
        let mb = self.mailbox(&rep.mailbox);
        let caps = Capabilities {
            max_batch: self.max_batch,
            fields: kind.fields(),
            incremental: true,
            find_beyond_scope: false,
        };
        let coll = match kind {
            Kind::Contact => {
                let mut c = MemCollection::new(mb.contacts, Scope::Tag("folder".into()), caps);
                c.report_out_of_scope = true;
                c
            }
            Kind::Event => MemCollection::new(mb.events, Scope::Tag("calendar".into()), caps),
        };
        Ok(Arc::new(coll))
    }
    /// Every non-empty grant is good in memory.
    async fn verify_grant(&self, _rep: &Rep, grant: &SecretString) -> Result<()> {
        use secrecy::ExposeSecret;
        if grant.expose_secret().trim().is_empty() {
            return Err(Error::new(ErrorKind::GrantRevoked, "an empty grant"));
        }
        Ok(())
    }
}

/// The in-memory CRM: one org-wide contact and event store, users and their permissions.
#[derive(Debug)]
pub struct MemCrm {
    pub contacts: Arc<Mutex<MemState>>,
    pub events: Arc<Mutex<MemState>>,
    users: Mutex<Vec<(CrmUser, Vec<String>)>>,
    pub max_batch: usize,
    /// Contact fields the CRM stores (default: all).
    pub contact_fields: &'static [&'static str],
}

impl Default for MemCrm {
    fn default() -> Self {
        let contacts = MemState::shared("003");
        contacts.lock().expect("fresh").require_family_name = true;
        Self {
            contacts,
            events: MemState::shared("00U"),
            users: Mutex::new(vec![]),
            max_batch: 200,
            contact_fields: Kind::Contact.fields(),
        }
    }
}

impl MemCrm {
    /// Add a user with permissions; returns the user id.
    pub fn add_user(&self, name: &str, permissions: &[&str]) -> String {
        let mut u = self.users.lock().expect("poisoned");
        let id = format!("005{:06}", u.len() + 1);
        u.push((
            CrmUser { id: id.clone(), name: name.to_owned(), email: None },
            permissions.iter().map(|p| p.to_string()).collect(),
        ));
        id
    }
    /// The owner tag records of `user_id` carry.
    pub fn owner_tag(user_id: &str) -> String {
        format!("owner:{user_id}")
    }
}

#[async_trait]
impl Crm for MemCrm {
    async fn collection(&self, rep: &Rep, kind: Kind, _access: &Access) -> Result<Arc<dyn Collection>> {
        let owner = Self::owner_tag(&rep.crm_user_id);
        let (state, scope, fields) = match kind {
            Kind::Contact => {
                let scope = match &rep.config.contacts.filter {
                    ContactFilter::Owned => Scope::Tag(owner.clone()),
                    ContactFilter::Visible => Scope::Any,
                    ContactFilter::Criteria(c) => Scope::TagWith(owner.clone(), c.clone()),
                };
                (self.contacts.clone(), scope, self.contact_fields)
            }
            Kind::Event => (self.events.clone(), Scope::Tag(owner.clone()), Kind::Event.fields()),
        };
        let caps = Capabilities {
            max_batch: self.max_batch,
            fields,
            incremental: true,
            find_beyond_scope: kind == Kind::Contact,
        };
        let mut c = MemCollection::new(state, scope, caps);
        c.create_tags = vec![owner];
        Ok(Arc::new(c))
    }

    async fn find_users(&self, name: &str) -> Result<Vec<CrmUser>> {
        let needle = name.to_lowercase();
        Ok(self
            .users
            .lock()
            .expect("poisoned")
            .iter()
            .filter(|(u, _)| u.name.to_lowercase().contains(&needle))
            .map(|(u, _)| u.clone())
            .collect())
    }

    async fn permissions(&self, user_id: &str) -> Result<Vec<String>> {
        self.users
            .lock()
            .expect("poisoned")
            .iter()
            .find(|(u, _)| u.id == user_id)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| Error::not_found(format!("no CRM user {user_id}")))
    }
}

#[derive(Debug, Default)]
struct RepRow {
    status: RepStatus,
    grant: Option<SecretString>,
    due: Option<DateTime<Utc>>,
    lease: Option<(String, DateTime<Utc>)>,
    /// "Sync now" asked since the lease was taken.
    asked: Option<DateTime<Utc>>,
    /// The last [`HISTORY_KEPT`] reports, oldest first.
    history: std::collections::VecDeque<CycleReport>,
}

#[derive(Debug, Default)]
struct StoreInner {
    reps: BTreeMap<String, RepRow>,
    links: BTreeMap<(String, Kind, SyncKey), Link>,
    cursors: BTreeMap<(String, Kind), Cursors>,
    errors: BTreeMap<(String, Kind, Side, String), ItemError>,
    resets: Vec<ResetRecord>,
    refusals: Vec<Refusal>,
    held: BTreeMap<(String, Kind, SyncKey), HeldDelete>,
    /// What each rep's last reset removed, while it can be undone.
    undo: BTreeMap<String, ResetUndo>,
    /// Every link key ever upserted per rep, with the number of upserts (tests inspect it).
    link_writes: u64,
}

use crate::model::Side;

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<StoreInner>,
}

impl MemStore {
    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.inner.lock().expect("store poisoned")
    }
    /// Link upserts performed so far (for tests).
    pub fn link_writes(&self) -> u64 {
        self.lock().link_writes
    }
}

fn row<'a>(inner: &'a mut StoreInner, rep: &str) -> &'a mut RepRow {
    inner.reps.entry(rep.to_owned()).or_insert_with(|| RepRow {
        status: RepStatus { rep: rep.to_owned(), ..Default::default() },
        ..Default::default()
    })
}

fn check_epoch(inner: &mut StoreInner, rep: &str, epoch: u64) -> Result<()> {
    let current = row(inner, rep).status.epoch;
    if current != epoch {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("rep {rep} was reset while this cycle ran (epoch {epoch}, now {current}); nothing written"),
        ));
    }
    Ok(())
}

/// Change the reset of `rep` at `epoch` (its audit record and, when it is the last, the status
/// copy) with `f`; `f` says whether it changed anything. Returns what `f` said.
fn edit_reset(g: &mut StoreInner, rep: &str, epoch: u64, f: impl Fn(&mut ResetRecord) -> bool) -> bool {
    let mut changed = false;
    if let Some(r) = g.resets.iter_mut().find(|r| r.rep == rep && r.epoch == epoch) {
        changed = f(r);
    }
    if let Some(r) = row(g, rep).status.last_reset.as_mut().filter(|r| r.epoch == epoch) {
        changed = f(r) || changed;
    }
    changed
}

#[async_trait]
impl SyncState for MemStore {
    async fn status(&self, rep: &str) -> Result<RepStatus> {
        Ok(row(&mut self.lock(), rep).status.clone())
    }

    async fn statuses(&self) -> Result<Vec<RepStatus>> {
        Ok(self.lock().reps.values().map(|r| r.status.clone()).collect())
    }

    async fn set_state(
        &self,
        rep: &str,
        epoch: u64,
        state: RepState,
        error: Option<String>,
        report: Option<&CycleReport>,
    ) -> Result<()> {
        let mut g = self.lock();
        check_epoch(&mut g, rep, epoch)?;
        let row = row(&mut g, rep);
        let st = &mut row.status;
        st.state = state;
        st.last_error = error.map(|e| storable_text(&e).into_owned());
        if let Some(r) = report {
            st.last_report = Some(r.clone());
            if r.error.is_none() {
                st.last_success = r.finished;
            }
            row.history.push_back(r.clone());
            while row.history.len() > HISTORY_KEPT {
                row.history.pop_front();
            }
        }
        Ok(())
    }

    async fn links(&self, rep: &str, kind: Kind) -> Result<Vec<Link>> {
        Ok(self.lock().links.iter().filter(|((r, k, _), _)| r == rep && *k == kind).map(|(_, l)| l.clone()).collect())
    }

    async fn cursors(&self, rep: &str, kind: Kind) -> Result<Cursors> {
        Ok(self.lock().cursors.get(&(rep.to_owned(), kind)).cloned().unwrap_or_default())
    }

    async fn item_errors(&self, rep: &str, kind: Kind) -> Result<Vec<ItemError>> {
        Ok(self
            .lock()
            .errors
            .iter()
            .filter(|((r, k, _, _), _)| r == rep && *k == kind)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn commit(&self, rep: &str, epoch: u64, kind: Kind, batch: &LinkBatch) -> Result<()> {
        let batch = &*batch.storable();
        let mut g = self.lock();
        check_epoch(&mut g, rep, epoch)?;
        for key in &batch.remove {
            g.links.remove(&(rep.to_owned(), kind, key.clone()));
        }
        for l in &batch.upsert {
            g.link_writes += 1;
            g.links.insert((rep.to_owned(), kind, l.key.clone()), l.clone());
        }
        for (side, id) in &batch.clear_errors {
            g.errors.remove(&(rep.to_owned(), kind, *side, id.clone()));
        }
        for e in &batch.errors {
            let k = (rep.to_owned(), kind, e.side, e.id.clone());
            let merged = match g.errors.get(&k) {
                Some(old) => ItemError { attempts: old.attempts + 1, first_seen: old.first_seen, ..e.clone() },
                None => e.clone(),
            };
            g.errors.insert(k, merged);
        }
        if let Some(c) = &batch.cursors {
            g.cursors.insert((rep.to_owned(), kind), c.clone());
        }
        for h in &batch.hold {
            g.held.insert((rep.to_owned(), kind, h.key.clone()), h.clone());
        }
        for k in &batch.release {
            g.held.remove(&(rep.to_owned(), kind, k.clone()));
        }
        Ok(())
    }

    async fn reset(&self, record: &ResetRecord, state: RepState, drop_grant: bool) -> Result<BTreeMap<String, u64>> {
        let mut g = self.lock();
        let rep = record.rep.clone();
        let mut removed = BTreeMap::new();
        let mut undo = ResetUndo { state: row(&mut g, &rep).status.state, ..Default::default() };
        for &kind in record.scope.kinds() {
            let of = |r: &String, k: &Kind| r == &rep && *k == kind;
            let gone: Vec<_> = g
                .links
                .iter()
                .filter(|((r, k, _), l)| of(r, k) && l.state != LinkState::Suppressed)
                .map(|(key, _)| key.clone())
                .collect();
            removed.insert(kind.as_str().to_owned(), gone.len() as u64);
            undo.links.extend(gone.iter().filter_map(|key| g.links.remove(key)));
            if let Some(c) = g.cursors.remove(&(rep.clone(), kind)) {
                undo.cursors.push((kind, c));
            }
            let errors: Vec<_> = g.errors.keys().filter(|(r, k, _, _)| of(r, k)).cloned().collect();
            undo.item_errors.extend(errors.iter().filter_map(|key| g.errors.remove(key)));
            let held: Vec<_> = g.held.keys().filter(|(r, k, _)| of(r, k)).cloned().collect();
            undo.held.extend(held.iter().filter_map(|key| g.held.remove(key)));
        }
        g.undo.insert(rep.clone(), undo);
        let epoch = row(&mut g, &rep).status.epoch + 1;
        let rec = ResetRecord { links_removed: removed.clone(), epoch, undoable: true, ..record.clone() };
        g.resets.iter_mut().filter(|r| r.rep == rep).for_each(|r| r.undoable = false);
        g.resets.push(rec.clone());
        let r = row(&mut g, &rep);
        r.status.epoch = epoch;
        r.status.state = state;
        r.status.last_reset = Some(rec);
        if drop_grant {
            r.grant = None;
        }
        Ok(removed)
    }

    async fn resets(&self, rep: &str) -> Result<Vec<ResetRecord>> {
        Ok(self.lock().resets.iter().filter(|r| r.rep == rep).cloned().collect())
    }

    async fn history(&self, rep: &str, n: usize) -> Result<Vec<CycleReport>> {
        Ok(self.lock().reps.get(rep).map(|r| r.history.iter().rev().take(n).cloned().collect()).unwrap_or_default())
    }

    async fn refuse(&self, refusal: &Refusal) -> Result<()> {
        let mut r = refusal.clone();
        for s in [&mut r.admin_id, &mut r.admin_name, &mut r.action, &mut r.reason] {
            *s = storable_text(s).into_owned();
        }
        r.rep = r.rep.map(|s| storable_text(&s).into_owned());
        self.lock().refusals.push(r);
        Ok(())
    }

    async fn refusals(&self) -> Result<Vec<Refusal>> {
        let mut all = self.lock().refusals.clone();
        all.sort_by_key(|r| r.at);
        Ok(all)
    }

    async fn seal_reset(&self, rep: &str, epoch: u64) -> Result<()> {
        let mut g = self.lock();
        if edit_reset(&mut g, rep, epoch, |r| std::mem::replace(&mut r.undoable, false)) {
            g.undo.remove(rep);
        }
        Ok(())
    }

    async fn verify_reset(&self, rep: &str, epoch: u64, verification: &Verification) -> Result<()> {
        edit_reset(&mut self.lock(), rep, epoch, |r| {
            r.verification.get_or_insert_with(|| verification.clone());
            true
        });
        Ok(())
    }

    async fn undo_reset(&self, rep: &str, by: &Actor) -> Result<ResetRecord> {
        let mut g = self.lock();
        let last = row(&mut g, rep).status.last_reset.clone();
        let last = undo_refusal(rep, last.as_ref())?;
        let undo = g.undo.remove(rep).ok_or_else(|| Error::store(format!("rep {rep}: the undo data is missing")))?;
        for l in undo.links {
            g.links.insert((rep.to_owned(), l.kind, l.key.clone()), l);
        }
        for (kind, c) in undo.cursors {
            g.cursors.insert((rep.to_owned(), kind), c);
        }
        for e in undo.item_errors {
            g.errors.insert((rep.to_owned(), e.kind, e.side, e.id.clone()), e);
        }
        for h in undo.held {
            g.held.insert((rep.to_owned(), h.kind, h.key.clone()), h);
        }
        edit_reset(&mut g, rep, last.epoch, |r| {
            r.undoable = false;
            r.undone = Some(by.clone());
            true
        });
        let r = row(&mut g, rep);
        r.status.epoch += 1;
        r.status.state = undo.state;
        Ok(r.status.last_reset.clone().expect("checked above"))
    }

    async fn held(&self, rep: &str, kind: Kind) -> Result<Vec<HeldDelete>> {
        let g = self.lock();
        let mut out: Vec<HeldDelete> =
            g.held.iter().filter(|((r, k, _), _)| r == rep && *k == kind).map(|(_, h)| h.clone()).collect();
        out.sort_by(|a, b| (a.since, &a.key).cmp(&(b.since, &b.key)));
        Ok(out)
    }

    async fn judge_held(&self, rep: &str, verdict: Verdict) -> Result<u64> {
        let mut g = self.lock();
        let mut kinds = BTreeSet::new();
        for ((r, kind, _), h) in g.held.iter_mut().filter(|((r, _, _), h)| r == rep && h.verdict == Verdict::Held) {
            let _ = r;
            h.verdict = verdict;
            kinds.insert(*kind);
        }
        let n = g.held.iter().filter(|((r, k, _), h)| r == rep && kinds.contains(k) && h.verdict == verdict).count();
        for kind in kinds {
            g.cursors.remove(&(rep.to_owned(), kind));
        }
        Ok(n as u64)
    }

    async fn grant(&self, rep: &str) -> Result<Option<SecretString>> {
        Ok(row(&mut self.lock(), rep).grant.clone())
    }

    async fn set_grant(&self, rep: &str, grant: Option<&SecretString>) -> Result<()> {
        row(&mut self.lock(), rep).grant = grant.cloned();
        Ok(())
    }
}

#[async_trait]
impl Leases for MemStore {
    async fn schedule(&self, rep: &str, due: DateTime<Utc>) -> Result<()> {
        let mut g = self.lock();
        let r = row(&mut g, rep);
        r.due.get_or_insert(due);
        Ok(())
    }

    async fn claim_due_reps(&self, worker: &str, n: usize, lease: Duration, now: DateTime<Utc>) -> Result<Vec<String>> {
        let until = lease_end(now, lease)?;
        let mut g = self.lock();
        let mut out = vec![];
        for (rep, r) in g.reps.iter_mut() {
            if out.len() >= n {
                break;
            }
            let due = r.due.is_some_and(|d| d <= now);
            let free = r.lease.as_ref().is_none_or(|(_, exp)| *exp <= now);
            if due && free {
                r.lease = Some((worker.to_owned(), until));
                r.asked = None;
                out.push(rep.clone());
            }
        }
        Ok(out)
    }

    async fn acquire_lease(&self, holder: &str, rep: &str, lease: Duration, now: DateTime<Utc>) -> Result<Acquire> {
        let until = lease_end(now, lease)?;
        let mut g = self.lock();
        let r = row(&mut g, rep);
        if let Some((h, exp)) = &r.lease
            && h != holder
            && *exp > now
        {
            return Ok(Acquire::Busy(LeaseHolder { holder: h.clone(), until: *exp }));
        }
        r.due.get_or_insert(now);
        r.lease = Some((holder.to_owned(), until));
        r.asked = None;
        Ok(Acquire::Acquired)
    }

    async fn lease(&self, rep: &str, now: DateTime<Utc>) -> Result<Option<LeaseHolder>> {
        let g = self.lock();
        let held = g.reps.get(rep).and_then(|r| r.lease.as_ref()).filter(|(_, until)| *until > now);
        Ok(held.map(|(holder, until)| LeaseHolder { holder: holder.clone(), until: *until }))
    }

    async fn due(&self, rep: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.lock().reps.get(rep).and_then(|r| r.due))
    }

    async fn sync_now(&self, rep: &str, now: DateTime<Utc>) -> Result<()> {
        let mut g = self.lock();
        let r = row(&mut g, rep);
        r.due = Some(r.due.map_or(now, |d| d.min(now)));
        r.asked = Some(now);
        Ok(())
    }

    async fn renew_lease(&self, worker: &str, rep: &str, lease: Duration, now: DateTime<Utc>) -> Result<()> {
        let until = lease_end(now, lease)?;
        let mut g = self.lock();
        let r = row(&mut g, rep);
        match &r.lease {
            Some((w, exp)) if w == worker && *exp > now => {
                r.lease = Some((worker.to_owned(), until));
                Ok(())
            }
            _ => Err(Error::new(ErrorKind::Conflict, format!("worker {worker} no longer holds rep {rep}"))),
        }
    }

    async fn release(&self, worker: &str, rep: &str, next_due: Option<DateTime<Utc>>) -> Result<()> {
        let mut g = self.lock();
        let r = row(&mut g, rep);
        match &r.lease {
            Some((w, _)) if w == worker => {
                r.lease = None;
                if let Some(asked) = r.asked.take() {
                    r.due = Some(asked);
                } else if next_due.is_some() {
                    r.due = next_due;
                }
                Ok(())
            }
            _ => Err(Error::new(ErrorKind::Conflict, format!("worker {worker} does not hold rep {rep}"))),
        }
    }
}
