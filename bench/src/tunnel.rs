//! `kcpd-bench tunnel`: kcpd and kcptun side by side on the same machine, same flags, same scenarios.
//!
//! Each run starts a tunnel server and client (separate processes: `kcpd` or Debian's `kcptun-*`), the
//! `kcpd-netem` relay between them for impaired scenarios (clean ones go straight to the server, so the
//! relay's CPU never caps them), and drives an in-process target and load generator. Measured per run:
//! goodput (every byte checked against a seeded stream), CPU seconds of each tunnel process (from /proc),
//! peak RSS, request/response latency (64-byte messages), the retransmitted share (SNMP via SIGUSR1), the
//! relay's drops and the kernel's UDP receive-buffer drops. Repetitions interleave the pairs; figures are
//! medians. Where it can, the bench runs in a network namespace of its own (`unshare -n`) so the kernel's
//! UDP counters belong to it.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::measure::median;

/// Flags of both implementations, as a kcptun operator sets them for a fast path: fast3, windows sized to
/// a 100 Mbit/s × 40 ms path (1024 packets), FEC 10/3, smux v2, 4 MiB socket buffers.
const COMMON: &[&str] = &[
    "--key",
    "kcpd-bench",
    "--crypt",
    "aes",
    "--mode",
    "fast3",
    "--sndwnd",
    "1024",
    "--rcvwnd",
    "1024",
    "--ds",
    "10",
    "--ps",
    "3",
    "--smuxver",
    "2",
    "--sockbuf",
    "4194304",
    "--quiet",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impl {
    Kcpd,
    Kcptun,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Kcpd => "kcpd",
            Impl::Kcptun => "kcptun",
        }
    }
}

type Pair = (Impl, Impl);

fn pair_name(p: Pair) -> String {
    format!("{}→{}", p.0.name(), p.1.name())
}

#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    /// kcpd-netem flags; `None`: no relay.
    pub(crate) relay: Option<Vec<&'static str>>,
    /// Loss (%) for the goodput-vs-loss plot.
    pub(crate) loss_pct: Option<f64>,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario { name: "clean", relay: None, loss_pct: None },
        Scenario { name: "20ms+1%", relay: Some(vec!["--delay-ms", "20", "--loss", "0.01"]), loss_pct: Some(1.0) },
        Scenario { name: "20ms+5%", relay: Some(vec!["--delay-ms", "20", "--loss", "0.05"]), loss_pct: Some(5.0) },
        Scenario { name: "20ms+10%", relay: Some(vec!["--delay-ms", "20", "--loss", "0.10"]), loss_pct: Some(10.0) },
        Scenario {
            name: "20ms+bursty5%",
            relay: Some(vec!["--delay-ms", "20", "--burst-loss", "0.05,4"]),
            loss_pct: None,
        },
        Scenario { name: "40ms", relay: Some(vec!["--delay-ms", "20"]), loss_pct: None },
        Scenario { name: "150ms+2%", relay: Some(vec!["--delay-ms", "75", "--loss", "0.02"]), loss_pct: None },
        Scenario {
            name: "100Mbit+2%",
            relay: Some(vec!["--delay-ms", "20", "--rate-mbit", "100", "--queue-bytes", "262144", "--loss", "0.02"]),
            loss_pct: None,
        },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Workload {
    Upload,
    Download,
    Streams16,
    LatencyIdle,
    LatencyBulk,
    IdleSessions,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Upload => "upload",
            Workload::Download => "download",
            Workload::Streams16 => "16 streams up",
            Workload::LatencyIdle => "latency idle",
            Workload::LatencyBulk => "latency + bulk",
            Workload::IdleSessions => "1000 idle sessions",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    goodput: f64,
    /// CPU seconds of client + server per GB of goodput.
    cpu_per_gb: Option<f64>,
    /// Peak RSS of the server (idle sessions: RSS with them open), MB.
    rss_mb: f64,
    lat_us: Option<(u64, u64, u64)>,
    retrans_share: Option<f64>,
    relay_drops: u64,
    kernel_drops: u64,
    relay_cpu: f64,
    errors: u64,
}

pub struct Opts {
    pub reps: usize,
    pub seconds: f64,
    pub quick: bool,
    pub out: PathBuf,
    pub pairs: Vec<String>,
    /// Only these scenarios (empty: all the plan has).
    pub scenarios: Vec<String>,
    /// Extra flags for both kcpd ends.
    pub kcpd_flags: Vec<String>,
    pub kcptun_dir: PathBuf,
}

/// [`Opts::kcpd_flags`], for every kcpd process this run starts.
static KCPD_FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

