//! `/alerts`: every latency budget and SLO on every endpoint it matches, with its state, the
//! observed value against the limit, what moved, the history of transitions, and the webhook
//! deliveries with each attempt. Also the budget badges of the overview and endpoint pages.
//!
//! Invariant: shows only what `read::alerts` returns (the evaluation and deliveries
//! `GET /api/v1/alerts` serves).

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};

use super::{Chrome, PageError, PageParams, encode, endpoint_href, fmt_calls, fmt_count, fmt_ms};
use crate::alert::AlertView;
use crate::read;
use crate::read::alerts::{AlertWithHistory, Alerts};
use crate::time::rfc3339;
use crate::web::AppState;
use crate::web::api::present::redact_url;
use crate::web::units::round3;

/// Deliveries the page lists, newest first.
const DELIVERIES_SHOWN: i64 = 50;

/// How urgent a state is: the badge of an endpoint with several alerts shows the worst.
fn urgency(state: &str) -> u8 {
    match state {
        "firing" => 3,
        "pending" => 2,
        "resolved" => 1,
        _ => 0,
    }
}

/// `p95`, `db`, `DB calls / request`, `burn rate`: a metric key in words.
fn metric_label(metric: &str) -> String {
    match metric {
        "burn_rate" => "burn rate".to_owned(),
        "db_calls_per_request" => "DB calls / request".to_owned(),
        "mean_ms" => "mean".to_owned(),
        other => other.strip_suffix("_ms").unwrap_or(other).to_owned(),
    }
}

/// A metric's value as the summary formats it.
fn metric_value(metric: &str, value: f64) -> String {
    if metric == "burn_rate" {
        format!("{value:.1}×")
    } else if metric == "db_calls_per_request" {
        fmt_calls(value)
    } else {
        fmt_ms(value)
    }
}

/// `2024-05-01T14:05:30.123Z` as `05-01 14:05:30`.
fn short_time(at: &str) -> String {
    match (at.get(5..10), at.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}"),
        _ => at.to_owned(),
    }
}

/// An endpoint's budget state, for the overview column and the endpoint page.
pub struct BudgetBadge {
    /// The worst state of its alerts.
    pub state: &'static str,
    /// Every alert on the endpoint: `p95 350 ms / 200 ms: firing`.
    pub title: String,
    pub href: String,
}

/// One badge per alert of an endpoint, for the endpoint page.
pub struct AlertBadge {
    pub state: &'static str,
    pub label: String,
    pub href: String,
}

fn alert_line(alert: &AlertView) -> String {
    let observed = alert.observed.map_or("no data".to_owned(), |v| {
        metric_value(&alert.metric, round3(v))
    });
    format!(
        "{} {} / {}: {}",
        metric_label(&alert.metric),
        observed,
        metric_value(&alert.metric, alert.budget),
        alert.status.state.as_str()
    )
}

fn alerts_href(service: &str, endpoint: &str) -> String {
    format!(
        "/alerts?service={}&endpoint={}",
        encode(service),
        encode(endpoint)
    )
}

/// The worst state per (service, endpoint) that has a budget or SLO.
pub fn budget_badges(alerts: &Alerts) -> HashMap<(String, String), BudgetBadge> {
    let mut badges: HashMap<(String, String), BudgetBadge> = HashMap::new();
    for AlertWithHistory { alert, .. } in &alerts.alerts {
        let key = (alert.service.clone(), alert.endpoint.clone());
        let line = alert_line(alert);
        let state = alert.status.state.as_str();
        match badges.get_mut(&key) {
            Some(badge) => {
                if urgency(state) > urgency(badge.state) {
                    badge.state = state;
                }
                badge.title.push_str("; ");
                badge.title.push_str(&line);
            }
            None => {
                badges.insert(
                    key,
                    BudgetBadge {
                        state,
                        title: line,
                        href: alerts_href(&alert.service, &alert.endpoint),
                    },
                );
            }
        }
    }
    badges
}

