//! The bench's output: a header saying what ran (and the raw limit, with `--limit`), one table of
//! figures with a column per run, then each run's samples over time.
//!
//! Invariant: prints what was measured, with units; computes ratios, never new measurements.

use std::time::Duration;

use super::histogram::Histogram;
use super::limit::RawLimit;
use super::refusal::Refusals;
use super::sample::{self, Sample};
use super::{BenchArgs, Protocol, Traffic, soak};

/// What one run measured.
pub(super) struct Measured {
    pub(super) analysis: bool,
    pub(super) accepted: u64,
    pub(super) refused: u64,
    pub(super) send_secs: f64,
    pub(super) stored: f64,
    /// From the start of sending until everything acknowledged was committed.
    pub(super) stored_secs: f64,
    pub(super) analysed_requests: f64,
    /// From the start of sending until every acknowledged request was analysed.
    pub(super) analysed_secs: f64,
    pub(super) latency_p50_ms: f64,
    pub(super) latency_p99_ms: f64,
    pub(super) peak_rss: u64,
    pub(super) disk_bytes: u64,
    /// CPU seconds the server processes used while the load ran.
    pub(super) server_cpu_sending: Option<f64>,
    /// CPU seconds the server processes used from the end of sending until caught up.
    pub(super) server_cpu_catch_up: Option<f64>,
    /// CPU seconds this process (the load generator) used while the load ran.
    pub(super) bench_cpu_sending: Option<f64>,
    pub(super) samples: Vec<Sample>,
    /// Export to visible in `/api/v1/endpoint` of each probe, shortest first (analysis on).
    pub(super) visible: Vec<Duration>,
    /// Export to acknowledged of each probe, shortest first.
    pub(super) acknowledged: Vec<Duration>,
    /// The servers' analysis delay (spans committed to analysis committed) over every trace.
    pub(super) analysis_delay: Histogram,
    /// How the normal exports were refused, and for how long at a stretch.
    pub(super) refusals: Refusals,
    /// With `--hostile`: what the soak's own clients measured.
    pub(super) soak: Option<soak::Figures>,
}

impl Measured {
    fn catch_up_secs(&self) -> f64 {
        (self.stored_secs.max(self.analysed_secs) - self.send_secs).max(0.0)
    }

    /// Spans both stored and analysed per second, counted until the last was analysed.
    fn stored_and_analysed_per_sec(&self) -> Option<f64> {
        self.analysis.then(|| {
            self.stored.min(self.analysed_requests * 10.0)
                / self.analysed_secs.max(self.stored_secs)
        })
    }

    fn stored_per_sec(&self) -> f64 {
        self.stored / self.stored_secs
    }

    fn server_cpu_secs_per_million(&self) -> Option<f64> {
        let cpu = self.server_cpu_sending? + self.server_cpu_catch_up?;
        (self.stored > 0.0).then(|| cpu / (self.stored / 1e6))
    }
}

/// `1234567.8` as `1,234,568`.
pub(super) fn thousands(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if rounded < 0.0 {
        out.push('-');
    }
    for (idx, digit) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1_048_576.0)
}

/// A delay histogram as "2.42 / 3.10 s / 98.5% (1,000,000 traces)"; "-" when empty.
fn delay_quantiles(delay: &Histogram) -> String {
    match (
        delay.quantile(0.5),
        delay.quantile(0.99),
        delay.share_within(3.0),
    ) {
        (Some(p50), Some(p99), Some(within)) => format!(
            "{p50:.2} / {p99:.2} s / {:.1}% ({} traces)",
            within * 100.0,
            thousands(delay.count())
        ),
        _ => "-".to_owned(),
    }
}

/// Times sorted shortest first, as "2.24 / 2.56 s (200 probes)"; "-" for none.
fn median_and_max(sorted: &[Duration]) -> String {
    match (sorted.get(sorted.len() / 2), sorted.last()) {
        (Some(median), Some(max)) => format!(
            "{:.2} / {:.2} s ({} probes)",
            median.as_secs_f64(),
            max.as_secs_f64(),
            sorted.len()
        ),
        _ => "-".to_owned(),
    }
}

fn cores(cpu_secs: Option<f64>, wall_secs: f64) -> String {
    match cpu_secs {
        Some(cpu) if wall_secs >= 0.05 => format!("{:.2} cores", cpu / wall_secs),
        _ => "-".to_owned(),
    }
}

/// The share of the raw limit a rate is, as " (62% of the limit)"; empty without `--limit`.
fn of_limit(spans_per_sec: f64, limit: Option<&RawLimit>) -> String {
    limit.map_or(String::new(), |limit| {
        format!(
            " ({:.0}% of the limit)",
            spans_per_sec / limit.insert_spans_per_sec * 100.0
        )
    })
}

