//! One conversation, sans-IO: a [`Session`] (crypto, FEC, KCP), what runs above it (snappy and smux, or the
//! raw KCP byte stream of the library) and every per-conversation policy kcptun applies — `--ratelimit`,
//! `--autoexpire`/`--scavengettl`, `--closewait` and smux half-close, `--QPP` stream wrapping, smux
//! keepalive — driven by `handle_*`/`poll_*` calls with the time passed in, as quinn-proto's `Connection`.
//!
//! Whoever drives a `Conn` (a shard, the simulator, a fuzzer) follows one loop:
//! 1. feed received datagrams ([`Conn::handle_datagram`], or [`Endpoint`](super::endpoint::Endpoint) does);
//! 2. [`Conn::handle_timeout`] when [`Conn::poll_timeout`] is reached;
//! 3. [`Conn::pump`], then drain [`Conn::poll_event`];
//! 4. move stream bytes ([`Conn::stream_read`], [`Conn::stream_write`] and the stream close calls);
//! 5. [`Conn::pump`] again, then [`Conn::poll_transmit`] until it returns 0, and re-arm on
//!    [`Conn::poll_timeout`].

use kcpd_time::{Duration, Instant};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kcpd_crypto::{NonceGen, PacketCrypto};
use kcpd_smux as smux;
use kcpd_smux::Error as SmuxError;

use crate::proto::mux::{Mux, MuxError};
use crate::proto::session::{ConfigError, RxError, Session, SessionConfig};
use crate::proto::snmp::Snmp;

/// Until an address a conversation moved to has proven itself, it sends at most this many times the bytes
/// received from there ([`Conn::start_path_check`]).
pub const AMPLIFICATION: u64 = 3;

/// Bytes each way since a move to an address that has not proven itself yet.
#[derive(Clone, Copy, Debug, Default)]
struct PathCheck {
    received: u64,
    sent: u64,
    datagrams: u32,
    /// The last `poll_transmit` had more to send than the limit allowed.
    blocked: bool,
}

/// kcp-go's rate limiter burst: 64 datagrams of 1500 bytes.
pub const RATE_BURST: i64 = 64 * 1500;

/// The earlier of two deadlines.
fn earlier(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn ms(x: u32) -> Duration {
    Duration::from_millis(u64::from(x))
}

/// Everything a conversation is configured with; shared by the conversations of one listener or dialer
/// (and embedded by the tunnel's, the service's and the library's options).
#[derive(Clone, Debug)]
pub struct ConnConfig {
    /// `--crypt`/`--key`.
    pub crypto: Arc<PacketCrypto>,
    /// KCP and FEC (`--mode`, windows, `--mtu`, `--datashard`/`--parityshard`...).
    pub session: SessionConfig,
    /// smux above KCP (`--smuxver`, `--smuxbuf`, `--streambuf`, `--keepalive`); unused by raw conversations.
    pub smux: smux::Config,
    /// Snappy framing under smux (kcptun unless `--nocomp`).
    pub compress: bool,
    /// After one direction of a tunnelled connection ends, close both after this long (kcptun NEW
    /// `--closewait`; 0: at once, as kcptun DEB). Not used with smux half-close (kcpd on both ends).
    pub close_wait_ms: u32,
    /// kcptun NEW `--ratelimit`: bytes per second per session for every datagram it sends (0: off).
    pub rate_limit: u64,
    /// kcptun NEW `--QPP`: every smux stream's payload through a Quantum Permutation Pad.
    pub qpp: Option<Arc<QppSetup>>,
    /// A raw conversation the peer opened ends after this long without a datagram from the peer
    /// ([`SessionEnd::Idle`]; 0: never, as kcp-go). smux conversations have smux's keepalive instead.
    pub raw_idle_ms: u32,
    /// Streams the peer may have open at once (those waiting for [`stream_rate`](Self::stream_rate)
    /// included); a SYN past it is answered with a FIN, as kcptun answers a stream it could not connect
    /// ([`ConnEvent::StreamRefused`]). 0: no cap.
    pub max_streams: usize,
    /// Streams the peer opens are handed on (to be connected to the target) at most this many per second,
    /// with this burst; SYNs past it wait their turn, they are not refused. (0, _): no limit.
    pub stream_rate: (u32, u32),
}

/// [`ConnConfig::max_streams`]'s default.
pub const DEFAULT_MAX_STREAMS: usize = 4096;
/// [`ConnConfig::stream_rate`]'s default: 200 new streams a second, bursts of 400.
pub const DEFAULT_STREAM_RATE: (u32, u32) = (200, 400);

impl ConnConfig {
    /// `crypto` and `session` with kcptun NEW's smux, no compression and no policy.
    pub fn new(crypto: Arc<PacketCrypto>, session: SessionConfig) -> Self {
        ConnConfig {
            crypto,
            session,
            smux: smux::Config::kcptun_new(),
            compress: false,
            close_wait_ms: 0,
            rate_limit: 0,
            qpp: None,
            raw_idle_ms: 0,
            max_streams: DEFAULT_MAX_STREAMS,
            stream_rate: DEFAULT_STREAM_RATE,
        }
    }

    /// Check that conversations can be made with this configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.smux.validate().map_err(ConfigError::Smux)?;
        Session::new(0, self.crypto.clone(), &self.session, Instant::ZERO).map(|_| ())
    }
}

