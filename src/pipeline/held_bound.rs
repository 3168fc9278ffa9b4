//! The held bound: how many compressed block bytes the assembler holds, waiting for analysis,
//! before it stops taking committed blocks. Past it the writer waits, the ingest queue fills and
//! exporters are told to retry, so memory stays bounded when analysis falls behind ingest.
//!
//! At saturation the held blocks are a queue in front of the analysis: what they hold beyond a
//! grace period's worth of traffic is backlog, and a trace waits that backlog over the analysed
//! rate past its grace period. So the bound follows the lateness of the batches taken: while they
//! leave late it drops to what the analysis takes in a grace period and a little more, and while
//! they leave on time with intake held back by the bound it returns there and grows on step by
//! step.
//!
//! What the bound cannot prevent is a burst: traffic taken in faster than the analysis goes
//! falls due as fast, a grace period later. So it grows only while it holds intake back, and
//! starts at half its ceiling.

use std::time::Duration;

use tokio::time::Instant;

/// The most compressed block bytes held per second of the grace period (at least one second's
/// worth): the ceiling of the bound. At 36 bytes a span it holds a grace period of 350,000
/// spans/s, which caps the analysed rate there. A higher ceiling lets seconds of backlog build at
/// saturation (later visibility, more RSS); a lower one caps the rate below what the analysis
/// can reach (docs/benchmarks-history.md).
const HELD_BYTES_PER_GRACE_SECOND: usize = 12 * 1024 * 1024;

/// The share of the ceiling a new bound starts at. Until the first traces fall due the analysis
/// is idle and ingest runs up to twice as fast as beside it; what it takes in then falls due at
/// that rate. Starting at half the ceiling keeps those traces less late than starting at the
/// ceiling; the first late batches measure the analysed rate, and the bound is up to that rate's
/// worth as soon as batches leave on time.
const START: f64 = 0.5;

/// How late the oldest due trace may be when a batch is taken. Past it the bound holds intake
/// back, so exporters wait, each for its own export, rather than every trace waiting past its
/// grace period. Refusing every block while late is worse: the grace period's pipeline empties,
/// and a grace period later the analysis starves (docs/benchmarks-history.md).
const TARGET_LATENESS: Duration = Duration::from_millis(250);

/// The share by which the bound grows per batch taken on time while it holds intake back: about
/// 5% a second at full rate. The effect of a move shows a grace period later, so a faster step
/// overshoots: the bound swings and the analysed rate falls (docs/benchmarks-history.md). Late
/// batches bring it down at once to what the analysis takes in a grace period and the target
/// lateness, and on-time ones back up to it at once; until that rate is known, by the same step.
const STEP: f64 = 0.002;

/// The share of the bound held when a batch is taken past which the bound is holding intake
/// back. Below it a larger bound would change nothing now, and would let the next burst in.
const PRESSED: f64 = 0.9;

/// The least share of the ceiling the bound keeps, so that after a long stall of the analysis
/// intake is not held low for long: at the default 2 s, 6 MiB, a grace period at about 85,000
/// spans/s.
const FLOOR: f64 = 0.25;

/// The weight a rate sample keeps per sample after it: about the last 20 batches, under a second
/// at full rate.
const RATE_DECAY: f64 = 0.95;

/// The most block bytes held for a grace period.
fn max_held_bytes(grace_period: Duration) -> usize {
    let seconds = grace_period.as_secs_f64().max(1.0);
    (HELD_BYTES_PER_GRACE_SECOND as f64 * seconds) as usize
}

/// The bytes the analysis lets go per second while it is behind, over its last batches.
#[derive(Debug, Default)]
struct AnalysedRate {
    bytes: f64,
    seconds: f64,
}

impl AnalysedRate {
    fn add(&mut self, bytes: usize, elapsed: Duration) {
        self.bytes = self.bytes * RATE_DECAY + bytes as f64;
        self.seconds = self.seconds * RATE_DECAY + elapsed.as_secs_f64();
    }

    fn per_second(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.bytes / self.seconds)
    }
}

#[derive(Debug)]
pub(super) struct HeldBound {
    bound: usize,
    ceiling: usize,
    /// What the analysis would take in this long keeps it busy without backlog past the target.
    horizon: Duration,
    analysed: AnalysedRate,
    /// The batches taken late in a row, and when the last of them was. The time from one to the
    /// next is the analysis' alone, except from the first of a run to the second: an idle
    /// analysis takes the first at once, and the second follows it in no time.
    late_run: Option<LateRun>,
}

