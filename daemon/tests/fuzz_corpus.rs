//! Replays the committed fuzz corpus (`tools/fuzz/corpus/config_json`) on stable.

fn replay(target: &str, f: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fuzz/corpus").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        f(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus {target}");
}

#[test]
fn replay_config_json_corpus() {
    replay("config_json", |data| {
        kcpd::config::fuzz_json(data);
        kcpd::cli::fuzz_args(data);
    });
}
