//! The pure decision function: given the last-synced snapshot (if linked) and what each side
//! looks like now, say what to do. No I/O, no clock; table-tested row by row.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::config::{ConflictPolicy, DeletePolicy, KindPolicy};
use serde::Serialize;

use crate::model::{Canon, PROVIDER_OWNED, Side};

/// One side of a pair, as the engine classified it.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// No record on this side (nothing linked, nothing matched).
    Absent,
    /// Linked and unchanged since the last sync (its canon is the snapshot), or not read.
    Same,
    /// Linked and changed since the last sync.
    Changed(Canon, Option<DateTime<Utc>>),
    /// Not linked: a new record, or an existing one matched by key, e-mail, …
    New(Canon, Option<DateTime<Utc>>),
    /// Not linked, and the engine's own copy: of the matched record on the other side (found
    /// again after a crash or a reset), or, with nothing on the other side, of a record that is
    /// gone (an orphan).
    Copy(Canon, Option<DateTime<Utc>>),
    /// Linked, and deleted or gone from scope.
    Gone,
    /// Read, but left out by a filter (`outside_window`, `private`, `no_sync_marker`, a
    /// configured filter, `cancelled`).
    Filtered(&'static str),
    /// Linked, last synced outside the event window, and not read inside it: the window moved
    /// past it. Nothing outside the window is written or deleted.
    AgedOut,
}

impl State {
    fn canon<'a>(&'a self, base: Option<&'a Canon>) -> Option<&'a Canon> {
        match self {
            State::Same | State::AgedOut => base,
            State::Changed(c, _) | State::New(c, _) | State::Copy(c, _) => Some(c),
            State::Absent | State::Gone | State::Filtered(_) => None,
        }
    }
    fn modified(&self) -> Option<DateTime<Utc>> {
        match self {
            State::Changed(_, m) | State::New(_, m) | State::Copy(_, m) => *m,
            _ => None,
        }
    }
    /// Out of the window: filtered as `outside_window`, or aged out.
    fn out_of_window(&self) -> bool {
        matches!(self, State::AgedOut | State::Filtered("outside_window"))
    }
}

/// What to do with one pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Decision {
    /// Nothing to write (the link, if any, stays as it is).
    Nothing,
    /// Copy the provider record into the CRM (stamping a sync key) and link.
    CreateCrm,
    /// Copy the CRM record into the provider (stamping a sync key) and link.
    CreateProvider,
    /// Bring both sides to `merged` and (re)link; `take` names, for every field that differs,
    /// the side whose value wins. Both write flags false = link only, zero writes.
    Merge { merged: Canon, take: BTreeMap<String, Side>, write_provider: bool, write_crm: bool, conflict: bool },
    /// Delete the CRM record and drop the link (delete policy `propagate`).
    DeleteCrm,
    /// Delete the provider record and drop the link.
    DeleteProvider,
    /// Keep the pair out of sync: drop the link but remember it as suppressed (delete policy
    /// `unlink`, a filter now excluding it, an orphaned copy). `gone` names the side whose
    /// record is gone (its id is forgotten).
    Suppress { gone: Option<Side> },
    /// A modification wins over a deletion: drop the link and match the `survivor` again like
    /// an unlinked record (a copy made before a crash is found instead of made twice).
    Relink { survivor: Side },
    /// Both records are gone: drop the link.
    DropLink,
    /// A delete of the record on `side` that Delete Safety holds (set by planning, never by
    /// [`decide`]): nothing is written, the link stays, the store keeps it in quarantine.
    Hold { side: Side },
}

