//! End to end: the seed's login exported over OTLP comes back from the API with the right
//! breakdown, findings and bottleneck.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value as Json;

use crate::support::{http_client, spawn_app};

pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

pub(crate) const MS: u64 = 1_000_000;

/// Builds one trace as an OTLP export: spans by service, each service one resource with
/// `service.version` and `resource` attributes when given.
pub(crate) struct Builder {
    pub(crate) trace: [u8; 16],
    pub(crate) base: u64,
    pub(crate) next_id: u8,
    pub(crate) spans: Vec<(String, Span)>,
    pub(crate) version: Option<String>,
    pub(crate) resource: Vec<KeyValue>,
}

impl Builder {
    pub(crate) fn new(trace: [u8; 16], base: u64, version: Option<&str>) -> Self {
        Builder {
            trace,
            base,
            next_id: 0,
            spans: Vec::new(),
            version: version.map(str::to_owned),
            resource: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn span(
        &mut self,
        service: &str,
        parent: Option<[u8; 8]>,
        name: &str,
        kind: i32,
        from_ms: u64,
        to_ms: u64,
        attrs: Vec<KeyValue>,
    ) -> [u8; 8] {
        self.next_id += 1;
        let id = [self.trace[0], self.next_id, 1, 1, 1, 1, 1, 1];
        self.spans.push((
            service.to_owned(),
            Span {
                trace_id: self.trace.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                name: name.into(),
                kind,
                start_time_unix_nano: self.base + from_ms * MS,
                end_time_unix_nano: self.base + to_ms * MS,
                attributes: attrs,
                ..Default::default()
            },
        ));
        id
    }

    pub(crate) fn request(self) -> ExportTraceServiceRequest {
        let mut resource_spans = Vec::new();
        let mut services: Vec<&str> = Vec::new();
        for (service, _) in &self.spans {
            if !services.contains(&service.as_str()) {
                services.push(service);
            }
        }
        for service in services {
            let spans = self
                .spans
                .iter()
                .filter(|(s, _)| s == service)
                .map(|(_, span)| span.clone())
                .collect();
            let mut attributes = vec![kv("service.name", service)];
            if let Some(version) = &self.version {
                attributes.push(kv("service.version", version));
            }
            attributes.extend(self.resource.iter().cloned());
            resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            });
        }
        ExportTraceServiceRequest { resource_spans }
    }
}

/// The seed's login, 300 ms: 10 queries (140 ms, a duplicate and a 6-query N+1 loop), a 5 ms
/// cache get, a 100 ms call to the IdP, 10 ms of signing and 45 ms of other CPU work.
pub(crate) fn seed_login(seed: u8, base: u64) -> ExportTraceServiceRequest {
    let mut b = Builder::new([seed; 16], base, None);
    let db = |statement: &str| vec![kv("db.system", "postgresql"), kv("db.statement", statement)];
    let root = b.span(
        "auth",
        None,
        "POST /login",
        2,
        0,
        300,
        vec![
            kv("http.request.method", "POST"),
            kv("http.route", "/login"),
        ],
    );
    b.span(
        "auth",
        Some(root),
        "SELECT tenants",
        3,
        10,
        30,
        db("SELECT * FROM tenants WHERE id = 42"),
    );
    b.span(
        "auth",
        Some(root),
        "SELECT tenants",
        3,
        30,
        50,
        db("SELECT * FROM tenants WHERE id = 42"),
    );
    b.span(
        "auth",
        Some(root),
        "SELECT users",
        3,
        50,
        70,
        db("SELECT * FROM users WHERE email = 'a@b.c'"),
    );
    for n in 0..6u64 {
        let statement = format!("SELECT * FROM policy_rules WHERE policy_id = {}", n + 1);
        b.span(
            "auth",
            Some(root),
            "SELECT policy_rules",
            3,
            70 + n * 10,
            80 + n * 10,
            db(&statement),
        );
    }
    b.span(
        "auth",
        Some(root),
        "INSERT audit_log",
        3,
        130,
        150,
        db("INSERT INTO audit_log (user_id) VALUES (7)"),
    );
    b.span(
        "auth",
        Some(root),
        "GET",
        3,
        150,
        155,
        vec![kv("db.system", "redis"), kv("db.statement", "GET session")],
    );
    let call = b.span(
        "auth",
        Some(root),
        "POST",
        3,
        160,
        260,
        vec![
            kv("http.request.method", "POST"),
            kv("server.address", "idp"),
        ],
    );
    let idp = b.span(
        "idp",
        Some(call),
        "POST /saml/assert",
        2,
        165,
        255,
        vec![
            kv("http.request.method", "POST"),
            kv("http.route", "/saml/assert"),
        ],
    );
    b.span(
        "idp",
        Some(idp),
        "SELECT keys",
        3,
        170,
        200,
        db("SELECT * FROM keys WHERE kid = 'k1'"),
    );
    b.span("auth", Some(root), "saml.sign", 1, 260, 270, vec![]);
    b.request()
}

