//! Stage 4, apply: run a [`Plan`] against both sides and the store. First, in one store
//! transaction, the link changes that need no remote write, and the stored cursors cleared; then the writes in batches of
//! each side's `max_batch` (CRM first, then the provider; creates, updates, deletes), each
//! create or update batch preceded by its write-ahead record (a `Creating` link, or
//! `Link::pending`) and followed by one store transaction with its link changes and item errors; last, the cursors and the resolved item
//! errors. Owns the runtime progress of each pair (writes pending, failed, what was written).

use std::collections::{BTreeMap, BTreeSet};

use super::context::{Ctx, Sides};
use super::decide::{Decision, State, decide};
use super::intent;
use super::ledger::Ledger;
use super::plan::{Pair, Plan};
use crate::error::{Error, Result};
use crate::model::{Canon, PROVIDER_OWNED, Side, SyncKey};
use crate::port::{Collection, Cursors, Item, Link, LinkBatch, LinkState, NewItem, Pending, Store, Update, Written};
use crate::report::KindReport;

/// Where one pair stands while its plan runs.
#[derive(Debug, Default)]
struct Progress {
    /// Remote writes not yet done.
    pending: u8,
    failed: bool,
    /// What the writes returned, per side.
    written: Sides<Option<Item>>,
}

#[derive(Debug)]
enum Op {
    Create(NewItem),
    Update(Update),
    Delete(String),
}

impl Op {
    /// Writes of one side run creates, then updates, then deletes.
    fn rank(&self) -> u8 {
        match self {
            Op::Create(_) => 0,
            Op::Update(_) => 1,
            Op::Delete(_) => 2,
        }
    }
}

/// The writes to one side of one rank: (the side, [(pair index, op)]).
type Queue = (Side, Vec<(usize, Op)>);

/// The store side of applying: where link changes and item errors are committed.
struct Sink<'a> {
    store: &'a dyn Store,
    rep: &'a str,
    epoch: u64,
    kind: crate::model::Kind,
}

impl Sink<'_> {
    async fn commit(&self, ledger: &mut Ledger, mut batch: LinkBatch) -> Result<()> {
        batch.errors.append(&mut ledger.take_errors());
        if batch.is_empty() {
            return Ok(());
        }
        self.store.commit(self.rep, self.epoch, self.kind, &batch).await
    }
}

/// Run `plan`; returns the kind's counters.
pub(crate) async fn apply(
    ctx: &Ctx<'_>,
    colls: Sides<&dyn Collection>,
    store: &dyn Store,
    plan: Plan,
) -> (KindReport, Result<()>) {
    let Plan { pairs, cursors, mut ledger, epoch, settled, hold, release, .. } = plan;
    let sink = Sink { store, rep: &ctx.rep.id, epoch, kind: ctx.kind };
    let forget = (!settled.is_empty()).then(Cursors::default);
    let settled = LinkBatch { upsert: settled, cursors: forget, hold, ..Default::default() };
    let result = match sink.commit(&mut ledger, settled).await {
        Ok(()) => run(ctx, colls, &sink, &pairs, &mut ledger).await,
        Err(e) => Err(e),
    };
    let result = match result {
        Ok(()) => {
            let batch =
                LinkBatch { clear_errors: ledger.resolved(), cursors: Some(cursors), release, ..Default::default() };
            sink.commit(&mut ledger, batch).await
        }
        Err(e) => Err(e),
    };
    (ledger.report, result)
}

