//! Replays the committed fuzz corpus (`tools/fuzz/corpus/smux_frames`) on stable.

#[test]
fn replay_smux_frames_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/fuzz/corpus/smux_frames");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        kcpd_smux::fuzzing::frames(&std::fs::read(e.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}
