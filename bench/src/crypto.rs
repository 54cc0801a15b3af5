//! Packet crypto benchmark: kcpd seal/open per method beside OpenSSL's CFB figure in the same run.

use std::process::Command;

use kcpd_crypto::{BlockCrypt, Method, NonceGen, PacketCrypto, derive_key};

use crate::alloc;
use crate::measure::{Measure, mbs, median};

const SIZE: usize = 1400;
const BATCH: usize = 16;

/// `openssl speed -evp <cipher> -bytes 1400`, bytes per second (median of `reps` runs).
fn openssl(cipher: &str, m: &Measure) -> Option<f64> {
    let secs = (m.seconds.ceil() as u64).max(1).to_string();
    let runs = (0..m.reps)
        .filter_map(|_| {
            let out = Command::new("openssl")
                .args(["speed", "-evp", cipher, "-bytes", &SIZE.to_string(), "-seconds", &secs])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            // Last line: "AES-128-CFB     898489.90k" (thousands of bytes per second).
            let last = text.lines().rev().find(|l| l.trim_end().ends_with('k'))?;
            let k: f64 = last.split_whitespace().last()?.trim_end_matches('k').parse().ok()?;
            Some(k * 1000.0)
        })
        .collect();
    median(runs)
}

struct Row {
    method: Method,
    encrypt: f64,
    seal: f64,
    batch: f64,
    open: f64,
    allocs: f64,
}

fn bench_method(method: Method, m: &Measure) -> Row {
    let pass = derive_key(b"bench");
    let c = PacketCrypto::new(method, &pass);
    let mut rng = NonceGen::new();
    let mut buf = vec![0x5au8; SIZE];
    let seal = m.rate(SIZE, || c.seal(&mut rng, &mut buf).expect("sized"));
    // Raw whole-datagram cipher (what `openssl speed` measures): no nonce, no CRC.
    let encrypt = match BlockCrypt::new(method, &pass) {
        Some(bc) => m.rate(SIZE, || bc.encrypt(&mut buf)),
        None => seal,
    };
    let mut bufs = vec![vec![0x5au8; SIZE]; BATCH];
    let batch = m.rate(SIZE * BATCH, || {
        let mut refs: [&mut [u8]; BATCH] = core::array::from_fn(|_| &mut [][..]);
        for (r, b) in refs.iter_mut().zip(bufs.iter_mut()) {
            *r = &mut b[..];
        }
        c.seal_batch(&mut rng, &mut refs).expect("sized")
    });
    let mut sealed = vec![0x33u8; SIZE];
    c.seal(&mut rng, &mut sealed).expect("sized");
    let mut work = sealed.clone();
    let open = m.rate(SIZE, || {
        work.copy_from_slice(&sealed);
        c.open(&mut work).expect("valid datagram");
    });
    let allocs = alloc::per_call(1000, || {
        c.seal(&mut rng, &mut work).expect("sized");
        let _ = c.open(&mut work);
    });
    Row { method, encrypt, seal, batch, open, allocs }
}

pub fn run(m: &Measure, only: &[String]) {
    let methods: Vec<Method> = if only.is_empty() {
        Method::ALL.to_vec()
    } else {
        only.iter().map(|s| s.parse().unwrap_or_else(|e| panic!("{e}"))).collect()
    };
    println!("## crypto: {SIZE}-byte datagrams, one core, median of {} x {:.1} s", m.reps, m.seconds);
    println!();
    println!(
        "| method | CFB/cipher only | seal (nonce+CRC+encrypt) | seal_batch x{BATCH} | open (decrypt+check) | allocs/packet |"
    );
    println!("|---|---|---|---|---|---|");
    let rows: Vec<Row> = methods.iter().map(|&me| bench_method(me, m)).collect();
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} |",
            r.method,
            mbs(r.encrypt),
            mbs(r.seal),
            mbs(r.batch),
            mbs(r.open),
            r.allocs
        );
    }
    println!();
    println!("References measured in the same run:");
    let find = |me: Method| rows.iter().find(|r| r.method == me);
    for (method, cipher) in
        [(Method::Aes128, "aes-128-cfb"), (Method::Aes, "aes-256-cfb"), (Method::TripleDes, "des-ede3-cfb")]
    {
        let Some(r) = find(method) else { continue };
        match openssl(cipher, m) {
            Some(o) => println!(
                "- `openssl speed -evp {cipher} -bytes {SIZE}`: {}; kcpd {method}: CFB {:.2}x, seal {:.2}x, seal_batch {:.2}x, open {:.2}x",
                mbs(o),
                r.encrypt / o,
                r.seal / o,
                r.batch / o,
                r.open / o
            ),
            None => println!("- openssl not available: no {cipher} reference"),
        }
    }
    if let Some(r) = find(Method::Twofish) {
        let tf = rustcrypto_twofish(m);
        println!(
            "- RustCrypto twofish 0.7 + cfb-mode 0.8: {}; kcpd's table-driven twofish CFB: {:.1}x",
            mbs(tf),
            r.encrypt / tf
        );
    }
}

fn rustcrypto_twofish(m: &Measure) -> f64 {
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
    let key = derive_key(b"bench");
    let mut buf = vec![0u8; SIZE];
    m.rate(SIZE, || {
        cfb_mode::Encryptor::<twofish::Twofish>::new((&key).into(), (&kcpd_crypto::INITIAL_VECTOR).into())
            .encrypt(&mut buf)
    })
}