async fn run(
    ctx: &Ctx<'_>,
    colls: Sides<&dyn Collection>,
    sink: &Sink<'_>,
    pairs: &[Pair],
    ledger: &mut Ledger,
) -> Result<()> {
    let mut progress: Vec<Progress> = pairs.iter().map(|_| Progress::default()).collect();
    // Queue the remote writes: CRM first, then the provider; creates, updates, deletes.
    let mut queues: BTreeMap<(bool, u8), Queue> = BTreeMap::new();
    for (i, pair) in pairs.iter().enumerate() {
        let ops = ops(ctx, pair);
        progress[i].pending = ops.len() as u8;
        for (side, op) in ops {
            queues.entry((side == Side::Provider, op.rank())).or_insert_with(|| (side, vec![])).1.push((i, op));
        }
    }
    // Link changes that need no remote write go first: a link the writes below make again
    // (same key) must not be removed after them.
    let mut first = LinkBatch::default();
    for (pair, pr) in pairs.iter().zip(&progress).filter(|(_, pr)| pr.pending == 0) {
        finish(ctx, pair, pr, &mut ledger.report, &mut first);
    }
    // The stored cursors would hide from the next cycle the deletion of a record this plan links
    // or copies now (their delta starts before the plan saw it): they go with the first change
    // and come back, new, with the last, so a cycle that dies leaves the next one a full read.
    if !first.is_empty() || !queues.is_empty() {
        first.cursors = Some(Cursors::default());
    }
    sink.commit(ledger, first).await?;
    for (side, queue) in queues.into_values() {
        let coll = *colls.get(side);
        let max = coll.capabilities().max_batch.max(1);
        let live: Vec<(usize, Op)> = queue.into_iter().filter(|(i, _)| !progress[*i].failed).collect();
        for (n, chunk) in live.chunks(max).enumerate() {
            // Progress of long work, in the logs (per kind: the span names rep and kind).
            tracing::info!(
                side = side.as_str(),
                op = ["create", "update", "delete"][usize::from(chunk[0].1.rank())],
                written = n * max,
                of = live.len(),
                "writing"
            );
            write_ahead(ctx, sink, pairs, chunk).await?;
            let results = send(ctx, side, coll, chunk).await?;
            let mut batch = LinkBatch::default();
            for ((i, _), res) in chunk.iter().zip(results) {
                let pr = &mut progress[*i];
                match res {
                    Ok(item) => {
                        if item.is_some() {
                            *pr.written.get_mut(side) = item;
                        }
                        pr.pending -= 1;
                        if pr.pending == 0 {
                            finish(ctx, &pairs[*i], pr, &mut ledger.report, &mut batch);
                        }
                    }
                    Err(err) => {
                        pr.failed = true;
                        let (bs, bid) = blame(&pairs[*i], pr, side);
                        ledger.fail(bs, &bid, format!("{} write failed: {err}", side.as_str()));
                    }
                }
            }
            sink.commit(ledger, batch).await?;
        }
    }
    Ok(())
}

/// (id, version) of a side: the fresh write result, else the read item, else the link.
fn reference(pair: &Pair, pr: &Progress, side: Side) -> Option<(String, String)> {
    if let Some(i) = pr.written.get(side).as_ref().or(pair.item(side)) {
        return Some((i.id.clone(), i.version.clone()));
    }
    pair.link.as_ref().map(|l| match side {
        Side::Provider => (l.provider_id.clone(), l.provider_version.clone()),
        Side::Crm => (l.crm_id.clone(), l.crm_version.clone()),
    })
}

/// The update that brings `target` to the merged canon.
fn update_for(pair: &Pair, target: Side, take: &BTreeMap<String, Side>, merged: &Canon) -> Option<Update> {
    let (id, version) = reference(pair, &Progress::default(), target)?;
    let source = pair.item(target).or_else(|| pair.item(target.other()))?;
    let mut record = source.record.clone();
    let mut fields = vec![];
    for (f, side) in take {
        if *side == target {
            continue;
        }
        let value = match pair.item(*side) {
            Some(i) => i.record.field(f),
            None => merged.get(f).map(str::to_owned),
        };
        record.set_field(f, value);
        fields.push(f.clone());
    }
    (!fields.is_empty()).then_some(Update { id, version, fields, record })
}

