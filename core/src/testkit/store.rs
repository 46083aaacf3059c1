//! Conformance checks of the [`crate::port::Store`] contract, run against the in-memory store,
//! SQLite and PostgreSQL (owned by the store issue).
//!
//! [`check_store`] runs every check; each is also a plain `pub async fn` that panics with a
//! message naming the broken rule. Every check works on reps of its own (random names), so the
//! checks can share one store, and the lease checks only reason about the reps they scheduled.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::error::ErrorKind;
use crate::model::{Canon, Kind, Side, SyncKey};
use crate::port::{
    Acquire, Actor, Cursors, HISTORY_KEPT, HeldDelete, ItemError, LeaseHolder, Link, LinkBatch, LinkState,
    MAX_STORED_TEXT, Pending, Refusal, RepState, ResetRecord, ResetScope, Store, Verdict, Verification, Written,
};
use crate::report::CycleReport;

/// Run every store check.
pub async fn check_store(store: &dyn Store) {
    status_and_state(store).await;
    links_upsert_remove(store).await;
    cursors(store).await;
    item_errors(store).await;
    stale_epoch_writes_nothing(store).await;
    reset_semantics(store).await;
    undo_restores_exactly(store).await;
    verification_is_kept_once(store).await;
    held_deletes(store).await;
    grants(store).await;
    leasing(store).await;
    lease_expiry(store).await;
    rep_lease(store).await;
    hostile_text(store).await;
    history(store).await;
    refusals(store).await;
    sync_now(store).await;
}

/// A rep name no other check (or earlier run against the same store) uses.
pub fn unique_rep(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A fixed instant (whole seconds) plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_900_000_000 + secs, 0).single().expect("valid time")
}

/// A link of `kind` numbered `i`, with a snapshot full of characters that need escaping.
pub fn sample_link(rep: &str, kind: Kind, i: usize, state: LinkState) -> Link {
    let mut fields = BTreeMap::new();
    fields.insert("subject".to_owned(), format!("Réunion \"{i}\" \\ ünïcödé ✓\nline two"));
    fields.insert("notes".to_owned(), "tab\there, quote ' and ; DROP TABLE links; --".to_owned());
    let snapshot = Canon(fields);
    Link {
        kind,
        key: SyncKey::derive(rep, kind, Side::Crm, &format!("crm-{i}")),
        provider_id: format!("prov-{i}"),
        crm_id: format!("crm-{i}"),
        provider_version: format!("pv{i}"),
        crm_version: format!("cv{i}"),
        hash: snapshot.hash(),
        snapshot,
        state,
        pending: None,
    }
}

fn error_at(kind: Kind, side: Side, id: &str, reason: &str, at: DateTime<Utc>) -> ItemError {
    ItemError { kind, side, id: id.to_owned(), reason: reason.to_owned(), attempts: 1, first_seen: at, last_seen: at }
}

fn record(rep: &str, scope: ResetScope, at: DateTime<Utc>) -> ResetRecord {
    ResetRecord::new(rep, "005ADMIN", "Ada Admin", scope, at)
}

/// A held delete of the CRM record `id` under link `key`.
pub fn held_delete(kind: Kind, key: &SyncKey, id: &str, since: DateTime<Utc>) -> HeldDelete {
    HeldDelete {
        kind,
        key: key.clone(),
        side: Side::Crm,
        id: id.to_owned(),
        label: format!("Zoë \"{id}\" ; DROP TABLE held_deletes; --"),
        since,
        verdict: Verdict::Held,
    }
}

fn keys(links: &[Link]) -> BTreeSet<String> {
    links.iter().map(|l| l.key.0.clone()).collect()
}

async fn must_conflict(what: &str, r: crate::Result<()>) {
    match r {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        Err(e) => panic!("{what}: expected Conflict, got {e}"),
        Ok(()) => panic!("{what}: expected Conflict, got Ok"),
    }
}

/// `status` creates a fresh `ok` row at epoch 0; `set_state` records state, error, report and
/// last success, and refuses a stale epoch.
pub async fn status_and_state(store: &dyn Store) {
    let rep = unique_rep("status");
    let st = store.status(&rep).await.expect("status");
    assert_eq!(st.rep, rep, "status names the rep");
    assert_eq!(st.state, RepState::Ok, "a new rep is ok");
    assert_eq!(st.epoch, 0, "a new rep starts at epoch 0");
    assert!(st.last_success.is_none() && st.last_report.is_none() && st.last_reset.is_none());
    assert!(st.last_error.is_none());
    assert_eq!(store.status(&rep).await.expect("status again"), st, "status is stable");
    assert!(store.statuses().await.expect("statuses").iter().any(|s| s.rep == rep), "statuses lists the new rep");

    store.set_state(&rep, 0, RepState::Syncing, None, None).await.expect("set_state syncing");
    let st = store.status(&rep).await.expect("status");
    assert_eq!(st.state, RepState::Syncing);
    assert!(st.last_report.is_none(), "set_state without report keeps last_report empty");

    let mut ok = CycleReport {
        rep: rep.clone(),
        provider: "exchange".into(),
        state: RepState::Ok,
        started: Some(t(0)),
        finished: Some(t(5)),
        ..Default::default()
    };
    ok.contacts.created_in_crm = 3;
    ok.contacts.skip("outside_scope");
    ok.events.linked = 2;
    ok.requests.crm = 7;
    store.set_state(&rep, 0, RepState::Ok, None, Some(&ok)).await.expect("set_state with report");
    let st = store.status(&rep).await.expect("status");
    assert_eq!(st.state, RepState::Ok);
    assert_eq!(st.last_report.as_ref(), Some(&ok), "the report round-trips");
    assert_eq!(st.last_success, Some(t(5)), "a clean report sets last success to its finish time");

    let failed = CycleReport { finished: Some(t(100)), error: Some("crm: throttled".into()), ..ok.clone() };
    store
        .set_state(&rep, 0, RepState::Error, Some("crm: throttled".into()), Some(&failed))
        .await
        .expect("set_state error");
    let st = store.status(&rep).await.expect("status");
    assert_eq!(st.state, RepState::Error);
    assert_eq!(st.last_error.as_deref(), Some("crm: throttled"));
    assert_eq!(st.last_report.as_ref(), Some(&failed));
    assert_eq!(st.last_success, Some(t(5)), "a failed report leaves last success alone");

    store.set_state(&rep, 0, RepState::Ok, None, None).await.expect("clear error");
    assert!(store.status(&rep).await.expect("status").last_error.is_none(), "set_state replaces the last error");

    must_conflict("set_state with a wrong epoch", store.set_state(&rep, 1, RepState::Disabled, None, None).await).await;
    assert_eq!(store.status(&rep).await.expect("status").state, RepState::Ok, "a refused set_state writes nothing");
}

