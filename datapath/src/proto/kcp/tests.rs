//! KCP tests: the kcp.json captures (kcp-go 5.6.1), then RTO, fast/early retransmit, windows, wrap-around.

use super::*;
use kcpd_vectors::{Value, det_bytes, hex, load};

const T0: u32 = 0x1234_5678;
const FAST: NoDelay = NoDelay { nodelay: false, interval: 30, resend: 2, nc: true };

fn kcp(stream: bool) -> Kcp {
    let mut k = Kcp::new(0x11223344, T0);
    k.set_nodelay(FAST);
    k.set_stream(stream);
    k
}

/// Flush everything due now.
fn drain(k: &mut Kcp, now: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; k.mtu()];
    while let Some(n) = k.poll_transmit(now, &mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

fn flush(k: &mut Kcp) -> Vec<Vec<u8>> {
    k.flush();
    drain(k, T0)
}

/// Zero the ts field of every segment (clock-dependent in the capture).
fn mask_ts(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    let mut off = 0;
    while let Some(h) = Header::parse(&v[off..]) {
        v[off + 8..off + 12].fill(0);
        off += OVERHEAD + h.len as usize;
    }
    v
}

fn packets(step: &Value) -> Vec<Vec<u8>> {
    step["output_packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let b = hex(&p["hex"]);
            let skip = p.get("reserved_prefix_len").and_then(|x| x.as_u64()).unwrap_or(0) as usize;
            assert!(b[..skip].iter().all(|&x| x == 0));
            b[skip..].to_vec()
        })
        .collect()
}

fn check(step: &Value, got: &[Vec<u8>]) {
    let want = packets(step);
    let a: Vec<_> = got.iter().map(|p| mask_ts(p)).collect();
    let b: Vec<_> = want.iter().map(|p| mask_ts(p)).collect();
    assert_eq!(a, b, "step {}: {}", step["step"], step["action"]);
}

