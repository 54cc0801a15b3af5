//! UDP socket set-up shared by every real backend: bind (dual-stack for IPv6), SO_REUSEPORT, `--sockbuf` with
//! a read-back and a warning when the kernel clamps it, `--dscp`, IP_PKTINFO; and the address normalisation
//! every backend applies to what it receives and sends (IPv4-mapped IPv6 ⇄ IPv4).
//!
//! Nothing here prints: what the daemon should log once comes back in a [`SocketReport`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// The largest DSCP (6 bits).
pub const MAX_DSCP: u8 = 63;

/// How to create a UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Address to bind: port 0 for an ephemeral port; an IPv6 address makes a dual-stack socket that
    /// takes IPv4 peers as well.
    pub bind: SocketAddr,
    /// SO_REUSEPORT: one socket per shard on the same address, the kernel spreads peers by hash.
    pub reuse_port: bool,
    /// `--sockbuf`: bytes for SO_RCVBUF and SO_SNDBUF; `None` keeps the kernel defaults.
    pub sockbuf: Option<usize>,
    /// `--dscp` (0–63), written as IP_TOS / IPV6_TCLASS = `dscp << 2`; 0 leaves the default.
    pub dscp: u8,
    /// Learn the local address each datagram was sent to and reply from it (IP_PKTINFO / IPV6_RECVPKTINFO),
    /// for sockets bound to a wildcard address. Only backends that read control messages honour it.
    pub pktinfo: bool,
    /// Segmentation offloads to use where the backend and kernel have them (default: both).
    pub offload: Offload,
}

impl UdpConfig {
    /// Bind to `bind` with nothing else set: no SO_REUSEPORT, the kernel's buffer sizes and DSCP, no
    /// IP_PKTINFO; GSO and GRO allowed.
    pub fn new(bind: SocketAddr) -> Self {
        UdpConfig { bind, reuse_port: false, sockbuf: None, dscp: 0, pktinfo: false, offload: Offload::default() }
    }
}

/// Segmentation offloads a backend may use where the kernel has them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offload {
    /// UDP GSO on send (`UDP_SEGMENT`, Linux 4.18).
    pub gso: bool,
    /// UDP GRO on receive (`UDP_GRO`, Linux 5.0): receive buffers must then hold 64 KiB.
    pub gro: bool,
}

impl Offload {
    /// Neither offload: one datagram per send and per receive buffer.
    pub const NONE: Offload = Offload { gso: false, gro: false };
}

impl Default for Offload {
    fn default() -> Self {
        Offload { gso: true, gro: true }
    }
}

/// A socket buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufKind {
    /// SO_RCVBUF.
    Recv,
    /// SO_SNDBUF.
    Send,
}

impl BufKind {
    /// The sysctl that caps SO_RCVBUF / SO_SNDBUF for unprivileged processes (Linux `net/core/sock.c`).
    pub fn sysctl(self) -> &'static str {
        match self {
            BufKind::Recv => "net.core.rmem_max",
            BufKind::Send => "net.core.wmem_max",
        }
    }

    /// The socket option's name.
    pub fn option(self) -> &'static str {
        match self {
            BufKind::Recv => "SO_RCVBUF",
            BufKind::Send => "SO_SNDBUF",
        }
    }
}

/// Something the daemon should log once about a socket; the socket works regardless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketWarning {
    /// The kernel kept a buffer below `--sockbuf`, even after SO_RCVBUFFORCE/SO_SNDBUFFORCE.
    BufferClamped {
        /// Which buffer; [`BufKind::sysctl`] names the limit to raise.
        buffer: BufKind,
        /// `--sockbuf`.
        requested: usize,
        /// What getsockopt reads back (Linux reports twice the usable size).
        effective: usize,
    },
    /// The backend cannot learn which local address a datagram targeted, nor choose the source address of a
    /// reply (no IP_PKTINFO): on a multi-homed host bound to a wildcard, replies leave from the routing
    /// table's choice, as kcp-go's do.
    NoPktinfo {
        /// The backend's `--io` name.
        backend: &'static str,
    },
}

impl SocketWarning {
    /// The sysctl to raise and the value to set it to, for a clamped buffer.
    pub fn sysctl(&self) -> Option<(&'static str, usize)> {
        match *self {
            SocketWarning::BufferClamped { buffer, requested, .. } => Some((buffer.sysctl(), requested)),
            SocketWarning::NoPktinfo { .. } => None,
        }
    }
}

