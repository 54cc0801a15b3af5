//! KCP ARQ with kcp-go 5.6.x semantics (spec §4), sans-IO.
//!
//! Contract: no clock (every call that needs time takes `now`, wrapping u32 milliseconds), no sockets, no
//! allocation per segment in steady state (segment payloads come from the thread's buffer pool, [`super::pool`]).
//!
//! Driving it:
//! - [`Kcp::input`] a received datagram's KCP bytes; [`Kcp::send`] application bytes; [`Kcp::recv`] what
//!   arrived in order;
//! - after any of these, and whenever [`Kcp::poll_timeout`] is reached, call [`Kcp::poll_transmit`] until it
//!   returns `None`: each call writes one datagram's worth of segments (ACKs, probes, then data), packed as
//!   kcp-go packs them, into the caller's buffer.
//!
//! Where kcp-go differs from the C original (spec §4.4–4.5) this follows kcp-go: per-ACK fast-ack counting,
//! early retransmit, stale-ACK filtering, RTO backoff, no window floor, `wnd` ignored from FEC-recovered
//! input. From kcp-go NEW (5.6.29+) it takes the sender-side refinements that change no byte format: a
//! segment is fast/early retransmitted at most once per RTO, an input that reaches the fast-retransmit
//! threshold flushes at once, a long ACK list forces an ACK-only flush, and window probing starts after
//! 500 ms instead of 7 s. An idle KCP has no timer at all (kcp-go flushes every interval regardless).

mod segment;

use std::collections::VecDeque;

pub use segment::{Cmd, Header, OVERHEAD, conv_of, sn_of};

/// kcp-go constants (`kcp.go`).
pub const RTO_NDL: u32 = 30;
pub const RTO_MIN: u32 = 100;
pub const RTO_DEF: u32 = 200;
pub const RTO_MAX: u32 = 60_000;
pub const WND_SND: u32 = 32;
pub const WND_RCV: u32 = 32;
pub const MTU_DEF: usize = 1400;
pub const INTERVAL: u32 = 100;
pub const DEADLINK: u32 = 20;
pub const THRESH_INIT: u32 = 2;
pub const THRESH_MIN: u32 = 2;
/// Window probe start (kcp-go NEW; DEB waited 7000 ms).
pub const PROBE_INIT: u32 = 500;
pub const PROBE_LIMIT: u32 = 120_000;
/// Most fragments of one message (message mode).
pub const MAX_FRAGMENTS: usize = 255;

const ASK_SEND: u8 = 1;
const ASK_TELL: u8 = 2;

/// Wrap-aware `a - b` (kcp-go `_itimediff`).
#[inline(always)]
pub fn diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// The `nodelay, interval, resend, nc` quadruple (kcp-go `NoDelay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoDelay {
    pub nodelay: bool,
    pub interval: u32,
    pub resend: u32,
    pub nc: bool,
}

/// kcptun's `--mode` presets (spec §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Fast,
    Fast2,
    Fast3,
    /// The hidden `--nodelay --interval --resend --nc` flags.
    Manual(NoDelay),
}

impl Mode {
    pub fn nodelay(self) -> NoDelay {
        let p = |nodelay, interval, resend, nc| NoDelay { nodelay, interval, resend, nc };
        match self {
            Mode::Normal => p(false, 40, 2, true),
            Mode::Fast => p(false, 30, 2, true),
            Mode::Fast2 => p(true, 20, 2, true),
            Mode::Fast3 => p(true, 10, 2, true),
            Mode::Manual(n) => n,
        }
    }
}

/// Why [`Kcp::input`] stopped (kcp-go returns -1/-2/-3). Segments before the bad one were processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("datagram of {0} bytes is shorter than a KCP header")]
    TooShort(usize),
    #[error("conv {got:#010x} is not this session's {want:#010x}")]
    Conv { got: u32, want: u32 },
    #[error("segment claims {claimed} payload bytes, {left} left")]
    Truncated { claimed: u32, left: usize },
    #[error("unknown command {0}")]
    Cmd(u8),
}

/// Errors of the application side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KcpError {
    #[error("empty send")]
    Empty,
    #[error("message of {0} bytes needs more than 255 fragments")]
    MessageTooLarge(usize),
    #[error("receive buffer of {have} bytes is smaller than the {need}-byte message")]
    BufferTooSmall { have: usize, need: usize },
    #[error("invalid MTU {0}")]
    Mtu(usize),
}

