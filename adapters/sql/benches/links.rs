//! Link writes per second, SQLite and PostgreSQL, batches of 200 (one `Store::commit` each).
//!
//! `cargo bench -p crmsync-sql`. PostgreSQL runs when `CRMSYNC_TEST_POSTGRES_URL` is set (in a
//! schema of its own, dropped afterwards). Figures go to `docs.md`.

use std::time::Instant;

use crmsync_core::testkit::store::sample_link;
use crmsync_core::{Kind, Link, LinkBatch, LinkState, SyncState};
use crmsync_sql::{SqlStore, StoreOptions};
use sqlx::Connection;

const LINKS: usize = 10_000;
const BATCH: usize = 200;
const SINGLES: usize = 500;

async fn run(label: &str, store: &SqlStore) {
    let rep = "bench-rep";
    let links: Vec<Link> = (0..LINKS).map(|i| sample_link(rep, Kind::Contact, i, LinkState::Linked)).collect();
    for (what, links) in [("insert", links.clone()), ("update", links)] {
        let start = Instant::now();
        for chunk in links.chunks(BATCH) {
            let batch = LinkBatch { upsert: chunk.to_vec(), ..Default::default() };
            store.commit(rep, 0, Kind::Contact, &batch).await.expect("commit");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label:<10} {what}: {LINKS} links in batches of {BATCH}: {secs:.3} s = {:.0} links/s ({:.1} ms per batch)",
            LINKS as f64 / secs,
            secs * 1000.0 / (LINKS / BATCH) as f64
        );
    }
    let start = Instant::now();
    for i in 0..SINGLES {
        let batch =
            LinkBatch { upsert: vec![sample_link(rep, Kind::Event, i, LinkState::Linked)], ..Default::default() };
        store.commit(rep, 0, Kind::Event, &batch).await.expect("commit");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{label:<10} single: {SINGLES} commits of 1 link: {:.2} ms per commit = {:.0} links/s",
        secs * 1000.0 / SINGLES as f64,
        SINGLES as f64 / secs
    );
    assert_eq!(store.links(rep, Kind::Contact).await.expect("links").len(), LINKS);
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("crmsync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    let store = SqlStore::connect(&url).await.expect("sqlite");
    run("sqlite", &store).await;
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    match std::env::var("CRMSYNC_TEST_POSTGRES_URL") {
        Ok(pg) if !pg.is_empty() => {
            let schema = format!("bench_{}", std::process::id());
            let opts = StoreOptions { schema: Some(schema.clone()), ..StoreOptions::default() };
            let store = SqlStore::connect_with(&pg, opts).await.expect("postgres");
            run("postgres", &store).await;
            store.close().await;
            let mut c = sqlx::PgConnection::connect(&pg).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
                .execute(&mut c)
                .await
                .expect("drop schema");
        }
        _ => eprintln!("postgres: skipped: set CRMSYNC_TEST_POSTGRES_URL"),
    }
}
