//! The calendar window against the fake: window, series occurrences, cancelled, private,
//! no-sync category, all-day, left-the-window vs deleted, bad times.

mod common;

use chrono::{Duration, Timelike, Utc};
use crmsync_core::{Change, Changes, ErrorKind, Event, EventTime, Item, Kind};
use serde_json::json;

fn upserted(ch: &Changes) -> Vec<&Item> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i),
            Change::Removed(_) => None,
        })
        .collect()
}

fn ev(it: &Item) -> &Event {
    it.record.as_event().expect("event")
}

fn hour(days: i64) -> chrono::DateTime<Utc> {
    let t = Utc::now() + Duration::days(days);
    t.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).expect("valid")
}

#[tokio::test]
async fn the_window_series_cancelled_private_and_no_sync_events() {
    let env = common::env(4).await;
    let mb = "kim@contoso.com";
    env.fake.add_mailbox(mb);
    let t = hour(2);
    let plain = env.fake.insert_event(mb, Event::new("Pipeline review", t, t + Duration::hours(1)));
    let private =
        env.fake.insert_event(mb, Event { private: true, ..Event::new("Dentist", t, t + Duration::hours(1)) });
    let no_sync = env.fake.insert_event(
        mb,
        Event { categories: vec!["Don't Sync".into()], ..Event::new("Lunch", t, t + Duration::hours(1)) },
    );
    let cancelled =
        env.fake.insert_event(mb, Event { cancelled: true, ..Event::new("Old kickoff", t, t + Duration::hours(1)) });
    let far = hour(500);
    let outside = env.fake.insert_event(mb, Event::new("Next year", far, far + Duration::hours(1)));
    let past = hour(-60);
    let before = env.fake.insert_event(mb, Event::new("Long ago", past, past + Duration::hours(1)));
    let series = env.fake.insert_weekly_series(mb, "Weekly sync", hour(-7), Duration::minutes(30), 4);
    let mut all_day = Event::new("Offsite", t, t);
    all_day.start = EventTime::Date((t + Duration::days(5)).date_naive());
    all_day.end = EventTime::Date((t + Duration::days(6)).date_naive());
    let offsite = env.fake.insert_event(mb, all_day.clone());

    let c = env.admin(mb, Kind::Event).await;
    let full = c.changes(None).await.expect("full read");
    let items = upserted(&full);
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    for id in [&plain, &private, &no_sync, &cancelled, &offsite] {
        assert!(ids.contains(&id.as_str()), "{id} in the window is read");
    }
    assert!(
        !ids.contains(&outside.as_str()) && !ids.contains(&before.as_str()),
        "events outside the window are not read"
    );
    assert!(!ids.contains(&series.as_str()), "never the series master");
    let occ: Vec<&&Item> = items.iter().filter(|i| ev(i).series_id.as_deref() == Some(series.as_str())).collect();
    assert_eq!(occ.len(), 4, "every occurrence in the window");
    let view = env.fake.calendar_view(mb, hour(-30), hour(365));
    assert_eq!(view.iter().filter(|e| e["seriesMasterId"] == series.as_str()).count(), 4, "the inspect helper agrees");
    let uids: std::collections::BTreeSet<_> = occ.iter().map(|i| ev(i).ical_uid.clone().expect("iCalUId")).collect();
    assert_eq!(uids.len(), 4, "Graph's iCalUId differs per occurrence");
    let by_id = |id: &str| ev(items.iter().find(|i| i.id == id).expect("read"));
    assert!(by_id(&private).private);
    assert_eq!(by_id(&no_sync).categories, vec!["Don't Sync".to_string()]);
    assert!(by_id(&cancelled).cancelled);
    assert!(!by_id(&plain).private && !by_id(&plain).cancelled);
    assert_eq!(by_id(&plain).start, EventTime::At(t));
    assert_eq!(by_id(&offsite).start, all_day.start, "all-day events read as dates");
    assert!(by_id(&offsite).all_day());
    assert!(full.cursor.as_deref().is_some_and(|c| c.contains("deltatoken")));
}

