//! `--tcp` (fake TCP, docs/protocol.md §11.7) live: kcpd client → Debian `kcptun-server --tcp`, Debian
//! `kcptun-client --tcp` → kcpd server, and kcpd ↔ kcpd, with a few crypt/FEC/smux combinations, several MB
//! echoed and checked byte for byte. Each case runs in a throwaway network namespace (root): Debian's
//! kcptun leaves its iptables rules behind, kcpd must leave none of its own (checked after SIGTERM).
#![cfg(target_os = "linux")]
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[path = "../../datapath/tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;
use netns::{Netns, privileged};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Kcpd,
    Kcptun,
}

#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    client: Impl,
    server: Impl,
    crypt: &'static str,
    fec: (u8, u8),
    comp: bool,
    smuxver: u8,
    streams: usize,
    bytes: usize,
    /// The server's address family: "127.0.0.1" or "::1".
    host: &'static str,
    /// Server and client in two namespaces joined by a veth pair (10.77.`net`.0/24), not on one loopback.
    veth: bool,
    net: u8,
    /// Percent of the TCP segments into the server's namespace dropped.
    loss: u32,
    /// Flags for the client (`--conn`).
    client_extra: &'static [&'static str],
}

fn args(c: &Case, imp: Impl, server: bool, listen: &str, peer: &str) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    if imp == Impl::Kcpd {
        a.push(if server { "server" } else { "client" }.into());
    }
    if server {
        a.extend(["--listen".into(), listen.into(), "--target".into(), peer.into()]);
    } else {
        a.extend(["--localaddr".into(), listen.into(), "--remoteaddr".into(), peer.into()]);
    }
    a.extend(["--key", "faketcp-key", "--crypt", c.crypt, "--mode", "fast3", "--tcp"].map(String::from));
    a.extend(["--datashard".into(), c.fec.0.to_string(), "--parityshard".into(), c.fec.1.to_string()]);
    a.extend(["--smuxver".into(), c.smuxver.to_string()]);
    if !c.comp {
        a.push("--nocomp".into());
    }
    if imp == Impl::Kcpd {
        a.extend(["--threads".into(), "1".into()]);
    }
    if !server {
        a.extend(c.client_extra.iter().map(|s| s.to_string()));
    }
    a
}

fn spawn(c: &Case, imp: Impl, server: bool, listen: &str, peer: &str) -> Proc {
    let what = format!("faketcp {} {}", c.name, if server { "server" } else { "client" });
    let bin = match (imp, server) {
        (Impl::Kcpd, _) => KCPD,
        (Impl::Kcptun, true) => KCPTUN_SERVER,
        (Impl::Kcptun, false) => KCPTUN_CLIENT,
    };
    Proc::spawn(&what, bin, None, &args(c, imp, server, listen, peer))
}

