//! The control API every fake serves under [`PREFIX`] (`/_crmsync/`), a path no real API uses:
//! health, reset to the seed, snapshots, fault rules and the request log, plus each fake's own
//! routes ([`Service::control`](crate::Service::control): users, mailboxes, scenarios).
//! Control requests are not counted, logged or faulted.

use std::sync::Mutex;

use serde_json::{Value, json};
use wiremock::Request;

use crate::chassis::{Chassis, Reply};
use crate::{FaultRule, LogEntry, Rng, Schedule};

/// What the handle and the control API can do to any fake's state without knowing its type.
pub(crate) trait Control: Send + Sync {
    fn started(&self, uri: &str);
    fn expire_tokens(&self);
    fn expire_cursors(&self);
    /// Save the current state as snapshot `name` (the seed is [`SEED`]).
    fn save(&self, name: &str);
    /// Become snapshot `name`; false if there is none.
    fn restore(&self, name: &str) -> bool;
    /// The snapshot names.
    fn saved(&self) -> Vec<String>;
    /// The fake's own control routes.
    fn service_control(&self, method: &str, path: &str, body: &[u8]) -> Option<Reply>;
}

/// The snapshot `POST /_crmsync/reset` and [`Handle::reset`] return to.
pub const SEED: &str = "seed";

/// The path prefix of the control API.
pub const PREFIX: &str = "/_crmsync/";

/// The control API's error reply: `{"error": code, "message": …}`.
pub fn control_error(status: u16, code: &str, message: impl Into<String>) -> Reply {
    Reply::json(status, json!({"error": code, "message": message.into()}))
}

/// A control request's JSON body as `T`, or the 400 reply naming what is wrong.
pub fn control_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    serde_json::from_slice(body).map_err(|e| bad(format!("body: {e}")))
}

/// One mailbox (user) of a scenario, as the Graph and Google fakes' `POST /_crmsync/seed` take
/// it: its address, the contact containers to create (Graph child folders, Google contact
/// groups), and its contacts and events in the service's own JSON, each contact naming its
/// container(s) under the key its fake documents.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxScenario {
    /// The mailbox address (`email` is accepted too).
    #[serde(alias = "email")]
    pub address: String,
    /// Contact containers to create (`folders` or `groups`).
    #[serde(default, alias = "folders", alias = "groups")]
    pub containers: Vec<String>,
    /// Contacts, the service's JSON.
    #[serde(default)]
    pub contacts: Vec<serde_json::Map<String, Value>>,
    /// Events, the service's JSON.
    #[serde(default)]
    pub events: Vec<serde_json::Map<String, Value>>,
}

fn bad(message: impl Into<String>) -> Reply {
    control_error(400, "bad_request", message)
}

/// Serve a control request; `None` when `req` is not one.
pub(crate) fn route(chassis: &Mutex<Chassis>, fake: &dyn Control, req: &Request) -> Option<Reply> {
    let rest = req.url.path().strip_prefix(PREFIX)?.trim_end_matches('/');
    let mut ch = chassis.lock().unwrap_or_else(|e| e.into_inner());
    let body = &req.body;
    Some(match (req.method.as_str(), rest) {
        ("GET", "health") => Reply::json(
            200,
            json!({"status": "ok", "requests": ch.total, "faults_pending": ch.rules.list().len(),
                   "snapshots": fake.saved()}),
        ),
        ("POST", "reset") => {
            fake.restore(SEED);
            ch.reset();
            Reply::json(200, json!({"reset": SEED}))
        }
        ("POST", "seed") => load_scenario(fake, body),
        ("GET", "snapshot") => Reply::json(200, json!({"snapshots": fake.saved()})),
        ("POST", "snapshot") => match snapshot_name(body) {
            Ok(name) => {
                fake.save(&name);
                Reply::json(201, json!({"name": name}))
            }
            Err(e) => bad(e),
        },
        ("POST", "restore") => match snapshot_name(body) {
            Ok(name) if fake.restore(&name) => Reply::json(200, json!({"restored": name})),
            Ok(name) => control_error(404, "not_found", format!("no snapshot named {name:?}")),
            Err(e) => bad(e),
        },
        ("GET", "faults") => Reply::json(200, json!({"faults": ch.rules.list(), "fired": ch.fired})),
        ("POST", "faults") => match fault_rules(body) {
            Ok((rules, seed)) => {
                if let Some(seed) = seed {
                    ch.rng = Rng::new(seed);
                }
                for rule in rules {
                    ch.rules.add(rule);
                }
                Reply::json(201, json!({"faults": ch.rules.list()}))
            }
            Err(e) => bad(e),
        },
        ("DELETE", "faults") => {
            ch.rules.clear();
            Reply::empty(204)
        }
        ("GET", "requests") => match LogFilter::parse(req) {
            Ok(filter) => Reply::json(200, json!({"requests": filter.apply(ch.log.entries())})),
            Err(e) => bad(e),
        },
        ("DELETE", "requests") => {
            ch.log.clear();
            Reply::empty(204)
        }
        (method, path) => fake
            .service_control(method, path, body)
            .unwrap_or_else(|| control_error(404, "not_found", format!("no control route {method} {PREFIX}{path}"))),
    })
}

