//! The store conformance suite against SQLite (temporary file) and PostgreSQL (own schema).

mod common;

use crmsync_core::SyncState;
use crmsync_core::testkit::store::check_store;
use crmsync_sql::SqlStore;

use common::{PgSchema, TempDb, pg_url};

#[tokio::test]
async fn sqlite_passes_the_suite() {
    let db = TempDb::new("conformance");
    let store = SqlStore::connect(&db.url()).await.expect("connect");
    assert_eq!(store.backend(), "sqlite");
    check_store(&store).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_plain_path_and_reopen_keep_data() {
    let db = TempDb::new("reopen");
    let path = db.path.to_str().expect("utf-8 path").to_owned();
    let store = SqlStore::connect(&path).await.expect("connect by path");
    store.status("rep-a").await.expect("status");
    store.set_state("rep-a", 0, crmsync_core::RepState::Disabled, Some("x".into()), None).await.expect("set");
    store.close().await;
    let again = SqlStore::connect(&db.url()).await.expect("reopen");
    let st = again.status("rep-a").await.expect("status");
    assert_eq!(st.state, crmsync_core::RepState::Disabled, "data survives reopening");
    assert_eq!(st.last_error.as_deref(), Some("x"));
    again.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = SqlStore::connect("sqlite::memory:").await.expect("connect");
    check_store(&store).await;
}

#[tokio::test]
async fn postgres_passes_the_suite() {
    let Some(url) = pg_url("postgres_passes_the_suite") else { return };
    let schema = PgSchema::new(&url, "conformance");
    let store = schema.store().await;
    assert_eq!(store.backend(), "postgres");
    check_store(&store).await;
    // Connecting again to the migrated schema is fine (migrations are not re-applied).
    let again = schema.store().await;
    assert!(!again.statuses().await.expect("statuses").is_empty());
    again.close().await;
    store.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn runs_are_recorded_with_their_counters() {
    use crmsync_core::RepState;
    use crmsync_core::report::CycleReport;
    use sqlx::Connection;

    let db = TempDb::new("runs");
    let store = SqlStore::connect(&db.url()).await.expect("connect");
    let mut r = CycleReport { rep: "rep-r".into(), provider: "google".into(), ..Default::default() };
    r.contacts.created_in_crm = 2;
    r.events.created_in_crm = 3;
    r.contacts.updated_in_provider = 4;
    r.events.errors = 1;
    r.requests.crm = 11;
    r.requests.provider = 12;
    store.set_state("rep-r", 0, RepState::Ok, None, Some(&r)).await.expect("run 1");
    store.set_state("rep-r", 0, RepState::Syncing, None, None).await.expect("no run");
    let r2 = CycleReport { error: Some("boom".into()), ..r.clone() };
    store.set_state("rep-r", 0, RepState::Error, Some("boom".into()), Some(&r2)).await.expect("run 2");
    assert_eq!(store.runs("rep-r").await.expect("runs"), vec![r.clone(), r2], "one run per report, oldest first");
    store.close().await;

    let mut c = sqlx::SqliteConnection::connect(&db.url()).await.expect("open");
    let row: (i64, i64, i64, i64, i64, i64, Option<String>) = sqlx::query_as(
        "SELECT created_in_crm, updated_in_provider, errors, requests_crm, requests_provider, seq, error \
         FROM runs WHERE rep = 'rep-r' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&mut c)
    .await
    .expect("runs row");
    assert_eq!(row, (5, 4, 1, 11, 12, 2, Some("boom".into())), "counters are summed over both kinds");
}

/// Delete Safety's quarantine and a reset's undo data are in the file: they survive a restart.
#[tokio::test]
async fn held_deletes_and_undo_survive_reopening() {
    use crmsync_core::testkit::store::{held_delete, sample_link};
    use crmsync_core::{Kind, LinkBatch, LinkState, RepState, ResetRecord, ResetScope};
    let db = TempDb::new("held");
    let store = SqlStore::connect(&db.url()).await.expect("connect");
    let (k, rep) = (Kind::Contact, "rep-held");
    let link = sample_link(rep, k, 1, LinkState::Linked);
    let held = held_delete(k, &link.key, &link.crm_id, chrono::Utc::now());
    let batch = LinkBatch { upsert: vec![link.clone()], hold: vec![held.clone()], ..Default::default() };
    store.commit(rep, 0, k, &batch).await.expect("hold");
    store.close().await;
    let again = SqlStore::connect(&db.url()).await.expect("reopen");
    let back = again.held(rep, k).await.expect("held");
    assert_eq!(back.len(), 1, "the held delete survives a restart");
    assert_eq!((&back[0].key, &back[0].label), (&held.key, &held.label));
    let rec = ResetRecord::new(rep, "005A", "Ada", ResetScope::All, chrono::Utc::now());
    again.reset(&rec, RepState::ResetPending, false).await.expect("reset");
    again.close().await;
    let third = SqlStore::connect(&db.url()).await.expect("reopen");
    let by = crmsync_core::Actor { admin_id: "005A".into(), admin_name: "Ada".into(), at: chrono::Utc::now() };
    third.undo_reset(rep, &by).await.expect("the undo data survives a restart");
    assert_eq!(third.links(rep, k).await.expect("links"), vec![link]);
    assert_eq!(third.held(rep, k).await.expect("held").len(), 1);
    third.close().await;
}
