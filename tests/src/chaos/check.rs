//! The checks, computed from the fakes' own state after the run has converged.

use std::collections::BTreeMap;
use std::fmt;

use crmsync_cli::scenario::{EXCHANGE_MAILBOX, Fakes, GOOGLE_USER, Scenario};
use serde_json::Value;

use super::edits::{Model, On, emails, given, rep_of, side_contacts};

/// One broken promise: what, which record on which side, expected vs actual.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub what: String,
    pub record: String,
    pub expected: String,
    pub actual: String,
}

impl Violation {
    pub fn new(
        what: impl Into<String>,
        record: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Self {
        Self { what: what.into(), record: record.into(), expected: expected.into(), actual: actual.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]: expected {}, found {}", self.what, self.record, self.expected, self.actual)
    }
}

fn side_name(rep: usize, on: On) -> &'static str {
    match (on, rep) {
        (On::Crm, _) => "salesforce",
        (On::Provider, 0) => "exchange",
        (On::Provider, _) => "google",
    }
}

fn sync_key(v: &Value) -> Option<String> {
    if let Some(k) = v["CrmSync_Key__c"].as_str() {
        return Some(k.to_owned());
    }
    let graph = v["singleValueExtendedProperties"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(crmsync_exchange::SYNC_KEY_PROPERTY)));
    let google = v["clientData"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["key"] == crmsync_google::config::SYNC_KEY_PROPERTY);
    graph.or(google).and_then(|p| p["value"].as_str()).map(str::to_owned)
}

/// Values seen more than once, with their counts.
fn repeated(values: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::<String, usize>::new();
    for v in values.filter(|v| !v.is_empty()) {
        *seen.entry(v).or_default() += 1;
    }
    seen.retain(|_, n| *n > 1);
    seen
}

/// No side holds two records with one sync key or one normalized e-mail, except the pairs the
/// run created on one side on purpose (which stay as made and are never copied).
pub fn duplicates(f: &Fakes, sc: &Scenario, m: &Model) -> Vec<Violation> {
    let mut out = vec![];
    for rep in 0..2 {
        for on in [On::Crm, On::Provider] {
            let records = side_contacts(f, sc, rep, on);
            let side = side_name(rep, on);
            for (email, n) in repeated(records.iter().flat_map(|c| emails(c).into_iter().take(1))) {
                let allowed = m
                    .dups
                    .iter()
                    .find(|d| d.rep == rep && d.email == email)
                    .map_or(1, |d| if d.side == on { d.made } else { 1 });
                if n > allowed {
                    out.push(Violation::new(
                        format!("duplicate e-mail on {side}"),
                        &email,
                        format!("at most {allowed}"),
                        n.to_string(),
                    ));
                }
            }
            for (key, n) in repeated(records.iter().filter_map(sync_key)) {
                out.push(Violation::new(format!("duplicate sync key on {side}"), key, "1", n.to_string()));
            }
        }
    }
    let events = [("salesforce events", f.salesforce.events()), ("exchange events", f.graph.events(EXCHANGE_MAILBOX))];
    for (side, list) in events {
        for (key, n) in repeated(list.iter().filter_map(sync_key)) {
            out.push(Violation::new(format!("duplicate sync key on {side}"), key, "1", n.to_string()));
        }
    }
    let _ = GOOGLE_USER;
    out
}

/// Every edit carried: each live record is once on both sides with its last value; refused
/// records are nowhere else; events are in the CRM once with their last subject, or not at all.
pub fn lost_edits(f: &Fakes, sc: &Scenario, m: &Model) -> Vec<Violation> {
    let mut out = vec![];
    for t in m.contacts.iter().filter(|t| t.excluded.is_none()) {
        for on in [On::Crm, On::Provider] {
            let found: Vec<Value> =
                side_contacts(f, sc, t.rep, on).into_iter().filter(|c| emails(c).contains(&t.email)).collect();
            let names: Vec<String> = found.iter().map(|c| given(c).unwrap_or_default()).collect();
            if names != [t.given.clone()] {
                let edited = if t.side == on { "edited here" } else { "edited on the other side" };
                out.push(Violation::new(
                    format!("lost edit on {} ({edited})", side_name(t.rep, on)),
                    &t.email,
                    format!("one record named {:?}", t.given),
                    format!("{names:?}"),
                ));
            }
        }
    }
    for (rep, email) in &m.refused_emails {
        let crm = side_contacts(f, sc, *rep, On::Crm).iter().filter(|c| emails(c).contains(email)).count();
        if crm > 0 {
            out.push(Violation::new("invalid e-mail copied to salesforce", email, "0", crm.to_string()));
        }
    }
    for d in &m.dups {
        let other = if d.side == On::Crm { On::Provider } else { On::Crm };
        let n = side_contacts(f, sc, d.rep, other).iter().filter(|c| emails(c).contains(&d.email)).count();
        if n > 1 {
            out.push(Violation::new(
                format!("one-side duplicate copied to {}", side_name(d.rep, other)),
                &d.email,
                "at most 1",
                n.to_string(),
            ));
        }
    }
    let crm_events = f.salesforce.events();
    for e in m.events.iter().filter(|e| e.compared) {
        let owner = &rep_of(sc, e.rep).crm_user_id;
        let n = crm_events
            .iter()
            .filter(|c| c["OwnerId"].as_str() == Some(owner) && c["Subject"].as_str() == Some(&e.subject))
            .count();
        let want = usize::from(e.expected);
        if n != want {
            out.push(Violation::new("event in salesforce", &e.subject, want.to_string(), n.to_string()));
        }
    }
    out
}
