//! Many seeds at once, and what they add up to.

use std::ops::Range;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::{Backend, Outcome, Profile, run_seed};

/// The seeds of a run, added up.
#[derive(Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub failed: Vec<Outcome>,
    /// Every seed's counters and faults added up (its `seed` and `violations` unused).
    pub totals: Outcome,
    pub wall: Duration,
}

impl Summary {
    fn add(&mut self, o: Outcome) {
        self.seeds += 1;
        self.tally(&o);
        if !o.violations.is_empty() {
            self.failed.push(o);
        }
    }

    /// Add `o`'s counters and faults to the totals.
    fn tally(&mut self, o: &Outcome) {
        let t = &mut self.totals;
        for (k, n) in &o.faults {
            *t.faults.entry(k.clone()).or_default() += n;
        }
        t.cycles += o.cycles;
        t.killed += o.killed;
        t.crashed += o.crashed;
        t.busy += o.busy;
        t.resets += o.resets;
        t.edits += o.edits;
        t.hostile += o.hostile;
    }

    /// Add up another run (of other seeds) into this one.
    pub fn merge(&mut self, other: Summary) {
        self.seeds += other.seeds;
        self.tally(&other.totals);
        self.failed.extend(other.failed);
        self.failed.sort_by_key(|o| o.seed);
        self.wall += other.wall;
    }

    /// Every failing seed: its replay command and what it violated.
    pub fn failures(&self) -> String {
        let mut s = String::new();
        for o in &self.failed {
            s.push_str(&format!("seed {} failed — replay: {}\n", o.seed, o.replay()));
            for v in o.violations.iter().take(20) {
                s.push_str(&format!("  {v}\n"));
            }
        }
        s
    }

    /// One paragraph of figures.
    pub fn line(&self) -> String {
        let (t, faults) = (&self.totals, self.totals.faults.values().sum::<u64>());
        format!(
            "{} seeds in {:.1}s: {} failed; {} cycles ({} killed, {} crashed after a write, {} refused by a held lease), \
             {} resets, {} edits ({} hostile), {} faults fired {:?}",
            self.seeds,
            self.wall.as_secs_f64(),
            self.failed.len(),
            t.cycles,
            t.killed,
            t.crashed,
            t.busy,
            t.resets,
            t.edits,
            t.hostile,
            faults,
            t.faults
        )
    }
}

/// Run `seeds` on `backend`, `parallel` at a time; `progress` sees each finished seed.
pub async fn run_seeds(
    seeds: Range<u64>,
    backend: Backend,
    profile: Profile,
    parallel: usize,
    mut progress: impl FnMut(&Outcome),
) -> Summary {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut next = seeds.start;
    let mut running = JoinSet::new();
    loop {
        while running.len() < parallel.max(1) && next < seeds.end {
            running.spawn(run_seed(next, backend.clone(), profile));
            next += 1;
        }
        let Some(done) = running.join_next().await else { break };
        // run_seed catches panics itself; a JoinError here is a panic in that catching.
        let o = done.unwrap_or_else(|e| Outcome {
            violations: vec![super::Violation::new("panic", "-", "no panic", e.to_string())],
            ..Default::default()
        });
        progress(&o);
        summary.add(o);
    }
    summary.failed.sort_by_key(|o| o.seed);
    summary.wall = started.elapsed();
    summary
}
