//! Every case of `vectors/new/qpp.json` (qpp v1.1.25 as kcptun f788cbb uses it).

use kcpd_crypto::qpp::{Prng, Qpp};
use kcpd_vectors::{Value, det_bytes, hex, load, sha256};

fn u64_hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap(), 16).unwrap()
}

#[test]
fn seeds_pads_prng_and_ciphertexts() {
    let v = load("new/qpp.json");
    let seeds = v["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 5);
    for s in seeds {
        let name = s["name"].as_str().unwrap();
        let seed = hex(&s["seed_hex"]);
        // PRNG.
        let p = &s["prng"];
        let prng = Prng::new(&seed);
        assert_eq!(prng.state(), (u64_hex(&p["seed64_first_output_u64"]), 0), "{name}");
        let mut words = Vec::new();
        let mut q = Prng::new(&seed);
        for _ in 0..17 {
            words.push(q.state().0);
            q.skip(8);
        }
        let want: Vec<u64> = std::iter::once(u64_hex(&p["seed64_first_output_u64"]))
            .chain(p["next_16_outputs_u64"].as_array().unwrap().iter().map(u64_hex))
            .collect();
        assert_eq!(words, want, "{name}: xoshiro256** outputs");
        for set in s["pad_sets"].as_array().unwrap() {
            let count = set["num_pads"].as_u64().unwrap() as u16;
            let qpp = Qpp::new(&seed, count);
            let pads: Vec<u8> = (0..qpp.count()).flat_map(|i| *qpp.pad(i)).collect();
            let rpads: Vec<u8> = (0..qpp.count()).flat_map(|i| *qpp.rpad(i)).collect();
            assert_eq!(::hex::encode(sha256(&pads)), set["pads_sha256"].as_str().unwrap(), "{name}/{count} pads");
            assert_eq!(::hex::encode(sha256(&rpads)), set["rpads_sha256"].as_str().unwrap(), "{name}/{count}");
            if let Some(h) = set.get("pads_hex") {
                assert_eq!(pads, hex(h));
            }
            let sel: Vec<usize> = set["pad_index_of_first_16_blocks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let mut q = Prng::new(&seed);
            for (b, &want) in sel.iter().enumerate() {
                assert_eq!((q.state().0 as u16) as usize % qpp.count(), want, "{name} block {b}");
                let mut eight = [0u8; 8];
                qpp.encrypt(&mut q, &mut eight);
            }
            for case in set["encrypt_fresh_prng"].as_array().unwrap() {
                let mut data = hex(&case["plaintext_hex"]);
                let plain = data.clone();
                qpp.encrypt(&mut Prng::new(&seed), &mut data);
                assert_eq!(data, hex(&case["ciphertext_hex"]), "{name}/{count} {}", case["input"]);
                qpp.decrypt(&mut Prng::new(&seed), &mut data);
                assert_eq!(data, plain);
            }
        }
    }
}

#[test]
fn chunked_writes_equal_one_shot() {
    let v = load("new/qpp.json");
    let c = &v["chunked_encryption"];
    let seed = c["seed_utf8"].as_str().unwrap().as_bytes();
    let qpp = Qpp::new(seed, c["num_pads"].as_u64().unwrap() as u16);
    let plain = hex(&c["plaintext_hex"]);
    let want = hex(&c["ciphertext_hex"]);
    for case in c["cases"].as_array().unwrap() {
        let mut prng = Prng::new(seed);
        let mut out = Vec::new();
        let mut off = 0;
        let states = case["prng_state_after_each_write"].as_array().unwrap();
        for w in case["write_sizes"].as_array().unwrap() {
            let n = w.as_u64().unwrap() as usize;
            let mut chunk = plain[off..off + n].to_vec();
            qpp.encrypt(&mut prng, &mut chunk);
            out.extend_from_slice(&chunk);
            off += n;
            // The listing records the state after some of the writes, keyed by bytes consumed.
            if let Some(st) = states.iter().find(|st| st["after_bytes"].as_u64() == Some(off as u64)) {
                assert_eq!(prng.state(), (u64_hex(&st["seed64"]), st["count"].as_u64().unwrap() as u8));
            }
        }
        assert_eq!(out, want);
    }
}

#[test]
fn kcptun_qpp_port_writes() {
    let v = load("new/qpp.json");
    for case in v["qpp_port"]["cases"].as_array().unwrap() {
        let key = case["key_utf8"].as_str().unwrap().as_bytes();
        let qpp = Qpp::new(key, case["qpp_count"].as_u64().unwrap() as u16);
        let mut w = Prng::new(key);
        let mut r = Prng::new(key);
        let mut all = Vec::new();
        for wr in case["writes"].as_array().unwrap() {
            let mut b = hex(&wr["plaintext_hex"]);
            let plain = b.clone();
            qpp.encrypt(&mut w, &mut b);
            assert_eq!(b, hex(&wr["underlying_write_hex"]));
            all.extend_from_slice(&b);
            qpp.decrypt(&mut r, &mut b);
            assert_eq!(b, plain);
        }
        assert_eq!(all, hex(&case["stream_ciphertext_hex"]));
    }
}

#[test]
fn generation_c_and_not_a_or_b() {
    let v = load("new/qpp.json");
    let g = &v["qpp_version_generations"]["generations"];
    let qpp = Qpp::new(b"it's a secrect", 61);
    let mut data = det_bytes("qpp-plain-1000", 1000);
    qpp.encrypt(&mut Prng::new(b"it's a secrect"), &mut data);
    let ct = ::hex::encode(&data);
    let first = |generation: &str| g[generation]["results"][0]["ciphertext_hex"].as_str().unwrap().to_owned();
    assert_eq!(ct, first("C"));
    assert_ne!(ct, first("A"));
    assert_ne!(ct, first("B"));
}
