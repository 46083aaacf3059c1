//! One kind of one rep: read both sides, match unlinked items, decide, apply in batches,
//! persist links and cursors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tracing::{debug, info};

use super::Engine;
use super::decide::{Decision, State, decide};
use crate::config::{KindPolicy, Rep, Window};
use crate::error::{Error, ErrorKind, Result};
use crate::memory::full_name;
use crate::model::{Canon, Event, Kind, Record, Side, SyncKey, normalize_phone};
use crate::port::*;
use crate::report::{CycleReport, ItemErrorReport, KindReport};

/// What one side's read left us with, after filters and validation.
#[derive(Debug, Default)]
struct SideRead {
    full: bool,
    items: BTreeMap<String, Item>,
    removed: BTreeSet<String>,
    /// Read, but left out by a filter (reason).
    filtered: BTreeMap<String, &'static str>,
    /// Could not be read or is invalid: its link (if any) is left untouched this cycle.
    failed: BTreeSet<String>,
    cursor: Option<String>,
}

/// One pair to act on.
#[derive(Debug)]
struct Entry {
    /// The key of the link or suppression this entry replaces, if any.
    old_key: Option<SyncKey>,
    link: Option<Link>,
    p: Option<Item>,
    c: Option<Item>,
    decision: Decision,
    /// Made by matching two existing records (counts as `linked`).
    matched: bool,
    /// For `Suppress`: the side that is gone (its id is dropped from the suppression).
    gone: Option<Side>,
    /// The link is dropped and its surviving item matched again like an unlinked one.
    release: bool,
    // Runtime state while applying.
    pending: u8,
    failed: bool,
    new_p: Option<Item>,
    new_c: Option<Item>,
}

impl Entry {
    fn new(old_key: Option<SyncKey>, link: Option<Link>, p: Option<Item>, c: Option<Item>, decision: Decision) -> Self {
        Self {
            old_key,
            link,
            p,
            c,
            decision,
            matched: false,
            gone: None,
            release: false,
            pending: 0,
            failed: false,
            new_p: None,
            new_c: None,
        }
    }
    fn item(&self, side: Side) -> Option<&Item> {
        match side {
            Side::Provider => self.p.as_ref(),
            Side::Crm => self.c.as_ref(),
        }
    }
    /// (id, version) of a side: the fresh write result, else the read item, else the link.
    fn reference(&self, side: Side) -> Option<(String, String)> {
        let fresh = match side {
            Side::Provider => self.new_p.as_ref(),
            Side::Crm => self.new_c.as_ref(),
        };
        if let Some(i) = fresh.or(self.item(side)) {
            return Some((i.id.clone(), i.version.clone()));
        }
        self.link.as_ref().map(|l| match side {
            Side::Provider => (l.provider_id.clone(), l.provider_version.clone()),
            Side::Crm => (l.crm_id.clone(), l.crm_version.clone()),
        })
    }
}

/// A write queue: the side written and the op rank (create, update, delete).
type Slot = (Side, u8);

#[derive(Debug)]
enum Op {
    Create(NewItem),
    Update(Update),
    Delete(String),
}

/// Index of one side's candidates for matching.
#[derive(Debug, Default)]
struct Index {
    by_stamp: HashMap<String, Vec<String>>,
    by_derived: HashMap<String, Vec<String>>,
    by_email: HashMap<String, Vec<String>>,
    by_name_phone: HashMap<(String, String), Vec<String>>,
    by_ical: HashMap<String, Vec<String>>,
    by_subject_start: HashMap<(String, String), Vec<String>>,
}

fn subject_start(r: &Record) -> Option<(String, String)> {
    let c = r.canon();
    Some((c.get("subject")?.to_lowercase(), c.get("start")?.to_owned()))
}

fn name_phones(r: &Record) -> Vec<(String, String)> {
    let (Some(name), Some(c)) = (full_name(r), r.as_contact()) else {
        return vec![];
    };
    [&c.phone, &c.mobile]
        .iter()
        .filter_map(|p| p.as_deref().and_then(normalize_phone))
        .map(|p| (name.clone(), p))
        .collect()
}

impl Index {
    fn add(&mut self, rep: &str, side: Side, item: &Item) {
        let id = item.id.clone();
        let kind = item.record.kind();
        if let Some(k) = &item.sync_key {
            self.by_stamp.entry(k.0.clone()).or_default().push(id.clone());
        }
        self.by_derived.entry(SyncKey::derive(rep, kind, side, &item.id).0).or_default().push(id.clone());
        match kind {
            Kind::Contact => {
                for e in item.record.emails() {
                    self.by_email.entry(e).or_default().push(id.clone());
                }
                for np in name_phones(&item.record) {
                    self.by_name_phone.entry(np).or_default().push(id.clone());
                }
            }
            Kind::Event => {
                if let Some(u) = item.record.as_event().and_then(|e| e.ical_uid.clone()) {
                    self.by_ical.entry(u).or_default().push(id.clone());
                }
                if let Some(ss) = subject_start(&item.record) {
                    self.by_subject_start.entry(ss).or_default().push(id);
                }
            }
        }
    }

    /// Candidate ids on this (other) side for `item` of `side`, best first:
    /// sync key → e-mail → name+phone (contacts); sync key → iCalUID → subject+start (events).
    fn candidates(&self, rep: &str, side: Side, item: &Item) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        let mut push = |ids: Option<&Vec<String>>| out.extend(ids.into_iter().flatten().cloned());
        if let Some(k) = &item.sync_key {
            push(self.by_derived.get(&k.0));
        }
        push(self.by_stamp.get(&SyncKey::derive(rep, item.record.kind(), side, &item.id).0));
        match item.record.kind() {
            Kind::Contact => {
                for e in item.record.emails() {
                    push(self.by_email.get(&e));
                }
                for np in name_phones(&item.record) {
                    push(self.by_name_phone.get(&np));
                }
            }
            Kind::Event => {
                if let Some(u) = item.record.as_event().and_then(|e| e.ical_uid.as_ref()) {
                    push(self.by_ical.get(u));
                }
                if let Some(ss) = subject_start(&item.record) {
                    push(self.by_subject_start.get(&ss));
                }
            }
        }
        let mut seen = BTreeSet::new();
        out.retain(|id| seen.insert(id.clone()));
        out
    }
}

