//! The chaos harness: one seed = the three fakes, a store and the engine wired as `crmsync demo`
//! wires them, then rounds of random edits (hostile data included), random faults of every kind
//! the fake chassis has, random Reset Sync, concurrent and killed cycles; then the faults stop,
//! the cycles run until quiet, and the fakes' own state is checked: no duplicate, no lost edit,
//! no panic, a last cycle writes nothing. Everything is drawn from the seed, so a failing seed
//! replays (`CHAOS_SEED=N cargo test -p crmsync-tests --test chaos`).

mod check;
mod edits;
mod summary;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crmsync_cli::scenario::{Fakes, GOOGLE_USER, Scenario, Size, seed as seed_scenario};
use crmsync_core::port::Acquire;
use crmsync_core::testkit::crash::{CrashSwitch, CrashingCrm, CrashingProvider};
use crmsync_core::{Engine, LeaseTerms, Leased, Rep, RepState, ResetScope, Store};
use crmsync_fake::{Fault, FaultRule, Rng};
use secrecy::SecretString;

pub use check::Violation;
use edits::Model;
pub use summary::{Summary, run_seeds};

/// Where a seed keeps its state.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A SQLite file in the temp directory, removed afterwards.
    Sqlite,
    /// A fresh schema in this PostgreSQL database, dropped afterwards.
    Postgres(String),
}

/// What one seed did and found.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub seed: u64,
    /// Broken promises, each naming the record, the side, expected and actual.
    pub violations: Vec<Violation>,
    /// Faults that fired, by kind, from the fakes' request logs.
    pub faults: BTreeMap<String, u64>,
    /// Cycles run (killed and concurrent ones included).
    pub cycles: u64,
    /// Cycles aborted at a random moment.
    pub killed: u64,
    /// Cycles that crashed after the k-th remote write (crash decorators).
    pub crashed: u64,
    /// Cycles refused because the other concurrent cycle held the lease.
    pub busy: u64,
    pub resets: u64,
    /// Edits made on the fakes between cycles (hostile ones included).
    pub edits: u64,
    pub hostile: u64,
}

impl Outcome {
    /// The one-line replay command of this seed.
    pub fn replay(&self) -> String {
        format!(
            "CHAOS_SEED={} cargo test -p crmsync-tests --test chaos (full size: cargo run -p crmsync-tests --example chaos -- --seed {})",
            self.seed, self.seed
        )
    }
}

/// How big a seed is.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Contacts per rep: `contacts.0 + 0..contacts.1`; events likewise.
    pub contacts: (usize, usize),
    pub events: (usize, usize),
    /// Rounds of edits, faults and cycles.
    pub rounds: usize,
}

impl Profile {
    /// The long run: 30–60 contacts and 10–20 events per rep, 8 rounds.
    pub const FULL: Profile = Profile { contacts: (30, 31), events: (10, 11), rounds: 8 };
    /// The CI slice: smaller scenarios, so hundreds of seeds fit the budget in a debug build.
    pub const CI: Profile = Profile { contacts: (10, 7), events: (3, 4), rounds: 4 };
}
/// Cycles after the faults stop before a seed must be quiet.
const SETTLE: usize = 4;
const LEASE: Duration = Duration::from_secs(120);

/// Run one seed; a panic anywhere in it is a violation, not a crash of the caller.
pub async fn run_seed(seed: u64, backend: Backend, profile: Profile) -> Outcome {
    match tokio::spawn(run(seed, backend, profile)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome {
            seed,
            violations: vec![Violation::new("harness", "-", "a seed that runs", e)],
            ..Default::default()
        },
        Err(e) => Outcome {
            seed,
            violations: vec![Violation::new("panic", "-", "no panic", format!("{e}"))],
            ..Default::default()
        },
    }
}

/// The store of one seed and how to remove it.
struct SeedStore {
    store: Arc<crmsync_sql::SqlStore>,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Schema(String, String),
}

