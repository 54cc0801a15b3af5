//! Fuzz harness bodies, shared by the cargo-fuzz targets (`tools/fuzz`) and the corpus replay test that
//! CI runs on stable.

use crate::wire::{self, Class};
use crate::{Decoder, Input};

/// Feed a stream of packets to a decoder. Input layout: byte 0 picks the configured (ds, ps) or none;
/// then records of `len u16 LE | time delta u8 | bytes`. Checks that nothing panics and every delivered
/// slice is consistent.
pub fn decode_stream(data: &[u8]) {
    let Some((&cfg, mut rest)) = data.split_first() else { return };
    let params = match cfg % 6 {
        0 => None,
        1 => Some((10, 3)),
        2 => Some((1, 1)),
        3 => Some((3, 2)),
        4 => Some((1 + (cfg as usize >> 3) % 20, 1 + (cfg as usize >> 5))),
        _ => Some((200, 56)),
    };
    let mut dec = Decoder::new(params);
    let mut now = kcpd_time::Instant::ZERO;
    while rest.len() >= 3 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize % 1600;
        now += kcpd_time::Duration::from_millis(u64::from(rest[2]) * 300);
        rest = &rest[3..];
        let pkt = &rest[..len.min(rest.len())];
        rest = &rest[pkt.len()..];
        match dec.input(now, pkt) {
            Ok(Input::Data(kcp)) => {
                assert_eq!(wire::classify(pkt), Class::Data);
                assert_eq!(kcp, &pkt[8..]);
            }
            Ok(Input::Parity) => assert_eq!(wire::classify(pkt), Class::Parity),
            Ok(Input::Oob) => assert_eq!(wire::classify(pkt), Class::Oob),
            Err(_) => {}
        }
        while let Some(r) = dec.poll_recovered() {
            assert_eq!(Some(r.kcp), wire::recovered_payload(r.shard));
            assert!(r.shard.len() <= wire::MAX_SHARD);
        }
    }
}
