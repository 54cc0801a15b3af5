//! Two sessions back to back over an in-memory byte pipe: bulk transfers over many streams with random
//! chunking, both versions, half-close on and off; v2 flow control stall and resume; keepalive; the
//! scheduler's fairness; back-pressure through `wants_input`.

use std::collections::{BTreeMap, VecDeque};

use kcpd_smux::wire::{Cmd, Repr};
use kcpd_smux::{ACCEPT_BACKLOG, CloseReason, Config, Error, Event, Role, Session};

use kcpd_time::{Duration, Instant};

const T0: Instant = Instant::ZERO;

fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

/// xorshift64*: deterministic test randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The bytes side `from` sends on stream `id` (a function of both, so the receiver can check them).
fn payload(seed: u64, id: u32, from: usize, len: usize) -> Vec<u8> {
    let mut r = Rng(seed ^ (u64::from(id) << 20) ^ ((from as u64 + 1) << 52) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

fn payload_len(seed: u64, id: u32, from: usize, max: usize) -> usize {
    let mut r = Rng(seed.wrapping_mul(31) ^ u64::from(id) ^ ((from as u64) << 40) | 1);
    // Some empty streams, mostly up to `max`.
    if r.below(8) == 0 { 0 } else { r.below(max) }
}

#[derive(Default)]
struct App {
    to_send: Vec<u8>,
    sent: usize,
    expect: Vec<u8>,
    received: Vec<u8>,
    /// Set by Writable (and initially); cleared when a write is cut short.
    can_write: bool,
    /// Set by Readable / PeerFinished; cleared when a read says WouldBlock or EOF.
    readable: bool,
    peer_fin: bool,
    eof: bool,
    write_closed: bool,
    closed: bool,
}

struct Side {
    s: Session,
    apps: BTreeMap<u32, App>,
    /// Bytes on their way to this side.
    inbox: VecDeque<u8>,
    /// Sids whose FIN travelled towards this side (no PSH may follow in that direction).
    fin_seen: std::collections::BTreeSet<u32>,
    done: usize,
}

struct Sim {
    sides: [Side; 2],
    cfg: Config,
    rng: Rng,
    /// Sids whose SYN went by, either way (no PSH before it, no second SYN).
    syn_seen: std::collections::BTreeSet<u32>,
    seed: u64,
    max_len: usize,
    now: Instant,
    counts: Counts,
}

/// How often the interesting paths ran.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    /// Delivery stopped with bytes waiting because `wants_input` was false.
    gated: usize,
    writable_events: usize,
    /// Bytes written after the peer's FIN (half-close).
    after_peer_fin: usize,
}

impl Sim {
    fn new(cfg: Config, seed: u64, max_len: usize) -> Sim {
        let side = |role| Side {
            s: Session::new(role, cfg.clone(), T0).unwrap(),
            apps: BTreeMap::new(),
            inbox: VecDeque::new(),
            fin_seen: std::collections::BTreeSet::new(),
            done: 0,
        };
        Sim {
            sides: [side(Role::Client), side(Role::Server)],
            cfg,
            rng: Rng(seed | 1),
            syn_seen: Default::default(),
            seed,
            max_len,
            now: T0,
            counts: Counts::default(),
        }
    }

    fn app_for(&self, id: u32, me: usize) -> App {
        let out = payload_len(self.seed, id, me, self.max_len);
        let inn = payload_len(self.seed, id, 1 - me, self.max_len);
        App {
            to_send: payload(self.seed, id, me, out),
            expect: payload(self.seed, id, 1 - me, inn),
            can_write: true,
            ..App::default()
        }
    }

    fn open(&mut self, me: usize) {
        let id = self.sides[me].s.open_stream().unwrap();
        let app = self.app_for(id, me);
        self.sides[me].apps.insert(id, app);
    }

    /// One round: events, application reads/writes/closes, transmit, delivery, timers.
    fn step(&mut self) {
        self.now += Duration::from_millis(7);
        for me in 0..2 {
            self.events(me);
            self.application(me);
            self.transmit(me);
        }
        for me in 0..2 {
            self.deliver(me);
            self.sides[me].s.handle_timeout(self.now);
        }
    }

    fn events(&mut self, me: usize) {
        while let Some(ev) = self.sides[me].s.poll_event() {
            match ev {
                Event::Accepted(id) => {
                    let app = self.app_for(id, me);
                    assert!(self.sides[me].apps.insert(id, app).is_none(), "stream {id} accepted twice");
                }
                Event::Readable(id) => self.sides[me].apps.get_mut(&id).unwrap().readable = true,
                Event::PeerFinished(id) => {
                    let a = self.sides[me].apps.get_mut(&id).unwrap();
                    a.readable = true;
                    a.peer_fin = true;
                }
                Event::Writable(id) => {
                    self.counts.writable_events += 1;
                    if let Some(a) = self.sides[me].apps.get_mut(&id) {
                        a.can_write = true;
                    }
                }
                Event::Closed(id) => {
                    let a = self.sides[me].apps.remove(&id).expect("Closed for a stream we closed");
                    assert!(a.closed && a.sent == a.to_send.len());
                    self.sides[me].done += 1;
                }
                Event::SessionClosed(r) => panic!("session {me} closed: {r:?}"),
            }
        }
    }

    fn application(&mut self, me: usize) {
        let half_close = self.cfg.half_close;
        let ids: Vec<u32> = self.sides[me].apps.keys().copied().collect();
        for id in ids {
            let rng = &mut self.rng;
            let side = &mut self.sides[me];
            let a = side.apps.get_mut(&id).unwrap();
            if a.closed {
                continue;
            }
            // Reads: skipped now and then, with a random budget, so that slow readers exhaust the
            // session's receive buffer.
            if a.readable && rng.below(3) != 0 {
                let mut budget = 1 + rng.below(100_000);
                let mut buf = vec![0u8; 1 + rng.below(20_000)];
                while budget > 0 {
                    match side.s.stream_read(id, &mut buf) {
                        Ok(0) => {
                            assert!(a.peer_fin);
                            a.eof = true;
                            a.readable = false;
                            break;
                        }
                        Ok(n) => {
                            a.received.extend_from_slice(&buf[..n]);
                            budget = budget.saturating_sub(n);
                        }
                        Err(Error::WouldBlock) => {
                            a.readable = false;
                            break;
                        }
                        Err(e) => panic!("read {id}: {e}"),
                    }
                }
                assert!(a.expect.starts_with(&a.received), "stream {id} on side {me}: corrupted data");
            }
            // Writes: random pieces while the session accepts them.
            while a.can_write && !a.write_closed && a.sent < a.to_send.len() {
                let end = (a.sent + 1 + rng.below(30_000)).min(a.to_send.len());
                match side.s.stream_write(id, &a.to_send[a.sent..end]) {
                    Ok(n) => {
                        if a.peer_fin {
                            self.counts.after_peer_fin += n;
                        }
                        a.sent += n;
                        if a.sent < end {
                            a.can_write = false;
                        }
                    }
                    Err(e) => panic!("write {id} on side {me}: {e}"),
                }
            }
            let all_sent = a.sent == a.to_send.len();
            if half_close {
                // CloseWrite when done sending; Close once the peer's EOF was read.
                if all_sent && !a.write_closed {
                    side.s.stream_close_write(id).unwrap();
                    a.write_closed = true;
                    assert_eq!(side.s.stream_write(id, b"x"), Err(Error::WriteClosed(id)));
                }
                if a.write_closed && a.eof {
                    side.s.stream_close(id).unwrap();
                    a.closed = true;
                }
            } else if (all_sent && a.received.len() == a.expect.len()) || a.eof {
                // kcptun style: FIN means done both ways, so close once both directions are complete; a
                // peer FIN implies it has all our data already.
                assert!(all_sent, "peer finished before we sent everything");
                if a.peer_fin && !a.eof {
                    continue;
                }
                if a.peer_fin {
                    assert_eq!(side.s.stream_write(id, b"x"), Err(Error::PeerClosed(id)));
                }
                side.s.stream_close(id).unwrap();
                a.closed = true;
            }
        }
    }

    fn transmit(&mut self, me: usize) {
        let frames = 1 + self.rng.below(64);
        let mut buf = vec![0u8; 8 + self.cfg.max_frame_size];
        let (a, b) = self.sides.split_at_mut(1);
        let (from, to) = if me == 0 { (&mut a[0], &mut b[0]) } else { (&mut b[0], &mut a[0]) };
        for _ in 0..frames {
            let Some(n) = from.s.poll_transmit(self.now, &mut buf) else { break };
            let (f, len) = Repr::parse_prefix(&buf[..n], self.cfg.version).unwrap();
            assert_eq!(len, n);
            match f.cmd {
                Cmd::Psh => {
                    assert!(!f.payload.is_empty() && f.payload.len() <= self.cfg.max_frame_size);
                    assert!(!to.fin_seen.contains(&f.sid), "PSH after FIN on {}", f.sid);
                    assert!(self.syn_seen.contains(&f.sid), "PSH before SYN on {}", f.sid);
                }
                Cmd::Syn => assert!(self.syn_seen.insert(f.sid), "second SYN for {}", f.sid),
                Cmd::Fin => {
                    assert!(self.syn_seen.contains(&f.sid), "FIN before SYN on {}", f.sid);
                    assert!(to.fin_seen.insert(f.sid), "second FIN on {}", f.sid);
                }
                Cmd::Upd => assert_eq!(self.cfg.version, 2),
                Cmd::Nop => {}
            }
            to.inbox.extend(&buf[..n]);
        }
    }

    fn deliver(&mut self, me: usize) {
        let now = self.now;
        let side = &mut self.sides[me];
        while side.s.wants_input() && !side.inbox.is_empty() {
            let take = (1 + self.rng.below(5000)).min(side.inbox.len());
            let chunk: Vec<u8> = side.inbox.drain(..take).collect();
            side.s.handle_input(now, &chunk).unwrap();
        }
        if !side.inbox.is_empty() {
            self.counts.gated += 1;
        }
    }

    fn finished(&self) -> bool {
        self.sides.iter().all(|s| s.apps.is_empty() && s.inbox.is_empty())
    }
}

fn transfer(cfg: Config, seed: u64, streams: usize, max_len: usize) -> (u64, Counts) {
    let mut sim = Sim::new(cfg, seed, max_len);
    let mut opened = 0;
    for step in 0..200_000 {
        // Streams open over time, mostly from the client, some from the server (even ids).
        if opened < streams && step % 3 == 0 {
            sim.open(if opened % 5 == 4 { 1 } else { 0 });
            opened += 1;
        }
        sim.step();
        if opened == streams && sim.finished() {
            let [c, s] = &sim.sides;
            assert_eq!(c.done + s.done, 2 * streams);
            assert_eq!((c.s.num_streams(), s.s.num_streams()), (0, 0));
            assert_eq!(c.s.receive_budget(), sim.cfg.max_receive_buffer as i64);
            assert_eq!(s.s.receive_budget(), sim.cfg.max_receive_buffer as i64);
            let bytes = c.s.stats().bytes_out + s.s.stats().bytes_out;
            assert_eq!(bytes, c.s.stats().bytes_in + s.s.stats().bytes_in);
            assert_eq!(c.s.stats().discarded_frames + s.s.stats().discarded_frames, 0);
            return (bytes, sim.counts);
        }
    }
    let pending: Vec<_> = sim.sides.iter().map(|s| s.apps.keys().copied().collect::<Vec<_>>()).collect();
    panic!("transfer stalled; streams still open: {pending:?}");
}

fn configs() -> Vec<(&'static str, Config)> {
    let mut out = Vec::new();
    for (name, base) in [("deb", Config::kcptun_deb()), ("new", Config::kcptun_new())] {
        for half_close in [false, true] {
            out.push((name, Config { half_close, ..base.clone() }));
        }
    }
    out
}

#[test]
fn bulk_transfer_many_streams_random_chunking() {
    for (i, (name, cfg)) in configs().into_iter().enumerate() {
        let (bytes, counts) = transfer(cfg.clone(), 0x5eed + i as u64, 24, 200_000);
        assert!(bytes > 3_000_000, "{name}: only {bytes} bytes moved");
        assert_eq!(counts.after_peer_fin > 0, cfg.half_close, "{name}: {counts:?}");
    }
}

#[test]
fn bulk_transfer_with_tight_buffers() {
    // Small budgets everywhere: the receiver's token bucket runs dry (wants_input false), v2 windows
    // stall and reopen on UPD, send buffers fill (Writable), frames are short.
    for (i, (name, base)) in configs().into_iter().enumerate() {
        let cfg = Config {
            max_receive_buffer: 16 * 1024,
            max_stream_buffer: 8 * 1024,
            max_send_buffer: 6000,
            max_frame_size: 1000,
            ..base
        };
        let half_close = cfg.half_close;
        let (bytes, counts) = transfer(cfg, 0xbad + i as u64, 16, 60_000);
        assert!(bytes > 300_000, "{name}: only {bytes} bytes moved");
        assert!(counts.gated > 0 && counts.writable_events > 0, "{name}: {counts:?}");
        assert_eq!(counts.after_peer_fin > 0, half_close, "{name}: {counts:?}");
    }
}

/// Frames straight from one session into the other.
fn pump(from: &mut Session, to: &mut Session) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 8 + 65_535];
    let mut frames = Vec::new();
    while let Some(n) = from.poll_transmit(T0, &mut buf) {
        to.handle_input(T0, &buf[..n]).unwrap();
        frames.push(buf[..n].to_vec());
    }
    frames
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// spec §5.5 / §9.12: a sender stops at 262144 unacknowledged bytes and resumes on the receiver's UPDs,
/// sent on the first read and every MaxStreamBuffer/2 read since.
#[test]
fn v2_window_stalls_at_256k_and_resumes_on_upd() {
    let sender_cfg = Config { max_send_buffer: 1 << 20, ..Config::kcptun_new() };
    let receiver_cfg = Config { max_stream_buffer: 65_536, ..Config::kcptun_new() };
    let mut c = Session::new(Role::Client, sender_cfg, T0).unwrap();
    let mut s = Session::new(Role::Server, receiver_cfg, T0).unwrap();
    let id = c.open_stream().unwrap();
    let data = vec![0x5a; 1 << 20];
    assert_eq!(c.stream_write(id, &data), Ok(262_144), "initial peer window");
    assert_eq!(c.stream_write(id, &data), Ok(0));
    pump(&mut c, &mut s);
    assert_eq!(c.stream_write(id, &data), Ok(0), "still stalled: the receiver has not read");
    assert!(events(&mut c).is_empty());
    let mut written = 262_144u32;
    let mut consumed = 0u32;
    let mut buf = [0u8; 8192];
    let mut upds = Vec::new();
    while consumed < 262_144 {
        consumed += s.stream_read(id, &mut buf).unwrap() as u32;
        for f in pump(&mut s, &mut c) {
            let (r, _) = Repr::parse_prefix(&f, 2).unwrap();
            assert_eq!(r.cmd, Cmd::Upd);
            let u = kcpd_smux::wire::Update::new_checked(r.payload).unwrap();
            assert_eq!(u.window(), 65_536);
            upds.push(u.consumed());
            // Writable exactly when inflight (written - consumed) drops below the advertised window.
            let inflight = written - u.consumed();
            let writable = events(&mut c) == [Event::Writable(id)];
            assert_eq!(writable, inflight < 65_536, "UPD consumed {}", u.consumed());
            if writable {
                let room = 65_536 - inflight;
                assert_eq!(c.stream_write(id, &data), Ok(room as usize));
                written += room;
                pump(&mut c, &mut s);
            }
        }
    }
    assert_eq!(upds, [8192, 40_960, 73_728, 106_496, 139_264, 172_032, 204_800, 237_568]);
}

