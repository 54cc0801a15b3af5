//! The session pipeline over the simulator (byte streams, no smux), and the endpoint's demux rules.

use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::io::sim::{Link, Loss, SimNet};
use kcpd_datapath::io::{DatagramIo, RecvMeta, Transmit};
use kcpd_datapath::proto::conn::{ConnConfig, Upper};
use kcpd_datapath::proto::endpoint::{DatagramEvent, DropReason, Endpoint, ListenConfig};
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::{Session, SessionConfig};
use kcpd_time::Instant;
use kcpd_vectors::det_bytes;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

fn cfg(mode: Mode, ds: usize, ps: usize) -> SessionConfig {
    SessionConfig { nodelay: mode.nodelay(), data_shards: ds, parity_shards: ps, ..SessionConfig::kcptun_client() }
}

/// Send `data` client -> server over `link` (both directions), return (virtual ms, client, listener).
fn transfer(
    method: Method,
    c: SessionConfig,
    s: SessionConfig,
    link: Link,
    data: &[u8],
    seed: u64,
) -> (u64, Session, Endpoint) {
    let crypto = Arc::new(PacketCrypto::from_password(method, "sim"));
    let net = SimNet::new(seed, link);
    let (ca, sa) = (addr(1, 4000), addr(2, 29900));
    let (mut csock, mut ssock) = (net.socket(ca), net.socket(sa));
    let mut client = Session::new(0xdead_beef, crypto.clone(), &c, Instant::ZERO).unwrap();
    let mut listener = listening(crypto, s);
    let mut rng = NonceGen::from_seed([seed as u8; 32]);
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 1500];
    let mut rx = vec![0u8; 65536];
    let mut meta = [RecvMeta::EMPTY];
    let mut ms: u64 = 0;
    while got.len() < data.len() {
        let now = Instant::from_millis(ms);
        if sent < data.len() {
            let n = client.send(&data[sent..]);
            if n > 0 {
                client.flush();
                sent += n;
            }
        }
        while let Some(n) = client.poll_transmit(now, &mut rng, &mut buf) {
            csock.send_batch(&[Transmit::new(sa, &buf[..n])]).unwrap();
        }
        while ssock.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            let from = meta[0].src;
            listener.handle_datagram(now, 0, from, &mut buf[..meta[0].len]);
        }
        let _ = listener.accept();
        let mut out = Vec::new();
        for h in listener.handles() {
            let (_, a) = listener.path(h).unwrap();
            let s = listener.get_mut(h).unwrap();
            while let Ok(n) = s.stream_read(None, &mut rx) {
                got.extend_from_slice(&rx[..n]);
            }
            let mut arena = vec![0u8; 1500];
            let mut lens = [0usize; 1];
            while s.poll_transmit(now, &mut rng, &mut arena, &mut lens) == 1 {
                out.push((a, arena[..lens[0]].to_vec()));
            }
        }
        for (a, p) in out {
            ssock.send_batch(&[Transmit::new(a, &p)]).unwrap();
        }
        while csock.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
            let _ = client.handle_datagram(now, &mut buf[..meta[0].len]);
        }
        // Jump to the next event.
        let next_kcp = [client.poll_timeout()]
            .into_iter()
            .chain(listener.iter_mut().map(|(_, s)| s.session().poll_timeout()))
            .flatten()
            .map(|t| (t - now).as_micros().div_ceil(1000) + ms)
            .min();
        let next = [next_kcp, net.next_delivery_ms()].into_iter().flatten().min().unwrap_or(ms + 1);
        ms = next.max(ms + 1).min(ms + 100);
        net.advance_to(ms);
        assert!(ms < 3_600_000, "stalled at {} of {}", got.len(), data.len());
    }
    assert_eq!(got, data, "{method}");
    (ms, client, listener)
}

