//! Many workers, one store: 4 workers (tasks, each with its own pool) share 200 due reps.
//! Every rep is claimed exactly once per round; a worker that stops renewing loses its reps when
//! its lease ends and the others finish them; no link is written twice. Time is simulated
//! through the `now` parameter, so nothing here sleeps.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crmsync_core::testkit::store::sample_link;
use crmsync_core::{ErrorKind, Kind, Leases, LinkBatch, LinkState, Side, SyncKey, SyncState};
use crmsync_sql::{SqlStore, StoreOptions};

use common::{PgSchema, TempDb, pg_url};

const REPS: usize = 200;
const LEASE: Duration = Duration::from_millis(500);

/// Claim in small bites until nothing is due; commit one link per claimed rep (its key names the
/// round and the worker, so a rep handled twice would show two links) and release it.
async fn work(
    store: Arc<SqlStore>,
    worker: String,
    round: u32,
    now: DateTime<Utc>,
    next: DateTime<Utc>,
) -> Vec<String> {
    let mut mine = vec![];
    loop {
        let claimed = store.claim_due_reps(&worker, 7, LEASE, now).await.expect("claim");
        if claimed.is_empty() {
            return mine;
        }
        for rep in claimed {
            store.renew_lease(&worker, &rep, LEASE, now).await.expect("renew a lease just taken");
            let mut link = sample_link(&rep, Kind::Contact, round as usize, LinkState::Linked);
            link.key = SyncKey::derive(&rep, Kind::Contact, Side::Crm, &format!("round{round}-{worker}"));
            link.crm_id = format!("{worker}/{round}");
            let batch = LinkBatch { upsert: vec![link], ..Default::default() };
            store.commit(&rep, 0, Kind::Contact, &batch).await.expect("commit");
            store.release(&worker, &rep, Some(next)).await.expect("release");
            mine.push(rep);
        }
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(2_000_000_000 + secs, 0).single().expect("time")
}

async fn scenario(stores: Vec<Arc<SqlStore>>) {
    assert_eq!(stores.len(), 4);
    let reps: Vec<String> = (0..REPS).map(|i| format!("rep-{i:03}")).collect();
    for r in &reps {
        stores[0].schedule(r, t(0)).await.expect("schedule");
    }

    // Round 1: all four race for the 200 reps.
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(work(s.clone(), format!("w{i}"), 1, t(0), t(3600))))
        .collect();
    let mut claims: Vec<String> = vec![];
    let mut per_worker = vec![];
    for task in tasks {
        let got = task.await.expect("worker");
        per_worker.push(got.len());
        claims.extend(got);
    }
    assert_eq!(claims.len(), REPS, "round 1: {REPS} claims in all ({per_worker:?})");
    assert_eq!(claims.iter().collect::<BTreeSet<_>>().len(), REPS, "round 1: every rep claimed exactly once");

    // Round 2: w0 claims a share, then dies (no renew, no commit, no release).
    let dead: Vec<String> = stores[0].claim_due_reps("w0", 20, LEASE, t(3600)).await.expect("claim");
    assert_eq!(dead.len(), 20);
    let tasks: Vec<_> = stores[1..]
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(work(s.clone(), format!("w{}", i + 1), 2, t(3600), t(7200))))
        .collect();
    let mut live: Vec<String> = vec![];
    for task in tasks {
        live.extend(task.await.expect("worker"));
    }
    assert_eq!(live.len(), REPS - dead.len(), "round 2: the live workers take every rep not held");
    let live_set: BTreeSet<&String> = live.iter().collect();
    assert_eq!(live_set.len(), live.len(), "round 2: no rep claimed twice");
    assert!(dead.iter().all(|r| !live_set.contains(r)), "a held lease is respected");

    // Just before the lease ends nothing is handed out; at its end the others take over.
    let before_end = t(3600) + chrono::Duration::milliseconds(499);
    assert!(stores[1].claim_due_reps("w1", 100, LEASE, before_end).await.expect("claim").is_empty());
    let after = t(3600) + chrono::Duration::milliseconds(500);
    let tasks: Vec<_> = stores[1..]
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(work(s.clone(), format!("w{}", i + 1), 2, after, t(7200))))
        .collect();
    let mut rescued: Vec<String> = vec![];
    for task in tasks {
        rescued.extend(task.await.expect("worker"));
    }
    rescued.sort();
    let mut dead_sorted = dead.clone();
    dead_sorted.sort();
    assert_eq!(rescued, dead_sorted, "the dead worker's reps are finished by the others, once each");
    for r in &dead {
        let e = stores[0].renew_lease("w0", r, LEASE, after).await.expect_err("w0 lost the rep");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e = stores[0].release("w0", r, Some(t(7200))).await.expect_err("w0 lost the rep");
        assert_eq!(e.kind(), ErrorKind::Conflict);
    }

    // No link written twice: exactly one link per rep and round.
    let mut per_round: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reps {
        let links = stores[2].links(r, Kind::Contact).await.expect("links");
        assert_eq!(links.len(), 2, "{r}: one link per round, got {links:?}");
        for l in links {
            let round = l.crm_id.split('/').nth(1).expect("round").to_owned();
            *per_round.entry(round).or_default() += 1;
            assert_ne!(l.crm_id, "w0/2", "the dead worker wrote nothing in round 2");
        }
    }
    assert_eq!(per_round, BTreeMap::from([("1".to_owned(), REPS), ("2".to_owned(), REPS)]));
    // Everything is released and due again for round 3, nothing before.
    assert!(stores[3].claim_due_reps("w3", 1000, LEASE, t(7199)).await.expect("claim").is_empty());
    assert_eq!(stores[3].claim_due_reps("w3", 1000, LEASE, t(7200)).await.expect("claim").len(), REPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_postgres_workers_share_200_reps() {
    let Some(url) = pg_url("four_postgres_workers_share_200_reps") else { return };
    let schema = PgSchema::new(&url, "workers");
    let mut stores = vec![];
    for _ in 0..4 {
        let opts = StoreOptions { max_connections: 3, ..schema.options() };
        stores.push(Arc::new(SqlStore::connect_with(&url, opts).await.expect("connect")));
    }
    scenario(stores.clone()).await;
    for s in stores {
        s.close().await;
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_sqlite_workers_share_200_reps() {
    let db = TempDb::new("workers");
    let mut stores = vec![];
    for _ in 0..4 {
        let opts = StoreOptions { max_connections: 2, ..StoreOptions::default() };
        stores.push(Arc::new(SqlStore::connect_with(&db.url(), opts).await.expect("connect")));
    }
    scenario(stores.clone()).await;
    for s in stores {
        s.close().await;
    }
}

/// A cycle keeps committing at the epoch it started with while an admin resets the rep: whatever
/// the interleaving, once the reset is done no linked link is left and every later commit of
/// that cycle is refused.
async fn reset_races_commits(cycle: Arc<SqlStore>, admin: Arc<SqlStore>) {
    let rep = "racing-rep".to_owned();
    let epoch = cycle.status(&rep).await.expect("status").epoch;
    let writer = {
        let cycle = cycle.clone();
        let rep = rep.clone();
        tokio::spawn(async move {
            let mut i = 0;
            loop {
                let link = sample_link(&rep, Kind::Contact, i, LinkState::Linked);
                let batch = LinkBatch { upsert: vec![link], ..Default::default() };
                match cycle.commit(&rep, epoch, Kind::Contact, &batch).await {
                    Ok(()) => i += 1,
                    Err(e) => return (i, e.kind()),
                }
            }
        })
    };
    // Let the writer land a few commits first.
    while cycle.links(&rep, Kind::Contact).await.expect("links").len() < 5 {
        tokio::task::yield_now().await;
    }
    let record = crmsync_core::ResetRecord::new(&rep, "005A", "Ada", crmsync_core::ResetScope::All, t(0));
    let removed = admin.reset(&record, crmsync_core::RepState::ResetPending, false).await.expect("reset");
    let (committed, kind) = writer.await.expect("writer");
    assert_eq!(kind, ErrorKind::Conflict, "the cycle's commits are refused after the reset");
    assert!(committed >= 5);
    assert_eq!(removed["contact"], committed as u64, "the reset removed exactly what the cycle had committed");
    assert!(admin.links(&rep, Kind::Contact).await.expect("links").is_empty(), "no link written after the reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reset_pre_empts_a_running_cycle() {
    let Some(url) = pg_url("postgres_reset_pre_empts_a_running_cycle") else { return };
    let schema = PgSchema::new(&url, "reset_race");
    let (a, b) = (Arc::new(schema.store().await), Arc::new(schema.store().await));
    reset_races_commits(a.clone(), b.clone()).await;
    a.close().await;
    b.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reset_pre_empts_a_running_cycle() {
    let db = TempDb::new("reset_race");
    let a = Arc::new(SqlStore::connect(&db.url()).await.expect("connect"));
    let b = Arc::new(SqlStore::connect(&db.url()).await.expect("connect"));
    reset_races_commits(a.clone(), b.clone()).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_starting_together_on_a_new_schema_all_connect() {
    let Some(url) = pg_url("workers_starting_together_on_a_new_schema_all_connect") else { return };
    let schema = PgSchema::new(&url, "start");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (url, opts) = (url.clone(), schema.options());
            tokio::spawn(async move { SqlStore::connect_with(&url, opts).await })
        })
        .collect();
    let mut stores = vec![];
    for t in tasks {
        stores.push(t.await.expect("task").expect("every worker connects while the others migrate"));
    }
    stores[0].schedule("rep", t(0)).await.expect("schedule");
    assert_eq!(stores[3].claim_due_reps("w", 10, LEASE, t(0)).await.expect("claim"), vec!["rep".to_owned()]);
    for s in stores {
        s.close().await;
    }
    schema.drop().await;
}
