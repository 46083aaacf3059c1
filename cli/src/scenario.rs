//! The three fakes, started in-process, and the standard scenario (the README's "What the demo shows") seeded into them.
//!
//! Used by `crmsync demo` (random loopback ports) and `crmsync sandbox` (fixed ports).

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Duration, DurationRound, Utc};
use crmsync_core::{ConnectionMode, Contact, Crm, Event, PostalAddress, Provider, Rep, SyncConfig};
use crmsync_exchange::fake::FakeGraph;
use crmsync_google::fake::FakeGoogle;
use crmsync_salesforce::fake::FakeSalesforce;

/// The fakes of every service crmsync speaks, on loopback.
#[derive(Debug)]
pub struct Fakes {
    pub salesforce: FakeSalesforce,
    pub graph: FakeGraph,
    pub google: FakeGoogle,
}

impl Fakes {
    /// Start all three on random free loopback ports.
    pub async fn start() -> Fakes {
        Fakes {
            salesforce: FakeSalesforce::start().await,
            graph: FakeGraph::start().await,
            google: FakeGoogle::start().await,
        }
    }

    /// Start them on `host` at `port_base` (Salesforce), `+1` (Graph) and `+2` (Google).
    pub async fn start_on(host: &str, port_base: u16) -> anyhow::Result<Fakes> {
        let bind = |p: u16| TcpListener::bind((host, p)).with_context(|| format!("cannot listen on {host}:{p}"));
        let (sf, graph, google) = (bind(port_base)?, bind(port_base + 1)?, bind(port_base + 2)?);
        Ok(Fakes {
            salesforce: FakeSalesforce::start_on(sf).await,
            graph: FakeGraph::start_on(graph).await,
            google: FakeGoogle::start_on(google).await,
        })
    }

    /// The adapters, pointed at the fakes with their seeded credentials.
    pub fn crm(&self) -> crmsync_core::Result<Arc<dyn Crm>> {
        Ok(Arc::new(crmsync_salesforce::SalesforceCrm::new(self.salesforce.config())?))
    }
    pub fn providers(&self) -> crmsync_core::Result<Vec<Arc<dyn Provider>>> {
        Ok(vec![
            Arc::new(crmsync_exchange::ExchangeProvider::new(self.graph.config())?),
            Arc::new(crmsync_google::GoogleProvider::new(self.google.config())?),
        ])
    }

    /// Every request each fake has served: (crm, provider).
    pub fn requests(&self) -> (u64, u64) {
        (self.salesforce.requests(), self.graph.requests() + self.google.requests())
    }
}

/// How big the seeded scenario is.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Contacts per rep in the folder/group and in the CRM (split between matched, new on each side).
    pub contacts: usize,
    /// Plain in-window meetings per rep (besides the special events every scenario has).
    pub events: usize,
    /// Reps to seed and configure: 1 is the Exchange rep alone, 2 (the default) the standard
    /// Exchange and Google reps; every further rep alternates Exchange and Google
    /// (admin-managed, with the same shape of contacts and meetings as the first two).
    pub reps: usize,
}

impl Default for Size {
    fn default() -> Self {
        Size { contacts: 12, events: 6, reps: 2 }
    }
}

/// The largest `--reps` the scenario seeds.
pub const MAX_REPS: usize = 10_000;

/// What was seeded: the reps, the admins, and handles the demo needs.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub now: DateTime<Utc>,
    pub exchange_rep: Rep,
    pub google_rep: Rep,
    /// Reps beyond the standard two (`Size::reps` > 2), in order.
    pub more_reps: Vec<Rep>,
    /// How many reps are configured (`Size::reps`): with 1, the Google rep exists in the
    /// fakes (its user, grant and special events) but is not one of [`Scenario::reps`].
    pub rep_count: usize,
    /// Holds both `Manage Users` and `Manage Sync`.
    pub admin: String,
    /// Holds `Manage Users` only: their Reset Sync is refused.
    pub half_admin: String,
    /// The Google rep's first refresh token (user-managed connection).
    pub google_grant: String,
    /// A Google event the rep edits while disconnected.
    pub google_edit_target: String,
}

impl Scenario {
    /// The configured reps, in order: the Exchange rep, the Google rep, then the others.
    pub fn reps(&self) -> Vec<Rep> {
        [&self.exchange_rep, &self.google_rep]
            .into_iter()
            .chain(&self.more_reps)
            .take(self.rep_count)
            .cloned()
            .collect()
    }
}

pub const EXCHANGE_MAILBOX: &str = "erin@contoso.example";
pub const GOOGLE_USER: &str = "gus@fabrikam.example";

fn person(i: usize, domain: &str, tag: &str) -> Contact {
    Contact {
        given_name: Some(format!("{tag}{i}")),
        family_name: Some(format!("Buyer{i}")),
        emails: vec![format!("{}.{i}@{domain}", tag.to_lowercase())],
        phone: Some(format!("+1 555 01{:04}", i % 10_000)),
        company: Some(format!("Customer {}", i % 7)),
        title: Some("Purchasing".into()),
        department: None,
        mobile: None,
        address: PostalAddress { city: Some("Springfield".into()), ..Default::default() },
        notes: None,
        categories: vec![],
    }
}

