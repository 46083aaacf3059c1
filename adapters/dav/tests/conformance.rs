//! The conformance kit against the CardDAV/CalDAV provider on a real Radicale.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use crmsync_core::testkit::Harness;
use crmsync_core::{Access, Collection, ConnectionMode, Contact, Event, Kind, Provider, Record, Rep, SyncConfig};
use tokio::sync::Mutex;

struct H {
    server: common::Radicale,
    n: AtomicUsize,
    last: Mutex<Option<Arc<dyn Collection>>>,
}

pub fn rep() -> Rep {
    Rep {
        id: "rep".into(),
        name: "Rep".into(),
        crm_user_id: "u1".into(),
        provider: "dav".into(),
        mailbox: "rep".into(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    }
}

#[async_trait]
impl Harness for H {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        let book = format!("Kit {}", self.n.fetch_add(1, Ordering::Relaxed));
        let access = Access { window: rep().config.window(Utc::now()), grant: None };
        let c = self.server.provider(&book).collection(&rep(), kind, &access).await.expect("collection");
        *self.last.lock().await = Some(c.clone());
        c
    }
    async fn expire_cursors(&self, kind: Kind) {
        let last = self.last.lock().await.clone().expect("a collection");
        common::expire(&self.server, last.as_ref(), kind).await;
    }
    fn invalid_record(&self, kind: Kind) -> Record {
        match kind {
            // Neither a name nor an e-mail address.
            Kind::Contact => Record::Contact(Contact { company: Some("Nameless Ltd".into()), ..Default::default() }),
            Kind::Event => {
                let start = Utc::now() + chrono::Duration::days(3);
                Record::Event(Event::new("Backwards", start, start - chrono::Duration::hours(1)))
            }
        }
    }
    fn page_size(&self, _kind: Kind) -> usize {
        5
    }
}

async fn harness() -> Option<H> {
    Some(H { server: common::radicale().await?, n: AtomicUsize::new(0), last: Mutex::new(None) })
}

mod contacts {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Contact,
        match harness().await {
            Some(h) => h,
            None => return,
        }
    );
}

mod events {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Event,
        match harness().await {
            Some(h) => h,
            None => return,
        }
    );
}
