//! Eviction of interned endpoints and resources that nothing refers to any more: the SQL both
//! backends share, and what an analysis commit does when an id it writes under was evicted.
//!
//! Retention deletes an endpoint (never [`OTHER_ENDPOINT`]) once no request, rollup or
//! regression row refers to it, and a resource once every request of it is gone, so the
//! analyzer's caps count live rows and a slot freed goes to a new endpoint or process.
//!
//! Why no request is ever written under a deleted id: analyzers cache ids, for longer than an
//! id may live, and an id may be evicted between its lookup and the commit that writes under it
//! (a new endpoint has no rows until that commit). So every commit checks, inside its
//! transaction, that the ids it writes under exist, and interns each missing one again by the
//! name the commit carries ([`InternedNames`]), writing under the new id. The check and an
//! eviction never interleave: on SQLite both run under the one write lock (`BEGIN IMMEDIATE`);
//! on PostgreSQL a commit holds an advisory lock shared and an eviction holds it exclusively,
//! and each reads only after taking it. An eviction therefore sees every row of the commits
//! before it, and a commit after it sees the deletion. Ids are never handed out twice
//! (AUTOINCREMENT, sequences), so an id that exists still names what the analyzer looked up.
//!
//! Invariant: deletes only rows nothing refers to, and rewrites only commits naming an id that
//! is gone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::portable::RowsAffected;
use super::{AnalysisCommit, OTHER_ENDPOINT, RetentionReport, RollupChange, StoreError, ns};
use crate::analysis::aggregate::Rollup;

#[cfg(doc)]
use super::InternedNames;

/// PostgreSQL's advisory lock every analysis commit holds shared and retention holds exclusively
/// while it evicts interned ids. In this application's keys ("BN" in the high bytes), apart from
/// the leader roles'.
pub(super) const EVICTION_LOCK_KEY: i64 = 0x424e_0000_0010;

/// Takes [`EVICTION_LOCK_KEY`] exclusively until the transaction ends.
pub(super) const LOCK_EVICTION: &str = "SELECT pg_advisory_xact_lock($1)";

/// Interns (service, endpoint), returning the id it has or gets.
pub(super) const INTERN_ENDPOINT: &str = "INSERT INTO endpoints (service, endpoint) VALUES ($1, $2) \
     ON CONFLICT (service, endpoint) DO UPDATE SET service = excluded.service RETURNING id";

/// Interns a resource by its canonical attributes, returning the id it has or gets (SQLite: its
/// index rows may be of any length).
pub(super) const INTERN_RESOURCE: &str = "INSERT INTO resources (service, attributes) VALUES ($1, $2) \
     ON CONFLICT (attributes) DO UPDATE SET service = excluded.service RETURNING id";

/// [`INTERN_RESOURCE`] on PostgreSQL, whose unique key is the attributes' MD5: a B-tree index row
/// there is at most 2,704 bytes, and the attributes of one process can be longer.
pub(super) const INTERN_RESOURCE_BY_HASH: &str = "INSERT INTO resources (service, attributes) \
     VALUES ($1, $2) ON CONFLICT ((md5(attributes))) DO UPDATE SET service = excluded.service \
     RETURNING id";

/// The versions of each service that hourly rollups hold (every request counts in an hourly
/// row): the key's leading columns give the pairs without reading the rows' sums.
pub(super) const SERVICE_VERSIONS: &str = "SELECT DISTINCT endpoints.service, versions.version \
     FROM (SELECT DISTINCT endpoint_id, version FROM hourly_rollups) AS versions \
     JOIN endpoints ON endpoints.id = versions.endpoint_id";

