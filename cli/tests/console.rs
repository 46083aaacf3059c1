//! The admin console (`crmsync serve`) against the fakes: its security rules over plain HTTP,
//! and the admin's whole path in a real browser (headless Chromium through chromedriver).
//!
//! The browser test needs `chromium` and `chromium-driver` (Debian packages; `.ci/run` installs
//! them). Without them it says so and passes, unless `CRMSYNC_REQUIRE_BROWSER=1` (CI) makes a
//! missing browser a failure. Screenshots of each step go to `target/console-screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crmsync_cli::sandbox::{ENV_GOOGLE_SECRET, ENV_GRAPH_SECRET, ENV_SF_SECRET, config_toml};
use crmsync_cli::scenario::{Fakes, Scenario, Size, seed};
use crmsync_core::Leases;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST, LOCATION, SET_COOKIE};
use secrecy::ExposeSecret;
use serde_json::Value;

const SCRIPT_TOKEN: &str = "console-test-read-only-token";

/// The fakes, a synced store and `crmsync serve` on a free port.
struct Console {
    fakes: Fakes,
    scenario: Scenario,
    dir: PathBuf,
    config: String,
    env: Vec<(&'static str, String)>,
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn secret(s: &Option<secrecy::SecretString>) -> String {
    s.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default()
}

impl Console {
    async fn start(tag: &str) -> Console {
        Console::start_with(tag, &[], reqwest::Client::builder()).await
    }

    async fn start_with(tag: &str, extra: &[&str], http: reqwest::ClientBuilder) -> Console {
        let fakes = Fakes::start().await;
        let scenario = seed(&fakes, Size { contacts: 4, events: 2, ..Size::default() });
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("crmsync-console-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reps = [scenario.exchange_rep.clone(), scenario.google_rep.clone()];
        let config = dir.join("crmsync.toml");
        std::fs::write(&config, config_toml(&fakes, &reps, "console.db")).unwrap();
        let env = vec![
            (ENV_SF_SECRET, secret(&fakes.salesforce.config().client_secret)),
            (ENV_GRAPH_SECRET, secret(&fakes.graph.config().client_secret)),
            (ENV_GOOGLE_SECRET, secret(&fakes.google.config().client_secret)),
            ("CRMSYNC_ADMIN_TOKEN", SCRIPT_TOKEN.to_owned()),
        ];
        let config = config.display().to_string();
        let (child, url) = serve(&config, &env, extra);
        let http = http.redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let c = Console { fakes, scenario, dir, config, env, child, url, http };
        // One cycle of the Exchange rep first, so a reset has links to remove.
        c.crmsync(&["sync", "--rep", "erin"]).await;
        c
    }

    /// Stop the console and start it again on the same store (another process, a new port).
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.child, self.url) = serve(&self.config, &self.env, &[]);
    }

    /// Run `crmsync <args> --config <the console's config>`; it must succeed. Its stdout and
    /// stderr.
    async fn crmsync(&self, args: &[&str]) -> (String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_crmsync"));
        cmd.args(args).args(["--config", &self.config]).envs(self.env.iter().map(|(k, v)| (*k, v)));
        let out = cmd.output().await.unwrap();
        assert!(out.status.success(), "crmsync {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    }

    fn user_id(&self, name: &str) -> String {
        let users = self.fakes.salesforce.records("User");
        let u = users.iter().find(|u| u["Name"] == name).unwrap_or_else(|| panic!("no user {name}"));
        u["Id"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
        let mut r = self.http.post(format!("{}{path}", self.url)).form(form);
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send().await.unwrap()
    }

    async fn api(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.url)).bearer_auth(SCRIPT_TOKEN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        r.json().await.unwrap()
    }

    /// Sign in over plain HTTP as `name` (a click on the CRM's login page): the session cookie
    /// and the callback's answer.
    async fn sign_in(&self, name: &str) -> (String, reqwest::Response) {
        let start = self.get("/signin", None).await;
        assert!(start.status().is_redirection(), "{}", start.status());
        let cookie = session_cookie(&start).expect("a session cookie for the sign-in");
        let to = url::Url::parse(start.headers()[LOCATION].to_str().unwrap()).unwrap();
        assert!(to.path().ends_with("/services/oauth2/authorize"), "{to}");
        let params: Vec<(String, String)> = to.query_pairs().into_owned().collect();
        assert!(params.iter().any(|(k, v)| k == "code_challenge_method" && v == "S256"), "PKCE: {to}");
        let page = self.http.get(to.clone()).send().await.unwrap().text().await.unwrap();
        assert!(page.contains(name), "the login page lists {name}");
        let mut form = params.clone();
        form.push(("user_id".into(), self.user_id(name)));
        let back = self
            .http
            .post(format!("{}/services/oauth2/authorize", self.fakes.salesforce.uri()))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), StatusCode::FOUND);
        let callback = back.headers()[LOCATION].to_str().unwrap().to_owned();
        let done = self.http.get(callback).header(COOKIE, &cookie).send().await.unwrap();
        let cookie = session_cookie(&done).unwrap_or(cookie);
        (cookie, done)
    }

    fn erin(&self) -> String {
        self.scenario.exchange_rep.id.clone()
    }
}

/// `crmsync serve` on a free port: the process and its address.
fn serve(config: &str, env: &[(&'static str, String)], extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .env_remove("CRMSYNC_LISTEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().nth(2).unwrap_or_else(|| panic!("no address in {line:?}")).to_owned();
    (child, addr)
}

fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("crmsync_session="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

fn resets_of(audit: &Value, rep: &str) -> usize {
    let done = |e: &&Value| e["action"] == "reset" && e["rep"] == rep && e["outcome"] == "done";
    audit["entries"].as_array().unwrap().iter().filter(done).count()
}

fn links(status: &Value, rep: &str) -> u64 {
    let r = status["reps"].as_array().unwrap().iter().find(|r| r["rep"] == rep).unwrap();
    r["links"]["contacts"].as_u64().unwrap() + r["links"]["events"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_without_a_session_but_health_sign_in_and_assets() {
    let c = Console::start("anon").await;
    let erin = c.erin();
    for path in [
        "/",
        "/audit",
        &format!("/reps/{erin}"),
        &format!("/reps/{erin}/reset"),
        &format!("/reps/{erin}/reset?scope=contacts"),
        "/api/status",
        "/api/audit",
        &format!("/api/reps/{erin}/reset-preview?scope=all"),
        "/metrics",
    ] {
        let r = c.get(path, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body = r.text().await.unwrap();
        assert!(!body.contains(&c.scenario.exchange_rep.mailbox), "{path} shows no rep data: {body}");
        assert!(!body.contains(&c.scenario.exchange_rep.name), "{path} names no rep: {body}");
    }
    // Every POST: nothing without a session (signing out of no session is a redirect home).
    for path in [format!("/reps/{erin}/reset"), format!("/reps/{erin}/sync")] {
        let r = c.post(&path, None, &[("scope", "all"), ("csrf", "")]).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = c.post("/signout", None, &[]).await;
    assert_eq!((r.status(), r.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/"));
    // The sign-in flow's callback without a sign-in under way: refused, no data.
    let r = c.get("/auth/callback?code=x&state=y", None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(!r.text().await.unwrap().contains(&c.scenario.exchange_rep.name));
    for path in ["/healthz", "/readyz", "/static/console.css", "/static/console.js"] {
        assert_eq!(c.get(path, None).await.status(), StatusCode::OK, "{path}");
    }
    assert_eq!(c.get("/signin", None).await.status(), StatusCode::SEE_OTHER);
    // A POST without a session changes nothing.
    let before = links(&c.api("/api/status").await, &c.scenario.exchange_rep.name);
    assert!(before > 0, "the first sync linked records");
    let r = c.post(&format!("/reps/{erin}/reset"), None, &[("scope", "all")]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(links(&c.api("/api/status").await, &c.scenario.exchange_rep.name), before);
    // A wrong bearer token is nobody.
    let r = c.http.get(format!("{}/api/status", c.url)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // /metrics for a script with the token.
    let r = c.http.get(format!("{}/metrics", c.url)).bearer_auth(SCRIPT_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("crmsync_reps{state=\"ok\"}"), "{text}");
    assert!(text.contains("crmsync_leases_held 0"), "{text}");
    assert!(text.contains("crmsync_console_requests_total{route=\"/healthz\",status=\"200\"}"), "{text}");
    // The setup's cycle, counted once however often it is scraped.
    let again =
        c.http.get(format!("{}/metrics", c.url)).bearer_auth(SCRIPT_TOKEN).send().await.unwrap().text().await.unwrap();
    for t in [&text, &again] {
        assert!(t.contains("crmsync_cycles_total{outcome=\"ok\"} 1"), "{t}");
        assert!(t.contains("crmsync_cycle_duration_seconds_count 1"), "{t}");
        assert!(t.contains("crmsync_requests_total{service=\"crm\"}"), "{t}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_host_refused_and_security_headers_everywhere() {
    let c = Console::start("host").await;
    let r = c.http.get(format!("{}/healthz", c.url)).header(HOST, "attacker.example").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let r = c
        .http
        .get(format!("{}/api/status", c.url))
        .header(HOST, "attacker.example:80")
        .bearer_auth(SCRIPT_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST, "even with the token");
    for path in ["/", "/healthz"] {
        let r = c.get(path, None).await;
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    let start = c.get("/signin", None).await;
    let set = start.headers()[SET_COOKIE].to_str().unwrap().to_lowercase();
    assert!(set.contains("httponly") && set.contains("samesite=lax"), "{set}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_needs_both_permissions_a_csrf_token_and_happens_once() {
    let mut c = Console::start("reset").await;
    let erin = c.erin();
    let name = c.scenario.exchange_rep.name.clone();

    // The half-admin is refused at sign-in, and the refusal is audited.
    let (_, refused) = c.sign_in(&c.scenario.half_admin).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("Manage Sync"));

    let (cookie, done) = c.sign_in(&c.scenario.admin).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    let page = c.get("/", Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains(&name) && page.contains(&c.scenario.admin), "{page}");
    let csrf = csrf_of(&page);
    let before = links(&c.api("/api/status").await, &name);

    // Without the CSRF token, or with a wrong one: refused, nothing changed.
    for form in [vec![("scope", "all")], vec![("scope", "all"), ("csrf", "forged")]] {
        let r = c.post(&format!("/reps/{erin}/reset"), Some(&cookie), &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(links(&c.api("/api/status").await, &name), before);

    // The rep page names the record behind an item error (read live from its side).
    let rep_page = c.get(&format!("/reps/{erin}"), Some(&cookie)).await.text().await.unwrap();
    let at = rep_page.find("<td class=\"record\">").expect("an item error row");
    let cell = &rep_page[at..at + rep_page[at..].find("</td>").unwrap()];
    assert!(!cell.contains("(name unavailable)"), "{cell}");
    // A skip waiting for the next cycle is not listed as an error.
    assert!(rep_page.contains("id=\"skips-contact\"") && !rep_page.contains("id=\"errors-contact\""), "{rep_page}");

    // The preview names what goes.
    let preview = c.get(&format!("/reps/{erin}/reset?scope=contacts"), Some(&cookie)).await.text().await.unwrap();
    assert!(preview.contains("What the reset removes") && preview.contains("<tr data-kind=\"contact\""), "{preview}");
    assert!(!preview.contains("<tr data-kind=\"event\""), "contacts scope only removes contacts");
    assert!(preview.contains("(not in the scope: as it stands)"), "events' next cycle as they stand: {preview}");

    // Confirm → redirect to the rep page; reloading it resets nothing more.
    let r = c.post(&format!("/reps/{erin}/reset"), Some(&cookie), &[("scope", "all"), ("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(to, format!("/reps/{erin}?notice=reset"));
    for _ in 0..2 {
        let p = c.get(&to, Some(&cookie)).await;
        assert_eq!(p.status(), StatusCode::OK);
        assert!(p.text().await.unwrap().contains("Reset Sync done"));
    }
    assert_eq!(links(&c.api("/api/status").await, &name), 0);
    let audit = c.api("/api/audit").await;
    assert_eq!(resets_of(&audit, &name), 1, "{audit}");
    let refusals: Vec<&Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"].as_str().unwrap().starts_with("refused"))
        .collect();
    assert_eq!(refusals.len(), 1, "{audit}");
    assert_eq!(refusals[0]["admin"], c.scenario.half_admin.as_str());
    assert_eq!(refusals[0]["action"], "sign in");
    assert_eq!(c.api("/api/audit?outcome=refused").await["entries"].as_array().unwrap().len(), 1);
    assert_eq!(c.api("/api/audit?q=hank").await["entries"].as_array().unwrap().len(), 1, "filtered by admin");
    assert_eq!(resets_of(&c.api("/api/audit?outcome=refused").await, &name), 0, "resets filtered out");

    // Signed out: the old cookie is nobody.
    let r = c.post("/signout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(c.get("/", Some(&cookie)).await.status(), StatusCode::UNAUTHORIZED);

    // The audit is in the store: another console process shows the same reset and refusal.
    c.restart();
    let again = c.api("/api/audit").await;
    assert_eq!(again["entries"], audit["entries"], "{again}");
}

/// chromedriver on a free port, killed on drop.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver and chromium, or `None` (with a note) when they are missing and CI did not
/// require them.
async fn driver() -> Option<Driver> {
    let present = Command::new("chromedriver").arg("--version").output().is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CRMSYNC_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "CRMSYNC_REQUIRE_BROWSER=1 but chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("console browser test: chromedriver missing; install chromium and chromium-driver to run it");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Driver(child, port);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(d);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &fantoccini::Client, name: &str) {
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: a PNG");
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_finds_a_rep_previews_and_resets_once_in_a_browser() {
    use fantoccini::Locator::{Css, XPath};
    let Some(d) = driver().await else { return };
    let _ = std::fs::remove_dir_all(shots());
    let c = Console::start("browser").await;
    let erin = c.erin();
    let name = c.scenario.exchange_rep.name.clone();
    // fantoccini's TLS stack needs a process-wide provider (the driver is plain http here).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut caps = serde_json::Map::new();
    let chrome = if std::path::Path::new("/usr/bin/chromium").exists() { Some("/usr/bin/chromium") } else { None };
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=800,1500"],
            "binary": chrome,
        }),
    );
    let b = fantoccini::ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.1))
        .await
        .unwrap();

    // The Google rep (user-managed) has not connected their account: needs_reconnect.
    c.crmsync(&["sync", "--rep", "gus"]).await;
    // Since the first sync, a new contact in the rep's folder: the preview expects it created.
    c.fakes.graph.insert_contact(
        &c.scenario.exchange_rep.mailbox,
        Some("Salesforce_Sync"),
        crmsync_core::Contact {
            given_name: Some("Nora".into()),
            family_name: Some("Preview".into()),
            emails: vec!["nora.preview@contoso-new.example".into()],
            ..Default::default()
        },
    );

    // Sign in with the CRM: the console sends the browser to the fake org's login page. The
    // half-admin (Manage Users only) first: refused, no session.
    b.goto(&c.url).await.unwrap();
    shot(&b, "01-sign-in").await;
    b.find(Css("#signin")).await.unwrap().click().await.unwrap();
    let half = XPath(&format!("//button[text()='{}']", c.scenario.half_admin));
    b.wait().for_element(half).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("p.message")).await.unwrap();
    let text = b.find(Css("p.message")).await.unwrap().text().await.unwrap();
    assert!(text.contains("lacks Manage Sync"), "{text}");
    shot(&b, "02-half-admin-refused").await;
    b.goto(&c.url).await.unwrap();
    b.wait().for_element(Css("#signin")).await.unwrap().click().await.unwrap();
    b.wait().for_element(XPath(&format!("//button[text()='{}']", c.scenario.admin))).await.unwrap();
    shot(&b, "03-crm-login").await;
    b.find(XPath(&format!("//button[text()='{}']", c.scenario.admin))).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("#reps")).await.unwrap();
    assert!(b.source().await.unwrap().contains(&c.scenario.admin), "signed in as the admin");

    // As-you-type search: part of the name, any case.
    b.find(Css("#search")).await.unwrap().send_keys("ERI").await.unwrap();
    let gus = b.find(Css("tr[data-name*='gus']")).await.unwrap();
    let erin_row = b.find(Css("tr[data-name*='erin']")).await.unwrap();
    assert!(!gus.is_displayed().await.unwrap(), "Gus is filtered out");
    assert!(erin_row.is_displayed().await.unwrap());
    shot(&b, "04-search").await;

    // The rep page, then the reset preview.
    b.find(XPath(&format!("//a[text()='{name}']"))).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("#reset")).await.unwrap();
    shot(&b, "05-rep").await;
    b.find(Css("#reset")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("#removes")).await.unwrap();
    let removed: u64 =
        b.find(Css("tr[data-kind='contact'] td.links")).await.unwrap().text().await.unwrap().parse().unwrap();
    assert!(removed > 0, "the preview names the contact links the reset removes");
    // And what the next cycle is expected to do: re-link every contact, create the new one.
    let expected = b.find(Css("#expected-writes")).await.unwrap().text().await.unwrap();
    assert!(expected.starts_with("1 write "), "{expected}");
    let create = Css("section.expected[data-kind='contact'] tr[data-effect='create in crm']");
    assert!(b.find(create).await.unwrap().text().await.unwrap().contains("Nora Preview"), "named by the record");
    let link: u64 = b
        .find(Css("section.expected[data-kind='contact'] tr[data-effect='link'] td.n"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(link, removed, "every removed contact link is expected to be made again");
    shot(&b, "06-preview").await;

    // Confirm → the rep page with the result; a refresh resets nothing more.
    b.find(Css("#confirm")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("#notice")).await.unwrap();
    assert!(b.current_url().await.unwrap().as_str().ends_with(&format!("/reps/{erin}?notice=reset")));
    shot(&b, "07-reset-done").await;
    b.refresh().await.unwrap();
    b.wait().for_element(Css("#notice")).await.unwrap();
    let links_now = b.find(Css("#kind-contact strong.links")).await.unwrap().text().await.unwrap();
    assert_eq!(links_now, "0", "the reset removed the links");
    shot(&b, "08-refreshed").await;
    let audit = c.api("/api/audit").await;
    assert_eq!(resets_of(&audit, &name), 1, "one reset after a refresh: {audit}");
    let entry = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "reset").unwrap();
    assert_eq!(entry["links_removed"]["contact"].as_u64(), Some(removed), "{entry}");

    // A POST without the CSRF token, from the signed-in browser itself: refused (by script,
    // then by a form without the token, whose answer is the page shown).
    let status = b
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch(arguments[0], {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'scope=all'})\
               .then(r => done(r.status));",
            vec![serde_json::json!(format!("/reps/{erin}/reset"))],
        )
        .await
        .unwrap();
    assert_eq!(status, serde_json::json!(403));
    b.execute(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];\
         const s = document.createElement('input'); s.name = 'scope'; s.value = 'all'; f.appendChild(s);\
         document.body.appendChild(f); f.submit();",
        vec![serde_json::json!(format!("/reps/{erin}/reset"))],
    )
    .await
    .unwrap();
    b.wait().for_element(Css("p.message")).await.unwrap();
    let text = b.find(Css("p.message")).await.unwrap().text().await.unwrap();
    assert!(text.contains("CSRF") && text.contains("Nothing was changed"), "{text}");
    shot(&b, "09-csrf-refused").await;
    assert_eq!(resets_of(&c.api("/api/audit").await, &name), 1);

    // The audit page.
    b.goto(&format!("{}/audit", c.url)).await.unwrap();
    b.wait().for_element(Css("#audit tr.entry")).await.unwrap();
    let rows = b.find_all(Css("#audit tr.entry")).await.unwrap();
    assert_eq!(rows.len(), 2, "the reset and the half-admin's refusal");
    let source = b.source().await.unwrap();
    assert!(source.contains(&c.scenario.admin) && source.contains(&c.scenario.half_admin));
    shot(&b, "10-audit").await;
    b.find(Css("#audit-outcome")).await.unwrap().select_by_value("refused").await.unwrap();
    b.find(XPath("//button[text()='Filter']")).await.unwrap().click().await.unwrap();
    // The filtered page (not the one the click was made on).
    let filtered = url::Url::parse(&format!("{}/audit?q=&outcome=refused", c.url)).unwrap();
    b.wait().for_url(&filtered).await.unwrap();
    b.wait().for_element(Css("#audit tr.entry")).await.unwrap();
    assert_eq!(b.find_all(Css("#audit tr.entry")).await.unwrap().len(), 1, "refusals only");
    assert!(b.source().await.unwrap().contains("lacks Manage Sync"));
    shot(&b, "11-audit-refusals").await;

    // A rep who must reconnect: the badge, and what they must do.
    b.goto(&format!("{}/reps/{}", c.url, c.scenario.google_rep.id)).await.unwrap();
    let guidance = b.wait().for_element(Css("p.guidance")).await.unwrap().text().await.unwrap();
    assert!(guidance.contains("reconnect") && guidance.contains("crmsync connect"), "{guidance}");
    assert_eq!(b.find(Css("span.badge")).await.unwrap().text().await.unwrap(), "needs_reconnect");
    shot(&b, "12-needs-reconnect").await;

    // Signed out: the console shows the sign-in page again.
    b.find(XPath("//button[text()='Sign out']")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Css("#signin")).await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sandbox_starts_the_console_too() {
    let base = loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if p < 65000 && (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let dir = std::env::temp_dir().join(format!("crmsync-console-sandbox-{}-{base}", std::process::id()));
    let config = dir.join("crmsync.toml").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_crmsync"))
        .args(["sandbox", "--json", "--port-base", &base.to_string(), "--config-out", &config])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let out: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(out["console"]["sign_in_as"], "Alex Admin");
    let url = out["console"]["url"].as_str().unwrap().trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let health = http.get(format!("{url}/healthz")).send().await.unwrap().status();
    let page = http.get(format!("{url}/")).send().await.unwrap();
    let (page_status, page) = (page.status(), page.text().await.unwrap());
    let signin = http.get(format!("{url}/signin")).send().await.unwrap();
    let to = signin.headers()[LOCATION].to_str().unwrap().to_owned();
    // Sign in as the seeded admin on the sandbox's own CRM login page.
    let signed_in = async {
        let cookie = session_cookie(&signin).expect("a session cookie");
        let to = url::Url::parse(&to).unwrap();
        let login = http.get(to.clone()).send().await.unwrap().text().await.unwrap();
        let button = login.find(">Alex Admin</button>").expect("the login page lists Alex Admin");
        let id = login[..button].rsplit("value=\"").next().unwrap().trim_end_matches('"').to_owned();
        let mut form: Vec<(String, String)> = to.query_pairs().into_owned().collect();
        form.push(("user_id".into(), id));
        let back = http.post(format!("{}/services/oauth2/authorize", to.origin().ascii_serialization())).form(&form);
        let back = back.send().await.unwrap();
        let callback = back.headers()[LOCATION].to_str().unwrap().to_owned();
        let done = http.get(callback).header(COOKIE, &cookie).send().await.unwrap();
        let cookie = session_cookie(&done).unwrap_or(cookie);
        http.get(format!("{url}/")).header(COOKIE, cookie).send().await.unwrap()
    }
    .await;
    let (home_status, home) = (signed_in.status(), signed_in.text().await.unwrap());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(health, StatusCode::OK);
    assert_eq!(page_status, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Sign in with Salesforce"), "{page}");
    assert!(to.starts_with(&format!("http://127.0.0.1:{base}/services/oauth2/authorize?")), "{to}");
    assert_eq!(home_status, StatusCode::OK, "{home}");
    assert!(home.contains("Signed in as <strong>Alex Admin</strong>") && home.contains("Erin Exchange"), "{home}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_https_with_secure_cookies() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let (cert, key) = (format!("{data}/console-test.crt"), format!("{data}/console-test.key"));
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let http = reqwest::Client::builder().tls_certs_only([root]);
    let c = Console::start_with("tls", &["--tls-cert", &cert, "--tls-key", &key], http).await;
    assert!(c.url.starts_with("https://127.0.0.1:"), "{}", c.url);
    assert_eq!(c.get("/healthz", None).await.status(), StatusCode::OK);
    let start = c.get("/signin", None).await;
    let set = start.headers()[SET_COOKIE].to_str().unwrap().to_lowercase();
    assert!(set.contains("secure") && set.contains("httponly"), "{set}");
    let to = url::Url::parse(start.headers()[LOCATION].to_str().unwrap()).unwrap();
    let redirect = to.query_pairs().find(|(k, _)| k == "redirect_uri").unwrap().1.into_owned();
    assert_eq!(redirect, format!("{}/auth/callback", c.url));
    // Plain http on the TLS port gets no page.
    let plain = reqwest::Client::new().get(c.url.replace("https://", "http://") + "/healthz").send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_is_rate_limited_per_address() {
    let c = Console::start("rate").await;
    let mut codes = vec![];
    for _ in 0..12 {
        codes.push(c.get("/signin", None).await.status());
    }
    assert!(codes[..10].iter().all(|s| *s == StatusCode::SEE_OTHER), "{codes:?}");
    assert_eq!(codes[11], StatusCode::TOO_MANY_REQUESTS, "{codes:?}");
    // Pages other than the sign-in are not limited.
    assert_eq!(c.get("/healthz", None).await.status(), StatusCode::OK);
}

/// What a preview (`/api/reps/{id}/reset-preview`) expects the next cycle to do, and what a
/// cycle report did, as (kind, counter) → n; zeros left out.
fn expected_counts(preview: &Value) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for k in preview["next_cycle"].as_array().unwrap() {
        for (effect, n) in k["effects"].as_object().unwrap() {
            let counter = match effect.as_str() {
                "link" => "linked",
                "create in crm" => "created_in_crm",
                "create in provider" => "created_in_provider",
                "update in crm" => "updated_in_crm",
                "update in provider" => "updated_in_provider",
                "delete in crm" => "deleted_in_crm",
                "delete in provider" => "deleted_in_provider",
                _ => continue,
            };
            out.insert((k["kind"].as_str().unwrap().to_owned(), counter.to_owned()), n.as_u64().unwrap());
        }
    }
    out
}

fn actual_counts(report: &Value) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    for (kind, key) in [("contact", "contacts"), ("event", "events")] {
        for counter in [
            "linked",
            "created_in_crm",
            "created_in_provider",
            "updated_in_crm",
            "updated_in_provider",
            "deleted_in_crm",
            "deleted_in_provider",
        ] {
            let n = report[key][counter].as_u64().unwrap();
            if n > 0 {
                out.insert((kind.to_owned(), counter.to_owned()), n);
            }
        }
    }
    out
}

fn writes_of(counts: &std::collections::BTreeMap<(String, String), u64>) -> u64 {
    counts.iter().filter(|((_, c), _)| c != "linked").map(|(_, n)| n).sum()
}

/// Preview → confirm → the next cycle, compared per kind and side: the preview's predicted
/// writes are the cycle's actual writes. Once with changes made after the first sync, then for
/// the healthy rep that leaves ("0 writes", and none made).
#[tokio::test(flavor = "multi_thread")]
async fn the_reset_preview_predicts_the_next_cycles_writes() {
    let c = Console::start("predict").await;
    let erin = c.erin();
    let person = |given: &str, email: &str| crmsync_core::Contact {
        given_name: Some(given.into()),
        family_name: Some("Preview".into()),
        emails: vec![email.into()],
        ..Default::default()
    };
    // Since the first sync: a new contact on each side, and a linked contact edited in the CRM.
    let mailbox = c.scenario.exchange_rep.mailbox.clone();
    c.fakes.graph.insert_contact(&mailbox, Some("Salesforce_Sync"), person("Nora", "nora.preview@contoso-new.example"));
    c.fakes.salesforce.insert_contact_record(&erin, &person("Carl", "carl.preview@contoso-crm.example"));
    let linked = c.fakes.salesforce.records("Contact");
    let linked = linked.iter().find(|r| r["Email"].as_str().is_some_and(|e| e.starts_with("MATCH.0@"))).unwrap();
    c.fakes
        .salesforce
        .edit_contact(linked["Id"].as_str().unwrap(), serde_json::json!({"Title": "Head of Purchasing"}))
        .unwrap();
    let (cookie, _) = c.sign_in(&c.scenario.admin).await;

    for round in ["with changes", "healthy"] {
        let preview = c.api(&format!("/api/reps/{erin}/reset-preview?scope=all")).await;
        assert!(preview["plan_error"].is_null(), "{preview}");
        let expected = expected_counts(&preview);
        let page = c.get(&format!("/reps/{erin}/reset?scope=all"), Some(&cookie)).await.text().await.unwrap();
        let writes = writes_of(&expected);
        assert!(page.contains(&format!("{writes} writes")), "{round}: the page shows the {writes} writes: {page}");
        if round == "healthy" {
            assert_eq!(writes, 0, "a healthy rep's reset writes nothing: {preview}");
            assert!(page.contains("0 writes"));
        } else {
            assert!(writes >= 3, "{round}: both new contacts and the edit are expected: {preview}");
        }
        let r =
            c.post(&format!("/reps/{erin}/reset"), Some(&cookie), &[("scope", "all"), ("csrf", &csrf_of(&page))]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let (out, _) = c.crmsync(&["sync", "--rep", "erin", "--json"]).await;
        let report: Value = serde_json::from_str::<Value>(&out).unwrap()["reports"][0].clone();
        assert_eq!(report["error"], Value::Null, "{report}");
        assert_eq!(expected, actual_counts(&report), "{round}: the preview's plan is what the cycle did: {preview}");
    }
    // Both resets are in the audit, each with the first cycle after it.
    let audit = c.api("/api/audit?outcome=reset").await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    let text = entries[0]["verification_text"].as_str().unwrap_or_default();
    assert!(text.starts_with("verified: re-linked") && text.ends_with(", 0 writes"), "the healthy reset: {audit}");
    let first = &entries[1]["verification"];
    assert_eq!(first["verified"], false, "{audit}");
    let writes = ["creates", "updates", "deletes"].iter().map(|k| first[k].as_u64().unwrap()).sum::<u64>();
    assert!(writes >= 3, "the first reset's cycle made the expected writes: {audit}");
    assert!(entries[1]["verification_text"].as_str().unwrap().starts_with("attention: "), "{audit}");
    // The audit page says it in words.
    let page = c.get("/audit", Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains("verified: re-linked") && page.contains("attention: "), "{page}");
}

/// "Sync now" queues the rep for the next worker round, which runs it under its lease like every
/// cycle; the rep page shows the history, cursor age and the next cycle.
#[tokio::test(flavor = "multi_thread")]
async fn sync_now_queues_the_rep_for_the_next_worker_round() {
    let c = Console::start("syncnow").await;
    let erin = c.erin();
    let due_of = |status: &Value| {
        let r = status["reps"].as_array().unwrap().iter().find(|r| r["id"] == erin.as_str()).unwrap().clone();
        r["next_due"].as_str().map(|s| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc())
    };
    let first = due_of(&c.api("/api/status").await).expect("the setup's sync, under the lease, scheduled the rep");
    assert!(first <= chrono::Utc::now());
    let worker = ["worker", "--once", "--interval", "3600", "--json"];
    let cycles = |out: &str| {
        out.lines().filter(|l| l.contains(&format!("\"rep\":\"{}\"", c.scenario.exchange_rep.name))).count()
    };
    let (out, _) = c.crmsync(&worker).await;
    assert_eq!(cycles(&out), 1, "the first round syncs the rep: {out}");
    let due = due_of(&c.api("/api/status").await).expect("scheduled");
    assert!(due > chrono::Utc::now() + chrono::Duration::minutes(50), "due again in an hour: {due}");
    let (out, _) = c.crmsync(&worker).await;
    assert_eq!(cycles(&out), 0, "not due yet: {out}");

    let (cookie, _) = c.sign_in(&c.scenario.admin).await;
    let page = c.get(&format!("/reps/{erin}"), Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains("id=\"history\""), "the rep page lists the last cycles: {page}");
    let history_rows =
        page.split("<table id=\"history\">").nth(1).unwrap().split("</table>").next().unwrap().matches("<tr>").count();
    assert_eq!(history_rows, 3, "a header and the two cycles so far: {page}");
    assert!(page.contains("Cursors: stored"), "cursors are stored, with their age: {page}");
    let r = c.post(&format!("/reps/{erin}/sync"), Some(&cookie), &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_owned();
    let page = c.get(&to, Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains("Queued") && page.contains("due now"), "{page}");
    assert!(due_of(&c.api("/api/status").await).expect("due") <= chrono::Utc::now());
    let (out, _) = c.crmsync(&worker).await;
    assert_eq!(cycles(&out), 1, "the next round takes the rep asked for: {out}");
    let (out, _) = c.crmsync(&worker).await;
    assert_eq!(cycles(&out), 0, "once: {out}");

    // While a cycle holds the lease: Sync Status names the holder, and Sync now queues another
    // cycle right after it (the lease's release keeps the rep due).
    let store = crmsync_sql::SqlStore::connect(c.dir.join("console.db").to_str().unwrap()).await.unwrap();
    let lease = std::time::Duration::from_secs(120);
    let held = store.acquire_lease("worker-elsewhere", &erin, lease, chrono::Utc::now()).await.unwrap();
    assert_eq!(held, crmsync_core::Acquire::Acquired);
    let status = c.get("/", Some(&cookie)).await.text().await.unwrap();
    assert!(status.contains("running now") && status.contains("worker-elsewhere"), "{status}");
    let r = c.post(&format!("/reps/{erin}/sync"), Some(&cookie), &[("csrf", &csrf_of(&page))]).await;
    let page = c.get(r.headers()[LOCATION].to_str().unwrap(), Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains("runs now; the next one follows right after it"), "{page}");
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    store.release("worker-elsewhere", &erin, Some(later)).await.unwrap();
    store.close().await;
    assert!(due_of(&c.api("/api/status").await).expect("due") <= chrono::Utc::now(), "still due at once");
    let (out, _) = c.crmsync(&worker).await;
    assert_eq!(cycles(&out), 1, "the cycle asked for during the other one: {out}");
}

/// Permissions are read from the CRM on every click: `Manage Sync` taken away after sign-in
/// refuses the next reset and Sync now, nothing changes, and the audit keeps both refusals with
/// the rep and the reset's scope.
#[tokio::test(flavor = "multi_thread")]
async fn a_permission_taken_away_in_the_crm_refuses_the_next_click() {
    let c = Console::start("revoked").await;
    let erin = c.erin();
    let name = c.scenario.exchange_rep.name.clone();
    let (cookie, _) = c.sign_in(&c.scenario.admin).await;
    let page = c.get(&format!("/reps/{erin}/reset?scope=contacts"), Some(&cookie)).await.text().await.unwrap();
    let csrf = csrf_of(&page);
    let before = links(&c.api("/api/status").await, &name);

    // Take Manage Sync away: delete the admin's assignment of the sync permission set.
    let sf = &c.fakes.salesforce;
    let admin = c.user_id(&c.scenario.admin);
    let sets = sf.records("PermissionSet");
    let assignment = sf
        .records("PermissionSetAssignment")
        .into_iter()
        .find(|a| {
            a["AssigneeId"] == admin.as_str()
                && sets.iter().any(|s| s["Id"] == a["PermissionSetId"] && s["Name"] == "CrmSync_Admin")
        })
        .expect("the admin's Manage Sync assignment");
    assert!(sf.delete(assignment["Id"].as_str().unwrap()), "Manage Sync taken away");

    let r = c.post(&format!("/reps/{erin}/reset"), Some(&cookie), &[("scope", "contacts"), ("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("lacks Manage Sync"));
    let r = c.post(&format!("/reps/{erin}/sync"), Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(links(&c.api("/api/status").await, &name), before, "nothing was reset");

    let audit = c.api("/api/audit?outcome=refused").await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{audit}");
    assert_eq!((&entries[0]["action"], &entries[0]["scope"]), (&Value::from("sync now"), &Value::Null), "{audit}");
    assert_eq!((&entries[1]["action"], &entries[1]["scope"]), (&Value::from("reset"), &Value::from("contacts")));
    for e in entries {
        assert_eq!(e["admin"], c.scenario.admin.as_str());
        assert_eq!(e["rep"], name.as_str(), "the rep by name");
    }
    assert_eq!(resets_of(&c.api("/api/audit").await, &name), 0);
}

/// Deletes held by Delete Safety show on the rep page: the state, what to do, and each record.
#[tokio::test(flavor = "multi_thread")]
async fn held_deletes_show_on_the_rep_page() {
    let c = Console::start("held").await;
    let erin = c.erin();
    // Deletes propagate, at most one per side without an admin's word; then two linked contacts
    // go in the CRM.
    let mut config = std::fs::read_to_string(&c.config).unwrap();
    config.push_str("\n[sync.contacts]\ndelete = \"propagate\"\n\n[sync.contacts.hold_deletes]\ncount = 1\n");
    std::fs::write(&c.config, config).unwrap();
    let sf = &c.fakes.salesforce;
    let gone: Vec<String> = sf
        .records("Contact")
        .iter()
        .filter(|r| r["Email"].as_str().is_some_and(|e| e.starts_with("MATCH.")))
        .take(2)
        .map(|r| r["Id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(gone.len(), 2);
    for id in &gone {
        assert!(sf.delete_contact(id));
    }
    c.crmsync(&["sync", "--rep", "erin"]).await;

    let (cookie, _) = c.sign_in(&c.scenario.admin).await;
    let page = c.get(&format!("/reps/{erin}"), Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains("badge st-deletes_held"), "{page}");
    assert!(page.contains("id=\"held-guidance\"") && page.contains("crmsync deletes --rep"), "{page}");
    let table = page.split("id=\"held-contact\"").nth(1).expect("the held contacts").split("</table>").next().unwrap();
    assert_eq!(table.matches("<td class=\"record\">").count(), 2, "{table}");
    assert!(table.contains("match.") && table.contains(">provider<"), "named, on the mailbox side: {table}");
}
