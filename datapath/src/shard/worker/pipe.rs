//! Pipes: the local end of a tunnelled connection (a socket, or a channel to an application thread) and
//! its stream on a conversation, with bounded buffers both ways lent from the shard's pool. What a stream
//! does when a direction ends (half-close, `--closewait`) and how its bytes are wrapped (`--QPP`) is the
//! conversation's policy ([`Conn`](crate::proto::conn::Conn)); a pipe only moves bytes.

use kcpd_time::Instant;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use kcpd_smux::Error as SmuxError;

use super::{T_PIPE, Worker};
use crate::event::Event;
use crate::proto::endpoint::ConnHandle;
use crate::shard::chan::Chan;
use crate::shard::local::{Endpoint as LocalEndpoint, LocalStream};
use crate::shard::poller::{Interest, Ready};
use crate::shard::service::App;

/// Bytes buffered per direction of a pipe.
const PIPE_BUF: usize = 32 * 1024;
/// Pipe buffers a shard keeps for reuse (2 MiB): a pipe holds one only while bytes wait in it.
const BUF_POOL_CAP: usize = 64;

pub(super) struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Self {
        // Storage is lent by the shard's pool while bytes are in flight (see `lend`).
        Buf { data: Box::default(), start: 0, end: 0 }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn fill(&mut self, n: usize) {
        self.start = 0;
        self.end = n;
    }
}

/// Give `b`'s storage to the pool when it holds no bytes (or `force`: the pipe is gone).
fn give_back(pool: &mut Vec<Box<[u8]>>, b: &mut Buf, force: bool) {
    if (force || b.is_empty()) && !b.data.is_empty() {
        b.start = 0;
        b.end = 0;
        let d = std::mem::take(&mut b.data);
        if pool.len() < BUF_POOL_CAP {
            pool.push(d);
        }
    }
}

/// Storage for an empty `b`, from the pool.
fn lend(pool: &mut Vec<Box<[u8]>>, b: &mut Buf) {
    if b.data.is_empty() {
        b.data = pool.pop().unwrap_or_else(|| vec![0; PIPE_BUF].into_boxed_slice());
    }
}

/// The local end of a pipe.
pub(super) enum Local {
    Sock(LocalStream),
    Chan(Arc<Chan>),
}

impl Local {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Local::Sock(s) => s.read(buf),
            Local::Chan(c) => c.take(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Local::Sock(s) => s.write(buf),
            Local::Chan(c) => c.give(buf),
        }
    }

    fn shutdown_write(&mut self) {
        match self {
            Local::Sock(s) => s.shutdown_write(),
            Local::Chan(c) => c.end_rx(),
        }
    }

    fn fd(&self) -> Option<RawFd> {
        match self {
            Local::Sock(s) => Some(s.as_raw_fd()),
            Local::Chan(_) => None,
        }
    }
}

/// A tunnelled connection: a local end and a smux stream (or, raw, the KCP byte stream itself).
pub(super) struct Pipe {
    pub(super) conn: ConnHandle,
    /// smux stream id; `None`: the conversation's KCP bytes.
    pub(super) sid: Option<u32>,
    pub(super) local: Local,
    connecting: bool,
    interest: Interest,
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// Local -> network.
    up: Buf,
    /// Network -> local.
    down: Buf,
    local_eof: bool,
    stream_eof: bool,
    up_done: bool,
    down_done: bool,
    /// The local end as [`Event::StreamOpened`] named it (set once the stream is up; the closing event
    /// follows only then).
    pub(super) announced: Option<LocalEndpoint>,
}

impl Worker {
    /// Carry stream `sid` of `h` to `local`.
    pub(super) fn add_pipe(
        &mut self,
        h: ConnHandle,
        sid: Option<u32>,
        local: Local,
        connecting: bool,
    ) -> Option<usize> {
        let interest = if connecting { Interest::WRITE } else { Interest::READ };
        let fd = local.fd();
        let chan = matches!(local, Local::Chan(_));
        let p = self.pipes.insert(Pipe {
            conn: h,
            sid,
            local,
            connecting,
            interest,
            readable: !connecting,
            writable: !connecting,
            up: Buf::new(),
            down: Buf::new(),
            local_eof: false,
            stream_eof: false,
            up_done: false,
            down_done: false,
            announced: None,
        });
        if let Some(fd) = fd
            && self.poller.add(fd, T_PIPE | p as u64, interest).is_err()
        {
            self.pipes.remove(p);
            if let Some(conn) = self.ep.get_mut(h) {
                conn.stream_detach(sid);
            }
            return None;
        }
        if let Some(Local::Chan(ch)) = self.pipes.get(p).map(|x| &x.local) {
            ch.attach(p);
        }
        self.stats.pipes_opened += 1;
        if let Some(conn) = self.ep.get_mut(h) {
            conn.stream_attach(sid, chan);
        }
        if let Some(io) = self.io_mut(h) {
            io.pipes.insert(sid.unwrap_or(0), p);
        }
        Some(p)
    }

