//! Delete Safety (pure, part of planning): a kind's planned deletes on one side that exceed the
//! rep's thresholds ([`crate::config::HoldDeletes`], against the kind's link count) are held
//! instead of applied; held deletes an admin judged are applied (approved) or turned into a
//! restore or an unlink (discarded); a held delete whose record came back is released.
//! No I/O: a function of the plan's pairs, the quarantine as stored and the link count.

use std::collections::BTreeMap;

use super::context::Ctx;
use super::decide::Decision;
use super::plan::Pair;
use crate::model::{Side, SyncKey};
use crate::port::{HeldDelete, Verdict};

/// What the quarantine gets from a plan: deletes to hold (new), and keys to release once the
/// plan is applied.
#[derive(Debug, Default)]
pub(crate) struct Guarded {
    pub hold: Vec<HeldDelete>,
    pub release: Vec<SyncKey>,
}

/// The side a delete decision removes a record from.
fn deleted_side(action: &Decision) -> Option<Side> {
    match action {
        Decision::DeleteCrm => Some(Side::Crm),
        Decision::DeleteProvider => Some(Side::Provider),
        _ => None,
    }
}

/// What a discarded delete of the record on `side` becomes: its partner is gone, so the record
/// is copied back to the partner's side when the kind's direction copies that way (the rep's
/// removed contacts come back to the folder), and otherwise the pair is unlinked.
fn discarded(ctx: &Ctx<'_>, pair: &Pair, side: Side) -> Decision {
    let gone = side.other();
    let copies_back = match gone {
        Side::Provider => ctx.policy.direction.crm_to_provider(),
        Side::Crm => ctx.policy.direction.provider_to_crm(),
    };
    match (copies_back && pair.item(side).is_some(), side) {
        (true, Side::Crm) => Decision::CreateProvider,
        (true, Side::Provider) => Decision::CreateCrm,
        (false, _) => Decision::Suppress { gone: Some(gone) },
    }
}

/// Guard the deletes of `pairs` (see the module). `links` is the kind's link count before the
/// cycle.
pub(crate) fn guard(ctx: &Ctx<'_>, pairs: &mut [Pair], held: &[HeldDelete], links: u64) -> Guarded {
    let held: BTreeMap<&SyncKey, &HeldDelete> = held.iter().map(|h| (&h.key, h)).collect();
    let mut out = Guarded::default();
    let mut fresh: BTreeMap<Side, Vec<usize>> = BTreeMap::new();
    for (i, pair) in pairs.iter_mut().enumerate() {
        let side = deleted_side(&pair.action);
        let Some(entry) = pair.old_key.as_ref().and_then(|k| held.get(k)) else {
            if let Some(side) = side {
                fresh.entry(side).or_default().push(i);
            }
            continue;
        };
        if side != Some(entry.side) {
            // The record came back, or the pair went another way: nothing to hold any more.
            out.release.push(entry.key.clone());
            continue;
        }
        match entry.verdict {
            Verdict::Held => pair.action = Decision::Hold { side: entry.side },
            Verdict::Approved => out.release.push(entry.key.clone()),
            Verdict::Discarded => {
                pair.action = discarded(ctx, pair, entry.side);
                out.release.push(entry.key.clone());
            }
        }
    }
    for (side, idx) in fresh {
        if !ctx.hold.exceeded(ctx.kind, idx.len() as u64, links) {
            continue;
        }
        for i in idx {
            let pair = &mut pairs[i];
            pair.action = Decision::Hold { side };
            let (Some(key), Some(link)) = (pair.old_key.clone(), pair.link.as_ref()) else { continue };
            let id = if side == Side::Crm { link.crm_id.clone() } else { link.provider_id.clone() };
            out.hold.push(HeldDelete {
                kind: ctx.kind,
                key,
                side,
                id,
                label: pair.label(),
                since: ctx.now,
                verdict: Verdict::Held,
            });
        }
    }
    out
}
