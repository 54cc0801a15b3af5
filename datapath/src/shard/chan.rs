//! A byte channel between an application thread and a shard: the one place where bytes cross threads,
//! by design (the embeddable blocking API). Bounded both ways; the application blocks on condition
//! variables, the shard never blocks (it sees `WouldBlock`) and is woken by a kick when the application
//! frees space or adds data.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::shard::poller::Waker;

/// How a channel wakes its shard: the pipe id on the shard's kick queue, then its waker.
pub struct Kicker {
    tx: Sender<usize>,
    waker: Waker,
}

impl Kicker {
    /// Kick through `tx` (the shard's kick queue, `Peer::kicks`) and `waker` (that shard's); usually made
    /// by `Peer::kicker`.
    pub fn new(tx: Sender<usize>, waker: Waker) -> Self {
        Kicker { tx, waker }
    }

    fn kick(&self, pipe: usize) {
        if self.tx.send(pipe).is_ok() {
            self.waker.wake();
        }
    }
}

/// Bytes buffered per direction.
pub const CHAN_CAP: usize = 256 * 1024;

#[derive(Default)]
struct State {
    /// Network -> application.
    rx: VecDeque<u8>,
    /// Application -> network.
    tx: VecDeque<u8>,
    /// No more bytes will arrive (the peer closed its side).
    rx_eof: bool,
    /// The application will write no more.
    tx_closed: bool,
    /// The application dropped its end.
    app_closed: bool,
    /// The shard ended the channel (session died, stream reset).
    broken: Option<io::ErrorKind>,
    /// The shard's pipe id for kicks (set when the shard registers the channel).
    pipe: Option<usize>,
}

/// The shared state.
pub struct Chan {
    state: Mutex<State>,
    readable: Condvar,
    writable: Condvar,
    kicked: AtomicBool,
    shard: Kicker,
}

impl Chan {
    /// An open, empty channel that kicks the shard behind `shard`; it kicks nobody until that shard
    /// attaches it to a pipe.
    pub fn new(shard: Kicker) -> Self {
        Chan {
            state: Mutex::new(State::default()),
            readable: Condvar::new(),
            writable: Condvar::new(),
            kicked: AtomicBool::new(false),
            shard,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the byte queues inconsistent: keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell the shard to look at this channel (coalesced until it does).
    fn kick(&self, st: &State) {
        if let Some(pipe) = st.pipe
            && !self.kicked.swap(true, Ordering::AcqRel)
        {
            self.shard.kick(pipe);
        }
    }

    // ---- application side ----

    /// Blocking read; `Ok(0)` at the end of the stream.
    pub fn read(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if !st.rx.is_empty() {
                let was_full = st.rx.len() >= CHAN_CAP;
                let n = buf.len().min(st.rx.len());
                let (a, b) = st.rx.as_slices();
                let k = n.min(a.len());
                buf[..k].copy_from_slice(&a[..k]);
                buf[k..n].copy_from_slice(&b[..n - k]);
                st.rx.drain(..n);
                if was_full {
                    self.kick(&st);
                }
                return Ok(n);
            }
            if let Some(e) = st.broken {
                return Err(e.into());
            }
            if st.rx_eof {
                return Ok(0);
            }
            st = match deadline {
                None => self.readable.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.readable.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    /// Blocking write of at least one byte (all of `buf` if it fits).
    pub fn write(&self, buf: &[u8], timeout: Option<Duration>) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            if let Some(e) = st.broken {
                return Err(e.into());
            }
            if st.tx_closed {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let room = CHAN_CAP.saturating_sub(st.tx.len());
            if room > 0 {
                let n = room.min(buf.len());
                st.tx.extend(&buf[..n]);
                self.kick(&st);
                return Ok(n);
            }
            st = match deadline {
                None => self.writable.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.writable.wait_timeout(st, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }

    /// Wait until everything written has been taken by the shard.
    pub fn flush(&self) -> io::Result<()> {
        let mut st = self.lock();
        while !st.tx.is_empty() {
            if let Some(e) = st.broken {
                return Err(e.into());
            }
            st = self.writable.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    /// No more writes (a FIN on smux streams; nothing on raw KCP, which has no close).
    pub fn shutdown_write(&self) {
        let mut st = self.lock();
        st.tx_closed = true;
        self.kick(&st);
    }

    /// The application is done with the channel.
    pub fn close(&self) {
        let mut st = self.lock();
        st.tx_closed = true;
        st.app_closed = true;
        self.kick(&st);
    }

    // ---- shard side ----

    pub(crate) fn attach(&self, pipe: usize) {
        self.lock().pipe = Some(pipe);
    }

    /// The shard is looking now: later application activity must kick again.
    pub(crate) fn clear_kick(&self) {
        self.kicked.store(false, Ordering::Release);
    }

    /// Take bytes the application wrote; `Ok(0)` once it shut down writing and everything was taken.
    pub(crate) fn take(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.lock();
        if st.tx.is_empty() {
            return if st.tx_closed { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(st.tx.len());
        let (a, b) = st.tx.as_slices();
        let k = n.min(a.len());
        buf[..k].copy_from_slice(&a[..k]);
        buf[k..n].copy_from_slice(&b[..n - k]);
        st.tx.drain(..n);
        self.writable.notify_all();
        Ok(n)
    }

    /// Hand bytes to the application; `WouldBlock` when its buffer is full.
    pub(crate) fn give(&self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.lock();
        if st.app_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = CHAN_CAP.saturating_sub(st.rx.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        st.rx.extend(&buf[..n]);
        self.readable.notify_all();
        Ok(n)
    }

    /// The network side ended: the application reads what is buffered, then EOF.
    pub(crate) fn end_rx(&self) {
        self.lock().rx_eof = true;
        self.readable.notify_all();
    }

    /// The shard dropped the channel. After a clean end of the stream (EOF delivered) the application
    /// still reads to EOF; otherwise (session gone, stream reset) pending and future calls fail.
    pub(crate) fn break_with(&self, kind: io::ErrorKind) {
        let mut st = self.lock();
        st.pipe = None;
        if st.broken.is_none() && !st.rx_eof {
            st.broken = Some(kind);
        }
        // Data already delivered stays readable; EOF follows it.
        st.rx_eof = true;
        self.readable.notify_all();
        self.writable.notify_all();
    }

    pub(crate) fn app_closed(&self) -> bool {
        self.lock().app_closed
    }
}
