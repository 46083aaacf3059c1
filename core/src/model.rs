//! The domain model: contacts and events as both sides see them, their canonical projection,
//! the content hash computed from it, and the deterministic sync key.
//!
//! Every adapter maps its service's JSON to [`Contact`] / [`Event`]. The engine never compares
//! records field by field in service terms: it compares [`Canon`]s, which hold each canonical
//! field normalized (e-mail lower-cased, phone digits only, whitespace trimmed, times in UTC), so
//! the same person read from Exchange and from Salesforce projects to the same canon and hash.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The two kinds of record crmsync syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Contact,
    Event,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Contact, Kind::Event];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Contact => "contact",
            Kind::Event => "event",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "contact" | "contacts" => Some(Kind::Contact),
            "event" | "events" => Some(Kind::Event),
            _ => None,
        }
    }
    /// The canonical fields of this kind, in a fixed order.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Contact => CONTACT_FIELDS,
            Kind::Event => EVENT_FIELDS,
        }
    }
}

/// The two sides of every link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Provider,
    Crm,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Provider => Side::Crm,
            Side::Crm => Side::Provider,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Provider => "provider",
            Side::Crm => "crm",
        }
    }
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "provider" => Some(Side::Provider),
            "crm" => Some(Side::Crm),
            _ => None,
        }
    }
}

/// A postal address (Graph `physicalAddress`, People `Address`, Salesforce `Mailing*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostalAddress {
    pub street: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

/// A person. `emails[0]` is the primary address, the one the CRM stores.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub emails: Vec<String>,
    /// Work / business phone.
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub address: PostalAddress,
    pub notes: Option<String>,
    /// Outlook categories / labels the provider reports (never synced, used for diagnostics).
    pub categories: Vec<String>,
}

/// When an event starts or ends: an instant, or a whole day (all-day events; end exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventTime {
    At(DateTime<Utc>),
    Date(NaiveDate),
}

impl EventTime {
    /// The instant this time denotes (midnight UTC for a date).
    pub fn instant(&self) -> DateTime<Utc> {
        match self {
            EventTime::At(t) => *t,
            EventTime::Date(d) => d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc(),
        }
    }
    pub fn is_date(&self) -> bool {
        matches!(self, EventTime::Date(_))
    }
    fn canon(&self) -> String {
        match self {
            EventTime::At(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
            EventTime::Date(d) => d.format("%Y-%m-%d").to_string(),
        }
    }
    fn parse_canon(s: &str) -> Option<EventTime> {
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Some(EventTime::Date(d));
        }
        DateTime::parse_from_rfc3339(s).ok().map(|t| EventTime::At(t.with_timezone(&Utc)))
    }
}

/// A calendar event (one occurrence for recurring series).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub subject: Option<String>,
    pub start: EventTime,
    pub end: EventTime,
    /// The time zone the organizer wrote the event in (IANA or Windows name), for display only.
    pub time_zone: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    /// Attendee e-mail addresses (the CRM relates the event to matching contacts).
    pub attendees: Vec<String>,
    pub organizer: Option<String>,
    pub private: bool,
    /// Outlook categories, or the Google marker the adapter maps to a category.
    pub categories: Vec<String>,
    /// The series this occurrence belongs to (Graph `seriesMasterId`, Google `recurringEventId`).
    pub series_id: Option<String>,
    pub ical_uid: Option<String>,
    pub cancelled: bool,
}

impl Event {
    /// A plain timed event, convenient for tests and seeding.
    pub fn new(subject: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Event {
        Event {
            subject: Some(subject.to_owned()),
            start: EventTime::At(start),
            end: EventTime::At(end),
            time_zone: None,
            location: None,
            description: None,
            attendees: vec![],
            organizer: None,
            private: false,
            categories: vec![],
            series_id: None,
            ical_uid: None,
            cancelled: false,
        }
    }
    pub fn all_day(&self) -> bool {
        self.start.is_date()
    }
}

/// A record of either kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Contact(Contact),
    Event(Event),
}

pub const CONTACT_FIELDS: &[&str] = &[
    "given_name",
    "family_name",
    "email",
    "phone",
    "mobile",
    "company",
    "title",
    "department",
    "street",
    "city",
    "region",
    "postal_code",
    "country",
    "notes",
];

pub const EVENT_FIELDS: &[&str] = &["subject", "start", "end", "location", "description", "private", "attendees"];

