//! Operating a kcpd process as a kcptun user would: a port that is already taken, the runtime log
//! (kcptun's lines, `--quiet`), the `--sockbuf` warning of an unprivileged process, `--snmp-layout deb`
//! and an unwritable `--snmplog`, `-V`.
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn server(what: &str, listen: &str, target: &str, extra: &[&str]) -> Proc {
    let mut a = args(&["server", "-l", listen, "-t", target, "--key", "ops", "--threads", "2"]);
    a.extend(args(extra));
    Proc::spawn(what, KCPD, None, &a)
}

fn client(what: &str, local: SocketAddr, remote: &str, extra: &[&str]) -> Proc {
    let mut a = args(&["client", "-l", &local.to_string(), "-r", remote, "--key", "ops", "--threads", "2"]);
    a.extend(args(extra));
    Proc::spawn(what, KCPD, None, &a)
}

fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap()
}

/// `streams` byte-checked echoes at once through `local`.
fn echo_streams(local: SocketAddr, streams: usize, bytes: usize) -> Result<(), String> {
    let hs: Vec<_> = (0..streams).map(|k| std::thread::spawn(move || echo_once(local, bytes, k as u8))).collect();
    hs.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
}

/// Exit status and everything printed by a kcpd that is expected to refuse to start.
fn refused(mut p: Proc) -> String {
    let st = p.wait_exit(10).unwrap_or_else(|| panic!("{} still runs\n{}", p.what, p.output()));
    assert!(!st.success(), "{}: {st}\n{}", p.what, p.output());
    p.text()
}

/// SO_REUSEPORT would let a second kcpd join the first one's sockets and take half its new sessions; it
/// must refuse instead, for the server's UDP port (a range too) and for the client's TCP port, while the
/// first keeps serving every session.
#[test]
fn a_second_instance_on_the_same_port_fails_and_the_first_keeps_serving() {
    let target = echo_target().to_string();
    let udp = free_udp_port();
    let listen = format!("127.0.0.1:{udp}");
    let mut first = server("first server", &listen, &target, &[]);
    let local = local_addr();
    let mut c = client("first client", local, &listen, &["--conn", "2"]);
    wait_listening(local, &mut [&mut c, &mut first]).unwrap();
    echo_streams(local, 4, 256 << 10).unwrap_or_else(|e| panic!("{e}\n{}\n{}", c.output(), first.output()));

    let text = refused(server("second server", &listen, &target, &[]));
    assert!(text.contains(&format!("address already in use: {listen}")), "{text}");
    let range = format!("127.0.0.1:{}-{}", udp - 1, udp);
    if UdpSocket::bind(("127.0.0.1", udp - 1)).is_ok() {
        let text = refused(server("second server, range", &range, &target, &[]));
        assert!(text.contains(&format!("address already in use: {listen}")), "{text}");
    }
    let text = refused(client("second client", local, &listen, &[]));
    assert!(text.contains(&format!("address already in use: {local}")), "{text}");
    // A port another program holds: the address is named too.
    let other = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let held = UdpSocket::bind(&other);
    if held.is_ok() {
        let text = refused(server("server on a held port", &other, &target, &[]));
        assert!(text.contains(&format!("address already in use: {other}")), "{text}");
    }

    // The first pair still has every session: 8 new streams all arrive, byte for byte.
    echo_streams(local, 8, 256 << 10).unwrap_or_else(|e| panic!("{e}\n{}\n{}", c.output(), first.output()));
    assert!(first.child.try_wait().unwrap().is_none() && c.child.try_wait().unwrap().is_none());
}

