//! `kcpd-netem`: a userspace UDP impairment relay (Linux).
//!
//! Clients send to [`Relay::local_addr`]; each distinct client address gets its own upstream socket (as
//! behind a NAT), and datagrams from that socket go back to that client. Each client flow has one
//! [`Impairment`] per direction (the model of `kcpd_datapath::io::sim`), driven by the monotonic clock:
//! delayed datagrams wait in a min-heap keyed by delivery time, woken by an absolute `timerfd`.
//! Unimpaired directions forward straight from the receive batch. I/O is batched with
//! recvmmsg/sendmmsg ([`MmsgSocket`]): no GRO, so datagrams arrive one by one; runs of equal-sized datagrams
//! to one destination leave as UDP GSO messages, which the kernel splits back into the same datagrams.
//! One thread.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kcpd_datapath::io::mmsg::MmsgSocket;
use kcpd_datapath::io::udp::{self, Offload, UdpConfig};
use kcpd_datapath::io::{DatagramIo, RecvMeta, Transmit};

pub use kcpd_datapath::io::sim::{Impairment, Link, LinkStats, Loss};

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 64;
/// Receive slot: the largest UDP payload fits.
const SLOT: usize = 65_536;
/// Receive batches taken from one readable socket before the others get a turn.
const ROUNDS: usize = 8;
/// Bytes that may wait in the delay heap across all flows; beyond, datagrams are dropped (`queue_drops`).
const MAX_PENDING_BYTES: usize = 256 << 20;
/// Client flows at most; datagrams from further clients are dropped (`flow_errors`).
const MAX_FLOWS: usize = 65_536;

/// GSO on send only: received datagrams keep their boundaries (no GRO), and packed runs are split back
/// into the same datagrams by the kernel.
const SEND_GSO: Offload = Offload { gso: true, gro: false };

const TOKEN_WAKE: u64 = 0;
const TOKEN_TIMER: u64 = 1;
const TOKEN_LISTEN: u64 = 2;
const TOKEN_FLOW0: u64 = 3;

/// What the relay does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelayConfig {
    /// Address clients send to.
    pub listen: SocketAddr,
    /// Server every client flow is relayed to.
    pub upstream: SocketAddr,
    /// Impairments client → server.
    pub up: Link,
    /// Impairments server → client.
    pub down: Link,
    /// Seed of the impairments (flow `k` uses `seed` mixed with a counter).
    pub seed: u64,
    /// SO_RCVBUF/SO_SNDBUF for every socket; `None`: kernel defaults.
    pub sockbuf: Option<usize>,
}

impl RelayConfig {
    /// A transparent relay (no impairments), seed 1.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        RelayConfig { listen, upstream, up: unimpaired(), down: unimpaired(), seed: 1, sockbuf: None }
    }
}

/// A link with no impairment at all.
pub fn unimpaired() -> Link {
    Link::default()
}

/// Whether `link` changes nothing (then datagrams skip the heap).
pub fn is_unimpaired(link: &Link) -> bool {
    link.delay_ms == 0
        && link.jitter_ms == 0
        && matches!(link.loss, Loss::None)
        && link.duplicate <= 0.0
        && link.reorder <= 0.0
        && link.rate.is_none()
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams received from the sender side.
    pub received: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Datagrams (copies) handed to the kernel for the receiver side.
    pub forwarded: u64,
    /// Lost by the loss model.
    pub lost: u64,
    /// Tail-dropped by the rate limiter's queue (or the relay's pending-bytes bound).
    pub queue_drops: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies held back to be overtaken.
    pub reordered: u64,
    /// Copies the kernel refused on send (dropped).
    pub send_errors: u64,
}

impl fmt::Display for DirStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} bytes={} forwarded={} lost={} queue_drops={} duplicated={} reordered={} send_errors={}",
            self.received,
            self.bytes,
            self.forwarded,
            self.lost,
            self.queue_drops,
            self.duplicated,
            self.reordered,
            self.send_errors
        )
    }
}

