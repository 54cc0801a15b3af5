//! Reed–Solomon over GF(2^8), byte-compatible with klauspost/reedsolomon as kcp-go uses it, and
//! kcp-go's FEC framing: encoder, decoder, recovery and detection of the peer's (ds, ps).
//!
//! Contract: no clock (time is passed in as a [`kcpd_time::Instant`]), no sockets, no allocation per
//! packet in steady state; any input bytes yield a typed error or a counted drop, never a panic.
//!
//! Protocol notes: `docs/protocol.md` §4 (`spec §3` in comments below). Layers: [`gf`] (field), [`matrix`],
//! the SIMD kernels behind [`Backend`], [`ReedSolomon`] (codec), [`wire`] (header view), [`Encoder`],
//! [`Decoder`].
#![warn(missing_docs)]

pub mod autotune;
pub mod decoder;
pub mod encoder;
#[doc(hidden)]
pub mod fuzzing;
pub mod gf;
mod kernel;
pub mod matrix;
pub mod rs;
pub mod wire;

pub use decoder::{Decoder, DecoderStats, Input, Recovered};
pub use encoder::{EncodeError, Encoder, EncoderStats, ParityRule, paws};
pub use kernel::Backend;
pub use rs::{ReedSolomon, RsError};
pub use wire::WireError;
