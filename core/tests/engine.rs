//! Engine scenarios over the in-memory ports: matching, skips, Reset Sync, reconnection.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use crmsync_core::memory::{MemCrm, MemProvider, MemState, MemStore};
use crmsync_core::testkit::crash::{CrashSwitch, CrashingCrm, CrashingProvider};
use crmsync_core::*;
use secrecy::SecretString;

struct World {
    crm: Arc<MemCrm>,
    provider: Arc<MemProvider>,
    store: Arc<MemStore>,
    engine: Engine,
    rep: Rep,
    other_owner: String,
    admin: CrmUser,
    half_admin: CrmUser,
}

fn now() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

fn contact(given: &str, family: &str, email: &str) -> Record {
    Record::Contact(Contact {
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        emails: vec![email.into()],
        ..Default::default()
    })
}

fn event(subject: &str, days: i64) -> Event {
    let start = now() + Duration::days(days);
    Event::new(subject, start, start + Duration::hours(1))
}

fn world(connection: ConnectionMode) -> World {
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let other_owner = crm.add_user("Olivia Other", &[]);
    let admin_id = crm.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let half_id = crm.add_user("Hal Halfadmin", &[MANAGE_USERS]);
    let provider = Arc::new(MemProvider::new("mem"));
    let store = Arc::new(MemStore::default());
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(provider.clone()).with_clock(now());
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id,
        provider: "mem".into(),
        mailbox: "riley@example.com".into(),
        connection,
        config: SyncConfig::default(),
    };
    World {
        crm,
        provider,
        store,
        engine,
        rep,
        other_owner,
        admin: CrmUser { id: admin_id, name: "Ada Admin".into(), email: None },
        half_admin: CrmUser { id: half_id, name: "Hal Halfadmin".into(), email: None },
    }
}

impl World {
    fn owner(&self) -> String {
        MemCrm::owner_tag(&self.rep.crm_user_id)
    }
    /// The standard scenario, small.
    fn seed(&self) {
        let mb = self.provider.mailbox(&self.rep.mailbox);
        let mut pc = mb.contacts.lock().unwrap();
        pc.insert(contact("Ann", "Match", "ANN@acme.com"), &["folder"], None);
        pc.insert(contact("Ned", "New", "ned@acme.com"), &["folder"], None);
        pc.insert(contact("Oscar", "Outside", "oscar@acme.com"), &[], None);
        pc.insert(contact("Fay", "Foreign", "fay@acme.com"), &["folder"], None);
        drop(pc);
        let mut cc = self.crm.contacts.lock().unwrap();
        let owner = self.owner();
        cc.insert(contact("Ann", "Match", "ann@acme.com"), &[&owner], None);
        cc.insert(contact("Cora", "Crm", "cora@acme.com"), &[&owner], None);
        cc.insert(contact("Fay", "Foreign", "fay@acme.com"), &[&MemCrm::owner_tag(&self.other_owner)], None);
        drop(cc);
        let mut pe = mb.events.lock().unwrap();
        pe.insert(event("Kickoff", 2).into(), &["calendar"], None);
        pe.insert(Event { private: true, ..event("Dentist", 3) }.into(), &["calendar"], None);
        pe.insert(Event { categories: vec!["Don't Sync".into()], ..event("Poker", 4) }.into(), &["calendar"], None);
        pe.insert(event("Ancient", -400).into(), &["calendar"], None);
        pe.insert(Event { cancelled: true, ..event("Cancelled", 5) }.into(), &["calendar"], None);
        for week in 0..3 {
            let e = Event { series_id: Some("series-1".into()), ..event("Weekly", 7 * week + 1) };
            pe.insert(e.into(), &["calendar"], None);
        }
    }
    fn writes(&self) -> u64 {
        let mb = self.provider.mailbox(&self.rep.mailbox);
        let w = |s: &std::sync::Mutex<MemState>| s.lock().unwrap().writes;
        w(&mb.contacts) + w(&mb.events) + w(&self.crm.contacts) + w(&self.crm.events)
    }
    async fn links(&self) -> Vec<Link> {
        let mut all = vec![];
        for k in Kind::ALL {
            all.extend(self.store.links(&self.rep.id, k).await.unwrap());
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }
}

fn emails_in(state: &std::sync::Mutex<MemState>) -> Vec<String> {
    let mut v: Vec<String> = state.lock().unwrap().records.values().flat_map(|r| r.record.emails()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn initial_cycle_links_creates_and_skips() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None);
    let c = &r.contacts;
    assert_eq!(c.linked, 1, "Ann matched by e-mail: {c:?}");
    assert_eq!(c.created_in_crm, 1, "Ned created in CRM");
    assert_eq!(c.created_in_provider, 1, "Cora created in folder");
    assert_eq!(c.skipped.get("outside_scope"), Some(&1), "Oscar outside folder");
    assert_eq!(c.skipped.get("outside_filter"), Some(&1), "Fay belongs to another owner");
    assert_eq!(c.links_total, 3);
    // No e-mail exists twice in the CRM.
    let crm = emails_in(&w.crm.contacts);
    let mut dedup = crm.clone();
    dedup.dedup();
    assert_eq!(crm, dedup);
    let e = &r.events;
    assert_eq!(e.created_in_crm, 4, "kickoff + 3 occurrences: {e:?}");
    for reason in ["private", "no_sync_marker", "outside_window"] {
        assert_eq!(e.skipped.get(reason), Some(&1), "{reason}: {e:?}");
    }
    assert!(r.requests.crm > 0 && r.requests.provider > 0);
    // A second cycle writes nothing.
    let before = w.writes();
    let q = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(q.writes(), 0, "{q:?}");
    assert_eq!(w.writes(), before);
}

#[tokio::test]
async fn reset_of_a_healthy_rep_relinks_with_zero_writes() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    w.engine.cycle(&w.rep).await.unwrap();
    let links_before = w.links().await;
    let writes_before = w.writes();
    let out = w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    assert_eq!(out.state, RepState::ResetPending);
    assert!(w.links().await.is_empty(), "reset removes the links");
    assert_eq!(w.writes(), writes_before, "reset writes no record");
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.writes(), 0, "{r:?}");
    assert_eq!(w.writes(), writes_before);
    assert!(r.contacts.full_read_provider && r.contacts.full_read_crm);
    assert_eq!(w.links().await, links_before, "exactly the same links again");
    assert_eq!(r.contacts.linked, 3);
    assert_eq!(r.events.linked, 4);
    let st = w.store.status(&w.rep.id).await.unwrap();
    assert_eq!(st.state, RepState::Ok);
    assert_eq!(st.last_reset.unwrap().admin_name, "Ada Admin");
}

