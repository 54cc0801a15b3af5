//! Linux message plumbing shared by [`super::mmsg`] and [`super::uring`]: preallocated msghdr / iovec /
//! sockaddr / control arrays for one batch, control-message encoding (pktinfo source address, UDP_SEGMENT)
//! and decoding (pktinfo destination address, UDP_GRO), and the send loop with its error policy.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ptr;

use super::udp::{for_socket, normalise, normalise_ip};
use super::{IoStats, Transmit};

/// Messages per batch: the arrays below are sized for it, so a batch never allocates.
pub(crate) const BATCH: usize = 64;
/// Segments per GSO message. The kernel's UDP_MAX_SEGMENTS is 64 (raised to 128 in later kernels); longer
/// runs are cut into several messages.
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;
/// The largest UDP payload over IPv4 (65535 − 20 − 8): a GSO message carries at most this much.
const GSO_MAX_BYTES: usize = 65507;
/// Bytes of control data per message: room for IP_PKTINFO + IPV6_PKTINFO + UDP_GRO on receive, IPV6_PKTINFO
/// + UDP_SEGMENT on send.
pub(crate) const CMSG_BUF: usize = 128;
/// Consecutive ECONNREFUSED on one message before it is dropped (each reports an earlier send's ICMP error
/// and clears it, so a retry normally goes through).
const MAX_REFUSED: u32 = 3;

const fn cmsg_align(len: usize) -> usize {
    (len + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}
/// CMSG_LEN(0): the aligned header.
const CMSG_HDR: usize = cmsg_align(size_of::<libc::cmsghdr>());
const fn cmsg_space(n: usize) -> usize {
    CMSG_HDR + cmsg_align(n)
}

const _: () = assert!(
    cmsg_space(size_of::<libc::in_pktinfo>())
        + cmsg_space(size_of::<libc::in6_pktinfo>())
        + cmsg_space(size_of::<libc::c_int>())
        <= CMSG_BUF
);

/// One message's control buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub(crate) [u8; CMSG_BUF]);

impl CmsgBuf {
    pub(crate) const ZERO: CmsgBuf = CmsgBuf([0; CMSG_BUF]);
}

/// A position in a slice of `Transmit`s: message `idx`, byte `off` of its payload (non-zero while a run is
/// being split or cut into several messages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) idx: usize,
    pub(crate) off: usize,
}

/// Send-side arrays for one batch of messages. The raw pointers in `hdrs` are rewritten by every
/// [`TxScratch::fill`] and point into this struct's own heap arrays and the caller's payloads, which outlive
/// the send that uses them.
pub(crate) struct TxScratch {
    pub(crate) hdrs: Box<[libc::mmsghdr]>,
    iov: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    /// Where the cursor stands once message `j` is sent.
    next: [Cursor; BATCH],
    /// Datagrams in message `j` (GSO segments).
    segs: [u32; BATCH],
    /// Message `j` carries UDP_SEGMENT.
    gso: [bool; BATCH],
    /// Per-message results, for backends that get one per message (io_uring).
    pub(crate) res: [i32; BATCH],
}

// SAFETY: the raw pointers inside `hdrs`/`iov` only ever point into this struct's own boxed arrays or into
// buffers borrowed for the duration of one call; nothing is shared between threads.
unsafe impl Send for TxScratch {}

impl TxScratch {
    pub(crate) fn new() -> Self {
        TxScratch {
            // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs for which all-zero bytes (null
            // pointers, zero lengths) are valid values.
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            iov: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            // SAFETY: as above.
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: vec![CmsgBuf::ZERO; BATCH].into_boxed_slice(),
            next: [Cursor::default(); BATCH],
            segs: [0; BATCH],
            gso: [false; BATCH],
            res: [0; BATCH],
        }
    }