impl fmt::Display for SocketWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SocketWarning::BufferClamped { buffer, requested, effective } => write!(
                f,
                "--sockbuf {requested}: the kernel capped {} at {effective} bytes (read back; wanted {}); \
                 raise it with `sysctl -w {}={requested}` or run with CAP_NET_ADMIN",
                buffer.option(),
                readback_for(requested),
                buffer.sysctl(),
            ),
            SocketWarning::NoPktinfo { backend } => write!(
                f,
                "the {backend} I/O backend cannot read IP_PKTINFO: replies from a wildcard-bound socket leave \
                 from the address the routing table picks"
            ),
        }
    }
}

/// What the kernel made of a [`UdpConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketReport {
    /// The bound address (ephemeral port resolved).
    pub local: SocketAddr,
    /// SO_RCVBUF as read back (Linux: twice the usable size, see socket(7)).
    pub rcvbuf: usize,
    /// SO_SNDBUF as read back, doubled likewise.
    pub sndbuf: usize,
    /// IP_PKTINFO (and IPV6_RECVPKTINFO) is on.
    pub pktinfo: bool,
    /// The backend sends with UDP GSO (`UDP_SEGMENT`), as asked and where the kernel has it.
    pub gso: bool,
    /// The backend receives with UDP GRO (`mmsg` only): its receive buffers must hold 64 KiB.
    pub gro: bool,
    /// To log once.
    pub warnings: Vec<SocketWarning>,
}

/// Create, configure and bind a non-blocking UDP socket.
pub fn bind(cfg: &UdpConfig) -> io::Result<(UdpSocket, SocketReport)> {
    if cfg.dscp > MAX_DSCP {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("--dscp {} is out of range 0-63", cfg.dscp)));
    }
    let v6 = cfg.bind.is_ipv6();
    let sock = Socket::new(Domain::for_address(cfg.bind), Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        // Dual-stack whatever net.ipv6.bindv6only says: `[::]` also takes IPv4 peers (as Go's "udp" network
        // does for kcptun's `:29900`); IPv4 peers then appear as IPv4-mapped addresses, normalised below.
        sock.set_only_v6(false)?;
    }
    if cfg.reuse_port {
        set_reuse_port(&sock)?;
    }
    sock.set_nonblocking(true)?;
    let mut warnings = Vec::new();
    if let Some(want) = cfg.sockbuf {
        for kind in [BufKind::Recv, BufKind::Send] {
            let got = set_buffer(&sock, kind, want)?;
            warnings.extend(buffer_warning(kind, want, got));
        }
    }
    if cfg.dscp != 0 {
        set_dscp(&sock, v6, cfg.dscp)?;
    }
    let pktinfo = cfg.pktinfo && enable_pktinfo(&sock, v6)?;
    sock.bind(&cfg.bind.into()).map_err(|e| bind_error("udp", cfg.bind, e))?;
    let rcvbuf = sock.recv_buffer_size()?;
    let sndbuf = sock.send_buffer_size()?;
    let sock = UdpSocket::from(sock);
    let local = sock.local_addr()?;
    Ok((sock, SocketReport { local, rcvbuf, sndbuf, pktinfo, gso: false, gro: false, warnings }))
}

/// Fail with `address already in use: <addr>` when some other socket holds `addr` — another process's
/// SO_REUSEPORT group included, which a bind with SO_REUSEPORT would silently join (same user), after which
/// the kernel would split new peers between the two processes. The probe binds a throwaway socket without
/// SO_REUSEPORT (and dual-stack, as [`bind`] does), then closes it so the shards' sockets can form their own
/// group. Between the probe and those binds another process could still take the port: a window of a few
/// microseconds at start-up, which the kernel offers no way to close. Port 0 needs no probe.
pub fn probe_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    sock.bind(&addr.into()).map_err(|e| bind_error("udp", addr, e))
}

/// A bind failure that names the address: `address already in use: <addr>` (kcptun: "bind: address already
/// in use"), else `cannot bind <proto> <addr>: <error>`.
pub fn bind_error(proto: &str, addr: impl fmt::Display, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(e.kind(), format!("address already in use: {addr}"))
    } else {
        io::Error::new(e.kind(), format!("cannot bind {proto} {addr}: {e}"))
    }
}

