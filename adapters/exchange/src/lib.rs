//! crmsync provider for Exchange / Microsoft 365 through Microsoft Graph v1.0.
//!
//! - Contacts: the rep's contacts folder (default `Salesforce_Sync`, created when missing),
//!   read through `/contactFolders/{id}/contacts/delta`; an Outlook category of the same name
//!   on a contact outside the folder is reported as `category_not_folder` and never synced.
//! - Events: the primary calendar inside the event window through `/calendarView/delta`
//!   (occurrences and exceptions, never series masters).
//! - Writes go through `$batch` (≤ 20), conditional on `@odata.etag`; the sync key is a
//!   `singleValueExtendedProperty` ([`SYNC_KEY_PROPERTY`]).
//! - Admin-managed reps use an app-only token and `/users/{mailbox}`; user-managed reps use
//!   their own refresh token (the engine's grant) and `/me`.
//!
//! With feature `fake`, [`fake::FakeGraph`] is a stateful Graph on loopback.
//! Service quirks: `docs.md` in this crate.

#![warn(missing_docs)]

pub mod client;
mod collection;
pub mod config;
mod contacts;
mod events;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mapping;

use std::sync::Arc;

use async_trait::async_trait;
use crmsync_core::{Access, Collection, ConnectionMode, Error, ErrorKind, Kind, Provider, Rep, Result, Window};
use secrecy::SecretString;

pub use collection::GraphCollection;
pub use config::Config;
pub use mapping::SYNC_KEY_PROPERTY;

use client::{Graph, Principal, Session};
use collection::Scope;

/// The Exchange provider: hands out the rep's contacts folder and calendar collections.
#[derive(Debug)]
pub struct ExchangeProvider {
    graph: Arc<Graph>,
}

impl ExchangeProvider {
    /// A provider over `config` (validated); tokens are cached per identity across collections.
    pub fn new(config: Config) -> Result<Self> {
        Ok(Self { graph: Arc::new(Graph::new(config)?) })
    }

    /// The concrete collection (same as [`Provider::collection`], without the `dyn`).
    pub async fn open(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<GraphCollection> {
        let (principal, root) = match rep.connection {
            ConnectionMode::AdminManaged => {
                let mb = rep.mailbox.trim();
                if mb.is_empty() || mb.contains(['/', '?', '#']) {
                    return Err(Error::invalid_config(format!(
                        "exchange: rep {} has an unusable mailbox {:?}",
                        rep.id, rep.mailbox
                    )));
                }
                (Principal::App, format!("/users/{mb}"))
            }
            ConnectionMode::UserManaged => {
                let grant = access.grant.clone().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unauthenticated,
                        format!("exchange: rep {} has no grant; they must connect", rep.id),
                    )
                })?;
                (Principal::Delegated(grant), "/me".to_owned())
            }
        };
        let session = Session::new(self.graph.clone(), principal, root);
        let (scope, reader): (Scope, &'static dyn collection::Reader) = match kind {
            Kind::Contact => {
                let name = rep.config.contacts.folder.trim();
                if name.is_empty() {
                    return Err(Error::invalid_config("exchange: the contacts folder name is empty"));
                }
                let id =
                    contacts::open_folder(&session, name).await.map_err(|e| e.context("exchange contacts folder"))?;
                (Scope::Folder { id, name: name.to_owned() }, &contacts::Contacts)
            }
            Kind::Event => {
                let w = Window {
                    start: mapping::floor_day(access.window.start),
                    end: mapping::ceil_day(access.window.end),
                };
                (Scope::Calendar(w), &events::Events)
            }
        };
        Ok(GraphCollection::new(kind, reader, session, scope))
    }
}

#[async_trait]
impl Provider for ExchangeProvider {
    fn name(&self) -> &str {
        "exchange"
    }

    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        Ok(Arc::new(self.open(rep, kind, access).await?))
    }

    async fn verify_grant(&self, _rep: &Rep, grant: &SecretString) -> Result<()> {
        let session = Session::new(self.graph.clone(), Principal::Delegated(grant.clone()), "/me".to_owned());
        session.fetch_token().await.map(drop)
    }
}
