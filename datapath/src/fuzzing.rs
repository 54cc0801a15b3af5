//! Fuzz harness bodies, shared by the cargo-fuzz targets (`tools/fuzz`) and the corpus replay tests.

use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};

use crate::proto::kcp::{Kcp, Mode};
use crate::proto::session::{Listener, SessionConfig};
use crate::proto::snappy;

/// Records of `len u16 LE | byte | bytes` (the byte: a time step or an address).
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 3 {
            return None;
        }
        let len = u16::from_le_bytes([data[0], data[1]]) as usize % 1600;
        let tag = data[2];
        data = &data[3..];
        let rec = &data[..len.min(data.len())];
        data = &data[rec.len()..];
        Some((tag, rec))
    })
}

/// Arbitrary datagrams into a KCP (segment input), then into a listener whose sessions run the whole
/// receive path (FEC demux and recovery, KCP, transmit). Nothing may panic; reads stay in bounds.
pub fn kcp_input(data: &[u8]) {
    let Some((&cfg, rest)) = data.split_first() else { return };
    let mut k = Kcp::new(u32::from_le_bytes([0x44, 0x33, 0x22, 0x11]), 0);
    k.set_stream(cfg & 1 == 1);
    k.set_nodelay(Mode::Fast3.nodelay());
    k.set_wndsize(1 + u32::from(cfg >> 4), 1 + u32::from(cfg & 0x0f));
    let mut now = 0u32;
    let mut out = vec![0u8; k.mtu()];
    let mut rx = [0u8; 3000];
    for (tag, rec) in records(rest) {
        now = now.wrapping_add(u32::from(tag) * 7);
        let _ = k.input(now, rec, tag & 1 == 0);
        while let Some(n) = k.poll_transmit(now, &mut out) {
            assert!(n <= k.mtu());
        }
        let _ = k.recv(&mut rx);
        if tag & 2 == 0 {
            let _ = k.send(&rx[..usize::from(tag)]);
        }
    }
    // The same bytes as datagrams from a few addresses into a listener (null crypto: no CRC in the way).
    let method = if cfg & 2 == 0 { Method::Null } else { Method::None };
    let crypto = Arc::new(PacketCrypto::from_password(method, "fuzz"));
    let scfg = SessionConfig {
        data_shards: if cfg & 4 == 0 { 10 } else { 0 },
        parity_shards: if cfg & 4 == 0 { 3 } else { 0 },
        ..SessionConfig::kcptun_server()
    };
    let mut l: Listener<u8> = Listener::new(crypto, scfg).expect("valid configuration");
    let mut rng = NonceGen::from_seed([0; 32]);
    let mut buf = vec![0u8; 1600];
    let mut tx = vec![0u8; 1500];
    for (tag, rec) in records(rest) {
        now = now.wrapping_add(1);
        buf[..rec.len()].copy_from_slice(rec);
        let _ = l.handle_datagram(now, tag % 4, &mut buf[..rec.len()]);
        while l.accept().is_some() {}
        for (_, s) in l.sessions_mut() {
            let _ = s.recv(&mut rx);
            while let Some(n) = s.poll_transmit(now, &mut rng, &mut tx) {
                assert!(n <= tx.len());
            }
        }
    }
}

/// An arbitrary byte stream into the snappy framing decoder, fed in pieces; decoded chunks never exceed
/// 64 KiB; whatever decodes re-encodes and decodes back to the same bytes.
pub fn snappy_frames(data: &[u8]) {
    let mut d = snappy::Decoder::new();
    let mut decoded = Vec::new();
    for piece in data.chunks(1 + data.first().copied().unwrap_or(0) as usize) {
        d.feed(piece);
        while let Ok(Some(x)) = d.decode() {
            assert!(x.len() <= snappy::MAX_BLOCK);
            decoded.extend_from_slice(x);
        }
    }
    let mut enc = snappy::Encoder::new();
    let mut framed = Vec::new();
    enc.encode(&decoded, &mut framed);
    let mut d = snappy::Decoder::new();
    d.feed(&framed);
    let mut again = Vec::new();
    while let Some(x) = d.decode().expect("own encoding decodes") {
        again.extend_from_slice(x);
    }
    assert_eq!(again, decoded);
}
