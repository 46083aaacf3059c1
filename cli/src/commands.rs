//! `sync`, `reset`, `status` and `connect`: parse, wire, call the engine, print.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use crmsync_core::{
    ConnectionMode, CycleReport, ItemError, Kind, LeaseTerms, Leased, LinkState, Rep, RepState, RepStatus, ResetRecord,
    ResetScope,
};
use secrecy::SecretString;
use serde::Serialize;

use crate::config::Loaded;
use crate::process::{Shutdown, holder};
use crate::table;
use crate::table::{busy_line, when};

/// `--config FILE`, shared by every command that reads the config file.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The config file (TOML).
    #[arg(long, value_name = "FILE", default_value = "crmsync.toml", env = "CRMSYNC_CONFIG")]
    pub config: PathBuf,
}

impl ConfigArg {
    pub fn load(&self) -> anyhow::Result<Loaded> {
        Ok(Loaded::load(&self.config)?)
    }
}

/// Exit status of `crmsync sync` when no cycle failed but a rep was not synced because another
/// process (a worker, another `sync`) holds its lease.
pub const EXIT_LEASE_HELD: u8 = 3;

/// Lease lengths accepted on the command line (seconds): renewed every third, at most a day.
pub(crate) fn lease_length() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(3..=86_400)
}

/// Options of `crmsync sync`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Every cycle runs under its rep's lease in the store, so two cycles of one rep never \
                        overlap (another `sync`, a `worker`).\n\nExit status: 0 every cycle succeeded; 1 a cycle \
                        failed or was stopped (SIGINT/SIGTERM); 2 bad input (config, flags, store); 3 no cycle \
                        failed, but a rep was not synced because another process holds its lease (its holder \
                        and the lease's end are printed; --wait waits instead).")]
pub struct SyncArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Sync only the rep whose name contains NAME (case-insensitive).
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub rep: Option<String>,
    /// Sync every configured rep (the default when --rep is not given).
    #[arg(long)]
    pub all: bool,
    /// Print the cycle reports as one JSON object ({"reports": [...]}) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// When another process holds a rep's lease, wait for it instead of skipping the rep.
    #[arg(long)]
    pub wait: bool,
    /// Seconds the lease of a running cycle lasts without renewal, 3 to 86400 (renewed every
    /// third of that; a crashed `sync` blocks its reps at most this long).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = lease_length())]
    pub lease: u64,
    /// Read both sides, print what the cycle would do (per kind: link, create, update, delete,
    /// skip by reason, with sample records) and write nothing anywhere, not even the store.
    #[arg(long, conflicts_with = "wait")]
    pub dry_run: bool,
    /// Cycles run at once (1 to 64; default: `[engine] concurrency` of the config, else 4).
    /// Each rep's requests stay sequential, so a mailbox sees one at a time.
    #[arg(long, value_name = "N", value_parser = crate::fleet::concurrency_arg())]
    pub concurrency: Option<u16>,
}

