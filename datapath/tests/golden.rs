//! Golden traces: the exact datagrams a simulated client/server pair exchanges, seeded, hashed per scenario
//! and compared with `tests/golden/traces.txt`. Recorded before the engine's composition layer was refactored
//! into `proto::Endpoint`/`Conn` (issue 11) so that the refactoring provably changes no byte on the wire,
//! and kept as the `--cc none` reference for later sender-side algorithms.
//!
//! Each scenario drives both ends the way a shard services a conversation (smux timeout, pump, streams,
//! pump, transmit), on `io::sim` with virtual time. Every datagram sent is folded into a SHA-256 with its
//! direction, send time and length. `KCPD_BLESS=1 cargo test -p kcpd-datapath --test golden` rewrites the
//! file; a change to it must be explained in the commit that makes it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::io::sim::{Link, Loss, SimNet, SimSocket};
use kcpd_datapath::io::{DatagramIo, RecvMeta, Transmit};
use kcpd_datapath::proto::conn::{Conn, ConnConfig, ConnEvent, Upper};
use kcpd_datapath::proto::endpoint::{DatagramEvent, Endpoint, ListenConfig};
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_smux::Role;
use kcpd_time::{Duration, Instant};
use kcpd_vectors::{det_bytes, sha256};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/traces.txt");

fn scenarios() -> Vec<Scenario> {
    let path = Link { delay_ms: 20, jitter_ms: 2, queue_bytes: 4 << 20, ..Link::default() };
    vec![
        Scenario {
            name: "bulk-clean-aes-v1-comp",
            link: Link { delay_ms: 5, ..path },
            mode: Mode::Fast,
            fec: None,
            method: Method::Aes,
            compress: true,
            client_smux: 1,
            server_smux: 1,
            workload: Workload::Bulk { streams: 2, bytes: 256 << 10 },
        },
        Scenario {
            name: "small-messages-salsa20-v2-idle",
            link: path,
            mode: Mode::Fast2,
            fec: None,
            method: Method::Salsa20,
            compress: false,
            client_smux: 2,
            server_smux: 0,
            workload: Workload::Echo { requests: 60, size: 64, idle_after: 30, idle_ms: 25_000 },
        },
        Scenario {
            name: "bulk-5pct-loss-gcm-v2",
            link: Link { loss: Loss::Bernoulli(0.05), ..path },
            mode: Mode::Fast3,
            fec: None,
            method: Method::Aes128Gcm,
            compress: false,
            client_smux: 2,
            server_smux: 2,
            workload: Workload::Bulk { streams: 3, bytes: 128 << 10 },
        },
        Scenario {
            name: "bulk-bursty-loss-fec10/3-aes128-v1",
            link: Link { loss: Loss::bursty(0.08, 3.0), reorder: 0.02, reorder_ms: 7, ..path },
            mode: Mode::Fast,
            fec: Some((10, 3)),
            method: Method::Aes128,
            compress: true,
            client_smux: 1,
            server_smux: 0,
            workload: Workload::Bulk { streams: 2, bytes: 192 << 10 },
        },
        Scenario {
            name: "echo-loss-fec5/2-none-v2-normal",
            link: Link { loss: Loss::Bernoulli(0.03), duplicate: 0.02, ..path },
            mode: Mode::Normal,
            fec: Some((5, 2)),
            method: Method::None,
            compress: true,
            client_smux: 2,
            server_smux: 2,
            workload: Workload::Echo { requests: 80, size: 700, idle_after: 0, idle_ms: 0 },
        },
    ]
}

fn load() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(FILE).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once(' ').map(|(n, h)| (n.to_owned(), h.trim().to_owned())))
        .collect()
}

