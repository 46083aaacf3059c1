//! The contacts folder against the fake: folder creation, membership vs category, delta,
//! paging, expiry, batches, conditional writes, request floors.

mod common;

use std::collections::BTreeSet;

use crmsync_core::{
    Change, Changes, ConnectionMode, Contact, ErrorKind, Kind, NewItem, Provider, Record, Side, SyncKey, Update,
};
use crmsync_exchange::fake::{Fault, FaultRule};
use serde_json::json;

fn person(i: usize) -> Contact {
    Contact {
        given_name: Some(format!("Given{i}")),
        family_name: Some(format!("Family{i}")),
        emails: vec![format!("p{i}@customer.example")],
        ..Default::default()
    }
}

fn upserts(ch: &Changes) -> BTreeSet<String> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i.id.clone()),
            Change::Removed(_) => None,
        })
        .collect()
}

fn removed(ch: &Changes) -> BTreeSet<String> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Removed(id) => Some(id.clone()),
            Change::Upsert(_) => None,
        })
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn key(i: usize) -> SyncKey {
    SyncKey::derive("rep-x", Kind::Contact, Side::Crm, &format!("crm-{i}"))
}

#[tokio::test]
async fn the_folder_is_created_when_missing_and_reused() {
    let env = common::env(10).await;
    let mb = "ada@contoso.com";
    assert_eq!(env.fake.folder_id(mb, "Salesforce_Sync"), None);
    let c = env.admin(mb, Kind::Contact).await;
    let id = env.fake.folder_id(mb, "Salesforce_Sync").expect("folder created");
    // lookup + create + the app token
    assert_eq!(c.requests(), 3, "token, folder lookup, folder create");
    let again = env.admin(mb, Kind::Contact).await;
    assert_eq!(env.fake.folder_id(mb, "Salesforce_Sync"), Some(id));
    assert_eq!(again.requests(), 1, "the token is cached; the lookup finds the folder");
    // A configured name is honoured.
    let mut rep = common::rep(mb, ConnectionMode::AdminManaged);
    rep.config.contacts.folder = "CRM Kontakte".into();
    env.provider.collection(&rep, Kind::Contact, &common::access(None)).await.expect("collection");
    assert!(env.fake.folder_id(mb, "CRM Kontakte").is_some());
}

#[tokio::test]
async fn only_folder_members_are_read_and_the_category_is_reported_not_synced() {
    let env = common::env(10).await;
    let mb = "bob@contoso.com";
    env.fake.add_mailbox(mb);
    let member = env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(1));
    let tagged = env.fake.insert_contact(
        mb,
        None,
        json!({"givenName":"Cat","surname":"Egory","categories":["Salesforce_Sync"],"emailAddresses":[{"address":"cat@x.example"}]}),
    );
    let elsewhere = env.fake.insert_contact(mb, Some("Friends"), person(3));
    let c = env.admin(mb, Kind::Contact).await;
    let full = c.changes(None).await.expect("full read");
    assert!(full.full);
    assert_eq!(upserts(&full), set(&[&member]), "only the folder member is read");
    assert_eq!(full.skipped.len(), 1);
    assert_eq!(full.skipped[0].id, tagged);
    assert_eq!(full.skipped[0].reason, "category_not_folder");
    assert!(!upserts(&full).contains(&elsewhere));
    // Editing the tagged contact never brings it in.
    env.fake.edit_contact(mb, &tagged, |c| c["jobTitle"] = json!("Boss"));
    let inc = c.changes(full.cursor.as_deref()).await.expect("incremental");
    assert!(inc.items.is_empty(), "changes outside the folder are not read: {:?}", inc.items);
    assert!(inc.skipped.is_empty(), "the category check runs on full reads only");
}

