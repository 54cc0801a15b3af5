//! KCP ARQ with kcp-go 5.6.x semantics (spec §4), sans-IO.
//!
//! Contract: no clock (every call that needs time takes `now`, an [`Instant`]; KCP's own arithmetic runs on
//! kcp-go's wrapping u32 millisecond clock derived from it, [`Instant::ms32`]), no sockets, no
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

mod flush;
mod input;
mod mode;
mod segment;

use std::collections::VecDeque;

use kcpd_time::Instant;

pub use segment::{Cmd, Header, OVERHEAD, conv_of, sn_of};

// kcp-go constants (`kcp.go`).

/// Minimum RTO in ms with nodelay on (kcp-go `IKCP_RTO_NDL`).
pub const RTO_NDL: u32 = 30;
/// Minimum RTO in ms with nodelay off (`IKCP_RTO_MIN`).
pub const RTO_MIN: u32 = 100;
/// RTO in ms before the first RTT sample (`IKCP_RTO_DEF`).
pub const RTO_DEF: u32 = 200;
/// Largest RTO in ms (`IKCP_RTO_MAX`).
pub const RTO_MAX: u32 = 60_000;
/// Default send window in segments (`IKCP_WND_SND`; kcptun sets its own).
pub const WND_SND: u32 = 32;
/// Default receive window in segments (`IKCP_WND_RCV`).
pub const WND_RCV: u32 = 32;
/// Default KCP MTU in bytes, headers included (`IKCP_MTU_DEF`).
pub const MTU_DEF: usize = 1400;
/// Default flush interval in ms (`IKCP_INTERVAL`).
pub const INTERVAL: u32 = 100;
/// Transmissions of one segment after which the link counts as dead (`IKCP_DEADLINK`).
pub const DEADLINK: u32 = 20;
/// Initial slow-start threshold in segments (`IKCP_THRESH_INIT`).
pub const THRESH_INIT: u32 = 2;
/// Smallest slow-start threshold after a loss (`IKCP_THRESH_MIN`).
pub const THRESH_MIN: u32 = 2;
/// Window probe start (kcp-go NEW; DEB waited 7000 ms).
pub const PROBE_INIT: u32 = 500;
/// Longest wait in ms between zero-window probes (`IKCP_PROBE_LIMIT`).
pub const PROBE_LIMIT: u32 = 120_000;
/// Most fragments of one message (message mode).
pub const MAX_FRAGMENTS: usize = 255;

/// The largest receive window autotuning grows a session's to (segments).
pub const AUTO_RCV_WND_MAX: u32 = 16384;

/// Round trips of arrivals an autotuned receive window covers ([`Kcp::set_rcv_autotune`]): two (Linux's)
/// left a sender on a 150 ms, 1% loss path at the window while holes held its start (44% of a 100 Mbit/s
/// link in the simulator).
pub const RCV_WND_RTTS: u64 = 4;

/// The largest send window a congestion controller may grow a session's to (segments: about 22 MB at
/// `--mtu 1350`), whatever `--sndwnd` says.
pub const AUTO_SND_WND_MAX: u32 = 16384;
/// How far a PUSH from a new address may run ahead of the peer's clock as the session last saw it, beyond
/// the time since ([`Kcp::is_newer`]): path delays differ between the old and the new route.
pub const NEWER_SLACK_MS: u64 = 10_000;
const ASK_SEND: u8 = 1;
const ASK_TELL: u8 = 2;

/// Wrap-aware `a - b` of KCP's millisecond clock (kcp-go `_itimediff`).
pub use kcpd_time::ms32_diff as diff;

pub use mode::{Mode, NoDelay};

/// Why [`Kcp::input`] stopped (kcp-go returns -1/-2/-3). Segments before the bad one were processed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Fewer bytes than one 24-byte segment header (kcp-go -1).
    #[error("datagram of {0} bytes is shorter than a KCP header")]
    TooShort(usize),
    /// A segment of another conversation (kcp-go -1): `got` on the wire, `want` ours.
    #[error("conv {got:#010x} is not this session's {want:#010x}")]
    Conv {
        /// The conv on the wire.
        got: u32,
        /// This session's conv.
        want: u32,
    },
    /// A segment's `len` runs past the datagram (kcp-go -2).
    #[error("segment claims {claimed} payload bytes, {left} left")]
    Truncated {
        /// The segment's `len`.
        claimed: u32,
        /// Bytes left in the datagram after its header.
        left: usize,
    },
    /// A command other than PUSH, ACK, WASK, WINS (kcp-go -3).
    #[error("unknown command {0}")]
    Cmd(u8),
}

/// Errors of the application side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KcpError {
    /// Nothing to send (kcp-go `Send` of an empty buffer).
    #[error("empty send")]
    Empty,
    /// Message mode: the message needs more fragments than `frg` can count.
    #[error("message of {0} bytes needs more than 255 fragments")]
    MessageTooLarge(usize),
    /// Message mode: the caller's buffer cannot hold the next whole message.
    #[error("receive buffer of {have} bytes is smaller than the {need}-byte message")]
    BufferTooSmall {
        /// The caller's buffer size.
        have: usize,
        /// The next message's size.
        need: usize,
    },
    /// An MTU below 50 bytes or above what the buffers allow.
    #[error("invalid MTU {0}")]
    Mtu(usize),
}

