//! `kcpd-bench paths`: kcpd and kcptun over real-path scenarios with a bottleneck every flow shares.
//!
//! The tunnel servers (and the target they connect to) run in a network namespace of their own, joined to
//! the bench's by a veth pair. A capped scenario puts a TBF qdisc (rate, and a queue of about one BDP) on
//! both ends of the pair, so two tunnels — or the flows of one — compete for one link as on a real one;
//! `kcpd-netem` adds the delay and the loss (Bernoulli, or Gilbert–Elliott bursts) between the clients
//! and the pair. Per scenario, kcptun gets a pre-pass over windows 1024/4096 and smux v1/v2 and its best
//! figure is the reference; kcpd runs with `--cc none` and `--cc bbr` and the same flags otherwise.
//! Measured: goodput, the ceiling the path allows (the link rate net of headers, or the clean path's
//! CPU-bound figure), its share, datagrams dropped at the bottleneck queue, the retransmitted share, CPU
//! seconds per GB, peak RSS and the relay's CPU. Needs root (namespaces, tc).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::measure::median;
use crate::tunnel::{self, Bins, Impl, Meter, Scenario, Site, Tunnel, Workload};

/// The real-path bench's options.
pub struct Opts {
    pub reps: usize,
    pub seconds: f64,
    /// The whole matrix (otherwise the quick subset).
    pub full: bool,
    /// Mixed pairs too: kcpd sending to kcptun and kcptun to kcpd (one stream).
    pub mixed: bool,
    /// Fake TCP instead: the clean path only, kcpd `--tcp` beside kcpd over UDP (with and without
    /// GSO/GRO) and the best kcptun `--tcp`.
    pub tcp: bool,
    /// Only these scenarios (by name).
    pub scenarios: Vec<String>,
    /// Request/response exchanges per latency run.
    pub latency_samples: u64,
    /// More flags for kcpd's ends.
    pub kcpd_flags: Vec<String>,
    pub out: PathBuf,
    pub kcptun_dir: PathBuf,
}

/// How the path loses datagrams.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    None,
    Bernoulli(f64),
    /// Average, mean burst length.
    Bursty(f64, f64),
}

/// One path: round trip, loss, and an optional bottleneck (Mbit/s, queue of one BDP).
#[derive(Clone, Debug)]
struct PathSpec {
    rtt_ms: u32,
    loss: Loss,
    mbit: Option<u32>,
}

impl PathSpec {
    fn name(&self) -> String {
        let mut n = if self.rtt_ms == 0 { "veth".to_string() } else { format!("{}ms", self.rtt_ms) };
        match self.loss {
            Loss::None => {}
            Loss::Bernoulli(p) => n += &format!("+{}%", p * 100.0),
            Loss::Bursty(p, _) => n += &format!("+bursty{}%", p * 100.0),
        }
        if let Some(m) = self.mbit {
            n = format!("{m}Mbit {n}");
        }
        n
    }

    /// The TBF queue: one BDP (at least 64 datagrams).
    fn queue_bytes(&self) -> Option<u64> {
        self.mbit.map(|m| (u64::from(m) * 125_000 * u64::from(self.rtt_ms.max(1)) / 1000).max(64 * 1400))
    }

    fn relay_flags(&self) -> Option<Vec<String>> {
        if self.rtt_ms == 0 && self.loss == Loss::None {
            return None;
        }
        let mut f = vec!["--delay-ms".to_string(), (self.rtt_ms / 2).to_string()];
        match self.loss {
            Loss::None => {}
            Loss::Bernoulli(p) => f.extend(["--loss".into(), p.to_string()]),
            Loss::Bursty(p, b) => f.extend(["--burst-loss".into(), format!("{p},{b}")]),
        }
        Some(f)
    }

    /// Flags both implementations run with here: FEC 10/3 on lossy uncapped paths (kcptun's usual
    /// setting), off on a capped link, where parity takes 23% of the link whether or not anything is lost.
    fn flags(&self) -> Vec<&'static str> {
        if self.mbit.is_some() { vec!["--ds", "0", "--ps", "0"] } else { vec![] }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    /// One stream uploading.
    One,
    /// 16 streams uploading over one tunnel.
    Streams16,
    /// Two tunnels uploading through the same bottleneck.
    Shared2,
    /// 64-byte request/response beside a bulk download.
    LatencyBulk,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::One => "1 stream",
            Work::Streams16 => "16 streams",
            Work::Shared2 => "2 tunnels",
            Work::LatencyBulk => "latency + bulk",
        }
    }
}

