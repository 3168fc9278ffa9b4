//! Decoding for readers that need only some attributes: the same spans as [`decode::spans`],
//! each holding only the attributes its caller keeps, and those its semantics and category are
//! derived from (so they are always the whole decoder's).
//!
//! The analysis reads a few semantic-convention attributes of every span, and decoding all of
//! them (a string allocated and checked for each key and value, events too) would be the larger
//! part of its cost. Here the body is walked field by field with prost's wire-format functions,
//! borrowing every length-delimited field from the body: an attribute is looked at only by its
//! key's bytes, and decoded only when the key is kept (a value of one string, bool, integer or
//! double field read in place, any other by prost's own `AnyValue`); events are only counted.
//! Mirroring the messages with prost's derive instead would take each skipped field as a
//! reference-counted slice in a vector grown one push at a time, costing more the more
//! attributes go unread (docs/benchmarks-history.md).
//! Resources, scopes and statuses are few or small and are decoded whole by prost. Which spans
//! are kept is decided by `decode::Header::check`, the rule every decoder of this crate applies.
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

use crate::model::{AttrValue, KeyValue, Link, Resource, Scope};
use crate::otlp::decode::{self, Body, DecodeError, Decoded, Header};
use crate::otlp::normalize;
use crate::otlp::wire::{self, Fields, Value, each, field, merged};

/// Decodes an OTLP protobuf body into spans that hold only the attributes `keep` accepts by key,
/// besides those their semantics and category are derived from.
pub fn spans_keeping(body: &[u8], keep: impl Fn(&[u8]) -> bool) -> Result<Decoded, DecodeError> {
    let mut spans = Vec::new();
    let decoded = each_span_keeping(body, keep, |span| spans.push(span))?;
    Ok(Decoded { spans, ..decoded })
}

