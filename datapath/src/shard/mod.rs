//! The thread-per-core runtime: shards pinned to cores, each owning its sockets, sessions, streams,
//! timers and buffers; no locks on the datapath. Control (hand-offs, new listeners and dials, statistics,
//! shutdown) travels on channels with a waker.
#![allow(clippy::disallowed_methods)] // the runtime reads the clock; the protocol code below it does not

pub mod chan;
pub mod config;
pub mod ctrl;
pub mod local;
pub mod poller;
pub mod service;
pub mod timer;
pub mod worker;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

pub use crate::proto::endpoint::ConnGauge;
pub use crate::proto::front::{FrontConfig, FrontDoor};
pub use config::{Role, TunnelConfig};
pub use ctrl::ShardStats;
pub use local::Endpoint;

use crate::io::udp::SocketWarning;
use crate::io::{Backend, DatagramIo};
use crate::proto::snmp::Snmp;
use ctrl::{Ctrl, Peer};
use local::LocalListener;
use poller::Poller;
use service::{App, ClientSetup, Service};
use worker::{Setup, Worker};

/// Open one UDP socket; returns it with the fd to poll.
pub(crate) fn open_udp(
    backend: Backend,
    svc: &Service,
    bind: SocketAddr,
    reuse_port: bool,
) -> io::Result<(Box<dyn DatagramIo + Send>, RawFd)> {
    open_udp_report(backend, svc, bind, reuse_port).map(|(io, fd, _)| (io, fd))
}

/// [`open_udp`], with what the daemon should log once about the socket (a clamped `--sockbuf`...).
fn open_udp_report(
    backend: Backend,
    svc: &Service,
    bind: SocketAddr,
    reuse_port: bool,
) -> io::Result<(Box<dyn DatagramIo + Send>, RawFd, Vec<SocketWarning>)> {
    let ucfg = crate::io::udp::UdpConfig {
        bind,
        reuse_port,
        sockbuf: svc.sockbuf,
        dscp: svc.dscp,
        offload: svc.offload,
        pktinfo: bind.ip().is_unspecified(),
    };
    let (sock, report) = crate::io::open(backend, &ucfg)?;
    let fd = sock.raw_fd().ok_or_else(|| io::Error::other("backend has no pollable fd"))?;
    Ok((sock, fd, report.warnings))
}

/// A fake-TCP listener on `bind` for `svc` (`--tcp`), with the fd to poll.
#[cfg(target_os = "linux")]
fn open_faketcp_listener(
    bind: SocketAddr,
    shape: crate::proto::faketcp::Shape,
    svc: &Service,
    max_flows: usize,
) -> io::Result<(Box<dyn DatagramIo + Send>, RawFd)> {
    let cfg = crate::io::faketcp::FakeTcpConfig { shape, sockbuf: svc.sockbuf, dscp: svc.dscp, max_flows };
    let l = crate::io::faketcp::FakeTcpListener::open(bind, &cfg)
        .map_err(|e| io::Error::new(e.kind(), format!("--tcp listener on {bind}: {e}")))?;
    let fd = l.raw_fd().ok_or_else(|| io::Error::other("no pollable fd"))?;
    Ok((Box::new(l), fd))
}

#[cfg(not(target_os = "linux"))]
fn open_faketcp_listener(
    _: SocketAddr,
    _: crate::proto::faketcp::Shape,
    _: &Service,
    _: usize,
) -> io::Result<(Box<dyn DatagramIo + Send>, RawFd)> {
    check_faketcp().map(|_| unreachable!())
}

/// Whether this process may use fake TCP: a raw socket and the firewall (Linux only).
fn check_faketcp() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    return crate::io::faketcp::check_privileges().map(drop);
    #[cfg(not(target_os = "linux"))]
    Err(io::Error::new(io::ErrorKind::Unsupported, "--tcp (fake TCP) needs Linux"))
}

/// Add `new` to `all`, once each.
fn note_warnings(all: &mut Vec<SocketWarning>, new: Vec<SocketWarning>) {
    for w in new {
        if !all.contains(&w) {
            all.push(w);
        }
    }
}

fn new_poller(backend: Backend) -> io::Result<Box<dyn Poller>> {
    #[cfg(target_os = "linux")]
    if backend != Backend::Basic {
        return Ok(Box::new(poller::Epoll::new()?));
    }
    let _ = backend;
    Ok(Box::new(poller::Poll::new()))
}

