//! Reed–Solomon and FEC framing benchmark, beside reed-solomon-erasure in the same run.

use kcpd_fec::{Backend, Decoder, Encoder, ParityRule, ReedSolomon};
use reed_solomon_erasure::galois_8::ReedSolomon as Oracle;

use crate::alloc;
use crate::measure::{Measure, gbs};

const DS: usize = 10;
const PS: usize = 3;
const SIZE: usize = 1400;
/// Data shards lost in the reconstruct benchmark.
const LOST: [usize; 3] = [0, 5, 9];

fn data() -> Vec<Vec<u8>> {
    (0..DS).map(|i| (0..SIZE).map(|j| (i * 31 + j * 7) as u8).collect()).collect()
}

pub fn run(m: &Measure) {
    println!(
        "## FEC: Reed-Solomon {DS}+{PS} x {SIZE}-byte shards, one core, median of {} x {:.1} s",
        m.reps, m.seconds
    );
    println!("(GB/s counts data-shard bytes, as klauspost/reedsolomon reports)");
    println!();
    let data = data();
    let bytes = DS * SIZE;

    let oracle = Oracle::new(DS, PS).expect("10+3");
    let mut shards: Vec<Vec<u8>> = data.iter().cloned().chain((0..PS).map(|_| vec![0; SIZE])).collect();
    let o_enc = m.rate(bytes, || oracle.encode(&mut shards).expect("sized"));
    let full = shards.clone();
    let o_dec = m.rate(bytes, || {
        let mut opt: Vec<Option<Vec<u8>>> = full.iter().cloned().map(Some).collect();
        for &l in &LOST {
            opt[l] = None;
        }
        oracle.reconstruct_data(&mut opt).expect("3 losses");
    });

    println!("| kernel | encode | encode / oracle | reconstruct (3 lost) | reconstruct / oracle |");
    println!("|---|---|---|---|---|");
    let mut best = None;
    for b in Backend::available() {
        let mut rs = ReedSolomon::with_backend(DS, PS, b).expect("10+3");
        let d: Vec<&[u8]> = data.iter().map(|x| &x[..]).collect();
        let mut parity = vec![vec![0u8; SIZE]; PS];
        let enc = m.rate(bytes, || {
            let mut p: [&mut [u8]; PS] = core::array::from_fn(|_| &mut [][..]);
            for (x, y) in p.iter_mut().zip(parity.iter_mut()) {
                *x = &mut y[..];
            }
            rs.encode(&d, &mut p).expect("sized")
        });
        let mut work = full.clone();
        let mut present = [true; DS + PS];
        for &l in &LOST {
            present[l] = false;
        }
        let dec = m.rate(bytes, || {
            let mut s: [&mut [u8]; DS + PS] = core::array::from_fn(|_| &mut [][..]);
            for (x, y) in s.iter_mut().zip(work.iter_mut()) {
                *x = &mut y[..];
            }
            rs.reconstruct_data(&mut s, &present).expect("3 losses");
        });
        println!("| {b} | {} | {:.1}x | {} | {:.1}x |", gbs(enc), enc / o_enc, gbs(dec), dec / o_dec);
        best.get_or_insert((b, enc, dec));
    }
    println!("| reed-solomon-erasure 6 (oracle) | {} | 1.0x | {} | 1.0x |", gbs(o_enc), gbs(o_dec));
    println!();

    // The FEC layer per packet: framing + incremental parity on send; copy + recovery on receive.
    let mut enc = Encoder::new(DS, PS, ParityRule::SkipSparse).expect("10+3");
    let mut pkt = vec![0u8; 8 + SIZE - 2];
    let mut out = vec![0u8; 1500];
    let mut now = kcpd_time::Instant::ZERO;
    let mut send = || {
        now += kcpd_time::Duration::from_millis(1);
        enc.encode(now, &mut pkt).expect("sized");
        while enc.poll_parity(&mut out).expect("sized").is_some() {}
    };
    let send_rate = m.rate(SIZE, &mut send);
    let send_allocs = alloc::per_call(10_000, &mut send);

    // Receive a stream with one data shard lost per group (one reconstruct per group).
    let group = make_group();
    let mut dec = Decoder::new(Some((DS, PS)));
    let mut base = 0u32;
    let mut rx = [0u8; 1500];
    let mut recv = || {
        for (i, p) in group.iter().enumerate() {
            if i == 4 {
                continue;
            }
            // Stands in for the receive buffer the datapath fills.
            rx[..p.len()].copy_from_slice(p);
            rx[..4].copy_from_slice(&(base + i as u32).to_le_bytes());
            let _ = dec.input(kcpd_time::Instant::ZERO, &rx[..p.len()]);
            while dec.poll_recovered().is_some() {}
        }
        base = (base + (DS + PS) as u32) % kcpd_fec::paws(DS + PS);
    };
    let recv_rate = m.rate(SIZE * (DS + PS - 1), &mut recv);
    println!("FEC layer per {SIZE}-byte packet (kernel {}):", Backend::best());
    println!("- encoder (frame + fold into parity + emit parity): {} of data packets", gbs(send_rate));
    println!("- decoder, 1 loss per group (copy + rebuild): {} of received packets", gbs(recv_rate));
    println!("- allocations per data packet sent: {send_allocs:.3}");
    if let Some((b, e, d)) = best {
        println!();
        println!(
            "Goals (encode >= 8 GB/s, reconstruct >= 4 GB/s per core): {b} encode {}, reconstruct {}",
            gbs(e),
            gbs(d)
        );
    }
}

/// One 10+3 group of FEC packets from the real encoder.
fn make_group() -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(DS, PS, ParityRule::Always).expect("10+3");
    let mut v = Vec::new();
    for i in 0..DS {
        let mut p = vec![i as u8; 8 + SIZE - 2];
        enc.encode(kcpd_time::Instant::ZERO, &mut p).expect("sized");
        v.push(p);
        let mut out = vec![0u8; 1500];
        while let Some(n) = enc.poll_parity(&mut out).expect("sized") {
            v.push(out[..n].to_vec());
        }
    }
    v
}
