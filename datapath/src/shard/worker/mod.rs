//! One shard: an event loop on one thread that owns its UDP sockets, an [`Endpoint`] with its
//! conversations, the local ends of their streams (sockets, or channels to application threads), a timer
//! wheel and its buffers. It only moves bytes between file descriptors and those state machines: per
//! iteration it waits for readiness (or the next deadline), reads the clock and passes that `now` down,
//! hands received datagram batches to the endpoint (each batch stamped with the clock as it is read),
//! services every conversation that has news (timers, `pump`, events, stream bytes) and transmits their
//! datagrams in batches (GSO where the backend has it).
//!
//! Rooms: `pipe` (local ends of streams), `client` (the client tunnel's `--conn` slots and dials), `tx`
//! (transmit batching).

mod client;
mod migrate;
mod pipe;
mod tx;

use kcpd_time::Instant;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use kcpd_crypto::NonceGen;

use crate::event::{Event, EventSink, SessionEnd, SessionId};
use crate::io::{Backend, DatagramIo, IoStats, RecvMeta};
use crate::proto::conn::{Conn, ConnEvent};
use crate::proto::endpoint::{ConnHandle, DatagramEvent, Endpoint, ListenConfig, Migration};
use crate::shard::chan::Chan;
use crate::shard::ctrl::{Ctrl, MoveAsk, Peer, ShardStats};
use crate::shard::local::{Endpoint as LocalEndpoint, LocalListener, LocalStream};
use crate::shard::poller::{Interest, Poller, Ready, WakeReceiver};
use crate::shard::service::{Accepted, App, ClientSetup, Service};
use crate::shard::timer::Wheel;
use crate::slab::Slab;

pub use migrate::Moved;
use pipe::{Local, Pipe};
use tx::TxBatch;

/// Datagrams received per batch.
const RX_BATCH: usize = 32;
/// Receive buffer size: room for a GRO super-packet.
const RX_BUF: usize = 65536;
/// Streams of a library smux session waiting for `accept_stream` (smux's `acceptBacklog`); more are
/// refused.
const STREAM_BACKLOG: usize = 1024;
/// Receive batches taken from one socket per loop turn before timers, transmits and the other ready
/// sockets get their turn (a socket with more waits for the next turn, which does not sleep).
const RX_ROUNDS: usize = 4;

const T_WAKER: u64 = 0;
const T_UDP: u64 = 1 << 56;
const T_PIPE: u64 = 2 << 56;
const T_LISTEN: u64 = 3 << 56;
const T_MASK: u64 = 0xff << 56;

/// A conversation's file-descriptor side: its socket, its streams' pipes, who hears of it.
struct ConnIo {
    handle: ConnHandle,
    svc: Arc<Service>,
    udp: usize,
    peer: SocketAddr,
    /// How events name it (conv, the socket's bound address, the peer).
    id: SessionId,
    /// A listener's conversation: the local address the peer sent to (reply from it when bound to a
    /// wildcard). Never set for a dialled one: the kernel picks its source address per datagram.
    local_ip: Option<IpAddr>,
    /// Client tunnel: the `--conn` slot it serves.
    slot: Option<usize>,
    /// Pipes by smux stream id; a raw conversation's single pipe under id 0.
    pipes: HashMap<u32, usize>,
    /// Library smux: where streams the peer opens go.
    accept: Option<Sender<Arc<Chan>>>,
    queued: bool,
}

enum UdpOwner {
    /// Conversations from any address: a listening socket.
    Listener(Arc<Service>),
    /// One dialled conversation's own socket (the endpoint knows which).
    Conn,
}

struct Udp {
    io: Box<dyn DatagramIo + Send>,
    fd: RawFd,
    owner: UdpOwner,
}

