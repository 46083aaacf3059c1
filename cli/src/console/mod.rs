//! `crmsync serve`: the admin console (Sync Status, rep pages, Reset Sync with a preview, the
//! audit) behind sign-in with the CRM.
//!
//! - `auth`: OAuth 2.0 authorization code + PKCE against Salesforce, the server-side session,
//!   CSRF tokens, the live permission check, the sign-in rate limit, bearer tokens for `/api`.
//! - `pages`: the HTML pages and their JSON twins (maud; no inline script or style).
//! - this file: the router, the `Host` allow-list, security headers, access logs, `/healthz`,
//!   `/readyz`.
//! - `metrics`: `/metrics` in the Prometheus text format.
//!
//! See docs/console.md for running it (behind a proxy, with TLS) and its security rules.

mod auth;
mod metrics;
mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use crmsync_core::{Engine, Rep, Store};
use secrecy::SecretString;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

use crate::commands::ConfigArg;
use crate::config::Loaded;

/// Options of `crmsync serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on; port 0 picks a free one (the address is printed).
    #[arg(long, env = "CRMSYNC_LISTEN", default_value = "127.0.0.1:8650")]
    pub listen: SocketAddr,
    /// The console's address as browsers reach it (behind a proxy: its public https URL); the
    /// sign-in's redirect URI is built from it. Default: http://<listen address>.
    #[arg(long, env = "CRMSYNC_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<url::Url>,
    /// Another `Host` header value to accept besides the public URL's and the listen address's
    /// (repeatable). Any other Host is refused (DNS rebinding).
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    pub allow_hosts: Vec<String>,
    /// Environment variable holding a read-only bearer token for scripts reading `/api/*`
    /// (unset: only signed-in admins can read them). It never signs a person in.
    #[arg(long, value_name = "VAR", default_value = "CRMSYNC_ADMIN_TOKEN")]
    pub token_env: String,
    /// Serve https with this certificate chain (PEM); needs --tls-key. Without it, serve plain
    /// http (behind a TLS-terminating proxy, see docs/console.md).
    #[arg(long, env = "CRMSYNC_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "CRMSYNC_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Minutes of inactivity after which a session ends, 1 to 1440.
    #[arg(long, value_name = "MINUTES", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1440))]
    pub session_minutes: u32,
}

/// What every handler shares.
pub(crate) struct App {
    pub(crate) loaded: Loaded,
    pub(crate) engine: Engine,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) reps: Vec<Rep>,
    pub(crate) oauth: auth::OAuth,
    pub(crate) api_token: Option<SecretString>,
    pub(crate) limiter: auth::Limiter,
    pub(crate) seen: metrics::Seen,
    /// Base URL of the CRM's records (`<instance>/<id>` opens one).
    pub(crate) crm_url: String,
    allowed_hosts: Vec<String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let wired = loaded.wire(&loaded.reps).await?;
    let api_token = std::env::var(&args.token_env).ok().filter(|t| !t.is_empty()).map(SecretString::from);
    let options = Options {
        public_url: args.public_url,
        allow_hosts: args.allow_hosts,
        api_token,
        session_minutes: args.session_minutes,
        tls: args.tls_cert.zip(args.tls_key),
    };
    let console = Console::new(listener, loaded, wired.engine, options)?;
    let scheme = if console.tls.is_some() { "https" } else { "http" };
    println!("listening on {scheme}://{} (open {})", console.local, console.public);
    console
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// How a console is reached and who may read it without signing in.
#[derive(Debug, Default)]
pub struct Options {
    /// The console as browsers reach it (default: `http://<listen address>`).
    pub public_url: Option<url::Url>,
    /// `Host` values accepted besides the public URL's and the listen address's.
    pub allow_hosts: Vec<String>,
    /// The read-only bearer token for `/api/*` and `/metrics`.
    pub api_token: Option<SecretString>,
    /// Idle minutes before a session ends.
    pub session_minutes: u32,
    /// Serve https: (certificate chain, private key), PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// A console bound to its listener, ready to serve (`crmsync serve`, `crmsync sandbox`).
pub struct Console {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The address it listens on.
    pub local: SocketAddr,
    /// The address browsers open.
    pub public: url::Url,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").field("local", &self.local).field("public", &self.public).finish_non_exhaustive()
    }
}

