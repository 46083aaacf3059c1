//! crmsync-sql: the [`Store`](crmsync_core::Store) port on SQL — SQLite by default (one file, nothing to run),
//! PostgreSQL when several workers on several machines share the reps.
//!
//! ```no_run
//! # async fn demo() -> crmsync_core::Result<()> {
//! let store = crmsync_sql::SqlStore::connect("sqlite://crmsync.db").await?;
//! // or: SqlStore::connect("postgres://crmsync@db.internal/crmsync").await?
//! # Ok(()) }
//! ```
//!
//! * One schema for both back ends, applied by embedded migrations on connect
//!   (`migrations/`); the schema version is recorded in `crmsync_meta` and a store written by a
//!   newer crmsync is refused.
//! * Every store method is one transaction. A cycle's `commit` and a `reset` of the same rep
//!   lock the rep's row first, so no cycle writes links for a rep after its reset.
//! * Leasing: `claim_due_reps` uses `FOR UPDATE SKIP LOCKED` on PostgreSQL and an immediate
//!   (write-locked) transaction on SQLite; `acquire_lease` takes one rep's lease with a single
//!   conditional `UPDATE` (free, expired or already the caller's); leases expire, `renew_lease`
//!   / `release` answer `Conflict` once a holder lost a rep.
//! * Grants (refresh tokens of user-managed connections) are stored as given, in
//!   `reps.grant_token`; a production deployment should keep them in a secret backend. They
//!   never appear in logs, errors or `Debug` output.
//!
//! Errors opening or using the store are `ErrorKind::Store` and name the store (its URL without
//! password).

mod ops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crmsync_core::report::CycleReport;
use crmsync_core::{
    Acquire, Actor, Cursors, Error, HeldDelete, ItemError, Kind, LeaseHolder, Leases, Link, LinkBatch, Refusal,
    RepState, RepStatus, ResetRecord, Result, SyncState, Verdict, Verification,
};
use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, PgConnection, PgPool, SqliteConnection, SqlitePool};

/// The newest schema version this build knows (`crmsync_meta.schema_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// The embedded migrations (one schema for SQLite and PostgreSQL).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The tables this crate creates; finding one of them in a PostgreSQL schema without
/// `crmsync_meta` means the schema belongs to something else. (`_sqlx_migrations` alone is
/// checked for rows: another worker may be migrating the same schema right now.)
const OUR_TABLES: &[&str] = &[
    "crmsync_meta",
    "reps",
    "links",
    "cursors",
    "item_errors",
    "runs",
    "resets",
    "schedule",
    "reset_undo",
    "held_deletes",
    "refusals",
];

/// How to open a store. [`SqlStore::connect`] uses the defaults.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Pool size (SQLite: connections to the file; PostgreSQL: server connections).
    pub max_connections: u32,
    /// How long opening the store (and later, waiting for a pooled connection) may take.
    pub connect_timeout: Duration,
    /// SQLite: how long a writer waits for another writer's lock before failing.
    pub busy_timeout: Duration,
    /// PostgreSQL: the schema to keep the tables in (created when missing, set as `search_path`).
    /// `None` uses the server's default `search_path` (normally `public`).
    pub schema: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 5,
            connect_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(10),
            schema: None,
        }
    }
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The state store on SQLite or PostgreSQL. Cheap to clone (shares the pool).
#[derive(Clone)]
pub struct SqlStore {
    name: String,
    backend: Backend,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").field("store", &self.name).finish_non_exhaustive()
    }
}

/// `store sqlite://…: ` / `store postgres://user@host/db: ` prefix for every error.
fn named(name: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| e.context(format!("store {name}"))
}

