//! The contacts and events collections of one rep.
//!
//! Reads are SOQL (`query` for full reads, `queryAll` from a `SystemModstamp` high-water mark for
//! incremental reads, so deletions show up as `IsDeleted` rows); writes go through one
//! `/composite` request per batch of ≤ 200 that carries the sObject Collections write and a
//! query reading the written records back (so the engine gets each record's new
//! `SystemModstamp` without a second HTTP request).
//!
//! Incremental reads are org-wide (a record that left a rep's scope must be seen to be reported
//! as removed), so the reps of one connector share them: one [`Feed`] per kind holds the last
//! org-wide change read, and each rep takes its own rows from it. A rep reading again (its next
//! cycle, or after a full read of its own), a mark older than the feed's, or a feed older than
//! [`FEED_MAX_AGE`] queries anew;
//! the CRM requests of a round of reps grow with the changes, not with reps × org size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeZone, Utc};
use crmsync_core::model::check_batch;
use crmsync_core::{
    Capabilities, Change, Changes, Collection, ContactFilter, Criterion, CriterionOp, Error, ErrorKind, Found, Item,
    ItemFailure, Kind, MatchKey, NewItem, Record, Result, Update, Window,
};
use crmsync_http::Counter;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, kind_for_code};
use crate::mapping::{self, CONTACT_FIELDS, contact_field, item_from_row, select_list, sobject};
use crate::relations::{RelOp, related};
use crate::soql::{self, quote};

/// Largest sObject Collections request.
pub const MAX_BATCH: usize = 200;

/// Records per query page the org sends: the REST API's default and most (crmsync asks for no
/// other).
pub const QUERY_PAGE: usize = 2000;
/// Longest SOQL text (URL-encoded) one request carries; the URI limit is 16,384 bytes.
const MAX_QUERY_LEN: usize = 12_000;
/// How far back Salesforce keeps deleted records (recycle bin / `queryAll`).
const DELETED_WINDOW_DAYS: i64 = 15;

/// An update's relations: (position in the batch, event id, the contacts to relate, primary
/// first, the `WhoId` before the write).
type RelPlan = (usize, String, Vec<(String, String)>, Option<String>);