#[test]
fn upd_claiming_more_than_sent_is_err_consumed() {
    let mut c = Session::new(Role::Client, Config::kcptun_new(), T0).unwrap();
    let id = c.open_stream().unwrap();
    assert_eq!(c.stream_write(id, b"abc"), Ok(3));
    // UPD consumed 4 > 3 written.
    c.handle_input(T0, &[2, 4, 8, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0x20, 0]).unwrap();
    assert_eq!(c.stream_write(id, b"d"), Err(Error::Consumed(id)));
    assert!(!c.is_closed(), "a stream error, as Go's ErrConsumed from Write");
    c.handle_input(T0, &[2, 4, 8, 0, 3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0x20, 0]).unwrap();
    assert_eq!(c.stream_write(id, b"d"), Ok(1));
}

#[test]
fn control_frames_go_first_and_fin_follows_the_data() {
    let mut c = Session::new(Role::Client, Config::kcptun_new(), T0).unwrap();
    let mut s = Session::new(Role::Server, Config::kcptun_new(), T0).unwrap();
    let a = c.open_stream().unwrap();
    c.stream_write(a, &[1; 20_000]).unwrap();
    c.stream_close(a).unwrap();
    assert!(events(&mut c).is_empty(), "not closed while data waits");
    let b = c.open_stream().unwrap();
    let frames = pump(&mut c, &mut s);
    let kinds: Vec<(u8, u32, usize)> =
        frames.iter().map(|f| (f[1], u32::from_le_bytes(f[4..8].try_into().unwrap()), f.len() - 8)).collect();
    assert_eq!(kinds, [(0, a, 0), (0, b, 0), (2, a, 8192), (2, a, 8192), (2, a, 3616), (1, a, 0)]);
    assert_eq!(events(&mut c), [Event::Closed(a)]);
    assert_eq!(c.stream_write(a, b"x"), Err(Error::UnknownStream(a)));
}

