//! The rep's address book (contacts) or calendar (events) as a [`Collection`]: reads by
//! `sync-collection` and multiget reports, writes by conditional PUT, resource names derived
//! from sync keys. Events are read inside the window, series expanded to occurrences (id
//! `<href>#<start>`); occurrences of a series are read-only.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use crmsync_core::config::Window;
use crmsync_core::model::{CONTACT_FIELDS, EVENT_FIELDS};
use crmsync_core::{
    Capabilities, Change, Changes, Collection, Error, ErrorKind, Found, Item, ItemFailure, MatchKey, NewItem, Record,
    Result, Update,
};
use libdav::caldav::GetCalendarResources;
use libdav::carddav::GetAddressBookResources;
use libdav::dav::{Delete, ListResources, PutResource, SyncCollection, WebDavError, mime_types};

use crate::client::{Session, map_err, slug, status_error};
use crate::mapping;

/// Prefix of an etag-listing cursor (servers without `sync-collection`).
const ETAGS: &str = "etags:";

/// Largest write batch (each item is one PUT or DELETE).
pub const MAX_BATCH: usize = 50;

/// What a collection holds.
#[derive(Clone, Debug)]
pub enum Format {
    Contacts,
    /// Events overlapping the window.
    Events(Window),
}

/// One address book or calendar of one user.
#[derive(Debug)]
pub struct DavCollection {
    pub(crate) format: Format,
    pub(crate) session: Session,
    pub(crate) href: String,
    pub(crate) multiget_batch: usize,
    /// Whether reads use `sync-collection`; without it, etag listings are compared.
    pub(crate) supports_sync: bool,
}

/// A fetched resource: href, etag, body.
type Fetched = (String, String, String);

/// The resource an item id names (an occurrence's id is `<href>#<start>`).
fn resource(id: &str) -> &str {
    id.split('#').next().unwrap_or(id)
}

impl DavCollection {
    /// The resource a sync key's record lives at: creates are idempotent by name.
    fn href_for(&self, key: &str) -> String {
        let ext = match self.format {
            Format::Contacts => "vcf",
            Format::Events(_) => "ics",
        };
        format!("{}{}.{ext}", self.href, slug(key))
    }

