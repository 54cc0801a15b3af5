//! Property tests: round trips for every method and length, and the error-propagation rules of spec §9.4.

use kcpd_crypto::{Method, NonceGen, OpenError, PacketCrypto, derive_key};
use proptest::prelude::*;

fn all() -> Vec<PacketCrypto> {
    let pass = derive_key(b"proptest");
    Method::ALL.iter().map(|&m| PacketCrypto::new(m, &pass)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn seal_open_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..1500), seed in any::<[u8; 32]>()) {
        let mut rng = NonceGen::from_seed(seed);
        for c in all() {
            let mut buf = vec![0u8; c.header_len() + payload.len() + c.trailer_len()];
            buf[c.header_len()..c.header_len() + payload.len()].copy_from_slice(&payload);
            c.seal(&mut rng, &mut buf).unwrap();
            let r = c.open(&mut buf).unwrap();
            prop_assert_eq!(&buf[r], &payload[..], "{}", c.method());
        }
    }

    #[test]
    fn batch_equals_single(lens in proptest::collection::vec(20usize..1500, 1..40), seed in any::<[u8; 32]>()) {
        for c in all() {
            let plains: Vec<Vec<u8>> = lens.iter().enumerate()
                .map(|(i, &l)| (0..l + c.trailer_len()).map(|j| (i * 131 + j * 7) as u8).collect()).collect();
            let mut single = plains.clone();
            let mut rng = NonceGen::from_seed(seed);
            for b in &mut single { c.seal(&mut rng, b).unwrap(); }
            let mut batch = plains.clone();
            let mut rng = NonceGen::from_seed(seed);
            let mut refs: Vec<&mut [u8]> = batch.iter_mut().map(|b| b.as_mut_slice()).collect();
            c.seal_batch(&mut rng, &mut refs).unwrap();
            prop_assert_eq!(&single, &batch, "{}", c.method());
        }
    }

    /// Any bytes at all, any length up to 64 KiB: a typed result, never a panic.
    #[test]
    fn open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), extra in 0usize..65536) {
        for c in all() {
            let mut d = data.clone();
            let _ = c.open(&mut d);
            let mut big = vec![0xa5u8; extra];
            let _ = c.open(&mut big);
        }
    }

    /// A random bit flip is dropped unless it can only touch the (unchecked) nonce: spec §9.4.
    #[test]
    fn bit_flips_follow_spec_9_4(payload in proptest::collection::vec(any::<u8>(), 8..200), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut rng = NonceGen::from_seed([7; 32]);
        for c in all() {
            let m = c.method();
            if m == Method::Null { continue; }
            let mut buf = vec![0u8; c.header_len() + payload.len() + c.trailer_len()];
            buf[c.header_len()..c.header_len() + payload.len()].copy_from_slice(&payload);
            c.seal(&mut rng, &mut buf).unwrap();
            let i = pos.index(buf.len());
            buf[i] ^= 1 << bit;
            let res = c.open(&mut buf);
            let accepted = match m {
                Method::Aes128Gcm => false,
                Method::None | Method::Xor => i < 16,
                Method::Salsa20 => (8..16).contains(&i),
                Method::Blowfish | Method::Cast5 | Method::TripleDes | Method::Tea | Method::Xtea => i < 8,
                _ => false, // 16-byte blocks: a flip in 0..16 garbles plaintext 16..32 (CRC/header)
            };
            if accepted {
                prop_assert!(res.is_ok(), "{} flip at {} should pass", m, i);
            } else {
                prop_assert!(matches!(res, Err(OpenError::Checksum | OpenError::Auth)), "{} flip at {}: {:?}", m, i, res);
            }
        }
    }
}

#[test]
fn too_short_is_typed_for_every_method() {
    for c in all() {
        for len in 0..c.overhead() {
            let mut d = vec![0u8; len];
            assert_eq!(c.open(&mut d), Err(OpenError::TooShort { len, min: c.overhead() }), "{}", c.method());
            let mut rng = NonceGen::from_seed([1; 32]);
            assert!(c.seal(&mut rng, &mut d).is_err());
        }
    }
}
