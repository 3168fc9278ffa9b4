//! The bench's traffic: realistic OTLP exports of 10-span web requests, built before the run and
//! pre-encoded, with the places marked where each send stamps fresh trace ids.
//!
//! Invariant: nothing here runs per send except the stamping, which copies bytes and never
//! encodes, and with `--gzip` the compression an exporter would do too.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const STATEMENTS: [&str; 5] = [
    "SELECT id, name, plan FROM tenants WHERE id = $1",
    "SELECT u.id, u.email, u.password_hash FROM users u WHERE u.tenant_id = $1 AND u.email = $2",
    "SELECT r.id, r.effect, r.condition FROM policy_rules r WHERE r.policy_id = $1 ORDER BY r.priority",
    "UPDATE sessions SET last_seen_at = now() WHERE id = $1",
    "INSERT INTO audit_log (tenant_id, user_id, action, at) VALUES ($1, $2, $3, now())",
];

pub(super) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(super) fn text(value: &str) -> Value {
    Value::StringValue(value.into())
}

/// An OTLP/HTTP protobuf export of `body` to the receiver at `otlp_http`, ready to send.
pub(super) fn http_export(
    client: &reqwest::Client,
    otlp_http: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{otlp_http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
}

/// How long before an export its requests ended, at most: a batch span processor exports every
/// few seconds (the OpenTelemetry SDKs' default delay is 5 s).
const EXPORT_DELAY_NS: u64 = 5_000_000_000;

/// One export of `n_spans` spans: web requests of 10 spans each (a SERVER span, 7 queries, a
/// cache get, an HTTP call), about 10 attributes per span, as a real service sends them: each
/// request ended within [`EXPORT_DELAY_NS`] before `export_unix_ns`.
pub(super) fn payload(
    rng: &mut SmallRng,
    n_spans: usize,
    export_unix_ns: u64,
) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(n_spans);
    while spans.len() < n_spans {
        let trace_id: [u8; 16] = rng.random();
        let root_id: [u8; 8] = rng.random();
        let duration = rng.random_range(20_000_000..400_000_000u64);
        let start = export_unix_ns - rng.random_range(0..EXPORT_DELAY_NS) - duration;
        let user_agent =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0";
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: root_id.to_vec(),
            name: "POST /login".into(),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes: vec![
                kv("http.request.method", text("POST")),
                kv("http.route", text("/login")),
                kv("url.path", text("/login")),
                kv("http.response.status_code", Value::IntValue(200)),
                kv("user_agent.original", text(user_agent)),
                kv("client.address", text("10.1.2.3")),
                kv("server.port", Value::IntValue(8000)),
                kv("network.protocol.version", text("1.1")),
                kv(
                    "cpu.time_ns",
                    Value::IntValue(rng.random_range(1_000_000..20_000_000)),
                ),
                kv(
                    "enduser.id",
                    Value::IntValue(rng.random_range(1..4_000_000)),
                ),
            ],
            status: Some(Status::default()),
            ..Default::default()
        });
        let mut cursor = start + 1_000_000;
        for child in 0..9 {
            let child_duration = duration / 12;
            let (name, kind, attributes) = match child {
                0..=6 => {
                    let statement = STATEMENTS[child % STATEMENTS.len()];
                    (
                        statement
                            .split_whitespace()
                            .next()
                            .unwrap_or("query")
                            .to_owned(),
                        3,
                        vec![
                            kv("db.system.name", text("postgresql")),
                            kv("db.query.text", text(statement)),
                            kv(
                                "db.operation.name",
                                text(statement.split_whitespace().next().unwrap_or("")),
                            ),
                            kv("db.namespace", text("auth")),
                            kv("server.address", text("db.internal")),
                            kv("server.port", Value::IntValue(5432)),
                            kv(
                                "db.query.parameter.0",
                                Value::IntValue(rng.random_range(1..100_000)),
                            ),
                        ],
                    )
                }
                7 => (
                    "GET".to_owned(),
                    3,
                    vec![
                        kv("db.system.name", text("redis")),
                        kv("db.query.text", text("GET session:?")),
                        kv("server.address", text("cache.internal")),
                    ],
                ),
                _ => (
                    "POST".to_owned(),
                    3,
                    vec![
                        kv("http.request.method", text("POST")),
                        kv("url.full", text("https://idp.example.com/saml/assert")),
                        kv("server.address", text("idp.example.com")),
                        kv("http.response.status_code", Value::IntValue(200)),
                    ],
                ),
            };
            let span_id: [u8; 8] = rng.random();
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: root_id.to_vec(),
                name,
                kind,
                start_time_unix_nano: cursor,
                end_time_unix_nano: cursor + child_duration,
                attributes,
                status: Some(Status::default()),
                ..Default::default()
            });
            cursor += child_duration + 100_000;
        }
    }
    spans.truncate(n_spans);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text("auth")),
                    kv("service.version", text("1.0")),
                    kv("service.instance.id", text("auth-7f9c")),
                    kv("host.name", text("ip-10-1-2-3")),
                    kv("telemetry.sdk.language", text("python")),
                ],
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

