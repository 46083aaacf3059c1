//! Events (primary calendar) against the fake.

mod common;

use chrono::{DateTime, Duration, Utc};
use crmsync_core::{
    Change, Changes, Collection, ErrorKind, Event, EventTime, Item, Kind, MatchKey, NewItem, Record, Side, SyncKey,
    Update,
};
use crmsync_google::fake::EventEdit;
use crmsync_google::{Config, GoogleProvider};
use serde_json::json;

fn at(hours_from_now: i64) -> DateTime<Utc> {
    let now = Utc::now();
    now - Duration::nanoseconds(now.timestamp_subsec_nanos() as i64) + Duration::hours(hours_from_now)
}

fn ev(subject: &str, start_h: i64) -> Event {
    let start = at(start_h);
    Event::new(subject, start, start + Duration::minutes(45))
}

fn key(i: usize) -> SyncKey {
    SyncKey::derive("rep-x", Kind::Event, Side::Crm, &format!("e{i}"))
}

fn upserts(ch: &Changes) -> Vec<Item> {
    ch.items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

fn by_subject<'a>(items: &'a [Item], s: &str) -> Vec<&'a Item> {
    items.iter().filter(|i| i.record.as_event().unwrap().subject.as_deref() == Some(s)).collect()
}

#[tokio::test]
async fn window_private_cancelled_marker_series_all_day() {
    let (fake, p, rep) = common::setup(100).await;
    let mb = &rep.mailbox;
    fake.insert_event(mb, &ev("Inside", 24));
    fake.insert_event(mb, &ev("Before window", -24 * 40));
    fake.insert_event(mb, &ev("After window", 24 * 400));
    fake.insert_event(mb, &Event { private: true, ..ev("Private", 26) });
    fake.insert_event(mb, &Event { cancelled: true, ..ev("Cancelled", 27) });
    fake.insert_event(mb, &Event { categories: vec!["x".into()], ..ev("Marked", 28) });
    fake.insert_event_json(
        mb,
        json!({"summary": "Coloured", "colorId": "11",
        "start": {"dateTime": at(29).to_rfc3339()}, "end": {"dateTime": at(30).to_rfc3339()}}),
    );
    let day = (Utc::now() + Duration::days(5)).date_naive();
    fake.insert_event(
        mb,
        &Event {
            start: EventTime::Date(day),
            end: EventTime::Date(day + Duration::days(1)),
            attendees: vec!["buyer@client.example".into()],
            organizer: Some("boss@example.com".into()),
            ..ev("All day", 0)
        },
    );
    let standup = ev("Standup", 48);
    let series = fake.insert_series(mb, &standup, 3, 7);
    let p = GoogleProvider::new(Config { no_sync_color_id: Some("11".into()), ..p.config().clone() }).unwrap();
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    let full = c.changes(None).await.unwrap();
    assert!(full.full && full.failures.is_empty(), "{:?}", full.failures);
    let items = upserts(&full);
    let subjects: std::collections::BTreeSet<_> =
        items.iter().map(|i| i.record.as_event().unwrap().subject.clone().unwrap()).collect();
    for s in ["Inside", "Private", "Marked", "Coloured", "All day", "Standup"] {
        assert!(subjects.contains(s), "{s} missing from {subjects:?}");
    }
    for s in ["Before window", "After window", "Cancelled"] {
        assert!(!subjects.contains(s), "{s} must not be read");
    }
    assert!(by_subject(&items, "Private")[0].record.as_event().unwrap().private);
    assert!(!by_subject(&items, "Inside")[0].record.as_event().unwrap().private);
    let marker = rep.config.events.no_sync_marker.clone();
    assert_eq!(by_subject(&items, "Marked")[0].record.as_event().unwrap().categories, vec![marker.clone()]);
    assert_eq!(by_subject(&items, "Coloured")[0].record.as_event().unwrap().categories, vec![marker]);
    assert!(by_subject(&items, "Inside")[0].record.as_event().unwrap().categories.is_empty());
    let all_day = by_subject(&items, "All day")[0].record.as_event().unwrap().clone();
    assert_eq!(all_day.start, EventTime::Date(day));
    assert_eq!(all_day.end, EventTime::Date(day + Duration::days(1)));
    assert_eq!(all_day.attendees, vec!["buyer@client.example"]);
    assert_eq!(all_day.organizer.as_deref(), Some("boss@example.com"));
    let standups = by_subject(&items, "Standup");
    assert_eq!(standups.len(), 3, "the series is expanded into instances");
    let ids: std::collections::BTreeSet<_> = standups.iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids.len(), 3);
    for s in &standups {
        let e = s.record.as_event().unwrap();
        assert_eq!(e.series_id.as_deref(), Some(series.as_str()));
        assert_eq!(e.ical_uid, standups[0].record.as_event().unwrap().ical_uid, "instances share the iCalUID");
        assert!(e.ical_uid.is_some());
    }
    let starts: std::collections::BTreeSet<_> = standups.iter().map(|i| i.record.as_event().unwrap().start).collect();
    assert!(starts.contains(&EventTime::At(standup.start.instant() + Duration::days(14))));

    // Incremental: a cancelled meeting arrives as cancelled, a deleted one as removed, an edit
    // moving an event out of the window still arrives (the engine filters the window).
    let cursor = full.cursor.clone().unwrap();
    let inside = by_subject(&items, "Inside")[0].id.clone();
    let private = by_subject(&items, "Private")[0].id.clone();
    fake.insert_event(mb, &Event { cancelled: true, ..ev("Called off", 30) });
    assert!(fake.delete_event(mb, &private));
    assert!(fake.edit_event(mb, &inside, EventEdit { start: Some(at(24 * 500)), ..Default::default() }));
    let inc = c.changes(Some(&cursor)).await.unwrap();
    let got = upserts(&inc);
    assert!(by_subject(&got, "Called off")[0].record.as_event().unwrap().cancelled);
    assert_eq!(by_subject(&got, "Inside")[0].record.as_event().unwrap().start, EventTime::At(at(24 * 500)));
    assert!(inc.items.contains(&Change::Removed(private)));
    assert_eq!(inc.items.len(), 3, "{:?}", inc.items);
}

