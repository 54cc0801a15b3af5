//! Linux: io_uring. Receive is one multishot `recvmsg` (Linux 6.0) drawing from a provided buffer ring
//! (Linux 5.19), re-armed whenever the kernel ends it; send is a linked chain of `sendmsg` per batch, so a
//! failure stops the rest exactly as sendmmsg(2) does and the shared error policy (`msg::send_all`) applies.
//! UDP GSO rides along as a control message; GRO is off (a coalesced 64 KiB datagram would need 64 KiB
//! provided buffers).
//!
//! Readiness: the receive ring's fd, readable while completions are pending (io_uring_poll). Completions of
//! a multishot request are posted by task work on the owning thread, which the kernel runs when that thread
//! leaves a wait (epoll_wait returns, then `recv_batch` finds them).
//!
//! Containers often forbid io_uring (seccomp, `kernel.io_uring_disabled`): [`probe`] opens a socket, sends
//! itself a datagram and receives it through a multishot request, and says why when that fails.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::msg::{self, BATCH, CMSG_BUF, CmsgBuf, GSO_MAX_SEGMENTS, TxScratch};
use super::udp::{self, Offload, SocketReport, UdpConfig};
use super::{DatagramIo, IoStats, RecvMeta, Transmit};

/// Provided receive buffers per socket (a power of two). When all are in use the kernel ends the multishot
/// request with ENOBUFS and datagrams wait in the socket buffer until `recv_batch` returns buffers and re-arms.
const RX_ENTRIES: u16 = 128;
/// Bytes per provided buffer: `io_uring_recvmsg_out` (16) + name (128) + control (128) + payload (1776, more
/// than kcp-go's 1500-byte datagrams).
const RX_BUF: usize = 2048;
/// The buffer group id (one group per ring).
const BGID: u16 = 0;
const RX_TAG: u64 = 1;
/// Bytes of `io_uring_recvmsg_out` at the head of each buffer.
const OUT_HDR: usize = 16;

/// A UDP socket driven through io_uring.
pub struct UringSocket {
    // Drop order: the rings (and with them the kernel's use of the buffers) go before the buffer memory.
    rx_ring: IoUring,
    tx_ring: IoUring,
    bufs: BufRing,
    /// The template the multishot request was armed with (only `msg_namelen`/`msg_controllen` matter).
    rx_hdr: Box<libc::msghdr>,
    armed: bool,
    sock: UdpSocket,
    local: SocketAddr,
    v6: bool,
    gso: bool,
    stats: IoStats,
    tx: TxScratch,
}

// SAFETY: the raw pointers (buffer ring, msghdr template, TxScratch) point into memory owned by this value;
// the socket is used by one thread at a time.
unsafe impl Send for UringSocket {}