/// A shard's UDP sockets for one service, each with the fd to poll.
pub(crate) type UdpSocks = Vec<(Box<dyn DatagramIo + Send>, RawFd)>;

/// Per-shard starting state.
#[derive(Default)]
pub(crate) struct ShardInit {
    pub listeners: Vec<(UdpSocks, Arc<Service>)>,
    pub client: Option<(Arc<ClientSetup>, Vec<LocalListener>)>,
}

/// N running shards.
pub struct Engine {
    pub(crate) peers: Arc<Vec<Peer>>,
    threads: Vec<JoinHandle<()>>,
    backend: Backend,
    front: Arc<FrontDoor>,
    local: Vec<SocketAddr>,
    listen: Option<Endpoint>,
    warnings: Vec<SocketWarning>,
}

impl Engine {
    /// Start `inits.len()` shards.
    pub(crate) fn spawn(
        backend: Backend,
        pin: bool,
        inits: Vec<ShardInit>,
        events: Option<crate::event::EventSink>,
        front: FrontConfig,
    ) -> io::Result<Engine> {
        let n = inits.len();
        let epoch = Instant::now();
        let mut wakers = Vec::new();
        let mut receivers = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::unbounded();
            let (kicks, kick_rx) = crossbeam_channel::unbounded();
            let (w, wr) = poller::waker()?;
            wakers.push(wr);
            receivers.push((rx, kick_rx));
            peers.push(Peer { tx, kicks, waker: w });
        }
        let peers = Arc::new(peers);
        let front = Arc::new(FrontDoor::new(front));
        let cores = if pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let mut threads = Vec::new();
        for (id, (init, (wake_rx, (ctrl, kicks)))) in
            inits.into_iter().zip(wakers.into_iter().zip(receivers)).enumerate()
        {
            let worker = Worker::new(Setup {
                id,
                backend,
                poller: new_poller(backend)?,
                wake_rx,
                ctrl,
                kicks,
                peers: peers.clone(),
                epoch,
                listeners: init.listeners,
                client: init.client,
                front: front.clone(),
                events: events.clone(),
            })?;
            let core = cores.get(id % cores.len().max(1)).copied();
            threads.push(std::thread::Builder::new().name(format!("kcpd-shard-{id}")).spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                worker.run();
            })?);
        }
        Ok(Engine { peers, threads, backend, front, local: Vec::new(), listen: None, warnings: Vec::new() })
    }

    /// Bind a tunnel end (errors surface here) and start its shards.
    pub fn start(cfg: TunnelConfig) -> io::Result<Engine> {
        let n = config::threads(cfg.threads);
        let svc = |app| {
            Arc::new(Service {
                conn: Arc::new(cfg.conn.clone()),
                sockbuf: cfg.sockbuf,
                dscp: cfg.dscp,
                offload: cfg.offload,
                tcp: cfg.tcp,
                app,
            })
        };
        let mut inits: Vec<ShardInit> = (0..n).map(|_| ShardInit::default()).collect();
        let mut local = Vec::new();
        let mut listen = None;
        let mut warnings = Vec::new();
        match &cfg.role {
            Role::Server { listen: addrs, target } => {
                let svc = svc(App::TunnelServer { target: target.clone() });
                for init in inits.iter_mut() {
                    init.listeners.push((Vec::new(), svc.clone()));
                }
                for addr in addrs {
                    // Another process's sockets on the port are an error, not a group to join.
                    crate::io::udp::probe_free(*addr)?;
                    // The first socket fixes an ephemeral port for the others.
                    let mut bound = *addr;
                    for init in inits.iter_mut() {
                        let (io, fd, w) = open_udp_report(cfg.backend, &svc, bound, true)?;
                        note_warnings(&mut warnings, w);
                        bound = io.local_addr();
                        init.listeners[0].0.push((io, fd));
                    }
                    // --tcp: a fake-TCP listener beside the UDP sockets, same address and port (kcptun's
                    // tcpraw.Listen), on one shard per port in turn.
                    if let Some(shape) = cfg.tcp {
                        let (io, fd) = open_faketcp_listener(bound, shape, &svc, cfg.front.max_sessions)?;
                        inits[local.len() % n].listeners[0].0.push((io, fd));
                    }
                    local.push(bound);
                }
            }
            Role::Client { listen: at, remote, conns } => {
                if remote.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::InvalidInput, "no remote address"));
                }
                let client_svc = svc(App::TunnelClient);
                // Sessions open their sockets later, on the shards: one like them now tells the operator
                // at start-up what the kernel grants (a clamped --sockbuf).
                let any: SocketAddr = if remote[0].is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                // Only what it says of the buffers: a client socket talks to one peer, pktinfo is moot.
                let w = open_udp_report(cfg.backend, &client_svc, any, false)?.2;
                note_warnings(
                    &mut warnings,
                    w.into_iter().filter(|w| matches!(w, SocketWarning::BufferClamped { .. })).collect(),
                );
                // --tcp: sessions dial lazily, so say now when raw sockets or firewall rules are refused.
                if cfg.tcp.is_some() {
                    check_faketcp()?;
                }
                let setup = Arc::new(ClientSetup {
                    svc: client_svc,
                    remote: remote.clone(),
                    conns: *conns,
                    autoexpire_ms: cfg.autoexpire_ms,
                    scavenge_ttl_ms: cfg.scavenge_ttl_ms,
                    smux_auto: cfg
                        .smux_fallback
                        .then(|| Arc::new(std::sync::atomic::AtomicU8::new(cfg.conn.smux.version))),
                });
                LocalListener::probe_free(at)?;
                let first = LocalListener::bind(at, true)?;
                let at = first.local_endpoint()?;
                listen = Some(at.clone());
                let mut first = Some(first);
                for init in inits.iter_mut() {
                    // A unix path takes one listener (shard 0 hands connections out); TCP one per shard.
                    let l = match (first.take(), &at) {
                        (Some(f), _) => vec![f],
                        (None, Endpoint::Tcp(_)) => vec![LocalListener::bind(&at, true)?],
                        (None, Endpoint::Unix(_)) => Vec::new(),
                    };
                    init.client = Some((setup.clone(), l));
                }
            }
        }
        let mut e = Engine::spawn(cfg.backend, cfg.pin, inits, cfg.events.clone(), cfg.front.clone())?;
        e.local = local;
        e.listen = listen;
        e.warnings = warnings;
        Ok(e)
    }

    /// Server: the UDP addresses bound (ephemeral ports resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// What the kernel did not grant the UDP sockets as asked (a `--sockbuf` capped by `net.core.rmem_max`,
    /// ...), each once: for the operator's log at start-up.
    pub fn socket_warnings(&self) -> &[SocketWarning] {
        &self.warnings
    }

    /// Client: where local connections are accepted.
    pub fn listen_endpoint(&self) -> Option<&Endpoint> {
        self.listen.as_ref()
    }

    /// How many shard threads run, fixed at start (shard ids are `0..shards()`).
    pub fn shards(&self) -> usize {
        self.peers.len()
    }

    /// The I/O backend of every shard's UDP sockets, fixed at start.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn send(&self, shard: usize, msg: Ctrl) -> io::Result<()> {
        let p = &self.peers[shard];
        p.tx.send(msg).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "shard stopped"))?;
        p.waker.wake();
        Ok(())
    }

    /// A snapshot of every shard's counters.
    pub fn stats(&self) -> Vec<ShardStats> {
        let mut out = Vec::new();
        for i in 0..self.peers.len() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            if self.send(i, Ctrl::Snapshot(tx)).is_ok()
                && let Ok(st) = rx.recv_timeout(std::time::Duration::from_secs(2))
            {
                out.push(st);
            }
        }
        out
    }

    /// SNMP totals across shards: counters summed, MaxConn the peak of the engine-wide total.
    pub fn snmp(&self) -> Snmp {
        let mut t = Snmp::default();
        for s in self.stats() {
            t.merge(&s.snmp);
        }
        t.max_conn = self.front.gauge().peak().max(t.curr_estab);
        t
    }

    /// Live conversations and their all-time peak, across shards.
    pub fn conn_gauge(&self) -> &ConnGauge {
        self.front.gauge()
    }

    /// The front door every shard shares: its counters and settings.
    pub fn front(&self) -> &FrontDoor {
        &self.front
    }

    /// Stop every shard and wait for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for i in 0..self.peers.len() {
            let _ = self.send(i, Ctrl::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}
