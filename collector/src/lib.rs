//! Everything OTLP, nothing else: the receivers (OTLP/gRPC through tonic, OTLP/HTTP through axum),
//! decoding of protobuf and JSON into Bottleneck's span model, normalization of the OpenTelemetry
//! semantic conventions, and the sink that hands accepted exports, packed as compressed blocks, to
//! whoever consumes them.
//!
//! Invariant: this crate never stores, analyses or renders anything. It knows no database, no
//! template engine and no CLI; the binary gives it a [`sink::SpanSink`] and it pushes batches there.
#![warn(missing_docs)]

pub mod auth;
pub mod block;
pub mod category;
pub mod model;
pub mod otlp;
pub mod sink;
