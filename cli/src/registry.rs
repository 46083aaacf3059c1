//! Provider kinds: the factories that turn a config section into a provider.
//!
//! A rep names its provider by kind (`provider = "dav"`); the config file holds one top-level
//! table per kind (`[dav]`), and the factory registered under that kind checks the table when the
//! file is loaded and builds the provider from it (its secrets resolved) when a command needs it.
//! `crmsync` registers `exchange`, `google` and `dav`; a binary of your own adds more with
//! [`crate::Cli::provider`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use crmsync_core::Provider;
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The resolved secrets of a section, by field name (`client_secret`, not `client_secret_env`).
pub type Secrets = HashMap<&'static str, SecretString>;

/// Builds one kind of provider from its config section.
pub trait ProviderFactory: Send + Sync + 'static {
    /// The section's secret fields; the file gives each as `X_env = "VAR"` or `X_file = "path"`
    /// (never the value), and [`Self::build`] gets the values in [`Secrets`].
    fn secrets(&self) -> &'static [&'static str] {
        &[]
    }
    /// Check the section's shape when the file is loaded (no secrets, no network); the error is
    /// one line.
    fn check(&self, section: &Table) -> Result<(), String>;
    /// The provider; its `name()` must be the kind it is registered under.
    fn build(&self, section: &Table, secrets: Secrets) -> Result<Arc<dyn Provider>, String>;
}

/// A section as the typed config `C` (unknown keys are refused by `C`), or the one-line problem.
pub fn typed<C: DeserializeOwned>(section: &Table) -> Result<C, String> {
    Value::Table(section.clone())
        .try_into::<C>()
        .map_err(|e| e.message().split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The known kinds and their factories.
#[derive(Clone)]
pub struct Registry(BTreeMap<String, Arc<dyn ProviderFactory>>);

impl Default for Registry {
    /// The kinds `crmsync` ships: `exchange`, `google`, `dav`.
    fn default() -> Self {
        Self(BTreeMap::new()).with("exchange", Exchange).with("google", Google).with("dav", Dav)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Registry {
    /// Add (or replace) the factory of `kind`.
    pub fn with(mut self, kind: &str, factory: impl ProviderFactory) -> Self {
        self.0.insert(kind.to_owned(), Arc::new(factory));
        self
    }

    /// The factory of `kind`, or an error listing the known kinds.
    pub fn get(&self, kind: &str) -> Result<&dyn ProviderFactory, String> {
        self.0
            .get(kind)
            .map(|f| f.as_ref())
            .ok_or_else(|| format!("provider {kind:?} is unknown (expected one of: {})", self.kinds().join(", ")))
    }

    /// The known kinds, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    /// The registry of this process: the one [`crate::Cli::run`] installed, else the default.
    pub fn current() -> &'static Registry {
        CURRENT.get_or_init(Registry::default)
    }

    /// Make this the registry of the process (once; later calls are ignored).
    pub(crate) fn install(self) {
        let _ = CURRENT.set(self);
    }
}

static CURRENT: OnceLock<Registry> = OnceLock::new();

fn message(e: crmsync_core::Error) -> String {
    e.message().to_owned()
}

struct Exchange;

impl ProviderFactory for Exchange {
    fn secrets(&self) -> &'static [&'static str] {
        &["client_secret"]
    }
    fn check(&self, section: &Table) -> Result<(), String> {
        typed::<crmsync_exchange::Config>(section).map(drop)
    }
    fn build(&self, section: &Table, mut secrets: Secrets) -> Result<Arc<dyn Provider>, String> {
        let mut c: crmsync_exchange::Config = typed(section)?;
        c.client_secret = secrets.remove("client_secret");
        c.validate().map_err(message)?;
        Ok(Arc::new(crmsync_exchange::ExchangeProvider::new(c).map_err(message)?))
    }
}

struct Google;

impl ProviderFactory for Google {
    fn secrets(&self) -> &'static [&'static str] {
        &["client_secret", "private_key"]
    }
    fn check(&self, section: &Table) -> Result<(), String> {
        typed::<crmsync_google::Config>(section).map(drop)
    }
    fn build(&self, section: &Table, mut secrets: Secrets) -> Result<Arc<dyn Provider>, String> {
        let mut c: crmsync_google::Config = typed(section)?;
        c.client_secret = secrets.remove("client_secret");
        c.private_key = secrets.remove("private_key");
        c.validate().map_err(message)?;
        Ok(Arc::new(crmsync_google::GoogleProvider::new(c).map_err(message)?))
    }
}

/// CardDAV/CalDAV: `[dav] url = "https://dav.example.com/"` (plus `address_book`, `calendar`…);
/// `password_env` (Basic auth as the rep's mailbox) or `bearer_token_env`.
struct Dav;

impl ProviderFactory for Dav {
    fn secrets(&self) -> &'static [&'static str] {
        &["password", "bearer_token"]
    }
    fn check(&self, section: &Table) -> Result<(), String> {
        typed::<crmsync_dav::DavConfig>(section).map(drop)
    }
    fn build(&self, section: &Table, mut secrets: Secrets) -> Result<Arc<dyn Provider>, String> {
        let mut c: crmsync_dav::DavConfig = typed(section)?;
        c.password = secrets.remove("password");
        c.bearer_token = secrets.remove("bearer_token");
        Ok(Arc::new(crmsync_dav::DavProvider::new(c).map_err(message)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_list_the_known_ones_and_added_kinds_resolve() {
        let e = Registry::default().get("lotus").err().unwrap();
        assert_eq!(e, "provider \"lotus\" is unknown (expected one of: dav, exchange, google)");
        let r = Registry::default().with("lotus", Dav);
        assert!(r.get("lotus").is_ok());
        assert_eq!(r.kinds(), ["dav", "exchange", "google", "lotus"]);
    }

    #[test]
    fn sections_are_checked_and_built_by_their_kind() {
        let r = Registry::default();
        let t: Table = toml::from_str("url = \"http://127.0.0.1:9/\"\naddress_bok = \"x\"").unwrap();
        assert!(r.get("dav").unwrap().check(&t).unwrap_err().contains("address_bok"));
        let t: Table = toml::from_str("url = \"not a url\"").unwrap();
        let dav = r.get("dav").unwrap();
        dav.check(&t).unwrap();
        assert!(dav.build(&t, Secrets::new()).err().unwrap().contains("dav url \"not a url\""));
        let t: Table = toml::from_str("url = \"http://127.0.0.1:9/\"").unwrap();
        assert_eq!(dav.build(&t, Secrets::new()).unwrap().name(), "dav");
    }
}
