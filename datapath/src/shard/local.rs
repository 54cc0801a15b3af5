//! The local side of a tunnel: TCP or unix-domain stream sockets and listeners, non-blocking, with the
//! socket options Go sets (TCP_NODELAY, 15 s keepalive).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Where the server connects streams to, or where the client listens (spec §7.1–7.2: `host:port` is
/// TCP, anything else a unix socket path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address (`host:port`); an IPv6 listener on it is dual-stack.
    Tcp(SocketAddr),
    /// A unix-domain socket path; binding removes a stale socket file left by an earlier run.
    Unix(PathBuf),
}

/// A connected local stream.
#[derive(Debug)]
pub enum LocalStream {
    /// A TCP connection, with TCP_NODELAY and a 15 s keepalive.
    Tcp(TcpStream),
    /// A unix-domain stream connection.
    Unix(UnixStream),
}

/// Go's `net.Dial`/`Accept` defaults for TCP: no Nagle, keepalive every 15 s.
fn tune_tcp(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new().with_time(Duration::from_secs(15)).with_interval(Duration::from_secs(15));
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

impl LocalStream {
    /// Adopt a connected TCP stream: made non-blocking, with Go's TCP_NODELAY and 15 s keepalive.
    pub fn from_tcp(s: TcpStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        tune_tcp(&s);
        Ok(LocalStream::Tcp(s))
    }

    /// Adopt a connected unix stream, made non-blocking.
    pub fn from_unix(s: UnixStream) -> io::Result<Self> {
        s.set_nonblocking(true)?;
        Ok(LocalStream::Unix(s))
    }

    /// Start connecting without blocking: TCP returns at once (`EINPROGRESS`; writable when done, then
    /// check [`take_error`](Self::take_error)); a unix socket connects at once or fails (a full backlog is
    /// `EAGAIN`, a failed connect for that stream, never a shard thread asleep in connect(2)).
    pub fn connect(to: &Endpoint) -> io::Result<Self> {
        match to {
            Endpoint::Tcp(addr) => {
                let s = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
                s.set_nonblocking(true)?;
                match s.connect(&(*addr).into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                let t: TcpStream = s.into();
                tune_tcp(&t);
                Ok(LocalStream::Tcp(t))
            }
            Endpoint::Unix(path) => {
                let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
                s.set_nonblocking(true)?;
                s.connect(&socket2::SockAddr::unix(path)?)?;
                Self::from_unix(s.into())
            }
        }
    }

    /// The other end, as a log names it: a TCP peer's address; for a unix socket the path it came in on
    /// (an accepted unix peer is unnamed).
    pub fn peer_endpoint(&self) -> Endpoint {
        match self {
            LocalStream::Tcp(s) => Endpoint::Tcp(s.peer_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))),
            LocalStream::Unix(s) => {
                let path = |a: std::os::unix::net::SocketAddr| a.as_pathname().map(|p| p.to_path_buf());
                Endpoint::Unix(
                    s.peer_addr()
                        .ok()
                        .and_then(path)
                        .or_else(|| s.local_addr().ok().and_then(path))
                        .unwrap_or_default(),
                )
            }
        }
    }

    /// The pending connect error, if any (after the socket became writable).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            LocalStream::Tcp(s) => s.take_error(),
            LocalStream::Unix(s) => s.take_error(),
        }
    }

    /// Half-close: send FIN, so the local peer reads EOF while bytes can still arrive from it (smux
    /// half-close). Errors, e.g. a peer already gone, are ignored.
    pub fn shutdown_write(&self) {
        let _ = match self {
            LocalStream::Tcp(s) => s.shutdown(Shutdown::Write),
            LocalStream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for LocalStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => s.read(buf),
            LocalStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for LocalStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LocalStream::Tcp(s) => s.write(buf),
            LocalStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for LocalStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            LocalStream::Tcp(s) => s.as_raw_fd(),
            LocalStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// A listening local socket.
#[derive(Debug)]
pub enum LocalListener {
    /// A TCP listener (SO_REUSEADDR; SO_REUSEPORT when bound with `reuse_port`, one listener per shard).
    Tcp(TcpListener),
    /// A unix-domain listener; only one can listen on a path.
    Unix(UnixListener),
}

impl LocalListener {
    /// Bind non-blocking. TCP listeners use SO_REUSEPORT so every shard can have its own (the kernel
    /// spreads connections); a unix path can have only one.
    pub fn bind(at: &Endpoint, reuse_port: bool) -> io::Result<Self> {
        match at {
            Endpoint::Tcp(addr) => {
                let s = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
                s.set_reuse_address(true)?;
                if reuse_port {
                    s.set_reuse_port(true)?;
                }
                if addr.is_ipv6() {
                    let _ = s.set_only_v6(false);
                }
                s.bind(&(*addr).into()).map_err(|e| crate::io::udp::bind_error("tcp", addr, e))?;
                s.listen(1024)?;
                s.set_nonblocking(true)?;
                Ok(LocalListener::Tcp(s.into()))
            }
            Endpoint::Unix(path) => {
                // A stale socket file from an earlier run would make bind fail; one a live process still
                // listens on is left alone (bind then fails with "address in use", as Go's listen does).
                if std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) && UnixStream::connect(path).is_err()
                {
                    let _ = std::fs::remove_file(path);
                }
                let l = UnixListener::bind(path).map_err(|e| crate::io::udp::bind_error("unix", path.display(), e))?;
                l.set_nonblocking(true)?;
                Ok(LocalListener::Unix(l))
            }
        }
    }

    /// Fail with `address already in use: <addr>` when another socket (another process's SO_REUSEPORT
    /// group included) listens on a TCP `at`; see [`crate::io::udp::probe_free`] for why and for the small
    /// window it leaves. A unix path needs no probe: binding a live one fails anyway.
    pub fn probe_free(at: &Endpoint) -> io::Result<()> {
        let Endpoint::Tcp(addr) = at else { return Ok(()) };
        if addr.port() == 0 {
            return Ok(());
        }
        let s = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(Protocol::TCP))?;
        // SO_REUSEADDR as the real listeners (a TIME_WAIT leftover is no conflict; a listener is).
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            let _ = s.set_only_v6(false);
        }
        s.bind(&(*addr).into()).map_err(|e| crate::io::udp::bind_error("tcp", addr, e))
    }

    /// Accept one connection if any is waiting.
    pub fn accept(&self) -> io::Result<Option<LocalStream>> {
        let r = match self {
            LocalListener::Tcp(l) => l.accept().map(|(s, _)| LocalStream::from_tcp(s)),
            LocalListener::Unix(l) => l.accept().map(|(s, _)| LocalStream::from_unix(s)),
        };
        match r {
            Ok(s) => s.map(Some),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where it listens, a requested TCP port 0 resolved (the other shards bind theirs there, and
    /// `Engine::listen_endpoint` reports it); a unix listener's path (empty if unnamed).
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        match self {
            LocalListener::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?)),
            LocalListener::Unix(l) => {
                Ok(Endpoint::Unix(l.local_addr()?.as_pathname().map(|p| p.to_path_buf()).unwrap_or_default()))
            }
        }
    }

    /// Another handle on the same listening socket (a duplicated fd): both accept from one queue.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            LocalListener::Tcp(l) => LocalListener::Tcp(l.try_clone()?),
            LocalListener::Unix(l) => LocalListener::Unix(l.try_clone()?),
        })
    }
}