/// Counters kcp-go keeps in its SNMP struct (spec §7.8), for this conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KcpStats {
    pub in_segs: u64,
    pub out_segs: u64,
    pub retrans_segs: u64,
    pub fast_retrans_segs: u64,
    pub early_retrans_segs: u64,
    pub lost_segs: u64,
    pub repeat_segs: u64,
    /// High-water marks of the queues (kcp-go NEW RingBuffer* counters).
    pub max_snd_queue: u64,
    pub max_rcv_queue: u64,
    pub max_snd_buf: u64,
}

#[derive(Debug, Default)]
struct Segment {
    sn: u32,
    frg: u8,
    ts: u32,
    rto: u32,
    xmit: u32,
    resendts: u32,
    fastack: u32,
    acked: bool,
    /// Fast or early retransmitted since the last RTO (kcp-go NEW marks fastack = 0xFFFFFFFF).
    fast_done: bool,
    data: Vec<u8>,
}

/// Where a flush in progress stands (a flush may span several `poll_transmit` calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Idle,
    Acks,
    Probes,
    Data,
}

#[derive(Debug)]
struct Flush {
    stage: Stage,
    ack_only: bool,
    /// Index into `acklist`.
    ack_i: usize,
    /// sn of the next `snd_buf` segment to visit.
    cursor: u32,
    /// sn of a segment already chosen for (re)transmission that did not fit the previous datagram.
    carry: Option<u32>,
    wnd: u16,
    una: u32,
    /// sn/ts of the last ACK written: kcp-go's probe segments reuse its template.
    tmpl_sn: u32,
    tmpl_ts: u32,
    new_segs: usize,
    change: u32,
    lost: u32,
    cwnd: u32,
    resent: u32,
    minrto: i32,
}

/// One KCP conversation.
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    /// Bytes of KCP output per datagram (the session's MTU minus crypto and FEC headers).
    mtu: usize,
    mss: usize,
    stream: bool,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    ssthresh: u32,
    rx_rttvar: i32,
    rx_srtt: i32,
    rx_rto: u32,
    rx_minrto: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    rmt_wnd: u32,
    cwnd: u32,
    incr: u32,
    probe: u8,
    ts_probe: u32,
    probe_wait: u32,
    interval: u32,
    nodelay: bool,
    fastresend: u32,
    nocwnd: bool,
    dead_link: u32,
    dead: bool,
    ack_nodelay: bool,

    snd_queue: VecDeque<Segment>,
    snd_buf: VecDeque<Segment>,
    /// Slots for sn in `[rcv_nxt, rcv_nxt + rcv_wnd)`.
    rcv_buf: VecDeque<Option<Segment>>,
    rcv_queue: VecDeque<Segment>,
    /// Bytes of `rcv_queue[0]` already read (stream mode reads may split a segment).
    rcv_offset: usize,
    /// Unread payload bytes in `rcv_queue`.
    rcv_bytes: usize,
    acklist: Vec<(u32, u32)>,

    flush: Flush,
    want_full: bool,
    want_acks: bool,
    /// When the next timer flush is due, if armed. Disarmed while idle; the first work after idle is
    /// flushed at once.
    ts_flush: u32,
    armed: bool,
    current: u32,
    stats: KcpStats,
}

impl Kcp {
    /// kcp-go `NewKCP`: windows 32/32, MTU 1400, RTO 200, interval 100, message mode.
    pub fn new(conv: u32, now: u32) -> Self {
        Kcp {
            conv,
            mtu: MTU_DEF,
            mss: MTU_DEF - OVERHEAD,
            stream: false,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: THRESH_INIT,
            rx_rttvar: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEF,
            rx_minrto: RTO_MIN,
            snd_wnd: WND_SND,
            rcv_wnd: WND_RCV,
            rmt_wnd: WND_RCV,
            cwnd: 0,
            incr: 0,
            probe: 0,
            ts_probe: 0,
            probe_wait: 0,
            interval: INTERVAL,
            nodelay: false,
            fastresend: 0,
            nocwnd: false,
            dead_link: DEADLINK,
            dead: false,
            ack_nodelay: false,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_offset: 0,
            rcv_bytes: 0,
            acklist: Vec::new(),
            flush: Flush {
                stage: Stage::Idle,
                ack_only: false,
                ack_i: 0,
                cursor: 0,
                carry: None,
                wnd: 0,
                una: 0,
                tmpl_sn: 0,
                tmpl_ts: 0,
                new_segs: 0,
                change: 0,
                lost: 0,
                cwnd: 0,
                resent: 0,
                minrto: 0,
            },
            want_full: false,
            want_acks: false,
            ts_flush: now,
            armed: false,
            current: now,
            stats: KcpStats::default(),
        }
    }
}

