//! Table-driven DES / 3DES-EDE3 encryption (CFB only ever encrypts blocks), as fast as the classic
//! SP-box implementations (OpenSSL, Go's crypto/des): the S-boxes are merged with the P permutation into
//! eight 64-entry u32 tables, and the initial/final permutations are byte-indexed tables. The RustCrypto
//! `des` crate runs at about half of OpenSSL's 3DES-CFB; it stays the test oracle.

const PC1: [u8; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36, 63, 55,
    47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];
const PC2: [u8; 48] = [
    14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, 41, 52, 31, 37, 47, 55, 30,
    40, 51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32,
];
const ROTATIONS: [u8; 16] = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];
const IP: [u8; 64] = [
    58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, 62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32,
    24, 16, 8, 57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3, 61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47,
    39, 31, 23, 15, 7,
];
const P: [u8; 32] = [
    16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, 2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4,
    25,
];
const S: [[u8; 64]; 8] = [
    [
        14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, 0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8, 4,
        1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, 15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
    ],
    [
        15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, 3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5, 0,
        14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, 13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
    ],
    [
        10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, 13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1, 13,
        6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, 1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
    ],
    [
        7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, 13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9, 10,
        6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, 3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
    ],
    [
        2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, 14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6, 4,
        2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, 11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
    ],
    [
        12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, 10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8, 9,
        14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, 4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
    ],
    [
        4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, 13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6, 1,
        4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, 6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
    ],
    [
        13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, 1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2, 7,
        11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, 2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
    ],
];

/// Bit `pos` (1-based, 1 = most significant) of a `width`-bit value.
const fn bit(v: u64, pos: u8, width: u8) -> u64 {
    (v >> (width - pos)) & 1
}

/// Apply a permutation table (output bit i = input bit table[i]).
const fn permute(v: u64, table: &[u8], in_width: u8) -> u64 {
    let mut out = 0u64;
    let mut i = 0;
    while i < table.len() {
        out = (out << 1) | bit(v, table[i], in_width);
        i += 1;
    }
    out
}

/// S-box `i` followed by P, for each 6-bit input.
const fn build_sp() -> [[u32; 64]; 8] {
    let mut sp = [[0u32; 64]; 8];
    let mut i = 0;
    while i < 8 {
        let mut x = 0;
        while x < 64 {
            let row = ((x >> 4) & 2) | (x & 1);
            let col = (x >> 1) & 15;
            let s = S[i][row * 16 + col] as u64;
            // Place the S-box's 4 output bits at positions 4i+1..4i+4 of the 32-bit word, then permute.
            let word = s << (28 - 4 * i);
            sp[i][x] = permute(word, &P, 32) as u32;
            x += 1;
        }
        i += 1;
    }
    sp
}

/// Byte-indexed tables for a 64-bit permutation: out = OR over bytes b of T[b][input byte b].
const fn build_perm64(table: &[u8; 64]) -> [[u64; 256]; 8] {
    let mut t = [[0u64; 256]; 8];
    let mut b = 0;
    while b < 8 {
        let mut v = 0;
        while v < 256 {
            t[b][v] = permute((v as u64) << (56 - 8 * b), table, 64);
            v += 1;
        }
        b += 1;
    }
    t
}

const fn inverse(p: &[u8; 64]) -> [u8; 64] {
    let mut inv = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        inv[p[i] as usize - 1] = i as u8 + 1;
        i += 1;
    }
    inv
}

static SP: [[u32; 64]; 8] = build_sp();
static IP_T: [[u64; 256]; 8] = build_perm64(&IP);
static FP_T: [[u64; 256]; 8] = build_perm64(&inverse(&IP));

#[inline(always)]
fn perm64(t: &[[u64; 256]; 8], v: u64) -> u64 {
    let b = v.to_be_bytes();
    t[0][b[0] as usize]
        | t[1][b[1] as usize]
        | t[2][b[2] as usize]
        | t[3][b[3] as usize]
        | t[4][b[4] as usize]
        | t[5][b[5] as usize]
        | t[6][b[6] as usize]
        | t[7][b[7] as usize]
}

/// 16 round keys, each as eight 6-bit chunks.
type Schedule = [[u8; 8]; 16];

