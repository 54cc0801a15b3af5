//! GF(2^8) multiply-accumulate kernels over byte slices, selected at run time.
//!
//! Two operations carry all the Reed–Solomon work:
//! - [`dot`]: `out_j = Σ_i c_ji · in_i` for a block of coefficients (encode, reconstruct);
//! - [`mul_add`]: `out_j ^= c_j · in` for one input (the FEC encoder folds each data shard into the parity
//!   as it is sent, so shards are never copied or kept).
//!
//! Backends, best first: GFNI (`gf2p8affineqb`, one instruction per 64/32-byte multiply) on AVX-512 or
//! AVX2; the nibble-table `pshufb` multiply on AVX-512BW, AVX2 or SSSE3; and a 64 KiB table scalar loop
//! that also finishes every tail. All produce identical bytes; the tests run each against the scalar one.

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::gf;
use std::mem::size_of;

/// A kernel implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Portable 64 KiB multiplication-table loop; runs everywhere and finishes every SIMD kernel's tail.
    Scalar,
    /// Nibble-table `pshufb` multiply, 16 bytes at a time (needs SSSE3).
    #[cfg(target_arch = "x86_64")]
    Ssse3,
    /// Nibble-table `vpshufb` multiply, 32 bytes at a time (needs AVX2).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Nibble-table `vpshufb` multiply, 64 bytes at a time (needs AVX-512F and AVX-512BW).
    #[cfg(target_arch = "x86_64")]
    Avx512Bw,
    /// `gf2p8affineqb` multiply, 32 bytes per instruction (needs GFNI and AVX2); [`best`](Self::best)
    /// when available.
    #[cfg(target_arch = "x86_64")]
    GfniAvx2,
    /// `gf2p8affineqb` multiply, 64 bytes per instruction (needs GFNI, AVX-512F and AVX-512BW); ranked
    /// after [`GfniAvx2`](Self::GfniAvx2) by [`best`](Self::best), kept for tests and benchmarks.
    #[cfg(target_arch = "x86_64")]
    GfniAvx512,
}

impl Backend {
    /// Every backend this build knows, preferred first (whether this CPU runs it or not: see
    /// [`is_available`](Self::is_available)).
    ///
    /// 256-bit first: as fast or faster where AVX-512 is double-pumped (Zen 4: gfni-avx2 24 GB/s vs
    /// gfni-avx512 22 GB/s encoding 10+3, `kcpd-bench fec`) and no frequency licence to pay on older Intel
    /// parts. The 512-bit kernels stay available to tests and benchmarks.
    #[cfg(target_arch = "x86_64")]
    pub const ALL: &'static [Backend] =
        &[Backend::GfniAvx2, Backend::GfniAvx512, Backend::Avx2, Backend::Avx512Bw, Backend::Ssse3, Backend::Scalar];
    /// Every backend this build knows, preferred first.
    #[cfg(not(target_arch = "x86_64"))]
    pub const ALL: &'static [Backend] = &[Backend::Scalar];

    /// Whether this CPU has every instruction-set extension the backend's kernels are compiled for (the
    /// `target_feature`s of `kernel/x86.rs`), detected at run time. Running a backend it lacks would be
    /// undefined behaviour, so [`ReedSolomon::with_backend`](crate::ReedSolomon::with_backend) refuses one.
    pub fn is_available(self) -> bool {
        #[cfg(test)]
        if self != Backend::Scalar && tests::SIMD_HIDDEN.get() {
            return false;
        }
        self.detected()
    }

    fn detected(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Backend::Scalar => true,
                Backend::Ssse3 => has!("ssse3"),
                Backend::Avx2 => has!("avx2"),
                Backend::Avx512Bw => has!("avx512f") && has!("avx512bw"),
                Backend::GfniAvx2 => has!("gfni") && has!("avx2"),
                Backend::GfniAvx512 => has!("gfni") && has!("avx512f") && has!("avx512bw"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        true
    }

    /// Every backend this CPU can run, preferred first.
    pub fn available() -> Vec<Backend> {
        Self::ALL.iter().copied().filter(|b| b.is_available()).collect()
    }

    /// The fastest backend this CPU runs (detected once).
    pub fn best() -> Backend {
        static BEST: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::ALL.iter().copied().find(|b| b.detected()).unwrap_or(Backend::Scalar))
    }

