//! Every case of `vectors/rs.json`, `vectors/fec.json` and `vectors/new/fec_new.json`.
//!
//! kcpd-crypto is a dev-dependency only, for the complete-datagram vectors (FEC inside the crypto
//! envelope); the fec crate itself knows nothing of crypto.

use kcpd_crypto::{Method, PacketCrypto};
use kcpd_fec::wire::{self, Class};
use kcpd_fec::{Decoder, Encoder, Input, ParityRule, ReedSolomon};
use kcpd_vectors::{Value, det_bytes, hex, load};

const T0: kcpd_time::Instant = kcpd_time::Instant::ZERO;

fn ms(x: u64) -> kcpd_time::Instant {
    kcpd_time::Instant::from_millis(x)
}

fn u(v: &Value) -> usize {
    v.as_u64().map(|x| x as usize).or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap()
}

/// Frame `kcp` as a data packet and return it with the parity packets that became ready.
fn encode(enc: &mut Encoder, now: u32, kcp: &[u8]) -> Vec<(Class, Vec<u8>)> {
    let mut pkt = vec![0u8; 8 + kcp.len()];
    pkt[8..].copy_from_slice(kcp);
    let ready = enc.encode(ms(u64::from(now)), &mut pkt).unwrap();
    let mut out = vec![(Class::Data, pkt)];
    let mut buf = [0u8; 1500];
    while let Some(n) = enc.poll_parity(&mut buf).unwrap() {
        out.push((Class::Parity, buf[..n].to_vec()));
    }
    assert_eq!(out.len() - 1, ready);
    out
}

#[test]
fn rs_json_parity_and_reconstruction() {
    let v = load("rs.json");
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let (ds, ps) = (u(&c["data_shards"]), u(&c["parity_shards"]));
        for b in kcpd_fec::Backend::available() {
            let mut rs = ReedSolomon::with_backend(ds, ps, b).unwrap();
            for (r, row) in c["parity_coefficients"]["rows"].as_array().unwrap().iter().enumerate() {
                let want: Vec<u8> = row
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| u8::from_str_radix(&x.as_str().unwrap()[2..], 16).unwrap())
                    .collect();
                assert_eq!(want.len(), ds);
                assert_eq!(rs.matrix_row(ds + r), &want[..]);
            }
            for vec in c["vectors"].as_array().unwrap() {
                let size = u(&vec["shard_size"]);
                let data: Vec<Vec<u8>> =
                    (0..ds).map(|i| (0..size).map(|j| ((i * 31 + j * 7) % 256) as u8).collect()).collect();
                // Small cases list the data; large ones state the formula.
                if let Some(given) = vec["data_hex"].as_array() {
                    assert_eq!(data, given.iter().map(hex).collect::<Vec<_>>(), "input formula");
                }
                let want: Vec<Vec<u8>> = vec["parity_hex"].as_array().unwrap().iter().map(hex).collect();
                let mut parity = vec![vec![0u8; size]; ps];
                let d: Vec<&[u8]> = data.iter().map(|x| &x[..]).collect();
                let mut p: Vec<&mut [u8]> = parity.iter_mut().map(|x| &mut x[..]).collect();
                rs.encode(&d, &mut p).unwrap();
                assert_eq!(parity, want, "{ds}+{ps} size {size} {b}");
                // The incremental form gives the same parity.
                let mut inc = vec![vec![0u8; size]; ps];
                for (i, s) in data.iter().enumerate() {
                    let mut p: Vec<&mut [u8]> = inc.iter_mut().map(|x| &mut x[..]).collect();
                    rs.encode_shard(i, s, &mut p).unwrap();
                }
                assert_eq!(inc, want);
                // Reconstruct after erasing the listed shards.
                let erased: Vec<usize> =
                    vec["reconstruct_check"]["erased_shard_indices"].as_array().unwrap().iter().map(u).collect();
                let mut shards: Vec<Vec<u8>> = data.iter().chain(want.iter()).cloned().collect();
                let mut present = vec![true; ds + ps];
                for &e in &erased {
                    shards[e].fill(0x55);
                    present[e] = false;
                }
                let mut s: Vec<&mut [u8]> = shards.iter_mut().map(|x| &mut x[..]).collect();
                let n = rs.reconstruct_data(&mut s, &present).unwrap();
                assert_eq!(n, erased.iter().filter(|&&e| e < ds).count());
                for i in 0..ds {
                    assert_eq!(shards[i], data[i], "{ds}+{ps} rebuilt shard {i}");
                }
            }
        }
    }
}

