//! `kcpd-bench datapath`: KCP sessions over real loopback sockets through the shard engine, per I/O backend,
//! for 1 shard and for N, beside the raw loopback limit measured in the same run: a plain
//! recvmmsg/sendmmsg blaster (one sender and one receiver thread per pair, 1400-byte datagrams, 64 per
//! call, no protocol work), once without offloads and once with UDP GSO+GRO.
//!
//! Each tunnel run: a server runtime and a client runtime of `k` shards each, `k` raw KCP sessions
//! (aes-128, no FEC, nodelay 1/10/2/1, windows 1024), one writer thread per session pushing 64 KiB writes and
//! one reader per accepted session discarding them. Goodput is what the readers got; datagrams/s is what
//! the server's sockets received; allocations are the whole process's during the window, per datagram.
//!
//! Loopback flatters GSO/GRO: a super-packet crosses `lo` unsegmented, so the `mmsg` rows are printed with
//! GRO on and off (and with no offload at all).

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kcpd_datapath::api::{Options, Runtime, RuntimeConfig};
use kcpd_datapath::io::mmsg::MmsgSocket;
use kcpd_datapath::io::udp::Offload;
use kcpd_datapath::io::{Backend, DatagramIo, RecvMeta, Transmit};

use crate::alloc;
use crate::measure::{Measure, median};

const DGRAM: usize = 1400;

/// One figure: goodput bytes/s and datagrams/s, plus allocations per datagram where measured.
#[derive(Clone, Copy, Default)]
struct Figure {
    bytes: f64,
    dgrams: f64,
    allocs: Option<f64>,
}

fn med(v: Vec<Figure>) -> Figure {
    Figure {
        bytes: median(v.iter().map(|f| f.bytes).collect()).unwrap_or(0.0),
        dgrams: median(v.iter().map(|f| f.dgrams).collect()).unwrap_or(0.0),
        allocs: median(v.iter().filter_map(|f| f.allocs).collect()),
    }
}

