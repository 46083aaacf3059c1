//! `crmsync serve`: the admin status page (SPEC §4) and Reset Sync from it (SPEC §3).
//!
//! `GET /` is the page, `GET /api/status` the same as JSON, `POST /reset` the reset form. The
//! page has no login of its own: keep it on loopback or behind an authenticating proxy. Reset
//! from the page is off unless the admin token variable is set; even then the admin named in
//! the form must hold both `Manage Users` and `Manage Sync` in the CRM, as on the command line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use crmsync_core::{ErrorKind, Rep, ResetScope, Store};
use maud::{DOCTYPE, Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::commands::{ConfigArg, RepView, scope_name, views, when};
use crate::config::{Loaded, Wired};

/// Options of `crmsync serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Address to listen on; port 0 picks a free one (the address is printed).
    #[arg(long, default_value = "127.0.0.1:8650")]
    pub listen: SocketAddr,
    /// Environment variable holding the token that enables Reset Sync from the page.
    #[arg(long, value_name = "VAR", default_value = "CRMSYNC_ADMIN_TOKEN")]
    pub token_env: String,
}

struct App {
    loaded: Loaded,
    store: Arc<dyn Store>,
    reps: Vec<Rep>,
    /// The wired engine, or why reset from the page is off.
    reset: Result<(Wired, SecretString), String>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = args.config.load()?;
    let reps = loaded.select(None)?;
    let store = loaded.open_store().await?;
    let reset = match std::env::var(&args.token_env) {
        Ok(t) if !t.is_empty() => match loaded.wire(&[]).await {
            Ok(w) => Ok((w, SecretString::from(t))),
            Err(e) => Err(format!("Reset Sync from this page is off: {e:#}")),
        },
        _ => Err(format!("Reset Sync from this page is off: set {} to enable it", args.token_env)),
    };
    let app = Arc::new(App { loaded, store, reps, reset });
    let router = axum::Router::new()
        .route("/", get(page))
        .route("/api/status", get(api))
        .route("/reset", post(reset_form))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

async fn current(app: &App) -> Result<Vec<RepView>, Response> {
    views(&app.loaded, &*app.store, &app.reps, 5)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response())
}

async fn api(State(app): State<Arc<App>>) -> Response {
    match current(&app).await {
        Ok(v) => Json(serde_json::json!({ "reps": v })).into_response(),
        Err(r) => r,
    }
}

async fn page(State(app): State<Arc<App>>) -> Response {
    match current(&app).await {
        Ok(v) => Html(render(&app, &v, None).into_string()).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ResetForm {
    rep: String,
    admin: String,
    scope: String,
    token: String,
}

async fn reset_form(State(app): State<Arc<App>>, Form(f): Form<ResetForm>) -> Response {
    let (status, message) = do_reset(&app, &f).await;
    match current(&app).await {
        Ok(v) => (status, Html(render(&app, &v, Some((status.is_success(), message))).into_string())).into_response(),
        Err(r) => r,
    }
}

async fn do_reset(app: &App, f: &ResetForm) -> (StatusCode, String) {
    let (wired, token) = match &app.reset {
        Ok(w) => w,
        Err(why) => return (StatusCode::FORBIDDEN, why.clone()),
    };
    if f.token != token.expose_secret() {
        return (StatusCode::FORBIDDEN, "the admin token is wrong; nothing was changed".into());
    }
    let scope = match f.scope.as_str() {
        "contacts" => ResetScope::Contacts,
        "events" => ResetScope::Events,
        "all" => ResetScope::All,
        other => return (StatusCode::BAD_REQUEST, format!("unknown scope {other:?}")),
    };
    let rep = match crmsync_core::engine::find_rep(&app.reps, &f.rep) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.message().to_owned()),
    };
    let admin = match wired.engine.find_user(&f.admin).await {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("admin: {}", e.message())),
    };
    match wired.engine.reset(&admin, rep, scope).await {
        Ok(out) => (
            StatusCode::OK,
            format!(
                "Reset Sync of {} by {} (scope {}): {}; no record was changed",
                rep.name,
                admin.name,
                scope_name(scope),
                out.state.as_str()
            ),
        ),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, e.message().to_owned()),
        Err(e) => (StatusCode::BAD_GATEWAY, e.message().to_owned()),
    }
}

fn render(app: &App, reps: &[RepView], outcome: Option<(bool, String)>) -> Markup {
    html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                title { "crmsync — sync status" }
                style { "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.ok{color:#080}.bad{color:#b00}" }
            }
            body {
                h1 { "Sync status" }
                @if let Some((ok, msg)) = &outcome {
                    p class=(if *ok { "ok" } else { "bad" }) { (msg) }
                }
                table {
                    tr { th { "rep" } th { "provider" } th { "connection" } th { "state" } th { "last successful cycle" }
                         th { "linked contacts" } th { "linked events" } th { "last cycle writes" } th { "last reset" } th { "recent item errors" } }
                    @for v in reps {
                        tr {
                            td { (v.rep) br; small { (v.mailbox) } }
                            td { (v.provider) }
                            td { (format!("{:?}", v.connection)) }
                            td { (v.state.as_str()) @if let Some(e) = &v.last_error { br; small class="bad" { (e) } } }
                            td { (when(v.last_success)) }
                            td { (v.links.contacts) }
                            td { (v.links.events) }
                            td { (v.last_cycle.as_ref().map_or(0, |c| c.writes())) }
                            td { @match &v.last_reset { Some(r) => { (when(Some(r.at))) " by " (r.admin_name) }, None => { "never" } } }
                            td { @for e in &v.item_errors { (e.kind.as_str()) " " (e.id) ": " (e.reason) br; } }
                        }
                    }
                }
                h2 { "Reset Sync" }
                @match &app.reset {
                    Err(why) => p { (why) },
                    Ok(_) => form method="post" action="/reset" {
                        p { "Deletes the rep's links and cursors only; no contact or event changes. The admin needs both Manage Users and Manage Sync." }
                        label { "rep " select name="rep" { @for v in reps { option value=(v.rep) { (v.rep) } } } } " "
                        label { "scope " select name="scope" { option value="all" { "all" } option value="contacts" { "contacts" } option value="events" { "events" } } } " "
                        label { "admin (CRM user) " input name="admin" required; } " "
                        label { "admin token " input name="token" type="password" required; } " "
                        button type="submit" { "Reset Sync" }
                    },
                }
            }
        }
    }
}