/// fec.json scenarios (and the NEW replay of them): the encoder output byte for byte, then every decode
/// scenario.
#[test]
fn fec_json_encode_and_decode_scenarios() {
    let v = load("fec.json");
    let new = load("new/fec_new.json");
    let replay = new["replay_of_fec_json_with_5_6_64"]["results"].as_array().unwrap();
    let scenarios: Vec<&Value> =
        v["scenarios"].as_array().unwrap().iter().chain(v["wrap_scenarios"].as_array().unwrap()).collect();
    assert_eq!(scenarios.len(), 6);
    for s in scenarios {
        let name = s["name"].as_str().unwrap();
        let (ds, ps) = (u(&s["data_shards"]), u(&s["parity_shards"]));
        assert_eq!(kcpd_fec::paws(ds + ps) as u64, s["paws"].as_u64().unwrap());
        let start = s["initial_seqid"].as_u64().unwrap() as u32;
        // DEB encoder: parity for every group.
        let mut enc = Encoder::new(ds, ps, ParityRule::Always).unwrap().with_next_seqid(start);
        let mut all: Vec<(Class, Vec<u8>)> = Vec::new();
        for input in s["encode"].as_array().unwrap() {
            let got = encode(&mut enc, 0, &hex(&input["kcp_payload_hex"]));
            let want = input["emitted"].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "{name} input {}", input["input_index"]);
            for ((class, pkt), w) in got.iter().zip(want) {
                assert_eq!(pkt, &hex(&w["fec_packet_hex"]), "{name} {}", w["header"]["seqid"]);
                assert_eq!(*class == Class::Data, w["kind"] == "data");
            }
            all.extend(got);
        }
        // NEW encoder: identical except where the replay lists differences (the 1+1 first parity).
        let r = replay.iter().find(|r| r["scenario"] == name).unwrap();
        let mut enc = Encoder::new(ds, ps, ParityRule::SkipSparse).unwrap().with_next_seqid(start);
        let diffs = r.get("encoder_differences").and_then(|d| d.as_array()).cloned().unwrap_or_default();
        for input in s["encode"].as_array().unwrap() {
            let i = input["input_index"].as_u64().unwrap();
            let got = encode(&mut enc, 1000 + i as u32, &hex(&input["kcp_payload_hex"]));
            let want: Vec<String> = match diffs.iter().find(|d| d["input_index"].as_u64() == Some(i)) {
                Some(d) => d["kcp_go_5_6_64_emitted"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect(),
                None => input["emitted"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| format!("{}#{}", e["kind"].as_str().unwrap(), e["header"]["seqid"]))
                    .collect(),
            };
            let got: Vec<String> = got
                .iter()
                .map(|(c, p)| {
                    format!(
                        "{}#{}",
                        if *c == Class::Data { "data" } else { "parity" },
                        u32::from_le_bytes(p[..4].try_into().unwrap())
                    )
                })
                .collect();
            assert_eq!(got, want, "{name} NEW input {i}");
        }
        assert_eq!(r["encoder_output_identical"].as_bool().unwrap(), diffs.is_empty());

        for sc in s["decode_scenarios"].as_array().unwrap() {
            decode_scenario(name, ds, ps, &all, sc);
        }
    }
}