/// Fields only the provider originates: the CRM derives its value from the provider's (the
/// Salesforce Event is related to the contacts among the attendees). The engine writes them
/// provider → CRM only and never takes the CRM's value for a change: a CRM can hold less than
/// the provider (attendees that are no contact), and a meeting's invitees are the mailbox's
/// to change, never the CRM's.
pub const PROVIDER_OWNED: &[&str] = &["attendees"];

/// The canonical form of an attendee list: the normalized addresses, sorted, deduplicated,
/// one per line.
fn attendees_canon(raw: &str) -> Option<String> {
    let mut v: Vec<String> = split_attendees(raw).filter_map(normalize_email).collect();
    v.sort();
    v.dedup();
    (!v.is_empty()).then(|| v.join("\n"))
}

fn split_attendees(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(['\n', ',']).map(str::trim).filter(|a| !a.is_empty())
}

/// Normalized value of each canonical field that has a value (absent = empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Canon(pub BTreeMap<String, String>);

impl Canon {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
    /// Keep only `fields` (the fields both sides of a link store).
    pub fn restrict(&self, fields: &[&str]) -> Canon {
        Canon(
            self.0.iter().filter(|(k, _)| fields.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
        )
    }
    /// A stable content hash: SHA-256 over `field=value` lines in field order, hex, 32 chars.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.0 {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Trim, collapse inner runs of whitespace in one-line fields, unify line endings; empty → None.
pub fn normalize_text(s: &str) -> Option<String> {
    let s = s.replace("\r\n", "\n");
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// E-mail addresses compare case-insensitively and without surrounding whitespace.
pub fn normalize_email(s: &str) -> Option<String> {
    let t = s.trim().to_lowercase();
    (!t.is_empty()).then_some(t)
}

/// A plausible e-mail address: one `@`, something on each side, a dot in the domain, no spaces.
pub fn is_valid_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

/// Phone numbers compare by their digits (and a leading `+`), so formatting is not a change.
pub fn normalize_phone(s: &str) -> Option<String> {
    let plus = s.trim_start().starts_with('+');
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(if plus { format!("+{digits}") } else { digits })
}

fn opt(v: &Option<String>) -> Option<&str> {
    v.as_deref()
}

impl Record {
    pub fn kind(&self) -> Kind {
        match self {
            Record::Contact(_) => Kind::Contact,
            Record::Event(_) => Kind::Event,
        }
    }
    pub fn as_contact(&self) -> Option<&Contact> {
        match self {
            Record::Contact(c) => Some(c),
            Record::Event(_) => None,
        }
    }
    pub fn as_event(&self) -> Option<&Event> {
        match self {
            Record::Event(e) => Some(e),
            Record::Contact(_) => None,
        }
    }

    /// The raw (un-normalized) value of a canonical field.
    pub fn field(&self, field: &str) -> Option<String> {
        match self {
            Record::Contact(c) => match field {
                "given_name" => opt(&c.given_name),
                "family_name" => opt(&c.family_name),
                "email" => c.emails.first().map(String::as_str),
                "phone" => opt(&c.phone),
                "mobile" => opt(&c.mobile),
                "company" => opt(&c.company),
                "title" => opt(&c.title),
                "department" => opt(&c.department),
                "street" => opt(&c.address.street),
                "city" => opt(&c.address.city),
                "region" => opt(&c.address.region),
                "postal_code" => opt(&c.address.postal_code),
                "country" => opt(&c.address.country),
                "notes" => opt(&c.notes),
                _ => None,
            }
            .map(str::to_owned),
            Record::Event(e) => match field {
                "subject" => e.subject.clone(),
                "start" => Some(e.start.canon()),
                "end" => Some(e.end.canon()),
                "location" => e.location.clone(),
                "description" => e.description.clone(),
                "private" => Some(e.private.to_string()),
                "attendees" => (!e.attendees.is_empty()).then(|| e.attendees.join("\n")),
                _ => None,
            },
        }
    }

    /// Set a canonical field from another record's raw value (`None` clears it).
    /// Unknown fields and unparsable times are ignored (the source produced them, so they parse).
    pub fn set_field(&mut self, field: &str, value: Option<String>) {
        match self {
            Record::Contact(c) => {
                let slot = match field {
                    "given_name" => &mut c.given_name,
                    "family_name" => &mut c.family_name,
                    "phone" => &mut c.phone,
                    "mobile" => &mut c.mobile,
                    "company" => &mut c.company,
                    "title" => &mut c.title,
                    "department" => &mut c.department,
                    "street" => &mut c.address.street,
                    "city" => &mut c.address.city,
                    "region" => &mut c.address.region,
                    "postal_code" => &mut c.address.postal_code,
                    "country" => &mut c.address.country,
                    "notes" => &mut c.notes,
                    "email" => {
                        match value {
                            Some(v) => {
                                c.emails.retain(|e| normalize_email(e) != normalize_email(&v));
                                c.emails.insert(0, v);
                            }
                            None if !c.emails.is_empty() => {
                                c.emails.remove(0);
                            }
                            None => {}
                        }
                        return;
                    }
                    _ => return,
                };
                *slot = value;
            }
            Record::Event(e) => match field {
                "subject" => e.subject = value,
                "location" => e.location = value,
                "description" => e.description = value,
                "private" => e.private = value.as_deref() == Some("true"),
                "attendees" => {
                    e.attendees =
                        value.as_deref().map(|v| split_attendees(v).map(str::to_owned).collect()).unwrap_or_default()
                }
                "start" | "end" => {
                    if let Some(t) = value.as_deref().and_then(EventTime::parse_canon) {
                        if field == "start" { e.start = t } else { e.end = t }
                    }
                }
                _ => {}
            },
        }
    }

    /// The canonical projection over all fields of this kind.
    pub fn canon(&self) -> Canon {
        let mut map = BTreeMap::new();
        for &f in self.kind().fields() {
            let Some(raw) = self.field(f) else { continue };
            let norm = match f {
                "email" => normalize_email(&raw),
                "phone" | "mobile" => normalize_phone(&raw),
                "attendees" => attendees_canon(&raw),
                _ => normalize_text(&raw),
            };
            if let Some(v) = norm {
                map.insert(f.to_owned(), v);
            }
        }
        Canon(map)
    }

    /// Normalized e-mail addresses (contacts) or attendee addresses (events).
    pub fn emails(&self) -> Vec<String> {
        let raw = match self {
            Record::Contact(c) => &c.emails,
            Record::Event(e) => &e.attendees,
        };
        raw.iter().filter_map(|e| normalize_email(e)).collect()
    }

    /// Why this record cannot be synced at all, if it cannot (missing identity, bad times, …).
    pub fn invalid_reason(&self) -> Option<String> {
        match self {
            Record::Contact(c) => {
                let named =
                    [&c.given_name, &c.family_name].iter().any(|n| n.as_deref().and_then(normalize_text).is_some());
                if !named && c.emails.iter().all(|e| normalize_email(e).is_none()) {
                    return Some("contact has neither a name nor an e-mail address".into());
                }
                if let Some(bad) = c.emails.iter().find(|e| !is_valid_email(e)) {
                    return Some(format!("invalid e-mail address {bad:?}"));
                }
                None
            }
            Record::Event(e) => {
                if e.end.instant() < e.start.instant() {
                    return Some("event ends before it starts".into());
                }
                None
            }
        }
    }
}

/// One record as a collection holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// The service's id (Graph immutable id, People `resourceName`, Salesforce 18-char Id, …).
    pub id: String,
    /// Changes on every write: Graph `@odata.etag`, Google `etag`, Salesforce `SystemModstamp`.
    pub version: String,
    /// The sync key stamped on the record, if the engine created it.
    pub sync_key: Option<SyncKey>,
    /// Last modification time, when the service reports it (used by `newest_wins`).
    pub modified: Option<DateTime<Utc>>,
    pub record: Record,
}

/// A key to look a record up by before creating a duplicate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum MatchKey {
    SyncKey(SyncKey),
    /// Normalized (lower-case) e-mail address.
    Email(String),
    /// Normalized full name ("given family", lower-case) and normalized phone digits.
    NamePhone {
        name: String,
        phone: String,
    },
    ICalUid(String),
    /// Normalized subject and the start instant in RFC 3339 UTC.
    SubjectStart {
        subject: String,
        start: String,
    },
}

/// A record to create, with the sync key to stamp on it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewItem {
    pub sync_key: SyncKey,
    pub record: Record,
}

