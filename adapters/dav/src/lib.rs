//! A crmsync [`Provider`] on CardDAV and CalDAV: the rep's contacts in an address book
//! ("Salesforce Sync" by default) and events in a calendar, on any DAV server (Radicale,
//! Nextcloud, iCloud, Fastmail, SOGo, …).
//!
//! Protocol by `libdav` (discovery, `sync-collection`, multiget, conditional PUT) over the
//! workspace's reqwest; vCard and iCalendar (time zones, recurrence expansion) by `calcard`. See `docs.md` for what the server must offer.

pub mod client;
pub mod collection;
pub mod config;
pub mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use crmsync_core::{Access, Collection, Kind, Provider, Rep, Result};
use secrecy::SecretString;

pub use collection::{DavCollection, Format};
pub use config::DavConfig;

use crate::client::{Auth, Session};

/// The provider; `name()` is `dav`.
#[derive(Debug)]
pub struct DavProvider {
    config: DavConfig,
}

impl DavProvider {
    pub fn new(config: DavConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }
}

#[async_trait]
impl Provider for DavProvider {
    fn name(&self) -> &str {
        "dav"
    }

    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        // The rep's own grant (user-managed) is their password; otherwise the configured secret.
        let auth = match (&access.grant, &self.config.password, &self.config.bearer_token) {
            (Some(p), _, _) | (None, Some(p), _) => Auth::Basic { user: &rep.mailbox, password: p },
            (None, None, Some(t)) => Auth::Bearer(t),
            (None, None, None) => Auth::None,
        };
        let session = Session::new(&self.config.url, auth)?;
        let (name, format) = match kind {
            Kind::Contact => (&self.config.address_book, Format::Contacts),
            Kind::Event => (&self.config.calendar, Format::Events(access.window)),
        };
        let (href, supports_sync) = session.collection(kind, name).await?;
        let supports_sync = supports_sync && self.config.sync_collection;
        let multiget_batch = self.config.multiget_batch;
        Ok(Arc::new(DavCollection { format, session, href, multiget_batch, supports_sync }))
    }

    /// The grant is the rep's password: one PROPFIND for their principal with it.
    async fn verify_grant(&self, rep: &Rep, grant: &SecretString) -> Result<()> {
        Session::new(&self.config.url, Auth::Basic { user: &rep.mailbox, password: grant })?.principal().await.map(drop)
    }
}
