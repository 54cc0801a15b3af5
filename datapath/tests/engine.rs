//! End to end over real loopback sockets: kcpd client and server engines with a TCP echo target.
#![allow(clippy::disallowed_methods)] // tests time themselves

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::event::{Event, EventSink, SessionEnd};
use kcpd_datapath::io::Backend;
use kcpd_datapath::proto::conn::ConnConfig;
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_datapath::shard::{Endpoint, Engine, Role, TunnelConfig};

mod common;
use common::usable;

fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    a
}

fn cfg(role: Role, backend: Backend, threads: usize) -> TunnelConfig {
    let conn = ConnConfig {
        smux: kcpd_smux::Config { half_close: true, ..kcpd_smux::Config::kcptun_new() },
        ..ConnConfig::new(
            Arc::new(PacketCrypto::from_password(Method::Aes128, "engine-test")),
            SessionConfig {
                nodelay: Mode::Fast3.nodelay(),
                snd_wnd: 1024,
                rcv_wnd: 1024,
                ..SessionConfig::kcptun_client()
            },
        )
    };
    TunnelConfig { sockbuf: Some(4 << 20), ..common::tunnel(role, conn, backend, threads) }
}

fn pair(backend: Backend, threads: usize, conns: usize) -> (Engine, Engine, SocketAddr) {
    let target = echo_server();
    let server = Engine::start(cfg(
        Role::Server { listen: vec!["127.0.0.1:0".parse().unwrap()], target: Endpoint::Tcp(target) },
        backend,
        threads,
    ))
    .unwrap();
    let remote = server.udp_addrs().to_vec();
    let client = Engine::start(cfg(
        Role::Client { listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), remote, conns },
        backend,
        threads,
    ))
    .unwrap();
    let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
    (server, client, local)
}

fn echo_through(local: SocketAddr, total: usize, seed: u8) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    let mut r = s.try_clone().unwrap();
    let expect = data.clone();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0u8; expect.len()];
        r.read_exact(&mut got).unwrap();
        assert!(got == expect, "echo differs");
    });
    s.write_all(&data).unwrap();
    reader.join().unwrap();
    t.elapsed()
}

fn echo_64_mb(backend: Backend) {
    if !usable(backend) {
        return;
    }
    let (server, client, local) = pair(backend, 2, 1);
    let took = echo_through(local, 64 << 20, 1);
    let s = server.snmp();
    eprintln!(
        "{backend}: 64 MB echoed in {took:?}; server in {} out {} retrans {}",
        s.in_pkts, s.out_pkts, s.retrans_segs
    );
    assert_eq!(s.curr_estab, 1);
    drop(client);
    drop(server);
}

fn many_connections_over_two_sessions(backend: Backend) {
    if !usable(backend) {
        return;
    }
    let (server, _client, local) = pair(backend, 2, 2);
    let hs: Vec<_> = (0..16).map(|i| std::thread::spawn(move || echo_through(local, 1 << 20, i as u8))).collect();
    for h in hs {
        h.join().unwrap();
    }
    let st = server.stats();
    assert_eq!(st.iter().map(|s| s.pipes_opened).sum::<u64>(), 16, "every connection reached the target");
    let snmp = server.snmp();
    assert_eq!(snmp.max_conn, 2, "MaxConn is the peak of the engine-wide total: {snmp:?}");
}

/// Kernel UDP receive drops (system-wide, from /proc/net/snmp): datagrams the kernel lost before any
/// socket saw them, so no counter of ours can have seen them.
fn kernel_udp_drops() -> u64 {
    let t = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = t.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else { return 0 };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .filter(|(k, _)| *k == "InErrors")
        .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
        .sum()
}