    /// Take pipe `p` out of this shard to hand it to another (its descriptor leaves the poller; its
    /// buffers go with it).
    pub(super) fn export_pipe(&mut self, p: usize) -> Option<Pipe> {
        let pipe = self.pipes.remove(p)?;
        if let Some(fd) = pipe.local.fd() {
            let _ = self.poller.delete(fd);
        }
        Some(pipe)
    }

    /// Adopt a pipe another shard handed over, for conversation `h` here; `None` (the pipe dropped, its
    /// descriptor closed) if the poller refuses it.
    pub(super) fn import_pipe(&mut self, mut pipe: Pipe, h: ConnHandle) -> Option<usize> {
        pipe.conn = h;
        // Whatever happened while it travelled is looked at again.
        pipe.readable = !pipe.connecting;
        pipe.writable = !pipe.connecting;
        let (fd, interest) = (pipe.local.fd(), pipe.interest);
        let p = self.pipes.insert(pipe);
        if let Some(fd) = fd
            && self.poller.add(fd, T_PIPE | p as u64, interest).is_err()
        {
            self.pipes.remove(p);
            return None;
        }
        Some(p)
    }

    /// The stream of pipe `p` is up: tell the operator (kcptun's "stream opened" line).
    pub(super) fn announce(&mut self, p: usize, app: LocalEndpoint) {
        let Some(pipe) = self.pipes.get_mut(p) else { return };
        let Some(sid) = pipe.sid else { return };
        let (Some(io), Some(conn)) = (
            self.conns.get(pipe.conn.index).and_then(Option::as_ref).filter(|c| c.handle == pipe.conn),
            self.ep.get(pipe.conn),
        ) else {
            return;
        };
        let (id, by_peer) = (io.id, conn.is_passive());
        if let Some(sink) = &self.events {
            pipe.announced = Some(app.clone());
            sink.emit(Event::StreamOpened { id, sid, app, by_peer });
        }
    }

    pub(super) fn on_pipe(&mut self, p: usize, r: &Ready) {
        let Some(pipe) = self.pipes.get_mut(p) else { return };
        let h = pipe.conn;
        if pipe.connecting && (r.write || r.hup) {
            pipe.connecting = false;
            let failed = match &pipe.local {
                Local::Sock(s) => match s.take_error() {
                    Ok(None) => None,
                    Ok(Some(e)) | Err(e) => Some(e),
                },
                Local::Chan(_) => None,
            };
            pipe.readable = true;
            pipe.writable = true;
            let target = self.io(h).filter(|_| self.events.is_some()).and_then(|x| match &x.svc.app {
                App::TunnelServer { target } => Some(target.clone()),
                _ => None,
            });
            if let Some(error) = failed {
                self.stats.target_connect_failed += 1;
                if let Some(target) = target {
                    self.emit(|| Event::TargetDialFailed { target, error });
                }
                self.close_pipe(p);
                self.mark(h);
                return;
            }
            if let Some(target) = target {
                self.announce(p, target);
            }
            self.mark(h);
            return;
        }
        pipe.readable |= r.read || r.hup;
        pipe.writable |= r.write;
        self.mark(h);
    }

    pub(super) fn close_pipe(&mut self, p: usize) {
        let Some(mut pipe) = self.pipes.remove(p) else { return };
        if let (Some(app), Some(sid), Some(io), Some(conn)) =
            (pipe.announced.take(), pipe.sid, self.io(pipe.conn), self.ep.get(pipe.conn))
        {
            let (id, by_peer) = (io.id, conn.is_passive());
            self.emit(|| Event::StreamClosed { id, sid, app, by_peer });
        }
        give_back(&mut self.buf_pool, &mut pipe.up, true);
        give_back(&mut self.buf_pool, &mut pipe.down, true);
        match &pipe.local {
            Local::Sock(s) => {
                let _ = self.poller.delete(s.as_raw_fd());
            }
            Local::Chan(ch) => ch.break_with(io::ErrorKind::ConnectionAborted),
        }
        if let Some(io) = self.io_mut(pipe.conn) {
            io.pipes.remove(&pipe.sid.unwrap_or(0));
        }
        if let Some(conn) = self.ep.get_mut(pipe.conn) {
            conn.stream_detach(pipe.sid);
        }
    }

