//! Bad input: corrupt or foreign files, schemas from a newer crmsync, unreachable servers. Each
//! gives one `ErrorKind::Store` error naming the store, and leaves the store untouched.

mod common;

use std::str::FromStr;

use crmsync_core::{ErrorKind, SyncState};
use crmsync_sql::{SqlStore, StoreOptions};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use common::{PgSchema, TempDb, pg_url};

fn files(db: &TempDb) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&db.dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

async fn raw_sqlite(db: &TempDb, sql: &str) {
    let opts = SqliteConnectOptions::from_str(&db.url()).expect("url").create_if_missing(true);
    let mut c = SqliteConnection::connect_with(&opts).await.expect("open");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut c).await.expect("raw sql");
    c.close().await.expect("close");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_untouched() {
    let db = TempDb::new("garbage");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&db.path, &garbage).expect("write");
    let err = SqlStore::connect(&db.url()).await.expect_err("garbage must be refused");
    assert_eq!(err.kind(), ErrorKind::Store);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains(&db.url()), "the error names the store: {msg}");
    assert!(msg.contains("not a usable SQLite database"), "the error says what is wrong: {msg}");
    assert_eq!(std::fs::read(&db.path).expect("read"), garbage, "the file is not modified");
    assert_eq!(files(&db), vec!["crmsync.db".to_owned()], "no WAL or journal file was created");
}

#[tokio::test]
async fn a_foreign_sqlite_database_is_refused_untouched() {
    let db = TempDb::new("foreign");
    raw_sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'x');",
    )
    .await;
    let before = std::fs::read(&db.path).expect("read");
    let err = SqlStore::connect(&db.url()).await.expect_err("a foreign database must be refused");
    assert_eq!(err.kind(), ErrorKind::Store);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains(&db.url()) && msg.contains("not a crmsync store") && msg.contains("customers"), "{msg}");
    assert_eq!(std::fs::read(&db.path).expect("read"), before, "the foreign file is not modified");
    assert_eq!(files(&db), vec!["crmsync.db".to_owned()], "the file was not switched to WAL");
}

#[tokio::test]
async fn a_sqlite_store_from_a_newer_crmsync_is_refused() {
    let db = TempDb::new("newer");
    let store = SqlStore::connect(&db.url()).await.expect("create");
    store.status("rep-1").await.expect("status");
    store.close().await;
    raw_sqlite(&db, "UPDATE crmsync_meta SET value = '7' WHERE name = 'schema_version'").await;
    let err = SqlStore::connect(&db.url()).await.expect_err("a newer schema must be refused");
    assert_eq!(err.kind(), ErrorKind::Store);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains(&db.url()) && msg.contains("schema version 7") && msg.contains("newer"), "{msg}");

    // A migration this build does not know (applied by a newer crmsync) is refused too.
    raw_sqlite(&db, "UPDATE crmsync_meta SET value = '1' WHERE name = 'schema_version'").await;
    raw_sqlite(
        &db,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', 1, x'00', 1)",
    )
    .await;
    let err = SqlStore::connect(&db.url()).await.expect_err("an unknown migration must be refused");
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("newer crmsync"), "{err}");
}

#[tokio::test]
async fn a_damaged_store_is_reported_as_a_store_error() {
    let db = TempDb::new("damaged");
    let store = SqlStore::connect(&db.url()).await.expect("create");
    store.status("rep-1").await.expect("status");
    store.close().await;
    raw_sqlite(&db, "UPDATE reps SET state = 'exploded' WHERE rep = 'rep-1'").await;
    let store = SqlStore::connect(&db.url()).await.expect("open");
    let err = store.status("rep-1").await.expect_err("a corrupt value must not be guessed");
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains(&db.url()) && err.to_string().contains("exploded"), "{err}");
}

#[tokio::test]
async fn unsupported_urls_are_config_errors() {
    let err = SqlStore::connect("mysql://root:pw@localhost/db").await.expect_err("mysql is not supported");
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_one_clear_error_without_the_password() {
    let url = "postgres://crmsync:hunter2@127.0.0.1:1/crmsync";
    let opts = StoreOptions { connect_timeout: std::time::Duration::from_secs(5), ..StoreOptions::default() };
    let err = SqlStore::connect_with(url, opts).await.expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Store);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("postgres://crmsync@127.0.0.1:1/crmsync"), "the error names the store: {msg}");
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(!msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"), "no password in the error");
    assert!(err.is_temporary(), "an unreachable server may come back");
}

#[tokio::test]
async fn postgres_refuses_foreign_and_newer_schemas_and_hides_the_password() {
    let Some(url) = pg_url("postgres_refuses_foreign_and_newer_schemas") else { return };

    let foreign = PgSchema::new(&url, "foreign");
    foreign.execute(&format!("CREATE SCHEMA \"{}\"", foreign.name)).await;
    foreign.execute("CREATE TABLE links (id INT PRIMARY KEY)").await;
    let err = SqlStore::connect_with(&url, foreign.options()).await.expect_err("foreign schema");
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("not a crmsync store"), "{err}");
    foreign.drop().await;

    let newer = PgSchema::new(&url, "newer");
    // trust auth ignores the password; it must still never be shown.
    let with_password = url.replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    let store = SqlStore::connect_with(&with_password, newer.options()).await.expect("connect");
    assert!(!format!("{store:?}").contains("hunter2") && !store.name().contains("hunter2"));
    store.status("rep-1").await.expect("status");
    store.close().await;
    newer.execute("UPDATE crmsync_meta SET value = '99' WHERE name = 'schema_version'").await;
    let err = SqlStore::connect_with(&with_password, newer.options()).await.expect_err("newer schema");
    assert_eq!(err.kind(), ErrorKind::Store);
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("schema version 99") && !msg.contains("hunter2"), "{msg}");
    newer.drop().await;
}

#[tokio::test]
async fn an_interrupted_first_migration_is_not_mistaken_for_a_foreign_file() {
    let db = TempDb::new("interrupted");
    // What sqlx leaves when the process dies inside the first migration: the bookkeeping table,
    // empty (the migration itself ran in a transaction and was rolled back).
    raw_sqlite(
        &db,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
    )
    .await;
    let store = SqlStore::connect(&db.url()).await.expect("the store is completed");
    assert_eq!(store.status("rep").await.expect("status").epoch, 0);
    store.close().await;

    // Another application's sqlx migrations are foreign.
    let other = TempDb::new("other_sqlx_app");
    raw_sqlite(
        &other,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
         installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL, \
         checksum BLOB NOT NULL, execution_time BIGINT NOT NULL); \
         INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20240101, 'init', 1, x'00', 1)",
    )
    .await;
    let err = SqlStore::connect(&other.url()).await.expect_err("foreign");
    assert_eq!(err.kind(), ErrorKind::Store);
    assert!(err.to_string().contains("not a crmsync store"), "{err}");
}