/// `k` blaster pairs for `secs`: datagrams the receivers got.
fn blaster(k: usize, offload: Offload, secs: f64) -> Figure {
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..k {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let _ = socket2::SockRef::from(&rx).set_recv_buffer_size(4 << 20);
        let dst = rx.local_addr().expect("addr");
        let mut rx = MmsgSocket::from_socket(rx, offload).expect("socket");
        let mut tx = MmsgSocket::from_socket(UdpSocket::bind("127.0.0.1:0").expect("bind"), offload).expect("socket");
        let (s1, s2, g) = (stop.clone(), stop.clone(), got.clone());
        threads.push(std::thread::spawn(move || {
            let payload = vec![0x5au8; DGRAM * 64];
            let run = [Transmit { segment_size: Some(DGRAM), ..Transmit::new(dst, &payload) }];
            let singles: Vec<Transmit<'_>> = payload.chunks(DGRAM).map(|c| Transmit::new(dst, c)).collect();
            while !s1.load(Ordering::Relaxed) {
                if tx.max_gso_segments() > 1 {
                    let _ = tx.send_batch(&run);
                } else {
                    let _ = tx.send_batch(&singles);
                }
            }
        }));
        threads.push(std::thread::spawn(move || {
            let mut store = vec![vec![0u8; 65536]; 32];
            let mut meta = [RecvMeta::EMPTY; 32];
            let fd = rx.socket().as_raw_fd();
            while !s2.load(Ordering::Relaxed) {
                let mut bufs: Vec<&mut [u8]> = store.iter_mut().map(|b| &mut b[..]).collect();
                match rx.recv_batch(&mut bufs, &mut meta) {
                    Ok(0) => wait_readable(fd, 20),
                    Ok(n) => {
                        let d: u64 = meta[..n].iter().map(|m| m.len.div_ceil(m.stride.max(1)) as u64).sum();
                        g.fetch_add(d, Ordering::Relaxed);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(100));
    let g0 = got.load(Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let d = got.load(Ordering::Relaxed) - g0;
    let el = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Figure { bytes: d as f64 * DGRAM as f64 / el, dgrams: d as f64 / el, allocs: None }
}

fn wait_readable(fd: i32, ms: i32) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// One tunnel run: `k` shards per end, `k` sessions.
fn tunnel(backend: Backend, k: usize, offload: Offload, secs: f64) -> std::io::Result<Figure> {
    let cfg = RuntimeConfig { threads: k, backend, pin: false, ..Default::default() };
    let server = Runtime::new(cfg.clone())?;
    let client = Runtime::new(cfg)?;
    let opts = Options::new("aes-128", "kcpd-bench")
        .expect("method")
        .nodelay(true, 10, 2, true)
        .window(1024, 1024)
        .sockbuf(4 << 20)
        .offload(offload.gso, offload.gro);
    let listener = server.listen("127.0.0.1:0".parse::<SocketAddr>().expect("literal"), &opts)?;
    let addr = listener.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for _ in 0..k {
        let mut c = client.dial(addr, &opts)?;
        c.set_write_timeout(Some(Duration::from_millis(200)));
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let chunk = vec![0xa5u8; 64 * 1024];
            while !s.load(Ordering::Relaxed) {
                match c.write(&chunk) {
                    Ok(_) => {}
                    Err(e)
                        if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }));
    }
    for _ in 0..k {
        let mut s = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_millis(200)));
        let (st, g) = (stop.clone(), got.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !st.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        g.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }));
    }
    // Warm up: windows open, buffers reach their steady size.
    std::thread::sleep(Duration::from_millis(300));
    let rx = |rt: &Runtime| rt.stats().iter().map(|s| s.io.rx_datagrams).sum::<u64>();
    let (g0, d0, a0) = (got.load(Ordering::Relaxed), rx(&server) + rx(&client), alloc::count());
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (g1, a1) = (got.load(Ordering::Relaxed), alloc::count());
    let el = t.elapsed().as_secs_f64();
    let d1 = rx(&server) + rx(&client);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let dgrams = (d1 - d0) as f64;
    Ok(Figure {
        bytes: (g1 - g0) as f64 / el,
        dgrams: dgrams / el,
        // Snapshots (stats) allocate a little; that is part of the figure, honestly.
        allocs: (dgrams > 0.0).then(|| (a1 - a0) as f64 / dgrams),
    })
}

pub fn run(m: &Measure, shards: &[usize]) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut ks: Vec<usize> = if shards.is_empty() { vec![1, n] } else { shards.to_vec() };
    ks.dedup();
    println!("datapath over loopback, {n} cores; medians of {} runs of {:.1} s", m.reps, m.seconds);
    println!(
        "{:<34} {:>6} {:>10} {:>12} {:>10} {:>14}",
        "path", "shards", "MB/s", "datagrams/s", "× raw", "allocs/dgram"
    );
    let none = Offload::NONE;
    let all = Offload::default();
    let gso_only = Offload { gso: true, gro: false };
    for &k in &ks {
        let raw = med((0..m.reps).map(|_| blaster(k, none, m.seconds)).collect());
        let raw_gso = med((0..m.reps).map(|_| blaster(k, all, m.seconds)).collect());
        let row = |name: &str, f: Figure, reference: Option<Figure>| {
            let ratio = reference.map_or("-".to_string(), |r| format!("{:.2}", f.dgrams / r.dgrams));
            let allocs = f.allocs.map_or("-".to_string(), |a| format!("{a:.3}"));
            println!("{:<34} {:>6} {:>10.0} {:>12.0} {:>10} {:>14}", name, k, f.bytes / 1e6, f.dgrams, ratio, allocs);
        };
        row("raw recvmmsg/sendmmsg (no offload)", raw, None);
        row("raw with GSO+GRO", raw_gso, None);
        let cases: [(&str, Backend, Offload); 5] = [
            ("tunnel mmsg, GSO+GRO", Backend::Mmsg, all),
            ("tunnel mmsg, GSO, GRO off", Backend::Mmsg, gso_only),
            ("tunnel mmsg, no offload", Backend::Mmsg, none),
            ("tunnel uring, GSO", Backend::Uring, gso_only),
            ("tunnel poll", Backend::Basic, none),
        ];
        for (name, b, off) in cases {
            if !b.is_available() {
                println!("{name:<34} {k:>6} skipped: the {b} backend is not available here");
                continue;
            }
            let figs: Vec<Figure> = (0..m.reps).filter_map(|_| tunnel(b, k, off, m.seconds).ok()).collect();
            if figs.is_empty() {
                println!("{name:<34} {k:>6} failed to start");
                continue;
            }
            row(name, med(figs), Some(raw));
        }
    }
    println!(
        "× raw: tunnel datagrams/s (both directions, data and ACKs) over the raw blaster's without offload. Tunnel MB/s \
         is goodput (application bytes delivered)."
    );
}
