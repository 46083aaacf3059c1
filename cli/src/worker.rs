//! `crmsync worker`: cycle every configured rep again and again, sharing the reps with any
//! number of other workers through the store's leases (on PostgreSQL, across machines): each
//! due rep goes to exactly one worker, a lease is renewed while its cycle runs, and the reps of
//! a worker that died are taken over when its leases end.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crmsync_core::{RepState, Store};

use crate::commands::ConfigArg;
use crate::table;

/// Options of `crmsync worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// This worker's name in the leases (default: worker-<pid>); unique per running worker.
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Reps claimed at a time.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Seconds a claim lasts without renewal (it is renewed every third of that while a cycle runs).
    #[arg(long, default_value_t = 300)]
    pub lease: u64,
    /// Seconds from the end of a rep's cycle to its next one.
    #[arg(long, default_value_t = 300)]
    pub interval: u64,
    /// Sync every rep that is due now once, then exit (for cron, and to try the worker out).
    #[arg(long)]
    pub once: bool,
    /// Print each cycle report as one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let reps = loaded.select(None)?;
    if reps.is_empty() {
        anyhow::bail!("{}: no [[reps]] are configured; nothing to do", loaded.path.display());
    }
    anyhow::ensure!(args.batch > 0 && args.lease > 0, "--batch and --lease must be at least 1");
    let wired = loaded.wire(&reps).await?;
    let id = args.id.clone().unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let lease = Duration::from_secs(args.lease);
    let interval = chrono::Duration::seconds(args.interval as i64);
    for rep in &reps {
        wired.store.schedule(&rep.id, Utc::now()).await?;
    }
    let by_id: HashMap<&str, &crmsync_core::Rep> = reps.iter().map(|r| (r.id.as_str(), r)).collect();
    let (mut cycles, mut failed) = (0u64, 0u64);
    let mut done = std::collections::HashSet::new();
    loop {
        let mut claimed = wired.store.claim_due_reps(&id, args.batch, lease, Utc::now()).await?;
        if args.once {
            // Each rep at most once, however short the interval.
            for rep_id in claimed.iter().filter(|r| done.contains(*r)) {
                wired.store.release(&id, rep_id, Utc::now() + interval).await?;
            }
            claimed.retain(|r| !done.contains(r));
        }
        if claimed.is_empty() {
            if args.once {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        for rep_id in claimed {
            let Some(rep) = by_id.get(rep_id.as_str()) else {
                // Scheduled by a worker with another config: not ours to sync.
                wired.store.release(&id, &rep_id, Utc::now() + interval).await?;
                continue;
            };
            let renewal = keep_lease(wired.store.clone(), id.clone(), rep_id.clone(), lease);
            let result = wired.engine.cycle(rep).await;
            renewal.abort();
            let report = result?;
            done.insert(rep_id.clone());
            cycles += 1;
            if report.error.is_some() || report.state == RepState::Error {
                failed += 1;
            }
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", table::cycle(&report));
                println!();
            }
            match wired.store.release(&id, &rep_id, Utc::now() + interval).await {
                // The lease ran out mid-cycle and another worker holds the rep now; the epoch
                // check kept both cycles from writing over each other.
                Err(e) if e.kind() == crmsync_core::ErrorKind::Conflict => tracing::warn!(rep = %rep_id, "{e}"),
                other => other?,
            }
        }
    }
    eprintln!("crmsync worker {id}: {cycles} cycles, {failed} failed");
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Renew the lease on `rep` every third of its length until aborted.
fn keep_lease(store: Arc<dyn Store>, worker: String, rep: String, lease: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            if let Err(e) = store.renew_lease(&worker, &rep, lease, Utc::now()).await {
                tracing::warn!(rep = %rep, "lease not renewed: {e}");
                return;
            }
        }
    })
}
