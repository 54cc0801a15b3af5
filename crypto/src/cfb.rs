//! kcp-go's "CFB" (spec §2.3): textbook full-block CFB over the *whole* datagram, restarted from a fixed IV
//! for every packet. `C_0 = P_0 ^ E(IV)`, `C_i = P_i ^ E(C_{i-1})`; a trailing partial block is XORed with
//! a prefix of the next keystream block. The random nonce in the first plaintext block is what makes the
//! rest of the packet unpredictable.
//!
//! The loops are written once, over [`Kernel`] (one block function, optionally pipelined for independent
//! blocks). Encryption of one packet is a serial chain; decryption and the batched encryption of several
//! packets feed independent blocks to [`Kernel::encrypt_many`], which a pipelined backend (AES-NI) runs
//! several at a time.

use cipher::generic_array::GenericArray;
use cipher::typenum::{U8, U16};
use cipher::{BlockBackend, BlockClosure, BlockEncrypt, BlockSizeUser, ParBlocksSizeUser};

/// kcp-go `initialVector` (crypt.go); 8-byte-block ciphers use its first 8 bytes.
pub const INITIAL_VECTOR: [u8; 16] = [167, 115, 79, 156, 18, 172, 27, 1, 164, 21, 242, 193, 252, 120, 230, 107];

/// How many independent blocks the loops hand to [`Kernel::encrypt_many`] at once.
const LANES: usize = 16;

/// A block cipher's forward function on `N`-byte blocks.
pub(crate) trait Kernel<const N: usize> {
    fn encrypt(&mut self, block: &mut [u8; N]);

    /// Encrypt independent blocks; pipelined backends override this.
    fn encrypt_many(&mut self, blocks: &mut [[u8; N]]) {
        for b in blocks {
            self.encrypt(b);
        }
    }
}

#[inline(always)]
fn xor_into<const N: usize>(dst: &mut [u8], ks: &[u8; N]) {
    for (d, k) in dst.iter_mut().zip(ks) {
        *d ^= k;
    }
}

fn iv<const N: usize>() -> [u8; N] {
    let mut x = [0u8; N];
    x.copy_from_slice(&INITIAL_VECTOR[..N]);
    x
}

/// Encrypt one datagram in place.
pub(crate) fn encrypt<const N: usize>(k: &mut impl Kernel<N>, buf: &mut [u8]) {
    let mut x = iv::<N>();
    let mut chunks = buf.chunks_exact_mut(N);
    for c in &mut chunks {
        k.encrypt(&mut x);
        xor_into(c, &x);
        x.copy_from_slice(c);
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        k.encrypt(&mut x);
        xor_into(tail, &x);
    }
}

/// Decrypt one datagram in place. Every keystream input is known ciphertext, so blocks go to the cipher
/// `LANES` at a time.
pub(crate) fn decrypt<const N: usize>(k: &mut impl Kernel<N>, buf: &mut [u8]) {
    let mut lanes = [[0u8; N]; LANES];
    let mut prev = iv::<N>();
    let mut pos = 0;
    while pos < buf.len() {
        let span = (buf.len() - pos).min(LANES * N);
        let nblocks = span.div_ceil(N);
        // Inputs: the previous ciphertext block of each block in the span.
        lanes[0] = prev;
        for (i, lane) in lanes.iter_mut().enumerate().take(nblocks).skip(1) {
            lane.copy_from_slice(&buf[pos + (i - 1) * N..pos + i * N]);
        }
        if span == LANES * N {
            prev.copy_from_slice(&buf[pos + span - N..pos + span]);
        }
        k.encrypt_many(&mut lanes[..nblocks]);
        for (chunk, ks) in buf[pos..pos + span].chunks_mut(N).zip(&lanes) {
            xor_into(chunk, ks);
        }
        pos += span;
    }
}

/// Encrypt several datagrams, interleaving their chains so that a pipelined cipher works on up to
/// `LANES` packets at once. Byte-identical to calling [`encrypt`] on each.
pub(crate) fn encrypt_batch<const N: usize>(k: &mut impl Kernel<N>, bufs: &mut [&mut [u8]]) {
    for group in bufs.chunks_mut(LANES) {
        let mut regs = [iv::<N>(); LANES];
        let mut active = [0usize; LANES];
        let longest = group.iter().map(|b| b.len()).max().unwrap_or(0);
        let mut off = 0;
        while off < longest {
            // Packets that still have bytes at `off`, compacted into the first `n` lanes.
            let mut n = 0;
            for (i, b) in group.iter().enumerate() {
                if b.len() > off {
                    active[n] = i;
                    n += 1;
                }
            }
            let mut lanes = [[0u8; N]; LANES];
            for j in 0..n {
                lanes[j] = regs[active[j]];
            }
            k.encrypt_many(&mut lanes[..n]);
            for j in 0..n {
                let b = &mut group[active[j]];
                let end = (off + N).min(b.len());
                let c = &mut b[off..end];
                xor_into(c, &lanes[j]);
                if c.len() == N {
                    regs[active[j]].copy_from_slice(c);
                }
            }
            off += N;
        }
    }
}

/// Adapts a RustCrypto cipher backend (which for AES is the AES-NI pipeline, 8 blocks wide) to [`Kernel`].
struct Backend<'a, B>(&'a mut B);

