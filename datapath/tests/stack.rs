//! The whole stack on the simulated network: smux over snappy over KCP over FEC over crypto, 8 streams
//! each moving 1 MB in each direction (8 MB each way), byte-exact, under the impairments the issue lists,
//! for fast3 and normal, FEC 10/3 and off. Virtual time: each case runs in well under a second.

use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::io::sim::{Link, Loss, SimNet, SimSocket};
use kcpd_datapath::io::{DatagramIo, RecvMeta, Transmit};
use kcpd_datapath::proto::conn::{Conn, ConnConfig, ConnEvent, Upper};
use kcpd_datapath::proto::endpoint::{Endpoint, ListenConfig};
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_smux::{Config as SmuxConfig, Role};
use kcpd_time::Instant;
use kcpd_vectors::det_bytes;

const STREAMS: usize = 8;
const PER_STREAM: usize = 1 << 20;

#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    link: Link,
    mode: Mode,
    fec: bool,
    method: Method,
    compress: bool,
    smux_version: u8,
}

fn data(dir: &str, i: usize) -> Vec<u8> {
    if i.is_multiple_of(2) {
        det_bytes(&format!("{dir}-{i}"), PER_STREAM)
    } else {
        // Compressible text for the snappy path.
        let mut v = Vec::with_capacity(PER_STREAM);
        let mut k = 0u64;
        while v.len() < PER_STREAM {
            v.extend_from_slice(format!("{dir} stream {i} line {k} {}\n", k * k % 977).as_bytes());
            k += 1;
        }
        v.truncate(PER_STREAM);
        v
    }
}

/// One side's streams: what to send, what arrived.
struct Streams {
    out: Vec<Vec<u8>>,
    sent: Vec<usize>,
    got: Vec<Vec<u8>>,
}

impl Streams {
    fn new(dir: &str) -> Self {
        Streams {
            out: (0..STREAMS).map(|i| data(dir, i)).collect(),
            sent: vec![0; STREAMS],
            got: vec![Vec::new(); STREAMS],
        }
    }

    fn done(&self) -> bool {
        self.got.iter().all(|g| g.len() == PER_STREAM)
    }

    /// Write what fits and read what arrived; `index` maps a stream id to 0..STREAMS.
    fn drive(&mut self, s: &mut Conn, ids: &[u32]) -> usize {
        let mut progress = 0;
        let mut buf = vec![0u8; 65536];
        for (i, &id) in ids.iter().enumerate() {
            if self.sent[i] < PER_STREAM {
                let n = s.stream_write(Some(id), &self.out[i][self.sent[i]..]).expect("stream open");
                self.sent[i] += n;
                progress += n;
            }
            while let Ok(n) = s.stream_read(Some(id), &mut buf) {
                if n == 0 {
                    break;
                }
                self.got[i].extend_from_slice(&buf[..n]);
                progress += n;
            }
        }
        progress
    }
}

fn transmit(c: &mut Conn, sock: &mut SimSocket, dst: SocketAddr, now: Instant, rng: &mut NonceGen) -> usize {
    let mut arena = vec![0u8; 32 * 1500];
    let mut lens = [0usize; 32];
    let mut total = 0;
    loop {
        let n = c.poll_transmit(now, rng, &mut arena, &mut lens);
        let mut off = 0;
        for &l in &lens[..n] {
            sock.send_batch(&[Transmit::new(dst, &arena[off..off + l])]).unwrap();
            off += l;
        }
        total += n;
        if n < lens.len() {
            return total;
        }
    }
}

/// Milliseconds (rounded up) from `now` until a deadline (0 if due).
fn until(now: Instant, t: Option<Instant>) -> Option<u64> {
    t.map(|t| (t - now).as_micros().div_ceil(1000))
}

