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
    Server { listen: Vec<SocketAddr>, target: Endpoint },
    /// kcptun-client: local connections on `listen` carried over `conns` KCP sessions to `remote` (one
    /// address picked at random per new session: multiport).
    Client { listen: Endpoint, remote: Vec<SocketAddr>, conns: usize },
}

/// A tunnel end.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    pub role: Role,
    /// Every conversation's configuration (crypto, KCP/FEC, smux, and the per-conversation policy:
    /// `--closewait`, `--ratelimit`, `--QPP`).
    pub conn: ConnConfig,
    /// Shards (threads); 0 = one per available core.
    pub threads: usize,
    /// Pin each shard to a core.
    pub pin: bool,
    pub backend: Backend,
    /// `--sockbuf`: SO_RCVBUF/SO_SNDBUF for the UDP sockets.
    pub sockbuf: Option<usize>,
    /// `--dscp`.
    pub dscp: u8,
    /// UDP GSO/GRO where the backend has them.
    pub offload: crate::io::udp::Offload,
    /// Client `--autoexpire` (0: off) and `--scavengettl`, in milliseconds.
    pub autoexpire_ms: u32,
    pub scavenge_ttl_ms: u32,
    /// Client: `conn.smux.version` is only a first guess (no `--smuxver` given); when a session dies of a version
    /// mismatch, new sessions switch to the other version ([`crate::event::Event::SmuxFallback`]).
    pub smux_fallback: bool,
    /// Where operator-facing events go (`None`: nowhere). Shards never block on it.
    pub events: Option<crate::event::EventSink>,
}

/// Shards to run when asked for `n` (0: one per available core).
pub fn threads(n: usize) -> usize {
    if n > 0 { n } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}
