//! Budgets, SLOs and webhooks as the config file declares them, and endpoint pattern matching.
//!
//! Each table is deserialized through a raw twin and validated in `TryFrom`, so that a bad value
//! fails while the TOML parser still knows where it is: the error names the line.
//!
//! Invariant: pure; no IO. A rule set that parsed is valid, and every later step trusts it.

use std::time::Duration;

use collector::category::Category;
use serde::Deserialize;

use crate::analysis::aggregate::EndpointStats;

/// Evaluations per minute by default: 15 s is Prometheus' usual rule interval, and rollups are
/// per minute, so evaluating more often would mostly re-read the same rows.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
/// The first retry of a failed webhook waits this long; each further one twice as long.
const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Attempts per notification before it is given up: 1 s doubling 8 times spans ~4 minutes,
/// enough to ride out a receiver's restart.
const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// Notifications that may wait for delivery; more are stored as dropped, so a dead receiver
/// cannot grow the backlog without bound.
const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// A verdict on fewer requests than this is noise; the default of `min_requests`.
const DEFAULT_MIN_REQUESTS: u64 = 20;

/// The metric a budget limits: a key of the endpoint summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Median latency.
    P50,
    /// 90th percentile latency.
    P90,
    /// 95th percentile latency.
    P95,
    /// 99th percentile latency.
    P99,
    /// Mean latency.
    Mean,
    /// Mean critical-path time per request in one category.
    Category(Category),
    /// Database calls per request.
    DbCallsPerRequest,
}

impl Metric {
    /// Every metric, in the order the README lists them.
    pub const ALL: [Metric; 13] = [
        Metric::P50,
        Metric::P90,
        Metric::P95,
        Metric::P99,
        Metric::Mean,
        Metric::Category(Category::Db),
        Metric::Category(Category::Cache),
        Metric::Category(Category::Network),
        Metric::Category(Category::Messaging),
        Metric::Category(Category::Cpu),
        Metric::Category(Category::Wait),
        Metric::Category(Category::Untraced),
        Metric::DbCallsPerRequest,
    ];

    /// The config and API key, as in the endpoint summary.
    pub fn key(self) -> &'static str {
        match self {
            Metric::P50 => "p50_ms",
            Metric::P90 => "p90_ms",
            Metric::P95 => "p95_ms",
            Metric::P99 => "p99_ms",
            Metric::Mean => "mean_ms",
            Metric::Category(Category::Db) => "db_ms",
            Metric::Category(Category::Cache) => "cache_ms",
            Metric::Category(Category::Network) => "network_ms",
            Metric::Category(Category::Messaging) => "messaging_ms",
            Metric::Category(Category::Cpu) => "cpu_ms",
            Metric::Category(Category::Wait) => "wait_ms",
            Metric::Category(Category::Untraced) => "untraced_ms",
            Metric::DbCallsPerRequest => "db_calls_per_request",
        }
    }

    /// A short name for sentences: `p95`, `db time`, `queries per request`.
    pub fn label(self) -> String {
        match self {
            Metric::P50 => "p50".into(),
            Metric::P90 => "p90".into(),
            Metric::P95 => "p95".into(),
            Metric::P99 => "p99".into(),
            Metric::Mean => "mean".into(),
            Metric::Category(category) => format!("{} time", category.as_str()),
            Metric::DbCallsPerRequest => "queries per request".into(),
        }
    }

    /// Whether the value is in milliseconds (else a count).
    pub fn is_ms(self) -> bool {
        self != Metric::DbCallsPerRequest
    }

    /// The metric's value in what was observed.
    pub fn value(self, observed: &Observed) -> f64 {
        match self {
            Metric::P50 => observed.p50_ms,
            Metric::P90 => observed.p90_ms,
            Metric::P95 => observed.p95_ms,
            Metric::P99 => observed.p99_ms,
            Metric::Mean => observed.mean_ms,
            Metric::Category(category) => observed.breakdown_ms[category.index()],
            Metric::DbCallsPerRequest => observed.db_calls_per_request,
        }
    }
}

/// What an endpoint did over a window, in the units budgets are written in. Built from an
/// [`EndpointStats`] on the server, or from `/api/v1/endpoints` by `check`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observed {
    /// Requests in the window.
    pub requests: u64,
    /// Mean latency.
    pub mean_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean critical-path time per category, indexed by [`Category::index`].
    pub breakdown_ms: [f64; Category::COUNT],
    /// Database calls per request.
    pub db_calls_per_request: f64,
}

