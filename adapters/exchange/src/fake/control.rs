//! The fake Graph's own control routes under `/_crmsync/`: mailboxes and scenarios.

use crmsync_fake::{Reply, control_body, control_error};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::state::State;

/// `POST /_crmsync/mailboxes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMailbox {
    address: String,
}

/// `POST /_crmsync/seed`: mailboxes with their folders, contacts and events (Graph JSON).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[serde(default)]
    mailboxes: Vec<MailboxSeed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MailboxSeed {
    address: String,
    #[serde(default)]
    folders: Vec<String>,
    #[serde(default)]
    contacts: Vec<ContactSeed>,
    #[serde(default)]
    events: Vec<Map<String, Value>>,
}

/// A Graph contact, in the default Contacts folder or the child folder `folder`.
#[derive(Deserialize)]
struct ContactSeed {
    #[serde(default)]
    folder: Option<String>,
    #[serde(flatten)]
    contact: Map<String, Value>,
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
            mb.folders.iter().map(|f| (f.clone(), json!(st.folder(&address, f)))).collect();
        let contacts: Vec<String> = mb
            .contacts
            .into_iter()
            .map(|c| st.insert_contact(&address, c.folder.as_deref(), Value::Object(c.contact)))
            .collect();
        let events: Vec<String> = mb.events.into_iter().map(|e| st.insert_event(&address, Value::Object(e))).collect();
        out.push(json!({"address": address, "refresh_token": grant, "folders": folders,
                        "contacts": contacts, "events": events}));
    }
    Ok(Reply::json(201, json!({"mailboxes": out})))
}
