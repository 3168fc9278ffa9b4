//! What alerting keeps: the state of each alert instance, every transition, the webhook outbox
//! with every delivery attempt, and the last evaluation, which every instance serves.
//!
//! A transition and the notifications it causes are committed together, and a notification
//! leaves `pending` only once it was delivered or given up: a restart neither loses nor re-sends.
//! The SQL is written once for both backends (see `portable`).

use std::collections::HashMap;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::portable::ROWS_PER_STATEMENT;
use super::{Backend, Store, StoreError, ns, unsigned};

/// The stored state of one alert instance: a rule applied to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAlert {
    /// The rule's stable key.
    pub rule_key: String,
    /// `service.name`.
    pub service: String,
    /// Endpoint.
    pub endpoint: String,
    /// `budget` or `slo`.
    pub kind: String,
    /// The metric key.
    pub metric: String,
    /// `ok`, `pending`, `firing` or `resolved`.
    pub state: String,
    /// When the state was entered.
    pub since_unix_ns: u64,
    /// The metric's value at the transition.
    pub observed: Option<f64>,
    /// The limit.
    pub budget: f64,
    /// The sentence at the transition.
    pub summary: String,
}

/// One change of state.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertTransition {
    /// The rule's key.
    pub rule_key: String,
    /// `service.name`.
    pub service: String,
    /// Endpoint.
    pub endpoint: String,
    /// The state left.
    pub from_state: String,
    /// The state entered.
    pub to_state: String,
    /// When.
    pub at_unix_ns: u64,
    /// The metric's value then.
    pub observed: Option<f64>,
    /// The sentence then.
    pub summary: String,
}

/// A webhook call a transition causes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Index into [`AlertCommit::transitions`].
    pub transition: usize,
    /// Where to.
    pub url: String,
    /// `json` or `alertmanager`.
    pub format: String,
    /// The body.
    pub payload: String,
}

/// One evaluation's writes, committed in one transaction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertCommit {
    /// States to insert or replace.
    pub states: Vec<StoredAlert>,
    /// Transitions to append.
    pub transitions: Vec<AlertTransition>,
    /// Notifications to queue.
    pub notifications: Vec<NewNotification>,
    /// The rules in force: states of any other rule are forgotten (their history stays).
    pub rule_keys: Vec<String>,
    /// Pending notifications allowed; beyond it new ones are stored as `dropped`.
    pub queue_capacity: usize,
    /// Every regression event up to this id has been turned into notifications (by this commit
    /// or an earlier one), so each is sent once.
    pub regressions_notified_through: Option<i64>,
    /// Every regression resolution up to this sequence number has been turned into
    /// notifications, so each is sent once.
    pub regression_resolutions_notified_through: Option<i64>,
    /// The evaluation that replaces the stored one; `None` leaves it.
    pub evaluation: Option<AlertEvaluation>,
}

/// A notification due for (another) delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DueNotification {
    /// Its id.
    pub id: i64,
    /// Where to.
    pub url: String,
    /// The body.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// What came of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// The notification.
    pub notification_id: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When.
    pub at_unix_ns: u64,
    /// `delivered`, `retry` or `failed`.
    pub outcome: String,
    /// The receiver's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// For a retry: when to try again.
    pub next_attempt_unix_ns: u64,
}

/// A notification and its attempts, for the API.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// The notification id.
    pub id: i64,
    /// The rule's key.
    pub rule_key: String,
    /// `service.name`.
    pub service: String,
    /// Endpoint.
    pub endpoint: String,
    /// The state the transition entered.
    pub to_state: String,
    /// Where to.
    pub url: String,
    /// `json` or `alertmanager`.
    pub format: String,
    /// `pending`, `delivered`, `failed` or `dropped`.
    pub status: String,
    /// When it was queued.
    pub created_unix_ns: u64,
    /// Every attempt, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

/// One alert instance as an evaluation left it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedAlert {
    /// Its state, value and sentence now (`observed` and `budget`: for an SLO, the long
    /// window's burn rate and the one that fires).
    pub alert: StoredAlert,
    /// The window of the value.
    pub window_ns: u64,
    /// Requests in the window.
    pub requests: u64,
    /// For an SLO: its objective and threshold in milliseconds.
    pub slo: Option<(f64, f64)>,
    /// For an SLO: every window pair.
    pub burn: Vec<EvaluatedBurn>,
}