/// Links are upserted by key, removed by key, kept per rep and kind, and round-trip every field.
pub async fn links_upsert_remove(store: &dyn Store) {
    let rep = unique_rep("links");
    let other = unique_rep("links-other");
    assert!(store.links(&rep, Kind::Contact).await.expect("links").is_empty());
    let mut a = sample_link(&rep, Kind::Contact, 1, LinkState::Linked);
    let b = sample_link(&rep, Kind::Contact, 2, LinkState::Suppressed);
    let mut c = sample_link(&rep, Kind::Contact, 3, LinkState::Linked);
    c.pending = Some(Pending {
        snapshot: Canon::default(),
        targets: vec![Side::Provider, Side::Crm],
        written: [(
            Side::Crm,
            Written { based_on: "v1".into(), fields: vec!["title".into()], before: Canon::default() },
        )]
        .into_iter()
        .collect(),
        first_sight: true,
    });
    let batch = LinkBatch { upsert: vec![a.clone(), b.clone(), c.clone()], ..Default::default() };
    store.commit(&rep, 0, Kind::Contact, &batch).await.expect("commit links");

    let mut want = vec![a.clone(), b.clone(), c.clone()];
    want.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(store.links(&rep, Kind::Contact).await.expect("links"), want, "links round-trip, ordered by key");
    assert!(store.links(&rep, Kind::Event).await.expect("links").is_empty(), "links are kept per kind");
    assert!(store.links(&other, Kind::Contact).await.expect("links").is_empty(), "links are kept per rep");

    a.crm_version = "cv1-new".into();
    a.snapshot.0.insert("title".into(), "Buyer".into());
    a.hash = a.snapshot.hash();
    c.pending = None;
    let batch = LinkBatch { upsert: vec![a.clone(), c.clone()], remove: vec![b.key.clone()], ..Default::default() };
    store.commit(&rep, 0, Kind::Contact, &batch).await.expect("commit update");
    let mut want = vec![a.clone(), c.clone()];
    want.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(store.links(&rep, Kind::Contact).await.expect("links"), want, "upsert replaces, remove deletes");

    // A key upserted twice in one batch: the last one wins.
    let mut a2 = a.clone();
    a2.provider_version = "pv-final".into();
    let batch = LinkBatch { upsert: vec![a.clone(), a2.clone()], ..Default::default() };
    store.commit(&rep, 0, Kind::Contact, &batch).await.expect("commit twice");
    let got = store.links(&rep, Kind::Contact).await.expect("links");
    assert_eq!(got.len(), 2);
    assert!(got.contains(&a2), "the last upsert of a key in a batch wins");

    // Removing a key that does not exist is fine; an empty batch is fine.
    let batch = LinkBatch { remove: vec![SyncKey("cs1.nothing.here".into())], ..Default::default() };
    store.commit(&rep, 0, Kind::Contact, &batch).await.expect("remove missing");
    store.commit(&rep, 0, Kind::Contact, &LinkBatch::default()).await.expect("empty batch");
    assert_eq!(store.links(&rep, Kind::Contact).await.expect("links").len(), 2);

    // Many links in one batch (more than one multi-row insert chunk in SQL stores).
    let many: Vec<Link> = (100..1300).map(|i| sample_link(&rep, Kind::Event, i, LinkState::Linked)).collect();
    store
        .commit(&rep, 0, Kind::Event, &LinkBatch { upsert: many.clone(), ..Default::default() })
        .await
        .expect("commit many");
    let got = store.links(&rep, Kind::Event).await.expect("links");
    assert_eq!(keys(&got), keys(&many), "a large batch is stored whole");
}

/// Cursors are replaced only by a batch that carries them, per rep and kind.
pub async fn cursors(store: &dyn Store) {
    let rep = unique_rep("cursors");
    assert_eq!(store.cursors(&rep, Kind::Contact).await.expect("cursors"), Cursors::default());
    let c1 = Cursors { provider: Some("delta-1".into()), crm: Some("2026-01-01T00:00:00Z".into()) };
    store
        .commit(&rep, 0, Kind::Contact, &LinkBatch { cursors: Some(c1.clone()), ..Default::default() })
        .await
        .expect("commit cursors");
    assert_eq!(store.cursors(&rep, Kind::Contact).await.expect("cursors"), c1);
    assert_eq!(store.cursors(&rep, Kind::Event).await.expect("cursors"), Cursors::default(), "cursors are per kind");

    let batch =
        LinkBatch { upsert: vec![sample_link(&rep, Kind::Contact, 1, LinkState::Linked)], ..Default::default() };
    store.commit(&rep, 0, Kind::Contact, &batch).await.expect("commit without cursors");
    assert_eq!(store.cursors(&rep, Kind::Contact).await.expect("cursors"), c1, "a batch without cursors keeps them");

    let c2 = Cursors { provider: None, crm: Some("x".into()) };
    store
        .commit(&rep, 0, Kind::Contact, &LinkBatch { cursors: Some(c2.clone()), ..Default::default() })
        .await
        .expect("commit cursors 2");
    assert_eq!(store.cursors(&rep, Kind::Contact).await.expect("cursors"), c2, "cursors are replaced as a whole");
}