/// The warning for a buffer of `effective` bytes (as getsockopt reads it back) when `requested` was asked
/// for, or `None` when the kernel granted it. Linux doubles the value set and reports the doubled value
/// (socket(7)); an unprivileged SO_RCVBUF/SO_SNDBUF is capped at net.core.rmem_max/wmem_max first.
pub fn buffer_warning(buffer: BufKind, requested: usize, effective: usize) -> Option<SocketWarning> {
    (effective < readback_for(requested)).then_some(SocketWarning::BufferClamped { buffer, requested, effective })
}

/// What getsockopt reads back after a granted setsockopt of `requested` bytes.
fn readback_for(requested: usize) -> usize {
    let req = requested.min(i32::MAX as usize / 2);
    // net/core/sock.c __sock_set_rcvbuf: `val = min(val, INT_MAX / 2); sk_rcvbuf = max(val * 2, SOCK_MIN_RCVBUF)`.
    if cfg!(any(target_os = "linux", target_os = "android")) { req * 2 } else { req }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4
/// peers) turned into IPv4, so a peer has one address whichever socket family saw it.
pub fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// `addr` in the family of a socket (`v6_socket`): IPv4 on an IPv6 socket becomes IPv4-mapped, IPv4-mapped
/// on an IPv4 socket becomes IPv4; `None` for an IPv6 address on an IPv4 socket.
pub fn for_socket(addr: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
    match (normalise(addr), v6_socket) {
        (SocketAddr::V4(a), true) => Some(SocketAddr::V6(SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0))),
        (a @ SocketAddr::V4(_), false) => Some(a),
        (a @ SocketAddr::V6(_), true) => Some(a),
        (SocketAddr::V6(_), false) => None,
    }
}

/// An IP for a source address (`Transmit::src_ip`): IPv4-mapped becomes IPv4.
pub fn normalise_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin")))]
fn set_reuse_port(sock: &Socket) -> io::Result<()> {
    sock.set_reuse_port(true)
}

#[cfg(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))]
fn set_reuse_port(_: &Socket) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_REUSEPORT is not available on this platform"))
}

/// Set one buffer to `want` bytes and return what the kernel reads back. When the kernel clamped it, retry
/// with SO_RCVBUFFORCE/SO_SNDBUFFORCE (Linux, needs CAP_NET_ADMIN; kcp-go only calls SetReadBuffer).
pub(crate) fn set_buffer(sock: &Socket, kind: BufKind, want: usize) -> io::Result<usize> {
    let want = want.min(i32::MAX as usize);
    let get = |s: &Socket| match kind {
        BufKind::Recv => s.recv_buffer_size(),
        BufKind::Send => s.send_buffer_size(),
    };
    match kind {
        BufKind::Recv => sock.set_recv_buffer_size(want)?,
        BufKind::Send => sock.set_send_buffer_size(want)?,
    }
    let got = get(sock)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if got < readback_for(want) {
        let opt = match kind {
            BufKind::Recv => libc::SO_RCVBUFFORCE,
            BufKind::Send => libc::SO_SNDBUFFORCE,
        };
        // EPERM without CAP_NET_ADMIN: the clamped value stands and the caller warns.
        if setsockopt_int(sock.as_raw_fd(), libc::SOL_SOCKET, opt, want as libc::c_int).is_ok() {
            return get(sock);
        }
    }
    Ok(got)
}

/// DSCP in the upper six bits of the TOS / traffic class byte (RFC 2474). kcp-go `SetDSCP` writes the DSCP
/// unshifted for IPv6 (`ipv6.SetTrafficClass(dscp)`); we shift for both families.
fn set_dscp(sock: &Socket, v6: bool, dscp: u8) -> io::Result<()> {
    let tos = u32::from(dscp) << 2;
    if !v6 {
        return sock.set_tos_v4(tos);
    }
    setsockopt_int(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_TCLASS, tos as libc::c_int)?;
    // IPv4 peers of a dual-stack socket go out through the IPv4 path, which reads IP_TOS (Linux
    // udpv6_sendmsg hands v4-mapped destinations to udp_sendmsg). Best effort: not every OS takes it.
    let _ = sock.set_tos_v4(tos);
    Ok(())
}

