#![no_main]
//! `cargo +nightly fuzz run stream`: see `modelslab_sentinel::fuzzing::stream` for the input's shape.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| modelslab_sentinel::fuzzing::stream(data));