/// Item errors count attempts, keep their first sighting and are cleared by (side, id).
pub async fn item_errors(store: &dyn Store) {
    let rep = unique_rep("errors");
    let k = Kind::Event;
    let e1 = error_at(k, Side::Provider, "item-1", "invalid_item: no subject", t(10));
    let e2 = error_at(k, Side::Crm, "item-1", "invalid_item: bad date", t(11));
    store
        .commit(&rep, 0, k, &LinkBatch { errors: vec![e1.clone(), e2.clone()], ..Default::default() })
        .await
        .expect("commit errors");
    let got = store.item_errors(&rep, k).await.expect("item_errors");
    assert_eq!(got, vec![e1.clone(), e2.clone()], "errors round-trip (ordered by side, id)");
    assert!(store.item_errors(&rep, Kind::Contact).await.expect("item_errors").is_empty(), "errors are per kind");

    let again = error_at(k, Side::Provider, "item-1", "invalid_item: still no subject", t(20));
    store
        .commit(&rep, 0, k, &LinkBatch { errors: vec![again.clone()], ..Default::default() })
        .await
        .expect("commit error again");
    let got = store.item_errors(&rep, k).await.expect("item_errors");
    let p = got.iter().find(|e| e.side == Side::Provider).expect("provider error kept");
    assert_eq!(p.attempts, 2, "a repeated error counts attempts up");
    assert_eq!(p.first_seen, t(10), "first_seen stays");
    assert_eq!(p.last_seen, t(20), "last_seen moves");
    assert_eq!(p.reason, again.reason, "the latest reason is kept");
    store
        .commit(&rep, 0, k, &LinkBatch { errors: vec![again.clone()], ..Default::default() })
        .await
        .expect("commit error a third time");
    let got = store.item_errors(&rep, k).await.expect("item_errors");
    assert_eq!(got.iter().find(|e| e.side == Side::Provider).map(|e| e.attempts), Some(3));
    assert_eq!(got.iter().find(|e| e.side == Side::Crm).map(|e| e.attempts), Some(1), "errors are per side");

    store
        .commit(&rep, 0, k, &LinkBatch { clear_errors: vec![(Side::Provider, "item-1".into())], ..Default::default() })
        .await
        .expect("clear");
    assert_eq!(store.item_errors(&rep, k).await.expect("item_errors"), vec![e2], "clear removes only (side, id)");
}

/// A commit or set_state carrying an epoch older than the rep's is refused with `Conflict` and
/// writes nothing at all.
pub async fn stale_epoch_writes_nothing(store: &dyn Store) {
    let rep = unique_rep("stale");
    let k = Kind::Contact;
    let l1 = sample_link(&rep, k, 1, LinkState::Linked);
    store
        .commit(&rep, 0, k, &LinkBatch { upsert: vec![l1.clone()], ..Default::default() })
        .await
        .expect("commit at epoch 0");
    store.reset(&record(&rep, ResetScope::All, t(50)), RepState::ResetPending, false).await.expect("reset");
    assert_eq!(store.status(&rep).await.expect("status").epoch, 1, "reset bumps the epoch");

    let stale = LinkBatch {
        upsert: vec![sample_link(&rep, k, 2, LinkState::Linked)],
        remove: vec![l1.key.clone()],
        errors: vec![error_at(k, Side::Crm, "x", "boom", t(60))],
        clear_errors: vec![],
        cursors: Some(Cursors { provider: Some("p".into()), crm: Some("c".into()) }),
        hold: vec![held_delete(k, &l1.key, "x", t(60))],
        release: vec![],
    };
    must_conflict("commit with the pre-reset epoch", store.commit(&rep, 0, k, &stale).await).await;
    assert!(store.links(&rep, k).await.expect("links").is_empty(), "a refused commit writes no link");
    assert_eq!(store.cursors(&rep, k).await.expect("cursors"), Cursors::default(), "… no cursor");
    assert!(store.item_errors(&rep, k).await.expect("errors").is_empty(), "… no item error");
    assert!(store.held(&rep, k).await.expect("held").is_empty(), "… no held delete");
    must_conflict("set_state with the pre-reset epoch", store.set_state(&rep, 0, RepState::Ok, None, None).await).await;
    assert_eq!(store.status(&rep).await.expect("status").state, RepState::ResetPending);

    store.commit(&rep, 1, k, &stale).await.expect("commit at the current epoch");
    assert_eq!(store.links(&rep, k).await.expect("links").len(), 1);
    store.set_state(&rep, 1, RepState::Ok, None, None).await.expect("set_state at the current epoch");
}

