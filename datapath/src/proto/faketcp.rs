//! Fake TCP, kcptun's `--tcp` (xtaci/tcpraw; docs/protocol.md §11.7), the sans-IO part: the segment codec
//! and each connection's sequence state.
//!
//! The kernels make a real TCP handshake (the client connects, the server listens and accepts); from then on
//! every datagram rides as the whole payload of one hand-made `PSH|ACK` segment of that connection, sent on a
//! raw socket, and the receiver takes the payload of every `PSH` segment of the connection as one datagram.
//! The kernels' own later segments (ACKs of the fake data, window updates) are held back by a firewall rule
//! on TTL 1 (the I/O layer's business). Neither tcpraw version checks what it receives beyond the ports and
//! the `PSH` flag, so the shapes below are what a middlebox sees rather than what a peer needs:
//!
//! ```text
//! DEB, tcpraw 1.2.25:  20-byte header, no options, window = random u16 | 0x8000 per segment
//! NEW, tcpraw 1.2.32:  36-byte header, window 65535, options 01 01 08 0c TSval TSecr 00 00 00 00
//!                      (a timestamp option of length 12 — gopacket rewrites 10 — read by 1.2.31–32
//!                      only; TSval = wall-clock Unix milliseconds, TSecr = the peer's last TSval)
//! both:                seq = the peer's last ack, then + payload length per segment sent;
//!                      ack = the end of the peer's last segment (SYN and FIN count one)
//! ```
//!
//! tcpraw advances its ack only over in-order segments, so after one lost segment it repeats the same ack
//! forever; a [`Flow`] advances it to the furthest end received instead (a gap in a datagram transport is
//! never filled), which keeps the connection's sequence space moving as a stateful middlebox expects to
//! see. Both peers ignore the field. What tcpraw accepts blindly a [`Flow`] checks: sequence numbers far
//! from the expected ones, RSTs that do not match, and segments of unknown connections are counted and
//! dropped ([`Drop`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kcpd_time::{Duration, Instant};

/// TCP flags.
pub const FIN: u8 = 0x01;
/// TCP flags.
pub const SYN: u8 = 0x02;
/// TCP flags.
pub const RST: u8 = 0x04;
/// TCP flags.
pub const PSH: u8 = 0x08;
/// TCP flags.
pub const ACK: u8 = 0x10;

/// A TCP header without options.
pub const MIN_HEADER: usize = 20;
/// The longest header written here ([`Shape::New`]).
pub const MAX_HEADER: usize = 36;
/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;

/// How far (either way) a segment's sequence number may stray from the flow's ack and still be taken: a
/// peer resets its sequence to the ack it last received, so its segments stay within what it sent since.
pub const SEQ_WINDOW: u32 = 1 << 30;
/// How long a flow may wait, once its handshake was seen, for the I/O layer to confirm it (tcpraw 1.2.32
/// drops such "orphans" after 5 s).
pub const PENDING_TTL: Duration = Duration::from_millis(5_000);
/// How long an open flow lives without receiving anything (tcpraw 1.2.32: one minute). kcptun's smux
/// keepalive (10 s) keeps a live session's flow well inside it.
pub const IDLE_TTL: Duration = Duration::from_millis(60_000);

/// Why a captured packet is not a TCP segment this module can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Shorter than the IPv4 header it announces, or its total length runs past the bytes captured.
    #[error("truncated or inconsistent IPv4 header")]
    BadIpHeader,
    /// The IP version nibble is not 4.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// The IP protocol is not TCP.
    #[error("not TCP")]
    NotTcp,
    /// A fragment (the kernel hands raw sockets reassembled packets; one is malformed).
    #[error("an IP fragment")]
    Fragment,
    /// Shorter than a TCP header, or a data offset below 5 words or past the end.
    #[error("truncated TCP header or bad data offset")]
    BadTcpHeader,
}

/// An IPv4 packet as a raw IPv4 socket receives it (Linux hands raw sockets the IP header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Packet<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// The TCP segment: the bytes after the IP header, up to the IP total length.
    pub segment: &'a [u8],
}