/// How a body is encoded, which decides how a sequence number is written into a trace id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// Raw bytes: the sequence number's low 32 bits are the trace id's last 8 bytes, a nibble
    /// each, most significant first.
    Protobuf,
    /// Hex digits: the sequence number is the trace id's last 16 hex digits.
    Json,
}

impl Encoding {
    /// The bytes each trace id of an export sent as number `sequence` ends with: nibbles, or
    /// lowercase hex digits. 2^32 sequence numbers are more exports than a run sends.
    pub(super) fn stamp(self, sequence: u64) -> Vec<u8> {
        match self {
            Self::Protobuf => (0..8)
                .map(|idx| ((sequence >> (28 - 4 * idx)) & 0xf) as u8)
                .collect(),
            Self::Json => format!("{sequence:016x}").into_bytes(),
        }
    }
}

/// A pre-encoded body and where its trace ids and timestamps sit, so every send can stamp them
/// with a fresh sequence number and move its times to the moment of sending: each export is then
/// a set of new traces that just ended, as in production, while the client spends no time
/// encoding.
pub(super) struct Body {
    pub(super) bytes: Vec<u8>,
    pub(super) encoding: Encoding,
    /// Where each stamp goes: the second half of every trace id, in increasing order.
    pub(super) stamp_offsets: Vec<usize>,
    /// Where each span's start and end time sit: (offset, length) of 8 little-endian bytes
    /// (protobuf's fixed64) or of decimal digits (JSON).
    pub(super) time_offsets: Vec<(usize, usize)>,
    /// With `--gzip`: each send is compressed.
    pub(super) gzip: bool,
}

/// Every span's start and end time in `request`.
fn span_times(request: &ExportTraceServiceRequest) -> std::collections::HashSet<u64> {
    request
        .resource_spans
        .iter()
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| &scope.spans)
        .flat_map(|span| [span.start_time_unix_nano, span.end_time_unix_nano])
        .collect()
}

impl Body {
    pub(super) fn protobuf(request: &ExportTraceServiceRequest) -> Body {
        let bytes = request.encode_to_vec();
        let trace_ids: std::collections::HashSet<&[u8]> = request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|span| span.trace_id.as_slice())
            .collect();
        // A trace id is field 1 of a Span: tag 0x0a, length 0x10, then the 16 bytes.
        let stamp_offsets = (0..bytes.len().saturating_sub(18))
            .filter(|&idx| {
                bytes[idx] == 0x0a
                    && bytes[idx + 1] == 0x10
                    && trace_ids.contains(&bytes[idx + 2..idx + 18])
            })
            .map(|idx| idx + 2 + 8)
            .collect();
        // A span's start and end are fields 7 and 8, fixed64: tags 0x39 and 0x41, then 8 bytes.
        let times = span_times(request);
        let time_offsets = (0..bytes.len().saturating_sub(9))
            .filter(|&idx| {
                matches!(bytes[idx], 0x39 | 0x41)
                    && times.contains(&u64::from_le_bytes(
                        bytes[idx + 1..idx + 9].try_into().expect("8 bytes"),
                    ))
            })
            .map(|idx| (idx + 1, 8))
            .collect();
        Body {
            bytes,
            encoding: Encoding::Protobuf,
            stamp_offsets,
            time_offsets,
            gzip: false,
        }
    }

    pub(super) fn json(request: &ExportTraceServiceRequest) -> Body {
        let bytes = serde_json::to_vec(request).expect("OTLP serializes");
        let key = b"\"traceId\":\"";
        let stamp_offsets = (0..bytes.len().saturating_sub(key.len() + 32))
            .filter(|&idx| &bytes[idx..idx + key.len()] == key)
            .map(|idx| idx + key.len() + 16)
            .collect();
        let mut time_offsets = Vec::new();
        for key in [&b"\"startTimeUnixNano\":"[..], b"\"endTimeUnixNano\":"] {
            for idx in 0..bytes.len().saturating_sub(key.len()) {
                if &bytes[idx..idx + key.len()] != key {
                    continue;
                }
                // The value is a string of digits, or a bare number.
                let mut start = idx + key.len();
                start += usize::from(bytes.get(start) == Some(&b'"'));
                let digits = bytes[start..]
                    .iter()
                    .take_while(|byte| byte.is_ascii_digit())
                    .count();
                time_offsets.push((start, digits));
            }
        }
        Body {
            bytes,
            encoding: Encoding::Json,
            stamp_offsets,
            time_offsets,
            gzip: false,
        }
    }

    /// Makes every send of this body gzip-compressed.
    pub(super) fn compress(&mut self) {
        self.gzip = true;
    }

    /// The body to send as export number `sequence`, `shift_ns` after it was built: fresh trace
    /// ids stamped in, every time moved by `shift_ns`, then compressed with `--gzip` (at gzip's
    /// fastest level, as exporters compress on their request path; the client's CPU is reported
    /// beside the server's).
    pub(super) fn stamped(&self, sequence: u64, shift_ns: u64) -> Vec<u8> {
        let stamp = self.encoding.stamp(sequence);
        let mut bytes = self.bytes.clone();
        for &offset in &self.stamp_offsets {
            bytes[offset..offset + stamp.len()].copy_from_slice(&stamp);
        }
        for &(offset, len) in &self.time_offsets {
            let field = &mut bytes[offset..offset + len];
            match self.encoding {
                Encoding::Protobuf => {
                    let time = u64::from_le_bytes((&*field).try_into().expect("8 bytes"));
                    field.copy_from_slice(&(time + shift_ns).to_le_bytes());
                }
                Encoding::Json => {
                    let time: u64 = std::str::from_utf8(field)
                        .ok()
                        .and_then(|digits| digits.parse().ok())
                        .unwrap_or(0);
                    let moved = format!("{:0len$}", time + shift_ns);
                    // Nanosecond times keep their 19 digits until the year 2286.
                    if moved.len() == len {
                        field.copy_from_slice(moved.as_bytes());
                    }
                }
            }
        }
        if self.gzip {
            return gzipped(&bytes, flate2::Compression::fast());
        }
        bytes
    }
}

