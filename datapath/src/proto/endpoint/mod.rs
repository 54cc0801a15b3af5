//! The conversations of one set of sockets, sans-IO: every received datagram goes through
//! [`Endpoint::handle_datagram`], which opens it, finds or creates its [`Conn`] by kcp-go's rules (spec
//! §4.2) and counts every drop here, in one place, whoever the caller is (a shard, the simulator, a fuzzer).
//!
//! Sockets are named by a [`SocketKey`] the caller picks (a shard's socket slot). A listening socket
//! ([`Endpoint::listen`]) creates conversations for any address — kcp-go has no handshake: any valid
//! datagram creates one, a new conversation (sn 0) from the same address replaces the old one; a dialled
//! socket ([`Endpoint::connect`]) carries one conversation and takes datagrams from its peer only.
//!
//! **Shared state.** Nothing crosses shards, with one documented exception: what must be process-wide for
//! a server to be safe and its counters true — today the live-session gauge behind MaxConn; later the
//! replay filter, per-source admission and the conv → shard map of migration. It lives behind the small
//! [`Shared`] interface (lock-free structures only), which every shard's `Endpoint` consults when a
//! conversation opens or ends, never per packet.

use kcpd_time::Instant;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kcpd_crypto::OpenError;
use kcpd_fec::wire::{self, Class};

use crate::proto::conn::{Conn, ConnConfig, SessionEnd, Upper};
pub use crate::proto::front::{Claim, Refusal};
use crate::proto::kcp;
use crate::proto::session::{ConfigError, MIN_PLAIN};
use crate::proto::snmp::Snmp;
use crate::slab::Slab;

mod migration;
pub use migration::{Handover, Location, Migration, Moving, PROBE_GAP};

/// kcp-go `acceptBacklog`: sessions created but not yet accepted.
pub const ACCEPT_BACKLOG: usize = 128;

/// The largest datagram any peer sends: kcp-go's `mtuLimit` (its receive buffers are 1500 bytes, so
/// `--mtu` is at most that on either end). Anything longer is dropped before it is opened.
pub const MAX_DATAGRAM: usize = 1500;

/// A socket, as the caller names it.
pub type SocketKey = usize;

/// A conversation of an [`Endpoint`]: slot and generation (a slot is reused; a stale handle resolves to
/// nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnHandle {
    /// The endpoint slot.
    pub index: usize,
    /// Which conversation of that slot (unique per endpoint).
    pub generation: u64,
}

/// State shared by the endpoints of every shard of a process (see the module docs). Implementations are
/// lock-free or striped. Only [`replayed`](Shared::replayed) runs per datagram; the rest when a
/// conversation opens or ends. The defaults admit everything and remember nothing ([`ConnGauge`], for
/// tests and the simulator); [`FrontDoor`](super::front::FrontDoor) is what a process runs.
pub trait Shared: Send + Sync {
    /// A conversation opened on some shard; `src`: the peer's address when the peer opened it (after
    /// [`admit`](Shared::admit) said yes), `None` for one this end dialled.
    fn opened(&self, src: Option<IpAddr>);
    /// A conversation ended on some shard (`src` as it was given to `opened`).
    fn closed(&self, src: Option<IpAddr>);
    /// May `src` open a new session now? A yes counts it against the source's caps and rate until
    /// `closed`.
    fn admit(&self, _now: Instant, _src: IpAddr) -> Result<(), Refusal> {
        Ok(())
    }
    /// Was this opened datagram (its bytes after the nonce) accepted before? A new one is remembered.
    fn replayed(&self, _now: Instant, _after_nonce: &[u8]) -> bool {
        false
    }
    /// Record that a session is created for `conv`; [`Claim::Stale`] when one was, too long ago for this
    /// datagram to be anything but an old one replayed.
    fn claim_conv(&self, _now: Instant, _conv: u32) -> Claim {
        Claim::New
    }
    /// Undo a [`Claim::New`] for a session that was not created after all.
    fn release_conv(&self, _conv: u32) {}
    /// Where the live conversation `conv` of a listener is, if there is one (see [`Migration`]). The
    /// default remembers nothing: no conversation ever moves, and kcp-go's rule holds (a datagram from a
    /// new address opens a new conversation).
    fn locate(&self, _conv: u32) -> Option<Location> {
        None
    }
    /// Conversation `conv` is at `loc` now (created there, or moved there).
    fn place(&self, _conv: u32, _loc: Location) {}
    /// Conversation `conv` at `loc` ended (nothing happens if it has moved on since).
    fn unplace(&self, _conv: u32, _loc: Location) {}
    /// A conversation the peer opened from `from` moved to `to` (the per-source counts follow it).
    fn moved(&self, _from: IpAddr, _to: IpAddr) {}
}

