//! The chaos harness in CI: many small seeds on SQLite and on PostgreSQL (see docs/chaos.md).
//!
//! `CHAOS_SEEDS` / `CHAOS_PG_SEEDS` set how many seeds run (200 / 50); `CHAOS_SEED=N` runs that
//! one seed only (on both backends), to replay a failure; `CHAOS_PARALLEL` how many seeds of a
//! backend run at once (8: a seed mostly waits on loopback HTTP and the store, so more seeds
//! than cores keep the cores busy). The long run, with bigger seeds and a
//! written report: `cargo run --release -p crmsync-tests --example chaos -- --help`.

use crmsync_tests::chaos::{Backend, Profile, Summary, run_seeds};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

fn seeds(count_var: &str, default: u64) -> std::ops::Range<u64> {
    match env_u64("CHAOS_SEED") {
        Some(s) => s..s + 1,
        None => 0..env_u64(count_var).unwrap_or(default),
    }
}

fn parallel() -> usize {
    env_u64("CHAOS_PARALLEL").map_or(8, |n| n.clamp(1, 64) as usize)
}

fn verdict(backend: &str, s: &Summary) {
    eprintln!("chaos on {backend}: {}", s.line());
    assert!(s.failed.is_empty(), "chaos on {backend}: {} seed(s) failed\n{}", s.failed.len(), s.failures());
    if s.seeds >= 20 {
        let (t, faults) = (&s.totals, s.totals.faults.values().sum::<u64>());
        assert!(faults > s.seeds, "the faults must really fire: {faults} over {} seeds", s.seeds);
        assert!(
            t.killed > 0 && t.crashed > 0 && t.busy > 0 && t.resets > 0,
            "every kind of chaos happened: {}",
            s.line()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_sqlite() {
    let s = run_seeds(seeds("CHAOS_SEEDS", 200), Backend::Sqlite, Profile::CI, parallel(), |_| {}).await;
    verdict("sqlite", &s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_postgres() {
    let Ok(url) = std::env::var("CRMSYNC_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CRMSYNC_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "CRMSYNC_REQUIRE_POSTGRES=1 but CRMSYNC_TEST_POSTGRES_URL is not set"
        );
        eprintln!("chaos on postgres: skipped (CRMSYNC_TEST_POSTGRES_URL is not set)");
        return;
    };
    // The PostgreSQL seeds start after the SQLite ones, so they are other scenarios.
    let range = seeds("CHAOS_PG_SEEDS", 50);
    let range =
        if std::env::var("CHAOS_SEED").is_ok() { range } else { 1_000_000 + range.start..1_000_000 + range.end };
    let s = run_seeds(range, Backend::Postgres(url), Profile::CI, parallel(), |_| {}).await;
    verdict("postgres", &s);
}