/// This namespace's firewall as text (nft's ruleset: kcpd's tables, and iptables-nft's rules).
fn ruleset() -> String {
    let out = std::process::Command::new("nft").args(["list", "ruleset"]).output().expect("nft runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sigterm(p: &mut Proc) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    p.wait_exit(10)
}

/// Run `c` in throwaway network namespaces: one (loopback) unless `c.veth`, then the server and the target
/// in one, the client in another, joined by a veth pair; with `c.loss` a share of the TCP segments into
/// the server's namespace is dropped by an nftables rule (`numgen random`).
fn run_case(c: Case) {
    let tag = format!("kcpd-ft-{}-{}", std::process::id(), c.name);
    let (sns, cns) = if c.veth {
        let (a, b) = Netns::pair(&format!("{tag}-s"), &format!("{tag}-c"), c.net);
        (a, Some(b))
    } else {
        (Netns::bare(&tag), None)
    };
    let host: std::net::IpAddr =
        if c.veth { format!("10.77.{}.1", c.net).parse().unwrap() } else { c.host.parse().unwrap() };
    let c1 = c.clone();
    let (mut server, server_addr) = sns.run(move || {
        let c = c1;
        if c.loss > 0 {
            let rule = format!(
                "add table inet loss\nadd chain inet loss input {{ type filter hook input priority 0; }}\n\
                 add rule inet loss input meta l4proto tcp numgen random mod 100 < {} counter drop\n",
                c.loss
            );
            nft_script(&rule);
        }
        let target = echo_target();
        let server_addr = SocketAddr::new(host, free_tcp_port());
        let server = spawn(&c, c.server, true, &server_addr.to_string(), &target.to_string());
        (server, server_addr)
    });
    let c2 = c.clone();
    let client_ns = cns.as_ref().unwrap_or(&sns);
    let mut client = client_ns.run(move || {
        let c = c2;
        // The server's kernel listener is up once a connection succeeds (the probe's flow ends at its FIN).
        let t = Instant::now();
        while TcpStream::connect_timeout(&server_addr, Duration::from_millis(200)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "{}: the server never listened", c.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut client = spawn(&c, c.client, false, &local.to_string(), &server_addr.to_string());
        if let Err(e) = wait_listening(local, &mut [&mut client]) {
            panic!("{}: {e}\n{}", c.name, client.output());
        }
        let per = c.bytes / c.streams;
        let hs: Vec<_> =
            (0..c.streams).map(|k| std::thread::spawn(move || echo_once(local, per, 40 + k as u8))).collect();
        let errs: Vec<String> = hs.into_iter().filter_map(|h| h.join().unwrap().err()).collect();
        assert!(errs.is_empty(), "{}: {}\n{}", c.name, errs.join("; "), client.output());
        client
    });
    // kcpd's rules are there while it runs, and gone after a SIGTERM.
    for (ns, p, imp) in [(client_ns, &mut client, c.client), (&sns, &mut server, c.server)] {
        if imp != Impl::Kcpd {
            continue;
        }
        let (name, own) = (c.name, format!("kcpd_{}_", p.child.id()));
        assert!(ns.run(ruleset).contains(&own), "{name}: kcpd installed no rule");
        let st = sigterm(p);
        assert!(st.is_some_and(|s| s.success()), "{name}: kcpd did not stop cleanly: {st:?}\n{}", p.output());
        let left = ns.run(ruleset);
        assert!(!left.contains(&own), "{name}: kcpd left rules behind:\n{left}");
    }
    if c.loss > 0 {
        // The transfer went through the rule (over fake TCP, not UDP).
        let rules = sns.run(ruleset);
        let dropped: u64 = rules
            .split("packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(dropped > 10, "{}: the loss rule dropped {dropped} segments:\n{rules}", c.name);
    }
}

fn nft_script(script: &str) {
    use std::io::Write as _;
    let mut p = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    p.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(p.wait().unwrap().success(), "nft -f: {script}");
}

fn case(name: &'static str, client: Impl, server: Impl) -> Case {
    Case {
        name,
        client,
        server,
        crypt: "aes",
        fec: (10, 3),
        comp: true,
        smuxver: 1,
        streams: 2,
        bytes: 4 << 20,
        host: "127.0.0.1",
        veth: false,
        net: 0,
        loss: 0,
        client_extra: &[],
    }
}

#[test]
fn kcpd_client_to_debian_kcptun_server() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") || !kcptun_present() {
        return;
    }
    run_case(case("kd-deb", Impl::Kcpd, Impl::Kcptun));
}

#[test]
fn debian_kcptun_client_to_kcpd_server() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") || !kcptun_present() {
        return;
    }
    run_case(Case {
        crypt: "salsa20",
        fec: (0, 0),
        comp: false,
        smuxver: 2,
        ..case("deb-kd", Impl::Kcptun, Impl::Kcpd)
    });
}

#[test]
fn kcpd_to_kcpd_over_ipv4_and_ipv6() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    run_case(Case {
        crypt: "aes-128-gcm",
        smuxver: 2,
        streams: 4,
        client_extra: &["--conn", "2"],
        ..case("kd-kd", Impl::Kcpd, Impl::Kcpd)
    });
    run_case(Case { crypt: "none", fec: (0, 0), host: "::1", ..case("kd-kd6", Impl::Kcpd, Impl::Kcpd) });
}

/// Between two namespaces over a veth pair (checksums left to offload on the kernel's handshake), one
/// direction with 2% of the segments into the server dropped: FEC and retransmission carry it through.
#[test]
fn across_a_veth_pair_and_through_loss() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") || !kcptun_present() {
        return;
    }
    run_case(Case { veth: true, net: 1, ..case("veth-kd-deb", Impl::Kcpd, Impl::Kcptun) });
    run_case(Case { veth: true, net: 2, loss: 2, smuxver: 2, ..case("loss-deb-kd", Impl::Kcptun, Impl::Kcpd) });
}

