#![no_main]
//! Any byte stream into a smux session.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_smux::fuzzing::frames(data));
