//! The store operations, written once and instantiated for each back end.
//!
//! The SQL is portable between SQLite and PostgreSQL (`$n` parameters, `ON CONFLICT`,
//! `RETURNING`); the two differences are passed to [`ops!`]: the statement that opens a write
//! transaction (`BEGIN IMMEDIATE` on SQLite, so writers queue on the busy timeout instead of
//! failing on a lock upgrade) and the row-locking clause of the claim (`FOR UPDATE SKIP LOCKED`
//! on PostgreSQL).
//!
//! Every write first locks the rep's row (`UPDATE reps SET epoch = epoch … RETURNING epoch`), so
//! a cycle's commit and a reset of the same rep are serialized: either the commit lands before
//! the reset (and the reset deletes what it wrote) or it sees the new epoch and writes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use crmsync_core::report::CycleReport;
use crmsync_core::{Error, ErrorKind, Kind, Link, LinkState, RepState, ResetScope, Result, Side, SyncKey};

/// Bytes of link data per PostgreSQL statement. sqlx 0.9.0 does not set `TCP_NODELAY` (sqlx
/// issue #4335, fixed after 0.9.0), and a statement larger than its 8 KiB write buffer waits
/// ~40 ms for a delayed ACK. Statements under this budget do not (measured: 200 links in one
/// statement 50 ms, in ~6 KB statements 5 ms; see docs.md).
pub(crate) const PG_STATEMENT_BYTES: usize = 6_000;

