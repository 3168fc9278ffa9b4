//! The store conformance suite: every backend must pass it, through the public `Store` API
//! only. SQLite always runs; the PostgreSQL twin runs with the `pg-tests` feature against
//! `DATABASE_URL`, and says it was skipped otherwise.

use std::time::{Duration, Instant};

use bottleneck::analysis::aggregate::Rollup;
use bottleneck::analysis::{AnalysisConfig, Breakdown, analyze_trace, fixture};
use bottleneck::store::settings::DatabaseUrl;
use bottleneck::store::*;
use collector::model::{SpanId, TraceId};

const LOGIN: &str = "auth: POST /login 0..300 server http.request.method=POST http.route=/login
  SELECT tenants 10..30 client db.system=postgresql db.statement=\"SELECT * FROM tenants WHERE id = 42\" code.file.path=app/tenants.py code.line.number=12 code.function.name=tenant
  SELECT tenants 30..50 client db.system=postgresql db.statement=\"SELECT * FROM tenants WHERE id = 42\" code.file.path=app/tenants.py code.line.number=12 code.function.name=tenant
  idp: POST /saml 60..160 client http.request.method=POST server.address=idp";

/// Runs every check against one store.
pub async fn run_all(store: &Store) {
    blocks_round_trip_and_index_traces(store).await;
    analysis_commit_round_trips(store).await;
    alert_outbox_round_trips(store).await;
    alert_evaluation_round_trips(store).await;
    comparison_reads_round_trip(store).await;
    long_windows_read_hourly_rows(store).await;
    merged_rollups_keep_versions_apart_and_saturate(store).await;
    rollup_changes_add_and_take_back(store).await;
    claims_hand_each_trace_to_one_analyzer(store).await;
    slowest_requests_merge_endpoints(store).await;
    newest_requests_of_an_endpoint_between_durations(store).await;
    evicted_ids_are_interned_again_by_the_commit(store).await;
    // Last: it removes what the checks above stored with old timestamps.
    retention_removes_only_expired_data(store).await;
}

/// Commits one request per (endpoint, duration in ms), a second apart from `start`, each in a
/// trace of its own numbered from `first_trace`, all their time cpu.
async fn commit_requests_a_second_apart(
    store: &Store,
    start: u64,
    first_trace: u8,
    durations: &[(i64, u64)],
) {
    let rows: Vec<RequestRow> = durations
        .iter()
        .enumerate()
        .map(|(n, &(endpoint_id, duration_ms))| RequestRow {
            trace_id: TraceId([first_trace + n as u8; 16]),
            span_id: SpanId([1; 8]),
            endpoint_id,
            version: String::new(),
            start_unix_ns: start + n as u64 * 1_000_000_000,
            duration_ns: duration_ms * 1_000_000,
            error: false,
            breakdown: Breakdown([0, 0, 0, 0, duration_ms * 1_000_000, 0, 0]),
            n_db_calls: 0,
            last_block_id: 1,
            resource_id: 0,
        })
        .collect();
    let commit = AnalysisCommit {
        requests: rows,
        ..AnalysisCommit::default()
    };
    store.commit_analysis(&commit).await.unwrap();
}

/// The slowest requests of a window are the same whichever index reads them: a long window walks
/// each endpoint's slowest, a short one sorts the window's rows.
async fn slowest_requests_merge_endpoints(store: &Store) {
    const HOUR: u64 = 3_600_000_000_000;
    let start = 15_000 * 24 * HOUR; // 2011-01-25, a day no other check uses
    let a = store.intern_endpoint("slowest", "GET /a").await.unwrap();
    let b = store.intern_endpoint("slowest", "GET /b").await.unwrap();
    let durations = [(a, 5), (a, 50), (a, 20), (b, 40), (b, 10), (b, 30)];
    commit_requests_a_second_apart(store, start, 0x60, &durations).await;
    let durations_ms = |rows: Vec<RequestRow>| -> Vec<u64> {
        rows.iter().map(|r| r.duration_ns / 1_000_000).collect()
    };
    for length in [HOUR, 24 * HOUR] {
        let window = Window {
            from_unix_ns: start,
            to_unix_ns: start + length,
        };
        for ids in [None, Some(&[a, b][..])] {
            let slowest = store.requests(window, ids, 0, 3).await.unwrap();
            assert_eq!(durations_ms(slowest), [50, 40, 30], "{length} ns, {ids:?}");
            let above = store.requests(window, ids, 35_000_000, 10).await.unwrap();
            assert_eq!(durations_ms(above), [50, 40], "{length} ns, {ids:?}");
        }
        let only_b = store.requests(window, Some(&[b]), 0, 2).await.unwrap();
        assert_eq!(durations_ms(only_b), [40, 30]);
        // The requests of one endpoint between two durations, and the shortest above one.
        let (n, sums) = store
            .breakdown_between(window, a, 10_000_000, 60_000_000)
            .await
            .unwrap();
        assert_eq!((n, sums.0[4]), (2, 70_000_000), "50 and 20 ms");
        let shortest = |min_ms: u64| store.request_at_least(window, a, min_ms * 1_000_000);
        assert_eq!(
            shortest(6).await.unwrap().map(|r| r.duration_ns),
            Some(20_000_000)
        );
        assert_eq!(
            shortest(50).await.unwrap().map(|r| r.duration_ns),
            Some(50_000_000)
        );
        assert!(shortest(51).await.unwrap().is_none());
    }
}

/// Commits add requests to the row as stored and take back the requests of a previous analysis.
/// A trace search's read: one endpoint's requests in a window between two durations (both
/// inclusive), newest first, cut at the limit.
async fn newest_requests_of_an_endpoint_between_durations(store: &Store) {
    const HOUR: u64 = 3_600_000_000_000;
    let start = 15_002 * 24 * HOUR; // a day no other check uses
    let a = store.intern_endpoint("newest", "GET /a").await.unwrap();
    let b = store.intern_endpoint("newest", "GET /b").await.unwrap();
    let durations = [(a, 5), (a, 50), (a, 20), (b, 40), (a, 10), (a, 30)];
    commit_requests_a_second_apart(store, start, 0x70, &durations).await;
    let durations_ms = |rows: Vec<RequestRow>| -> Vec<u64> {
        rows.iter().map(|r| r.duration_ns / 1_000_000).collect()
    };
    let window = Window {
        from_unix_ns: start,
        to_unix_ns: start + 24 * HOUR,
    };
    let all = (0, u64::MAX);
    let newest = store.newest_requests(window, a, all, 10).await.unwrap();
    assert_eq!(durations_ms(newest), [30, 10, 20, 50, 5]);
    let newest = store.newest_requests(window, a, all, 2).await.unwrap();
    assert_eq!(durations_ms(newest), [30, 10]);
    let between = (10_000_000, 30_000_000);
    let newest = store.newest_requests(window, a, between, 10).await.unwrap();
    assert_eq!(durations_ms(newest), [30, 10, 20]);
    // The window is half-open: a request starting at its end is not in it.
    let early = Window {
        from_unix_ns: start + 1_000_000_000,
        to_unix_ns: start + 4_000_000_000,
    };
    let newest = store.newest_requests(early, a, all, 10).await.unwrap();
    assert_eq!(durations_ms(newest), [20, 50]);
    assert_eq!(
        durations_ms(store.newest_requests(window, b, all, 10).await.unwrap()),
        [40]
    );
}