#[tokio::test]
async fn reset_without_both_permissions_is_refused_and_changes_nothing() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    w.engine.cycle(&w.rep).await.unwrap();
    let links = w.links().await;
    let status = w.store.status(&w.rep.id).await.unwrap();
    let err = w.engine.reset(&w.half_admin, &w.rep, ResetScope::All).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("Manage Sync"), "{err}");
    assert!(!err.to_string().contains("lacks Manage Users"), "{err}");
    let rep_user = CrmUser { id: w.rep.crm_user_id.clone(), name: w.rep.name.clone(), email: None };
    let err = w.engine.reset(&rep_user, &w.rep, ResetScope::All).await.unwrap_err();
    assert!(err.to_string().contains("Manage Users and Manage Sync"), "{err}");
    assert_eq!(w.links().await, links);
    assert_eq!(w.store.status(&w.rep.id).await.unwrap(), status);
    assert!(w.store.resets(&w.rep.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn user_managed_reset_needs_reconnect_and_keeps_edits_made_meanwhile() {
    let w = world(ConnectionMode::UserManaged);
    w.seed();
    w.engine.reconnect(&w.rep, SecretString::from("grant-1")).await.unwrap();
    let first = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(first.error, None);
    let links_before = w.links().await;
    let out = w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    assert_eq!(out.state, RepState::NeedsReconnect);
    assert!(w.store.grant(&w.rep.id).await.unwrap().is_none(), "grant revoked");
    let paused = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(paused.state, RepState::NeedsReconnect);
    assert_eq!(paused.requests, Requests::default(), "not synced at all");
    // While disconnected the rep moves and renames the kickoff.
    let mb = w.provider.mailbox(&w.rep.mailbox);
    let kickoff = {
        let st = mb.events.lock().unwrap();
        st.records
            .values()
            .find(|r| r.record.as_event().unwrap().subject.as_deref() == Some("Kickoff"))
            .unwrap()
            .id
            .clone()
    };
    mb.events.lock().unwrap().edit(&kickoff, |r| {
        let Record::Event(e) = r else { unreachable!() };
        e.subject = Some("Kickoff (moved)".into());
        e.start = EventTime::At(now() + Duration::days(2) + Duration::hours(3));
        e.end = EventTime::At(now() + Duration::days(2) + Duration::hours(5));
    });
    w.engine.reconnect(&w.rep, SecretString::from("grant-2")).await.unwrap();
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.writes(), 1, "{r:?}");
    assert_eq!(r.events.updated_in_crm, 1);
    let crm_subjects: Vec<String> = w
        .crm
        .events
        .lock()
        .unwrap()
        .records
        .values()
        .filter_map(|r| r.record.as_event().unwrap().subject.clone())
        .collect();
    assert!(crm_subjects.contains(&"Kickoff (moved)".to_string()), "{crm_subjects:?}");
    assert_eq!(w.links().await.len(), links_before.len());
}

#[tokio::test]
async fn crash_between_remote_write_and_link_write_heals_without_duplicates() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    // Fail the request that follows the CRM create: the create landed, its links did not.
    w.engine.cycle(&w.rep).await.unwrap();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    mb.contacts.lock().unwrap().insert(contact("Zed", "Late", "zed@acme.com"), &["folder"], None);
    {
        let mut st = w.crm.contacts.lock().unwrap();
        let next = st.requests + 3; // read, find, create ok … then the next CRM request fails
        st.fail_requests.insert(next);
        let _ = next;
    }
    let _ = w.engine.cycle(&w.rep).await.unwrap();
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    let zeds = emails_in(&w.crm.contacts).iter().filter(|e| *e == "zed@acme.com").count();
    assert_eq!(zeds, 1);
    assert_eq!(w.engine.cycle(&w.rep).await.unwrap().writes(), 0);
}

