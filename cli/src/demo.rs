//! `crmsync demo`: the whole story on the embedded fakes (the README's "What the demo shows").
//!
//! initial sync → a reset preview (dry run) → a refused Reset Sync → resets of an admin-managed
//! and a user-managed rep → resync (zero writes, the reset verified) → the user-managed rep edits
//! an event while disconnected, reconnects → resync (exactly that edit reaches the CRM) → a quiet
//! cycle (nothing written) → Delete Safety (a mass removal held, then discarded). The invariants
//! are computed from the fakes' own state, not from the engine's counters.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use crmsync_core::{CycleReport, Engine, Rep, ResetScope};
use crmsync_google::fake::EventEdit;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use crate::scenario::{EXCHANGE_MAILBOX, Fakes, GOOGLE_USER, Scenario, Size, seed};

/// Options of `crmsync demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Print one JSON object on stdout instead of the readable report.
    #[arg(long)]
    pub json: bool,
    /// SQLite file for the state store (default: a temporary file, removed afterwards).
    #[arg(long, value_name = "PATH")]
    pub db: Option<std::path::PathBuf>,
    /// Contacts per rep in the folder/group and the CRM.
    #[arg(long, default_value_t = 12)]
    pub contacts: usize,
    /// Plain in-window meetings per rep (besides the private, no-sync, old, cancelled and
    /// recurring events every run has).
    #[arg(long, default_value_t = 6)]
    pub events: usize,
}

