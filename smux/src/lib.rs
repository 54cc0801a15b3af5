//! smux v1/v2 (github.com/xtaci/smux, the stream multiplexer under kcptun) as a sans-IO state machine,
//! byte-compatible with smux 1.5.16 (DEB kcptun), 1.5.52 (NEW kcptun) and 1.5.57.
//!
//! Contract: no clock, no sockets. Time is passed in as a [`kcpd_time::Instant`]; the layer below (an
//! ordered reliable byte stream: KCP, possibly inside snappy framing) is the caller's. The caller feeds
//! the peer's bytes to [`Session::handle_input`] in any chunking, pulls frames out of
//! [`Session::poll_transmit`] **one frame per call** (kcptun's compression emits one snappy chunk per
//! smux frame), drives keepalive with [`Session::handle_timeout`] / [`Session::poll_timeout`], stops
//! reading below while [`Session::wants_input`] is false, and reacts to [`Session::poll_event`]. Peer
//! input never panics: a frame that breaks the protocol closes the session with a typed
//! [`FrameError`]; a frame that is merely useless (PSH or FIN for an unknown stream, duplicate SYN,
//! empty PSH) is counted in [`Stats`] and dropped, as Go smux does.
//!
//! Streams: [`Session::open_stream`] (or an [`Event::Accepted`]) gives an id; [`Session::stream_write`]
//! queues what fits (per-stream send buffer, v2 peer window) and says so, [`Event::Writable`] tells when
//! to try again; [`Session::stream_read`] returns one received frame's bytes at most and queues the v2
//! UPDs a Go sender needs; [`Session::stream_close_write`] half-closes; [`Session::stream_close`] ends
//! every stream, after which its id is forgotten ([`Event::Closed`] once its last frame is out).
//!
//! Protocol notes: `docs/protocol.md` §9 and §15 (cited below in the original numbering: `spec §5`, traps
//! 2–4, 12, 20, 26). Upstream: smux `frame.go` ([`wire`]), `session.go` ([`Session`]), `stream.go`
//! (per-stream state), `shaper.go` (PSH fairness), `mux.go` ([`Config`]).
//!
//! Where Go versions differ, this crate follows:
//! - receive validation: smux 1.5.57 (SYN/FIN/NOP length 0, UPD length 8, UPD only in v2; wrong version or
//!   unknown cmd) — stricter than 1.5.52, which desyncs on such frames instead; no Go smux sends them;
//! - FIN: [`Config::half_close`] picks 1.5.57 `CloseWrite` semantics (the peer may keep writing after its
//!   FIN) or 1.5.16/1.5.52 (a FIN ends both directions; our writes after it fail).
#![warn(missing_docs)]

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod session;
mod stream;
pub mod wire;

pub use config::{Config, ConfigError};
pub use session::{ACCEPT_BACKLOG, CloseReason, CmdCounts, Error, Event, MIN_TRANSMIT_BUF, Role, Session, Stats};
pub use wire::{Cmd, FrameError, HEADER_SIZE};
