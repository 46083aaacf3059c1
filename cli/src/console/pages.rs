//! The console's pages (maud) and their JSON twins. Every page is a GET that changes nothing;
//! every change is a POST with the session's CSRF token that answers with a redirect to a GET.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use chrono::{DateTime, Utc};
use crmsync_core::config::READ_MARGIN_DAYS;
use crmsync_core::port::Access;
use crmsync_core::{
    Actor, ConnectionMode, CrmUser, Cursors, HeldDelete, ItemError, Kind, KindReport, Link, LinkState, Record, Rep,
    RepState, ResetRecord, ResetScope, Side, Verdict, Verification,
};
use maud::{DOCTYPE, Markup, html};
use serde::{Deserialize, Serialize};

use super::App;
use super::auth::{self, Admin, SignedIn};
use crate::commands::{RepView, scope_name, views};
use crate::table::when;
use crmsync_core::synced_kinds;

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

/// A rep's row on Sync Status, with its place in the worker schedule.
#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    view: RepView,
    #[serde(flatten)]
    schedule: Schedule,
}

/// Where a rep stands in the worker schedule the store keeps.
#[derive(Serialize)]
struct Schedule {
    /// Who runs a cycle of the rep now (its lease), and until when.
    lease_holder: Option<crmsync_core::LeaseHolder>,
    /// When a worker takes the rep next (`None`: no worker has scheduled it yet).
    next_due: Option<DateTime<Utc>>,
}

async fn schedule(app: &App, rep: &str) -> crmsync_core::Result<Schedule> {
    Ok(Schedule { lease_holder: app.store.lease(rep, Utc::now()).await?, next_due: app.store.due(rep).await? })
}

async fn rows(app: &App) -> anyhow::Result<Vec<Row>> {
    let mut out = vec![];
    for view in views(&app.loaded, &*app.store, &app.reps, 10).await? {
        let schedule = schedule(app, &view.id).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        out.push(Row { view, schedule });
    }
    Ok(out)
}

/// `t` as the console shows it: the time, and how long ago or ahead it is.
fn at(t: Option<DateTime<Utc>>) -> Markup {
    let Some(t) = t else { return html! { "never" } };
    let secs = (Utc::now() - t).num_seconds();
    let (n, unit) = match secs.unsigned_abs() {
        s if s < 120 => (s, "s"),
        s if s < 7200 => (s / 60, "min"),
        s if s < 172_800 => (s / 3600, "h"),
        s => (s / 86_400, "days"),
    };
    let rel = if secs >= 0 { format!("{n} {unit} ago") } else { format!("in {n} {unit}") };
    html! { time datetime=(when(Some(t))) title=(when(Some(t))) { (rel) } }
}

