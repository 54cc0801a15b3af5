//! The worker's own loop rules, on a fake socket.

use super::*;
use crate::io::Transmit;
use crate::proto::conn::ConnConfig;
use crate::proto::session::SessionConfig;
use crate::shard::poller::{Epoll, waker};
use kcpd_crypto::{Method, PacketCrypto};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A socket that always has a full batch of junk waiting (a flood), counting how often it is read.
struct Flood {
    reads: Arc<AtomicUsize>,
    fd: std::os::unix::net::UnixDatagram,
}

impl DatagramIo for Flood {
    fn local_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], 1).into()
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let n = bufs.len().min(meta.len());
        for (b, m) in bufs.iter_mut().zip(meta.iter_mut()).take(n) {
            b[..40].fill(0xA5);
            *m = RecvMeta { len: 40, stride: 40, src: ([192, 0, 2, 1], 9).into(), dst_ip: None, truncated: false };
        }
        Ok(n)
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        Ok(msgs.len())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }
}

fn worker_with(io: Box<dyn DatagramIo + Send>, fd: RawFd) -> Worker {
    let (waker, wake_rx) = waker().unwrap();
    let (tx, ctrl) = crossbeam_channel::unbounded();
    let (ktx, kicks) = crossbeam_channel::unbounded();
    let crypto = Arc::new(PacketCrypto::from_password(Method::Aes, "k"));
    let svc = Arc::new(Service {
        conn: Arc::new(ConnConfig::new(crypto, SessionConfig::kcptun_server())),
        sockbuf: None,
        dscp: 0,
        offload: Default::default(),
        tcp: None,
        app: App::TunnelServer { target: LocalEndpoint::Tcp(([127, 0, 0, 1], 9).into()) },
    });
    Worker::new(Setup {
        id: 0,
        backend: Backend::Basic,
        poller: Box::new(Epoll::new().unwrap()),
        wake_rx,
        ctrl,
        kicks,
        peers: Arc::new(vec![Peer { tx, kicks: ktx, waker }]),
        epoch: std::time::Instant::now(),
        listeners: vec![(vec![(io, fd)], svc)],
        client: None,
        front: Arc::new(crate::proto::front::FrontDoor::default()),
        events: None,
    })
    .unwrap()
}

/// A socket that never runs dry is read a bounded number of batches per turn, then waits its next turn
/// (which does not sleep) so that timers and transmits run in between.
#[test]
fn a_flooded_socket_yields_after_a_bounded_number_of_batches() {
    let reads = Arc::new(AtomicUsize::new(0));
    let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let fd = a.as_raw_fd();
    let mut w = worker_with(Box::new(Flood { reads: reads.clone(), fd: a }), fd);
    let now = w.now();
    // Each read fails its checksum: dropped and counted, nothing else happens. Run on a helper thread so a
    // loop that never yields fails the test instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        w.on_udp(0, now);
        done_tx.send(()).unwrap();
        w
    });
    done_rx.recv_timeout(std::time::Duration::from_secs(5)).expect("on_udp never returned under a flood");
    let w = t.join().unwrap();
    assert_eq!(reads.load(Ordering::Relaxed), RX_ROUNDS);
    assert_eq!(w.rx_again, vec![0], "the socket is read again next turn");
    assert_eq!(w.stats.rx_deferred, 1);
    assert_eq!(w.ep.snmp().in_csum_errors as usize, RX_ROUNDS * RX_BATCH);
}