#[tokio::test]
async fn empty_side_guard_stops_instead_of_deleting() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    w.engine.cycle(&w.rep).await.unwrap();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    {
        let mut st = mb.contacts.lock().unwrap();
        let ids: Vec<String> = st.records.keys().cloned().collect();
        for id in ids {
            st.set_tag(&id, "folder", false);
        }
        st.expire_cursors();
    }
    let crm_before = w.crm.contacts.lock().unwrap().records.len();
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert!(r.contacts.fatal.as_deref().unwrap_or("").contains("refusing"), "{r:?}");
    assert_eq!(r.state, RepState::Error);
    assert_eq!(w.crm.contacts.lock().unwrap().records.len(), crm_before);
    assert_eq!(w.links().await.iter().filter(|l| l.kind == Kind::Contact).count(), 3);
}

#[tokio::test]
async fn bad_items_are_recorded_and_the_rest_syncs() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    mb.contacts.lock().unwrap().insert(contact("Bad", "Mail", "not-an-email"), &["folder"], None);
    mb.contacts.lock().unwrap().insert(
        Record::Contact(Contact {
            given_name: Some("NoLast".into()),
            emails: vec!["nolast@acme.com".into()],
            ..Default::default()
        }),
        &["folder"],
        None,
    );
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.contacts.errors, 2, "{:?}", r.contacts.item_errors);
    assert!(r.contacts.item_errors.iter().any(|e| e.reason.contains("invalid e-mail")));
    assert!(r.contacts.item_errors.iter().any(|e| e.reason.contains("LastName")));
    assert_eq!(r.contacts.created_in_crm, 1, "Ned still syncs");
    // Recorded in the store (beside Fay, watched because her e-mail belongs to another owner).
    let errs = w.store.item_errors(&w.rep.id, Kind::Contact).await.unwrap();
    let real: Vec<_> = errs.iter().filter(|e| !e.reason.starts_with("skipped:")).collect();
    assert_eq!(real.len(), 2, "{errs:?}");
    assert_eq!(errs.len(), 3, "{errs:?}");
    // Retried by id next cycle, attempts counted.
    w.engine.cycle(&w.rep).await.unwrap();
    let errs = w.store.item_errors(&w.rep.id, Kind::Contact).await.unwrap();
    assert!(errs.iter().all(|e| e.attempts == 2), "{errs:?}");
}

