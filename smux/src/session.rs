//! The session state machine (smux `session.go`: recvLoop, keepalive, OpenStream, sendLoop/shaper).

use kcpd_time::{Duration, Instant};
use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::Config;
use crate::config::ConfigError;
use crate::stream::{Path, Read, Stream};
use crate::wire::{Cmd, FrameError, HEADER_SIZE, Header, UPD_SIZE, Update, write_update};

/// Streams opened by the peer that the application has not yet taken (`Accepted` events not yet
/// polled) before we stop asking for input (smux `defaultAcceptBacklog`: Go's recvLoop blocks there).
pub const ACCEPT_BACKLOG: usize = 1024;

/// The smallest `out` buffer [`Session::poll_transmit`] works with (an UPD frame).
pub const MIN_TRANSMIT_BUF: usize = HEADER_SIZE + UPD_SIZE;

/// Which end we are: it fixes the parity of the stream ids we open (spec §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opens odd ids 3, 5, 7, … (smux `nextStreamID = 1`).
    Client,
    /// Opens even ids 2, 4, … (smux `nextStreamID = 0`; kcptun servers never open streams).
    Server,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// No frame arrived during a whole keepalive-timeout period while we were reading (spec §5.4).
    KeepaliveTimeout,
    /// The peer sent a frame that breaks the protocol (smux `ErrInvalidProtocol`).
    Protocol(FrameError),
    /// [`Session::close`].
    Local,
}

/// Something the application should look at, from [`Session::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer opened this stream (SYN).
    Accepted(u32),
    /// Data is readable (raised once until a read leaves nothing readable).
    Readable(u32),
    /// A `stream_write` that accepted less than offered can now accept more (or will report an error).
    Writable(u32),
    /// The peer sent FIN: reads return the buffered data, then `Ok(0)`.
    PeerFinished(u32),
    /// After `stream_close`: the stream's queued data and FIN have been handed to `poll_transmit`, and
    /// its id is forgotten.
    Closed(u32),
    /// The session is dead: no more input, output or timers.
    SessionClosed(CloseReason),
}

/// What a session call can fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input broke the protocol; the session is now closed.
    #[error("smux protocol error: {0}")]
    Protocol(#[from] FrameError),
    /// The session is closed (after a protocol error, a keepalive timeout or [`Session::close`]); carries
    /// why. Final: buffered data can still be read and streams closed, nothing else can be sent.
    #[error("smux session closed ({0:?})")]
    SessionClosed(CloseReason),
    /// Stream ids are exhausted (smux `ErrGoAway`): start a new session.
    #[error("stream id overflows, should start a new connection")]
    GoAway,
    /// Not a stream of this session, or one the application already closed.
    #[error("unknown stream {0}")]
    UnknownStream(u32),
    /// We already sent FIN on this stream.
    #[error("stream {0} is closed for writing")]
    WriteClosed(u32),
    /// The peer sent FIN and `half_close` is off: like smux <= 1.5.53, no more writes (Go `io.EOF`).
    #[error("stream {0} was closed by the peer")]
    PeerClosed(u32),
    /// The peer's UPD claims more bytes consumed than we sent (smux `ErrConsumed`).
    #[error("peer consumed more than sent on stream {0}")]
    Consumed(u32),
    /// Nothing to read yet.
    #[error("operation would block")]
    WouldBlock,
}

/// Frames per command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdCounts {
    /// SYN frames (stream opens).
    pub syn: u64,
    /// FIN frames (stream write-side closes).
    pub fin: u64,
    /// PSH frames (stream data), empty ones included.
    pub psh: u64,
    /// NOP frames (keepalives).
    pub nop: u64,
    /// UPD frames (v2 window updates).
    pub upd: u64,
}

impl CmdCounts {
    fn bump(&mut self, cmd: Cmd) {
        let c = match cmd {
            Cmd::Syn => &mut self.syn,
            Cmd::Fin => &mut self.fin,
            Cmd::Psh => &mut self.psh,
            Cmd::Nop => &mut self.nop,
            Cmd::Upd => &mut self.upd,
        };
        *c += 1;
    }
}

