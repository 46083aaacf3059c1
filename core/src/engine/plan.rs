//! Stage 3, planning (pure, no I/O): from the links, what was read and what matching found,
//! build the [`Plan`]: one [`Pair`] per link, match or lone item, each carrying the action
//! [`decide`] chose for it, and the cursors to store once the plan is applied.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::context::{Ctx, Sides};
use super::decide::{Decision, State, decide};
use super::ledger::Ledger;
use super::matching::{Claims, Match};
use super::read::SideRead;
use super::safety;
use crate::model::{Canon, Kind, Side, SyncKey, full_name};
use crate::port::{Cursors, HeldDelete, Item, Link, LinkState};

/// What one kind's sync will do, before it does it: printable (`Display`, serde) and
/// executable ([`crate::Engine::apply`]).
#[derive(Debug, Serialize)]
pub struct Plan {
    pub kind: Kind,
    /// The rep's epoch the plan was made under: applying it after a reset is refused.
    pub epoch: u64,
    pub pairs: Vec<Pair>,
    /// Stored once every pair is applied.
    pub cursors: Cursors,
    /// Skips and item errors found while reading and matching.
    #[serde(rename = "counts")]
    pub(crate) ledger: Ledger,
    /// Create records of a dead cycle turned into links (see `intent`): stored first.
    #[serde(skip)]
    pub(crate) settled: Vec<Link>,
    /// Deletes Delete Safety holds from this plan on (new in quarantine): stored first.
    #[serde(skip)]
    pub(crate) hold: Vec<HeldDelete>,
    /// Held deletes to drop from quarantine once the plan is applied.
    #[serde(skip)]
    pub(crate) release: Vec<SyncKey>,
}

/// One pair to act on: a link, a match, or a lone item, and what to do with it.
#[derive(Clone, Debug, Serialize)]
pub struct Pair {
    /// The key of the link or suppression this pair replaces, if any.
    pub old_key: Option<SyncKey>,
    pub link: Option<Link>,
    pub provider: Option<Item>,
    pub crm: Option<Item>,
    pub action: Decision,
    /// Made by matching two existing records (counts as linked).
    pub matched: bool,
}

impl Pair {
    fn new(link: Link, provider: Option<Item>, crm: Option<Item>, action: Decision) -> Self {
        Pair { old_key: Some(link.key.clone()), link: Some(link), provider, crm, action, matched: false }
    }

    pub fn item(&self, side: Side) -> Option<&Item> {
        match side {
            Side::Provider => self.provider.as_ref(),
            Side::Crm => self.crm.as_ref(),
        }
    }

    /// What applying this pair does, as the plan's printout names it.
    pub fn effects(&self) -> Vec<&'static str> {
        match &self.action {
            Decision::Nothing => vec![],
            Decision::CreateCrm => vec!["create in crm"],
            Decision::CreateProvider => vec!["create in provider"],
            Decision::Merge { write_provider, write_crm, conflict, .. } => {
                let mut out = vec![];
                out.extend(self.matched.then_some("link"));
                out.extend(write_crm.then_some("update in crm"));
                out.extend(write_provider.then_some("update in provider"));
                out.extend(conflict.then_some("resolve conflict"));
                out
            }
            Decision::DeleteCrm => vec!["delete in crm", "unlink"],
            Decision::DeleteProvider => vec!["delete in provider", "unlink"],
            Decision::Suppress { .. } => vec!["suppress"],
            Decision::DropLink if self.link.as_ref().is_some_and(|l| l.state == LinkState::Creating) => {
                vec!["forget unfinished create"]
            }
            Decision::DropLink => vec!["unlink"],
            Decision::Relink { .. } => vec!["unlink", "match again"],
            Decision::Hold { side: Side::Crm } => vec!["hold delete in crm"],
            Decision::Hold { side: Side::Provider } => vec!["hold delete in provider"],
        }
    }

    /// A short human name for the pair: a contact's name or e-mail, an event's subject.
    pub fn label(&self) -> String {
        let item = self.provider.as_ref().or(self.crm.as_ref());
        let Some(item) = item else {
            return self.link.as_ref().map_or_else(String::new, |l| l.snapshot.get("email").unwrap_or(&l.key.0).into());
        };
        let r = &item.record;
        full_name(r)
            .or_else(|| r.emails().into_iter().next())
            .or_else(|| r.as_event().and_then(|e| e.subject.clone()))
            .unwrap_or_else(|| item.id.clone())
    }
}