/// A tunnel's two ends: kcpd with a controller, kcptun with windows and smux, or a mixed pair of the two
/// (the client is the sender of an upload).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Variant {
    /// Client, server.
    pair: (Impl, Impl),
    /// Flags of both ends.
    flags: Vec<&'static str>,
    /// Flags of kcpd's ends only.
    kcpd: Vec<&'static str>,
}

impl Variant {
    fn name(&self) -> String {
        // Flags past the first few (`--tcp`, `--no-offload`) are named too.
        let more = |f: &[&str]| f.iter().map(|x| format!(" {}", x.trim_start_matches('-'))).collect::<String>();
        let kt = |f: &[&str]| format!("kcptun wnd={} smux={}{}", f[1], f[5], more(&f[6..]));
        let cc = |f: &[&str]| format!("kcpd cc={}{}", f[1], more(&f[2..]));
        match self.pair {
            (Impl::Kcpd, Impl::Kcpd) => cc(&self.kcpd),
            (Impl::Kcptun, Impl::Kcptun) => kt(&self.flags),
            (Impl::Kcpd, Impl::Kcptun) => format!("{} → {}", cc(&self.kcpd), kt(&self.flags)),
            (Impl::Kcptun, Impl::Kcpd) => format!("{} → {}", kt(&self.flags), cc(&self.kcpd)),
        }
    }
}

fn kcpd(cc: &'static str) -> Variant {
    Variant { pair: (Impl::Kcpd, Impl::Kcpd), flags: vec![], kcpd: vec!["--cc", cc] }
}

fn kcptun_variants(tcp: bool) -> Vec<Variant> {
    let mut v = Vec::new();
    for w in ["1024", "4096"] {
        for smux in ["1", "2"] {
            let mut flags = vec!["--sndwnd", w, "--rcvwnd", w, "--smuxver", smux];
            if tcp {
                flags.push("--tcp");
            }
            v.push(Variant { pair: (Impl::Kcptun, Impl::Kcptun), flags, kcpd: vec![] });
        }
    }
    v
}

/// kcpd `--cc bbr` at one end of the best kcptun's tunnel, with its windows and smux version: kcpd sending
/// to kcptun, and kcptun sending to kcpd.
fn mixed(top: &Variant) -> [Variant; 2] {
    let m = |pair| Variant { pair, flags: top.flags.clone(), kcpd: kcpd("bbr").kcpd };
    [m((Impl::Kcpd, Impl::Kcptun)), m((Impl::Kcptun, Impl::Kcpd))]
}

/// What one run measured.
#[derive(Clone, Debug, Default)]
struct Sample {
    /// Bytes per second (per tunnel for [`Work::Shared2`]).
    goodput: Vec<f64>,
    cpu_per_gb: Option<f64>,
    rss_mb: f64,
    retrans: Option<f64>,
    /// Datagrams the bottleneck queue dropped, as a share of those offered to it.
    queue_drop: Option<f64>,
    relay_cpu: f64,
    lat_us: Option<(u64, u64, u64)>,
}

impl Sample {
    fn total(&self) -> f64 {
        self.goodput.iter().sum()
    }
}

// ---- the network: a namespace for the servers, a veth pair, TBF on both ends ----

struct Net {
    ns: String,
    /// The veth end in the bench's namespace, and its peer in the servers'.
    dev: String,
    peer: String,
    server_ip: IpAddr,
    next_port: std::cell::Cell<u16>,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

impl Net {
    fn new() -> Result<Net, String> {
        let id = std::process::id() % 100_000;
        let (ns, dev, peer) = (format!("kcpd-bench-{id}"), format!("kb{id}a"), format!("kb{id}b"));
        sh("ip", &["netns", "add", &ns])?;
        let net = Net {
            ns: ns.clone(),
            dev: dev.clone(),
            peer: peer.clone(),
            server_ip: Ipv4Addr::new(10, 201, 0, 2).into(),
            next_port: 30000.into(),
        };
        sh("ip", &["link", "add", &dev, "type", "veth", "peer", "name", &peer, "netns", &ns])?;
        sh("ip", &["addr", "add", "10.201.0.1/30", "dev", &dev])?;
        sh("ip", &["link", "set", &dev, "up"])?;
        net.exec(&["ip", "link", "set", "lo", "up"])?;
        net.exec(&["ip", "addr", "add", "10.201.0.2/30", "dev", &peer])?;
        net.exec(&["ip", "link", "set", &peer, "up"])?;
        Ok(net)
    }

