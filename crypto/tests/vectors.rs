//! Every case of `vectors/crypto.json` (DEB) and `vectors/new/crypto_new.json` (NEW), plus live datagrams of Debian's kcptun (`tools/vectors/captures`).

use kcpd_crypto::{BlockCrypt, Method, OpenError, PacketCrypto, derive_key, xor_table};
use kcpd_vectors::{Value, hex, load};

fn method(v: &Value) -> Method {
    v.as_str().unwrap().parse().unwrap()
}

fn pass_of(password: &Value) -> [u8; 32] {
    derive_key(password.as_str().unwrap().as_bytes())
}

#[test]
fn key_derivation() {
    let v = load("crypto.json");
    let kd = &v["key_derivation"];
    assert_eq!(kd["salt_utf8"], "kcp-go");
    assert_eq!(kd["iterations"], 4096);
    let vecs = kd["vectors"].as_array().unwrap();
    assert_eq!(vecs.len(), 4);
    for k in vecs {
        assert_eq!(derive_key(&hex(&k["password_hex"])).to_vec(), hex(&k["pass_hex"]), "{}", k["password_utf8"]);
    }
}

#[test]
fn every_method_every_password_every_size() {
    let v = load("crypto.json");
    assert_eq!(hex(&v["cfb_initial_vector_hex"]), kcpd_crypto::INITIAL_VECTOR);
    let plaintexts: Vec<(String, Vec<u8>)> = v["plaintexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), hex(&p["hex"])))
        .collect();
    let methods = v["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 13, "all 13 DEB --crypt methods");
    let mut checked = 0;
    for m in methods {
        let meth = method(&m["kcptun_crypt"]);
        for k in m["keys"].as_array().unwrap() {
            let pass = pass_of(&k["password_utf8"]);
            if meth.key_len() > 0 {
                assert_eq!(hex(&k["key_hex"]), pass[..meth.key_len()].to_vec(), "{meth} key slice");
            }
            if let Some(t) = k.get("xortbl_hex") {
                assert_eq!(xor_table(&pass).to_vec(), hex(t), "xor table");
            }
            let bc = BlockCrypt::new(meth, &pass).unwrap();
            for c in k["vectors"].as_array().unwrap() {
                let name = c["plaintext"].as_str().unwrap();
                let plain = &plaintexts.iter().find(|(n, _)| n == name).unwrap().1;
                let want = hex(&c["ciphertext_hex"]);
                let mut buf = plain.clone();
                bc.encrypt(&mut buf);
                assert_eq!(buf, want, "{meth} {} {name} encrypt", k["password_utf8"]);
                bc.decrypt(&mut buf);
                assert_eq!(&buf, plain, "{meth} {name} decrypt");
                // The batched path is byte-identical.
                let mut b2 = plain.clone();
                let mut b3 = plain[..7].to_vec();
                bc.encrypt_batch(&mut [&mut b2[..], &mut b3[..]]);
                assert_eq!(b2, want, "{meth} {name} batch");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 13 * 2 * 3);
}

#[test]
fn seal_vectors_from_the_session_output_path() {
    let v = load("crypto.json");
    let vecs = v["seal"]["vectors"].as_array().unwrap();
    assert_eq!(vecs.len(), 13);
    for s in vecs {
        let meth = method(&s["kcptun_crypt"]);
        let c = PacketCrypto::new(meth, &pass_of(&s["password_utf8"]));
        let payload = hex(&s["payload_hex"]);
        let mut buf = vec![0u8; c.header_len() + payload.len()];
        buf[c.header_len()..].copy_from_slice(&payload);
        c.seal_with_nonce(&hex(&s["nonce_hex"]), &mut buf).unwrap();
        assert_eq!(buf, hex(&s["wire_hex"]), "{meth} seal");
        let r = c.open(&mut buf).unwrap();
        assert_eq!(buf, hex(&s["plaintext_before_encrypt_hex"]), "{meth} open leaves the plaintext");
        assert_eq!(&buf[r], &payload[..]);
    }
}

#[test]
fn deb_live_captures() {
    let block = kcpd_vectors::capture("deb_live_datagrams.md");
    // (method, raw datagram, plaintext if the capture states it)
    let mut caps: Vec<(String, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut pending: Option<String> = None;
    for line in block.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| ::hex::decode(s).unwrap();
        match t.as_slice() {
            [name, "raw", h] => caps.push((name.to_string(), hex(h), None)),
            [name, "raw=plain", h] => caps.push((name.to_string(), hex(h), Some(hex(h)))),
            ["raw", h] => caps.push((pending.take().unwrap(), hex(h), None)),
            ["plain", h] => caps.last_mut().unwrap().2 = Some(hex(h)),
            [name, rest @ ..] if rest.first().is_some_and(|r| r.starts_with('(')) && name.parse::<Method>().is_ok() => {
                pending = Some(name.to_string())
            }
            _ => {}
        }
    }
    let names: Vec<&str> = caps.iter().map(|c| c.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "aes-128", "aes-192", "sm4", "3des", "blowfish", "cast5", "tea", "xtea", "salsa20", "xor", "twofish",
            "none", "aes"
        ]
    );
    let pass = derive_key(b"test");
    for (name, raw, plain) in caps {
        let c = PacketCrypto::new(name.parse().unwrap(), &pass);
        let mut buf = raw.clone();
        let r = c.open(&mut buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(r.start, 20);
        // FEC data shard header follows the crypto header: seqid 0, type 0xf1.
        assert_eq!(buf[20..26], [0, 0, 0, 0, 0xf1, 0], "{name}");
        if let Some(plain) = plain {
            assert_eq!(buf, plain, "{name}");
        }
        // The nonce lives inside the plaintext, so sealing with it reproduces the capture.
        let mut again = buf.clone();
        c.seal_with_nonce(&buf[..16], &mut again).unwrap();
        assert_eq!(again, raw, "{name} re-seal");
    }
}

#[test]
fn new_profile_seal_vectors() {
    let v = load("new/crypto_new.json");
    for s in v["seal_vectors"].as_array().unwrap() {
        let meth = method(&s["kcptun_crypt"]);
        let c = PacketCrypto::new(meth, &pass_of(&s["password_utf8"]));
        let plain = match s.get("aead_plaintext_hex") {
            Some(p) => hex(p),
            None => hex(&s["wire_hex"]), // null: the datagram is the plaintext
        };
        if let Some(k) = s.get("aead_key_hex") {
            assert_eq!(hex(k), pass_of(&s["password_utf8"])[..16].to_vec());
        }
        let nonce = s.get("nonce_hex").map(hex).unwrap_or_default();
        let mut buf = vec![0u8; c.header_len() + plain.len() + c.trailer_len()];
        buf[c.header_len()..c.header_len() + plain.len()].copy_from_slice(&plain);
        c.seal_with_nonce(&nonce, &mut buf).unwrap();
        assert_eq!(buf, hex(&s["wire_hex"]), "{meth} {}/{}", s["data_shards"], s["parity_shards"]);
        assert_eq!(buf.len() as u64, s["wire_len"].as_u64().unwrap());
        if let (Some(ct), Some(tag)) = (s.get("ciphertext_hex"), s.get("tag_hex")) {
            assert_eq!(buf[12..buf.len() - 16], hex(ct)[..]);
            assert_eq!(buf[buf.len() - 16..], hex(tag)[..]);
        }
        let r = c.open(&mut buf).unwrap();
        assert_eq!(&buf[r], &plain[..]);
    }
}

#[test]
fn new_profile_gcm_group_each_datagram_sealed_alone() {
    let v = load("new/crypto_new.json");
    let c = PacketCrypto::from_password(Method::Aes128Gcm, "it's a secrect");
    let dgs = v["aes_128_gcm_fec_10_3_group"]["datagrams"].as_array().unwrap();
    assert_eq!(dgs.len(), 13);
    for d in dgs {
        let plain = hex(&d["aead_plaintext_hex"]);
        let mut buf = vec![0u8; 12 + plain.len() + 16];
        buf[12..12 + plain.len()].copy_from_slice(&plain);
        c.seal_with_nonce(&hex(&d["nonce_hex"]), &mut buf).unwrap();
        assert_eq!(buf, hex(&d["wire_hex"]), "datagram {}", d["index"]);
        let r = c.open(&mut buf).unwrap();
        assert_eq!(&buf[r], &plain[..]);
    }
}

#[test]
fn new_profile_gcm_rejects() {
    let v = load("new/crypto_new.json");
    let c = PacketCrypto::from_password(Method::Aes128Gcm, "it's a secrect");
    let cases = v["aes_128_gcm_receive_rejects"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let mut d = hex(&case["datagram_hex"]);
        let err = c.open(&mut d).unwrap_err();
        // kcp-go counts InCsumErrors for a failed Open and nothing for a datagram below 28 bytes.
        let counted = case["result"]["snmp_delta"].get("InCsumErrors").is_some();
        assert_eq!(counted, err == OpenError::Auth, "{}: {err:?}", case["case"]);
        assert_eq!(!counted, matches!(err, OpenError::TooShort { .. }), "{}", case["case"]);
    }
}

#[test]
fn new_profile_null_edges_reach_the_kcp_layer_untouched() {
    let v = load("new/crypto_new.json");
    let c = PacketCrypto::from_password(Method::Null, "it's a secrect");
    for case in v["null_receive_edges"].as_array().unwrap() {
        // Both cases pass the (absent) crypto layer; the 11-byte one is refused later by KCP (KCPInErrors).
        let mut d = hex(&case["datagram_hex"]);
        let len = d.len();
        assert_eq!(c.open(&mut d), Ok(0..len));
        assert_eq!(d, hex(&case["datagram_hex"]));
    }
}

#[test]
fn new_profile_header_and_mtu_accounting() {
    let v = load("new/crypto_new.json");
    for a in v["header_and_mtu_accounting"].as_array().unwrap() {
        let c = PacketCrypto::from_password(method(&a["crypt"]), "k");
        let fec = if a["ds_ps"][0].as_u64().unwrap() > 0 { 8 } else { 0 };
        assert_eq!((c.header_len() + fec) as u64, a["headerSize"].as_u64().unwrap(), "{}", a["crypt"]);
        assert_eq!(c.trailer_len() as u64, a["aead_tag_overhead"].as_u64().unwrap(), "{}", a["crypt"]);
        // mss = mtu - overhead - fec - 24 (spec §1.5)
        let mss = 1350 - c.overhead() - fec - 24;
        assert_eq!(mss as u64, a["kcp_mss"].as_u64().unwrap(), "{}", a["crypt"]);
    }
}

#[test]
fn new_profile_key_selection_notes() {
    let v = load("new/crypto_new.json");
    let ks = &v["key_selection"];
    assert!(ks["aes-128-gcm"].as_str().unwrap().contains("pass[0:16]"));
    assert_eq!(Method::Aes128Gcm.key_len(), 16);
    // We refuse unknown names where kcptun falls back to aes.
    assert!(ks["unknown names"].as_str().unwrap().contains("fall back"));
    assert!("aes-256".parse::<Method>().is_err());
}