/// The alerts of one endpoint as badges.
pub fn endpoint_badges(alerts: &Alerts, service: &str, endpoint: &str) -> Vec<AlertBadge> {
    alerts
        .alerts
        .iter()
        .map(|with_history| &with_history.alert)
        .filter(|a| a.service == service && a.endpoint == endpoint)
        .map(|a| AlertBadge {
            state: a.status.state.as_str(),
            label: alert_line(a),
            href: alerts_href(service, endpoint),
        })
        .collect()
}

pub struct TransitionRow {
    pub at: String,
    pub from: String,
    pub to: String,
    pub observed: String,
    pub summary: String,
}

pub struct BurnRow {
    pub severity: String,
    pub windows: String,
    pub factor: String,
    pub long_burn: String,
    pub short_burn: String,
    pub firing: bool,
}

pub struct AlertRow {
    pub state: &'static str,
    pub kind: &'static str,
    pub rule: String,
    pub service: String,
    pub endpoint: String,
    pub endpoint_href: String,
    pub metric: String,
    pub observed: String,
    pub budget: String,
    pub over: bool,
    /// The observed value's bar: width 0..1000 of a scale where the budget sits at 2/3.
    pub meter_width: String,
    pub window: String,
    pub requests: String,
    pub since: String,
    pub summary: String,
    pub slo: Option<String>,
    pub burn: Vec<BurnRow>,
    pub history: Vec<TransitionRow>,
    /// `1 transition`, `3 transitions`.
    pub history_label: String,
}

/// Where the budget sits on an observed-value bar (of 1000 units): at two thirds, so a value up
/// to 1.5× the budget fits.
pub const METER_BUDGET_X: f64 = 666.7;

fn alert_row(with_history: &AlertWithHistory, window_query: &str) -> AlertRow {
    let (alert, history) = (&with_history.alert, &with_history.history);
    let observed = alert.observed.map(round3);
    let ratio = observed
        .filter(|_| alert.budget > 0.0)
        .map_or(0.0, |v| v / alert.budget);
    AlertRow {
        history_label: match history.len() {
            1 => "1 transition".to_owned(),
            n => format!("{n} transitions"),
        },
        state: alert.status.state.as_str(),
        kind: alert.kind.as_str(),
        rule: alert.rule_key.clone(),
        service: alert.service.clone(),
        endpoint: alert.endpoint.clone(),
        endpoint_href: endpoint_href(&alert.service, &alert.endpoint, window_query),
        metric: metric_label(&alert.metric),
        observed: observed.map_or("no data".to_owned(), |v| metric_value(&alert.metric, v)),
        budget: metric_value(&alert.metric, alert.budget),
        over: ratio > 1.0,
        meter_width: format!("{:.1}", (ratio * METER_BUDGET_X).clamp(0.0, 1000.0)),
        window: humantime::format_duration(alert.window).to_string(),
        requests: fmt_count(alert.requests),
        since: short_time(&rfc3339(alert.status.since_unix_ns)),
        summary: alert.summary.clone(),
        slo: alert.slo.map(|(objective, threshold)| {
            format!(
                "{}% of requests within {}",
                (objective * 1000.0).round() / 10.0,
                fmt_ms(threshold)
            )
        }),
        burn: alert
            .burn
            .iter()
            .map(|b| BurnRow {
                severity: b.severity.clone(),
                windows: format!(
                    "{} / {}",
                    humantime::format_duration(b.long),
                    humantime::format_duration(b.short)
                ),
                factor: format!("{:.1}×", round3(b.factor)),
                long_burn: format!("{:.2}×", round3(b.long_burn)),
                short_burn: format!("{:.2}×", round3(b.short_burn)),
                firing: b.firing,
            })
            .collect(),
        history: history
            .iter()
            .map(|t| TransitionRow {
                at: short_time(&rfc3339(t.at_unix_ns)),
                from: t.from_state.clone(),
                to: t.to_state.clone(),
                observed: t
                    .observed
                    .map_or(String::new(), |v| metric_value(&alert.metric, round3(v))),
                summary: t.summary.clone(),
            })
            .collect(),
    }
}

pub struct AttemptRow {
    pub attempt: u32,
    pub at: String,
    pub outcome: String,
    pub http_status: String,
    pub error: String,
}

pub struct DeliveryRow {
    pub id: i64,
    pub created: String,
    pub service: String,
    pub endpoint: String,
    pub state: String,
    pub url: String,
    pub format: String,
    pub status: String,
    pub attempts: Vec<AttemptRow>,
}

