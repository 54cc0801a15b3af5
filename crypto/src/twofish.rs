//! Table-driven Twofish-256 (encryption only: CFB never decrypts blocks), laid out as Go's
//! x/crypto/twofish: the key schedule folds the key-dependent S-boxes and the MDS matrix into four
//! 256-entry u32 tables, so a round is 8 lookups. The RustCrypto `twofish` crate recomputes the S-boxes
//! per block and runs ~50x slower, which would make `--crypt twofish` a bottleneck; it stays a test oracle.

/// q0 and q1 permutations, built from their 4-bit t-tables (Twofish paper §4.3.5).
const Q: [[u8; 256]; 2] = [build_q(&Q0_T), build_q(&Q1_T)];

const Q0_T: [[u8; 16]; 4] = [
    [8, 1, 7, 13, 6, 15, 3, 2, 0, 11, 5, 9, 14, 12, 10, 4],
    [14, 12, 11, 8, 1, 2, 3, 5, 15, 4, 10, 6, 7, 0, 9, 13],
    [11, 10, 5, 14, 6, 13, 9, 0, 12, 8, 15, 3, 2, 4, 7, 1],
    [13, 7, 15, 4, 1, 2, 6, 14, 9, 11, 3, 0, 8, 5, 12, 10],
];
const Q1_T: [[u8; 16]; 4] = [
    [2, 8, 11, 13, 15, 7, 6, 14, 3, 1, 9, 4, 0, 10, 12, 5],
    [1, 14, 2, 11, 4, 12, 3, 7, 6, 13, 10, 5, 15, 9, 0, 8],
    [4, 12, 7, 5, 1, 6, 9, 10, 0, 14, 13, 8, 2, 11, 3, 15],
    [11, 9, 5, 1, 12, 3, 13, 14, 6, 4, 7, 15, 2, 0, 8, 10],
];

const fn build_q(t: &[[u8; 16]; 4]) -> [u8; 256] {
    let mut q = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let (a0, b0) = ((x >> 4) as u8, (x & 15) as u8);
        let a1 = a0 ^ b0;
        let b1 = (a0 ^ ror4(b0) ^ (a0 << 3)) & 15;
        let (a2, b2) = (t[0][a1 as usize], t[1][b1 as usize]);
        let a3 = a2 ^ b2;
        let b3 = (a2 ^ ror4(b2) ^ (a2 << 3)) & 15;
        let (a4, b4) = (t[2][a3 as usize], t[3][b3 as usize]);
        q[x] = (b4 << 4) | a4;
        x += 1;
    }
    q
}

const fn ror4(x: u8) -> u8 {
    ((x >> 1) | (x << 3)) & 15
}

const MDS_POLY: u32 = 0x169;
const RS_POLY: u32 = 0x14d;
const RS: [[u8; 8]; 4] = [
    [0x01, 0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E],
    [0xA4, 0x56, 0x82, 0xF3, 0x1E, 0xC6, 0x68, 0xE5],
    [0x02, 0xA1, 0xFC, 0xC1, 0x47, 0xAE, 0x3D, 0x19],
    [0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E, 0x03],
];

fn gf_mul(mut a: u8, b: u8, poly: u32) -> u8 {
    let mut b = b as u32;
    let mut r = 0u32;
    while a != 0 {
        if a & 1 != 0 {
            r ^= b;
        }
        a >>= 1;
        b <<= 1;
        if b & 0x100 != 0 {
            b ^= poly;
        }
    }
    r as u8
}

/// Column `col` of the MDS matrix times `x`, packed little-endian.
fn mds_column(x: u8, col: usize) -> u32 {
    let (m1, m5b, mef) = (x as u32, gf_mul(x, 0x5B, MDS_POLY) as u32, gf_mul(x, 0xEF, MDS_POLY) as u32);
    match col {
        0 => m1 | m5b << 8 | mef << 16 | mef << 24,
        1 => mef | mef << 8 | m5b << 16 | m1 << 24,
        2 => m5b | mef << 8 | m1 << 16 | mef << 24,
        _ => m5b | m1 << 8 | mef << 16 | m5b << 24,
    }
}

/// The h function for a 256-bit key (Twofish paper §4.3.2); `odd` selects Mo instead of Me.
fn h(x: u8, key: &[u8; 32], odd: usize) -> u32 {
    let (q0, q1) = (&Q[0], &Q[1]);
    let k = |word: usize, i: usize| key[4 * (word + odd) + i];
    let mut y = [x; 4];
    y[0] = q1[y[0] as usize] ^ k(6, 0);
    y[1] = q0[y[1] as usize] ^ k(6, 1);
    y[2] = q0[y[2] as usize] ^ k(6, 2);
    y[3] = q1[y[3] as usize] ^ k(6, 3);
    y[0] = q1[y[0] as usize] ^ k(4, 0);
    y[1] = q1[y[1] as usize] ^ k(4, 1);
    y[2] = q0[y[2] as usize] ^ k(4, 2);
    y[3] = q0[y[3] as usize] ^ k(4, 3);
    y[0] = q1[(q0[(q0[y[0] as usize] ^ k(2, 0)) as usize] ^ k(0, 0)) as usize];
    y[1] = q0[(q0[(q1[y[1] as usize] ^ k(2, 1)) as usize] ^ k(0, 1)) as usize];
    y[2] = q1[(q1[(q0[y[2] as usize] ^ k(2, 2)) as usize] ^ k(0, 2)) as usize];
    y[3] = q0[(q1[(q1[y[3] as usize] ^ k(2, 3)) as usize] ^ k(0, 3)) as usize];
    (0..4).fold(0, |acc, i| acc ^ mds_column(y[i], i))
}