impl SeedStore {
    async fn open(seed: u64, backend: &Backend) -> Result<Self, String> {
        let tag = format!("{seed}_{}_{}", std::process::id(), chrono::Utc::now().timestamp_micros());
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("crmsync-chaos-{tag}.db"));
                let store =
                    crmsync_sql::SqlStore::connect(&path.display().to_string()).await.map_err(|e| e.to_string())?;
                Ok(Self { store: Arc::new(store), cleanup: Cleanup::File(path) })
            }
            Backend::Postgres(url) => {
                let schema = format!("chaos_{tag}");
                let opts = crmsync_sql::StoreOptions {
                    schema: Some(schema.clone()),
                    max_connections: 3,
                    ..Default::default()
                };
                let store = crmsync_sql::SqlStore::connect_with(url, opts).await.map_err(|e| e.to_string())?;
                Ok(Self { store: Arc::new(store), cleanup: Cleanup::Schema(url.clone(), schema) })
            }
        }
    }

    async fn remove(self) {
        self.store.close().await;
        match self.cleanup {
            Cleanup::File(p) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
                }
            }
            Cleanup::Schema(url, schema) => {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                    pool.close().await;
                }
            }
        }
    }
}

/// Everything one seed works with.
struct World {
    fakes: Fakes,
    sc: Scenario,
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    switch: CrashSwitch,
    rng: Rng,
    out: Outcome,
}

async fn run(seed: u64, backend: Backend, profile: Profile) -> Result<Outcome, String> {
    let fakes = Fakes::start().await;
    let mut rng = Rng::new(seed);
    let size = Size {
        contacts: profile.contacts.0 + pick(&mut rng, profile.contacts.1),
        events: profile.events.0 + pick(&mut rng, profile.events.1),
        ..Size::default()
    };
    let sc = seed_scenario(&fakes, size);
    for (i, h) in [&*fakes.salesforce, &*fakes.graph, &*fakes.google].into_iter().enumerate() {
        h.seed(seed.wrapping_mul(3).wrapping_add(i as u64));
        h.set_log_cap(usize::MAX);
    }
    trace(|| "fakes seeded".into());
    let seed_store = SeedStore::open(seed, &backend).await?;
    trace(|| "store open".into());
    let store: Arc<dyn Store> = seed_store.store.clone();
    let switch = CrashSwitch::default();
    let crm = Arc::new(CrashingCrm { inner: fakes.crm().map_err(|e| e.to_string())?, switch: switch.clone() });
    let mut engine = Engine::new(crm, store.clone()).with_clock(sc.now);
    for p in fakes.providers().map_err(|e| e.to_string())? {
        engine = engine.with_provider(Arc::new(CrashingProvider { inner: p, switch: switch.clone() }));
    }
    let engine = Arc::new(engine);
    engine.reconnect(&sc.google_rep, SecretString::from(sc.google_grant.clone())).await.map_err(|e| e.to_string())?;
    let mut w = World { fakes, sc, engine, store, switch, rng, out: Outcome { seed, ..Default::default() } };
    // The reps start synced: one clean cycle each (the scenario's pairs are linked).
    for rep in [w.sc.exchange_rep.clone(), w.sc.google_rep.clone()] {
        match w.cycle(&rep, "chaos").await {
            Some(Leased::Ran(r)) if r.error.is_none() => {}
            other => {
                w.out.violations.push(Violation::new("first sync", &rep.name, "a clean first cycle", describe(&other)))
            }
        }
    }
    let mut model = Model::new(&w.fakes, &w.sc);

    for round in 0..profile.rounds {
        trace(|| format!("round {round}"));
        model.edit_round(&w.fakes, &w.sc, &mut w.rng, round, &mut w.out);
        w.inject_faults();
        if w.rng.unit() < 0.15 {
            w.random_reset(&mut model).await;
        }
        w.reconnect_if_needed().await;
        for (ix, rep) in [w.sc.exchange_rep.clone(), w.sc.google_rep.clone()].into_iter().enumerate() {
            if w.chaotic_cycle(&rep).await {
                model.synced(ix);
            }
        }
    }

    // Faults stop: cycles until quiet, then the checks.
    w.switch.disarm();
    for h in [&*w.fakes.salesforce, &*w.fakes.graph, &*w.fakes.google] {
        h.clear_faults();
    }
    w.reconnect_if_needed().await;
    let mut quiet = false;
    let mut last_failed = vec![];
    for _ in 0..SETTLE {
        let mut writes = 0;
        let mut failed = vec![];
        for rep in [w.sc.exchange_rep.clone(), w.sc.google_rep.clone()] {
            match w.cycle(&rep, "chaos-settle").await {
                Some(Leased::Ran(r)) if r.error.is_none() => writes += r.writes(),
                other => failed.push(format!("{}: {}", rep.name, describe(&other))),
            }
        }
        if failed.is_empty() && writes == 0 {
            quiet = true;
            break;
        }
        last_failed = failed;
    }
    if !quiet {
        let why = if last_failed.is_empty() { "still writing".to_owned() } else { last_failed.join("; ") };
        w.out.violations.push(Violation::new(
            "convergence",
            "-",
            format!("a cycle that writes nothing within {SETTLE} fault-free rounds"),
            why,
        ));
    }
    for rep in [&w.sc.exchange_rep, &w.sc.google_rep] {
        match w.store.status(&rep.id).await {
            Ok(s) if s.state == RepState::Ok => {}
            Ok(s) => w.out.violations.push(Violation::new(
                "rep state",
                &rep.name,
                "ok",
                format!("{} ({})", s.state.as_str(), s.last_error.unwrap_or_default()),
            )),
            Err(e) => w.out.violations.push(Violation::new("rep state", &rep.name, "ok", e.to_string())),
        }
    }
    trace(|| "checks".into());
    w.out.violations.extend(check::duplicates(&w.fakes, &w.sc, &model));
    w.out.violations.extend(check::lost_edits(&w.fakes, &w.sc, &model));
    w.out.faults = fault_counts(&w.fakes);
    trace(|| "store removed".into());
    seed_store.remove().await;
    trace(|| "done".into());
    Ok(w.out)
}