/// The lines a kcptun user greps for: sessions with their conv and smux version, streams opened and closed
/// with both addresses (hidden by `--quiet`, nothing else is), a target that refuses, an expired session.
#[test]
fn the_runtime_log_speaks_kcptuns_language() {
    let target = echo_target().to_string();
    let listen = format!("127.0.0.1:{}", free_udp_port());
    // --closewait 0: the server's side of a stream closes as soon as the client's does (as DEB's).
    let mut s = server("log server", &listen, &target, &["--closewait", "0"]);
    let local = local_addr();
    let mut c = client("log client", local, &listen, &["--autoexpire", "1", "--scavengettl", "5"]);
    wait_listening(local, &mut [&mut c, &mut s]).unwrap();
    echo_once(local, 64 << 10, 1).unwrap();
    let show = |s: &Proc, c: &Proc| format!("\n{}\n{}", s.output(), c.output());
    for (p, line) in [
        (&c, "smux version: 2 on connection: 0.0.0.0:".to_string()),
        (&c, format!(" -> {listen} (conv ")),
        (&c, "stream opened in: 127.0.0.1:".to_string()),
        (&c, format!(" out: {listen}(3)")),
        (&c, "stream closed in: 127.0.0.1:".to_string()),
        (&s, "remote address: 127.0.0.1:".to_string()),
        (&s, format!("smux version: 2 on connection: {listen} -> 127.0.0.1:")),
        (&s, "(detected from its first frame)".to_string()),
        (&s, format!("(3) out: {target}")),
        (&s, "stream opened in: 127.0.0.1:".to_string()),
        (&s, "stream closed in: 127.0.0.1:".to_string()),
        // --autoexpire 1: the next connection after a second finds the session expired; --scavengettl 5
        // closes it 5 s after that.
        (&c, "scavenger: session closed due to ttl: 0.0.0.0:".to_string()),
    ] {
        if line.starts_with("scavenger") {
            std::thread::sleep(Duration::from_millis(1200));
            echo_once(local, 1000, 2).unwrap();
            assert!(c.wait_for("session expired (--autoexpire)", 5), "{}", show(&s, &c));
        }
        assert!(p.wait_for(&line, 10), "{} lacks {line:?}{}", p.what, show(&s, &c));
    }

    // A target that refuses: Go's dial error, once per stream; no stream lines for it.
    let dead = format!("127.0.0.1:{}", free_tcp_port());
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let mut s = server("dead-target server", &listen, &dead, &[]);
    let local = local_addr();
    let mut c = client("dead-target client", local, &listen, &[]);
    wait_listening(local, &mut [&mut c, &mut s]).unwrap();
    for _ in 0..3 {
        assert!(echo_once(local, 100, 3).is_err(), "nothing can answer");
    }
    let refused = format!("dial tcp {dead}: connect: connection refused");
    assert!(s.wait_for(&refused, 10), "{}", show(&s, &c));
    std::thread::sleep(Duration::from_millis(300));
    // One per stream: wait_listening's probe connection and the three echoes.
    assert_eq!(s.text().matches(&refused).count(), 4, "{}", show(&s, &c));
    assert!(!s.text().contains("stream opened"), "{}", show(&s, &c));

    // --quiet hides the stream lines and nothing else.
    let listen = format!("127.0.0.1:{}", free_udp_port());
    // --closewait 0: its stream lines, were they printed, would come at once.
    let mut s = server("quiet server", &listen, &target, &["--quiet", "--closewait", "0"]);
    let local = local_addr();
    let mut c = client("quiet client", local, &listen, &["--quiet"]);
    wait_listening(local, &mut [&mut c, &mut s]).unwrap();
    echo_once(local, 64 << 10, 4).unwrap();
    assert!(s.wait_for("remote address: 127.0.0.1:", 10) && c.wait_for("smux version: 2 on connection", 10));
    std::thread::sleep(Duration::from_millis(300));
    for p in [&s, &c] {
        assert!(!p.text().contains("stream opened") && !p.text().contains("stream closed"), "{}", show(&s, &c));
    }
}

/// A sysctl's value from /proc.
fn sysctl(name: &str) -> u64 {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().unwrap()
}

