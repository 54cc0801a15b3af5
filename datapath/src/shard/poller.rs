//! Readiness polling for a shard: epoll on Linux, poll(2) everywhere (and on Linux when the portable
//! backend is chosen, so it stays tested). Level-triggered: interest is toggled when a socket is paused
//! for back-pressure, so a paused socket costs nothing.

use std::io;
use std::os::fd::RawFd;

/// What to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interest {
    /// Readable, or the peer hung up (EOF to read).
    pub read: bool,
    /// Writable, or a non-blocking connect finished (check its error).
    pub write: bool,
}

impl Interest {
    /// Readability only: UDP sockets, listeners, the waker, a stream waiting for bytes.
    pub const READ: Interest = Interest { read: true, write: false };
    /// Writability only: a connect in progress, or a stream with bytes waiting for room.
    pub const WRITE: Interest = Interest { read: false, write: true };
    /// Both readability and writability.
    pub const BOTH: Interest = Interest { read: true, write: true };
    /// Nothing: a paused fd stays registered and costs no wake-ups (errors and hang-ups are still
    /// reported).
    pub const NONE: Interest = Interest { read: false, write: false };
}

/// One readiness report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The token the fd was registered (or last modified) with.
    pub token: u64,
    /// Readable (epoll also sets it on a peer's hang-up, EPOLLRDHUP).
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Error or hang-up: the owner should read/write to learn what happened.
    pub hup: bool,
}

/// A readiness source.
pub trait Poller: Send {
    /// Watch `fd` for `interest`, reporting it as `token`, level-triggered; an fd already watched is an
    /// error.
    fn add(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
    /// Change what a watched `fd` waits for, and its token (back-pressure: stop reading a stream whose
    /// buffer is full).
    fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()>;
    /// Stop watching `fd`; call it before closing the fd (`Poll` would otherwise report it invalid, and
    /// its number may be reused).
    fn delete(&mut self, fd: RawFd) -> io::Result<()>;
    /// Wait up to `timeout_ms` (-1: forever) and append readiness to `out`.
    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: i32) -> io::Result<()>;
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// epoll(7).
#[cfg(target_os = "linux")]
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
    events: Vec<libc::epoll_event>,
}

#[cfg(target_os = "linux")]
impl Epoll {
    /// A new epoll instance (close-on-exec), reporting up to 256 events per `wait`.
    pub fn new() -> io::Result<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall; the result is checked and owned below.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; 256] })
    }

    fn ctl(&mut self, op: libc::c_int, fd: RawFd, token: u64, i: Interest) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut flags = 0u32;
        if i.read {
            flags |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if i.write {
            flags |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event { events: flags, u64: token };
        // SAFETY: `ev` outlives the call; the kernel validates `fd`.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }
}

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for Epoll {
    /// The epoll descriptor: itself pollable (readable while it has events to report).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(target_os = "linux")]
impl Poller for Epoll {
    fn add(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::NONE)
    }

    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: i32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: the buffer holds `len` events and lives across the call.
        let n = unsafe {
            libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), self.events.len() as i32, timeout_ms)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        for ev in &self.events[..n as usize] {
            let f = ev.events;
            out.push(Ready {
                token: ev.u64,
                read: f & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                write: f & libc::EPOLLOUT as u32 != 0,
                hup: f & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            });
        }
        Ok(())
    }
}

/// poll(2): a registration table rebuilt into a `pollfd` array per wait.
pub struct Poll {
    fds: Vec<libc::pollfd>,
    tokens: Vec<u64>,
}

impl Default for Poll {
    fn default() -> Self {
        Self::new()
    }
}

impl Poll {
    /// An empty table; no system call until `wait`.
    pub fn new() -> Self {
        Poll { fds: Vec::new(), tokens: Vec::new() }
    }

    fn events(i: Interest) -> libc::c_short {
        let mut e = 0;
        if i.read {
            e |= libc::POLLIN;
        }
        if i.write {
            e |= libc::POLLOUT;
        }
        e
    }

