//! The engine syncing the fake org against the in-memory provider: links, no duplicates,
//! Reset Sync by an admin holding both permissions, and a resync that writes nothing.

use std::sync::Arc;

use chrono::{Duration, Utc};
use crmsync_core::memory::{MemProvider, MemStore};
use crmsync_core::*;
use crmsync_salesforce::SalesforceCrm;
use crmsync_salesforce::fake::FakeSalesforce;
use serde_json::json;

fn contact(given: &str, family: &str, email: &str) -> Record {
    Record::Contact(Contact {
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        emails: vec![email.into()],
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reset_and_resync_against_the_fake_org() {
    let fake = FakeSalesforce::start().await;
    let rep_id = fake.add_user("Riley Rep", &[]);
    let other = fake.add_user("Olivia Other", &[]);
    let admin_id = fake.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let half_id = fake.add_user("Hal Halfadmin", &[MANAGE_USERS]);
    let crm = Arc::new(SalesforceCrm::new(fake.config()).unwrap());
    let provider = Arc::new(MemProvider::new("mem"));
    let store = Arc::new(MemStore::default());
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(provider.clone());
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id.clone(),
        provider: "mem".into(),
        mailbox: "riley@example.com".into(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    };

    let ann = fake.insert_contact(&rep_id, json!({"FirstName": "Ann", "LastName": "Match", "Email": "ann@acme.com"}));
    fake.insert_contact(&rep_id, json!({"FirstName": "Cora", "LastName": "Crm", "Email": "cora@acme.com"}));
    fake.insert_contact(&other, json!({"FirstName": "Fay", "LastName": "Foreign", "Email": "fay@acme.com"}));
    let mb = provider.mailbox(&rep.mailbox);
    {
        let mut pc = mb.contacts.lock().unwrap();
        pc.insert(contact("Ann", "Match", "ANN@acme.com"), &["folder"], None);
        pc.insert(contact("Ned", "New", "ned@acme.com"), &["folder"], None);
        pc.insert(contact("Fay", "Foreign", "fay@acme.com"), &["folder"], None);
        let mut pe = mb.events.lock().unwrap();
        let start = Utc::now() + Duration::days(2);
        let start = start - Duration::nanoseconds(start.timestamp_subsec_nanos() as i64);
        let kickoff = Event {
            attendees: vec!["ann@acme.com".into()],
            ..Event::new("Kickoff", start, start + Duration::hours(1))
        };
        pe.insert(kickoff.into(), &["calendar"], None);
    }
    let provider_writes = || mb.contacts.lock().unwrap().writes + mb.events.lock().unwrap().writes;
    let crm_writes = || {
        let c = fake.counts();
        ["composite", "collections_create", "collections_update", "collections_upsert", "collections_delete"]
            .iter()
            .map(|k| c.get(*k).copied().unwrap_or(0))
            .sum::<u64>()
    };

    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.contacts.linked, 1, "Ann matched by e-mail: {:?}", r.contacts);
    assert_eq!(r.contacts.created_in_crm, 1, "Ned created in Salesforce");
    assert_eq!(r.contacts.created_in_provider, 1, "Cora created in the folder");
    assert_eq!(r.contacts.skipped.get("outside_filter"), Some(&1), "Fay belongs to another owner");
    assert_eq!(r.events.created_in_crm, 1);
    for email in ["ann@acme.com", "cora@acme.com", "ned@acme.com", "fay@acme.com"] {
        assert_eq!(fake.count_contacts_by_email(email), 1, "{email} exists once in the org");
    }
    let events = fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["WhoId"], json!(ann), "the event is related to the attendee's contact");
    assert_eq!(events[0]["OwnerId"], json!(rep_id));
    assert!(r.requests.crm > 0);
    let links_before: usize = {
        let mut n = 0;
        for k in Kind::ALL {
            n += store.links(&rep.id, k).await.unwrap().len();
        }
        n
    };
    assert_eq!(links_before, 4, "3 contacts + 1 event");

    // A quiet incremental cycle writes nothing.
    let (pw, cw) = (provider_writes(), crm_writes());
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None);
    assert_eq!((provider_writes(), crm_writes()), (pw, cw), "nothing changed, nothing written: {r:?}");

    // An admin without Manage Sync is refused; with both, the reset removes the links only.
    let half = CrmUser { id: half_id, name: "Hal Halfadmin".into(), email: None };
    let err = engine.reset(&half, &rep, ResetScope::All).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let admin = CrmUser { id: admin_id, name: "Ada Admin".into(), email: None };
    let contacts_before = fake.contacts();
    engine.reset(&admin, &rep, ResetScope::All).await.unwrap();
    assert!(store.links(&rep.id, Kind::Contact).await.unwrap().is_empty());
    assert_eq!(fake.contacts(), contacts_before, "a reset touches no record");

    // The resync re-reads everything, relinks, and writes zero records.
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert!(r.contacts.full_read_crm && r.contacts.full_read_provider);
    assert_eq!((provider_writes(), crm_writes()), (pw, cw), "resync after reset writes nothing: {r:?}");
    let mut links_after = 0;
    for k in Kind::ALL {
        links_after += store.links(&rep.id, k).await.unwrap().len();
    }
    assert_eq!(links_after, links_before);
    assert_eq!(fake.contacts(), contacts_before);
    assert_eq!(fake.events().len(), 1);
}

