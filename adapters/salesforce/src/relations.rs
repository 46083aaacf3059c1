//! Shared Activities: an Event relates to the rep's contacts among its attendees.
//!
//! The contacts are those of the rep (`OwnerId`) whose e-mail is an attendee's, looked up in one
//! query per batch. At most [`MAX_RELATED`] contacts are related (the org's limit). The primary,
//! `WhoId`, is the contact of the attendee whose address sorts first; an address several of
//! the rep's contacts share relates the oldest of them (`CreatedDate`, then `Id`). The others
//! are `EventRelation` rows (`IsParent = true`, `IsInvitee = false`), written in sObject
//! Collections requests batched into `/composite` calls. The Event's contact relations are
//! exactly these: a relation to a contact that is no (longer an) attendee is deleted when the
//! attendees are written.

use std::collections::{BTreeSet, HashMap};

use crmsync_core::{Error, ErrorKind, Result};
use reqwest::Method;
use serde_json::{Value, json};

use crate::collection::{MAX_BATCH, SfCollection, record_error};
use crate::soql::{self, quote};

/// The most contacts an Event can be related to with Shared Activities.
pub const MAX_RELATED: usize = 50;
/// The most subrequests of one `/composite` call.
const MAX_SUBREQUESTS: usize = 25;

/// The contacts an event with `attendees` relates to, primary first: (e-mail, contact id).
pub(crate) fn related(attendees: &[String], contacts: &HashMap<String, String>) -> Vec<(String, String)> {
    let sorted: BTreeSet<String> = attendees.iter().filter_map(|a| crmsync_core::model::normalize_email(a)).collect();
    let mut ids = BTreeSet::new();
    sorted
        .into_iter()
        .filter_map(|e| contacts.get(&e).map(|id| (e, id.clone())))
        .filter(|(_, id)| ids.insert(id[..id.len().min(15)].to_owned()))
        .take(MAX_RELATED)
        .collect()
}

/// One relation to write: create (event id, contact id) or delete (relation id).
#[derive(Debug)]
pub(crate) enum RelOp {
    Create { event: String, contact: String },
    Delete(String),
}

/// An existing contact relation of an event.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    pub id: String,
    pub event: String,
    pub contact: String,
}

impl SfCollection {
    /// The contact relations (`IsParent`, not a What, to a Contact) of `events`: one query per
    /// ~12 kB of ids.
    pub(crate) async fn relations(&self, events: &[String]) -> Result<Vec<Relation>> {
        let base = "SELECT Id, EventId, RelationId FROM EventRelation WHERE IsParent = true AND IsWhat = false AND EventId IN ";
        let mut out = vec![];
        for chunk in self.chunks(soql::encoded_len(base) + 32, events.iter().map(|e| quote(e)).collect()) {
            let q = format!("{base}{} ORDER BY CreatedDate, Id", soql::in_list(&chunk));
            for row in self.client.query(&self.requests, &q, false).await?.records {
                let f = |k: &str| row.get(k).and_then(Value::as_str).map(str::to_owned);
                if let (Some(id), Some(event), Some(contact)) = (f("Id"), f("EventId"), f("RelationId"))
                    && contact.starts_with("003")
                {
                    out.push(Relation { id, event, contact });
                }
            }
        }
        Ok(out)
    }

