//! Fake TCP (`--tcp`) over real raw sockets and kernel connections, each test in a throwaway network
//! namespace (root): a dial and a listener exchange datagrams both ways, byte-exact; the firewall rules
//! exist while they live and are gone after; a dial to a closed port reports its end; a peer that goes away
//! is reported.
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_methods)] // tests time themselves

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kcpd_datapath::io::faketcp::{FakeTcpConfig, FakeTcpDial, FakeTcpListener};
use kcpd_datapath::io::{DatagramIo, RecvMeta, Transmit};
use kcpd_datapath::proto::faketcp::Shape;

mod common;
use common::netns::Netns;

/// This namespace's firewall, as text: nft's ruleset, or iptables' rules where nft is missing.
fn ruleset() -> String {
    let out = std::process::Command::new("nft").args(["list", "ruleset"]).output();
    let out = match out {
        Ok(o) if o.status.success() => o.stdout,
        _ => std::process::Command::new("iptables").args(["-S"]).output().map(|o| o.stdout).unwrap_or_default(),
    };
    String::from_utf8_lossy(&out).into_owned()
}

/// Wait until `io`'s descriptor is readable (or `ms` pass).
fn wait(io: &dyn DatagramIo, ms: i32) {
    let mut p = libc::pollfd { fd: io.raw_fd().unwrap(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// Everything `io` has now: (source, datagram).
fn recv_all(io: &mut dyn DatagramIo) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut store = vec![vec![0u8; 2048]; 16];
    loop {
        let mut meta = [RecvMeta::EMPTY; 16];
        let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
        let n = io.recv_batch(&mut bufs, &mut meta).unwrap();
        for (m, b) in meta[..n].iter().zip(&store) {
            assert!(!m.truncated);
            out.push((m.src, b[..m.len].to_vec()));
        }
        if n < 16 {
            return out;
        }
    }
}

fn datagram(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i * 131 + k * 7) as u8).collect()
}

fn exchange(shape: Shape, bind: &str) {
    let cfg = FakeTcpConfig { shape, ..FakeTcpConfig::default() };
    let mut l = FakeTcpListener::open(bind.parse().unwrap(), &cfg).unwrap();
    let port = l.local_addr().port();
    let server: SocketAddr =
        SocketAddr::new(if bind.starts_with('[') { "::1" } else { "127.0.0.1" }.parse().unwrap(), port);
    let mut d = FakeTcpDial::connect(server, &cfg).unwrap();
    assert!(ruleset().contains("kcpd_"), "no rule installed:\n{}", ruleset());
    // Until the handshake is over datagrams are dropped: the client repeats its first one, as KCP would.
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = loop {
        assert!(
            Instant::now() < deadline,
            "the server never got a datagram: dial {:?} {:?}, listener {:?} {:?}",
            d.flow_stats,
            d.stats(),
            l.flow_stats(),
            l.stats()
        );
        d.send_batch(&[Transmit::new(server, b"hello")]).unwrap();
        let _ = recv_all(&mut d);
        wait(&l, 20);
        if let Some((src, data)) = recv_all(&mut l).into_iter().next() {
            assert_eq!(data, b"hello");
            break src;
        }
    };
    assert_eq!(client, d.local());
    // Bursts each way, byte-exact and in order (loopback loses nothing at this pace).
    for round in 0..20 {
        let up: Vec<Vec<u8>> = (0..32).map(|i| datagram(round * 32 + i, 1 + (i * 97) % 1400)).collect();
        let msgs: Vec<Transmit> = up.iter().map(|p| Transmit::new(server, p)).collect();
        assert_eq!(d.send_batch(&msgs).unwrap(), msgs.len());
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < up.len() && Instant::now() < deadline {
            wait(&l, 20);
            got.extend(recv_all(&mut l).into_iter().filter(|(_, p)| p != b"hello").map(|(s, p)| {
                assert_eq!(s, client);
                p
            }));
        }
        assert_eq!(got, up, "round {round} upstream");
        let down: Vec<Vec<u8>> = (0..32).map(|i| datagram(7 + round * 32 + i, 1 + (i * 53) % 1400)).collect();
        let msgs: Vec<Transmit> = down.iter().map(|p| Transmit::new(client, p)).collect();
        assert_eq!(l.send_batch(&msgs).unwrap(), msgs.len());
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < down.len() && Instant::now() < deadline {
            wait(&d, 20);
            got.extend(recv_all(&mut d).into_iter().map(|(s, p)| {
                assert_eq!(s, server);
                p
            }));
        }
        assert_eq!(got, down, "round {round} downstream");
    }
    assert_eq!(l.connections(), 1);
    let fs = l.flow_stats();
    assert_eq!((fs.rx_out_of_window, fs.rx_stray_resets, fs.rx_malformed), (0, 0, 0), "{fs:?}");
    // The client goes: its FIN reaches the server (TTL back to 64), which reports the peer gone.
    drop(d);
    let deadline = Instant::now() + Duration::from_secs(5);
    let gone = loop {
        assert!(Instant::now() < deadline, "the server never noticed the client leave");
        wait(&l, 20);
        let _ = recv_all(&mut l);
        if let Some(p) = l.poll_closed() {
            break p;
        }
    };
    assert_eq!(gone, client);
    assert_eq!(l.connections(), 0);
    drop(l);
    let left = ruleset();
    assert!(!left.contains("kcpd_"), "rules left behind:\n{left}");
}