/// The URL as it may be shown: no password (neither in the user info nor as a `password`
/// query parameter).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("password"))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if pairs.is_empty() {
                    u.set_query(None);
                } else {
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                }
            }
            u.to_string()
        }
        Err(_) => match url.split_once("://") {
            // Unparsable: show the scheme only, the rest may hold a password.
            Some((scheme, _)) => format!("{scheme}://(unparsable URL)"),
            None => url.to_owned(),
        },
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl SqlStore {
    /// Open (creating and migrating when needed) the store at `url`:
    /// `sqlite://path/to/file.db`, `sqlite::memory:`, a plain file path, or
    /// `postgres://user@host:port/database`.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// [`SqlStore::connect`] with explicit options.
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<SqlStore> {
        if is_postgres(url) {
            let name = redact_url(url);
            let pool = open_postgres(url, &options).await.map_err(named(&name))?;
            tracing::info!(store = %name, schema = ?options.schema, "state store opened (PostgreSQL)");
            Ok(SqlStore { name, backend: Backend::Postgres(pool) })
        } else if url.starts_with("sqlite:") || !url.contains("://") {
            let (opts, name) = if url.starts_with("sqlite:") {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(|e| Error::invalid_config(format!("invalid SQLite store URL {url}: {e}")))?;
                (opts, url.to_owned())
            } else {
                (SqliteConnectOptions::new().filename(url), format!("sqlite://{url}"))
            };
            let pool = open_sqlite(opts, &options).await.map_err(named(&name))?;
            tracing::info!(store = %name, "state store opened (SQLite)");
            Ok(SqlStore { name, backend: Backend::Sqlite(pool) })
        } else {
            Err(Error::invalid_config(format!(
                "unsupported store URL {} (expected sqlite://PATH, a file path or postgres://…)",
                redact_url(url)
            )))
        }
    }

    /// The store's URL without password, as errors name it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Every run recorded for the rep (one per `set_state` with a report), oldest first.
    pub async fn runs(&self, rep: &str) -> Result<Vec<CycleReport>> {
        match &self.backend {
            Backend::Sqlite(p) => ops::sqlite::runs(p, rep).await,
            Backend::Postgres(p) => ops::pg::runs(p, rep).await,
        }
        .map_err(named(&self.name))
    }

    /// Close the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(p) => p.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }
}

fn sqlite_path(opts: &SqliteConnectOptions) -> Option<PathBuf> {
    let p: &Path = opts.get_filename();
    let s = p.to_string_lossy();
    (!s.is_empty() && s != ":memory:").then(|| p.to_path_buf())
}

fn unusable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::store(format!("{what}: {e}"))
}

async fn open_sqlite(opts: SqliteConnectOptions, o: &StoreOptions) -> Result<SqlitePool> {
    let path = sqlite_path(&opts);
    let file = path.is_some();
    // An existing file is inspected read-only first: a foreign or newer database must not be
    // touched (not even switched to WAL).
    let existing = path.as_ref().filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
    if existing.is_some() {
        let ro = opts.clone().read_only(true).create_if_missing(false);
        let mut conn = SqliteConnection::connect_with(&ro).await.map_err(|e| unusable("cannot open", e))?;
        let tables: Result<Vec<String>> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                .fetch_all(&mut conn)
                .await
                .map_err(|e| unusable("not a usable SQLite database (corrupt, or not a database file)", e));
        let verdict = match tables {
            Ok(tables) => inspect(&tables, &mut conn).await,
            Err(e) => Err(e),
        };
        let _ = conn.close().await;
        verdict?;
    }
    let mut opts = opts.create_if_missing(true).busy_timeout(o.busy_timeout);
    let mut max = o.max_connections.max(1);
    if file {
        opts = opts.journal_mode(SqliteJournalMode::Wal);
    } else {
        // `:memory:`: every connection would be its own database.
        max = 1;
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(o.connect_timeout)
        .connect_with(opts)
        .await
        .map_err(|e| unusable("cannot open", e))?;
    // Two processes creating the same new file race on the first migration (SQLite migrations
    // take no lock); the loser finds the schema in place on its second try.
    if migrate(&pool).await.is_err() {
        migrate(&pool).await?;
    }
    Ok(pool)
}

/// Whether the tables found make this a crmsync store we may use (or an empty database).
macro_rules! inspect_body {
    ($tables:expr, $conn:expr) => {{
        let tables: &[String] = $tables;
        if tables.iter().any(|t| t == "crmsync_meta") {
            let version: Option<String> =
                sqlx::query_scalar("SELECT value FROM crmsync_meta WHERE name = 'schema_version'")
                    .fetch_optional(&mut *$conn)
                    .await
                    .map_err(|e| unusable("cannot read the schema version", e))?;
            let version: i64 = version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::store("crmsync_meta holds no valid schema_version (damaged store)"))?;
            if version > SCHEMA_VERSION {
                return Err(Error::store(format!(
                    "schema version {version} was written by a newer crmsync (this build knows up to \
                     {SCHEMA_VERSION}); upgrade crmsync, the store was left untouched"
                )));
            }
            Ok(())
        } else if {
            // `_sqlx_migrations` alone, without rows, is what an interrupted (or concurrent)
            // first migration leaves: not foreign.
            let others: Vec<&String> = tables.iter().filter(|t| *t != "_sqlx_migrations").collect();
            let foreign_tables = if $conn.is_sqlite() {
                !others.is_empty()
            } else {
                others.iter().any(|t| OUR_TABLES.contains(&t.as_str()))
            };
            foreign_tables
                || (others.len() < tables.len() && {
                    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                        .fetch_one(&mut *$conn)
                        .await
                        .map_err(|e| unusable("cannot read _sqlx_migrations", e))?;
                    n > 0
                })
        } {
            let mut shown: Vec<&str> = tables.iter().map(String::as_str).take(5).collect();
            shown.sort_unstable();
            Err(Error::store(format!(
                "not a crmsync store (it holds other tables: {}); point the store at a new file or schema",
                shown.join(", ")
            )))
        } else {
            Ok(())
        }
    }};
}

