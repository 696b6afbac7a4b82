//! libFuzzer wrapper of [`cnet_fuzz_targets::dp_handshake`]; the logic (and its docs) live there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnet_fuzz_targets::dp_handshake(data));
