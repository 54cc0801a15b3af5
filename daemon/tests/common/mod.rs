//! What the daemon's process-level tests share: spawning kcpd and Debian's kcptun as child processes,
//! free loopback ports, an echo target, waiting for a listener, a byte-checked echo.
#![allow(dead_code)] // each test file uses its own subset
#![allow(clippy::disallowed_methods)] // tests wait on the wall clock

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KCPTUN_CLIENT: &str = "/usr/bin/kcptun-client";
pub const KCPTUN_SERVER: &str = "/usr/bin/kcptun-server";
pub const KCPD: &str = env!("CARGO_BIN_EXE_kcpd");

pub fn kcptun_present() -> bool {
    if std::env::var_os("KCPD_SKIP_INTEROP").is_some() {
        eprintln!("SKIPPED: KCPD_SKIP_INTEROP is set");
        return false;
    }
    assert!(
        Path::new(KCPTUN_CLIENT).exists() && Path::new(KCPTUN_SERVER).exists(),
        "interop tests need Debian's kcptun: sudo apt-get install -y kcptun (or set KCPD_SKIP_INTEROP=1)"
    );
    true
}

/// A child process killed and reaped on drop, its output kept for failure reports.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub what: String,
}

impl Proc {
    pub fn spawn(what: &str, bin: &str, argv0: Option<&Path>, args: &[String]) -> Proc {
        let log = scratch().join(format!("{}.log", what.replace([' ', '/', '>'], "_")));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = match argv0 {
            Some(link) => Command::new(link),
            None => Command::new(bin),
        };
        cmd.args(args).stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: cannot start {bin}: {e}"));
        Proc { child, log, what: what.to_owned() }
    }

    /// Everything it wrote so far (stdout and stderr together).
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until its output contains `needle` (true), or `secs` pass (false).
    pub fn wait_for(&self, needle: &str, secs: u64) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Wait for it to exit (`None` after `secs`).
    pub fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn output(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(15).collect();
        format!("--- {} ({})\n{}", self.what, self.log.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn scratch() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("kcpd-interop-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // The drop-in names: kcptun-client / kcptun-server symlinks to kcpd.
        for name in ["kcptun-client", "kcptun-server"] {
            let _ = std::os::unix::fs::symlink(KCPD, d.join(name));
        }
        d
    })
    .clone()
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn echo_target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    a
}

pub fn wait_listening(addr: SocketAddr, procs: &mut [&mut Proc]) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("{} exited early: {st}", p.what));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listening on {addr} after 15 s"))
}

/// `bytes` up and the echo down on one connection, compared byte for byte.
pub fn echo_once(local: SocketAddr, bytes: usize, seed: u8) -> Result<(), String> {
    let mut s = TcpStream::connect(local).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..bytes).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8 ^ seed).collect();
    let mut r = s.try_clone().map_err(|e| e.to_string())?;
    let expect = data.clone();
    let reader = std::thread::spawn(move || -> Result<(), String> {
        let mut got = vec![0u8; expect.len()];
        r.read_exact(&mut got).map_err(|e| format!("read after {} bytes: {e}", got.len()))?;
        if got != expect {
            let at = got.iter().zip(&expect).position(|(a, b)| a != b).unwrap_or(0);
            return Err(format!("echo differs at byte {at}"));
        }
        Ok(())
    });
    s.write_all(&data).map_err(|e| format!("write: {e}"))?;
    reader.join().map_err(|_| "reader panicked".to_string())?
}