/// Everything a shard starts with.
pub struct Setup {
    /// The shard's index: into `peers`, in its thread's name, and which `--conn` slots it owns.
    pub id: usize,
    /// The backend of the UDP sockets the shard opens itself (one per dialled session).
    pub backend: Backend,
    /// epoll, or poll(2) for the `poll` backend; the worker registers everything it watches here.
    pub poller: Box<dyn Poller>,
    /// The shard's end of its [`Waker`](crate::shard::poller::Waker), registered at once.
    pub wake_rx: WakeReceiver,
    /// Control messages from other threads, read when woken.
    pub ctrl: Receiver<Ctrl>,
    /// Pipe ids of application channels with news (their `Kicker`s), read when woken.
    pub kicks: Receiver<usize>,
    /// How to reach every shard, this one included, by id: hand-offs, and the kickers of new channels.
    pub peers: Arc<Vec<Peer>>,
    /// The shards' common time origin.
    pub epoch: std::time::Instant,
    /// Already bound UDP sockets (this shard's share of each listening address), with their service.
    pub listeners: Vec<(super::UdpSocks, Arc<Service>)>,
    /// Client tunnel: its sessions' setup and the local listeners this shard accepts on (for a unix path,
    /// only shard 0 has one).
    pub client: Option<(Arc<ClientSetup>, Vec<LocalListener>)>,
    /// The process-wide state every shard's endpoint shares.
    pub front: Arc<super::FrontDoor>,
    /// Where operator-facing events go; `None`: nowhere (the library).
    pub events: Option<EventSink>,
}

/// One shard: built by the thread that starts the engine ([`Worker::new`]), then moved to its own thread
/// and [`run`](Worker::run) there. It owns every socket, conversation, pipe and timer it holds; other
/// threads reach it only through its [`Peer`].
pub struct Worker {
    id: usize,
    backend: Backend,
    poller: Box<dyn Poller>,
    wake_rx: WakeReceiver,
    ctrl: Receiver<Ctrl>,
    kicks: Receiver<usize>,
    peers: Arc<Vec<Peer>>,
    epoch: std::time::Instant,
    ep: Endpoint,
    /// The process-wide front door `ep` consults (kept for its reports).
    front: Arc<super::FrontDoor>,
    udps: Slab<Udp>,
    /// Each conversation's fd side, by its endpoint slot.
    conns: Vec<Option<ConnIo>>,
    pipes: Slab<Pipe>,
    client: Option<Arc<ClientSetup>>,
    listeners: Vec<LocalListener>,
    /// Local listeners resting after `accept` failed (out of descriptors), until when.
    paused: Vec<Option<Instant>>,
    /// `accept` is failing; told the operator (once, until an accept succeeds).
    accept_failing: bool,
    /// Client tunnel: conversation per `--conn` slot (only slots this shard owns are used).
    slots: Vec<Option<ConnHandle>>,
    rr: usize,
    wheel: Wheel,
    rng: NonceGen,
    rx_bufs: Vec<Vec<u8>>,
    rx_meta: Vec<RecvMeta>,
    tx: TxBatch,
    dirty: Vec<ConnHandle>,
    /// Sockets that had more datagrams than one turn takes ([`RX_ROUNDS`]): read again next turn.
    rx_again: Vec<usize>,
    ready: Vec<Ready>,
    expired: Vec<u32>,
    scratch: Vec<usize>,
    /// Pipe buffers not in use: a pipe holds one only while bytes wait in it, so an idle connection costs
    /// no buffer memory and a busy one never allocates.
    buf_pool: Vec<Box<[u8]>>,
    stats: ShardStats,
    /// Where operator-facing events go (the daemon's log); `None`: nobody listens.
    events: Option<EventSink>,
    stop: bool,
}

