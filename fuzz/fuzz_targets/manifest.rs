//! The manifest decoder; what it accepts validates and round-trips.
//! The checks are in `fuzz/checks.rs`, shared with the stable replay test of the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one of the checks
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::manifest(data));