#[test]
fn psh_fairness_v1_by_frames_v2_by_bytes() {
    for version in [1u8, 2] {
        let cfg = Config { version, max_frame_size: 1000, max_send_buffer: 1 << 20, ..Config::default() };
        let mut c = Session::new(Role::Client, cfg, T0).unwrap();
        let (a, b) = (c.open_stream().unwrap(), c.open_stream().unwrap());
        let mut buf = [0u8; 2000];
        while c.poll_transmit(T0, &mut buf).is_some() {}
        // a has a head start of 20 frames; b then joins with small writes (v1) or big ones (v2).
        c.stream_write(a, &[0; 100_000]).unwrap();
        for _ in 0..20 {
            c.poll_transmit(T0, &mut buf).unwrap();
        }
        c.stream_write(b, &[0; 100_000]).unwrap();
        let mut order = Vec::new();
        for _ in 0..40 {
            let n = c.poll_transmit(T0, &mut buf).unwrap();
            order.push((u32::from_le_bytes(buf[4..8].try_into().unwrap()), n - 8));
        }
        // b starts at the scheduler's clock rather than at 0, so the two alternate instead of b sending
        // 20 frames first (smux shaper.go fairness without starving the older stream).
        let a_count = order.iter().filter(|(sid, _)| *sid == a).count();
        assert!((19..=21).contains(&a_count), "v{version}: {order:?}");
        assert!(order.windows(3).all(|w| !(w[0].0 == w[1].0 && w[1].0 == w[2].0)), "v{version}: {order:?}");
    }
}