/// A provided-buffer ring: `entries` × `io_uring_buf` (16 bytes, page-aligned, the tail overlaying the
/// reserved field of entry 0) and the buffers themselves.
struct BufRing {
    ring: *mut u8,
    layout: Layout,
    mem: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> io::Result<BufRing> {
        let layout = Layout::from_size_align(usize::from(entries) * 16, 4096).map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let ring = unsafe { alloc_zeroed(layout) };
        if ring.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = BufRing { ring, layout, mem: vec![0u8; usize::from(entries) * RX_BUF].into_boxed_slice(), tail: 0 };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    fn entries(&self) -> u16 {
        (self.layout.size() / 16) as u16
    }

    /// Queue buffer `bid` for the kernel (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries() - 1));
        let addr = self.mem.as_mut_ptr() as u64 + u64::from(bid) * RX_BUF as u64;
        // SAFETY: idx < entries, so the 16-byte entry lies inside the ring allocation. Fields of
        // io_uring_buf: addr u64, len u32, bid u16, resv u16 (left alone: entry 0's is the tail).
        unsafe {
            let e = self.ring.add(idx * 16);
            e.cast::<u64>().write_unaligned(addr);
            e.add(8).cast::<u32>().write_unaligned(RX_BUF as u32);
            e.add(12).cast::<u16>().write_unaligned(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make pushed buffers visible to the kernel (store-release of the tail).
    fn publish(&self) {
        // SAFETY: offset 14 of the page-aligned ring is the u16 tail; aligned for AtomicU16.
        let tail = unsafe { &*self.ring.add(14).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn buf(&self, bid: u16) -> &[u8] {
        let at = usize::from(bid) * RX_BUF;
        self.mem.get(at..at + RX_BUF).unwrap_or(&[])
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring that used it is gone (field order).
        unsafe { dealloc(self.ring, self.layout) };
    }
}

/// Whether io_uring with everything this backend needs works here; the error says why not.
pub fn probe() -> io::Result<()> {
    let (mut s, _) = UringSocket::open(&UdpConfig::new("127.0.0.1:0".parse().expect("literal")), Offload::NONE)?;
    let me = s.local;
    if s.send_batch(&[Transmit::new(me, b"kcpd io_uring probe")])? != 1 || s.stats.tx_datagrams != 1 {
        return Err(io::Error::other("io_uring sendmsg did not send"));
    }
    let mut buf = [0u8; 64];
    let mut meta = [RecvMeta::EMPTY; 1];
    for _ in 0..200 {
        if s.recv_batch(&mut [&mut buf[..]], &mut meta)? == 1 {
            return if &buf[..meta[0].len] == b"kcpd io_uring probe" {
                Ok(())
            } else {
                Err(io::Error::other("io_uring multishot recvmsg returned the wrong bytes"))
            };
        }
        s.rx_ring.submit_and_wait(1).ok();
    }
    Err(io::Error::other("io_uring multishot recvmsg delivered nothing"))
}

impl UringSocket {
    /// Bind per `cfg` and set up the rings. `offload.gro` is ignored (see the module text).
    pub fn open(cfg: &UdpConfig, offload: Offload) -> io::Result<(UringSocket, SocketReport)> {
        let (sock, mut report) = udp::bind(cfg)?;
        let s = UringSocket::from_socket(sock, Offload { gro: false, ..offload }, report.pktinfo)?;
        report.gso = s.gso;
        report.gro = false;
        Ok((s, report))
    }

    /// Wrap a bound socket. `pktinfo`: IP_PKTINFO is on and control data should be read.
    pub fn from_socket(sock: UdpSocket, offload: Offload, pktinfo: bool) -> io::Result<UringSocket> {
        sock.set_nonblocking(true)?;
        let local = sock.local_addr()?;
        let rx_ring = IoUring::new(8).map_err(|e| explain(e, "io_uring_setup"))?;
        let tx_ring: IoUring = IoUring::builder()
            .setup_cqsize(2 * BATCH as u32)
            .build(BATCH as u32)
            .map_err(|e| explain(e, "io_uring_setup"))?;
        let mut probe = io_uring::Probe::new();
        rx_ring.submitter().register_probe(&mut probe).map_err(|e| explain(e, "IORING_REGISTER_PROBE"))?;
        for (op, name) in [(opcode::RecvMsgMulti::CODE, "recvmsg"), (opcode::SendMsg::CODE, "sendmsg")] {
            if !probe.is_supported(op) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, format!("io_uring has no {name} here")));
            }
        }
        let bufs = BufRing::new(RX_ENTRIES)?;
        // SAFETY: the ring memory is page-aligned, RX_ENTRIES entries long, and lives in `bufs`, which is
        // dropped after the rings (field order of UringSocket).
        unsafe { rx_ring.submitter().register_buf_ring_with_flags(bufs.ring as u64, RX_ENTRIES, BGID, 0) }
            .map_err(|e| explain(e, "IORING_REGISTER_PBUF_RING (Linux 5.19)"))?;
        // SAFETY: plain C struct; all-zero is valid.
        let mut rx_hdr: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        rx_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        rx_hdr.msg_controllen = if pktinfo { CMSG_BUF as _ } else { 0 };
        let mut s = UringSocket {
            rx_ring,
            tx_ring,
            bufs,
            rx_hdr,
            armed: false,
            v6: local.is_ipv6(),
            local,
            sock,
            gso: offload.gso && super::mmsg::gso_supported(),
            stats: IoStats::default(),
            tx: TxScratch::new(),
        };
        s.arm()?;
        Ok(s)
    }

    /// Post the multishot recvmsg.
    fn arm(&mut self) -> io::Result<()> {
        let e =
            opcode::RecvMsgMulti::new(types::Fd(self.sock.as_raw_fd()), &*self.rx_hdr, BGID).build().user_data(RX_TAG);
        // SAFETY: the msghdr template is boxed in `self` and outlives the request; the buffers it selects
        // are registered.
        unsafe { self.rx_ring.submission().push(&e) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        self.rx_ring.submit()?;
        self.armed = true;
        Ok(())
    }

    /// GSO is in use (false once the kernel refused it).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// The underlying socket, for its options. Do not read from it: the armed multishot `recvmsg` consumes
    /// its receive queue, and the fd to poll is the ring's ([`DatagramIo::raw_fd`]), not this one.
    pub fn socket(&self) -> &UdpSocket {
        &self.sock
    }
}

/// An io_uring set-up error, with what failed and the usual cause.
fn explain(e: io::Error, what: &str) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (forbidden: seccomp profile or sysctl kernel.io_uring_disabled; use --io mmsg)"
        }
        Some(libc::ENOSYS) => " (this kernel has no io_uring; use --io mmsg)",
        Some(libc::EINVAL) => " (this kernel is too old for it; use --io mmsg)",
        Some(libc::ENOMEM) => " (RLIMIT_MEMLOCK too low for the rings)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

impl DatagramIo for UringSocket {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len());
        if n == 0 {
            return Ok(0);
        }
        if self.rx_ring.completion().is_empty() {
            // Let the kernel run pending task work, which posts the completions.
            self.rx_ring.submit()?;
            self.stats.rx_syscalls += 1;
        }
        let mut got = 0;
        let mut returned = false;
        let mut fatal = None;
        {
            let (mut cq, bufring, hdr) = (self.rx_ring.completion(), &mut self.bufs, &*self.rx_hdr);
            while got < n {
                let Some(cqe) = cq.next() else { break };
                if cqe.user_data() != RX_TAG {
                    continue;
                }
                if !cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
                let res = cqe.result();
                let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                    match -res {
                        // Every buffer in use: the request ended; re-armed below once buffers are back.
                        libc::ENOBUFS => {}
                        libc::EINTR | libc::EAGAIN | libc::ECANCELED => {}
                        libc::ECONNREFUSED => self.stats.tx_refused += 1,
                        libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL => {
                            self.stats.errors += 1;
                            fatal = Some(io::Error::from_raw_os_error(-res));
                        }
                        _ => self.stats.errors += 1,
                    }
                    continue;
                };
                let raw = bufring.buf(bid);
                if raw.len() < OUT_HDR {
                    // A buffer id we never provided: nothing to read or give back.
                    self.stats.errors += 1;
                    continue;
                }
                let used = usize::try_from(res).unwrap_or(0).min(raw.len());
                let parsed = types::RecvMsgOut::parse(&raw[..used.max(OUT_HDR)], hdr);
                if let Ok(out) = parsed {
                    let src = msg::read_sockaddr(out.name_data());
                    if let Some(src) = src {
                        let payload = out.payload_data();
                        let dst = &mut bufs[got];
                        let len = payload.len().min(dst.len());
                        dst[..len].copy_from_slice(&payload[..len]);
                        let truncated = out.is_payload_truncated() || len < payload.len();
                        let dst_ip = if hdr.msg_controllen > 0 {
                            let mut c = CmsgBuf::ZERO;
                            let ctrl = out.control_data();
                            let cl = ctrl.len().min(CMSG_BUF);
                            c.0[..cl].copy_from_slice(&ctrl[..cl]);
                            msg::parse_cmsgs(&c.0[..cl]).dst_ip
                        } else {
                            None
                        };
                        meta[got] = RecvMeta { len, stride: len, src, dst_ip, truncated };
                        self.stats.rx_datagrams += 1;
                        self.stats.rx_bytes += len as u64;
                        self.stats.rx_truncated += u64::from(truncated);
                        got += 1;
                    } else {
                        self.stats.errors += 1;
                    }
                } else {
                    self.stats.errors += 1;
                }
                bufring.push(bid);
                returned = true;
            }
        }
        if returned {
            self.bufs.publish();
        }
        if !self.armed && fatal.is_none() {
            self.arm()?;
        }
        match fatal {
            Some(e) if got == 0 => Err(e),
            _ => Ok(got),
        }
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        let fd = types::Fd(self.sock.as_raw_fd());
        let ring = &mut self.tx_ring;
        msg::send_all(msgs, &mut self.tx, self.v6, &mut self.gso, &mut self.stats, |tx, n, stats| {
            {
                let mut sq = ring.submission();
                for j in 0..n {
                    let link = if j + 1 < n { squeue::Flags::IO_LINK } else { squeue::Flags::empty() };
                    let e = opcode::SendMsg::new(fd, &tx.hdrs[j].msg_hdr)
                        .flags(libc::MSG_DONTWAIT as u32)
                        .build()
                        .flags(link)
                        .user_data(j as u64);
                    // SAFETY: the msghdr and everything it points to (TxScratch arrays, the payloads of `msgs`)
                    // live until the completions are reaped below, before this closure returns.
                    if unsafe { sq.push(&e) }.is_err() {
                        return (0, Some(libc::EAGAIN));
                    }
                }
            }
            loop {
                match ring.submit_and_wait(n) {
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => return (0, Some(e.raw_os_error().unwrap_or(libc::EIO))),
                }
            }
            stats.tx_syscalls += 1;
            tx.res[..n].fill(-libc::ECANCELED);
            let mut seen = 0;
            while seen < n {
                let mut cq = ring.completion();
                for cqe in &mut cq {
                    if let Some(r) = tx.res.get_mut(cqe.user_data() as usize) {
                        *r = cqe.result();
                    }
                    seen += 1;
                }
                drop(cq);
                if seen < n && ring.submit_and_wait(n - seen).is_err() {
                    break;
                }
            }
            match tx.res[..n].iter().position(|&r| r < 0) {
                None => (n, None),
                Some(k) => (k, Some(-tx.res[k])),
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
        Some(self.rx_ring.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip() -> bool {
        if let Err(e) = probe() {
            eprintln!("SKIPPED: io_uring unavailable here: {e}");
            return true;
        }
        false
    }

    #[test]
    fn many_datagrams_and_buffer_exhaustion() {
        if skip() {
            return;
        }
        let (mut a, _) =
            UringSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap()), Offload::default()).unwrap();
        let (mut b, _) =
            UringSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap()), Offload::default()).unwrap();
        // Rounds of more datagrams than provided buffers (small, so the default socket buffer holds them): each
        // multishot request ends with ENOBUFS and must be re-armed without losing what waits in the socket.
        let round = usize::from(RX_ENTRIES) + 40;
        let total = 3 * round;
        let payloads: Vec<Vec<u8>> = (0..total).map(|i| (i as u32).to_le_bytes().repeat(2)).collect();
        let msgs: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit::new(b.local_addr(), p)).collect();
        let mut store = vec![[0u8; 1500]; 16];
        let mut meta = [RecvMeta::EMPTY; 16];
        let mut seen = Vec::new();
        for r in 0..3 {
            let mut sent = r * round;
            while sent < (r + 1) * round {
                sent += a.send_batch(&msgs[sent..(r + 1) * round]).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            for _ in 0..10_000 {
                let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
                let n = b.recv_batch(&mut bufs, &mut meta).unwrap();
                for j in 0..n {
                    assert_eq!(meta[j].len, 8);
                    assert_eq!(meta[j].src, a.local_addr());
                    seen.push(u32::from_le_bytes(store[j][..4].try_into().unwrap()));
                }
                if seen.len() == (r + 1) * round {
                    break;
                }
                if n == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
        assert_eq!(seen, (0..total as u32).collect::<Vec<_>>());
    }

    #[test]
    fn gso_run_arrives_as_datagrams() {
        if skip() {
            return;
        }
        let (mut a, _) =
            UringSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap()), Offload::default()).unwrap();
        let (mut b, _) = UringSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap()), Offload::NONE).unwrap();
        let run: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let t = Transmit { segment_size: Some(300), ..Transmit::new(b.local_addr(), &run) };
        assert_eq!(a.send_batch(&[t]).unwrap(), 1);
        assert_eq!(a.stats().tx_datagrams, 4);
        let mut store = vec![[0u8; 1500]; 8];
        let mut meta = [RecvMeta::EMPTY; 8];
        let mut lens = Vec::new();
        for _ in 0..1000 {
            let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
            let n = b.recv_batch(&mut bufs, &mut meta).unwrap();
            lens.extend(meta[..n].iter().map(|m| m.len));
            if lens.len() >= 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(lens, [300, 300, 300, 100]);
    }
}
