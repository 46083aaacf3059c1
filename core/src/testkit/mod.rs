//! Conformance rules of the [`Collection`] contract (feature `testkit`).
//!
//! [`RULES`] lists every rule with the capabilities it needs. A provider's test file implements
//! [`Harness`] and invokes [`conformance_tests!`](crate::conformance_tests), which makes one
//! `#[tokio::test]` per rule (so `cargo test -- --list` names them) and a test that checks no
//! rule was left out. Each test prints on the uncaptured stderr whether its rule ran or was
//! skipped and why (a capability the collection lacks, a kind the rule does not apply to), so a
//! test log says honestly what was checked. A rule is a plain `pub async fn` that panics with a
//! message naming what broke, so an adapter can also call one from its own tests.

pub mod crash;
pub mod store;

use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

use crate::error::{Error, ErrorKind};
use crate::model::full_name;
use crate::model::{Contact, Event, Kind, Record, Side, SyncKey, normalize_phone};
use crate::port::{Capabilities, Change, Changes, Collection, Item, MatchKey, NewItem, Update};
use crash::{CrashSwitch, CrashingCollection};

/// What the kit needs from the service under test besides the port itself.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A collection of `kind` on a fresh, empty scope (new folder, group, calendar or owner).
    /// Every call returns a scope of the same service, so a record made through one is outside
    /// the scope of another (the kit checks what `find` says about it).
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection>;
    /// Make every cursor handed out so far for this scope expire, as the service can; or say
    /// why this service's cursors cannot be made to expire (`expired_cursor` is then reported
    /// as skipped, with that reason).
    async fn expire_cursors(&self, kind: Kind) -> Result<(), String>;
    /// A record the service rejects (e.g. a contact without LastName for Salesforce).
    fn invalid_record(&self, kind: Kind) -> Record;
    /// Items one page of a read holds on this service (the kit creates more than that).
    fn page_size(&self, kind: Kind) -> usize;
}

/// What a rule needs to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// `Capabilities::incremental`.
    Incremental,
    /// The rule is about this kind only.
    Only(Kind),
}

impl Need {
    /// Why a collection of `kind` with `caps` cannot take part, if it cannot.
    fn missing(self, kind: Kind, caps: &Capabilities) -> Option<String> {
        match self {
            Need::Incremental if !caps.incremental => Some("capability incremental = false".into()),
            Need::Only(k) if k != kind => Some(format!("applies to {} only", k.as_str())),
            _ => None,
        }
    }
}

/// Whether a rule ran to the end or found, at run time, that the service cannot take part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ran,
    Skipped(String),
}
use Outcome::Ran;

type RuleFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One rule of the kit.
#[derive(Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub needs: &'static [Need],
    pub run: for<'a> fn(&'a dyn Harness, Kind) -> RuleFuture<'a>,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule").field("name", &self.name).field("needs", &self.needs).finish()
    }
}

macro_rules! rule {
    ($name:ident $(, $need:expr)*) => {{
        fn run<'a>(h: &'a dyn Harness, kind: Kind) -> RuleFuture<'a> {
            Box::pin($name(h, kind))
        }
        Rule { name: stringify!($name), needs: &[$($need),*], run }
    }};
}

/// Every rule, in the order a log lists them.
pub const RULES: &[Rule] = &[
    rule!(round_trip),
    rule!(reads_carry_the_sync_key),
    rule!(create_is_idempotent_by_sync_key),
    rule!(lost_reply_create_does_not_duplicate),
    rule!(results_keep_input_order),
    rule!(ids_stay_unique_after_delete_and_create),
    rule!(one_bad_item),
    rule!(oversize_batch_refused_cleanly),
    rule!(conditional_update),
    rule!(update_writes_only_named_fields),
    rule!(delete_missing_succeeds),
    rule!(get_many_omits_missing),
    rule!(find_by_sync_key),
    rule!(find_by_email, Need::Only(Kind::Contact)),
    rule!(find_by_name_and_phone, Need::Only(Kind::Contact)),
    rule!(find_by_ical_uid, Need::Only(Kind::Event)),
    rule!(find_by_subject_and_start, Need::Only(Kind::Event)),
    rule!(find_outside_scope),
    rule!(requests_are_counted),
    rule!(more_than_a_page),
    rule!(incremental, Need::Incremental),
    rule!(expired_cursor, Need::Incremental),
    rule!(garbage_cursor, Need::Incremental),
];