trait IsSqlite {
    fn is_sqlite(&self) -> bool;
}
impl IsSqlite for SqliteConnection {
    fn is_sqlite(&self) -> bool {
        true
    }
}
impl IsSqlite for PgConnection {
    fn is_sqlite(&self) -> bool {
        false
    }
}

async fn inspect(tables: &[String], conn: &mut SqliteConnection) -> Result<()> {
    inspect_body!(tables, conn)
}

async fn inspect_pg(tables: &[String], conn: &mut PgConnection) -> Result<()> {
    inspect_body!(tables, conn)
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

async fn open_postgres(url: &str, o: &StoreOptions) -> Result<PgPool> {
    let mut opts = PgConnectOptions::from_str(url)
        .map_err(|_| Error::invalid_config("invalid PostgreSQL URL (expected postgres://user@host:port/database)"))?
        .application_name("crmsync");
    if let Some(schema) = &o.schema {
        if !valid_schema_name(schema) {
            return Err(Error::invalid_config(format!(
                "invalid PostgreSQL schema name {schema:?} (lower-case letters, digits and _)"
            )));
        }
        opts = opts.options([("search_path", schema.as_str())]);
    }
    let mut conn = match tokio::time::timeout(o.connect_timeout, PgConnection::connect_with(&opts)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(unusable("cannot connect to PostgreSQL", e).temporary(None)),
        Err(_) => {
            return Err(Error::store(format!(
                "cannot connect to PostgreSQL: no answer within {:?}",
                o.connect_timeout
            ))
            .temporary(None));
        }
    };
    let verdict = async {
        if let Some(schema) = &o.schema {
            let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")))
                .execute(&mut conn)
                .await;
            match created {
                Ok(_) => {}
                // Another worker created it at the same moment.
                Err(sqlx::Error::Database(d)) if matches!(d.code().as_deref(), Some("23505" | "42P06")) => {}
                Err(e) => return Err(unusable("cannot create schema", e)),
            }
        }
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&mut conn)
        .await
        .map_err(|e| unusable("cannot list tables", e))?;
        inspect_pg(&tables, &mut conn).await
    }
    .await;
    let _ = conn.close().await;
    verdict?;
    let pool = PgPoolOptions::new()
        .max_connections(o.max_connections.max(1))
        .acquire_timeout(o.connect_timeout)
        .connect_with(opts)
        .await
        .map_err(|e| unusable("cannot connect to PostgreSQL", e))?;
    migrate(&pool).await?;
    Ok(pool)
}

async fn migrate<'a, A>(pool: A) -> Result<()>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    use sqlx::migrate::MigrateError as M;
    MIGRATOR.run(pool).await.map_err(|e| match e {
        M::VersionMissing(v) => Error::store(format!(
            "schema migration {v} was applied by a newer crmsync; upgrade crmsync, the store was left untouched"
        )),
        M::VersionMismatch(v) => Error::store(format!("schema migration {v} was modified after it was applied")),
        e => unusable("migrating the schema failed", e),
    })
}

macro_rules! dispatch {
    ($self:ident, $f:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(p) => ops::sqlite::$f(p, $($arg),*).await,
            Backend::Postgres(p) => ops::pg::$f(p, $($arg),*).await,
        }
        .map_err(named(&$self.name))
    };
}

#[async_trait]
impl SyncState for SqlStore {
    async fn status(&self, rep: &str) -> Result<RepStatus> {
        dispatch!(self, status(rep))
    }

    async fn statuses(&self) -> Result<Vec<RepStatus>> {
        dispatch!(self, statuses())
    }

    async fn set_state(
        &self,
        rep: &str,
        epoch: u64,
        state: RepState,
        error: Option<String>,
        report: Option<&CycleReport>,
    ) -> Result<()> {
        dispatch!(self, set_state(rep, epoch, state, error, report))
    }

