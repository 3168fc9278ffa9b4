//! The integration tests: one crate, so one link. Every test starts the real application on
//! ephemeral ports with a fresh database (a SQLite file, or a scratch PostgreSQL database with
//! `BOTTLENECK_TEST_STORE=postgres`) and talks to it through its public interfaces. `store` is the
//! store conformance suite, run on both stores. `scale`, the PostgreSQL halves of `store` and
//! `outage` (with `proxy`) need PostgreSQL and run with the `pg-tests` feature. `python` and `truth` run real Python services under the official OpenTelemetry SDK
//! (`truth` against PostgreSQL as well) and skip, saying so, where those are missing.

mod support;

mod alerts;
mod analysis;
mod analysis_retry;
mod analyze_cli;
mod assets;
mod bench;
mod bounds;
mod browser;
mod code_location;
mod compare;
mod corpus;
mod crash;
mod demo;
mod fuzz;
mod hostile;
mod hot_trace;
mod ingest;
mod jaeger;
mod long_names;
mod outage;
mod pages;
mod pipeline;
#[cfg(feature = "pg-tests")]
mod proxy;
mod python;
mod reads;
mod regress;
mod retention;
#[cfg(feature = "pg-tests")]
mod scale;
mod store;
mod truth;
