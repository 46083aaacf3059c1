//! The config file (TOML) and the wiring of store, adapters and engine from it.
//!
//! ```toml
//! [store]
//! url = "crmsync.db"                      # SQLite file (relative to this file) or postgres://…
//! # url_env = "CRMSYNC_STORE_URL"          # …or an environment variable holding the URL
//!
//! [salesforce]                             # crmsync_salesforce::Config fields
//! instance_url = "https://acme.my.salesforce.com"
//! client_id = "3MVG9…"
//! client_secret_env = "SF_CLIENT_SECRET"   # the NAME of the variable holding the secret
//!
//! [exchange]                               # crmsync_exchange::Config fields
//! tenant = "contoso.onmicrosoft.com"
//! client_id = "…"
//! client_secret_env = "GRAPH_SECRET"
//!
//! [google]                                 # crmsync_google::Config fields
//! client_id = "…apps.googleusercontent.com"
//! client_secret_env = "GOOGLE_CLIENT_SECRET"
//! # service_account_email = "…"; private_key_file = "sa-key.pem"
//!
//! [dav]                                    # crmsync_dav::DavConfig fields (CardDAV/CalDAV)
//! url = "https://dav.example.com/"
//! password_env = "DAV_PASSWORD"
//!
//! [engine]
//! concurrency = 4                          # cycles at once in `sync` and `worker` (1 to 64)
//!
//! [sync]                                   # the default SyncConfig (docs/behaviour.md §2)
//! events.days_ahead = 90
//!
//! [[reps]]
//! name = "Erin Exchange"
//! crm_user_id = "005…"
//! provider = "exchange"                    # a kind with its table: "google", "dav", or one a
//!                                          # custom binary registers (see `crate::registry`)
//! mailbox = "erin@contoso.example"
//! connection = "admin_managed"             # or "user_managed"
//! # id = "…"                               # defaults to crm_user_id
//! # group = "emea"                         # takes [groups.emea] over [sync]
//! # [reps.sync]                            # merged over [sync] and the group, key by key
//!
//! [groups.emea]                            # a named sync configuration (a group of reps)
//! contacts.conflict = "field_merge"
//! ```
//!
//! Secrets are never read from the file: every secret field `X` of an adapter is given as
//! `X_env = "VARIABLE"` (an environment variable holding it) or `X_file = "path"` (a file
//! holding it, relative to the config file). Unknown keys, bad URLs and missing variables are
//! reported as one line naming the file, the table and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crmsync_core::{ConnectionMode, Engine, Rep, Store, SyncConfig};
use secrecy::SecretString;
use serde::Deserialize;
use toml::{Table, Value};

use crate::registry::{Registry, Secrets};

/// A config problem: one line, already naming the file and the place in it.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

type Result<T> = std::result::Result<T, ConfigError>;

/// Secret fields of the `[salesforce]` section.
const SALESFORCE_SECRETS: &[&str] = &["client_secret", "refresh_token"];

/// The top-level tables that are not provider sections.
const TABLES: &[&str] = &["store", "salesforce", "engine", "sync", "groups", "reps"];

