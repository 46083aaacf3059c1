//! Contacts (People API contact group) against the fake.

mod common;

use crmsync_core::{
    Change, Changes, Collection, ConnectionMode, Contact, ErrorKind, Kind, MatchKey, NewItem, Record, Side, SyncKey,
    Update,
};
use crmsync_google::fake::{DEFAULT_GROUP, Fault};

fn contact(i: usize) -> Contact {
    Contact {
        given_name: Some(format!("Given{i}")),
        family_name: Some(format!("Family{i}")),
        emails: vec![format!("p{i}@example.com")],
        phone: Some(format!("+1 555 010 {i:04}")),
        mobile: Some(format!("+1 555 020 {i:04}")),
        company: Some("Acme".into()),
        title: Some("Buyer".into()),
        department: Some("Purchasing".into()),
        notes: Some(format!("note {i}")),
        ..Default::default()
    }
}

fn key(i: usize) -> SyncKey {
    SyncKey::derive("rep-x", Kind::Contact, Side::Crm, &format!("c{i}"))
}

fn new_items(range: std::ops::Range<usize>) -> Vec<NewItem> {
    range.map(|i| NewItem { sync_key: key(i), record: Record::Contact(contact(i)) }).collect()
}

fn upserts(ch: &Changes) -> Vec<String> {
    let mut v: Vec<String> = ch
        .items
        .iter()
        .filter_map(|c| match c {
            Change::Upsert(i) => Some(i.id.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn removed(ch: &Changes) -> Vec<String> {
    let mut v: Vec<String> = ch
        .items
        .iter()
        .filter_map(|c| match c {
            Change::Removed(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn group_is_created_when_missing_and_reused() {
    let (fake, p, rep) = common::setup(100).await;
    assert!(fake.groups(&rep.mailbox).iter().all(|g| g["name"] != DEFAULT_GROUP));
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let groups = fake.groups(&rep.mailbox);
    let made: Vec<_> = groups.iter().filter(|g| g["name"] == DEFAULT_GROUP).collect();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0]["groupType"], "USER_CONTACT_GROUP");
    assert_eq!(made[0]["resourceName"], c.group());
    assert_eq!(fake.count("people.contactGroups.create"), 1);
    // A second handle finds it instead of creating another.
    let c2 = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    assert_eq!(c2.group(), c.group());
    assert_eq!(fake.count("people.contactGroups.create"), 1);
    // A configured group name is honoured.
    let mut rep2 = rep.clone();
    rep2.config.contacts.group = "CRM".into();
    let c3 = p.contacts(&rep2, &common::access(&rep2)).await.unwrap();
    assert_ne!(c3.group(), c.group());
    assert!(fake.groups(&rep.mailbox).iter().any(|g| g["name"] == "CRM"));
}

#[tokio::test]
async fn only_members_are_read_and_others_are_skipped_as_outside_scope() {
    let (fake, p, rep) = common::setup(100).await;
    let inside = fake.insert_contact(&rep.mailbox, true, &contact(1));
    let outside = fake.insert_contact(&rep.mailbox, false, &contact(2));
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let full = c.changes(None).await.unwrap();
    assert!(full.full);
    assert_eq!(upserts(&full), vec![inside.clone()]);
    assert_eq!(full.skipped.len(), 1);
    assert_eq!(full.skipped[0].id, outside);
    assert_eq!(full.skipped[0].reason, "outside_scope");
    let Change::Upsert(item) = &full.items[0] else { panic!("upsert") };
    let got = item.record.as_contact().unwrap();
    assert_eq!(got, &contact(1), "every mapped field reads back");
    // get_many does not return non-members either.
    let got = c.get_many(&[inside.clone(), outside]).await.unwrap();
    assert_eq!(got.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), vec![inside]);
}

#[tokio::test]
async fn incremental_read_after_create_edit_delete_and_leaving_the_group() {
    let (fake, p, rep) = common::setup(100).await;
    let a = fake.insert_contact(&rep.mailbox, true, &contact(1));
    let b = fake.insert_contact(&rep.mailbox, true, &contact(2));
    let d = fake.insert_contact(&rep.mailbox, true, &contact(3));
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let cursor = c.changes(None).await.unwrap().cursor.expect("sync token");
    // Created through the adapter, edited and deleted in Google, one taken out of the group.
    let made = c.create_many(&new_items(10..11)).await.unwrap().remove(0).unwrap();
    assert!(fake.edit_contact(&rep.mailbox, &a, |x| x.title = Some("CEO".into())));
    assert!(fake.delete_contact(&rep.mailbox, &b));
    assert!(fake.remove_from_group(&rep.mailbox, &d, DEFAULT_GROUP));
    let outside = fake.insert_contact(&rep.mailbox, false, &contact(4));
    let inc = c.changes(Some(&cursor)).await.unwrap();
    assert!(!inc.full);
    let mut want = vec![a.clone(), made.id.clone()];
    want.sort();
    assert_eq!(upserts(&inc), want);
    let mut gone = vec![b, d, outside];
    gone.sort();
    assert_eq!(removed(&inc), gone, "deleted, left the group, never in it");
    let edited = inc
        .items
        .iter()
        .find_map(|ch| match ch {
            Change::Upsert(i) if i.id == a => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(edited.record.as_contact().unwrap().title.as_deref(), Some("CEO"));
    // Nothing more since.
    let quiet = c.changes(inc.cursor.as_deref()).await.unwrap();
    assert!(quiet.items.is_empty(), "{:?}", quiet.items);
}

#[tokio::test]
async fn expired_sync_token_is_cursor_expired_and_a_full_read_does_not_duplicate() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let made: Vec<_> = c.create_many(&new_items(0..5)).await.unwrap().into_iter().map(|r| r.unwrap()).collect();
    let cursor = c.changes(None).await.unwrap().cursor.unwrap();
    fake.expire_cursors();
    let err = c.changes(Some(&cursor)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CursorExpired, "{err}");
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).len(), 5);
    // Re-creating the same sync keys (a lost link write) makes no second record.
    let fresh = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let again: Vec<_> = fresh.create_many(&new_items(0..5)).await.unwrap().into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(again.iter().map(|i| &i.id).collect::<Vec<_>>(), made.iter().map(|i| &i.id).collect::<Vec<_>>());
    for i in 0..5 {
        assert_eq!(fake.count_contacts_with_key(&rep.mailbox, key(i).as_str()), 1);
        assert_eq!(fake.count_contacts_with_email(&rep.mailbox, &format!("p{i}@example.com")), 1);
    }
    assert!(fake.duplicate_contact_keys(&rep.mailbox).is_empty());
}

#[tokio::test]
async fn a_450_contact_create_is_three_requests_and_reads_page() {
    let (fake, p, rep) = common::setup(200).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    c.changes(None).await.unwrap();
    fake.reset_counts();
    let res = c.create_many(&new_items(0..450)).await.unwrap();
    assert!(res.iter().all(Result::is_ok));
    assert_eq!(fake.count("people.batchCreateContacts"), 3, "{:?}", fake.counts());
    assert_eq!(fake.requests(), 3);
    assert_eq!(fake.group_members(&rep.mailbox, DEFAULT_GROUP).len(), 450, "membership set on create");
    fake.reset_counts();
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full).len(), 450);
    assert_eq!(fake.count("people.connections.list"), 3, "450 at 200 a page");
    // Deletes go 500 at a time: 450 is one request.
    fake.reset_counts();
    let ids = upserts(&full);
    assert!(c.delete_many(&ids).await.unwrap().iter().all(Result::is_ok));
    assert_eq!(fake.count("people.batchDeleteContacts"), 1);
    assert!(fake.contacts(&rep.mailbox).is_empty());
}

#[tokio::test]
async fn stale_etag_is_precondition_failed_and_updates_keep_other_fields() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let item = c.create_many(&new_items(0..1)).await.unwrap().remove(0).unwrap();
    // The user edits the contact in Google, and adds a home number crmsync does not map.
    fake.edit_contact_json(&rep.mailbox, &item.id, |p| {
        p["phoneNumbers"].as_array_mut().unwrap().push(serde_json::json!({"value": "+44 20 1234", "type": "home"}));
    });
    let mut rec = item.record.clone();
    rec.set_field("title", Some("Director".into()));
    let up = Update {
        id: item.id.clone(),
        version: item.version.clone(),
        fields: vec!["title".into()],
        record: rec.clone(),
    };
    let err = c.update_many(&[up]).await.unwrap().remove(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let cur = c.get_many(std::slice::from_ref(&item.id)).await.unwrap().remove(0);
    let up = Update {
        id: item.id.clone(),
        version: cur.version.clone(),
        fields: vec!["title".into(), "mobile".into()],
        record: {
            let mut r = rec;
            r.set_field("mobile", None);
            r
        },
    };
    let done = c.update_many(&[up]).await.unwrap().remove(0).unwrap();
    assert_ne!(done.version, cur.version);
    let got = done.record.as_contact().unwrap();
    assert_eq!(got.title.as_deref(), Some("Director"));
    assert_eq!(got.company.as_deref(), Some("Acme"), "untouched fields stay");
    assert_eq!(got.mobile, None, "a cleared field is cleared");
    let raw = fake.contacts(&rep.mailbox).into_iter().find(|p| p["resourceName"] == item.id).unwrap();
    let phones = raw["phoneNumbers"].as_array().unwrap();
    assert!(phones.iter().any(|n| n["type"] == "home"), "unmapped home number kept: {phones:?}");
    assert!(phones.iter().any(|n| n["type"] == "work"));
    assert_eq!(raw["clientData"][0]["value"], key(0).as_str(), "sync key kept");
}

#[tokio::test]
async fn find_by_sync_key_and_email_within_the_group() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let made = c.create_many(&new_items(0..3)).await.unwrap();
    fake.insert_contact(&rep.mailbox, false, &contact(7));
    let found = c
        .find(&[
            MatchKey::SyncKey(key(1)),
            MatchKey::Email("p2@example.com".into()),
            MatchKey::Email("p7@example.com".into()),
        ])
        .await
        .unwrap();
    let mut ids: Vec<_> = found.iter().map(|f| f.item.id.clone()).collect();
    ids.sort();
    let mut want = vec![made[1].as_ref().unwrap().id.clone(), made[2].as_ref().unwrap().id.clone()];
    want.sort();
    assert_eq!(ids, want, "the contact outside the group is not found");
}

#[tokio::test]
async fn bad_persons_are_per_item_failures() {
    let (fake, p, rep) = common::setup(100).await;
    let good = fake.insert_contact(&rep.mailbox, true, &contact(1));
    let nameless =
        fake.insert_contact_json(&rep.mailbox, &[DEFAULT_GROUP], serde_json::json!({"organizations": [{"name": "X"}]}));
    let bad_mail = fake.insert_contact_json(
        &rep.mailbox,
        &[DEFAULT_GROUP],
        serde_json::json!({"names": [{"givenName": "Bad"}], "emailAddresses": [{"value": "not an address"}]}),
    );
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    let full = c.changes(None).await.unwrap();
    assert_eq!(upserts(&full), vec![good]);
    let mut failed: Vec<_> = full.failures.iter().map(|f| f.id.clone()).collect();
    failed.sort();
    let mut want = vec![nameless, bad_mail];
    want.sort();
    assert_eq!(failed, want);
    assert!(full.failures.iter().all(|f| f.error.kind() == ErrorKind::InvalidItem));
}

#[tokio::test]
async fn faults_are_retried_and_tokens_refreshed_once() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    c.create_many(&new_items(0..3)).await.unwrap();
    for fault in [Fault::TooManyRequests { retry_after_ms: 0 }, Fault::Unavailable, Fault::Drop, Fault::ExpiredToken] {
        fake.reset_counts();
        let before = c.requests();
        fake.fail_next(1, fault.clone());
        let full = c.changes(None).await.unwrap_or_else(|e| panic!("{fault:?}: {e}"));
        assert_eq!(upserts(&full).len(), 3, "{fault:?}");
        let extra_token = u64::from(fault == Fault::ExpiredToken);
        assert_eq!(fake.requests(), 2 + extra_token, "{fault:?} costs one retry: {:?}", fake.counts());
        assert_eq!(c.requests() - before, fake.requests(), "the handle counts what the server saw");
    }
    // An expired access token: one refresh, then success.
    fake.expire_tokens();
    fake.reset_counts();
    c.changes(None).await.unwrap();
    assert_eq!(fake.count("oauth.token"), 1);
    // A truncated body is a clear error, not a panic.
    fake.fail_next(1, Fault::Truncated);
    let err = c.changes(None).await.unwrap_err();
    assert!(err.message().contains("truncated or non-JSON"), "{err}");
    // Throttling beyond the budget surfaces as RateLimited.
    fake.fail_rate(1.0, 7, Fault::TooManyRequests { retry_after_ms: 0 });
    let err = c.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(err.is_temporary());
    fake.clear_faults();
}

