//! Running a tunnel end: a validated [`Config`] becomes an engine configuration, the engine starts, and the
//! process then serves signals (SIGUSR1 dump, SIGTERM/SIGINT shutdown), `--snmplog` and systemd readiness
//! until it is told to stop.

#![allow(clippy::disallowed_methods)] // the daemon's run loop reads the clock; the protocol code under it does not

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kcpd_crypto::{Method, PacketCrypto};
use kcpd_datapath::event::EventSink;
use kcpd_datapath::io::Backend;
use kcpd_datapath::io::udp::{BufKind, Offload, SocketWarning};
use kcpd_datapath::proto::conn::{ConnConfig, QppSetup};
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_datapath::shard::{Endpoint, Engine, FrontConfig, Role, TunnelConfig};
use kcpd_fec::ParityRule;

use crate::config::{Addrs, Config, LocalAddr, PortRange, Side};
use crate::snmp::{Layout, LocalTime, SnmpLogger, dump_line, log_prefix};

/// Why a tunnel end could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot resolve {what} `{addr}`: {why}")]
    Resolve { what: &'static str, addr: String, why: String },
    #[error("{0}")]
    Crypt(#[from] kcpd_crypto::UnknownMethod),
    #[error("cannot start the tunnel: {0}")]
    Start(io::Error),
    #[error("cannot open the log file {path}: {err}")]
    Log { path: String, err: io::Error },
}

/// Engine choices that are not kcptun flags (kcpd's own: `--threads`, `--io`, `--pin`).
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Shards; 0 = one per core.
    pub threads: usize,
    pub backend: Backend,
    pub pin: bool,
    /// smux half-close between two kcpd ends (kcptun closes both directions at the first EOF).
    pub half_close: bool,
    /// The SNMP output layout (`--snmp-layout`): the SIGUSR1 line and the `--snmplog` CSV.
    pub snmp_layout: Layout,
    /// The server's front door (`--max-sessions`, `--max-per-source`, `--new-per-source`,
    /// `--replay-window`).
    pub front: FrontConfig,
    /// `--max-streams`: streams a client may have open at once per session (0: no cap).
    pub max_streams: usize,
    /// `--new-streams`: target connects per session per second, and the burst.
    pub stream_rate: (u32, u32),
    /// `--mem-budget`, MiB (0: no bound).
    pub mem_budget_mib: usize,
    /// `--max-sessions` was given (else it follows the budget).
    pub max_sessions_set: bool,
    /// `--cc` / `--rate`: congestion control and pacing of what this end sends.
    pub cc: kcpd_datapath::proto::cc::CcMode,
    /// `--no-offload`: UDP GSO/GRO off (one datagram per buffer, as `--tcp` must run).
    pub offload: Offload,
}

/// What `--mem-budget` sets: the bound on received data, and the caps that follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of received data all sessions may hold (0: no bound).
    pub bytes: usize,
    /// Pooled buffers per shard.
    pub pool: usize,
}

/// Session memory a budget reckons with besides received data (KCP, FEC, smux state; about 40 KiB
/// measured for an idle kcpd session, rounded up).
pub const SESSION_BYTES: usize = 64 << 10;

impl EngineOptions {
    /// The budget, and the front door's defaults fitted to it (explicit flags win).
    pub fn budget(&self, shards: usize) -> (Budget, FrontConfig) {
        let bytes = self.mem_budget_mib.saturating_mul(1 << 20);
        let mut front = self.front.clone();
        if bytes == 0 {
            return (Budget { bytes, pool: kcpd_datapath::proto::pool::POOL_CAP }, front);
        }
        if !self.max_sessions_set {
            front.max_sessions = front.max_sessions.min(bytes / SESSION_BYTES).max(1);
        }
        // The tables at most 1/16 of the budget together, the pools 1/8.
        front.replay_entries = front.replay_entries.min(bytes / 24 / 9);
        front.conv_entries = front.conv_entries.min(bytes / 48 / 9);
        let pool = (bytes / 8 / kcpd_datapath::proto::pool::BUF_SIZE / shards.max(1))
            .min(kcpd_datapath::proto::pool::POOL_CAP);
        (Budget { bytes, pool }, front)
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 0,
            backend: kcpd_datapath::io::probe_best(),
            pin: true,
            half_close: false,
            snmp_layout: Layout::New,
            front: FrontConfig::default(),
            max_streams: kcpd_datapath::proto::conn::DEFAULT_MAX_STREAMS,
            stream_rate: kcpd_datapath::proto::conn::DEFAULT_STREAM_RATE,
            mem_budget_mib: 512,
            max_sessions_set: false,
            cc: kcpd_datapath::proto::cc::CcMode::Bbr,
            offload: Offload::default(),
        }
    }
}