/// The decision table. `base` is the link's snapshot (None = not linked).
pub fn decide(base: Option<&Canon>, p: &State, c: &State, pol: &KindPolicy) -> Decision {
    use State::*;
    let p2c = pol.direction.provider_to_crm();
    let c2p = pol.direction.crm_to_provider();
    let propagate = pol.delete == DeletePolicy::Propagate;
    let filtered = matches!(p, Filtered(_)) || matches!(c, Filtered(_));
    match (base, p, c) {
        // A copy of ours whose source is gone: never copy a copy, keep it out of sync.
        (None, Copy(..), Absent) => Decision::Suppress { gone: Some(Side::Crm) },
        (None, Absent, Copy(..)) => Decision::Suppress { gone: Some(Side::Provider) },
        (None, New(..), Absent) if p2c => Decision::CreateCrm,
        (None, Absent, New(..)) if c2p => Decision::CreateProvider,
        // A record and the copy the engine made of it: whichever was modified last carries the
        // latest edit, whatever the configured policy. The copy's time is the engine's write (or
        // the rep's edit of it), on another service's clock: it wins only when it is later by a
        // whole second (the coarsest resolution of the services' clocks); a tie goes to the record.
        (None, Copy(..), New(..)) => merge(None, p, c, &copy_vs_record(pol, Side::Provider, p, c)),
        (None, New(..), Copy(..)) => merge(None, p, c, &copy_vs_record(pol, Side::Crm, c, p)),
        (None, Copy(..), Copy(..)) => merge(None, p, c, &KindPolicy { conflict: ConflictPolicy::NewestWins, ..*pol }),
        (None, New(..), New(..)) => merge(None, p, c, pol),
        // Out of the window on both sides: forget the pair, delete nothing.
        (Some(_), _, _) if p.out_of_window() && c.out_of_window() => Decision::DropLink,
        // A filter now excludes one side: keep the pair suppressed, so it comes back three-way
        // if the item returns, and the copy left on the other side is never taken for new.
        (Some(_), _, _) if filtered => Decision::Suppress { gone: None },
        (Some(_), Same | Changed(..) | AgedOut, Same | Changed(..) | AgedOut) => merge(base, p, c, pol),
        (Some(_), Gone, Gone) => Decision::DropLink,
        (Some(_), Gone, Same | AgedOut) if propagate && p2c => Decision::DeleteCrm,
        (Some(_), Same | AgedOut, Gone) if propagate && c2p => Decision::DeleteProvider,
        (Some(_), Gone, Changed(..)) if propagate && c2p => Decision::Relink { survivor: Side::Crm },
        (Some(_), Changed(..), Gone) if propagate && p2c => Decision::Relink { survivor: Side::Provider },
        (Some(_), Gone, _) => Decision::Suppress { gone: Some(Side::Provider) },
        (Some(_), _, Gone) => Decision::Suppress { gone: Some(Side::Crm) },
        _ => Decision::Nothing,
    }
}

/// The policy that makes `copy` (on `copy_side`) win over `record` only when it was modified
/// at least a whole second later.
fn copy_vs_record(pol: &KindPolicy, copy_side: Side, copy: &State, record: &State) -> KindPolicy {
    let second = |s: &State| s.modified().map(|t| t.timestamp());
    let copy_later = matches!((second(copy), second(record)), (Some(c), Some(r)) if c > r);
    let winner = if copy_later { copy_side } else { copy_side.other() };
    let conflict = if winner == Side::Provider { ConflictPolicy::ProviderWins } else { ConflictPolicy::CrmWins };
    KindPolicy { conflict, ..*pol }
}

fn merge(base: Option<&Canon>, p: &State, c: &State, pol: &KindPolicy) -> Decision {
    let (Some(pc), Some(cc)) = (p.canon(base), c.canon(base)) else {
        return Decision::Nothing;
    };
    let p_changed = base.is_none_or(|b| pc != b);
    let c_changed = base.is_none_or(|b| cc != b);
    let conflict = base.is_some() && p_changed && c_changed && pc != cc;
    // One-way directions: the source side is the truth.
    let forced = match (pol.direction.provider_to_crm(), pol.direction.crm_to_provider()) {
        (true, false) => Some(Side::Provider),
        (false, true) => Some(Side::Crm),
        _ => None,
    };
    let whole = match pol.conflict {
        ConflictPolicy::CrmWins => Some(Side::Crm),
        ConflictPolicy::ProviderWins => Some(Side::Provider),
        ConflictPolicy::NewestWins => match (p.modified(), c.modified()) {
            (Some(pm), Some(cm)) if pm > cm => Some(Side::Provider),
            _ => Some(Side::Crm),
        },
        ConflictPolicy::FieldMerge => None,
    };
    let fields: BTreeSet<&String> =
        pc.0.keys().chain(cc.0.keys()).chain(base.into_iter().flat_map(|b| b.0.keys())).collect();
    let mut take = BTreeMap::new();
    let mut merged = BTreeMap::new();
    for f in fields {
        let (pv, cv) = (pc.0.get(f), cc.0.get(f));
        let side = if pv == cv {
            Side::Crm
        } else if PROVIDER_OWNED.contains(&f.as_str()) {
            // The CRM derives these from the provider: its value is never a change to copy.
            Side::Provider
        } else if let Some(s) = forced {
            s
        } else if !(p_changed && c_changed) {
            if p_changed { Side::Provider } else { Side::Crm }
        } else if let Some(s) = whole {
            s
        } else {
            // Field merge: keep the side that changed this field; both changed → CRM.
            match base.map(|b| b.0.get(f)) {
                Some(bv) if pv == bv => Side::Crm,
                Some(bv) if cv == bv => Side::Provider,
                Some(_) => Side::Crm,
                None if cv.is_none() => Side::Provider,
                None => Side::Crm,
            }
        };
        if pv != cv {
            take.insert(f.clone(), side);
        }
        let v = if side == Side::Provider { pv } else { cv };
        if let Some(v) = v {
            merged.insert(f.clone(), v.clone());
        }
    }
    let write_crm = take.values().any(|s| *s == Side::Provider);
    let write_provider = take.values().any(|s| *s == Side::Crm);
    Decision::Merge { merged: Canon(merged), take, write_provider, write_crm, conflict }
}

#[cfg(test)]
mod tests;
