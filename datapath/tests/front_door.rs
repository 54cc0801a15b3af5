//! A server facing the internet: what a hostile peer can and cannot make an endpoint do.

use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::proto::conn::{ConnConfig, Upper};
use kcpd_datapath::proto::endpoint::{DatagramEvent, DropReason, Endpoint, ListenConfig, MAX_DATAGRAM, Refusal};
use kcpd_datapath::proto::front::{FrontConfig, FrontDoor};
use kcpd_datapath::proto::kcp::Header;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_time::{Duration, Instant};

const T0: Instant = Instant::ZERO;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

/// An endpoint listening on socket 0 for raw conversations, no crypto (the easiest target).
fn listening(method: Method) -> (Endpoint, Arc<PacketCrypto>) {
    let crypto = Arc::new(PacketCrypto::from_password(method, "k"));
    let mut ep = Endpoint::default();
    let conn = ConnConfig::new(crypto.clone(), SessionConfig::kcptun_server());
    ep.listen(0, Arc::new(ListenConfig::new(Arc::new(conn), Upper::Raw))).unwrap();
    (ep, crypto)
}

/// A PUSH of `payload` bytes as one datagram (null crypto: no header).
fn push(conv: u32, sn: u32, payload: usize) -> Vec<u8> {
    let mut v = vec![0u8; 24 + payload];
    Header { conv, cmd: 81, frg: 0, wnd: 1024, ts: 0, sn, una: 0, len: payload as u32 }.write(&mut v);
    v
}

#[test]
fn datagrams_over_kcp_gos_limit_are_dropped_unopened() {
    let (mut ep, _) = listening(Method::Null);
    // A 60 KB segment (what a 64 KiB receive buffer lets through): no session, counted.
    let mut big = push(7, 0, 60_000);
    assert_eq!(ep.handle_datagram(T0, 0, addr(1, 1), &mut big), DatagramEvent::Dropped(DropReason::Size));
    assert_eq!(ep.len(), 0);
    assert_eq!(ep.stats().oversize, 1);
    assert_eq!(ep.snmp().in_errs, 1);
    // One byte over the limit: the same.
    let mut over = push(7, 0, MAX_DATAGRAM + 1 - 24);
    assert_eq!(ep.handle_datagram(T0, 0, addr(1, 1), &mut over), DatagramEvent::Dropped(DropReason::Size));
    assert_eq!(ep.stats().oversize, 2);
    // Exactly the limit (a peer with --mtu 1500): accepted, whatever our own MTU.
    let mut max = push(7, 0, MAX_DATAGRAM - 24);
    assert!(matches!(ep.handle_datagram(T0, 0, addr(1, 1), &mut max), DatagramEvent::New(_)));
}

/// A first datagram as a kcp-go client sends it: `conv`'s sn 0, sealed with a fresh nonce; a
/// retransmission differs in its `ts` (`seed` here).
fn first_datagram(crypto: &PacketCrypto, conv: u32, seed: u8) -> Vec<u8> {
    let mut plain = push(conv, 0, 32);
    plain[8..12].copy_from_slice(&u32::from(seed).to_le_bytes());
    let mut b = vec![0u8; crypto.header_len()];
    b.extend_from_slice(&plain);
    b.resize(b.len() + crypto.trailer_len(), 0);
    crypto.seal(&mut NonceGen::from_seed([seed; 32]), &mut b).unwrap();
    b
}

fn guarded(method: Method) -> (Endpoint, Arc<PacketCrypto>, Arc<FrontDoor>) {
    let crypto = Arc::new(PacketCrypto::from_password(method, "k"));
    let front = Arc::new(FrontDoor::default());
    let mut ep = Endpoint::new(front.clone());
    let conn = ConnConfig::new(crypto.clone(), SessionConfig::kcptun_server());
    ep.listen(0, Arc::new(ListenConfig::new(Arc::new(conn), Upper::Raw))).unwrap();
    (ep, crypto, front)
}

/// Feed a copy of `d` (the endpoint opens datagrams in place).
fn feed(ep: &mut Endpoint, now: Instant, from: SocketAddr, d: &[u8]) -> DatagramEvent {
    let ev = ep.handle_datagram(now, 0, from, &mut d.to_vec());
    while ep.accept().is_some() {}
    while ep.poll_retired().is_some() {}
    ev
}

#[test]
fn a_replayed_first_datagram_opens_no_session_from_any_port() {
    for method in [Method::Aes, Method::Aes128Gcm, Method::Tea, Method::Salsa20, Method::None] {
        let (mut ep, crypto, _) = guarded(method);
        let d = first_datagram(&crypto, 7, 1);
        assert!(matches!(feed(&mut ep, T0, addr(1, 1000), &d), DatagramEvent::New(_)), "{method:?}");
        for port in 2000..2050 {
            let ev = feed(&mut ep, T0 + Duration::from_millis(u64::from(port)), addr(9, port), &d);
            assert_eq!(ev, DatagramEvent::Dropped(DropReason::Replay), "{method:?} from port {port}");
        }
        assert_eq!(ep.len(), 1, "{method:?}");
        assert_eq!(ep.stats().replays, 50);
        // Inside the session too: the same datagram again from its own address is dropped.
        assert_eq!(feed(&mut ep, T0, addr(1, 1000), &d), DatagramEvent::Dropped(DropReason::Replay));
    }
}

