//! `--hostile`, the heavy reads: a few clients looping over the most expensive pages and API
//! calls for the whole run, each call's answers counted by status and timed.
//!
//! The acceptable answers of a heavy call are a success, 422 (a selection past the read limits)
//! and 503 (past the read timeout); any other 5xx, or no answer, is a failure of the run.
//!
//! Invariant: the calls are the user's own, over HTTP to the real server; nothing is retried.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Clients reading at once: enough to keep the web's four read connections busy.
pub(super) const READERS: usize = 2;

/// A client gives up on a call after this: far past the server's read timeout (10 s by
/// default), so only a server that stopped answering reaches it.
const GIVE_UP: Duration = Duration::from_secs(60);

/// The status recorded for a call that got no answer.
const NO_ANSWER: u16 = 0;

/// The load's service and endpoint, as the analysis names them, in a query string.
const ENDPOINT: &str = "service=auth&endpoint=POST%20/login";

/// The heavy calls: (what, path and query).
pub(super) fn calls(big_trace_hex: &str) -> Vec<(&'static str, String)> {
    vec![
        ("overview page, 24 h", "/?range=24h".to_owned()),
        ("overview page, 7 d", "/?range=7d".to_owned()),
        (
            "GET /api/v1/endpoints, 24 h",
            "/api/v1/endpoints?range=24h".to_owned(),
        ),
        (
            "GET /api/v1/endpoints, 7 d",
            "/api/v1/endpoints?range=7d".to_owned(),
        ),
        (
            "endpoint page, 24 h",
            format!("/endpoint?range=24h&{ENDPOINT}"),
        ),
        (
            "trace page, 10,001 spans",
            format!("/trace/{big_trace_hex}"),
        ),
        (
            "compare by version, 24 h",
            format!(
                "/api/v1/compare?range=24h&{ENDPOINT}&baseline=version:1.0&candidate=version:1.0"
            ),
        ),
        (
            "compare by resource attribute (request rows), 24 h",
            format!(
                "/api/v1/compare?range=24h&{ENDPOINT}&baseline=version:1.0&candidate=host.name:ip-10-1-2-3"
            ),
        ),
        ("GET /metrics", "/metrics".to_owned()),
    ]
}

/// One call's answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct CallFigures {
    /// Answers by status; [`NO_ANSWER`] counts calls without one.
    pub(super) by_status: BTreeMap<u16, u64>,
    /// Every call's time to its answer (or to giving up), shortest first once finished.
    pub(super) times: Vec<Duration>,
}

impl CallFigures {
    /// Calls whose answer fails the run.
    pub(super) fn failed(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| !acceptable(**status))
            .map(|(_, n)| n)
            .sum()
    }

    /// The time at quantile `q` (0 to 1) of the sorted times.
    pub(super) fn quantile(&self, q: f64) -> Option<Duration> {
        let last = self.times.len().checked_sub(1)?;
        Some(self.times[((self.times.len() as f64 * q) as usize).min(last)])
    }

    /// "200 ×12, 503 ×1" (`-` for none).
    pub(super) fn statuses(&self) -> String {
        if self.by_status.is_empty() {
            return "-".to_owned();
        }
        self.by_status
            .iter()
            .map(|(&status, n)| match status {
                NO_ANSWER => format!("no answer ×{n}"),
                status => format!("{status} ×{n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A success, 422 or 503, or another refusal of the request (4xx); not a 5xx else, nor none.
fn acceptable(status: u16) -> bool {
    match status {
        NO_ANSWER => false,
        503 => true,
        500..=599 => false,
        _ => true,
    }
}

/// Every call's figures, in the order of [`calls`].
pub(super) type Figures = Vec<(&'static str, CallFigures)>;

/// Runs [`READERS`] clients over `calls` against the UI at `ui` until `deadline`.
pub(super) async fn run(
    ui: String,
    calls: Vec<(&'static str, String)>,
    deadline: Instant,
) -> anyhow::Result<Figures> {
    let client = reqwest::Client::builder().timeout(GIVE_UP).build()?;
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..READERS {
        let (client, ui, calls) = (client.clone(), ui.clone(), calls.clone());
        readers.spawn(async move {
            let mut figures: Figures = calls
                .iter()
                .map(|(name, _)| (*name, CallFigures::default()))
                .collect();
            // Readers start at different calls, so that heavy calls overlap other ones.
            for idx in (reader..).map(|n| n % calls.len()) {
                if Instant::now() >= deadline {
                    break;
                }
                let started = Instant::now();
                let status = match client.get(format!("{ui}{}", calls[idx].1)).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        // The time counts the whole body, as a browser waits for it.
                        match response.bytes().await {
                            Ok(_) => status,
                            Err(_) => NO_ANSWER,
                        }
                    }
                    Err(_) => NO_ANSWER,
                };
                let call = &mut figures[idx].1;
                *call.by_status.entry(status).or_default() += 1;
                call.times.push(started.elapsed());
            }
            figures
        });
    }
    let mut total: Figures = calls
        .iter()
        .map(|(name, _)| (*name, CallFigures::default()))
        .collect();
    while let Some(figures) = readers.join_next().await {
        for ((_, sum), (_, call)) in total.iter_mut().zip(figures?) {
            for (status, n) in call.by_status {
                *sum.by_status.entry(status).or_default() += n;
            }
            sum.times.extend(call.times);
        }
    }
    for (_, call) in &mut total {
        call.times.sort_unstable();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(statuses: &[(u16, u64)], times_ms: &[u64]) -> CallFigures {
        CallFigures {
            by_status: statuses.iter().copied().collect(),
            times: times_ms
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
        }
    }

    #[test]
    fn only_5xx_other_than_503_and_no_answer_fail() {
        let call = figures(&[(200, 5), (422, 2), (503, 3), (404, 1)], &[]);
        assert_eq!(call.failed(), 0);
        let call = figures(&[(200, 5), (500, 1), (502, 2), (NO_ANSWER, 1)], &[]);
        assert_eq!(call.failed(), 4);
        assert_eq!(call.statuses(), "no answer ×1, 200 ×5, 500 ×1, 502 ×2");
    }

    #[test]
    fn quantiles_are_read_from_the_sorted_times() {
        let call = figures(&[(200, 20)], &(1..=20).collect::<Vec<_>>());
        assert_eq!(call.quantile(0.5), Some(Duration::from_millis(11)));
        assert_eq!(call.quantile(0.95), Some(Duration::from_millis(20)));
        assert_eq!(CallFigures::default().quantile(0.5), None);
    }
}