    fn exec(&self, argv: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", &self.ns];
        a.extend(argv);
        sh("ip", &a)
    }

    /// Cap both directions at `mbit` with a queue of `queue` bytes, or remove the cap.
    fn shape(&self, cap: Option<(u32, u64)>) -> Result<(), String> {
        let _ = sh("tc", &["qdisc", "del", "dev", &self.dev, "root"]);
        let _ = self.exec(&["tc", "qdisc", "del", "dev", &self.peer, "root"]);
        let Some((mbit, queue)) = cap else { return Ok(()) };
        // A burst of 2 ms at the rate (at least a few datagrams): TBF's own smoothing, not a second queue.
        let burst = (u64::from(mbit) * 125_000 / 500).max(15_000).to_string();
        let (rate, limit) = (format!("{mbit}mbit"), queue.to_string());
        let tbf = |dev: &str| -> Vec<String> {
            ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "limit", &limit]
                .map(String::from)
                .to_vec()
        };
        let (here, there) = (tbf(&self.dev), tbf(&self.peer));
        sh("tc", &here[1..].iter().map(String::as_str).collect::<Vec<_>>())?;
        self.exec(&there.iter().map(String::as_str).collect::<Vec<_>>()).map(|_| ())
    }

    /// (datagrams sent, dropped) by the qdisc on the client → server direction.
    fn queue_counters(&self) -> Option<(u64, u64)> {
        let out = sh("tc", &["-s", "qdisc", "show", "dev", &self.dev]).ok()?;
        let line = out.lines().find(|l| l.trim_start().starts_with("Sent "))?;
        let w: Vec<&str> = line.split_whitespace().collect();
        let sent = w.get(3)?.parse().ok()?;
        let dropped = w.iter().position(|x| *x == "(dropped")?;
        Some((sent, w.get(dropped + 1)?.trim_end_matches(',').parse().ok()?))
    }

    fn site(&self) -> Site {
        let p = self.next_port.get();
        self.next_port.set(if p >= 60000 { 30000 } else { p + 1 });
        Site { server_ns: Some(self.ns.clone()), server_ip: self.server_ip, server_port: Some(p) }
    }

    /// A target listening inside the servers' namespace (a thread joins it to bind, then hands the
    /// listener back: a socket stays in the namespace it was made in).
    fn target(&self, meter: Arc<Meter>) -> Result<std::net::SocketAddr, String> {
        let path = format!("/run/netns/{}", self.ns);
        let l = std::thread::spawn(move || -> Result<TcpListener, String> {
            let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: setns on this thread only, with a namespace descriptor we hold open.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns: {}", std::io::Error::last_os_error()));
            }
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("target: {e}"))
        })
        .join()
        .map_err(|_| "target thread".to_string())??;
        Ok(tunnel::serve(l, meter))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = sh("ip", &["link", "del", &self.dev]);
        let _ = sh("ip", &["netns", "del", &self.ns]);
    }
}

// ---- runs ----

fn scenario(p: &PathSpec) -> Scenario {
    Scenario {
        name: Box::leak(p.name().into_boxed_str()),
        relay: p.relay_flags().map(|f| f.into_iter().map(|s| &*Box::leak(s.into_boxed_str())).collect()),
        loss_pct: None,
    }
}

fn start(bins: &Bins, net: &Net, p: &PathSpec, v: &Variant, meter: &Arc<Meter>, o: &Opts) -> Result<Tunnel, String> {
    let tgt = net.target(meter.clone())?;
    let dir = o.out.join("logs");
    let mut both = p.flags();
    both.extend(v.flags.iter().copied());
    let mut kcpd_only = v.kcpd.clone();
    kcpd_only.extend(o.kcpd_flags.iter().map(String::as_str));
    tunnel::start_tunnel_with(bins, v.pair, &scenario(p), tgt, 1, &dir, (&both, &kcpd_only), &net.site())
}