/// Live conversations across every shard and their high-water mark: MaxConn of the whole process is the
/// peak of the sum, which per-shard peaks cannot give (they may fall at different times).
#[derive(Debug, Default)]
pub struct ConnGauge {
    cur: AtomicU64,
    max: AtomicU64,
}

impl ConnGauge {
    /// Conversations alive now, all shards together.
    pub fn current(&self) -> u64 {
        self.cur.load(Ordering::Relaxed)
    }

    /// The most conversations alive at once, all shards together.
    pub fn peak(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}

impl Shared for ConnGauge {
    fn opened(&self, _src: Option<IpAddr>) {
        let now = self.cur.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
    }

    fn closed(&self, _src: Option<IpAddr>) {
        self.cur.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What became of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramEvent {
    /// It created this conversation (a listener's; queued for [`Endpoint::accept`]) and was fed to it.
    /// A conversation it replaced is in [`Endpoint::poll_retired`].
    New(ConnHandle),
    /// It was fed to this conversation (which counts what it refused).
    Existing(ConnHandle),
    /// It moved this conversation to its source address (the old address hears nothing more) and was fed
    /// to it. A conversation it replaced at that address is in [`Endpoint::poll_retired`].
    Migrated(ConnHandle),
    /// It belongs to a conversation another endpoint has, and may move it here: give the opened bytes
    /// (`buf[range]`) to that endpoint's [`Endpoint::migrate_out`], and what it returns to this one's
    /// [`Endpoint::migrate_in`].
    Elsewhere(Handover),
    /// Dropped, and counted.
    Dropped(DropReason),
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Empty, longer than [`MAX_DATAGRAM`], or longer than the receive buffer (truncated).
    Size,
    /// It failed to open: too short for the crypto header, or a checksum or tag mismatch.
    Crypto(OpenError),
    /// Too short for a conv, or a parity shard for an address without a conversation.
    NoConv,
    /// A different conv with sn != 0 from an address with a conversation.
    ConvMismatch,
    /// 128 conversations wait to be accepted.
    Backlog,
    /// On a dialled socket, from another address than the peer's.
    ForeignSource,
    /// On a socket nobody registered.
    UnknownSocket,
    /// Accepted before (the replay filter).
    Replay,
    /// A new session for a conv a session was created for recently (an old first datagram replayed).
    ConvReused,
    /// The front door's admission control refused a new session.
    Refused(Refusal),
    /// For a conversation live at another address, and not newer than what it has seen (an old datagram
    /// replayed, a late one from the address it left, or another peer reusing the conv).
    Stale,
    /// For a conversation live at another address, which cannot move here (another listener, or another
    /// endpoint with [`Migration::Local`]), or is being asked for already.
    NotMoved,
}

/// conv and first sn of an opened datagram, as kcp-go's listener reads them (spec §4.2): raw KCP at
/// 0/12, an FEC data shard at 8/20, OOB conv at 8; parity carries none.
pub fn conv_sn(pkt: &[u8]) -> Option<(u32, Option<u32>)> {
    match wire::classify(pkt) {
        Class::Kcp => Some((kcp::conv_of(pkt)?, kcp::sn_of(pkt))),
        Class::Data => {
            let k = pkt.get(wire::HEADER_SIZE_PLUS2..)?;
            Some((kcp::conv_of(k)?, kcp::sn_of(k)))
        }
        Class::Oob => {
            let c = pkt.get(wire::HEADER_SIZE_PLUS2..wire::HEADER_SIZE_PLUS2 + 4)?;
            Some((u32::from_le_bytes(c.try_into().ok()?), None))
        }
        Class::Parity => None,
    }
}

/// Where an opened datagram goes, given the conv of the conversation at its source address (spec §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// To the existing conversation.
    Existing,
    /// No conversation at that address: create one with this conv.
    New(u32),
    /// A new conversation (sn 0) from the same address: close the old one, create this one.
    Replace(u32),
    /// Drop it.
    Drop(DropReason),
}

/// kcp-go `Listener.packetInput`'s decision for an opened datagram `pkt` from an address whose
/// conversation (if any) has conv `existing`.
pub fn route(pkt: &[u8], existing: Option<u32>) -> Route {
    if pkt.len() < MIN_PLAIN {
        return Route::Drop(DropReason::NoConv);
    }
    match (conv_sn(pkt), existing) {
        (Some((conv, _)), Some(cur)) if conv == cur => Route::Existing,
        (None, Some(_)) => Route::Existing,
        (Some((conv, Some(0))), Some(_)) => Route::Replace(conv),
        (Some(_), Some(_)) => Route::Drop(DropReason::ConvMismatch),
        (Some((conv, _)), None) => Route::New(conv),
        (None, None) => Route::Drop(DropReason::NoConv),
    }
}

/// What a listening socket creates.
#[derive(Clone, Debug)]
pub struct ListenConfig {
    /// Every conversation's configuration.
    pub conn: Arc<ConnConfig>,
    /// What runs above KCP on its conversations (smux in the server role, or raw).
    pub upper: Upper,
    /// Whether its conversations follow their peer to a new address.
    pub migration: Migration,
    /// Names the listener across endpoints: a conversation moves only between sockets of one group (the
    /// same service on the same local address).
    pub group: u64,
}

impl ListenConfig {
    /// Conversations configured by `conn` carrying `upper`; they move to a new peer address anywhere
    /// unless the method is malleable ([`Migration::for_method`]); group 0.
    pub fn new(conn: Arc<ConnConfig>, upper: Upper) -> Self {
        let migration = Migration::for_method(conn.crypto.method());
        ListenConfig { conn, upper, migration, group: 0 }
    }
}

enum SocketRole {
    Listen(Arc<ListenConfig>),
    Connected(ConnHandle),
}

struct Slot {
    generation: u64,
    conn: Conn,
    socket: SocketKey,
    remote: SocketAddr,
    /// The last address that proved itself (sent two datagrams; or the first address): moving back to it
    /// needs no new proof.
    proven: SocketAddr,
    /// Placed in the [`Shared`] locations (a listener's conversation: its conv is found from any shard, to
    /// move it or to refuse a second conversation for it).
    placed: Option<u64>,
}

/// Drop counters no conversation owns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams from an unexpected address on a dialled socket.
    pub foreign_src: u64,
    /// Empty or truncated datagrams.
    pub bad_size: u64,
    /// Datagrams (or GRO segments) longer than [`MAX_DATAGRAM`].
    pub oversize: u64,
    /// Datagrams on a socket nobody registered.
    pub unknown_socket: u64,
    /// Datagrams the replay filter dropped.
    pub replays: u64,
    /// Datagrams that would have opened a session for a recently used conv.
    pub conv_reused: u64,
    /// Datagrams that would have opened a session admission control refused.
    pub refused: u64,
    /// Conversations that moved to a new peer address here (from this endpoint or another).
    pub migrated_in: u64,
    /// Conversations handed to another endpoint.
    pub migrated_out: u64,
    /// Datagrams for a conversation live at another address, not newer than what it has seen.
    pub migration_stale: u64,
    /// Datagrams for a conversation live at another address that could not move it (another listener,
    /// another endpoint of a [`Migration::Local`] listener, or one asked for less than
    /// [`PROBE_GAP`] ago).
    pub migration_held: u64,
}

/// The conversations of a set of sockets (see the module docs).
pub struct Endpoint {
    conns: Slab<Slot>,
    sockets: HashMap<SocketKey, SocketRole>,
    by_peer: HashMap<(SocketKey, SocketAddr), ConnHandle>,
    backlog: VecDeque<ConnHandle>,
    retired: VecDeque<(ConnHandle, Conn, SessionEnd)>,
    generation: u64,
    /// Counters of conversations that ended, and of drops no conversation owns.
    gone: Snmp,
    stats: EndpointStats,
    shared: Arc<dyn Shared>,
    /// This endpoint's shard, for [`Location`]s.
    shard: usize,
    /// Convs asked of another endpoint recently, and when.
    probes: HashMap<u32, Instant>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::new(Arc::new(ConnGauge::default()))
    }
}

