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
        slot: usize,
        stream: LocalStream,
    },
    /// Reply with a statistics snapshot.
    Snapshot(Sender<ShardStats>),
    Shutdown,
    /// Serve conversations arriving on these sockets (bound by the caller) with `svc`.
    AddListener {
        sockets: Vec<(Box<dyn DatagramIo + Send>, RawFd)>,
        svc: Arc<Service>,
    },
    /// Open a conversation to `peer`.
    Dial {
        peer: SocketAddr,
        svc: Arc<Service>,
        reply: Sender<io::Result<Dialed>>,
    },
    /// Open a smux stream on a conversation of this shard.
    OpenStream {
        conn: ConnHandle,
        reply: Sender<io::Result<Arc<Chan>>>,
    },
    /// Close a conversation of this shard.
    CloseConn {
        conn: ConnHandle,
    },
}

/// How other shards and threads reach a shard.
pub struct Peer {
    pub tx: Sender<Ctrl>,
    /// Application channels with news name their pipe here.
    pub kicks: Sender<usize>,
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
    pub snmp: Snmp,
    pub io: IoStats,
    pub sessions: usize,
    pub pipes: usize,
    pub pipes_opened: u64,
    pub target_connect_failed: u64,
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub tunnel_errors: u64,
    /// Datagrams the socket would not take (buffer full): lost as on a congested link.
    pub tx_dropped: u64,
    /// Datagrams from an unexpected address on a client socket.
    pub foreign_src: u64,
}
