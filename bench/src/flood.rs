//! `kcpd-bench flood`: a kcpd server under attack while one real session moves bulk data.
//!
//! Per attack and rate, a kcpd client → kcpd server tunnel (both processes, `--crypt aes` as in the
//! tunnel bench; `none` for the new-session flood) carries a 1-stream upload for the window while a sender
//! fires datagrams at the server's port from 256 sockets on 8 loopback source addresses: random bytes,
//! datagrams sealed with another key, valid datagrams replayed (64 originals, each sent again and again),
//! a new conversation per datagram (`--crypt none`: no key needed), or oversized datagrams. The control
//! run sends random bytes at the same rate to a closed port, so it costs the sender (and the kernel) the
//! same on this 2-core machine; each attack's goodput is reported as a ratio to the control before it
//! (the new-session flood's own control runs a `--crypt none` tunnel, as it does). Also reported: the
//! rate the sender reached, the server's CPU, its RSS before, at peak and 3 s after, sessions the attack
//! opened, and the server's drop counters (its SIGUSR1 `front door:` line and kcp-go's SNMP).
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::proto::kcp::Header;

use crate::measure::median;
use crate::tunnel::{self, Bins, Impl, Meter, Scenario, Workload};

pub struct Opts {
    pub reps: usize,
    pub seconds: f64,
    pub rates: Vec<u32>,
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attack {
    Control,
    /// The control of the new-session flood, whose tunnel runs `--crypt none`.
    ControlNone,
    Random,
    WrongKey,
    Replay,
    NewSession,
    Oversize,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Control => "control (closed port)",
            Attack::ControlNone => "control, --crypt none tunnel",
            Attack::Random => "random bytes",
            Attack::WrongKey => "wrong key",
            Attack::Replay => "valid datagrams replayed",
            Attack::NewSession => "new session per datagram (none)",
            Attack::Oversize => "oversized (3000 B)",
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Sample {
    goodput: f64,
    sent_rate: f64,
    cpu_pct: f64,
    rss: (f64, f64, f64),
    sessions: u64,
    /// Sessions the real client opened (1 unless its session died).
    client_sessions: u64,
    front: String,
    csum_errors: u64,
}

/// A KCP PUSH of `len` payload bytes for conv `conv`, sn 0, sealed with `c`.
fn sealed_push(c: &PacketCrypto, rng: &mut NonceGen, conv: u32, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; c.header_len() + 24 + len + c.trailer_len()];
    let h = c.header_len();
    Header { conv, cmd: 81, frg: 0, wnd: 1024, ts: conv, sn: 0, una: 0, len: len as u32 }.write(&mut b[h..]);
    c.seal(rng, &mut b).expect("room for the header");
    b
}

/// Send `attack` datagrams to `to` at `rate` per second until `stop`; returns how many went out.
fn fire(attack: Attack, to: SocketAddr, rate: u32, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let socks: Vec<UdpSocket> =
        (0..256).filter_map(|i| UdpSocket::bind(SocketAddr::from(([127, 0, 0, 2 + (i % 8) as u8], 0))).ok()).collect();
    for s in &socks {
        let _ = s.set_nonblocking(true);
    }
    let mut rng = NonceGen::from_seed([9; 32]);
    let real = PacketCrypto::from_password(Method::Aes, "kcpd-bench");
    let none = PacketCrypto::from_password(Method::None, "kcpd-bench");
    let wrong = PacketCrypto::from_password(Method::Aes, "not-the-key");
    let originals: Vec<Vec<u8>> = (0..64).map(|k| sealed_push(&real, &mut rng, 0x5eed_0000 + k, 1000)).collect();
    let mut junk = vec![0u8; 3000];
    let (mut n, mut conv) = (0u64, 0x7700_0000u32);
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Paced in 1 ms slices.
        let due = (t0.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        if n >= due {
            std::thread::sleep(Duration::from_micros(500));
            continue;
        }
        while n < due {
            let s = &socks[n as usize % socks.len()];
            let d: Vec<u8> = match attack {
                Attack::Control | Attack::ControlNone | Attack::Random => {
                    rng.fill(&mut junk[..1200]);
                    junk[..64 + (n as usize * 37) % 1136].to_vec()
                }
                Attack::Oversize => {
                    rng.fill(&mut junk);
                    junk.clone()
                }
                Attack::WrongKey => sealed_push(&wrong, &mut rng, n as u32, 1000),
                Attack::Replay => originals[n as usize % originals.len()].clone(),
                Attack::NewSession => {
                    conv = conv.wrapping_add(1);
                    sealed_push(&none, &mut rng, conv, 100)
                }
            };
            let _ = s.send_to(&d, to);
            n += 1;
        }
    }
    sent.store(n, Ordering::Relaxed);
}

/// The server's last `front door:` line, the sessions it opened for the attack's sources (its log's
/// `remote address:` lines from 127.0.0.2–9) and the real client's, and InCsumErrors from its SIGUSR1 dump.
fn counters(t: &tunnel::Tunnel) -> (String, u64, u64, u64) {
    t.server.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    let text = t.server.log_text();
    let front = text.lines().rev().find_map(|l| l.split_once("front door: ").map(|x| x.1.to_string()));
    let snmp = text.lines().rev().find(|l| l.contains("KCP SNMP:&{")).unwrap_or("");
    let field = |k: &str| snmp.split([' ', '{', '}']).find_map(|t| t.strip_prefix(k)).and_then(|v| v.parse().ok());
    let opened = |from: &dyn Fn(&str) -> bool| {
        text.lines().filter_map(|l| l.split_once("remote address: ").map(|x| x.1)).filter(|a| from(a)).count() as u64
    };
    let attack = opened(&|a| (2..=9).any(|k| a.starts_with(&format!("127.0.0.{k}:"))));
    let client = opened(&|a| a.starts_with("127.0.0.1:"));
    (front.unwrap_or_default(), attack, client, field("InCsumErrors:").unwrap_or(0))
}

fn run_one(bins: &Bins, attack: Attack, rate: u32, secs: f64, dir: &Path) -> Result<Sample, String> {
    let meter = Arc::new(Meter::default());
    let tgt = tunnel::target(meter.clone());
    let sc = Scenario { name: "flood", relay: None, loss_pct: None };
    let none = matches!(attack, Attack::NewSession | Attack::ControlNone);
    let extra: &[&str] = if none { &["--crypt", "none"] } else { &[] };
    let t = tunnel::start_tunnel_with(
        bins,
        (Impl::Kcpd, Impl::Kcpd),
        &sc,
        tgt,
        1,
        dir,
        (extra, &[]),
        &tunnel::Site::loopback(),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let rss0 = t.server.rss().0;
    let to = if matches!(attack, Attack::Control | Attack::ControlNone) {
        SocketAddr::from(([127, 0, 0, 1], tunnel::free_udp()))
    } else {
        SocketAddr::from(([127, 0, 0, 1], t.server_udp))
    };
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sender = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || fire(attack, to, rate, stop, sent))
    };
    let warm = Duration::from_millis(700);
    let (c0, t0) = (t.server.cpu(), Instant::now());
    let (goodput, _) = tunnel::bulk(&t, &meter, Workload::Upload, warm, secs);
    let (cpu, el) = (t.server.cpu() - c0, t0.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let sent_rate = sent.load(Ordering::Relaxed) as f64 / el;
    let peak = t.server.rss().1;
    let (front, opens, client_sessions, csum) = counters(&t);
    std::thread::sleep(Duration::from_secs(3));
    let after = t.server.rss().0;
    if meter.errors.load(Ordering::Relaxed) > 0 {
        return Err(format!("{}: the real session's bytes were corrupted", attack.name()));
    }
    Ok(Sample {
        goodput,
        sent_rate,
        cpu_pct: 100.0 * cpu / el,
        rss: (rss0, peak, after),
        sessions: opens,
        client_sessions,
        front,
        csum_errors: csum,
    })
}

pub fn run(o: &Opts) {
    if let Some(code) = tunnel::reexec_in_netns() {
        std::process::exit(code);
    }
    tunnel::raise_nofile();
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
    let bins = Bins {
        kcpd: dir.join("kcpd"),
        netem: dir.join("kcpd-netem"),
        kcptun_client: PathBuf::new(),
        kcptun_server: PathBuf::new(),
    };
    if !bins.kcpd.exists() {
        eprintln!("kcpd not found at {}: cargo build --release -p kcpd -p kcpd-bench", bins.kcpd.display());
        std::process::exit(2);
    }
    let logs = o.out.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs) {
        eprintln!("cannot create {}: {e}", logs.display());
        std::process::exit(2);
    }
    let attacks = [
        Attack::Control,
        Attack::Random,
        Attack::WrongKey,
        Attack::Replay,
        Attack::Oversize,
        Attack::ControlNone,
        Attack::NewSession,
    ];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# kcpd under a datagram flood\n\n`kcpd-bench flood --reps {} --seconds {} --rates {}` (medians; one \
         1-stream upload through a kcpd client → kcpd server tunnel, aes, fast3, FEC 10/3, 2 shards each, \
         while a sender on the same 2-core machine floods the server's port from 256 sockets on 8 source \
         addresses).\n",
        o.reps,
        o.seconds,
        o.rates.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    );
    let _ = writeln!(
        md,
        "| attack | rate asked | rate sent | goodput MB/s | vs control | server CPU | server RSS MB before / peak / 3 s after | sessions opened by the attack (by the client) | server counters |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    print!("{md}");
    for &rate in &o.rates {
        let mut control = None;
        for &a in &attacks {
            let mut runs = Vec::new();
            for _ in 0..o.reps.max(1) {
                match run_one(&bins, a, rate, o.seconds, &logs) {
                    Ok(s) => runs.push(s),
                    Err(e) => eprintln!("{}: {e}", a.name()),
                }
            }
            if runs.is_empty() {
                continue;
            }
            let med = |f: &dyn Fn(&Sample) -> f64| median(runs.iter().map(f).collect()).unwrap_or(0.0);
            let g = med(&|s| s.goodput);
            if matches!(a, Attack::Control | Attack::ControlNone) {
                control = Some(g);
            }
            let last = runs.last().cloned().unwrap_or_default();
            let counters = if matches!(a, Attack::Random | Attack::WrongKey | Attack::Control | Attack::ControlNone) {
                format!("{} (InCsumErrors {})", last.front, last.csum_errors)
            } else {
                last.front.clone()
            };
            let line = format!(
                "| {} | {} | {:.0} | {:.1} | {} | {:.0}% | {:.0} / {:.0} / {:.0} | {} ({}) | {} |",
                a.name(),
                rate,
                med(&|s| s.sent_rate),
                g / 1e6,
                control.map_or("—".into(), |c| format!("{:.2}", g / c)),
                med(&|s| s.cpu_pct),
                med(&|s| s.rss.0),
                med(&|s| s.rss.1),
                med(&|s| s.rss.2),
                med(&|s| s.sessions as f64),
                med(&|s| s.client_sessions as f64),
                counters
            );
            println!("{line}");
            let _ = writeln!(md, "{line}");
        }
    }
    let path = o.out.join("flood.md");
    match std::fs::write(&path, &md) {
        Ok(()) => println!("\nwritten: {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