/// After a SIGKILL a kcpd's table stays; the next kcpd with `--tcp` in that namespace removes it (and only
/// tables of processes that are gone).
#[test]
fn a_killed_kcpds_rules_are_swept_by_the_next_start() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    let ns = Netns::bare(&format!("kcpd-ft-{}-sweep", std::process::id()));
    ns.run(|| {
        let c = case("sweep", Impl::Kcpd, Impl::Kcpd);
        let target = echo_target().to_string();
        let listen = |port: u16| format!("127.0.0.1:{port}");
        let mut first = spawn(&c, Impl::Kcpd, true, &listen(free_tcp_port()), &target);
        let own = format!("kcpd_{}_", first.child.id());
        let t = Instant::now();
        while !ruleset().contains(&own) {
            assert!(t.elapsed() < Duration::from_secs(10), "no rules:\n{}", first.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = first.child.kill();
        let _ = first.child.wait();
        assert!(ruleset().contains(&own), "a SIGKILL cannot clean up");
        let mut live = spawn(&c, Impl::Kcpd, true, &listen(free_tcp_port()), &target);
        let other = format!("kcpd_{}_", live.child.id());
        let t = Instant::now();
        while ruleset().contains(&own) || !ruleset().contains(&other) {
            assert!(t.elapsed() < Duration::from_secs(10), "not swept:\n{}\n{}", ruleset(), live.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = sigterm(&mut live);
        assert!(st.is_some_and(|s| s.success()));
        assert!(!ruleset().contains("kcpd_"), "{}", ruleset());
    });
}

/// Without the capabilities, `--tcp` is a clear error at start-up naming them (kcptun's server logs
/// "operation not permitted" and carries on UDP-only; its client retries every second).
#[test]
fn without_privileges_it_says_which_capability() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    for side in ["server", "client"] {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"])
            .arg(KCPD)
            .args([side, "--tcp", "--key", "k", "--quiet"])
            .args(if side == "server" {
                ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"]
            } else {
                ["--localaddr", "127.0.0.1:0", "--remoteaddr", "127.0.0.1:9"]
            })
            .output()
            .expect("setpriv runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{side}: {err}");
        assert!(err.contains("CAP_NET_RAW"), "{side}: {err}");
    }
}

/// Multiport and `--autoexpire` over fake TCP: every new session of the client dials a new connection to a
/// random port of the server's range (kcptun NEW's multiport); the server sees them all, on several ports.
#[test]
fn multiport_and_autoexpire() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    let ns = Netns::bare(&format!("kcpd-ft-{}-multi", std::process::id()));
    ns.run(|| {
        let c = Case {
            smuxver: 2,
            client_extra: &["--autoexpire", "1", "--scavengettl", "1"],
            ..case("multi", Impl::Kcpd, Impl::Kcpd)
        };
        let target = echo_target();
        let range = "127.0.0.1:31000-31002";
        let mut server = spawn(&c, Impl::Kcpd, true, range, &target.to_string());
        for port in 31000..=31002u16 {
            let a: SocketAddr = ([127, 0, 0, 1], port).into();
            let t = Instant::now();
            while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
                assert!(t.elapsed() < Duration::from_secs(10), "{a} never listened\n{}", server.output());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut client = spawn(&c, Impl::Kcpd, false, &local.to_string(), range);
        wait_listening(local, &mut [&mut client, &mut server]).unwrap();
        for k in 0..8u8 {
            echo_once(local, 128 << 10, k).unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.output(), server.output()));
            std::thread::sleep(Duration::from_millis(1100));
        }
        // Each session is a connection of its own (the client's ephemeral port), to one of the ports.
        let log = server.text();
        let sessions: std::collections::BTreeSet<&str> =
            log.lines().filter_map(|l| l.split("remote address: ").nth(1)?.split(' ').next()).collect();
        let ports: std::collections::BTreeSet<&str> = log
            .lines()
            .filter_map(|l| l.split("on connection: ").nth(1)?.split(" -> ").next()?.rsplit(':').next())
            .collect();
        assert!(sessions.len() >= 6, "{} sessions:\n{log}", sessions.len());
        assert!(ports.len() >= 2 && ports.iter().all(|p| ("31000"..="31002").contains(p)), "ports {ports:?}\n{log}");
        for p in [&mut client, &mut server] {
            assert!(sigterm(p).is_some_and(|s| s.success()), "{}", p.output());
        }
        assert!(!ruleset().contains("kcpd_"), "{}", ruleset());
    });
}

