//! vCard (3.0 and 4.0) ⇄ [`Contact`], with calcard. Updates edit the stored card in place, so
//! properties the engine does not know (photos, birthdays, extra addresses) survive.

use calcard::vcard::{VCard, VCardEntry, VCardProperty, VCardValue, VCardVersion};
use crmsync_core::{Contact, SyncKey};

use crate::config::SYNC_KEY_PROPERTY;

fn texts(e: &VCardEntry) -> Vec<String> {
    e.values
        .iter()
        .flat_map(|v| match v {
            VCardValue::Text(t) => vec![t.clone()],
            VCardValue::Component(c) => c.clone(),
            _ => vec![],
        })
        .collect()
}

fn first(card: &VCard, prop: &VCardProperty) -> Vec<String> {
    card.entries.iter().find(|e| &e.name == prop).map(texts).unwrap_or_default()
}

fn some(s: Option<&String>) -> Option<String> {
    s.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

fn sync_key_prop() -> VCardProperty {
    VCardProperty::Other(SYNC_KEY_PROPERTY.into())
}

fn is_sync_key(p: &VCardProperty) -> bool {
    matches!(p, VCardProperty::Other(n) if n.eq_ignore_ascii_case(SYNC_KEY_PROPERTY))
}

/// Parse a vCard into a contact and the sync key stamped on it.
pub fn parse(data: &str) -> Option<(Contact, Option<SyncKey>)> {
    let card = VCard::parse(data).ok()?;
    let n = first(&card, &VCardProperty::N);
    let org = first(&card, &VCardProperty::Org);
    let adr = first(&card, &VCardProperty::Adr);
    let tels: Vec<&VCardEntry> = card.entries.iter().filter(|e| e.name == VCardProperty::Tel).collect();
    let is_cell = |e: &VCardEntry| format!("{:?}", e.params).to_ascii_lowercase().contains("cell");
    let contact = Contact {
        family_name: some(n.first()),
        given_name: some(n.get(1)),
        emails: card
            .entries
            .iter()
            .filter(|e| e.name == VCardProperty::Email)
            .filter_map(|e| some(texts(e).first()))
            .collect(),
        phone: tels.iter().find(|e| !is_cell(e)).and_then(|e| some(texts(e).first())),
        mobile: tels.iter().find(|e| is_cell(e)).and_then(|e| some(texts(e).first())),
        company: some(org.first()),
        department: some(org.get(1)),
        title: some(first(&card, &VCardProperty::Title).first()),
        notes: some(first(&card, &VCardProperty::Note).first()),
        address: crmsync_core::PostalAddress {
            street: some(adr.get(2)),
            city: some(adr.get(3)),
            region: some(adr.get(4)),
            postal_code: some(adr.get(5)),
            country: some(adr.get(6)),
        },
        categories: vec![],
    };
    let key =
        card.entries.iter().find(|e| is_sync_key(&e.name)).and_then(|e| texts(e).first().map(|k| SyncKey(k.clone())));
    Some((contact, key))
}

fn entry(prop: VCardProperty, values: Vec<String>) -> VCardEntry {
    VCardEntry::new(prop).with_values(values.into_iter().map(VCardValue::Text).collect())
}

/// The entries a contact's fields become (every mapped property).
fn entries(c: &Contact) -> Vec<VCardEntry> {
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    let mut out = vec![
        entry(VCardProperty::N, vec![s(&c.family_name), s(&c.given_name), String::new(), String::new(), String::new()]),
        entry(
            VCardProperty::Fn,
            vec![[&c.given_name, &c.family_name].iter().filter_map(|p| p.as_deref()).collect::<Vec<_>>().join(" ")],
        ),
    ];
    out.extend(c.emails.iter().map(|e| entry(VCardProperty::Email, vec![e.clone()])));
    if let Some(p) = &c.phone {
        out.push(
            entry(VCardProperty::Tel, vec![p.clone()])
                .with_param(calcard::vcard::VCardParameter::typ(calcard::vcard::VCardType::Work)),
        );
    }
    if let Some(p) = &c.mobile {
        out.push(
            entry(VCardProperty::Tel, vec![p.clone()])
                .with_param(calcard::vcard::VCardParameter::typ(calcard::vcard::VCardType::Cell)),
        );
    }
    if c.company.is_some() || c.department.is_some() {
        out.push(entry(VCardProperty::Org, vec![s(&c.company), s(&c.department)]));
    }
    for (prop, v) in [(VCardProperty::Title, &c.title), (VCardProperty::Note, &c.notes)] {
        if let Some(v) = v {
            out.push(entry(prop, vec![v.clone()]));
        }
    }
    let a = &c.address;
    if [&a.street, &a.city, &a.region, &a.postal_code, &a.country].iter().any(|f| f.is_some()) {
        out.push(entry(
            VCardProperty::Adr,
            vec![
                String::new(),
                String::new(),
                s(&a.street),
                s(&a.city),
                s(&a.region),
                s(&a.postal_code),
                s(&a.country),
            ],
        ));
    }
    out
}

fn mapped(p: &VCardProperty) -> bool {
    matches!(
        p,
        VCardProperty::N
            | VCardProperty::Fn
            | VCardProperty::Email
            | VCardProperty::Tel
            | VCardProperty::Org
            | VCardProperty::Title
            | VCardProperty::Note
            | VCardProperty::Adr
    )
}

/// A new vCard 4.0 for a contact, stamped with its sync key and `uid`.
pub fn new_card(c: &Contact, key: &SyncKey, uid: &str) -> String {
    let mut card = VCard { entries: entries(c) };
    card.entries.push(entry(VCardProperty::Uid, vec![uid.to_owned()]));
    card.entries.push(entry(sync_key_prop(), vec![key.as_str().to_owned()]));
    write(&card, VCardVersion::V4_0)
}

/// The stored card with the mapped properties replaced by `c`'s (others kept, same version).
pub fn update_card(data: &str, c: &Contact) -> Option<String> {
    let mut card = VCard::parse(data).ok()?;
    let version = card.version().unwrap_or(VCardVersion::V4_0);
    card.entries.retain(|e| !mapped(&e.name));
    card.entries.extend(entries(c));
    Some(write(&card, version))
}

fn write(card: &VCard, version: VCardVersion) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = card.write_to(&mut out, version);
    out
}

