#![no_main]
//! Captured packets into fake TCP's parser and flow table (`--tcp`).
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_datapath::fuzzing::faketcp_segments(data));
