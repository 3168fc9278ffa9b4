//! The regression finder's checks and events in PostgreSQL: the SQLite statements, which are
//! portable here, on a PostgreSQL pool.

use std::collections::HashMap;

use sqlx::{Postgres, QueryBuilder};

use super::{PgStore, ROWS_PER_STATEMENT, ns, unsigned};
use crate::store::StoreError;
use crate::store::regression::{
    INSERT_REGRESSION, RESOLVE_REGRESSION, RegressionCheck, RegressionEvaluation, RegressionRecord,
    SELECT_OPEN, SELECT_REGRESSIONS, SELECT_RESOLUTIONS, StoredRegression, UPSERT_CHECK_SUFFIX,
    VersionTraffic,
};

impl PgStore {
    pub(in crate::store) async fn version_traffic(
        &self,
        first_minute: i64,
    ) -> Result<Vec<VersionTraffic>, StoreError> {
        const SELECT: &str = "SELECT e.service, r.endpoint_id, r.version, MIN(r.minute), \
             SUM(r.requests)::bigint FROM rollups r JOIN endpoints e ON e.id = r.endpoint_id \
             WHERE r.minute >= $1 AND r.requests > 0 AND r.version <> '' \
             GROUP BY e.service, r.endpoint_id, r.version";
        let rows: Vec<(String, i64, String, i64, i64)> = sqlx::query_as(SELECT)
            .bind(first_minute)
            .fetch_all(&self.pool)
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

    pub(in crate::store) async fn regression_checks(
        &self,
        endpoint_ids: &[i64],
        baseline: &str,
        candidate: &str,
    ) -> Result<HashMap<i64, RegressionCheck>, StoreError> {
        let mut out = HashMap::new();
        for chunk in endpoint_ids.chunks(ROWS_PER_STATEMENT) {
            let mut select = QueryBuilder::<Postgres>::new(
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
            let rows: Vec<(i64, i64, i64)> = select.build_query_as().fetch_all(&self.pool).await?;
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

    pub(in crate::store) async fn open_regressions(
        &self,
        service: &str,
        baseline: &str,
        candidate: &str,
    ) -> Result<Vec<RegressionRecord>, StoreError> {
        let rows: Vec<StoredRegression> = sqlx::query_as(SELECT_OPEN)
            .bind(service)
            .bind(baseline)
            .bind(candidate)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(StoredRegression::decode).collect())
    }

    pub(in crate::store) async fn record_regression_evaluation(
        &self,
        evaluation: &RegressionEvaluation,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in evaluation.checked.chunks(ROWS_PER_STATEMENT) {
            let mut upsert = QueryBuilder::<Postgres>::new(
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

    pub(in crate::store) async fn regressions(
        &self,
        after_id: i64,
        limit: i64,
        service: Option<&str>,
    ) -> Result<Vec<RegressionRecord>, StoreError> {
        let rows: Vec<StoredRegression> = sqlx::query_as(SELECT_REGRESSIONS)
            .bind(after_id)
            .bind(service)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(StoredRegression::decode).collect())
    }

    pub(in crate::store) async fn regression_resolutions(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<RegressionRecord>, StoreError> {
        let rows: Vec<StoredRegression> = sqlx::query_as(SELECT_RESOLUTIONS)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(StoredRegression::decode).collect())
    }
}