/// One window pair of an SLO as an evaluation left it.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluatedBurn {
    /// The severity the pair pages with.
    pub severity: String,
    /// The long window.
    pub long_ns: u64,
    /// The short window.
    pub short_ns: u64,
    /// The burn rate that fires.
    pub factor: f64,
    /// The long window's burn rate.
    pub long_burn: f64,
    /// The short window's burn rate.
    pub short_burn: f64,
    /// Requests in the short window.
    pub short_requests: u64,
    /// Whether both windows burn past the factor.
    pub firing: bool,
}

/// The last evaluation, as every instance on the database serves it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertEvaluation {
    /// When it ran; `None` before the first.
    pub evaluated_at_unix_ns: Option<u64>,
    /// Every alert instance, in the order it was stored (most urgent first).
    pub alerts: Vec<EvaluatedAlert>,
}

impl Store {
    /// The id of the last regression event already turned into notifications; 0 before any.
    pub async fn regressions_notified_through(&self) -> Result<i64, StoreError> {
        portable!(self.meta_value(REGRESSIONS_NOTIFIED_THROUGH))
    }

    /// The sequence number of the last regression resolution already turned into
    /// notifications; 0 before any.
    pub async fn regression_resolutions_notified_through(&self) -> Result<i64, StoreError> {
        portable!(self.meta_value(RESOLUTIONS_NOTIFIED_THROUGH))
    }
}

/// The `meta` keys of the regression cursors, and of when the stored evaluation ran.
const REGRESSIONS_NOTIFIED_THROUGH: &str = "regressions_notified_through";
const RESOLUTIONS_NOTIFIED_THROUGH: &str = "regression_resolutions_notified_through";
const EVALUATED_AT: &str = "alerts_evaluated_at_unix_ns";

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

fn stored_alert(row: StateTuple) -> StoredAlert {
    let (rule_key, service, endpoint, kind, metric, state, since, observed, budget, summary) = row;
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
}

fn alert_transition(row: TransitionTuple) -> AlertTransition {
    let (rule_key, service, endpoint, from_state, to_state, at, observed, summary) = row;
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
}

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

/// A row of [`SELECT_EVALUATION`], read by position: more columns than sqlx decodes into a tuple.
/// The alert's columns are absent when nothing was evaluated, the pair's when it has none.
struct EvaluationRow {
    evaluated_at: i64,
    alert: Option<(i64, EvaluatedAlert)>,
    burn: Option<EvaluatedBurn>,
}

impl<'r, R> sqlx::FromRow<'r, R> for EvaluationRow
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let seq: Option<i64> = row.try_get(1)?;
        let alert = match seq {
            None => None,
            Some(seq) => {
                let objective: Option<f64> = row.try_get(14)?;
                let threshold_ms: Option<f64> = row.try_get(15)?;
                let alert = EvaluatedAlert {
                    alert: StoredAlert {
                        rule_key: row.try_get(2)?,
                        kind: row.try_get(3)?,
                        service: row.try_get(4)?,
                        endpoint: row.try_get(5)?,
                        metric: row.try_get(6)?,
                        budget: row.try_get(7)?,
                        observed: row.try_get(8)?,
                        state: row.try_get(11)?,
                        since_unix_ns: unsigned(row.try_get(12)?),
                        summary: row.try_get(13)?,
                    },
                    window_ns: unsigned(row.try_get(9)?),
                    requests: unsigned(row.try_get(10)?),
                    slo: objective.zip(threshold_ms),
                    burn: Vec::new(),
                };
                Some((seq, alert))
            }
        };
        let severity: Option<String> = row.try_get(16)?;
        let burn = match severity {
            None => None,
            Some(severity) => Some(EvaluatedBurn {
                severity,
                long_ns: unsigned(row.try_get(17)?),
                short_ns: unsigned(row.try_get(18)?),
                factor: row.try_get(19)?,
                long_burn: row.try_get(20)?,
                short_burn: row.try_get(21)?,
                short_requests: unsigned(row.try_get(22)?),
                firing: row.try_get(23)?,
            }),
        };
        Ok(Self {
            evaluated_at: row.try_get(0)?,
            alert,
            burn,
        })
    }
}

/// The stored evaluation in one statement, so it is read as one commit left it: when it ran,
/// then each alert with its window pairs.
const SELECT_EVALUATION: &str = "SELECT m.value, a.seq, a.rule_key, a.kind, a.service, a.endpoint, \
     a.metric, a.budget, a.observed, a.window_ns, a.requests, a.state, a.since_unix_ns, a.summary, \
     a.slo_objective, a.slo_threshold_ms, b.severity, b.long_ns, b.short_ns, b.factor, \
     b.long_burn, b.short_burn, b.short_requests, b.firing \
     FROM meta m LEFT JOIN alert_evaluation a ON TRUE \
     LEFT JOIN alert_evaluation_burn b ON b.seq = a.seq \
     WHERE m.key = $1 ORDER BY a.seq, b.pair";

