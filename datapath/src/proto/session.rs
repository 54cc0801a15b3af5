//! One KCP conversation end to end, sans-IO: application bytes ⇄ KCP ⇄ FEC ⇄ crypto ⇄ datagrams (spec §1).
//! [`Conn`](super::conn::Conn) adds what runs above it; [`Endpoint`](super::endpoint::Endpoint) demultiplexes
//! datagrams into conversations (spec §4.2).
//!
//! A datagram is built in place in one caller buffer, no copies between layers:
//! `[crypto header | FEC header | KCP segments | AEAD tag]` — KCP writes its segments at their final
//! offset, the FEC encoder frames them and folds them into the parity, crypto seals the whole.
//! Receiving is the mirror: open in place, FEC demux (data shards go straight to KCP, rebuilt ones follow
//! as "not regular" input), KCP input.

use kcpd_time::Instant;
use std::sync::Arc;

use kcpd_crypto::{NonceGen, OpenError, PacketCrypto};
use kcpd_fec::wire::{self, Class};
use kcpd_fec::{Decoder, Encoder, Input, ParityRule};

use crate::proto::cc::{Bbr, CcMode, Pacer};
use crate::proto::kcp::{self, Kcp, Mode, NoDelay};
use crate::proto::snmp::Snmp;

/// kcp-go `mtuLimit`: the largest datagram sent or received.
pub const MTU_LIMIT: usize = 1500;
/// The shortest opened datagram anything reads (kcp-go NEW: min(IKCP_OVERHEAD, FEC header + conv) = 12).
pub const MIN_PLAIN: usize = 12;

/// Settings of one conversation (kcptun's flags; spec §4.3, §7).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Largest UDP payload including every header (`--mtu`, 1350); capped at 1500.
    pub mtu: usize,
    /// FEC sent: `--datashard`/`--parityshard`; 0 in either disables FEC on send (receiving adapts).
    pub data_shards: usize,
    /// Parity shards per FEC group sent (`--parityshard`).
    pub parity_shards: usize,
    /// When a complete group's parity is sent (kcp-go NEW skips it after a pause).
    pub parity_rule: ParityRule,
    /// `--mode` or the manual `nodelay, interval, resend, nc`.
    pub nodelay: NoDelay,
    /// KCP send window in segments (`--sndwnd`).
    pub snd_wnd: u32,
    /// KCP receive window in segments (`--rcvwnd`), advertised to the peer.
    pub rcv_wnd: u32,
    /// Flush ACKs as soon as data arrives (`--acknodelay`).
    pub ack_nodelay: bool,
    /// Stream mode (kcptun always).
    pub stream: bool,
    /// Congestion control and pacing of what this end sends (`--cc`; no byte format changes).
    pub cc: CcMode,
}

impl SessionConfig {
    /// kcptun client defaults: mode fast, windows 128/512, FEC 10/3, MTU 1350.
    pub fn kcptun_client() -> Self {
        SessionConfig {
            mtu: 1350,
            data_shards: 10,
            parity_shards: 3,
            parity_rule: ParityRule::SkipSparse,
            nodelay: Mode::Fast.nodelay(),
            snd_wnd: 128,
            rcv_wnd: 512,
            ack_nodelay: false,
            stream: true,
            cc: CcMode::None,
        }
    }

    /// kcptun server defaults: as the client with windows 1024/1024.
    pub fn kcptun_server() -> Self {
        SessionConfig { snd_wnd: 1024, rcv_wnd: 1024, ..Self::kcptun_client() }
    }