async fn rollup_changes_add_and_take_back(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let login = &requests[0];
    let endpoint_id = store.intern_endpoint("changes", "POST /c").await.unwrap();
    let key = RollupKey {
        endpoint_id,
        version: String::new(),
        minute: 77,
        granularity: Granularity::Minute,
    };
    let change = |added: usize, removed: usize| {
        let mut change = RollupChange {
            key: key.clone(),
            added: Rollup::new(),
            removed: Rollup::new(),
        };
        (0..added).for_each(|_| change.added.add(login));
        (0..removed).for_each(|_| change.removed.add(login));
        AnalysisCommit {
            rollups: vec![change],
            ..AnalysisCommit::default()
        }
    };
    store.commit_analysis(&change(2, 0)).await.unwrap();
    store.commit_analysis(&change(1, 0)).await.unwrap();
    let stored = store.rollup(&key).await.unwrap().expect("stored");
    assert_eq!(stored.requests, 3, "changes add up");
    assert_eq!(stored.sketch.count(), 3);
    store.commit_analysis(&change(0, 2)).await.unwrap();
    let stored = store.rollup(&key).await.unwrap().expect("stored");
    assert_eq!(stored.requests, 1);
    assert_eq!(stored.sketch.count(), 1);
    assert_eq!(stored.duration_sum_ns, login.duration_ns);
    let mut one = Rollup::new();
    one.add(login);
    assert_eq!(stored.operations, one.operations);
    store.commit_analysis(&change(0, 1)).await.unwrap();
    assert!(
        store.rollup(&key).await.unwrap().is_none(),
        "a row whose requests were all taken back reads as absent"
    );
    // SQLite, whose commit holds the write lock, deletes the emptied row, so retention evicts the
    // endpoint no row refers to any more; PostgreSQL keeps the row at zero for the commits that
    // may wait for its lock, and with it the endpoint.
    store.apply_retention(0, 0).await.unwrap();
    let endpoints = store.endpoints().await.unwrap();
    let kept = endpoints.iter().any(|e| e.id == endpoint_id);
    assert_eq!(kept, store.is_shared(), "{endpoints:?}");
}

/// A shared store hands a due trace to one claimant until the claim is released or expires, and a
/// commit whose claim expired and was taken over writes nothing.
async fn claims_hand_each_trace_to_one_analyzer(store: &Store) {
    let trace = TraceId([0x42; 16]);
    let mut spans = fixture::parse(LOGIN);
    for span in &mut spans {
        span.trace_id = trace;
    }
    let claim = |token: i64, now: u64| async move {
        store
            .claim_due_traces(
                token,
                ClaimLease {
                    cutoff_unix_ns: now,
                    now_unix_ns: now,
                    until_unix_ns: now + 1_000,
                },
                1_000,
            )
            .await
            .unwrap()
            .into_iter()
            .find(|claimed| claimed.trace_id == trace)
    };
    let ids = store
        .insert_blocks(&[block::encode(spans[..2].to_vec(), 1_000)])
        .await
        .unwrap();
    if !store.is_shared() {
        assert!(claim(1, 2_000).await.is_none(), "SQLite has no claims");
        return;
    }
    let first = claim(1, 2_000).await.expect("due and unclaimed");
    assert_eq!(first.spans.len(), 2);
    assert_eq!(first.new_blocks, ids);
    assert!(claim(2, 2_500).await.is_none(), "held until 3,000");
    let second = claim(3, 4_000).await.expect("the first claim expired");
    let release = |token: i64, analysed_blocks: Vec<i64>| AnalysisCommit {
        claims: vec![ClaimRelease {
            trace_id: trace,
            claim: token,
            analysed_blocks,
        }],
        ..AnalysisCommit::default()
    };
    assert!(matches!(
        store.commit_analysis(&release(1, ids.clone())).await,
        Err(StoreError::ClaimLost)
    ));
    // A block arrives while the second claimant analyses: its release keeps the trace pending.
    let late = store
        .insert_blocks(&[block::encode(spans[2..].to_vec(), 1_000)])
        .await
        .unwrap();
    store
        .commit_analysis(&release(3, second.new_blocks.clone()))
        .await
        .unwrap();
    // A reopened trace waits a grace period from the real clock.
    let now = bottleneck::time::now_unix_ns();
    let third = claim(4, now)
        .await
        .expect("still pending after a late block");
    assert_eq!(
        third.new_blocks, late,
        "only the block not analysed yet is new"
    );
    assert_eq!(third.spans.len(), spans.len());
    store
        .commit_analysis(&release(4, third.new_blocks.clone()))
        .await
        .unwrap();
    assert!(claim(5, now * 2).await.is_none(), "released for good");
}

