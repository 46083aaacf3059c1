//! Many reps at once: `sync --all` and `worker` run up to `concurrency` cycles together, each
//! under its own rep's lease ([`Engine::leased_cycle`]).
//!
//! One engine (so one HTTP connection pool per service and one store pool) serves every
//! cycle. A rep's cycle sends its requests one after the other, so a mailbox never sees more
//! than one request of crmsync at a time (Graph allows 4 per mailbox) however many reps run;
//! the CRM sees at most `concurrency` at once. A finished cycle's report is handed to the caller
//! as soon as it ends and nothing of it is kept here: memory grows with `concurrency`, not with
//! the reps done.

use std::time::Duration;

use crmsync_core::{Engine, LeaseTerms, Leased, Rep};
use tokio::task::JoinSet;

use crate::process::Shutdown;

/// The most cycles one process runs at once.
pub const MAX_CONCURRENCY: u16 = 64;

/// The default: enough to hide the round trips of a few reps behind each other.
pub const DEFAULT_CONCURRENCY: u16 = 4;

/// The clap parser of `--concurrency` (1 to [`MAX_CONCURRENCY`]).
pub(crate) fn concurrency_arg() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..=i64::from(MAX_CONCURRENCY))
}

/// Cycle `reps` (in order, at most `concurrency` at a time), each under its lease; `each` gets
/// every rep's outcome as its cycle ends (in the order they end). Once a stop is requested no
/// new cycle starts (those reps are not handed to `each`), and a running one is abandoned
/// `grace` after the request. A task that panicked is an error.
pub(crate) async fn cycle_all(
    engine: &Engine,
    reps: impl IntoIterator<Item = Rep>,
    terms: &LeaseTerms,
    concurrency: usize,
    shutdown: &Shutdown,
    grace: Duration,
    mut each: impl FnMut(Rep, crmsync_core::Result<Leased>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut running = JoinSet::new();
    let mut next = reps.into_iter();
    loop {
        while running.len() < concurrency.max(1) && !shutdown.requested() {
            let Some(rep) = next.next() else { break };
            let (engine, terms, stop) = (engine.clone(), terms.clone(), shutdown.clone());
            running.spawn(async move {
                let stop = async move {
                    stop.wait().await;
                    tokio::time::sleep(grace).await;
                };
                let outcome = engine.leased_cycle(&rep, &terms, stop).await;
                (rep, outcome)
            });
        }
        match running.join_next().await {
            None => return Ok(()),
            Some(Ok((rep, outcome))) => each(rep, outcome)?,
            Some(Err(e)) => anyhow::bail!("a cycle stopped unexpectedly: {e}"),
        }
    }
}
