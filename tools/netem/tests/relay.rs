//! The relay over loopback: pass-through, loss, delay, per-client mapping, duplication, rate limit.
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kcpd_netem::{Link, Loss, Relay, RelayConfig, RelayStats};

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    s
}

fn relay(upstream: SocketAddr, up: Link, down: Link) -> Relay {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    Relay::start(RelayConfig { up, down, sockbuf: Some(1 << 20), ..RelayConfig::new(listen, upstream) }).expect("start")
}

/// Wait (up to 5 s) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// What a server got: datagrams and their arrival times (when kept), distinct senders, and its socket.
type Received = (Vec<Vec<u8>>, Vec<SocketAddr>, Vec<Instant>, UdpSocket);

/// A server that echoes each datagram to its sender, or only counts when `echo` is false; records senders.
struct Server {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Received>>,
}

impl Server {
    fn start(echo: bool, keep: bool) -> Server {
        let sock = udp();
        sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut data, mut srcs, mut times) = (Vec::new(), Vec::new(), Vec::new());
            let mut buf = [0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, src)) = sock.recv_from(&mut buf) else { continue };
                if echo {
                    sock.send_to(&buf[..n], src).expect("echo");
                }
                if keep {
                    data.push(buf[..n].to_vec());
                    times.push(Instant::now());
                }
                if !srcs.contains(&src) {
                    srcs.push(src);
                }
                c.fetch_add(1, Ordering::SeqCst);
            }
            (data, srcs, times, sock)
        });
        Server { addr, count, stop, thread: Some(thread) }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    fn finish(mut self) -> Received {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().expect("once").join().expect("server thread")
    }
}

fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; len];
    p[..4].copy_from_slice(&i.to_be_bytes());
    p
}

/// Send `n` datagrams from `client` in chunks, each chunk after the relay has taken the previous one (so
/// no socket buffer overflows) and `server` has what the relay forwarded.
fn send_paced(relay: &Relay, server: &Server, client: &UdpSocket, n: u32, len: usize, chunk: u32) {
    let base = relay.stats().up.received;
    for i in 0..n {
        client.send_to(&payload(i, len), relay.local_addr()).expect("send");
        if (i + 1) % chunk == 0 || i + 1 == n {
            wait_until("relay to receive", || relay.stats().up.received >= base + u64::from(i + 1));
            wait_until("server to receive", || {
                let s = relay.stats();
                s.pending == 0 && server.count() >= s.up.forwarded
            });
        }
    }
}

#[test]
fn unimpaired_pass_through_both_directions() {
    let server = Server::start(true, false);
    let r = relay(server.addr, Link::default(), Link::default());
    let client = udp();
    let mut buf = [0u8; 2048];
    let mut i = 0u32;
    while i < 10_000 {
        let chunk = 50.min(10_000 - i);
        for k in 0..chunk {
            client.send_to(&payload(i + k, 1000), r.local_addr()).expect("send");
        }
        for k in 0..chunk {
            let (n, src) = client.recv_from(&mut buf).expect("echo back");
            assert_eq!(src, r.local_addr());
            assert_eq!(&buf[..n], &payload(i + k, 1000)[..], "datagram {}", i + k);
        }
        i += chunk;
    }
    wait_until("stats", || r.stats().down.forwarded == 10_000);
    let s = r.stats();
    assert_eq!((s.up.received, s.up.forwarded, s.down.received, s.down.forwarded), (10_000, 10_000, 10_000, 10_000));
    assert_eq!(s.up.bytes, 10_000_000);
    assert_eq!(s.clients, 1);
    assert_eq!(s.send_errors(), 0);
    server.finish();
}

#[test]
fn bernoulli_loss_on_up_only() {
    let server = Server::start(false, false);
    let up = Link { loss: Loss::Bernoulli(0.1), ..Default::default() };
    let r = relay(server.addr, up, Link::default());
    let client = udp();
    send_paced(&r, &server, &client, 20_000, 100, 100);
    wait_until("server to receive", || {
        let s = r.stats();
        s.pending == 0 && server.count() == s.up.forwarded
    });
    let s: RelayStats = r.stats();
    let share = server.count() as f64 / 20_000.0;
    assert!((0.87..=0.93).contains(&share), "delivered share {share}, {s:?}");
    assert_eq!(s.up.lost + s.up.forwarded, 20_000);

    // Down: untouched.
    let (_, srcs, _, back) = server.finish();
    let mut buf = [0u8; 256];
    for i in 0..1000 {
        back.send_to(&payload(i, 100), srcs[0]).expect("send down");
        let n = client.recv(&mut buf).expect("down datagram");
        assert_eq!(&buf[..n], &payload(i, 100)[..]);
    }
    wait_until("stats", || r.stats().down.forwarded == 1000);
    let s = r.stats();
    assert_eq!((s.down.received, s.down.forwarded, s.down.lost), (1000, 1000, 0));
}

#[test]
fn delay_shows_in_round_trip() {
    let server = Server::start(true, false);
    let up = Link { delay_ms: 20, ..Default::default() };
    let down = Link { delay_ms: 10, ..Default::default() };
    let r = relay(server.addr, up, down);
    let client = udp();
    let mut buf = [0u8; 64];
    for i in 0..4 {
        let t = Instant::now();
        client.send_to(&payload(i, 16), r.local_addr()).expect("send");
        let n = client.recv(&mut buf).expect("pong");
        let rtt = t.elapsed();
        assert_eq!(&buf[..n], &payload(i, 16)[..]);
        assert!(rtt >= Duration::from_millis(30) && rtt < Duration::from_millis(60), "rtt {rtt:?}");
    }
    server.finish();
}

