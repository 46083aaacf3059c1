//! The ports: what the engine needs from a mail provider, a CRM and a state store.
//!
//! [`Collection`] is the record-level port, one per (side, rep, kind): a Graph contacts folder,
//! a Google contact group, a primary calendar inside the event window, "the CRM contacts in the
//! rep's filter". [`Provider`] and [`Crm`] are account-level and hand collections out.
//! [`Store`] keeps links, cursors, status, item errors, resets and leases.
//!
//! Every method is required: decorators (request counting, fault injection, crash simulation)
//! must forward each one explicitly, and none silently inherits a default.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::config::{Rep, Window};
use crate::error::Result;
use crate::model::{Canon, Kind, Side, SyncKey};
pub use crate::model::{Item, MatchKey, NewItem, RepState, Update};
use crate::report::CycleReport;

/// One entry of a change feed.
// Items dominate every feed; boxing each one would cost an allocation per record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The item exists in scope with this content (new or changed, or every item of a full read).
    Upsert(Item),
    /// The item was deleted or left the collection's scope (moved out of the folder or group,
    /// out of the owner filter). Events that merely left the date window should be delivered
    /// as `Upsert` when the service can tell; the engine drops their links without deleting.
    Removed(String),
}

/// An item a read saw but leaves out, with the reason reported to the admin
/// (`outside_scope`, `category_not_folder`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    pub id: String,
    pub reason: String,
}

/// A per-item failure: the item is skipped this cycle, recorded, and retried by id next cycle.
#[derive(Clone, Debug)]
pub struct ItemFailure {
    pub id: String,
    pub error: crate::Error,
}

/// What one read returned.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Whether this was a full read (every in-scope item is in `items`) or incremental.
    pub full: bool,
    pub items: Vec<Change>,
    pub skipped: Vec<Skip>,
    /// Items that could not be read or parsed (unparsable dates, missing fields, …).
    pub failures: Vec<ItemFailure>,
    /// The cursor to pass next time. Opaque to the engine.
    pub cursor: Option<String>,
}

/// A record found by [`Collection::find`].
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub item: Item,
    /// False when the record exists but is outside this collection's scope (e.g. a CRM contact
    /// owned by somebody else): the engine then skips the other side's item as `outside_filter`
    /// instead of creating a duplicate.
    pub in_scope: bool,
}

/// What a collection can do, as plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest batch `create_many` / `update_many` / `delete_many` sends in one request.
    pub max_batch: usize,
    /// The canonical fields this side stores. The engine compares and writes only the fields
    /// both sides of a link store.
    pub fields: &'static [&'static str],
    /// Whether `changes(Some(cursor))` reads incrementally (otherwise every read is full).
    pub incremental: bool,
    /// Whether `find` can see records outside the collection's scope (then the engine asks it
    /// even after a full read, to avoid duplicating a record that exists out of scope).
    pub find_beyond_scope: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self { max_batch: 100, fields: &[], incremental: true, find_beyond_scope: false }
    }
}

/// One collection of records on one side, for one rep and kind. All methods are batched and
/// report per item; an `Err` of the whole call means nothing in it is known to have happened.
#[async_trait]
pub trait Collection: Send + Sync + std::fmt::Debug {
    fn capabilities(&self) -> Capabilities;

    /// Full read when `cursor` is `None`; incremental otherwise. An expired cursor is
    /// `ErrorKind::CursorExpired`, after which the engine calls again with `None`.
    async fn changes(&self, cursor: Option<&str>) -> Result<Changes>;

    /// The current state of these items; a missing one is absent from the result.
    async fn get_many(&self, ids: &[String]) -> Result<Vec<Item>>;

    /// Every record matching any of the keys (the engine pairs them up itself).
    async fn find(&self, keys: &[MatchKey]) -> Result<Vec<Found>>;

    /// Create records (stamping each sync key) in scope; one result per input, in order.
    /// The engine only asks after it searched the scope for these keys (in a full read or with
    /// `find`), so an adapter may send right away; but its own retries must never make a
    /// second record (a batch whose reply was lost is checked by key before it is re-sent).
    async fn create_many(&self, items: &[NewItem]) -> Result<Vec<Result<Item>>>;