#[tokio::test]
async fn find_rep_is_partial_case_insensitive_and_refuses_ambiguity() {
    let w = world(ConnectionMode::AdminManaged);
    let mut other = w.rep.clone();
    other.name = "Riley Rogers".into();
    let reps = vec![w.rep.clone(), other];
    assert!(engine::find_rep(&reps, "rep").is_ok());
    let err = engine::find_rep(&reps, "riley").unwrap_err();
    assert!(err.to_string().contains("Riley Rep") && err.to_string().contains("Riley Rogers"), "{err}");
    assert_eq!(engine::find_rep(&reps, "nobody").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(w.engine.find_user("ada").await.unwrap().name, "Ada Admin");
}

/// The writes a plan announces, per side: (creates, updates, deletes) in the CRM, then the provider.
fn planned_writes(plan: &Plan) -> [u64; 6] {
    let n = |k: &str| plan.counts().get(k).copied().unwrap_or(0);
    [
        n("create in crm"),
        n("update in crm"),
        n("delete in crm"),
        n("create in provider"),
        n("update in provider"),
        n("delete in provider"),
    ]
}

fn done_writes(r: &KindReport) -> [u64; 6] {
    [
        r.created_in_crm,
        r.updated_in_crm,
        r.deleted_in_crm,
        r.created_in_provider,
        r.updated_in_provider,
        r.deleted_in_provider,
    ]
}

#[tokio::test]
async fn a_plan_prints_without_writing_and_applies_to_exactly_its_writes() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    let plan = w.engine.plan(&w.rep, Kind::Contact).await.unwrap();
    let text = plan.to_string();
    for line in [
        "contacts: provider read full, crm read full",
        "would create in crm: 1 (ned new)",
        "would create in provider: 1 (cora crm)",
        "would link: 1 (ann match)",
        "would skip outside_filter: 1",
        "would skip outside_scope: 1",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(json["pairs"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(json["counts"]["skipped"]["outside_filter"], 1, "{json}");
    // Planning wrote nothing, anywhere.
    assert_eq!(w.writes(), 0);
    assert!(w.links().await.is_empty());
    assert_eq!(w.store.cursors(&w.rep.id, Kind::Contact).await.unwrap(), Cursors::default());

    let planned = planned_writes(&plan);
    let report = w.engine.apply(&w.rep, plan).await.unwrap();
    assert_eq!(done_writes(&report), planned, "{report:?}");
    assert_eq!(w.writes(), planned.iter().sum::<u64>());
    assert_eq!(report.linked, 1);
    assert!(emails_in(&w.crm.contacts).contains(&"ned@acme.com".to_owned()));
    assert_eq!(w.links().await.len(), 3);

    // An edit: the next plan announces one CRM update, and applying it makes exactly that.
    let mb = w.provider.mailbox(&w.rep.mailbox);
    let ann = mb
        .contacts
        .lock()
        .unwrap()
        .records
        .values()
        .find(|r| r.record.emails() == ["ann@acme.com"])
        .unwrap()
        .id
        .clone();
    mb.contacts.lock().unwrap().edit(&ann, |r| r.set_field("title", Some("CTO".into())));
    let plan = w.engine.plan(&w.rep, Kind::Contact).await.unwrap();
    assert!(plan.to_string().contains("would update in crm: 1 (ann match)"), "{plan}");
    let planned = planned_writes(&plan);
    assert_eq!(planned, [0, 1, 0, 0, 0, 0]);
    let before = w.writes();
    let report = w.engine.apply(&w.rep, plan).await.unwrap();
    assert_eq!(done_writes(&report), planned, "{report:?}");
    assert_eq!(w.writes() - before, 1);
    let plan = w.engine.plan(&w.rep, Kind::Contact).await.unwrap();
    assert!(plan.counts().is_empty(), "nothing left to do:\n{plan}");
}

#[tokio::test]
async fn a_plan_made_before_a_reset_is_refused() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    let plan = w.engine.plan(&w.rep, Kind::Contact).await.unwrap();
    w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    let err = w.engine.apply(&w.rep, plan).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(w.links().await.is_empty());
}

fn ann_id(state: &std::sync::Mutex<MemState>) -> String {
    let st = state.lock().unwrap();
    st.records.values().find(|r| r.record.emails() == ["ann@acme.com"]).unwrap().id.clone()
}

fn title_of(state: &std::sync::Mutex<MemState>, id: &str) -> Option<String> {
    state.lock().unwrap().records[id].record.field("title")
}

/// A crash after a provider update batch landed, before its links were committed: the rep's
/// next edit of that contact is an edit, not a conflict the CRM wins.
#[tokio::test]
async fn a_crash_after_an_update_landed_loses_no_later_edit() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    w.engine.cycle(&w.rep).await.unwrap();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    let (pid, cid) = (ann_id(&mb.contacts), ann_id(&w.crm.contacts));
    // A CRM edit, copied to the provider by a cycle that dies right after the provider update.
    w.crm.contacts.lock().unwrap().edit(&cid, |r| r.set_field("title", Some("VP Sales".into())));
    let switch = CrashSwitch::default();
    let crashing = Engine::new(w.crm.clone(), w.store.clone())
        .with_provider(Arc::new(CrashingProvider { inner: w.provider.clone(), switch: switch.clone() }))
        .with_clock(now());
    switch.arm(1);
    let r = crashing.cycle(&w.rep).await.unwrap();
    assert!(!switch.armed(), "the crash fired");
    assert!(r.contacts.fatal.is_some(), "{r:?}");
    assert_eq!(title_of(&mb.contacts, &pid).as_deref(), Some("VP Sales"), "the update landed");
    let ann = w.links().await.into_iter().find(|l| l.provider_id == pid).unwrap();
    assert!(ann.pending.is_some(), "its link was not committed: {ann:?}");
    // The rep edits the contact again, in the provider (the same field and another one).
    mb.contacts.lock().unwrap().edit(&pid, |r| {
        r.set_field("title", Some("Chief Revenue Officer".into()));
        r.set_field("mobile", Some("+1 555 0100".into()));
    });
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.contacts.conflicts, 0, "{r:?}");
    assert_eq!(title_of(&w.crm.contacts, &cid).as_deref(), Some("Chief Revenue Officer"));
    assert_eq!(title_of(&mb.contacts, &pid).as_deref(), Some("Chief Revenue Officer"));
    let mobile = w.crm.contacts.lock().unwrap().records[&cid].record.field("mobile");
    assert_eq!(mobile.as_deref(), Some("+1 555 0100"));
    assert_eq!(w.engine.cycle(&w.rep).await.unwrap().writes(), 0);
}

