//! The process memory budget against a hostile peer: received data it makes the server hold stays within
//! the budget, sessions it asks for beyond it are refused, and an honest session still gets its data
//! through. Its own test binary: the budget is process-wide.

use std::net::SocketAddr;
use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::proto::budget;
use kcpd_datapath::proto::conn::{ConnConfig, Upper};
use kcpd_datapath::proto::endpoint::{DatagramEvent, DropReason, Endpoint, ListenConfig, Refusal};
use kcpd_datapath::proto::front::{FrontConfig, FrontDoor};
use kcpd_datapath::proto::kcp::Header;
use kcpd_datapath::proto::session::{Session, SessionConfig};
use kcpd_time::{Duration, Instant};

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

/// A PUSH of 1376 bytes (null crypto: the datagram is the segment).
fn push(conv: u32, sn: u32) -> Vec<u8> {
    let mut v = vec![0x5a; 24 + 1376];
    Header { conv, cmd: 81, frg: 0, wnd: 1024, ts: sn, sn, una: 0, len: 1376 }.write(&mut v);
    v
}

/// Drive `client` ↔ the endpoint's conversation from `honest` until `data` has arrived (or give up).
fn transfer(ep: &mut Endpoint, client: &mut Session, honest: SocketAddr, now: &mut Instant, data: &[u8]) -> Vec<u8> {
    let mut rng = NonceGen::from_seed([1; 32]);
    client.send(data);
    client.flush();
    let (mut got, mut buf, mut rx) = (Vec::new(), vec![0u8; 1500], vec![0u8; 65536]);
    let mut h = ep.lookup(0, honest);
    for _ in 0..20_000 {
        *now += Duration::from_millis(5);
        let mut out = Vec::new();
        while let Some(n) = client.poll_transmit(*now, &mut rng, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        for mut d in out {
            if let DatagramEvent::New(x) | DatagramEvent::Existing(x) = ep.handle_datagram(*now, 0, honest, &mut d) {
                h = Some(x);
            }
            while ep.accept().is_some() {}
        }
        if let Some(c) = h.and_then(|h| ep.get_mut(h)) {
            c.handle_timeout(*now);
            while let Ok(n @ 1..) = c.stream_read(None, &mut rx) {
                got.extend_from_slice(&rx[..n]);
            }
            let (mut arena, mut lens) = (vec![0u8; 16 * 1500], [0usize; 16]);
            loop {
                let k = c.poll_transmit(*now, &mut rng, &mut arena, &mut lens);
                let mut off = 0;
                for &l in &lens[..k] {
                    let _ = client.handle_datagram(*now, &mut arena[off..off + l]);
                    off += l;
                }
                if k < lens.len() {
                    break;
                }
            }
        }
        if got.len() >= data.len() {
            break;
        }
    }
    got
}

#[test]
fn a_hostile_peer_cannot_make_the_server_hold_more_than_the_budget() {
    const BUDGET: usize = 8 << 20;
    budget::set_limit(BUDGET);
    let crypto = Arc::new(PacketCrypto::from_password(Method::Null, "k"));
    let front = Arc::new(FrontDoor::new(FrontConfig { new_per_source: (0, 0), ..FrontConfig::default() }));
    let mut ep = Endpoint::new(front.clone());
    let nofec =
        |c: SessionConfig| SessionConfig { data_shards: 0, parity_shards: 0, snd_wnd: 1024, rcv_wnd: 1024, ..c };
    let conn = ConnConfig::new(crypto.clone(), nofec(SessionConfig::kcptun_server()));
    ep.listen(0, Arc::new(ListenConfig::new(Arc::new(conn), Upper::Raw))).unwrap();
    let mut now = Instant::ZERO;
    // An honest session, open before the attack.
    let honest = addr(2, 2000);
    let mut client = Session::new(7, crypto.clone(), &nofec(SessionConfig::kcptun_client()), now).unwrap();
    assert_eq!(transfer(&mut ep, &mut client, honest, &mut now, b"hello"), b"hello");
    // 40 hostile sessions, each leaving sn 0 out and sending 1..1023: nothing is ever readable, so every
    // segment would wait in the reorder buffer (40 × 1023 × 1.4 KB ≈ 57 MB without a budget).
    let mut refused = 0;
    for k in 0..40u8 {
        for sn in 1..1024 {
            match ep.handle_datagram(now, 0, addr(1, 1000 + u16::from(k)), &mut push(100 + u32::from(k), sn)) {
                DatagramEvent::Dropped(DropReason::Refused(Refusal::Memory)) => refused += 1,
                DatagramEvent::New(_) => while ep.accept().is_some() {},
                _ => {}
            }
        }
        now += Duration::from_millis(10);
    }
    let held = budget::held();
    assert!(held <= BUDGET + (256 << 10), "{held} bytes held with a budget of {BUDGET}");
    assert!(held >= BUDGET / 2, "the hostile data did not reach the budget ({held}): the test proves nothing");
    assert!(refused > 0, "new sessions were admitted past the budget");
    assert!(front.stats().refused_memory > 0);
    let drops: u64 = ep.iter_mut().map(|(_, c)| c.session().kcp().stats().budget_drops).sum();
    assert!(drops > 0 && budget::drops() >= drops, "counted per session ({drops}) and process-wide");

    // The honest session still delivers, in order, while the budget is spent (one segment at a time as
    // its reader drains it); nothing more is held for it.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let got = transfer(&mut ep, &mut client, honest, &mut now, &data);
    assert!(got == data, "the honest session got {} of {} bytes, or wrong ones", got.len(), data.len());
    assert!(budget::held() <= BUDGET + (256 << 10));

    // The attackers' sessions end: their data goes back to the budget and new sessions are welcome again.
    let keep = ep.lookup(0, honest);
    for h in ep.handles() {
        if Some(h) != keep {
            ep.remove(h);
        }
    }
    assert!(budget::held() < 1 << 20, "{} bytes still held", budget::held());
    let ev = ep.handle_datagram(now, 0, addr(3, 1), &mut push(999, 0));
    assert!(matches!(ev, DatagramEvent::New(_)), "{ev:?}");
}