/// Ask for the destination address of each datagram. On a dual-stack IPv6 socket, IPv4 datagrams carry
/// IP_PKTINFO when that is on too (Linux udpv6_recvmsg → ip_cmsg_recv for v4-mapped skbs), so both are set
/// (as quinn-udp does). Returns whether pktinfo is on.
#[cfg(target_os = "linux")]
fn enable_pktinfo(sock: &Socket, v6: bool) -> io::Result<bool> {
    let fd = sock.as_raw_fd();
    if v6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
    }
    Ok(true)
}

/// Only the Linux backends read control messages; elsewhere pktinfo stays off.
#[cfg(not(target_os = "linux"))]
fn enable_pktinfo(_: &Socket, _: bool) -> io::Result<bool> {
    Ok(false)
}

/// setsockopt with an `int` value.
pub(crate) fn setsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value points at a live c_int of the length passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// getsockopt of an `int` option.
#[cfg(test)]
pub(crate) fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are live and describe a c_int-sized output buffer.
    let r = unsafe { libc::getsockopt(fd, level, name, (&mut val as *mut libc::c_int).cast(), &mut len) };
    if r == 0 { Ok(val) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_and_family() {
        let m: SocketAddr = "[::ffff:10.1.2.3]:7".parse().unwrap();
        assert_eq!(normalise(m), "10.1.2.3:7".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:7".parse().unwrap();
        assert_eq!(normalise(v6), v6);
        let v4: SocketAddr = "10.1.2.3:7".parse().unwrap();
        assert_eq!(for_socket(v4, true), Some(m));
        assert_eq!(for_socket(m, false), Some(v4));
        assert_eq!(for_socket(v6, false), None);
        assert_eq!(normalise_ip("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn dscp_and_buffers_are_applied() {
        let (s, rep) =
            bind(&UdpConfig { dscp: 46, sockbuf: Some(1 << 16), ..UdpConfig::new("127.0.0.1:0".parse().unwrap()) })
                .unwrap();
        assert_eq!(getsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_TOS).unwrap(), 46 << 2);
        assert!(rep.rcvbuf >= 1 << 16 && rep.sndbuf >= 1 << 16, "{rep:?}");
        assert!(rep.warnings.is_empty(), "{rep:?}");
        let (s6, _) = bind(&UdpConfig { dscp: 10, ..UdpConfig::new("[::1]:0".parse().unwrap()) }).unwrap();
        assert_eq!(getsockopt_int(s6.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_TCLASS).unwrap(), 10 << 2);
        assert!(bind(&UdpConfig { dscp: 64, ..UdpConfig::new("127.0.0.1:0".parse().unwrap()) }).is_err());
    }

    #[test]
    fn a_port_held_by_another_reuseport_group_is_in_use() {
        let first = bind(&UdpConfig { reuse_port: true, ..UdpConfig::new("127.0.0.1:0".parse().unwrap()) }).unwrap();
        let addr = first.1.local;
        // What a second process would do: SO_REUSEPORT lets it join; the probe does not.
        assert!(bind(&UdpConfig { reuse_port: true, ..UdpConfig::new(addr) }).is_ok());
        let e = probe_free(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(e.to_string(), format!("address already in use: {addr}"));
        // A wildcard listener holds the port for every address, dual-stack included.
        let any = bind(&UdpConfig { reuse_port: true, ..UdpConfig::new("[::]:0".parse().unwrap()) }).unwrap();
        let port = any.1.local.port();
        assert!(probe_free(SocketAddr::from(([127, 0, 0, 1], port))).is_err());
        drop((first, any));
        assert!(probe_free(addr).is_ok(), "free again once closed");
        assert!(probe_free("127.0.0.1:0".parse().unwrap()).is_ok());
    }

    #[test]
    fn clamp_warning_names_the_sysctl() {
        let mib = 1 << 20;
        assert_eq!(buffer_warning(BufKind::Recv, 8 * mib, 16 * mib), None);
        let w = buffer_warning(BufKind::Recv, 8 * mib, 8 * mib).unwrap();
        assert_eq!(w.sysctl(), Some(("net.core.rmem_max", 8 * mib)));
        assert!(w.to_string().contains("sysctl -w net.core.rmem_max=8388608"), "{w}");
        let w = buffer_warning(BufKind::Send, 8 * mib, 8 * mib).unwrap();
        assert!(w.to_string().contains("net.core.wmem_max=8388608"), "{w}");
    }
}
