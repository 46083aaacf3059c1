use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use crmsync_cli::{commands, console, demo, sandbox, worker};

#[derive(Parser)]
#[command(
    name = "crmsync",
    version,
    about = "Keep sales reps' mailbox contacts and calendars in step with the CRM",
    after_help = "Start with `crmsync demo`, or `crmsync sandbox --config-out crmsync.toml` and `crmsync sync`.\n\n\
                  Exit status: 0 done; 1 a cycle failed; 2 bad input (flags, config, store); 3 (sync) a rep was not \
                  synced because another process holds its lease."
)]
struct Cli {
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
    /// Store a user-managed rep's OAuth grant (refresh token) so their sync resumes.
    Connect(commands::ConnectArgs),
    /// Cycle every rep on a schedule, sharing the reps with other workers through store leases.
    Worker(worker::WorkerArgs),
    /// Serve the admin console: Sync Status, rep pages, Reset Sync with a preview, audit (sign in with the CRM).
    Serve(console::ServeArgs),
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
        Command::Worker(args) => worker::run(args).await,
        Command::Serve(args) => console::run(args).await,
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