fn run(case: Case, seed: u64) {
    let crypto = Arc::new(PacketCrypto::from_password(case.method, "stack"));
    let (ds, ps) = if case.fec { (10, 3) } else { (0, 0) };
    let base = SessionConfig {
        nodelay: case.mode.nodelay(),
        data_shards: ds,
        parity_shards: ps,
        ..SessionConfig::kcptun_client()
    };
    let ccfg = SessionConfig { snd_wnd: 512, rcv_wnd: 512, ..base.clone() };
    let scfg = SessionConfig { snd_wnd: 1024, rcv_wnd: 1024, ..base };
    let smux_cfg = SmuxConfig { version: case.smux_version, ..SmuxConfig::kcptun_new() };
    let net = SimNet::new(seed, case.link);
    let (ca, sa) = (SocketAddr::from(([10, 0, 0, 1], 5000)), SocketAddr::from(([10, 0, 0, 2], 29900)));
    let (mut csock, mut ssock) = (net.socket(ca), net.socket(sa));
    let mut rng = NonceGen::from_seed([seed as u8; 32]);

    let conn_cfg = |session| {
        let mut c = ConnConfig::new(crypto.clone(), session);
        c.smux = smux_cfg.clone();
        c.compress = case.compress;
        Arc::new(c)
    };
    let upper = Upper::Smux { role: Role::Client, version: case.smux_version };
    let mut client = Conn::new(0x1234_5678 ^ seed as u32, conn_cfg(ccfg), upper, false, Instant::ZERO).unwrap();
    let cids: Vec<u32> = (0..STREAMS).map(|_| client.open_stream().unwrap()).collect();
    let mut listener = Endpoint::default();
    let upper = Upper::Smux { role: Role::Server, version: case.smux_version };
    listener.listen(0, Arc::new(ListenConfig::new(conn_cfg(scfg), upper))).unwrap();
    let mut sids: Vec<u32> = Vec::new();
    let (mut up, mut down) = (Streams::new("up"), Streams::new("down"));

    let mut buf = vec![0u8; 1500];
    let mut meta = [RecvMeta::EMPTY];
    loop {
        let (now, ms) = (net.instant(), net.now());
        let mut progress = 0;
        // Client.
        while csock.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            let _ = client.handle_datagram(now, &mut buf[..meta[0].len]);
            progress += 1;
        }
        client.handle_timeout(now);
        progress += client.pump(now);
        progress += up.drive(&mut client, &cids);
        progress += client.pump(now);
        progress += transmit(&mut client, &mut csock, sa, now, &mut rng);
        // Server.
        while ssock.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            listener.handle_datagram(now, 0, meta[0].src, &mut buf[..meta[0].len]);
            progress += 1;
        }
        while listener.accept().is_some() {}
        for h in listener.handles() {
            let (_, addr) = listener.path(h).unwrap();
            let s = listener.get_mut(h).unwrap();
            s.handle_timeout(now);
            progress += s.pump(now);
            while let Some(e) = s.poll_event() {
                if let ConnEvent::StreamOpened(id) = e {
                    sids.push(id);
                }
                assert!(!matches!(e, ConnEvent::Closed { .. }), "{e:?}");
            }
            // The server sends its data on the streams the client opened, in the same order.
            progress += down.drive(s, &sids);
            // What the client sent, checked on the server side.
            progress += s.pump(now);
            progress += transmit(s, &mut ssock, addr, now, &mut rng);
        }
        while let Some(e) = client.poll_event() {
            assert!(!matches!(e, ConnEvent::Closed { .. }), "{e:?}");
        }
        if up.done() && down.done() {
            break;
        }
        if progress == 0 {
            let mut next = [client.poll_timeout(now)]
                .into_iter()
                .chain(listener.iter_mut().map(|(_, s)| s.poll_timeout(now)))
                .filter_map(|t| until(now, t))
                .min()
                .unwrap_or(1000);
            if let Some(d) = net.next_delivery_ms() {
                next = next.min(d.saturating_sub(u64::from(ms)));
            }
            net.advance_to(u64::from(ms) + next.max(1));
        }
        assert!(
            net.now() < 3_600_000,
            "{}: stalled at up {:?} down {:?}",
            case.name,
            up.got.iter().map(Vec::len).collect::<Vec<_>>(),
            down.got.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    // `up` is what the client sent; the server's `down.got` must equal it, and the other way round.
    for i in 0..STREAMS {
        assert!(down.got[i] == up.out[i], "{}: stream {i} client -> server differs", case.name);
        assert!(up.got[i] == down.out[i], "{}: stream {i} server -> client differs", case.name);
    }
    let snmp = listener.snmp();
    let retrans = snmp.retrans_segs + client.snmp().retrans_segs;
    if matches!(case.link.loss, Loss::None) && case.link.reorder == 0.0 {
        assert_eq!(retrans, 0, "{}: nothing lost or reordered, nothing retransmitted", case.name);
    }
    if case.fec && !matches!(case.link.loss, Loss::None) {
        assert!(snmp.fec_recovered + client.snmp().fec_recovered > 0, "{}: FEC rebuilt nothing", case.name);
    }
    eprintln!(
        "{:40} {:>7} ms virtual  retrans {:>6}  fec recovered {:>5}",
        case.name,
        net.now(),
        snmp.retrans_segs + client.snmp().retrans_segs,
        snmp.fec_recovered + client.snmp().fec_recovered
    );
}

fn conditions() -> Vec<(&'static str, Link)> {
    let base = Link { delay_ms: 20, jitter_ms: 1, queue_bytes: 4 << 20, ..Link::default() };
    vec![
        ("clean", base),
        ("1% loss", Link { loss: Loss::Bernoulli(0.01), ..base }),
        ("10% loss", Link { loss: Loss::Bernoulli(0.10), ..base }),
        ("30% bursty loss", Link { loss: Loss::bursty(0.30, 4.0), ..base }),
        ("5% reordering", Link { reorder: 0.05, reorder_ms: 15, ..base }),
        ("5% duplication", Link { duplicate: 0.05, ..base }),
    ]
}

fn matrix(mode: Mode, mode_name: &str) {
    let methods = [Method::Aes128, Method::Salsa20, Method::Aes128Gcm, Method::Null, Method::Aes, Method::Xor];
    let mut i = 0;
    for (cond, link) in conditions() {
        for fec in [true, false] {
            let name: &'static str =
                Box::leak(format!("{mode_name} {cond} fec={}", if fec { "10/3" } else { "off" }).into_boxed_str());
            let case = Case {
                name,
                link,
                mode,
                fec,
                method: methods[i % methods.len()],
                compress: i % 3 != 2,
                smux_version: 1 + (i % 2) as u8,
            };
            run(case, 1000 + i as u64);
            i += 1;
        }
    }
}

#[test]
fn whole_stack_fast3() {
    matrix(Mode::Fast3, "fast3");
}

#[test]
fn whole_stack_normal() {
    matrix(Mode::Normal, "normal");
}
