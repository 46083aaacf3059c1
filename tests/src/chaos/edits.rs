//! Random edits on the three sides between cycles, and the model of what each should lead to.
//!
//! Every logical contact is edited on one side only (the side it was created on, or a side
//! drawn for a seeded one), so whatever the conflict policy, its last value must end up on both
//! sides. Records that leave the synced scope (deleted, moved out of the folder / group) or
//! carry hostile data are no longer compared by value; they still count for duplicates.

use chrono::{DateTime, Duration, Utc};
use crmsync_cli::scenario::{EXCHANGE_MAILBOX, Fakes, GOOGLE_USER, Scenario};
use crmsync_core::{Contact, Event, PostalAddress, Rep};
use crmsync_fake::Rng;
use crmsync_google::fake::EventEdit;
use serde_json::{Value, json};

use super::{Outcome, pick};

/// Which side of a rep a record lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    Crm,
    Provider,
}

/// A rep of the scenario: 0 = the Exchange rep, 1 = the Google rep.
pub(crate) type RepIx = usize;

#[derive(Clone, Debug)]
pub(crate) struct Tracked {
    pub rep: RepIx,
    /// Lower-case e-mail: the record's identity on both sides.
    pub email: String,
    /// The last given name written.
    pub given: String,
    /// The one side this record is edited on.
    pub side: On,
    /// Why it is no longer compared by value (`None`: it is).
    pub excluded: Option<&'static str>,
    /// Successful cycles of the rep still to come before its last edit counts as synced (0: it
    /// is): one for a mailbox edit; two for a CRM edit, because reps share one org-wide CRM
    /// change read per round and a cycle that takes a read made before the edit sees the edit
    /// only on its next cycle (adapters/salesforce/docs.md).
    pub dirty: u8,
}

/// Cycles a fresh edit on `side` waits for before it counts as synced (see [`Tracked::dirty`]).
fn cycles_to_sync(side: On) -> u8 {
    if side == On::Crm { 2 } else { 1 }
}

/// After a Reset Sync the pairs are matched again "on first sight" (docs/behaviour.md): between
/// two records the conflict policy (CRM wins by default) decides, between a record and the
/// engine's copy of it the later modification by a whole second, a tie going to the record. An
/// edit not yet synced when the reset came, or made before the next cycle, may lose by those
/// documented rules, on either side: the harness makes its edits within milliseconds of the
/// engine's writes, so which one is "later by a whole second" depends on where the second turns.
const RESET_RULE: &str = "edit pending across a Reset Sync (first sight decides)";

