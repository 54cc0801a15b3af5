//! Migration (NAT rebinding): a listener's conversation follows its peer to a new address when a datagram
//! from there is newer than anything it has seen ([`Conn::is_newer`]) and passed the replay filter — on
//! this endpoint, or handed over from the endpoint (shard) that has it. docs/front-door.md has the threat
//! model.

use kcpd_time::Instant;
use std::net::SocketAddr;

use super::{ConnHandle, DatagramEvent, DropReason, Endpoint, ListenConfig, SessionEnd, SocketKey, SocketRole};
use crate::proto::conn::Conn;

/// Where a live conversation is: the shard whose endpoint has it, its handle there and the listener it
/// belongs to ([`ListenConfig::group`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The endpoint's shard ([`Endpoint::with_shard`]).
    pub shard: usize,
    /// The conversation there.
    pub handle: ConnHandle,
    /// Its listener.
    pub group: u64,
}

/// Whether conversations of a listener follow their peer to a new address (NAT rebinding): a datagram of a
/// live conv from another address that is newer than anything the conversation has seen
/// ([`Conn::is_newer`]) and passed the replay filter moves it there (docs/front-door.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migration {
    /// Never: a datagram of a live conv from another address is dropped, counted (kcp-go opens a second
    /// conversation for it, which can deliver nothing: its stream starts mid-way). The only choice for
    /// the malleable methods (`none`, `null`, `xor`, `salsa20`), where a changed old datagram passes the
    /// check and could pass as new.
    Off,
    /// Within this endpoint only; a datagram for a conversation another endpoint has is dropped, counted
    /// (the library: its applications hold a shard's handles).
    Local,
    /// Anywhere: a conversation of another endpoint is asked for ([`DatagramEvent::Elsewhere`],
    /// [`Endpoint::migrate_out`], [`Endpoint::migrate_in`]).
    Anywhere,
}

impl Migration {
    /// [`Migration::Anywhere`] unless `method` is malleable.
    pub fn for_method(method: kcpd_crypto::Method) -> Migration {
        use kcpd_crypto::Method::*;
        match method {
            None | Null | Xor | Salsa20 => Migration::Off,
            _ => Migration::Anywhere,
        }
    }
}

/// A datagram that may move a conversation from another endpoint ([`DatagramEvent::Elsewhere`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handover {
    /// Where the conversation is.
    pub from: Location,
    /// The opened bytes are `buf[start..end]` of the datagram's buffer.
    pub start: usize,
    /// See `start`.
    pub end: usize,
    /// The datagram's length on the wire.
    pub len: usize,
}

impl Handover {
    /// Where the opened bytes are in the datagram's buffer.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

/// A conversation on its way from one endpoint to another ([`Endpoint::migrate_out`]).
pub struct Moving {
    conn: Conn,
    from: SocketAddr,
    proven: SocketAddr,
    was: Location,
}

impl Moving {
    /// The conversation.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// The address it leaves.
    pub fn from(&self) -> SocketAddr {
        self.from
    }
}

/// A conversation of another endpoint is asked for at most once per this interval (per conv): a flood
/// of old datagrams for a live conv costs one message between shards per interval, not one per datagram.
pub const PROBE_GAP: kcpd_time::Duration = kcpd_time::Duration::from_millis(20);
/// Convs with a recent request remembered (bounded: past it, the oldest are forgotten).
const PROBES_MAX: usize = 1024;

impl Endpoint {
    /// A datagram of `len` bytes (opened: `plain`, at `range` in its buffer) from `remote` for a
    /// conversation live at another address, at `loc`: it moves the conversation here if it is newer than
    /// anything the conversation has seen (asking the endpoint that has it, if another does), and is
    /// dropped otherwise. Never a new conversation.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn candidate(
        &mut self,
        now: Instant,
        (socket, remote): (SocketKey, SocketAddr),
        cfg: &ListenConfig,
        (conv, loc): (u32, Location),
        len: usize,
        plain: &[u8],
        range: std::ops::Range<usize>,
    ) -> DatagramEvent {
        // Not for a malleable method (an old datagram changed could pass as new): dropped, where kcp-go
        // would open a second conversation that could deliver nothing (its stream starts mid-way). Across
        // endpoints only where conversations travel, and one ask per conv per PROBE_GAP.
        let elsewhere = loc.shard != self.shard;
        if loc.group != cfg.group
            || cfg.migration == Migration::Off
            || (elsewhere && cfg.migration != Migration::Anywhere)
            || (elsewhere && self.probes.get(&conv).is_some_and(|t| now.saturating_since(*t) < PROBE_GAP))
        {
            self.stats.migration_held += 1;
            self.count_unmoved(len);
            return DatagramEvent::Dropped(DropReason::NotMoved);
        }
        if elsewhere {
            if self.probes.len() >= PROBES_MAX {
                self.probes.retain(|_, t| now.saturating_since(*t) < PROBE_GAP);
                if self.probes.len() >= PROBES_MAX {
                    self.probes.clear();
                }
            }
            self.probes.insert(conv, now);
            // Counted by the conversation once it arrives (or as stale by the endpoint that has it).
            return DatagramEvent::Elsewhere(Handover { from: loc, start: range.start, end: range.end, len });
        }
        let h = loc.handle;
        if !self.may_move(now, h, plain) {
            self.stats.migration_stale += 1;
            self.count_unmoved(len);
            return DatagramEvent::Dropped(DropReason::Stale);
        }
        self.evict(socket, remote);
        let Some(slot) = self.conns.get_mut(h.index) else { return self.unknown_socket() };
        let from = slot.remote;
        if self.by_peer.get(&(slot.socket, from)) == Some(&h) {
            self.by_peer.remove(&(slot.socket, from));
        }
        slot.socket = socket;
        slot.remote = remote;
        if remote != slot.proven {
            slot.conn.start_path_check();
        }
        let _ = slot.conn.handle_plain(now, len, plain);
        self.by_peer.insert((socket, remote), h);
        self.shared.moved(from.ip(), remote.ip());
        self.stats.migrated_in += 1;
        DatagramEvent::Migrated(h)
    }

