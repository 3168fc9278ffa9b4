//! What the regression finder keeps: when it last evaluated each (endpoint, baseline,
//! candidate) and on how many candidate requests, and the events it raised, each open until the
//! regression no longer holds.
//!
//! An evaluation's checks, raises and resolutions are committed in one transaction, and at most
//! one event per (endpoint, baseline, candidate) is open (a unique index says so): a restart
//! neither repeats nor loses an event. Raises are ordered by id and resolutions by their own
//! sequence, numbered in commit order, so alert senders page through both with a cursor each.

use std::collections::HashMap;

use sqlx::QueryBuilder;

use super::portable::ROWS_PER_STATEMENT;
use super::rows::columns;
use super::{Backend, StoreError, ns, unsigned};

/// Requests of one endpoint in one version of its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionTraffic {
    /// `service.name`.
    pub service: String,
    /// Interned endpoint.
    pub endpoint_id: i64,
    /// `service.version`.
    pub version: String,
    /// The first minute with a request of this endpoint in this version.
    pub first_minute: i64,
    /// Requests.
    pub requests: u64,
}

/// How a raised regression ended: it no longer held.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionResolution {
    /// Resolutions in commit order; the cursor of [`Store::regression_resolutions`].
    pub seq: i64,
    /// When it was resolved.
    pub resolved_unix_ns: u64,
    /// The event's metric in the candidate then.
    pub candidate_ns: u64,
    /// One sentence: where both quantiles stand now.
    pub summary: String,
}

/// A regression the finder raised, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionRecord {
    /// Its id, increasing in detection order (0 before it is stored).
    pub id: i64,
    /// When it was found.
    pub detected_unix_ns: u64,
    /// Interned endpoint.
    pub endpoint_id: i64,
    /// `service.name` (filled in when read).
    pub service: String,
    /// Endpoint name (filled in when read).
    pub endpoint: String,
    /// The previous version.
    pub baseline: String,
    /// The new version.
    pub candidate: String,
    /// `p50` or `p95`.
    pub metric: String,
    /// The metric in the baseline.
    pub baseline_ns: u64,
    /// The metric in the candidate.
    pub candidate_ns: u64,
    /// Baseline requests compared.
    pub baseline_requests: u64,
    /// Candidate requests compared.
    pub candidate_requests: u64,
    /// Difference of the means.
    pub mean_delta_ns: i64,
    /// Its 95% confidence interval, when the rollups allow one.
    pub mean_delta_ci_ns: Option<(i64, i64)>,
    /// 95% confidence interval of the metric in the baseline (none for events raised before
    /// intervals decided).
    pub baseline_interval_ns: Option<(u64, u64)>,
    /// 95% confidence interval of the metric in the candidate.
    pub candidate_interval_ns: Option<(u64, u64)>,
    /// One sentence: what changed and what explains it.
    pub summary: String,
    /// Set once the regression no longer holds; `None` while it is open.
    pub resolution: Option<RegressionResolution>,
}

/// The finder's memory of one (endpoint, baseline, candidate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegressionCheck {
    /// When it was last evaluated.
    pub checked_unix_ns: u64,
    /// The candidate's requests that evaluation saw.
    pub candidate_requests: u64,
}

/// A resolution to record: the open event `regression_id` no longer holds.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResolution {
    /// The event.
    pub regression_id: i64,
    /// When.
    pub resolved_unix_ns: u64,
    /// The event's metric in the candidate now.
    pub candidate_ns: u64,
    /// One sentence.
    pub summary: String,
}

/// One evaluation of a version pair's endpoints, committed at once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegressionEvaluation {
    /// The previous version.
    pub baseline: String,
    /// The new version.
    pub candidate: String,
    /// When.
    pub checked_unix_ns: u64,
    /// The endpoints evaluated, each with the candidate's requests it was evaluated on.
    pub checked: Vec<(i64, u64)>,
    /// New events (`id` and `resolution` are not read). One whose endpoint already has an open
    /// event is not stored.
    pub raised: Vec<RegressionRecord>,
    /// Open events that no longer hold.
    pub resolved: Vec<NewResolution>,
}

