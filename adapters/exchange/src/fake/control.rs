//! The fake Graph's own control routes under `/_crmsync/`: mailboxes and scenarios.

use crmsync_fake::{MailboxScenario, Reply, control_body, control_error};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::state::State;

/// `POST /_crmsync/mailboxes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMailbox {
    address: String,
}

/// `POST /_crmsync/seed`: mailboxes with their folders, contacts and events (Graph JSON; a
/// contact's `folder` puts it in that child folder of Contacts).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default)]
    mailboxes: Vec<MailboxScenario>,
}

pub(super) fn route(st: &mut State, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
    let reply = match (method, path) {
        ("GET", "mailboxes") => {
            Ok(Reply::json(200, json!({"mailboxes": st.mailboxes.values().map(|m| &m.id).collect::<Vec<_>>()})))
        }
        ("POST", "mailboxes") => control_body::<NewMailbox>(body).and_then(|m| {
            let address = checked(&m.address)?;
            Ok(Reply::json(201, json!({"address": address, "refresh_token": st.add_refresh_token(address)})))
        }),
        ("POST", "seed") => control_body::<Scenario>(body).and_then(|s| seed(st, s)),
        _ => return None,
    };
    Some(reply.unwrap_or_else(|e| e))
}

fn checked(address: &str) -> Result<&str, Reply> {
    let a = address.trim();
    if a.is_empty() || a.len() > 320 {
        return Err(control_error(400, "bad_request", "address: 1 to 320 characters"));
    }
    Ok(a)
}

/// Add the scenario to the state; the reply names what was created.
fn seed(st: &mut State, s: Scenario) -> Result<Reply, Reply> {
    let mut out = vec![];
    for mb in s.mailboxes {
        let address = checked(&mb.address)?.to_owned();
        let grant = st.add_refresh_token(&address);
        let folders: Map<String, Value> =
            mb.containers.iter().map(|f| (f.clone(), json!(st.folder(&address, f)))).collect();
        let mut contacts = vec![];
        for mut c in mb.contacts {
            let folder = match c.remove("folder") {
                None | Some(Value::Null) => None,
                Some(Value::String(f)) => Some(f),
                Some(other) => return Err(control_error(400, "bad_request", format!("folder: a name, not {other}"))),
            };
            contacts.push(st.insert_contact(&address, folder.as_deref(), Value::Object(c)));
        }
        let events: Vec<String> = mb.events.into_iter().map(|e| st.insert_event(&address, Value::Object(e))).collect();
        out.push(json!({"address": address, "refresh_token": grant, "folders": folders,
                        "contacts": contacts, "events": events}));
    }
    Ok(Reply::json(201, json!({"mailboxes": out})))
}
