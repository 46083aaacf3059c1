//! A store written by an older crmsync is upgraded in place when it is opened, and keeps its data.

mod common;

use std::str::FromStr;

use chrono::Utc;
use crmsync_core::{Leases, Refusal, RepState, SyncState};
use crmsync_sql::SqlStore;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use common::TempDb;

#[tokio::test]
async fn a_version_1_sqlite_store_is_upgraded_in_place() {
    let db = TempDb::new("upgrade");
    // Schema version 1 as the first release wrote it: its migration only, and a rep in it.
    let v1 = db.dir.join("migrations-v1");
    std::fs::create_dir_all(&v1).expect("dir");
    let first = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/0001_initial.sql");
    std::fs::copy(first, v1.join("0001_initial.sql")).expect("copy");
    let opts = SqliteConnectOptions::from_str(&db.url()).expect("url").create_if_missing(true);
    let mut c = SqliteConnection::connect_with(&opts).await.expect("open");
    sqlx::migrate::Migrator::new(v1.as_path()).await.expect("migrator").run(&mut c).await.expect("v1");
    sqlx::query(
        "INSERT INTO reps (rep, state, epoch, created_at) VALUES ('rep-1', 'error', 3, '2026-01-01T00:00:00Z')",
    )
    .execute(&mut c)
    .await
    .expect("a v1 rep");
    sqlx::query("INSERT INTO schedule (rep, due_ns) VALUES ('rep-1', 5)").execute(&mut c).await.expect("scheduled");
    c.close().await.expect("close");

    let store = SqlStore::connect(&db.url()).await.expect("a v1 store opens, upgraded");
    let st = store.status("rep-1").await.expect("status");
    assert_eq!((st.state, st.epoch), (RepState::Error, 3), "the rep is kept as it was");
    assert_eq!(store.due("rep-1").await.expect("due").map(|d| d.timestamp_nanos_opt()), Some(Some(5)));
    let refusal = Refusal {
        at: Utc::now(),
        admin_id: "005H".into(),
        admin_name: "Hank Halfadmin".into(),
        action: "reset".into(),
        rep: Some("rep-1".into()),
        scope: Some(crmsync_core::ResetScope::All),
        reason: "lacks Manage Sync".into(),
    };
    store.refuse(&refusal).await.expect("the new table is there");
    store.sync_now("rep-1", Utc::now()).await.expect("the new column is there");
    assert_eq!(store.refusals().await.expect("refusals").len(), 1);
    store.close().await;
    let mut c = SqliteConnection::connect_with(&opts).await.expect("open");
    let version: String = sqlx::query_scalar("SELECT value FROM crmsync_meta WHERE name = 'schema_version'")
        .fetch_one(&mut c)
        .await
        .expect("version");
    assert_eq!(version, crmsync_sql::SCHEMA_VERSION.to_string());
    c.close().await.expect("close");
}
