//! Batched raw-socket I/O for fake TCP: `recvmmsg` into fixed slots, and `sendmmsg` of hand-made headers
//! with the caller's datagrams (two iovecs each), with per-segment source addresses as `IP_PKTINFO`
//! control messages where the socket is not connected.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use socket2::SockAddr;

use super::count_send_error;
use crate::io::IoStats;
use crate::proto::faketcp::MAX_HEADER;

/// Packets one `recvmmsg` takes from a raw socket, and the room for each: an IPv4 header, tcpraw 1.2.32's
/// 36-byte TCP header and a 1500-byte datagram fit; a longer packet is cut and counted.
const SLOTS: usize = 32;
const SLOT: usize = 2048;

/// Receive buffers for `recvmmsg` on a raw socket.
pub(super) struct RawRx {
    buf: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into this struct's own boxed slices, which never move
// or change size and go with it.
unsafe impl Send for RawRx {}

impl RawRx {
    pub(super) fn new() -> Self {
        let mut buf = vec![0u8; SLOTS * SLOT].into_boxed_slice();
        // SAFETY: all-zero bytes are a valid sockaddr_storage, iovec and mmsghdr (null pointers, zero lengths).
        let mut names: Box<[libc::sockaddr_storage]> = (0..SLOTS).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iovs: Box<[libc::iovec]> =
            (0..SLOTS).map(|i| libc::iovec { iov_base: buf[i * SLOT..].as_mut_ptr().cast(), iov_len: SLOT }).collect();
        let hdrs = (0..SLOTS)
            .map(|i| {
                // SAFETY: as above.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_iov = &mut iovs[i];
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        RawRx { buf, names, iovs, hdrs }
    }

    /// Up to `max` packets from `fd` without blocking (0: none ready).
    pub(super) fn recv(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let m = max.min(SLOTS);
        for h in &mut self.hdrs[..m] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        debug_assert!(self.iovs.iter().all(|v| v.iov_len == SLOT));
        // SAFETY: `m` headers, each pointing at its own name and one iovec of SLOT bytes of `buf`.
        let r =
            unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), m as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        match r {
            r if r >= 0 => Ok(r as usize),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) }
            }
        }
    }

    /// [`RawRx::recv`], counted in `stats` (a receive call, or an error); interrupted calls are retried.
    /// `None` after an error.
    pub(super) fn recv_counted(&mut self, fd: RawFd, max: usize, stats: &mut IoStats) -> Option<usize> {
        loop {
            match self.recv(fd, max) {
                Ok(k) => {
                    stats.rx_syscalls += 1;
                    return Some(k);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    stats.errors += 1;
                    return None;
                }
            }
        }
    }

    /// Packet `i` of the last `recv`: its bytes, its sender's IP, and whether it was cut.
    pub(super) fn packet(&self, i: usize) -> (&[u8], IpAddr, bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(SLOT);
        let ss = &self.names[i];
        let ip = match i32::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in, which sockaddr_storage is large enough to hold.
                let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, a sockaddr_in6.
                let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr))
            }
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        (&self.buf[i * SLOT..i * SLOT + len], ip, h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
    }
}

/// Segments queued for one `sendmmsg`: each a header written here and the caller's datagram (two iovecs),
/// with a destination and source address where the socket is not connected.
pub(super) struct RawTx {
    hdrs: Box<[[u8; MAX_HEADER]]>,
    iovs: Box<[[libc::iovec; 2]]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[[u8; 64]]>,
    msgs: Box<[libc::mmsghdr]>,
    /// The `Transmit` each queued segment belongs to, and its datagram's length.
    owner: Box<[(usize, usize)]>,
    n: usize,
}

// SAFETY: as for RawRx; the iovecs' second halves point at caller datagrams only between `queue` and the
// `flush` that ends the same `send_batch`.
unsafe impl Send for RawTx {}

impl RawTx {
    pub(super) fn new() -> Self {
        fn z<T>() -> T {
            // SAFETY: only instantiated below with C structs for which all-zero bytes are valid (null
            // pointers, zero lengths).
            unsafe { std::mem::zeroed() }
        }
        RawTx {
            hdrs: vec![[0u8; MAX_HEADER]; SLOTS].into_boxed_slice(),
            iovs: (0..SLOTS).map(|_| [z::<libc::iovec>(), z()]).collect(),
            names: (0..SLOTS).map(|_| z::<libc::sockaddr_storage>()).collect(),
            cmsgs: vec![[0u8; 64]; SLOTS].into_boxed_slice(),
            msgs: (0..SLOTS).map(|_| z::<libc::mmsghdr>()).collect(),
            owner: vec![(0, 0); SLOTS].into_boxed_slice(),
            n: 0,
        }
    }

