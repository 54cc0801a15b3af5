//! Migration (NAT rebinding) on simulated time: a client whose address changes keeps its conversation on a
//! kcpd server; old, replayed and foreign datagrams move nothing; a moved conversation sends at most 3× what
//! the new address sent until that address proves itself; shards hand a conversation over once.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::sim::{Node, run_until};
use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::io::sim::{Link, Loss, SimNet};
use kcpd_datapath::proto::conn::{AMPLIFICATION, ConnConfig, Upper};
use kcpd_datapath::proto::endpoint::{
    ConnGauge, ConnHandle, DatagramEvent, DropReason, Endpoint, ListenConfig, Migration, Shared,
};
use kcpd_datapath::proto::front::{FrontConfig, FrontDoor};
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_smux::Role;
use kcpd_time::{Duration, Instant};
use kcpd_vectors::det_bytes;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 9, 1)), 29900);
const CONV: u32 = 0xc0ffee;

fn conn_cfg(method: Method) -> Arc<ConnConfig> {
    let session =
        SessionConfig { nodelay: Mode::Fast3.nodelay(), snd_wnd: 256, rcv_wnd: 256, ..SessionConfig::kcptun_client() };
    Arc::new(ConnConfig::new(Arc::new(PacketCrypto::from_password(method, "migration")), session))
}

const SMUX_CLIENT: Upper = Upper::Smux { role: Role::Client, version: 2 };
const SMUX_SERVER: Upper = Upper::Smux { role: Role::Server, version: 2 };

/// The whole path on the simulator: an echo transfer through a server whose client is re-mapped by its NAT
/// `rebinds.len()` times mid-transfer (at the given virtual times) completes byte-exact on one server
/// conversation, which moved each time.
fn transfer_across_rebinds(method: Method, rebinds: &[(u64, SocketAddr)]) -> (Node, Arc<FrontDoor>) {
    let inside = addr(1, 40000);
    // 1 MB/s each way with a little loss: the transfer takes about 1.5 s, rebinds happen mid-way.
    let link = Link {
        delay_ms: 20,
        rate: Some(1 << 20),
        queue_bytes: 256 << 10,
        loss: Loss::Bernoulli(0.01),
        ..Link::default()
    };
    let net = SimNet::new(7, link);
    let front = Arc::new(FrontDoor::default());
    let mut client = Node::new(&net, &[inside], 1, Arc::new(ConnGauge::default()));
    let mut server = Node::new(&net, &[SERVER], 2, front.clone());
    server.echo = true;
    server.listen(conn_cfg(method), SMUX_SERVER);
    let h = client.connect(Instant::ZERO, 0, SERVER, CONV, conn_cfg(method), SMUX_CLIENT);
    let data = det_bytes("rebind", 1_500_000);
    let sid = client.open(h, data.clone(), false);
    let mut next = 0;
    run_until(&net, &mut [&mut client, &mut server], 60_000, |nodes, ms| {
        if next < rebinds.len() && u64::from(ms) >= rebinds[next].0 {
            net.rebind(inside, rebinds[next].1);
            next += 1;
            let got = nodes[0].stream(h, Some(sid)).got.len();
            assert!(got < data.len(), "rebind {next} after the transfer ended");
        }
        let c = nodes[0].stream(h, Some(sid));
        next == rebinds.len() && c.got.len() == data.len()
    });
    assert!(client.stream(h, Some(sid)).got == data, "{method:?}: the echo differs");
    (server, front)
}

#[test]
fn a_rebound_client_keeps_its_conversation_byte_exact() {
    let rebinds = [(300, addr(2, 50000)), (700, addr(2, 50001)), (1100, addr(3, 61000))];
    let (server, front) = transfer_across_rebinds(Method::Aes128, &rebinds);
    let s = server.ep.stats();
    assert_eq!(server.ep.len(), 1, "one conversation throughout");
    assert!(server.closed.is_empty(), "nothing ended: {:?}", server.closed);
    assert_eq!(s.migrated_in, 3, "{s:?}");
    let h = server.ep.handles()[0];
    assert_eq!(server.ep.path(h).map(|p| p.1), Some(addr(3, 61000)), "it follows the last address");
    assert_eq!(front.locate(CONV).map(|l| l.handle), Some(h));
    // The old addresses' late datagrams were dropped, not turned into conversations.
    assert_eq!(server.ep.snmp().passive_opens, 1);
}

