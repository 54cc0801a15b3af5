//! One shard: an event loop on one thread that owns its UDP sockets, KCP sessions, smux streams, the
//! local ends of those streams (sockets, or channels to application threads), a timer wheel and its
//! buffers. Per iteration: wait for readiness (or the next deadline), receive datagram batches and route
//! them to sessions, move stream bytes between smux and the local ends with back-pressure both ways,
//! then transmit every touched session's datagrams in batches (GSO runs where the backend has it).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use kcpd_crypto::NonceGen;
use kcpd_smux::{Error as SmuxError, Event as SmuxEvent, Role as SmuxRole};

use crate::event::{Event, EventSink, SessionEnd, SessionId, SmuxMismatch, SmuxSummary};
use crate::io::{Backend, DatagramIo, IoStats, RecvMeta, Transmit};
use crate::proto::mux::{Mux, MuxError};
use crate::proto::session::{DropReason, Route, Session, route};
use crate::proto::snmp::Snmp;
use crate::shard::chan::Chan;
use crate::shard::local::{Endpoint, LocalListener, LocalStream};
use crate::shard::poller::{Interest, Poller, Ready, WakeReceiver, Waker};
use crate::shard::service::{App, ClientSetup, Service};
use crate::shard::slab::Slab;
use crate::shard::timer::Wheel;

/// Datagrams received per batch.
const RX_BATCH: usize = 32;
/// Receive buffer size: room for a GRO super-packet.
const RX_BUF: usize = 65536;
/// Transmit arena (datagrams packed back to back).
const TX_ARENA: usize = 64 * 1500;
const TX_MAX: usize = 64;
/// Bytes buffered per direction of a pipe.
const PIPE_BUF: usize = 32 * 1024;
/// Pipe buffers a shard keeps for reuse (2 MiB): a pipe holds one only while bytes wait in it.
const BUF_POOL_CAP: usize = 64;

const T_WAKER: u64 = 0;
const T_UDP: u64 = 1 << 56;
const T_PIPE: u64 = 2 << 56;
const T_LISTEN: u64 = 3 << 56;
const T_MASK: u64 = 0xff << 56;

/// A conversation on a shard, as other threads name it (slot index + generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub index: usize,
    pub generation: u64,
}

/// What a dial produced for the application.
pub enum Dialed {
    /// Raw KCP: the byte stream.
    Raw(Arc<Chan>),
    /// smux: the session, to open and accept streams on.
    Mux(ConnRef),
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
        conn: ConnRef,
        reply: Sender<io::Result<Arc<Chan>>>,
    },
    /// Close a conversation of this shard.
    CloseConn {
        conn: ConnRef,
    },
    /// An application channel has news.
    Kick {
        pipe: usize,
    },
}

/// How other shards and threads reach a shard.
pub struct Peer {
    pub tx: Sender<Ctrl>,
    pub waker: Waker,
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

struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Self {
        // Storage is lent by the shard's pool while bytes are in flight (see `Worker::lend`).
        Buf { data: Box::default(), start: 0, end: 0 }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn fill(&mut self, n: usize) {
        self.start = 0;
        self.end = n;
    }
}

/// One KCP conversation and what runs over it.
struct Conn {
    generation: u64,
    svc: Arc<Service>,
    session: Session,
    /// smux (tunnel roles and the library's smux sessions); `None` for raw KCP streams.
    mux: Option<Mux>,
    udp: usize,
    peer: SocketAddr,
    /// How events name it (conv, the socket's bound address, the peer).
    id: SessionId,
    /// The peer opened it (a listener's conversation).
    passive: bool,
    /// When it began (for the closing event).
    born: u32,
    /// A detecting server reported the smux version it learnt.
    smux_reported: bool,
    /// The local address the peer sent to (reply from it when bound to a wildcard).
    local_ip: Option<IpAddr>,
    /// Client tunnel: the `--conn` slot it serves.
    slot: Option<usize>,
    /// Pipes by smux stream id; a raw conversation's single pipe under id 0.
    pipes: HashMap<u32, usize>,
    /// Library smux: where streams the peer opens go.
    accept: Option<Sender<Arc<Chan>>>,
    queued: bool,
    /// Client `--autoexpire`: after this the slot gets a fresh session for new connections.
    expires_at: Option<u32>,
    /// `--ratelimit` token bucket (bytes; negative: in debt) and when it was last refilled.
    tokens: i64,
    refilled_at: u32,
    /// Rate-limited: the next transmit waits until then.
    rate_wait: Option<u32>,
}

/// Why a session ends when its smux (or compression) layer fails.
fn mux_end(e: MuxError) -> SessionEnd {
    match e {
        MuxError::Smux(SmuxError::Protocol(f)) => SessionEnd::Protocol(f),
        MuxError::Smux(SmuxError::SessionClosed(why)) => why.into(),
        MuxError::Smux(e) => SessionEnd::Smux(e),
        MuxError::Snappy(_) => SessionEnd::Compression,
    }
}

/// kcp-go's rate limiter burst: 64 datagrams of 1500 bytes.
const RATE_BURST: i64 = 64 * 1500;

/// The local end of a pipe.
enum Local {
    Sock(LocalStream),
    Chan(Arc<Chan>),
}

impl Local {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Local::Sock(s) => s.read(buf),
            Local::Chan(c) => c.take(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Local::Sock(s) => s.write(buf),
            Local::Chan(c) => c.give(buf),
        }
    }

    fn shutdown_write(&mut self) {
        match self {
            Local::Sock(s) => s.shutdown_write(),
            Local::Chan(c) => c.end_rx(),
        }
    }

    fn fd(&self) -> Option<RawFd> {
        match self {
            Local::Sock(s) => Some(s.as_raw_fd()),
            Local::Chan(_) => None,
        }
    }
}

/// A tunnelled connection: a local end and a smux stream (or, raw, the KCP byte stream itself).
struct Pipe {
    conn: usize,
    /// smux stream id; `None`: the conversation's KCP bytes.
    sid: Option<u32>,
    local: Local,
    connecting: bool,
    interest: Interest,
    readable: bool,
    writable: bool,
    /// Local -> network.
    up: Buf,
    /// Network -> local.
    down: Buf,
    local_eof: bool,
    stream_eof: bool,
    up_done: bool,
    down_done: bool,
    close_at: Option<u32>,
    /// The local end as [`Event::StreamOpened`] named it (set once the stream is up; the closing event
    /// follows only then).
    announced: Option<Endpoint>,
    /// `--QPP`: the PRNGs of the two directions (writes into the stream, reads from it).
    qpp: Option<Box<(kcpd_crypto::qpp::Prng, kcpd_crypto::qpp::Prng)>>,
}

enum UdpOwner {
    /// Conversations from any address: a listening socket.
    Listener(Arc<Service>),
    /// One dialled conversation.
    Conn(usize),
}

