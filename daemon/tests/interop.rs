//! Live interop with the real kcptun (Debian `kcptun-client`/`kcptun-server`, DEB profile: kcp-go 5.6.1,
//! smux 1.5.16), and kcpd ↔ kcpd for the NEW-only features.
//!
//! The matrix: every crypt method in both directions (kcpd client → kcptun server, kcptun client → kcpd
//! server), with FEC {10/3, 0/0} × compression {on, off} × smuxver {1, 2} × mode {fast3, normal} ×
//! streams {1, 8} covered pairwise (an L8 orthogonal array), one 16 MB-each-way transfer per method and
//! 1 MB elsewhere; some cells through the impairment relay under loss. Every byte is checked.
//!
//! The Debian binaries are called by absolute path. Missing ones fail the test with the command that
//! installs them (`KCPD_SKIP_INTEROP=1` skips it, for machines that cannot have them).
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kcpd_datapath::io::sim::{Link, Loss};
use kcpd_netem::{Relay, RelayConfig};

mod common;
use common::*;

pub const CRYPTS: [&str; 13] = [
    "aes", "aes-128", "aes-192", "salsa20", "blowfish", "twofish", "cast5", "3des", "tea", "xtea", "xor", "sm4", "none",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Kcpd,
    /// kcpd through its `kcptun-*` drop-in name, with Go-style single-dash flags.
    KcpdDropIn,
    Kcptun,
}

#[derive(Clone, Debug)]
struct Cell {
    crypt: &'static str,
    client: Impl,
    server: Impl,
    fec: (u8, u8),
    comp: bool,
    smuxver: Option<u8>,
    mode: &'static str,
    streams: usize,
    bytes: usize,
    loss: f64,
    /// Extra flags for both ends (kcpd ↔ kcpd features).
    extra: Vec<String>,
    /// Extra flags for kcpd ends only (sender-side features a stock peer need not know).
    kcpd_extra: Vec<String>,
    /// `host:min-max` multiport on both ends.
    ports: u16,
    conns: usize,
}

impl Cell {
    fn name(&self) -> String {
        format!(
            "{:?}>{:?} {} fec{}/{} comp={} smux={:?} {} x{} {}B loss={} {} {}",
            self.client,
            self.server,
            self.crypt,
            self.fec.0,
            self.fec.1,
            self.comp,
            self.smuxver,
            self.mode,
            self.streams,
            self.bytes,
            self.loss,
            self.extra.join(" "),
            self.kcpd_extra.join(" ")
        )
    }
}

fn flag(imp: Impl, name: &str) -> String {
    if imp == Impl::KcpdDropIn { format!("-{name}") } else { format!("--{name}") }
}

/// The flags of one end, as a kcptun operator writes them.
fn args(cell: &Cell, imp: Impl, server: bool, listen: &str, peer: &str) -> Vec<String> {
    let f = |n: &str| flag(imp, n);
    let mut a = Vec::new();
    if imp == Impl::Kcpd {
        a.push(if server { "server" } else { "client" }.to_string());
    }
    if server {
        a.extend([f("listen"), listen.into(), f("target"), peer.into()]);
    } else {
        a.extend([f("localaddr"), listen.into(), f("remoteaddr"), peer.into(), f("conn"), cell.conns.to_string()]);
    }
    // Both value styles: `-key=x` (drop-in, Go style) and `--key x`.
    if imp == Impl::KcpdDropIn {
        a.push(format!("{}=interop-key", f("key")));
    } else {
        a.extend([f("key"), "interop-key".into()]);
    }
    a.extend([f("crypt"), cell.crypt.into(), f("mode"), cell.mode.into()]);
    a.extend([f("datashard"), cell.fec.0.to_string(), f("parityshard"), cell.fec.1.to_string()]);
    a.extend([f("sndwnd"), "1024".into(), f("rcvwnd"), "1024".into()]);
    if !cell.comp {
        a.push(f("nocomp"));
    }
    if let Some(v) = cell.smuxver {
        a.extend([f("smuxver"), v.to_string()]);
    }
    if imp != Impl::Kcptun {
        a.extend(["--threads".into(), "1".into()]);
    }
    a.push(f("quiet"));
    a.extend(cell.extra.iter().cloned());
    if imp != Impl::Kcptun {
        a.extend(cell.kcpd_extra.iter().cloned());
    }
    a
}