impl Kcp {
    // ---- configuration (kcp-go setters) ----

    /// kcp-go `NoDelay`: interval clamped to 10..=5000 ms; nodelay lowers the minimum RTO to 30 ms.
    pub fn set_nodelay(&mut self, p: NoDelay) {
        self.nodelay = p.nodelay;
        self.rx_minrto = if p.nodelay { RTO_NDL } else { RTO_MIN };
        self.interval = p.interval.clamp(10, 5000);
        self.fastresend = p.resend;
        self.nocwnd = p.nc;
    }

    /// kcp-go `WndSize`: zero keeps the current value. Unlike C KCP there is no floor on the receive window.
    pub fn set_wndsize(&mut self, snd: u32, rcv: u32) {
        if snd > 0 {
            self.snd_wnd = snd;
        }
        if rcv > 0 && rcv != self.rcv_wnd {
            // The reorder buffer grows on demand and is never cut: a segment stored there beyond a smaller
            // new window was already ACKed and a kcp-go peer never sends it again. New segments are
            // accepted within the new window only.
            self.rcv_wnd = rcv;
        }
    }

    /// Bytes of KCP output per datagram: the session MTU minus crypto, FEC and AEAD overhead (spec §1.5);
    /// the MSS is 24 bytes less.
    pub fn set_mtu(&mut self, mtu: usize) -> Result<(), KcpError> {
        if !(50..=u16::MAX as usize).contains(&mtu) {
            return Err(KcpError::Mtu(mtu));
        }
        self.mtu = mtu;
        self.mss = mtu - OVERHEAD;
        Ok(())
    }

    /// Stream mode (kcptun always): `send` appends to the last queued segment, `frg` is always 0.
    pub fn set_stream(&mut self, stream: bool) {
        self.stream = stream;
    }

    /// kcp-go `SetACKNoDelay` / Input's `ackNoDelay`: flush ACKs as soon as data arrives.
    pub fn set_ack_nodelay(&mut self, on: bool) {
        self.ack_nodelay = on;
    }