    /// Conditional updates; one result per input, in order.
    async fn update_many(&self, items: &[Update]) -> Result<Vec<Result<Item>>>;

    /// Delete records; one result per input, in order. Deleting a missing record succeeds.
    async fn delete_many(&self, ids: &[String]) -> Result<Vec<Result<()>>>;

    /// HTTP requests (or equivalent round trips) made through this handle so far, including
    /// the ones made while it was handed out (folder lookup, token refresh).
    fn requests(&self) -> u64;
}

/// What the engine hands an account-level port when asking for a collection.
#[derive(Clone, Debug)]
pub struct Access {
    /// The window to read events in (for `Kind::Event`): the rep's event window widened by
    /// [`crate::config::READ_MARGIN_DAYS`]. The engine applies the exact window itself.
    pub window: Window,
    /// The rep's own grant (refresh token) for user-managed connections.
    pub grant: Option<SecretString>,
}

/// A mail/calendar provider (Exchange via Graph, Google, …).
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The name reps refer to in `Rep::provider` (`exchange`, `google`).
    fn name(&self) -> &str;
    /// The rep's contacts folder/group (created on demand) or primary calendar.
    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>>;
    /// Try a user-managed rep's grant with one token request (nothing else is read or written),
    /// before it is stored: `Err` when the service refuses it (revoked, wrong, another app's).
    async fn verify_grant(&self, rep: &Rep, grant: &SecretString) -> Result<()>;
}

/// A CRM user, as user search returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmUser {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
}

/// The permission names Reset Sync needs.
pub const MANAGE_USERS: &str = "Manage Users";
pub const MANAGE_SYNC: &str = "Manage Sync";

/// The CRM (Salesforce, …).
#[async_trait]
pub trait Crm: Send + Sync + std::fmt::Debug {
    /// The rep's contacts (scoped by the rep's contact filter) or events (owned by the rep).
    async fn collection(&self, rep: &Rep, kind: Kind, access: &Access) -> Result<Arc<dyn Collection>>;
    /// Users whose name contains `name`, case-insensitively.
    async fn find_users(&self, name: &str) -> Result<Vec<CrmUser>>;
    /// The permission names the user holds (e.g. [`MANAGE_USERS`], [`MANAGE_SYNC`]).
    async fn permissions(&self, user_id: &str) -> Result<Vec<String>>;
}

/// Whether a link connects two records or remembers one the rep took out of sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Linked,
    /// Dropped by the delete policy `unlink` (or filtered out after linking): neither record is
    /// copied again until the rep re-adds the provider item. Survives Reset Sync, which removes
    /// connections, not the rep's decisions.
    Suppressed,
    /// A create in flight, written ahead of it: the key stamped on the copy and the source's
    /// id; the copy's id is still empty. The link written after the create replaces it; if the
    /// cycle dies in between, the next one settles it (the copy's source may be gone by then).
    Creating,
}

/// "provider item X ⇔ CRM record Y" and what was last synced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub kind: Kind,
    /// Unique per rep and kind; the key stamped on the created record, or derived from the
    /// provider id for links made by matching.
    pub key: SyncKey,
    pub provider_id: String,
    pub crm_id: String,
    pub provider_version: String,
    pub crm_version: String,
    /// Hash of `snapshot`.
    pub hash: String,
    /// The canonical fields at the last sync (base of three-way merges), restricted to the
    /// fields both sides store.
    pub snapshot: Canon,
    pub state: LinkState,
    /// Write-ahead intent: the snapshot an update in flight is writing. Set (committed) before
    /// the remote update, cleared with the link write after it. If the process dies in between,
    /// the next cycle measures both sides against `pending` when the write landed on every
    /// side it targeted (even if the rep edited since), so the engine's own write is never
    /// mistaken for a user's edit, and a later edit of the rep is an edit, not a conflict.
    #[serde(default)]
    pub pending: Option<Pending>,
}