/// Random bytes, truncated datagrams and datagrams sealed with the wrong key, sprayed at a listening server
/// during a transfer: each is counted (InCsumErrors, or InErrs when too short for the header) and dropped;
/// the real session finishes its echo byte-exact and no session is created.
fn garbage_is_counted_and_dropped(backend: Backend) {
    if !usable(backend) {
        return;
    }
    let (server, _client, local) = pair(backend, 2, 1);
    let targets = server.udp_addrs().to_vec();
    let before = kernel_udp_drops();
    let stop = Arc::new(AtomicBool::new(false));
    let sprayer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let right = PacketCrypto::from_password(Method::Aes128, "engine-test");
            let wrong = PacketCrypto::from_password(Method::Aes128, "not-the-key");
            let mut rng = NonceGen::new();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) || sent < 300 {
                let len = (next() % 1400) as usize;
                let mut d: Vec<u8> = (0..len.max(40)).map(|_| next() as u8).collect();
                match sent % 3 {
                    0 => d.truncate(len),
                    1 => {
                        // A well-formed datagram cut short.
                        right.seal(&mut rng, &mut d).unwrap();
                        d.truncate((next() as usize) % (d.len() - 1));
                    }
                    _ => wrong.seal(&mut rng, &mut d).unwrap(),
                }
                for t in &targets {
                    sock.send_to(&d, t).unwrap();
                    sent += 1;
                }
                if sent.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            sent
        })
    };
    echo_through(local, 16 << 20, 3);
    stop.store(true, Ordering::Relaxed);
    let sent = sprayer.join().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let lost_in_kernel = kernel_udp_drops() - before;
    let s = server.snmp();
    let counted = s.in_csum_errors + s.in_errs;
    eprintln!("{backend}: {sent} garbage datagrams, counted {counted} ({s:?}); kernel drops {lost_in_kernel}");
    assert!(counted <= sent && counted + lost_in_kernel >= sent, "sent {sent} counted {counted}");
    assert_eq!(s.curr_estab, 1, "garbage opened no session");
    assert_eq!(s.passive_opens, 1);
    // And the session still works after the storm.
    echo_through(local, 1 << 20, 4);
}

/// A target that echoes, except connections whose first byte is `S`: those are never read again.
fn picky_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut parked = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut first = [0u8; 1];
            if s.read_exact(&mut first).is_err() {
                continue;
            }
            if first[0] == b'S' {
                parked.push(s);
                continue;
            }
            std::thread::spawn(move || {
                if s.write_all(&first).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    a
}

/// smux v2: a stream whose target stops reading stalls alone (per-stream window); another stream of the
/// same session keeps moving.
fn stalled_stream_does_not_block_its_session(backend: Backend) {
    if !usable(backend) {
        return;
    }
    let target = picky_target();
    let server = Engine::start(cfg(
        Role::Server { listen: vec!["127.0.0.1:0".parse().unwrap()], target: Endpoint::Tcp(target) },
        backend,
        1,
    ))
    .unwrap();
    let client = Engine::start(cfg(
        Role::Client {
            listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
            remote: server.udp_addrs().to_vec(),
            conns: 1,
        },
        backend,
        1,
    ))
    .unwrap();
    let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
    let mut stuck = TcpStream::connect(local).unwrap();
    stuck.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    // Far more than every buffer on the way (smux window, pipes, socket buffers) can hold.
    let blob = vec![7u8; 1 << 20];
    let mut pushed = 0usize;
    let t = Instant::now();
    stuck.write_all(b"S").unwrap();
    while t.elapsed() < Duration::from_secs(10) {
        match stuck.write(&blob) {
            Ok(n) => pushed += n,
            Err(_) => break,
        }
    }
    assert!(pushed < 64 << 20, "the stalled stream was not held back ({pushed} bytes taken)");
    // The same session still carries another stream.
    let took = echo_through(local, 4 << 20, 9);
    eprintln!("{backend}: stalled stream holds {pushed} bytes; a second stream echoed 4 MB in {took:?}");
    assert_eq!(server.snmp().curr_estab, 1, "one session carried both streams");
}

fn start_pair(server_cfg: TunnelConfig, client_cfg: TunnelConfig) -> (Engine, Engine, SocketAddr) {
    let server = Engine::start(server_cfg).unwrap();
    let mut client_cfg = client_cfg;
    if let Role::Client { remote, .. } = &mut client_cfg.role {
        *remote = server.udp_addrs().to_vec();
    }
    let client = Engine::start(client_cfg).unwrap();
    let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
    (server, client, local)
}

/// Route `c`'s events to the returned queue.
fn with_events(c: &mut TunnelConfig) -> Receiver<Event> {
    let (sink, rx) = EventSink::channel(1024);
    c.events = Some(sink);
    rx
}

/// Events of `rx` until `until` matches one (which is included), or 10 s pass.
fn events_until(rx: &Receiver<Event>, until: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(e) = rx.recv_deadline(deadline) {
        let done = until(&e);
        out.push(e);
        if done {
            return out;
        }
    }
    panic!("no such event within 10 s; got {out:#?}");
}

fn server_role(target: SocketAddr) -> Role {
    Role::Server { listen: vec!["127.0.0.1:0".parse().unwrap()], target: Endpoint::Tcp(target) }
}

fn client_role() -> Role {
    Role::Client { listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), remote: Vec::new(), conns: 1 }
}

