#![no_main]
//! Any stream of FEC packets through the decoder, under every configuration.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_fec::fuzzing::decode_stream(data));
