//! `bottleneck check`: judges the config file's budgets against a running server (or a database)
//! and exits 0 when all hold, 1 when one is broken, 2 when it cannot tell (usage, config or
//! connection errors). Meant to gate a deploy in CI.
//!
//! Invariant: reads only; against a server it uses the public `/api/v1/endpoints`, the same
//! numbers the dashboard shows.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use collector::category::Category;
use serde_json::Value;

use crate::alert::budget::{AlertRules, Budget, Observed};
use crate::alert::evaluate::format_value;
use crate::alert::observed_endpoints;
use crate::cli::Outcome;
use crate::config::{DatabaseUrl, read_alert_rules};
use crate::store::{Store, Window};
use crate::time::now_unix_ns;

/// `check`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The server's UI and API address, e.g. http://127.0.0.1:8080.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    pub url: Option<String>,
    /// Read this database (a `sqlite:` URL or path) directly instead of asking a server.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The TOML file with the `[[budget]]` tables (a `serve` config file works as is).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Judge every budget over this window (e.g. 10m) instead of each budget's own `window`.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// A file holding a read token, for a server with `[auth] read_tokens`.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Each endpoint's numbers over a window: service, endpoint, what it did.
pub(crate) type Observations = Vec<(String, String, Observed)>;

/// Where the numbers come from.
enum Source {
    Server {
        client: reqwest::Client,
        url: String,
    },
    Database(Store),
}

impl Source {
    async fn observe(&self, window: Duration) -> anyhow::Result<Observations> {
        match self {
            Source::Server { client, url } => {
                let endpoint = format!(
                    "{}/api/v1/endpoints?range={}s",
                    url.trim_end_matches('/'),
                    window.as_secs().max(1)
                );
                let res = client
                    .get(&endpoint)
                    .send()
                    .await
                    .with_context(|| format!("asking {endpoint}"))?;
                let status = res.status();
                if !status.is_success() {
                    bail!("{endpoint} answered {status}");
                }
                let body: Value = res
                    .json()
                    .await
                    .with_context(|| format!("reading the answer of {endpoint}"))?;
                parse_endpoints(&body).with_context(|| format!("reading the answer of {endpoint}"))
            }
            Source::Database(store) => {
                let now = now_unix_ns();
                let window = Window {
                    from_unix_ns: now.saturating_sub(window.as_nanos() as u64),
                    to_unix_ns: now,
                };
                Ok(observed_endpoints(store, window)
                    .await
                    .context("reading rollups")?
                    .into_iter()
                    .map(|(endpoint, observed)| (endpoint.service, endpoint.endpoint, observed))
                    .collect())
            }
        }
    }
}

/// `{"endpoints":[EndpointSummary]}` into observations.
fn parse_endpoints(body: &Value) -> anyhow::Result<Observations> {
    let Some(list) = body["endpoints"].as_array() else {
        bail!("no `endpoints` list");
    };
    let number = |value: &Value, key: &str| value[key].as_f64().unwrap_or(0.0);
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let (Some(service), Some(endpoint)) = (item["service"].as_str(), item["endpoint"].as_str())
        else {
            bail!("an endpoint without `service` or `endpoint`");
        };
        let mut breakdown_ms = [0.0; Category::COUNT];
        for category in Category::ALL {
            breakdown_ms[category.index()] = number(&item["breakdown_ms"], category.as_str());
        }
        out.push((
            service.to_owned(),
            endpoint.to_owned(),
            Observed {
                requests: item["requests"].as_u64().unwrap_or(0),
                mean_ms: number(item, "mean_ms"),
                p50_ms: number(item, "p50_ms"),
                p90_ms: number(item, "p90_ms"),
                p95_ms: number(item, "p95_ms"),
                p99_ms: number(item, "p99_ms"),
                breakdown_ms,
                db_calls_per_request: number(item, "db_calls_per_request"),
            },
        ));
    }
    Ok(out)
}

