//! What a tunnel engine runs: kcptun's client or server data plane, on N shards.

use std::net::SocketAddr;

use crate::io::Backend;
use crate::proto::conn::ConnConfig;
use crate::shard::local::Endpoint;

/// Which end of the tunnel.
#[derive(Clone, Debug)]
pub enum Role {
    /// kcptun-server: KCP on `listen` (one UDP socket per shard per address, SO_REUSEPORT), streams
    /// connected to `target`.
    Server {
        /// `--listen`: the UDP addresses served (several with a port range); port 0 takes one ephemeral
        /// port for every shard ([`crate::shard::Engine::udp_addrs`] tells which).
        listen: Vec<SocketAddr>,
        /// `--target`: where each stream the client opens is connected (TCP, connected in the background,
        /// or a unix socket).
        target: Endpoint,
    },
    /// kcptun-client: local connections on `listen` carried over `conns` KCP sessions to `remote` (one
    /// address picked at random per new session: multiport).
    Client {
        /// `--localaddr`: where local connections are accepted (TCP: one SO_REUSEPORT listener per shard;
        /// a unix path: one listener, on shard 0).
        listen: Endpoint,
        /// `--remoteaddr`, one address per port of a range; must not be empty.
        remote: Vec<SocketAddr>,
        /// `--conn`: KCP sessions that carry the connections (0 counts as 1); slot `s` lives on shard
        /// `s % threads`.
        conns: usize,
    },
}

/// A tunnel end.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// Server or client, with their addresses.
    pub role: Role,
    /// Every conversation's configuration (crypto, KCP/FEC, smux, and the per-conversation policy:
    /// `--closewait`, `--ratelimit`, `--QPP`).
    pub conn: ConnConfig,
    /// Shards (threads); 0 = one per available core.
    pub threads: usize,
    /// Pin each shard to a core.
    pub pin: bool,
    /// `--io`: the datagram backend of every UDP socket; it also picks the poller (epoll, or poll(2) for
    /// `poll`).
    pub backend: Backend,
    /// `--sockbuf`: SO_RCVBUF/SO_SNDBUF for the UDP sockets.
    pub sockbuf: Option<usize>,
    /// `--dscp`.
    pub dscp: u8,
    /// UDP GSO/GRO where the backend has them.
    pub offload: crate::io::udp::Offload,
    /// `--tcp` (Linux): fake TCP in this shape (docs/protocol.md §11.7). A client dials every session over
    /// it instead of UDP; a server listens on it beside UDP, on the same address and port, as kcptun does.
    pub tcp: Option<crate::proto::faketcp::Shape>,
    /// Client `--autoexpire`, in milliseconds: how long a session takes new connections (0: forever).
    pub autoexpire_ms: u32,
    /// Client `--scavengettl`, in milliseconds: how long an expired session keeps its streams before it is
    /// closed.
    pub scavenge_ttl_ms: u32,
    /// Client: `conn.smux.version` is only a first guess (no `--smuxver` given); when a session dies of a version
    /// mismatch, new sessions switch to the other version ([`crate::event::Event::SmuxFallback`]).
    pub smux_fallback: bool,
    /// Where operator-facing events go (`None`: nowhere). Shards never block on it.
    pub events: Option<crate::event::EventSink>,
    /// The server's front door: replay filter, admission caps (used by listening sockets only).
    pub front: crate::proto::front::FrontConfig,
}

/// Shards to run when asked for `n` (0: one per available core).
pub fn threads(n: usize) -> usize {
    if n > 0 { n } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}
