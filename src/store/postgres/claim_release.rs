//! An analysis commit's claims: checked and locked first, released last, in the commit's
//! transaction. The rows are locked in trace id order (as ingest locks them), their pending blocks
//! read under the lock, and what becomes of each row is decided here: a trace whose pending
//! blocks were all analysed is deleted by its row address, one that received blocks meanwhile is
//! reopened with those blocks only.
//!
//! Invariant: a commit writes only while it holds every one of its claims; otherwise it fails
//! with [`StoreError::ClaimLost`] and its transaction is rolled back.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;

use crate::store::{ClaimRelease, StoreError};

/// The claimed rows, locked: their claim token, pending blocks and row address.
const LOCK: &str = "SELECT trace_id, claim, block_ids, ctid::text FROM pending_traces \
     WHERE trace_id = ANY($1) ORDER BY trace_id FOR UPDATE";

/// Rows locked by this transaction, by address: no index is searched, and a locked row does not
/// move (its address is that of the version the lock returned).
const DELETE: &str = "DELETE FROM pending_traces WHERE ctid = ANY($1::text[]::tid[])";

/// Blocks arrived while the trace was analysed: it stays pending with those blocks only,
/// unclaimed, and waits a grace period again from now.
const REOPEN: &str = "UPDATE pending_traces p SET block_ids = u.blocks::bigint[], claim = NULL, \
     claimed_until = NULL, first_seen_unix_ns = $3 \
     FROM unnest($1::text[]::tid[], $2::text[]) AS u(row_address, blocks) \
     WHERE p.ctid = u.row_address";

/// A row as [`LOCK`] reads it: trace id, claim token, pending blocks, row address.
type LockedRow = (Vec<u8>, Option<i64>, Vec<i64>, String);

/// The claimed rows, locked, with what their release will do to them.
pub(super) struct Held {
    /// Row addresses of the traces whose pending blocks were all analysed.
    done: Vec<String>,
    /// Row addresses of the traces that received blocks meanwhile, with those blocks.
    reopened: Vec<(String, Vec<i64>)>,
}

/// Locks the claimed rows in trace id order and checks that every claim is still held.
pub(super) async fn lock(
    conn: &mut PgConnection,
    claims: &[ClaimRelease],
) -> Result<Held, StoreError> {
    let mut held = Held {
        done: Vec::with_capacity(claims.len()),
        reopened: Vec::new(),
    };
    if claims.is_empty() {
        return Ok(held);
    }
    let mut keys: Vec<Vec<u8>> = claims.iter().map(|c| c.trace_id.0.to_vec()).collect();
    keys.sort_unstable();
    let rows: Vec<LockedRow> = sqlx::query_as(LOCK)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
    let mut locked: HashMap<Vec<u8>, (Option<i64>, Vec<i64>, String)> = (rows.into_iter())
        .map(|(trace, claim, pending, address)| (trace, (claim, pending, address)))
        .collect();
    for release in claims {
        let Some((claim, pending, address)) = locked.remove(release.trace_id.0.as_slice()) else {
            return Err(StoreError::ClaimLost);
        };
        if claim != Some(release.claim) {
            return Err(StoreError::ClaimLost);
        }
        let analysed: HashSet<i64> = release.analysed_blocks.iter().copied().collect();
        let left: Vec<i64> = (pending.into_iter())
            .filter(|block| !analysed.contains(block))
            .collect();
        if left.is_empty() {
            held.done.push(address);
        } else {
            held.reopened.push((address, left));
        }
    }
    Ok(held)
}

/// Releases the locked claims: deletes the rows done, reopens the others.
pub(super) async fn release(
    conn: &mut PgConnection,
    held: Held,
    now_unix_ns: i64,
) -> Result<(), StoreError> {
    if !held.done.is_empty() {
        let deleted = sqlx::query(DELETE)
            .bind(&held.done)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if deleted != held.done.len() as u64 {
            // Only possible if a locked row moved; nothing is written, the traces are claimed
            // again.
            return Err(StoreError::ClaimLost);
        }
    }
    if !held.reopened.is_empty() {
        let (addresses, blocks): (Vec<String>, Vec<String>) = (held.reopened.into_iter())
            .map(|(address, blocks)| (address, array_text(&blocks)))
            .unzip();
        sqlx::query(REOPEN)
            .bind(addresses)
            .bind(blocks)
            .bind(now_unix_ns)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// `blocks` as an array literal, `{1,2,3}`: arrays of differing lengths cannot be bound as one
/// two-dimensional array.
fn array_text(blocks: &[i64]) -> String {
    let items: Vec<String> = blocks.iter().map(i64::to_string).collect();
    format!("{{{}}}", items.join(","))
}
