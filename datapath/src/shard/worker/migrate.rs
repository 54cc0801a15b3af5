//! Migration between shards: a server conversation whose peer's new address landed on another shard goes
//! there once, with its pipes and their descriptors ([`Ctrl::MoveAsk`], [`Ctrl::MoveIn`]); the endpoints
//! decide whether the datagram may move it ([`Endpoint::migrate_out`](crate::proto::endpoint::Endpoint)).

use kcpd_time::Instant;
use std::collections::HashMap;

use super::pipe::Pipe;
use super::{ConnIo, Worker};
use crate::event::{Event, SessionEnd};
use crate::proto::endpoint::Moving;
use crate::shard::ctrl::{Ctrl, MoveAsk};
use crate::shard::service::App;

/// A conversation on its way to another shard ([`Ctrl::MoveIn`]): the protocol side, the fd side and its
/// pipes, and the datagram that moved it.
pub struct Moved {
    moving: Moving,
    io: ConnIo,
    pipes: Vec<(u32, Pipe)>,
    from_shard: usize,
    ask: MoveAsk,
}

impl Worker {
    /// Another shard asks for conversation `ask.handle`, whose peer's new address landed there: hand it
    /// over with its pipes if the datagram is newer than anything it has seen (the endpoint decides and
    /// counts).
    pub(super) fn move_out(&mut self, ask: MoveAsk, now: Instant) {
        let h = ask.handle;
        // Only the tunnel's conversations travel (a library listener's stay on their shard). A conversation
        // that ended meanwhile: the endpoint counts the datagram as stale.
        if self.io(h).is_some_and(|io| !matches!(io.svc.app, App::TunnelServer { .. })) {
            return;
        }
        let Ok(moving) = self.ep.migrate_out(now, h, ask.len, &ask.plain) else { return };
        self.wheel.disarm(h.index as u32);
        let Some(mut io) = self.conns.get_mut(h.index).and_then(|c| c.take_if(|c| c.handle == h)) else { return };
        let mut pipes = Vec::with_capacity(io.pipes.len());
        for (sid, p) in std::mem::take(&mut io.pipes) {
            if let Some(pipe) = self.export_pipe(p) {
                pipes.push((sid, pipe));
            }
        }
        let to = ask.to.0;
        let moved = Moved { moving, io, pipes, from_shard: self.id, ask };
        if let Some(peer) = self.peers.get(to)
            && peer.tx.send(Ctrl::MoveIn(Box::new(moved))).is_ok()
        {
            peer.waker.wake();
        }
    }

    /// A conversation another shard handed over: its fd side and pipes join this shard, and the datagram
    /// that moved it is fed to it.
    pub(super) fn move_in(&mut self, moved: Moved, now: Instant) {
        let Moved { moving, mut io, pipes, from_shard, ask } = moved;
        let from = moving.from();
        let Some(h) = self.ep.migrate_in(now, moving, ask.to.1, ask.remote, ask.len, &ask.plain) else {
            // The listening socket went away meanwhile: the conversation ends here.
            let end = SessionEnd::Closed;
            let (id, age_ms) = (io.id, 0);
            self.emit(|| Event::SessionClosed { id, end, age_ms, smux: None, mismatch: None });
            return;
        };
        while let Some((old, conn, end)) = self.ep.poll_retired() {
            self.retire(old, conn, Some(end));
        }
        (io.handle, io.udp, io.peer, io.id.remote, io.local_ip) = (h, ask.to.1, ask.remote, ask.remote, ask.local_ip);
        io.queued = false;
        let mut kept = HashMap::with_capacity(pipes.len());
        for (sid, pipe) in pipes {
            let stream = pipe.sid;
            match self.import_pipe(pipe, h) {
                Some(p) => {
                    kept.insert(sid, p);
                }
                None => {
                    if let Some(conn) = self.ep.get_mut(h) {
                        conn.stream_detach(stream);
                    }
                }
            }
        }
        io.pipes = kept;
        let id = io.id;
        if self.conns.len() <= h.index {
            self.conns.resize_with(h.index + 1, || None);
        }
        self.conns[h.index] = Some(io);
        let shard = self.id;
        self.emit(|| Event::SessionMigrated { id, from, shards: (from_shard, shard) });
        self.mark(h);
    }
}