    /// Count a datagram of `len` bytes that moved nothing (its own counter is the caller's).
    fn count_unmoved(&mut self, len: usize) {
        self.gone.in_pkts += 1;
        self.gone.in_bytes += len as u64;
    }

    /// Whatever conversation has `remote` on `socket` gives way to one moving there (kcp-go: one
    /// conversation per address).
    fn evict(&mut self, socket: SocketKey, remote: SocketAddr) {
        if let Some(old) = self.by_peer.get(&(socket, remote)).copied()
            && let Some(c) = self.remove(old)
        {
            self.retired.push_back((old, c, SessionEnd::Replaced));
        }
    }

    /// Whether `plain` may move conversation `h`: a live listener conversation, and the datagram newer than
    /// anything it has seen ([`Conn::is_newer`]).
    fn may_move(&self, now: Instant, h: ConnHandle, plain: &[u8]) -> bool {
        self.conns
            .get(h.index)
            .filter(|s| s.generation == h.generation)
            .is_some_and(|s| s.conn.is_passive() && s.placed.is_some() && s.conn.is_newer(now, plain))
    }

    /// Hand conversation `h` to another endpoint, if `plain` (the opened bytes of a datagram that endpoint
    /// received from a new address, [`DatagramEvent::Elsewhere`]) is newer than anything it has seen; it
    /// leaves this endpoint (without ending: its counters go with it). Otherwise it stays, and the
    /// datagram is counted as stale here.
    pub fn migrate_out(&mut self, now: Instant, h: ConnHandle, len: usize, plain: &[u8]) -> Result<Moving, DropReason> {
        if !self.may_move(now, h, plain) {
            self.stats.migration_stale += 1;
            self.count_unmoved(len);
            return Err(DropReason::Stale);
        }
        let slot = self.conns.remove(h.index).ok_or(DropReason::Stale)?;
        let was = Location { shard: self.shard, handle: h, group: slot.placed.unwrap_or(0) };
        self.backlog.retain(|b| *b != h);
        if self.by_peer.get(&(slot.socket, slot.remote)) == Some(&h) {
            self.by_peer.remove(&(slot.socket, slot.remote));
        }
        self.stats.migrated_out += 1;
        Ok(Moving { conn: slot.conn, from: slot.remote, proven: slot.proven, was })
    }

    /// Take in a conversation another endpoint handed over ([`migrate_out`](Self::migrate_out)) for the
    /// datagram `plain` (`len` bytes on the wire) that `socket`, a listening socket of the same group,
    /// received from `remote`; the datagram is fed to it. `None` (the conversation dropped, counted as
    /// ended) if `socket` is not such a socket any more.
    pub fn migrate_in(
        &mut self,
        now: Instant,
        moving: Moving,
        socket: SocketKey,
        remote: SocketAddr,
        len: usize,
        plain: &[u8],
    ) -> Option<ConnHandle> {
        let Moving { mut conn, from, proven, was } = moving;
        if !matches!(self.sockets.get(&socket), Some(SocketRole::Listen(cfg)) if cfg.migration == Migration::Anywhere && cfg.group == was.group)
        {
            self.shared.closed(Some(from.ip()));
            self.shared.unplace(conn.conv(), was);
            self.gone.merge(&conn.snmp());
            self.count_unmoved(len);
            return None;
        }
        self.evict(socket, remote);
        if remote != proven {
            conn.start_path_check();
        }
        let h = self.insert_slot(conn, socket, remote, proven);
        self.by_peer.insert((socket, remote), h);
        self.shared.moved(from.ip(), remote.ip());
        self.probes.remove(&self.conns.get(h.index).map_or(0, |s| s.conn.conv()));
        self.stats.migrated_in += 1;
        if let Some(slot) = self.conns.get_mut(h.index) {
            let _ = slot.conn.handle_plain(now, len, plain);
        }
        Some(h)
    }
}