/// Counters of the whole relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client → server.
    pub up: DirStats,
    /// Server → client.
    pub down: DirStats,
    /// Client addresses mapped to an upstream socket.
    pub clients: u64,
    /// Datagrams waiting in the delay heap.
    pub pending: u64,
    /// Receive errors (other than "nothing to read").
    pub recv_errors: u64,
    /// Datagrams dropped because no upstream socket could be made for their client.
    pub flow_errors: u64,
}

impl RelayStats {
    /// Send errors of both directions.
    pub fn send_errors(&self) -> u64 {
        self.up.send_errors + self.down.send_errors
    }
}

/// A running relay; dropping it stops it.
pub struct Relay {
    local: SocketAddr,
    shared: Arc<Mutex<RelayStats>>,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Bind `cfg.listen` and start relaying on a new thread.
    pub fn start(cfg: RelayConfig) -> io::Result<Relay> {
        let (sock, _) = udp::bind(&UdpConfig { sockbuf: cfg.sockbuf, ..UdpConfig::new(cfg.listen) })?;
        let listen = MmsgSocket::from_socket(sock, SEND_GSO)?;
        let local = listen.local_addr();
        // SAFETY: plain syscalls; each result is checked before it is wrapped.
        let ep = owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: as above.
        let timer =
            owned(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
        // SAFETY: as above.
        let wake = owned(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        epoll_add(ep.as_raw_fd(), wake.as_raw_fd(), TOKEN_WAKE)?;
        epoll_add(ep.as_raw_fd(), timer.as_raw_fd(), TOKEN_TIMER)?;
        let listen_fd = listen.raw_fd().ok_or_else(|| io::Error::other("listen socket has no descriptor"))?;
        epoll_add(ep.as_raw_fd(), listen_fd, TOKEN_LISTEN)?;
        let shared = Arc::new(Mutex::new(RelayStats::default()));
        let mut worker = Worker {
            ep,
            timer,
            armed_us: None,
            listen,
            cfg,
            fast_up: is_unimpaired(&cfg.up),
            fast_down: is_unimpaired(&cfg.down),
            flows: Vec::new(),
            by_client: HashMap::new(),
            next_seed: 0,
            heap: BinaryHeap::new(),
            seq: 0,
            pending_bytes: 0,
            pool: Vec::new(),
            due: Vec::with_capacity(BATCH),
            pack: Vec::with_capacity(BATCH * PACK_MAX),
            rx: Rx::new(),
            start_ns: mono_ns(),
            stats: RelayStats::default(),
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new().name("kcpd-netem".into()).spawn(move || worker.run())?;
        Ok(Relay { local, shared, wake, thread: Some(thread) })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters so far (updated after every loop turn of the relay thread).
    pub fn stats(&self) -> RelayStats {
        self.shared.lock().map(|s| *s).unwrap_or_else(|e| *e.into_inner())
    }

    /// Stop the relay thread and close its sockets.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd.
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_add(ep: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
    // SAFETY: `ev` is a live epoll_event; both descriptors are open.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One client: its upstream socket and its two impairments.
struct Flow {
    client: SocketAddr,
    sock: MmsgSocket,
    up: Impairment,
    down: Impairment,
}

/// A datagram copy waiting for its delivery time.
struct Pending {
    at_us: u64,
    seq: u64,
    flow: u32,
    up: bool,
    buf: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Min-heap by delivery time, then admission order.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at_us, o.seq).cmp(&(self.at_us, self.seq))
    }
}

/// Receive slots for one batch.
struct Rx {
    arena: Box<[u8]>,
    meta: [RecvMeta; BATCH],
}

impl Rx {
    fn new() -> Rx {
        Rx { arena: vec![0u8; SLOT * BATCH].into_boxed_slice(), meta: [RecvMeta::EMPTY; BATCH] }
    }

    /// One recv_batch into the slots; `Err` is counted by the caller.
    fn recv(&mut self, sock: &mut MmsgSocket) -> io::Result<usize> {
        let mut it = self.arena.chunks_mut(SLOT);
        let mut bufs: [&mut [u8]; BATCH] = std::array::from_fn(|_| it.next().unwrap_or_default());
        sock.recv_batch(&mut bufs, &mut self.meta)
    }

    fn datagram(&self, j: usize) -> &[u8] {
        let len = self.meta[j].len.min(SLOT);
        &self.arena[j * SLOT..j * SLOT + len]
    }
}

/// Largest datagram packed into a GSO message; bigger ones go out alone.
const PACK_MAX: usize = 4096;

/// Send `dgrams`, all for `dst`, on `sock`: runs of equal-sized datagrams (the last may be shorter) are
/// copied into `pack` and sent as one UDP GSO message (the kernel splits it back into the same
/// datagrams). Counts what the kernel took and what it refused.
fn send_run(sock: &mut MmsgSocket, dst: SocketAddr, dgrams: &[&[u8]], pack: &mut Vec<u8>, st: &mut DirStats) {
    if dgrams.is_empty() {
        return;
    }
    // (offset in `pack`, end, segment size) of a packed run, or (index in `dgrams`, 0, 0) for a lone one.
    let mut runs = [(0usize, 0usize, 0usize); BATCH];
    let mut nruns = 0;
    pack.clear();
    let mut i = 0;
    while i < dgrams.len() && nruns < BATCH {
        let l = dgrams[i].len();
        if l == 0 || l > PACK_MAX || dgrams.get(i + 1).is_none_or(|d| d.len() > l || d.is_empty()) {
            runs[nruns] = (i, 0, 0);
            nruns += 1;
            i += 1;
            continue;
        }
        let start = pack.len();
        while i < dgrams.len() && dgrams[i].len() == l {
            pack.extend_from_slice(dgrams[i]);
            i += 1;
        }
        if let Some(d) = dgrams.get(i).filter(|d| !d.is_empty() && d.len() < l) {
            pack.extend_from_slice(d);
            i += 1;
        }
        runs[nruns] = (start, pack.len(), l);
        nruns += 1;
    }
    let mut msgs = [Transmit::new(dst, &[]); BATCH];
    for (m, &(a, b, seg)) in msgs.iter_mut().zip(&runs[..nruns]) {
        *m = if seg == 0 {
            Transmit::new(dst, dgrams[a])
        } else {
            Transmit { segment_size: Some(seg), ..Transmit::new(dst, &pack[a..b]) }
        };
    }
    let want = i as u64;
    let before = sock.stats().tx_datagrams;
    let _ = sock.send_batch(&msgs[..nruns]);
    let sent = sock.stats().tx_datagrams.saturating_sub(before).min(want);
    st.forwarded += sent;
    st.send_errors += want - sent;
}

fn add_link_delta(st: &mut DirStats, before: LinkStats, after: LinkStats) {
    st.lost += after.lost - before.lost;
    st.queue_drops += after.queue_drops - before.queue_drops;
    st.duplicated += after.duplicated - before.duplicated;
    st.reordered += after.reordered - before.reordered;
}

struct Worker {
    ep: OwnedFd,
    timer: OwnedFd,
    /// Delivery time the timer is armed for.
    armed_us: Option<u64>,
    listen: MmsgSocket,
    cfg: RelayConfig,
    fast_up: bool,
    fast_down: bool,
    flows: Vec<Flow>,
    by_client: HashMap<SocketAddr, u32>,
    next_seed: u64,
    heap: BinaryHeap<Pending>,
    seq: u64,
    pending_bytes: usize,
    pool: Vec<Vec<u8>>,
    due: Vec<Pending>,
    /// Contiguous copies of runs sent with GSO.
    pack: Vec<u8>,
    rx: Rx,
    start_ns: u64,
    stats: RelayStats,
    shared: Arc<Mutex<RelayStats>>,
}

impl Worker {
    fn run(&mut self) {
        const NO_EVENT: libc::epoll_event = libc::epoll_event { events: 0, u64: 0 };
        let mut events = [NO_EVENT; 64];
        loop {
            // SAFETY: `events` is a live array of the length given.
            let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), events.as_mut_ptr(), events.len() as _, -1) };
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                self.stats.recv_errors += 1;
                self.publish();
                return;
            }
            self.deliver_due();
            for ev in &events[..n as usize] {
                match ev.u64 {
                    TOKEN_WAKE => {
                        self.publish();
                        return;
                    }
                    TOKEN_TIMER => {
                        let mut buf = 0u64;
                        // SAFETY: reads 8 bytes into a live u64 from our non-blocking timerfd.
                        unsafe { libc::read(self.timer.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
                        self.armed_us = None;
                    }
                    TOKEN_LISTEN => self.on_listen(),
                    t => self.on_upstream((t - TOKEN_FLOW0) as usize),
                }
            }
            self.deliver_due();
            self.arm_timer();
            self.publish();
        }
    }

    fn now_us(&self) -> u64 {
        mono_ns().saturating_sub(self.start_ns) / 1000
    }

    fn publish(&mut self) {
        self.stats.pending = self.heap.len() as u64;
        self.stats.clients = self.flows.len() as u64;
        match self.shared.lock() {
            Ok(mut s) => *s = self.stats,
            Err(e) => *e.into_inner() = self.stats,
        }
    }

    fn arm_timer(&mut self) {
        let Some(next) = self.heap.peek().map(|p| p.at_us) else { return };
        if self.armed_us == Some(next) {
            return;
        }
        let at = self.start_ns + next * 1000;
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: (at / 1_000_000_000) as _, tv_nsec: (at % 1_000_000_000) as _ },
        };
        // SAFETY: `spec` is a live itimerspec; the old value is not asked for.
        let r = unsafe {
            libc::timerfd_settime(self.timer.as_raw_fd(), libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
        };
        self.armed_us = (r == 0).then_some(next);
    }

    /// The flow of `client`, made on its first datagram.
    fn flow_for(&mut self, client: SocketAddr) -> Option<u32> {
        if let Some(&i) = self.by_client.get(&client) {
            return Some(i);
        }
        if self.flows.len() >= MAX_FLOWS {
            return None;
        }
        let bind_ip = match self.cfg.upstream.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let bind = SocketAddr::new(bind_ip, 0);
        let make = || -> io::Result<MmsgSocket> {
            let (sock, _) = udp::bind(&UdpConfig { sockbuf: self.cfg.sockbuf, ..UdpConfig::new(bind) })?;
            // Connected: only the upstream's datagrams come back through it, as through a NAT.
            sock.connect(self.cfg.upstream)?;
            MmsgSocket::from_socket(sock, SEND_GSO)
        };
        let sock = make().ok()?;
        let fd = sock.raw_fd()?;
        let idx = self.flows.len() as u32;
        epoll_add(self.ep.as_raw_fd(), fd, TOKEN_FLOW0 + u64::from(idx)).ok()?;
        let mut seed = || {
            self.next_seed += 1;
            self.cfg.seed.wrapping_add(self.next_seed.wrapping_mul(0xA076_1D64_78BD_642F))
        };
        let (up_seed, down_seed) = (seed(), seed());
        self.flows.push(Flow {
            client,
            sock,
            up: Impairment::new(self.cfg.up, up_seed),
            down: Impairment::new(self.cfg.down, down_seed),
        });
        self.by_client.insert(client, idx);
        Some(idx)
    }

    /// Client → server.
    fn on_listen(&mut self) {
        let mut flow_of = [u32::MAX; BATCH];
        for _ in 0..ROUNDS {
            let n = match self.rx.recv(&mut self.listen) {
                Ok(n) => n,
                Err(_) => {
                    self.stats.recv_errors += 1;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            for (j, slot) in flow_of[..n].iter_mut().enumerate() {
                let m = self.rx.meta[j];
                self.stats.up.received += 1;
                self.stats.up.bytes += m.len as u64;
                *slot = match self.flow_for(m.src) {
                    Some(i) => i,
                    None => {
                        self.stats.flow_errors += 1;
                        u32::MAX
                    }
                };
            }
            if self.fast_up {
                self.forward_up_now(&flow_of[..n]);
            } else {
                let now = self.now_us();
                for (j, &f) in flow_of[..n].iter().enumerate() {
                    if f != u32::MAX {
                        self.admit(now, f, true, j);
                    }
                }
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Unimpaired up: send each run of same-flow datagrams from the receive slots.
    fn forward_up_now(&mut self, flow_of: &[u32]) {
        let upstream = self.cfg.upstream;
        let mut dgrams: [&[u8]; BATCH] = [&[]; BATCH];
        for (j, d) in dgrams[..flow_of.len()].iter_mut().enumerate() {
            *d = self.rx.datagram(j);
        }
        let mut j = 0;
        while j < flow_of.len() {
            let f = flow_of[j];
            let k = j + flow_of[j..].iter().take_while(|&&g| g == f).count();
            if let Some(flow) = self.flows.get_mut(f as usize) {
                send_run(&mut flow.sock, upstream, &dgrams[j..k], &mut self.pack, &mut self.stats.up);
            }
            j = k;
        }
    }

    /// Server → client, from flow `f`'s upstream socket.
    fn on_upstream(&mut self, f: usize) {
        let Some(flow) = self.flows.get_mut(f) else { return };
        let client = flow.client;
        for _ in 0..ROUNDS {
            let n = match self.rx.recv(&mut self.flows[f].sock) {
                Ok(n) => n,
                Err(_) => {
                    self.stats.recv_errors += 1;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            for m in &self.rx.meta[..n] {
                self.stats.down.received += 1;
                self.stats.down.bytes += m.len as u64;
            }
            if self.fast_down {
                let mut dgrams: [&[u8]; BATCH] = [&[]; BATCH];
                for (j, d) in dgrams[..n].iter_mut().enumerate() {
                    *d = self.rx.datagram(j);
                }
                send_run(&mut self.listen, client, &dgrams[..n], &mut self.pack, &mut self.stats.down);
            } else {
                let now = self.now_us();
                for j in 0..n {
                    self.admit(now, f as u32, false, j);
                }
            }
            if n < BATCH {
                break;
            }
        }
    }

    /// Run receive slot `j` through flow `f`'s impairment and queue its copies.
    fn admit(&mut self, now: u64, f: u32, up: bool, j: usize) {
        let len = self.rx.meta[j].len.min(SLOT);
        let Some(flow) = self.flows.get_mut(f as usize) else { return };
        let (imp, st) = if up { (&mut flow.up, &mut self.stats.up) } else { (&mut flow.down, &mut self.stats.down) };
        let before = imp.stats();
        let (at, copies) = imp.admit(now, len);
        add_link_delta(st, before, imp.stats());
        for &at_us in &at[..copies] {
            if self.pending_bytes + len > MAX_PENDING_BYTES {
                st.queue_drops += 1;
                continue;
            }
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(self.rx.datagram(j));
            self.pending_bytes += len;
            self.seq += 1;
            self.heap.push(Pending { at_us, seq: self.seq, flow: f, up, buf });
        }
    }

    /// Send every queued copy whose time has come, in batches.
    fn deliver_due(&mut self) {
        if self.heap.is_empty() {
            return;
        }
        let now = self.now_us();
        loop {
            while self.due.len() < BATCH && self.heap.peek().is_some_and(|p| p.at_us <= now) {
                if let Some(p) = self.heap.pop() {
                    self.due.push(p);
                }
            }
            if self.due.is_empty() {
                return;
            }
            let upstream = self.cfg.upstream;
            let mut dgrams: [&[u8]; BATCH] = [&[]; BATCH];
            let due = &self.due;
            let mut j = 0;
            while j < due.len() {
                let key = (due[j].up, due[j].flow);
                let k = j + due[j..].iter().take_while(|p| (p.up, p.flow) == key).count();
                for (d, p) in dgrams.iter_mut().zip(&due[j..k]) {
                    *d = &p.buf;
                }
                if let Some(flow) = self.flows.get_mut(key.1 as usize) {
                    let run = &dgrams[..k - j];
                    if key.0 {
                        send_run(&mut flow.sock, upstream, run, &mut self.pack, &mut self.stats.up);
                    } else {
                        send_run(&mut self.listen, flow.client, run, &mut self.pack, &mut self.stats.down);
                    }
                }
                j = k;
            }
            for p in self.due.drain(..) {
                self.pending_bytes -= p.buf.len();
                self.pool.push(p.buf);
            }
        }
    }
}