/// Run the rule named `name` on `kind`, or say on stderr why it does not apply. Panics for an
/// unknown name (the test macro and [`RULES`] disagree).
pub async fn run_rule(h: &dyn Harness, kind: Kind, name: &str) {
    let rule = RULES.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no conformance rule {name}"));
    let caps = h.collection(kind).await.capabilities();
    let outcome = match rule.needs.iter().find_map(|n| n.missing(kind, &caps)) {
        Some(why) => Outcome::Skipped(why),
        None => (rule.run)(h, kind).await,
    };
    let line = match outcome {
        Ran => format!("testkit: {} {name}: ran", kind.as_str()),
        Outcome::Skipped(why) => format!("testkit: {} {name}: SKIPPED ({why})", kind.as_str()),
    };
    say(&line);
}

/// Print a line on the process's stderr, which the test harness does not capture (it captures
/// `eprintln!` of passing tests), so the log shows what every rule did.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One `#[tokio::test]` per rule of the kit, for collections of `$kind` made by `$harness` (an
/// expression evaluated in each test, `.await` allowed), plus `every_rule_has_a_test`.
/// Invoke it inside a module per kind:
///
/// ```text
/// mod contacts {
///     use super::*;
///     crmsync_core::conformance_tests!(Kind::Contact, harness().await);
/// }
/// ```
///
/// A rule the collection breaks fails its test; there is no list of tolerated failures.
#[macro_export]
macro_rules! conformance_tests {
    ($kind:expr, $harness:expr) => {
        $crate::conformance_tests!(@rules $kind, $harness;
            round_trip, reads_carry_the_sync_key, create_is_idempotent_by_sync_key, lost_reply_create_does_not_duplicate,
            results_keep_input_order, ids_stay_unique_after_delete_and_create, one_bad_item,
            oversize_batch_refused_cleanly, conditional_update, update_writes_only_named_fields,
            delete_missing_succeeds, get_many_omits_missing, find_by_sync_key, find_by_email,
            find_by_name_and_phone, find_by_ical_uid, find_by_subject_and_start, find_outside_scope,
            requests_are_counted, more_than_a_page, incremental, expired_cursor, garbage_cursor);
    };
    (@rules $kind:expr, $harness:expr; $($rule:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $rule() {
                let name = stringify!($rule);
                let h = $harness;
                $crate::testkit::run_rule(&h, $kind, name).await;
            }
        )*
        #[test]
        fn every_rule_has_a_test() {
            let tested = [$(stringify!($rule)),*];
            let all: Vec<&str> = $crate::testkit::RULES.iter().map(|r| r.name).collect();
            assert_eq!(tested.to_vec(), all, "conformance_tests! and RULES list the same rules");
        }
    };
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

fn new_items(kind: Kind, range: std::ops::Range<usize>) -> Vec<NewItem> {
    range.map(|i| NewItem { sync_key: key(kind, i), record: sample(kind, i) }).collect()
}

async fn create(c: &dyn Collection, items: &[NewItem]) -> Vec<Item> {
    let res = c.create_many(items).await.expect("create_many");
    assert_eq!(res.len(), items.len(), "one result per input");
    res.into_iter().map(|r| r.expect("created")).collect()
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

async fn full_ids(c: &dyn Collection) -> Vec<String> {
    ids(&c.changes(None).await.expect("full read"))
}

/// Two canonical fields this collection stores, other than the ones `kind` needs to stay valid.
fn two_fields(kind: Kind, caps: &Capabilities) -> (String, String) {
    let usable: Vec<&str> = match kind {
        Kind::Contact => ["given_name", "title", "company", "department", "notes"].to_vec(),
        Kind::Event => ["subject", "location", "description"].to_vec(),
    };
    let mut stored = usable.into_iter().filter(|f| caps.fields.contains(f));
    let first = stored.next().expect("the collection stores at least two plain text fields");
    let second = stored.next().expect("the collection stores at least two plain text fields");
    (first.to_owned(), second.to_owned())
}

/// Created records read back with their content, version and sync key.
pub async fn round_trip(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let k = key(kind, 0);
    let rec = sample(kind, 0);
    let created = c.create_many(&[NewItem { sync_key: k.clone(), record: rec.clone() }]).await.expect("create_many");
    let item = created.into_iter().next().expect("one result").expect("created");
    assert_eq!(item.sync_key.as_ref(), Some(&k), "created item must carry its sync key");
    assert!(!item.version.is_empty(), "created item must have a version");
    let full = c.changes(None).await.expect("full read");
    assert!(full.full, "a read without cursor is full");
    assert!(removed(&full).is_empty(), "a full read lists what exists, no removals: {:?}", full.items);
    let read = full.items.iter().find_map(|ch| match ch {
        Change::Upsert(i) if i.id == item.id => Some(i.clone()),
        _ => None,
    });
    let read = read.expect("created item is in the full read");
    let fields = c.capabilities().fields;
    assert_eq!(read.record.canon().restrict(fields), rec.canon().restrict(fields), "content round-trips");
    let got = c.get_many(std::slice::from_ref(&item.id)).await.expect("get_many");
    assert_eq!(got.len(), 1, "get_many returns the record");
    Ran
}

/// Full and incremental reads and `get_many` carry the sync key stamped on a created record.
pub async fn reads_carry_the_sync_key(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let cursor = c.changes(None).await.expect("full read").cursor;
    let item = create(c.as_ref(), &new_items(kind, 48..49)).await.remove(0);
    let k = item.sync_key.clone();
    let carried =
        |ch: &Changes| ch.items.iter().any(|c| matches!(c, Change::Upsert(i) if i.id == item.id && i.sync_key == k));
    assert!(carried(&c.changes(None).await.expect("full read")), "a full read carries the sync key");
    if let Some(cursor) = cursor.filter(|_| c.capabilities().incremental) {
        assert!(carried(&c.changes(Some(&cursor)).await.expect("incremental")), "an incremental read carries it");
    }
    let got = c.get_many(std::slice::from_ref(&item.id)).await.expect("get_many");
    assert_eq!(got.first().and_then(|i| i.sync_key.clone()), k, "get_many carries it");
    Ran
}

/// Creating the same sync key twice makes one record and returns the same id both times.
pub async fn create_is_idempotent_by_sync_key(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let batch = new_items(kind, 50..51);
    let first = create(c.as_ref(), &batch).await;
    let second = create(c.as_ref(), &batch).await;
    assert_eq!(first[0].id, second[0].id, "the second create returns the record the first made");
    assert_eq!(full_ids(c.as_ref()).await, vec![first[0].id.clone()], "exactly one record exists");
    Ran
}

/// A create batch applied whose reply was lost, sent again with the same keys, makes no
/// duplicate.
pub async fn lost_reply_create_does_not_duplicate(h: &dyn Harness, kind: Kind) -> Outcome {
    // The batch lands, then the call fails as if its reply had been lost.
    let switch = CrashSwitch::default();
    let batch = new_items(kind, 55..58);
    switch.arm(batch.len() as u64);
    let c = CrashingCollection::new(h.collection(kind).await, switch.clone());
    c.create_many(&batch).await.expect_err("the injected fault fails the call");
    assert!(!switch.armed(), "the fault fired");
    let retry = create(&c, &batch).await;
    let mut read = full_ids(&c).await;
    read.sort();
    let mut made: Vec<String> = retry.iter().map(|i| i.id.clone()).collect();
    made.sort();
    assert_eq!(read, made, "the retry returns the records the lost batch made, and nothing more exists");
    Ran
}

/// Per-item results of creates, updates and deletes come back in input order.
pub async fn results_keep_input_order(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let batch = new_items(kind, 60..63);
    let made = create(c.as_ref(), &batch).await;
    for (item, new) in made.iter().zip(&batch) {
        assert_eq!(item.sync_key.as_ref(), Some(&new.sync_key), "create results are in input order");
    }
    let (field, _) = two_fields(kind, &c.capabilities());
    let ups: Vec<Update> = made
        .iter()
        .rev()
        .enumerate()
        .map(|(n, it)| {
            let mut record = it.record.clone();
            record.set_field(&field, Some(format!("Order {n}")));
            Update { id: it.id.clone(), version: it.version.clone(), fields: vec![field.clone()], record }
        })
        .collect();
    let res = c.update_many(&ups).await.expect("update_many");
    assert_eq!(res.len(), ups.len(), "one result per input");
    for (n, (r, u)) in res.into_iter().zip(&ups).enumerate() {
        let item = r.expect("updated");
        assert_eq!(item.id, u.id, "update results are in input order");
        assert_eq!(item.record.field(&field), Some(format!("Order {n}")));
    }
    let gone = vec!["missing-id-0".to_owned(), made[1].id.clone()];
    let res = c.delete_many(&gone).await.expect("delete_many");
    assert_eq!(res.len(), 2, "one delete result per input");
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    let mut left = full_ids(c.as_ref()).await;
    left.sort();
    let mut want = vec![made[0].id.clone(), made[2].id.clone()];
    want.sort();
    assert_eq!(left, want, "exactly the named record was deleted");
    Ran
}

/// A record created after a delete never gets an id that is (or was) in use.
pub async fn ids_stay_unique_after_delete_and_create(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let first = create(c.as_ref(), &new_items(kind, 65..67)).await;
    c.delete_many(std::slice::from_ref(&first[0].id)).await.expect("delete")[0].clone().expect("deleted");
    let again = create(c.as_ref(), &new_items(kind, 67..69)).await;
    let all: Vec<&String> = first.iter().chain(&again).map(|i| &i.id).collect();
    let unique: BTreeSet<&String> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "ids are never reused: {all:?}");
    let read = full_ids(c.as_ref()).await;
    assert_eq!(read.len(), 3, "the deleted record is gone and the three others exist: {read:?}");
    let kept = c.get_many(std::slice::from_ref(&first[1].id)).await.expect("get_many");
    assert_eq!(kept.len(), 1, "the record created before the delete is still there");
    assert_eq!(kept[0].record.canon(), first[1].record.canon(), "and was not overwritten");
    Ran
}

/// A batch with one bad item fails only that item.
pub async fn one_bad_item(h: &dyn Harness, kind: Kind) -> Outcome {
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
    assert_eq!(full_ids(c.as_ref()).await.len(), 2, "exactly the good items exist");
    Ran
}

/// A batch larger than `max_batch` is either refused as a whole with nothing written, or
/// handled completely (one result per input); never half-applied behind an error.
pub async fn oversize_batch_refused_cleanly(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let n = c.capabilities().max_batch + 1;
    let batch = new_items(kind, 300..300 + n);
    match c.create_many(&batch).await {
        Err(_) => assert!(full_ids(c.as_ref()).await.is_empty(), "a refused batch writes nothing"),
        Ok(res) => {
            assert_eq!(res.len(), n, "an accepted batch has one result per input");
            assert!(res.iter().all(Result::is_ok), "{res:?}");
            assert_eq!(full_ids(c.as_ref()).await.len(), n, "an accepted batch is applied completely");
        }
    }
    Ran
}

/// An update based on a stale version is refused with `PreconditionFailed`, for that item only.
pub async fn conditional_update(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let item = create(c.as_ref(), &new_items(kind, 1..2)).await.remove(0);
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
    if c.capabilities().max_batch < 2 {
        return Ran;
    }
    // In a batch, the stale update fails alone.
    let other = create(c.as_ref(), &new_items(kind, 2..3)).await.remove(0);
    let (f, _) = two_fields(kind, &c.capabilities());
    let edit = |it: &Item, version: &str, v: &str| {
        let mut record = it.record.clone();
        record.set_field(&f, Some(v.into()));
        Update { id: it.id.clone(), version: version.to_owned(), fields: vec![f.clone()], record }
    };
    let res = c
        .update_many(&[edit(&item, &item.version, "Stale"), edit(&other, &other.version, "Fresh")])
        .await
        .expect("update_many");
    assert_eq!(res[0].as_ref().map_err(Error::kind).err(), Some(ErrorKind::PreconditionFailed), "{res:?}");
    assert_eq!(res[1].as_ref().expect("the fresh update lands").record.field(&f).as_deref(), Some("Fresh"));
    Ran
}

/// An update writes the fields it names and leaves every other field as it was.
pub async fn update_writes_only_named_fields(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let (written, kept) = two_fields(kind, &c.capabilities());
    let mut rec = sample(kind, 70);
    rec.set_field(&kept, Some("Kept as it was".into()));
    let item = create(c.as_ref(), &[NewItem { sync_key: key(kind, 70), record: rec }]).await.remove(0);
    let mut record = item.record.clone();
    record.set_field(&written, Some("Written".into()));
    record.set_field(&kept, Some("Must not be written".into()));
    let up = Update { id: item.id.clone(), version: item.version.clone(), fields: vec![written.clone()], record };
    c.update_many(&[up]).await.expect("update_many")[0].clone().expect("updated");
    let now = c.get_many(std::slice::from_ref(&item.id)).await.expect("get_many").remove(0);
    assert_eq!(now.record.field(&written).as_deref(), Some("Written"), "the named field is written");
    assert_eq!(now.record.field(&kept).as_deref(), Some("Kept as it was"), "a field not named is kept");
    Ran
}

/// Deleting a record that does not exist (or no longer does) succeeds.
pub async fn delete_missing_succeeds(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let item = create(c.as_ref(), &new_items(kind, 75..76)).await.remove(0);
    let once = c.delete_many(std::slice::from_ref(&item.id)).await.expect("delete_many");
    assert!(once[0].is_ok(), "{once:?}");
    let twice = c.delete_many(std::slice::from_ref(&item.id)).await.expect("delete_many of a deleted record");
    assert!(twice[0].is_ok(), "deleting a deleted record succeeds: {twice:?}");
    assert!(full_ids(c.as_ref()).await.is_empty());
    Ran
}

/// `get_many` returns the records that exist and omits the ids that do not.
pub async fn get_many_omits_missing(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let made = create(c.as_ref(), &new_items(kind, 80..82)).await;
    c.delete_many(std::slice::from_ref(&made[1].id)).await.expect("delete")[0].clone().expect("deleted");
    let got = c.get_many(&[made[0].id.clone(), made[1].id.clone()]).await.expect("get_many");
    let got: Vec<&String> = got.iter().map(|i| &i.id).collect();
    assert_eq!(got, vec![&made[0].id], "the deleted id is omitted");
    Ran
}

/// Make two records, find by the keys `keys_of` derives from the first: exactly it comes back.
async fn find_first_of_two(h: &dyn Harness, kind: Kind, i: usize, keys_of: fn(&Item) -> Vec<MatchKey>) -> Outcome {
    let c = h.collection(kind).await;
    let made = create(c.as_ref(), &new_items(kind, i..i + 2)).await;
    let keys = keys_of(&made[0]);
    assert!(!keys.is_empty(), "the sample record has the keys the rule looks for");
    let found = c.find(&keys).await.expect("find");
    let found: Vec<(&String, bool)> = found.iter().map(|f| (&f.item.id, f.in_scope)).collect();
    assert_eq!(found, vec![(&made[0].id, true)], "find by {keys:?} returns exactly the record, in scope");
    Ran
}

/// `find` by sync key returns the stamped record.
pub async fn find_by_sync_key(h: &dyn Harness, kind: Kind) -> Outcome {
    find_first_of_two(h, kind, 30, |it| it.sync_key.clone().map(MatchKey::SyncKey).into_iter().collect()).await
}

/// `find` by normalized e-mail address.
pub async fn find_by_email(h: &dyn Harness, kind: Kind) -> Outcome {
    find_first_of_two(h, kind, 84, |it| it.record.emails().into_iter().map(MatchKey::Email).collect()).await
}

/// `find` by normalized full name and phone digits.
pub async fn find_by_name_and_phone(h: &dyn Harness, kind: Kind) -> Outcome {
    find_first_of_two(h, kind, 86, |it| {
        let phone = it.record.as_contact().and_then(|c| c.phone.as_deref()).and_then(normalize_phone);
        full_name(&it.record).zip(phone).map(|(name, phone)| MatchKey::NamePhone { name, phone }).into_iter().collect()
    })
    .await
}

/// `find` by iCalUID: the one the kit gives a created event, or the one the service assigned
/// instead.
pub async fn find_by_ical_uid(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let mut batch = new_items(kind, 88..90);
    for (n, new) in batch.iter_mut().enumerate() {
        if let Record::Event(e) = &mut new.record {
            e.ical_uid = Some(format!("testkit-{n}-{}@example.com", Utc::now().timestamp_micros()));
        }
    }
    let made = create(c.as_ref(), &batch).await;
    let uid_of = |it: &Item| it.record.as_event().and_then(|e| e.ical_uid.clone());
    let Some(uid) = uid_of(&made[0]) else {
        return Outcome::Skipped("the service reports no iCalUID".into());
    };
    assert_ne!(uid_of(&made[1]).as_ref(), Some(&uid), "two events have two iCalUIDs");
    let found = c.find(&[MatchKey::ICalUid(uid)]).await.expect("find");
    let found: Vec<&String> = found.iter().map(|f| &f.item.id).collect();
    assert_eq!(found, vec![&made[0].id], "find by iCalUID returns exactly the event");
    Ran
}

/// `find` by normalized subject and start instant.
pub async fn find_by_subject_and_start(h: &dyn Harness, kind: Kind) -> Outcome {
    find_first_of_two(h, kind, 90, |it| {
        let c = it.record.canon();
        c.get("subject")
            .zip(c.get("start"))
            .map(|(s, t)| MatchKey::SubjectStart { subject: s.to_lowercase(), start: t.to_owned() })
            .into_iter()
            .collect()
    })
    .await
}

/// A record of another scope: found with `in_scope = false` when the collection can look beyond
/// its scope, not found at all otherwise.
pub async fn find_outside_scope(h: &dyn Harness, kind: Kind) -> Outcome {
    let here = h.collection(kind).await;
    let there = h.collection(kind).await;
    let made = create(there.as_ref(), &new_items(kind, 92..93)).await.remove(0);
    let k = made.sync_key.clone().expect("sync key");
    let found = here.find(&[MatchKey::SyncKey(k)]).await.expect("find");
    if here.capabilities().find_beyond_scope {
        let found: Vec<(&String, bool)> = found.iter().map(|f| (&f.item.id, f.in_scope)).collect();
        assert_eq!(found, vec![(&made.id, false)], "a record of another scope is found with in_scope = false");
    } else {
        assert!(found.is_empty(), "a collection that cannot look beyond its scope finds nothing there: {found:?}");
    }
    Ran
}

/// Every call is counted in `requests()`.
pub async fn requests_are_counted(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let mut last = c.requests();
    let mut grew = |c: &dyn Collection, what: &str| {
        let now = c.requests();
        assert!(now > last, "{what} is counted in requests() ({last} → {now})");
        last = now;
    };
    let made = create(c.as_ref(), &new_items(kind, 94..95)).await;
    grew(c.as_ref(), "create_many");
    c.changes(None).await.expect("full read");
    grew(c.as_ref(), "a full read");
    c.get_many(std::slice::from_ref(&made[0].id)).await.expect("get_many");
    grew(c.as_ref(), "get_many");
    c.delete_many(std::slice::from_ref(&made[0].id)).await.expect("delete_many");
    grew(c.as_ref(), "delete_many");
    Ran
}

/// Reads and writes of more items than one page / one batch return everything.
pub async fn more_than_a_page(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let n = h.page_size(kind).max(c.capabilities().max_batch) + 3;
    let all = new_items(kind, 100..100 + n);
    for chunk in all.chunks(c.capabilities().max_batch) {
        create(c.as_ref(), chunk).await;
    }
    let mut read = full_ids(c.as_ref()).await;
    read.sort();
    read.dedup();
    assert_eq!(read.len(), n, "a full read returns every item across pages");
    Ran
}

/// An incremental read returns exactly what changed since the cursor: the new record, the edit
/// and the delete, not the untouched record.
pub async fn incremental(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    let items = create(c.as_ref(), &new_items(kind, 10..13)).await;
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
    let added = create(c.as_ref(), &new_items(kind, 13..14)).await.remove(0);
    let ch = c.changes(Some(quiet.cursor.as_deref().unwrap_or(&cursor))).await.expect("incremental");
    let mut seen = ids(&ch);
    seen.sort();
    let mut want = vec![items[0].id.clone(), added.id.clone()];
    want.sort();
    assert_eq!(seen, want, "incremental read sees exactly the edit and the create");
    assert_eq!(removed(&ch), vec![items[1].id.clone()], "incremental read sees exactly the deletion");
    Ran
}

/// An expired cursor is reported as `CursorExpired`, and a full read still works.
pub async fn expired_cursor(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    create(c.as_ref(), &new_items(kind, 20..21)).await;
    let cursor = c.changes(None).await.expect("full").cursor.expect("cursor");
    if let Err(why) = h.expire_cursors(kind).await {
        return Outcome::Skipped(why);
    }
    let err = c.changes(Some(&cursor)).await.expect_err("expired cursor must fail");
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "expired cursor → CursorExpired, got {err}");
    assert_eq!(full_ids(c.as_ref()).await.len(), 1);
    Ran
}

/// A cursor the service never handed out is reported as `CursorExpired` (so the engine reads
/// everything again) rather than as a failure of the kind.
pub async fn garbage_cursor(h: &dyn Harness, kind: Kind) -> Outcome {
    let c = h.collection(kind).await;
    create(c.as_ref(), &new_items(kind, 22..23)).await;
    let err = c.changes(Some("not-a-cursor-\u{1f980}")).await.expect_err("a garbage cursor must fail");
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "garbage cursor → CursorExpired, got {err}");
    Ran
}
