//! The Jaeger query API driven with the requests Grafana's Jaeger data source and Jaeger UI make:
//! the data source test (`/api/services`), the operation pickers, a search with every filter the
//! search form has, and a trace opened by id, every field the trace view reads checked against
//! what `/api/v1/traces/{id}` (the trace page's data) says.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Status, status};
use serde_json::Value as Json;

use crate::analysis::{Builder, MS, fast_login, get_json, kv, kv_int, seed_login};
use crate::hostile::auth;
use crate::pipeline::export;
use crate::support::{TestApp, http_client, spawn_app, spawn_app_with};

fn any(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn typed(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: any(value),
        ..Default::default()
    }
}

/// The seed login of `seed`, its request span failed with an exception event, carrying
/// attributes of every type and a link, recorded by a named scope.
fn failed_login(seed: u8, base: u64, linked: [u8; 16]) -> ExportTraceServiceRequest {
    let mut request = seed_login(seed, base);
    let auth = &mut request.resource_spans[0];
    auth.resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("host.name", "auth-1"));
    let scope = &mut auth.scope_spans[0];
    scope.scope = Some(InstrumentationScope {
        name: "opentelemetry.instrumentation.flask".into(),
        version: "0.48b0".into(),
        ..Default::default()
    });
    let root = &mut scope.spans[0];
    root.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "login failed".into(),
    });
    root.attributes.extend([
        kv_int("http.response.status_code", 500),
        typed("retry", Value::BoolValue(true)),
        typed("load", Value::DoubleValue(0.75)),
        typed("token", Value::BytesValue(vec![1, 2, 255])),
        typed(
            "roles",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(Value::StringValue("admin".into())),
                    },
                    AnyValue {
                        value: Some(Value::StringValue("dev".into())),
                    },
                ],
            }),
        ),
    ]);
    root.events.push(Event {
        time_unix_nano: base + 290 * MS,
        name: "exception".into(),
        attributes: vec![kv("exception.type", "ValueError")],
        dropped_attributes_count: 0,
    });
    root.links.push(Link {
        trace_id: linked.to_vec(),
        span_id: vec![7; 8],
        ..Default::default()
    });
    request
}

async fn get(app: &TestApp, path_and_query: &str) -> (u16, Json) {
    let res = http_client()
        .get(format!("{}{path_and_query}", app.ui_url))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Three logins of `auth` (slow, fast, slow and failed), analysed.
async fn three_logins(app: &TestApp, now: u64) -> [String; 3] {
    export(app, &seed_login(1, now - 90_000 * MS)).await;
    export(app, &fast_login(2, now - 60_000 * MS)).await;
    export(app, &failed_login(3, now - 30_000 * MS, [1; 16])).await;
    let url = format!("{}/api/v1/traces?service=auth&limit=10", app.ui_url);
    app.eventually(Duration::from_secs(20), || async {
        get_json(url.clone())
            .await
            .filter(|t| t["traces"].as_array().map(Vec::len) == Some(3))
    })
    .await;
    let mut fast = [2u8; 16];
    fast[1] = 0xfa;
    [
        hex::encode([1u8; 16]),
        hex::encode(fast),
        hex::encode([3u8; 16]),
    ]
}

fn ids(data: &Json) -> Vec<String> {
    data.as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_owned())
        .collect()
}

fn tag<'a>(span: &'a Json, key: &str) -> Option<&'a Json> {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
}

fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn grafana_lists_services_and_operations_and_searches_traces() {
    let app = spawn_app().await;
    let now = now_ns();
    let [slow, fast, failed] = three_logins(&app, now).await;

    // The data source's "Save & test", then the service and operation pickers.
    let (status, services) = get(&app, "/api/services").await;
    assert_eq!(status, 200);
    assert_eq!(services["data"], serde_json::json!(["auth", "idp"]));
    assert_eq!(services["total"], 2);
    assert_eq!(services["errors"], Json::Null);
    let (_, operations) = get(&app, "/api/services/auth/operations").await;
    assert_eq!(operations["data"], serde_json::json!(["POST /login"]));
    let (_, operations) = get(&app, "/api/operations?service=idp&spanKind=server").await;
    assert_eq!(
        operations["data"],
        serde_json::json!([{"name": "POST /saml/assert", "spanKind": "server"}])
    );
    let (_, operations) = get(&app, "/api/operations?service=idp&spanKind=client").await;
    assert_eq!(operations["data"], serde_json::json!([]));

    // Grafana's search: the form's fields, its time range in microseconds, `lookback=custom`.
    let start_us = (now - 3_600_000 * MS) / 1_000;
    let end_us = now / 1_000;
    let search = |extra: &str| {
        format!(
            "/api/traces?service=auth&operation={}&start={start_us}&end={end_us}&lookback=custom{extra}",
            encoded("POST /login")
        )
    };
    let (status, found) = get(&app, &search("&limit=20")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        ids(&found["data"]),
        [failed.as_str(), fast.as_str(), slow.as_str()],
        "newest first"
    );
    let (_, found) = get(&app, &search("&minDuration=100ms")).await;
    assert_eq!(ids(&found["data"]), [failed.as_str(), slow.as_str()]);
    let (_, found) = get(&app, &search("&maxDuration=0.1s")).await;
    assert_eq!(ids(&found["data"]), [fast.as_str()]);
    let (_, found) = get(&app, &search("&limit=1")).await;
    assert_eq!(ids(&found["data"]), [failed.as_str()]);
    let tags = encoded(r#"{"error":"true","host.name":"auth-1"}"#);
    let (_, found) = get(&app, &search(&format!("&tags={tags}"))).await;
    assert_eq!(ids(&found["data"]), [failed.as_str()]);
    // A tag of a child span (the cache call) and Jaeger UI's `tag=key:value` form.
    let (_, found) = get(&app, &search("&tag=db.system:redis")).await;
    assert_eq!(ids(&found["data"]), [failed.as_str(), slow.as_str()]);
    let (_, found) = get(
        &app,
        &search(&format!(
            "&tags={}",
            encoded(r#"{"bottleneck.finding":"n_plus_one"}"#)
        )),
    )
    .await;
    assert_eq!(
        ids(&found["data"]),
        [failed.as_str(), slow.as_str()],
        "the verdict is searchable"
    );
    // A window before the traffic finds nothing; Jaeger UI's lookback without start finds all.
    let (_, found) = get(
        &app,
        &format!(
            "/api/traces?service=auth&start={}&end={}",
            start_us - 3_600_000_000,
            start_us
        ),
    )
    .await;
    assert_eq!(found["data"], serde_json::json!([]));
    let (_, found) = get(&app, "/api/traces?service=auth&lookback=2h&limit=20").await;
    assert_eq!(found["data"].as_array().unwrap().len(), 3);
    // Grafana's table shows each result's root: its service and operation, start and duration.
    let (_, found) = get(&app, &search("&minDuration=100ms")).await;
    let first = &found["data"][0];
    let root = first["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["references"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["refType"] != "CHILD_OF")
        })
        .unwrap();
    assert_eq!(root["operationName"], "POST /login");
    assert_eq!(
        first["processes"][root["processID"].as_str().unwrap()]["serviceName"],
        "auth"
    );
    assert_eq!(root["duration"], 300_000);
    assert_eq!(root["startTime"], (now - 30_000 * MS) / 1_000);

    // Jaeger UI's comparison view: traces by id, the unknown one named in `errors`.
    let unknown = "0123456789abcdef0123456789abcdef";
    let (status, found) = get(
        &app,
        &format!("/api/traces?traceID={slow}&traceID={unknown}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&found["data"]), [slow.as_str()]);
    assert_eq!(found["errors"][0]["traceID"], unknown);
    assert_eq!(found["errors"][0]["msg"], "trace not found");

    // Errors in Jaeger's shape and status codes.
    for (path, code) in [
        ("/api/traces", 400),
        ("/api/traces?service=auth&minDuration=fast", 400),
        (
            "/api/traces?service=auth&minDuration=2s&maxDuration=1s",
            400,
        ),
        ("/api/traces?service=auth&tags=%7Bnot-json", 400),
        ("/api/traces?service=auth&limit=many", 400),
        ("/api/operations", 400),
        ("/api/traces/not-a-trace-id", 400),
        ("/api/traces/0123456789abcdef0123456789abcdef", 404),
    ] {
        let (status, body) = get(&app, path).await;
        assert_eq!(status, code, "{path}: {body}");
        assert_eq!(body["data"], Json::Null, "{path}");
        assert_eq!(body["errors"][0]["code"], code, "{path}");
        assert!(
            body["errors"][0]["msg"].as_str().unwrap().len() > 5,
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_trace_opened_in_grafana_shows_the_trace_pages_spans_and_the_verdict() {
    let app = spawn_app().await;
    let now = now_ns();
    let [_, _, failed] = three_logins(&app, now).await;

    // Grafana opens a trace by id, with its time range when "time shift" is configured.
    let (status, by_id) = get(
        &app,
        &format!(
            "/api/traces/{failed}?start={}&end={}",
            (now - 3_600_000 * MS) / 1_000,
            now / 1_000
        ),
    )
    .await;
    assert_eq!(status, 200, "{by_id}");
    assert_eq!(by_id["errors"], Json::Null);
    let trace = &by_id["data"][0];
    assert_eq!(trace["traceID"], failed);
    let ours = get_json(format!("{}/api/v1/traces/{failed}", app.ui_url))
        .await
        .unwrap();
    let page = http_client()
        .get(format!("{}/trace/{failed}", app.ui_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spans = trace["spans"].as_array().unwrap();
    let our_spans = ours["spans"].as_array().unwrap();
    assert!(
        page.contains(&format!("{} spans", our_spans.len())),
        "the page counts them too"
    );
    let ours_by_id: HashMap<&str, &Json> = our_spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    assert_eq!(
        spans
            .iter()
            .map(|s| s["spanID"].as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        ours_by_id.keys().copied().collect::<BTreeSet<_>>(),
        "the same spans as the trace page"
    );
    let processes = &trace["processes"];
    for span in spans {
        let our = ours_by_id[span["spanID"].as_str().unwrap()];
        assert_eq!(span["traceID"], failed);
        assert_eq!(span["operationName"], our["name"]);
        let duration_us = span["duration"].as_f64().unwrap();
        assert!((duration_us / 1_000.0 - our["duration_ms"].as_f64().unwrap()).abs() < 0.01);
        let parent = span["references"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["refType"] == "CHILD_OF")
            .map(|r| r["spanID"].clone())
            .unwrap_or(Json::Null);
        assert_eq!(parent, our["parent_span_id"]);
        let process = &processes[span["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], our["service"]);
        assert!(
            process["tags"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["key"] != "service.name")
        );
        assert_eq!(
            tag(span, "bottleneck.category").unwrap()["value"],
            our["category"]
        );
        assert!(span["logs"].is_array() && span["tags"].is_array());
        assert_eq!(span["warnings"], Json::Null);
    }

    // The request span as the OpenTelemetry Collector's translator writes it.
    let root = spans
        .iter()
        .find(|s| s["operationName"] == "POST /login")
        .unwrap();
    let value = |key: &str| {
        let found = tag(root, key).unwrap_or_else(|| panic!("no tag {key}: {root}"));
        (
            found["type"].as_str().unwrap().to_owned(),
            found["value"].clone(),
        )
    };
    assert_eq!(value("http.route"), ("string".into(), "/login".into()));
    assert_eq!(
        value("http.response.status_code"),
        ("int64".into(), 500.into())
    );
    assert_eq!(value("retry"), ("bool".into(), true.into()));
    assert_eq!(value("load"), ("float64".into(), 0.75.into()));
    assert_eq!(value("token"), ("binary".into(), "AQL/".into()));
    assert_eq!(
        value("roles"),
        ("string".into(), r#"["admin","dev"]"#.into())
    );
    assert_eq!(value("span.kind"), ("string".into(), "server".into()));
    assert_eq!(value("otel.status_code"), ("string".into(), "ERROR".into()));
    assert_eq!(value("error"), ("bool".into(), true.into()));
    assert_eq!(
        value("otel.status_description"),
        ("string".into(), "login failed".into())
    );
    assert_eq!(
        value("otel.scope.name"),
        (
            "string".into(),
            "opentelemetry.instrumentation.flask".into()
        )
    );
    assert_eq!(root["logs"].as_array().unwrap().len(), 1);
    let log = &root["logs"][0];
    assert_eq!(log["timestamp"], (now - 30_000 * MS + 290 * MS) / 1_000);
    assert_eq!(
        log["fields"][0],
        serde_json::json!({"key": "event", "type": "string", "value": "exception"})
    );
    assert_eq!(log["fields"][1]["key"], "exception.type");
    assert_eq!(
        root["references"],
        serde_json::json!([{"refType": "FOLLOWS_FROM", "traceID": hex::encode([1u8; 16]), "spanID": "0707070707070707"}])
    );
    let auth = &processes[root["processID"].as_str().unwrap()];
    assert!(
        auth["tags"].as_array().unwrap().contains(
            &serde_json::json!({"key": "host.name", "type": "string", "value": "auth-1"})
        )
    );

    // The verdict: the request's endpoint, breakdown and findings on its span, the findings'
    // kinds on the spans they name, critical-path time on the spans of the critical path.
    let request = &ours["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["endpoint"] == "POST /login")
        .unwrap();
    assert_eq!(value("bottleneck.endpoint").1, "POST /login");
    let findings = request["findings"].as_array().unwrap();
    assert_eq!(
        value("bottleneck.findings"),
        ("int64".into(), findings.len().into())
    );
    for (idx, finding) in findings.iter().enumerate() {
        assert_eq!(
            value(&format!("bottleneck.finding.{}", idx + 1)).1,
            finding["summary"]
        );
        for span_id in finding["span_ids"].as_array().unwrap() {
            let span = spans.iter().find(|s| s["spanID"] == *span_id).unwrap();
            let kinds = tag(span, "bottleneck.finding").unwrap()["value"]
                .as_str()
                .unwrap();
            assert!(
                kinds.split(',').any(|k| k == finding["kind"]),
                "{kinds} on {span_id}"
            );
        }
    }
    assert_eq!(
        value("bottleneck.breakdown.db_us"),
        ("int64".into(), 140_000.into())
    );
    let critical: Vec<&Json> = spans
        .iter()
        .filter(|s| tag(s, "bottleneck.critical_path_us").is_some())
        .collect();
    let on_path: BTreeSet<&str> = request["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    for span_id in &on_path {
        assert!(
            critical.iter().any(|s| s["spanID"] == *span_id),
            "{span_id} is on the critical path"
        );
    }
    let critical_us: i64 = critical
        .iter()
        .filter(|s| on_path.contains(s["spanID"].as_str().unwrap()))
        .map(|s| {
            tag(s, "bottleneck.critical_path_us").unwrap()["value"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert!(
        (299_980..=300_000).contains(&critical_us),
        "the critical path is the request: {critical_us}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_jaeger_api_takes_the_tokens_the_rest_of_the_api_takes() {
    let app = spawn_app_with(|config| config.auth = auth(&[], &["reader"], &[])).await;
    let url = format!("{}/api/services", app.ui_url);
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    let client = http_client();
    assert_eq!(status(client.get(&url)).await, 401);
    assert_eq!(status(client.get(&url).bearer_auth("nobody")).await, 401);
    // Grafana's data source sends the token as basic auth's password, or as a bearer header.
    let basic = client.get(&url).basic_auth("grafana", Some("reader"));
    let res = basic.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Json = res.json().await.unwrap();
    assert_eq!(body["data"], serde_json::json!([]));
    assert_eq!(status(client.get(&url).bearer_auth("reader")).await, 200);
    app.stop().await;
}

/// More logins of `auth` than one search reads, a millisecond apart and a few seconds old, in
/// one export: each a single server span of its own trace.
fn many_logins(n: u16, now: u64) -> ExportTraceServiceRequest {
    let mut request = ExportTraceServiceRequest::default();
    for i in 0..n {
        let mut trace = [0x5e; 16];
        trace[..2].copy_from_slice(&i.to_be_bytes());
        let mut login = Builder::new(trace, now - (5_000 + u64::from(n - i)) * MS, None);
        login.span(
            "auth",
            None,
            "POST /login",
            2,
            0,
            1,
            vec![
                kv("http.request.method", "POST"),
                kv("http.route", "/login"),
            ],
        );
        request
            .resource_spans
            .extend(login.request().resource_spans);
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_search_reads_a_bounded_number_of_traces_and_says_where_it_stopped() {
    let app = spawn_app().await;
    let now = now_ns();
    let logins = u16::try_from(bottleneck::web::jaeger::search::CANDIDATES).unwrap() + 20;
    export(&app, &many_logins(logins, now)).await;
    let url = format!(
        "{}/api/v1/endpoint?service=auth&endpoint=POST%20/login",
        app.ui_url
    );
    app.eventually(Duration::from_secs(30), || async {
        get_json(url.clone())
            .await
            .filter(|d| d["requests"].as_u64() == Some(u64::from(logins)))
    })
    .await;

    let (status, found) = get(
        &app,
        &format!(
            "/api/traces?service=auth&tags={}",
            encoded(r#"{"no.such":"tag"}"#)
        ),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"], serde_json::json!([]));
    let warnings = found["warnings"].as_array().expect("a warning");
    assert_eq!(warnings.len(), 1, "{found}");
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with(&format!(
            "search stopped after reading {} candidate traces",
            bottleneck::web::jaeger::search::CANDIDATES
        )),
        "{warning}"
    );

    // A search that matches stops at its limit, and was not cut.
    let (_, found) = get(
        &app,
        &format!(
            "/api/traces?service=auth&limit=3&tags={}",
            encoded(r#"{"http.route":"/login"}"#)
        ),
    )
    .await;
    let mut newest = [0x5e; 16];
    newest[..2].copy_from_slice(&(logins - 1).to_be_bytes());
    assert_eq!(ids(&found["data"]).first(), Some(&hex::encode(newest)));
    assert_eq!(found["data"].as_array().map(Vec::len), Some(3));
    assert!(found.get("warnings").is_none(), "{found}");
    app.stop().await;
}
