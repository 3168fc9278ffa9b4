//! The store failing during ingest. With PostgreSQL, a proxy of the test's own between the server
//! and the database is cut (every connection dropped, new ones refused) for a few seconds and then
//! restored, so every connection the server held is dead, as after a database restart; then the
//! database "restarts" once more without any gap. The machine's PostgreSQL, which other tests
//! share, is never touched. SQLite's failure, a full disk, is `crash.rs`'s
//! `a_full_disk_is_503_and_ingest_recovers_when_space_returns`.
//!
//! Exporters send all along, each retrying a refused export as an exporter does. Afterwards every
//! span answered 200 must be in the store, and its request analysed.

#[cfg(not(feature = "pg-tests"))]
#[tokio::test]
async fn postgres_going_away_loses_nothing_acknowledged_and_ingest_resumes() {
    println!("skipped: the PostgreSQL outage test needs `--features pg-tests` and DATABASE_URL");
}

#[cfg(feature = "pg-tests")]
mod postgres {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use bottleneck::config::DatabaseUrl;
    use bottleneck::store::{Store, Window};
    use collector::model::TraceId;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use tokio::sync::watch;

    use crate::crash::{Server, start_server_with};
    use crate::ingest::login_request;
    use crate::proxy::Proxy;
    use crate::support::{TestDatabase, http_client};

    /// How long the database stays unreachable: longer than the store's 5 s acquire timeout, so
    /// exports are refused rather than merely delayed.
    const OUTAGE: Duration = Duration::from_secs(8);

    /// The longest an export may wait for its refusal: one attempt of the store (5 s) plus room
    /// for a busy machine, and under the 10 s an OpenTelemetry exporter waits by default.
    const QUICK: Duration = Duration::from_secs(8);

    /// The error logged once when an outage starts, and the line when it ends.
    const OUTAGE_STARTS: &str = "store unavailable: committing span blocks failed";
    const OUTAGE_ENDS: &str = "store available again";

    const N_EXPORTERS: u8 = 4;

    /// How long ingest runs undisturbed before, between and after the faults.
    const STEADY: Duration = Duration::from_secs(2);

    /// One export's answer.
    #[derive(Debug, Clone)]
    struct Answer {
        /// None: no HTTP answer at all (connection refused, reset, timeout).
        status: Option<u16>,
        retry_after: Option<String>,
        sent: Instant,
        took: Duration,
    }

