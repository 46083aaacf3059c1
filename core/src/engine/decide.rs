//! The pure decision function: given the last-synced snapshot (if linked) and what each side
//! looks like now, say what to do. No I/O, no clock; table-tested row by row.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use crate::config::{ConflictPolicy, DeletePolicy, KindPolicy};
use crate::model::{Canon, Side};

/// One side of a pair, as the engine classified it.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// No record on this side (nothing linked, nothing matched).
    Absent,
    /// Linked and unchanged since the last sync (its canon is the snapshot).
    Same,
    /// Linked and changed since the last sync.
    Changed(Canon, Option<DateTime<Utc>>),
    /// Not linked: a new record, or an existing one matched by key, e-mail, …
    New(Canon, Option<DateTime<Utc>>),
    /// Linked, and deleted or gone from scope.
    Gone,
}

impl State {
    fn canon<'a>(&'a self, base: Option<&'a Canon>) -> Option<&'a Canon> {
        match self {
            State::Same => base,
            State::Changed(c, _) | State::New(c, _) => Some(c),
            State::Absent | State::Gone => None,
        }
    }
    fn modified(&self) -> Option<DateTime<Utc>> {
        match self {
            State::Changed(_, m) | State::New(_, m) => *m,
            _ => None,
        }
    }
}

/// What to do with one pair.
#[derive(Clone, Debug, PartialEq)]
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
    /// Drop the link but remember the pair as suppressed (delete policy `unlink`).
    Suppress,
    /// Both records are gone: drop the link.
    DropLink,
}