/// A conditional update of some canonical fields of an existing record.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub id: String,
    /// The version the change is based on; a newer version on the service → `PreconditionFailed`.
    pub version: String,
    /// Only these canonical fields are written; all others stay as they are.
    pub fields: Vec<String>,
    pub record: Record,
}

impl MatchKey {
    /// Whether `item` matches this key, with the normalization the engine matches by.
    pub fn matches(&self, item: &Item) -> bool {
        match self {
            MatchKey::SyncKey(k) => item.sync_key.as_ref() == Some(k),
            MatchKey::Email(e) => item.record.kind() == Kind::Contact && item.record.emails().contains(e),
            MatchKey::NamePhone { name, phone } => {
                name_phones(&item.record).iter().any(|(n, p)| n == name && p == phone)
            }
            MatchKey::ICalUid(u) => item.record.as_event().and_then(|e| e.ical_uid.as_deref()) == Some(u),
            MatchKey::SubjectStart { subject, start } => {
                subject_start(&item.record).is_some_and(|(s, t)| &s == subject && &t == start)
            }
        }
    }
}

/// The keys to look `item` (read on `side`) up by on the other side, best first: the sync key
/// a copy of it would carry, then e-mail and name+phone (contacts) or iCalUID and subject+start
/// (events).
pub fn match_keys(rep: &str, side: Side, item: &Item) -> Vec<MatchKey> {
    let mut keys = vec![MatchKey::SyncKey(SyncKey::derive(rep, item.record.kind(), side, &item.id))];
    match &item.record {
        Record::Contact(_) => {
            keys.extend(item.record.emails().into_iter().map(MatchKey::Email));
            keys.extend(name_phones(&item.record).into_iter().map(|(name, phone)| MatchKey::NamePhone { name, phone }));
        }
        Record::Event(e) => {
            keys.extend(e.ical_uid.clone().map(MatchKey::ICalUid));
            keys.extend(subject_start(&item.record).map(|(subject, start)| MatchKey::SubjectStart { subject, start }));
        }
    }
    keys
}

