//! Bottleneck: an OTLP collector that tells where a request's time really goes.
//!
//! Reading order, which is also the pipeline order:
//! - `config`: flags and `BOTTLENECK_*` variables layered over the TOML file, whose sections
//!   each subsystem owns (`settings` modules);
//! - `app`: binds every listener and wires the pipeline together;
//! - `listener`: the accept loop of every listener: TLS, client timeouts, graceful stop;
//! - `pipeline`: the store writer (group commit, acknowledgements), the assembler (recent traces,
//!   grace period, late spans) and the analysis task feeding summaries and rollups;
//! - `analysis`: pure functions from spans to breakdowns, findings and rollups;
//! - `regress`: the regression finder, comparing each `service.version` with the previous as its
//!   traffic grows, raising and resolving events on confidence intervals;
//! - `store`: SQLite (the default) and PostgreSQL behind one `Store`; the only place with SQL;
//! - `alert`: latency budgets and SLOs evaluated on the rollups, alert states, webhooks;
//! - `read`: the read model: stored rollups, requests and spans as typed views (nanoseconds,
//!   the analysis' enums) that the API and the pages both render;
//! - `web`: the JSON API, the HTML pages, charts, static assets and `/metrics`;
//! - `cli`: the subcommands (`serve`, `demo`, `check`, `bench`);
//! - `time`: the wall clock and the text forms of time, shared by alerting, the web and the CLI.
//!
//! The OTLP receivers and the span model live in the `collector` crate.

pub mod alert;
pub mod analysis;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod histogram;
pub mod listener;
pub mod pipeline;
pub mod read;
pub mod regress;
pub mod store;
pub mod time;
pub mod web;