fn meeting(subject: &str, start: DateTime<Utc>, minutes: i64, attendee: Option<&Contact>) -> Event {
    let mut e = Event::new(subject, start, start + Duration::minutes(minutes));
    e.attendees = attendee.map(|c| c.emails.clone()).unwrap_or_default();
    e.location = Some("Online".into());
    e
}

/// How a scenario's contacts split: matched on both sides, new in the mailbox, new in the CRM.
pub fn split(contacts: usize) -> (usize, usize, usize) {
    let n = contacts.max(4);
    let (matched, new_provider) = (n / 2, n / 4);
    (matched, new_provider, n - matched - new_provider)
}

/// One Exchange rep's contacts and meetings: `base` names its e-mail domains (`{base}-customers.example`, …).
/// Returns the matched people (the meetings' attendees).
fn seed_exchange_rep(
    f: &Fakes,
    owner: &str,
    mailbox: &str,
    base: &str,
    tag: &str,
    size: Size,
    day: &impl Fn(i64, u32) -> DateTime<Utc>,
) -> Vec<Contact> {
    let (sf, g) = (&f.salesforce, &f.graph);
    let (matched, new_provider, new_crm) = split(size.contacts);
    g.add_mailbox(mailbox);
    let folder = "Salesforce_Sync";
    g.ensure_folder(mailbox, folder);
    let mut people = vec![];
    for i in 0..matched {
        let c = person(i, &format!("{base}-customers.example"), &format!("{tag}Match"));
        // Same person on both sides, written differently: links, never duplicates.
        let mut crm_copy = c.clone();
        crm_copy.emails = vec![c.emails[0].to_uppercase()];
        crm_copy.phone = Some(format!("+1555 01 {:04}", i % 10_000));
        sf.insert_contact_record(owner, &strip_company(&crm_copy));
        g.insert_contact(mailbox, Some(folder), &c);
        people.push(c);
    }
    for i in 0..new_provider {
        g.insert_contact(mailbox, Some(folder), person(i, &format!("{base}-new.example"), &format!("{tag}Newmail")));
    }
    for i in 0..new_crm {
        sf.insert_contact_record(
            owner,
            &strip_company(&person(i, &format!("{base}-crm.example"), &format!("{tag}Newcrm"))),
        );
    }
    for i in 0..size.events {
        let who = people.get(i % people.len().max(1));
        g.insert_event(
            mailbox,
            meeting(&format!("Customer call {i}"), day(1 + i as i64 % 60, 9 + (i % 8) as u32), 30, who),
        );
    }
    people
}

/// One Google rep's group members, CRM contacts and meetings (as [`seed_exchange_rep`]); returns
/// the matched people and the id of the first meeting.
fn seed_google_rep(
    f: &Fakes,
    owner: &str,
    user: &str,
    base: &str,
    tag: &str,
    size: Size,
    day: &impl Fn(i64, u32) -> DateTime<Utc>,
) -> (Vec<Contact>, String) {
    let (sf, go) = (&f.salesforce, &f.google);
    let (matched, new_provider, new_crm) = split(size.contacts);
    go.add_user(user);
    let mut people = vec![];
    for i in 0..matched {
        let c = person(i, &format!("{base}-customers.example"), &format!("{tag}Gmatch"));
        sf.insert_contact_record(owner, &strip_company(&c));
        go.insert_contact(user, true, &c);
        people.push(c);
    }
    for i in 0..new_provider {
        go.insert_contact(user, true, &person(i, &format!("{base}-new.example"), &format!("{tag}Gnew")));
    }
    for i in 0..new_crm {
        sf.insert_contact_record(
            owner,
            &strip_company(&person(i, &format!("{base}-crm.example"), &format!("{tag}Gcrm"))),
        );
    }
    let mut first = String::new();
    for i in 0..size.events {
        let who = people.get(i % people.len().max(1));
        let id = go.insert_event(
            user,
            &meeting(&format!("Demo call {i}"), day(1 + i as i64 % 60, 10 + (i % 7) as u32), 30, who),
        );
        if i == 0 {
            first = id;
        }
    }
    (people, first)
}

