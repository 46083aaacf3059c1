//! The adapter against its fake: paging, incremental reads, batching, upsert, escaping,
//! authentication, retries, users and permissions, scopes.

mod common;

use chrono::{Duration, Utc};
use common::{access, coll, rep, setup};
use crmsync_core::{
    Change, Contact, ContactFilter, Criterion, CriterionOp, Crm, ErrorKind, Event, EventTime, Kind, MANAGE_SYNC,
    MANAGE_USERS, MatchKey, NewItem, Record, Side, SyncKey, Update,
};
use crmsync_salesforce::fake::{FakeSalesforce, Fault};
use crmsync_salesforce::{Config, SalesforceCrm};
use serde_json::json;

fn contact(i: usize) -> Record {
    Record::Contact(Contact {
        given_name: Some(format!("Given{i}")),
        family_name: Some(format!("Family{i}")),
        emails: vec![format!("p{i}@example.com")],
        ..Default::default()
    })
}

fn key(i: usize) -> SyncKey {
    SyncKey::derive("adapter-test", Kind::Contact, Side::Provider, &i.to_string())
}

fn upserts(ch: &crmsync_core::Changes) -> Vec<String> {
    let mut v: Vec<String> = ch
        .items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i.id.clone()),
            Change::Removed(_) => None,
        })
        .collect();
    v.sort();
    v
}

fn removals(ch: &crmsync_core::Changes) -> Vec<String> {
    let mut v: Vec<String> = ch
        .items
        .iter()
        .filter_map(|c| match c {
            Change::Removed(id) => Some(id.clone()),
            Change::Upsert(_) => None,
        })
        .collect();
    v.sort();
    v
}

/// Writing N contacts costs ceil(N/200) requests, reading them ceil(N/2000), and a read of
/// more than 2,000 records follows `nextRecordsUrl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counts_are_the_paging_and_batching_floor() {
    let (fake, crm, rep) = setup().await;
    let c = coll(&crm, &rep, Kind::Contact).await;
    let n = 2_050;
    let items: Vec<NewItem> = (0..n).map(|i| NewItem { sync_key: key(i), record: contact(i) }).collect();
    let before = c.requests();
    assert_eq!(before, 0, "handing a collection out costs no request");
    for chunk in items.chunks(200) {
        for r in c.create_many(chunk).await.unwrap() {
            r.unwrap();
        }
    }
    let writes = c.requests() - 1; // the token request
    assert_eq!(writes, n.div_ceil(200) as u64, "one composite request per 200 records");
    assert_eq!(fake.count("composite"), n.div_ceil(200) as u64);
    assert_eq!(fake.count("token"), 1);
    let before_read = c.requests();
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).len(), n);
    assert_eq!(c.requests() - before_read, n.div_ceil(2000) as u64, "reads page at 2,000");
    assert_eq!(fake.count("query"), 1);
    assert_eq!(fake.count("query_more"), 1, "the second page came through nextRecordsUrl");
    assert_eq!(fake.contacts().len(), n);
}

/// A `find` too large for one query URI is split into several queries sent together in one
/// `/composite` request (25 subrequests, one API call), and returns every match.
#[tokio::test]
async fn a_large_find_is_one_composite_request() {
    let (fake, crm, rep) = setup().await;
    let c = coll(&crm, &rep, Kind::Contact).await;
    let n = 900;
    for chunk in (0..n).map(|i| NewItem { sync_key: key(i), record: contact(i) }).collect::<Vec<_>>().chunks(200) {
        for r in c.create_many(chunk).await.unwrap() {
            r.unwrap();
        }
    }
    let keys: Vec<MatchKey> = (0..n)
        .flat_map(|i| [MatchKey::SyncKey(key(i)), MatchKey::Email(format!("p{i}@example.com"))])
        .chain((0..200).map(|i| MatchKey::Email(format!("nobody{i}@example.com"))))
        .collect();
    let before = (fake.count("composite/query"), fake.count("composite"), fake.count("query"));
    let found = c.find(&keys).await.unwrap();
    assert_eq!(found.len(), n, "every record found once");
    assert_eq!(fake.count("composite") - before.1, 1, "one request");
    assert!(fake.count("composite/query") - before.0 > 1, "the keys did not fit one query URI");
    assert_eq!(fake.count("query"), before.2, "no separate query requests");
}

