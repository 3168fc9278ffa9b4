//! What each fuzz target does with its input. Every function must return normally for any input:
//! a panic, an overflow or a stack overflow is a bug in the code under test.

use bottleneck::analysis::{AnalysisConfig, analyze_trace};
use collector::otlp::{check, decode, normalize, sparse};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// OTLP protobuf bytes through the decoder and the span conversion.
/// The receivers' check accepts exactly the bodies the whole decoder accepts, and sums up the
/// same; a body the whole decoder accepts is also read by the analysis' sparse decoder, into the
/// same spans with only the kept attributes.
pub fn otlp_protobuf(data: &[u8]) {
    let checked = check::accept(data);
    let decoded = decode::protobuf(data);
    assert_eq!(checked.is_ok(), decoded.is_ok(), "{checked:?}");
    if let Ok(request) = decoded {
        assert_eq!(
            format!("{:?}", checked.expect("agreed above")),
            format!("{:?}", decode::accept(&request))
        );
        let keep = |key: &[u8]| key.starts_with(b"db.") || key.starts_with(b"http.");
        let sparse = sparse::spans_keeping(data, keep).expect("the sparse decoder reads it too");
        let whole = decode::spans(request.clone());
        assert_eq!(sparse.n_rejected, whole.n_rejected);
        assert_eq!(sparse.first_rejection, whole.first_rejection);
        let kept: Vec<_> = whole
            .spans
            .into_iter()
            .map(|mut span| {
                span.attributes
                    .retain(|kv| keep(kv.key.as_bytes()) || normalize::is_read(kv.key.as_bytes()));
                span
            })
            .collect();
        // Compared as text: a NaN attribute value is not equal to itself.
        assert_eq!(format!("{:?}", sparse.spans), format!("{kept:?}"));
        check_spans(request);
    }
}

/// OTLP/JSON bytes through the decoder and the span conversion.
pub fn otlp_json(data: &[u8]) {
    if let Ok(request) = decode::json(data) {
        check_spans(request);
    }
}

fn check_spans(request: ExportTraceServiceRequest) {
    let n_raw: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let decoded = decode::spans(request);
    assert_eq!(
        decoded.spans.len() as u64 + decoded.n_rejected,
        n_raw as u64
    );
    for span in &decoded.spans {
        assert!(span.start_unix_ns > 0);
        assert!(span.start_unix_ns <= decode::MAX_UNIX_NS);
        assert!(span.name.len() <= decode::MAX_ATTR_VALUE_BYTES + decode::TRUNCATION_MARKER.len());
    }
    // The spans of one decoded export are also a (possibly odd) set of traces: analyse them.
    let _ = analyze_trace(&decoded.spans, &AnalysisConfig::default());
}

/// Bytes read as a span tree (8 bytes per span, see [`spans_from_bytes`]) and analysed.
pub fn analysis(data: &[u8]) {
    let request = spans_from_bytes(data);
    let decoded = decode::spans(request);
    let (requests, _anomalies) = analyze_trace(&decoded.spans, &AnalysisConfig::default());
    assert!(requests.len() <= decoded.spans.len());
}

const NAMES: [&str; 6] = [
    "GET /users/{id}",
    "SELECT users",
    "redis GET",
    "POST /login",
    "work",
    "",
];

const STATEMENTS: [&str; 3] = [
    "SELECT * FROM users WHERE id = 7",
    "UPDATE users SET seen = now() WHERE id = 1",
    "GET session:1",
];

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// One OTLP export of one trace, 8 bytes per span: span id (a small id space, so duplicates
/// happen), parent (0 = root, else another small id: orphans, cycles and self-parents happen),
/// kind, start (u16, microseconds), duration (u16, microseconds), and flags (end before start,
/// a database statement, an HTTP route, an error status).
pub fn spans_from_bytes(data: &[u8]) -> ExportTraceServiceRequest {
    let base = 1_700_000_000_000_000_000u64;
    let spans = data
        .chunks_exact(8)
        .map(|chunk| {
            let id = chunk[0] % 64 + 1;
            let parent = chunk[1] % 65;
            let start = base + u64::from(u16::from_le_bytes([chunk[3], chunk[4]])) * 1_000;
            let duration = u64::from(u16::from_le_bytes([chunk[5], chunk[6]])) * 1_000;
            let flags = chunk[7];
            let end = if flags & 1 == 1 {
                start - duration
            } else {
                start + duration
            };
            let mut attributes = Vec::new();
            if flags & 2 == 2 {
                attributes.push(text("db.system", "postgresql"));
                attributes.push(text(
                    "db.statement",
                    STATEMENTS[usize::from(flags >> 4) % STATEMENTS.len()],
                ));
            }
            if flags & 4 == 4 {
                attributes.push(text("http.request.method", "GET"));
                attributes.push(text("http.route", "/users/{id}"));
            }
            Span {
                trace_id: vec![7; 16],
                span_id: vec![id, 0, 0, 0, 0, 0, 0, 1],
                parent_span_id: if parent == 0 {
                    Vec::new()
                } else {
                    vec![parent, 0, 0, 0, 0, 0, 0, 1]
                },
                name: NAMES[usize::from(chunk[2] >> 3) % NAMES.len()].to_owned(),
                kind: i32::from(chunk[2] % 6),
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                status: (flags & 8 == 8).then(|| Status {
                    code: 2,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "fuzz")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}
