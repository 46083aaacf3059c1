//! crmsync provider adapter for Google Workspace.
//!
//! - Contacts: the People API contact group named by the rep's `contacts.group` (default
//!   `Salesforce Sync`), found or created on demand; membership is the scope.
//! - Events: the rep's primary calendar (Calendar API v3) inside the event window.
//!
//! Admin-managed reps authenticate with a service account and domain-wide delegation (RS256
//! JWT assertion with `sub` = the rep's mailbox); user-managed reps with their own refresh token
//! (passed in [`Access::grant`]). See `docs.md` in this crate for the services' quirks.
//!
//! With the `fake` feature, [`fake::FakeGoogle`] serves stateful People, Calendar and OAuth
//! fakes on loopback.

pub mod client;
pub mod config;
pub mod contacts;
pub mod events;
#[cfg(feature = "fake")]
// The fake's handlers return a ready error response as `Err`.
#[allow(clippy::result_large_err)]
pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use crmsync_core::{Access, Collection, ConnectionMode, Error, ErrorKind, Kind, Provider, Rep, Result};
use secrecy::SecretString;

pub use client::parse_error;
pub use config::Config;
pub use contacts::ContactsCollection;
pub use events::{EventsCollection, NoSync};

use client::{Auth, Client, Session};

/// The Google provider: hands out each rep's contact-group and primary-calendar collections.
#[derive(Debug, Clone)]
pub struct GoogleProvider {
    client: Arc<Client>,
}

impl GoogleProvider {
    /// A provider for this configuration (validated here).
    pub fn new(config: Config) -> Result<Self> {
        Ok(Self { client: Arc::new(Client::new(config)?) })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.client.cfg
    }

    fn session(&self, rep: &Rep, access: &Access) -> Result<Session> {
        let auth = match rep.connection {
            ConnectionMode::AdminManaged => {
                if !self.client.has_service_account() {
                    return Err(Error::invalid_config(
                        "google: admin-managed rep but no service account (service_account_email + private_key) configured",
                    ));
                }
                Auth::ServiceAccount { subject: rep.mailbox.clone() }
            }
            ConnectionMode::UserManaged => match &access.grant {
                Some(g) => Auth::Refresh { grant: g.clone() },
                None => {
                    return Err(Error::new(
                        ErrorKind::Unauthenticated,
                        format!("google: rep {} has no grant; the rep must connect their Google account", rep.id),
                    ));
                }
            },
        };
        Ok(Session::new(self.client.clone(), auth, &rep.mailbox))
    }

    /// The rep's contact group as a concrete collection (finding or creating the group).
    pub async fn contacts(&self, rep: &Rep, access: &Access) -> Result<ContactsCollection> {
        let group = if rep.config.contacts.group.trim().is_empty() {
            "Salesforce Sync"
        } else {
            rep.config.contacts.group.trim()
        };
        ContactsCollection::open(self.session(rep, access)?, group).await
    }

    /// The rep's primary calendar as a concrete collection.
    pub fn events(&self, rep: &Rep, access: &Access) -> Result<EventsCollection> {
        let no_sync = NoSync {
            marker: rep.config.events.no_sync_marker.clone(),
            property: self.client.cfg.no_sync_marker_property.clone(),
            color_id: self.client.cfg.no_sync_color_id.clone(),
        };
        Ok(EventsCollection::new(self.session(rep, access)?, access.window, no_sync))
    }
}

#[async_trait]
impl Provider for GoogleProvider {
    fn name(&self) -> &str {
        "google"
    }

    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        Ok(match kind {
            Kind::Contact => Arc::new(self.contacts(rep, access).await?),
            Kind::Event => Arc::new(self.events(rep, access)?),
        })
    }

    async fn verify_grant(&self, rep: &Rep, grant: &SecretString) -> Result<()> {
        let session = Session::new(self.client.clone(), Auth::Refresh { grant: grant.clone() }, &rep.mailbox);
        session.fetch_token().await.map(drop)
    }
}
