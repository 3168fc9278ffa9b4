//! The fuzz targets on stable: each target's body over its committed seed corpus, then over
//! thousands of inputs mutated from it by a seeded generator. Deterministic, bounded, and run by
//! plain `cargo test`; real coverage-guided fuzzing is `cargo fuzz run` (docs/reliability.md).

use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[path = "../../fuzz/src/targets.rs"]
mod targets;

/// Mutated inputs per target: 20,000 take about a second per target in the debug build.
const N_MUTATIONS: usize = 20_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading the seed corpus {}: {err}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

/// One random edit of `input`, libFuzzer style: flip, set, insert, delete, duplicate a range,
/// splice in another seed, or cut.
fn mutate(rng: &mut SmallRng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let n_edits = rng.random_range(1..=4);
    for _ in 0..n_edits {
        let len = input.len();
        match rng.random_range(0..8) {
            0 if len > 0 => {
                let at = rng.random_range(0..len);
                input[at] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let at = rng.random_range(0..len);
                input[at] =
                    [0, 0xff, 0x7f, 0x80, b'"', b'{', b'[', rng.random()][rng.random_range(0..8)];
            }
            2 => {
                let at = rng.random_range(0..=len);
                let byte = rng.random();
                input.insert(at, byte);
            }
            3 if len > 0 => {
                let at = rng.random_range(0..len);
                let end = (at + rng.random_range(1..=16)).min(len);
                input.drain(at..end);
            }
            4 if len > 0 => {
                let at = rng.random_range(0..len);
                let end = (at + rng.random_range(1..=64)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.random_range(0..=len);
                input.splice(to..to, copy);
            }
            5 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                if !other.is_empty() {
                    let from = rng.random_range(0..other.len());
                    let to = rng.random_range(0..=input.len());
                    input.splice(to..to, other[from..].iter().copied());
                }
            }
            6 if len > 0 => input.truncate(rng.random_range(0..len)),
            _ => {
                let n = rng.random_range(0..32);
                input.extend((0..n).map(|_| rng.random::<u8>()));
            }
        }
    }
}

fn run(target: &str, body: fn(&[u8])) {
    let seeds = corpus(target);
    for seed in &seeds {
        body(seed);
    }
    let mut rng = SmallRng::seed_from_u64(0x0b0771e);
    for _ in 0..N_MUTATIONS {
        let mut input = seeds[rng.random_range(0..seeds.len())].clone();
        mutate(&mut rng, &mut input, &seeds);
        body(&input);
    }
}

#[test]
fn fuzz_otlp_protobuf_smoke() {
    run("otlp_protobuf", targets::otlp_protobuf);
}

#[test]
fn fuzz_otlp_json_smoke() {
    run("otlp_json", targets::otlp_json);
}

#[test]
fn fuzz_analysis_smoke() {
    run("analysis", targets::analysis);
}
