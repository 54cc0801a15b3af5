//! Replays the committed fuzz corpus (`tools/fuzz/corpus/crypto_open`) on the stable toolchain.

#[test]
fn replay_crypto_open_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fuzz/corpus/crypto_open");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        kcpd_crypto::fuzzing::open_any(&data);
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}