impl Worker {
    /// Register the waker and the local listeners with the poller and take over the listening sockets;
    /// fails if the poller refuses one or a listener's configuration is invalid.
    pub fn new(setup: Setup) -> io::Result<Self> {
        let Setup { id, backend, mut poller, wake_rx, ctrl, kicks, peers, epoch, listeners, client, front, events } =
            setup;
        poller.add(wake_rx.fd(), T_WAKER, Interest::READ)?;
        let now = Instant::from_micros(epoch.elapsed().as_micros() as u64);
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
            kicks,
            peers,
            epoch,
            ep: Endpoint::with_shard(front.clone(), id),
            front,
            udps: Slab::default(),
            conns: Vec::new(),
            pipes: Slab::default(),
            client,
            listeners: local_listeners,
            paused: Vec::new(),
            accept_failing: false,
            slots,
            rr: id,
            wheel: Wheel::new(now),
            rng: NonceGen::new(),
            rx_bufs: (0..RX_BATCH).map(|_| vec![0u8; RX_BUF]).collect(),
            rx_meta: vec![RecvMeta::EMPTY; RX_BATCH],
            tx: TxBatch::new(),
            dirty: Vec::new(),
            rx_again: Vec::new(),
            ready: Vec::new(),
            expired: Vec::new(),
            scratch: Vec::new(),
            buf_pool: Vec::new(),
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
            let mut cfg = ListenConfig::new(svc.conn.clone(), svc.upper(true));
            // The tunnel's conversations move between shards with their pipes; a library's stay on their
            // shard (its applications hold this shard's handles and wake handles).
            if !matches!(svc.app, App::TunnelServer { .. }) && cfg.migration == Migration::Anywhere {
                cfg.migration = Migration::Local;
            }
            // One group per service and local address: the same on every shard (SO_REUSEPORT siblings).
            let mut g = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(Arc::as_ptr(&svc) as usize, io.local_addr()), &mut g);
            cfg.group = std::hash::Hasher::finish(&g);
            let cfg = Arc::new(cfg);
            let u = self.udps.insert(Udp { io, fd, owner: UdpOwner::Listener(svc.clone()) });
            if let Err(e) = self.ep.listen(u, cfg) {
                self.udps.remove(u);
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
            }
            self.poller.add(fd, T_UDP | u as u64, Interest::READ)?;
        }
        Ok(())
    }

    /// The clock: read after the wait, per received batch, and once more before the turn services and
    /// transmits; passed down, never read below.
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Report `f()` to the operator, if anyone listens (never blocks; built only then).
    fn emit(&self, f: impl FnOnce() -> Event) {
        if let Some(sink) = &self.events {
            sink.emit(f());
        }
    }

    fn io(&self, h: ConnHandle) -> Option<&ConnIo> {
        self.conns.get(h.index)?.as_ref().filter(|c| c.handle == h)
    }

    fn io_mut(&mut self, h: ConnHandle) -> Option<&mut ConnIo> {
        self.conns.get_mut(h.index)?.as_mut().filter(|c| c.handle == h)
    }

    /// Run until told to stop.
    pub fn run(mut self) {
        while !self.stop {
            let now = self.now();
            let resume = self.resume_listeners(now);
            let timeout = if self.rx_again.is_empty() {
                let t = self.wheel.next_in(now, 1000).map_or(1000, |t| t as i32);
                resume.map_or(t, |r| t.min(r.saturating_since(now).as_millis().min(1000) as i32 + 1))
            } else {
                0
            };
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            if let Err(error) = self.poller.wait(&mut ready, timeout) {
                let shard = self.id;
                self.emit(|| Event::ShardError { shard, what: "poll failed; the shard stops", error });
                break;
            }
            let mut now = self.now();
            // Sockets left with datagrams last turn, unless the poller reported them again.
            let mut again = std::mem::take(&mut self.rx_again);
            again.retain(|u| !ready.iter().any(|r| r.token == T_UDP | *u as u64));
            for &u in &again {
                now = self.on_udp(u, now);
            }
            again.clear();
            if self.rx_again.is_empty() {
                self.rx_again = again;
            }
            for r in &ready {
                match r.token & T_MASK {
                    T_WAKER => self.on_wake(now),
                    T_UDP => now = self.on_udp((r.token & !T_MASK) as usize, now),
                    T_PIPE => self.on_pipe((r.token & !T_MASK) as usize, r),
                    T_LISTEN => self.on_accept((r.token & !T_MASK) as usize, now),
                    _ => {}
                }
            }
            self.ready = ready;
            // What the turn sends is stamped as late as it can be (RTT samples, pacing).
            let now = self.now();
            let mut expired = std::mem::take(&mut self.expired);
            expired.clear();
            self.wheel.expire(now, &mut expired);
            for &c in &expired {
                if let Some(h) = self.ep.handle_at(c as usize) {
                    self.mark(h);
                }
            }
            self.expired = expired;
            if self.events.is_some()
                && let Some(refused) = self.front.poll_report(now)
            {
                self.emit(|| Event::FrontDoor { refused });
            }
            self.service_dirty(now);
            self.flush_tx();
        }
        for h in self.ep.handles() {
            self.kill_conn(h, None);
        }
    }

    fn mark(&mut self, h: ConnHandle) {
        if let Some(io) = self.io_mut(h)
            && !io.queued
        {
            io.queued = true;
            self.dirty.push(h);
        }
    }

    // ---- control ----

    fn on_wake(&mut self, now: Instant) {
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
                    let r = self.dial(peer, svc, None, now).and_then(|h| self.dialed(h));
                    let _ = reply.send(r);
                }
                Ctrl::OpenStream { conn, reply } => {
                    let r = self.open_chan_stream(conn);
                    let _ = reply.send(r);
                }
                Ctrl::CloseConn { conn } => self.kill_conn(conn, Some(SessionEnd::Closed)),
                Ctrl::MoveAsk(ask) => self.move_out(*ask, now),
                Ctrl::MoveIn(moved) => self.move_in(*moved, now),
            }
        }
        while let Ok(pipe) = self.kicks.try_recv() {
            if let Some(p) = self.pipes.get_mut(pipe) {
                if let Local::Chan(ch) = &p.local {
                    ch.clear_kick();
                }
                p.readable = true;
                p.writable = true;
                let h = p.conn;
                self.mark(h);
            }
        }
    }

    fn snapshot(&self) -> ShardStats {
        let mut s = self.stats.clone();
        s.snmp = self.ep.snmp();
        s.sessions = self.ep.len();
        let es = self.ep.stats();
        s.foreign_src = es.foreign_src;
        s.oversize = es.oversize;
        s.migrated_in = es.migrated_in;
        s.migrated_out = es.migrated_out;
        s.migration_stale = es.migration_stale;
        s.migration_held = es.migration_held;
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
            io.tx_blocked += x.tx_blocked;
            io.errors += x.errors;
            io.gso_disabled += x.gso_disabled;
            io.tx_unroutable += x.tx_unroutable;
            if let Some(f) = u.io.flow_stats() {
                s.tcp.add(&f);
            }
        }
        s.io = io;
        s
    }

    // ---- UDP ----

    /// Read up to [`RX_ROUNDS`] batches from socket `u` and hand them to the endpoint; returns the clock
    /// of the last batch (`now` if it read none). Each batch is stamped when it is read: with the turn's
    /// clock, an acknowledgement that arrived while earlier batches were being decrypted and decoded
    /// looked up to a few milliseconds early, and on a busy 2-core machine one such sample set a minimum
    /// RTT of 36.2 ms on a 40 ms path.
    fn on_udp(&mut self, u: usize, now: Instant) -> Instant {
        let now = self.on_udp_batches(u, now);
        // A connection-shaped transport (fake TCP) says which peers' connections ended.
        while let Some(peer) = self.udps.get_mut(u).and_then(|x| x.io.poll_closed()) {
            if let Some(h) = self.ep.lookup(u, peer) {
                self.kill_conn(h, Some(SessionEnd::TransportClosed));
            }
        }
        now
    }

    fn on_udp_batches(&mut self, u: usize, mut now: Instant) -> Instant {
        for _round in 0..RX_ROUNDS {
            let n = {
                let Some(udp) = self.udps.get_mut(u) else { return now };
                let mut bufs: [&mut [u8]; RX_BATCH] = core::array::from_fn(|_| &mut [][..]);
                for (b, v) in bufs.iter_mut().zip(self.rx_bufs.iter_mut()) {
                    *b = &mut v[..];
                }
                match udp.io.recv_batch(&mut bufs, &mut self.rx_meta) {
                    Ok(n) => n,
                    Err(_) => {
                        self.ep.count_rx_error();
                        return now;
                    }
                }
            };
            if n == 0 {
                return now;
            }
            now = self.now();
            for i in 0..n {
                let meta = self.rx_meta[i];
                if meta.truncated {
                    self.ep.drop_truncated();
                    continue;
                }
                let mut buf = std::mem::take(&mut self.rx_bufs[i]);
                if meta.len == 0 {
                    self.on_datagram(u, meta.src, meta.dst_ip, &mut [], now);
                }
                for d in buf[..meta.len].chunks_mut(meta.stride.max(1)) {
                    self.on_datagram(u, meta.src, meta.dst_ip, d, now);
                }
                self.rx_bufs[i] = buf;
            }
            if n < RX_BATCH {
                return now;
            }
        }
        // Still full: the rest waits for the next turn, after timers and transmits.
        self.stats.rx_deferred += 1;
        if !self.rx_again.contains(&u) {
            self.rx_again.push(u);
        }
        now
    }

    fn on_datagram(&mut self, u: usize, src: SocketAddr, dst_ip: Option<IpAddr>, d: &mut [u8], now: Instant) {
        match self.ep.handle_datagram(now, u, src, d) {
            DatagramEvent::New(h) => {
                while let Some((old, conn, end)) = self.ep.poll_retired() {
                    self.retire(old, conn, Some(end));
                }
                while self.ep.accept().is_some() {}
                let svc = match self.udps.get(u).map(|x| &x.owner) {
                    Some(UdpOwner::Listener(svc)) => svc.clone(),
                    _ => return,
                };
                if let Some(h) = self.opened(h, svc, u, src, None) {
                    if let Some(io) = self.io_mut(h) {
                        io.local_ip = dst_ip;
                    }
                    self.mark(h);
                }
            }
            DatagramEvent::Existing(h) => {
                // A listener on a wildcard address replies from the address the peer sent to; a dialled
                // socket lets the kernel pick its source per datagram, so that a client whose address
                // changes sends from the new one (a pinned source would fail with EADDRNOTAVAIL for good).
                let listening = matches!(self.udps.get(u).map(|x| &x.owner), Some(UdpOwner::Listener(_)));
                if let Some(io) = self.io_mut(h)
                    && listening
                {
                    io.local_ip = dst_ip.or(io.local_ip);
                }
                self.mark(h);
            }
            DatagramEvent::Migrated(h) => {
                while let Some((old, conn, end)) = self.ep.poll_retired() {
                    self.retire(old, conn, Some(end));
                }
                let shard = self.id;
                let Some(io) = self.io_mut(h) else { return };
                let from = io.peer;
                (io.udp, io.peer, io.id.remote, io.local_ip) = (u, src, src, dst_ip.or(io.local_ip));
                let id = io.id;
                self.emit(|| Event::SessionMigrated { id, from, shards: (shard, shard) });
                self.mark(h);
            }
            DatagramEvent::Elsewhere(ho) => {
                let ask = MoveAsk {
                    to: (self.id, u),
                    handle: ho.from.handle,
                    remote: src,
                    local_ip: dst_ip,
                    len: ho.len,
                    plain: d[ho.range()].to_vec(),
                };
                if let Some(peer) = self.peers.get(ho.from.shard)
                    && peer.tx.send(Ctrl::MoveAsk(Box::new(ask))).is_ok()
                {
                    peer.waker.wake();
                }
            }
            DatagramEvent::Dropped(_) => {}
        }
    }

    /// Give a conversation the endpoint created its fd side; tell the operator and, for a library
    /// listener, the application. `None` when nobody took it (then it is gone).
    fn opened(
        &mut self,
        h: ConnHandle,
        svc: Arc<Service>,
        udp: usize,
        peer: SocketAddr,
        slot: Option<usize>,
    ) -> Option<ConnHandle> {
        let conn = self.ep.get(h)?;
        let (passive, smux, conv) = (conn.is_passive(), conn.smux_version(), conn.conv());
        let local = self.udps.get(udp).map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |u| u.io.local_addr());
        let id = SessionId { conv, local, remote: peer };
        if self.conns.len() <= h.index {
            self.conns.resize_with(h.index + 1, || None);
        }
        self.conns[h.index] = Some(ConnIo {
            handle: h,
            svc: svc.clone(),
            udp,
            peer,
            id,
            local_ip: None,
            slot,
            pipes: HashMap::new(),
            accept: None,
            queued: false,
        });
        self.emit(|| Event::SessionOpened { id, by_peer: passive, smux });
        // The library hears of conversations the peer opened.
        if passive {
            let delivered = match &svc.app {
                // Bounded queues (kcp-go's accept backlog): past them the session is dropped, counted.
                App::Raw { accept: Some(tx) } if tx.is_full() => {
                    self.stats.accept_overflow += 1;
                    false
                }
                App::Raw { accept: Some(tx) } => match self.raw_chan(h) {
                    Ok(ch) => tx.try_send(Accepted::Raw(ch)).is_ok(),
                    Err(_) => false,
                },
                App::Mux { accept: Some(tx) } => {
                    let (stx, srx) = crossbeam_channel::bounded(STREAM_BACKLOG);
                    if let Some(io) = self.io_mut(h) {
                        io.accept = Some(stx);
                    }
                    let sent = tx.try_send(Accepted::Mux { shard: self.id, conn: h, streams: srx });
                    if matches!(sent, Err(crossbeam_channel::TrySendError::Full(_))) {
                        self.stats.accept_overflow += 1;
                    }
                    sent.is_ok()
                }
                _ => true,
            };
            if !delivered {
                self.kill_conn(h, Some(SessionEnd::Closed));
                return None;
            }
        }
        Some(h)
    }

    /// End conversation `h`; `end` says why (for the operator's log), `None` at shutdown (not logged).
    fn kill_conn(&mut self, h: ConnHandle, end: Option<SessionEnd>) {
        if let Some(conn) = self.ep.remove(h) {
            self.retire(h, conn, end);
        }
    }

    /// Release the fd side of a conversation the endpoint no longer has.
    fn retire(&mut self, h: ConnHandle, conn: Conn, end: Option<SessionEnd>) {
        self.wheel.disarm(h.index as u32);
        let Some(mut io) = self.conns.get_mut(h.index).and_then(|c| c.take_if(|c| c.handle == h)) else { return };
        for (_, p) in std::mem::take(&mut io.pipes) {
            if let Some(pipe) = self.pipes.remove(p) {
                if let (Some(app), Some(sid), Some(_)) = (pipe.announced, pipe.sid, end) {
                    let (id, by_peer) = (io.id, conn.is_passive());
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
            self.report_end(&conn, &io, end);
        }
        if let Some(slot) = io.slot
            && self.slots.get(slot) == Some(&Some(h))
        {
            self.slots[slot] = None;
        }
        // A dialled conversation owns its UDP socket.
        if let Some(Udp { owner: UdpOwner::Conn, .. }) = self.udps.get(io.udp)
            && let Some(u) = self.udps.remove(io.udp)
        {
            let _ = self.poller.delete(u.fd);
        }
    }

    /// Tell the operator how `conn` ended (with [`Conn::diagnose`]'s smux version diagnosis). Without
    /// `--smuxver` a client then switches every new session to the version the server speaks.
    fn report_end(&mut self, conn: &Conn, io: &ConnIo, end: SessionEnd) {
        let (smux, mismatch) = conn.diagnose(end);
        let (id, age_ms) = (io.id, (self.now() - conn.born()).as_millis().min(u64::from(u32::MAX)) as u32);
        self.emit(|| Event::SessionClosed { id, end, age_ms, smux, mismatch });
        let Some(m) = mismatch else { return };
        let auto = match (&io.svc.app, self.client.as_ref().and_then(|c| c.smux_auto.as_ref())) {
            (App::TunnelClient, Some(v)) => v.clone(),
            _ => return,
        };
        let to = m.theirs.unwrap_or(if m.ours == 1 { 2 } else { 1 });
        // Every shard's sessions may notice at once: the first to switch reports it.
        let (o, r) = (std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed);
        if to != m.ours && auto.compare_exchange(m.ours, to, o, r).is_ok() {
            self.emit(|| Event::SmuxFallback { remote: id.remote, from: m.ours, to });
        }
    }

    // ---- servicing a conversation ----

    fn service_dirty(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.dirty.len() {
            let h = self.dirty[i];
            i += 1;
            if let Some(io) = self.io_mut(h) {
                io.queued = false;
            }
            self.service(h, now);
        }
        self.dirty.clear();
    }

    fn service(&mut self, h: ConnHandle, now: Instant) {
        for _round in 0..8 {
            let Some(conn) = self.ep.get_mut(h) else { return };
            conn.handle_timeout(now);
            let mut moved = conn.pump(now);
            if !self.conn_events(h, now) {
                return;
            }
            // A scratch list kept across calls: no allocation per pass.
            let mut pipes = std::mem::take(&mut self.scratch);
            pipes.clear();
            if let Some(io) = self.io(h) {
                pipes.extend(io.pipes.values().copied());
            }
            for &p in &pipes {
                moved += self.run_pipe(p, now);
            }
            self.scratch = pipes;
            let Some(conn) = self.ep.get_mut(h) else { return };
            moved += conn.pump(now);
            // Send what this round queued before reading the next chunk: the peer works on it meanwhile.
            // Sent once after all rounds, a service's worth went out in one burst and the two ends took
            // turns idling (clean veth, `--cc bbr`: 100 MB/s against 250 sent per round).
            self.transmit(h, now);
            if moved == 0 {
                break;
            }
        }
        // A conversation that ended on the last pump goes now; other news waits for the next service.
        if self.ep.get(h).is_some_and(Conn::is_closing) && !self.conn_events(h, now) {
            return;
        }
        // What closing queued (its last ACKs); the rounds sent the rest.
        self.transmit(h, now);
        // Next deadline: KCP, smux keepalive, rate limit, a stream's close-wait, the scavenger.
        match self.ep.get(h).and_then(|c| c.poll_timeout(now)) {
            Some(t) => self.wheel.arm(h.index as u32, t),
            None => self.wheel.disarm(h.index as u32),
        }
    }

    /// Act on what conversation `h` reported; `false` when it ended.
    fn conn_events(&mut self, h: ConnHandle, now: Instant) -> bool {
        while let Some(e) = self.ep.get_mut(h).and_then(Conn::poll_event) {
            match e {
                ConnEvent::StreamOpened(sid) => self.accept_stream(h, sid),
                ConnEvent::StreamRefused(_) => self.stats.streams_refused += 1,
                ConnEvent::SmuxDetected(version) => {
                    if let Some(id) = self.io(h).map(|io| io.id) {
                        self.emit(|| Event::SmuxDetected { id, version });
                    }
                }
                ConnEvent::Closed { end, flush, error } => {
                    if error {
                        self.stats.tunnel_errors += 1;
                    }
                    if flush {
                        // What KCP still owes the peer (ACKs of what it delivered), as kcp-go's `Close`
                        // flushes: a peer whose data was taken stops retransmitting it, instead of
                        // starting a new session here with every retransmission.
                        self.transmit(h, now);
                        self.flush_tx();
                    }
                    self.kill_conn(h, Some(end));
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    /// A stream the peer opened: to the target (tunnel server), or to the application (library).
    fn accept_stream(&mut self, h: ConnHandle, sid: u32) {
        let Some(io) = self.io(h) else { return };
        let (svc, accept) = (io.svc.clone(), io.accept.clone());
        match (&svc.app, accept) {
            (App::TunnelServer { target }, _) => match LocalStream::connect(target) {
                Ok(sock) => {
                    // TCP connects in the background (announced once connected); unix at once.
                    let connecting = matches!(target, LocalEndpoint::Tcp(_));
                    if let Some(p) = self.add_pipe(h, Some(sid), Local::Sock(sock), connecting)
                        && !connecting
                    {
                        self.announce(p, target.clone());
                    }
                }
                Err(error) => {
                    self.stats.target_connect_failed += 1;
                    if let Some(conn) = self.ep.get_mut(h) {
                        conn.stream_detach(Some(sid));
                    }
                    let target = target.clone();
                    self.emit(|| Event::TargetDialFailed { target, error });
                }
            },
            (App::Mux { .. }, Some(tx)) => {
                let ch = self.peers[self.id].kicker().map(|k| Arc::new(Chan::new(k)));
                if tx.is_full() {
                    self.stats.accept_overflow += 1;
                }
                match ch {
                    Ok(ch) if tx.try_send(ch.clone()).is_ok() => {
                        self.add_pipe(h, Some(sid), Local::Chan(ch), false);
                    }
                    // No wake handle, nobody accepting, or too many waiting: the stream is refused.
                    _ => {
                        if let Some(conn) = self.ep.get_mut(h) {
                            conn.stream_detach(Some(sid));
                        }
                    }
                }
            }
            _ => {
                // kcptun clients never accept streams.
                if let Some(conn) = self.ep.get_mut(h) {
                    conn.stream_detach(Some(sid));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
