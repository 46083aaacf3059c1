//! `/metrics` in the Prometheus text format (the `metrics` facade and its Prometheus exporter).
//!
//! The console counts its own requests, resets and refusals as they happen. What the workers
//! do is read from the store at each scrape: reps by state, leases held, stored item errors and
//! resets as gauges, and each rep's last cycle — counted once, when a scrape first sees it — as
//! cycles by outcome, a cycle duration histogram, requests per service and item errors.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crmsync_core::{Kind, RepState};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::App;
use super::auth::Reader;
use super::pages::STATES;

/// The process's Prometheus recorder (one per process, installed on first use).
pub(crate) fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().ok()).as_ref()
}

/// The cycles already counted: (rep, start).
#[derive(Debug, Default)]
pub(crate) struct Seen(Mutex<HashSet<(String, DateTime<Utc>)>>);

impl Seen {
    /// True the first time this cycle is seen.
    fn first(&self, rep: &str, started: DateTime<Utc>) -> bool {
        self.0.lock().map(|mut s| s.insert((rep.to_owned(), started))).unwrap_or(false)
    }
}

/// `GET /metrics`: a session or the bearer token, like `/api/*`.
pub(crate) async fn scrape(State(app): State<Arc<App>>, _who: Reader) -> Response {
    let Some(handle) = recorder() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder unavailable\n").into_response();
    };
    match observe(&app).await {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unreachable: {}\n", e.message())).into_response(),
    }
}

async fn observe(app: &App) -> crmsync_core::Result<()> {
    let now = Utc::now();
    let statuses = app.store.statuses().await?;
    let state_of = |id: &str| statuses.iter().find(|s| s.rep == id).map_or(RepState::Ok, |s| s.state);
    for s in STATES {
        let n = app.reps.iter().filter(|r| state_of(&r.id) == s).count();
        gauge!("crmsync_reps", "state" => s.as_str()).set(n as f64);
    }
    let (mut leases, mut resets) = (0u64, 0u64);
    let mut stored_errors = [0u64; 2];
    for r in &app.reps {
        leases += u64::from(app.store.lease(&r.id, now).await?.is_some());
        resets += app.store.resets(&r.id).await?.len() as u64;
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            stored_errors[i] += app.store.item_errors(&r.id, kind).await?.len() as u64;
        }
    }
    gauge!("crmsync_leases_held").set(leases as f64);
    gauge!("crmsync_resets_stored").set(resets as f64);
    for (i, kind) in Kind::ALL.into_iter().enumerate() {
        gauge!("crmsync_item_errors_stored", "kind" => kind.as_str()).set(stored_errors[i] as f64);
    }
    for c in statuses.iter().filter_map(|s| s.last_report.as_ref()) {
        let Some(started) = c.started else { continue };
        if !app.seen.first(&c.rep, started) {
            continue;
        }
        let outcome = if c.error.is_some() { "failed" } else { c.state.as_str() };
        counter!("crmsync_cycles_total", "outcome" => outcome).increment(1);
        if let Some(end) = c.finished {
            histogram!("crmsync_cycle_duration_seconds").record((end - started).as_seconds_f64().max(0.0));
        }
        counter!("crmsync_requests_total", "service" => "crm").increment(c.requests.crm);
        counter!("crmsync_requests_total", "service" => c.provider.clone()).increment(c.requests.provider);
        counter!("crmsync_item_errors_total", "kind" => "contact").increment(c.contacts.errors);
        counter!("crmsync_item_errors_total", "kind" => "event").increment(c.events.errors);
        counter!("crmsync_cycle_writes_total").increment(c.writes());
    }
    Ok(())
}
