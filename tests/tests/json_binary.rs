//! A custom `crmsync` built in a few lines (the `json_provider` example: the stock commands plus a
//! `json` provider kind) syncs a JSON contact file against the sandbox's Salesforce, as separate
//! processes: its own `sandbox`, then `sync` twice (the second writes nothing).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// `target/debug/examples/json_provider`, built (or brought up to date) first: a binary left by an
/// earlier build must not stand in for the current code.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let bin = dir.join("examples").join(format!("json_provider{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo).args(["build", "-p", "crmsync-examples", "--example", "json_provider"]).status();
    assert!(st.is_ok_and(|s| s.success()), "cannot build the json_provider example");
    bin
}

struct Killed(std::process::Child, PathBuf);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn the_example_binary_syncs_a_json_rep_against_the_sandbox_salesforce() {
    let bin = binary();
    let dir = std::env::temp_dir().join(format!("crmsync-json-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("crmsync.toml");
    let (sb, info) = (0..10)
        .find_map(|_| {
            let p = TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
            if p >= 65000 || !(1..3).all(|i| TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
                return None;
            }
            let mut child = Command::new(&bin)
                .args(["sandbox", "--json", "--port-base", &p.to_string(), "--config-out"])
                .arg(&config)
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start the example's sandbox");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
            let sb = Killed(child, dir.clone());
            serde_json::from_str::<Value>(&line).ok().map(|info| (sb, info))
        })
        .expect("the sandbox did not start");
    let text = std::fs::read_to_string(&config).unwrap();
    let crm_user = text.split("crm_user_id = ").nth(1).and_then(|s| s.lines().next()).expect("a rep's CRM user");
    let json_dir = dir.join("json");
    let added = format!(
        "\n[json]\ndir = {:?}\n\n[[reps]]\nname = \"Jo Json\"\nid = \"jo-json\"\ncrm_user_id = {crm_user}\n\
         provider = \"json\"\nmailbox = \"jo\"\n\n[reps.sync.events]\ndirection = \"off\"\n",
        json_dir.display().to_string()
    );
    std::fs::write(&config, text + &added).unwrap();
    let sync = || {
        let mut c = Command::new(&bin);
        c.args(["sync", "--rep", "Jo Json", "--json", "--config"]).arg(&config).env_remove("RUST_LOG");
        for (k, v) in info["env"].as_object().expect("env") {
            c.env(k, v.as_str().unwrap());
        }
        let o = c.output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "sync failed: {err}\n{out}");
        let v: Value = serde_json::from_str(&out).expect("sync --json");
        v["reports"][0]["contacts"].clone()
    };
    let first = sync();
    let created = first["created_in_provider"].as_u64().unwrap();
    assert!(created > 0, "the rep's CRM contacts reach the file: {first}");
    let file: Value = serde_json::from_slice(&std::fs::read(json_dir.join("jo.json")).unwrap()).unwrap();
    assert_eq!(file["contacts"].as_array().map(Vec::len), Some(created as usize));
    let second = sync();
    for op in ["created", "updated", "deleted"] {
        for side in ["crm", "provider"] {
            assert_eq!(second[format!("{op}_in_{side}")], 0, "a second cycle writes nothing: {second}");
        }
    }
    drop(sb);
}
