//! The People reads beyond the contact list: `people/me` (the signed-in user's profile),
//! `people:searchContacts` (with the service's search cache, refreshed by a warm-up request
//! with an empty query), and the `sortOrder` of `connections.list`.

use std::collections::{BTreeMap, BTreeSet};

use crmsync_fake::Reply;
use serde_json::{Value, json};

use super::people::{MY_CONTACTS, PersonRec, render};
use super::routes::{mask, people_error, q1};
use super::state::State;

fn invalid(msg: &str) -> Reply {
    people_error(400, "INVALID_ARGUMENT", msg, None)
}

/// A stable numeric profile id for a user (FNV-1a of the address).
fn profile_id(user: &str) -> String {
    let h = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("1{h:020}")
}

/// `GET v1/people/me`: the user's own profile, `names` and `emailAddresses` from the account.
pub(crate) fn me(user: &str, fields: &BTreeSet<String>) -> Reply {
    let id = profile_id(user);
    let etag = format!("%EgUBAi43PRoEAQIFByIM{}", &id[..8]);
    let src = json!({"type": "PROFILE", "id": id});
    let name = user.split('@').next().unwrap_or(user);
    let mut v = json!({"resourceName": format!("people/{id}"), "etag": etag});
    for f in fields {
        match f.as_str() {
            "metadata" => {
                v["metadata"] = json!({"sources": [{"type": "PROFILE", "id": id, "etag": etag,
                    "profileMetadata": {"objectType": "PERSON", "userTypes": ["GOOGLE_USER"]}}], "objectType": "PERSON"});
            }
            "names" => {
                v["names"] = json!([{"metadata": {"primary": true, "source": src}, "displayName": name,
                    "givenName": name, "displayNameLastFirst": name, "unstructuredName": name}]);
            }
            "emailAddresses" => {
                v["emailAddresses"] = json!([{"metadata": {"primary": true, "verified": true,
                    "source": {"type": "ACCOUNT", "id": id}}, "value": user}]);
            }
            _ => {}
        }
    }
    Reply::json(200, v)
}

/// The texts a search matches on: names, nicknames, addresses, numbers and organizations.
fn search_texts(p: &PersonRec) -> Vec<String> {
    let mut out = vec![];
    let mut add = |field: &str, keys: &[&str]| {
        for it in p.fields.get(field).and_then(Value::as_array).into_iter().flatten() {
            for k in keys {
                if let Some(s) = it[*k].as_str().filter(|s| !s.is_empty()) {
                    out.push(s.to_lowercase());
                }
            }
        }
    };
    add("names", &["givenName", "familyName", "middleName", "unstructuredName"]);
    add("nicknames", &["value"]);
    add("emailAddresses", &["value"]);
    add("phoneNumbers", &["value"]);
    add("organizations", &["name", "title", "department"]);
    if let Some(n) = p.fields.get("names").and_then(|n| n[0].as_object()) {
        let full: Vec<&str> =
            ["givenName", "familyName"].iter().filter_map(|k| n.get(*k).and_then(Value::as_str)).collect();
        out.push(full.join(" ").to_lowercase());
    }
    out
}

/// "Prefix phrases": the query starts at the start of a word of the text (`foo n` and `nam`
/// match `foo name`; `oo n` does not).
fn prefix_phrase(text: &str, query: &str) -> bool {
    text.char_indices()
        .filter(|(i, _)| *i == 0 || !text[..*i].chars().next_back().is_some_and(char::is_alphanumeric))
        .any(|(i, _)| text[i..].starts_with(query))
}

/// `GET v1/people:searchContacts`. The service searches a per-user cache that a request with
/// an empty `query` refreshes (its answer is empty); a contact created or edited after the last
/// warm-up is found by what it was then, or not at all.
pub(crate) fn search(st: &mut State, user: &str, q: &BTreeMap<String, Vec<String>>) -> Reply {
    let fields = mask(q1(q, "readMask"));
    if fields.is_empty() {
        return invalid("readMask is required. Please specify one or more valid paths.");
    }
    if let Some(bad) = fields.iter().find(|f| !super::people::READABLE.contains(&f.as_str())) {
        return invalid(&format!("Invalid readMask path \"{bad}\"."));
    }
    let Some(query) = q1(q, "query") else { return invalid("query is required.") };
    let size = match q1(q, "pageSize").map(str::parse::<usize>) {
        None | Some(Ok(0)) => 10,
        Some(Ok(n)) => n.min(30),
        Some(Err(_)) => return invalid("Invalid value at 'page_size' (TYPE_INT32)."),
    };
    let u = st.user(user).expect("checked by the router");
    let query = query.trim().to_lowercase();
    if query.is_empty() {
        u.search_cache = u
            .persons
            .iter()
            .filter(|(_, p)| !p.deleted && p.groups.contains(MY_CONTACTS))
            .map(|(rn, p)| (rn.clone(), search_texts(p)))
            .collect();
        return Reply::json(200, json!({}));
    }
    let results: Vec<Value> = u
        .search_cache
        .iter()
        .filter(|(_, texts)| texts.iter().any(|t| prefix_phrase(t, &query)))
        .filter_map(|(rn, _)| u.persons.get(rn).filter(|p| !p.deleted))
        .take(size)
        .map(|p| json!({"person": render(p, &fields)}))
        .collect();
    Reply::json(200, if results.is_empty() { json!({}) } else { json!({ "results": results }) })
}

/// The `sortOrder` of `connections.list`, applied to the listed people. `Err` for a value the
/// API does not know.
pub(crate) fn sort(all: &mut [&PersonRec], order: Option<&str>) -> Result<(), Reply> {
    let name = |p: &PersonRec, k: &str| {
        p.fields.get("names").and_then(|n| n[0][k].as_str()).map(str::to_lowercase).unwrap_or_default()
    };
    match order {
        None => {}
        Some("LAST_MODIFIED_ASCENDING") => all.sort_by_key(|p| p.seq),
        Some("LAST_MODIFIED_DESCENDING") => all.sort_by_key(|p| std::cmp::Reverse(p.seq)),
        // People without the name sort last.
        Some("FIRST_NAME_ASCENDING") => all.sort_by_key(|p| (name(p, "givenName").is_empty(), name(p, "givenName"))),
        Some("LAST_NAME_ASCENDING") => all.sort_by_key(|p| (name(p, "familyName").is_empty(), name(p, "familyName"))),
        Some(other) => {
            return Err(invalid(&format!(
                "Invalid value at 'sort_order' (type.googleapis.com/google.people.v1.ListConnectionsRequest.SortOrder), \"{other}\""
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_phrases_start_at_words() {
        for q in ["f", "foo", "foo n", "nam"] {
            assert!(prefix_phrase("foo name", q), "{q}");
        }
        assert!(!prefix_phrase("foo name", "oo n"));
        assert!(prefix_phrase("bo.li@example.com", "example"));
        assert_eq!(profile_id("a@b.c"), profile_id("a@b.c"));
        assert_eq!(profile_id("a@b.c").len(), 21);
    }
}