fn start(cell: &Cell, imp: Impl, server: bool, listen: &str, peer: &str) -> Proc {
    let what = format!("{} {}", if server { "server" } else { "client" }, cell.name());
    let a = args(cell, imp, server, listen, peer);
    match (imp, server) {
        (Impl::Kcptun, true) => Proc::spawn(&what, KCPTUN_SERVER, None, &a),
        (Impl::Kcptun, false) => Proc::spawn(&what, KCPTUN_CLIENT, None, &a),
        (Impl::KcpdDropIn, true) => Proc::spawn(&what, KCPD, Some(&scratch().join("kcptun-server")), &a),
        (Impl::KcpdDropIn, false) => Proc::spawn(&what, KCPD, Some(&scratch().join("kcptun-client")), &a),
        (Impl::Kcpd, _) => Proc::spawn(&what, KCPD, None, &a),
    }
}

fn run_cell(cell: &Cell) -> Result<Duration, String> {
    let target = echo_target();
    let udp = if cell.ports > 1 {
        // A run of free ports for multiport.
        loop {
            let base = free_udp_port();
            if base < 65000 && (1..cell.ports).all(|k| UdpSocket::bind(("127.0.0.1", base + k)).is_ok()) {
                break base;
            }
        }
    } else {
        free_udp_port()
    };
    let listen =
        if cell.ports > 1 { format!("127.0.0.1:{udp}-{}", udp + cell.ports - 1) } else { format!("127.0.0.1:{udp}") };
    let mut server = start(cell, cell.server, true, &listen, &target.to_string());
    let relay = (cell.loss > 0.0).then(|| {
        let link = Link { loss: Loss::Bernoulli(cell.loss), ..Link::default() };
        Relay::start(RelayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: format!("127.0.0.1:{udp}").parse().unwrap(),
            up: link,
            down: link,
            seed: 7,
            sockbuf: None,
        })
        .unwrap()
    });
    let remote = match &relay {
        Some(r) => r.local_addr().to_string(),
        None => listen.clone(),
    };
    let tcp = free_tcp_port();
    let local: SocketAddr = format!("127.0.0.1:{tcp}").parse().unwrap();
    let mut client = start(cell, cell.client, false, &local.to_string(), &remote);
    let report = |e: String, c: &Proc, s: &Proc| format!("{}: {e}\n{}\n{}", cell.name(), c.output(), s.output());
    if let Err(e) = wait_listening(local, &mut [&mut client, &mut server]) {
        return Err(report(e, &client, &server));
    }
    let t = Instant::now();
    let per = cell.bytes / cell.streams;
    let hs: Vec<_> = (0..cell.streams).map(|k| std::thread::spawn(move || echo_once(local, per, k as u8))).collect();
    let mut errs = Vec::new();
    for h in hs {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errs.push(e),
            Err(_) => errs.push("stream thread panicked".into()),
        }
    }
    if !errs.is_empty() {
        return Err(report(errs.join("; "), &client, &server));
    }
    Ok(t.elapsed())
}