/// Reset removes the scope's linked links, cursors and item errors, keeps suppressions and the
/// other kinds, bumps the epoch, records who/when/what, sets the state and optionally drops the
/// grant.
pub async fn reset_semantics(store: &dyn Store) {
    let rep = unique_rep("reset");
    for k in Kind::ALL {
        let batch = LinkBatch {
            upsert: vec![
                sample_link(&rep, k, 1, LinkState::Linked),
                sample_link(&rep, k, 2, LinkState::Linked),
                sample_link(&rep, k, 3, LinkState::Suppressed),
            ],
            errors: vec![error_at(k, Side::Provider, "bad", "invalid_item", t(1))],
            cursors: Some(Cursors { provider: Some(format!("{k:?}-p")), crm: Some(format!("{k:?}-c")) }),
            ..Default::default()
        };
        store.commit(&rep, 0, k, &batch).await.expect("seed");
    }
    let token = SecretString::from("1//refresh-token-for-reset");
    store.set_grant(&rep, Some(&token)).await.expect("set_grant");

    let rec = record(&rep, ResetScope::Contacts, t(100));
    let removed = store.reset(&rec, RepState::ResetPending, false).await.expect("reset contacts");
    assert_eq!(removed, BTreeMap::from([("contact".to_owned(), 2)]), "reset reports linked links removed per kind");

    let contacts = store.links(&rep, Kind::Contact).await.expect("links");
    assert_eq!(contacts.len(), 1, "linked contacts are gone");
    assert_eq!(contacts[0].state, LinkState::Suppressed, "suppressions survive a reset");
    assert_eq!(store.cursors(&rep, Kind::Contact).await.expect("cursors"), Cursors::default(), "cursors are gone");
    assert!(store.item_errors(&rep, Kind::Contact).await.expect("errors").is_empty(), "item errors are gone");
    assert_eq!(store.links(&rep, Kind::Event).await.expect("links").len(), 3, "other kinds are untouched");
    assert!(store.cursors(&rep, Kind::Event).await.expect("cursors").provider.is_some());
    assert_eq!(store.item_errors(&rep, Kind::Event).await.expect("errors").len(), 1);

    let st = store.status(&rep).await.expect("status");
    assert_eq!(st.epoch, 1);
    assert_eq!(st.state, RepState::ResetPending);
    let want = ResetRecord { links_removed: removed.clone(), epoch: 1, undoable: true, ..rec.clone() };
    assert_eq!(st.last_reset.as_ref(), Some(&want), "the reset is recorded with its counts");
    assert_eq!(store.resets(&rep).await.expect("resets"), vec![want.clone()], "the audit trail has the reset");
    assert_eq!(
        store.grant(&rep).await.expect("grant").map(|g| g.expose_secret().to_owned()),
        Some(token.expose_secret().to_owned()),
        "the grant stays unless asked to drop it"
    );

    let rec2 = ResetRecord { admin_name: "Bob Boss".into(), ..record(&rep, ResetScope::All, t(200)) };
    let removed2 = store.reset(&rec2, RepState::NeedsReconnect, true).await.expect("reset all");
    assert_eq!(removed2, BTreeMap::from([("contact".to_owned(), 0), ("event".to_owned(), 2)]));
    for k in Kind::ALL {
        let left = store.links(&rep, k).await.expect("links");
        assert!(left.iter().all(|l| l.state == LinkState::Suppressed) && left.len() == 1, "only suppressions stay");
        assert_eq!(store.cursors(&rep, k).await.expect("cursors"), Cursors::default());
    }
    let st = store.status(&rep).await.expect("status");
    assert_eq!((st.epoch, st.state), (2, RepState::NeedsReconnect));
    assert!(store.grant(&rep).await.expect("grant").is_none(), "drop_grant removes the stored grant");
    let want2 = ResetRecord { links_removed: removed2, epoch: 2, undoable: true, ..rec2 };
    let want = ResetRecord { undoable: false, ..want };
    assert_eq!(
        store.resets(&rep).await.expect("resets"),
        vec![want, want2],
        "resets are kept oldest first; only the last can be undone"
    );

    // A reset of a rep the store has never seen creates it.
    let fresh = unique_rep("reset-fresh");
    let removed = store.reset(&record(&fresh, ResetScope::Events, t(300)), RepState::Ok, false).await.expect("reset");
    assert_eq!(removed, BTreeMap::from([("event".to_owned(), 0)]));
    assert_eq!(store.status(&fresh).await.expect("status").epoch, 1);
}

/// Everything a rep holds of every kind: links, cursors, item errors, held deletes.
async fn everything(store: &dyn Store, rep: &str) -> Vec<(Vec<Link>, Cursors, Vec<ItemError>, Vec<HeldDelete>)> {
    let mut out = vec![];
    for k in Kind::ALL {
        out.push((
            store.links(rep, k).await.expect("links"),
            store.cursors(rep, k).await.expect("cursors"),
            store.item_errors(rep, k).await.expect("errors"),
            store.held(rep, k).await.expect("held"),
        ));
    }
    out
}

/// `undo_reset` puts back exactly what the last reset removed and the state before it, bumps
/// the epoch and records who undid it; it is refused (nothing changed) when there is no reset,
/// when it was undone already, and once a cycle sealed the reset.
pub async fn undo_restores_exactly(store: &dyn Store) {
    let rep = unique_rep("undo");
    let by = Actor { admin_id: "005ADMIN".into(), admin_name: "Ada Admin".into(), at: t(500) };
    match store.undo_reset(&rep, &by).await {
        Err(e) if e.kind() == ErrorKind::NotFound => assert!(e.message().contains("never reset"), "{e}"),
        other => panic!("undo without a reset: expected NotFound, got {other:?}"),
    }
    for k in Kind::ALL {
        let mut linked = sample_link(&rep, k, 1, LinkState::Linked);
        linked.pending = Some(Pending {
            snapshot: linked.snapshot.clone(),
            targets: vec![Side::Crm],
            written: BTreeMap::new(),
            first_sight: true,
        });
        let batch = LinkBatch {
            upsert: vec![
                linked.clone(),
                sample_link(&rep, k, 2, LinkState::Linked),
                sample_link(&rep, k, 3, LinkState::Suppressed),
            ],
            errors: vec![error_at(k, Side::Provider, "bad", "invalid_item", t(1))],
            cursors: Some(Cursors { provider: Some(format!("{k:?}-p")), crm: None }),
            hold: vec![held_delete(k, &linked.key, "crm-1", t(2))],
            ..Default::default()
        };
        store.commit(&rep, 0, k, &batch).await.expect("seed");
    }
    store.set_state(&rep, 0, RepState::Error, Some("boom".into()), None).await.expect("state");
    let before = everything(store, &rep).await;
    store.reset(&record(&rep, ResetScope::All, t(100)), RepState::ResetPending, false).await.expect("reset");
    assert_ne!(everything(store, &rep).await, before, "the reset removed something");
    let rec = store.undo_reset(&rep, &by).await.expect("undo");
    assert_eq!((rec.undone.as_ref(), rec.undoable), (Some(&by), false), "the undo is recorded on the reset");
    assert_eq!(everything(store, &rep).await, before, "undo restores links, cursors, errors and held deletes exactly");
    let st = store.status(&rep).await.expect("status");
    assert_eq!((st.epoch, st.state), (2, RepState::Error), "undo bumps the epoch and restores the state");
    assert_eq!(st.last_reset.as_ref(), Some(&rec));
    assert_eq!(store.resets(&rep).await.expect("resets").last(), Some(&rec), "the audit shows the undo");
    must_conflict(
        "a commit from before the undo",
        store
            .commit(&rep, 1, Kind::Contact, &LinkBatch { cursors: Some(Cursors::default()), ..Default::default() })
            .await,
    )
    .await;
    match store.undo_reset(&rep, &by).await {
        Err(e) if e.kind() == ErrorKind::Conflict => {
            assert!(e.message().contains("already undone by Ada Admin"), "{e}")
        }
        other => panic!("a second undo: expected Conflict, got {other:?}"),
    }
    // A reset the first cycle sealed cannot be undone.
    store.reset(&record(&rep, ResetScope::Contacts, t(600)), RepState::ResetPending, false).await.expect("reset");
    store.seal_reset(&rep, 3).await.expect("seal");
    store.seal_reset(&rep, 3).await.expect("sealing twice changes nothing");
    let sealed = everything(store, &rep).await;
    match store.undo_reset(&rep, &by).await {
        Err(e) if e.kind() == ErrorKind::Conflict => assert!(e.message().contains("cycle has run since"), "{e}"),
        other => panic!("undo after a cycle: expected Conflict, got {other:?}"),
    }
    assert_eq!(everything(store, &rep).await, sealed, "a refused undo changes nothing");
    let st = store.status(&rep).await.expect("status");
    assert_eq!((st.epoch, st.last_reset.map(|r| r.undoable)), (3, Some(false)));
}