/// `bytes` gzip-compressed at `level`.
pub(super) fn gzipped(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), level);
    std::io::Write::write_all(&mut encoder, bytes).expect("writing to memory cannot fail");
    encoder.finish().expect("writing to memory cannot fail")
}

/// The benchmark payload, for the micro-benchmarks: `n_spans` spans of 10-span web requests.
pub fn payload_for_benchmarks(n_spans: usize) -> ExportTraceServiceRequest {
    let now = crate::time::now_unix_ns();
    payload(&mut SmallRng::seed_from_u64(7), n_spans, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_NS: u64 = 3_600_000_000_000;

    fn built() -> ExportTraceServiceRequest {
        payload(
            &mut SmallRng::seed_from_u64(3),
            20,
            1_800_000_000_000_000_000,
        )
    }

    fn spans(request: &ExportTraceServiceRequest) -> &[Span] {
        &request.resource_spans[0].scope_spans[0].spans
    }

    /// Checks that `sent` is `request` with fresh trace ids and every time an hour later.
    fn assert_stamped(request: &ExportTraceServiceRequest, sent: &ExportTraceServiceRequest) {
        assert_eq!(spans(sent).len(), spans(request).len());
        for (before, after) in spans(request).iter().zip(spans(sent)) {
            assert_eq!(
                after.start_time_unix_nano,
                before.start_time_unix_nano + HOUR_NS
            );
            assert_eq!(
                after.end_time_unix_nano,
                before.end_time_unix_nano + HOUR_NS
            );
            assert_eq!(after.trace_id[..8], before.trace_id[..8]);
            assert_ne!(after.trace_id, before.trace_id, "a fresh trace id");
            assert_eq!(after.attributes, before.attributes);
        }
    }

    #[test]
    fn requests_end_shortly_before_their_export() {
        let export_ns = 1_800_000_000_000_000_000;
        for span in spans(&built()) {
            assert!(span.end_time_unix_nano <= export_ns);
            assert!(span.start_time_unix_nano >= export_ns - EXPORT_DELAY_NS - 400_000_000);
        }
    }

    #[test]
    fn a_protobuf_send_moves_every_time_and_stamps_every_trace_id() {
        let request = built();
        let body = Body::protobuf(&request);
        assert_eq!(body.time_offsets.len(), 2 * spans(&request).len());
        let sent = ExportTraceServiceRequest::decode(&body.stamped(5, HOUR_NS)[..]).unwrap();
        assert_stamped(&request, &sent);
    }

    #[test]
    fn a_json_send_moves_every_time_and_stamps_every_trace_id() {
        let request = built();
        let body = Body::json(&request);
        assert_eq!(body.time_offsets.len(), 2 * spans(&request).len());
        let sent: ExportTraceServiceRequest =
            serde_json::from_slice(&body.stamped(5, HOUR_NS)).unwrap();
        assert_stamped(&request, &sent);
    }
}
