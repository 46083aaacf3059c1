//! Stage 2, matching: pair the unlinked items of both sides, first within what was read (sync
//! key → e-mail → name+phone for contacts; sync key → iCalUID → subject+start for events),
//! then with one batched `find` on the other side for what is left. A match that is taken or
//! out of scope is a skip (watched, never duplicated); an item nobody matches is left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::context::{Ctx, Sides};
use super::ledger::Ledger;
use super::read::SideRead;
use crate::error::Result;
use crate::model::{Kind, Side, SyncKey, match_keys, name_phones, subject_start};
use crate::port::{Collection, Item, MatchKey};

/// The ids matching may not hand out again, per side.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// Linked (or about to be written as linked) this cycle.
    pub taken: Sides<BTreeSet<String>>,
    /// Claimed by matching in this cycle: another item of the same side got there first.
    pub claimed: Sides<BTreeSet<String>>,
    /// Under a suppression (its key): skipped, unless a match lifts it.
    pub suppressed: Sides<BTreeMap<String, SyncKey>>,
}

/// What matching found for one unlinked item.
// Short-lived, one per unlinked item: boxing would cost an allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Match {
    /// A provider item and a CRM record that belong together; `lifted` is the key of the
    /// suppression the pair replaces.
    Pair { p: Item, c: Item, lifted: Option<SyncKey> },
    /// An item with no partner on the other side.
    Alone(Side, Item),
}

/// Match the unlinked items: provider items looking for a CRM partner, then CRM items nobody
/// claimed (when CRM records flow to the provider).
pub(crate) async fn match_unlinked(
    ctx: &Ctx<'_>,
    colls: Sides<&dyn Collection>,
    reads: &Sides<SideRead>,
    mut claims: Claims,
    ledger: &mut Ledger,
) -> Result<Vec<Match>> {
    let mut out = vec![];
    for from in [Side::Provider, Side::Crm] {
        if from == Side::Crm && !ctx.policy.direction.crm_to_provider() {
            break;
        }
        let mut waiting: Vec<&Item> = vec![];
        for item in reads.get(from).items.values().filter(|i| !claims.taken.get(from).contains(&i.id)) {
            if claims.suppressed.get(from).contains_key(&item.id) {
                ledger.skip("suppressed");
                continue;
            }
            waiting.push(item);
        }
        let to = from.other();
        let (pairs, alone) = partner_up(ctx, from, waiting, reads.get(to), *colls.get(to), &mut claims, ledger).await?;
        // Two items of this side that would each be copied with one e-mail would be a duplicate
        // on the other side: the first (in id order, and after those paired) goes, the others
        // wait as `ambiguous_match`. Our own orphaned copies are never copied, so never compete.
        let mut emails: BTreeSet<String> = pairs.iter().filter_map(|(mine, _)| primary_email(mine)).collect();
        let alone: Vec<&Item> = alone
            .into_iter()
            .filter(|item| {
                let ours = item.sync_key.as_ref().is_some_and(|k| k.belongs_to(&ctx.rep.id));
                let taken_email = primary_email(item).filter(|_| !ours).is_some_and(|e| !emails.insert(e));
                if taken_email {
                    ledger.skip_and_watch(from, &item.id, "ambiguous_match");
                }
                !taken_email
            })
            .collect();
        for (mine, theirs) in pairs {
            let (p, c) = if from == Side::Provider { (mine, theirs) } else { (theirs, mine) };
            let lifted = claims.suppressed.crm.remove(&c.id).or_else(|| claims.suppressed.provider.remove(&p.id));
            out.push(Match::Pair { p, c, lifted });
        }
        for item in alone {
            claims.taken.get_mut(from).insert(item.id.clone());
            out.push(Match::Alone(from, item.clone()));
        }
    }
    Ok(out)
}

