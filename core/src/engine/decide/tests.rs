//! The decision table, row by row, and the policies.

use super::*;
use crate::config::Direction;

fn canon(pairs: &[(&str, &str)]) -> Canon {
    Canon(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}
fn pol(direction: Direction, conflict: ConflictPolicy, delete: DeletePolicy) -> KindPolicy {
    KindPolicy { direction, conflict, delete }
}
const BOTH: Direction = Direction::Both;

/// (row, base, provider, crm, policy, expected decision, expected writes (provider, crm))
type Row<'a> = (&'a str, Option<&'a Canon>, State, State, KindPolicy, fn(&Decision) -> bool, (bool, bool));

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
    let copy = |c: &Canon| State::Copy(c.clone(), None);
    let changed = |c: &Canon| State::Changed(c.clone(), None);
    let unlink = pol(BOTH, ConflictPolicy::CrmWins, DeletePolicy::Unlink);
    let propagate = pol(BOTH, ConflictPolicy::CrmWins, DeletePolicy::Propagate);
    let b = Some(&base);
    use Decision as D;
    use State::*;
    let rows: Vec<Row> = vec![
        (
            "none | new | none found → create on CRM",
            None,
            new(&base),
            Absent,
            unlink,
            |d| *d == D::CreateCrm,
            (false, true),
        ),
        (
            "none | none found | new → create in provider",
            None,
            Absent,
            new(&base),
            unlink,
            |d| *d == D::CreateProvider,
            (true, false),
        ),
        (
            "none | matched equal | matched equal → link only",
            None,
            new(&base),
            new(&base),
            unlink,
            |d| matches!(d, D::Merge { conflict: false, .. }),
            (false, false),
        ),
        (
            "none | matched differ | matched differ → first-sight merge (crm_wins)",
            None,
            new(&edited),
            new(&base),
            unlink,
            |d| matches!(d, D::Merge { .. }),
            (true, false),
        ),
        (
            "linked | changed | unchanged → update CRM",
            b,
            changed(&edited),
            Same,
            unlink,
            |d| matches!(d, D::Merge { conflict: false, .. }),
            (false, true),
        ),
        (
            "linked | unchanged | changed → update provider",
            b,
            Same,
            changed(&edited),
            unlink,
            |d| matches!(d, D::Merge { conflict: false, .. }),
            (true, false),
        ),
        (
            "linked | changed | changed → conflict, crm wins",
            b,
            changed(&edited),
            changed(&other),
            unlink,
            |d| matches!(d, D::Merge { conflict: true, .. }),
            (true, false),
        ),
        (
            "linked | gone | unchanged, propagate → delete CRM",
            b,
            Gone,
            Same,
            propagate,
            |d| *d == D::DeleteCrm,
            (false, true),
        ),
        (
            "linked | gone | unchanged, unlink → suppress",
            b,
            Gone,
            Same,
            unlink,
            |d| *d == D::Suppress { gone: Some(Side::Provider) },
            (false, false),
        ),
        (
            "linked | unchanged | gone, propagate → delete provider",
            b,
            Same,
            Gone,
            propagate,
            |d| *d == D::DeleteProvider,
            (true, false),
        ),
        (
            "linked | unchanged | gone, unlink → suppress",
            b,
            Same,
            Gone,
            unlink,
            |d| *d == D::Suppress { gone: Some(Side::Crm) },
            (false, false),
        ),
        (
            "linked | gone | changed, propagate → modification wins: relink the CRM record",
            b,
            Gone,
            changed(&edited),
            propagate,
            |d| *d == D::Relink { survivor: Side::Crm },
            (false, false),
        ),
        (
            "linked | changed | gone, propagate → modification wins: relink the provider item",
            b,
            changed(&edited),
            Gone,
            propagate,
            |d| *d == D::Relink { survivor: Side::Provider },
            (false, false),
        ),
        (
            "linked | gone | changed, unlink → suppress",
            b,
            Gone,
            changed(&edited),
            unlink,
            |d| *d == D::Suppress { gone: Some(Side::Provider) },
            (false, false),
        ),
        ("linked | gone | gone → drop link", b, Gone, Gone, unlink, |d| *d == D::DropLink, (false, false)),
        (
            "linked | unchanged | unchanged → nothing to write",
            b,
            Same,
            Same,
            unlink,
            |d| matches!(d, D::Merge { conflict: false, .. }),
            (false, false),
        ),
        // Filters.
        (
            "linked | filtered (private) | unchanged → suppress, both ids kept",
            b,
            Filtered("private"),
            Same,
            propagate,
            |d| *d == D::Suppress { gone: None },
            (false, false),
        ),
        (
            "linked | changed | filtered → suppress, the edit is not copied",
            b,
            changed(&edited),
            Filtered("no_sync_marker"),
            propagate,
            |d| *d == D::Suppress { gone: None },
            (false, false),
        ),
        (
            "linked | filtered | gone → suppress, nothing deleted",
            b,
            Filtered("private"),
            Gone,
            propagate,
            |d| *d == D::Suppress { gone: None },
            (false, false),
        ),
        // The event window.
        (
            "linked | moved out of the window | unchanged → suppress",
            b,
            Filtered("outside_window"),
            Same,
            propagate,
            |d| *d == D::Suppress { gone: None },
            (false, false),
        ),
        (
            "linked | moved out of the window | aged out → forget, delete nothing",
            b,
            Filtered("outside_window"),
            AgedOut,
            propagate,
            |d| *d == D::DropLink,
            (false, false),
        ),
        (
            "linked | aged out | aged out → forget, delete nothing",
            b,
            AgedOut,
            AgedOut,
            propagate,
            |d| *d == D::DropLink,
            (false, false),
        ),
        (
            "linked | aged out | changed into the window → update provider",
            b,
            AgedOut,
            changed(&edited),
            propagate,
            |d| matches!(d, D::Merge { conflict: false, .. }),
            (true, false),
        ),
        (
            "linked | private | aged out → suppress",
            b,
            Filtered("private"),
            AgedOut,
            propagate,
            |d| *d == D::Suppress { gone: None },
            (false, false),
        ),
        // Orphans and copies.
        (
            "none | our copy, source gone | none → suppress the orphan",
            None,
            copy(&base),
            Absent,
            propagate,
            |d| *d == D::Suppress { gone: Some(Side::Crm) },
            (false, false),
        ),
        (
            "none | none | our copy, source gone → suppress the orphan",
            None,
            Absent,
            copy(&base),
            propagate,
            |d| *d == D::Suppress { gone: Some(Side::Provider) },
            (false, false),
        ),
    ];
    for (row, b, p, c, policy, want, want_writes) in rows {
        let d = decide(b, &p, &c, &policy);
        assert!(want(&d), "{row}: got {d:?}");
        assert_eq!(writes(&d), want_writes, "{row}: {d:?}");
    }
}

