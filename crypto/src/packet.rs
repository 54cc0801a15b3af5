//! Whole-datagram ciphers (kcp-go's `BlockCrypt`) and the packet seal/open around them (spec §1.3–1.4).

use std::ops::Range;

use aes_gcm::aead::AeadInPlace;
use cipher::KeyInit;

use crate::cfb::{self, Op};
use crate::des::TripleDes;
use crate::kdf::{XOR_TABLE_LEN, derive_key, xor_table};
use crate::tea::{Tea, Xtea};
use crate::twofish::Twofish;
use crate::{Method, NonceGen};

/// Bytes of random nonce in front of a CFB datagram.
pub const NONCE_SIZE: usize = 16;
/// Bytes of CRC32 after the nonce.
pub const CRC_SIZE: usize = 4;
/// nonce + CRC: where the FEC header / KCP bytes start in a block-cipher datagram (kcp-go `cryptHeaderSize`).
pub const CRYPT_HEADER_SIZE: usize = NONCE_SIZE + CRC_SIZE;
/// AES-128-GCM nonce length (Go `cipher.NewGCM` default).
pub const GCM_NONCE_SIZE: usize = 12;
/// AES-128-GCM tag length.
pub const GCM_TAG_SIZE: usize = 16;

/// kcp-go's `BlockCrypt`: a cipher applied to a whole datagram in place (nonce and CRC included).
///
/// This is the raw layer the vectors in `crypto.json` exercise; normal code uses [`PacketCrypto`], which
/// adds the nonce, the CRC and the checks.
#[derive(Clone)]
pub struct BlockCrypt(Cipher);

#[derive(Clone)]
enum Cipher {
    Aes128(Box<aes::Aes128>),
    Aes192(Box<aes::Aes192>),
    Aes256(Box<aes::Aes256>),
    Salsa20([u8; 32]),
    Blowfish(Box<blowfish::Blowfish>),
    Twofish(Box<Twofish>),
    Cast5(Box<cast5::Cast5>),
    TripleDes(Box<TripleDes>),
    Tea(Tea),
    Xtea(Box<Xtea>),
    Xor(Box<[u8; XOR_TABLE_LEN]>),
    Sm4(Box<sm4::Sm4>),
    None,
}

fn key<const N: usize>(pass: &[u8; 32]) -> [u8; N] {
    pass[..N].try_into().expect("N <= 32")
}

impl BlockCrypt {
    /// The cipher for `method` keyed from the 32-byte `pass` (spec §2.2 key slices). `None` for the two
    /// methods that are not a `BlockCrypt` in kcp-go: `null` (no header) and `aes-128-gcm` (AEAD).
    pub fn new(method: Method, pass: &[u8; 32]) -> Option<Self> {
        // Every `new_from_slice` below gets a key of the length the cipher requires; they cannot fail.
        const LEN: &str = "key length fixed by the method table";
        Some(BlockCrypt(match method {
            Method::Aes => Cipher::Aes256(Box::new(aes::Aes256::new(&key::<32>(pass).into()))),
            Method::Aes128 => Cipher::Aes128(Box::new(aes::Aes128::new(&key::<16>(pass).into()))),
            Method::Aes192 => Cipher::Aes192(Box::new(aes::Aes192::new(&key::<24>(pass).into()))),
            Method::Salsa20 => Cipher::Salsa20(*pass),
            Method::Blowfish => Cipher::Blowfish(Box::new(blowfish::Blowfish::new_from_slice(pass).expect(LEN))),
            Method::Twofish => Cipher::Twofish(Twofish::new(pass)),
            Method::Cast5 => Cipher::Cast5(Box::new(cast5::Cast5::new_from_slice(&pass[..16]).expect(LEN))),
            Method::TripleDes => Cipher::TripleDes(TripleDes::new(&key::<24>(pass))),
            Method::Tea => Cipher::Tea(Tea::new(&key::<16>(pass))),
            Method::Xtea => Cipher::Xtea(Box::new(Xtea::new(&key::<16>(pass)))),
            Method::Xor => Cipher::Xor(xor_table(pass)),
            Method::Sm4 => Cipher::Sm4(Box::new(sm4::Sm4::new(&key::<16>(pass).into()))),
            Method::None => Cipher::None,
            Method::Null | Method::Aes128Gcm => return None,
        }))
    }

