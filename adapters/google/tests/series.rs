//! A recurring Google event through the engine into the in-memory CRM: one CRM event per
//! instance, each at its local time in the series' zone across a DST change; a moved instance
//! updates its own CRM event, a cancelled one deletes its own, nothing else moves.

mod common;

use std::sync::Arc;

use chrono::{Duration, NaiveDate, Offset, TimeZone, Utc};
use crmsync_core::memory::{MemCrm, MemStore};
use crmsync_core::*;
use serde_json::json;

fn next_dst_change(tz: chrono_tz::Tz) -> NaiveDate {
    let off = |d: NaiveDate| tz.from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap()).unwrap().offset().fix();
    (1..400)
        .map(|d| (Utc::now() + Duration::days(d)).date_naive())
        .find(|d| off(*d) != off(*d + Duration::days(1)))
        .unwrap()
}

#[tokio::test]
async fn instances_and_their_exceptions_reach_their_own_crm_events() {
    let (fake, google, rep) = common::setup(50).await;
    let crm = Arc::new(MemCrm::default());
    let rep_id = crm.add_user("Riley Rep", &[]);
    let mut rep = Rep { id: rep_id.clone(), crm_user_id: rep_id, provider: "google".into(), ..rep };
    rep.config.contacts.direction = Direction::Off;
    let c = google.events(&rep, &common::access(&rep)).unwrap();
    let engine = Engine::new(crm.clone(), Arc::new(MemStore::default())).with_provider(Arc::new(google));
    let ny = chrono_tz::America::New_York;
    let first = next_dst_change(ny) - Duration::days(14);
    let local = first.and_hms_opt(8, 30, 0).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string();
    let end = first.and_hms_opt(9, 0, 0).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string();
    let exdate = (first + Duration::days(2)).format("%Y%m%d").to_string();
    fake.insert_event_json(
        &rep.mailbox,
        json!({"summary": "Standup", "start": {"dateTime": local, "timeZone": "America/New_York"},
            "end": {"dateTime": end, "timeZone": "America/New_York"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=28", format!("EXDATE;VALUE=DATE:{exdate}")]}),
    );
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(r.events.created_in_crm, 27, "28 days less the excluded one: {:?}", r.events);
    let starts = || -> Vec<(chrono::DateTime<Utc>, String)> {
        let mut v: Vec<_> = crm
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
        v.sort();
        v
    };
    assert!(starts().iter().all(|(t, _)| t.with_timezone(&ny).format("%H:%M").to_string() == "08:30"));
    assert_eq!(
        starts().iter().map(|(t, _)| t.format("%H").to_string()).collect::<std::collections::BTreeSet<_>>().len(),
        2
    );

    // Move the third instance an hour later and cancel the fifth, as a Calendar client does.
    let all: Vec<Item> = c
        .changes(None)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|ch| if let Change::Upsert(i) = ch { Some(i) } else { None })
        .collect();
    let mut all = all;
    all.sort_by_key(|i| i.record.as_event().unwrap().start);
    let (third, fifth) = (all[2].clone(), all[4].clone());
    let mut rec = third.record.clone();
    let t = third.record.as_event().unwrap().start.instant() + Duration::hours(1);
    rec.set_field("start", Some(t.to_rfc3339()));
    rec.set_field("end", Some((t + Duration::minutes(30)).to_rfc3339()));
    rec.set_field("subject", Some("Standup (late)".into()));
    let up = Update {
        id: third.id.clone(),
        version: third.version,
        fields: vec!["start".into(), "end".into(), "subject".into()],
        record: rec,
    };
    c.update_many(&[up]).await.unwrap().remove(0).unwrap();
    assert!(c.delete_many(std::slice::from_ref(&fifth.id)).await.unwrap()[0].is_ok());
    let before = starts();
    let r = engine.cycle(&rep).await.unwrap();
    assert_eq!(r.error, None, "{r:?}");
    assert_eq!(
        (r.events.updated_in_crm, r.events.deleted_in_crm, r.events.created_in_crm),
        (1, 1, 0),
        "{:?}",
        r.events
    );
    let after = starts();
    assert_eq!(after.len(), 26);
    assert!(after.contains(&(t, "Standup (late)".into())));
    let fifth_start = fifth.record.as_event().unwrap().start.instant();
    assert!(!after.iter().any(|(s, _)| *s == fifth_start));
    let untouched: Vec<_> = before.iter().filter(|(s, _)| *s != fifth_start && *s != t - Duration::hours(1)).collect();
    assert!(untouched.iter().all(|x| after.contains(x)), "no other CRM event moved");
    let quiet = engine.cycle(&rep).await.unwrap();
    assert_eq!(quiet.events.writes(), 0);
}