#[test]
fn datagrams_match_the_golden_traces() {
    let bless = std::env::var_os("KCPD_BLESS").is_some();
    let want = load();
    let mut got = BTreeMap::new();
    let mut wrong = Vec::new();
    for (i, s) in scenarios().into_iter().enumerate() {
        let seed = 7000 + i as u64;
        let t = run(&s, seed);
        let line = t.summary();
        eprintln!("{:40} {line}", s.name);
        if want.get(s.name) != Some(&line) {
            wrong.push(format!("{}: want {:?}, got {line}", s.name, want.get(s.name)));
        }
        got.insert(s.name.to_owned(), line);
    }
    if bless {
        let mut out = String::from(
            "# Golden traces (datapath/tests/golden.rs): scenario, datagrams each way, last send time (ms),\n\
             # SHA-256 over every datagram (direction, time, length, bytes). Rewrite with KCPD_BLESS=1.\n",
        );
        for (n, l) in &got {
            out.push_str(&format!("{n} {l}\n"));
        }
        std::fs::write(FILE, out).unwrap();
        return;
    }
    assert!(wrong.is_empty(), "the wire changed:\n{}", wrong.join("\n"));
}

#[test]
fn the_trace_depends_on_the_seed() {
    // A trace that ignored its inputs would pass the golden test forever.
    let s = &scenarios()[2];
    assert_ne!(run(s, 1).summary(), run(s, 2).summary());
    assert_eq!(run(s, 3).summary(), run(s, 3).summary());
}

struct Scenario {
    name: &'static str,
    link: Link,
    mode: Mode,
    fec: Option<(usize, usize)>,
    method: Method,
    compress: bool,
    client_smux: u8,
    /// 0: the server detects the version from the first frame (kcpd's default).
    server_smux: u8,
    workload: Workload,
}

#[derive(Clone, Copy)]
enum Workload {
    /// `streams` streams, each moving `bytes` each way.
    Bulk { streams: usize, bytes: usize },
    /// One stream: `requests` requests of `size` bytes, each sent once the previous echo is back; after
    /// `idle_after` of them the client is silent for `idle_ms` (smux keepalives run).
    Echo { requests: usize, size: usize, idle_after: usize, idle_ms: u32 },
}

/// Every datagram sent, in order.
struct Trace {
    up: u64,
    down: u64,
    last_ms: u32,
    bytes: Vec<u8>,
}

impl Trace {
    fn record(&mut self, up: bool, now: Instant, d: &[u8]) {
        let now = now.ms32();
        if up {
            self.up += 1;
        } else {
            self.down += 1;
        }
        self.last_ms = now;
        self.bytes.push(up as u8);
        self.bytes.extend_from_slice(&now.to_le_bytes());
        self.bytes.extend_from_slice(&(d.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(d);
    }

    fn summary(&self) -> String {
        let h: String = sha256(&self.bytes).iter().map(|b| format!("{b:02x}")).collect();
        format!("up={} down={} last_ms={} sha256={h}", self.up, self.down, self.last_ms)
    }
}

/// Send what `s` has ready, as a shard does: packed into an arena, sealed in batches.
fn transmit(
    s: &mut Conn,
    sock: &mut SimSocket,
    dst: SocketAddr,
    now: Instant,
    rng: &mut NonceGen,
    up: bool,
    t: &mut Trace,
) -> usize {
    let mut arena = vec![0u8; 64 * 1500];
    let mut lens = [0usize; 64];
    let mut total = 0;
    loop {
        let n = s.poll_transmit(now, rng, &mut arena, &mut lens);
        let mut off = 0;
        for &l in &lens[..n] {
            let d = &arena[off..off + l];
            t.record(up, now, d);
            sock.send_batch(&[Transmit::new(dst, d)]).unwrap();
            off += l;
        }
        total += n;
        if n < lens.len() {
            return total;
        }
    }
}

fn due(now: Instant, t: Option<Instant>) -> bool {
    t.is_some_and(|t| t <= now)
}

/// Milliseconds (rounded up) from `now` until a deadline (0 if due).
fn until(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| (t - now).as_micros().div_ceil(1000))
}

/// The application on one end of the tunnel.
struct App {
    w: Workload,
    client: bool,
    ids: Vec<u32>,
    sent: Vec<usize>,
    got: Vec<Vec<u8>>,
    /// Echo (client): requests sent, and when the idle pause ends.
    requests: usize,
    resume_at: Option<Instant>,
    closed: bool,
}

impl App {
    fn new(w: Workload, client: bool) -> Self {
        App {
            w,
            client,
            ids: Vec::new(),
            sent: Vec::new(),
            got: Vec::new(),
            requests: 0,
            resume_at: None,
            closed: false,
        }
    }

