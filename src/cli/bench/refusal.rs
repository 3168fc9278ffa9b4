//! How long normal exports were refused: the answers of every connection, merged in time, and
//! the longest stretch from a refusal to the next acknowledged export, judged against the
//! overload policy (docs/reliability.md, "Overload"): a refusal tells the exporter to retry after
//! `Retry-After`, so a stretch within the policy ends before the longest retry it asked for.
//!
//! Invariant: pure arithmetic over answers already timed; no clock, no I/O.

use std::time::Duration;

use collector::sink::{CommitError, IngestError};

/// How the server answered one normal export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Acknowledged,
    /// 429 or RESOURCE_EXHAUSTED: the queue or the budget of body bytes in flight was full.
    TooBusy {
        retry_after: Duration,
    },
    /// 503 or UNAVAILABLE: the store could not commit.
    Unavailable {
        retry_after: Duration,
    },
    /// Any other error, or no answer: no policy allows it for a well-formed export.
    Other,
}

impl Answer {
    /// An OTLP/HTTP answer; a refusal without a `Retry-After` gets the policy's own pause.
    pub(super) fn http(status: u16, retry_after_secs: Option<u64>) -> Answer {
        let retry_after = |policy: Duration| retry_after_secs.map_or(policy, Duration::from_secs);
        match status {
            200..=299 => Answer::Acknowledged,
            429 => Answer::TooBusy {
                retry_after: retry_after(IngestError::Busy.retry_after()),
            },
            503 => Answer::Unavailable {
                retry_after: retry_after(store_down().retry_after()),
            },
            _ => Answer::Other,
        }
    }

    /// An OTLP/gRPC answer. The pause comes from the server's policy for the code (tonic does
    /// not decode the RetryInfo the server sends beside it).
    pub(super) fn grpc(code: tonic::Code) -> Answer {
        match code {
            tonic::Code::Ok => Answer::Acknowledged,
            tonic::Code::ResourceExhausted => Answer::TooBusy {
                retry_after: IngestError::Busy.retry_after(),
            },
            tonic::Code::Unavailable => Answer::Unavailable {
                retry_after: store_down().retry_after(),
            },
            _ => Answer::Other,
        }
    }

    fn retry_after(self) -> Option<Duration> {
        match self {
            Answer::TooBusy { retry_after } | Answer::Unavailable { retry_after } => {
                Some(retry_after)
            }
            Answer::Acknowledged | Answer::Other => None,
        }
    }
}

fn store_down() -> IngestError {
    IngestError::Store(CommitError(String::new()))
}

/// One answer and when it arrived, since sending started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Answered {
    pub(super) at: Duration,
    pub(super) answer: Answer,
}

/// From the first refusal after an acknowledged export to the next acknowledged one.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stretch {
    pub(super) from: Duration,
    /// The next acknowledgement, or the last refusal when none came before the run ended.
    pub(super) to: Duration,
    /// No export was acknowledged after it.
    pub(super) ongoing: bool,
    pub(super) n_refused: u64,
    /// The longest pause the refusals asked for.
    pub(super) retry_after: Duration,
    /// Refusals that were neither 429 nor 503.
    pub(super) n_other: u64,
}

impl Stretch {
    pub(super) fn length(&self) -> Duration {
        self.to.saturating_sub(self.from)
    }

    /// An exporter that waited as told was acknowledged on its retry, and no refusal was outside
    /// the policy.
    pub(super) fn within_policy(&self) -> bool {
        self.n_other == 0 && !self.ongoing && self.length() <= self.retry_after
    }
}

/// The normal exports' refusals of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Refusals {
    pub(super) n_too_busy: u64,
    pub(super) n_unavailable: u64,
    pub(super) n_other: u64,
    pub(super) longest: Option<Stretch>,
}

impl Refusals {
    /// Every refusal was a retry answer and no stretch outlasted what it asked for.
    pub(super) fn within_policy(&self) -> bool {
        self.n_other == 0 && self.longest.as_ref().is_none_or(Stretch::within_policy)
    }
}