/// The front door holds for fake TCP as for UDP: with `--max-per-source 1` a second client from the same
/// address gets no session (counted as refused per source on SIGUSR1's `front door:` line), and the first
/// keeps working.
#[test]
fn the_front_door_caps_fake_tcp_sessions() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    let ns = Netns::bare(&format!("kcpd-ft-{}-front", std::process::id()));
    ns.run(|| {
        let c = Case { smuxver: 2, ..case("front", Impl::Kcpd, Impl::Kcpd) };
        let target = echo_target();
        let server_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut a = args(&c, Impl::Kcpd, true, &server_addr.to_string(), &target.to_string());
        a.extend(["--max-per-source".into(), "1".into()]);
        let mut server = Proc::spawn("faketcp front server", KCPD, None, &a);
        let t = Instant::now();
        while TcpStream::connect_timeout(&server_addr, Duration::from_millis(200)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "server never listened\n{}", server.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        let start_client = |what: &str| {
            let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
            let mut p = Proc::spawn(
                what,
                KCPD,
                None,
                &args(&c, Impl::Kcpd, false, &local.to_string(), &server_addr.to_string()),
            );
            wait_listening(local, &mut [&mut p]).unwrap();
            (p, local)
        };
        let (mut first, l1) = start_client("faketcp front client 1");
        echo_once(l1, 256 << 10, 1).unwrap_or_else(|e| panic!("{e}\n{}\n{}", first.output(), server.output()));
        let (mut second, l2) = start_client("faketcp front client 2");
        // The second client's session is refused: nothing comes back.
        let mut s = TcpStream::connect(l2).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        std::io::Write::write_all(&mut s, b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        assert!(
            !matches!(std::io::Read::read(&mut s, &mut buf), Ok(n) if n > 0),
            "a second session from the same source"
        );
        echo_once(l1, 256 << 10, 2).unwrap_or_else(|e| panic!("the first client stopped: {e}\n{}", server.output()));
        let line = usr1_line(&server, "front door: sessions");
        assert!(counter(&line, "per-source ") >= 1, "{line}");
        // The transport's own line: the two connections, the segments they brought.
        let line = usr1_line(&server, "fake tcp: connections");
        assert_eq!(counter(&line, "connections "), 2, "{line}");
        assert!(counter(&line, "datagrams-in ") > 100, "{line}");
        for p in [&mut second, &mut first, &mut server] {
            assert!(sigterm(p).is_some_and(|s| s.success()), "{}", p.output());
        }
        assert!(!ruleset().contains("kcpd_"), "{}", ruleset());
    });
}

/// Send `p` SIGUSR1 and return the first line of its output containing `needle`.
fn usr1_line(p: &Proc, needle: &str) -> String {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGUSR1) };
    assert!(p.wait_for(needle, 5), "no {needle:?} line\n{}", p.output());
    p.text().lines().find(|l| l.contains(needle)).unwrap().to_owned()
}