/// Endpoints with ids in ($1, $2], other than $3, that no row refers to. The tables are those that
/// keep an endpoint's id: requests, both rollup granularities (operations and findings go with
/// their rollup row), and regressions, which have no retention and keep their endpoint named.
/// Regressions have no index by endpoint (only their open ones do), and are few: their endpoint
/// ids are read once per statement rather than looked up per endpoint.
pub(super) const EVICT_ENDPOINTS: &str = "DELETE FROM endpoints WHERE id > $1 AND id <= $2 \
     AND endpoint <> $3 \
     AND NOT EXISTS (SELECT 1 FROM requests WHERE requests.endpoint_id = endpoints.id) \
     AND NOT EXISTS (SELECT 1 FROM rollups WHERE rollups.endpoint_id = endpoints.id) \
     AND NOT EXISTS (SELECT 1 FROM hourly_rollups WHERE hourly_rollups.endpoint_id = endpoints.id) \
     AND id NOT IN (SELECT endpoint_id FROM regressions) \
     RETURNING id";

/// The regression finder's marks of endpoints in ($1, $2] that are gone: an evicted endpoint
/// that comes back is a new one, checked afresh.
pub(super) const DELETE_GONE_CHECKS: &str = "DELETE FROM regression_checks \
     WHERE endpoint_id > $1 AND endpoint_id <= $2 \
     AND NOT EXISTS (SELECT 1 FROM endpoints WHERE endpoints.id = regression_checks.endpoint_id)";

/// The largest endpoint id: eviction walks the ids up to it in ranges.
pub(super) const LAST_ENDPOINT_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM endpoints";

/// The start of the oldest request stored (an index lookup).
pub(super) const OLDEST_REQUEST: &str = "SELECT MIN(start_unix_ns) FROM requests";

/// Up to $2 resources every request of which started before $1.
pub(super) const EVICT_RESOURCES: &str = "DELETE FROM resources WHERE id IN \
     (SELECT id FROM resources WHERE seen_until_unix_ns <= $1 ORDER BY id LIMIT $2)";

/// Counts a pass that evicted something, in the transaction that did, or removed rollups (and
/// with them, perhaps, a service's version).
pub(super) const BUMP_GENERATION: &str = "INSERT INTO meta (key, value) \
     VALUES ('eviction_generation', 1) \
     ON CONFLICT (key) DO UPDATE SET value = meta.value + 1";

/// See [`super::Store::eviction_generation`].
pub(super) const GENERATION: &str = "SELECT value FROM meta WHERE key = 'eviction_generation'";

/// How far a resource's `seen_until_unix_ns` moves at a time: to the end of the hour a request
/// started in, so that its row is written about once an hour instead of by every commit. It
/// delays the resource's eviction by an hour at most.
const SEEN_UNTIL_STEP_NS: u64 = 3_600_000_000_000;

/// Endpoint ids checked per eviction transaction: each costs an index lookup in four tables,
/// so a range takes milliseconds and the write lock is never held long.
pub(super) const ENDPOINT_IDS_PER_PASS: i64 = 1_000;

/// The `seen_until_unix_ns` a resource needs for a request that started at `start_unix_ns`.
fn seen_until(start_unix_ns: u64) -> i64 {
    ns((start_unix_ns / SEEN_UNTIL_STEP_NS + 1).saturating_mul(SEEN_UNTIL_STEP_NS))
}

/// Per resource of a commit's requests, in id order (the order PostgreSQL locks the rows in),
/// the `seen_until_unix_ns` they need.
fn resources_seen(commit: &AnalysisCommit) -> Vec<(i64, i64)> {
    let mut seen: BTreeMap<i64, i64> = BTreeMap::new();
    for request in &commit.requests {
        if request.resource_id != 0 {
            let until = seen_until(request.start_unix_ns);
            let at = seen.entry(request.resource_id).or_insert(until);
            *at = (*at).max(until);
        }
    }
    seen.into_iter().collect()
}

/// The interned ids a commit writes under, each once, in order.
struct WrittenIds {
    /// Of the request rows and the rollup rows.
    pub endpoints: Vec<i64>,
    /// Of the request rows; 0 (unknown) is not an id.
    pub resources: Vec<i64>,
}

