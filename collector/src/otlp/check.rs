//! Checking an OTLP protobuf export without building it.
//!
//! A receiver must refuse a body prost cannot decode, and needs of the rest only what
//! [`decode::accept`] sums up (which spans are kept, their traces, the earliest start, the values
//! cut): the body itself is stored as it came. Building the request for that would allocate
//! every string and attribute of every span only to drop them, a large share of the server's CPU
//! at full rate (docs/benchmarks-history.md). Here the body is walked field by field
//! (`otlp/wire.rs`) and every field is checked as prost's derived decoder checks it: the wire
//! type each known field takes, UTF-8 in every string, unknown fields skipped, and prost's
//! recursion limit.
//!
//! Invariant: `accept(body)` is `Ok` exactly when [`decode::protobuf`] accepts `body`, and then
//! equals [`decode::accept`] of the decoded request (the `otlp_protobuf` fuzz target checks both).

use opentelemetry_proto::tonic::common::v1 as otlp_common;
use prost::Message;

use crate::otlp::decode::{self, Accepted, DecodeError, Header, MAX_ATTR_VALUE_BYTES};
use crate::otlp::wire::{Fields, RECURSION_LIMIT, Value, field};

/// Checks an OTLP protobuf body and sums up what decoding it keeps, as [`decode::accept`] does
/// for the decoded request.
pub fn accept(body: &[u8]) -> Result<Accepted, DecodeError> {
    let mut acc = Accepted::default();
    for field in Fields::at_depth(body, 0) {
        match field? {
            (field::REQUEST_RESOURCE_SPANS, value) => {
                resource_spans(nested(value, 0)?, 1, &mut acc)?;
            }
            _ => unknown(0)?,
        }
    }
    acc.trace_ids.sort_unstable();
    acc.trace_ids.dedup();
    Ok(acc)
}

/// A message field of a message `depth` levels down: prost enters it only with budget left.
fn nested(value: Value<'_>, depth: u32) -> Result<&[u8], DecodeError> {
    let bytes = value.delimited()?;
    if depth >= RECURSION_LIMIT {
        return Err(DecodeError::TooDeep);
    }
    Ok(bytes)
}

/// A field a message does not have: prost skips it only with budget left.
fn unknown(depth: u32) -> Result<(), DecodeError> {
    if depth >= RECURSION_LIMIT {
        return Err(DecodeError::TooDeep);
    }
    Ok(())
}

fn is_long(len: usize) -> u64 {
    u64::from(len > MAX_ATTR_VALUE_BYTES)
}

fn resource_spans(message: &[u8], depth: u32, acc: &mut Accepted) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            // A resource given twice is merged: its attributes add up, so they are counted here
            // occurrence by occurrence.
            (field::RESOURCE, value) => resource(nested(value, depth)?, depth + 1, acc)?,
            (field::SCOPE_SPANS, value) => scope_spans(nested(value, depth)?, depth + 1, acc)?,
            (field::RESOURCE_SPANS_SCHEMA_URL, value) => drop(value.text()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

fn resource(message: &[u8], depth: u32, acc: &mut Accepted) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::RESOURCE_ATTRIBUTES, value) => {
                acc.n_truncated_values += key_value(nested(value, depth)?, depth + 1)?;
            }
            (field::RESOURCE_DROPPED_ATTRIBUTES_COUNT, value) => drop(value.varint()?),
            (field::RESOURCE_ENTITY_REFS, value) => entity_ref(nested(value, depth)?, depth + 1)?,
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

fn entity_ref(message: &[u8], depth: u32) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (tag, value) if field::ENTITY_REF_STRINGS.contains(&tag) => drop(value.text()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

fn scope_spans(message: &[u8], depth: u32, acc: &mut Accepted) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::SCOPE, value) => scope(nested(value, depth)?, depth + 1)?,
            (field::SPANS, value) => span(nested(value, depth)?, depth + 1, acc)?,
            (field::SCOPE_SPANS_SCHEMA_URL, value) => drop(value.text()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

fn scope(message: &[u8], depth: u32) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::SCOPE_NAME | field::SCOPE_VERSION, value) => drop(value.text()?),
            (field::SCOPE_ATTRIBUTES, value) => drop(key_value(nested(value, depth)?, depth + 1)?),
            (field::SCOPE_DROPPED_ATTRIBUTES_COUNT, value) => drop(value.varint()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

/// One span: checked, then kept or dropped by [`Header::check`] and counted.
fn span(message: &[u8], depth: u32, acc: &mut Accepted) -> Result<(), DecodeError> {
    // A scalar or string given twice keeps its last value, as protobuf says.
    let (mut trace_id, mut span_id, mut parent_span_id): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let (mut start_unix_ns, mut end_unix_ns) = (0, 0);
    let mut name_len = 0;
    let mut long_values = 0;
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::TRACE_ID, value) => trace_id = value.delimited()?,
            (field::SPAN_ID, value) => span_id = value.delimited()?,
            (field::PARENT_SPAN_ID, value) => parent_span_id = value.delimited()?,
            (field::TRACE_STATE, value) => drop(value.text()?),
            (field::NAME, value) => name_len = value.text()?.len(),
            (
                field::KIND
                | field::DROPPED_ATTRIBUTES_COUNT
                | field::DROPPED_EVENTS_COUNT
                | field::DROPPED_LINKS_COUNT,
                value,
            ) => drop(value.varint()?),
            (field::START_TIME, value) => start_unix_ns = value.fixed64()?,
            (field::END_TIME, value) => end_unix_ns = value.fixed64()?,
            (field::ATTRIBUTES, value) => {
                long_values += key_value(nested(value, depth)?, depth + 1)?;
            }
            (field::EVENTS, value) => event(nested(value, depth)?, depth + 1)?,
            (field::LINKS, value) => link(nested(value, depth)?, depth + 1)?,
            (field::STATUS, value) => status(nested(value, depth)?, depth + 1)?,
            (field::FLAGS, value) => drop(value.fixed32()?),
            _ => unknown(depth)?,
        }
    }
    match Header::check(
        trace_id,
        span_id,
        parent_span_id,
        start_unix_ns,
        end_unix_ns,
    ) {
        Ok(header) => {
            acc.n_spans += 1;
            acc.trace_ids.push(header.trace_id());
            acc.min_start_unix_ns = Some(
                acc.min_start_unix_ns
                    .map_or(start_unix_ns, |min| min.min(start_unix_ns)),
            );
            acc.n_truncated_values += is_long(name_len) + long_values;
        }
        Err(reason) => {
            acc.n_rejected += 1;
            acc.first_rejection.get_or_insert(reason);
        }
    }
    Ok(())
}