/// The remote writes a pair's action needs.
fn ops(ctx: &Ctx<'_>, pair: &Pair) -> Vec<(Side, Op)> {
    let create = |from: Side| {
        pair.item(from)
            .map(|src| {
                let key = SyncKey::derive(&ctx.rep.id, ctx.kind, from, &src.id);
                (from.other(), Op::Create(NewItem { sync_key: key, record: src.record.clone() }))
            })
            .into_iter()
            .collect()
    };
    let delete = |side: Side| {
        reference(pair, &Progress::default(), side).map(|(id, _)| (side, Op::Delete(id))).into_iter().collect()
    };
    match &pair.action {
        Decision::CreateCrm => create(Side::Provider),
        Decision::CreateProvider => create(Side::Crm),
        Decision::Merge { merged, take, write_provider, write_crm, .. } => {
            [(Side::Crm, *write_crm), (Side::Provider, *write_provider)]
                .into_iter()
                .filter(|(_, w)| *w)
                .filter_map(|(side, _)| update_for(pair, side, take, merged).map(|u| (side, Op::Update(u))))
                .collect()
        }
        Decision::DeleteCrm => delete(Side::Crm),
        Decision::DeleteProvider => delete(Side::Provider),
        Decision::Nothing
        | Decision::Suppress { .. }
        | Decision::DropLink
        | Decision::Relink { .. }
        | Decision::Hold { .. } => vec![],
    }
}

/// The item an error of a write to `written` is recorded against: the other side's, whose
/// change drove the write (a create or update copies it, a delete propagates its deletion), so
/// the next cycle re-reads it by id and tries again.
fn blame(pair: &Pair, pr: &Progress, written: Side) -> (Side, String) {
    let driver = written.other();
    let id = reference(pair, pr, driver)
        .map(|(id, _)| id)
        .or_else(|| reference(pair, pr, written).map(|(id, _)| id))
        .unwrap_or_default();
    (driver, id)
}

