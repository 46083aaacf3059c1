//! Real DAV servers for the tests, each started on a free loopback port with a temporary
//! storage folder and stopped when dropped: Radicale with no authentication (the Basic user
//! name is the owner) or htpasswd `plain` users, and Xandikos (single user, `/user/`).
//!
//! `CRMSYNC_RADICALE` / `CRMSYNC_XANDIKOS` name the executables (`.ci/run` installs both into a
//! venv). When one is unset its tests skip with a loud line, unless
//! `CRMSYNC_REQUIRE_RADICALE=1` (which CI sets for both).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use crmsync_core::testkit::say;
use crmsync_dav::{DavConfig, DavProvider};
use secrecy::SecretString;

/// The rep the tests sync (the DAV user `riley`).
pub fn rep() -> crmsync_core::Rep {
    crmsync_core::Rep {
        id: "riley".into(),
        name: "Riley Rep".into(),
        crm_user_id: "riley".into(),
        provider: "dav".into(),
        mailbox: "riley".into(),
        connection: crmsync_core::ConnectionMode::AdminManaged,
        config: crmsync_core::SyncConfig::default(),
    }
}

#[derive(Debug)]
pub struct Server {
    child: Child,
    pub dir: PathBuf,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn executable(var: &str) -> Option<String> {
    if let Ok(path) = std::env::var(var) {
        return Some(path);
    }
    assert!(
        std::env::var("CRMSYNC_REQUIRE_RADICALE").as_deref() != Ok("1"),
        "CRMSYNC_REQUIRE_RADICALE=1 but {var} is unset"
    );
    say(&format!("dav tests: SKIPPED — set {var} to the server's executable (bash .ci/run installs it)"));
    None
}

fn print_version_once(once: &'static Once, name: &str, exe: &str) {
    once.call_once(|| {
        let out = Command::new(exe).arg("--version").output().expect("--version runs");
        let text = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout }).into_owned();
        say(&format!("dav tests: {name} {}", text.trim()));
    });
}

fn free_port_and_dir(name: &str) -> (u16, PathBuf) {
    let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let dir = std::env::temp_dir().join(format!("crmsync-{name}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("storage folder");
    (port, dir)
}

async fn answering(child: Child, dir: PathBuf, port: u16) -> Server {
    let server = Server { child, dir, url: format!("http://127.0.0.1:{port}/") };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server did not answer on port {port}");
}

/// A fresh Xandikos, or `None` (after a loud line) when it is not installed.
pub async fn xandikos() -> Option<Server> {
    let exe = executable("CRMSYNC_XANDIKOS")?;
    static VERSION: Once = Once::new();
    print_version_once(&VERSION, "Xandikos", &exe);
    let (port, dir) = free_port_and_dir("xandikos");
    let child = Command::new(&exe)
        .args(["serve", "--autocreate", "-l", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(dir.join("data"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xandikos starts");
    Some(answering(child, dir, port).await)
}

/// A fresh server, or `None` (after a loud line) when Radicale is not installed.
pub async fn radicale() -> Option<Server> {
    start(&[]).await
}

/// A fresh server with htpasswd (`plain`) authentication for these users, or `None`.
pub async fn radicale_with_users(users: &[(&str, &str)]) -> Option<Server> {
    start(users).await
}

async fn start(users: &[(&str, &str)]) -> Option<Server> {
    let exe = executable("CRMSYNC_RADICALE")?;
    static VERSION: Once = Once::new();
    print_version_once(&VERSION, "Radicale", &exe);
    let (port, dir) = free_port_and_dir("radicale");
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
    Some(answering(child, dir, port).await)
}

impl Server {
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
pub async fn expire(server: &Server, c: &dyn crmsync_core::Collection, kind: crmsync_core::Kind) {
    use crmsync_core::{NewItem, Side, SyncKey, testkit::sample};
    let key = SyncKey::derive("expire", kind, Side::Crm, &format!("{:?}", std::time::Instant::now()));
    let made = c.create_many(&[NewItem { sync_key: key, record: sample(kind, 999) }]).await.expect("create");
    let id = made[0].as_ref().expect("created").id.clone();
    c.delete_many(&[id]).await.expect("delete")[0].as_ref().expect("deleted");
    server.drop_sync_token_history();
}
