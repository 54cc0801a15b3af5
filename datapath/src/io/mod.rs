//! Datagram I/O behind one trait. Backends: `mmsg` (Linux: recvmmsg/sendmmsg with UDP GSO/GRO),
//! `uring` (Linux: io_uring), `basic` (portable: one recvfrom/sendto per datagram), and [`sim`], the
//! deterministic in-memory network the protocol tests run on.
//!
//! Platform code lives in platform files behind [`DatagramIo`] (ARCHITECTURE.md §5–§6; quinn-udp's
//! `unix.rs`/`fallback.rs` split): [`udp`] creates and configures sockets for every real backend, [`basic`] is the
//! portable backend, `mmsg` and `uring` are Linux-only. [`open`] builds one by [`Backend`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

#[cfg(unix)]
pub mod basic;
#[cfg(target_os = "linux")]
pub mod faketcp;
#[cfg(target_os = "linux")]
pub mod firewall;
#[cfg(target_os = "linux")]
pub mod mmsg;
#[cfg(target_os = "linux")]
mod msg;
pub mod sim;
#[cfg(unix)]
pub mod udp;
#[cfg(target_os = "linux")]
pub mod uring;

/// One datagram, or with `segment_size` a run of datagrams for one destination packed back to back
/// (UDP GSO: every segment `segment_size` bytes except possibly a shorter last one).
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    /// Where it goes. Backends convert it to the socket's family (IPv4 ⇄ IPv4-mapped IPv6); an IPv6
    /// destination on an IPv4 socket is counted in [`IoStats::errors`] and skipped.
    pub dst: SocketAddr,
    /// The datagram, or with `segment_size` the run of datagrams back to back.
    pub payload: &'a [u8],
    /// Source IP to send from (a server bound to a wildcard address replies from the address the client
    /// targeted); `None`: the socket's choice.
    pub src_ip: Option<IpAddr>,
    /// `Some(n)`: `payload` holds several datagrams of `n` bytes (GSO). Backends without GSO split it.
    pub segment_size: Option<usize>,
}

impl<'a> Transmit<'a> {
    /// One datagram of `payload` to `dst`, from whatever source address the socket picks.
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
    /// A blank entry (nothing received, source `0.0.0.0:0`) to fill a `meta` array before `recv_batch`.
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
    /// Datagrams received; a GRO buffer counts once per datagram it carries.
    pub rx_datagrams: u64,
    /// UDP payload bytes received into the buffers (no IP/UDP headers).
    pub rx_bytes: u64,
    /// Datagrams the kernel took; each segment of a GSO run counts once.
    pub tx_datagrams: u64,
    /// UDP payload bytes the kernel took.
    pub tx_bytes: u64,
    /// Receive system calls (recvmsg, recvmmsg, or io_uring_enter on `uring`), those that found nothing
    /// included: `rx_datagrams / rx_syscalls` is what batching gains.
    pub rx_syscalls: u64,
    /// Send system calls (sendto, sendmmsg, or io_uring_enter on `uring`), failed ones included.
    pub tx_syscalls: u64,
    /// Datagrams longer than the receive buffer (MSG_TRUNC).
    pub rx_truncated: u64,
    /// ICMP port unreachable reported on the socket (ECONNREFUSED).
    pub tx_refused: u64,
    /// Kernel buffer full (ENOBUFS / EAGAIN on send): datagrams dropped.
    pub tx_dropped: u64,
    /// Datagrams the host had no route or no source address for (ENETUNREACH, EHOSTUNREACH,
    /// EADDRNOTAVAIL): its addresses or routes are changing (a client whose network changes); dropped, as
    /// on a lost link, and KCP sends them again once a route is back.
    pub tx_unroutable: u64,
    /// Other send or receive errors.
    pub errors: u64,
    /// GSO switched off after the kernel refused it (EIO/EINVAL).
    pub gso_disabled: u64,
    /// `send_batch` stopped early because the kernel had no room (EAGAIN / ENOBUFS) and handed the rest back
    /// to the caller (counted once per stop, not per datagram).
    pub tx_blocked: u64,
}

/// A non-blocking datagram socket that moves batches.
pub trait DatagramIo {
    /// The bound address, ephemeral port resolved (on a wildcard bind, the wildcard: not the address peers
    /// sent to).
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

    /// Counters since the socket was opened (a shard sums its sockets' into `ShardStats::io`); all zero for
    /// a backend that keeps none (the simulator).
    fn stats(&self) -> IoStats {
        IoStats::default()
    }

