//! What the engine tells its operator: sessions opening and ending, streams, target dials that failed, a
//! smux version mismatch. The shards never block on it and never format text: an [`Event`] goes into a
//! bounded queue with `try_send`, and when the consumer (the daemon's log thread) falls behind, events are
//! dropped and counted ([`EventSink::dropped`]) instead of stalling a datapath thread.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};

use crate::shard::local::Endpoint;

/// A KCP session as events name it: conversation id and its UDP addresses (`local` is the socket's bound
/// address, a wildcard on a server listening on `:29900`, as kcptun prints it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionId {
    /// The KCP conversation id: random, drawn by the dialling end.
    pub conv: u32,
    /// The UDP socket's bound address (not necessarily the address the peer sent to).
    pub local: SocketAddr,
    /// The peer's UDP address, IPv4-mapped IPv6 addresses shown as IPv4.
    pub remote: SocketAddr,
}

pub use crate::proto::conn::{SessionEnd, SmuxMismatch, SmuxSummary};

/// Something worth a log line.
#[derive(Debug)]
pub enum Event {
    /// A session began; `by_peer`: the peer opened it (a server's sessions). `smux`: its version (0: a
    /// server detecting it from the first frame, followed by [`Event::SmuxDetected`]); `None` for raw KCP.
    SessionOpened {
        /// The new session.
        id: SessionId,
        /// The peer opened it: a server's (or a library listener's) session.
        by_peer: bool,
        /// The smux version it speaks (1 or 2; 0 while a server detects it), `None` for raw KCP.
        smux: Option<u8>,
    },
    /// A session the peer opened followed it to a new address (NAT rebinding): `id.remote` is the new
    /// address, `from` the old one, which hears nothing more.
    SessionMigrated {
        /// The session, at its new address.
        id: SessionId,
        /// The address it left.
        from: std::net::SocketAddr,
        /// The shards it moved between (equal when the new address landed on the same one).
        shards: (usize, usize),
    },
    /// A detecting server learnt the client's smux version from its first frame.
    SmuxDetected {
        /// The session, announced earlier with `smux: Some(0)`.
        id: SessionId,
        /// The version the client's first frame carried (1 or 2).
        version: u8,
    },
    /// Client `--autoexpire`: the session takes no new streams; its streams keep running until
    /// `--scavengettl` closes it.
    SessionExpired {
        /// The expired session; a new one takes its `--conn` slot at the next local connection.
        id: SessionId,
    },
    /// A session ended, after `age_ms`.
    SessionClosed {
        /// The session that ended; its streams' [`Event::StreamClosed`] come before this event.
        id: SessionId,
        /// Why it ended.
        end: SessionEnd,
        /// Milliseconds from its creation to its end (saturating at `u32::MAX`, about 49 days).
        age_ms: u32,
        /// What smux saw (version, valid frames in, SYNs sent); `None` for raw KCP.
        smux: Option<SmuxSummary>,
        /// Client sessions only: it most likely died of a smux version mismatch (worth its own log line).
        mismatch: Option<SmuxMismatch>,
    },
    /// The client had no `--smuxver` and a session died of a version mismatch: new sessions speak `to`.
    SmuxFallback {
        /// The server address of the session that taught it; the switch applies to every new session.
        remote: SocketAddr,
        /// The smux version sessions spoke until now.
        from: u8,
        /// The version new sessions speak: the server's, from its first frame, or else the other one.
        to: u8,
    },
    /// A stream began: `app` is the local end (the client's accepted connection, by its peer address;
    /// the server's target). `by_peer`: the peer opened it (server side). Tunnel smux streams only: raw
    /// KCP sessions and library streams are not announced.
    StreamOpened {
        /// The session carrying the stream.
        id: SessionId,
        /// The smux stream id (odd when the client opened it).
        sid: u32,
        /// The local end: the client's accepted connection (TCP peer address, or the listening unix path),
        /// or the server's `--target`.
        app: Endpoint,
        /// The peer opened the stream (server side): bytes arrive from the tunnel and go out to `app`.
        by_peer: bool,
    },
    /// A stream that [`Event::StreamOpened`] announced ended.
    StreamClosed {
        /// The session that carried the stream.
        id: SessionId,
        /// The smux stream id, as announced.
        sid: u32,
        /// The local end, as announced.
        app: Endpoint,
        /// The peer opened the stream (server side).
        by_peer: bool,
    },
    /// The server could not connect a stream to its target (the stream is closed).
    TargetDialFailed {
        /// The `--target` that could not be reached.
        target: Endpoint,
        /// The connect error: immediate, or reported when a background TCP connect finished.
        error: io::Error,
    },
    /// The client could not open a session to `remote` (its local connection is closed).
    SessionDialFailed {
        /// The `--remoteaddr` address picked for the new session.
        remote: SocketAddr,
        /// Why: the session's UDP socket could not be created or configured (descriptors, `--sockbuf`,
        /// `--dscp`), the session configuration was refused, or the poller would not take the socket.
        error: io::Error,
    },
    /// What the server's front door refused since its last report (at most one per
    /// [`REPORT_INTERVAL`](crate::proto::front::REPORT_INTERVAL), only when something was).
    FrontDoor {
        /// The counts over that interval.
        refused: crate::proto::front::FrontStats,
    },
    /// Something failed on a shard outside any session.
    ShardError {
        /// The shard's index (its thread is named `kcpd-shard-<shard>`).
        shard: usize,
        /// What failed and what follows from it, e.g. "poll failed; the shard stops".
        what: &'static str,
        /// The OS error.
        error: io::Error,
    },
}

/// The engine's end of the event queue. Cloning shares the queue and the drop counter.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A queue of `capacity` events and its consumer end.
    pub fn channel(capacity: usize) -> (EventSink, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        (EventSink { tx, dropped: Arc::new(AtomicU64::new(0)) }, rx)
    }

    /// Queue `e` without blocking; a full queue (or a consumer gone) drops it and counts the drop.
    pub fn emit(&self, e: Event) {
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A view of the drop counter that does not keep the queue open (the consumer's end of the count).
    pub fn dropped_events(&self) -> DroppedEvents {
        DroppedEvents(self.dropped.clone())
    }
}

/// How many events an [`EventSink`] dropped, readable without holding the sink.
#[derive(Clone, Debug)]
pub struct DroppedEvents(Arc<AtomicU64>);

impl DroppedEvents {
    /// Events dropped so far, the same count as [`EventSink::dropped`] (a relaxed read: it may trail the
    /// shards by a moment).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_blocking() {
        let (sink, rx) = EventSink::channel(2);
        let ev = || Event::SmuxFallback { remote: "127.0.0.1:1".parse().unwrap(), from: 2, to: 1 };
        for _ in 0..5 {
            sink.emit(ev());
        }
        assert_eq!(sink.dropped(), 3);
        assert_eq!(rx.try_iter().count(), 2);
        sink.clone().emit(ev());
        assert_eq!(rx.try_iter().count(), 1);
        drop(rx);
        sink.emit(ev());
        assert_eq!(sink.dropped(), 4);
    }
}
