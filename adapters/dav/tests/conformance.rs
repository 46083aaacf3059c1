//! The conformance kit against the CardDAV/CalDAV provider on a real Radicale.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use crmsync_core::testkit::{Defects, Harness};
use crmsync_core::{Access, Collection, ConnectionMode, Contact, Event, Kind, Provider, Record, Rep, SyncConfig};
use tokio::sync::Mutex;

struct H {
    server: common::Radicale,
    n: AtomicUsize,
    last: Mutex<Option<Arc<dyn Collection>>>,
    sync_collection: bool,
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
        let c = self
            .server
            .provider_with(&book, self.sync_collection)
            .collection(&rep(), kind, &access)
            .await
            .expect("collection");
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

async fn harness(sync_collection: bool) -> Option<H> {
    let server = common::radicale().await?;
    Some(H { server, n: AtomicUsize::new(0), last: Mutex::new(None), sync_collection })
}

mod contacts {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Contact,
        match harness(true).await {
            Some(h) => h,
            None => return,
        }
    );
}

mod events {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Event,
        match harness(true).await {
            Some(h) => h,
            None => return,
        }
    );
}

/// The fallback for servers without `sync-collection`, forced on Radicale: the cursor is the
/// etag listing itself, so it cannot expire (a garbage one still reads as `CursorExpired`).
const LISTING: Defects = &[("expired_cursor", "an etag-listing cursor holds the whole listing and never expires")];

mod contacts_by_etag_listing {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Contact,
        match harness(false).await {
            Some(h) => h,
            None => return,
        },
        defects = LISTING
    );
}

mod events_by_etag_listing {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Event,
        match harness(false).await {
            Some(h) => h,
            None => return,
        },
        defects = LISTING
    );
}