impl<'a> Ipv4Packet<'a> {
    /// Read the IPv4 header of `pkt` and find the TCP segment after it.
    pub fn parse(pkt: &'a [u8]) -> Result<Self, SegmentError> {
        let (&vihl, _) = pkt.split_first().ok_or(SegmentError::BadIpHeader)?;
        if vihl >> 4 != 4 {
            return Err(SegmentError::NotIpv4);
        }
        let ihl = usize::from(vihl & 0x0f) * 4;
        if ihl < 20 || pkt.len() < ihl {
            return Err(SegmentError::BadIpHeader);
        }
        let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
        if total < ihl || total > pkt.len() {
            return Err(SegmentError::BadIpHeader);
        }
        if pkt[9] != IPPROTO_TCP {
            return Err(SegmentError::NotTcp);
        }
        // More fragments, or a fragment offset.
        if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
            return Err(SegmentError::Fragment);
        }
        Ok(Ipv4Packet {
            src: Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]),
            dst: Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]),
            ttl: pkt[8],
            segment: &pkt[ihl..total],
        })
    }
}

/// A TCP segment, borrowed from the captured bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful with [`ACK`]).
    pub ack: u32,
    /// The flag byte (CWR ECE URG ACK PSH RST SYN FIN).
    pub flags: u8,
    /// Receive window, unscaled.
    pub window: u16,
    /// The option bytes (between the fixed header and the data offset).
    pub options: &'a [u8],
    /// The payload: with [`PSH`], one datagram.
    pub payload: &'a [u8],
}

impl<'a> Segment<'a> {
    /// Read a TCP segment (header, options, payload). The checksum is not checked: segments the kernel makes
    /// on loopback and veth carry a partial one, left to offload, and IP has checked what came from a wire.
    pub fn parse(b: &'a [u8]) -> Result<Self, SegmentError> {
        if b.len() < MIN_HEADER {
            return Err(SegmentError::BadTcpHeader);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < MIN_HEADER || off > b.len() {
            return Err(SegmentError::BadTcpHeader);
        }
        Ok(Segment {
            src_port: u16::from_be_bytes([b[0], b[1]]),
            dst_port: u16::from_be_bytes([b[2], b[3]]),
            seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ack: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            flags: b[13],
            window: u16::from_be_bytes([b[14], b[15]]),
            options: &b[MIN_HEADER..off],
            payload: &b[off..],
        })
    }

    /// Whether every flag of `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f == f
    }

    /// Sequence space the segment takes: its payload, and one each for SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        (self.payload.len() as u32).wrapping_add(u32::from(self.has(SYN))).wrapping_add(u32::from(self.has(FIN)))
    }

    /// TSval of a timestamp option: the standard one (length 10) or tcpraw 1.2.31–32's (length 12).
    pub fn timestamp(&self) -> Option<u32> {
        let mut o = self.options;
        while let Some((&kind, rest)) = o.split_first() {
            match kind {
                0 => return None,
                1 => o = rest,
                _ => {
                    let len = usize::from(*rest.first()?);
                    if len < 2 || len > o.len() {
                        return None;
                    }
                    if kind == 8 && (len == 10 || len == 12) {
                        return Some(u32::from_be_bytes([o[2], o[3], o[4], o[5]]));
                    }
                    o = &o[len..];
                }
            }
        }
        None
    }
}

/// Which tcpraw's segments to imitate (both peers take either).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// tcpraw 1.2.25 (Debian's kcptun 20210922): no options, a random window with the top bit set.
    Deb,
    /// tcpraw 1.2.32 (the last upstream kcptun): window 65535 and the 16 option bytes with timestamps.
    #[default]
    New,
}

/// The per-segment values a [`Shape`] takes from outside: randomness and the wall clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Random bits ([`Shape::Deb`]'s window).
    pub random: u16,
    /// Wall-clock Unix time in milliseconds, truncated to 32 bits ([`Shape::New`]'s TSval).
    pub wall_ms: u32,
}