/// Run cells, a few at a time; every failure reported at the end.
fn run_all(cells: Vec<Cell>, parallel: usize) {
    let cells = Arc::new(cells);
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..parallel)
        .map(|_| {
            let (cells, next, failures) = (cells.clone(), next.clone(), failures.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(cell) = cells.get(i) else { return };
                    match run_cell(cell) {
                        Ok(d) => eprintln!("ok   {:>6.2}s  {}", d.as_secs_f64(), cell.name()),
                        Err(e) => {
                            eprintln!("FAIL {}", cell.name());
                            failures.lock().unwrap().push(e);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let f = failures.lock().unwrap();
    assert!(f.is_empty(), "{} of {} cells failed:\n{}", f.len(), cells.len(), f.join("\n\n"));
}

/// L8(2^7) orthogonal array: any two columns show all four level pairs, each twice.
const L8: [[u8; 7]; 8] = [
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 1, 1, 1, 1],
    [0, 1, 1, 0, 0, 1, 1],
    [0, 1, 1, 1, 1, 0, 0],
    [1, 0, 1, 0, 1, 0, 1],
    [1, 0, 1, 1, 0, 1, 0],
    [1, 1, 0, 0, 1, 1, 0],
    [1, 1, 0, 1, 0, 0, 1],
];

fn base(crypt: &'static str, client: Impl, server: Impl) -> Cell {
    Cell {
        crypt,
        client,
        server,
        fec: (10, 3),
        comp: true,
        smuxver: Some(1),
        mode: "fast3",
        streams: 1,
        bytes: 1 << 20,
        loss: 0.0,
        extra: Vec::new(),
        kcpd_extra: Vec::new(),
        ports: 1,
        conns: 1,
    }
}

/// Every crypt method, both directions, the other dimensions pairwise (column 0: direction, 1: FEC,
/// 2: compression, 3: smuxver, 4: mode, 5: streams); one 16 MB-each-way cell per method.
#[test]
fn kcptun_matrix() {
    if !kcptun_present() {
        return;
    }
    let mut cells = Vec::new();
    for (j, crypt) in CRYPTS.into_iter().enumerate() {
        for (k, row) in [L8[j % 4], L8[j % 4 + 4]].into_iter().enumerate() {
            let kcpd = if j % 2 == 0 { Impl::KcpdDropIn } else { Impl::Kcpd };
            let (client, server) = if row[0] == 0 { (kcpd, Impl::Kcptun) } else { (Impl::Kcptun, kcpd) };
            let large = k == j % 2;
            cells.push(Cell {
                fec: if row[1] == 0 { (10, 3) } else { (0, 0) },
                comp: row[2] == 0,
                smuxver: Some(if row[3] == 0 { 1 } else { 2 }),
                mode: if row[4] == 0 { "fast3" } else { "normal" },
                streams: if row[5] == 0 { 1 } else { 8 },
                bytes: if large { 16 << 20 } else { 1 << 20 },
                ..base(crypt, client, server)
            });
        }
    }
    run_all(cells, 4);
}

/// Across implementations under loss, through the relay: FEC recovery and retransmission both ways.
#[test]
fn kcptun_under_loss() {
    if !kcptun_present() {
        return;
    }
    let cells = vec![
        Cell { loss: 0.03, bytes: 4 << 20, streams: 4, ..base("aes", Impl::Kcpd, Impl::Kcptun) },
        Cell { loss: 0.03, bytes: 4 << 20, streams: 4, ..base("aes", Impl::Kcptun, Impl::Kcpd) },
        Cell { loss: 0.05, bytes: 2 << 20, fec: (0, 0), smuxver: Some(2), ..base("salsa20", Impl::Kcpd, Impl::Kcptun) },
        Cell { loss: 0.01, bytes: 2 << 20, comp: false, mode: "normal", ..base("aes-128", Impl::Kcptun, Impl::Kcpd) },
    ];
    run_all(cells, 4);
}

/// A kcpd server started without --smuxver serves DEB kcptun clients of either version.
#[test]
fn kcpd_server_detects_kcptun_smux_version() {
    if !kcptun_present() {
        return;
    }
    let cells = [1, 2]
        .into_iter()
        .map(|v| {
            let mut c = base("aes", Impl::Kcptun, Impl::Kcpd);
            c.smuxver = Some(v);
            // Only the client is told the version.
            c.extra = Vec::new();
            c
        })
        .collect::<Vec<_>>();
    // The server end gets no --smuxver: build its flags without it by running the cell with a server-only
    // override below.
    for cell in cells {
        let target = echo_target();
        let udp = free_udp_port();
        let mut sargs = args(
            &Cell { smuxver: None, ..cell.clone() },
            Impl::Kcpd,
            true,
            &format!("127.0.0.1:{udp}"),
            &target.to_string(),
        );
        sargs.retain(|a| a != "--smuxver");
        let mut server = Proc::spawn("server autodetect", KCPD, None, &sargs);
        let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let mut client = start(&cell, Impl::Kcptun, false, &local.to_string(), &format!("127.0.0.1:{udp}"));
        wait_listening(local, &mut [&mut client, &mut server]).unwrap();
        echo_once(local, 1 << 20, 1)
            .unwrap_or_else(|e| panic!("smuxver {:?}: {e}\n{}\n{}", cell.smuxver, client.output(), server.output()));
    }
}

/// `--cc bbr` is sender-side only: a kcpd end pacing, capping what is in flight and growing its windows
/// talks to stock kcptun in both directions, under loss, byte-exact.
#[test]
fn bbr_against_stock_kcptun() {
    if !kcptun_present() {
        return;
    }
    let bbr = vec!["--cc".to_string(), "bbr".to_string()];
    let cells = vec![
        Cell {
            kcpd_extra: bbr.clone(),
            loss: 0.02,
            streams: 2,
            bytes: 4 << 20,
            ..base("aes", Impl::Kcpd, Impl::Kcptun)
        },
        Cell {
            kcpd_extra: bbr.clone(),
            loss: 0.02,
            streams: 2,
            bytes: 4 << 20,
            ..base("aes", Impl::Kcptun, Impl::Kcpd)
        },
        Cell {
            kcpd_extra: bbr,
            smuxver: Some(2),
            streams: 4,
            bytes: 4 << 20,
            ..base("aes-128", Impl::Kcpd, Impl::Kcpd)
        },
    ];
    run_all(cells, 3);
}

/// kcpd ↔ kcpd: the NEW-only features (null, aes-128-gcm, QPP, multiport, closewait, smux v2 defaults).
#[test]
fn kcpd_new_features() {
    let k = Impl::Kcpd;
    let mut cells = vec![
        Cell { smuxver: Some(2), streams: 4, bytes: 4 << 20, ..base("null", k, k) },
        Cell { smuxver: Some(2), streams: 4, bytes: 4 << 20, ..base("aes-128-gcm", k, k) },
        Cell {
            smuxver: None,
            extra: vec!["--QPP".into(), "--QPPCount".into(), "61".into()],
            streams: 2,
            ..base("aes", k, k)
        },
        Cell { ports: 4, conns: 4, streams: 8, bytes: 4 << 20, ..base("aes-128", k, k) },
        Cell { loss: 0.05, bytes: 4 << 20, streams: 4, smuxver: Some(2), ..base("aes-128-gcm", k, k) },
    ];
    // The server's smux version detection with a v2 client; the client side needs --smuxver.
    cells[2].smuxver = Some(2);
    run_all(cells, 3);
}

/// `--closewait`: after the client shuts down its writing side, the server keeps the stream open long
/// enough for the whole response to come back (kcptun NEW semantics; DEB closes at once).
#[test]
fn kcpd_closewait_lets_the_response_finish() {
    let cell =
        Cell { extra: vec!["--closewait".into(), "5".into()], smuxver: Some(2), ..base("aes", Impl::Kcpd, Impl::Kcpd) };
    let target = echo_target();
    let udp = free_udp_port();
    let mut server = start(&cell, Impl::Kcpd, true, &format!("127.0.0.1:{udp}"), &target.to_string());
    let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut client = start(&cell, Impl::Kcpd, false, &local.to_string(), &format!("127.0.0.1:{udp}"));
    wait_listening(local, &mut [&mut client, &mut server]).unwrap();
    let mut s = TcpStream::connect(local).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let data = vec![0x42u8; 2 << 20];
    s.write_all(&data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    let r = s.read_to_end(&mut back);
    assert!(r.is_ok() || back.len() == data.len(), "{r:?}");
    assert_eq!(back.len(), data.len(), "\n{}\n{}", client.output(), server.output());
}

/// Bad flags exit non-zero with a message (kcptun exits 0); a drop-in name behaves as its subcommand.
#[test]
fn usage_errors_and_drop_in_names() {
    let out = Command::new(KCPD).args(["client", "--no-such-flag"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-flag"), "{out:?}");
    let out = Command::new(KCPD).args(["server", "--crypt", "rot13"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rot13"), "{out:?}");
    let out = Command::new(scratch().join("kcptun-server")).arg("-h").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("target"), "{out:?}");
}

/// A kcptun JSON config (`-c`, kcptun's keys) on a kcpd server, with a kcptun client using flags.
#[test]
fn kcptun_json_config() {
    if !kcptun_present() {
        return;
    }
    let target = echo_target();
    let udp = free_udp_port();
    let json = scratch().join("server.json");
    std::fs::write(
        &json,
        format!(
            r#"{{"listen": "127.0.0.1:{udp}", "target": "{target}", "key": "json key", "crypt": "twofish",
                "mode": "fast2", "datashard": 5, "parityshard": 2, "nocomp": true, "SmuxVer": 1,
                "sockbuf": 1048576, "keepalive": 5, "unknown-key": [1, 2]}}"#
        ),
    )
    .unwrap();
    let mut server =
        Proc::spawn("server json", KCPD, None, &["server".into(), "-c".into(), json.display().to_string()]);
    let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let cargs: Vec<String> = [
        "-l",
        &local.to_string(),
        "-r",
        &format!("127.0.0.1:{udp}"),
        "-key",
        "json key",
        "-crypt",
        "twofish",
        "-mode",
        "fast2",
        "-ds",
        "5",
        "-ps",
        "2",
        "-nocomp",
        "-smuxver",
        "1",
        "-quiet",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut client = Proc::spawn("kcptun client json", KCPTUN_CLIENT, None, &cargs);
    wait_listening(local, &mut [&mut client, &mut server]).unwrap();
    echo_once(local, 4 << 20, 3).unwrap_or_else(|e| panic!("{e}\n{}\n{}", client.output(), server.output()));
}

/// SIGUSR1 dumps the counters in kcptun's format, `--snmplog` writes the CSV each period (Go time layout in
/// the name), SIGTERM stops the process promptly and cleanly.
#[test]
fn signals_and_snmplog() {
    let dir = scratch().join("snmp");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("server.log");
    let udp = free_udp_port();
    let target = echo_target();
    let args: Vec<String> = [
        "server",
        "-l",
        &format!("127.0.0.1:{udp}"),
        "-t",
        &target.to_string(),
        "--log",
        &log.display().to_string(),
        "--snmplog",
        &format!("{}/snmp-20060102.log", dir.display()),
        "--snmpperiod",
        "1",
        "--threads",
        "1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut p = Proc::spawn("server signals", KCPD, None, &args);
    std::thread::sleep(Duration::from_millis(1600));
    let pid = p.child.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGUSR1) };
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("KCP SNMP:&{BytesSent:0 BytesReceived:0 MaxConn:0"), "{text}");
    let csv: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("snmp-2"))
        .collect();
    assert_eq!(csv.len(), 1, "one snmplog file named by the date");
    let rows = std::fs::read_to_string(csv[0].path()).unwrap();
    assert!(rows.starts_with("Unix,BytesSent,BytesReceived,MaxConn,"), "{rows}");
    assert!(rows.lines().count() >= 2, "{rows}");
    let t = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let st = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}");
}

/// A kcpd client without `--smuxver` (v2 first) against Debian's kcptun server (v1 unless told otherwise):
/// the first session dies of the mismatch, the client says why and what to do, switches to v1 by itself,
/// and the next connection works. Default keepalive: the v1 server's first keepalive frame, ~20 s in,
/// reveals its version.
#[test]
fn kcpd_client_without_smuxver_falls_back_to_a_debian_server() {
    if !kcptun_present() {
        return;
    }
    let target = echo_target();
    let udp = free_udp_port();
    let remote = format!("127.0.0.1:{udp}");
    let key = ["--key", "fallback", "--crypt", "aes"].map(String::from);
    let mut sargs: Vec<String> = ["-l", &remote, "-t", &target.to_string()].map(String::from).to_vec();
    sargs.extend(key.clone());
    let mut server = Proc::spawn("kcptun server v1", KCPTUN_SERVER, None, &sargs);
    let local: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut cargs: Vec<String> = ["client", "-l", &local.to_string(), "-r", &remote].map(String::from).to_vec();
    cargs.extend(key);
    let mut client = Proc::spawn("kcpd client, no --smuxver", KCPD, None, &cargs);
    wait_listening(local, &mut [&mut client, &mut server]).unwrap();
    let t = Instant::now();
    let first = echo_once(local, 1000, 1);
    assert!(first.is_err(), "a v2 stream cannot pass a v1 server");
    let show = || format!("\n{}\n{}", client.output(), server.output());
    assert!(client.wait_for("speak smux v1 instead of v2", 45), "no fallback{}", show());
    let text = client.text();
    assert!(text.contains("smux version mismatch"), "no diagnosis{}", show());
    assert!(text.contains("--smuxver 1"), "the fix is named{}", show());
    eprintln!("fallback after {:?}", t.elapsed());
    echo_once(local, 1 << 20, 2).unwrap_or_else(|e| panic!("after the fallback: {e}{}", show()));
    assert!(client.text().contains("smux version: 1 on connection: "), "{}", show());
}

/// `--snmp-layout deb` writes the CSV header Debian's kcptun itself writes (read from its --snmplog).
#[test]
fn deb_snmp_layout_matches_debian_kcptun() {
    if !kcptun_present() {
        return;
    }
    let dir = scratch().join("snmp-layouts");
    std::fs::create_dir_all(&dir).unwrap();
    let header = |what: &str, bin: &str, pre: &[&str], extra: &[&str]| {
        let log = dir.join(format!("{}.csv", what.replace(' ', "-")));
        let mut a: Vec<String> = pre.iter().map(|s| s.to_string()).collect();
        let listen = format!("127.0.0.1:{}", free_udp_port());
        a.extend(["-l", &listen, "-t", "127.0.0.1:9", "--snmpperiod", "1"].map(String::from));
        a.extend(["--snmplog".to_string(), log.display().to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        let p = Proc::spawn(what, bin, None, &a);
        let t = Instant::now();
        loop {
            if let Some(h) = std::fs::read_to_string(&log).ok().and_then(|s| s.lines().next().map(String::from)) {
                return h;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "no snmplog from {what}\n{}", p.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let theirs = header("kcptun deb", KCPTUN_SERVER, &[], &[]);
    let ours = header("kcpd deb", KCPD, &["server"], &["--snmp-layout", "deb"]);
    assert_eq!(ours, theirs);
    assert_eq!(theirs.split(',').count(), 25);
    assert_ne!(header("kcpd new", KCPD, &["server"], &[]), theirs, "the default stays the NEW layout");
}
