#![no_main]
//! Any datagrams into KCP segment input, and through a listener's whole receive path.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kcpd_datapath::fuzzing::kcp_input(data));
