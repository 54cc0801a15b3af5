//! Every real backend through `io::open`: batches, GSO runs, truncation, IP_PKTINFO on a wildcard socket,
//! dual-stack address normalisation, and bad destinations counted rather than fatal.
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kcpd_datapath::io::udp::UdpConfig;
use kcpd_datapath::io::{self, Backend, DatagramIo, RecvMeta, Transmit};

mod common;
use common::usable;

fn open(b: Backend, cfg: UdpConfig) -> Box<dyn DatagramIo + Send> {
    io::open(b, &cfg).unwrap().0
}

fn at(s: &str) -> UdpConfig {
    UdpConfig::new(s.parse().unwrap())
}

/// Receive datagrams (GRO super-packets split at their stride) until `want` arrived or 5 s passed.
fn recv_n(sock: &mut dyn DatagramIo, want: usize) -> Vec<(Vec<u8>, RecvMeta)> {
    let mut store = vec![vec![0u8; 65536]; 16];
    let mut meta = [RecvMeta::EMPTY; 16];
    let mut out = Vec::new();
    let t = Instant::now();
    while out.len() < want && t.elapsed() < Duration::from_secs(5) {
        let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
        let n = sock.recv_batch(&mut bufs, &mut meta).unwrap();
        for j in 0..n {
            for d in meta[j].datagrams(&store[j]) {
                out.push((d.to_vec(), meta[j]));
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    out
}

fn batch_round_trip(b: Backend) {
    if !usable(b) {
        return;
    }
    let mut a = open(b, at("127.0.0.1:0"));
    let mut c = open(b, at("127.0.0.1:0"));
    let payloads: Vec<Vec<u8>> = (0..100u32).map(|i| vec![i as u8; 1 + (i as usize * 13) % 1400]).collect();
    let msgs: Vec<Transmit<'_>> = payloads.iter().map(|p| Transmit::new(c.local_addr(), p)).collect();
    let mut sent = 0;
    while sent < msgs.len() {
        sent += a.send_batch(&msgs[sent..]).unwrap();
    }
    let got = recv_n(&mut *c, 100);
    let got: Vec<Vec<u8>> = got
        .into_iter()
        .map(|(d, m)| {
            assert_eq!(m.src, a.local_addr());
            d
        })
        .collect();
    assert_eq!(got, payloads);
    let st = a.stats();
    assert_eq!((st.tx_datagrams, st.errors), (100, 0));
    assert!(st.tx_syscalls < 100 || b == Backend::Basic, "batched: {st:?}");
}

fn gso_runs_arrive_whole(b: Backend) {
    if !usable(b) {
        return;
    }
    let mut a = open(b, at("127.0.0.1:0"));
    let mut c = open(b, at("127.0.0.1:0"));
    // Two runs to the same peer and a single datagram between them.
    let run1: Vec<u8> = (0..1200 * 10 + 77).map(|i| (i / 1200) as u8).collect();
    let run2: Vec<u8> = (0..200 * 100).map(|i| (i / 200) as u8).collect();
    let msgs = [
        Transmit { segment_size: Some(1200), ..Transmit::new(c.local_addr(), &run1) },
        Transmit::new(c.local_addr(), b"between"),
        Transmit { segment_size: Some(200), ..Transmit::new(c.local_addr(), &run2) },
    ];
    let mut sent = 0;
    while sent < msgs.len() {
        sent += a.send_batch(&msgs[sent..]).unwrap();
    }
    let want: Vec<Vec<u8>> = run1
        .chunks(1200)
        .map(<[u8]>::to_vec)
        .chain([b"between".to_vec()])
        .chain(run2.chunks(200).map(<[u8]>::to_vec))
        .collect();
    let got: Vec<Vec<u8>> = recv_n(&mut *c, want.len()).into_iter().map(|(d, _)| d).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "{b}: datagrams differ");
    assert_eq!(a.stats().tx_datagrams, want.len() as u64);
}

fn truncation_is_flagged(b: Backend) {
    if !usable(b) {
        return;
    }
    let mut a = open(b, at("127.0.0.1:0"));
    let mut c = open(b, at("127.0.0.1:0"));
    a.send_batch(&[Transmit::new(c.local_addr(), &[5u8; 4000])]).unwrap();
    let mut buf = vec![0u8; 1500];
    let mut meta = [RecvMeta::EMPTY; 1];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if c.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(meta[0].truncated, "{b}: {:?}", meta[0]);
    assert_eq!(c.stats().rx_truncated, 1);
}

/// A server on `0.0.0.0` learns which local address each datagram targeted and replies from it.
fn wildcard_replies_from_targeted_address(b: Backend) {
    if !usable(b) || b == Backend::Basic {
        // The portable backend has no IP_PKTINFO (its report says so); replies leave from the routing choice.
        return;
    }
    let mut srv = open(b, UdpConfig { pktinfo: true, ..at("0.0.0.0:0") });
    let port = srv.local_addr().port();
    let mut cli = open(b, at("127.0.0.1:0"));
    let target: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    cli.send_batch(&[Transmit::new(target, b"hello")]).unwrap();
    let got = recv_n(&mut *srv, 1);
    let (_, m) = &got[0];
    assert_eq!(m.dst_ip, Some("127.0.0.2".parse::<IpAddr>().unwrap()), "{b}");
    srv.send_batch(&[Transmit { src_ip: m.dst_ip, ..Transmit::new(m.src, b"reply") }]).unwrap();
    let back = recv_n(&mut *cli, 1);
    assert_eq!(back[0].0, b"reply");
    assert_eq!(back[0].1.src, target, "{b}: the reply comes from the address the client targeted");
}

/// `[::]` takes IPv4 peers; they appear as plain IPv4 addresses and can be answered as such.
fn dual_stack_normalises_v4_peers(b: Backend) {
    if !usable(b) {
        return;
    }
    let mut srv = open(b, at("[::]:0"));
    let port = srv.local_addr().port();
    let mut cli = open(b, at("127.0.0.1:0"));
    cli.send_batch(&[Transmit::new(format!("127.0.0.1:{port}").parse().unwrap(), b"v4")]).unwrap();
    let got = recv_n(&mut *srv, 1);
    assert_eq!(got[0].1.src, cli.local_addr(), "{b}: IPv4-mapped normalised");
    srv.send_batch(&[Transmit::new(cli.local_addr(), b"back")]).unwrap();
    assert_eq!(recv_n(&mut *cli, 1)[0].0, b"back");
}

/// An IPv6 destination on an IPv4 socket, or an unroutable one, is counted; the rest of the batch goes out.
fn bad_destinations_are_counted(b: Backend) {
    if !usable(b) {
        return;
    }
    let mut a = open(b, at("127.0.0.1:0"));
    let mut c = open(b, at("127.0.0.1:0"));
    let msgs = [
        Transmit::new("[2001:db8::1]:9".parse().unwrap(), b"nope"),
        Transmit::new(c.local_addr(), b"one"),
        Transmit::new("0.0.0.0:0".parse().unwrap(), b"port zero"),
        Transmit::new(c.local_addr(), b"two"),
    ];
    assert_eq!(a.send_batch(&msgs).unwrap(), 4);
    let got: Vec<Vec<u8>> = recv_n(&mut *c, 2).into_iter().map(|(d, _)| d).collect();
    assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(a.stats().errors, 2, "{b}: {:?}", a.stats());
}

per_backend!(
    batch_round_trip,
    gso_runs_arrive_whole,
    truncation_is_flagged,
    wildcard_replies_from_targeted_address,
    dual_stack_normalises_v4_peers,
    bad_destinations_are_counted,
);

#[test]
fn backend_names_parse() {
    for b in Backend::ALL {
        assert_eq!(b.name().parse::<Backend>().unwrap(), b);
    }
    let e = "epoll".parse::<Backend>().unwrap_err().to_string();
    assert!(e.contains("mmsg, uring or poll"), "{e}");
    assert!(Backend::Basic.is_available() && io::probe_best().is_available());
}