    fn fec(&self) -> Option<(usize, usize)> {
        (self.data_shards > 0 && self.parity_shards > 0).then_some((self.data_shards, self.parity_shards))
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The MTU minus the crypto and FEC headers leaves under 50 bytes for KCP.
    #[error("MTU {mtu} leaves no room for KCP after {overhead} bytes of headers")]
    Mtu {
        /// The MTU asked for (capped at 1500).
        mtu: usize,
        /// Crypto and FEC header bytes.
        overhead: usize,
    },
    /// More than 256 data + parity shards.
    #[error("FEC {0}+{1}: data + parity shards must not exceed 256")]
    Fec(usize, usize),
    /// The smux settings are invalid.
    #[error("smux: {0}")]
    Smux(kcpd_smux::ConfigError),
}

/// Why a received datagram was dropped (each is counted in [`Snmp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// It did not open: too short, or a checksum or tag mismatch (InCsumErrors).
    #[error(transparent)]
    Crypto(#[from] OpenError),
    /// KCP refused its segments (KCPInErrors).
    #[error(transparent)]
    Kcp(#[from] kcp::InputError),
    /// A malformed FEC header.
    #[error(transparent)]
    Fec(#[from] wire::WireError),
}

/// One conversation.
pub struct Session {
    kcp: Kcp,
    crypto: Arc<PacketCrypto>,
    fec_enc: Option<Encoder>,
    fec_dec: Option<Decoder>,
    /// Crypto header + FEC header: where KCP's bytes start in a datagram.
    kcp_offset: usize,
    /// The last time passed in.
    last_now: Instant,
    stats: Snmp,
    /// Congestion control and pacing (`None`: kcp-go's sending).
    cc: Option<Box<Control>>,
}

/// A session's congestion controller and pacer.
struct Control {
    bbr: Option<Bbr>,
    pacer: Pacer,
    /// Wire bytes per KCP byte: crypto and FEC headers, and parity.
    wire: f64,
    /// Losses (retransmitted segments) already reported.
    lost_seen: u64,
    /// The last `poll_transmit` stopped for the pacer.
    held: bool,
}

impl Session {
    /// Conversation `conv` with `cfg`, sealing with `crypto`, starting at `now`.
    pub fn new(conv: u32, crypto: Arc<PacketCrypto>, cfg: &SessionConfig, now: Instant) -> Result<Self, ConfigError> {
        let fec = cfg.fec();
        if let Some((d, p)) = fec
            && d + p > kcpd_fec::rs::MAX_TOTAL_SHARDS
        {
            return Err(ConfigError::Fec(d, p));
        }
        let fec_hdr = if fec.is_some() { wire::HEADER_SIZE_PLUS2 } else { 0 };
        let overhead = crypto.overhead() + fec_hdr;
        let mtu = cfg.mtu.min(MTU_LIMIT);
        let kcp_mtu = mtu.checked_sub(overhead).filter(|m| *m >= 50).ok_or(ConfigError::Mtu { mtu, overhead })?;
        let mut k = Kcp::new(conv, now);
        k.set_mtu(kcp_mtu).map_err(|_| ConfigError::Mtu { mtu, overhead })?;
        k.set_nodelay(cfg.nodelay);
        k.set_wndsize(cfg.snd_wnd, cfg.rcv_wnd);
        k.set_stream(cfg.stream);
        k.set_ack_nodelay(cfg.ack_nodelay);
        let fec_enc = match fec {
            Some((d, p)) => Some(Encoder::new(d, p, cfg.parity_rule).map_err(|_| ConfigError::Fec(d, p))?),
            None => None,
        };
        // With a congestion controller the windows follow the path: the receive window grows when the
        // peer fills it (the send window follows the controller, `Kcp::snd_wnd_now`).
        k.set_rcv_autotune(cfg.cc != CcMode::None);
        k.set_refast(cfg.cc != CcMode::None);
        let wire = mtu as f64 / kcp_mtu as f64 * fec.map_or(1.0, |(d, p)| (d + p) as f64 / d as f64);
        let cc = match cfg.cc {
            CcMode::None => None,
            CcMode::Bbr => {
                // Data waits for this end's flush and the ACK for the peer's (the same mode: the same
                // interval).
                let ack_delay = kcpd_time::Duration::from_millis(2 * u64::from(k.interval()));
                let bbr = Bbr::new(now, kcp_mtu, 32, ack_delay);
                let pacer = Pacer::new(now, (bbr.pacing_rate() as f64 * wire) as u64, mtu);
                k.set_cc_wnd(bbr.cwnd());
                Some(Box::new(Control { bbr: Some(bbr), pacer, wire, lost_seen: 0, held: false }))
            }
            CcMode::Rate(r) => {
                Some(Box::new(Control { bbr: None, pacer: Pacer::new(now, r, mtu), wire, lost_seen: 0, held: false }))
            }
        };
        Ok(Session {
            kcp: k,
            fec_dec: fec.map(|p| Decoder::new(Some(p))),
            kcp_offset: crypto.header_len() + fec_hdr,
            last_now: now,
            crypto,
            fec_enc,
            stats: Snmp::default(),
            cc,
        })
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.kcp.conv()
    }

    /// The KCP state (RTT, windows, queues).
    pub fn kcp(&self) -> &Kcp {
        &self.kcp
    }

    /// Largest datagram this session sends (the buffer size `poll_transmit` needs).
    pub fn max_datagram(&self) -> usize {
        self.kcp_offset + self.kcp.mtu() + self.crypto.trailer_len()
    }

    // ---- application side ----

    /// Bytes [`send`](Self::send) accepts now.
    pub fn send_capacity(&self) -> usize {
        self.kcp.send_capacity()
    }

    /// Queue application bytes (stream mode: as many as fit); call [`flush`](Self::flush) after a batch.
    pub fn send(&mut self, data: &[u8]) -> usize {
        let n = self.kcp.send(data).unwrap_or(0);
        self.stats.bytes_sent += n as u64;
        n
    }

    /// Transmit what was queued at the next `poll_transmit` (kcptun's write-then-flush).
    pub fn flush(&mut self) {
        self.kcp.flush();
    }

    /// Read bytes that arrived in order.
    pub fn recv(&mut self, buf: &mut [u8]) -> usize {
        let n = self.kcp.recv(buf).unwrap_or(0);
        self.stats.bytes_received += n as u64;
        n
    }

    /// Bytes readable now.
    pub fn readable(&self) -> usize {
        self.kcp.peek_size().unwrap_or(0)
    }

    /// Segments queued or unacknowledged.
    pub fn wait_snd(&self) -> usize {
        self.kcp.wait_snd()
    }

    /// Segments queued but not yet sent for the first time.
    pub fn unsent(&self) -> usize {
        self.kcp.unsent()
    }

    /// The application side holds more than it queued (see [`Kcp::set_backlog`]).
    pub fn set_backlog(&mut self, more: bool) {
        self.kcp.set_backlog(more);
    }

    /// How many segments the application side should keep queued ahead of the wire: `min`, or with a
    /// pacer what it lets out in one burst if that is more. A service of the connection moves at most this
    /// many into KCP; when the pacer's burst is larger, the sender could only go as fast as its wake-ups
    /// (one burst per wake-up at 100 MB/s is 4 ms, about 300 segments of 1350 bytes).
    pub fn send_ahead(&self, min: usize) -> usize {
        match self.cc.as_deref() {
            Some(c) => min.max(c.pacer.burst().div_ceil(self.max_datagram())),
            None => min,
        }
    }

    // ---- network side ----

    /// Open a received datagram in place and process it.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), RxError> {
        self.stats.in_pkts += 1;
        self.stats.in_bytes += buf.len() as u64;
        let range = match self.crypto.open(buf) {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, OpenError::Checksum | OpenError::Auth) {
                    self.stats.in_csum_errors += 1;
                }
                return Err(e.into());
            }
        };
        self.handle_plain(now, &buf[range])
    }