#[test]
fn changed_nonce_bytes_do_not_make_a_replay_fresh() {
    // CFB64 ciphers: the first 8 nonce bytes decrypt to junk nobody checks, so a copy with them changed
    // still opens; the filter keys on what follows the nonce.
    for method in [Method::Tea, Method::Xtea, Method::Blowfish, Method::Cast5, Method::TripleDes, Method::None] {
        let (mut ep, crypto, _) = guarded(method);
        let d = first_datagram(&crypto, 7, 1);
        assert!(matches!(feed(&mut ep, T0, addr(1, 1000), &d), DatagramEvent::New(_)));
        let mut forged = d.clone();
        forged[0] ^= 0x5a;
        forged[3] ^= 0xff;
        let mut probe = forged.clone();
        assert!(crypto.open(&mut probe).is_ok(), "{method:?}: a changed first nonce block still opens");
        assert_eq!(feed(&mut ep, T0, addr(2, 1), &forged), DatagramEvent::Dropped(DropReason::Replay), "{method:?}");
        assert_eq!(ep.len(), 1);
    }
}

#[test]
fn past_the_replay_window_an_old_first_datagram_still_opens_nothing() {
    let (mut ep, crypto, front) = guarded(Method::Aes);
    let window = front.config().replay_window.unwrap();
    let d = first_datagram(&crypto, 7, 1);
    let DatagramEvent::New(h) = feed(&mut ep, T0, addr(1, 1000), &d) else { panic!() };
    ep.remove(h);
    // The client retransmits (a fresh datagram of the same conv) soon after its session here ended: as
    // kcp-go, a new session.
    let again = first_datagram(&crypto, 7, 2);
    let DatagramEvent::New(h) = feed(&mut ep, T0 + Duration::from_secs(5), addr(1, 1000), &again) else { panic!() };
    ep.remove(h);
    // Captured, and replayed once the filter has forgotten it: the conv record refuses it, from anywhere.
    let late = T0 + window + Duration::from_secs(6);
    assert_eq!(feed(&mut ep, late, addr(9, 1), &d), DatagramEvent::Dropped(DropReason::ConvReused));
    assert_eq!(feed(&mut ep, late, addr(1, 1000), &again), DatagramEvent::Dropped(DropReason::ConvReused));
    // (Now remembered again by the filter.)
    assert_eq!(feed(&mut ep, late, addr(9, 2), &d), DatagramEvent::Dropped(DropReason::Replay));
    assert_eq!(ep.len(), 0);
    assert_eq!(ep.stats().conv_reused, 2);
    // Another conv is welcome.
    assert!(matches!(feed(&mut ep, late, addr(9, 1), &first_datagram(&crypto, 8, 3)), DatagramEvent::New(_)));
}

#[test]
fn null_has_no_replay_filter() {
    let (mut ep, crypto, _) = guarded(Method::Null);
    let d = first_datagram(&crypto, 7, 1);
    assert!(matches!(feed(&mut ep, T0, addr(1, 1), &d), DatagramEvent::New(_)));
    assert!(matches!(feed(&mut ep, T0, addr(1, 1), &d), DatagramEvent::Existing(_)));
    assert_eq!(ep.stats().replays, 0);
}

#[test]
fn admission_refuses_past_the_caps_and_counts() {
    let crypto = Arc::new(PacketCrypto::from_password(Method::Aes, "k"));
    let front = Arc::new(FrontDoor::new(FrontConfig { max_sessions: 4, max_per_source: 2, ..FrontConfig::default() }));
    // Two shards' endpoints share the front door.
    let mut eps: Vec<Endpoint> = (0..2).map(|_| Endpoint::new(front.clone())).collect();
    for ep in &mut eps {
        let conn = ConnConfig::new(crypto.clone(), SessionConfig::kcptun_server());
        ep.listen(0, Arc::new(ListenConfig::new(Arc::new(conn), Upper::Raw))).unwrap();
    }
    let mut conv = 100;
    let mut open = |ep: &mut Endpoint, from: SocketAddr| {
        conv += 1;
        feed(ep, T0, from, &first_datagram(&crypto, conv, conv as u8))
    };
    assert!(matches!(open(&mut eps[0], addr(1, 1)), DatagramEvent::New(_)));
    assert!(matches!(open(&mut eps[1], addr(1, 2)), DatagramEvent::New(_)));
    let ev = open(&mut eps[0], addr(1, 3));
    assert_eq!(ev, DatagramEvent::Dropped(DropReason::Refused(Refusal::PerSource)));
    assert!(matches!(open(&mut eps[1], addr(2, 1)), DatagramEvent::New(_)));
    assert!(matches!(open(&mut eps[0], addr(3, 1)), DatagramEvent::New(_)));
    let ev = open(&mut eps[1], addr(4, 1));
    assert_eq!(ev, DatagramEvent::Dropped(DropReason::Refused(Refusal::Total)));
    assert_eq!(eps[0].len() + eps[1].len(), 4);
    // A session that ends frees its place.
    let h = eps[0].lookup(0, addr(1, 1)).unwrap();
    eps[0].remove(h);
    assert!(matches!(open(&mut eps[1], addr(1, 4)), DatagramEvent::New(_)));
    assert_eq!(front.stats().refused_total + front.stats().refused_per_source, 2);
}
