//! Key derivation (spec §2.1, §2.4).

/// kcptun's PBKDF2 salt (`SALT` in client/main.go and server/main.go).
pub const SALT: &[u8] = b"kcp-go";
/// kcptun's PBKDF2 iteration count.
pub const ITERATIONS: u32 = 4096;
/// kcptun's default `--key` (sic).
pub const DEFAULT_KEY: &str = "it's a secrect";

/// `PBKDF2-HMAC-SHA1(password, "kcp-go", 4096, 32)`: the 32-byte `pass` every cipher slices its key from.
pub fn derive_key(password: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, SALT, ITERATIONS, &mut out);
    out
}

/// Length of the `xor` method's table (kcp-go `mtuLimit`).
pub const XOR_TABLE_LEN: usize = 1500;
const XOR_SALT: &[u8] = b"sH3CIVoF#rWLtJo6";
const XOR_ITERATIONS: u32 = 32;

/// kcp-go `NewSimpleXORBlockCrypt`: `PBKDF2-HMAC-SHA1(pass, "sH3CIVoF#rWLtJo6", 32, 1500)`, keyed with the
/// already derived 32-byte `pass`.
pub fn xor_table(pass: &[u8]) -> Box<[u8; XOR_TABLE_LEN]> {
    let mut t = Box::new([0u8; XOR_TABLE_LEN]);
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(pass, XOR_SALT, XOR_ITERATIONS, &mut t[..]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_section_2_1_vectors() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&derive_key(b"test")), "fc0327c66699e5622be3b108e336991375ba429750939d57003dc89d9fed8859");
        assert_eq!(
            hex(&derive_key(DEFAULT_KEY.as_bytes())),
            "25d7d7bd51050742d8d791f2b653c6c8b2366b7e25a124cf7a2e12eaf4ffa444"
        );
        assert_eq!(
            hex(&xor_table(&derive_key(b"test"))[..32]),
            "ab86cd9bea0b76fcd56f363040c5aab5ccea1bba64fc691d068d560ea38f3579"
        );
    }
}