fn run_one(bins: &Bins, net: &Net, p: &PathSpec, v: &Variant, w: Work, secs: f64, o: &Opts) -> Result<Sample, String> {
    let n = if w == Work::Shared2 { 2 } else { 1 };
    let meters: Vec<Arc<Meter>> = (0..n).map(|_| Arc::new(Meter::default())).collect();
    let ts: Vec<Tunnel> = meters.iter().map(|m| start(bins, net, p, v, m, o)).collect::<Result<_, _>>()?;
    let warm = Duration::from_millis(1500 + 4 * u64::from(p.rtt_ms));
    let q0 = net.queue_counters();
    let r0: f64 = ts.iter().filter_map(|t| t.relay.as_ref()).map(tunnel::Proc::cpu).sum();
    let t0 = Instant::now();
    let mut s = Sample::default();
    match w {
        Work::LatencyBulk => {
            s.lat_us = tunnel::latency(&ts[0], &meters[0], true, warm, secs, o.latency_samples);
        }
        _ => {
            let wl = if w == Work::Streams16 { Workload::Streams16 } else { Workload::Upload };
            let runs: Vec<(f64, Option<f64>)> = std::thread::scope(|sc| {
                let hs: Vec<_> =
                    ts.iter().zip(&meters).map(|(t, m)| sc.spawn(move || tunnel::bulk(t, m, wl, warm, secs))).collect();
                hs.into_iter().map(|h| h.join().unwrap_or((0.0, None))).collect()
            });
            s.goodput = runs.iter().map(|r| r.0).collect();
            let cpu: Vec<f64> = runs.iter().filter_map(|r| r.1).collect();
            s.cpu_per_gb = (cpu.len() == runs.len()).then(|| {
                // CPU per GB of all tunnels together: weight each by its bytes.
                let bytes: f64 = s.total();
                runs.iter().map(|r| r.1.unwrap_or(0.0) * r.0).sum::<f64>() / bytes.max(1.0)
            });
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    if let (Some(a), Some(b)) = (q0, net.queue_counters()) {
        let (sent, dropped) = (b.0 - a.0, b.1 - a.1);
        s.queue_drop = (p.mbit.is_some() && sent + dropped > 0).then(|| dropped as f64 / (sent + dropped) as f64);
    }
    s.relay_cpu = (ts.iter().filter_map(|t| t.relay.as_ref()).map(tunnel::Proc::cpu).sum::<f64>() - r0) / wall;
    s.rss_mb = ts.iter().map(|t| t.server.rss().1.max(t.client.rss().1)).fold(0.0, f64::max);
    let mut rs = (0, 0);
    for t in &ts {
        if let (Some(c), Some(sv)) = (t.client.snmp(), t.server.snmp()) {
            rs = (rs.0 + c.0 + sv.0, rs.1 + c.1 + sv.1);
        }
    }
    s.retrans = (rs.1 > 0).then(|| rs.0 as f64 / rs.1 as f64);
    let errors: u64 = meters.iter().map(|m| m.errors.load(Ordering::Relaxed)).sum();
    if errors > 0 {
        return Err(format!("{} {} {}: {errors} integrity errors", p.name(), v.name(), w.name()));
    }
    Ok(s)
}

/// The scenarios and workloads of a run.
fn plan(full: bool, tcp: bool) -> Vec<(PathSpec, Vec<Work>)> {
    let p = |rtt_ms, loss, mbit| PathSpec { rtt_ms, loss, mbit };
    let b = Loss::Bernoulli;
    if tcp {
        // The relay carries UDP only: fake TCP runs the clean path (no relay between the namespaces).
        return vec![(p(0, Loss::None, None), vec![Work::One, Work::Streams16])];
    }
    if !full {
        return vec![
            (p(0, Loss::None, None), vec![Work::One]),
            (p(40, Loss::None, None), vec![Work::One]),
            (p(40, b(0.05), None), vec![Work::One]),
            (p(150, b(0.02), None), vec![Work::One]),
            (p(40, b(0.01), Some(100)), vec![Work::One, Work::Shared2]),
            (p(40, Loss::None, Some(20)), vec![Work::One]),
            (p(40, b(0.01), None), vec![Work::LatencyBulk]),
        ];
    }
    let mut v = vec![(p(0, Loss::None, None), vec![Work::One, Work::Streams16])];
    for mbit in [None, Some(100), Some(20)] {
        for rtt in [40, 150, 300] {
            for loss in [Loss::None, b(0.01), b(0.02), b(0.05)] {
                let mut w = vec![Work::One];
                if rtt == 40 && matches!(loss, Loss::None | Loss::Bernoulli(0.02)) {
                    w.push(Work::Streams16);
                }
                if mbit.is_some() && rtt != 300 && matches!(loss, Loss::None | Loss::Bernoulli(0.01)) {
                    w.push(Work::Shared2);
                }
                v.push((p(rtt, loss, mbit), w));
            }
        }
        v.push((p(40, Loss::Bursty(0.02, 4.0), mbit), vec![Work::One]));
    }
    v.push((p(40, b(0.01), None), vec![Work::LatencyBulk]));
    v
}

type Results = BTreeMap<(String, Work, Variant), Vec<Sample>>;

pub fn run(o: &Opts) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("kcpd-bench paths needs root (network namespaces, a veth pair, tc): run it with sudo");
        std::process::exit(2);
    }
    if let Some(code) = tunnel::reexec_in_netns() {
        std::process::exit(code);
    }
    tunnel::raise_nofile();
    let bins = tunnel::bins(&o.kcptun_dir);
    if let Err(e) = std::fs::create_dir_all(o.out.join("logs")) {
        eprintln!("cannot create {}: {e}", o.out.display());
        std::process::exit(2);
    }
    let net = match Net::new() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot build the test network: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut results: Results = BTreeMap::new();
    let mut best: BTreeMap<String, Variant> = BTreeMap::new();
    let mut failures = 0;
    let log = |what: &str| eprintln!("[{:>5.0}s] {what}", started.elapsed().as_secs_f64());
    for (p, works) in plan(o.full, o.tcp) {
        if !o.scenarios.is_empty() && !o.scenarios.contains(&p.name()) {
            continue;
        }
        if let Err(e) = net.shape(p.mbit.zip(p.queue_bytes())) {
            eprintln!("tc: {e}");
            std::process::exit(2);
        }
        // kcptun at its best: a pre-pass over its windows and smux versions (one stream, half a window),
        // once per path (the latency runs reuse the bulk runs' path: a second pre-pass chose another
        // variant and left the bulk figures without a reference).
        let top = match best.get(&p.name()) {
            Some(t) => t.clone(),
            None => {
                let mut pre: Vec<(f64, Variant)> = Vec::new();
                for v in kcptun_variants(o.tcp) {
                    match run_one(&bins, &net, &p, &v, Work::One, (o.seconds / 2.0).max(3.0), o) {
                        Ok(s) => {
                            log(&format!("{:<22} pre-pass {:<28} {:.1} MB/s", p.name(), v.name(), s.total() / 1e6));
                            pre.push((s.total(), v));
                        }
                        Err(e) => {
                            eprintln!("FAILED {e}");
                            failures += 1;
                        }
                    }
                }
                let Some((_, top)) = pre.into_iter().max_by(|a, b| a.0.total_cmp(&b.0)) else { continue };
                best.insert(p.name(), top.clone());
                top
            }
        };
        let pairs = mixed(&top);
        let variants = if o.tcp {
            let with = |f: &'static str| Variant { kcpd: vec!["--cc", "bbr", f], ..kcpd("bbr") };
            vec![kcpd("bbr"), with("--no-offload"), with("--tcp"), top]
        } else {
            vec![kcpd("none"), kcpd("bbr"), top]
        };
        for w in works {
            // Mixed pairs, one stream only.
            let with_mixed = if o.mixed && !o.tcp && w == Work::One { &pairs[..] } else { &[] };
            for rep in 0..o.reps.max(1) {
                let reps_here = if w == Work::LatencyBulk { 1 } else { o.reps };
                if rep >= reps_here {
                    continue;
                }
                let mut order: Vec<&Variant> = variants.iter().chain(with_mixed).collect();
                if rep % 2 == 1 {
                    order.reverse();
                }
                for v in order {
                    match run_one(&bins, &net, &p, v, w, o.seconds, o) {
                        Ok(s) => {
                            let what = match s.lat_us {
                                Some((p50, p99, mx)) => format!("p50 {p50} µs p99 {p99} µs max {mx} µs"),
                                None => format!(
                                    "{:?} MB/s, queue drops {:.1}%",
                                    s.goodput.iter().map(|g| (g / 1e5).round() / 10.0).collect::<Vec<_>>(),
                                    s.queue_drop.unwrap_or(0.0) * 100.0
                                ),
                            };
                            log(&format!("{:<22} {:<14} {:<28} {what}", p.name(), w.name(), v.name()));
                            results.entry((p.name(), w, v.clone())).or_default().push(s);
                        }
                        Err(e) => {
                            eprintln!("FAILED {e}");
                            failures += 1;
                        }
                    }
                }
            }
        }
    }
    let report = if o.tcp {
        render_tcp(&results, &best, o, started.elapsed())
    } else {
        render(&results, &best, o, started.elapsed())
    };
    println!("{report}");
    if o.tcp {
        let _ = std::fs::write(o.out.join("paths-tcp.md"), &report);
        eprintln!("wrote {}", o.out.join("paths-tcp.md").display());
    } else {
        let _ = std::fs::write(o.out.join("paths.md"), &report);
        let _ = std::fs::write(o.out.join("paths-goodput-vs-loss.svg"), plot(&results));
        eprintln!("wrote {} and paths-goodput-vs-loss.svg", o.out.join("paths.md").display());
    }
    if failures > 0 {
        eprintln!("{failures} runs failed");
        std::process::exit(1);
    }
}