struct Udp {
    io: Box<dyn DatagramIo + Send>,
    fd: RawFd,
    owner: UdpOwner,
}

struct Pending {
    udp: usize,
    dst: SocketAddr,
    src_ip: Option<IpAddr>,
    off: usize,
    len: usize,
    segs: usize,
}

/// Everything a shard starts with.
pub struct Setup {
    pub id: usize,
    pub backend: Backend,
    pub poller: Box<dyn Poller>,
    pub wake_rx: WakeReceiver,
    pub ctrl: Receiver<Ctrl>,
    pub peers: Arc<Vec<Peer>>,
    pub epoch: Instant,
    pub listeners: Vec<(super::UdpSocks, Arc<Service>)>,
    pub client: Option<(Arc<ClientSetup>, Vec<LocalListener>)>,
    pub gauge: Arc<super::ConnGauge>,
    pub events: Option<EventSink>,
}

pub struct Worker {
    id: usize,
    backend: Backend,
    poller: Box<dyn Poller>,
    wake_rx: WakeReceiver,
    ctrl: Receiver<Ctrl>,
    peers: Arc<Vec<Peer>>,
    epoch: Instant,
    /// Live conversations across all shards, for the aggregate MaxConn.
    gauge: Arc<super::ConnGauge>,
    udps: Slab<Udp>,
    conns: Slab<Conn>,
    pipes: Slab<Pipe>,
    generation: u64,
    by_peer: HashMap<(usize, SocketAddr), usize>,
    client: Option<Arc<ClientSetup>>,
    listeners: Vec<LocalListener>,
    /// Client tunnel: conversation per `--conn` slot (only slots this shard owns are used).
    slots: Vec<Option<usize>>,
    rr: usize,
    wheel: Wheel,
    rng: NonceGen,
    rx_bufs: Vec<Vec<u8>>,
    rx_meta: Vec<RecvMeta>,
    tx_arena: Vec<u8>,
    tx_used: usize,
    tx_pending: Vec<Pending>,
    tx_lens: Vec<usize>,
    dirty: Vec<usize>,
    ready: Vec<Ready>,
    expired: Vec<u32>,
    scratch: Vec<usize>,
    /// Pipe buffers not in use: a pipe holds one only while bytes wait in it, so an idle connection costs
    /// no buffer memory and a busy one never allocates.
    buf_pool: Vec<Box<[u8]>>,
    /// Client `--scavengettl`: (close at, conversation, its generation) of expired sessions.
    reap: Vec<(u32, usize, u64)>,
    /// Counters of conversations that ended, and of drops no session owns.
    gone: Snmp,
    stats: ShardStats,
    /// Where operator-facing events go (the daemon's log); `None`: nobody listens.
    events: Option<EventSink>,
    stop: bool,
}

impl Worker {
    pub fn new(setup: Setup) -> io::Result<Self> {
        let Setup { id, backend, mut poller, wake_rx, ctrl, peers, epoch, listeners, client, gauge, events } = setup;
        poller.add(wake_rx.fd(), T_WAKER, Interest::READ)?;
        let now = epoch.elapsed().as_millis() as u32;
        let (client, local_listeners) = match client {
            Some((c, l)) => (Some(c), l),
            None => (None, Vec::new()),
        };
        for (i, l) in local_listeners.iter().enumerate() {
            poller.add(l.as_raw_fd(), T_LISTEN | i as u64, Interest::READ)?;
        }
        let slots = client.as_ref().map_or(Vec::new(), |c| vec![None; c.conns.max(1)]);
        let mut w = Worker {
            id,
            backend,
            poller,
            wake_rx,
            ctrl,
            peers,
            epoch,
            gauge,
            udps: Slab::default(),
            conns: Slab::default(),
            pipes: Slab::default(),
            generation: 0,
            by_peer: HashMap::new(),
            client,
            listeners: local_listeners,
            slots,
            rr: id,
            wheel: Wheel::new(now),
            rng: NonceGen::new(),
            rx_bufs: (0..RX_BATCH).map(|_| vec![0u8; RX_BUF]).collect(),
            rx_meta: vec![RecvMeta::EMPTY; RX_BATCH],
            tx_arena: vec![0u8; TX_ARENA],
            tx_used: 0,
            tx_pending: Vec::with_capacity(TX_MAX),
            tx_lens: vec![0; TX_MAX],
            dirty: Vec::new(),
            ready: Vec::new(),
            expired: Vec::new(),
            scratch: Vec::new(),
            buf_pool: Vec::new(),
            reap: Vec::new(),
            gone: Snmp::default(),
            stats: ShardStats::default(),
            events,
            stop: false,
        };
        for (sockets, svc) in listeners {
            w.add_listener(sockets, svc)?;
        }
        Ok(w)
    }

    fn add_listener(&mut self, sockets: Vec<(Box<dyn DatagramIo + Send>, RawFd)>, svc: Arc<Service>) -> io::Result<()> {
        for (io, fd) in sockets {
            let u = self.udps.insert(Udp { io, fd, owner: UdpOwner::Listener(svc.clone()) });
            self.poller.add(fd, T_UDP | u as u64, Interest::READ)?;
        }
        Ok(())
    }

