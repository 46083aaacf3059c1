//! vCard (3.0 and 4.0) ⇄ [`Contact`], with calcard. Updates edit the stored card in place, so
//! properties the engine does not know (photos, birthdays, extra addresses) survive.

use calcard::vcard::{VCard, VCardEntry, VCardProperty, VCardValue, VCardVersion};
use crmsync_core::{Contact, Record, SyncKey};

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

/// The contact of a record, if it is one.
pub fn contact(r: &Record) -> Option<&Contact> {
    r.as_contact()
}