/// Counters of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid frames received, per command.
    pub frames_in: CmdCounts,
    /// Frames emitted by `poll_transmit`, per command.
    pub frames_out: CmdCounts,
    /// PSH payload bytes delivered into streams.
    pub bytes_in: u64,
    /// PSH payload bytes sent.
    pub bytes_out: u64,
    /// PSH frames for a stream we do not have (never opened, or closed by us): read and dropped.
    pub discarded_frames: u64,
    /// PSH payload bytes read and dropped because their stream was unknown or already closed by us.
    pub discarded_bytes: u64,
    /// PSH frames of length 0 (ignored).
    pub empty_psh: u64,
    /// SYN for a stream that exists (ignored).
    pub duplicate_syn: u64,
    /// FIN / UPD for a stream we do not have (ignored).
    pub unknown_fin: u64,
    /// UPD for a stream we do not have (ignored).
    pub unknown_upd: u64,
    /// Frames that failed validation ([`FrameError`]); each closes the session, so this is 0 or 1.
    pub protocol_errors: u64,
    /// Sessions closed by [`CloseReason::KeepaliveTimeout`] (0 or 1).
    pub keepalive_timeouts: u64,
    /// Streams we opened with [`Session::open_stream`] (SYNs queued).
    pub streams_opened: u64,
    /// Streams the peer opened (new SYNs, each raising [`Event::Accepted`]).
    pub streams_accepted: u64,
}

/// A control frame waiting for `poll_transmit` (sent before any PSH, smux CLSCTRL).
#[derive(Clone, Copy, Debug)]
enum Ctrl {
    Syn(u32),
    Fin(u32),
    Nop,
    Upd { sid: u32, consumed: u32, window: u32 },
}

/// Where the receive parser stands.
#[derive(Clone, Copy, Debug)]
enum Rx {
    /// `have` bytes of the next header are in `Session::hdr`.
    Header { have: usize },
    /// Inside a PSH payload for `sid`.
    Psh { sid: u32, remaining: usize },
    /// `have` bytes of an UPD payload for `sid` are in `Session::upd`.
    Upd { sid: u32, have: usize },
}

/// One smux session over an ordered byte stream; see the crate docs for the contract.
#[derive(Debug)]
pub struct Session {
    config: Config,
    role: Role,
    dead: Option<CloseReason>,
    /// smux `nextStreamID`: the last id we opened (ids advance by 2 before use).
    next_stream_id: u32,
    go_away: bool,
    streams: BTreeMap<u32, Stream>,
    /// smux `bucket`: receive tokens left.
    bucket: i64,
    /// `Accepted` events not yet polled.
    pending_accepts: usize,

    rx: Rx,
    hdr: [u8; HEADER_SIZE],
    upd: [u8; UPD_SIZE],

    ctrl: VecDeque<Ctrl>,
    nop_queued: bool,
    /// Streams with queued data, by (virtual time, arrival) — smux shaper.go.
    sched: BinaryHeap<Reverse<(u64, u64, u32)>>,
    sched_seq: u64,
    /// Virtual time of the last frame sent: a stream becoming active starts there.
    vclock: u64,

    events: VecDeque<Event>,
    stats: Stats,

    next_ping: Instant,
    next_check: Instant,
    /// smux `dataReady`: a frame header arrived since the last keepalive check.
    data_received: bool,
    /// The time, round-trip time and receive window the layer below last reported
    /// ([`Session::set_path`]), for stream window autotuning.
    path: Path,
}

/// The next tick of a period that fired at `t`; resynchronised to `now` when we fell a whole period
/// behind (a Go ticker drops ticks too).
fn next_tick(t: Instant, period_ms: u32, now: Instant) -> Instant {
    let period = Duration::from_millis(u64::from(period_ms));
    let n = t + period;
    if n <= now { now + period } else { n }
}