/// An endpoint and a resource evicted between the analyzer's lookup and its commit: the commit
/// interns their names again and writes under the new ids, and takes nothing back from the
/// evicted endpoint. Evictions racing commits never leave a request under a deleted id.
async fn evicted_ids_are_interned_again_by_the_commit(store: &Store) {
    const HOUR: u64 = 3_600_000_000_000;
    let start = 16_000 * 24 * HOUR; // 2013-10-22, a day no other check uses
    let (analysed, _) = analyze_trace(&fixture::parse(LOGIN), &AnalysisConfig::default());
    let endpoint = store.intern_endpoint("evict", "GET /gone").await.unwrap();
    let taken_back_from = store.intern_endpoint("evict", "GET /old").await.unwrap();
    let canonical = canonical_attributes(&[("host.name".into(), "gone".into())]);
    let resource = store.intern_resource("evict", &canonical).await.unwrap();
    // Regressions have no retention: an endpoint one names stays. A mark of the finder alone
    // keeps nothing, and goes with its endpoint.
    let regressed = store
        .intern_endpoint("evict", "GET /regressed")
        .await
        .unwrap();
    let checked = store
        .intern_endpoint("evict", "GET /checked")
        .await
        .unwrap();
    let event = RegressionRecord {
        id: 0,
        detected_unix_ns: 5,
        endpoint_id: regressed,
        service: String::new(),
        endpoint: String::new(),
        baseline: "9.0".into(),
        candidate: "9.1".into(),
        metric: "p50".into(),
        baseline_ns: 100,
        candidate_ns: 400,
        baseline_requests: 50,
        candidate_requests: 60,
        mean_delta_ns: 300,
        mean_delta_ci_ns: None,
        baseline_interval_ns: None,
        candidate_interval_ns: None,
        summary: "slower".into(),
        resolution: None,
    };
    store
        .record_regression_evaluation(&RegressionEvaluation {
            baseline: "9.0".into(),
            candidate: "9.1".into(),
            checked_unix_ns: 5,
            checked: vec![(regressed, 60), (checked, 60)],
            raised: vec![event],
            resolved: Vec::new(),
        })
        .await
        .unwrap();
    let generation = store.eviction_generation().await.unwrap();
    // Nothing is old enough to go; only what no row refers to is evicted.
    let report = store.apply_retention(0, 0).await.unwrap();
    assert!(report.endpoints >= 3 && report.resources >= 1, "{report:?}");
    let live: Vec<i64> = (store.endpoints().await.unwrap().iter())
        .map(|e| e.id)
        .collect();
    assert!(live.contains(&regressed) && !live.contains(&checked));
    let marks = store
        .regression_checks(&[regressed, checked], "9.0", "9.1")
        .await
        .unwrap();
    assert_eq!(marks.keys().copied().collect::<Vec<_>>(), [regressed]);
    let events = store.regressions(0, 1_000, Some("evict")).await.unwrap();
    assert!(events.iter().any(|e| e.endpoint_id == regressed));
    assert!(store.eviction_generation().await.unwrap() > generation);
    let endpoints = store.endpoints().await.unwrap();
    assert!(
        !endpoints
            .iter()
            .any(|e| e.id == endpoint || e.id == taken_back_from)
    );
    assert!(
        !store
            .resources()
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == resource)
    );

    // Request rows are found through their trace's blocks: each trace gets one.
    let traces: Vec<TraceId> = (0..41u8)
        .map(|n| TraceId([0x70, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]))
        .collect();
    let blocks: Vec<EncodedBlock> = (traces.iter())
        .map(|trace_id| {
            let mut spans = fixture::parse(LOGIN);
            for span in &mut spans {
                span.trace_id = *trace_id;
            }
            block::encode(spans, start)
        })
        .collect();
    let block_ids = store.insert_blocks(&blocks).await.unwrap();
    let row = |n: usize, endpoint_id, resource_id| RequestRow {
        trace_id: traces[n],
        span_id: SpanId([1; 8]),
        endpoint_id,
        version: String::new(),
        start_unix_ns: start,
        duration_ns: 1,
        error: false,
        breakdown: Breakdown::default(),
        n_db_calls: 0,
        last_block_id: block_ids[n],
        resource_id,
    };
    let key = |endpoint_id| RollupKey {
        endpoint_id,
        version: String::new(),
        minute: minute_of(start),
        granularity: Granularity::Minute,
    };
    let mut one = Rollup::new();
    one.add(&analysed[0]);
    let mut names = InternedNames::default();
    names
        .endpoints
        .insert(endpoint, ("evict".into(), "GET /gone".into()));
    names
        .resources
        .insert(resource, ("evict".into(), canonical.clone()));
    let commit = AnalysisCommit {
        requests: vec![row(0, endpoint, resource)],
        rollups: vec![
            RollupChange {
                key: key(endpoint),
                added: one.clone(),
                removed: Rollup::new(),
            },
            RollupChange {
                key: key(taken_back_from),
                added: Rollup::new(),
                removed: one.clone(),
            },
        ],
        names,
        ..AnalysisCommit::default()
    };
    store.commit_analysis(&commit).await.unwrap();
    let rows = store.trace_requests(traces[0]).await.unwrap();
    assert_eq!(rows.len(), 1);
    let (new_endpoint, new_resource) = (rows[0].endpoint_id, rows[0].resource_id);
    assert_ne!(new_endpoint, endpoint, "ids are never handed out twice");
    assert_ne!(new_resource, resource);
    let endpoints = store.endpoints().await.unwrap();
    let named = endpoints.iter().find(|e| e.id == new_endpoint).unwrap();
    assert_eq!(
        (named.service.as_str(), named.endpoint.as_str()),
        ("evict", "GET /gone")
    );
    assert!(!endpoints.iter().any(|e| e.id == taken_back_from));
    let resources = store.resources().await.unwrap();
    let process = resources.iter().find(|r| r.id == new_resource).unwrap();
    assert_eq!(canonical_attributes(&process.attributes), canonical);
    assert_eq!(
        store
            .rollup(&key(new_endpoint))
            .await
            .unwrap()
            .unwrap()
            .requests,
        1
    );
    assert!(store.rollup(&key(endpoint)).await.unwrap().is_none());
    assert!(store.rollup(&key(taken_back_from)).await.unwrap().is_none());

    // A new endpoint has no rows until its first commit: evictions racing those commits.
    for n in 1..traces.len() {
        let name = format!("GET /race/{n}");
        let id = store.intern_endpoint("evict", &name).await.unwrap();
        let mut names = InternedNames::default();
        names.endpoints.insert(id, ("evict".into(), name));
        let commit = AnalysisCommit {
            requests: vec![row(n, id, 0)],
            names,
            ..AnalysisCommit::default()
        };
        let (committed, evicted) =
            tokio::join!(store.commit_analysis(&commit), store.apply_retention(0, 0));
        committed.unwrap();
        evicted.unwrap();
    }
    let live: std::collections::HashSet<i64> = store
        .endpoints()
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    for trace_id in &traces[1..] {
        let rows = store.trace_requests(*trace_id).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(
            live.contains(&rows[0].endpoint_id),
            "{trace_id:?} under a deleted id"
        );
    }
    // The passes above kept the resource a stored request refers to.
    let resources = store.resources().await.unwrap();
    assert!(resources.iter().any(|r| r.id == new_resource));
}

/// Retention removes blocks, request rows and rollups past their time and keeps the rest.
async fn retention_removes_only_expired_data(store: &Store) {
    const DAY: u64 = 86_400_000_000_000;
    let now = 20_000 * DAY; // 2024-10-04
    let old = now - 10 * DAY;
    // Day partitions for the old day too, so PostgreSQL drops a whole one.
    store.maintain_partitions(old).await.unwrap();
    store.maintain_partitions(now).await.unwrap();
    let mut spans = fixture::parse(LOGIN);
    let (old_trace, new_trace) = (TraceId([0x51; 16]), TraceId([0x52; 16]));
    for span in &mut spans {
        span.trace_id = old_trace;
    }
    let mut recent = spans.clone();
    for span in &mut recent {
        span.trace_id = new_trace;
    }
    let block_ids = store
        .insert_blocks(&[
            block::encode(spans.clone(), old),
            block::encode(recent.clone(), now),
        ])
        .await
        .unwrap();
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let endpoint_id = store.intern_endpoint("retention", "GET /r").await.unwrap();
    let row = |trace_id, start_unix_ns, last_block_id| RequestRow {
        trace_id,
        span_id: requests[0].span_id,
        endpoint_id,
        version: String::new(),
        start_unix_ns,
        duration_ns: 1,
        error: false,
        breakdown: Breakdown::default(),
        n_db_calls: 0,
        last_block_id,
        resource_id: 0,
    };
    let key = |unix_ns: u64| RollupKey {
        endpoint_id,
        version: String::new(),
        minute: minute_of(unix_ns),
        granularity: Granularity::Minute,
    };
    let mut commit = AnalysisCommit {
        requests: vec![
            row(old_trace, old, block_ids[0]),
            row(new_trace, now, block_ids[1]),
        ],
        ..AnalysisCommit::default()
    };
    for at in [old, now] {
        let mut added = Rollup::new();
        added.add(&requests[0]);
        commit.rollups.push(RollupChange {
            key: key(at),
            added,
            removed: Rollup::new(),
        });
    }
    store.commit_analysis(&commit).await.unwrap();

    let report = store
        .apply_retention(now - 7 * DAY, now - 5 * DAY)
        .await
        .unwrap();
    assert!(report.blocks >= 1 && report.requests >= 1 && report.rollups >= 1);
    assert!(store.trace(old_trace).await.unwrap().is_none());
    assert_eq!(
        store.trace(new_trace).await.unwrap().map(|s| s.len()),
        Some(spans.len())
    );
    assert!(store.trace_requests(old_trace).await.unwrap().is_empty());
    assert_eq!(store.trace_requests(new_trace).await.unwrap().len(), 1);
    assert!(store.rollup(&key(old)).await.unwrap().is_none());
    assert!(store.rollup(&key(now)).await.unwrap().is_some());
    // Idempotent: a second pass finds nothing more.
    let again = store
        .apply_retention(now - 7 * DAY, now - 5 * DAY)
        .await
        .unwrap();
    assert_eq!((again.blocks, again.requests, again.rollups), (0, 0, 0));
}