impl Observed {
    /// The summary's numbers in milliseconds.
    pub fn from_stats(stats: &EndpointStats) -> Self {
        let ms = |ns: f64| ns / 1e6;
        Self {
            requests: stats.requests,
            mean_ms: ms(stats.mean_ns),
            p50_ms: ms(stats.p50_ns),
            p90_ms: ms(stats.p90_ns),
            p95_ms: ms(stats.p95_ns),
            p99_ms: ms(stats.p99_ns),
            breakdown_ms: stats.breakdown_mean_ns.map(ms),
            db_calls_per_request: stats.db_calls_per_request,
        }
    }
}

/// A service or endpoint name, exact or a glob where `*` matches any run of characters and `?`
/// exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pattern(String);

impl Pattern {
    /// Any text is a pattern.
    pub fn new(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches; iterative, with one backtrack point per `*`, so linear-ish and
    /// never recursive.
    pub fn matches(&self, name: &str) -> bool {
        let pattern: Vec<char> = self.0.chars().collect();
        let text: Vec<char> = name.chars().collect();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
                p += 1;
                t += 1;
            } else if p < pattern.len() && pattern[p] == '*' {
                star = Some((p, t));
                p += 1;
            } else if let Some((star_p, star_t)) = star {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            } else {
                return false;
            }
        }
        pattern[p..].iter().all(|c| *c == '*')
    }
}

/// A latency budget: one metric of the matching endpoints must stay at or under `limit`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawBudget")]
pub struct Budget {
    /// `service.name`, exact or glob.
    pub service: Pattern,
    /// Endpoint, exact or glob.
    pub endpoint: Pattern,
    /// What is limited.
    pub metric: Metric,
    /// The limit, in the metric's unit.
    pub limit: f64,
    /// The window the metric is computed over, ending now.
    pub window: Duration,
    /// How long a breach must last before it fires; until then the alert is pending.
    pub hold: Duration,
    /// Fewer requests in the window give no verdict.
    pub min_requests: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    service: String,
    endpoint: String,
    p50_ms: Option<f64>,
    p90_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    mean_ms: Option<f64>,
    db_ms: Option<f64>,
    cache_ms: Option<f64>,
    network_ms: Option<f64>,
    messaging_ms: Option<f64>,
    cpu_ms: Option<f64>,
    wait_ms: Option<f64>,
    untraced_ms: Option<f64>,
    db_calls_per_request: Option<f64>,
    window: Option<String>,
    #[serde(rename = "for")]
    hold: Option<String>,
    min_requests: Option<u64>,
}

fn duration(text: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| format!("{what} {text:?} is not a duration such as \"30s\", \"5m\" or \"1h\""))
}

fn positive_duration(text: &str, what: &str) -> Result<Duration, String> {
    let value = duration(text, what)?;
    if value.is_zero() {
        return Err(format!("{what} must be longer than zero"));
    }
    Ok(value)
}

impl TryFrom<RawBudget> for Budget {
    type Error = String;

    fn try_from(raw: RawBudget) -> Result<Self, String> {
        let candidates = [
            raw.p50_ms,
            raw.p90_ms,
            raw.p95_ms,
            raw.p99_ms,
            raw.mean_ms,
            raw.db_ms,
            raw.cache_ms,
            raw.network_ms,
            raw.messaging_ms,
            raw.cpu_ms,
            raw.wait_ms,
            raw.untraced_ms,
            raw.db_calls_per_request,
        ];
        let given: Vec<(Metric, f64)> = Metric::ALL
            .into_iter()
            .zip(candidates)
            .filter_map(|(metric, value)| value.map(|v| (metric, v)))
            .collect();
        let keys = || {
            Metric::ALL
                .iter()
                .map(|m| m.key())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (metric, limit) = match given.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "budget for {} {} names no metric; give one of {}",
                    raw.service,
                    raw.endpoint,
                    keys()
                ));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|(m, _)| m.key()).collect();
                return Err(format!(
                    "budget for {} {} names {} metrics ({}); write one [[budget]] table per metric",
                    raw.service,
                    raw.endpoint,
                    many.len(),
                    names.join(", ")
                ));
            }
        };
        if !limit.is_finite() || limit < 0.0 {
            return Err(format!(
                "{} must be a non-negative number, got {limit}",
                metric.key()
            ));
        }
        if raw.service.trim().is_empty() || raw.endpoint.trim().is_empty() {
            return Err("budget `service` and `endpoint` must not be empty".into());
        }
        Ok(Budget {
            service: Pattern::new(&raw.service),
            endpoint: Pattern::new(&raw.endpoint),
            metric,
            limit,
            window: positive_duration(raw.window.as_deref().unwrap_or("5m"), "window")?,
            hold: duration(raw.hold.as_deref().unwrap_or("0s"), "for")?,
            min_requests: raw.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS),
        })
    }
}

