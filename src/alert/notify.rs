//! Webhook notifications: the two payload formats, and the delivery task that drains the outbox
//! in the store with exponential backoff, recording every attempt.
//!
//! Like the collector's OTLP adapters, this is a wire edge: it builds JSON bodies (with
//! `serde_json::json!`, no `Serialize` types) and reads HTTP statuses.
//!
//! Invariant: a notification leaves the outbox only once delivered or given up; the in-memory
//! work is one bounded batch at a time, the backlog waits in the store.

use std::sync::{Arc, Once};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::budget::{AlertRules, WebhookFormat};
use super::evaluate::AlertState;
use crate::store::{DeliveryAttempt, DueNotification, LeaderRole, Store};
use crate::time::{now_unix_ns, rfc3339};

/// One transition that is sent to receivers.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    /// The rule's stable key.
    pub rule_key: String,
    /// `budget` or `slo`.
    pub kind: &'static str,
    /// `service.name`.
    pub service: String,
    /// Endpoint.
    pub endpoint: String,
    /// The metric key.
    pub metric: String,
    /// The limit.
    pub budget: f64,
    /// The value that decided.
    pub observed: Option<f64>,
    /// The window the value is computed over.
    pub window: Duration,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// When the alert started firing.
    pub starts_unix_ns: u64,
    /// When it resolved (resolved only).
    pub ends_unix_ns: Option<u64>,
    /// The SLO severity, or `warning` for a budget.
    pub severity: String,
    /// The sentence.
    pub summary: String,
}

/// A stable fingerprint of the alert's identity (FNV-1a), as Alertmanager gives each alert.
fn fingerprint(event: &AlertEvent) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [&event.rule_key, &event.service, &event.endpoint]
        .iter()
        .flat_map(|part| part.bytes().chain([0]))
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The zero time Alertmanager writes for an alert that has not ended.
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

/// The body for `format`.
pub fn payload(format: WebhookFormat, event: &AlertEvent) -> String {
    let window = humantime::format_duration(event.window).to_string();
    let value = match format {
        WebhookFormat::Json => json!({
            "version": "1",
            "status": event.state.as_str(),
            "alert": {
                "rule": event.rule_key,
                "kind": event.kind,
                "service": event.service,
                "endpoint": event.endpoint,
                "metric": event.metric,
                "budget": event.budget,
                "observed": event.observed,
                "window": window,
                "state": event.state.as_str(),
                "severity": event.severity,
                "since": rfc3339(event.starts_unix_ns),
                "ended": event.ends_unix_ns.map(rfc3339),
                "summary": event.summary,
            }
        }),
        WebhookFormat::Alertmanager => {
            let alertname = match event.kind {
                "slo" => "LatencySLOBurn",
                _ => "LatencyBudget",
            };
            let labels = json!({
                "alertname": alertname,
                "service": event.service,
                "endpoint": event.endpoint,
                "metric": event.metric,
                "severity": event.severity,
                "rule": event.rule_key,
            });
            let annotations = json!({
                "summary": event.summary,
                "budget": event.budget.to_string(),
                "observed": event.observed.map(|v| format!("{v:.3}")).unwrap_or_default(),
                "window": window,
            });
            json!({
                "version": "4",
                "groupKey": format!("{{}}:{{alertname=\"{alertname}\", rule=\"{}\"}}", event.rule_key),
                "truncatedAlerts": 0,
                "status": event.state.as_str(),
                "receiver": "bottleneck",
                "groupLabels": { "alertname": alertname, "rule": event.rule_key },
                "commonLabels": labels,
                "commonAnnotations": annotations,
                "externalURL": "",
                "alerts": [{
                    "status": event.state.as_str(),
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": rfc3339(event.starts_unix_ns),
                    "endsAt": event.ends_unix_ns.map_or_else(|| NOT_ENDED.to_owned(), rfc3339),
                    "generatorURL": "",
                    "fingerprint": fingerprint(event),
                }],
            })
        }
    };
    value.to_string()
}

/// Notifications handled per pass: the bounded in-memory part of the queue.
const BATCH: i64 = 32;
/// A receiver gets this long to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff never waits longer than this between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// With nothing due, look at the outbox again after this long (new notifications also wake
/// the task at once).
const IDLE_POLL: Duration = Duration::from_secs(5);

/// The wait before attempt `attempt + 1`, after `attempt` failures: `initial`, doubling.
pub fn backoff(initial: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    initial.saturating_mul(factor).min(MAX_BACKOFF)
}