impl Session {
    /// A new session at time `now`; the keepalive timers start here.
    pub fn new(role: Role, config: Config, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        if config.version == 0 && role == Role::Client {
            // A client speaks first: it must know its version.
            return Err(ConfigError::Version(0));
        }
        Ok(Session {
            next_stream_id: match role {
                Role::Client => 1,
                Role::Server => 0,
            },
            role,
            dead: None,
            go_away: false,
            streams: BTreeMap::new(),
            bucket: config.max_receive_buffer as i64,
            pending_accepts: 0,
            rx: Rx::Header { have: 0 },
            hdr: [0; HEADER_SIZE],
            upd: [0; UPD_SIZE],
            ctrl: VecDeque::new(),
            nop_queued: false,
            sched: BinaryHeap::new(),
            sched_seq: 0,
            vclock: 0,
            events: VecDeque::new(),
            stats: Stats::default(),
            next_ping: now + Duration::from_millis(u64::from(config.keepalive_interval_ms)),
            next_check: now + Duration::from_millis(u64::from(config.keepalive_timeout_ms)),
            data_received: false,
            path: Path { now, rtt_ms: 0, below: 0 },
            config,
        })
    }

    /// Tell the session the time, the path's round-trip time (ms; 0: unknown) and how many bytes the
    /// layer below may hold for it on their way in (KCP's receive window), for stream window autotuning
    /// ([`Config::window_autotune`]).
    pub fn set_path(&mut self, now: Instant, rtt_ms: u32, below: u32) {
        self.path = Path { now, rtt_ms, below };
    }

    /// Bytes from the peer, in order, in any chunking. An `Err` is final: the session is closed (a
    /// `SessionClosed` event is queued) and later calls return [`Error::SessionClosed`].
    pub fn handle_input(&mut self, _now: Instant, bytes: &[u8]) -> Result<(), Error> {
        if let Some(r) = self.dead {
            return Err(Error::SessionClosed(r));
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.rx {
                Rx::Header { have } => {
                    let take = (HEADER_SIZE - have).min(rest.len());
                    self.hdr[have..have + take].copy_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if have + take < HEADER_SIZE {
                        self.rx = Rx::Header { have: have + take };
                    } else {
                        self.rx = Rx::Header { have: 0 };
                        self.on_header()?;
                    }
                }
                Rx::Psh { sid, remaining } => {
                    let take = remaining.min(rest.len());
                    self.on_payload(sid, &rest[..take], remaining == take);
                    rest = &rest[take..];
                    self.rx = if remaining == take {
                        Rx::Header { have: 0 }
                    } else {
                        Rx::Psh { sid, remaining: remaining - take }
                    };
                }
                Rx::Upd { sid, have } => {
                    let take = (UPD_SIZE - have).min(rest.len());
                    self.upd[have..have + take].copy_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if have + take < UPD_SIZE {
                        self.rx = Rx::Upd { sid, have: have + take };
                    } else {
                        self.rx = Rx::Header { have: 0 };
                        self.on_update(sid);
                    }
                }
            }
        }
        Ok(())
    }