impl Plan {
    /// How many pairs have each effect.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for e in self.pairs.iter().flat_map(Pair::effects) {
            *out.entry(e).or_default() += 1;
        }
        out
    }

    /// The reads' and matching's skips, by reason.
    pub fn skipped(&self) -> &BTreeMap<String, u64> {
        &self.ledger.report.skipped
    }

    /// The items that failed to read or match (their cycle records them and tries again).
    pub fn item_errors(&self) -> &[crate::report::ItemErrorReport] {
        &self.ledger.report.item_errors
    }
}

/// Up to this many sample records per effect in the printout.
const SAMPLES: usize = 3;

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.ledger.report;
        let how = |full: bool| if full { "full" } else { "incremental" };
        writeln!(
            f,
            "{}s: provider read {}, crm read {}",
            self.kind.as_str(),
            how(r.full_read_provider),
            how(r.full_read_crm)
        )?;
        let counts = self.counts();
        if counts.is_empty() && r.skipped.is_empty() && r.item_errors.is_empty() {
            return writeln!(f, "  nothing to do");
        }
        for (effect, n) in &counts {
            let samples: Vec<String> =
                self.pairs.iter().filter(|p| p.effects().contains(effect)).take(SAMPLES).map(Pair::label).collect();
            let more = if *n as usize > samples.len() { ", …" } else { "" };
            writeln!(f, "  would {effect}: {n} ({}{more})", samples.join(", "))?;
        }
        for (reason, n) in &r.skipped {
            writeln!(f, "  would skip {reason}: {n}")?;
        }
        for e in &r.item_errors {
            writeln!(f, "  item error on {} {}: {}", e.side, e.id, e.reason)?;
        }
        Ok(())
    }
}

/// How a linked side looks now against its link.
fn side_state(ctx: &Ctx<'_>, side: Side, sr: &SideRead, id: &str, link: &Link) -> State {
    if let Some(reason) = sr.filtered.get(id) {
        return State::Filtered(reason);
    }
    if let Some(item) = sr.items.get(id) {
        let canon = ctx.side_canon(side, &item.record, Some(&link.snapshot));
        return if canon.hash() == link.hash { State::Same } else { State::Changed(canon, item.modified) };
    }
    if ctx.aged(&link.snapshot) {
        State::AgedOut
    } else if sr.removed.contains(id) || sr.full {
        State::Gone
    } else {
        State::Same
    }
}

