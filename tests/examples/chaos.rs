//! The chaos harness's long run: many full-size seeds and a Markdown report.
//!
//! ```sh
//! cargo run --release -p crmsync-tests --example chaos -- --seeds 10000 --report docs/chaos.md
//! cargo run --release -p crmsync-tests --example chaos -- --seed 4711          # replay one seed
//! ```
//! Options: `--from N` (first seed, default 0), `--parallel N` (default 4), `--postgres URL`
//! (a fresh schema per seed instead of a SQLite file), `--ci` (the CI profile's seed size).

use std::fmt::Write as _;
use std::process::ExitCode;

use crmsync_tests::chaos::{Backend, Profile, Summary, run_seeds};

struct Args {
    from: u64,
    seeds: u64,
    parallel: usize,
    report: Option<String>,
    backend: Backend,
    profile: Profile,
}

fn parse() -> Result<Args, String> {
    let mut a =
        Args { from: 0, seeds: 100, parallel: 4, report: None, backend: Backend::Sqlite, profile: Profile::FULL };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--seed" => {
                a.from = number(value()?)?;
                a.seeds = 1;
            }
            "--from" => a.from = number(value()?)?,
            "--seeds" => a.seeds = number(value()?)?,
            "--parallel" => a.parallel = number(value()?)?.clamp(1, 64) as usize,
            "--report" => a.report = Some(value()?),
            "--postgres" => a.backend = Backend::Postgres(value()?),
            "--ci" => a.profile = Profile::CI,
            other => return Err(format!("unknown option {other} (see the example's doc comment)")),
        }
    }
    Ok(a)
}

fn report(a: &Args, s: &Summary) -> String {
    let mut r = String::new();
    let backend = match &a.backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres(_) => "PostgreSQL",
    };
    let _ = writeln!(r, "## Run: seeds {}..{} on {backend}\n", a.from, a.from + a.seeds);
    let _ = writeln!(r, "| figure | value |\n|---|---|");
    let (t, faults) = (&s.totals, s.totals.faults.values().sum::<u64>());
    for (k, v) in [
        ("seeds", s.seeds.to_string()),
        ("failed seeds", s.failed.len().to_string()),
        ("wall time", format!("{:.0} s", s.wall.as_secs_f64())),
        ("cycles", t.cycles.to_string()),
        ("cycles killed at a random moment", t.killed.to_string()),
        ("cycles crashed after the k-th remote write", t.crashed.to_string()),
        ("concurrent cycles refused (lease held)", t.busy.to_string()),
        ("Reset Syncs", t.resets.to_string()),
        ("edits between cycles", t.edits.to_string()),
        ("of which hostile", t.hostile.to_string()),
        ("faults fired", faults.to_string()),
    ] {
        let _ = writeln!(r, "| {k} | {v} |");
    }
    let _ = writeln!(r, "\nFaults fired by kind (from the fakes' request logs):\n\n| fault | fired |\n|---|---|");
    for (k, v) in &t.faults {
        let _ = writeln!(r, "| `{k}` | {v} |");
    }
    if !s.failed.is_empty() {
        let _ = writeln!(r, "\nFailing seeds:\n\n```\n{}```", s.failures());
    }
    r
}

#[tokio::main]
async fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let mut done = 0u64;
    let s = run_seeds(a.from..a.from + a.seeds, a.backend.clone(), a.profile, a.parallel, |o| {
        done += 1;
        if !o.violations.is_empty() {
            eprintln!("seed {} FAILED — replay: {}", o.seed, o.replay());
            for v in o.violations.iter().take(5) {
                eprintln!("  {v}");
            }
        }
        if done % 100 == 0 {
            eprintln!("{done} seeds done");
        }
    })
    .await;
    println!("{}", s.line());
    if !s.failed.is_empty() {
        println!("{}", s.failures());
    }
    if let Some(path) = &a.report {
        let text = report(&a, &s);
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let marker = "<!-- chaos runs -->";
        let new = match old.split_once(marker) {
            Some((head, _)) => format!("{head}{marker}\n\n{text}"),
            None => format!("{old}\n{marker}\n\n{text}"),
        };
        if let Err(e) = std::fs::write(path, new) {
            eprintln!("chaos: cannot write {path}: {e}");
            return ExitCode::from(2);
        }
    }
    if s.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