// ---- iCalendar ⇄ Event -------------------------------------------------------------------

use calcard::Entry;
use calcard::common::PartialDateTime;
use calcard::common::timezone::Tz;
use calcard::icalendar::dates::TimeOrDelta;
use calcard::icalendar::{
    ICalendar, ICalendarClassification, ICalendarComponent, ICalendarComponentType, ICalendarEntry,
    ICalendarParameterName, ICalendarProperty, ICalendarStatus, ICalendarValue,
};
use chrono::{DateTime, Utc};
use crmsync_core::config::Window;
use crmsync_core::{Event, EventTime};

/// Occurrences expanded per resource at most (a series without end stops there).
const MAX_OCCURRENCES: usize = 3000;

/// One occurrence read from a calendar resource.
#[derive(Debug)]
pub struct Occurrence {
    /// Set for occurrences of a recurring series: the occurrence's start, which names it.
    pub recurrence: Option<DateTime<Utc>>,
    pub event: Event,
    pub sync_key: Option<SyncKey>,
}

fn ical_text(e: &ICalendarEntry) -> Option<String> {
    e.values.iter().find_map(|v| match v {
        ICalendarValue::Text(t) => Some(t.trim().to_owned()).filter(|t| !t.is_empty()),
        _ => None,
    })
}

fn prop<'a>(c: &'a ICalendarComponent, p: &ICalendarProperty) -> Option<&'a ICalendarEntry> {
    c.property(p)
}

