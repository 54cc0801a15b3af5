//! `kcpd-bench`: benchmarks that print kcpd's figure next to a reference measured in the same run.
//!
//! - `kcpd-bench crypto`: seal/open MB/s per `--crypt` method on 1400-byte datagrams, beside
//!   `openssl speed -evp aes-128-cfb / aes-256-cfb / des-ede3-cfb` and the RustCrypto cfb-mode/twofish
//!   crates;
//! - `kcpd-bench fec`: Reed–Solomon 10+3 × 1400 B encode and 3-loss reconstruct GB/s per kernel, beside
//!   the reed-solomon-erasure crate, plus the FEC encoder/decoder per packet;
//! - `kcpd-bench pipeline`: one session's whole pipeline in memory beside the raw AES-128-CFB seal, and
//!   the per-tick cost of 5,000 sessions;
//! - `kcpd-bench datapath`: KCP sessions over loopback through the shard engine per I/O backend, 1 and N
//!   shards, beside a raw recvmmsg/sendmmsg blaster measured in the same run;
//! - `kcpd-bench tunnel`: kcpd and kcptun processes side by side through the `kcpd-netem` relay, same flags,
//!   every scenario and workload of the README's performance table;
//! - `kcpd-bench paths`: real paths with a bottleneck every flow shares (TBF on a veth pair between
//!   network namespaces), kcpd `--cc none`/`bbr` against the best kcptun of a pre-pass (needs root);
//! - `kcpd-bench flood`: a kcpd server's real session under datagram floods (garbage, wrong key, replays,
//!   new sessions, oversized), beside a control flood at a closed port;
//! - every path also reports heap allocations per packet (a counting allocator wraps the system one).
//!
//! Figures are medians of `--reps` timed runs of `--seconds` each; never assertions.

// Benchmarks measure wall time: the sans-IO clock rule (clippy.toml) is for protocol code.
#![allow(clippy::disallowed_methods)]