    fn add(&mut self, id: u32) {
        self.ids.push(id);
        self.sent.push(0);
        self.got.push(Vec::new());
    }

    fn data(&self, i: usize, len: usize) -> Vec<u8> {
        det_bytes(&format!("{}-{i}", if self.client { "up" } else { "down" }), len)
    }

    fn done(&self) -> bool {
        match self.w {
            Workload::Bulk { streams, bytes } => self.got.len() == streams && self.got.iter().all(|g| g.len() == bytes),
            Workload::Echo { requests, size, .. } => {
                !self.client || self.got.first().is_some_and(|g| g.len() == requests * size)
            }
        }
    }

    /// Write and read what the workload calls for; returns bytes moved.
    fn drive(&mut self, s: &mut Conn, now: Instant) -> usize {
        let mut moved = 0;
        let mut buf = vec![0u8; 65536];
        for i in 0..self.ids.len() {
            let id = self.ids[i];
            while let Ok(n) = s.stream_read(Some(id), &mut buf) {
                if n == 0 {
                    break;
                }
                self.got[i].extend_from_slice(&buf[..n]);
                moved += n;
                if let (Workload::Echo { .. }, false) = (self.w, self.client) {
                    // The server echoes: what it read is what it owes.
                    let k = s.stream_write(Some(id), &buf[..n]).expect("stream open");
                    assert_eq!(k, n, "echo fits the stream buffer");
                    self.sent[i] += k;
                }
            }
            match self.w {
                Workload::Bulk { bytes, .. } => {
                    if self.sent[i] < bytes {
                        let out = self.data(i, bytes);
                        let n = s.stream_write(Some(id), &out[self.sent[i]..]).expect("stream open");
                        self.sent[i] += n;
                        moved += n;
                    }
                }
                Workload::Echo { requests, size, idle_after, idle_ms } if self.client => {
                    let answered = self.got[i].len() == self.requests * size;
                    if answered && self.requests < requests {
                        if self.requests == idle_after && idle_ms > 0 && self.resume_at.is_none() {
                            self.resume_at = Some(now + Duration::from_millis(u64::from(idle_ms)));
                        }
                        if self.resume_at.is_none_or(|t| due(now, Some(t))) {
                            let req = self.data(self.requests, size);
                            let n = s.stream_write(Some(id), &req).expect("stream open");
                            assert_eq!(n, size);
                            self.requests += 1;
                            moved += n;
                        }
                    }
                }
                Workload::Echo { .. } => {}
            }
        }
        if self.client && self.done() && !self.closed {
            self.closed = true;
            for &id in &self.ids {
                s.stream_detach(Some(id));
            }
        }
        moved
    }

    fn timeout(&self) -> Option<Instant> {
        self.resume_at
    }

