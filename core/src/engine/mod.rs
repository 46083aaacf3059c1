//! The sync engine: one cycle per rep, Reset Sync, reconnection, and the cycle report.
//!
//! The engine knows only the ports. [`Engine::cycle`] syncs contacts then events; each kind
//! runs four stages, one file each:
//!
//! 1. [`read`]: both sides' changes, filtered and validated;
//! 2. [`matching`]: unlinked items paired within what was read, then by one batched `find`;
//! 3. [`plan`] (pure): the [`Plan`], every pair carrying the action of [`decide::decide`],
//!    the only decision point;
//! 4. [`apply`]: the plan's writes in batches, each batch's link changes and item errors
//!    committed in one store transaction after the remote write; cursors last.
//!
//! [`ledger`] keeps the kind's counters, skips and item errors across the stages.

mod apply;
mod context;
pub mod decide;
pub mod explain;
mod intent;
mod lease;
mod ledger;
mod matching;
mod plan;
mod read;
mod safety;

pub use lease::{LeaseTerms, Leased};

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tracing::{Instrument, info, info_span, warn};

use self::context::{Ctx, Sides};
use self::ledger::Ledger;
pub use self::plan::{Pair, Plan};
use crate::config::{ConnectionMode, READ_MARGIN_DAYS, Rep};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Kind, PROVIDER_OWNED, Side};
use crate::port::{
    Access, Actor, Collection, Crm, CrmUser, Cursors, LinkState, MANAGE_SYNC, MANAGE_USERS, Provider, RepState,
    ResetRecord, ResetScope, Store, Verdict, Verification,
};
use crate::report::{CycleReport, KindReport, Requests};

/// The engine, wired to one CRM, any number of providers and a store.
#[derive(Clone, Debug)]
pub struct Engine {
    crm: Arc<dyn Crm>,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    store: Arc<dyn Store>,
    clock: Option<DateTime<Utc>>,
}

/// The result of an allowed Reset Sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetOutcome {
    pub record: ResetRecord,
    /// `reset_pending` (admin-managed) or `needs_reconnect` (user-managed).
    pub state: RepState,
}

impl Engine {
    pub fn new(crm: Arc<dyn Crm>, store: Arc<dyn Store>) -> Self {
        Self { crm, providers: BTreeMap::new(), store, clock: None }
    }