/// A kcpd server without `--smuxver` (version 0: detect) serves smux v1 (DEB) and v2 (NEW) clients.
#[test]
fn server_detects_smux_version_per_session() {
    let target = echo_server();
    let mut scfg = cfg(server_role(target), Backend::Mmsg, 1);
    scfg.conn.smux = kcpd_smux::Config { version: 0, ..kcpd_smux::Config::kcptun_new() };
    scfg.conn.compress = true;
    let server = Engine::start(scfg).unwrap();
    for (i, smux) in [kcpd_smux::Config::kcptun_deb(), kcpd_smux::Config::kcptun_new()].into_iter().enumerate() {
        let mut ccfg = cfg(client_role(), Backend::Mmsg, 1);
        ccfg.conn.smux = smux;
        ccfg.conn.compress = true;
        if let Role::Client { remote, .. } = &mut ccfg.role {
            *remote = server.udp_addrs().to_vec();
        }
        let client = Engine::start(ccfg).unwrap();
        let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
        echo_through(local, 2 << 20, i as u8);
    }
    assert_eq!(server.snmp().passive_opens, 2);
}

/// `--QPP` on both ends: streams carry through; on the wire side of the server (its target) a QPP
/// client without a QPP server delivers exactly the qpp v1.1.25 ciphertext of what was sent.
#[test]
fn qpp_wraps_stream_payloads() {
    use kcpd_datapath::shard::service::QppSetup;
    let key = b"qpp tunnel key";
    let qpp = Some(Arc::new(QppSetup::new(key, 61)));
    let target = echo_server();
    let (mut s, mut c) = (cfg(server_role(target), Backend::Mmsg, 1), cfg(client_role(), Backend::Mmsg, 1));
    s.conn.qpp = qpp.clone();
    c.conn.qpp = qpp.clone();
    let (_server, _client, local) = start_pair(s, c);
    echo_through(local, 4 << 20, 5);

    // Only the client wraps: the target sees ciphertext.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let mut c = cfg(client_role(), Backend::Mmsg, 1);
    c.conn.qpp = qpp;
    let (_server, _client, local) = start_pair(cfg(server_role(sink_addr), Backend::Mmsg, 1), c);
    let plain: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
    let mut conn = TcpStream::connect(local).unwrap();
    conn.write_all(&plain).unwrap();
    let (mut t, _) = sink.accept().unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut seen = vec![0u8; plain.len()];
    t.read_exact(&mut seen).unwrap();
    let mut expect = plain.clone();
    let pads = kcpd_crypto::qpp::Qpp::new(key, 61);
    pads.encrypt(&mut kcpd_crypto::qpp::Prng::new(key), &mut expect);
    assert_ne!(seen, plain);
    assert!(seen == expect, "the stream carries qpp ciphertext, byte for byte");
}

/// `--ratelimit` paces everything a session sends: 2 MB at 1 MB/s cannot arrive in much less than 2 s.
#[test]
fn rate_limit_paces_a_session() {
    let target = echo_server();
    let mut c = cfg(client_role(), Backend::Mmsg, 1);
    c.conn.rate_limit = 1_000_000;
    let (_server, _client, local) = start_pair(cfg(server_role(target), Backend::Mmsg, 1), c);
    let took = echo_through(local, 2_000_000, 6);
    eprintln!("2 MB through a 1 MB/s session in {took:?}");
    assert!(took >= Duration::from_millis(1700), "took {took:?}");
}

