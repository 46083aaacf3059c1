//! The `crmsync` binary as a user meets it: `--help`, one-line errors for bad input, and
//! `status` on an empty SQLite store. (Being an integration test of `crmsync-cli`, this file
//! also makes `cargo test --workspace` build the binary the end-to-end test in `tests/` runs.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn crmsync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crmsync"));
    c.args(args).env_remove("RUST_LOG").env_remove("CRMSYNC_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the crmsync binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The one error line a failed command prints.
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "must fail; stdout: {}", text(&o.stdout));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {err:?}");
    assert!(lines[0].starts_with("crmsync: "), "{err}");
    lines[0].to_owned()
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("crmsync-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, body: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CONFIG: &str = r#"
[store]
url = "state.db"

[salesforce]
instance_url = "http://127.0.0.1:9"
client_id = "cid"
client_secret_env = "CRMSYNC_CLI_TEST_SF_SECRET"

[exchange]
graph_url = "http://127.0.0.1:9/v1.0"
token_url = "http://127.0.0.1:9/{tenant}/oauth2/v2.0/token"
tenant = "contoso"
client_id = "app"
client_secret_env = "CRMSYNC_CLI_TEST_GRAPH_SECRET"

[[reps]]
name = "Erin Exchange"
crm_user_id = "005A"
provider = "exchange"
mailbox = "erin@contoso.example"

[[reps]]
name = "Ed Exchange"
crm_user_id = "005B"
provider = "exchange"
mailbox = "ed@contoso.example"
"#;

#[test]
fn help_on_every_command() {
    let o = crmsync(&["--help"], &[]);
    assert!(o.status.success());
    let top = text(&o.stdout);
    for cmd in ["demo", "sandbox", "sync", "reset", "status", "connect"] {
        assert!(top.contains(cmd), "top-level help lists {cmd}: {top}");
        let o = crmsync(&[cmd, "--help"], &[]);
        assert!(o.status.success(), "{cmd} --help");
        assert!(text(&o.stdout).contains("Usage: crmsync"), "{cmd}: {}", text(&o.stdout));
    }
    let reset = text(&crmsync(&["reset", "--help"], &[]).stdout);
    for flag in ["--rep", "--as", "--scope", "--config"] {
        assert!(reset.contains(flag), "{reset}");
    }
}

#[test]
fn bad_config_files_are_one_line_naming_file_and_place() {
    let dir = TempDir::new("bad");
    let missing = dir.0.join("nope.toml").display().to_string();
    let e = error_line(&crmsync(&["sync", "--config", &missing], &[]));
    assert!(e.contains("nope.toml") && e.contains("cannot read the config file"), "{e}");

    let typo = dir.write("typo.toml", &CONFIG.replace("tenant = \"contoso\"", "tenant = \"contoso\"\ntennant = \"x\""));
    let e = error_line(&crmsync(&["sync", "--all", "--config", &typo], &[]));
    assert!(e.contains("typo.toml: [exchange]") && e.contains("tennant"), "{e}");

    let broken = dir.write("broken.toml", "[store\nurl = 1\n");
    let e = error_line(&crmsync(&["status", "--config", &broken], &[]));
    assert!(e.contains("broken.toml: line 1"), "{e}");

    let good = dir.write("good.toml", CONFIG);
    let e = error_line(&crmsync(&["sync", "--all", "--config", &good], &[]));
    assert!(
        e.ends_with(
            "good.toml: [salesforce] client_secret_env: environment variable CRMSYNC_CLI_TEST_SF_SECRET is not set"
        ),
        "{e}"
    );
    let e =
        error_line(&crmsync(&["sync", "--all", "--config", &good], &[("CRMSYNC_CLI_TEST_SF_SECRET", "sf-hunter2")]));
    assert!(e.contains("[exchange] client_secret_env: environment variable CRMSYNC_CLI_TEST_GRAPH_SECRET"), "{e}");

    let bad_url = dir.write("url.toml", &CONFIG.replace("http://127.0.0.1:9/v1.0", "graph.example/v1.0"));
    let e = error_line(&crmsync(
        &["sync", "--all", "--config", &bad_url],
        &[("CRMSYNC_CLI_TEST_SF_SECRET", "sf-hunter2"), ("CRMSYNC_CLI_TEST_GRAPH_SECRET", "g-hunter2")],
    ));
    assert!(e.contains("graph_url \"graph.example/v1.0\" is not an http(s) URL"), "{e}");
    assert!(!e.contains("hunter2"), "never a secret: {e}");

    let e = error_line(&crmsync(&["sync", "--rep", "zed", "--config", &good], &[]));
    assert!(e.contains("no rep matches \"zed\""), "{e}");
    let e = error_line(&crmsync(&["reset", "--rep", "exchange", "--as", "Alex", "--config", &good], &[]));
    assert!(e.contains("ambiguous") && e.contains("Erin Exchange, Ed Exchange"), "{e}");
    assert!(!dir.0.join("state.db").exists(), "no partial state: the store was not even opened");
}

#[test]
fn out_of_range_numbers_in_config_and_flags_are_one_line_and_exit_2() {
    let dir = TempDir::new("range");
    for (name, extra, want) in [
        ("ahead", "[sync]\nevents.days_ahead = 9999999999\n", "[sync]: events.days_ahead = 9999999999 is out of range"),
        ("back", "[sync]\nevents.days_back = 9223372036854775807\n", "events.days_back = 9223372036854775807 is out"),
        (
            "negative",
            "[reps.sync]\nevents.days_back = -5\n",
            "\"Ed Exchange\") [reps.sync]: events.days_back = -5 is out",
        ),
        (
            "group",
            "[groups.g]\nevents.days_ahead = -1\n",
            "[groups.g]: events.days_ahead = -1 is out of range (0 to 3650",
        ),
        ("huge", "[sync]\nevents.days_ahead = 99999999999999999999\n", "line "),
    ] {
        let cfg = dir.write(&format!("{name}.toml"), &format!("{CONFIG}{extra}"));
        let o = crmsync(&["status", "--config", &cfg], &[]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o.stderr));
        let e = error_line(&o);
        assert!(e.contains(&format!("{name}.toml: ")) && e.contains(want), "{name}: {e}");
    }
    let cfg = dir.write("ok.toml", CONFIG);
    for (args, flag) in [
        (&["worker", "--interval", "10000000000000"][..], "--interval"),
        (&["worker", "--interval=-1"][..], "--interval"),
        (&["worker", "--lease", "18446744073709"][..], "--lease"),
        (&["worker", "--lease", "99999999999999999999999"][..], "--lease"),
        (&["worker", "--batch", "0"][..], "--batch"),
        (&["worker", "--batch", "100000"][..], "--batch"),
        (&["worker", "--grace", "86400"][..], "--grace"),
        (&["sync", "--lease", "0"][..], "--lease"),
        (&["sync", "--lease", "18446744073709"][..], "--lease"),
        (&["status", "--errors", "-3"][..], "-3"),
    ] {
        let o = crmsync(&[args, &["--config", &cfg]].concat(), &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        let e = error_line(&o);
        assert!(e.contains(flag) && !e.contains("panicked"), "{args:?}: {e}");
    }
}

#[test]
fn status_on_an_empty_sqlite_store() {
    let dir = TempDir::new("status");
    let cfg = dir.write("crmsync.toml", CONFIG);
    // No secrets needed: status reads the store only.
    let o = crmsync(&["status", "--config", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("Erin Exchange (exchange, erin@contoso.example, admin_managed)"), "{out}");
    assert!(out.contains("state: ok") && out.contains("last successful cycle: never"), "{out}");
    assert!(out.contains("linked: 0 contacts, 0 events") && out.contains("last reset: never"), "{out}");

    let o = crmsync(&["status", "--rep", "ed", "--json", "--config", &cfg], &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let reps = v["reps"].as_array().unwrap();
    assert_eq!(reps.len(), 1);
    assert_eq!(reps[0]["rep"], "Ed Exchange");
    assert_eq!(reps[0]["state"], "ok");
    assert_eq!(reps[0]["links"], serde_json::json!({"contacts": 0, "events": 0}));
    assert_eq!(reps[0]["last_reset"], serde_json::Value::Null);
    assert_eq!(reps[0]["item_errors"], serde_json::json!([]));
}

#[test]
fn an_unreachable_service_fails_the_cycle_with_a_reason_and_a_non_zero_exit() {
    let dir = TempDir::new("unreachable");
    // Port 9 (discard) is closed on loopback; no retries so the test stays fast.
    let cfg = dir.write(
        "crmsync.toml",
        &CONFIG
            .replace("client_id = \"cid\"", "client_id = \"cid\"\nretry = { max_retries = 0 }")
            .replace("tenant = \"contoso\"", "tenant = \"contoso\"\nretry = { max_retries = 0 }"),
    );
    let o = crmsync(
        &["sync", "--rep", "erin", "--config", &cfg],
        &[("CRMSYNC_CLI_TEST_SF_SECRET", "sf-hunter2"), ("CRMSYNC_CLI_TEST_GRAPH_SECRET", "g-hunter2")],
    );
    assert_eq!(o.status.code(), Some(1), "stdout: {}", text(&o.stdout));
    let err = text(&o.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("crmsync: 1 of 1 cycles failed: Erin Exchange: "), "{err}");
    assert!(!err.contains("hunter2") && !text(&o.stdout).contains("hunter2"), "never a secret");
    let out = text(&o.stdout);
    assert!(out.contains("Erin Exchange (exchange) — error"), "{out}");
}

/// `crmsync demo --json` keeps every promise of the demo (issue "The crmsync CLI", Done when),
/// judged from its JSON, and even at `RUST_LOG=trace` no credential or token reaches the output.
#[test]
fn demo_keeps_its_promises_and_logs_no_secret() {
    let o = crmsync(&["demo", "--json"], &[("RUST_LOG", "trace")]);
    assert!(o.status.success(), "demo failed: {}", text(&o.stderr));
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    for secret in [
        crmsync_salesforce::fake::CLIENT_SECRET,
        crmsync_salesforce::fake::REFRESH_TOKEN,
        crmsync_exchange::fake::CLIENT_SECRET,
        "fake-session-",
        "fake-refresh-",
        "PRIVATE KEY",
        "Bearer ",
    ] {
        assert!(!all.contains(secret), "{secret:?} appears in the demo's output or logs");
    }
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    let cycle = |name: &str| d["cycles"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    let rep = |c: &serde_json::Value, provider: &str| {
        c["reps"].as_array().unwrap().iter().find(|r| r["provider"] == provider).unwrap().clone()
    };
    let writes = |r: &serde_json::Value, kind: &str| -> u64 {
        [
            "created_in_crm",
            "created_in_provider",
            "updated_in_crm",
            "updated_in_provider",
            "deleted_in_crm",
            "deleted_in_provider",
        ]
        .iter()
        .map(|k| r[kind][k].as_u64().unwrap())
        .sum()
    };
    for k in [
        "duplicates",
        "records_changed_by_reset",
        "unexpected_writes_after_reset",
        "lost_edits",
        "writes_in_quiet_cycle",
    ] {
        assert_eq!(d["invariants"][k], 0, "invariant {k}");
    }
    let (initial, after_reset, after_reconnect, quiet) =
        (cycle("initial"), cycle("after_reset"), cycle("after_reconnect"), cycle("quiet"));
    for r in after_reset["reps"].as_array().unwrap().iter().chain(quiet["reps"].as_array().unwrap()) {
        assert_eq!(writes(r, "contacts") + writes(r, "events"), 0, "{r}");
    }
    assert_eq!(rep(&after_reset, "google")["state"], "needs_reconnect");
    let g = rep(&after_reconnect, "google");
    assert_eq!((writes(&g, "contacts"), writes(&g, "events"), g["events"]["updated_in_crm"].as_u64()), (0, 1, Some(1)));
    for (provider, resync) in [("exchange", &after_reset), ("google", &after_reconnect)] {
        for kind in ["contacts", "events"] {
            assert_eq!(rep(resync, provider)[kind]["links_total"], rep(&initial, provider)[kind]["links_total"]);
        }
    }
    let refused: Vec<&serde_json::Value> =
        d["resets"].as_array().unwrap().iter().filter(|r| r["allowed"] == false).collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0]["reason"].as_str().unwrap().contains("Manage Sync"));
    let mut skips = std::collections::BTreeSet::new();
    for r in initial["reps"].as_array().unwrap() {
        for kind in ["contacts", "events"] {
            skips.extend(r[kind]["skipped"].as_object().unwrap().keys().cloned());
        }
    }
    for reason in
        ["outside_scope", "outside_filter", "outside_window", "private", "no_sync_marker", "category_not_folder"]
    {
        assert!(skips.contains(reason), "initial cycle lacks a {reason} skip: {skips:?}");
    }
}

/// `demo --db` keeps the store file, and refuses to reuse one (its fakes start empty each run).
#[test]
fn demo_keeps_its_store_and_refuses_an_old_one() {
    let dir = TempDir::new("demo-db");
    let db = dir.0.join("demo.db");
    let db = db.to_str().unwrap();
    let first = crmsync(&["demo", "--db", db], &[]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    // It ends by pointing at the admin console (the sandbox serves it) and whom to sign in as.
    let out = text(&first.stdout);
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.contains("crmsync sandbox") && last.contains("http://127.0.0.1:8650") && last.contains("Alex Admin"),
        "{last}"
    );
    assert!(std::path::Path::new(db).exists(), "the store file is kept");
    let line = error_line(&crmsync(&["demo", "--db", db], &[]));
    assert!(line.contains("needs a new store file") && line.contains("demo.db"), "{line}");
}

/// `crmsync demo --reps 3`: three reps seeded and synced (the third on Exchange, admin-managed),
/// each creating its new contacts on both sides, with every invariant at 0 (no duplicates).
#[test]
fn demo_with_three_reps_syncs_each_without_duplicates() {
    let o = crmsync(&["demo", "--json", "--reps", "3", "--contacts", "8", "--events", "2"], &[]);
    assert!(o.status.success(), "demo failed: {}", text(&o.stderr));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    assert_eq!(d["invariants"]["duplicates"], 0, "{}", d["invariants"]);
    let initial = &d["cycles"][0];
    let reps = initial["reps"].as_array().unwrap();
    let names: Vec<&str> = reps.iter().map(|r| r["rep"].as_str().unwrap()).collect();
    assert_eq!(names, ["Erin Exchange", "Gus Google", "Rep 3 Exchange"]);
    let third = &reps[2];
    assert_eq!((third["provider"].as_str(), third["state"].as_str()), (Some("exchange"), Some("ok")), "{third}");
    // 8 contacts: 4 matched, 2 new in the folder, 2 new in the CRM; 2 meetings.
    let c = &third["contacts"];
    assert_eq!(
        (c["linked"].as_u64(), c["created_in_crm"].as_u64(), c["created_in_provider"].as_u64()),
        (Some(4), Some(2), Some(2)),
        "{c}"
    );
    assert_eq!(third["events"]["created_in_crm"], 2, "{third}");
    assert!(crmsync(&["demo", "--reps", "1"], &[]).status.code() == Some(2), "the demo needs both standard reps");
}

/// `crmsync bench` on its smallest sizes: the sandbox and the engine in their own processes, a
/// report with one row per run, requests at the floor on the initial sync (a quiet cycle never
/// below its floor), and the growth exponents of each series.
#[test]
fn bench_writes_a_report_with_the_initial_sync_at_the_floor() {
    let dir = TempDir::new("bench");
    let out = dir.0.join("report.md");
    let o = crmsync(
        &[
            "bench",
            "--series",
            "one-rep,many-reps",
            "--contacts",
            "40,80",
            "--reps",
            "3,4",
            "--rep-contacts",
            "8",
            "--rep-events",
            "2",
            "--port-base",
            "10150",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "bench failed: {}", text(&o.stderr));
    let md = std::fs::read_to_string(&out).expect("the report");
    assert!(md.contains("| 1 × 40 + 8 |") && md.contains("| 4 × 8 + 2 |"), "{md}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).expect("JSON figures");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for run in runs {
        assert!(run["initial"]["peak_rss_kib"].as_u64().unwrap() > 0, "{run}");
        for (side, f) in [("crm_requests", "crm"), ("provider_requests", "provider")] {
            assert_eq!(run["initial"][side], run["floor_initial"][f], "initial {side}: {run}");
            assert!(run["quiet"][side].as_u64() >= run["floor_quiet"][f].as_u64(), "quiet {side}: {run}");
        }
        assert_eq!(run["initial"]["failed_reps"], 0, "{run}");
    }
    for series in ["OneRep", "ManyReps"] {
        assert!(r["exponents"][series]["initial_wall"].is_number(), "{}", r["exponents"]);
    }
}