fn subjects_in(state: &std::sync::Mutex<MemState>) -> Vec<String> {
    let mut v: Vec<String> =
        state.lock().unwrap().records.values().filter_map(|r| r.record.as_event()?.subject.clone()).collect();
    v.sort();
    v
}

/// A cycle creates the CRM copy of a new meeting and dies before linking it; the rep deletes
/// the meeting before the next cycle. The create's write-ahead record tells the next cycle
/// which meeting the copy was made from, so the copy is deleted too (not kept as an orphan).
#[tokio::test]
async fn a_copy_created_just_before_a_crash_follows_its_deleted_source() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    w.engine.cycle(&w.rep).await.unwrap();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    let (review, demo) = {
        let mut pe = mb.events.lock().unwrap();
        (
            pe.insert(event("Review", 6).into(), &["calendar"], None),
            pe.insert(event("Demo", 8).into(), &["calendar"], None),
        )
    };
    let switch = CrashSwitch::default();
    let crashing = Engine::new(Arc::new(CrashingCrm { inner: w.crm.clone(), switch: switch.clone() }), w.store.clone())
        .with_provider(w.provider.clone())
        .with_clock(now());
    switch.arm(1);
    let r = crashing.cycle(&w.rep).await.unwrap();
    assert!(!switch.armed(), "the crash fired");
    assert!(r.events.fatal.is_some(), "{r:?}");
    let crm = subjects_in(&w.crm.events);
    assert!(crm.contains(&"Review".to_string()) && crm.contains(&"Demo".to_string()), "the creates landed: {crm:?}");
    let creating: Vec<Link> = w.links().await.into_iter().filter(|l| l.state == LinkState::Creating).collect();
    assert_eq!(creating.len(), 2, "the creates were written ahead: {creating:?}");
    // A delta from the cursors stored before the dead cycle may never mention a record that
    // cycle saw and that is deleted since (Graph's does not): they went with its first change.
    let cursors = w.store.cursors(&w.rep.id, Kind::Event).await.unwrap();
    assert_eq!((cursors.provider, cursors.crm), (None, None));
    // The rep deletes one of the two meetings; the other stays.
    assert!(mb.events.lock().unwrap().remove(&review));
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert!(r.events.full_read_provider && r.events.full_read_crm, "{r:?}");
    assert_eq!(r.events.deleted_in_crm, 1, "{r:?}");
    assert_eq!(r.events.created_in_crm, 0, "{r:?}");
    let crm = subjects_in(&w.crm.events);
    assert!(!crm.contains(&"Review".to_string()), "the deleted meeting's copy went: {crm:?}");
    assert_eq!(crm.iter().filter(|s| *s == "Demo").count(), 1, "{crm:?}");
    let links = w.links().await;
    assert!(links.iter().all(|l| l.state != LinkState::Creating), "no record left in flight: {links:?}");
    assert!(links.iter().any(|l| l.provider_id == demo && l.state == LinkState::Linked), "{links:?}");
    assert_eq!(w.engine.cycle(&w.rep).await.unwrap().writes(), 0);
}

