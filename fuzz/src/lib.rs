//! The fuzz targets' bodies, shared by the libFuzzer binaries in `fuzz_targets/` (nightly,
//! `cargo fuzz run <target>`) and by the bounded stable run in `tests/it/fuzz.rs`, which includes
//! `targets.rs` by path.

pub mod targets;
