//! The fake Google's own control routes under `/_crmsync/`: users and scenarios.

use crmsync_fake::{MailboxScenario, Reply, control_body, control_error};
use serde::Deserialize;
use serde_json::{Value, json};

use super::state::State;
use super::{calendar, people};

/// `POST /_crmsync/users`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
}

/// `POST /_crmsync/seed`: users with their contact groups, contacts (People JSON; a contact's
/// `groups` names the user groups it is in, besides `myContacts`) and primary-calendar events
/// (Calendar JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default)]
    users: Vec<MailboxScenario>,
}

pub(super) fn route(st: &mut State, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
    let reply = match (method, path) {
        ("GET", "users") => Ok(Reply::json(200, json!({"users": st.users.keys().collect::<Vec<_>>()}))),
        ("POST", "users") => control_body::<NewUser>(body).and_then(|u| {
            let email = add_user(st, &u.email)?;
            Ok(Reply::json(201, json!({"email": email, "refresh_token": st.add_refresh_token(&email)})))
        }),
        ("POST", "seed") => control_body::<Scenario>(body).and_then(|s| seed(st, s)),
        _ => return None,
    };
    Some(reply.unwrap_or_else(|e| e))
}

fn bad(message: String) -> Reply {
    control_error(400, "bad_request", message)
}

fn add_user(st: &mut State, email: &str) -> Result<String, Reply> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 320 {
        return Err(bad(format!("email: not an address: {email:?}")));
    }
    st.add_user(&email);
    Ok(email)
}

/// Add the scenario to the state; the reply names what was created.
fn seed(st: &mut State, s: Scenario) -> Result<Reply, Reply> {
    let mut out = vec![];
    for u in s.users {
        let email = add_user(st, &u.address)?;
        let grant = st.add_refresh_token(&email);
        let groups: Vec<String> = u.containers.iter().map(|g| people::ensure_group(st, &email, g)).collect();
        let mut contacts = vec![];
        for mut c in u.contacts {
            let names: Vec<String> = match c.remove("groups") {
                None | Some(Value::Null) => vec![],
                Some(g) => serde_json::from_value(g).map_err(|e| bad(format!("groups: {e}")))?,
            };
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            contacts.push(people::seed_person(st, &email, &names, Value::Object(c)).map_err(bad)?);
        }
        let mut events = vec![];
        for e in u.events {
            events.push(calendar::seed_event(st, &email, Value::Object(e)).map_err(bad)?);
        }
        out.push(json!({"email": email, "refresh_token": grant, "groups": groups,
                        "contacts": contacts, "events": events}));
    }
    Ok(Reply::json(201, json!({"users": out})))
}
