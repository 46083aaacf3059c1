//! "Why didn't this sync?": [`Engine::explain`] answers for one contact or event of a rep from
//! the store (links, suppressions, item errors, held deletes) and one full read of each side,
//! filtered as a cycle filters. It writes nothing.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Engine;
use super::context::{Ctx, Sides};
use super::ledger::WATCHED;
use crate::config::Rep;
use crate::error::Result;
use crate::model::{Kind, MatchKey, Record, Side, full_name, normalize_email};
use crate::port::{Change, Collection, HeldDelete, Item, Link, LinkState};
use crate::report::Requests;

/// What to explain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum Query {
    /// A contact by e-mail address.
    Email(String),
    /// A record by its id on either side (or a link's sync key).
    Id(String),
    /// An event by (part of) its subject, case-insensitive.
    Subject(String),
}

impl Query {
    fn kinds(&self) -> &'static [Kind] {
        match self {
            Query::Email(_) => &[Kind::Contact],
            Query::Id(_) => &Kind::ALL,
            Query::Subject(_) => &[Kind::Event],
        }
    }

    fn matches(&self, id: &str, r: &Record) -> bool {
        match self {
            Query::Id(q) => id == q,
            Query::Email(q) => normalize_email(q).is_some_and(|q| r.emails().contains(&q)),
            Query::Subject(q) => r
                .as_event()
                .and_then(|e| e.subject.as_deref())
                .is_some_and(|s| s.to_lowercase().contains(&q.to_lowercase())),
        }
    }

    fn matches_link(&self, l: &Link) -> bool {
        match self {
            Query::Id(q) => [&l.provider_id, &l.crm_id, &l.key.0].contains(&q),
            Query::Email(q) => normalize_email(q).is_some_and(|q| l.snapshot.get("email") == Some(q.as_str())),
            Query::Subject(q) => {
                l.snapshot.get("subject").is_some_and(|s| s.to_lowercase().contains(&q.to_lowercase()))
            }
        }
    }
}

/// One record as an answer names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ItemRef {
    pub side: Side,
    pub id: String,
    pub label: String,
}

/// One answer about one record (or pair).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Answer {
    /// Linked: the pair, whether both sides still hold what was last synced, and when the rep's
    /// last cycle ran.
    Linked {
        kind: Kind,
        key: String,
        provider: ItemRef,
        crm: ItemRef,
        in_step: bool,
        last_cycle: Option<DateTime<Utc>>,
        held_delete: Option<HeldDelete>,
    },
    /// Read, but left out, with the filter's reason.
    Skipped { kind: Kind, item: ItemRef, reason: String },
    /// Recorded as an item error, retried by id every cycle.
    ItemError {
        kind: Kind,
        item: ItemRef,
        reason: String,
        attempts: u32,
        first_seen: DateTime<Utc>,
        last_seen: DateTime<Utc>,
    },
    /// Kept out of sync on purpose, and by whom.
    Suppressed { kind: Kind, key: String, provider_id: String, crm_id: String, by: String },
    /// Seen on one side and not linked yet: the next cycle links or copies it.
    Pending { kind: Kind, item: ItemRef },
    /// Not seen where it would sync, and why that can be.
    NotSeen { kind: Kind, sides: Vec<Side>, why: String },
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self {
            Answer::Linked { kind, provider, crm, in_step, last_cycle, held_delete, .. } => {
                write!(
                    f,
                    "linked {}: mailbox {} {:?} <=> CRM {} {:?}; ",
                    kind.as_str(),
                    provider.id,
                    provider.label,
                    crm.id,
                    crm.label
                )?;
                match (in_step, last_cycle) {
                    (true, Some(t)) => write!(f, "both sides as the rep's last cycle ({}) left them", at(t))?,
                    (true, None) => write!(f, "both sides as last synced")?,
                    (false, _) => write!(f, "changed since the last sync: the next cycle writes it")?,
                }
                if let Some(h) = held_delete {
                    write!(
                        f,
                        "; its delete in the {} is held by Delete Safety since {} ({})",
                        h.side.as_str(),
                        at(&h.since),
                        h.verdict.as_str()
                    )?;
                }
                Ok(())
            }
            Answer::Skipped { kind, item, reason } => write!(
                f,
                "skipped {} on the {} side: {} {:?}, reason {reason}",
                kind.as_str(),
                item.side.as_str(),
                item.id,
                item.label
            ),
            Answer::ItemError { kind, item, reason, attempts, first_seen, last_seen } => write!(
                f,
                "item error on {} {} {} {:?} since {} ({attempts} attempts, last {}): {reason}",
                item.side.as_str(),
                kind.as_str(),
                item.id,
                item.label,
                at(first_seen),
                at(last_seen)
            ),
            Answer::Suppressed { kind, provider_id, crm_id, by, .. } => {
                write!(f, "suppressed {} (mailbox {provider_id:?}, CRM {crm_id:?}): {by}", kind.as_str())
            }
            Answer::Pending { kind, item } => write!(
                f,
                "seen on the {} side ({} {:?}), not linked yet: the next cycle links or copies this {}",
                item.side.as_str(),
                item.id,
                item.label,
                kind.as_str()
            ),
            Answer::NotSeen { kind, sides, why } => {
                let names: Vec<&str> = sides.iter().map(|s| s.as_str()).collect();
                write!(f, "not seen ({}) on the {} side: {why}", kind.as_str(), names.join(" and "))
            }
        }
    }
}

