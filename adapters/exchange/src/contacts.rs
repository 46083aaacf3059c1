//! The rep's contacts folder: find or create it, and read it through
//! `/contactFolders/{id}/contacts/delta`.

use std::sync::atomic::Ordering;

use crmsync_core::{Change, Changes, Error, ErrorKind, ItemFailure, Result, Skip};
use reqwest::Method;
use serde_json::json;

use crate::client::{Session, odata_str};
use crate::collection::{GraphCollection, Reader, Scope, dedup, expand_sync_key};

/// The id of the child folder of the default Contacts folder named `name`, created if missing.
pub(crate) async fn open_folder(session: &Session, name: &str) -> Result<String> {
    let filter = format!("displayName eq {}", odata_str(name));
    let url = session.url("/contactFolders", &[("$filter", &filter)]);
    let found = session.get_all(&url, &[]).await?;
    let hit = found
        .iter()
        .find(|f| f["displayName"].as_str().is_some_and(|d| d.eq_ignore_ascii_case(name)))
        .and_then(|f| f["id"].as_str());
    if let Some(id) = hit {
        return Ok(id.to_owned());
    }
    let made = session
        .send(Method::POST, &session.rel("/contactFolders", &[]), &[], &[], Some(&json!({ "displayName": name })))
        .await?;
    made.body["id"].as_str().map(str::to_owned).ok_or_else(|| Error::unexpected("created contact folder has no id"))
}

/// Full (no cursor) or incremental read of the folder. The cursor is the `@odata.deltaLink`.
pub(crate) async fn changes(c: &GraphCollection, cursor: Option<&str>) -> Result<Changes> {
    let Scope::Folder { id: folder, name } = &c.scope else {
        return Err(Error::unexpected("contacts read on a calendar scope"));
    };
    let s = &c.session;
    let prefer = c_prefer(c);
    let prefer = GraphCollection::prefer_refs(&prefer);
    let plain = s.url(&format!("/contactFolders/{folder}/contacts/delta"), &[]);
    let expand = !c.no_delta_expand.load(Ordering::Relaxed);
    let first = match cursor {
        Some(u) if !s.is_own_delta_link(u) => {
            return Err(Error::new(ErrorKind::CursorExpired, "the cursor is not a delta link of this service"));
        }
        Some(u) => u.to_owned(),
        None if expand => {
            s.url(&format!("/contactFolders/{folder}/contacts/delta"), &[("$expand", &expand_sync_key())])
        }
        None => plain.clone(),
    };
    let (values, delta) = match s.delta(&first, &prefer).await {
        // Graph documents only `$select` for contact delta: a service that refuses the
        // `$expand` of the sync key is read without it (keys then come from `find`).
        Err(e) if cursor.is_none() && expand && e.kind() == ErrorKind::InvalidItem => {
            tracing::debug!(error = %e, "graph: contact delta refused $expand; reading without sync keys");
            c.no_delta_expand.store(true, Ordering::Relaxed);
            s.delta(&plain, &prefer).await?
        }
        other => other?,
    };
    let mut items = vec![];
    let mut failures = vec![];
    for v in &values {
        let Some(id) = v["id"].as_str() else { continue };
        if v.get("@removed").is_some() || v["parentFolderId"].as_str().is_some_and(|p| p != folder) {
            items.push(Change::Removed(id.to_owned()));
            continue;
        }
        c.remember(v);
        match c.item(v, None) {
            Ok(it) => items.push(Change::Upsert(it)),
            Err(error) => failures.push(ItemFailure { id: id.to_owned(), error }),
        }
    }
    let mut skipped = vec![];
    if cursor.is_none() {
        // The category is not membership: report contacts carrying it outside the folder.
        let filter = format!("categories/any(c:c eq {})", odata_str(name));
        let url = s.url("/contacts", &[("$filter", &filter), ("$select", "id,parentFolderId")]);
        for v in s.get_all(&url, &prefer).await? {
            if v["parentFolderId"].as_str() != Some(folder.as_str()) {
                if let Some(id) = v["id"].as_str() {
                    skipped.push(Skip { id: id.to_owned(), reason: "category_not_folder".into() });
                }
            }
        }
    }
    if cursor.is_none() && expand && !c.no_delta_expand.load(Ordering::Relaxed) {
        // This handle has now seen every sync key stamped in the folder.
        c.scanned.store(true, Ordering::Relaxed);
    }
    Ok(Changes { full: cursor.is_none(), items: dedup(items), skipped, failures, cursor: Some(delta) })
}

fn c_prefer(c: &GraphCollection) -> Vec<String> {
    vec![format!("odata.maxpagesize={}", c.session.config().page_size)]
}

/// The [`Reader`] of the contacts folder.
pub(crate) struct Contacts;

#[async_trait::async_trait]
impl Reader for Contacts {
    async fn changes(&self, c: &GraphCollection, cursor: Option<&str>) -> Result<Changes> {
        changes(c, cursor).await
    }
}