impl Budget {
    /// A stable identity: the same table in a reloaded or restarted config has the same key,
    /// so its stored state carries over.
    pub fn key(&self) -> String {
        format!(
            "budget {} {} {} {}",
            self.service.as_str(),
            self.endpoint.as_str(),
            self.metric.key(),
            humantime::format_duration(self.window)
        )
    }
}

/// One pair of windows of multi-window, multi-burn-rate alerting: it fires when the error
/// budget burns at least `factor` times the sustainable rate over both windows.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnWindow {
    /// `page`, `ticket`, or any label; it becomes the Alertmanager `severity`.
    pub severity: String,
    /// The long window: the burn is real.
    pub long: Duration,
    /// The short window: the burn is still going on (so the alert resets quickly).
    pub short: Duration,
    /// The burn rate that fires.
    pub factor: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBurn {
    severity: String,
    long_window: String,
    short_window: String,
    factor: f64,
}

/// A service level objective: `objective` of the requests finish within `threshold_ms`, over
/// `period`. Alerts on the burn rate of its error budget.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSlo")]
pub struct Slo {
    /// `service.name`, exact or glob.
    pub service: Pattern,
    /// Endpoint, exact or glob.
    pub endpoint: Pattern,
    /// Share of good requests promised, e.g. 0.99.
    pub objective: f64,
    /// A request at or under this is good.
    pub threshold_ms: f64,
    /// The period the objective is promised over.
    pub period: Duration,
    /// The window pairs that alert.
    pub burn: Vec<BurnWindow>,
    /// Fewer requests in a short window give no verdict.
    pub min_requests: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlo {
    service: String,
    endpoint: String,
    objective: f64,
    threshold_ms: f64,
    period: Option<String>,
    min_requests: Option<u64>,
    #[serde(default)]
    burn: Vec<RawBurn>,
}

impl TryFrom<RawSlo> for Slo {
    type Error = String;

    fn try_from(raw: RawSlo) -> Result<Self, String> {
        if !(raw.objective > 0.0 && raw.objective < 1.0) {
            return Err(format!(
                "objective must be between 0 and 1 (e.g. 0.99), got {}",
                raw.objective
            ));
        }
        if !(raw.threshold_ms.is_finite() && raw.threshold_ms > 0.0) {
            return Err(format!(
                "threshold_ms must be a positive number, got {}",
                raw.threshold_ms
            ));
        }
        let period = positive_duration(raw.period.as_deref().unwrap_or("30d"), "period")?;
        let burn = if raw.burn.is_empty() {
            super::burn::default_windows(period)
        } else {
            raw.burn
                .into_iter()
                .map(|b| {
                    let long = positive_duration(&b.long_window, "long_window")?;
                    let short = positive_duration(&b.short_window, "short_window")?;
                    if short >= long {
                        return Err(format!(
                            "short_window {} must be shorter than long_window {}",
                            b.short_window, b.long_window
                        ));
                    }
                    if !(b.factor.is_finite() && b.factor > 0.0) {
                        return Err(format!("factor must be positive, got {}", b.factor));
                    }
                    Ok(BurnWindow {
                        severity: b.severity,
                        long,
                        short,
                        factor: b.factor,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?
        };
        Ok(Slo {
            service: Pattern::new(&raw.service),
            endpoint: Pattern::new(&raw.endpoint),
            objective: raw.objective,
            threshold_ms: raw.threshold_ms,
            period,
            burn,
            min_requests: raw.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS),
        })
    }
}

impl Slo {
    /// A stable identity, as [`Budget::key`].
    pub fn key(&self) -> String {
        format!(
            "slo {} {} {} {}ms",
            self.service.as_str(),
            self.endpoint.as_str(),
            self.objective,
            self.threshold_ms
        )
    }
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// Bottleneck's own JSON: one alert per notification.
    Json,
    /// The Alertmanager webhook receiver format (version 4).
    Alertmanager,
}

impl WebhookFormat {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Alertmanager => "alertmanager",
        }
    }
}

/// Where transitions to firing and resolved are sent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawWebhook")]
pub struct Webhook {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The body's format.
    pub format: WebhookFormat,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    format: Option<WebhookFormat>,
}

impl TryFrom<RawWebhook> for Webhook {
    type Error = String;

