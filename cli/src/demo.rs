//! `crmsync demo`: the whole story on the embedded fakes (the README's "What the demo shows").
//!
//! initial sync → a reset preview (dry run) → a refused Reset Sync → resets of an admin-managed
//! and a user-managed rep → resync (zero writes, the reset verified) → the user-managed rep edits
//! an event while disconnected, reconnects → resync (exactly that edit reaches the CRM) → a quiet
//! cycle (nothing written) → Delete Safety (a mass removal held, then discarded). The invariants
//! are computed from the fakes' own state, not from the engine's counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hasher};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use crmsync_core::{CycleReport, Engine, Rep, ResetScope};
use crmsync_google::fake::EventEdit;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;

use crate::scenario::{EXCHANGE_MAILBOX, Fakes, GOOGLE_USER, MAX_REPS, Scenario, Size, seed};

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
    /// Reps (2 to 10000): the standard Exchange and Google reps, then more reps alternating
    /// Exchange and Google (admin-managed), each with as many contacts and meetings.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=MAX_REPS as i64))]
    pub reps: u16,
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
    /// Records per side after the story (what the fakes hold, every rep together).
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
    let sc = seed(&fakes, Size { contacts: args.contacts, events: args.events, reps: args.reps.into() });
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
    let reps = sc.reps();
    engine.reconnect(&sc.google_rep, SecretString::from(sc.google_grant.clone())).await?;

    // Progress on a terminal (the report itself goes to stdout at the end); in the logs otherwise.
    let bar = !args.json && std::io::stdout().is_terminal();
    let mut inv = Invariants::default();
    let mut cycles = vec![];
    cycles.push(cycle(&engine, &fakes, &reps, bar, "initial").await?);

    // Reset Sync: a preview first (writes nothing), refused for the admin without Manage
    // Sync, then both reps.
    let mut safety = Safety::default();
    for plan in engine.dry_run(&sc.exchange_rep, Some(ResetScope::All)).await? {
        for (effect, n) in plan.counts() {
            *safety.reset_preview.entry(format!("{}: {effect}", plan.kind.as_str())).or_default() += n;
        }
    }
    let before = prints(&fakes, &sc);
    let mut resets = vec![reset(&engine, &sc.half_admin, &sc.exchange_rep).await?];
    resets.push(reset(&engine, &sc.admin, &sc.exchange_rep).await?);
    resets.push(reset(&engine, &sc.admin, &sc.google_rep).await?);
    let after = prints(&fakes, &sc);
    inv.records_changed_by_reset = diff(&before, &after);

    // Resync: the Exchange rep re-links with zero writes; the Google rep waits for reconnection.
    let c = cycle(&engine, &fakes, &reps, bar, "after_reset").await?;
    let after_resync = prints(&fakes, &sc);
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
    drop((before, after));
    let before_reconnect = prints(&fakes, &sc);
    let c = cycle(&engine, &fakes, &reps, bar, "after_reconnect").await?;
    let after_reconnect = prints(&fakes, &sc);
    // Exactly one record may change: the CRM copy of the edited event.
    let changed = diff(&before_reconnect, &after_reconnect);
    let gus_writes = c.reps.iter().find(|r| r.rep == sc.google_rep.name).map(writes).unwrap_or(0);
    let other_writes: u64 = c.reps.iter().filter(|r| r.rep != sc.google_rep.name).map(writes).sum();
    inv.unexpected_writes_after_reset += changed.saturating_sub(1) + gus_writes.saturating_sub(1) + other_writes;
    inv.lost_edits = u64::from(!crm_has_event(&fakes, &subject, start, start + Duration::minutes(minutes)));
    cycles.push(c);

    let c = cycle(&engine, &fakes, &reps, bar, "quiet").await?;
    drop((after_resync, before_reconnect));
    inv.writes_in_quiet_cycle = diff(&after_reconnect, &prints(&fakes, &sc)) + c.reps.iter().map(writes).sum::<u64>();
    cycles.push(c);
    inv.deletes_not_held = delete_safety(&engine, &fakes, &sc, &mut safety).await?;
    inv.duplicates = duplicates(&fakes, &sc);

    let records = record_counts(&fakes, &sc);
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
    let folder = |f: &Fakes| {
        let id = f.graph.folder_id(EXCHANGE_MAILBOX, &rep.config.contacts.folder);
        let mut n = 0;
        f.graph.each_record(EXCHANGE_MAILBOX, |r| {
            n += u64::from(id.is_some() && r["parentFolderId"].as_str() == id.as_deref())
        });
        n
    };
    let in_folder = folder(fakes);
    for l in linked.iter().take(linked.len().div_ceil(2)) {
        out.removed += u64::from(fakes.graph.move_contact(EXCHANGE_MAILBOX, &l.provider_id, None));
    }
    let before = prints(fakes, sc);
    let held = engine.cycle(&rep).await?;
    out.held = held.contacts.held_deletes_in_crm;
    out.state_while_held = held.state.as_str().to_owned();
    let admin = engine.find_user(&sc.admin).await?;
    engine.judge_held(&admin, &rep, crmsync_core::Verdict::Discarded).await?;
    let after_held = prints(fakes, sc);
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