/// Why a record a create returned must not be linked: creates are idempotent by sync key, so a
/// create can hand back an earlier copy the rep has cancelled or excluded since.
fn excluded(ctx: &Ctx<'_>, made: &Item, side: Side) -> Option<&'static str> {
    let ev = made.record.as_event()?;
    if ev.cancelled { Some("cancelled") } else { ctx.event_skip(side, ev) }
}

/// Fold a finished pair into the batch and the counters.
fn finish(ctx: &Ctx<'_>, pair: &Pair, pr: &Progress, kr: &mut KindReport, batch: &mut LinkBatch) {
    let remove_old = |batch: &mut LinkBatch, new_key: Option<&SyncKey>| {
        if let Some(old) = &pair.old_key
            && Some(old) != new_key
        {
            batch.remove.push(old.clone());
        }
    };
    match &pair.action {
        Decision::Nothing | Decision::Hold { .. } => {}
        Decision::CreateCrm | Decision::CreateProvider => {
            let src_side = if pair.action == Decision::CreateCrm { Side::Provider } else { Side::Crm };
            let made_side = src_side.other();
            let (Some(src), Some(made)) = (pair.item(src_side), pr.written.get(made_side).as_ref()) else {
                return;
            };
            let key =
                made.sync_key.clone().unwrap_or_else(|| SyncKey::derive(&ctx.rep.id, ctx.kind, src_side, &src.id));
            let snapshot = ctx.canon(&src.record);
            let (pi, ci) = if src_side == Side::Provider { (src, made) } else { (made, src) };
            let mut link = new_link(ctx.kind, key, pi, ci, snapshot);
            remove_old(batch, Some(&link.key));
            if let Some(reason) = excluded(ctx, made, made_side) {
                // The create found our earlier copy, which the rep since cancelled or excluded (a
                // reset hid that from us): decide again with what the create returned.
                let made_state = State::Filtered(reason);
                let (ps, cs) =
                    if made_side == Side::Crm { (State::Same, made_state) } else { (made_state, State::Same) };
                if let Decision::Suppress { .. } = decide(Some(&link.snapshot), &ps, &cs, &ctx.policy) {
                    link.state = LinkState::Suppressed;
                    batch.upsert.push(link);
                    kr.skip(reason);
                    kr.suppressed += 1;
                    return;
                }
            }
            batch.upsert.push(link);
            if src_side == Side::Provider {
                kr.created_in_crm += 1;
                unrelated(ctx, src, made, kr);
            } else {
                kr.created_in_provider += 1;
            }
        }
        Decision::Merge { merged, take, write_provider, write_crm, conflict } => {
            if let (Some(p), Some(c), true) = (pair.item(Side::Provider), &pr.written.crm, *write_crm) {
                if PROVIDER_OWNED.iter().any(|f| take.get(*f) == Some(&Side::Provider)) {
                    unrelated(ctx, p, c, kr);
                }
            }
            let Some(link) = merged_link(ctx, pair, pr, merged) else {
                return;
            };
            if pair.link.as_ref() != Some(&link) {
                remove_old(batch, Some(&link.key));
                batch.upsert.push(link);
            }
            if pair.matched {
                kr.linked += 1;
            }
            if *conflict {
                kr.conflicts += 1;
                let name = format!("{:?}", ctx.policy.conflict).to_lowercase();
                *kr.conflict_resolutions.entry(name).or_default() += 1;
            }
            kr.updated_in_crm += u64::from(*write_crm && pr.written.crm.is_some());
            kr.updated_in_provider += u64::from(*write_provider && pr.written.provider.is_some());
        }
        Decision::DeleteCrm | Decision::DeleteProvider | Decision::DropLink | Decision::Relink { .. } => {
            if let Some(k) = &pair.old_key {
                batch.remove.push(k.clone());
            }
            match pair.action {
                Decision::DeleteCrm => kr.deleted_in_crm += 1,
                Decision::DeleteProvider => kr.deleted_in_provider += 1,
                _ => {}
            }
            if pair.link.as_ref().is_none_or(|l| l.state != LinkState::Creating) {
                kr.unlinked += 1;
            }
        }
        Decision::Suppress { gone } => {
            if let Some(l) = &pair.link {
                let mut s = l.clone();
                s.state = LinkState::Suppressed;
                match gone {
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

/// Count the attendees of `src` (a provider event) that the CRM record `made` from it is not
/// related to: the CRM reports the attendees it related, the others are listed in the report.
fn unrelated(ctx: &Ctx<'_>, src: &Item, made: &Item, kr: &mut KindReport) {
    if !ctx.fields.contains(&"attendees") {
        return;
    }
    let related: BTreeSet<String> = made.record.emails().into_iter().collect();
    let wanted: BTreeSet<String> = src.record.emails().into_iter().collect();
    for a in wanted.difference(&related) {
        *kr.unrelated_attendees.entry(a.clone()).or_default() += 1;
    }
}

/// The link a merge leaves: both sides' ids and versions (fresh from the writes when there
/// were any), the merged snapshot.
fn merged_link(ctx: &Ctx<'_>, pair: &Pair, pr: &Progress, merged: &Canon) -> Option<Link> {
    let ((pid, pv), (cid, cv)) = (reference(pair, pr, Side::Provider)?, reference(pair, pr, Side::Crm)?);
    let key = match (&pair.link, &pair.provider, &pair.crm) {
        (Some(l), _, _) => l.key.clone(),
        (None, Some(p), Some(c)) => pair_key(&ctx.rep.id, p, c),
        _ => return None,
    };
    Some(Link {
        kind: ctx.kind,
        key,
        provider_id: pid,
        crm_id: cid,
        provider_version: pv,
        crm_version: cv,
        hash: merged.hash(),
        snapshot: merged.clone(),
        state: LinkState::Linked,
        pending: None,
    })
}

/// Record the intent of the writes in `chunk` before sending them: of an update on its link (a
/// pair matched this cycle, at first sight, gets its link here, marked as such), of a create as
/// a link in state `Creating` (see `intent`).
async fn write_ahead(ctx: &Ctx<'_>, sink: &Sink<'_>, pairs: &[Pair], chunk: &[(usize, Op)]) -> Result<()> {
    let mut batch = LinkBatch::default();
    for (i, op) in chunk {
        let pair = &pairs[*i];
        if let Op::Create(new) = op {
            let src_side = if pair.action == Decision::CreateCrm { Side::Provider } else { Side::Crm };
            if let Some(src) = pair.item(src_side)
                && pair.old_key.as_ref() != Some(&new.sync_key)
            {
                batch.upsert.push(intent::record(ctx, src_side, src, new));
            }
            continue;
        }
        let (Op::Update(_), Decision::Merge { merged, take, write_provider, write_crm, .. }) = (op, &pair.action)
        else {
            continue;
        };
        let first_sight = pair.link.is_none() && pair.old_key.is_none();
        let link = match &pair.link {
            Some(l) => l.clone(),
            None if first_sight => match merged_link(ctx, pair, &Progress::default(), merged) {
                Some(l) => l,
                None => continue,
            },
            None => continue,
        };
        let targets: Vec<Side> = [(Side::Provider, *write_provider), (Side::Crm, *write_crm)]
            .into_iter()
            .filter_map(|(s, w)| w.then_some(s))
            .collect();
        let written = targets.iter().map(|t| (*t, written(pair, &link, *t, take))).collect();
        let pending = Some(Pending { snapshot: merged.clone(), targets, written, first_sight });
        if link.pending != pending {
            batch.upsert.push(Link { pending, ..link });
        }
    }
    if batch.upsert.is_empty() {
        return Ok(());
    }
    sink.store.commit(sink.rep, sink.epoch, sink.kind, &batch).await
}

/// What the update of `target` writes over: the version it is based on, and the old values of
/// the fields it writes (the target's read canon, or the link's snapshot when it was not read).
fn written(pair: &Pair, link: &Link, target: Side, take: &BTreeMap<String, Side>) -> Written {
    let fields: Vec<String> = take.iter().filter(|(_, from)| **from != target).map(|(f, _)| f.clone()).collect();
    let canon = pair.item(target).map_or_else(|| link.snapshot.clone(), |i| i.record.canon());
    let before = Canon(fields.iter().filter_map(|f| canon.get(f).map(|v| (f.clone(), v.to_owned()))).collect());
    let based_on = reference(pair, &Progress::default(), target).map(|(_, v)| v).unwrap_or_default();
    Written { based_on, fields, before }
}

/// One batched remote call; per-item results (the created/updated item, or nothing for deletes).
async fn send(
    ctx: &Ctx<'_>,
    side: Side,
    coll: &dyn Collection,
    chunk: &[(usize, Op)],
) -> Result<Vec<Result<Option<Item>>>> {
    let ctx_err = |e: Error| e.context(format!("{} {} write", side.as_str(), ctx.kind.as_str()));
    let some = |r: Vec<Result<Item>>| r.into_iter().map(|r| r.map(Some)).collect::<Vec<_>>();
    let out: Vec<Result<Option<Item>>> = match chunk.first().map(|(_, op)| op) {
        None => vec![],
        Some(Op::Create(_)) => {
            let items: Vec<NewItem> =
                chunk.iter().filter_map(|(_, o)| if let Op::Create(n) = o { Some(n.clone()) } else { None }).collect();
            some(coll.create_many(&items).await.map_err(ctx_err)?)
        }
        Some(Op::Update(_)) => {
            let items: Vec<Update> =
                chunk.iter().filter_map(|(_, o)| if let Op::Update(u) = o { Some(u.clone()) } else { None }).collect();
            some(coll.update_many(&items).await.map_err(ctx_err)?)
        }
        Some(Op::Delete(_)) => {
            let ids: Vec<String> =
                chunk.iter().filter_map(|(_, o)| if let Op::Delete(d) = o { Some(d.clone()) } else { None }).collect();
            coll.delete_many(&ids).await.map_err(ctx_err)?.into_iter().map(|r| r.map(|()| None)).collect()
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

fn new_link(kind: crate::model::Kind, key: SyncKey, p: &Item, c: &Item, snapshot: Canon) -> Link {
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
