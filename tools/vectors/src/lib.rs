//! Test helper: finds the Go-made interop vectors and loads them.
//!
//! The vectors live in this crate, under `data/` (byte-identical copies of what the Go reference generator
//! produced; `data/SHA256SUMS` pins every file and a test checks it, see `README.md` beside this crate for
//! where they came from). Lookup order (one rule for every test in the workspace):
//! 1. `KCPD_SHARED` — a path to another copy: a folder holding `vectors/`, or the vectors folder itself
//!    (e.g. a newer generator run to compare against);
//! 2. otherwise `data/` inside this crate, which every checkout has.
//!
//! A missing folder is a hard failure with a message that says where it looked: a test that silently
//! skips its vectors would prove nothing.

use std::path::{Path, PathBuf};

pub use serde_json::Value;

/// The environment variable that overrides the search.
pub const ENV: &str = "KCPD_SHARED";

/// The copy inside the repository.
pub fn builtin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The `vectors` folder. Panics (this is a test helper) with the places it tried.
pub fn dir() -> PathBuf {
    match locate(std::env::var_os(ENV).map(PathBuf::from), &builtin()) {
        Ok(p) => p,
        Err(tried) => panic!(
            "kcpd test vectors not found; unset {ENV} to use the copy in tools/vectors/data, or point it at a \
             folder holding vectors/. Tried: {}",
            tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn is_vectors(dir: &Path) -> bool {
    dir.join("README.md").is_file() && dir.join("crypto.json").is_file()
}

/// Pure lookup, separated for testing: `Ok(vectors dir)` or `Err(paths tried)`.
pub fn locate(env: Option<PathBuf>, builtin: &Path) -> Result<PathBuf, Vec<PathBuf>> {
    let mut tried = Vec::new();
    if let Some(p) = env {
        for cand in [p.join("vectors"), p.clone()] {
            if is_vectors(&cand) {
                return Ok(cand);
            }
            tried.push(cand);
        }
        // An explicit override that points nowhere is an error, not a reason to guess.
        return Err(tried);
    }
    if is_vectors(builtin) {
        return Ok(builtin.to_path_buf());
    }
    tried.push(builtin.to_path_buf());
    Err(tried)
}

/// A text capture kept beside the vectors (`captures/<name>`): live datagrams of Debian's kcptun and a
/// worked FEC group, taken verbatim from the wire notes the project started from.
pub fn capture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
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
    fn the_builtin_copy_is_found_and_an_override_wins() {
        let b = builtin();
        assert_eq!(locate(None, &b), Ok(b.clone()));
        assert!(locate(None, Path::new("/nonexistent/kcpd/data")).is_err());
        // KCPD_SHARED may name the folder holding vectors/ or the vectors folder itself.
        let parent = std::env::temp_dir().join(format!("kcpd-vectors-test-{}", std::process::id()));
        let v = parent.join("vectors");
        std::fs::create_dir_all(&v).unwrap();
        for f in ["README.md", "crypto.json"] {
            std::fs::write(v.join(f), "{}").unwrap();
        }
        assert_eq!(locate(Some(parent.clone()), &b), Ok(v.clone()));
        assert_eq!(locate(Some(v.clone()), &b), Ok(v.clone()));
        std::fs::remove_dir_all(&parent).unwrap();
    }

    /// Check every file under `d` against `d/SHA256SUMS` (sha256sum format); returns the names listed.
    fn check_sums(d: &Path) -> Vec<String> {
        let sums = std::fs::read_to_string(d.join("SHA256SUMS")).unwrap();
        let mut listed = Vec::new();
        for line in sums.lines() {
            let (sum, name) = line.split_once("  ").unwrap_or_else(|| panic!("bad SHA256SUMS line {line:?}"));
            let name = name.trim_start_matches("./");
            let bytes = std::fs::read(d.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(::hex::encode(sha256(&bytes)), sum, "{name} differs from the generator's output");
            listed.push(name.to_owned());
        }
        // Every file is pinned.
        let mut stack = vec![d.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.file_name() != Some("SHA256SUMS".as_ref()) {
                    let rel = p.strip_prefix(d).unwrap().to_string_lossy().into_owned();
                    assert!(listed.contains(&rel), "{rel} is not in {}/SHA256SUMS", d.display());
                }
            }
        }
        listed
    }

    #[test]
    fn every_vector_file_matches_its_pinned_checksum() {
        // An edited or truncated vector fails here rather than silently weakening the tests that read it.
        let listed = check_sums(&builtin());
        assert!(listed.len() >= 13, "{listed:?}");
        let caps = check_sums(&Path::new(env!("CARGO_MANIFEST_DIR")).join("captures"));
        assert_eq!(caps.len(), 3, "{caps:?}");
        assert!(capture("fec_group_4_2.md").starts_with("## Appendix B"));
        assert!(capture("deb_faketcp.md").starts_with("# Debian kcptun `--tcp` on the wire"));
    }
}