    fn check(&self, peer: &App) {
        match self.w {
            Workload::Bulk { bytes, .. } => {
                for i in 0..self.got.len() {
                    assert!(self.got[i] == peer.data(i, bytes), "stream {i} differs");
                }
            }
            Workload::Echo { requests, size, .. } if self.client => {
                let want: Vec<u8> = (0..requests).flat_map(|r| self.data(r, size)).collect();
                assert!(self.got[0] == want, "echoes differ");
            }
            Workload::Echo { .. } => {}
        }
    }
}

/// Drain `c`'s events: streams the peer opened go to `app`; the conversation must not end.
fn events(c: &mut Conn, app: &mut App) {
    while let Some(e) = c.poll_event() {
        match e {
            ConnEvent::StreamOpened(id) => app.add(id),
            ConnEvent::Closed { .. } => panic!("{e:?}"),
            _ => {}
        }
    }
}

fn run(sc: &Scenario, seed: u64) -> Trace {
    let crypto = Arc::new(PacketCrypto::from_password(sc.method, "golden"));
    let (ds, ps) = sc.fec.unwrap_or((0, 0));
    let base = SessionConfig {
        nodelay: sc.mode.nodelay(),
        data_shards: ds,
        parity_shards: ps,
        ..SessionConfig::kcptun_client()
    };
    let conn_cfg = |session: SessionConfig| {
        let mut c = ConnConfig::new(crypto.clone(), session);
        c.smux = kcpd_smux::Config::kcptun_new();
        c.compress = sc.compress;
        Arc::new(c)
    };
    let ccfg = conn_cfg(SessionConfig { snd_wnd: 256, rcv_wnd: 256, ..base.clone() });
    let scfg = conn_cfg(SessionConfig { snd_wnd: 512, rcv_wnd: 512, ..base });
    let net = SimNet::new(seed, sc.link);
    let (ca, sa) = (SocketAddr::from(([10, 0, 0, 1], 5000)), SocketAddr::from(([10, 0, 0, 2], 29900)));
    let (mut csock, mut ssock) = (net.socket(ca), net.socket(sa));
    let mut crng = NonceGen::from_seed([seed as u8; 32]);
    let mut srng = NonceGen::from_seed([!seed as u8; 32]);
    let mut t = Trace { up: 0, down: 0, last_ms: 0, bytes: Vec::new() };

    let upper = Upper::Smux { role: Role::Client, version: sc.client_smux };
    let mut client = Conn::new(0x1234_5678 ^ seed as u32, ccfg, upper, false, Instant::ZERO).unwrap();
    let mut capp = App::new(sc.workload, true);
    let streams = match sc.workload {
        Workload::Bulk { streams, .. } => streams,
        Workload::Echo { .. } => 1,
    };
    for _ in 0..streams {
        let id = client.open_stream().unwrap();
        capp.add(id);
    }
    let mut server = Endpoint::default();
    let upper = Upper::Smux { role: Role::Server, version: sc.server_smux };
    server.listen(0, Arc::new(ListenConfig::new(scfg, upper))).unwrap();
    let mut sapp = App::new(sc.workload, false);

    let mut buf = vec![0u8; 1500];
    let mut meta = [RecvMeta::EMPTY];
    let mut finish_at: Option<Instant> = None;
    loop {
        let (now, ms) = (net.instant(), net.now());
        let mut progress = 0;
        // Client.
        while csock.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            let _ = client.handle_datagram(now, &mut buf[..meta[0].len]);
            progress += 1;
        }
        client.handle_timeout(now);
        progress += client.pump(now);
        events(&mut client, &mut capp);
        progress += capp.drive(&mut client, now);
        progress += client.pump(now);
        progress += transmit(&mut client, &mut csock, sa, now, &mut crng, true, &mut t);
        // Server.
        while ssock.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            let ev = server.handle_datagram(now, 0, meta[0].src, &mut buf[..meta[0].len]);
            assert!(!matches!(ev, DatagramEvent::Dropped(_)), "{ev:?}");
            progress += 1;
        }
        while server.accept().is_some() {}
        for h in server.handles() {
            let (_, addr) = server.path(h).unwrap();
            let s = server.get_mut(h).unwrap();
            s.handle_timeout(now);
            progress += s.pump(now);
            events(s, &mut sapp);
            progress += sapp.drive(s, now);
            progress += s.pump(now);
            progress += transmit(s, &mut ssock, addr, now, &mut srng, false, &mut t);
        }
        if capp.done() && sapp.done() {
            // Let the stream FINs and the last ACKs go out, then stop.
            let end = *finish_at.get_or_insert(now + Duration::from_millis(2000));
            if due(now, Some(end)) {
                break;
            }
        }
        if progress == 0 {
            let mut next = [client.poll_timeout(now), capp.timeout(), finish_at]
                .into_iter()
                .chain(server.iter_mut().map(|(_, s)| s.poll_timeout(now)))
                .filter_map(|x| until(now, x))
                .min()
                .unwrap_or(1000);
            if let Some(d) = net.next_delivery_ms() {
                next = next.min(d.saturating_sub(u64::from(ms)));
            }
            net.advance_to(u64::from(ms) + next.max(1));
        }
        assert!(net.now() < 600_000, "{}: stalled", sc.name);
    }
    capp.check(&sapp);
    sapp.check(&capp);
    t
}
