//! The server's side of fake TCP: a listening port whose peers are the connections the kernel accepted.

use super::*;

/// An accepted kernel connection.
struct Accepted {
    sock: Socket,
    /// The address the client connected to: the source of what is sent back.
    local_ip: IpAddr,
    peer: SocketAddr,
}

const T_LISTEN: u64 = 0;
const T_RAW4: u64 = 1;
const T_RAW6: u64 = 2;
const T_TICK: u64 = 3;
const T_CONN: u64 = 4;

/// How long a listener stops accepting after `accept` failed for want of descriptors or memory (the
/// shard's local listeners wait as long).
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// A periodic timer (timerfd) in the listener's epoll set: an idle port still expires its flows, and a
/// paused one comes back, though no segment arrives to wake the shard.
struct Tick(std::os::fd::OwnedFd);

impl Tick {
    fn new(every: std::time::Duration) -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create has no memory arguments; a valid descriptor is owned from here on.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let t = Tick(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        t.set(every)?;
        Ok(t)
    }

    /// Fire every `every` from now on.
    fn set(&self, every: std::time::Duration) -> io::Result<()> {
        let ts = libc::timespec { tv_sec: every.as_secs() as libc::time_t, tv_nsec: every.subsec_nanos() as _ };
        let spec = libc::itimerspec { it_interval: ts, it_value: ts };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        if unsafe { libc::timerfd_settime(self.0.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Take the expirations counted so far (the descriptor stops being readable).
    fn clear(&self) {
        let mut n = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `n`.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), n.as_mut_ptr().cast(), n.len()) };
    }
}

/// A server's fake-TCP port: a [`DatagramIo`] whose peers are the connections the kernel accepted. Its
/// descriptors (the listening socket, one or two raw sockets, the accepted connections) sit behind one
/// epoll descriptor, which is what the shard polls.
pub struct FakeTcpListener {
    epoll: Epoll,
    ready: Vec<Ready>,
    listener: Socket,
    raw4: Option<Socket>,
    raw6: Option<Socket>,
    port: u16,
    local: SocketAddr,
    table: FlowTable,
    conns: HashMap<SocketAddr, u64>,
    accepted: HashMap<u64, Accepted>,
    next_token: u64,
    closed: VecDeque<SocketAddr>,
    rng: u64,
    epoch: std::time::Instant,
    last_expire: std::time::Instant,
    tick: Tick,
    scratch: Box<[u8]>,
    rx: RawRx,
    tx: RawTx,
    stats: IoStats,
    /// Accepting stopped until then (`accept` failed for want of descriptors or memory), and how often.
    accept_paused_until: Option<std::time::Instant>,
    accept_paused: u64,
    _rule: RuleGuard,
}

impl FakeTcpListener {
    /// Listen on `bind` (a wildcard IPv6 address takes IPv4 too) and capture its segments; installs the
    /// port's firewall rule.
    pub fn open(bind: SocketAddr, cfg: &FakeTcpConfig) -> io::Result<Self> {
        let v6 = bind.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let listener = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
        listener.set_reuse_address(true)?;
        if v6 {
            listener.set_only_v6(false)?;
        }
        listener.bind(&bind.into())?;
        listener.listen(1024)?;
        let local = listener.local_addr()?.as_socket().ok_or_else(|| io::Error::other("no local address"))?;
        let port = local.port();
        let any6 = matches!(bind.ip(), IpAddr::V6(a) if a.is_unspecified());
        let raw4 = if !v6 || any6 {
            let s = raw_socket(Domain::IPV4, cfg)?;
            if !v6 {
                s.bind(&SocketAddr::new(bind.ip(), 0).into())?;
            }
            s.attach_filter(&port_filter(port, None))?;
            Some(s)
        } else {
            None
        };
        let raw6 = if v6 {
            let s = raw_socket(Domain::IPV6, cfg)?;
            if !any6 {
                s.bind(&SocketAddr::new(bind.ip(), 0).into())?;
            }
            Some(s)
        } else {
            None
        };
        let rule = Firewall::get().and_then(|fw| fw.add(Rule::Listen { ip: bind.ip(), port })).map_err(fw_error)?;
        let mut epoll = Epoll::new()?;
        epoll.add(listener.as_raw_fd(), T_LISTEN, Interest::READ)?;
        let tick = Tick::new(EXPIRE_EVERY)?;
        epoll.add(tick.0.as_raw_fd(), T_TICK, Interest::READ)?;
        for (s, t) in [(&raw4, T_RAW4), (&raw6, T_RAW6)] {
            if let Some(s) = s {
                epoll.add(s.as_raw_fd(), t, Interest::READ)?;
            }
        }
        let epoch = std::time::Instant::now();
        Ok(FakeTcpListener {
            epoll,
            ready: Vec::new(),
            listener,
            raw4,
            raw6,
            port,
            local,
            table: FlowTable::new(cfg.max_flows, cfg.shape),
            conns: HashMap::new(),
            accepted: HashMap::new(),
            next_token: T_CONN,
            closed: VecDeque::new(),
            rng: seed(),
            epoch,
            last_expire: epoch,
            tick,
            scratch: vec![0u8; CAPTURE].into_boxed_slice(),
            rx: RawRx::new(),
            tx: RawTx::new(),
            stats: IoStats::default(),
            accept_paused_until: None,
            accept_paused: 0,
            _rule: rule,
        })
    }

