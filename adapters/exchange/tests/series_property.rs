//! Property: random series (daily or weekly, in zones with DST, crossing a DST change) with
//! random exceptions (moved, edited, cancelled occurrences), synced both ways with edits on
//! both sides, converge: a quiet cycle writes nothing, every occurrence is one CRM event (no
//! duplicates), and each is at the right UTC instant.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use crmsync_core::memory::{MemCrm, MemStore};
use crmsync_core::*;
use crmsync_exchange::ExchangeProvider;
use crmsync_exchange::fake::FakeGraph;
use crmsync_exchange::mapping::graph_datetime;
use proptest::prelude::*;
use serde_json::json;

const MB: &str = "pat@contoso.com";
/// (Windows name, IANA zone): both hemispheres, DST forwards and backwards.
const ZONES: &[(&str, chrono_tz::Tz)] = &[
    ("Eastern Standard Time", chrono_tz::America::New_York),
    ("Pacific Standard Time", chrono_tz::America::Los_Angeles),
    ("W. Europe Standard Time", chrono_tz::Europe::Berlin),
    ("GMT Standard Time", chrono_tz::Europe::London),
    ("AUS Eastern Standard Time", chrono_tz::Australia::Sydney),
];

#[derive(Debug, Clone)]
struct Case {
    zone: usize,
    weekly: bool,
    count: u32,
    /// Days before the zone's next DST change the series starts.
    lead: i64,
    hour: u32,
    /// Per occurrence: 0 untouched, 1 moved (by `shift` hours), 2 edited, 3 cancelled — in the
    /// mailbox before the first cycle.
    first: Vec<u8>,
    /// Per occurrence, after the first cycle: 0 nothing, 1 the CRM edits it, 2 the mailbox
    /// moves it, 3 the mailbox cancels it.
    second: Vec<u8>,
    shift: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (0..ZONES.len(), any::<bool>(), 4u32..16, 0i64..40, 7u32..21, 1i64..6).prop_flat_map(
        |(zone, weekly, count, lead, hour, shift)| {
            let n = count as usize;
            (prop::collection::vec(0u8..4, n), prop::collection::vec(0u8..4, n)).prop_map(move |(first, second)| Case {
                zone,
                weekly,
                count,
                lead,
                hour,
                first,
                second,
                shift,
            })
        },
    )
}

fn next_change(tz: chrono_tz::Tz) -> NaiveDate {
    let off = |d: NaiveDate| tz.from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap()).unwrap().offset().fix();
    (1..400)
        .map(|d| (Utc::now() + Duration::days(d)).date_naive())
        .find(|d| off(*d) != off(*d + Duration::days(1)))
        .unwrap()
}

fn items(ch: Changes) -> Vec<Item> {
    ch.items.into_iter().filter_map(|c| if let Change::Upsert(i) = c { Some(i) } else { None }).collect()
}

