//! Per-packet nonces: a ChaCha12 CSPRNG seeded once from the OS, so a packet costs no syscall.
//!
//! The receiver never checks a nonce (spec §1.4); it only has to be unpredictable, because with the fixed
//! CFB IV it is what randomises every ciphertext block after it. For AES-128-GCM it must not repeat under
//! one key: 96 random bits, as kcp-go does. The generator reseeds itself from the OS every 2^24 fills
//! (kcp-go NEW `fillRand` does the same), which bounds the damage should its state ever leak.

use rand_chacha::ChaCha12Rng;
use rand_core::{OsRng, RngCore, SeedableRng};

/// Fills per-packet nonces. One per shard/thread: it is `Send` but not shared.
pub struct NonceGen {
    rng: ChaCha12Rng,
    fills: u32,
    reseed: bool,
}

const RESEED_EVERY: u32 = 1 << 24;

impl NonceGen {
    /// A generator seeded from the operating system.
    pub fn new() -> Self {
        NonceGen { rng: ChaCha12Rng::from_rng(OsRng).expect("OS random source"), fills: 0, reseed: true }
    }

    /// A deterministic generator for tests and benchmarks; never reseeds. Do not use on the wire.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        NonceGen { rng: ChaCha12Rng::from_seed(seed), fills: 0, reseed: false }
    }

    /// Fill `out` with fresh random bytes.
    #[inline]
    pub fn fill(&mut self, out: &mut [u8]) {
        self.fills = self.fills.wrapping_add(1);
        if self.reseed && self.fills == RESEED_EVERY {
            self.fills = 0;
            // An OS failure here keeps the current (still unpredictable) stream rather than failing a packet.
            if let Ok(r) = ChaCha12Rng::from_rng(OsRng) {
                self.rng = r;
            }
        }
        self.rng.fill_bytes(out);
    }
}

impl Default for NonceGen {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for NonceGen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceGen").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_seeded_generators_differ_and_do_not_repeat() {
        let (mut a, mut b) = (NonceGen::new(), NonceGen::new());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
            a.fill(&mut x);
            b.fill(&mut y);
            assert!(seen.insert(x) && seen.insert(y));
        }
    }
}
