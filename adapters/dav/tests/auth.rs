//! Basic auth against a Radicale with htpasswd users: the right password opens the rep's
//! address book, a wrong one is `Unauthenticated` (also when a grant is verified), and the
//! password never shows in errors.

mod common;

use chrono::Utc;
use crmsync_core::{Access, ErrorKind, Kind, Provider};
use crmsync_dav::{DavConfig, DavProvider};
use secrecy::SecretString;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_opens_the_book_and_a_wrong_password_is_unauthenticated() {
    let Some(server) = common::radicale_with_users(&[("riley", "s3cret-pass")]).await else { return };
    let access = Access { window: common::rep().config.window(Utc::now()), grant: None };
    let provider = |password: &str| {
        let mut config = DavConfig::new(&server.url);
        config.password = Some(SecretString::from(password.to_owned()));
        DavProvider::new(config).unwrap()
    };
    let c =
        provider("s3cret-pass").collection(&common::rep(), Kind::Contact, &access).await.expect("the right password");
    assert!(c.changes(None).await.unwrap().items.is_empty());
    let err =
        provider("wrong-pass").collection(&common::rep(), Kind::Contact, &access).await.expect_err("a wrong password");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!format!("{err:?}").contains("wrong-pass"), "the password stays out of errors");
    // Connecting a user-managed rep tries their grant (the password) first.
    let p = provider("anything");
    p.verify_grant(&common::rep(), &SecretString::from("s3cret-pass")).await.expect("the right grant");
    let err = p.verify_grant(&common::rep(), &SecretString::from("wrong-pass")).await.expect_err("a wrong grant");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    // The rep's own grant (user-managed) is the password.
    let access = Access { grant: Some(SecretString::from("s3cret-pass")), ..access };
    provider("wrong-pass").collection(&common::rep(), Kind::Contact, &access).await.expect("the grant is the password");
}