fn ok(l: &Option<Leased>) -> bool {
    matches!(l, Some(Leased::Ran(r)) if r.error.is_none() && r.contacts.errors == 0)
}

fn describe(l: &Option<Leased>) -> String {
    match l {
        None => "panicked or aborted".into(),
        Some(Leased::Ran(r)) => r.error.clone().unwrap_or_else(|| format!("ran, {} writes", r.writes())),
        Some(Leased::Busy(h)) => format!("lease held by {}", h.holder),
        Some(Leased::Abandoned(why)) => why.clone(),
    }
}

/// `CHAOS_TRACE=1` prints what a seed does, step by step (for replaying a failure).
pub(crate) fn trace(what: impl FnOnce() -> String) {
    if std::env::var_os("CHAOS_TRACE").is_some() {
        eprintln!("chaos: {}", what());
    }
}

/// A uniform draw in `0..n`.
pub(crate) fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

impl World {
    fn terms(holder: &str) -> LeaseTerms {
        LeaseTerms { holder: holder.into(), length: LEASE, wait: false, next_in: None }
    }

    /// One leased cycle in its own task (a panic is caught and recorded).
    async fn cycle(&mut self, rep: &Rep, holder: &str) -> Option<Leased> {
        self.out.cycles += 1;
        let (engine, rep2, terms) = (self.engine.clone(), rep.clone(), Self::terms(holder));
        match tokio::spawn(async move { engine.leased_cycle(&rep2, &terms, std::future::pending()).await }).await {
            Ok(Ok(l)) => {
                trace(|| {
                    let detail = match &l {
                        Leased::Ran(r) => {
                            let c = &r.contacts;
                            format!(
                                " (contacts: created crm/provider {}/{}, updated {}/{}, deleted {}/{}, linked {}, \
                                 {} conflicts, skipped {:?}, errors {:?})",
                                c.created_in_crm,
                                c.created_in_provider,
                                c.updated_in_crm,
                                c.updated_in_provider,
                                c.deleted_in_crm,
                                c.deleted_in_provider,
                                c.linked,
                                c.conflicts,
                                c.skipped,
                                c.item_errors
                            )
                        }
                        _ => String::new(),
                    };
                    format!("cycle {holder} {}: {}{detail}", rep.name, describe(&Some(l.clone())))
                });
                Some(l)
            }
            Ok(Err(e)) => Some(Leased::Abandoned(format!("store error: {e}"))),
            Err(e) => {
                self.panic(rep, e);
                None
            }
        }
    }

