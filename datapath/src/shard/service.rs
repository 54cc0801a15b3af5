//! What conversations on a socket are for: a tunnel end, or sessions handed to the application.

use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::proto::conn::QppSetup;
use crate::proto::conn::{ConnConfig, Upper};
use crate::proto::endpoint::ConnHandle;
use crate::shard::chan::Chan;
use crate::shard::local::Endpoint;
use crossbeam_channel::{Receiver, Sender};

/// The application side of conversations.
#[derive(Clone, Debug)]
pub enum App {
    /// kcptun server: every stream the peer opens is connected to `target`.
    TunnelServer {
        /// `--target`: TCP (connected in the background) or a unix socket.
        target: Endpoint,
    },
    /// kcptun client: streams come from local connections.
    TunnelClient,
    /// Library, raw KCP byte streams (kcp-go `UDPSession`); conversations a listener accepts go to
    /// `accept`.
    Raw {
        /// A listener's queue to [`crate::api::Listener::accept`]; `None` for a dial, whose stream goes
        /// back in the dial's reply.
        accept: Option<Sender<Accepted>>,
    },
    /// Library, smux sessions; conversations a listener accepts go to `accept`.
    Mux {
        /// A listener's queue to [`crate::api::Listener::accept_mux`]; `None` for a dial.
        accept: Option<Sender<Accepted>>,
    },
}

/// A conversation a listener accepted, for the application.
pub enum Accepted {
    /// A raw KCP session: its one byte stream, which [`crate::api::Stream`] wraps.
    Raw(Arc<Chan>),
    /// A smux session on shard `shard`; streams the peer opens arrive on `streams`.
    Mux {
        /// The shard that owns the session: where its `Ctrl::OpenStream` and `Ctrl::CloseConn` go.
        shard: usize,
        /// The session on that shard (a stale handle, once it ended, resolves to nothing).
        conn: ConnHandle,
        /// One channel per stream the peer opens; disconnected when the session ends.
        streams: Receiver<Arc<Chan>>,
    },
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Accepted::Raw(_) => f.write_str("Accepted::Raw"),
            Accepted::Mux { shard, conn, .. } => write!(f, "Accepted::Mux({shard}, {conn:?})"),
        }
    }
}

/// Everything a listener's or dialer's conversations need: their configuration, their sockets' settings
/// and what the application does with them.
#[derive(Clone, Debug)]
pub struct Service {
    /// Every conversation's configuration (crypto, KCP/FEC, smux, per-conversation policy), shared by
    /// all of them on every shard.
    pub conn: Arc<ConnConfig>,
    /// `--sockbuf`: SO_RCVBUF/SO_SNDBUF in bytes for every UDP socket opened for the service, listening or
    /// dialled; `None`: the kernel's.
    pub sockbuf: Option<usize>,
    /// `--dscp` (0–63) for those sockets; 0 leaves the default.
    pub dscp: u8,
    /// UDP GSO/GRO for those sockets, where the backend and kernel have them.
    pub offload: crate::io::udp::Offload,
    /// `--tcp`: dial fake-TCP connections in this shape instead of UDP sockets (a server listens on both;
    /// see [`crate::shard::TunnelConfig::tcp`]).
    pub tcp: Option<crate::proto::faketcp::Shape>,
    /// What becomes of its conversations and their streams.
    pub app: App,
}

impl Service {
    /// What runs above KCP on conversations this end opens (`passive`: the peer opened them).
    pub fn upper(&self, passive: bool) -> Upper {
        match self.app {
            App::Raw { .. } => Upper::Raw,
            _ => Upper::Smux {
                role: if passive { kcpd_smux::Role::Server } else { kcpd_smux::Role::Client },
                version: self.conn.smux.version,
            },
        }
    }
}

/// The client tunnel's sessions: `--conn` of them to `remote` (one address picked per new session).
#[derive(Debug)]
pub struct ClientSetup {
    /// The client tunnel's service (`App::TunnelClient`): every session's configuration and socket settings.
    pub svc: Arc<Service>,
    /// `--remoteaddr`, one address per port of a range (never empty); each new session picks one at random.
    pub remote: Vec<SocketAddr>,
    /// `--conn`: the slots local connections are spread over round robin (0 counts as 1); slot `s` is owned
    /// by shard `s % shards`.
    pub conns: usize,
    /// `--autoexpire`: a session takes new connections for this long (0: forever).
    pub autoexpire_ms: u32,
    /// `--scavengettl`: an expired session is closed this long after its expiry, streams or not.
    pub scavenge_ttl_ms: u32,
    /// No `--smuxver` was given: the version new sessions speak, switched by every shard when a session
    /// dies of a version mismatch (see `Worker::report_end`). `None`: the configured version, always.
    pub smux_auto: Option<Arc<std::sync::atomic::AtomicU8>>,
}