#[tokio::test]
async fn incremental_read_sees_edits_deletions_and_owner_changes() {
    let (fake, crm, rep) = setup().await;
    let other = fake.add_user("Otto Other", &[]);
    let ids: Vec<String> =
        (0..4).map(|i| fake.insert_contact(&rep.crm_user_id, json!({"LastName": format!("Seed{i}")}))).collect();
    let c = coll(&crm, &rep, Kind::Contact).await;
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).len(), 4);
    let cursor = full.cursor.unwrap();
    fake.edit_contact(&ids[0], json!({"Title": "VP Sales"})).unwrap();
    assert!(fake.delete_contact(&ids[1]));
    fake.set_owner(&ids[2], &other).unwrap();
    let new = fake.insert_contact(&rep.crm_user_id, json!({"LastName": "Newcomer"}));
    let ch = c.changes(Some(&cursor)).await.unwrap();
    assert!(!ch.full);
    let mut want = vec![ids[0].clone(), new.clone()];
    want.sort();
    assert_eq!(upserts(&ch), want, "the edit and the new contact");
    let mut gone = vec![ids[1].clone(), ids[2].clone()];
    gone.sort();
    assert_eq!(removals(&ch), gone, "the deletion and the contact given to another owner");
    let edited = ch
        .items
        .iter()
        .find_map(|x| match x {
            Change::Upsert(i) if i.id == ids[0] => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(edited.record.as_contact().unwrap().title.as_deref(), Some("VP Sales"));
    // Nothing changed since: nothing read.
    let quiet = c.changes(ch.cursor.as_deref()).await.unwrap();
    assert!(quiet.items.is_empty(), "{:?}", quiet.items);
    // An expired window → CursorExpired.
    fake.expire_cursors();
    let err = c.changes(quiet.cursor.as_deref()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CursorExpired);
    assert_eq!(c.changes(Some("not a cursor")).await.unwrap_err().kind(), ErrorKind::CursorExpired);
}

/// 100 reps' incremental reads share one org-wide change read per round and kind: the CRM
/// requests of a round grow with the changes, not with reps × org size; each rep still gets
/// exactly its own edits, and a rep reading again starts a new round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_of_reps_shares_one_change_read_per_kind() {
    let (fake, crm, _) = setup().await;
    let reps: Vec<_> = (0..100).map(|i| rep(&fake.add_user(&format!("Rep {i}"), &[]))).collect();
    let mut ids = vec![];
    for r in &reps {
        ids.push(
            (0..3)
                .map(|j| fake.insert_contact(&r.crm_user_id, json!({"LastName": format!("C{j}")})))
                .collect::<Vec<_>>(),
        );
    }
    let mut colls = vec![];
    let mut cursors = vec![];
    for r in &reps {
        let c = coll(&crm, r, Kind::Contact).await;
        let full = c.changes(None).await.unwrap();
        assert_eq!(upserts(&full).len(), 3);
        cursors.push(full.cursor.unwrap());
        colls.push(c);
    }
    for round in 0..2 {
        for (i, own) in ids.iter().enumerate() {
            fake.edit_contact(&own[round], json!({"Title": format!("Round {round} rep {i}")})).unwrap();
        }
        let before = fake.count("queryAll") + fake.count("query_more");
        for (i, c) in colls.iter().enumerate() {
            let ch = c.changes(Some(&cursors[i])).await.unwrap();
            assert_eq!(upserts(&ch), vec![ids[i][round].clone()], "rep {i} round {round}: its own edit only");
            // Other owners' changes may be someone's contacts given away: reported as removed
            // (the engine drops removals of records it does not hold); never its own.
            assert!(!removals(&ch).contains(&ids[i][round]));
            cursors[i] = ch.cursor.unwrap();
        }
        let reads = fake.count("queryAll") + fake.count("query_more") - before;
        assert_eq!(reads, 1, "round {round}: one change read for 100 reps (100 changes fit one page)");
    }
}