/// One line of the report.
pub(crate) struct Row {
    pub(crate) service: String,
    pub(crate) endpoint: String,
    pub(crate) metric: &'static str,
    pub(crate) budget: String,
    pub(crate) observed: String,
    pub(crate) requests: String,
    pub(crate) window: String,
    pub(crate) verdict: String,
    pub(crate) broken: bool,
}

/// One budget against every endpoint it matches (one "no traffic" row when none).
pub(crate) fn judge(budget: &Budget, window: Duration, observations: &Observations) -> Vec<Row> {
    let row = |service: &str, endpoint: &str| Row {
        service: service.to_owned(),
        endpoint: endpoint.to_owned(),
        metric: budget.metric.key(),
        budget: format_value(budget.metric, budget.limit),
        observed: "-".into(),
        requests: "0".into(),
        window: humantime::format_duration(window).to_string(),
        verdict: "no traffic".into(),
        broken: false,
    };
    let matching: Vec<_> = observations
        .iter()
        .filter(|(service, endpoint, _)| {
            AlertRules::matches(&budget.service, &budget.endpoint, (service, endpoint))
        })
        .collect();
    if matching.is_empty() {
        return vec![row(budget.service.as_str(), budget.endpoint.as_str())];
    }
    matching
        .into_iter()
        .map(|(service, endpoint, observed)| {
            let value = budget.metric.value(observed);
            let mut out = row(service, endpoint);
            out.observed = format_value(budget.metric, value);
            out.requests = observed.requests.to_string();
            if observed.requests < budget.min_requests {
                out.verdict = format!("no verdict (fewer than {} requests)", budget.min_requests);
            } else if value > budget.limit {
                out.verdict = "OVER BUDGET".into();
                out.broken = true;
            } else {
                out.verdict = "ok".into();
            }
            out
        })
        .collect()
}

/// The rows as an aligned text table.
pub(crate) fn render(rows: &[Row]) -> String {
    let header = [
        "SERVICE", "ENDPOINT", "METRIC", "BUDGET", "OBSERVED", "REQUESTS", "WINDOW", "VERDICT",
    ];
    let cells: Vec<[&str; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.service.as_str(),
                r.endpoint.as_str(),
                r.metric,
                r.budget.as_str(),
                r.observed.as_str(),
                r.requests.as_str(),
                r.window.as_str(),
                r.verdict.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in std::iter::once(&header).chain(&cells) {
        let padded: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs the check.
pub async fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    let rules = read_alert_rules(&args.config)?;
    if rules.budgets.is_empty() {
        bail!(
            "{} has no [[budget]] tables to check",
            args.config.display()
        );
    }
    let source = match (&args.url, &args.database_url) {
        (Some(url), _) => {
            let client = crate::cli::api_client(args.token_file.as_deref())?;
            Source::Server {
                client,
                url: url.clone(),
            }
        }
        (None, Some(database_url)) => {
            let url = DatabaseUrl::parse(database_url)?;
            // Opening would create an empty file and call every budget "no traffic".
            if let DatabaseUrl::Sqlite(path) = &url
                && !path.exists()
            {
                bail!("no database at {}", path.display());
            }
            Source::Database(
                Store::open(&url)
                    .await
                    .with_context(|| format!("opening the store {url:?}"))?,
            )
        }
        (None, None) => bail!("give --url or --database-url"),
    };
    let mut by_window: BTreeMap<Duration, Observations> = BTreeMap::new();
    let mut rows = Vec::new();
    for budget in &rules.budgets {
        let window = args.window.unwrap_or(budget.window);
        let observations = match by_window.entry(window) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(source.observe(window).await?),
        };
        rows.extend(judge(budget, window, observations));
    }
    if let Source::Database(store) = &source {
        store.close().await;
    }
    print!("{}", render(&rows));
    let broken = rows.iter().filter(|r| r.broken).count();
    if broken > 0 {
        println!("{broken} of {} budget checks broken", rows.len());
        Ok(Outcome::OverBudget)
    } else {
        println!("all {} budget checks hold", rows.len());
        Ok(Outcome::Ok)
    }
}