/// QPP pads built once per process from `--key` and `--QPPCount`, and the PRNG state every stream
/// direction starts from (qpp `CreatePRNG(key)`), kept to be cloned per stream.
pub struct QppSetup {
    /// The pads (`--QPPCount` of them, from `--key`).
    pub pads: kcpd_crypto::qpp::Qpp,
    /// The PRNG state every stream direction starts from.
    pub prng: kcpd_crypto::qpp::Prng,
}

impl QppSetup {
    /// Build the pads and PRNG from `key` (kcptun `--key`) and `count` (`--QPPCount`).
    pub fn new(key: &[u8], count: u16) -> Self {
        QppSetup { pads: kcpd_crypto::qpp::Qpp::new(key, count), prng: kcpd_crypto::qpp::Prng::new(key) }
    }
}

impl std::fmt::Debug for QppSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QppSetup").field("pads", &self.pads.count()).finish_non_exhaustive()
    }
}

/// What runs above KCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upper {
    /// The KCP byte stream itself (kcp-go `UDPSession`): one stream, [`RAW`].
    Raw,
    /// smux in this role, speaking `version` (0: a server that adopts the client's first frame's).
    Smux {
        /// Client (opens streams) or server (accepts them).
        role: smux::Role,
        /// 1, 2, or 0: a server that adopts the client's first frame's version.
        version: u8,
    },
}

/// The stream id of a raw conversation's only stream.
pub const RAW: Option<u32> = None;

/// Something the driver must act on, from [`Conn::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// A detecting server learnt the smux version from the client's first frame.
    SmuxDetected(u8),
    /// The peer opened a smux stream (after [`ConnConfig::stream_rate`] let it through).
    StreamOpened(u32),
    /// The peer opened a stream past [`ConnConfig::max_streams`]: it was closed at once.
    StreamRefused(u32),
    /// Bytes are readable on a stream.
    StreamReadable(u32),
    /// A stream that refused bytes takes more now.
    StreamWritable(u32),
    /// The peer finished a stream (FIN): reads return what is buffered, then end.
    StreamFinished(u32),
    /// A closed stream's last frame went out; its id is forgotten.
    StreamClosed(u32),
    /// The conversation is over: send what [`Conn::poll_transmit`] still has when `flush` (ACKs the peer
    /// is owed, as kcp-go's `Close` flushes), then drop it. `error`: the layer above KCP failed.
    Closed {
        /// Why it ended.
        end: SessionEnd,
        /// Send what `poll_transmit` still has before dropping it.
        flush: bool,
        /// The layer above KCP failed (counted as a tunnel error).
        error: bool,
    },
}