/// `SELECT` of the columns every regression read takes, in [`StoredRegression`]'s order, from
/// `regressions r JOIN endpoints e`, followed by the rest of the statement.
macro_rules! select_regressions {
    ($rest:literal) => {
        concat!(
            "SELECT r.id, r.detected_unix_ns, r.endpoint_id, e.service, e.endpoint, r.baseline, \
             r.candidate, r.metric, r.baseline_ns, r.candidate_ns, r.baseline_requests, \
             r.candidate_requests, r.mean_delta_ns, r.mean_delta_low_ns, r.mean_delta_high_ns, \
             r.summary, r.baseline_low_ns, r.baseline_high_ns, r.candidate_low_ns, \
             r.candidate_high_ns, r.resolution_seq, r.resolved_unix_ns, r.resolved_candidate_ns, \
             r.resolved_summary FROM regressions r JOIN endpoints e ON e.id = r.endpoint_id ",
            $rest
        )
    };
}

/// Stores a new event unless its endpoint has an open one for the pair (`regressions_open`).
/// Portable: SQLite's upsert takes `ON CONFLICT DO NOTHING` without a target too.
const INSERT_REGRESSION: &str = "INSERT INTO regressions (detected_unix_ns, \
     endpoint_id, baseline, candidate, metric, baseline_ns, candidate_ns, baseline_requests, \
     candidate_requests, mean_delta_ns, mean_delta_low_ns, mean_delta_high_ns, summary, \
     baseline_low_ns, baseline_high_ns, candidate_low_ns, candidate_high_ns) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT DO NOTHING";

/// Resolves an open event. The sequence is the next number rather than a database sequence:
/// numbers are then taken in commit order (two writers that took the same one fail on the
/// unique index, and the later retries), so a sender's cursor never passes a resolution that
/// commits after a larger one.
const RESOLVE_REGRESSION: &str = "UPDATE regressions SET resolved_unix_ns = $1, \
     resolved_candidate_ns = $2, resolved_summary = $3, \
     resolution_seq = (SELECT COALESCE(MAX(resolution_seq), 0) + 1 FROM regressions) \
     WHERE id = $4 AND resolved_unix_ns IS NULL";

/// Records the evaluation of endpoints: their candidate requests and when.
const UPSERT_CHECK_SUFFIX: &str = " ON CONFLICT (endpoint_id, baseline, candidate) \
     DO UPDATE SET checked_unix_ns = excluded.checked_unix_ns, \
     candidate_requests = excluded.candidate_requests";

/// Events after an id, oldest first, optionally of one service.
const SELECT_REGRESSIONS: &str = select_regressions!(
    "WHERE r.id > $1 AND (CAST($2 AS TEXT) IS NULL OR e.service = $2) ORDER BY r.id LIMIT $3"
);

/// Resolved events after a resolution sequence number, in resolution order.
const SELECT_RESOLUTIONS: &str =
    select_regressions!("WHERE r.resolution_seq > $1 ORDER BY r.resolution_seq LIMIT $2");

/// The open events of a version pair on a service's endpoints.
const SELECT_OPEN: &str = select_regressions!(
    "WHERE e.service = $1 AND r.baseline = $2 AND r.candidate = $3 AND r.resolved_unix_ns IS NULL ORDER BY r.id"
);

/// A regression row as both backends select it ([`select_regressions`]), read by position:
/// twenty-four columns are more than sqlx decodes into a tuple.
struct StoredRegression {
    ints: [i64; 3],
    names: [String; 5],
    counts: [i64; 5],
    mean_ci: [Option<i64>; 2],
    summary: String,
    intervals: [Option<i64>; 4],
    resolution: (Option<i64>, Option<i64>, Option<i64>, Option<String>),
}

impl<'r, R> sqlx::FromRow<'r, R> for StoredRegression
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            ints: columns(row, 0)?,
            names: columns(row, 3)?,
            counts: columns(row, 8)?,
            mean_ci: columns(row, 13)?,
            summary: row.try_get(15)?,
            intervals: columns(row, 16)?,
            resolution: (
                row.try_get(20)?,
                row.try_get(21)?,
                row.try_get(22)?,
                row.try_get(23)?,
            ),
        })
    }
}