    /// Build up to [`BATCH`] messages from `msgs` starting at `cur`. A `Transmit` that cannot go out on this
    /// socket (an IPv6 peer on an IPv4 socket, a source address of the other family) is counted in
    /// `errors` and skipped. Runs with `segment_size` become GSO messages of at most [`GSO_MAX_SEGMENTS`]
    /// segments when `gso` is on (and the run is not `split`), otherwise one message per segment.
    /// Returns the cursor of the first message (past skipped ones) and the number of messages.
    fn fill(
        &mut self,
        msgs: &[Transmit<'_>],
        mut cur: Cursor,
        v6: bool,
        gso: bool,
        split: Option<usize>,
        stats: &mut IoStats,
    ) -> (Cursor, usize) {
        let mut start = cur;
        let mut n = 0;
        while n < BATCH && cur.idx < msgs.len() {
            let m = &msgs[cur.idx];
            let dst = for_socket(m.dst, v6);
            let src = m.src_ip.map(normalise_ip);
            let dst_v4 = normalise(m.dst).is_ipv4();
            let (Some(dst), true) = (dst, src.is_none_or(|s| s.is_ipv4() == dst_v4)) else {
                stats.errors += 1;
                cur = Cursor { idx: cur.idx + 1, off: 0 };
                if n == 0 {
                    start = cur;
                } else {
                    self.next[n - 1] = cur;
                }
                continue;
            };
            let payload = &m.payload[cur.off.min(m.payload.len())..];
            let seg = m.segment_size.filter(|&s| s > 0).unwrap_or(usize::MAX);
            let (chunk, use_gso) = if seg >= payload.len() {
                (payload.len(), false)
            } else if gso && split != Some(cur.idx) && seg <= usize::from(u16::MAX) {
                let per = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / seg);
                if per >= 2 { (payload.len().min(per * seg), true) } else { (seg, false) }
            } else {
                (seg, false)
            };
            let chunk_bytes = &payload[..chunk];

            let namelen = write_sockaddr(dst, &mut self.names[n]);
            self.iov[n] = libc::iovec { iov_base: chunk_bytes.as_ptr() as *mut libc::c_void, iov_len: chunk };
            let mut w = CmsgWriter { buf: &mut self.cmsgs[n], len: 0 };
            match src {
                Some(IpAddr::V4(ip)) => {
                    // ip(7) IP_PKTINFO on send: ipi_spec_dst is the source address, ipi_ifindex 0 lets routing
                    // choose the interface. Also valid on a dual-stack IPv6 socket for v4-mapped peers (Linux
                    // udp_sendmsg → ip_cmsg_send).
                    // SAFETY: in_pktinfo is a plain C struct; all-zero is valid.
                    let mut pi: libc::in_pktinfo = unsafe { zeroed() };
                    pi.ipi_spec_dst.s_addr = u32::from_ne_bytes(ip.octets());
                    w.push(libc::IPPROTO_IP, libc::IP_PKTINFO, pi);
                }
                Some(IpAddr::V6(ip)) => {
                    // ipv6(7) IPV6_PKTINFO: ipi6_addr is the source address.
                    // SAFETY: in6_pktinfo is a plain C struct; all-zero is valid.
                    let mut pi: libc::in6_pktinfo = unsafe { zeroed() };
                    pi.ipi6_addr.s6_addr = ip.octets();
                    w.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, pi);
                }
                None => {}
            }
            if use_gso {
                // udp(7) UDP_SEGMENT: a u16 gso_size (Linux udp_cmsg_send checks CMSG_LEN(sizeof(__u16))).
                w.push(libc::SOL_UDP, libc::UDP_SEGMENT, seg as u16);
            }
            let ctrl_len = w.len;
            let hdr = &mut self.hdrs[n];
            hdr.msg_len = 0;
            let h = &mut hdr.msg_hdr;
            h.msg_name = (&mut self.names[n] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = namelen;
            h.msg_iov = &mut self.iov[n];
            h.msg_iovlen = 1;
            h.msg_control = if ctrl_len == 0 { ptr::null_mut() } else { self.cmsgs[n].0.as_mut_ptr().cast() };
            h.msg_controllen = ctrl_len as _;
            h.msg_flags = 0;

            let off = cur.off + chunk;
            cur =
                if off >= m.payload.len() { Cursor { idx: cur.idx + 1, off: 0 } } else { Cursor { idx: cur.idx, off } };
            self.next[n] = cur;
            self.segs[n] = if use_gso { chunk.div_ceil(seg) as u32 } else { 1 };
            self.gso[n] = use_gso;
            n += 1;
        }
        (start, n)
    }
}

/// Appends control messages to a [`CmsgBuf`].
struct CmsgWriter<'a> {
    buf: &'a mut CmsgBuf,
    len: usize,
}