portable_impl! {
    /// A cursor kept in `meta`; 0 before it is first set.
    async fn meta_value(&self, key: &'static str) -> Result<i64, StoreError> {
        const SELECT: &str = "SELECT value FROM meta WHERE key = $1";
        Ok(sqlx::query_scalar(SELECT)
            .bind(key.to_owned())
            .fetch_optional(self.reader)
            .await?
            .unwrap_or(0))
    }
}

/// Replaces the stored evaluation with `evaluation`, inside the commit's transaction.
async fn replace_evaluation<DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    evaluation: &AlertEvaluation,
) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB>,
{
    const UPSERT_EVALUATED_AT: &str = "INSERT INTO meta (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    sqlx::query("DELETE FROM alert_evaluation_burn")
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM alert_evaluation")
        .execute(&mut **tx)
        .await?;
    let numbered: Vec<(i64, &EvaluatedAlert)> = (0i64..).zip(&evaluation.alerts).collect();
    for chunk in numbered.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO alert_evaluation (seq, rule_key, kind, service, endpoint, metric, budget, \
             observed, window_ns, requests, state, since_unix_ns, summary, slo_objective, \
             slo_threshold_ms) ",
        );
        insert.push_values(chunk, |mut row, (seq, evaluated)| {
            let alert = &evaluated.alert;
            row.push_bind(*seq)
                .push_bind(alert.rule_key.clone())
                .push_bind(alert.kind.clone())
                .push_bind(alert.service.clone())
                .push_bind(alert.endpoint.clone())
                .push_bind(alert.metric.clone())
                .push_bind(alert.budget)
                .push_bind(alert.observed)
                .push_bind(ns(evaluated.window_ns))
                .push_bind(ns(evaluated.requests))
                .push_bind(alert.state.clone())
                .push_bind(ns(alert.since_unix_ns))
                .push_bind(alert.summary.clone())
                .push_bind(evaluated.slo.map(|(objective, _)| objective))
                .push_bind(evaluated.slo.map(|(_, threshold_ms)| threshold_ms));
        });
        insert.build().execute(&mut **tx).await?;
    }
    let pairs: Vec<(i64, i64, &EvaluatedBurn)> = numbered
        .iter()
        .flat_map(|(seq, alert)| {
            (0i64..)
                .zip(&alert.burn)
                .map(|(pair, burn)| (*seq, pair, burn))
        })
        .collect();
    for chunk in pairs.chunks(ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<DB>::new(
            "INSERT INTO alert_evaluation_burn (seq, pair, severity, long_ns, short_ns, factor, \
             long_burn, short_burn, short_requests, firing) ",
        );
        insert.push_values(chunk, |mut row, (seq, pair, burn)| {
            row.push_bind(*seq)
                .push_bind(*pair)
                .push_bind(burn.severity.clone())
                .push_bind(ns(burn.long_ns))
                .push_bind(ns(burn.short_ns))
                .push_bind(burn.factor)
                .push_bind(burn.long_burn)
                .push_bind(burn.short_burn)
                .push_bind(ns(burn.short_requests))
                .push_bind(burn.firing);
        });
        insert.build().execute(&mut **tx).await?;
    }
    sqlx::query(UPSERT_EVALUATED_AT)
        .bind(EVALUATED_AT.to_owned())
        .bind(ns(evaluation.evaluated_at_unix_ns.unwrap_or(0)))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

