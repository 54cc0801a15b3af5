//! kcptun-compatible packet crypto (spec §1.3–§2): every `--crypt` method, the PBKDF2 key derivation, and
//! seal/open of one UDP datagram in place in a caller's buffer.
//!
//! Contract: no clock, no sockets, no allocation per packet; any received datagram of any length yields a
//! plaintext range or a typed [`OpenError`], never a panic.
//!
//! ```
//! use kcpd_crypto::{Method, NonceGen, PacketCrypto};
//! let c = PacketCrypto::from_password("aes".parse::<Method>()?, "it's a secrect");
//! let mut rng = NonceGen::new();
//! let mut buf = vec![0u8; c.header_len() + 5 + c.trailer_len()];
//! buf[c.header_len()..c.header_len() + 5].copy_from_slice(b"hello");
//! c.seal(&mut rng, &mut buf)?;
//! let range = c.open(&mut buf)?;
//! assert_eq!(&buf[range], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod cfb;
mod des;
#[doc(hidden)]
pub mod fuzzing;
mod kdf;
mod method;
mod nonce;
mod packet;
pub mod qpp;
mod tea;
mod twofish;

pub use cfb::INITIAL_VECTOR;
pub use kdf::{DEFAULT_KEY, ITERATIONS, SALT, XOR_TABLE_LEN, derive_key, xor_table};
pub use method::{Method, UnknownMethod};
pub use nonce::NonceGen;
pub use packet::{
    BlockCrypt, CRC_SIZE, CRYPT_HEADER_SIZE, GCM_NONCE_SIZE, GCM_TAG_SIZE, NONCE_SIZE, OpenError, PacketCrypto,
    SealError,
};