fn med(v: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(v.iter().filter_map(f).collect())
}

/// KCP payload per byte on the wire at MTU 1350 with aes (nonce and CRC), no FEC, IPv4.
const EFFICIENCY: f64 = (1350.0 - 20.0 - 24.0) / (1350.0 + 28.0);

fn render(results: &Results, best: &BTreeMap<String, Variant>, o: &Opts, took: Duration) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "Real paths: kcpd vs the best kcptun (Debian 20210922), {cores} cores, medians of {} runs × {:.0} s, {:.0} s in all.\n\
         Both: `--crypt aes --mode fast3 --sockbuf 4194304`, FEC 10/3 uncapped, off on capped links; kcpd windows 1024, \
         smux v2; kcptun's windows and smux version from its pre-pass (best of 1024/4096 × v1/v2).\n",
        o.reps,
        o.seconds,
        took.as_secs_f64()
    );
    let clean = results
        .iter()
        .filter(|((n, w, _), _)| n == "veth" && *w == Work::One)
        .filter_map(|(_, v)| med(v, |s| Some(s.total())))
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "| path | workload | kcpd none | kcpd bbr | best kcptun | bbr / kcptun | ceiling | share (bbr / kcptun) | queue drops (none / bbr / kcptun) | retrans (bbr / kcptun) | CPU s/GB (bbr / kcptun) | RSS MB (bbr / kcptun) | relay CPU |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<(String, Work)> = results.keys().map(|(n, w, _)| (n.clone(), *w)).collect();
    rows.dedup();
    let mut lat = String::new();
    let mut mix = String::new();
    for (name, w) in rows {
        let Some(top) = best.get(&name) else { continue };
        let get = |v: &Variant| results.get(&(name.clone(), w, v.clone()));
        let [to_kcptun, from_kcptun] = mixed(top);
        if let (Some(a), Some(b), Some(t)) = (get(&to_kcptun), get(&from_kcptun), get(top)) {
            let g = |v: &Vec<Sample>| med(v, |s| Some(s.total())).unwrap_or(0.0);
            let (a, b, t) = (g(a), g(b), g(t));
            let r = |x: f64| if t > 0.0 { format!("{:.2}×", x / t) } else { "-".into() };
            let _ = writeln!(
                mix,
                "| {name} | {:.1} ({}) | {:.1} ({}) | {:.1} | {} |",
                a / 1e6,
                r(a),
                b / 1e6,
                r(b),
                t / 1e6,
                top.name()
            );
        }
        let (none, bbr, kt) = (get(&kcpd("none")), get(&kcpd("bbr")), get(top));
        if w == Work::LatencyBulk {
            let f = |v: Option<&Vec<Sample>>| {
                v.and_then(|v| v.first()).and_then(|s| s.lat_us).map_or("-".into(), |(a, b, c)| {
                    format!("{:.1} / {:.1} / {:.1}", a as f64 / 1e3, b as f64 / 1e3, c as f64 / 1e3)
                })
            };
            let _ = writeln!(lat, "| {name} | {} | {} | {} | {} |", f(none), f(bbr), f(kt), top.name());
            continue;
        }
        let g = |v: Option<&Vec<Sample>>| v.and_then(|v| med(v, |s| Some(s.total())));
        let (gn, gb, gt) = (g(none), g(bbr), g(kt));
        let mbit = name.split("Mbit").next().and_then(|m| m.parse::<f64>().ok());
        let ceiling = mbit.map_or(clean, |m| m * 125_000.0 * EFFICIENCY);
        let mb = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.1}", x / 1e6));
        let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0));
        let q = |v: Option<&Vec<Sample>>, f: &dyn Fn(&Sample) -> Option<f64>| v.and_then(|v| med(v, f));
        let link = |x: Option<f64>| x.filter(|_| ceiling > 0.0).map(|x| x / ceiling);
        let split = |v: Option<&Vec<Sample>>| {
            if w != Work::Shared2 {
                return String::new();
            }
            let r = v.and_then(|v| {
                med(v, |s| {
                    Some(
                        s.goodput.iter().copied().fold(0.0, f64::max)
                            / s.goodput.iter().copied().fold(f64::MAX, f64::min).max(1.0),
                    )
                })
            });
            r.map_or(String::new(), |r| format!(" ({r:.2}:1)"))
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {}{} | {}{} | {}{} | {} | {} | {} / {} | {} / {} / {} | {} / {} | {} / {} | {} / {} | {:.0}% |",
            w.name(),
            mb(gn),
            split(none),
            mb(gb),
            split(bbr),
            mb(gt),
            split(kt),
            match (gb, gt) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                _ => "-".into(),
            },
            mb(Some(ceiling)),
            pct(link(gb)),
            pct(link(gt)),
            pct(q(none, &|s| s.queue_drop)),
            pct(q(bbr, &|s| s.queue_drop)),
            pct(q(kt, &|s| s.queue_drop)),
            pct(q(bbr, &|s| s.retrans)),
            pct(q(kt, &|s| s.retrans)),
            q(bbr, &|s| s.cpu_per_gb).map_or("-".into(), |c| format!("{c:.1}")),
            q(kt, &|s| s.cpu_per_gb).map_or("-".into(), |c| format!("{c:.1}")),
            q(bbr, &|s| Some(s.rss_mb)).unwrap_or(0.0).round(),
            q(kt, &|s| Some(s.rss_mb)).unwrap_or(0.0).round(),
            results
                .iter()
                .filter(|((n, ww, _), _)| *n == name && *ww == w)
                .flat_map(|(_, v)| v.iter().map(|s| s.relay_cpu))
                .fold(0.0, f64::max)
                * 100.0,
        );
    }
    let _ = writeln!(out, "\nThe best kcptun per path (pre-pass):\n");
    for (n, v) in best {
        let _ = writeln!(out, "- {n}: {}", v.name());
    }
    if !mix.is_empty() {
        let _ = writeln!(
            out,
            "\nMixed pairs, one stream uploading, MB/s (× kcptun ↔ kcptun); kcpd runs `--cc bbr` with the best kcptun's windows and smux:\n\n| path | kcpd → kcptun | kcptun → kcpd | kcptun ↔ kcptun | kcptun |\n|---|---|---|---|---|\n{mix}"
        );
    }
    if !lat.is_empty() {
        let _ = writeln!(
            out,
            "\n64-byte request/response beside a bulk download, ≥ {} exchanges, ms (p50 / p99 / max):\n\n| path | kcpd none | kcpd bbr | best kcptun | kcptun |\n|---|---|---|---|---|\n{lat}",
            o.latency_samples
        );
    }
    out
}