/// A TCP header to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Receive window.
    pub window: u16,
    /// TSval and TSecr of tcpraw 1.2.32's timestamp option; `None`: no options.
    pub timestamps: Option<(u32, u32)>,
}

impl Header {
    /// Bytes [`Header::write`] writes.
    pub fn len(&self) -> usize {
        if self.timestamps.is_some() { MAX_HEADER } else { MIN_HEADER }
    }

    /// Always false: a header has at least 20 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Write the header of a `PSH|ACK` segment carrying `payload` from `src` to `dst` into `out`, checksum
    /// included; returns its length. The addresses must be of one family.
    pub fn write(&self, src: IpAddr, dst: IpAddr, payload: &[u8], out: &mut [u8; MAX_HEADER]) -> usize {
        let len = self.len();
        out[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        out[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..12].copy_from_slice(&self.ack.to_be_bytes());
        out[12] = ((len / 4) as u8) << 4;
        out[13] = PSH | ACK;
        out[14..16].copy_from_slice(&self.window.to_be_bytes());
        out[16..20].fill(0); // checksum (below), urgent pointer
        if let Some((val, ecr)) = self.timestamps {
            out[20..24].copy_from_slice(&[1, 1, 8, 12]);
            out[24..28].copy_from_slice(&val.to_be_bytes());
            out[28..32].copy_from_slice(&ecr.to_be_bytes());
            out[32..36].fill(0);
        }
        let sum = checksum(src, dst, &out[..len], payload);
        out[16..18].copy_from_slice(&sum.to_be_bytes());
        len
    }
}

/// The Internet checksum of a TCP segment (`header` then `payload`) with the pseudo-header of `src` → `dst`.
pub fn checksum(src: IpAddr, dst: IpAddr, header: &[u8], payload: &[u8]) -> u16 {
    let tcp_len = (header.len() + payload.len()) as u32;
    let mut s = Sum::default();
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            s.add(&a.octets());
            s.add(&b.octets());
            s.add(&[0, IPPROTO_TCP]);
            s.add(&(tcp_len as u16).to_be_bytes());
        }
        (a, b) => {
            s.add(&v6_octets(a));
            s.add(&v6_octets(b));
            s.add(&tcp_len.to_be_bytes());
            s.add(&[0, 0, 0, IPPROTO_TCP]);
        }
    }
    s.add(header);
    s.add(payload);
    s.finish()
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A one's-complement sum over byte runs that may split 16-bit words (an odd run leaves a byte over).
#[derive(Default)]
struct Sum {
    acc: u64,
    odd: Option<u8>,
}

impl Sum {
    fn add(&mut self, mut b: &[u8]) {
        if let Some(hi) = self.odd.take() {
            let Some((&lo, rest)) = b.split_first() else {
                self.odd = Some(hi);
                return;
            };
            self.acc += u64::from(u16::from_be_bytes([hi, lo]));
            b = rest;
        }
        let mut words = b.chunks_exact(4);
        for w in &mut words {
            self.acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        }
        let r = words.remainder();
        if r.len() >= 2 {
            self.acc += u64::from(u16::from_be_bytes([r[0], r[1]]));
        }
        if r.len() % 2 == 1 {
            self.odd = Some(r[r.len() - 1]);
        }
    }

    fn finish(self) -> u16 {
        let mut acc = self.acc + self.odd.map_or(0, |hi| u64::from(hi) << 8);
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
}

/// Why a segment was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// Not a segment ([`SegmentError`]).
    Malformed,
    /// No flow for its source, and not a SYN that opens one.
    NoFlow,
    /// A SYN that would open a flow beyond the table's capacity.
    Full,
    /// Its sequence number is more than [`SEQ_WINDOW`] from the flow's ack.
    OutOfWindow,
    /// A RST whose sequence number is not exactly the flow's ack (RFC 5961's rule against blind resets).
    StrayReset,
    /// A SYN on a connection whose handshake is over.
    StraySyn,
    /// A `PSH` segment of a flow not confirmed yet (tcpraw drops an orphan's data too).
    Unconfirmed,
}

