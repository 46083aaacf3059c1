//! The engine syncing the fake Graph against the in-memory CRM: links, skips, no duplicates,
//! a quiet second cycle, an expired delta, and Reset Sync with zero writes.

use std::sync::Arc;

use chrono::{Duration, Timelike, Utc};
use crmsync_core::memory::{MemCrm, MemStore};
use crmsync_core::*;
use crmsync_exchange::ExchangeProvider;
use crmsync_exchange::fake::FakeGraph;
use serde_json::json;

const MB: &str = "riley@contoso.com";

fn contact(given: &str, family: &str, email: &str) -> Contact {
    Contact {
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        emails: vec![email.into()],
        ..Default::default()
    }
}

fn at(days: i64) -> chrono::DateTime<Utc> {
    let t = Utc::now() + Duration::days(days);
    t.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap()
}

fn ev(subject: &str, days: i64) -> Event {
    let start = at(days);
    Event::new(subject, start, start + Duration::hours(1))
}

struct World {
    fake: FakeGraph,
    crm: Arc<MemCrm>,
    store: Arc<MemStore>,
    engine: Engine,
    rep: Rep,
    admin: CrmUser,
}

async fn world() -> World {
    let fake = FakeGraph::start().await;
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let admin_id = crm.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let store = Arc::new(MemStore::default());
    let provider = Arc::new(ExchangeProvider::new(fake.config()).unwrap());
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(provider);
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id,
        provider: "exchange".into(),
        mailbox: MB.into(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    };
    // The mailbox: folder members, a contact outside, one carrying the category outside.
    fake.insert_contact(MB, Some("Salesforce_Sync"), contact("Ann", "Match", "ANN@acme.com"));
    fake.insert_contact(MB, Some("Salesforce_Sync"), contact("Ned", "New", "ned@acme.com"));
    fake.insert_contact(MB, None, contact("Oscar", "Outside", "oscar@acme.com"));
    fake.insert_contact(
        MB,
        None,
        json!({"givenName":"Cat","surname":"Egory","emailAddresses":[{"address":"cat@acme.com"}],"categories":["Salesforce_Sync"]}),
    );
    fake.insert_event(MB, ev("Kickoff", 2));
    fake.insert_event(MB, Event { private: true, ..ev("Dentist", 3) });
    fake.insert_event(MB, Event { categories: vec!["Don't Sync".into()], ..ev("Poker", 4) });
    fake.insert_event(MB, ev("Ancient", -400));
    fake.insert_event(MB, Event { cancelled: true, ..ev("Cancelled", 5) });
    fake.insert_weekly_series(MB, "Weekly", at(1), Duration::minutes(30), 3);
    // The CRM: Ann (matches by e-mail), Cora (new on the CRM side).
    {
        let owner = MemCrm::owner_tag(&rep.crm_user_id);
        let mut cc = crm.contacts.lock().unwrap();
        cc.insert(contact("Ann", "Match", "ann@acme.com").into(), &[&owner], None);
        cc.insert(contact("Cora", "Crm", "cora@acme.com").into(), &[&owner], None);
    }
    World { fake, crm, store, engine, rep, admin: CrmUser { id: admin_id, name: "Ada Admin".into(), email: None } }
}

