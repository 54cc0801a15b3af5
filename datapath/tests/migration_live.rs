//! Migration over real loopback sockets: a NAT in front of a kcpd client changes the client's public port
//! again and again mid-transfer; the kcpd server (two shards, so the new port usually lands on the other
//! one) keeps the session, hands it and its target connection between shards, and the echo comes back
//! byte-exact over one target connection.
#![allow(clippy::disallowed_methods)] // tests time themselves

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kcpd_crypto::{Method, PacketCrypto};
use kcpd_datapath::io::Backend;
use kcpd_datapath::proto::conn::ConnConfig;
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_datapath::shard::{Endpoint, Engine, Role, TunnelConfig};

mod common;
use common::netns::{Netns, ip};

fn cfg(role: Role, backend: Backend) -> TunnelConfig {
    let conn = ConnConfig::new(
        Arc::new(PacketCrypto::from_password(Method::Aes, "migration")),
        SessionConfig { nodelay: Mode::Fast3.nodelay(), snd_wnd: 512, rcv_wnd: 512, ..SessionConfig::kcptun_client() },
    );
    common::tunnel(role, conn, backend, 2)
}

/// A NAT between one client and `server`: the client talks to the NAT's inside socket; the NAT talks to the
/// server from its current outside socket. Each increment of the returned counter makes it open a new
/// outside socket (a new public port, as a carrier NAT's mapping changes); what the server sends to an
/// outside socket that is no longer current is dropped, as a NAT drops traffic for a mapping it forgot.
fn rebinding_nat(server: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
    inside.set_nonblocking(true).unwrap();
    let addr = inside.local_addr().unwrap();
    let wanted = Arc::new(AtomicUsize::new(0));
    let want = wanted.clone();
    std::thread::spawn(move || {
        let outside = || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let mut outs = vec![outside()];
        let mut done = 0;
        let mut client = None;
        let mut buf = [0u8; 2048];
        loop {
            while done < want.load(Ordering::SeqCst) {
                done += 1;
                outs.push(outside());
                // Old mappings linger a little (their late datagrams are read and dropped), then go.
                if outs.len() > 4 {
                    outs.remove(0);
                }
            }
            let mut fds: Vec<libc::pollfd> = std::iter::once(&inside)
                .chain(outs.iter())
                .map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 })
                .collect();
            // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, 5) };
            let cur = outs.len() - 1;
            while let Ok((n, from)) = inside.recv_from(&mut buf) {
                client = Some(from);
                let _ = outs[cur].send_to(&buf[..n], server);
            }
            for (i, o) in outs.iter().enumerate() {
                while let Ok((n, _)) = o.recv_from(&mut buf) {
                    if let (true, Some(c)) = (i == cur, client) {
                        let _ = inside.send_to(&buf[..n], c);
                    }
                }
            }
        }
    });
    (addr, wanted)
}

