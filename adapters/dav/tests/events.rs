//! Calendar resources another client wrote, read back from a real Radicale: a weekly series in
//! a zone of its own (VTIMEZONE + TZID) with an exception date, expanded to occurrences in the
//! window; an all-day event; the engine syncing them to the in-memory CRM.

mod common;

use std::sync::Arc;

use chrono::{Duration, NaiveTime, TimeZone, Utc};
use crmsync_core::memory::{MemCrm, MemStore};
use crmsync_core::*;
use crmsync_dav::client::{Auth, Session};

const KOLKATA: &str = "BEGIN:VTIMEZONE\r\nTZID:Asia/Kolkata\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n\
TZOFFSETFROM:+0530\r\nTZOFFSETTO:+0530\r\nTZNAME:IST\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n";

async fn put(server: &common::Server, calendar: &str, name: &str, body: String) {
    let password = secrecy::SecretString::from("x");
    let session = Session::new(&server.url, Auth::Basic { user: "riley", password: &password }).unwrap();
    let (href, _) = session.collection(Kind::Event, calendar).await.unwrap();
    let url = format!("{}{href}{name}", server.url.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .put(url)
        .basic_auth("riley", Some("x"))
        .header("content-type", "text/calendar")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_in_its_own_zone_expands_to_occurrences_and_syncs_once_each() {
    let Some(server) = common::radicale().await else { return };
    // Next week, 09:00 in Kolkata (UTC+05:30) = 03:30 UTC; weekly, four times, the second excluded.
    let day = (Utc::now() + Duration::days(7)).date_naive();
    let local = |d: chrono::NaiveDate| d.and_time(NaiveTime::from_hms_opt(9, 0, 0).unwrap()).format("%Y%m%dT%H%M%S");
    let series = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{KOLKATA}BEGIN:VEVENT\r\nUID:weekly-1@test\r\n\
         DTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Asia/Kolkata:{}\r\nDTEND;TZID=Asia/Kolkata:{}\r\n\
         RRULE:FREQ=WEEKLY;COUNT=4\r\nEXDATE;TZID=Asia/Kolkata:{}\r\nSUMMARY:Standup\r\n\
         ATTENDEE;CN=Ann:mailto:Ann@Acme.com\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        local(day),
        day.and_time(NaiveTime::from_hms_opt(9, 30, 0).unwrap()).format("%Y%m%dT%H%M%S"),
        local(day + Duration::days(7)),
    );
    let all_day = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:offsite@test\r\n\
         DTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:{}\r\nDTEND;VALUE=DATE:{}\r\nSUMMARY:Offsite\r\n\
         CLASS:PRIVATE\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        (day + Duration::days(2)).format("%Y%m%d"),
        (day + Duration::days(3)).format("%Y%m%d"),
    );
    put(&server, "Calendar", "weekly.ics", series).await;
    put(&server, "Calendar", "offsite.ics", all_day).await;

    let provider = server.provider("Calendar");
    let access = Access { window: common::rep().config.window(Utc::now()), grant: None };
    let cal = provider.collection(&common::rep(), Kind::Event, &access).await.unwrap();
    let read = cal.changes(None).await.unwrap();
    let mut events: Vec<Event> = read
        .items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => i.record.as_event().cloned(),
            Change::Removed(_) => None,
        })
        .collect();
    events.sort_by_key(|e| e.start);
    let standups: Vec<&Event> = events.iter().filter(|e| e.subject.as_deref() == Some("Standup")).collect();
    let first = Utc.from_utc_datetime(&day.and_time(NaiveTime::from_hms_opt(3, 30, 0).unwrap()));
    let starts: Vec<EventTime> = standups.iter().map(|e| e.start).collect();
    let want: Vec<EventTime> = [0, 14, 21].iter().map(|d| EventTime::At(first + Duration::days(*d))).collect();
    assert_eq!(starts, want, "four weekly occurrences minus the excluded one, 09:00 Kolkata = 03:30 UTC");
    assert!(standups.iter().all(|e| e.end.instant() - e.start.instant() == Duration::minutes(30)));
    assert!(standups.iter().all(|e| e.series_id.as_deref() == Some("weekly-1@test")));
    assert_eq!(standups[0].time_zone.as_deref(), Some("Asia/Kolkata"));
    assert_eq!(standups[0].attendees, vec!["ann@acme.com".to_owned()]);
    let offsite = events.iter().find(|e| e.subject.as_deref() == Some("Offsite")).expect("the all-day event");
    assert_eq!(offsite.start, EventTime::Date(day + Duration::days(2)));
    assert!(offsite.private, "CLASS:PRIVATE");

    // The engine: each occurrence once in the CRM (the private one skipped), then nothing to do.
    let crm = Arc::new(MemCrm::default());
    let user = crm.add_user("Riley Rep", &[]);
    let mut rep = Rep { id: user.clone(), crm_user_id: user, ..common::rep() };
    rep.config.contacts.direction = Direction::Off;
    let engine = Engine::new(crm.clone(), Arc::new(MemStore::default())).with_provider(Arc::new(provider));
    let r1 = engine.cycle(&rep).await.unwrap();
    assert_eq!(r1.error, None, "{r1:#?}");
    assert_eq!(r1.events.created_in_crm, 3, "{:#?}", r1.events);
    assert_eq!(r1.events.skipped.get("private"), Some(&1), "{:#?}", r1.events);
    let r2 = engine.cycle(&rep).await.unwrap();
    assert_eq!(r2.writes(), 0, "{r2:#?}");
}