/// Shared Activities: a meeting with three contact attendees and one stranger becomes one CRM
/// Event related to the three (the primary `WhoId` the address that sorts first); the stranger
/// is reported; removing an attendee removes one relation; a reset re-syncs with no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_relates_to_every_contact_among_its_attendees() {
    let fake = FakeSalesforce::start().await;
    let rep_id = fake.add_user("Riley Rep", &[]);
    let admin_id = fake.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let crm = Arc::new(SalesforceCrm::new(fake.config()).unwrap());
    let provider = Arc::new(MemProvider::new("mem"));
    let store = Arc::new(MemStore::default());
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(provider.clone());
    let mut config = SyncConfig::default();
    config.contacts.direction = Direction::Off;
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id.clone(),
        provider: "mem".into(),
        mailbox: "riley@example.com".into(),
        connection: ConnectionMode::AdminManaged,
        config,
    };
    let ids: Vec<String> = ["bea", "ann", "cal"]
        .iter()
        .map(|n| fake.insert_contact(&rep_id, json!({"LastName": n, "Email": format!("{n}@acme.com")})))
        .collect();
    let (bea, ann) = (&ids[0], &ids[1]);
    let mb = provider.mailbox(&rep.mailbox);
    let start = Utc::now() + Duration::days(2);
    let start = start - Duration::nanoseconds(start.timestamp_subsec_nanos() as i64);
    let meeting = Event {
        attendees: vec!["Cal@acme.com".into(), "bea@acme.com".into(), "stranger@else.io".into(), "ann@acme.com".into()],
        ..Event::new("Quarterly review", start, start + Duration::hours(1))
    };
    let pid = mb.events.lock().unwrap().insert(meeting.into(), &["calendar"], None);

    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.events.created_in_crm, 1);
    let events = fake.events();
    assert_eq!(events.len(), 1, "one CRM Event for the meeting");
    let ev = events[0]["Id"].as_str().unwrap().to_owned();
    assert_eq!(events[0]["WhoId"], json!(ann), "the primary is the contact whose address sorts first");
    assert_eq!(fake.related_emails(&ev), ["ann@acme.com", "bea@acme.com", "cal@acme.com"]);
    assert_eq!(fake.relations(&ev).len(), 3);
    assert_eq!(
        r.events.unrelated_attendees.iter().map(|(a, n)| (a.as_str(), *n)).collect::<Vec<_>>(),
        [("stranger@else.io", 1)],
        "the attendee that is no contact is reported, not dropped silently"
    );

    // A quiet cycle writes nothing (the CRM holding fewer attendees than the mailbox is no change).
    fake.reset_counts();
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!((r.events.writes(), fake.count("composite")), (0, 0), "{r:?}");

    // The primary leaves the meeting: one relation fewer, the next address becomes the WhoId.
    mb.events.lock().unwrap().edit(&pid, |rec| {
        if let Record::Event(e) = rec {
            e.attendees.retain(|a| a != "ann@acme.com");
        }
    });
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.events.updated_in_crm, 1, "{r:?}");
    assert_eq!(fake.related_emails(&ev), ["bea@acme.com", "cal@acme.com"]);
    assert_eq!(fake.relations(&ev).len(), 2, "removing one attendee removed one relation");
    assert_eq!(fake.record(&ev).unwrap()["WhoId"], json!(bea));
    assert_eq!(fake.events().len(), 1);

    // A new contact attendee is related; the stranger is reported again with the write.
    mb.events.lock().unwrap().edit(&pid, |rec| {
        if let Record::Event(e) = rec {
            e.attendees.push("ann@acme.com".into());
        }
    });
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(fake.related_emails(&ev), ["ann@acme.com", "bea@acme.com", "cal@acme.com"]);
    assert_eq!(fake.record(&ev).unwrap()["WhoId"], json!(ann));
    assert_eq!(r.events.unrelated_attendees.get("stranger@else.io"), Some(&1));

    // Reset Sync: everything is read again and matched; nothing is written.
    let admin = CrmUser { id: admin_id, name: "Ada Admin".into(), email: None };
    engine.reset(&admin, &rep, ResetScope::All).await.unwrap();
    let writes = mb.events.lock().unwrap().writes;
    fake.reset_counts();
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!((r.events.writes(), r.events.linked), (0, 1), "{r:?}");
    assert_eq!((fake.count("composite"), mb.events.lock().unwrap().writes), (0, writes));
    assert_eq!(fake.related_emails(&ev).len(), 3);
}