#[tokio::test]
async fn delta_sees_create_edit_delete_and_move_out() {
    let env = common::env(10).await;
    let mb = "cy@contoso.com";
    env.fake.add_mailbox(mb);
    let ids: Vec<String> = (0..4).map(|i| env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(i))).collect();
    let outsider = env.fake.insert_contact(mb, Some("Friends"), person(9));
    let c = env.admin(mb, Kind::Contact).await;
    let full = c.changes(None).await.expect("full");
    assert_eq!(upserts(&full).len(), 4);
    let cursor = full.cursor.expect("delta link");
    assert!(cursor.contains("$deltatoken=") || cursor.contains("%24deltatoken="), "cursor is the deltaLink: {cursor}");

    env.fake.edit_contact(mb, &ids[0], |c| c["jobTitle"] = json!("CTO"));
    env.fake.delete_contact(mb, &ids[1]);
    env.fake.move_contact(mb, &ids[2], Some("Friends"));
    env.fake.move_contact(mb, &outsider, Some("Salesforce_Sync"));
    let created = env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(5));
    let inc = c.changes(Some(&cursor)).await.expect("incremental");
    assert!(!inc.full);
    assert_eq!(upserts(&inc), set(&[&ids[0], &outsider, &created]));
    assert_eq!(removed(&inc), set(&[&ids[1], &ids[2]]), "deleted and moved-out contacts read as removed");
    let edited = inc.items.iter().find_map(|ch| match ch {
        Change::Upsert(i) if i.id == ids[0] => Some(i),
        _ => None,
    });
    assert_eq!(edited.and_then(|i| i.record.as_contact()).and_then(|c| c.title.clone()).as_deref(), Some("CTO"));
    let quiet = c.changes(inc.cursor.as_deref()).await.expect("quiet");
    assert!(quiet.items.is_empty());
}

#[tokio::test]
async fn reads_span_pages_with_empty_pages_and_replayed_items() {
    let env = common::env(5).await;
    let mb = "dee@contoso.com";
    env.fake.add_mailbox(mb);
    for i in 0..12 {
        env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(i));
    }
    env.fake.set_empty_pages(true);
    env.fake.set_replay(true);
    let c = env.admin(mb, Kind::Contact).await;
    env.fake.reset_counts();
    let full = c.changes(None).await.expect("full");
    assert_eq!(full.items.len(), 12, "every contact exactly once although one was replayed");
    assert_eq!(upserts(&full).len(), 12);
    // 13 entries (one replay) in pages of 5 → 3 pages, plus one empty page.
    assert_eq!(env.fake.count("contacts.delta"), 4);
}

#[tokio::test]
async fn an_expired_delta_is_cursor_expired_and_the_full_read_has_no_duplicates() {
    let env = common::env(4).await;
    let mb = "eve@contoso.com";
    env.fake.add_mailbox(mb);
    for i in 0..6 {
        env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(i));
    }
    let c = env.admin(mb, Kind::Contact).await;
    let full = c.changes(None).await.expect("full");
    env.fake.expire_cursors();
    let err = c.changes(full.cursor.as_deref()).await.expect_err("expired");
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "{err}");
    let again = c.changes(None).await.expect("full again");
    assert_eq!(again.items.len(), 6);
    assert_eq!(upserts(&again), upserts(&full), "the same items, once each");
}

#[tokio::test]
async fn a_batch_with_one_failing_and_one_throttled_item() {
    let env = common::env(10).await;
    let mb = "fay@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    let made: Vec<_> = c
        .create_many(&(0..3).map(|i| NewItem { sync_key: key(i), record: person(i).into() }).collect::<Vec<_>>())
        .await
        .expect("create")
        .into_iter()
        .map(|r| r.expect("created"))
        .collect();
    env.fake.delete_contact(mb, &made[1].id);
    let ups: Vec<Update> = made
        .iter()
        .map(|it| {
            let mut rec = it.record.clone();
            rec.set_field("title", Some("Buyer".into()));
            Update { id: it.id.clone(), version: it.version.clone(), fields: vec!["title".into()], record: rec }
        })
        .collect();
    env.fake.reset_counts();
    env.fake.inject(FaultRule::new(Fault::TooManyRequests { retry_after_ms: 5 }).endpoint("batch:*").nth(3));
    let res = c.update_many(&ups).await.expect("update_many");
    assert_eq!(res.len(), 3);
    assert_eq!(res[0].as_ref().expect("first lands").record.as_contact().unwrap().title.as_deref(), Some("Buyer"));
    assert_eq!(res[1].as_ref().expect_err("deleted item fails").kind(), ErrorKind::NotFound);
    assert!(res[2].is_ok(), "the throttled item is retried: {:?}", res[2]);
    assert_eq!(env.fake.count("$batch"), 2, "one batch plus one retry of the throttled item");
    let stored = env.fake.folder_contacts(mb, "Salesforce_Sync");
    assert_eq!(stored.iter().filter(|c| c["jobTitle"] == "Buyer").count(), 2);
}