/// `--autoexpire`: after expiry new connections get a fresh session; the old one serves its streams until
/// `--scavengettl` after expiry, then is closed with them.
#[test]
fn autoexpire_and_scavenger() {
    let target = echo_server();
    let mut c = cfg(client_role(), Backend::Mmsg, 1);
    c.autoexpire_ms = 1000;
    c.scavenge_ttl_ms = 1000;
    let events = with_events(&mut c);
    let (server, _client, local) = start_pair(cfg(server_role(target), Backend::Mmsg, 1), c);
    let mut old = TcpStream::connect(local).unwrap();
    old.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    old.read_exact(&mut b).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // Expired: the old stream still works, a new connection opens a second session.
    old.write_all(b"pong").unwrap();
    old.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"pong");
    echo_through(local, 100_000, 7);
    assert_eq!(server.snmp().passive_opens, 2);
    // Scavenged 1 s after expiry: the old stream ends.
    old.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let r = old.read(&mut b);
    assert!(matches!(r, Ok(0) | Err(_)) && t.elapsed() < Duration::from_secs(4), "{r:?} after {:?}", t.elapsed());
    // The new session lives on.
    echo_through(local, 100_000, 8);
    // The operator saw it: the first session expired, then the scavenger closed it and its stream.
    let seen = events_until(&events, |e| matches!(e, Event::SessionClosed { end: SessionEnd::Scavenged, .. }));
    let first = match &seen[0] {
        Event::SessionOpened { id, by_peer: false, smux: Some(2) } => *id,
        e => panic!("{e:?}"),
    };
    assert!(seen.iter().any(|e| matches!(e, Event::SessionExpired { id } if *id == first)), "{seen:#?}");
    assert!(seen.iter().any(|e| matches!(e, Event::StreamClosed { id, sid: 3, .. } if *id == first)), "{seen:#?}");
    assert!(matches!(seen.last(), Some(Event::SessionClosed { id, .. }) if *id == first), "{seen:#?}");
}

/// An unreachable target closes that stream only, counted; the session carries the next stream.
#[test]
fn unreachable_target_closes_only_its_stream() {
    let spot = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = spot.local_addr().unwrap();
    drop(spot); // nothing listens there now
    let mut scfg = cfg(server_role(target), Backend::Mmsg, 1);
    let events = with_events(&mut scfg);
    let (server, _client, local) = start_pair(scfg, cfg(client_role(), Backend::Mmsg, 1));
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut b = [0u8; 16];
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "the stream ends");
    let st = server.stats();
    assert_eq!(st.iter().map(|x| x.target_connect_failed).sum::<u64>(), 1);
    // The target comes up: the same session serves the next connection.
    let l = TcpListener::bind(target).unwrap();
    std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        c.write_all(&buf).unwrap();
    });
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"again").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"again");
    drop(s);
    let snmp = server.snmp();
    assert_eq!((snmp.passive_opens, snmp.curr_estab), (1, 1), "one session throughout");
    // The operator saw one session, one failed dial (no stream lines for it), then the second stream.
    let seen = events_until(&events, |e| matches!(e, Event::StreamClosed { .. }));
    assert!(matches!(&seen[0], Event::SessionOpened { by_peer: true, .. }), "{seen:#?}");
    let failed: Vec<_> = seen.iter().filter(|e| matches!(e, Event::TargetDialFailed { .. })).collect();
    assert!(
        matches!(failed.as_slice(), [Event::TargetDialFailed { target: Endpoint::Tcp(t), error }]
            if *t == target && error.kind() == std::io::ErrorKind::ConnectionRefused),
        "{seen:#?}"
    );
    let streams: Vec<_> = seen.iter().filter(|e| matches!(e, Event::StreamOpened { .. })).collect();
    assert!(
        matches!(streams.as_slice(), [Event::StreamOpened { sid: 5, app: Endpoint::Tcp(t), by_peer: true, .. }] if *t == target),
        "{seen:#?}"
    );
}

