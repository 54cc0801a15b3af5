//! A simulator driver for `proto::Endpoint`/`Conn` (quinn-proto's `tests/util.rs` `Pair`, for N nodes):
//! each node is an endpoint with its sockets on `io::sim`, serviced the way a shard services it (timers,
//! pump, events, stream bytes, pump, transmit), with an application that writes, reads and finishes
//! streams. Virtual time jumps to the next deadline or delivery.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::NonceGen;
use kcpd_datapath::event::SessionEnd;
use kcpd_datapath::io::sim::{SimNet, SimSocket};
use kcpd_datapath::io::{DatagramIo, RecvMeta, Transmit};
use kcpd_datapath::proto::conn::{Conn, ConnConfig, ConnEvent, Upper};
use kcpd_datapath::proto::endpoint::{ConnHandle, DatagramEvent, Endpoint, ListenConfig, Shared};
use kcpd_time::Instant;

/// One direction of a stream, as the application sees it.
#[derive(Debug, Default)]
pub struct StreamApp {
    /// Bytes to send, and how many went into the stream.
    pub out: Vec<u8>,
    pub sent: usize,
    /// Sealed bytes the stream has not taken yet (every byte is sealed exactly once).
    pend: Vec<u8>,
    /// Finish the sending direction once `out` is sent.
    pub finish: bool,
    pub got: Vec<u8>,
    /// The peer's direction ended (read returned end of stream).
    pub eof: bool,
    pub up_done: bool,
    pub down_done: bool,
    /// The stream's life is over (closed here).
    pub over: bool,
    /// Echo what arrives (server applications).
    pub echo: bool,
}

/// A conversation's application state.
#[derive(Debug, Default)]
pub struct ConnApp {
    pub streams: BTreeMap<Option<u32>, StreamApp>,
}

/// An endpoint on the simulated network.
pub struct Node {
    pub ep: Endpoint,
    pub socks: Vec<SimSocket>,
    rng: NonceGen,
    pub apps: HashMap<ConnHandle, ConnApp>,
    /// Conversations that ended here, and why.
    pub closed: Vec<(ConnHandle, SessionEnd)>,
    /// Streams the peer opens echo what they receive.
    pub echo: bool,
}

impl Node {
    pub fn new(net: &SimNet, addrs: &[SocketAddr], seed: u8, shared: Arc<dyn Shared>) -> Self {
        Node {
            ep: Endpoint::new(shared),
            socks: addrs.iter().map(|a| net.socket(*a)).collect(),
            rng: NonceGen::from_seed([seed; 32]),
            apps: HashMap::new(),
            closed: Vec::new(),
            echo: false,
        }
    }

    /// Listen on every socket.
    pub fn listen(&mut self, cfg: Arc<ConnConfig>, upper: Upper) {
        let l = Arc::new(ListenConfig::new(cfg, upper));
        for k in 0..self.socks.len() {
            self.ep.listen(k, l.clone()).unwrap();
        }
    }

    /// Dial from socket `key` to `remote`.
    pub fn connect(
        &mut self,
        now: Instant,
        key: usize,
        remote: SocketAddr,
        conv: u32,
        cfg: Arc<ConnConfig>,
        upper: Upper,
    ) -> ConnHandle {
        let h = self.ep.connect(now, key, remote, conv, cfg, upper).unwrap();
        let mut app = ConnApp::default();
        if matches!(upper, Upper::Raw) {
            self.ep.get_mut(h).unwrap().stream_attach(None, false);
            app.streams.insert(None, StreamApp::default());
        }
        self.apps.insert(h, app);
        h
    }

    /// Open a stream on `h` that sends `data` (and finishes after it when `finish`).
    pub fn open(&mut self, h: ConnHandle, data: Vec<u8>, finish: bool) -> u32 {
        let c = self.ep.get_mut(h).unwrap();
        let sid = c.open_stream().unwrap();
        c.stream_attach(Some(sid), false);
        let s = StreamApp { out: data, finish, ..Default::default() };
        self.apps.entry(h).or_default().streams.insert(Some(sid), s);
        sid
    }

    /// Bytes every stream of this node received.
    pub fn received(&self) -> usize {
        self.apps.values().flat_map(|a| a.streams.values()).map(|s| s.got.len()).sum()
    }

    pub fn stream(&mut self, h: ConnHandle, sid: Option<u32>) -> &mut StreamApp {
        self.apps.get_mut(&h).unwrap().streams.get_mut(&sid).unwrap()
    }

    pub fn conn(&mut self, h: ConnHandle) -> Option<&mut Conn> {
        self.ep.get_mut(h)
    }