/// The linked pairs (suppressions come back through matching). A pair one of whose items
/// failed to read is left alone this cycle. A pair with a held delete whose gone record an
/// incremental read does not mention is still gone (it was seen gone when it was held).
pub(crate) fn linked(ctx: &Ctx<'_>, links: &[Link], reads: &Sides<SideRead>, held: &[HeldDelete]) -> Vec<Pair> {
    let (p, c) = (&reads.provider, &reads.crm);
    let held: BTreeMap<&SyncKey, Side> = held.iter().map(|h| (&h.key, h.side.other())).collect();
    let mut out = vec![];
    for link in links.iter().filter(|l| l.state == LinkState::Linked) {
        let (pid, cid) = (&link.provider_id, &link.crm_id);
        if p.failed.contains(pid) || c.failed.contains(cid) {
            continue;
        }
        let mut link = link.clone();
        if let Some(pend) = link.pending.take() {
            // An update was in flight when the last cycle died. If it landed on every side it
            // targeted, measure both sides against what it wrote, so our own write is not
            // mistaken for a user's edit, nor the rep's later edit for a conflict; otherwise
            // against the old snapshot.
            let landed = |side: Side| {
                let (sr, id) = if side == Side::Provider { (p, pid) } else { (c, cid) };
                sr.items.get(id).is_some_and(|i| {
                    pend.landed(side, &ctx.side_canon(side, &i.record, Some(&link.snapshot)), &i.version)
                })
            };
            if !pend.targets.is_empty() && pend.targets.iter().all(|t| landed(*t)) {
                link.hash = pend.snapshot.hash();
                link.snapshot = pend.snapshot;
            } else if let (true, Some(pi), Some(ci)) = (pend.first_sight, p.items.get(pid), c.items.get(cid)) {
                // A pair linked just before its first merge, which did not land: merge it again.
                let action = pair_decision(ctx, pi, ci, None);
                out.push(Pair::new(link, Some(pi.clone()), Some(ci.clone()), action));
                continue;
            }
        }
        let still_gone = |side: Side, sr: &SideRead, id: &str, st: State| match st {
            State::Same if held.get(&link.key) == Some(&side) && !sr.knows(id) => State::Gone,
            st => st,
        };
        let ps = still_gone(Side::Provider, p, pid, side_state(ctx, Side::Provider, p, pid, &link));
        let cs = still_gone(Side::Crm, c, cid, side_state(ctx, Side::Crm, c, cid, &link));
        let action = decide(Some(&link.snapshot), &ps, &cs, &ctx.policy);
        let (pi, ci) = (p.items.get(pid).cloned(), c.items.get(cid).cloned());
        out.push(Pair::new(link, pi, ci, action));
    }
    out
}

/// What matching may not hand out: linked ids (unless their pair is relinked), and ids under a
/// suppression (stored, or made by `linked` this cycle).
pub(crate) fn claims(links: &[Link], reads: &Sides<SideRead>, linked: &[Pair]) -> Claims {
    let mut cl = Claims::default();
    for l in links {
        match l.state {
            LinkState::Linked => {
                cl.taken.provider.insert(l.provider_id.clone());
                cl.taken.crm.insert(l.crm_id.clone());
            }
            LinkState::Suppressed => {
                // A suppression made by a filter keeps both ids: when the provider item passes
                // the filters again it is matched again, and merged three-way against the
                // suppression's snapshot (the CRM copy may have changed).
                let back = !l.crm_id.is_empty() && reads.provider.items.contains_key(&l.provider_id);
                if !l.provider_id.is_empty() && !back {
                    cl.suppressed.provider.insert(l.provider_id.clone(), l.key.clone());
                }
                if !l.crm_id.is_empty() {
                    cl.suppressed.crm.insert(l.crm_id.clone(), l.key.clone());
                }
            }
            // A create in flight when a cycle died: its source and copy are matched again.
            LinkState::Creating => {}
        }
    }
    for pair in linked {
        let Some(l) = &pair.link else { continue };
        if let Decision::Relink { .. } = pair.action {
            cl.taken.provider.remove(&l.provider_id);
            cl.taken.crm.remove(&l.crm_id);
            continue;
        }
        cl.suppressed.provider.remove(&l.provider_id);
        cl.suppressed.crm.remove(&l.crm_id);
        // Suppressed this very cycle because one side is gone: a new record on that side (a
        // re-added provider item, a new CRM record) may claim the survivor.
        for (side, ids, sup) in [
            (Side::Provider, &mut cl.taken.provider, &mut cl.suppressed.provider),
            (Side::Crm, &mut cl.taken.crm, &mut cl.suppressed.crm),
        ] {
            let id = if side == Side::Provider { &l.provider_id } else { &l.crm_id };
            if pair.action == (Decision::Suppress { gone: Some(side.other()) }) {
                sup.insert(id.clone(), l.key.clone());
                ids.remove(id);
            } else {
                ids.insert(id.clone());
            }
        }
    }
    cl
}

