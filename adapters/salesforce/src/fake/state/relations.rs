//! Shared Activities: `EventRelation` rows and how they follow the Event's `WhoId`.
//!
//! What the org does, as Salesforce documents it:
//! - an Event relates to up to [`MAX_CONTACTS`] contacts (`IsParent = true`, `IsWhat = false`)
//!   and to one What (an Account here: `IsWhat = true`, derived from the relation's type);
//!   invitees are rows with `IsInvitee = true` (a contact may be both, in one row);
//! - the Event's `WhoId` (and `WhatId`) is one of its relations: setting it adds the relation (and
//!   drops the one of the contact it replaces), relating the first contact to an Event without a
//!   `WhoId` makes it the `WhoId`, and deleting the relation of the `WhoId` promotes the oldest
//!   other contact relation (or clears `WhoId`);
//! - deleting an Event deletes its relations.

use serde_json::{Map, json};

use super::{RecErr, State};
use crate::fake::schema::{Val, id15, object};
use crate::fake::soql::Rec;

/// The most contacts one Event relates to.
pub const MAX_CONTACTS: usize = 50;

const CONTACT_PREFIX: &str = "003";

fn s<'a>(rec: &'a Rec, f: &str) -> Option<&'a str> {
    rec.get(f).and_then(Val::as_str)
}

fn flag(rec: &Rec, f: &str) -> bool {
    rec.get(f) == Some(&Val::Bool(true))
}

/// A contact relation (`IsParent`, not a What) of a live row.
fn is_contact_parent(rec: &Rec) -> bool {
    flag(rec, "IsParent") && !flag(rec, "IsWhat") && s(rec, "RelationId").is_some_and(|r| r.starts_with(CONTACT_PREFIX))
}

impl State {
    /// The live relations of `event`, oldest first.
    fn relations_of(&self, event: &str) -> Vec<Rec> {
        let Some(ids) = self.data.ids_with("EventRelation", "EventId", id15(event)) else { return vec![] };
        let table = self.data.tables.get("EventRelation");
        let mut rows: Vec<Rec> = ids.into_iter().filter_map(|id| table?.get(id).cloned()).collect();
        let created = |r: &Rec| match r.get("CreatedDate") {
            Some(Val::DateTime(t)) => Some(*t),
            _ => None,
        };
        rows.sort_by(|a, b| (created(a), s(a, "Id")).cmp(&(created(b), s(b, "Id"))));
        rows
    }

    /// Validate an `EventRelation` about to be written (`own` = its id on an update) and
    /// derive `IsWhat`; the defaults of a row that says neither `IsParent` nor `IsInvitee`
    /// make it an invitee.
    pub(super) fn check_relation(&self, rec: &mut Rec, own: Option<&str>) -> Result<(), RecErr> {
        let (Some(event), Some(rel)) = (s(rec, "EventId").map(str::to_owned), s(rec, "RelationId").map(str::to_owned))
        else {
            return Ok(()); // the required-field check reports it
        };
        let what = rel.starts_with(object("Account").expect("known").prefix);
        rec.insert("IsWhat", Val::Bool(what));
        if !rec.contains_key("IsParent") && !rec.contains_key("IsInvitee") {
            rec.insert("IsInvitee", Val::Bool(!what));
        }
        for f in ["IsParent", "IsInvitee"] {
            rec.entry(f).or_insert(Val::Bool(false));
        }
        if what {
            rec.insert("IsParent", Val::Bool(true));
        }
        let others: Vec<Rec> =
            self.relations_of(&event).into_iter().filter(|r| own.is_none_or(|o| s(r, "Id") != Some(o))).collect();
        if let Some(dup) = others.iter().find(|r| s(r, "RelationId").map(id15) == Some(id15(&rel))) {
            return Err(RecErr::new(
                "DUPLICATE_VALUE",
                format!(
                    "duplicate value found: RelationId duplicates value on record with id: {}",
                    s(dup, "Id").unwrap_or("")
                ),
                &["RelationId"],
            ));
        }
        if is_contact_parent(rec) && others.iter().filter(|r| is_contact_parent(r)).count() >= MAX_CONTACTS {
            return Err(RecErr::new(
                "LIMIT_EXCEEDED",
                format!("You can't relate more than {MAX_CONTACTS} contacts to an event."),
                &["RelationId"],
            ));
        }
        Ok(())
    }