/// Twofish with a 256-bit key.
#[derive(Clone)]
pub(crate) struct Twofish {
    s: [[u32; 256]; 4],
    k: [u32; 40],
}

impl Twofish {
    pub fn new(key: &[u8; 32]) -> Box<Self> {
        // S words = RS · key bytes, 8 at a time.
        let mut sv = [0u8; 16];
        for i in 0..4 {
            for (j, row) in RS.iter().enumerate() {
                for (c, &r) in row.iter().enumerate() {
                    sv[4 * i + j] ^= gf_mul(key[8 * i + c], r, RS_POLY);
                }
            }
        }
        let mut t = Box::new(Twofish { s: [[0; 256]; 4], k: [0; 40] });
        for i in 0..20u8 {
            let a = h(2 * i, key, 0);
            let b = h(2 * i + 1, key, 1).rotate_left(8);
            t.k[2 * i as usize] = a.wrapping_add(b);
            t.k[2 * i as usize + 1] = a.wrapping_add(b.wrapping_mul(2)).rotate_left(9);
        }
        let (q0, q1) = (&Q[0], &Q[1]);
        let q = |t: &[u8; 256], x: u8| t[x as usize];
        for i in 0..256 {
            let x = i as u8;
            t.s[0][i] = mds_column(q(q1, q(q0, q(q0, q(q1, q(q1, x) ^ sv[0]) ^ sv[4]) ^ sv[8]) ^ sv[12]), 0);
            t.s[1][i] = mds_column(q(q0, q(q0, q(q1, q(q1, q(q0, x) ^ sv[1]) ^ sv[5]) ^ sv[9]) ^ sv[13]), 1);
            t.s[2][i] = mds_column(q(q1, q(q1, q(q0, q(q0, q(q0, x) ^ sv[2]) ^ sv[6]) ^ sv[10]) ^ sv[14]), 2);
            t.s[3][i] = mds_column(q(q0, q(q1, q(q1, q(q0, q(q1, x) ^ sv[3]) ^ sv[7]) ^ sv[11]) ^ sv[15]), 3);
        }
        t
    }

    #[inline(always)]
    fn g0(&self, x: u32) -> u32 {
        let s = &self.s;
        s[0][x as u8 as usize]
            ^ s[1][(x >> 8) as u8 as usize]
            ^ s[2][(x >> 16) as u8 as usize]
            ^ s[3][(x >> 24) as usize]
    }

    #[inline(always)]
    fn g1(&self, x: u32) -> u32 {
        self.g0(x.rotate_left(8))
    }

    #[inline]
    pub fn encrypt_block(&self, b: &mut [u8; 16]) {
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let k = &self.k;
        let (mut a, mut bb, mut c, mut d) = (w(0) ^ k[0], w(1) ^ k[1], w(2) ^ k[2], w(3) ^ k[3]);
        for r in 0..8 {
            let rk = &k[8 + 4 * r..12 + 4 * r];
            let t2 = self.g1(bb);
            let t1 = self.g0(a).wrapping_add(t2);
            c = (c ^ t1.wrapping_add(rk[0])).rotate_right(1);
            d = d.rotate_left(1) ^ t2.wrapping_add(t1).wrapping_add(rk[1]);
            let t2 = self.g1(d);
            let t1 = self.g0(c).wrapping_add(t2);
            a = (a ^ t1.wrapping_add(rk[2])).rotate_right(1);
            bb = bb.rotate_left(1) ^ t2.wrapping_add(t1).wrapping_add(rk[3]);
        }
        for (i, v) in [c ^ k[4], d ^ k[5], a ^ k[6], bb ^ k[7]].into_iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockEncrypt, KeyInit};

    /// Twofish paper appendix: 256-bit all-zero key, all-zero block.
    #[test]
    fn paper_vector() {
        let t = Twofish::new(&[0; 32]);
        let mut b = [0u8; 16];
        t.encrypt_block(&mut b);
        let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
        assert_eq!(hex, "57FF739D4DC92C1BD7FC01700CC8216F");
    }

    #[test]
    fn agrees_with_the_rustcrypto_oracle() {
        for seed in 0u8..20 {
            let key: [u8; 32] =
                core::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed.wrapping_mul(97)));
            let ours = Twofish::new(&key);
            let oracle = twofish::Twofish::new_from_slice(&key).unwrap();
            let mut a: [u8; 16] = core::array::from_fn(|i| (i as u8) ^ seed);
            let mut b = a.into();
            ours.encrypt_block(&mut a);
            oracle.encrypt_block(&mut b);
            assert_eq!(a[..], b[..]);
        }
    }
}
