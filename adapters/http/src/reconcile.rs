//! Lost replies of non-idempotent creates: look up what landed, re-send only the rest.

use crmsync_core::{Error, Result};

use crate::client::is_reply_lost;

/// Create `len` items whose creates are not idempotent (Graph POSTs, People
/// `batchCreateContacts`) without duplicating any after a lost reply.
///
/// `send(indices)` creates the items at these indices (through a request sent non-idempotent)
/// and answers one result per index, in order. When its reply is lost ([`is_reply_lost`]),
/// `landed(indices)` looks those items up by sync key and answers, per index, the result for
/// the record when it is there (`Some`); only the others (`None`) are sent again. At most `max_lookups` rounds;
/// after that the lost reply is the error.
pub async fn create_reconciled<V, S, SF, L, LF>(
    len: usize,
    max_lookups: u32,
    mut send: S,
    mut landed: L,
) -> Result<Vec<Result<V>>>
where
    S: FnMut(Vec<usize>) -> SF,
    SF: Future<Output = Result<Vec<Result<V>>>>,
    L: FnMut(Vec<usize>) -> LF,
    LF: Future<Output = Result<Vec<Option<Result<V>>>>>,
{
    let mut results: Vec<Option<Result<V>>> = (0..len).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..len).collect();
    let mut lookups = 0;
    while !pending.is_empty() {
        match send(pending.clone()).await {
            Ok(answers) => {
                for (&i, r) in pending.iter().zip(answers) {
                    results[i] = Some(r);
                }
                break;
            }
            Err(e) if is_reply_lost(&e) && lookups < max_lookups => {
                lookups += 1;
                tracing::debug!(error = %e, count = pending.len(), "create reply lost; looking up what landed");
                let found = landed(pending.clone()).await?;
                let mut rest = vec![];
                for (i, f) in
                    pending.iter().copied().zip(found.into_iter().map(Some).chain(std::iter::repeat_with(|| None)))
                {
                    match f.flatten() {
                        Some(r) => results[i] = Some(r),
                        None => rest.push(i),
                    }
                }
                pending = rest;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::unexpected("create: no result for an item"))))
        .collect())
}
