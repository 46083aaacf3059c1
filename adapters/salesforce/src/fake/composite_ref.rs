//! `@{referenceId.path}` references between the subrequests of `POST /composite`: `.field`
//! reads a field of an earlier subrequest's response body, `[n]` an item of a list
//! (`@{newContact.id}`, `@{found.records[0].Id}`).

use serde_json::{Map, Value};

/// The message of a subrequest whose reference does not resolve.
pub(super) fn unresolved(expr: &str) -> String {
    let name = expr.split(['.', '[']).next().unwrap_or(expr);
    format!("Invalid reference specified. No value for {expr} found in {name}.")
}

/// `v` with every reference replaced by what it names in `done` (reference id → response
/// body). A string that is one whole reference takes the referenced value as is (a number
/// stays a number); references inside longer strings are spliced in as text. `Err` names the
/// first reference that does not resolve.
pub(super) fn substitute(v: &Value, done: &Map<String, Value>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => {
            if let Some(expr) = s.strip_prefix("@{").and_then(|r| r.strip_suffix('}')).filter(|e| !e.contains('}')) {
                return lookup(expr, done).cloned().ok_or_else(|| expr.to_owned());
            }
            Value::String(splice(s, done)?)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| substitute(i, done)).collect::<Result<_, _>>()?),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), substitute(v, done)?))).collect::<Result<_, String>>()?)
        }
        other => other.clone(),
    })
}

fn splice(s: &str, done: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find("@{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else { break };
        let expr = &after[..end];
        match lookup(expr, done) {
            Some(Value::String(t)) => out.push_str(t),
            Some(other) => out.push_str(&other.to_string()),
            None => return Err(expr.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Follow `name.field[0].other` through the bodies of earlier subrequests.
fn lookup<'a>(expr: &str, done: &'a Map<String, Value>) -> Option<&'a Value> {
    let split = expr.find(['.', '[']).unwrap_or(expr.len());
    let mut v = done.get(&expr[..split])?;
    let mut rest = &expr[split..];
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            v = v.as_object()?.get(&r[..end])?;
            rest = &r[end..];
        } else {
            let r = rest.strip_prefix('[')?;
            let end = r.find(']')?;
            v = v.as_array()?.get(r[..end].trim().parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        }
    }
    (!v.is_null()).then_some(v)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_resolve_to_earlier_bodies() {
        let done = json!({"c": {"id": "003A", "success": true}, "q": {"records": [{"Id": "003B", "n": 2}]}});
        let done = done.as_object().unwrap();
        let v = json!({"url": "/sobjects/Contact/@{c.id}", "body": {"WhoId": "@{q.records[0].Id}", "n": "@{q.records[0].n}"}});
        assert_eq!(
            substitute(&v, done).unwrap(),
            json!({"url": "/sobjects/Contact/003A", "body": {"WhoId": "003B", "n": 2}})
        );
        assert_eq!(substitute(&json!("@{c.nope}"), done).unwrap_err(), "c.nope");
        assert_eq!(substitute(&json!("x @{q.records[3].Id}"), done).unwrap_err(), "q.records[3].Id");
        assert_eq!(unresolved("c.nope"), "Invalid reference specified. No value for c.nope found in c.");
    }
}
