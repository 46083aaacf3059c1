//! The chaos harness's long run: many full-size seeds and a Markdown report.
//!
//! ```sh
//! cargo run --release -p crmsync-tests --example chaos -- --seeds 10000 --report docs/chaos.md
//! cargo run --release -p crmsync-tests --example chaos -- --seed 4711          # replay one seed
//! ```
//! Options: `--from N` (first seed, default 0), `--parallel N` (default 4), `--postgres URL`
//! (a fresh schema per seed instead of a SQLite file), `--ci` (the CI profile's seed size),
//! `--time-limit SECS` (start no seed after that long: the report then says how many of the
//! seeds ran).

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
    time_limit: Option<std::time::Duration>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        from: 0,
        seeds: 100,
        parallel: 4,
        report: None,
        backend: Backend::Sqlite,
        profile: Profile::FULL,
        time_limit: None,
    };
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
            "--time-limit" => a.time_limit = Some(std::time::Duration::from_secs(number(value()?)?)),
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
    let profile = if a.profile.rounds == Profile::CI.rounds { "CI" } else { "full" };
    let _ = writeln!(r, "## Run: seeds {}..{} on {backend}, {profile} profile\n", a.from, a.from + s.seeds);
    if s.seeds < a.seeds {
        let _ = writeln!(r, "Stopped at the time limit: {} of the {} seeds asked for ran.\n", s.seeds, a.seeds);
    }
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
    // Chunks of seeds, so a time limit can stop between them; progress on stderr.
    let started = std::time::Instant::now();
    let mut s = Summary::default();
    let (mut next, end) = (a.from, a.from + a.seeds);
    while next < end && a.time_limit.is_none_or(|t| started.elapsed() < t) {
        let chunk = next..end.min(next + 100);
        next = chunk.end;
        let part = run_seeds(chunk, a.backend.clone(), a.profile, a.parallel, |o| {
            if !o.violations.is_empty() {
                eprintln!("seed {} FAILED — replay: {}", o.seed, o.replay());
                for v in o.violations.iter().take(5) {
                    eprintln!("  {v}");
                }
            }
        })
        .await;
        s.merge(part);
        eprintln!("{} seeds done, {} failed, {:.0} s", s.seeds, s.failed.len(), started.elapsed().as_secs_f64());
    }
    s.wall = started.elapsed();
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
