#![no_main]
//! Any byte stream into the snappy framing decoder.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_datapath::fuzzing::snappy_frames(data));
