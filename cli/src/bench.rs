//! `crmsync bench`: the scale benchmark. For each size it starts `crmsync sandbox` (the fakes,
//! seeded) in one process and the engine in another (`crmsync bench-engine`, hidden), so the
//! engine's time and memory are measured on their own; the engine runs three cycles over every
//! rep — the initial sync, the second cycle (which reads back what the first one created where
//! the service cannot leave it out) and a quiet one — and reports wall time, its own peak RSS
//! (`VmHWM` of `/proc/self/status`, read after each cycle) and the requests each side received.
//! The report compares the requests with the floor computed from the seeded shape, the page
//! sizes and the batch sizes, and gives each series' growth exponents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use crmsync_core::{ConnectionMode, CycleReport, LeaseTerms, Leased};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::process::{Shutdown, holder};
use crate::scenario::split;

/// Which series `crmsync bench` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Series {
    /// One Exchange rep with N contacts and N/5 meetings (`--contacts`).
    OneRep,
    /// R reps, half Exchange and half Google, each with `--rep-contacts` and `--rep-events` (`--reps`).
    ManyReps,
}

/// Options of `crmsync bench`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Each size starts `crmsync sandbox` on --port-base (and the ports after it) and a \
                        separate engine process; nothing else may listen there. The full run (both series, \
                        every default size) takes several minutes on two cores.")]
pub struct BenchArgs {
    /// The series to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["one-rep", "many-reps"])]
    pub series: Vec<Series>,
    /// Contacts of the one rep, one run per size (each with a fifth as many meetings).
    #[arg(long, value_delimiter = ',', default_values = ["1000", "5000", "20000", "50000"],
          value_parser = clap::value_parser!(u32).range(4..=200_000))]
    pub contacts: Vec<u32>,
    /// Reps of the many-reps series, one run per count (2 to 10000).
    #[arg(long, value_delimiter = ',', default_values = ["10", "100", "1000"],
          value_parser = clap::value_parser!(u16).range(2..=crate::scenario::MAX_REPS as i64))]
    pub reps: Vec<u16>,
    /// Contacts per rep in the many-reps series.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(4..=100_000))]
    pub rep_contacts: u32,
    /// Meetings per rep in the many-reps series.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub rep_events: u32,
    /// Cycles the engine runs at once (1 to 64; default 4).
    #[arg(long, value_name = "N", value_parser = crate::fleet::concurrency_arg())]
    pub concurrency: Option<u16>,
    /// The sandbox's port base (it uses P to P+2, and P+10 for its console).
    #[arg(long, value_name = "P", default_value_t = 8740)]
    pub port_base: u16,
    /// Where to write the report (Markdown); the JSON figures go next to it (`.json`).
    #[arg(long, value_name = "FILE", default_value = "crmsync-bench.md")]
    pub out: PathBuf,
}

/// Options of the hidden `crmsync bench-engine`: the measured process.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub config: crate::commands::ConfigArg,
    /// Cycles over every rep.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub cycles: u8,
    #[arg(long, value_name = "N", value_parser = crate::fleet::concurrency_arg())]
    pub concurrency: Option<u16>,
    /// The variable holding the grant of the user-managed reps.
    #[arg(long, value_name = "VAR")]
    pub grant_env: Option<String>,
}

/// What the engine process measured in one cycle over every rep.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CycleFigures {
    pub wall_s: f64,
    /// The engine process's peak resident set so far (KiB).
    pub peak_rss_kib: u64,
    pub crm_requests: u64,
    pub provider_requests: u64,
    pub writes: u64,
    /// Reps whose cycle failed or did not run.
    pub failed_reps: u64,
    pub item_errors: u64,
}