    /// The descriptor to wait on for readability (epoll or poll(2)), level-triggered: while it is readable,
    /// `recv_batch` has something (or a counted error) to return. `None`: nothing to wait on (the
    /// simulator). The socket for `mmsg` and `basic`; for `uring` the receive ring, readable while completions
    /// are pending.
    #[cfg(unix)]
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// A connection-shaped transport's segment counters ([`faketcp`]); `None` for datagram sockets.
    fn flow_stats(&self) -> Option<crate::proto::faketcp::FlowStats> {
        None
    }

    /// A connection-shaped transport ([`faketcp`]): the next peer whose connection ended — a dial refused
    /// or timed out, a reset or FIN from the peer, an idle connection expired. The conversations with that
    /// peer on this socket are over. Call after `recv_batch` until `None`. UDP sockets never report one.
    fn poll_closed(&mut self) -> Option<SocketAddr> {
        None
    }
}

/// Which [`DatagramIo`] implementation carries a tunnel's UDP (`--io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Linux: recvmmsg/sendmmsg with UDP GSO/GRO ([`mmsg`]).
    Mmsg,
    /// Linux: io_uring, multishot recvmsg and batched sendmsg ([`uring`]).
    Uring,
    /// Portable: one recvfrom/sendto per datagram ([`basic`]); the flag value is `poll`, after the portable
    /// poll(2) loop that drives it.
    Basic,
}

impl Backend {
    /// Every backend, whether it can run here or not (see [`Backend::is_available`]).
    pub const ALL: [Backend; 3] = [Backend::Mmsg, Backend::Uring, Backend::Basic];

    /// The flag value (`--io`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Mmsg => "mmsg",
            Backend::Uring => "uring",
            Backend::Basic => "poll",
        }
    }

    /// Whether this backend can run here: `mmsg` on Linux, `uring` when [`uring::probe`] passes (cached
    /// after the first call), `poll` everywhere.
    pub fn is_available(self) -> bool {
        match self {
            Backend::Mmsg => cfg!(target_os = "linux"),
            Backend::Uring => uring_available(),
            Backend::Basic => cfg!(unix),
        }
    }
}

#[cfg(target_os = "linux")]
fn uring_available() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| uring::probe().is_ok())
}

#[cfg(not(target_os = "linux"))]
fn uring_available() -> bool {
    false
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An `--io` value that names no backend.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown I/O backend `{0}` (expected mmsg, uring or poll)")]
pub struct ParseBackendError(pub String);

impl FromStr for Backend {
    type Err = ParseBackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mmsg" => Ok(Backend::Mmsg),
            "uring" | "io_uring" => Ok(Backend::Uring),
            "poll" | "basic" => Ok(Backend::Basic),
            _ => Err(ParseBackendError(s.to_owned())),
        }
    }
}

/// The default backend: `mmsg` on Linux (the measured default, ARCHITECTURE.md §5; `uring` is opt-in by flag
/// even where [`Backend::is_available`] says it would run), `poll` elsewhere.
pub fn probe_best() -> Backend {
    if cfg!(target_os = "linux") { Backend::Mmsg } else { Backend::Basic }
}

/// A socket for `cfg` on `backend`, with GSO/GRO on where the backend has them, and what the kernel made of
/// the settings (effective buffer sizes, warnings to log once). A backend that cannot run here (`uring`
/// refused by seccomp, `mmsg` off Linux) is an error: the caller picks another.
#[cfg(unix)]
pub fn open(backend: Backend, cfg: &udp::UdpConfig) -> io::Result<(Box<dyn DatagramIo + Send>, udp::SocketReport)> {
    match backend {
        #[cfg(target_os = "linux")]
        Backend::Mmsg => {
            let (s, r) = mmsg::MmsgSocket::open(cfg, cfg.offload)?;
            Ok((Box::new(s), r))
        }
        #[cfg(target_os = "linux")]
        Backend::Uring => {
            let (s, r) = uring::UringSocket::open(cfg, cfg.offload)?;
            Ok((Box::new(s), r))
        }
        Backend::Basic => {
            let (s, r) = basic::BasicSocket::open(cfg)?;
            Ok((Box::new(s), r))
        }
        #[cfg(not(target_os = "linux"))]
        _ => Err(io::Error::new(io::ErrorKind::Unsupported, format!("the {backend} I/O backend needs Linux"))),
    }
}