    async fn links(&self, rep: &str, kind: Kind) -> Result<Vec<Link>> {
        dispatch!(self, links(rep, kind))
    }

    async fn cursors(&self, rep: &str, kind: Kind) -> Result<Cursors> {
        dispatch!(self, cursors(rep, kind))
    }

    async fn item_errors(&self, rep: &str, kind: Kind) -> Result<Vec<ItemError>> {
        dispatch!(self, item_errors(rep, kind))
    }

    async fn commit(&self, rep: &str, epoch: u64, kind: Kind, batch: &LinkBatch) -> Result<()> {
        dispatch!(self, commit(rep, epoch, kind, batch))
    }

    async fn reset(&self, record: &ResetRecord, state: RepState, drop_grant: bool) -> Result<BTreeMap<String, u64>> {
        dispatch!(self, reset(record, state, drop_grant))
    }

    async fn resets(&self, rep: &str) -> Result<Vec<ResetRecord>> {
        dispatch!(self, resets(rep))
    }

    async fn history(&self, rep: &str, n: usize) -> Result<Vec<CycleReport>> {
        dispatch!(self, history(rep, n))
    }

    async fn refuse(&self, refusal: &Refusal) -> Result<()> {
        dispatch!(self, refuse(refusal))
    }

    async fn refusals(&self) -> Result<Vec<Refusal>> {
        dispatch!(self, refusals())
    }

    async fn seal_reset(&self, rep: &str, epoch: u64) -> Result<()> {
        dispatch!(self, seal_reset(rep, epoch))
    }

    async fn verify_reset(&self, rep: &str, epoch: u64, verification: &Verification) -> Result<()> {
        dispatch!(self, verify_reset(rep, epoch, verification))
    }

    async fn undo_reset(&self, rep: &str, by: &Actor) -> Result<ResetRecord> {
        dispatch!(self, undo_reset(rep, by))
    }

    async fn held(&self, rep: &str, kind: Kind) -> Result<Vec<HeldDelete>> {
        dispatch!(self, held(rep, kind))
    }

    async fn judge_held(&self, rep: &str, verdict: Verdict) -> Result<u64> {
        dispatch!(self, judge_held(rep, verdict))
    }

    async fn grant(&self, rep: &str) -> Result<Option<SecretString>> {
        dispatch!(self, grant(rep))
    }

    async fn set_grant(&self, rep: &str, grant: Option<&SecretString>) -> Result<()> {
        dispatch!(self, set_grant(rep, grant))
    }
}

#[async_trait]
impl Leases for SqlStore {
    async fn schedule(&self, rep: &str, due: DateTime<Utc>) -> Result<()> {
        dispatch!(self, schedule(rep, due))
    }

    async fn claim_due_reps(&self, worker: &str, n: usize, lease: Duration, now: DateTime<Utc>) -> Result<Vec<String>> {
        dispatch!(self, claim_due_reps(worker, n, lease, now))
    }

    async fn acquire_lease(&self, holder: &str, rep: &str, lease: Duration, now: DateTime<Utc>) -> Result<Acquire> {
        dispatch!(self, acquire_lease(holder, rep, lease, now))
    }

    async fn lease(&self, rep: &str, now: DateTime<Utc>) -> Result<Option<LeaseHolder>> {
        dispatch!(self, lease(rep, now))
    }

    async fn due(&self, rep: &str) -> Result<Option<DateTime<Utc>>> {
        dispatch!(self, due(rep))
    }

    async fn sync_now(&self, rep: &str, now: DateTime<Utc>) -> Result<()> {
        dispatch!(self, sync_now(rep, now))
    }

    async fn renew_lease(&self, worker: &str, rep: &str, lease: Duration, now: DateTime<Utc>) -> Result<()> {
        dispatch!(self, renew_lease(worker, rep, lease, now))
    }

    async fn release(&self, worker: &str, rep: &str, next_due: Option<DateTime<Utc>>) -> Result<()> {
        dispatch!(self, release(worker, rep, next_due))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_passwords() {
        assert_eq!(redact_url("postgres://bob:hunter2@db:5432/crm"), "postgres://bob@db:5432/crm");
        assert_eq!(
            redact_url("postgres://db/crm?password=hunter2&sslmode=require"),
            "postgres://db/crm?sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/crm?password=hunter2"), "postgres://db/crm");
        assert!(!redact_url("postgres://bob:hunter2@db:notaport/crm").contains("hunter2"));
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema_name("crmsync_t1"));
        assert!(!valid_schema_name("x\"; drop"));
        assert!(!valid_schema_name("1abc"));
    }
}