fn address(e: &ICalendarEntry) -> Option<String> {
    let raw = e.values.iter().find_map(|v| match v {
        ICalendarValue::Text(t) => Some(t.clone()),
        ICalendarValue::Uri(calcard::icalendar::Uri::Location(u)) => Some(u.clone()),
        _ => None,
    })?;
    let addr = raw.trim();
    let addr = addr.strip_prefix("mailto:").or_else(|| addr.strip_prefix("MAILTO:")).unwrap_or(addr);
    (!addr.is_empty()).then(|| addr.to_lowercase())
}

fn is_date(c: &ICalendarComponent) -> bool {
    prop(c, &ICalendarProperty::Dtstart)
        .is_some_and(|e| e.values.iter().any(|v| matches!(v, ICalendarValue::PartialDateTime(d) if d.hour.is_none())))
}

fn at(t: DateTime<Tz>, date: bool) -> EventTime {
    if date { EventTime::Date(t.date_naive()) } else { EventTime::At(t.with_timezone(&Utc)) }
}

/// Parse a calendar resource into its occurrences overlapping `window`: recurrence rules are
/// expanded (with their exceptions and overrides) in the event's own time zone.
pub fn parse_calendar(data: &str, window: &Window) -> Option<Vec<Occurrence>> {
    let Entry::ICalendar(cal) = calcard::Parser::new(data).entry() else {
        return None;
    };
    let recurring = cal
        .components
        .iter()
        .any(|c| prop(c, &ICalendarProperty::Rrule).is_some() || prop(c, &ICalendarProperty::RecurrenceId).is_some());
    let expanded = cal.expand_dates(Tz::UTC, MAX_OCCURRENCES);
    let mut out = vec![];
    for occ in expanded.events {
        let Some(c) = cal.component_by_id(occ.comp_id) else { continue };
        if c.component_type != ICalendarComponentType::VEvent {
            continue;
        }
        let date = is_date(c);
        let end = match occ.end {
            TimeOrDelta::Time(t) => t,
            TimeOrDelta::Delta(d) => occ.start + d,
        };
        let text = |p: ICalendarProperty| prop(c, &p).and_then(ical_text);
        let has = |p: ICalendarProperty, want: &dyn Fn(&ICalendarValue) -> bool| {
            prop(c, &p).is_some_and(|e| e.values.iter().any(want))
        };
        let uid = c.uid().map(str::to_owned);
        let event = Event {
            subject: text(ICalendarProperty::Summary),
            start: at(occ.start, date),
            end: at(end, date),
            time_zone: prop(c, &ICalendarProperty::Dtstart).and_then(|e| {
                e.params.iter().find(|p| p.name == ICalendarParameterName::Tzid).and_then(|p| match &p.value {
                    calcard::icalendar::ICalendarParameterValue::Text(t) => Some(t.clone()),
                    _ => None,
                })
            }),
            location: text(ICalendarProperty::Location),
            description: text(ICalendarProperty::Description),
            attendees: c.properties(&ICalendarProperty::Attendee).filter_map(address).collect(),
            organizer: prop(c, &ICalendarProperty::Organizer).and_then(address),
            private: has(ICalendarProperty::Class, &|v| {
                matches!(
                    v,
                    ICalendarValue::Classification(
                        ICalendarClassification::Private | ICalendarClassification::Confidential
                    )
                )
            }),
            categories: c.properties(&ICalendarProperty::Categories).filter_map(ical_text).collect(),
            series_id: uid.clone().filter(|_| recurring),
            ical_uid: uid,
            cancelled: has(ICalendarProperty::Status, &|v| {
                matches!(v, ICalendarValue::Status(ICalendarStatus::Cancelled))
            }),
        };
        if !(event.end.instant() > window.start && event.start.instant() < window.end) {
            continue;
        }
        let sync_key = c
            .entries
            .iter()
            .find(|e| matches!(&e.name, ICalendarProperty::Other(n) if n.eq_ignore_ascii_case(SYNC_KEY_PROPERTY)))
            .and_then(ical_text)
            .map(SyncKey);
        out.push(Occurrence { recurrence: recurring.then(|| occ.start.with_timezone(&Utc)), event, sync_key });
    }
    Some(out)
}

