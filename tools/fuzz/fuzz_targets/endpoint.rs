#![no_main]
//! The shipped receive path: any datagrams (0..=65535 bytes) from any addresses into an `Endpoint` and the
//! `Conn`s it creates, driven as a shard drives them.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_datapath::fuzzing::endpoint_input(data));