#[tokio::test]
async fn expired_calendar_token_410_then_full_read_without_duplicates() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    let new: Vec<NewItem> = (0..4)
        .map(|i| NewItem { sync_key: key(i), record: Record::Event(ev(&format!("M{i}"), 10 + i as i64)) })
        .collect();
    let made: Vec<Item> = c.create_many(&new).await.unwrap().into_iter().map(|r| r.unwrap()).collect();
    let cursor = c.changes(None).await.unwrap().cursor.unwrap();
    fake.expire_cursors();
    let err = c.changes(Some(&cursor)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "{err}");
    assert_eq!(upserts(&c.changes(None).await.unwrap()).len(), 4);
    // Creating again with the same sync keys (a lost link write) returns the same events.
    let again: Vec<Item> = c.create_many(&new).await.unwrap().into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(again.iter().map(|i| &i.id).collect::<Vec<_>>(), made.iter().map(|i| &i.id).collect::<Vec<_>>());
    for i in 0..4 {
        assert_eq!(fake.count_events_with_key(&rep.mailbox, key(i).as_str()), 1);
    }
    // A tampered token is expired too.
    let err = c.changes(Some("cst.0.garbage")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CursorExpired);
}

#[tokio::test]
async fn more_than_one_page_and_stale_etags() {
    let (fake, p, rep) = common::setup(10).await;
    for i in 0..25 {
        fake.insert_event(&rep.mailbox, &ev(&format!("E{i}"), 5 + i));
    }
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    fake.reset_counts();
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).len(), 25);
    assert_eq!(fake.count("calendar.events.list"), 3);
    let item = upserts(&full).remove(0);
    fake.edit_event(
        &rep.mailbox,
        &item.id,
        EventEdit { subject: Some("Changed in Google".into()), ..Default::default() },
    );
    let mut rec = item.record.clone();
    rec.set_field("location", Some("Room 7".into()));
    let stale = Update {
        id: item.id.clone(),
        version: item.version.clone(),
        fields: vec!["location".into()],
        record: rec.clone(),
    };
    let err = c.update_many(&[stale]).await.unwrap().remove(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let cur = c.get_many(std::slice::from_ref(&item.id)).await.unwrap().remove(0);
    let ok = Update {
        id: item.id.clone(),
        version: cur.version.clone(),
        fields: vec!["location".into(), "private".into()],
        record: {
            let mut r = rec;
            r.set_field("private", Some("true".into()));
            r
        },
    };
    let done = c.update_many(&[ok]).await.unwrap().remove(0).unwrap();
    let e = done.record.as_event().unwrap();
    assert_eq!(e.location.as_deref(), Some("Room 7"));
    assert!(e.private);
    assert_eq!(e.subject.as_deref(), Some("Changed in Google"), "a patch keeps other fields");
    // Moving an event patches start and end.
    let mut rec = done.record.clone();
    let new_start = at(3);
    rec.set_field("start", Some(new_start.to_rfc3339()));
    rec.set_field("end", Some((new_start + Duration::hours(1)).to_rfc3339()));
    let moved = c
        .update_many(&[Update {
            id: done.id.clone(),
            version: done.version.clone(),
            fields: vec!["start".into(), "end".into()],
            record: rec,
        }])
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(moved.record.as_event().unwrap().start, EventTime::At(new_start));
}

