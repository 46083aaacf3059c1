//! What the chassis keeps per fake (counters, fault rules, the generator, the request log) and
//! what a fake answers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use wiremock::ResponseTemplate;

use crate::Fault;
use crate::Rng;
use crate::fault::Rules;
use crate::log::Log;

/// What a fake answers: status, headers and a body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// The body bytes and their content type (`None`: no body).
    pub body: Option<(Vec<u8>, String)>,
}

impl Reply {
    /// No body.
    pub fn empty(status: u16) -> Self {
        Self { status, headers: vec![], body: None }
    }

    /// A JSON body.
    pub fn json(status: u16, body: Value) -> Self {
        Self::raw(status, serde_json::to_vec(&body).unwrap_or_default(), "application/json")
    }

    /// Raw bytes with a content type.
    pub fn raw(status: u16, body: Vec<u8>, content_type: &str) -> Self {
        Self { status, headers: vec![], body: Some((body, content_type.to_owned())) }
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The body parsed as JSON (`Null` when there is none or it is not JSON).
    pub fn json_body(&self) -> Value {
        self.body.as_ref().and_then(|(b, _)| serde_json::from_slice(b).ok()).unwrap_or(Value::Null)
    }

    pub(crate) fn template(self, cut: bool, delay_ms: u64) -> ResponseTemplate {
        let mut t = ResponseTemplate::new(self.status);
        for (k, v) in &self.headers {
            t = t.insert_header(k.as_str(), v.as_str());
        }
        t = match self.body {
            // Promise more bytes than are sent, and close the connection after them: the client
            // sees it close mid-body (without `close`, a release build's server would keep the
            // connection open, and the client would wait for the rest until its timeout).
            _ if cut => t
                .insert_header("content-length", "4096")
                .insert_header("connection", "close")
                .set_body_raw(b"{\"value\":[".to_vec(), "application/json"),
            Some((b, ct)) => t.set_body_raw(b, ct.as_str()),
            None => t,
        };
        if delay_ms > 0 { t.set_delay(Duration::from_millis(delay_ms)) } else { t }
    }
}

/// A fake service's state, served by the chassis. It is `Clone` so the chassis can keep
/// snapshots of it (the seed, named snapshots) and restore them.
/// What the chassis keeps per fake: counters, fault rules, the generator, the request log.
#[derive(Debug, Default)]
pub struct Chassis {
    pub(crate) total: u64,
    pub(crate) counters: BTreeMap<String, u64>,
    pub(crate) rules: Rules,
    pub(crate) rng: Rng,
    pub(crate) fired: u64,
    pub(crate) log: Log,
}

impl Chassis {
    /// No pending faults, counters zeroed, the request log empty (the generator keeps its seed).
    pub(crate) fn reset(&mut self) {
        self.rules.clear();
        self.total = 0;
        self.fired = 0;
        self.counters.clear();
        self.log.clear();
    }

    /// Count a request (or sub-request) to `endpoint`.
    pub fn count(&mut self, endpoint: &str) {
        *self.counters.entry(endpoint.to_owned()).or_default() += 1;
    }

    /// Count a sub-request of a batch and draw its fault: only rules naming an endpoint apply
    /// to sub-requests.
    pub fn sub_request(&mut self, method: &str, endpoint: &str) -> Option<Fault> {
        self.count(endpoint);
        let fault = self.rules.draw(&mut self.rng, method, endpoint, true);
        self.fired += u64::from(fault.is_some());
        fault
    }

    /// The fake's seeded generator.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub(crate) fn request(&mut self, method: &str, endpoint: &str) -> (u64, Option<Fault>) {
        self.total += 1;
        self.count(endpoint);
        let fault = self.rules.draw(&mut self.rng, method, endpoint, false);
        self.fired += u64::from(fault.is_some());
        (self.total, fault)
    }
}
