//! Test helpers: temporary SQLite files and per-test PostgreSQL schemas.
#![allow(dead_code)]

use std::path::PathBuf;

use crmsync_sql::{SqlStore, StoreOptions};
use sqlx::Connection;

/// A fresh path for a SQLite file (removed, with its WAL files, on drop).
#[derive(Debug)]
pub struct TempDb {
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl TempDb {
    pub fn new(name: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!("crmsync-sql-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("crmsync.db");
        TempDb { dir, path }
    }
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `CRMSYNC_TEST_POSTGRES_URL`, or a loud skip line on stderr (written past the test harness's
/// output capture, so it shows in a normal `cargo test`). With `CRMSYNC_REQUIRE_POSTGRES=1`
/// (CI) a missing URL fails the test instead.
pub fn pg_url(test: &str) -> Option<String> {
    match std::env::var("CRMSYNC_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let require = std::env::var("CRMSYNC_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(!require, "{test}: CRMSYNC_REQUIRE_POSTGRES=1 but CRMSYNC_TEST_POSTGRES_URL is not set");
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "!!!! {test}: skipped: set CRMSYNC_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) !!!!"
            );
            None
        }
    }
}

/// A schema of its own for one test; drop it with [`PgSchema::drop`] at the end.
#[derive(Debug)]
pub struct PgSchema {
    pub url: String,
    pub name: String,
}

impl PgSchema {
    pub fn new(url: &str, test: &str) -> PgSchema {
        PgSchema { url: url.to_owned(), name: format!("t_{test}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]) }
    }
    pub fn options(&self) -> StoreOptions {
        StoreOptions { schema: Some(self.name.clone()), ..StoreOptions::default() }
    }
    pub async fn store(&self) -> SqlStore {
        SqlStore::connect_with(&self.url, self.options()).await.expect("connect to PostgreSQL")
    }
    /// Run one statement in this schema (for tests that tamper with the store).
    pub async fn execute(&self, sql: &str) {
        let mut c = sqlx::PgConnection::connect(&self.url).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO \"{}\"", self.name)))
            .execute(&mut c)
            .await
            .expect("search_path");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut c).await.expect("tamper");
    }
    pub async fn drop(self) {
        let mut c = sqlx::PgConnection::connect(&self.url).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)))
            .execute(&mut c)
            .await
            .expect("drop schema");
    }
}
