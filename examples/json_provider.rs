//! A new provider in about 200 lines: a rep's contacts in a JSON file (`FOLDER/MAILBOX.json`).
//! It cannot read incrementally, says so in its capabilities, and is read in full each cycle.
//!
//! Its `main` is a complete `crmsync` binary with one more provider kind, `json`:
//! `cargo run -p crmsync-examples --example json_provider -- sync --config crmsync.toml`, where the
//! config has a `[json]` table (`dir = "contacts"`, relative to the config file) and reps with
//! `provider = "json"`. Its tests run the conformance kit, a sync with the in-memory CRM, and
//! (`tests/tests/json_binary.rs`) the binary against the sandbox's Salesforce.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use crmsync_cli::registry::{ProviderFactory, Secrets, typed};
use crmsync_core::model::CONTACT_FIELDS;
use crmsync_core::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    version: u64,
    sync_key: Option<SyncKey>,
    contact: Contact,
}

impl Stored {
    fn item(&self) -> Item {
        let record = Record::Contact(self.contact.clone());
        Item {
            id: self.id.clone(),
            version: self.version.to_string(),
            sync_key: self.sync_key.clone(),
            modified: None,
            record,
        }
    }
}

/// The file: the contacts and the number of the next id (never reused, even after a delete).
#[derive(Default, Serialize, Deserialize)]
struct List {
    next_id: u64,
    contacts: Vec<Stored>,
}

/// One JSON file = one contact list.
#[derive(Debug)]
struct JsonFile {
    path: PathBuf,
    requests: AtomicU64,
}

impl JsonFile {
    fn load(&self) -> Result<List> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::unexpected(format!("{} is not a contact list: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(List::default()),
            Err(e) => Err(Error::new(ErrorKind::Transport, e.to_string())),
        }
    }
    fn save(&self, all: &List) -> Result<()> {
        let json = serde_json::to_vec_pretty(all).map_err(|e| Error::unexpected(e.to_string()))?;
        std::fs::write(&self.path, json).map_err(|e| Error::new(ErrorKind::Transport, e.to_string()))
    }
}

#[async_trait]
impl Collection for JsonFile {
    fn capabilities(&self) -> Capabilities {
        Capabilities { max_batch: 50, fields: CONTACT_FIELDS, incremental: false, find_beyond_scope: false }
    }
    async fn changes(&self, _cursor: Option<&str>) -> Result<Changes> {
        let items = self.load()?.contacts.iter().map(|s| Change::Upsert(s.item())).collect();
        Ok(Changes { full: true, items, ..Default::default() })
    }
    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        Ok(self.load()?.contacts.iter().filter(|s| ids.contains(&s.id)).map(Stored::item).collect())
    }
    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        let hit = |s: &Stored| {
            let item = s.item();
            keys.iter().any(|k| k.matches(&item))
        };
        let all = self.load()?.contacts;
        Ok(all.iter().filter(|s| hit(s)).map(|s| Found { item: s.item(), in_scope: true }).collect())
    }
    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        let mut all = self.load()?;
        let mut out = vec![];
        for new in items {
            let Record::Contact(contact) = &new.record else {
                out.push(Err(Error::invalid_item("only contacts live here")));
                continue;
            };
            if let Some(s) = all.contacts.iter().find(|s| s.sync_key.as_ref() == Some(&new.sync_key)) {
                out.push(Ok(s.item())); // created before: idempotent
            } else if let Some(reason) = new.record.invalid_reason() {
                out.push(Err(Error::invalid_item(reason)));
            } else {
                all.next_id += 1;
                let id = format!("json-{}", all.next_id);
                let stored = Stored { id, version: 1, sync_key: Some(new.sync_key.clone()), contact: contact.clone() };
                out.push(Ok(stored.item()));
                all.contacts.push(stored);
            }
        }
        self.save(&all)?;
        Ok(out)
    }
    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        let mut all = self.load()?;
        let mut out = vec![];
        for u in items {
            let Some(s) = all.contacts.iter_mut().find(|s| s.id == u.id) else {
                out.push(Err(Error::not_found(&u.id)));
                continue;
            };
            if s.version.to_string() != u.version {
                out.push(Err(Error::new(ErrorKind::PreconditionFailed, format!("{} changed", u.id))));
                continue;
            }
            let mut rec = Record::Contact(s.contact.clone());
            u.apply_to(&mut rec);
            let Record::Contact(c) = rec else { unreachable!("set_field keeps the kind") };
            (s.contact, s.version) = (c, s.version + 1);
            out.push(Ok(s.item()));
        }
        self.save(&all)?;
        Ok(out)
    }
    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        let mut all = self.load()?;
        all.contacts.retain(|s| !ids.contains(&s.id));
        self.save(&all)?;
        Ok(ids.iter().map(|_| Ok(())).collect())
    }
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The provider: one file per mailbox in a folder.
#[derive(Debug)]
struct JsonProvider(PathBuf);

