//! Alert states, transitions and the webhook outbox in SQLite.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite};

use super::{SqliteStore, ns, unsigned};
use crate::store::StoreError;
use crate::store::alert::{
    AlertCommit, AlertTransition, DeliveryAttempt, DeliveryRecord, DueNotification, StoredAlert,
};

type StateTuple = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<f64>,
    f64,
    String,
);

type TransitionTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<f64>,
    String,
);

type AttemptTuple = (i64, i64, i64, String, Option<i64>, Option<String>);

fn attempt_row(
    (notification_id, attempt, at, outcome, http_status, error): AttemptTuple,
) -> DeliveryAttempt {
    DeliveryAttempt {
        notification_id,
        attempt: u32::try_from(attempt).unwrap_or(0),
        at_unix_ns: unsigned(at),
        outcome,
        http_status: http_status.and_then(|s| u16::try_from(s).ok()),
        error,
        next_attempt_unix_ns: 0,
    }
}

impl SqliteStore {
    pub(in crate::store) async fn alert_states(&self) -> Result<Vec<StoredAlert>, StoreError> {
        const SELECT: &str = "SELECT rule_key, service, endpoint, kind, metric, state, since_unix_ns, \
             observed, budget, summary FROM alert_states";
        let rows: Vec<StateTuple> = sqlx::query_as(SELECT).fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    rule_key,
                    service,
                    endpoint,
                    kind,
                    metric,
                    state,
                    since,
                    observed,
                    budget,
                    summary,
                )| {
                    StoredAlert {
                        rule_key,
                        service,
                        endpoint,
                        kind,
                        metric,
                        state,
                        since_unix_ns: unsigned(since),
                        observed,
                        budget,
                        summary,
                    }
                },
            )
            .collect())
    }

    pub(in crate::store) async fn regressions_notified_through(&self) -> Result<i64, StoreError> {
        self.meta_value("regressions_notified_through").await
    }

    pub(in crate::store) async fn regression_resolutions_notified_through(
        &self,
    ) -> Result<i64, StoreError> {
        self.meta_value("regression_resolutions_notified_through")
            .await
    }

    /// A cursor kept in `meta`; 0 before it is first set.
    async fn meta_value(&self, key: &str) -> Result<i64, StoreError> {
        const SELECT: &str = "SELECT value FROM meta WHERE key = $1";
        Ok(sqlx::query_scalar(SELECT)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .unwrap_or(0))
    }

    pub(in crate::store) async fn commit_alerts(
        &self,
        commit: &AlertCommit,
    ) -> Result<Vec<i64>, StoreError> {
        const UPSERT_STATE: &str = "INSERT INTO alert_states (rule_key, service, endpoint, kind, metric, state, \
             since_unix_ns, observed, budget, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (rule_key, service, endpoint) DO UPDATE SET kind = excluded.kind, \
             metric = excluded.metric, state = excluded.state, since_unix_ns = excluded.since_unix_ns, \
             observed = excluded.observed, budget = excluded.budget, summary = excluded.summary";
        const INSERT_TRANSITION: &str = "INSERT INTO alert_transitions (rule_key, service, endpoint, from_state, \
             to_state, at_unix_ns, observed, summary) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
        const COUNT_PENDING: &str =
            "SELECT COUNT(*) FROM alert_notifications WHERE status = 'pending'";
        const INSERT_NOTIFICATION: &str = "INSERT INTO alert_notifications (transition_id, url, format, payload, \
             status, attempts, created_unix_ns, next_attempt_unix_ns) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             RETURNING id";
        const INSERT_DROPPED: &str = "INSERT INTO alert_delivery_attempts (notification_id, attempt, at_unix_ns, \
             outcome, http_status, error) VALUES ($1, 0, $2, 'dropped', NULL, 'the notification queue is full')";

        let mut tx = self.writer.begin().await?;
        let mut forget = QueryBuilder::<Sqlite>::new("DELETE FROM alert_states");
        if !commit.rule_keys.is_empty() {
            forget.push(" WHERE rule_key NOT IN (");
            let mut separated = forget.separated(", ");
            for key in &commit.rule_keys {
                separated.push_bind(key.clone());
            }
            forget.push(")");
        }
        forget.build().execute(&mut *tx).await?;
        for state in &commit.states {
            sqlx::query(UPSERT_STATE)
                .bind(&state.rule_key)
                .bind(&state.service)
                .bind(&state.endpoint)
                .bind(&state.kind)
                .bind(&state.metric)
                .bind(&state.state)
                .bind(ns(state.since_unix_ns))
                .bind(state.observed)
                .bind(state.budget)
                .bind(&state.summary)
                .execute(&mut *tx)
                .await?;
        }
        let mut transition_ids = Vec::with_capacity(commit.transitions.len());
        for transition in &commit.transitions {
            let id: i64 = sqlx::query_scalar(INSERT_TRANSITION)
                .bind(&transition.rule_key)
                .bind(&transition.service)
                .bind(&transition.endpoint)
                .bind(&transition.from_state)
                .bind(&transition.to_state)
                .bind(ns(transition.at_unix_ns))
                .bind(transition.observed)
                .bind(&transition.summary)
                .fetch_one(&mut *tx)
                .await?;
            transition_ids.push(id);
        }
        let mut pending: i64 = sqlx::query_scalar(COUNT_PENDING)
            .fetch_one(&mut *tx)
            .await?;
        let capacity = i64::try_from(commit.queue_capacity).unwrap_or(i64::MAX);
        let mut queued = Vec::new();
        for notification in &commit.notifications {
            let Some(transition_id) = transition_ids.get(notification.transition) else {
                return Err(StoreError::Corrupt(format!(
                    "notification for transition {} of {}",
                    notification.transition,
                    transition_ids.len()
                )));
            };
            let at = commit.transitions[notification.transition].at_unix_ns;
            let status = if pending < capacity {
                "pending"
            } else {
                "dropped"
            };
            let id: i64 = sqlx::query_scalar(INSERT_NOTIFICATION)
                .bind(transition_id)
                .bind(&notification.url)
                .bind(&notification.format)
                .bind(&notification.payload)
                .bind(status)
                .bind(0i64)
                .bind(ns(at))
                .fetch_one(&mut *tx)
                .await?;
            if status == "pending" {
                pending += 1;
                queued.push(id);
            } else {
                sqlx::query(INSERT_DROPPED)
                    .bind(id)
                    .bind(ns(at))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Cursors only move forward: a commit computed from an older read cannot take one back.
        const UPSERT_CURSOR: &str = "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)";
        for (key, through) in [
            (
                "regressions_notified_through",
                commit.regressions_notified_through,
            ),
            (
                "regression_resolutions_notified_through",
                commit.regression_resolutions_notified_through,
            ),
        ] {
            if let Some(through) = through {
                sqlx::query(UPSERT_CURSOR)
                    .bind(key)
                    .bind(through)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(queued)
    }

    pub(in crate::store) async fn alert_transitions(
        &self,
        limit: i64,
    ) -> Result<Vec<AlertTransition>, StoreError> {
        const SELECT: &str = "SELECT rule_key, service, endpoint, from_state, to_state, at_unix_ns, observed, \
             summary FROM alert_transitions ORDER BY id DESC LIMIT $1";
        let rows: Vec<TransitionTuple> = sqlx::query_as(SELECT)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(rule_key, service, endpoint, from_state, to_state, at, observed, summary)| {
                    AlertTransition {
                        rule_key,
                        service,
                        endpoint,
                        from_state,
                        to_state,
                        at_unix_ns: unsigned(at),
                        observed,
                        summary,
                    }
                },
            )
            .collect())
    }

    pub(in crate::store) async fn due_notifications(
        &self,
        now_unix_ns: u64,
        limit: i64,
    ) -> Result<Vec<DueNotification>, StoreError> {
        const SELECT: &str = "SELECT id, url, payload, attempts FROM alert_notifications \
             WHERE status = 'pending' AND next_attempt_unix_ns <= $1 ORDER BY next_attempt_unix_ns, id LIMIT $2";
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(SELECT)
            .bind(ns(now_unix_ns))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, url, payload, attempts)| DueNotification {
                id,
                url,
                payload,
                attempts: u32::try_from(attempts).unwrap_or(0),
            })
            .collect())
    }

    pub(in crate::store) async fn next_notification_due(&self) -> Result<Option<u64>, StoreError> {
        const SELECT: &str =
            "SELECT MIN(next_attempt_unix_ns) FROM alert_notifications WHERE status = 'pending'";
        let next: Option<i64> = sqlx::query_scalar(SELECT).fetch_one(&self.pool).await?;
        Ok(next.map(unsigned))
    }

    pub(in crate::store) async fn record_delivery(
        &self,
        attempt: &DeliveryAttempt,
    ) -> Result<(), StoreError> {
        const INSERT: &str = "INSERT INTO alert_delivery_attempts (notification_id, attempt, at_unix_ns, outcome, \
             http_status, error) VALUES ($1, $2, $3, $4, $5, $6)";
        const UPDATE: &str = "UPDATE alert_notifications SET attempts = $2, next_attempt_unix_ns = $3, \
             status = CASE $4 WHEN 'delivered' THEN 'delivered' WHEN 'failed' THEN 'failed' ELSE 'pending' END \
             WHERE id = $1";
        let mut tx = self.writer.begin().await?;
        sqlx::query(INSERT)
            .bind(attempt.notification_id)
            .bind(i64::from(attempt.attempt))
            .bind(ns(attempt.at_unix_ns))
            .bind(&attempt.outcome)
            .bind(attempt.http_status.map(i64::from))
            .bind(&attempt.error)
            .execute(&mut *tx)
            .await?;
        sqlx::query(UPDATE)
            .bind(attempt.notification_id)
            .bind(i64::from(attempt.attempt))
            .bind(ns(attempt.next_attempt_unix_ns))
            .bind(&attempt.outcome)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(in crate::store) async fn deliveries(
        &self,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        const SELECT: &str = "SELECT n.id, t.rule_key, t.service, t.endpoint, t.to_state, n.url, n.format, \
             n.status, n.created_unix_ns FROM alert_notifications n \
             JOIN alert_transitions t ON t.id = n.transition_id ORDER BY n.id DESC LIMIT $1";
        const ATTEMPTS: &str = "SELECT notification_id, attempt, at_unix_ns, outcome, http_status, error \
             FROM alert_delivery_attempts WHERE notification_id >= $1 ORDER BY id";
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            String,
            String,
            String,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(SELECT)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let Some(oldest) = rows.iter().map(|row| row.0).min() else {
            return Ok(Vec::new());
        };
        let attempts: Vec<AttemptTuple> = sqlx::query_as(ATTEMPTS)
            .bind(oldest)
            .fetch_all(&self.pool)
            .await?;
        let mut by_notification: HashMap<i64, Vec<DeliveryAttempt>> = HashMap::new();
        for row in attempts {
            let attempt = attempt_row(row);
            by_notification
                .entry(attempt.notification_id)
                .or_default()
                .push(attempt);
        }
        Ok(rows
            .into_iter()
            .map(
                |(id, rule_key, service, endpoint, to_state, url, format, status, created)| {
                    DeliveryRecord {
                        id,
                        rule_key,
                        service,
                        endpoint,
                        to_state,
                        url,
                        format,
                        status,
                        created_unix_ns: unsigned(created),
                        attempts: by_notification.remove(&id).unwrap_or_default(),
                    }
                },
            )
            .collect())
    }
}
