//! systemd readiness notification (`sd_notify(3)` without libsystemd): one datagram with a state
//! string such as `READY=1`, `STOPPING=1` or `STATUS=…` to the socket named by `$NOTIFY_SOCKET`.

use std::io;
use std::os::unix::net::UnixDatagram;

/// The environment variable systemd sets for `Type=notify` services.
pub const ENV: &str = "NOTIFY_SOCKET";

/// Send `state` to `$NOTIFY_SOCKET`. `Ok(false)` when the variable is unset or empty (not run by
/// systemd, nothing to do), `Ok(true)` once sent. The address is an absolute path or, starting with
/// `@`, a Linux abstract socket name.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os(ENV) {
        Some(addr) if !addr.is_empty() => {
            send_to(&addr, state)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Send `state` as one datagram to the notify socket `addr` (a path, or `@name` for an abstract one).
pub fn send_to(addr: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = addr.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = match bytes.first() {
        Some(b'/') => sock.send_to(state.as_bytes(), addr)?,
        Some(b'@') => send_abstract(&sock, &bytes[1..], state)?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{ENV}={}: not an absolute path or @abstract name", addr.to_string_lossy()),
            ));
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short write to the notify socket"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix sockets need Linux"))
}