/// `verify_reset` attaches the first verification to the reset of that epoch, once.
pub async fn verification_is_kept_once(store: &dyn Store) {
    let rep = unique_rep("verify");
    store.reset(&record(&rep, ResetScope::All, t(100)), RepState::ResetPending, false).await.expect("reset");
    let v = Verification {
        at: t(120),
        verified: true,
        relinked: BTreeMap::from([("contact".into(), 412), ("event".into(), 97)]),
        creates: 0,
        updates: 0,
        deletes: 0,
        item_errors: 0,
        held_deletes: 0,
    };
    assert_eq!(v.to_string(), "verified: re-linked 412 contacts and 97 events, 0 writes");
    store.verify_reset(&rep, 7, &v).await.expect("verify another epoch");
    assert_eq!(store.status(&rep).await.expect("status").last_reset.and_then(|r| r.verification), None);
    store.verify_reset(&rep, 1, &v).await.expect("verify");
    let later = Verification { verified: false, creates: 3, item_errors: 1, ..v.clone() };
    assert_eq!(later.to_string(), "attention: 3 creates, 1 item error");
    store.verify_reset(&rep, 1, &later).await.expect("verify again");
    let st = store.status(&rep).await.expect("status");
    assert_eq!(st.last_reset.and_then(|r| r.verification), Some(v.clone()), "the first verification stays");
    assert_eq!(store.resets(&rep).await.expect("resets")[0].verification, Some(v), "the audit has it too");
}

/// Held deletes are kept per rep and kind (upserted by key, released by key, refused with a
/// stale epoch), and judged at once; judging clears the cursors of their kinds only; a reset
/// removes the held deletes of its scope.
pub async fn held_deletes(store: &dyn Store) {
    let rep = unique_rep("held");
    let (c, e) = (Kind::Contact, Kind::Event);
    let links: Vec<Link> = (0..3).map(|i| sample_link(&rep, c, i, LinkState::Linked)).collect();
    let hold: Vec<HeldDelete> =
        links.iter().enumerate().map(|(i, l)| held_delete(c, &l.key, &l.crm_id, t(10 - i as i64))).collect();
    let cursors = Cursors { provider: Some("p".into()), crm: Some("c".into()) };
    let batch =
        LinkBatch { upsert: links.clone(), hold: hold.clone(), cursors: Some(cursors.clone()), ..Default::default() };
    store.commit(&rep, 0, c, &batch).await.expect("hold");
    let ev = sample_link(&rep, e, 9, LinkState::Linked);
    let ev_batch = LinkBatch { upsert: vec![ev.clone()], cursors: Some(cursors.clone()), ..Default::default() };
    store.commit(&rep, 0, e, &ev_batch).await.expect("events");
    let mut want = hold.clone();
    want.reverse();
    assert_eq!(store.held(&rep, c).await.expect("held"), want, "held deletes, oldest first, text intact");
    assert!(store.held(&rep, e).await.expect("held").is_empty(), "per kind");
    store
        .commit(&rep, 0, c, &LinkBatch { release: vec![links[0].key.clone()], ..Default::default() })
        .await
        .expect("release");
    assert_eq!(store.held(&rep, c).await.expect("held").len(), 2, "released by key");
    assert_eq!(store.judge_held(&rep, Verdict::Approved).await.expect("approve"), 2);
    let held = store.held(&rep, c).await.expect("held");
    assert!(held.iter().all(|h| h.verdict == Verdict::Approved), "{held:?}");
    assert_eq!(store.cursors(&rep, c).await.expect("cursors"), Cursors::default(), "the judged kind reads in full");
    assert_eq!(store.cursors(&rep, e).await.expect("cursors"), cursors, "the other kind keeps its cursors");
    assert_eq!(store.judge_held(&rep, Verdict::Discarded).await.expect("discard"), 0, "judged deletes stay judged");
    store.reset(&record(&rep, ResetScope::Contacts, t(50)), RepState::ResetPending, false).await.expect("reset");
    assert!(store.held(&rep, c).await.expect("held").is_empty(), "a reset removes its scope's held deletes");
}

/// Grants are stored, replaced and removed per rep, and never shown by `Debug`.
pub async fn grants(store: &dyn Store) {
    let rep = unique_rep("grant");
    assert!(store.grant(&rep).await.expect("grant").is_none());
    let secret = "1//0gSECRET-refresh-token-do-not-log";
    store.set_grant(&rep, Some(&SecretString::from(secret))).await.expect("set_grant");
    assert_eq!(store.grant(&rep).await.expect("grant").map(|g| g.expose_secret().to_owned()).as_deref(), Some(secret));
    assert!(store.grant(&unique_rep("grant-other")).await.expect("grant").is_none(), "grants are per rep");
    store.set_grant(&rep, Some(&SecretString::from("second"))).await.expect("replace");
    assert_eq!(
        store.grant(&rep).await.expect("grant").map(|g| g.expose_secret().to_owned()).as_deref(),
        Some("second")
    );
    assert!(!format!("{store:?}").contains("second"), "Debug of the store shows no grant");
    store.set_grant(&rep, None).await.expect("remove");
    assert!(store.grant(&rep).await.expect("grant").is_none());
}

