//! Conformance checks of the [`Collection`] contract (feature `testkit`).
//!
//! Every adapter runs [`check_collection`] against its fake; the in-memory reference passes it
//! too. Each check is a plain `pub async fn` that panics with a message naming the broken rule,
//! so an adapter can also call them one by one from its own `#[tokio::test]`s.

pub mod crash;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use crate::error::ErrorKind;
use crate::model::{Contact, Event, Kind, Record, Side, SyncKey};
use crate::port::{Change, Changes, Collection, MatchKey, NewItem, Update};

/// What the kit needs from the service under test besides the port itself.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A collection of `kind` on a fresh, empty scope (new folder, group, calendar or owner).
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection>;
    /// Make every cursor handed out so far for this scope expire, as the service can.
    async fn expire_cursors(&self, kind: Kind);
    /// A record the service rejects (e.g. a contact without LastName for Salesforce).
    fn invalid_record(&self, kind: Kind) -> Record;
    /// Items one page of a read holds on this service (the kit creates more than that).
    fn page_size(&self, kind: Kind) -> usize;
}

/// A distinct valid record of `kind` (index `i`), inside any default event window.
pub fn sample(kind: Kind, i: usize) -> Record {
    match kind {
        Kind::Contact => Record::Contact(Contact {
            given_name: Some(format!("Given{i}")),
            family_name: Some(format!("Family{i}")),
            emails: vec![format!("person{i}@example.com")],
            phone: Some(format!("+1 555 01{:04}", i % 10_000)),
            title: Some("Buyer".into()),
            ..Default::default()
        }),
        Kind::Event => {
            let start = sample_time() + Duration::hours(i as i64);
            Record::Event(Event::new(&format!("Meeting {i}"), start, start + Duration::minutes(30)))
        }
    }
}

fn sample_time() -> DateTime<Utc> {
    let now = Utc::now();
    now - Duration::nanoseconds(now.timestamp_subsec_nanos() as i64) + Duration::days(2)
}

fn key(kind: Kind, i: usize) -> SyncKey {
    SyncKey::derive("testkit-rep", kind, Side::Crm, &format!("seed-{i}-{}", Utc::now().timestamp_micros()))
}

fn ids(ch: &Changes) -> Vec<String> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i.id.clone()),
            Change::Removed(_) => None,
        })
        .collect()
}

fn removed(ch: &Changes) -> Vec<String> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Removed(id) => Some(id.clone()),
            Change::Upsert(_) => None,
        })
        .collect()
}

/// Run every check on a fresh collection each.
///
/// Checks a collection cannot take part in (capability `incremental = false`) are skipped with a
/// line on stderr saying so, so a test log tells honestly what ran.
pub async fn check_collection(h: &dyn Harness, kind: Kind) {
    round_trip(h, kind).await;
    conditional_update(h, kind).await;
    if h.collection(kind).await.capabilities().incremental {
        incremental(h, kind).await;
        expired_cursor(h, kind).await;
    } else {
        eprintln!("testkit: skipped incremental and expired_cursor for {kind:?}: capability incremental = false");
    }
    find_by_sync_key(h, kind).await;
    one_bad_item(h, kind).await;
    more_than_a_page(h, kind).await;
}

/// Created records read back with their content, version and sync key.
pub async fn round_trip(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    let k = key(kind, 0);
    let rec = sample(kind, 0);
    let created = c.create_many(&[NewItem { sync_key: k.clone(), record: rec.clone() }]).await.expect("create_many");
    let item = created.into_iter().next().expect("one result").expect("created");
    assert_eq!(item.sync_key.as_ref(), Some(&k), "created item must carry its sync key");
    assert!(!item.version.is_empty(), "created item must have a version");
    let full = c.changes(None).await.expect("full read");
    assert!(full.full, "a read without cursor is full");
    let read = full.items.iter().find_map(|ch| match ch {
        Change::Upsert(i) if i.id == item.id => Some(i.clone()),
        _ => None,
    });
    let read = read.expect("created item is in the full read");
    let fields = c.capabilities().fields;
    assert_eq!(read.record.canon().restrict(fields), rec.canon().restrict(fields), "content round-trips");
    let got = c.get_many(std::slice::from_ref(&item.id)).await.expect("get_many");
    assert_eq!(got.len(), 1, "get_many returns the record");
}

/// An update based on a stale version is refused with `PreconditionFailed`.
pub async fn conditional_update(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    let item = c.create_many(&[NewItem { sync_key: key(kind, 1), record: sample(kind, 1) }]).await.expect("create")[0]
        .clone()
        .expect("created");
    let field = kind.fields()[0].to_string();
    let mut rec = item.record.clone();
    rec.set_field(&field, Some("First edit".into()));
    let up =
        Update { id: item.id.clone(), version: item.version.clone(), fields: vec![field.clone()], record: rec.clone() };
    let first = c.update_many(&[up]).await.expect("update_many")[0].clone().expect("first update succeeds");
    assert_ne!(first.version, item.version, "a write changes the version");
    rec.set_field(&field, Some("Second edit".into()));
    let stale = Update { id: item.id.clone(), version: item.version.clone(), fields: vec![field], record: rec };
    let err = c.update_many(&[stale]).await.expect("update_many")[0].clone().expect_err("stale update must fail");
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "stale version → PreconditionFailed, got {err}");
}

