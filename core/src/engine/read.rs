//! Stage 1, read: both sides' changes (incremental from the stored cursors, full when there are
//! none or they expired), filtered and validated into items, removals, filtered ids and failed
//! ids per side. Also re-reads by id the items that failed last cycle, the CRM partners of
//! suppressions that come back and the sources of creates a dead cycle left unlinked, and
//! refuses an empty full read while links exist.

use std::collections::{BTreeMap, BTreeSet};

use tracing::info;

use super::context::{Ctx, Sides};
use super::intent;
use super::ledger::Ledger;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Side;
use crate::port::{Change, Collection, Cursors, Item, Link, LinkState};

/// What one side's read left us with, after filters and validation.
#[derive(Debug, Default)]
pub(crate) struct SideRead {
    pub full: bool,
    pub items: BTreeMap<String, Item>,
    pub removed: BTreeSet<String>,
    /// Read, but left out by a filter (reason).
    pub filtered: BTreeMap<String, &'static str>,
    /// Could not be read or is invalid: its link (if any) is left untouched this cycle.
    pub failed: BTreeSet<String>,
    pub cursor: Option<String>,
}

impl SideRead {
    /// Whether the read said anything at all about `id`.
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.items.contains_key(id)
            || self.removed.contains(id)
            || self.failed.contains(id)
            || self.filtered.contains_key(id)
    }
}

/// Read both sides and check the result is plausible.
pub(crate) async fn read(
    ctx: &Ctx<'_>,
    colls: Sides<&dyn Collection>,
    links: &[Link],
    cursors: &Cursors,
    ledger: &mut Ledger,
) -> Result<Sides<SideRead>> {
    let provider = read_side(ctx, Side::Provider, colls.provider, cursors.provider.as_deref(), ledger)
        .await
        .map_err(|e| e.context("provider read"))?;
    let crm = read_side(ctx, Side::Crm, colls.crm, cursors.crm.as_deref(), ledger)
        .await
        .map_err(|e| e.context("crm read"))?;
    let mut reads = Sides { provider, crm };
    ledger.report.full_read_provider = reads.provider.full;
    ledger.report.full_read_crm = reads.crm.full;
    for side in [Side::Provider, Side::Crm] {
        retry_failed(ctx, side, *colls.get(side), reads.get_mut(side), ledger).await?;
    }
    read_missing_partners(ctx, colls, links, &mut reads, ledger).await?;
    intent::read_sources(ctx, colls, links, &mut reads, ledger).await?;
    empty_side_guard(ctx, links, &reads)?;
    Ok(reads)
}

async fn read_side(
    ctx: &Ctx<'_>,
    side: Side,
    coll: &dyn Collection,
    cursor: Option<&str>,
    ledger: &mut Ledger,
) -> Result<SideRead> {
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
        ledger.skip(&s.reason);
    }
    for f in ch.failures {
        sr.failed.insert(f.id.clone());
        ledger.fail(side, &f.id, f.error.to_string());
    }
    for change in ch.items {
        match change {
            Change::Upsert(item) => classify(ctx, side, &mut sr, item, ledger),
            Change::Removed(id) => {
                sr.items.remove(&id);
                sr.filtered.remove(&id);
                sr.removed.insert(id);
            }
        }
    }
    Ok(sr)
}

/// File one read item: cancelled events count as removed, filtered events are skipped with
/// their reason, records that cannot sync are item errors, the rest are items.
fn classify(ctx: &Ctx<'_>, side: Side, sr: &mut SideRead, item: Item, ledger: &mut Ledger) {
    sr.removed.remove(&item.id);
    if item.record.kind() != ctx.kind {
        sr.failed.insert(item.id.clone());
        let reason = format!("expected a {}, got a {}", ctx.kind.as_str(), item.record.kind().as_str());
        return ledger.fail(side, &item.id, reason);
    }
    if let Some(e) = item.record.as_event() {
        if e.cancelled {
            sr.items.remove(&item.id);
            sr.removed.insert(item.id);
            return;
        }
        if let Some(reason) = ctx.event_skip(side, e) {
            ledger.skip(reason);
            sr.filtered.insert(item.id, reason);
            return;
        }
    }
    if let Some(reason) = item.record.invalid_reason() {
        sr.failed.insert(item.id.clone());
        return ledger.fail(side, &item.id, reason);
    }
    sr.items.insert(item.id.clone(), item);
}