/// Events the engine may queue for the log thread before it drops (and counts) them.
const EVENT_QUEUE: usize = 4096;

/// Where log lines go: stderr or `--log`, each with Go's `log` prefix (`2006/01/02 15:04:05 `).
#[derive(Clone)]
pub struct Logger {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Logger {
    pub fn stderr() -> Logger {
        Logger { out: Arc::new(Mutex::new(Box::new(io::stderr()))) }
    }

    /// `--log file`: appended to, created if missing.
    pub fn file(path: &str) -> Result<Logger, RunError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|err| RunError::Log { path: path.to_owned(), err })?;
        Ok(Logger { out: Arc::new(Mutex::new(Box::new(f))) })
    }

    pub fn log(&self, msg: &str) {
        let line = format!("{}{msg}\n", log_prefix(&LocalTime::from_system(SystemTime::now())));
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

/// Resolve `host:port` (an empty host: every address, dual-stack where the system has IPv6).
fn resolve(what: &'static str, host: &str, port: u16) -> Result<Vec<IpAddr>, RunError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Ok(vec![if ipv6_available() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }]);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs: Vec<IpAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| RunError::Resolve { what, addr: format!("{host}:{port}"), why: e.to_string() })?
        .map(|a| a.ip())
        .collect();
    // Prefer IPv4 as Go's resolver does for "udp" dials on most systems.
    let mut v4: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
    if v4.is_empty() {
        v4 = addrs;
    }
    if v4.is_empty() {
        return Err(RunError::Resolve { what, addr: format!("{host}:{port}"), why: "no address".into() });
    }
    Ok(v4)
}

fn ipv6_available() -> bool {
    std::net::UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).is_ok()
}

/// `host:port` or `host:min-max` → every address, one per port.
fn addrs_of(what: &'static str, r: &PortRange) -> Result<Vec<SocketAddr>, RunError> {
    let ip = resolve(what, &r.host, r.min)?[0];
    Ok((r.min..=r.max).map(|p| SocketAddr::new(ip, p)).collect())
}

/// A local endpoint: `host:port` over TCP (resolved), or (NEW kcptun) a unix socket path.
fn endpoint(what: &'static str, a: &LocalAddr) -> Result<Endpoint, RunError> {
    match a {
        LocalAddr::Tcp { host, port } => Ok(Endpoint::Tcp(SocketAddr::new(resolve(what, host, *port)?[0], *port))),
        LocalAddr::Unix(path) => Ok(Endpoint::Unix(path.clone())),
    }
}

/// Seconds as engine milliseconds, capped at i32::MAX ms (24.8 days: in effect never) so that a huge
/// setting cannot overflow anything downstream.
fn secs_to_ms(s: i64) -> u32 {
    (s.max(0) as u128 * 1000).min(i32::MAX as u128) as u32
}