    fn run(&self, op: Op<'_, '_>) {
        match &self.0 {
            Cipher::Aes128(c) => cfb::run16(&**c, op),
            Cipher::Aes192(c) => cfb::run16(&**c, op),
            Cipher::Aes256(c) => cfb::run16(&**c, op),
            Cipher::Sm4(c) => cfb::run16(&**c, op),
            Cipher::Twofish(c) => cfb::run_fn::<16>(|b| c.encrypt_block(b), op),
            Cipher::Blowfish(c) => cfb::run8(&**c, op),
            Cipher::Cast5(c) => cfb::run8(&**c, op),
            Cipher::TripleDes(c) => cfb::run_fn::<8>(|b| c.encrypt_block(b), op),
            Cipher::Tea(c) => cfb::run_fn::<8>(|b| c.encrypt_block(b), op),
            Cipher::Xtea(c) => cfb::run_fn::<8>(|b| c.encrypt_block(b), op),
            // Stream-like methods are their own inverse.
            Cipher::Salsa20(k) => match op {
                Op::Encrypt(b) | Op::Decrypt(b) => salsa20_xor(k, b),
                Op::EncryptBatch(bs) => bs.iter_mut().for_each(|b| salsa20_xor(k, b)),
            },
            Cipher::Xor(t) => match op {
                Op::Encrypt(b) | Op::Decrypt(b) => xor_table_apply(t, b),
                Op::EncryptBatch(bs) => bs.iter_mut().for_each(|b| xor_table_apply(t, b)),
            },
            Cipher::None => {}
        }
    }

    /// kcp-go `BlockCrypt.Encrypt(buf, buf)`.
    pub fn encrypt(&self, buf: &mut [u8]) {
        self.run(Op::Encrypt(buf));
    }

    /// kcp-go `BlockCrypt.Decrypt(buf, buf)`.
    pub fn decrypt(&self, buf: &mut [u8]) {
        self.run(Op::Decrypt(buf));
    }

    /// Encrypt several datagrams; with a pipelined cipher (AES-NI) their CFB chains are interleaved.
    pub fn encrypt_batch(&self, bufs: &mut [&mut [u8]]) {
        self.run(Op::EncryptBatch(bufs));
    }
}

/// kcp-go salsa20BlockCrypt: bytes 0..8 stay in clear and are the nonce; 8.. are XORed with the
/// keystream from block counter 0. Shorter packets are left alone (NEW "if len < 8 return").
fn salsa20_xor(key: &[u8; 32], buf: &mut [u8]) {
    use cipher::{KeyIvInit, StreamCipher};
    if buf.len() < 8 {
        return;
    }
    let (nonce, rest) = buf.split_at_mut(8);
    let nonce: &[u8; 8] = (&*nonce).try_into().expect("split at 8");
    salsa20::Salsa20::new(key.into(), nonce.into()).apply_keystream(rest);
}

fn xor_table_apply(t: &[u8; XOR_TABLE_LEN], buf: &mut [u8]) {
    for (b, k) in buf.iter_mut().zip(t.iter()) {
        *b ^= k;
    }
}

/// Why a received datagram was refused. Every variant is a silent drop on the wire; the caller counts it
/// (`InCsumErrors` for `Checksum` and `Auth`, as kcp-go does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The datagram cannot hold the crypto overhead (20 bytes for block ciphers and `none`, 28 for GCM).
    #[error("datagram of {len} bytes is shorter than the {min}-byte crypto overhead")]
    TooShort {
        /// Length of the received datagram, in bytes.
        len: usize,
        /// Smallest length the method accepts: its [`PacketCrypto::overhead`].
        min: usize,
    },
    /// Block cipher or `none`: the CRC32 in the decrypted header does not match the plaintext.
    #[error("CRC32 mismatch after decryption (wrong key or method, or corrupted)")]
    Checksum,
    /// `aes-128-gcm`: the 16-byte tag does not authenticate the ciphertext under the 12-byte nonce.
    #[error("AES-GCM authentication failed (wrong key or method, or corrupted)")]
    Auth,
}