#[test]
fn every_method_moves_a_megabyte_under_loss_with_and_without_fec() {
    let data = det_bytes("session", 1 << 20);
    let link = Link { delay_ms: 10, jitter_ms: 2, loss: Loss::Bernoulli(0.05), ..Default::default() };
    for (i, method) in Method::ALL.into_iter().enumerate() {
        let (ds, ps) = if i % 2 == 0 { (10, 3) } else { (0, 0) };
        let (_, client, listener) =
            transfer(method, cfg(Mode::Fast3, ds, ps), cfg(Mode::Fast3, ds, ps), link, &data, i as u64);
        let s = listener.snmp();
        assert_eq!(s.passive_opens, 1);
        assert_eq!(s.bytes_received, data.len() as u64);
        let retrans = client.snmp().retrans_segs;
        if ds == 0 {
            assert!(retrans > 0, "{method}: without FEC, 5% loss costs retransmissions");
        } else {
            // FEC 10/3 may rebuild every loss of a run, leaving nothing to retransmit.
            assert!(retrans + s.fec_recovered > 0, "{method}: the losses were repaired");
        }
        if ds > 0 {
            assert!(s.fec_recovered > 0, "{method}: FEC rebuilt some of the losses");
        }
    }
}

#[test]
fn fec_only_binds_the_sender() {
    // The client sends 10/3, the server sends none; each end decodes what it gets.
    let data = det_bytes("fec-one-side", 512 << 10);
    let link = Link { loss: Loss::Bernoulli(0.03), ..Default::default() };
    let (_, client, listener) =
        transfer(Method::Aes128, cfg(Mode::Fast2, 10, 3), cfg(Mode::Fast2, 0, 0), link, &data, 9);
    assert!(listener.snmp().fec_recovered > 0);
    assert_eq!(client.snmp().fec_parity_shards, 0, "the server sent no parity");
}

const T0: Instant = Instant::ZERO;

fn sealed(crypto: &PacketCrypto, plain: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; crypto.header_len()];
    b.extend_from_slice(plain);
    b.resize(b.len() + crypto.trailer_len(), 0);
    crypto.seal(&mut NonceGen::from_seed([5; 32]), &mut b).unwrap();
    b
}

fn push(conv: u32, sn: u32) -> Vec<u8> {
    let mut v = vec![0u8; 24 + 3];
    kcpd_datapath::proto::kcp::Header { conv, cmd: 81, frg: 0, wnd: 32, ts: 0, sn, una: 0, len: 3 }.write(&mut v);
    v
}

/// An endpoint listening on socket 0 for raw KCP conversations.
fn listening(crypto: Arc<PacketCrypto>, s: SessionConfig) -> Endpoint {
    let mut ep = Endpoint::default();
    let cfg = ListenConfig::new(Arc::new(ConnConfig::new(crypto, s)), Upper::Raw);
    ep.listen(0, Arc::new(cfg)).unwrap();
    ep
}

fn conv_at(l: &Endpoint, a: SocketAddr) -> Option<u32> {
    l.lookup(0, a).and_then(|h| l.get(h)).map(|c| c.conv())
}