#[test]
fn with_a_malleable_method_a_rebound_client_opens_nothing() {
    for method in [Method::Salsa20, Method::Xor, Method::None, Method::Null] {
        assert_eq!(Migration::for_method(method), Migration::Off);
    }
    // No migration: the rebound client's datagrams are dropped, counted. kcp-go would open a second
    // conversation for them, which can deliver nothing (its stream starts mid-way) and only serves an
    // attacker who changed an old datagram.
    let inside = addr(1, 40000);
    let net = SimNet::new(7, Link { delay_ms: 20, queue_bytes: 8 << 20, ..Link::default() });
    let mut client = Node::new(&net, &[inside], 1, Arc::new(ConnGauge::default()));
    let mut server = Node::new(&net, &[SERVER], 2, Arc::new(FrontDoor::default()));
    server.echo = true;
    server.listen(conn_cfg(Method::Salsa20), SMUX_SERVER);
    let h = client.connect(Instant::ZERO, 0, SERVER, CONV, conn_cfg(Method::Salsa20), SMUX_CLIENT);
    client.open(h, det_bytes("rebind", 300_000), false);
    run_until(&net, &mut [&mut client, &mut server], 10_000, |_, ms| ms >= 300);
    net.rebind(inside, addr(2, 50000));
    run_until(&net, &mut [&mut client, &mut server], 10_000, |nodes, _| nodes[1].ep.stats().migration_held >= 10);
    let s = server.ep.stats();
    assert_eq!((s.migrated_in, server.ep.len()), (0, 1), "{s:?}");
    assert_eq!(server.ep.snmp().passive_opens, 1);
    assert_eq!(server.ep.path(server.ep.handles()[0]).map(|p| p.1), Some(inside));
}

// ---- the endpoint, datagram by datagram ----

/// A client conversation (raw KCP) and server endpoints sharing one front door, driven by hand: which
/// datagram reaches which endpoint from which address is the test's choice.
struct Bench {
    now: Instant,
    client: Endpoint,
    ch: ConnHandle,
    servers: Vec<Endpoint>,
    front: Arc<FrontDoor>,
    rng: NonceGen,
}