impl CmsgWriter<'_> {
    fn push<T: Copy>(&mut self, level: libc::c_int, ty: libc::c_int, val: T) {
        let space = cmsg_space(size_of::<T>());
        // In bounds by the const assertion on CMSG_BUF (at most one pktinfo and one UDP_SEGMENT per message).
        let dst = &mut self.buf.0[self.len..self.len + space];
        dst.fill(0);
        // SAFETY: cmsghdr is a plain C struct; all-zero is valid (musl has private padding fields).
        let mut hdr: libc::cmsghdr = unsafe { zeroed() };
        hdr.cmsg_len = (CMSG_HDR + size_of::<T>()) as _;
        hdr.cmsg_level = level;
        hdr.cmsg_type = ty;
        // SAFETY: `dst` holds `space` = CMSG_HDR + align(size_of T) >= size_of cmsghdr + size_of T bytes;
        // unaligned writes have no alignment requirement.
        unsafe {
            ptr::write_unaligned(dst.as_mut_ptr().cast::<libc::cmsghdr>(), hdr);
            ptr::write_unaligned(dst.as_mut_ptr().add(CMSG_HDR).cast::<T>(), val);
        }
        self.len += space;
    }
}

/// Write `addr` into `out` as a sockaddr_in / sockaddr_in6 and return its length.
fn write_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: plain C struct; all-zero is valid.
            let mut sin: libc::sockaddr_in = unsafe { zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: sockaddr_storage is larger than and aligned for every sockaddr type.
            unsafe { ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: plain C struct; all-zero is valid.
            let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above.
            unsafe { ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Parse a sockaddr the kernel wrote (`name`: the bytes it filled), IPv4-mapped normalised to IPv4.
pub(crate) fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    match libc::c_int::from(family) {
        libc::AF_INET if name.len() >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: `name` holds at least size_of sockaddr_in bytes; read_unaligned needs no alignment.
            let sin: libc::sockaddr_in = unsafe { ptr::read_unaligned(name.as_ptr().cast()) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if name.len() >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let s: libc::sockaddr_in6 = unsafe { ptr::read_unaligned(name.as_ptr().cast()) };
            let ip = Ipv6Addr::from(s.sin6_addr.s6_addr);
            let a = SocketAddrV6::new(ip, u16::from_be(s.sin6_port), u32::from_be(s.sin6_flowinfo), s.sin6_scope_id);
            Some(normalise(SocketAddr::V6(a)))
        }
        _ => None,
    }
}

/// What the control messages of one received datagram say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RxCmsgs {
    /// IP_PKTINFO `ipi_addr` / IPV6_PKTINFO `ipi6_addr`: the destination address of the datagram.
    pub(crate) dst_ip: Option<IpAddr>,
    /// UDP_GRO: the size of each coalesced datagram.
    pub(crate) stride: Option<usize>,
}

/// Walk the control messages in `ctrl` (the bytes the kernel filled), ignoring malformed tails.
pub(crate) fn parse_cmsgs(ctrl: &[u8]) -> RxCmsgs {
    let mut out = RxCmsgs::default();
    let mut off = 0;
    while ctrl.len() - off >= size_of::<libc::cmsghdr>() {
        // SAFETY: at least size_of cmsghdr bytes remain at `off`; read_unaligned needs no alignment.
        let hdr: libc::cmsghdr = unsafe { ptr::read_unaligned(ctrl.as_ptr().add(off).cast()) };
        let clen = hdr.cmsg_len as usize;
        if clen < CMSG_HDR || clen > ctrl.len() - off {
            break;
        }
        let data = &ctrl[off + CMSG_HDR..off + clen];
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= size_of::<libc::in_pktinfo>() => {
                // SAFETY: `data` holds a whole in_pktinfo; read_unaligned needs no alignment.
                let pi: libc::in_pktinfo = unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
                out.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(pi.ipi_addr.s_addr.to_ne_bytes())));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= size_of::<libc::in6_pktinfo>() => {
                // SAFETY: as above, for in6_pktinfo.
                let pi: libc::in6_pktinfo = unsafe { ptr::read_unaligned(data.as_ptr().cast()) };
                out.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)).to_canonical());
            }
            (libc::SOL_UDP, libc::UDP_GRO) => {
                // Linux udp_cmsg_recv: `put_cmsg(msg, SOL_UDP, UDP_GRO, sizeof(int), &gso_size)`.
                let v = match *data {
                    [a, b, c, d, ..] => i32::from_ne_bytes([a, b, c, d]).max(0) as usize,
                    [a, b] => usize::from(u16::from_ne_bytes([a, b])),
                    _ => 0,
                };
                out.stride = (v > 0).then_some(v);
            }
            _ => {}
        }
        off += cmsg_align(clen).min(ctrl.len() - off);
    }
    out
}