/// Merged rollups come per (endpoint, version), a version seen only in a window's edge minutes
/// included, and sums past what a BIGINT holds stop at its maximum rather than failing the read.
async fn merged_rollups_keep_versions_apart_and_saturate(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let endpoint_id = store.intern_endpoint("merged", "GET /m").await.unwrap();
    let first_hour = 2_000 * 60; // an hour-aligned minute no other check uses
    let ns = |minute: i64| minute as u64 * 60_000_000_000;
    let mut huge = Rollup::new();
    huge.add(&requests[0]);
    for sums in huge.operations.values_mut() {
        sums.total_ns = u64::MAX / 4;
    }
    let key = |version: &str, minute: i64, granularity: Granularity| RollupKey {
        endpoint_id,
        version: version.into(),
        minute,
        granularity,
    };
    let mut one = Rollup::new();
    one.add(&requests[0]);
    let mut commit = AnalysisCommit::default();
    // Version "a": an hourly row, and three minutes after it whose operation sums add up past
    // 2^63 ns. Version "b": one request in the last edge minute only.
    let mut rows = vec![(key("a", first_hour, Granularity::Hour), one.clone())];
    for minute in first_hour + 70..first_hour + 73 {
        rows.push((key("a", minute, Granularity::Minute), huge.clone()));
    }
    rows.push((key("b", first_hour + 75, Granularity::Minute), one.clone()));
    for (key, rollup) in rows {
        commit.rollups.push(RollupChange {
            key,
            added: rollup,
            removed: Rollup::new(),
        });
    }
    store.commit_analysis(&commit).await.unwrap();
    let window = Window {
        from_unix_ns: ns(first_hour),
        to_unix_ns: ns(first_hour + 80),
    };
    let merged = store
        .merged_rollups(window, Some(&[endpoint_id]), None)
        .await
        .unwrap();
    let keys: Vec<_> = merged.keys().map(|(_, version)| version.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    let a = &merged[&(endpoint_id, "a".to_owned())];
    assert_eq!(a.requests, 4);
    assert!(
        a.operations
            .values()
            .all(|sums| sums.total_ns >= i64::MAX as u64),
        "three sums of 2^62 ns stop at the BIGINT maximum: {:?}",
        a.operations
    );
    let b = &merged[&(endpoint_id, "b".to_owned())];
    assert_eq!(b.requests, 1);
    assert_eq!(b.operations, one.operations, "from its edge minute alone");
    assert_eq!(b.findings, one.findings);
}

/// A window of several hours reads hourly rows for its whole hours and minute rows at its edges;
/// the merged totals equal those of the minute rows alone.
async fn long_windows_read_hourly_rows(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let endpoint_id = store.intern_endpoint("hourly", "GET /h").await.unwrap();
    let first_hour = 1_000 * 60; // an hour-aligned minute
    let mut commit = AnalysisCommit::default();
    let mut hours: std::collections::BTreeMap<i64, Rollup> = Default::default();
    let added = |minute, granularity, rollup| RollupChange {
        key: RollupKey {
            endpoint_id,
            version: "1".into(),
            minute,
            granularity,
        },
        added: rollup,
        removed: Rollup::new(),
    };
    // One request a minute for three hours.
    for minute in first_hour..first_hour + 180 {
        let mut rollup = Rollup::new();
        rollup.add(&requests[0]);
        hours
            .entry(Granularity::Hour.row_start(minute))
            .or_default()
            .add(&requests[0]);
        commit
            .rollups
            .push(added(minute, Granularity::Minute, rollup));
    }
    for (minute, rollup) in hours {
        commit
            .rollups
            .push(added(minute, Granularity::Hour, rollup));
    }
    store.commit_analysis(&commit).await.unwrap();
    // From 30 minutes into the first hour to 20 minutes into the third: one whole hour between.
    let ns = |minute: i64| minute as u64 * 60_000_000_000;
    let window = Window {
        from_unix_ns: ns(first_hour + 30),
        to_unix_ns: ns(first_hour + 140),
    };
    let rows = store.rollups(window, Some(&[endpoint_id])).await.unwrap();
    let hourly: Vec<_> = rows
        .iter()
        .filter(|(key, _)| key.granularity == Granularity::Hour)
        .collect();
    assert_eq!(hourly.len(), 1, "the one whole hour is read as one row");
    assert_eq!(hourly[0].0.minute, first_hour + 60);
    assert_eq!(rows.len(), 1 + 30 + 20);
    let total: u64 = rows.iter().map(|(_, rollup)| rollup.requests).sum();
    assert_eq!(total, 110);
    assert!(
        rows.iter().all(|(_, rollup)| rollup.operations.is_empty()),
        "operations are read only merged"
    );
    let mut expected = Rollup::new();
    for _ in 0..110 {
        expected.add(&requests[0]);
    }
    assert!(!expected.operations.is_empty() && !expected.findings.is_empty());
    assert!(
        expected
            .findings
            .values()
            .any(|sums| sums.location.is_some()),
        "the duplicate's code location is stored and merged too"
    );
    let merged = store
        .merged_rollups(window, Some(&[endpoint_id]), None)
        .await
        .unwrap();
    let keys: Vec<_> = merged.keys().cloned().collect();
    assert_eq!(keys, [(endpoint_id, "1".to_owned())]);
    let whole = &merged[&(endpoint_id, "1".to_owned())];
    assert_eq!(whole.requests, 110);
    assert_eq!(
        whole.operations, expected.operations,
        "the hour's operations and the edge minutes' summed"
    );
    assert_eq!(whole.findings, expected.findings);
    let minutes = store
        .minute_rollups(window, Some(&[endpoint_id]))
        .await
        .unwrap();
    assert_eq!(minutes.len(), 110);
    assert!(
        minutes
            .iter()
            .all(|(key, _)| key.granularity == Granularity::Minute)
    );
}

async fn blocks_round_trip_and_index_traces(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let trace_id = spans[0].trace_id;
    let ids = store
        .insert_blocks(&[
            block::encode(spans[..2].to_vec(), 1),
            block::encode(spans[2..].to_vec(), 2),
        ])
        .await
        .unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1]);
    let stored = store.trace(trace_id).await.unwrap().expect("trace stored");
    assert_eq!(stored.len(), spans.len());
    let mut expected = spans.clone();
    expected.sort_by_key(|s| s.start_unix_ns);
    for (a, b) in stored.iter().zip(&expected) {
        assert_eq!(a.span_id, b.span_id);
        assert_eq!(a.attributes, b.attributes);
        assert_eq!(a.category, b.category);
    }
    let with_blocks = store.trace_spans(trace_id).await.unwrap().unwrap();
    assert_eq!(
        with_blocks.iter().filter(|(id, _)| *id == ids[1]).count(),
        2
    );
    assert!(store.trace(TraceId([9; 16])).await.unwrap().is_none());
    assert_eq!(store.last_block_id().await.unwrap(), ids[1]);
    assert_eq!(store.blocks_after(ids[0], 10).await.unwrap().len(), 1);
    assert_eq!(store.stats().await.unwrap().n_spans, spans.len() as u64);
    assert_eq!(store.data_since().await.unwrap(), Some(1));
}