/// The fake-TCP table: kcpd `--tcp` against kcpd over UDP without offload (the goal: within 30%) and the
/// best kcptun `--tcp` (the goal: 3×), with kcpd over UDP with GSO/GRO for reference.
fn render_tcp(results: &Results, best: &BTreeMap<String, Variant>, o: &Opts, took: Duration) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "Fake TCP (`--tcp`) on the clean path between two network namespaces (a veth pair, no relay), {cores} cores, \
         medians of {} runs × {:.0} s, {:.0} s in all. Both: `--crypt aes --mode fast3 --sockbuf 4194304`, FEC 10/3; \
         kcpd `--cc bbr`, windows 1024, smux v2; kcptun `--tcp` at its best of 1024/4096 × v1/v2. MB/s (CPU s/GB).\n",
        o.reps,
        o.seconds,
        took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| workload | kcpd UDP | kcpd UDP, no GSO/GRO | kcpd --tcp | best kcptun --tcp | --tcp / UDP no offload | --tcp / kcptun --tcp |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let with = |f: &'static str| Variant { kcpd: vec!["--cc", "bbr", f], ..kcpd("bbr") };
    for ((name, w), top) in results
        .keys()
        .map(|(n, w, _)| (n.clone(), *w))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|k| best.get(&k.0).map(|t| (k, t)))
    {
        let get = |v: &Variant| results.get(&(name.clone(), w, v.clone()));
        let g = |v: &Variant| get(v).and_then(|s| med(s, |s| Some(s.total())));
        let cell = |v: &Variant| {
            let c = get(v).and_then(|s| med(s, |s| s.cpu_per_gb)).map_or("-".into(), |c| format!("{c:.1}"));
            g(v).map_or("-".into(), |x| format!("{:.1} ({c})", x / 1e6))
        };
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
            _ => "-".into(),
        };
        let (tcp, plain) = (with("--tcp"), with("--no-offload"));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            w.name(),
            cell(&kcpd("bbr")),
            cell(&plain),
            cell(&tcp),
            cell(top),
            ratio(g(&tcp), g(&plain)),
            ratio(g(&tcp), g(top)),
        );
    }
    for (n, v) in best {
        let _ = writeln!(out, "\nThe best kcptun --tcp ({n}, pre-pass): {}", v.name());
    }
    out
}