    /// One turn of a shard's loop at `now`; returns a measure of progress (0: nothing happened).
    pub fn step(&mut self, now: Instant) -> usize {
        let mut progress = 0;
        let mut buf = vec![0u8; 1500];
        let mut meta = [RecvMeta::EMPTY];
        for key in 0..self.socks.len() {
            while self.socks[key].recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
                progress += 1;
                let ev = self.ep.handle_datagram(now, key, meta[0].src, &mut buf[..meta[0].len]);
                if let DatagramEvent::Migrated(_) = ev {
                    while let Some((old, _, end)) = self.ep.poll_retired() {
                        self.apps.remove(&old);
                        self.closed.push((old, end));
                    }
                }
                if let DatagramEvent::New(h) = ev {
                    while let Some((old, _, end)) = self.ep.poll_retired() {
                        self.apps.remove(&old);
                        self.closed.push((old, end));
                    }
                    while self.ep.accept().is_some() {}
                    let mut app = ConnApp::default();
                    let c = self.ep.get_mut(h).unwrap();
                    if c.is_raw() {
                        c.stream_attach(None, false);
                        app.streams.insert(None, StreamApp { echo: self.echo, ..Default::default() });
                    }
                    self.apps.insert(h, app);
                }
            }
        }
        for h in self.ep.handles() {
            progress += self.service(h, now);
        }
        progress
    }

    fn service(&mut self, h: ConnHandle, now: Instant) -> usize {
        let Some(path) = self.ep.path(h) else { return 0 };
        let Some(c) = self.ep.get_mut(h) else { return 0 };
        let app = self.apps.entry(h).or_default();
        c.handle_timeout(now);
        let mut progress = c.pump(now);
        while let Some(e) = c.poll_event() {
            match e {
                ConnEvent::StreamOpened(sid) => {
                    c.stream_attach(Some(sid), false);
                    app.streams.insert(Some(sid), StreamApp { echo: self.echo, ..Default::default() });
                }
                ConnEvent::Closed { end, flush, .. } => {
                    if flush {
                        transmit(c, &mut self.socks, &path, now, &mut self.rng);
                    }
                    self.ep.remove(h);
                    self.apps.remove(&h);
                    self.closed.push((h, end));
                    return progress + 1;
                }
                _ => {}
            }
        }
        let mut chunk = vec![0u8; 16 << 10];
        for (&sid, s) in app.streams.iter_mut().filter(|(_, s)| !s.over) {
            // Local -> stream: seal once, write what the stream takes.
            loop {
                if s.pend.is_empty() && s.sent < s.out.len() {
                    let n = (s.out.len() - s.sent).min(16 << 10);
                    s.pend.extend_from_slice(&s.out[s.sent..s.sent + n]);
                    s.sent += n;
                    c.stream_seal(sid, &mut s.pend);
                }
                if s.pend.is_empty() {
                    break;
                }
                match c.stream_write(sid, &s.pend) {
                    Ok(0) => break,
                    Ok(n) => {
                        s.pend.drain(..n);
                        progress += n;
                    }
                    Err(_) => {
                        s.pend.clear();
                        s.sent = s.out.len();
                        break;
                    }
                }
            }
            if s.finish && !s.up_done && s.sent == s.out.len() && s.pend.is_empty() {
                s.up_done = true;
                c.stream_up_done(sid);
            }
            // Stream -> local.
            while !s.eof {
                match c.stream_read(sid, &mut chunk) {
                    Ok(0) => s.eof = true,
                    Ok(n) => {
                        s.got.extend_from_slice(&chunk[..n]);
                        if s.echo {
                            s.out.extend_from_slice(&chunk[..n]);
                        }
                        progress += n;
                    }
                    Err(kcpd_smux::Error::WouldBlock) => break,
                    Err(_) => s.eof = true,
                }
            }
            if s.eof && !s.down_done {
                s.down_done = true;
                c.stream_down_done(sid);
                progress += 1;
            }
            if sid.is_some() && c.stream_over(sid, now) {
                c.stream_detach(sid);
                s.over = true;
                progress += 1;
            }
        }
        progress += c.pump(now);
        progress + transmit(c, &mut self.socks, &path, now, &mut self.rng)
    }

    /// The earliest deadline of any conversation.
    pub fn next_timeout(&mut self, now: Instant) -> Option<u64> {
        self.ep.iter_mut().filter_map(|(_, c)| c.poll_timeout(now)).map(|t| (t - now).as_micros().div_ceil(1000)).min()
    }
}

fn transmit(
    c: &mut Conn,
    socks: &mut [SimSocket],
    path: &(usize, SocketAddr),
    now: Instant,
    rng: &mut NonceGen,
) -> usize {
    let mut arena = vec![0u8; 16 * 1500];
    let mut lens = [0usize; 16];
    let mut total = 0;
    loop {
        let n = c.poll_transmit(now, rng, &mut arena, &mut lens);
        let mut off = 0;
        for &l in &lens[..n] {
            socks[path.0].send_batch(&[Transmit::new(path.1, &arena[off..off + l])]).unwrap();
            off += l;
        }
        total += n;
        if n < lens.len() {
            return total;
        }
    }
}

/// Run `nodes` on `net` until `done` says so (checked after every turn) or `limit_ms` of virtual time
/// passed; returns the virtual time reached.
pub fn run_until(
    net: &SimNet,
    nodes: &mut [&mut Node],
    limit_ms: u64,
    mut done: impl FnMut(&mut [&mut Node], u32) -> bool,
) -> u32 {
    let start = u64::from(net.now());
    let mut turn = 0;
    loop {
        let (now, ms) = (net.instant(), net.now());
        let mut progress = 0;
        // Every node goes first in turn: a fixed order would queue one node's datagrams ahead of the
        // others' at every shared link, every millisecond.
        turn += 1;
        let k = turn % nodes.len().max(1);
        for i in (k..nodes.len()).chain(0..k) {
            progress += nodes[i].step(now);
        }
        if done(nodes, ms) {
            return ms;
        }
        assert!(u64::from(ms) - start < limit_ms, "not done after {limit_ms} ms of virtual time");
        if progress == 0 {
            let mut next = nodes.iter_mut().filter_map(|n| n.next_timeout(now)).min().unwrap_or(1000);
            if let Some(d) = net.next_delivery_ms() {
                next = next.min(d.saturating_sub(u64::from(ms)));
            }
            net.advance_to(u64::from(ms) + next.max(1));
        }
    }
}