/// The keys to look `item` (of `side`) up by on the other side.
fn match_keys(rep: &str, side: Side, item: &Item) -> Vec<MatchKey> {
    let mut keys = vec![MatchKey::SyncKey(SyncKey::derive(rep, item.record.kind(), side, &item.id))];
    match &item.record {
        Record::Contact(_) => {
            keys.extend(item.record.emails().into_iter().map(MatchKey::Email));
            keys.extend(name_phones(&item.record).into_iter().map(|(name, phone)| MatchKey::NamePhone { name, phone }));
        }
        Record::Event(e) => {
            keys.extend(e.ical_uid.clone().map(MatchKey::ICalUid));
            keys.extend(subject_start(&item.record).map(|(subject, start)| MatchKey::SubjectStart { subject, start }));
        }
    }
    keys
}

/// Whether a snapshot's event times overlap the window (events whose snapshot left the window
/// are unlinked quietly instead of being treated as deleted).
fn canon_in_window(canon: &Canon, window: &Window) -> bool {
    let mut rec = Record::Event(Event::new("", window.start, window.start));
    for f in ["start", "end"] {
        rec.set_field(f, canon.get(f).map(str::to_owned));
    }
    rec.as_event().is_some_and(|e| window.contains(e))
}

/// One value per side.
#[derive(Debug, Default)]
struct Sides<T> {
    provider: T,
    crm: T,
}

impl<T> Sides<T> {
    fn get(&self, side: Side) -> &T {
        match side {
            Side::Provider => &self.provider,
            Side::Crm => &self.crm,
        }
    }
    fn get_mut(&mut self, side: Side) -> &mut T {
        match side {
            Side::Provider => &mut self.provider,
            Side::Crm => &mut self.crm,
        }
    }
}

/// A candidate record on the other side.
#[derive(Debug)]
struct Cand {
    item: Item,
    in_scope: bool,
}

enum Choice {
    Pair(String),
    Skip(&'static str),
    None,
}

struct Run<'a> {
    rep: &'a Rep,
    kind: Kind,
    epoch: u64,
    store: &'a dyn Store,
    prov: &'a dyn Collection,
    crm: &'a dyn Collection,
    policy: KindPolicy,
    fields: Vec<&'static str>,
    window: Window,
    now: DateTime<Utc>,
    kr: &'a mut KindReport,
    /// Item errors waiting for the next commit.
    errors: Vec<ItemError>,
    /// (side, id) of every error recorded this cycle.
    failed_now: BTreeSet<(Side, String)>,
}

pub(super) async fn sync_kind(
    engine: &Engine,
    rep: &Rep,
    kind: Kind,
    epoch: u64,
    provider: &dyn Provider,
    access: &Access,
    report: &mut CycleReport,
) -> Result<()> {
    let prov = provider
        .collection(rep, kind, access)
        .await
        .map_err(|e| e.context(format!("{} {}s", provider.name(), kind.as_str())))?;
    let crm = match engine.crm().collection(rep, kind, access).await {
        Ok(c) => c,
        Err(e) => {
            report.requests.provider += prov.requests();
            return Err(e.context(format!("crm {}s", kind.as_str())));
        }
    };
    let (pcaps, ccaps) = (prov.capabilities(), crm.capabilities());
    let fields =
        kind.fields().iter().copied().filter(|f| pcaps.fields.contains(f) && ccaps.fields.contains(f)).collect();
    let mut kr = std::mem::take(report.kind_mut(kind));
    let mut run = Run {
        rep,
        kind,
        epoch,
        store: engine.store().as_ref(),
        prov: prov.as_ref(),
        crm: crm.as_ref(),
        policy: rep.config.policy(kind),
        fields,
        window: rep.config.window(engine.now()),
        now: engine.now(),
        kr: &mut kr,
        errors: vec![],
        failed_now: BTreeSet::new(),
    };
    let result = run.go().await;
    *report.kind_mut(kind) = kr;
    report.requests.provider += prov.requests();
    report.requests.crm += crm.requests();
    result
}