#[derive(Debug, Serialize)]
struct RepRow {
    rep: String,
    provider: String,
    state: String,
    contacts: crmsync_core::KindReport,
    events: crmsync_core::KindReport,
    requests: crmsync_core::Requests,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Cycle {
    name: &'static str,
    reps: Vec<RepRow>,
    /// Requests each fake served during the cycle, per endpoint (all reps together).
    endpoints: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct ResetRow {
    admin: String,
    rep: String,
    allowed: bool,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Invariants {
    duplicates: u64,
    records_changed_by_reset: u64,
    unexpected_writes_after_reset: u64,
    lost_edits: u64,
    writes_in_quiet_cycle: u64,
    /// Records changed on either side by the cycle that held the deletes, beyond nothing, and
    /// held deletes that were not restored by the discard.
    deletes_not_held: u64,
}

impl Invariants {
    fn all_zero(&self) -> bool {
        self.duplicates
            + self.records_changed_by_reset
            + self.unexpected_writes_after_reset
            + self.lost_edits
            + self.writes_in_quiet_cycle
            + self.deletes_not_held
            == 0
    }
}

/// Reset Sync beyond the reset: its preview, its verification, and Delete Safety.
#[derive(Debug, Default, Serialize)]
struct Safety {
    /// What `reset --dry-run` of the Exchange rep said the first cycle after it would do.
    reset_preview: BTreeMap<String, u64>,
    /// The Exchange rep's reset as the first cycle after it verified it.
    verification: String,
    /// The Exchange rep takes half of its linked contacts out of the folder (delete policy
    /// `propagate`, a threshold of one delete for the demo): held, then discarded.
    removed: u64,
    held: u64,
    state_while_held: String,
    /// Contacts restored to the folder by the discard.
    restored: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    cycles: Vec<Cycle>,
    resets: Vec<ResetRow>,
    safety: Safety,
    invariants: Invariants,
    /// Records per side after the story (what the fakes hold).
    records: BTreeMap<&'static str, usize>,
    store: String,
}

/// Removes the temporary store file when the demo ends.
struct TempDb(Option<std::path::PathBuf>);
impl Drop for TempDb {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if let Some(p) = args.db.as_ref().filter(|p| p.exists()) {
        anyhow::bail!(
            "{}: the demo needs a new store file (its fakes start empty on every run, so links kept from an \
             earlier run point nowhere); remove it or name another --db",
            p.display()
        );
    }
    let fakes = Fakes::start().await;
    let sc = seed(&fakes, Size { contacts: args.contacts, events: args.events });
    let (db, _temp) = match &args.db {
        Some(p) => (p.clone(), TempDb(None)),
        None => {
            let p = std::env::temp_dir().join(format!(
                "crmsync-demo-{}-{}.db",
                std::process::id(),
                Utc::now().timestamp_micros()
            ));
            (p.clone(), TempDb(Some(p)))
        }
    };
    let store = crmsync_sql::SqlStore::connect(&db.display().to_string())
        .await
        .with_context(|| format!("opening the demo store {}", db.display()))?;
    let mut engine = Engine::new(fakes.crm()?, Arc::new(store)).with_clock(sc.now);
    for p in fakes.providers()? {
        engine = engine.with_provider(p);
    }
    let reps = [sc.exchange_rep.clone(), sc.google_rep.clone()];
    engine.reconnect(&sc.google_rep, SecretString::from(sc.google_grant.clone())).await?;

    let mut inv = Invariants::default();
    let mut cycles = vec![];
    cycles.push(cycle(&engine, &fakes, &reps, "initial").await?);

    // Reset Sync: a preview first (writes nothing), refused for the admin without Manage
    // Sync, then both reps.
    let mut safety = Safety::default();
    for plan in engine.dry_run(&sc.exchange_rep, Some(ResetScope::All)).await? {
        for (effect, n) in plan.counts() {
            *safety.reset_preview.entry(format!("{}: {effect}", plan.kind.as_str())).or_default() += n;
        }
    }
    let before = snapshot(&fakes);
    let mut resets = vec![reset(&engine, &sc.half_admin, &sc.exchange_rep).await?];
    resets.push(reset(&engine, &sc.admin, &sc.exchange_rep).await?);
    resets.push(reset(&engine, &sc.admin, &sc.google_rep).await?);
    let after = snapshot(&fakes);
    inv.records_changed_by_reset = diff(&before, &after);

    // Resync: the Exchange rep re-links with zero writes; the Google rep waits for reconnection.
    let c = cycle(&engine, &fakes, &reps, "after_reset").await?;
    let after_resync = snapshot(&fakes);
    inv.unexpected_writes_after_reset = diff(&after, &after_resync) + c.reps.iter().map(writes).sum::<u64>();
    cycles.push(c);
    let status = engine.store().status(&sc.exchange_rep.id).await?;
    safety.verification = status.last_reset.and_then(|r| r.verification).map(|v| v.to_string()).unwrap_or_default();

    // While disconnected the Google rep moves, renames and shortens a meeting, then reconnects.
    let (subject, start, minutes) =
        ("Demo call 0 (moved)".to_string(), sc.now + Duration::days(1) + Duration::hours(15), 45);
    let edit =
        EventEdit { subject: Some(subject.clone()), start: Some(start), duration: Some(Duration::minutes(minutes)) };
    anyhow::ensure!(fakes.google.edit_event(GOOGLE_USER, &sc.google_edit_target, edit), "the edited event is missing");
    let grant = fakes.google.add_refresh_token(GOOGLE_USER);
    engine.reconnect(&sc.google_rep, SecretString::from(grant)).await?;
    let before_reconnect = snapshot(&fakes);
    let c = cycle(&engine, &fakes, &reps, "after_reconnect").await?;
    let after_reconnect = snapshot(&fakes);
    // Exactly one record may change: the CRM copy of the edited event.
    let changed = diff(&before_reconnect, &after_reconnect);
    let gus_writes = c.reps.iter().find(|r| r.provider == "google").map(writes).unwrap_or(0);
    let erin_writes = c.reps.iter().find(|r| r.provider == "exchange").map(writes).unwrap_or(0);
    inv.unexpected_writes_after_reset += changed.saturating_sub(1) + gus_writes.saturating_sub(1) + erin_writes;
    inv.lost_edits = u64::from(!crm_has_event(&fakes, &subject, start, start + Duration::minutes(minutes)));
    cycles.push(c);

    let c = cycle(&engine, &fakes, &reps, "quiet").await?;
    inv.writes_in_quiet_cycle = diff(&after_reconnect, &snapshot(&fakes)) + c.reps.iter().map(writes).sum::<u64>();
    cycles.push(c);
    inv.deletes_not_held = delete_safety(&engine, &fakes, &sc, &mut safety).await?;
    inv.duplicates = duplicates(&fakes, &sc);

    let records = BTreeMap::from([
        ("salesforce_contacts", fakes.salesforce.contacts().len()),
        ("salesforce_events", fakes.salesforce.events().len()),
        ("exchange_contacts", fakes.graph.contacts(EXCHANGE_MAILBOX).len()),
        ("google_contacts", fakes.google.contacts(GOOGLE_USER).len()),
    ]);
    let report = Report { cycles, resets, safety, invariants: inv, records, store: db.display().to_string() };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.invariants.all_zero() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Delete Safety on the Exchange rep: half of its linked contacts leave the folder under
/// `delete = "propagate"` with a threshold of one delete; the cycle holds the deletes (and
/// changes nothing), an admin discards them, the next cycle brings the contacts back to the
/// folder. Returns the invariant's count (0 when it held).
async fn delete_safety(engine: &Engine, fakes: &Fakes, sc: &Scenario, out: &mut Safety) -> anyhow::Result<u64> {
    let mut rep = sc.exchange_rep.clone();
    rep.config.contacts.delete = crmsync_core::DeletePolicy::Propagate;
    rep.config.contacts.hold_deletes.count = Some(1);
    let links = engine.store().links(&rep.id, crmsync_core::Kind::Contact).await?;
    let linked: Vec<_> = links.iter().filter(|l| l.state == crmsync_core::LinkState::Linked).collect();
    let folder = |f: &Fakes| f.graph.folder_contacts(EXCHANGE_MAILBOX, &rep.config.contacts.folder).len() as u64;
    let in_folder = folder(fakes);
    for l in linked.iter().take(linked.len().div_ceil(2)) {
        out.removed += u64::from(fakes.graph.move_contact(EXCHANGE_MAILBOX, &l.provider_id, None));
    }
    let before = snapshot(fakes);
    let held = engine.cycle(&rep).await?;
    out.held = held.contacts.held_deletes_in_crm;
    out.state_while_held = held.state.as_str().to_owned();
    let admin = engine.find_user(&sc.admin).await?;
    engine.judge_held(&admin, &rep, crmsync_core::Verdict::Discarded).await?;
    let after_held = snapshot(fakes);
    let restored = engine.cycle(&rep).await?;
    out.restored = restored.contacts.created_in_provider;
    Ok(diff(&before, &after_held) + out.removed.abs_diff(out.held) + in_folder.abs_diff(folder(fakes)))
}

fn writes(r: &RepRow) -> u64 {
    r.contacts.writes() + r.events.writes()
}

/// Per-endpoint request counters of every fake, prefixed by service.
fn endpoint_counts(f: &Fakes) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (svc, counts) in
        [("salesforce", f.salesforce.counts()), ("graph", f.graph.counts()), ("google", f.google.counts())]
    {
        out.extend(counts.into_iter().map(|(k, v)| (format!("{svc} {k}"), v)));
    }
    out
}

async fn cycle(engine: &Engine, fakes: &Fakes, reps: &[Rep], name: &'static str) -> anyhow::Result<Cycle> {
    let before = endpoint_counts(fakes);
    let mut rows = vec![];
    for rep in reps {
        let r: CycleReport = engine.cycle(rep).await.with_context(|| format!("cycle {name} for {}", rep.name))?;
        rows.push(RepRow {
            rep: rep.name.clone(),
            provider: rep.provider.clone(),
            state: r.state.as_str().to_owned(),
            contacts: r.contacts,
            events: r.events,
            requests: r.requests,
            error: r.error,
        });
    }
    let endpoints = endpoint_counts(fakes)
        .into_iter()
        .map(|(k, v)| (v - before.get(&k).copied().unwrap_or(0), k))
        .filter(|(n, _)| *n > 0)
        .map(|(n, k)| (k, n))
        .collect();
    Ok(Cycle { name, reps: rows, endpoints })
}

async fn reset(engine: &Engine, admin: &str, rep: &Rep) -> anyhow::Result<ResetRow> {
    let user = engine.find_user(admin).await?;
    let (allowed, reason) = match engine.reset(&user, rep, ResetScope::All).await {
        Ok(out) => (true, format!("links removed {:?}; rep is now {}", out.record.links_removed, out.state.as_str())),
        Err(e) if e.kind() == crmsync_core::ErrorKind::PermissionDenied => (false, e.message().to_owned()),
        Err(e) => return Err(e.into()),
    };
    Ok(ResetRow { admin: admin.to_owned(), rep: rep.name.clone(), allowed, reason })
}

/// Every record of every fake, keyed by service and id.
fn snapshot(f: &Fakes) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut add = |prefix: &str, id_field: &str, records: Vec<Value>| {
        for r in records {
            let id = r[id_field].as_str().unwrap_or_default().to_owned();
            out.insert(format!("{prefix}:{id}"), r);
        }
    };
    add("sf", "Id", f.salesforce.contacts());
    add("sf", "Id", f.salesforce.events());
    add("graph", "id", f.graph.contacts(EXCHANGE_MAILBOX));
    add("graph", "id", f.graph.events(EXCHANGE_MAILBOX));
    add("google", "resourceName", f.google.contacts(GOOGLE_USER));
    add("google", "id", f.google.events(GOOGLE_USER));
    out
}

/// Records added, removed or changed between two snapshots.
fn diff(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> u64 {
    let changed = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).count();
    let added = b.keys().filter(|k| !a.contains_key(*k)).count();
    (changed + added) as u64
}

fn sf_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z").ok().map(|t| t.with_timezone(&Utc))
}

/// Whether the CRM holds the edited event with its new subject, start and end.
fn crm_has_event(f: &Fakes, subject: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    f.salesforce.events().iter().any(|e| {
        e["Subject"].as_str() == Some(subject)
            && sf_time(&e["StartDateTime"]) == Some(start)
            && sf_time(&e["EndDateTime"]) == Some(end)
    })
}

/// Extra copies: records sharing an e-mail or a sync key on one side (per rep on providers).
fn duplicates(f: &Fakes, sc: &Scenario) -> u64 {
    fn extra(keys: impl Iterator<Item = String>) -> u64 {
        let mut seen = BTreeMap::<String, u64>::new();
        for k in keys.filter(|k| !k.is_empty()) {
            *seen.entry(k.to_lowercase()).or_default() += 1;
        }
        seen.values().map(|n| n - 1).sum()
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let sf_contacts = f.salesforce.contacts();
    let sf_events = f.salesforce.events();
    let mut n = extra(sf_contacts.iter().map(|c| s(&c["Email"])));
    n += extra(sf_contacts.iter().map(|c| s(&c["CrmSync_Key__c"])));
    n += extra(sf_events.iter().map(|e| s(&e["CrmSync_Key__c"])));
    // Exchange: the synced folder, by e-mail and sync key; events by sync key.
    let graph_key = |v: &Value| {
        v["singleValueExtendedProperties"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(crmsync_exchange::SYNC_KEY_PROPERTY)))
            .map(|p| s(&p["value"]))
            .unwrap_or_default()
    };
    let folder = f.graph.folder_contacts(EXCHANGE_MAILBOX, &sc.exchange_rep.config.contacts.folder);
    n += extra(
        folder
            .iter()
            .flat_map(|c| c["emailAddresses"].as_array().cloned().unwrap_or_default())
            .map(|a| s(&a["address"])),
    );
    n += extra(folder.iter().map(graph_key));
    n += extra(f.graph.events(EXCHANGE_MAILBOX).iter().map(graph_key));
    // Google: group members by e-mail and sync key.
    let members = f.google.group_members(GOOGLE_USER, &sc.google_rep.config.contacts.group);
    let people: Vec<Value> = f
        .google
        .contacts(GOOGLE_USER)
        .into_iter()
        .filter(|p| members.iter().any(|m| Some(m.as_str()) == p["resourceName"].as_str()))
        .collect();
    n += extra(
        people.iter().flat_map(|p| p["emailAddresses"].as_array().cloned().unwrap_or_default()).map(|a| s(&a["value"])),
    );
    let client_key = |p: &Value| {
        p["clientData"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["key"] == crmsync_google::config::SYNC_KEY_PROPERTY)
            .map(|d| s(&d["value"]))
            .unwrap_or_default()
    };
    n += extra(people.iter().map(client_key));
    n
}

fn print_report(r: &Report) {
    for c in &r.cycles {
        println!("== cycle {}", c.name);
        for rep in &c.reps {
            println!(
                "  {} ({}) — state {}, requests: crm {}, provider {}",
                rep.rep, rep.provider, rep.state, rep.requests.crm, rep.requests.provider
            );
            for (kind, k) in [("contacts", &rep.contacts), ("events", &rep.events)] {
                let skipped: Vec<String> = k.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
                println!(
                    "    {kind:<8} created crm {} / provider {}, updated crm {} / provider {}, deleted crm {} / provider {}, linked {}, links {}, conflicts {}, errors {}{}",
                    k.created_in_crm,
                    k.created_in_provider,
                    k.updated_in_crm,
                    k.updated_in_provider,
                    k.deleted_in_crm,
                    k.deleted_in_provider,
                    k.linked,
                    k.links_total,
                    k.conflicts,
                    k.errors,
                    if skipped.is_empty() { String::new() } else { format!("; skipped: {}", skipped.join(", ")) }
                );
                for e in &k.item_errors {
                    println!("      error {} {}: {}", e.side, e.id, e.reason);
                }
            }
            if let Some(e) = &rep.error {
                println!("    error: {e}");
            }
        }
    }
    println!("== resets");
    let preview: Vec<String> = r.safety.reset_preview.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("  preview (reset --dry-run, nothing written): {}", preview.join(", "));
    for x in &r.resets {
        println!("  {} resets {}: {} — {}", x.admin, x.rep, if x.allowed { "allowed" } else { "REFUSED" }, x.reason);
    }
    println!("  the first cycle after the reset: {}", r.safety.verification);
    let s = &r.safety;
    println!("== delete safety");
    println!(
        "  {} linked contacts leave the folder (propagate, threshold 1): {} deletes held, rep {}, CRM untouched; \
         discarded: {} contacts back in the folder",
        s.removed, s.held, s.state_while_held, s.restored
    );
    let i = &r.invariants;
    println!("== invariants (from the fakes' state)");
    println!("  duplicates                     {}", i.duplicates);
    println!("  records changed by reset       {}", i.records_changed_by_reset);
    println!("  unexpected writes after reset  {}", i.unexpected_writes_after_reset);
    println!("  lost edits                     {}", i.lost_edits);
    println!("  writes in quiet cycle          {}", i.writes_in_quiet_cycle);
    println!("  deletes not held               {}", i.deletes_not_held);
    println!("{}", if i.all_zero() { "OK: every invariant holds" } else { "FAILED: an invariant does not hold" });
    println!(
        "Next: `crmsync sandbox` serves these fakes and the admin console on http://127.0.0.1:8650 (sign in as Alex Admin)"
    );
}