/// The engine configuration for `cfg`, from its typed [`Settings`](crate::config::Settings).
pub fn tunnel_config(side: Side, cfg: &Config, opts: &EngineOptions) -> Result<TunnelConfig, RunError> {
    let settings = cfg.settings(side)?;
    let session = SessionConfig {
        mtu: cfg.mtu as usize,
        data_shards: cfg.datashard as usize,
        parity_shards: cfg.parityshard as usize,
        parity_rule: ParityRule::SkipSparse,
        nodelay: settings.nodelay,
        snd_wnd: cfg.sndwnd as u32,
        rcv_wnd: cfg.rcvwnd as u32,
        ack_nodelay: cfg.acknodelay,
        stream: true,
        cc: opts.cc,
    };
    let smux = kcpd_smux::Config {
        // A server without --smuxver detects each client's version (0).
        version: settings.smux_version.unwrap_or(0),
        max_frame_size: cfg.framesize as usize,
        max_receive_buffer: cfg.smuxbuf as usize,
        max_stream_buffer: cfg.streambuf as usize,
        keepalive_interval_ms: secs_to_ms(cfg.keepalive),
        half_close: opts.half_close,
        // With a congestion controller the stream windows follow the path too (docs/congestion.md).
        window_autotune: opts.cc != kcpd_datapath::proto::cc::CcMode::None,
        ..kcpd_smux::Config::kcptun_new()
    };
    let role = match &settings.addrs {
        Addrs::Client { local, remote } => Role::Client {
            listen: endpoint("--localaddr", local)?,
            remote: addrs_of("--remoteaddr", remote)?,
            conns: cfg.conn as usize,
        },
        Addrs::Server { listen, target } => {
            Role::Server { listen: addrs_of("--listen", listen)?, target: endpoint("--target", target)? }
        }
    };
    Ok(TunnelConfig {
        role,
        conn: ConnConfig {
            crypto: Arc::new(PacketCrypto::from_password(settings.method, &cfg.key)),
            session,
            smux,
            compress: !cfg.nocomp,
            close_wait_ms: secs_to_ms(cfg.closewait),
            rate_limit: cfg.ratelimit as u64,
            qpp: cfg.qpp.then(|| Arc::new(QppSetup::new(cfg.key.as_bytes(), cfg.qpp_count as u16))),
            // The tunnel runs smux, whose keepalive ends silent sessions.
            raw_idle_ms: 0,
            max_streams: opts.max_streams,
            stream_rate: opts.stream_rate,
        },
        threads: opts.threads,
        pin: opts.pin,
        backend: opts.backend,
        sockbuf: Some(cfg.sockbuf as usize),
        dscp: cfg.dscp as u8,
        offload: opts.offload,
        tcp: cfg.tcp.then_some(kcpd_datapath::proto::faketcp::Shape::New),
        autoexpire_ms: secs_to_ms(cfg.autoexpire),
        scavenge_ttl_ms: secs_to_ms(cfg.scavengettl),
        // A client without --smuxver starts with v2 and learns from a mismatch.
        smux_fallback: side == Side::Client && cfg.smuxver.is_none(),
        events: None,
        front: FrontConfig {
            // `null`: no nonce and no check, anyone can forge any datagram; nothing to filter.
            replay_window: if settings.method == Method::Null { None } else { opts.front.replay_window },
            ..opts.budget(kcpd_datapath::shard::config::threads(opts.threads)).1
        },
    })
}

/// A sysctl's current value, from /proc (Linux).
fn sysctl(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/sys/{}", name.replace('.', "/"))).ok()?.trim().parse().ok()
}

/// The start-up warnings for what the kernel did not grant the UDP sockets: one line for a clamped
/// `--sockbuf` (both buffers), naming what was granted, the sysctls to raise and the sysctl.d file.
pub fn socket_warning_lines(warnings: &[SocketWarning], current: impl Fn(&str) -> Option<u64>) -> Vec<String> {
    let mut out = Vec::new();
    // (buffer, usable bytes granted) per clamped buffer, once each; and the size asked for.
    let mut clamped: Vec<(BufKind, usize)> = Vec::new();
    let mut requested = 0;
    for w in warnings {
        match *w {
            SocketWarning::BufferClamped { buffer, requested: r, effective } => {
                requested = r;
                // Linux reads back twice what a socket may use (socket(7)).
                let usable = if cfg!(target_os = "linux") { effective / 2 } else { effective };
                if !clamped.iter().any(|(b, _)| *b == buffer) {
                    clamped.push((buffer, usable));
                }
            }
            SocketWarning::NoPktinfo { .. } => out.push(format!("warning: {w}")),
        }
    }
    if clamped.is_empty() {
        return out;
    }
    let granted: Vec<String> = clamped.iter().map(|(b, n)| format!("{} {n} bytes", b.option())).collect();
    let caps: Vec<String> = clamped
        .iter()
        .map(|(b, _)| match current(b.sysctl()) {
            Some(v) => format!("{} = {v}", b.sysctl()),
            None => b.sysctl().to_string(),
        })
        .collect();
    let raise: Vec<String> = clamped.iter().map(|(b, _)| format!("{}={requested}", b.sysctl())).collect();
    out.insert(
        0,
        format!(
            "warning: --sockbuf {requested}: the kernel granted only {} (capped by {}); raise the cap with \
             `sysctl -w {}` and keep it in /etc/sysctl.d/90-kcpd.conf (kcpd ships sysctl.d/90-kcpd.conf), \
             or run kcpd with CAP_NET_ADMIN",
            granted.join(" and "),
            caps.join(", "),
            raise.join(" ")
        ),
    );
    out
}