impl World {
    async fn links(&self) -> Vec<Link> {
        let mut all = vec![];
        for k in Kind::ALL {
            all.extend(self.store.links(&self.rep.id, k).await.unwrap());
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }
    fn crm_writes(&self) -> u64 {
        self.crm.contacts.lock().unwrap().writes + self.crm.events.lock().unwrap().writes
    }
    fn no_duplicates(&self) {
        for e in ["ann@acme.com", "ned@acme.com", "cora@acme.com"] {
            assert_eq!(self.fake.count_by_email(MB, e), 1, "{e} exists once in the mailbox");
        }
        let mut crm: Vec<String> =
            self.crm.contacts.lock().unwrap().records.values().flat_map(|r| r.record.emails()).collect();
        let n = crm.len();
        crm.sort();
        crm.dedup();
        assert_eq!(crm.len(), n, "no e-mail twice in the CRM");
    }
}

#[tokio::test]
async fn sync_reset_and_resync_against_the_fake_graph() {
    let w = world().await;
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    let c = &r.contacts;
    assert_eq!(c.linked, 1, "Ann matched by e-mail: {c:?}");
    assert_eq!(c.created_in_crm, 1, "Ned created in the CRM: {c:?}");
    assert_eq!(c.created_in_provider, 1, "Cora created in the folder: {c:?}");
    assert_eq!(c.skipped.get("category_not_folder"), Some(&1), "{c:?}");
    assert_eq!(c.links_total, 3);
    let cora = w
        .fake
        .folder_contacts(MB, "Salesforce_Sync")
        .into_iter()
        .find(|v| v["givenName"] == "Cora")
        .expect("Cora in folder");
    assert!(
        cora["singleValueExtendedProperties"][0]["value"].as_str().is_some_and(|k| k.starts_with("cs1.")),
        "stamped"
    );
    let e = &r.events;
    assert_eq!(e.created_in_crm, 4, "kickoff + 3 occurrences: {e:?}");
    assert_eq!(e.skipped.get("private"), Some(&1), "{e:?}");
    assert_eq!(e.skipped.get("no_sync_marker"), Some(&1), "{e:?}");
    assert!(r.requests.provider > 0);
    w.no_duplicates();

    // A quiet second cycle writes nothing and reads incrementally.
    let q = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(q.writes(), 0, "{q:?}");
    assert!(!q.contacts.full_read_provider);

    // An expired delta: full read, no duplicate link, nothing written.
    let links = w.links().await;
    w.fake.expire_cursors();
    let x = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(x.error, None, "{x:?}");
    assert!(x.contacts.full_read_provider);
    assert_eq!(x.writes(), 0, "{x:?}");
    assert_eq!(w.links().await, links, "the same links, none doubled");

    // Reset Sync, then a resync that writes zero records and re-makes the same links.
    let snap = w.fake.snapshot(MB);
    let crm_writes = w.crm_writes();
    w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    assert!(w.links().await.is_empty());
    let rs = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(rs.error, None, "{rs:?}");
    assert_eq!(rs.writes(), 0, "{rs:?}");
    assert_eq!(w.crm_writes(), crm_writes);
    assert_eq!(w.fake.snapshot(MB), snap, "no mailbox record changed");
    assert_eq!(w.links().await, links, "exactly the same links again");
    assert_eq!(rs.contacts.linked + rs.events.linked, links.len() as u64);
    w.no_duplicates();
}

#[tokio::test]
async fn user_managed_reset_needs_reconnect_and_keeps_edits_made_meanwhile() {
    let mut w = world().await;
    w.rep.connection = ConnectionMode::UserManaged;
    let grant = secrecy::SecretString::from(w.fake.add_refresh_token(MB));
    w.engine.reconnect(&w.rep, grant.clone()).await.unwrap();
    let first = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(first.error, None, "{first:?}");
    assert_eq!(first.events.created_in_crm, 4);
    let out = w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    assert_eq!(out.state, RepState::NeedsReconnect);
    assert_eq!(w.store.grant(&w.rep.id).await.unwrap().map(|_| ()), None, "the grant is dropped");
    let paused = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(paused.writes(), 0);
    assert_eq!(paused.state, RepState::NeedsReconnect);
    // While disconnected the rep renames and moves the kickoff.
    let kickoff = w.fake.events(MB).into_iter().find(|e| e["subject"] == "Kickoff").unwrap();
    let id = kickoff["id"].as_str().unwrap().to_owned();
    w.fake.reschedule_event(MB, &id, Some("Kickoff (moved)"), at(9), Duration::minutes(45));
    w.engine.reconnect(&w.rep, grant).await.unwrap();
    let after = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(after.error, None, "{after:?}");
    assert_eq!(after.events.created_in_crm, 0, "relinked, not duplicated: {:?}", after.events);
    assert_eq!(after.events.updated_in_crm, 1, "the edit made meanwhile syncs: {:?}", after.events);
    let crm_subjects: Vec<String> = w
        .crm
        .events
        .lock()
        .unwrap()
        .records
        .values()
        .filter_map(|r| r.record.as_event().and_then(|e| e.subject.clone()))
        .collect();
    assert!(crm_subjects.contains(&"Kickoff (moved)".to_string()), "{crm_subjects:?}");
    assert!(!crm_subjects.contains(&"Kickoff".to_string()));
    w.no_duplicates();
}