fn label(r: &Record, id: &str) -> String {
    full_name(r)
        .or_else(|| r.emails().into_iter().next())
        .or_else(|| r.as_event().and_then(|e| e.subject.clone()))
        .unwrap_or_else(|| id.to_owned())
}

/// What one full read of one side saw, per id.
#[derive(Default)]
struct Seen {
    items: Vec<Item>,
    /// Left out by the adapter or the engine's filters: (id, label, reason).
    skipped: Vec<(String, String, String)>,
}

async fn read_all(ctx: &Ctx<'_>, side: Side, coll: &dyn Collection) -> Result<Seen> {
    let ch = coll.changes(None).await?;
    let mut seen = Seen::default();
    for s in ch.skipped {
        seen.skipped.push((s.id.clone(), s.id, s.reason));
    }
    for f in ch.failures {
        seen.skipped.push((f.id.clone(), f.id, f.error.to_string()));
    }
    for change in ch.items {
        let Change::Upsert(item) = change else { continue };
        let reason = match item.record.as_event() {
            Some(e) if e.cancelled => Some("cancelled"),
            Some(e) => ctx.event_skip(side, e),
            None => None,
        };
        match reason {
            Some(r) => seen.skipped.push((item.id.clone(), label(&item.record, &item.id), r.to_owned())),
            None => seen.items.push(item),
        }
    }
    Ok(seen)
}

fn why_suppressed(l: &Link) -> String {
    match (l.provider_id.is_empty(), l.crm_id.is_empty()) {
        (true, _) => "the rep took the mailbox item out of sync (removed it from the folder/group or deleted it, \
                      under delete policy unlink); the CRM record stays and is not copied back"
            .into(),
        (_, true) => "the CRM record was deleted or left the rep's filter; the mailbox item is kept out of sync".into(),
        _ => "a filter excludes one side now (private, the no-sync marker, out of a configured filter); it comes \
              back when the filter lets it through"
            .into(),
    }
}