/// The one-line summary kcptun logs at start-up, with kcpd's engine choices.
pub fn describe(side: Side, cfg: &Config, engine: &Engine) -> Vec<String> {
    let (nodelay, interval, resend, nc) = cfg.nodelay_params();
    let mut v = vec![format!(
        "kcpd {} ({})",
        env!("CARGO_PKG_VERSION"),
        if side == Side::Client { "client" } else { "server" }
    )];
    match side {
        Side::Client => {
            v.push(format!("listening on: {}", cfg.localaddr));
            v.push(format!("remote address: {}", cfg.remoteaddr));
            v.push(format!("conn: {} autoexpire: {} scavengettl: {}", cfg.conn, cfg.autoexpire, cfg.scavengettl));
        }
        Side::Server => {
            v.push(format!("listening on: {} (udp {:?})", cfg.listen, engine.udp_addrs()));
            v.push(format!("target: {}", cfg.target));
        }
    }
    v.push(format!("encryption: {} compression: {}", cfg.crypt, !cfg.nocomp));
    v.push(format!(
        "mode: {} nodelay parameters: {nodelay} {interval} {resend} {nc} mtu: {} sndwnd: {} rcvwnd: {}",
        cfg.mode, cfg.mtu, cfg.sndwnd, cfg.rcvwnd
    ));
    v.push(format!(
        "datashard: {} parityshard: {} acknodelay: {} dscp: {} sockbuf: {}",
        cfg.datashard, cfg.parityshard, cfg.acknodelay, cfg.dscp, cfg.sockbuf
    ));
    v.push(format!(
        "smuxver: {} smuxbuf: {} framesize: {} streambuf: {} keepalive: {} closewait: {} ratelimit: {} QPP: {}",
        match (cfg.smux_version(side), cfg.smuxver, side) {
            (None, ..) => "auto (per session)".to_string(),
            (Some(v), None, Side::Client) => format!("{v} (no --smuxver: falls back to 1 against a v1 server)"),
            (Some(v), ..) => v.to_string(),
        },
        cfg.smuxbuf,
        cfg.framesize,
        cfg.streambuf,
        cfg.keepalive,
        cfg.closewait,
        cfg.ratelimit,
        cfg.qpp
    ));
    v.push(format!("engine: {} shards, {} I/O", engine.shards(), engine.backend()));
    if side == Side::Server {
        let f = engine.front().config();
        let replay = match f.replay_window {
            Some(w) => format!("{} s", w.as_millis() / 1000),
            None if cfg.crypt == "null" => "off (--crypt null: datagrams carry no nonce and no check)".to_string(),
            None => "off".to_string(),
        };
        let cap = |n: usize| if n == 0 { "none".to_string() } else { n.to_string() };
        let limit = kcpd_datapath::proto::budget::limit();
        v.push(if limit == 0 {
            "memory budget: none (--mem-budget 0)".to_string()
        } else {
            format!("memory budget: {} MiB of received data", limit >> 20)
        });
        let method = cfg.crypt.parse::<kcpd_crypto::Method>().ok();
        let migration = match method.map(kcpd_datapath::proto::endpoint::Migration::for_method) {
            Some(kcpd_datapath::proto::endpoint::Migration::Off) => {
                format!("off (--crypt {} is malleable: a client whose address changes loses its session)", cfg.crypt)
            }
            _ => "on (a client whose address changes keeps its session)".to_string(),
        };
        v.push(format!(
            "front door: replay protection: {replay} max sessions: {} per source: {} new per source: {}/s (burst {}) \
             migration: {migration}",
            cap(f.max_sessions),
            cap(f.max_per_source),
            f.new_per_source.0,
            f.new_per_source.1
        ));
    }
    v
}

// ---- signals ----

static SIGNALS: AtomicUsize = AtomicUsize::new(0);
const SIG_USR1: usize = 1;
const SIG_STOP: usize = 2;

extern "C" fn on_signal(sig: libc::c_int) {
    let bit = if sig == libc::SIGUSR1 { SIG_USR1 } else { SIG_STOP };
    SIGNALS.fetch_or(bit, Ordering::SeqCst);
}