    /// Move a pipe's bytes both ways; returns bytes moved. Closes it when its life is over.
    pub(super) fn run_pipe(&mut self, p: usize, now: Instant) -> usize {
        let moved = self.run_pipe_inner(p, now);
        if let Some(pipe) = self.pipes.get_mut(p) {
            give_back(&mut self.buf_pool, &mut pipe.up, false);
            give_back(&mut self.buf_pool, &mut pipe.down, false);
        }
        moved
    }

    fn run_pipe_inner(&mut self, p: usize, now: Instant) -> usize {
        let Some(pipe) = self.pipes.get_mut(p) else { return 0 };
        if pipe.connecting {
            return 0;
        }
        let Some(conn) = self.ep.get_mut(pipe.conn) else { return 0 };
        let sid = pipe.sid;
        let mut moved = 0;
        let mut broken = false;
        let mut raw_closed = false;
        // Local -> network.
        loop {
            if !pipe.up.is_empty() {
                match conn.stream_write(sid, pipe.up.pending()) {
                    Ok(n) => {
                        pipe.up.consume(n);
                        moved += n;
                    }
                    Err(SmuxError::PeerClosed(_) | SmuxError::WriteClosed(_)) => {
                        let n = pipe.up.pending().len();
                        pipe.up.consume(n);
                        pipe.local_eof = true;
                    }
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
                if !pipe.up.is_empty() {
                    break;
                }
            }
            if pipe.local_eof || !pipe.readable {
                break;
            }
            lend(&mut self.buf_pool, &mut pipe.up);
            match pipe.local.read(&mut pipe.up.data) {
                Ok(0) => pipe.local_eof = true,
                Ok(n) => {
                    conn.stream_seal(sid, &mut pipe.up.data[..n]);
                    pipe.up.fill(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => pipe.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => pipe.local_eof = true,
            }
        }
        if pipe.local_eof && pipe.up.is_empty() && !pipe.up_done {
            pipe.up_done = true;
            conn.stream_up_done(sid);
            // Raw KCP has no close on the wire: the application closing ends the conversation.
            if let (None, Local::Chan(ch)) = (sid, &pipe.local)
                && ch.app_closed()
            {
                raw_closed = true;
            }
        }
        // Network -> local.
        loop {
            if !pipe.down.is_empty() {
                if !pipe.writable {
                    break;
                }
                match pipe.local.write(pipe.down.pending()) {
                    Ok(n) => {
                        pipe.down.consume(n);
                        moved += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        pipe.writable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
                continue;
            }
            if pipe.stream_eof {
                break;
            }
            lend(&mut self.buf_pool, &mut pipe.down);
            match conn.stream_read(sid, &mut pipe.down.data) {
                Ok(0) => pipe.stream_eof = true,
                Ok(n) => pipe.down.fill(n),
                Err(SmuxError::WouldBlock) => break,
                Err(_) => pipe.stream_eof = true,
            }
        }
        if pipe.stream_eof && pipe.down.is_empty() && !pipe.down_done {
            pipe.down_done = true;
            if conn.stream_down_done(sid) {
                pipe.local.shutdown_write();
            }
        }
        let over = if sid.is_none() { raw_closed } else { conn.stream_over(sid, now) };
        let h = pipe.conn;
        if raw_closed {
            self.kill_conn(h, Some(crate::event::SessionEnd::Closed));
            return moved;
        }
        if broken || over {
            self.close_pipe(p);
            return moved;
        }
        // Sockets: wait only for what can make progress.
        if let Some(fd) = pipe.local.fd() {
            let want = Interest {
                read: !pipe.local_eof && pipe.up.is_empty() && !pipe.readable,
                write: !pipe.down.is_empty() && !pipe.writable,
            };
            if want != pipe.interest {
                pipe.interest = want;
                let _ = self.poller.modify(fd, T_PIPE | p as u64, want);
            }
        }
        moved
    }
}