/// Per-stream policy state.
struct StreamState {
    /// Each direction ends on its own (smux half-close between kcpd ends, or an application channel).
    half_close: bool,
    /// `--QPP`: the PRNGs of the two directions (writes into the stream, reads from it).
    qpp: Option<Box<(kcpd_crypto::qpp::Prng, kcpd_crypto::qpp::Prng)>>,
    up_done: bool,
    down_done: bool,
    /// `--closewait`: when the stream closes after one direction ended.
    close_at: Option<Instant>,
}

/// One KCP conversation and its policy.
pub struct Conn {
    cfg: Arc<ConnConfig>,
    session: Session,
    mux: Option<Mux>,
    /// The peer opened it (a listener's conversation).
    passive: bool,
    born: Instant,
    /// When the last datagram from the peer arrived (for [`ConnConfig::raw_idle_ms`]).
    heard: Instant,
    /// A detecting server reported the smux version it learnt.
    smux_reported: bool,
    streams: HashMap<Option<u32>, StreamState>,
    events: VecDeque<ConnEvent>,
    /// Set once it is over (no more events after [`ConnEvent::Closed`]).
    closing: Option<SessionEnd>,
    /// `--ratelimit` token bucket (bytes; negative: in debt) and when it was last refilled.
    tokens: i64,
    refilled_at: Instant,
    /// Rate-limited: the next transmit waits until then.
    rate_wait: Option<Instant>,
    /// Client `--autoexpire`: after this the session takes no new streams.
    expires_at: Option<Instant>,
    /// Client `--scavengettl`: when an expired session is closed, streams or not.
    reap_at: Option<Instant>,
    /// Streams the peer opened that wait for [`ConnConfig::stream_rate`].
    held: VecDeque<u32>,
    /// The stream rate's token bucket and when it was last refilled.
    stream_tokens: f64,
    stream_tokens_at: Instant,
    /// Since a move to an address that has not proven itself: what the anti-amplification limit counts.
    path: Option<PathCheck>,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// smux heard nothing from the peer for a whole keepalive timeout.
    KeepaliveTimeout,
    /// The peer broke the smux protocol.
    Protocol(kcpd_smux::FrameError),
    /// Another smux failure (e.g. the peer acknowledged more than was sent).
    Smux(kcpd_smux::Error),
    /// The peer's snappy stream (kcptun compression) was corrupt.
    Compression,
    /// The peer's address started a new conversation: it restarted, so the old one is gone.
    Replaced,
    /// Client `--autoexpire`: expired, and `--scavengettl` later closed it.
    Scavenged,
    /// It could take no more streams (smux stream ids used up).
    Exhausted,
    /// The application closed it (library), or nobody accepted it (a dropped library listener).
    Closed,
    /// A raw conversation the peer opened heard nothing from it for [`ConnConfig::raw_idle_ms`].
    Idle,
    /// The fake-TCP connection under it ended (`--tcp`): refused, reset or closed by the peer, or expired.
    TransportClosed,
}

impl From<kcpd_smux::CloseReason> for SessionEnd {
    fn from(why: kcpd_smux::CloseReason) -> Self {
        match why {
            kcpd_smux::CloseReason::KeepaliveTimeout => SessionEnd::KeepaliveTimeout,
            kcpd_smux::CloseReason::Protocol(e) => SessionEnd::Protocol(e),
            kcpd_smux::CloseReason::Local => SessionEnd::Closed,
        }
    }
}

/// smux on a session that ended: what the peer sent tells a version mismatch from a silent peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmuxSummary {
    /// The version this session spoke (0: a detecting server that never saw a frame).
    pub version: u8,
    /// Valid frames received from the peer.
    pub frames_in: u64,
    /// Streams this end opened (SYN frames sent).
    pub syns_sent: u64,
}

/// A client session that most likely died of a smux version mismatch: it opened a stream and the server
/// never sent one valid frame, then either went silent (kcptun closes a session on a frame of the other
/// version without a word) or sent a frame of the other version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmuxMismatch {
    /// The version this client spoke.
    pub ours: u8,
    /// The version the server's first frame carried, when it sent one.
    pub theirs: Option<u8>,
}

