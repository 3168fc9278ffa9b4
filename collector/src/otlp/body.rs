//! Reading an export's body into memory under bounds, for both transports: the wire size, the
//! decoded size, the inflation of a gzip body relative to the wire bytes read so far, a global
//! budget of body bytes in flight, and one deadline for the whole body.
//!
//! A gzip body is inflated while it arrives, and inflation stops as soon as the decoded bytes
//! exceed `max_inflation_ratio` times the wire bytes read so far (plus a small allowance), so a
//! bomb is refused after a few kilobytes whether or not its length was declared. Every byte
//! held (wire bytes of a gRPC message, decoded bytes of either) is first taken from the
//! [`BodyBudget`]; a body that cannot get its bytes is refused at once as retryable instead of
//! waiting, so many slow bodies cannot pin memory together.
//!
//! Invariant: never holds a body byte the budget did not grant, never inflates past the ratio or
//! the decoded cap, and never reads past the deadline.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use flate2::write::MultiGzDecoder;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most a compressed body may grow when inflated, relative to its wire bytes read so far. Real
/// OTLP exports compress 5 to 20 times; a gzip bomb compresses a thousand times.
pub const DEFAULT_MAX_INFLATION_RATIO: usize = 100;

/// Decoded bytes a compressed body may always reach whatever its wire size: the first kilobyte of
/// a real export may inflate more than the ratio (headers, a dictionary warming up).
const INFLATION_ALLOWANCE: usize = 1 << 20;

/// What a body of unknown length takes from the budget before its first byte is read; it grows
/// from there as bytes arrive.
const FIRST_RESERVATION: usize = 64 << 10;

/// How much more than needed the budget is asked for at a time, so a body arriving in small
/// pieces does not touch the semaphore for each one.
const GROWTH_STEP: usize = 256 << 10;

/// How one export body may be read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted as sent on the wire (compressed or not).
    pub max_wire_bytes: usize,
    /// Largest body accepted after gzip is undone.
    pub max_decoded_bytes: usize,
    /// Most a gzip body may inflate relative to its wire bytes read so far.
    pub max_inflation_ratio: usize,
    /// Longest the whole body may take to arrive, however steadily it trickles.
    pub deadline: Duration,
    /// Longest pause between two pieces of the body. Timed here, not by a layer around the
    /// service, so that a stalled client is answered 408 like a late one, not 400 as broken.
    pub max_pause: Duration,
}

/// Body bytes all receivers together may hold while reading and decoding exports: a semaphore
/// of bytes, taken before reading and released once the export is packed into its block.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not taken by any body right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }

    fn reserve(&self, n_bytes: usize) -> Result<BodyPermit, BodyError> {
        let permit = take(&self.bytes, n_bytes.max(1))?;
        Ok(BodyPermit {
            bytes: Arc::clone(&self.bytes),
            permit,
        })
    }
}

fn take(bytes: &Arc<Semaphore>, n_bytes: usize) -> Result<OwnedSemaphorePermit, BodyError> {
    let n_bytes = u32::try_from(n_bytes).map_err(|_| BodyError::Busy)?;
    Arc::clone(bytes)
        .try_acquire_many_owned(n_bytes)
        .map_err(|_| BodyError::Busy)
}

/// Bytes of the budget held by one body; given back when dropped.
#[derive(Debug)]
pub struct BodyPermit {
    bytes: Arc<Semaphore>,
    permit: OwnedSemaphorePermit,
}

impl BodyPermit {
    /// Makes sure at least `n_bytes` are held, taking more from the budget if needed.
    fn grow_to(&mut self, n_bytes: usize) -> Result<(), BodyError> {
        let held = self.permit.num_permits();
        if n_bytes <= held {
            return Ok(());
        }
        let wanted = n_bytes - held;
        // Ask for a step more than needed, and settle for exactly what is needed if the budget
        // is nearly spent.
        let more =
            take(&self.bytes, wanted + GROWTH_STEP).or_else(|_| take(&self.bytes, wanted))?;
        self.permit.merge(more);
        Ok(())
    }
}

/// The limits and the budget the receivers share.
#[derive(Debug, Clone)]
pub struct Intake {
    /// Limits of one body.
    pub limits: BodyLimits,
    /// Bytes all bodies in flight may hold together.
    pub budget: BodyBudget,
}

impl Intake {
    /// Bodies read under `limits`, all of them together holding at most `max_bytes_in_flight`.
    pub fn new(limits: BodyLimits, max_bytes_in_flight: usize) -> Self {
        Intake {
            limits,
            budget: BodyBudget::new(max_bytes_in_flight),
        }
    }
}