#[derive(Debug, Clone, Copy)]
struct LateRun {
    batches: u32,
    last: Instant,
}

impl HeldBound {
    pub(super) fn new(grace_period: Duration) -> Self {
        let ceiling = max_held_bytes(grace_period);
        HeldBound {
            bound: (ceiling as f64 * START) as usize,
            ceiling,
            horizon: grace_period.saturating_add(TARGET_LATENESS),
            analysed: AnalysedRate::default(),
            late_run: None,
        }
    }

    pub(super) fn get(&self) -> usize {
        self.bound
    }

    /// Follows a batch taken at `now` from `held` block bytes, which let go of `released` of
    /// them, its oldest trace `lateness` past its grace period (`None` when nothing was due: the
    /// lateness of a batch is not known before it is due).
    pub(super) fn batch_taken(
        &mut self,
        now: Instant,
        lateness: Option<Duration>,
        held: usize,
        released: usize,
    ) {
        let Some(lateness) = lateness else {
            self.late_run = None;
            return;
        };
        let bound = self.bound as f64;
        let next = if lateness > TARGET_LATENESS {
            let run = self.late_run.map_or(0, |run| run.batches);
            if let Some(previous) = self.late_run.filter(|_| run >= 2) {
                self.analysed.add(released, now - previous.last);
            }
            self.late_run = Some(LateRun {
                batches: run.saturating_add(1),
                last: now,
            });
            match self.analysed.per_second() {
                Some(rate) => bound.min(rate * self.horizon.as_secs_f64()),
                None => bound * (1.0 - STEP),
            }
        } else {
            self.late_run = None;
            if held as f64 >= bound * PRESSED {
                let analysed = self.analysed.per_second().unwrap_or(0.0);
                (bound * (1.0 + STEP)).max(analysed * self.horizon.as_secs_f64())
            } else {
                bound
            }
        };
        self.bound = next.clamp(self.ceiling as f64 * FLOOR, self.ceiling as f64) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    /// Takes `n` batches half a second late, `every` apart from `start`, each letting go of 1 MiB.
    fn take_late_batches(bound: &mut HeldBound, start: Instant, every: Duration, n: u32) {
        for k in 0..n {
            let late = Some(Duration::from_millis(500));
            bound.batch_taken(start + every * k, late, bound.get(), MIB);
        }
    }

    /// What one step down makes of `bytes`, as the bound computes it.
    fn stepped_down(bytes: usize) -> usize {
        (bytes as f64 * (1.0 - STEP)) as usize
    }

    #[test]
    fn the_ceiling_follows_the_grace_period_and_never_closes() {
        assert_eq!(max_held_bytes(Duration::from_secs(2)), 24 * MIB);
        assert_eq!(max_held_bytes(Duration::from_secs(10)), 120 * MIB);
        assert_eq!(
            max_held_bytes(Duration::ZERO),
            12 * MIB,
            "without a grace period blocks still flow"
        );
    }

    #[test]
    fn a_new_bound_is_half_its_ceiling_and_a_late_batch_steps_it_down_until_the_rate_is_known() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        assert_eq!(bound.get(), 12 * MIB);
        bound.batch_taken(Instant::now(), Some(Duration::from_secs(1)), 12 * MIB, MIB);
        assert_eq!(bound.get(), stepped_down(12 * MIB));
    }