    fn panic(&mut self, rep: &Rep, e: tokio::task::JoinError) {
        if e.is_panic() {
            self.out.violations.push(Violation::new("panic", &rep.name, "no panic", format!("{e}")));
        }
    }

    /// One of: a plain cycle, two concurrent cycles, a cycle killed at a random moment, a cycle
    /// that crashes after the k-th remote write. Whether a cycle ran to its end without error.
    async fn chaotic_cycle(&mut self, rep: &Rep) -> bool {
        match pick(&mut self.rng, 4) {
            0 => ok(&self.cycle(rep, "chaos").await),
            1 => self.concurrent(rep).await,
            2 => {
                self.killed(rep).await;
                false
            }
            _ => {
                let k = 1 + pick(&mut self.rng, 12) as u64;
                trace(|| format!("crash after {k} writes armed"));
                self.switch.arm(k);
                let r = self.cycle(rep, "chaos").await;
                if !self.switch.armed() {
                    self.out.crashed += 1;
                }
                self.switch.disarm();
                ok(&r)
            }
        }
    }

    async fn concurrent(&mut self, rep: &Rep) -> bool {
        // Exclusion, without depending on timing: while "chaos-a" holds the rep's lease, a cycle
        // of "chaos-b" must find it held and run nothing.
        let store = self.engine.store().clone();
        let held = store.acquire_lease("chaos-a", &rep.id, LEASE, chrono::Utc::now()).await;
        if matches!(held, Ok(Acquire::Acquired)) {
            match self.cycle(rep, "chaos-b").await {
                Some(Leased::Busy(_)) => self.out.busy += 1,
                Some(Leased::Ran(_)) => self.out.violations.push(Violation::new(
                    "lease",
                    &rep.name,
                    "a cycle finds the lease another holder holds and runs nothing",
                    "it ran",
                )),
                _ => {}
            }
        }
        // Then both at once: "chaos-a" (who holds the lease) and "chaos-b" race. Two runs are
        // legitimate only one after the other (the first released its lease before the second
        // asked); that both ran at the same time would show as duplicates or lost edits, which
        // the final checks count.
        self.out.cycles += 2;
        let spawn = |holder: &str| {
            let (engine, rep, terms) = (self.engine.clone(), rep.clone(), Self::terms(holder));
            tokio::spawn(async move { engine.leased_cycle(&rep, &terms, std::future::pending()).await })
        };
        let (a, b) = (spawn("chaos-a"), spawn("chaos-b"));
        let (a, b) = tokio::join!(a, b);
        let mut clean = false;
        for r in [a, b] {
            trace(|| match &r {
                Ok(Ok(l)) => format!("concurrent cycle of {}: {}", rep.name, describe(&Some(l.clone()))),
                _ => format!("concurrent cycle of {}: failed or panicked", rep.name),
            });
            match r {
                Ok(Ok(Leased::Busy(_))) => self.out.busy += 1,
                Ok(Ok(l)) => clean |= ok(&Some(l)),
                Ok(Err(_)) => {}
                Err(e) => self.panic(rep, e),
            }
        }
        clean
    }

    /// A cycle aborted after a random delay: the task is dropped at an await point, a store
    /// transaction in flight rolls back — what SIGKILL does. Its lease then runs out.
    async fn killed(&mut self, rep: &Rep) {
        self.out.cycles += 1;
        let (engine, rep2, terms) = (self.engine.clone(), rep.clone(), Self::terms("chaos-killed"));
        let task = tokio::spawn(async move { engine.leased_cycle(&rep2, &terms, std::future::pending()).await });
        tokio::time::sleep(Duration::from_millis(pick(&mut self.rng, 40) as u64)).await;
        task.abort();
        match task.await {
            Err(e) if e.is_cancelled() => {
                trace(|| format!("cycle of {} killed", rep.name));
                self.out.killed += 1
            }
            Err(e) => self.panic(rep, e),
            Ok(_) => {}
        }
        // The killed process' lease ends (it can never renew it). A statement the abort cut off
        // may still finish on the server: wait for it, then take the lease and let it go.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let holder = "chaos-killed";
        if self.store.acquire_lease(holder, &rep.id, LEASE, chrono::Utc::now()).await.is_ok() {
            let _ = self.store.release(holder, &rep.id, None).await;
        }
    }