#[tokio::test]
async fn a_batch_over_200_is_split_and_one_invalid_record_fails_alone() {
    let (fake, crm, rep) = setup().await;
    let c = coll(&crm, &rep, Kind::Contact).await;
    let mut items: Vec<NewItem> = (0..230).map(|i| NewItem { sync_key: key(i), record: contact(i) }).collect();
    items[137].record = Record::Contact(Contact { given_name: Some("NoLast".into()), ..Default::default() });
    items[212].record =
        Record::Contact(Contact { family_name: Some("L".into()), title: Some("t".repeat(129)), ..Default::default() });
    let mut results = vec![];
    for chunk in items.chunks(200) {
        results.extend(c.create_many(chunk).await.unwrap());
    }
    assert_eq!(fake.count("composite"), 2);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 228);
    let e = results[137].as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidItem);
    assert!(e.message().contains("Required fields are missing: [LastName]"), "{e}");
    let e = results[212].as_ref().unwrap_err();
    assert!(e.message().contains("STRING_TOO_LONG") && e.message().contains("max length=128"), "{e}");
    assert_eq!(fake.contacts().len(), 228);
    assert!(c.create_many(&items).await.is_err(), "more than 200 in one call is refused");
}

#[tokio::test]
async fn upsert_by_sync_key_twice_creates_one_record() {
    let (fake, crm, rep) = setup().await;
    let c = coll(&crm, &rep, Kind::Contact).await;
    let item = NewItem { sync_key: key(7), record: contact(7) };
    let a = c.create_many(std::slice::from_ref(&item)).await.unwrap().remove(0).unwrap();
    let b = c.create_many(std::slice::from_ref(&item)).await.unwrap().remove(0).unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(fake.count_by_sync_key("Contact", key(7).as_str()), 1);
    assert_eq!(fake.count_contacts_by_email("p7@example.com"), 1);
    assert_eq!(fake.count("composite/collections_upsert"), 2, "both went through the external-id upsert");
    let found = c.find(&[MatchKey::SyncKey(key(7))]).await.unwrap();
    assert_eq!(found.len(), 1);
}