#[tokio::test]
async fn delta_tells_left_the_window_from_deleted() {
    let env = common::env(10).await;
    let mb = "lee@contoso.com";
    env.fake.add_mailbox(mb);
    let t = hour(3);
    let moved = env.fake.insert_event(mb, Event::new("Moves away", t, t + Duration::hours(1)));
    let deleted = env.fake.insert_event(mb, Event::new("Deleted", t, t + Duration::hours(1)));
    let edited = env.fake.insert_event(mb, Event::new("Edited", t, t + Duration::hours(1)));
    let quiet = env.fake.insert_event(mb, Event::new("Quiet", t, t + Duration::hours(1)));
    let series = env.fake.insert_weekly_series(mb, "Standup", hour(1), Duration::minutes(15), 3);
    let c = env.admin(mb, Kind::Event).await;
    let full = c.changes(None).await.expect("full");
    assert_eq!(upserted(&full).len(), 7);
    let first_occurrence =
        upserted(&full).into_iter().find(|i| ev(i).series_id.as_deref() == Some(&series)).expect("occ").clone();

    env.fake.reschedule_event(mb, &moved, None, hour(600), Duration::hours(1));
    env.fake.delete_event(mb, &deleted);
    env.fake.reschedule_event(mb, &edited, Some("Edited twice"), t + Duration::hours(2), Duration::minutes(90));
    env.fake.delete_event(mb, &first_occurrence.id);
    let added = env.fake.insert_event(mb, Event::new("New", t, t + Duration::hours(1)));
    env.fake.reset_counts();
    let inc = c.changes(full.cursor.as_deref()).await.expect("incremental");
    let by = |id: &str| {
        inc.items
            .iter()
            .find(|c| matches!(c, Change::Upsert(i) if i.id == id) || matches!(c, Change::Removed(r) if r == id))
    };
    match by(&moved) {
        Some(Change::Upsert(i)) => assert_eq!(ev(i).start, EventTime::At(hour(600)), "delivered with its new time"),
        other => panic!("an event that left the window is an upsert, got {other:?}"),
    }
    assert!(matches!(by(&deleted), Some(Change::Removed(_))), "a deleted event is removed");
    assert!(matches!(by(&first_occurrence.id), Some(Change::Removed(_))), "a deleted occurrence is removed");
    match by(&edited) {
        Some(Change::Upsert(i)) => {
            assert_eq!(ev(i).subject.as_deref(), Some("Edited twice"));
            assert_eq!(ev(i).end, EventTime::At(t + Duration::hours(2) + Duration::minutes(90)));
        }
        other => panic!("edit read: {other:?}"),
    }
    assert!(matches!(by(&added), Some(Change::Upsert(_))));
    assert!(by(&quiet).is_none(), "untouched events are not read");
    assert_eq!(env.fake.count("batch:events"), 3, "one batched GET per @removed id decides left-window vs deleted");
    assert_eq!(env.fake.count("$batch"), 1);
}

#[tokio::test]
async fn a_moved_window_expires_the_cursor() {
    let env = common::env(10).await;
    let mb = "max@contoso.com";
    let c = env.admin(mb, Kind::Event).await;
    let full = c.changes(None).await.expect("full");
    let mut rep = common::rep(mb, crmsync_core::ConnectionMode::AdminManaged);
    rep.config.events.days_ahead = 10;
    let other = crmsync_core::Access { window: rep.config.window(Utc::now()), grant: None };
    let c2 = crmsync_core::Provider::collection(&env.provider, &rep, Kind::Event, &other).await.expect("collection");
    let err = c2.changes(full.cursor.as_deref()).await.expect_err("another window");
    assert_eq!(err.kind(), ErrorKind::CursorExpired);
}