impl Bench {
    fn new(method: Method, shards: usize, front: FrontConfig) -> Bench {
        let front = Arc::new(FrontDoor::new(front));
        let cfg = conn_cfg(method);
        let servers = (0..shards)
            .map(|i| {
                let mut ep = Endpoint::with_shard(front.clone(), i);
                ep.listen(0, Arc::new(ListenConfig::new(cfg.clone(), Upper::Raw))).unwrap();
                ep
            })
            .collect();
        let mut client = Endpoint::default();
        let ch = client.connect(Instant::ZERO, 0, SERVER, CONV, cfg, Upper::Raw).unwrap();
        client.get_mut(ch).unwrap().stream_attach(None, false);
        Bench { now: Instant::ZERO, client, ch, servers, front, rng: NonceGen::from_seed([9; 32]) }
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    /// What a conversation sends now (after writing `data` to it).
    fn out(conn: &mut kcpd_datapath::proto::conn::Conn, now: Instant, rng: &mut NonceGen, data: &[u8]) -> Vec<Vec<u8>> {
        if !data.is_empty() {
            let mut sealed = data.to_vec();
            conn.stream_seal(None, &mut sealed);
            let _ = conn.stream_write(None, &sealed);
        }
        conn.handle_timeout(now);
        conn.pump(now);
        let mut arena = vec![0u8; 64 * 1500];
        let mut lens = [0usize; 64];
        let mut v = Vec::new();
        loop {
            let n = conn.poll_transmit(now, rng, &mut arena, &mut lens);
            let mut off = 0;
            for &l in &lens[..n] {
                v.push(arena[off..off + l].to_vec());
                off += l;
            }
            if n < lens.len() {
                return v;
            }
        }
    }

    /// The client's datagrams now, after writing `data`.
    fn client_out(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let c = self.client.get_mut(self.ch).unwrap();
        Self::out(c, self.now, &mut self.rng, data)
    }

    /// Deliver a server datagram to the client.
    fn deliver_client(&mut self, d: &[u8]) {
        let ev = self.client.handle_datagram(self.now, 0, SERVER, &mut d.to_vec());
        assert!(matches!(ev, DatagramEvent::Existing(_)), "{ev:?}");
        let c = self.client.get_mut(self.ch).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while matches!(c.stream_read(None, &mut buf), Ok(n) if n > 0) {}
    }

    /// Give server `s` a datagram from `from`.
    fn deliver_server(&mut self, s: usize, from: SocketAddr, d: &[u8]) -> DatagramEvent {
        let ev = self.servers[s].handle_datagram(self.now, 0, from, &mut d.to_vec());
        while let Some(h) = self.servers[s].accept() {
            self.servers[s].get_mut(h).unwrap().stream_attach(None, false);
        }
        while self.servers[s].poll_retired().is_some() {}
        ev
    }

    /// The server conversation's datagrams now, after writing `data`.
    fn server_out(&mut self, s: usize, h: ConnHandle, data: &[u8]) -> Vec<Vec<u8>> {
        let (now, c) = (self.now, self.servers[s].get_mut(h).unwrap());
        Self::out(c, now, &mut self.rng, data)
    }

    /// Open the conversation from `from` on server 0 and exchange a few rounds (the server sends `bulk`).
    fn establish(&mut self, from: SocketAddr, bulk: usize) -> ConnHandle {
        let first = self.client_out(b"hello");
        let mut h = None;
        for d in &first {
            if let DatagramEvent::New(x) = self.deliver_server(0, from, d) {
                h = Some(x);
            }
        }
        let h = h.expect("a conversation");
        let mut data = det_bytes("bulk", bulk);
        for _ in 0..20 {
            self.tick(10);
            let n = data.len().min(64 << 10);
            let chunk: Vec<u8> = data.drain(..n).collect();
            for d in self.server_out(0, h, &chunk) {
                self.deliver_client(&d);
            }
            for d in self.client_out(b"more") {
                assert!(matches!(self.deliver_server(0, from, &d), DatagramEvent::Existing(_)));
            }
        }
        h
    }
}

#[test]
fn a_moved_conversation_sends_at_most_three_times_what_the_new_address_sent_until_it_proves_itself() {
    let (a, b) = (addr(1, 1000), addr(2, 2000));
    let mut t = Bench::new(Method::Aes, 1, FrontConfig::default());
    let h = t.establish(a, 64 << 10);
    t.tick(10);
    let moving = t.client_out(b"x");
    let first = &moving[0];
    assert_eq!(t.deliver_server(0, b, first), DatagramEvent::Migrated(h));
    assert_eq!(t.servers[0].path(h).map(|p| p.1), Some(b));
    // Plenty to send (a window of data), but the new address sent one datagram.
    let mut sent: usize = t.server_out(0, h, &det_bytes("window", 256 << 10)).iter().map(Vec::len).sum();
    for _ in 0..50 {
        t.tick(100);
        sent += t.server_out(0, h, &[]).iter().map(Vec::len).sum::<usize>();
    }
    let allowed = first.len() * AMPLIFICATION as usize;
    assert!(sent <= allowed, "sent {sent} bytes to an unproven address after receiving {}", first.len());
    assert!(t.servers[0].get(h).unwrap().poll_timeout(t.now).is_none_or(|d| d > t.now), "blocked, not spinning");
    // A second fresh datagram from there proves it: the window's worth goes out.
    t.tick(10);
    let second = t.client_out(b"y");
    assert_eq!(t.deliver_server(0, b, &second[0]), DatagramEvent::Existing(h));
    let after: usize = t.server_out(0, h, &[]).iter().map(Vec::len).sum();
    assert!(after > 20 * 1400, "only {after} bytes after the address proved itself");
    // A move to an address that never proves itself (a spoofed one), then back to the last address that
    // did: that needs no new proof.
    t.tick(10);
    let spoofed = t.client_out(b"z");
    assert_eq!(t.deliver_server(0, addr(66, 6666), &spoofed[0]), DatagramEvent::Migrated(h));
    assert!(!t.servers[0].get(h).unwrap().path_proven());
    t.tick(10);
    let back = t.client_out(b"w");
    assert_eq!(t.deliver_server(0, b, &back[0]), DatagramEvent::Migrated(h));
    assert!(t.servers[0].get(h).unwrap().path_proven());
    assert_eq!(t.servers[0].stats().migrated_in, 3);
}

#[test]
fn old_late_replayed_and_foreign_datagrams_move_nothing() {
    let (a, b, c) = (addr(1, 1000), addr(2, 2000), addr(3, 3000));
    // A short replay window, so that an old datagram passes the filter and meets the freshness rules.
    let cfg = FrontConfig { replay_window: Some(Duration::from_secs(1)), ..FrontConfig::default() };
    let mut t = Bench::new(Method::Aes, 1, cfg);
    let h = t.establish(a, 32 << 10);
    // Captured by an attacker, never delivered.
    t.tick(10);
    let withheld = t.client_out(b"withheld");
    t.tick(10);
    let delivered = t.client_out(b"delivered");
    for d in &delivered {
        assert_eq!(t.deliver_server(0, a, d), DatagramEvent::Existing(h));
    }
    // Replayed from a new address within the window: the filter.
    assert_eq!(t.deliver_server(0, b, &delivered[0]), DatagramEvent::Dropped(DropReason::Replay));
    // Withheld and sent later from a new address: older than what the conversation has seen.
    assert_eq!(t.deliver_server(0, b, &withheld[0]), DatagramEvent::Dropped(DropReason::Stale));
    // Past the window (the conversation heard newer datagrams since): stale, not a move, not a session.
    for _ in 0..30 {
        t.tick(100);
        for d in t.client_out(b"keepalive") {
            assert_eq!(t.deliver_server(0, a, &d), DatagramEvent::Existing(h));
        }
    }
    assert_eq!(t.deliver_server(0, c, &delivered[0]), DatagramEvent::Dropped(DropReason::Stale));
    assert_eq!(t.servers[0].path(h).map(|p| p.1), Some(a));
    assert_eq!(t.servers[0].len(), 1);
    assert_eq!(t.servers[0].stats().migration_stale, 2);
    // Another client that drew the same conv (its own clock, nothing received): not a move either.
    let mut other = Endpoint::default();
    let oh = other.connect(t.now, 0, SERVER, CONV, conn_cfg(Method::Aes), Upper::Raw).unwrap();
    other.get_mut(oh).unwrap().stream_attach(None, false);
    let mut rng = NonceGen::from_seed([3; 32]);
    let theirs = Bench::out(other.get_mut(oh).unwrap(), t.now + Duration::from_secs(3600), &mut rng, b"hi");
    assert_eq!(t.deliver_server(0, c, &theirs[0]), DatagramEvent::Dropped(DropReason::Stale));
    // After a move, the old address's late datagrams are stale.
    t.tick(10);
    let late = t.client_out(b"late");
    t.tick(10);
    let fresh = t.client_out(b"fresh");
    assert_eq!(t.deliver_server(0, b, &fresh[0]), DatagramEvent::Migrated(h));
    assert_eq!(t.deliver_server(0, a, &late[0]), DatagramEvent::Dropped(DropReason::Stale));
    assert_eq!(t.servers[0].path(h).map(|p| p.1), Some(b));
    assert_eq!(t.servers[0].snmp().passive_opens, 1);
}

#[test]
fn another_endpoint_asks_for_the_conversation_and_gets_it_once() {
    let (a, b) = (addr(1, 1000), addr(2, 2000));
    let mut t = Bench::new(Method::Aes128Gcm, 2, FrontConfig::default());
    let h0 = t.establish(a, 32 << 10);
    t.tick(10);
    let late = t.client_out(b"sent from the old address, arrives last");
    t.tick(10);
    let fresh = t.client_out(b"rebound");
    let mut buf = fresh[0].clone();
    let ho = match t.servers[1].handle_datagram(t.now, 0, b, &mut buf) {
        DatagramEvent::Elsewhere(ho) => ho,
        ev => panic!("{ev:?}"),
    };
    assert_eq!((ho.from.shard, ho.from.handle), (0, h0));
    // Asked for already: a second datagram meanwhile waits (dropped, counted), it does not ask again.
    let again = t.client_out(b"again");
    assert_eq!(t.deliver_server(1, b, &again[0]), DatagramEvent::Dropped(DropReason::NotMoved));
    let plain = buf[ho.range()].to_vec();
    let moving = t.servers[0].migrate_out(t.now, h0, ho.len, &plain).expect("fresh: handed over");
    assert_eq!(moving.from(), a);
    let h1 = t.servers[1].migrate_in(t.now, moving, 0, b, ho.len, &plain).expect("taken in");
    assert_eq!((t.servers[0].len(), t.servers[1].len()), (0, 1));
    assert_eq!(t.front.locate(CONV).map(|l| (l.shard, l.handle)), Some((1, h1)));
    assert_eq!(t.front.gauge().current(), 1, "still one live conversation");
    // It carries on there; the old address's late datagrams, landing on the old endpoint, ask the new one
    // and are found stale.
    t.tick(10);
    for d in t.client_out(b"on shard 1") {
        assert_eq!(t.deliver_server(1, b, &d), DatagramEvent::Existing(h1));
    }
    let mut late = late[0].clone();
    let ho = match t.servers[0].handle_datagram(t.now, 0, a, &mut late) {
        DatagramEvent::Elsewhere(ho) => ho,
        ev => panic!("{ev:?}"),
    };
    assert_eq!(ho.from.shard, 1);
    let r = t.servers[1].migrate_out(t.now, ho.from.handle, ho.len, &late[ho.range()]);
    assert!(matches!(r, Err(DropReason::Stale)));
    assert_eq!(t.servers[1].path(h1).map(|p| p.1), Some(b));
    // Ending there forgets its location.
    t.servers[1].remove(h1);
    assert_eq!(t.front.locate(CONV), None);
    assert_eq!(t.front.located(), 0);
}