#[test]
fn endpoint_demux_rules_spec_9_9() {
    let crypto = Arc::new(PacketCrypto::from_password(Method::Aes, "k"));
    let mut l = listening(crypto.clone(), SessionConfig::kcptun_server());
    let a = |n: u32| addr(1, n as u16);
    // New address + PUSH: a session with that conv.
    let DatagramEvent::New(h) = l.handle_datagram(T0, 0, a(1), &mut sealed(&crypto, &push(7, 0))) else { panic!() };
    assert_eq!(conv_at(&l, a(1)), Some(7));
    assert_eq!(l.accept(), Some(h));
    // Same address, same conv: fed.
    assert_eq!(l.handle_datagram(T0, 0, a(1), &mut sealed(&crypto, &push(7, 1))), DatagramEvent::Existing(h));
    // Same address, another conv with sn 0: replaced; with sn != 0: dropped.
    let d = l.handle_datagram(T0, 0, a(1), &mut sealed(&crypto, &push(8, 5)));
    assert_eq!(d, DatagramEvent::Dropped(DropReason::ConvMismatch));
    assert!(matches!(l.handle_datagram(T0, 0, a(1), &mut sealed(&crypto, &push(8, 0))), DatagramEvent::New(_)));
    let (old, gone, _) = l.poll_retired().expect("the replaced conversation");
    assert_eq!((old, gone.conv()), (h, 7));
    assert_eq!(conv_at(&l, a(1)), Some(8));
    // A parity-only datagram never creates a session.
    let mut parity = vec![0u8; 40];
    kcpd_fec::wire::write_header(&mut parity, 3, kcpd_fec::wire::TYPE_PARITY);
    let d = l.handle_datagram(T0, 0, a(2), &mut sealed(&crypto, &parity));
    assert_eq!(d, DatagramEvent::Dropped(DropReason::NoConv));
    // An FEC data shard does (conv at offset 8).
    let mut data = vec![0u8; 8];
    kcpd_fec::wire::write_header(&mut data, 0, kcpd_fec::wire::TYPE_DATA);
    data.extend_from_slice(&push(9, 0));
    assert!(matches!(l.handle_datagram(T0, 0, a(3), &mut sealed(&crypto, &data)), DatagramEvent::New(_)));
    assert_eq!(conv_at(&l, a(3)), Some(9));
    // Bad CRC (wrong key): nothing.
    let other = PacketCrypto::from_password(Method::Aes, "other");
    let d = l.handle_datagram(T0, 0, a(4), &mut sealed(&other, &push(1, 0)));
    assert!(matches!(d, DatagramEvent::Dropped(DropReason::Crypto(_))));
    assert!(conv_at(&l, a(4)).is_none());
    assert_eq!(l.snmp().in_csum_errors, 1);
    // The accept backlog holds 128: the 129th waiting session is refused.
    for n in 100..100 + 128 {
        let d = l.handle_datagram(T0, 0, a(n), &mut sealed(&crypto, &push(n, 0)));
        assert!(matches!(d, DatagramEvent::New(_) | DatagramEvent::Dropped(DropReason::Backlog)));
    }
    let d = l.handle_datagram(T0, 0, a(999), &mut sealed(&crypto, &push(999, 0)));
    assert_eq!(d, DatagramEvent::Dropped(DropReason::Backlog));
    let snmp = l.snmp();
    assert_eq!(snmp.curr_estab as usize, l.len());
    assert_eq!(snmp.max_conn as usize, l.len());
}

// ---- regressions from the review ----

/// Parity of a completed group left in the encoder when the caller's lens ran out is due at once.
#[test]
fn pending_parity_makes_the_session_due() {
    let crypto = Arc::new(PacketCrypto::from_password(Method::Aes, "x"));
    let cfg = SessionConfig {
        nodelay: Mode::Fast.nodelay(),
        data_shards: 2,
        parity_shards: 1,
        ..SessionConfig::kcptun_client()
    };
    let mut s = Session::new(1, crypto, &cfg, T0).unwrap();
    let mut rng = NonceGen::from_seed([1; 32]);
    s.send(&vec![7u8; 2 * 1200]);
    s.flush();
    let mut arena = vec![0u8; 64 * 1500];
    let mut lens = [0usize; 2];
    let n = s.poll_transmit_packed(T0, &mut rng, &mut arena, &mut lens);
    assert_eq!(n, 2, "two data shards fill lens");
    let t = s.poll_timeout();
    let mut lens = [0usize; 8];
    let n2 = s.poll_transmit_packed(T0, &mut rng, &mut arena, &mut lens);
    assert_eq!(t, Some(T0), "parity pending: due now");
    assert_eq!(n2, 1, "the parity");
}

#[test]
fn closed_session_gauges_leave_the_totals() {
    let crypto = Arc::new(PacketCrypto::from_password(Method::Null, "x"));
    let cfg = SessionConfig::kcptun_server();
    let mut l = listening(crypto.clone(), cfg.clone());
    // A client session produces one FEC data shard (its first PUSH).
    let mut c = Session::new(5, crypto, &SessionConfig::kcptun_client(), T0).unwrap();
    let mut rng = NonceGen::from_seed([1; 32]);
    c.send(b"hello");
    c.flush();
    let mut buf = vec![0u8; 1500];
    let n = c.poll_transmit(T0, &mut rng, &mut buf).unwrap();
    let DatagramEvent::New(h) = l.handle_datagram(T0, 0, addr(1, 1), &mut buf[..n]) else { panic!() };
    assert_eq!(l.snmp().fec_shard_set, 1);
    l.remove(h);
    assert_eq!(l.snmp().fec_shard_set, 0, "gauge of a closed session kept forever");
}