/// The buffer given to [`PacketCrypto::seal`] cannot hold the crypto header and trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {len} bytes cannot hold the {needed}-byte crypto overhead")]
pub struct SealError {
    /// Length of the (first too short) buffer given, in bytes.
    pub len: usize,
    /// Minimum buffer length: [`PacketCrypto::overhead`] (header plus trailer, for an empty plaintext).
    pub needed: usize,
}

#[derive(Clone)]
enum Kind {
    Null,
    Block(BlockCrypt),
    Gcm(Box<aes_gcm::Aes128Gcm>),
}

/// Seal and open of one datagram, in place, for one `--crypt` method and key.
///
/// Layout of the buffer handed to [`seal`](Self::seal) and returned by [`open`](Self::open):
/// `[header_len() bytes of crypto header | plaintext | trailer_len() bytes of tag space]`.
/// - block ciphers and `none`: header = nonce(16) + CRC32-IEEE LE of the plaintext (4), no trailer;
///   the whole datagram, header included, is encrypted;
/// - `aes-128-gcm`: header = nonce(12), trailer = tag(16);
/// - `null`: no header, no trailer, no transformation.
///
/// Immutable after construction: one instance can serve every session with the same key, from any thread.
#[derive(Clone)]
pub struct PacketCrypto {
    method: Method,
    kind: Kind,
}

impl PacketCrypto {
    /// Keyed from the 32-byte PBKDF2 output ([`derive_key`]).
    pub fn new(method: Method, pass: &[u8; 32]) -> Self {
        let kind = match method {
            Method::Null => Kind::Null,
            Method::Aes128Gcm => Kind::Gcm(Box::new(aes_gcm::Aes128Gcm::new(&key::<16>(pass).into()))),
            m => Kind::Block(BlockCrypt::new(m, pass).expect("every other method is a BlockCrypt")),
        };
        PacketCrypto { method, kind }
    }

    /// Keyed from the user's `--key` (runs PBKDF2: do it once, not per session).
    pub fn from_password(method: Method, password: &str) -> Self {
        Self::new(method, &derive_key(password.as_bytes()))
    }

    /// The `--crypt` method this instance was built for (the key is never exposed).
    pub fn method(&self) -> Method {
        self.method
    }

    /// Bytes in front of the plaintext: 20 (nonce + CRC), 12 (GCM nonce) or 0 (`null`).
    pub const fn header_len(&self) -> usize {
        match self.kind {
            Kind::Null => 0,
            Kind::Block(_) => CRYPT_HEADER_SIZE,
            Kind::Gcm(_) => GCM_NONCE_SIZE,
        }
    }

    /// Bytes of nonce at the head of a datagram: 16, 12 (GCM) or 0 (`null`). What follows (CRC and
    /// plaintext, or GCM ciphertext and tag) is the same in every copy of one sealed datagram; the nonce
    /// bytes of the CFB methods are not all covered by the CRC.
    pub const fn nonce_len(&self) -> usize {
        match self.kind {
            Kind::Null => 0,
            Kind::Block(_) => NONCE_SIZE,
            Kind::Gcm(_) => GCM_NONCE_SIZE,
        }
    }

    /// Bytes after the plaintext: 16 (GCM tag) or 0.
    pub const fn trailer_len(&self) -> usize {
        match self.kind {
            Kind::Gcm(_) => GCM_TAG_SIZE,
            _ => 0,
        }
    }

    /// Header plus trailer: what the crypto layer adds to every datagram.
    pub const fn overhead(&self) -> usize {
        self.header_len() + self.trailer_len()
    }

    /// Seal one datagram in place with a fresh nonce. `buf` = header space, plaintext, trailer space.
    #[inline]
    pub fn seal(&self, rng: &mut NonceGen, buf: &mut [u8]) -> Result<(), SealError> {
        let mut nonce = [0u8; NONCE_SIZE];
        let n = match self.kind {
            Kind::Null => 0,
            Kind::Block(_) => NONCE_SIZE,
            Kind::Gcm(_) => GCM_NONCE_SIZE,
        };
        rng.fill(&mut nonce[..n]);
        self.seal_with_nonce(&nonce[..n], buf)
    }