#[tokio::test]
async fn bad_times_and_overlong_properties_are_per_item_failures() {
    let (fake, p, rep) = common::setup(100).await;
    let good = fake.insert_event(&rep.mailbox, &ev("Good", 5));
    let bad = fake.insert_event(&rep.mailbox, &ev("Bad", 6));
    fake.edit_event_json(&rep.mailbox, &bad, |e| e["start"] = json!({"dateTime": "next tuesday"}));
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![good]);
    assert_eq!(full.failures.len(), 1);
    assert_eq!(full.failures[0].id, bad);
    assert_eq!(full.failures[0].error.kind(), ErrorKind::InvalidItem);
    let long = SyncKey("k".repeat(1100));
    let res = c
        .create_many(&[
            NewItem { sync_key: long, record: Record::Event(ev("Too long", 7)) },
            NewItem { sync_key: key(1), record: Record::Event(ev("Fine", 8)) },
        ])
        .await
        .unwrap();
    assert_eq!(res[0].as_ref().unwrap_err().kind(), ErrorKind::InvalidItem);
    assert!(res[1].is_ok());
}

#[tokio::test]
async fn find_and_no_sync_marker_written_on_create() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    let marked = Event { categories: vec![rep.config.events.no_sync_marker.clone()], ..ev("Marked", 4) };
    let far = ev("Far future", 24 * 600);
    let res = c
        .create_many(&[
            NewItem { sync_key: key(1), record: Record::Event(marked) },
            NewItem { sync_key: key(2), record: Record::Event(far) },
        ])
        .await
        .unwrap();
    let raw = fake.events(&rep.mailbox);
    let m = raw.iter().find(|e| e["summary"] == "Marked").unwrap();
    assert_eq!(m["extendedProperties"]["private"]["crmsyncNoSync"], "true");
    let found = c.find(&[MatchKey::SyncKey(key(2)), MatchKey::SyncKey(key(1))]).await.unwrap();
    assert_eq!(found.len(), 1, "find scans the window");
    assert_eq!(found[0].item.sync_key, Some(key(1)));
    let far_id = &res[1].as_ref().unwrap().id;
    // Outside the window, a repeated create still returns the first event (its id derives from
    // the sync key).
    let again = c
        .create_many(&[NewItem { sync_key: key(2), record: Record::Event(ev("Far future", 24 * 600)) }])
        .await
        .unwrap();
    assert_eq!(&again[0].as_ref().unwrap().id, far_id);
    assert_eq!(fake.count_events_with_key(&rep.mailbox, key(2).as_str()), 1);
    // Deleting twice is fine.
    assert!(c.delete_many(&[far_id.clone(), far_id.clone()]).await.unwrap().iter().all(Result::is_ok));
    assert!(c.get_many(std::slice::from_ref(far_id)).await.unwrap().is_empty());
}

