//! What other threads send a shard, and what a shard reports.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::io::{DatagramIo, IoStats};
use crate::proto::endpoint::ConnHandle;
use crate::proto::snmp::Snmp;
use crate::shard::chan::{Chan, Kicker};
use crate::shard::local::LocalStream;
use crate::shard::poller::Waker;
use crate::shard::service::Service;

/// What a dial produced for the application.
pub enum Dialed {
    /// Raw KCP: the byte stream.
    Raw(Arc<Chan>),
    /// smux: the session, to open and accept streams on.
    Mux(ConnHandle),
}

/// Messages to a shard.
pub enum Ctrl {
    /// Client: a local connection accepted on another shard, for the session in `slot` (owned here).
    Handoff {
        /// The `--conn` slot, one the receiving shard owns (`slot % shards` is its id).
        slot: usize,
        /// The accepted connection, already non-blocking and tuned.
        stream: LocalStream,
    },
    /// Reply with a statistics snapshot.
    Snapshot(Sender<ShardStats>),
    /// Leave the loop: every conversation is dropped (no log lines, nothing more sent over UDP) and the
    /// thread ends.
    Shutdown,
    /// Serve conversations arriving on these sockets (bound by the caller) with `svc`.
    AddListener {
        /// This shard's share of the listening sockets, each with the fd to poll. A failure to add them is
        /// reported as [`crate::event::Event::ShardError`].
        sockets: Vec<(Box<dyn DatagramIo + Send>, RawFd)>,
        /// What the conversations are for.
        svc: Arc<Service>,
    },
    /// Open a conversation to `peer`.
    Dial {
        /// The remote UDP address; the session gets a fresh socket on the wildcard address of its family.
        peer: SocketAddr,
        /// The session's configuration and application (`App::Raw` or `App::Mux`).
        svc: Arc<Service>,
        /// Gets the result once the conversation exists (KCP has no handshake: nothing waits for the peer).
        reply: Sender<io::Result<Dialed>>,
    },
    /// Open a smux stream on a conversation of this shard.
    OpenStream {
        /// The smux conversation (a raw one answers `Unsupported`, one that ended `NotConnected`).
        conn: ConnHandle,
        /// Gets the new stream's channel, or why there is none (e.g. stream ids used up).
        reply: Sender<io::Result<Arc<Chan>>>,
    },
    /// Close a conversation of this shard.
    CloseConn {
        /// The conversation; it ends with `SessionEnd::Closed`, and a stale handle is ignored.
        conn: ConnHandle,
    },
    /// Server: shard `to` received a datagram from a new address for conversation `handle` of this shard
    /// (NAT rebinding). If it is newer than anything the conversation has seen, the conversation, its
    /// pipes and their descriptors go to `to` ([`Ctrl::MoveIn`]); otherwise it is counted as stale.
    MoveAsk(Box<MoveAsk>),
    /// Server: a conversation another shard handed over, with its pipes (answering [`Ctrl::MoveAsk`]).
    MoveIn(Box<crate::shard::worker::Moved>),
}

/// A datagram that may move a conversation to another shard ([`Ctrl::MoveAsk`]).
pub struct MoveAsk {
    /// The shard that received it, and its listening socket there.
    pub to: (usize, usize),
    /// The conversation, on the shard asked.
    pub handle: ConnHandle,
    /// The new peer address, and the local address it sent to (if the socket reports it).
    pub remote: SocketAddr,
    /// See `remote`.
    pub local_ip: Option<std::net::IpAddr>,
    /// The datagram's length on the wire.
    pub len: usize,
    /// Its opened bytes.
    pub plain: Vec<u8>,
}

/// How other shards and threads reach a shard.
pub struct Peer {
    /// Control messages; follow each with `waker.wake()`, or the shard may not look before its next timer.
    pub tx: Sender<Ctrl>,
    /// Application channels with news name their pipe here.
    pub kicks: Sender<usize>,
    /// Wakes the shard from its poll wait (coalesced: one pending wake is enough).
    pub waker: Waker,
}

impl Peer {
    /// A wake handle for a new application channel.
    pub fn kicker(&self) -> io::Result<Kicker> {
        Ok(Kicker::new(self.kicks.clone(), self.waker.try_clone()?))
    }
}

/// One shard's counters.
#[derive(Clone, Debug, Default)]
pub struct ShardStats {
    /// kcp-go's SNMP counters of this shard's conversations, closed ones included; `Engine::snmp` merges
    /// the shards' into kcptun's SNMP output (SIGUSR1 line, `--snmplog`).
    pub snmp: Snmp,
    /// The I/O counters of the UDP sockets the shard has open at the snapshot, summed (a dialled session's
    /// socket takes its counts along when it closes).
    pub io: IoStats,
    /// The fake-TCP transports' segment counters (`--tcp`), summed like `io`.
    pub tcp: crate::proto::faketcp::FlowStats,
    /// Conversations alive on the shard at the snapshot.
    pub sessions: usize,
    /// Streams attached to a local end at the snapshot (TCP/unix connections, or library channels).
    pub pipes: usize,
    /// Streams ever attached to a local end on this shard (accepted connections, connected targets,
    /// library streams).
    pub pipes_opened: u64,
    /// Server: streams whose connection to `--target` failed, at once or in the background (each also an
    /// `Event::TargetDialFailed` when someone listens).
    pub target_connect_failed: u64,
    /// Client: local connections accepted here and handed to the shard that owns their `--conn` slot.
    pub handoffs_out: u64,
    /// Client: local connections other shards handed to this one.
    pub handoffs_in: u64,
    /// Client sessions that could not be dialled or could open no more streams, and conversations whose
    /// layer above KCP (smux, snappy) failed.
    pub tunnel_errors: u64,
    /// Datagrams the socket would not take (buffer full): lost as on a congested link.
    pub tx_dropped: u64,
    /// Datagrams from an unexpected address on a client socket.
    pub foreign_src: u64,
    /// Streams a peer opened past `ConnConfig::max_streams`, closed at once.
    pub streams_refused: u64,
    /// Times a local listener was paused because `accept` failed (out of descriptors or memory).
    pub accept_paused: u64,
    /// Sessions a library listener dropped because 128 waited to be accepted, and streams a library smux
    /// session refused because 1024 waited.
    pub accept_overflow: u64,
    /// Datagrams longer than kcp-go's 1500-byte limit (or GRO segments of such), dropped unopened.
    pub oversize: u64,
    /// Server: conversations that moved to a new peer address on this shard (from this shard or another:
    /// NAT rebinding).
    pub migrated_in: u64,
    /// Server: conversations handed to another shard after their peer's address changed.
    pub migrated_out: u64,
    /// Server: datagrams from a new address for a live conversation that were not newer than what it had
    /// seen (old ones replayed, late ones from the address it left), dropped.
    pub migration_stale: u64,
    /// Server: datagrams from a new address for a live conversation that could not move it (asked for
    /// already, or another listener's), dropped.
    pub migration_held: u64,
    /// Times a socket still had datagrams after `RX_ROUNDS` batches and waited for the next loop turn, so
    /// that timers, transmits and other sockets ran first (a flood on one socket cannot stall the shard).
    pub rx_deferred: u64,
}