impl Link {
    /// A link that knows the record of one side only (`item` on `side`, nothing on the
    /// other): an orphaned copy kept out of sync, or a create in flight.
    pub fn one_sided(kind: Kind, key: SyncKey, side: Side, item: &Item, snapshot: Canon, state: LinkState) -> Link {
        let (mine, none) = ((item.id.clone(), item.version.clone()), (String::new(), String::new()));
        let ((provider_id, provider_version), (crm_id, crm_version)) =
            if side == Side::Provider { (mine, none) } else { (none, mine) };
        Link {
            kind,
            key,
            provider_id,
            crm_id,
            provider_version,
            crm_version,
            hash: snapshot.hash(),
            snapshot,
            state,
            pending: None,
        }
    }
}

/// An update in flight (see [`Link::pending`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The snapshot the update writes.
    pub snapshot: Canon,
    /// The sides being written.
    pub targets: Vec<Side>,
    /// What each target looked like when the write was planned.
    #[serde(default)]
    pub written: BTreeMap<Side, Written>,
    /// The update brings a pair matched this cycle together: the link was written just before
    /// it, and if it did not land the pair is merged again as at first sight.
    #[serde(default)]
    pub first_sight: bool,
}

/// One target of an update in flight, as it was when the update was planned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Written {
    /// The version the conditional update is based on.
    pub based_on: String,
    /// The fields written; each holds another value there than the one written.
    pub fields: Vec<String>,
    /// Their values before the write (restricted to `fields`).
    pub before: Canon,
}

impl Pending {
    /// Whether the write to `side` landed, judged from that side's canon and version now. It
    /// did when the side holds what was written; or when the side moved on from the version
    /// the update was based on and the written fields no longer all hold their old values (the
    /// update is conditional: a rep's edit before it makes it fail, and leaves those fields as
    /// they were unless the rep changed them too).
    pub fn landed(&self, side: Side, canon: &Canon, version: &str) -> bool {
        if *canon == self.snapshot {
            return true;
        }
        self.written
            .get(&side)
            .is_some_and(|w| w.based_on != version && !w.fields.iter().all(|f| canon.get(f) == w.before.get(f)))
    }
}

/// Both cursors of one rep and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursors {
    pub provider: Option<String>,
    pub crm: Option<String>,
}

/// A recorded per-item error, retried by id next cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    pub kind: Kind,
    /// The side whose item failed (the source of a failed write).
    pub side: Side,
    pub id: String,
    pub reason: String,
    pub attempts: u32,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One atomic store write: a batch's link changes and item errors, and optionally the cursor
/// advance that closes a collection.
#[derive(Clone, Debug, Default)]
pub struct LinkBatch {
    pub upsert: Vec<Link>,
    /// Keys of links to remove.
    pub remove: Vec<SyncKey>,
    /// Errors to record (attempts counted up by the store when already present).
    pub errors: Vec<ItemError>,
    /// Errors to clear: (side, id).
    pub clear_errors: Vec<(Side, String)>,
    /// When set, replaces the cursors of the kind.
    pub cursors: Option<Cursors>,
    /// Deletes to hold in quarantine (Delete Safety), replacing any held under the same key.
    pub hold: Vec<HeldDelete>,
    /// Keys of held deletes to drop from quarantine (applied, discarded, or the item came back).
    pub release: Vec<SyncKey>,
}

/// What an admin decided about a rep's held deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Waiting for an admin; each cycle keeps it held.
    Held,
    /// The next cycle applies the delete.
    Approved,
    /// The next cycle restores the removed record from its partner (where the kind's direction
    /// allows copying that way), or else unlinks the pair; nothing is deleted.
    Discarded,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Held => "held",
            Verdict::Approved => "approved",
            Verdict::Discarded => "discarded",
        }
    }
    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Held, Verdict::Approved, Verdict::Discarded].into_iter().find(|v| v.as_str() == s)
    }
}

/// A delete Delete Safety holds: the link stays as it is, and the record on `side` is deleted
/// only once an admin approves. Kept in the store, so it survives restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDelete {
    pub kind: Kind,
    /// The key of the link whose other side is gone.
    pub key: SyncKey,
    /// The side whose record the delete would remove.
    pub side: Side,
    /// That record's id.
    pub id: String,
    /// A name for people: the contact's name or e-mail, the event's subject.
    pub label: String,
    /// When a cycle first held it.
    pub since: DateTime<Utc>,
    pub verdict: Verdict,
}