fn install_signals() {
    for sig in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only does an atomic fetch_or, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // SAFETY: ignoring SIGPIPE, as Go programs do for sockets.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// kcpd's own counters after kcptun's SNMP line on SIGUSR1 (server): what the front door refused.
pub fn front_line(engine: &Engine) -> String {
    let f = engine.front().stats();
    let (mut oversize, mut deferred, mut streams, mut sessions) = (0, 0, 0, 0);
    let (mut migrated, mut stale, mut held) = (0, 0, 0);
    for s in engine.stats() {
        oversize += s.oversize;
        deferred += s.rx_deferred;
        streams += s.streams_refused;
        sessions += s.sessions;
        migrated += s.migrated_in;
        stale += s.migration_stale;
        held += s.migration_held;
    }
    format!(
        "front door: sessions {sessions} refused total-cap {} per-source {} rate {} memory {} replays {} \
         stale-convs {} oversize {oversize} streams-refused {streams} rx-deferred {deferred} replay-evicted {} \
         held-bytes {} budget-drops {} migrated {migrated} migration-stale {stale} migration-held {held}",
        f.refused_total,
        f.refused_per_source,
        f.refused_rate,
        f.refused_memory,
        f.replays,
        f.conv_reused,
        f.replay_evicted,
        kcpd_datapath::proto::budget::held(),
        kcpd_datapath::proto::budget::drops()
    )
}

/// The fake-TCP transport's counters on SIGUSR1 (`--tcp`): connections open, segments taken in and
/// what was dropped, by reason.
pub fn tcp_line(engine: &Engine) -> String {
    let mut t = kcpd_datapath::proto::faketcp::FlowStats::default();
    for s in engine.stats() {
        t.add(&s.tcp);
    }
    format!(
        "fake tcp: connections {} segments-in {} datagrams-in {} dropped {} (malformed {} no-flow {} table-full {} \
         out-of-window {} stray-rst {} stray-syn {} unconfirmed {}) refused {} closed {} expired {} \
         tx-no-flow {} accept-paused {}",
        t.connections,
        t.rx_segments,
        t.rx_datagrams,
        t.rx_dropped(),
        t.rx_malformed,
        t.rx_no_flow,
        t.rx_full,
        t.rx_out_of_window,
        t.rx_stray_resets,
        t.rx_stray_syns,
        t.rx_unconfirmed,
        t.refused,
        t.closed,
        t.expired,
        t.tx_no_flow,
        t.accept_paused
    )
}

/// Raise RLIMIT_NOFILE's soft limit to the hard one (every stream is a descriptor; the soft default of
/// 1024 is a few hundred connections); returns the soft limit before and after.
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let from = r.rlim_cur;
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((from, r.rlim_cur))
}