    fn now(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Report `f()` to the operator, if anyone listens (never blocks; built only then).
    fn emit(&self, f: impl FnOnce() -> Event) {
        if let Some(sink) = &self.events {
            sink.emit(f());
        }
    }

    /// Run until told to stop.
    pub fn run(mut self) {
        while !self.stop {
            let now = self.now();
            let timeout = self.wheel.next_in(now, 1000).map_or(1000, |t| t as i32);
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            if let Err(error) = self.poller.wait(&mut ready, timeout) {
                let shard = self.id;
                self.emit(|| Event::ShardError { shard, what: "poll failed; the shard stops", error });
                break;
            }
            let now = self.now();
            for r in &ready {
                match r.token & T_MASK {
                    T_WAKER => self.on_wake(now),
                    T_UDP => self.on_udp((r.token & !T_MASK) as usize, now),
                    T_PIPE => self.on_pipe((r.token & !T_MASK) as usize, r),
                    T_LISTEN => self.on_accept((r.token & !T_MASK) as usize, now),
                    _ => {}
                }
            }
            self.ready = ready;
            let mut expired = std::mem::take(&mut self.expired);
            expired.clear();
            self.wheel.expire(now, &mut expired);
            for &c in &expired {
                self.mark(c as usize);
            }
            self.expired = expired;
            if !self.reap.is_empty() {
                self.scavenge(now);
            }
            self.service_dirty(now);
            self.flush_tx();
        }
        for c in self.conns.keys() {
            self.kill_conn(c, None);
        }
    }

    fn mark(&mut self, c: usize) {
        if let Some(conn) = self.conns.get_mut(c)
            && !conn.queued
        {
            conn.queued = true;
            self.dirty.push(c);
        }
    }

    fn conn_ref(&self, c: usize) -> Option<ConnRef> {
        self.conns.get(c).map(|x| ConnRef { index: c, generation: x.generation })
    }

    fn resolve(&self, r: ConnRef) -> Option<usize> {
        self.conns.get(r.index).filter(|x| x.generation == r.generation).map(|_| r.index)
    }

    // ---- control ----

    fn on_wake(&mut self, now: u32) {
        self.wake_rx.drain();
        while let Ok(msg) = self.ctrl.try_recv() {
            match msg {
                Ctrl::Handoff { slot, stream } => {
                    self.stats.handoffs_in += 1;
                    self.attach_local(slot, stream, now);
                }
                Ctrl::Snapshot(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                Ctrl::Shutdown => self.stop = true,
                Ctrl::AddListener { sockets, svc } => {
                    if let Err(error) = self.add_listener(sockets, svc) {
                        let shard = self.id;
                        self.emit(|| Event::ShardError { shard, what: "cannot add a listener", error });
                    }
                }
                Ctrl::Dial { peer, svc, reply } => {
                    let r = self.dial(peer, svc, None, now).and_then(|c| self.dialed(c));
                    let _ = reply.send(r);
                }
                Ctrl::OpenStream { conn, reply } => {
                    let r = match self.resolve(conn) {
                        Some(c) => self.open_chan_stream(c),
                        None => Err(io::ErrorKind::NotConnected.into()),
                    };
                    let _ = reply.send(r);
                }
                Ctrl::CloseConn { conn } => {
                    if let Some(c) = self.resolve(conn) {
                        self.kill_conn(c, Some(SessionEnd::Closed));
                    }
                }
                Ctrl::Kick { pipe } => {
                    if let Some(p) = self.pipes.get_mut(pipe) {
                        if let Local::Chan(ch) = &p.local {
                            ch.clear_kick();
                        }
                        p.readable = true;
                        p.writable = true;
                        let c = p.conn;
                        self.mark(c);
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> ShardStats {
        let mut s = self.stats.clone();
        s.snmp = self.gone;
        for (_, c) in self.conns.iter() {
            s.snmp.merge(&c.session.snmp());
        }
        s.snmp.curr_estab = self.conns.len() as u64;
        s.sessions = self.conns.len();
        s.pipes = self.pipes.len();
        let mut io = IoStats::default();
        for (_, u) in self.udps.iter() {
            let x = u.io.stats();
            io.rx_datagrams += x.rx_datagrams;
            io.rx_bytes += x.rx_bytes;
            io.tx_datagrams += x.tx_datagrams;
            io.tx_bytes += x.tx_bytes;
            io.rx_syscalls += x.rx_syscalls;
            io.tx_syscalls += x.tx_syscalls;
            io.rx_truncated += x.rx_truncated;
            io.tx_refused += x.tx_refused;
            io.tx_dropped += x.tx_dropped;
            io.errors += x.errors;
            io.gso_disabled += x.gso_disabled;
        }
        s.io = io;
        s
    }

    // ---- UDP ----

    fn on_udp(&mut self, u: usize, now: u32) {
        loop {
            let n = {
                let Some(udp) = self.udps.get_mut(u) else { return };
                let mut bufs: [&mut [u8]; RX_BATCH] = core::array::from_fn(|_| &mut [][..]);
                for (b, v) in bufs.iter_mut().zip(self.rx_bufs.iter_mut()) {
                    *b = &mut v[..];
                }
                match udp.io.recv_batch(&mut bufs, &mut self.rx_meta) {
                    Ok(n) => n,
                    Err(_) => {
                        self.gone.in_errs += 1;
                        return;
                    }
                }
            };
            if n == 0 {
                return;
            }
            for i in 0..n {
                let meta = self.rx_meta[i];
                if meta.truncated {
                    // Longer than kcp-go's 1500-byte buffers: its CRC would fail anyway.
                    self.gone.in_errs += 1;
                    continue;
                }
                if meta.len == 0 {
                    // An empty datagram: too short for any header.
                    self.gone.in_pkts += 1;
                    self.gone.in_errs += 1;
                    continue;
                }
                let mut buf = std::mem::take(&mut self.rx_bufs[i]);
                for d in buf[..meta.len].chunks_mut(meta.stride.max(1)) {
                    self.on_datagram(u, meta.src, meta.dst_ip, d, now);
                }
                self.rx_bufs[i] = buf;
            }
            if n < RX_BATCH {
                return;
            }
        }
    }

    fn on_datagram(&mut self, u: usize, src: SocketAddr, dst_ip: Option<IpAddr>, d: &mut [u8], now: u32) {
        let svc = match self.udps.get(u).map(|x| &x.owner) {
            Some(UdpOwner::Conn(c)) => {
                // Dialled: only the dialled address (kcp-go NEW `sameUDPAddr`).
                let c = *c;
                let Some(conn) = self.conns.get_mut(c) else { return };
                if src != conn.peer {
                    self.stats.foreign_src += 1;
                    self.gone.in_errs += 1;
                    return;
                }
                let _ = conn.session.handle_datagram(now, d);
                self.mark(c);
                return;
            }
            Some(UdpOwner::Listener(svc)) => svc.clone(),
            None => return,
        };
        // Listening: open once, then route by address (spec §4.2).
        let range = match svc.crypto.open(d) {
            Ok(r) => r,
            Err(e) => {
                self.gone.in_pkts += 1;
                self.gone.in_bytes += d.len() as u64;
                // kcp-go: a checksum (or tag) failure is InCsumErrors, a datagram too short to carry the
                // header InErrs.
                if matches!(e, kcpd_crypto::OpenError::TooShort { .. }) {
                    self.gone.in_errs += 1;
                } else {
                    self.gone.in_csum_errors += 1;
                }
                return;
            }
        };
        let len = d.len();
        let plain = &d[range];
        let existing = self.by_peer.get(&(u, src)).copied();
        let conv = existing.and_then(|c| self.conns.get(c)).map(|c| c.session.conv());
        let c = match route(plain, conv) {
            Route::Existing => match existing {
                Some(c) => c,
                None => return,
            },
            Route::Drop(why) => {
                self.gone.in_pkts += 1;
                self.gone.in_bytes += len as u64;
                if why != DropReason::NoConv {
                    self.gone.kcp_in_errors += 1;
                }
                return;
            }
            Route::Replace(conv) | Route::New(conv) => {
                if let Some(old) = existing {
                    self.kill_conn(old, Some(SessionEnd::Replaced));
                }
                match self.new_conn(conv, svc, u, src, None, true, now) {
                    Some(c) => c,
                    None => return,
                }
            }
        };
        let Some(conn) = self.conns.get_mut(c) else { return };
        conn.session.count_in(len);
        conn.local_ip = dst_ip.or(conn.local_ip);
        let _ = conn.session.handle_plain(now, plain);
        self.mark(c);
    }

    #[allow(clippy::too_many_arguments)]
    fn new_conn(
        &mut self,
        conv: u32,
        svc: Arc<Service>,
        udp: usize,
        peer: SocketAddr,
        slot: Option<usize>,
        passive: bool,
        now: u32,
    ) -> Option<usize> {
        let session = Session::new(conv, svc.crypto.clone(), &svc.session, now).ok()?;
        let role = if passive { SmuxRole::Server } else { SmuxRole::Client };
        let mux = match svc.app {
            App::Raw { .. } => None,
            _ => {
                let mut cfg = svc.smux.clone();
                // A client tunnel without --smuxver speaks what the last mismatch taught it.
                if let (App::TunnelClient, Some(v)) =
                    (&svc.app, self.client.as_ref().and_then(|c| c.smux_auto.as_ref()))
                {
                    cfg.version = v.load(Ordering::Relaxed);
                }
                Some(Mux::new(role, cfg, svc.compress, now).ok()?)
            }
        };
        let smux_version = mux.as_ref().map(|m| m.version());
        let local = self.udps.get(udp).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |u| u.io.local_addr());
        let id = SessionId { conv, local, remote: peer };
        self.generation += 1;
        let c = self.conns.insert(Conn {
            generation: self.generation,
            svc: svc.clone(),
            session,
            mux,
            udp,
            peer,
            id,
            passive,
            born: now,
            smux_reported: smux_version != Some(0),
            local_ip: None,
            slot,
            pipes: HashMap::new(),
            accept: None,
            queued: false,
            expires_at: None,
            tokens: RATE_BURST,
            refilled_at: now,
            rate_wait: None,
        });
        if passive {
            self.gone.passive_opens += 1;
            self.by_peer.insert((udp, peer), c);
        } else {
            self.gone.active_opens += 1;
        }
        self.gone.max_conn = self.gone.max_conn.max(self.conns.len() as u64);
        self.gauge.open();
        self.emit(|| Event::SessionOpened { id, by_peer: passive, smux: smux_version });
        // The library hears of conversations the peer opened.
        if passive {
            match &svc.app {
                App::Raw { accept: Some(tx) } => {
                    let ch = self.raw_chan(c);
                    if tx.send(crate::shard::service::Accepted::Raw(ch)).is_err() {
                        self.kill_conn(c, Some(SessionEnd::Closed));
                        return None;
                    }
                }
                App::Mux { accept: Some(tx) } => {
                    let (stx, srx) = crossbeam_channel::unbounded();
                    if let Some(conn) = self.conns.get_mut(c) {
                        conn.accept = Some(stx);
                    }
                    let r = self.conn_ref(c).expect("just inserted");
                    if tx.send(crate::shard::service::Accepted::Mux { shard: self.id, conn: r, streams: srx }).is_err()
                    {
                        self.kill_conn(c, Some(SessionEnd::Closed));
                        return None;
                    }
                }
                _ => {}
            }
        }
        Some(c)
    }

    /// A raw conversation's channel (pipe 0 of the conversation).
    fn raw_chan(&mut self, c: usize) -> Arc<Chan> {
        let me = &self.peers[self.id];
        let ch = Arc::new(Chan::new(me.tx.clone(), me.waker.try_clone().expect("socket clone")));
        self.add_pipe(c, None, Local::Chan(ch.clone()), false);
        ch
    }

    fn dialed(&mut self, c: usize) -> io::Result<Dialed> {
        let raw = self.conns.get(c).is_some_and(|x| x.mux.is_none());
        if raw {
            Ok(Dialed::Raw(self.raw_chan(c)))
        } else {
            self.conn_ref(c).map(Dialed::Mux).ok_or_else(|| io::ErrorKind::NotConnected.into())
        }
    }

    fn open_chan_stream(&mut self, c: usize) -> io::Result<Arc<Chan>> {
        let sid = match self.conns.get_mut(c).and_then(|x| x.mux.as_mut()).map(|m| m.smux().open_stream()) {
            Some(Ok(sid)) => sid,
            Some(Err(e)) => return Err(io::Error::other(e)),
            None => return Err(io::ErrorKind::Unsupported.into()),
        };
        let me = &self.peers[self.id];
        let ch = Arc::new(Chan::new(me.tx.clone(), me.waker.try_clone()?));
        self.add_pipe(c, Some(sid), Local::Chan(ch.clone()), false);
        self.mark(c);
        Ok(ch)
    }

    /// End conversation `c`; `end` says why (for the operator's log), `None` at shutdown (not logged).
    fn kill_conn(&mut self, c: usize, end: Option<SessionEnd>) {
        let Some(mut conn) = self.conns.remove(c) else { return };
        self.gauge.close();
        self.wheel.disarm(c as u32);
        let mut s = conn.session.snmp();
        // Gauges describe live sessions only.
        s.curr_estab = 0;
        s.max_conn = 0;
        s.fec_shard_set = 0;
        s.fec_shard_min = 0;
        self.gone.merge(&s);
        for (_, p) in std::mem::take(&mut conn.pipes) {
            if let Some(pipe) = self.pipes.remove(p) {
                if let (Some(app), Some(sid), Some(_)) = (pipe.announced, pipe.sid, end) {
                    let (id, by_peer) = (conn.id, conn.passive);
                    self.emit(|| Event::StreamClosed { id, sid, app, by_peer });
                }
                match pipe.local {
                    Local::Sock(sock) => {
                        let _ = self.poller.delete(sock.as_raw_fd());
                    }
                    Local::Chan(ch) => ch.break_with(io::ErrorKind::ConnectionReset),
                }
            }
        }
        // After its streams' lines: the session's own, and a diagnosis.
        if let Some(end) = end {
            self.report_end(&conn, end);
        }
        if let Some(slot) = conn.slot
            && self.slots.get(slot) == Some(&Some(c))
        {
            self.slots[slot] = None;
        }
        match self.udps.get(conn.udp).map(|u| &u.owner) {
            // A dialled conversation owns its UDP socket.
            Some(UdpOwner::Conn(_)) => {
                if let Some(u) = self.udps.remove(conn.udp) {
                    let _ = self.poller.delete(u.fd);
                }
            }
            _ => {
                if self.by_peer.get(&(conn.udp, conn.peer)) == Some(&c) {
                    self.by_peer.remove(&(conn.udp, conn.peer));
                }
            }
        }
    }

    /// Tell the operator how `conn` ended. A client session that opened streams, whose datagrams the server's
    /// KCP acknowledged (so the path, key and crypt are right), and that never heard one valid smux frame
    /// died of a version mismatch, most likely: kcptun closes a session on a frame of the other version
    /// without a word, and its next keepalive (from a fresh session) is a frame of its own version. Without
    /// `--smuxver` the client then switches every new session to the other version. A server that never
    /// answered at all (down, firewalled, another key) is not a mismatch.
    fn report_end(&mut self, conn: &Conn, end: SessionEnd) {
        let smux = conn.mux.as_ref().map(|m| {
            let st = m.stats();
            let f = &st.frames_in;
            SmuxSummary {
                version: m.version(),
                frames_in: f.syn + f.fin + f.psh + f.nop + f.upd,
                syns_sent: st.frames_out.syn,
            }
        });
        let answered = conn.session.snmp().in_segs > 0;
        let mismatch = match (smux, end) {
            (Some(s), SessionEnd::KeepaliveTimeout)
                if !conn.passive && answered && s.frames_in == 0 && s.syns_sent > 0 =>
            {
                Some(SmuxMismatch { ours: s.version, theirs: None })
            }
            (Some(s), SessionEnd::Protocol(kcpd_smux::FrameError::BadVersion { got: got @ (1 | 2), .. }))
                if !conn.passive && s.frames_in == 0 =>
            {
                Some(SmuxMismatch { ours: s.version, theirs: Some(got) })
            }
            _ => None,
        };
        let (id, age_ms) = (conn.id, self.now().wrapping_sub(conn.born));
        self.emit(|| Event::SessionClosed { id, end, age_ms, smux, mismatch });
        let Some(m) = mismatch else { return };
        let auto = match (&conn.svc.app, self.client.as_ref().and_then(|c| c.smux_auto.as_ref())) {
            (App::TunnelClient, Some(v)) => v.clone(),
            _ => return,
        };
        let to = m.theirs.unwrap_or(if m.ours == 1 { 2 } else { 1 });
        // Every shard's sessions may notice at once: the first to switch reports it.
        if to != m.ours && auto.compare_exchange(m.ours, to, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.emit(|| Event::SmuxFallback { remote: id.remote, from: m.ours, to });
        }
    }

    // ---- client tunnel: local connections ----

    fn on_accept(&mut self, l: usize, now: u32) {
        loop {
            let stream = match self.listeners.get(l).map(|x| x.accept()) {
                Some(Ok(Some(s))) => s,
                _ => return,
            };
            let Some(client) = &self.client else { return };
            let (n, shards) = (client.conns.max(1), self.peers.len());
            // kcptun's round robin over the --conn slots, preferring slots this shard owns.
            let own: Vec<usize> = (0..n).filter(|s| s % shards == self.id).collect();
            self.rr = self.rr.wrapping_add(1);
            let slot = if own.is_empty() { self.rr % n } else { own[self.rr % own.len()] };
            let owner = slot % shards;
            if owner == self.id {
                self.attach_local(slot, stream, now);
            } else {
                self.stats.handoffs_out += 1;
                let p = &self.peers[owner];
                if p.tx.send(Ctrl::Handoff { slot, stream }).is_ok() {
                    p.waker.wake();
                }
            }
        }
    }

    /// Open a stream for a local connection on `slot`'s session (created lazily, as kcptun).
    fn attach_local(&mut self, slot: usize, stream: LocalStream, now: u32) {
        let Some(client) = self.client.clone() else { return };
        // kcptun: a slot's session is replaced when it closed or (--autoexpire) expired; an expired one keeps
        // its streams until the scavenger closes it.
        if let Some(c) = self.slots.get(slot).copied().flatten()
            && let Some(x) = self.conns.get_mut(c)
            && x.expires_at.is_some_and(|t| (now.wrapping_sub(t) as i32) >= 0)
        {
            x.slot = None;
            self.slots[slot] = None;
            let id = x.id;
            self.emit(|| Event::SessionExpired { id });
        }
        let live =
            self.slots.get(slot).copied().flatten().filter(|&c| {
                self.conns.get_mut(c).is_some_and(|x| x.mux.as_mut().is_some_and(|m| !m.smux().is_closed()))
            });
        let c = match live {
            Some(c) => c,
            None => {
                // Multiport: a random address of the range per new session (kcptun NEW).
                let mut r = [0u8; 8];
                self.rng.fill(&mut r);
                let peer = client.remote[(u64::from_le_bytes(r) % client.remote.len() as u64) as usize];
                match self.dial(peer, client.svc.clone(), Some(slot), now) {
                    Ok(c) => c,
                    Err(error) => {
                        self.emit(|| Event::SessionDialFailed { remote: peer, error });
                        self.stats.tunnel_errors += 1;
                        return;
                    }
                }
            }
        };
        let sid = match self.conns.get_mut(c).and_then(|x| x.mux.as_mut()).map(|m| m.smux().open_stream()) {
            Some(Ok(sid)) => sid,
            _ => {
                // Stream ids exhausted or session dead: a fresh session takes the next connection.
                self.kill_conn(c, Some(SessionEnd::Exhausted));
                self.stats.tunnel_errors += 1;
                return;
            }
        };
        // Named only when someone listens (a getpeername per connection otherwise for nothing).
        let app = self.events.is_some().then(|| stream.peer_endpoint());
        if let (Some(p), Some(app)) = (self.add_pipe(c, Some(sid), Local::Sock(stream), false), app) {
            self.announce(p, app);
        }
        self.mark(c);
    }

    /// The stream of pipe `p` is up: tell the operator (kcptun's "stream opened" line).
    fn announce(&mut self, p: usize, app: Endpoint) {
        let Some(pipe) = self.pipes.get_mut(p) else { return };
        let (Some(sid), Some(conn)) = (pipe.sid, self.conns.get(pipe.conn)) else { return };
        let (id, by_peer) = (conn.id, conn.passive);
        if let Some(sink) = &self.events {
            pipe.announced = Some(app.clone());
            sink.emit(Event::StreamOpened { id, sid, app, by_peer });
        }
    }

    /// A new conversation from a fresh UDP socket (kcp-go dials one socket per session).
    fn dial(&mut self, peer: SocketAddr, svc: Arc<Service>, slot: Option<usize>, now: u32) -> io::Result<usize> {
        let bind: SocketAddr =
            if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let (io, fd) = crate::shard::open_udp(self.backend, &svc, bind, false)?;
        let u = self.udps.insert(Udp { io, fd, owner: UdpOwner::Conn(usize::MAX) });
        // conv: 4 random bytes (kcp-go DialWithOptions).
        let mut conv = [0u8; 4];
        self.rng.fill(&mut conv);
        let Some(c) = self.new_conn(u32::from_le_bytes(conv), svc, u, peer, slot, false, now) else {
            self.udps.remove(u);
            return Err(io::Error::other("invalid session configuration"));
        };
        if let Some(x) = self.udps.get_mut(u) {
            x.owner = UdpOwner::Conn(c);
        }
        if let Err(e) = self.poller.add(fd, T_UDP | u as u64, Interest::READ) {
            self.kill_conn(c, Some(SessionEnd::Closed));
            return Err(e);
        }
        if let Some(slot) = slot {
            self.slots[slot] = Some(c);
            if let Some(client) = &self.client
                && client.autoexpire_ms > 0
            {
                // Deadlines on the wrapping millisecond clock must stay within i32::MAX (24.8 days) ahead.
                const FAR: u64 = i32::MAX as u64;
                let at = now.wrapping_add(u64::from(client.autoexpire_ms).min(FAR) as u32);
                let reap_in = (u64::from(client.autoexpire_ms) + u64::from(client.scavenge_ttl_ms)).min(FAR);
                let reap_at = now.wrapping_add(reap_in as u32);
                if let Some(x) = self.conns.get_mut(c) {
                    x.expires_at = Some(at);
                    self.reap.push((reap_at, c, x.generation));
                }
            }
        }
        Ok(c)
    }

    /// Close expired client sessions whose `--scavengettl` ran out, streams or not (kcptun's scavenger).
    fn scavenge(&mut self, now: u32) {
        let mut i = 0;
        while i < self.reap.len() {
            let (at, c, generation) = self.reap[i];
            let alive = self.conns.get(c).is_some_and(|x| x.generation == generation);
            if !alive {
                self.reap.swap_remove(i);
            } else if (now.wrapping_sub(at) as i32) >= 0 {
                self.reap.swap_remove(i);
                self.kill_conn(c, Some(SessionEnd::Scavenged));
            } else {
                i += 1;
            }
        }
    }

    // ---- pipes ----

    fn add_pipe(&mut self, c: usize, sid: Option<u32>, local: Local, connecting: bool) -> Option<usize> {
        let interest = if connecting { Interest::WRITE } else { Interest::READ };
        let fd = local.fd();
        // QPP wraps smux streams only (kcptun QPPPort), each direction from the initial PRNG state.
        let qpp = match (sid, self.conns.get(c).and_then(|x| x.svc.qpp.as_ref())) {
            (Some(_), Some(q)) => Some(Box::new((q.prng.clone(), q.prng.clone()))),
            _ => None,
        };
        let p = self.pipes.insert(Pipe {
            conn: c,
            sid,
            local,
            connecting,
            interest,
            readable: !connecting,
            writable: !connecting,
            up: Buf::new(),
            down: Buf::new(),
            local_eof: false,
            stream_eof: false,
            up_done: false,
            down_done: false,
            close_at: None,
            announced: None,
            qpp,
        });
        if let Some(fd) = fd
            && self.poller.add(fd, T_PIPE | p as u64, interest).is_err()
        {
            self.pipes.remove(p);
            if let (Some(sid), Some(m)) = (sid, self.conns.get_mut(c).and_then(|x| x.mux.as_mut())) {
                let _ = m.smux().stream_close(sid);
            }
            return None;
        }
        if let Some(Local::Chan(ch)) = self.pipes.get(p).map(|x| &x.local) {
            ch.attach(p);
        }
        self.stats.pipes_opened += 1;
        if let Some(conn) = self.conns.get_mut(c) {
            conn.pipes.insert(sid.unwrap_or(0), p);
        }
        Some(p)
    }

    fn on_pipe(&mut self, p: usize, r: &Ready) {
        let Some(pipe) = self.pipes.get_mut(p) else { return };
        if pipe.connecting && (r.write || r.hup) {
            pipe.connecting = false;
            let failed = match &pipe.local {
                Local::Sock(s) => match s.take_error() {
                    Ok(None) => None,
                    Ok(Some(e)) | Err(e) => Some(e),
                },
                Local::Chan(_) => None,
            };
            let target = self.conns.get(pipe.conn).filter(|_| self.events.is_some()).and_then(|x| match &x.svc.app {
                App::TunnelServer { target } => Some(target.clone()),
                _ => None,
            });
            let c = pipe.conn;
            if let Some(error) = failed {
                self.stats.target_connect_failed += 1;
                if let Some(target) = target {
                    self.emit(|| Event::TargetDialFailed { target, error });
                }
                self.close_pipe(p);
                self.mark(c);
                return;
            }
            pipe.readable = true;
            pipe.writable = true;
            if let Some(target) = target {
                self.announce(p, target);
            }
            self.mark(c);
            return;
        }
        pipe.readable |= r.read || r.hup;
        pipe.writable |= r.write;
        let c = pipe.conn;
        self.mark(c);
    }

    fn close_pipe(&mut self, p: usize) {
        let Some(mut pipe) = self.pipes.remove(p) else { return };
        if let (Some(app), Some(sid), Some(conn)) = (pipe.announced.take(), pipe.sid, self.conns.get(pipe.conn)) {
            let (id, by_peer) = (conn.id, conn.passive);
            self.emit(|| Event::StreamClosed { id, sid, app, by_peer });
        }
        Self::give_back(&mut self.buf_pool, &mut pipe.up, true);
        Self::give_back(&mut self.buf_pool, &mut pipe.down, true);
        match &pipe.local {
            Local::Sock(s) => {
                let _ = self.poller.delete(s.as_raw_fd());
            }
            Local::Chan(ch) => ch.break_with(io::ErrorKind::ConnectionAborted),
        }
        if let Some(conn) = self.conns.get_mut(pipe.conn) {
            conn.pipes.remove(&pipe.sid.unwrap_or(0));
            if let (Some(sid), Some(m)) = (pipe.sid, conn.mux.as_mut()) {
                let _ = m.smux().stream_close(sid);
            }
        }
    }

    /// Give `b`'s storage to the pool when it holds no bytes (or `force`: the pipe is gone).
    fn give_back(pool: &mut Vec<Box<[u8]>>, b: &mut Buf, force: bool) {
        if (force || b.is_empty()) && !b.data.is_empty() {
            b.start = 0;
            b.end = 0;
            let d = std::mem::take(&mut b.data);
            if pool.len() < BUF_POOL_CAP {
                pool.push(d);
            }
        }
    }

    /// Storage for an empty `b`, from the pool.
    fn lend(pool: &mut Vec<Box<[u8]>>, b: &mut Buf) {
        if b.data.is_empty() {
            b.data = pool.pop().unwrap_or_else(|| vec![0; PIPE_BUF].into_boxed_slice());
        }
    }

    /// Move a pipe's bytes both ways; returns bytes moved. Closes it when its life is over.
    fn run_pipe(&mut self, p: usize, now: u32) -> usize {
        let moved = self.run_pipe_inner(p, now);
        if let Some(pipe) = self.pipes.get_mut(p) {
            Self::give_back(&mut self.buf_pool, &mut pipe.up, false);
            Self::give_back(&mut self.buf_pool, &mut pipe.down, false);
        }
        moved
    }

    fn run_pipe_inner(&mut self, p: usize, now: u32) -> usize {
        let Some(pipe) = self.pipes.get_mut(p) else { return 0 };
        if pipe.connecting {
            return 0;
        }
        let Some(conn) = self.conns.get_mut(pipe.conn) else { return 0 };
        let half_close = conn.svc.smux.half_close;
        let close_wait = conn.svc.close_wait_ms;
        let mut moved = 0;
        let mut broken = false;
        let mut raw_closed = false;
        // Local -> network.
        loop {
            if !pipe.up.is_empty() {
                let r = match (pipe.sid, conn.mux.as_mut()) {
                    (Some(sid), Some(m)) => m.smux().stream_write(sid, pipe.up.pending()),
                    _ => {
                        let n = conn.session.send(pipe.up.pending());
                        if n > 0 {
                            conn.session.flush();
                        }
                        Ok(n)
                    }
                };
                match r {
                    Ok(n) => {
                        pipe.up.consume(n);
                        moved += n;
                    }
                    Err(SmuxError::PeerClosed(_) | SmuxError::WriteClosed(_)) => {
                        let n = pipe.up.pending().len();
                        pipe.up.consume(n);
                        pipe.local_eof = true;
                    }
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
                if !pipe.up.is_empty() {
                    break;
                }
            }
            if pipe.local_eof || !pipe.readable {
                break;
            }
            Self::lend(&mut self.buf_pool, &mut pipe.up);
            match pipe.local.read(&mut pipe.up.data) {
                Ok(0) => pipe.local_eof = true,
                Ok(n) => {
                    if let (Some(q), Some(prngs)) = (&conn.svc.qpp, pipe.qpp.as_mut()) {
                        q.pads.encrypt(&mut prngs.0, &mut pipe.up.data[..n]);
                    }
                    pipe.up.fill(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipe.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => pipe.local_eof = true,
            }
        }
        if pipe.local_eof && pipe.up.is_empty() && !pipe.up_done {
            pipe.up_done = true;
            match (pipe.sid, conn.mux.as_mut()) {
                (Some(sid), Some(m)) if half_close => {
                    let _ = m.smux().stream_close_write(sid);
                }
                (None, _) => {
                    // Raw KCP has no close on the wire: the application closing ends the conversation.
                    if let Local::Chan(ch) = &pipe.local
                        && ch.app_closed()
                    {
                        raw_closed = true;
                    }
                }
                _ => {}
            }
        }
        // Network -> local.
        loop {
            if !pipe.down.is_empty() {
                if !pipe.writable {
                    break;
                }
                match pipe.local.write(pipe.down.pending()) {
                    Ok(n) => {
                        pipe.down.consume(n);
                        moved += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        pipe.writable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
                continue;
            }
            if pipe.stream_eof {
                break;
            }
            Self::lend(&mut self.buf_pool, &mut pipe.down);
            let r = match (pipe.sid, conn.mux.as_mut()) {
                (Some(sid), Some(m)) => m.smux().stream_read(sid, &mut pipe.down.data),
                _ => match conn.session.recv(&mut pipe.down.data) {
                    0 => Err(SmuxError::WouldBlock),
                    n => Ok(n),
                },
            };
            match r {
                Ok(0) => pipe.stream_eof = true,
                Ok(n) => {
                    if let (Some(q), Some(prngs)) = (&conn.svc.qpp, pipe.qpp.as_mut()) {
                        q.pads.decrypt(&mut prngs.1, &mut pipe.down.data[..n]);
                    }
                    pipe.down.fill(n)
                }
                Err(SmuxError::WouldBlock) => break,
                Err(_) => pipe.stream_eof = true,
            }
        }
        if pipe.stream_eof && pipe.down.is_empty() && !pipe.down_done {
            pipe.down_done = true;
            if half_close || matches!(pipe.local, Local::Chan(_)) {
                pipe.local.shutdown_write();
            }
        }
        let over = if pipe.sid.is_none() {
            raw_closed
        } else if half_close || matches!(pipe.local, Local::Chan(_)) {
            pipe.up_done && pipe.down_done
        } else if pipe.up_done || pipe.down_done {
            // kcptun: when either direction ends, close both (after --closewait).
            let at = *pipe.close_at.get_or_insert(now.wrapping_add(close_wait));
            (now.wrapping_sub(at) as i32) >= 0
        } else {
            false
        };
        let c = pipe.conn;
        if raw_closed {
            self.kill_conn(c, Some(SessionEnd::Closed));
            return moved;
        }
        if broken || over {
            self.close_pipe(p);
            return moved;
        }
        // Sockets: wait only for what can make progress.
        if let Some(fd) = pipe.local.fd() {
            let want = Interest {
                read: !pipe.local_eof && pipe.up.is_empty() && !pipe.readable,
                write: !pipe.down.is_empty() && !pipe.writable,
            };
            if want != pipe.interest {
                pipe.interest = want;
                let _ = self.poller.modify(fd, T_PIPE | p as u64, want);
            }
        }
        moved
    }

    // ---- servicing a conversation ----

    fn service_dirty(&mut self, now: u32) {
        let mut i = 0;
        while i < self.dirty.len() {
            let c = self.dirty[i];
            i += 1;
            if let Some(conn) = self.conns.get_mut(c) {
                conn.queued = false;
            }
            self.service(c, now);
        }
        self.dirty.clear();
    }

    fn service(&mut self, c: usize, now: u32) {
        for _round in 0..8 {
            let Some(conn) = self.conns.get_mut(c) else { return };
            let mut moved = 0;
            if let Some(m) = conn.mux.as_mut() {
                if m.poll_timeout().is_some_and(|t| (now.wrapping_sub(t) as i32) >= 0) {
                    m.handle_timeout(now);
                }
                moved += match m.pump(now, &mut conn.session) {
                    Ok(n) => n,
                    Err(e) => {
                        self.stats.tunnel_errors += 1;
                        self.close_flushed(c, now, mux_end(e));
                        return;
                    }
                };
                if !conn.smux_reported && m.version() != 0 {
                    conn.smux_reported = true;
                    let (id, version) = (conn.id, m.version());
                    self.emit(|| Event::SmuxDetected { id, version });
                }
            }
            // smux events.
            while let Some(e) = self.conns.get_mut(c).and_then(|x| x.mux.as_mut()).and_then(|m| m.smux().poll_event()) {
                match e {
                    SmuxEvent::Accepted(sid) => self.accept_stream(c, sid),
                    SmuxEvent::SessionClosed(why) => {
                        self.close_flushed(c, now, why.into());
                        return;
                    }
                    _ => {}
                }
            }
            // A scratch list kept across calls: no allocation per pass.
            let mut pipes = std::mem::take(&mut self.scratch);
            pipes.clear();
            if let Some(x) = self.conns.get(c) {
                pipes.extend(x.pipes.values().copied());
            }
            for &p in &pipes {
                moved += self.run_pipe(p, now);
            }
            self.scratch = pipes;
            let Some(conn) = self.conns.get_mut(c) else { return };
            if let Some(m) = conn.mux.as_mut() {
                moved += m.pump(now, &mut conn.session).unwrap_or(0);
            }
            if moved == 0 {
                break;
            }
        }
        self.transmit(c, now, true);
        // Next deadline: KCP, smux keepalive, a pipe's close-wait.
        let Some(conn) = self.conns.get(c) else { return };
        let mut next = [conn.session.poll_timeout(), conn.mux.as_ref().and_then(|m| m.poll_timeout()), conn.rate_wait]
            .into_iter()
            .flatten()
            .min_by_key(|t| t.wrapping_sub(now) as i32);
        for p in conn.pipes.values() {
            if let Some(at) = self.pipes.get(*p).and_then(|x| x.close_at) {
                next = Some(next.map_or(at, |n| if (at.wrapping_sub(n) as i32) < 0 { at } else { n }));
            }
        }
        match next {
            Some(t) => self.wheel.arm(c as u32, t),
            None => self.wheel.disarm(c as u32),
        }
    }

    /// End `c` after sending what KCP still owes the peer (ACKs of what it delivered), as kcp-go's `Close`
    /// flushes: a peer whose data was taken stops retransmitting it, instead of starting a new session
    /// here with every retransmission.
    fn close_flushed(&mut self, c: usize, now: u32, end: SessionEnd) {
        if let Some(conn) = self.conns.get_mut(c) {
            conn.session.flush();
        }
        self.transmit(c, now, false);
        self.flush_tx();
        self.kill_conn(c, Some(end));
    }

    /// A stream the peer opened: to the target (tunnel server), or to the application (library).
    fn accept_stream(&mut self, c: usize, sid: u32) {
        let Some(conn) = self.conns.get_mut(c) else { return };
        match (&conn.svc.app, conn.accept.clone()) {
            (App::TunnelServer { target }, _) => match LocalStream::connect(target) {
                Ok(sock) => {
                    // TCP connects in the background (announced once connected); unix at once.
                    let connecting = matches!(target, Endpoint::Tcp(_));
                    let target = target.clone();
                    if let Some(p) = self.add_pipe(c, Some(sid), Local::Sock(sock), connecting)
                        && !connecting
                    {
                        self.announce(p, target);
                    }
                }
                Err(error) => {
                    self.stats.target_connect_failed += 1;
                    let target = target.clone();
                    if let Some(m) = conn.mux.as_mut() {
                        let _ = m.smux().stream_close(sid);
                    }
                    self.emit(|| Event::TargetDialFailed { target, error });
                }
            },
            (App::Mux { .. }, Some(tx)) => {
                let me = &self.peers[self.id];
                let Ok(w) = me.waker.try_clone() else { return };
                let ch = Arc::new(Chan::new(me.tx.clone(), w));
                if tx.send(ch.clone()).is_ok() {
                    self.add_pipe(c, Some(sid), Local::Chan(ch), false);
                } else if let Some(m) = conn.mux.as_mut() {
                    let _ = m.smux().stream_close(sid);
                }
            }
            _ => {
                // kcptun clients never accept streams.
                if let Some(m) = conn.mux.as_mut() {
                    let _ = m.smux().stream_close(sid);
                }
            }
        }
    }

    /// Send what conversation `c` has ready; `paced`: within `--ratelimit` (the last flush of a closing
    /// session is not: nothing follows it).
    fn transmit(&mut self, c: usize, now: u32, paced: bool) {
        loop {
            let Some(conn) = self.conns.get_mut(c) else { return };
            let rate = if paced { conn.svc.rate_limit } else { 0 };
            if rate > 0 {
                // Token bucket (kcp-go: rate.Limiter with a 96000-byte burst, WaitN before each batch): send
                // while not in debt, charge what went out, wait for the debt to be earned back.
                let el = u128::from(now.wrapping_sub(conn.refilled_at).min(60_000));
                let credit = (el * u128::from(rate) / 1000).min(RATE_BURST as u128 * 2) as i64;
                // Time that earned less than a byte (very low rates) keeps accruing.
                if credit > 0 {
                    conn.tokens = (conn.tokens + credit).min(RATE_BURST);
                    conn.refilled_at = now;
                }
                if conn.tokens <= 0 {
                    let wait = ((-conn.tokens) as u64 * 1000).div_ceil(rate).max(1);
                    conn.rate_wait = Some(now.wrapping_add(wait.min(60_000) as u32));
                    return;
                }
                conn.rate_wait = None;
            }
            let room = TX_MAX - self.tx_pending.len().min(TX_MAX);
            if room == 0 || self.tx_arena.len() - self.tx_used < conn.session.max_datagram() {
                self.flush_tx();
                continue;
            }
            let off = self.tx_used;
            let n = conn.session.poll_transmit_packed(
                now,
                &mut self.rng,
                &mut self.tx_arena[off..],
                &mut self.tx_lens[..room],
            );
            if n == 0 {
                return;
            }
            if rate > 0 {
                conn.tokens -= self.tx_lens[..n].iter().sum::<usize>() as i64;
            }
            let (udp, dst, src_ip) = (conn.udp, conn.peer, conn.local_ip);
            let gso = self.udps.get(udp).map_or(1, |u| u.io.max_gso_segments());
            let mut o = off;
            for &len in &self.tx_lens[..n] {
                // Extend the previous run when it is this session's and the same size (UDP GSO).
                match self.tx_pending.last_mut() {
                    Some(last)
                        if last.udp == udp
                            && last.dst == dst
                            && last.len == len
                            && last.segs < gso
                            && last.off + last.len * last.segs == o =>
                    {
                        last.segs += 1;
                    }
                    _ => self.tx_pending.push(Pending { udp, dst, src_ip, off: o, len, segs: 1 }),
                }
                o += len;
            }
            self.tx_used = o;
            if n < room {
                return;
            }
        }
    }

    fn flush_tx(&mut self) {
        let mut i = 0;
        while i < self.tx_pending.len() {
            let udp = self.tx_pending[i].udp;
            let mut j = i;
            while j < self.tx_pending.len() && self.tx_pending[j].udp == udp {
                j += 1;
            }
            let mut msgs: [Transmit<'_>; TX_MAX] =
                core::array::from_fn(|_| Transmit::new(SocketAddr::from(([0, 0, 0, 0], 0)), &[]));
            for (m, p) in msgs.iter_mut().zip(&self.tx_pending[i..j]) {
                *m = Transmit {
                    dst: p.dst,
                    payload: &self.tx_arena[p.off..p.off + p.len * p.segs],
                    src_ip: p.src_ip,
                    segment_size: (p.segs > 1).then_some(p.len),
                };
            }
            let mut sent = 0;
            if let Some(u) = self.udps.get_mut(udp) {
                while sent < j - i {
                    match u.io.send_batch(&msgs[sent..j - i]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sent += n,
                    }
                }
            }
            // What the kernel would not take is lost, as on a full link; KCP retransmits it.
            for p in &self.tx_pending[i + sent..j] {
                self.stats.tx_dropped += p.segs as u64;
            }
            i = j;
        }
        self.tx_pending.clear();
        self.tx_used = 0;
    }
}
