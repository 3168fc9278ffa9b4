//! Names longer than a database index row allows: a statement, a service name, a version, a
//! route and a resource attribute of kilobytes of incompressible text. PostgreSQL refuses B-tree
//! index rows over 2,704 bytes, so such a name in a unique key failed the whole analysis commit
//! and every retry of it; the requests beside it were never analysed. Names are cut by the
//! analysis and resources keyed by a hash, so every request is analysed, on either store.

use std::time::Duration;

use bottleneck::analysis::key_name::{MAX_ENDPOINT_BYTES, MAX_OPERATION_BYTES, MAX_SERVICE_BYTES};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::ingest::kv;
use crate::support::{TestApp, json_at, spawn_app};

/// `n` characters no compressor shrinks much: letters and digits from a fixed-seed generator.
fn incompressible(n: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

/// The text of the parts of one request that end up in store keys.
struct Names {
    service: String,
    version: String,
    route: String,
    statement: String,
    command_line: String,
}

impl Names {
    fn ordinary(n: u8) -> Names {
        Names {
            service: "shop".into(),
            version: "1.0".into(),
            route: "/items".into(),
            statement: format!("SELECT * FROM items WHERE shelf = {n}"),
            command_line: "java -jar shop.jar".into(),
        }
    }
}

/// One request of `names` in trace `n`: a server span with one query below it.
fn request(n: u8, names: &Names) -> ResourceSpans {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let trace_id = vec![0x5a, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n];
    let server = Span {
        trace_id: trace_id.clone(),
        span_id: vec![n, 1, 1, 1, 1, 1, 1, 1],
        name: format!("GET {}", names.route),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 20_000_000,
        attributes: vec![
            kv("http.request.method", "GET"),
            kv("http.route", &names.route),
        ],
        ..Default::default()
    };
    let query = Span {
        trace_id,
        span_id: vec![n, 2, 2, 2, 2, 2, 2, 2],
        parent_span_id: vec![n, 1, 1, 1, 1, 1, 1, 1],
        name: "SELECT items".into(),
        kind: 3,
        start_time_unix_nano: start + 1_000_000,
        end_time_unix_nano: start + 15_000_000,
        attributes: vec![
            kv("db.system", "postgresql"),
            kv("db.statement", &names.statement),
        ],
        ..Default::default()
    };
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", &names.service),
                kv("service.version", &names.version),
                kv("process.command_line", &names.command_line),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![server, query],
            ..Default::default()
        }],
        schema_url: String::new(),
    }
}

async fn export(app: &TestApp, resource_spans: Vec<ResourceSpans>) {
    app.export(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
        .await;
}

/// Every endpoint of all time as (service, endpoint, requests), once `total` requests are in.
async fn endpoints_once(app: &TestApp, total: u64) -> Vec<(String, String, u64)> {
    app.eventually(Duration::from_secs(30), || async {
        let url = format!("{}/api/v1/endpoints?from=0", app.ui_url);
        let body = json_at(url).await?;
        let found: Vec<(String, String, u64)> = (body["endpoints"].as_array()?.iter())
            .map(|e| {
                Some((
                    e["service"].as_str()?.to_owned(),
                    e["endpoint"].as_str()?.to_owned(),
                    e["requests"].as_u64()?,
                ))
            })
            .collect::<Option<_>>()?;
        (found.iter().map(|(_, _, n)| n).sum::<u64>() == total).then_some(found)
    })
    .await
}

#[tokio::test]
async fn a_statement_of_4000_incompressible_characters_beside_49_requests_leaves_all_50_analysed() {
    let app = spawn_app().await;
    let mut requests: Vec<ResourceSpans> =
        (1..=49).map(|n| request(n, &Names::ordinary(n))).collect();
    let long = Names {
        statement: format!("SELECT {} FROM items", incompressible(4_000, 7)),
        ..Names::ordinary(50)
    };
    requests.push(request(50, &long));
    export(&app, requests).await;
    let endpoints = endpoints_once(&app, 50).await;
    assert_eq!(endpoints, [("shop".into(), "GET /items".into(), 50)]);

    let url = format!(
        "{}/api/v1/endpoint?service=shop&endpoint=GET%20/items&from=0",
        app.ui_url
    );
    let body = json_at(url).await.expect("the endpoint's JSON");
    let names: Vec<&str> = (body["operations"].as_array().expect("operations").iter())
        .filter(|op| op["category"] == "db")
        .filter_map(|op| op["name"].as_str())
        .collect();
    let longest = names.iter().map(|name| name.len()).max().unwrap_or(0);
    assert!(
        longest > 1_000 && longest <= MAX_OPERATION_BYTES,
        "the long statement is kept, cut to {MAX_OPERATION_BYTES} bytes: {longest}"
    );
    app.stop().await;
}

#[tokio::test]
async fn long_service_version_route_and_resource_names_are_cut_and_every_request_is_analysed() {
    let app = spawn_app().await;
    let mut requests: Vec<ResourceSpans> =
        (1..=9).map(|n| request(n, &Names::ordinary(n))).collect();
    let long = Names {
        service: incompressible(3_000, 11),
        version: incompressible(3_000, 13),
        route: format!("/{}", incompressible(5_000, 17)),
        statement: "SELECT 1".into(),
        command_line: incompressible(12_000, 19),
    };
    requests.push(request(10, &long));
    export(&app, requests).await;
    let endpoints = endpoints_once(&app, 10).await;
    let (service, endpoint, n) = (endpoints.iter())
        .find(|(service, _, _)| service != "shop")
        .expect("the long-named service has its endpoint");
    assert_eq!(*n, 1);
    assert!(service.len() <= MAX_SERVICE_BYTES, "{}", service.len());
    assert!(endpoint.len() <= MAX_ENDPOINT_BYTES, "{}", endpoint.len());
    assert!(
        long.service
            .starts_with(service.trim_end_matches("…[truncated]"))
    );
    assert_eq!(
        app.store.resources().await.unwrap().len(),
        2,
        "the process with a 12,000-character command line is interned whole"
    );
    app.stop().await;
}
