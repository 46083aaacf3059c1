//! Events: the rep's primary Google calendar as a [`Collection`].
//!
//! Full reads list the event window with `singleEvents=true` (recurring series expanded into
//! instances sharing the series' `iCalUID`); incremental reads pass the `syncToken` alone
//! (`timeMin`/`timeMax` are forbidden with it), so they return changes outside the window too
//! and the engine filters the window. Events created by crmsync get a client-supplied id
//! derived from the sync key, so a repeated create is answered by 409 and returns the first event.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use crmsync_core::model::EVENT_FIELDS;
use crmsync_core::{
    Capabilities, Change, Changes, Collection, Error, ErrorKind, Event, EventTime, Found, Item, ItemFailure, MatchKey,
    NewItem, Record, Result, SyncKey, Update, Window, time,
};
use reqwest::Method;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Req, Session};
use crate::config::SYNC_KEY_PROPERTY;

/// Calendar limits on private extended properties.
pub const MAX_PROPERTY_KEY: usize = 44;
/// Longer values are silently truncated by Calendar, so the adapter refuses them.
pub const MAX_PROPERTY_VALUE: usize = 1024;

/// How the rep's "do not sync" marker is recognised and written.
#[derive(Clone, Debug)]
pub struct NoSync {
    /// The category string reported in `Event.categories` (the rep's `no_sync_marker`).
    pub marker: String,
    /// The private extended property that carries it (value `"true"`).
    pub property: String,
    /// An optional `colorId` that also means "do not sync".
    pub color_id: Option<String>,
}

/// The rep's primary calendar as a collection.
pub struct EventsCollection {
    s: Session,
    window: Window,
    no_sync: NoSync,
}

impl std::fmt::Debug for EventsCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsCollection").field("window", &self.window).field("session", &self.s).finish()
    }
}

/// The event id crmsync uses for the event it creates with this sync key: base32hex
/// (`a-v0-9`) of a SHA-256 prefix, 26 characters.
pub fn event_id_for(key: &SyncKey) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let h = Sha256::digest(key.as_str().as_bytes());
    let mut bits: u128 = u128::from_be_bytes(h[..16].try_into().expect("16 bytes"));
    let mut out = vec![0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(bits & 31) as usize];
        bits >>= 5;
    }
    format!("cs{}", String::from_utf8(out).expect("ascii"))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An `EventDateTime`: in the event's own zone when it has one (the local time and the IANA
/// name, no offset, as the API allows), so a change from the CRM keeps the event in its zone;
/// else the instant in UTC. All-day events are their dates.
fn time_json(t: &EventTime, zone: Option<&str>) -> Value {
    match (t, zone.and_then(time::zone)) {
        (EventTime::At(t), Some(tz)) => json!({
            "dateTime": time::utc_to_local(*t, tz).format("%Y-%m-%dT%H:%M:%S").to_string(),
            "timeZone": tz.name(), "date": null,
        }),
        (EventTime::At(t), None) => json!({"dateTime": rfc3339(*t), "date": null}),
        (EventTime::Date(d), _) => json!({"date": d.format("%Y-%m-%d").to_string(), "dateTime": null}),
    }
}

fn parse_time(v: &Value, which: &str) -> Result<EventTime> {
    if let Some(d) = v["date"].as_str() {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(EventTime::Date)
            .map_err(|_| Error::invalid_item(format!("unparsable {which}.date {d:?}")));
    }
    if let Some(t) = v["dateTime"].as_str() {
        if let Ok(t) = DateTime::parse_from_rfc3339(t) {
            return Ok(EventTime::At(t.with_timezone(&Utc)));
        }
        // A local time in the event's zone (the API answers with an offset, but allows this).
        let local = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
            .map_err(|_| Error::invalid_item(format!("unparsable {which}.dateTime {t:?}")))?;
        let name = v["timeZone"].as_str().unwrap_or_default();
        let tz = time::zone(name).ok_or_else(|| {
            Error::invalid_item(format!("{which}.dateTime {t:?} has no offset and no known time zone ({name:?})"))
        })?;
        return Ok(EventTime::At(time::local_to_utc(local, tz)));
    }
    Err(Error::invalid_item(format!("event has no {which}")))
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).and_then(crmsync_core::model::normalize_text)
}