/// The engine's peak resident set size so far, in KiB (`VmHWM`); 0 where unknown.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `crmsync bench-engine`: run the cycles, print one JSON line per cycle.
pub async fn engine(args: EngineArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let reps = loaded.select(None)?;
    let wired = loaded.wire(&reps).await?;
    if let Some(var) = &args.grant_env {
        let grant = std::env::var(var).with_context(|| format!("--grant-env: {var} is not set"))?;
        for rep in reps.iter().filter(|r| r.connection == ConnectionMode::UserManaged) {
            wired.engine.reconnect(rep, SecretString::from(grant.clone())).await?;
        }
    }
    let concurrency = args.concurrency.or(loaded.concurrency).unwrap_or(crate::fleet::DEFAULT_CONCURRENCY);
    let terms = LeaseTerms { holder: holder("bench"), length: Duration::from_secs(300), wait: false, next_in: None };
    let shutdown = Shutdown::listen();
    for _ in 0..args.cycles {
        let started = Instant::now();
        let mut f = CycleFigures::default();
        crate::fleet::cycle_all(
            &wired.engine,
            reps.iter().cloned(),
            &terms,
            usize::from(concurrency),
            &shutdown,
            Duration::ZERO,
            |rep, outcome| {
                match outcome.with_context(|| format!("syncing {}", rep.name))? {
                    Leased::Ran(r) => add(&mut f, &r),
                    Leased::Busy(_) | Leased::Abandoned(_) => f.failed_reps += 1,
                }
                Ok(())
            },
        )
        .await?;
        f.wall_s = started.elapsed().as_secs_f64();
        f.peak_rss_kib = peak_rss_kib();
        println!("{}", serde_json::to_string(&f)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn add(f: &mut CycleFigures, r: &CycleReport) {
    f.crm_requests += r.requests.crm;
    f.provider_requests += r.requests.provider;
    f.writes += r.contacts.writes() + r.events.writes();
    f.item_errors += r.contacts.errors + r.events.errors;
    if r.error.is_some() || r.state == crmsync_core::RepState::Error {
        f.failed_reps += 1;
    }
}

/// The least any correct sync sends, per side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Floor {
    pub crm: u64,
    pub provider: u64,
}

/// Page and batch sizes the floor is computed from (what the engine's adapters use).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sizes {
    pub salesforce_page: u64,
    pub salesforce_batch: u64,
    pub graph_page: u64,
    pub graph_batch: u64,
    pub google_page: u64,
    pub google_batch: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            salesforce_page: crmsync_salesforce::QUERY_PAGE as u64,
            salesforce_batch: crmsync_salesforce::MAX_BATCH as u64,
            graph_page: crmsync_exchange::Config::default().page_size as u64,
            graph_batch: crmsync_exchange::client::MAX_BATCH as u64,
            google_page: crmsync_google::Config::default().page_size as u64,
            google_batch: crmsync_google::contacts::MAX_BATCH as u64,
        }
    }
}

fn pages(n: u64, page: u64) -> u64 {
    n.div_ceil(page).max(1)
}

fn batches(n: u64, batch: u64) -> u64 {
    n.div_ceil(batch)
}

/// One seeded rep, as the floor sees it.
#[derive(Clone, Copy, Debug)]
struct Shape {
    exchange: bool,
    /// The standard rep of its service (Erin or Gus), with the scenario's special records.
    standard: bool,
    contacts: u64,
    events: u64,
}

impl Shape {
    /// (matched, new in the mailbox, new in the CRM).
    fn split(&self) -> (u64, u64, u64) {
        let (m, p, c) = split(self.contacts as usize);
        (m as u64, p as u64, c as u64)
    }

    /// The initial sync of this rep, tokens left out.
    fn initial(&self, s: &Sizes) -> Floor {
        let (m, p, c) = self.split();
        let std = u64::from(self.standard);
        // Erin's folder also holds the contact another owner has in the CRM; Gus has a contact
        // outside his group (read: People lists every connection).
        let mailbox_contacts = m + p + std;
        // Specials read in the window: private, no-sync, a day before the window, cancelled and
        // three occurrences of a series; the three occurrences are synced.
        let (read_events, synced_events) = (self.events + 7 * std, self.events + 3 * std);
        let crm_reads = pages(m + c, s.salesforce_page) + pages(0, s.salesforce_page);
        let crm = crm_reads + 1 + batches(p, s.salesforce_batch) + batches(synced_events, s.salesforce_batch);
        let provider = if self.exchange {
            // The folder look-up and the query for contacts carrying the folder's category.
            2 + pages(mailbox_contacts, s.graph_page) + pages(read_events, s.graph_page) + batches(c, s.graph_batch)
        } else {
            1 + pages(mailbox_contacts, s.google_page) + pages(read_events, s.google_page) + batches(c, s.google_batch)
        };
        Floor { crm, provider }
    }
}