/// reqwest is built without a default TLS provider; install ring's once per process.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Delivers queued notifications until `stop`.
pub async fn run(
    store: Store,
    rules: watch::Receiver<Arc<AlertRules>>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    install_crypto();
    // Redirects are not followed: the alert, and any secret in the configured URL's path,
    // would go to a place nobody configured. A 3xx is recorded as a failed delivery.
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            warn!(error = %err, "cannot build the webhook client; notifications stay queued");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let settings = rules.borrow().settings.clone();
        if !store.lead(LeaderRole::Alerts).await {
            // Another instance delivers; take over if it goes away.
            tokio::select! {
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            continue;
        }
        let due = match store.due_notifications(now_unix_ns(), BATCH).await {
            Ok(due) => due,
            Err(err) => {
                warn!(error = %err, "reading the notification outbox failed");
                Vec::new()
            }
        };
        for notification in &due {
            // Stop between deliveries, not within one: at most one request delays a shutdown,
            // and what was not attempted stays pending for the next start.
            if *stop.borrow() {
                return;
            }
            let attempt = deliver(
                &client,
                notification,
                settings.retry_initial,
                settings.max_attempts,
            )
            .await;
            if let Err(err) = store.record_delivery(&attempt).await {
                warn!(error = %err, notification = notification.id, "recording a delivery failed");
            }
        }
        if due.len() as i64 == BATCH {
            continue;
        }
        let wait = match store.next_notification_due().await {
            Ok(Some(next)) => {
                Duration::from_nanos(next.saturating_sub(now_unix_ns())).min(IDLE_POLL)
            }
            _ => IDLE_POLL,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

async fn deliver(
    client: &reqwest::Client,
    notification: &DueNotification,
    retry_initial: Duration,
    max_attempts: u32,
) -> DeliveryAttempt {
    let attempt = notification.attempts + 1;
    let result = client
        .post(&notification.url)
        .header("content-type", "application/json")
        .body(notification.payload.clone())
        .send()
        .await;
    let at_unix_ns = now_unix_ns();
    let (http_status, error, permanent) = match result {
        Ok(res) if res.status().is_success() => (Some(res.status().as_u16()), None, false),
        Ok(res) => {
            let status = res.status();
            // A redirect, or a 4xx other than timeout or rate limit, will not get better by
            // retrying.
            let permanent = status.is_redirection()
                || (status.is_client_error()
                    && status != reqwest::StatusCode::REQUEST_TIMEOUT
                    && status != reqwest::StatusCode::TOO_MANY_REQUESTS);
            (
                Some(status.as_u16()),
                Some(format!("receiver answered {status}")),
                permanent,
            )
        }
        // Without the URL: a webhook URL may carry a secret (a token in its path or query).
        Err(err) => (None, Some(format!("{}", err.without_url())), false),
    };
    let outcome = if error.is_none() {
        info!(notification = notification.id, attempt, "webhook delivered");
        "delivered"
    } else if permanent || attempt >= max_attempts {
        warn!(
            notification = notification.id,
            attempt,
            error = error.as_deref().unwrap_or_default(),
            "webhook delivery given up"
        );
        "failed"
    } else {
        warn!(
            notification = notification.id,
            attempt,
            error = error.as_deref().unwrap_or_default(),
            "webhook delivery failed; will retry"
        );
        "retry"
    };
    DeliveryAttempt {
        notification_id: notification.id,
        attempt,
        at_unix_ns,
        outcome: outcome.to_owned(),
        http_status,
        error,
        next_attempt_unix_ns: at_unix_ns
            .saturating_add(backoff(retry_initial, attempt).as_nanos() as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: AlertState) -> AlertEvent {
        AlertEvent {
            rule_key: "budget auth POST /login p95_ms 5m".into(),
            kind: "budget",
            service: "auth".into(),
            endpoint: "POST /login".into(),
            metric: "p95_ms".into(),
            budget: 200.0,
            observed: Some(350.0),
            window: Duration::from_secs(300),
            state,
            starts_unix_ns: 1_700_000_000_000_000_000,
            ends_unix_ns: (state == AlertState::Resolved).then_some(1_700_000_600_000_000_000),
            severity: "warning".into(),
            summary: "p95 350 ms > 200 ms budget".into(),
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let initial = Duration::from_secs(1);
        assert_eq!(backoff(initial, 1), Duration::from_secs(1));
        assert_eq!(backoff(initial, 2), Duration::from_secs(2));
        assert_eq!(backoff(initial, 4), Duration::from_secs(8));
        assert_eq!(backoff(initial, 40), MAX_BACKOFF);
    }

    #[test]
    fn alertmanager_payload_has_the_receiver_fields() {
        let body: serde_json::Value = serde_json::from_str(&payload(
            WebhookFormat::Alertmanager,
            &event(AlertState::Resolved),
        ))
        .unwrap();
        assert_eq!(body["version"], "4");
        assert_eq!(body["status"], "resolved");
        let alert = &body["alerts"][0];
        assert_eq!(alert["status"], "resolved");
        assert_eq!(alert["labels"]["alertname"], "LatencyBudget");
        assert_eq!(alert["labels"]["service"], "auth");
        assert_eq!(
            alert["annotations"]["summary"],
            "p95 350 ms > 200 ms budget"
        );
        assert!(
            alert["startsAt"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:13:20")
        );
        assert!(
            alert["endsAt"]
                .as_str()
                .unwrap()
                .starts_with("2023-11-14T22:23:20")
        );
        assert_eq!(alert["fingerprint"].as_str().unwrap().len(), 16);

        let firing: serde_json::Value = serde_json::from_str(&payload(
            WebhookFormat::Alertmanager,
            &event(AlertState::Firing),
        ))
        .unwrap();
        assert_eq!(firing["alerts"][0]["endsAt"], NOT_ENDED);
        assert_eq!(
            firing["alerts"][0]["fingerprint"], alert["fingerprint"],
            "one alert, one fingerprint"
        );
    }

    #[test]
    fn json_payload_mirrors_the_api() {
        let body: serde_json::Value =
            serde_json::from_str(&payload(WebhookFormat::Json, &event(AlertState::Firing)))
                .unwrap();
        assert_eq!(body["status"], "firing");
        assert_eq!(body["alert"]["metric"], "p95_ms");
        assert_eq!(body["alert"]["budget"], 200.0);
        assert_eq!(body["alert"]["observed"], 350.0);
        assert_eq!(body["alert"]["window"], "5m");
        assert_eq!(body["alert"]["ended"], serde_json::Value::Null);
    }
}