mod alloc;
mod crypto;
mod datapath;
mod fec;
mod flood;
mod measure;
mod paths;
mod pipeline;
mod tunnel;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(name = "kcpd-bench", about = "kcpd benchmarks, each beside a reference measured in the same run")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Seconds per timed run.
    #[arg(long, default_value_t = 0.5, global = true)]
    seconds: f64,
    /// Timed runs per figure (the median is printed).
    #[arg(long, default_value_t = 3, global = true)]
    reps: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Packet crypto: seal and open per method, next to OpenSSL.
    Crypto {
        /// Only these methods (comma separated kcptun names).
        #[arg(long, value_delimiter = ',')]
        methods: Vec<String>,
    },
    /// Reed-Solomon and FEC framing, next to reed-solomon-erasure.
    Fec,
    /// The session pipeline in memory, and many idle sessions.
    Pipeline,
    /// Sessions over loopback through the shard engine, per backend, beside the raw UDP limit.
    Datapath {
        /// Shard counts to run (default: 1 and the number of cores).
        #[arg(long, value_delimiter = ',')]
        shards: Vec<usize>,
    },
    /// Crypto, FEC and pipeline (the in-memory benchmarks).
    Micro,
    /// A kcpd server's real session while its port is flooded (needs target/release/kcpd).
    /// `--seconds` is the measurement window of each run.
    Flood {
        /// Where flood.md and the process logs go.
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
        /// Flood rates in datagrams per second.
        #[arg(long, value_delimiter = ',', default_values_t = vec![20_000u32, 50_000, 100_000])]
        rates: Vec<u32>,
    },
    /// kcpd and kcptun side by side through the impairment relay (needs target/release/kcpd and
    /// kcpd-netem, and Debian's kcptun). `--seconds` is the measurement window of each run.
    Tunnel {
        /// Where results.md, goodput-vs-loss.svg and the process logs go.
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
        /// Only these pairs (kcpd-kcpd, kcptun-kcptun, kcpd-kcptun, kcptun-kcpd).
        #[arg(long, value_delimiter = ',')]
        pairs: Vec<String>,
        /// Fewer scenarios (clean and 20 ms + 5%): a smoke run.
        #[arg(long)]
        quick: bool,
        /// Only these scenarios (by name, e.g. 100Mbit+2%).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Extra flags for both kcpd ends (e.g. "--cc bbr"), after the common ones.
        #[arg(long, allow_hyphen_values = true)]
        kcpd_flags: Option<String>,
        /// Where kcptun-client and kcptun-server are.
        #[arg(long, default_value = "/usr/bin")]
        kcptun_dir: std::path::PathBuf,
    },
    /// Real paths (needs root): a bottleneck every flow shares (TBF on a veth pair between network
    /// namespaces, kcpd-netem for delay and loss), kcpd `--cc none`/`bbr` against the best kcptun of a
    /// pre-pass. The quick subset by default (about 20 minutes), `--full` for the whole matrix.
    Paths {
        #[arg(long, default_value = "bench-results")]
        out: std::path::PathBuf,
        /// RTT 40/150/300 ms × loss 0/1/2/5% × uncapped/100/20 Mbit/s, bursty loss, 16 streams, two tunnels.
        #[arg(long)]
        full: bool,
        /// Mixed pairs too (one stream): kcpd `--cc bbr` sending to kcptun, and kcptun sending to kcpd
        /// (always with --full).
        #[arg(long)]
        mixed: bool,
        /// Fake TCP instead (the clean path): kcpd `--tcp` beside kcpd over UDP with and without GSO/GRO,
        /// and the best kcptun `--tcp`.
        #[arg(long)]
        tcp: bool,
        /// Only these paths (names as printed, e.g. "150ms+2%").
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Exchanges per latency run.
        #[arg(long, default_value_t = 2000)]
        latency_samples: u64,
        /// More flags for both kcpd ends (e.g. "--smuxbuf 16777216"), after the bench's own.
        #[arg(long)]
        kcpd_flags: Option<String>,
        /// Where kcptun-client and kcptun-server are.
        #[arg(long, default_value = "/usr/bin")]
        kcptun_dir: std::path::PathBuf,
    },
}

/// A `--kcpd-flags` value as separate arguments.
fn words(flags: Option<String>) -> Vec<String> {
    flags.map(|f| f.split_whitespace().map(str::to_string).collect()).unwrap_or_default()
}

fn main() {
    let cli = Cli::parse();
    let m = measure::Measure { seconds: cli.seconds, reps: cli.reps.max(1) };
    match cli.cmd {
        Cmd::Crypto { methods } => crypto::run(&m, &methods),
        Cmd::Fec => fec::run(&m),
        Cmd::Pipeline => pipeline::run(&m),
        Cmd::Datapath { shards } => datapath::run(&m, &shards),
        Cmd::Tunnel { out, pairs, quick, scenarios, kcpd_flags, kcptun_dir } => tunnel::run(&tunnel::Opts {
            reps: cli.reps,
            seconds: cli.seconds,
            quick,
            out,
            pairs,
            scenarios,
            kcpd_flags: words(kcpd_flags),
            kcptun_dir,
        }),
        Cmd::Paths { out, full, mixed, tcp, scenarios, latency_samples, kcpd_flags, kcptun_dir } => {
            paths::run(&paths::Opts {
                reps: cli.reps,
                seconds: cli.seconds,
                full,
                mixed: mixed || full,
                tcp,
                scenarios,
                latency_samples,
                kcpd_flags: words(kcpd_flags),
                out,
                kcptun_dir,
            })
        }
        Cmd::Flood { out, rates } => flood::run(&flood::Opts { reps: cli.reps, seconds: cli.seconds, rates, out }),
        Cmd::Micro => {
            crypto::run(&m, &[]);
            println!();
            fec::run(&m);
            println!();
            pipeline::run(&m);
        }
    }
}
