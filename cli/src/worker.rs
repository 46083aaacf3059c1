//! `crmsync worker`: cycle every configured rep again and again, sharing the reps with any
//! number of other workers through the store's leases (on PostgreSQL, across machines): each
//! due rep goes to exactly one worker, a lease is renewed while its cycle runs, and the reps of
//! a worker that died are taken over when its leases end.
//!
//! SIGTERM and SIGINT (Ctrl-C) are handled alike: no new rep is taken, the running cycle gets
//! `--grace` seconds to finish (then it is abandoned, which is as safe as a crash), every lease
//! is released, and the worker exits 0.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use crmsync_core::{LeaseTerms, Leased, RepState};

use crate::commands::{ConfigArg, lease_length};
use crate::process::{Shutdown, holder};
use crate::table::{self, busy_line};

/// Options of `crmsync worker`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when every cycle succeeded (also after SIGTERM/SIGINT), 1 when a cycle \
                        failed, 2 on bad input. With --once, reps whose lease another process holds are named \
                        on stderr with the holder and the lease's end.")]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// This worker's name in the leases (default: worker-<pid>@<host>); unique per running worker.
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Reps claimed at a time (1 to 1000; at least --concurrency are claimed).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Seconds a lease lasts without renewal, 3 to 86400 (it is renewed every third of that
    /// while a cycle runs).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = lease_length())]
    pub lease: u64,
    /// Seconds from the end of a rep's cycle to its next one (0 to 31536000, a year).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub interval: u64,
    /// Seconds a running cycle may take to finish after SIGTERM/SIGINT before it is abandoned
    /// (0 to 3600); keep it below the supervisor's stop timeout (docker: 10 s, systemd: 90 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub grace: u64,
    /// Sync every rep that is due now once, then exit (for cron, and to try the worker out).
    #[arg(long)]
    pub once: bool,
    /// Print each cycle report as one JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Cycles run at once (1 to 64; default: `[engine] concurrency` of the config, else 4).
    /// Each rep's requests stay sequential, so a mailbox sees one at a time.
    #[arg(long, value_name = "N", value_parser = crate::fleet::concurrency_arg())]
    pub concurrency: Option<u16>,
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = Shutdown::listen();
    let loaded = args.config.load()?;
    let reps = loaded.select(None)?;
    if reps.is_empty() {
        anyhow::bail!("{}: no [[reps]] are configured; nothing to do", loaded.path.display());
    }
    let wired = loaded.wire(&reps).await?;
    let id = args.id.clone().unwrap_or_else(|| holder("worker"));
    let interval = chrono::Duration::seconds(i64::try_from(args.interval)?);
    let terms = LeaseTerms {
        holder: id.clone(),
        length: Duration::from_secs(args.lease),
        wait: false,
        next_in: Some(interval),
    };
    let grace = Duration::from_secs(args.grace);
    let concurrency = args.concurrency.or(loaded.concurrency).unwrap_or(crate::fleet::DEFAULT_CONCURRENCY);
    let claim = usize::from(args.batch.max(concurrency));
    for rep in &reps {
        wired.store.schedule(&rep.id, Utc::now()).await?;
    }
    let by_id: HashMap<&str, &crmsync_core::Rep> = reps.iter().map(|r| (r.id.as_str(), r)).collect();
    let (mut cycles, mut failed) = (0u64, 0u64);
    let mut done = HashSet::new();
    while !shutdown.requested() {
        let mut claimed = wired.store.claim_due_reps(&id, claim, terms.length, Utc::now()).await?;
        if args.once {
            // Each rep at most once, however short the interval.
            for rep_id in claimed.iter().filter(|r| done.contains(*r)) {
                wired.store.release(&id, rep_id, None).await?;
            }
            claimed.retain(|r| !done.contains(r));
        }
        if claimed.is_empty() {
            if args.once {
                explain_blocked(&wired.store, &id, &reps, &done).await?;
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                _ = shutdown.wait() => break,
            }
        }
        let mut batch = vec![];
        for rep_id in claimed {
            match by_id.get(rep_id.as_str()) {
                // Scheduled by a worker with another config: not ours to sync. Claimed after a
                // stop request: given back untouched.
                Some(rep) if !shutdown.requested() => batch.push((*rep).clone()),
                _ => wired.store.release(&id, &rep_id, None).await?,
            }
        }
        let mut unstarted: HashSet<String> = batch.iter().map(|r| r.id.clone()).collect();
        crate::fleet::cycle_all(
            &wired.engine,
            batch,
            &terms,
            usize::from(concurrency),
            &shutdown,
            grace,
            |rep, outcome| {
                unstarted.remove(&rep.id);
                match outcome? {
                    Leased::Ran(report) => {
                        done.insert(rep.id.clone());
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
                    }
                    // The claim ran out before the cycle began and another process took the rep.
                    Leased::Busy(h) => eprintln!("crmsync worker {id}: {}: {}", rep.name, busy_line(&h)),
                    Leased::Abandoned(why) => {
                        // Stopped past the grace period: not a failure of the cycle.
                        eprintln!("crmsync worker {id}: {}: {why}", rep.name);
                        if !shutdown.requested() {
                            failed += 1;
                        }
                    }
                }
                Ok(())
            },
        )
        .await?;
        // Claimed, but a stop came before their turn: given back untouched.
        for rep_id in unstarted {
            wired.store.release(&id, &rep_id, None).await?;
        }
    }
    eprintln!("crmsync worker {id}: {cycles} cycles, {failed} failed");
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `--once`: name the configured reps this run did not sync because another process holds their
/// lease.
async fn explain_blocked(
    store: &std::sync::Arc<dyn crmsync_core::Store>,
    id: &str,
    reps: &[crmsync_core::Rep],
    done: &HashSet<String>,
) -> anyhow::Result<()> {
    for rep in reps.iter().filter(|r| !done.contains(&r.id)) {
        if let Some(h) = store.lease(&rep.id, Utc::now()).await?.filter(|h| h.holder != id) {
            eprintln!("crmsync worker {id}: {}: {}", rep.name, busy_line(&h));
        }
    }
    Ok(())
}