macro_rules! backend_kernel {
    ($n:literal, $u:ty) => {
        impl<B: BlockBackend<BlockSize = $u>> Kernel<$n> for Backend<'_, B> {
            #[inline(always)]
            fn encrypt(&mut self, block: &mut [u8; $n]) {
                let ga: &mut GenericArray<u8, $u> = block.into();
                self.0.proc_block(ga.into());
            }

            #[inline(always)]
            fn encrypt_many(&mut self, blocks: &mut [[u8; $n]]) {
                let par = <B as ParBlocksSizeUser>::ParBlocksSize::USIZE;
                if par == 1 {
                    for b in blocks {
                        self.encrypt(b);
                    }
                    return;
                }
                let mut chunks = blocks.chunks_exact_mut(par);
                {
                    for c in &mut chunks {
                        let mut pb = cipher::ParBlocks::<B>::default();
                        for (d, s) in pb.iter_mut().zip(c.iter()) {
                            d.copy_from_slice(s);
                        }
                        self.0.proc_par_blocks((&mut pb).into());
                        for (d, s) in c.iter_mut().zip(pb.iter()) {
                            d.copy_from_slice(s);
                        }
                    }
                }
                for b in chunks.into_remainder() {
                    self.encrypt(b);
                }
            }
        }
    };
}
backend_kernel!(8, U8);
backend_kernel!(16, U16);
use cipher::typenum::Unsigned;

/// What to run inside a RustCrypto cipher's backend.
pub(crate) enum Op<'a, 'b> {
    Encrypt(&'a mut [u8]),
    Decrypt(&'a mut [u8]),
    EncryptBatch(&'a mut [&'b mut [u8]]),
}

struct Closure<'a, 'b, U>(Op<'a, 'b>, core::marker::PhantomData<U>);

macro_rules! closure {
    ($n:literal, $u:ty) => {
        impl BlockSizeUser for Closure<'_, '_, $u> {
            type BlockSize = $u;
        }
        impl BlockClosure for Closure<'_, '_, $u> {
            fn call<B: BlockBackend<BlockSize = $u>>(self, backend: &mut B) {
                let mut k = Backend(backend);
                match self.0 {
                    Op::Encrypt(b) => encrypt::<$n>(&mut k, b),
                    Op::Decrypt(b) => decrypt::<$n>(&mut k, b),
                    Op::EncryptBatch(bs) => encrypt_batch::<$n>(&mut k, bs),
                }
            }
        }
    };
}
closure!(8, U8);
closure!(16, U16);

/// Run `op` with a 16-byte-block RustCrypto cipher (AES, SM4, Twofish): the backend is selected once per
/// call (AES-NI or software), not once per block.
pub(crate) fn run16<C: BlockEncrypt<BlockSize = U16>>(c: &C, op: Op<'_, '_>) {
    c.encrypt_with_backend(Closure::<U16>(op, core::marker::PhantomData));
}

/// Run `op` with an 8-byte-block RustCrypto cipher (Blowfish, CAST5, 3DES).
pub(crate) fn run8<C: BlockEncrypt<BlockSize = U8>>(c: &C, op: Op<'_, '_>) {
    c.encrypt_with_backend(Closure::<U8>(op, core::marker::PhantomData));
}

/// A [`Kernel`] from a plain block function (TEA, XTEA).
pub(crate) struct FnKernel<F>(pub F);

impl<const N: usize, F: FnMut(&mut [u8; N])> Kernel<N> for FnKernel<F> {
    #[inline(always)]
    fn encrypt(&mut self, block: &mut [u8; N]) {
        (self.0)(block)
    }
}

/// Run `op` with a plain block function.
pub(crate) fn run_fn<const N: usize>(f: impl FnMut(&mut [u8; N]), op: Op<'_, '_>) {
    let mut k = FnKernel(f);
    match op {
        Op::Encrypt(b) => encrypt::<N>(&mut k, b),
        Op::Decrypt(b) => decrypt::<N>(&mut k, b),
        Op::EncryptBatch(bs) => encrypt_batch::<N>(&mut k, bs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy "cipher" (not a permutation, but CFB never needs one) that makes every byte matter.
    fn toy(b: &mut [u8; 8]) {
        let x = u64::from_le_bytes(*b);
        *b = (x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ 0xA5A5_5A5A_0F0F_F0F0).to_le_bytes();
    }

    /// Textbook CFB, byte at a time, as the reference.
    fn reference(buf: &[u8]) -> Vec<u8> {
        let mut x: [u8; 8] = INITIAL_VECTOR[..8].try_into().unwrap();
        let mut out = Vec::new();
        for chunk in buf.chunks(8) {
            let mut ks = x;
            toy(&mut ks);
            let c: Vec<u8> = chunk.iter().zip(ks).map(|(p, k)| p ^ k).collect();
            if c.len() == 8 {
                x.copy_from_slice(&c);
            }
            out.extend(c);
        }
        out
    }

    #[test]
    fn encrypt_decrypt_batch_agree_with_textbook_cfb() {
        for len in 0..200 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let want = reference(&plain);
            let mut a = plain.clone();
            run_fn::<8>(toy, Op::Encrypt(&mut a));
            assert_eq!(a, want, "len {len}");
            run_fn::<8>(toy, Op::Decrypt(&mut a));
            assert_eq!(a, plain, "len {len}");
        }
        // A batch of mixed lengths (more than LANES) equals one-by-one encryption.
        let plains: Vec<Vec<u8>> = (0..37).map(|i| (0..(i * 13 % 90)).map(|j| (i ^ j) as u8).collect()).collect();
        let mut bufs = plains.clone();
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        run_fn::<8>(toy, Op::EncryptBatch(&mut refs));
        for (p, c) in plains.iter().zip(&bufs) {
            assert_eq!(c, &reference(p));
        }
    }
}
