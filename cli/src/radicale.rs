//! `crmsync sandbox --radicale PATH`: a real Radicale (CardDAV/CalDAV server) beside the fakes,
//! with a DAV rep. Radicale runs on a loopback port (the port base + 3, or a free one) with a
//! temporary storage folder and one htpasswd user (the rep's mailbox); the rep gets a CRM user
//! in the Salesforce fake with two contacts and, on the server, the address book and calendar
//! the `dav` provider syncs, seeded the way any CardDAV/CalDAV client writes them (`PUT` of a
//! vCard or an iCalendar file).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use crmsync_core::{ConnectionMode, Contact, Kind, Rep, SyncConfig};
use crmsync_dav::client::{Auth, Session};
use crmsync_dav::config::{DEFAULT_ADDRESS_BOOK, DEFAULT_CALENDAR};
use secrecy::SecretString;

use crate::scenario::Fakes;

/// The DAV rep's user name on the server (its `mailbox`) and password (the sandbox's well-known
/// test credential, printed like the fakes' secrets).
pub const DAV_USER: &str = "dana";
pub const DAV_PASSWORD: &str = "dana-sandbox-password";
/// The DAV rep's name, in the CRM and the config.
pub const DAV_REP: &str = "Dana Dav";

/// A running Radicale; stopped, and its storage removed, when dropped.
#[derive(Debug)]
pub struct Radicale {
    child: Child,
    dir: PathBuf,
    /// Base URL, e.g. `http://127.0.0.1:41234/`.
    pub url: String,
    /// What `radicale --version` printed.
    pub version: String,
}

impl Drop for Radicale {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start the Radicale executable `exe` on loopback port `preferred` (any free one when that is
/// taken) with a new storage folder.
pub async fn start(exe: &Path, preferred: u16) -> anyhow::Result<Radicale> {
    let out = Command::new(exe)
        .arg("--version")
        .output()
        .with_context(|| format!("--radicale {}: cannot run it", exe.display()))?;
    anyhow::ensure!(out.status.success(), "--radicale {}: `--version` failed", exe.display());
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let port = std::net::TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .and_then(|l| l.local_addr())
        .context("no free loopback port for Radicale")?
        .port();
    let dir = std::env::temp_dir().join(format!("crmsync-sandbox-radicale-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let users = dir.join("users");
    std::fs::write(&users, format!("{DAV_USER}:{DAV_PASSWORD}\n")).context("cannot write Radicale's users")?;
    let child = Command::new(exe)
        .args(["--auth-type", "htpasswd", "--auth-htpasswd-encryption", "plain"])
        .arg("--auth-htpasswd-filename")
        .arg(&users)
        .args(["--server-hosts", &format!("127.0.0.1:{port}")])
        .arg("--storage-filesystem-folder")
        .arg(dir.join("collections"))
        .args(["--logging-level", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("--radicale {}: cannot start it", exe.display()))?;
    let server = Radicale { child, dir, url: format!("http://127.0.0.1:{port}/"), version };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("Radicale did not answer on port {port} within 10 s")
}

/// The DAV rep: a CRM user with two contacts (one also on the server, by e-mail), and on the
/// server two contacts and a meeting tomorrow.
pub async fn seed(server: &Radicale, fakes: &Fakes) -> anyhow::Result<Rep> {
    let user = fakes.salesforce.add_user(DAV_REP, &[]);
    for (given, family, email) in [("Maya", "Moss", "maya.moss@dav.example"), ("Noor", "Nash", "noor.nash@dav.example")]
    {
        let c = Contact {
            given_name: Some(given.into()),
            family_name: Some(family.into()),
            emails: vec![email.into()],
            ..Default::default()
        };
        fakes.salesforce.insert_contact_record(&user, &c);
    }
    let password = SecretString::from(DAV_PASSWORD.to_owned());
    let session = Session::new(&server.url, Auth::Basic { user: DAV_USER, password: &password })
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let book = collection(&session, Kind::Contact, DEFAULT_ADDRESS_BOOK).await?;
    let calendar = collection(&session, Kind::Event, DEFAULT_CALENDAR).await?;
    let start = (Utc::now() + chrono::Duration::days(1)).format("%Y%m%dT150000Z");
    let end = (Utc::now() + chrono::Duration::days(1)).format("%Y%m%dT153000Z");
    let files = [
        (format!("{book}maya.vcf"), "text/vcard", card("maya", "Maya", "Moss", "maya.moss@dav.example")),
        (format!("{book}olga.vcf"), "text/vcard", card("olga", "Olga", "Oakes", "olga.oakes@dav.example")),
        (
            format!("{calendar}kickoff.ics"),
            "text/calendar",
            format!(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//crmsync//sandbox//EN\r\nBEGIN:VEVENT\r\nUID:kickoff@dav.example\r\n\
                 DTSTAMP:{start}\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:Kickoff with Maya\r\n\
                 ATTENDEE:mailto:maya.moss@dav.example\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            ),
        ),
    ];
    let http = reqwest::Client::new();
    let base = server.url.trim_end_matches('/');
    for (path, kind, body) in files {
        let put = http
            .put(format!("{base}{path}"))
            .basic_auth(DAV_USER, Some(DAV_PASSWORD))
            .header("Content-Type", kind)
            .body(body)
            .send()
            .await
            .with_context(|| format!("seeding Radicale: PUT {path}"))?;
        anyhow::ensure!(put.status().is_success(), "seeding Radicale: PUT {path}: {}", put.status());
    }
    Ok(Rep {
        id: user.clone(),
        name: DAV_REP.into(),
        crm_user_id: user,
        provider: "dav".into(),
        mailbox: DAV_USER.into(),
        connection: ConnectionMode::AdminManaged,
        config: SyncConfig::default(),
    })
}

/// The config's `[dav]` table for this server (the password in the variable `password_env`).
pub fn config_section(url: &str, password_env: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        "# Radicale (CardDAV/CalDAV), started by `sandbox --radicale`: Basic auth as the rep's mailbox.\n\
         [dav]\nurl = {}\npassword_env = {}\n",
        q(url),
        q(password_env)
    )
}

/// The href of the user's address book or calendar named `name`, made when missing (the same
/// discovery the provider does).
async fn collection(session: &Session, kind: Kind, name: &str) -> anyhow::Result<String> {
    let (href, _) = session.collection(kind, name).await.map_err(|e| anyhow::anyhow!("Radicale: {}", e.message()))?;
    Ok(if href.ends_with('/') { href } else { format!("{href}/") })
}

/// A vCard 3.0 as address book apps write them (fixed sandbox values, nothing to escape).
fn card(uid: &str, given: &str, family: &str, email: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nN:{family};{given};;;\r\nFN:{given} {family}\r\n\
         EMAIL;TYPE=INTERNET:{email}\r\nEND:VCARD\r\n"
    )
}