impl Endpoint {
    /// An endpoint whose process-wide state is `shared`.
    pub fn new(shared: Arc<dyn Shared>) -> Self {
        Endpoint {
            conns: Slab::default(),
            sockets: HashMap::new(),
            by_peer: HashMap::new(),
            backlog: VecDeque::new(),
            retired: VecDeque::new(),
            generation: 0,
            gone: Snmp::default(),
            stats: EndpointStats::default(),
            shared,
            shard: 0,
            probes: HashMap::new(),
        }
    }

    /// An endpoint of shard `shard` whose process-wide state is `shared`.
    pub fn with_shard(shared: Arc<dyn Shared>, shard: usize) -> Self {
        Endpoint { shard, ..Endpoint::new(shared) }
    }

    /// Accept conversations from any address on `socket`.
    pub fn listen(&mut self, socket: SocketKey, cfg: Arc<ListenConfig>) -> Result<(), ConfigError> {
        cfg.conn.validate()?;
        self.sockets.insert(socket, SocketRole::Listen(cfg));
        Ok(())
    }

    /// Open conversation `conv` to `remote` on `socket`, a socket of its own (kcp-go dials one per
    /// session); it ends with the conversation.
    pub fn connect(
        &mut self,
        now: Instant,
        socket: SocketKey,
        remote: SocketAddr,
        conv: u32,
        cfg: Arc<ConnConfig>,
        upper: Upper,
    ) -> Result<ConnHandle, ConfigError> {
        let conn = Conn::new(conv, cfg, upper, false, now)?;
        let h = self.insert(conn, socket, remote);
        self.sockets.insert(socket, SocketRole::Connected(h));
        self.gone.active_opens += 1;
        Ok(h)
    }