#[tokio::test]
async fn unparsable_times_and_unknown_zones_fail_alone() {
    let env = common::env(10).await;
    let mb = "ned@contoso.com";
    env.fake.add_mailbox(mb);
    let t = hour(4);
    let good = env.fake.insert_event(mb, Event::new("Fine", t, t + Duration::hours(1)));
    let when = crmsync_exchange::mapping::graph_datetime(t.naive_utc());
    let zone = env.fake.insert_event(
        mb,
        json!({"subject":"Martian","start":{"dateTime": when,"timeZone":"Mars/Olympus"},"end":{"dateTime": when,"timeZone":"Mars/Olympus"}}),
    );
    let garbled = env.fake.insert_event(
        mb,
        json!({"subject":"Garbled","start":{"dateTime":"next tuesday","timeZone":"UTC"},"end":{"dateTime":"later","timeZone":"UTC"}}),
    );
    let c = env.admin(mb, Kind::Event).await;
    let full = c.changes(None).await.expect("the read survives bad items");
    assert_eq!(upserted(&full).iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![good]);
    let mut failed: Vec<(String, String)> =
        full.failures.iter().map(|f| (f.id.clone(), f.error.message().to_owned())).collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().any(|(id, m)| *id == zone && m.contains("time zone")));
    assert!(failed.iter().any(|(id, m)| *id == garbled && m.contains("unparsable")));
    assert!(full.failures.iter().all(|f| f.error.kind() == ErrorKind::InvalidItem));
}

#[tokio::test]
async fn events_written_both_ways_carry_the_sync_key() {
    let env = common::env(10).await;
    let mb = "oli@contoso.com";
    let c = env.admin(mb, Kind::Event).await;
    let t = hour(6);
    let key = crmsync_core::SyncKey::derive("rep-o", Kind::Event, crmsync_core::Side::Crm, "00U1");
    let rec = Event {
        location: Some("HQ".into()),
        description: Some("Agenda".into()),
        ..Event::new("Demo", t, t + Duration::hours(1))
    };
    let made = c
        .create_many(&[crmsync_core::NewItem { sync_key: key.clone(), record: rec.into() }])
        .await
        .unwrap()
        .remove(0)
        .expect("created");
    assert_eq!(env.fake.count_by_sync_key(mb, key.as_str()), 1);
    let found = c.find(&[crmsync_core::MatchKey::SyncKey(key.clone())]).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].item.id, made.id);
    let uid = ev(&made).ical_uid.clone().expect("iCalUId assigned");
    let by_uid = c.find(&[crmsync_core::MatchKey::ICalUid(uid)]).await.unwrap();
    assert_eq!(by_uid.len(), 1);
    let gone = c.delete_many(&[made.id.clone(), "AAkALgAAAAAAmissing".into()]).await.unwrap();
    assert!(gone.iter().all(Result::is_ok), "deleting a missing event succeeds");
    assert!(env.fake.events(mb).is_empty());
}

#[tokio::test]
async fn an_edited_occurrence_becomes_an_exception_of_its_series() {
    let env = common::env(10).await;
    let mb = "pia@contoso.com";
    env.fake.add_mailbox(mb);
    let series = env.fake.insert_weekly_series(mb, "Review", hour(1), Duration::hours(1), 3);
    let c = env.admin(mb, Kind::Event).await;
    let full = c.changes(None).await.expect("full");
    let occ: Vec<&Item> = upserted(&full);
    assert_eq!(occ.len(), 3);
    let second = occ.iter().find(|i| ev(i).start == EventTime::At(hour(8))).expect("second occurrence");
    let mut rec = second.record.clone();
    rec.set_field("subject", Some("Review (special)".into()));
    let up = crmsync_core::Update {
        id: second.id.clone(),
        version: second.version.clone(),
        fields: vec!["subject".into()],
        record: rec,
    };
    c.update_many(&[up]).await.unwrap().remove(0).expect("occurrence updated");
    let inc = c.changes(full.cursor.as_deref()).await.expect("incremental");
    let changed = upserted(&inc);
    assert_eq!(changed.len(), 1, "only that occurrence changed: {:?}", inc.items);
    assert_eq!(changed[0].id, second.id);
    assert_eq!(ev(changed[0]).subject.as_deref(), Some("Review (special)"));
    assert_eq!(ev(changed[0]).series_id.as_deref(), Some(series.as_str()));
    // Editing the master changes every occurrence.
    env.fake.edit_event(mb, &series, |e| e["location"] = json!({"displayName": "Room 7"}));
    let all = c.changes(inc.cursor.as_deref()).await.expect("incremental");
    assert_eq!(upserted(&all).len(), 3);
}