/// Why a session ends when its smux (or compression) layer fails.
fn mux_end(e: MuxError) -> SessionEnd {
    match e {
        MuxError::Smux(SmuxError::Protocol(f)) => SessionEnd::Protocol(f),
        MuxError::Smux(SmuxError::SessionClosed(why)) => why.into(),
        MuxError::Smux(e) => SessionEnd::Smux(e),
        MuxError::Snappy(_) => SessionEnd::Compression,
    }
}

impl Conn {
    /// A conversation `conv` opened at `now`; `passive`: the peer opened it.
    pub fn new(
        conv: u32,
        cfg: Arc<ConnConfig>,
        upper: Upper,
        passive: bool,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let session = Session::new(conv, cfg.crypto.clone(), &cfg.session, now)?;
        let mux = match upper {
            Upper::Raw => None,
            Upper::Smux { role, version } => {
                let scfg = smux::Config { version, ..cfg.smux.clone() };
                Some(Mux::new(role, scfg, cfg.compress, now).map_err(ConfigError::Smux)?)
            }
        };
        let smux_reported = mux.as_ref().is_none_or(|m| m.version() != 0);
        let cfg_burst = cfg.stream_rate.1.max(1);
        Ok(Conn {
            cfg,
            session,
            mux,
            passive,
            born: now,
            heard: now,
            smux_reported,
            streams: HashMap::new(),
            events: VecDeque::new(),
            closing: None,
            tokens: RATE_BURST,
            refilled_at: now,
            rate_wait: None,
            expires_at: None,
            reap_at: None,
            held: VecDeque::new(),
            stream_tokens: f64::from(cfg_burst),
            stream_tokens_at: now,
            path: None,
        })
    }

    /// The conversation id.
    pub fn conv(&self) -> u32 {
        self.session.conv()
    }

    /// What it was configured with.
    pub fn config(&self) -> &Arc<ConnConfig> {
        &self.cfg
    }

    /// The peer opened it.
    pub fn is_passive(&self) -> bool {
        self.passive
    }

    /// When it began.
    pub fn born(&self) -> Instant {
        self.born
    }

    /// It carries the raw KCP byte stream (no smux).
    pub fn is_raw(&self) -> bool {
        self.mux.is_none()
    }

    /// The smux version spoken (`None`: raw; 0: a detecting server that has not seen a frame yet).
    pub fn smux_version(&self) -> Option<u8> {
        self.mux.as_ref().map(Mux::version)
    }

    /// smux can still open streams and carry bytes.
    pub fn is_live(&self) -> bool {
        self.closing.is_none() && self.mux.as_ref().is_some_and(|m| !m.is_closed())
    }

    /// It ended (a [`ConnEvent::Closed`] was queued).
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// The KCP/FEC/crypto session (counters, KCP state).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// This conversation's counters.
    pub fn snmp(&self) -> Snmp {
        self.session.snmp()
    }

    /// Largest datagram it sends.
    pub fn max_datagram(&self) -> usize {
        self.session.max_datagram()
    }

    // ---- network side ----

    /// A datagram on a socket of its own (a dialled conversation): opened here.
    pub fn handle_datagram(&mut self, now: Instant, buf: &mut [u8]) -> Result<(), RxError> {
        let r = self.session.handle_datagram(now, buf);
        if r.is_ok() {
            self.heard = now;
        }
        r
    }

    /// A datagram of `len` bytes the endpoint opened, `plain` its opened bytes.
    pub fn handle_plain(&mut self, now: Instant, len: usize, plain: &[u8]) -> Result<(), RxError> {
        self.session.count_in(len);
        if let Some(p) = self.path.as_mut() {
            p.received += len as u64;
            p.datagrams += 1;
            p.blocked = false;
            if p.datagrams >= 2 {
                self.path = None;
            }
        }
        let r = self.session.handle_plain(now, plain);
        if r.is_ok() {
            self.heard = now;
        }
        r
    }