#[tokio::test]
async fn a_stale_etag_is_precondition_failed() {
    let env = common::env(10).await;
    let mb = "gil@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    let it = c.create_many(&[NewItem { sync_key: key(1), record: person(1).into() }]).await.unwrap().remove(0).unwrap();
    assert!(it.version.starts_with("W/\""), "version is the @odata.etag: {}", it.version);
    env.fake.edit_contact(mb, &it.id, |c| c["mobilePhone"] = json!("+1 555 0199"));
    let mut rec = it.record.clone();
    rec.set_field("given_name", Some("Gilbert".into()));
    let res = c
        .update_many(&[Update {
            id: it.id.clone(),
            version: it.version.clone(),
            fields: vec!["given_name".into()],
            record: rec,
        }])
        .await
        .expect("update_many");
    assert_eq!(res[0].as_ref().expect_err("stale").kind(), ErrorKind::PreconditionFailed);
    let stored = env.fake.contacts(mb).into_iter().find(|c| c["id"] == it.id.as_str()).unwrap();
    assert_eq!(stored["givenName"], "Given1", "nothing written");
    assert_eq!(stored["mobilePhone"], "+1 555 0199", "the user's edit stays");
}

#[tokio::test]
async fn the_sync_key_is_stamped_found_and_never_duplicated() {
    let env = common::env(10).await;
    let mb = "hal@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    let k = key(7);
    let first =
        c.create_many(&[NewItem { sync_key: k.clone(), record: person(7).into() }]).await.unwrap().remove(0).unwrap();
    let stored = env.fake.contacts(mb);
    assert_eq!(stored[0]["singleValueExtendedProperties"][0]["value"], k.as_str());
    // After a crash before the link write, the engine finds the stamped record by its key
    // (it searches before every create).
    let by_key = c.find(&[crmsync_core::MatchKey::SyncKey(k.clone())]).await.unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].item.id, first.id);
    // The same key twice in one call makes one record.
    let k2 = key(8);
    let twice = c
        .create_many(&[
            NewItem { sync_key: k2.clone(), record: person(8).into() },
            NewItem { sync_key: k2.clone(), record: person(8).into() },
        ])
        .await
        .unwrap();
    let ids: Vec<String> = twice.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(env.fake.count_by_sync_key(mb, k.as_str()), 1);
    assert_eq!(env.fake.count_by_sync_key(mb, k2.as_str()), 1);
    let found = c.find(&[crmsync_core::MatchKey::Email("p7@customer.example".into())]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].item.sync_key.as_ref(), Some(&k), "find reads the key back");
    // Full reads carry the key too.
    let full = c.changes(None).await.unwrap();
    let Change::Upsert(read) = &full.items[0] else { panic!("upsert") };
    assert_eq!(read.sync_key.as_ref(), Some(&k));
}