fn time_value(t: &EventTime) -> ICalendarValue {
    let pdt = match t {
        EventTime::At(t) => PartialDateTime::from_utc_timestamp(t.timestamp()),
        EventTime::Date(d) => {
            PartialDateTime::from_date_timestamp(d.and_hms_opt(0, 0, 0).map_or(0, |n| n.and_utc().timestamp()))
        }
    };
    ICalendarValue::PartialDateTime(Box::new(pdt))
}

/// The VEVENT properties an [`Event`]'s synced fields become.
fn event_entries(e: &Event) -> Vec<ICalendarEntry> {
    let text = |p: ICalendarProperty, v: &str| ICalendarEntry::new(p).with_value(ICalendarValue::Text(v.to_owned()));
    let mut out = vec![
        ICalendarEntry::new(ICalendarProperty::Dtstart).with_value(time_value(&e.start)),
        ICalendarEntry::new(ICalendarProperty::Dtend).with_value(time_value(&e.end)),
    ];
    for (p, v) in [
        (ICalendarProperty::Summary, &e.subject),
        (ICalendarProperty::Location, &e.location),
        (ICalendarProperty::Description, &e.description),
    ] {
        if let Some(v) = v {
            out.push(text(p, v));
        }
    }
    if e.private {
        out.push(
            ICalendarEntry::new(ICalendarProperty::Class)
                .with_value(ICalendarValue::Classification(ICalendarClassification::Private)),
        );
    }
    out
}

fn event_mapped(p: &ICalendarProperty) -> bool {
    matches!(
        p,
        ICalendarProperty::Dtstart
            | ICalendarProperty::Dtend
            | ICalendarProperty::Duration
            | ICalendarProperty::Summary
            | ICalendarProperty::Location
            | ICalendarProperty::Description
            | ICalendarProperty::Class
    )
}

fn write_calendar(cal: &ICalendar) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = cal.write_to(&mut out);
    out
}

/// A new calendar resource with one VEVENT, stamped with its sync key and `uid` (the event's own
/// iCalUID when it has one).
pub fn new_calendar(e: &Event, key: &SyncKey, uid: &str) -> String {
    let mut vevent = ICalendarComponent::new(ICalendarComponentType::VEvent);
    vevent.add_uid(e.ical_uid.as_deref().unwrap_or(uid));
    vevent.add_dtstamp(PartialDateTime::from_utc_timestamp(Utc::now().timestamp()));
    vevent.entries.extend(event_entries(e));
    vevent.entries.push(
        ICalendarEntry::new(ICalendarProperty::Other(SYNC_KEY_PROPERTY.into()))
            .with_value(ICalendarValue::Text(key.as_str().to_owned())),
    );
    let mut root = ICalendarComponent::new(ICalendarComponentType::VCalendar);
    root.add_property(ICalendarProperty::Version, ICalendarValue::Text("2.0".into()));
    root.add_property(ICalendarProperty::Prodid, ICalendarValue::Text("-//crmsync//dav//EN".into()));
    root.component_ids = vec![1];
    write_calendar(&ICalendar { components: vec![root, vevent] })
}

/// The stored resource with the single VEVENT's synced properties replaced by `e`'s (others
/// kept). `None` for a resource that is not one plain event (series are read-only).
pub fn update_calendar(data: &str, e: &Event) -> Option<String> {
    let Entry::ICalendar(mut cal) = calcard::Parser::new(data).entry() else {
        return None;
    };
    let mut events = cal.components.iter_mut().filter(|c| c.component_type == ICalendarComponentType::VEvent);
    let vevent = events.next()?;
    if events.next().is_some() || vevent.property(&ICalendarProperty::Rrule).is_some() {
        return None;
    }
    let vevent = cal.components.iter_mut().find(|c| c.component_type == ICalendarComponentType::VEvent)?;
    vevent.entries.retain(|x| !event_mapped(&x.name));
    vevent.entries.extend(event_entries(e));
    Some(write_calendar(&cal))
}
