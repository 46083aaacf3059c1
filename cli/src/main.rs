use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crmsync", version, about = "Keep sales reps' mailbox contacts and calendars in step with the CRM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded demo: fakes in-process, SQLite store, initial sync → Reset Sync → resync.
    Demo(crmsync_cli::demo::DemoArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => crmsync_cli::demo::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crmsync: {e:#}");
            ExitCode::from(2)
        }
    }
}