    /// Run relation writes: creates in sObject Collections POSTs and deletes in Collections
    /// DELETEs of ≤ 200, up to 25 of them per `/composite` call. Returns one result per op, in
    /// order. Creating a relation that exists and deleting one that is gone succeed.
    pub(crate) async fn write_relations(&self, ops: &[RelOp]) -> Result<Vec<Result<()>>> {
        let mut subs: Vec<(Value, Vec<usize>)> = vec![];
        let creates: Vec<usize> = (0..ops.len()).filter(|i| matches!(ops[*i], RelOp::Create { .. })).collect();
        let deletes: Vec<usize> = (0..ops.len()).filter(|i| matches!(ops[*i], RelOp::Delete(_))).collect();
        for chunk in creates.chunks(MAX_BATCH) {
            let records: Vec<Value> = chunk
                .iter()
                .filter_map(|i| match &ops[*i] {
                    RelOp::Create { event, contact } => Some(json!({
                        "attributes": {"type": "EventRelation"},
                        "EventId": event, "RelationId": contact, "IsParent": true, "IsInvitee": false,
                    })),
                    RelOp::Delete(_) => None,
                })
                .collect();
            let url = self.client.data_path("/composite/sobjects");
            subs.push((
                json!({"method": "POST", "url": url, "referenceId": format!("rel{}", subs.len()),
                       "body": {"allOrNone": false, "records": records}}),
                chunk.to_vec(),
            ));
        }
        for chunk in deletes.chunks(MAX_BATCH) {
            let ids: Vec<&str> = chunk
                .iter()
                .filter_map(|i| match &ops[*i] {
                    RelOp::Delete(id) => Some(id.as_str()),
                    RelOp::Create { .. } => None,
                })
                .collect();
            let url = format!("{}?ids={}&allOrNone=false", self.client.data_path("/composite/sobjects"), ids.join(","));
            subs.push((
                json!({"method": "DELETE", "url": url, "referenceId": format!("rel{}", subs.len())}),
                chunk.to_vec(),
            ));
        }
        let mut out: Vec<Option<Result<()>>> = ops.iter().map(|_| None).collect();
        for call in subs.chunks(MAX_SUBREQUESTS) {
            let req = json!({"allOrNone": false, "compositeRequest": call.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>()});
            let raw = self
                .client
                .call(&self.requests, Method::POST, &self.client.data_path("/composite"), &[], Some(&req))
                .await?;
            let resp = raw.json("salesforce")?;
            let answers = resp.get("compositeResponse").and_then(Value::as_array).cloned().unwrap_or_default();
            for ((_, idx), ans) in call.iter().zip(answers.iter().map(Some).chain(std::iter::repeat(None))) {
                let status = ans.and_then(|a| a.get("httpStatusCode")).and_then(Value::as_u64).unwrap_or(0) as u16;
                let body = ans.and_then(|a| a.get("body")).cloned().unwrap_or(Value::Null);
                let results = body.as_array().cloned().unwrap_or_default();
                for (pos, i) in idx.iter().enumerate() {
                    out[*i] = Some(if status >= 300 || ans.is_none() {
                        Err(crate::client::parse_error(status, &reqwest::header::HeaderMap::new(), &body.to_string()))
                    } else {
                        match results.get(pos) {
                            Some(r) if r.get("success").and_then(Value::as_bool) == Some(true) => Ok(()),
                            Some(r) => {
                                let e = record_error(r);
                                let m = e.message();
                                let harmless = m.contains("DUPLICATE_VALUE")
                                    || (matches!(ops[*i], RelOp::Delete(_))
                                        && (e.kind() == ErrorKind::NotFound
                                            || m.contains("INVALID_CROSS_REFERENCE_KEY")));
                                if harmless { Ok(()) } else { Err(e) }
                            }
                            None => {
                                Err(Error::unexpected("salesforce: relation answer has fewer results than records"))
                            }
                        }
                    });
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::unexpected("salesforce: relation not written"))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_is_the_first_address_and_the_limit_holds() {
        let contacts: HashMap<String, String> = (0..60)
            .map(|i| (format!("c{i:02}@x.io"), format!("003000000000{i:03}AAA")))
            .chain([("zed@x.io".to_owned(), "003000000000000AAA".to_owned())])
            .collect();
        let mut attendees: Vec<String> = (0..60).rev().map(|i| format!("C{i:02}@X.io")).collect();
        attendees.push("nobody@x.io".into());
        let r = related(&attendees, &contacts);
        assert_eq!(r.len(), MAX_RELATED);
        assert_eq!(r[0].0, "c00@x.io", "sorted by address, whatever the attendee order");
        // Two addresses of one contact relate it once.
        let r = related(&["zed@x.io".into(), "c00@x.io".into()], &contacts);
        assert_eq!(r.len(), 1);
    }
}