    #[test]
    fn a_stalled_analysis_brings_the_bound_to_its_floor_and_on_time_batches_grow_it_back() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        let start = Instant::now();
        let late = Some(Duration::from_secs(1));
        for n in 0..3 {
            bound.batch_taken(start + Duration::from_secs(n), late, 12 * MIB, 0);
        }
        assert_eq!(
            bound.get(),
            6 * MIB,
            "nothing let go in a second: the floor"
        );
        bound.batch_taken(start + Duration::from_secs(3), None, 6 * MIB, 0);
        assert_eq!(bound.get(), 6 * MIB, "nothing due moves nothing");
        for n in 0..1_000 {
            let now = start + Duration::from_secs(4) + Duration::from_millis(n);
            bound.batch_taken(now, Some(Duration::ZERO), bound.get(), MIB);
        }
        assert_eq!(
            bound.get(),
            24 * MIB,
            "grown to the ceiling and not past it"
        );
    }

    #[test]
    fn on_time_batches_grow_the_bound_only_while_it_holds_intake_back() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        let start = Instant::now();
        for n in 0..1_000 {
            let now = start + Duration::from_millis(n);
            bound.batch_taken(now, Some(Duration::ZERO), 10 * MIB, MIB);
        }
        assert_eq!(
            bound.get(),
            12 * MIB,
            "10 MiB held under a 12 MiB bound: a burst would only fill a larger one"
        );
        bound.batch_taken(start, Some(Duration::ZERO), 11 * MIB, MIB);
        assert_eq!(bound.get(), (12.0 * MIB as f64 * (1.0 + STEP)) as usize);
    }

    #[test]
    fn late_batches_bring_the_bound_down_to_what_the_analysis_takes_in_the_horizon() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        // The analysis lets go of 4 MiB a second.
        take_late_batches(&mut bound, Instant::now(), Duration::from_millis(250), 40);
        assert!(
            bound.get().abs_diff(9 * MIB) <= 1,
            "{} bytes: a grace period and the target lateness at 4 MiB/s, and no lower while \
             still late",
            bound.get()
        );
    }

    #[test]
    fn an_on_time_batch_brings_the_bound_back_up_to_what_the_analysis_takes_in_the_horizon() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        let start = Instant::now();
        // Late at 8 MiB a second: 18 MiB would do, so the bound stays where the first two late
        // batches, before the rate was known, stepped it.
        take_late_batches(&mut bound, start, Duration::from_millis(125), 10);
        let stepped = stepped_down(stepped_down(12 * MIB));
        assert_eq!(bound.get(), stepped);
        let on_time = Some(Duration::ZERO);
        bound.batch_taken(start + Duration::from_secs(2), on_time, 6 * MIB, MIB);
        assert_eq!(bound.get(), stepped, "not while intake is not held back");
        bound.batch_taken(start + Duration::from_secs(2), on_time, 12 * MIB, MIB);
        assert!(bound.get().abs_diff(18 * MIB) <= 1, "{} bytes", bound.get());
    }

    #[test]
    fn the_rate_follows_the_analysis_as_it_slows() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        let start = Instant::now();
        // 8 MiB a second for 5 s, then 4 MiB a second.
        take_late_batches(&mut bound, start, Duration::from_millis(125), 40);
        let rate = |bound: &HeldBound| bound.analysed.per_second().unwrap() / MIB as f64;
        assert!((rate(&bound) - 8.0).abs() < 0.01, "{}", rate(&bound));
        let slower = start + Duration::from_secs(5);
        take_late_batches(&mut bound, slower, Duration::from_millis(250), 2);
        assert!(
            rate(&bound) > 7.0,
            "one batch moves it a little: {}",
            rate(&bound)
        );
        take_late_batches(
            &mut bound,
            slower + Duration::from_millis(500),
            Duration::from_millis(250),
            60,
        );
        assert!(
            (rate(&bound) - 4.0).abs() < 0.2,
            "60 batches on: {}",
            rate(&bound)
        );
    }

    #[test]
    fn the_second_batch_of_a_late_run_is_not_timed() {
        let mut bound = HeldBound::new(Duration::from_secs(2));
        let start = Instant::now();
        let late = Some(Duration::from_secs(1));
        // An idle analysis takes the first batch at once, and the second follows in a
        // millisecond: that is not how fast the analysis goes.
        bound.batch_taken(start, late, MIB, MIB);
        bound.batch_taken(start + Duration::from_millis(1), late, MIB, MIB);
        assert!(bound.analysed.per_second().is_none());
        bound.batch_taken(start + Duration::from_millis(1_001), late, MIB, MIB);
        assert_eq!(bound.analysed.per_second(), Some(MIB as f64));
    }

    #[test]
    fn time_after_an_on_time_batch_or_none_due_is_not_taken_for_analysis() {
        let late = Some(Duration::from_secs(1));
        for between in [Some(Duration::ZERO), None] {
            let mut bound = HeldBound::new(Duration::from_secs(2));
            let start = Instant::now();
            for n in 0..3 {
                bound.batch_taken(start + Duration::from_secs(n), late, MIB, MIB);
            }
            assert_eq!(bound.analysed.per_second(), Some(MIB as f64));
            // On time (or nothing due), then late again ten seconds later: those ten seconds
            // were spent waiting for traces to fall due, and would make the analysis look ten
            // times slower than it is.
            bound.batch_taken(start + Duration::from_secs(3), between, MIB, MIB);
            for n in 13..16 {
                bound.batch_taken(start + Duration::from_secs(n), late, MIB, MIB);
            }
            assert_eq!(bound.analysed.per_second(), Some(MIB as f64), "{between:?}");
        }
    }
}