#[test]
fn each_client_gets_its_own_upstream_address() {
    let server = Server::start(true, false);
    let r = relay(server.addr, Link::default(), Link::default());
    let (a, b) = (udp(), udp());
    let mut buf = [0u8; 64];
    for round in 0..3u32 {
        a.send_to(&payload(round, 10), r.local_addr()).expect("send a");
        b.send_to(&payload(100 + round, 10), r.local_addr()).expect("send b");
        let n = a.recv(&mut buf).expect("a echo");
        assert_eq!(&buf[..n], &payload(round, 10)[..]);
        let n = b.recv(&mut buf).expect("b echo");
        assert_eq!(&buf[..n], &payload(100 + round, 10)[..]);
    }
    let (_, srcs, _, _) = server.finish();
    assert_eq!(srcs.len(), 2, "{srcs:?}");
    assert!(!srcs.contains(&r.local_addr()));
    assert_eq!(r.stats().clients, 2);
}

#[test]
fn full_duplication_delivers_twice() {
    let server = Server::start(false, true);
    let up = Link { duplicate: 1.0, ..Default::default() };
    let r = relay(server.addr, up, Link::default());
    let client = udp();
    send_paced(&r, &server, &client, 1000, 200, 50);
    wait_until("both copies", || server.count() >= 2000);
    std::thread::sleep(Duration::from_millis(20));
    let (data, ..) = server.finish();
    assert_eq!(data.len(), 2000);
    let mut seen = vec![0u32; 1000];
    for d in &data {
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        assert_eq!(d, &payload(i, 200));
        seen[i as usize] += 1;
    }
    assert!(seen.iter().all(|&c| c == 2));
    assert_eq!(r.stats().up.duplicated, 1000);
}

#[test]
fn rate_limit_drops_excess_and_paces() {
    let server = Server::start(false, true);
    let up = Link { rate: Some(1_000_000), queue_bytes: 20_000, ..Default::default() };
    let r = relay(server.addr, up, Link::default());
    let client = udp();
    // About 2 MB/s for 0.5 s: 20 datagrams of 1000 bytes every 10 ms.
    let t = Instant::now();
    for burst in 0..50u32 {
        for k in 0..20 {
            client.send_to(&payload(burst * 20 + k, 1000), r.local_addr()).expect("send");
        }
        let next = t + Duration::from_millis(10 * u64::from(burst + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    wait_until("the queue to drain", || {
        let s = r.stats();
        s.pending == 0 && server.count() == s.up.forwarded
    });
    let s = r.stats();
    let (data, _, times, _) = server.finish();
    assert!(s.up.queue_drops > 0, "{s:?}");
    assert_eq!(s.up.received, 1000);
    assert_eq!(s.up.forwarded + s.up.queue_drops, 1000);
    let span = times[times.len() - 1].duration_since(times[0]).as_secs_f64();
    let rate = (data.len() - 1) as f64 * 1000.0 / span;
    assert!((850_000.0..1_150_000.0).contains(&rate), "delivered {rate:.0} B/s over {span:.3} s, {s:?}");
}

/// Throughput of the unimpaired relay: `cargo test --release -p kcpd-netem --test relay -- --ignored
/// --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    use kcpd_datapath::io::mmsg::MmsgSocket;
    use kcpd_datapath::io::udp::Offload;
    use kcpd_datapath::io::{DatagramIo, Transmit};
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let r = relay(sink.local_addr().expect("addr"), Link::default(), Link::default());
    let dst = r.local_addr();
    // NETEM_GSO=1: the sender packs 44 datagrams per GSO message (as kcpd does); the relay still receives
    // them one by one.
    let gso = std::env::var_os("NETEM_GSO").is_some();
    let offload = Offload { gso, gro: false };
    let mut tx = MmsgSocket::from_socket(UdpSocket::bind("127.0.0.1:0").expect("bind"), offload).expect("mmsg");
    let data = vec![0x5au8; 1400 * 44];
    let msgs = if gso {
        vec![Transmit { segment_size: Some(1400), ..Transmit::new(dst, &data) }; 2]
    } else {
        vec![Transmit::new(dst, &data[..1400]); 64]
    };
    let per_call = if gso { 88 } else { 64 };
    let secs = std::env::var("NETEM_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let t = Instant::now();
    let before = r.stats();
    let mut sent = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        sent += tx.send_batch(&msgs).map_or(0, |n| if n == msgs.len() { per_call } else { 0 });
        if std::env::var_os("NETEM_PACE").is_some() {
            // Stay at most ~2000 datagrams ahead of the relay (no drops at its socket).
            while sent > r.stats().up.received + 2000 && t.elapsed().as_secs_f64() < secs {
                std::thread::yield_now();
            }
        }
    }
    let el = t.elapsed().as_secs_f64();
    let s = r.stats();
    let fwd = s.up.forwarded - before.up.forwarded;
    println!(
        "sent {sent}, relay received {}, forwarded {fwd} in {el:.2} s: {:.0} datagrams/s ({:.0} Mbit/s), send_errors {}",
        s.up.received,
        fwd as f64 / el,
        fwd as f64 * 1400.0 * 8.0 / el / 1e6,
        s.send_errors()
    );
}