    /// Short lower-case label used by [`Display`](std::fmt::Display), logs and benchmark output, e.g.
    /// `"gfni-avx2"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Backend::Ssse3 => "ssse3",
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Bw => "avx512bw",
            #[cfg(target_arch = "x86_64")]
            Backend::GfniAvx2 => "gfni-avx2",
            #[cfg(target_arch = "x86_64")]
            Backend::GfniAvx512 => "gfni-avx512",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything any backend needs to multiply by one constant, precomputed once per matrix.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Coef {
    /// `c · x` for x in 0..16 (low-nibble table).
    pub lo: [u8; 16],
    /// `c · (x << 4)` for x in 0..16 (high-nibble table).
    pub hi: [u8; 16],
    /// The GF(2)-linear map `x ↦ c·x` as a GF2P8AFFINEQB matrix: byte `7-i` holds output bit `i`.
    pub affine: u64,
    pub c: u8,
}

impl Coef {
    pub fn new(c: u8) -> Self {
        let mut lo = [0u8; 16];
        let mut hi = [0u8; 16];
        for x in 0..16u8 {
            lo[x as usize] = gf::mul(c, x);
            hi[x as usize] = gf::mul(c, x << 4);
        }
        let mut affine = 0u64;
        for i in 0..8 {
            let mut row = 0u8;
            for j in 0..8 {
                row |= ((gf::mul(c, 1 << j) >> i) & 1) << j;
            }
            affine |= (row as u64) << (8 * (7 - i));
        }
        Coef { lo, hi, affine, c }
    }
}

/// A rows × cols block of coefficients, row-major.
#[derive(Clone, Debug)]
pub(crate) struct Coefs {
    cols: usize,
    t: Vec<Coef>,
}

impl Coefs {
    pub fn new(rows: &[&[u8]]) -> Self {
        let cols = rows.first().map_or(0, |r| r.len());
        let t = rows
            .iter()
            .flat_map(|r| {
                assert_eq!(r.len(), cols);
                r.iter().map(|&c| Coef::new(c))
            })
            .collect();
        Coefs { cols, t }
    }

