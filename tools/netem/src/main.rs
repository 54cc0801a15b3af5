//! `kcpd-netem`: relay UDP between clients and one server with delay, jitter, loss, duplication, reordering
//! and a rate limit. Counters on SIGUSR1 and at exit (SIGINT/SIGTERM).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use kcpd_netem::{Link, Loss, Relay, RelayConfig, RelayStats};

/// Userspace UDP impairment relay. Each impairment flag applies to both directions; the `--up-…`
/// (client → server) and `--down-…` (server → client) forms override it for one direction.
#[derive(Parser, Debug)]
#[command(name = "kcpd-netem", version)]
struct Cli {
    /// Address clients send to.
    #[arg(long)]
    listen: SocketAddr,
    /// Server address.
    #[arg(long)]
    upstream: SocketAddr,
    /// Seed of the impairments.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// SO_RCVBUF/SO_SNDBUF bytes for every socket.
    #[arg(long)]
    sockbuf: Option<usize>,
    #[command(flatten)]
    both: Both,
    #[command(flatten)]
    up: Up,
    #[command(flatten)]
    down: Down,
}

/// The impairment flags of one prefix (`--`, `--up-`, `--down-`).
macro_rules! impairment_args {
    ($name:ident, $prefix:literal, $heading:literal) => {
        #[derive(clap::Args, Debug)]
        #[command(next_help_heading = $heading)]
        struct $name {
            /// One-way delay, milliseconds.
            #[arg(long = concat!($prefix, "delay-ms"), id = concat!($prefix, "delay-ms"), value_name = "MS")]
            delay_ms: Option<u32>,
            /// Uniform extra delay 0..=N ms (order kept).
            #[arg(long = concat!($prefix, "jitter-ms"), id = concat!($prefix, "jitter-ms"), value_name = "MS")]
            jitter_ms: Option<u32>,
            /// Bernoulli loss probability 0..=1.
            #[arg(long = concat!($prefix, "loss"), id = concat!($prefix, "loss"), value_name = "P", value_parser = probability,
                  conflicts_with = concat!($prefix, "burst-loss"))]
            loss: Option<f64>,
            /// Bursty (Gilbert–Elliott) loss: AVG,MEANBURST (average 0..1, mean burst ≥ 1 datagram).
            #[arg(long = concat!($prefix, "burst-loss"), id = concat!($prefix, "burst-loss"), value_parser = burst_loss, value_name = "AVG,MEANBURST")]
            burst_loss: Option<(f64, f64)>,
            /// Duplication probability 0..=1.
            #[arg(long = concat!($prefix, "dup"), id = concat!($prefix, "dup"), value_name = "P", value_parser = probability)]
            dup: Option<f64>,
            /// Probability 0..=1 that a datagram is held back by --reorder-ms.
            #[arg(long = concat!($prefix, "reorder"), id = concat!($prefix, "reorder"), value_name = "P", value_parser = probability)]
            reorder: Option<f64>,
            /// Hold-back of reordered datagrams, milliseconds.
            #[arg(long = concat!($prefix, "reorder-ms"), id = concat!($prefix, "reorder-ms"), value_name = "MS")]
            reorder_ms: Option<u32>,
            /// Rate limit, bytes per second.
            #[arg(long = concat!($prefix, "rate"), id = concat!($prefix, "rate"), value_name = "BYTES_PER_SEC", value_parser = clap::value_parser!(u64).range(1..),
                  conflicts_with = concat!($prefix, "rate-mbit"))]
            rate: Option<u64>,
            /// Rate limit, megabits per second.
            #[arg(long = concat!($prefix, "rate-mbit"), id = concat!($prefix, "rate-mbit"), value_name = "MBIT", value_parser = mbit)]
            rate_mbit: Option<u64>,
            /// Bytes that may wait for the rate limiter before tail drop (default 1 MiB).
            #[arg(long = concat!($prefix, "queue-bytes"), id = concat!($prefix, "queue-bytes"), value_name = "BYTES")]
            queue_bytes: Option<usize>,
        }

        impl $name {
            fn imp(&self) -> Imp {
                Imp {
                    delay_ms: self.delay_ms,
                    jitter_ms: self.jitter_ms,
                    loss: self.loss.map(Loss::Bernoulli).or(self.burst_loss.map(|(a, b)| Loss::bursty(a, b))),
                    dup: self.dup,
                    reorder: self.reorder,
                    reorder_ms: self.reorder_ms,
                    rate: self.rate.or(self.rate_mbit),
                    queue_bytes: self.queue_bytes,
                }
            }
        }
    };
}