    fn find(&self, fd: RawFd) -> io::Result<usize> {
        self.fds.iter().position(|p| p.fd == fd).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

impl Poller for Poll {
    fn add(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        if self.find(fd).is_ok() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.fds.push(libc::pollfd { fd, events: Self::events(interest), revents: 0 });
        self.tokens.push(token);
        Ok(())
    }

    fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let i = self.find(fd)?;
        self.fds[i].events = Self::events(interest);
        self.tokens[i] = token;
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        let i = self.find(fd)?;
        self.fds.swap_remove(i);
        self.tokens.swap_remove(i);
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<Ready>, timeout_ms: i32) -> io::Result<()> {
        // SAFETY: `fds` is a valid array of `len` pollfd structs for the duration of the call.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        for (p, &token) in self.fds.iter().zip(&self.tokens) {
            let r = p.revents;
            if r != 0 {
                out.push(Ready {
                    token,
                    read: r & libc::POLLIN != 0,
                    write: r & libc::POLLOUT != 0,
                    hup: r & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
                });
            }
        }
        Ok(())
    }
}

/// Wakes a shard blocked in `wait` from another thread (a socketpair; one byte per wake, coalesced).
pub struct Waker {
    tx: std::os::unix::net::UnixDatagram,
}

/// The shard's end of a [`Waker`].
pub struct WakeReceiver {
    rx: std::os::unix::net::UnixDatagram,
}

/// A connected non-blocking pair: the [`Waker`] for other threads, the [`WakeReceiver`] for the shard's
/// poller.
pub fn waker() -> io::Result<(Waker, WakeReceiver)> {
    let (tx, rx) = std::os::unix::net::UnixDatagram::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Waker { tx }, WakeReceiver { rx }))
}

impl Waker {
    /// Wake the shard. A full socket buffer means a wake is already pending: nothing to do.
    pub fn wake(&self) {
        let _ = self.tx.send(&[1]);
    }

    /// Another handle waking the same shard (a new fd: one per application channel's kicker).
    pub fn try_clone(&self) -> io::Result<Waker> {
        Ok(Waker { tx: self.tx.try_clone()? })
    }
}

impl WakeReceiver {
    /// The fd to register for reading: readable while wakes are pending, until [`drain`](Self::drain).
    pub fn fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.rx.as_raw_fd()
    }

    /// Consume pending wakes.
    pub fn drain(&self) {
        let mut b = [0u8; 64];
        while self.rx.recv(&mut b).is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn exercise(p: &mut dyn Poller) {
        let (w, r) = waker().unwrap();
        p.add(r.fd(), 7, Interest::READ).unwrap();
        let mut out = Vec::new();
        p.wait(&mut out, 0).unwrap();
        assert!(out.is_empty());
        w.wake();
        p.wait(&mut out, 1000).unwrap();
        assert_eq!(out, [Ready { token: 7, read: true, write: false, hup: false }]);
        r.drain();
        out.clear();
        p.wait(&mut out, 0).unwrap();
        assert!(out.is_empty(), "level-triggered: drained means quiet");
        // Write interest on a connected socket is ready at once; toggling it off silences it.
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        p.add(a.as_raw_fd(), 9, Interest::WRITE).unwrap();
        p.wait(&mut out, 1000).unwrap();
        assert!(out.iter().any(|r| r.token == 9 && r.write));
        p.modify(a.as_raw_fd(), 9, Interest::NONE).unwrap();
        out.clear();
        p.wait(&mut out, 0).unwrap();
        assert!(out.iter().all(|r| r.token != 9));
        a.write_all(b"x").unwrap();
        p.delete(a.as_raw_fd()).unwrap();
        p.delete(r.fd()).unwrap();
    }

    #[test]
    fn poll_and_epoll_behave_the_same() {
        exercise(&mut Poll::new());
        #[cfg(target_os = "linux")]
        exercise(&mut Epoll::new().unwrap());
    }
}