    fn insert(&mut self, conn: Conn, socket: SocketKey, remote: SocketAddr) -> ConnHandle {
        let src = conn.is_passive().then(|| remote.ip());
        let h = self.insert_slot(conn, socket, remote, remote);
        self.shared.opened(src);
        h
    }

    /// Put a conversation in a slot; a listener's that may move is placed in the shared locations.
    fn insert_slot(&mut self, conn: Conn, socket: SocketKey, remote: SocketAddr, proven: SocketAddr) -> ConnHandle {
        self.generation += 1;
        let generation = self.generation;
        let placed = match self.sockets.get(&socket) {
            Some(SocketRole::Listen(cfg)) => Some(cfg.group),
            _ => None,
        };
        let conv = conn.conv();
        let index = self.conns.insert(Slot { generation, conn, socket, remote, proven, placed });
        self.gone.max_conn = self.gone.max_conn.max(self.conns.len() as u64);
        let h = ConnHandle { index, generation };
        if let Some(group) = placed {
            self.shared.place(conv, Location { shard: self.shard, handle: h, group });
        }
        h
    }

    /// Count a datagram the socket truncated (longer than its buffers: kcp-go's 1500-byte buffers would
    /// fail its CRC anyway).
    pub fn drop_truncated(&mut self) -> DatagramEvent {
        self.gone.in_errs += 1;
        self.stats.bad_size += 1;
        DatagramEvent::Dropped(DropReason::Size)
    }

    /// Count a socket error on receive.
    pub fn count_rx_error(&mut self) {
        self.gone.in_errs += 1;
    }

