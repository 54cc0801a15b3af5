//! The embeddable library, in kcp-go's role: listeners and dialers of KCP sessions (with FEC and
//! crypto) that yield blocking byte streams, and smux sessions on top.
//!
//! Sessions run on the shards of a [`Runtime`]; the only bytes that cross threads are those of the
//! streams handed to the application, through bounded channels.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use kcpd_datapath::api::{Options, Runtime};
//!
//! let rt = Runtime::new(Default::default())?;
//! let opts = Options::new("aes", "secret")?;
//! let listener = rt.listen("127.0.0.1:0".parse()?, &opts)?;
//! let addr = listener.local_addr();
//! std::thread::spawn(move || {
//!     let mut s = listener.accept().unwrap();
//!     let mut buf = [0u8; 5];
//!     s.read_exact(&mut buf).unwrap();
//!     s.write_all(&buf).unwrap();
//! });
//! let mut c = rt.dial(addr, &opts)?;
//! c.write_all(b"hello")?;
//! let mut buf = [0u8; 5];
//! c.read_exact(&mut buf)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::Receiver;
use kcpd_crypto::{Method, PacketCrypto, UnknownMethod};

use crate::io::Backend;
use crate::proto::conn::ConnConfig;
use crate::proto::endpoint::{ACCEPT_BACKLOG, ConnHandle};
use crate::proto::kcp::NoDelay;
use crate::proto::session::SessionConfig;
use crate::shard::chan::Chan;
use crate::shard::ctrl::{Ctrl, Dialed, Peer};
use crate::shard::service::{Accepted, App, Service};
use crate::shard::{Engine, ShardInit, ShardStats, config, open_udp};

/// [`Options::idle_timeout`]'s default: two minutes.
pub const DEFAULT_RAW_IDLE_MS: u32 = 120_000;

/// How the runtime runs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Shards (threads); 0 = one per available core.
    pub threads: usize,
    /// Datagram I/O for every UDP socket of the runtime (default: [`crate::io::probe_best`], `mmsg` on
    /// Linux).
    pub backend: Backend,
    /// Pin each shard thread to a core (shard `i` to the `i`-th core the OS lists, wrapping around); default
    /// off.
    pub pin: bool,
    /// What listeners accept: the replay filter and admission caps every shard shares.
    pub front: crate::proto::front::FrontConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { threads: 1, backend: crate::io::probe_best(), pin: false, front: Default::default() }
    }
}

/// Session options, mirroring kcp-go's setters.
#[derive(Clone, Debug)]
pub struct Options {
    /// Every session's configuration: crypto, KCP/FEC, smux (and snappy under it, smux sessions only),
    /// `rate_limit` in bytes per second per session for everything it sends (0 = off, kcp-go
    /// `SetRateLimit`).
    pub conn: ConnConfig,
    /// SO_RCVBUF and SO_SNDBUF, in bytes, for every UDP socket (each dialled session's, each listener's);
    /// `None` keeps the kernel defaults. A clamped value is not an error (kcp-go `SetReadBuffer`).
    pub sockbuf: Option<usize>,
    /// DSCP (0–63) written on every datagram sent; 0 leaves the default. Above 63, `listen` and `dial` fail.
    pub dscp: u8,
    /// UDP GSO on send and GRO on receive, where the backend and kernel have them (default: both on).
    pub offload: crate::io::udp::Offload,
}

impl Options {
    /// A `--crypt` method and key, kcp-go's defaults otherwise (stream mode, FEC off).
    pub fn new(method: &str, key: &str) -> Result<Self, UnknownMethod> {
        let m: Method = method.parse()?;
        let session = SessionConfig { data_shards: 0, parity_shards: 0, ..SessionConfig::kcptun_client() };
        let mut conn = ConnConfig::new(Arc::new(PacketCrypto::from_password(m, key)), session);
        conn.smux.half_close = true;
        conn.raw_idle_ms = DEFAULT_RAW_IDLE_MS;
        Ok(Options { conn, sockbuf: None, dscp: 0, offload: Default::default() })
    }

    /// kcp-go `SetNoDelay`.
    pub fn nodelay(mut self, nodelay: bool, interval: u32, resend: u32, nc: bool) -> Self {
        self.conn.session.nodelay = NoDelay { nodelay, interval, resend, nc };
        self
    }

