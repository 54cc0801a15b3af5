//! Per-conversation policy on the simulator: `proto::Endpoint`/`Conn` pairs on `io::sim` with virtual
//! time (each test runs in milliseconds of real time). The engine tests keep one real-socket smoke test per
//! feature; the assertions live here.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::sim::{Node, run_until};
use kcpd_crypto::{Method, PacketCrypto};
use kcpd_datapath::event::SessionEnd;
use kcpd_datapath::io::sim::{Link, Loss, SimNet};
use kcpd_datapath::proto::conn::{ConnConfig, QppSetup, Upper};
use kcpd_datapath::proto::endpoint::{ConnGauge, ConnHandle};
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_smux::Role;
use kcpd_time::Instant;
use kcpd_vectors::det_bytes;

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 40000);
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)), 29900);

fn conn_cfg(f: impl FnOnce(&mut ConnConfig)) -> Arc<ConnConfig> {
    let session = SessionConfig {
        nodelay: Mode::Fast3.nodelay(),
        snd_wnd: 1024,
        rcv_wnd: 1024,
        ..SessionConfig::kcptun_client()
    };
    let mut c = ConnConfig::new(Arc::new(PacketCrypto::from_password(Method::Aes128, "policy")), session);
    f(&mut c);
    Arc::new(c)
}

const SMUX_CLIENT: Upper = Upper::Smux { role: Role::Client, version: 2 };
const SMUX_SERVER: Upper = Upper::Smux { role: Role::Server, version: 2 };

/// A client conversation to a listening server over `link`.
fn pair(link: Link, ccfg: Arc<ConnConfig>, scfg: Arc<ConnConfig>, seed: u64) -> (SimNet, Node, Node, ConnHandle) {
    let net = SimNet::new(seed, link);
    let gauge = Arc::new(ConnGauge::default());
    let mut client = Node::new(&net, &[CLIENT], 1, gauge.clone());
    let mut server = Node::new(&net, &[SERVER], 2, gauge);
    server.listen(scfg, SMUX_SERVER);
    let h = client.connect(Instant::ZERO, 0, SERVER, 0xc0ffee, ccfg, SMUX_CLIENT);
    (net, client, server, h)
}

fn link(delay_ms: u32) -> Link {
    Link { delay_ms, queue_bytes: 8 << 20, ..Link::default() }
}

fn one_stream(server: &mut Node) -> (ConnHandle, Option<u32>) {
    let (h, app) = server.apps.iter().next().expect("a server conversation");
    (*h, *app.streams.keys().next().expect("a stream"))
}

// ---- --ratelimit ----

/// `--ratelimit` paces everything a session sends: 2 MB at 1 MB/s cannot arrive in much less than 2 s;
/// without it the same transfer takes a fraction of that.
#[test]
fn rate_limit_paces_a_session() {
    let data = det_bytes("ratelimit", 2_000_000);
    let mut took = Vec::new();
    for rate in [1_000_000, 0] {
        let (net, mut client, mut server, h) = pair(link(5), conn_cfg(|c| c.rate_limit = rate), conn_cfg(|_| {}), 11);
        client.open(h, data.clone(), false);
        let t = run_until(&net, &mut [&mut client, &mut server], 60_000, |n, _| n[1].received() == data.len());
        took.push(t);
    }
    eprintln!("2 MB: {} ms at 1 MB/s, {} ms unpaced (virtual)", took[0], took[1]);
    assert!(took[0] >= 1700, "paced transfer took {} ms", took[0]);
    assert!(took[1] < 1000, "unpaced transfer took {} ms", took[1]);
}

// ---- --autoexpire / --scavengettl ----

/// `--autoexpire`: after expiry the session takes no new streams but serves its own until `--scavengettl`
/// after expiry, then it is closed (with its streams), on its own timer.
#[test]
fn autoexpire_and_scavenger() {
    let (net, mut client, mut server, h) = pair(link(10), conn_cfg(|_| {}), conn_cfg(|_| {}), 12);
    client.conn(h).unwrap().set_expiry(Instant::ZERO, 1000, 1000);
    let sid = client.open(h, b"ping".to_vec(), false);
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[1].received() == 4);
    let c = client.conn(h).unwrap();
    assert!(!c.is_expired(net.instant()), "not before --autoexpire");
    // The reaper is armed: a driver that only waits on poll_timeout wakes for it.
    let reap = c.poll_timeout(net.instant());
    assert!(reap.is_some_and(|t| t <= Instant::from_millis(2000)), "{reap:?}");
    net.advance_to(1200);
    assert!(client.conn(h).unwrap().is_expired(net.instant()), "expired after --autoexpire");
    // Expired: its stream still carries bytes.
    client.stream(h, Some(sid)).out.extend_from_slice(b"pong");
    run_until(&net, &mut [&mut client, &mut server], 700, |n, _| n[1].received() == 8);
    assert!(client.closed.is_empty(), "not scavenged before --scavengettl");
    // Scavenged 1 s after expiry.
    let t = run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| !n[0].closed.is_empty());
    assert_eq!(client.closed, vec![(h, SessionEnd::Scavenged)]);
    assert!((2000..2100).contains(&t), "scavenged at {t} ms");
    // kcp-go has no close message: the server's session is untouched.
    assert_eq!(server.ep.len(), 1);
}