impl WrittenIds {
    fn of(commit: &AnalysisCommit) -> Self {
        let endpoints: BTreeSet<i64> = (commit.requests.iter().map(|r| r.endpoint_id))
            .chain(commit.rollups.iter().map(|change| change.key.endpoint_id))
            .collect();
        let resources: BTreeSet<i64> = (commit.requests.iter().map(|r| r.resource_id))
            .filter(|id| *id != 0)
            .collect();
        Self {
            endpoints: endpoints.into_iter().collect(),
            resources: resources.into_iter().collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.resources.is_empty()
    }
}

/// What the evicted ids of a commit become, once their names are interned again.
#[derive(Debug, Default)]
struct Reinterned {
    /// The new id of each evicted endpoint; `None` for one the commit has no name for, which it
    /// only takes requests back from.
    pub endpoints: HashMap<i64, Option<i64>>,
    /// The new id of each evicted resource (0, unknown, for one without a name).
    pub resources: HashMap<i64, i64>,
}

/// `commit` written under the ids its evicted ones were interned again under. A rollup change of
/// an evicted endpoint takes nothing back: no row of that endpoint is left to take from, and the
/// rows of the new id never counted those requests.
fn remap(commit: &AnalysisCommit, reinterned: &Reinterned) -> Result<AnalysisCommit, StoreError> {
    let endpoint = |id: i64| -> Result<Option<i64>, StoreError> {
        match reinterned.endpoints.get(&id) {
            None => Ok(Some(id)),
            Some(new) => Ok(*new),
        }
    };
    let mut requests = commit.requests.clone();
    for request in &mut requests {
        request.endpoint_id = endpoint(request.endpoint_id)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "a request under evicted endpoint {} came without the endpoint's name",
                request.endpoint_id
            ))
        })?;
        if let Some(new) = reinterned.resources.get(&request.resource_id) {
            request.resource_id = *new;
        }
    }
    let mut rollups = AnalysisCommit::default();
    for change in &commit.rollups {
        if !reinterned.endpoints.contains_key(&change.key.endpoint_id) {
            rollups.absorb(AnalysisCommit {
                rollups: vec![change.clone()],
                ..AnalysisCommit::default()
            });
            continue;
        }
        if change.added.requests == 0 {
            continue; // only took requests back, from rows that are gone
        }
        let Some(new) = endpoint(change.key.endpoint_id)? else {
            return Err(StoreError::Corrupt(format!(
                "requests added under evicted endpoint {} came without the endpoint's name",
                change.key.endpoint_id
            )));
        };
        let mut key = change.key.clone();
        key.endpoint_id = new;
        rollups.absorb(AnalysisCommit {
            rollups: vec![RollupChange {
                key,
                added: change.added.clone(),
                removed: Rollup::new(),
            }],
            ..AnalysisCommit::default()
        });
    }
    Ok(AnalysisCommit {
        requests,
        rollups: rollups.rollups,
        ..commit.clone()
    })
}