/// The seeded reps of a run.
fn shapes(reps: u64, contacts: u64, events: u64) -> Vec<Shape> {
    (1..=reps).map(|k| Shape { exchange: k % 2 == 1, standard: k <= 2, contacts, events }).collect()
}

/// The floors of a run: the initial sync (one token per service, and one per Google rep: its
/// own grant or the service account's token for its mailbox) and a quiet cycle (one change read
/// per kind for the whole CRM, one delta read per collection and rep).
fn floors(shapes: &[Shape], s: &Sizes) -> (Floor, Floor) {
    let mut initial = Floor { crm: 1, provider: 0 };
    for sh in shapes {
        let f = sh.initial(s);
        initial.crm += f.crm;
        initial.provider += f.provider + u64::from(!sh.exchange);
    }
    initial.provider += u64::from(shapes.iter().any(|s| s.exchange));
    let quiet = Floor { crm: 2, provider: 2 * shapes.len() as u64 };
    (initial, quiet)
}

/// One measured run.
#[derive(Debug, Serialize)]
pub struct Run {
    pub series: Series,
    pub reps: u64,
    pub contacts_per_rep: u64,
    pub events_per_rep: u64,
    /// Seconds the sandbox took to start and seed (not the engine's).
    pub seed_s: f64,
    pub initial: CycleFigures,
    pub second: CycleFigures,
    pub quiet: CycleFigures,
    pub floor_initial: Floor,
    pub floor_quiet: Floor,
}

impl Run {
    fn size(&self) -> f64 {
        match self.series {
            Series::OneRep => self.contacts_per_rep as f64,
            Series::ManyReps => self.reps as f64,
        }
    }
}

