//! What alerting keeps: the state of each alert instance, every transition, and the webhook
//! outbox with every delivery attempt.
//!
//! A transition and the notifications it causes are committed together, and a notification
//! leaves `pending` only once it was delivered or given up: a restart neither loses nor re-sends.

use super::{Backend, Store, StoreError};

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

impl Store {
    /// Every stored alert state.
    pub async fn alert_states(&self) -> Result<Vec<StoredAlert>, StoreError> {
        dispatch!(self.alert_states())
    }

    /// Commits one evaluation's states, transitions and notifications atomically; returns the
    /// ids of the notifications queued as pending.
    pub async fn commit_alerts(&self, commit: &AlertCommit) -> Result<Vec<i64>, StoreError> {
        dispatch!(self.commit_alerts(commit))
    }

    /// The id of the last regression event already turned into notifications; 0 before any.
    pub async fn regressions_notified_through(&self) -> Result<i64, StoreError> {
        dispatch!(self.regressions_notified_through())
    }

    /// The sequence number of the last regression resolution already turned into
    /// notifications; 0 before any.
    pub async fn regression_resolutions_notified_through(&self) -> Result<i64, StoreError> {
        dispatch!(self.regression_resolutions_notified_through())
    }

    /// The newest transitions, newest first, at most `limit`.
    pub async fn alert_transitions(&self, limit: i64) -> Result<Vec<AlertTransition>, StoreError> {
        dispatch!(self.alert_transitions(limit))
    }

    /// Pending notifications due at `now`, oldest first, at most `limit`.
    pub async fn due_notifications(
        &self,
        now_unix_ns: u64,
        limit: i64,
    ) -> Result<Vec<DueNotification>, StoreError> {
        dispatch!(self.due_notifications(now_unix_ns, limit))
    }

    /// When the next pending notification is due, if any is.
    pub async fn next_notification_due(&self) -> Result<Option<u64>, StoreError> {
        dispatch!(self.next_notification_due())
    }

    /// Records an attempt and moves its notification on (delivered, retry later, or failed).
    pub async fn record_delivery(&self, attempt: &DeliveryAttempt) -> Result<(), StoreError> {
        dispatch!(self.record_delivery(attempt))
    }

    /// The newest notifications with their attempts, newest first, at most `limit`.
    pub async fn deliveries(&self, limit: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
        dispatch!(self.deliveries(limit))
    }
}