/// Why a body was not read. Each transport maps these to its own answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Over the wire limit, declared or found while reading.
    #[error("request body is larger than {limit} bytes on the wire")]
    WireTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Inflated past the decoded limit.
    #[error("request body inflates to more than {limit} bytes")]
    DecodedTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Inflated past the ratio to the bytes read so far.
    #[error("compressed request body inflates more than {ratio} times its size on the wire")]
    InflationRatio {
        /// The ratio.
        ratio: usize,
    },
    /// The budget of bytes in flight is spent: retryable.
    #[error("too many request bodies in flight, retry later")]
    Busy,
    /// The whole body did not arrive in time.
    #[error("request body not received within {secs} s")]
    Deadline {
        /// The deadline, in seconds.
        secs: u64,
    },
    /// The client stopped sending its body for longer than the pause allowed.
    #[error("no part of the request body arrived for {paused:?}")]
    Stalled {
        /// The pause allowed.
        paused: Duration,
    },
    /// A content encoding other than gzip.
    #[error("content encoding {0:?} is not supported; send gzip or no encoding")]
    UnsupportedEncoding(String),
    /// Not valid gzip.
    #[error("request body is not valid gzip")]
    Corrupt,
    /// Framed other than the protocol allows.
    #[error("{0}")]
    Malformed(String),
    /// The client broke off, or paused longer than the read timeout.
    #[error("reading the request body failed: {0}")]
    Read(String),
}

impl BodyError {
    /// Whether the body was refused for its size (413, or RESOURCE_EXHAUSTED without retry).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::WireTooLarge { .. } | Self::DecodedTooLarge { .. } | Self::InflationRatio { .. }
        )
    }

    /// The label this refusal is counted under in the rejection counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::WireTooLarge { .. }
            | Self::DecodedTooLarge { .. }
            | Self::InflationRatio { .. } => "too_large",
            Self::Busy => "body_budget",
            Self::Deadline { .. } | Self::Stalled { .. } | Self::Read(_) => "body_incomplete",
            Self::UnsupportedEncoding(_) => "unsupported_media_type",
            Self::Corrupt | Self::Malformed(_) => "undecodable",
        }
    }

    /// How long a client should wait before retrying a [`BodyError::Busy`].
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// How a body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// As is.
    Identity,
    /// gzip (one or more members).
    Gzip,
}

impl Coding {
    /// The coding a `Content-Encoding` (or `grpc-encoding`) header names.
    pub fn parse(header: Option<&str>) -> Result<Self, BodyError> {
        match header.map(|value| value.trim().to_ascii_lowercase()) {
            None => Ok(Self::Identity),
            Some(value) if value.is_empty() || value == "identity" => Ok(Self::Identity),
            Some(value) if value == "gzip" || value == "x-gzip" => Ok(Self::Gzip),
            Some(value) => Err(BodyError::UnsupportedEncoding(value)),
        }
    }
}

/// A body read whole, with its share of the budget.
#[derive(Debug)]
pub struct ReadBody {
    /// The decoded bytes.
    pub bytes: Bytes,
    /// How many bytes came over the wire.
    pub wire_bytes: usize,
    /// The budget held for `bytes`; drop it once they are gone.
    pub permit: BodyPermit,
}

/// Reads `body` whole under `intake`'s limits, inflating it as it arrives if `coding` says gzip.
/// `declared` is the length the client announced, if any: more than the wire limit is refused
/// before a byte is read, and it is what the body takes from the budget to start with.
pub async fn read<B>(
    body: B,
    declared: Option<usize>,
    coding: Coding,
    intake: &Intake,
) -> Result<ReadBody, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let limits = intake.limits;
    if declared.is_some_and(|len| len > limits.max_wire_bytes) {
        return Err(BodyError::WireTooLarge {
            limit: limits.max_wire_bytes,
        });
    }
    let first = declared.map_or(FIRST_RESERVATION, |len| len.min(limits.max_wire_bytes));
    let permit = intake.budget.reserve(first)?;
    let deadline = limits.deadline;
    match tokio::time::timeout(deadline, read_all(body, coding, limits, permit)).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::Deadline {
            secs: deadline.as_secs(),
        }),
    }
}