impairment_args!(Both, "", "Impairments (both directions)");
impairment_args!(Up, "up-", "Client → server only");
impairment_args!(Down, "down-", "Server → client only");

/// Impairment settings of one flag prefix; `None`: not given.
struct Imp {
    delay_ms: Option<u32>,
    jitter_ms: Option<u32>,
    loss: Option<Loss>,
    dup: Option<f64>,
    reorder: Option<f64>,
    reorder_ms: Option<u32>,
    rate: Option<u64>,
    queue_bytes: Option<usize>,
}

/// The link of one direction: its own flags over the shared ones over the defaults.
fn link(own: &Imp, both: &Imp, dir: &str) -> Result<Link, String> {
    let d = Link::default();
    let l = Link {
        delay_ms: own.delay_ms.or(both.delay_ms).unwrap_or(d.delay_ms),
        jitter_ms: own.jitter_ms.or(both.jitter_ms).unwrap_or(d.jitter_ms),
        loss: own.loss.or(both.loss).unwrap_or(d.loss),
        duplicate: own.dup.or(both.dup).unwrap_or(d.duplicate),
        reorder: own.reorder.or(both.reorder).unwrap_or(d.reorder),
        reorder_ms: own.reorder_ms.or(both.reorder_ms).unwrap_or(d.reorder_ms),
        rate: own.rate.or(both.rate).or(d.rate),
        queue_bytes: own.queue_bytes.or(both.queue_bytes).unwrap_or(d.queue_bytes),
    };
    if l.reorder > 0.0 && l.reorder_ms == 0 {
        return Err(format!("{dir}: --reorder needs --reorder-ms > 0"));
    }
    if l.rate.is_some() && l.queue_bytes == 0 {
        return Err(format!("{dir}: --queue-bytes must be > 0 with a rate limit"));
    }
    Ok(l)
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("probability {p} is outside 0..=1"));
    }
    Ok(p)
}

fn burst_loss(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once(',').ok_or_else(|| format!("`{s}`: expected AVG,MEANBURST"))?;
    let avg: f64 = a.trim().parse().map_err(|_| format!("`{a}` is not a number"))?;
    let burst: f64 = b.trim().parse().map_err(|_| format!("`{b}` is not a number"))?;
    if !(0.0..1.0).contains(&avg) {
        return Err(format!("average loss {avg} is outside 0..1"));
    }
    if !(burst >= 1.0 && burst.is_finite()) {
        return Err(format!("mean burst {burst} must be at least 1"));
    }
    Ok((avg, burst))
}

/// Megabits per second → bytes per second.
fn mbit(s: &str) -> Result<u64, String> {
    let m: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    let bytes = m * 1e6 / 8.0;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("rate {m} Mbit/s is not positive"));
    }
    Ok(bytes as u64)
}

static DUMP: AtomicBool = AtomicBool::new(false);
static QUIT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGUSR1 {
        DUMP.store(true, Ordering::SeqCst);
    } else {
        QUIT.store(true, Ordering::SeqCst);
    }
}

fn install_handlers() {
    for sig in [libc::SIGUSR1, libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to atomics (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn print_stats(s: &RelayStats) {
    println!("up   {}", s.up);
    println!("down {}", s.down);
    println!("clients={} pending={} recv_errors={} flow_errors={}", s.clients, s.pending, s.recv_errors, s.flow_errors);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let both = cli.both.imp();
    let links = link(&cli.up.imp(), &both, "up").and_then(|up| Ok((up, link(&cli.down.imp(), &both, "down")?)));
    let (up, down) = match links {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kcpd-netem: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg =
        RelayConfig { listen: cli.listen, upstream: cli.upstream, up, down, seed: cli.seed, sockbuf: cli.sockbuf };
    install_handlers();
    let relay = match Relay::start(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kcpd-netem: cannot listen on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!("kcpd-netem: {} -> {} up {:?} down {:?}", relay.local_addr(), cli.upstream, up, down);
    while !QUIT.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if DUMP.swap(false, Ordering::SeqCst) {
            print_stats(&relay.stats());
        }
    }
    let stats = relay.stats();
    relay.stop();
    print_stats(&stats);
    ExitCode::SUCCESS
}
