//! Structured fuzzing of the endpoint and its conversations: plausible KCP and FEC datagrams from a few
//! addresses, with random configuration; nothing may panic or loop (from the review of this module).

use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};
use kcpd_datapath::proto::conn::{ConnConfig, Upper};
use kcpd_datapath::proto::endpoint::{Endpoint, ListenConfig};
use kcpd_datapath::proto::session::SessionConfig;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn kcp_seg(r: &mut Rng, conv: u32, out: &mut Vec<u8>) {
    let cmd = [81u8, 82, 83, 84, 81, 82][r.below(6) as usize];
    let len = if cmd == 81 { r.below(200) as usize } else { 0 };
    out.extend_from_slice(&conv.to_le_bytes());
    out.push(cmd);
    out.push(0);
    out.extend_from_slice(&(r.below(600) as u16).to_le_bytes());
    out.extend_from_slice(&(r.next() as u32 % 100000).to_le_bytes());
    out.extend_from_slice(&(r.below(40) as u32).to_le_bytes());
    out.extend_from_slice(&(r.below(40) as u32).to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for _ in 0..len {
        out.push(r.next() as u8);
    }
}

#[test]
fn listener_structured_fuzz() {
    let iters: u64 = std::env::var("KCPD_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    for seed in 1..=iters {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let crypto = Arc::new(PacketCrypto::from_password(Method::Null, "x"));
        let (ds, ps) = [(10, 3), (0, 0), (2, 1), (1, 1), (20, 10)][r.below(5) as usize];
        let cfg = SessionConfig { data_shards: ds, parity_shards: ps, ..SessionConfig::kcptun_server() };
        let mut l = Endpoint::default();
        let lcfg = ListenConfig::new(Arc::new(ConnConfig::new(crypto, cfg)), Upper::Raw);
        l.listen(0, Arc::new(lcfg)).unwrap();
        let addr = |n: u64| std::net::SocketAddr::from(([10, 0, 0, 1], 1000 + n as u16));
        let mut rng = NonceGen::from_seed([3; 32]);
        let mut tx = vec![0u8; 1500];
        let mut rx = vec![0u8; 70000];
        // Anywhere on KCP's wrapping clock.
        let mut now = kcpd_time::Instant::from_millis(u64::from(r.next() as u32));
        let base = r.next() as u32;
        let (pds, pps) = (1 + r.below(12) as u32, 1 + r.below(5) as u32);
        for _ in 0..500 {
            let mut pkt = Vec::new();
            let conv = [1u32, 2, 3][r.below(3) as usize];
            match r.below(4) {
                0 => {
                    for _ in 0..1 + r.below(3) {
                        kcp_seg(&mut r, conv, &mut pkt);
                    }
                }
                _ => {
                    let seqid = base.wrapping_add(r.below(200) as u32);
                    let is_data = if r.below(10) == 0 { r.below(2) == 0 } else { seqid % (pds + pps) < pds };
                    pkt.extend_from_slice(&seqid.to_le_bytes());
                    pkt.extend_from_slice(
                        &(if is_data {
                            0xf1u16
                        } else if r.below(20) == 0 {
                            0xf3
                        } else {
                            0xf2
                        })
                        .to_le_bytes(),
                    );
                    let mut body = Vec::new();
                    for _ in 0..r.below(3) {
                        kcp_seg(&mut r, conv, &mut body);
                    }
                    let size = if r.below(10) == 0 { r.next() as u16 } else { (body.len() + 2) as u16 };
                    pkt.extend_from_slice(&size.to_le_bytes());
                    pkt.extend_from_slice(&body);
                    if !is_data {
                        let extra = r.below(300) as usize;
                        pkt.extend((0..extra).map(|_| r.next() as u8));
                    }
                }
            }
            if r.below(30) == 0 {
                pkt.truncate(r.below(pkt.len() as u64 + 1) as usize);
            }
            pkt.truncate(1500);
            now += kcpd_time::Duration::from_millis(r.below(50));
            let from = addr(r.below(4));
            let _ = l.handle_datagram(now, 0, from, &mut pkt);
            while l.poll_retired().is_some() {}
            if r.below(3) == 0 {
                while l.accept().is_some() {}
            }
            for (_, s) in l.iter_mut() {
                let _ = s.stream_read(None, &mut rx[..r.below(70000) as usize]);
                let mut g = 0;
                let mut lens = [0usize; 1];
                while s.poll_transmit(now, &mut rng, &mut tx, &mut lens) == 1 {
                    assert!(lens[0] <= 1500);
                    g += 1;
                    assert!(g < 10000);
                }
            }
            if r.below(50) == 0
                && let Some(h) = l.lookup(0, addr(r.below(4)))
            {
                l.remove(h);
            }
        }
    }
}