/// What a segment did to its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rx<'a> {
    /// A `PSH` segment: its payload is one datagram.
    Datagram(&'a [u8]),
    /// It updated the flow (a handshake segment, a kernel's ACK) and carries no datagram.
    Control,
    /// The peer reset the connection (an exact RST) or closed it (FIN): the flow is gone.
    Closed,
    /// Dropped, for this reason.
    Dropped(Drop),
}

/// One connection's sequence state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The next segment's sequence number.
    seq: u32,
    /// The acknowledgement number sent: the furthest end received.
    ack: u32,
    /// `seq` has been learnt from the peer (an ACK received): segments may be sent.
    synced: bool,
    /// `ack` has been learnt (a segment with sequence space received).
    acked: bool,
    /// The peer's last TSval (our TSecr).
    ts_ecr: u32,
    /// The I/O layer vouches for the connection (the client's connect, the server's accept).
    confirmed: bool,
    /// When it was created, or received last.
    last_rx: Instant,
}

impl Flow {
    /// A flow with nothing learnt yet.
    pub fn new(now: Instant, confirmed: bool) -> Self {
        Flow { seq: 0, ack: 0, synced: false, acked: false, ts_ecr: 0, confirmed, last_rx: now }
    }

    /// Take in a segment of this flow's connection.
    pub fn on_segment<'a>(&mut self, now: Instant, seg: &Segment<'a>) -> Rx<'a> {
        if self.acked {
            let d = seg.seq.wrapping_sub(self.ack);
            if d > SEQ_WINDOW && d < SEQ_WINDOW.wrapping_neg() {
                return Rx::Dropped(Drop::OutOfWindow);
            }
        }
        if seg.has(RST) {
            return if self.acked && seg.seq == self.ack { Rx::Closed } else { Rx::Dropped(Drop::StrayReset) };
        }
        if seg.has(SYN) && self.confirmed && self.synced {
            // A handshake segment on an established connection (a retransmitted SYN-ACK, or a forgery): the
            // kernel does not restart the connection for it, so neither does the flow.
            return Rx::Dropped(Drop::StraySyn);
        }
        self.last_rx = now;
        if seg.has(ACK) {
            self.seq = seg.ack;
            self.synced = true;
        }
        if let Some(ts) = seg.timestamp() {
            self.ts_ecr = ts;
        }
        let n = seg.seq_len();
        if n > 0 {
            let end = seg.seq.wrapping_add(n);
            if !self.acked || (end.wrapping_sub(self.ack) as i32) > 0 {
                self.ack = end;
                self.acked = true;
            }
        }
        if seg.has(FIN) {
            return Rx::Closed;
        }
        if !seg.has(PSH) {
            return Rx::Control;
        }
        if !self.confirmed {
            return Rx::Dropped(Drop::Unconfirmed);
        }
        Rx::Datagram(seg.payload)
    }

    /// The header of the next segment, carrying `len` payload bytes; `None` until the peer has sent a
    /// sequence number to start from (tcpraw drops such datagrams too: KCP sends them again).
    pub fn next_header(&mut self, ports: (u16, u16), len: usize, shape: Shape, stamp: Stamp) -> Option<Header> {
        if !self.synced {
            return None;
        }
        let (window, timestamps) = match shape {
            Shape::Deb => (stamp.random | 0x8000, None),
            Shape::New => (u16::MAX, Some((stamp.wall_ms, self.ts_ecr))),
        };
        let h = Header { src_port: ports.0, dst_port: ports.1, seq: self.seq, ack: self.ack, window, timestamps };
        self.seq = self.seq.wrapping_add(len as u32);
        Some(h)
    }

    /// The I/O layer vouches for the connection.
    pub fn confirm(&mut self) {
        self.confirmed = true;
    }

    /// The next segment's sequence number.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The acknowledgement number sent (the furthest end received).
    pub fn ack(&self) -> u32 {
        self.ack
    }

    /// Whether segments may be sent.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Whether the I/O layer has vouched for the connection.
    pub fn is_confirmed(&self) -> bool {
        self.confirmed
    }

    /// Whether the flow should go: unconfirmed for [`PENDING_TTL`], or silent for [`IDLE_TTL`].
    pub fn is_stale(&self, now: Instant) -> bool {
        let quiet = now.saturating_since(self.last_rx);
        quiet >= if self.confirmed { IDLE_TTL } else { PENDING_TTL }
    }
}

