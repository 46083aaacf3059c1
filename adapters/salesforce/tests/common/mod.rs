//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use crmsync_core::{Access, Collection, ConnectionMode, Crm, Kind, Rep, SyncConfig, Window};
use crmsync_salesforce::SalesforceCrm;
use crmsync_salesforce::fake::FakeSalesforce;

pub fn rep(user_id: &str) -> Rep {
    Rep {
        id: format!("rep-{user_id}"),
        name: format!("Rep {user_id}"),
        crm_user_id: user_id.to_owned(),
        provider: "exchange".into(),
        mailbox: format!("{user_id}@example.com"),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    }
}

pub fn access() -> Access {
    let now = Utc::now();
    Access { window: Window { start: now - Duration::days(30), end: now + Duration::days(365) }, grant: None }
}

/// A fake org, an adapter pointed at it, and a fresh rep.
pub async fn setup() -> (FakeSalesforce, SalesforceCrm, Rep) {
    let fake = FakeSalesforce::start().await;
    let crm = SalesforceCrm::new(fake.config()).expect("valid config");
    let user = fake.add_user("Rita Rep", &[]);
    (fake, crm, rep(&user))
}

pub async fn coll(crm: &SalesforceCrm, rep: &Rep, kind: Kind) -> Arc<dyn Collection> {
    crm.collection(rep, kind, &access()).await.expect("collection")
}