    fn try_from(raw: RawWebhook) -> Result<Self, String> {
        let url = raw.url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|host| host.is_empty()) {
            return Err(format!(
                "webhook url {url:?} must be an http:// or https:// URL"
            ));
        }
        Ok(Webhook {
            url: url.to_owned(),
            format: raw.format.unwrap_or(WebhookFormat::Json),
        })
    }
}

/// `[alerts]`: evaluation and delivery settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct AlertSettings {
    /// Time between evaluations.
    pub interval: Duration,
    /// The wait before the first retry of a failed webhook; it doubles per attempt.
    pub retry_initial: Duration,
    /// Attempts per notification before it is given up.
    pub max_attempts: u32,
    /// Notifications that may wait for delivery at once.
    pub queue_capacity: usize,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            retry_initial: DEFAULT_RETRY_INITIAL,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    interval: Option<String>,
    retry_initial: Option<String>,
    max_attempts: Option<u32>,
    queue_capacity: Option<usize>,
}

impl TryFrom<RawSettings> for AlertSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        let defaults = AlertSettings::default();
        Ok(AlertSettings {
            interval: match raw.interval {
                Some(text) => positive_duration(&text, "interval")?,
                None => defaults.interval,
            },
            retry_initial: match raw.retry_initial {
                Some(text) => positive_duration(&text, "retry_initial")?,
                None => defaults.retry_initial,
            },
            max_attempts: raw.max_attempts.unwrap_or(defaults.max_attempts).max(1),
            queue_capacity: raw.queue_capacity.unwrap_or(defaults.queue_capacity).max(1),
        })
    }
}

/// Everything alerting reads from the config file; swapped whole on reload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertRules {
    /// `[alerts]`.
    pub settings: AlertSettings,
    /// `[[budget]]` tables.
    pub budgets: Vec<Budget>,
    /// `[[slo]]` tables.
    pub slos: Vec<Slo>,
    /// `[[webhook]]` tables.
    pub webhooks: Vec<Webhook>,
}

impl AlertRules {
    /// Whether a (service, endpoint) is matched by a rule's patterns.
    pub fn matches(service: &Pattern, endpoint: &Pattern, name: (&str, &str)) -> bool {
        service.matches(name.0) && endpoint.matches(name.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("POST /login", "POST /login", true),
            ("POST /login", "POST /logins", false),
            ("GET *", "GET /users/{id}", true),
            ("GET *", "POST /users", false),
            ("*", "", true),
            ("*/login", "POST /login", true),
            ("GET /users/?", "GET /users/7", true),
            ("GET /users/?", "GET /users/77", false),
            ("*a*b*c", "xxaybbzc", true),
            ("*a*b*c", "xxaybbzcd", false),
            ("a?", "a", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(name),
                expected,
                "{pattern:?} vs {name:?}"
            );
        }
    }

    /// The alerting tables of a config file, as the file parser reads them (other keys ignored).
    #[derive(Deserialize)]
    struct Tables {
        #[serde(default)]
        alerts: AlertSettings,
        #[serde(default)]
        budget: Vec<Budget>,
        #[serde(default)]
        slo: Vec<Slo>,
        #[serde(default)]
        webhook: Vec<Webhook>,
    }

    fn parse(text: &str) -> Result<AlertRules, toml::de::Error> {
        let tables: Tables = toml::from_str(text)?;
        Ok(AlertRules {
            settings: tables.alerts,
            budgets: tables.budget,
            slos: tables.slo,
            webhooks: tables.webhook,
        })
    }

    fn rules(text: &str) -> AlertRules {
        parse(text).expect("valid config")
    }

    #[track_caller]
    fn error(text: &str) -> String {
        parse(text).expect_err("invalid config").to_string()
    }

