//! The console's pages (maud) and their JSON twins. Every page is a GET that changes nothing;
//! every change is a POST with the session's CSRF token that answers with a redirect to a GET.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use chrono::Utc;
use crmsync_core::config::READ_MARGIN_DAYS;
use crmsync_core::port::Access;
use crmsync_core::{
    ConnectionMode, CrmUser, Cursors, ItemError, Kind, KindReport, Link, LinkState, Record, Rep, RepState, ResetRecord,
    ResetScope, Side,
};
use maud::{DOCTYPE, Markup, html};
use serde::{Deserialize, Serialize};

use super::App;
use super::auth::{self, Admin, Attempt, SignedIn};
use crate::commands::{RepView, scope_name, views};
use crate::table::when;

fn layout(title: &str, admin: Option<&Admin>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — crmsync" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "crmsync" }
                    @if let Some(a) = admin {
                        nav { a href="/" { "Sync Status" } a href="/audit" { "Audit" } }
                        form.signout method="post" action="/signout" {
                            span { "Signed in as " strong { (a.name) } }
                            input type="hidden" name="csrf" value=(a.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page with one message (errors, refusals, sign-out).
pub(crate) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let body = html! { p.message { (text) } p { a href="/" { "Back to Sync Status" } } };
    (status, Html(layout(title, None, body).into_string())).into_response()
}

/// What a visitor without a session sees (401).
pub(crate) fn signin_page() -> Response {
    let body = html! {
        p { "Sign in with your Salesforce account. The console needs both " strong { "Manage Users" } " and "
            strong { "Manage Sync" } "; they are checked in Salesforce at sign-in and on every action." }
        p { a.button #signin href="/signin" { "Sign in with Salesforce" } }
    };
    (StatusCode::UNAUTHORIZED, Html(layout("Sign in", None, body).into_string())).into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    message(StatusCode::INTERNAL_SERVER_ERROR, "The store did not answer", &e.to_string())
}

fn connection(c: ConnectionMode) -> &'static str {
    match c {
        ConnectionMode::AdminManaged => "admin_managed",
        ConnectionMode::UserManaged => "user_managed",
    }
}

fn badge(s: RepState) -> Markup {
    html! { span class={ "badge st-" (s.as_str()) } { (s.as_str()) } }
}

fn find<'a>(app: &'a App, id: &str) -> Result<&'a Rep, Box<Response>> {
    app.reps
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Box::new(message(StatusCode::NOT_FOUND, "No such rep", "No configured rep has this id.")))
}

/// A rep's row on Sync Status, with its lease holder.
#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    view: RepView,
    lease_holder: Option<crmsync_core::LeaseHolder>,
}

