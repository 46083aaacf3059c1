//! `crmsync sandbox`: the three fakes on fixed loopback ports until Ctrl-C (or SIGTERM), with the
//! standard scenario seeded (or nothing), their endpoints and credentials printed, a ready
//! config file for `crmsync sync`, and the admin console on the same store (sign in as the
//! seeded admin).
//!
//! Secrets: the written config holds none (as every crmsync config); it names environment
//! variables (`CRMSYNC_SANDBOX_*`) whose values — the fakes' well-known test credentials — are
//! printed as `export` lines (and in `--json` under `env`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use crmsync_core::{ConnectionMode, Rep};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;

use crate::scenario::{Fakes, MAX_REPS, Scenario, Size, seed};

mod tls;

/// The sandbox guide's Rust snippets, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/sandbox.md")]
pub struct SandboxGuide;

/// What `--seed` puts into the fakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// `scenario`: the standard demo scenario: two reps, two admins, contacts and events.
    Scenario,
    /// `empty`: nothing (no users, mailboxes or records).
    Empty,
    /// A JSON scenario file: `{"salesforce": …, "graph": …, "google": …}`, each part the body
    /// of that fake's `POST /_crmsync/seed`.
    File(PathBuf),
}

impl std::str::FromStr for Seed {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "scenario" => Self::Scenario,
            "empty" => Self::Empty,
            file => Self::File(file.into()),
        })
    }
}

/// Options of `crmsync sandbox`.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Salesforce listens on P, Microsoft Graph on P+1, Google on P+2.
    #[arg(long, value_name = "P", default_value_t = 8640)]
    pub port_base: u16,
    /// The address the fakes listen on (e.g. 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// What to seed: `scenario` (the standard scenario), `empty`, or a JSON scenario FILE
    /// (`{"salesforce": …, "graph": …, "google": …}`, each the body of that fake's
    /// `POST /_crmsync/seed`). `POST /_crmsync/reset` returns to it.
    #[arg(long, value_name = "scenario|empty|FILE", default_value = "scenario")]
    pub seed: Seed,
    /// Fault rules to start with: JSON (inline, or a file) `{"salesforce": RULES, "graph": RULES,
    /// "google": RULES}`, RULES as the body of `POST /_crmsync/faults`.
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// Contacts per rep (with --seed scenario).
    #[arg(long, default_value_t = 12)]
    pub contacts: usize,
    /// Plain in-window meetings per rep (with --seed scenario).
    #[arg(long, default_value_t = 6)]
    pub events: usize,
    /// Reps (with --seed scenario), 1 to 10000: 1 is the Exchange rep alone, 2 the standard
    /// Exchange and Google reps, more alternate Exchange and Google (admin-managed; the Google
    /// ones through the fake's service account), each with as many contacts and meetings.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=MAX_REPS as i64))]
    pub reps: u16,
    /// Serve HTTPS, with a certificate from a certificate authority made at start; its
    /// certificate is written to --ca-out.
    #[arg(long)]
    pub tls: bool,
    /// Where --tls writes the CA certificate (PEM) clients must trust.
    #[arg(long, value_name = "FILE", default_value = "crmsync-sandbox-ca.pem")]
    pub ca_out: PathBuf,
    /// Print one JSON object on stdout (endpoints, credentials, reps, config) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write a ready config file for `crmsync sync` here (its SQLite store goes next to it
    /// and starts empty).
    #[arg(long, value_name = "FILE")]
    pub config_out: Option<PathBuf>,
    /// Also start this Radicale executable (a CardDAV/CalDAV server) on P+3 (or a free loopback
    /// port) with a temporary storage folder, and add a DAV rep (with --seed scenario).
    #[arg(long, value_name = "PATH")]
    pub radicale: Option<PathBuf>,
}

