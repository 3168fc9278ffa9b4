//! Latency budgets and SLOs: evaluated on a fixed interval from the rollups, with states and the
//! last evaluation kept in the store and transitions sent to webhooks.
//!
//! - `budget`: the config tables (`[[budget]]`, `[[slo]]`, `[[webhook]]`, `[alerts]`), validated;
//! - `burn`: error-budget burn rates (pure);
//! - `evaluate`: the state machine and the sentences (pure);
//! - `notify`: webhook payloads and the delivery task;
//! - this module: the evaluation task, [`last_evaluation`] (what every instance serves), and
//!   the [`AlertHandle`] the web layer reloads.
//!
//! Invariant: reads aggregates only from rollups (never raw spans), and every state change is
//! committed with its notifications before anything is sent. The rule set is swapped whole on
//! reload, and a rule set that failed to parse never replaces the one in force. With several
//! instances on one database, only the holder of the alerts role evaluates and delivers, and
//! every instance serves the evaluation it stored, so all of them answer alike.

pub mod budget;
pub mod burn;
pub mod evaluate;
pub mod notify;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use self::budget::{AlertRules, Observed};
use self::burn::{BurnCheck, Counts};
use self::evaluate::{AlertState, Status};
use self::notify::AlertEvent;
use crate::analysis::aggregate::{Rollup, summarize};
use crate::store::{
    AlertCommit, AlertEvaluation, AlertTransition, EndpointRef, EvaluatedAlert, EvaluatedBurn,
    LeaderRole, NewNotification, RegressionRecord, RegressionResolution, RollupKey, Store,
    StoreError, StoredAlert, Window,
};
use crate::time::now_unix_ns;

/// Previous-hour comparisons look this far back from the start of the window.
const COMPARE_WITH: Duration = Duration::from_secs(3600);
/// Transitions the API shows per alert.
pub const HISTORY_PER_ALERT: usize = 10;

/// Budget or SLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// A `[[budget]]` table.
    Budget,
    /// An `[[slo]]` table.
    Slo,
}

impl RuleKind {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Budget => "budget",
            RuleKind::Slo => "slo",
        }
    }

    /// The kind an API name stands for; a budget unless it names an SLO.
    fn of(name: &str) -> Self {
        if name == RuleKind::Slo.as_str() {
            RuleKind::Slo
        } else {
            RuleKind::Budget
        }
    }
}

/// One alert instance as last evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    /// The rule's stable key.
    pub rule_key: String,
    /// Budget or SLO.
    pub kind: RuleKind,
    /// `service.name`.
    pub service: String,
    /// Endpoint.
    pub endpoint: String,
    /// The metric key (`p95_ms`, ...; `burn_rate` for an SLO).
    pub metric: String,
    /// The limit (for an SLO: the burn rate that fires).
    pub budget: f64,
    /// The value (for an SLO: the long window's burn rate).
    pub observed: Option<f64>,
    /// The window of the value.
    pub window: Duration,
    /// Requests in the window.
    pub requests: u64,
    /// State and since when.
    pub status: Status,
    /// One sentence.
    pub summary: String,
    /// For an SLO: every window pair.
    pub burn: Vec<BurnCheck>,
    /// For an SLO: its objective and threshold.
    pub slo: Option<(f64, f64)>,
}

/// The result of the last evaluation.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When it ran; `None` before the first evaluation.
    pub evaluated_at_unix_ns: Option<u64>,
    /// Every alert instance, most urgent first.
    pub alerts: Vec<AlertView>,
}

/// What a reload put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// `[[budget]]` tables.
    pub budgets: usize,
    /// `[[slo]]` tables.
    pub slos: usize,
    /// `[[webhook]]` tables.
    pub webhooks: usize,
}

/// The file a reload reads again, and the reader: the config file's own, which checks the whole
/// file as start-up did, while alerting knows only its tables.
#[derive(Debug, Clone)]
pub struct RulesFile {
    /// The config file.
    pub path: PathBuf,
    /// Reads the rules from it.
    pub read: fn(&Path) -> anyhow::Result<AlertRules>,
}

