//! Out of file descriptors: a client tunnel's local listener rests instead of spinning, and works again
//! once descriptors are back. Its own test binary: it lowers RLIMIT_NOFILE for the whole process.
#![allow(clippy::disallowed_methods)] // tests time themselves

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use kcpd_crypto::{Method, PacketCrypto};
use kcpd_datapath::io::Backend;
use kcpd_datapath::proto::conn::ConnConfig;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_datapath::shard::{Endpoint, Engine, Role};

mod common;

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn set_nofile(soft: u64) -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let old = r.rlim_cur;
        r.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
        old
    }
}

#[test]
fn a_listener_out_of_descriptors_rests_and_recovers() {
    let role = Role::Client {
        listen: Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
        remote: vec!["127.0.0.1:9".parse().unwrap()],
        conns: 1,
    };
    let conn = ConnConfig::new(Arc::new(PacketCrypto::from_password(Method::Aes, "k")), SessionConfig::kcptun_client());
    let cfg = common::tunnel(role, conn, Backend::Mmsg, 1);
    let client = Engine::start(cfg).unwrap();
    let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else { panic!() };
    // Room for the test's own connections and a handful more: the shard's accepts (and the sessions'
    // sockets) run out first.
    let old = set_nofile(open_fds() as u64 + 24);
    let mut conns = Vec::new();
    for _ in 0..40 {
        match TcpStream::connect(local) {
            Ok(c) => conns.push(c),
            Err(_) => break,
        }
    }
    // The shard's accept fails once it runs (a loaded machine may take a while to schedule it).
    let paused = || client.stats().iter().map(|s| s.accept_paused).sum::<u64>();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while paused() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(paused() > 0, "accept never failed ({} connections made)", conns.len());
    // Queued connections wait while the listener rests: the shard does not spin on them.
    let t0 = cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_seconds() - t0;
    assert!(cpu < 0.3, "{cpu:.2} CPU-seconds in one second with a listener out of descriptors");
    // Descriptors back: the queued connections are taken and new ones too.
    conns.clear();
    set_nofile(old);
    std::thread::sleep(Duration::from_millis(600));
    let before = client.stats().iter().map(|s| s.pipes_opened).sum::<u64>();
    let _c = TcpStream::connect(local).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.stats().iter().map(|s| s.pipes_opened).sum::<u64>() == before {
        assert!(std::time::Instant::now() < deadline, "the listener never resumed");
        std::thread::sleep(Duration::from_millis(20));
    }
}