/// Without CAP_NET_ADMIN the kernel caps `--sockbuf` at net.core.rmem_max/wmem_max: kcpd says so once at
/// start-up, with what it got, the sysctl to raise and the sysctl.d file. As root (SO_RCVBUFFORCE) nothing
/// is capped, so under root the process is started as `nobody`, the way the DynamicUser units run it
/// without the capability lines.
#[test]
fn an_unprivileged_kcpd_warns_once_when_the_kernel_caps_sockbuf() {
    let (rmax, wmax) = (sysctl("net.core.rmem_max"), sysctl("net.core.wmem_max"));
    let want = rmax.max(wmax) * 2 + 1;
    assert!(want < i32::MAX as u64, "net.core.rmem_max {rmax} leaves no room to ask for more");
    let root = unsafe { libc::geteuid() } == 0;
    // nobody must be able to run the binary: a copy in a world-readable place.
    let dir = std::env::temp_dir().join(format!("kcpd-sockbuf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("kcpd");
    std::fs::copy(KCPD, &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |what: &str, unprivileged: bool, side: &[&str]| {
        let mut a = Vec::new();
        let prog = if unprivileged && root {
            a.extend(args(&["--reuid=65534", "--regid=65534", "--clear-groups", "--"]));
            a.push(bin.display().to_string());
            "setpriv".to_string()
        } else {
            bin.display().to_string()
        };
        a.extend(args(side));
        a.extend(args(&["--sockbuf", &want.to_string(), "--key", "ops", "--threads", "1"]));
        Proc::spawn(what, &prog, None, &a)
    };
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let target = echo_target().to_string();
    let s = run("unprivileged server", true, &["server", "-l", &listen, "-t", &target]);
    let c = run("unprivileged client", true, &["client", "-l", &local_addr().to_string(), "-r", &listen]);
    for p in [&s, &c] {
        assert!(p.wait_for("engine:", 10), "{}", p.output());
        std::thread::sleep(Duration::from_millis(200));
        let text = p.text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("warning: --sockbuf")).collect();
        assert_eq!(lines.len(), 1, "one warning, both buffers in it:\n{text}");
        let l = lines[0];
        assert!(!l.contains("  "), "one line of prose: {l:?}");
        for needle in [
            format!("--sockbuf {want}: the kernel granted only SO_RCVBUF {rmax} bytes and SO_SNDBUF {wmax} bytes"),
            format!("net.core.rmem_max = {rmax}"),
            format!("sysctl -w net.core.rmem_max={want} net.core.wmem_max={want}"),
            "/etc/sysctl.d/90-kcpd.conf".to_string(),
        ] {
            assert!(l.contains(&needle), "{needle:?} not in {l:?}");
        }
    }
    if root {
        // CAP_NET_ADMIN: SO_RCVBUFFORCE grants it, nothing to warn about.
        let listen = format!("127.0.0.1:{}", free_udp_port());
        let p = run("privileged server", false, &["server", "-l", &listen, "-t", &target]);
        assert!(p.wait_for("engine:", 10), "{}", p.output());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!p.text().contains("warning: --sockbuf"), "{}", p.output());
    } else {
        eprintln!("not root: the privileged half (SO_RCVBUFFORCE, no warning) was not run");
    }
    drop((s, c));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--snmp-layout deb`: the 25-column CSV of Debian's kcptun and its shorter SIGUSR1 line. An `--snmplog`
/// that cannot be written is reported once, naming the file.
#[test]
fn snmp_layout_deb_and_an_unwritable_snmplog() {
    let dir = scratch().join(format!("snmp-deb-{}", free_udp_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = echo_target().to_string();
    let log = format!("{}/snmp.log", dir.display());
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let p = server("deb layout", &listen, &target, &["--snmp-layout", "deb", "--snmplog", &log, "--snmpperiod", "1"]);
    assert!(p.wait_for("engine:", 10), "{}", p.output());
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&log).unwrap_or_default().lines().count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "no snmplog rows\n{}", p.output());
        std::thread::sleep(Duration::from_millis(100));
    }
    let csv = std::fs::read_to_string(&log).unwrap();
    let deb = kcpd_vectors::load("new/snmp_new.json")["deb_20210922_header_for_comparison"]
        .as_str()
        .unwrap()
        .split(" (")
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(csv.lines().next(), Some(deb.as_str()));
    assert!(csv.lines().all(|l| l.split(',').count() == 25), "{csv}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGUSR1) };
    assert!(p.wait_for(" FECShortShards:0}", 5), "{}", p.output());
    assert!(!p.text().contains("OOBPackets"), "the DEB struct has no OOBPackets");

    let bad = "/nonexistent-kcpd-dir/snmp-20060102.log";
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let p = server("bad snmplog", &listen, &target, &["--snmplog", bad, "--snmpperiod", "1"]);
    assert!(p.wait_for("snmplog: cannot write /nonexistent-kcpd-dir/snmp-", 5), "{}", p.output());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(p.text().matches("snmplog: cannot write").count(), 1, "once, not every period\n{}", p.output());
}

#[test]
fn version_flags() {
    for a in [&["-v"][..], &["-V"], &["--version"], &["client", "-V"], &["server", "-v"]] {
        let out = Command::new(KCPD).args(a).output().unwrap();
        assert!(out.status.success(), "{a:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("kcpd {}", env!("CARGO_PKG_VERSION")));
    }
    for side in ["client", "server"] {
        let out = Command::new(KCPD).args([side, "-h"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in ["--threads", "--io", "--no-pin", "--halfclose", "--snmp-layout", "--sockbuf", "--quiet"] {
            assert!(help.contains(flag), "kcpd {side} -h lacks {flag}:\n{help}");
        }
    }
}

/// Every stream is a descriptor: kcpd raises its soft RLIMIT_NOFILE to the hard limit at start-up and
/// says so.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    let listen = format!("127.0.0.1:{}", free_udp_port());
    let cmd = format!("ulimit -Sn 256 && exec {KCPD} server -l {listen} -t 127.0.0.1:9 --key ops --threads 1");
    let s = Proc::spawn("nofile server", "/bin/sh", None, &args(&["-c", &cmd]));
    assert!(s.wait_for("open files limit: raised from 256 to ", 10), "{}", s.output());
    assert!(s.wait_for("memory budget: 512 MiB of received data", 10), "{}", s.output());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    let v: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(v[3], v[4], "soft limit not raised to the hard one: {line}");
    assert_ne!(v[3], "256", "{line}");
    // SIGUSR1: kcptun's SNMP line, then the front door's counters.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGUSR1) };
    assert!(
        s.wait_for("front door: sessions 0 refused total-cap 0 per-source 0 rate 0 memory 0 replays 0", 10),
        "{}",
        s.output()
    );
}
