//! A cycle under the rep's lease: taken before the cycle (or waited for), renewed every third
//! of its length while the cycle runs, released after it. Two cycles of one rep never overlap,
//! whatever starts them, as long as both go through [`Engine::leased_cycle`].
//!
//! A cycle whose lease is lost (it expired and somebody else took it) or that is told to stop
//! is abandoned at its next await point: that is a crash at an arbitrary line, which every
//! cycle is built to survive (remote writes before link writes, cursors last). The rep is then
//! marked `error` with the reason, and the next cycle repairs what was left half-done.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tracing::warn;

use super::Engine;
use crate::config::Rep;
use crate::error::{ErrorKind, Result};
use crate::port::{Acquire, LeaseHolder, RepState};
use crate::report::CycleReport;

/// How a cycle holds its rep's lease.
#[derive(Clone, Debug)]
pub struct LeaseTerms {
    /// The lease holder's name: unique per running process (a worker's id, `sync-<pid>@<host>`).
    pub holder: String,
    /// How long the lease lasts without renewal; it is renewed every third of that.
    pub length: Duration,
    /// Wait for a held lease to be free instead of returning [`Leased::Busy`].
    pub wait: bool,
    /// After the cycle the rep is due again this much later (`None` keeps its schedule).
    pub next_in: Option<chrono::Duration>,
}

/// What [`Engine::leased_cycle`] did.
#[derive(Clone, Debug)]
pub enum Leased {
    /// The cycle ran under the lease (its report).
    Ran(Box<CycleReport>),
    /// Somebody else holds the rep's lease; nothing ran.
    Busy(LeaseHolder),
    /// The cycle started and was abandoned (lost lease, or told to stop); the reason.
    Abandoned(String),
}

/// How often a waiting cycle asks for the lease again.
const WAIT_POLL: Duration = Duration::from_millis(500);

impl Engine {
    /// One cycle of `rep` under its lease (see the module docs). `stop` completing abandons the
    /// cycle (and ends a wait); pass `std::future::pending()` to never stop.
    pub async fn leased_cycle(&self, rep: &Rep, terms: &LeaseTerms, stop: impl Future<Output = ()>) -> Result<Leased> {
        let store = self.store();
        tokio::pin!(stop);
        loop {
            match store.acquire_lease(&terms.holder, &rep.id, terms.length, Utc::now()).await? {
                Acquire::Acquired => break,
                Acquire::Busy(held) if !terms.wait => return Ok(Leased::Busy(held)),
                Acquire::Busy(_) => tokio::select! {
                    _ = tokio::time::sleep(WAIT_POLL) => {}
                    _ = &mut stop => return Ok(Leased::Abandoned("stopped while waiting for the lease".into())),
                },
            }
        }
        let renew = async {
            loop {
                tokio::time::sleep(terms.length / 3).await;
                match store.renew_lease(&terms.holder, &rep.id, terms.length, Utc::now()).await {
                    Err(e) if e.kind() == ErrorKind::Conflict => return e,
                    Err(e) => warn!(rep = %rep.id, "lease not renewed, trying again: {e}"),
                    Ok(()) => {}
                }
            }
        };
        let (outcome, holds) = tokio::select! {
            r = self.cycle(rep) => (r.map(|r| Leased::Ran(Box::new(r))), true),
            lost = renew => (Ok(Leased::Abandoned(format!("cycle abandoned: the lease was lost ({lost})"))), false),
            _ = &mut stop => (Ok(Leased::Abandoned("cycle abandoned: stopped".into())), true),
        };
        if let Ok(Leased::Abandoned(why)) = &outcome {
            let status = store.status(&rep.id).await?;
            if status.state == RepState::Syncing {
                let why = format!("{why}; the next cycle resumes");
                match store.set_state(&rep.id, status.epoch, RepState::Error, Some(why), None).await {
                    Err(e) if e.kind() == ErrorKind::Conflict => {}
                    other => other?,
                }
            }
        }
        if holds {
            let next = terms.next_in.and_then(|d| Utc::now().checked_add_signed(d));
            match store.release(&terms.holder, &rep.id, next).await {
                // The lease ran out at the very end and somebody else holds the rep now.
                Err(e) if e.kind() == ErrorKind::Conflict => warn!(rep = %rep.id, "{e}"),
                other => other?,
            }
        }
        outcome
    }
}
