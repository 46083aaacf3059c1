//! A crmsync [`Provider`] on CardDAV: the rep's contacts in an address book ("Salesforce Sync"
//! by default) on any CardDAV server (Radicale, Nextcloud, iCloud, Fastmail, SOGo, …).
//!
//! Protocol by `libdav` (discovery, `sync-collection`, multiget, conditional PUT) over the
//! workspace's reqwest; vCard by `calcard`. See `docs.md` for what the server must offer.

pub mod client;
pub mod config;
pub mod contacts;
pub mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use crmsync_core::{Access, Collection, Error, ErrorKind, Kind, Provider, Rep, Result};

pub use config::DavConfig;
pub use contacts::DavContacts;

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
        if kind == Kind::Event {
            return Err(Error::new(ErrorKind::Unsupported, "the dav provider syncs contacts only so far"));
        }
        // The rep's own grant (user-managed) is their password; otherwise the configured secret.
        let auth = match (&access.grant, &self.config.password, &self.config.bearer_token) {
            (Some(p), _, _) | (None, Some(p), _) => Auth::Basic { user: &rep.mailbox, password: p },
            (None, None, Some(t)) => Auth::Bearer(t),
            (None, None, None) => Auth::None,
        };
        let session = Session::new(&self.config.url, auth)?;
        let (href, supports_sync) = session.address_book(&self.config.address_book).await?;
        Ok(Arc::new(DavContacts { session, href, multiget_batch: self.config.multiget_batch, supports_sync }))
    }
}