async fn analysis_commit_round_trips(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let login = requests
        .iter()
        .find(|r| r.endpoint == "POST /login")
        .expect("login analysed");
    // A request row names the newest block of its trace that its analysis saw.
    let block_id = store
        .insert_blocks(&[block::encode(spans.clone(), 1)])
        .await
        .unwrap()[0];
    let endpoint_id = store.intern_endpoint("auth", "POST /login").await.unwrap();
    assert_eq!(
        store.intern_endpoint("auth", "POST /login").await.unwrap(),
        endpoint_id,
        "interning is idempotent"
    );
    let key = RollupKey {
        endpoint_id,
        version: String::new(),
        minute: minute_of(login.start_unix_ns),
        granularity: Granularity::Minute,
    };
    let mut rollup = Rollup::new();
    rollup.add(login);
    let row = RequestRow {
        trace_id: login.trace_id,
        span_id: login.span_id,
        endpoint_id,
        version: String::new(),
        start_unix_ns: login.start_unix_ns,
        duration_ns: login.duration_ns,
        error: false,
        breakdown: login.breakdown,
        n_db_calls: login.n_db_calls,
        last_block_id: block_id,
        resource_id: 0,
    };
    let commit = AnalysisCommit {
        replace_traces: vec![],
        requests: vec![row.clone()],
        rollups: vec![RollupChange {
            key: key.clone(),
            added: rollup.clone(),
            removed: Rollup::new(),
        }],
        watermark: Some(block_id),
        claims: vec![],
        names: InternedNames::default(),
        max_operations_per_rollup: None,
    };
    store.commit_analysis(&commit).await.unwrap();
    assert_eq!(store.analysis_watermark().await.unwrap(), block_id);
    let analysed = store
        .analysed_traces(&[login.trace_id, TraceId([5; 16])])
        .await
        .unwrap();
    assert_eq!(analysed.get(&login.trace_id), Some(&block_id));
    assert_eq!(analysed.len(), 1);
    let loaded = store.rollup(&key).await.unwrap().expect("rollup stored");
    assert_eq!(loaded.requests, 1);
    assert_eq!(loaded.breakdown_sum, rollup.breakdown_sum);
    assert_eq!(loaded.operations, rollup.operations);
    assert_eq!(loaded.findings, rollup.findings);
    assert_eq!(loaded.sketch.count(), 1);
    let window = Window {
        from_unix_ns: 0,
        to_unix_ns: login.start_unix_ns + 1,
    };
    assert_eq!(
        store
            .requests(window, Some(&[endpoint_id]), 0, 10)
            .await
            .unwrap(),
        vec![row.clone()]
    );
    assert_eq!(store.trace_requests(login.trace_id).await.unwrap().len(), 1);
    // Replacing a trace's requests removes the old rows; the watermark never goes back.
    let replaced = RequestRow {
        span_id: SpanId([3; 8]),
        ..row
    };
    let commit = AnalysisCommit {
        replace_traces: vec![login.trace_id],
        requests: vec![replaced],
        rollups: vec![],
        watermark: Some(block_id - 1),
        claims: vec![],
        names: InternedNames::default(),
        max_operations_per_rollup: None,
    };
    store.commit_analysis(&commit).await.unwrap();
    let rows = store.trace_requests(login.trace_id).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.span_id).collect::<Vec<_>>(),
        vec![SpanId([3; 8])]
    );
    assert_eq!(store.analysis_watermark().await.unwrap(), block_id);
}

/// The last evaluation is replaced whole by each commit that carries one, read back as it was
/// written (order, window pairs, absent values), and left alone by a commit without one.
async fn alert_evaluation_round_trips(store: &Store) {
    assert_eq!(
        store.alert_evaluation().await.unwrap(),
        AlertEvaluation::default()
    );
    let burn = |severity: &str, long_s: u64, firing: bool| EvaluatedBurn {
        severity: severity.into(),
        long_ns: long_s * 1_000_000_000,
        short_ns: long_s * 1_000_000_000 / 12,
        factor: 14.4,
        long_burn: 20.5,
        short_burn: 3.25,
        short_requests: 17,
        firing,
    };
    let budget = EvaluatedAlert {
        alert: StoredAlert {
            rule_key: "budget auth POST /*".into(),
            service: "auth".into(),
            endpoint: "POST /login".into(),
            kind: "budget".into(),
            metric: "p50_ms".into(),
            state: "firing".into(),
            since_unix_ns: 1_000,
            observed: Some(301.5),
            budget: 200.0,
            summary: "p50 301.5 ms > 200 ms budget".into(),
        },
        window_ns: 300_000_000_000,
        requests: 10,
        slo: None,
        burn: Vec::new(),
    };
    let slo = EvaluatedAlert {
        alert: StoredAlert {
            rule_key: "slo auth *".into(),
            endpoint: "GET /health".into(),
            kind: "slo".into(),
            metric: "burn_rate".into(),
            state: "ok".into(),
            observed: None,
            budget: 14.4,
            ..budget.alert.clone()
        },
        slo: Some((0.999, 250.0)),
        burn: vec![burn("page", 3600, true), burn("ticket", 21_600, false)],
        ..budget.clone()
    };
    let evaluation = |at: u64, alerts: Vec<EvaluatedAlert>| AlertCommit {
        rule_keys: vec!["r1".into()],
        queue_capacity: 10,
        evaluation: Some(AlertEvaluation {
            evaluated_at_unix_ns: Some(at),
            alerts,
        }),
        ..AlertCommit::default()
    };
    let first = evaluation(5_000, vec![budget.clone(), slo.clone(), budget.clone()]);
    store.commit_alerts(&first).await.unwrap();
    assert_eq!(
        Some(store.alert_evaluation().await.unwrap()),
        first.evaluation
    );
    let second = evaluation(6_000, vec![slo]);
    store.commit_alerts(&second).await.unwrap();
    assert_eq!(
        Some(store.alert_evaluation().await.unwrap()),
        second.evaluation
    );
    let without = AlertCommit {
        rule_keys: vec!["r1".into()],
        queue_capacity: 10,
        ..AlertCommit::default()
    };
    store.commit_alerts(&without).await.unwrap();
    assert_eq!(
        Some(store.alert_evaluation().await.unwrap()),
        second.evaluation
    );
    let empty = evaluation(7_000, Vec::new());
    store.commit_alerts(&empty).await.unwrap();
    assert_eq!(
        Some(store.alert_evaluation().await.unwrap()),
        empty.evaluation
    );
}

