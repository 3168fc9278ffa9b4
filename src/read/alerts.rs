//! Alerts as every instance serves them: the last stored evaluation, each alert with its newest
//! transitions, and the webhook deliveries with their attempts.
//!
//! Invariant: reads the stored evaluation, never evaluates.

use std::collections::HashMap;

use crate::alert::{self, AlertView};
use crate::store::{AlertTransition, DeliveryRecord, Store, StoreError};

/// Transitions read to fill the per-alert histories.
const HISTORY_SCAN: i64 = 2000;

/// An alert of the last evaluation with its newest transitions.
#[derive(Debug, Clone)]
pub struct AlertWithHistory {
    /// The alert as evaluated.
    pub alert: AlertView,
    /// Newest first, at most `alert::HISTORY_PER_ALERT`.
    pub history: Vec<AlertTransition>,
}

/// The last evaluation.
#[derive(Debug, Clone)]
pub struct Alerts {
    /// When it ran; `None` before the first evaluation.
    pub evaluated_at_unix_ns: Option<u64>,
    /// Most urgent first.
    pub alerts: Vec<AlertWithHistory>,
}

/// The last evaluation, with each alert's newest transitions.
pub async fn alerts(store: &Store) -> Result<Alerts, StoreError> {
    let snapshot = alert::last_evaluation(store).await?;
    let mut history: HashMap<(String, String, String), Vec<AlertTransition>> = HashMap::new();
    for transition in store.alert_transitions(HISTORY_SCAN).await? {
        let list = history
            .entry((
                transition.rule_key.clone(),
                transition.service.clone(),
                transition.endpoint.clone(),
            ))
            .or_default();
        if list.len() < alert::HISTORY_PER_ALERT {
            list.push(transition);
        }
    }
    Ok(Alerts {
        evaluated_at_unix_ns: snapshot.evaluated_at_unix_ns,
        alerts: snapshot
            .alerts
            .into_iter()
            .map(|view| {
                let key = (
                    view.rule_key.clone(),
                    view.service.clone(),
                    view.endpoint.clone(),
                );
                AlertWithHistory {
                    history: history.remove(&key).unwrap_or_default(),
                    alert: view,
                }
            })
            .collect(),
    })
}

/// The newest notifications with every attempt.
pub async fn deliveries(store: &Store, limit: i64) -> Result<Vec<DeliveryRecord>, StoreError> {
    store.deliveries(limit).await
}
