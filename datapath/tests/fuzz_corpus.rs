//! Replays the committed fuzz corpora (`tools/fuzz/corpus/{kcp_input,snappy_frames,endpoint,faketcp_segments}`)
//! on stable.

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
fn replay_kcp_input_corpus() {
    replay("kcp_input", kcpd_datapath::fuzzing::kcp_input);
}

#[test]
fn replay_snappy_frames_corpus() {
    replay("snappy_frames", kcpd_datapath::fuzzing::snappy_frames);
}

#[test]
fn replay_endpoint_corpus() {
    replay("endpoint", kcpd_datapath::fuzzing::endpoint_input);
}

#[test]
fn replay_faketcp_segments_corpus() {
    replay("faketcp_segments", kcpd_datapath::fuzzing::faketcp_segments);
}