/// The whole plan: the linked pairs, then what matching found, each decided; last, Delete
/// Safety over the deletes (against the quarantine `held` and the kind's link count).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    ctx: &Ctx<'_>,
    epoch: u64,
    links: &[Link],
    mut pairs: Vec<Pair>,
    matches: Vec<Match>,
    cursors: Cursors,
    mut ledger: Ledger,
    held: &[HeldDelete],
) -> Plan {
    let rep = ctx.rep.id.as_str();
    for m in matches {
        match m {
            Match::Pair { p, c, lifted } => {
                // A pair that re-adds a suppressed record replaces the suppression and merges
                // three-way against its snapshot (the edits made while it was out are kept).
                let base =
                    lifted.and_then(|k| match pairs.iter().position(|x| x.link.as_ref().is_some_and(|l| l.key == k)) {
                        Some(i) if matches!(pairs[i].action, Decision::Suppress { .. }) => pairs.remove(i).link,
                        _ => links.iter().find(|l| l.key == k).cloned(),
                    });
                let action = pair_decision(ctx, &p, &c, base.as_ref());
                pairs.push(Pair {
                    old_key: base.map(|l| l.key),
                    link: None,
                    provider: Some(p),
                    crm: Some(c),
                    action,
                    matched: true,
                });
            }
            Match::Alone(side, item) => {
                let canon = ctx.canon(&item.record);
                // Our own copy of a record we can no longer see on the other side (deleted or
                // out of scope while the rep was reset).
                let own = item.sync_key.as_ref().filter(|k| k.belongs_to(rep)).cloned();
                let state = match own {
                    Some(_) => State::Copy(canon.clone(), item.modified),
                    None => State::New(canon.clone(), item.modified),
                };
                let (ps, cs) = if side == Side::Provider { (state, State::Absent) } else { (State::Absent, state) };
                let action = decide(None, &ps, &cs, &ctx.policy);
                let link = match (&action, own) {
                    (Decision::Suppress { .. }, Some(key)) => {
                        ledger.skip("source_missing");
                        Some(Link::one_sided(ctx.kind, key, side, &item, canon, LinkState::Linked))
                    }
                    _ => None,
                };
                let (provider, crm) = if side == Side::Provider { (Some(item), None) } else { (None, Some(item)) };
                pairs.push(Pair { old_key: None, link, provider, crm, action, matched: false });
            }
        }
    }
    let linked = links.iter().filter(|l| l.state == LinkState::Linked).count() as u64;
    let safety::Guarded { hold, release } = safety::guard(ctx, &mut pairs, held, linked);
    Plan { kind: ctx.kind, epoch, pairs, cursors, ledger, settled: vec![], hold, release }
}

impl Plan {
    /// Add what settling the create records of a dead cycle found: the links they became, and
    /// the records to forget (their create never landed and their source is gone).
    pub(crate) fn with_settled(mut self, settled: Vec<Link>, stale: Vec<Link>) -> Self {
        self.settled = settled;
        for l in stale {
            self.pairs.push(Pair::new(l, None, None, Decision::DropLink));
        }
        self
    }
}

/// The decision for a matched pair: three-way against the snapshot of the suppression it lifts,
/// else first sight (where a record and the copy the engine made of it are told apart).
fn pair_decision(ctx: &Ctx<'_>, p: &Item, c: &Item, base: Option<&Link>) -> Decision {
    if let Some(l) = base {
        let state = |side: Side, i: &Item| {
            let canon = ctx.side_canon(side, &i.record, Some(&l.snapshot));
            if canon.hash() == l.hash { State::Same } else { State::Changed(canon, i.modified) }
        };
        return decide(Some(&l.snapshot), &state(Side::Provider, p), &state(Side::Crm, c), &ctx.policy);
    }
    let copy_of = |copy: &Item, src: &Item, src_side: Side| {
        copy.sync_key.as_ref() == Some(&SyncKey::derive(&ctx.rep.id, ctx.kind, src_side, &src.id))
    };
    let pc = ctx.canon(&p.record);
    let cc = ctx.side_canon(Side::Crm, &c.record, Some(&pc));
    let state = |i: &Item, canon: Canon, copy: bool| {
        if copy { State::Copy(canon, i.modified) } else { State::New(canon, i.modified) }
    };
    let ps = state(p, pc.clone(), copy_of(p, c, Side::Crm));
    let cs = state(c, cc, copy_of(c, p, Side::Provider));
    decide(None, &ps, &cs, &ctx.policy)
}