/// The whole report.
pub(super) fn print(
    args: &BenchArgs,
    traffic: &Traffic,
    limit: Option<&RawLimit>,
    load_average: Option<&str>,
    results: &[Measured],
) {
    print_header(args, traffic, limit, load_average);
    print_table(args, limit, results);
    for measured in results {
        print_samples(args, measured);
        soak::print(measured);
    }
}

fn print_header(
    args: &BenchArgs,
    traffic: &Traffic,
    limit: Option<&RawLimit>,
    load_average: Option<&str>,
) {
    let protocol = match (args.protocol, args.gzip) {
        (Protocol::Http, false) => "OTLP/HTTP protobuf",
        (Protocol::Http, true) => "OTLP/HTTP protobuf, gzip",
        (Protocol::Json, false) => "OTLP/HTTP JSON",
        (Protocol::Json, true) => "OTLP/HTTP JSON, gzip",
        (Protocol::Grpc, false) => "OTLP/gRPC",
        (Protocol::Grpc, true) => "OTLP/gRPC, gzip",
    };
    let load = match args.rate {
        Some(rate) => format!("a fixed rate of {} spans/s", thousands(rate as f64)),
        None => "closed loop".to_owned(),
    };
    println!(
        "{}, {} instance(s), {protocol}, {} connections, {load}, {} s of sending",
        if args.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.instances.max(1),
        args.connections,
        thousands(args.duration.as_secs_f64()),
    );
    let wire = match (traffic.gzip_bytes, args.protocol) {
        (Some((sent, level_6)), _) => format!(
            "{} B plain, {} B gzip as sent (fastest level; level 6: {} B)",
            thousands(traffic.plain_bytes as f64),
            thousands(sent as f64),
            thousands(level_6 as f64)
        ),
        (None, Protocol::Grpc) if args.gzip => format!(
            "{} B plain, compressed by tonic per send",
            thousands(traffic.plain_bytes as f64)
        ),
        (None, _) => format!("{} B", thousands(traffic.plain_bytes as f64)),
    };
    println!(
        "{} spans per export: {wire}; load average before the run: {}",
        traffic.spans_per_export,
        load_average.unwrap_or("-")
    );
    if let Some(limit) = limit {
        let per_million = |cpu: Option<f64>| {
            cpu.map_or(String::new(), |cpu| {
                format!(", {cpu:.2} CPU-s per million spans")
            })
        };
        println!(
            "raw limit, measured before the server ran: decode only {} spans/s ({} threads{}); \
             decode + bare SQLite insert {} spans/s ({} decoding, 1 writing{})",
            thousands(limit.decode_spans_per_sec),
            limit.decode_threads,
            per_million(limit.decode_cpu_secs_per_million),
            thousands(limit.insert_spans_per_sec),
            limit.insert_decode_threads,
            per_million(limit.insert_cpu_secs_per_million),
        );
    }
    println!();
}