#[test]
fn a_copy_and_its_record_resolve_by_newest_whatever_the_policy() {
    let older = canon(&[("email", "a@x.io"), ("title", "CEO")]);
    let newer = canon(&[("email", "a@x.io"), ("title", "CTO")]);
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let t1: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().unwrap();
    let crm_wins = pol(BOTH, ConflictPolicy::CrmWins, DeletePolicy::Unlink);
    // The provider copy was edited after the CRM record: its edit wins although crm_wins.
    let d = decide(None, &State::Copy(newer.clone(), Some(t1)), &State::New(older.clone(), Some(t0)), &crm_wins);
    match d {
        Decision::Merge { merged, write_crm: true, write_provider: false, .. } => assert_eq!(merged, newer),
        other => panic!("{other:?}"),
    }
    // The copy's clock is ahead of the record's within the same second (the CRM keeps whole
    // seconds): a tie, which goes to the record, whatever the policy.
    let provider_wins = pol(BOTH, ConflictPolicy::ProviderWins, DeletePolicy::Unlink);
    let (rec_t, copy_t) = (t0 + chrono::Duration::milliseconds(100), t0 + chrono::Duration::milliseconds(900));
    let d = decide(
        None,
        &State::Copy(older.clone(), Some(copy_t)),
        &State::New(newer.clone(), Some(rec_t)),
        &provider_wins,
    );
    match d {
        Decision::Merge { merged, write_provider: true, write_crm: false, .. } => assert_eq!(merged, newer),
        other => panic!("{other:?}"),
    }
    let d = decide(None, &State::New(newer.clone(), Some(rec_t)), &State::Copy(older.clone(), Some(copy_t)), &crm_wins);
    match d {
        Decision::Merge { merged, write_crm: true, write_provider: false, .. } => assert_eq!(merged, newer),
        other => panic!("{other:?}"),
    }
    // Matched by e-mail only (no copy): the configured policy decides.
    let d = decide(None, &State::New(newer, Some(t1)), &State::New(older.clone(), Some(t0)), &crm_wins);
    match d {
        Decision::Merge { merged, write_provider: true, write_crm: false, .. } => assert_eq!(merged, older),
        other => panic!("{other:?}"),
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
    assert_eq!(decide(Some(&base), &State::Same, &State::Gone, &p2c), Decision::Suppress { gone: Some(Side::Crm) });
    // A new CRM record is never copied into the provider.
    assert_eq!(decide(None, &State::Absent, &State::New(base.clone(), None), &p2c), Decision::Nothing);
    // First sight with a difference: the provider wins even under crm_wins.
    match decide(None, &State::New(edited.clone(), None), &State::New(base, None), &p2c) {
        Decision::Merge { merged, write_crm: true, write_provider: false, .. } => assert_eq!(merged, edited),
        other => panic!("{other:?}"),
    }
}

/// Attendees are the provider's: whatever the conflict policy, a differing attendee list is
/// taken from the provider and written to the CRM, never the other way.
#[test]
fn provider_owned_fields_flow_to_the_crm_only() {
    let base = canon(&[("subject", "S"), ("attendees", "a@x.io")]);
    let p = canon(&[("subject", "S"), ("attendees", "a@x.io\nb@x.io")]);
    let c = canon(&[("subject", "T"), ("attendees", "a@x.io")]);
    for conflict in [ConflictPolicy::CrmWins, ConflictPolicy::NewestWins, ConflictPolicy::FieldMerge] {
        let policy = pol(BOTH, conflict, DeletePolicy::Unlink);
        for b in [None, Some(&base)] {
            let (ps, cs) = match b {
                None => (State::New(p.clone(), None), State::New(c.clone(), None)),
                Some(_) => (State::Changed(p.clone(), None), State::Changed(c.clone(), None)),
            };
            let Decision::Merge { take, merged, write_crm, .. } = decide(b, &ps, &cs, &policy) else {
                panic!("a merge");
            };
            assert_eq!(take.get("attendees"), Some(&Side::Provider), "{conflict:?} {b:?}");
            assert_eq!(merged.get("attendees"), Some("a@x.io\nb@x.io"));
            assert!(write_crm);
        }
    }
}