async fn rows(app: &App) -> anyhow::Result<Vec<Row>> {
    let now = Utc::now();
    let mut out = vec![];
    for view in views(&app.loaded, &*app.store, &app.reps, 10).await? {
        let lease_holder = app.store.lease(&view.id, now).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        out.push(Row { view, lease_holder });
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
pub(crate) struct StatusQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
}

pub(crate) const STATES: [RepState; 7] = RepState::ALL;

/// `GET /`: Sync Status.
pub(crate) async fn status(
    State(app): State<Arc<App>>,
    SignedIn(admin): SignedIn,
    Query(q): Query<StatusQuery>,
) -> Response {
    let rows = match rows(&app).await {
        Ok(r) => r,
        Err(e) => return internal(format!("{e:#}")),
    };
    let mut counts: BTreeMap<&str, usize> = STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for r in &rows {
        *counts.entry(r.view.state.as_str()).or_default() += 1;
    }
    let needle = q.q.trim().to_lowercase();
    let shown = |r: &Row| {
        (needle.is_empty() || r.view.rep.to_lowercase().contains(&needle))
            && (q.state.is_empty() || r.view.state.as_str() == q.state)
    };
    let body = html! {
        ul.counts {
            @for (s, n) in &counts {
                li { a href={ "/?state=" (s) } { span class={ "badge st-" (s) } { (s) } " " strong.count data-state=(s) { (n) } } }
            }
        }
        form.filters method="get" action="/" {
            label { "Rep " input #search type="search" name="q" value=(q.q) placeholder="type a rep's name" autocomplete="off"; }
            label { "State " select #state name="state" {
                option value="" { "any" }
                @for s in STATES { option value=(s.as_str()) selected[q.state == s.as_str()] { (s.as_str()) } }
            } }
            button type="submit" { "Filter" }
            span.refresh data-every="30" { "refreshes every 30 s" }
        }
        table #reps.sortable {
            thead { tr {
                th data-sort="text" { "Rep" } th data-sort="text" { "State" } th data-sort="text" { "Connection" }
                th data-sort="text" { "Last successful cycle" } th data-sort="num" { "Links" }
                th data-sort="num" { "Last cycle writes" } th data-sort="num" { "Item errors" } th data-sort="text" { "Running now" }
            } }
            tbody {
                @for r in &rows {
                    @let v = &r.view;
                    tr data-name=(v.rep.to_lowercase()) data-state=(v.state.as_str()) hidden[!shown(r)] {
                        td { a href={ "/reps/" (v.id) } { (v.rep) } br; small { (v.provider) " · " (v.mailbox) } }
                        td { (badge(v.state)) }
                        td { (connection(v.connection)) }
                        td { (when(v.last_success)) }
                        td data-value=(v.links.contacts + v.links.events) { (v.links.contacts) " contacts, " (v.links.events) " events" }
                        td { (v.last_cycle.as_ref().map_or(0, |c| c.writes())) }
                        td { (v.item_errors.iter().filter(|e| !is_skip(e)).count()) }
                        td { @match &r.lease_holder { Some(h) => { (h.holder) br; small { "until " (when(Some(h.until))) } }, None => { "—" } } }
                    }
                }
            }
        }
        p.empty #no-match hidden[rows.iter().any(shown)] { "No rep matches." }
    };
    Html(layout("Sync Status", Some(&admin), body).into_string()).into_response()
}