/// A contact's normalized primary e-mail (the one the CRM stores).
fn primary_email(item: &Item) -> Option<String> {
    item.record.as_contact()?;
    item.record.canon().get("email").map(str::to_owned)
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

    /// Candidate ids on this (other) side for `item` of `side`, best first.
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

/// The best free, in-scope candidate; else why the best one cannot be used: it is linked, or
/// another item of the same side claimed it this cycle (`ambiguous_match`), or out of scope.
fn choose(
    cands: &[String],
    pool: &BTreeMap<String, Cand>,
    taken: &BTreeSet<String>,
    claimed: &BTreeSet<String>,
) -> Choice {
    let mut skip = None;
    for id in cands {
        let Some(cand) = pool.get(id) else { continue };
        if claimed.contains(id) {
            skip.get_or_insert("ambiguous_match");
        } else if taken.contains(id) {
            skip.get_or_insert("matches_linked_record");
        } else if !cand.in_scope {
            skip.get_or_insert("outside_filter");
        } else {
            return Choice::Pair(id.clone());
        }
    }
    skip.map_or(Choice::None, Choice::Skip)
}

/// Find partners on the other side for `waiting` items of side `from`: first among what the
/// other side read, then with one batched `find` for the rest (unless that read was full and
/// `find` sees nothing beyond it). Returns the pairs (mine, theirs) and the items left alone;
/// items whose best match is taken or out of scope are skipped and watched.
async fn partner_up<'i>(
    ctx: &Ctx<'_>,
    from: Side,
    mut waiting: Vec<&'i Item>,
    other: &SideRead,
    coll: &dyn Collection,
    claims: &mut Claims,
    ledger: &mut Ledger,
) -> Result<(Vec<(Item, Item)>, Vec<&'i Item>)> {
    let rep = ctx.rep.id.as_str();
    let to = from.other();
    let mut pool: BTreeMap<String, Cand> =
        other.items.values().map(|i| (i.id.clone(), Cand { item: i.clone(), in_scope: true })).collect();
    let mut index = Index::default();
    for i in other.items.values() {
        index.add(rep, to, i);
    }
    let mut pairs = vec![];
    for pass in 0..2 {
        // A skip is final only once `find` had its say: it may turn up a free partner.
        let last = pass == 1 || (other.full && !coll.capabilities().find_beyond_scope);
        let mut still = vec![];
        for item in waiting {
            match choose(&index.candidates(rep, from, item), &pool, claims.taken.get(to), claims.claimed.get(to)) {
                Choice::Pair(id) => {
                    claims.taken.get_mut(to).insert(id.clone());
                    claims.taken.get_mut(from).insert(item.id.clone());
                    claims.claimed.get_mut(to).insert(id.clone());
                    claims.claimed.get_mut(from).insert(item.id.clone());
                    pairs.push((item.clone(), pool[&id].item.clone()));
                }
                // A provider item out of the CRM filter is `outside_filter`; a CRM record
                // matching a provider item outside the folder/group is `outside_scope`.
                Choice::Skip("outside_filter") if last && from == Side::Crm => {
                    ledger.skip_and_watch(from, &item.id, "outside_scope")
                }
                Choice::Skip(reason) if last => ledger.skip_and_watch(from, &item.id, reason),
                Choice::Skip(_) | Choice::None => still.push(item),
            }
        }
        waiting = still;
        if last || waiting.is_empty() {
            break;
        }
        let keys: BTreeSet<MatchKey> = waiting.iter().flat_map(|i| match_keys(rep, from, i)).collect();
        let found = coll.find(&keys.into_iter().collect::<Vec<_>>()).await;
        for f in found.map_err(|e| e.context(format!("{} find", to.as_str())))? {
            // A found event must pass the filters a read one does (cancelled, excluded).
            let excluded = f.item.record.as_event().is_some_and(|ev| ev.cancelled || ctx.event_skip(to, ev).is_some());
            if !excluded && !pool.contains_key(&f.item.id) {
                index.add(rep, to, &f.item);
                pool.insert(f.item.id.clone(), Cand { item: f.item, in_scope: f.in_scope });
            }
        }
    }
    Ok((pairs, waiting))
}
