//! A cycle killed between a batch's remote write and its link write leaves a SQLite store from
//! which the next cycle (a new process: the store is reopened from its file) links the records
//! without creating duplicates.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crmsync_core::memory::{MemCrm, MemProvider, MemState};
use crmsync_core::testkit::crash::{CrashSwitch, CrashingCrm, CrashingProvider};
use crmsync_core::testkit::sample;
use crmsync_core::{ConnectionMode, Engine, Kind, LinkState, Rep, SyncConfig, SyncState};
use crmsync_sql::SqlStore;

use common::TempDb;

/// Records per sync key (stamped records only).
fn per_key(st: &Arc<Mutex<MemState>>) -> BTreeMap<String, usize> {
    let st = st.lock().expect("state");
    let mut out = BTreeMap::new();
    for r in st.records.values() {
        if let Some(k) = &r.sync_key {
            *out.entry(k.0.clone()).or_default() += 1;
        }
    }
    out
}

#[tokio::test]
async fn a_crash_between_remote_write_and_link_write_leaves_no_duplicate() {
    let db = TempDb::new("crash");
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let provider = Arc::new(MemProvider::new("mem"));
    let mailbox = provider.mailbox("riley");
    for i in 0..5 {
        mailbox.contacts.lock().expect("state").insert(sample(Kind::Contact, i), &["folder"], None);
    }
    let owner = MemCrm::owner_tag(&rep_id);
    for i in 10..13 {
        crm.contacts.lock().expect("state").insert(sample(Kind::Contact, i), &[owner.as_str()], None);
    }
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id.clone(),
        provider: "mem".into(),
        mailbox: "riley".into(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    };

    // First process: the first batch of creates lands remotely, then the process "dies".
    {
        let store = Arc::new(SqlStore::connect(&db.url()).await.expect("open store"));
        let switch = CrashSwitch::default();
        let engine = Engine::new(Arc::new(CrashingCrm { inner: crm.clone(), switch: switch.clone() }), store.clone())
            .with_provider(Arc::new(CrashingProvider { inner: provider.clone(), switch: switch.clone() }));
        switch.arm(1);
        let report = engine.cycle(&rep).await.expect("a crashed batch is reported, not fatal to the store");
        assert!(!switch.armed(), "the crash fired");
        assert!(report.error.is_some() || report.contacts.fatal.is_some(), "the cycle saw the crash: {report:?}");
        let written = crm.contacts.lock().expect("state").writes + mailbox.contacts.lock().expect("state").writes;
        let links = store.links(&rep.id, Kind::Contact).await.expect("links");
        let linked = links.iter().filter(|l| l.state == LinkState::Linked).count();
        assert!(written > 0, "the remote write happened before the crash");
        assert!(linked < 8, "the crashed batch's links were not written ({linked} links)");
        store.close().await;
    }

    // Second process: a normal cycle from the same file.
    let store = Arc::new(SqlStore::connect(&db.url()).await.expect("reopen store"));
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(provider.clone());
    let report = engine.cycle(&rep).await.expect("cycle");
    assert_eq!(report.error, None, "the repair cycle is clean: {report:?}");

    let links = store.links(&rep.id, Kind::Contact).await.expect("links");
    assert_eq!(links.len(), 8, "every record is linked once (5 provider + 3 CRM contacts)");
    assert!(links.iter().all(|l| l.state == LinkState::Linked && l.pending.is_none()));
    let crm_count = crm.contacts.lock().expect("state").records.len();
    let prov_count = mailbox.contacts.lock().expect("state").records.len();
    assert_eq!((crm_count, prov_count), (8, 8), "no duplicate record on either side");
    for (side, st) in [("crm", &crm.contacts), ("provider", &mailbox.contacts)] {
        let counts = per_key(st);
        assert!(counts.values().all(|&n| n == 1), "{side}: a sync key is on two records: {counts:?}");
    }
    for l in &links {
        assert!(crm.contacts.lock().expect("state").records.contains_key(&l.crm_id), "link to a missing CRM record");
        assert!(mailbox.contacts.lock().expect("state").records.contains_key(&l.provider_id));
    }

    // And the next cycle has nothing left to do.
    let writes = crm.contacts.lock().expect("state").writes + mailbox.contacts.lock().expect("state").writes;
    let quiet = engine.cycle(&rep).await.expect("cycle");
    assert_eq!(quiet.writes(), 0, "{quiet:?}");
    assert_eq!(crm.contacts.lock().expect("state").writes + mailbox.contacts.lock().expect("state").writes, writes);
    assert_eq!(store.runs(&rep.id).await.expect("runs").len(), 3, "every cycle is recorded as a run");
    store.close().await;
}

#[tokio::test]
async fn reset_sync_through_the_engine_then_resync_writes_nothing() {
    let db = TempDb::new("engine_reset");
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let admin_id = crm.add_user("Ada Admin", &[crmsync_core::MANAGE_USERS, crmsync_core::MANAGE_SYNC]);
    let provider = Arc::new(MemProvider::new("mem"));
    let mailbox = provider.mailbox("riley");
    for i in 0..4 {
        mailbox.contacts.lock().expect("state").insert(sample(Kind::Contact, i), &["folder"], None);
    }
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id.clone(),
        provider: "mem".into(),
        mailbox: "riley".into(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    };
    let store = Arc::new(SqlStore::connect(&db.url()).await.expect("open store"));
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(provider.clone());
    let first = engine.cycle(&rep).await.expect("cycle");
    assert_eq!(first.error, None);
    assert_eq!(store.links(&rep.id, Kind::Contact).await.expect("links").len(), 4);

    let admin = crmsync_core::CrmUser { id: admin_id, name: "Ada Admin".into(), email: None };
    engine.reset(&admin, &rep, crmsync_core::ResetScope::All).await.expect("reset");
    assert!(store.links(&rep.id, Kind::Contact).await.expect("links").is_empty(), "reset cleared the links");
    let resets = store.resets(&rep.id).await.expect("resets");
    assert_eq!(resets.len(), 1);
    assert_eq!(resets[0].links_removed.get("contact"), Some(&4));
    assert_eq!(resets[0].admin_name, "Ada Admin");

    let writes = crm.contacts.lock().expect("state").writes + mailbox.contacts.lock().expect("state").writes;
    let again = engine.cycle(&rep).await.expect("cycle after reset");
    assert_eq!(again.error, None);
    assert_eq!(again.writes(), 0, "a resync relinks without writing: {again:?}");
    assert_eq!(crm.contacts.lock().expect("state").writes + mailbox.contacts.lock().expect("state").writes, writes);
    assert_eq!(store.links(&rep.id, Kind::Contact).await.expect("links").len(), 4, "every record is linked again");
    assert_eq!(crm.contacts.lock().expect("state").records.len(), 4, "no duplicate in the CRM");
    store.close().await;
}