pub struct StateCount {
    pub state: &'static str,
    pub count: usize,
}

#[derive(Template, WebTemplate)]
#[template(path = "alerts.html")]
pub struct AlertsPage {
    pub chrome: Chrome,
    pub rows: Vec<AlertRow>,
    pub counts: Vec<StateCount>,
    pub evaluated_at: Option<String>,
    pub interval: String,
    pub deliveries: Vec<DeliveryRow>,
    /// The service and endpoint the list is filtered to, if any.
    pub filter: Option<String>,
    pub all_href: String,
}

/// `GET /alerts`, optionally `?service=..&endpoint=..`.
pub async fn alerts_get(
    State(state): State<AppState>,
    Query(params): Query<PageParams>,
) -> Result<AlertsPage, PageError> {
    // Validated like every page's window, though alerts have their own windows.
    params.window()?;
    let window_query = params.window_query();
    let alerts = read::alerts::alerts(&state.store).await?;
    let deliveries = read::alerts::deliveries(&state.store, DELIVERIES_SHOWN).await?;
    let (service, endpoint) = (params.service(), params.endpoint());
    let wanted = |s: &str, e: &str| {
        service.is_none_or(|want| want == s) && endpoint.is_none_or(|want| want == e)
    };
    let mut alert_list: Vec<&AlertWithHistory> = alerts
        .alerts
        .iter()
        .filter(|a| wanted(&a.alert.service, &a.alert.endpoint))
        .collect();
    let state_of = |a: &AlertWithHistory| a.alert.status.state.as_str();
    alert_list.sort_by(|a, b| {
        let (a, b) = (&a.alert, &b.alert);
        urgency(b.status.state.as_str())
            .cmp(&urgency(a.status.state.as_str()))
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.endpoint.cmp(&b.endpoint))
            .then_with(|| a.rule_key.cmp(&b.rule_key))
    });
    let counts = ["firing", "pending", "resolved", "ok"]
        .into_iter()
        .map(|state| StateCount {
            state,
            count: alert_list.iter().filter(|a| state_of(a) == state).count(),
        })
        .collect();
    let filter = match (service, endpoint) {
        (Some(s), Some(e)) => Some(format!("{s} {e}")),
        (Some(s), None) => Some(s.to_owned()),
        (None, Some(e)) => Some(e.to_owned()),
        (None, None) => None,
    };
    let keep = [("service", service), ("endpoint", endpoint)]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?.to_owned())))
        .collect();
    let chrome = Chrome::new("alerts", "/alerts", &params, None, keep);
    Ok(AlertsPage {
        chrome,
        rows: alert_list
            .iter()
            .map(|a| alert_row(a, &window_query))
            .collect(),
        counts,
        evaluated_at: alerts
            .evaluated_at_unix_ns
            .map(|at| short_time(&rfc3339(at))),
        interval: humantime::format_duration(state.alerts.rules().settings.interval).to_string(),
        deliveries: deliveries
            .into_iter()
            .filter(|d| wanted(&d.service, &d.endpoint))
            .map(|d| DeliveryRow {
                id: d.id,
                created: short_time(&rfc3339(d.created_unix_ns)),
                url: redact_url(&d.url),
                service: d.service,
                endpoint: d.endpoint,
                state: d.to_state,
                format: d.format,
                status: d.status,
                attempts: d
                    .attempts
                    .into_iter()
                    .map(|a| AttemptRow {
                        attempt: a.attempt,
                        at: short_time(&rfc3339(a.at_unix_ns)),
                        outcome: a.outcome,
                        http_status: a.http_status.map_or(String::new(), |s| s.to_string()),
                        error: a.error.unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        filter,
        all_href: format!("/alerts?{window_query}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_in_words() {
        assert_eq!(metric_label("p95_ms"), "p95");
        assert_eq!(metric_label("db_calls_per_request"), "DB calls / request");
        assert_eq!(metric_value("burn_rate", 14.4), "14.4×");
        assert_eq!(metric_value("p95_ms", 350.0), "350 ms");
        assert!(urgency("firing") > urgency("pending"));
    }
}
