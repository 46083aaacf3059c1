//! `crmsync deletes`: Delete Safety's quarantine of one rep — list the held deletes, approve
//! them (the rep's next cycle, run right away, applies them) or discard them (that cycle brings
//! the removed records back, or unlinks the pairs, per the kind's direction).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use crmsync_core::{HeldDelete, Kind, LeaseTerms, Leased, Verdict};

use crate::commands::{ConfigArg, lease_length};
use crate::process::{Shutdown, holder};
use crate::table::{self, busy_line, when};

/// What to do with the held deletes.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Action {
    /// Print them (the default).
    #[default]
    List,
    /// Apply them: the rep's cycle runs now and deletes exactly the held records.
    Approve,
    /// Keep the records: the rep's cycle runs now and restores the removed partners (or
    /// unlinks the pairs where the kind's direction does not copy that way); nothing is deleted.
    Discard,
}

/// Options of `crmsync deletes`.
#[derive(Debug, clap::Args)]
pub struct DeletesArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The rep (partial, case-insensitive name).
    #[arg(long, value_name = "NAME")]
    pub rep: String,
    #[arg(value_enum, default_value = "list")]
    pub action: Action,
    /// The admin approving or discarding (a CRM user's name); needs `Manage Users` and
    /// `Manage Sync`, as Reset Sync does.
    #[arg(long = "as", value_name = "ADMIN", required_if_eq_any = [("action", "approve"), ("action", "discard")])]
    pub admin: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seconds the lease of the cycle lasts without renewal, 3 to 86400.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = lease_length())]
    pub lease: u64,
}

pub async fn run(args: DeletesArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let rep = loaded.select(Some(&args.rep))?.remove(0);
    let err = |e: crmsync_core::Error| anyhow::anyhow!("{}: {}", rep.name, e.message());
    let verdict = match args.action {
        Action::List => {
            let store = loaded.open_store().await?;
            let mut held: Vec<HeldDelete> = vec![];
            for kind in Kind::ALL {
                held.extend(store.held(&rep.id, kind).await.map_err(err)?);
            }
            if args.json {
                println!("{}", serde_json::to_string(&serde_json::json!({ "rep": rep.name, "held": held }))?);
            } else if held.is_empty() {
                println!("{}: no deletes are held", rep.name);
            } else {
                println!("{}: {} deletes held (approve or discard with --as ADMIN):", rep.name, held.len());
                for h in &held {
                    println!(
                        "  {} in {} {} {:?} held since {} ({})",
                        h.kind.as_str(),
                        h.side.as_str(),
                        h.id,
                        h.label,
                        when(Some(h.since)),
                        h.verdict.as_str()
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Action::Approve => Verdict::Approved,
        Action::Discard => Verdict::Discarded,
    };
    let wired = loaded.wire(std::slice::from_ref(&rep)).await?;
    let name = args.admin.as_deref().unwrap_or_default();
    let admin = wired.engine.find_user(name).await.map_err(|e| anyhow::anyhow!("--as: {}", e.message()))?;
    let n =
        wired.engine.judge_held(&admin, &rep, verdict).await.map_err(|e| {
            anyhow::anyhow!("{} of {}'s held deletes refused: {}", verdict.as_str(), rep.name, e.message())
        })?;
    let shutdown = Shutdown::listen();
    let terms =
        LeaseTerms { holder: holder("deletes"), length: Duration::from_secs(args.lease), wait: true, next_in: None };
    let ran = wired
        .engine
        .leased_cycle(&rep, &terms, shutdown.wait())
        .await
        .with_context(|| format!("syncing {}", rep.name))?;
    let report = match ran {
        Leased::Ran(r) => *r,
        Leased::Busy(h) => anyhow::bail!("{}: {} {n} held deletes; {}", rep.name, verdict.as_str(), busy_line(&h)),
        Leased::Abandoned(why) => {
            anyhow::bail!("{}: {} {n} held deletes; the cycle stopped: {why}", rep.name, verdict.as_str())
        }
    };
    if args.json {
        let out = serde_json::json!({ "rep": rep.name, "verdict": verdict.as_str(), "judged": n, "report": report });
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!("{}: {} {n} held deletes; the cycle that applies them:", rep.name, verdict.as_str());
        print!("{}", table::cycle(&report));
    }
    Ok(if report.error.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
