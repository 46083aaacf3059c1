//! Shared helpers of the fake-backed tests.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::Utc;
use crmsync_core::{Access, Collection, ConnectionMode, Kind, Provider, Rep, SyncConfig};
use crmsync_exchange::fake::FakeGraph;
use crmsync_exchange::{Config, ExchangeProvider};
use secrecy::SecretString;

pub fn rep(mailbox: &str, connection: ConnectionMode) -> Rep {
    Rep {
        id: format!("rep-{mailbox}"),
        name: mailbox.to_owned(),
        crm_user_id: "005000000000001".into(),
        provider: "exchange".into(),
        mailbox: mailbox.to_owned(),
        connection,
        config: SyncConfig::default(),
    }
}

pub fn access(grant: Option<SecretString>) -> Access {
    Access { window: SyncConfig::default().window(Utc::now()), grant }
}

pub struct Env {
    pub fake: FakeGraph,
    pub provider: ExchangeProvider,
    pub config: Config,
}

pub async fn env(page_size: usize) -> Env {
    let fake = FakeGraph::start().await;
    let config = Config { page_size, ..fake.config() };
    let provider = ExchangeProvider::new(config.clone()).expect("provider");
    Env { fake, provider, config }
}

impl Env {
    pub async fn admin(&self, mailbox: &str, kind: Kind) -> Arc<dyn Collection> {
        self.fake.add_mailbox(mailbox);
        self.provider
            .collection(&rep(mailbox, ConnectionMode::AdminManaged), kind, &access(None))
            .await
            .expect("collection")
    }
}
