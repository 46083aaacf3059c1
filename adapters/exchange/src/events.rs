//! The rep's primary calendar inside the event window, read through `/calendarView/delta`.
//!
//! The window is widened to whole UTC days so that one delta token serves a whole day; the
//! cursor is `start|end|deltaLink`, and a cursor of another window reads as expired (the
//! engine then does a full read of the new window).

use chrono::SecondsFormat;
use crmsync_core::{Change, Changes, Error, ErrorKind, ItemFailure, Result};

use crate::collection::{GraphCollection, Reader, Scope, dedup};

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Full (no cursor) or incremental read of the calendar window.
pub(crate) async fn changes(c: &GraphCollection, cursor: Option<&str>) -> Result<Changes> {
    let Scope::Calendar(w) = &c.scope else {
        return Err(Error::unexpected("events read on a folder scope"));
    };
    let s = &c.session;
    let prefix = format!("{}|{}|", iso(w.start), iso(w.end));
    let next = match cursor {
        Some(cur) => match cur.strip_prefix(&prefix) {
            Some(link) if s.is_own_delta_link(link) => link.to_owned(),
            Some(_) => {
                return Err(Error::new(ErrorKind::CursorExpired, "the cursor is not a delta link of this service"));
            }
            None => return Err(Error::new(ErrorKind::CursorExpired, "the event window moved since the last read")),
        },
        None => s.url("/calendarView/delta", &[("startDateTime", &iso(w.start)), ("endDateTime", &iso(w.end))]),
    };
    let prefer = [
        format!("odata.maxpagesize={}", s.config().page_size),
        "outlook.timezone=\"UTC\"".to_owned(),
        "outlook.body-content-type=\"text\"".to_owned(),
    ];
    let prefer = GraphCollection::prefer_refs(&prefer);
    let (values, delta) = s.delta(&next, &prefer).await?;
    let mut items = vec![];
    let mut failures = vec![];
    for v in &values {
        let Some(id) = v["id"].as_str() else { continue };
        if v.get("@removed").is_some() {
            if cursor.is_some() {
                items.push(Change::Removed(id.to_owned()));
            }
            continue;
        }
        if v["type"].as_str() == Some("seriesMaster") {
            continue;
        }
        c.remember(v);
        match c.item(v, None) {
            Ok(it) => items.push(Change::Upsert(it)),
            Err(error) => failures.push(ItemFailure { id: id.to_owned(), error }),
        }
    }
    let mut items = dedup(items);
    failures.retain(|f| !items.iter().any(|c| matches!(c, Change::Upsert(i) if i.id == f.id)));
    // `@removed` also means "left the window" or "changed outside it": an event that still
    // exists is delivered as it is now, so the engine can tell a deletion from a move.
    let gone: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, ch)| match ch {
            Change::Removed(id) => Some((i, id.clone())),
            Change::Upsert(_) => None,
        })
        .collect();
    if !gone.is_empty() {
        let ids: Vec<String> = gone.iter().map(|(_, id)| id.clone()).collect();
        let found = c.fetch(&ids).await?;
        let mut drop = vec![];
        for ((pos, id), v) in gone.into_iter().zip(found) {
            let Some(v) = v.filter(|v| v["type"].as_str() != Some("seriesMaster")) else { continue };
            c.remember(&v);
            match c.item(&v, None) {
                Ok(it) => items[pos] = Change::Upsert(it),
                Err(error) => {
                    drop.push(pos);
                    failures.push(ItemFailure { id, error });
                }
            }
        }
        let mut i = 0;
        items.retain(|_| {
            i += 1;
            !drop.contains(&(i - 1))
        });
    }
    Ok(Changes { full: cursor.is_none(), items, skipped: vec![], failures, cursor: Some(format!("{prefix}{delta}")) })
}

/// The [`Reader`] of the calendar window.
pub(crate) struct Events;

#[async_trait::async_trait]
impl Reader for Events {
    async fn changes(&self, c: &GraphCollection, cursor: Option<&str>) -> Result<Changes> {
        changes(c, cursor).await
    }
}