/// Seed the standard scenario into the fakes (the README's "What the demo shows").
pub fn seed(f: &Fakes, size: Size) -> Scenario {
    let now = Utc::now().duration_trunc(Duration::hours(1)).expect("an hour divides time");
    let sf = &f.salesforce;
    let admin = "Alex Admin".to_string();
    let half_admin = "Hank Halfadmin".to_string();
    sf.add_user(&admin, &[crmsync_core::MANAGE_USERS, crmsync_core::MANAGE_SYNC]);
    sf.add_user(&half_admin, &[crmsync_core::MANAGE_USERS]);
    let erin = sf.add_user("Erin Exchange", &[]);
    let gus = sf.add_user("Gus Google", &[]);
    let olga = sf.add_user("Olga Other", &[]);
    let day = |d: i64, h: u32| {
        now.duration_trunc(Duration::days(1)).expect("days") + Duration::days(d) + Duration::hours(h.into())
    };
    let reps = size.reps.clamp(1, MAX_REPS);

    // --- Exchange rep: contacts in the Salesforce_Sync folder, around it, and in the CRM.
    let g = &f.graph;
    let folder = "Salesforce_Sync";
    let erin_people = seed_exchange_rep(f, &erin, EXCHANGE_MAILBOX, "contoso", "", size, &day);
    // Outside the folder: one plain, one carrying the folder's name as a category (ignored).
    g.insert_contact(EXCHANGE_MAILBOX, None, person(0, "contoso-private.example", "Friend"));
    let mut tagged = person(1, "contoso-private.example", "Tagged");
    tagged.categories = vec![folder.into()];
    g.insert_contact(EXCHANGE_MAILBOX, None, &tagged);
    // In the folder, but the CRM contact with that e-mail belongs to another owner.
    let shared = person(0, "shared-account.example", "Shared");
    g.insert_contact(EXCHANGE_MAILBOX, Some(folder), &shared);
    sf.insert_contact_record(&olga, &strip_company(&shared));
    sf.insert_contact_record(&olga, &strip_company(&person(1, "olga.example", "Olgas")));

    // --- Google rep: members of the "Salesforce Sync" group, non-members, CRM contacts (with
    // one rep only, the Google rep keeps its special events and nothing else).
    let go = &f.google;
    let gus_size = if reps >= 2 { size } else { Size { contacts: 0, events: 0, ..size } };
    let (gus_people, google_edit_target) = seed_google_rep(f, &gus, GOOGLE_USER, "fabrikam", "", gus_size, &day);
    go.insert_contact(GOOGLE_USER, false, &person(0, "fabrikam-private.example", "Gfriend"));
    let google_grant = go.add_refresh_token(GOOGLE_USER);

    // --- Special events: the same shape for both reps.
    let specials = |people: &[Contact]| {
        let first = people.first();
        vec![
            Event { private: true, ..meeting("Dentist (private)", day(2, 8), 60, None) },
            Event { categories: vec!["Don't Sync".into()], ..meeting("Poker night", day(3, 19), 120, None) },
            // A day before the 30-day window: read (the window is read with a margin), skipped.
            meeting("Kickoff last month", day(-31, 10), 60, first),
            Event { cancelled: true, ..meeting("Cancelled review", day(4, 15), 30, first) },
        ]
    };
    for e in specials(&erin_people) {
        g.insert_event(EXCHANGE_MAILBOX, &e);
    }
    g.insert_weekly_series(EXCHANGE_MAILBOX, "Weekly pipeline review", day(1, 16), Duration::minutes(45), 3);
    for e in specials(&gus_people) {
        go.insert_event(GOOGLE_USER, &e);
    }
    go.insert_series(GOOGLE_USER, &meeting("Weekly forecast", day(1, 17), 30, None), 3, 7);
    drop((erin_people, gus_people));

    let rep = |id: String, name: String, provider: &str, mailbox: String, connection| Rep {
        id: id.clone(),
        name,
        crm_user_id: id,
        provider: provider.into(),
        mailbox,
        connection,
        config: SyncConfig::default(),
    };
    // --- Further reps: odd numbers on Exchange, even ones on Google (the service account).
    let more_reps = (3..=reps)
        .map(|k| {
            if k % 2 == 1 {
                let (name, mailbox) = (format!("Rep {k} Exchange"), format!("rep{k}@contoso.example"));
                let owner = sf.add_user(&name, &[]);
                seed_exchange_rep(f, &owner, &mailbox, &format!("r{k}-contoso"), &format!("R{k}"), size, &day);
                rep(owner, name, "exchange", mailbox, ConnectionMode::AdminManaged)
            } else {
                let (name, user) = (format!("Rep {k} Google"), format!("rep{k}@fabrikam.example"));
                let owner = sf.add_user(&name, &[]);
                seed_google_rep(f, &owner, &user, &format!("r{k}-fabrikam"), &format!("R{k}"), size, &day);
                rep(owner, name, "google", user, ConnectionMode::AdminManaged)
            }
        })
        .collect();
    Scenario {
        now,
        exchange_rep: rep(
            erin,
            "Erin Exchange".into(),
            "exchange",
            EXCHANGE_MAILBOX.into(),
            ConnectionMode::AdminManaged,
        ),
        google_rep: rep(gus, "Gus Google".into(), "google", GOOGLE_USER.into(), ConnectionMode::UserManaged),
        more_reps,
        rep_count: reps,
        admin,
        half_admin,
        google_grant,
        google_edit_target,
    }
}

/// Salesforce keeps the company on the Account, not the Contact.
fn strip_company(c: &Contact) -> Contact {
    Contact { company: None, ..c.clone() }
}