    /// Count a received datagram whose opening the caller did (see [`handle_plain`](Self::handle_plain)).
    pub fn count_in(&mut self, len: usize) {
        self.stats.in_pkts += 1;
        self.stats.in_bytes += len as u64;
    }

    /// Process an already opened datagram (the listener decrypts once to find the conversation).
    pub fn handle_plain(&mut self, now: Instant, pkt: &[u8]) -> Result<(), RxError> {
        self.last_now = now;
        if pkt.len() < MIN_PLAIN {
            // kcp-go NEW: below min(24, 8 + 4) bytes nothing can be valid (KCPInErrors).
            self.stats.kcp_in_errors += 1;
            return Err(RxError::Kcp(kcp::InputError::TooShort(pkt.len())));
        }
        let res = match wire::classify(pkt) {
            Class::Kcp => self.kcp.input(now, pkt, true).map_err(RxError::from),
            _ => {
                // FEC settings bind the sender only: a receiver without FEC detects the peer's.
                let dec = self.fec_dec.get_or_insert_with(|| Decoder::new(None));
                match dec.input(now, pkt) {
                    Ok(Input::Data(k)) => self.kcp.input(now, k, true).map_err(RxError::from),
                    Ok(Input::Parity | Input::Oob) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        };
        self.control(now);
        if let Some(dec) = self.fec_dec.as_mut() {
            while let Some(r) = dec.poll_recovered() {
                // Rebuilt data: its `wnd` is not trusted and it gives no RTT sample.
                if self.kcp.input(now, r.kcp, false).is_err() {
                    self.stats.kcp_in_errors += 1;
                }
                if let Some(c) = self.cc.as_deref_mut() {
                    Self::control_with(&mut self.kcp, c, now);
                }
            }
        }
        if res.is_err() {
            self.stats.kcp_in_errors += 1;
        }
        res
    }

    /// Whether an opened datagram from an address this session has not used is newer than anything it has
    /// seen ([`Kcp::is_newer`] on its KCP bytes, raw or in an FEC data shard); parity and OOB packets
    /// carry no evidence.
    pub fn is_newer(&self, now: Instant, pkt: &[u8]) -> bool {
        match wire::classify(pkt) {
            Class::Kcp => self.kcp.is_newer(now, pkt),
            Class::Data => wire::Packet::new_checked(pkt).is_ok_and(|p| self.kcp.is_newer(now, p.payload())),
            Class::Parity | Class::Oob => false,
        }
    }

    /// Feed the congestion controller what the last KCP input acknowledged.
    fn control(&mut self, now: Instant) {
        if let Some(c) = self.cc.as_deref_mut() {
            Self::control_with(&mut self.kcp, c, now);
        }
    }

    fn control_with(kcp: &mut Kcp, c: &mut Control, now: Instant) {
        let Some(rs) = kcp.rate_sample() else { return };
        let st = kcp.stats();
        let lost_now = st.lost_segs + st.fast_retrans_segs + st.early_retrans_segs;
        let lost = lost_now - c.lost_seen;
        c.lost_seen = lost_now;
        if let Some(b) = c.bbr.as_mut() {
            b.on_ack(now, rs, kcp.in_flight(), lost);
            kcp.set_cc_wnd(b.cwnd());
            // The in-flight cap allows up to a BDP of queue: a round trip up to twice the minimum is not loss.
            if let Some(m) = b.min_rtt_us() {
                kcp.set_rto_floor((m * 2 / 1000).min(u64::from(kcp::RTO_MAX)) as u32);
            }
            let mtu = kcp.mtu();
            c.pacer.set_rate((b.pacing_rate() as f64 * c.wire) as u64, mtu);
        }
    }

    /// The congestion controller, if it runs one (`--cc bbr`).
    pub fn bbr(&self) -> Option<&Bbr> {
        self.cc.as_ref().and_then(|c| c.bbr.as_ref())
    }

    /// When to call `poll_transmit` next (`None`: idle until new input or data).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.poll_timeout_unpaced()?;
        match self.cc.as_deref() {
            // Held by the pacer: not before it allows the next datagram.
            Some(c) if c.held => Some(t.max(c.pacer.next_at(self.last_now))),
            _ => Some(t),
        }
    }

    fn poll_timeout_unpaced(&self) -> Option<Instant> {
        if self.fec_enc.as_ref().is_some_and(|e| e.pending_parity() > 0) {
            // Parity of a completed group is due now (a full output batch left it in the encoder).
            return Some(self.kcp.poll_timeout().map_or(self.last_now, |t| t.min(self.last_now)));
        }
        self.kcp.poll_timeout()
    }

    /// Write the next plaintext datagram (headers reserved, not yet sealed); returns its sealed length.
    fn next_plain(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        self.last_now = now;
        if let Some(c) = self.cc.as_deref_mut() {
            c.held = !c.pacer.ready(now);
            if c.held {
                // ACKs are not held (nor charged): held, they would look like loss to the peer.
                return self.next_acks(now, out);
            }
        }
        let n = self.next_plain_unpaced(now, out)?;
        if let Some(c) = self.cc.as_deref_mut() {
            c.pacer.spend(n);
        }
        Some(n)
    }

    /// A datagram of pending ACKs only (headers reserved, not sealed), bypassing the pacer.
    fn next_acks(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let (h, t, off) = (self.crypto.header_len(), self.crypto.trailer_len(), self.kcp_offset);
        let n = self.kcp.poll_acks(now, &mut out[off..off + self.kcp.mtu()])?;
        if let Some(enc) = self.fec_enc.as_mut() {
            let _ready = enc.encode(now, &mut out[h..off + n]).ok()?;
        }
        Some(off + n + t)
    }

    fn next_plain_unpaced(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let h = self.crypto.header_len();
        let t = self.crypto.trailer_len();
        if let Some(enc) = self.fec_enc.as_mut() {
            // Parity of a completed group goes right after its last data shard.
            if let Ok(Some(n)) = enc.poll_parity(&mut out[h..]) {
                return Some(h + n + t);
            }
        }
        let off = self.kcp_offset;
        let n = self.kcp.poll_transmit(now, &mut out[off..off + self.kcp.mtu()])?;
        if let Some(enc) = self.fec_enc.as_mut() {
            // The packet is at most MTU_LIMIT bytes by construction.
            let _ready = enc.encode(now, &mut out[h..off + n]).ok()?;
        }
        Some(off + n + t)
    }

    /// Write the next datagram, sealed, into `out` (at least [`max_datagram`](Self::max_datagram) bytes).
    pub fn poll_transmit(&mut self, now: Instant, rng: &mut NonceGen, out: &mut [u8]) -> Option<usize> {
        let n = self.next_plain(now, out)?;
        self.crypto.seal(rng, &mut out[..n]).ok()?;
        self.count_out(n);
        Some(n)
    }

    /// Fill up to `bufs.len()` datagrams (lengths into `lens`), sealed together so that the CFB chains of
    /// the batch run interleaved. Returns how many.
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        rng: &mut NonceGen,
        bufs: &mut [&mut [u8]],
        lens: &mut [usize],
    ) -> usize {
        let mut n = 0;
        while n < bufs.len().min(lens.len()) {
            match self.next_plain(now, bufs[n]) {
                Some(len) => {
                    lens[n] = len;
                    n += 1;
                }
                None => break,
            }
        }
        const CHUNK: usize = 16;
        for (chunk, chunk_lens) in bufs[..n].chunks_mut(CHUNK).zip(lens[..n].chunks(CHUNK)) {
            let k = chunk.len();
            let mut refs: [&mut [u8]; CHUNK] = core::array::from_fn(|_| &mut [][..]);
            for ((r, b), &l) in refs.iter_mut().zip(chunk.iter_mut()).zip(chunk_lens) {
                *r = &mut b[..l];
            }
            // Lengths include the crypto overhead by construction, so sealing cannot fail.
            let _ = self.crypto.seal_batch(rng, &mut refs[..k]);
        }
        for &l in &lens[..n] {
            self.count_out(l);
        }
        n
    }