/// Counts the refusals in `answers` (of all connections, in any order) and finds the longest
/// stretch; a stretch still open when the answers end is longer than any that closed.
pub(super) fn summarize(mut answers: Vec<Answered>) -> Refusals {
    answers.sort_by_key(|answered| answered.at);
    let mut refusals = Refusals::default();
    let mut open: Option<Stretch> = None;
    let mut closed: Vec<Stretch> = Vec::new();
    for Answered { at, answer } in answers {
        match answer {
            Answer::Acknowledged => {
                if let Some(mut stretch) = open.take() {
                    stretch.to = at;
                    stretch.ongoing = false;
                    closed.push(stretch);
                }
                continue;
            }
            Answer::TooBusy { .. } => refusals.n_too_busy += 1,
            Answer::Unavailable { .. } => refusals.n_unavailable += 1,
            Answer::Other => refusals.n_other += 1,
        }
        let stretch = open.get_or_insert(Stretch {
            from: at,
            to: at,
            ongoing: true,
            n_refused: 0,
            retry_after: Duration::ZERO,
            n_other: 0,
        });
        stretch.to = at;
        stretch.n_refused += 1;
        match answer.retry_after() {
            Some(pause) => stretch.retry_after = stretch.retry_after.max(pause),
            None => stretch.n_other += 1,
        }
    }
    closed.extend(open);
    refusals.longest = closed
        .into_iter()
        .max_by_key(|stretch| (stretch.ongoing, stretch.length()));
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_S: Duration = Duration::from_secs(1);

    fn at(ms: u64, answer: Answer) -> Answered {
        Answered {
            at: Duration::from_millis(ms),
            answer,
        }
    }

    fn busy() -> Answer {
        Answer::http(429, Some(1))
    }

    #[test]
    fn answers_map_to_the_policy_of_their_status() {
        assert_eq!(Answer::http(200, None), Answer::Acknowledged);
        assert_eq!(
            Answer::http(429, None),
            Answer::TooBusy { retry_after: ONE_S }
        );
        assert_eq!(
            Answer::http(503, Some(7)),
            Answer::Unavailable {
                retry_after: Duration::from_secs(7)
            }
        );
        assert_eq!(
            Answer::grpc(tonic::Code::Unavailable),
            Answer::Unavailable {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(Answer::http(400, None), Answer::Other);
        assert_eq!(Answer::grpc(tonic::Code::Internal), Answer::Other);
    }

    #[test]
    fn no_refusal_is_no_stretch() {
        let refusals = summarize(vec![
            at(0, Answer::Acknowledged),
            at(5, Answer::Acknowledged),
        ]);
        assert_eq!(refusals, Refusals::default());
        assert!(refusals.within_policy());
    }

    #[test]
    fn the_longest_stretch_runs_from_a_refusal_to_the_next_acknowledgement_of_any_connection() {
        // Two connections' answers, interleaved and out of order.
        let refusals = summarize(vec![
            at(2_100, Answer::Acknowledged),
            at(1_000, busy()),
            at(100, busy()),
            at(300, Answer::Acknowledged),
            at(1_500, busy()),
            at(0, Answer::Acknowledged),
            at(1_800, Answer::Acknowledged),
            at(2_000, busy()),
        ]);
        assert_eq!((refusals.n_too_busy, refusals.n_other), (4, 0));
        let longest = refusals.longest.clone().expect("a stretch");
        assert_eq!(longest.from, Duration::from_millis(1_000));
        assert_eq!(longest.to, Duration::from_millis(1_800));
        assert_eq!(longest.n_refused, 2);
        assert!(!longest.ongoing);
        assert!(refusals.within_policy(), "0.8 s under Retry-After: 1");
    }

    #[test]
    fn a_stretch_longer_than_its_retry_after_is_outside_the_policy() {
        let refusals = summarize(vec![
            at(0, busy()),
            at(600, busy()),
            at(1_200, busy()),
            at(1_300, Answer::Acknowledged),
        ]);
        let longest = refusals.longest.clone().expect("a stretch");
        assert_eq!(longest.length(), Duration::from_millis(1_300));
        assert!(!refusals.within_policy());
        // A 503 in it asks for 5 s: the same stretch is then within.
        let refusals = summarize(vec![
            at(0, busy()),
            at(600, Answer::http(503, Some(5))),
            at(1_300, Answer::Acknowledged),
        ]);
        assert_eq!(refusals.longest.expect("a stretch").retry_after, 5 * ONE_S);
        assert_eq!(refusals.n_unavailable, 1);
    }

    #[test]
    fn a_stretch_still_open_at_the_end_outranks_longer_closed_ones_and_fails() {
        let refusals = summarize(vec![
            at(0, busy()),
            at(900, Answer::Acknowledged),
            at(1_000, busy()),
            at(1_100, busy()),
        ]);
        let longest = refusals.longest.clone().expect("a stretch");
        assert!(longest.ongoing);
        assert_eq!(longest.from, Duration::from_millis(1_000));
        assert!(!refusals.within_policy());
    }

    #[test]
    fn any_other_refusal_is_outside_the_policy() {
        let refusals = summarize(vec![at(0, Answer::Other), at(10, Answer::Acknowledged)]);
        assert_eq!(refusals.n_other, 1);
        let longest = refusals.longest.clone().expect("a stretch");
        assert_eq!(longest.retry_after, Duration::ZERO);
        assert!(!refusals.within_policy());
    }
}