/// Start the tunnel and serve until SIGTERM/SIGINT (or `stop` is set). Returns once the engine stopped.
pub fn serve(
    side: Side,
    cfg: &Config,
    opts: &EngineOptions,
    log: &Logger,
    stop: Option<Arc<AtomicBool>>,
) -> Result<(), RunError> {
    let mut tc = tunnel_config(side, cfg, opts)?;
    let (budget, _) = opts.budget(kcpd_datapath::shard::config::threads(opts.threads));
    kcpd_datapath::proto::budget::set_limit(budget.bytes);
    kcpd_datapath::proto::pool::set_cap(budget.pool);
    install_signals();
    let nofile = raise_nofile();
    // Events go to a log thread of their own: a shard never waits for the log.
    let (sink, events) = EventSink::channel(EVENT_QUEUE);
    let dropped = sink.dropped_events();
    tc.events = Some(sink);
    let engine = Engine::start(tc).map_err(RunError::Start)?;
    let log_thread = crate::eventlog::spawn(log.clone(), cfg.quiet, events, dropped).map_err(RunError::Start)?;
    for line in describe(side, cfg, &engine) {
        log.log(&line);
    }
    match nofile {
        Ok((from, to)) if to > from => log.log(&format!("open files limit: raised from {from} to {to}")),
        Ok(_) => {}
        Err(e) => log.log(&format!("open files limit: cannot raise it to the hard limit: {e}")),
    }
    for line in socket_warning_lines(engine.socket_warnings(), sysctl) {
        log.log(&line);
    }
    let _ = crate::notify::notify("READY=1");
    let layout = opts.snmp_layout;
    let mut snmplog = (!cfg.snmplog.is_empty() && cfg.snmpperiod > 0).then(|| SnmpLogger::new(&cfg.snmplog, layout));
    // An unwritable --snmplog is reported once (kcptun logs it every period), again only after it recovered.
    let mut snmplog_failing = false;
    // Capped at ten years: a larger --snmpperiod means never, without overflowing the clock.
    let period = Duration::from_secs((cfg.snmpperiod.max(1) as u64).min(10 * 365 * 86_400));
    let mut next_log = Instant::now() + period;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let sig = SIGNALS.swap(0, Ordering::SeqCst);
        if sig & SIG_USR1 != 0 {
            log.log(&dump_line(layout, &engine.snmp()));
            if side == Side::Server {
                log.log(&front_line(&engine));
            }
            if cfg.tcp {
                log.log(&tcp_line(&engine));
            }
        }
        if sig & SIG_STOP != 0 || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        if let Some(l) = snmplog.as_mut()
            && Instant::now() >= next_log
        {
            next_log += period;
            let now = SystemTime::now();
            match l.write(now, &engine.snmp()) {
                // Retried every period; said once.
                Err(e) if !snmplog_failing => {
                    snmplog_failing = true;
                    log.log(&format!(
                        "snmplog: cannot write {}: {e} (retrying every {} s, logged once)",
                        l.path_at(now).display(),
                        period.as_secs()
                    ));
                }
                Err(_) => {}
                Ok(path) if snmplog_failing => {
                    snmplog_failing = false;
                    log.log(&format!("snmplog: writing {} again", path.display()));
                }
                Ok(_) => {}
            }
        }
    }
    let _ = crate::notify::notify("STOPPING=1");
    log.log("shutting down");
    // The shards hold the last senders: once they are gone the log thread writes what is queued and ends.
    engine.shutdown();
    // --tcp: the rules went with the sockets; anything a failed shard left goes now.
    #[cfg(target_os = "linux")]
    kcpd_datapath::io::firewall::remove_all();
    let _ = log_thread.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sockbuf_warning_for_both_buffers() {
        let w = |buffer, effective| SocketWarning::BufferClamped { buffer, requested: 9_000_000, effective };
        let ws = [w(BufKind::Recv, 8_388_608), w(BufKind::Send, 8_388_608), w(BufKind::Recv, 8_388_608)];
        let cur = |s: &str| (s == "net.core.rmem_max").then_some(4_194_304);
        assert_eq!(
            socket_warning_lines(&ws, cur),
            ["warning: --sockbuf 9000000: the kernel granted only SO_RCVBUF 4194304 bytes and SO_SNDBUF 4194304 \
              bytes (capped by net.core.rmem_max = 4194304, net.core.wmem_max); raise the cap with `sysctl -w \
              net.core.rmem_max=9000000 net.core.wmem_max=9000000` and keep it in /etc/sysctl.d/90-kcpd.conf (kcpd \
              ships sysctl.d/90-kcpd.conf), or run kcpd with CAP_NET_ADMIN"]
        );
        assert!(socket_warning_lines(&[], cur).is_empty());
    }

    #[test]
    fn durations_stay_within_the_engine_clock() {
        assert_eq!(secs_to_ms(0), 0);
        assert_eq!(secs_to_ms(30), 30_000);
        assert_eq!(secs_to_ms(-5), 0);
        assert_eq!(secs_to_ms(3_000_000), i32::MAX as u32);
        assert_eq!(secs_to_ms(i64::MAX), i32::MAX as u32);
    }

    #[test]
    fn engine_config_from_kcptun_settings() {
        let mut cfg = Config::defaults(Side::Client);
        cfg.remoteaddr = "127.0.0.1:29900-29903".into();
        cfg.localaddr = "127.0.0.1:0".into();
        cfg.mode = "manual".into();
        cfg.interval = -1;
        cfg.resend = -1;
        cfg.autoexpire = 60;
        cfg.scavengettl = 4_000_000_000;
        cfg.validate(Side::Client).unwrap();
        let tc = tunnel_config(Side::Client, &cfg, &EngineOptions::default()).unwrap();
        let Role::Client { remote, conns, .. } = &tc.role else { panic!() };
        assert_eq!(remote.len(), 4);
        assert_eq!(*conns, 1);
        // kcp-go ignores negative NoDelay values.
        assert_eq!((tc.conn.session.nodelay.interval, tc.conn.session.nodelay.resend), (100, 0));
        assert_eq!(tc.autoexpire_ms, 60_000);
        assert_eq!(tc.scavenge_ttl_ms, i32::MAX as u32);
        assert_eq!(tc.conn.smux.version, 2);
        let mut s = Config::defaults(Side::Server);
        s.listen = ":29900".into();
        s.target = "/run/app.sock".into();
        let tc = tunnel_config(Side::Server, &s, &EngineOptions::default()).unwrap();
        assert_eq!(tc.conn.smux.version, 0, "a server without --smuxver detects it");
        assert_eq!(tc.conn.close_wait_ms, 30_000);
        let Role::Server { listen, target } = &tc.role else { panic!() };
        assert!(listen[0].ip().is_unspecified() && listen[0].port() == 29900);
        assert_eq!(*target, Endpoint::Unix("/run/app.sock".into()));
    }
}
