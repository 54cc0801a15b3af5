//! Fake-TCP sockets (`--tcp`, Linux; docs/protocol.md §11.7): datagrams as the payloads of hand-made TCP
//! segments of a connection the kernels opened, behind the same [`DatagramIo`] as UDP, so crypto, FEC, KCP
//! and smux above are unchanged. The sequence state is [`crate::proto::faketcp`]'s; this file owns the
//! descriptors:
//!
//! - a raw `SOCK_RAW/IPPROTO_TCP` socket that captures the connection's segments (a socket filter keeps
//!   only its ports) and sends the hand-made ones (the kernel writes the IP header);
//! - the kernel's own TCP socket of the connection: connected without blocking ([`FakeTcpDial`]) or accepted
//!   ([`FakeTcpListener`]), its TTL lowered to 1 once the handshake is over so that the [`firewall`] rule
//!   drops its later segments, and muted by a socket filter that passes only FIN and RST (it would take the
//!   first fake bytes as data and answer every segment); read only to learn that it ended;
//! - the firewall rule, held for as long as the connection or listener lives.
//!
//! A connection-shaped transport has what a UDP socket has not: a dial can fail and a peer can go away.
//! Both come out of [`DatagramIo::poll_closed`].
//!
//! [`firewall`]: super::firewall
#![allow(clippy::disallowed_methods)] // a socket's own clock: flow ages, and tcpraw 1.2.32's wall-clock TSval

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};

use super::firewall::{Firewall, FirewallError, Rule, RuleGuard};
use super::{DatagramIo, IoStats, RecvMeta, Transmit};
use crate::proto::faketcp::{Flow, FlowStats, FlowTable, Ipv4Packet, Rx, Segment, Shape, Stamp};
use crate::shard::poller::{Epoll, Interest, Poller, Ready};

mod batch;
mod listener;
use batch::{RawRx, RawTx};
pub use listener::FakeTcpListener;

/// The scratch buffer for what is read only to be discarded: the raw socket's queue before its filter
/// was attached, and the kernel sockets (muted: at most the few bytes that came before the filter).
const CAPTURE: usize = 2048;
/// How often a listener expires its flows (a timer wakes an idle one).
const EXPIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How fake-TCP sockets are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FakeTcpConfig {
    /// Which tcpraw's segments to imitate.
    pub shape: Shape,
    /// `--sockbuf`: SO_RCVBUF/SO_SNDBUF of the raw socket.
    pub sockbuf: Option<usize>,
    /// `--dscp`: IP_TOS = `dscp << 2` (IPV6_TCLASS likewise) on the raw socket.
    pub dscp: u8,
    /// A listener's most connections (flows); the oldest are not evicted: new ones are refused.
    pub max_flows: usize,
}

impl Default for FakeTcpConfig {
    fn default() -> Self {
        FakeTcpConfig { shape: Shape::New, sockbuf: None, dscp: 0, max_flows: 65_536 }
    }
}

/// The error a raw socket or firewall failure becomes: the capability named when that is what is missing.
fn privileged(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::PermissionDenied {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("--tcp needs CAP_NET_RAW ({what}) and CAP_NET_ADMIN (firewall rules): run as root or grant them"),
        )
    } else {
        io::Error::new(e.kind(), format!("{what}: {e}"))
    }
}

fn fw_error(e: FirewallError) -> io::Error {
    let kind = match e {
        FirewallError::Permission { .. } => io::ErrorKind::PermissionDenied,
        FirewallError::NoTool(_) => io::ErrorKind::NotFound,
        FirewallError::Command { .. } => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// A raw TCP socket of `domain` with the raw-socket settings of `cfg`, non-blocking.
fn raw_socket(domain: Domain, cfg: &FakeTcpConfig) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::RAW.cloexec(), Some(Protocol::TCP)).map_err(|e| privileged(e, "a raw socket"))?;
    s.set_nonblocking(true)?;
    if let Some(b) = cfg.sockbuf {
        // As the UDP sockets: past net.core.rmem_max/wmem_max with CAP_NET_ADMIN, which --tcp has anyway (a
        // raw socket clamped to the default ~208 KiB drops bursts a 4 MiB UDP socket takes).
        let _ = super::udp::set_buffer(&s, super::udp::BufKind::Recv, b);
        let _ = super::udp::set_buffer(&s, super::udp::BufKind::Send, b);
    }
    if cfg.dscp != 0 {
        let tos = u32::from(cfg.dscp) << 2;
        let _ = if domain == Domain::IPV6 { s.set_tclass_v6(tos) } else { s.set_tos_v4(tos) };
    }
    Ok(s)
}

