//! The analysis pipeline over time: spans that arrive late re-analyse their request without
//! counting it twice, and the per-service endpoint cap folds the excess into `other`.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use serde_json::Value as Json;

use crate::ingest::login_request;
use crate::support::{TestApp, http_client, spawn_app, spawn_app_with};

pub(crate) async fn export(app: &TestApp, request: &ExportTraceServiceRequest) {
    let res = http_client()
        .post(format!("{}/v1/traces", app.otlp_http_url))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The endpoints of all time (the fixtures are dated 2023).
async fn endpoints(app: &TestApp) -> Json {
    let url = format!("{}/api/v1/endpoints?from=0", app.ui_url);
    http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn late_spans_reanalyse_without_double_counting() {
    let app = spawn_app().await;
    let full = login_request(21);
    let mut root_only = full.clone();
    let query = root_only.resource_spans[0].scope_spans[0]
        .spans
        .pop()
        .unwrap();
    export(&app, &root_only).await;
    app.eventually(Duration::from_secs(20), || async {
        let body = endpoints(&app).await;
        let login = body["endpoints"].as_array()?.first()?.clone();
        (login["requests"] == 1 && login["db_calls_per_request"] == 0.0).then_some(())
    })
    .await;

    let mut late = full;
    late.resource_spans[0].scope_spans[0].spans = vec![query];
    export(&app, &late).await;
    let login = app
        .eventually(Duration::from_secs(20), || async {
            let body = endpoints(&app).await;
            let login = body["endpoints"].as_array()?.first()?.clone();
            (login["db_calls_per_request"] == 1.0).then_some(login)
        })
        .await;
    assert_eq!(login["requests"], 1, "the request is counted once: {login}");
    assert_eq!(login["breakdown_ms"]["db"], 20.0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("bottleneck_traces_reanalysed_total 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// SDKs export in batches, so a request's children often arrive seconds before its root: they
/// never become endpoints of their own, and the request is analysed whole once its root comes.
#[tokio::test]
async fn late_roots_are_analysed_with_the_children_that_came_first() {
    let app = spawn_app().await;
    let full = login_request(22);
    let mut children = full.clone();
    let spans = &mut children.resource_spans[0].scope_spans[0].spans;
    let root = spans.remove(0);
    let mut sign = spans[0].clone();
    sign.span_id = vec![22, 3, 3, 3, 3, 3, 3, 3];
    sign.name = "saml.sign".into();
    sign.kind = 1;
    sign.attributes.clear();
    sign.start_time_unix_nano += 40_000_000;
    sign.end_time_unix_nano += 40_000_000;
    spans.push(sign);
    export(&app, &children).await;
    metrics_containing(&app, "bottleneck_traces_analysed_total 1\n").await;
    let body = endpoints(&app).await;
    assert_eq!(
        body["endpoints"],
        serde_json::json!([]),
        "children waiting for their root are no endpoints: {body}"
    );

    let mut late = full;
    late.resource_spans[0].scope_spans[0].spans = vec![root];
    export(&app, &late).await;
    let login = app
        .eventually(Duration::from_secs(20), || async {
            let body = endpoints(&app).await;
            let login = body["endpoints"].as_array()?.first()?.clone();
            (login["requests"] == 1).then_some(body)
        })
        .await;
    let endpoints = login["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{login}");
    let login = &endpoints[0];
    assert_eq!(login["endpoint"], "POST /login");
    assert_eq!(login["db_calls_per_request"], 1.0, "{login}");
    assert_eq!(login["breakdown_ms"]["db"], 20.0, "{login}");
    app.stop().await;
}

#[tokio::test]
async fn endpoints_past_the_cap_fold_into_other() {
    let app = spawn_app_with(|config| config.pipeline.max_endpoints_per_service = 2).await;
    for (seed, route) in [(31u8, "/a"), (32, "/b"), (33, "/c"), (34, "/d")] {
        let mut request = login_request(seed);
        let server = &mut request.resource_spans[0].scope_spans[0].spans[0];
        for kv in &mut server.attributes {
            if kv.key == "http.route" {
                kv.value.as_mut().unwrap().value = Some(Value::StringValue(route.into()));
            }
        }
        export(&app, &request).await;
    }
    let body = app
        .eventually(Duration::from_secs(20), || async {
            let body = endpoints(&app).await;
            let total: u64 = body["endpoints"]
                .as_array()?
                .iter()
                .filter_map(|e| e["requests"].as_u64())
                .sum();
            (total == 4).then_some(body)
        })
        .await;
    let mut names: Vec<&str> = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["endpoint"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names.len(), 3, "{body}");
    assert!(names.contains(&"other"), "{body}");
    let other = body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "other")
        .unwrap();
    assert_eq!(other["folded"], true);
    assert_eq!(other["requests"], 2);
    assert_eq!(body["capped_services"], serde_json::json!(["auth"]));
    app.stop().await;
}

/// The `/metrics` page once it contains `needle`.
async fn metrics_containing(app: &TestApp, needle: &str) -> String {
    app.eventually(Duration::from_secs(20), || async {
        let text = app.metrics().await;
        text.contains(needle).then_some(text)
    })
    .await
}

#[tokio::test]
async fn metrics_export_per_endpoint_figures() {
    let app = spawn_app().await;
    export(&app, &login_request(41)).await;
    let metrics =
        metrics_containing(&app, "bottleneck_endpoint_request_duration_seconds_count").await;
    let labels = "service=\"auth\",endpoint=\"POST /login\"";
    assert!(
        metrics.contains(&format!(
            "bottleneck_endpoint_request_duration_seconds_count{{{labels}}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "bottleneck_endpoint_request_duration_seconds_bucket{{{labels},le=\"0.5\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "bottleneck_endpoint_breakdown_seconds_total{{{labels},category=\"db\"}} 0.02"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("bottleneck_endpoint_errors_total{{{labels}}} 1")),
        "{metrics}"
    );
    // The delay is counted once the analysis is committed, a moment after the counters above.
    let metrics = metrics_containing(&app, "bottleneck_analysis_delay_seconds_count 1").await;
    assert!(
        metrics.contains("bottleneck_analysis_delay_seconds_bucket{le=\"0.25\"} 0"),
        "the trace waited out the grace period of 300 ms: {metrics}"
    );
    assert!(
        metrics.contains("bottleneck_analysis_delay_seconds_bucket{le=\"+Inf\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}
