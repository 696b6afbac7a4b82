//! libFuzzer wrapper of [`cnet_fuzz_targets::ipv4_frags`]; the logic (and its docs) live there.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnet_fuzz_targets::ipv4_frags(data));