    /// After an `EventRelation` write: a contact related to an Event without a `WhoId` becomes it.
    pub(super) fn after_relation_write(&mut self, rec: &Rec) {
        let (Some(event), Some(rel)) = (s(rec, "EventId"), s(rec, "RelationId")) else { return };
        if !is_contact_parent(rec) {
            return;
        }
        let Some(mut ev) = self.find(object("Event").expect("known"), event).cloned() else { return };
        if matches!(ev.get("WhoId"), None | Some(Val::Null)) {
            ev.insert("WhoId", Val::Str(rel.to_owned()));
            self.touch("Event", ev);
        }
    }

    /// After an Event write that moved its `WhoId` (or `WhatId`) from `old` to `new`: the
    /// relation of `new` exists, the one of the record it replaced is gone.
    pub(super) fn follow(
        &mut self,
        event: &str,
        what: bool,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<(), RecErr> {
        if old.map(id15) == new.map(id15) {
            return Ok(());
        }
        let rows = self.relations_of(event);
        let kind = |r: &Rec| if what { flag(r, "IsWhat") } else { is_contact_parent(r) };
        let of = |who: &str| rows.iter().find(|r| s(r, "RelationId").map(id15) == Some(id15(who)) && kind(r));
        if let Some(r) = old.and_then(of) {
            let mut r = r.clone();
            r.insert("IsDeleted", Val::Bool(true));
            self.touch("EventRelation", r);
        }
        if let Some(who) = new.filter(|w| of(w).is_none()) {
            let mut m = Map::new();
            m.insert("EventId".into(), json!(event));
            m.insert("RelationId".into(), json!(who));
            m.insert("IsParent".into(), json!(true));
            m.insert("IsInvitee".into(), json!(false));
            let actor = self.integration_user.clone();
            self.write(object("EventRelation").expect("known"), None, &m, &actor, false)?;
        }
        Ok(())
    }

    /// After a delete: an Event's relations go with it; the relation of an Event's `WhoId`
    /// hands that role to the oldest other contact relation.
    pub(super) fn after_delete(&mut self, obj: &str, rec: &Rec) {
        match obj {
            "Event" => {
                for mut r in self.relations_of(s(rec, "Id").unwrap_or_default()) {
                    r.insert("IsDeleted", Val::Bool(true));
                    self.touch("EventRelation", r);
                }
            }
            "EventRelation" => {
                let (Some(event), Some(rel)) = (s(rec, "EventId"), s(rec, "RelationId")) else { return };
                let Some(mut ev) = self.find(object("Event").expect("known"), event).cloned() else { return };
                if s(&ev, "WhoId").map(id15) != Some(id15(rel)) {
                    return;
                }
                let next = self.relations_of(event).into_iter().find(is_contact_parent);
                ev.insert(
                    "WhoId",
                    next.as_ref().and_then(|r| s(r, "RelationId")).map_or(Val::Null, |r| Val::Str(r.to_owned())),
                );
                self.touch("Event", ev);
            }
            _ => {}
        }
    }

    /// Store a record changed by the org itself, with a new stamp.
    fn touch(&mut self, obj: &'static str, mut rec: Rec) {
        let t = self.stamp();
        rec.insert("SystemModstamp", Val::DateTime(t));
        rec.insert("LastModifiedDate", Val::DateTime(t));
        let id = s(&rec, "Id").unwrap_or_default().to_owned();
        self.data.put(obj, id, rec);
    }
}
