//! Test helper: finds the Go-made vectors (`shared/vectors`) and loads them.
//!
//! Lookup order (one rule for every test in the workspace):
//! 1. `KCPD_SHARED` — a path to the `shared` folder (or directly to its `vectors` folder);
//! 2. the first `shared/vectors` found walking up from `CARGO_MANIFEST_DIR` of this crate, which covers
//!    `../shared` beside the repository root (developers, CI) and a `shared/` inside the checkout.
//!
//! A missing folder is a hard failure with a message that says where it looked: a test that silently
//! skips its vectors would prove nothing.

use std::path::{Path, PathBuf};

pub use serde_json::Value;

/// The environment variable that overrides the search.
pub const ENV: &str = "KCPD_SHARED";

/// The `vectors` folder. Panics (this is a test helper) with the places it tried.
pub fn dir() -> PathBuf {
    match locate(std::env::var_os(ENV).map(PathBuf::from), Path::new(env!("CARGO_MANIFEST_DIR"))) {
        Ok(p) => p,
        Err(tried) => panic!(
            "kcpd test vectors not found; set {ENV}=/path/to/shared or put shared/ beside the repository. Tried: {}",
            tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Pure lookup, separated for testing: `Ok(vectors dir)` or `Err(paths tried)`.
pub fn locate(env: Option<PathBuf>, start: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let mut tried = Vec::new();
    if let Some(p) = env {
        for cand in [p.join("vectors"), p.clone()] {
            if cand.join("README.md").is_file() && cand.join("crypto.json").is_file() {
                return Ok(cand);
            }
            tried.push(cand);
        }
        // An explicit override that points nowhere is an error, not a reason to guess.
        return Err(tried);
    }
    for anc in start.ancestors() {
        for cand in [anc.join("shared/vectors"), anc.join("../shared/vectors")] {
            if cand.join("crypto.json").is_file() {
                return Ok(cand);
            }
            tried.push(cand);
        }
    }
    Err(tried)
}

/// Parse `vectors/<rel>` (e.g. `"crypto.json"`, `"new/fec_new.json"`).
pub fn load(rel: &str) -> Value {
    let path = dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// Decode a lowercase hex string field.
pub fn hex(v: &Value) -> Vec<u8> {
    let s = v.as_str().unwrap_or_else(|| panic!("expected a hex string, got {v}"));
    ::hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:.40}: {e}"))
}

/// `detBytes(label, n)` from the vectors' README: SHA-256(label ‖ u32le(i)) blocks concatenated.
pub fn det_bytes(label: &str, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut i = 0u32;
    while out.len() < n {
        let mut msg = label.as_bytes().to_vec();
        msg.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&sha256(&msg));
        i += 1;
    }
    out.truncate(n);
    out
}

/// Minimal SHA-256 (FIPS 180-4) so the helper needs no crypto dependency; only used by tests.
pub fn sha256(msg: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut data = msg.to_vec();
    data.push(0x80);
    while data.len() % 64 != 56 {
        data.push(0);
    }
    data.extend_from_slice(&((msg.len() as u64) * 8).to_be_bytes());
    for block in data.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), v[0], v[1], v[2], v[3].wrapping_add(t1), v[4], v[5], v[6]];
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_answers() {
        assert_eq!(::hex::encode(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(::hex::encode(sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn det_bytes_matches_the_vectors_generator() {
        // crypto.json: nonce of p24 = detBytes("crypto-nonce-24", 16), payload = detBytes("crypto-payload-24", 4)
        let v = load("crypto.json");
        let p24 = hex(&v["plaintexts"][0]["hex"]);
        assert_eq!(&p24[..16], &det_bytes("crypto-nonce-24", 16)[..]);
        assert_eq!(&p24[20..], &det_bytes("crypto-payload-24", 4)[..]);
    }

    #[test]
    fn explicit_override_that_points_nowhere_fails() {
        let err = locate(Some(PathBuf::from("/nonexistent/kcpd")), Path::new("/")).unwrap_err();
        assert!(err.iter().any(|p| p.ends_with("vectors")));
    }

    #[test]
    fn finds_the_shared_folder() {
        // Walking up from a crate inside the checkout reaches a `shared/vectors` beside or inside it.
        let d = dir();
        assert!(d.join("fec.json").is_file());
        let beside = d.parent().and_then(Path::parent).unwrap();
        let from = beside.join("any-checkout/tools/vectors");
        assert_eq!(locate(None, &from).map(|p| p.canonicalize().unwrap()), Ok(d.canonicalize().unwrap()));
    }
}