impl Console {
    /// The console over `engine` (its CRM signs admins in and answers permission checks; its
    /// store is read and reset) for the reps and `[salesforce]` section of `loaded`.
    pub fn new(
        listener: tokio::net::TcpListener,
        loaded: Loaded,
        engine: Engine,
        options: Options,
    ) -> anyhow::Result<Console> {
        // Installed before the first request, so every count lands in it.
        let _ = metrics::recorder();
        let local = listener.local_addr()?;
        let tls = options.tls.as_ref().map(|(cert, key)| tls_config(cert, key)).transpose()?;
        let public = match options.public_url {
            Some(u) => u,
            None => url::Url::parse(&format!("{}://{local}", if tls.is_some() { "https" } else { "http" }))?,
        };
        let sf = loaded
            .salesforce
            .as_ref()
            .map(|s| &s.config)
            .context("the console signs admins in with Salesforce: the config has no [salesforce] section")?;
        let oauth = auth::OAuth::new(sf, public.join("auth/callback")?)?;
        let mut allowed_hosts = vec![local.to_string(), format!("localhost:{}", local.port())];
        if let Some(h) = public.host_str() {
            allowed_hosts.push(match public.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            });
        }
        allowed_hosts.extend(options.allow_hosts);
        let app = Arc::new(App {
            crm_url: sf.instance_url.trim_end_matches('/').to_owned(),
            store: engine.store().clone(),
            engine,
            reps: loaded.reps.clone(),
            loaded,
            oauth,
            api_token: options.api_token,
            limiter: auth::limiter(),
            seen: metrics::Seen::default(),
            allowed_hosts: allowed_hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        });
        let router = router(app, public.scheme() == "https", options.session_minutes.max(1));
        Ok(Console { listener, router, tls, local, public })
    }

    /// Serve until `stop` completes.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let Some(tls) = self.tls else {
            return axum::serve(self.listener, service).with_graceful_shutdown(stop).await;
        };
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            stop.await;
            stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        axum_server::from_tcp_rustls(self.listener.into_std()?, axum_server::tls_rustls::RustlsConfig::from_config(tls))
            .handle(handle)
            .serve(service)
            .await
    }
}

/// The TLS server config from PEM files (one line naming the file when one is wrong).
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("--tls-cert: {}: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "--tls-cert: {}: no certificate in it", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("--tls-key: {}: {e}", key.display()))?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn router(app: Arc<App>, tls: bool, session_minutes: u32) -> axum::Router {
    axum::Router::new()
        .route("/", get(pages::status))
        .route("/reps/{id}", get(pages::rep))
        .route("/reps/{id}/reset", get(pages::reset_preview).post(pages::reset))
        .route("/reps/{id}/sync", post(pages::sync_now))
        .route("/audit", get(pages::audit))
        .route("/api/status", get(pages::api_status))
        .route("/api/audit", get(pages::api_audit))
        .route("/api/reps/{id}/reset-preview", get(pages::api_reset_preview))
        .route("/signin", get(auth::signin))
        .route("/auth/callback", get(auth::callback))
        .route("/signout", post(auth::signout))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/static/console.css", get(|| asset("text/css", include_str!("assets/console.css"))))
        .route("/static/console.js", get(|| asset("text/javascript", include_str!("assets/console.js"))))
        .layer(auth::sessions(tls, session_minutes))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .with_state(app)
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// Every request: the `Host` allow-list first, then security headers on every answer, and the
/// request counted by route and status.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    let path = req.uri().path().to_owned();
    let mut res = if app.allowed_hosts.contains(&host) {
        next.run(req).await
    } else {
        tracing::warn!(host, "request refused: Host not allowed");
        (StatusCode::MISDIRECTED_REQUEST, "this Host is not served here\n").into_response()
    };
    let h = res.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let route = if path.starts_with("/reps/") {
        "/reps/*"
    } else if path.starts_with("/api/reps/") {
        "/api/reps/*"
    } else if path.starts_with("/static/") {
        "/static/*"
    } else {
        ""
    };
    let route = if route.is_empty() { path } else { route.to_owned() };
    ::metrics::counter!("crmsync_console_requests_total", "route" => route, "status" => res.status().as_u16().to_string())
        .increment(1);
    res
}

/// `/readyz`: 200 when the store answers.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.store.statuses().await {
        Ok(_) => "ready".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unreachable: {}\n", e.message())).into_response(),
    }
}