    pub fn rows(&self) -> usize {
        self.t.len().checked_div(self.cols).unwrap_or(0)
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Heap bytes of the coefficient tables.
    pub fn bytes(&self) -> usize {
        self.t.len() * size_of::<Coef>()
    }

    #[inline(always)]
    pub fn get(&self, row: usize, col: usize) -> &Coef {
        &self.t[row * self.cols + col]
    }
}

/// `outputs[j] = Σ_i coefs[j][i] · inputs[i]` over `outputs[j].len()` bytes (all outputs the same length,
/// every input at least that long).
pub(crate) fn dot(backend: Backend, coefs: &Coefs, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
    assert_eq!(coefs.cols(), inputs.len());
    assert_eq!(coefs.rows(), outputs.len());
    debug_assert!(backend.detected(), "{backend} kernels on a CPU without them");
    let Some(len) = outputs.first().map(|o| o.len()) else { return };
    assert!(outputs.iter().all(|o| o.len() == len), "outputs differ in length");
    assert!(inputs.iter().all(|i| i.len() >= len), "an input is shorter than the outputs");
    let done = match backend {
        Backend::Scalar => 0,
        // SAFETY: every caller passes the backend of a `ReedSolomon`, which refuses one whose CPU features
        // were not detected (`Backend::is_available`); the lengths were checked above and the SIMD code
        // reads and writes only within `len`.
        #[cfg(target_arch = "x86_64")]
        b => unsafe { x86::dot(b, coefs, inputs, outputs, len) },
    };
    scalar::dot(coefs, inputs, outputs, done, len);
}

/// `outputs[j][..input.len()] ^= coefs[j][col] · input` (outputs may be longer than the input: the
/// input counts as zero-padded).
pub(crate) fn mul_add(backend: Backend, coefs: &Coefs, col: usize, input: &[u8], outputs: &mut [&mut [u8]]) {
    assert!(col < coefs.cols());
    assert_eq!(coefs.rows(), outputs.len());
    let len = input.len();
    assert!(outputs.iter().all(|o| o.len() >= len), "an output is shorter than the input");
    debug_assert!(backend.detected(), "{backend} kernels on a CPU without them");
    let done = match backend {
        Backend::Scalar => 0,
        // SAFETY: as in `dot`.
        #[cfg(target_arch = "x86_64")]
        b => unsafe { x86::mul_add(b, coefs, col, input, outputs, len) },
    };
    scalar::mul_add(coefs, col, input, outputs, done, len);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Make [`Backend::is_available`] answer as on a CPU without any SIMD extension (this thread only).
        pub(crate) static SIMD_HIDDEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Run `f` as if this CPU had no SIMD extension.
    pub(crate) fn without_simd<R>(f: impl FnOnce() -> R) -> R {
        SIMD_HIDDEN.set(true);
        let r = f();
        SIMD_HIDDEN.set(false);
        r
    }

    fn data(n: usize, len: usize, seed: u32) -> Vec<Vec<u8>> {
        let mut x = seed.wrapping_mul(2654435761) | 1;
        (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn affine_matrix_multiplies() {
        // Emulate GF2P8AFFINEQB in software and check it against the table for every c, x.
        for c in 0..=255u8 {
            let a = Coef::new(c).affine;
            for x in 0..=255u8 {
                let mut y = 0u8;
                for i in 0..8 {
                    let row = (a >> (8 * (7 - i))) as u8;
                    y |= (((row & x).count_ones() & 1) as u8) << i;
                }
                assert_eq!(y, gf::mul(c, x), "c={c} x={x}");
            }
        }
    }

    #[test]
    fn every_backend_matches_scalar() {
        for &(rows, cols) in &[(1, 1), (3, 10), (2, 3), (5, 7), (4, 4), (9, 2)] {
            let m = data(rows, cols, 7);
            let rows_ref: Vec<&[u8]> = m.iter().map(|r| r.as_slice()).collect();
            let coefs = Coefs::new(&rows_ref);
            for len in [0, 1, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 200, 1400, 1499] {
                let ins = data(cols, len + 3, len as u32);
                let ins_ref: Vec<&[u8]> = ins.iter().map(|v| &v[..]).collect();
                let mut want = vec![vec![0u8; len]; rows];
                {
                    let mut o: Vec<&mut [u8]> = want.iter_mut().map(|v| &mut v[..]).collect();
                    dot(Backend::Scalar, &coefs, &ins_ref, &mut o);
                }
                // Scalar dot against the definition.
                for (j, w) in want.iter().enumerate() {
                    for (k, &b) in w.iter().enumerate() {
                        let e = (0..cols).fold(0, |a, i| a ^ gf::mul(m[j][i], ins[i][k]));
                        assert_eq!(b, e);
                    }
                }
                for b in Backend::available() {
                    let mut got = vec![vec![0xeeu8; len]; rows];
                    let mut o: Vec<&mut [u8]> = got.iter_mut().map(|v| &mut v[..]).collect();
                    dot(b, &coefs, &ins_ref, &mut o);
                    assert_eq!(got, want, "{b} dot {rows}x{cols} len {len}");
                    // mul_add of every column, accumulated, equals dot; outputs longer than the input.
                    let mut acc = vec![vec![0u8; len + 5]; rows];
                    for (col, i) in ins.iter().enumerate() {
                        let mut o: Vec<&mut [u8]> = acc.iter_mut().map(|v| &mut v[..]).collect();
                        mul_add(b, &coefs, col, &i[..len], &mut o);
                    }
                    for (a, w) in acc.iter().zip(&want) {
                        assert_eq!(&a[..len], &w[..], "{b} mul_add len {len}");
                        assert!(a[len..].iter().all(|&z| z == 0));
                    }
                }
            }
        }
    }
}