impl<'a> Run<'a> {
    fn coll(&self, side: Side) -> &'a dyn Collection {
        match side {
            Side::Provider => self.prov,
            Side::Crm => self.crm,
        }
    }

    fn fail(&mut self, side: Side, id: &str, reason: String) {
        debug!(side = side.as_str(), id, %reason, "item error");
        self.kr.errors += 1;
        self.kr.item_errors.push(ItemErrorReport { side: side.as_str().into(), id: id.into(), reason: reason.clone() });
        self.watch(side, id, reason);
    }

    /// Skip an item because of what matched it on the other side, and look at it again next
    /// cycle (by id, like an item error, but not counted as one): the match may go away.
    fn skip_and_watch(&mut self, side: Side, id: &str, reason: &'static str) {
        self.kr.skip(reason);
        self.watch(side, id, format!("skipped: {reason}"));
    }

    /// Put an item on the retry-by-id list of the store.
    fn watch(&mut self, side: Side, id: &str, reason: String) {
        self.failed_now.insert((side, id.to_owned()));
        self.errors.push(ItemError {
            kind: self.kind,
            side,
            id: id.to_owned(),
            reason,
            attempts: 1,
            first_seen: self.now,
            last_seen: self.now,
        });
    }

    fn event_skip(&self, side: Side, e: &Event) -> Option<&'static str> {
        if !self.window.contains(e) {
            return Some("outside_window");
        }
        if side == Side::Crm {
            return None;
        }
        let cfg = &self.rep.config.events;
        if cfg.exclude_private && e.private {
            return Some("private");
        }
        if e.categories.iter().any(|c| c.trim().eq_ignore_ascii_case(cfg.no_sync_marker.trim())) {
            return Some("no_sync_marker");
        }
        cfg.filters.iter().find_map(|f| f.skip(e))
    }

    fn classify(&mut self, side: Side, sr: &mut SideRead, item: Item) {
        sr.removed.remove(&item.id);
        if item.record.kind() != self.kind {
            sr.failed.insert(item.id.clone());
            return self.fail(
                side,
                &item.id,
                format!("expected a {}, got a {}", self.kind.as_str(), item.record.kind().as_str()),
            );
        }
        if let Some(e) = item.record.as_event() {
            if e.cancelled {
                sr.items.remove(&item.id);
                sr.removed.insert(item.id);
                return;
            }
            if let Some(reason) = self.event_skip(side, e) {
                self.kr.skip(reason);
                sr.filtered.insert(item.id, reason);
                return;
            }
        }
        if let Some(reason) = item.record.invalid_reason() {
            sr.failed.insert(item.id.clone());
            return self.fail(side, &item.id, reason);
        }
        sr.items.insert(item.id.clone(), item);
    }

    async fn read(&mut self, side: Side, cursor: Option<&str>) -> Result<SideRead> {
        let coll = self.coll(side);
        let ch = match cursor {
            Some(c) => match coll.changes(Some(c)).await {
                Err(e) if e.kind() == ErrorKind::CursorExpired => {
                    info!(side = side.as_str(), "cursor expired; reading everything");
                    coll.changes(None).await?
                }
                other => other?,
            },
            None => coll.changes(None).await?,
        };
        let mut sr = SideRead { full: ch.full, cursor: ch.cursor, ..Default::default() };
        for s in &ch.skipped {
            self.kr.skip(&s.reason);
        }
        for f in ch.failures {
            sr.failed.insert(f.id.clone());
            self.fail(side, &f.id, f.error.to_string());
        }
        for change in ch.items {
            match change {
                Change::Upsert(item) => self.classify(side, &mut sr, item),
                Change::Removed(id) => {
                    sr.items.remove(&id);
                    sr.filtered.remove(&id);
                    sr.removed.insert(id);
                }
            }
        }
        Ok(sr)
    }

    /// Re-read by id the items that failed last cycle (incremental reads would not see them).
    async fn retry_failed(&mut self, side: Side, sr: &mut SideRead, old: &[ItemError]) -> Result<()> {
        if sr.full {
            return Ok(());
        }
        let ids: Vec<String> = old
            .iter()
            .filter(|e| e.side == side)
            .map(|e| e.id.clone())
            .filter(|id| {
                !sr.items.contains_key(id)
                    && !sr.removed.contains(id)
                    && !sr.failed.contains(id)
                    && !sr.filtered.contains_key(id)
            })
            .collect();
        let coll = self.coll(side);
        for chunk in ids.chunks(coll.capabilities().max_batch.max(1)) {
            let got = coll.get_many(chunk).await?;
            let found: BTreeSet<String> = got.iter().map(|i| i.id.clone()).collect();
            for item in got {
                self.classify(side, sr, item);
            }
            sr.removed.extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
        }
        Ok(())
    }

    /// A suppressed pair whose provider item passes the filters again is matched again; its CRM
    /// record may not be in an incremental read (and may no longer match by content), so read
    /// it by the id the suppression remembers.
    async fn read_partners_of_returning(&mut self, links: &[Link], p: &SideRead, c: &mut SideRead) -> Result<()> {
        let ids: Vec<String> = links
            .iter()
            .filter(|l| l.state == LinkState::Suppressed && !l.crm_id.is_empty())
            .filter(|l| p.items.contains_key(&l.provider_id) && !c.items.contains_key(&l.crm_id))
            .filter(|l| !c.removed.contains(&l.crm_id) && !c.filtered.contains_key(&l.crm_id))
            .map(|l| l.crm_id.clone())
            .collect();
        for chunk in ids.chunks(self.crm.capabilities().max_batch.max(1)) {
            for item in self.crm.get_many(chunk).await? {
                self.classify(Side::Crm, c, item);
            }
        }
        Ok(())
    }

    fn state(&self, sr: &SideRead, id: &str, link: &Link) -> State {
        if let Some(item) = sr.items.get(id) {
            let canon = item.record.canon().restrict(&self.fields);
            if canon.hash() == link.hash { State::Same } else { State::Changed(canon, item.modified) }
        } else if sr.removed.contains(id) || sr.full {
            State::Gone
        } else {
            State::Same
        }
    }

    /// The policy for a first-sight pair. A pair matched by sync key is a record and the copy
    /// the engine made of it (found again after a crash or a reset): whichever was modified
    /// last carries the latest edit, so `newest_wins` decides, whatever the configured policy.
    fn pair_policy(&self, p: &Item, c: &Item) -> KindPolicy {
        let rep = &self.rep.id;
        let copy_of_p = c.sync_key.as_ref() == Some(&SyncKey::derive(rep, self.kind, Side::Provider, &p.id));
        let copy_of_c = p.sync_key.as_ref() == Some(&SyncKey::derive(rep, self.kind, Side::Crm, &c.id));
        let mut pol = self.policy;
        if copy_of_p || copy_of_c {
            pol.conflict = crate::config::ConflictPolicy::NewestWins;
        }
        pol
    }

    /// Why a record a create returned must not be linked: creates are idempotent by sync key,
    /// so a create can hand back an earlier copy the rep has cancelled or excluded since.
    fn created_but_excluded(&self, e: &Entry) -> Option<&'static str> {
        let (made, side) = match e.decision {
            Decision::CreateCrm => (e.new_c.as_ref()?, Side::Crm),
            Decision::CreateProvider => (e.new_p.as_ref()?, Side::Provider),
            _ => return None,
        };
        let ev = made.record.as_event()?;
        if ev.cancelled { Some("cancelled") } else { self.event_skip(side, ev) }
    }

    /// A suppression for a copy whose source is gone (`side` is the copy's side).
    fn orphan(&mut self, item: &Item, side: Side) -> Entry {
        self.kr.skip("source_missing");
        let snapshot = item.record.canon().restrict(&self.fields);
        let (pid, pv, cid, cv) = match side {
            Side::Provider => (item.id.clone(), item.version.clone(), String::new(), String::new()),
            Side::Crm => (String::new(), String::new(), item.id.clone(), item.version.clone()),
        };
        let link = Link {
            kind: self.kind,
            key: item.sync_key.clone().expect("orphans carry a stamp"),
            provider_id: pid,
            crm_id: cid,
            provider_version: pv,
            crm_version: cv,
            hash: snapshot.hash(),
            snapshot,
            state: LinkState::Linked,
            pending: None,
        };
        let mut e = Entry::new(None, Some(link), None, None, Decision::Suppress);
        e.gone = Some(side.other());
        e
    }

    /// The decision for a matched pair: three-way against the snapshot of the suppression it
    /// lifts (a re-added contact keeps the edits made while it was out), else first sight.
    fn pair_decision(&self, p: &Item, c: &Item, base: Option<&Link>) -> Decision {
        match base {
            Some(l) => {
                let state = |i: &Item| {
                    let canon = i.record.canon().restrict(&self.fields);
                    if canon.hash() == l.hash { State::Same } else { State::Changed(canon, i.modified) }
                };
                decide(Some(&l.snapshot), &state(p), &state(c), &self.policy)
            }
            None => decide(None, &self.new_state(p), &self.new_state(c), &self.pair_policy(p, c)),
        }
    }

    fn new_state(&self, item: &Item) -> State {
        State::New(item.record.canon().restrict(&self.fields), item.modified)
    }

    async fn go(&mut self) -> Result<()> {
        let (rep, kind) = (self.rep.id.clone(), self.kind);
        let links = self.store.links(&rep, kind).await?;
        let cursors = self.store.cursors(&rep, kind).await?;
        let old_errors = self.store.item_errors(&rep, kind).await?;

        let mut p =
            self.read(Side::Provider, cursors.provider.as_deref()).await.map_err(|e| e.context("provider read"))?;
        let mut c = self.read(Side::Crm, cursors.crm.as_deref()).await.map_err(|e| e.context("crm read"))?;
        self.kr.full_read_provider = p.full;
        self.kr.full_read_crm = c.full;
        self.retry_failed(Side::Provider, &mut p, &old_errors).await?;
        self.retry_failed(Side::Crm, &mut c, &old_errors).await?;
        self.read_partners_of_returning(&links, &p, &mut c).await?;

        // Empty-side guard (vdirsyncer's): a full read that returns nothing while links exist is
        // far more likely an outage or a wrong folder than the rep deleting everything.
        let live = links
            .iter()
            .filter(|l| {
                l.state == LinkState::Linked && (kind != Kind::Event || canon_in_window(&l.snapshot, &self.window))
            })
            .count();
        for (side, sr) in [(Side::Provider, &p), (Side::Crm, &c)] {
            if sr.full && live > 0 && sr.items.is_empty() && sr.filtered.is_empty() && sr.failed.is_empty() {
                return Err(Error::unexpected(format!(
                    "the {} side read no {}s at all while {live} are linked; refusing to treat them as deleted (nothing was changed)",
                    side.as_str(),
                    kind.as_str()
                )));
            }
        }

        let mut entries = self.plan_linked(&links, &mut p, &c);
        self.plan_unlinked(&links, &p, &c, &mut entries).await?;
        self.apply(entries, &old_errors, Cursors { provider: p.cursor.clone(), crm: c.cursor.clone() }).await
    }

    /// Linked pairs (and suppressions that come back to life).
    fn plan_linked(&mut self, links: &[Link], p: &mut SideRead, c: &SideRead) -> Vec<Entry> {
        let mut entries = vec![];
        for link in links {
            let mut link = link.clone();
            if link.state == LinkState::Suppressed {
                // Handled with the unlinked items (a suppressed pair comes back by matching).
                continue;
            }
            let (pid, cid) = (link.provider_id.clone(), link.crm_id.clone());
            if p.failed.contains(&pid) || c.failed.contains(&cid) {
                continue;
            }
            let key = Some(link.key.clone());
            if let Some(reason) = p.filtered.get(&pid).or_else(|| c.filtered.get(&cid)) {
                // Aged out on both sides: forget the pair. Otherwise (moved out on one side, or
                // excluded by a filter) keep it suppressed, so it comes back three-way if the
                // item returns, and the copy left on the other side is never taken for new.
                let window = self.window;
                let out = |sr: &SideRead, id: &String| {
                    sr.filtered.get(id) == Some(&"outside_window")
                        || (!sr.items.contains_key(id) && !canon_in_window(&link.snapshot, &window))
                };
                let decision = if *reason == "outside_window" && out(p, &pid) && out(c, &cid) {
                    Decision::DropLink
                } else {
                    Decision::Suppress
                };
                entries.push(Entry::new(key, Some(link), None, None, decision));
                continue;
            }
            if self.kind == Kind::Event
                && !canon_in_window(&link.snapshot, &self.window)
                && !p.items.contains_key(&pid)
                && !c.items.contains_key(&cid)
                && !p.removed.contains(&pid)
                && !c.removed.contains(&cid)
            {
                // Aged out of the window on both sides: forget the link, delete nothing.
                entries.push(Entry::new(key, Some(link), None, None, Decision::DropLink));
                continue;
            }
            if let Some(pend) = link.pending.take() {
                // An update was in flight when the last cycle died. If it landed on every side
                // it targeted, measure both sides against what it wrote, so our own write is
                // not mistaken for a user's edit; otherwise against the old snapshot.
                let holds = |side: Side| {
                    let (sr, id) = if side == Side::Provider { (&*p, &pid) } else { (c, &cid) };
                    sr.items.get(id).is_some_and(|i| i.record.canon().restrict(&self.fields) == pend.snapshot)
                };
                if !pend.targets.is_empty() && pend.targets.iter().all(|t| holds(*t)) {
                    link.hash = pend.snapshot.hash();
                    link.snapshot = pend.snapshot;
                }
            }
            let ps = self.state(p, &pid, &link);
            let cs = self.state(c, &cid, &link);
            let mut decision = decide(Some(&link.snapshot), &ps, &cs, &self.policy);
            // A modification wins over a deletion: the survivor needs a partner again. It is
            // matched like an unlinked item (a copy made before a crash is found, not made twice).
            let release = matches!(decision, Decision::CreateCrm | Decision::CreateProvider);
            if release {
                decision = Decision::DropLink;
            }
            let mut e = Entry::new(key, Some(link), p.items.get(&pid).cloned(), c.items.get(&cid).cloned(), decision);
            e.release = release;
            e.gone = match (ps, cs) {
                (State::Gone, _) => Some(Side::Provider),
                (_, State::Gone) => Some(Side::Crm),
                _ => None,
            };
            entries.push(e);
        }
        entries
    }

    fn choose(&self, cands: &[String], pool: &BTreeMap<String, Cand>, taken: &BTreeSet<String>) -> Choice {
        let mut skip = None;
        for id in cands {
            let Some(cand) = pool.get(id) else { continue };
            if taken.contains(id) {
                skip.get_or_insert("matches_linked_record");
            } else if !cand.in_scope {
                skip.get_or_insert("outside_filter");
            } else {
                return Choice::Pair(id.clone());
            }
        }
        skip.map_or(Choice::None, Choice::Skip)
    }

    /// Match unlinked items across the sides (pools first, then `find`), then decide.
    async fn plan_unlinked(
        &mut self,
        links: &[Link],
        p: &SideRead,
        c: &SideRead,
        entries: &mut Vec<Entry>,
    ) -> Result<()> {
        let rep = self.rep.id.clone();
        // Ids already spoken for: linked pairs and ids under a suppression.
        let mut taken_p: BTreeSet<String> = BTreeSet::new();
        let mut taken_c: BTreeSet<String> = BTreeSet::new();
        let mut suppressed_p: BTreeMap<String, SyncKey> = BTreeMap::new();
        let mut suppressed_c: BTreeMap<String, SyncKey> = BTreeMap::new();
        for l in links {
            match l.state {
                LinkState::Linked => {
                    taken_p.insert(l.provider_id.clone());
                    taken_c.insert(l.crm_id.clone());
                }
                LinkState::Suppressed => {
                    // A suppression made by a filter keeps both ids: when the provider item
                    // passes the filters again it is matched again, and merged three-way
                    // against the suppression's snapshot (the CRM copy may have changed).
                    let back = !l.crm_id.is_empty() && p.items.contains_key(&l.provider_id);
                    if !l.provider_id.is_empty() && !back {
                        suppressed_p.insert(l.provider_id.clone(), l.key.clone());
                    }
                    if !l.crm_id.is_empty() {
                        suppressed_c.insert(l.crm_id.clone(), l.key.clone());
                    }
                }
            }
        }
        for e in entries.iter() {
            if e.release
                && let Some(l) = &e.link
            {
                taken_p.remove(&l.provider_id);
                taken_c.remove(&l.crm_id);
                continue;
            }
            if let Some(l) = &e.link {
                suppressed_p.remove(&l.provider_id);
                suppressed_c.remove(&l.crm_id);
                if e.decision == Decision::Suppress && e.gone == Some(Side::Crm) {
                    // Suppressed this very cycle: a new CRM record may claim it.
                    suppressed_p.insert(l.provider_id.clone(), l.key.clone());
                    taken_p.remove(&l.provider_id);
                } else {
                    taken_p.insert(l.provider_id.clone());
                }
                if e.decision == Decision::Suppress && e.gone == Some(Side::Provider) {
                    // Suppressed this very cycle: a re-added provider item may claim it.
                    suppressed_c.insert(l.crm_id.clone(), l.key.clone());
                    taken_c.remove(&l.crm_id);
                } else {
                    taken_c.insert(l.crm_id.clone());
                }
            }
        }

        let mut taken = Sides { provider: taken_p, crm: taken_c };
        let mut suppressed = Sides { provider: suppressed_p, crm: suppressed_c };

        // Provider items looking for a CRM partner, then CRM items nobody claimed.
        for from in [Side::Provider, Side::Crm] {
            if from == Side::Crm && !self.policy.direction.crm_to_provider() {
                break;
            }
            let read = if from == Side::Provider { p } else { c };
            let mut waiting: Vec<&Item> = vec![];
            for item in read.items.values().filter(|i| !taken.get(from).contains(&i.id)) {
                if suppressed.get(from).contains_key(&item.id) {
                    self.kr.skip("suppressed");
                    continue;
                }
                waiting.push(item);
            }
            let other = if from == Side::Provider { c } else { p };
            let (pairs, lonely) = self.partner_up(from, waiting, other, &mut taken).await?;
            for (mine, theirs) in pairs {
                let (pi, ci) = if from == Side::Provider { (mine, theirs) } else { (theirs, mine) };
                let lifted = suppressed.crm.remove(&ci.id).or_else(|| suppressed.provider.remove(&pi.id));
                let base = lift_suppression(entries, links, lifted);
                let decision = self.pair_decision(&pi, &ci, base.as_ref());
                let mut e = Entry::new(base.map(|l| l.key), None, Some(pi), Some(ci), decision);
                e.matched = true;
                entries.push(e);
            }
            for item in lonely {
                taken.get_mut(from).insert(item.id.clone());
                if item.sync_key.as_ref().is_some_and(|k| k.belongs_to(&rep)) {
                    // Our own copy of a record we can no longer see on the other side (deleted
                    // or out of scope while the rep was reset): never copy a copy; keep it out
                    // of sync, as `unlink` would.
                    entries.push(self.orphan(item, from));
                    continue;
                }
                let (ps, cs, pi, ci) = match from {
                    Side::Provider => (self.new_state(item), State::Absent, Some(item.clone()), None),
                    Side::Crm => (State::Absent, self.new_state(item), None, Some(item.clone())),
                };
                let decision = decide(None, &ps, &cs, &self.policy);
                entries.push(Entry::new(None, None, pi, ci, decision));
            }
        }
        Ok(())
    }

    /// Find partners on the other side for `waiting` items of side `from`: first among what the
    /// other side read, then with one batched `find` for the rest (unless that read was full
    /// and `find` sees nothing beyond it). Returns the pairs (mine, theirs) and the items left
    /// alone; items whose best match is taken or out of scope are skipped and watched.
    async fn partner_up<'i>(
        &mut self,
        from: Side,
        mut waiting: Vec<&'i Item>,
        other: &SideRead,
        taken: &mut Sides<BTreeSet<String>>,
    ) -> Result<(Vec<(Item, Item)>, Vec<&'i Item>)> {
        let rep = self.rep.id.clone();
        let to = from.other();
        let coll = self.coll(to);
        let mut pool: BTreeMap<String, Cand> =
            other.items.values().map(|i| (i.id.clone(), Cand { item: i.clone(), in_scope: true })).collect();
        let mut index = Index::default();
        for i in other.items.values() {
            index.add(&rep, to, i);
        }
        let mut pairs = vec![];
        for pass in 0..2 {
            let mut still = vec![];
            for item in waiting {
                match self.choose(&index.candidates(&rep, from, item), &pool, taken.get(to)) {
                    Choice::Pair(id) => {
                        taken.get_mut(to).insert(id.clone());
                        taken.get_mut(from).insert(item.id.clone());
                        pairs.push((item.clone(), pool[&id].item.clone()));
                    }
                    // A provider item out of the CRM filter is `outside_filter`; a CRM record
                    // matching a provider item outside the folder/group is `outside_scope`.
                    Choice::Skip("outside_filter") if from == Side::Crm => {
                        self.skip_and_watch(from, &item.id, "outside_scope")
                    }
                    Choice::Skip(reason) => self.skip_and_watch(from, &item.id, reason),
                    Choice::None => still.push(item),
                }
            }
            waiting = still;
            if pass == 1 || waiting.is_empty() || (other.full && !coll.capabilities().find_beyond_scope) {
                break;
            }
            let keys: BTreeSet<MatchKey> = waiting.iter().flat_map(|i| match_keys(&rep, from, i)).collect();
            let found = coll.find(&keys.into_iter().collect::<Vec<_>>()).await;
            for f in found.map_err(|e| e.context(format!("{} find", to.as_str())))? {
                // A found event must pass the filters a read one does (cancelled, excluded).
                let excluded =
                    f.item.record.as_event().is_some_and(|ev| ev.cancelled || self.event_skip(to, ev).is_some());
                if !excluded && !pool.contains_key(&f.item.id) {
                    index.add(&rep, to, &f.item);
                    pool.insert(f.item.id.clone(), Cand { item: f.item, in_scope: f.in_scope });
                }
            }
        }
        Ok((pairs, waiting))
    }

    /// The update that brings `target` to the merged canon.
    fn update_for(&self, e: &Entry, target: Side, take: &BTreeMap<String, Side>, merged: &Canon) -> Option<Update> {
        let (id, version) = e.reference(target)?;
        let source = e.item(target).or_else(|| e.item(target.other()))?;
        let mut record = source.record.clone();
        let mut fields = vec![];
        for (f, side) in take {
            if *side == target {
                continue;
            }
            let value = match e.item(*side) {
                Some(i) => i.record.field(f),
                None => merged.get(f).map(str::to_owned),
            };
            record.set_field(f, value);
            fields.push(f.clone());
        }
        (!fields.is_empty()).then_some(Update { id, version, fields, record })
    }

    fn ops(&self, e: &Entry) -> Vec<(Side, Op)> {
        let rep = &self.rep.id;
        match &e.decision {
            Decision::CreateCrm => {
                e.p.iter()
                    .map(|p| {
                        let key = SyncKey::derive(rep, self.kind, Side::Provider, &p.id);
                        (Side::Crm, Op::Create(NewItem { sync_key: key, record: p.record.clone() }))
                    })
                    .collect()
            }
            Decision::CreateProvider => {
                e.c.iter()
                    .map(|c| {
                        let key = SyncKey::derive(rep, self.kind, Side::Crm, &c.id);
                        (Side::Provider, Op::Create(NewItem { sync_key: key, record: c.record.clone() }))
                    })
                    .collect()
            }
            Decision::Merge { merged, take, write_provider, write_crm, .. } => {
                let mut out = vec![];
                if *write_crm && let Some(u) = self.update_for(e, Side::Crm, take, merged) {
                    out.push((Side::Crm, Op::Update(u)));
                }
                if *write_provider && let Some(u) = self.update_for(e, Side::Provider, take, merged) {
                    out.push((Side::Provider, Op::Update(u)));
                }
                out
            }
            Decision::DeleteCrm => {
                e.reference(Side::Crm).map(|(id, _)| (Side::Crm, Op::Delete(id))).into_iter().collect()
            }
            Decision::DeleteProvider => {
                e.reference(Side::Provider).map(|(id, _)| (Side::Provider, Op::Delete(id))).into_iter().collect()
            }
            _ => vec![],
        }
    }

    /// The item an error of a write to `written` is recorded against: the other side's, whose
    /// change drove the write (a create or update copies it, a delete propagates its deletion),
    /// so the next cycle re-reads it by id and tries again.
    fn blame(&self, e: &Entry, written: Side) -> (Side, String) {
        let driver = written.other();
        let id = e
            .reference(driver)
            .map(|(id, _)| id)
            .or_else(|| e.reference(written).map(|(id, _)| id))
            .unwrap_or_default();
        (driver, id)
    }

    /// Fold a finished entry into the batch and the counters.
    fn finish(&mut self, e: &Entry, batch: &mut LinkBatch) {
        let excluded = self.created_but_excluded(e);
        let kr = &mut *self.kr;
        let remove_old = |batch: &mut LinkBatch, new_key: Option<&SyncKey>| {
            if let Some(old) = &e.old_key
                && Some(old) != new_key
            {
                batch.remove.push(old.clone());
            }
        };
        match &e.decision {
            Decision::Nothing => {}
            Decision::CreateCrm | Decision::CreateProvider => {
                let (src, made, side) = match e.decision {
                    Decision::CreateCrm => (e.p.as_ref(), e.new_c.as_ref(), Side::Provider),
                    _ => (e.c.as_ref(), e.new_p.as_ref(), Side::Crm),
                };
                let (Some(src), Some(made)) = (src, made) else {
                    return;
                };
                let key =
                    made.sync_key.clone().unwrap_or_else(|| SyncKey::derive(&self.rep.id, self.kind, side, &src.id));
                let snapshot = src.record.canon().restrict(&self.fields);
                let (pi, ci) = if side == Side::Provider { (src, made) } else { (made, src) };
                let mut link = new_link(self.kind, key, pi, ci, snapshot);
                remove_old(batch, Some(&link.key));
                if let Some(reason) = excluded {
                    // The create found our earlier copy, which the rep since cancelled or
                    // excluded (a reset hid that from us): respect it, keep the pair out of sync.
                    link.state = LinkState::Suppressed;
                    batch.upsert.push(link);
                    kr.skip(reason);
                    kr.suppressed += 1;
                    return;
                }
                batch.upsert.push(link);
                if side == Side::Provider { kr.created_in_crm += 1 } else { kr.created_in_provider += 1 }
            }
            Decision::Merge { merged, write_provider, write_crm, conflict, .. } => {
                let (Some((pid, pv)), Some((cid, cv))) = (e.reference(Side::Provider), e.reference(Side::Crm)) else {
                    return;
                };
                let key = match (&e.link, &e.p, &e.c) {
                    (Some(l), _, _) => l.key.clone(),
                    (None, Some(p), Some(c)) => pair_key(&self.rep.id, p, c),
                    _ => return,
                };
                let link = Link {
                    kind: self.kind,
                    key,
                    provider_id: pid,
                    crm_id: cid,
                    provider_version: pv,
                    crm_version: cv,
                    hash: merged.hash(),
                    snapshot: merged.clone(),
                    state: LinkState::Linked,
                    pending: None,
                };
                if e.link.as_ref() != Some(&link) {
                    remove_old(batch, Some(&link.key));
                    batch.upsert.push(link);
                }
                if e.matched {
                    kr.linked += 1;
                }
                if *conflict {
                    kr.conflicts += 1;
                    let name = format!("{:?}", self.policy.conflict).to_lowercase();
                    *kr.conflict_resolutions.entry(name).or_default() += 1;
                }
                kr.updated_in_crm += u64::from(*write_crm && e.new_c.is_some());
                kr.updated_in_provider += u64::from(*write_provider && e.new_p.is_some());
            }
            Decision::DeleteCrm | Decision::DeleteProvider | Decision::DropLink => {
                if let Some(k) = &e.old_key {
                    batch.remove.push(k.clone());
                }
                match e.decision {
                    Decision::DeleteCrm => kr.deleted_in_crm += 1,
                    Decision::DeleteProvider => kr.deleted_in_provider += 1,
                    _ => {}
                }
                kr.unlinked += 1;
            }
            Decision::Suppress => {
                if let Some(l) = &e.link {
                    let mut s = l.clone();
                    s.state = LinkState::Suppressed;
                    match e.gone {
                        Some(Side::Provider) => s.provider_id.clear(),
                        Some(Side::Crm) => s.crm_id.clear(),
                        None => {}
                    }
                    batch.upsert.push(s);
                    kr.suppressed += 1;
                }
            }
        }
    }

    /// Record the intent of the updates in `chunk` on their links before sending them.
    async fn write_ahead(&mut self, entries: &[Entry], chunk: &[(usize, Op)]) -> Result<()> {
        let mut batch = LinkBatch::default();
        for (i, op) in chunk {
            if let (Op::Update(_), Some(link), Decision::Merge { merged, write_provider, write_crm, .. }) =
                (op, &entries[*i].link, &entries[*i].decision)
            {
                let targets = [(Side::Provider, *write_provider), (Side::Crm, *write_crm)]
                    .into_iter()
                    .filter_map(|(s, w)| w.then_some(s))
                    .collect();
                let pending = Some(Pending { snapshot: merged.clone(), targets });
                if link.pending != pending {
                    batch.upsert.push(Link { pending, ..link.clone() });
                }
            }
        }
        if batch.upsert.is_empty() {
            return Ok(());
        }
        self.store.commit(&self.rep.id, self.epoch, self.kind, &batch).await
    }

    async fn commit(&mut self, mut batch: LinkBatch) -> Result<()> {
        batch.errors.append(&mut self.errors);
        if batch.is_empty() {
            return Ok(());
        }
        self.store.commit(&self.rep.id, self.epoch, self.kind, &batch).await
    }

    async fn apply(&mut self, mut entries: Vec<Entry>, old_errors: &[ItemError], cursors: Cursors) -> Result<()> {
        // Queue the remote writes: CRM first, then the provider; creates, updates, deletes.
        let mut queues: Vec<(Slot, Vec<(usize, Op)>)> = vec![];
        let mut final_batch = LinkBatch::default();
        for (i, e) in entries.iter_mut().enumerate() {
            let ops = self.ops(e);
            e.pending = ops.len() as u8;
            if ops.is_empty() {
                continue;
            }
            for (side, op) in ops {
                let rank = match op {
                    Op::Create(_) => 0,
                    Op::Update(_) => 1,
                    Op::Delete(_) => 2,
                };
                let slot = (side, rank);
                match queues.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, q)) => q.push((i, op)),
                    None => queues.push((slot, vec![(i, op)])),
                }
            }
        }
        // Link changes that need no remote write go first: a link the writes below make again
        // (same key) must not be removed after them.
        let mut first = LinkBatch::default();
        for e in entries.iter().filter(|e| e.pending == 0) {
            self.finish(e, &mut first);
        }
        self.commit(first).await?;
        queues.sort_by_key(|((side, rank), _)| (*side == Side::Provider, *rank));
        for ((side, _), queue) in queues {
            let coll = self.coll(side);
            let max = coll.capabilities().max_batch.max(1);
            let live: Vec<(usize, Op)> = queue.into_iter().filter(|(i, _)| !entries[*i].failed).collect();
            let mut it = live.into_iter().peekable();
            while it.peek().is_some() {
                let chunk: Vec<(usize, Op)> = it.by_ref().take(max).collect();
                self.write_ahead(&entries, &chunk).await?;
                let results = self.send(side, &chunk).await?;
                let mut batch = LinkBatch::default();
                for ((i, _), res) in chunk.iter().zip(results) {
                    let e = &mut entries[*i];
                    match res {
                        Ok(item) => {
                            if let Some(item) = item {
                                match side {
                                    Side::Provider => e.new_p = Some(item),
                                    Side::Crm => e.new_c = Some(item),
                                }
                            }
                            e.pending -= 1;
                            if e.pending == 0 {
                                let e = &entries[*i];
                                self.finish(e, &mut batch);
                            }
                        }
                        Err(err) => {
                            e.failed = true;
                            let (bs, bid) = self.blame(&entries[*i], side);
                            self.fail(bs, &bid, format!("{} write failed: {err}", side.as_str()));
                        }
                    }
                }
                self.commit(batch).await?;
            }
        }
        // Close the collection: link-only changes, cursors, errors of earlier cycles that are
        // now resolved.
        final_batch.clear_errors =
            old_errors.iter().map(|e| (e.side, e.id.clone())).filter(|k| !self.failed_now.contains(k)).collect();
        final_batch.cursors = Some(cursors);
        self.commit(final_batch).await
    }

    /// One batched remote call; per-item results (the created/updated item, or nothing for deletes).
    async fn send(&self, side: Side, chunk: &[(usize, Op)]) -> Result<Vec<Result<Option<Item>>>> {
        let coll = self.coll(side);
        let ctx = |e: Error| e.context(format!("{} {} write", side.as_str(), self.kind.as_str()));
        let out: Vec<Result<Option<Item>>> = match &chunk[0].1 {
            Op::Create(_) => {
                let items: Vec<NewItem> = chunk
                    .iter()
                    .filter_map(|(_, o)| if let Op::Create(n) = o { Some(n.clone()) } else { None })
                    .collect();
                coll.create_many(&items).await.map_err(ctx)?.into_iter().map(|r| r.map(Some)).collect()
            }
            Op::Update(_) => {
                let items: Vec<Update> = chunk
                    .iter()
                    .filter_map(|(_, o)| if let Op::Update(u) = o { Some(u.clone()) } else { None })
                    .collect();
                coll.update_many(&items).await.map_err(ctx)?.into_iter().map(|r| r.map(Some)).collect()
            }
            Op::Delete(_) => {
                let ids: Vec<String> = chunk
                    .iter()
                    .filter_map(|(_, o)| if let Op::Delete(d) = o { Some(d.clone()) } else { None })
                    .collect();
                coll.delete_many(&ids).await.map_err(ctx)?.into_iter().map(|r| r.map(|()| None)).collect()
            }
        };
        if out.len() != chunk.len() {
            return Err(Error::unexpected(format!(
                "{} returned {} results for {} items",
                side.as_str(),
                out.len(),
                chunk.len()
            )));
        }
        Ok(out)
    }
}