impl Engine {
    /// Explain why a record of `rep` is (or is not) in sync: from the store and one full read
    /// of each side per kind the query concerns. Reads only.
    pub async fn explain(&self, rep: &Rep, query: &Query) -> Result<Vec<Answer>> {
        let (provider, access) = self.connect(rep).await?;
        let last_cycle = self.store.status(&rep.id).await?.last_report.and_then(|r| r.started);
        let mut out = vec![];
        for &kind in query.kinds() {
            let colls = self.open(rep, kind, provider.as_ref(), &access, &mut Requests::default()).await?;
            let ctx = self.context(rep, kind, &colls);
            let seen = Sides {
                provider: read_all(&ctx, Side::Provider, colls.provider.as_ref()).await?,
                crm: read_all(&ctx, Side::Crm, colls.crm.as_ref()).await?,
            };
            let links = self.store.links(&rep.id, kind).await?;
            let errors = self.store.item_errors(&rep.id, kind).await?;
            let held = self.store.held(&rep.id, kind).await?;
            let item_of = |side: Side, id: &str| seen.get(side).items.iter().find(|i| i.id == id);
            let hit = |side: Side, id: &str| item_of(side, id).is_some_and(|i| query.matches(&i.id, &i.record));
            let mut covered: BTreeSet<(Side, String)> = BTreeSet::new();
            for l in &links {
                let found = query.matches_link(l) || hit(Side::Provider, &l.provider_id) || hit(Side::Crm, &l.crm_id);
                if !found {
                    continue;
                }
                covered.insert((Side::Provider, l.provider_id.clone()));
                covered.insert((Side::Crm, l.crm_id.clone()));
                let named = |side: Side, id: &String| ItemRef {
                    side,
                    id: id.clone(),
                    label: item_of(side, id)
                        .map(|i| label(&i.record, id))
                        .or_else(|| l.snapshot.get("email").or(l.snapshot.get("subject")).map(str::to_owned))
                        .unwrap_or_default(),
                };
                match l.state {
                    LinkState::Linked => {
                        let same = |side: Side, id: &str| {
                            item_of(side, id).is_some_and(|i| ctx.canon(&i.record).hash() == l.hash)
                        };
                        out.push(Answer::Linked {
                            kind,
                            key: l.key.0.clone(),
                            provider: named(Side::Provider, &l.provider_id),
                            crm: named(Side::Crm, &l.crm_id),
                            in_step: same(Side::Provider, &l.provider_id) && same(Side::Crm, &l.crm_id),
                            last_cycle,
                            held_delete: held.iter().find(|h| h.key == l.key).cloned(),
                        });
                    }
                    LinkState::Suppressed => out.push(Answer::Suppressed {
                        kind,
                        key: l.key.0.clone(),
                        provider_id: l.provider_id.clone(),
                        crm_id: l.crm_id.clone(),
                        by: why_suppressed(l),
                    }),
                    LinkState::Creating => {}
                }
            }
            for e in &errors {
                let found = match query {
                    Query::Id(q) => &e.id == q,
                    _ => hit(e.side, &e.id),
                };
                if found && covered.insert((e.side, e.id.clone())) {
                    let label = item_of(e.side, &e.id).map(|i| label(&i.record, &e.id)).unwrap_or_else(|| e.id.clone());
                    let item = ItemRef { side: e.side, id: e.id.clone(), label };
                    if let Some(reason) = e.reason.strip_prefix(WATCHED) {
                        // Skipped for what matched it on the other side, and watched.
                        out.push(Answer::Skipped { kind, item, reason: reason.to_owned() });
                        continue;
                    }
                    out.push(Answer::ItemError {
                        kind,
                        item,
                        reason: e.reason.clone(),
                        attempts: e.attempts,
                        first_seen: e.first_seen,
                        last_seen: e.last_seen,
                    });
                }
            }
            for side in [Side::Provider, Side::Crm] {
                let s = seen.get(side);
                for i in s.items.iter().filter(|i| query.matches(&i.id, &i.record)) {
                    if !covered.insert((side, i.id.clone())) {
                        continue;
                    }
                    let item = ItemRef { side, id: i.id.clone(), label: label(&i.record, &i.id) };
                    // Its match on the other side may be out of scope (another owner's contact).
                    let keys: Vec<MatchKey> = i.record.emails().into_iter().map(MatchKey::Email).collect();
                    let other = colls.get(side.other());
                    let beyond = !keys.is_empty() && other.find(&keys).await?.iter().any(|f| !f.in_scope);
                    out.push(if beyond {
                        let reason = if side == Side::Provider { "outside_filter" } else { "outside_scope" };
                        Answer::Skipped { kind, item, reason: reason.into() }
                    } else {
                        Answer::Pending { kind, item }
                    });
                }
                for (id, name, reason) in &s.skipped {
                    let named = matches!(query, Query::Id(q) if q == id)
                        || matches!(query, Query::Subject(q) if name.to_lowercase().contains(&q.to_lowercase()))
                        || matches!(query, Query::Email(q) if normalize_email(q).is_some_and(|q| *name == q));
                    if named && covered.insert((side, id.clone())) {
                        out.push(Answer::Skipped {
                            kind,
                            item: ItemRef { side, id: id.clone(), label: name.clone() },
                            reason: reason.clone(),
                        });
                    }
                }
            }
            if let (Query::Email(q), true) = (query, out.is_empty()) {
                // Not in scope on either side: look beyond it.
                let key = MatchKey::Email(normalize_email(q).unwrap_or_else(|| q.to_lowercase()));
                for side in [Side::Provider, Side::Crm] {
                    for f in colls.get(side).find(std::slice::from_ref(&key)).await?.into_iter().filter(|f| !f.in_scope)
                    {
                        let reason = if side == Side::Crm { "outside_filter" } else { "outside_scope" };
                        out.push(Answer::Skipped {
                            kind,
                            item: ItemRef { side, id: f.item.id.clone(), label: label(&f.item.record, &f.item.id) },
                            reason: reason.into(),
                        });
                    }
                }
            }
        }
        if out.is_empty() {
            let kind = query.kinds()[0];
            let why = match query {
                Query::Email(_) => {
                    "no contact with this e-mail is in the rep's folder/group, nor among the CRM \
                                    contacts the rep's filter selects, nor (as far as the services let us search) \
                                    outside them: it may be misspelled, or it was never added to the folder/group"
                }
                Query::Id(_) => {
                    "no record with this id is in the rep's folder/group, calendar window or CRM filter, \
                                 and the store knows no link, suppression or item error for it: it may be another \
                                 rep's, deleted, or outside the event window"
                }
                Query::Subject(_) => {
                    "no event with this subject is in the rep's calendar within the event window or \
                                      among the rep's CRM events: it may lie outside the window, or be in another \
                                      calendar"
                }
            };
            out.push(Answer::NotSeen { kind, sides: vec![Side::Provider, Side::Crm], why: why.into() });
        }
        Ok(out)
    }
}
