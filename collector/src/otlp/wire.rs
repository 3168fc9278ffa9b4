//! Walking protobuf messages field by field with prost's wire-format functions (`decode_key`,
//! `decode_varint`), borrowing every length-delimited field from the body instead of building
//! the message. [`super::sparse`] reads spans this way and [`super::check`] checks whole exports.
//!
//! Invariant: what this walk rejects, prost's decoding of the same bytes rejects too, with the
//! recursion limit counted as prost counts it ([`RECURSION_LIMIT`]).

use prost::Message;
use prost::encoding::{WireType, decode_key, decode_varint};

use crate::otlp::decode::DecodeError;

/// Nesting prost allows: the fields of a message `d` levels below the body are decoded with a
/// budget of `RECURSION_LIMIT - d`, and with none left no message field is entered, no unknown
/// field skipped and no group opened.
pub(crate) const RECURSION_LIMIT: u32 = 100;

/// A field's value as it lies in the body.
#[derive(Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    /// Length-delimited: bytes, a string or a message.
    Delimited(&'a [u8]),
    /// A group, skipped: no OTLP field is one.
    Group,
}

/// The bytes as text when they are UTF-8. Nearly every OTLP key and value is short ASCII, which
/// std's validator walks byte by byte; an ASCII check goes a word at a time.
pub(crate) fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

impl<'a> Value<'a> {
    pub(crate) fn delimited(self) -> Result<&'a [u8], DecodeError> {
        match self {
            Value::Delimited(bytes) => Ok(bytes),
            _ => Err(DecodeError::WireType),
        }
    }

    /// A string field: its bytes, checked as UTF-8 as prost checks them.
    pub(crate) fn text(self) -> Result<&'a str, DecodeError> {
        utf8(self.delimited()?).ok_or(DecodeError::Utf8)
    }

    pub(crate) fn varint(self) -> Result<u64, DecodeError> {
        match self {
            Value::Varint(value) => Ok(value),
            _ => Err(DecodeError::WireType),
        }
    }

    pub(crate) fn fixed64(self) -> Result<u64, DecodeError> {
        match self {
            Value::Fixed64(value) => Ok(value),
            _ => Err(DecodeError::WireType),
        }
    }

    pub(crate) fn fixed32(self) -> Result<u32, DecodeError> {
        match self {
            Value::Fixed32(value) => Ok(value),
            _ => Err(DecodeError::WireType),
        }
    }
}

/// The fields of one message, in the order they lie in it. A malformed field ends the walk with
/// its error.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
    /// What prost's recursion budget is for this message's fields.
    budget: u32,
}

impl<'a> Fields<'a> {
    /// The fields of a message `depth` levels below the body (the body itself is 0).
    pub(crate) fn at_depth(message: &'a [u8], depth: u32) -> Self {
        Fields {
            rest: message,
            budget: RECURSION_LIMIT.saturating_sub(depth),
        }
    }

    /// The fields of a message whose depth does not matter to its reader.
    pub(crate) fn of(message: &'a [u8]) -> Self {
        Self::at_depth(message, 0)
    }

