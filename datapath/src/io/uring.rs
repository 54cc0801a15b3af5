//! Linux: io_uring. Receive is one multishot `recvmsg` (Linux 6.0) drawing from a provided buffer ring
//! (Linux 5.19), re-armed whenever the kernel ends it; send is a linked chain of `sendmsg` per batch, so a
//! failure stops the rest exactly as sendmmsg(2) does and the shared error policy (`msg::send_all`) applies.
//! A send returns only once the kernel is done with every request it took, whatever io_uring_enter reported
//! (the requests read the reused send scratch and the caller's payloads); see `send_chain`.
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
    /// The tx ring holds SQEs the kernel never took (a failed or short submission); they point into `tx`
    /// and at payloads long gone, so they must never be submitted: the ring is replaced before the next send.
    tx_stale: bool,
    fault: SendFault,
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
        let tx_ring = new_tx_ring()?;
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
            tx_stale: false,
            fault: SendFault::default(),
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

/// The send ring: room for one batch, completions for two.
fn new_tx_ring() -> io::Result<IoUring> {
    IoUring::builder().setup_cqsize(2 * BATCH as u32).build(BATCH as u32).map_err(|e| explain(e, "io_uring_setup"))
}

/// `IORING_ENTER_GETEVENTS` (include/uapi/linux/io_uring.h): wait for `min_complete` completions.
const ENTER_GETEVENTS: u32 = 1;

/// Test-only fault injection into the send path's io_uring_enter; an empty type otherwise.
#[derive(Default)]
struct SendFault {
    /// The next submitting enter fails with this errno, after the kernel took the SQEs if `.0`.
    #[cfg(test)]
    next: Option<(bool, i32)>,
}

impl SendFault {
    #[inline(always)]
    fn take(&mut self) -> Option<(bool, i32)> {
        #[cfg(test)]
        return self.next.take();
        #[cfg(not(test))]
        None
    }
}

/// io_uring_enter on the send ring: submit `submit` queued SQEs and wait for `want` completions. Returns
/// how many SQEs the kernel took (fewer than `submit` if it stopped short; then it did not wait).
fn enter(ring: &IoUring, submit: usize, want: usize, fault: &mut SendFault) -> io::Result<usize> {
    if submit > 0
        && let Some((took, errno)) = fault.take()
    {
        if took {
            // SAFETY: as below, without waiting.
            unsafe { ring.submitter().enter::<libc::sigset_t>(submit as u32, 0, 0, None) }?;
        }
        return Err(io::Error::from_raw_os_error(errno));
    }
    // SAFETY: `submit` is at most the number of SQEs queued, each valid until its completion is reaped;
    // no signal mask or extended argument is passed.
    unsafe { ring.submitter().enter::<libc::sigset_t>(submit as u32, want as u32, ENTER_GETEVENTS, None) }
}