    /// A raw session a listener accepted ends after `idle` without a datagram from its peer (default two
    /// minutes; zero: never, as kcp-go, where a peer that vanishes leaves its session open for good). Raw
    /// KCP has no keepalive: an application whose raw sessions may stay silent longer sends its own, or
    /// raises this. Dialled sessions and smux sessions (which have smux's keepalive) never idle out.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.conn.raw_idle_ms = idle.as_millis().min(u128::from(u32::MAX)) as u32;
        self
    }

    /// kcp-go `SetWindowSize`.
    pub fn window(mut self, snd: u32, rcv: u32) -> Self {
        self.conn.session.snd_wnd = snd;
        self.conn.session.rcv_wnd = rcv;
        self
    }

    /// kcp-go `SetMtu`.
    pub fn mtu(mut self, mtu: usize) -> Self {
        self.conn.session.mtu = mtu;
        self
    }

    /// kcp-go `SetACKNoDelay`.
    pub fn ack_nodelay(mut self, on: bool) -> Self {
        self.conn.session.ack_nodelay = on;
        self
    }

    /// Reed–Solomon FEC sent (received FEC is detected whatever this says).
    pub fn fec(mut self, data_shards: usize, parity_shards: usize) -> Self {
        self.conn.session.data_shards = data_shards;
        self.conn.session.parity_shards = parity_shards;
        self
    }

    /// Switch UDP GSO (send) and GRO (receive) on or off (`mmsg` has both, `uring` GSO only).
    pub fn offload(mut self, gso: bool, gro: bool) -> Self {
        self.offload = crate::io::udp::Offload { gso, gro };
        self
    }

    /// Pace each session's datagrams to `bytes_per_sec` (0: off), kcp-go `SetRateLimit`.
    pub fn rate_limit(mut self, bytes_per_sec: u64) -> Self {
        self.conn.rate_limit = bytes_per_sec;
        self
    }

    /// kcp-go `SetDSCP`: the DSCP (0–63) of every datagram sent; above 63, `listen` and `dial` fail.
    pub fn dscp(mut self, dscp: u8) -> Self {
        self.dscp = dscp;
        self
    }

    /// kcp-go `SetReadBuffer`/`SetWriteBuffer`.
    pub fn sockbuf(mut self, bytes: usize) -> Self {
        self.sockbuf = Some(bytes);
        self
    }

    fn service(&self, app: App) -> Arc<Service> {
        Arc::new(Service {
            conn: Arc::new(self.conn.clone()),
            sockbuf: self.sockbuf,
            dscp: self.dscp,
            offload: self.offload,
            tcp: None,
            app,
        })
    }
}

/// Shards running sessions for the application.
pub struct Runtime {
    engine: Engine,
    next: AtomicUsize,
}

impl Runtime {
    /// Start `cfg.threads` shard threads (0: one per core), idle until a listen or dial gives them work.
    /// Dropping the runtime stops them, and every session they run ends.
    pub fn new(cfg: RuntimeConfig) -> io::Result<Runtime> {
        let n = config::threads(cfg.threads);
        let inits = (0..n).map(|_| ShardInit::default()).collect();
        let engine = Engine::spawn(cfg.backend, cfg.pin, inits, None, cfg.front)?;
        Ok(Runtime { engine, next: AtomicUsize::new(0) })
    }

    fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.engine.shards()
    }

    fn bind(&self, addr: SocketAddr, opts: &Options, app: App) -> io::Result<SocketAddr> {
        let svc = opts.service(app);
        crate::io::udp::probe_free(addr)?;
        let mut bound = addr;
        for shard in 0..self.engine.shards() {
            let (io, fd) = open_udp(self.engine.backend(), &svc, bound, true)?;
            bound = io.local_addr();
            self.engine.send(shard, Ctrl::AddListener { sockets: vec![(io, fd)], svc: svc.clone() })?;
        }
        Ok(bound)
    }

    /// Accept raw KCP sessions on `addr` (kcp-go `ListenWithOptions`). A port another socket holds is
    /// `AddrInUse`, even when that socket is another process's SO_REUSEPORT group (which would otherwise be
    /// joined silently and share the peers): see [`crate::io::udp::probe_free`]. At most
    /// [`ACCEPT_BACKLOG`] (128, kcp-go's) sessions wait for [`Listener::accept`]; more are dropped
    /// (the peer's retransmissions try again), counted in `ShardStats::accept_overflow`.
    pub fn listen(&self, addr: SocketAddr, opts: &Options) -> io::Result<Listener> {
        let (tx, rx) = crossbeam_channel::bounded(ACCEPT_BACKLOG);
        let local = self.bind(addr, opts, App::Raw { accept: Some(tx) })?;
        Ok(Listener { rx, local, peers: self.engine.peers.clone() })
    }

    /// Accept smux sessions on `addr` (the same backlog as [`listen`](Self::listen); per session, at most
    /// 1024 streams wait for `accept_stream`, more are refused).
    pub fn listen_mux(&self, addr: SocketAddr, opts: &Options) -> io::Result<Listener> {
        let (tx, rx) = crossbeam_channel::bounded(ACCEPT_BACKLOG);
        let local = self.bind(addr, opts, App::Mux { accept: Some(tx) })?;
        Ok(Listener { rx, local, peers: self.engine.peers.clone() })
    }

    fn dial_app(&self, addr: SocketAddr, opts: &Options, app: App) -> io::Result<(usize, Dialed)> {
        let shard = self.pick();
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.engine.send(shard, Ctrl::Dial { peer: addr, svc: opts.service(app), reply: tx })?;
        let d = rx.recv().map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "shard stopped"))??;
        Ok((shard, d))
    }

    /// A raw KCP session to `addr` (kcp-go `DialWithOptions`): a byte stream. KCP has no handshake:
    /// this returns at once and the first write creates the session at the peer.
    pub fn dial(&self, addr: SocketAddr, opts: &Options) -> io::Result<Stream> {
        match self.dial_app(addr, opts, App::Raw { accept: None })? {
            (_, Dialed::Raw(ch)) => Ok(Stream::new(ch)),
            _ => Err(io::ErrorKind::Other.into()),
        }
    }

    /// A smux session to `addr`.
    pub fn dial_mux(&self, addr: SocketAddr, opts: &Options) -> io::Result<MuxSession> {
        match self.dial_app(addr, opts, App::Mux { accept: None })? {
            (shard, Dialed::Mux(conn)) => {
                // Streams the peer opens (kcptun peers never do) are refused.
                let (_tx, streams) = crossbeam_channel::bounded(0);
                Ok(MuxSession { peers: self.engine.peers.clone(), shard, conn, streams })
            }
            _ => Err(io::ErrorKind::Other.into()),
        }
    }

    /// Every shard's counters.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.engine.stats()
    }

    /// SNMP counters of all sessions, all shards together (kcp-go `DefaultSnmp`).
    pub fn snmp(&self) -> crate::proto::snmp::Snmp {
        self.engine.snmp()
    }
}

