//! Creates written ahead. Before a batch of creates is sent, each create is recorded as a link
//! in state [`LinkState::Creating`]: its key (the sync key stamped on the copy) and the source
//! record's id, the copy's id still empty. A cycle that finishes replaces the record with the
//! real link. When a cycle dies between the remote create and that link, the next cycle
//! settles the record here, before planning:
//! - the copy is read back (it carries the key): the record becomes the link it would have
//!   been, with the snapshot the copy was made from, so what happened to either side since is
//!   judged three-way like any linked pair: the source's later edit reaches the copy (it is
//!   not a first-sight "newest wins" between two services' clocks), the source's deletion or
//!   exclusion reaches the copy (without the record, the copy would be an orphan kept out of
//!   sync, and a deleted meeting would stay in the CRM);
//! - the copy is not read but the source is: the create did not land; it is made again
//!   (idempotently by sync key), and the link that makes replaces the record;
//! - neither: the create never landed and its source is gone: the record is forgotten.

use std::collections::BTreeMap;

use super::context::{Ctx, Sides};
use super::ledger::Ledger;
use super::read::{SideRead, read_by_id};
use crate::error::Result;
use crate::model::Side;
use crate::port::{Collection, Item, Link, LinkState, NewItem};

/// The write-ahead record of creating `new` from `src` (on `src_side`).
pub(crate) fn record(ctx: &Ctx<'_>, src_side: Side, src: &Item, new: &NewItem) -> Link {
    let snapshot = ctx.canon(&src.record);
    Link::one_sided(ctx.kind, new.sync_key.clone(), src_side, src, snapshot, LinkState::Creating)
}

/// The side a create record copies from (the one whose id it knows).
fn source_side(l: &Link) -> Side {
    if l.provider_id.is_empty() { Side::Crm } else { Side::Provider }
}

fn id(l: &Link, side: Side) -> &str {
    if side == Side::Provider { &l.provider_id } else { &l.crm_id }
}

/// The items of `side` read this cycle that carry a key, by that key.
fn copies(reads: &Sides<SideRead>, side: Side) -> BTreeMap<&str, &Item> {
    reads.get(side).items.values().filter_map(|i| i.sync_key.as_ref().map(|k| (k.as_str(), i))).collect()
}

/// Read stage: the sources of create records whose copy was read back, when the read did not
/// mention them (an incremental read may fold "created, then deleted" into nothing): by id,
/// one batch per side; an id not found is gone.
pub(crate) async fn read_sources(
    ctx: &Ctx<'_>,
    colls: Sides<&dyn Collection>,
    links: &[Link],
    reads: &mut Sides<SideRead>,
    ledger: &mut Ledger,
) -> Result<()> {
    for side in [Side::Provider, Side::Crm] {
        if reads.get(side).full {
            continue;
        }
        let read_back = copies(reads, side.other());
        let ids: Vec<String> = links
            .iter()
            .filter(|l| l.state == LinkState::Creating && source_side(l) == side)
            .filter(|l| read_back.contains_key(l.key.as_str()) && !reads.get(side).knows(id(l, side)))
            .map(|l| id(l, side).to_owned())
            .collect();
        read_by_id(ctx, side, *colls.get(side), reads.get_mut(side), &ids, ledger).await?;
    }
    Ok(())
}

/// What the create records of earlier cycles come to, given this cycle's reads.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// The links to plan with: the stored ones, each record whose copy was read back turned
    /// into the link it stands for.
    pub links: Vec<Link>,
    /// Those links: stored before any write, so that a failed write on the pair is retried
    /// next cycle from the link.
    pub settled: Vec<Link>,
    /// Records whose create never landed and whose source is gone: to forget.
    pub stale: Vec<Link>,
}

pub(crate) fn settle(links: Vec<Link>, reads: &Sides<SideRead>) -> Settled {
    let read_back = Sides { provider: copies(reads, Side::Provider), crm: copies(reads, Side::Crm) };
    let mut out = Settled::default();
    for mut l in links {
        if l.state != LinkState::Creating {
            out.links.push(l);
            continue;
        }
        let (src, target) = (source_side(&l), source_side(&l).other());
        let source = reads.get(src);
        if let Some(copy) = read_back.get(target).get(l.key.as_str()) {
            // The copy holds what the record says the source held: linked against that
            // snapshot, each side's change since is an edit (three-way), whichever clock is
            // ahead, and a source gone since is a deletion.
            let (cid, cv) = (copy.id.clone(), copy.version.clone());
            if target == Side::Provider {
                (l.provider_id, l.provider_version) = (cid, cv);
            } else {
                (l.crm_id, l.crm_version) = (cid, cv);
            }
            l.state = LinkState::Linked;
            out.settled.push(l.clone());
            out.links.push(l);
        } else if source.items.contains_key(id(&l, src)) || source.failed.contains(id(&l, src)) {
            // The create did not land: the source is created again (idempotently by key).
            out.links.push(l);
        } else {
            out.stale.push(l);
        }
    }
    out
}
