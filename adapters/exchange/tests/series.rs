//! Recurring series from the fake Graph (expanded by the `rrule` crate in the series' zone)
//! through the engine into the in-memory CRM: each occurrence one CRM event at its right
//! instant, exceptions (moved, edited, cancelled) kept apart by series and original start.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use crmsync_core::memory::{MemCrm, MemStore};
use crmsync_core::*;
use crmsync_exchange::ExchangeProvider;
use crmsync_exchange::fake::FakeGraph;
use crmsync_exchange::mapping::graph_datetime;
use serde_json::{Value, json};

const MB: &str = "sam@contoso.com";

struct World {
    fake: FakeGraph,
    crm: Arc<MemCrm>,
    engine: Engine,
    provider: Arc<ExchangeProvider>,
    rep: Rep,
    admin: CrmUser,
}

async fn world(page_size: usize) -> World {
    let fake = FakeGraph::start().await;
    fake.add_mailbox(MB);
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Sam Rep", &[]);
    let admin_id = crm.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let provider = Arc::new(ExchangeProvider::new(crmsync_exchange::Config { page_size, ..fake.config() }).unwrap());
    let engine = Engine::new(crm.clone(), Arc::new(MemStore::default())).with_provider(provider.clone());
    let mut config = SyncConfig::default();
    config.contacts.direction = Direction::Off;
    let rep = Rep {
        id: rep_id.clone(),
        name: "Sam Rep".into(),
        crm_user_id: rep_id,
        provider: "exchange".into(),
        mailbox: MB.into(),
        connection: ConnectionMode::AdminManaged,
        config,
    };
    World { fake, crm, engine, provider, rep, admin: CrmUser { id: admin_id, name: "Ada Admin".into(), email: None } }
}

impl World {
    fn crm_events(&self) -> Vec<Event> {
        self.crm.events.lock().unwrap().records.values().filter_map(|r| r.record.as_event().cloned()).collect()
    }
    fn writes(&self) -> u64 {
        self.crm.events.lock().unwrap().writes
    }
}

fn series(subject: &str, first: NaiveDateTime, zone: &str, pattern: Value, count: u32) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": graph_datetime(first), "timeZone": zone},
        "end": {"dateTime": graph_datetime(first + Duration::hours(1)), "timeZone": zone},
        "recurrence": {"pattern": pattern,
            "range": {"type": "numbered", "startDate": first.date().to_string(), "numberOfOccurrences": count}}
    })
}

/// The next date (from tomorrow) on which New York's offset changes.
fn next_dst_change() -> NaiveDate {
    let ny = chrono_tz::America::New_York;
    let off = |d: NaiveDate| ny.from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap()).unwrap().offset().fix();
    (1..400)
        .map(|d| (Utc::now() + Duration::days(d)).date_naive())
        .find(|d| off(*d) != off(*d + Duration::days(1)))
        .unwrap()
}

/// A weekly series in Eastern time (Graph's "Eastern Standard Time") that crosses a DST change:
/// every CRM occurrence is at 09:00 New York time, so its UTC hour moves by one at the change.
#[tokio::test]
async fn a_weekly_new_york_series_keeps_its_local_time_across_dst() {
    let w = world(50).await;
    let change = next_dst_change();
    let first = (change - Duration::days(17)).and_hms_opt(9, 0, 0).unwrap();
    let day = first.format("%A").to_string().to_lowercase();
    let master = w.fake.insert_event(
        MB,
        series(
            "Pipeline",
            first,
            "Eastern Standard Time",
            json!({"type": "weekly", "interval": 1, "daysOfWeek": [day]}),
            6,
        ),
    );
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.events.created_in_crm, 6, "{:?}", r.events);
    let ny = chrono_tz::America::New_York;
    let mut utc_hours = std::collections::BTreeSet::new();
    for e in w.crm_events() {
        let EventTime::At(t) = e.start else { panic!("timed") };
        assert_eq!(t.with_timezone(&ny).format("%H:%M").to_string(), "09:00", "{t} is 09:00 in New York");
        assert_eq!(e.end.instant() - t, Duration::hours(1));
        utc_hours.insert(t.format("%H").to_string());
    }
    assert_eq!(utc_hours.len(), 2, "the UTC hour moves at the DST change: {utc_hours:?}");
    // The occurrences carry their series and original start (Graph `instances`).
    let c = w
        .provider
        .collection(&w.rep, Kind::Event, &Access { window: w.rep.config.window(Utc::now()), grant: None })
        .await
        .unwrap();
    let full = c.changes(None).await.unwrap();
    assert!(full.items.iter().all(|ch| matches!(ch, Change::Upsert(i) if i.record.as_event().unwrap().series_id.as_deref() == Some(master.as_str()))));
}