impl StoredRegression {
    /// The row as the finder and its readers use it.
    fn decode(self) -> RegressionRecord {
        let [id, detected, endpoint_id] = self.ints;
        let [service, endpoint, baseline, candidate, metric] = self.names;
        let [
            baseline_ns,
            candidate_ns,
            baseline_requests,
            candidate_requests,
            mean_delta_ns,
        ] = self.counts;
        let interval = |low: Option<i64>, high: Option<i64>| {
            low.zip(high)
                .map(|(low, high)| (unsigned(low), unsigned(high)))
        };
        let [baseline_low, baseline_high, candidate_low, candidate_high] = self.intervals;
        let (seq, resolved, resolved_candidate, resolved_summary) = self.resolution;
        RegressionRecord {
            id,
            detected_unix_ns: unsigned(detected),
            endpoint_id,
            service,
            endpoint,
            baseline,
            candidate,
            metric,
            baseline_ns: unsigned(baseline_ns),
            candidate_ns: unsigned(candidate_ns),
            baseline_requests: unsigned(baseline_requests),
            candidate_requests: unsigned(candidate_requests),
            mean_delta_ns,
            mean_delta_ci_ns: self.mean_ci[0].zip(self.mean_ci[1]),
            baseline_interval_ns: interval(baseline_low, baseline_high),
            candidate_interval_ns: interval(candidate_low, candidate_high),
            summary: self.summary,
            resolution: seq
                .zip(resolved)
                .map(|(seq, resolved)| RegressionResolution {
                    seq,
                    resolved_unix_ns: unsigned(resolved),
                    candidate_ns: resolved_candidate.map_or(0, unsigned),
                    summary: resolved_summary.unwrap_or_default(),
                }),
        }
    }
}

