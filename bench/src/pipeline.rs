//! The session pipeline in memory: application bytes -> KCP -> FEC -> crypto -> datagram -> crypto ->
//! FEC -> KCP -> application bytes, sender and receiver in one thread, next to the raw AES-128-CFB seal
//! speed of kcpd-crypto measured in the same run. And the per-tick cost of many idle sessions.

use kcpd_time::{Duration as D, Instant as T};
use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::proto::kcp::Mode;
use kcpd_datapath::proto::session::{Session, SessionConfig};
use kcpd_fec::ParityRule;

use crate::alloc;
use crate::measure::{Measure, mbs};

const MTU: usize = 1400;
const CHUNK: usize = 64 * 1024;
const BATCH: usize = 64;

fn cfg() -> SessionConfig {
    SessionConfig {
        mtu: MTU,
        data_shards: 10,
        parity_shards: 3,
        parity_rule: ParityRule::SkipSparse,
        nodelay: Mode::Fast3.nodelay(),
        snd_wnd: 1024,
        rcv_wnd: 1024,
        ack_nodelay: false,
        stream: true,
        cc: Default::default(),
    }
}

struct Pair {
    a: Session,
    b: Session,
    rng: NonceGen,
    now: T,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    rx: Vec<u8>,
    payload: Vec<u8>,
}

impl Pair {
    fn new(method: Method) -> Pair {
        let c = Arc::new(PacketCrypto::from_password(method, "bench"));
        Pair {
            a: Session::new(1, c.clone(), &cfg(), T::ZERO).expect("valid"),
            b: Session::new(1, c, &cfg(), T::ZERO).expect("valid"),
            rng: NonceGen::from_seed([1; 32]),
            now: T::ZERO,
            bufs: vec![vec![0u8; 1500]; BATCH],
            lens: vec![0; BATCH],
            rx: vec![0u8; CHUNK],
            payload: (0..CHUNK).map(|i| (i * 7) as u8).collect(),
        }
    }

    /// Move one chunk of application bytes a -> b; returns bytes delivered.
    fn step(&mut self) -> usize {
        self.now += D::from_millis(1);
        let now = self.now;
        if self.a.send(&self.payload) > 0 {
            self.a.flush();
        }
        let mut delivered = 0;
        loop {
            let n = {
                let mut refs: [&mut [u8]; BATCH] = core::array::from_fn(|_| &mut [][..]);
                for (r, b) in refs.iter_mut().zip(self.bufs.iter_mut()) {
                    *r = &mut b[..];
                }
                self.a.poll_transmit_batch(now, &mut self.rng, &mut refs, &mut self.lens)
            };
            for i in 0..n {
                let _ = self.b.handle_datagram(now, &mut self.bufs[i][..self.lens[i]]);
            }
            loop {
                let r = self.b.recv(&mut self.rx);
                if r == 0 {
                    break;
                }
                delivered += r;
            }
            while let Some(n) = self.b.poll_transmit(now, &mut self.rng, &mut self.bufs[0]) {
                let _ = self.a.handle_datagram(now, &mut self.bufs[0][..n]);
            }
            if n == 0 {
                break;
            }
        }
        delivered
    }
}

pub fn run(m: &Measure) {
    println!("## pipeline: one session, sender and receiver in one thread, MTU {MTU}, FEC 10+3, fast3");
    println!();
    let raw = {
        let c = PacketCrypto::from_password(Method::Aes128, "bench");
        let mut rng = NonceGen::from_seed([2; 32]);
        let mut buf = vec![0u8; MTU];
        m.rate(MTU, || c.seal(&mut rng, &mut buf).expect("sized"))
    };
    println!("| crypt | application goodput | vs raw AES-128-CFB seal | allocs per datagram (steady state) |");
    println!("|---|---|---|---|");
    for method in [Method::Aes128, Method::Aes, Method::Aes128Gcm, Method::Salsa20, Method::None] {
        let mut p = Pair::new(method);
        // Warm up: every buffer and pool reaches its working size.
        for _ in 0..200 {
            p.step();
        }
        let goodput = measure_goodput(m, &mut p);
        let out_before = p.a.snmp().out_pkts + p.b.snmp().out_pkts;
        let allocs = alloc::per_call(200, || {
            p.step();
        });
        let pkts = (p.a.snmp().out_pkts + p.b.snmp().out_pkts - out_before) as f64 / 201.0;
        println!("| {method} | {} | {:.2}x | {:.4} |", mbs(goodput), goodput / raw, allocs / pkts.max(1.0));
    }
    println!();
    println!("Reference, same run: kcpd-crypto aes-128 seal of one {MTU}-byte datagram: {}", mbs(raw));
    println!();
    idle_sessions(m);
}

/// Application bytes per second through a pair.
fn measure_goodput(m: &Measure, p: &mut Pair) -> f64 {
    use std::time::Instant;
    let mut rates = Vec::new();
    for _ in 0..m.reps {
        let start = Instant::now();
        let mut bytes = 0usize;
        while start.elapsed().as_secs_f64() < m.seconds {
            bytes += p.step();
        }
        rates.push(bytes as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    rates[rates.len() / 2]
}

/// 5,000 sessions: idle ones cost nothing per tick; ones with data in flight cost one timer flush.
fn idle_sessions(m: &Measure) {
    const N: usize = 5000;
    let c = Arc::new(PacketCrypto::from_password(Method::Aes128, "bench"));
    let mut rng = NonceGen::from_seed([3; 32]);
    let mut sessions: Vec<Session> =
        (0..N).map(|i| Session::new(i as u32, c.clone(), &cfg(), T::ZERO).expect("valid")).collect();
    let mut buf = vec![0u8; 1500];
    let mut now = T::ZERO;
    let idle = m.rate(N, || {
        now += D::from_millis(10);
        for s in sessions.iter_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                while s.poll_transmit(now, &mut rng, &mut buf).is_some() {}
            }
        }
    });
    // Give each session one unacknowledged segment: its timer now fires every interval (and RTO).
    for s in sessions.iter_mut() {
        s.send(b"x");
        s.flush();
        while s.poll_transmit(now, &mut rng, &mut buf).is_some() {}
    }
    let mut flushed = 0u64;
    let busy = m.rate(N, || {
        now += D::from_millis(10);
        for s in sessions.iter_mut() {
            if s.poll_timeout().is_some_and(|t| t <= now) {
                while s.poll_transmit(now, &mut rng, &mut buf).is_some() {
                    flushed += 1;
                }
            }
        }
    });
    println!("## {N} sessions, one 10 ms tick each (fast3)");
    println!();
    println!("- idle (nothing in flight): {:.1} ns per session per tick (no timer armed)", 1e9 / idle);
    println!(
        "- one unacknowledged segment each (timer flush every interval, RTO retransmissions): {:.1} ns per session per tick; {flushed} datagrams re-sent during the run",
        1e9 / busy
    );
}
