//! The crmsync command line: thin wiring of config, adapters, store and engine.
//!
//! `scenario` starts the three fakes and seeds the standard scenario; `demo` runs the story on
//! it; `sandbox` serves it on fixed ports with the admin console. `config` parses the config
//! file and wires the engine; `commands` holds `sync`, `reset`, `status` and `connect`; `table`
//! prints reports; `console` is `crmsync serve`, the admin console; `registry` maps provider
//! kinds to their factories.
//!
//! A binary of your own with one more provider kind (the `crmsync-examples` JSON provider is a
//! runnable one):
//!
//! ```no_run
//! # use crmsync_cli::{registry::ProviderFactory, Cli};
//! # fn run(my_factory: impl ProviderFactory) -> std::process::ExitCode {
//! Cli::new().provider("json", my_factory).run()
//! # }
//! ```

pub mod bench;
pub mod commands;
pub mod config;
pub mod console;
pub mod demo;
pub mod explain;
mod fleet;
pub mod held;
mod process;
mod radicale;
pub mod registry;
pub mod sandbox;
pub mod scenario;
pub mod table;
pub mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::registry::{ProviderFactory, Registry};

/// The `crmsync` command, with the provider kinds it knows.
#[derive(Debug, Default)]
pub struct Cli {
    registry: Registry,
}

impl Cli {
    /// The command with the built-in provider kinds (`exchange`, `google`, `dav`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a provider kind: reps with `provider = "KIND"` use the provider `factory` builds from
    /// the config file's `[KIND]` table.
    pub fn provider(mut self, kind: &str, factory: impl ProviderFactory) -> Self {
        self.registry = self.registry.with(kind, factory);
        self
    }

    /// Parse the process's arguments and run the command; the exit status says how it went.
    pub fn run(self) -> ExitCode {
        self.registry.install();
        match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run(std::env::args_os())),
            Err(e) => {
                eprintln!("crmsync: cannot start the async runtime: {e}");
                ExitCode::from(2)
            }
        }
    }
}

#[derive(Parser)]
#[command(
    name = "crmsync",
    version,
    about = "Keep sales reps' mailbox contacts and calendars in step with the CRM",
    after_help = "Start with `crmsync demo`, or `crmsync sandbox --config-out crmsync.toml` and `crmsync sync`.\n\n\
                  Exit status: 0 done; 1 a cycle failed; 2 bad input (flags, config, store); 3 (sync) a rep was not \
                  synced because another process holds its lease."
)]
struct Args {
    /// Log format on stderr (the level comes from RUST_LOG, default `warn`).
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded demo: fakes in-process, SQLite store, initial sync → Reset Sync → resync.
    Demo(demo::DemoArgs),
    /// Run the Salesforce, Microsoft Graph and Google fakes on loopback until Ctrl-C.
    Sandbox(sandbox::SandboxArgs),
    /// Run one sync cycle per rep against the services in the config file.
    Sync(commands::SyncArgs),
    /// Reset Sync: drop a rep's links and cursors (no record changes); the next cycle re-links.
    Reset(commands::ResetArgs),
    /// Show each rep's state, links, last cycle, recent item errors and last reset.
    Status(commands::StatusArgs),
    /// Why a rep's contact or event is (not) in sync: linked, skipped, item error, suppressed or not seen.
    Explain(explain::ExplainArgs),
    /// Delete Safety: list a rep's held deletes, approve or discard them.
    Deletes(held::DeletesArgs),
    /// Store a user-managed rep's OAuth grant (refresh token) so their sync resumes.
    Connect(commands::ConnectArgs),
    /// Cycle every rep on a schedule, sharing the reps with other workers through store leases.
    Worker(worker::WorkerArgs),
    /// Serve the admin console: Sync Status, rep pages, Reset Sync with a preview, audit (sign in with the CRM).
    Serve(console::ServeArgs),
    /// Measure the engine at scale (one rep up to 50,000 contacts; up to 1,000 reps) and write a report.
    Bench(bench::BenchArgs),
    /// The engine process `crmsync bench` measures.
    #[command(hide = true)]
    BenchEngine(bench::EngineArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Args::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // Bad flags (unknown, out of range, missing) are one line, like every other error.
            let rendered = e.to_string();
            let line = rendered.lines().next().unwrap_or_default();
            eprintln!("crmsync: {}", line.strip_prefix("error: ").unwrap_or(line));
            return ExitCode::from(2);
        }
    };
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Sync(args) => commands::sync(args).await,
        Command::Reset(args) => commands::reset(args).await,
        Command::Status(args) => commands::status(args).await,
        Command::Connect(args) => commands::connect(args).await,
        Command::Deletes(args) => held::run(args).await,
        Command::Explain(args) => explain::run(args).await,
        Command::Worker(args) => worker::run(args).await,
        Command::Serve(args) => console::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchEngine(args) => bench::engine(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let line = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("crmsync: {line}");
            ExitCode::from(2)
        }
    }
}