/// Shared between the evaluation task, the notifier and the web layer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AlertHandle {
    rules: watch::Sender<Arc<AlertRules>>,
    config_file: Option<RulesFile>,
    wake_notifier: Arc<Notify>,
}

impl AlertHandle {
    /// A handle with `rules` in force, reloadable from `config_file`.
    pub fn new(rules: AlertRules, config_file: Option<RulesFile>) -> Self {
        Self {
            rules: watch::Sender::new(Arc::new(rules)),
            config_file,
            wake_notifier: Arc::new(Notify::new()),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<AlertRules> {
        self.rules.borrow().clone()
    }

    /// Re-reads the config file and puts its rules in force; on any error the old rules stay.
    pub fn reload(&self) -> anyhow::Result<ReloadSummary> {
        let Some(file) = &self.config_file else {
            anyhow::bail!("the server was started without --config: there is no file to reload");
        };
        let rules = (file.read)(&file.path)?;
        let summary = ReloadSummary {
            budgets: rules.budgets.len(),
            slos: rules.slos.len(),
            webhooks: rules.webhooks.len(),
        };
        self.rules.send_replace(Arc::new(rules));
        info!(
            budgets = summary.budgets,
            slos = summary.slos,
            webhooks = summary.webhooks,
            "alert rules reloaded"
        );
        Ok(summary)
    }
}

/// The last evaluation stored by whichever instance evaluated it: what `/alerts`, the API and
/// the badges show on every instance.
pub async fn last_evaluation(store: &Store) -> Result<Snapshot, StoreError> {
    let stored = store.alert_evaluation().await?;
    Ok(Snapshot {
        evaluated_at_unix_ns: stored.evaluated_at_unix_ns,
        alerts: stored.alerts.into_iter().filter_map(view_of).collect(),
    })
}

/// A stored alert as a view; `None` for a state this build does not know.
fn view_of(evaluated: EvaluatedAlert) -> Option<AlertView> {
    let stored = evaluated.alert;
    Some(AlertView {
        kind: RuleKind::of(&stored.kind),
        status: Status {
            state: AlertState::parse(&stored.state)?,
            since_unix_ns: stored.since_unix_ns,
        },
        window: Duration::from_nanos(evaluated.window_ns),
        burn: evaluated
            .burn
            .into_iter()
            .map(|burn| BurnCheck {
                severity: burn.severity,
                long: Duration::from_nanos(burn.long_ns),
                short: Duration::from_nanos(burn.short_ns),
                factor: burn.factor,
                long_burn: burn.long_burn,
                short_burn: burn.short_burn,
                short_requests: burn.short_requests,
                firing: burn.firing,
            })
            .collect(),
        rule_key: stored.rule_key,
        service: stored.service,
        endpoint: stored.endpoint,
        metric: stored.metric,
        budget: stored.budget,
        observed: stored.observed,
        requests: evaluated.requests,
        summary: stored.summary,
        slo: evaluated.slo,
    })
}

/// A view's state as a state row holds it.
fn state_row(view: &AlertView) -> StoredAlert {
    StoredAlert {
        rule_key: view.rule_key.clone(),
        service: view.service.clone(),
        endpoint: view.endpoint.clone(),
        kind: view.kind.as_str().to_owned(),
        metric: view.metric.clone(),
        state: view.status.state.as_str().to_owned(),
        since_unix_ns: view.status.since_unix_ns,
        observed: view.observed,
        budget: view.budget,
        summary: view.summary.clone(),
    }
}

/// A view as it is stored.
fn stored_view(view: &AlertView) -> EvaluatedAlert {
    EvaluatedAlert {
        alert: state_row(view),
        window_ns: view.window.as_nanos() as u64,
        requests: view.requests,
        slo: view.slo,
        burn: view
            .burn
            .iter()
            .map(|check| EvaluatedBurn {
                severity: check.severity.clone(),
                long_ns: check.long.as_nanos() as u64,
                short_ns: check.short.as_nanos() as u64,
                factor: check.factor,
                long_burn: check.long_burn,
                short_burn: check.short_burn,
                short_requests: check.short_requests,
                firing: check.firing,
            })
            .collect(),
    }
}

/// Runs the evaluation and the notifier until `stop` turns true.
pub async fn run(store: Store, handle: AlertHandle, stop: watch::Receiver<bool>) {
    let notifier = tokio::spawn(notify::run(
        store.clone(),
        handle.rules.subscribe(),
        Arc::clone(&handle.wake_notifier),
        stop.clone(),
    ));
    evaluate_loop(store, handle, stop).await;
    let _ = notifier.await;
}

async fn evaluate_loop(store: Store, handle: AlertHandle, mut stop: watch::Receiver<bool>) {
    let mut rules_rx = handle.rules.subscribe();
    loop {
        let rules = rules_rx.borrow_and_update().clone();
        // With several instances on one database, one of them (the holder of the alerts role)
        // evaluates, stores the evaluation and queues notifications; the others serve what it
        // stored and try to take the role each interval.
        if store.lead(LeaderRole::Alerts).await {
            match evaluate(&store, &rules, now_unix_ns()).await {
                Ok(0) => {}
                Ok(_) => handle.wake_notifier.notify_one(),
                Err(err) => warn!(error = %err, "alert evaluation failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(rules.settings.interval) => {}
            changed = rules_rx.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

fn window_ending(now_unix_ns: u64, length: Duration) -> Window {
    Window {
        from_unix_ns: now_unix_ns.saturating_sub(length.as_nanos() as u64),
        to_unix_ns: now_unix_ns,
    }
}

/// Merges the rollup rows of one endpoint.
fn merge(rows: Vec<(RollupKey, Rollup)>) -> Option<Rollup> {
    let mut rows = rows.into_iter().map(|(_, rollup)| rollup);
    let mut acc = rows.next()?;
    for rollup in rows {
        acc.merge(&rollup);
    }
    Some(acc)
}

/// What each of `ids` did in `window`, from the rollups; endpoints without requests are absent.
/// One query per endpoint: a sketch decodes to tens of KiB, so only one endpoint's rows are in
/// memory at a time, however many endpoints a glob matches.
async fn observed(
    store: &Store,
    window: Window,
    ids: &[i64],
) -> Result<HashMap<i64, Observed>, StoreError> {
    let mut out = HashMap::new();
    for id in ids {
        let rows = store.rollups(window, Some(&[*id])).await?;
        if let Some(stats) = merge(rows).and_then(|rollup| summarize(&rollup, "")) {
            out.insert(*id, Observed::from_stats(&stats));
        }
    }
    Ok(out)
}

/// Every endpoint with requests in `window`, with what it did: what `check --database-url`
/// judges budgets on.
pub async fn observed_endpoints(
    store: &Store,
    window: Window,
) -> Result<Vec<(EndpointRef, Observed)>, StoreError> {
    let endpoints = store.endpoints().await?;
    let ids: Vec<i64> = endpoints.iter().map(|e| e.id).collect();
    let mut observed = observed(store, window, &ids).await?;
    Ok(endpoints
        .into_iter()
        .filter_map(|endpoint| {
            let it = observed.remove(&endpoint.id)?;
            Some((endpoint, it))
        })
        .collect())
}

/// Good and total requests of one endpoint in windows of each of `lengths` ending at `now`:
/// the longest window is read once, and each row counts toward every window its minute is in.
async fn counts(
    store: &Store,
    now: u64,
    lengths: &BTreeSet<Duration>,
    endpoint_id: i64,
    threshold_ns: u64,
) -> Result<HashMap<Duration, Counts>, StoreError> {
    let mut out: HashMap<Duration, Counts> = lengths
        .iter()
        .map(|length| (*length, Counts::default()))
        .collect();
    let Some(longest) = lengths.last() else {
        return Ok(out);
    };
    // Windows up to six hours count minute rows, exact to the minute; longer ones (an SLO's
    // month) count hourly rows for their whole hours, off by at most the hour at their start.
    const MINUTE_EXACT_UP_TO: Duration = Duration::from_secs(6 * 3600);
    let longest_short = lengths
        .iter()
        .filter(|length| **length <= MINUTE_EXACT_UP_TO)
        .max();
    let minute_rows = match longest_short {
        Some(length) => {
            store
                .minute_rollups(window_ending(now, *length), Some(&[endpoint_id]))
                .await?
        }
        None => Vec::new(),
    };
    let covering_rows = if *longest > MINUTE_EXACT_UP_TO {
        store
            .rollups(window_ending(now, *longest), Some(&[endpoint_id]))
            .await?
    } else {
        Vec::new()
    };
    for length in lengths {
        let first_minute = window_ending(now, *length).minutes().0;
        let rows = if *length <= MINUTE_EXACT_UP_TO {
            &minute_rows
        } else {
            &covering_rows
        };
        let acc = out.entry(*length).or_default();
        for (_, rollup) in rows.iter().filter(|(key, _)| key.minute >= first_minute) {
            acc.total += rollup.requests;
            acc.good += rollup.sketch.count_at_most_ns(threshold_ns);
        }
    }
    Ok(out)
}

type InstanceKey = (String, String, String);

/// Collects one evaluation's views and writes.
struct Tick<'a> {
    rules: &'a AlertRules,
    now: u64,
    stored: HashMap<InstanceKey, StoredAlert>,
    /// Since when the alerts that were `ok` in the last evaluation have been: `ok` is not
    /// stored until an alert first leaves it, and `since` should not restart every tick.
    ok_since: HashMap<InstanceKey, u64>,
    views: Vec<AlertView>,
    commit: AlertCommit,
}

impl Tick<'_> {
    fn previous(&self, key: &InstanceKey) -> Option<Status> {
        match self.stored.get(key) {
            Some(stored) => Some(Status {
                state: AlertState::parse(&stored.state)?,
                since_unix_ns: stored.since_unix_ns,
            }),
            None => self.ok_since.get(key).map(|since| Status {
                state: AlertState::Ok,
                since_unix_ns: *since,
            }),
        }
    }

    fn has_stored(&self, rule_key: &str, endpoint: &EndpointRef) -> bool {
        self.stored.contains_key(&(
            rule_key.to_owned(),
            endpoint.service.clone(),
            endpoint.endpoint.clone(),
        ))
    }

    /// Records the view, and the transition with its notifications when the state changed.
    fn settle(&mut self, view: AlertView, previous: Option<Status>, severity: &str) {
        self.transition(&view, previous, severity);
        self.views.push(view);
    }

    /// A firing alert whose rule left the config: resolved, so receivers are not left with an
    /// alert that never ends. Its state row is forgotten with the rule.
    fn retire(&mut self, stored: &StoredAlert) {
        let Some(previous) = AlertState::parse(&stored.state).map(|state| Status {
            state,
            since_unix_ns: stored.since_unix_ns,
        }) else {
            return;
        };
        if previous.state != AlertState::Firing {
            return;
        }
        let view = AlertView {
            rule_key: stored.rule_key.clone(),
            kind: RuleKind::of(&stored.kind),
            service: stored.service.clone(),
            endpoint: stored.endpoint.clone(),
            metric: stored.metric.clone(),
            budget: stored.budget,
            observed: None,
            window: Duration::ZERO,
            requests: 0,
            status: Status {
                state: AlertState::Resolved,
                since_unix_ns: self.now,
            },
            summary: "the rule was removed from the configuration".to_owned(),
            burn: Vec::new(),
            slo: None,
        };
        self.transition(&view, Some(previous), "warning");
        self.commit.states.retain(|s| {
            (&s.rule_key, &s.service, &s.endpoint)
                != (&view.rule_key, &view.service, &view.endpoint)
        });
    }

    /// Regression events raised or resolved since the last evaluation go out through the same
    /// webhooks as budget alerts, each once: the cursors (event id for raises, resolution
    /// sequence for resolutions) are committed with the notifications they caused.
    async fn regressions(&mut self, store: &Store) -> Result<(), StoreError> {
        /// Events turned into notifications per evaluation; a backlog drains over several.
        const BATCH: i64 = 100;
        let mut raised_through = store.regressions_notified_through().await?;
        let raised = store.regressions(raised_through, BATCH, None).await?;
        if let Some(last) = raised.last() {
            raised_through = last.id;
            self.commit.regressions_notified_through = Some(last.id);
        }
        for event in &raised {
            self.regression_notice(event, None);
        }
        let through = store.regression_resolutions_notified_through().await?;
        // A resolution goes out after its raise: one whose raise is still in the backlog waits.
        let resolved: Vec<RegressionRecord> = store
            .regression_resolutions(through, BATCH)
            .await?
            .into_iter()
            .take_while(|event| event.id <= raised_through)
            .collect();
        if let Some(last) = resolved.last().and_then(|e| e.resolution.as_ref()) {
            self.commit.regression_resolutions_notified_through = Some(last.seq);
        }
        for event in &resolved {
            self.regression_notice(event, event.resolution.as_ref());
        }
        Ok(())
    }

    /// The transition and notifications of a regression event: firing when raised, resolved
    /// with its `resolution`. Both carry the event's metric, so a receiver matches them up.
    fn regression_notice(
        &mut self,
        event: &RegressionRecord,
        resolution: Option<&RegressionResolution>,
    ) {
        let rule_key = format!("regression {} -> {}", event.baseline, event.candidate);
        let (from, to, at, observed_ns, summary) = match resolution {
            None => (
                AlertState::Ok,
                AlertState::Firing,
                event.detected_unix_ns,
                event.candidate_ns,
                &event.summary,
            ),
            Some(resolution) => (
                AlertState::Firing,
                AlertState::Resolved,
                resolution.resolved_unix_ns,
                resolution.candidate_ns,
                &resolution.summary,
            ),
        };
        let (baseline_ms, observed_ms) = (event.baseline_ns as f64 / 1e6, observed_ns as f64 / 1e6);
        info!(
            service = event.service,
            endpoint = event.endpoint,
            baseline = event.baseline,
            candidate = event.candidate,
            state = to.as_str(),
            summary = summary,
            "regression notified"
        );
        self.commit.transitions.push(AlertTransition {
            rule_key: rule_key.clone(),
            service: event.service.clone(),
            endpoint: event.endpoint.clone(),
            from_state: from.as_str().to_owned(),
            to_state: to.as_str().to_owned(),
            at_unix_ns: at,
            observed: Some(observed_ms),
            summary: summary.clone(),
        });
        let notification = AlertEvent {
            rule_key,
            kind: "regression",
            service: event.service.clone(),
            endpoint: event.endpoint.clone(),
            metric: format!("{}_ms", event.metric),
            budget: baseline_ms,
            observed: Some(observed_ms),
            window: Duration::ZERO,
            state: to,
            starts_unix_ns: event.detected_unix_ns,
            ends_unix_ns: resolution.map(|r| r.resolved_unix_ns),
            severity: "warning".to_owned(),
            summary: summary.clone(),
        };
        let transition = self.commit.transitions.len() - 1;
        for webhook in &self.rules.webhooks {
            self.commit.notifications.push(NewNotification {
                transition,
                url: webhook.url.clone(),
                format: webhook.format.as_str().to_owned(),
                payload: notify::payload(webhook.format, &notification),
            });
        }
    }

    fn transition(&mut self, view: &AlertView, previous: Option<Status>, severity: &str) {
        let from = previous.map_or(AlertState::Ok, |p| p.state);
        let changed = previous.is_none_or(|p| p.state != view.status.state);
        if changed && !(previous.is_none() && view.status.state == AlertState::Ok) {
            info!(
                rule = view.rule_key,
                service = view.service,
                endpoint = view.endpoint,
                from = from.as_str(),
                to = view.status.state.as_str(),
                observed = view.observed,
                summary = view.summary,
                "alert transition"
            );
            self.commit.states.push(state_row(view));
            self.commit.transitions.push(AlertTransition {
                rule_key: view.rule_key.clone(),
                service: view.service.clone(),
                endpoint: view.endpoint.clone(),
                from_state: from.as_str().to_owned(),
                to_state: view.status.state.as_str().to_owned(),
                at_unix_ns: self.now,
                observed: view.observed,
                summary: view.summary.clone(),
            });
            if view.status.state.notifies() {
                let resolved = view.status.state == AlertState::Resolved;
                let event = AlertEvent {
                    rule_key: view.rule_key.clone(),
                    kind: view.kind.as_str(),
                    service: view.service.clone(),
                    endpoint: view.endpoint.clone(),
                    metric: view.metric.clone(),
                    budget: view.budget,
                    observed: view.observed,
                    window: view.window,
                    state: view.status.state,
                    starts_unix_ns: if resolved {
                        previous.map_or(self.now, |p| p.since_unix_ns)
                    } else {
                        view.status.since_unix_ns
                    },
                    ends_unix_ns: resolved.then_some(self.now),
                    severity: severity.to_owned(),
                    summary: view.summary.clone(),
                };
                let transition = self.commit.transitions.len() - 1;
                for webhook in &self.rules.webhooks {
                    self.commit.notifications.push(NewNotification {
                        transition,
                        url: webhook.url.clone(),
                        format: webhook.format.as_str().to_owned(),
                        payload: notify::payload(webhook.format, &event),
                    });
                }
            }
        }
    }
}

/// One evaluation: every rule on every matching endpoint, committed with the views it made.
/// Returns how many notifications were queued.
async fn evaluate(store: &Store, rules: &AlertRules, now: u64) -> Result<usize, StoreError> {
    // The evaluation before, whichever instance made it: `ok` since when.
    let last = last_evaluation(store).await?;
    let stored: HashMap<InstanceKey, StoredAlert> = store
        .alert_states()
        .await?
        .into_iter()
        .map(|s| {
            (
                (s.rule_key.clone(), s.service.clone(), s.endpoint.clone()),
                s,
            )
        })
        .collect();
    let rule_keys: BTreeSet<String> = rules
        .budgets
        .iter()
        .map(|b| b.key())
        .chain(rules.slos.iter().map(|s| s.key()))
        .collect();
    let endpoints = if rule_keys.is_empty() {
        Vec::new()
    } else {
        store.endpoints().await?
    };
    let mut tick = Tick {
        rules,
        now,
        stored,
        ok_since: last
            .alerts
            .iter()
            .filter(|view| view.status.state == AlertState::Ok)
            .map(|view| {
                (
                    (
                        view.rule_key.clone(),
                        view.service.clone(),
                        view.endpoint.clone(),
                    ),
                    view.status.since_unix_ns,
                )
            })
            .collect(),
        views: Vec::new(),
        commit: AlertCommit {
            rule_keys: rule_keys.into_iter().collect(),
            queue_capacity: rules.settings.queue_capacity,
            ..AlertCommit::default()
        },
    };

    for budget in &rules.budgets {
        let key = budget.key();
        let matching: Vec<&EndpointRef> = endpoints
            .iter()
            .filter(|e| {
                AlertRules::matches(&budget.service, &budget.endpoint, (&e.service, &e.endpoint))
            })
            .collect();
        if matching.is_empty() {
            continue;
        }
        let ids: Vec<i64> = matching.iter().map(|e| e.id).collect();
        let window = window_ending(now, budget.window);
        let current = observed(store, window, &ids).await?;
        let before_window = window_ending(window.from_unix_ns, COMPARE_WITH);
        for endpoint in matching {
            if !current.contains_key(&endpoint.id) && !tick.has_stored(&key, endpoint) {
                continue;
            }
            let mut verdict = evaluate::judge_budget(budget, current.get(&endpoint.id), None);
            if verdict.breached {
                // Only a breach needs the hour before, to say what moved.
                let before = observed(store, before_window, &[endpoint.id]).await?;
                verdict = evaluate::judge_budget(
                    budget,
                    current.get(&endpoint.id),
                    before.get(&endpoint.id),
                );
            }
            let instance = (
                key.clone(),
                endpoint.service.clone(),
                endpoint.endpoint.clone(),
            );
            let previous = tick.previous(&instance);
            let status = evaluate::next_status(previous, verdict.breached, budget.hold, now);
            let view = AlertView {
                rule_key: key.clone(),
                kind: RuleKind::Budget,
                service: endpoint.service.clone(),
                endpoint: endpoint.endpoint.clone(),
                metric: budget.metric.key().to_owned(),
                budget: budget.limit,
                observed: verdict.observed,
                window: budget.window,
                requests: verdict.requests,
                status,
                summary: verdict.summary,
                burn: Vec::new(),
                slo: None,
            };
            tick.settle(view, previous, "warning");
        }
    }

    for slo in &rules.slos {
        let key = slo.key();
        let matching: Vec<&EndpointRef> = endpoints
            .iter()
            .filter(|e| AlertRules::matches(&slo.service, &slo.endpoint, (&e.service, &e.endpoint)))
            .collect();
        if matching.is_empty() || slo.burn.is_empty() {
            continue;
        }
        let threshold_ns = (slo.threshold_ms * 1e6) as u64;
        let lengths: BTreeSet<Duration> = slo.burn.iter().flat_map(|b| [b.long, b.short]).collect();
        for endpoint in matching {
            let by_length = counts(store, now, &lengths, endpoint.id, threshold_ns).await?;
            let active = by_length.values().any(|c| c.total > 0);
            if !active && !tick.has_stored(&key, endpoint) {
                continue;
            }
            let checks = burn::check(&slo.burn, slo.objective, slo.min_requests, |length| {
                by_length.get(&length).copied().unwrap_or_default()
            });
            let Some(worst) = burn::worst(&checks).cloned() else {
                continue;
            };
            let breached = checks.iter().any(|c| c.firing);
            let (now_observed, before_observed) = if breached {
                let window = window_ending(now, worst.long);
                let before_window = window_ending(window.from_unix_ns, COMPARE_WITH);
                let ids = [endpoint.id];
                (
                    observed(store, window, &ids).await?.remove(&endpoint.id),
                    observed(store, before_window, &ids)
                        .await?
                        .remove(&endpoint.id),
                )
            } else {
                (None, None)
            };
            let summary = evaluate::slo_summary(
                &worst,
                slo.objective,
                slo.threshold_ms,
                now_observed.as_ref(),
                before_observed.as_ref(),
            );
            let instance = (
                key.clone(),
                endpoint.service.clone(),
                endpoint.endpoint.clone(),
            );
            let previous = tick.previous(&instance);
            let status = evaluate::next_status(previous, breached, Duration::ZERO, now);
            let requests = by_length.get(&worst.long).map_or(0, |c| c.total);
            let view = AlertView {
                rule_key: key.clone(),
                kind: RuleKind::Slo,
                service: endpoint.service.clone(),
                endpoint: endpoint.endpoint.clone(),
                metric: "burn_rate".to_owned(),
                budget: worst.factor,
                observed: Some(worst.long_burn),
                window: worst.long,
                requests,
                status,
                summary,
                burn: checks,
                slo: Some((slo.objective, slo.threshold_ms)),
            };
            tick.settle(view, previous, &worst.severity);
        }
    }

    let retired: Vec<StoredAlert> = tick
        .stored
        .values()
        .filter(|s| !tick.commit.rule_keys.contains(&s.rule_key))
        .cloned()
        .collect();
    for stored in &retired {
        tick.retire(stored);
    }
    tick.regressions(store).await?;
    let mut views = std::mem::take(&mut tick.views);
    views.sort_by_key(|v| {
        let urgency = match v.status.state {
            AlertState::Firing => 0,
            AlertState::Pending => 1,
            AlertState::Resolved => 2,
            AlertState::Ok => 3,
        };
        (
            urgency,
            v.service.clone(),
            v.endpoint.clone(),
            v.rule_key.clone(),
        )
    });
    tick.commit.evaluation = Some(AlertEvaluation {
        evaluated_at_unix_ns: Some(now),
        alerts: views.iter().map(stored_view).collect(),
    });
    Ok(store.commit_alerts(&tick.commit).await?.len())
}
