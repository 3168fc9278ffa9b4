//! Reading captured traces from files: the OpenTelemetry Collector's file exporter (OTLP JSON,
//! one export per line; or `format: proto`, each export preceded by its length as four
//! big-endian bytes; either compressed with zstd, as a whole or export by export), a single OTLP
//! protobuf export per file (what an SDK's exporter sends), and any of these gzipped.
//!
//! Every export goes through the receivers' decoders (`collector::otlp::decode`), so a capture
//! keeps exactly the spans the server would have kept of the same exports.
//!
//! Invariant: a file that cannot be read whole is an error naming the file (and the line or the
//! export), never a capture with part of its spans silently missing.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use collector::model::Span;
use collector::otlp::decode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The first byte of an `ExportTraceServiceRequest` with spans: field 1 (`resource_spans`),
/// length-delimited. As a length prefix it would announce an export of over 160 MiB.
const PROTOBUF_FIRST_BYTE: u8 = 0x0a;

/// The spans of one or more capture files.
#[derive(Debug, Default)]
pub struct Capture {
    /// Every span the decoders kept.
    pub spans: Vec<Span>,
    /// Exports read.
    pub exports: u64,
    /// Spans the decoders dropped (invalid ids or times), as a receiver would.
    pub rejected_spans: u64,
}

impl Capture {
    /// Reads every file into one capture.
    pub fn read_files(paths: &[impl AsRef<Path>]) -> anyhow::Result<Capture> {
        let mut capture = Capture::default();
        for path in paths {
            capture.read_file(path.as_ref())?;
        }
        Ok(capture)
    }

    /// The earliest span start and the latest span end, for the request rate.
    pub fn time_range_ns(&self) -> (u64, u64) {
        let from = self.spans.iter().map(|s| s.start_unix_ns).min();
        let to = self
            .spans
            .iter()
            .map(|s| s.start_unix_ns.saturating_add(s.duration_ns))
            .max();
        (from.unwrap_or(0), to.unwrap_or(0))
    }

    fn read_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = decompress(raw).with_context(|| format!("decompressing {}", path.display()))?;
        self.read_exports(&bytes)
            .with_context(|| format!("reading the capture {}", path.display()))
    }

    fn read_exports(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if first_non_blank(bytes) == Some(b'{') {
            for (idx, line) in bytes.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let request = decode::json(line).with_context(|| format!("line {}", idx + 1))?;
                self.add(request);
            }
            return Ok(());
        }
        match length_prefixed(bytes) {
            Some(frames) => {
                for (idx, frame) in frames.into_iter().enumerate() {
                    self.read_frame(frame)
                        .with_context(|| format!("export {} of the file", idx + 1))?;
                }
            }
            None => self.add(decode::protobuf(bytes)?),
        }
        Ok(())
    }

    /// One length-prefixed export: protobuf, or JSON, each possibly zstd-compressed on its own
    /// (the file exporter's compression without its native-compression feature).
    fn read_frame(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        let frame = decompress(frame.to_vec())?;
        let request = if first_non_blank(&frame) == Some(b'{') {
            decode::json(&frame)?
        } else {
            decode::protobuf(&frame)?
        };
        self.add(request);
        Ok(())
    }

    fn add(&mut self, request: ExportTraceServiceRequest) {
        let decoded = decode::spans(request);
        self.exports += 1;
        self.rejected_spans += decoded.n_rejected;
        self.spans.extend(decoded.spans);
    }
}

fn first_non_blank(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Undoes gzip (one or more members) or zstd (one or more frames) if the bytes start with
/// their magic number; other bytes come back as they are.
fn decompress(bytes: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .context("invalid gzip")?;
        Ok(out)
    } else if bytes.starts_with(&ZSTD_MAGIC) {
        zstd::stream::decode_all(bytes.as_slice()).context("invalid zstd")
    } else {
        Ok(bytes)
    }
}

/// The exports of a file of length-prefixed exports, if the prefixes tile it exactly; `None`
/// for anything else (a single protobuf export).
fn length_prefixed(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    if bytes.first() == Some(&PROTOBUF_FIRST_BYTE) {
        return None;
    }
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (prefix, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*prefix) as usize;
        if len > tail.len() {
            return None;
        }
        let (frame, after) = tail.split_at(len);
        frames.push(frame);
        rest = after;
    }
    (!frames.is_empty()).then_some(frames)
}

/// Fails unless the capture holds spans: an empty capture judges nothing.
pub fn require_spans(capture: &Capture, what: &str) -> anyhow::Result<()> {
    if capture.spans.is_empty() {
        bail!(
            "{what} holds no spans ({} exports read, {} spans dropped as invalid)",
            capture.exports,
            capture.rejected_spans
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fixture;
    use collector::otlp::encode;
    use prost::Message;

    fn export() -> ExportTraceServiceRequest {
        encode::request(fixture::parse(
            "auth: GET /health 0..10 server\n  SELECT 1 2..4 client db.system=sqlite",
        ))
    }

    fn read(bytes: &[u8]) -> anyhow::Result<Capture> {
        let mut capture = Capture::default();
        capture.read_exports(&decompress(bytes.to_vec())?)?;
        Ok(capture)
    }

    fn prefixed(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn every_file_exporter_layout_reads_the_same_spans() {
        let protobuf = export().encode_to_vec();
        let json = serde_json::to_vec(&export()).unwrap();
        let json_lines = [json.clone(), b"\n".to_vec(), json.clone(), b"\n".to_vec()].concat();
        let zstd_each = |payload: &[u8]| zstd::stream::encode_all(payload, 1).unwrap();
        let layouts: [(&str, Vec<u8>); 6] = [
            ("one protobuf export", protobuf.clone()),
            ("json lines", json_lines.clone()),
            (
                "json lines, zstd stream",
                zstd::stream::encode_all(json_lines.as_slice(), 1).unwrap(),
            ),
            (
                "length-prefixed protobuf",
                prefixed(&[protobuf.clone(), protobuf.clone()]),
            ),
            (
                "length-prefixed, each export zstd",
                prefixed(&[zstd_each(&protobuf), zstd_each(&json)]),
            ),
            ("gzipped json lines", {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut gz, &json_lines).unwrap();
                gz.finish().unwrap()
            }),
        ];
        for (name, bytes) in layouts {
            let capture = read(&bytes).unwrap_or_else(|err| panic!("{name}: {err:#}"));
            let per_export = if name == "one protobuf export" { 1 } else { 2 };
            assert_eq!(capture.exports, per_export, "{name}");
            assert_eq!(capture.spans.len() as u64, 2 * per_export, "{name}");
        }
    }

    #[test]
    fn a_bad_line_is_an_error_naming_it() {
        let json = serde_json::to_vec(&export()).unwrap();
        let bytes = [json.as_slice(), b"\n{\"resourceSpans\": 7}\n"].concat();
        let err = read(&bytes).unwrap_err();
        assert!(format!("{err:#}").starts_with("line 2: "), "{err:#}");
        assert!(read(b"\x0anot protobuf at all").is_err());
        assert!(read(&[0x1f, 0x8b, 0, 1, 2]).is_err());
    }
}
