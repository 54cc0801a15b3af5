//! Helpers shared by the loopback test files: backend availability, one test per backend.
#![allow(dead_code)] // each test file uses its own subset

pub mod netns;
pub mod sim;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kcpd_datapath::io::Backend;

/// Whether `b` runs here; a backend the kernel refuses (io_uring under seccomp) is skipped loudly.
pub fn usable(b: Backend) -> bool {
    if b.is_available() {
        return true;
    }
    eprintln!("SKIPPED: the {b} I/O backend is not available on this machine");
    false
}

#[allow(unused_imports)] // each test file uses its own subset
pub use netns::privileged;

/// `per_backend!(a, b)` makes modules `mmsg`, `uring` and `poll`, each with tests `a` and `b` calling
/// `super::a(backend)`: every backend passes the same tests.
#[macro_export]
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        mod mmsg {
            $( #[test] fn $test() { super::$test(kcpd_datapath::io::Backend::Mmsg) } )*
        }
        mod uring {
            $( #[test] fn $test() { super::$test(kcpd_datapath::io::Backend::Uring) } )*
        }
        mod poll {
            $( #[test] fn $test() { super::$test(kcpd_datapath::io::Backend::Basic) } )*
        }
    };
}

/// A tunnel end of `role` carrying `conn`, on `threads` shards of `backend`: no pinning, no events, the
/// front door's defaults, every client policy off.
pub fn tunnel(
    role: kcpd_datapath::shard::Role,
    conn: kcpd_datapath::proto::conn::ConnConfig,
    backend: Backend,
    threads: usize,
) -> kcpd_datapath::shard::TunnelConfig {
    kcpd_datapath::shard::TunnelConfig {
        role,
        conn,
        threads,
        pin: false,
        backend,
        sockbuf: None,
        dscp: 0,
        offload: Default::default(),
        tcp: None,
        autoexpire_ms: 0,
        scavenge_ttl_ms: 0,
        smux_fallback: false,
        events: None,
        front: Default::default(),
    }
}

/// An echo target that counts the connections it accepted.
pub fn counting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(k @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (a, n)
}