    /// [`seal`](Self::seal) with a caller-chosen nonce (16 bytes for block ciphers, 12 for GCM, none for
    /// `null`). For reproducible tests and replay tools only: a repeated GCM nonce breaks the cipher.
    pub fn seal_with_nonce(&self, nonce: &[u8], buf: &mut [u8]) -> Result<(), SealError> {
        let needed = self.overhead();
        if buf.len() < needed {
            return Err(SealError { len: buf.len(), needed });
        }
        match &self.kind {
            Kind::Null => {}
            Kind::Block(bc) => {
                Self::frame(nonce, buf);
                bc.encrypt(buf);
            }
            Kind::Gcm(g) => {
                let (head, rest) = buf.split_at_mut(GCM_NONCE_SIZE);
                head.copy_from_slice(&nonce[..GCM_NONCE_SIZE]);
                let (plain, tag_space) = rest.split_at_mut(rest.len() - GCM_TAG_SIZE);
                let tag = g
                    .encrypt_in_place_detached((&*head).into(), &[], plain)
                    .expect("GCM seals any datagram-sized plaintext");
                tag_space.copy_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Write nonce and CRC into a block-cipher datagram (before encryption).
    #[inline]
    fn frame(nonce: &[u8], buf: &mut [u8]) {
        buf[..NONCE_SIZE].copy_from_slice(&nonce[..NONCE_SIZE]);
        let crc = crc32fast::hash(&buf[CRYPT_HEADER_SIZE..]);
        buf[NONCE_SIZE..CRYPT_HEADER_SIZE].copy_from_slice(&crc.to_le_bytes());
    }

    /// Seal several datagrams (e.g. one KCP flush). Byte-for-byte what [`seal`](Self::seal) would produce
    /// with the same nonces, but with AES the CFB chains of up to 16 packets run interleaved, which lifts
    /// the serial-chain limit of a single packet. On error nothing has been encrypted.
    pub fn seal_batch(&self, rng: &mut NonceGen, bufs: &mut [&mut [u8]]) -> Result<(), SealError> {
        let needed = self.overhead();
        if let Some(b) = bufs.iter().find(|b| b.len() < needed) {
            return Err(SealError { len: b.len(), needed });
        }
        match &self.kind {
            Kind::Block(bc) => {
                for b in bufs.iter_mut() {
                    let mut nonce = [0u8; NONCE_SIZE];
                    rng.fill(&mut nonce);
                    Self::frame(&nonce, b);
                }
                bc.encrypt_batch(bufs);
                Ok(())
            }
            _ => bufs.iter_mut().try_for_each(|b| self.seal(rng, b)),
        }
    }

    /// Open one received datagram in place and return the plaintext's range within `buf`.
    ///
    /// Never panics, for any length: short datagrams, wrong keys and corruption are typed errors.
    #[inline]
    pub fn open(&self, buf: &mut [u8]) -> Result<Range<usize>, OpenError> {
        let len = buf.len();
        match &self.kind {
            Kind::Null => Ok(0..len),
            Kind::Block(bc) => {
                if len < CRYPT_HEADER_SIZE {
                    return Err(OpenError::TooShort { len, min: CRYPT_HEADER_SIZE });
                }
                bc.decrypt(buf);
                let want = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
                if crc32fast::hash(&buf[CRYPT_HEADER_SIZE..]) != want {
                    return Err(OpenError::Checksum);
                }
                Ok(CRYPT_HEADER_SIZE..len)
            }
            Kind::Gcm(g) => {
                let min = GCM_NONCE_SIZE + GCM_TAG_SIZE;
                if len < min {
                    return Err(OpenError::TooShort { len, min });
                }
                let (nonce, rest) = buf.split_at_mut(GCM_NONCE_SIZE);
                let (ct, tag) = rest.split_at_mut(rest.len() - GCM_TAG_SIZE);
                g.decrypt_in_place_detached((&*nonce).into(), &[], ct, (&*tag).into()).map_err(|_| OpenError::Auth)?;
                Ok(GCM_NONCE_SIZE..len - GCM_TAG_SIZE)
            }
        }
    }
}

impl std::fmt::Debug for PacketCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("PacketCrypto").field("method", &self.method).finish_non_exhaustive()
    }
}