    fn inject_faults(&mut self) {
        let handles = [&*self.fakes.salesforce, &*self.fakes.graph, &*self.fakes.google];
        for h in handles {
            h.clear_faults();
        }
        if self.rng.unit() < 0.2 {
            return; // a calm round
        }
        for (i, h) in handles.into_iter().enumerate() {
            let endpoints: Vec<String> = h.counts().into_keys().collect();
            for _ in 0..pick(&mut self.rng, 3) + 1 {
                let mut fault = random_fault(&mut self.rng);
                if i == 0 && fault == Fault::ExpiredCursor {
                    // The Salesforce fake expires its cursors by moving its clock weeks ahead,
                    // after which its modification times are newer than any mailbox's, and
                    // `newest_wins` between a record and its copy always picks the CRM. Its
                    // cursor expiry is covered by the adapter's tests; here it is a 503.
                    fault = Fault::Unavailable;
                }
                let mut rule = FaultRule::new(fault);
                if !endpoints.is_empty() && self.rng.unit() < 0.5 {
                    rule = rule.endpoint(endpoints[pick(&mut self.rng, endpoints.len())].clone());
                }
                rule = if self.rng.unit() < 0.5 {
                    rule.rate(0.02 + self.rng.unit() * 0.12)
                } else {
                    let n = 1 + pick(&mut self.rng, 20) as u64;
                    rule.nth(n)
                };
                h.inject(rule);
            }
        }
    }

    /// Reset Sync of a random rep by the admin holding both permissions.
    async fn random_reset(&mut self, model: &mut Model) {
        let rep = if self.rng.unit() < 0.5 { self.sc.exchange_rep.clone() } else { self.sc.google_rep.clone() };
        let Ok(admin) = self.engine.find_user(&self.sc.admin).await else { return };
        if self.engine.reset(&admin, &rep, ResetScope::All).await.is_ok() {
            self.out.resets += 1;
            trace(|| format!("reset {}", rep.name));
            model.reset(usize::from(rep.id != self.sc.exchange_rep.id));
        }
    }

    /// The user-managed rep connects again after a reset (with a new grant).
    async fn reconnect_if_needed(&mut self) {
        let rep = self.sc.google_rep.clone();
        if let Ok(s) = self.store.status(&rep.id).await
            && s.state == RepState::NeedsReconnect
        {
            let grant = self.fakes.google.add_refresh_token(GOOGLE_USER);
            let _ = self.engine.reconnect(&rep, SecretString::from(grant)).await;
        }
    }
}

fn random_fault(rng: &mut Rng) -> Fault {
    match pick(rng, 10) {
        0 => Fault::TooManyRequests { retry_after_ms: 1 + pick(rng, 4) as u64 },
        1 => Fault::Throttle403,
        2 => Fault::Unavailable,
        3 => Fault::ServerError,
        4 => Fault::ExpiredToken,
        5 => Fault::Drop,
        6 => Fault::LostReply,
        7 => Fault::Truncated,
        8 => Fault::Latency { ms: 1 + pick(rng, 8) as u64 },
        _ => Fault::ExpiredCursor,
    }
}

/// Faults fired per kind, from the fakes' request logs.
fn fault_counts(f: &Fakes) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for h in [&*f.salesforce, &*f.graph, &*f.google] {
        for e in h.request_log() {
            if let Some(fault) = e.fault {
                let kind = serde_json::to_value(&fault).ok().and_then(|v| v["kind"].as_str().map(str::to_owned));
                *out.entry(kind.unwrap_or_default()).or_default() += 1;
            }
        }
    }
    out
}
