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