/// 200 occurrences, 30 of them exceptions (20 moved or edited, 10 cancelled), sync in one cycle
/// at the request floor (delta pages on the mailbox; one read and one create batch in
/// the CRM), and re-sync after Reset Sync with zero writes.
#[tokio::test]
async fn two_hundred_occurrences_and_thirty_exceptions_sync_at_the_request_floor() {
    let w = world(100).await;
    let first = (Utc::now() + Duration::days(1)).date_naive().and_hms_opt(10, 0, 0).unwrap();
    w.fake.insert_event(
        MB,
        series("Daily", first, "W. Europe Standard Time", json!({"type": "daily", "interval": 1}), 200),
    );
    // The exceptions, made as a Graph client makes them: PATCH and DELETE of occurrences.
    let c = w
        .provider
        .collection(&w.rep, Kind::Event, &Access { window: w.rep.config.window(Utc::now()), grant: None })
        .await
        .unwrap();
    let mut occ: Vec<Item> = c
        .changes(None)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|ch| if let Change::Upsert(i) = ch { Some(i) } else { None })
        .collect();
    occ.sort_by_key(|i| i.record.as_event().unwrap().start);
    assert_eq!(occ.len(), 200);
    let updates: Vec<Update> = occ
        .iter()
        .step_by(10)
        .take(20)
        .enumerate()
        .map(|(n, i)| {
            let mut rec = i.record.clone();
            if n % 2 == 0 {
                let moved = i.record.as_event().unwrap().start.instant() + Duration::hours(3);
                rec.set_field("start", Some(moved.to_rfc3339()));
                rec.set_field("end", Some((moved + Duration::hours(1)).to_rfc3339()));
            }
            rec.set_field("subject", Some(format!("Daily (special {n})")));
            Update {
                id: i.id.clone(),
                version: i.version.clone(),
                fields: vec!["subject".into(), "start".into(), "end".into()],
                record: rec,
            }
        })
        .collect();
    assert!(c.update_many(&updates).await.unwrap().iter().all(Result::is_ok));
    let cancelled: Vec<String> = occ.iter().skip(5).step_by(10).take(10).map(|i| i.id.clone()).collect();
    assert!(c.delete_many(&cancelled).await.unwrap().iter().all(Result::is_ok));

    w.fake.reset_counts();
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.events.created_in_crm, 190, "{:?}", r.events);
    let events = w.crm_events();
    assert_eq!(events.len(), 190, "one CRM event per occurrence, none twice");
    assert_eq!(events.iter().filter(|e| e.subject.as_deref().is_some_and(|s| s.contains("special"))).count(), 20);
    let moved = events
        .iter()
        .filter(|e| e.start.instant().with_timezone(&chrono_tz::Europe::Berlin).format("%H").to_string() == "13")
        .count();
    assert_eq!(moved, 10, "the moved occurrences are at their new time");
    // The floor: ⌈200 instances / 100 per page⌉ delta pages on the mailbox (the token of the
    // edits above is still good); one full read and ⌈190 / 200⌉ create batch in the CRM.
    assert_eq!(w.fake.count("token"), 0, "{:?}", w.fake.counts());
    assert_eq!(w.fake.count("calendarView.delta"), 2, "{:?}", w.fake.counts());
    assert_eq!(r.requests.provider, 2, "{:?}", w.fake.counts());
    assert_eq!(r.requests.crm, 2, "{r:?}");

    let before = w.writes();
    w.engine.reset(&w.admin, &w.rep, ResetScope::All).await.unwrap();
    let r = w.engine.cycle(&w.rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!((r.events.writes(), r.events.linked), (0, 190), "{:?}", r.events);
    assert_eq!(w.writes(), before);
    assert_eq!(w.crm_events().len(), 190);
}
