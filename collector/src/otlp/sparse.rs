//! Decoding for readers that need only some attributes: the same spans as [`decode::spans`],
//! each holding only the attributes its caller keeps, and those its semantics and category are
//! derived from (so they are always the whole decoder's).
//!
//! The analysis reads a few semantic-convention attributes of every span, and decoding all of
//! them (a string allocated and checked for each key and value, events too) was the larger part
//! of its cost (BENCHMARKS.md). Here the body is walked field by field with prost's wire-format
//! functions, borrowing every length-delimited field from the body: an attribute is looked at
//! only by its key, and decoded (by prost's own `AnyValue`) only when the key is kept; events
//! are only counted. Mirroring the messages with prost's derive instead took each skipped field
//! as a reference-counted slice in a vector grown one push at a time: a sixth more
//! instructions for the benchmark's spans, a third more with unread attributes (BENCHMARKS.md).
//! Resources, scopes and statuses are few or small and are decoded whole by prost. Which spans
//! are kept is decided by [`decode::Header::check`], the rule every decoder of this crate applies.
//!
//! Invariant: for a body [`decode::protobuf`] accepts, `spans_keeping(body, keep)` equals
//! [`decode::spans`] of it with each span's attributes filtered by `keep` or
//! [`normalize::is_read`] (fields given twice included: a message field's occurrences are merged
//! and a scalar's last one wins, as protobuf says; the `otlp_protobuf` fuzz target checks this).
//! It checks less than the whole decoder (UTF-8 and wire types inside what it skips), which is
//! safe for what it reads: stored blocks, each accepted whole at ingest.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::resource::v1 as otlp_resource;
use opentelemetry_proto::tonic::trace::v1 as otlp_trace;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::model::{KeyValue, Link, Resource, Scope};
use crate::otlp::decode::{self, Body, DecodeError, Decoded, Header};
use crate::otlp::normalize;

/// Field numbers of the OTLP messages walked here (opentelemetry/proto/trace/v1/trace.proto and
/// common.proto).
mod field {
    // ExportTraceServiceRequest
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    // ResourceSpans
    pub const RESOURCE: u32 = 1;
    pub const SCOPE_SPANS: u32 = 2;
    // ScopeSpans
    pub const SCOPE: u32 = 1;
    pub const SPANS: u32 = 2;
    // Span
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START_TIME: u32 = 7;
    pub const END_TIME: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const EVENTS: u32 = 11;
    pub const DROPPED_EVENTS_COUNT: u32 = 12;
    pub const LINKS: u32 = 13;
    pub const STATUS: u32 = 15;
    // KeyValue
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    // Span.Link
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
}

/// A field's value as it lies in the body.
#[derive(Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Length-delimited: bytes, a string or a message.
    Delimited(&'a [u8]),
    /// A 32-bit value or a group: no field read here has either.
    Other,
}

impl<'a> Value<'a> {
    fn delimited(self) -> Result<&'a [u8], DecodeError> {
        match self {
            Value::Delimited(bytes) => Ok(bytes),
            _ => Err(DecodeError::WireType),
        }
    }

    fn varint(self) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(DecodeError::WireType),
        }
    }

    fn fixed64(self) -> Result<u64, DecodeError> {
        match self {
            Value::Fixed64(value) => Ok(value),
            _ => Err(DecodeError::WireType),
        }
    }
}

/// The fields of one message, in the order they lie in it. A malformed field ends the walk with
/// its error.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Result<(u32, Value<'a>), DecodeError> {
        let (tag, wire_type) = decode_key(&mut self.0)?;
        let value = match wire_type {
            WireType::Varint => Value::Varint(decode_varint(&mut self.0)?),
            WireType::SixtyFourBit => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("took 8 bytes"),
            )),
            WireType::LengthDelimited => {
                let len = decode_varint(&mut self.0)?;
                Value::Delimited(self.take(usize::try_from(len).unwrap_or(usize::MAX))?)
            }
            WireType::ThirtyTwoBit | WireType::StartGroup | WireType::EndGroup => {
                skip_field(wire_type, tag, &mut self.0, DecodeContext::default())?;
                Value::Other
            }
        };
        Ok((tag, value))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }
}

/// The length-delimited fields numbered `tag` of a message.
fn each<'a>(
    message: &'a [u8],
    tag: u32,
) -> impl Iterator<Item = Result<&'a [u8], DecodeError>> + 'a {
    Fields(message).filter_map(move |field| match field {
        Ok((found, value)) if found == tag => Some(value.delimited()),
        Ok(_) => None,
        Err(err) => Some(Err(err)),
    })
}

/// The message numbered `tag` of `message`, decoded by prost (its occurrences merged, as protobuf
/// merges a message field given twice).
fn merged<M: Message + Default>(message: &[u8], tag: u32) -> Result<Option<M>, DecodeError> {
    let mut merged: Option<M> = None;
    for bytes in each(message, tag) {
        merged.get_or_insert_default().merge(bytes?)?;
    }
    Ok(merged)
}