portable_impl! {
    /// `commit` rewritten for the interned ids it writes under that retention evicted since the
    /// analyzer looked them up; `None` when all of them exist, as they almost always do. Runs in
    /// the commit's transaction, which no eviction interleaves with (see the module's doc).
    pub(in crate::store) async fn resolve_evicted(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        commit: &AnalysisCommit,
    ) -> Result<Option<AnalysisCommit>, StoreError> {
        let ids = WrittenIds::of(commit);
        if ids.is_empty() {
            return Ok(None);
        }
        let in_integers = self.dialect.in_integers;
        let count = format!(
            "SELECT (SELECT COUNT(*) FROM endpoints WHERE id {}), \
             (SELECT COUNT(*) FROM resources WHERE id {})",
            in_integers("$1"),
            in_integers("$2")
        );
        let (endpoints, resources): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(count))
            .bind((self.dialect.integers)(&ids.endpoints))
            .bind((self.dialect.integers)(&ids.resources))
            .fetch_one(&mut **tx)
            .await?;
        if endpoints as usize == ids.endpoints.len() && resources as usize == ids.resources.len() {
            return Ok(None);
        }
        let mut reinterned = Reinterned::default();
        for id in self.missing_ids(tx, "endpoints", &ids.endpoints).await? {
            let name = commit.names.endpoints.get(&id);
            let new = match name {
                Some(name) => Some(self.intern_again(tx, INTERN_ENDPOINT, name).await?),
                None => None,
            };
            reinterned.endpoints.insert(id, new);
        }
        for id in self.missing_ids(tx, "resources", &ids.resources).await? {
            let new = match commit.names.resources.get(&id) {
                Some(name) => self.intern_again(tx, self.dialect.intern_resource, name).await?,
                None => 0,
            };
            reinterned.resources.insert(id, new);
        }
        remap(commit, &reinterned).map(Some)
    }

    /// Interns `(service, name)` with `statement`, in `tx`.
    async fn intern_again(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        statement: &'static str,
        (service, name): &(String, String),
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(statement)
            .bind(service.clone())
            .bind(name.clone())
            .fetch_one(&mut **tx)
            .await?)
    }

    /// Those of `ids` (in order) that `table` has no row of.
    async fn missing_ids(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        table: &str,
        ids: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        let select = format!("SELECT id FROM {table} WHERE id {}", (self.dialect.in_integers)("$1"));
        let present: HashSet<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(select))
            .bind((self.dialect.integers)(ids))
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        Ok(ids.iter().copied().filter(|id| !present.contains(id)).collect())
    }

    /// Raises `seen_until_unix_ns` of the resources of a commit's requests, never lowering it.
    pub(in crate::store) async fn mark_resources_seen(
        &self,
        tx: &mut sqlx::Transaction<'_, DB>,
        commit: &AnalysisCommit,
    ) -> Result<(), StoreError> {
        let (ids, until): (Vec<i64>, Vec<i64>) = resources_seen(commit).into_iter().unzip();
        if ids.is_empty() {
            return Ok(());
        }
        let update = format!(
            "WITH seen (id, until_ns) AS ({}) \
             UPDATE resources SET seen_until_unix_ns = seen.until_ns FROM seen \
             WHERE resources.id = seen.id AND resources.seen_until_unix_ns < seen.until_ns",
            self.dialect.zipped_integers
        );
        sqlx::query(sqlx::AssertSqlSafe(update))
            .bind((self.dialect.integers)(&ids))
            .bind((self.dialect.integers)(&until))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Evicts the endpoints (other than [`OTHER_ENDPOINT`]) no row refers to, a range of ids a
    /// transaction, then the resources unseen since `spans_before` none of whose requests is
    /// left, a batch a transaction, pausing between transactions so ingest never waits long.
    pub(in crate::store) async fn evict_unreferenced(
        &self,
        spans_before: i64,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let last_id: i64 = sqlx::query_scalar(LAST_ENDPOINT_ID)
            .fetch_one(self.reader)
            .await?;
        let mut after = 0;
        while after < last_id {
            let through = after + ENDPOINT_IDS_PER_PASS;
            let mut tx = self.begin_eviction().await?;
            let evicted: Vec<i64> = sqlx::query_scalar(EVICT_ENDPOINTS)
                .bind(after)
                .bind(through)
                .bind(OTHER_ENDPOINT.to_owned())
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(DELETE_GONE_CHECKS)
                .bind(after)
                .bind(through)
                .execute(&mut *tx)
                .await?;
            if !evicted.is_empty() {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            report.endpoints += evicted.len() as u64;
            after = through;
            if after < last_id {
                tokio::time::sleep(super::retention::BATCH_PAUSE).await;
            }
        }
        let batch = super::retention::BATCH_ROWS;
        loop {
            let mut tx = self.begin_eviction().await?;
            // Read once the transaction excludes commits: every request committed before counts.
            let oldest: Option<i64> = sqlx::query_scalar(OLDEST_REQUEST)
                .fetch_one(&mut *tx)
                .await?;
            let done = sqlx::query(EVICT_RESOURCES)
                .bind(spans_before.min(oldest.unwrap_or(i64::MAX)))
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done > 0 {
                sqlx::query(BUMP_GENERATION).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            report.resources += done;
            if done < batch as u64 {
                return Ok(());
            }
            tokio::time::sleep(super::retention::BATCH_PAUSE).await;
        }
    }

    /// A transaction no analysis commit interleaves with (see the module's doc).
    async fn begin_eviction(&self) -> Result<sqlx::Transaction<'static, DB>, StoreError> {
        let mut tx = self.writer.begin_with(self.dialect.begin_eviction).await?;
        if let Some((lock, key)) = self.dialect.lock_eviction {
            sqlx::query(lock).bind(key).execute(&mut *tx).await?;
        }
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use collector::model::{SpanId, TraceId};

    use super::*;
    use crate::analysis::Breakdown;
    use crate::store::{Granularity, RequestRow, RollupKey};

    fn request(endpoint_id: i64, resource_id: i64, start_unix_ns: u64) -> RequestRow {
        RequestRow {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([resource_id as u8; 8]),
            endpoint_id,
            version: String::new(),
            start_unix_ns,
            duration_ns: 1,
            error: false,
            breakdown: Breakdown::default(),
            n_db_calls: 0,
            last_block_id: 1,
            resource_id,
        }
    }

    fn change(endpoint_id: i64, added: u64, removed: u64) -> RollupChange {
        let rollup = |requests| {
            let mut rollup = Rollup::new();
            rollup.requests = requests;
            rollup
        };
        RollupChange {
            key: RollupKey {
                endpoint_id,
                version: String::new(),
                minute: 1,
                granularity: Granularity::Minute,
            },
            added: rollup(added),
            removed: rollup(removed),
        }
    }

    #[test]
    fn seen_until_is_after_the_start_on_an_hour() {
        let hour = SEEN_UNTIL_STEP_NS;
        assert_eq!(seen_until(0), hour as i64);
        assert_eq!(seen_until(hour - 1), hour as i64);
        assert_eq!(seen_until(hour), 2 * hour as i64);
        assert_eq!(seen_until(u64::MAX), i64::MAX);
    }

    #[test]
    fn resources_seen_keep_the_latest_request_of_each() {
        let hour = SEEN_UNTIL_STEP_NS;
        let commit = AnalysisCommit {
            requests: vec![
                request(1, 7, 5 * hour),
                request(1, 7, hour),
                request(1, 0, 9 * hour),
            ],
            ..AnalysisCommit::default()
        };
        assert_eq!(resources_seen(&commit), [(7, 6 * hour as i64)]);
    }

    // Rows of an endpoint that was evicted and interned again under 9 go to 9, merged with the
    // commit's own rows of 9, and take nothing back; a change that only took back goes.
    #[test]
    fn remap_moves_evicted_ids_and_takes_nothing_back_from_them() {
        let commit = AnalysisCommit {
            requests: vec![request(3, 5, 0), request(4, 6, 0)],
            rollups: vec![
                change(3, 1, 1),
                change(9, 2, 0),
                change(4, 1, 0),
                change(8, 0, 1),
            ],
            ..AnalysisCommit::default()
        };
        let reinterned = Reinterned {
            endpoints: HashMap::from([(3, Some(9)), (8, None)]),
            resources: HashMap::from([(5, 15)]),
        };
        let remapped = remap(&commit, &reinterned).unwrap();
        let ids: Vec<(i64, i64)> = (remapped.requests.iter())
            .map(|r| (r.endpoint_id, r.resource_id))
            .collect();
        assert_eq!(ids, [(9, 15), (4, 6)]);
        let mut rows: Vec<(i64, u64, u64)> = (remapped.rollups.iter())
            .map(|c| (c.key.endpoint_id, c.added.requests, c.removed.requests))
            .collect();
        rows.sort_unstable();
        assert_eq!(rows, [(4, 1, 0), (9, 3, 0)]);
    }

    #[test]
    fn remap_refuses_requests_under_an_evicted_endpoint_without_its_name() {
        let commit = AnalysisCommit {
            requests: vec![request(3, 0, 0)],
            ..AnalysisCommit::default()
        };
        let reinterned = Reinterned {
            endpoints: HashMap::from([(3, None)]),
            ..Reinterned::default()
        };
        assert!(remap(&commit, &reinterned).is_err());
    }
}
