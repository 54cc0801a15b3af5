//! The front door over real loopback sockets: a captured session replayed at a kcpd server from many
//! ports opens no session and no target connection.
#![allow(clippy::disallowed_methods)] // tests time themselves

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kcpd_crypto::{Method, PacketCrypto};
use kcpd_datapath::io::Backend;
use kcpd_datapath::proto::conn::ConnConfig;
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_datapath::shard::{Endpoint, Engine, Role, TunnelConfig};

mod common;

fn cfg(role: Role, method: Method) -> TunnelConfig {
    let conn = ConnConfig::new(
        Arc::new(PacketCrypto::from_password(method, "front-door")),
        SessionConfig { nodelay: Mode::Fast3.nodelay(), ..SessionConfig::kcptun_client() },
    );
    common::tunnel(role, conn, Backend::Mmsg, 2)
}

/// A UDP relay between one client and `server` that keeps a copy of every datagram the client sends.
fn recording_relay(server: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut client = None;
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if from == server {
                if let Some(c) = client {
                    let _ = sock.send_to(&buf[..n], c);
                }
            } else {
                client = Some(from);
                log.lock().unwrap().push(buf[..n].to_vec());
                let _ = sock.send_to(&buf[..n], server);
            }
        }
    });
    (addr, seen)
}

#[test]
fn a_captured_session_replayed_from_many_ports_reaches_the_target_once() {
    for method in [Method::Aes, Method::Aes128Gcm] {
        let (target, accepted) = common::counting_echo();
        let server_role = Role::Server { listen: vec!["127.0.0.1:0".parse().unwrap()], target: Endpoint::Tcp(target) };
        let server = Engine::start(cfg(server_role, method)).unwrap();
        let (relay, captured) = recording_relay(server.udp_addrs()[0]);
        let client_role =
            Role::Client { listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), remote: vec![relay], conns: 1 };
        let client = Engine::start(cfg(client_role, method)).unwrap();
        let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
        let mut s = TcpStream::connect(local).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /pay?amount=100").unwrap();
        let mut got = [0u8; 19];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET /pay?amount=100");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Every datagram the client sent, replayed from 50 new ports (each lands on one of the two shards).
        let datagrams = captured.lock().unwrap().clone();
        assert!(!datagrams.is_empty());
        let mut attackers: Vec<UdpSocket> = (0..50).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for a in &mut attackers {
            for d in &datagrams {
                a.send_to(d, server.udp_addrs()[0]).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let replays = server.front().stats().replays;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "{method:?}: a replay reached the target");
        assert_eq!(server.snmp().curr_estab, 1, "{method:?}: a replay opened a session");
        assert!(replays >= 50 * datagrams.len() as u64 * 9 / 10, "{method:?}: {replays} replays counted");
        // The real session still works.
        s.write_all(b"again").unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"again");
    }
}

/// Valid first datagrams of 64 conversations, each sent again and again from 256 ports at once (both
/// shards race for every copy): 64 sessions, not one more.
#[test]
fn concurrent_replays_across_shards_open_each_session_once() {
    let (target, _) = common::counting_echo();
    let role = Role::Server { listen: vec!["127.0.0.1:0".parse().unwrap()], target: Endpoint::Tcp(target) };
    let server = Engine::start(cfg(role, Method::Aes)).unwrap();
    let to = server.udp_addrs()[0];
    let crypto = PacketCrypto::from_password(Method::Aes, "front-door");
    let mut rng = kcpd_crypto::NonceGen::from_seed([4; 32]);
    let originals: Vec<Vec<u8>> = (0..64u32)
        .map(|k| {
            let mut b = vec![0u8; crypto.header_len() + 24 + 100];
            let h = crypto.header_len();
            kcpd_datapath::proto::kcp::Header {
                conv: 0x5eed_0000 + k,
                cmd: 81,
                frg: 0,
                wnd: 1024,
                ts: k,
                sn: 0,
                una: 0,
                len: 100,
            }
            .write(&mut b[h..]);
            crypto.seal(&mut rng, &mut b).unwrap();
            b
        })
        .collect();
    let socks: Vec<UdpSocket> = (0..256).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    for round in 0..40 {
        for (i, s) in socks.iter().enumerate() {
            let _ = s.send_to(&originals[(i + round) % 64], to);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let opened = server.snmp().passive_opens;
    let replays = server.front().stats().replays;
    assert_eq!(opened, 64, "{opened} sessions from 64 originals ({replays} replays dropped)");
}