#[derive(Deserialize)]
struct FileShape {
    #[serde(default)]
    store: StoreShape,
    salesforce: Option<Table>,
    #[serde(default)]
    engine: EngineShape,
    #[serde(default)]
    sync: Table,
    /// Named sync configurations reps opt into with `group = "NAME"`.
    #[serde(default)]
    groups: std::collections::BTreeMap<String, Table>,
    #[serde(default)]
    reps: Vec<RepShape>,
    /// Every other table: a provider section, named by its kind (`[exchange]`, `[dav]`…).
    #[serde(flatten)]
    providers: std::collections::BTreeMap<String, Table>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreShape {
    url: Option<String>,
    url_env: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EngineShape {
    concurrency: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepShape {
    name: String,
    crm_user_id: String,
    provider: String,
    mailbox: String,
    #[serde(default)]
    connection: ConnectionMode,
    id: Option<String>,
    group: Option<String>,
    #[serde(default)]
    sync: Table,
}

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// One adapter section: its config (secrets still unset) and where its secrets come from.
#[derive(Debug)]
pub struct Section<C> {
    pub config: C,
    pub secrets: Vec<(&'static str, SecretSource)>,
}

/// A parsed, shape-checked config file. Secrets are resolved only by [`Loaded::wire`].
#[derive(Debug)]
pub struct Loaded {
    /// The file, as the user named it (used as the prefix of every error).
    pub path: PathBuf,
    pub store: StoreSource,
    pub salesforce: Option<Section<crmsync_salesforce::Config>>,
    /// The provider sections by kind (checked by their factory; secrets unresolved).
    pub providers: BTreeMap<String, Section<Table>>,
    pub reps: Vec<Rep>,
    /// `[engine] concurrency`: cycles run at once by `sync` and `worker` (their
    /// `--concurrency` wins).
    pub concurrency: Option<u16>,
}

/// The store URL, or the variable holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSource {
    Url(String),
    Env(String),
}

impl StoreSource {
    fn filter_url(self, f: impl Fn(&str) -> bool) -> Option<String> {
        match self {
            StoreSource::Url(u) if f(&u) => Some(u),
            _ => None,
        }
    }
}

/// The engine and the reps, ready to run.
#[derive(Debug)]
pub struct Wired {
    pub engine: Engine,
    pub store: Arc<dyn Store>,
    pub reps: Vec<Rep>,
}

impl Loaded {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<Loaded> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (write one, or start `crmsync sandbox --config-out FILE` to get one)"
            } else {
                ""
            };
            ConfigError(format!("{}: cannot read the config file: {e}{hint}", path.display()))
        })?;
        Self::parse(path, &text)
    }

    /// Check the text of a config file; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Loaded> {
        let file = path.display().to_string();
        let err = |m: String| ConfigError(format!("{file}: {m}"));
        let shape: FileShape = toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let store = match (shape.store.url, shape.store.url_env) {
            (Some(_), Some(_)) => return Err(err("[store] give either url or url_env, not both".into())),
            (None, Some(var)) => StoreSource::Env(var),
            (url, None) => StoreSource::Url(store_url(&base, url.as_deref().unwrap_or("crmsync.db"))),
        };
        let unsupported = |u: &str| {
            u.contains("://")
                && !u.starts_with("sqlite:")
                && !u.starts_with("postgres://")
                && !u.starts_with("postgresql://")
        };
        if let Some(u) = store.clone().filter_url(unsupported) {
            return Err(err(format!(
                "[store] url: unsupported store URL {} (expected a SQLite file path, sqlite://PATH or postgres://…)",
                crmsync_sql::redact_url(&u)
            )));
        }

        let max = crate::fleet::MAX_CONCURRENCY;
        if let Some(n) = shape.engine.concurrency.filter(|n| !(1..=max).contains(n)) {
            return Err(err(format!("[engine] concurrency: {n} is out of range (1 to {max})")));
        }

        let salesforce = shape
            .salesforce
            .map(|t| section::<crmsync_salesforce::Config>(&base, "salesforce", t, SALESFORCE_SECRETS))
            .transpose()
            .map_err(err)?;
        let registry = Registry::current();
        let mut providers = BTreeMap::new();
        for (kind, t) in shape.providers {
            let factory = registry.get(&kind).map_err(|_| {
                err(format!(
                    "unknown field `{kind}`: expected a table of {} or a provider ({})",
                    TABLES.join(", "),
                    registry.kinds().join(", ")
                ))
            })?;
            let s = section::<Table>(&base, &kind, t, factory.secrets()).map_err(&err)?;
            factory.check(&s.config).map_err(|m| err(format!("[{kind}]: {m}")))?;
            providers.insert(kind, s);
        }

        let default_sync = shape.sync;
        sync_config(default_sync.clone()).map_err(|m| err(format!("[sync]: {m}")))?;
        for (name, t) in &shape.groups {
            let mut merged = default_sync.clone();
            merge(&mut merged, t.clone());
            sync_config(merged).map_err(|m| err(format!("[groups.{name}]: {m}")))?;
        }

        let mut reps = vec![];
        let (mut ids, mut names) = (BTreeSet::new(), BTreeSet::new());
        for (i, r) in shape.reps.into_iter().enumerate() {
            let at = format!("[[reps]] #{} ({:?})", i + 1, r.name);
            if r.name.trim().is_empty() {
                return Err(err(format!("[[reps]] #{}: name is empty", i + 1)));
            }
            for (key, v) in [("crm_user_id", &r.crm_user_id), ("mailbox", &r.mailbox)] {
                if v.trim().is_empty() {
                    return Err(err(format!("{at}: {key} is empty")));
                }
            }
            registry.get(&r.provider).map_err(|m| err(format!("{at}: {m}")))?;
            if !providers.contains_key(&r.provider) {
                return Err(err(format!("{at}: provider {:?} has no [{}] table", r.provider, r.provider)));
            }
            let id = r.id.unwrap_or_else(|| r.crm_user_id.clone());
            if !ids.insert(id.clone()) {
                return Err(err(format!("{at}: id {id:?} is used by another rep")));
            }
            if !names.insert(r.name.to_lowercase()) {
                return Err(err(format!("{at}: another rep has the same name")));
            }
            let mut merged = default_sync.clone();
            if let Some(g) = &r.group {
                let Some(t) = shape.groups.get(g) else {
                    return Err(err(format!("{at}: group {g:?} has no [groups.{g}] table")));
                };
                merge(&mut merged, t.clone());
            }
            merge(&mut merged, r.sync);
            let config = sync_config(merged).map_err(|m| err(format!("{at} [reps.sync]: {m}")))?;
            reps.push(Rep {
                id,
                name: r.name,
                crm_user_id: r.crm_user_id,
                provider: r.provider,
                mailbox: r.mailbox,
                connection: r.connection,
                config,
            });
        }
        Ok(Loaded {
            path: path.to_path_buf(),
            store,
            salesforce,
            providers,
            reps,
            concurrency: shape.engine.concurrency,
        })
    }

    fn err(&self, m: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {m}", self.path.display()))
    }

    /// The store URL (reading its variable when the file names one).
    pub fn store_url(&self) -> Result<String> {
        match &self.store {
            StoreSource::Url(u) => Ok(u.clone()),
            StoreSource::Env(var) => read_env(var).map_err(|m| self.err(format!("[store] url_env: {m}"))),
        }
    }

    /// Open the store named by `[store]`.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        let url = self.store_url()?;
        let store = crmsync_sql::SqlStore::connect(&url).await.map_err(|e| self.err(e.message()))?;
        Ok(Arc::new(store))
    }

    /// Resolve the secrets of the CRM and of the providers `reps` use, validate those configs,
    /// open the store and build the engine. Providers no selected rep uses are not touched.
    pub async fn wire(&self, reps: &[Rep]) -> anyhow::Result<Wired> {
        let crm = self.crm()?;
        let used: BTreeSet<&str> = reps.iter().map(|r| r.provider.as_str()).collect();
        let providers = used.into_iter().map(|name| self.provider(name)).collect::<Result<Vec<_>>>()?;
        let store = self.open_store().await?;
        let mut engine = Engine::new(crm, store.clone());
        for p in providers {
            engine = engine.with_provider(p);
        }
        Ok(Wired { engine, store, reps: reps.to_vec() })
    }

    /// The provider of kind `kind` (its secrets resolved, its config validated), built by the
    /// factory the process's [`Registry`] holds for it.
    pub fn provider(&self, kind: &str) -> Result<Arc<dyn crmsync_core::Provider>> {
        let factory = Registry::current().get(kind).map_err(|m| self.err(m))?;
        let s = self.providers.get(kind).ok_or_else(|| self.err(format!("[{kind}] table is missing")))?;
        let mut secrets = Secrets::new();
        for (field, src) in &s.secrets {
            secrets.insert(*field, self.secret(kind, field, src)?);
        }
        let p = factory.build(&s.config, secrets).map_err(|m| self.err(m))?;
        if p.name() != kind {
            return Err(self.err(format!("provider {kind:?} was built as {:?}; register it under that name", p.name())));
        }
        Ok(p)
    }

    fn crm(&self) -> Result<Arc<dyn crmsync_core::Crm>> {
        let s = self.salesforce.as_ref().ok_or_else(|| self.err("[salesforce] table is missing"))?;
        let mut c = s.config.clone();
        for (field, src) in &s.secrets {
            let v = Some(self.secret("salesforce", field, src)?);
            match *field {
                "client_secret" => c.client_secret = v,
                _ => c.refresh_token = v,
            }
        }
        c.validate().map_err(|e| self.err(e.message()))?;
        let crm = crmsync_salesforce::SalesforceCrm::new(c).map_err(|e| self.err(e.message()))?;
        Ok(Arc::new(crm))
    }

    fn secret(&self, table: &str, field: &str, src: &SecretSource) -> Result<SecretString> {
        match src {
            SecretSource::Env(var) => {
                read_env(var).map(SecretString::from).map_err(|m| self.err(format!("[{table}] {field}_env: {m}")))
            }
            SecretSource::File(p) => match std::fs::read_to_string(p) {
                Ok(s) if !s.trim().is_empty() => Ok(SecretString::from(s.trim_end().to_owned())),
                Ok(_) => Err(self.err(format!("[{table}] {field}_file: {} is empty", p.display()))),
                Err(e) => Err(self.err(format!("[{table}] {field}_file: cannot read {}: {e}", p.display()))),
            },
        }
    }

    /// The configured reps `name` selects (partial, case-insensitive; see `engine::find_rep`),
    /// or all of them.
    pub fn select(&self, name: Option<&str>) -> anyhow::Result<Vec<Rep>> {
        match name {
            None => Ok(self.reps.clone()),
            Some(n) => {
                let rep = crmsync_core::engine::find_rep(&self.reps, n).map_err(|e| self.err(e.message()))?;
                Ok(vec![rep.clone()])
            }
        }
    }
}