async fn cycle(engine: &Engine, fakes: &Fakes, reps: &[Rep], bar: bool, name: &'static str) -> anyhow::Result<Cycle> {
    let before = endpoint_counts(fakes);
    let mut rows = vec![];
    let bar = bar.then(|| crate::table::progress(reps.len(), &format!("cycle {name}")));
    for (i, rep) in reps.iter().enumerate() {
        if let Some(pb) = &bar {
            pb.set_message(rep.name.clone());
        }
        let started = std::time::Instant::now();
        let r: CycleReport = engine.cycle(rep).await.with_context(|| format!("cycle {name} for {}", rep.name))?;
        tracing::info!(cycle = name, rep = %rep.name, done = i + 1, of = reps.len(), seconds = started.elapsed().as_secs_f64(), writes = r.writes(), "rep synced");
        if let Some(pb) = &bar {
            pb.inc(1);
        }
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
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
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

/// A fingerprint of every record of every fake, keyed by service and id: enough to tell which
/// records were added or changed, without keeping the records.
type Prints = HashMap<String, u64>;

fn fingerprint(v: &Value) -> u64 {
    struct Sink(DefaultHasher);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.write(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(DefaultHasher::new());
    serde_json::to_writer(&mut sink, v).expect("JSON values serialize");
    sink.0.finish()
}

fn prints(f: &Fakes, sc: &Scenario) -> Prints {
    let mut out = Prints::new();
    let mut put = |prefix: &str, id: Option<&str>, r: &Value| {
        out.insert(format!("{prefix}:{}", id.unwrap_or_default()), fingerprint(r));
    };
    for obj in ["Contact", "Event"] {
        f.salesforce.each_record(obj, |r| put("sf", r["Id"].as_str(), r));
    }
    for rep in mailboxes(sc) {
        let prefix = format!("{}:{}", rep.provider, rep.mailbox);
        match rep.provider.as_str() {
            "exchange" => f.graph.each_record(&rep.mailbox, |r| put(&prefix, r["id"].as_str(), r)),
            _ => {
                f.google.each_record(&rep.mailbox, |r| put(&prefix, r["resourceName"].as_str().or(r["id"].as_str()), r))
            }
        }
    }
    out
}

/// Records per side after the story: CRM contacts and events, mailbox contacts per service.
fn record_counts(f: &Fakes, sc: &Scenario) -> BTreeMap<&'static str, usize> {
    let (mut sf_contacts, mut sf_events, mut exchange, mut google) = (0, 0, 0, 0);
    f.salesforce.each_record("Contact", |_| sf_contacts += 1);
    f.salesforce.each_record("Event", |_| sf_events += 1);
    for rep in mailboxes(sc) {
        match rep.provider.as_str() {
            "exchange" => f.graph.each_record(&rep.mailbox, |r| exchange += usize::from(!is_event(r))),
            _ => f.google.each_record(&rep.mailbox, |r| google += usize::from(r.get("resourceName").is_some())),
        }
    }
    BTreeMap::from([
        ("salesforce_contacts", sf_contacts),
        ("salesforce_events", sf_events),
        ("exchange_contacts", exchange),
        ("google_contacts", google),
    ])
}

/// Whether a Graph record is an event (contacts have no start).
fn is_event(v: &Value) -> bool {
    v.get("start").is_some()
}

/// Every rep seeded in the fakes (the Google rep too when only the Exchange rep is configured).
fn mailboxes(sc: &Scenario) -> impl Iterator<Item = &Rep> {
    [&sc.exchange_rep, &sc.google_rep].into_iter().chain(&sc.more_reps)
}

/// Records added, removed or changed between two fingerprints.
fn diff(a: &Prints, b: &Prints) -> u64 {
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
    let mut found = false;
    f.salesforce.each_record("Event", |e| {
        found |= e["Subject"].as_str() == Some(subject)
            && sf_time(&e["StartDateTime"]) == Some(start)
            && sf_time(&e["EndDateTime"]) == Some(end);
    });
    found
}

/// Counts keys per side, case-insensitively; `extra` is how many keys were seen again.
#[derive(Default)]
struct Tally(HashMap<String, u64>);

impl Tally {
    fn add(&mut self, key: Option<&str>) {
        if let Some(k) = key.filter(|k| !k.is_empty()) {
            *self.0.entry(k.to_lowercase()).or_default() += 1;
        }
    }
    fn extra(&self) -> u64 {
        self.0.values().map(|n| n - 1).sum()
    }
}

/// Extra copies: records sharing an e-mail or a sync key on one side (per rep on providers).
fn duplicates(f: &Fakes, sc: &Scenario) -> u64 {
    let (mut emails, mut keys, mut event_keys) = (Tally::default(), Tally::default(), Tally::default());
    f.salesforce.each_record("Contact", |c| {
        emails.add(c["Email"].as_str());
        keys.add(c["CrmSync_Key__c"].as_str());
    });
    f.salesforce.each_record("Event", |e| event_keys.add(e["CrmSync_Key__c"].as_str()));
    let mut n = emails.extra() + keys.extra() + event_keys.extra();
    for rep in mailboxes(sc) {
        let (mut emails, mut keys, mut event_keys) = (Tally::default(), Tally::default(), Tally::default());
        match rep.provider.as_str() {
            "exchange" => {
                // The synced folder, by e-mail and sync key; events by sync key.
                let graph_key = |v: &Value| {
                    v["singleValueExtendedProperties"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|p| {
                            p["id"]
                                .as_str()
                                .is_some_and(|i| i.eq_ignore_ascii_case(crmsync_exchange::SYNC_KEY_PROPERTY))
                        })
                        .and_then(|p| p["value"].as_str().map(str::to_owned))
                };
                let folder = f.graph.folder_id(&rep.mailbox, &rep.config.contacts.folder);
                f.graph.each_record(&rep.mailbox, |v| {
                    if is_event(v) {
                        return event_keys.add(graph_key(v).as_deref());
                    }
                    if folder.is_some() && v["parentFolderId"].as_str() == folder.as_deref() {
                        for a in v["emailAddresses"].as_array().into_iter().flatten() {
                            emails.add(a["address"].as_str());
                        }
                        keys.add(graph_key(v).as_deref());
                    }
                });
            }
            _ => {
                // Group members by e-mail and sync key.
                let members: HashSet<String> =
                    f.google.group_members(&rep.mailbox, &rep.config.contacts.group).into_iter().collect();
                f.google.each_record(&rep.mailbox, |p| {
                    if !p["resourceName"].as_str().is_some_and(|r| members.contains(r)) {
                        return;
                    }
                    for a in p["emailAddresses"].as_array().into_iter().flatten() {
                        emails.add(a["value"].as_str());
                    }
                    let key = p["clientData"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|d| d["key"] == crmsync_google::config::SYNC_KEY_PROPERTY)
                        .and_then(|d| d["value"].as_str());
                    keys.add(key);
                });
            }
        }
        n += emails.extra() + keys.extra() + event_keys.extra();
    }
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