/// Re-read by id the items that failed last cycle (incremental reads would not see them).
async fn retry_failed(
    ctx: &Ctx<'_>,
    side: Side,
    coll: &dyn Collection,
    sr: &mut SideRead,
    ledger: &mut Ledger,
) -> Result<()> {
    if sr.full {
        return Ok(());
    }
    let ids: Vec<String> = ledger.retried(side).filter(|id| !sr.knows(id)).cloned().collect();
    read_by_id(ctx, side, coll, sr, &ids, ledger).await
}

/// Read `ids` of one side by id, in batches, into `sr`: an id not found is removed.
pub(crate) async fn read_by_id(
    ctx: &Ctx<'_>,
    side: Side,
    coll: &dyn Collection,
    sr: &mut SideRead,
    ids: &[String],
    ledger: &mut Ledger,
) -> Result<()> {
    for chunk in ids.chunks(coll.capabilities().max_batch.max(1)) {
        let got = coll.get_many(chunk).await?;
        let found: BTreeSet<String> = got.iter().map(|i| i.id.clone()).collect();
        for item in got {
            classify(ctx, side, sr, item, ledger);
        }
        sr.removed.extend(chunk.iter().filter(|id| !found.contains(*id)).cloned());
    }
    Ok(())
}

/// Pairs that need both sides this cycle, of which an incremental read may hold one: read the
/// other by the id its link remembers.
/// - A suppressed pair whose provider item passes the filters again is matched again; its CRM
///   record may not have changed (and may no longer match by content).
/// - A pair linked just before its first merge (`Pending::first_sight`) whose update did not
///   land is merged again; only the side retried for its item error may have been read.
async fn read_missing_partners(
    ctx: &Ctx<'_>,
    colls: Sides<&dyn Collection>,
    links: &[Link],
    reads: &mut Sides<SideRead>,
    ledger: &mut Ledger,
) -> Result<()> {
    let id = |l: &Link, side: Side| if side == Side::Provider { l.provider_id.clone() } else { l.crm_id.clone() };
    for side in [Side::Crm, Side::Provider] {
        let (mine, theirs) = (reads.get(side), reads.get(side.other()));
        let ids: Vec<String> = links
            .iter()
            .filter(|l| {
                let returning = l.state == LinkState::Suppressed && side == Side::Crm;
                returning || l.pending.as_ref().is_some_and(|p| p.first_sight)
            })
            .filter(|l| !id(l, side).is_empty() && theirs.items.contains_key(&id(l, side.other())))
            .map(|l| id(l, side))
            .filter(|i| !mine.items.contains_key(i) && !mine.removed.contains(i) && !mine.filtered.contains_key(i))
            .collect();
        let coll = *colls.get(side);
        for chunk in ids.chunks(coll.capabilities().max_batch.max(1)) {
            for item in coll.get_many(chunk).await? {
                classify(ctx, side, reads.get_mut(side), item, ledger);
            }
        }
    }
    Ok(())
}

/// Empty-side guard (vdirsyncer's): a full read that returns nothing while links exist is far
/// more likely an outage or a wrong folder than the rep deleting everything.
fn empty_side_guard(ctx: &Ctx<'_>, links: &[Link], reads: &Sides<SideRead>) -> Result<()> {
    let live = links.iter().filter(|l| l.state == LinkState::Linked && !ctx.aged(&l.snapshot)).count();
    for side in [Side::Provider, Side::Crm] {
        let sr = reads.get(side);
        if sr.full && live > 0 && sr.items.is_empty() && sr.filtered.is_empty() && sr.failed.is_empty() {
            return Err(Error::new(
                ErrorKind::EmptySide,
                format!(
                    "the {} side read no {}s at all while {live} are linked; refusing to treat them as deleted (nothing was changed)",
                    side.as_str(),
                    ctx.kind.as_str()
                ),
            ));
        }
    }
    Ok(())
}
