#![no_main]
//! Any datagram through `open` of every --crypt method (and a seal/open round trip of it).
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_crypto::fuzzing::open_any(data));