    pub fn conv(&self) -> u32 {
        self.conv
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn mss(&self) -> usize {
        self.mss
    }

    pub fn interval(&self) -> u32 {
        self.interval
    }

    pub fn rto(&self) -> u32 {
        self.rx_rto
    }

    pub fn srtt(&self) -> i32 {
        self.rx_srtt
    }

    /// The peer's advertised window.
    pub fn rmt_wnd(&self) -> u32 {
        self.rmt_wnd
    }

    pub fn stats(&self) -> &KcpStats {
        &self.stats
    }

    /// Segments queued or in flight (kcp-go `WaitSnd`).
    pub fn wait_snd(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// Received segments held: out of order (`rcv_buf`) and in order, unread (`rcv_queue`).
    pub fn received_segments(&self) -> usize {
        self.rcv_buf.iter().filter(|s| s.is_some()).count() + self.rcv_queue.len()
    }

    /// Segments queued and not yet sent for the first time (`snd_queue`).
    pub fn unsent(&self) -> usize {
        self.snd_queue.len()
    }

    /// One segment was sent `dead_link` (20) times without an ACK (kcp-go sets `state = 0xFFFFFFFF`).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Our free receive window, as advertised in `wnd`.
    fn wnd_unused(&self) -> u16 {
        (self.rcv_wnd as usize).saturating_sub(self.rcv_queue.len()).min(u16::MAX as usize) as u16
    }

    // ---- buffers ----

    fn take_buf(&mut self) -> Vec<u8> {
        super::pool::take(self.mss)
    }

    fn give(&mut self, seg: Segment) {
        self.recycle(seg.data);
    }

    /// Return a payload buffer to the thread's pool ([`super::pool`]).
    fn recycle(&mut self, data: Vec<u8>) {
        super::pool::give(data);
    }

    // ---- application side ----

    /// How many more bytes [`send`](Self::send) accepts now (stream mode): the room in the last queued
    /// segment plus `mss` per free slot of the send window (kcp-go NEW: `WaitSnd() < snd_wnd`).
    pub fn send_capacity(&self) -> usize {
        let free = (self.snd_wnd as usize).saturating_sub(self.wait_snd());
        let tail = match (self.stream, self.snd_queue.back()) {
            (true, Some(s)) => self.mss - s.data.len(),
            _ => 0,
        };
        if free == 0 { 0 } else { tail + free * self.mss }
    }

    /// Queue application bytes. Stream mode: takes up to [`send_capacity`](Self::send_capacity) bytes and
    /// returns how many. Message mode: the whole message (at most 255 fragments) or an error, once the
    /// window has room.
    pub fn send(&mut self, mut data: &[u8]) -> Result<usize, KcpError> {
        if data.is_empty() {
            return Err(KcpError::Empty);
        }
        if self.stream {
            let total = data.len().min(self.send_capacity());
            data = &data[..total];
            if let Some(last) = self.snd_queue.back_mut() {
                let room = self.mss - last.data.len();
                let n = room.min(data.len());
                last.data.extend_from_slice(&data[..n]);
                data = &data[n..];
            }
            while !data.is_empty() {
                let n = data.len().min(self.mss);
                let mut buf = self.take_buf();
                buf.extend_from_slice(&data[..n]);
                self.snd_queue.push_back(Segment { data: buf, ..Segment::default() });
                data = &data[n..];
            }
            self.stats.max_snd_queue = self.stats.max_snd_queue.max(self.snd_queue.len() as u64);
            return Ok(total);
        }
        let count = data.len().div_ceil(self.mss).max(1);
        if count > MAX_FRAGMENTS {
            return Err(KcpError::MessageTooLarge(data.len()));
        }
        if self.wait_snd() >= self.snd_wnd as usize {
            return Ok(0);
        }
        let len = data.len();
        for i in 0..count {
            let n = data.len().min(self.mss);
            let mut buf = self.take_buf();
            buf.extend_from_slice(&data[..n]);
            self.snd_queue.push_back(Segment { frg: (count - i - 1) as u8, data: buf, ..Segment::default() });
            data = &data[n..];
        }
        self.stats.max_snd_queue = self.stats.max_snd_queue.max(self.snd_queue.len() as u64);
        Ok(len)
    }

    /// Ask for a full flush at the next [`poll_transmit`](Self::poll_transmit) (kcptun flushes after every
    /// write; the session calls this once per batch of writes).
    pub fn flush(&mut self) {
        self.want_full = true;
    }

    /// Size of the next message (message mode) or of the readable bytes (stream mode); `None` if nothing.
    pub fn peek_size(&self) -> Option<usize> {
        let first = self.rcv_queue.front()?;
        if self.stream {
            return Some(self.rcv_bytes);
        }
        if first.frg == 0 {
            return Some(first.data.len());
        }
        if self.rcv_queue.len() < first.frg as usize + 1 {
            return None;
        }
        let mut n = 0;
        for s in &self.rcv_queue {
            n += s.data.len();
            if s.frg == 0 {
                break;
            }
        }
        Some(n)
    }

    /// Read received bytes. Stream mode: as many as fit (segments may be split across reads). Message
    /// mode: one whole message, or `BufferTooSmall`. `Ok(0)`: nothing to read.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<usize, KcpError> {
        let Some(size) = self.peek_size() else { return Ok(0) };
        if !self.stream && size > buf.len() {
            return Err(KcpError::BufferTooSmall { have: buf.len(), need: size });
        }
        let fast_recover = self.rcv_queue.len() >= self.rcv_wnd as usize;
        let mut n = 0;
        while let Some(seg) = self.rcv_queue.front() {
            let avail = &seg.data[self.rcv_offset..];
            let take = avail.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&avail[..take]);
            n += take;
            self.rcv_bytes -= take;
            if take < avail.len() {
                // Stream mode only: the buffer is full mid-segment.
                self.rcv_offset += take;
                break;
            }
            self.rcv_offset = 0;
            let seg = self.rcv_queue.pop_front().expect("front exists");
            let last = seg.frg == 0;
            self.give(seg);
            if (!self.stream && last) || n == buf.len() {
                break;
            }
        }
        self.move_ready();
        if fast_recover && self.rcv_queue.len() < self.rcv_wnd as usize {
            // The window reopened from full: tell the peer now (kcp-go `Recv` fast recover).
            self.probe |= ASK_TELL;
        }
        Ok(n)
    }

