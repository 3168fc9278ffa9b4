//! Retention on a running app: blocks received before the retention window go (on PostgreSQL,
//! as whole day partitions), recent ones stay, and exports keep being acknowledged meanwhile.
//! Endpoints and resources nothing refers to any more go too, and so do versions with their
//! rollups, freeing their places under the caps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bottleneck::config::{Config, RetentionConfig};
use bottleneck::store::{block, retention};
use collector::model::TraceId;
use collector::otlp::decode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value as Json;

use crate::ingest::{kv, login_request};
use crate::support::{TestApp, http_client, spawn_app_with};

pub(crate) const DAY_NS: u64 = 86_400_000_000_000;

/// The retention a pass applies: the defaults (a week of spans and requests, 90 days of
/// rollups).
fn default_retention() -> RetentionConfig {
    RetentionConfig {
        spans: Duration::from_secs(7 * 86_400),
        rollups: Duration::from_secs(90 * 86_400),
        interval: Duration::from_secs(3_600),
    }
}

/// The app's own retention task keeps everything: the tests run their passes themselves.
fn keep_everything(config: &mut Config) {
    config.retention.spans = Duration::from_secs(3_650 * 86_400);
    config.retention.rollups = Duration::from_secs(3_650 * 86_400);
}

pub(crate) fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One 5 ms request of `route` at `start_unix_ns`, by a process of `service` with `resource`
/// attributes, in trace `trace`.
pub(crate) fn server_request(
    trace: [u8; 16],
    service: &str,
    resource: &[(&str, &str)],
    route: &str,
    start_unix_ns: u64,
) -> ResourceSpans {
    let mut attributes = vec![kv("service.name", service)];
    attributes.extend(resource.iter().map(|(key, value)| kv(key, value)));
    let span = Span {
        trace_id: trace.to_vec(),
        span_id: vec![trace[15], 1, 1, 1, 1, 1, 1, 1],
        name: format!("GET {route}"),
        kind: 2,
        start_time_unix_nano: start_unix_ns,
        end_time_unix_nano: start_unix_ns + 5_000_000,
        attributes: vec![kv("http.request.method", "GET"), kv("http.route", route)],
        ..Default::default()
    };
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![span],
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

pub(crate) async fn export(app: &TestApp, resource_spans: Vec<ResourceSpans>) {
    app.export(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
        .await;
}

pub(crate) async fn get_json(url: String) -> (u16, Json) {
    let res = http_client().get(url).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Json::Null))
}

/// Requests per endpoint name of `service`, of all time, once they add up to `total` (10,000
/// requests take a while on a busy PostgreSQL).
pub(crate) async fn requests_by_endpoint(
    app: &TestApp,
    service: &str,
    total: u64,
) -> Vec<(String, u64)> {
    app.eventually(Duration::from_secs(180), || async {
        let url = format!("{}/api/v1/endpoints?service={service}&from=0", app.ui_url);
        let (_, body) = get_json(url).await;
        let mut found: Vec<(String, u64)> = (body["endpoints"].as_array()?.iter())
            .map(|e| Some((e["endpoint"].as_str()?.to_owned(), e["requests"].as_u64()?)))
            .collect::<Option<_>>()?;
        found.sort();
        (found.iter().map(|(_, n)| n).sum::<u64>() == total).then_some(found)
    })
    .await
}

