//! The rep's address book as a [`Collection`]: reads by `sync-collection` and
//! `addressbook-multiget`, writes by conditional PUT, resource names derived from sync keys.

use std::collections::HashMap;

use async_trait::async_trait;
use crmsync_core::memory::record_matches;
use crmsync_core::model::CONTACT_FIELDS;
use crmsync_core::{
    Capabilities, Change, Changes, Collection, Error, ErrorKind, Found, Item, ItemFailure, MatchKey, NewItem, Record,
    Result, Update,
};
use libdav::carddav::GetAddressBookResources;
use libdav::dav::mime_types;
use libdav::dav::{Delete, PutResource, SyncCollection, WebDavError};

use crate::client::{Session, map_err, slug, status_error};
use crate::mapping;

/// Largest write batch (each item is one PUT or DELETE).
pub const MAX_BATCH: usize = 50;

/// One address book of one user.
#[derive(Debug)]
pub struct DavContacts {
    pub(crate) session: Session,
    pub(crate) href: String,
    pub(crate) multiget_batch: usize,
    /// Whether the address book supports `sync-collection`; without it every read is full.
    pub(crate) supports_sync: bool,
}

/// A fetched card: href, etag, body.
type Fetched = (String, String, String);

impl DavContacts {
    /// The resource a sync key's record lives at: creates are idempotent by name.
    fn href_for(&self, key: &str) -> String {
        format!("{}{}.vcf", self.href, slug(key))
    }

    /// `addressbook-multiget` in batches; missing resources are left out.
    async fn fetch(&self, hrefs: &[String]) -> Result<Vec<Fetched>> {
        let mut out = vec![];
        for chunk in hrefs.chunks(self.multiget_batch.max(1)) {
            let res = self
                .session
                .dav
                .request(GetAddressBookResources::new(&self.href).with_hrefs(chunk))
                .await
                .map_err(map_err)?;
            for r in res.resources {
                if let Ok(c) = r.content {
                    out.push((r.href, c.etag, c.data));
                }
            }
        }
        Ok(out)
    }

    fn item((href, etag, data): &Fetched) -> Result<Item> {
        let (contact, sync_key) =
            mapping::parse(data).ok_or_else(|| Error::unexpected(format!("{href} is not a vCard")))?;
        Ok(Item { id: href.clone(), version: etag.clone(), sync_key, modified: None, record: Record::Contact(contact) })
    }

    async fn items(&self, hrefs: &[String]) -> Result<Vec<Item>> {
        self.fetch(hrefs).await?.iter().map(Self::item).collect()
    }

    /// Every href in the book (and a sync token when the server supports it).
    async fn list(&self, token: Option<&str>) -> Result<(Vec<String>, Vec<String>, Option<String>)> {
        let mut req = SyncCollection::new(&self.href);
        if let Some(t) = token {
            req = req.with_sync_token(t);
        }
        match self.session.dav.request(req).await {
            Ok(r) => Ok((r.changed.into_iter().map(|c| c.href).collect(), r.deleted, Some(r.new_sync_token))),
            // RFC 6578: an unknown or expired token is a `valid-sync-token` precondition (403/409).
            Err(WebDavError::PreconditionFailed(_)) if token.is_some() => {
                Err(Error::new(ErrorKind::CursorExpired, "dav sync token expired; read everything again"))
            }
            Err(WebDavError::BadStatusCode(s)) if token.is_some() && s.is_client_error() => {
                Err(Error::new(ErrorKind::CursorExpired, format!("dav sync token refused ({s})")))
            }
            Err(e) => Err(map_err(e)),
        }
    }
}