    /// Move in-order segments from the reorder buffer to the receive queue while the queue has room.
    fn move_ready(&mut self) {
        while self.rcv_queue.len() < self.rcv_wnd as usize {
            match self.rcv_buf.front_mut().and_then(Option::take) {
                Some(seg) => {
                    self.rcv_buf.pop_front();
                    self.rcv_bytes += seg.data.len();
                    self.rcv_queue.push_back(seg);
                    self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                }
                None => break,
            }
        }
        self.stats.max_rcv_queue = self.stats.max_rcv_queue.max(self.rcv_queue.len() as u64);
    }

    // ---- network side: input ----

    /// Process one datagram's KCP bytes. `regular` is false for FEC-recovered data: its `wnd` is not
    /// trusted and it gives no RTT sample (spec §3.5).
    pub fn input(&mut self, now: u32, mut data: &[u8], regular: bool) -> Result<(), InputError> {
        self.current = now;
        if data.len() < OVERHEAD {
            return Err(InputError::TooShort(data.len()));
        }
        let old_una = self.snd_una;
        let mut latest_ack_ts = None;
        let mut window_slides = false;
        let mut fast_threshold = false;
        let mut result = Ok(());
        while let Some(h) = Header::parse(data) {
            if h.conv != self.conv {
                result = Err(InputError::Conv { got: h.conv, want: self.conv });
                break;
            }
            let body = &data[OVERHEAD..];
            if (body.len() as u64) < u64::from(h.len) {
                result = Err(InputError::Truncated { claimed: h.len, left: body.len() });
                break;
            }
            let Some(cmd) = Cmd::from_u8(h.cmd) else {
                result = Err(InputError::Cmd(h.cmd));
                break;
            };
            let payload = &body[..h.len as usize];
            if regular {
                self.rmt_wnd = u32::from(h.wnd);
            }
            if self.parse_una(h.una) > 0 {
                window_slides = true;
            }
            self.shrink_buf();
            match cmd {
                Cmd::Ack => {
                    self.parse_ack(h.sn);
                    fast_threshold |= self.parse_fastack(h.sn, h.ts);
                    latest_ack_ts = Some(h.ts);
                }
                Cmd::Push => {
                    let mut repeat = true;
                    if diff(h.sn, self.rcv_nxt.wrapping_add(self.rcv_wnd)) < 0 {
                        self.acklist.push((h.sn, h.ts));
                        if diff(h.sn, self.rcv_nxt) >= 0 {
                            repeat = self.parse_data(h.sn, h.frg, payload);
                        }
                    }
                    if regular && repeat {
                        self.stats.repeat_segs += 1;
                    }
                }
                Cmd::Wask => self.probe |= ASK_TELL,
                Cmd::Wins => {}
            }
            self.stats.in_segs += 1;
            data = &body[h.len as usize..];
        }
        // RTT from the last ACK of the datagram, regular input only (kcp-go).
        if let (Some(ts), true) = (latest_ack_ts, regular) {
            let rtt = diff(now, ts);
            if rtt >= 0 {
                self.update_ack(rtt);
            }
        }
        if !self.nocwnd && diff(self.snd_una, old_una) > 0 {
            self.grow_cwnd();
        }
        if window_slides || fast_threshold {
            self.want_full = true;
        } else if !self.acklist.is_empty() && (self.ack_nodelay || self.acklist.len() >= self.mtu / OVERHEAD) {
            // ACK at once when asked to, or when a datagram's worth has piled up (kcp-go NEW "clocking").
            self.want_acks = true;
        }
        result
    }