    pub(super) fn full(&self) -> bool {
        self.n == SLOTS
    }

    /// The header slot of the next segment.
    pub(super) fn next_header(&mut self) -> &mut [u8; MAX_HEADER] {
        &mut self.hdrs[self.n]
    }

    /// Queue the segment whose header (`hdr_len` bytes) was written to [`RawTx::next_header`], carrying
    /// `payload`, to `to` from `src` (an unconnected socket), for `Transmit` `owner`.
    pub(super) fn queue(
        &mut self,
        hdr_len: usize,
        payload: &[u8],
        to: Option<(&SockAddr, bool, IpAddr)>,
        owner: usize,
    ) {
        let i = self.n;
        self.iovs[i] = [
            libc::iovec { iov_base: self.hdrs[i].as_mut_ptr().cast(), iov_len: hdr_len },
            libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() },
        ];
        // SAFETY: all-zero bytes are a valid msghdr.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_iov = self.iovs[i].as_mut_ptr();
        h.msg_iovlen = 2;
        if let Some((addr, v6, src)) = to {
            // SAFETY: `addr` is a valid socket address of `addr.len()` bytes, no more than a sockaddr_storage.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr.as_ptr().cast::<u8>(),
                    (&mut self.names[i] as *mut libc::sockaddr_storage).cast::<u8>(),
                    addr.len() as usize,
                )
            };
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = addr.len();
            let space = pktinfo(&mut self.cmsgs[i], v6, src);
            if space > 0 {
                h.msg_control = self.cmsgs[i].as_mut_ptr().cast();
                h.msg_controllen = space;
            }
        }
        self.msgs[i] = libc::mmsghdr { msg_hdr: h, msg_len: 0 };
        self.owner[i] = (owner, payload.len());
        self.n += 1;
    }

    /// Send what is queued; `Err(owner)`: the kernel had no room from that `Transmit` on (the rest is
    /// dropped from the queue; the caller hands it back). Failures of single segments are counted and the
    /// segment dropped, as UDP allows.
    pub(super) fn flush(&mut self, fd: RawFd, stats: &mut IoStats) -> Result<(), usize> {
        let (n, mut at) = (std::mem::take(&mut self.n), 0);
        while at < n {
            stats.tx_syscalls += 1;
            // SAFETY: `msgs[at..n]` were filled by `queue` in this `send_batch`; what they point at lives.
            let r = unsafe { libc::sendmmsg(fd, self.msgs[at..].as_mut_ptr(), (n - at) as u32, libc::MSG_DONTWAIT) };
            if r > 0 {
                for &(_, len) in &self.owner[at..at + r as usize] {
                    stats.tx_datagrams += 1;
                    stats.tx_bytes += len as u64;
                }
                at += r as usize;
                continue;
            }
            if count_send_error(stats, &io::Error::last_os_error()) {
                return Err(self.owner[at].0);
            }
            at += 1;
        }
        Ok(())
    }
}

/// An IP_PKTINFO (IPV6_PKTINFO) control message in `buf` asking for source address `src`; its length.
fn pktinfo(buf: &mut [u8; 64], v6: bool, src: IpAddr) -> usize {
    // SAFETY: `buf` holds CMSG_SPACE of either pktinfo struct (64 bytes is more than both need).
    unsafe {
        match (v6, src) {
            (false, IpAddr::V4(a)) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                put_cmsg(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, &info)
            }
            (true, a) => {
                let a6 = match a {
                    IpAddr::V6(x) => x,
                    IpAddr::V4(x) => x.to_ipv6_mapped(),
                };
                let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: a6.octets() }, ipi6_ifindex: 0 };
                put_cmsg(buf, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info)
            }
            _ => 0,
        }
    }
}

/// Write one control message holding `v` at the start of `buf`; returns the control length.
///
/// # Safety
/// `buf` must hold `CMSG_SPACE(size_of::<T>())` bytes.
unsafe fn put_cmsg<T>(buf: &mut [u8; 64], level: libc::c_int, ty: libc::c_int, v: &T) -> usize {
    // SAFETY: per the contract; a zeroed msghdr pointing at `buf` lets CMSG_FIRSTHDR find its start.
    unsafe {
        let len = std::mem::size_of::<T>() as u32;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
        std::ptr::copy_nonoverlapping((v as *const T).cast::<u8>(), libc::CMSG_DATA(c), len as usize);
        libc::CMSG_SPACE(len) as usize
    }
}