/// The longest free text a store keeps (an item error's reason, a rep's last error), in
/// characters; longer text is cut there and ends with `…`. Remote errors echo whatever the
/// record held (a 1 MB name, say), and none of it may stop a kind.
pub const MAX_STORED_TEXT: usize = 4000;

/// `s` as every store keeps it: NUL, which PostgreSQL refuses in text, becomes U+FFFD; every
/// other character (controls, RTL marks, emoji, noncharacters) is kept as it is.
pub fn storable(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

/// Free text as every store keeps it: [`storable`], cut to [`MAX_STORED_TEXT`] characters.
pub fn storable_text(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_STORED_TEXT - 1) {
        Some((end, _)) => Cow::Owned(format!("{}…", storable(&s[..end]))),
        None => storable(s),
    }
}

impl LinkBatch {
    /// The batch as every store keeps it: ids, versions and cursors through [`storable`],
    /// item error reasons through [`storable_text`] (link snapshots are stored as JSON, which
    /// escapes everything). Borrowed when nothing needs changing.
    pub fn storable(&self) -> Cow<'_, LinkBatch> {
        let same = |s: &str| matches!(storable(s), Cow::Borrowed(_));
        let clean =
            self.upsert.iter().all(|l| {
                [&l.key.0, &l.provider_id, &l.crm_id, &l.provider_version, &l.crm_version].into_iter().all(|s| same(s))
            }) && self.errors.iter().all(|e| same(&e.id) && matches!(storable_text(&e.reason), Cow::Borrowed(_)))
                && self.clear_errors.iter().all(|(_, id)| same(id))
                && self.cursors.iter().all(|c| [&c.provider, &c.crm].into_iter().flatten().all(|s| same(s)))
                && self.hold.iter().all(|h| same(&h.key.0) && same(&h.id) && same(&h.label))
                && self.release.iter().all(|k| same(&k.0));
        if clean {
            return Cow::Borrowed(self);
        }
        let fix = |s: &mut String| *s = storable(s).into_owned();
        let mut b = self.clone();
        for l in &mut b.upsert {
            for s in [&mut l.key.0, &mut l.provider_id, &mut l.crm_id, &mut l.provider_version, &mut l.crm_version] {
                fix(s);
            }
        }
        for e in &mut b.errors {
            fix(&mut e.id);
            e.reason = storable_text(&e.reason).into_owned();
        }
        b.clear_errors.iter_mut().for_each(|(_, id)| fix(id));
        if let Some(c) = &mut b.cursors {
            [&mut c.provider, &mut c.crm].into_iter().flatten().for_each(fix);
        }
        for h in &mut b.hold {
            [&mut h.key.0, &mut h.id, &mut h.label].into_iter().for_each(fix);
        }
        b.release.iter_mut().for_each(|k| fix(&mut k.0));
        Cow::Owned(b)
    }

    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty()
            && self.remove.is_empty()
            && self.errors.is_empty()
            && self.clear_errors.is_empty()
            && self.cursors.is_none()
            && self.hold.is_empty()
            && self.release.is_empty()
    }
}

/// What Reset Sync clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetScope {
    Contacts,
    Events,
    All,
}

impl ResetScope {
    pub fn kinds(self) -> &'static [Kind] {
        match self {
            ResetScope::Contacts => &[Kind::Contact],
            ResetScope::Events => &[Kind::Event],
            ResetScope::All => &Kind::ALL,
        }
    }
}

/// The audit record of one reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRecord {
    pub rep: String,
    pub admin_id: String,
    pub admin_name: String,
    pub scope: ResetScope,
    pub at: DateTime<Utc>,
    /// Links removed by the reset, per kind name.
    pub links_removed: BTreeMap<String, u64>,
    /// The rep's epoch after the reset (set by the store).
    #[serde(default)]
    pub epoch: u64,
    /// Whether `crmsync reset --undo` can still restore what the reset removed: until the
    /// first cycle after it starts (set by the store).
    #[serde(default)]
    pub undoable: bool,
    /// The result of the first complete cycle after the reset; `None`: unverified.
    #[serde(default)]
    pub verification: Option<Verification>,
    /// Who undid the reset, and when.
    #[serde(default)]
    pub undone: Option<Actor>,
}