#[tokio::test]
async fn old_data_goes_recent_stays_and_ingest_goes_on() {
    // The app's own retention task keeps everything; the test runs its pass itself.
    let app =
        spawn_app_with(|config| config.retention.spans = Duration::from_secs(3_650 * 86_400)).await;
    let now = now_unix_ns();
    let old = now - 10 * DAY_NS;
    // The partitions of the old days, as the maintenance task created them back then.
    app.store.maintain_partitions(old).await.unwrap();
    let old_trace =
        |idx: u8| TraceId([idx, 0xee, 0xee, 0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    for idx in 0..20u8 {
        let mut spans = decode::spans(login_request(3)).spans;
        for span in &mut spans {
            span.trace_id = old_trace(idx);
        }
        app.store
            .insert_blocks(&[block::encode(spans.clone(), old)])
            .await
            .unwrap();
    }

    let url = app.otlp_http_url.clone();
    let ingest = tokio::spawn(async move {
        for seed in 1..=40u8 {
            let res = http_client()
                .post(format!("{url}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(login_request(seed).encode_to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                200,
                "exports are acknowledged during retention"
            );
        }
    });
    let report = retention::apply(&app.store, &default_retention(), now)
        .await
        .unwrap();
    ingest.await.unwrap();
    assert!(report.blocks >= 20, "{report:?}");

    for idx in 0..20u8 {
        assert!(app.store.trace(old_trace(idx)).await.unwrap().is_none());
    }
    for seed in 1..=40u8 {
        assert_eq!(
            app.store
                .trace(TraceId([seed; 16]))
                .await
                .unwrap()
                .map(|spans| spans.len()),
            Some(2),
            "recent trace {seed} kept"
        );
    }
    app.stop().await;
}

/// A service at its endpoint cap, whose first endpoints then go unseen for the retention period:
/// retention evicts them, the next new route gets an endpoint of its own instead of `other`,
/// and `other` keeps the requests it counted.
#[tokio::test]
async fn endpoints_unseen_for_the_retention_period_free_their_places_under_the_cap() {
    let app = spawn_app_with(|config| {
        keep_everything(config);
        config.pipeline.max_endpoints_per_service = 2;
    })
    .await;
    let now = now_unix_ns();
    let long_ago = now - 100 * DAY_NS;
    let trace = |n: u8| [0xe1, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
    export(
        &app,
        vec![
            server_request(trace(1), "shop", &[], "/a", long_ago),
            server_request(trace(2), "shop", &[], "/b", long_ago),
        ],
    )
    .await;
    requests_by_endpoint(&app, "shop", 2).await;
    export(&app, vec![server_request(trace(3), "shop", &[], "/c", now)]).await;
    let before = requests_by_endpoint(&app, "shop", 3).await;
    let names = |found: &[(String, u64)]| -> Vec<String> {
        found.iter().map(|(name, _)| name.clone()).collect()
    };
    assert_eq!(names(&before), ["GET /a", "GET /b", "other"], "{before:?}");

    // Eight days on: the requests, received now, are past the week of `spans` (they expire
    // by receive time, not by their start).
    retention::apply(&app.store, &default_retention(), now + 8 * DAY_NS)
        .await
        .unwrap();
    let left: Vec<String> = (app.store.endpoints().await.unwrap().into_iter())
        .map(|e| e.endpoint)
        .collect();
    assert_eq!(
        left,
        ["other"],
        "the endpoints unseen for 90 days are evicted"
    );

    export(&app, vec![server_request(trace(4), "shop", &[], "/d", now)]).await;
    let after = requests_by_endpoint(&app, "shop", 2).await;
    assert_eq!(
        after,
        [("GET /d".to_owned(), 1), ("other".to_owned(), 1)],
        "a new route after the eviction is an endpoint of its own; `other` keeps its request"
    );
    app.stop().await;
}

/// As many processes as the resource cap, gone for longer than the retention period: retention
/// evicts their resources, and a process that starts afterwards gets an id again, so selecting
/// its requests by a resource attribute finds them (past the cap it could not).
#[tokio::test]
async fn resources_no_request_refers_to_are_evicted_and_new_processes_get_ids() {
    const MAX_RESOURCES: usize = 300;
    let app = spawn_app_with(|config| {
        keep_everything(config);
        config.pipeline.max_resources = MAX_RESOURCES;
    })
    .await;
    let now = now_unix_ns();
    let ten_days_ago = now - 10 * DAY_NS;
    let trace = |n: u32| {
        let mut id = [0xe2; 16];
        id[12..].copy_from_slice(&n.to_be_bytes());
        id
    };
    let pods = MAX_RESOURCES as u32;
    for first in (0..pods).step_by(100) {
        let requests = (first..(first + 100).min(pods))
            .map(|n| {
                let pod = format!("pod-{n}");
                let start = ten_days_ago + u64::from(n) * 1_000_000;
                server_request(trace(n), "shop", &[("host.name", &pod)], "/items", start)
            })
            .collect();
        export(&app, requests).await;
    }
    requests_by_endpoint(&app, "shop", u64::from(pods)).await;

    // At the cap: a new process's request is stored without its resource, and counted.
    export(
        &app,
        vec![server_request(
            trace(pods),
            "shop",
            &[("host.name", "fresh-1")],
            "/items",
            now,
        )],
    )
    .await;
    requests_by_endpoint(&app, "shop", u64::from(pods) + 1).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("bottleneck_requests_without_resource_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bottleneck_cardinality_folded_total{kind=\"resource\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        selected_by_host(&app, "shop", "GET /items", "fresh-1").await,
        None,
        "past the cap, no selection finds it"
    );

    // Eight days on: the requests, received now, are past the week of `spans` (they expire
    // by receive time, not by their start).
    retention::apply(&app.store, &default_retention(), now + 8 * DAY_NS)
        .await
        .unwrap();
    assert!(app.store.resources().await.unwrap().is_empty());

    export(
        &app,
        vec![server_request(
            trace(pods + 1),
            "shop",
            &[("host.name", "fresh-2")],
            "/items",
            now,
        )],
    )
    .await;
    // The rollups of the processes gone keep their requests for 90 days.
    requests_by_endpoint(&app, "shop", u64::from(pods) + 2).await;
    assert_eq!(
        selected_by_host(&app, "shop", "GET /items", "fresh-2").await,
        Some(Some(1))
    );
    app.stop().await;
}

/// The requests of `endpoint` of `service` in the last hour whose process has `host.name`
/// `host`, as a comparison selects them; `None` when the selection finds none.
pub(crate) async fn selected_by_host(
    app: &TestApp,
    service: &str,
    endpoint: &str,
    host: &str,
) -> Option<Option<u64>> {
    let url = format!(
        "{}/api/v1/compare?service={service}&endpoint={}&range=1h\
         &baseline=attr:host.name={host}&candidate=attr:host.name={host}",
        app.ui_url,
        endpoint.replace(' ', "%20"),
    );
    let (status, body) = get_json(url).await;
    (status == 200).then(|| body["baseline"]["requests"].as_u64())
}

/// Requests of `service` per version, of all time, once they add up to `total`.
pub(crate) async fn requests_by_version(
    app: &TestApp,
    service: &str,
    total: u64,
) -> Vec<(String, u64)> {
    app.eventually(Duration::from_secs(60), || async {
        let url = format!("{}/api/v1/versions?service={service}&from=0", app.ui_url);
        let (_, body) = get_json(url).await;
        let mut found: Vec<(String, u64)> = (body["versions"].as_array()?.iter())
            .map(|v| Some((v["version"].as_str()?.to_owned(), v["requests"].as_u64()?)))
            .collect::<Option<_>>()?;
        found.sort();
        (found.iter().map(|(_, n)| n).sum::<u64>() == total).then_some(found)
    })
    .await
}

/// A service at the service cap, unseen for longer than rollups are kept: retention evicts its
/// endpoints, and a new service then counts under its own name instead of `other`.
#[tokio::test]
async fn services_unseen_for_the_retention_period_free_their_places() {
    let app = spawn_app_with(|config| {
        keep_everything(config);
        config.pipeline.max_services = 2;
    })
    .await;
    let now = now_unix_ns();
    let long_ago = now - 100 * DAY_NS;
    let trace = |n: u8| [0xe5, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
    export(
        &app,
        vec![
            server_request(trace(1), "gone", &[], "/a", long_ago),
            server_request(trace(2), "kept", &[], "/k", now),
        ],
    )
    .await;
    requests_by_endpoint(&app, "gone", 1).await;
    requests_by_endpoint(&app, "kept", 1).await;
    export(
        &app,
        vec![server_request(trace(3), "third", &[], "/t", now)],
    )
    .await;
    assert_eq!(
        requests_by_endpoint(&app, "other", 1).await,
        [("GET /t".to_owned(), 1)],
        "a third service counts as `other`"
    );

    // Eight days on, the rollups of 100 days ago are past the 90 days they are kept.
    retention::apply(&app.store, &default_retention(), now + 8 * DAY_NS)
        .await
        .unwrap();
    export(
        &app,
        vec![server_request(trace(4), "fourth", &[], "/f", now)],
    )
    .await;
    assert_eq!(
        requests_by_endpoint(&app, "fourth", 1).await,
        [("GET /f".to_owned(), 1)],
        "the place of the service gone is free"
    );
    app.stop().await;
}

/// A version at its service's version cap, unseen for longer than rollups are kept: retention
/// removes its rollups, and a new version then counts under its own name instead of `other`.
/// Spans are kept for a month here, so that no request, endpoint or resource goes with them:
/// the rollups alone free the place.
#[tokio::test]
async fn versions_unseen_for_the_retention_period_free_their_places() {
    let app = spawn_app_with(|config| {
        keep_everything(config);
        config.pipeline.max_versions_per_service = 1;
    })
    .await;
    let now = now_unix_ns();
    let long_ago = now - 100 * DAY_NS;
    let trace = |n: u8| [0xe7, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
    let version = |v| [("service.version", v)];
    let old = server_request(trace(1), "kept", &version("1"), "/k", long_ago);
    export(&app, vec![old]).await;
    requests_by_version(&app, "kept", 1).await;
    let second = server_request(trace(2), "kept", &version("2"), "/k", now);
    export(&app, vec![second]).await;
    assert_eq!(
        requests_by_version(&app, "kept", 2).await,
        [("1".to_owned(), 1), ("other".to_owned(), 1)],
        "a second version counts as `other`"
    );

    // Eight days on, the rollups of 100 days ago are past the 90 days they are kept.
    let month_of_spans = RetentionConfig {
        spans: Duration::from_secs(30 * 86_400),
        ..default_retention()
    };
    let report = retention::apply(&app.store, &month_of_spans, now + 8 * DAY_NS)
        .await
        .unwrap();
    assert_eq!(
        (report.requests, report.endpoints, report.resources),
        (0, 0, 0),
        "{report:?}"
    );
    let third = server_request(trace(3), "kept", &version("3"), "/k", now);
    export(&app, vec![third]).await;
    assert_eq!(
        requests_by_version(&app, "kept", 2).await,
        [("3".to_owned(), 1), ("other".to_owned(), 1)],
        "the place of the version gone is free"
    );
    app.stop().await;
}

/// A request whose exporter's clock is five days ahead is counted now: it is in the current
/// window's endpoint figures (on PostgreSQL, in today's partition, not the DEFAULT one), and
/// counted as clamped, while its stored span keeps the time that was sent.
#[tokio::test]
async fn a_request_five_days_ahead_is_counted_now_and_its_span_keeps_the_time_sent() {
    let app = spawn_app_with(keep_everything).await;
    let before = now_unix_ns();
    let ahead = before + 5 * DAY_NS;
    let trace = [0xe6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    export(
        &app,
        vec![server_request(trace, "ahead", &[], "/soon", ahead)],
    )
    .await;
    let current = app
        .eventually(Duration::from_secs(60), || async {
            let url = format!("{}/api/v1/endpoints?service=ahead", app.ui_url);
            let (_, body) = get_json(url).await;
            let endpoints = body["endpoints"].as_array()?.clone();
            (!endpoints.is_empty()).then_some(endpoints)
        })
        .await;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["endpoint"], "GET /soon");
    assert_eq!(current[0]["requests"], 1);
    assert_eq!(app.counter("bottleneck_clock_skew_clamped_total").await, 1);
    let requests = app.store.trace_requests(TraceId(trace)).await.unwrap();
    assert!(
        (before..now_unix_ns()).contains(&requests[0].start_unix_ns),
        "the request row starts when it was analysed"
    );
    let spans = app.store.trace(TraceId(trace)).await.unwrap().unwrap();
    assert_eq!(
        spans[0].start_unix_ns, ahead,
        "the span keeps the time sent"
    );
    app.stop().await;
}

/// Requests expire by receive time, with the blocks they were analysed from, not by the clock of
/// the exporter: a request whose span starts ten days ago (a slow clock) stays as long as its
/// spans, and one that starts in the 22nd century goes ten days after it was received, like
/// everything else (on PostgreSQL the slow one sits in the DEFAULT partition, outside every day;
/// the one ahead is counted at its analysis, today).
#[tokio::test]
async fn requests_expire_with_their_blocks_whatever_the_exporters_clock() {
    let app = spawn_app_with(keep_everything).await;
    let now = now_unix_ns();
    let trace = |n: u8| [0xe3, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
    export(
        &app,
        vec![
            server_request(trace(1), "clocks", &[], "/slow", now - 10 * DAY_NS),
            server_request(trace(2), "clocks", &[], "/ahead", now + 150 * 365 * DAY_NS),
        ],
    )
    .await;
    let requests = || async { app.store.stats().await.unwrap().n_requests };
    // The API's windows end now; the request in the future is counted in the store.
    app.eventually(Duration::from_secs(60), || async {
        (requests().await == 2).then_some(())
    })
    .await;

    retention::apply(&app.store, &default_retention(), now)
        .await
        .unwrap();
    assert_eq!(
        requests().await,
        2,
        "received now, both stay for the week their spans stay"
    );

    retention::apply(&app.store, &default_retention(), now + 10 * DAY_NS)
        .await
        .unwrap();
    assert_eq!(
        requests().await,
        0,
        "ten days after they were received, both are gone with their spans"
    );
    app.stop().await;
}

/// A clock five days ahead, allowed by `max_clock_skew`, puts a request in the DEFAULT partition
/// (day partitions exist three days ahead). PostgreSQL refuses to create a day's partition while the default one holds rows
/// of it, which left the whole day in the default partition; the partition is now created with
/// those rows moved into it.
#[cfg(feature = "pg-tests")]
#[tokio::test]
async fn a_day_whose_requests_came_early_gets_its_partition_with_them() {
    use sqlx::Connection;

    let db = crate::support::TestDatabase::postgres().await;
    let url = db.url.clone();
    let app = crate::support::spawn_app_on(&db.path, |config| {
        config.database_url = url;
        keep_everything(config);
        config.pipeline.max_clock_skew = Duration::from_secs(10 * 86_400);
    })
    .await;
    let ahead = now_unix_ns() + 5 * DAY_NS;
    let trace = [0xe4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    export(
        &app,
        vec![server_request(trace, "clocks", &[], "/ahead", ahead)],
    )
    .await;
    app.eventually(Duration::from_secs(60), || async {
        (app.store.stats().await.unwrap().n_requests == 1).then_some(())
    })
    .await;
    let partition_of_request = || async {
        let mut conn = sqlx::PgConnection::connect(&db.cli_url()).await.unwrap();
        let name: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM requests")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        name
    };
    assert_eq!(partition_of_request().await, "requests_default");

    app.store.maintain_partitions(ahead).await.unwrap();
    let partition = partition_of_request().await;
    assert!(
        partition.starts_with("requests_d2"),
        "the request moved into its day's partition: {partition}"
    );
    assert_eq!(app.store.stats().await.unwrap().n_requests, 1);
    app.stop().await;
}