    /// Fill `arena` with datagrams packed back to back (lengths into `lens`), sealed together. Runs of
    /// equal length are contiguous, ready for UDP GSO. Stops when `lens` is full or less than
    /// [`max_datagram`](Self::max_datagram) bytes of arena remain. Returns how many.
    pub fn poll_transmit_packed(
        &mut self,
        now: Instant,
        rng: &mut NonceGen,
        arena: &mut [u8],
        lens: &mut [usize],
    ) -> usize {
        let max = self.max_datagram();
        let (mut n, mut off) = (0, 0);
        while n < lens.len() && arena.len() - off >= max {
            match self.next_plain(now, &mut arena[off..off + max]) {
                Some(len) => {
                    lens[n] = len;
                    off += len;
                    n += 1;
                }
                None => break,
            }
        }
        const CHUNK: usize = 16;
        let mut rest = &mut arena[..off];
        for chunk_lens in lens[..n].chunks(CHUNK) {
            let mut refs: [&mut [u8]; CHUNK] = core::array::from_fn(|_| &mut [][..]);
            for (r, &l) in refs.iter_mut().zip(chunk_lens) {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(l);
                *r = head;
                rest = tail;
            }
            // Lengths include the crypto overhead by construction, so sealing cannot fail.
            let _ = self.crypto.seal_batch(rng, &mut refs[..chunk_lens.len()]);
        }
        for &l in &lens[..n] {
            self.count_out(l);
        }
        n
    }