    fn update_ack(&mut self, rtt: i32) {
        // RFC 6298, as kcp-go update_ack.
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttvar = rtt >> 1;
        } else {
            let mut delta = rtt - self.rx_srtt;
            self.rx_srtt += delta >> 3;
            if delta < 0 {
                delta = -delta;
            }
            if rtt < self.rx_srtt - self.rx_rttvar {
                // Below the expected range: 8x less weight.
                self.rx_rttvar += (delta - self.rx_rttvar) >> 5;
            } else {
                self.rx_rttvar += (delta - self.rx_rttvar) >> 2;
            }
        }
        let rto = (self.rx_srtt.max(0) as u32).saturating_add(self.interval.max((self.rx_rttvar.max(0) as u32) << 2));
        self.rx_rto = rto.clamp(self.rx_minrto, RTO_MAX);
    }

    fn shrink_buf(&mut self) {
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    /// Index of `sn` in `snd_buf` (contiguous sns from the front).
    fn snd_index(&self, sn: u32) -> Option<usize> {
        let first = self.snd_buf.front()?.sn;
        let i = diff(sn, first);
        (i >= 0 && (i as usize) < self.snd_buf.len()).then_some(i as usize)
    }

    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        if let Some(i) = self.snd_index(sn) {
            let seg = &mut self.snd_buf[i];
            if !seg.acked {
                seg.acked = true;
                // The payload is not needed any more; the slot stays until `una` passes it.
                let data = std::mem::take(&mut seg.data);
                self.recycle(data);
            }
        }
    }

    /// Every ACK counts a fast-ack for older unacked segments sent no later than the acked one (kcp-go,
    /// unlike C KCP). Returns true if one reached the fast-retransmit threshold.
    fn parse_fastack(&mut self, sn: u32, ts: u32) -> bool {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return false;
        }
        let resent = self.fastresend;
        let mut hit = false;
        for seg in self.snd_buf.iter_mut() {
            if diff(sn, seg.sn) <= 0 {
                break;
            }
            if !seg.acked && diff(seg.ts, ts) <= 0 {
                seg.fastack = seg.fastack.saturating_add(1);
                hit |= resent > 0 && seg.fastack >= resent && !seg.fast_done;
            }
        }
        hit
    }

    fn parse_una(&mut self, una: u32) -> usize {
        let mut n = 0;
        while let Some(seg) = self.snd_buf.front() {
            if diff(una, seg.sn) > 0 {
                let seg = self.snd_buf.pop_front().expect("front exists");
                self.give(seg);
                n += 1;
            } else {
                break;
            }
        }
        n
    }

    /// Store a PUSH in the reorder buffer; true if it was a repeat.
    fn parse_data(&mut self, sn: u32, frg: u8, payload: &[u8]) -> bool {
        let i = diff(sn, self.rcv_nxt);
        if i < 0 || i as u32 >= self.rcv_wnd {
            return true;
        }
        let i = i as usize;
        // Grown on demand (an idle or in-order session keeps it empty, not a window of slots).
        if self.rcv_buf.len() <= i {
            self.rcv_buf.resize_with(i + 1, || None);
        }
        if self.rcv_buf[i].is_some() {
            return true;
        }
        let mut data = self.take_buf();
        data.extend_from_slice(payload);
        self.rcv_buf[i] = Some(Segment { sn, frg, data, ..Segment::default() });
        self.move_ready();
        false
    }

    fn grow_cwnd(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = self.mss as u32;
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr += mss;
        } else {
            if self.incr < mss {
                self.incr = mss;
            }
            self.incr += ((u64::from(mss) * u64::from(mss)) / u64::from(self.incr)) as u32 + mss / 16;
            if (self.cwnd + 1) * mss <= self.incr {
                self.cwnd = self.incr.div_ceil(mss.max(1));
            }
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd * mss;
        }
    }

    // ---- network side: output ----

    /// Something to send now or later: segments queued or unacknowledged, ACKs owed, a probe to make.
    fn has_work(&self) -> bool {
        !self.snd_buf.is_empty()
            || !self.snd_queue.is_empty()
            || !self.acklist.is_empty()
            || self.probe != 0
            || self.rmt_wnd == 0
    }

    /// When [`poll_transmit`](Self::poll_transmit) has something to do: `now` (the last time seen) if a
    /// flush is requested, the next timer flush if there is work in flight, `None` when idle.
    pub fn poll_timeout(&self) -> Option<u32> {
        if self.want_full || self.want_acks || self.flush.stage != Stage::Idle {
            Some(self.current)
        } else if self.has_work() {
            Some(if self.armed { self.ts_flush } else { self.current })
        } else {
            None
        }
    }

    /// Write the next datagram of KCP segments into `out` (at least [`mtu`](Self::mtu) bytes) and return
    /// its length; `None` when nothing is due. Call until `None`.
    pub fn poll_transmit(&mut self, now: u32, out: &mut [u8]) -> Option<usize> {
        self.current = now;
        assert!(out.len() >= self.mtu, "output buffer smaller than the KCP MTU");
        if self.flush.stage == Stage::Idle {
            let work = self.has_work();
            if !work {
                self.armed = false;
            }
            let timer = work && (!self.armed || diff(now, self.ts_flush) >= 0);
            if self.want_full || timer {
                self.start_flush(false);
            } else if self.want_acks {
                self.start_flush(true);
            } else {
                return None;
            }
            self.want_full = false;
            self.want_acks = false;
        }
        let out = &mut out[..self.mtu];
        let mut pos = 0;
        loop {
            match self.flush.stage {
                Stage::Idle => {
                    // Input or a send may have asked for another flush while a resumed one finished empty:
                    // run it now rather than report nothing to send.
                    if pos == 0 && (self.want_full || self.want_acks) {
                        self.start_flush(!self.want_full);
                        self.want_full = false;
                        self.want_acks = false;
                        continue;
                    }
                    return (pos > 0).then_some(pos);
                }
                Stage::Acks => {
                    if !self.write_acks(out, &mut pos) {
                        return Some(pos);
                    }
                    self.acklist.clear();
                    self.flush.ack_i = 0;
                    self.flush.stage = if self.flush.ack_only { Stage::Idle } else { Stage::Probes };
                }
                Stage::Probes => {
                    if !self.write_probes(now, out, &mut pos) {
                        return Some(pos);
                    }
                    self.fill_window();
                    self.flush.stage = Stage::Data;
                }
                Stage::Data => {
                    if !self.write_data(now, out, &mut pos) {
                        return Some(pos);
                    }
                    self.finish_flush(now);
                }
            }
        }
    }

    fn start_flush(&mut self, ack_only: bool) {
        let wnd = self.wnd_unused();
        let f = &mut self.flush;
        f.wnd = wnd;
        f.stage = Stage::Acks;
        f.ack_only = ack_only;
        f.ack_i = 0;
        f.carry = None;
        f.una = self.rcv_nxt;
        f.tmpl_sn = 0;
        f.tmpl_ts = 0;
        f.new_segs = 0;
        f.change = 0;
        f.lost = 0;
        f.minrto = self.interval as i32;
    }

    fn header(&self, cmd: Cmd, sn: u32, ts: u32, frg: u8, len: usize) -> Header {
        Header {
            conv: self.conv,
            cmd: cmd as u8,
            frg,
            wnd: self.flush.wnd,
            ts,
            sn,
            una: self.flush.una,
            len: len as u32,
        }
    }

    /// Returns false when the datagram is full (resume later).
    fn write_acks(&mut self, out: &mut [u8], pos: &mut usize) -> bool {
        let last = self.acklist.len().saturating_sub(1);
        while self.flush.ack_i < self.acklist.len() {
            let i = self.flush.ack_i;
            let (sn, ts) = self.acklist[i];
            // kcp-go: ACKs below rcv_nxt are jitter, except the very last one.
            if diff(sn, self.rcv_nxt) >= 0 || i == last {
                if *pos + OVERHEAD > out.len() {
                    return false;
                }
                self.header(Cmd::Ack, sn, ts, 0, 0).write(&mut out[*pos..]);
                *pos += OVERHEAD;
                self.flush.tmpl_sn = sn;
                self.flush.tmpl_ts = ts;
                self.stats.out_segs += 1;
            }
            self.flush.ack_i += 1;
        }
        true
    }

    fn write_probes(&mut self, now: u32, out: &mut [u8], pos: &mut usize) -> bool {
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = now.wrapping_add(self.probe_wait);
            } else if diff(now, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT);
                self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
                self.ts_probe = now.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        for (flag, cmd) in [(ASK_SEND, Cmd::Wask), (ASK_TELL, Cmd::Wins)] {
            if self.probe & flag != 0 {
                if *pos + OVERHEAD > out.len() {
                    return false;
                }
                let (sn, ts) = (self.flush.tmpl_sn, self.flush.tmpl_ts);
                self.header(cmd, sn, ts, 0, 0).write(&mut out[*pos..]);
                *pos += OVERHEAD;
                self.probe &= !flag;
                self.stats.out_segs += 1;
            }
        }
        true
    }

    /// Move segments from the queue into the send window.
    fn fill_window(&mut self) {
        let mut cwnd = self.snd_wnd.min(self.rmt_wnd);
        if !self.nocwnd {
            cwnd = cwnd.min(self.cwnd);
        }
        self.flush.cwnd = cwnd;
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some(mut seg) = self.snd_queue.pop_front() else { break };
            seg.sn = self.snd_nxt;
            self.snd_buf.push_back(seg);
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.flush.new_segs += 1;
        }
        self.stats.max_snd_buf = self.stats.max_snd_buf.max(self.snd_buf.len() as u64);
        self.flush.resent = if self.fastresend == 0 { u32::MAX } else { self.fastresend };
        self.flush.cursor = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    fn write_data(&mut self, now: u32, out: &mut [u8], pos: &mut usize) -> bool {
        // A segment chosen last time that did not fit goes first.
        if let Some(sn) = self.flush.carry {
            if let Some(i) = self.snd_index(sn).filter(|&i| !self.snd_buf[i].acked)
                && !self.write_segment(i, out, pos)
            {
                return false;
            }
            self.flush.carry = None;
        }
        let mut i = match self.snd_buf.front() {
            Some(f) => diff(self.flush.cursor, f.sn).max(0) as usize,
            None => 0,
        };
        while i < self.snd_buf.len() {
            let new_segs = self.flush.new_segs;
            let (resent, rx_rto, nodelay) = (self.flush.resent, self.rx_rto, self.nodelay);
            let seg = &mut self.snd_buf[i];
            self.flush.cursor = seg.sn.wrapping_add(1);
            if seg.acked {
                i += 1;
                continue;
            }
            let mut send = false;
            if seg.xmit == 0 {
                send = true;
                seg.rto = rx_rto;
                seg.resendts = now.wrapping_add(seg.rto);
            } else if !seg.fast_done && seg.fastack >= resent {
                send = true;
                seg.fast_done = true;
                seg.rto = rx_rto;
                seg.resendts = now.wrapping_add(seg.rto);
                self.flush.change += 1;
                self.stats.fast_retrans_segs += 1;
            } else if !seg.fast_done && seg.fastack > 0 && new_segs == 0 {
                send = true;
                seg.fast_done = true;
                seg.rto = rx_rto;
                seg.resendts = now.wrapping_add(seg.rto);
                self.flush.change += 1;
                self.stats.early_retrans_segs += 1;
            } else if diff(now, seg.resendts) >= 0 {
                send = true;
                seg.rto += if nodelay { rx_rto / 2 } else { rx_rto };
                seg.fastack = 0;
                seg.fast_done = false;
                seg.resendts = now.wrapping_add(seg.rto);
                self.flush.lost += 1;
                self.stats.lost_segs += 1;
            }
            if send {
                seg.xmit += 1;
                seg.ts = now;
                if seg.xmit > 1 {
                    self.stats.retrans_segs += 1;
                }
                if seg.xmit >= self.dead_link {
                    self.dead = true;
                }
            }
            let rto = diff(seg.resendts, now);
            if rto > 0 && rto < self.flush.minrto {
                self.flush.minrto = rto;
            }
            if send && !self.write_segment(i, out, pos) {
                self.flush.carry = Some(self.snd_buf[i].sn);
                return false;
            }
            i += 1;
        }
        true
    }

    fn write_segment(&mut self, i: usize, out: &mut [u8], pos: &mut usize) -> bool {
        let seg = &self.snd_buf[i];
        let need = OVERHEAD + seg.data.len();
        if *pos + need > out.len() {
            return false;
        }
        self.header(Cmd::Push, seg.sn, seg.ts, seg.frg, seg.data.len()).write(&mut out[*pos..]);
        out[*pos + OVERHEAD..*pos + need].copy_from_slice(&seg.data);
        *pos += need;
        self.stats.out_segs += 1;
        true
    }

    fn finish_flush(&mut self, now: u32) {
        self.flush.stage = Stage::Idle;
        if !self.nocwnd {
            if self.flush.change > 0 {
                // Rate halving (RFC 6937), as kcp-go.
                let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
                self.ssthresh = (inflight / 2).max(THRESH_MIN);
                // uint32 arithmetic as kcp-go (resent is 0xffffffff when fast resend is off).
                self.cwnd = self.ssthresh.wrapping_add(self.flush.resent);
                self.incr = self.cwnd.wrapping_mul(self.mss as u32);
            }
            if self.flush.lost > 0 {
                self.ssthresh = (self.flush.cwnd / 2).max(THRESH_MIN);
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
            if self.cwnd < 1 {
                self.cwnd = 1;
                self.incr = self.mss as u32;
            }
        }
        // Next timer flush: after `interval`, or earlier for the nearest retransmission.
        self.ts_flush = now.wrapping_add(self.flush.minrto.max(1) as u32);
        self.armed = true;
    }
}

#[cfg(test)]
mod tests;