/// Counters kcp-go keeps in its SNMP struct (spec §7.8), for this conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KcpStats {
    /// Segments received (any command).
    pub in_segs: u64,
    /// Segments sent (any command).
    pub out_segs: u64,
    /// Retransmissions of every kind (RTO, fast, early).
    pub retrans_segs: u64,
    /// Retransmissions triggered by `resend` duplicate ACKs.
    pub fast_retrans_segs: u64,
    /// Retransmissions after a single duplicate ACK while no new data was sent (kcp-go early retransmit).
    pub early_retrans_segs: u64,
    /// Segments retransmitted on RTO (counted as lost).
    pub lost_segs: u64,
    /// Received segments already held or delivered (duplicates).
    pub repeat_segs: u64,
    /// High-water marks of the queues (kcp-go NEW RingBuffer* counters).
    pub max_snd_queue: u64,
    /// Most segments ever waiting in the receive queue (kcp-go `RingBufferRcvQueue`).
    pub max_rcv_queue: u64,
    /// Most segments ever in flight (kcp-go `RingBufferSndBuffer`).
    pub max_snd_buf: u64,
    /// Received segments not kept because the process was over its memory budget ([`super::budget`]).
    pub budget_drops: u64,
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
    /// Delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation), as of its last transmission:
    /// when it went out, the connection's delivered bytes and their time then, and the send time of the
    /// newest segment acknowledged then.
    sent_at: Instant,
    del_at_send: u64,
    del_time_at_send: Instant,
    first_sent_at_send: Instant,
    /// Sent while the application had nothing more queued (its rate sample says less about the path).
    app_limited: bool,
}

/// What the acknowledgements of one input said about the path (for congestion control): a delivery-rate
/// sample from the newest segment they acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateSample {
    /// Bytes delivered between that segment's send and its acknowledgement.
    pub delivered: u64,
    /// Over this long (µs): the longer of the send and the acknowledgement intervals.
    pub interval_us: u64,
    /// Its round trip (µs), from its last transmission.
    pub rtt_us: u64,
    /// The connection's delivered bytes when it was sent (round counting).
    pub prior_delivered: u64,
    /// It was sent while the application had nothing more to send.
    pub app_limited: bool,
    /// Bytes this input acknowledged.
    pub newly_acked: u64,
}

use flush::{Flush, Stage};

impl Drop for Kcp {
    fn drop(&mut self) {
        // What it held goes back to the budget (the buffers to the allocator with it).
        super::budget::charge(-(self.rcv_charged as isize));
    }
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
    /// Bytes of received segment buffers charged to the process budget ([`super::budget`]).
    rcv_charged: usize,
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
    /// The last time passed in (`current` is its KCP clock reading).
    clock: Instant,
    stats: KcpStats,
    /// The newest `ts` of a PUSH the peer sent (its clock), and when it arrived: what a datagram from a new
    /// address must beat to move the session ([`Kcp::is_newer`]).
    peer_ts: Option<(u32, Instant)>,
    /// The newest `ts` an ACK echoed (our clock).
    echo_ts: u32,
    /// Bytes acknowledged so far, when the last were, and the send time of the newest segment acknowledged.
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    /// The newest-sent segment acknowledged by the current input, and the bytes it acknowledged.
    sample: Option<(RateSample, Instant)>,
    /// A congestion controller's cap on segments in flight (`u32::MAX`: none, kcp-go's behaviour).
    cc_wnd: u32,
    /// Segments in `snd_buf` acknowledged out of order (waiting for `una` to pass them).
    acked_in_buf: u32,
    /// A congestion controller's floor under the RTO (ms; 0: none).
    rto_floor: u32,
    /// Grow the receive window when the peer fills it ([`Kcp::set_rcv_autotune`]), and when it last grew.
    rcv_auto: bool,
    /// The current autotuning epoch: when it began, `rcv_nxt` then, and segments that had arrived.
    rcv_epoch: (Instant, u32, u32),
    /// New segments taken into the receive window (wrapping; [`Kcp::set_rcv_autotune`]).
    rcv_arrived: u32,
    /// A fast retransmission may be repeated ([`Kcp::set_refast`]).
    refast: bool,
    /// The layer above has more to send than it queued ([`Kcp::set_backlog`]).
    backlog: bool,
}

