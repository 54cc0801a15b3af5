//! Portable backend: one recvmsg(2) / sendto(2) per datagram, for every Unix (the `poll` flag value: the
//! shard drives it from a poll(2) loop). No offloads and no IP_PKTINFO; the error policy is the Linux
//! backends' (see `msg::send_all`): a datagram that cannot go out is counted and dropped, a full socket buffer
//! hands the rest back to the caller.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use super::udp::{self, SocketReport, SocketWarning, UdpConfig, for_socket, normalise};
use super::{DatagramIo, IoStats, RecvMeta, Transmit};

/// Consecutive ECONNREFUSED before a datagram (or a receive call) gives up.
const MAX_REFUSED: u32 = 3;

/// A UDP socket moving one datagram per system call.
pub struct BasicSocket {
    sock: UdpSocket,
    local: SocketAddr,
    v6: bool,
    stats: IoStats,
}

impl BasicSocket {
    /// Bind per `cfg` ([`udp::bind`]). `cfg.pktinfo` is not honoured here: the report carries a
    /// [`SocketWarning::NoPktinfo`] instead.
    pub fn open(cfg: &UdpConfig) -> io::Result<(BasicSocket, SocketReport)> {
        let mut cfg = *cfg;
        let wanted_pktinfo = std::mem::replace(&mut cfg.pktinfo, false);
        let (sock, mut report) = udp::bind(&cfg)?;
        if wanted_pktinfo {
            report.warnings.push(SocketWarning::NoPktinfo { backend: "poll" });
        }
        Ok((BasicSocket::from_socket(sock)?, report))
    }

    /// Wrap a bound socket (made non-blocking).
    pub fn from_socket(sock: UdpSocket) -> io::Result<BasicSocket> {
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        Ok(BasicSocket { v6: local.is_ipv6(), local, stats: IoStats::default(), sock })
    }

    /// The underlying socket, for its options and its fd (the one to poll); datagrams sent or received on
    /// it directly bypass [`IoStats`].
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// One recvmsg: `Ok(None)` when nothing is ready.
    fn recv_one(&mut self, buf: &mut [u8]) -> io::Result<Option<RecvMeta>> {
        let mut refused = 0;
        loop {
            // SAFETY: plain C structs; all-zero is valid.
            let mut name: libc::sockaddr_storage = unsafe { zeroed() };
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
            // SAFETY: as above.
            let mut h: libc::msghdr = unsafe { zeroed() };
            h.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov;
            h.msg_iovlen = 1;
            // SAFETY: `h` points at `name`, `iov` and the caller's `buf`, all live for the call, with their
            // true lengths.
            let r = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut h, libc::MSG_DONTWAIT) };
            self.stats.rx_syscalls += 1;
            if r >= 0 {
                let len = (r as usize).min(buf.len());
                let namelen = (h.msg_namelen as usize).min(size_of::<libc::sockaddr_storage>());
                // SAFETY: sockaddr_storage is plain bytes, zeroed above and filled by the kernel.
                let bytes = unsafe {
                    std::slice::from_raw_parts((&name as *const libc::sockaddr_storage).cast::<u8>(), namelen)
                };
                let Some(src) = sockaddr_to_std(bytes) else {
                    // An address family we do not speak: nothing to reply to.
                    self.stats.errors += 1;
                    continue;
                };
                let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
                self.stats.rx_datagrams += 1;
                self.stats.rx_bytes += len as u64;
                self.stats.rx_truncated += u64::from(truncated);
                return Ok(Some(RecvMeta { len, stride: len, src, dst_ip: None, truncated }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(c) if c == libc::EAGAIN || c == libc::EWOULDBLOCK => return Ok(None),
                Some(libc::ECONNREFUSED) => {
                    self.stats.tx_refused += 1;
                    refused += 1;
                    if refused > MAX_REFUSED {
                        return Ok(None);
                    }
                }
                _ => {
                    self.stats.errors += 1;
                    return Err(e);
                }
            }
        }
    }
}

/// A sockaddr the kernel wrote, IPv4-mapped normalised (portable: family from `sa_family`).
fn sockaddr_to_std(bytes: &[u8]) -> Option<SocketAddr> {
    if bytes.len() < size_of::<libc::sockaddr>() {
        return None;
    }
    // SAFETY: at least a sockaddr's bytes; read_unaligned needs no alignment.
    let sa: libc::sockaddr = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    match libc::c_int::from(sa.sa_family) {
        libc::AF_INET if bytes.len() >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: length checked; unaligned read.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if bytes.len() >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: length checked; unaligned read.
            let s: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let a = std::net::SocketAddrV6::new(
                s.sin6_addr.s6_addr.into(),
                u16::from_be(s.sin6_port),
                u32::from_be(s.sin6_flowinfo),
                s.sin6_scope_id,
            );
            Some(normalise(SocketAddr::V6(a)))
        }
        _ => None,
    }
}