/// The result of sending messages `0..n` of a [`TxScratch`]: the first `.0` went out; with `Some(errno)`,
/// message `.0` failed and the later ones were not tried (sendmmsg(2) semantics; io_uring gets the same
/// from a linked chain).
pub(crate) type Outcome = (usize, Option<i32>);

/// Send `msgs` in order through `exec`, applying the error policy shared by the Linux backends; returns how
/// many `Transmit`s were taken.
///
/// - EAGAIN / ENOBUFS: stop and hand the rest back (`tx_blocked`); a run already partly sent is counted as
///   taken and its unsent segments as `tx_dropped`, so a retry does not duplicate them.
/// - ECONNREFUSED: an ICMP port unreachable from an earlier send, reported once and cleared (Linux
///   `sock_error` in `sock_alloc_send_pskb`): counted in `tx_refused`, the message retried.
/// - EIO / EINVAL on a GSO message: the kernel or device refuses segmentation offload (quinn-udp `linux.rs`
///   does the same): GSO is switched off for the socket (`gso_disabled`) and the run resent as single
///   datagrams. EMSGSIZE on a GSO message (gso_size above the path MTU): that run alone is split.
/// - EBADF / ENOTSOCK / EFAULT: the socket is unusable; the error is returned if nothing was taken.
/// - ENETUNREACH / EHOSTUNREACH / EADDRNOTAVAIL: no route or no source address (the host's network is
///   changing): counted in `tx_unroutable`, that message dropped; the next one is tried.
/// - Anything else (EMSGSIZE, EPERM from a firewall, ...) concerns one datagram: counted in `errors` and
///   that message dropped, as UDP allows.
pub(crate) fn send_all(
    msgs: &[Transmit<'_>],
    tx: &mut TxScratch,
    v6: bool,
    gso: &mut bool,
    stats: &mut IoStats,
    mut exec: impl FnMut(&mut TxScratch, usize, &mut IoStats) -> Outcome,
) -> io::Result<usize> {
    let mut cur = Cursor::default();
    let mut split = None;
    let mut refused = 0;
    while cur.idx < msgs.len() {
        let (start, n) = tx.fill(msgs, cur, v6, *gso, split, stats);
        cur = start;
        if n == 0 {
            break;
        }
        let (sent, err) = exec(tx, n, stats);
        let sent = sent.min(n);
        for j in 0..sent {
            stats.tx_datagrams += u64::from(tx.segs[j]);
            stats.tx_bytes += tx.iov[j].iov_len as u64;
        }
        if sent > 0 {
            cur = tx.next[sent - 1];
            refused = 0;
        }
        let Some(errno) = err else { continue };
        if sent >= n {
            continue;
        }
        let failed_gso = tx.gso[sent];
        let after = tx.next[sent];
        match errno {
            libc::EINTR => {}
            libc::EAGAIN | libc::ENOBUFS | libc::ENOMEM => {
                stats.tx_blocked += 1;
                drop_rest_of_run(msgs, &mut cur, stats);
                return Ok(cur.idx);
            }
            libc::ECONNREFUSED => {
                stats.tx_refused += 1;
                refused += 1;
                if refused > MAX_REFUSED {
                    stats.tx_dropped += u64::from(tx.segs[sent]);
                    cur = after;
                    refused = 0;
                }
            }
            libc::EIO | libc::EINVAL if failed_gso => {
                *gso = false;
                stats.gso_disabled += 1;
            }
            libc::EMSGSIZE if failed_gso => split = Some(cur.idx),
            libc::EBADF | libc::ENOTSOCK | libc::EFAULT => {
                stats.errors += 1;
                if cur == Cursor::default() {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                drop_rest_of_run(msgs, &mut cur, stats);
                return Ok(cur.idx);
            }
            libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL => {
                stats.tx_unroutable += u64::from(tx.segs[sent]);
                cur = after;
            }
            _ => {
                stats.errors += 1;
                cur = after;
            }
        }
    }
    Ok(msgs.len())
}

/// When `cur` stands inside a run (some segments sent), count the rest as dropped and move past it.
fn drop_rest_of_run(msgs: &[Transmit<'_>], cur: &mut Cursor, stats: &mut IoStats) {
    if cur.off == 0 {
        return;
    }
    if let Some(m) = msgs.get(cur.idx) {
        let rest = m.payload.len().saturating_sub(cur.off);
        let seg = m.segment_size.filter(|&s| s > 0).unwrap_or(usize::MAX);
        stats.tx_dropped += rest.div_ceil(seg) as u64;
    }
    *cur = Cursor { idx: cur.idx + 1, off: 0 };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fill_cuts_runs_and_skips_wrong_family() {
        let mut tx = TxScratch::new();
        let mut st = IoStats::default();
        let big = vec![7u8; 200 * 100];
        let msgs = [
            Transmit::new(addr("[2001:db8::1]:9"), b"x"),
            Transmit { segment_size: Some(100), ..Transmit::new(addr("10.0.0.1:9"), &big) },
            Transmit { src_ip: Some("::1".parse().unwrap()), ..Transmit::new(addr("10.0.0.1:9"), b"y") },
            Transmit::new(addr("10.0.0.2:9"), b"z"),
        ];
        let (start, n) = tx.fill(&msgs, Cursor::default(), false, true, None, &mut st);
        assert_eq!(start, Cursor { idx: 1, off: 0 });
        // 200 segments: 64 + 64 + 64 + 8, then "z" (the third is skipped).
        assert_eq!(n, 5);
        assert_eq!(&tx.segs[..5], &[64, 64, 64, 8, 1]);
        assert_eq!(tx.next[3], Cursor { idx: 3, off: 0 }, "skips the bad one");
        assert_eq!(st.errors, 2);
        // Without GSO: one message per segment, BATCH at most.
        let (_, n) = tx.fill(&msgs[1..2], Cursor::default(), false, false, None, &mut st);
        assert_eq!(n, BATCH);
        assert_eq!(tx.next[BATCH - 1], Cursor { idx: 0, off: BATCH * 100 });
    }

    /// While the host's address changes (a client on the move), sends fail with ENETUNREACH or
    /// EADDRNOTAVAIL: each such datagram is dropped and counted, the rest of the batch still goes, and the
    /// socket is not reported broken.
    #[test]
    fn unroutable_datagrams_are_counted_and_the_rest_go() {
        let mut tx = TxScratch::new();
        let mut st = IoStats::default();
        let msgs: Vec<Transmit<'_>> = (0..5).map(|_| Transmit::new(addr("10.0.0.1:9"), b"x")).collect();
        let mut gso = true;
        let mut call = 0;
        let taken = send_all(&msgs, &mut tx, false, &mut gso, &mut st, |_, n, _| {
            call += 1;
            match call {
                // The first goes, the second has no route, then no source address for the fourth.
                1 => (1, Some(libc::ENETUNREACH)),
                2 => (1, Some(libc::EADDRNOTAVAIL)),
                _ => (n, None),
            }
        })
        .expect("not a broken socket");
        assert_eq!(taken, 5);
        assert_eq!((st.tx_unroutable, st.errors, st.tx_datagrams), (2, 0, 3));
    }

    #[test]
    fn cmsgs_round_trip() {
        let mut b = CmsgBuf::ZERO;
        let mut w = CmsgWriter { buf: &mut b, len: 0 };
        // SAFETY: plain C struct.
        let mut pi: libc::in6_pktinfo = unsafe { zeroed() };
        pi.ipi6_addr.s6_addr = "::ffff:1.2.3.4".parse::<Ipv6Addr>().unwrap().octets();
        w.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, pi);
        w.push(libc::SOL_UDP, libc::UDP_GRO, 1200i32);
        let len = w.len;
        let r = parse_cmsgs(&b.0[..len]);
        assert_eq!(r.dst_ip, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(r.stride, Some(1200));
        // Garbage never panics.
        for cut in 0..len {
            let _ = parse_cmsgs(&b.0[..cut]);
        }
        let _ = parse_cmsgs(&[0xff; 64]);
        assert_eq!(read_sockaddr(&[2]), None);
    }
}