/// Split `links` into runs whose encoded size stays under [`PG_STATEMENT_BYTES`] (at least one
/// link per run).
pub(crate) fn byte_chunks<'a, 'l>(links: &'a [&'l Link], sizes: &[usize]) -> Vec<&'a [&'l Link]> {
    let mut out = vec![];
    let (mut start, mut bytes) = (0, 0);
    for (i, size) in sizes.iter().enumerate() {
        if i > start && bytes + size > PG_STATEMENT_BYTES {
            out.push(&links[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < links.len() {
        out.push(&links[start..]);
    }
    out
}

/// Largest number of rows one multi-row `INSERT` carries (keeps the bind count far below
/// SQLite's and PostgreSQL's limits).
pub(crate) const INSERT_CHUNK: usize = 500;

/// A timestamp as stored in text columns: RFC 3339 UTC with nanoseconds (fixed width).
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A timestamp as stored in compared columns (schedule and leases): nanoseconds since 1970.
pub(crate) fn ns(t: DateTime<Utc>) -> Result<i64> {
    t.timestamp_nanos_opt()
        .ok_or_else(|| Error::invalid_config(format!("time {t} is outside the range the store can schedule")))
}

pub(crate) fn lease_end(now: DateTime<Utc>, lease: std::time::Duration) -> Result<i64> {
    ns(crmsync_core::port::lease_end(now, lease)?)
}

/// The holder of a lease, from its columns.
pub(crate) fn holder(worker: Option<String>, until_ns: Option<i64>) -> crmsync_core::LeaseHolder {
    crmsync_core::LeaseHolder {
        holder: worker.unwrap_or_default(),
        until: DateTime::from_timestamp_nanos(until_ns.unwrap_or_default()),
    }
}

/// Any driver error: the store failed. Lock contention, timeouts and I/O may pass on retry.
pub(crate) fn db(e: sqlx::Error) -> Error {
    let temporary = match &e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => {
            // PostgreSQL serialization failure / deadlock; SQLite busy / locked.
            matches!(d.code().as_deref(), Some("40001" | "40P01" | "5" | "6" | "517" | "261"))
        }
        _ => false,
    };
    let err = Error::store(e.to_string()).with_source(e);
    if temporary { err.temporary(None) } else { err }
}

fn corrupt(column: &str, value: &str) -> Error {
    Error::store(format!("corrupt value {value:?} in column {column}"))
}

pub(crate) fn parse_ts(column: &str, s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| corrupt(column, s))
}

pub(crate) fn parse_opt_ts(column: &str, s: Option<String>) -> Result<Option<DateTime<Utc>>> {
    s.map(|s| parse_ts(column, &s)).transpose()
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(column: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::store(format!("corrupt JSON in column {column}: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::unexpected(format!("cannot serialize: {e}")))
}

pub(crate) fn parse_state(s: &str) -> Result<RepState> {
    RepState::parse(s).ok_or_else(|| corrupt("reps.state", s))
}

pub(crate) fn parse_side(s: &str) -> Result<Side> {
    Side::parse(s).ok_or_else(|| corrupt("item_errors.side", s))
}

pub(crate) fn link_state_str(s: LinkState) -> &'static str {
    match s {
        LinkState::Linked => "linked",
        LinkState::Suppressed => "suppressed",
        LinkState::Creating => "creating",
    }
}

pub(crate) fn parse_link_state(s: &str) -> Result<LinkState> {
    match s {
        "linked" => Ok(LinkState::Linked),
        "suppressed" => Ok(LinkState::Suppressed),
        "creating" => Ok(LinkState::Creating),
        _ => Err(corrupt("links.state", s)),
    }
}

pub(crate) fn scope_str(s: ResetScope) -> &'static str {
    match s {
        ResetScope::Contacts => "contacts",
        ResetScope::Events => "events",
        ResetScope::All => "all",
    }
}

pub(crate) fn parse_scope(s: &str) -> Result<ResetScope> {
    match s {
        "contacts" => Ok(ResetScope::Contacts),
        "events" => Ok(ResetScope::Events),
        "all" => Ok(ResetScope::All),
        _ => Err(corrupt("resets.scope", s)),
    }
}

pub(crate) fn conflict_epoch(rep: &str, epoch: u64, current: u64) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("rep {rep} was reset while this cycle ran (epoch {epoch}, now {current}); nothing written"),
    )
}

/// Last upsert per key wins, as applying them one after the other would do (one multi-row
/// `INSERT … ON CONFLICT DO UPDATE` may not touch a row twice).
pub(crate) fn dedup_links(links: &[Link]) -> Vec<&Link> {
    let mut last: BTreeMap<&SyncKey, usize> = BTreeMap::new();
    for (i, l) in links.iter().enumerate() {
        last.insert(&l.key, i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &links[i]).collect()
}

/// Sum of a counter over both kinds of a report.
pub(crate) fn both(r: &CycleReport, f: impl Fn(&crmsync_core::KindReport) -> u64) -> i64 {
    (f(&r.contacts) + f(&r.events)) as i64
}

pub(crate) fn kind_of(kind: Kind) -> &'static str {
    kind.as_str()
}

const LINK_UPSERT_TAIL: &str = " ON CONFLICT (rep, kind, sync_key) DO UPDATE SET provider_id = excluded.provider_id, \
     crm_id = excluded.crm_id, provider_version = excluded.provider_version, crm_version = excluded.crm_version, \
     hash = excluded.hash, snapshot = excluded.snapshot, state = excluded.state, pending = excluded.pending, \
     updated_at = excluded.updated_at";

/// SQLite: multi-row `INSERT … VALUES … ON CONFLICT DO UPDATE`, [`INSERT_CHUNK`] rows at a time.
pub(crate) async fn upsert_links_values(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    rep: &str,
    kind: &str,
    links: &[&Link],
    now: &str,
) -> Result<()> {
    for chunk in links.chunks(INSERT_CHUNK) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO links (rep, kind, sync_key, provider_id, crm_id, provider_version, \
             crm_version, hash, snapshot, state, pending, updated_at) ",
        );
        let mut rows = Vec::with_capacity(chunk.len());
        for l in chunk {
            let pending = l.pending.as_ref().map(to_json).transpose()?;
            rows.push((l, to_json(&l.snapshot)?, pending));
        }
        qb.push_values(rows, |mut b, (l, snapshot, pending)| {
            b.push_bind(rep.to_owned())
                .push_bind(kind.to_owned())
                .push_bind(l.key.0.clone())
                .push_bind(l.provider_id.clone())
                .push_bind(l.crm_id.clone())
                .push_bind(l.provider_version.clone())
                .push_bind(l.crm_version.clone())
                .push_bind(l.hash.clone())
                .push_bind(snapshot)
                .push_bind(link_state_str(l.state))
                .push_bind(pending)
                .push_bind(now.to_owned());
        });
        qb.push(LINK_UPSERT_TAIL);
        qb.build().execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

/// PostgreSQL: `INSERT … SELECT FROM UNNEST(arrays) … ON CONFLICT DO UPDATE` (12 parameters
/// whatever the number of rows; the same prepared statement every time), in statements of at
/// most [`PG_STATEMENT_BYTES`].
pub(crate) async fn upsert_links_unnest(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rep: &str,
    kind: &str,
    links: &[&Link],
    now: &str,
) -> Result<()> {
    let sizes: Vec<usize> = links
        .iter()
        .map(|l| {
            // Array elements carry a 4-byte length each; JSON adds quotes and escapes.
            let fields = l.key.0.len() + l.provider_id.len() + l.crm_id.len() + l.provider_version.len();
            let more = l.crm_version.len() + l.hash.len() + 16;
            let snapshot: usize = l.snapshot.0.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
            let pending: usize = l
                .pending
                .as_ref()
                .map_or(0, |p| p.snapshot.0.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>() + 40);
            fields + more + snapshot + pending + 48
        })
        .collect();
    for chunk in byte_chunks(links, &sizes) {
        upsert_unnest_chunk(tx, rep, kind, chunk, now).await?;
    }
    Ok(())
}

async fn upsert_unnest_chunk(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rep: &str,
    kind: &str,
    links: &[&Link],
    now: &str,
) -> Result<()> {
    let n = links.len();
    let (mut keys, mut pids, mut cids, mut pvs, mut cvs, mut hashes, mut snaps, mut states, mut pendings) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<Option<String>>::with_capacity(n),
    );
    for l in links {
        keys.push(l.key.0.clone());
        pids.push(l.provider_id.clone());
        cids.push(l.crm_id.clone());
        pvs.push(l.provider_version.clone());
        cvs.push(l.crm_version.clone());
        hashes.push(l.hash.clone());
        snaps.push(to_json(&l.snapshot)?);
        states.push(link_state_str(l.state).to_owned());
        pendings.push(l.pending.as_ref().map(to_json).transpose()?);
    }
    let sql = format!(
        "INSERT INTO links (rep, kind, sync_key, provider_id, crm_id, provider_version, crm_version, hash, \
         snapshot, state, pending, updated_at) \
         SELECT $1::text, $2::text, u.*, $12::text FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], \
         $7::text[], $8::text[], $9::text[], $10::text[], $11::text[]) AS u{LINK_UPSERT_TAIL}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(rep)
        .bind(kind)
        .bind(keys)
        .bind(pids)
        .bind(cids)
        .bind(pvs)
        .bind(cvs)
        .bind(hashes)
        .bind(snaps)
        .bind(states)
        .bind(pendings)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Instantiate the operations for one back end.
macro_rules! ops {
    ($module:ident, $db:ty, begin = $begin:expr, lock = $lock:literal, upsert = $upsert:path) => {
        pub(crate) mod $module {
            use std::collections::BTreeMap;

            use chrono::{DateTime, Utc};
            use crmsync_core::report::CycleReport;
            use crmsync_core::port::{HISTORY_KEPT, storable_text, undo_refusal};
            use crmsync_core::{
                Actor, Cursors, Error, ErrorKind, HeldDelete, ItemError, Kind, Link, LinkBatch, Refusal, RepState,
                RepStatus, ResetRecord, ResetUndo, Result, SyncKey, Verdict, Verification,
            };
            use secrecy::{ExposeSecret, SecretString};
            use sqlx::Row;

            use crate::ops::*;

            pub(crate) type Db = $db;
            pub(crate) type Pool = sqlx::Pool<Db>;
            type Tx = sqlx::Transaction<'static, Db>;
            type DbRow = <Db as sqlx::Database>::Row;

            const BEGIN: Option<&'static str> = $begin;

            /// Open a write transaction.
            pub(crate) async fn begin(pool: &Pool) -> Result<Tx> {
                match BEGIN {
                    Some(stmt) => pool.begin_with(stmt).await.map_err(db),
                    None => pool.begin().await.map_err(db),
                }
            }

            async fn ensure_rep(tx: &mut Tx, rep: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO reps (rep, state, epoch, created_at) VALUES ($1, 'ok', 0, $2) \
                     ON CONFLICT (rep) DO NOTHING",
                )
                .bind(rep)
                .bind(ts(Utc::now()))
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                Ok(())
            }

            /// Create the rep's row if needed and lock it; returns the current epoch.
            async fn lock_rep(tx: &mut Tx, rep: &str) -> Result<u64> {
                ensure_rep(tx, rep).await?;
                let epoch: i64 = sqlx::query_scalar("UPDATE reps SET epoch = epoch WHERE rep = $1 RETURNING epoch")
                    .bind(rep)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db)?;
                Ok(epoch as u64)
            }

            async fn check_epoch(tx: &mut Tx, rep: &str, epoch: u64) -> Result<()> {
                let current = lock_rep(tx, rep).await?;
                if current != epoch {
                    return Err(conflict_epoch(rep, epoch, current));
                }
                Ok(())
            }

            const STATUS_COLUMNS: &str =
                "SELECT rep, state, epoch, last_success, last_report, last_reset, last_error FROM reps";

            fn status_row(row: &DbRow) -> Result<RepStatus> {
                let state: String = row.try_get("state").map_err(db)?;
                let epoch: i64 = row.try_get("epoch").map_err(db)?;
                let report: Option<String> = row.try_get("last_report").map_err(db)?;
                let reset: Option<String> = row.try_get("last_reset").map_err(db)?;
                Ok(RepStatus {
                    rep: row.try_get("rep").map_err(db)?,
                    state: parse_state(&state)?,
                    epoch: epoch as u64,
                    last_success: parse_opt_ts("reps.last_success", row.try_get("last_success").map_err(db)?)?,
                    last_report: report.map(|s| parse_json("reps.last_report", &s)).transpose()?,
                    last_reset: reset.map(|s| parse_json("reps.last_reset", &s)).transpose()?,
                    last_error: row.try_get("last_error").map_err(db)?,
                })
            }

            async fn read_status(pool: &Pool, rep: &str) -> Result<Option<RepStatus>> {
                let row = sqlx::query(sqlx::AssertSqlSafe(format!("{STATUS_COLUMNS} WHERE rep = $1")))
                    .bind(rep)
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
                row.as_ref().map(status_row).transpose()
            }

            /// Make sure the rep has a row (a write only the first time).
            async fn touch(pool: &Pool, rep: &str) -> Result<()> {
                let mut tx = begin(pool).await?;
                ensure_rep(&mut tx, rep).await?;
                tx.commit().await.map_err(db)
            }

            pub(crate) async fn status(pool: &Pool, rep: &str) -> Result<RepStatus> {
                if let Some(s) = read_status(pool, rep).await? {
                    return Ok(s);
                }
                touch(pool, rep).await?;
                read_status(pool, rep).await?.ok_or_else(|| Error::store(format!("rep {rep} vanished")))
            }

            pub(crate) async fn statuses(pool: &Pool) -> Result<Vec<RepStatus>> {
                let rows = sqlx::query(STATUS_COLUMNS).fetch_all(pool).await.map_err(db)?;
                let mut out = rows.iter().map(status_row).collect::<Result<Vec<_>>>()?;
                out.sort_by(|a, b| a.rep.cmp(&b.rep));
                Ok(out)
            }

            pub(crate) async fn set_state(
                pool: &Pool,
                rep: &str,
                epoch: u64,
                state: RepState,
                error: Option<String>,
                report: Option<&CycleReport>,
            ) -> Result<()> {
                let mut tx = begin(pool).await?;
                check_epoch(&mut tx, rep, epoch).await?;
                sqlx::query("UPDATE reps SET state = $2, last_error = $3 WHERE rep = $1")
                    .bind(rep)
                    .bind(state.as_str())
                    .bind(error.map(|e| storable_text(&e).into_owned()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                if let Some(r) = report {
                    let json = to_json(r)?;
                    if r.error.is_none() {
                        sqlx::query("UPDATE reps SET last_report = $2, last_success = $3 WHERE rep = $1")
                            .bind(rep)
                            .bind(&json)
                            .bind(r.finished.map(ts))
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                    } else {
                        sqlx::query("UPDATE reps SET last_report = $2 WHERE rep = $1")
                            .bind(rep)
                            .bind(&json)
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                    }
                    let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs WHERE rep = $1")
                        .bind(rep)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db)?;
                    sqlx::query(
                        "INSERT INTO runs (id, rep, seq, epoch, state, started, finished, error, \
                         created_in_crm, created_in_provider, updated_in_crm, updated_in_provider, \
                         deleted_in_crm, deleted_in_provider, linked, unlinked, conflicts, errors, \
                         requests_crm, requests_provider, report, recorded_at) VALUES \
                         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                         $19, $20, $21, $22)",
                    )
                    .bind(uuid::Uuid::new_v4().to_string())
                    .bind(rep)
                    .bind(seq)
                    .bind(epoch as i64)
                    .bind(r.state.as_str())
                    .bind(r.started.map(ts))
                    .bind(r.finished.map(ts))
                    .bind(r.error.as_deref().map(|e| storable_text(e).into_owned()))
                    .bind(both(r, |k| k.created_in_crm))
                    .bind(both(r, |k| k.created_in_provider))
                    .bind(both(r, |k| k.updated_in_crm))
                    .bind(both(r, |k| k.updated_in_provider))
                    .bind(both(r, |k| k.deleted_in_crm))
                    .bind(both(r, |k| k.deleted_in_provider))
                    .bind(both(r, |k| k.linked))
                    .bind(both(r, |k| k.unlinked))
                    .bind(both(r, |k| k.conflicts))
                    .bind(both(r, |k| k.errors))
                    .bind(r.requests.crm as i64)
                    .bind(r.requests.provider as i64)
                    .bind(&json)
                    .bind(ts(Utc::now()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    sqlx::query("DELETE FROM runs WHERE rep = $1 AND seq <= $2")
                        .bind(rep)
                        .bind(seq - HISTORY_KEPT as i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)
            }

            pub(crate) async fn history(pool: &Pool, rep: &str, n: usize) -> Result<Vec<CycleReport>> {
                let rows: Vec<String> =
                    sqlx::query_scalar("SELECT report FROM runs WHERE rep = $1 ORDER BY seq DESC LIMIT $2")
                        .bind(rep)
                        .bind(i64::try_from(n).unwrap_or(i64::MAX))
                        .fetch_all(pool)
                        .await
                        .map_err(db)?;
                rows.iter().map(|s| parse_json("runs.report", s)).collect()
            }

            pub(crate) async fn refuse(pool: &Pool, r: &Refusal) -> Result<()> {
                let text = |s: &str| storable_text(s).into_owned();
                sqlx::query(
                    "INSERT INTO refusals (id, at, at_ns, admin_id, admin_name, action, rep, scope, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(ts(r.at))
                .bind(ns(r.at)?)
                .bind(text(&r.admin_id))
                .bind(text(&r.admin_name))
                .bind(text(&r.action))
                .bind(r.rep.as_deref().map(text))
                .bind(r.scope.map(scope_str))
                .bind(text(&r.reason))
                .execute(pool)
                .await
                .map_err(db)?;
                Ok(())
            }

            pub(crate) async fn refusals(pool: &Pool) -> Result<Vec<Refusal>> {
                let rows = sqlx::query(
                    "SELECT at, admin_id, admin_name, action, rep, scope, reason FROM refusals ORDER BY at_ns, id",
                )
                .fetch_all(pool)
                .await
                .map_err(db)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let at: String = row.try_get("at").map_err(db)?;
                    let scope: Option<String> = row.try_get("scope").map_err(db)?;
                    out.push(Refusal {
                        at: parse_ts("refusals.at", &at)?,
                        admin_id: row.try_get("admin_id").map_err(db)?,
                        admin_name: row.try_get("admin_name").map_err(db)?,
                        action: row.try_get("action").map_err(db)?,
                        rep: row.try_get("rep").map_err(db)?,
                        scope: scope.as_deref().map(parse_scope).transpose()?,
                        reason: row.try_get("reason").map_err(db)?,
                    });
                }
                Ok(out)
            }

            pub(crate) async fn runs(pool: &Pool, rep: &str) -> Result<Vec<CycleReport>> {
                let rows: Vec<String> = sqlx::query_scalar("SELECT report FROM runs WHERE rep = $1 ORDER BY seq")
                    .bind(rep)
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
                rows.iter().map(|s| parse_json("runs.report", s)).collect()
            }

            /// The rows of `sql` (which takes the rep as `$1` and the kind as `$2`).
            async fn kind_rows<'c, E: sqlx::Executor<'c, Database = Db>>(
                ex: E,
                sql: &'static str,
                rep: &str,
                kind: Kind,
            ) -> Result<Vec<<Db as sqlx::Database>::Row>> {
                sqlx::query(sql).bind(rep).bind(kind_of(kind)).fetch_all(ex).await.map_err(db)
            }

            pub(crate) async fn links(pool: &Pool, rep: &str, kind: Kind) -> Result<Vec<Link>> {
                links_in(pool, rep, kind).await
            }

            async fn links_in<'c, E: sqlx::Executor<'c, Database = Db>>(ex: E, rep: &str, kind: Kind) -> Result<Vec<Link>> {
                let rows = kind_rows(ex, "SELECT sync_key, provider_id, crm_id, provider_version, crm_version, hash, snapshot, state, pending \
                     FROM links WHERE rep = $1 AND kind = $2", rep, kind).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let snapshot: String = row.try_get("snapshot").map_err(db)?;
                    let state: String = row.try_get("state").map_err(db)?;
                    let pending: Option<String> = row.try_get("pending").map_err(db)?;
                    out.push(Link {
                        kind,
                        key: SyncKey(row.try_get("sync_key").map_err(db)?),
                        provider_id: row.try_get("provider_id").map_err(db)?,
                        crm_id: row.try_get("crm_id").map_err(db)?,
                        provider_version: row.try_get("provider_version").map_err(db)?,
                        crm_version: row.try_get("crm_version").map_err(db)?,
                        hash: row.try_get("hash").map_err(db)?,
                        snapshot: parse_json("links.snapshot", &snapshot)?,
                        state: parse_link_state(&state)?,
                        pending: pending.map(|p| parse_json("links.pending", &p)).transpose()?,
                    });
                }
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            }

            pub(crate) async fn cursors(pool: &Pool, rep: &str, kind: Kind) -> Result<Cursors> {
                cursors_in(pool, rep, kind).await
            }

            async fn cursors_in<'c, E: sqlx::Executor<'c, Database = Db>>(ex: E, rep: &str, kind: Kind) -> Result<Cursors> {
                let row = sqlx::query("SELECT provider_cursor, crm_cursor FROM cursors WHERE rep = $1 AND kind = $2")
                    .bind(rep)
                    .bind(kind_of(kind))
                    .fetch_optional(ex)
                    .await
                    .map_err(db)?;
                match row {
                    None => Ok(Cursors::default()),
                    Some(row) => Ok(Cursors {
                        provider: row.try_get("provider_cursor").map_err(db)?,
                        crm: row.try_get("crm_cursor").map_err(db)?,
                    }),
                }
            }

            pub(crate) async fn item_errors(pool: &Pool, rep: &str, kind: Kind) -> Result<Vec<ItemError>> {
                item_errors_in(pool, rep, kind).await
            }

            async fn item_errors_in<'c, E: sqlx::Executor<'c, Database = Db>>(
                ex: E,
                rep: &str,
                kind: Kind,
            ) -> Result<Vec<ItemError>> {
                let rows = kind_rows(ex, "SELECT side, item_id, reason, attempts, first_seen, last_seen FROM item_errors \
                     WHERE rep = $1 AND kind = $2", rep, kind).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let side: String = row.try_get("side").map_err(db)?;
                    let attempts: i64 = row.try_get("attempts").map_err(db)?;
                    let first: String = row.try_get("first_seen").map_err(db)?;
                    let last: String = row.try_get("last_seen").map_err(db)?;
                    out.push(ItemError {
                        kind,
                        side: parse_side(&side)?,
                        id: row.try_get("item_id").map_err(db)?,
                        reason: row.try_get("reason").map_err(db)?,
                        attempts: u32::try_from(attempts).map_err(|_| Error::store("corrupt attempts"))?,
                        first_seen: parse_ts("item_errors.first_seen", &first)?,
                        last_seen: parse_ts("item_errors.last_seen", &last)?,
                    });
                }
                out.sort_by(|a, b| (a.side, &a.id).cmp(&(b.side, &b.id)));
                Ok(out)
            }

            pub(crate) async fn commit(pool: &Pool, rep: &str, epoch: u64, kind: Kind, batch: &LinkBatch) -> Result<()> {
                let batch = &*batch.storable();
                let k = kind_of(kind);
                let mut tx = begin(pool).await?;
                check_epoch(&mut tx, rep, epoch).await?;
                for key in &batch.remove {
                    sqlx::query("DELETE FROM links WHERE rep = $1 AND kind = $2 AND sync_key = $3")
                        .bind(rep)
                        .bind(k)
                        .bind(key.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                let now = ts(Utc::now());
                let upserts = dedup_links(&batch.upsert);
                $upsert(&mut tx, rep, k, &upserts, &now).await?;
                for (side, id) in &batch.clear_errors {
                    sqlx::query("DELETE FROM item_errors WHERE rep = $1 AND kind = $2 AND side = $3 AND item_id = $4")
                        .bind(rep)
                        .bind(k)
                        .bind(side.as_str())
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                for e in &batch.errors {
                    put_item_error(&mut tx, rep, k, e, "item_errors.attempts + 1").await?;
                }
                if let Some(c) = &batch.cursors {
                    put_cursors(&mut tx, rep, k, c, &now).await?;
                }
                for h in &batch.hold {
                    put_held(&mut tx, rep, h).await?;
                }
                for key in &batch.release {
                    sqlx::query("DELETE FROM held_deletes WHERE rep = $1 AND kind = $2 AND sync_key = $3")
                        .bind(rep)
                        .bind(k)
                        .bind(key.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)
            }

            /// Record an item error; when one is there, `attempts` becomes the expression given
            /// (counted up by commits, kept as saved by an undo).
            async fn put_item_error(tx: &mut Tx, rep: &str, k: &str, e: &ItemError, attempts: &str) -> Result<()> {
                let sql = format!(
                    "INSERT INTO item_errors (rep, kind, side, item_id, reason, attempts, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (rep, kind, side, item_id) DO UPDATE \
                     SET reason = excluded.reason, attempts = {attempts}, last_seen = excluded.last_seen"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(rep)
                    .bind(k)
                    .bind(e.side.as_str())
                    .bind(&e.id)
                    .bind(&e.reason)
                    .bind(i64::from(e.attempts))
                    .bind(ts(e.first_seen))
                    .bind(ts(e.last_seen))
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                Ok(())
            }

            async fn put_cursors(tx: &mut Tx, rep: &str, k: &str, c: &Cursors, now: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO cursors (rep, kind, provider_cursor, crm_cursor, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (rep, kind) DO UPDATE SET \
                     provider_cursor = excluded.provider_cursor, crm_cursor = excluded.crm_cursor, \
                     updated_at = excluded.updated_at",
                )
                .bind(rep)
                .bind(k)
                .bind(c.provider.clone())
                .bind(c.crm.clone())
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                Ok(())
            }

            async fn put_held(tx: &mut Tx, rep: &str, h: &HeldDelete) -> Result<()> {
                sqlx::query(
                    "INSERT INTO held_deletes (rep, kind, sync_key, side, item_id, label, since, verdict) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (rep, kind, sync_key) DO UPDATE SET \
                     side = excluded.side, item_id = excluded.item_id, label = excluded.label, \
                     since = excluded.since, verdict = excluded.verdict",
                )
                .bind(rep)
                .bind(kind_of(h.kind))
                .bind(h.key.as_str())
                .bind(h.side.as_str())
                .bind(&h.id)
                .bind(&h.label)
                .bind(ts(h.since))
                .bind(h.verdict.as_str())
                .execute(&mut **tx)
                .await
                .map_err(db)?;
                Ok(())
            }

            pub(crate) async fn held(pool: &Pool, rep: &str, kind: Kind) -> Result<Vec<HeldDelete>> {
                held_in(pool, rep, kind).await
            }

            async fn held_in<'c, E: sqlx::Executor<'c, Database = Db>>(ex: E, rep: &str, kind: Kind) -> Result<Vec<HeldDelete>> {
                let rows = kind_rows(ex, "SELECT sync_key, side, item_id, label, since, verdict FROM held_deletes \
                     WHERE rep = $1 AND kind = $2", rep, kind).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let side: String = row.try_get("side").map_err(db)?;
                    let since: String = row.try_get("since").map_err(db)?;
                    let verdict: String = row.try_get("verdict").map_err(db)?;
                    out.push(HeldDelete {
                        kind,
                        key: SyncKey(row.try_get("sync_key").map_err(db)?),
                        side: parse_side(&side)?,
                        id: row.try_get("item_id").map_err(db)?,
                        label: row.try_get("label").map_err(db)?,
                        since: parse_ts("held_deletes.since", &since)?,
                        verdict: Verdict::parse(&verdict)
                            .ok_or_else(|| Error::store(format!("corrupt verdict {verdict:?} in held_deletes")))?,
                    });
                }
                out.sort_by(|a, b| (a.since, &a.key).cmp(&(b.since, &b.key)));
                Ok(out)
            }

            pub(crate) async fn judge_held(pool: &Pool, rep: &str, verdict: Verdict) -> Result<u64> {
                let mut tx = begin(pool).await?;
                lock_rep(&mut tx, rep).await?;
                let kinds: Vec<String> =
                    sqlx::query_scalar("SELECT DISTINCT kind FROM held_deletes WHERE rep = $1 AND verdict = 'held'")
                        .bind(rep)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db)?;
                let n = sqlx::query("UPDATE held_deletes SET verdict = $2 WHERE rep = $1 AND verdict = 'held'")
                    .bind(rep)
                    .bind(verdict.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?
                    .rows_affected();
                for k in &kinds {
                    sqlx::query("DELETE FROM cursors WHERE rep = $1 AND kind = $2")
                        .bind(rep)
                        .bind(k)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)?;
                Ok(n)
            }

            /// The rep's last reset as its status holds it (the row must be locked).
            async fn last_reset(tx: &mut Tx, rep: &str) -> Result<Option<ResetRecord>> {
                let json: Option<String> = sqlx::query_scalar("SELECT last_reset FROM reps WHERE rep = $1")
                    .bind(rep)
                    .fetch_one(&mut **tx)
                    .await
                    .map_err(db)?;
                json.map(|s| parse_json("reps.last_reset", &s)).transpose()
            }

            /// Write the reset record `r` back: its audit row and, when it is the rep's last
            /// reset, the status copy.
            async fn put_reset(tx: &mut Tx, r: &ResetRecord) -> Result<()> {
                sqlx::query("UPDATE resets SET undoable = $3, verification = $4, undone = $5 WHERE rep = $1 AND epoch = $2")
                    .bind(&r.rep)
                    .bind(r.epoch as i64)
                    .bind(i64::from(r.undoable))
                    .bind(r.verification.as_ref().map(to_json).transpose()?)
                    .bind(r.undone.as_ref().map(to_json).transpose()?)
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                sqlx::query("UPDATE reps SET last_reset = $2 WHERE rep = $1")
                    .bind(&r.rep)
                    .bind(to_json(r)?)
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                Ok(())
            }

            pub(crate) async fn seal_reset(pool: &Pool, rep: &str, epoch: u64) -> Result<()> {
                let mut tx = begin(pool).await?;
                lock_rep(&mut tx, rep).await?;
                if let Some(mut r) = last_reset(&mut tx, rep).await?.filter(|r| r.epoch == epoch && r.undoable) {
                    r.undoable = false;
                    put_reset(&mut tx, &r).await?;
                    sqlx::query("DELETE FROM reset_undo WHERE rep = $1").bind(rep).execute(&mut *tx).await.map_err(db)?;
                }
                tx.commit().await.map_err(db)
            }

            pub(crate) async fn verify_reset(pool: &Pool, rep: &str, epoch: u64, v: &Verification) -> Result<()> {
                let mut tx = begin(pool).await?;
                lock_rep(&mut tx, rep).await?;
                if let Some(mut r) = last_reset(&mut tx, rep).await?.filter(|r| r.epoch == epoch && r.verification.is_none()) {
                    r.verification = Some(v.clone());
                    put_reset(&mut tx, &r).await?;
                }
                tx.commit().await.map_err(db)
            }

            pub(crate) async fn undo_reset(pool: &Pool, rep: &str, by: &Actor) -> Result<ResetRecord> {
                let mut tx = begin(pool).await?;
                lock_rep(&mut tx, rep).await?;
                let last = last_reset(&mut tx, rep).await?;
                let mut rec = undo_refusal(rep, last.as_ref())?.clone();
                let saved: Option<String> = sqlx::query_scalar("SELECT saved FROM reset_undo WHERE rep = $1")
                    .bind(rep)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                let saved = saved.ok_or_else(|| Error::store(format!("rep {rep}: the undo data is missing")))?;
                let undo: ResetUndo = parse_json("reset_undo.saved", &saved)?;
                let now = ts(Utc::now());
                for kind in Kind::ALL {
                    let k = kind_of(kind);
                    let links: Vec<&Link> = undo.links.iter().filter(|l| l.kind == kind).collect();
                    $upsert(&mut tx, rep, k, &links, &now).await?;
                }
                for (kind, c) in &undo.cursors {
                    put_cursors(&mut tx, rep, kind_of(*kind), c, &now).await?;
                }
                for e in &undo.item_errors {
                    put_item_error(&mut tx, rep, kind_of(e.kind), e, "excluded.attempts").await?;
                }
                for h in &undo.held {
                    put_held(&mut tx, rep, h).await?;
                }
                sqlx::query("DELETE FROM reset_undo WHERE rep = $1").bind(rep).execute(&mut *tx).await.map_err(db)?;
                rec.undoable = false;
                rec.undone = Some(by.clone());
                put_reset(&mut tx, &rec).await?;
                sqlx::query("UPDATE reps SET epoch = epoch + 1, state = $2 WHERE rep = $1")
                    .bind(rep)
                    .bind(undo.state.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(rec)
            }

            pub(crate) async fn reset(
                pool: &Pool,
                record: &ResetRecord,
                state: RepState,
                drop_grant: bool,
            ) -> Result<BTreeMap<String, u64>> {
                let rep = record.rep.as_str();
                let mut tx = begin(pool).await?;
                ensure_rep(&mut tx, rep).await?;
                let epoch: i64 = sqlx::query_scalar("UPDATE reps SET epoch = epoch + 1 WHERE rep = $1 RETURNING epoch")
                    .bind(rep)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
                let state_before: String = sqlx::query_scalar("SELECT state FROM reps WHERE rep = $1")
                    .bind(rep)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
                let mut undo = ResetUndo { state: parse_state(&state_before)?, ..Default::default() };
                for &kind in record.scope.kinds() {
                    let links = links_in(&mut *tx, rep, kind).await?;
                    undo.links.extend(links.into_iter().filter(|l| l.state != crmsync_core::LinkState::Suppressed));
                    let c = cursors_in(&mut *tx, rep, kind).await?;
                    if c != Cursors::default() {
                        undo.cursors.push((kind, c));
                    }
                    undo.item_errors.extend(item_errors_in(&mut *tx, rep, kind).await?);
                    undo.held.extend(held_in(&mut *tx, rep, kind).await?);
                    sqlx::query("DELETE FROM held_deletes WHERE rep = $1 AND kind = $2")
                        .bind(rep)
                        .bind(kind_of(kind))
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                sqlx::query(
                    "INSERT INTO reset_undo (rep, epoch, saved) VALUES ($1, $2, $3) ON CONFLICT (rep) DO UPDATE \
                     SET epoch = excluded.epoch, saved = excluded.saved",
                )
                .bind(rep)
                .bind(epoch)
                .bind(to_json(&undo)?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                sqlx::query("UPDATE resets SET undoable = 0 WHERE rep = $1")
                    .bind(rep)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                let mut removed = BTreeMap::new();
                for &kind in record.scope.kinds() {
                    let k = kind_of(kind);
                    let n = sqlx::query("DELETE FROM links WHERE rep = $1 AND kind = $2 AND state <> 'suppressed'")
                        .bind(rep)
                        .bind(k)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?
                        .rows_affected();
                    removed.insert(k.to_owned(), n);
                    for table in ["DELETE FROM cursors WHERE rep = $1 AND kind = $2", "DELETE FROM item_errors WHERE rep = $1 AND kind = $2"] {
                        sqlx::query(table).bind(rep).bind(k).execute(&mut *tx).await.map_err(db)?;
                    }
                }
                let rec = ResetRecord {
                    links_removed: removed.clone(),
                    epoch: epoch as u64,
                    undoable: true,
                    verification: None,
                    undone: None,
                    ..record.clone()
                };
                sqlx::query(
                    "INSERT INTO resets (rep, epoch, admin_id, admin_name, scope, at, links_removed, undoable) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
                )
                .bind(rep)
                .bind(epoch)
                .bind(&rec.admin_id)
                .bind(&rec.admin_name)
                .bind(scope_str(rec.scope))
                .bind(ts(rec.at))
                .bind(to_json(&rec.links_removed)?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                let sql = if drop_grant {
                    "UPDATE reps SET state = $2, last_reset = $3, grant_token = NULL WHERE rep = $1"
                } else {
                    "UPDATE reps SET state = $2, last_reset = $3 WHERE rep = $1"
                };
                sqlx::query(sql)
                    .bind(rep)
                    .bind(state.as_str())
                    .bind(to_json(&rec)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)?;
                Ok(removed)
            }

            pub(crate) async fn resets(pool: &Pool, rep: &str) -> Result<Vec<ResetRecord>> {
                let rows = sqlx::query(
                    "SELECT rep, epoch, admin_id, admin_name, scope, at, links_removed, undoable, verification, undone \
                     FROM resets WHERE rep = $1 ORDER BY epoch",
                )
                .bind(rep)
                .fetch_all(pool)
                .await
                .map_err(db)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let scope: String = row.try_get("scope").map_err(db)?;
                    let at: String = row.try_get("at").map_err(db)?;
                    let removed: String = row.try_get("links_removed").map_err(db)?;
                    let epoch: i64 = row.try_get("epoch").map_err(db)?;
                    let undoable: i64 = row.try_get("undoable").map_err(db)?;
                    let verification: Option<String> = row.try_get("verification").map_err(db)?;
                    let undone: Option<String> = row.try_get("undone").map_err(db)?;
                    out.push(ResetRecord {
                        rep: row.try_get("rep").map_err(db)?,
                        admin_id: row.try_get("admin_id").map_err(db)?,
                        admin_name: row.try_get("admin_name").map_err(db)?,
                        scope: parse_scope(&scope)?,
                        at: parse_ts("resets.at", &at)?,
                        links_removed: parse_json("resets.links_removed", &removed)?,
                        epoch: epoch as u64,
                        undoable: undoable != 0,
                        verification: verification.map(|v| parse_json("resets.verification", &v)).transpose()?,
                        undone: undone.map(|v| parse_json("resets.undone", &v)).transpose()?,
                    });
                }
                Ok(out)
            }

            pub(crate) async fn grant(pool: &Pool, rep: &str) -> Result<Option<SecretString>> {
                let row: Option<Option<String>> = sqlx::query_scalar("SELECT grant_token FROM reps WHERE rep = $1")
                    .bind(rep)
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
                match row {
                    Some(token) => Ok(token.map(SecretString::from)),
                    None => {
                        touch(pool, rep).await?;
                        Ok(None)
                    }
                }
            }

            pub(crate) async fn set_grant(pool: &Pool, rep: &str, grant: Option<&SecretString>) -> Result<()> {
                let mut tx = begin(pool).await?;
                lock_rep(&mut tx, rep).await?;
                sqlx::query("UPDATE reps SET grant_token = $2 WHERE rep = $1")
                    .bind(rep)
                    .bind(grant.map(|g| g.expose_secret().to_owned()))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(db)
            }

            /// Make the rep known to the scheduler, due at `due_ns` (an existing schedule is kept).
            async fn ensure_scheduled(tx: &mut Tx, rep: &str, due_ns: i64) -> Result<()> {
                ensure_rep(tx, rep).await?;
                sqlx::query("INSERT INTO schedule (rep, due_ns) VALUES ($1, $2) ON CONFLICT (rep) DO NOTHING")
                    .bind(rep)
                    .bind(due_ns)
                    .execute(&mut **tx)
                    .await
                    .map_err(db)?;
                Ok(())
            }

            pub(crate) async fn schedule(pool: &Pool, rep: &str, due: DateTime<Utc>) -> Result<()> {
                let due = ns(due)?;
                let mut tx = begin(pool).await?;
                ensure_scheduled(&mut tx, rep, due).await?;
                tx.commit().await.map_err(db)
            }

            pub(crate) async fn claim_due_reps(
                pool: &Pool,
                worker: &str,
                n: usize,
                lease: std::time::Duration,
                now: DateTime<Utc>,
            ) -> Result<Vec<String>> {
                let until = lease_end(now, lease)?;
                let now = ns(now)?;
                if n == 0 {
                    return Ok(vec![]);
                }
                let mut tx = begin(pool).await?;
                let mut reps: Vec<String> = sqlx::query_scalar(concat!(
                    "UPDATE schedule SET lease_worker = $1, lease_until_ns = $2, asked_ns = NULL WHERE rep IN (",
                    "SELECT rep FROM schedule WHERE due_ns <= $3 ",
                    "AND (lease_until_ns IS NULL OR lease_until_ns <= $3) ",
                    "ORDER BY due_ns, rep LIMIT $4",
                    $lock,
                    ") RETURNING rep"
                ))
                .bind(worker)
                .bind(until)
                .bind(now)
                .bind(i64::try_from(n).unwrap_or(i64::MAX))
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                reps.sort();
                Ok(reps)
            }

            pub(crate) async fn acquire_lease(
                pool: &Pool,
                holder_name: &str,
                rep: &str,
                lease: std::time::Duration,
                now: DateTime<Utc>,
            ) -> Result<crmsync_core::Acquire> {
                let until = lease_end(now, lease)?;
                let now = ns(now)?;
                let mut tx = begin(pool).await?;
                ensure_scheduled(&mut tx, rep, now).await?;
                // Taken when free, expired or already the holder's; no row: somebody else holds it.
                let taken = sqlx::query(
                    "UPDATE schedule SET lease_worker = $2, lease_until_ns = $3, asked_ns = NULL WHERE rep = $1 \
                     AND (lease_worker IS NULL OR lease_worker = $2 OR lease_until_ns IS NULL OR lease_until_ns <= $4)",
                );
                let taken = taken.bind(rep).bind(holder_name).bind(until).bind(now);
                let taken = taken.execute(&mut *tx).await.map_err(db)?.rows_affected();
                let outcome = if taken == 1 {
                    crmsync_core::Acquire::Acquired
                } else {
                    let (w, u): (Option<String>, Option<i64>) =
                        sqlx::query_as("SELECT lease_worker, lease_until_ns FROM schedule WHERE rep = $1")
                            .bind(rep)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db)?;
                    crmsync_core::Acquire::Busy(holder(w, u))
                };
                tx.commit().await.map_err(db)?;
                Ok(outcome)
            }

            pub(crate) async fn lease(
                pool: &Pool,
                rep: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<crmsync_core::LeaseHolder>> {
                let row: Option<(Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT lease_worker, lease_until_ns FROM schedule WHERE rep = $1 \
                     AND lease_worker IS NOT NULL AND lease_until_ns > $2",
                )
                .bind(rep)
                .bind(ns(now)?)
                .fetch_optional(pool)
                .await
                .map_err(db)?;
                Ok(row.map(|(w, u)| holder(w, u)))
            }

            pub(crate) async fn due(pool: &Pool, rep: &str) -> Result<Option<DateTime<Utc>>> {
                let due: Option<i64> = sqlx::query_scalar("SELECT due_ns FROM schedule WHERE rep = $1")
                    .bind(rep)
                    .fetch_optional(pool)
                    .await
                    .map_err(db)?;
                Ok(due.map(DateTime::from_timestamp_nanos))
            }

            pub(crate) async fn sync_now(pool: &Pool, rep: &str, now: DateTime<Utc>) -> Result<()> {
                let now = ns(now)?;
                let mut tx = begin(pool).await?;
                ensure_scheduled(&mut tx, rep, now).await?;
                sqlx::query(
                    "UPDATE schedule SET asked_ns = $2, due_ns = CASE WHEN due_ns < $2 THEN due_ns ELSE $2 END \
                     WHERE rep = $1",
                )
                .bind(rep)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)
            }

            pub(crate) async fn renew_lease(
                pool: &Pool,
                worker: &str,
                rep: &str,
                lease: std::time::Duration,
                now: DateTime<Utc>,
            ) -> Result<()> {
                let until = lease_end(now, lease)?;
                let n = sqlx::query(
                    "UPDATE schedule SET lease_until_ns = $3 WHERE rep = $1 AND lease_worker = $2 \
                     AND lease_until_ns > $4",
                )
                .bind(rep)
                .bind(worker)
                .bind(until)
                .bind(ns(now)?)
                .execute(pool)
                .await
                .map_err(db)?
                .rows_affected();
                if n == 0 {
                    return Err(Error::new(ErrorKind::Conflict, format!("worker {worker} no longer holds rep {rep}")));
                }
                Ok(())
            }

            pub(crate) async fn release(
                pool: &Pool,
                worker: &str,
                rep: &str,
                next_due: Option<DateTime<Utc>>,
            ) -> Result<()> {
                let n = sqlx::query(
                    "UPDATE schedule SET lease_worker = NULL, lease_until_ns = NULL, \
                     due_ns = COALESCE(asked_ns, $3, due_ns), asked_ns = NULL WHERE rep = $1 AND lease_worker = $2",
                )
                .bind(rep)
                .bind(worker)
                .bind(next_due.map(ns).transpose()?)
                .execute(pool)
                .await
                .map_err(db)?
                .rows_affected();
                if n == 0 {
                    return Err(Error::new(ErrorKind::Conflict, format!("worker {worker} does not hold rep {rep}")));
                }
                Ok(())
            }
        }
    };
}

ops!(sqlite, sqlx::Sqlite, begin = Some("BEGIN IMMEDIATE"), lock = "", upsert = upsert_links_values);
ops!(pg, sqlx::Postgres, begin = None, lock = " FOR UPDATE SKIP LOCKED", upsert = upsert_links_unnest);

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_core::{Canon, Kind};

    fn link(i: usize) -> Link {
        Link {
            kind: Kind::Contact,
            key: SyncKey(format!("k{i}")),
            provider_id: String::new(),
            crm_id: String::new(),
            provider_version: String::new(),
            crm_version: String::new(),
            hash: String::new(),
            snapshot: Canon::default(),
            state: LinkState::Linked,
            pending: None,
        }
    }

    #[test]
    fn byte_chunks_respect_the_budget_and_keep_order() {
        let links: Vec<Link> = (0..10).map(link).collect();
        let refs: Vec<&Link> = links.iter().collect();
        let sizes = [2_000, 2_000, 2_000, 9_000, 100, 100, 5_900, 1, 1, 1];
        let chunks = byte_chunks(&refs, &sizes);
        let lens: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(lens, vec![3, 1, 2, 4]);
        let flat: Vec<&str> = chunks.iter().flat_map(|c| c.iter().map(|l| l.key.as_str())).collect();
        assert_eq!(flat, (0..10).map(|i| format!("k{i}")).collect::<Vec<_>>());
        assert!(byte_chunks(&[], &[]).is_empty());
    }

    #[test]
    fn dedup_keeps_the_last_upsert_of_a_key_in_order() {
        let mut a = link(1);
        a.crm_id = "first".into();
        let b = link(2);
        let mut a2 = link(1);
        a2.crm_id = "second".into();
        let all = [a, b, a2];
        let kept: Vec<(&str, &str)> = dedup_links(&all).iter().map(|l| (l.key.as_str(), l.crm_id.as_str())).collect();
        assert_eq!(kept, vec![("k2", ""), ("k1", "second")]);
    }
}
