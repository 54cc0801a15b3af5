//! kcpd's engine.
//!
//! - [`proto`]: sans-IO protocol state machines — KCP ARQ, snappy framing, the session pipeline
//!   (bytes ⇄ KCP ⇄ FEC ⇄ crypto ⇄ datagrams), [`proto::conn::Conn`] (one conversation with smux and
//!   kcptun's per-conversation policy) and [`proto::endpoint::Endpoint`] (the datagram demux that creates
//!   and routes conversations), driven with the time passed in as a [`kcpd_time::Instant`];
//! - [`io`]: the datagram I/O trait and its implementations: `mmsg` (recvmmsg/sendmmsg with GSO/GRO),
//!   `uring` (io_uring), `basic` (portable), and the deterministic simulator;
//! - [`shard`]: the thread-per-core engine that drives sessions over real sockets;
//! - [`event`]: what the engine reports to its operator (sessions, streams, failed dials), never blocking;
//! - [`api`]: the embeddable library surface (kcp-go's role): listeners and dialers of KCP sessions as
//!   blocking byte streams, and smux streams over them.
#![warn(missing_docs)]

#[cfg(unix)]
pub mod api;
#[cfg(unix)]
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod proto;
#[cfg(unix)]
pub mod shard;
mod slab;