async fn run(c: Case) -> Result<(), TestCaseError> {
    let (wname, tz) = ZONES[c.zone];
    let fake = FakeGraph::start().await;
    fake.add_mailbox(MB);
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Pat Rep", &[]);
    let provider =
        Arc::new(ExchangeProvider::new(crmsync_exchange::Config { page_size: 50, ..fake.config() }).unwrap());
    let engine = Engine::new(crm.clone(), Arc::new(MemStore::default())).with_provider(provider.clone());
    let mut config = SyncConfig::default();
    config.contacts.direction = Direction::Off;
    config.events.direction = Direction::Both;
    let rep = Rep {
        id: rep_id.clone(),
        name: "Pat".into(),
        crm_user_id: rep_id.clone(),
        provider: "exchange".into(),
        mailbox: MB.into(),
        connection: ConnectionMode::AdminManaged,
        config,
    };
    let first: NaiveDateTime = (next_change(tz) - Duration::days(c.lead)).and_hms_opt(c.hour, 0, 0).unwrap();
    let step = if c.weekly { 7 } else { 1 };
    let pattern = if c.weekly {
        json!({"type": "weekly", "interval": 1, "daysOfWeek": [first.format("%A").to_string().to_lowercase()]})
    } else {
        json!({"type": "daily", "interval": 1})
    };
    let master = fake.insert_event(
        MB,
        json!({"subject": "Series", "start": {"dateTime": graph_datetime(first), "timeZone": wname},
            "end": {"dateTime": graph_datetime(first + Duration::minutes(45)), "timeZone": wname},
            "recurrence": {"pattern": pattern, "range": {"type": "numbered", "startDate": first.date().to_string(), "numberOfOccurrences": c.count}}}),
    );
    let coll = provider
        .collection(&rep, Kind::Event, &Access { window: rep.config.window(Utc::now()), grant: None })
        .await
        .unwrap();
    let id_of = |n: usize| format!("{master}_{}", (first.date() + Duration::days(step * n as i64)).format("%Y%m%d"));
    // What each occurrence should be: its start instant (the local time in the zone, or moved)
    // and subject; None when cancelled.
    let mut expect: BTreeMap<String, Option<(DateTime<Utc>, String)>> = (0..c.count as usize)
        .map(|n| {
            let local = first + Duration::days(step * n as i64);
            (
                id_of(n),
                Some((tz.from_local_datetime(&local).earliest().unwrap().with_timezone(&Utc), "Series".to_owned())),
            )
        })
        .collect();
    let current: BTreeMap<String, Item> =
        items(coll.changes(None).await.unwrap()).into_iter().map(|i| (i.id.clone(), i)).collect();
    prop_assert_eq!(current.len(), c.count as usize);
    let (mut ups, mut dels) = (vec![], vec![]);
    for (n, op) in c.first.iter().enumerate() {
        let id = id_of(n);
        let it = &current[&id];
        let mut rec = it.record.clone();
        let e = expect.get_mut(&id).unwrap();
        match op {
            1 => {
                let t = e.as_ref().unwrap().0 + Duration::hours(c.shift);
                rec.set_field("start", Some(t.to_rfc3339()));
                rec.set_field("end", Some((t + Duration::minutes(45)).to_rfc3339()));
                e.as_mut().unwrap().0 = t;
                ups.push(Update {
                    id: id.clone(),
                    version: it.version.clone(),
                    fields: vec!["start".into(), "end".into()],
                    record: rec,
                });
            }
            2 => {
                rec.set_field("subject", Some(format!("Edited {n}")));
                e.as_mut().unwrap().1 = format!("Edited {n}");
                ups.push(Update {
                    id: id.clone(),
                    version: it.version.clone(),
                    fields: vec!["subject".into()],
                    record: rec,
                });
            }
            3 => {
                dels.push(id.clone());
                *e = None;
            }
            _ => {}
        }
    }
    prop_assert!(coll.update_many(&ups).await.unwrap().iter().all(Result::is_ok));
    prop_assert!(coll.delete_many(&dels).await.unwrap().iter().all(Result::is_ok));
    let r = engine.cycle(&rep).await.unwrap();
    prop_assert_eq!(r.error.clone(), None, "{:?}", r);

    // Second round: the CRM edits subjects, the mailbox moves and cancels others.
    let crm_ids: BTreeMap<String, String> = {
        let ev = crm.events.lock().unwrap();
        let links: Vec<(String, String)> = ev
            .records
            .values()
            .map(|r| (r.id.clone(), r.record.as_event().unwrap().start.instant().to_rfc3339()))
            .collect();
        links.into_iter().map(|(id, start)| (start, id)).collect()
    };
    let current: BTreeMap<String, Item> =
        items(coll.changes(None).await.unwrap()).into_iter().map(|i| (i.id.clone(), i)).collect();
    let (mut ups, mut dels) = (vec![], vec![]);
    for (n, op) in c.second.iter().enumerate() {
        let id = id_of(n);
        let Some(Some((t, _))) = expect.get(&id).cloned() else { continue };
        match op {
            1 => {
                let cid = &crm_ids[&t.to_rfc3339()];
                crm.events.lock().unwrap().edit(cid, |r| r.set_field("subject", Some(format!("CRM {n}"))));
                expect.get_mut(&id).unwrap().as_mut().unwrap().1 = format!("CRM {n}");
            }
            2 => {
                let it = &current[&id];
                let mut rec = it.record.clone();
                let t2 = t - Duration::minutes(30);
                rec.set_field("start", Some(t2.to_rfc3339()));
                rec.set_field("end", Some((t2 + Duration::minutes(45)).to_rfc3339()));
                expect.get_mut(&id).unwrap().as_mut().unwrap().0 = t2;
                ups.push(Update {
                    id: id.clone(),
                    version: it.version.clone(),
                    fields: vec!["start".into(), "end".into()],
                    record: rec,
                });
            }
            3 => {
                dels.push(id.clone());
                expect.insert(id, None);
            }
            _ => {}
        }
    }
    prop_assert!(coll.update_many(&ups).await.unwrap().iter().all(Result::is_ok));
    prop_assert!(coll.delete_many(&dels).await.unwrap().iter().all(Result::is_ok));
    for _ in 0..2 {
        let r = engine.cycle(&rep).await.unwrap();
        prop_assert_eq!(r.error.clone(), None, "{:?}", r);
    }
    let quiet = engine.cycle(&rep).await.unwrap();
    prop_assert_eq!(quiet.events.writes(), 0, "converged: {:?}", quiet.events);

    // Every live occurrence is one CRM event, at the right instant, with the right subject, on
    // both sides.
    let want: BTreeMap<DateTime<Utc>, String> = expect.values().flatten().cloned().collect();
    prop_assert_eq!(want.len(), expect.values().flatten().count(), "expected starts are distinct");
    let crm_side: BTreeMap<DateTime<Utc>, String> = crm
        .events
        .lock()
        .unwrap()
        .records
        .values()
        .map(|r| {
            let e = r.record.as_event().unwrap();
            (e.start.instant(), e.subject.clone().unwrap_or_default())
        })
        .collect();
    prop_assert_eq!(crm.events.lock().unwrap().records.len(), want.len(), "no duplicates in the CRM");
    prop_assert_eq!(&crm_side, &want);
    let mailbox: BTreeMap<DateTime<Utc>, String> = items(coll.changes(None).await.unwrap())
        .into_iter()
        .map(|i| {
            let e = i.record.as_event().unwrap().clone();
            (e.start.instant(), e.subject.unwrap_or_default())
        })
        .collect();
    prop_assert_eq!(&mailbox, &want);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_series_with_exceptions_converge_at_the_right_instants(c in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(c))?;
    }
}