    #[test]
    fn budget_tables_with_defaults_and_globs() {
        let rules = rules(
            r#"
[alerts]
interval = "30s"

[[budget]]
service = "auth"
endpoint = "POST /login"
p95_ms = 200

[[budget]]
service = "auth"
endpoint = "GET /users/*"
db_calls_per_request = 8
window = "10m"
for = "2m"
min_requests = 50
"#,
        );
        assert_eq!(rules.settings.interval, Duration::from_secs(30));
        assert_eq!(rules.budgets.len(), 2);
        let login = &rules.budgets[0];
        assert_eq!(login.metric, Metric::P95);
        assert_eq!(login.limit, 200.0);
        assert_eq!(login.window, Duration::from_secs(300));
        assert_eq!(login.hold, Duration::ZERO);
        assert_eq!(login.min_requests, 20);
        let users = &rules.budgets[1];
        assert_eq!(users.metric, Metric::DbCallsPerRequest);
        assert_eq!(users.window, Duration::from_secs(600));
        assert_eq!(users.hold, Duration::from_secs(120));
        assert_eq!(users.min_requests, 50);
        assert!(users.endpoint.matches("GET /users/{id}"));
        assert!(!users.endpoint.matches("POST /users"));
    }

    #[test]
    fn every_metric_key_is_accepted() {
        for metric in Metric::ALL {
            let text = format!(
                "[[budget]]\nservice = \"a\"\nendpoint = \"b\"\n{} = 1.5\n",
                metric.key()
            );
            assert_eq!(rules(&text).budgets[0].metric, metric, "{text}");
        }
    }

    #[test]
    fn slo_tables_default_to_the_workbook_windows() {
        let rules = rules(
            r#"
[[slo]]
service = "auth"
endpoint = "POST /login"
objective = 0.99
threshold_ms = 300

[[slo]]
service = "*"
endpoint = "*"
objective = 0.999
threshold_ms = 1000
period = "7d"

[[slo.burn]]
severity = "page"
long_window = "30m"
short_window = "2m"
factor = 10
"#,
        );
        let login = &rules.slos[0];
        assert_eq!(login.period, Duration::from_secs(30 * 86_400));
        let pairs: Vec<_> = login
            .burn
            .iter()
            .map(|b| {
                (
                    b.severity.as_str(),
                    b.long.as_secs(),
                    b.short.as_secs(),
                    b.factor,
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [("page", 3600, 300, 14.4), ("ticket", 21_600, 1800, 6.0)]
        );
        let custom = &rules.slos[1];
        assert_eq!(custom.burn.len(), 1);
        assert_eq!(custom.burn[0].long, Duration::from_secs(1800));
        assert_eq!(custom.burn[0].factor, 10.0);
    }

    #[test]
    fn webhook_tables() {
        let rules = rules(
            r#"
[[webhook]]
url = "http://127.0.0.1:9093/api/hook"

[[webhook]]
url = "https://alerts.example.com/x"
format = "alertmanager"
"#,
        );
        assert_eq!(rules.webhooks[0].format, WebhookFormat::Json);
        assert_eq!(rules.webhooks[1].format, WebhookFormat::Alertmanager);
    }

    #[test]
    fn alert_config_errors_name_the_line() {
        let cases = [
            (
                "[[budget]]\nservice = \"auth\"\nendpoint = \"POST /login\"\n",
                "names no metric",
            ),
            (
                "listen = \"127.0.0.1:1\"\n\n[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 1\np99_ms = 2\n",
                "names 2 metrics (p95_ms, p99_ms)",
            ),
            (
                "[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 200\nwindow = \"five minutes\"\n",
                "window \"five minutes\" is not a duration",
            ),
            (
                "[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 200\nwindo = \"5m\"\n",
                "unknown field `windo`",
            ),
            (
                "[[slo]]\nservice = \"auth\"\nendpoint = \"x\"\nobjective = 99\nthreshold_ms = 300\n",
                "objective must be between 0 and 1",
            ),
            (
                "[[webhook]]\nurl = \"ftp://x\"\n",
                "must be an http:// or https:// URL",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nformat = \"slack\"\n",
                "unknown variant `slack`",
            ),
            (
                "[alerts]\ninterval = \"0s\"\n",
                "interval must be longer than zero",
            ),
        ];
        for (text, message) in cases {
            let err = error(text);
            assert!(err.contains(message), "{message:?} not in:\n{err}");
            assert!(err.contains("line "), "no line in:\n{err}");
        }
        // The error points at the offending table's line.
        let err = error(
            "listen = \"127.0.0.1:1\"\n\n[[budget]]\nservice = \"auth\"\nendpoint = \"x\"\np95_ms = 1\np99_ms = 2\n",
        );
        assert!(err.contains("line 3"), "{err}");
    }
}