    /// Register a provider under its [`Provider::name`].
    pub fn with_provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(provider.name().to_owned(), provider);
        self
    }

    /// Pin "now" (event window, timestamps) for reproducible runs.
    pub fn with_clock(mut self, now: DateTime<Utc>) -> Self {
        self.clock = Some(now);
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.unwrap_or_else(Utc::now)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn crm(&self) -> &Arc<dyn Crm> {
        &self.crm
    }

    /// The provider reps name `name`, when it is wired.
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// One cycle for one rep. Per-item problems are in the report; a kind that fails as a whole
    /// is reported in `error` and the other kind still runs. `Err` only for store failures.
    pub async fn cycle(&self, rep: &Rep) -> Result<CycleReport> {
        let span = info_span!("cycle", rep = %rep.id, provider = %rep.provider);
        self.cycle_inner(rep).instrument(span).await
    }

    async fn cycle_inner(&self, rep: &Rep) -> Result<CycleReport> {
        let started = self.now();
        let status = self.store.status(&rep.id).await?;
        let mut report = CycleReport {
            rep: rep.name.clone(),
            provider: rep.provider.clone(),
            state: status.state,
            started: Some(started),
            ..Default::default()
        };
        if matches!(status.state, RepState::NeedsReconnect | RepState::Disabled) {
            info!(state = status.state.as_str(), "rep not synced");
            self.fill_totals(rep, &mut report).await?;
            return Ok(report);
        }
        let grant = match rep.connection {
            ConnectionMode::AdminManaged => None,
            ConnectionMode::UserManaged => match self.store.grant(&rep.id).await? {
                Some(g) => Some(g),
                None => {
                    let msg = "no stored grant: the rep must connect their account".to_owned();
                    self.store.set_state(&rep.id, status.epoch, RepState::NeedsReconnect, Some(msg), None).await?;
                    report.state = RepState::NeedsReconnect;
                    self.fill_totals(rep, &mut report).await?;
                    return Ok(report);
                }
            },
        };
        let epoch = status.epoch;
        if status.last_reset.as_ref().is_some_and(|r| r.undoable) {
            // The first cycle after a reset: from here on it can no longer be undone.
            self.store.seal_reset(&rep.id, epoch).await?;
        }
        self.store.set_state(&rep.id, epoch, RepState::Syncing, None, None).await?;
        let provider = self.providers.get(&rep.provider).cloned();
        let access = Access { window: rep.config.window(started).widened(READ_MARGIN_DAYS), grant };
        let mut errors = vec![];
        let mut revoked = false;
        for kind in synced_kinds(rep) {
            let result = match &provider {
                Some(p) => {
                    let span = info_span!("kind", kind = kind.as_str());
                    self.sync_kind(rep, kind, epoch, p.as_ref(), &access, &mut report).instrument(span).await
                }
                None => Err(Error::invalid_config(format!("no provider named {:?} is configured", rep.provider))),
            };
            if let Err(e) = result {
                if e.kind() == ErrorKind::Conflict {
                    // Reset while running: the reset owns the rep's state now.
                    warn!(error = %e, "cycle pre-empted by a reset");
                    report.error = Some(e.to_string());
                    report.finished = Some(self.now());
                    return Ok(report);
                }
                warn!(error = %e, kind = kind.as_str(), "kind failed");
                report.kind_mut(kind).fatal = Some(e.to_string());
                errors.push(format!("{}: {e}", kind.as_str()));
                if e.kind() == ErrorKind::GrantRevoked && rep.connection == ConnectionMode::UserManaged {
                    // No retry mends a revoked grant: the rep reconnects (the other kind would fail alike).
                    revoked = true;
                    errors
                        .push("the rep's grant was revoked or is wrong: they must connect their account again".into());
                    break;
                }
            }
        }
        report.finished = Some(self.now());
        report.error = (!errors.is_empty()).then(|| errors.join("; "));
        self.fill_totals(rep, &mut report).await?;
        let held = report.contacts.held_deletes_in_crm
            + report.contacts.held_deletes_in_provider
            + report.events.held_deletes_in_crm
            + report.events.held_deletes_in_provider;
        report.state = match (revoked, errors.is_empty()) {
            (true, _) => RepState::NeedsReconnect,
            (false, true) if held > 0 => RepState::DeletesHeld,
            (false, true) => RepState::Ok,
            (false, false) => RepState::Error,
        };
        match self.store.set_state(&rep.id, epoch, report.state, report.error.clone(), Some(&report)).await {
            Err(e) if e.kind() == ErrorKind::Conflict => report.error = Some(e.to_string()),
            other => other?,
        }
        if let Some(reset) = status
            .last_reset
            .as_ref()
            .filter(|r| r.epoch == epoch && r.verification.is_none() && r.undone.is_none() && report.error.is_none())
        {
            // The first complete cycle after a reset verifies it.
            let verification = Verification::of(&report, reset.scope);
            info!(%verification, "reset verified");
            self.store.verify_reset(&rep.id, epoch, &verification).await?;
        }
        info!(
            writes = report.writes(),
            crm_requests = report.requests.crm,
            provider_requests = report.requests.provider,
            "cycle done"
        );
        Ok(report)
    }

    /// One kind: read → match → plan → apply, on one pair of collections.
    async fn sync_kind(
        &self,
        rep: &Rep,
        kind: Kind,
        epoch: u64,
        provider: &dyn Provider,
        access: &Access,
        report: &mut CycleReport,
    ) -> Result<()> {
        let colls = self.open(rep, kind, provider, access, &mut report.requests).await?;
        let ctx = self.context(rep, kind, &colls);
        let sides = Sides { provider: colls.provider.as_ref(), crm: colls.crm.as_ref() };
        let (kr, result) = match self.plan_with(&ctx, sides, epoch, false).await {
            Ok(plan) => apply::apply(&ctx, sides, self.store.as_ref(), plan).await,
            Err((kr, e)) => (kr, Err(e)),
        };
        *report.kind_mut(kind) = kr;
        report.requests.provider += colls.provider.requests();
        report.requests.crm += colls.crm.requests();
        result
    }

    /// Stages 1–3: read both sides, match the unlinked items, plan. `from_scratch` plans as if
    /// the kind's links, cursors and item errors were gone (a reset's preview), without
    /// removing them. On failure, the counters so far come back with the error.
    async fn plan_with(
        &self,
        ctx: &Ctx<'_>,
        colls: Sides<&dyn Collection>,
        epoch: u64,
        from_scratch: bool,
    ) -> std::result::Result<Plan, (KindReport, Error)> {
        let (rep, kind) = (ctx.rep.id.as_str(), ctx.kind);
        let stored = async {
            if from_scratch {
                return Ok((vec![], Cursors::default(), vec![], vec![]));
            }
            Ok::<_, Error>((
                self.store.links(rep, kind).await?,
                self.store.cursors(rep, kind).await?,
                self.store.item_errors(rep, kind).await?,
                self.store.held(rep, kind).await?,
            ))
        };
        let (links, cursors, old_errors, held) = stored.await.map_err(|e| (KindReport::default(), e))?;
        let mut ledger = Ledger::new(kind, ctx.now, &old_errors);
        let reads = match read::read(ctx, colls, &links, &cursors, &mut ledger).await {
            Ok(r) => r,
            Err(e) => return Err((ledger.report, e)),
        };
        info!(
            provider = reads.provider.items.len(),
            crm = reads.crm.items.len(),
            full_provider = reads.provider.full,
            full_crm = reads.crm.full,
            links = links.len(),
            "read"
        );
        let intent::Settled { links, settled, stale } = intent::settle(links, &reads);
        let linked = plan::linked(ctx, &links, &reads, &held);
        let claims = plan::claims(&links, &reads, &linked);
        let matches = match matching::match_unlinked(ctx, colls, &reads, claims, &mut ledger).await {
            Ok(m) => m,
            Err(e) => return Err((ledger.report, e)),
        };
        let cursors = Cursors { provider: reads.provider.cursor, crm: reads.crm.cursor };
        let plan =
            plan::build(ctx, epoch, &links, linked, matches, cursors, ledger, &held).with_settled(settled, stale);
        info!(pairs = plan.pairs.len(), effects = ?plan.counts(), "planned");
        Ok(plan)
    }

    /// Both collections of one kind. Requests made before a failure are still counted.
    async fn open(
        &self,
        rep: &Rep,
        kind: Kind,
        provider: &dyn Provider,
        access: &Access,
        requests: &mut Requests,
    ) -> Result<Sides<Arc<dyn Collection>>> {
        let prov = provider
            .collection(rep, kind, access)
            .await
            .map_err(|e| e.context(format!("{} {}s", provider.name(), kind.as_str())))?;
        match self.crm.collection(rep, kind, access).await {
            Ok(crm) => Ok(Sides { provider: prov, crm }),
            Err(e) => {
                requests.provider += prov.requests();
                Err(e.context(format!("crm {}s", kind.as_str())))
            }
        }
    }

    fn context<'a>(&self, rep: &'a Rep, kind: Kind, colls: &Sides<Arc<dyn Collection>>) -> Ctx<'a> {
        let (pcaps, ccaps) = (colls.provider.capabilities(), colls.crm.capabilities());
        let policy = rep.config.policy(kind);
        // Fields only the provider originates are compared only when they flow to the CRM.
        let owned_flows = |f: &&str| policy.direction.provider_to_crm() || !PROVIDER_OWNED.contains(f);
        let fields = kind
            .fields()
            .iter()
            .copied()
            .filter(|f| pcaps.fields.contains(f) && ccaps.fields.contains(f))
            .filter(owned_flows)
            .collect();
        let now = self.now();
        let hold = rep.config.hold_deletes(kind);
        Ctx { rep, kind, policy, hold, fields, window: rep.config.window(now), now }
    }

    /// The provider and access of a rep outside a cycle (for [`Engine::plan`] and
    /// [`Engine::apply`]): a user-managed rep needs its stored grant.
    async fn connect(&self, rep: &Rep) -> Result<(Arc<dyn Provider>, Access)> {
        let provider = self
            .providers
            .get(&rep.provider)
            .cloned()
            .ok_or_else(|| Error::invalid_config(format!("no provider named {:?} is configured", rep.provider)))?;
        let grant = match rep.connection {
            ConnectionMode::AdminManaged => None,
            ConnectionMode::UserManaged => Some(self.store.grant(&rep.id).await?.ok_or_else(|| {
                Error::new(ErrorKind::PermissionDenied, "no stored grant: the rep must connect their account")
            })?),
        };
        Ok((provider, Access { window: rep.config.window(self.now()).widened(READ_MARGIN_DAYS), grant }))
    }

    /// Plan one kind of a rep's cycle without applying it (a dry run): reads both sides and the
    /// store, writes nothing. Print it, or hand it to [`Engine::apply`].
    pub async fn plan(&self, rep: &Rep, kind: Kind) -> Result<Plan> {
        self.plan_kind(rep, kind, false).await
    }

    async fn plan_kind(&self, rep: &Rep, kind: Kind, from_scratch: bool) -> Result<Plan> {
        let epoch = self.store.status(&rep.id).await?.epoch;
        let (provider, access) = self.connect(rep).await?;
        let colls = self.open(rep, kind, provider.as_ref(), &access, &mut Requests::default()).await?;
        let ctx = self.context(rep, kind, &colls);
        let sides = Sides { provider: colls.provider.as_ref(), crm: colls.crm.as_ref() };
        self.plan_with(&ctx, sides, epoch, from_scratch).await.map_err(|(_, e)| e)
    }

    /// A dry run of a rep's whole cycle: the plan of every kind the rep syncs, in cycle order.
    /// With a reset scope, the plan of the first cycle after that reset: its kinds only, planned
    /// as if their links and cursors were gone (nothing is removed). Reads both sides and the
    /// store; writes nothing anywhere (not even the store).
    pub async fn dry_run(&self, rep: &Rep, reset: Option<ResetScope>) -> Result<Vec<Plan>> {
        let mut plans = vec![];
        for kind in synced_kinds(rep).filter(|k| reset.is_none_or(|s| s.kinds().contains(k))) {
            plans.push(
                self.plan_kind(rep, kind, reset.is_some())
                    .await
                    .map_err(|e| e.context(format!("planning {}s", kind.as_str())))?,
            );
        }
        Ok(plans)
    }

    /// Apply a plan made by [`Engine::plan`]: its writes, links, item errors and cursors.
    /// Refused with `Conflict` (nothing written to the store) when the rep was reset since.
    pub async fn apply(&self, rep: &Rep, plan: Plan) -> Result<KindReport> {
        let (provider, access) = self.connect(rep).await?;
        let kind = plan.kind;
        let colls = self.open(rep, kind, provider.as_ref(), &access, &mut Requests::default()).await?;
        let ctx = self.context(rep, kind, &colls);
        let sides = Sides { provider: colls.provider.as_ref(), crm: colls.crm.as_ref() };
        let (kr, result) = apply::apply(&ctx, sides, self.store.as_ref(), plan).await;
        result.map(|()| kr)
    }

    async fn fill_totals(&self, rep: &Rep, report: &mut CycleReport) -> Result<()> {
        for kind in Kind::ALL {
            let n = self.store.links(&rep.id, kind).await?.iter().filter(|l| l.state == LinkState::Linked).count();
            let held = self.store.held(&rep.id, kind).await?;
            let kr = report.kind_mut(kind);
            kr.links_total = n as u64;
            kr.held_deletes_in_crm = held.iter().filter(|h| h.side == Side::Crm).count() as u64;
            kr.held_deletes_in_provider = held.iter().filter(|h| h.side == Side::Provider).count() as u64;
        }
        Ok(())
    }

    /// Undo the rep's last reset: `admin` needs Reset Sync's permissions; the store puts back
    /// exactly what the reset removed (links, cursors, item errors, held deletes, the state
    /// before it) while no cycle has started since, and records who undid it. A user-managed
    /// rep whose grant the reset dropped stays `needs_reconnect`.
    pub async fn undo_reset(&self, admin: &CrmUser, rep: &Rep) -> Result<ResetRecord> {
        self.check_reset_permission(admin).await?;
        let by = Actor { admin_id: admin.id.clone(), admin_name: admin.name.clone(), at: self.now() };
        let record = self.store.undo_reset(&rep.id, &by).await?;
        if rep.connection == ConnectionMode::UserManaged && self.store.grant(&rep.id).await?.is_none() {
            let status = self.store.status(&rep.id).await?;
            let msg = "no stored grant: the rep must connect their account".to_owned();
            self.store.set_state(&rep.id, status.epoch, RepState::NeedsReconnect, Some(msg), None).await?;
        }
        info!(rep = %rep.id, admin = %admin.name, "reset undone");
        Ok(record)
    }

    /// Approve or discard the rep's held deletes (Delete Safety); `admin` needs Reset Sync's
    /// permissions. The next cycle reads in full and applies the verdict. Returns how many
    /// held deletes were judged.
    pub async fn judge_held(&self, admin: &CrmUser, rep: &Rep, verdict: Verdict) -> Result<u64> {
        self.check_reset_permission(admin).await?;
        let n = self.store.judge_held(&rep.id, verdict).await?;
        info!(rep = %rep.id, admin = %admin.name, verdict = verdict.as_str(), n, "held deletes judged");
        Ok(n)
    }

    /// Reset Sync: `admin` must hold both `Manage Users` and `Manage Sync`; then the
    /// rep's links, cursors and item errors in `scope` are deleted in one store transaction,
    /// the reset is recorded, and the rep becomes `reset_pending` (admin-managed) or
    /// `needs_reconnect` with its grant dropped (user-managed). No record on either side is
    /// read or written.
    pub async fn reset(&self, admin: &CrmUser, rep: &Rep, scope: ResetScope) -> Result<ResetOutcome> {
        self.check_reset_permission(admin).await?;
        self.reset_allowed(admin, rep, scope).await
    }

    /// Bulk Reset Sync: `admin`'s permissions are checked once (refused: nothing changes), then
    /// each rep is reset as by [`Engine::reset`], each with its own audit record; one result per
    /// rep, in order.
    pub async fn reset_many(
        &self,
        admin: &CrmUser,
        reps: &[Rep],
        scope: ResetScope,
    ) -> Result<Vec<Result<ResetOutcome>>> {
        self.check_reset_permission(admin).await?;
        let mut out = Vec::with_capacity(reps.len());
        for rep in reps {
            out.push(self.reset_allowed(admin, rep, scope).await);
        }
        Ok(out)
    }

    async fn reset_allowed(&self, admin: &CrmUser, rep: &Rep, scope: ResetScope) -> Result<ResetOutcome> {
        let (state, drop_grant) = match rep.connection {
            ConnectionMode::AdminManaged => (RepState::ResetPending, false),
            ConnectionMode::UserManaged => (RepState::NeedsReconnect, true),
        };
        let mut record = ResetRecord::new(&rep.id, &admin.id, &admin.name, scope, self.now());
        record.links_removed = self.store.reset(&record, state, drop_grant).await?;
        // As the store recorded it (epoch, undoable).
        let record = self.store.status(&rep.id).await?.last_reset.unwrap_or(record);
        info!(rep = %rep.id, admin = %admin.name, ?scope, removed = ?record.links_removed, "reset sync");
        Ok(ResetOutcome { record, state })
    }

    /// Reset Sync's permission check: `admin` must hold both `Manage Users` and `Manage Sync`.
    pub async fn check_reset_permission(&self, admin: &CrmUser) -> Result<()> {
        let perms = self.crm.permissions(&admin.id).await?;
        let missing: Vec<&str> =
            [MANAGE_USERS, MANAGE_SYNC].into_iter().filter(|p| !perms.iter().any(|h| h == p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "permission denied: {} lacks {} (Reset Sync needs both {MANAGE_USERS} and {MANAGE_SYNC}); nothing was changed",
                admin.name,
                missing.join(" and ")
            ),
        ))
    }

    /// Store a user-managed rep's new grant and let sync resume (a full resync after a reset).
    pub async fn reconnect(&self, rep: &Rep, grant: SecretString) -> Result<()> {
        self.store.set_grant(&rep.id, Some(&grant)).await?;
        let status = self.store.status(&rep.id).await?;
        let state = if status.last_reset.is_some() && status.state == RepState::NeedsReconnect {
            RepState::ResetPending
        } else {
            RepState::Ok
        };
        self.store.set_state(&rep.id, status.epoch, state, None, None).await
    }

    /// Find a CRM user by partial, case-insensitive name: one match, or an exact name among
    /// several; otherwise an error listing the candidates.
    pub async fn find_user(&self, name: &str) -> Result<CrmUser> {
        let users = self.crm.find_users(name).await?;
        pick(users, name, |u| &u.name, "CRM user")
    }
}