/// The log-log slope of `y` against the run size, between the smallest and the largest run.
pub fn exponent(runs: &[&Run], y: impl Fn(&Run) -> f64) -> Option<f64> {
    let lo = runs.iter().min_by(|a, b| a.size().total_cmp(&b.size()))?;
    let hi = runs.iter().max_by(|a, b| a.size().total_cmp(&b.size()))?;
    let (y0, y1) = (y(lo), y(hi));
    (hi.size() > lo.size() && y0 > 0.0 && y1 > 0.0).then(|| (y1 / y0).ln() / (hi.size() / lo.size()).ln())
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub started: chrono::DateTime<Utc>,
    pub cores: usize,
    pub concurrency: u16,
    pub sizes: Sizes,
    pub runs: Vec<Run>,
    /// Per series: growth exponents of the initial sync's wall time and the engine's peak RSS.
    pub exponents: BTreeMap<String, BTreeMap<&'static str, f64>>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.port_base > u16::MAX - 10 {
        anyhow::bail!("--port-base {} leaves no room for the ports after it", args.port_base);
    }
    let exe = std::env::current_exe().context("cannot find the crmsync binary to start the sandbox and engine")?;
    let concurrency = args.concurrency.unwrap_or(crate::fleet::DEFAULT_CONCURRENCY);
    let mut plan: Vec<(Series, u64, u64, u64)> = vec![];
    for s in &args.series {
        match s {
            Series::OneRep => plan.extend(args.contacts.iter().map(|&n| (*s, 1, u64::from(n), u64::from(n / 5)))),
            Series::ManyReps => plan.extend(
                args.reps.iter().map(|&r| (*s, u64::from(r), u64::from(args.rep_contacts), u64::from(args.rep_events))),
            ),
        }
    }
    let sizes = Sizes::default();
    let mut report = Report {
        started: Utc::now(),
        cores: std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        concurrency,
        sizes,
        runs: vec![],
        exponents: BTreeMap::new(),
    };
    for (series, reps, contacts, events) in plan {
        eprintln!("crmsync bench: {reps} rep(s) × {contacts} contacts + {events} meetings …");
        let run = measure(&exe, &args, concurrency, series, reps, contacts, events, &sizes).await?;
        eprintln!(
            "  initial {:.1} s, {} MiB; quiet {:.2} s; requests crm {} (floor {}), provider {} (floor {})",
            run.initial.wall_s,
            run.initial.peak_rss_kib / 1024,
            run.quiet.wall_s,
            run.initial.crm_requests,
            run.floor_initial.crm,
            run.initial.provider_requests,
            run.floor_initial.provider
        );
        report.runs.push(run);
    }
    for series in [Series::OneRep, Series::ManyReps] {
        let runs: Vec<&Run> = report.runs.iter().filter(|r| r.series == series).collect();
        let mut e = BTreeMap::new();
        if let Some(x) = exponent(&runs, |r| r.initial.wall_s) {
            e.insert("initial_wall", x);
        }
        if let Some(x) = exponent(&runs, |r| r.initial.peak_rss_kib as f64) {
            e.insert("peak_rss", x);
        }
        if let Some(x) = exponent(&runs, |r| r.quiet.wall_s) {
            e.insert("quiet_wall", x);
        }
        if !e.is_empty() {
            report.exponents.insert(format!("{series:?}"), e);
        }
    }
    let md = markdown(&report);
    std::fs::write(&args.out, &md).with_context(|| format!("--out: cannot write {}", args.out.display()))?;
    let json_path = args.out.with_extension("json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    print!("{md}");
    eprintln!("crmsync bench: report written to {} and {}", args.out.display(), json_path.display());
    let failed = report.runs.iter().any(|r| r.initial.failed_reps + r.second.failed_reps + r.quiet.failed_reps > 0);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Removes a run's directory (config, store) when the run ends.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    exe: &Path,
    args: &BenchArgs,
    concurrency: u16,
    series: Series,
    reps: u64,
    contacts: u64,
    events: u64,
    sizes: &Sizes,
) -> anyhow::Result<Run> {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "crmsync-bench-{}-{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    )));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("cannot create {}", dir.0.display()))?;
    let config = dir.0.join("crmsync.toml");
    let started = Instant::now();
    let mut sandbox = tokio::process::Command::new(exe)
        .args(["sandbox", "--json", "--port-base", &args.port_base.to_string()])
        .args(["--contacts", &contacts.to_string(), "--events", &events.to_string(), "--reps", &reps.to_string()])
        .arg("--config-out")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start crmsync sandbox")?;
    let out = sandbox.stdout.take().context("the sandbox has no stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(out).read_line(&mut line).await.context("reading the sandbox's answer")?;
    let info: serde_json::Value = serde_json::from_str(&line).with_context(|| {
        format!("crmsync sandbox did not start (is port {} free?): {}", args.port_base, line.trim())
    })?;
    let seed_s = started.elapsed().as_secs_f64();
    let mut engine = tokio::process::Command::new(exe);
    engine
        .args(["bench-engine", "--cycles", "3", "--concurrency", &concurrency.to_string()])
        .arg("--config")
        .arg(&config)
        .args(["--grant-env", crate::sandbox::ENV_GOOGLE_GRANT])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in info["env"].as_object().into_iter().flatten() {
        engine.env(k, v.as_str().unwrap_or_default());
    }
    let output = engine.output().await.context("cannot run the engine")?;
    let _ = sandbox.kill().await;
    anyhow::ensure!(output.status.success(), "the engine failed ({})", output.status);
    let cycles: Vec<CycleFigures> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("the engine's figures are not JSON lines")?;
    let [initial, second, quiet]: [CycleFigures; 3] =
        cycles.try_into().map_err(|c: Vec<_>| anyhow::anyhow!("the engine reported {} cycles, not 3", c.len()))?;
    let (floor_initial, floor_quiet) = floors(&shapes(reps, contacts, events), sizes);
    Ok(Run {
        series,
        reps,
        contacts_per_rep: contacts,
        events_per_rep: events,
        seed_s,
        initial,
        second,
        quiet,
        floor_initial,
        floor_quiet,
    })
}

/// The report as Markdown tables.
pub fn markdown(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "# crmsync bench, {}\n", r.started.format("%Y-%m-%d %H:%M UTC"));
    let _ = writeln!(
        t,
        "{} cores, {} cycles at once. Engine process only (the fakes run in `crmsync sandbox`). Floors from \
         pages of {} (Salesforce), {} (Graph), {} (Google) and batches of {}, {}, {}.\n",
        r.cores,
        r.concurrency,
        r.sizes.salesforce_page,
        r.sizes.graph_page,
        r.sizes.google_page,
        r.sizes.salesforce_batch,
        r.sizes.graph_batch,
        r.sizes.google_batch
    );
    t.push_str(
        "| reps × contacts + events | initial s | peak RSS MiB | CRM req (floor) | provider req (floor) | second s | second req crm/provider | quiet s | quiet req crm (floor) | quiet req provider (floor) | failed |\n",
    );
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for x in &r.runs {
        let ratio = |n: u64, f: u64| if f == 0 { String::new() } else { format!(" ×{:.2}", n as f64 / f as f64) };
        let _ = writeln!(
            t,
            "| {} × {} + {} | {:.1} | {} | {} ({}{}) | {} ({}{}) | {:.2} | {} / {} | {:.2} | {} ({}) | {} ({}) | {} |",
            x.reps,
            x.contacts_per_rep,
            x.events_per_rep,
            x.initial.wall_s,
            x.initial.peak_rss_kib / 1024,
            x.initial.crm_requests,
            x.floor_initial.crm,
            ratio(x.initial.crm_requests, x.floor_initial.crm),
            x.initial.provider_requests,
            x.floor_initial.provider,
            ratio(x.initial.provider_requests, x.floor_initial.provider),
            x.second.wall_s,
            x.second.crm_requests,
            x.second.provider_requests,
            x.quiet.wall_s,
            x.quiet.crm_requests,
            x.floor_quiet.crm,
            x.quiet.provider_requests,
            x.floor_quiet.provider,
            x.initial.failed_reps + x.second.failed_reps + x.quiet.failed_reps,
        );
    }
    if !r.exponents.is_empty() {
        t.push_str("\nGrowth exponents (log-log slope between the smallest and the largest run of a series):\n\n");
        for (series, e) in &r.exponents {
            let parts: Vec<String> = e.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
            let _ = writeln!(t, "- {series}: {}", parts.join(", "));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_of_the_documented_exchange_rep() {
        // docs/performance.md: Erin at 5,000 contacts and 2,000 meetings, Graph pages of 50.
        let s = Sizes { graph_page: 50, ..Sizes::default() };
        let erin = Shape { exchange: true, standard: true, contacts: 5000, events: 2000 };
        assert_eq!(erin.initial(&s), Floor { crm: 2 + 1 + 1 + 7 + 11, provider: 2 + 76 + 41 + 63 });
    }

    #[test]
    fn floors_count_tokens_once_per_service_and_per_google_rep() {
        let s = Sizes::default();
        let reps = shapes(4, 100, 100);
        let (initial, quiet) = floors(&reps, &s);
        let sum = |f: fn(&Floor) -> u64| reps.iter().map(|r| f(&r.initial(&s))).sum::<u64>();
        assert_eq!(initial.crm, 1 + sum(|f| f.crm));
        assert_eq!(initial.provider, 1 + 2 + sum(|f| f.provider));
        assert_eq!(quiet, Floor { crm: 2, provider: 8 });
    }

    #[test]
    fn exponents_are_log_log_slopes() {
        let run = |reps: u64, wall: f64| Run {
            series: Series::ManyReps,
            reps,
            contacts_per_rep: 100,
            events_per_rep: 100,
            seed_s: 0.0,
            initial: CycleFigures { wall_s: wall, ..Default::default() },
            second: CycleFigures::default(),
            quiet: CycleFigures::default(),
            floor_initial: Floor::default(),
            floor_quiet: Floor::default(),
        };
        let (a, b, c) = (run(10, 1.0), run(1000, 100.0), run(100, 50.0));
        let x = exponent(&[&a, &b, &c], |r| r.initial.wall_s).expect("two sizes");
        assert!((x - 1.0).abs() < 1e-9, "{x}");
        assert!(exponent(&[&a], |r| r.initial.wall_s).is_none());
    }
}