portable_api! {
    /// Requests per (endpoint, version) with traffic from `first_minute` on.
    pub async fn version_traffic(
        &self,
        first_minute: i64,
    ) -> Result<Vec<VersionTraffic>, StoreError> {
        const SELECT: &str = "SELECT e.service, r.endpoint_id, r.version, MIN(r.minute), \
             CAST(SUM(r.requests) AS BIGINT) FROM rollups r JOIN endpoints e ON e.id = r.endpoint_id \
             WHERE r.minute >= $1 AND r.requests > 0 AND r.version <> '' \
             GROUP BY e.service, r.endpoint_id, r.version";
        let rows: Vec<(String, i64, String, i64, i64)> = sqlx::query_as(SELECT)
            .bind(first_minute)
            .fetch_all(self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(service, endpoint_id, version, first_minute, requests)| VersionTraffic {
                    service,
                    endpoint_id,
                    version,
                    first_minute,
                    requests: unsigned(requests),
                },
            )
            .collect())
    }

    /// What the finder last did for these endpoints of a version pair; endpoints never
    /// evaluated are absent.
    pub async fn regression_checks(
        &self,
        endpoint_ids: &[i64],
        baseline: &str,
        candidate: &str,
    ) -> Result<HashMap<i64, RegressionCheck>, StoreError> {
        let mut out = HashMap::new();
        for chunk in endpoint_ids.chunks(ROWS_PER_STATEMENT) {
            let mut select = QueryBuilder::<DB>::new(
                "SELECT endpoint_id, checked_unix_ns, candidate_requests FROM regression_checks \
                 WHERE baseline = ",
            );
            select
                .push_bind(baseline.to_owned())
                .push(" AND candidate = ")
                .push_bind(candidate.to_owned())
                .push(" AND endpoint_id IN (");
            let mut separated = select.separated(", ");
            for id in chunk {
                separated.push_bind(*id);
            }
            select.push(")");
            let rows: Vec<(i64, i64, i64)> = select.build_query_as().fetch_all(self.reader).await?;
            out.extend(rows.into_iter().map(|(id, checked, requests)| {
                (
                    id,
                    RegressionCheck {
                        checked_unix_ns: unsigned(checked),
                        candidate_requests: unsigned(requests),
                    },
                )
            }));
        }
        Ok(out)
    }

    /// The open events of a version pair on a service's endpoints.
    pub async fn open_regressions(
        &self,
        service: &str,
        baseline: &str,
        candidate: &str,
    ) -> Result<Vec<RegressionRecord>, StoreError> {
        let rows: Vec<StoredRegression> = sqlx::query_as(SELECT_OPEN)
            .bind(service.to_owned())
            .bind(baseline.to_owned())
            .bind(candidate.to_owned())
            .fetch_all(self.reader)
            .await?;
        Ok(rows.into_iter().map(StoredRegression::decode).collect())
    }

    /// Commits one evaluation: the checks, the events raised and the events resolved, in one
    /// transaction; committing the same evaluation twice stores nothing twice.
    pub async fn record_regression_evaluation(
        &self,
        evaluation: &RegressionEvaluation,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in evaluation.checked.chunks(ROWS_PER_STATEMENT) {
            let mut upsert = QueryBuilder::<DB>::new(
                "INSERT INTO regression_checks (endpoint_id, baseline, candidate, \
                 checked_unix_ns, candidate_requests) ",
            );
            upsert.push_values(chunk, |mut row, (id, requests)| {
                row.push_bind(*id)
                    .push_bind(evaluation.baseline.clone())
                    .push_bind(evaluation.candidate.clone())
                    .push_bind(ns(evaluation.checked_unix_ns))
                    .push_bind(ns(*requests));
            });
            upsert.push(UPSERT_CHECK_SUFFIX);
            upsert.build().execute(&mut *tx).await?;
        }
        for resolution in &evaluation.resolved {
            sqlx::query(RESOLVE_REGRESSION)
                .bind(ns(resolution.resolved_unix_ns))
                .bind(ns(resolution.candidate_ns))
                .bind(&resolution.summary)
                .bind(resolution.regression_id)
                .execute(&mut *tx)
                .await?;
        }
        for event in &evaluation.raised {
            let interval = |bounds: Option<(u64, u64)>| {
                (
                    bounds.map(|(low, _)| ns(low)),
                    bounds.map(|(_, high)| ns(high)),
                )
            };
            let (baseline_low, baseline_high) = interval(event.baseline_interval_ns);
            let (candidate_low, candidate_high) = interval(event.candidate_interval_ns);
            sqlx::query(INSERT_REGRESSION)
                .bind(ns(event.detected_unix_ns))
                .bind(event.endpoint_id)
                .bind(&event.baseline)
                .bind(&event.candidate)
                .bind(&event.metric)
                .bind(ns(event.baseline_ns))
                .bind(ns(event.candidate_ns))
                .bind(ns(event.baseline_requests))
                .bind(ns(event.candidate_requests))
                .bind(event.mean_delta_ns)
                .bind(event.mean_delta_ci_ns.map(|(low, _)| low))
                .bind(event.mean_delta_ci_ns.map(|(_, high)| high))
                .bind(&event.summary)
                .bind(baseline_low)
                .bind(baseline_high)
                .bind(candidate_low)
                .bind(candidate_high)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Regressions with an id above `after_id`, oldest first, at most `limit`, optionally of one
    /// service: the feed alert senders page through with the last id they sent. Each carries
    /// its resolution once it has one.
    pub async fn regressions(
        &self,
        after_id: i64,
        limit: i64,
        service: Option<&str>,
    ) -> Result<Vec<RegressionRecord>, StoreError> {
        let rows: Vec<StoredRegression> = sqlx::query_as(SELECT_REGRESSIONS)
            .bind(after_id)
            .bind(service.map(str::to_owned))
            .bind(limit)
            .fetch_all(self.reader)
            .await?;
        Ok(rows.into_iter().map(StoredRegression::decode).collect())
    }

    /// Resolved regressions whose resolution sequence is above `after_seq`, in resolution order,
    /// at most `limit`: the feed of resolutions alert senders page through.
    pub async fn regression_resolutions(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<RegressionRecord>, StoreError> {
        let rows: Vec<StoredRegression> = sqlx::query_as(SELECT_RESOLUTIONS)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(self.reader)
            .await?;
        Ok(rows.into_iter().map(StoredRegression::decode).collect())
    }
}