/// A raw IPv4 TCP packet from `src` to `dst` (the kernel writes the IP header): `seg` as given.
fn inject(raw: &socket2::Socket, dst: SocketAddr, seg: &[u8]) {
    let _ = raw.send_to(seg, &SocketAddr::new(dst.ip(), 0).into());
}

/// A TCP header (20 bytes) and payload.
fn tcp(src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(src_port.to_be_bytes());
    b.extend(dst_port.to_be_bytes());
    b.extend(seq.to_be_bytes());
    b.extend(ack.to_be_bytes());
    b.extend([5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    b.extend(payload);
    b
}

/// Garbage at a listener while a connection runs: segments of unknown connections, blind RSTs, data far
/// out of window, runts, a SYN flood from random ports — each counted and dropped; the real connection
/// keeps exchanging datagrams, and the flow table stays within its bound.
#[test]
fn garbage_segments_are_counted_and_the_connection_survives() {
    if !common::privileged("fake TCP (raw sockets, firewall rules, a network namespace)") {
        return;
    }
    let ns = Netns::bare("kcpd-ftcp-d");
    ns.run(|| {
        let cfg = FakeTcpConfig { max_flows: 64, ..FakeTcpConfig::default() };
        let mut l = FakeTcpListener::open("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let server = SocketAddr::new("127.0.0.1".parse().unwrap(), l.local_addr().port());
        let mut d = FakeTcpDial::connect(server, &cfg).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while recv_all(&mut l).is_empty() {
            assert!(Instant::now() < deadline, "no first datagram");
            d.send_batch(&[Transmit::new(server, b"hello")]).unwrap();
            let _ = recv_all(&mut d); // the SYN-ACK: the dial learns its sequence numbers
            wait(&l, 20);
        }
        let client = d.local();
        let raw =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::TCP)).unwrap();
        let p = server.port();
        // Injected in bursts the capture socket's buffer holds, each read before the next.
        let burst = |segs: Vec<Vec<u8>>, l: &mut FakeTcpListener| {
            for chunk in segs.chunks(50) {
                for seg in chunk {
                    inject(&raw, server, seg);
                }
                wait(l, 20);
                let got = recv_all(l);
                assert!(got.iter().all(|(_, p)| p == b"hello"), "garbage delivered: {got:?}");
            }
        };
        // Unknown connections (no SYN seen): data, ACKs.
        burst((0..200u16).map(|k| tcp(20000 + k, p, 1, 1, 0x18, b"junk")).collect(), &mut l);
        // A SYN flood from random ports: flows open unconfirmed, bounded by max_flows.
        burst((0..500u16).map(|k| tcp(40000 + k, p, u32::from(k), 0, 0x02, &[])).collect(), &mut l);
        // The real connection's 4-tuple: blind RSTs, and data far out of window.
        let cp = client.port();
        // In window but not exactly the expected sequence number: blind resets.
        let near = d.flow().seq().wrapping_add(1000);
        burst((0..50u32).map(|k| tcp(cp, p, near.wrapping_add(k), 0, 0x04, &[])).collect(), &mut l);
        // Half the sequence space away from what the listener expects (the dial's next sequence number).
        let far_seq = d.flow().seq().wrapping_add(0x8000_0000);
        burst((0..50u32).map(|k| tcp(cp, p, far_seq.wrapping_add(k), 1, 0x18, b"evil")).collect(), &mut l);
        // Runts: shorter than a TCP header, and a data offset past the end.
        let mut runt = tcp(cp, p, 1, 1, 0x18, &[]);
        runt.truncate(8);
        let mut far = tcp(cp, p, 1, 1, 0x18, &[]);
        far[12] = 15 << 4;
        burst(vec![runt; 20].into_iter().chain(vec![far; 20]).collect(), &mut l);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut i = 0;
        while got.len() < 100 && Instant::now() < deadline {
            let p = datagram(i, 200);
            d.send_batch(&[Transmit::new(server, &p)]).unwrap();
            i += 1;
            wait(&l, 5);
            got.extend(recv_all(&mut l).into_iter().map(|(s, p)| {
                assert_eq!(s, client, "only the real connection's datagrams");
                p
            }));
        }
        assert!(got.len() >= 100, "the connection stopped: {:?}", l.flow_stats());
        assert!(!got.iter().any(|p| p == b"junk" || p == b"evil"));
        let fs = l.flow_stats();
        assert!(fs.rx_no_flow >= 200, "{fs:?}");
        assert!(fs.rx_full > 0 && l.connections() == 1, "{fs:?}");
        assert!(fs.rx_stray_resets >= 50 && fs.rx_out_of_window >= 50, "{fs:?}");
        assert!(fs.rx_malformed >= 40, "{fs:?}");
        assert_eq!(fs.closed, 0, "{fs:?}");
        drop(d);
        drop(l);
        assert!(!ruleset().contains("kcpd_"));
    });
}

#[test]
fn a_dial_and_a_listener_exchange_datagrams_and_leave_no_rules() {
    if !common::privileged("fake TCP (raw sockets, firewall rules, a network namespace)") {
        return;
    }
    let ns = Netns::bare("kcpd-ftcp-a");
    ns.run(|| {
        exchange(Shape::New, "127.0.0.1:0");
        exchange(Shape::Deb, "127.0.0.1:0");
    });
}

#[test]
fn ipv6_and_a_dual_stack_listener_work_too() {
    if !common::privileged("fake TCP (raw sockets, firewall rules, a network namespace)") {
        return;
    }
    let ns = Netns::bare("kcpd-ftcp-b");
    ns.run(|| {
        exchange(Shape::New, "[::1]:0");
        exchange(Shape::Deb, "[::]:0");
    });
}

#[test]
fn a_dial_to_a_closed_port_reports_its_end() {
    if !common::privileged("fake TCP (raw sockets, firewall rules, a network namespace)") {
        return;
    }
    let ns = Netns::bare("kcpd-ftcp-c");
    ns.run(|| {
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut d = FakeTcpDial::connect(server, &FakeTcpConfig::default()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "a refused dial was never reported");
            d.send_batch(&[Transmit::new(server, b"x")]).unwrap();
            wait(&d, 20);
            let _ = recv_all(&mut d);
            if let Some(p) = d.poll_closed() {
                assert_eq!(p, server);
                break;
            }
        }
        assert!(d.poll_closed().is_none(), "reported once");
        drop(d);
        assert!(!ruleset().contains("kcpd_"));
    });
}