/// Byte `i` of the stream the client sends.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn rebinding_client_keeps_its_stream(backend: Backend) {
    let (target, accepted) = common::counting_echo();
    let role = Role::Server { listen: vec!["127.0.0.1:0".parse().unwrap()], target: Endpoint::Tcp(target) };
    let server = Engine::start(cfg(role, backend)).unwrap();
    let (nat, rebind) = rebinding_nat(server.udp_addrs()[0]);
    let role = Role::Client { listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), remote: vec![nat], conns: 1 };
    let client = Engine::start(cfg(role, backend)).unwrap();
    let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
    let s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    // The writer sends a known pattern, about 4 MB/s, until told to stop; the reader checks every byte.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut off = 0u64;
            let mut chunk = vec![0u8; 64 << 10];
            while !stop.load(Ordering::SeqCst) {
                for (k, b) in chunk.iter_mut().enumerate() {
                    *b = pattern(off + k as u64);
                }
                w.write_all(&chunk).unwrap();
                off += chunk.len() as u64;
                std::thread::sleep(Duration::from_millis(15));
            }
            off
        })
    };
    let expect = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let reader = {
        let mut r = s.try_clone().unwrap();
        let expect = expect.clone();
        std::thread::spawn(move || {
            let mut off = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            while off < expect.load(Ordering::SeqCst) {
                let n = match r.read(&mut buf) {
                    Ok(0) | Err(_) => return off,
                    Ok(n) => n,
                };
                for (k, &b) in buf[..n].iter().enumerate() {
                    assert_eq!(b, pattern(off + k as u64), "byte {} of the echo differs", off + k as u64);
                }
                off += n as u64;
            }
            off
        })
    };
    let moved = |e: &Engine| {
        e.stats().iter().map(|s| (s.migrated_in, s.migrated_out)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    // Rebind every 150 ms of traffic; at least 4 times, and until a move crossed shards (each rebind lands
    // on either shard: 2^-30 to miss).
    let mut rebinds = 0;
    while rebinds < 4 || (moved(&server).1 == 0 && rebinds < 30) {
        std::thread::sleep(Duration::from_millis(150));
        rebinds += 1;
        rebind.store(rebinds, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while moved(&server).0 < rebinds as u64 {
            assert!(
                Instant::now() < deadline,
                "rebind {rebinds}: the session did not move ({:?}); server {:?}",
                moved(&server),
                server
                    .stats()
                    .iter()
                    .map(|s| (s.sessions, s.pipes, s.migration_stale, s.migration_held, s.snmp.passive_opens))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    stop.store(true, Ordering::SeqCst);
    let total = writer.join().unwrap();
    expect.store(total, Ordering::SeqCst);
    // The reader returns once it has the whole echo (or its read times out).
    let got = reader.join().unwrap();
    assert_eq!(got, total, "echoed {got} of {total} bytes");
    let (into, out) = moved(&server);
    assert_eq!(into, rebinds as u64, "one move per rebind");
    assert!(out >= 1, "no move crossed shards");
    assert_eq!(server.snmp().passive_opens, 1, "the rebound client opened another session");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "another target connection was made");
    eprintln!("{rebinds} rebinds, {into} moves, {out} across shards, {total} bytes echoed");
}

per_backend!(rebinding_client_keeps_its_stream);

/// The client's own address changes mid-transfer (as when a laptop moves to another network): its
/// address is removed (sends fail with ENETUNREACH for a while: counted, survived) and a new one added;
/// the kcpd server moves the session to the new address and the echo completes byte-exact.
#[test]
fn a_client_whose_address_changes_keeps_its_stream() {
    if !common::privileged("network namespaces") {
        return;
    }
    let tag = std::process::id() % 10_000;
    let (outer, inner, name) = (format!("kmo{tag}"), format!("kmi{tag}"), format!("kcpd-mig-{tag}"));
    let net = 10 + (tag % 200);
    let (server_ip, old_ip, new_ip) = (format!("10.213.{net}.1"), format!("10.213.{net}.2"), format!("10.213.{net}.3"));
    let ns = Netns::new(&name, &outer, &inner, &server_ip, &old_ip);
    let (target, accepted) = common::counting_echo();
    let listen: SocketAddr = format!("{server_ip}:0").parse().unwrap();
    let role = Role::Server { listen: vec![listen], target: Endpoint::Tcp(target) };
    let server = Engine::start(cfg(role, Backend::Mmsg)).unwrap();
    let remote = server.udp_addrs()[0];
    let (client, s) = ns.run(move || {
        let role =
            Role::Client { listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()), remote: vec![remote], conns: 1 };
        let client = Engine::start(cfg(role, Backend::Mmsg)).unwrap();
        let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
        (client, TcpStream::connect(local).unwrap())
    });
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 64 << 10];
        for i in 0..60u64 {
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = pattern(i * (64 << 10) + k as u64);
            }
            w.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        60 * (64 << 10) as u64
    });
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut off, total) = (0u64, 60 * (64 << 10) as u64);
        let mut buf = vec![0u8; 64 << 10];
        while off < total {
            let n = match r.read(&mut buf) {
                Ok(n @ 1..) => n,
                other => {
                    eprintln!("the echo stopped after {off} bytes: {other:?}");
                    return off;
                }
            };
            for (k, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, pattern(off + k as u64), "byte {} of the echo differs", off + k as u64);
            }
            off += n as u64;
        }
        off
    });
    // Mid-transfer: the address goes away (no route to the server for 300 ms), then another comes.
    std::thread::sleep(Duration::from_millis(400));
    ip(&["-n", &name, "addr", "del", &format!("{old_ip}/24"), "dev", &inner]);
    std::thread::sleep(Duration::from_millis(300));
    ip(&["-n", &name, "addr", "add", &format!("{new_ip}/24"), "dev", &inner]);
    let total = writer.join().unwrap();
    let got = reader.join().unwrap();
    let show = |e: &Engine| {
        e.stats()
            .iter()
            .map(|s| {
                format!(
                    "sessions {} in {} out {} stale {} held {} unroutable {} errors {} tx {} rx {}",
                    s.sessions,
                    s.migrated_in,
                    s.migrated_out,
                    s.migration_stale,
                    s.migration_held,
                    s.io.tx_unroutable,
                    s.io.errors,
                    s.io.tx_datagrams,
                    s.io.rx_datagrams
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(got, total, "server {:?} client {:?}", show(&server), show(&client));
    let moved: u64 = server.stats().iter().map(|s| s.migrated_in).sum();
    let unroutable: u64 = client.stats().iter().map(|s| s.io.tx_unroutable).sum();
    assert!(moved >= 1, "the session never moved");
    assert!(unroutable > 0, "no send failed while the address was gone");
    assert_eq!(server.snmp().passive_opens, 1, "the new address opened another session");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "another target connection was made");
    eprintln!("{moved} moves, {unroutable} datagrams without a route while the address changed");
    drop(client);
}