    /// Keepalive: queue a NOP every interval; close the session when a whole timeout period passed
    /// without any frame while we had receive tokens (smux `keepalive`: a reader blocked on tokens is not
    /// a dead peer).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.dead.is_some() {
            return;
        }
        if self.next_ping <= now {
            if !self.nop_queued {
                self.ctrl.push_back(Ctrl::Nop);
                self.nop_queued = true;
            }
            self.next_ping = next_tick(self.next_ping, self.config.keepalive_interval_ms, now);
        }
        if self.next_check <= now {
            if self.data_received {
                self.data_received = false;
            } else if self.bucket > 0 {
                self.stats.keepalive_timeouts += 1;
                self.die(CloseReason::KeepaliveTimeout);
                return;
            }
            self.next_check = next_tick(self.next_check, self.config.keepalive_timeout_ms, now);
        }
    }

    /// Write the next frame into `out` and return its length, or `None` when nothing is due. Control
    /// frames (SYN, FIN, NOP, UPD) go first, in the order they were queued; then one PSH of the stream
    /// that has sent least (bytes in v2, frames in v1; smux shaper.go), carrying up to `max_frame_size`
    /// bytes of whatever that stream has queued. `out` needs `8 + max_frame_size` bytes for full frames;
    /// a shorter one (at least [`MIN_TRANSMIT_BUF`]) gets shorter PSH frames.
    pub fn poll_transmit(&mut self, _now: Instant, out: &mut [u8]) -> Option<usize> {
        // Version 0: still waiting for the client's first frame to learn the version.
        if self.dead.is_some() || out.len() < MIN_TRANSMIT_BUF || self.config.version == 0 {
            return None;
        }
        let ver = self.config.version;
        if let Some(c) = self.ctrl.pop_front() {
            let mut h = Header::new_unchecked(&mut out[..HEADER_SIZE]);
            let (cmd, len) = match c {
                Ctrl::Syn(sid) => {
                    h.set(ver, Cmd::Syn, 0, sid);
                    (Cmd::Syn, HEADER_SIZE)
                }
                Ctrl::Fin(sid) => {
                    h.set(ver, Cmd::Fin, 0, sid);
                    (Cmd::Fin, HEADER_SIZE)
                }
                Ctrl::Nop => {
                    self.nop_queued = false;
                    h.set(ver, Cmd::Nop, 0, 0);
                    (Cmd::Nop, HEADER_SIZE)
                }
                Ctrl::Upd { sid, consumed, window } => {
                    h.set(ver, Cmd::Upd, UPD_SIZE as u16, sid);
                    // stream.go sendWindowUpdate: window = MaxStreamBuffer (<= i32::MAX by validate()), or
                    // what window autotuning grew it to.
                    write_update(&mut out[HEADER_SIZE..MIN_TRANSMIT_BUF], consumed, window);
                    (Cmd::Upd, MIN_TRANSMIT_BUF)
                }
            };
            self.stats.frames_out.bump(cmd);
            return Some(len);
        }
        while let Some(Reverse((vt, _, sid))) = self.sched.pop() {
            let Some(s) = self.streams.get_mut(&sid) else { continue };
            if !s.scheduled || s.send.is_empty() {
                s.scheduled = false;
                continue;
            }
            let n = s.send.len().min(self.config.max_frame_size).min(out.len() - HEADER_SIZE);
            // n <= max_frame_size <= 65535 (Config::validate).
            Header::new_unchecked(&mut out[..HEADER_SIZE]).set(ver, Cmd::Psh, n as u16, sid);
            s.take_send(&mut out[HEADER_SIZE..HEADER_SIZE + n]);
            self.vclock = vt;
            s.vtime = vt + if ver == 2 { n as u64 } else { 1 };
            self.stats.frames_out.psh += 1;
            self.stats.bytes_out += n as u64;
            if s.write_blocked && s.write_unblocked(&self.config) {
                s.write_blocked = false;
                self.events.push_back(Event::Writable(sid));
            }
            if !s.send.is_empty() {
                self.sched.push(Reverse((s.vtime, self.sched_seq, sid)));
                self.sched_seq += 1;
            } else {
                s.scheduled = false;
                if s.fin_pending {
                    s.fin_pending = false;
                    self.ctrl.push_back(Ctrl::Fin(sid));
                }
                if s.app_closed {
                    self.streams.remove(&sid);
                    self.events.push_back(Event::Closed(sid));
                }
            }
            return Some(HEADER_SIZE + n);
        }
        None
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front()?;
        if let Event::Accepted(_) = e {
            self.pending_accepts -= 1;
        }
        Some(e)
    }

    /// Open a stream (smux `OpenStream`): queues its SYN. Ids advance by 2 from 1 (client) or 0
    /// (server), skipping ids the peer already uses; past u32 the session refuses for good.
    pub fn open_stream(&mut self) -> Result<u32, Error> {
        if let Some(r) = self.dead {
            return Err(Error::SessionClosed(r));
        }
        if self.go_away {
            return Err(Error::GoAway);
        }
        let sid = loop {
            self.next_stream_id = self.next_stream_id.wrapping_add(2);
            let sid = self.next_stream_id;
            // session.go OpenStream: `if sid == sid%2` — the counter wrapped past u32::MAX.
            if sid == sid % 2 {
                self.go_away = true;
                return Err(Error::GoAway);
            }
            if !self.streams.contains_key(&sid) {
                break sid;
            }
        };
        self.streams.insert(sid, Stream::new());
        self.ctrl.push_back(Ctrl::Syn(sid));
        self.stats.streams_opened += 1;
        Ok(sid)
    }

    /// Queue bytes on a stream; returns how many were accepted: limited by the per-stream send buffer
    /// and, in v2, by the peer's window (initially 262144, then `window - (written - consumed)` from its
    /// UPDs). `Ok(0)` for a non-empty `data` means "full": wait for `Writable`.
    pub fn stream_write(&mut self, id: u32, data: &[u8]) -> Result<usize, Error> {
        if let Some(r) = self.dead {
            return Err(Error::SessionClosed(r));
        }
        let s = self.streams.get_mut(&id).filter(|s| !s.app_closed).ok_or(Error::UnknownStream(id))?;
        if s.write_closed {
            return Err(Error::WriteClosed(id));
        }
        if s.peer_fin && !self.config.half_close {
            // stream.go Write/writeV2 (<= 1.5.53): `case <-s.chFinEvent: return 0, io.EOF`.
            return Err(Error::PeerClosed(id));
        }
        if self.config.version == 2 && s.inflight() < 0 {
            return Err(Error::Consumed(id));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = s.send_room(&self.config).min(data.len());
        s.send.extend(&data[..n]);
        s.num_written = s.num_written.wrapping_add(n as u32);
        s.write_blocked = n < data.len();
        if n > 0 && !s.scheduled {
            s.scheduled = true;
            s.vtime = s.vtime.max(self.vclock);
            self.sched.push(Reverse((s.vtime, self.sched_seq, id)));
            self.sched_seq += 1;
        }
        Ok(n)
    }

    /// Read from a stream: bytes of at most one received frame per call (as Go's `tryRead`, which makes
    /// our v2 UPDs identical to a Go reader's for the same read sizes). `Ok(0)` = EOF (the peer sent FIN
    /// and everything before it was read; an empty `buf` also returns `Ok(0)`). `Err(WouldBlock)` =
    /// nothing yet. In v2 the read queues an UPD on the stream's first read and whenever
    /// `max_stream_buffer / 2` bytes were read since the last one (stream.go tryReadv2). After the session
    /// died, buffered data is still returned, then EOF (FIN seen) or `SessionClosed`.
    pub fn stream_read(&mut self, id: u32, buf: &mut [u8]) -> Result<usize, Error> {
        let s = self.streams.get_mut(&id).filter(|s| !s.app_closed).ok_or(Error::UnknownStream(id))?;
        if buf.is_empty() {
            return Ok(0);
        }
        match s.read(buf, &self.config, self.path) {
            Read::Data { n, upd } => {
                self.bucket += n as i64;
                if s.readable() == 0 {
                    s.read_armed = true;
                }
                if let (Some(consumed), None) = (upd, self.dead) {
                    let window = s.window(&self.config);
                    self.ctrl.push_back(Ctrl::Upd { sid: id, consumed, window });
                }
                Ok(n)
            }
            Read::Empty => {
                s.read_armed = true;
                match (s.peer_fin, self.dead) {
                    (true, _) => Ok(0),
                    (false, Some(r)) => Err(Error::SessionClosed(r)),
                    (false, None) => Err(Error::WouldBlock),
                }
            }
        }
    }

    /// Half-close (smux >= 1.5.54 `CloseWrite`): FIN after the queued data; reading goes on. Talking to
    /// kcptun (smux 1.5.16/1.5.52, no half-close) the peer takes the FIN as a full close. Idempotent.
    pub fn stream_close_write(&mut self, id: u32) -> Result<(), Error> {
        if let Some(r) = self.dead {
            return Err(Error::SessionClosed(r));
        }
        let s = self.streams.get_mut(&id).filter(|s| !s.app_closed).ok_or(Error::UnknownStream(id))?;
        if !s.write_closed {
            s.write_closed = true;
            s.write_blocked = false;
            if s.send.is_empty() {
                self.ctrl.push_back(Ctrl::Fin(id));
            } else {
                s.fin_pending = true;
            }
        }
        Ok(())
    }

    /// Full close (smux `Close`): drop what was received (its tokens return to the session), send FIN
    /// after the queued data unless already sent, and forget the stream once that is framed (`Closed`
    /// event). Every stream should end here, half-closed or not. On a dead session it just forgets.
    pub fn stream_close(&mut self, id: u32) -> Result<(), Error> {
        let s = self.streams.get_mut(&id).filter(|s| !s.app_closed).ok_or(Error::UnknownStream(id))?;
        self.bucket += s.drop_received() as i64;
        if self.dead.is_some() {
            self.streams.remove(&id);
            return Ok(());
        }
        s.app_closed = true;
        s.write_blocked = false;
        if !s.write_closed {
            s.write_closed = true;
            if s.send.is_empty() {
                self.ctrl.push_back(Ctrl::Fin(id));
            } else {
                s.fin_pending = true;
            }
        }
        if s.send.is_empty() {
            self.streams.remove(&id);
            self.events.push_back(Event::Closed(id));
        }
        Ok(())
    }

    /// Close the whole session (smux `Session.Close`; nothing is sent on the wire).
    pub fn close(&mut self) {
        if self.dead.is_none() {
            self.die(CloseReason::Local);
        }
    }

    /// False while the session receive budget (`max_receive_buffer`) is spent or [`ACCEPT_BACKLOG`]
    /// accepted streams wait to be polled — stop reading the layer below (back-pressure reaches the KCP
    /// window) — and once the session is closed.
    pub fn wants_input(&self) -> bool {
        self.dead.is_none() && self.bucket > 0 && self.pending_accepts < ACCEPT_BACKLOG
    }

    /// The next keepalive deadline, `None` once closed. Call [`handle_timeout`](Self::handle_timeout)
    /// when it is reached; it moves after every call that passes it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.dead.is_some() {
            return None;
        }
        Some(self.next_ping.min(self.next_check))
    }

    /// True once the session has died (protocol error, keepalive timeout or [`close`](Self::close)); it
    /// never reopens.
    pub fn is_closed(&self) -> bool {
        self.dead.is_some()
    }

    /// Why the session closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.dead
    }

    /// Counters since [`new`](Self::new) (monotonic; they survive the session's close).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The settings in force: those given to [`new`](Self::new), except that a detecting server's
    /// `version` 0 becomes the client's version once its first frame arrives.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The protocol version in use: the configured one, or for a detecting server (configured 0) the one
    /// its client's first frame carried (0 until then).
    pub fn version(&self) -> u8 {
        self.config.version
    }

    /// Which end this session is, as given to [`new`](Self::new): it fixes the parity of stream ids we open.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Streams the application holds (not yet `stream_close`d).
    pub fn num_streams(&self) -> usize {
        self.streams.values().filter(|s| !s.app_closed).count()
    }

    /// Receive tokens left (smux `bucket`); may go negative by what one input call delivered.
    pub fn receive_budget(&self) -> i64 {
        self.bucket
    }

    /// A full frame header is in `self.hdr`.
    fn on_header(&mut self) -> Result<(), Error> {
        self.data_received = true;
        if self.config.version == 0 && matches!(self.hdr[0], 1 | 2) {
            // Detection: the first frame names the version for the whole session.
            self.config.version = self.hdr[0];
        }
        let (cmd, len, sid) = {
            let h = Header::new_unchecked(&self.hdr[..]);
            match h.validate(self.config.version) {
                Ok(cmd) => (cmd, usize::from(h.length()), h.sid()),
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    self.die(CloseReason::Protocol(e));
                    return Err(Error::Protocol(e));
                }
            }
        };
        self.stats.frames_in.bump(cmd);
        match cmd {
            Cmd::Nop => {}
            Cmd::Syn => {
                if let Entry::Vacant(e) = self.streams.entry(sid) {
                    e.insert(Stream::new());
                    self.pending_accepts += 1;
                    self.stats.streams_accepted += 1;
                    self.events.push_back(Event::Accepted(sid));
                } else {
                    self.stats.duplicate_syn += 1;
                }
            }
            Cmd::Fin => match self.streams.get_mut(&sid).filter(|s| !s.app_closed) {
                Some(s) => {
                    if !s.peer_fin {
                        s.peer_fin = true;
                        self.events.push_back(Event::PeerFinished(sid));
                    }
                }
                None => self.stats.unknown_fin += 1,
            },
            Cmd::Psh => {
                if len == 0 {
                    self.stats.empty_psh += 1;
                } else {
                    if self.streams.get(&sid).is_none_or(|s| s.app_closed) {
                        self.stats.discarded_frames += 1;
                    }
                    self.rx = Rx::Psh { sid, remaining: len };
                }
            }
            Cmd::Upd => self.rx = Rx::Upd { sid, have: 0 },
        }
        Ok(())
    }

    /// A piece of a PSH payload for `sid`; `last` when it completes the frame.
    fn on_payload(&mut self, sid: u32, bytes: &[u8], last: bool) {
        match self.streams.get_mut(&sid).filter(|s| !s.app_closed) {
            Some(s) => {
                s.push_partial(bytes);
                // smux recvLoop: a stream used some token (taken as the bytes arrive, Go per frame).
                self.bucket -= bytes.len() as i64;
                self.stats.bytes_in += bytes.len() as u64;
                if last && s.finish_frame() && s.read_armed {
                    s.read_armed = false;
                    self.events.push_back(Event::Readable(sid));
                }
            }
            None => self.stats.discarded_bytes += bytes.len() as u64,
        }
    }

    /// A full UPD payload for `sid` is in `self.upd` (stream.go update).
    fn on_update(&mut self, sid: u32) {
        let Some(s) = self.streams.get_mut(&sid) else {
            self.stats.unknown_upd += 1;
            return;
        };
        let u = Update::new_unchecked(&self.upd[..]);
        s.peer_consumed = u.consumed();
        s.peer_window = u.window();
        if s.write_blocked && !s.app_closed && s.write_unblocked(&self.config) {
            s.write_blocked = false;
            self.events.push_back(Event::Writable(sid));
        }
    }

    fn die(&mut self, reason: CloseReason) {
        self.dead = Some(reason);
        self.ctrl.clear();
        self.sched.clear();
        self.nop_queued = false;
        for s in self.streams.values_mut() {
            s.scheduled = false;
        }
        self.events.push_back(Event::SessionClosed(reason));
    }

    /// Internal consistency, for the fuzz harness: every token not in the bucket sits in a stream buffer,
    /// scheduling flags match the heap, and queues respect their bounds.
    pub(crate) fn check_invariants(&self) {
        let buffered: usize = self.streams.values().map(|s| s.recv.len()).sum();
        assert_eq!(self.bucket + buffered as i64, self.config.max_receive_buffer as i64, "token accounting");
        let mut in_heap: Vec<u32> = self.sched.iter().map(|Reverse((_, _, sid))| *sid).collect();
        in_heap.sort_unstable();
        let before = in_heap.len();
        in_heap.dedup();
        assert_eq!(before, in_heap.len(), "a stream scheduled twice");
        for (sid, s) in &self.streams {
            assert_eq!(s.segs.iter().sum::<usize>() + s.partial, s.recv.len(), "segments of stream {sid}");
            assert!(s.send.len() <= self.config.max_send_buffer);
            assert_eq!(s.scheduled, in_heap.binary_search(sid).is_ok(), "schedule flag of stream {sid}");
            if self.dead.is_none() {
                assert_eq!(s.scheduled, !s.send.is_empty(), "queued data of stream {sid} is scheduled");
            }
            assert!(!s.fin_pending || !s.send.is_empty());
            assert!(!s.app_closed || !s.send.is_empty(), "closed stream {sid} lingers without data");
        }
        let accepts = self.events.iter().filter(|e| matches!(e, Event::Accepted(_))).count();
        assert_eq!(accepts, self.pending_accepts);
    }
}

#[cfg(test)]
mod tests;