/// A quick login of the same endpoint, 40 ms: one 10 ms query and CPU work. Its trace id differs
/// from the seed login's of the same `seed`.
pub(crate) fn fast_login(seed: u8, base: u64) -> ExportTraceServiceRequest {
    let mut trace = [seed; 16];
    trace[1] = 0xfa;
    let mut b = Builder::new(trace, base, None);
    let root = b.span(
        "auth",
        None,
        "POST /login",
        2,
        0,
        40,
        vec![
            kv("http.request.method", "POST"),
            kv("http.route", "/login"),
        ],
    );
    b.span(
        "auth",
        Some(root),
        "SELECT users",
        3,
        5,
        15,
        vec![
            kv("db.system", "postgresql"),
            kv("db.statement", "SELECT * FROM users WHERE email = 'a@b.c'"),
        ],
    );
    b.request()
}

pub(crate) async fn get_json(url: String) -> Option<Json> {
    let res = http_client().get(url).send().await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    res.json().await.ok()
}

#[tokio::test]
async fn seed_login_breakdown_findings_and_bottleneck() {
    let app = spawn_app().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for seed in 1..=4u8 {
        let res = http_client()
            .post(format!("{}/v1/traces", app.otlp_http_url))
            .header("content-type", "application/x-protobuf")
            .body(seed_login(seed, now - 60_000 * MS + u64::from(seed) * MS).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let url = format!(
        "{}/api/v1/endpoint?service=auth&endpoint=POST%20/login",
        app.ui_url
    );
    let detail = app
        .eventually(Duration::from_secs(20), || async {
            get_json(url.clone())
                .await
                .filter(|d| d["requests"].as_u64() == Some(4))
        })
        .await;
    let close = |value: &Json, expected: f64| {
        let value = value.as_f64().unwrap();
        assert!(
            (value - expected).abs() <= expected * 0.05 + 0.01,
            "{value} vs {expected}"
        );
    };
    close(&detail["mean_ms"], 300.0);
    close(&detail["breakdown_ms"]["db"], 140.0);
    close(&detail["breakdown_ms"]["cache"], 5.0);
    close(&detail["breakdown_ms"]["network"], 100.0);
    // No span measured its CPU: the handler's own 55 ms are untraced, never cpu.
    close(&detail["breakdown_ms"]["untraced"], 55.0);
    assert_eq!(detail["breakdown_ms"]["cpu"], 0.0);
    assert_eq!(detail["breakdown_ms"]["wait"], 0.0);
    close(&detail["db_calls_per_request"], 10.0);
    assert_eq!(detail["bottleneck"]["category"], "db");
    assert_eq!(detail["speedup_if_cpu_free"], 1.0);
    close(&detail["speedup_if_cpu_free_max"], 300.0 / 245.0);
    let findings = detail["findings"].as_array().unwrap();
    let find = |kind: &str| {
        findings
            .iter()
            .find(|f| f["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {findings:?}"))
    };
    close(&find("duplicate_query")["count_per_request"], 2.0);
    close(&find("duplicate_query")["potential_saving_ms"], 20.0);
    close(&find("n_plus_one")["count_per_request"], 6.0);
    close(&find("n_plus_one")["potential_saving_ms"], 50.0);
    assert!(
        findings.iter().all(|f| f["kind"] != "cpu_hotspot"),
        "no CPU was measured: {findings:?}"
    );
    assert!(
        detail["bottleneck"]["summary"]
            .as_str()
            .unwrap()
            .contains("db")
    );
    assert_eq!(detail["slowest_traces"].as_array().unwrap().len(), 4);

    // The callee is its own request with its own breakdown; the caller counts it as network.
    let endpoints = get_json(format!("{}/api/v1/endpoints", app.ui_url))
        .await
        .unwrap();
    let idp = endpoints["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == "idp")
        .expect("idp endpoint");
    assert_eq!(idp["endpoint"], "POST /saml/assert");
    close(&idp["breakdown_ms"]["db"], 30.0);
    close(&idp["db_calls_per_request"], 1.0);

    let trace_id = detail["slowest_traces"][0]["trace_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trace = get_json(format!("{}/api/v1/traces/{trace_id}", app.ui_url))
        .await
        .unwrap();
    assert_eq!(trace["spans"].as_array().unwrap().len(), 16);
    assert_eq!(trace["requests"].as_array().unwrap().len(), 2);

    let services = get_json(format!("{}/api/v1/services", app.ui_url))
        .await
        .unwrap();
    assert_eq!(services["services"].as_array().unwrap().len(), 2);
    let since = services["data_since"].as_str().expect("data is stored");
    assert!(since.ends_with('Z'), "RFC 3339 in UTC: {since}");
    app.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400_and_unknown_ids_404() {
    let app = spawn_app().await;
    let status = |path: &'static str| {
        let url = format!("{}{path}", app.ui_url);
        async move {
            http_client()
                .get(url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("/api/v1/endpoints?from=yesterday").await, 400);
    assert_eq!(status("/api/v1/endpoint?service=auth").await, 400);
    assert_eq!(status("/api/v1/traces?limit=0").await, 400);
    assert_eq!(status("/api/v1/traces/xyz").await, 400);
    assert_eq!(
        status("/api/v1/traces/0123456789abcdef0123456789abcdef").await,
        404
    );
    assert_eq!(
        status("/api/v1/endpoint?service=auth&endpoint=GET%20/nothing").await,
        404
    );
    assert_eq!(status("/api/v1/openapi.json").await, 200);
    app.stop().await;
}
