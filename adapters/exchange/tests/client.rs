//! Auth modes, token refresh, retries and fault handling against the fake.

mod common;

use crmsync_core::{ConnectionMode, Contact, ErrorKind, Kind, NewItem, Provider, Side, SyncKey};
use crmsync_exchange::fake::Fault;
use crmsync_exchange::{Config, ExchangeProvider};
use secrecy::SecretString;

fn person(i: usize) -> Contact {
    Contact { given_name: Some(format!("G{i}")), family_name: Some(format!("F{i}")), ..Default::default() }
}

#[tokio::test]
async fn user_managed_reps_use_their_refresh_token_and_me() {
    let env = common::env(10).await;
    let grant = env.fake.add_refresh_token("pat@contoso.com");
    env.fake.add_mailbox("quinn@contoso.com");
    let rep = common::rep("pat@contoso.com", ConnectionMode::UserManaged);
    let c = env
        .provider
        .collection(&rep, Kind::Contact, &common::access(Some(SecretString::from(grant.clone()))))
        .await
        .expect("delegated collection");
    let key = SyncKey::derive("rep-pat", Kind::Contact, Side::Crm, "003A");
    c.create_many(&[NewItem { sync_key: key.clone(), record: person(1).into() }])
        .await
        .unwrap()
        .remove(0)
        .expect("created");
    assert_eq!(env.fake.count_by_sync_key("pat@contoso.com", key.as_str()), 1, "written to the grant's own mailbox");
    assert!(env.fake.contacts("quinn@contoso.com").is_empty());
    let dbg = format!("{c:?}");
    assert!(
        dbg.contains("/me") && !dbg.contains(&grant) && !dbg.contains("G1"),
        "no secrets or records in Debug: {dbg}"
    );
    // A grant that is unknown (revoked, expired) is GrantRevoked (the rep must reconnect), not a
    // crash and not a retry.
    let err = env
        .provider
        .collection(&rep, Kind::Contact, &common::access(Some(SecretString::from("0.AXEA-revoked".to_owned()))))
        .await
        .expect_err("bad grant");
    assert_eq!(err.kind(), ErrorKind::GrantRevoked, "{err}");
    assert!(!err.to_string().contains("0.AXEA-revoked"), "the grant never appears in errors: {err}");
    // No grant at all.
    let err = env.provider.collection(&rep, Kind::Event, &common::access(None)).await.expect_err("no grant");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_transparently() {
    let env = common::env(10).await;
    let mb = "ray@contoso.com";
    env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(1));
    let c = env.admin(mb, Kind::Contact).await;
    env.fake.expire_tokens();
    env.fake.reset_counts();
    let full = c.changes(None).await.expect("read after expiry");
    assert_eq!(full.items.len(), 1);
    assert_eq!(env.fake.count("token"), 1, "one new token");
    assert_eq!(env.fake.count("contacts.delta"), 2, "the refused request is sent again once");
    // A 401 on a request whose token is fine otherwise also refreshes once.
    env.fake.reset_counts();
    env.fake.fail_next(1, Fault::ExpiredToken);
    c.changes(None).await.expect("read after a 401");
    assert_eq!(env.fake.count("token"), 1);
}

#[tokio::test]
async fn throttling_outages_and_dropped_connections_are_retried() {
    let env = common::env(10).await;
    let mb = "sam@contoso.com";
    for i in 0..3 {
        env.fake.insert_contact(mb, Some("Salesforce_Sync"), person(i));
    }
    let c = env.admin(mb, Kind::Contact).await;
    let before = c.requests();
    env.fake.fail_next(1, Fault::TooManyRequests { retry_after_ms: 4 });
    env.fake.fail_next(2, Fault::Unavailable);
    env.fake.fail_next(3, Fault::Drop);
    let full = c.changes(None).await.expect("read survives three faults");
    assert_eq!(full.items.len(), 3);
    // 3 failed tries + 1 delta page + 1 category query.
    assert_eq!(c.requests() - before, 5, "the handle counts every try");
}

#[tokio::test]
async fn a_spent_retry_budget_is_a_temporary_error() {
    let env = common::env(10).await;
    let mb = "tia@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    for n in 1..=10 {
        env.fake.fail_next(n, Fault::TooManyRequests { retry_after_ms: 0 });
    }
    let err = c.changes(None).await.expect_err("budget spent");
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(err.is_temporary());
}

#[tokio::test]
async fn a_non_json_reply_is_a_clear_error() {
    let env = common::env(10).await;
    let c = env.admin("uma@contoso.com", Kind::Contact).await;
    env.fake.fail_next(1, Fault::Truncated);
    let err = c.changes(None).await.expect_err("HTML is not Graph");
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.message().contains("not JSON"), "{err}");
}

#[tokio::test]
async fn seeded_random_faults_do_not_lose_or_duplicate_anything() {
    let env = common::env(5).await;
    let mb = "val@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    env.fake.fail_rate(0.15, 42, Fault::Unavailable);
    let items: Vec<NewItem> = (0..12)
        .map(|i| NewItem {
            sync_key: SyncKey::derive("rep-v", Kind::Contact, Side::Crm, &i.to_string()),
            record: person(i).into(),
        })
        .collect();
    for r in c.create_many(&items).await.expect("create under faults") {
        r.expect("created");
    }
    let full = c.changes(None).await.expect("read under faults");
    env.fake.clear_faults();
    assert_eq!(full.items.len(), 12);
    for it in &items {
        assert_eq!(env.fake.count_by_sync_key(mb, it.sync_key.as_str()), 1);
    }
}

#[tokio::test]
async fn wrong_app_credentials_are_unauthenticated_and_secrets_stay_hidden() {
    let env = common::env(10).await;
    env.fake.add_mailbox("wes@contoso.com");
    let cfg = Config { client_secret: Some(SecretString::from("wrong-secret-value".to_owned())), ..env.config.clone() };
    let p = ExchangeProvider::new(cfg).expect("provider");
    assert!(!format!("{p:?}").contains("wrong-secret-value"));
    assert!(!format!("{:?}", env.config).contains(crmsync_exchange::fake::CLIENT_SECRET));
    let err = p
        .collection(&common::rep("wes@contoso.com", ConnectionMode::AdminManaged), Kind::Contact, &common::access(None))
        .await
        .expect_err("bad secret");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.to_string().contains("wrong-secret-value"));
    let err = ExchangeProvider::new(Config { tenant: String::new(), ..env.config.clone() }).expect_err("no tenant");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn a_lost_create_reply_does_not_duplicate() {
    let env = common::env(10).await;
    let mb = "xan@contoso.com";
    let c = env.admin(mb, Kind::Contact).await;
    let items: Vec<NewItem> = (0..3)
        .map(|i| NewItem {
            sync_key: SyncKey::derive("rep-x", Kind::Contact, Side::Crm, &i.to_string()),
            record: person(i).into(),
        })
        .collect();
    // Request 1 is the sync-key look-up (a $batch of GETs), request 2 the create $batch:
    // applied, then the reply is lost.
    env.fake.fail_next(2, Fault::LostReply);
    let res = c.create_many(&items).await.expect("create_many");
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    for it in &items {
        assert_eq!(env.fake.count_by_sync_key(mb, it.sync_key.as_str()), 1, "no duplicate after a lost reply");
    }
    assert_eq!(env.fake.contacts(mb).len(), 3);
    // The look-up, the create, the look-up after the lost reply: the create was not sent again.
    assert_eq!(env.fake.count("$batch"), 3, "nothing was sent twice");
}