impl DatagramIo for BasicSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len());
        let mut got = 0;
        while got < n {
            match self.recv_one(bufs[got]) {
                Ok(Some(m)) => {
                    meta[got] = m;
                    got += 1;
                }
                Ok(None) => break,
                // Something arrived already: hand it over; the error will show again next call if it persists.
                Err(_) if got > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        for (i, m) in msgs.iter().enumerate() {
            let Some(dst) = for_socket(m.dst, self.v6) else {
                self.stats.errors += 1;
                continue;
            };
            let seg = m.segment_size.filter(|&s| s > 0).unwrap_or(usize::MAX).max(1);
            let mut sent_any = false;
            let mut chunks = m.payload.chunks(seg.min(m.payload.len().max(1)));
            // An empty payload is one empty datagram.
            let empty: &[u8] = &[];
            let mut next = if m.payload.is_empty() { Some(empty) } else { chunks.next() };
            let mut refused = 0;
            while let Some(d) = next {
                match self.sock.send_to(d, dst) {
                    Ok(_) => {
                        self.stats.tx_syscalls += 1;
                        self.stats.tx_datagrams += 1;
                        self.stats.tx_bytes += d.len() as u64;
                        sent_any = true;
                        refused = 0;
                        next = chunks.next();
                    }
                    Err(e) => {
                        self.stats.tx_syscalls += 1;
                        match e.raw_os_error() {
                            Some(libc::EINTR) => {}
                            Some(c) if c == libc::EAGAIN || c == libc::EWOULDBLOCK || c == libc::ENOBUFS => {
                                self.stats.tx_blocked += 1;
                                if !sent_any {
                                    return Ok(i);
                                }
                                // Part of a run went out: drop the rest rather than resend its head.
                                let rest = 1 + chunks.count();
                                self.stats.tx_dropped += rest as u64;
                                return Ok(i + 1);
                            }
                            Some(libc::ECONNREFUSED) => {
                                self.stats.tx_refused += 1;
                                refused += 1;
                                if refused > MAX_REFUSED {
                                    self.stats.tx_dropped += 1;
                                    refused = 0;
                                    next = chunks.next();
                                }
                            }
                            Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) if i == 0 && !sent_any => {
                                self.stats.errors += 1;
                                return Err(e);
                            }
                            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL) => {
                                self.stats.tx_unroutable += 1;
                                next = chunks.next();
                            }
                            _ => {
                                self.stats.errors += 1;
                                next = chunks.next();
                            }
                        }
                    }
                }
            }
        }
        Ok(msgs.len())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_split_runs() {
        let (mut a, _) = BasicSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
        let (mut b, rep) =
            BasicSocket::open(&UdpConfig { pktinfo: true, ..UdpConfig::new("127.0.0.1:0".parse().unwrap()) }).unwrap();
        assert!(matches!(rep.warnings[..], [SocketWarning::NoPktinfo { .. }]));
        let run: Vec<u8> = (0..250u8).collect();
        let msgs = [
            Transmit::new(b.local_addr(), b"one"),
            Transmit { segment_size: Some(100), ..Transmit::new(b.local_addr(), &run) },
        ];
        assert_eq!(a.send_batch(&msgs).unwrap(), 2);
        let mut store = vec![[0u8; 2048]; 8];
        let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
        let mut meta = [RecvMeta::EMPTY; 8];
        let mut got = 0;
        for _ in 0..1000 {
            got += b.recv_batch(&mut bufs[got..], &mut meta[got..]).unwrap();
            if got == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, 4);
        let lens: Vec<usize> = meta[..4].iter().map(|m| m.len).collect();
        assert_eq!(lens, [3, 100, 100, 50]);
        assert_eq!(&store[3][..50], &run[200..]);
        assert_eq!(meta[0].src, a.local_addr());
        assert_eq!(a.stats().tx_datagrams, 4);
    }

    #[test]
    fn truncation_is_flagged() {
        let (mut a, _) = BasicSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
        let (mut b, _) = BasicSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
        a.send_batch(&[Transmit::new(b.local_addr(), &[9u8; 3000])]).unwrap();
        let mut store = [0u8; 1500];
        let mut meta = [RecvMeta::EMPTY; 1];
        for _ in 0..1000 {
            if b.recv_batch(&mut [&mut store[..]], &mut meta).unwrap() == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(meta[0].truncated);
        assert_eq!(meta[0].len, 1500);
        assert_eq!(b.stats().rx_truncated, 1);
    }
}