/// The decision table of ARCHITECTURE.md. `base` is the link's snapshot (None = not linked).
pub fn decide(base: Option<&Canon>, p: &State, c: &State, pol: &KindPolicy) -> Decision {
    use State::*;
    let p2c = pol.direction.provider_to_crm();
    let c2p = pol.direction.crm_to_provider();
    let propagate = pol.delete == DeletePolicy::Propagate;
    match (base, p, c) {
        (None, New(..), Absent) if p2c => Decision::CreateCrm,
        (None, Absent, New(..)) if c2p => Decision::CreateProvider,
        (None, New(..), New(..)) => merge(None, p, c, pol),
        (Some(_), Same | Changed(..), Same | Changed(..)) => merge(base, p, c, pol),
        (Some(_), Gone, Gone) => Decision::DropLink,
        (Some(_), Gone, Same) if propagate && p2c => Decision::DeleteCrm,
        (Some(_), Same, Gone) if propagate && c2p => Decision::DeleteProvider,
        // A modification wins over a deletion: re-create the deleted side.
        (Some(_), Gone, Changed(..)) if propagate && c2p => Decision::CreateProvider,
        (Some(_), Changed(..), Gone) if propagate && p2c => Decision::CreateCrm,
        (Some(_), Gone, _) | (Some(_), _, Gone) => Decision::Suppress,
        _ => Decision::Nothing,
    }
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
mod tests {
    use super::*;
    use crate::config::Direction;

    fn canon(pairs: &[(&str, &str)]) -> Canon {
        Canon(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
    fn pol(direction: Direction, conflict: ConflictPolicy, delete: DeletePolicy) -> KindPolicy {
        KindPolicy { direction, conflict, delete }
    }
    const BOTH: Direction = Direction::Both;

    /// (row, base, provider, crm, policy, expected decision kind, expected writes (provider, crm))
    type Row<'a> = (&'a str, Option<&'a Canon>, State, State, KindPolicy, &'a str, (bool, bool));

    /// Which sides a decision writes: (provider, crm).
    fn writes(d: &Decision) -> (bool, bool) {
        match d {
            Decision::Merge { write_provider, write_crm, .. } => (*write_provider, *write_crm),
            Decision::CreateCrm | Decision::DeleteCrm => (false, true),
            Decision::CreateProvider | Decision::DeleteProvider => (true, false),
            _ => (false, false),
        }
    }

    #[test]
    fn decision_table() {
        let base = canon(&[("email", "a@x.io"), ("title", "CEO")]);
        let edited = canon(&[("email", "a@x.io"), ("title", "CTO")]);
        let other = canon(&[("email", "a@x.io"), ("title", "CFO")]);
        let new = |c: &Canon| State::New(c.clone(), None);
        let changed = |c: &Canon| State::Changed(c.clone(), None);
        let unlink = pol(BOTH, ConflictPolicy::CrmWins, DeletePolicy::Unlink);
        let propagate = pol(BOTH, ConflictPolicy::CrmWins, DeletePolicy::Propagate);
        use State::*;
        // (row, base, provider, crm, policy, expected decision kind, expected writes (provider, crm))
        let rows: Vec<Row> = vec![
            ("none | new | none found → create on CRM", None, new(&base), Absent, unlink, "CreateCrm", (false, true)),
            (
                "none | none found | new → create in provider",
                None,
                Absent,
                new(&base),
                unlink,
                "CreateProvider",
                (true, false),
            ),
            (
                "none | matched equal | matched equal → link only",
                None,
                new(&base),
                new(&base),
                unlink,
                "Merge",
                (false, false),
            ),
            (
                "none | matched differ | matched differ → first-sight merge (crm_wins)",
                None,
                new(&edited),
                new(&base),
                unlink,
                "Merge",
                (true, false),
            ),
            (
                "linked | changed | unchanged → update CRM",
                Some(&base),
                changed(&edited),
                Same,
                unlink,
                "Merge",
                (false, true),
            ),
            (
                "linked | unchanged | changed → update provider",
                Some(&base),
                Same,
                changed(&edited),
                unlink,
                "Merge",
                (true, false),
            ),
            (
                "linked | changed | changed → conflict, crm wins",
                Some(&base),
                changed(&edited),
                changed(&other),
                unlink,
                "Merge",
                (true, false),
            ),
            (
                "linked | gone | unchanged, propagate → delete CRM",
                Some(&base),
                Gone,
                Same,
                propagate,
                "DeleteCrm",
                (false, true),
            ),
            (
                "linked | gone | unchanged, unlink → suppress",
                Some(&base),
                Gone,
                Same,
                unlink,
                "Suppress",
                (false, false),
            ),
            (
                "linked | unchanged | gone, propagate → delete provider",
                Some(&base),
                Same,
                Gone,
                propagate,
                "DeleteProvider",
                (true, false),
            ),
            (
                "linked | unchanged | gone, unlink → suppress",
                Some(&base),
                Same,
                Gone,
                unlink,
                "Suppress",
                (false, false),
            ),
            (
                "linked | gone | changed, propagate → modification wins",
                Some(&base),
                Gone,
                changed(&edited),
                propagate,
                "CreateProvider",
                (true, false),
            ),
            (
                "linked | changed | gone, propagate → modification wins",
                Some(&base),
                changed(&edited),
                Gone,
                propagate,
                "CreateCrm",
                (false, true),
            ),
            (
                "linked | gone | changed, unlink → suppress",
                Some(&base),
                Gone,
                changed(&edited),
                unlink,
                "Suppress",
                (false, false),
            ),
            ("linked | gone | gone → drop link", Some(&base), Gone, Gone, unlink, "DropLink", (false, false)),
            (
                "linked | unchanged | unchanged → nothing to write",
                Some(&base),
                Same,
                Same,
                unlink,
                "Merge",
                (false, false),
            ),
        ];
        for (row, b, p, c, policy, want, want_writes) in rows {
            let d = decide(b, &p, &c, &policy);
            let got = format!("{d:?}");
            assert!(got.starts_with(want), "{row}: got {got}");
            assert_eq!(writes(&d), want_writes, "{row}: {got}");
        }
    }

    #[test]
    fn policies_resolve_conflicts() {
        let base = canon(&[("given_name", "Ada"), ("title", "CEO")]);
        let p = canon(&[("given_name", "Ada K."), ("title", "CTO")]);
        let c = canon(&[("given_name", "Ada"), ("title", "CFO")]);
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().unwrap();
        let run = |conflict, pm, cm| {
            let d = decide(
                Some(&base),
                &State::Changed(p.clone(), pm),
                &State::Changed(c.clone(), cm),
                &pol(BOTH, conflict, DeletePolicy::Unlink),
            );
            match d {
                Decision::Merge { merged, conflict: true, .. } => merged,
                other => panic!("expected a conflict merge, got {other:?}"),
            }
        };
        assert_eq!(run(ConflictPolicy::CrmWins, None, None), c);
        assert_eq!(run(ConflictPolicy::ProviderWins, None, None), p);
        assert_eq!(run(ConflictPolicy::NewestWins, Some(t1), Some(t0)), p);
        assert_eq!(run(ConflictPolicy::NewestWins, Some(t0), Some(t1)), c);
        // Field merge keeps the provider's name edit and gives the doubly edited title to the CRM.
        assert_eq!(run(ConflictPolicy::FieldMerge, None, None), canon(&[("given_name", "Ada K."), ("title", "CFO")]));
    }

    #[test]
    fn one_way_directions_force_the_source() {
        let base = canon(&[("subject", "Kickoff")]);
        let edited = canon(&[("subject", "Kickoff (moved)")]);
        let p2c = pol(Direction::ProviderToCrm, ConflictPolicy::CrmWins, DeletePolicy::Propagate);
        // A CRM edit of a one-way event is reverted to the provider's value.
        let d = decide(Some(&base), &State::Same, &State::Changed(edited.clone(), None), &p2c);
        assert_eq!(writes(&d), (false, true));
        // A CRM deletion does not delete the provider event.
        assert_eq!(decide(Some(&base), &State::Same, &State::Gone, &p2c), Decision::Suppress);
        // A new CRM record is never copied into the provider.
        assert_eq!(decide(None, &State::Absent, &State::New(base.clone(), None), &p2c), Decision::Nothing);
        // First sight with a difference: the provider wins even under crm_wins.
        match decide(None, &State::New(edited.clone(), None), &State::New(base, None), &p2c) {
            Decision::Merge { merged, write_crm: true, write_provider: false, .. } => assert_eq!(merged, edited),
            other => panic!("{other:?}"),
        }
    }
}