/// A classic BPF program for a raw IPv4 TCP socket: keep segments to `dst_port` (and from `src_port` when
/// given); the packet starts at the IP header.
fn port_filter(dst_port: u16, src_port: Option<u16>) -> Vec<SockFilter> {
    const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
    const LDH_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Jump offsets count from the next instruction; the last two are "keep" and "drop".
    let checks = if src_port.is_some() { 2 } else { 1 };
    let mut p = vec![
        SockFilter::new(LDX_MSH, 0, 0, 0), // x = 4 * (ip[0] & 0xf)
        SockFilter::new(LDH_IND, 0, 0, 2), // a = tcp dst port
        SockFilter::new(JEQ, 0, (2 * checks - 1) as u8, u32::from(dst_port)), // else drop
    ];
    if let Some(sp) = src_port {
        p.push(SockFilter::new(LDH_IND, 0, 0, 0)); // a = tcp src port
        p.push(SockFilter::new(JEQ, 0, 1, u32::from(sp))); // else drop
    }
    p.push(SockFilter::new(RET, 0, 0, u32::MAX));
    p.push(SockFilter::new(RET, 0, 0, 0));
    p
}

/// Keep the fake segments from the kernel's own socket of the connection: a socket filter, which TCP runs
/// before it processes a segment, that lets only FIN and RST through. Without it the kernel takes the first
/// fake bytes as data and answers every segment with an ACK (TTL 1, dropped by the rule): twice the packets
/// through the stack for nothing. A peer's FIN or RST still ends the socket, so its end is noticed.
fn mute(sock: &Socket) {
    const LDB: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // A TCP socket's filter sees the segment from its TCP header: the flags are byte 13.
    let _ = sock.attach_filter(&[
        SockFilter::new(LDB, 0, 0, 13),
        SockFilter::new(JSET, 0, 1, u32::from(crate::proto::faketcp::FIN | crate::proto::faketcp::RST)),
        SockFilter::new(RET, 0, 0, u32::MAX),
        SockFilter::new(RET, 0, 0, 0),
    ]);
}

/// Captured packet `i` of the last receive: its source and TCP segment, or `None` counted (cut short:
/// `rx_truncated`; no TCP segment inside: `malformed`).
fn captured<'a>(
    rx: &'a RawRx,
    i: usize,
    v6: bool,
    stats: &mut IoStats,
    malformed: &mut u64,
) -> Option<(IpAddr, &'a [u8])> {
    let (pkt, from, cut) = rx.packet(i);
    if cut {
        stats.rx_truncated += 1;
        return None;
    }
    let r = segment_of(v6, pkt, from);
    *malformed += u64::from(r.is_none());
    r
}

/// The kernel's choice of IP header handling: an IPv4 raw socket hands over the IP header, IPv6 never.
fn segment_of(v6: bool, pkt: &[u8], src: IpAddr) -> Option<(IpAddr, &[u8])> {
    if v6 {
        return Some((src, pkt));
    }
    Ipv4Packet::parse(pkt).ok().map(|p| (IpAddr::V4(p.src), p.segment))
}

/// A microsecond clock for the flows, counted from `epoch`.
fn now(epoch: std::time::Instant) -> kcpd_time::Instant {
    kcpd_time::Instant::from_micros(epoch.elapsed().as_micros() as u64)
}

/// The wall clock in Unix milliseconds, truncated (tcpraw 1.2.32's TSval): read once per send batch.
fn wall_ms() -> u32 {
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    wall.as_millis() as u32
}

