//! Every vector of `vectors/snappy.json`, both ways.

use kcpd_datapath::proto::snappy::{Decoder, Encoder};
use kcpd_vectors::{det_bytes, hex, load, sha256};

fn input_of(v: &kcpd_vectors::Value) -> Vec<u8> {
    match v["name"].as_str().unwrap() {
        "text_100k" => {
            let mut s = String::new();
            let mut i = 0u64;
            while s.len() < 102_400 {
                s.push_str(&format!("line {i:05}: the quick brown fox jumps over the lazy dog {}\n", (i * i) % 97));
                i += 1;
            }
            s.truncate(102_400);
            s.into_bytes()
        }
        "random_70k" => det_bytes("snappy-random-70k", 71_680),
        _ => hex(&v["input_hex"]),
    }
}

fn decode_all(stream: &[u8]) -> Vec<u8> {
    let mut d = Decoder::new();
    d.feed(stream);
    let mut out = Vec::new();
    while let Some(x) = d.decode().unwrap() {
        out.extend_from_slice(x);
    }
    assert_eq!(d.buffered(), 0);
    out
}

#[test]
fn buffered_writer_vectors() {
    let v = load("snappy.json");
    for vec in v["vectors"].as_array().unwrap() {
        let name = vec["name"].as_str().unwrap();
        let input = input_of(vec);
        assert_eq!(::hex::encode(sha256(&input)), vec["input_sha256"].as_str().unwrap(), "{name} input");
        let mut out = Vec::new();
        Encoder::new().encode(&input, &mut out);
        // snap 1.1.2's block encoder reproduces Go's bytes (the vectors note it), compressed bodies included.
        assert_eq!(::hex::encode(sha256(&out)), vec["output_sha256"].as_str().unwrap(), "{name} output");
        assert_eq!(
            out.len() as u64,
            vec["output_len"]
                .as_str()
                .map(|s| s.parse().unwrap())
                .unwrap_or_else(|| vec["output_len"].as_u64().unwrap())
        );
        if let Some(h) = vec.get("output_hex").and_then(|h| h.as_str()).filter(|h| h.len() == out.len() * 2) {
            assert_eq!(::hex::encode(&out), h);
        }
        assert_eq!(decode_all(&out), input, "{name} round trip");
    }
}

#[test]
fn kcptun_compstream_one_chunk_per_smux_frame() {
    let v = load("snappy.json");
    let k = &v["kcptun_compression"];
    for dir in ["client_to_server", "server_to_client"] {
        let d = &k[dir];
        let wire = hex(&d["wire_hex"]);
        assert_eq!(decode_all(&wire), hex(&d["decompressed_hex"]), "{dir}");
        // Re-encode frame by frame, as CompStream.Write + Flush per smux frame.
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        for f in d["decompressed_smux_frames"].as_array().unwrap() {
            enc.encode(&hex(&f["frame_hex_or_header"]), &mut out);
        }
        assert_eq!(out, wire, "{dir}");
    }
}