/// `GET /api/status`.
pub(crate) async fn api_status(State(app): State<Arc<App>>, _who: auth::Reader) -> Response {
    match rows(&app).await {
        Ok(r) => Json(serde_json::json!({ "reps": r })).into_response(),
        Err(e) => internal(format!("{e:#}")),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct Notice {
    #[serde(default)]
    notice: String,
}

fn kind_report(r: &crmsync_core::CycleReport, k: Kind) -> &KindReport {
    match k {
        Kind::Contact => &r.contacts,
        Kind::Event => &r.events,
    }
}

/// An entry of the store's retry list that is a skip waiting to be looked at again (a match
/// outside the filter, or already linked), not an error.
fn is_skip(e: &ItemError) -> bool {
    e.reason.starts_with("skipped: ")
}

/// What an admin calls a record: a contact's name (or e-mail), an event's subject.
fn record_name(r: &Record) -> String {
    match r {
        Record::Contact(c) => {
            let name =
                [c.given_name.as_deref(), c.family_name.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
            if name.trim().is_empty() { c.emails.first().cloned().unwrap_or_default() } else { name }
        }
        Record::Event(e) => e.subject.clone().unwrap_or_default(),
    }
}

/// The names of the records behind item errors, read live from each side (best effort: a side
/// that does not answer leaves its ids unnamed).
async fn error_names(app: &App, rep: &Rep, kind: Kind, errors: &[ItemError]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    if errors.is_empty() {
        return names;
    }
    let grant = match rep.connection {
        ConnectionMode::AdminManaged => None,
        ConnectionMode::UserManaged => app.store.grant(&rep.id).await.ok().flatten(),
    };
    let access = Access { window: rep.config.window(Utc::now()).widened(READ_MARGIN_DAYS), grant };
    for side in [Side::Crm, Side::Provider] {
        let ids: Vec<String> = errors.iter().filter(|e| e.side == side).map(|e| e.id.clone()).collect();
        if ids.is_empty() {
            continue;
        }
        let collection = match side {
            Side::Crm => app.engine.crm().collection(rep, kind, &access).await,
            Side::Provider => match app.engine.provider(&rep.provider) {
                Some(p) => p.collection(rep, kind, &access).await,
                None => continue,
            },
        };
        match collection {
            Ok(c) => match c.get_many(&ids).await {
                Ok(items) => names.extend(items.into_iter().map(|i| (i.id, record_name(&i.record)))),
                Err(e) => tracing::debug!(error = e.message(), "item error names unavailable"),
            },
            Err(e) => tracing::debug!(error = e.message(), "item error names unavailable"),
        }
    }
    names
}

/// A rep's links, cursors and item errors of one kind, as the store holds them.
async fn stored(app: &App, rep: &str, kind: Kind) -> Result<(Vec<Link>, Cursors, Vec<ItemError>), Box<Response>> {
    let err = |e: crmsync_core::Error| Box::new(internal(e.message()));
    Ok((
        app.store.links(rep, kind).await.map_err(err)?,
        app.store.cursors(rep, kind).await.map_err(err)?,
        app.store.item_errors(rep, kind).await.map_err(err)?,
    ))
}

/// `GET /reps/{id}`: one rep.
pub(crate) async fn rep(
    State(app): State<Arc<App>>,
    SignedIn(admin): SignedIn,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> Response {
    let rep = match find(&app, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let st = match app.store.status(&rep.id).await {
        Ok(s) => s,
        Err(e) => return internal(e.message()),
    };
    let mut kinds = vec![];
    for kind in Kind::ALL {
        let (links, cursors, errors) = match stored(&app, &rep.id, kind).await {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let names = error_names(&app, rep, kind, &errors).await;
        kinds.push((kind, links, cursors, errors, names));
    }
    let notice = match n.notice.as_str() {
        "reset" => Some("Reset Sync done: links and cursors removed, no record changed. The next cycle re-links."),
        "sync" => Some("Queued: the rep is due now; the next worker cycle takes them (under their lease)."),
        _ => None,
    };
    let body = html! {
        @if let Some(t) = notice { p.notice #notice { (t) } }
        section.summary {
            p { (badge(st.state)) " " (rep.provider) " · " (rep.mailbox) " · " (connection(rep.connection)) }
            @if let Some(e) = &st.last_error { p.bad { (e) } }
            @if st.state == RepState::NeedsReconnect {
                p.guidance { "What the rep must do: reconnect their account. Ask them to sign in to "
                    (rep.provider) " again and hand the new grant to " code { "crmsync connect --rep \"" (rep.name) "\" --grant-env VAR" }
                    "; their sync resumes at the next cycle." }
            }
            p { "Last successful cycle: " (when(st.last_success)) }
            @match &st.last_reset {
                Some(r) => p { "Last reset: " (when(Some(r.at))) " by " (r.admin_name) " (" (scope_name(r.scope)) ")" },
                None => p { "Last reset: never" },
            }
            div.actions {
                form method="post" action={ "/reps/" (rep.id) "/sync" } {
                    input type="hidden" name="csrf" value=(admin.csrf);
                    button #sync-now type="submit" { "Sync now" }
                }
                a.button #reset href={ "/reps/" (rep.id) "/reset" } { "Reset Sync…" }
            }
        }
        @for (kind, links, cursors, errors, names) in &kinds {
            section.kind {
                h2 { (kind.as_str()) }
                p { (links.iter().filter(|l| l.state == LinkState::Linked).count()) " linked, "
                    (links.iter().filter(|l| l.state == LinkState::Suppressed).count()) " kept out of sync by the rep · cursors: "
                    (if cursors.provider.is_some() || cursors.crm.is_some() { "stored (the next read is incremental)" } else { "none (the next read is full)" }) }
                @if let Some(c) = &st.last_report {
                    @let k = kind_report(c, *kind);
                    p { "Last cycle " (when(c.started)) ": " (k.linked) " linked, "
                        (k.created_in_crm + k.created_in_provider) " created, " (k.updated_in_crm + k.updated_in_provider) " updated, "
                        (k.deleted_in_crm + k.deleted_in_provider) " deleted, " (k.errors) " item errors; requests: CRM "
                        (c.requests.crm) ", mailbox " (c.requests.provider) }
                    @if !k.skipped.is_empty() {
                        p { "Skipped (not errors): " @for (reason, n) in &k.skipped { span.skip { (reason) " " (n) } " " } }
                    }
                }
                @let (skips, errs): (Vec<&ItemError>, Vec<&ItemError>) = errors.iter().partition(|e| is_skip(e));
                @if errs.is_empty() { p { "No item errors." } }
                @for (id, title, list) in [("errors", "Item errors", &errs), ("skips", "Skipped, looked at again next cycle (not errors)", &skips)] {
                    @if !list.is_empty() {
                        h3 { (title) }
                        table.errors id={ (id) "-" (kind.as_str()) } { thead { tr { th { "Record" } th { "Side" } th { "Reason" } th { "Attempts" } th { "Last seen" } } }
                            tbody { @for e in list.iter() { tr {
                                @let crm_id = if e.side == Side::Crm { Some(e.id.as_str()) } else { links.iter().find(|l| l.provider_id == e.id).map(|l| l.crm_id.as_str()) };
                                td.record {
                                    strong { (names.get(&e.id).map_or("(name unavailable)", String::as_str)) } br;
                                    small { (e.id) }
                                    @if let Some(id) = crm_id { br; a href={ (app.crm_url) "/" (id) } rel="noreferrer" target="_blank" { "open in the CRM" } }
                                }
                                td { (e.side.as_str()) } td { (e.reason) } td { (e.attempts) } td { (when(Some(e.last_seen))) }
                            } } }
                        }
                    }
                }
            }
        }
    };
    Html(layout(&rep.name, Some(&admin), body).into_string()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ScopeQuery {
    scope: Option<String>,
}

fn parse_scope(s: Option<&str>) -> Option<ResetScope> {
    match s.unwrap_or("all") {
        "contacts" => Some(ResetScope::Contacts),
        "events" => Some(ResetScope::Events),
        "all" => Some(ResetScope::All),
        _ => None,
    }
}

/// `GET /reps/{id}/reset?scope=…`: what a reset of this scope removes, and the confirm form.
pub(crate) async fn reset_preview(
    State(app): State<Arc<App>>,
    SignedIn(admin): SignedIn,
    Path(id): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Response {
    let rep = match find(&app, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(scope) = parse_scope(q.scope.as_deref()) else {
        return message(StatusCode::BAD_REQUEST, "Unknown scope", "The scope is contacts, events or all.");
    };
    let mut removes = vec![];
    for kind in scope.kinds() {
        let (links, cursors, errors) = match stored(&app, &rep.id, *kind).await {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let linked = links.iter().filter(|l| l.state == LinkState::Linked).count();
        let kept = links.len() - linked;
        let cursors = usize::from(cursors.provider.is_some()) + usize::from(cursors.crm.is_some());
        removes.push((*kind, linked, kept, cursors, errors.len()));
    }
    let body = html! {
        form.scope method="get" {
            label { "Scope " select #scope name="scope" {
                @for s in ["all", "contacts", "events"] { option value=(s) selected[scope_name(scope) == s] { (s) } }
            } }
            button type="submit" { "Preview" }
        }
        h2 { "What the reset removes" }
        table #removes { thead { tr { th { "Kind" } th { "Links removed" } th { "Cursors removed" } th { "Item errors cleared" } th { "Kept (rep's own decisions)" } } }
            tbody { @for (kind, linked, kept, cursors, errors) in &removes {
                tr data-kind=(kind.as_str()) { td { (kind.as_str()) } td.links { (linked) } td { (cursors) } td { (errors) } td { (kept) } }
            } } }
        h2 { "What happens next" }
        p { "No contact or event is changed by the reset. "
            @match rep.connection {
                ConnectionMode::AdminManaged => "The rep goes to reset_pending; the next cycle reads everything and re-links by sync key and e-mail, writing nothing where both sides agree.",
                ConnectionMode::UserManaged => "The rep's grant is dropped: they go to needs_reconnect and must connect their account again before the next cycle.",
            } }
        form method="post" action={ "/reps/" (rep.id) "/reset" } {
            input type="hidden" name="csrf" value=(admin.csrf);
            input type="hidden" name="scope" value=(scope_name(scope));
            button.danger #confirm type="submit" { "Reset Sync of " (rep.name) " (" (scope_name(scope)) ")" }
            " " a href={ "/reps/" (rep.id) } { "Cancel" }
        }
    };
    Html(layout(&format!("Reset Sync: {}", rep.name), Some(&admin), body).into_string()).into_response()
}

/// A change asked by a form: the session's CSRF token, a configured rep, and the admin's
/// permissions read live from the CRM (a refusal is audited).
async fn privileged<'a>(
    app: &'a App,
    who: &SignedIn,
    csrf: &str,
    id: &str,
    action: &str,
) -> Result<(&'a Rep, CrmUser), Box<Response>> {
    who.check_csrf(csrf)?;
    let rep = find(app, id)?;
    let user = who.0.user();
    auth::allowed(app, &user, action, Some(&rep.name)).await?;
    Ok((rep, user))
}

#[derive(Deserialize)]
pub(crate) struct ResetForm {
    #[serde(default)]
    csrf: String,
    scope: Option<String>,
}

/// `POST /reps/{id}/reset`: the live permission check, the reset, a redirect to the rep page.
pub(crate) async fn reset(
    State(app): State<Arc<App>>,
    who: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<ResetForm>,
) -> Response {
    let Some(scope) = parse_scope(f.scope.as_deref()) else {
        return message(StatusCode::BAD_REQUEST, "Unknown scope", "The scope is contacts, events or all.");
    };
    let (rep, user) = match privileged(&app, &who, &f.csrf, &id, "reset").await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match app.engine.reset(&user, rep, scope).await {
        Ok(out) => {
            tracing::info!(admin = %user.name, rep = %rep.name, scope = scope_name(scope), links = ?out.record.links_removed, "reset");
            metrics::counter!("crmsync_resets_total", "scope" => scope_name(scope)).increment(1);
            Redirect::to(&format!("/reps/{}?notice=reset", rep.id)).into_response()
        }
        Err(e) => message(StatusCode::BAD_GATEWAY, "Reset Sync failed", e.message()),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /reps/{id}/sync`: the rep is due now; the next worker cycle takes them under their
/// lease, like every cycle.
pub(crate) async fn sync_now(
    State(app): State<Arc<App>>,
    who: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let rep = match privileged(&app, &who, &f.csrf, &id, "sync now").await {
        Ok((rep, _)) => rep,
        Err(r) => return *r,
    };
    match app.store.schedule(&rep.id, Utc::now()).await {
        Ok(()) => Redirect::to(&format!("/reps/{}?notice=sync", rep.id)).into_response(),
        Err(e) => internal(e.message()),
    }
}

/// One line of the audit: a reset (from the store) or a refusal (from this process).
#[derive(Serialize)]
struct Entry {
    at: chrono::DateTime<Utc>,
    admin: String,
    action: String,
    rep: Option<String>,
    scope: Option<&'static str>,
    links_removed: BTreeMap<String, u64>,
    outcome: String,
    /// For the rep's latest reset: the first cycle since (when it ran), its writes and errors.
    verified_by: Option<Verified>,
}

#[derive(Serialize)]
struct Verified {
    cycle_started: Option<chrono::DateTime<Utc>>,
    linked: u64,
    writes: u64,
    item_errors: u64,
}

async fn entries(app: &App) -> anyhow::Result<Vec<Entry>> {
    let mut out = vec![];
    for rep in &app.reps {
        let st = app.store.status(&rep.id).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let resets: Vec<ResetRecord> =
            app.store.resets(&rep.id).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let latest = resets.iter().map(|r| r.at).max();
        for r in resets {
            // The stored report is the rep's last cycle: it verifies the latest reset when it
            // started after it (every cycle since the reset re-reads from scratch only once).
            let verified_by =
                st.last_report.as_ref().filter(|c| Some(r.at) == latest && c.started.is_some_and(|t| t > r.at)).map(
                    |c| Verified {
                        cycle_started: c.started,
                        linked: c.contacts.linked + c.events.linked,
                        writes: c.writes(),
                        item_errors: c.contacts.errors + c.events.errors,
                    },
                );
            out.push(Entry {
                at: r.at,
                admin: r.admin_name,
                action: "reset".into(),
                rep: Some(rep.name.clone()),
                scope: Some(scope_name(r.scope)),
                links_removed: r.links_removed,
                outcome: "done".into(),
                verified_by,
            });
        }
    }
    out.extend(app.audit.refused().into_iter().map(|a: Attempt| Entry {
        at: a.at,
        admin: a.admin_name,
        action: a.action,
        rep: a.rep,
        scope: None,
        links_removed: BTreeMap::new(),
        outcome: a.outcome,
        verified_by: None,
    }));
    out.sort_by_key(|e| std::cmp::Reverse(e.at));
    Ok(out)
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    q: String,
}

fn matches(e: &Entry, q: &str) -> bool {
    let q = q.trim().to_lowercase();
    q.is_empty()
        || [Some(&e.admin), e.rep.as_ref(), Some(&e.action), Some(&e.outcome)]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(&q))
}

/// `GET /audit`.
pub(crate) async fn audit(
    State(app): State<Arc<App>>,
    SignedIn(admin): SignedIn,
    Query(q): Query<AuditQuery>,
) -> Response {
    let list = match entries(&app).await {
        Ok(l) => l,
        Err(e) => return internal(format!("{e:#}")),
    };
    let body = html! {
        form.filters method="get" action="/audit" {
            label { "Filter " input type="search" name="q" value=(q.q) placeholder="admin, rep, outcome"; }
            button type="submit" { "Filter" } " " a href="/api/audit" { "JSON" }
        }
        table #audit { thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Rep" } th { "Scope" } th { "Links removed" } th { "Outcome" } } }
            tbody { @for e in list.iter().filter(|e| matches(e, &q.q)) {
                tr.entry data-action=(e.action) {
                    td { (when(Some(e.at))) } td { (e.admin) } td { (e.action) } td { (e.rep.as_deref().unwrap_or("—")) }
                    td { (e.scope.unwrap_or("—")) }
                    td { @if e.links_removed.is_empty() { "—" } @else { @for (k, n) in &e.links_removed { (n) " " (k) " " } } }
                    td { (e.outcome)
                        @if let Some(v) = &e.verified_by { br; small.verified { "reset verified by the cycle of " (when(v.cycle_started)) ": re-linked "
                            (v.linked) ", " (v.writes) " writes, " (v.item_errors) " item errors" } } }
                }
            } }
        }
    };
    Html(layout("Audit", Some(&admin), body).into_string()).into_response()
}

/// `GET /api/audit`.
pub(crate) async fn api_audit(
    State(app): State<Arc<App>>,
    _who: auth::Reader,
    Query(q): Query<AuditQuery>,
) -> Response {
    match entries(&app).await {
        Ok(l) => Json(serde_json::json!({ "entries": l.into_iter().filter(|e| matches(e, &q.q)).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => internal(format!("{e:#}")),
    }
}
