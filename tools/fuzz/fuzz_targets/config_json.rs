#![no_main]
//! Any bytes as a kcptun JSON config for both sides, then as NUL-separated command-line arguments.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kcpd::config::fuzz_json(data);
    kcpd::cli::fuzz_args(data);
});