#[async_trait]
impl Provider for JsonProvider {
    fn name(&self) -> &str {
        "json"
    }
    async fn collection(&self, rep: &Rep, kind: Kind, _: &Access) -> Result<Arc<dyn Collection>> {
        match kind {
            Kind::Contact => {
                Ok(Arc::new(JsonFile { path: self.0.join(format!("{}.json", rep.mailbox)), requests: 0.into() }))
            }
            Kind::Event => Err(Error::new(ErrorKind::Unsupported, "this provider has no calendar")),
        }
    }
    async fn verify_grant(&self, _: &Rep, _: &SecretString) -> Result<()> {
        Err(Error::new(ErrorKind::Unsupported, "files need no grant"))
    }
}

/// The `[json]` table of the config file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonConfig {
    /// The folder of the contact files (absolute, or relative to the working directory).
    dir: PathBuf,
}

/// Builds the provider from the `[json]` table; registered as kind `json`.
struct JsonFactory;

impl ProviderFactory for JsonFactory {
    fn check(&self, section: &toml::Table) -> std::result::Result<(), String> {
        typed::<JsonConfig>(section).map(drop)
    }
    fn build(&self, section: &toml::Table, _: Secrets) -> std::result::Result<Arc<dyn Provider>, String> {
        let c: JsonConfig = typed(section)?;
        std::fs::create_dir_all(&c.dir).map_err(|e| format!("[json] dir {}: {e}", c.dir.display()))?;
        Ok(Arc::new(JsonProvider(c.dir)))
    }
}

/// `crmsync`, plus the `json` provider kind.
fn main() -> std::process::ExitCode {
    crmsync_cli::Cli::new().provider("json", JsonFactory).run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_core::memory::{MemCrm, MemStore};
    use crmsync_core::testkit::Harness;

    /// Sync a small JSON contact list with the in-memory CRM and return the report.
    async fn demo(dir: PathBuf) -> Result<CycleReport> {
        let crm = Arc::new(MemCrm::default());
        let user = crm.add_user("Jo Example", &[]);
        let owner = MemCrm::owner_tag(&user);
        let ada = Contact {
            family_name: Some("Lovelace".into()),
            emails: vec!["ada@example.com".into()],
            ..Default::default()
        };
        crm.contacts.lock().expect("fresh").insert(Record::Contact(ada), &[&owner], None);
        let mut config = SyncConfig::default();
        config.events.direction = Direction::Off;
        let rep = Rep {
            id: user.clone(),
            name: "Jo Example".into(),
            crm_user_id: user,
            provider: "json".into(),
            mailbox: "jo".into(),
            connection: ConnectionMode::AdminManaged,
            config,
        };
        let engine = Engine::new(crm, Arc::new(MemStore::default())).with_provider(Arc::new(JsonProvider(dir)));
        engine.cycle(&rep).await
    }

    struct H(PathBuf);
    #[async_trait]
    impl Harness for H {
        async fn collection(&self, _: Kind) -> Arc<dyn Collection> {
            // A fresh file per collection: the tests run in parallel in one folder.
            static N: AtomicU64 = AtomicU64::new(0);
            let path = self.0.join(format!("{}.json", N.fetch_add(1, Ordering::Relaxed)));
            let _ = std::fs::remove_file(&path);
            Arc::new(JsonFile { path, requests: 0.into() })
        }
        async fn expire_cursors(&self, _: Kind) -> Result<(), String> {
            Err("the JSON file has no cursors".into())
        }
        fn invalid_record(&self, _: Kind) -> Record {
            Record::Contact(Contact { emails: vec!["not an address".into()], ..Default::default() })
        }
        fn page_size(&self, _: Kind) -> usize {
            60
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("crmsync-example-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    mod conformance {
        use super::*;
        crmsync_core::conformance_tests!(Kind::Contact, H(tmp("kit")));
    }

    #[tokio::test]
    async fn syncs_both_ways_without_duplicates() {
        let dir = tmp("sync");
        let r = demo(dir.clone()).await.unwrap();
        assert_eq!(r.contacts.created_in_provider, 1, "{r:?}");
        let file: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("jo.json")).unwrap()).unwrap();
        assert_eq!(file["contacts"].as_array().map(Vec::len), Some(1));
        assert_eq!(file["contacts"][0]["contact"]["family_name"], "Lovelace");
    }
}
