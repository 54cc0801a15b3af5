//! Linux: batches through recvmmsg(2) / sendmmsg(2), with UDP GRO on receive, UDP GSO on send and
//! IP_PKTINFO both ways (ARCHITECTURE.md §5, the default backend). Model: quinn-udp `unix.rs`.
//!
//! Readiness: the socket itself — wait for it to be readable, then call `recv_batch` until it returns fewer
//! than asked.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::sync::OnceLock;

use super::msg::{self, BATCH, CmsgBuf, GSO_MAX_SEGMENTS, TxScratch};
use super::udp::{self, Offload, SocketReport, UdpConfig, setsockopt_int};
use super::{DatagramIo, IoStats, RecvMeta, Transmit};

/// Consecutive ECONNREFUSED reported by one `recv_batch` before it gives up for this call.
const MAX_REFUSED: u32 = 3;

/// A UDP socket moving batches through recvmmsg/sendmmsg.
pub struct MmsgSocket {
    sock: UdpSocket,
    local: SocketAddr,
    v6: bool,
    /// GSO in use; switched off for good when the kernel refuses it.
    gso: bool,
    gro: bool,
    stats: IoStats,
    rx: RxScratch,
    tx: TxScratch,
}

/// Receive-side arrays for one batch; the pointers in `hdrs` are rewritten by every `recv_batch`.
struct RxScratch {
    hdrs: Box<[libc::mmsghdr]>,
    iov: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
}

// SAFETY: the raw pointers inside `hdrs`/`iov` point into this struct's own boxed arrays or into buffers
// borrowed for one call; nothing is shared between threads.
unsafe impl Send for RxScratch {}

impl MmsgSocket {
    /// Bind per `cfg` ([`udp::bind`]) and switch on the offloads in `offload` that the kernel has.
    pub fn open(cfg: &UdpConfig, offload: Offload) -> io::Result<(MmsgSocket, SocketReport)> {
        let (sock, mut report) = udp::bind(cfg)?;
        let s = MmsgSocket::from_socket(sock, offload)?;
        report.gso = s.gso;
        report.gro = s.gro;
        Ok((s, report))
    }

    /// Wrap a bound socket (made non-blocking). GRO is switched on with setsockopt(UDP_GRO) (Linux 5.0); GSO
    /// is used when the kernel knows UDP_SEGMENT (Linux 4.18).
    pub fn from_socket(sock: UdpSocket, offload: Offload) -> io::Result<MmsgSocket> {
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let gro = offload.gro && setsockopt_int(sock.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        Ok(MmsgSocket {
            v6: local.is_ipv6(),
            local,
            gso: offload.gso && gso_supported(),
            gro,
            stats: IoStats::default(),
            rx: RxScratch {
                // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs; all-zero is valid.
                hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
                // SAFETY: as above.
                iov: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
                // SAFETY: as above.
                names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
                cmsgs: vec![CmsgBuf::ZERO; BATCH].into_boxed_slice(),
            },
            tx: TxScratch::new(),
            sock,
        })
    }

    /// GSO is in use (false once the kernel refused it).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// GRO is on: receive buffers should hold 64 KiB, or coalesced datagrams are cut.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// The underlying socket, for its options and its fd (the one to poll); datagrams sent or received on
    /// it directly bypass [`IoStats`], and with GRO on a direct read may return a coalesced run.
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

impl DatagramIo for MmsgSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        let rx = &mut self.rx;
        for (j, b) in bufs[..n].iter_mut().enumerate() {
            rx.iov[j] = libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() };
            let h = &mut rx.hdrs[j];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut rx.names[j] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut rx.iov[j];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = rx.cmsgs[j].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = msg::CMSG_BUF as _;
            h.msg_hdr.msg_flags = 0;
        }
        let fd = self.sock.as_raw_fd();
        let mut refused = 0;
        let got = loop {
            // SAFETY: hdrs[..n] point at live buffers: names, iov and control arrays owned by `rx`, and the
            // caller's `bufs`, all borrowed for the duration of the call; lengths match the allocations.
            let r =
                unsafe { libc::recvmmsg(fd, rx.hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT as _, ptr::null_mut()) };
            self.stats.rx_syscalls += 1;
            if r >= 0 {
                break (r as usize).min(n);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => return Ok(0),
                // The ICMP error of an earlier send, reported once (connected sockets, or IP_RECVERR).
                Some(libc::ECONNREFUSED) => {
                    self.stats.tx_refused += 1;
                    refused += 1;
                    if refused > MAX_REFUSED {
                        return Ok(0);
                    }
                }
                _ => {
                    self.stats.errors += 1;
                    return Err(e);
                }
            }
        };
        for j in 0..got {
            let h = &rx.hdrs[j].msg_hdr;
            let len = (rx.hdrs[j].msg_len as usize).min(bufs[j].len());
            let namelen = (h.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>());
            // SAFETY: sockaddr_storage is plain bytes (zeroed at construction, then written by the kernel).
            let name =
                unsafe { std::slice::from_raw_parts((&rx.names[j] as *const libc::sockaddr_storage).cast(), namelen) };
            let src = msg::read_sockaddr(name).unwrap_or_else(|| {
                self.stats.errors += 1;
                SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            });
            #[allow(clippy::unnecessary_cast)] // socklen_t on musl, size_t on glibc
            let ctrl = &rx.cmsgs[j].0[..(h.msg_controllen as usize).min(msg::CMSG_BUF)];
            let c = msg::parse_cmsgs(ctrl);
            let stride = c.stride.map_or(len, |s| s.min(len));
            let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
            meta[j] = RecvMeta { len, stride, src, dst_ip: c.dst_ip, truncated };
            self.stats.rx_datagrams += if stride == 0 { 1 } else { len.div_ceil(stride) as u64 };
            self.stats.rx_bytes += len as u64;
            self.stats.rx_truncated += u64::from(truncated);
        }
        Ok(got)
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        let fd = self.sock.as_raw_fd();
        msg::send_all(msgs, &mut self.tx, self.v6, &mut self.gso, &mut self.stats, |tx, n, stats| {
            // SAFETY: TxScratch::fill built hdrs[..n]; every pointer in them is into `tx`'s own arrays or the
            // payloads of `msgs`, both alive for this call.
            let r = unsafe { libc::sendmmsg(fd, tx.hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT as _) };
            stats.tx_syscalls += 1;
            match r {
                1.. => (r as usize, None),
                // sendmmsg returns 0 only for an empty vector: treat as "no room" rather than loop.
                0 => (0, Some(libc::EAGAIN)),
                _ => (0, Some(errno())),
            }
        })
    }

    fn max_gso_segments(&self) -> usize {
        if self.gso { GSO_MAX_SEGMENTS } else { 1 }
    }

    fn stats(&self) -> IoStats {
        self.stats
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }
}

pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Whether the kernel takes UDP_SEGMENT (Linux 4.18), probed once on a throwaway socket as quinn-udp does:
/// set on the socket itself it would make every send a GSO send.
pub(crate) fn gso_supported() -> bool {
    static GSO: OnceLock<bool> = OnceLock::new();
    *GSO.get_or_init(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP));
        s.is_ok_and(|s| setsockopt_int(s.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 1200).is_ok())
    })
}
