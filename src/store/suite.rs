//! The store conformance suite: every backend must pass it.

use collector::model::SpanId;

use super::*;
use crate::analysis::fixture;
use crate::analysis::{AnalysisConfig, analyze_trace};

const LOGIN: &str = "auth: POST /login 0..300 server http.request.method=POST http.route=/login
  SELECT tenants 10..30 client db.system=postgresql db.statement=\"SELECT * FROM tenants WHERE id = 42\"
  SELECT tenants 30..50 client db.system=postgresql db.statement=\"SELECT * FROM tenants WHERE id = 42\"
  idp: POST /saml 60..160 client http.request.method=POST server.address=idp";

/// Runs every check against one store.
pub async fn run_all(store: &Store) {
    blocks_round_trip_and_index_traces(store).await;
    analysis_commit_round_trips(store).await;
    comparison_reads_round_trip(store).await;
}

async fn blocks_round_trip_and_index_traces(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let trace_id = spans[0].trace_id;
    let ids = store
        .insert_blocks(&[block::encode(&spans[..2], 1), block::encode(&spans[2..], 2)])
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
    assert!(
        store
            .trace(collector::model::TraceId([9; 16]))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.last_block_id().await.unwrap(), ids[1]);
    assert_eq!(store.blocks_after(ids[0], 10).await.unwrap().len(), 1);
    assert_eq!(store.stats().await.unwrap().n_spans, spans.len() as u64);
}

async fn analysis_commit_round_trips(store: &Store) {
    let spans = fixture::parse(LOGIN);
    let (requests, _) = analyze_trace(&spans, &AnalysisConfig::default());
    let login = requests
        .iter()
        .find(|r| r.endpoint == "POST /login")
        .expect("login analysed");
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
        last_block_id: 7,
        resource_id: 0,
    };
    let commit = AnalysisCommit {
        replace_traces: vec![],
        requests: vec![row.clone()],
        rollups: vec![(key.clone(), rollup.clone())],
        watermark: Some(7),
    };
    store.commit_analysis(&commit).await.unwrap();
    assert_eq!(store.analysis_watermark().await.unwrap(), 7);
    let analysed = store
        .analysed_traces(&[login.trace_id, collector::model::TraceId([5; 16])])
        .await
        .unwrap();
    assert_eq!(analysed.get(&login.trace_id), Some(&7));
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
        watermark: Some(3),
    };
    store.commit_analysis(&commit).await.unwrap();
    let rows = store.trace_requests(login.trace_id).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.span_id).collect::<Vec<_>>(),
        vec![SpanId([3; 8])]
    );
    assert_eq!(store.analysis_watermark().await.unwrap(), 7);
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&DatabaseUrl::Sqlite(dir.path().join("suite.db")))
        .await
        .unwrap();
    run_all(&store).await;
    store.close().await;
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
        commit.rollups.push((
            RollupKey {
                endpoint_id,
                version: version.into(),
                minute,
            },
            rollup,
        ));
        commit.requests.push(RequestRow {
            trace_id: collector::model::TraceId([if version == "1.0" { 21 } else { 22 }; 16]),
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
        .version_rollups(window, Some(&[endpoint_id]), "1.1", true)
        .await
        .unwrap();
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].1, commit.rollups[1].1, "sum of squares included");
    let rows = store
        .selected_requests(window, &[endpoint_id], Some("1.0"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].resource_id, resource_id);
    let traffic = store.version_traffic(minute).await.unwrap();
    assert!(traffic.contains(&VersionTraffic {
        service: "auth".into(),
        version: "1.1".into(),
        first_minute: minute,
        requests: 2,
    }));

    assert!(
        store
            .regression_checked(&[endpoint_id], "1.0", "1.1")
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
        summary: "slower".into(),
    };
    for _ in 0..2 {
        store
            .record_regression_checks(
                &[endpoint_id],
                "1.0",
                "1.1",
                5,
                std::slice::from_ref(&event),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .regression_checked(&[endpoint_id], "1.0", "1.1")
            .await
            .unwrap(),
        [endpoint_id].into_iter().collect()
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
    assert!(
        store
            .regressions(events[0].id, 10, None)
            .await
            .unwrap()
            .is_empty()
    );
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
}