/// The kinds a rep syncs in some direction, in cycle order.
pub fn synced_kinds(rep: &Rep) -> impl Iterator<Item = Kind> + '_ {
    Kind::ALL.into_iter().filter(|&k| {
        let d = rep.config.policy(k).direction;
        d.provider_to_crm() || d.crm_to_provider()
    })
}

/// Find a rep by partial, case-insensitive name among the configured reps.
pub fn find_rep<'a>(reps: &'a [Rep], name: &str) -> Result<&'a Rep> {
    let hits: Vec<&Rep> = reps.iter().filter(|r| r.name.to_lowercase().contains(&name.to_lowercase())).collect();
    pick(hits, name, |r| &r.name, "rep")
}

fn pick<T>(hits: Vec<T>, name: &str, label: impl Fn(&T) -> &String, what: &str) -> Result<T> {
    if hits.is_empty() {
        return Err(Error::not_found(format!("no {what} matches {name:?}")));
    }
    if hits.len() == 1 {
        return Ok(hits.into_iter().next().expect("one"));
    }
    let names: Vec<String> = hits.iter().map(|h| label(h).clone()).collect();
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
        return Ok(hits.into_iter().nth(i).expect("index"));
    }
    Err(Error::invalid_config(format!(
        "{what} name {name:?} is ambiguous; candidates: {}; nothing was changed",
        names.join(", ")
    )))
}