/// Upload goodput vs loss, one panel per RTT (uncapped paths), kcpd bbr, kcpd none and the best kcptun.
fn plot(results: &Results) -> String {
    let (pw, ph, m) = (300.0, 260.0, 50.0);
    let rtts = [40u32, 150, 300];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        pw * 3.0,
        ph + 30.0
    );
    type Series = (Box<dyn Fn(&Variant) -> bool>, &'static str, &'static str);
    let series: Vec<Series> = vec![
        (Box::new(|v: &Variant| *v == kcpd("bbr")), "#d62728", "kcpd bbr"),
        (Box::new(|v: &Variant| *v == kcpd("none")), "#ff9896", "kcpd none"),
        (Box::new(|v: &Variant| v.pair == (Impl::Kcptun, Impl::Kcptun)), "#1f77b4", "best kcptun"),
    ];
    let loss_of = |n: &str| -> Option<f64> {
        if n.contains("Mbit") || n.contains("bursty") {
            return None;
        }
        n.split_once('+').map_or(Some(0.0), |(_, l)| l.trim_end_matches('%').parse().ok())
    };
    for (i, rtt) in rtts.iter().enumerate() {
        let x0 = pw * i as f64;
        let pts = |sel: &dyn Fn(&Variant) -> bool| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = results
                .iter()
                .filter(|((n, w, var), _)| *w == Work::One && sel(var) && n.starts_with(&format!("{rtt}ms")))
                .filter_map(|((n, _, _), v)| Some((loss_of(n)?, med(v, |s| Some(s.total()))? / 1e6)))
                .collect();
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let ymax = series.iter().flat_map(|se| pts(&*se.0)).map(|p| p.1).fold(1.0, f64::max) * 1.1;
        let x = |l: f64| x0 + m + l / 5.0 * (pw - 1.5 * m);
        let y = |g: f64| ph - m + 20.0 - g / ymax * (ph - 1.5 * m);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" font-size=\"13\">{rtt} ms RTT: MB/s vs loss</text>",
            x0 + pw / 2.0
        );
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            x(0.0),
            y(0.0),
            x(5.0),
            y(0.0)
        );
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            x(0.0),
            y(0.0),
            x(0.0),
            y(ymax)
        );
        for l in [0.0, 1.0, 2.0, 5.0] {
            let _ =
                writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{l}%</text>", x(l), y(0.0) + 14.0);
        }
        for k in 0..=4 {
            let g = ymax * f64::from(k) / 4.0;
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{g:.0}</text>",
                x(0.0) - 4.0,
                y(g) + 4.0
            );
        }
        for (j, (sel, color, name)) in series.iter().enumerate() {
            tunnel::svg_series(&mut s, &pts(&**sel), color, x, y);
            if i == 0 {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>",
                    x0 + pw - 90.0,
                    36.0 + 14.0 * j as f64
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}