fn mine(claimed: Vec<String>, reps: &[String]) -> BTreeSet<String> {
    claimed.into_iter().filter(|r| reps.contains(r)).collect()
}

/// Due reps go to exactly one worker; `n` limits a claim; `schedule` keeps an existing due
/// time; renew and release are refused to a worker that does not hold the rep.
pub async fn leasing(store: &dyn Store) {
    let base = Utc::now();
    let lease = Duration::from_secs(60);
    let reps: Vec<String> = (0..5).map(|i| unique_rep(&format!("lease{i}"))).collect();
    for r in &reps[..4] {
        store.schedule(r, base).await.expect("schedule");
    }
    store.schedule(&reps[4], base + chrono::Duration::hours(1)).await.expect("schedule later");
    store.schedule(&reps[0], base + chrono::Duration::hours(10)).await.expect("schedule again");
    assert!(store.statuses().await.expect("statuses").iter().any(|s| s.rep == reps[4]), "schedule makes reps known");

    assert!(store.claim_due_reps("w1", 0, lease, base).await.expect("claim 0").is_empty(), "n = 0 claims nothing");
    let first = store.claim_due_reps("w1", 2, lease, base).await.expect("claim");
    assert_eq!(first.len(), 2, "a claim hands out at most n reps (and n when that many are due)");
    let w1 = mine(first, &reps);
    let w2 = mine(store.claim_due_reps("w2", 100, lease, base).await.expect("claim"), &reps);
    assert!(w1.is_disjoint(&w2), "no rep goes to two workers: {w1:?} {w2:?}");
    let all: BTreeSet<String> = w1.union(&w2).cloned().collect();
    assert_eq!(all, reps[..4].iter().cloned().collect(), "every due rep is claimed (schedule kept rep 0 due)");
    assert!(mine(store.claim_due_reps("w3", 100, lease, base).await.expect("claim"), &reps).is_empty());

    let a = w2.iter().next().expect("w2 holds a rep").clone();
    store.renew_lease("w2", &a, lease, base + chrono::Duration::seconds(30)).await.expect("renew");
    must_conflict("renew by another worker", store.renew_lease("w1", &a, lease, base).await).await;
    must_conflict("release by another worker", store.release("w1", &a, Some(base)).await).await;
    must_conflict("renew of a rep never claimed", store.renew_lease("w1", &reps[4], lease, base).await).await;

    let later = base + chrono::Duration::hours(2);
    store.release("w2", &a, Some(later)).await.expect("release");
    must_conflict("release twice", store.release("w2", &a, Some(later)).await).await;
    must_conflict("renew after release", store.renew_lease("w2", &a, lease, base).await).await;
    assert!(
        !store.claim_due_reps("w3", 100, lease, base).await.expect("claim").contains(&a),
        "a released rep is not due before its next due time"
    );
    let due = mine(store.claim_due_reps("w3", 100, lease, later).await.expect("claim"), &reps);
    assert_eq!(
        due,
        reps.iter().cloned().collect(),
        "reps become due at their time, and the expired leases of w1/w2 are claimable"
    );

    // Leave nothing due for other checks sharing the store.
    let never = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).single().expect("time");
    for r in &reps {
        store.release("w3", r, Some(never)).await.expect("release");
    }
}

/// A lease ends at `now + lease`: from then on the rep can be claimed by another worker, and the
/// old holder's renew and release are refused.
pub async fn lease_expiry(store: &dyn Store) {
    let base = Utc::now();
    let lease = Duration::from_millis(1500);
    let reps: Vec<String> = (0..3).map(|i| unique_rep(&format!("expiry{i}"))).collect();
    for r in &reps {
        store.schedule(r, base).await.expect("schedule");
    }
    let held = mine(store.claim_due_reps("old", 100, lease, base).await.expect("claim"), &reps);
    assert_eq!(held.len(), 3);
    let kept = reps[0].clone();
    let ms = |n: i64| base + chrono::Duration::milliseconds(n);
    store.renew_lease("old", &kept, lease, ms(1000)).await.expect("renew within the lease");
    assert!(
        mine(store.claim_due_reps("new", 100, lease, ms(1499)).await.expect("claim"), &reps).is_empty(),
        "a lease holds until it ends"
    );
    let taken = mine(store.claim_due_reps("new", 100, lease, ms(1500)).await.expect("claim"), &reps);
    assert_eq!(taken, reps[1..].iter().cloned().collect(), "expired leases are claimable at their end");
    must_conflict("renew of an expired, re-claimed lease", store.renew_lease("old", &reps[1], lease, ms(1500)).await)
        .await;
    must_conflict("release of a re-claimed rep", store.release("old", &reps[2], Some(ms(1600))).await).await;
    store.renew_lease("new", &reps[1], lease, ms(1600)).await.expect("the new holder renews");
    must_conflict("renew at the very end of the lease", store.renew_lease("old", &kept, lease, ms(2500)).await).await;
    let again = mine(store.claim_due_reps("new", 100, lease, ms(2500)).await.expect("claim"), &reps);
    assert_eq!(again, BTreeSet::from([kept.clone()]), "an unrenewed lease expires too");
    for r in &reps {
        store
            .release("new", r, Some(Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).single().expect("time")))
            .await
            .expect("release");
    }
}