    fn now_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64
    }

    fn trace_of(worker: u8, seq: u32) -> [u8; 16] {
        let mut id = [0x0a; 16];
        id[0] = worker;
        id[1..5].copy_from_slice(&seq.to_be_bytes());
        id
    }

    /// A login trace (a request and its query) in trace `trace`, timed a second ago.
    fn export_of(trace: [u8; 16]) -> ExportTraceServiceRequest {
        let mut request = login_request(5);
        let spans = &mut request.resource_spans[0].scope_spans[0].spans;
        let shift = now_ns() - 1_000_000_000 - spans[0].start_time_unix_nano;
        for span in spans.iter_mut() {
            span.trace_id = trace.to_vec();
            span.start_time_unix_nano += shift;
            span.end_time_unix_nano += shift;
        }
        request
    }

    /// Exports from `N_EXPORTERS` tasks until `stop`; a refused export is retried (as is) after
    /// 200 ms. Every answer goes into `answers`; returns the acknowledged traces.
    fn exporters(
        url: &str,
        answers: &Arc<Mutex<Vec<Answer>>>,
        stop: &watch::Receiver<bool>,
    ) -> tokio::task::JoinSet<Vec<[u8; 16]>> {
        let client = http_client();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 1..=N_EXPORTERS {
            let (client, url, answers, stop) = (
                client.clone(),
                format!("{url}/v1/traces"),
                Arc::clone(answers),
                stop.clone(),
            );
            tasks.spawn(async move {
                let mut acked = Vec::new();
                let mut seq = 0;
                while !*stop.borrow() {
                    let trace = trace_of(worker, seq);
                    let sent = Instant::now();
                    let res = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(export_of(trace).encode_to_vec())
                        .send()
                        .await;
                    let answer = Answer {
                        status: res.as_ref().ok().map(|res| res.status().as_u16()),
                        retry_after: res.as_ref().ok().and_then(|res| {
                            let value = res.headers().get("retry-after")?;
                            Some(value.to_str().ok()?.to_owned())
                        }),
                        sent,
                        took: sent.elapsed(),
                    };
                    let pause = if answer.status == Some(200) {
                        acked.push(trace);
                        seq += 1;
                        Duration::from_millis(10)
                    } else {
                        Duration::from_millis(200)
                    };
                    answers.lock().unwrap().push(answer);
                    tokio::time::sleep(pause).await;
                }
                acked
            });
        }
        tasks
    }

    /// Polls `check` every 50 ms until it holds, for at most `limit`; returns how long it took.
    async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    }

    async fn get(url: String) -> (u16, String, Duration) {
        let started = Instant::now();
        let res = http_client()
            .get(url)
            .send()
            .await
            .expect("the server answers");
        let status = res.status().as_u16();
        (
            status,
            res.text().await.unwrap_or_default(),
            started.elapsed(),
        )
    }

    /// The value of an unlabelled metric.
    fn metric(metrics: &str, name: &str) -> Option<f64> {
        metrics.lines().find_map(|line| {
            let value = line.strip_prefix(name)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }

    /// The database URL with its host and port replaced by the proxy's, and the address the
    /// proxy forwards to.
    async fn through_proxy(direct: &str) -> (reqwest::Url, std::net::SocketAddr) {
        let url = reqwest::Url::parse(direct).expect("a database URL");
        let host = url.host_str().expect("DATABASE_URL names a host");
        let port = url.port().unwrap_or(5432);
        let addrs: Vec<_> = tokio::net::lookup_host((host, port))
            .await
            .expect("the database host resolves")
            .collect();
        let upstream = addrs
            .iter()
            .find(|addr| addr.is_ipv4())
            .or(addrs.first())
            .copied()
            .expect("an address for the database host");
        (url, upstream)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_going_away_loses_nothing_acknowledged_and_ingest_resumes() {
        let db = TestDatabase::postgres().await;
        let direct = db.cli_url();
        let (mut proxied, upstream) = through_proxy(&direct).await;
        let mut proxy = Proxy::start(upstream).await;
        proxied.set_host(Some("127.0.0.1")).unwrap();
        proxied.set_port(Some(proxy.addr.port())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bottleneck.toml");
        std::fs::write(&config, "[analysis]\ngrace_period = \"300ms\"\n").unwrap();
        let server: Server = start_server_with(
            proxied.as_str(),
            &["--config", &config.display().to_string()],
            None,
        );
        let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = exporters(&server.otlp_http_url, &answers, &stopped);
        let acked_since = |from: Instant| {
            answers
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.sent >= from && a.status == Some(200))
                .count()
        };
        let started = Instant::now();
        until("ingest before the outage", Duration::from_secs(20), || {
            acked_since(started) >= 40
        })
        .await;
        tokio::time::sleep(STEADY.saturating_sub(started.elapsed())).await;

        // (a) Unreachable: every connection dropped, new ones refused.
        let cut_at = Instant::now();
        proxy.cut().await;
        until("a refusal during the outage", QUICK + QUICK, || {
            answers
                .lock()
                .unwrap()
                .iter()
                .any(|a| a.sent >= cut_at && a.status == Some(503))
        })
        .await;
        let (health, _, health_took) = get(format!("{}/healthz", server.ui_url)).await;
        assert_eq!(health, 200, "the server is up during the outage");
        let (_, metrics, metrics_took) = get(format!("{}/metrics", server.ui_url)).await;
        assert_eq!(
            metric(&metrics, "bottleneck_store_up"),
            Some(0.0),
            "{metrics}"
        );
        assert!(metric(&metrics, "bottleneck_commit_failures_total") >= Some(1.0));
        let (ready, _, _) = get(format!("{}/readyz", server.ui_url)).await;
        tokio::time::sleep(OUTAGE.saturating_sub(cut_at.elapsed())).await;
        assert_eq!(
            server.log_count(OUTAGE_STARTS),
            1,
            "one error line per outage, not per export"
        );

        // (b) Back, as after a restart: the pool's connections are all dead.
        let restored_at = Instant::now();
        proxy.restore().await;
        let recovered_after = until("ingest after the outage", Duration::from_secs(30), || {
            acked_since(restored_at) >= 1
        })
        .await;
        until(
            "the end of the outage in the log",
            Duration::from_secs(10),
            || server.log_count(OUTAGE_ENDS) == 1,
        )
        .await;
        let (_, metrics, _) = get(format!("{}/metrics", server.ui_url)).await;
        assert_eq!(metric(&metrics, "bottleneck_store_up"), Some(1.0));
        tokio::time::sleep(STEADY).await;

        // (c) A restart with no gap at all: connections dropped, new ones taken at once.
        let acked_before = acked_since(started);
        let bounced_at = Instant::now();
        proxy.cut().await;
        proxy.restore().await;
        until(
            "ingest after a restart without a gap",
            Duration::from_secs(20),
            || acked_since(bounced_at) >= 40,
        )
        .await;
        tokio::time::sleep(STEADY.saturating_sub(bounced_at.elapsed())).await;
        let _ = stop.send(true);
        let mut acknowledged = HashSet::new();
        while let Some(acked) = tasks.join_next().await {
            acknowledged.extend(acked.unwrap());
        }
        assert!(acknowledged.len() > acked_before);

        // Every answer was an HTTP answer; every refusal retryable and quick.
        let answers = answers.lock().unwrap().clone();
        assert!(
            answers.iter().all(|a| a.status.is_some()),
            "an export got no answer"
        );
        let refusals: Vec<&Answer> = answers.iter().filter(|a| a.status != Some(200)).collect();
        for refusal in &refusals {
            let expected = match refusal.status {
                Some(503) => "5",
                Some(429) => "1",
                other => panic!("an export was answered {other:?}"),
            };
            assert_eq!(refusal.retry_after.as_deref(), Some(expected));
            assert!(refusal.took < QUICK, "a refusal took {:?}", refusal.took);
        }
        let in_outage: Vec<&Answer> = answers
            .iter()
            .filter(|a| a.sent >= cut_at && a.sent + a.took <= restored_at)
            .collect();
        assert!(
            in_outage.iter().all(|a| a.status != Some(200)),
            "success while the database was unreachable"
        );
        let slowest = in_outage.iter().map(|a| a.took).max().unwrap_or_default();
        assert_eq!(
            server.log_count(OUTAGE_STARTS),
            server.log_count(OUTAGE_ENDS),
            "every outage logged has ended"
        );

        // Every acknowledged span is stored, read straight from the database.
        let store = Store::open(&DatabaseUrl::Postgres(direct.clone()))
            .await
            .unwrap();
        let (mut n_spans_found, mut n_stored_twice) = (0, 0);
        for trace in &acknowledged {
            let spans = store
                .trace(TraceId(*trace))
                .await
                .unwrap()
                .unwrap_or_default();
            let distinct: HashSet<_> = spans.iter().map(|span| span.span_id).collect();
            assert_eq!(distinct.len(), 2, "acknowledged trace {trace:?} lost");
            n_spans_found += distinct.len();
            // Refused after its commit went through unseen, then retried: stored twice, which
            // the analysis counts once.
            n_stored_twice += usize::from(spans.len() > 2);
        }
        // And analysed, well before the 60 s lease of a claim lost in the outage would expire.
        let window = Window {
            from_unix_ns: now_ns() - 3_600_000_000_000,
            to_unix_ns: now_ns() + 60_000_000_000,
        };
        let last_export = Instant::now();
        loop {
            let requests = store.requests(window, None, 0, 1_000_000).await.unwrap();
            let analysed: HashSet<[u8; 16]> = requests.iter().map(|r| r.trace_id.0).collect();
            let missing = acknowledged.difference(&analysed).count();
            if missing == 0 {
                break;
            }
            assert!(
                last_export.elapsed() < Duration::from_secs(40),
                "{missing} acknowledged traces not analysed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let analysis_took = last_export.elapsed();
        eprintln!(
            "PostgreSQL outage of {OUTAGE:?}: {} exports ({} spans) acknowledged, {} spans found \
             ({n_stored_twice} traces stored twice); {} refusals ({} answered 503), slowest \
             answer during the outage {slowest:?}; \
             /healthz {health} in {health_took:?}, /readyz {ready}, /metrics in {metrics_took:?}; \
             ingest back {recovered_after:?} after the restore; analysis caught up \
             {analysis_took:?} after the last export",
            acknowledged.len(),
            acknowledged.len() * 2,
            n_spans_found,
            refusals.len(),
            refusals.iter().filter(|a| a.status == Some(503)).count(),
        );
        store.close().await;
        server.kill();
        drop(proxy);
        drop(db);
    }
}
