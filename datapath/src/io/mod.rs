//! Datagram I/O behind one trait. Backends: `mmsg` (Linux: recvmmsg/sendmmsg with UDP GSO/GRO),
//! `uring` (Linux: io_uring), `basic` (portable: one recvfrom/sendto per datagram), and [`sim`], the
//! deterministic in-memory network the protocol tests run on.

use std::io;
use std::net::{IpAddr, SocketAddr};

pub mod sim;

/// One datagram, or with `segment_size` a run of datagrams for one destination packed back to back
/// (UDP GSO: every segment `segment_size` bytes except possibly a shorter last one).
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// Source IP to send from (a server bound to a wildcard address replies from the address the client
    /// targeted); `None`: the socket's choice.
    pub src_ip: Option<IpAddr>,
    /// `Some(n)`: `payload` holds several datagrams of `n` bytes (GSO). Backends without GSO split it.
    pub segment_size: Option<usize>,
}

impl<'a> Transmit<'a> {
    pub fn new(dst: SocketAddr, payload: &'a [u8]) -> Self {
        Transmit { dst, payload, src_ip: None, segment_size: None }
    }
}

/// What arrived in one receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes in the buffer.
    pub len: usize,
    /// With GRO the buffer holds datagrams of `stride` bytes back to back (the last may be shorter);
    /// otherwise `stride == len`.
    pub stride: usize,
    /// Sender, with IPv4-mapped IPv6 addresses normalised to IPv4.
    pub src: SocketAddr,
    /// The local address the datagram was sent to, when the backend knows it (IP_PKTINFO).
    pub dst_ip: Option<IpAddr>,
    /// The datagram was longer than the buffer and was cut.
    pub truncated: bool,
}

impl RecvMeta {
    pub const EMPTY: RecvMeta = RecvMeta {
        len: 0,
        stride: 0,
        src: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        dst_ip: None,
        truncated: false,
    };

    /// The datagrams in `buf[..len]`, split at `stride`.
    pub fn datagrams<'b>(&self, buf: &'b [u8]) -> impl Iterator<Item = &'b [u8]> {
        buf[..self.len].chunks(self.stride.max(1))
    }
}

/// Counters every backend keeps (errors are counted, never fatal to a session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rx_datagrams: u64,
    pub rx_bytes: u64,
    pub tx_datagrams: u64,
    pub tx_bytes: u64,
    pub rx_syscalls: u64,
    pub tx_syscalls: u64,
    /// Datagrams longer than the receive buffer (MSG_TRUNC).
    pub rx_truncated: u64,
    /// ICMP port unreachable reported on the socket (ECONNREFUSED).
    pub tx_refused: u64,
    /// Kernel buffer full (ENOBUFS / EAGAIN on send): datagrams dropped.
    pub tx_dropped: u64,
    /// Other send or receive errors.
    pub errors: u64,
    /// GSO switched off after the kernel refused it (EIO/EINVAL).
    pub gso_disabled: u64,
}

/// A non-blocking datagram socket that moves batches.
pub trait DatagramIo {
    fn local_addr(&self) -> SocketAddr;

    /// Receive into `bufs` without blocking; `Ok(0)` when nothing is ready. With GRO a buffer may hold
    /// several datagrams (see [`RecvMeta::stride`]).
    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize>;

    /// Send in order; returns how many `Transmit`s were taken (retry the rest when writable). Per-datagram
    /// failures (refused, no buffer space) are counted and the datagram dropped, as UDP allows.
    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize>;

    /// The largest `segment_size * segments` a `Transmit` may carry (1 segment: no GSO).
    fn max_gso_segments(&self) -> usize {
        1
    }

    fn stats(&self) -> IoStats {
        IoStats::default()
    }
}