fn decode_scenario(name: &str, ds: usize, ps: usize, all: &[(Class, Vec<u8>)], sc: &Value) {
    let note = sc["note"].as_str().unwrap();
    let mut dec = Decoder::new(Some((ds, ps)));
    // Shards delivered so far (directly or rebuilt): kcp-go's 1+1 decoder re-"recovers" shards that were
    // already delivered; kcpd does not (it closes a group once its data is complete), so those expected
    // duplicates are skipped.
    let mut delivered: Vec<Vec<u8>> = Vec::new();
    let mut total = 0;
    for f in sc["feed"].as_array().unwrap() {
        let (class, pkt) = &all[u(&f["fed_packet_index"])];
        assert_eq!(wire::classify(pkt), *class);
        match dec.input(T0, pkt).unwrap() {
            Input::Data(kcp) => {
                assert_eq!(kcp, &pkt[8..]);
                delivered.push(pkt[6..].to_vec());
            }
            Input::Parity => {}
            Input::Oob => panic!(),
        }
        let mut got = Vec::new();
        while let Some(r) = dec.poll_recovered() {
            assert_eq!(r.kcp, wire::recovered_payload(r.shard).unwrap());
            got.push(r.shard.to_vec());
        }
        let want: Vec<Vec<u8>> = f["recovered"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = hex(&r["recovered_shard_hex"]);
                assert_eq!(s.len(), u(&r["recovered_shard_len"]));
                s
            })
            .filter(|s| {
                let size = u16::from_le_bytes([s[0], s[1]]) as usize;
                !delivered.iter().any(|d| d[..] == s[..size])
            })
            .collect();
        assert_eq!(got, want, "{name}: {note}: after packet {}", f["fed_packet_index"]);
        for g in got {
            let size = u16::from_le_bytes([g[0], g[1]]) as usize;
            delivered.push(g[..size].to_vec());
            total += 1;
        }
    }
    let expected_total = u(&sc["total_recovered"]);
    if ds == 1 {
        assert!(total <= expected_total, "{name}: {note}");
    } else {
        assert_eq!(total, expected_total, "{name}: {note}");
    }
    assert_eq!(dec.stats().recovered as usize, total);
}

/// fec.json end_to_end: FEC 3+2 inside `aes`, every datagram (parity too) with its own nonce.
#[test]
fn fec_json_complete_encrypted_datagrams() {
    let v = load("fec.json");
    let vecs = v["end_to_end"]["vectors"].as_array().unwrap();
    assert!(!vecs.is_empty());
    for e in vecs {
        let method: Method = e["kcptun_crypt"].as_str().unwrap().parse().unwrap();
        let c = PacketCrypto::from_password(method, e["password_utf8"].as_str().unwrap());
        let (ds, ps) = (u(&e["data_shards"]), u(&e["parity_shards"]));
        let mut enc = Encoder::new(ds, ps, ParityRule::Always).unwrap();
        let mut wires = Vec::new();
        for input in e["inputs"].as_array().unwrap() {
            for (_, fec) in encode(&mut enc, 0, &hex(&input["kcp_payload_hex"])) {
                let mut d = vec![0u8; c.header_len()];
                d.extend_from_slice(&fec);
                wires.push(d);
            }
        }
        let want = e["udp_datagrams"].as_array().unwrap();
        assert_eq!(wires.len(), want.len());
        for (d, w) in wires.iter_mut().zip(want) {
            c.seal_with_nonce(&hex(&w["nonce_hex"]), d).unwrap();
            assert_eq!(d, &hex(&w["wire_hex"]), "{method} packet {}", w["packet_index"]);
            let mut opened = d.clone();
            let r = c.open(&mut opened).unwrap();
            assert_eq!(opened, hex(&w["plaintext_before_encrypt_hex"]));
            assert_eq!(r.start, c.header_len());
        }
    }
}

/// NEW parity-skip: only the gap before a group's last data packet counts.
#[test]
fn new_parity_skip_3_2() {
    let v = load("new/fec_new.json");
    let p = &v["parity_skip_3_2"];
    let mut enc = Encoder::new(3, 2, ParityRule::SkipSparse).unwrap();
    let mut now = 10_000u32;
    for input in p["inputs"].as_array().unwrap() {
        let i = u(&input["input_index"]);
        let kcp = hex(&input["kcp_payload_hex"]);
        assert_eq!(kcp, det_bytes(&format!("fecskip-{i}"), 20 + 3 * i));
        now += if input["gap_before_this_input"].as_str().unwrap().starts_with(">=") { 600 } else { 10 };
        let got = encode(&mut enc, now, &kcp);
        let want = input["emitted"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "input {i}");
        for ((_, pkt), w) in got.iter().zip(want) {
            assert_eq!(pkt, &hex(&w["fec_packet_hex"]), "input {i} seqid {}", w["seqid"]);
        }
        assert_eq!(enc.next_seqid() as u64, input["encoder_next_seqid_after"].as_u64().unwrap());
    }
    assert_eq!(enc.stats().parity_skipped_groups, 1);
}