/// The next cycle of a rep, as Sync Status and the rep page show it.
fn next_cycle(s: &Schedule) -> Markup {
    html! {
        @match (&s.lease_holder, s.next_due) {
            (Some(h), _) => { span.running { "running now" } br; small { (h.holder) ", lease until " (when(Some(h.until))) } },
            (None, Some(d)) if d <= Utc::now() => { "due now" br; small { "the next worker round takes it" } },
            (None, Some(d)) => { "due " (at(Some(d))) },
            (None, None) => { "not scheduled" br; small { "no worker has taken this rep yet" } },
        }
    }
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
    // In the order of STATES: ok first, then what needs a look.
    let counts: Vec<(&str, usize)> =
        STATES.iter().map(|s| (s.as_str(), rows.iter().filter(|r| r.view.state == *s).count())).collect();
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
                th data-sort="num" { "Last cycle writes" } th data-sort="num" { "Item errors" } th data-sort="text" { "Next cycle" }
            } }
            tbody {
                @for r in &rows {
                    @let v = &r.view;
                    tr data-name=(v.rep.to_lowercase()) data-state=(v.state.as_str()) hidden[!shown(r)] {
                        td { a href={ "/reps/" (v.id) } { (v.rep) } br; small { (v.provider) " · " (v.mailbox) } }
                        td { (badge(v.state)) }
                        td { (connection(v.connection)) }
                        td data-value=(when(v.last_success)) { (at(v.last_success)) }
                        td data-value=(v.links.contacts + v.links.events) { (v.links.contacts) " contacts, " (v.links.events) " events" }
                        td { (v.last_cycle.as_ref().map_or(0, |c| c.writes())) }
                        td { (v.item_errors.iter().filter(|e| !is_skip(e)).count()) }
                        td.next data-value=(r.schedule.next_due.map_or(String::new(), |d| when(Some(d)))) { (next_cycle(&r.schedule)) }
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

/// Cycles shown on a rep page.
const HISTORY_SHOWN: usize = 10;

/// When the kind's cursors were stored: the end of the last cycle since the rep's last reset
/// (of this kind) that synced the kind to the end (a kind that fails keeps its old cursors).
fn cursors_stored(
    history: &[crmsync_core::CycleReport],
    kind: Kind,
    reset: Option<&ResetRecord>,
) -> Option<DateTime<Utc>> {
    let since = reset.filter(|r| r.scope.kinds().contains(&kind)).map(|r| r.at);
    history
        .iter()
        .filter(|c| c.started.is_some_and(|t| since.is_none_or(|s| t > s)))
        .find(|c| kind_report(c, kind).fatal.is_none())
        .and_then(|c| c.finished)
}

/// A cycle's duration: milliseconds under a second, else seconds.
fn took(d: chrono::Duration) -> String {
    match d.num_milliseconds() {
        ms if ms < 1000 => format!("{ms} ms"),
        ms => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// One cycle's counts of one kind, short.
fn counts_line(k: &KindReport) -> String {
    format!(
        "{} linked, {} created, {} updated, {} deleted, {} errors",
        k.linked,
        k.created_in_crm + k.created_in_provider,
        k.updated_in_crm + k.updated_in_provider,
        k.deleted_in_crm + k.deleted_in_provider,
        k.errors
    )
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
    let (st, history, sched) = match tokio::try_join!(
        app.store.status(&rep.id),
        app.store.history(&rep.id, crmsync_core::port::HISTORY_KEPT),
        schedule(&app, &rep.id)
    ) {
        Ok(x) => x,
        Err(e) => return internal(e.message()),
    };
    let mut kinds = vec![];
    for kind in Kind::ALL {
        let (links, cursors, errors) = match stored(&app, &rep.id, kind).await {
            Ok(x) => x,
            Err(r) => return *r,
        };
        let names = error_names(&app, rep, kind, &errors).await;
        let held: Vec<HeldDelete> = match app.store.held(&rep.id, kind).await {
            Ok(h) => h,
            Err(e) => return internal(e.message()),
        };
        kinds.push((kind, links, cursors, errors, names, held));
    }
    let notice = match n.notice.as_str() {
        "reset" => Some("Reset Sync done: links and cursors removed, no record changed. The next cycle re-links."),
        "sync" if sched.lease_holder.is_some() => Some(
            "Queued: a cycle of this rep runs now; the next one follows right after it (under the same lease rules).",
        ),
        "sync" => Some("Queued: the rep is due now; the next worker round takes them (under their lease)."),
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
            @if st.state == RepState::DeletesHeld {
                p.guidance #held-guidance { "Delete Safety held deletes of this rep (listed below); everything else synced. Review them, then "
                    code { "crmsync deletes --rep \"" (rep.name) "\" approve --as \"" (admin.name) "\"" } " applies them, or "
                    code { "… discard --as …" } " keeps the records." }
            }
            dl.facts {
                dt { "Last successful cycle" } dd #last-success { (at(st.last_success)) }
                dt { "Next cycle" } dd #next-cycle { (next_cycle(&sched)) }
                dt { "Last reset" }
                dd { @match &st.last_reset {
                    Some(r) => {
                        (at(Some(r.at))) " by " (r.admin_name) " (" (scope_name(r.scope)) ")"
                        @if let Some(v) = &r.verification { br; small class=(if v.verified { "verified" } else { "attention" }) { (v.to_string()) } }
                        @if let Some(u) = &r.undone { br; small.attention { "undone by " (u.admin_name) " " (at(Some(u.at))) } }
                    },
                    None => "never",
                } }
            }
            div.actions {
                form method="post" action={ "/reps/" (rep.id) "/sync" } {
                    input type="hidden" name="csrf" value=(admin.csrf);
                    button #sync-now type="submit" { "Sync now" }
                }
                a.button #reset href={ "/reps/" (rep.id) "/reset" } { "Reset Sync…" }
            }
        }
        @for (kind, links, cursors, errors, names, held) in &kinds {
            section.kind id={ "kind-" (kind.as_str()) } {
                h2 { (kind.as_str()) "s" }
                p { strong.links { (links.iter().filter(|l| l.state == LinkState::Linked).count()) } " linked, "
                    (links.iter().filter(|l| l.state == LinkState::Suppressed).count()) " kept out of sync by the rep" }
                p.cursors { "Cursors: "
                    @if cursors.provider.is_none() && cursors.crm.is_none() {
                        "none — the next read is full"
                    } @else {
                        "stored " @match cursors_stored(&history, *kind, st.last_reset.as_ref()) {
                            Some(t) => { (at(Some(t))) },
                            None => "(by a cycle older than the cycles the store keeps)",
                        } " — the next read is incremental"
                    } }
                @if let Some(c) = history.first() {
                    @let k = kind_report(c, *kind);
                    @if !k.skipped.is_empty() {
                        p { "Skipped in the last cycle (not errors): " @for (reason, n) in &k.skipped { span.skip { (reason) " " (n) } " " } }
                    }
                    @if let Some(f) = &k.fatal { p.bad { "The last cycle stopped this kind: " (f) } }
                }
                @if !held.is_empty() {
                    h3 { "Deletes held by Delete Safety" }
                    table.held id={ "held-" (kind.as_str()) } { thead { tr { th { "Record" } th { "Would be deleted in" } th { "Since" } th { "Verdict" } } }
                        tbody { @for h in held.iter() { tr {
                            td.record { strong { (h.label) } br; small { span.id { (h.id) } }
                                @if h.side == Side::Crm { br; a href={ (app.crm_url) "/" (h.id) } rel="noreferrer" target="_blank" { "open in the CRM" } } }
                            td { (h.side.as_str()) } td { (at(Some(h.since))) }
                            td { span class={ "badge " (match h.verdict { Verdict::Held => "st-deletes_held", Verdict::Approved => "st-error", Verdict::Discarded => "st-ok" }) } { (h.verdict.as_str()) } }
                        } } }
                    }
                    @if !k.unrelated_attendees.is_empty() {
                        p { "Attendees related to no CRM contact: " @for (a, n) in &k.unrelated_attendees { span.skip { (a) " (" (n) ")" } " " } }
                    }
                }
                @let (skips, errs): (Vec<&ItemError>, Vec<&ItemError>) = errors.iter().partition(|e| is_skip(e));
                @if errs.is_empty() { p { "No item errors." } }
                @for (id, title, list) in [("errors", "Item errors", &errs), ("skips", "Skipped, looked at again next cycle (not errors)", &skips)] {
                    @if !list.is_empty() {
                        h3 { (title) }
                        table.errors id={ (id) "-" (kind.as_str()) } { thead { tr { th { "Record" } th { "Reason" } th { "Attempts" } th { "Last seen" } } }
                            tbody { @for e in list.iter() { tr {
                                @let crm_id = if e.side == Side::Crm { Some(e.id.as_str()) } else { links.iter().find(|l| l.provider_id == e.id).map(|l| l.crm_id.as_str()) };
                                td.record {
                                    strong { (names.get(&e.id).map_or("(name unavailable)", String::as_str)) } br;
                                    small { (e.side.as_str()) " · " span.id { (e.id) } }
                                    @if let Some(id) = crm_id { br; a href={ (app.crm_url) "/" (id) } rel="noreferrer" target="_blank" { "open in the CRM" } }
                                }
                                td.reason { (e.reason.strip_prefix("skipped: ").unwrap_or(&e.reason)) } td { (e.attempts) } td { (at(Some(e.last_seen))) }
                            } } }
                        }
                    }
                }
            }
        }
        section.history {
            h2 { "Last cycles" }
            @if history.is_empty() { p { "No cycle has run yet." } } @else {
                table #history { thead { tr { th { "Started" } th { "Outcome" } th { "Contacts" } th { "Events" } th { "Requests" } } }
                    tbody { @for c in history.iter().take(HISTORY_SHOWN) { tr {
                        td { (at(c.started)) @if let (Some(s), Some(f)) = (c.started, c.finished) { br; small { (took(f - s)) } } }
                        td { (badge(c.state)) @if let Some(e) = &c.error { br; small.bad { (e) } } }
                        td { (counts_line(&c.contacts)) } td { (counts_line(&c.events)) }
                        td { "CRM " (c.requests.crm) br; "mailbox " (c.requests.provider) }
                    } } }
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

/// What a reset removes from one kind.
#[derive(Serialize)]
struct Removes {
    kind: Kind,
    links: usize,
    cursors: usize,
    item_errors: usize,
    /// Suppressions: the rep's own decisions, which a reset keeps.
    kept: usize,
}

/// What the next cycle is expected to do with one kind: the read-only plan (`Engine::dry_run`,
/// as `crmsync reset --dry-run` prints it).
#[derive(Serialize)]
struct Expected {
    kind: Kind,
    /// Planned as after the reset (links and cursors gone), or as the kind stands (outside
    /// the scope).
    after_reset: bool,
    /// Pairs per effect (`link`, `create in crm`, `update in provider`, `delete in crm`, …).
    effects: BTreeMap<&'static str, u64>,
    /// Up to three records per effect, by name.
    samples: BTreeMap<&'static str, Vec<String>>,
    skipped: BTreeMap<String, u64>,
    item_errors: Vec<crmsync_core::report::ItemErrorReport>,
    /// Records created, updated or deleted on either side.
    writes: u64,
}

/// `GET /reps/{id}/reset` and its JSON twin.
#[derive(Serialize)]
struct Preview {
    rep: String,
    scope: &'static str,
    removes: Vec<Removes>,
    /// The next cycle, per kind it syncs; empty when it could not be planned (`plan_error`).
    next_cycle: Vec<Expected>,
    plan_error: Option<String>,
}

impl Preview {
    fn writes(&self) -> u64 {
        self.next_cycle.iter().map(|e| e.writes).sum()
    }
}

fn is_write(effect: &str) -> bool {
    ["create ", "update ", "delete "].iter().any(|p| effect.starts_with(p))
}

fn expected(plan: &crmsync_core::Plan, after_reset: bool) -> Expected {
    let effects = plan.counts();
    let samples = effects
        .keys()
        .map(|e| {
            let named = plan.pairs.iter().filter(|p| p.effects().contains(e)).take(3);
            (
                *e,
                named
                    .map(|p| {
                        p.provider.as_ref().or(p.crm.as_ref()).map_or_else(|| p.label(), |i| record_name(&i.record))
                    })
                    .collect(),
            )
        })
        .collect();
    Expected {
        kind: plan.kind,
        after_reset,
        writes: effects.iter().filter(|(e, _)| is_write(e)).map(|(_, n)| n).sum(),
        effects,
        samples,
        skipped: plan.skipped().clone(),
        item_errors: plan.item_errors().to_vec(),
    }
}

async fn preview(app: &App, rep: &Rep, scope: ResetScope) -> Result<Preview, Box<Response>> {
    let mut removes = vec![];
    for kind in scope.kinds() {
        let (links, cursors, errors) = stored(app, &rep.id, *kind).await?;
        let linked = links.iter().filter(|l| l.state == LinkState::Linked).count();
        removes.push(Removes {
            kind: *kind,
            links: linked,
            cursors: usize::from(cursors.provider.is_some()) + usize::from(cursors.crm.is_some()),
            item_errors: errors.len(),
            kept: links.len() - linked,
        });
    }
    // The scope's kinds planned as after the reset, the others as they stand: the whole next
    // cycle, in cycle order, reading both sides and writing nothing.
    let planned = async {
        let mut plans: Vec<Expected> =
            app.engine.dry_run(rep, Some(scope)).await?.iter().map(|p| expected(p, true)).collect();
        for kind in synced_kinds(rep).filter(|k| !scope.kinds().contains(k)) {
            plans.push(expected(&app.engine.plan(rep, kind).await?, false));
        }
        plans.sort_by_key(|e| e.kind);
        Ok::<_, crmsync_core::Error>(plans)
    };
    let (next_cycle, plan_error) = match planned.await {
        Ok(p) => (p, None),
        Err(e) => (vec![], Some(e.message().to_owned())),
    };
    Ok(Preview { rep: rep.name.clone(), scope: scope_name(scope), removes, next_cycle, plan_error })
}

/// `GET /reps/{id}/reset?scope=…`: what a reset of this scope removes, what the next cycle is
/// expected to do, and the confirm form.
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
    let p = match preview(&app, rep, scope).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let body = html! {
        form.scope method="get" {
            label { "Scope " select #scope name="scope" {
                @for s in ["all", "contacts", "events"] { option value=(s) selected[scope_name(scope) == s] { (s) } }
            } }
            button type="submit" { "Preview" }
        }
        h2 { "What the reset removes" }
        table #removes { thead { tr { th { "Kind" } th { "Links removed" } th { "Cursors removed" } th { "Item errors and skips cleared" } th { "Kept (rep's own decisions)" } } }
            tbody { @for r in &p.removes {
                tr data-kind=(r.kind.as_str()) { td { (r.kind.as_str()) "s" } td.links { (r.links) } td { (r.cursors) } td { (r.item_errors) } td { (r.kept) } }
            } } }
        p { "No contact or event is changed by the reset itself. "
            @match rep.connection {
                ConnectionMode::AdminManaged => "The rep goes to reset_pending until the next cycle.",
                ConnectionMode::UserManaged => "The rep's grant is dropped: they go to needs_reconnect, and the next cycle runs once they connect their account again.",
            } }
        h2 { "What the next cycle is expected to do" }
        @if let Some(e) = &p.plan_error {
            p.bad #plan-error { "The next cycle could not be planned now (nothing was read or written): " (e) }
        } @else {
            p #expected-writes { @match p.writes() {
                0 => { span.badge.st-ok { "0 writes" } " Both sides agree: the next cycle re-links and writes nothing." },
                n => { span.badge.st-reset_pending { (n) @if n == 1 { " write" } @else { " writes" } } " The next cycle writes these records (planned from both sides now, nothing written yet):" },
            } }
            @for e in &p.next_cycle {
                section.expected data-kind=(e.kind.as_str()) {
                    h3 { (e.kind.as_str()) "s " small { @if e.after_reset { "(after the reset: read in full, matched again by sync key and e-mail)" } @else { "(not in the scope: as it stands)" } } }
                    @if e.effects.is_empty() && e.skipped.is_empty() && e.item_errors.is_empty() { p { "Nothing to do." } }
                    @if !e.effects.is_empty() {
                        table.plan { thead { tr { th { "Would" } th { "Records" } th { "For example" } } }
                            tbody { @for (effect, n) in &e.effects {
                                tr data-effect=(effect) class=[is_write(effect).then_some("write")] { td { (effect) } td.n { (n) } td { (e.samples.get(effect).map(|s| s.join(", ")).unwrap_or_default()) } }
                            } } }
                    }
                    @if !e.skipped.is_empty() {
                        p { "Would skip (not errors): " @for (reason, n) in &e.skipped { span.skip { (reason) " " (n) } " " } }
                    }
                    @for err in &e.item_errors { p.bad { "Item error on " (err.side) " " span.id { (err.id) } ": " (err.reason) } }
                }
            }
        }
        form method="post" action={ "/reps/" (rep.id) "/reset" } {
            input type="hidden" name="csrf" value=(admin.csrf);
            input type="hidden" name="scope" value=(scope_name(scope));
            button.danger #confirm type="submit" { "Reset Sync of " (rep.name) " (" (scope_name(scope)) ")" }
            " " a href={ "/reps/" (rep.id) } { "Cancel" }
        }
    };
    Html(layout(&format!("Reset Sync: {}", rep.name), Some(&admin), body).into_string()).into_response()
}

/// `GET /api/reps/{id}/reset-preview?scope=…`: the preview as JSON.
pub(crate) async fn api_reset_preview(
    State(app): State<Arc<App>>,
    _who: auth::Reader,
    Path(id): Path<String>,
    Query(q): Query<ScopeQuery>,
) -> Response {
    let rep = match find(&app, &id) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let Some(scope) = parse_scope(q.scope.as_deref()) else {
        return (StatusCode::BAD_REQUEST, "the scope is contacts, events or all\n").into_response();
    };
    match preview(&app, rep, scope).await {
        Ok(p) => Json(p).into_response(),
        Err(r) => *r,
    }
}

/// A change asked by a form: the session's CSRF token, a configured rep, and the admin's
/// permissions read live from the CRM (a refusal is audited).
async fn privileged<'a>(
    app: &'a App,
    who: &SignedIn,
    csrf: &str,
    id: &str,
    action: &str,
    scope: Option<ResetScope>,
) -> Result<(&'a Rep, CrmUser), Box<Response>> {
    who.check_csrf(csrf)?;
    let rep = find(app, id)?;
    let user = who.0.user();
    auth::allowed(app, &user, action, Some(&rep.id), scope).await?;
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
    let (rep, user) = match privileged(&app, &who, &f.csrf, &id, "reset", Some(scope)).await {
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

/// `POST /reps/{id}/sync`: the rep is due now; the next worker round takes them under their
/// lease, like every cycle (asked while a cycle runs, another follows right after it).
pub(crate) async fn sync_now(
    State(app): State<Arc<App>>,
    who: SignedIn,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let rep = match privileged(&app, &who, &f.csrf, &id, "sync now", None).await {
        Ok((rep, _)) => rep,
        Err(r) => return *r,
    };
    match app.store.sync_now(&rep.id, Utc::now()).await {
        Ok(()) => Redirect::to(&format!("/reps/{}?notice=sync", rep.id)).into_response(),
        Err(e) => internal(e.message()),
    }
}

/// One line of the audit: a reset or a refusal, both from the store.
#[derive(Serialize)]
struct Entry {
    at: DateTime<Utc>,
    admin: String,
    action: String,
    rep: Option<String>,
    scope: Option<&'static str>,
    links_removed: BTreeMap<String, u64>,
    outcome: String,
    /// For a reset: the result of the first complete cycle after it, as the store attached it
    /// (`None`: no such cycle yet).
    verification: Option<Verification>,
    /// The same, in words: "verified: re-linked 12 contacts, 0 writes" / "attention: …".
    verification_text: Option<String>,
    /// For a reset: who undid it, and when.
    undone: Option<Actor>,
}

async fn entries(app: &App) -> anyhow::Result<Vec<Entry>> {
    let err = |e: crmsync_core::Error| anyhow::anyhow!("{}", e.message());
    let mut out = vec![];
    for rep in &app.reps {
        let resets: Vec<ResetRecord> = app.store.resets(&rep.id).await.map_err(err)?;
        if resets.is_empty() {
            continue;
        }
        for r in resets {
            out.push(Entry {
                at: r.at,
                admin: r.admin_name,
                action: "reset".into(),
                rep: Some(rep.name.clone()),
                scope: Some(scope_name(r.scope)),
                links_removed: r.links_removed,
                outcome: if r.undone.is_some() { "undone" } else { "done" }.into(),
                verification_text: r.verification.as_ref().map(ToString::to_string),
                verification: r.verification,
                undone: r.undone,
            });
        }
    }
    for r in app.store.refusals().await.map_err(err)? {
        let rep = r.rep.map(|id| app.reps.iter().find(|x| x.id == id).map_or(id, |x| x.name.clone()));
        out.push(Entry {
            at: r.at,
            admin: r.admin_name,
            action: r.action,
            rep,
            scope: r.scope.map(scope_name),
            links_removed: BTreeMap::new(),
            outcome: r.reason,
            verification: None,
            verification_text: None,
            undone: None,
        });
    }
    out.sort_by_key(|e| std::cmp::Reverse(e.at));
    Ok(out)
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    /// Text to find in the admin, the rep, the action or the outcome.
    #[serde(default)]
    q: String,
    /// `reset`, `refused` or empty (both).
    #[serde(default)]
    outcome: String,
}

fn matches(e: &Entry, q: &AuditQuery) -> bool {
    let text = q.q.trim().to_lowercase();
    let refused = e.outcome.starts_with("refused");
    let kind = match q.outcome.as_str() {
        "reset" => e.action == "reset" && !refused,
        "refused" => refused,
        _ => true,
    };
    kind && (text.is_empty()
        || [Some(&e.admin), e.rep.as_ref(), Some(&e.action), Some(&e.outcome)]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(&text)))
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
    let shown: Vec<&Entry> = list.iter().filter(|e| matches(e, &q)).collect();
    let json = format!(
        "/api/audit?q={}&outcome={}",
        url::form_urlencoded::byte_serialize(q.q.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(q.outcome.as_bytes()).collect::<String>()
    );
    let body = html! {
        form.filters method="get" action="/audit" {
            label { "Find " input #audit-q type="search" name="q" value=(q.q) placeholder="admin, rep, outcome"; }
            label { "Show " select #audit-outcome name="outcome" {
                @for (v, label) in [("", "everything"), ("reset", "resets"), ("refused", "refusals")] {
                    option value=(v) selected[q.outcome == v] { (label) }
                }
            } }
            button type="submit" { "Filter" } " " a href=(json) { "as JSON" }
        }
        p { (shown.len()) " of " (list.len()) " entries" }
        table #audit { thead { tr { th { "When" } th { "Who" } th { "Action" } th { "Rep" } th { "Scope" } th { "Links removed" } th { "Outcome" } } }
            tbody { @for e in &shown {
                tr.entry data-action=(e.action) {
                    td { (at(Some(e.at))) br; small { (when(Some(e.at))) } } td { (e.admin) } td { (e.action) } td { (e.rep.as_deref().unwrap_or("—")) }
                    td { (e.scope.unwrap_or("—")) }
                    td { @if e.links_removed.is_empty() { "—" } @else { @for (k, n) in &e.links_removed { (n) " " (k) "s" br; } } }
                    td { @if e.outcome.starts_with("refused") { span.badge.st-error { "refused" } br; small { (e.outcome.strip_prefix("refused: ").unwrap_or(&e.outcome)) } } @else { span.badge.st-ok { (e.outcome) } }
                        @if e.action == "reset" && !e.outcome.starts_with("refused") {
                            br;
                            @match (&e.verification, &e.verification_text) {
                                (Some(v), Some(t)) => small class=(if v.verified { "verified" } else { "attention" }) { (t) " (cycle of " (when(Some(v.at))) ")" },
                                _ => small { "not verified yet: no complete cycle since" },
                            }
                            @if let Some(u) = &e.undone { br; small.attention { "undone by " (u.admin_name) " " (at(Some(u.at))) } }
                        }
                    }
                }
            } }
        }
    };
    Html(layout("Audit", Some(&admin), body).into_string()).into_response()
}

/// `GET /api/audit` (same filters).
pub(crate) async fn api_audit(
    State(app): State<Arc<App>>,
    _who: auth::Reader,
    Query(q): Query<AuditQuery>,
) -> Response {
    match entries(&app).await {
        Ok(l) => Json(serde_json::json!({ "entries": l.into_iter().filter(|e| matches(e, &q)).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => internal(format!("{e:#}")),
    }
}