/// Incoming sessions of one address.
pub struct Listener {
    rx: Receiver<Accepted>,
    local: SocketAddr,
    peers: Arc<Vec<Peer>>,
}

impl Listener {
    /// The UDP address bound, with a requested port 0 resolved: what peers dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next raw session (from [`Runtime::listen`]).
    pub fn accept(&self) -> io::Result<Stream> {
        match self.rx.recv().map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "runtime stopped"))? {
            Accepted::Raw(ch) => Ok(Stream::new(ch)),
            Accepted::Mux { .. } => Err(io::Error::new(io::ErrorKind::InvalidInput, "a smux listener: use accept_mux")),
        }
    }

    /// The next smux session (from [`Runtime::listen_mux`]).
    pub fn accept_mux(&self) -> io::Result<MuxSession> {
        match self.rx.recv().map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "runtime stopped"))? {
            Accepted::Mux { shard, conn, streams } => {
                Ok(MuxSession { peers: self.peers.clone(), shard, conn, streams })
            }
            Accepted::Raw(_) => Err(io::Error::new(io::ErrorKind::InvalidInput, "a raw listener: use accept")),
        }
    }
}

/// A blocking byte stream: a raw KCP session or a smux stream. Clones share it (one may read while
/// another writes); it closes when the last clone is dropped.
pub struct Stream {
    inner: Arc<Closer>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// Closes the channel when the last [`Stream`] clone goes.
struct Closer(Arc<Chan>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Stream {
    fn new(chan: Arc<Chan>) -> Self {
        Stream { inner: Arc::new(Closer(chan)), read_timeout: None, write_timeout: None }
    }

    fn chan(&self) -> &Chan {
        &self.inner.0
    }

    /// Another handle on the same stream.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream { inner: self.inner.clone(), read_timeout: self.read_timeout, write_timeout: self.write_timeout })
    }

    /// Bound each `read` of this handle to `t` (`None`: block until data or the end); a read that times out
    /// fails with `TimedOut`. Clones keep the timeout they were made with.
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// Bound each `write` of this handle to `t` (`None`: block as long as needed). A write waits only while
    /// the 256 KiB buffer towards the shard is full; one that times out fails with `TimedOut`. `flush`
    /// ignores it.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    /// No more writes: a FIN on a smux stream (the peer reads to the end). Raw KCP has no such signal.
    pub fn shutdown_write(&self) {
        self.chan().shutdown_write();
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.0.read(buf, self.read_timeout)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.0.write(buf, self.write_timeout)
    }

    /// Wait until the session has taken everything written.
    fn flush(&mut self) -> io::Result<()> {
        self.chan().flush()
    }
}

/// A smux session over one KCP session. It lives until [`close`](Self::close)d (or until the peer goes
/// silent for the keepalive timeout), as a Go smux session does; its streams fail when it ends.
pub struct MuxSession {
    peers: Arc<Vec<Peer>>,
    shard: usize,
    conn: ConnHandle,
    streams: Receiver<Arc<Chan>>,
}

impl MuxSession {
    /// Open a stream (smux SYN).
    pub fn open_stream(&self) -> io::Result<Stream> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let p = &self.peers[self.shard];
        p.tx.send(Ctrl::OpenStream { conn: self.conn, reply: tx })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "runtime stopped"))?;
        p.waker.wake();
        let ch = rx.recv().map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "runtime stopped"))??;
        Ok(Stream::new(ch))
    }

    /// The next stream the peer opened.
    pub fn accept_stream(&self) -> io::Result<Stream> {
        self.streams
            .recv()
            .map(Stream::new)
            .map_err(|_| io::Error::new(io::ErrorKind::ConnectionAborted, "session closed"))
    }

    /// Close the session (nothing goes on the wire; its streams fail).
    pub fn close(&self) {
        let p = &self.peers[self.shard];
        if p.tx.send(Ctrl::CloseConn { conn: self.conn }).is_ok() {
            p.waker.wake();
        }
    }
}