pub async fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let reps = loaded.select(args.rep.as_deref())?;
    if reps.is_empty() {
        anyhow::bail!("{}: no [[reps]] are configured; nothing to sync", loaded.path.display());
    }
    let wired = loaded.wire(&reps).await?;
    if args.dry_run {
        return dry_run(&wired.engine, &reps, None, args.json).await;
    }
    let bar = (!args.json && reps.len() > 1 && std::io::stdout().is_terminal())
        .then(|| crate::table::progress(reps.len(), "sync"));
    let shutdown = Shutdown::listen();
    let terms =
        LeaseTerms { holder: holder("sync"), length: Duration::from_secs(args.lease), wait: args.wait, next_in: None };
    let concurrency = args.concurrency.or(loaded.concurrency).unwrap_or(crate::fleet::DEFAULT_CONCURRENCY);
    let position: std::collections::HashMap<&str, usize> =
        reps.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    let mut outcomes: Vec<Option<Leased>> = vec![None; reps.len()];
    crate::fleet::cycle_all(
        &wired.engine,
        reps.iter().cloned(),
        &terms,
        usize::from(concurrency),
        &shutdown,
        Duration::ZERO,
        |rep, outcome| {
            let outcome = outcome.with_context(|| format!("syncing {}", rep.name))?;
            if let Some(pb) = &bar {
                pb.set_message(rep.name.clone());
                pb.inc(1);
            }
            outcomes[position[rep.id.as_str()]] = Some(outcome);
            Ok(())
        },
    )
    .await?;
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    let (mut reports, mut synced, mut busy, mut stopped) = (vec![], vec![], vec![], vec![]);
    for (rep, outcome) in reps.iter().zip(outcomes) {
        match outcome {
            Some(Leased::Ran(report)) => {
                reports.push(*report);
                synced.push(rep);
            }
            Some(Leased::Busy(h)) => busy.push(format!("{}: {}", rep.name, busy_line(&h))),
            Some(Leased::Abandoned(why)) => stopped.push(format!("{}: {why}", rep.name)),
            None => stopped.push(format!("{}: not synced (stopped)", rep.name)),
        }
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.error.is_some() || r.state == RepState::Error)
        .map(|r| format!("{}: {}", r.rep, r.error.as_deref().unwrap_or("error")))
        .chain(stopped)
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "reports": reports }))?);
    } else {
        for (rep, r) in synced.iter().zip(&reports) {
            print!("{}", table::cycle(r));
            if r.state == RepState::DeletesHeld {
                println!(
                    "  a mass delete is held (Delete Safety): crmsync deletes --rep {:?} --config {} lists it; \
                     approve or discard it with --as ADMIN",
                    rep.name,
                    loaded.path.display()
                );
            }
            if r.state == RepState::NeedsReconnect {
                println!(
                    "  the rep must reconnect: crmsync connect --rep {:?} --grant-env VAR --config {}",
                    rep.name,
                    loaded.path.display()
                );
            }
            println!();
        }
    }
    for line in &busy {
        eprintln!("crmsync: {line}");
    }
    if !failed.is_empty() {
        eprintln!("crmsync: {} of {} cycles failed: {}", failed.len(), reps.len(), failed.join("; "));
        return Ok(ExitCode::from(1));
    }
    if !busy.is_empty() {
        return Ok(ExitCode::from(EXIT_LEASE_HELD));
    }
    Ok(ExitCode::SUCCESS)
}

/// `sync --dry-run`: every rep's plans, printed (text or `{"plans": [...]}`), nothing written.
async fn dry_run(
    engine: &crmsync_core::Engine,
    reps: &[Rep],
    reset: Option<ResetScope>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut out = vec![];
    for rep in reps {
        let plans = engine.dry_run(rep, reset).await.with_context(|| format!("planning {}", rep.name))?;
        for plan in plans {
            if json {
                let mut v = serde_json::to_value(&plan)?;
                v["rep"] = rep.name.clone().into();
                v["effects"] = serde_json::to_value(plan.counts())?;
                out.push(v);
            } else {
                println!("{} (dry run, nothing written):\n{plan}", rep.name);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "plans": out }))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// What `reset --scope` clears.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Scope {
    Contacts,
    Events,
    All,
}

impl From<Scope> for ResetScope {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Contacts => ResetScope::Contacts,
            Scope::Events => ResetScope::Events,
            Scope::All => ResetScope::All,
        }
    }
}

/// Options of `crmsync reset`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Bulk: --reps-file FILE (one rep name per line; blank lines and lines starting with # are \
                        skipped) or --where state=STATE resets several reps; they are listed first and, on a \
                        terminal, confirmed (--yes skips the question; without a terminal --yes is required). \
                        The admin's permissions are checked once; every rep gets its own audit record.\n\n\
                        --undo puts back exactly what the rep's last reset removed (links, cursors, item errors, \
                        held deletes), as long as no sync cycle has started since.")]