/// Decodes an OTLP protobuf body into spans that hold only the attributes `keep` accepts by key,
/// besides those their semantics and category are derived from.
pub fn spans_keeping(body: &[u8], keep: impl Fn(&str) -> bool) -> Result<Decoded, DecodeError> {
    let mut acc = Decoded::default();
    for resource_spans in each(body, field::REQUEST_RESOURCE_SPANS) {
        let resource_spans = resource_spans?;
        let resource = merged::<otlp_resource::Resource>(resource_spans, field::RESOURCE)?;
        let resource = Arc::new(decode::resource(resource, &mut acc.n_truncated_values));
        for scope_spans in each(resource_spans, field::SCOPE_SPANS) {
            let scope_spans = scope_spans?;
            let scope = merged::<otlp_common::InstrumentationScope>(scope_spans, field::SCOPE)?;
            let scope = Arc::new(decode::scope(scope));
            for raw in each(scope_spans, field::SPANS) {
                match span(raw?, &resource, &scope, &keep, &mut acc.n_truncated_values)? {
                    Ok(span) => acc.spans.push(span),
                    Err(reason) => {
                        acc.n_rejected += 1;
                        acc.first_rejection.get_or_insert(reason);
                    }
                }
            }
        }
    }
    Ok(acc)
}

/// One span: an error when the body is malformed, else the span or why it is dropped.
fn span(
    raw: &[u8],
    resource: &Arc<Resource>,
    scope: &Arc<Scope>,
    keep: &impl Fn(&str) -> bool,
    truncated: &mut u64,
) -> Result<Result<crate::model::Span, String>, DecodeError> {
    let (mut trace_id, mut span_id, mut parent_span_id): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let (mut start_unix_ns, mut end_unix_ns) = (0, 0);
    let mut name = "";
    let mut kind = 0;
    let mut attributes = Vec::new();
    let (mut n_events, mut n_dropped_events) = (0u32, 0u32);
    let mut links = Vec::new();
    let mut status: Option<otlp_trace::Status> = None;
    for field in Fields(raw) {
        let (tag, value) = field?;
        match tag {
            field::TRACE_ID => trace_id = value.delimited()?,
            field::SPAN_ID => span_id = value.delimited()?,
            field::PARENT_SPAN_ID => parent_span_id = value.delimited()?,
            field::NAME => {
                name = std::str::from_utf8(value.delimited()?).map_err(|_| DecodeError::Utf8)?;
            }
            // protobuf's int32 and uint32 keep the low bits of the varint.
            field::KIND => kind = value.varint()? as i32,
            field::START_TIME => start_unix_ns = value.fixed64()?,
            field::END_TIME => end_unix_ns = value.fixed64()?,
            field::ATTRIBUTES => {
                attributes.extend(kept_attribute(value.delimited()?, keep, truncated)?);
            }
            field::EVENTS => {
                value.delimited()?;
                n_events = n_events.saturating_add(1);
            }
            field::DROPPED_EVENTS_COUNT => n_dropped_events = value.varint()? as u32,
            field::LINKS => links.extend(link(value.delimited()?)?),
            field::STATUS => status.get_or_insert_default().merge(value.delimited()?)?,
            _ => {}
        }
    }
    let header = match Header::check(
        trace_id,
        span_id,
        parent_span_id,
        start_unix_ns,
        end_unix_ns,
    ) {
        Ok(header) => header,
        Err(reason) => return Ok(Err(reason)),
    };
    Ok(Ok(header.into_span(
        Body {
            name: decode::cut(name.to_owned(), truncated),
            kind,
            status,
            attributes,
            n_events: n_events.saturating_add(n_dropped_events),
            links,
        },
        resource,
        scope,
    )))
}

/// The attribute of an encoded `KeyValue`, decoded when its key is kept. A key that is not UTF-8
/// cannot come from a body [`decode::protobuf`] accepted; it reads as not kept.
fn kept_attribute(
    raw: &[u8],
    keep: &impl Fn(&str) -> bool,
    truncated: &mut u64,
) -> Result<Option<KeyValue>, DecodeError> {
    let mut key: &[u8] = &[];
    for bytes in each(raw, field::KEY) {
        key = bytes?;
    }
    let Some(key) = std::str::from_utf8(key)
        .ok()
        .filter(|key| keep(key) || normalize::is_read(key))
    else {
        return Ok(None);
    };
    let value = merged::<otlp_common::AnyValue>(raw, field::VALUE)?.unwrap_or_default();
    Ok(Some(KeyValue {
        key: decode::cut(key.to_owned(), truncated),
        value: decode::any_value(Some(value), truncated),
    }))
}

/// A link of an encoded `Span.Link`, when both its ids are valid.
fn link(raw: &[u8]) -> Result<Option<Link>, DecodeError> {
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    for field in Fields(raw) {
        match field? {
            (field::LINK_TRACE_ID, found) => trace_id = found.delimited()?,
            (field::LINK_SPAN_ID, found) => span_id = found.delimited()?,
            _ => {}
        }
    }
    Ok(decode::link_to(trace_id, span_id))
}

#[cfg(test)]
mod tests;
