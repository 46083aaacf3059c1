//! Delete Safety and verified resets against the Graph and Salesforce fakes (real HTTP over
//! loopback) with a SQLite store: a rep removes 300 of 1,000 synced contacts from the
//! `Salesforce_Sync` folder under `delete = "propagate"`; the deletes are held, survive a
//! restart, and an admin's approval deletes exactly those 300 in the CRM, while a discard
//! brings them back to the folder (or unlinks them when contacts only flow to the CRM).

use std::collections::BTreeSet;
use std::sync::Arc;

use crmsync_cli::scenario::{EXCHANGE_MAILBOX, Fakes, Scenario, Size, seed};
use crmsync_core::{
    CycleReport, DeletePolicy, Direction, Engine, Kind, LinkState, Rep, RepState, ResetScope, Store, Verdict,
};
use crmsync_sql::SqlStore;

struct World {
    fakes: Fakes,
    sc: Scenario,
    rep: Rep,
    db: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn world(direction: Direction) -> World {
    let fakes = Fakes::start().await;
    // 500 matched + 250 new on each side: 1,000 contact links after the first cycle.
    let sc = seed(&fakes, Size { contacts: 1000, events: 1, ..Size::default() });
    let mut rep = sc.exchange_rep.clone();
    rep.config.contacts.delete = DeletePolicy::Propagate;
    rep.config.contacts.direction = direction;
    let dir = std::env::temp_dir().join(format!("crmsync-safety-{}-{}", std::process::id(), direction_tag(direction)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    World { fakes, sc, rep, db: dir.join("store.db"), _dir: TempDir(dir) }
}

impl World {
    /// A new engine on a newly opened store (a restart).
    async fn engine(&self) -> (Engine, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&self.db.display().to_string()).await.expect("store"));
        let mut engine = Engine::new(self.fakes.crm().expect("crm"), store.clone()).with_clock(self.sc.now);
        for p in self.fakes.providers().expect("providers") {
            engine = engine.with_provider(p);
        }
        (engine, store)
    }
    fn crm_contacts(&self) -> BTreeSet<String> {
        self.fakes.salesforce.contacts().iter().map(|c| c["Id"].as_str().unwrap_or_default().to_owned()).collect()
    }
    fn folder(&self) -> Vec<serde_json::Value> {
        self.fakes.graph.folder_contacts(EXCHANGE_MAILBOX, &self.rep.config.contacts.folder)
    }
}

async fn cycle(engine: &Engine, rep: &Rep) -> CycleReport {
    let r = engine.cycle(rep).await.expect("cycle");
    assert_eq!(r.error, None, "{r:?}");
    r
}

/// Initial sync, then 300 linked contacts leave the folder (deleted, or moved out); returns
/// (their CRM ids, their mailbox ids).
async fn remove_300(w: &World, engine: &Engine, store: &dyn Store, delete: bool) -> (Vec<String>, Vec<String>) {
    let r = cycle(engine, &w.rep).await;
    let links = if w.rep.config.contacts.direction == Direction::Both { 1000 } else { 750 };
    assert_eq!(r.contacts.links_total, links, "{:?}", r.contacts);
    // A quiet cycle, so that the mailbox's delta has seen the contacts the first one created
    // (a delta never reports an item it never reported as there).
    assert_eq!(cycle(engine, &w.rep).await.writes(), 0);
    let links = store.links(&w.rep.id, Kind::Contact).await.expect("links");
    let linked: Vec<_> = links.iter().filter(|l| l.state == LinkState::Linked).take(300).collect();
    for l in &linked {
        let done = if delete {
            w.fakes.graph.delete_contact(EXCHANGE_MAILBOX, &l.provider_id)
        } else {
            w.fakes.graph.move_contact(EXCHANGE_MAILBOX, &l.provider_id, None)
        };
        assert!(done, "the fake holds {}", l.provider_id);
    }
    (linked.iter().map(|l| l.crm_id.clone()).collect(), linked.iter().map(|l| l.provider_id.clone()).collect())
}

/// The held cycle: CRM untouched, the rep `deletes_held` with 300, everything else applied.
async fn assert_held(w: &World, engine: &Engine, store: &dyn Store, crm_before: &BTreeSet<String>) {
    let r = cycle(engine, &w.rep).await;
    assert_eq!(r.state, RepState::DeletesHeld, "{r:?}");
    assert_eq!((r.contacts.deleted_in_crm, r.contacts.held_deletes_in_crm), (0, 300), "{:?}", r.contacts);
    assert_eq!(&w.crm_contacts(), crm_before, "no CRM contact was deleted");
    assert_eq!(store.status(&w.rep.id).await.expect("status").state, RepState::DeletesHeld);
    assert_eq!(store.held(&w.rep.id, Kind::Contact).await.expect("held").len(), 300);
}

#[tokio::test]
async fn three_hundred_of_a_thousand_are_held_survive_a_restart_and_approve_deletes_exactly_them() {
    let w = world(Direction::Both).await;
    let (engine, store) = w.engine().await;
    let (crm_ids, _) = remove_300(&w, &engine, store.as_ref(), true).await;
    let before = w.crm_contacts();
    // The dry run shows the hold (the decision is the plan's), and writes nothing.
    let plans = engine.dry_run(&w.rep, None).await.expect("dry run");
    let counts = plans.iter().find(|p| p.kind == Kind::Contact).expect("contacts").counts();
    assert_eq!((counts.get("hold delete in crm"), counts.get("delete in crm")), (Some(&300), None), "{counts:?}");
    assert!(store.held(&w.rep.id, Kind::Contact).await.expect("held").is_empty(), "the dry run held nothing");
    assert_held(&w, &engine, store.as_ref(), &before).await;
    // Incremental cycles keep them held (the delta no longer mentions them).
    let r = cycle(&engine, &w.rep).await;
    assert_eq!((r.state, r.contacts.held_deletes_in_crm, r.writes()), (RepState::DeletesHeld, 300, 0), "{r:?}");
    drop((engine, store));

    // A restart: the quarantine is in the store.
    let (engine, store) = w.engine().await;
    let held = store.held(&w.rep.id, Kind::Contact).await.expect("held");
    let held_ids: BTreeSet<String> = held.iter().map(|h| h.id.clone()).collect();
    assert_eq!(held_ids, crm_ids.iter().cloned().collect(), "the held deletes are those 300 CRM contacts");
    let half = engine.find_user(&w.sc.half_admin).await.expect("user");
    let refused = engine.judge_held(&half, &w.rep, Verdict::Approved).await.expect_err("needs Manage Sync");
    assert!(refused.message().contains("permission denied"), "{refused}");
    let admin = engine.find_user(&w.sc.admin).await.expect("admin");
    assert_eq!(engine.judge_held(&admin, &w.rep, Verdict::Approved).await.expect("approve"), 300);
    let r = cycle(&engine, &w.rep).await;
    assert_eq!(r.state, RepState::Ok, "{r:?}");
    assert_eq!((r.contacts.deleted_in_crm, r.contacts.held_deletes_in_crm), (300, 0), "{:?}", r.contacts);
    let after = w.crm_contacts();
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(gone, crm_ids.into_iter().collect(), "exactly the 300 held CRM contacts were deleted");
    assert_eq!(after.len(), before.len() - 300);
    assert_eq!(cycle(&engine, &w.rep).await.writes(), 0, "quiet afterwards");
}

#[tokio::test]
async fn discard_brings_the_300_back_to_the_folder_and_items_seen_back_are_released() {
    let w = world(Direction::Both).await;
    let (engine, store) = w.engine().await;
    let (_, moved) = remove_300(&w, &engine, store.as_ref(), false).await;
    let folder_before = w.folder().len() + 300;
    let crm_before = w.crm_contacts();
    assert_held(&w, &engine, store.as_ref(), &crm_before).await;
    // The rep puts 100 of them back: the next cycle sees them and releases their held deletes.
    for id in &moved[..100] {
        assert!(w.fakes.graph.move_contact(EXCHANGE_MAILBOX, id, Some(&w.rep.config.contacts.folder)));
    }
    let r = cycle(&engine, &w.rep).await;
    assert_eq!((r.contacts.held_deletes_in_crm, r.writes()), (200, 0), "{r:?}");
    let admin = engine.find_user(&w.sc.admin).await.expect("admin");
    assert_eq!(engine.judge_held(&admin, &w.rep, Verdict::Discarded).await.expect("discard"), 200);
    let r = cycle(&engine, &w.rep).await;
    assert_eq!(r.state, RepState::Ok, "{r:?}");
    assert_eq!(
        (r.contacts.created_in_provider, r.contacts.deleted_in_crm, r.contacts.held_deletes_in_crm),
        (200, 0, 0),
        "{:?}",
        r.contacts
    );
    assert_eq!(w.crm_contacts(), crm_before, "nothing was deleted in the CRM");
    assert_eq!(w.folder().len(), folder_before, "the folder holds the 300 again (100 moved back, 200 restored)");
    assert_eq!(r.contacts.links_total, 1000);
    assert_eq!(cycle(&engine, &w.rep).await.writes(), 0, "quiet afterwards");
}

#[tokio::test]
async fn discard_unlinks_when_contacts_only_flow_to_the_crm() {
    let w = world(Direction::ProviderToCrm).await;
    let (engine, store) = w.engine().await;
    let (crm_ids, _) = remove_300(&w, &engine, store.as_ref(), true).await;
    let crm_before = w.crm_contacts();
    assert_held(&w, &engine, store.as_ref(), &crm_before).await;
    let admin = engine.find_user(&w.sc.admin).await.expect("admin");
    engine.judge_held(&admin, &w.rep, Verdict::Discarded).await.expect("discard");
    let r = cycle(&engine, &w.rep).await;
    assert_eq!((r.state, r.writes(), r.contacts.suppressed), (RepState::Ok, 0, 300), "{r:?}");
    assert_eq!(w.crm_contacts(), crm_before, "nothing deleted, nothing restored");
    let links = store.links(&w.rep.id, Kind::Contact).await.expect("links");
    let kept: BTreeSet<&String> = links
        .iter()
        .filter(|l| l.state == LinkState::Suppressed && crm_ids.contains(&l.crm_id))
        .map(|l| &l.crm_id)
        .collect();
    assert_eq!(kept.len(), 300, "the 300 pairs are unlinked (kept suppressed), their CRM contacts stay");
}

#[tokio::test]
async fn a_reset_of_a_healthy_rep_is_verified_with_zero_writes_and_undo_restores_the_links_exactly() {
    let w = world(Direction::Both).await;
    let (engine, store) = w.engine().await;
    cycle(&engine, &w.rep).await;
    let before = store.links(&w.rep.id, Kind::Contact).await.expect("links");
    let cursors = store.cursors(&w.rep.id, Kind::Contact).await.expect("cursors");
    let admin = engine.find_user(&w.sc.admin).await.expect("admin");
    // Reset, then undo before any cycle: the links and cursors come back exactly.
    let out = engine.reset(&admin, &w.rep, ResetScope::All).await.expect("reset");
    assert!(out.record.undoable && out.record.verification.is_none(), "{:?}", out.record);
    assert!(store.links(&w.rep.id, Kind::Contact).await.expect("links").iter().all(|l| l.state != LinkState::Linked));
    let undone = engine.undo_reset(&admin, &w.rep).await.expect("undo");
    assert_eq!(undone.undone.as_ref().map(|u| u.admin_name.as_str()), Some(w.sc.admin.as_str()));
    assert_eq!(store.links(&w.rep.id, Kind::Contact).await.expect("links"), before, "undo restores every link");
    assert_eq!(store.cursors(&w.rep.id, Kind::Contact).await.expect("cursors"), cursors);
    assert_eq!(cycle(&engine, &w.rep).await.writes(), 0, "an undone reset leaves a quiet rep");

    // Reset again and let a cycle run: verified, 0 writes; no undo any more.
    engine.reset(&admin, &w.rep, ResetScope::All).await.expect("reset");
    let r = cycle(&engine, &w.rep).await;
    assert_eq!(r.writes(), 0, "{r:?}");
    let rec = store.status(&w.rep.id).await.expect("status").last_reset.expect("reset");
    let v = rec.verification.clone().expect("verified");
    assert!(v.verified, "{v:?}");
    assert_eq!(v.to_string(), format!("verified: re-linked 1000 contacts and {} events, 0 writes", r.events.linked));
    assert_eq!(store.resets(&w.rep.id).await.expect("audit").last(), Some(&rec), "the audit has the verification");
    let err = engine.undo_reset(&admin, &w.rep).await.expect_err("a cycle ran");
    assert!(err.message().contains("cycle has run since"), "{err}");
}

/// Tests run in parallel in one process: each world gets its own folder.
fn direction_tag(d: Direction) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{d:?}-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// `explain`'s five answers in the demo scenario: linked, skipped (private event; a folder
/// contact whose CRM match belongs to another owner), item error, suppressed (by the rep), not
/// seen.
#[tokio::test]
async fn explain_answers_the_five_cases_of_the_demo_scenario() {
    use crmsync_core::engine::explain::{Answer, Query};
    let fakes = Fakes::start().await;
    let sc = seed(&fakes, Size::default());
    let rep = sc.exchange_rep.clone();
    let folder = rep.config.contacts.folder.clone();
    let bad = crmsync_core::Contact {
        given_name: Some("Broken".into()),
        emails: vec!["broken at example".into()],
        ..Default::default()
    };
    let bad_id = fakes.graph.insert_contact(EXCHANGE_MAILBOX, Some(&folder), &bad);
    let store: Arc<dyn Store> = Arc::new(SqlStore::connect("sqlite::memory:").await.expect("store"));
    let mut engine = Engine::new(fakes.crm().expect("crm"), store.clone()).with_clock(sc.now);
    for p in fakes.providers().expect("providers") {
        engine = engine.with_provider(p);
    }
    engine.cycle(&rep).await.expect("cycle");
    // The rep takes one linked contact out of the folder (delete policy unlink: suppressed).
    let id_of = |email: &str| {
        fakes
            .graph
            .folder_contacts(EXCHANGE_MAILBOX, &folder)
            .iter()
            .find(|c| c["emailAddresses"][0]["address"].as_str() == Some(email))
            .and_then(|c| c["id"].as_str().map(str::to_owned))
            .expect("in the folder")
    };
    let gone = id_of("match.1@contoso-customers.example");
    assert!(fakes.graph.move_contact(EXCHANGE_MAILBOX, &gone, None));
    engine.cycle(&rep).await.expect("cycle");
    let explain = async |q: Query| {
        let answers = engine.explain(&rep, &q).await.expect("explain");
        assert_eq!(answers.len(), 1, "{q:?}: {answers:#?}");
        let text = answers[0].to_string();
        (answers.into_iter().next().expect("one"), text)
    };
    let writes = fakes.requests();

    let (a, text) = explain(Query::Email("MATCH.0@contoso-customers.example".into())).await;
    assert!(matches!(&a, Answer::Linked { in_step: true, crm, .. } if !crm.id.is_empty()), "{a:?}");
    assert!(text.starts_with("linked contact: mailbox ") && text.contains("<=> CRM"), "{text}");
    let (a, text) = explain(Query::Subject("dentist".into())).await;
    assert!(
        matches!(&a, Answer::Skipped { reason, item, .. } if reason == "private" && item.side == crmsync_core::Side::Provider),
        "{a:?}"
    );
    assert!(text.contains("reason private"), "{text}");
    let (a, text) = explain(Query::Email("shared.0@shared-account.example".into())).await;
    assert!(matches!(&a, Answer::Skipped { reason, .. } if reason == "outside_filter"), "{a:?} {text}");
    let (a, text) = explain(Query::Id(bad_id.clone())).await;
    assert!(matches!(&a, Answer::ItemError { item, attempts, .. } if item.id == bad_id && *attempts >= 1), "{a:?}");
    assert!(text.contains("invalid e-mail address") && text.contains("since"), "{text}");
    let (a, text) = explain(Query::Email("match.1@contoso-customers.example".into())).await;
    assert!(matches!(&a, Answer::Suppressed { provider_id, .. } if provider_id.is_empty()), "{a:?}");
    assert!(text.contains("the rep took the mailbox item out of sync"), "{text}");
    let (a, text) = explain(Query::Email("nobody@nowhere.example".into())).await;
    assert!(matches!(&a, Answer::NotSeen { .. }), "{a:?}");
    assert!(text.starts_with("not seen (contact) on the provider and crm side"), "{text}");
    // Explaining reads only: the fakes hold what they held.
    let after = fakes.requests();
    assert!(after.0 > writes.0 && after.1 > writes.1, "it read both sides");
    assert_eq!(engine.cycle(&rep).await.expect("cycle").writes(), 0, "and changed nothing");
}

/// Bulk Reset Sync from the command line: three reps by `--where` (refused without `--yes` when
/// stdin is not a terminal, nothing changed), then by `--reps-file` with `--yes`: one audit
/// record per rep; and `reset --undo` explains why it cannot once a cycle ran.
#[tokio::test]
async fn bulk_reset_of_three_reps_writes_three_audit_records() {
    use crmsync_cli::sandbox::{ENV_GOOGLE_SECRET, ENV_GRAPH_SECRET, ENV_SF_SECRET, config_toml};
    use crmsync_core::SyncState;
    use secrecy::ExposeSecret;
    let fakes = Fakes::start().await;
    let sc = seed(&fakes, Size { contacts: 4, events: 1, ..Size::default() });
    // A third rep: another CRM user with a mailbox of their own (a reset reads no mailbox).
    let olga = fakes.salesforce.records("User").into_iter().find(|u| u["Name"] == "Olga Other").unwrap();
    let mut third = sc.exchange_rep.clone();
    third.crm_user_id = olga["Id"].as_str().unwrap().to_owned();
    (third.id, third.name, third.mailbox) =
        (third.crm_user_id.clone(), "Olga Other".into(), "olga@contoso.example".into());
    let reps = [sc.exchange_rep.clone(), sc.google_rep.clone(), third];
    let dir =
        std::env::temp_dir().join(format!("crmsync-bulk-{}-{}", std::process::id(), direction_tag(Direction::Both)));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let config = dir.join("crmsync.toml");
    std::fs::write(&config, config_toml(&fakes, &reps, "bulk.db")).unwrap();
    let secret = |s: Option<secrecy::SecretString>| s.map(|s| s.expose_secret().to_owned()).unwrap_or_default();
    let env = [
        (ENV_SF_SECRET, secret(fakes.salesforce.config().client_secret)),
        (ENV_GRAPH_SECRET, secret(fakes.graph.config().client_secret)),
        (ENV_GOOGLE_SECRET, secret(fakes.google.config().client_secret)),
    ];
    let config = config.display().to_string();
    let run = async |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_crmsync"));
        c.args(args).args(["--config", &config]).envs(env.iter().map(|(k, v)| (*k, v)));
        c.stdin(std::process::Stdio::null());
        let o = c.output().await.unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let admin = sc.admin.as_str();
    let (code, _, err) = run(&["sync", "--rep", "erin exchange"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = run(&["reset", "--where", "state=ok", "--as", admin]).await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.contains("of 3 reps") && err.contains("refusing to reset 3 reps without --yes"), "{out}{err}");
    let (_, status, _) = run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["reps"].as_array().unwrap().iter().all(|r| r["last_reset"].is_null()),
        "nothing was reset: {status}"
    );
    let (code, _, err) = run(&["reset", "--where", "state=broken", "--as", admin]).await;
    assert!(code == Some(2) && err.contains("expected state=STATE"), "{err}");

    let file = dir.join("reps.txt");
    std::fs::write(&file, "# the team\nerin exchange\n\ngus\nolga\n").unwrap();
    let file = file.display().to_string();
    let (code, out, err) = run(&["reset", "--reps-file", &file, "--yes", "--as", admin, "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["resets"].as_array().unwrap().len(), 3, "{out}");
    let store = SqlStore::connect(&dir.join("bulk.db").display().to_string()).await.unwrap();
    for rep in &reps {
        let audit = store.resets(&rep.id).await.unwrap();
        assert_eq!(audit.len(), 1, "one audit record for {}: {audit:?}", rep.name);
        assert_eq!(audit[0].admin_name, sc.admin);
    }
    store.close().await;

    // Undo: allowed before a cycle, explained after one.
    let (code, out, err) = run(&["reset", "--undo", "--rep", "erin exchange", "--as", admin]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Undid the Reset Sync of Erin Exchange") && out.contains("contact links"), "{out}");
    let (code, _, err) = run(&["reset", "--undo", "--rep", "erin exchange", "--as", admin]).await;
    assert!(code == Some(2) && err.contains("already undone by Alex Admin"), "{err}");
    let (code, _, err) = run(&["reset", "--rep", "erin exchange", "--as", admin]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["sync", "--rep", "erin exchange"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["reset", "--undo", "--rep", "erin exchange", "--as", admin]).await;
    assert_eq!(code, Some(2));
    assert!(err.contains("a sync cycle has run since the reset"), "{err}");
    let (_, status, _) = run(&["status", "--rep", "erin exchange"]).await;
    assert!(status.contains("verified: re-linked") && status.contains(", 0 writes"), "{status}");
}