pub struct ResetArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The rep to reset: partial, case-insensitive name among the configured reps.
    #[arg(long, value_name = "NAME", required_unless_present_any = ["reps_file", "where_"], conflicts_with_all = ["reps_file", "where_"])]
    pub rep: Option<String>,
    /// Reset every rep named in FILE (one name per line).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["where_", "undo"])]
    pub reps_file: Option<PathBuf>,
    /// Reset every configured rep whose status matches, e.g. `state=error`.
    #[arg(long = "where", id = "where_", value_name = "state=STATE", conflicts_with = "undo")]
    pub where_: Option<String>,
    /// Reset the listed reps without asking (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// The admin resetting (a CRM user's name, partial, case-insensitive); needs both
    /// `Manage Users` and `Manage Sync`.
    #[arg(long = "as", value_name = "ADMIN")]
    pub admin: String,
    /// What to reset.
    #[arg(long, value_enum, default_value = "all")]
    pub scope: Scope,
    /// Print the reset record and the new state as JSON (with --dry-run: the plans).
    #[arg(long)]
    pub json: bool,
    /// Print what the first cycle after this reset would do (planned as if the scope's links
    /// and cursors were gone) and change nothing: no reset, no write anywhere.
    #[arg(long, conflicts_with = "undo")]
    pub dry_run: bool,
    /// Undo the rep's last reset (while no cycle has run since).
    #[arg(long)]
    pub undo: bool,
}

/// The reps a bulk reset names, in config order.
fn bulk_reps(loaded: &Loaded, args: &ResetArgs, statuses: &[RepStatus]) -> anyhow::Result<Vec<Rep>> {
    if let Some(file) = &args.reps_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("--reps-file {}", file.display()))?;
        let mut out: Vec<Rep> = vec![];
        for (n, line) in text.lines().enumerate() {
            let name = line.trim();
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            let rep = loaded
                .select(Some(name))
                .map_err(|e| anyhow::anyhow!("--reps-file {} line {}: {e:#}", file.display(), n + 1))?
                .remove(0);
            if !out.iter().any(|r| r.id == rep.id) {
                out.push(rep);
            }
        }
        return Ok(out);
    }
    let cond = args.where_.as_deref().unwrap_or_default();
    let state = cond.strip_prefix("state=").and_then(RepState::parse).ok_or_else(|| {
        let states: Vec<&str> = RepState::ALL.iter().map(|s| s.as_str()).collect();
        anyhow::anyhow!("--where {cond:?}: expected state=STATE, one of {}", states.join(", "))
    })?;
    let state_of = |rep: &Rep| statuses.iter().find(|s| s.rep == rep.id).map(|s| s.state).unwrap_or_default();
    Ok(loaded.select(None)?.into_iter().filter(|r| state_of(r) == state).collect())
}