/// Two contacts on one side whose e-mails differ only by case, created on purpose.
#[derive(Clone, Debug)]
pub(crate) struct Dup {
    pub rep: RepIx,
    pub email: String,
    pub side: On,
    pub made: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct TrackedEvent {
    pub rep: RepIx,
    pub id: String,
    pub subject: String,
    /// Must be in the CRM exactly once (`false`: must not be there at all).
    pub expected: bool,
    /// Compared at all (hostile subjects are only counted for duplicates).
    pub compared: bool,
    /// Deleted by the rep (rather than refused from the start).
    pub deleted: bool,
    /// Deleted since the rep's last successful cycle.
    pub dirty: bool,
}

/// What the edits should lead to.
#[derive(Debug, Default)]
pub(crate) struct Model {
    pub contacts: Vec<Tracked>,
    pub dups: Vec<Dup>,
    /// E-mails (lower-case) refused on the side they were written on: never copied.
    pub refused_emails: Vec<(RepIx, String)>,
    pub events: Vec<TrackedEvent>,
    /// Contacts outside the folder / group, which a later edit may move in.
    outside: Vec<(RepIx, String, String, String)>,
    /// A reset of the rep happened and no cycle has succeeded since.
    reset_pending: [bool; 2],
    seq: u64,
    now: Option<DateTime<Utc>>,
}

pub(crate) fn rep_of(sc: &Scenario, rep: RepIx) -> &Rep {
    if rep == 0 { &sc.exchange_rep } else { &sc.google_rep }
}

const HOSTILE: [&str; 7] = [
    "\u{0}Nul at the start",
    "Ctl\u{1}\u{7}\u{1b}[31m\u{7f}",
    "\u{202e}RTL עברית مرحبا",
    "Emoji 😀🚀👩‍👩‍👧",
    "Tab\tand\nnewline\r",
    "  spaces around  ",
    "\u{feff}zero\u{200b}width",
];

/// Hostile text; `huge` allows strings longer than any field (Salesforce refuses those at the
/// door, so its users cannot type them).
fn hostile_name(rng: &mut Rng, huge: bool) -> String {
    if huge && rng.unit() < 0.3 {
        format!("Huge{}", "x".repeat(300 + pick(rng, 40_000)))
    } else {
        HOSTILE[pick(rng, HOSTILE.len())].into()
    }
}

fn person(given: &str, email: &str) -> Contact {
    Contact {
        given_name: Some(given.into()),
        family_name: Some("Chaos".into()),
        emails: vec![email.into()],
        phone: None,
        company: None,
        title: None,
        department: None,
        mobile: None,
        address: PostalAddress::default(),
        notes: None,
        categories: vec![],
    }
}

/// The e-mails of a record of any side, lower-case.
pub(crate) fn emails(v: &Value) -> Vec<String> {
    let mut out = vec![];
    if let Some(e) = v["Email"].as_str() {
        out.push(e.to_lowercase());
    }
    for a in v["emailAddresses"].as_array().into_iter().flatten() {
        if let Some(e) = a["address"].as_str().or(a["value"].as_str()) {
            out.push(e.to_lowercase());
        }
    }
    out
}

/// The given name of a record of any side.
pub(crate) fn given(v: &Value) -> Option<String> {
    v["FirstName"].as_str().or(v["givenName"].as_str()).or(v["names"][0]["givenName"].as_str()).map(str::to_owned)
}

/// The contacts of one side of a rep in sync scope: the rep's CRM contacts, the folder's
/// contacts, the group's members.
pub(crate) fn side_contacts(f: &Fakes, sc: &Scenario, rep: RepIx, on: On) -> Vec<Value> {
    let r = rep_of(sc, rep);
    match (on, rep) {
        (On::Crm, _) => {
            f.salesforce.contacts().into_iter().filter(|c| c["OwnerId"].as_str() == Some(&r.crm_user_id)).collect()
        }
        (On::Provider, 0) => f.graph.folder_contacts(EXCHANGE_MAILBOX, &r.config.contacts.folder),
        (On::Provider, _) => {
            let members = f.google.group_members(GOOGLE_USER, &r.config.contacts.group);
            f.google
                .contacts(GOOGLE_USER)
                .into_iter()
                .filter(|p| members.iter().any(|m| Some(m.as_str()) == p["resourceName"].as_str()))
                .collect()
        }
    }
}

fn id_of(v: &Value) -> String {
    v["Id"].as_str().or(v["id"].as_str()).or(v["resourceName"].as_str()).unwrap_or_default().to_owned()
}

impl Model {
    /// The seeded contacts of both reps that are on both sides, each given a side to be edited on.
    pub fn new(f: &Fakes, sc: &Scenario) -> Self {
        let mut m = Model { now: Some(sc.now), ..Default::default() };
        for rep in 0..2 {
            let crm: Vec<String> = side_contacts(f, sc, rep, On::Crm).iter().flat_map(emails).collect();
            for c in side_contacts(f, sc, rep, On::Provider) {
                let (Some(email), Some(g)) = (emails(&c).into_iter().next(), given(&c)) else { continue };
                if crm.contains(&email) {
                    let side = if m.contacts.len() % 2 == 0 { On::Crm } else { On::Provider };
                    m.contacts.push(Tracked { rep, email, given: g, side, excluded: None, dirty: 0 });
                }
            }
        }
        m
    }

