//! Reading and writing N contacts and N events costs exactly the paging / batching floor.

mod common;

use chrono::{Duration, Utc};
use crmsync_core::{Change, Collection, Contact, Event, Kind, NewItem, Record, Side, SyncKey, Update};

fn ids(ch: &crmsync_core::Changes) -> Vec<crmsync_core::Item> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

fn retitle(items: &[crmsync_core::Item], field: &str, value: &str) -> Vec<Update> {
    items
        .iter()
        .map(|i| {
            let mut r = i.record.clone();
            r.set_field(field, Some(value.into()));
            Update { id: i.id.clone(), version: i.version.clone(), fields: vec![field.into()], record: r }
        })
        .collect()
}

#[tokio::test]
async fn contacts_cost_the_paging_and_batching_floor() {
    const N: usize = 430;
    const PAGE: usize = 100;
    let (fake, p, rep) = common::setup(PAGE).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    // Token, contactGroups.list, contactGroups.create.
    assert_eq!(c.requests(), 3);
    let mut expect = 3;
    assert!(c.changes(None).await.unwrap().items.is_empty());
    expect += 1;
    assert_eq!(c.requests(), expect, "an empty read is one page");
    let new: Vec<NewItem> = (0..N)
        .map(|i| NewItem {
            sync_key: SyncKey::derive("r", Kind::Contact, Side::Crm, &i.to_string()),
            record: Record::Contact(Contact {
                given_name: Some(format!("G{i}")),
                emails: vec![format!("g{i}@x.io")],
                ..Default::default()
            }),
        })
        .collect();
    for chunk in new.chunks(c.capabilities().max_batch) {
        c.create_many(chunk).await.unwrap();
    }
    expect += N.div_ceil(200) as u64;
    assert_eq!(c.requests(), expect, "creates: one request per 200");
    assert_eq!(fake.count("people.batchCreateContacts"), N.div_ceil(200) as u64);
    let full = c.changes(None).await.unwrap();
    let items = ids(&full);
    assert_eq!(items.len(), N);
    expect += N.div_ceil(PAGE) as u64;
    assert_eq!(c.requests(), expect, "full read: one request per page");
    let quiet = c.changes(full.cursor.as_deref()).await.unwrap();
    assert!(quiet.items.is_empty());
    expect += 1;
    assert_eq!(c.requests(), expect, "a quiet incremental read is one request");
    let updates = retitle(&items, "title", "Buyer");
    for chunk in updates.chunks(c.capabilities().max_batch) {
        assert!(c.update_many(chunk).await.unwrap().iter().all(Result::is_ok));
    }
    expect += 2 * N.div_ceil(200) as u64;
    assert_eq!(c.requests(), expect, "updates: one batchGet and one batchUpdate per 200");
    let all: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    c.delete_many(&all).await.unwrap();
    expect += N.div_ceil(500) as u64;
    assert_eq!(c.requests(), expect, "deletes: one request per 500");
    assert_eq!(fake.requests(), expect, "the fake saw exactly what the handle counted");
}

#[tokio::test]
async fn events_cost_the_paging_floor_and_one_request_per_write() {
    const N: usize = 130;
    const PAGE: usize = 50;
    let (fake, p, rep) = common::setup(PAGE).await;
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    assert_eq!(c.requests(), 0, "nothing is fetched until first use");
    let base = Utc::now() + Duration::days(1);
    let new: Vec<NewItem> = (0..N)
        .map(|i| NewItem {
            sync_key: SyncKey::derive("r", Kind::Event, Side::Crm, &i.to_string()),
            record: Record::Event(Event::new(
                &format!("M{i}"),
                base + Duration::hours(i as i64),
                base + Duration::hours(i as i64 + 1),
            )),
        })
        .collect();
    for chunk in new.chunks(c.capabilities().max_batch) {
        c.create_many(chunk).await.unwrap();
    }
    let mut expect = 1 + N as u64;
    assert_eq!(c.requests(), expect, "token + one insert each");
    let full = c.changes(None).await.unwrap();
    let items = ids(&full);
    assert_eq!(items.len(), N);
    expect += N.div_ceil(PAGE) as u64;
    assert_eq!(c.requests(), expect, "full read: one request per page");
    let quiet = c.changes(full.cursor.as_deref()).await.unwrap();
    assert!(quiet.items.is_empty());
    expect += 1;
    let updates = retitle(&items, "location", "HQ");
    for chunk in updates.chunks(c.capabilities().max_batch) {
        assert!(c.update_many(chunk).await.unwrap().iter().all(Result::is_ok));
    }
    expect += N as u64;
    assert_eq!(c.requests(), expect, "one patch each");
    let changed = c.changes(quiet.cursor.as_deref()).await.unwrap();
    assert_eq!(ids(&changed).len(), N);
    expect += N.div_ceil(PAGE) as u64;
    assert_eq!(c.requests(), expect, "an incremental read of N changes pages too");
    let all: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    for chunk in all.chunks(c.capabilities().max_batch) {
        c.delete_many(chunk).await.unwrap();
    }
    expect += N as u64;
    assert_eq!(c.requests(), expect);
    assert_eq!(fake.requests(), expect, "the fake saw exactly what the handle counted");
}
