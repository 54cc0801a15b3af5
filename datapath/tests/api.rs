//! The library surface over real loopback sockets, on every I/O backend.
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::io::{Read, Write};

use kcpd_datapath::api::{Options, Runtime, RuntimeConfig, Stream};
use kcpd_datapath::io::Backend;

mod common;
use common::{privileged, usable};

fn raw_echo(backend: Backend) {
    if !usable(backend) {
        return;
    }
    let rt = Runtime::new(RuntimeConfig { threads: 2, backend, pin: false, ..Default::default() }).unwrap();
    let opts = Options::new("aes-128", "k").unwrap().nodelay(true, 10, 2, true).window(1024, 1024).fec(10, 3);
    let l = rt.listen("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let addr = l.local_addr();
    std::thread::spawn(move || {
        while let Ok(mut s) = l.accept() {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => s.write_all(&buf[..n]).unwrap(),
                    }
                }
            });
        }
    });
    let mut c = rt.dial(addr, &opts).unwrap();
    let data: Vec<u8> = (0..8 << 20).map(|i| (i * 7) as u8).collect();
    let mut r = c.try_clone().unwrap();
    let d2 = data.clone();
    let h = std::thread::spawn(move || {
        let mut got = vec![0u8; d2.len()];
        r.read_exact(&mut got).unwrap();
        assert!(got == d2);
    });
    c.write_all(&data).unwrap();
    h.join().unwrap();
}

fn mux_streams(backend: Backend) {
    if !usable(backend) {
        return;
    }
    let rt = Runtime::new(RuntimeConfig { threads: 1, backend, pin: false, ..Default::default() }).unwrap();
    let opts = Options::new("salsa20", "k").unwrap();
    let l = rt.listen_mux("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let addr = l.local_addr();
    std::thread::spawn(move || {
        let sess = l.accept_mux().unwrap();
        while let Ok(mut s) = sess.accept_stream() {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                s.read_to_end(&mut v).unwrap();
                v.reverse();
                s.write_all(&v).unwrap();
                s.shutdown_write();
            });
        }
    });
    let sess = rt.dial_mux(addr, &opts).unwrap();
    let hs: Vec<_> = (0..4u8)
        .map(|i| {
            let mut s = sess.open_stream().unwrap();
            std::thread::spawn(move || {
                let data = vec![i; 100_000 + i as usize];
                s.write_all(&data).unwrap();
                s.shutdown_write();
                let mut back = Vec::new();
                s.read_to_end(&mut back).unwrap();
                assert_eq!(back.len(), data.len());
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

fn thousand_concurrent_sessions_echo_64k(backend: Backend) {
    if !usable(backend) {
        return;
    }
    // Every dialled session has io_uring rings of its own, which the kernel charges to RLIMIT_MEMLOCK
    // unless the process may lock memory: a user's default (8 MiB) holds far fewer than 1000.
    let mut mem = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `mem` is a live rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut mem) };
    if backend == Backend::Uring
        && mem.rlim_max != libc::RLIM_INFINITY
        && !privileged("1000 io_uring sessions (their rings exceed a user's RLIMIT_MEMLOCK)")
    {
        return;
    }
    // 1000 client UDP sockets (kcp-go dials one per session) plus the rest.
    let want = 8192;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a live rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur < want {
        lim.rlim_cur = want.min(lim.rlim_max);
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    let rt = Runtime::new(RuntimeConfig { threads: 2, backend, pin: false, ..Default::default() }).unwrap();
    let opts = Options::new("aes-128", "k").unwrap().nodelay(true, 10, 2, true);
    let l = rt.listen("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let addr = l.local_addr();
    const N: usize = 1000;
    const SIZE: usize = 64 * 1024;
    let server = std::thread::spawn(move || {
        let mut streams = Vec::new();
        for _ in 0..N {
            streams.push(l.accept().unwrap());
        }
        for s in &mut streams {
            let mut buf = vec![0u8; SIZE];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
        streams
    });
    let mut clients = Vec::new();
    for i in 0..N {
        let mut c = rt.dial(addr, &opts).unwrap();
        let data: Vec<u8> = (0..SIZE).map(|j| (i * 131 + j) as u8).collect();
        c.write_all(&data).unwrap();
        clients.push((c, data));
    }
    for (c, data) in &mut clients {
        let mut got = vec![0u8; SIZE];
        c.read_exact(&mut got).unwrap();
        assert!(got == *data);
    }
    let _streams = server.join().unwrap();
}

per_backend!(raw_echo, mux_streams, thousand_concurrent_sessions_echo_64k);

/// A listener nobody accepts from holds kcp-go's 128 sessions; the rest are dropped (counted) and come
/// back with their peers' retransmissions once the application accepts.
#[test]
fn the_accept_backlog_is_bounded() {
    let rt =
        Runtime::new(RuntimeConfig { threads: 1, backend: Backend::Mmsg, pin: false, ..Default::default() }).unwrap();
    let opts = Options::new("aes", "k").unwrap();
    let l = rt.listen("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
    let mut dialled: Vec<Stream> = (0..140)
        .map(|i| {
            let mut s = rt.dial(l.local_addr(), &opts).unwrap();
            s.write_all(&[i as u8]).unwrap();
            s
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.stats().iter().map(|s| s.accept_overflow).sum::<u64>() < 12 {
        assert!(std::time::Instant::now() < deadline, "no session was turned away");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Accepting makes room: every session arrives, each with its byte.
    let mut got: Vec<u8> = (0..140)
        .map(|_| {
            let mut s = l.accept().unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            b[0]
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..140).map(|i| i as u8).collect::<Vec<_>>());
    dialled.clear();
}
