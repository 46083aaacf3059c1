//! `$orderby` on the fake's folder, contact and event lists, and the names Exchange generates for a
//! contact (`displayName` from the name parts when none is given).
//!
//! `$orderby=prop [asc|desc], …` sorts by structural properties of the entity type; `start/dateTime`
//! style paths reach into complex ones. A property the type does not have is a 400, as on Graph.
//! Text sorts case-insensitively, a missing value first (OData's order for nulls).

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::state::{Req, Resp, error};

/// The entity types of the Graph schema the fake serves.
const CSDL: &str = include_str!("../../tests/data/msgraph-v1.0-contact-event-excerpt.csdl.xml");

/// The structural properties of `ty` and its base types, from the schema.
fn properties(ty: &str) -> Vec<&'static str> {
    let Some(start) = CSDL.find(&format!("<EntityType Name=\"{ty}\"")) else { return vec![] };
    let body: &'static str = &CSDL[start..];
    let body = &body[..body.find("</EntityType>").unwrap_or(body.len())];
    let mut out: Vec<&'static str> =
        body.split("<Property Name=\"").skip(1).filter_map(|p| p.split('"').next()).collect();
    if let Some(base) = body.split("BaseType=\"graph.").nth(1).and_then(|b| b.split('"').next()) {
        out.extend(properties(base));
    }
    out
}

/// Sort `items` by the request's `$orderby` (none: as they are). `entity` is the schema's
/// entity type: `contact`, `contactFolder` or `event`.
pub(super) fn ordered(mut items: Vec<Value>, r: &Req, entity: &str) -> Result<Vec<Value>, Resp> {
    let Some(spec) = r.q("$orderby").filter(|s| !s.trim().is_empty()) else { return Ok(items) };
    let known = properties(entity);
    let mut keys: Vec<(Vec<String>, bool)> = vec![];
    for part in spec.split(',') {
        let mut words = part.split_whitespace();
        let path = words.next().unwrap_or_default();
        let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(error(400, "BadRequest", &format!("Invalid $orderby direction '{other}'.")));
            }
        };
        let segs: Vec<String> = path.split('/').map(str::to_owned).collect();
        if !known.iter().any(|p| p.eq_ignore_ascii_case(&segs[0])) {
            return Err(error(
                400,
                "BadRequest",
                &format!("Could not find a property named '{}' on type 'microsoft.graph.{entity}'.", segs[0]),
            ));
        }
        keys.push((segs, desc));
    }
    items.sort_by(|a, b| {
        keys.iter()
            .map(|(path, desc)| {
                let o = compare(lookup(a, path), lookup(b, path));
                if *desc { o.reverse() } else { o }
            })
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
    Ok(items)
}

/// The value at a property path, matching names case-insensitively as Graph does.
fn lookup<'a>(v: &'a Value, path: &[String]) -> &'a Value {
    path.iter().fold(v, |v, seg| {
        v.as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(seg)).map(|(_, v)| v))
            .unwrap_or(&Value::Null)
    })
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            compare(x.first().unwrap_or(&Value::Null), y.first().unwrap_or(&Value::Null))
        }
        _ => Ordering::Equal,
    }
}

/// What a new contact is shown and filed as. Exchange generates `displayName` from the name
/// parts ("Pavel Bansky" from `givenName` Pavel and `surname` Bansky) when the request has
/// none, falling back to the company and then the first e-mail address; `fileAs` is kept as
/// given, else empty (Graph does not derive it).
pub(super) fn name_new_contact(v: &mut Value) {
    if v["displayName"].as_str().is_none_or(str::is_empty) {
        v["displayName"] = json!(generated_name(v));
    }
    if !v["fileAs"].is_string() {
        v["fileAs"] = json!("");
    }
}

/// After a PATCH: a change to the name parts without a `displayName` in the same request
/// regenerates it ("later updates to other properties may cause an automatically generated
/// value to overwrite the displayName").
pub(super) fn rename_after_patch(v: &mut Value, patch: &serde_json::Map<String, Value>) {
    let renamed = ["givenName", "middleName", "surname", "generation"].iter().any(|k| patch.contains_key(*k));
    if renamed && !patch.contains_key("displayName") {
        v["displayName"] = json!(generated_name(v));
    }
}

fn generated_name(v: &Value) -> String {
    let parts: Vec<&str> = ["givenName", "middleName", "surname", "generation"]
        .iter()
        .filter_map(|k| v[*k].as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !parts.is_empty() {
        return parts.join(" ");
    }
    v["companyName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| v["emailAddresses"][0]["address"].as_str())
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_the_properties() {
        let c = properties("contact");
        assert!(c.contains(&"surname") && c.contains(&"displayName") && c.contains(&"createdDateTime"), "{c:?}");
        assert!(c.contains(&"id"));
        assert!(properties("contactFolder").contains(&"displayName"));
        let e = properties("event");
        assert!(e.contains(&"start") && e.contains(&"subject") && !e.contains(&"surname"), "{e:?}");
    }

    #[test]
    fn names_are_generated_from_the_parts() {
        let mut v = json!({"givenName": "Pavel", "surname": "Bansky"});
        name_new_contact(&mut v);
        assert_eq!((v["displayName"].as_str(), v["fileAs"].as_str()), (Some("Pavel Bansky"), Some("")));
        let mut v = json!({"displayName": "P.B.", "givenName": "Pavel", "fileAs": "Bansky, Pavel"});
        name_new_contact(&mut v);
        assert_eq!((v["displayName"].as_str(), v["fileAs"].as_str()), (Some("P.B."), Some("Bansky, Pavel")));
        let patch = json!({"surname": "Novak"});
        v["surname"] = json!("Novak");
        rename_after_patch(&mut v, patch.as_object().unwrap());
        assert_eq!(v["displayName"], "Pavel Novak");
        let mut v = json!({"emailAddresses": [{"address": "x@y.z"}]});
        name_new_contact(&mut v);
        assert_eq!(v["displayName"], "x@y.z");
    }
}