async fn alert_outbox_round_trips(store: &Store) {
    let state = |rule: &str, state: &str, since: u64| StoredAlert {
        rule_key: rule.into(),
        service: "auth".into(),
        endpoint: "POST /login".into(),
        kind: "budget".into(),
        metric: "p95_ms".into(),
        state: state.into(),
        since_unix_ns: since,
        observed: Some(350.0),
        budget: 200.0,
        summary: "p95 350 ms > 200 ms budget".into(),
    };
    let transition = |to: &str, at: u64| AlertTransition {
        rule_key: "r1".into(),
        service: "auth".into(),
        endpoint: "POST /login".into(),
        from_state: "ok".into(),
        to_state: to.into(),
        at_unix_ns: at,
        observed: Some(350.0),
        summary: "p95 350 ms > 200 ms budget".into(),
    };
    let notification = |url: &str| NewNotification {
        transition: 0,
        url: url.into(),
        format: "json".into(),
        payload: "{}".into(),
    };
    let queued = store
        .commit_alerts(&AlertCommit {
            states: vec![state("r1", "firing", 100), state("r2", "firing", 100)],
            transitions: vec![transition("firing", 100)],
            notifications: vec![notification("http://a/1"), notification("http://b/2")],
            rule_keys: vec!["r1".into(), "r2".into()],
            queue_capacity: 1,
            regressions_notified_through: Some(4),
            regression_resolutions_notified_through: Some(2),
            evaluation: None,
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "the second one is over capacity");
    assert_eq!(store.regressions_notified_through().await.unwrap(), 4);
    assert_eq!(
        store
            .regression_resolutions_notified_through()
            .await
            .unwrap(),
        2
    );
    let deliveries = store.deliveries(10).await.unwrap();
    let statuses: Vec<&str> = deliveries.iter().map(|d| d.status.as_str()).collect();
    assert_eq!(statuses, ["dropped", "pending"]);
    assert_eq!(deliveries[0].attempts[0].outcome, "dropped");

    // Due now; a retry moves it later; delivery takes it out of the outbox.
    let due = store.due_notifications(200, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].id, due[0].attempts), (queued[0], 0));
    let attempt = |n: u32, outcome: &str, next: u64| DeliveryAttempt {
        notification_id: queued[0],
        attempt: n,
        at_unix_ns: 200,
        outcome: outcome.into(),
        http_status: Some(500),
        error: Some("receiver answered 500".into()),
        next_attempt_unix_ns: next,
    };
    store
        .record_delivery(&attempt(1, "retry", 1_000))
        .await
        .unwrap();
    assert!(store.due_notifications(999, 10).await.unwrap().is_empty());
    assert_eq!(store.next_notification_due().await.unwrap(), Some(1_000));
    store
        .record_delivery(&attempt(2, "delivered", 1_000))
        .await
        .unwrap();
    assert!(
        store
            .due_notifications(u64::MAX / 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_notification_due().await.unwrap(), None);
    let delivered = &store.deliveries(10).await.unwrap()[1];
    assert_eq!(delivered.status, "delivered");
    assert_eq!(delivered.attempts.len(), 2);
    assert_eq!(delivered.to_state, "firing");

    // States survive; a rule no longer in force is forgotten, its history kept.
    assert_eq!(store.alert_states().await.unwrap().len(), 2);
    store
        .commit_alerts(&AlertCommit {
            rule_keys: vec!["r1".into()],
            queue_capacity: 10,
            ..AlertCommit::default()
        })
        .await
        .unwrap();
    let states = store.alert_states().await.unwrap();
    assert_eq!(states, vec![state("r1", "firing", 100)]);
    assert_eq!(store.alert_transitions(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("suite.db")))
        .await
        .unwrap();
    run_all(&store).await;
    store.close().await;
    // The PostgreSQL twin below is compiled only with the feature: say so rather than pass over
    // it in silence.
    #[cfg(not(feature = "pg-tests"))]
    println!("skipped: the PostgreSQL store suite needs `--features pg-tests` and DATABASE_URL");
}

/// SQLite's own checkpoints are off (they ran inside commits); the store's task must copy the
/// write-ahead log into the database file by itself, or the WAL would grow without end.
#[tokio::test]
async fn sqlite_checkpoints_the_wal_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let store = Store::open(&DatabaseUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    let size = || std::fs::metadata(&path).unwrap().len();
    let before = size();
    let spans = fixture::parse(LOGIN);
    let blocks: Vec<_> = (0..200).map(|n| block::encode(spans.clone(), n)).collect();
    store.insert_blocks(&blocks).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while size() == before {
        assert!(
            Instant::now() < deadline,
            "nothing reached the database file within 10 s: no checkpoint ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
}

/// Checkpoints beside a writer that never pauses never rewind the log; the writing connection's
/// own must, or the WAL grows by every byte ever written.
#[tokio::test]
async fn sqlite_wal_starts_over_under_constant_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rewind.db");
    let store = Store::open(&DatabaseUrl::Sqlite(path.clone()))
        .await
        .unwrap();
    let mut state = 1u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 56) as u8
            })
            .collect()
    };
    // 160 MiB in 1 MiB commits, more than twice the WAL's 64 MiB.
    for n in 0..160 {
        let block = EncodedBlock {
            received_unix_ns: n,
            data: noise(1 << 20),
            ..Default::default()
        };
        store.insert_blocks(&[block]).await.unwrap();
    }
    let wal = std::fs::metadata(dir.path().join("rewind.db-wal"))
        .unwrap()
        .len();
    assert!(
        wal <= 80 << 20,
        "the WAL holds {wal} bytes after 160 MiB of commits"
    );
    store.close().await;
}

/// Runs `check` against a store on a fresh database of its own, dropped afterwards.
#[cfg(feature = "pg-tests")]
async fn with_pg_store<F: std::future::Future<Output = ()>>(check: impl FnOnce(Store) -> F) {
    let scratch = scratch::ScratchDatabase::create(&crate::support::pg_admin_url())
        .await
        .expect("creating a scratch database");
    let store = Store::open(&DatabaseUrl::Postgres(scratch.url.clone()))
        .await
        .expect("opening the scratch database");
    check(store.clone()).await;
    store.close().await;
    scratch
        .drop_now()
        .await
        .expect("dropping the scratch database");
}

#[cfg(feature = "pg-tests")]
#[tokio::test]
async fn postgres() {
    with_pg_store(|store| async move { run_all(&store).await }).await;
}