/// With one stream sending full 1000-byte frames and another kept at 100 queued bytes, v2 (fair by
/// bytes) gives each the same bytes, v1 (fair by frames) the same number of frames.
#[test]
fn v2_shares_bytes_v1_shares_frames() {
    for version in [1u8, 2] {
        let cfg = Config { version, max_frame_size: 1000, max_send_buffer: 1 << 20, ..Config::default() };
        let mut c = Session::new(Role::Client, cfg, T0).unwrap();
        let (a, b) = (c.open_stream().unwrap(), c.open_stream().unwrap());
        let mut buf = [0u8; 2000];
        while c.poll_transmit(T0, &mut buf).is_some() {}
        assert!(c.stream_write(a, &[0; 1_000_000]).unwrap() >= 262_144, "v2: the initial peer window");
        let (mut bytes, mut frames) = (BTreeMap::<u32, usize>::new(), BTreeMap::<u32, usize>::new());
        let mut b_empty = true;
        for _ in 0..1100 {
            if b_empty {
                assert_eq!(c.stream_write(b, &[0; 100]), Ok(100));
            }
            let n = c.poll_transmit(T0, &mut buf).unwrap() - 8;
            let sid = u32::from_le_bytes(buf[4..8].try_into().unwrap());
            b_empty = sid == b;
            *bytes.entry(sid).or_default() += n;
            *frames.entry(sid).or_default() += 1;
        }
        if version == 2 {
            assert!(bytes[&a].abs_diff(bytes[&b]) <= 1000, "v2 bytes {bytes:?}");
            assert_eq!(frames[&b], 1000);
        } else {
            assert!(frames[&a].abs_diff(frames[&b]) <= 1, "v1 frames {frames:?}");
            assert_eq!(bytes[&a], 10 * bytes[&b]);
        }
    }
}