    fn read(&mut self) -> Result<(u32, Value<'a>), DecodeError> {
        let (tag, wire_type) = self.key()?;
        let value = match wire_type {
            WireType::Varint => Value::Varint(self.varint()?),
            WireType::SixtyFourBit => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("took 8 bytes"),
            )),
            WireType::ThirtyTwoBit => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("took 4 bytes"),
            )),
            WireType::LengthDelimited => {
                let len = self.varint()?;
                Value::Delimited(self.take(usize::try_from(len).unwrap_or(usize::MAX))?)
            }
            WireType::StartGroup => {
                self.skip_group(tag, self.budget)?;
                Value::Group
            }
            WireType::EndGroup => return Err(DecodeError::Group),
        };
        Ok((tag, value))
    }

    /// A field's key. Almost every key is one byte (fields 1 to 15): read in place, as prost's
    /// `decode_key` reads it; any other goes through `decode_key`, errors included.
    #[inline]
    fn key(&mut self) -> Result<(u32, WireType), DecodeError> {
        if let [key @ 0x08..=0x7f, rest @ ..] = self.rest {
            let wire_type = match key & 0x07 {
                0 => Some(WireType::Varint),
                1 => Some(WireType::SixtyFourBit),
                2 => Some(WireType::LengthDelimited),
                3 => Some(WireType::StartGroup),
                4 => Some(WireType::EndGroup),
                5 => Some(WireType::ThirtyTwoBit),
                _ => None,
            };
            if let Some(wire_type) = wire_type {
                self.rest = rest;
                return Ok((u32::from(key >> 3), wire_type));
            }
        }
        Ok(decode_key(&mut self.rest)?)
    }

    /// A varint: one or two bytes read in place (every length up to 16 KiB: a span, a
    /// statement), a longer one by prost's `decode_varint`. Always inlined: every field's key
    /// path reads one, and the inliner's choice for it swung with unrelated changes.
    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        match self.rest {
            [byte @ 0..=0x7f, rest @ ..] => {
                self.rest = rest;
                Ok(u64::from(*byte))
            }
            [low @ 0x80..=0xff, high @ 0..=0x7f, rest @ ..] => {
                self.rest = rest;
                Ok(u64::from(low & 0x7f) | (u64::from(*high) << 7))
            }
            _ => Ok(decode_varint(&mut self.rest)?),
        }
    }

    /// Skips a group's fields up to its end, as prost's `skip_field` does: each level spends
    /// one of the budget, and a field met with none left is an error.
    fn skip_group(&mut self, tag: u32, budget: u32) -> Result<(), DecodeError> {
        if budget == 0 {
            return Err(DecodeError::TooDeep);
        }
        loop {
            let (inner_tag, wire_type) = decode_key(&mut self.rest)?;
            if wire_type == WireType::EndGroup {
                return if inner_tag == tag {
                    Ok(())
                } else {
                    Err(DecodeError::Group)
                };
            }
            if budget == 1 {
                return Err(DecodeError::TooDeep);
            }
            match wire_type {
                WireType::Varint => drop(decode_varint(&mut self.rest)?),
                WireType::SixtyFourBit => drop(self.take(8)?),
                WireType::ThirtyTwoBit => drop(self.take(4)?),
                WireType::LengthDelimited => {
                    let len = decode_varint(&mut self.rest)?;
                    self.take(usize::try_from(len).unwrap_or(usize::MAX))?;
                }
                WireType::StartGroup => self.skip_group(inner_tag, budget - 1)?,
                WireType::EndGroup => unreachable!("handled above"),
            }
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.rest.len() {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), DecodeError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// The length-delimited fields numbered `tag` of a message.
pub(crate) fn each<'a>(
    message: &'a [u8],
    tag: u32,
) -> impl Iterator<Item = Result<&'a [u8], DecodeError>> + 'a {
    Fields::of(message).filter_map(move |field| match field {
        Ok((found, value)) if found == tag => Some(value.delimited()),
        Ok(_) => None,
        Err(err) => Some(Err(err)),
    })
}

/// The message numbered `tag` of `message`, decoded by prost (its occurrences merged, as protobuf
/// merges a message field given twice).
pub(crate) fn merged<M: Message + Default>(
    message: &[u8],
    tag: u32,
) -> Result<Option<M>, DecodeError> {
    let mut merged: Option<M> = None;
    for bytes in each(message, tag) {
        merged.get_or_insert_default().merge(bytes?)?;
    }
    Ok(merged)
}

/// Field numbers of the OTLP trace messages (opentelemetry/proto/collector/trace/v1,
/// trace/v1, resource/v1 and common/v1), grouped by message.
pub(crate) mod field {
    // ExportTraceServiceRequest
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    // ResourceSpans
    pub const RESOURCE: u32 = 1;
    pub const SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
    // Resource
    pub const RESOURCE_ATTRIBUTES: u32 = 1;
    pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: u32 = 2;
    pub const RESOURCE_ENTITY_REFS: u32 = 3;
    // EntityRef: four strings, the last two repeated.
    pub const ENTITY_REF_STRINGS: std::ops::RangeInclusive<u32> = 1..=4;
    // ScopeSpans
    pub const SCOPE: u32 = 1;
    pub const SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
    // InstrumentationScope
    pub const SCOPE_NAME: u32 = 1;
    pub const SCOPE_VERSION: u32 = 2;
    pub const SCOPE_ATTRIBUTES: u32 = 3;
    pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: u32 = 4;
    // Span
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START_TIME: u32 = 7;
    pub const END_TIME: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const DROPPED_ATTRIBUTES_COUNT: u32 = 10;
    pub const EVENTS: u32 = 11;
    pub const DROPPED_EVENTS_COUNT: u32 = 12;
    pub const LINKS: u32 = 13;
    pub const DROPPED_LINKS_COUNT: u32 = 14;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    // Span.Event
    pub const EVENT_TIME: u32 = 1;
    pub const EVENT_NAME: u32 = 2;
    pub const EVENT_ATTRIBUTES: u32 = 3;
    pub const EVENT_DROPPED_ATTRIBUTES_COUNT: u32 = 4;
    // Span.Link
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
    pub const LINK_TRACE_STATE: u32 = 3;
    pub const LINK_ATTRIBUTES: u32 = 4;
    pub const LINK_DROPPED_ATTRIBUTES_COUNT: u32 = 5;
    pub const LINK_FLAGS: u32 = 6;
    // Status
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    // KeyValue
    pub const KEY: u32 = 1;
    pub const VALUE: u32 = 2;
    pub const KEY_STRINDEX: u32 = 3;
    // AnyValue, a oneof
    pub const STRING_VALUE: u32 = 1;
    pub const BOOL_VALUE: u32 = 2;
    pub const INT_VALUE: u32 = 3;
    pub const DOUBLE_VALUE: u32 = 4;
    pub const ARRAY_VALUE: u32 = 5;
    pub const KVLIST_VALUE: u32 = 6;
    pub const BYTES_VALUE: u32 = 7;
    pub const STRING_VALUE_STRINDEX: u32 = 8;
    // ArrayValue and KeyValueList
    pub const VALUES: u32 = 1;
}

#[cfg(test)]
mod tests {
    use prost::encoding::encode_varint;

    use super::*;

    /// A varint field (number 1) holding `encoded`, read by the walk.
    fn read_varint(encoded: &[u8]) -> Result<u64, DecodeError> {
        let mut field = vec![0x08];
        field.extend_from_slice(encoded);
        let (tag, value) = Fields::of(&field).next().expect("one field")?;
        assert_eq!(tag, 1);
        value.varint()
    }

    #[test]
    fn varints_read_in_place_are_those_prost_reads() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_151, u64::MAX] {
            let mut encoded = Vec::new();
            encode_varint(value, &mut encoded);
            assert_eq!(read_varint(&encoded).unwrap(), value, "{value}");
        }
        // Longer than needed, as protobuf allows.
        assert_eq!(read_varint(&[0x80, 0x00]).unwrap(), 0);
        assert_eq!(read_varint(&[0xff, 0x80, 0x00]).unwrap(), 127);
        assert!(read_varint(&[0x80]).is_err(), "cut after its first byte");
        assert!(
            read_varint(&[0xff, 0xff]).is_err(),
            "cut after its second byte"
        );
    }

    #[test]
    fn text_is_accepted_exactly_when_it_is_utf8() {
        for text in [
            "",
            "db.statement",
            "SELECT * FROM users",
            "Grüße",
            "日本語のスパン名",
            "emoji 🚀 end",
        ] {
            assert_eq!(utf8(text.as_bytes()), Some(text));
        }
        for bytes in [
            &b"\xff"[..],
            b"abc\xc3",
            b"abc\xc3(def",
            b"\xed\xa0\x80",
            b"long ascii prefix then \xff",
        ] {
            assert_eq!(utf8(bytes), None, "{bytes:?}");
        }
    }
}