#[async_trait]
impl Collection for DavContacts {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_batch: MAX_BATCH,
            fields: CONTACT_FIELDS,
            incremental: self.supports_sync,
            find_beyond_scope: false,
        }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        let cursor = cursor.filter(|_| self.supports_sync);
        let (changed, deleted, token) = self.list(cursor).await?;
        let mut out = Changes { full: cursor.is_none(), cursor: token, ..Default::default() };
        for f in self.fetch(&changed).await? {
            match Self::item(&f) {
                Ok(item) => out.items.push(Change::Upsert(item)),
                Err(error) => out.failures.push(ItemFailure { id: f.0.clone(), error }),
            }
        }
        // A read without a token lists the book's deletion history too; a full read has no removals.
        if !out.full {
            out.items.extend(deleted.into_iter().map(Change::Removed));
        }
        Ok(out)
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let mine: Vec<String> = ids.iter().filter(|id| id.starts_with(&self.href)).cloned().collect();
        let mut by_id: HashMap<String, Item> =
            self.items(&mine).await?.into_iter().map(|i| (i.id.clone(), i)).collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        // A sync key names its resource; every other key is looked up among the book's cards.
        let (hrefs, _, _) = self.list(None).await?;
        Ok(self
            .items(&hrefs)
            .await?
            .into_iter()
            .filter(|i| keys.iter().any(|k| record_matches(k, i.sync_key.as_ref(), &i.record)))
            .map(|item| Found { item, in_scope: true })
            .collect())
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len())?;
        let mut results: Vec<Result<String>> = vec![];
        for new in items {
            let Some(c) = mapping::contact(&new.record) else {
                results.push(Err(Error::invalid_item("not a contact")));
                continue;
            };
            if let Some(reason) = new.record.invalid_reason() {
                results.push(Err(Error::invalid_item(reason)));
                continue;
            }
            let href = self.href_for(new.sync_key.as_str());
            let card = mapping::new_card(c, &new.sync_key, &slug(new.sync_key.as_str()));
            // If-None-Match: * — a 412 means the key's record exists: fetch and return it.
            match self.session.dav.request(PutResource::new(&href).create(card, mime_types::ADDRESSBOOK)).await {
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
        let ids: Vec<String> = items.iter().map(|u| u.id.clone()).collect();
        let current: HashMap<String, Fetched> = self.fetch(&ids).await?.into_iter().map(|f| (f.0.clone(), f)).collect();
        let mut results: Vec<Result<String>> = vec![];
        for u in items {
            let Some((href, etag, data)) = current.get(&u.id) else {
                results.push(Err(Error::not_found(format!("no card {}", u.id))));
                continue;
            };
            if *etag != u.version {
                results.push(Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("{href} changed since {}", u.version),
                )));
                continue;
            }
            let Ok(Item { record: mut rec, .. }) = Self::item(&(href.clone(), etag.clone(), data.clone())) else {
                results.push(Err(Error::unexpected(format!("{href} is not a vCard"))));
                continue;
            };
            for f in &u.fields {
                rec.set_field(f, u.record.field(f));
            }
            if let Some(reason) = rec.invalid_reason() {
                results.push(Err(Error::invalid_item(reason)));
                continue;
            }
            let card = mapping::contact(&rec).and_then(|c| mapping::update_card(data, c));
            let Some(card) = card else {
                results.push(Err(Error::unexpected(format!("{href} is not a vCard"))));
                continue;
            };
            // If-Match: the version the update is based on.
            let put = PutResource::new(href).update(card, mime_types::ADDRESSBOOK, etag.clone());
            results.push(self.session.dav.request(put).await.map(|_| href.clone()).map_err(map_err));
        }
        self.read_back(results).await
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        check_batch(ids.len())?;
        let mut out = vec![];
        for id in ids {
            if !id.starts_with(&self.href) {
                out.push(Ok(())); // not a resource of this book: nothing to delete
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

impl DavContacts {
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

fn check_batch(n: usize) -> Result<()> {
    if n > MAX_BATCH {
        return Err(Error::unexpected(format!("batch of {n} exceeds the limit {MAX_BATCH}")));
    }
    Ok(())
}
