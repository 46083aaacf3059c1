//! Shared helpers for the fake-backed tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use crmsync_core::{Access, ConnectionMode, Rep, SyncConfig};
use crmsync_google::fake::FakeGoogle;
use crmsync_google::{Config, GoogleProvider};

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh mailbox name.
pub fn mailbox() -> String {
    format!("rep{}@example.com", N.fetch_add(1, Ordering::Relaxed))
}

pub fn rep(mailbox: &str) -> Rep {
    Rep {
        id: format!("rep-{mailbox}"),
        name: mailbox.to_owned(),
        crm_user_id: "005000001".into(),
        provider: "google".into(),
        mailbox: mailbox.to_owned(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    }
}

pub fn access(rep: &Rep) -> Access {
    Access { window: rep.config.window(Utc::now()), grant: None }
}

pub fn provider(fake: &FakeGoogle, page_size: usize) -> GoogleProvider {
    GoogleProvider::new(Config { page_size, ..fake.config() }).expect("valid config")
}

/// A fake, a provider on it and a fresh user.
pub async fn setup(page_size: usize) -> (FakeGoogle, GoogleProvider, Rep) {
    let fake = FakeGoogle::start().await;
    let p = provider(&fake, page_size);
    let mb = mailbox();
    fake.add_user(&mb);
    (fake, p, rep(&mb))
}
