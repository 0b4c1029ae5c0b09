#![no_main]
//! `cargo +nightly fuzz run request`: see `modelslab_sentinel::fuzzing::request` for the input's shape.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| modelslab_sentinel::fuzzing::request(data));