/// Names and e-mails with quotes, backslashes, LIKE wildcards, newlines and non-ASCII: the
/// escaper and the fake's SOQL parser agree, and an injection attempt is inert.
#[tokio::test]
async fn soql_escaping_round_trips_and_injection_is_inert() {
    let (fake, crm, rep) = setup().await;
    let tricky = [
        ("O'Brien", "o'brien@example.com"),
        ("Back\\slash", "back\\slash@example.com"),
        ("100% Sales", "pct%@example.com"),
        ("snake_case", "under_score@example.com"),
        ("Line1\nLine2", "newline@example.com"),
        ("Zoë Ünïcödé 東京", "zoe@exämple.com"),
        ("Quote\"d", "dq@example.com"),
    ];
    let mut ids = vec![];
    for (last, email) in tricky {
        ids.push(
            fake.insert_contact(&rep.crm_user_id, json!({"LastName": last, "Email": email, "Phone": "+1 555 0100"})),
        );
    }
    // Decoys that a wildcard would match.
    fake.insert_contact(&rep.crm_user_id, json!({"LastName": "100X Sales", "Email": "pctx@example.com"}));
    fake.insert_contact(&rep.crm_user_id, json!({"LastName": "snakeXcase", "Email": "underXscore@example.com"}));
    let c = coll(&crm, &rep, Kind::Contact).await;
    for ((last, email), id) in tricky.iter().zip(&ids) {
        let found = c.find(&[MatchKey::Email(email.to_lowercase())]).await.unwrap();
        assert_eq!(
            found.iter().map(|f| f.item.id.clone()).collect::<Vec<_>>(),
            vec![id.clone()],
            "by e-mail {email:?}"
        );
        let found =
            c.find(&[MatchKey::NamePhone { name: last.to_lowercase(), phone: "+15550100".into() }]).await.unwrap();
        assert_eq!(found.len(), 1, "by name {last:?}");
        assert_eq!(found[0].item.record.as_contact().unwrap().family_name.as_deref(), Some(*last));
    }
    // All keys in one request.
    let before = c.requests();
    let keys: Vec<MatchKey> = tricky.iter().map(|(_, e)| MatchKey::Email(e.to_lowercase())).collect();
    assert_eq!(c.find(&keys).await.unwrap().len(), tricky.len());
    assert_eq!(c.requests() - before, 1, "a small key set is one query");
    // Injection attempts match nothing (unescaped they would match every contact / user).
    let evil = "x' OR LastName != 'y";
    assert!(c.find(&[MatchKey::Email(evil.into())]).await.unwrap().is_empty());
    assert!(crm.find_users("x' OR Name LIKE '%").await.unwrap().is_empty());
    assert!(crm.find_users("\\' OR Id != null OR Name = '").await.unwrap().is_empty());
    // LIKE wildcards in user names are literal.
    fake.add_user("Percy 100% Percent", &[]);
    fake.add_user("Percy 1000 Percent", &[]);
    fake.add_user("Una Under_score", &[]);
    fake.add_user("Una UnderXscore", &[]);
    let names = |v: Vec<crmsync_core::CrmUser>| v.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(names(crm.find_users("100%").await.unwrap()), vec!["Percy 100% Percent"]);
    assert_eq!(names(crm.find_users("under_").await.unwrap()), vec!["Una Under_score"]);
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_and_bad_credentials_are_clear() {
    let (fake, crm, rep) = setup().await;
    fake.insert_contact(&rep.crm_user_id, json!({"LastName": "A"}));
    let c = coll(&crm, &rep, Kind::Contact).await;
    c.changes(None).await.unwrap();
    fake.expire_tokens();
    let again = c.changes(None).await.unwrap();
    assert_eq!(upserts(&again).len(), 1);
    assert_eq!(fake.count("token"), 2, "one new token after the 401");
    assert_eq!(c.requests(), 1 + 1 + 1 + 1 + 1, "token, read, 401, token, read");

    // Refresh-token flow.
    let crm2 = SalesforceCrm::new(fake.config_with_refresh_token()).unwrap();
    let c2 = coll(&crm2, &rep, Kind::Contact).await;
    assert_eq!(upserts(&c2.changes(None).await.unwrap()).len(), 1);

    // A refresh token the org no longer knows (revoked, expired): GrantRevoked, not retried.
    let mut revoked = fake.config_with_refresh_token();
    revoked.refresh_token = Some("revoked-refresh-token".to_string().into());
    let c4 = coll(&SalesforceCrm::new(revoked).unwrap(), &rep, Kind::Contact).await;
    let err = c4.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GrantRevoked, "{err}");
    assert!(err.to_string().contains("invalid_grant") && !err.to_string().contains("revoked-refresh-token"));
    assert_eq!(c4.requests(), 1, "one token request, no retry");

    // A wrong secret: Unauthenticated, and the secret appears nowhere.
    let mut bad = fake.config();
    bad.client_secret = Some("s3cr3t-value".to_string().into());
    let crm3 = SalesforceCrm::new(bad.clone()).unwrap();
    let err = coll(&crm3, &rep, Kind::Contact).await.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!err.to_string().contains("s3cr3t"));
    assert!(!format!("{bad:?}").contains("s3cr3t"), "Debug redacts secrets");
}

#[tokio::test]
async fn throttling_and_outages_are_retried_and_counted() {
    let (fake, crm, rep) = setup().await;
    fake.insert_contact(&rep.crm_user_id, json!({"LastName": "A"}));
    let c = coll(&crm, &rep, Kind::Contact).await;
    c.changes(None).await.unwrap();
    let before = c.requests();
    fake.fail_next(1, Fault::TooManyRequests { retry_after_ms: 0 });
    fake.fail_next(2, Fault::Unavailable);
    fake.fail_next(3, Fault::Drop);
    fake.fail_next(4, Fault::Throttle403);
    assert_eq!(upserts(&c.changes(None).await.unwrap()).len(), 1);
    assert_eq!(c.requests() - before, 5, "four failures and the success, each counted");
    assert_eq!(fake.faults_fired(), 4);
    // A session expiring mid-run: one new token, then the read goes through.
    let tokens = fake.count("token");
    fake.fail_next(1, Fault::ExpiredToken);
    assert_eq!(upserts(&c.changes(None).await.unwrap()).len(), 1);
    assert_eq!(fake.count("token"), tokens + 1);
    // A budget that runs out is an error of the whole call.
    for k in 1..=5 {
        fake.fail_next(k, Fault::Unavailable);
    }
    let err = c.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.is_temporary());
    // The daily limit is not retried.
    fake.set_api_limit(fake.api_usage());
    let before = c.requests();
    let err = c.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(c.requests() - before, 1);
    assert!(crm.api_usage().is_some_and(|u| u.max == fake.api_usage() - 1 && u.used >= u.max));
}

