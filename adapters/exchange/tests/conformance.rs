//! The core conformance kit against the adapter pointed at its fake.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use crmsync_core::testkit::Harness;
use crmsync_core::{Collection, Contact, Event, Kind, Record};

struct H {
    env: common::Env,
    n: AtomicUsize,
}

#[async_trait]
impl Harness for H {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        let n = self.n.fetch_add(1, Ordering::Relaxed);
        self.env.admin(&format!("kit{n}@contoso.com"), kind).await
    }
    async fn expire_cursors(&self, _kind: Kind) -> Result<(), String> {
        self.env.fake.expire_cursors();
        Ok(())
    }
    fn invalid_record(&self, kind: Kind) -> Record {
        match kind {
            Kind::Contact => Record::Contact(Contact { company: Some("Nameless Ltd".into()), ..Default::default() }),
            Kind::Event => {
                let t = Utc::now() + Duration::days(3);
                Record::Event(Event::new("Backwards", t, t - Duration::hours(1)))
            }
        }
    }
    fn page_size(&self, _kind: Kind) -> usize {
        self.env.config.page_size
    }
}

async fn harness() -> H {
    H { env: common::env(7).await, n: AtomicUsize::new(0) }
}

mod contacts {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Contact, harness().await);
}

mod events {
    use super::*;
    crmsync_core::conformance_tests!(Kind::Event, harness().await);
}