/// [`spans_keeping`], handing each span to `take` as it is decoded rather than gathering them:
/// a reader that sorts the spans into traces moves each once instead of twice, and no vector of
/// the body's spans is grown. The returned `Decoded` counts what was dropped and holds no span.
pub fn each_span_keeping(
    body: &[u8],
    keep: impl Fn(&[u8]) -> bool,
    mut take: impl FnMut(crate::model::Span),
) -> Result<Decoded, DecodeError> {
    let mut acc = Decoded::default();
    // Each span's kept attributes are gathered here, then copied into a vector of their number:
    // one allocation a span rather than a vector grown one attribute at a time.
    let mut kept = Vec::new();
    for resource_spans in each(body, field::REQUEST_RESOURCE_SPANS) {
        let resource_spans = resource_spans?;
        let resource = merged::<otlp_resource::Resource>(resource_spans, field::RESOURCE)?;
        let resource = Arc::new(decode::resource(resource, &mut acc.n_truncated_values));
        for scope_spans in each(resource_spans, field::SCOPE_SPANS) {
            let scope_spans = scope_spans?;
            let scope = merged::<otlp_common::InstrumentationScope>(scope_spans, field::SCOPE)?;
            let scope = Arc::new(decode::scope(scope));
            for raw in each(scope_spans, field::SPANS) {
                let span = span(
                    raw?,
                    (&resource, &scope),
                    &keep,
                    &mut kept,
                    &mut acc.n_truncated_values,
                )?;
                match span {
                    Ok(span) => take(span),
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
    (resource, scope): (&Arc<Resource>, &Arc<Scope>),
    keep: &impl Fn(&[u8]) -> bool,
    kept: &mut Vec<KeyValue>,
    truncated: &mut u64,
) -> Result<Result<crate::model::Span, String>, DecodeError> {
    let (mut trace_id, mut span_id, mut parent_span_id): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let (mut start_unix_ns, mut end_unix_ns) = (0, 0);
    let mut name = "";
    let mut kind = 0;
    kept.clear();
    let (mut n_events, mut n_dropped_events) = (0u32, 0u32);
    let mut links = Vec::new();
    let mut status: Option<otlp_trace::Status> = None;
    for field in Fields::of(raw) {
        let (tag, value) = field?;
        match tag {
            field::TRACE_ID => trace_id = value.delimited()?,
            field::SPAN_ID => span_id = value.delimited()?,
            field::PARENT_SPAN_ID => parent_span_id = value.delimited()?,
            field::NAME => {
                name = value.text()?;
            }
            // protobuf's int32 and uint32 keep the low bits of the varint.
            field::KIND => kind = value.varint()? as i32,
            field::START_TIME => start_unix_ns = value.fixed64()?,
            field::END_TIME => end_unix_ns = value.fixed64()?,
            field::ATTRIBUTES => {
                kept.extend(kept_attribute(value.delimited()?, keep, truncated)?);
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
    let mut attributes = Vec::with_capacity(kept.len());
    attributes.append(kept);
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

/// The attribute of an encoded `KeyValue`, decoded when its key is kept. Keys are compared as
/// bytes, so the UTF-8 of a skipped key is never checked; a kept key that is not UTF-8 cannot
/// come from a body [`decode::protobuf`] accepted, and reads as not kept.
fn kept_attribute(
    raw: &[u8],
    keep: &impl Fn(&[u8]) -> bool,
    truncated: &mut u64,
) -> Result<Option<KeyValue>, DecodeError> {
    let mut key: &[u8] = &[];
    let (mut value, mut n_values) = (None, 0u32);
    for field in Fields::of(raw) {
        match field? {
            (field::KEY, found) => key = found.delimited()?,
            (field::VALUE, found) => {
                value = Some(found);
                n_values += 1;
            }
            _ => {}
        }
    }
    if !(keep(key) || normalize::is_read(key)) {
        return Ok(None);
    }
    let Some(key) = wire::utf8(key) else {
        return Ok(None);
    };
    let simple = match (n_values, value) {
        (1, Some(value)) => simple_value(value.delimited()?, truncated),
        _ => None,
    };
    let value = match simple {
        Some(value) => value,
        None => {
            let merged = merged::<otlp_common::AnyValue>(raw, field::VALUE)?.unwrap_or_default();
            decode::any_value(Some(merged), truncated)
        }
    };
    Ok(Some(KeyValue {
        key: decode::cut(key.to_owned(), truncated),
        value,
    }))
}

/// An encoded `AnyValue` of at most one field holding a string, bool, integer or double: the
/// value prost's decoding gives, read in place. `None` for anything else (arrays, maps, bytes,
/// fields given twice, bad UTF-8 or wire types), which prost decodes, or rejects, itself.
fn simple_value(raw: &[u8], truncated: &mut u64) -> Option<AttrValue> {
    let mut fields = Fields::of(raw);
    let first = fields.next();
    if fields.next().is_some() {
        return None;
    }
    Some(match first {
        None => AttrValue::Empty,
        Some(Ok((field::STRING_VALUE, Value::Delimited(bytes)))) => {
            AttrValue::Str(decode::cut(wire::utf8(bytes)?.to_owned(), truncated))
        }
        Some(Ok((field::BOOL_VALUE, Value::Varint(value)))) => AttrValue::Bool(value != 0),
        // protobuf's int64 is the varint's bits.
        Some(Ok((field::INT_VALUE, Value::Varint(value)))) => AttrValue::Int(value as i64),
        Some(Ok((field::DOUBLE_VALUE, Value::Fixed64(bits)))) => {
            AttrValue::Double(f64::from_bits(bits))
        }
        _ => return None,
    })
}

/// A link of an encoded `Span.Link`, when both its ids are valid.
fn link(raw: &[u8]) -> Result<Option<Link>, DecodeError> {
    let (mut trace_id, mut span_id): (&[u8], &[u8]) = (&[], &[]);
    for field in Fields::of(raw) {
        match field? {
            (field::LINK_TRACE_ID, found) => trace_id = found.delimited()?,
            (field::LINK_SPAN_ID, found) => span_id = found.delimited()?,
            _ => {}
        }
    }
    Ok(decode::link_to(trace_id, span_id))
}

#[cfg(test)]
pub(crate) mod tests;