impl ResetRecord {
    /// The record of a reset about to happen (the store fills in what it removed and the epoch).
    pub fn new(rep: &str, admin_id: &str, admin_name: &str, scope: ResetScope, at: DateTime<Utc>) -> Self {
        ResetRecord {
            rep: rep.to_owned(),
            admin_id: admin_id.to_owned(),
            admin_name: admin_name.to_owned(),
            scope,
            at,
            links_removed: BTreeMap::new(),
            epoch: 0,
            undoable: false,
            verification: None,
            undone: None,
        }
    }
}

/// An admin's action in the audit: who and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub admin_id: String,
    pub admin_name: String,
    pub at: DateTime<Utc>,
}

/// What the first complete cycle after a reset did: `verified` when it re-linked without a
/// write or an item error (a reset of a healthy rep), `attention` otherwise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub at: DateTime<Utc>,
    pub verified: bool,
    /// Links made by matching, per kind name.
    pub relinked: BTreeMap<String, u64>,
    pub creates: u64,
    pub updates: u64,
    pub deletes: u64,
    pub item_errors: u64,
    /// Deletes Delete Safety held.
    #[serde(default)]
    pub held_deletes: u64,
}

impl Verification {
    /// The verification of a reset from the report of the first complete cycle after it.
    pub fn of(report: &CycleReport, scope: ResetScope) -> Verification {
        let kinds = scope.kinds();
        let ks: Vec<&crate::report::KindReport> =
            kinds.iter().map(|k| if *k == Kind::Contact { &report.contacts } else { &report.events }).collect();
        let sum = |f: fn(&crate::report::KindReport) -> u64| ks.iter().map(|k| f(k)).sum::<u64>();
        let creates = sum(|k| k.created_in_crm + k.created_in_provider);
        let updates = sum(|k| k.updated_in_crm + k.updated_in_provider);
        let deletes = sum(|k| k.deleted_in_crm + k.deleted_in_provider);
        let item_errors = sum(|k| k.errors);
        let held_deletes = sum(|k| k.held_deletes_in_crm + k.held_deletes_in_provider);
        Verification {
            at: report.finished.or(report.started).unwrap_or_default(),
            verified: creates + updates + deletes + item_errors + held_deletes == 0,
            relinked: kinds.iter().zip(&ks).map(|(k, r)| (k.as_str().to_owned(), r.linked)).collect(),
            creates,
            updates,
            deletes,
            item_errors,
            held_deletes,
        }
    }
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
        if self.verified {
            let linked: Vec<String> = self.relinked.iter().map(|(k, n)| plural(*n, k)).collect();
            return write!(f, "verified: re-linked {}, 0 writes", linked.join(" and "));
        }
        let parts: Vec<String> = [
            (self.creates, "create"),
            (self.updates, "update"),
            (self.deletes, "delete"),
            (self.held_deletes, "held delete"),
            (self.item_errors, "item error"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, w)| plural(n, w))
        .collect();
        write!(f, "attention: {}", parts.join(", "))
    }
}

/// Why the rep's last reset (`last`) cannot be undone, as every store refuses it; `Ok` with the
/// record when it can.
pub fn undo_refusal<'a>(rep: &str, last: Option<&'a ResetRecord>) -> Result<&'a ResetRecord> {
    let Some(r) = last else {
        return Err(crate::Error::not_found(format!("rep {rep} was never reset: there is nothing to undo")));
    };
    let at = r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if let Some(u) = &r.undone {
        let when = u.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        return Err(crate::Error::new(
            crate::ErrorKind::Conflict,
            format!("the reset of {at} was already undone by {} at {when}; nothing was changed", u.admin_name),
        ));
    }
    if !r.undoable {
        return Err(crate::Error::new(
            crate::ErrorKind::Conflict,
            format!(
                "a sync cycle has run since the reset of {at} and rebuilt the links from both sides, so the \
                 removed links are gone for good; nothing was changed (the rep is synced as it is; reset again \
                 to start over)"
            ),
        ));
    }
    Ok(r)
}