    /// Route datagram `buf`, received at `now` on `socket` from `remote`, opening it in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKey,
        remote: SocketAddr,
        buf: &mut [u8],
    ) -> DatagramEvent {
        if buf.is_empty() {
            // Too short for any header.
            self.gone.in_pkts += 1;
            self.gone.in_errs += 1;
            self.stats.bad_size += 1;
            return DatagramEvent::Dropped(DropReason::Size);
        }
        if buf.len() > MAX_DATAGRAM {
            // No peer sends one (kcp-go could not receive it): not worth opening, and never copied.
            self.gone.in_pkts += 1;
            self.gone.in_bytes += buf.len() as u64;
            self.gone.in_errs += 1;
            self.stats.oversize += 1;
            return DatagramEvent::Dropped(DropReason::Size);
        }
        let cfg = match self.sockets.get(&socket) {
            Some(SocketRole::Connected(h)) => {
                let h = *h;
                let Some(slot) = self.conns.get_mut(h.index).filter(|s| s.generation == h.generation) else {
                    return self.unknown_socket();
                };
                if remote != slot.remote {
                    // Dialled: only the dialled address (kcp-go NEW `sameUDPAddr`).
                    self.stats.foreign_src += 1;
                    self.gone.in_errs += 1;
                    return DatagramEvent::Dropped(DropReason::ForeignSource);
                }
                // The session counts what it refuses.
                let _ = slot.conn.handle_datagram(now, buf);
                return DatagramEvent::Existing(h);
            }
            Some(SocketRole::Listen(cfg)) => cfg.clone(),
            None => return self.unknown_socket(),
        };
        // Listening: open once, then route by address (spec §4.2).
        let len = buf.len();
        let range = match cfg.conn.crypto.open(buf) {
            Ok(r) => r,
            Err(e) => {
                self.gone.in_pkts += 1;
                self.gone.in_bytes += len as u64;
                // kcp-go: a checksum (or tag) failure is InCsumErrors, a datagram too short to carry the
                // header InErrs.
                if matches!(e, OpenError::TooShort { .. }) {
                    self.gone.in_errs += 1;
                } else {
                    self.gone.in_csum_errors += 1;
                }
                return DatagramEvent::Dropped(DropReason::Crypto(e));
            }
        };
        // Off for `null` (no nonce, no check: anyone can forge any datagram).
        let nonce = cfg.conn.crypto.nonce_len();
        if nonce > 0 && self.shared.replayed(now, &buf[nonce..]) {
            self.gone.in_pkts += 1;
            self.gone.in_bytes += len as u64;
            self.stats.replays += 1;
            return DatagramEvent::Dropped(DropReason::Replay);
        }
        let plain = &buf[range.clone()];
        let existing = self.by_peer.get(&(socket, remote)).copied();
        let conv = existing.and_then(|h| self.conns.get(h.index)).map(|s| s.conn.conv());
        let (h, new) = match route(plain, conv) {
            Route::Existing => match existing {
                Some(h) => (h, false),
                None => return self.unknown_socket(),
            },
            Route::Drop(why) => {
                self.gone.in_pkts += 1;
                self.gone.in_bytes += len as u64;
                if why != DropReason::NoConv {
                    self.gone.kcp_in_errors += 1;
                }
                return DatagramEvent::Dropped(why);
            }
            Route::Replace(conv) | Route::New(conv) => {
                // A live conv from another address is never a second conversation: it may move it.
                if let Some(loc) = self.shared.locate(conv) {
                    return self.candidate(now, (socket, remote), &cfg, (conv, loc), len, plain, range);
                }
                let refused = if self.backlog.len() >= ACCEPT_BACKLOG {
                    Some(DropReason::Backlog)
                } else {
                    match self.shared.claim_conv(now, conv) {
                        Claim::Stale => {
                            self.stats.conv_reused += 1;
                            Some(DropReason::ConvReused)
                        }
                        claim => match self.shared.admit(now, remote.ip()) {
                            Ok(()) => None,
                            Err(r) => {
                                if claim == Claim::New {
                                    self.shared.release_conv(conv);
                                }
                                self.stats.refused += 1;
                                Some(DropReason::Refused(r))
                            }
                        },
                    }
                };
                if let Some(why) = refused {
                    self.gone.in_pkts += 1;
                    self.gone.in_bytes += len as u64;
                    return DatagramEvent::Dropped(why);
                }
                if let Some(old) = existing
                    && let Some(c) = self.remove(old)
                {
                    self.retired.push_back((old, c, SessionEnd::Replaced));
                }
                let conn = match Conn::new(conv, cfg.conn.clone(), cfg.upper, true, now) {
                    Ok(c) => c,
                    // Validated in `listen`.
                    Err(_) => return self.unknown_socket(),
                };
                let h = self.insert(conn, socket, remote);
                self.by_peer.insert((socket, remote), h);
                self.backlog.push_back(h);
                self.gone.passive_opens += 1;
                (h, true)
            }
        };
        let Some(slot) = self.conns.get_mut(h.index) else { return self.unknown_socket() };
        let _ = slot.conn.handle_plain(now, len, plain);
        if slot.proven != slot.remote && slot.conn.path_proven() {
            slot.proven = slot.remote;
        }
        if new { DatagramEvent::New(h) } else { DatagramEvent::Existing(h) }
    }

    fn unknown_socket(&mut self) -> DatagramEvent {
        self.gone.in_errs += 1;
        self.stats.unknown_socket += 1;
        DatagramEvent::Dropped(DropReason::UnknownSocket)
    }

    /// The next conversation a listener created (kcp-go `Accept`).
    pub fn accept(&mut self) -> Option<ConnHandle> {
        self.backlog.pop_front()
    }

    /// A conversation that a new one from the same address replaced (already removed), with why it ended.
    /// Drain after every [`DatagramEvent::New`].
    pub fn poll_retired(&mut self) -> Option<(ConnHandle, Conn, SessionEnd)> {
        self.retired.pop_front()
    }

    /// The conversation `h`, if it is still live.
    pub fn get(&self, h: ConnHandle) -> Option<&Conn> {
        self.conns.get(h.index).filter(|s| s.generation == h.generation).map(|s| &s.conn)
    }

    /// The conversation `h`, if it is still live.
    pub fn get_mut(&mut self, h: ConnHandle) -> Option<&mut Conn> {
        self.conns.get_mut(h.index).filter(|s| s.generation == h.generation).map(|s| &mut s.conn)
    }

    /// The live conversation in slot `index`.
    pub fn handle_at(&self, index: usize) -> Option<ConnHandle> {
        self.conns.get(index).map(|s| ConnHandle { index, generation: s.generation })
    }

    /// The conversation a listening socket has for `remote`.
    pub fn lookup(&self, socket: SocketKey, remote: SocketAddr) -> Option<ConnHandle> {
        self.by_peer.get(&(socket, remote)).copied()
    }

    /// The socket and peer address of a conversation.
    pub fn path(&self, h: ConnHandle) -> Option<(SocketKey, SocketAddr)> {
        self.conns.get(h.index).filter(|s| s.generation == h.generation).map(|s| (s.socket, s.remote))
    }

    /// Every live conversation.
    pub fn handles(&self) -> Vec<ConnHandle> {
        self.conns.iter().map(|(index, s)| ConnHandle { index, generation: s.generation }).collect()
    }

    /// Every live conversation, to drive.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnHandle, &mut Conn)> {
        self.conns.iter_mut().map(|(index, s)| (ConnHandle { index, generation: s.generation }, &mut s.conn))
    }

    /// End a conversation (nothing goes on the wire: kcp-go has no close message); its traffic stays in the
    /// endpoint's totals. A dialled conversation's socket is forgotten with it.
    pub fn remove(&mut self, h: ConnHandle) -> Option<Conn> {
        if self.conns.get(h.index).is_none_or(|s| s.generation != h.generation) {
            return None;
        }
        let slot = self.conns.remove(h.index)?;
        self.shared.closed(slot.conn.is_passive().then(|| slot.remote.ip()));
        if let Some(group) = slot.placed {
            self.shared.unplace(slot.conn.conv(), Location { shard: self.shard, handle: h, group });
        }
        self.backlog.retain(|b| *b != h);
        match self.sockets.get(&slot.socket) {
            Some(SocketRole::Connected(c)) if *c == h => {
                self.sockets.remove(&slot.socket);
            }
            _ => {
                if self.by_peer.get(&(slot.socket, slot.remote)) == Some(&h) {
                    self.by_peer.remove(&(slot.socket, slot.remote));
                }
            }
        }
        let mut s = slot.conn.snmp();
        // Gauges describe live conversations only.
        s.curr_estab = 0;
        s.max_conn = 0;
        s.fec_shard_set = 0;
        s.fec_shard_min = 0;
        self.gone.merge(&s);
        Some(slot.conn)
    }

    /// Forget a listening socket (its conversations stay until removed).
    pub fn unlisten(&mut self, socket: SocketKey) {
        if matches!(self.sockets.get(&socket), Some(SocketRole::Listen(_))) {
            self.sockets.remove(&socket);
        }
    }

    /// Live conversations.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// No live conversation.
    pub fn is_empty(&self) -> bool {
        self.conns.len() == 0
    }

    /// Drops no conversation owns.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// Totals: the endpoint's own counters, those of conversations that ended, and every live one's.
    pub fn snmp(&self) -> Snmp {
        let mut t = self.gone;
        for (_, s) in self.conns.iter() {
            t.merge(&s.conn.snmp());
        }
        t.curr_estab = self.conns.len() as u64;
        t.max_conn = t.max_conn.max(t.curr_estab);
        t
    }
}