// ---- data: a seeded byte stream both ends can regenerate ----

struct Stream {
    s: u64,
    word: [u8; 8],
    pos: usize,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Stream { s: seed | 1, word: [0; 8], pos: 8 }
    }

    fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        while i < out.len() {
            if self.pos == 8 {
                self.s ^= self.s << 13;
                self.s ^= self.s >> 7;
                self.s ^= self.s << 17;
                self.word = self.s.to_le_bytes();
                self.pos = 0;
            }
            let n = (8 - self.pos).min(out.len() - i);
            out[i..i + n].copy_from_slice(&self.word[self.pos..self.pos + n]);
            self.pos += n;
            i += n;
        }
    }
}

/// Counters the target and the load generator share with the run.
#[derive(Default)]
pub(crate) struct Meter {
    pub(crate) up: AtomicU64,
    pub(crate) down: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// The target: first byte of a connection picks what it does. `U`+seed: read and check a stream; `D`+seed:
/// send a stream; `E`: echo 64-byte messages; `I`: answer one byte, then wait for the end.
pub(crate) fn target(meter: Arc<Meter>) -> SocketAddr {
    serve(TcpListener::bind("127.0.0.1:0").expect("target bind"), meter)
}

/// [`target`] on a listener of the caller's (another network namespace's, say).
pub(crate) fn serve(l: TcpListener, meter: Arc<Meter>) -> SocketAddr {
    let a = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let m = meter.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut hdr = [0u8; 9];
                if s.read_exact(&mut hdr[..1]).is_err() {
                    return;
                }
                match hdr[0] {
                    b'U' | b'D' => {
                        if s.read_exact(&mut hdr[1..]).is_err() {
                            return;
                        }
                        let seed = u64::from_le_bytes(hdr[1..9].try_into().expect("8 bytes"));
                        if hdr[0] == b'U' {
                            let _ = check_stream(&mut s, seed, &m.up, &m.errors);
                        } else {
                            let _ = send_stream(&mut s, seed, None);
                        }
                    }
                    b'E' => {
                        let mut b = [0u8; 64];
                        while s.read_exact(&mut b).is_ok() {
                            if s.write_all(&b).is_err() {
                                break;
                            }
                        }
                    }
                    b'I' => {
                        let _ = s.write_all(b"i");
                        let mut b = [0u8; 16];
                        while let Ok(1..) = s.read(&mut b) {}
                    }
                    _ => {}
                }
            });
        }
    });
    a
}

fn send_stream(s: &mut TcpStream, seed: u64, stop: Option<&AtomicBool>) -> std::io::Result<()> {
    let mut g = Stream::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.is_some_and(|x| x.load(Ordering::Relaxed)) {
            return Ok(());
        }
        g.fill(&mut buf);
        s.write_all(&buf)?;
    }
}