/// Text a remote service or a rep can put in a record or an error (NUL, 1 MB strings, control
/// characters, RTL marks, emoji, noncharacters) is always accepted: NUL becomes U+FFFD, free
/// text is cut at [`MAX_STORED_TEXT`] characters, everything else round-trips, and clearing an
/// item error by the id as the service gave it works.
pub async fn hostile_text(store: &dyn Store) {
    let rep = unique_rep("hostile");
    let k = Kind::Contact;
    let odd = "\u{0}NUL first \u{1}\u{7}\u{1b}[31m\u{7f} \u{202e}RTL عربى עברית \u{200d}👩\u{200d}👩\u{200d}👧 \
               \u{feff}\u{fffe}\u{ffff}\u{10ffff} e\u{301} tab\there\r\nend\u{0}";
    let kept = odd.replace('\0', "\u{fffd}");
    let huge = format!("STRING_TOO_LONG: {}{odd}", "x".repeat(1_000_000));
    let odd_id = format!("id-{odd}");
    let mut link = sample_link(&rep, k, 1, LinkState::Linked);
    link.provider_id = format!("prov-{odd}");
    link.crm_version = odd.to_owned();
    link.snapshot.0.insert("family_name".into(), huge.clone());
    link.snapshot.0.insert("given_name".into(), odd.to_owned());
    link.hash = link.snapshot.hash();
    let batch = LinkBatch {
        upsert: vec![link.clone()],
        errors: vec![error_at(k, Side::Crm, &odd_id, &huge, t(1)), error_at(k, Side::Provider, "plain-id", odd, t(1))],
        cursors: Some(Cursors { provider: Some(odd.to_owned()), crm: None }),
        ..Default::default()
    };
    store.commit(&rep, 0, k, &batch).await.expect("the store takes any text");

    let errors = store.item_errors(&rep, k).await.expect("item_errors");
    assert_eq!(errors.len(), 2);
    let long = errors.iter().find(|e| e.side == Side::Crm).expect("the long error");
    assert_eq!(long.id, format!("id-{kept}"), "an id keeps every character but NUL");
    assert_eq!(long.reason.chars().count(), MAX_STORED_TEXT, "a long reason is cut at the cap");
    assert!(long.reason.starts_with("STRING_TOO_LONG: xxx") && long.reason.ends_with('…'), "cut with an ellipsis");
    let plain = errors.iter().find(|e| e.side == Side::Provider).expect("the odd error");
    assert_eq!(plain.reason, kept, "controls, RTL, emoji and noncharacters round-trip; NUL becomes U+FFFD");
    let links = store.links(&rep, k).await.expect("links");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].provider_id, format!("prov-{kept}"));
    assert_eq!(links[0].crm_version, kept);
    assert_eq!(links[0].snapshot, link.snapshot, "a snapshot round-trips exactly, NUL and 1 MB values included");
    assert_eq!(store.cursors(&rep, k).await.expect("cursors").provider.as_deref(), Some(kept.as_str()));

    let clear = LinkBatch { clear_errors: vec![(Side::Crm, odd_id)], ..Default::default() };
    store.commit(&rep, 0, k, &clear).await.expect("clear by the raw id");
    assert_eq!(store.item_errors(&rep, k).await.expect("item_errors").len(), 1, "cleared by the id as given");

    let report =
        CycleReport { rep: rep.clone(), error: Some(huge.clone()), finished: Some(t(2)), ..Default::default() };
    store
        .set_state(&rep, 0, RepState::Error, Some(huge.clone()), Some(&report))
        .await
        .expect("set_state takes any text");
    let st = store.status(&rep).await.expect("status");
    let last = st.last_error.expect("last error");
    assert!(!last.contains('\0') && last.chars().count() == MAX_STORED_TEXT, "the last error is storable and capped");
    assert_eq!(st.last_report.and_then(|r| r.error), Some(huge), "the report (JSON) keeps the text as it was");
}

/// One rep's lease, as every cycle takes it: acquired when free, expired or already the
/// caller's (then extended); refused naming the holder and the end otherwise; respected by
/// `claim_due_reps`; renewed and released by its holder only; a release without a due time
/// keeps the rep's schedule.
pub async fn rep_lease(store: &dyn Store) {
    let rep = unique_rep("replease");
    let lease = Duration::from_secs(60);
    let acquire = |holder: &'static str, at: i64| {
        let rep = rep.clone();
        async move { store.acquire_lease(holder, &rep, lease, t(at)).await.expect("acquire_lease") }
    };
    let busy = |holder: &str, until: i64| Acquire::Busy(LeaseHolder { holder: holder.to_owned(), until: t(until) });
    assert_eq!(acquire("a", 0).await, Acquire::Acquired, "a free lease is acquired");
    assert_eq!(acquire("a", 30).await, Acquire::Acquired, "the holder acquires its own lease again");
    assert_eq!(acquire("b", 60).await, busy("a", 90), "a held lease is refused, naming holder and end (extended)");
    let shown = store.lease(&rep, t(60)).await.expect("lease");
    assert_eq!(shown, Some(LeaseHolder { holder: "a".into(), until: t(90) }), "lease shows the holder");
    assert_eq!(store.lease(&rep, t(90)).await.expect("lease"), None, "an expired lease is shown as free");
    let claimed = store.claim_due_reps("w", 1000, lease, t(60)).await.expect("claim");
    for r in &claimed {
        store.release("w", r, None).await.expect("release a foreign claim");
    }
    assert!(!claimed.contains(&rep), "a rep leased by acquire_lease is not claimed by a worker");
    must_conflict("renew by another holder", store.renew_lease("b", &rep, lease, t(60)).await).await;
    must_conflict("release by another holder", store.release("b", &rep, None).await).await;
    store.renew_lease("a", &rep, lease, t(80)).await.expect("the holder renews");
    assert_eq!(acquire("b", 139).await, busy("a", 140), "a renewed lease holds until its new end");
    assert_eq!(acquire("b", 140).await, Acquire::Acquired, "an expired lease is acquired by another holder");
    must_conflict("renew of a lease taken over", store.renew_lease("a", &rep, lease, t(141)).await).await;
    must_conflict("release of a lease taken over", store.release("a", &rep, None).await).await;
    store.release("b", &rep, None).await.expect("release");
    assert_eq!(store.lease(&rep, t(141)).await.expect("lease"), None, "a released lease is free");
    must_conflict("release twice", store.release("b", &rep, None).await).await;
    assert_eq!(acquire("c", 141).await, Acquire::Acquired, "a released lease is free at once");
    store.release("c", &rep, None).await.expect("release");
    let claimed = store.claim_due_reps("w", 1000, lease, t(300)).await.expect("claim");
    for r in &claimed {
        store.release("w", r, None).await.expect("release");
    }
    assert!(claimed.contains(&rep), "acquire_lease made the rep known, due when first leased; release kept it");
    let never = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).single().expect("time");
    assert_eq!(acquire("d", 400).await, Acquire::Acquired);
    store.release("d", &rep, Some(never)).await.expect("release with a due time");
    let err = store.acquire_lease("e", &rep, Duration::from_secs(u64::MAX / 2), t(500)).await;
    assert_eq!(err.map_err(|e| e.kind()), Err(ErrorKind::InvalidConfig), "an out-of-range lease is refused");
}

