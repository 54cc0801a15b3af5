//! Property tests: the codec against the reed-solomon-erasure oracle, and the FEC layer's promise that
//! any <= ps losses per group are rebuilt byte-exact while more never yield a false shard.

use kcpd_fec::wire::Class;
use kcpd_fec::{Backend, Decoder, Encoder, Input, ParityRule, ReedSolomon};
use proptest::prelude::*;
use reed_solomon_erasure::galois_8::ReedSolomon as Oracle;

const T0: kcpd_time::Instant = kcpd_time::Instant::ZERO;

fn ms(x: u64) -> kcpd_time::Instant {
    kcpd_time::Instant::from_millis(x)
}

fn shards(ds: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    (0..ds)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn codec_matches_the_oracle(ds in 1usize..40, ps in 1usize..12, len in 1usize..300, seed in any::<u64>(), erase_seed in any::<u64>()) {
        let data = shards(ds, len, seed);
        let oracle = Oracle::new(ds, ps).unwrap();
        let mut all: Vec<Vec<u8>> = data.iter().cloned().chain((0..ps).map(|_| vec![0u8; len])).collect();
        oracle.encode(&mut all).unwrap();
        for b in Backend::available() {
            let mut rs = ReedSolomon::with_backend(ds, ps, b).unwrap();
            let mut parity = vec![vec![0u8; len]; ps];
            let d: Vec<&[u8]> = data.iter().map(|x| &x[..]).collect();
            let mut p: Vec<&mut [u8]> = parity.iter_mut().map(|x| &mut x[..]).collect();
            rs.encode(&d, &mut p).unwrap();
            prop_assert_eq!(&parity[..], &all[ds..], "{}", b);
            // Erase up to ps shards chosen from the seed, rebuild the data shards.
            let mut present = vec![true; ds + ps];
            let mut e = erase_seed;
            for _ in 0..ps {
                present[(e % (ds + ps) as u64) as usize] = false;
                e /= 7;
                e = e.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            }
            let mut got: Vec<Vec<u8>> = all.iter().zip(&present).map(|(s, &p)| if p { s.clone() } else { vec![0xaa; len] }).collect();
            let mut g: Vec<&mut [u8]> = got.iter_mut().map(|x| &mut x[..]).collect();
            rs.reconstruct_data(&mut g, &present).unwrap();
            prop_assert_eq!(&got[..ds], &all[..ds]);
        }
    }

    /// Whole FEC layer: random packet sizes, random losses, random reordering within a group.
    #[test]
    fn at_most_ps_losses_per_group_are_rebuilt_and_more_never_lie(
        ds in 1usize..14, ps in 1usize..5, groups in 1usize..6,
        sizes in proptest::collection::vec(1usize..1400, 1..80),
        losses in proptest::collection::vec(any::<u16>(), 0..40),
        seed in any::<u64>(),
    ) {
        let mut enc = Encoder::new(ds, ps, ParityRule::Always).unwrap();
        let mut pkts: Vec<(Class, Vec<u8>)> = Vec::new();
        let mut originals = Vec::new();
        for i in 0..groups * ds {
            let len = sizes[i % sizes.len()];
            let kcp = &shards(1, len, seed ^ i as u64)[0];
            originals.push(kcp.clone());
            let mut pkt = vec![0u8; 8 + len];
            pkt[8..].copy_from_slice(kcp);
            enc.encode(ms(i as u64), &mut pkt).unwrap();
            pkts.push((Class::Data, pkt));
            let mut buf = [0u8; 1500];
            while let Some(n) = enc.poll_parity(&mut buf).unwrap() {
                pkts.push((Class::Parity, buf[..n].to_vec()));
            }
        }
        let n = ds + ps;
        let lost: std::collections::BTreeSet<usize> = losses.iter().map(|&l| l as usize % pkts.len()).collect();
        // Reverse each group's order when the seed says so (reordering inside the window).
        let mut order: Vec<usize> = (0..pkts.len()).collect();
        if seed & 1 == 1 {
            for g in order.chunks_mut(n) {
                g.reverse();
            }
        }
        let mut dec = Decoder::new(Some((ds, ps)));
        let mut delivered = std::collections::BTreeSet::new();
        for i in order {
            if lost.contains(&i) {
                continue;
            }
            if let Input::Data(kcp) = dec.input(T0, &pkts[i].1).unwrap() {
                delivered.insert(kcp.to_vec());
            }
            while let Some(r) = dec.poll_recovered() {
                // Never a false shard: everything rebuilt is an original KCP payload.
                prop_assert!(originals.contains(&r.kcp.to_vec()), "false recovery");
                delivered.insert(r.kcp.to_vec());
            }
        }
        for g in 0..groups {
            let lost_here = (g * n..(g + 1) * n).filter(|i| lost.contains(i)).count();
            if lost_here <= ps {
                for k in &originals[g * ds..(g + 1) * ds] {
                    prop_assert!(delivered.contains(k), "group {} lost {} <= {} but a shard is missing", g, lost_here, ps);
                }
            }
        }
    }

    /// Arbitrary datagrams never panic the decoder, whatever it was configured or tuned to.
    #[test]
    fn decoder_survives_garbage(pkts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1600), 1..60), cfg in 0usize..4) {
        let params = [None, Some((10, 3)), Some((1, 1)), Some((3, 2))][cfg];
        let mut dec = Decoder::new(params);
        for mut p in pkts {
            if p.len() >= 6 && p[0] & 1 == 0 {
                p[4] = 0xf1 + (p[1] % 3);
                p[5] = 0;
            }
            let _ = dec.input(ms(u64::from(p.first().copied().unwrap_or(0)) * 1000), &p);
            while dec.poll_recovered().is_some() {}
        }
    }
}

/// `with_backend` builds a codec only on a kernel this CPU runs: every backend either builds (and is
/// available, and is the one used) or is refused as unsupported; every available one builds.
#[test]
fn with_backend_refuses_kernels_this_cpu_lacks() {
    for &b in Backend::ALL {
        match ReedSolomon::with_backend(10, 3, b) {
            Ok(rs) => assert!(b.is_available() && rs.backend() == b, "{b}"),
            Err(e) => assert_eq!((b.is_available(), e), (false, kcpd_fec::RsError::UnsupportedBackend { backend: b })),
        }
    }
    assert_eq!(Backend::available(), Backend::ALL.iter().copied().filter(|b| b.is_available()).collect::<Vec<_>>());
    assert!(Backend::best().is_available() && Backend::available().contains(&Backend::Scalar));
}