    fn mime(&self) -> &'static str {
        match self.format {
            Format::Contacts => mime_types::ADDRESSBOOK,
            Format::Events(_) => mime_types::CALENDAR,
        }
    }

    /// `addressbook-multiget` / `calendar-multiget` in batches; missing resources are left out.
    async fn fetch(&self, hrefs: &[String]) -> Result<Vec<Fetched>> {
        let mut out = vec![];
        for chunk in hrefs.chunks(self.multiget_batch.max(1)) {
            let dav = &self.session.dav;
            let resources = match self.format {
                Format::Contacts => {
                    dav.request(GetAddressBookResources::new(&self.href).with_hrefs(chunk)).await.map(|r| r.resources)
                }
                Format::Events(_) => {
                    dav.request(GetCalendarResources::new(&self.href).with_hrefs(chunk)).await.map(|r| r.resources)
                }
            };
            for r in resources.map_err(map_err)? {
                if let Ok(c) = r.content {
                    out.push((r.href, c.etag, c.data));
                }
            }
        }
        Ok(out)
    }

    /// The items of a fetched resource: one contact, or the event's occurrences in the window.
    fn items_of(&self, (href, etag, data): &Fetched) -> Result<Vec<Item>> {
        let item = |id: String, sync_key, record| Item { id, version: etag.clone(), sync_key, modified: None, record };
        match &self.format {
            Format::Contacts => {
                let (contact, key) =
                    mapping::parse(data).ok_or_else(|| Error::unexpected(format!("{href} is not a vCard")))?;
                Ok(vec![item(href.clone(), key, Record::Contact(contact))])
            }
            Format::Events(window) => {
                let occurrences = mapping::parse_calendar(data, window)
                    .ok_or_else(|| Error::unexpected(format!("{href} is not an iCalendar object")))?;
                Ok(occurrences
                    .into_iter()
                    .map(|o| {
                        let id = match o.recurrence {
                            Some(t) => format!("{href}#{}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                            None => href.clone(),
                        };
                        item(id, o.sync_key, Record::Event(o.event))
                    })
                    .collect())
            }
        }
    }

    async fn items(&self, hrefs: &[String]) -> Result<Vec<Item>> {
        let mut out = vec![];
        for f in self.fetch(hrefs).await? {
            out.extend(self.items_of(&f)?);
        }
        Ok(out)
    }

    /// What changed since `cursor` (everything without one): changed hrefs, deleted hrefs and
    /// the next cursor. By `sync-collection` when the collection supports it (the cursor is the
    /// sync token), otherwise by listing every resource's etag (the cursor is that listing).
    async fn list(&self, cursor: Option<&str>) -> Result<(Vec<String>, Vec<String>, String)> {
        if !self.supports_sync {
            return self.list_etags(cursor).await;
        }
        let mut req = SyncCollection::new(&self.href);
        if let Some(t) = cursor {
            req = req.with_sync_token(t);
        }
        match self.session.dav.request(req).await {
            Ok(r) => Ok((r.changed.into_iter().map(|c| c.href).collect(), r.deleted, r.new_sync_token)),
            // RFC 6578: an unknown or expired token is a `valid-sync-token` precondition (403/409).
            Err(WebDavError::PreconditionFailed(_)) if cursor.is_some() => {
                Err(Error::new(ErrorKind::CursorExpired, "dav sync token expired; read everything again"))
            }
            Err(WebDavError::BadStatusCode(s)) if cursor.is_some() && s.is_client_error() => {
                Err(Error::new(ErrorKind::CursorExpired, format!("dav sync token refused ({s})")))
            }
            Err(e) => Err(map_err(e)),
        }
    }

    /// The fallback for servers without `sync-collection`: a PROPFIND listing of every
    /// resource's etag, compared with the listing kept in the cursor.
    async fn list_etags(&self, cursor: Option<&str>) -> Result<(Vec<String>, Vec<String>, String)> {
        let before: BTreeMap<String, String> = match cursor {
            None => BTreeMap::new(),
            Some(c) => c
                .strip_prefix(ETAGS)
                .and_then(|json| serde_json::from_str(json).ok())
                .ok_or_else(|| Error::new(ErrorKind::CursorExpired, "not an etag-listing cursor of this collection"))?,
        };
        let listed = self.session.dav.request(ListResources::new(&self.href)).await.map_err(map_err)?.resources;
        let now: BTreeMap<String, String> = listed.into_iter().filter_map(|r| Some((r.href, r.etag?))).collect();
        let changed = now.iter().filter(|(h, e)| before.get(*h) != Some(e)).map(|(h, _)| h.clone()).collect();
        let deleted = before.keys().filter(|h| !now.contains_key(*h)).cloned().collect();
        let next = format!("{ETAGS}{}", serde_json::to_string(&now).map_err(|e| Error::unexpected(e.to_string()))?);
        Ok((changed, deleted, next))
    }

    /// The written resources read back (one multiget) in input order.
    async fn read_back(&self, written: Vec<Result<String>>) -> Result<Vec<Result<Item>>> {
        let hrefs: Vec<String> = written.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let by_href: HashMap<String, Item> = self.items(&hrefs).await?.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(written
            .into_iter()
            .map(|r| {
                let href = r?;
                by_href.get(&href).cloned().ok_or_else(|| status_error(http::StatusCode::NOT_FOUND))
            })
            .collect())
    }
}