/// Every `set_state` with a report adds to the rep's history (failed cycles too); `history`
/// answers the last `n`, newest first; the store keeps the last [`HISTORY_KEPT`].
pub async fn history(store: &dyn Store) {
    let rep = unique_rep("history");
    let other = unique_rep("history-other");
    assert!(store.history(&rep, 5).await.expect("history").is_empty(), "a new rep has no history");
    for i in 0..HISTORY_KEPT as i64 + 3 {
        let mut r = CycleReport {
            rep: rep.clone(),
            started: Some(t(i)),
            finished: Some(t(i)),
            error: (i % 2 == 1).then(|| "crm: throttled".to_owned()),
            ..Default::default()
        };
        r.requests.crm = i as u64;
        r.contacts.linked = 1;
        store.set_state(&rep, 0, RepState::Ok, None, Some(&r)).await.expect("set_state with report");
    }
    store.set_state(&rep, 0, RepState::Ok, None, None).await.expect("set_state without report");
    let top = HISTORY_KEPT as u64 + 2;
    let last: Vec<u64> = store.history(&rep, 3).await.expect("history").iter().map(|r| r.requests.crm).collect();
    assert_eq!(last, vec![top, top - 1, top - 2], "the last n reports, newest first (a state change adds none)");
    let all = store.history(&rep, 10_000).await.expect("history");
    assert_eq!(all.len(), HISTORY_KEPT, "the store keeps the last {HISTORY_KEPT} reports");
    assert_eq!(all.last().and_then(|r| r.started), Some(t(3)), "the oldest ones are dropped");
    assert_eq!(all[1].error.as_deref(), Some("crm: throttled"), "failed cycles are kept, report and all");
    assert_eq!(all[0].contacts.linked, 1, "the report round-trips");
    assert!(store.history(&other, 5).await.expect("history").is_empty(), "the history is per rep");
}

/// Refusals round-trip (text as the store keeps it), oldest first.
pub async fn refusals(store: &dyn Store) {
    let who = unique_rep("admin");
    let late = Refusal {
        at: t(20),
        admin_id: who.clone(),
        admin_name: "Hank \u{0}Halfadmin".into(),
        action: "reset".into(),
        rep: Some(unique_rep("refused-rep")),
        scope: Some(ResetScope::Contacts),
        reason: "lacks Manage Sync".into(),
    };
    let early = Refusal { at: t(10), rep: None, scope: None, action: "sign in".into(), ..late.clone() };
    store.refuse(&late).await.expect("refuse");
    store.refuse(&early).await.expect("refuse");
    let mine: Vec<Refusal> =
        store.refusals().await.expect("refusals").into_iter().filter(|r| r.admin_id == who).collect();
    let kept = |r: &Refusal| Refusal { admin_name: "Hank \u{fffd}Halfadmin".into(), ..r.clone() };
    assert_eq!(mine, vec![kept(&early), kept(&late)], "every refusal, oldest first, NUL made storable");
}

/// "Sync now" makes a rep due at once (never later than it was); asked while a cycle holds
/// the lease, that lease's release keeps it due, and the next lease takes the request.
pub async fn sync_now(store: &dyn Store) {
    let rep = unique_rep("syncnow");
    let lease = Duration::from_secs(60);
    assert_eq!(store.due(&rep).await.expect("due"), None, "a rep unknown to the scheduler has no due time");
    store.schedule(&rep, t(1000)).await.expect("schedule");
    assert_eq!(store.due(&rep).await.expect("due"), Some(t(1000)), "due shows the schedule");
    store.sync_now(&rep, t(10)).await.expect("sync now");
    assert_eq!(store.due(&rep).await.expect("due"), Some(t(10)), "sync now makes the rep due at once");
    store.sync_now(&rep, t(20)).await.expect("sync now again");
    assert_eq!(store.due(&rep).await.expect("due"), Some(t(10)), "sync now never makes a rep due later");

    assert_eq!(store.acquire_lease("cycle", &rep, lease, t(20)).await.expect("acquire"), Acquire::Acquired);
    store.sync_now(&rep, t(30)).await.expect("sync now during a cycle");
    store.release("cycle", &rep, Some(t(2000))).await.expect("release");
    assert_eq!(store.due(&rep).await.expect("due"), Some(t(30)), "asked during a cycle: due again at once");
    assert_eq!(store.acquire_lease("cycle", &rep, lease, t(40)).await.expect("acquire"), Acquire::Acquired);
    store.release("cycle", &rep, Some(t(3000))).await.expect("release");
    assert_eq!(store.due(&rep).await.expect("due"), Some(t(3000)), "the next cycle took the request");

    let new = unique_rep("syncnow-new");
    store.sync_now(&new, t(50)).await.expect("sync now of an unscheduled rep");
    assert_eq!(store.due(&new).await.expect("due"), Some(t(50)), "sync now schedules an unknown rep");
    // Leave nothing due for other checks sharing the store.
    let never = Utc.with_ymd_and_hms(2200, 1, 1, 0, 0, 0).single().expect("time");
    for r in [&rep, &new] {
        assert_eq!(store.acquire_lease("cleanup", r, lease, t(60)).await.expect("acquire"), Acquire::Acquired);
        store.release("cleanup", r, Some(never)).await.expect("release");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemStore;

    /// The suite describes the reference behaviour: the in-memory store passes it.
    #[tokio::test]
    async fn the_memory_store_passes_the_store_suite() {
        check_store(&MemStore::default()).await;
    }
}