#[test]
fn short_output_buffers() {
    let mut c = Session::new(Role::Client, Config::kcptun_new(), T0).unwrap();
    let id = c.open_stream().unwrap();
    c.stream_write(id, &[7; 100]).unwrap();
    assert_eq!(c.poll_transmit(T0, &mut [0u8; 15]), None, "needs room for an UPD");
    let mut buf = [0u8; 16];
    assert_eq!(c.poll_transmit(T0, &mut buf), Some(8));
    assert_eq!(c.poll_transmit(T0, &mut buf), Some(16));
    assert_eq!(&buf[..8], &[2, 2, 8, 0, 3, 0, 0, 0]);
}

#[test]
fn receive_budget_gates_input_and_reads_return_it() {
    let cfg = Config { max_receive_buffer: 10_000, max_stream_buffer: 10_000, ..Config::kcptun_new() };
    let mut c = Session::new(Role::Client, Config::kcptun_new(), T0).unwrap();
    let mut s = Session::new(Role::Server, cfg, T0).unwrap();
    let id = c.open_stream().unwrap();
    c.stream_write(id, &[1; 20_000]).unwrap();
    let mut buf = vec![0u8; 8 + 8192];
    let mut frames = Vec::new();
    while let Some(n) = c.poll_transmit(T0, &mut buf) {
        frames.push(buf[..n].to_vec());
    }
    let mut i = 0;
    while s.wants_input() {
        s.handle_input(T0, &frames[i]).unwrap();
        i += 1;
    }
    assert_eq!(i, 3, "SYN, 8192, 8192: budget 10000 spent");
    assert_eq!(s.receive_budget(), 10_000 - 16_384);
    let mut rb = [0u8; 8192];
    assert_eq!(s.stream_read(id, &mut rb), Ok(8192));
    assert_eq!(s.receive_budget(), 1808);
    assert!(s.wants_input());
    s.handle_input(T0, &frames[3]).unwrap();
    assert!(!s.wants_input());
    assert_eq!(s.stream_read(id, &mut rb), Ok(8192));
    assert!(s.wants_input());
    // Closing a stream hands back what it held.
    assert_eq!(s.receive_budget(), 10_000 - 3616);
    s.stream_close(id).unwrap();
    assert_eq!(s.receive_budget(), 10_000);
}