/// A cycle copies a CRM contact into the mailbox and dies before linking it; the CRM record is
/// edited before the next cycle, and the mailbox's clock runs ahead of the CRM's. The copy is
/// linked against what it was made from (its create's write-ahead record), so the CRM's edit
/// is an edit and reaches the copy: no "newest wins" between two services' clocks undoes it.
#[tokio::test]
async fn a_copy_made_just_before_a_crash_takes_its_source_later_edit_whatever_the_clocks() {
    let w = world(ConnectionMode::AdminManaged);
    w.seed();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    let switch = CrashSwitch::default();
    let crashing = Engine::new(w.crm.clone(), w.store.clone())
        .with_provider(Arc::new(CrashingProvider { inner: w.provider.clone(), switch: switch.clone() }))
        .with_clock(now());
    switch.arm(1);
    let r = crashing.cycle(&w.rep).await.unwrap();
    assert!(!switch.armed(), "the crash fired");
    assert!(r.contacts.fatal.is_some(), "{r:?}");
    let by_email = |st: &std::sync::Mutex<MemState>, e: &str| {
        st.lock().unwrap().records.values().find(|r| r.record.emails() == [e]).map(|r| r.id.clone())
    };
    let copy = by_email(&mb.contacts, "cora@acme.com").expect("the copy landed");
    let cora = by_email(&w.crm.contacts, "cora@acme.com").unwrap();
    mb.contacts.lock().unwrap().records.get_mut(&copy).unwrap().modified = now() + Duration::days(1);
    w.crm.contacts.lock().unwrap().edit(&cora, |r| r.set_field("title", Some("Head of Sales".into())));
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(title_of(&w.crm.contacts, &cora).as_deref(), Some("Head of Sales"), "the CRM edit stays");
    assert_eq!(title_of(&mb.contacts, &copy).as_deref(), Some("Head of Sales"), "and reaches the copy");
    assert_eq!(r.contacts.conflicts, 0, "{r:?}");
    assert_eq!(w.engine.cycle(&w.rep).await.unwrap().writes(), 0);
}

/// Two folder contacts with the same e-mail (in any case) and nothing in the CRM: one is copied
/// and linked, the other is skipped as `ambiguous_match`, never copied as a duplicate.
#[tokio::test]
async fn two_new_records_with_one_email_are_not_both_copied() {
    let w = world(ConnectionMode::AdminManaged);
    let mb = w.provider.mailbox(&w.rep.mailbox);
    mb.contacts.lock().unwrap().insert(contact("Dee", "Dup", "dup@acme.com"), &["folder"], None);
    mb.contacts.lock().unwrap().insert(contact("Dee", "Dupe", "DUP@acme.com"), &["folder"], None);
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.contacts.created_in_crm, 1, "{r:?}");
    assert_eq!(r.contacts.skipped.get("ambiguous_match"), Some(&1), "{r:?}");
    let crm = emails_in(&w.crm.contacts);
    assert_eq!(crm, ["dup@acme.com"]);
    // Later cycles neither copy it nor forget it.
    for _ in 0..2 {
        let r = w.engine.cycle(&w.rep).await.unwrap();
        assert_eq!(r.writes(), 0, "{r:?}");
        assert_eq!(r.contacts.skipped.values().sum::<u64>(), 1, "{r:?}");
    }
    assert_eq!(emails_in(&w.crm.contacts), ["dup@acme.com"]);
}