#[tokio::test]
async fn seeded_fault_rate_is_survived() {
    let (fake, crm, rep) = setup().await;
    for i in 0..5 {
        fake.insert_contact(&rep.crm_user_id, json!({"LastName": format!("R{i}")}));
    }
    let c = coll(&crm, &rep, Kind::Contact).await;
    fake.fail_rate(0.3, 42, Fault::Unavailable);
    for _ in 0..5 {
        assert_eq!(upserts(&c.changes(None).await.unwrap()).len(), 5);
    }
    assert!(fake.faults_fired() > 0, "the seeded rate injected faults");
    assert_eq!(c.requests(), fake.requests(), "every request, failed or not, is counted");
}

#[tokio::test]
async fn users_and_permissions() {
    let fake = FakeSalesforce::start().await;
    let crm = SalesforceCrm::new(fake.config()).unwrap();
    let ada = fake.add_user("Ada Admin", &[MANAGE_USERS, MANAGE_SYNC]);
    let mona = fake.add_user("Mona Manager", &[MANAGE_USERS]);
    let sam = fake.add_user("Sam Syncer", &[MANAGE_SYNC]);
    let pat = fake.add_user("Pat Plain", &[]);
    let found = crm.find_users("ADA").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, ada);
    assert_eq!(found[0].name, "Ada Admin");
    assert_eq!(crm.find_users("a").await.unwrap().len(), 5, "partial, case-insensitive match (integration user too)");
    let perms = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };
    assert_eq!(perms(crm.permissions(&ada).await.unwrap()), vec![MANAGE_SYNC, MANAGE_USERS]);
    assert_eq!(perms(crm.permissions(&mona).await.unwrap()), vec![MANAGE_USERS]);
    assert_eq!(perms(crm.permissions(&sam).await.unwrap()), vec![MANAGE_SYNC]);
    assert!(crm.permissions(&pat).await.unwrap().is_empty());
    assert_eq!(crm.permissions("005000000000000AAA").await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(crm.permissions("x' OR ''='").await.unwrap_err().kind(), ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn contact_filters_scope_reads_and_find_reports_out_of_scope() {
    let (fake, crm, mut rep) = setup().await;
    let other = fake.add_user("Otto Other", &[]);
    let de = fake.insert_contact(
        &rep.crm_user_id,
        json!({"LastName": "Berlin", "MailingCountry": "Germany", "Email": "b@x.de"}),
    );
    let fr = fake.insert_contact(&rep.crm_user_id, json!({"LastName": "Paris", "MailingCountry": "France"}));
    let theirs =
        fake.insert_contact(&other, json!({"LastName": "Theirs", "MailingCountry": "Germany", "Email": "t@x.de"}));
    let owned = coll(&crm, &rep, Kind::Contact).await;
    let mut want = vec![de.clone(), fr.clone()];
    want.sort();
    assert_eq!(upserts(&owned.changes(None).await.unwrap()), want);
    let found = owned.find(&[MatchKey::Email("t@x.de".into()), MatchKey::Email("b@x.de".into())]).await.unwrap();
    assert_eq!(found.len(), 2, "find searches the whole org");
    assert!(found.iter().any(|f| f.item.id == theirs && !f.in_scope));
    assert!(found.iter().any(|f| f.item.id == de && f.in_scope));
    assert!(owned.get_many(std::slice::from_ref(&theirs)).await.unwrap().is_empty(), "get_many stays in scope");

    rep.config.contacts.filter = ContactFilter::Criteria(vec![Criterion {
        field: "country".into(),
        op: CriterionOp::Eq,
        value: "germany".into(),
    }]);
    let crit = coll(&crm, &rep, Kind::Contact).await;
    let full = crit.changes(None).await.unwrap();
    assert_eq!(upserts(&full), vec![de.clone()]);
    // The first incremental read after a full read may report out-of-scope records changed
    // after the newest in-scope one as removed (harmless: the engine holds no link for them).
    let settle = crit.changes(full.cursor.as_deref()).await.unwrap();
    assert!(upserts(&settle).is_empty());
    // Leaving the criteria reads as a removal.
    fake.edit_contact(&de, json!({"MailingCountry": "Austria"})).unwrap();
    let ch = crit.changes(settle.cursor.as_deref()).await.unwrap();
    assert_eq!(removals(&ch), vec![de.clone()]);
    assert!(upserts(&ch).is_empty());

    rep.config.contacts.filter = ContactFilter::Visible;
    let all = coll(&crm, &rep, Kind::Contact).await;
    assert_eq!(upserts(&all.changes(None).await.unwrap()).len(), 3);

    rep.config.contacts.filter =
        ContactFilter::Criteria(vec![Criterion { field: "company".into(), op: CriterionOp::Eq, value: "x".into() }]);
    assert_eq!(crm.collection(&rep, Kind::Contact, &access()).await.unwrap_err().kind(), ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn events_link_the_attendee_contact_and_keep_all_day_events() {
    let (fake, crm, rep) = setup().await;
    let ann = fake.insert_contact(&rep.crm_user_id, json!({"LastName": "Ann", "Email": "Ann@Acme.com"}));
    let c = coll(&crm, &rep, Kind::Event).await;
    let start = Utc::now() + Duration::days(3);
    let start = start - Duration::nanoseconds(start.timestamp_subsec_nanos() as i64);
    let timed = Event {
        attendees: vec!["ann@acme.com".into()],
        location: Some("Room 1".into()),
        ..Event::new("Kickoff", start, start + Duration::hours(1))
    };
    let day = (Utc::now() + Duration::days(5)).date_naive();
    let all_day = Event {
        start: EventTime::Date(day),
        end: EventTime::Date(day + Duration::days(2)),
        ..Event::new("Offsite", start, start)
    };
    let items = vec![
        NewItem { sync_key: key(1), record: Record::Event(timed.clone()) },
        NewItem { sync_key: key(2), record: Record::Event(all_day.clone()) },
    ];
    let q_before = fake.count("query");
    let made: Vec<_> = c.create_many(&items).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(fake.count("query") - q_before, 1, "one attendee lookup for the batch");
    let stored = fake.record(&made[0].id).unwrap();
    assert_eq!(stored["WhoId"], json!(ann));
    assert_eq!(stored["OwnerId"], json!(rep.crm_user_id));
    assert_eq!(made[1].record.canon(), Record::Event(all_day.clone()).canon());
    let stored = fake.record(&made[1].id).unwrap();
    assert_eq!(stored["IsAllDayEvent"], json!(true));
    assert_eq!(stored["DurationInMinutes"], json!(2880));
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).len(), 2);
    // An update moving the timed event keeps its duration consistent.
    let mut moved = made[0].record.clone();
    moved.set_field("start", Some((start + Duration::hours(2)).to_rfc3339()));
    moved.set_field("end", Some((start + Duration::hours(4)).to_rfc3339()));
    let up = Update {
        id: made[0].id.clone(),
        version: made[0].version.clone(),
        fields: vec!["start".into(), "end".into()],
        record: moved,
    };
    let res = c.update_many(&[up]).await.unwrap().remove(0).unwrap();
    assert_eq!(fake.record(&res.id).unwrap()["DurationInMinutes"], json!(120));
    // Another owner's event is not in this rep's collection.
    let other = fake.add_user("Otto Other", &[]);
    fake.insert_event(
        &other,
        json!({"Subject": "Theirs", "StartDateTime": start.to_rfc3339(), "DurationInMinutes": 30}),
    );
    assert_eq!(upserts(&c.changes(None).await.unwrap()).len(), 2);
    // After a full read of the rep's contacts (as a cycle does first), the attendee's contact
    // is known: the next event batch needs no look-up query.
    let contacts = coll(&crm, &rep, Kind::Contact).await;
    contacts.changes(None).await.unwrap();
    let q_before = fake.count("query");
    let again = vec![NewItem {
        sync_key: key(3),
        record: Record::Event(Event { subject: Some("Follow-up".into()), ..timed.clone() }),
    }];
    let made = c.create_many(&again).await.unwrap().remove(0).unwrap();
    assert_eq!(fake.count("query"), q_before, "WhoId came from the contact read");
    assert_eq!(fake.record(&made.id).unwrap()["WhoId"], json!(ann));
}

#[tokio::test]
async fn a_user_edit_in_between_makes_the_update_fail_as_stale() {
    let (fake, crm, rep) = setup().await;
    let c = coll(&crm, &rep, Kind::Contact).await;
    let item = c.create_many(&[NewItem { sync_key: key(1), record: contact(1) }]).await.unwrap().remove(0).unwrap();
    fake.edit_contact(&item.id, json!({"Title": "Edited by a user"})).unwrap();
    let mut rec = item.record.clone();
    rec.set_field("title", Some("From the mailbox".into()));
    let up = Update { id: item.id.clone(), version: item.version.clone(), fields: vec!["title".into()], record: rec };
    let err = c.update_many(&[up]).await.unwrap().remove(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(fake.record(&item.id).unwrap()["Title"], json!("Edited by a user"));
    // Deleting twice is fine.
    assert!(c.delete_many(std::slice::from_ref(&item.id)).await.unwrap()[0].is_ok());
    assert!(c.delete_many(std::slice::from_ref(&item.id)).await.unwrap()[0].is_ok());
    assert!(fake.contacts().is_empty());
}

#[test]
fn config_validation_gives_one_clear_line() {
    let mut c = Config::new("https://acme.my.salesforce.com", "key");
    assert!(c.validate().unwrap_err().message().contains("neither a client secret"));
    c.client_secret = Some("x".to_string().into());
    assert!(c.validate().is_ok());
    c.sync_key_field = "Key__c FROM User".into();
    assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
    c.sync_key_field = "CrmSync_Key__c".into();
    c.api_version = "v62".into();
    assert!(c.validate().unwrap_err().message().contains("api_version"));
    c.api_version = "62.0".into();
    // Out-of-range numbers are one clear line, not a panic.
    c.timeout_secs = u64::MAX;
    assert!(c.validate().unwrap_err().message().contains("timeout_secs"));
    c.timeout_secs = 60;
    c.retry.max_delay_ms = u64::MAX;
    assert!(c.validate().unwrap_err().message().starts_with("salesforce: retry.max_delay_ms"));
    let parsed: Result<Config, _> =
        serde_json::from_value(json!({"instance_url": "https://x.my.salesforce.com", "client_id": "k", "bogus": 1}));
    assert!(parsed.is_err(), "unknown fields are refused");
    let _ = rep("005000000000001AAA");
}

#[tokio::test]
async fn criteria_values_are_escaped_in_the_scope_query() {
    let (fake, crm, mut rep) = setup().await;
    let obrien = fake.insert_contact(&rep.crm_user_id, json!({"LastName": "O'Brien", "Department": "50% Off"}));
    fake.insert_contact(&rep.crm_user_id, json!({"LastName": "Other", "Department": "50X Off"}));
    rep.config.contacts.filter = ContactFilter::Criteria(vec![
        Criterion { field: "family_name".into(), op: CriterionOp::StartsWith, value: "o'b".into() },
        Criterion { field: "department".into(), op: CriterionOp::StartsWith, value: "50%".into() },
    ]);
    let c = coll(&crm, &rep, Kind::Contact).await;
    assert_eq!(upserts(&c.changes(None).await.unwrap()), vec![obrien]);
    rep.config.contacts.filter = ContactFilter::Criteria(vec![Criterion {
        field: "department".into(),
        op: CriterionOp::Ne,
        value: "x' OR LastName != '".into(),
    }]);
    let c = coll(&crm, &rep, Kind::Contact).await;
    assert_eq!(upserts(&c.changes(None).await.unwrap()).len(), 2, "the odd value is a plain literal");
}

/// Shared Activities at the org's limit, batched: 20 events with 55 contact attendees each are
/// related to 50 contacts each (primary `WhoId` + 49 `EventRelation` rows), written in
/// Collections requests inside `/composite` calls, not one request per relation; the returned
/// items name the attendees they were related to.
#[tokio::test]
async fn relations_are_batched_and_capped_at_the_org_limit() {
    let (fake, crm, rep) = setup().await;
    for i in 0..55 {
        fake.insert_contact(&rep.crm_user_id, json!({"LastName": format!("C{i}"), "Email": format!("c{i:02}@x.io")}));
    }
    let c = coll(&crm, &rep, Kind::Event).await;
    let start = Utc::now() + Duration::days(3);
    let start = start - Duration::nanoseconds(start.timestamp_subsec_nanos() as i64);
    let attendees: Vec<String> = (0..55).map(|i| format!("c{i:02}@x.io")).collect();
    let items: Vec<NewItem> = (0..20)
        .map(|i| NewItem {
            sync_key: key(100 + i),
            record: Record::Event(Event {
                attendees: attendees.clone(),
                ..Event::new(&format!("M{i}"), start, start + Duration::hours(1))
            }),
        })
        .collect();
    fake.reset_counts();
    let made: Vec<_> = c.create_many(&items).await.unwrap().into_iter().map(Result::unwrap).collect();
    // 980 relations = 5 Collections subrequests of ≤ 200, one /composite call; plus the
    // event write's /composite and the contact look-up.
    assert_eq!(fake.count("composite"), 2, "{:?}", fake.counts());
    assert_eq!(fake.count("query"), 1);
    for m in &made {
        assert_eq!(fake.related_emails(&m.id).len(), crmsync_salesforce::MAX_RELATED);
        let Record::Event(e) = &m.record else { panic!() };
        assert_eq!(e.attendees.len(), 50, "the item names the 50 related attendees");
        assert!(!e.attendees.contains(&"c54@x.io".to_owned()), "the last addresses are past the limit");
    }
}

/// All-day events are dates in Salesforce (`IsAllDayEvent`, `ActivityDate`, whole days): never
/// shifted by a zone; timed events over midnight and over several days keep both instants and
/// a consistent `DurationInMinutes`.
#[tokio::test]
async fn all_day_multi_day_and_over_midnight_events_round_trip() {
    let (fake, crm, rep) = setup().await;
    let c = coll(&crm, &rep, Kind::Event).await;
    let day = (Utc::now() + Duration::days(10)).date_naive();
    let t = day.and_hms_opt(23, 15, 0).unwrap().and_utc();
    let events = [
        Event {
            start: EventTime::Date(day),
            end: EventTime::Date(day + Duration::days(1)),
            ..Event::new("One day", t, t)
        },
        Event {
            start: EventTime::Date(day),
            end: EventTime::Date(day + Duration::days(4)),
            ..Event::new("Four days", t, t)
        },
        Event::new("Late call", t, t + Duration::minutes(90)),
        Event::new("Workshop", t, t + Duration::days(3) + Duration::hours(2)),
    ];
    let items: Vec<NewItem> = events
        .iter()
        .enumerate()
        .map(|(i, e)| NewItem { sync_key: key(300 + i), record: Record::Event(e.clone()) })
        .collect();
    let made: Vec<_> = c.create_many(&items).await.unwrap().into_iter().map(Result::unwrap).collect();
    let row = |i: usize| fake.record(&made[i].id).unwrap();
    assert_eq!(
        (row(0)["IsAllDayEvent"].clone(), row(0)["ActivityDate"].clone()),
        (json!(true), json!(day.to_string()))
    );
    assert_eq!(row(1)["DurationInMinutes"], json!(4 * 1440));
    assert_eq!(row(2)["DurationInMinutes"], json!(90));
    assert_eq!(row(3)["DurationInMinutes"], json!(3 * 1440 + 120));
    let read = upserts(&c.changes(None).await.unwrap());
    assert_eq!(read.len(), 4);
    for (m, e) in made.iter().zip(&events) {
        assert_eq!(m.record.canon(), Record::Event(e.clone()).canon(), "{:?} reads back as written", e.subject);
    }
}