/// What a [`FlowTable`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Segments taken in.
    pub rx_segments: u64,
    /// Datagrams delivered.
    pub rx_datagrams: u64,
    /// Packets that were no TCP segment ([`Drop::Malformed`]).
    pub rx_malformed: u64,
    /// Segments of no flow ([`Drop::NoFlow`]).
    pub rx_no_flow: u64,
    /// SYNs refused for a full table ([`Drop::Full`]).
    pub rx_full: u64,
    /// Segments out of window ([`Drop::OutOfWindow`]).
    pub rx_out_of_window: u64,
    /// RSTs that did not match ([`Drop::StrayReset`]).
    pub rx_stray_resets: u64,
    /// SYNs on established flows ([`Drop::StraySyn`]).
    pub rx_stray_syns: u64,
    /// Datagrams of unconfirmed flows ([`Drop::Unconfirmed`]).
    pub rx_unconfirmed: u64,
    /// Connections the I/O layer vouched for that a full table refused ([`FlowTable::confirm`]).
    pub refused: u64,
    /// Flows closed by the peer (RST or FIN).
    pub closed: u64,
    /// Flows removed by [`FlowTable::expire`].
    pub expired: u64,
    /// Datagrams not sent: no flow for the destination, or the flow has no sequence number yet.
    pub tx_no_flow: u64,
    /// Fake-TCP connections open (a gauge: a listener's accepted ones, a dial's one).
    pub connections: u64,
    /// Times a listener stopped accepting for a while because `accept` failed for want of descriptors
    /// or memory (the pending connection stays queued; polling it again at once would spin).
    pub accept_paused: u64,
}

impl FlowStats {
    /// Add `o`'s counts to these (a shard's sum over its transports).
    pub fn add(&mut self, o: &FlowStats) {
        let FlowStats {
            rx_segments,
            rx_datagrams,
            rx_malformed,
            rx_no_flow,
            rx_full,
            rx_out_of_window,
            rx_stray_resets,
            rx_stray_syns,
            rx_unconfirmed,
            refused,
            closed,
            expired,
            tx_no_flow,
            connections,
            accept_paused,
        } = *o;
        self.rx_segments += rx_segments;
        self.rx_datagrams += rx_datagrams;
        self.rx_malformed += rx_malformed;
        self.rx_no_flow += rx_no_flow;
        self.rx_full += rx_full;
        self.rx_out_of_window += rx_out_of_window;
        self.rx_stray_resets += rx_stray_resets;
        self.rx_stray_syns += rx_stray_syns;
        self.rx_unconfirmed += rx_unconfirmed;
        self.refused += refused;
        self.closed += closed;
        self.expired += expired;
        self.tx_no_flow += tx_no_flow;
        self.connections += connections;
        self.accept_paused += accept_paused;
    }

    /// Segments dropped, whatever the reason.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_malformed
            + self.rx_no_flow
            + self.rx_full
            + self.rx_out_of_window
            + self.rx_stray_resets
            + self.rx_stray_syns
            + self.rx_unconfirmed
    }

    /// Count what a segment did; returns it.
    pub fn count<'a>(&mut self, rx: Rx<'a>) -> Rx<'a> {
        match rx {
            Rx::Datagram(_) => self.rx_datagrams += 1,
            Rx::Control => {}
            Rx::Closed => self.closed += 1,
            Rx::Dropped(Drop::Malformed) => self.rx_malformed += 1,
            Rx::Dropped(Drop::NoFlow) => self.rx_no_flow += 1,
            Rx::Dropped(Drop::Full) => self.rx_full += 1,
            Rx::Dropped(Drop::OutOfWindow) => self.rx_out_of_window += 1,
            Rx::Dropped(Drop::StrayReset) => self.rx_stray_resets += 1,
            Rx::Dropped(Drop::StraySyn) => self.rx_stray_syns += 1,
            Rx::Dropped(Drop::Unconfirmed) => self.rx_unconfirmed += 1,
        }
        rx
    }
}

