//! The fake's data: users, each with People contacts and groups and Calendar events.

use std::collections::BTreeMap;

use crmsync_fake::Tokens;

use super::{calendar, people};

/// One user (mailbox) of the fake.
#[derive(Clone, Debug, Default)]
pub(crate) struct User {
    pub(crate) persons: BTreeMap<String, people::PersonRec>,
    pub(crate) groups: BTreeMap<String, people::GroupRec>,
    pub(crate) events: BTreeMap<String, calendar::EventRec>,
    /// What `people:searchContacts` searches: each contact's texts at the last warm-up.
    pub(crate) search_cache: BTreeMap<String, Vec<String>>,
}

/// The whole fake's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub(crate) users: BTreeMap<String, User>,
    /// Access tokens and refresh tokens, each naming its user.
    pub(crate) tokens: Tokens<String>,
    /// Sync tokens issued before this epoch are expired.
    pub(crate) cursor_epoch: u64,
    /// Change sequence shared by every user and service.
    pub(crate) seq: u64,
    pub(crate) next_id: u64,
}

impl State {
    pub(crate) fn tick(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
    /// Add a user (mailbox) with the system groups `myContacts` and `starred`. Idempotent.
    pub(crate) fn add_user(&mut self, email: &str) {
        self.users.entry(email.to_lowercase()).or_insert_with(|| {
            let mut u = User::default();
            for (id, name) in [("myContacts", "myContacts"), ("starred", "starred")] {
                u.groups.insert(format!("contactGroups/{id}"), people::GroupRec::system(id, name));
            }
            u
        });
    }

    /// A refresh token for `user` (user-managed mode).
    pub(crate) fn add_refresh_token(&mut self, user: &str) -> String {
        let t = format!("1//fake-refresh-{:06}", self.tokens.next_seq());
        self.tokens.add_refresh(t.clone(), user.to_lowercase());
        t
    }

    pub(crate) fn user(&mut self, email: &str) -> Option<&mut User> {
        self.users.get_mut(&email.to_lowercase())
    }
}