impl Kcp {
    /// kcp-go `NewKCP`: windows 32/32, MTU 1400, RTO 200, interval 100, message mode.
    pub fn new(conv: u32, now: Instant) -> Self {
        let clock = now;
        let now = now.ms32();
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
            rcv_charged: 0,
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
            clock,
            stats: KcpStats::default(),
            peer_ts: None,
            echo_ts: now.wrapping_sub(1),
            delivered: 0,
            delivered_time: clock,
            first_sent_time: clock,
            sample: None,
            cc_wnd: u32::MAX,
            acked_in_buf: 0,
            rto_floor: 0,
            rcv_auto: false,
            rcv_epoch: (clock, 0, 0),
            rcv_arrived: 0,
            refast: false,
            backlog: false,
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

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// The KCP MTU: the most bytes one `poll_transmit` writes (segment headers included).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The most payload bytes one segment carries (MTU minus the 24-byte header).
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// The flush interval in ms (`--interval`, clamped to 10..=5000).
    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// The current retransmission timeout in ms.
    pub fn rto(&self) -> u32 {
        self.rx_rto
    }

    /// The smoothed RTT in ms (0 before the first sample).
    pub fn srtt(&self) -> i32 {
        self.rx_srtt
    }

    /// The peer's advertised window.
    pub fn rmt_wnd(&self) -> u32 {
        self.rmt_wnd
    }

    /// This conversation's KCP counters.
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

    /// The layer above holds more than it queued (it keeps only a few bursts ahead in `snd_queue`): a
    /// flush that empties the queue then does not make its delivery-rate samples application-limited.
    /// Stays until set again.
    pub fn set_backlog(&mut self, more: bool) {
        self.backlog = more;
    }

    /// Cap the segments in flight (a congestion controller's window; `u32::MAX`: no cap).
    pub fn set_cc_wnd(&mut self, segments: u32) {
        self.cc_wnd = segments.max(1);
    }

    /// Grow the receive window this end advertises to [`RCV_WND_RTTS`] round trips of what arrives (Linux's
    /// receive-buffer autotuning, "DRS", with room for loss): once a round trip, the new segments taken in
    /// since the last are counted (or those delivered in order, if more: a hole's repair releases a
    /// backlog), and the window becomes four times that if that is more, at most doubling per round
    /// trip, up to [`AUTO_RCV_WND_MAX`] and never while the process is over its memory budget or its
    /// reader falls behind. A sender the window limits sends a window's worth per round trip and the
    /// window doubles; a sender the path limits sends one bandwidth-delay product and the window stops at
    /// four, which covers a hole repaired by fast retransmission and one whose repair was lost too.
    /// Arrivals, not in-order delivery, measure the sender: at 5% loss some hole's repair is lost in most
    /// round trips, in-order delivery stalls for one and then jumps, and a window measured by it grew
    /// by fits (a third of a 100 Mbit/s, 300 ms link in the simulator). What the window holds beyond
    /// what arrives costs nothing. `--rcvwnd` is where it starts.
    pub fn set_rcv_autotune(&mut self, on: bool) {
        self.rcv_auto = on;
    }

    /// Repeat a fast retransmission that is lost in turn (sender side only; off: kcp-go's, byte for
    /// byte). kcp-go fast-retransmits a segment once, and a repair lost too waits for the RTO (twice the
    /// round trip or more) while the segment holds the window's start; with this, its fast-ack count
    /// starts again at the repair, and since only acknowledgements of segments sent no earlier than it
    /// count (kcp-go's rule), `fastresend` of those acknowledged while the repair is not says it was lost
    /// as well (RACK's "sent later, acknowledged first"), a round trip after it went. At 5% random loss
    /// one repair in twenty is lost.
    pub fn set_refast(&mut self, on: bool) {
        self.refast = on;
    }

    /// The receive window in force (segments).
    pub fn rcv_wnd(&self) -> u32 {
        self.rcv_wnd
    }

    /// Keep the RTO at or above `ms` (a paced sender's queue delay must not look like loss; 0: kcp-go's).
    pub fn set_rto_floor(&mut self, ms: u32) {
        self.rto_floor = ms;
    }

    /// The send window in force: the configured one (`--sndwnd`), or, with a congestion controller, what
    /// its in-flight cap needs up to [`AUTO_SND_WND_MAX`]: the configured window is where a session
    /// starts, the path decides the rest. The window counts from `una`, so it also covers what is
    /// acknowledged beyond a hole (a lost segment holds `una` for a round trip or more while the sender
    /// goes on), and a quarter more, so that the application keeps it fed. The peer's advertised window
    /// still bounds what is sent.
    pub fn snd_wnd_now(&self) -> u32 {
        if self.cc_wnd == u32::MAX {
            return self.snd_wnd;
        }
        let want = self.cc_wnd.saturating_add(self.cc_wnd / 4).saturating_add(self.acked_in_buf);
        self.snd_wnd.max(want.min(AUTO_SND_WND_MAX))
    }

    /// Segments sent and not yet acknowledged (neither by `una` nor by their own ACK).
    pub fn in_flight(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una).saturating_sub(self.acked_in_buf)
    }

    /// Bytes acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
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
        let free = (self.snd_wnd_now() as usize).saturating_sub(self.wait_snd());
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
        if self.wait_snd() >= self.snd_wnd_now() as usize {
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
            self.rcv_charged -= seg.data.capacity();
            super::budget::charge(-(seg.data.capacity() as isize));
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
}

#[cfg(test)]
mod tests;