/// Two folder contacts matching the same CRM contact: one is linked (the same one every
/// time), the other is skipped as `ambiguous_match`.
#[tokio::test]
async fn two_records_matching_one_are_not_both_linked() {
    let run = || async {
        let w = world(ConnectionMode::AdminManaged);
        let mb = w.provider.mailbox(&w.rep.mailbox);
        mb.contacts.lock().unwrap().insert(contact("Pat", "One", "pair@acme.com"), &["folder"], None);
        mb.contacts.lock().unwrap().insert(contact("Pat", "Two", "PAIR@acme.com"), &["folder"], None);
        let owner = w.owner();
        w.crm.contacts.lock().unwrap().insert(contact("Pat", "Crm", "pair@acme.com"), &[&owner], None);
        let r = w.engine.cycle(&w.rep).await.unwrap();
        assert_eq!(
            (r.contacts.linked, r.contacts.writes() - r.contacts.updated_in_crm - r.contacts.updated_in_provider),
            (1, 0),
            "{r:?}"
        );
        assert_eq!(r.contacts.skipped.get("ambiguous_match"), Some(&1), "{r:?}");
        assert_eq!(emails_in(&w.crm.contacts), ["pair@acme.com"]);
        w.links().await.into_iter().map(|l| l.provider_id).collect::<Vec<_>>()
    };
    assert_eq!(run().await, run().await, "the same record is linked every time");
}

/// Delete policy `propagate`: an edit on one side wins over a deletion on the other, and the
/// deleted side gets the edited record again (relinked, never duplicated).
#[tokio::test]
async fn a_modification_wins_over_a_deletion() {
    let mut w = world(ConnectionMode::AdminManaged);
    w.rep.config.contacts.delete = DeletePolicy::Propagate;
    w.seed();
    w.engine.cycle(&w.rep).await.unwrap();
    let mb = w.provider.mailbox(&w.rep.mailbox);
    let (pid, cid) = (ann_id(&mb.contacts), ann_id(&w.crm.contacts));
    mb.contacts.lock().unwrap().remove(&pid);
    w.crm.contacts.lock().unwrap().edit(&cid, |r| r.set_field("title", Some("Head of Ops".into())));
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!((r.contacts.deleted_in_crm, r.contacts.created_in_provider, r.contacts.unlinked), (0, 1, 1), "{r:?}");
    assert!(w.crm.contacts.lock().unwrap().records.contains_key(&cid), "the edited record stays");
    let again = ann_id(&mb.contacts);
    assert_ne!(again, pid);
    assert_eq!(title_of(&mb.contacts, &again).as_deref(), Some("Head of Ops"));
    let links = w.links().await;
    assert!(links.iter().any(|l| l.provider_id == again && l.crm_id == cid), "{links:?}");
    assert_eq!(w.engine.cycle(&w.rep).await.unwrap().writes(), 0);
}

/// A CRM that counts permission look-ups.
#[derive(Debug)]
struct CountingCrm {
    inner: Arc<MemCrm>,
    asked: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Crm for CountingCrm {
    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        self.inner.collection(rep, kind, access).await
    }
    async fn find_users(&self, name: &str) -> Result<Vec<CrmUser>> {
        self.inner.find_users(name).await
    }
    async fn permissions(&self, user_id: &str) -> Result<Vec<String>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.permissions(user_id).await
    }
}

#[tokio::test]
async fn a_bulk_reset_checks_the_permissions_once_and_records_one_reset_per_rep() {
    let w = world(ConnectionMode::AdminManaged);
    let crm = Arc::new(CountingCrm { inner: w.crm.clone(), asked: Default::default() });
    let engine = Engine::new(crm.clone(), w.store.clone()).with_provider(w.provider.clone()).with_clock(now());
    let reps: Vec<Rep> =
        (0..3).map(|i| Rep { id: format!("{}-{i}", w.rep.id), name: format!("Rep {i}"), ..w.rep.clone() }).collect();
    let asked = || crm.asked.load(std::sync::atomic::Ordering::Relaxed);
    let refused = engine.reset_many(&w.half_admin, &reps, ResetScope::All).await.unwrap_err();
    assert_eq!((refused.kind(), asked()), (ErrorKind::PermissionDenied, 1), "{refused}");
    for r in &reps {
        assert!(w.store.resets(&r.id).await.unwrap().is_empty(), "a refused bulk reset changes nothing");
    }
    let out = engine.reset_many(&w.admin, &reps, ResetScope::All).await.unwrap();
    assert_eq!(asked(), 2, "one permission check for the three resets");
    assert!(out.iter().all(|o| o.as_ref().is_ok_and(|o| o.state == RepState::ResetPending)), "{out:?}");
    for r in &reps {
        let audit = w.store.resets(&r.id).await.unwrap();
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!((audit[0].admin_name.as_str(), audit[0].undoable), ("Ada Admin", true));
    }
}