#[tokio::test]
async fn calendar_throttling_and_outages_are_retried() {
    use crmsync_google::fake::Fault;
    let (fake, p, rep) = common::setup(100).await;
    fake.insert_event(&rep.mailbox, &ev("One", 5));
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    c.changes(None).await.unwrap();
    for fault in
        [Fault::Throttle403, Fault::TooManyRequests { retry_after_ms: 0 }, Fault::Unavailable, Fault::ExpiredToken]
    {
        fake.reset_counts();
        fake.fail_next(1, fault.clone());
        let full = c.changes(None).await.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(upserts(&full).len(), 1);
        assert_eq!(fake.count("calendar.events.list"), 2, "{fault:?}");
    }
    fake.fail_rate(1.0, 3, Fault::Throttle403);
    let err = c.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
    fake.clear_faults();
    fake.fail_next(1, Fault::Truncated);
    let err = c.changes(None).await.unwrap_err();
    assert!(err.message().contains("truncated or non-JSON"), "{err}");
}

/// The first date from tomorrow on whose noon `tz` is `offset_hours` from UTC.
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

/// The API takes a local `dateTime` without offset plus an IANA `timeZone`, and answers with
/// the zone's offset; the adapter reads the right instant in standard and daylight time, keeps
/// the zone, writes changes back as local time in it, and all-day events keep their dates.
#[tokio::test]
async fn local_times_with_a_time_zone_are_the_right_instants() {
    let (fake, p, rep) = common::setup(100).await;
    let mb = &rep.mailbox;
    let ny = chrono_tz::America::New_York;
    let (winter, summer) = (date_with_offset(ny, -5), date_with_offset(ny, -4));
    let local = |d: chrono::NaiveDate, h: u32| d.and_hms_opt(h, 0, 0).unwrap().format("%Y-%m-%dT%H:%M:%S").to_string();
    for (name, d) in [("Winter", winter), ("Summer", summer)] {
        fake.insert_event_json(
            mb,
            json!({"summary": name, "start": {"dateTime": local(d, 23), "timeZone": "America/New_York"},
                   "end": {"dateTime": local(d + Duration::days(1), 1), "timeZone": "America/New_York"}}),
        );
    }
    let day = winter + Duration::days(2);
    fake.insert_event_json(
        mb,
        json!({"summary": "Offsite", "start": {"date": day.to_string()}, "end": {"date": (day + Duration::days(3)).to_string()}}),
    );
    let stored = fake.events(mb);
    let w = stored.iter().find(|e| e["summary"] == "Winter").unwrap();
    assert_eq!(w["start"]["dateTime"], format!("{}-05:00", local(winter, 23)), "answered with the offset");
    let c = p.events(&rep, &common::access(&rep)).unwrap();
    let items = upserts(&c.changes(None).await.unwrap());
    let get = |s: &str| by_subject(&items, s)[0].clone();
    let (wi, su, off) = (get("Winter"), get("Summer"), get("Offsite"));
    let start = |i: &Item| i.record.as_event().unwrap().start;
    let end = |i: &Item| i.record.as_event().unwrap().end;
    assert_eq!(start(&wi), EventTime::At((winter.and_hms_opt(23, 0, 0).unwrap() + Duration::hours(5)).and_utc()));
    assert_eq!(start(&su), EventTime::At((summer.and_hms_opt(23, 0, 0).unwrap() + Duration::hours(4)).and_utc()));
    assert_eq!(
        end(&su),
        EventTime::At((summer.and_hms_opt(23, 0, 0).unwrap() + Duration::hours(6)).and_utc()),
        "over midnight"
    );
    assert_eq!(su.record.as_event().unwrap().time_zone.as_deref(), Some("America/New_York"));
    assert_eq!((start(&off), end(&off)), (EventTime::Date(day), EventTime::Date(day + Duration::days(3))));
    // A move from the CRM is written as New York local time.
    let mut moved = su.record.clone();
    let t = (summer.and_hms_opt(22, 0, 0).unwrap() + Duration::hours(4)).and_utc();
    moved.set_field("start", Some(t.to_rfc3339()));
    let up = Update { id: su.id.clone(), version: su.version.clone(), fields: vec!["start".into()], record: moved };
    let done = c.update_many(&[up]).await.unwrap().remove(0).unwrap();
    assert_eq!(start(&done), EventTime::At(t));
    let s = fake.events(mb).into_iter().find(|e| e["summary"] == "Summer").unwrap();
    assert_eq!(s["start"], json!({"dateTime": format!("{}-04:00", local(summer, 22)), "timeZone": "America/New_York"}));
}
