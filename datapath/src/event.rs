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
    pub conv: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

pub use crate::proto::conn::{SessionEnd, SmuxMismatch, SmuxSummary};

/// Something worth a log line.
#[derive(Debug)]
pub enum Event {
    /// A session began; `by_peer`: the peer opened it (a server's sessions). `smux`: its version (0: a
    /// server detecting it from the first frame, followed by [`Event::SmuxDetected`]); `None` for raw KCP.
    SessionOpened { id: SessionId, by_peer: bool, smux: Option<u8> },
    /// A detecting server learnt the client's smux version from its first frame.
    SmuxDetected { id: SessionId, version: u8 },
    /// Client `--autoexpire`: the session takes no new streams; its streams keep running until
    /// `--scavengettl` closes it.
    SessionExpired { id: SessionId },
    /// A session ended, after `age_ms`.
    SessionClosed {
        id: SessionId,
        end: SessionEnd,
        age_ms: u32,
        smux: Option<SmuxSummary>,
        mismatch: Option<SmuxMismatch>,
    },
    /// The client had no `--smuxver` and a session died of a version mismatch: new sessions speak `to`.
    SmuxFallback { remote: SocketAddr, from: u8, to: u8 },
    /// A stream began: `app` is the local end (the client's accepted connection, by its peer address;
    /// the server's target). `by_peer`: the peer opened it (server side).
    StreamOpened { id: SessionId, sid: u32, app: Endpoint, by_peer: bool },
    /// A stream that [`Event::StreamOpened`] announced ended.
    StreamClosed { id: SessionId, sid: u32, app: Endpoint, by_peer: bool },
    /// The server could not connect a stream to its target (the stream is closed).
    TargetDialFailed { target: Endpoint, error: io::Error },
    /// The client could not open a session to `remote` (its local connection is closed).
    SessionDialFailed { remote: SocketAddr, error: io::Error },
    /// Something failed on a shard outside any session.
    ShardError { shard: usize, what: &'static str, error: io::Error },
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