fn recv_all(k: &mut Kcp) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match k.recv(&mut buf).unwrap() {
            0 => return out,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn kcp_json_message_mode() {
    let v = load("kcp.json");
    let s = v["message_mode"].as_array().unwrap();
    let (mut a, mut b) = (kcp(false), kcp(false));
    let big = det_bytes("kcp-message-3000", 3000);

    a.send(b"hello").unwrap();
    let a0 = flush(&mut a);
    check(&s[0], &a0);
    b.input(T0, &a0[0], true).unwrap();
    let b1 = flush(&mut b);
    check(&s[1], &b1);
    let mut buf = [0u8; 4096];
    assert_eq!(b.recv(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    a.input(T0, &b1[0], true).unwrap();
    assert!(drain(&mut a, T0).is_empty(), "step 3 sends nothing");

    assert_eq!(a.send(&big).unwrap(), 3000);
    let a2 = flush(&mut a);
    check(&s[4], &a2);
    for p in &a2 {
        b.input(T0, p, true).unwrap();
    }
    b.send(b"world").unwrap();
    let b5 = flush(&mut b);
    check(&s[5], &b5);
    let mut big_buf = vec![0u8; 3000];
    assert_eq!(b.recv(&mut big_buf[..100]), Err(KcpError::BufferTooSmall { have: 100, need: 3000 }));
    assert_eq!(b.recv(&mut big_buf).unwrap(), 3000);
    assert_eq!(big_buf, big);

    // una slides A's window: Input asks for a flush, which carries the ACK of "world".
    a.input(T0, &b5[0], true).unwrap();
    let a6 = drain(&mut a, T0);
    check(&s[7], &a6);
    assert_eq!(a.recv(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");

    a.probe |= ASK_SEND;
    let a7 = flush(&mut a);
    check(&s[8], &a7);
    b.input(T0, &a7[0], true).unwrap();
    let b8 = flush(&mut b);
    check(&s[9], &b8);

    a.send(b"m1").unwrap();
    let a9 = flush(&mut a);
    check(&s[10], &a9);
    a.send(b"m2").unwrap();
    let a10 = flush(&mut a);
    check(&s[11], &a10);
    b.input(T0, &a10[0], true).unwrap();
    let b11 = flush(&mut b);
    check(&s[12], &b11);
    assert_eq!(b.recv(&mut buf).unwrap(), 0, "m2 waits for m1");
    a.input(T0, &b11[0], true).unwrap();
    let a12 = flush(&mut a);
    check(&s[13], &a12);
    assert_eq!(a.stats().early_retrans_segs, 1);
    b.input(T0, &a9[0], true).unwrap();
    let b13 = flush(&mut b);
    check(&s[14], &b13);
    assert_eq!(b.recv(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"m1");
    assert_eq!(b.recv(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"m2");
}

#[test]
fn kcp_json_stream_mode() {
    let v = load("kcp.json");
    let s = v["stream_mode"].as_array().unwrap();
    let (mut c, mut d) = (kcp(true), kcp(true));
    let big = det_bytes("kcp-message-3000", 3000);
    c.send(b"hello").unwrap();
    c.send(b" world").unwrap();
    let c0 = flush(&mut c);
    check(&s[0], &c0);
    d.input(T0, &c0[0], true).unwrap();
    let d1 = flush(&mut d);
    check(&s[1], &d1);
    assert_eq!(recv_all(&mut d), b"hello world");
    c.input(T0, &d1[0], true).unwrap();
    drain(&mut c, T0);
    assert_eq!(c.send(&big).unwrap(), 3000);
    assert_eq!(c.send(&big[..200]).unwrap(), 200);
    let c2 = flush(&mut c);
    check(&s[3], &c2);
    for p in &c2 {
        d.input(T0, p, true).unwrap();
    }
    let d5 = flush(&mut d);
    check(&s[4], &d5);
    let mut want = big.clone();
    want.extend_from_slice(&big[..200]);
    assert_eq!(recv_all(&mut d), want);
}

#[test]
fn kcp_json_session_like() {
    let v = load("kcp.json");
    let s = v["session_like"].as_array().unwrap();
    let mut e = kcp(true);
    // MTU 1350 with 28 reserved bytes (crypto 20 + FEC 8): 1322 bytes of KCP output, mss 1298.
    e.set_mtu(1350 - 28).unwrap();
    e.set_wndsize(128, 512);
    assert_eq!(e.mss(), s[0]["mss"].as_u64().unwrap() as usize);
    e.send(&det_bytes("kcp-message-3000", 3000)).unwrap();
    let out = flush(&mut e);
    check(&s[0], &out);
}

// ---- behaviour ----

/// Two KCPs and a lossy wire between them, stepped in 1 ms ticks.
struct Pair {
    a: Kcp,
    b: Kcp,
    now: u32,
    /// Decides per datagram (direction a->b?, index) whether it is lost.
    lose: Box<dyn FnMut(bool, u64) -> bool>,
    sent: u64,
    a_to_b: u64,
}

impl Pair {
    fn new(mode: Mode, start_sn: Option<u32>) -> Pair {
        let mk = || {
            let mut k = Kcp::new(7, 0);
            k.set_nodelay(mode.nodelay());
            k.set_stream(true);
            k.set_wndsize(128, 128);
            k
        };
        let (mut a, mut b) = (mk(), mk());
        if let Some(sn) = start_sn {
            a.snd_una = sn;
            a.snd_nxt = sn;
            b.rcv_nxt = sn;
        }
        Pair { a, b, now: 0, lose: Box::new(|_, _| false), sent: 0, a_to_b: 0 }
    }

    fn step(&mut self) {
        let mut buf = vec![0u8; 1500];
        let mut pa = Vec::new();
        while let Some(n) = self.a.poll_transmit(self.now, &mut buf) {
            pa.push(buf[..n].to_vec());
        }
        let mut pb = Vec::new();
        while let Some(n) = self.b.poll_transmit(self.now, &mut buf) {
            pb.push(buf[..n].to_vec());
        }
        for p in pa {
            self.sent += 1;
            self.a_to_b += 1;
            if !(self.lose)(true, self.sent) {
                self.b.input(self.now, &p, true).unwrap();
            }
        }
        for p in pb {
            self.sent += 1;
            if !(self.lose)(false, self.sent) {
                self.a.input(self.now, &p, true).unwrap();
            }
        }
        self.now = self.now.wrapping_add(1);
    }

    /// Move `data` a -> b; returns the elapsed ms.
    fn transfer(&mut self, data: &[u8]) -> u32 {
        let start = self.now;
        let mut off = 0;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < data.len() {
            if off < data.len() {
                let n = self.a.send(&data[off..]).unwrap_or(0);
                if n > 0 {
                    self.a.flush();
                }
                off += n;
            }
            self.step();
            loop {
                let n = self.b.recv(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(self.now.wrapping_sub(start) < 600_000, "transfer stalled at {} of {}", got.len(), data.len());
        }
        assert_eq!(got, data);
        self.now.wrapping_sub(start)
    }
}

#[test]
fn lossless_transfer_across_sequence_number_wrap() {
    let data = det_bytes("wrap", 400_000);
    let mut p = Pair::new(Mode::Fast3, Some(u32::MAX - 50));
    p.transfer(&data);
    assert!(diff(p.a.snd_nxt, u32::MAX - 50) > 250, "wrapped past 0");
    assert_eq!(p.a.stats().retrans_segs, 0);
}

#[test]
fn lossy_transfer_recovers_under_every_mode() {
    for mode in [Mode::Normal, Mode::Fast, Mode::Fast2, Mode::Fast3] {
        let data = det_bytes("lossy", 300_000);
        let mut p = Pair::new(mode, Some(u32::MAX - 10));
        let mut x = 12345u64;
        p.lose = Box::new(move |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.is_multiple_of(10)
        });
        p.transfer(&data);
        let s = p.a.stats();
        assert!(s.retrans_segs > 0, "{mode:?}");
        assert_eq!(s.retrans_segs, s.fast_retrans_segs + s.early_retrans_segs + s.lost_segs);
    }
}

#[test]
fn rto_backs_off_and_retransmits() {
    let mut k = Kcp::new(1, 0);
    k.set_nodelay(Mode::Normal.nodelay());
    k.set_stream(true);
    k.send(b"x").unwrap();
    k.flush();
    assert_eq!(drain(&mut k, 0).len(), 1);
    // Initial RTO 200: the first retransmission is due at 200, then backoff rto += rx_rto (nodelay off).
    assert_eq!(k.poll_timeout(), Some(40), "the timer runs every interval while data is in flight");
    assert!(drain(&mut k, 199).is_empty());
    assert_eq!(drain(&mut k, 200).len(), 1);
    assert_eq!(k.stats().lost_segs, 1);
    assert!(drain(&mut k, 399).is_empty());
    assert_eq!(drain(&mut k, 600).len(), 1, "second RTO after 200 + 200");
    assert_eq!(k.snd_buf[0].xmit, 3);
    // nodelay: backoff by half.
    let mut k = Kcp::new(1, 0);
    k.set_nodelay(Mode::Fast3.nodelay());
    k.set_stream(true);
    k.send(b"x").unwrap();
    k.flush();
    drain(&mut k, 0);
    assert_eq!(drain(&mut k, 200).len(), 1);
    assert_eq!(k.snd_buf[0].rto, 300);
}

#[test]
fn rtt_estimation_follows_rfc6298() {
    let mut k = Kcp::new(1, 0);
    k.set_nodelay(Mode::Fast.nodelay());
    k.update_ack(100);
    assert_eq!((k.rx_srtt, k.rx_rttvar), (100, 50));
    assert_eq!(k.rto(), 100 + 200);
    k.update_ack(100);
    assert_eq!(k.rx_srtt, 100);
    k.update_ack(20);
    assert!(k.rx_srtt < 100 && k.rto() >= RTO_MIN);
    for _ in 0..50 {
        k.update_ack(1);
    }
    assert_eq!(k.rto(), RTO_MIN.max(k.rx_srtt as u32 + k.interval()), "bounded by minrto and interval");
}

fn ack(conv: u32, sn: u32, ts: u32, una: u32) -> Vec<u8> {
    let mut v = vec![0u8; OVERHEAD];
    Header { conv, cmd: Cmd::Ack as u8, frg: 0, wnd: 128, ts, sn, una, len: 0 }.write(&mut v);
    v
}

#[test]
fn fast_retransmit_after_resend_acks_then_once_per_rto() {
    let mut k = Kcp::new(1, 0);
    k.set_nodelay(NoDelay { nodelay: true, interval: 10, resend: 2, nc: true });
    k.set_stream(true);
    k.set_wndsize(64, 64);
    for i in 0..6u8 {
        k.send(&[i; 1000]).unwrap();
    }
    k.flush();
    drain(&mut k, 0);
    // sn 0 is lost; ACKs for 1 and 2 arrive (each counts a fast-ack for sn 0).
    k.input(5, &ack(1, 1, 0, 0), true).unwrap();
    k.input(5, &ack(1, 2, 0, 0), true).unwrap();
    assert!(k.want_full, "reaching the threshold flushes at once");
    let out = drain(&mut k, 5);
    assert_eq!(out.len(), 1);
    assert_eq!(Header::parse(&out[0]).unwrap().sn, 0);
    assert_eq!(k.stats().fast_retrans_segs, 1);
    // More ACKs do not retransmit it again before its RTO.
    k.input(6, &ack(1, 3, 0, 0), true).unwrap();
    k.input(6, &ack(1, 4, 0, 0), true).unwrap();
    k.flush();
    assert!(drain(&mut k, 6).iter().all(|p| Header::parse(p).unwrap().sn != 0));
    assert_eq!(k.stats().fast_retrans_segs, 1);
    assert_eq!(k.stats().early_retrans_segs, 0);
    // A cumulative ACK frees everything and empties the window.
    k.input(7, &ack(1, 5, 0, 6), true).unwrap();
    assert_eq!(k.wait_snd(), 0);
}

#[test]
fn peer_window_limits_and_zero_window_probe() {
    let mut k = Kcp::new(1, 0);
    k.set_nodelay(Mode::Fast3.nodelay());
    k.set_stream(true);
    k.set_wndsize(128, 128);
    let mut a = ack(1, 0, 0, 0);
    a[6..8].copy_from_slice(&3u16.to_le_bytes());
    // Remote window 3 (from a WINS) bounds what is in flight.
    a[4] = Cmd::Wins as u8;
    k.input(0, &a, true).unwrap();
    assert_eq!(k.rmt_wnd(), 3);
    k.send(&vec![1u8; 10 * k.mss()]).unwrap();
    k.flush();
    let out = drain(&mut k, 0);
    assert_eq!(out.iter().map(|p| p.len()).sum::<usize>(), 3 * k.mtu());
    // A zero window: probes (WASK) after 500 ms, backing off by 1.5x.
    a[6..8].copy_from_slice(&0u16.to_le_bytes());
    k.input(1, &a, true).unwrap();
    let wask = |out: &[Vec<u8>]| out.iter().any(|p| p[4] == Cmd::Wask as u8);
    assert!(!wask(&drain(&mut k, 10)));
    assert!(!wask(&drain(&mut k, 400)));
    assert!(wask(&drain(&mut k, 520)));
    assert!(!wask(&drain(&mut k, 1000)));
    assert!(wask(&drain(&mut k, 1300)));
}

#[test]
fn receive_window_edges() {
    let mut k = Kcp::new(1, 0);
    k.set_stream(true);
    k.set_wndsize(4, 4);
    let push = |sn: u32| {
        let mut v = vec![0u8; OVERHEAD + 1];
        Header { conv: 1, cmd: 81, frg: 0, wnd: 32, ts: 0, sn, una: 0, len: 1 }.write(&mut v);
        v[OVERHEAD] = sn as u8;
        v
    };
    // sn 4 is outside [0, 4): not acked, counted as repeat.
    k.input(0, &push(4), true).unwrap();
    assert!(k.acklist.is_empty());
    assert_eq!(k.stats().repeat_segs, 1);
    for sn in [3, 1, 2, 0] {
        k.input(0, &push(sn), true).unwrap();
    }
    // All four queued; the window is full.
    assert_eq!(k.wnd_unused(), 0);
    assert_eq!(k.rcv_nxt, 4);
    // A duplicate below rcv_nxt is acked again but not stored.
    k.input(0, &push(2), true).unwrap();
    assert_eq!(k.acklist.len(), 5);
    assert_eq!(k.stats().repeat_segs, 2);
    let mut buf = [0u8; 2];
    assert_eq!(k.recv(&mut buf).unwrap(), 2);
    // Draining from a full window schedules a WINS.
    assert_eq!(k.probe & ASK_TELL, ASK_TELL);
    assert_eq!(buf, [0, 1]);
    let mut buf = [0u8; 8];
    assert_eq!(k.recv(&mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], &[2, 3]);
}

#[test]
fn input_errors_stop_at_the_bad_segment() {
    let mut k = Kcp::new(1, 0);
    let mut two = ack(1, 0, 0, 0);
    two.extend_from_slice(&ack(2, 0, 0, 0));
    assert_eq!(k.input(0, &two, true), Err(InputError::Conv { got: 2, want: 1 }));
    assert_eq!(k.stats().in_segs, 1, "the first segment was processed");
    assert_eq!(k.input(0, &[0; 23], true), Err(InputError::TooShort(23)));
    let mut bad = ack(1, 0, 0, 0);
    bad[4] = 99;
    assert_eq!(k.input(0, &bad, true), Err(InputError::Cmd(99)));
    let mut trunc = ack(1, 0, 0, 0);
    trunc[20] = 5;
    assert_eq!(k.input(0, &trunc, true), Err(InputError::Truncated { claimed: 5, left: 0 }));
}

#[test]
fn recovered_input_does_not_set_the_window() {
    let mut k = Kcp::new(1, 0);
    let mut a = ack(1, 0, 0, 0);
    a[6..8].copy_from_slice(&0u16.to_le_bytes());
    k.input(0, &a, false).unwrap();
    assert_eq!(k.rmt_wnd(), WND_RCV);
    k.input(0, &a, true).unwrap();
    assert_eq!(k.rmt_wnd(), 0);
}

#[test]
fn idle_kcp_has_no_timer() {
    let mut p = Pair::new(Mode::Fast3, None);
    p.transfer(&det_bytes("warm", 200_000));
    for _ in 0..100 {
        p.step();
    }
    assert_eq!(p.a.poll_timeout(), None);
    assert_eq!(p.b.poll_timeout(), None);
    // New work arms it at once.
    p.a.send(b"x").unwrap();
    p.a.flush();
    assert_eq!(p.a.poll_timeout(), Some(p.now - 1));
}