/// The per-segment values of the shape: a random window, and the batch's wall clock.
fn stamp(rng: &mut u64, wall_ms: u32) -> Stamp {
    // xorshift64*: a window need not be unpredictable, only vary as tcpraw's does.
    *rng ^= *rng >> 12;
    *rng ^= *rng << 25;
    *rng ^= *rng >> 27;
    let random = (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16;
    Stamp { random, wall_ms }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom_fill(&mut b);
    u64::from_le_bytes(b) | 1
}

fn getrandom_fill(b: &mut [u8]) -> io::Result<()> {
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n as usize == b.len() { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Receive one packet into `buf`: its length and the sender's IP.
fn recv_raw(s: &Socket, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    // SAFETY: an initialised byte buffer may be viewed as MaybeUninit bytes; recv_from only writes into it.
    let b = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let (n, from) = s.recv_from(b)?;
    let ip = from.as_socket().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    Ok((n, ip))
}

/// Hand datagram `d` from `src` to the caller's buffer and its metadata; counted.
fn deliver(stats: &mut IoStats, d: &[u8], src: SocketAddr, b: &mut [u8], m: &mut RecvMeta) {
    let k = d.len().min(b.len());
    b[..k].copy_from_slice(&d[..k]);
    *m = RecvMeta { len: k, stride: k.max(1), src, dst_ip: None, truncated: k < d.len() };
    stats.rx_datagrams += 1;
    stats.rx_bytes += k as u64;
    stats.rx_truncated += u64::from(k < d.len());
}

/// Count a send failure as UDP backends do; `true`: stop (the kernel has no room), retry later.
fn count_send_error(stats: &mut IoStats, e: &io::Error) -> bool {
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS) => {
            stats.tx_blocked += 1;
            true
        }
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL) => {
            stats.tx_unroutable += 1;
            false
        }
        _ => {
            stats.errors += 1;
            false
        }
    }
}

/// A client's fake-TCP connection to one server: a [`DatagramIo`] whose only peer is the server.
pub struct FakeTcpDial {
    raw: Socket,
    kernel: Option<Socket>,
    v6: bool,
    local: SocketAddr,
    remote: SocketAddr,
    flow: Flow,
    shape: Shape,
    ttl_lowered: bool,
    closed: bool,
    close_reported: bool,
    rng: u64,
    epoch: std::time::Instant,
    scratch: Box<[u8]>,
    rx: RawRx,
    tx: RawTx,
    stats: IoStats,
    /// Segment counters (the listener's table keeps the same).
    pub flow_stats: FlowStats,
    _rule: RuleGuard,
}