/// A client without `--smuxver` meets a server that speaks only v1 (as Debian's kcptun does): the first
/// session dies of the mismatch, the operator is told why, and the next session speaks v1 and works.
#[test]
fn client_falls_back_to_the_servers_smux_version() {
    let target = echo_server();
    let quick = |v| kcpd_smux::Config { version: v, keepalive_interval_ms: 300, ..kcpd_smux::Config::kcptun_new() };
    let mut s = cfg(server_role(target), Backend::Mmsg, 1);
    s.conn.smux = quick(1);
    let server_events = with_events(&mut s);
    let mut c = cfg(client_role(), Backend::Mmsg, 1);
    c.conn.smux = quick(2);
    c.smux_fallback = true;
    let events = with_events(&mut c);
    let (_server, _client, local) = start_pair(s, c);
    let mut first = TcpStream::connect(local).unwrap();
    first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    first.write_all(b"v2?").unwrap();
    let mut b = [0u8; 3];
    assert!(matches!(first.read(&mut b), Ok(0) | Err(_)), "the v2 stream cannot work");
    let seen = events_until(&events, |e| matches!(e, Event::SmuxFallback { .. }));
    let closed = seen.iter().find_map(|e| match e {
        Event::SessionClosed { mismatch, smux, .. } => Some((*mismatch, *smux)),
        _ => None,
    });
    let (Some(Some(m)), Some(Some(sm))) = (closed.map(|c| c.0), closed.map(|c| c.1)) else { panic!("{seen:#?}") };
    assert_eq!((m.ours, m.theirs, sm.frames_in), (2, Some(1), 0), "{seen:#?}");
    assert!(matches!(seen.last(), Some(Event::SmuxFallback { from: 2, to: 1, .. })));
    // The server took the client's v2 frame, closed the session as kcptun does, and acknowledged what it had
    // taken first: the client did not retransmit it into a new session at every RTO.
    let opened = server_events.try_iter().filter(|e| matches!(e, Event::SessionOpened { .. })).count();
    assert!(opened <= 3, "{opened} server sessions for one mismatched client");
    echo_through(local, 1 << 20, 11);
    let next = events_until(&events, |e| matches!(e, Event::SessionOpened { .. }));
    assert!(matches!(next.last(), Some(Event::SessionOpened { smux: Some(1), .. })), "{next:#?}");
    // Pinned (--smuxver given): no fallback.
    let mut s = cfg(server_role(target), Backend::Mmsg, 1);
    s.conn.smux = quick(1);
    let mut c = cfg(client_role(), Backend::Mmsg, 1);
    c.conn.smux = quick(2);
    let events = with_events(&mut c);
    let (_server, _client, local) = start_pair(s, c);
    let mut pinned = TcpStream::connect(local).unwrap();
    pinned.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    pinned.write_all(b"v2?").unwrap();
    assert!(matches!(pinned.read(&mut b), Ok(0) | Err(_)));
    let seen = events_until(&events, |e| matches!(e, Event::SessionClosed { .. }));
    assert!(matches!(seen.last(), Some(Event::SessionClosed { mismatch: Some(_), .. })), "{seen:#?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(events.try_iter().all(|e| !matches!(e, Event::SmuxFallback { .. })));
}

/// A server that never answers — nothing listening, or another key — is not a smux version mismatch: the
/// session times out, is reported as such, and the client keeps its version.
#[test]
fn a_silent_server_is_not_a_version_mismatch() {
    let quick = kcpd_smux::Config {
        version: 2,
        keepalive_interval_ms: 300,
        keepalive_timeout_ms: 1000,
        ..kcpd_smux::Config::kcptun_new()
    };
    let target = echo_server();
    let mut other_key = cfg(server_role(target), Backend::Mmsg, 1);
    other_key.conn.crypto = Arc::new(PacketCrypto::from_password(Method::Aes128, "another key"));
    let other_key = Engine::start(other_key).unwrap();
    let nobody = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for remote in [nobody, other_key.udp_addrs()[0]] {
        let mut c = cfg(client_role(), Backend::Mmsg, 1);
        c.conn.smux = quick.clone();
        c.smux_fallback = true;
        if let Role::Client { remote: r, .. } = &mut c.role {
            *r = vec![remote];
        }
        let events = with_events(&mut c);
        let client = Engine::start(c).unwrap();
        let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
        let mut s = TcpStream::connect(local).unwrap();
        s.write_all(b"anyone?").unwrap();
        let seen = events_until(&events, |e| matches!(e, Event::SessionClosed { .. }));
        assert!(
            matches!(seen.last(), Some(Event::SessionClosed { end: SessionEnd::KeepaliveTimeout, mismatch: None, .. })),
            "{remote}: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(events.try_iter().all(|e| !matches!(e, Event::SmuxFallback { .. })), "{remote}");
    }
}

per_backend!(
    echo_64_mb,
    many_connections_over_two_sessions,
    garbage_is_counted_and_dropped,
    stalled_stream_does_not_block_its_session,
);
