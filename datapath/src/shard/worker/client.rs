//! The client tunnel's side of a shard: local connections accepted, spread over the `--conn` slots (each
//! slot's session created lazily, replaced when it died or `--autoexpire`d, a random address of the
//! `--remoteaddr` range per new session), and the library's dials and streams.

use kcpd_time::Instant;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Udp, UdpOwner, Worker};
use crate::event::{Event, SessionEnd};
use crate::proto::conn::Upper;
use crate::proto::endpoint::ConnHandle;
use crate::shard::chan::Chan;
use crate::shard::ctrl::{Ctrl, Dialed};
use crate::shard::local::LocalStream;
use crate::shard::poller::Interest;
use crate::shard::service::{App, Service};

use super::pipe::Local;

/// A fake-TCP connection to `peer` for a new session (`--tcp`; Linux), with the fd to poll.
fn dial_faketcp(
    peer: SocketAddr,
    shape: crate::proto::faketcp::Shape,
    svc: &Service,
) -> io::Result<(Box<dyn crate::io::DatagramIo + Send>, std::os::fd::RawFd)> {
    #[cfg(target_os = "linux")]
    {
        let cfg = crate::io::faketcp::FakeTcpConfig { shape, sockbuf: svc.sockbuf, dscp: svc.dscp, max_flows: 1 };
        let d = crate::io::faketcp::FakeTcpDial::connect(peer, &cfg)?;
        let fd = d.raw_socket_fd();
        Ok((Box::new(d), fd))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (peer, shape, svc);
        Err(io::Error::new(io::ErrorKind::Unsupported, "--tcp (fake TCP) needs Linux"))
    }
}

/// How long a local listener rests after `accept` failed for want of descriptors or memory.
pub(super) const ACCEPT_PAUSE: kcpd_time::Duration = kcpd_time::Duration::from_millis(250);

/// Failures of one connection, not of the listener: accept the next.
fn transient_accept_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM))
        || e.kind() == io::ErrorKind::Interrupted
}