/// Environment variable names the sandbox config uses.
pub const ENV_SF_SECRET: &str = "CRMSYNC_SANDBOX_SF_SECRET";
pub const ENV_GRAPH_SECRET: &str = "CRMSYNC_SANDBOX_GRAPH_SECRET";
pub const ENV_GOOGLE_SECRET: &str = "CRMSYNC_SANDBOX_GOOGLE_SECRET";
pub const ENV_GOOGLE_GRANT: &str = "CRMSYNC_SANDBOX_GOOGLE_GRANT";
/// The Google service account's private key (PEM), when an admin-managed Google rep is configured.
pub const ENV_GOOGLE_KEY: &str = "CRMSYNC_SANDBOX_GOOGLE_KEY";
pub const ENV_DAV_PASSWORD: &str = "CRMSYNC_SANDBOX_DAV_PASSWORD";

#[derive(Debug, Serialize)]
struct RepOut {
    name: String,
    id: String,
    crm_user_id: String,
    provider: String,
    mailbox: String,
    connection: ConnectionMode,
}

impl From<&Rep> for RepOut {
    fn from(r: &Rep) -> Self {
        RepOut {
            name: r.name.clone(),
            id: r.id.clone(),
            crm_user_id: r.crm_user_id.clone(),
            provider: r.provider.clone(),
            mailbox: r.mailbox.clone(),
            connection: r.connection,
        }
    }
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    if args.port_base > u16::MAX - 2 {
        anyhow::bail!("--port-base {} leaves no room for the two ports after it", args.port_base);
    }
    let (fakes, ca_file) =
        if args.tls { start_tls(&args).await? } else { (Fakes::start_on(&args.host, args.port_base).await?, None) };
    let scenario = match &args.seed {
        Seed::Scenario => {
            Some(seed(&fakes, Size { contacts: args.contacts, events: args.events, reps: args.reps.into() }))
        }
        Seed::Empty => None,
        Seed::File(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("--seed: cannot read {}", path.display()))?;
            per_service(&fakes, &text, "--seed", |fake, part| fake.load_scenario(part).map(drop))?;
            None
        }
    };
    let radicale = match (&args.radicale, &scenario) {
        (None, _) => None,
        (Some(exe), Some(_)) => {
            let server = crate::radicale::start(exe, args.port_base.checked_add(3).unwrap_or(0)).await?;
            let rep = crate::radicale::seed(&server, &fakes).await?;
            Some((server, rep))
        }
        (Some(_), None) => anyhow::bail!("--radicale adds a rep to the standard scenario: it needs --seed scenario"),
    };
    for fake in [&*fakes.salesforce, &*fakes.graph, &*fakes.google] {
        fake.save_seed();
    }
    if let Some(spec) = &args.faults {
        let text = if spec.trim_start().starts_with('{') {
            spec.clone()
        } else {
            std::fs::read_to_string(spec).with_context(|| format!("--faults: cannot read {spec}"))?
        };
        per_service(&fakes, &text, "--faults", |fake, part| fake.inject_json(part).map(drop))?;
    }
    let mut reps: Vec<Rep> = scenario.iter().flat_map(Scenario::reps).collect();
    reps.extend(radicale.iter().map(|(_, rep)| rep.clone()));
    let dav_url = radicale.as_ref().map(|(server, _)| server.url.as_str());

    let sf = fakes.salesforce.config();
    let graph = fakes.graph.config();
    let google = fakes.google.config();
    let secret =
        |s: &Option<secrecy::SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default();
    let mut env = serde_json::Map::new();
    env.insert(ENV_SF_SECRET.into(), json!(secret(&sf.client_secret)));
    env.insert(ENV_GRAPH_SECRET.into(), json!(secret(&graph.client_secret)));
    env.insert(ENV_GOOGLE_SECRET.into(), json!(secret(&google.client_secret)));
    if let Some(s) = &scenario {
        env.insert(ENV_GOOGLE_GRANT.into(), json!(s.google_grant));
    }
    if service_account(&reps) {
        env.insert(ENV_GOOGLE_KEY.into(), json!(secret(&google.private_key)));
    }
    if radicale.is_some() {
        env.insert(ENV_DAV_PASSWORD.into(), json!(crate::radicale::DAV_PASSWORD));
    }

    let config_path = args.config_out.as_ref().map(|p| absolute(p));
    let db_name = format!("crmsync-sandbox-{}.db", args.port_base);
    let mut config_text = config_toml(&fakes, &reps, &db_name);
    if let Some(url) = dav_url {
        config_text.push_str(&crate::radicale::config_section(url, ENV_DAV_PASSWORD));
    }
    if let Some(p) = &config_path {
        let dir = p.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("--config-out: cannot create {}", dir.display()))?;
        // The fakes start empty every time, so the sandbox's store must too.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.join(format!("{db_name}{suffix}")));
        }
        std::fs::write(p, &config_text).with_context(|| format!("--config-out: cannot write {}", p.display()))?;
    }
    let cfg = config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "crmsync.toml".into());
    let console = start_console(
        &fakes,
        dav_url,
        config_path.clone().unwrap_or_else(|| absolute(Path::new(&cfg))),
        &config_text,
        args.port_base,
    )
    .await?;
    let mut next: Vec<String> =
        env.iter().map(|(k, v)| format!("export {k}={}", sh(v.as_str().unwrap_or("")))).collect();
    if let Some(ca) = &ca_file {
        // What Python's requests and httplib2, OpenSSL-based clients and rustls, and Node read.
        for var in ["REQUESTS_CA_BUNDLE", "HTTPLIB2_CA_CERTS", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS"] {
            next.push(format!("export {var}={}", sh(&ca.display().to_string())));
        }
    }
    if let Some(s) = scenario.as_ref().filter(|s| s.rep_count >= 2) {
        next.push(format!(
            "crmsync connect --config {} --rep {} --grant-env {ENV_GOOGLE_GRANT}",
            sh(&cfg),
            sh(&s.google_rep.name)
        ));
        next.push(format!("crmsync sync --config {} --all", sh(&cfg)));
        next.push(format!("crmsync reset --config {} --rep erin --as {}", sh(&cfg), sh(&s.admin)));
        next.push(format!("crmsync sync --config {} --all", sh(&cfg)));
        next.push(format!("crmsync status --config {}", sh(&cfg)));
    }

    let out = json!({
        "salesforce": {
            "base_url": fakes.salesforce.uri(),
            "rest_url": format!("{}/services/data/v{}", fakes.salesforce.uri(), sf.api_version),
            "token_url": sf.token_endpoint(),
            "client_id": sf.client_id,
            "client_secret": secret(&sf.client_secret),
            "refresh_token": crmsync_salesforce::fake::REFRESH_TOKEN,
            "grant_types": ["client_credentials", "refresh_token"],
        },
        "graph": {
            "base_url": fakes.graph.uri(),
            "graph_url": fakes.graph.graph_url(),
            "token_url": fakes.graph.token_url(),
            "tenant": graph.tenant,
            "client_id": graph.client_id,
            "client_secret": secret(&graph.client_secret),
            "mailboxes": fakes.graph.mailboxes(),
        },
        "google": {
            "base_url": fakes.google.uri(),
            "people_url": format!("{}/v1", google.people_url),
            "calendar_url": google.calendar_url,
            "token_url": google.token_url,
            "client_id": google.client_id,
            "client_secret": secret(&google.client_secret),
            "service_account_email": google.service_account_email,
        },
        "dav": radicale.as_ref().map(|(server, rep)| json!({
            "url": server.url,
            "server": server.version,
            "user": rep.mailbox,
            "password": crate::radicale::DAV_PASSWORD,
            "rep": rep.name,
        })),
        "console": { "url": console.url.as_str(), "sign_in_as": scenario.as_ref().map(|s| s.admin.clone()) },
        "admins": scenario.as_ref().map(|s: &Scenario| json!({ "allowed": s.admin, "refused": s.half_admin })),
        "reps": reps.iter().map(RepOut::from).collect::<Vec<_>>(),
        "google_grant": scenario.as_ref().map(|s| s.google_grant.clone()),
        "env": env,
        "config_file": config_path,
        "config_toml": config_text,
        "ca_file": ca_file,
        "next": next,
    });

    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    } else {
        write!(stdout, "{}", human(&out, scenario.as_ref(), config_path.as_deref()))?;
    }
    stdout.flush()?;
    drop(stdout);
    tracing::info!(port_base = args.port_base, "sandbox running");

    wait_for_stop().await;
    console.stop().await;
    drop(radicale);
    if !args.json {
        println!("sandbox stopped");
    }
    drop(fakes);
    Ok(ExitCode::SUCCESS)
}