fn print_table(args: &BenchArgs, limit: Option<&RawLimit>, results: &[Measured]) {
    let columns: Vec<&str> = results
        .iter()
        .map(|m| {
            if m.analysis {
                "analysis on"
            } else {
                "analysis off"
            }
        })
        .collect();
    println!("| figure | {} |", columns.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    let row = |name: &str, value: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = results.iter().map(value).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("spans acknowledged per second", &|m| {
        let per_sec = m.accepted as f64 / m.send_secs;
        format!("{}{}", thousands(per_sec), of_limit(per_sec, limit))
    });
    if let Some(rate) = args.rate {
        row("achieved rate / requested", &|m| {
            format!(
                "{:.1}%",
                m.accepted as f64 / m.send_secs / rate as f64 * 100.0
            )
        });
    }
    row("spans refused (told to retry)", &|m| {
        thousands(m.refused as f64)
    });
    row(
        "longest stretch from a refused export to the next acknowledged",
        &|m| {
            m.refusals
                .longest
                .as_ref()
                .map_or("-".to_owned(), |stretch| {
                    format!("{:.1} s", stretch.length().as_secs_f64())
                })
        },
    );
    row("spans stored", &|m| thousands(m.stored));
    row(
        "spans stored per second (until the last is committed)",
        &|m| {
            format!(
                "{}{}",
                thousands(m.stored_per_sec()),
                of_limit(m.stored_per_sec(), limit)
            )
        },
    );
    row("catch-up after sending stopped", &|m| {
        format!("{:.1} s", m.catch_up_secs())
    });
    row("requests analysed", &|m| thousands(m.analysed_requests));
    row("spans stored and analysed per second", &|m| {
        m.stored_and_analysed_per_sec()
            .map_or("-".to_owned(), |per_sec| {
                format!("{}{}", thousands(per_sec), of_limit(per_sec, limit))
            })
    });
    row(
        "export to visible in /api/v1/endpoint, median / max",
        &|m| median_and_max(&m.visible),
    );
    row("  of which until acknowledged, median / max", &|m| {
        median_and_max(&m.acknowledged)
    });
    row(
        "analysis delay of every trace, p50 / p99 / within 3 s",
        &|m| delay_quantiles(&m.analysis_delay),
    );
    row("  of the traces after the first sample", &|m| {
        m.samples.first().map_or("-".to_owned(), |first| {
            format!(
                "{} (from {:.0} s)",
                delay_quantiles(&m.analysis_delay.since(&first.analysis_delay)),
                first.at.as_secs_f64()
            )
        })
    });
    row("export latency p50 / p99", &|m| {
        format!("{:.1} / {:.1} ms", m.latency_p50_ms, m.latency_p99_ms)
    });
    row("server CPU while sending", &|m| {
        cores(m.server_cpu_sending, m.send_secs)
    });
    row("server CPU during catch-up", &|m| {
        cores(m.server_cpu_catch_up, m.catch_up_secs())
    });
    row("server CPU per million spans stored", &|m| {
        m.server_cpu_secs_per_million()
            .map_or("-".to_owned(), |cpu| {
                let floor = limit
                    .and_then(|limit| limit.insert_cpu_secs_per_million)
                    .map_or(String::new(), |floor| {
                        format!(" ({:.1}x the limit's)", cpu / floor)
                    });
                format!("{cpu:.2} CPU-s{floor}")
            })
    });
    row("bench client CPU while sending", &|m| {
        cores(m.bench_cpu_sending, m.send_secs)
    });
    row("server peak RSS (all instances)", &|m| mib(m.peak_rss));
    row("server RSS growth under load", &|m| {
        sample::rss_growth(&m.samples, sample::WARM_UP).map_or("-".to_owned(), |growth| {
            format!(
                "{:+.1}% ({} s to {} s; {} to {} between); means of the halves {} and {} ({:+.1}%)",
                growth.percent,
                growth.from.as_secs(),
                growth.to.as_secs(),
                mib(growth.min_bytes),
                mib(growth.max_bytes),
                mib(growth.half_means_bytes.0),
                mib(growth.half_means_bytes.1),
                growth.half_means_percent()
            )
        })
    });
    row("bytes on disk per stored span", &|m| {
        format!("{:.1} B", m.disk_bytes as f64 / m.stored.max(1.0))
    });
    if let [off, on] = results {
        println!(
            "\nanalysis on / off, spans stored per second: {:.2}",
            (on.stored / on.analysed_secs.max(on.stored_secs)) / off.stored_per_sec()
        );
    }
    if let Some(limit) = limit {
        for measured in results.iter().filter(|m| m.analysis) {
            let per_sec = measured.stored_and_analysed_per_sec().unwrap_or(0.0);
            let share = per_sec / limit.insert_spans_per_sec;
            println!(
                "\ngoal, spans stored and analysed per second >= 50% of the raw limit \
                 (decode + bare insert): {:.0}%, {}",
                share * 100.0,
                if share >= 0.5 { "met" } else { "not met" }
            );
        }
    }
}

fn print_samples(args: &BenchArgs, measured: &Measured) {
    if measured.samples.is_empty() {
        return;
    }
    println!(
        "\nsamples, analysis {} (every {} s, summed over instances; the last after catch-up):\n",
        if measured.analysis { "on" } else { "off" },
        args.sample_every.as_secs_f64()
    );
    println!("| time | spans stored | RSS | open fds | threads | tokio tasks |");
    println!("|---|---|---|---|---|---|");
    let figure = |value: Option<u64>| value.map_or("-".to_owned(), |n| thousands(n as f64));
    for sample in &measured.samples {
        println!(
            "| {}{} | {} | {} | {} | {} | {} |",
            seconds(sample.at),
            if sample.catching_up {
                " (catch-up)"
            } else {
                ""
            },
            figure(sample.spans_stored),
            sample.rss_bytes.map_or("-".to_owned(), mib),
            figure(sample.open_fds),
            figure(sample.threads),
            figure(sample.tasks),
        );
    }
}

fn seconds(at: Duration) -> String {
    format!("{:.0} s", at.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(251_409.0), "251,409");
        assert_eq!(thousands(1_234_567_890.0), "1,234,567,890");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }

    #[test]
    fn cores_are_cpu_over_wall_time() {
        assert_eq!(cores(Some(19.8), 15.0), "1.32 cores");
        assert_eq!(cores(None, 15.0), "-");
        assert_eq!(cores(Some(0.01), 0.0), "-");
    }
}