fn schedule(key: &[u8; 8]) -> Schedule {
    let k = permute(u64::from_be_bytes(*key), &PC1, 64);
    let (mut c, mut d) = ((k >> 28) as u32 & 0x0fff_ffff, k as u32 & 0x0fff_ffff);
    let mut ks = [[0u8; 8]; 16];
    for (round, &rot) in ROTATIONS.iter().enumerate() {
        c = ((c << rot) | (c >> (28 - rot))) & 0x0fff_ffff;
        d = ((d << rot) | (d >> (28 - rot))) & 0x0fff_ffff;
        let k48 = permute(((c as u64) << 28) | d as u64, &PC2, 56);
        for (i, chunk) in ks[round].iter_mut().enumerate() {
            *chunk = ((k48 >> (42 - 6 * i)) & 0x3f) as u8;
        }
    }
    ks
}

#[inline(always)]
fn f(r: u32, k: &[u8; 8]) -> u32 {
    // E expansion: chunk i is bits 4i..4i+5 (1-based, bit 0 = bit 32) of R.
    let mut out = 0;
    for i in 0..8 {
        let chunk = (r.rotate_left((4 * i as u32 + 31) % 32) >> 26) as u8;
        out ^= SP[i][(chunk ^ k[i]) as usize];
    }
    out
}

#[inline(always)]
fn rounds(mut l: u32, mut r: u32, ks: &Schedule, decrypt: bool) -> (u32, u32) {
    for i in 0..16 {
        let k = if decrypt { &ks[15 - i] } else { &ks[i] };
        let t = l ^ f(r, k);
        l = r;
        r = t;
    }
    // Undo the last swap.
    (r, l)
}

/// 3DES-EDE3 (Go `des.NewTripleDESCipher`): `E_K3(D_K2(E_K1(P)))`.
#[derive(Clone)]
pub(crate) struct TripleDes {
    ks: [Schedule; 3],
}

impl TripleDes {
    pub fn new(key: &[u8; 24]) -> Box<Self> {
        let k = |i: usize| schedule(key[8 * i..8 * i + 8].try_into().expect("8-byte slice"));
        Box::new(TripleDes { ks: [k(0), k(1), k(2)] })
    }

    #[inline]
    pub fn encrypt_block(&self, b: &mut [u8; 8]) {
        // The inner FP/IP pairs cancel: one IP, three Feistel networks, one FP.
        let v = perm64(&IP_T, u64::from_be_bytes(*b));
        let (l, r) = ((v >> 32) as u32, v as u32);
        let (l, r) = rounds(l, r, &self.ks[0], false);
        let (l, r) = rounds(l, r, &self.ks[1], true);
        let (l, r) = rounds(l, r, &self.ks[2], false);
        *b = perm64(&FP_T, ((l as u64) << 32) | r as u64).to_be_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockEncrypt, KeyInit};

    /// FIPS 46 worked example: key 133457799BBCDFF1, plaintext 0123456789ABCDEF -> 85E813540F0AB405.
    #[test]
    fn single_des_known_answer() {
        let key = 0x1334_5779_9BBC_DFF1u64.to_be_bytes();
        let k3: [u8; 24] = [key, key, key].concat().try_into().unwrap();
        // EDE with K1 = K2 = K3 is single DES.
        let mut b = 0x0123_4567_89AB_CDEFu64.to_be_bytes();
        TripleDes::new(&k3).encrypt_block(&mut b);
        assert_eq!(u64::from_be_bytes(b), 0x85E8_1354_0F0A_B405);
    }

    #[test]
    fn agrees_with_the_rustcrypto_oracle() {
        for seed in 0u8..50 {
            let key: [u8; 24] =
                core::array::from_fn(|i| (i as u8).wrapping_mul(73).wrapping_add(seed.wrapping_mul(11)));
            let ours = TripleDes::new(&key);
            let oracle = des::TdesEde3::new_from_slice(&key).unwrap();
            let mut a: [u8; 8] = core::array::from_fn(|i| (i as u8).wrapping_mul(seed) ^ 0x5a);
            let mut b = a.into();
            ours.encrypt_block(&mut a);
            oracle.encrypt_block(&mut b);
            assert_eq!(a[..], b[..], "seed {seed}");
        }
    }
}