async fn comparison_reads_round_trip(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let login = &requests[0];
    let endpoint_id = store.intern_endpoint("auth", "GET /compare").await.unwrap();
    let canonical = canonical_attributes(&[
        ("service.name".into(), "auth".into()),
        ("host.name".into(), "web-1".into()),
    ]);
    let resource_id = store.intern_resource("auth", &canonical).await.unwrap();
    assert_eq!(
        store.intern_resource("auth", &canonical).await.unwrap(),
        resource_id
    );
    let resource = store
        .resources()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == resource_id)
        .expect("resource listed");
    assert!(
        resource
            .attributes
            .contains(&("host.name".into(), "web-1".into()))
    );
    let minute = minute_of(login.start_unix_ns);
    let mut commit = AnalysisCommit::default();
    for version in ["1.0", "1.1"] {
        let mut rollup = Rollup::new();
        rollup.add(login);
        rollup.add(login);
        commit.rollups.push(RollupChange {
            key: RollupKey {
                endpoint_id,
                version: version.into(),
                minute,
                granularity: Granularity::Minute,
            },
            added: rollup,
            removed: Rollup::new(),
        });
        commit.requests.push(RequestRow {
            trace_id: TraceId([if version == "1.0" { 21 } else { 22 }; 16]),
            span_id: login.span_id,
            endpoint_id,
            version: version.into(),
            start_unix_ns: login.start_unix_ns,
            duration_ns: login.duration_ns,
            error: false,
            breakdown: login.breakdown,
            n_db_calls: login.n_db_calls,
            last_block_id: 1,
            resource_id,
        });
    }
    store.commit_analysis(&commit).await.unwrap();
    let window = Window {
        from_unix_ns: 0,
        to_unix_ns: login.start_unix_ns + 1,
    };
    let rollups = store
        .merged_rollups(window, Some(&[endpoint_id]), Some("1.1"))
        .await
        .unwrap();
    assert_eq!(rollups.len(), 1, "one version's only");
    assert_eq!(
        rollups[&(endpoint_id, "1.1".to_owned())],
        commit.rollups[1].added,
        "sum of squares, operations and findings included"
    );
    let rows = store
        .version_rollups(window, Some(&[endpoint_id]), "1.1")
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0.version, "1.1");
    let rows = store
        .selected_requests(window, &[endpoint_id], Some("1.0"), 1)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].resource_id, resource_id);
    // Past the cap the read is refused, saying what to narrow, rather than loaded whole.
    let too_many = store
        .selected_requests(window, &[endpoint_id], None, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(&too_many, StoreError::ReadTooLarge(text) if text.contains("narrow")),
        "{too_many}"
    );
    let traffic = store.version_traffic(minute).await.unwrap();
    assert!(traffic.contains(&VersionTraffic {
        service: "auth".into(),
        endpoint_id,
        version: "1.1".into(),
        first_minute: minute,
        requests: 2,
    }));
    regression_events_round_trip(store, endpoint_id).await;
}

