//! The engine syncing the Google fake with the in-memory CRM: links, no duplicates, quiet
//! second cycle, expired cursors, Reset Sync + resync with zero writes.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use crmsync_core::memory::{MemCrm, MemState, MemStore};
use crmsync_core::*;
use crmsync_google::fake::{DEFAULT_GROUP, EventEdit, FakeGoogle};

fn contact(given: &str, family: &str, email: &str) -> Contact {
    Contact {
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        emails: vec![email.into()],
        ..Default::default()
    }
}

fn event(subject: &str, days: i64) -> Event {
    let now = Utc::now();
    let start = now - Duration::nanoseconds(now.timestamp_subsec_nanos() as i64) + Duration::days(days);
    Event::new(subject, start, start + Duration::hours(1))
}

struct World {
    fake: FakeGoogle,
    crm: Arc<MemCrm>,
    store: Arc<MemStore>,
    engine: Engine,
    rep: Rep,
    admin: CrmUser,
}

async fn world() -> World {
    let fake = FakeGoogle::start().await;
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let admin_id = crm.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let store = Arc::new(MemStore::default());
    let google = Arc::new(common::provider(&fake, 2));
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(google);
    let mailbox = common::mailbox();
    fake.add_user(&mailbox);
    let rep = Rep { id: rep_id.clone(), crm_user_id: rep_id, provider: "google".into(), ..common::rep(&mailbox) };
    World { fake, crm, store, engine, rep, admin: CrmUser { id: admin_id, name: "Ada Admin".into(), email: None } }
}

fn crm_emails(state: &std::sync::Mutex<MemState>) -> Vec<String> {
    let mut v: Vec<String> = state.lock().unwrap().records.values().flat_map(|r| r.record.emails()).collect();
    v.sort();
    v
}

impl World {
    fn seed(&self) -> String {
        let mb = &self.rep.mailbox;
        self.fake.insert_contact(mb, true, &contact("Ann", "Match", "ANN@acme.com"));
        let ned = self.fake.insert_contact(mb, true, &contact("Ned", "New", "ned@acme.com"));
        self.fake.insert_contact(mb, true, &contact("Nia", "New", "nia@acme.com"));
        self.fake.insert_contact(mb, false, &contact("Oscar", "Outside", "oscar@acme.com"));
        let owner = MemCrm::owner_tag(&self.rep.crm_user_id);
        let mut cc = self.crm.contacts.lock().unwrap();
        cc.insert(contact("Ann", "Match", "ann@acme.com").into(), &[&owner], None);
        cc.insert(contact("Cora", "Crm", "cora@acme.com").into(), &[&owner], None);
        drop(cc);
        self.fake.insert_event(mb, &event("Kickoff", 2));
        self.fake.insert_event(mb, &Event { private: true, ..event("Dentist", 3) });
        self.fake.insert_event(mb, &Event { categories: vec!["marker".into()], ..event("Poker", 4) });
        self.fake.insert_event(mb, &event("Ancient", -400));
        self.fake.insert_event(mb, &Event { cancelled: true, ..event("Cancelled", 5) });
        self.fake.insert_series(mb, &event("Weekly", 1), 3, 7);
        ned
    }
    async fn links(&self, kind: Kind) -> Vec<Link> {
        self.store.links(&self.rep.id, kind).await.unwrap()
    }
    fn assert_no_duplicates(&self) {
        let mb = &self.rep.mailbox;
        assert!(self.fake.duplicate_contact_keys(mb).is_empty());
        for e in ["ann@acme.com", "ned@acme.com", "nia@acme.com", "cora@acme.com"] {
            assert_eq!(self.fake.count_contacts_with_email(mb, e), 1, "{e} in Google");
        }
        let emails = crm_emails(&self.crm.contacts);
        let mut dedup = emails.clone();
        dedup.dedup();
        assert_eq!(emails, dedup, "no duplicate CRM contacts");
        let subjects: Vec<String> = self
            .crm
            .events
            .lock()
            .unwrap()
            .records
            .values()
            .filter_map(|r| r.record.as_event().unwrap().subject.clone())
            .collect();
        assert_eq!(subjects.iter().filter(|s| *s == "Kickoff").count(), 1);
        assert_eq!(subjects.iter().filter(|s| *s == "Weekly").count(), 3);
    }
}

#[tokio::test]
async fn sync_links_without_duplicates_and_resyncs_quietly_after_reset() {
    let w = world().await;
    let ned = w.seed();
    let r1 = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r1.error, None, "{r1:#?}");
    assert_eq!(r1.contacts.fatal, None);
    assert_eq!(r1.contacts.linked, 1, "Ann matched by e-mail: {r1:#?}");
    assert_eq!(r1.contacts.created_in_crm, 2, "Ned and Nia");
    assert_eq!(r1.contacts.created_in_provider, 1, "Cora");
    assert_eq!(r1.contacts.skipped.get("outside_scope"), Some(&1), "Oscar is not in the group");
    assert_eq!(w.links(Kind::Contact).await.len(), 4);
    assert_eq!(r1.events.created_in_crm, 4, "Kickoff and three Weekly instances: {:#?}", r1.events);
    assert_eq!(w.links(Kind::Event).await.len(), 4);
    assert!(r1.requests.provider > 0);
    let members = w.fake.group_members(&w.rep.mailbox, DEFAULT_GROUP);
    assert_eq!(members.len(), 4, "Cora was created inside the group");
    w.assert_no_duplicates();

    let r2 = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r2.writes(), 0, "a second cycle writes nothing: {r2:#?}");
    assert!(!r2.contacts.full_read_provider && !r2.events.full_read_provider, "incremental reads");

    // Edits on the Google side flow to the CRM.
    w.fake.edit_contact(&w.rep.mailbox, &ned, |c| c.title = Some("Head of Buying".into()));
    let kickoff = w.fake.events(&w.rep.mailbox).into_iter().find(|e| e["summary"] == "Kickoff").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.fake.edit_event(
        &w.rep.mailbox,
        &kickoff,
        EventEdit { subject: Some("Kickoff (moved)".into()), ..Default::default() },
    );
    let r3 = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r3.contacts.updated_in_crm, 1, "{r3:#?}");
    assert_eq!(r3.events.updated_in_crm, 1, "{r3:#?}");

    // Expired sync tokens: full reads, nothing duplicated, nothing written.
    w.fake.expire_cursors();
    let r4 = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r4.error, None, "{r4:#?}");
    assert!(r4.contacts.full_read_provider && r4.events.full_read_provider);
    assert_eq!(r4.writes(), 0, "{r4:#?}");
    assert_eq!(w.links(Kind::Contact).await.len(), 4);

    // Reset Sync, then a resync relinks everything without writing.
    w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    assert!(w.links(Kind::Contact).await.is_empty());
    let r5 = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r5.error, None, "{r5:#?}");
    assert_eq!(r5.writes(), 0, "resync after reset writes nothing: {r5:#?}");
    assert_eq!(w.links(Kind::Contact).await.len(), 4);
    assert_eq!(w.links(Kind::Event).await.len(), 4);
    let subjects: Vec<String> = w
        .crm
        .events
        .lock()
        .unwrap()
        .records
        .values()
        .filter_map(|r| r.record.as_event().unwrap().subject.clone())
        .collect();
    assert!(subjects.contains(&"Kickoff (moved)".to_owned()));
    w.fake.edit_event(&w.rep.mailbox, &kickoff, EventEdit { subject: Some("Kickoff".into()), ..Default::default() });
    w.engine.cycle(&w.rep).await.unwrap();
    w.assert_no_duplicates();
}