/// The value of an environment variable holding a secret or URL (never echoed).
fn read_env(var: &str) -> std::result::Result<String, String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(format!("environment variable {var} is empty")),
        Err(std::env::VarError::NotPresent) => Err(format!("environment variable {var} is not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("environment variable {var} is not valid UTF-8")),
    }
}

/// A plain SQLite path is taken relative to the config file's directory.
fn store_url(base: &Path, url: &str) -> String {
    if url.contains("://") || url.starts_with("sqlite:") || Path::new(url).is_absolute() {
        url.to_owned()
    } else {
        base.join(url).display().to_string()
    }
}

/// Split an adapter table into its config and its secret references.
fn section<C: serde::de::DeserializeOwned>(
    base: &Path,
    name: &str,
    mut t: Table,
    secrets: &[&'static str],
) -> std::result::Result<Section<C>, String> {
    let mut found = vec![];
    for &field in secrets {
        if t.contains_key(field) {
            return Err(format!(
                "[{name}] {field}: secrets are not read from the config file; name an environment variable with {field}_env = \"VAR\" (or a file with {field}_file)"
            ));
        }
        let env = t.remove(&format!("{field}_env"));
        let file = t.remove(&format!("{field}_file"));
        let src = match (env, file) {
            (Some(_), Some(_)) => return Err(format!("[{name}] give either {field}_env or {field}_file, not both")),
            (Some(Value::String(v)), None) if !v.trim().is_empty() => SecretSource::Env(v),
            (None, Some(Value::String(p))) if !p.trim().is_empty() => SecretSource::File(base.join(p)),
            (Some(_), None) => {
                return Err(format!("[{name}] {field}_env must be a variable name (a non-empty string)"));
            }
            (None, Some(_)) => return Err(format!("[{name}] {field}_file must be a path (a non-empty string)")),
            (None, None) => continue,
        };
        found.push((field, src));
    }
    let config = Value::Table(t).try_into::<C>().map_err(|e| format!("[{name}]: {}", de_msg(&e)))?;
    Ok(Section { config, secrets: found })
}

/// A sync table as a checked [`SyncConfig`] (shape, then ranges), or the one-line problem.
fn sync_config(t: Table) -> std::result::Result<SyncConfig, String> {
    let c = Value::Table(t).try_into::<SyncConfig>().map_err(|e| de_msg(&e))?;
    c.validate().map_err(|e| e.message().to_owned())?;
    Ok(c)
}

/// Deep-merge `over` into `base` (tables key by key; anything else replaced).
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn de_msg(e: &toml::de::Error) -> String {
    one_line(e.message())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TOML error as one line with its position.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = one_line(e.message());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[store]
url = "state.db"

[salesforce]
instance_url = "http://127.0.0.1:9"
client_id = "cid"
client_secret_env = "CRMSYNC_TEST_SF_SECRET"

[exchange]
graph_url = "http://127.0.0.1:9/v1.0"
token_url = "http://127.0.0.1:9/{tenant}/oauth2/v2.0/token"
tenant = "contoso"
client_id = "app"
client_secret_env = "CRMSYNC_TEST_GRAPH_SECRET_NEVER_SET"

[sync.events]
days_ahead = 90

[[reps]]
name = "Erin Exchange"
crm_user_id = "005A"
provider = "exchange"
mailbox = "erin@contoso.example"
connection = "admin_managed"

group = "short"

[reps.sync.events]
days_back = 7

[groups.short]
events.days_ahead = 30
events.exclude_private = false

[[reps]]
name = "Ed Other"
id = "ed"
crm_user_id = "005B"
provider = "exchange"
mailbox = "ed@contoso.example"
"#;

    fn parse(text: &str) -> Result<Loaded> {
        Loaded::parse(Path::new("/etc/crmsync/config.toml"), text)
    }

    fn msg(text: &str) -> String {
        let e = parse(text).expect_err("must be refused").0;
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(e.starts_with("/etc/crmsync/config.toml: "), "names the file: {e}");
        e
    }

    #[test]
    fn a_good_file_parses_with_defaults_and_per_rep_overrides() {
        let l = parse(GOOD).unwrap();
        assert_eq!(l.store, StoreSource::Url("/etc/crmsync/state.db".into()));
        assert_eq!(l.reps.len(), 2);
        let erin = &l.reps[0];
        assert_eq!(erin.id, "005A", "id defaults to the CRM user id");
        assert_eq!(erin.config.events.days_ahead, 30, "from [groups.short] over [sync]");
        assert!(!erin.config.events.exclude_private, "from [groups.short]");
        assert_eq!(l.reps[1].config.events.days_ahead, 90, "from [sync]");
        assert_eq!(erin.config.events.days_back, 7, "from [reps.sync]");
        assert_eq!(l.reps[1].id, "ed");
        assert_eq!(l.reps[1].config.events.days_back, SyncConfig::default().events.days_back);
        assert_eq!(l.reps[1].connection, ConnectionMode::AdminManaged);
        let sf = l.salesforce.as_ref().unwrap();
        assert_eq!(sf.secrets, vec![("client_secret", SecretSource::Env("CRMSYNC_TEST_SF_SECRET".into()))]);
        assert_eq!(l.select(Some("ERIN")).unwrap()[0].name, "Erin Exchange");
        assert!(l.select(Some("e")).unwrap_err().to_string().contains("ambiguous"));
        assert!(l.select(Some("zed")).unwrap_err().to_string().contains("no rep matches"));
    }

    #[test]
    fn the_example_file_is_valid() {
        let l = Loaded::parse(Path::new("crmsync.example.toml"), include_str!("../crmsync.example.toml")).unwrap();
        assert_eq!(l.reps.len(), 2);
        assert_eq!(l.reps[0].config.contacts.conflict, crmsync_core::ConflictPolicy::FieldMerge);
        assert_eq!(l.reps[1].config.events.days_ahead, 90);
        assert_eq!(l.reps[1].connection, ConnectionMode::UserManaged);
        assert!(l.providers.contains_key("google") && l.providers.contains_key("exchange") && l.salesforce.is_some());
    }

    #[test]
    fn unknown_keys_are_refused_with_their_table() {
        assert!(msg("[stor]\nurl = 'x'").contains("unknown field `stor`"));
        let e = msg(&GOOD.replace("tenant = \"contoso\"", "tenant = \"contoso\"\ngraph_urll = \"x\""));
        assert!(e.contains("[exchange]") && e.contains("graph_urll"), "{e}");
        let e = msg(&GOOD.replace("days_ahead = 90", "days_ahaed = 90"));
        assert!(e.contains("[sync]") && e.contains("days_ahaed"), "{e}");
        let e = msg(&GOOD.replace("days_back = 7", "days_bak = 7"));
        assert!(e.contains("Erin Exchange") && e.contains("days_bak"), "{e}");
        let e = msg(&GOOD.replace("events.exclude_private = false", "events.exclude_privat = false"));
        assert!(e.contains("[groups.short]") && e.contains("exclude_privat"), "{e}");
        let e = msg(&GOOD.replace("group = \"short\"", "group = \"long\""));
        assert!(e.contains("group \"long\" has no [groups.long] table"), "{e}");
        let e = msg(&GOOD.replace("connection = \"admin_managed\"", "connection = \"sometimes\""));
        assert!(e.contains("sometimes"), "{e}");
    }

    #[test]
    fn malformed_toml_names_line_and_column() {
        let e = msg("[store]\nurl = \n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn secrets_in_the_file_are_refused() {
        let e = msg(&GOOD.replace("client_secret_env = \"CRMSYNC_TEST_SF_SECRET\"", "client_secret = \"hunter2\""));
        assert!(e.contains("[salesforce] client_secret") && e.contains("client_secret_env"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn engine_concurrency_is_range_checked() {
        assert_eq!(parse(GOOD).map(|l| l.concurrency).ok(), Some(None));
        let with = |n: &str| format!("[engine]\nconcurrency = {n}\n{GOOD}");
        assert_eq!(parse(&with("16")).map(|l| l.concurrency).ok(), Some(Some(16)));
        for bad in ["0", "65"] {
            let e = msg(&with(bad));
            assert!(e.contains("[engine] concurrency") && e.contains("out of range (1 to 64)"), "{e}");
        }
        assert!(msg("[engine]\nthreads = 2\n").contains("threads"));
    }

    #[test]
    fn reps_are_checked() {
        let e =
            msg(&GOOD.replace("provider = \"exchange\"\nmailbox = \"erin", "provider = \"lotus\"\nmailbox = \"erin"));
        assert!(e.contains("provider \"lotus\" is unknown"), "{e}");
        let e = msg(&GOOD.replace("id = \"ed\"", "id = \"005A\""));
        assert!(e.contains("id \"005A\" is used by another rep"), "{e}");
        let no_google =
            GOOD.replace("provider = \"exchange\"\nmailbox = \"ed", "provider = \"google\"\nmailbox = \"ed");
        assert!(msg(&no_google).contains("has no [google] table"));
        let e = msg(&GOOD.replace("mailbox = \"ed@contoso.example\"", "mailbox = \"\""));
        assert!(e.contains("mailbox is empty"), "{e}");
    }

    #[test]
    fn bad_store_urls_are_refused() {
        let e = msg(&GOOD.replace("url = \"state.db\"", "url = \"mysql://root:pw@db/x\""));
        assert!(e.contains("[store] url") && !e.contains("pw"), "{e}");
        let l = parse(&GOOD.replace("url = \"state.db\"", "url_env = \"CRMSYNC_TEST_STORE_URL_NEVER_SET\"")).unwrap();
        let e = l.store_url().unwrap_err().0;
        assert!(e.contains("[store] url_env: environment variable CRMSYNC_TEST_STORE_URL_NEVER_SET is not set"), "{e}");
    }

    #[tokio::test]
    async fn missing_secret_variables_and_bad_urls_are_named() {
        let l = parse(GOOD).unwrap();
        let e = format!("{:#}", l.wire(&l.reps).await.unwrap_err());
        assert!(
            e.contains("[salesforce] client_secret_env: environment variable CRMSYNC_TEST_SF_SECRET is not set")
                || e.contains(
                    "[exchange] client_secret_env: environment variable CRMSYNC_TEST_GRAPH_SECRET_NEVER_SET is not set"
                ),
            "{e}"
        );
        // A bad URL is caught by the adapter's validate() once secrets are there.
        let text = GOOD
            .replace("client_secret_env = \"CRMSYNC_TEST_SF_SECRET\"", "client_secret_file = \"/dev/null/none\"")
            .replace("http://127.0.0.1:9/v1.0", "not a url");
        let l = parse(&text).unwrap();
        let e = format!("{:#}", l.wire(&l.reps).await.unwrap_err());
        assert!(e.contains("[salesforce] client_secret_file: cannot read /dev/null/none"), "{e}");
        let dir = std::env::temp_dir().join(format!("crmsync-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sf.secret"), "s3cret\n").unwrap();
        std::fs::write(dir.join("graph.secret"), "g-s3cret").unwrap();
        let text = GOOD
            .replace("client_secret_env = \"CRMSYNC_TEST_SF_SECRET\"", "client_secret_file = \"sf.secret\"")
            .replace(
                "client_secret_env = \"CRMSYNC_TEST_GRAPH_SECRET_NEVER_SET\"",
                "client_secret_file = \"graph.secret\"",
            )
            .replace("http://127.0.0.1:9/v1.0", "not a url");
        let l = Loaded::parse(&dir.join("c.toml"), &text).unwrap();
        let e = format!("{:#}", l.wire(&l.reps).await.unwrap_err());
        assert!(e.contains("exchange: graph_url \"not a url\" is not an http(s) URL"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