/// Map a Calendar `Event` to an [`Item`] (id = `id`, version = `etag`).
pub fn event_to_item(e: &Value, no_sync: &NoSync) -> Result<Item> {
    let id = text(e, "id").ok_or_else(|| Error::unexpected("google: event without id"))?;
    let version = text(e, "etag").ok_or_else(|| Error::unexpected(format!("google: event {id} without etag")))?;
    let start = parse_time(&e["start"], "start").map_err(|err| err.context(format!("google: event {id}")))?;
    let end = parse_time(&e["end"], "end").map_err(|err| err.context(format!("google: event {id}")))?;
    let props = &e["extendedProperties"]["private"];
    let mut categories = vec![];
    let flagged = props[no_sync.property.as_str()].as_str() == Some("true");
    let coloured = no_sync.color_id.is_some() && e["colorId"].as_str() == no_sync.color_id.as_deref();
    if flagged || coloured {
        categories.push(no_sync.marker.clone());
    }
    let ev = Event {
        subject: text(e, "summary"),
        start,
        end,
        time_zone: text(&e["start"], "timeZone"),
        location: text(e, "location"),
        description: text(e, "description"),
        attendees: e["attendees"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["resource"].as_bool() != Some(true))
            .filter_map(|a| text(a, "email"))
            .collect(),
        organizer: text(&e["organizer"], "email"),
        private: matches!(e["visibility"].as_str(), Some("private") | Some("confidential")),
        categories,
        series_id: text(e, "recurringEventId"),
        ical_uid: text(e, "iCalUID"),
        cancelled: e["status"].as_str() == Some("cancelled"),
    };
    let record = Record::Event(ev);
    if let Some(reason) = record.invalid_reason() {
        return Err(Error::invalid_item(format!("google: event {id}: {reason}")));
    }
    Ok(Item {
        id,
        version,
        sync_key: props[SYNC_KEY_PROPERTY].as_str().map(|k| SyncKey(k.to_owned())),
        modified: e["updated"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        record,
    })
}

/// The Calendar fields of a canonical event field, as a PATCH body fragment.
fn patch_field(body: &mut Map<String, Value>, field: &str, ev: &Event) {
    let opt = |v: &Option<String>| v.as_ref().map(|s| json!(s)).unwrap_or(Value::Null);
    match field {
        "subject" => {
            body.insert("summary".into(), opt(&ev.subject));
        }
        "location" => {
            body.insert("location".into(), opt(&ev.location));
        }
        "description" => {
            body.insert("description".into(), opt(&ev.description));
        }
        "start" => {
            body.insert("start".into(), time_json(&ev.start, ev.time_zone.as_deref()));
        }
        "end" => {
            body.insert("end".into(), time_json(&ev.end, ev.time_zone.as_deref()));
        }
        "private" => {
            body.insert("visibility".into(), json!(if ev.private { "private" } else { "default" }));
        }
        _ => {}
    }
}

impl EventsCollection {
    pub(crate) fn new(s: Session, window: Window, no_sync: NoSync) -> Self {
        Self { s, window, no_sync }
    }

    fn events_url(&self) -> String {
        self.s.cfg().calendar("calendars/primary/events")
    }

    fn event_url(&self, id: &str) -> String {
        format!("{}/{}", self.events_url(), url_escape(id))
    }

    async fn read(&self, cursor: Option<&str>) -> Result<Changes> {
        let mut out = Changes { full: cursor.is_none(), ..Default::default() };
        let mut page: Option<String> = None;
        loop {
            let mut req = Req::get(self.events_url())
                .q("singleEvents", "true")
                .q("maxResults", self.s.cfg().page_size.to_string());
            match cursor {
                Some(c) => req = req.q("syncToken", c),
                None => {
                    req = req.q("timeMin", rfc3339(self.window.start)).q("timeMax", rfc3339(self.window.end));
                }
            }
            if let Some(p) = &page {
                req = req.q("pageToken", p.clone());
            }
            let v = self.s.send(req).await?;
            for e in v["items"].as_array().into_iter().flatten() {
                let Some(id) = text(e, "id") else {
                    return Err(Error::unexpected("google: event without id in events.list"));
                };
                let cancelled = e["status"].as_str() == Some("cancelled");
                match event_to_item(e, &self.no_sync) {
                    Ok(item) => out.items.push(Change::Upsert(item)),
                    // A deleted event: only `id` (and `status`) are guaranteed.
                    Err(_) if cancelled => out.items.push(Change::Removed(id)),
                    Err(error) => out.failures.push(ItemFailure { id, error }),
                }
            }
            match v["nextPageToken"].as_str() {
                Some(t) => page = Some(t.to_owned()),
                None => {
                    out.cursor = v["nextSyncToken"].as_str().map(str::to_owned);
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn get_one(&self, id: &str) -> Result<Option<Item>> {
        match self.s.send(Req::get(self.event_url(id))).await {
            Ok(v) if v["status"].as_str() == Some("cancelled") => Ok(None),
            Ok(v) => event_to_item(&v, &self.no_sync).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn body_for_create(&self, it: &NewItem) -> Result<Value> {
        let Record::Event(ev) = &it.record else { return Err(Error::invalid_item("not an event")) };
        if let Some(reason) = it.record.invalid_reason() {
            return Err(Error::invalid_item(reason));
        }
        if it.sync_key.as_str().len() > MAX_PROPERTY_VALUE {
            return Err(Error::invalid_item("sync key longer than Calendar's 1024-character property limit"));
        }
        let mut props = Map::new();
        props.insert(SYNC_KEY_PROPERTY.into(), json!(it.sync_key.as_str()));
        if ev.categories.iter().any(|c| c == &self.no_sync.marker) {
            props.insert(self.no_sync.property.clone(), json!("true"));
        }
        let mut body = Map::new();
        body.insert("id".into(), json!(event_id_for(&it.sync_key)));
        for f in EVENT_FIELDS {
            patch_field(&mut body, f, ev);
        }
        body.retain(|_, v| !v.is_null());
        for k in ["start", "end"] {
            if let Some(o) = body.get_mut(k).and_then(Value::as_object_mut) {
                o.retain(|_, v| !v.is_null());
            }
        }
        body.insert("extendedProperties".into(), json!({"private": props}));
        Ok(Value::Object(body))
    }
}

fn url_escape(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn is_fatal(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unauthenticated | ErrorKind::InvalidConfig | ErrorKind::PermissionDenied)
}

#[async_trait]
impl Collection for EventsCollection {
    fn capabilities(&self) -> Capabilities {
        // Calendar writes are single requests, sent one at a time.
        Capabilities { max_batch: 1, fields: EVENT_FIELDS, incremental: true, find_beyond_scope: false }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        self.read(cursor).await.map_err(|e| e.context("google events"))
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let mut out = vec![];
        for id in ids {
            if let Some(i) = self.get_one(id).await? {
                out.push(i);
            }
        }
        Ok(out)
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        let all = self.read(None).await?;
        // One windowed scan. Events crmsync created outside the window need no lookup: their
        // ids derive from the sync key, so a repeated create returns them (409) instead of
        // duplicating.
        let out: Vec<Found> = all
            .items
            .into_iter()
            .filter_map(|c| match c {
                Change::Upsert(i) if keys.iter().any(|k| k.matches(&i)) => Some(Found { item: i, in_scope: true }),
                _ => None,
            })
            .collect();
        Ok(out)
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        let mut out = vec![];
        for (n, it) in items.iter().enumerate() {
            let body = match self.body_for_create(it) {
                Ok(b) => b,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let req = Req::write(Method::POST, self.events_url(), Some(body)).q("sendUpdates", "none");
            let r = match self.s.send(req).await {
                Ok(v) => event_to_item(&v, &self.no_sync),
                Err(e) if e.kind() == ErrorKind::Conflict => match self.get_one(&event_id_for(&it.sync_key)).await {
                    Ok(Some(i)) => Ok(i),
                    Ok(None) => Err(Error::new(
                        ErrorKind::Conflict,
                        format!("google: the event created for sync key {} was deleted", it.sync_key),
                    )),
                    Err(e) => Err(e),
                },
                Err(e) if n == 0 && is_fatal(&e) => return Err(e.context("google events: create")),
                Err(e) => Err(e),
            };
            out.push(r);
        }
        Ok(out)
    }

    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        let mut out = vec![];
        for (n, u) in items.iter().enumerate() {
            let Record::Event(ev) = &u.record else {
                out.push(Err(Error::invalid_item("not an event")));
                continue;
            };
            let mut body = Map::new();
            for f in &u.fields {
                patch_field(&mut body, f, ev);
            }
            let req = Req::write(Method::PATCH, self.event_url(&u.id), Some(Value::Object(body))).if_match(&u.version);
            match self.s.send(req).await {
                Ok(v) => out.push(event_to_item(&v, &self.no_sync)),
                Err(e) if n == 0 && is_fatal(&e) => return Err(e.context("google events: update")),
                Err(e) => out.push(Err(e)),
            }
        }
        Ok(out)
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        let mut out = vec![];
        for (n, id) in ids.iter().enumerate() {
            match self.s.send(Req::write(Method::DELETE, self.event_url(id), None).q("sendUpdates", "none")).await {
                Ok(_) => out.push(Ok(())),
                Err(e) if e.kind() == ErrorKind::NotFound => out.push(Ok(())),
                Err(e) if n == 0 && is_fatal(&e) => return Err(e.context("google events: delete")),
                Err(e) => out.push(Err(e)),
            }
        }
        Ok(out)
    }

    fn requests(&self) -> u64 {
        self.s.requests()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> NoSync {
        NoSync { marker: "Don't Sync".into(), property: "crmsyncNoSync".into(), color_id: Some("8".into()) }
    }

    #[test]
    fn event_ids_are_valid_base32hex_and_stable() {
        let k = SyncKey("cs1.abcd.1234".into());
        let id = event_id_for(&k);
        assert_eq!(id, event_id_for(&k));
        assert!(id.len() >= 5 && id.chars().all(|c| matches!(c, 'a'..='v' | '0'..='9')), "{id}");
        assert_ne!(id, event_id_for(&SyncKey("cs1.abcd.1235".into())));
    }

    #[test]
    fn events_map_all_day_private_marker_and_series() {
        let e = json!({"id": "abc_20260102", "etag": "\"1\"", "summary": "Offsite", "status": "confirmed",
            "start": {"date": "2026-01-02"}, "end": {"date": "2026-01-03"}, "visibility": "private",
            "recurringEventId": "abc", "iCalUID": "abc@google.com", "colorId": "8",
            "attendees": [{"email": "a@x.io"}, {"email": "room@x.io", "resource": true}], "organizer": {"email": "o@x.io"}});
        let item = event_to_item(&e, &ns()).unwrap();
        let ev = item.record.as_event().unwrap();
        assert!(ev.all_day() && ev.private);
        assert_eq!(ev.categories, vec!["Don't Sync"]);
        assert_eq!(ev.series_id.as_deref(), Some("abc"));
        assert_eq!(ev.attendees, vec!["a@x.io"]);
        let bad = json!({"id": "x1", "etag": "e", "start": {"dateTime": "tomorrow"}, "end": {"dateTime": "later"}});
        assert_eq!(event_to_item(&bad, &ns()).unwrap_err().kind(), ErrorKind::InvalidItem);
    }
}