impl Worker {
    pub(super) fn on_accept(&mut self, l: usize, now: Instant) {
        loop {
            let stream = match self.listeners.get(l).map(|x| x.accept()) {
                Some(Ok(Some(s))) => s,
                Some(Err(e)) if transient_accept_error(&e) => continue,
                Some(Err(error)) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the connection stays queued and the
                    // listener readable, so polling it again would spin. Pause it and retry later.
                    self.pause_listener(l, now, error);
                    return;
                }
                _ => return,
            };
            self.accept_failing = false;
            let Some(client) = &self.client else { return };
            let (n, shards) = (client.conns.max(1), self.peers.len());
            // kcptun's round robin over the --conn slots, preferring slots this shard owns.
            let own: Vec<usize> = (0..n).filter(|s| s % shards == self.id).collect();
            self.rr = self.rr.wrapping_add(1);
            let slot = if own.is_empty() { self.rr % n } else { own[self.rr % own.len()] };
            let owner = slot % shards;
            if owner == self.id {
                self.attach_local(slot, stream, now);
            } else {
                self.stats.handoffs_out += 1;
                let p = &self.peers[owner];
                if p.tx.send(Ctrl::Handoff { slot, stream }).is_ok() {
                    p.waker.wake();
                }
            }
        }
    }

    /// Stop polling local listener `l` for [`ACCEPT_PAUSE`]; tell the operator once per bout of failures.
    fn pause_listener(&mut self, l: usize, now: Instant, error: io::Error) {
        let Some(fd) = self.listeners.get(l).map(|x| x.as_raw_fd()) else { return };
        if self.poller.modify(fd, super::T_LISTEN | l as u64, Interest::NONE).is_err() {
            return;
        }
        self.stats.accept_paused += 1;
        if self.paused.len() <= l {
            self.paused.resize(l + 1, None);
        }
        self.paused[l] = Some(now + ACCEPT_PAUSE);
        if !self.accept_failing {
            self.accept_failing = true;
            let shard = self.id;
            self.emit(|| Event::ShardError {
                shard,
                what: "cannot accept local connections (paused, retrying every 250 ms)",
                error,
            });
        }
    }

    /// Poll paused local listeners again once their pause is over; the earliest pause still running.
    pub(super) fn resume_listeners(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for l in 0..self.paused.len() {
            let Some(until) = self.paused[l] else { continue };
            if until > now {
                next = Some(next.map_or(until, |n| n.min(until)));
                continue;
            }
            self.paused[l] = None;
            if let Some(fd) = self.listeners.get(l).map(|x| x.as_raw_fd()) {
                let _ = self.poller.modify(fd, super::T_LISTEN | l as u64, Interest::READ);
            }
        }
        next
    }

    /// Open a stream for a local connection on `slot`'s session (created lazily, as kcptun).
    pub(super) fn attach_local(&mut self, slot: usize, stream: LocalStream, now: Instant) {
        let Some(client) = self.client.clone() else { return };
        // kcptun: a slot's session is replaced when it closed or (--autoexpire) expired; an expired one keeps
        // its streams until the scavenger closes it.
        if let Some(h) = self.slots.get(slot).copied().flatten()
            && self.ep.get(h).is_some_and(|c| c.is_expired(now))
        {
            self.slots[slot] = None;
            if let Some(io) = self.io_mut(h) {
                io.slot = None;
                let id = io.id;
                self.emit(|| Event::SessionExpired { id });
            }
        }
        let live = self.slots.get(slot).copied().flatten().filter(|&h| self.ep.get(h).is_some_and(|c| c.is_live()));
        let h = match live {
            Some(h) => h,
            None => {
                // Multiport: a random address of the range per new session (kcptun NEW).
                let mut r = [0u8; 8];
                self.rng.fill(&mut r);
                let peer = client.remote[(u64::from_le_bytes(r) % client.remote.len() as u64) as usize];
                match self.dial(peer, client.svc.clone(), Some(slot), now) {
                    Ok(h) => h,
                    Err(error) => {
                        self.emit(|| Event::SessionDialFailed { remote: peer, error });
                        self.stats.tunnel_errors += 1;
                        return;
                    }
                }
            }
        };
        let Some(Ok(sid)) = self.ep.get_mut(h).map(|c| c.open_stream()) else {
            // Stream ids exhausted or session dead: a fresh session takes the next connection.
            self.kill_conn(h, Some(SessionEnd::Exhausted));
            self.stats.tunnel_errors += 1;
            return;
        };
        // Named only when someone listens (a getpeername per connection otherwise for nothing).
        let app = self.events.is_some().then(|| stream.peer_endpoint());
        if let (Some(p), Some(app)) = (self.add_pipe(h, Some(sid), Local::Sock(stream), false), app) {
            self.announce(p, app);
        }
        self.mark(h);
    }

    /// A new conversation from a fresh UDP socket (kcp-go dials one socket per session).
    pub(super) fn dial(
        &mut self,
        peer: SocketAddr,
        svc: Arc<Service>,
        slot: Option<usize>,
        now: Instant,
    ) -> io::Result<ConnHandle> {
        let bind: SocketAddr =
            if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
        let (io, fd) = match svc.tcp {
            Some(shape) => dial_faketcp(peer, shape, &svc)?,
            None => crate::shard::open_udp(self.backend, &svc, bind, false)?,
        };
        let u = self.udps.insert(Udp { io, fd, owner: UdpOwner::Conn });
        // conv: 4 random bytes (kcp-go DialWithOptions).
        let mut conv = [0u8; 4];
        self.rng.fill(&mut conv);
        let mut upper = svc.upper(false);
        // A client tunnel without --smuxver speaks what the last mismatch taught it.
        if let (App::TunnelClient, Some(v), Upper::Smux { version, .. }) =
            (&svc.app, self.client.as_ref().and_then(|c| c.smux_auto.as_ref()), &mut upper)
        {
            *version = v.load(Ordering::Relaxed);
        }
        let h = match self.ep.connect(now, u, peer, u32::from_le_bytes(conv), svc.conn.clone(), upper) {
            Ok(h) => h,
            Err(e) => {
                self.udps.remove(u);
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
            }
        };
        let Some(h) = self.opened(h, svc, u, peer, slot) else {
            return Err(io::ErrorKind::ConnectionAborted.into());
        };
        if let Err(e) = self.poller.add(fd, super::T_UDP | u as u64, Interest::READ) {
            self.kill_conn(h, Some(SessionEnd::Closed));
            return Err(e);
        }
        if let Some(slot) = slot {
            self.slots[slot] = Some(h);
            if let (Some(client), Some(conn)) = (&self.client, self.ep.get_mut(h)) {
                conn.set_expiry(now, client.autoexpire_ms, client.scavenge_ttl_ms);
            }
        }
        Ok(h)
    }

    /// A raw conversation's channel (pipe 0 of the conversation).
    pub(super) fn raw_chan(&mut self, h: ConnHandle) -> io::Result<Arc<Chan>> {
        let ch = Arc::new(Chan::new(self.peers[self.id].kicker()?));
        self.add_pipe(h, None, Local::Chan(ch.clone()), false).ok_or_else(|| io::Error::other("no pipe"))?;
        Ok(ch)
    }

    pub(super) fn dialed(&mut self, h: ConnHandle) -> io::Result<Dialed> {
        match self.ep.get(h).map(|c| c.is_raw()) {
            Some(true) => Ok(Dialed::Raw(self.raw_chan(h)?)),
            Some(false) => Ok(Dialed::Mux(h)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    pub(super) fn open_chan_stream(&mut self, h: ConnHandle) -> io::Result<Arc<Chan>> {
        let sid = match self.ep.get_mut(h).map(|c| (c.is_raw(), c.open_stream())) {
            Some((false, Ok(sid))) => sid,
            Some((false, Err(e))) => return Err(io::Error::other(e)),
            Some((true, _)) => return Err(io::ErrorKind::Unsupported.into()),
            None => return Err(io::ErrorKind::NotConnected.into()),
        };
        let ch = match self.peers[self.id].kicker() {
            Ok(k) => Arc::new(Chan::new(k)),
            Err(e) => {
                if let Some(c) = self.ep.get_mut(h) {
                    c.stream_detach(Some(sid));
                }
                return Err(e);
            }
        };
        self.add_pipe(h, Some(sid), Local::Chan(ch.clone()), false);
        self.mark(h);
        Ok(ch)
    }
}