async fn read_all<B>(
    body: B,
    coding: Coding,
    limits: BodyLimits,
    permit: BodyPermit,
) -> Result<ReadBody, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut decoded = Decoded::new(coding, limits, permit);
    let mut body = std::pin::pin!(body);
    let stalled = BodyError::Stalled {
        paused: limits.max_pause,
    };
    while let Some(frame) = tokio::time::timeout(limits.max_pause, body.frame())
        .await
        .map_err(|_| stalled.clone())?
    {
        let frame = frame.map_err(|err| BodyError::Read(err.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        decoded.push(&chunk)?;
    }
    decoded.finish()
}

/// Inflates one compressed gRPC message held whole in memory, under the same limits as a body:
/// the wire bytes are the compressed message. `permit` already holds the compressed bytes.
pub(crate) fn inflate(
    compressed: &[u8],
    limits: BodyLimits,
    permit: BodyPermit,
) -> Result<ReadBody, BodyError> {
    let mut decoded = Decoded::new(Coding::Gzip, limits, permit);
    decoded.accumulator().held_elsewhere = compressed.len();
    decoded.push(compressed)?;
    decoded.finish()
}

/// The decoded body so far, and what it may still grow to.
struct Accumulator {
    out: BytesMut,
    limits: BodyLimits,
    compressed: bool,
    wire_bytes: usize,
    /// Bytes held outside `out` that the permit must also cover (a compressed gRPC message).
    held_elsewhere: usize,
    permit: BodyPermit,
    /// Why the last write was refused, when it was refused by a limit rather than by gzip.
    refusal: Option<BodyError>,
}

impl Accumulator {
    fn admit(&mut self, n_more: usize) -> Result<(), BodyError> {
        let len = self.out.len() + n_more;
        if self.compressed {
            if len > self.limits.max_decoded_bytes {
                return Err(BodyError::DecodedTooLarge {
                    limit: self.limits.max_decoded_bytes,
                });
            }
            let allowed = self
                .wire_bytes
                .saturating_mul(self.limits.max_inflation_ratio)
                .saturating_add(INFLATION_ALLOWANCE);
            if len > allowed {
                return Err(BodyError::InflationRatio {
                    ratio: self.limits.max_inflation_ratio,
                });
            }
        }
        self.permit.grow_to(len + self.held_elsewhere)
    }
}

impl Write for Accumulator {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Err(err) = self.admit(buf.len()) {
            self.refusal = Some(err);
            return Err(std::io::Error::other("body limit reached"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Decoded {
    Identity(Accumulator),
    Gzip(Box<MultiGzDecoder<Accumulator>>),
}

impl Decoded {
    fn new(coding: Coding, limits: BodyLimits, permit: BodyPermit) -> Self {
        let accumulator = Accumulator {
            out: BytesMut::new(),
            limits,
            compressed: coding == Coding::Gzip,
            wire_bytes: 0,
            held_elsewhere: 0,
            permit,
            refusal: None,
        };
        match coding {
            Coding::Identity => Self::Identity(accumulator),
            Coding::Gzip => Self::Gzip(Box::new(MultiGzDecoder::new(accumulator))),
        }
    }

    fn accumulator(&mut self) -> &mut Accumulator {
        match self {
            Self::Identity(accumulator) => accumulator,
            Self::Gzip(decoder) => decoder.get_mut(),
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        let accumulator = self.accumulator();
        accumulator.wire_bytes += chunk.len();
        if accumulator.wire_bytes > accumulator.limits.max_wire_bytes {
            return Err(BodyError::WireTooLarge {
                limit: accumulator.limits.max_wire_bytes,
            });
        }
        let written = match self {
            Self::Identity(accumulator) => accumulator.write_all(chunk),
            Self::Gzip(decoder) => decoder.write_all(chunk),
        };
        written.map_err(|_| {
            self.accumulator()
                .refusal
                .take()
                .unwrap_or(BodyError::Corrupt)
        })
    }

    fn finish(self) -> Result<ReadBody, BodyError> {
        let accumulator = match self {
            Self::Identity(accumulator) => accumulator,
            Self::Gzip(mut decoder) => {
                if decoder.try_finish().is_err() {
                    return Err(decoder
                        .get_mut()
                        .refusal
                        .take()
                        .unwrap_or(BodyError::Corrupt));
                }
                decoder.finish().map_err(|_| BodyError::Corrupt)?
            }
        };
        Ok(ReadBody {
            bytes: accumulator.out.freeze(),
            wire_bytes: accumulator.wire_bytes,
            permit: accumulator.permit,
        })
    }
}

#[cfg(test)]
mod tests;