#[test]
fn psh_for_unknown_or_closed_streams_is_discarded_and_counted() {
    let mut s = Session::new(Role::Server, Config::kcptun_deb(), T0).unwrap();
    let mut input = vec![1, 2, 3, 0, 9, 0, 0, 0, b'a', b'b', b'c'];
    input.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0]);
    s.handle_input(T0, &input).unwrap();
    s.stream_close(3).unwrap();
    s.handle_input(T0, &[1, 2, 2, 0, 3, 0, 0, 0, b'x', b'y', 1, 1, 0, 0, 3, 0, 0, 0]).unwrap();
    let st = s.stats();
    assert_eq!((st.discarded_frames, st.discarded_bytes, st.unknown_fin), (2, 5, 1));
    assert_eq!(s.receive_budget(), Config::kcptun_deb().max_receive_buffer as i64);
    assert_eq!(st.frames_in.psh, 2);
}

#[test]
fn accept_backlog_gates_input() {
    let mut s = Session::new(Role::Server, Config::kcptun_deb(), T0).unwrap();
    for sid in 0..ACCEPT_BACKLOG as u32 {
        assert!(s.wants_input());
        s.handle_input(T0, &[1, 0, 0, 0, sid as u8, (sid >> 8) as u8, 0, 0]).unwrap();
    }
    assert!(!s.wants_input(), "smux recvLoop blocks on a full accept backlog");
    assert_eq!(s.poll_event(), Some(Event::Accepted(0)));
    assert!(s.wants_input());
}