    fn count_out(&mut self, len: usize) {
        self.stats.out_pkts += 1;
        self.stats.out_bytes += len as u64;
    }

    /// This conversation's counters (KCP and FEC ones included).
    pub fn snmp(&self) -> Snmp {
        let mut s = self.stats;
        let k = self.kcp.stats();
        s.in_segs = k.in_segs;
        s.out_segs = k.out_segs;
        s.retrans_segs = k.retrans_segs;
        s.fast_retrans_segs = k.fast_retrans_segs;
        s.early_retrans_segs = k.early_retrans_segs;
        s.lost_segs = k.lost_segs;
        s.repeat_segs = k.repeat_segs;
        s.ring_buffer_snd_queue = k.max_snd_queue;
        s.ring_buffer_rcv_queue = k.max_rcv_queue;
        s.ring_buffer_snd_buffer = k.max_snd_buf;
        if let Some(d) = &self.fec_dec {
            let f = d.stats();
            s.fec_full_shard_set = f.full_shard_sets;
            s.fec_recovered = f.recovered;
            s.fec_errs = f.errs;
            s.fec_parity_shards = f.parity_shards;
            s.fec_short_shards = f.short_shards;
            s.oob_packets = f.oob;
            let (open, min) = d.open_groups();
            s.fec_shard_set = open as u64;
            s.fec_shard_min = min.map_or(0, u64::from);
        }
        s
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("conv", &self.conv()).field("crypto", &self.crypto.method()).finish()
    }
}