#[test]
fn new_seqid_wrap_10_3() {
    let v = load("new/fec_new.json");
    let w = &v["seqid_wrap_10_3"];
    assert_eq!(kcpd_fec::paws(13) as u64, w["paws"].as_u64().unwrap());
    let mut enc = Encoder::new(10, 3, ParityRule::SkipSparse)
        .unwrap()
        .with_next_seqid(w["initial_seqid"].as_u64().unwrap() as u32);
    for (i, e) in w["emitted"].as_array().unwrap().iter().enumerate() {
        let got = encode(&mut enc, 5000 + i as u32, &det_bytes(&format!("fecwrapnew-{i}"), 24));
        let want: Vec<u64> = e["emitted"].as_array().unwrap().iter().map(|x| x["seqid"].as_u64().unwrap()).collect();
        let got: Vec<u64> = got.iter().map(|(_, p)| u32::from_le_bytes(p[..4].try_into().unwrap()) as u64).collect();
        assert_eq!(got, want);
    }
    // A NEW receiver keeps seqids at or beyond paws out of FEC; data still reaches KCP.
    let mut dec = Decoder::new(Some((10, 3)));
    let mut pkt = vec![0u8; 40];
    wire::write_header(&mut pkt, kcpd_fec::paws(13), wire::TYPE_PARITY);
    assert_eq!(dec.input(T0, &pkt), Ok(Input::Parity));
    wire::write_header(&mut pkt, u32::MAX, wire::TYPE_DATA);
    assert_eq!(dec.input(T0, &pkt), Ok(Input::Data(&pkt[8..])));
    assert_eq!(dec.stats().out_of_range, 2);
    assert!(!dec.tuning(), "an out-of-range seqid is not evidence against the parameters");
}

#[test]
fn new_oob_packets_are_counted_and_dropped() {
    let v = load("new/fec_new.json");
    for o in v["oob_packets"].as_array().unwrap() {
        let fec = hex(&o["fec_packet_hex"]);
        let method: Method = o["kcptun_crypt"].as_str().unwrap().parse().unwrap();
        let c = PacketCrypto::from_password(method, "it's a secrect");
        let mut w = hex(&o["wire_hex"]);
        let r = c.open(&mut w).unwrap();
        assert_eq!(&w[r.clone()], &fec[..], "{method}");
        assert_eq!(wire::classify(&w[r.clone()]), Class::Oob);
        let (conv, payload) = wire::parse_oob(&w[r]).unwrap();
        assert_eq!(conv.to_le_bytes().to_vec(), hex(&o["conv_le_hex"]));
        assert_eq!(payload, o["oob_payload_utf8"].as_str().unwrap().as_bytes());
        let mut dec = Decoder::new(Some((10, 3)));
        assert_eq!(dec.input(T0, &fec), Ok(Input::Oob));
        assert_eq!(dec.stats().oob, 1);
        assert!(dec.poll_recovered().is_none());
    }
}