/// The fakes on internal loopback ports, each behind a TLS proxy on its public port; the CA
/// certificate written to `--ca-out`.
async fn start_tls(args: &SandboxArgs) -> anyhow::Result<(Fakes, Option<PathBuf>)> {
    let authority = tls::Authority::new(&args.host)?;
    let ca_file = absolute(&args.ca_out);
    std::fs::write(&ca_file, &authority.ca_pem)
        .with_context(|| format!("--ca-out: cannot write {}", ca_file.display()))?;
    let name = if tls::is_unspecified(&args.host) { "127.0.0.1" } else { args.host.as_str() };
    let fakes = Fakes {
        salesforce: crmsync_salesforce::fake::FakeSalesforce::start().await,
        graph: crmsync_exchange::fake::FakeGraph::start().await,
        google: crmsync_google::fake::FakeGoogle::start().await,
    };
    for (i, fake) in [&*fakes.salesforce, &*fakes.graph, &*fakes.google].into_iter().enumerate() {
        let port = args.port_base + i as u16;
        let listener = std::net::TcpListener::bind((args.host.as_str(), port))
            .with_context(|| format!("cannot listen on {}:{port}", args.host))?;
        authority.front(listener, fake.address())?;
        let host = if name.contains(':') { format!("[{name}]") } else { name.to_owned() };
        fake.serve_as(&format!("https://{host}:{port}"));
    }
    Ok((fakes, Some(ca_file)))
}