/// What a reset removed, kept by the store until the first cycle after it starts, so that
/// `reset --undo` can put it back exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResetUndo {
    pub links: Vec<Link>,
    pub cursors: Vec<(Kind, Cursors)>,
    pub item_errors: Vec<ItemError>,
    pub held: Vec<HeldDelete>,
    /// The rep's state before the reset.
    pub state: RepState,
}

/// An action the console refused (the admin lacked a permission): who tried what on whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub at: DateTime<Utc>,
    pub admin_id: String,
    pub admin_name: String,
    /// `sign in`, `reset`, `sync now`, …
    pub action: String,
    /// The rep's id, when the action was about one.
    pub rep: Option<String>,
    /// The scope of a refused Reset Sync.
    pub scope: Option<ResetScope>,
    pub reason: String,
}

/// Cycle reports a store keeps per rep ([`SyncState::history`]); older ones are dropped.
pub const HISTORY_KEPT: usize = 50;

/// Per-rep status as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepStatus {
    pub rep: String,
    pub state: RepState,
    /// Bumped by every reset; link writes carrying an older epoch are refused.
    pub epoch: u64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_report: Option<CycleReport>,
    pub last_reset: Option<ResetRecord>,
    pub last_error: Option<String>,
}

/// Who holds a rep's lease, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub holder: String,
    pub until: DateTime<Utc>,
}

/// What [`Leases::acquire_lease`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lease now (until `now + lease`).
    Acquired,
    /// Somebody else holds it; nothing changed.
    Busy(LeaseHolder),
}

/// The sync state of the reps. Every method is one transaction.
#[async_trait]
pub trait SyncState: Send + Sync + std::fmt::Debug {
    /// The rep's status, creating a fresh `ok` row (epoch 0) the first time.
    async fn status(&self, rep: &str) -> Result<RepStatus>;
    /// Every rep the store knows.
    async fn statuses(&self) -> Result<Vec<RepStatus>>;
    /// Set state and last error; with `report`, also record the run (and last success when the
    /// report has no error). Refused with `Conflict` when `epoch` is stale.
    async fn set_state(
        &self,
        rep: &str,
        epoch: u64,
        state: RepState,
        error: Option<String>,
        report: Option<&CycleReport>,
    ) -> Result<()>;

    async fn links(&self, rep: &str, kind: Kind) -> Result<Vec<Link>>;
    async fn cursors(&self, rep: &str, kind: Kind) -> Result<Cursors>;
    async fn item_errors(&self, rep: &str, kind: Kind) -> Result<Vec<ItemError>>;
    /// Apply a batch atomically; refused with `ErrorKind::Conflict` (nothing written) when
    /// `epoch` is not the rep's current epoch (a reset happened since the cycle began).
    async fn commit(&self, rep: &str, epoch: u64, kind: Kind, batch: &LinkBatch) -> Result<()>;

    /// Reset Sync in one transaction: delete the rep's `Linked` links, cursors and item errors
    /// of the scope's kinds (suppressions stay), bump the epoch, store `record` as last reset,
    /// set `state`, and drop the stored grant when `drop_grant`. Returns links removed per kind.
    async fn reset(&self, record: &ResetRecord, state: RepState, drop_grant: bool) -> Result<BTreeMap<String, u64>>;
    /// Every reset ever recorded for the rep, oldest first.
    async fn resets(&self, rep: &str) -> Result<Vec<ResetRecord>>;
    /// The rep's last `n` cycle reports (every `set_state` with a report), newest first; the
    /// store keeps the last [`HISTORY_KEPT`].
    async fn history(&self, rep: &str, n: usize) -> Result<Vec<CycleReport>>;

    /// Record a refused action (texts as [`storable_text`] keeps them).
    async fn refuse(&self, refusal: &Refusal) -> Result<()>;
    /// Every refusal recorded, oldest first.
    async fn refusals(&self) -> Result<Vec<Refusal>>;