fn event(message: &[u8], depth: u32) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::EVENT_TIME, value) => drop(value.fixed64()?),
            (field::EVENT_NAME, value) => drop(value.text()?),
            (field::EVENT_ATTRIBUTES, value) => drop(key_value(nested(value, depth)?, depth + 1)?),
            (field::EVENT_DROPPED_ATTRIBUTES_COUNT, value) => drop(value.varint()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

fn link(message: &[u8], depth: u32) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::LINK_TRACE_ID | field::LINK_SPAN_ID, value) => drop(value.delimited()?),
            (field::LINK_TRACE_STATE, value) => drop(value.text()?),
            (field::LINK_ATTRIBUTES, value) => drop(key_value(nested(value, depth)?, depth + 1)?),
            (field::LINK_DROPPED_ATTRIBUTES_COUNT, value) => drop(value.varint()?),
            (field::LINK_FLAGS, value) => drop(value.fixed32()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

fn status(message: &[u8], depth: u32) -> Result<(), DecodeError> {
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::STATUS_MESSAGE, value) => drop(value.text()?),
            (field::STATUS_CODE, value) => drop(value.varint()?),
            _ => unknown(depth)?,
        }
    }
    Ok(())
}

/// Checks a `KeyValue`; the count is of its key and values that decoding cuts.
fn key_value(message: &[u8], depth: u32) -> Result<u64, DecodeError> {
    let mut key_len = 0;
    let (mut n_values, mut value_long) = (0, 0);
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::KEY, value) => key_len = value.text()?.len(),
            (field::VALUE, value) => {
                n_values += 1;
                value_long = any_value(nested(value, depth)?, depth + 1)?;
            }
            (field::KEY_STRINDEX, value) => drop(value.varint()?),
            _ => unknown(depth)?,
        }
    }
    if n_values > 1 {
        // Values given twice are merged as protobuf merges messages; rare enough to leave to
        // prost, which now cannot fail on what was checked above.
        let merged = otlp_common::KeyValue::decode(message)?;
        return Ok(is_long(merged.key.len()) + decode::long_value(merged.value.as_ref()));
    }
    Ok(is_long(key_len) + value_long)
}

/// Checks an `AnyValue`; the count is of its strings and bytes that decoding cuts.
fn any_value(message: &[u8], depth: u32) -> Result<u64, DecodeError> {
    let (mut n_set, mut long) = (0, 0);
    for field in Fields::at_depth(message, depth) {
        let (tag, value) = field?;
        long = match tag {
            field::STRING_VALUE => is_long(value.text()?.len()),
            field::BOOL_VALUE | field::INT_VALUE | field::STRING_VALUE_STRINDEX => {
                value.varint()?;
                0
            }
            field::DOUBLE_VALUE => {
                value.fixed64()?;
                0
            }
            field::ARRAY_VALUE => array(nested(value, depth)?, depth + 1)?,
            field::KVLIST_VALUE => kvlist(nested(value, depth)?, depth + 1)?,
            field::BYTES_VALUE => is_long(value.delimited()?.len()),
            _ => {
                unknown(depth)?;
                continue;
            }
        };
        n_set += 1;
    }
    if n_set > 1 {
        // A oneof set twice keeps the last, merging two messages of the same kind: left to
        // prost, as for a key's values given twice.
        let merged = otlp_common::AnyValue::decode(message)?;
        return Ok(decode::long_value(Some(&merged)));
    }
    Ok(long)
}

fn array(message: &[u8], depth: u32) -> Result<u64, DecodeError> {
    let mut long = 0;
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::VALUES, value) => long += any_value(nested(value, depth)?, depth + 1)?,
            _ => unknown(depth)?,
        }
    }
    Ok(long)
}

fn kvlist(message: &[u8], depth: u32) -> Result<u64, DecodeError> {
    let mut long = 0;
    for field in Fields::at_depth(message, depth) {
        match field? {
            (field::VALUES, value) => long += key_value(nested(value, depth)?, depth + 1)?,
            _ => unknown(depth)?,
        }
    }
    Ok(long)
}

#[cfg(test)]
mod tests;