#[tokio::test]
async fn user_managed_reps_need_their_grant() {
    let (fake, p, mut rep) = common::setup(100).await;
    rep.connection = ConnectionMode::UserManaged;
    let mut access = common::access(&rep);
    let err = p.contacts(&rep, &access).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    access.grant = Some("1//revoked-or-unknown".to_owned().into());
    let err = p.contacts(&rep, &access).await.unwrap_err();
    // invalid_grant: no refresh can mend it, the rep must reconnect.
    assert_eq!(err.kind(), ErrorKind::GrantRevoked, "{err}");
    assert!(!err.to_string().contains("1//revoked"), "the grant never appears in errors: {err}");
    let grant = fake.add_refresh_token(&rep.mailbox);
    access.grant = Some(grant.clone().into());
    let c = p.contacts(&rep, &access).await.unwrap();
    assert!(c.changes(None).await.unwrap().items.is_empty());
    // Consent withdrawn after connecting: the next refresh is refused with invalid_grant.
    fake.revoke_refresh_token(&grant);
    fake.expire_tokens();
    let err = c.changes(None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GrantRevoked, "{err}");
    // Secrets stay out of Debug output.
    let dbg = format!("{:?} {:?}", p.config(), c);
    assert!(!dbg.contains("BEGIN PRIVATE KEY") && !dbg.contains("fake-client-secret"), "{dbg}");
}

#[tokio::test]
async fn one_token_per_rep_is_shared_by_both_collections() {
    let (fake, p, rep) = common::setup(100).await;
    let c = p.contacts(&rep, &common::access(&rep)).await.unwrap();
    assert_eq!(fake.count("oauth.token"), 1);
    let e = p.events(&rep, &common::access(&rep)).unwrap();
    e.changes(None).await.unwrap();
    assert_eq!(e.requests(), 1, "the cached token is reused");
    assert_eq!(fake.count("oauth.token"), 1);
    // Another rep gets its own token (its own `sub`).
    let other = common::mailbox();
    fake.add_user(&other);
    let rep2 = common::rep(&other);
    p.events(&rep2, &common::access(&rep2)).unwrap().changes(None).await.unwrap();
    assert_eq!(fake.count("oauth.token"), 2);
    drop(c);
}