/// The first date from tomorrow on whose noon in `tz` has `offset_hours` from UTC.
fn date_with_offset(tz: chrono_tz::Tz, offset_hours: i32) -> chrono::NaiveDate {
    use chrono::{Offset, TimeZone};
    (1..400)
        .map(|d| (Utc::now() + Duration::days(d)).date_naive())
        .find(|d| {
            let noon = d.and_hms_opt(12, 0, 0).unwrap();
            tz.from_local_datetime(&noon).single().unwrap().offset().fix().local_minus_utc() == offset_hours * 3600
        })
        .expect("both offsets occur within a year")
}

/// Graph keeps an event in the Windows zone it was written in; the adapter reads it (asking
/// for UTC) at the right instant in standard and in daylight time, keeps the zone, and writes
/// it back in that zone. The fake refuses a zone Graph does not know, as Graph does.
#[tokio::test]
async fn a_pacific_standard_time_event_lands_at_the_right_instant() {
    use crmsync_exchange::mapping::graph_datetime;
    let env = common::env(10).await;
    let mb = "pia@contoso.com";
    let c = env.admin(mb, Kind::Event).await;
    let la = chrono_tz::America::Los_Angeles;
    let (winter, summer) = (date_with_offset(la, -8), date_with_offset(la, -7));
    let nine = |d: chrono::NaiveDate| d.and_hms_opt(9, 0, 0).unwrap();
    let mut ids = vec![];
    for d in [winter, summer] {
        let body = json!({"subject": format!("Standup {d}"),
            "start": {"dateTime": graph_datetime(nine(d)), "timeZone": "Pacific Standard Time"},
            "end": {"dateTime": graph_datetime(nine(d) + Duration::minutes(30)), "timeZone": "Pacific Standard Time"}});
        ids.push(env.fake.insert_event(mb, body));
    }
    let full = c.changes(None).await.unwrap();
    let by_id = |id: &str| upserted(&full).into_iter().find(|i| i.id == id).cloned().expect("read");
    let (w, s) = (by_id(&ids[0]), by_id(&ids[1]));
    assert_eq!(ev(&w).start, EventTime::At((nine(winter) + Duration::hours(8)).and_utc()), "PST is UTC-8");
    assert_eq!(ev(&s).start, EventTime::At((nine(summer) + Duration::hours(7)).and_utc()), "PDT is UTC-7");
    assert_eq!(ev(&s).time_zone.as_deref(), Some("Pacific Standard Time"));

    // Moved by an hour from the CRM: written in Pacific time, read back at the new instant.
    let mut moved = s.record.clone();
    let new_start = (nine(summer) + Duration::hours(8)).and_utc();
    moved.set_field("start", Some(new_start.to_rfc3339()));
    moved.set_field("end", Some((new_start + Duration::minutes(30)).to_rfc3339()));
    let up = crmsync_core::Update {
        id: s.id.clone(),
        version: s.version.clone(),
        fields: vec!["start".into(), "end".into()],
        record: moved,
    };
    let done = c.update_many(&[up]).await.unwrap().remove(0).unwrap();
    assert_eq!(ev(&done).start, EventTime::At(new_start));
    let stored = env.fake.events(mb).into_iter().find(|e| e["id"] == json!(s.id)).unwrap();
    assert_eq!(
        stored["start"],
        json!({"dateTime": graph_datetime(nine(summer) + Duration::hours(1)), "timeZone": "Pacific Standard Time"})
    );
}