    /// The first cycle after the reset at `epoch` started: what the reset removed is dropped,
    /// the reset can no longer be undone. Nothing happens when it already could not.
    async fn seal_reset(&self, rep: &str, epoch: u64) -> Result<()>;
    /// Attach the result of the first complete cycle after it to the reset at `epoch` (kept
    /// once: a later call changes nothing).
    async fn verify_reset(&self, rep: &str, epoch: u64, verification: &Verification) -> Result<()>;
    /// Undo the rep's last reset in one transaction: put back exactly the links, cursors, item
    /// errors and held deletes it removed and the state before it, bump the epoch, and record
    /// `by` on the reset. Refused with `Conflict` naming why when the last reset was undone
    /// already or a cycle started since; `NotFound` when the rep was never reset. Returns the
    /// reset record as it is now.
    async fn undo_reset(&self, rep: &str, by: &Actor) -> Result<ResetRecord>;

    /// The rep's held deletes of one kind (Delete Safety), oldest first.
    async fn held(&self, rep: &str, kind: Kind) -> Result<Vec<HeldDelete>>;
    /// Give every still `Held` delete of the rep `verdict`, and clear the cursors of their
    /// kinds (the next cycle reads in full and acts on the verdict). Returns how many changed.
    async fn judge_held(&self, rep: &str, verdict: Verdict) -> Result<u64>;

    /// The rep's stored OAuth grant (user-managed connections).
    async fn grant(&self, rep: &str) -> Result<Option<SecretString>>;
    async fn set_grant(&self, rep: &str, grant: Option<&SecretString>) -> Result<()>;
}

/// The scheduler and the per-rep leases. A lease says "this holder runs this rep's cycles until
/// then"; at most one holder has a rep's unexpired lease. Every method is one transaction.
#[async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Make a rep known to the scheduler, due at `due` (keeps an existing schedule).
    async fn schedule(&self, rep: &str, due: DateTime<Utc>) -> Result<()>;
    /// Hand up to `n` due, unleased (or lease-expired) reps to `worker` for `lease`; each rep goes
    /// to exactly one worker at a time.
    async fn claim_due_reps(&self, worker: &str, n: usize, lease: Duration, now: DateTime<Utc>) -> Result<Vec<String>>;
    /// Take one rep's lease for `holder` until `now + lease` when it is free, expired, or already
    /// held by `holder` (then it is extended); otherwise say who holds it. A rep the scheduler
    /// does not know yet becomes known, due at `now`.
    async fn acquire_lease(&self, holder: &str, rep: &str, lease: Duration, now: DateTime<Utc>) -> Result<Acquire>;
    /// Who holds the rep's lease at `now` (`None`: free or expired).
    async fn lease(&self, rep: &str, now: DateTime<Utc>) -> Result<Option<LeaseHolder>>;
    /// When the rep is due next (`None`: unknown to the scheduler).
    async fn due(&self, rep: &str) -> Result<Option<DateTime<Utc>>>;
    /// "Sync now": make the rep due at `now` at the latest (known to the scheduler or not),
    /// taken like any due rep under its lease. Asked while a cycle holds the lease, the next
    /// cycle follows at once: that lease's `release` keeps the rep due at `now`.
    async fn sync_now(&self, rep: &str, now: DateTime<Utc>) -> Result<()>;
    /// Extend a lease the holder still holds; `Conflict` when it lost it.
    async fn renew_lease(&self, holder: &str, rep: &str, lease: Duration, now: DateTime<Utc>) -> Result<()>;
    /// Give a rep back, due again at `next_due` (`None` keeps its due time); `Conflict` when the
    /// holder no longer holds it.
    async fn release(&self, holder: &str, rep: &str, next_due: Option<DateTime<Utc>>) -> Result<()>;
}

/// The end of a lease of length `lease` taken at `now`; an out-of-range length is
/// `InvalidConfig` (never an overflow).
pub fn lease_end(now: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| crate::Error::invalid_config(format!("a lease of {} s is out of range", lease.as_secs())))
}

/// The state store: sync state and leases, in one place (one database).
pub trait Store: SyncState + Leases {}
impl<T: SyncState + Leases + ?Sized> Store for T {}

/// Compile-time proof that every port is object-safe.
#[allow(dead_code)]
fn _object_safe(_: Box<dyn Collection>, _: Box<dyn Provider>, _: Box<dyn Crm>, _: Box<dyn Store>) {}
