//! x86-64 SIMD kernels. One generic body per operation, instantiated per vector type inside a
//! `#[target_feature]` function, so each backend is compiled with its own instruction set.

use std::arch::x86_64::*;

use super::{Backend, Coef, Coefs};

/// One SIMD register of bytes and the GF(2^8) multiply-by-constant on it.
trait Lane: Copy {
    const W: usize;
    unsafe fn load(p: *const u8) -> Self;
    unsafe fn store(self, p: *mut u8);
    unsafe fn zero() -> Self;
    unsafe fn xor(self, o: Self) -> Self;
    unsafe fn mul(self, c: &Coef) -> Self;
}

#[derive(Clone, Copy)]
struct Ssse3(__m128i);
#[derive(Clone, Copy)]
struct Avx2(__m256i);
#[derive(Clone, Copy)]
struct Avx512Bw(__m512i);
#[derive(Clone, Copy)]
struct GfniAvx2(__m256i);
#[derive(Clone, Copy)]
struct GfniAvx512(__m512i);

impl Lane for Ssse3 {
    const W: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        unsafe { Ssse3(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        unsafe { _mm_storeu_si128(p.cast(), self.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Ssse3(_mm_setzero_si128()) }
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        unsafe { Ssse3(_mm_xor_si128(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, c: &Coef) -> Self {
        unsafe {
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_loadu_si128(c.lo.as_ptr().cast());
            let hi = _mm_loadu_si128(c.hi.as_ptr().cast());
            let l = _mm_and_si128(self.0, mask);
            let h = _mm_and_si128(_mm_srli_epi64(self.0, 4), mask);
            Ssse3(_mm_xor_si128(_mm_shuffle_epi8(lo, l), _mm_shuffle_epi8(hi, h)))
        }
    }
}

impl Lane for Avx2 {
    const W: usize = 32;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        unsafe { Avx2(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        unsafe { _mm256_storeu_si256(p.cast(), self.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Avx2(_mm256_setzero_si256()) }
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        unsafe { Avx2(_mm256_xor_si256(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, c: &Coef) -> Self {
        unsafe {
            let mask = _mm256_set1_epi8(0x0f);
            let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(c.lo.as_ptr().cast()));
            let hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(c.hi.as_ptr().cast()));
            let l = _mm256_and_si256(self.0, mask);
            let h = _mm256_and_si256(_mm256_srli_epi64(self.0, 4), mask);
            Avx2(_mm256_xor_si256(_mm256_shuffle_epi8(lo, l), _mm256_shuffle_epi8(hi, h)))
        }
    }
}

impl Lane for Avx512Bw {
    const W: usize = 64;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        unsafe { Avx512Bw(_mm512_loadu_si512(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        unsafe { _mm512_storeu_si512(p.cast(), self.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Avx512Bw(_mm512_setzero_si512()) }
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        unsafe { Avx512Bw(_mm512_xor_si512(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, c: &Coef) -> Self {
        unsafe {
            let mask = _mm512_set1_epi8(0x0f);
            let lo = _mm512_broadcast_i32x4(_mm_loadu_si128(c.lo.as_ptr().cast()));
            let hi = _mm512_broadcast_i32x4(_mm_loadu_si128(c.hi.as_ptr().cast()));
            let l = _mm512_and_si512(self.0, mask);
            let h = _mm512_and_si512(_mm512_srli_epi64(self.0, 4), mask);
            Avx512Bw(_mm512_xor_si512(_mm512_shuffle_epi8(lo, l), _mm512_shuffle_epi8(hi, h)))
        }
    }
}

impl Lane for GfniAvx2 {
    const W: usize = 32;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        unsafe { GfniAvx2(_mm256_loadu_si256(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        unsafe { _mm256_storeu_si256(p.cast(), self.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { GfniAvx2(_mm256_setzero_si256()) }
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        unsafe { GfniAvx2(_mm256_xor_si256(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, c: &Coef) -> Self {
        unsafe { GfniAvx2(_mm256_gf2p8affine_epi64_epi8::<0>(self.0, _mm256_set1_epi64x(c.affine as i64))) }
    }
}

impl Lane for GfniAvx512 {
    const W: usize = 64;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        unsafe { GfniAvx512(_mm512_loadu_si512(p.cast())) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        unsafe { _mm512_storeu_si512(p.cast(), self.0) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { GfniAvx512(_mm512_setzero_si512()) }
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        unsafe { GfniAvx512(_mm512_xor_si512(self.0, o.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, c: &Coef) -> Self {
        unsafe { GfniAvx512(_mm512_gf2p8affine_epi64_epi8::<0>(self.0, _mm512_set1_epi64(c.affine as i64))) }
    }
}

/// `K` outputs at a time, so that each input vector is loaded once for all of them.
#[inline(always)]
unsafe fn dot_k<L: Lane, const K: usize>(
    coefs: &Coefs,
    row0: usize,
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
    len: usize,
) {
    let mut off = 0;
    while off + L::W <= len {
        unsafe {
            let mut acc = [L::zero(); K];
            for (i, input) in inputs.iter().enumerate() {
                let x = L::load(input.as_ptr().add(off));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = a.xor(x.mul(coefs.get(row0 + j, i)));
                }
            }
            for (a, out) in acc.iter().zip(outputs.iter_mut()) {
                a.store(out.as_mut_ptr().add(off));
            }
        }
        off += L::W;
    }
}

#[inline(always)]
unsafe fn dot_generic<L: Lane>(coefs: &Coefs, inputs: &[&[u8]], outputs: &mut [&mut [u8]], len: usize) -> usize {
    let mut row0 = 0;
    for outs in outputs.chunks_mut(4) {
        unsafe {
            match outs.len() {
                1 => dot_k::<L, 1>(coefs, row0, inputs, outs, len),
                2 => dot_k::<L, 2>(coefs, row0, inputs, outs, len),
                3 => dot_k::<L, 3>(coefs, row0, inputs, outs, len),
                _ => dot_k::<L, 4>(coefs, row0, inputs, outs, len),
            }
        }
        row0 += outs.len();
    }
    len / L::W * L::W
}

#[inline(always)]
unsafe fn mul_add_generic<L: Lane>(
    coefs: &Coefs,
    col: usize,
    input: &[u8],
    outputs: &mut [&mut [u8]],
    len: usize,
) -> usize {
    let mut off = 0;
    while off + L::W <= len {
        unsafe {
            let x = L::load(input.as_ptr().add(off));
            for (j, out) in outputs.iter_mut().enumerate() {
                let p = out.as_mut_ptr().add(off);
                L::load(p).xor(x.mul(coefs.get(j, col))).store(p);
            }
        }
        off += L::W;
    }
    off
}

macro_rules! entry {
    ($dot:ident, $mul_add:ident, $lane:ty, $feat:literal) => {
        #[target_feature(enable = $feat)]
        unsafe fn $dot(coefs: &Coefs, inputs: &[&[u8]], outputs: &mut [&mut [u8]], len: usize) -> usize {
            unsafe { dot_generic::<$lane>(coefs, inputs, outputs, len) }
        }
        #[target_feature(enable = $feat)]
        unsafe fn $mul_add(coefs: &Coefs, col: usize, input: &[u8], outputs: &mut [&mut [u8]], len: usize) -> usize {
            unsafe { mul_add_generic::<$lane>(coefs, col, input, outputs, len) }
        }
    };
}
entry!(dot_ssse3, mul_add_ssse3, Ssse3, "ssse3");
entry!(dot_avx2, mul_add_avx2, Avx2, "avx2");
entry!(dot_avx512bw, mul_add_avx512bw, Avx512Bw, "avx512f,avx512bw");
entry!(dot_gfni_avx2, mul_add_gfni_avx2, GfniAvx2, "gfni,avx2");
entry!(dot_gfni_avx512, mul_add_gfni_avx512, GfniAvx512, "gfni,avx512f,avx512bw");

/// Returns how many leading bytes were done (a multiple of the vector width).
///
/// # Safety
/// The CPU must support `b`'s features; inputs and outputs must hold at least `len` bytes.
pub(super) unsafe fn dot(b: Backend, coefs: &Coefs, inputs: &[&[u8]], outputs: &mut [&mut [u8]], len: usize) -> usize {
    unsafe {
        match b {
            Backend::Scalar => 0,
            Backend::Ssse3 => dot_ssse3(coefs, inputs, outputs, len),
            Backend::Avx2 => dot_avx2(coefs, inputs, outputs, len),
            Backend::Avx512Bw => dot_avx512bw(coefs, inputs, outputs, len),
            Backend::GfniAvx2 => dot_gfni_avx2(coefs, inputs, outputs, len),
            Backend::GfniAvx512 => dot_gfni_avx512(coefs, inputs, outputs, len),
        }
    }
}

/// # Safety
/// As [`dot`]; `input` holds `len` bytes and every output at least `len`.
pub(super) unsafe fn mul_add(
    b: Backend,
    coefs: &Coefs,
    col: usize,
    input: &[u8],
    outputs: &mut [&mut [u8]],
    len: usize,
) -> usize {
    unsafe {
        match b {
            Backend::Scalar => 0,
            Backend::Ssse3 => mul_add_ssse3(coefs, col, input, outputs, len),
            Backend::Avx2 => mul_add_avx2(coefs, col, input, outputs, len),
            Backend::Avx512Bw => mul_add_avx512bw(coefs, col, input, outputs, len),
            Backend::GfniAvx2 => mul_add_gfni_avx2(coefs, col, input, outputs, len),
            Backend::GfniAvx512 => mul_add_gfni_avx512(coefs, col, input, outputs, len),
        }
    }
}