portable_api! {
    /// Every stored alert state.
    pub async fn alert_states(&self) -> Result<Vec<StoredAlert>, StoreError> {
        const SELECT: &str = "SELECT rule_key, service, endpoint, kind, metric, state, since_unix_ns, \
             observed, budget, summary FROM alert_states";
        let rows: Vec<StateTuple> = sqlx::query_as(SELECT).fetch_all(self.reader).await?;
        Ok(rows.into_iter().map(stored_alert).collect())
    }

    /// Commits one evaluation's states, transitions, notifications and (when it carries one) the
    /// evaluation itself atomically; returns the ids of the notifications queued as pending.
    pub async fn commit_alerts(&self, commit: &AlertCommit) -> Result<Vec<i64>, StoreError> {
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
        let mut forget = QueryBuilder::<DB>::new("DELETE FROM alert_states");
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
                .bind(*transition_id)
                .bind(&notification.url)
                .bind(&notification.format)
                .bind(&notification.payload)
                .bind(status.to_owned())
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
        for (key, through) in [
            (
                REGRESSIONS_NOTIFIED_THROUGH,
                commit.regressions_notified_through,
            ),
            (
                RESOLUTIONS_NOTIFIED_THROUGH,
                commit.regression_resolutions_notified_through,
            ),
        ] {
            if let Some(through) = through {
                self.raise_meta(&mut tx, key, through).await?;
            }
        }
        if let Some(evaluation) = &commit.evaluation {
            replace_evaluation(&mut tx, evaluation).await?;
        }
        tx.commit().await?;
        Ok(queued)
    }

    /// The last evaluation committed by any instance on this database.
    pub async fn alert_evaluation(&self) -> Result<AlertEvaluation, StoreError> {
        let rows: Vec<EvaluationRow> = sqlx::query_as(SELECT_EVALUATION)
            .bind(EVALUATED_AT.to_owned())
            .fetch_all(self.reader)
            .await?;
        let mut evaluation = AlertEvaluation::default();
        let mut last_seq = None;
        for row in rows {
            evaluation.evaluated_at_unix_ns = Some(unsigned(row.evaluated_at));
            if let Some((seq, alert)) = row.alert
                && last_seq != Some(seq)
            {
                last_seq = Some(seq);
                evaluation.alerts.push(alert);
            }
            if let (Some(burn), Some(alert)) = (row.burn, evaluation.alerts.last_mut()) {
                alert.burn.push(burn);
            }
        }
        Ok(evaluation)
    }

    /// The newest transitions, newest first, at most `limit`.
    pub async fn alert_transitions(&self, limit: i64) -> Result<Vec<AlertTransition>, StoreError> {
        const SELECT: &str = "SELECT rule_key, service, endpoint, from_state, to_state, at_unix_ns, observed, \
             summary FROM alert_transitions ORDER BY id DESC LIMIT $1";
        let rows: Vec<TransitionTuple> = sqlx::query_as(SELECT)
            .bind(limit)
            .fetch_all(self.reader)
            .await?;
        Ok(rows.into_iter().map(alert_transition).collect())
    }

    /// Pending notifications due at `now`, oldest first, at most `limit`.
    pub async fn due_notifications(
        &self,
        now_unix_ns: u64,
        limit: i64,
    ) -> Result<Vec<DueNotification>, StoreError> {
        const SELECT: &str = "SELECT id, url, payload, attempts FROM alert_notifications \
             WHERE status = 'pending' AND next_attempt_unix_ns <= $1 ORDER BY next_attempt_unix_ns, id LIMIT $2";
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(SELECT)
            .bind(ns(now_unix_ns))
            .bind(limit)
            .fetch_all(self.reader)
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

    /// When the next pending notification is due, if any is.
    pub async fn next_notification_due(&self) -> Result<Option<u64>, StoreError> {
        const SELECT: &str =
            "SELECT MIN(next_attempt_unix_ns) FROM alert_notifications WHERE status = 'pending'";
        let next: Option<i64> = sqlx::query_scalar(SELECT).fetch_one(self.reader).await?;
        Ok(next.map(unsigned))
    }

    /// Records an attempt and moves its notification on (delivered, retry later, or failed).
    pub async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), StoreError> {
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

    /// The newest notifications with their attempts, newest first, at most `limit`.
    pub async fn deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        const SELECT: &str = "SELECT n.id, t.rule_key, t.service, t.endpoint, t.to_state, n.url, n.format, \
             n.status, n.created_unix_ns FROM alert_notifications n \
             JOIN alert_transitions t ON t.id = n.transition_id ORDER BY n.id DESC LIMIT $1";
        const ATTEMPTS: &str = "SELECT notification_id, attempt, at_unix_ns, outcome, http_status, error \
             FROM alert_delivery_attempts WHERE notification_id >= $1 ORDER BY id";
        type DeliveryTuple = (
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
        let rows: Vec<DeliveryTuple> = sqlx::query_as(SELECT)
            .bind(limit)
            .fetch_all(self.reader)
            .await?;
        let Some(oldest) = rows.iter().map(|row| row.0).min() else {
            return Ok(Vec::new());
        };
        let attempts: Vec<AttemptTuple> = sqlx::query_as(ATTEMPTS)
            .bind(oldest)
            .fetch_all(self.reader)
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