#[test]
fn readable_is_raised_once_until_drained() {
    let mut s = Session::new(Role::Server, Config::kcptun_deb(), T0).unwrap();
    s.handle_input(T0, &[1, 0, 0, 0, 3, 0, 0, 0, 1, 2, 1, 0, 3, 0, 0, 0, b'a', 1, 2, 1, 0, 3, 0, 0, 0, b'b']).unwrap();
    assert_eq!(events(&mut s), [Event::Accepted(3), Event::Readable(3)]);
    let mut buf = [0u8; 8];
    assert_eq!(s.stream_read(3, &mut buf), Ok(1));
    s.handle_input(T0, &[1, 2, 1, 0, 3, 0, 0, 0, b'c']).unwrap();
    assert!(events(&mut s).is_empty(), "not drained yet: no new event");
    assert_eq!(s.stream_read(3, &mut buf), Ok(1));
    assert_eq!(s.stream_read(3, &mut buf), Ok(1));
    assert_eq!(s.stream_read(3, &mut buf), Err(Error::WouldBlock));
    // A frame split across inputs is readable only once complete (as Go's whole-frame pushBytes).
    s.handle_input(T0, &[1, 2, 2, 0, 3, 0, 0, 0, b'd']).unwrap();
    assert_eq!(s.stream_read(3, &mut buf), Err(Error::WouldBlock));
    assert!(events(&mut s).is_empty());
    s.handle_input(T0, b"e").unwrap();
    assert_eq!(events(&mut s), [Event::Readable(3)]);
    s.handle_input(T0, &[1, 1, 0, 0, 3, 0, 0, 0]).unwrap();
    assert_eq!(events(&mut s), [Event::PeerFinished(3)]);
    assert_eq!(s.stream_read(3, &mut buf), Ok(2));
    assert_eq!(s.stream_read(3, &mut buf), Ok(0));
    assert_eq!(s.stream_read(3, &mut buf), Ok(0));
}

#[test]
fn protocol_error_kills_the_session_but_buffered_data_stays_readable() {
    let mut s = Session::new(Role::Server, Config::kcptun_new(), T0).unwrap();
    let e = s.handle_input(T0, &[2, 0, 0, 0, 3, 0, 0, 0, 2, 2, 1, 0, 3, 0, 0, 0, b'z', 2, 9, 0, 0, 0, 0, 0, 0]);
    assert_eq!(e, Err(Error::Protocol(kcpd_smux::FrameError::UnknownCmd(9))));
    assert!(s.is_closed() && !s.wants_input());
    let reason = CloseReason::Protocol(kcpd_smux::FrameError::UnknownCmd(9));
    assert_eq!(events(&mut s), [Event::Accepted(3), Event::Readable(3), Event::SessionClosed(reason)]);
    let mut buf = [0u8; 8];
    assert_eq!(s.stream_read(3, &mut buf), Ok(1));
    assert_eq!(s.stream_read(3, &mut buf), Err(Error::SessionClosed(reason)));
    assert_eq!(s.poll_transmit(T0, &mut [0u8; 64]), None, "no UPD from a dead session");
    assert_eq!(s.stream_write(3, b"x"), Err(Error::SessionClosed(reason)));
    assert_eq!(s.open_stream(), Err(Error::SessionClosed(reason)));
    assert_eq!(s.stream_close(3), Ok(()));
    assert_eq!(s.stats().protocol_errors, 1);
}