/// A pair replaces a suppression (made in an earlier cycle or in this one): the suppression's
/// own entry no longer writes it. Returns the suppressed link (its snapshot is the merge base).
fn lift_suppression(entries: &mut [Entry], links: &[Link], key: Option<SyncKey>) -> Option<Link> {
    let k = key?;
    for e in entries.iter_mut().filter(|e| e.decision == Decision::Suppress) {
        if let Some(l) = e.link.as_ref().filter(|l| l.key == k) {
            e.decision = Decision::Nothing;
            return Some(l.clone());
        }
    }
    links.iter().find(|l| l.key == k).cloned()
}

/// The key of a link made by matching: a stamp of this rep on either record, else derived from
/// the provider id (so the same pair gets the same key before and after a reset).
fn pair_key(rep: &str, p: &Item, c: &Item) -> SyncKey {
    [&p.sync_key, &c.sync_key]
        .into_iter()
        .flatten()
        .find(|k| k.belongs_to(rep))
        .cloned()
        .unwrap_or_else(|| SyncKey::derive(rep, p.record.kind(), Side::Provider, &p.id))
}

fn new_link(kind: Kind, key: SyncKey, p: &Item, c: &Item, snapshot: Canon) -> Link {
    Link {
        kind,
        key,
        provider_id: p.id.clone(),
        crm_id: c.id.clone(),
        provider_version: p.version.clone(),
        crm_version: c.version.clone(),
        hash: snapshot.hash(),
        snapshot,
        state: LinkState::Linked,
        pending: None,
    }
}