// ---- --closewait and half-close ----

/// kcptun (no half-close): when one direction of a stream ends, both close after `--closewait`; what the
/// other side still sends in that time arrives. The peer hears of the close only then.
#[test]
fn closewait_closes_both_directions_after_one_ends() {
    let cw = |c: &mut ConnConfig| {
        c.close_wait_ms = 500;
        c.smux.half_close = false;
    };
    let (net, mut client, mut server, h) = pair(link(10), conn_cfg(cw), conn_cfg(cw), 13);
    server.echo = true;
    let data = det_bytes("cw", 10_000);
    let sid = client.open(h, data.clone(), true);
    let up_at = run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[0].stream(h, Some(sid)).up_done);
    let over_at = run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[0].stream(h, Some(sid)).over);
    assert!((up_at + 500..up_at + 600).contains(&over_at), "finished at {up_at}, closed at {over_at}");
    assert_eq!(client.stream(h, Some(sid)).got, data, "the echo sent during --closewait was delivered");
    let eof_at = run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| {
        n[1].apps.values().any(|a| a.streams.values().any(|s| s.eof))
    });
    assert!(eof_at >= up_at + 500, "the server heard of the close at {eof_at}, before --closewait ran out");
    let (sh, ssid) = one_stream(&mut server);
    assert_eq!(server.stream(sh, ssid).got, data);
}

/// smux half-close between kcpd ends: the client finishing its direction (FIN) leaves the other open; the
/// server sends its whole answer afterwards; each direction ends on its own.
#[test]
fn half_close_keeps_the_other_direction() {
    let hc = |c: &mut ConnConfig| {
        c.close_wait_ms = 100;
        c.smux.half_close = true;
    };
    let (net, mut client, mut server, h) = pair(link(10), conn_cfg(hc), conn_cfg(hc), 14);
    let sid = client.open(h, b"request".to_vec(), true);
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| {
        n[1].apps.values().any(|a| a.streams.values().any(|s| s.eof))
    });
    let (sh, ssid) = one_stream(&mut server);
    // Long after --closewait, the stream still carries the answer.
    net.advance_to(u64::from(net.now()) + 2000);
    assert!(!server.stream(sh, ssid).over);
    let answer = det_bytes("answer", 256 << 10);
    let s = server.stream(sh, ssid);
    s.out = answer.clone();
    s.finish = true;
    run_until(&net, &mut [&mut client, &mut server], 30_000, |n, _| {
        n[0].stream(h, Some(sid)).over && n[1].stream(sh, ssid).over
    });
    assert_eq!(client.stream(h, Some(sid)).got, answer);
    assert!(client.stream(h, Some(sid)).eof && client.stream(h, Some(sid)).up_done);
}

// ---- smux keepalive ----

/// A peer that goes silent is declared dead after the keepalive timeout; a live but idle one never is.
#[test]
fn keepalive_timeout_ends_a_silent_session() {
    let ka = |c: &mut ConnConfig| {
        c.smux.keepalive_interval_ms = 1000;
        c.smux.keepalive_timeout_ms = 3000;
    };
    let (net, mut client, mut server, h) = pair(link(10), conn_cfg(ka), conn_cfg(ka), 15);
    client.open(h, b"hello".to_vec(), false);
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[1].received() == 5);
    // Idle but alive for 30 s: keepalives flow, nothing closes.
    let before = client.conn(h).unwrap().snmp().in_pkts;
    let t0 = net.now();
    run_until(&net, &mut [&mut client, &mut server], 40_000, |_, now| now >= t0 + 30_000);
    assert!(client.closed.is_empty() && server.closed.is_empty());
    assert!(client.conn(h).unwrap().snmp().in_pkts >= before + 25, "keepalives kept arriving");
    // The path dies.
    let dead = Link { loss: Loss::Bernoulli(1.0), ..link(10) };
    net.set_link(CLIENT, SERVER, dead);
    net.set_link(SERVER, CLIENT, dead);
    let t1 = net.now();
    let t = run_until(&net, &mut [&mut client, &mut server], 20_000, |n, _| !n[0].closed.is_empty());
    assert_eq!(client.closed, vec![(h, SessionEnd::KeepaliveTimeout)]);
    // smux checks once per timeout period that a frame arrived during it: dead after one to two periods.
    assert!((3000..=2 * 3000 + 100).contains(&(t - t1)), "closed {} ms after the path died", t - t1);
}