/// "given family", normalized and lower-cased, as [`MatchKey::NamePhone`] uses it.
pub fn full_name(r: &Record) -> Option<String> {
    let c = r.as_contact()?;
    let parts: Vec<String> =
        [&c.given_name, &c.family_name].iter().filter_map(|p| p.as_deref().and_then(normalize_text)).collect();
    (!parts.is_empty()).then(|| parts.join(" ").to_lowercase())
}

/// (full name, phone digits) for each phone of a contact, as [`MatchKey::NamePhone`] uses them.
pub fn name_phones(r: &Record) -> Vec<(String, String)> {
    let (Some(name), Some(c)) = (full_name(r), r.as_contact()) else {
        return vec![];
    };
    [&c.phone, &c.mobile]
        .iter()
        .filter_map(|p| p.as_deref().and_then(normalize_phone))
        .map(|p| (name.clone(), p))
        .collect()
}

/// (lower-cased subject, canonical start) of an event, as [`MatchKey::SubjectStart`] uses them.
pub fn subject_start(r: &Record) -> Option<(String, String)> {
    let c = r.canon();
    Some((c.get("subject")?.to_lowercase(), c.get("start")?.to_owned()))
}

impl Update {
    /// Write this update's fields into `record` (the other fields stay as they are).
    pub fn apply_to(&self, record: &mut Record) {
        for f in &self.fields {
            record.set_field(f, self.record.field(f));
        }
    }
}

/// The one refusal of a batch larger than a collection's `max_batch`.
pub fn check_batch(len: usize, max: usize) -> crate::error::Result<()> {
    if len > max {
        return Err(crate::error::Error::unexpected(format!("batch of {len} exceeds the limit of {max}")));
    }
    Ok(())
}

impl From<Contact> for Record {
    fn from(c: Contact) -> Self {
        Record::Contact(c)
    }
}
impl From<Event> for Record {
    fn from(e: Event) -> Self {
        Record::Event(e)
    }
}

/// A rep's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepState {
    #[default]
    Ok,
    Syncing,
    Error,
    ResetPending,
    NeedsReconnect,
    Disabled,
    /// The last cycle held a mass delete (Delete Safety): everything else synced, the held
    /// deletes wait for an admin to approve or discard them (`crmsync deletes`).
    DeletesHeld,
}

