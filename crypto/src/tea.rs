//! TEA and XTEA as Go's x/crypto implements them (spec §2.5): big-endian words, and for TEA kcp-go's
//! non-standard 16 rounds (`tea.NewCipherWithRounds(key, 16)` = 8 cycles of the classic double round).
//! No crate does 8-cycle big-endian TEA, so both are written here (they are a dozen lines each).

const DELTA: u32 = 0x9E37_79B9;

fn be_words(key: &[u8; 16]) -> [u32; 4] {
    core::array::from_fn(|i| u32::from_be_bytes(key[i * 4..i * 4 + 4].try_into().expect("4-byte slice")))
}

/// TEA with kcp-go's 16 rounds.
#[derive(Clone)]
pub(crate) struct Tea {
    k: [u32; 4],
}

impl Tea {
    /// Go's `tea.NewCipherWithRounds(key, 16)`.
    pub const ROUNDS: usize = 16;

    pub fn new(key: &[u8; 16]) -> Self {
        Tea { k: be_words(key) }
    }

    #[inline]
    pub fn encrypt_block(&self, b: &mut [u8; 8]) {
        let [k0, k1, k2, k3] = self.k;
        let mut v0 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut v1 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let mut sum = 0u32;
        for _ in 0..Self::ROUNDS / 2 {
            sum = sum.wrapping_add(DELTA);
            v0 = v0.wrapping_add((v1 << 4).wrapping_add(k0) ^ v1.wrapping_add(sum) ^ (v1 >> 5).wrapping_add(k1));
            v1 = v1.wrapping_add((v0 << 4).wrapping_add(k2) ^ v0.wrapping_add(sum) ^ (v0 >> 5).wrapping_add(k3));
        }
        b[..4].copy_from_slice(&v0.to_be_bytes());
        b[4..].copy_from_slice(&v1.to_be_bytes());
    }
}

/// XTEA, 64 rounds, with Go's precomputed round-key table.
#[derive(Clone)]
pub(crate) struct Xtea {
    table: [u32; 64],
}

impl Xtea {
    pub fn new(key: &[u8; 16]) -> Self {
        let k = be_words(key);
        let mut table = [0u32; 64];
        let mut sum = 0u32;
        for pair in table.chunks_exact_mut(2) {
            pair[0] = sum.wrapping_add(k[(sum & 3) as usize]);
            sum = sum.wrapping_add(DELTA);
            pair[1] = sum.wrapping_add(k[((sum >> 11) & 3) as usize]);
        }
        Xtea { table }
    }

    #[inline]
    pub fn encrypt_block(&self, b: &mut [u8; 8]) {
        let mut v0 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut v1 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        for pair in self.table.chunks_exact(2) {
            v0 = v0.wrapping_add((((v1 << 4) ^ (v1 >> 5)).wrapping_add(v1)) ^ pair[0]);
            v1 = v1.wrapping_add((((v0 << 4) ^ (v0 >> 5)).wrapping_add(v0)) ^ pair[1]);
        }
        b[..4].copy_from_slice(&v0.to_be_bytes());
        b[4..].copy_from_slice(&v1.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cfb::INITIAL_VECTOR;

    fn pass16() -> [u8; 16] {
        crate::derive_key(b"test")[..16].try_into().unwrap()
    }

    /// spec §9.2: E(IV[:8]) with pass("test")[:16].
    #[test]
    fn spec_block_vectors() {
        let mut b: [u8; 8] = INITIAL_VECTOR[..8].try_into().unwrap();
        Tea::new(&pass16()).encrypt_block(&mut b);
        assert_eq!(b, [0xdc, 0x62, 0x21, 0x38, 0x4a, 0xae, 0x0e, 0x58]);
        let mut b: [u8; 8] = INITIAL_VECTOR[..8].try_into().unwrap();
        Xtea::new(&pass16()).encrypt_block(&mut b);
        assert_eq!(b, [0x59, 0x81, 0x2e, 0xf1, 0xa3, 0x63, 0x24, 0x93]);
    }

    /// The published XTEA test vector (all-zero key and block, 32 cycles).
    #[test]
    fn xtea_reference_vector() {
        let mut b = [0u8; 8];
        Xtea::new(&[0; 16]).encrypt_block(&mut b);
        assert_eq!(b, [0xde, 0xe9, 0xd4, 0xd8, 0xf7, 0x13, 0x1e, 0xd9]);
    }
}