// ---- session replacement ----

/// A client that restarts from the same address with a new conv (first sn 0) replaces its old session on
/// the server (spec §4.2); the new one carries data.
#[test]
fn a_new_conversation_from_the_same_address_replaces_the_old() {
    let (net, mut client, mut server, h) = pair(link(5), conn_cfg(|_| {}), conn_cfg(|_| {}), 16);
    client.open(h, b"first".to_vec(), false);
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[1].received() == 5);
    let old = *server.apps.keys().next().unwrap();
    client.ep.remove(h);
    let h2 = client.connect(net.instant(), 0, SERVER, 0xbeef, conn_cfg(|_| {}), SMUX_CLIENT);
    client.open(h2, b"second".to_vec(), false);
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[1].received() == 6);
    assert_eq!(server.closed, vec![(old, SessionEnd::Replaced)]);
    assert_eq!(server.ep.len(), 1);
    assert_eq!(server.ep.get(*server.apps.keys().next().unwrap()).unwrap().conv(), 0xbeef);
    assert_eq!(server.ep.snmp().passive_opens, 2);
}

// ---- --QPP ----

/// `--QPP` wraps every smux stream's payload: both ends recover the bytes; on the wire they differ.
#[test]
fn qpp_wraps_stream_payloads_both_ways() {
    let qpp = Arc::new(QppSetup::new(b"policy-qpp", 61));
    let q = |c: &mut ConnConfig| c.qpp = Some(qpp.clone());
    let (net, mut client, mut server, h) = pair(link(5), conn_cfg(q), conn_cfg(q), 17);
    server.echo = true;
    let data = det_bytes("qpp", 100_000);
    let sid = client.open(h, data.clone(), false);
    run_until(&net, &mut [&mut client, &mut server], 10_000, |n, _| n[0].stream(h, Some(sid)).got.len() == data.len());
    assert_eq!(client.stream(h, Some(sid)).got, data);
    assert_eq!(server.apps.values().next().unwrap().streams.values().next().unwrap().got, data);
    // Without QPP on the server, what it reads is the pad's output, not the bytes.
    let (net, mut client, mut server, h) = pair(link(5), conn_cfg(q), conn_cfg(|_| {}), 18);
    client.open(h, data.clone(), false);
    run_until(&net, &mut [&mut client, &mut server], 10_000, |n, _| n[1].received() == data.len());
    assert_ne!(server.apps.values().next().unwrap().streams.values().next().unwrap().got, data);
}

// ---- the whole engine ----

/// Two shards' worth of endpoints (one process: a shared gauge), 24 client conversations spread over them
/// as SO_REUSEPORT spreads ports, under loss, reordering and duplication: every stream byte-exact both ways.
#[test]
fn two_shards_many_conversations_under_loss_and_reordering() {
    let link = Link {
        delay_ms: 15,
        jitter_ms: 3,
        loss: Loss::Bernoulli(0.03),
        reorder: 0.02,
        reorder_ms: 10,
        duplicate: 0.01,
        queue_bytes: 8 << 20,
        ..Link::default()
    };
    let net = SimNet::new(21, link);
    let gauge = Arc::new(ConnGauge::default());
    let shard_addr = |i: u8| SocketAddr::from(([10, 0, 0, 2 + i], 29900));
    let mut shards: Vec<Node> = (0..2).map(|i| Node::new(&net, &[shard_addr(i)], 10 + i, gauge.clone())).collect();
    let fec = conn_cfg(|c| {
        c.session.data_shards = 10;
        c.session.parity_shards = 3;
        c.compress = true;
    });
    for s in &mut shards {
        s.listen(fec.clone(), SMUX_SERVER);
        s.echo = true;
    }
    const N: usize = 24;
    let addrs: Vec<SocketAddr> = (0..N).map(|i| SocketAddr::from(([10, 0, 1, 1], 50000 + i as u16))).collect();
    let mut clients = Node::new(&net, &addrs, 3, gauge.clone());
    let mut want = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let h = clients.connect(
            Instant::ZERO,
            i,
            shard_addr((a.port() % 2) as u8),
            1000 + i as u32,
            fec.clone(),
            SMUX_CLIENT,
        );
        for k in 0..2 {
            let data = det_bytes(&format!("conv {i} stream {k}"), 24_000 + 5000 * k);
            let sid = clients.open(h, data.clone(), false);
            want.push((h, sid, data));
        }
    }
    let [s0, s1] = &mut shards[..] else { unreachable!() };
    let t = run_until(&net, &mut [&mut clients, s0, s1], 120_000, |n, _| {
        want.iter().all(|(h, sid, d)| n[0].stream(*h, Some(*sid)).got.len() == d.len())
    });
    for (h, sid, d) in &want {
        assert!(&clients.stream(*h, Some(*sid)).got == d, "a stream differs");
    }
    assert_eq!((shards[0].ep.len() + shards[1].ep.len(), gauge.current()), (N, 2 * N as u64));
    assert!(shards[0].ep.len() == N / 2 && shards[1].ep.len() == N / 2, "spread over both shards");
    let recovered: u64 = shards.iter().map(|s| s.ep.snmp().fec_recovered).sum();
    eprintln!("{N} conversations, {} streams echoed in {t} ms virtual; FEC recovered {recovered}", want.len());
    assert!(recovered > 0);
}