impl FakeTcpDial {
    /// Start a connection to `remote` without blocking: the raw socket first (so the SYN-ACK is captured),
    /// the kernel's connect, then the firewall rule for the connection. Datagrams sent before the
    /// handshake is over are dropped (counted in `tx_unroutable`); KCP sends them again.
    pub fn connect(remote: SocketAddr, cfg: &FakeTcpConfig) -> io::Result<Self> {
        let v6 = remote.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let raw = raw_socket(domain, cfg)?;
        let kernel = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
        let any: SocketAddr = if v6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
        kernel.bind(&any.into())?;
        let port = kernel.local_addr()?.as_socket().map_or(0, |a| a.port());
        raw.connect(&SocketAddr::new(remote.ip(), 0).into())?;
        if !v6 {
            raw.attach_filter(&port_filter(port, Some(remote.port())))?;
        }
        // Anything captured before the filter went on.
        let mut scratch = vec![0u8; CAPTURE].into_boxed_slice();
        while recv_raw(&raw, &mut scratch).is_ok() {}
        match kernel.connect(&remote.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let local = kernel.local_addr()?.as_socket().ok_or_else(|| io::Error::other("no local address"))?;
        let rule = Firewall::get().and_then(|fw| fw.add(Rule::Dial { local, remote })).map_err(fw_error)?;
        let epoch = std::time::Instant::now();
        Ok(FakeTcpDial {
            raw,
            kernel: Some(kernel),
            v6,
            local,
            remote,
            flow: Flow::new(now(epoch), true),
            shape: cfg.shape,
            ttl_lowered: false,
            closed: false,
            close_reported: false,
            rng: seed(),
            epoch,
            scratch,
            rx: RawRx::new(),
            tx: RawTx::new(),
            stats: IoStats::default(),
            flow_stats: FlowStats::default(),
            _rule: rule,
        })
    }

    /// The kernel socket's local address (the connection's source).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The connection's sequence state.
    pub fn flow(&self) -> &Flow {
        &self.flow
    }

    /// The raw socket, the descriptor to poll.
    pub fn raw_socket_fd(&self) -> RawFd {
        self.raw.as_raw_fd()
    }

    /// Read and discard what the kernel socket took in; notice its end (refused, reset, closed).
    fn drain_kernel(&mut self) {
        let Some(k) = &self.kernel else { return };
        loop {
            match recv_raw_stream(k, &mut self.scratch) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOTCONN) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }
}

/// `recv` on a stream socket into an initialised buffer.
fn recv_raw_stream(s: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: as in `recv_raw`.
    let b = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    s.recv(b)
}

impl DatagramIo for FakeTcpDial {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        // The kernel socket says when the connect failed; once muted, only a FIN or RST reaches it.
        if !self.ttl_lowered {
            self.drain_kernel();
        }
        let (want, mut n) = (bufs.len().min(meta.len()), 0);
        let mut ending = false;
        while n < want {
            let asked = want - n;
            let Some(k) = self.rx.recv_counted(self.raw.as_raw_fd(), asked, &mut self.stats) else { break };
            let t = now(self.epoch);
            for i in 0..k {
                let Some((src, seg)) =
                    captured(&self.rx, i, self.v6, &mut self.stats, &mut self.flow_stats.rx_malformed)
                else {
                    continue;
                };
                let Ok(s) = Segment::parse(seg) else {
                    self.flow_stats.rx_malformed += 1;
                    continue;
                };
                // The socket filter (IPv4) already did this; IPv6 raw sockets get every TCP segment of the peer.
                if src != self.remote.ip() || s.dst_port != self.local.port() || s.src_port != self.remote.port() {
                    continue;
                }
                self.flow_stats.rx_segments += 1;
                ending |= s.flags & (crate::proto::faketcp::FIN | crate::proto::faketcp::RST) != 0;
                match self.flow_stats.count(self.flow.on_segment(t, &s)) {
                    Rx::Datagram(d) => {
                        deliver(&mut self.stats, d, self.remote, bufs[n], &mut meta[n]);
                        n += 1;
                    }
                    Rx::Closed => self.closed = true,
                    Rx::Control | Rx::Dropped(_) => {}
                }
                // The handshake is over (the kernel answered the SYN-ACK as it was captured): from now on
                // the kernel's segments stay in, and the fake ones stay away from it.
                if self.flow.is_synced() && !self.ttl_lowered {
                    if let Some(k) = &self.kernel {
                        let _ = if self.v6 { k.set_unicast_hops_v6(1) } else { k.set_ttl_v4(1) };
                        mute(k);
                    }
                    self.ttl_lowered = true;
                }
            }
            if k < asked {
                break;
            }
        }
        // A FIN or RST, stray or not: whether it ended the kernel's connection, the kernel knows.
        if ending {
            self.drain_kernel();
        }
        Ok(n)
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        let (fd, wall) = (self.raw.as_raw_fd(), wall_ms());
        for (i, m) in msgs.iter().enumerate() {
            let seg = m.segment_size.unwrap_or(m.payload.len()).max(1);
            for d in m.payload.chunks(seg) {
                let st = stamp(&mut self.rng, wall);
                let Some(h) = (!self.closed)
                    .then(|| self.flow.next_header((self.local.port(), self.remote.port()), d.len(), self.shape, st))
                    .flatten()
                else {
                    self.flow_stats.tx_no_flow += 1;
                    self.stats.tx_unroutable += 1;
                    continue;
                };
                let hl = h.write(self.local.ip(), self.remote.ip(), d, self.tx.next_header());
                self.tx.queue(hl, d, None, i);
                if self.tx.full()
                    && let Err(at) = self.tx.flush(fd, &mut self.stats)
                {
                    return Ok(at);
                }
            }
        }
        match self.tx.flush(fd, &mut self.stats) {
            Ok(()) => Ok(msgs.len()),
            Err(at) => Ok(at),
        }
    }

    fn stats(&self) -> IoStats {
        self.stats
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.raw.as_raw_fd())
    }

    fn flow_stats(&self) -> Option<FlowStats> {
        Some(FlowStats { connections: u64::from(!self.closed), ..self.flow_stats })
    }

    fn poll_closed(&mut self) -> Option<SocketAddr> {
        if self.closed && !self.close_reported {
            self.close_reported = true;
            return Some(self.remote);
        }
        None
    }
}

impl Drop for FakeTcpDial {
    fn drop(&mut self) {
        // TTL back up first, so the FIN of the close is not dropped by the rule (tcpraw's Close does the same);
        // the rule goes after the socket.
        if let Some(k) = self.kernel.take() {
            let _ = if self.v6 { k.set_unicast_hops_v6(64) } else { k.set_ttl_v4(64) };
        }
    }
}

/// Open the process's firewall early (the daemon's start-up: a clear error before any session, and stale
/// rules of killed kcpd processes removed).
pub fn check_privileges() -> io::Result<Arc<Firewall>> {
    drop(raw_socket(Domain::IPV4, &FakeTcpConfig::default())?);
    Firewall::get().map_err(fw_error)
}