    fn next(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A Reset Sync of `rep`: its pending edits fall under the first-sight rules.
    pub fn reset(&mut self, rep: RepIx) {
        self.reset_pending[rep] = true;
        for t in self.contacts.iter_mut().filter(|t| t.rep == rep && t.dirty > 0) {
            t.excluded = t.excluded.or(Some(RESET_RULE));
        }
        // A deletion not yet synced when a Reset Sync comes, or made before the next cycle,
        // leaves the copy (docs/behaviour.md, Reset Sync): only duplicates are checked.
        for e in self.events.iter_mut().filter(|e| e.rep == rep && e.dirty) {
            e.compared = false;
        }
    }

    /// A cycle of `rep` succeeded: every mailbox edit made before it is synced, and a CRM edit
    /// after its second such cycle.
    pub fn synced(&mut self, rep: RepIx) {
        self.reset_pending[rep] = false;
        for t in self.contacts.iter_mut().filter(|t| t.rep == rep) {
            t.dirty = t.dirty.saturating_sub(1);
        }
        for e in self.events.iter_mut().filter(|e| e.rep == rep) {
            e.dirty = false;
        }
    }

    /// A round of random edits on both reps' three sides.
    pub fn edit_round(&mut self, f: &Fakes, sc: &Scenario, rng: &mut Rng, round: usize, out: &mut Outcome) {
        for rep in 0..2 {
            for _ in 0..3 + pick(rng, 8) {
                out.edits += 1;
                let roll = rng.unit();
                if roll < 0.40 {
                    self.edit(f, sc, rng, rep, round);
                } else if roll < 0.55 {
                    let side = if rng.unit() < 0.5 { On::Crm } else { On::Provider };
                    let n = self.next();
                    let email = format!("new{n}.r{round}@chaos{rep}.example");
                    let given = format!("New{n}");
                    insert(f, sc, rep, side, &person(&given, &email));
                    self.contacts.push(Tracked {
                        rep,
                        email,
                        given,
                        side,
                        excluded: None,
                        dirty: cycles_to_sync(side),
                    });
                } else if roll < 0.60 {
                    self.leave(f, sc, rng, rep, true);
                } else if roll < 0.65 {
                    self.leave(f, sc, rng, rep, false);
                } else if roll < 0.70 {
                    self.outside_or_in(f, rng, rep);
                } else if roll < 0.78 {
                    out.hostile += 1;
                    self.hostile(f, sc, rng, rep);
                } else if roll < 0.82 {
                    out.hostile += 1;
                    let side = if rng.unit() < 0.5 { On::Crm } else { On::Provider };
                    let n = self.next();
                    let email = format!("dup{n}@chaos{rep}.example");
                    insert(f, sc, rep, side, &person(&format!("Dup{n}"), &email));
                    insert(f, sc, rep, side, &person(&format!("Dupe{n}"), &email.to_uppercase()));
                    self.dups.push(Dup { rep, email, side, made: 2 });
                } else {
                    self.event(f, rng, rep, round, out);
                }
            }
        }
    }

    /// A random record of `rep` still compared by value.
    fn pick_live(&self, rng: &mut Rng, rep: RepIx) -> Option<usize> {
        let live: Vec<usize> = (0..self.contacts.len())
            .filter(|i| self.contacts[*i].rep == rep && self.contacts[*i].excluded.is_none())
            .collect();
        (!live.is_empty()).then(|| live[pick(rng, live.len())])
    }

    /// Edit the given name of a live record, on its side.
    fn edit(&mut self, f: &Fakes, sc: &Scenario, rng: &mut Rng, rep: RepIx, round: usize) {
        let Some(i) = self.pick_live(rng, rep) else { return };
        let n = self.next();
        let t = &mut self.contacts[i];
        let Some(rec) = side_contacts(f, sc, rep, t.side).into_iter().find(|c| emails(c).contains(&t.email)) else {
            return;
        };
        let new = format!("Ed{n}r{round}");
        let id = id_of(&rec);
        let done = match (t.side, rep) {
            (On::Crm, _) => f.salesforce.edit_contact(&id, json!({ "FirstName": new })).is_ok(),
            (On::Provider, 0) => f.graph.edit_contact(EXCHANGE_MAILBOX, &id, |v| v["givenName"] = json!(new)),
            (On::Provider, _) => f.google.edit_contact(GOOGLE_USER, &id, |c| c.given_name = Some(new.clone())),
        };
        if done {
            super::trace(|| format!("edit {} on {:?}: {:?} → {new:?}", t.email, t.side, t.given));
            t.given = new;
            t.dirty = cycles_to_sync(t.side);
            if self.reset_pending[rep] {
                t.excluded = t.excluded.or(Some(RESET_RULE));
            }
        }
    }

    /// Delete a live record on its side, or move it out of the folder / group.
    fn leave(&mut self, f: &Fakes, sc: &Scenario, rng: &mut Rng, rep: RepIx, delete: bool) {
        let Some(i) = self.pick_live(rng, rep) else { return };
        let t = &mut self.contacts[i];
        let Some(rec) = side_contacts(f, sc, rep, t.side).into_iter().find(|c| emails(c).contains(&t.email)) else {
            return;
        };
        let id = id_of(&rec);
        let group = &rep_of(sc, rep).config.contacts.group;
        let (done, why) = match (t.side, rep, delete) {
            (On::Crm, _, _) => (f.salesforce.delete_contact(&id), "deleted in the CRM"),
            (On::Provider, 0, true) => (f.graph.delete_contact(EXCHANGE_MAILBOX, &id), "deleted in the mailbox"),
            (On::Provider, 0, false) => (f.graph.move_contact(EXCHANGE_MAILBOX, &id, None), "moved out of the folder"),
            (On::Provider, _, true) => (f.google.delete_contact(GOOGLE_USER, &id), "deleted in the mailbox"),
            (On::Provider, _, false) => (f.google.remove_from_group(GOOGLE_USER, &id, group), "taken out of the group"),
        };
        if done {
            t.excluded = Some(why);
        }
    }

    /// A contact outside the folder / group, or one of those moved in.
    fn outside_or_in(&mut self, f: &Fakes, rng: &mut Rng, rep: RepIx) {
        let mine: Vec<usize> = (0..self.outside.len()).filter(|i| self.outside[*i].0 == rep).collect();
        if mine.is_empty() || rng.unit() < 0.5 {
            let n = self.next();
            let (email, given) = (format!("out{n}@chaos{rep}.example"), format!("Out{n}"));
            let c = person(&given, &email);
            let id = if rep == 0 {
                f.graph.insert_contact(EXCHANGE_MAILBOX, None, &c)
            } else {
                f.google.insert_contact(GOOGLE_USER, false, &c)
            };
            self.outside.push((rep, id, email, given));
            return;
        }
        let (_, id, email, given) = self.outside.remove(mine[pick(rng, mine.len())]);
        let moved = if rep == 0 {
            f.graph.move_contact(EXCHANGE_MAILBOX, &id, Some("Salesforce_Sync"))
        } else {
            f.google.add_to_group(GOOGLE_USER, &id, "Salesforce Sync")
        };
        if moved {
            self.contacts.push(Tracked { rep, email, given, side: On::Provider, excluded: None, dirty: 1 });
        }
    }

    /// A contact carrying hostile text, or an invalid e-mail (then it must never be copied).
    fn hostile(&mut self, f: &Fakes, sc: &Scenario, rng: &mut Rng, rep: RepIx) {
        let n = self.next();
        if rng.unit() < 0.3 {
            let email = ["not-an-e-mail", "two@@at.example", "spa ce@x.example", "trailing@"][pick(rng, 4)];
            let email = format!("{email}{n}");
            insert(f, sc, rep, On::Provider, &person(&format!("Bad{n}"), &email));
            self.refused_emails.push((rep, email.to_lowercase()));
            return;
        }
        let side = if rng.unit() < 0.5 { On::Crm } else { On::Provider };
        let email = format!("hostile{n}@chaos{rep}.example");
        let mut c = person(&hostile_name(rng, side == On::Provider), &email);
        if rng.unit() < 0.5 {
            c.notes = Some(hostile_name(rng, side == On::Provider));
        }
        insert(f, sc, rep, side, &c);
        self.contacts.push(Tracked {
            rep,
            email,
            given: String::new(),
            side,
            excluded: Some("hostile text"),
            dirty: cycles_to_sync(side),
        });
    }

    /// Create, rename or delete a meeting in the rep's calendar (events sync to the CRM).
    fn event(&mut self, f: &Fakes, rng: &mut Rng, rep: RepIx, round: usize, out: &mut Outcome) {
        let now = self.now.unwrap_or_else(Utc::now);
        let mine: Vec<usize> =
            (0..self.events.len()).filter(|i| self.events[*i].rep == rep && self.events[*i].expected).collect();
        let roll = rng.unit();
        if mine.is_empty() || roll < 0.45 {
            let n = self.next();
            let start = now + Duration::days(1 + pick(rng, 40) as i64) + Duration::minutes(15 * pick(rng, 40) as i64);
            let (mut subject, mut end, mut expected, mut compared) =
                (format!("Meeting {n} r{round}"), start + Duration::minutes(30), true, true);
            if rng.unit() < 0.15 {
                out.hostile += 1;
                // Google Calendar refuses an event that ends before it starts; Outlook takes it.
                if rep == 0 && rng.unit() < 0.5 {
                    end = start - Duration::minutes(30);
                    expected = false;
                } else {
                    subject = format!("{} {n}", hostile_name(rng, true));
                    compared = false;
                }
            }
            let e = Event::new(subject.as_str(), start, end);
            let id = if rep == 0 {
                f.graph.insert_event(EXCHANGE_MAILBOX, &e)
            } else {
                f.google.insert_event(GOOGLE_USER, &e)
            };
            super::trace(|| format!("event {id:.12} created {subject:.30} expected {expected} ({start}..{end})"));
            self.events.push(TrackedEvent { rep, id, subject, expected, compared, deleted: false, dirty: false });
        } else if roll < 0.85 {
            let n = self.next();
            let ev = &mut self.events[mine[pick(rng, mine.len())]];
            let new = format!("Renamed {n} r{round}");
            let done = if rep == 0 {
                f.graph.edit_event(EXCHANGE_MAILBOX, &ev.id, |v| v["subject"] = json!(new))
            } else {
                f.google.edit_event(
                    GOOGLE_USER,
                    &ev.id,
                    EventEdit { subject: Some(new.clone()), start: None, duration: None },
                )
            };
            if done {
                super::trace(|| format!("event {:.12} renamed {:?} → {new:?}", ev.id, ev.subject));
                ev.subject = new;
            }
        } else {
            let ev = &mut self.events[mine[pick(rng, mine.len())]];
            let done = if rep == 0 {
                f.graph.delete_event(EXCHANGE_MAILBOX, &ev.id)
            } else {
                f.google.delete_event(GOOGLE_USER, &ev.id)
            };
            if done {
                super::trace(|| format!("event {:.12} {:?} deleted", ev.id, ev.subject));
                ev.expected = false;
                ev.deleted = true;
                ev.dirty = true;
                if self.reset_pending[rep] {
                    ev.compared = false;
                }
            }
        }
    }
}

fn insert(f: &Fakes, sc: &Scenario, rep: RepIx, side: On, c: &Contact) {
    match (side, rep) {
        (On::Crm, _) => {
            f.salesforce.insert_contact_record(&rep_of(sc, rep).crm_user_id, c);
        }
        (On::Provider, 0) => {
            f.graph.insert_contact(EXCHANGE_MAILBOX, Some(&rep_of(sc, rep).config.contacts.folder), c);
        }
        (On::Provider, _) => {
            f.google.insert_contact(GOOGLE_USER, true, c);
        }
    }
}