    /// The flow table's counters, with the connections open and the accept pauses.
    pub fn flow_stats(&self) -> FlowStats {
        FlowStats { connections: self.accepted.len() as u64, accept_paused: self.accept_paused, ..self.table.stats }
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.accepted.len()
    }

    fn accept_all(&mut self) {
        loop {
            let (sock, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection reset while it waited: the next one.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)) =>
                {
                    // The connection stays queued and the listening socket readable: polling it again
                    // at once would spin the shard. It leaves the epoll set for a while (as the shard's
                    // local listeners do).
                    self.stats.errors += 1;
                    self.accept_paused += 1;
                    let _ = self.epoll.delete(self.listener.as_raw_fd());
                    self.accept_paused_until = Some(std::time::Instant::now() + ACCEPT_PAUSE);
                    let _ = self.tick.set(ACCEPT_PAUSE);
                    return;
                }
                Err(_) => return,
            };
            let Some(peer) = peer.as_socket().map(crate::io::udp::normalise) else { continue };
            let local_ip =
                sock.local_addr().ok().and_then(|a| a.as_socket()).map(|a| crate::io::udp::normalise(a).ip());
            let t = now(self.epoch);
            if !self.table.confirm(t, peer) {
                continue; // full: the socket closes (a visible FIN at the default TTL)
            }
            let _ = sock.set_nonblocking(true);
            let _ = set_ttl_any(&sock, 1);
            mute(&sock);
            let token = self.next_token;
            self.next_token += 1;
            if self.epoll.add(sock.as_raw_fd(), token, Interest::READ).is_err() {
                self.table.remove(peer);
                continue;
            }
            if let Some(old) = self.conns.insert(peer, token) {
                self.drop_conn(old);
            }
            let local_ip = local_ip.unwrap_or(self.local.ip());
            self.accepted.insert(token, Accepted { sock, local_ip, peer });
        }
    }

    fn drop_conn(&mut self, token: u64) {
        if let Some(a) = self.accepted.remove(&token) {
            let _ = self.epoll.delete(a.sock.as_raw_fd());
            let _ = set_ttl_any(&a.sock, 64);
            if self.conns.get(&a.peer) == Some(&token) {
                self.conns.remove(&a.peer);
            }
        }
    }

    /// A connection the peer or the flow table ended: gone from both, reported once.
    fn close_peer(&mut self, peer: SocketAddr) {
        self.table.remove(peer);
        if let Some(token) = self.conns.get(&peer).copied() {
            self.drop_conn(token);
        }
        self.closed.push_back(peer);
    }

    fn drain(&mut self, token: u64) {
        let Some(a) = self.accepted.get(&token) else { return };
        let peer = a.peer;
        loop {
            match recv_raw_stream(&a.sock, &mut self.scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close_peer(peer);
    }

    fn expire(&mut self) {
        let mut gone = Vec::new();
        self.table.expire(now(self.epoch), |p| gone.push(p));
        for p in gone {
            if let Some(token) = self.conns.get(&p).copied() {
                self.drop_conn(token);
            }
            self.closed.push_back(p);
        }
    }

    /// Read captured packets from the IPv4 or IPv6 raw socket into `bufs[n..]`.
    fn read_raw(&mut self, v6: bool, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta], mut n: usize) -> usize {
        let Some(fd) = (if v6 { self.raw6.as_ref() } else { self.raw4.as_ref() }).map(|s| s.as_raw_fd()) else {
            return n;
        };
        let want = bufs.len().min(meta.len());
        let mut ended = Vec::new();
        while n < want {
            let asked = want - n;
            let Some(k) = self.rx.recv_counted(fd, asked, &mut self.stats) else { break };
            let t = now(self.epoch);
            for i in 0..k {
                let Some((src_ip, seg)) =
                    captured(&self.rx, i, v6, &mut self.stats, &mut self.table.stats.rx_malformed)
                else {
                    continue;
                };
                if seg.len() < 4 {
                    self.table.stats.rx_malformed += 1;
                    continue;
                }
                if u16::from_be_bytes([seg[2], seg[3]]) != self.port {
                    continue; // another port's (IPv6 raw sockets have no filter)
                }
                let src = crate::io::udp::normalise(SocketAddr::new(src_ip, u16::from_be_bytes([seg[0], seg[1]])));
                match self.table.on_segment(t, src, seg) {
                    Rx::Datagram(d) => {
                        deliver(&mut self.stats, d, src, bufs[n], &mut meta[n]);
                        n += 1;
                    }
                    Rx::Closed => ended.push(src),
                    Rx::Control | Rx::Dropped(_) => {}
                }
            }
            if k < asked {
                break;
            }
        }
        for src in ended {
            if let Some(token) = self.conns.get(&src).copied() {
                self.drop_conn(token);
            }
            self.closed.push_back(src);
        }
        n
    }
}

