//! A server facing the internet: what a hostile peer can and cannot make an endpoint do.

use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::{Method, PacketCrypto};
use kcpd_datapath::proto::conn::{ConnConfig, Upper};
use kcpd_datapath::proto::endpoint::{DatagramEvent, DropReason, Endpoint, ListenConfig, MAX_DATAGRAM};
use kcpd_datapath::proto::kcp::Header;
use kcpd_datapath::proto::session::SessionConfig;
use kcpd_time::Instant;

const T0: Instant = Instant::ZERO;

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

/// An endpoint listening on socket 0 for raw conversations, no crypto (the easiest target).
fn listening(method: Method) -> (Endpoint, Arc<PacketCrypto>) {
    let crypto = Arc::new(PacketCrypto::from_password(method, "k"));
    let mut ep = Endpoint::default();
    let conn = ConnConfig::new(crypto.clone(), SessionConfig::kcptun_server());
    ep.listen(0, Arc::new(ListenConfig { conn: Arc::new(conn), upper: Upper::Raw })).unwrap();
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
