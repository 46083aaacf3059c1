//! Decorators that simulate a crash between a remote write and the link write that should
//! follow it: the wrapped write happens, then the call fails as if the process had died.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::Rep;
use crate::error::{Error, Result};
use crate::model::Kind;
use crate::port::*;

/// Shared trigger: armed with a number of record writes, it lets that many through and fails
/// the call that reaches the limit (after that call's writes landed).
#[derive(Clone, Debug, Default)]
pub struct CrashSwitch(Arc<Mutex<Option<u64>>>);

impl CrashSwitch {
    /// Crash once `writes` more records have been written.
    pub fn arm(&self, writes: u64) {
        *self.0.lock().expect("poisoned") = Some(writes);
    }
    pub fn disarm(&self) {
        *self.0.lock().expect("poisoned") = None;
    }
    /// Whether the switch is still armed (it disarms itself when it fires).
    pub fn armed(&self) -> bool {
        self.0.lock().expect("poisoned").is_some()
    }
    fn after_writes(&self, n: usize) -> Result<()> {
        let mut g = self.0.lock().expect("poisoned");
        if let Some(left) = g.as_mut() {
            if *left <= n as u64 {
                *g = None;
                return Err(Error::unexpected("simulated crash after the remote write, before the link write"));
            }
            *left -= n as u64;
        }
        Ok(())
    }
}

/// A collection whose writes can "crash" (see [`CrashSwitch`]). Forwards every method.
#[derive(Debug)]
pub struct CrashingCollection {
    inner: Arc<dyn Collection>,
    switch: CrashSwitch,
}

impl CrashingCollection {
    pub fn new(inner: Arc<dyn Collection>, switch: CrashSwitch) -> Self {
        Self { inner, switch }
    }
}

#[async_trait]
impl Collection for CrashingCollection {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        self.inner.changes(cursor).await
    }
    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        self.inner.get_many(ids).await
    }
    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        self.inner.find(keys).await
    }
    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        let r = self.inner.create_many(items).await?;
        self.switch.after_writes(items.len())?;
        Ok(r)
    }
    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        let r = self.inner.update_many(items).await?;
        self.switch.after_writes(items.len())?;
        Ok(r)
    }
    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        let r = self.inner.delete_many(ids).await?;
        self.switch.after_writes(ids.len())?;
        Ok(r)
    }
    fn requests(&self) -> u64 {
        self.inner.requests()
    }
}

/// A CRM whose collections crash on the shared switch.
#[derive(Debug)]
pub struct CrashingCrm {
    pub inner: Arc<dyn Crm>,
    pub switch: CrashSwitch,
}

#[async_trait]
impl Crm for CrashingCrm {
    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        let inner = self.inner.collection(rep, kind, access).await?;
        Ok(Arc::new(CrashingCollection { inner, switch: self.switch.clone() }))
    }
    async fn find_users(&self, name: &str) -> Result<Vec<CrmUser>> {
        self.inner.find_users(name).await
    }
    async fn permissions(&self, user_id: &str) -> Result<Vec<String>> {
        self.inner.permissions(user_id).await
    }
}

/// A provider whose collections crash on the shared switch.
#[derive(Debug)]
pub struct CrashingProvider {
    pub inner: Arc<dyn Provider>,
    pub switch: CrashSwitch,
}

#[async_trait]
impl Provider for CrashingProvider {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>> {
        let inner = self.inner.collection(rep, kind, access).await?;
        Ok(Arc::new(CrashingCollection { inner, switch: self.switch.clone() }))
    }
    async fn verify_grant(&self, rep: &Rep, grant: &secrecy::SecretString) -> Result<()> {
        self.inner.verify_grant(rep, grant).await
    }
}