/// IP_TTL or IPV6_UNICAST_HOPS, whichever the socket's family takes (both on a dual-stack socket).
fn set_ttl_any(s: &Socket, ttl: u32) -> io::Result<()> {
    match s.domain() {
        Ok(d) if d == Domain::IPV6 => {
            let r = s.set_unicast_hops_v6(ttl);
            // A dual-stack socket's IPv4 traffic follows IP_TTL.
            let _ = s.set_ttl_v4(ttl);
            r
        }
        _ => s.set_ttl_v4(ttl),
    }
}

impl DatagramIo for FakeTcpListener {
    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.ready.clear();
        self.epoll.wait(&mut self.ready, 0)?;
        let ready = std::mem::take(&mut self.ready);
        let mut n = 0;
        for r in &ready {
            match r.token {
                T_LISTEN => self.accept_all(),
                T_TICK => self.tick.clear(),
                T_RAW4 => n = self.read_raw(false, bufs, meta, n),
                T_RAW6 => n = self.read_raw(true, bufs, meta, n),
                t => self.drain(t),
            }
        }
        self.ready = ready;
        if self.accept_paused_until.is_some_and(|t| std::time::Instant::now() >= t)
            && self.epoll.add(self.listener.as_raw_fd(), T_LISTEN, Interest::READ).is_ok()
        {
            self.accept_paused_until = None;
            let _ = self.tick.set(EXPIRE_EVERY);
            self.accept_all();
        }
        if self.last_expire.elapsed() >= EXPIRE_EVERY {
            self.last_expire = std::time::Instant::now();
            self.expire();
        }
        Ok(n)
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        // Segments go out in sendmmsg batches per raw socket (IPv4, IPv6): a batch is flushed when the
        // family changes or it is full.
        let mut batch_fd: Option<RawFd> = None;
        let wall = wall_ms();
        for (i, m) in msgs.iter().enumerate() {
            let seg = m.segment_size.unwrap_or(m.payload.len()).max(1);
            let peer = crate::io::udp::normalise(m.dst);
            let Some(local_ip) = self.conns.get(&peer).and_then(|t| self.accepted.get(t)).map(|a| a.local_ip) else {
                let k = m.payload.len().div_ceil(seg) as u64;
                self.table.stats.tx_no_flow += k;
                self.stats.tx_unroutable += k;
                continue;
            };
            let (fd, v6) = match (peer.is_ipv4(), &self.raw4, &self.raw6) {
                (true, Some(r), _) => (r.as_raw_fd(), false),
                (false, _, Some(r)) => (r.as_raw_fd(), true),
                _ => {
                    self.stats.errors += 1;
                    continue;
                }
            };
            // One batch per raw socket: the other family's first segment sends what is queued.
            if let Some(prev) = batch_fd.replace(fd).filter(|&p| p != fd)
                && let Err(at) = self.tx.flush(prev, &mut self.stats)
            {
                return Ok(at);
            }
            let to = SockAddr::from(SocketAddr::new(peer.ip(), 0));
            for d in m.payload.chunks(seg) {
                let Some(h) = self.table.next_header(self.port, peer, d.len(), stamp(&mut self.rng, wall)) else {
                    self.stats.tx_unroutable += 1;
                    continue;
                };
                let hl = h.write(local_ip, peer.ip(), d, self.tx.next_header());
                self.tx.queue(hl, d, Some((&to, v6, local_ip)), i);
                if self.tx.full()
                    && let Err(at) = self.tx.flush(fd, &mut self.stats)
                {
                    return Ok(at);
                }
            }
        }
        if let Some(fd) = batch_fd
            && let Err(at) = self.tx.flush(fd, &mut self.stats)
        {
            return Ok(at);
        }
        Ok(msgs.len())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.epoll.as_raw_fd())
    }

    fn flow_stats(&self) -> Option<FlowStats> {
        Some(self.flow_stats())
    }

    fn poll_closed(&mut self) -> Option<SocketAddr> {
        self.closed.pop_front()
    }
}

impl Drop for FakeTcpListener {
    fn drop(&mut self) {
        let tokens: Vec<u64> = self.accepted.keys().copied().collect();
        for t in tokens {
            self.drop_conn(t);
        }
    }
}