// ---- raw idle expiry (library listeners) ----

/// A raw conversation a listener accepted ends once its peer has been silent for `raw_idle_ms`; one that
/// keeps talking stays, and the dialling side never idles out.
#[test]
fn a_silent_raw_peer_is_forgotten_after_the_idle_timeout() {
    let idle = |c: &mut ConnConfig| c.raw_idle_ms = 5_000;
    let net = SimNet::new(21, link(10));
    let gauge = Arc::new(ConnGauge::default());
    let mut client = Node::new(&net, &[CLIENT], 1, gauge.clone());
    let mut server = Node::new(&net, &[SERVER], 2, gauge);
    server.listen(conn_cfg(idle), Upper::Raw);
    let h = client.connect(Instant::ZERO, 0, SERVER, 0xbeef, conn_cfg(idle), Upper::Raw);
    client.stream(h, None).out.extend_from_slice(b"ping");
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| n[1].received() == 4);
    // Talking every 3 s (under the timeout): nothing ends.
    let mut last = 0;
    for k in 0..5u8 {
        // Three quiet seconds (the clock moved on, nobody ran), then one byte.
        net.advance_to(u64::from(net.now()) + 3_000);
        last = net.now();
        client.stream(h, None).out.push(k);
        run_until(&net, &mut [&mut client, &mut server], 1_000, |n, _| n[1].received() == 5 + k as usize);
    }
    assert!(server.closed.is_empty(), "closed while the peer talked: {:?}", server.closed);
    assert_eq!(server.received(), 9);
    // Silent: gone 5 s after the last datagram (its ACKs included), the client untouched.
    let t = run_until(&net, &mut [&mut client, &mut server], 20_000, |n, _| !n[1].closed.is_empty());
    assert!(matches!(server.closed[..], [(_, SessionEnd::Idle)]), "{:?}", server.closed);
    assert!((5_000..=5_300).contains(&(t - last)), "ended {} ms after the last write", t - last);
    assert!(client.closed.is_empty());
}

// ---- stream limits ----

/// A client that opens 170 streams at once (a few datagrams of SYNs): the server hands them on at the
/// stream rate (excess SYNs wait, they are not refused) up to the stream cap; SYNs past the cap get a FIN.
#[test]
fn streams_per_session_are_capped_and_rate_limited() {
    let limits = |c: &mut ConnConfig| {
        c.max_streams = 100;
        c.stream_rate = (50, 20);
    };
    let (net, mut client, mut server, h) = pair(link(10), conn_cfg(|_| {}), conn_cfg(limits), 17);
    for i in 0..170u8 {
        client.open(h, vec![i], false);
    }
    let handed = |server: &Node| server.apps.values().map(|a| a.streams.len()).sum::<usize>();
    let t0 = net.now();
    run_until(&net, &mut [&mut client, &mut server], 2_000, |n, now| now >= t0 + 1_000 && handed(n[1]) > 0);
    let first_second = handed(&server);
    assert!((50..=72).contains(&first_second), "{first_second} streams handed on in the first second");
    let t = run_until(&net, &mut [&mut client, &mut server], 10_000, |n, _| handed(n[1]) == 100);
    assert!(t - t0 >= 1_500, "100 streams at 50/s after a burst of 20 took only {} ms", t - t0);
    // The 70 past the cap were closed at once: the client reads their end.
    run_until(&net, &mut [&mut client, &mut server], 5_000, |n, _| {
        n[0].apps[&h].streams.values().filter(|s| s.eof).count() == 70
    });
    let t1 = net.now();
    run_until(&net, &mut [&mut client, &mut server], 3_000, |_, now| now >= t1 + 2_000);
    assert_eq!(handed(&server), 100, "no stream past the cap was handed on");
    assert_eq!(server.received(), 100, "every handed-on stream delivered its byte");
}