#[test]
fn keepalive_between_two_live_sessions_then_a_silent_peer() {
    let cfg = Config::kcptun_new();
    let mut c = Session::new(Role::Client, cfg.clone(), T0).unwrap();
    let mut s = Session::new(Role::Server, cfg, T0).unwrap();
    let mut now = T0;
    // Ten idle minutes, each side only sending NOPs: both stay up.
    while now < ms(600_000) {
        now = c.poll_timeout().unwrap().min(s.poll_timeout().unwrap());
        c.handle_timeout(now);
        s.handle_timeout(now);
        pump(&mut c, &mut s);
        pump(&mut s, &mut c);
    }
    assert!(!c.is_closed() && !s.is_closed());
    assert_eq!(c.stats().frames_out.nop, 60);
    // The server goes silent (its frames are lost): the client closes within two timeout periods.
    let silent_from = now;
    while !c.is_closed() {
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        s.handle_timeout(now);
        pump(&mut c, &mut s);
        let mut buf = [0u8; 64];
        while s.poll_transmit(now, &mut buf).is_some() {}
    }
    let silent = (now - silent_from).as_millis();
    assert!((30_000..=60_000).contains(&silent), "{silent}");
    assert_eq!(c.close_reason(), Some(CloseReason::KeepaliveTimeout));
}

#[test]
fn local_close() {
    let mut c = Session::new(Role::Client, Config::default(), T0).unwrap();
    let id = c.open_stream().unwrap();
    c.close();
    assert_eq!(events(&mut c), [Event::SessionClosed(CloseReason::Local)]);
    assert_eq!(c.poll_transmit(T0, &mut [0u8; 64]), None, "Session.Close sends nothing");
    assert_eq!(c.stream_read(id, &mut [0u8; 4]), Err(Error::SessionClosed(CloseReason::Local)));
    c.close();
    assert!(events(&mut c).is_empty());
}

/// A server configured with version 0 adopts its client's version from the first frame, for both
/// versions, stays silent until then, and rejects a client that was not told its version.
#[test]
fn server_detects_the_client_version() {
    for ver in [1u8, 2] {
        let mut client = Session::new(Role::Client, Config { version: ver, ..Config::kcptun_new() }, T0).unwrap();
        let mut server = Session::new(Role::Server, Config { version: 0, ..Config::kcptun_new() }, T0).unwrap();
        assert_eq!(server.version(), 0);
        server.handle_timeout(ms(20_000)); // a keepalive NOP is due, but the version is unknown: nothing goes out
        let mut buf = vec![0u8; 8 + 65_535];
        assert_eq!(server.poll_transmit(ms(20_000), &mut buf), None);
        let sid = client.open_stream().unwrap();
        client.stream_write(sid, &vec![7u8; 300_000]).unwrap();
        let frames = pump(&mut client, &mut server);
        assert!(frames.iter().all(|f| f[0] == ver));
        assert_eq!(server.version(), ver);
        assert!(events(&mut server).contains(&Event::Accepted(sid)));
        let mut got = 0;
        let mut rbuf = vec![0u8; 65_536];
        while let Ok(n @ 1..) = server.stream_read(sid, &mut rbuf) {
            got += n;
        }
        assert!(got > 0);
        let back = pump(&mut server, &mut client);
        assert!(!back.is_empty() && back.iter().all(|f| f[0] == ver), "NOP, and UPD under v2, in the client's version");
    }
    assert!(Session::new(Role::Client, Config { version: 0, ..Config::kcptun_new() }, T0).is_err());
    let mut server = Session::new(Role::Server, Config { version: 0, ..Config::kcptun_new() }, T0).unwrap();
    assert!(server.handle_input(T0, &[3, 0, 0, 0, 1, 0, 0, 0]).is_err(), "version 3 is no version");
}
