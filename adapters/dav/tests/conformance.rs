//! The conformance kit against the CardDAV/CalDAV provider on a real Radicale (by
//! `sync-collection` and by etag listing) and on Xandikos.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::Utc;
use crmsync_core::testkit::Harness;
use crmsync_core::{Access, Collection, Contact, Event, Kind, Provider, Record};
use tokio::sync::Mutex;

struct H {
    server: common::Server,
    n: AtomicUsize,
    last: Mutex<Option<Arc<dyn Collection>>>,
    sync_collection: bool,
    /// Why this server's sync tokens cannot be made to expire, if they cannot.
    no_expiry: Option<&'static str>,
}

#[async_trait]
impl Harness for H {
    async fn collection(&self, kind: Kind) -> Arc<dyn Collection> {
        let book = format!("Kit {}", self.n.fetch_add(1, Ordering::Relaxed));
        let access = Access { window: common::rep().config.window(Utc::now()), grant: None };
        let c = self
            .server
            .provider_with(&book, self.sync_collection)
            .collection(&common::rep(), kind, &access)
            .await
            .expect("collection");
        *self.last.lock().await = Some(c.clone());
        c
    }
    async fn expire_cursors(&self, kind: Kind) -> Result<(), String> {
        if !self.sync_collection {
            return Err("an etag-listing cursor is the whole listing itself: it cannot expire".into());
        }
        if let Some(why) = self.no_expiry {
            return Err(why.into());
        }
        let last = self.last.lock().await.clone().expect("a collection");
        common::expire(&self.server, last.as_ref(), kind).await;
        Ok(())
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
    Some(on(common::radicale().await?, sync_collection, None))
}

/// Xandikos keeps every sync token (its store is a git history); the harness can only make
/// Radicale forget them.
async fn xandikos() -> Option<H> {
    let why = "Xandikos keeps every sync token in its git history; the harness cannot expire one";
    Some(on(common::xandikos().await?, true, Some(why)))
}

fn on(server: common::Server, sync_collection: bool, no_expiry: Option<&'static str>) -> H {
    H { server, n: AtomicUsize::new(0), last: Mutex::new(None), sync_collection, no_expiry }
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

/// The fallback for servers without `sync-collection`, forced on Radicale.
mod contacts_by_etag_listing {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Contact,
        match harness(false).await {
            Some(h) => h,
            None => return,
        }
    );
}

mod events_by_etag_listing {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Event,
        match harness(false).await {
            Some(h) => h,
            None => return,
        }
    );
}

mod contacts_on_xandikos {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Contact,
        match xandikos().await {
            Some(h) => h,
            None => return,
        }
    );
}

mod events_on_xandikos {
    use super::*;
    crmsync_core::conformance_tests!(
        Kind::Event,
        match xandikos().await {
            Some(h) => h,
            None => return,
        }
    );
}