/// NEW end-to-end 3+2 with a real 600 ms gap, for null and aes-128-gcm.
#[test]
fn new_end_to_end_with_real_parity_skip() {
    let v = load("new/fec_new.json");
    for e in v["end_to_end_3_2_with_real_parity_skip"].as_array().unwrap() {
        let method: Method = e["kcptun_crypt"].as_str().unwrap().parse().unwrap();
        let c = PacketCrypto::from_password(method, "it's a secrect");
        let mut enc = Encoder::new(u(&e["data_shards"]), u(&e["parity_shards"]), ParityRule::SkipSparse).unwrap();
        let mut wires = Vec::new();
        let mut now = 1000;
        for (i, k) in e["kcp_payloads_hex"].as_array().unwrap().iter().enumerate() {
            now += if i == 5 { 600 } else { 1 };
            for (_, fec) in encode(&mut enc, now, &hex(k)) {
                let mut d = vec![0u8; c.header_len()];
                d.extend_from_slice(&fec);
                d.resize(d.len() + c.trailer_len(), 0);
                wires.push(d);
            }
        }
        let want = e["datagrams"].as_array().unwrap();
        assert_eq!(wires.len(), want.len(), "{method}");
        for (d, w) in wires.iter_mut().zip(want) {
            let wire_bytes = hex(&w["wire_hex"]);
            // The nonce travels in clear (GCM) or is the null method's absence: re-seal with it.
            c.seal_with_nonce(&wire_bytes[..c.header_len()], d).unwrap();
            assert_eq!(d, &wire_bytes, "{method} seqid {}", w["seqid"]);
        }
    }
}

#[test]
fn new_autotune_findperiod_cases() {
    let v = load("new/fec_new.json");
    for c in v["autotune_findperiod"].as_array().unwrap() {
        let name = c["case"].as_str().unwrap();
        let mut t = kcpd_fec::autotune::AutoTune::default();
        let mut newest = 0;
        let truth = if name.starts_with("10+3") {
            (10, 3)
        } else if name.starts_with("3+2") {
            (3, 2)
        } else {
            (1, 1)
        };
        let mut elided = false;
        for s in c["samples_seq_kind"].as_array().unwrap() {
            let s = s.as_str().unwrap();
            if s == "..." {
                // The listing elides the middle of a contiguous run: fill it in.
                assert!(name.contains("contiguous"), "{name}");
                elided = true;
                continue;
            }
            let (seq, kind) = s.split_at(s.len() - 1);
            let seq: u32 = seq.parse().unwrap();
            if elided {
                for x in newest + 1..seq {
                    t.sample(x, (x % (truth.0 + truth.1) as u32) < truth.0 as u32);
                }
                elided = false;
            }
            t.sample(seq, kind == "D");
            newest = newest.max(seq);
        }
        let go = (c["FindPeriod(data=true)"].as_i64().unwrap(), c["FindPeriod(parity=false)"].as_i64().unwrap());
        let ours = t.detect(newest);
        if go.0 > 0 {
            assert_eq!(ours, Some((go.0 as usize, go.1 as usize)), "{name}");
        } else {
            // Where Go's tuner gives up, ours either waits too or finds the true parameters.
            assert!(ours.is_none() || ours == Some(truth), "{name}: {ours:?}");
        }
    }
}

