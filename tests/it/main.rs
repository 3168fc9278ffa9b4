//! The integration tests: one crate, so one link. Every test starts the real application on
//! ephemeral ports with a fresh SQLite file and talks to it through its public interfaces.

mod support;

mod alerts;
mod analysis;
mod assets;
mod browser;
mod compare;
mod crash;
mod demo;
mod fuzz;
mod hostile;
mod ingest;
mod pages;
mod pipeline;
mod python;