/// An incremental read returns exactly what changed since the cursor: the edit and the delete,
/// not the untouched record.
pub async fn incremental(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    let new: Vec<NewItem> = (10..13).map(|i| NewItem { sync_key: key(kind, i), record: sample(kind, i) }).collect();
    let items: Vec<_> = c.create_many(&new).await.expect("create").into_iter().map(|r| r.expect("created")).collect();
    let cursor = c.changes(None).await.expect("full").cursor.expect("full read returns a cursor");
    let quiet = c.changes(Some(&cursor)).await.expect("incremental");
    assert!(!quiet.full, "a read with a cursor is incremental");
    assert!(ids(&quiet).is_empty() && removed(&quiet).is_empty(), "nothing changed, nothing read: {:?}", quiet.items);
    let field = kind.fields()[0].to_string();
    let mut rec = items[0].record.clone();
    rec.set_field(&field, Some("Edited".into()));
    c.update_many(&[Update {
        id: items[0].id.clone(),
        version: items[0].version.clone(),
        fields: vec![field],
        record: rec,
    }])
    .await
    .expect("update")[0]
        .clone()
        .expect("updated");
    c.delete_many(std::slice::from_ref(&items[1].id)).await.expect("delete")[0].clone().expect("deleted");
    let ch = c.changes(Some(quiet.cursor.as_deref().unwrap_or(&cursor))).await.expect("incremental");
    assert_eq!(ids(&ch), vec![items[0].id.clone()], "incremental read sees exactly the edit");
    assert_eq!(removed(&ch), vec![items[1].id.clone()], "incremental read sees exactly the deletion");
}

/// An expired cursor is reported as `CursorExpired`, and a full read still works.
pub async fn expired_cursor(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    c.create_many(&[NewItem { sync_key: key(kind, 20), record: sample(kind, 20) }]).await.expect("create")[0]
        .clone()
        .expect("created");
    let cursor = c.changes(None).await.expect("full").cursor.expect("cursor");
    h.expire_cursors(kind).await;
    let err = c.changes(Some(&cursor)).await.expect_err("expired cursor must fail");
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "expired cursor → CursorExpired, got {err}");
    assert_eq!(ids(&c.changes(None).await.expect("full read after expiry")).len(), 1);
}

/// `find` by sync key returns the stamped record.
pub async fn find_by_sync_key(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    let k = key(kind, 30);
    let made = c
        .create_many(&[
            NewItem { sync_key: k.clone(), record: sample(kind, 30) },
            NewItem { sync_key: key(kind, 31), record: sample(kind, 31) },
        ])
        .await
        .expect("create");
    let id = made[0].clone().expect("created").id;
    let found = c.find(&[MatchKey::SyncKey(k)]).await.expect("find");
    assert_eq!(found.len(), 1, "find by sync key returns exactly the stamped record");
    assert_eq!(found[0].item.id, id);
    assert!(found[0].in_scope);
}

/// A batch with one bad item fails only that item.
pub async fn one_bad_item(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    let batch = vec![
        NewItem { sync_key: key(kind, 40), record: sample(kind, 40) },
        NewItem { sync_key: key(kind, 41), record: h.invalid_record(kind) },
        NewItem { sync_key: key(kind, 42), record: sample(kind, 42) },
    ];
    let res = c.create_many(&batch).await.expect("create_many itself succeeds");
    assert_eq!(res.len(), 3, "one result per input");
    assert!(res[0].is_ok() && res[2].is_ok(), "good items land: {res:?}");
    let err = res[1].as_ref().expect_err("bad item fails");
    assert_eq!(err.kind(), ErrorKind::InvalidItem, "bad item → InvalidItem, got {err}");
    assert_eq!(ids(&c.changes(None).await.expect("full")).len(), 2, "exactly the good items exist");
}

/// Reads and writes of more items than one page / one batch return everything.
pub async fn more_than_a_page(h: &dyn Harness, kind: Kind) {
    let c = h.collection(kind).await;
    let n = h.page_size(kind).max(c.capabilities().max_batch) + 3;
    let all: Vec<NewItem> =
        (0..n).map(|i| NewItem { sync_key: key(kind, 100 + i), record: sample(kind, 100 + i) }).collect();
    for chunk in all.chunks(c.capabilities().max_batch) {
        for r in c.create_many(chunk).await.expect("create") {
            r.expect("created");
        }
    }
    let mut read = ids(&c.changes(None).await.expect("full"));
    read.sort();
    read.dedup();
    assert_eq!(read.len(), n, "a full read returns every item across pages");
}
