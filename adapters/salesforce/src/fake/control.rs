//! The fake org's own control routes under `/_crmsync/`: users and scenarios.

use std::collections::HashMap;

use crmsync_core::{MANAGE_SYNC, MANAGE_USERS};
use crmsync_fake::{Reply, control_body, control_error};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::schema::object;
use super::state::State;

/// `POST /_crmsync/users`: a user and their permissions (`Manage Users`, `Manage Sync`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    #[serde(default)]
    permissions: Vec<String>,
}

/// `POST /_crmsync/seed`: users, then Contacts and Events (Salesforce field JSON) owned by a
/// user named in `owner` (a user of this scenario by name, or a user id; default: the
/// integration user).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default)]
    users: Vec<NewUser>,
    #[serde(default)]
    contacts: Vec<Map<String, Value>>,
    #[serde(default)]
    events: Vec<Map<String, Value>>,
}

pub(super) fn route(st: &mut State, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
    let reply = match (method, path) {
        ("POST", "users") => control_body::<NewUser>(body)
            .and_then(|u| add_user(st, &u))
            .map(|(name, id)| Reply::json(201, json!({"name": name, "id": id}))),
        ("POST", "seed") => control_body::<Scenario>(body).and_then(|s| seed(st, s)),
        _ => return None,
    };
    Some(reply.unwrap_or_else(|e| e))
}

fn bad(message: String) -> Reply {
    control_error(400, "bad_request", message)
}

fn add_user(st: &mut State, u: &NewUser) -> Result<(String, String), Reply> {
    let name = u.name.trim();
    if name.len() > 80 || !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(format!("name: up to 80 characters, with a letter or digit: {name:?}")));
    }
    let mut perms = vec![];
    for p in &u.permissions {
        match [MANAGE_USERS, MANAGE_SYNC].into_iter().find(|k| k.eq_ignore_ascii_case(p)) {
            Some(k) => perms.push(k),
            None => return Err(bad(format!("permissions: unknown {p:?} (known: {MANAGE_USERS}, {MANAGE_SYNC})"))),
        }
    }
    Ok((name.to_owned(), st.add_user(name, &perms)))
}

/// Add the scenario to the state; the reply names what was created.
fn seed(st: &mut State, s: Scenario) -> Result<Reply, Reply> {
    let mut users = HashMap::new();
    for u in &s.users {
        let (name, id) = add_user(st, u)?;
        users.insert(name, id);
    }
    let mut ids = Map::new();
    for (sobject, rows) in [("Contact", s.contacts), ("Event", s.events)] {
        let obj = object(sobject).ok_or_else(|| bad(format!("unknown object {sobject}")))?;
        let mut created = vec![];
        for mut fields in rows {
            let owner = match fields.remove("owner") {
                None => st.integration_user.clone(),
                Some(Value::String(o)) => users.get(&o).cloned().unwrap_or(o),
                Some(other) => return Err(bad(format!("owner: a user name or id, not {other}"))),
            };
            fields.insert("OwnerId".into(), json!(owner));
            let actor = st.integration_user.clone();
            let id = st
                .write(obj, None, &fields, &actor, false)
                .map_err(|e| bad(format!("{sobject}: {}: {} {:?}", e.code, e.message, e.fields)))?;
            created.push(json!(id));
        }
        ids.insert(format!("{}s", sobject.to_lowercase()), Value::Array(created));
    }
    ids.insert("users".into(), json!(users));
    Ok(Reply::json(201, Value::Object(ids)))
}