impl AsRawFd for LocalListener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            LocalListener::Tcp(l) => l.as_raw_fd(),
            LocalListener::Unix(l) => l.as_raw_fd(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("kcpd-local-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn unix_listener_replaces_stale_socket_files_only() {
        let path = tmp("listen.sock");
        let live = UnixListener::bind(&path).unwrap();
        match LocalListener::bind(&Endpoint::Unix(path.clone()), false) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse),
            Ok(_) => panic!("a live socket must be kept"),
        }
        drop(live); // the file stays behind, stale
        assert!(path.exists());
        let l = LocalListener::bind(&Endpoint::Unix(path.clone()), false).unwrap();
        let _c = UnixStream::connect(&path).unwrap();
        assert!(matches!(l.accept(), Ok(Some(LocalStream::Unix(_)))));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_tcp_port_another_reuseport_listener_holds_is_in_use() {
        let any = Endpoint::Tcp("127.0.0.1:0".parse().unwrap());
        let first = LocalListener::bind(&any, true).unwrap();
        let at = first.local_endpoint().unwrap();
        // SO_REUSEPORT would let a second process join; the probe refuses.
        assert!(LocalListener::bind(&at, true).is_ok());
        let e = LocalListener::probe_free(&at).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let Endpoint::Tcp(addr) = at else { unreachable!() };
        assert_eq!(e.to_string(), format!("address already in use: {addr}"));
        drop(first);
        assert!(LocalListener::probe_free(&any).is_ok());
    }

    #[test]
    fn unix_connect_does_not_block() {
        let path = tmp("target.sock");
        let l = UnixListener::bind(&path).unwrap();
        let s = LocalStream::connect(&Endpoint::Unix(path.clone())).unwrap();
        assert!(matches!(s, LocalStream::Unix(_)));
        let (_peer, _) = l.accept().unwrap();
        drop(l);
        let _ = std::fs::remove_file(&path);
        // Nobody there: an error at once.
        assert!(LocalStream::connect(&Endpoint::Unix(path)).is_err());
    }
}