/// Checks upsert; an endpoint has at most one open event per version pair; a resolution is
/// numbered in order and shown on the event; a regression that comes back is a new event.
async fn regression_events_round_trip(store: &Store, endpoint_id: i64) {
    assert!(
        store
            .regression_checks(&[endpoint_id], "1.0", "1.1")
            .await
            .unwrap()
            .is_empty()
    );
    let event = RegressionRecord {
        id: 0,
        detected_unix_ns: 5,
        endpoint_id,
        service: String::new(),
        endpoint: String::new(),
        baseline: "1.0".into(),
        candidate: "1.1".into(),
        metric: "p50".into(),
        baseline_ns: 100,
        candidate_ns: 400,
        baseline_requests: 50,
        candidate_requests: 60,
        mean_delta_ns: 300,
        mean_delta_ci_ns: Some((290, 310)),
        baseline_interval_ns: Some((90, 110)),
        candidate_interval_ns: Some((380, 420)),
        summary: "slower".into(),
        resolution: None,
    };
    let raise = |at: u64, requests: u64| RegressionEvaluation {
        baseline: "1.0".into(),
        candidate: "1.1".into(),
        checked_unix_ns: at,
        checked: vec![(endpoint_id, requests)],
        raised: vec![RegressionRecord {
            detected_unix_ns: at,
            ..event.clone()
        }],
        resolved: Vec::new(),
    };
    // The same evaluation twice, or a raise while one is open, stores one event.
    for _ in 0..2 {
        store
            .record_regression_evaluation(&raise(5, 60))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .regression_checks(&[endpoint_id, endpoint_id + 1000], "1.0", "1.1")
            .await
            .unwrap(),
        [(
            endpoint_id,
            RegressionCheck {
                checked_unix_ns: 5,
                candidate_requests: 60
            }
        )]
        .into_iter()
        .collect()
    );
    let events = store.regressions(0, 10, None).await.unwrap();
    assert_eq!(events.len(), 1, "an event is stored once");
    assert_eq!(events[0].service, "auth");
    assert_eq!(events[0].endpoint, "GET /compare");
    assert_eq!(
        RegressionRecord {
            id: 0,
            service: String::new(),
            endpoint: String::new(),
            ..events[0].clone()
        },
        event
    );
    let first = events[0].id;
    assert!(store.regressions(first, 10, None).await.unwrap().is_empty());
    assert_eq!(
        store.regressions(0, 10, Some("auth")).await.unwrap().len(),
        1
    );
    assert!(
        store
            .regressions(0, 10, Some("idp"))
            .await
            .unwrap()
            .is_empty()
    );
    let open = store.open_regressions("auth", "1.0", "1.1").await.unwrap();
    assert_eq!(open.iter().map(|e| e.id).collect::<Vec<_>>(), [first]);
    assert!(
        store
            .open_regressions("auth", "1.0", "1.2")
            .await
            .unwrap()
            .is_empty()
    );

    // Resolved once, however often the evaluation is committed; the check moves on.
    let resolve = |id: i64, at: u64| RegressionEvaluation {
        baseline: "1.0".into(),
        candidate: "1.1".into(),
        checked_unix_ns: at,
        checked: vec![(endpoint_id, 80)],
        raised: Vec::new(),
        resolved: vec![NewResolution {
            regression_id: id,
            resolved_unix_ns: at,
            candidate_ns: 120,
            summary: "back".into(),
        }],
    };
    for _ in 0..2 {
        store
            .record_regression_evaluation(&resolve(first, 9))
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .regression_checks(&[endpoint_id], "1.0", "1.1")
            .await
            .unwrap()[&endpoint_id],
        RegressionCheck {
            checked_unix_ns: 9,
            candidate_requests: 80
        }
    );
    let resolution = RegressionResolution {
        seq: 1,
        resolved_unix_ns: 9,
        candidate_ns: 120,
        summary: "back".into(),
    };
    let events = store.regressions(0, 10, None).await.unwrap();
    assert_eq!(events[0].resolution, Some(resolution.clone()));
    assert!(
        store
            .open_regressions("auth", "1.0", "1.1")
            .await
            .unwrap()
            .is_empty()
    );

    // It comes back: a new event, resolved in turn with the next number.
    store
        .record_regression_evaluation(&raise(12, 100))
        .await
        .unwrap();
    let events = store.regressions(first, 10, None).await.unwrap();
    assert_eq!(events.len(), 1);
    let second = events[0].id;
    assert!(second > first);
    assert_eq!(events[0].detected_unix_ns, 12);
    assert_eq!(events[0].resolution, None);
    store
        .record_regression_evaluation(&resolve(second, 15))
        .await
        .unwrap();
    let resolved = store.regression_resolutions(0, 10).await.unwrap();
    let order: Vec<(i64, i64)> = resolved
        .iter()
        .map(|e| (e.id, e.resolution.as_ref().unwrap().seq))
        .collect();
    assert_eq!(order, [(first, 1), (second, 2)]);
    assert_eq!(resolved[0].resolution, Some(resolution));
    assert_eq!(resolved[0].endpoint, "GET /compare");
    assert_eq!(store.regression_resolutions(1, 10).await.unwrap().len(), 1);
    assert!(
        store
            .regression_resolutions(2, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A change to one minute row of endpoint 1, version 1.0, adding and taking back requests of
/// these durations.
fn change(minute: i64, durations_ns: &[u64], removed_ns: &[u64]) -> RollupChange {
    let rollup_of = |durations_ns: &[u64]| {
        let mut rollup = Rollup::new();
        for duration_ns in durations_ns {
            rollup.add_headline(*duration_ns, false, &Breakdown::default(), 1);
        }
        rollup
    };
    RollupChange {
        key: RollupKey {
            endpoint_id: 1,
            version: "1.0".to_owned(),
            minute,
            granularity: Granularity::Minute,
        },
        added: rollup_of(durations_ns),
        removed: rollup_of(removed_ns),
    }
}

#[test]
fn an_absorbed_commit_sums_changes_to_one_row_and_keeps_the_later_watermark() {
    let mut first = AnalysisCommit {
        replace_traces: vec![TraceId([1; 16])],
        rollups: vec![change(10, &[5, 7], &[3])],
        watermark: Some(4),
        ..Default::default()
    };
    let later = AnalysisCommit {
        replace_traces: vec![TraceId([2; 16])],
        rollups: vec![change(11, &[1], &[]), change(10, &[9], &[2, 4])],
        watermark: Some(9),
        ..Default::default()
    };
    first.absorb(later);
    assert_eq!(first.replace_traces, [TraceId([1; 16]), TraceId([2; 16])]);
    assert_eq!(first.watermark, Some(9));
    assert_eq!(first.rollups.len(), 2, "one change per row");
    let minute_10 = &first.rollups[0];
    assert_eq!(minute_10.key.minute, 10);
    assert_eq!(minute_10.added, change(10, &[5, 7, 9], &[]).added);
    assert_eq!(minute_10.removed, change(10, &[], &[3, 2, 4]).removed);
    assert_eq!(first.rollups[1].added.requests, 1);
}

/// A block stored between a claim and its read of the trace's blocks waits for the next claim:
/// analysed with this one, the next analysis would take its spans for spans this one saw and
/// count their requests twice. The block is stored as ingest stores one, by a transaction that
/// holds the block index while the claim waits to read it.
#[cfg(feature = "pg-tests")]
#[tokio::test]
async fn a_claim_leaves_out_blocks_stored_after_it() {
    use sqlx::Connection;
    let scratch = scratch::ScratchDatabase::create(&crate::support::pg_admin_url())
        .await
        .expect("creating a scratch database");
    let store = Store::open(&DatabaseUrl::Postgres(scratch.url.clone()))
        .await
        .unwrap();
    let trace = TraceId([0x43; 16]);
    let mut spans = fixture::parse(LOGIN);
    for span in &mut spans {
        span.trace_id = trace;
    }
    let first = store
        .insert_blocks(&[block::encode(spans[..2].to_vec(), 1_000)])
        .await
        .unwrap();
    let mut holder = sqlx::PgConnection::connect(&scratch.url).await.unwrap();
    for statement in ["BEGIN", "LOCK TABLE trace_blocks IN ACCESS EXCLUSIVE MODE"] {
        sqlx::query(statement).execute(&mut holder).await.unwrap();
    }
    let lease = |at: u64| ClaimLease {
        cutoff_unix_ns: at,
        now_unix_ns: at,
        until_unix_ns: at + 60_000_000_000,
    };
    let claiming = tokio::spawn({
        let store = store.clone();
        async move { store.claim_due_traces(7, lease(2_000), 100).await }
    });
    // The claim has taken the trace; it cannot read the block index before the holder commits.
    let mut watcher = sqlx::PgConnection::connect(&scratch.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, Option<i64>>("SELECT claim FROM pending_traces")
        .fetch_one(&mut watcher)
        .await
        .unwrap()
        != Some(7)
    {
        assert!(Instant::now() < deadline, "the claim never took the trace");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = block::encode(spans[2..].to_vec(), 1_000);
    let late_id: i64 = sqlx::query_scalar(
        "INSERT INTO span_blocks (id, received_unix_ns, min_start_unix_ns, n_spans, data) \
         VALUES (nextval('span_blocks_id_seq'), $1, $2, $3, $4) RETURNING id",
    )
    .bind(late.received_unix_ns as i64)
    .bind(late.min_start_unix_ns as i64)
    .bind(i64::from(late.n_spans))
    .bind(&late.data)
    .fetch_one(&mut holder)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO trace_blocks (trace_id, block_id, received_unix_ns) VALUES ($1, $2, $3)",
    )
    .bind(trace.0.to_vec())
    .bind(late_id)
    .bind(late.received_unix_ns as i64)
    .execute(&mut holder)
    .await
    .unwrap();
    sqlx::query("UPDATE pending_traces SET block_ids = block_ids || $2 WHERE trace_id = $1")
        .bind(trace.0.to_vec())
        .bind(vec![late_id])
        .execute(&mut holder)
        .await
        .unwrap();
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();

    let claimed = (claiming.await.unwrap().unwrap().into_iter())
        .find(|claimed| claimed.trace_id == trace)
        .expect("the trace was claimed");
    assert_eq!(claimed.new_blocks, first);
    let blocks: Vec<i64> = claimed.spans.iter().map(|(block, _)| *block).collect();
    assert!(
        blocks.iter().all(|block| first.contains(block)),
        "only the blocks pending when claimed: {blocks:?}, late {late_id}"
    );
    assert_eq!(claimed.spans.len(), 2);
    store
        .commit_analysis(&AnalysisCommit {
            claims: vec![ClaimRelease {
                trace_id: trace,
                claim: 7,
                analysed_blocks: first.clone(),
            }],
            ..AnalysisCommit::default()
        })
        .await
        .unwrap();
    // Reopened, it waits a grace period from the real clock.
    let later = bottleneck::time::now_unix_ns() + 1_000_000_000;
    let next = (store
        .claim_due_traces(8, lease(later), 100)
        .await
        .unwrap()
        .into_iter())
    .find(|claimed| claimed.trace_id == trace)
    .expect("the late block keeps the trace pending");
    assert_eq!(next.new_blocks, [late_id]);
    assert_eq!(next.spans.len(), spans.len());
    store.close().await;
    scratch.drop_now().await.unwrap();
}