/// Whether the admin agreed to reset `n` reps: `--yes`, or "y" on a terminal.
fn confirmed(n: usize, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "refusing to reset {n} reps without --yes (stdin is not a terminal to confirm on); nothing was changed"
        );
    }
    eprint!("Reset Sync of these {n} reps? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

pub async fn reset(args: ResetArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let bulk = args.rep.is_none();
    let reps = match &args.rep {
        Some(name) => loaded.select(Some(name))?,
        None => {
            let store = loaded.open_store().await?;
            let statuses = store.statuses().await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
            bulk_reps(&loaded, &args, &statuses)?
        }
    };
    if reps.is_empty() {
        println!("no rep matches; nothing was changed");
        return Ok(ExitCode::SUCCESS);
    }
    // Reset needs the CRM (permissions) and the store; its preview reads the provider too.
    let wired = loaded.wire(if args.dry_run { &reps } else { &[] }).await?;
    let admin = wired.engine.find_user(&args.admin).await.map_err(|e| anyhow::anyhow!("--as: {}", e.message()))?;
    let names: Vec<&str> = reps.iter().map(|r| r.name.as_str()).collect();
    let refused = |e: crmsync_core::Error| anyhow::anyhow!("reset of {} refused: {}", names.join(", "), e.message());
    if args.dry_run {
        wired.engine.check_reset_permission(&admin).await.map_err(refused)?;
        return dry_run(&wired.engine, &reps, Some(args.scope.into()), args.json).await;
    }
    if args.undo {
        let rep = &reps[0];
        let record = wired
            .engine
            .undo_reset(&admin, rep)
            .await
            .map_err(|e| anyhow::anyhow!("undo of {}'s reset refused: {}", rep.name, e.message()))?;
        let state = wired.store.status(&rep.id).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?.state;
        if args.json {
            let out = serde_json::json!({ "undone": record, "rep": rep.name, "state": state.as_str() });
            println!("{}", serde_json::to_string(&out)?);
            return Ok(ExitCode::SUCCESS);
        }
        let restored: Vec<String> = record.links_removed.iter().map(|(k, n)| format!("{n} {k} links")).collect();
        println!(
            "Undid the Reset Sync of {} from {} (by {}): restored {} and their cursors exactly",
            rep.name,
            record.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            record.admin_name,
            if restored.is_empty() { "nothing".into() } else { restored.join(", ") }
        );
        println!("  state: {}", state.as_str());
        if state == RepState::NeedsReconnect {
            println!(
                "  the reset revoked the rep's grant, which an undo cannot bring back: they must reconnect \
                 (crmsync connect --rep {:?} --grant-env VAR)",
                rep.name
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if bulk {
        // The list goes with the question (stderr under --json, whose stdout is one object).
        let mut list = format!("Reset Sync (scope {}) of {} reps:\n", scope_name(args.scope.into()), reps.len());
        for r in &reps {
            list.push_str(&format!("  {} ({}, {})\n", r.name, r.provider, r.mailbox));
        }
        if args.json {
            eprint!("{list}")
        } else {
            print!("{list}")
        }
        if !confirmed(reps.len(), args.yes)? {
            println!("not confirmed; nothing was changed");
            return Ok(ExitCode::from(1));
        }
    }
    let outcomes = wired.engine.reset_many(&admin, &reps, args.scope.into()).await.map_err(refused)?;
    let mut failed = 0;
    let mut json = vec![];
    for (rep, outcome) in reps.iter().zip(outcomes) {
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                failed += 1;
                eprintln!("crmsync: reset of {} failed: {}", rep.name, e.message());
                continue;
            }
        };
        if args.json {
            json.push(serde_json::json!({ "reset": outcome.record, "rep": rep.name, "state": outcome.state.as_str() }));
        } else {
            print_reset(rep, &outcome);
        }
    }
    if args.json {
        let out = if bulk { serde_json::json!({ "resets": json }) } else { json.pop().unwrap_or_default() };
        println!("{}", serde_json::to_string(&out)?);
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_reset(rep: &Rep, outcome: &crmsync_core::ResetOutcome) {
    let r = &outcome.record;
    let removed: Vec<String> = r.links_removed.iter().map(|(k, n)| format!("{n} {k} links")).collect();
    println!(
        "Reset Sync of {} by {} (scope {}) at {}",
        rep.name,
        r.admin_name,
        scope_name(r.scope),
        r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    println!(
        "  removed: {} (connections only; no contact or event was changed)",
        if removed.is_empty() { "nothing".into() } else { removed.join(", ") }
    );
    println!("  state: {} (unverified until the next complete cycle; `--undo` until then)", outcome.state.as_str());
    match rep.connection {
        ConnectionMode::AdminManaged => {
            println!("  the next `crmsync sync` re-reads and re-links everything (no writes where both sides agree)")
        }
        ConnectionMode::UserManaged => println!(
            "  the rep's grant was revoked: they must reconnect (crmsync connect --rep {:?} --grant-env VAR)",
            rep.name
        ),
    }
}

/// Where a reset stands: undone, verified (or needing attention), or still unverified.
pub(crate) fn reset_outcome(r: &ResetRecord) -> String {
    match (&r.undone, &r.verification) {
        (Some(u), _) => format!("undone by {} at {}", u.admin_name, when(Some(u.at))),
        (None, Some(v)) => v.to_string(),
        (None, None) if r.undoable => "unverified: no cycle has run since (crmsync reset --undo can restore it)".into(),
        (None, None) => "unverified: no complete cycle since".into(),
    }
}

pub(crate) fn scope_name(s: ResetScope) -> &'static str {
    match s {
        ResetScope::Contacts => "contacts",
        ResetScope::Events => "events",
        ResetScope::All => "all",
    }
}

/// Options of `crmsync connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The user-managed rep connecting their account (partial, case-insensitive name).
    #[arg(long, value_name = "NAME")]
    pub rep: String,
    /// The environment variable holding the rep's OAuth grant (refresh token); it is tried with
    /// one token request before it is stored.
    #[arg(long, value_name = "VAR")]
    pub grant_env: String,
}

pub async fn connect(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let rep = loaded.select(Some(&args.rep))?.remove(0);
    if rep.connection != ConnectionMode::UserManaged {
        anyhow::bail!(
            "{}: rep {} is admin_managed; only user_managed reps connect their own account",
            loaded.path.display(),
            rep.name
        );
    }
    let grant = match std::env::var(&args.grant_env) {
        Ok(v) if !v.trim().is_empty() => SecretString::from(v.trim().to_owned()),
        _ => anyhow::bail!("--grant-env: environment variable {} is not set or empty", args.grant_env),
    };
    // One token request with the grant before anything is stored.
    let provider = loaded.provider(&rep.provider)?;
    provider.verify_grant(&rep, &grant).await.map_err(|e| {
        anyhow::anyhow!(
            "connecting {}: {} did not accept the grant in {} ({}); nothing was stored",
            rep.name,
            rep.provider,
            args.grant_env,
            e.message()
        )
    })?;
    let wired = loaded.wire(&[]).await?;
    wired
        .engine
        .reconnect(&rep, grant)
        .await
        .map_err(|e| anyhow::anyhow!("connecting {}: {}", rep.name, e.message()))?;
    let status = wired.store.status(&rep.id).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    println!("{} connected; state: {} (the next `crmsync sync` syncs them)", rep.name, status.state.as_str());
    Ok(ExitCode::SUCCESS)
}

/// Options of `crmsync status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only the rep whose name contains NAME (case-insensitive).
    #[arg(long, value_name = "NAME")]
    pub rep: Option<String>,
    /// Print one JSON object ({"reps": [...]}) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// How many recent item errors to show per rep.
    #[arg(long, default_value_t = 10)]
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct Links {
    pub(crate) contacts: u64,
    pub(crate) events: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct RepView {
    pub(crate) rep: String,
    pub(crate) id: String,
    pub(crate) provider: String,
    pub(crate) mailbox: String,
    pub(crate) connection: ConnectionMode,
    pub(crate) state: RepState,
    pub(crate) last_success: Option<DateTime<Utc>>,
    pub(crate) last_error: Option<String>,
    pub(crate) links: Links,
    pub(crate) last_cycle: Option<CycleReport>,
    pub(crate) item_errors: Vec<ItemError>,
    pub(crate) last_reset: Option<ResetRecord>,
    /// Deletes Delete Safety holds, per kind (`crmsync deletes` lists them).
    pub(crate) held_deletes: Held,
}

/// Held deletes per kind and side whose record they would delete.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Held {
    pub(crate) contacts: HeldSides,
    pub(crate) events: HeldSides,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct HeldSides {
    pub(crate) crm: u64,
    pub(crate) provider: u64,
}

impl Held {
    pub(crate) fn total(&self) -> u64 {
        self.contacts.crm + self.contacts.provider + self.events.crm + self.events.provider
    }
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let reps = loaded.select(args.rep.as_deref())?;
    // Status reads the store only: no secrets needed, nothing written.
    let store = loaded.open_store().await?;
    let views = views(&loaded, &*store, &reps, args.errors).await?;
    if args.json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "reps": views }))?);
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!("no reps are configured in {}", loaded.path.display());
    }
    for v in &views {
        print!("{}", status_table(v));
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// The status of `reps` as the store holds it, with at most `n` recent item errors each.
pub(crate) async fn views(
    loaded: &Loaded,
    store: &dyn crmsync_core::Store,
    reps: &[Rep],
    n: usize,
) -> anyhow::Result<Vec<RepView>> {
    let err = |e: crmsync_core::Error| anyhow::anyhow!("{}: {}", loaded.path.display(), e.message());
    let known = store.statuses().await.map_err(err)?;
    let mut views = vec![];
    for rep in reps {
        let st = known
            .iter()
            .find(|s| s.rep == rep.id)
            .cloned()
            .unwrap_or_else(|| RepStatus { rep: rep.id.clone(), ..Default::default() });
        views.push(view(store, rep, st, n).await.map_err(err)?);
    }
    Ok(views)
}

async fn view(store: &dyn crmsync_core::Store, rep: &Rep, st: RepStatus, n: usize) -> crmsync_core::Result<RepView> {
    let mut links = [0u64; 2];
    let mut errors = vec![];
    let mut held = Held::default();
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        links[i] = store.links(&rep.id, kind).await?.iter().filter(|l| l.state == LinkState::Linked).count() as u64;
        errors.extend(store.item_errors(&rep.id, kind).await?);
        let sides = if kind == Kind::Contact { &mut held.contacts } else { &mut held.events };
        for h in store.held(&rep.id, kind).await? {
            *if h.side == crmsync_core::Side::Crm { &mut sides.crm } else { &mut sides.provider } += 1;
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
    errors.truncate(n);
    Ok(RepView {
        rep: rep.name.clone(),
        id: rep.id.clone(),
        provider: rep.provider.clone(),
        mailbox: rep.mailbox.clone(),
        connection: rep.connection,
        state: st.state,
        last_success: st.last_success,
        last_error: st.last_error,
        links: Links { contacts: links[0], events: links[1] },
        last_cycle: st.last_report,
        item_errors: errors,
        last_reset: st.last_reset,
        held_deletes: held,
    })
}

fn status_table(v: &RepView) -> String {
    use std::fmt::Write;
    let conn = match v.connection {
        ConnectionMode::AdminManaged => "admin_managed",
        ConnectionMode::UserManaged => "user_managed",
    };
    let mut out = format!("{} ({}, {}, {})\n", v.rep, v.provider, v.mailbox, conn);
    let _ = writeln!(out, "  state: {}", v.state.as_str());
    if let Some(e) = &v.last_error {
        let _ = writeln!(out, "  last error: {e}");
    }
    let _ = writeln!(out, "  last successful cycle: {}", when(v.last_success));
    let _ = writeln!(out, "  linked: {} contacts, {} events", v.links.contacts, v.links.events);
    match &v.last_reset {
        Some(r) => {
            let removed: Vec<String> = r.links_removed.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(
                out,
                "  last reset: {} by {} (scope {}, removed {})",
                when(Some(r.at)),
                r.admin_name,
                scope_name(r.scope),
                if removed.is_empty() { "nothing".into() } else { removed.join(", ") }
            );
            let _ = writeln!(out, "    {}", reset_outcome(r));
        }
        None => out.push_str("  last reset: never\n"),
    }
    if v.held_deletes.total() > 0 {
        let h = &v.held_deletes;
        let _ = writeln!(
            out,
            "  deletes held: contacts {} in CRM / {} in mailbox, events {} in CRM / {} in mailbox \
             (crmsync deletes --rep {:?}: list, approve, discard)",
            h.contacts.crm, h.contacts.provider, h.events.crm, h.events.provider, v.rep
        );
    }
    match &v.last_cycle {
        Some(c) => {
            let _ = writeln!(out, "  last cycle: {} ({})", when(c.started), c.state.as_str());
            out.push_str(&table::counters(&c.contacts, &c.events));
            let _ = writeln!(out, "  requests: CRM {}, mailbox {}", c.requests.crm, c.requests.provider);
        }
        None => out.push_str("  last cycle: none yet\n"),
    }
    if v.item_errors.is_empty() {
        out.push_str("  item errors: none\n");
    } else {
        out.push_str("  recent item errors:\n");
        for e in &v.item_errors {
            let _ = writeln!(
                out,
                "    {} {} {} ({} attempts, last {}): {}",
                e.kind.as_str(),
                e.side.as_str(),
                e.id,
                e.attempts,
                when(Some(e.last_seen)),
                e.reason
            );
        }
    }
    out
}