/// Load a scenario through the fake's `POST seed` route; when it loads, the result is the seed.
pub(crate) fn load_scenario(fake: &dyn Control, body: &[u8]) -> Reply {
    match fake.service_control("POST", "seed", body) {
        Some(r) if r.status < 300 => {
            fake.save(SEED);
            r
        }
        Some(r) => r,
        None => control_error(404, "not_found", "this fake loads no scenarios"),
    }
}

/// `{"name": …}`, or `default` for an empty body.
fn snapshot_name(body: &[u8]) -> Result<String, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("default".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    match v.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err("body: expected {\"name\": \"…\"}".into()),
    }
}

/// A rule, a list of rules, or `{"seed": N, "rules": […]}` (the seed reseeds the generator
/// that draws rate rules).
pub(crate) fn fault_rules(body: &[u8]) -> Result<(Vec<FaultRule>, Option<u64>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("fault rules: {e}"))?;
    let (rules, seed) = match v {
        Value::Array(_) => (serde_json::from_value(v), None),
        Value::Object(ref m) if m.contains_key("rules") => {
            let seed = match m.get("seed") {
                None => None,
                Some(s) => Some(s.as_u64().ok_or("fault rules: seed must be a non-negative integer")?),
            };
            (serde_json::from_value(m["rules"].clone()), seed)
        }
        _ => (serde_json::from_value(v).map(|r| vec![r]), None),
    };
    let rules: Vec<FaultRule> = rules.map_err(|e| format!("fault rules: {e}"))?;
    if let Some(r) =
        rules.iter().find(|r| matches!(r.schedule, Schedule::Rate { rate } if !(0.0..=1.0).contains(&rate)))
    {
        return Err(format!("fault rules: rate must be within 0..=1 ({:?})", r.schedule));
    }
    Ok((rules, seed))
}

/// `GET /_crmsync/requests?method=&path=&endpoint=&status=&limit=`.
#[derive(Default)]
struct LogFilter {
    method: Option<String>,
    path: Option<String>,
    endpoint: Option<String>,
    status: Option<u16>,
    limit: Option<usize>,
}

impl LogFilter {
    fn parse(req: &Request) -> Result<Self, String> {
        let mut f = Self::default();
        for (k, v) in req.url.query_pairs() {
            match k.as_ref() {
                "method" => f.method = Some(v.into_owned()),
                "path" => f.path = Some(v.into_owned()),
                "endpoint" => f.endpoint = Some(v.into_owned()),
                "status" => f.status = Some(v.parse().map_err(|_| format!("status: not a status code: {v}"))?),
                "limit" => f.limit = Some(v.parse().map_err(|_| format!("limit: not a count: {v}"))?),
                other => return Err(format!("unknown filter {other:?} (method, path, endpoint, status, limit)")),
            }
        }
        Ok(f)
    }

    /// The matching entries, oldest first; with `limit`, the newest that many.
    fn apply(&self, entries: Vec<LogEntry>) -> Vec<LogEntry> {
        let mut hits: Vec<LogEntry> = entries
            .into_iter()
            .filter(|e| self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(&e.method)))
            .filter(|e| self.path.as_deref().is_none_or(|p| e.path.starts_with(p)))
            .filter(|e| self.endpoint.as_deref().is_none_or(|p| e.endpoint == p))
            .filter(|e| self.status.is_none_or(|s| s == e.status))
            .collect();
        if let Some(n) = self.limit {
            hits.drain(..hits.len().saturating_sub(n));
        }
        hits
    }
}