/// Send messages `0..n` of `tx` as one linked chain of `sendmsg` (a failure stops the rest, as sendmmsg(2)
/// does). On the happy path this is one io_uring_enter that submits the chain and waits for it.
///
/// The kernel reads `tx` (msghdr, iovecs, names, control data) and the payloads it points to until each
/// request completes, and the caller reuses `tx` and drops the payloads as soon as this returns. So,
/// whatever io_uring_enter reports, this returns only once every SQE the kernel took has completed and its
/// CQE was reaped (sends are MSG_DONTWAIT: each completes at once, sent or failed, so waiting is short and
/// no cancel is needed); SQEs it did not take are reported as not sent and marked `stale`, never submitted
/// (the caller replaces the ring). The ring is idle (no SQE queued, no CQE pending) on entry and on return.
fn send_chain(
    ring: &mut IoUring,
    fd: types::Fd,
    tx: &mut TxScratch,
    n: usize,
    stats: &mut IoStats,
    fault: &mut SendFault,
    stale: &mut bool,
) -> msg::Outcome {
    if *stale {
        // An earlier chain of this batch left SQEs behind: this ring must not be entered again.
        return (0, Some(libc::EAGAIN));
    }
    {
        let mut sq = ring.submission();
        debug_assert!(sq.is_empty(), "tx ring: SQEs left by an earlier send");
        if sq.capacity() - sq.len() < n {
            return (0, Some(libc::EAGAIN));
        }
        for j in 0..n {
            let link = if j + 1 < n { squeue::Flags::IO_LINK } else { squeue::Flags::empty() };
            let e = opcode::SendMsg::new(fd, &tx.hdrs[j].msg_hdr)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .flags(link)
                .user_data(j as u64);
            // SAFETY: the msghdr and everything it points to (TxScratch arrays, the payloads of `msgs`) live
            // until this function returns, and it returns only once every SQE the kernel took completed;
            // SQEs it did not take are never submitted (`stale`).
            let pushed = unsafe { sq.push(&e) };
            debug_assert!(pushed.is_ok(), "room checked above");
        }
    }
    debug_assert!(ring.completion().is_empty(), "tx ring: completions left by an earlier send");
    tx.res[..n].fill(-libc::ECANCELED);
    let mut seen = 0;
    // Why the kernel stopped taking SQEs (a failed enter, or EAGAIN when it took fewer than offered).
    let mut refused: Option<i32> = None;
    loop {
        let queued = ring.submission().len();
        let submit = if refused.is_none() { queued } else { 0 };
        let want = (n - queued).saturating_sub(seen) + submit;
        if want == 0 {
            break;
        }
        stats.tx_syscalls += 1;
        match enter(ring, submit, want, fault) {
            Ok(took) if took < submit => refused = Some(libc::EAGAIN),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if submit > 0 => refused = Some(e.raw_os_error().unwrap_or(libc::EIO)),
            // Only waiting failed (EBUSY/EAGAIN on some kernels): requests that read `tx` are in flight and
            // complete at once; wait again.
            Err(_) => std::thread::yield_now(),
        }
        for cqe in &mut ring.completion() {
            if let Some(r) = tx.res.get_mut(cqe.user_data() as usize) {
                *r = cqe.result();
            }
            seen += 1;
        }
    }
    let queued = ring.submission().len();
    if queued > 0 {
        // The kernel takes SQEs in order: the last `queued` were never submitted.
        *stale = true;
        tx.res[n - queued..n].fill(-refused.unwrap_or(libc::EAGAIN));
    }
    match tx.res[..n].iter().position(|&r| r < 0) {
        None => (n, None),
        Some(k) => (k, Some(-tx.res[k])),
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
        if self.tx_stale {
            // A fresh ring drops the SQEs the kernel never took (they were never submitted, so nothing reads them).
            self.tx_ring = new_tx_ring()?;
            self.tx_stale = false;
        }
        let fd = types::Fd(self.sock.as_raw_fd());
        let (ring, fault, stale) = (&mut self.tx_ring, &mut self.fault, &mut self.tx_stale);
        let res = msg::send_all(msgs, &mut self.tx, self.v6, &mut self.gso, &mut self.stats, |tx, n, stats| {
            send_chain(ring, fd, tx, n, stats, fault, stale)
        });
        if self.tx_stale
            && let Ok(r) = new_tx_ring()
        {
            self.tx_ring = r;
            self.tx_stale = false;
        }
        res
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

    /// Every datagram `rx` receives until it has been quiet for 100 ms.
    fn drain(rx: &UdpSocket) -> Vec<Vec<u8>> {
        rx.set_read_timeout(Some(std::time::Duration::from_millis(100))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while let Ok(n) = rx.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    }

    /// Nothing of a send is left in the tx ring once `send_batch` returned: no SQE queued (the kernel
    /// would read it, pointing into the reused TxScratch and freed payloads, at the next submit) and no
    /// request in flight (its completion would arrive later, and the kernel read our buffers meanwhile).
    fn assert_tx_ring_idle(s: &mut UringSocket) {
        assert_eq!(s.tx_ring.submission().len(), 0, "SQEs left queued");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(s.tx_ring.completion().len(), 0, "requests were still in flight");
    }

    /// io_uring_enter failing while a batch is queued (before or after the kernel took the SQEs): the
    /// send returns with nothing queued or in flight, and the next batch sends exactly its own datagrams.
    #[test]
    fn a_failed_submit_leaves_nothing_in_the_ring() {
        if skip() {
            return;
        }
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let (mut a, _) = UringSocket::open(&UdpConfig::new("127.0.0.1:0".parse().unwrap()), Offload::NONE).unwrap();
        let batch = |tag: u8| -> Vec<Vec<u8>> { (0..5u8).map(|i| vec![tag, i]).collect() };
        let send = |a: &mut UringSocket, p: &[Vec<u8>]| {
            let msgs: Vec<Transmit<'_>> = p.iter().map(|p| Transmit::new(to, p)).collect();
            a.send_batch(&msgs).unwrap()
        };
        for (round, after) in [(0u8, false), (1, true), (2, false), (3, true)] {
            // The kernel refuses (EAGAIN: no request memory) or takes the SQEs and then reports an error.
            a.fault.next = Some((after, libc::EAGAIN));
            let first = batch(b'a' + round);
            let sent = send(&mut a, &first);
            assert_tx_ring_idle(&mut a);
            let want_first = if after {
                // The kernel took them: they were sent, and the send says so.
                assert_eq!(sent, first.len(), "round {round}");
                first.clone()
            } else {
                assert_eq!(sent, 0, "round {round}: blocked, handed back");
                Vec::new()
            };
            assert_eq!(drain(&rx), want_first, "round {round}");
            let second = batch(b'A' + round);
            assert_eq!(send(&mut a, &second), second.len());
            assert_tx_ring_idle(&mut a);
            assert_eq!(drain(&rx), second, "round {round}: the next batch, once each");
        }
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