/// The number after `name` in a SIGUSR1 line (0 if absent).
fn counter(line: &str, name: &str) -> u64 {
    line.split(name).nth(1).and_then(|r| r.split([' ', ')']).next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Out of descriptors, a fake-TCP server stops accepting for a while instead of spinning on the
/// connection the kernel holds ready (its listening socket stays readable), counts the pauses on SIGUSR1's
/// `fake tcp:` line, and serves a real client once descriptors are free again.
#[test]
fn out_of_descriptors_the_listener_pauses_instead_of_spinning() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    let ns = Netns::bare(&format!("kcpd-ft-{}-emfile", std::process::id()));
    ns.run(|| {
        let c = case("emfile", Impl::Kcpd, Impl::Kcpd);
        let target = echo_target();
        let server_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut a = vec![format!("--nofile={NOFILE}:{NOFILE}"), KCPD.to_string()];
        a.extend(args(&c, Impl::Kcpd, true, &server_addr.to_string(), &target.to_string()));
        let mut server = Proc::spawn("faketcp emfile server", "prlimit", None, &a);
        let t = Instant::now();
        let mut held = Vec::new();
        while held.is_empty() {
            if let Ok(s) = TcpStream::connect_timeout(&server_addr, Duration::from_millis(200)) {
                held.push(s);
            }
            assert!(t.elapsed() < Duration::from_secs(10), "server never listened\n{}", server.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Plain connections until kcpd has no descriptor left for the next (the kernel completes the
        // handshakes of the backlog anyway).
        for _ in 0..NOFILE {
            held.push(TcpStream::connect(server_addr).expect("the backlog takes it"));
        }
        std::thread::sleep(Duration::from_secs(1));
        let cpu = || {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.child.id())).unwrap();
            let f: Vec<u64> =
                stat.rsplit(')').next().unwrap().split_whitespace().filter_map(|x| x.parse().ok()).collect();
            f[10] + f[11] // utime + stime, clock ticks
        };
        let (c0, t0) = (cpu(), Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        let (ticks, secs) = (cpu() - c0, t0.elapsed().as_secs_f64());
        let line = usr1_line(&server, "fake tcp: connections");
        let paused = counter(&line, "accept-paused ");
        // A pause lasts 250 ms: a handful a second, not one per loop turn. A spinning shard takes a
        // whole core (100 ticks a second); a pausing one next to nothing.
        assert!(paused >= 1 && (paused as f64) <= 8.0 * (secs + 2.0), "{line}");
        assert!((ticks as f64) < 30.0 * secs, "{ticks} ticks of CPU in {secs:.1} s: spinning\n{line}");
        // Descriptors back: a real client gets through.
        drop(held);
        std::thread::sleep(Duration::from_millis(500));
        let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut client = Proc::spawn(
            "faketcp emfile client",
            KCPD,
            None,
            &args(&c, Impl::Kcpd, false, &local.to_string(), &server_addr.to_string()),
        );
        wait_listening(local, &mut [&mut client]).unwrap();
        echo_once(local, 256 << 10, 3).unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.output(), server.output()));
        for p in [&mut client, &mut server] {
            assert!(sigterm(p).is_some_and(|s| s.success()), "{}", p.output());
        }
        assert!(!ruleset().contains("kcpd_"), "{}", ruleset());
    });
}

/// The descriptor limit of the server in [`out_of_descriptors_the_listener_pauses_instead_of_spinning`].
const NOFILE: u64 = 48;

/// Every `--crypt` method over fake TCP, kcpd ↔ kcpd (the datagrams inside are UDP mode's, whatever the
/// method).
#[test]
fn every_crypt_method() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    for crypt in [
        "aes",
        "aes-128",
        "aes-192",
        "salsa20",
        "blowfish",
        "twofish",
        "cast5",
        "3des",
        "tea",
        "xtea",
        "xor",
        "sm4",
        "none",
        "null",
        "aes-128-gcm",
    ] {
        let name: &'static str = Box::leak(format!("crypt-{crypt}").into_boxed_str());
        run_case(Case { crypt, bytes: 256 << 10, streams: 1, smuxver: 2, ..case(name, Impl::Kcpd, Impl::Kcpd) });
    }
}

/// Hosts without nft: tagged iptables rules (`KCPD_FIREWALL=iptables` forces that path), there while kcpd
/// runs, gone after SIGTERM.
#[test]
fn the_iptables_path_works_and_cleans_up() {
    if !privileged("--tcp (raw sockets, firewall rules, network namespaces)") {
        return;
    }
    let ns = Netns::bare(&format!("kcpd-ft-{}-ipt", std::process::id()));
    ns.run(|| {
        let c = case("ipt", Impl::Kcpd, Impl::Kcpd);
        let target = echo_target();
        let server_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let spawn_ipt = |server: bool, listen: &str, peer: &str| {
            let what = format!("faketcp ipt {}", if server { "server" } else { "client" });
            let log = scratch().join(format!("{}.log", what.replace(' ', "_")));
            let f = std::fs::File::create(&log).unwrap();
            let child = std::process::Command::new(KCPD)
                .args(args(&c, Impl::Kcpd, server, listen, peer))
                .env("KCPD_FIREWALL", "iptables")
                .stdin(std::process::Stdio::null())
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .spawn()
                .unwrap();
            Proc { child, log, what }
        };
        let mut server = spawn_ipt(true, &server_addr.to_string(), &target.to_string());
        let t = Instant::now();
        while TcpStream::connect_timeout(&server_addr, Duration::from_millis(200)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "server never listened\n{}", server.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut client = spawn_ipt(false, &local.to_string(), &server_addr.to_string());
        wait_listening(local, &mut [&mut client, &mut server]).unwrap();
        echo_once(local, 1 << 20, 9).unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.output(), server.output()));
        let ipt = || {
            let out = std::process::Command::new("iptables").args(["-S", "OUTPUT"]).output().expect("iptables runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        for p in [&mut client, &mut server] {
            let own = format!("kcpd_{}_", p.child.id());
            let rules = ipt();
            assert!(rules.contains(&own) && rules.contains("--ttl-eq 1"), "{}: no tagged rule:\n{rules}", p.what);
            assert!(!ruleset().contains(&format!("table inet {own}")), "{}: an nft table too", p.what);
            assert!(sigterm(p).is_some_and(|s| s.success()), "{}", p.output());
            assert!(!ipt().contains(&own), "{}: rules left:\n{}", p.what, ipt());
        }
    });
}
