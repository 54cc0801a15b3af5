//! What conversations on a socket are for: a tunnel end, or sessions handed to the application.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use kcpd_crypto::PacketCrypto;

use crate::proto::session::SessionConfig;
use crate::shard::chan::Chan;
use crate::shard::local::Endpoint;
use crate::shard::worker::ConnRef;

/// The application side of conversations.
#[derive(Clone, Debug)]
pub enum App {
    /// kcptun server: every stream the peer opens is connected to `target`.
    TunnelServer { target: Endpoint },
    /// kcptun client: streams come from local connections.
    TunnelClient,
    /// Library, raw KCP byte streams (kcp-go `UDPSession`); conversations a listener accepts go to
    /// `accept`.
    Raw { accept: Option<Sender<Accepted>> },
    /// Library, smux sessions; conversations a listener accepts go to `accept`.
    Mux { accept: Option<Sender<Accepted>> },
}

/// A conversation a listener accepted, for the application.
pub enum Accepted {
    Raw(Arc<Chan>),
    /// A smux session on shard `shard`; streams the peer opens arrive on `streams`.
    Mux {
        shard: usize,
        conn: ConnRef,
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

/// Everything a conversation needs, shared by the conversations of one listener or dialer.
#[derive(Clone, Debug)]
pub struct Service {
    pub crypto: Arc<PacketCrypto>,
    pub session: SessionConfig,
    pub smux: kcpd_smux::Config,
    /// Snappy framing over the smux stream (kcptun unless `--nocomp`).
    pub compress: bool,
    /// After one direction of a tunnelled connection ends, close both after this long (kcptun NEW
    /// `--closewait`; 0: at once, as kcptun DEB). Not used with smux half-close (kcpd on both ends).
    pub close_wait_ms: u32,
    pub sockbuf: Option<usize>,
    pub dscp: u8,
    pub offload: crate::io::udp::Offload,
    /// kcptun NEW `--ratelimit`: bytes per second per session for every datagram it sends (0: off).
    pub rate_limit: u64,
    /// kcptun NEW `--QPP`: every smux stream's payload through a Quantum Permutation Pad.
    pub qpp: Option<Arc<QppSetup>>,
    pub app: App,
}

/// QPP pads built once per process from `--key` and `--QPPCount`, and the PRNG state every stream
/// direction starts from (qpp `CreatePRNG(key)`), kept to be cloned per stream.
pub struct QppSetup {
    pub pads: kcpd_crypto::qpp::Qpp,
    pub prng: kcpd_crypto::qpp::Prng,
}

impl QppSetup {
    pub fn new(key: &[u8], count: u16) -> Self {
        QppSetup { pads: kcpd_crypto::qpp::Qpp::new(key, count), prng: kcpd_crypto::qpp::Prng::new(key) }
    }
}

impl std::fmt::Debug for QppSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QppSetup").field("pads", &self.pads.count()).finish_non_exhaustive()
    }
}

/// The client tunnel's sessions: `--conn` of them to `remote` (one address picked per new session).
#[derive(Debug)]
pub struct ClientSetup {
    pub svc: Arc<Service>,
    pub remote: Vec<SocketAddr>,
    pub conns: usize,
    /// `--autoexpire`: a session takes new connections for this long (0: forever).
    pub autoexpire_ms: u32,
    /// `--scavengettl`: an expired session is closed this long after its expiry, streams or not.
    pub scavenge_ttl_ms: u32,
    /// No `--smuxver` was given: the version new sessions speak, switched by every shard when a session
    /// dies of a version mismatch (see `Worker::report_end`). `None`: the configured version, always.
    pub smux_auto: Option<Arc<std::sync::atomic::AtomicU8>>,
}
