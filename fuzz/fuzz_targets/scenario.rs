#![no_main]
//! `cargo +nightly fuzz run scenario`: see `modelslab_sentinel::fuzzing::scenario` for the input's shape.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| modelslab_sentinel::fuzzing::scenario(data));