#[async_trait]
impl Collection for DavCollection {
    fn capabilities(&self) -> Capabilities {
        let fields = match self.format {
            Format::Contacts => CONTACT_FIELDS,
            Format::Events(_) => EVENT_FIELDS,
        };
        Capabilities { max_batch: MAX_BATCH, fields, incremental: true, find_beyond_scope: false }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        let (changed, deleted, next) = self.list(cursor).await?;
        let mut out = Changes { full: cursor.is_none(), cursor: Some(next), ..Default::default() };
        for f in self.fetch(&changed).await? {
            match self.items_of(&f) {
                Ok(items) => out.items.extend(items.into_iter().map(Change::Upsert)),
                Err(error) => out.failures.push(ItemFailure { id: f.0.clone(), error }),
            }
        }
        // A read without a token lists the deletion history too; a full read has no removals.
        if !out.full {
            out.items.extend(deleted.into_iter().map(Change::Removed));
        }
        Ok(out)
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let mut mine: Vec<String> =
            ids.iter().filter(|id| id.starts_with(&self.href)).map(|id| resource(id).to_owned()).collect();
        mine.dedup();
        let mut by_id: HashMap<String, Item> =
            self.items(&mine).await?.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        // Looked up among the collection's records (a rep's sync book or calendar window is small).
        let (hrefs, _, _) = self.list(None).await?;
        Ok(self
            .items(&hrefs)
            .await?
            .into_iter()
            .filter(|i| keys.iter().any(|k| k.matches(i)))
            .map(|item| Found { item, in_scope: true })
            .collect())
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len())?;
        let mut results: Vec<Result<String>> = vec![];
        for new in items {
            if let Some(reason) = new.record.invalid_reason() {
                results.push(Err(Error::invalid_item(reason)));
                continue;
            }
            let href = self.href_for(new.sync_key.as_str());
            let uid = slug(new.sync_key.as_str());
            let body = match (&self.format, &new.record) {
                (Format::Contacts, Record::Contact(c)) => mapping::new_card(c, &new.sync_key, &uid),
                (Format::Events(_), Record::Event(e)) => mapping::new_calendar(e, &new.sync_key, &uid),
                _ => {
                    results.push(Err(Error::invalid_item("a record of the other kind")));
                    continue;
                }
            };
            // If-None-Match: * — a 412 means the key's record exists: fetch and return it.
            match self.session.dav.request(PutResource::new(&href).create(body, self.mime())).await {
                Ok(_) | Err(WebDavError::PreconditionFailed(_)) => results.push(Ok(href)),
                Err(WebDavError::BadStatusCode(s)) if s == http::StatusCode::PRECONDITION_FAILED => {
                    results.push(Ok(href))
                }
                Err(e) => results.push(Err(map_err(e))),
            }
        }
        self.read_back(results).await
    }

    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len())?;
        let ids: Vec<String> = items.iter().map(|u| resource(&u.id).to_owned()).collect();
        let current: HashMap<String, Fetched> = self.fetch(&ids).await?.into_iter().map(|f| (f.0.clone(), f)).collect();
        let mut results: Vec<Result<String>> = vec![];
        for u in items {
            if u.id.contains('#') {
                results.push(Err(Error::invalid_item("an occurrence of a series is read-only")));
                continue;
            }
            let Some(fetched @ (href, etag, data)) = current.get(&u.id) else {
                results.push(Err(Error::not_found(format!("no resource {}", u.id))));
                continue;
            };
            if *etag != u.version {
                results.push(Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("{href} changed since {}", u.version),
                )));
                continue;
            }
            let Some(Item { record: mut rec, .. }) = self.items_of(fetched).ok().and_then(|mut v| v.pop()) else {
                results.push(Err(Error::invalid_item(format!("{href} holds no record this collection can update"))));
                continue;
            };
            for f in &u.fields {
                rec.set_field(f, u.record.field(f));
            }
            if let Some(reason) = rec.invalid_reason() {
                results.push(Err(Error::invalid_item(reason)));
                continue;
            }
            let body = match &rec {
                Record::Contact(c) => mapping::update_card(data, c),
                Record::Event(e) => mapping::update_calendar(data, e),
            };
            let Some(body) = body else {
                results.push(Err(Error::invalid_item(format!("{href} cannot be updated (a series?)"))));
                continue;
            };
            // If-Match: the version the update is based on.
            let put = PutResource::new(href).update(body, self.mime(), etag.clone());
            results.push(self.session.dav.request(put).await.map(|_| href.clone()).map_err(map_err));
        }
        self.read_back(results).await
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        check_batch(ids.len())?;
        let mut out = vec![];
        for id in ids {
            if !id.starts_with(&self.href) {
                out.push(Ok(())); // not a resource of this collection: nothing to delete
                continue;
            }
            if id.contains('#') {
                out.push(Err(Error::invalid_item("an occurrence of a series is not deleted alone")));
                continue;
            }
            out.push(match self.session.dav.request(Delete::new(id).force()).await {
                Ok(_) => Ok(()),
                Err(WebDavError::BadStatusCode(s)) if s == http::StatusCode::NOT_FOUND => Ok(()),
                Err(e) => Err(map_err(e)),
            });
        }
        Ok(out)
    }

    fn requests(&self) -> u64 {
        self.session.requests()
    }
}

fn check_batch(n: usize) -> Result<()> {
    if n > MAX_BATCH {
        return Err(Error::unexpected(format!("batch of {n} exceeds the limit {MAX_BATCH}")));
    }
    Ok(())
}