/// Decoder auto-tuning driven by real encoder output: same final parameters as kcp-go, never later,
/// never fewer recovered shards.
#[test]
fn new_autotune_decoder_cases() {
    let v = load("new/fec_new.json");
    for c in v["autotune_decoder"].as_array().unwrap() {
        let name = c["case"].as_str().unwrap();
        let s = (u(&c["sender_ds_ps"][0]), u(&c["sender_ds_ps"][1]));
        let r = (u(&c["receiver_initial_ds_ps"][0]), u(&c["receiver_initial_ds_ps"][1]));
        let skip_first_groups = name.contains("skipped");
        let mut enc = Encoder::new(s.0, s.1, ParityRule::SkipSparse).unwrap();
        let mut pkts = Vec::new();
        let mut now = 1000u32;
        let mut i = 0;
        while pkts.len() < u(&c["packets_fed"]) {
            // Sparse traffic: a long pause before the last data packet of groups 0 and 1.
            let last_of_group = (i % s.0) == s.0 - 1;
            now += if skip_first_groups && last_of_group && i / s.0 < 2 { 700 } else { 5 };
            pkts.extend(encode(&mut enc, now, &det_bytes(&format!("fectune-{i}"), 30 + 11 * (i % 7))));
            i += 1;
        }
        pkts.truncate(u(&c["packets_fed"]));
        let dropped: Vec<usize> = c["dropped_packet_indices"].as_array().unwrap().iter().map(u).collect();
        let seqid_of = |p: &[u8]| u32::from_le_bytes(p[..4].try_into().unwrap());
        let mut dec = Decoder::new(Some(r));
        let mut lock = None; // (packet index, seqid) where the parameters first changed
        let mut recovered = 0;
        for (idx, (_, p)) in pkts.iter().enumerate() {
            if dropped.contains(&idx) {
                continue;
            }
            dec.input(T0, p).unwrap();
            while dec.poll_recovered().is_some() {
                recovered += 1;
            }
            if lock.is_none() && dec.params() != Some(r) {
                lock = Some((idx as i64, seqid_of(p)));
            }
        }
        let fin = (u(&c["final_decoder_ds_ps"][0]), u(&c["final_decoder_ds_ps"][1]));
        assert_eq!(dec.params(), Some(fin), "{name}");
        let go_change = c["first_packet_index_where_params_changed"].as_i64().unwrap();
        match lock {
            None => assert_eq!(go_change, -1, "{name}"),
            Some((i, _)) => assert!(go_change >= 0 && i <= go_change, "{name}: ours {i}, kcp-go {go_change}"),
        }
        // Every lost data shard of a group that started after the lock, with at most ps losses and ds
        // shards received, is rebuilt. (kcp-go's totals also count spurious rebuilds around a retune,
        // e.g. 1 in the "receiver 1+1, 2 and 15 lost" case where both losses precede its lock.)
        let n = (s.0 + s.1) as u32;
        let after_lock = |seqid: u32| lock.is_none_or(|(_, ls)| seqid / n * n > ls);
        let mut expected = 0;
        for g in pkts.iter().map(|(_, p)| seqid_of(p) / n).collect::<std::collections::BTreeSet<_>>() {
            let members: Vec<usize> = (0..pkts.len()).filter(|&i| seqid_of(&pkts[i].1) / n == g).collect();
            let lost_data = members.iter().filter(|&&i| dropped.contains(&i) && pkts[i].0 == Class::Data).count();
            let got = members.iter().filter(|&&i| !dropped.contains(&i)).count();
            if after_lock(g * n) && lost_data > 0 && got >= s.0 {
                expected += lost_data;
            }
        }
        assert_eq!(recovered, expected, "{name}");
        println!(
            "{name}: locked at {:?} (kcp-go {go_change}), recovered {recovered} (kcp-go {})",
            lock.map(|l| l.0),
            c["total_recovered"]
        );
    }
}

/// A worked FEC group (`tools/vectors/captures/fec_group_4_2.md`): null crypto, ds=4, ps=2.
#[test]
fn worked_fec_group_4_2() {
    let capture = kcpd_vectors::capture("fec_group_4_2.md");
    let pkts: Vec<Vec<u8>> = capture
        .lines()
        .take(12)
        .filter(|l| l.starts_with("data ") || l.starts_with("parity "))
        .map(|l| ::hex::decode(l.split_whitespace().nth(1).unwrap()).unwrap())
        .collect();
    assert_eq!(pkts.len(), 6);
    let mut enc = Encoder::new(4, 2, ParityRule::Always).unwrap();
    let mut got = Vec::new();
    for d in &pkts[..4] {
        got.extend(encode(&mut enc, 0, &d[8..]).into_iter().map(|x| x.1));
    }
    assert_eq!(got, pkts);
    // Drop data shard 2, feed the rest in another order with duplicates.
    let mut dec = Decoder::new(Some((4, 2)));
    let mut rec = Vec::new();
    for i in [3, 0, 0, 1, 5, 4, 5] {
        let _ = dec.input(T0, &pkts[i]).unwrap();
        while let Some(r) = dec.poll_recovered() {
            rec.push((r.shard.to_vec(), r.kcp.to_vec()));
        }
    }
    assert_eq!(rec.len(), 1);
    assert_eq!(u16::from_le_bytes([rec[0].0[0], rec[0].0[1]]), 35);
    assert_eq!(rec[0].1, pkts[2][8..]);
    assert!(dec.stats().duplicates >= 1);
}