#[tokio::test]
async fn request_counts_meet_the_floor() {
    let env = common::env(10).await;
    let mb = "ida@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    let n = 45;
    // A full read (the engine's first step) shows every key in the folder: creates need no look-up.
    c.changes(None).await.expect("full");
    env.fake.reset_counts();
    let items: Vec<NewItem> =
        (0..n).map(|i| NewItem { sync_key: key(100 + i), record: person(100 + i).into() }).collect();
    for chunk in items.chunks(c.capabilities().max_batch) {
        for r in c.create_many(chunk).await.expect("create") {
            r.expect("created");
        }
    }
    assert_eq!(env.fake.count("$batch"), n.div_ceil(20) as u64, "writes: ceil(N/20) $batch calls");
    env.fake.reset_counts();
    let full = c.changes(None).await.expect("full");
    assert_eq!(full.items.len(), n);
    assert_eq!(env.fake.count("contacts.delta"), n.div_ceil(10) as u64, "reads: ceil(N/page) delta pages");
    assert_eq!(env.fake.count("token"), 0, "the token is cached");
    let ids: Vec<String> = upserts(&full).into_iter().collect();
    env.fake.reset_counts();
    for chunk in ids.chunks(20) {
        let got = c.get_many(chunk).await.expect("get_many");
        assert_eq!(got.len(), chunk.len());
    }
    assert_eq!(env.fake.count("$batch"), n.div_ceil(20) as u64, "get_many: one $batch per 20 ids");
    // A handle that has not read the folder looks the keys up first: one $batch more per batch.
    let other = env.admin(mb, Kind::Contact).await;
    env.fake.reset_counts();
    let more: Vec<NewItem> =
        (0..3).map(|i| NewItem { sync_key: key(200 + i), record: person(200 + i).into() }).collect();
    let again = [more, vec![items[0].clone()]].concat();
    let res = other.create_many(&again).await.expect("create");
    assert_eq!(env.fake.count("$batch"), 2, "one look-up, one create");
    assert_eq!(res[3].as_ref().expect("found").sync_key.as_ref(), Some(&items[0].sync_key));
    assert_eq!(env.fake.count_by_sync_key(mb, items[0].sync_key.as_str()), 1, "the known key was not created again");
}

#[tokio::test]
async fn bad_contacts_fail_alone() {
    let env = common::env(10).await;
    let c = env.admin("jo@contoso.com", Kind::Contact).await;
    let bad = Contact { company: Some("Nobody Inc".into()), ..Default::default() };
    let res = c
        .create_many(&[
            NewItem { sync_key: key(1), record: person(1).into() },
            NewItem { sync_key: key(2), record: Record::Contact(bad) },
        ])
        .await
        .unwrap();
    assert!(res[0].is_ok());
    let e = res[1].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidItem);
    assert!(e.message().contains("neither a name nor an e-mail"), "{e}");
}

#[tokio::test]
async fn a_service_refusing_expand_on_delta_is_read_without_it() {
    let env = common::env(10).await;
    let mb = "kai@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    let k = key(3);
    let made =
        c.create_many(&[NewItem { sync_key: k.clone(), record: person(3).into() }]).await.unwrap().remove(0).unwrap();
    env.fake.set_strict_delta(true);
    env.fake.reset_counts();
    let full = c.changes(None).await.expect("read without $expand");
    assert_eq!(upserts(&full), set(&[&made.id]));
    assert_eq!(env.fake.count("contacts.delta"), 2, "one refused try, one plain read");
    let inc = c.changes(full.cursor.as_deref()).await.expect("incremental");
    assert!(inc.items.is_empty());
    env.fake.reset_counts();
    c.changes(None).await.expect("again");
    assert_eq!(env.fake.count("contacts.delta"), 1, "the refusal is remembered");
    // The sync key is still found by $filter, which is what keeps the engine from duplicating.
    let again = c.find(&[crmsync_core::MatchKey::SyncKey(k.clone())]).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].item.id, made.id);
}

#[tokio::test]
async fn a_cursor_on_another_host_is_expired_and_never_sent() {
    let env = common::env(10).await;
    let c = env.admin("kim@contoso.com", Kind::Contact).await;
    let before = c.requests();
    let foreign = "https://elsewhere.example/v1.0/users/kim/contactFolders/f/contacts/delta?$deltatoken=t";
    let err = c.changes(Some(foreign)).await.expect_err("a foreign cursor");
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "{err}");
    assert_eq!(c.requests(), before, "nothing was sent (the token never leaves for another host)");
}