/// Which contacts a rep's collection holds.
#[derive(Clone, Debug)]
pub(crate) enum Scope {
    Owned,
    Visible,
    Criteria(Vec<(Criterion, &'static str)>),
}

impl Scope {
    pub fn from_filter(f: &ContactFilter) -> Result<Scope> {
        Ok(match f {
            ContactFilter::Owned => Scope::Owned,
            ContactFilter::Visible => Scope::Visible,
            ContactFilter::Criteria(cs) => Scope::Criteria(
                cs.iter()
                    .map(|c| {
                        contact_field(&c.field).map(|f| (c.clone(), f)).ok_or_else(|| {
                            Error::invalid_config(format!(
                                "salesforce: contact filter field {:?} is not one the adapter maps ({})",
                                c.field,
                                CONTACT_FIELDS.join(", ")
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

/// One rep's contacts or events.
#[derive(Debug)]
pub(crate) struct SfCollection {
    pub client: Arc<Client>,
    pub kind: Kind,
    pub owner: String,
    /// The rep's id (what its sync keys are derived from).
    pub rep: String,
    pub scope: Scope,
    pub window: Window,
    pub requests: Counter,
    pub directory: Directory,
    pub feeds: Feeds,
}

/// Owner → (when read, lower-case e-mail → Contact Id), filled by full contact reads so that
/// the Events written right after (same cycle) find their `WhoId` without a query per batch.
pub(crate) type Directory = Arc<std::sync::Mutex<HashMap<String, (std::time::Instant, HashMap<String, String>)>>>;

/// The last org-wide change read of one kind, shared by the reps of a connector.
#[derive(Debug)]
pub(crate) struct Feed {
    /// The query's lower bound (whole seconds).
    since: i64,
    fetched: std::time::Instant,
    /// Server time of the read.
    date: DateTime<Utc>,
    rows: Arc<Vec<Value>>,
    /// Owners that took their rows from it: one asking again starts a new round.
    served: BTreeSet<String>,
}

/// The contacts and events feeds of a connector.
pub(crate) type Feeds = Arc<[tokio::sync::Mutex<Option<Feed>>; 2]>;

/// How long a feed serves reps that have not read it yet.
const FEED_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a full contact read answers `WhoId` look-ups.
const DIRECTORY_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The incremental-read cursor: server time of the read (seconds), the newest `SystemModstamp`
/// seen (milliseconds) and the (id, stamp) pairs delivered at exactly that stamp. The next read
/// asks for everything from that stamp's second on (SOQL literals are whole seconds; real orgs
/// stamp whole seconds), skips what is older than the mark or already delivered, and reports
/// the rest.
#[derive(Debug, PartialEq)]
struct Cursor {
    read_at: i64,
    hw: i64,
    seen: BTreeSet<(String, i64)>,
}

impl Cursor {
    fn encode(&self) -> String {
        let seen: Vec<String> = self.seen.iter().map(|(id, ms)| format!("{id}:{ms}")).collect();
        format!("sf1.{}.{}.{}", self.read_at, self.hw, seen.join(","))
    }
    fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.splitn(4, '.');
        (parts.next()? == "sf1").then_some(())?;
        let read_at = parts.next()?.parse().ok()?;
        let hw = parts.next()?.parse().ok()?;
        let seen = parts
            .next()?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once(':').and_then(|(id, ms)| Some((id.to_owned(), ms.parse().ok()?))))
            .collect::<Option<_>>()?;
        Some(Cursor { read_at, hw, seen })
    }
}

fn stamp_ms(row: &Value) -> Option<i64> {
    row.get("SystemModstamp").and_then(Value::as_str).and_then(mapping::parse_time).map(|t| t.timestamp_millis())
}

fn parse_sf_ms(s: &str) -> Option<i64> {
    mapping::parse_time(s).map(|t| t.timestamp_millis())
}

fn secs(t: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(t, 0).single().unwrap_or_default()
}

impl SfCollection {
    fn ctr(&self) -> &Counter {
        &self.requests
    }
    fn key_field(&self) -> &str {
        &self.client.cfg.sync_key_field
    }
    fn select(&self) -> String {
        select_list(self.kind, self.key_field())
    }

    /// The WHERE condition of the full read.
    fn scope_where(&self) -> String {
        let owner = format!("OwnerId = {}", quote(&self.owner));
        match self.kind {
            Kind::Event => format!(
                "{owner} AND StartDateTime < {} AND EndDateTime > {}",
                soql::datetime(self.window.end),
                soql::datetime(self.window.start)
            ),
            Kind::Contact => match &self.scope {
                Scope::Owned => owner,
                Scope::Visible => String::new(),
                Scope::Criteria(cs) => {
                    let mut parts = vec![owner];
                    for (c, f) in cs {
                        parts.push(match (c.op, c.value.is_empty()) {
                            (CriterionOp::Eq, true) => format!("{f} = null"),
                            (CriterionOp::Ne, true) => format!("{f} != null"),
                            (CriterionOp::Eq, false) => format!("{f} = {}", quote(&c.value)),
                            (CriterionOp::Ne, false) => format!("{f} != {}", quote(&c.value)),
                            (CriterionOp::StartsWith, _) => format!("{f} LIKE {}", soql::quote_like("", &c.value, "%")),
                        });
                    }
                    parts.join(" AND ")
                }
            },
        }
    }

    /// Whether a read row is inside this collection's scope (owner and criteria; not the
    /// event window).
    /// Whether the row may be in this collection's scope by its owner (a `Visible` contact
    /// scope takes any owner).
    fn owns(&self, row: &Value) -> bool {
        matches!((self.kind, &self.scope), (Kind::Contact, Scope::Visible))
            || row.get("OwnerId").and_then(Value::as_str).is_some_and(|o| same_id(o, &self.owner))
    }

    fn in_scope(&self, row: &Value, item: &Item) -> bool {
        let owner_ok = row.get("OwnerId").and_then(Value::as_str).is_some_and(|o| same_id(o, &self.owner));
        match (self.kind, &self.scope) {
            (Kind::Event, _) | (Kind::Contact, Scope::Owned) => owner_ok,
            (Kind::Contact, Scope::Visible) => true,
            (Kind::Contact, Scope::Criteria(cs)) => {
                let canon = item.record.canon();
                owner_ok && cs.iter().all(|(c, _)| c.matches(canon.get(&c.field)))
            }
        }
    }

    fn soql(&self, cond: &str, extra_select: &str, order: &str) -> String {
        let mut q = format!("SELECT {}{extra_select} FROM {}", self.select(), sobject(self.kind));
        if !cond.is_empty() {
            q.push_str(" WHERE ");
            q.push_str(cond);
        }
        q.push_str(order);
        q
    }

    /// Split quoted literals into `IN` lists that keep each query under the length limit.
    pub(crate) fn chunks(&self, base_len: usize, quoted: Vec<String>) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = vec![];
        let mut cur = vec![];
        let mut len = base_len;
        for q in quoted {
            let l = soql::encoded_len(&q) + 6;
            if !cur.is_empty() && len + l > MAX_QUERY_LEN {
                out.push(std::mem::take(&mut cur));
                len = base_len;
            }
            len += l;
            cur.push(q);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    async fn rows_by_ids(&self, ids: &[String]) -> Result<Vec<Value>> {
        let base = soql::encoded_len(&self.soql("Id IN ()", "", ""));
        let mut rows = vec![];
        for chunk in self.chunks(base, ids.iter().filter(|i| is_id(i)).map(|i| quote(i)).collect()) {
            let q = self.soql(&format!("Id IN {}", soql::in_list(&chunk)), "", "");
            rows.extend(self.client.query(self.ctr(), &q, false).await?.records);
        }
        Ok(rows)
    }

    async fn full_read(&self) -> Result<Changes> {
        let q = self.soql(&self.scope_where(), "", " ORDER BY Id");
        let res = self.client.query(self.ctr(), &q, false).await?;
        // The kind's shared change read, if any, is older than this read: it has nothing this
        // rep has not seen, and taking it next cycle would skip what changed in between.
        if let Some(f) = self.feeds[usize::from(self.kind == Kind::Event)].lock().await.as_mut() {
            f.served.insert(self.owner.clone());
        }
        let now = res.date.unwrap_or_else(Utc::now);
        let mut out = Changes { full: true, ..Default::default() };
        let mut max_ms = None;
        let mut stamps = vec![];
        for row in &res.records {
            match item_from_row(self.kind, row, self.key_field()) {
                Ok(item) => {
                    if let Some(ms) = stamp_ms(row) {
                        max_ms = max_ms.max(Some(ms));
                        stamps.push((item.id.clone(), ms));
                    }
                    out.items.push(Change::Upsert(item));
                }
                Err(e) => out.failures.push(failure(row, e)),
            }
        }
        if self.kind == Kind::Contact {
            let mut by_email = HashMap::new();
            for row in &res.records {
                let field = |f: &str| row.get(f).and_then(Value::as_str);
                if let (Some(id), Some(email), Some(owner)) = (field("Id"), field("Email"), field("OwnerId"))
                    && same_id(owner, &self.owner)
                {
                    by_email.entry(email.to_lowercase()).or_insert_with(|| id.to_owned());
                }
            }
            let mut dir = self.directory.lock().expect("directory poisoned");
            dir.insert(self.owner.clone(), (std::time::Instant::now(), by_email));
        }
        let hw = max_ms.unwrap_or(now.timestamp() * 1000);
        let seen = stamps.into_iter().filter(|(_, ms)| *ms == hw).collect();
        out.cursor = Some(Cursor { read_at: now.timestamp(), hw, seen }.encode());
        Ok(out)
    }

    async fn incremental(&self, cursor: &str) -> Result<Changes> {
        let expired =
            || Error::new(ErrorKind::CursorExpired, "salesforce: cursor expired or unreadable; read everything again");
        let cur = Cursor::decode(cursor).ok_or_else(expired)?;
        let (rows, now) = self.changed_since(cur.hw.div_euclid(1000)).await?;
        if now - secs(cur.read_at) > Duration::days(DELETED_WINDOW_DAYS) {
            return Err(expired().context(format!(
                "last read {} is beyond the {DELETED_WINDOW_DAYS}-day deleted-records window",
                secs(cur.read_at)
            )));
        }
        let mut out = Changes { full: false, ..Default::default() };
        let mut hw = cur.hw;
        let mut stamps = vec![];
        for row in rows.iter() {
            let Some(id) = row.get("Id").and_then(Value::as_str).map(str::to_owned) else {
                out.failures.push(failure(row, "record without Id".into()));
                continue;
            };
            let ms = stamp_ms(row).unwrap_or(cur.hw);
            hw = hw.max(ms);
            stamps.push((id.clone(), ms));
            // Older than the newest change the last read saw: its state then is its state now
            // (it was read then, or was out of scope then as now).
            if ms < cur.hw || cur.seen.contains(&(id.clone(), ms)) {
                continue;
            }
            if !self.owns(row) {
                // Another owner's change in the org-wide feed: it is this rep's news only if the
                // record was in the rep's scope before (it left: removed). One created after the
                // rep's last read (after the whole second of its server time), by anybody but
                // this rep's own creates (its sync key), the rep never saw. Neither needs parsing: with many reps, most of the feed is others'.
                let key =
                    row.get(self.key_field()).and_then(Value::as_str).map(|k| crmsync_core::SyncKey(k.to_owned()));
                let created_ms = row.get("CreatedDate").and_then(Value::as_str).and_then(parse_sf_ms);
                if created_ms.is_some_and(|c| c >= (cur.read_at + 1) * 1000)
                    && !key.is_some_and(|k| k.belongs_to(&self.rep))
                {
                    continue;
                }
                out.items.push(Change::Removed(id));
                continue;
            }
            if row.get("IsDeleted").and_then(Value::as_bool).unwrap_or(false) {
                out.items.push(Change::Removed(id));
                continue;
            }
            match item_from_row(self.kind, row, self.key_field()) {
                Ok(item) if self.in_scope(row, &item) => out.items.push(Change::Upsert(item)),
                Ok(_) => out.items.push(Change::Removed(id)),
                Err(e) => out.failures.push(failure(row, e)),
            }
        }
        let seen = stamps.into_iter().filter(|(_, ms)| *ms == hw).collect();
        out.cursor = Some(Cursor { read_at: now.timestamp(), hw, seen }.encode());
        Ok(out)
    }

    /// Every change since `since` (seconds), org-wide: a record that left the scope (new owner,
    /// criteria no longer met) must be seen to be reported as removed. Served from the kind's
    /// [`Feed`] when another rep of this round read it already.
    async fn changed_since(&self, since: i64) -> Result<(Arc<Vec<Value>>, DateTime<Utc>)> {
        let mut slot = self.feeds[usize::from(self.kind == Kind::Event)].lock().await;
        if let Some(f) = slot.as_mut()
            && f.since <= since
            && f.fetched.elapsed() < FEED_MAX_AGE
            && f.served.insert(self.owner.clone())
        {
            return Ok((f.rows.clone(), f.date));
        }
        let q = self.soql(
            &format!("SystemModstamp >= {}", soql::datetime(secs(since))),
            ", IsDeleted, CreatedDate",
            " ORDER BY SystemModstamp, Id",
        );
        let res = self.client.query(self.ctr(), &q, true).await?;
        let date = res.date.unwrap_or_else(Utc::now);
        let rows = Arc::new(res.records);
        *slot = Some(Feed {
            since,
            fetched: std::time::Instant::now(),
            date,
            rows: rows.clone(),
            served: BTreeSet::from([self.owner.clone()]),
        });
        Ok((rows, date))
    }

    /// One `/composite` request: the collections write, then the query reading the written
    /// records back. Returns (write status, write body, read records).
    async fn composite(
        &self,
        method: &str,
        url: String,
        body: Value,
        read: String,
    ) -> Result<(u16, Value, Vec<Value>)> {
        let read_url = format!(
            "{}?q={}",
            self.client.data_path("/query"),
            url::form_urlencoded::byte_serialize(read.as_bytes()).collect::<String>()
        );
        let req = json!({"allOrNone": false, "collateSubrequests": false, "compositeRequest": [
            {"method": method, "url": url, "referenceId": "write", "body": body},
            {"method": "GET", "url": read_url, "referenceId": "read"},
        ]});
        let raw =
            self.client.call(self.ctr(), Method::POST, &self.client.data_path("/composite"), &[], Some(&req)).await?;
        let resp = raw.json("salesforce")?;
        let subs = resp
            .get("compositeResponse")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .ok_or_else(|| Error::unexpected("salesforce: composite answer without two subresponses"))?;
        let status = |v: &Value| v.get("httpStatusCode").and_then(Value::as_u64).unwrap_or(0) as u16;
        let write_status = status(&subs[0]);
        let write_body = subs[0].get("body").cloned().unwrap_or(Value::Null);
        let read_body = subs[1].get("body").cloned().unwrap_or(Value::Null);
        let records = if status(&subs[1]) < 300 {
            read_body.get("records").and_then(Value::as_array).cloned().unwrap_or_default()
        } else if write_status < 300 {
            // The write happened, the read-back failed: the items are unknown; say so per item.
            vec![]
        } else {
            vec![]
        };
        Ok((write_status, write_body, records))
    }

    /// Per-item results of a collections write body (an array of SaveResults in request order,
    /// or one error array for the whole subrequest).
    /// A failure of the whole write (unknown field, no access, limits) is an error of the call.
    fn save_results(&self, status: u16, body: &Value, n: usize) -> Result<Vec<Result<String>>> {
        if status >= 300 {
            let text = body.to_string();
            let e = crate::client::parse_error(status, &reqwest::header::HeaderMap::new(), &text);
            if e.kind() != ErrorKind::InvalidItem {
                return Err(e);
            }
            return Ok((0..n).map(|_| Err(e.clone())).collect());
        }
        let arr = body.as_array().cloned().unwrap_or_default();
        Ok((0..n)
            .map(|i| {
                let Some(r) = arr.get(i) else {
                    return Err(Error::unexpected("salesforce: collections answer has fewer results than records"));
                };
                if r.get("success").and_then(Value::as_bool) == Some(true) {
                    r.get("id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| Error::unexpected("salesforce: success without id"))
                } else {
                    Err(record_error(r))
                }
            })
            .collect())
    }

    /// After the events of an update batch were written (with their new `WhoId`): create the
    /// relations to the attendees' contacts that are missing, delete those to contacts that are
    /// no attendee, and report each event's related attendees on its returned item.
    async fn rewrite_relations(
        &self,
        out: &mut [Option<Result<Item>>],
        plans: Vec<RelPlan>,
        existing: &[crate::relations::Relation],
    ) -> Result<()> {
        let mut ops = vec![];
        let mut owners: Vec<Option<(usize, String)>> = vec![];
        let mut related_to: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, event, rel, old_who) in plans {
            if !matches!(out[i], Some(Ok(_))) {
                continue;
            }
            let pre: Vec<_> = existing.iter().filter(|r| same_id(&r.event, &event)).collect();
            let wanted = |c: &str| rel.iter().any(|(_, id)| same_id(id, c));
            for r in pre.iter().filter(|r| !wanted(&r.contact)) {
                ops.push(RelOp::Delete(r.id.clone()));
                owners.push(None);
            }
            let entry = related_to.entry(i).or_default();
            let moved = rel.first().is_none_or(|(_, c)| old_who.as_deref().is_none_or(|w| !same_id(w, c)));
            for (n, (email, contact)) in rel.iter().enumerate() {
                // A new primary is related by the org when `WhoId` moves to it; the contact it
                // replaces may lose its relation then (created again: a duplicate is harmless).
                let moved_here = n == 0 && moved;
                let was_who = moved && old_who.as_deref().is_some_and(|w| same_id(w, contact));
                if moved_here || (!was_who && pre.iter().any(|r| same_id(&r.contact, contact))) {
                    entry.push(email.clone());
                } else {
                    ops.push(RelOp::Create { event: event.clone(), contact: contact.clone() });
                    owners.push(Some((i, email.clone())));
                }
            }
        }
        let results = if ops.is_empty() { vec![] } else { self.write_relations(&ops).await? };
        for (owner, res) in owners.into_iter().zip(results) {
            match (owner, res) {
                (Some((i, email)), Ok(())) => related_to.entry(i).or_default().push(email),
                (_, Err(e)) => tracing::warn!("salesforce: an event relation was not written: {e}"),
                (None, Ok(())) => {}
            }
        }
        for (i, emails) in related_to {
            if let Some(Ok(Item { record: Record::Event(ev), .. })) = out[i].as_mut() {
                ev.attendees = emails;
            }
        }
        Ok(())
    }

    fn items_by_id(&self, rows: &[Value]) -> HashMap<String, Result<Item>> {
        rows.iter()
            .filter_map(|row| {
                let id = row.get("Id")?.as_str()?.to_owned();
                Some((id, item_from_row(self.kind, row, self.key_field()).map_err(Error::unexpected)))
            })
            .collect()
    }

    /// Contact ids (the rep's contacts) for the attendee e-mails of a batch of events: one query.
    async fn contact_ids<'a>(&self, records: impl Iterator<Item = &'a Record>) -> Result<HashMap<String, String>> {
        let mut emails: BTreeSet<String> = records.flat_map(|r| r.emails()).collect();
        let mut out = HashMap::new();
        // What a recent full read of the rep's contacts already knows costs no query.
        if let Some((at, known)) = self.directory.lock().expect("directory poisoned").get(&self.owner)
            && at.elapsed() < DIRECTORY_TTL
        {
            emails.retain(|e| match known.get(e) {
                Some(id) => {
                    out.insert(e.clone(), id.clone());
                    false
                }
                None => true,
            });
        }
        if emails.is_empty() {
            return Ok(out);
        }
        let base = format!("SELECT Id, Email FROM Contact WHERE OwnerId = {} AND Email IN ", quote(&self.owner));
        for chunk in self.chunks(soql::encoded_len(&base) + 40, emails.iter().map(|e| quote(e)).collect()) {
            let q = format!("{base}{} ORDER BY CreatedDate, Id", soql::in_list(&chunk));
            for row in self.client.query(self.ctr(), &q, false).await?.records {
                if let (Some(id), Some(email)) =
                    (row.get("Id").and_then(Value::as_str), row.get("Email").and_then(Value::as_str))
                {
                    out.entry(email.to_lowercase()).or_insert_with(|| id.to_owned());
                }
            }
        }
        Ok(out)
    }
}

fn failure(row: &Value, e: String) -> ItemFailure {
    let id = row.get("Id").and_then(Value::as_str).unwrap_or("?").to_owned();
    ItemFailure { id, error: Error::unexpected(format!("salesforce: unreadable record: {e}")) }
}

/// A failed SaveResult → error with Salesforce's own message.
pub(crate) fn record_error(r: &Value) -> Error {
    let first = r.get("errors").and_then(Value::as_array).and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
    let code =
        first.get("statusCode").or_else(|| first.get("errorCode")).and_then(Value::as_str).unwrap_or("UNKNOWN_ERROR");
    let msg = first.get("message").and_then(Value::as_str).unwrap_or("no message");
    let fields = first
        .get("fields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let mut m = format!("salesforce {code}: {msg}");
    if !fields.is_empty() {
        m.push_str(&format!(" (fields: {fields})"));
    }
    let kind = kind_for_code(code);
    let e = Error::new(kind, m);
    if kind == ErrorKind::Transport { e.temporary(None) } else { e }
}

/// Salesforce ids compare on their first 15 characters (the 18-char form adds a case checksum).
pub(crate) fn same_id(a: &str, b: &str) -> bool {
    a.get(..15).is_some() && a.get(..15) == b.get(..15)
}

/// A plausible 15- or 18-character Salesforce id (alphanumeric).
pub(crate) fn is_id(s: &str) -> bool {
    matches!(s.len(), 15 | 18) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

#[async_trait]
impl Collection for SfCollection {
    fn capabilities(&self) -> Capabilities {
        match self.kind {
            Kind::Contact => Capabilities {
                max_batch: MAX_BATCH,
                fields: CONTACT_FIELDS,
                incremental: true,
                find_beyond_scope: true,
            },
            Kind::Event => Capabilities {
                max_batch: MAX_BATCH,
                fields: Kind::Event.fields(),
                incremental: true,
                find_beyond_scope: false,
            },
        }
    }

    async fn changes(&self, cursor: Option<&str>) -> Result<Changes> {
        match cursor {
            None => self.full_read().await,
            Some(c) => self.incremental(c).await,
        }
        .map_err(|e| e.context(format!("salesforce {}s", self.kind.as_str())))
    }

    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>> {
        let rows = self.rows_by_ids(ids).await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let item = item_from_row(self.kind, row, self.key_field()).ok()?;
                self.in_scope(row, &item).then_some(item)
            })
            .collect())
    }

    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>> {
        // (field, literal) pairs; SubjectStart is a whole condition of its own.
        let mut terms: Vec<(&str, String)> = vec![];
        for k in keys {
            match (k, self.kind) {
                (MatchKey::SyncKey(s), _) => terms.push((self.key_field(), quote(s.as_str()))),
                (MatchKey::Email(e), Kind::Contact) => terms.push(("Email", quote(e))),
                (MatchKey::NamePhone { name, .. }, Kind::Contact) => terms.push(("Name", quote(name))),
                (MatchKey::SubjectStart { subject, start }, Kind::Event) => {
                    let Some(t) = mapping::parse_time(start) else { continue };
                    terms.push((
                        "",
                        format!("(Subject = {} AND StartDateTime = {})", quote(subject), soql::datetime(t)),
                    ));
                }
                _ => {}
            }
        }
        if terms.is_empty() {
            return Ok(vec![]);
        }
        terms.sort();
        terms.dedup();
        let owner = match self.kind {
            Kind::Event => format!("OwnerId = {} AND ", quote(&self.owner)),
            Kind::Contact => String::new(),
        };
        let base = soql::encoded_len(&self.soql(&format!("{owner}()"), "", "")) + 64;
        // Greedy packing of every term into as few queries as the length limit allows.
        let mut queries: Vec<BTreeMap<&str, Vec<String>>> = vec![BTreeMap::new()];
        let mut len = base;
        for (field, lit) in terms {
            let l = soql::encoded_len(&lit) + soql::encoded_len(field) + 16;
            if len + l > MAX_QUERY_LEN && !queries.last().expect("one").is_empty() {
                queries.push(BTreeMap::new());
                len = base;
            }
            len += l;
            queries.last_mut().expect("one").entry(field).or_default().push(lit);
        }
        let mut found: BTreeMap<String, Found> = BTreeMap::new();
        let texts: Vec<String> = queries
            .into_iter()
            .map(|q| {
                let cond: Vec<String> = q
                    .into_iter()
                    .flat_map(|(field, lits)| {
                        if field.is_empty() { lits } else { vec![format!("{field} IN {}", soql::in_list(&lits))] }
                    })
                    .collect();
                self.soql(&format!("{owner}({})", cond.join(" OR ")), "", "")
            })
            .collect();
        {
            for row in self.client.query_many(self.ctr(), &texts).await? {
                let Ok(item) = item_from_row(self.kind, &row, self.key_field()) else { continue };
                if keys.iter().any(|k| k.matches(&item)) {
                    let in_scope = self.in_scope(&row, &item);
                    found.insert(item.id.clone(), Found { item, in_scope });
                }
            }
        }
        Ok(found.into_values().collect())
    }

    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len(), MAX_BATCH)?;
        let mut out: Vec<Option<Result<Item>>> =
            items.iter().map(|it| it.record.invalid_reason().map(|r| Err(Error::invalid_item(r)))).collect();
        let send: Vec<(usize, &NewItem)> = items.iter().enumerate().filter(|(i, _)| out[*i].is_none()).collect();
        if send.is_empty() {
            return Ok(out.into_iter().map(|r| r.expect("decided")).collect());
        }
        let contacts = match self.kind {
            Kind::Event => self.contact_ids(send.iter().map(|(_, it)| &it.record)).await?,
            Kind::Contact => HashMap::new(),
        };
        let rels: Vec<Vec<(String, String)>> =
            send.iter().map(|(_, it)| related(&it.record.emails(), &contacts)).collect();
        let ty = sobject(self.kind);
        let records: Vec<Value> = send
            .iter()
            .zip(&rels)
            .map(|((_, it), rel)| {
                let mut m = mapping::fields_json(&it.record, None, true);
                m.insert("attributes".into(), json!({"type": ty}));
                m.insert(self.key_field().to_owned(), json!(it.sync_key.as_str()));
                m.insert("OwnerId".into(), json!(self.owner));
                if let Some((_, who)) = rel.first() {
                    m.insert("WhoId".into(), json!(who));
                }
                Value::Object(m)
            })
            .collect();
        let keys: Vec<String> = send.iter().map(|(_, it)| quote(it.sync_key.as_str())).collect();
        let read = self.soql(&format!("{} IN {}", self.key_field(), soql::in_list(&keys)), "", "");
        let url = self.client.data_path(&format!("/composite/sobjects/{ty}/{}", self.key_field()));
        let (status, body, rows) =
            self.composite("PATCH", url, json!({"allOrNone": false, "records": records}), read).await?;
        let mut by_id = self.items_by_id(&rows);
        let mut made = vec![];
        for (((i, _), res), rel) in send.iter().zip(self.save_results(status, &body, send.len())?).zip(rels) {
            let res = res.and_then(|id| {
                by_id
                    .remove(&id)
                    .unwrap_or_else(|| Err(Error::unexpected(format!("salesforce: written record {id} not read back"))))
            });
            if let Ok(item) = &res {
                made.push((*i, item.id.clone(), rel));
            }
            out[*i] = Some(res);
        }
        // The contacts after the primary: EventRelation rows, batched.
        let mut ops = vec![];
        let mut owners = vec![];
        for (i, event, rel) in &made {
            for (email, contact) in rel.iter().skip(1) {
                ops.push(RelOp::Create { event: event.clone(), contact: contact.clone() });
                owners.push((*i, email.clone()));
            }
        }
        let results = if ops.is_empty() { vec![] } else { self.write_relations(&ops).await? };
        let mut related_to: HashMap<usize, Vec<String>> =
            made.iter().map(|(i, _, rel)| (*i, rel.iter().take(1).map(|(e, _)| e.clone()).collect())).collect();
        for ((i, email), res) in owners.into_iter().zip(results) {
            match res {
                Ok(()) => related_to.entry(i).or_default().push(email),
                Err(e) => tracing::warn!("salesforce: event not related to the contact of {email}: {e}"),
            }
        }
        for (i, emails) in related_to {
            if let Some(Ok(Item { record: Record::Event(ev), .. })) = out[i].as_mut() {
                ev.attendees = emails;
            }
        }
        Ok(out.into_iter().map(|r| r.expect("decided")).collect())
    }

    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>> {
        check_batch(items.len(), MAX_BATCH)?;
        if items.is_empty() {
            return Ok(vec![]);
        }
        // Pre-read of the current SystemModstamps (one query for the batch): Contact and Event
        // have no ETag, and If-Unmodified-Since would need one request per record.
        let ids: Vec<String> = items.iter().map(|u| u.id.clone()).collect();
        let current: HashMap<String, (Value, Item)> = self
            .rows_by_ids(&ids)
            .await?
            .into_iter()
            .filter_map(|row| {
                let item = item_from_row(self.kind, &row, self.key_field()).ok()?;
                Some((item.id.clone(), (row, item)))
            })
            .collect();
        let mut out: Vec<Option<Result<Item>>> = vec![];
        let mut send: Vec<(usize, Value)> = vec![];
        let ty = sobject(self.kind);
        // Updates that write the attendees rewrite the event's contact relations.
        let relating: Vec<&Update> =
            items.iter().filter(|u| self.kind == Kind::Event && u.fields.iter().any(|f| f == "attendees")).collect();
        let (contacts, existing) = if relating.is_empty() {
            (HashMap::new(), vec![])
        } else {
            let ids: Vec<String> = relating.iter().map(|u| u.id.clone()).collect();
            (self.contact_ids(relating.iter().map(|u| &u.record)).await?, self.relations(&ids).await?)
        };
        let mut rel_plans: Vec<RelPlan> = vec![];
        for (i, u) in items.iter().enumerate() {
            let cur = current.get(&u.id).filter(|(row, item)| self.in_scope(row, item));
            let Some((_, item)) = cur else {
                out.push(Some(Err(Error::not_found(format!("salesforce: no {ty} {} in scope", u.id)))));
                continue;
            };
            if item.version != u.version {
                out.push(Some(Err(Error::new(
                    ErrorKind::PreconditionFailed,
                    format!("salesforce: {ty} {} changed (SystemModstamp {} ≠ {})", u.id, item.version, u.version),
                ))));
                continue;
            }
            let mut merged = item.record.clone();
            u.apply_to(&mut merged);
            if let Some(reason) = merged.invalid_reason() {
                out.push(Some(Err(Error::invalid_item(reason))));
                continue;
            }
            let mut m = mapping::fields_json(&merged, Some(&u.fields), false);
            m.insert("attributes".into(), json!({"type": ty}));
            m.insert("id".into(), json!(u.id));
            if relating.iter().any(|r| r.id == u.id) {
                let rel = related(&merged.emails(), &contacts);
                let who = cur.and_then(|(row, _)| row.get("WhoId")).and_then(Value::as_str).map(str::to_owned);
                m.insert("WhoId".into(), rel.first().map_or(Value::Null, |(_, c)| json!(c)));
                rel_plans.push((i, u.id.clone(), rel, who));
            }
            send.push((i, Value::Object(m)));
            out.push(None);
        }
        if !send.is_empty() {
            let lits: Vec<String> = send.iter().map(|(i, _)| quote(&items[*i].id)).collect();
            let read = self.soql(&format!("Id IN {}", soql::in_list(&lits)), "", "");
            let records: Vec<Value> = send.iter().map(|(_, v)| v.clone()).collect();
            let url = self.client.data_path("/composite/sobjects");
            let (status, body, rows) =
                self.composite("PATCH", url, json!({"allOrNone": false, "records": records}), read).await?;
            let mut by_id = self.items_by_id(&rows);
            for ((i, _), res) in send.iter().zip(self.save_results(status, &body, send.len())?) {
                out[*i] = Some(res.and_then(|id| {
                    by_id.remove(&id).unwrap_or_else(|| {
                        Err(Error::unexpected(format!("salesforce: updated record {id} not read back")))
                    })
                }));
            }
            self.rewrite_relations(&mut out, rel_plans, &existing).await?;
        }
        Ok(out.into_iter().map(|r| r.expect("decided")).collect())
    }

    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>> {
        check_batch(ids.len(), MAX_BATCH)?;
        let valid: Vec<&String> = ids.iter().filter(|i| is_id(i)).collect();
        if valid.is_empty() {
            return Ok(ids.iter().map(|_| Ok(())).collect());
        }
        let joined = valid.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",");
        let raw = self
            .client
            .call(
                self.ctr(),
                Method::DELETE,
                &self.client.data_path("/composite/sobjects"),
                &[("ids", joined), ("allOrNone", "false".into())],
                None,
            )
            .await?;
        let body = raw.json("salesforce")?;
        let results = body.as_array().cloned().unwrap_or_default();
        let mut by_pos = results.into_iter();
        Ok(ids
            .iter()
            .map(|id| {
                if !is_id(id) {
                    return Ok(());
                }
                match by_pos.next() {
                    Some(r) if r.get("success").and_then(Value::as_bool) == Some(true) => Ok(()),
                    Some(r) => {
                        let e = record_error(&r);
                        // Deleting a missing record succeeds.
                        if e.kind() == ErrorKind::NotFound || e.message().contains("INVALID_CROSS_REFERENCE_KEY") {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }
                    None => Err(Error::unexpected("salesforce: delete answer has fewer results than ids")),
                }
            })
            .collect())
    }

    fn requests(&self) -> u64 {
        self.requests.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor { read_at: 10, hw: 9, seen: [("003A".to_string(), 9001)].into_iter().collect() };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("garbage"), None);
        assert_eq!(Cursor::decode("sf1.1.2."), Some(Cursor { read_at: 1, hw: 2, seen: BTreeSet::new() }));
    }
}
