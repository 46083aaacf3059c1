#![warn(missing_docs)]
//! crmsync's CRM port for Salesforce, over the REST API.
//!
//! [`SalesforceCrm`] implements [`crmsync_core::Crm`]: it hands out a rep's contacts (scoped by
//! the rep's contact filter) and events (owned by the rep, inside the event window), finds
//! users by name and reports a user's `Manage Users` / `Manage Sync` permissions. See
//! `docs.md` in this crate for the one-time org setup and the service's quirks.
//!
//! With the `fake` feature, [`fake::FakeSalesforce`] is a stateful Salesforce org on loopback
//! that speaks the same REST protocol (SOQL subset, paging, Collections, upsert, errors).

mod client;
mod collection;
pub mod config;
pub mod mapping;
mod relations;
pub mod soql;

#[cfg(feature = "fake")]
pub mod fake;

use std::sync::Arc;

use async_trait::async_trait;
use crmsync_core::{Access, Collection, Crm, CrmUser, Error, Kind, MANAGE_SYNC, MANAGE_USERS, Rep, Result};
use crmsync_http::Counter;
use serde_json::Value;

pub use client::{ApiUsage, parse_error};
pub use collection::{MAX_BATCH, QUERY_PAGE};
pub use config::{Config, RetryConfig};
pub use relations::MAX_RELATED;

use client::Client;
use collection::{Scope, SfCollection};
use soql::quote;

/// The developer name of the custom permission that grants Reset Sync (with Manage Users).
pub const MANAGE_SYNC_PERMISSION: &str = "Manage_Sync";

/// The Salesforce CRM port.
#[derive(Debug)]
pub struct SalesforceCrm {
    client: Arc<Client>,
    /// Requests of `find_users` / `permissions` (collections count their own).
    requests: Counter,
    /// E-mail → Contact Id per owner from the last full contact read (for Event `WhoId`).
    directory: collection::Directory,
    /// The last org-wide change read per kind, shared by the reps.
    feeds: collection::Feeds,
}

impl SalesforceCrm {
    /// Check the config and build the client. No request is made until first use.
    pub fn new(config: Config) -> Result<Self> {
        Ok(Self {
            client: Arc::new(Client::new(config)?),
            requests: Counter::new(),
            directory: Default::default(),
            feeds: Default::default(),
        })
    }

    /// The org's daily API usage as the last response's `Sforce-Limit-Info` reported it.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        self.client.usage()
    }

    /// Requests made by `find_users` and `permissions`.
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    fn check_user_id(id: &str) -> Result<()> {
        if collection::is_id(id) {
            Ok(())
        } else {
            Err(Error::invalid_config(format!("salesforce: {id:?} is not a Salesforce user id")))
        }
    }
}

#[async_trait]
impl Crm for SalesforceCrm {
    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        Self::check_user_id(&rep.crm_user_id)?;
        let scope = match kind {
            Kind::Contact => Scope::from_filter(&rep.config.contacts.filter)?,
            Kind::Event => Scope::Owned,
        };
        Ok(Arc::new(SfCollection {
            client: self.client.clone(),
            kind,
            owner: rep.crm_user_id.clone(),
            rep: rep.id.clone(),
            scope,
            window: access.window,
            requests: Counter::new(),
            directory: self.directory.clone(),
            feeds: self.feeds.clone(),
        }))
    }

    async fn find_users(&self, name: &str) -> Result<Vec<CrmUser>> {
        let q = format!(
            "SELECT Id, Name, Email FROM User WHERE Name LIKE {} ORDER BY Name LIMIT 200",
            soql::quote_like("%", name.trim(), "%")
        );
        let res = self.client.query(&self.requests, &q, false).await?;
        Ok(res
            .records
            .iter()
            .filter_map(|r| {
                Some(CrmUser {
                    id: r.get("Id")?.as_str()?.to_owned(),
                    name: r.get("Name")?.as_str()?.to_owned(),
                    email: r.get("Email").and_then(Value::as_str).map(str::to_owned),
                })
            })
            .collect())
    }

    async fn permissions(&self, user_id: &str) -> Result<Vec<String>> {
        Self::check_user_id(user_id)?;
        // Every user has an assignment of their profile's own permission set, so this one query
        // covers the profile and the permission sets.
        let q = format!(
            "SELECT PermissionSetId, PermissionSet.PermissionsManageUsers FROM PermissionSetAssignment WHERE AssigneeId = {}",
            quote(user_id)
        );
        let rows = self.client.query(&self.requests, &q, false).await?.records;
        if rows.is_empty() {
            return Err(Error::not_found(format!("salesforce: no user {user_id} (or no permission set assignments)")));
        }
        let mut out = vec![];
        let manage_users = rows.iter().any(|r| {
            r.get("PermissionSet").and_then(|p| p.get("PermissionsManageUsers")).and_then(Value::as_bool) == Some(true)
        });
        if manage_users {
            out.push(MANAGE_USERS.to_owned());
        }
        let sets: Vec<String> =
            rows.iter().filter_map(|r| r.get("PermissionSetId").and_then(Value::as_str)).map(quote).collect();
        let q = format!(
            "SELECT Id FROM SetupEntityAccess WHERE SetupEntityType = 'CustomPermission' AND ParentId IN {} \
             AND SetupEntityId IN (SELECT Id FROM CustomPermission WHERE DeveloperName = {}) LIMIT 1",
            soql::in_list(&sets),
            quote(MANAGE_SYNC_PERMISSION)
        );
        if !self.client.query(&self.requests, &q, false).await?.records.is_empty() {
            out.push(MANAGE_SYNC.to_owned());
        }
        Ok(out)
    }
}