fn check_stream(s: &mut TcpStream, seed: u64, count: &AtomicU64, errors: &AtomicU64) -> std::io::Result<()> {
    let mut g = Stream::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        g.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            errors.fetch_add(1, Ordering::Relaxed);
            return Err(std::io::Error::other("stream corrupted"));
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

// ---- processes ----

pub(crate) struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(bin: &Path, args: &[String], log: PathBuf) -> std::io::Result<Proc> {
        let f = std::fs::File::create(&log)?;
        let child = Command::new(bin).args(args).stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f).spawn()?;
        Ok(Proc { child, log })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// CPU seconds used so far (utime + stime).
    pub(crate) fn cpu(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = stat.rsplit_once(')').map_or("", |x| x.1);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// (VmRSS, VmHWM) in MB.
    pub(crate) fn rss(&self) -> (f64, f64) {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kb = |key: &str| {
            st.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (RetransSegs, OutSegs) from a SIGUSR1 dump (the same line in kcpd and kcptun).
    pub(crate) fn snmp(&self) -> Option<(u64, u64)> {
        self.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(300));
        let text = self.log_text();
        let line = text.lines().rev().find(|l| l.contains("KCP SNMP:&{"))?;
        let field =
            |k: &str| line.split([' ', '{', '}']).find_map(|t| t.strip_prefix(k)).and_then(|v| v.parse::<u64>().ok());
        Some((field("RetransSegs:")?, field("OutSegs:")?))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_or(0, |a| a.port())
}

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_or(0, |a| a.port())
}

/// Kernel UDP receive-buffer drops (RcvbufErrors) so far, from /proc/net/snmp.
fn kernel_drops() -> u64 {
    let t = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = t.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(h), Some(v)) = (lines.next(), lines.next()) else { return 0 };
    h.split_whitespace()
        .zip(v.split_whitespace())
        .find(|(k, _)| *k == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) struct Bins {
    pub(crate) kcpd: PathBuf,
    pub(crate) netem: PathBuf,
    pub(crate) kcptun_client: PathBuf,
    pub(crate) kcptun_server: PathBuf,
}

/// Where the tunnel's server runs: by default on loopback beside everything else; the real-path bench
/// puts it in another network namespace behind a veth pair.
#[derive(Clone, Debug)]
pub(crate) struct Site {
    /// `ip netns exec` this namespace for the server.
    pub(crate) server_ns: Option<String>,
    /// The address the server listens on (and the client or relay sends to).
    pub(crate) server_ip: std::net::IpAddr,
    /// The server's UDP port; `None`: a free one on loopback.
    pub(crate) server_port: Option<u16>,
}

impl Site {
    pub(crate) fn loopback() -> Site {
        Site { server_ns: None, server_ip: std::net::Ipv4Addr::LOCALHOST.into(), server_port: None }
    }
}

pub(crate) struct Tunnel {
    pub(crate) client: Proc,
    pub(crate) server: Proc,
    pub(crate) relay: Option<Proc>,
    pub(crate) local: SocketAddr,
    /// The server's UDP port.
    pub(crate) server_udp: u16,
}

pub(crate) fn start_tunnel(
    bins: &Bins,
    pair: Pair,
    sc: &Scenario,
    target: SocketAddr,
    conns: usize,
    dir: &Path,
) -> Result<Tunnel, String> {
    start_tunnel_with(bins, pair, sc, target, conns, dir, (&[], &[]), &Site::loopback())
}

/// [`start_tunnel`] with `extra` flags after the common ones (later flags win): the first list on both
/// ends, the second on kcpd's ends only (a mixed pair runs one of each); the server at `site`.
#[allow(clippy::too_many_arguments)] // one call per bench, each naming every part of its tunnel
pub(crate) fn start_tunnel_with(
    bins: &Bins,
    pair: Pair,
    sc: &Scenario,
    target: SocketAddr,
    conns: usize,
    dir: &Path,
    extra: (&[&str], &[&str]),
    site: &Site,
) -> Result<Tunnel, String> {
    let udp = site.server_port.unwrap_or_else(free_udp);
    let tag = format!("{}-{}-{}-{udp}", pair.0.name(), pair.1.name(), sc.name.replace(['%', '+', ' '], "_"));
    let sip = site.server_ip;
    let common: Vec<String> = COMMON.iter().chain(extra.0).map(|s| s.to_string()).collect();
    let kcpd_only = extra.1.iter().map(|s| s.to_string()).chain(KCPD_FLAGS.get().into_iter().flatten().cloned());
    let mut sargs = Vec::new();
    let sbin = match pair.1 {
        Impl::Kcpd => {
            sargs.push("server".to_string());
            &bins.kcpd
        }
        Impl::Kcptun => &bins.kcptun_server,
    };
    sargs.extend(["-l".into(), SocketAddr::new(sip, udp).to_string(), "-t".into(), target.to_string()]);
    sargs.extend(common.iter().cloned());
    if pair.1 == Impl::Kcpd {
        sargs.extend(kcpd_only.clone());
    }
    let slog = dir.join(format!("{tag}-server.log"));
    let server = match &site.server_ns {
        None => Proc::spawn(sbin, &sargs, slog),
        Some(ns) => {
            let mut a: Vec<String> = vec!["netns".into(), "exec".into(), ns.clone(), sbin.display().to_string()];
            a.extend(sargs);
            Proc::spawn(Path::new("ip"), &a, slog)
        }
    }
    .map_err(|e| format!("server: {e}"))?;
    let relay = match &sc.relay {
        None => None,
        Some(flags) => {
            let rport = free_udp();
            let mut a = vec![
                "--listen".to_string(),
                format!("127.0.0.1:{rport}"),
                "--upstream".into(),
                SocketAddr::new(sip, udp).to_string(),
            ];
            a.extend(flags.iter().map(|s| s.to_string()));
            a.extend(["--seed".into(), "7".into(), "--sockbuf".into(), "4194304".into()]);
            Some((
                Proc::spawn(&bins.netem, &a, dir.join(format!("{tag}-relay.log")))
                    .map_err(|e| format!("relay: {e}"))?,
                rport,
            ))
        }
    };
    let remote = relay.as_ref().map_or(SocketAddr::new(sip, udp), |r| SocketAddr::from(([127, 0, 0, 1], r.1)));
    let tcp = free_tcp();
    let mut cargs = Vec::new();
    let cbin = match pair.0 {
        Impl::Kcpd => {
            cargs.push("client".to_string());
            &bins.kcpd
        }
        Impl::Kcptun => &bins.kcptun_client,
    };
    cargs.extend(["-l".into(), format!("127.0.0.1:{tcp}"), "-r".into(), remote.to_string()]);
    cargs.extend(["--conn".into(), conns.to_string()]);
    cargs.extend(common);
    if pair.0 == Impl::Kcpd {
        cargs.extend(kcpd_only);
    }
    let client =
        Proc::spawn(cbin, &cargs, dir.join(format!("{tag}-client.log"))).map_err(|e| format!("client: {e}"))?;
    let local: SocketAddr = format!("127.0.0.1:{tcp}").parse().map_err(|e| format!("{e}"))?;
    let t = Instant::now();
    // Wait for the client's port without opening a stream (a bound-port probe, not a connection).
    while TcpListener::bind(local).is_ok() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(format!("{tag}: client not listening after 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Tunnel { client, server, relay: relay.map(|r| r.0), local, server_udp: udp })
}

fn connect(local: SocketAddr, hello: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(local)?;
    s.set_nodelay(true)?;
    s.write_all(hello)?;
    Ok(s)
}

/// Bulk: `streams` connections uploading (or one downloading) for the window; bytes checked at the
/// receiver.
pub(crate) fn bulk(t: &Tunnel, meter: &Arc<Meter>, wl: Workload, warm: Duration, secs: f64) -> (f64, Option<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let streams = if wl == Workload::Streams16 { 16 } else { 1 };
    let mut hs = Vec::new();
    for k in 0..streams {
        let (stop, meter, local) = (stop.clone(), meter.clone(), t.local);
        let seed = 0x1234_5678 + k as u64 * 7919;
        hs.push(std::thread::spawn(move || {
            let mut hello = vec![if wl == Workload::Download { b'D' } else { b'U' }];
            hello.extend(seed.to_le_bytes());
            let Ok(mut s) = connect(local, &hello) else {
                meter.errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            if wl == Workload::Download {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut g = Stream::new(seed);
                let mut buf = vec![0u8; 64 * 1024];
                let mut want = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            g.fill(&mut want[..n]);
                            if buf[..n] != want[..n] {
                                meter.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            meter.down.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(_) => break,
                    }
                }
            } else {
                let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
                let mut g = Stream::new(seed);
                let mut buf = vec![0u8; 64 * 1024];
                let mut off = buf.len();
                while !stop.load(Ordering::Relaxed) {
                    if off == buf.len() {
                        g.fill(&mut buf);
                        off = 0;
                    }
                    match s.write(&buf[off..]) {
                        Ok(n) => off += n,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(_) => break,
                    }
                }
            }
            let _ = s.shutdown(Shutdown::Both);
        }));
    }
    let counter = |m: &Meter| m.up.load(Ordering::Relaxed) + m.down.load(Ordering::Relaxed);
    std::thread::sleep(warm);
    let (b0, c0) = (counter(meter), t.client.cpu() + t.server.cpu());
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (b1, c1) = (counter(meter), t.client.cpu() + t.server.cpu());
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    let bytes = (b1 - b0) as f64;
    (bytes / el, (bytes > 0.0).then(|| (c1 - c0) / (bytes / 1e9)))
}

/// 64-byte request/response for the window and at least `min_samples` exchanges (up to ten windows),
/// optionally beside a bulk download; (p50, p99, max) µs.
pub(crate) fn latency(
    t: &Tunnel,
    meter: &Arc<Meter>,
    with_bulk: bool,
    warm: Duration,
    secs: f64,
    min_samples: u64,
) -> Option<(u64, u64, u64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let bulk_thread = with_bulk.then(|| {
        let (stop, local) = (stop.clone(), t.local);
        std::thread::spawn(move || {
            let mut hello = vec![b'D'];
            hello.extend(99u64.to_le_bytes());
            let Ok(mut s) = connect(local, &hello) else { return };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = vec![0u8; 256 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(0) = s.read(&mut buf) {
                    break;
                }
            }
        })
    });
    if with_bulk {
        std::thread::sleep(warm);
    }
    let mut s = connect(t.local, b"E").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok()?;
    let msg = [0x55u8; 64];
    let mut back = [0u8; 64];
    // A few round trips to open the stream before timing.
    for _ in 0..5 {
        s.write_all(&msg).ok()?;
        s.read_exact(&mut back).ok()?;
    }
    let t0 = Instant::now();
    while (t0.elapsed().as_secs_f64() < secs || h.len() < min_samples) && t0.elapsed().as_secs_f64() < secs * 10.0 {
        let t = Instant::now();
        if s.write_all(&msg).is_err() || s.read_exact(&mut back).is_err() {
            meter.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(b) = bulk_thread {
        let _ = b.join();
    }
    (!h.is_empty()).then(|| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
}

/// 1000 sessions (client `--conn 1000`, one connection each), idle: the server's RSS.
fn idle_sessions(t: &Tunnel) -> Option<f64> {
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let s = connect(t.local, b"I").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        conns.push(s);
    }
    for s in &mut conns {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
    }
    std::thread::sleep(Duration::from_secs(2));
    Some(t.server.rss().0)
}

pub(crate) fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a live rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn run_one(bins: &Bins, pair: Pair, sc: &Scenario, wl: Workload, secs: f64, dir: &Path) -> Result<Sample, String> {
    let meter = Arc::new(Meter::default());
    let tgt = target(meter.clone());
    let conns = if wl == Workload::IdleSessions { 1000 } else { 1 };
    let t = start_tunnel(bins, pair, sc, tgt, conns, dir)?;
    let warm = Duration::from_millis(if sc.relay.is_some() { 1500 } else { 700 });
    let k0 = kernel_drops();
    let r0 = t.relay.as_ref().map_or(0.0, Proc::cpu);
    let mut s = Sample::default();
    let tr = Instant::now();
    match wl {
        Workload::Upload | Workload::Download | Workload::Streams16 => {
            let (g, cpu) = bulk(&t, &meter, wl, warm, secs);
            s.goodput = g;
            s.cpu_per_gb = cpu;
        }
        Workload::LatencyIdle | Workload::LatencyBulk => {
            s.lat_us = latency(&t, &meter, wl == Workload::LatencyBulk, warm, secs, 0);
        }
        Workload::IdleSessions => {
            s.rss_mb = idle_sessions(&t).ok_or("idle sessions failed")?;
        }
    }
    let wall = tr.elapsed().as_secs_f64();
    if wl != Workload::IdleSessions {
        s.rss_mb = t.server.rss().1.max(t.client.rss().1);
    }
    s.kernel_drops = kernel_drops() - k0;
    s.relay_cpu = t.relay.as_ref().map_or(0.0, |r| (r.cpu() - r0) / wall);
    if let (Some(c), Some(sv)) = (t.client.snmp(), t.server.snmp()) {
        s.retrans_share = Some((c.0 + sv.0) as f64 / (c.1 + sv.1).max(1) as f64);
    }
    if let Some(r) = &t.relay {
        r.signal(libc::SIGUSR1);
        std::thread::sleep(Duration::from_millis(200));
        let text = r.log_text();
        let num = |line: &str, key: &str| {
            line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        };
        for prefix in ["up ", "down "] {
            if let Some(l) = text.lines().rev().find(|l| l.starts_with(prefix)) {
                s.relay_drops += num(l, "lost=") + num(l, "queue_drops=");
            }
        }
    }
    s.errors = meter.errors.load(Ordering::Relaxed);
    if s.errors > 0 {
        return Err(format!(
            "{} {} {}: {} integrity errors\n{}\n{}",
            pair_name(pair),
            sc.name,
            wl.name(),
            s.errors,
            t.client.log_text(),
            t.server.log_text()
        ));
    }
    Ok(s)
}

/// Re-run the bench in a network namespace of its own when possible; returns false when already in one
/// or when it cannot (then it runs here, and kernel counters are the machine's).
pub(crate) fn reexec_in_netns() -> Option<i32> {
    if std::env::var_os("KCPD_BENCH_NETNS").is_some() {
        // Inside: bring loopback up.
        let _ = Command::new("ip").args(["link", "set", "lo", "up"]).status();
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let ok = Command::new("unshare").args(["-n", "true"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !ok.is_ok_and(|s| s.success()) {
        eprintln!("note: no network namespace (unshare -n refused): kernel drop counters are machine-wide");
        return None;
    }
    let st = Command::new("unshare")
        .arg("-n")
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env("KCPD_BENCH_NETNS", "1")
        .status()
        .ok()?;
    Some(st.code().unwrap_or(1))
}

fn fmt_rate(b: f64) -> String {
    if b >= 100e6 { format!("{:.0} MB/s", b / 1e6) } else { format!("{:.1} MB/s", b / 1e6) }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// The binaries a tunnel run needs (kcpd and kcpd-netem beside this one, Debian's kcptun in `kcptun_dir`);
/// exits with a message when one is missing.
pub(crate) fn bins(kcptun_dir: &Path) -> Bins {
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let bins = Bins {
        kcpd: dir.join("kcpd"),
        netem: dir.join("kcpd-netem"),
        kcptun_client: kcptun_dir.join("kcptun-client"),
        kcptun_server: kcptun_dir.join("kcptun-server"),
    };
    for (what, p) in [("kcpd", &bins.kcpd), ("kcpd-netem", &bins.netem)] {
        if !p.exists() {
            eprintln!(
                "{what} not found at {}: build it first (cargo build --release -p kcpd -p kcpd-netem -p kcpd-bench)",
                p.display()
            );
            std::process::exit(2);
        }
    }
    for p in [&bins.kcptun_client, &bins.kcptun_server] {
        if !p.exists() {
            eprintln!("{} not found: sudo apt-get install -y kcptun", p.display());
            std::process::exit(2);
        }
    }
    bins
}

pub fn run(o: &Opts) {
    if let Some(code) = reexec_in_netns() {
        std::process::exit(code);
    }
    raise_nofile();
    let bins = bins(&o.kcptun_dir);
    let logs = o.out.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("cannot create {}: {e}", logs.display());
        std::process::exit(2);
    }
    let kk: Pair = (Impl::Kcpd, Impl::Kcpd);
    let tt: Pair = (Impl::Kcptun, Impl::Kcptun);
    let kt: Pair = (Impl::Kcpd, Impl::Kcptun);
    let tk: Pair = (Impl::Kcptun, Impl::Kcpd);
    let all = scenarios();
    let few: Vec<&'static str> = if o.quick { vec!["clean", "20ms+5%"] } else { vec!["clean", "20ms+1%"] };
    // The plan: (scenario, workload, pairs). Pure pairs everywhere for bulk; mixed pairs, 16 streams,
    // latency and idle sessions in fewer scenarios (the reduced product).
    let mut plan: Vec<(Scenario, Workload, Vec<Pair>)> = Vec::new();
    let _ = KCPD_FLAGS.set(o.kcpd_flags.clone());
    for sc in &all {
        if o.quick && !few.contains(&sc.name) && sc.name != "20ms+5%" {
            continue;
        }
        if !o.scenarios.is_empty() && !o.scenarios.iter().any(|n| n == sc.name) {
            continue;
        }
        plan.push((sc.clone(), Workload::Upload, vec![kk, tt]));
        plan.push((sc.clone(), Workload::Download, vec![kk, tt]));
        if sc.name == "clean" || sc.name == "20ms+5%" {
            plan.push((sc.clone(), Workload::Streams16, vec![kk, tt]));
            plan.push((sc.clone(), Workload::Upload, vec![kt, tk]));
        }
        if few.contains(&sc.name) {
            plan.push((sc.clone(), Workload::LatencyIdle, vec![kk, tt]));
            plan.push((sc.clone(), Workload::LatencyBulk, vec![kk, tt]));
        }
        if sc.name == "clean" {
            plan.push((sc.clone(), Workload::IdleSessions, vec![kk, tt]));
        }
    }
    let wanted = |p: Pair| {
        o.pairs.is_empty()
            || o.pairs.iter().any(|n| *n == pair_name(p) || *n == format!("{}-{}", p.0.name(), p.1.name()))
    };
    let started = Instant::now();
    let mut results: BTreeMap<(String, Workload, Pair), Vec<Sample>> = BTreeMap::new();
    let mut failures = Vec::new();
    for rep in 0..o.reps.max(1) {
        for (sc, wl, pairs) in &plan {
            // Interleave the pairs, alternating which goes first.
            let mut ps: Vec<Pair> = pairs.iter().copied().filter(|p| wanted(*p)).collect();
            if rep % 2 == 1 {
                ps.reverse();
            }
            for p in ps {
                let reps_here = if *wl == Workload::IdleSessions { 1 } else { o.reps };
                if rep >= reps_here {
                    continue;
                }
                match run_one(&bins, p, sc, *wl, o.seconds, &logs) {
                    Ok(s) => {
                        eprintln!(
                            "[{:>5.0}s] rep {} {:<14} {:<18} {:<14} {}",
                            started.elapsed().as_secs_f64(),
                            rep + 1,
                            sc.name,
                            wl.name(),
                            pair_name(p),
                            match (wl, s.lat_us) {
                                (Workload::IdleSessions, _) => format!("server RSS {:.1} MB", s.rss_mb),
                                (_, Some((p50, p99, mx))) => format!("p50 {p50} µs p99 {p99} µs max {mx} µs"),
                                _ => format!("{} cpu/GB {:.1}s", fmt_rate(s.goodput), s.cpu_per_gb.unwrap_or(0.0)),
                            }
                        );
                        results.entry((sc.name.to_string(), *wl, p)).or_default().push(s);
                    }
                    Err(e) => {
                        eprintln!("FAILED {e}");
                        failures.push(e);
                    }
                }
            }
        }
    }
    let report = render(&results, &plan, o, started.elapsed());
    println!("{report}");
    let _ = std::fs::write(o.out.join("results.md"), &report);
    let svg = plot(&results, &all);
    let _ = std::fs::write(o.out.join("goodput-vs-loss.svg"), svg);
    eprintln!("wrote {} and {}", o.out.join("results.md").display(), o.out.join("goodput-vs-loss.svg").display());
    if !failures.is_empty() {
        eprintln!("{} runs failed", failures.len());
        std::process::exit(1);
    }
}

fn med_of(v: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(v.iter().filter_map(f).collect())
}

fn render(
    results: &BTreeMap<(String, Workload, Pair), Vec<Sample>>,
    plan: &[(Scenario, Workload, Vec<Pair>)],
    o: &Opts,
    took: Duration,
) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "kcpd vs kcptun (Debian 20210922), same flags ({}), {cores} cores, medians of {} reps × {:.0} s, {:.0} s in all\n",
        COMMON.join(" ").replace("--quiet", "").trim(),
        o.reps,
        o.seconds,
        took.as_secs_f64()
    );
    let kk: Pair = (Impl::Kcpd, Impl::Kcpd);
    let tt: Pair = (Impl::Kcptun, Impl::Kcptun);
    let get = |sc: &str, wl: Workload, p: Pair| results.get(&(sc.to_string(), wl, p));
    let _ = writeln!(
        out,
        "| scenario | workload | kcpd goodput | kcptun goodput | ratio | kcpd CPU s/GB | kcptun CPU s/GB | ratio (kcptun/kcpd) | peak RSS kcpd / kcptun MB | retrans share kcpd / kcptun | relay drops | kernel drops |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut seen = std::collections::BTreeSet::new();
    for (sc, wl, _) in plan {
        if !matches!(wl, Workload::Upload | Workload::Download | Workload::Streams16) || !seen.insert((sc.name, *wl)) {
            continue;
        }
        let (Some(a), Some(b)) = (get(sc.name, *wl, kk), get(sc.name, *wl, tt)) else { continue };
        let ga = med_of(a, |s| Some(s.goodput));
        let gb = med_of(b, |s| Some(s.goodput));
        let ca = med_of(a, |s| s.cpu_per_gb);
        let cb = med_of(b, |s| s.cpu_per_gb);
        let ra = med_of(a, |s| Some(s.rss_mb)).unwrap_or(0.0);
        let rb = med_of(b, |s| Some(s.rss_mb)).unwrap_or(0.0);
        let pct = |v: Option<f64>| v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {} / {} | {:.0} / {:.0} | {:.0} / {:.0} |",
            sc.name,
            wl.name(),
            ga.map_or("-".into(), fmt_rate),
            gb.map_or("-".into(), fmt_rate),
            ratio(ga, gb),
            ca.map_or("-".into(), |c| format!("{c:.1}")),
            cb.map_or("-".into(), |c| format!("{c:.1}")),
            ratio(cb, ca),
            ra,
            rb,
            pct(med_of(a, |s| s.retrans_share)),
            pct(med_of(b, |s| s.retrans_share)),
            med_of(a, |s| Some(s.relay_drops as f64)).unwrap_or(0.0),
            med_of(b, |s| Some(s.relay_drops as f64)).unwrap_or(0.0),
            med_of(a, |s| Some(s.kernel_drops as f64)).unwrap_or(0.0),
            med_of(b, |s| Some(s.kernel_drops as f64)).unwrap_or(0.0),
        );
    }
    let _ = writeln!(
        out,
        "\nMixed pairs (upload):\n\n| scenario | kcpd→kcptun | kcptun→kcpd | kcptun→kcptun |\n|---|---|---|---|"
    );
    for sc in ["clean", "20ms+5%"] {
        let g = |p: Pair| {
            get(sc, Workload::Upload, p).and_then(|v| med_of(v, |s| Some(s.goodput))).map_or("-".into(), fmt_rate)
        };
        if get(sc, Workload::Upload, (Impl::Kcpd, Impl::Kcptun)).is_some() {
            let _ = writeln!(
                out,
                "| {sc} | {} | {} | {} |",
                g((Impl::Kcpd, Impl::Kcptun)),
                g((Impl::Kcptun, Impl::Kcpd)),
                g(tt)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nLatency of 64-byte request/response (µs):\n\n| scenario | workload | kcpd p50 / p99 / max | kcptun p50 / p99 / max | p99 ratio (kcpd/kcptun) |\n|---|---|---|---|---|"
    );
    let mut seen = std::collections::BTreeSet::new();
    for (sc, wl, _) in plan {
        if !matches!(wl, Workload::LatencyIdle | Workload::LatencyBulk) || !seen.insert((sc.name, *wl)) {
            continue;
        }
        let (Some(a), Some(b)) = (get(sc.name, *wl, kk), get(sc.name, *wl, tt)) else { continue };
        let q = |v: &[Sample], i: usize| med_of(v, |s| s.lat_us.map(|l| [l.0, l.1, l.2][i] as f64));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} |",
            sc.name,
            wl.name(),
            q(a, 0).unwrap_or(0.0),
            q(a, 1).unwrap_or(0.0),
            q(a, 2).unwrap_or(0.0),
            q(b, 0).unwrap_or(0.0),
            q(b, 1).unwrap_or(0.0),
            q(b, 2).unwrap_or(0.0),
            ratio(q(a, 1), q(b, 1))
        );
    }
    if let (Some(a), Some(b)) = (get("clean", Workload::IdleSessions, kk), get("clean", Workload::IdleSessions, tt)) {
        let ra = med_of(a, |s| Some(s.rss_mb));
        let rb = med_of(b, |s| Some(s.rss_mb));
        let _ = writeln!(
            out,
            "\n1000 idle sessions: server RSS kcpd {:.1} MB, kcptun {:.1} MB (ratio {}).",
            ra.unwrap_or(0.0),
            rb.unwrap_or(0.0),
            ratio(ra, rb)
        );
    }
    let relay_cpu = results.values().flatten().map(|s| s.relay_cpu).fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\nThe relay's busiest run used {:.0}% of one core (clean scenarios run without it).",
        relay_cpu * 100.0
    );
    out
}

/// One series of a plot: a line through `v` (data coordinates) and a dot at each point.
pub(crate) fn svg_series(
    s: &mut String,
    v: &[(f64, f64)],
    color: &str,
    x: impl Fn(f64) -> f64,
    y: impl Fn(f64) -> f64,
) {
    let path: Vec<String> = v.iter().map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b))).collect();
    let _ =
        writeln!(s, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", path.join(" "));
    for (a, b) in v {
        let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>", x(*a), y(*b));
    }
}

/// Goodput (upload) vs loss at 20 ms each way, both implementations, as SVG.
fn plot(results: &BTreeMap<(String, Workload, Pair), Vec<Sample>>, all: &[Scenario]) -> String {
    let (w, h, m) = (640.0, 400.0, 60.0);
    let pts = |p: Pair| -> Vec<(f64, f64)> {
        all.iter()
            .filter_map(|sc| {
                let loss = sc.loss_pct?;
                let v = results.get(&(sc.name.to_string(), Workload::Upload, p))?;
                Some((loss, med_of(v, |s| Some(s.goodput))? / 1e6))
            })
            .collect()
    };
    let series = [((Impl::Kcpd, Impl::Kcpd), "#d62728", "kcpd"), ((Impl::Kcptun, Impl::Kcptun), "#1f77b4", "kcptun")];
    let ymax = series.iter().flat_map(|s| pts(s.0)).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let x = |l: f64| m + (l / 10.0) * (w - 2.0 * m);
    let y = |v: f64| h - m - (v / ymax) * (h - 2.0 * m);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">Upload goodput vs loss, 20 ms each way (MB/s)</text>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        w / 2.0,
        h - m,
        w - m,
        h - m,
        h - m
    );
    for l in [0.0, 1.0, 5.0, 10.0] {
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{l}%</text>", x(l), h - m + 18.0);
    }
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text>", m - 6.0, y(v) + 4.0);
    }
    for (i, (p, color, name)) in series.iter().enumerate() {
        svg_series(&mut s, &pts(*p), color, x, y);
        let _ =
            writeln!(s, "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>", w - m - 60.0, m + 16.0 * i as f64);
    }
    s.push_str("<text x=\"320\" y=\"390\" text-anchor=\"middle\">loss per direction</text>\n</svg>\n");
    s
}