/// Hand each service's part of a `{"salesforce", "graph", "google"}` JSON object to `apply`.
fn per_service(
    fakes: &Fakes,
    text: &str,
    flag: &str,
    apply: impl Fn(&crmsync_fake::Handle, &[u8]) -> Result<(), String>,
) -> anyhow::Result<()> {
    let parts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).with_context(|| format!("{flag}: not a JSON object"))?;
    for (name, part) in &parts {
        let fake: &crmsync_fake::Handle = match name.as_str() {
            "salesforce" => &fakes.salesforce,
            "graph" => &fakes.graph,
            "google" => &fakes.google,
            other => anyhow::bail!("{flag}: unknown service {other:?} (salesforce, graph, google)"),
        };
        apply(fake, part.to_string().as_bytes()).map_err(|e| anyhow::anyhow!("{flag}: {name}: {e}"))?;
    }
    Ok(())
}

/// The admin console of the sandbox: on port base + 10 (8650 by default, `crmsync serve`'s
/// default; a free port when that one is taken), over the fakes and the config's store.
struct SandboxConsole {
    url: url::Url,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SandboxConsole {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn start_console(
    fakes: &Fakes,
    dav_url: Option<&str>,
    path: PathBuf,
    config_text: &str,
    port_base: u16,
) -> anyhow::Result<SandboxConsole> {
    let port = port_base.checked_add(10).context("--port-base leaves no room for the console (base + 10)")?;
    let loaded = crate::config::Loaded::parse(&path, config_text)?;
    let store = loaded.open_store().await?;
    let err = |e: crmsync_core::Error| anyhow::anyhow!("{}", e.message());
    let mut engine = crmsync_core::Engine::new(fakes.crm().map_err(err)?, store);
    for p in fakes.providers().map_err(err)? {
        engine = engine.with_provider(p);
    }
    if let Some(url) = dav_url {
        let mut config = crmsync_dav::DavConfig::new(url);
        config.password = Some(crate::radicale::DAV_PASSWORD.to_owned().into());
        engine = engine.with_provider(std::sync::Arc::new(crmsync_dav::DavProvider::new(config).map_err(err)?));
    }
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(_) => tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.context("the console cannot listen")?,
    };
    let options = crate::console::Options { session_minutes: 30, ..Default::default() };
    let console = crate::console::Console::new(listener, loaded, engine, options)?;
    let url = console.public.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(console.serve(async {
        let _ = stopped.await;
    }));
    Ok(SandboxConsole { url, stop, task })
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Quote for a POSIX shell when needed.
fn sh(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Reps listed one by one in the text output.
const SHOWN_REPS: usize = 10;

/// The config file for `crmsync sync` against this sandbox.
pub fn config_toml(fakes: &Fakes, reps: &[Rep], db_name: &str) -> String {
    let sf = fakes.salesforce.config();
    let graph = fakes.graph.config();
    let google = fakes.google.config();
    let mut t = String::new();
    t.push_str("# crmsync config for the sandbox (`crmsync sandbox`): the fakes on loopback.\n");
    t.push_str("# Secrets are never in this file: export the variables the sandbox printed first.\n\n");
    t.push_str(&format!("[store]\n# SQLite, next to this file; `postgres://…` works too.\nurl = {}\n\n", q(db_name)));
    t.push_str(&format!(
        "[salesforce]\ninstance_url = {}\nclient_id = {}\nclient_secret_env = {}\n\n",
        q(&sf.instance_url),
        q(&sf.client_id),
        q(ENV_SF_SECRET)
    ));
    t.push_str(&format!(
        "[exchange]\ngraph_url = {}\ntoken_url = {}\ntenant = {}\nclient_id = {}\nclient_secret_env = {}\n\n",
        q(&graph.graph_url),
        q(&graph.token_url),
        q(&graph.tenant),
        q(&graph.client_id),
        q(ENV_GRAPH_SECRET)
    ));
    t.push_str(&format!(
        "[google]\npeople_url = {}\ncalendar_url = {}\ntoken_url = {}\nclient_id = {}\nclient_secret_env = {}\n\n",
        q(&google.people_url),
        q(&google.calendar_url),
        q(&google.token_url),
        q(google.client_id.as_deref().unwrap_or_default()),
        q(ENV_GOOGLE_SECRET)
    ));
    if service_account(reps) {
        t.insert_str(
            t.len() - 1,
            &format!(
                "# The service account admin-managed Google reps sync through.\nservice_account_email = {}\nprivate_key_env = {}\n",
                q(google.service_account_email.as_deref().unwrap_or_default()),
                q(ENV_GOOGLE_KEY)
            ),
        );
    }
    t.push_str(
        "# The default sync configuration of every rep (docs/behaviour.md §2); [reps.sync] overrides it per rep.\n[sync]\n\n",
    );
    for r in reps {
        let conn = match r.connection {
            ConnectionMode::AdminManaged => "admin_managed",
            ConnectionMode::UserManaged => "user_managed",
        };
        t.push_str(&format!(
            "[[reps]]\nname = {}\ncrm_user_id = {}\nprovider = {}\nmailbox = {}\nconnection = {}\n\n",
            q(&r.name),
            q(&r.crm_user_id),
            q(&r.provider),
            q(&r.mailbox),
            q(conn)
        ));
    }
    t
}

/// Whether an admin-managed Google rep is configured (it needs the service account).
fn service_account(reps: &[Rep]) -> bool {
    reps.iter().any(|r| r.provider == "google" && r.connection == ConnectionMode::AdminManaged)
}

fn human(out: &serde_json::Value, scenario: Option<&Scenario>, config: Option<&Path>) -> String {
    use std::fmt::Write as _;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let (sf, g, go) = (&out["salesforce"], &out["graph"], &out["google"]);
    let mut t = String::from("crmsync sandbox: the fakes on loopback (Ctrl-C to stop)\n\n");
    let _ = writeln!(t, "Salesforce       {}", s(&sf["base_url"]));
    let _ = writeln!(t, "  REST API       {}", s(&sf["rest_url"]));
    let _ = writeln!(t, "  token endpoint {}  (client_credentials or refresh_token)", s(&sf["token_url"]));
    let _ = writeln!(t, "  client_id      {}", s(&sf["client_id"]));
    let _ = writeln!(t, "  client_secret  {}", s(&sf["client_secret"]));
    let _ = writeln!(t, "  refresh_token  {}", s(&sf["refresh_token"]));
    let _ = writeln!(t, "Microsoft Graph  {}", s(&g["graph_url"]));
    let _ = writeln!(t, "  token endpoint {}", s(&g["token_url"]));
    let _ = writeln!(t, "  tenant         {}", s(&g["tenant"]));
    let _ = writeln!(t, "  client_id      {}", s(&g["client_id"]));
    let _ = writeln!(t, "  client_secret  {}", s(&g["client_secret"]));
    let _ = writeln!(t, "Google           {}", s(&go["base_url"]));
    let _ = writeln!(t, "  People API     {}", s(&go["people_url"]));
    let _ = writeln!(t, "  Calendar API   {}", s(&go["calendar_url"]));
    let _ = writeln!(t, "  token endpoint {}", s(&go["token_url"]));
    let _ = writeln!(t, "  client_id      {}", s(&go["client_id"]));
    let _ = writeln!(t, "  client_secret  {}", s(&go["client_secret"]));
    let _ = writeln!(t, "  service acct.  {}", s(&go["service_account_email"]));
    t.push('\n');
    match scenario {
        Some(sc) => {
            let reps = sc.reps();
            for r in reps.iter().take(SHOWN_REPS) {
                let conn = match r.connection {
                    ConnectionMode::AdminManaged => "admin-managed",
                    ConnectionMode::UserManaged => "user-managed",
                };
                let _ = writeln!(
                    t,
                    "Rep {:<14} {} mailbox {}, {conn}, CRM user {}",
                    r.name, r.provider, r.mailbox, r.crm_user_id
                );
            }
            if reps.len() > SHOWN_REPS {
                let _ = writeln!(t, "… and {} more reps (all in the config and in --json)", reps.len() - SHOWN_REPS);
            }
            if let Some(dav) = out["dav"].as_object() {
                let _ = writeln!(
                    t,
                    "Rep {:<14} dav mailbox {}, admin-managed, on Radicale {} at {} (password {})",
                    s(&dav["rep"]),
                    s(&dav["user"]),
                    s(&dav["server"]),
                    s(&dav["url"]),
                    s(&dav["password"])
                );
            }
            let _ = writeln!(t, "Admins: {} (may Reset Sync), {} (lacks Manage Sync)", sc.admin, sc.half_admin);
            let _ = writeln!(t, "{}'s grant (refresh token): {}", sc.google_rep.name, sc.google_grant);
        }
        None => t.push_str("Seeded no reps (--seed empty or a scenario file).\n"),
    }
    if let Some(url) = out["console"]["url"].as_str() {
        let who = out["console"]["sign_in_as"].as_str().map(|a| format!(" (sign in as {a})")).unwrap_or_default();
        let _ = writeln!(t, "Admin console    {url}{who}");
    }
    t.push('\n');
    match config {
        Some(p) => {
            let _ = writeln!(t, "Config for `crmsync sync` written to {}", p.display());
        }
        None => {
            t.push_str("A config for `crmsync sync` (save it as crmsync.toml, or pass --config-out FILE):\n\n");
            t.push_str(&s(&out["config_toml"]));
        }
    }
    if let Some(ca) = out["ca_file"].as_str() {
        let _ = writeln!(t, "\nHTTPS, signed by the sandbox's own CA: {ca} (trust it with the export lines below)");
    }
    let _ = writeln!(
        t,
        "\nControl API on each base URL under /_crmsync/ (health, reset, seed, snapshot, restore, faults, requests):\n  curl -X POST {}/_crmsync/reset",
        s(&sf["base_url"])
    );
    t.push_str("\nNext, in another shell:\n");
    for line in out["next"].as_array().into_iter().flatten() {
        let _ = writeln!(t, "  {}", s(line));
    }
    t
}