/// The flows of one listening port (or one dialled connection), keyed by the peer's address, bounded.
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<SocketAddr, Flow>,
    cap: usize,
    shape: Shape,
    /// Counters.
    pub stats: FlowStats,
}

impl FlowTable {
    /// A table of at most `cap` flows whose segments take `shape`.
    pub fn new(cap: usize, shape: Shape) -> Self {
        FlowTable { flows: HashMap::new(), cap: cap.max(1), shape, stats: FlowStats::default() }
    }

    /// A flow for `peer` vouched for by the I/O layer (a connect or accept); `false` if the table is full.
    pub fn confirm(&mut self, now: Instant, peer: SocketAddr) -> bool {
        if let Some(f) = self.flows.get_mut(&peer) {
            f.confirm();
            return true;
        }
        if self.flows.len() >= self.cap {
            self.stats.refused += 1;
            return false;
        }
        self.flows.insert(peer, Flow::new(now, true));
        true
    }

    /// Take in a captured segment from `src`: a SYN opens an unconfirmed flow, anything else needs one.
    pub fn on_segment<'a>(&mut self, now: Instant, src: SocketAddr, bytes: &'a [u8]) -> Rx<'a> {
        self.stats.rx_segments += 1;
        let seg = match Segment::parse(bytes) {
            Ok(s) => s,
            Err(_) => return self.count(Rx::Dropped(Drop::Malformed)),
        };
        let rx = match self.flows.get_mut(&src) {
            Some(f) => f.on_segment(now, &seg),
            None if seg.has(SYN) && !seg.has(ACK) && !seg.has(RST) => {
                if self.flows.len() >= self.cap {
                    Rx::Dropped(Drop::Full)
                } else {
                    self.flows.entry(src).or_insert(Flow::new(now, false)).on_segment(now, &seg)
                }
            }
            None => Rx::Dropped(Drop::NoFlow),
        };
        if rx == Rx::Closed {
            self.flows.remove(&src);
        }
        self.count(rx)
    }

    fn count<'a>(&mut self, rx: Rx<'a>) -> Rx<'a> {
        self.stats.count(rx)
    }

    /// The header of the next segment of `len` payload bytes from `local_port` to `peer`; `None` (counted)
    /// when there is no flow for `peer` or it has no sequence number yet.
    pub fn next_header(&mut self, local_port: u16, peer: SocketAddr, len: usize, stamp: Stamp) -> Option<Header> {
        let h =
            self.flows.get_mut(&peer).and_then(|f| f.next_header((local_port, peer.port()), len, self.shape, stamp));
        if h.is_none() {
            self.stats.tx_no_flow += 1;
        }
        h
    }

    /// Remove the stale flows ([`Flow::is_stale`]), calling `gone` with each peer (whose kernel connection
    /// the I/O layer closes).
    pub fn expire(&mut self, now: Instant, mut gone: impl FnMut(SocketAddr)) {
        let before = self.flows.len();
        self.flows.retain(|&peer, f| {
            let keep = !f.is_stale(now);
            if !keep {
                gone(peer);
            }
            keep
        });
        self.stats.expired += (before - self.flows.len()) as u64;
    }

    /// Forget `peer`'s flow (its kernel connection closed).
    pub fn remove(&mut self, peer: SocketAddr) -> bool {
        self.flows.remove(&peer).is_some()
    }

    /// `peer`'s flow.
    pub fn get(&self, peer: SocketAddr) -> Option<&Flow> {
        self.flows.get(&peer)
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
mod tests;
