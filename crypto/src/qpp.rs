//! Quantum Permutation Pads as kcptun NEW uses them (`--QPP`, `--QPPCount`; xtaci/qpp v1.1.23–1.1.25,
//! spec §7.3, `vectors/new/qpp.json`): a byte-wise substitution of each smux stream's payload through one
//! of `count` key-derived 256-byte permutations, chosen and whitened by a xoshiro256** stream.
//!
//! The pads are built once per process from the raw `--key` (not the PBKDF2 `pass`); every stream and
//! direction starts its own PRNG from the same key.

use aes::Aes256;
use cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SHUFFLE_SALT: &[u8] = b"___QUANTUM_PERMUTATION_PAD_SHUFFLE_SALT___";
const PRNG_SALT: &[u8] = b"___QUANTUM_PERMUTATION_PAD_PRNG_SALT___";
const CHUNK_DERIVE_SALT: &[u8] = b"___QUANTUM_PERMUTATION_PAD_SEED_DERIVE___";
const PM_SELECTOR: &[u8] = b"PERMUTATION_MATRIX_SELECTOR";
const PBKDF2_LOOPS: u32 = 128;
const CHUNK_DERIVE_LOOPS: u32 = 1024;
/// ceil(log2(256!) / 8): bytes of seed that can pick any permutation.
pub const MINIMUM_SEED_LENGTH: usize = 211;
/// kcptun warns below this many pads.
pub const MINIMUM_PADS: u16 = 7;
const CHUNKS: usize = MINIMUM_SEED_LENGTH.div_ceil(32);

fn pbkdf2(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, &mut out);
    out
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// The pads of one key.
#[derive(Clone)]
pub struct Qpp {
    pads: Vec<[u8; 256]>,
    rpads: Vec<[u8; 256]>,
}

impl Qpp {
    /// qpp `NewQPP(seed, count)`; a `count` of 0 is taken as 1.
    pub fn new(seed: &[u8], count: u16) -> Self {
        let count = count.max(1);
        let expanded;
        let seed = if seed.len() < 32 {
            expanded = pbkdf2(seed, CHUNK_DERIVE_SALT, PBKDF2_LOOPS);
            &expanded[..]
        } else {
            seed
        };
        let chunks: Vec<[u8; 32]> = (0..CHUNKS)
            .map(|i| {
                let raw: [u8; 32] = core::array::from_fn(|j| seed[(32 * i + j) % seed.len()]);
                pbkdf2(&raw, CHUNK_DERIVE_SALT, CHUNK_DERIVE_LOOPS)
            })
            .collect();
        let blocks: Vec<Aes256> =
            chunks.iter().map(|c| Aes256::new(&pbkdf2(c, SHUFFLE_SALT, PBKDF2_LOOPS).into())).collect();
        let mut pads = Vec::with_capacity(count as usize);
        let mut rpads = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let mut pad: [u8; 256] = core::array::from_fn(|x| x as u8);
            let mut sum = hmac_sha256(&chunks[i % CHUNKS], format!("QPP_{i:b}").as_bytes());
            for x in (1..256usize).rev() {
                for b in &blocks {
                    let (lo, hi) = sum.split_at_mut(16);
                    b.encrypt_block(lo.into());
                    b.encrypt_block(hi.into());
                }
                // The 256-bit big-endian integer mod (x + 1).
                let m = x as u32 + 1;
                let j = sum.iter().fold(0u32, |r, &byte| (r * 256 + u32::from(byte)) % m) as usize;
                pad.swap(x, j);
            }
            let mut rpad = [0u8; 256];
            for (k, &v) in pad.iter().enumerate() {
                rpad[v as usize] = k as u8;
            }
            pads.push(pad);
            rpads.push(rpad);
        }
        Qpp { pads, rpads }
    }

    /// Number of pads (`--QPPCount`, raised to 1 if 0 was asked for).
    pub fn count(&self) -> usize {
        self.pads.len()
    }

    /// Pad `i`, a permutation of 0..=255: a plaintext byte `b` becomes `pad[b ^ k]`, `k` the PRNG's
    /// whitening byte. Panics if `i >= count()`.
    pub fn pad(&self, i: usize) -> &[u8; 256] {
        &self.pads[i]
    }

    /// The inverse of [`pad`](Self::pad)`(i)`, used by [`decrypt`](Self::decrypt). Panics if `i >= count()`.
    pub fn rpad(&self, i: usize) -> &[u8; 256] {
        &self.rpads[i]
    }

    /// qpp `EncryptWithPRNG`, in place.
    pub fn encrypt(&self, prng: &mut Prng, data: &mut [u8]) {
        for b in data {
            let (pad, k) = prng.step(self.pads.len());
            *b = self.pads[pad][(*b ^ k) as usize];
        }
    }

    /// qpp `DecryptWithPRNG`, in place.
    pub fn decrypt(&self, prng: &mut Prng, data: &mut [u8]) {
        for b in data {
            let (pad, k) = prng.step(self.pads.len());
            *b = self.rpads[pad][*b as usize] ^ k;
        }
    }
}

impl std::fmt::Debug for Qpp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qpp").field("pads", &self.pads.len()).finish_non_exhaustive()
    }
}

/// qpp `CreatePRNG`: xoshiro256** keyed from the seed, with the byte position in the current word.
#[derive(Clone, Debug)]
pub struct Prng {
    s: [u64; 4],
    word: u64,
    count: u8,
}

impl Prng {
    /// qpp `CreatePRNG(seed)`: kcptun seeds it with the raw `--key`, one generator per stream and direction,
    /// so both ends stay in step byte for byte.
    pub fn new(seed: &[u8]) -> Self {
        let h = hmac_sha256(seed, PM_SELECTOR);
        let k = pbkdf2(&h, PRNG_SALT, PBKDF2_LOOPS);
        let s = core::array::from_fn(|i| u64::from_le_bytes(k[8 * i..8 * i + 8].try_into().expect("8 bytes")));
        let mut p = Prng { s, word: 0, count: 0 };
        p.word = p.next_u64();
        p
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// The pad and whitening byte for the next stream byte.
    #[inline]
    fn step(&mut self, pads: usize) -> (usize, u8) {
        let pad = (self.word as u16) as usize % pads;
        let k = (self.word >> (8 * self.count)) as u8;
        self.count += 1;
        if self.count == 8 {
            self.count = 0;
            self.word = self.next_u64();
        }
        (pad, k)
    }

    /// Advance past `n` stream bytes.
    pub fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.step(1);
        }
    }

    /// The current 64-bit word (qpp `seed64`) and byte position in it.
    pub fn state(&self) -> (u64, u8) {
        (self.word, self.count)
    }
}

/// kcptun's start-up warnings for `--QPP` (it runs anyway).
pub fn warnings(key: &[u8], count: u16) -> Vec<String> {
    let mut w = Vec::new();
    if key.len() < MINIMUM_SEED_LENGTH {
        w.push(format!(
            "QPP: a key of {} bytes is shorter than the {MINIMUM_SEED_LENGTH} bytes needed to reach every permutation",
            key.len()
        ));
    }
    if count < MINIMUM_PADS {
        w.push(format!("QPP: {count} pads is fewer than the recommended minimum of {MINIMUM_PADS}"));
    }
    if count.is_multiple_of(2) {
        w.push(format!("QPP: a pad count of {count} is not coprime with 8; choose an odd count"));
    }
    w
}