impl RepState {
    pub fn as_str(self) -> &'static str {
        match self {
            RepState::Ok => "ok",
            RepState::Syncing => "syncing",
            RepState::Error => "error",
            RepState::ResetPending => "reset_pending",
            RepState::NeedsReconnect => "needs_reconnect",
            RepState::Disabled => "disabled",
            RepState::DeletesHeld => "deletes_held",
        }
    }
    /// Every state, in the order status pages list them.
    pub const ALL: [RepState; 7] = [
        Self::Ok,
        Self::Syncing,
        Self::Error,
        Self::ResetPending,
        Self::NeedsReconnect,
        Self::Disabled,
        Self::DeletesHeld,
    ];
    pub fn parse(s: &str) -> Option<RepState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// The deterministic key stamped on every record the engine creates.
///
/// Format `cs1.<rep tag>.<uuid v5>` where the rep tag is 8 hex digits of SHA-256(rep id) and the
/// UUID is v5 over (rep, kind, source side, source id). The same source item always yields the
/// same key, so a create whose link write was lost is recognised on the next cycle; the rep tag
/// lets the engine tell its own stamps from another rep's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SyncKey(pub String);

const KEY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6b1e_2f2a_8c4d_4e0f_9a55_0c1d_5e7a_3b21);

impl SyncKey {
    pub fn derive(rep: &str, kind: Kind, side: Side, id: &str) -> SyncKey {
        let name = format!("{rep}\u{0}{}\u{0}{}\u{0}{id}", kind.as_str(), side.as_str());
        let uuid = uuid::Uuid::new_v5(&KEY_NAMESPACE, name.as_bytes());
        SyncKey(format!("cs1.{}.{uuid}", rep_tag(rep)))
    }
    /// Whether this key was derived for `rep` (by any engine run, before or after a reset).
    pub fn belongs_to(&self, rep: &str) -> bool {
        self.0.strip_prefix("cs1.").and_then(|r| r.split_once('.')).is_some_and(|(tag, _)| tag == rep_tag(rep))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn rep_tag(rep: &str) -> String {
    Sha256::digest(rep.as_bytes())[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(email: &str, phone: &str) -> Record {
        Record::Contact(Contact {
            given_name: Some(" Ada ".into()),
            family_name: Some("Lovelace".into()),
            emails: vec![email.into()],
            phone: Some(phone.into()),
            ..Default::default()
        })
    }

    #[test]
    fn canon_is_the_same_whatever_the_formatting() {
        let a = contact("Ada@Example.COM ", "+1 (555) 010-2000");
        let b = contact("ada@example.com", "+15550102000");
        assert_eq!(a.canon(), b.canon());
        assert_eq!(a.canon().hash(), b.canon().hash());
        let c = contact("ada@example.com", "+15550102001");
        assert_ne!(a.canon().hash(), c.canon().hash());
    }

    #[test]
    fn set_field_round_trips_every_canonical_field() {
        let mut e = Record::Event(Event::new("x", Utc::now(), Utc::now()));
        let src = Record::Event(Event {
            location: Some("Room 1".into()),
            private: true,
            ..Event::new("Kickoff", "2026-01-02T10:00:00Z".parse().unwrap(), "2026-01-02T11:00:00Z".parse().unwrap())
        });
        for f in Kind::Event.fields() {
            e.set_field(f, src.field(f));
        }
        assert_eq!(e.canon(), src.canon());
        let mut c = Record::Contact(Contact::default());
        let src = contact("a@b.io", "123");
        for f in Kind::Contact.fields() {
            c.set_field(f, src.field(f));
        }
        assert_eq!(c.canon(), src.canon());
    }

    #[test]
    fn sync_keys_are_deterministic_and_tagged_by_rep() {
        let k = SyncKey::derive("rep-1", Kind::Contact, Side::Provider, "AAMk1");
        assert_eq!(k, SyncKey::derive("rep-1", Kind::Contact, Side::Provider, "AAMk1"));
        assert_ne!(k, SyncKey::derive("rep-1", Kind::Contact, Side::Crm, "AAMk1"));
        assert!(k.belongs_to("rep-1"));
        assert!(!k.belongs_to("rep-2"));
        assert!(k.as_str().len() <= 64);
    }

    #[test]
    fn invalid_items_are_named() {
        assert!(Record::Contact(Contact::default()).invalid_reason().is_some());
        assert!(contact("not-an-email", "1").invalid_reason().unwrap().contains("invalid e-mail"));
        assert!(contact("a@b.io", "1").invalid_reason().is_none());
    }
}
