//! A real Radicale for the tests: started on a free loopback port with a temporary storage
//! folder and no authentication (the Basic user name is the owner) or htpasswd `plain` users,
//! stopped when dropped.
//!
//! `CRMSYNC_RADICALE` names the `radicale` executable (`.ci/run` installs it into a venv). When
//! it is unset the tests skip with a loud line, unless `CRMSYNC_REQUIRE_RADICALE=1`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use crmsync_core::testkit::say;
use crmsync_dav::{DavConfig, DavProvider};
use secrecy::SecretString;

#[derive(Debug)]
pub struct Radicale {
    child: Child,
    pub dir: PathBuf,
    pub url: String,
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn executable() -> Option<String> {
    if let Ok(path) = std::env::var("CRMSYNC_RADICALE") {
        return Some(path);
    }
    assert!(
        std::env::var("CRMSYNC_REQUIRE_RADICALE").as_deref() != Ok("1"),
        "CRMSYNC_REQUIRE_RADICALE=1 but CRMSYNC_RADICALE is unset"
    );
    say("dav tests: SKIPPED — set CRMSYNC_RADICALE to a radicale executable (bash .ci/run installs one)");
    None
}

/// A fresh server, or `None` (after a loud line) when Radicale is not installed.
pub async fn radicale() -> Option<Radicale> {
    start(&[]).await
}

/// A fresh server with htpasswd (`plain`) authentication for these users, or `None`.
pub async fn radicale_with_users(users: &[(&str, &str)]) -> Option<Radicale> {
    start(users).await
}

async fn start(users: &[(&str, &str)]) -> Option<Radicale> {
    let exe = executable()?;
    static VERSION: Once = Once::new();
    VERSION.call_once(|| {
        let out = Command::new(&exe).arg("--version").output().expect("radicale --version runs");
        say(&format!("dav tests: Radicale {}", String::from_utf8_lossy(&out.stdout).trim()));
    });
    let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let dir = std::env::temp_dir().join(format!("crmsync-radicale-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("storage folder");
    let mut cmd = Command::new(&exe);
    if users.is_empty() {
        cmd.args(["--auth-type", "none"]);
    } else {
        let file = dir.join("users");
        let lines: String = users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        std::fs::write(&file, lines).expect("htpasswd file");
        cmd.args(["--auth-type", "htpasswd", "--auth-htpasswd-encryption", "plain"])
            .args(["--auth-htpasswd-filename", &file.to_string_lossy()]);
    }
    let child = cmd
        .args(["--server-hosts", &format!("127.0.0.1:{port}")])
        .args(["--storage-filesystem-folder", &dir.join("collections").to_string_lossy()])
        .args(["--logging-level", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("radicale starts");
    let server = Radicale { child, dir, url: format!("http://127.0.0.1:{port}/") };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("radicale did not answer on port {port}");
}

impl Radicale {
    /// A provider on this server syncing the address book and calendar named `name`.
    pub fn provider(&self, name: &str) -> DavProvider {
        self.provider_with(name, true)
    }

    /// The same, reading changes by `sync-collection` or (false) by comparing etag listings.
    pub fn provider_with(&self, name: &str, sync_collection: bool) -> DavProvider {
        let mut config = DavConfig::new(&self.url);
        config.sync_collection = sync_collection;
        config.address_book = name.into();
        config.calendar = name.into();
        config.multiget_batch = 5;
        config.password = Some(SecretString::from("unused-with-auth-none"));
        DavProvider::new(config).expect("valid config")
    }

    /// Forget every sync token the server handed out: its token history lives in the cache.
    /// (A token that names the current state stays valid; see `expire` in the tests.)
    pub fn drop_sync_token_history(&self) {
        fn walk(p: &std::path::Path) {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                let path = e.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n == "sync-token") {
                        let _ = std::fs::remove_dir_all(&path);
                    } else {
                        walk(&path);
                    }
                }
            }
        }
        walk(&self.dir);
    }
}

/// Make every sync token of `c`'s address book expire: change its state (a card created and
/// deleted, which leaves the contents as they were) and drop the server's token history.
pub async fn expire(server: &Radicale, c: &dyn crmsync_core::Collection, kind: crmsync_core::Kind) {
    use crmsync_core::{NewItem, Side, SyncKey, testkit::sample};
    let key = SyncKey::derive("expire", kind, Side::Crm, &format!("{:?}", std::time::Instant::now()));
    let made = c.create_many(&[NewItem { sync_key: key, record: sample(kind, 999) }]).await.expect("create");
    let id = made[0].as_ref().expect("created").id.clone();
    c.delete_many(&[id]).await.expect("delete")[0].as_ref().expect("deleted");
    server.drop_sync_token_history();
}