    /// Whether `plain`, an opened datagram from an address this conversation has not used, is newer than
    /// anything it has seen, so that it may move the conversation there ([`Session::is_newer`]).
    pub fn is_newer(&self, now: Instant, plain: &[u8]) -> bool {
        self.closing.is_none() && self.session.is_newer(now, plain)
    }

    /// The conversation moves to an address that has not proven itself yet (call before feeding the
    /// datagram that moved it): until a second datagram arrives from there, it sends at most
    /// [`AMPLIFICATION`] times the bytes received (QUIC's anti-amplification rule, RFC 9000 §8), so that a
    /// spoofed move cannot aim its traffic at a victim.
    pub fn start_path_check(&mut self) {
        self.path = Some(PathCheck::default());
    }

    /// The address it last moved to has proven itself (or it never moved).
    pub fn path_proven(&self) -> bool {
        self.path.is_none()
    }

    /// When a raw conversation the peer opened ends for want of datagrams, if it does.
    fn idle_at(&self) -> Option<Instant> {
        (self.passive && self.mux.is_none() && self.cfg.raw_idle_ms > 0).then(|| self.heard + ms(self.cfg.raw_idle_ms))
    }

    /// Run what is due at `now`: smux keepalive, the `--scavengettl` reaper. Call when
    /// [`poll_timeout`](Self::poll_timeout) is reached (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        if self.reap_at.is_some_and(|t| t <= now) {
            self.close(SessionEnd::Scavenged, false, false);
            return;
        }
        if self.idle_at().is_some_and(|t| t <= now) {
            self.close(SessionEnd::Idle, false, false);
            return;
        }
        self.release_streams(now);
        if let Some(m) = self.mux.as_mut()
            && m.poll_timeout().is_some_and(|t| t <= now)
        {
            m.handle_timeout(now);
        }
    }

    /// Move bytes both ways between KCP and smux; returns how many moved. A failure above KCP ends the
    /// conversation ([`ConnEvent::Closed`]). Call after input, after stream writes or reads, and after
    /// [`handle_timeout`](Self::handle_timeout); then drain [`poll_event`](Self::poll_event).
    pub fn pump(&mut self, now: Instant) -> usize {
        if self.closing.is_some() {
            return 0;
        }
        let Some(m) = self.mux.as_mut() else { return 0 };
        if self.cfg.smux.window_autotune {
            let k = self.session.kcp();
            let below = (k.rcv_wnd() as usize).saturating_mul(k.mss()).min(u32::MAX as usize) as u32;
            m.smux().set_path(now, k.srtt().max(0) as u32, below);
        }
        let moved = match m.pump(now, &mut self.session) {
            Ok(n) => n,
            Err(e) => {
                self.close(mux_end(e), true, true);
                return 0;
            }
        };
        if !self.smux_reported && m.version() != 0 {
            self.smux_reported = true;
            self.events.push_back(ConnEvent::SmuxDetected(m.version()));
        }
        let mut refused = 0;
        while let Some(e) = m.smux().poll_event() {
            let ev = match e {
                smux::Event::Accepted(sid) => {
                    let cap = self.cfg.max_streams;
                    let queued = self.events.iter().filter(|e| matches!(e, ConnEvent::StreamOpened(_))).count();
                    if cap > 0 && self.streams.len() + self.held.len() + queued >= cap {
                        let _ = m.smux().stream_close(sid);
                        refused += 1;
                        ConnEvent::StreamRefused(sid)
                    } else {
                        self.held.push_back(sid);
                        continue;
                    }
                }
                smux::Event::Readable(sid) => ConnEvent::StreamReadable(sid),
                smux::Event::Writable(sid) => ConnEvent::StreamWritable(sid),
                smux::Event::PeerFinished(sid) => ConnEvent::StreamFinished(sid),
                smux::Event::Closed(sid) => ConnEvent::StreamClosed(sid),
                smux::Event::SessionClosed(why) => {
                    self.close(why.into(), true, false);
                    break;
                }
            };
            self.events.push_back(ev);
        }
        self.release_streams(now);
        moved + refused
    }

    /// Hand on the streams the rate lets through now.
    fn release_streams(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let (rate, burst) = self.cfg.stream_rate;
        if rate == 0 {
            self.events.extend(self.held.drain(..).map(ConnEvent::StreamOpened));
            return;
        }
        let dt = now.saturating_since(self.stream_tokens_at).as_micros() as f64 / 1e6;
        self.stream_tokens = (self.stream_tokens + dt * f64::from(rate)).min(f64::from(burst.max(1)));
        self.stream_tokens_at = now;
        while self.stream_tokens >= 1.0
            && let Some(sid) = self.held.pop_front()
        {
            self.stream_tokens -= 1.0;
            self.events.push_back(ConnEvent::StreamOpened(sid));
        }
    }

    /// When the next held stream may go, if one waits.
    fn stream_release_at(&self) -> Option<Instant> {
        if self.held.is_empty() || self.cfg.stream_rate.0 == 0 {
            return None;
        }
        let missing = (1.0 - self.stream_tokens).max(0.0);
        let us = (missing * 1e6 / f64::from(self.cfg.stream_rate.0)).ceil() as u64;
        Some(self.stream_tokens_at + Duration::from_micros(us.max(1)))
    }

    /// The next thing the driver must act on. Call after [`pump`](Self::pump) until `None`; the queue
    /// refills only on the next `pump`, `handle_timeout` or [`close`](Self::close).
    pub fn poll_event(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// End the conversation: a [`ConnEvent::Closed`] follows (once).
    pub fn close(&mut self, end: SessionEnd, flush: bool, error: bool) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(end);
        if flush {
            self.session.flush();
        }
        self.events.push_back(ConnEvent::Closed { end, flush, error });
    }

    /// Write the datagrams due at `now` into `arena`, packed back to back (lengths into `lens`; runs of
    /// equal length are contiguous, ready for UDP GSO), sealed. Returns how many; call again while it
    /// fills `lens` (or the arena), and after every `pump` or input. `--ratelimit` holds datagrams back
    /// until [`poll_timeout`](Self::poll_timeout); a closing conversation's last datagrams are not held.
    pub fn poll_transmit(&mut self, now: Instant, rng: &mut NonceGen, arena: &mut [u8], lens: &mut [usize]) -> usize {
        let max = self.session.max_datagram();
        let arena = match self.path.as_mut() {
            Some(p) => {
                let allowed = (p.received * AMPLIFICATION).saturating_sub(p.sent) as usize;
                if allowed < max {
                    p.blocked = true;
                    return 0;
                }
                let end = allowed.min(arena.len());
                &mut arena[..end]
            }
            None => arena,
        };
        let rate = if self.closing.is_none() { self.cfg.rate_limit } else { 0 };
        if rate > 0 {
            // Token bucket (kcp-go: rate.Limiter with a 96000-byte burst, WaitN before each batch): send
            // while not in debt, charge what went out, wait for the debt to be earned back.
            let el = u128::from((now - self.refilled_at).as_micros().min(60_000_000));
            let credit = (el * u128::from(rate) / 1_000_000).min(RATE_BURST as u128 * 2) as i64;
            // Time that earned less than a byte (very low rates) keeps accruing.
            if credit > 0 {
                self.tokens = (self.tokens + credit).min(RATE_BURST);
                self.refilled_at = now;
            }
            if self.tokens <= 0 {
                let wait = ((-self.tokens) as u64 * 1_000_000).div_ceil(rate).max(1);
                self.rate_wait = Some(now + Duration::from_micros(wait.min(60_000_000)));
                return 0;
            }
            self.rate_wait = None;
        }
        let n = self.session.poll_transmit_packed(now, rng, arena, lens);
        let bytes = lens[..n].iter().sum::<usize>();
        if rate > 0 {
            self.tokens -= bytes as i64;
        }
        if let Some(p) = self.path.as_mut() {
            p.sent += bytes as u64;
        }
        n
    }

    /// When [`handle_timeout`](Self::handle_timeout) and then [`poll_transmit`](Self::poll_transmit) must
    /// run next (KCP, smux keepalive, rate limit, `--closewait`, `--scavengettl`); `None`: only new input
    /// or stream activity can make it do anything.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        // Held back by the anti-amplification limit: only a datagram from the peer lets it send again.
        let send = if self.path.is_some_and(|p| p.blocked) { None } else { self.session.poll_timeout() };
        let mut next =
            [send, self.mux.as_ref().and_then(|m| m.poll_timeout()), self.rate_wait].into_iter().flatten().min();
        for s in self.streams.values() {
            next = earlier(next, s.close_at);
        }
        next = earlier(next, self.stream_release_at());
        earlier(earlier(next, self.reap_at), self.idle_at()).map(|t| t.max(now))
    }

    // ---- client session policy ----

    /// Client `--autoexpire`/`--scavengettl`: from `now`, the session takes new streams for `expire_ms`
    /// (0: forever), and is closed `scavenge_ms` after it expired.
    pub fn set_expiry(&mut self, now: Instant, expire_ms: u32, scavenge_ms: u32) {
        if expire_ms == 0 {
            return;
        }
        self.expires_at = Some(now + ms(expire_ms));
        self.reap_at = Some(now + ms(expire_ms) + ms(scavenge_ms));
    }

    /// `--autoexpire` ran out: new streams go to a fresh session.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    // ---- streams ----

    /// Open a smux stream.
    pub fn open_stream(&mut self) -> Result<u32, SmuxError> {
        match self.mux.as_mut() {
            Some(m) => m.smux().open_stream(),
            None => Err(SmuxError::SessionClosed(smux::CloseReason::Local)),
        }
    }

    /// Start carrying bytes of stream `sid` ([`RAW`] for a raw conversation). `local_half_close`: the
    /// local end ends each direction on its own (an application channel) whatever smux negotiated.
    pub fn stream_attach(&mut self, sid: Option<u32>, local_half_close: bool) {
        // QPP wraps smux streams only (kcptun QPPPort), each direction from the initial PRNG state.
        let qpp = match (sid, self.cfg.qpp.as_ref()) {
            (Some(_), Some(q)) => Some(Box::new((q.prng.clone(), q.prng.clone()))),
            _ => None,
        };
        let half_close = local_half_close || self.cfg.smux.half_close;
        self.streams.insert(sid, StreamState { half_close, qpp, up_done: false, down_done: false, close_at: None });
    }

    /// Bytes just read from the stream's local end, before [`stream_write`](Self::stream_write): wrapped
    /// in place (`--QPP`). Every byte passes here exactly once, in order.
    pub fn stream_seal(&mut self, sid: Option<u32>, data: &mut [u8]) {
        if let (Some(q), Some(prngs)) = (self.cfg.qpp.as_ref(), self.streams.get_mut(&sid).and_then(|s| s.qpp.as_mut()))
        {
            q.pads.encrypt(&mut prngs.0, data);
        }
    }

    /// Queue sealed bytes on the stream; returns how many it took (0: full, try after the next pump).
    pub fn stream_write(&mut self, sid: Option<u32>, data: &[u8]) -> Result<usize, SmuxError> {
        match (sid, self.mux.as_mut()) {
            (Some(sid), Some(m)) => m.smux().stream_write(sid, data),
            _ => {
                let n = self.session.send(data);
                if n > 0 {
                    self.session.flush();
                }
                Ok(n)
            }
        }
    }

    /// Read the stream's bytes (unwrapped); `Ok(0)` at its end, `WouldBlock` when nothing is there yet.
    pub fn stream_read(&mut self, sid: Option<u32>, buf: &mut [u8]) -> Result<usize, SmuxError> {
        let r = match (sid, self.mux.as_mut()) {
            (Some(sid), Some(m)) => m.smux().stream_read(sid, buf),
            _ => match self.session.recv(buf) {
                0 => Err(SmuxError::WouldBlock),
                n => Ok(n),
            },
        };
        if let Ok(n) = r
            && let (Some(q), Some(prngs)) =
                (self.cfg.qpp.as_ref(), self.streams.get_mut(&sid).and_then(|s| s.qpp.as_mut()))
        {
            q.pads.decrypt(&mut prngs.1, &mut buf[..n]);
        }
        r
    }

    /// The local end sent its last byte and everything was written: FIN with half-close.
    pub fn stream_up_done(&mut self, sid: Option<u32>) {
        let Some(s) = self.streams.get_mut(&sid) else { return };
        if s.up_done {
            return;
        }
        s.up_done = true;
        if let (Some(id), Some(m), true) = (sid, self.mux.as_mut(), self.cfg.smux.half_close) {
            let _ = m.smux().stream_close_write(id);
        }
    }

    /// Everything the peer sent on the stream was delivered. Returns whether the local end should be
    /// shut down for writing now (half-close); otherwise the whole stream closes with
    /// [`stream_over`](Self::stream_over).
    pub fn stream_down_done(&mut self, sid: Option<u32>) -> bool {
        let Some(s) = self.streams.get_mut(&sid) else { return false };
        s.down_done = true;
        s.half_close
    }

    /// Whether the stream's life is over at `now` (both directions done with half-close; otherwise either
    /// one, after `--closewait`, as kcptun closes both directions when one ends). A raw stream ends with
    /// its conversation.
    pub fn stream_over(&mut self, sid: Option<u32>, now: Instant) -> bool {
        let close_wait = self.cfg.close_wait_ms;
        let Some(s) = self.streams.get_mut(&sid) else { return true };
        if sid.is_none() {
            false
        } else if s.half_close {
            s.up_done && s.down_done
        } else if s.up_done || s.down_done {
            let at = *s.close_at.get_or_insert(now + ms(close_wait));
            at <= now
        } else {
            false
        }
    }

    /// The stream's local end is gone: close the smux stream (a no-op for one already closed).
    pub fn stream_detach(&mut self, sid: Option<u32>) {
        self.streams.remove(&sid);
        if let (Some(id), Some(m)) = (sid, self.mux.as_mut()) {
            let _ = m.smux().stream_close(id);
        }
    }

    // ---- the end ----

    /// smux's summary and, for a client, whether it most likely died of a version mismatch: a client
    /// session that opened streams, whose datagrams the server's KCP acknowledged (so the path, key and
    /// crypt are right), and that never heard one valid smux frame. kcptun closes a session on a frame of
    /// the other version without a word, and its next keepalive (from a fresh session) is a frame of its
    /// own version. A server that never answered at all (down, firewalled, another key) is no mismatch.
    pub fn diagnose(&self, end: SessionEnd) -> (Option<SmuxSummary>, Option<SmuxMismatch>) {
        let smux = self.mux.as_ref().map(|m| {
            let st = m.stats();
            let f = &st.frames_in;
            SmuxSummary {
                version: m.version(),
                frames_in: f.syn + f.fin + f.psh + f.nop + f.upd,
                syns_sent: st.frames_out.syn,
            }
        });
        let answered = self.session.snmp().in_segs > 0;
        let mismatch = match (smux, end) {
            (Some(s), SessionEnd::KeepaliveTimeout)
                if !self.passive && answered && s.frames_in == 0 && s.syns_sent > 0 =>
            {
                Some(SmuxMismatch { ours: s.version, theirs: None })
            }
            (Some(s), SessionEnd::Protocol(kcpd_smux::FrameError::BadVersion { got: got @ (1 | 2), .. }))
                if !self.passive && s.frames_in == 0 =>
            {
                Some(SmuxMismatch { ours: s.version, theirs: Some(got) })
            }
            _ => None,
        };
        (smux, mismatch)
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("conv", &self.conv()).field("closing", &self.closing).finish_non_exhaustive()
    }
}
