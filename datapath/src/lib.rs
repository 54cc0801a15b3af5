//! kcpd's engine.
//!
//! - [`proto`]: sans-IO protocol state machines — KCP ARQ, snappy framing, the session pipeline
//!   (bytes ⇄ KCP ⇄ FEC ⇄ crypto ⇄ datagrams);
//! - [`io`]: the datagram I/O trait and its implementations (the deterministic simulator here; real
//!   sockets follow).

#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod proto;
