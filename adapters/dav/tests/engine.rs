//! The engine syncing a CardDAV address book on a real Radicale with the in-memory CRM:
//! initial sync, edits both ways, an expired sync token (full read, no duplicates), Reset Sync
//! and a resync with zero writes.

mod common;

use std::sync::Arc;

use crmsync_core::memory::{MemCrm, MemStore};
use crmsync_core::*;
use crmsync_dav::client::{Auth, Session};

fn contact(given: &str, family: &str, email: &str) -> Contact {
    Contact {
        given_name: Some(given.into()),
        family_name: Some(family.into()),
        emails: vec![email.into()],
        ..Default::default()
    }
}

/// A vCard 3.0 another client (a phone, Thunderbird) would have written.
fn card3(uid: &str, given: &str, family: &str, email: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nN:{family};{given};;;\r\nFN:{given} {family}\r\n\
         EMAIL;TYPE=INTERNET:{email}\r\nTEL;TYPE=WORK:+1 555 0100\r\nEND:VCARD\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_both_ways_survives_an_expired_token_and_resyncs_quietly_after_reset() {
    let Some(server) = common::radicale().await else { return };
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let admin_id = crm.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let admin = CrmUser { id: admin_id, name: "Ada Admin".into(), email: None };
    let store = Arc::new(MemStore::default());
    let engine = Engine::new(crm.clone(), store.clone()).with_provider(Arc::new(server.provider("Salesforce Sync")));
    let mut config = SyncConfig::default();
    config.events.direction = Direction::Off;
    let rep = Rep {
        id: rep_id.clone(),
        name: "Riley Rep".into(),
        crm_user_id: rep_id.clone(),
        provider: "dav".into(),
        mailbox: "riley".into(),
        connection: ConnectionMode::AdminManaged,
        config,
    };

    // The rep's address book holds Ann (also in the CRM) and Ned; the CRM holds Ann and Cora.
    let password = secrecy::SecretString::from("x");
    let session = Session::new(&server.url, Auth::Basic { user: "riley", password: &password }).unwrap();
    let (book, supports_sync) = session.collection(Kind::Contact, "Salesforce Sync").await.unwrap();
    assert!(supports_sync, "Radicale supports sync-collection");
    let http = reqwest::Client::new();
    for (uid, given, family, email) in [("ann", "Ann", "Match", "ann@acme.com"), ("ned", "Ned", "New", "ned@acme.com")]
    {
        let url = format!("{}{}{uid}.vcf", server.url.trim_end_matches('/'), book);
        let put = http.put(url).basic_auth("riley", Some("x")).body(card3(uid, given, family, email)).send().await;
        assert!(put.unwrap().status().is_success());
    }
    let owner = MemCrm::owner_tag(&rep_id);
    let cora = {
        let mut cc = crm.contacts.lock().unwrap();
        cc.insert(contact("Ann", "Match", "ann@acme.com").into(), &[&owner], None);
        cc.insert(contact("Cora", "Crm", "cora@acme.com").into(), &[&owner], None)
    };

    let r1 = engine.cycle(&rep).await.unwrap();
    assert_eq!(r1.error, None, "{r1:#?}");
    assert_eq!(r1.contacts.linked, 1, "Ann matched by e-mail: {r1:#?}");
    assert_eq!(r1.contacts.created_in_crm, 1, "Ned");
    assert_eq!(r1.contacts.created_in_provider, 1, "Cora");
    assert!(r1.requests.provider > 0);
    let links = |s: Arc<MemStore>, rep: String| async move { s.links(&rep, Kind::Contact).await.unwrap() };
    assert_eq!(links(store.clone(), rep.id.clone()).await.len(), 3);

    let r2 = engine.cycle(&rep).await.unwrap();
    assert_eq!(r2.writes(), 0, "a second cycle writes nothing: {r2:#?}");
    assert!(!r2.contacts.full_read_provider, "an incremental read (sync-collection)");

    // An edit in the address book flows to the CRM, an edit in the CRM to the address book.
    let access = Access { window: rep.config.window(chrono::Utc::now()), grant: None };
    let dav = server.provider("Salesforce Sync").collection(&rep, Kind::Contact, &access).await.unwrap();
    let ned = dav.find(&[MatchKey::Email("ned@acme.com".into())]).await.unwrap().remove(0).item;
    let mut record = ned.record.clone();
    record.set_field("title", Some("Head of Buying".into()));
    let up = Update { id: ned.id.clone(), version: ned.version.clone(), fields: vec!["title".into()], record };
    dav.update_many(&[up]).await.unwrap()[0].as_ref().unwrap();
    crm.contacts.lock().unwrap().edit(&cora, |r| r.set_field("title", Some("Buyer".into())));
    let r3 = engine.cycle(&rep).await.unwrap();
    assert_eq!((r3.contacts.updated_in_crm, r3.contacts.updated_in_provider), (1, 1), "{r3:#?}");
    let cora_card = dav.find(&[MatchKey::Email("cora@acme.com".into())]).await.unwrap().remove(0).item;
    assert_eq!(cora_card.record.field("title").as_deref(), Some("Buyer"));
    let ned_card = dav.get_many(std::slice::from_ref(&ned.id)).await.unwrap().remove(0);
    assert_eq!(ned_card.record.field("phone").as_deref(), Some("+1 555 0100"), "properties not written survive");

    // The sync token expires: a full read, nothing duplicated, nothing written.
    common::expire(&server, dav.as_ref(), Kind::Contact).await;
    let r4 = engine.cycle(&rep).await.unwrap();
    assert_eq!(r4.error, None, "{r4:#?}");
    assert!(r4.contacts.full_read_provider, "{r4:#?}");
    assert_eq!(r4.writes(), 0, "{r4:#?}");
    let cards = dav.changes(None).await.unwrap().items.len();
    assert_eq!(cards, 3, "no duplicate in the address book");
    assert_eq!(crm.contacts.lock().unwrap().records.len(), 3, "no duplicate in the CRM");

    // Reset Sync, then a resync relinks everything without writing.
    engine.reset(&admin, &rep, ResetScope::All).await.unwrap();
    assert!(links(store.clone(), rep.id.clone()).await.is_empty());
    let r5 = engine.cycle(&rep).await.unwrap();
    assert_eq!(r5.error, None, "{r5:#?}");
    assert_eq!(r5.writes(), 0, "resync after reset writes nothing: {r5:#?}");
    assert_eq!(links(store.clone(), rep.id.clone()).await.len(), 3);
}
