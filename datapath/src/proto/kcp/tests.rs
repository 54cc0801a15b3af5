//! KCP tests: the kcp.json captures (kcp-go 5.6.1), then RTO, fast/early retransmit, windows, wrap-around.

use super::*;
use kcpd_vectors::{Value, det_bytes, hex, load};

/// KCP's clock reading `ms` (these tests speak KCP's wrapping milliseconds, wrap included).
fn t(ms: u32) -> Instant {
    Instant::from_millis(u64::from(ms))
}

const T0: u32 = 0x1234_5678;
const FAST: NoDelay = NoDelay { nodelay: false, interval: 30, resend: 2, nc: true };

fn kcp(stream: bool) -> Kcp {
    let mut k = Kcp::new(0x11223344, t(T0));
    k.set_nodelay(FAST);
    k.set_stream(stream);
    k
}

/// Flush everything due now.
fn drain(k: &mut Kcp, now: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; k.mtu()];
    while let Some(n) = k.poll_transmit(t(now), &mut buf) {
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
    b.input(t(T0), &a0[0], true).unwrap();
    let b1 = flush(&mut b);
    check(&s[1], &b1);
    let mut buf = [0u8; 4096];
    assert_eq!(b.recv(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    a.input(t(T0), &b1[0], true).unwrap();
    assert!(drain(&mut a, T0).is_empty(), "step 3 sends nothing");

    assert_eq!(a.send(&big).unwrap(), 3000);
    let a2 = flush(&mut a);
    check(&s[4], &a2);
    for p in &a2 {
        b.input(t(T0), p, true).unwrap();
    }
    b.send(b"world").unwrap();
    let b5 = flush(&mut b);
    check(&s[5], &b5);
    let mut big_buf = vec![0u8; 3000];
    assert_eq!(b.recv(&mut big_buf[..100]), Err(KcpError::BufferTooSmall { have: 100, need: 3000 }));
    assert_eq!(b.recv(&mut big_buf).unwrap(), 3000);
    assert_eq!(big_buf, big);

    // una slides A's window: Input asks for a flush, which carries the ACK of "world".
    a.input(t(T0), &b5[0], true).unwrap();
    let a6 = drain(&mut a, T0);
    check(&s[7], &a6);
    assert_eq!(a.recv(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"world");

    a.probe |= ASK_SEND;
    let a7 = flush(&mut a);
    check(&s[8], &a7);
    b.input(t(T0), &a7[0], true).unwrap();
    let b8 = flush(&mut b);
    check(&s[9], &b8);

    a.send(b"m1").unwrap();
    let a9 = flush(&mut a);
    check(&s[10], &a9);
    a.send(b"m2").unwrap();
    let a10 = flush(&mut a);
    check(&s[11], &a10);
    b.input(t(T0), &a10[0], true).unwrap();
    let b11 = flush(&mut b);
    check(&s[12], &b11);
    assert_eq!(b.recv(&mut buf).unwrap(), 0, "m2 waits for m1");
    a.input(t(T0), &b11[0], true).unwrap();
    let a12 = flush(&mut a);
    check(&s[13], &a12);
    assert_eq!(a.stats().early_retrans_segs, 1);
    b.input(t(T0), &a9[0], true).unwrap();
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
    d.input(t(T0), &c0[0], true).unwrap();
    let d1 = flush(&mut d);
    check(&s[1], &d1);
    assert_eq!(recv_all(&mut d), b"hello world");
    c.input(t(T0), &d1[0], true).unwrap();
    drain(&mut c, T0);
    assert_eq!(c.send(&big).unwrap(), 3000);
    assert_eq!(c.send(&big[..200]).unwrap(), 200);
    let c2 = flush(&mut c);
    check(&s[3], &c2);
    for p in &c2 {
        d.input(t(T0), p, true).unwrap();
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
            let mut k = Kcp::new(7, t(0));
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
        while let Some(n) = self.a.poll_transmit(t(self.now), &mut buf) {
            pa.push(buf[..n].to_vec());
        }
        let mut pb = Vec::new();
        while let Some(n) = self.b.poll_transmit(t(self.now), &mut buf) {
            pb.push(buf[..n].to_vec());
        }
        for p in pa {
            self.sent += 1;
            self.a_to_b += 1;
            if !(self.lose)(true, self.sent) {
                self.b.input(t(self.now), &p, true).unwrap();
            }
        }
        for p in pb {
            self.sent += 1;
            if !(self.lose)(false, self.sent) {
                self.a.input(t(self.now), &p, true).unwrap();
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
    let mut k = Kcp::new(1, t(0));
    k.set_nodelay(Mode::Normal.nodelay());
    k.set_stream(true);
    k.send(b"x").unwrap();
    k.flush();
    assert_eq!(drain(&mut k, 0).len(), 1);
    // Initial RTO 200: the first retransmission is due at 200, then backoff rto += rx_rto (nodelay off).
    assert_eq!(k.poll_timeout().map(Instant::ms32), Some(40), "the timer runs every interval while data is in flight");
    assert!(drain(&mut k, 199).is_empty());
    assert_eq!(drain(&mut k, 200).len(), 1);
    assert_eq!(k.stats().lost_segs, 1);
    assert!(drain(&mut k, 399).is_empty());
    assert_eq!(drain(&mut k, 600).len(), 1, "second RTO after 200 + 200");
    assert_eq!(k.snd_buf[0].xmit, 3);
    // nodelay: backoff by half.
    let mut k = Kcp::new(1, t(0));
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
    let mut k = Kcp::new(1, t(0));
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
    let mut k = Kcp::new(1, t(0));
    k.set_nodelay(NoDelay { nodelay: true, interval: 10, resend: 2, nc: true });
    k.set_stream(true);
    k.set_wndsize(64, 64);
    for i in 0..6u8 {
        k.send(&[i; 1000]).unwrap();
    }
    k.flush();
    drain(&mut k, 0);
    // sn 0 is lost; ACKs for 1 and 2 arrive (each counts a fast-ack for sn 0).
    k.input(t(5), &ack(1, 1, 0, 0), true).unwrap();
    k.input(t(5), &ack(1, 2, 0, 0), true).unwrap();
    assert!(k.want_full, "reaching the threshold flushes at once");
    let out = drain(&mut k, 5);
    assert_eq!(out.len(), 1);
    assert_eq!(Header::parse(&out[0]).unwrap().sn, 0);
    assert_eq!(k.stats().fast_retrans_segs, 1);
    // More ACKs do not retransmit it again before its RTO.
    k.input(t(6), &ack(1, 3, 0, 0), true).unwrap();
    k.input(t(6), &ack(1, 4, 0, 0), true).unwrap();
    k.flush();
    assert!(drain(&mut k, 6).iter().all(|p| Header::parse(p).unwrap().sn != 0));
    assert_eq!(k.stats().fast_retrans_segs, 1);
    assert_eq!(k.stats().early_retrans_segs, 0);
    // A cumulative ACK frees everything and empties the window.
    k.input(t(7), &ack(1, 5, 0, 6), true).unwrap();
    assert_eq!(k.wait_snd(), 0);
}

/// A segment sent when the peer's window (which counts from `una`) was full is marked application-limited
/// for the congestion controller, though most of that window was acknowledged beyond a hole and little is
/// in flight: its rate sample shows the window, not the path (counted by what is in flight, startup saw a
/// plateau and ended at a fifth of the link while the receiver's window held it behind holes).
#[test]
fn a_send_at_the_peers_window_edge_behind_a_hole_is_window_limited() {
    let ack16 = |sn: u32, una: u32| {
        let mut v = vec![0u8; OVERHEAD];
        Header { conv: 1, cmd: Cmd::Ack as u8, frg: 0, wnd: 16, ts: 0, sn, una, len: 0 }.write(&mut v);
        v
    };
    let mut k = Kcp::new(1, t(0));
    k.set_nodelay(NoDelay { nodelay: true, interval: 10, resend: 0, nc: true });
    k.set_wndsize(64, 64);
    k.set_cc_wnd(1000);
    k.input(t(0), &ack16(999, 0), true).unwrap();
    for i in 0..40u8 {
        k.send(&[i; 1000]).unwrap();
    }
    k.flush();
    assert_eq!(drain(&mut k, 0).len(), 16, "the peer's window");
    // sn 1 is lost; everything else arrives.
    let mut acks = ack16(0, 1);
    for sn in 2..16 {
        acks.extend_from_slice(&ack16(sn, 1));
    }
    k.input(t(100), &acks, true).unwrap();
    assert_eq!(k.in_flight(), 1);
    k.flush();
    let out = drain(&mut k, 100);
    // sn 16 (the window's last), and sn 1 again (early retransmission).
    assert!(out.iter().any(|p| Header::parse(p).unwrap().sn == 16));
    k.input(t(200), &ack16(16, 1), true).unwrap();
    assert!(k.rate_sample().unwrap().app_limited, "sent at the window's edge");
}

/// With [`Kcp::set_refast`] (a congestion controller's sender), a fast retransmission that is lost in
/// turn is fast-retransmitted again once `resend` segments sent after it are acknowledged while it is
/// not, before its RTO; acknowledgements of segments sent before it do not count. kcp-go waits for the
/// RTO.
#[test]
fn with_refast_a_lost_repair_is_repaired_again_by_later_acks() {
    let sns = |out: &[Vec<u8>]| out.iter().map(|p| Header::parse(p).unwrap().sn).collect::<Vec<_>>();
    let run = |refast: bool| {
        let mut k = Kcp::new(1, t(0));
        k.set_nodelay(NoDelay { nodelay: true, interval: 10, resend: 2, nc: true });
        k.set_stream(true);
        k.set_wndsize(64, 64);
        k.set_refast(refast);
        for i in 0..6u8 {
            k.send(&[i; 1000]).unwrap();
        }
        k.flush();
        // Stream mode: 6000 bytes in five segments.
        assert_eq!(drain(&mut k, 0).len(), 5);
        // sn 0 is lost; ACKs for 1 and 2 repair it (sent at 5).
        k.input(t(5), &ack(1, 1, 0, 0), true).unwrap();
        k.input(t(5), &ack(1, 2, 0, 0), true).unwrap();
        assert_eq!(sns(&drain(&mut k, 5)), [0]);
        // ACKs of segments sent before the repair say nothing about it.
        k.input(t(6), &ack(1, 3, 0, 0), true).unwrap();
        k.input(t(10), &ack(1, 4, 0, 0), true).unwrap();
        k.flush();
        assert!(!sns(&drain(&mut k, 10)).contains(&0));
        // New data goes out after the repair; two of its ACKs arrive, the repair's does not: lost too.
        for i in 6..9u8 {
            k.send(&[i; 1000]).unwrap();
        }
        k.flush();
        assert_eq!(sns(&drain(&mut k, 10)), [5, 6, 7]);
        k.input(t(20), &ack(1, 5, 10, 0), true).unwrap();
        k.input(t(20), &ack(1, 6, 10, 0), true).unwrap();
        k.flush();
        let out = sns(&drain(&mut k, 20));
        (out, k.stats().fast_retrans_segs, k.stats().lost_segs)
    };
    // Its RTO (at least 30 ms after the repair at 5) has not come at 20.
    assert_eq!(run(true), (vec![0], 2, 0));
    assert_eq!(run(false), (vec![], 1, 0));
}

#[test]
fn peer_window_limits_and_zero_window_probe() {
    let mut k = Kcp::new(1, t(0));
    k.set_nodelay(Mode::Fast3.nodelay());
    k.set_stream(true);
    k.set_wndsize(128, 128);
    let mut a = ack(1, 0, 0, 0);
    a[6..8].copy_from_slice(&3u16.to_le_bytes());
    // Remote window 3 (from a WINS) bounds what is in flight.
    a[4] = Cmd::Wins as u8;
    k.input(t(0), &a, true).unwrap();
    assert_eq!(k.rmt_wnd(), 3);
    k.send(&vec![1u8; 10 * k.mss()]).unwrap();
    k.flush();
    let out = drain(&mut k, 0);
    assert_eq!(out.iter().map(|p| p.len()).sum::<usize>(), 3 * k.mtu());
    // A zero window: probes (WASK) after 500 ms, backing off by 1.5x.
    a[6..8].copy_from_slice(&0u16.to_le_bytes());
    k.input(t(1), &a, true).unwrap();
    let wask = |out: &[Vec<u8>]| out.iter().any(|p| p[4] == Cmd::Wask as u8);
    assert!(!wask(&drain(&mut k, 10)));
    assert!(!wask(&drain(&mut k, 400)));
    assert!(wask(&drain(&mut k, 520)));
    assert!(!wask(&drain(&mut k, 1000)));
    assert!(wask(&drain(&mut k, 1300)));
}

#[test]
fn receive_window_edges() {
    let mut k = Kcp::new(1, t(0));
    k.set_stream(true);
    k.set_wndsize(4, 4);
    let push = |sn: u32| {
        let mut v = vec![0u8; OVERHEAD + 1];
        Header { conv: 1, cmd: 81, frg: 0, wnd: 32, ts: 0, sn, una: 0, len: 1 }.write(&mut v);
        v[OVERHEAD] = sn as u8;
        v
    };
    // sn 4 is outside [0, 4): not acked, counted as repeat.
    k.input(t(0), &push(4), true).unwrap();
    assert!(k.acklist.is_empty());
    assert_eq!(k.stats().repeat_segs, 1);
    for sn in [3, 1, 2, 0] {
        k.input(t(0), &push(sn), true).unwrap();
    }
    // All four queued; the window is full.
    assert_eq!(k.wnd_unused(), 0);
    assert_eq!(k.rcv_nxt, 4);
    // A duplicate below rcv_nxt is acked again but not stored.
    k.input(t(0), &push(2), true).unwrap();
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

/// Autotuning measures what arrives, not what is delivered in order: with the window's first segment
/// missing for three round trips (its repair lost too), a sender at the window's edge still doubles the
/// window each round trip; in-order delivery (none) would have left it where it was.
#[test]
fn an_autotuned_receive_window_grows_by_arrivals_behind_a_hole() {
    let mut k = Kcp::new(1, t(0));
    k.set_stream(true);
    k.set_wndsize(64, 64);
    k.set_rcv_autotune(true);
    k.rx_srtt = 100;
    let push = |sn: u32| {
        let mut v = vec![0u8; OVERHEAD + 1];
        Header { conv: 1, cmd: 81, frg: 0, wnd: 32, ts: 0, sn, una: 0, len: 1 }.write(&mut v);
        v
    };
    // Round trip by round trip, the sender fills whatever window it was last told (sn 0 never comes).
    let mut next = 1;
    for rtt in 1..=3u32 {
        let edge = k.rcv_wnd();
        while next < edge {
            k.input(t(rtt * 100 - 50), &push(next), true).unwrap();
            next += 1;
        }
        k.input(t(rtt * 100), &push(next - 1), true).unwrap();
        assert_eq!(k.rcv_nxt, 0, "nothing delivered in order");
        assert_eq!(k.rcv_wnd(), edge * 2, "round trip {rtt}: the window doubles");
    }
    // Arrivals beyond the window are not taken and do not count.
    let before = k.rcv_arrived;
    k.input(t(400), &push(k.rcv_wnd() + 5), true).unwrap();
    assert_eq!(k.rcv_arrived, before);
}

#[test]
fn input_errors_stop_at_the_bad_segment() {
    let mut k = Kcp::new(1, t(0));
    let mut two = ack(1, 0, 0, 0);
    two.extend_from_slice(&ack(2, 0, 0, 0));
    assert_eq!(k.input(t(0), &two, true), Err(InputError::Conv { got: 2, want: 1 }));
    assert_eq!(k.stats().in_segs, 1, "the first segment was processed");
    assert_eq!(k.input(t(0), &[0; 23], true), Err(InputError::TooShort(23)));
    let mut bad = ack(1, 0, 0, 0);
    bad[4] = 99;
    assert_eq!(k.input(t(0), &bad, true), Err(InputError::Cmd(99)));
    let mut trunc = ack(1, 0, 0, 0);
    trunc[20] = 5;
    assert_eq!(k.input(t(0), &trunc, true), Err(InputError::Truncated { claimed: 5, left: 0 }));
}

#[test]
fn recovered_input_does_not_set_the_window() {
    let mut k = Kcp::new(1, t(0));
    let mut a = ack(1, 0, 0, 0);
    a[6..8].copy_from_slice(&0u16.to_le_bytes());
    k.input(t(0), &a, false).unwrap();
    assert_eq!(k.rmt_wnd(), WND_RCV);
    k.input(t(0), &a, true).unwrap();
    assert_eq!(k.rmt_wnd(), 0);
}

#[test]
fn idle_kcp_has_no_timer() {
    let mut p = Pair::new(Mode::Fast3, None);
    p.transfer(&det_bytes("warm", 200_000));
    for _ in 0..100 {
        p.step();
    }
    assert_eq!(p.a.poll_timeout().map(Instant::ms32), None);
    assert_eq!(p.b.poll_timeout().map(Instant::ms32), None);
    // New work arms it at once.
    p.a.send(b"x").unwrap();
    p.a.flush();
    assert_eq!(p.a.poll_timeout().map(Instant::ms32), Some(p.now - 1));
}

// ---- regressions and stress from the review of this module ----

fn review_seg(conv: u32, cmd: Cmd, sn: u32, ts: u32, una: u32, wnd: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; OVERHEAD + payload.len()];
    Header { conv, cmd: cmd as u8, frg: 0, wnd, ts, sn, una, len: payload.len() as u32 }.write(&mut v);
    v[OVERHEAD..].copy_from_slice(payload);
    v
}

fn review_drain(k: &mut Kcp, now: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; k.mtu()];
    let mut guard = 0;
    while let Some(n) = k.poll_transmit(t(now), &mut buf) {
        out.push(buf[..n].to_vec());
        guard += 1;
        assert!(guard < 100_000, "poll_transmit never returns None");
    }
    out
}

/// kcp-go: `cwnd = ssthresh + resent` with resent = 0xffffffff when fastresend == 0 wraps to
/// ssthresh - 1 (uint32); saturating instead would switch congestion control off (found in review).
#[test]
fn cwnd_after_early_retransmit_wraps_as_kcp_go() {
    let mut k = Kcp::new(1, t(0));
    // kcptun `--mode manual` defaults: nodelay 0, interval 50, resend 0, nc 0.
    k.set_nodelay(NoDelay { nodelay: false, interval: 50, resend: 0, nc: false });
    k.set_stream(true);
    k.set_wndsize(128, 128);
    k.cwnd = 8;
    k.rmt_wnd = 128;
    for i in 0..4u8 {
        k.send(&[i; 1000]).unwrap();
        k.flush();
        review_drain(&mut k, 0);
    }
    assert_eq!(k.snd_nxt, 4);
    // sn 3 acked (sn 0..2 get one fast-ack each), nothing new queued: early retransmit on next flush.
    k.input(t(10), &review_seg(1, Cmd::Ack, 3, 0, 0, 128, &[]), true).unwrap();
    k.flush();
    review_drain(&mut k, 10);
    assert!(k.stats().early_retrans_segs > 0);
    let inflight = 4u32;
    let ssthresh = (inflight / 2).max(THRESH_MIN);
    let kcp_go_cwnd = ssthresh.wrapping_add(0xffff_ffff);
    assert_eq!(k.cwnd, kcp_go_cwnd, "deviation from kcp-go");
}

/// A flush resumed after its carried segment was acknowledged must not end with "nothing to send" while
/// the input asked for another flush and more data can go (found in review).
#[test]
fn resumed_flush_runs_a_wanted_flush() {
    let mut k = Kcp::new(1, t(0));
    k.set_nodelay(NoDelay { nodelay: true, interval: 10, resend: 2, nc: true });
    k.set_stream(true);
    k.set_mtu(100).unwrap(); // mss 76
    k.set_wndsize(2, 32);
    k.rmt_wnd = 32;
    k.send(&[1u8; 76 * 2]).unwrap();
    k.flush();
    let mut buf = vec![0u8; k.mtu()];
    // First datagram: sn 0; sn 1 is carried.
    assert_eq!(k.poll_transmit(t(0), &mut buf), Some(100));
    // Meanwhile the app queued more (window is full: 2 in snd_buf).
    // Peer acks both (una = 2): the window slides.
    k.input(t(1), &review_seg(1, Cmd::Ack, 1, 0, 2, 32, &[]), true).unwrap();
    assert!(k.want_full);
    k.send(&[2u8; 76]).unwrap();
    k.flush();
    let r = k.poll_transmit(t(1), &mut buf);
    assert!(r.is_some(), "None returned although a flush is wanted and sn 2 can be sent");
}

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
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

fn check_output(k: &Kcp, p: &[u8]) {
    assert!(p.len() <= k.mtu());
    let mut off = 0;
    while off < p.len() {
        let h = Header::parse(&p[off..]).expect("whole header");
        assert!(Cmd::from_u8(h.cmd).is_some());
        off += OVERHEAD + h.len as usize;
    }
    assert_eq!(off, p.len());
}

fn invariants(k: &Kcp) {
    // The reorder buffer grows on demand, never past the largest window (the adversary may change it).
    assert!(k.rcv_buf.len() <= 65_536);
    for w in k.snd_buf.iter().zip(k.snd_buf.iter().skip(1)) {
        assert_eq!(w.0.sn.wrapping_add(1), w.1.sn);
    }
    if let Some(f) = k.snd_buf.front() {
        assert_eq!(k.snd_una, f.sn);
    }
    assert!(crate::proto::pool::pooled() <= crate::proto::pool::POOL_CAP);
    assert!(k.acklist.len() < 100_000);
    assert!(k.rcv_offset == 0 || k.rcv_offset < k.rcv_queue.front().map_or(0, |s| s.data.len()));
}

#[test]
fn adversarial_input_keeps_invariants() {
    let iters: u64 = std::env::var("KCPD_FUZZ_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let mut spurious = 0u64;
    for seed in 1..=iters {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let conv = 7;
        let start = r.next() as u32;
        let mut now = start;
        let mut k = Kcp::new(conv, t(now));
        let stream = r.chance(70);
        k.set_stream(stream);
        k.set_nodelay(NoDelay {
            nodelay: r.chance(50),
            interval: r.below(120) as u32,
            resend: r.below(4) as u32,
            nc: r.chance(50),
        });
        let mtu = [50usize, 60, 100, 576, 1322, 1400, 1500][r.below(7) as usize];
        k.set_mtu(mtu).unwrap();
        k.set_wndsize(1 + r.below(300) as u32, 1 + r.below(300) as u32);
        k.set_ack_nodelay(r.chance(30));
        if r.chance(30) {
            // start near the sn wrap
            let sn = u32::MAX - r.below(20) as u32;
            k.snd_una = sn;
            k.snd_nxt = sn;
            k.rcv_nxt = sn;
        }
        let mut out = vec![0u8; k.mtu()];
        let mut rbuf = vec![0u8; 70000];
        let mut sent_sns: Vec<(u32, u32)> = Vec::new();
        for _step in 0..400 {
            match r.below(10) {
                0..=3 => {
                    // crafted datagram
                    let mut dgram = Vec::new();
                    for _ in 0..1 + r.below(5) {
                        let cmd = match r.below(20) {
                            0..=8 => 81,
                            9..=15 => 82,
                            16 => 83,
                            17 => 84,
                            _ => r.next() as u8,
                        };
                        let sn = match r.below(6) {
                            0 => r.next() as u32,
                            1 => sent_sns.get(r.below(sent_sns.len() as u64 + 1) as usize).map_or(0, |x| x.0),
                            _ => k
                                .rcv_nxt
                                .wrapping_add(r.below(2 * u64::from(k.rcv_wnd) + 2) as u32)
                                .wrapping_sub(k.rcv_wnd),
                        };
                        let sn = if cmd == 82 && r.chance(70) {
                            k.snd_una.wrapping_add(r.below(u64::from(k.snd_nxt.wrapping_sub(k.snd_una)) + 2) as u32)
                        } else {
                            sn
                        };
                        let una = match r.below(5) {
                            0 => r.next() as u32,
                            1 => k.snd_nxt.wrapping_add(r.below(3) as u32),
                            _ => {
                                k.snd_una.wrapping_add(r.below(u64::from(k.snd_nxt.wrapping_sub(k.snd_una)) + 1) as u32)
                            }
                        };
                        let ts = match r.below(4) {
                            0 => r.next() as u32,
                            _ => now.wrapping_sub(r.below(1000) as u32),
                        };
                        let wnd = match r.below(5) {
                            0 => 0,
                            1 => r.next() as u16,
                            _ => r.below(300) as u16,
                        };
                        let len = if cmd == 81 {
                            r.below(k.mss() as u64 + 1) as usize
                        } else if r.chance(5) {
                            r.below(40) as usize
                        } else {
                            0
                        };
                        let mut s = vec![0u8; OVERHEAD + len];
                        Header {
                            conv: if r.chance(2) { r.next() as u32 } else { conv },
                            cmd,
                            frg: if r.chance(80) { 0 } else { r.next() as u8 },
                            wnd,
                            ts,
                            sn,
                            una,
                            len: len as u32,
                        }
                        .write(&mut s);
                        for b in &mut s[OVERHEAD..] {
                            *b = r.next() as u8;
                        }
                        if r.chance(3) {
                            s.truncate(r.below(s.len() as u64) as usize);
                        }
                        dgram.extend_from_slice(&s);
                    }
                    let _ = k.input(t(now), &dgram, r.chance(80));
                }
                4 => {
                    let n = r.below(3 * k.mss() as u64 + 1) as usize;
                    let data = vec![0xabu8; n];
                    let _ = k.send(&data);
                    k.flush();
                }
                5 => {
                    let n = r.below(5000) as usize;
                    let _ = k.recv(&mut rbuf[..n]);
                }
                6 => {
                    now = now.wrapping_add(match r.below(10) {
                        0 => r.below(1 << 31) as u32,
                        1..=3 => r.below(5000) as u32,
                        _ => r.below(100) as u32,
                    });
                }
                7 if r.chance(10) => {
                    k.set_wndsize(r.below(300) as u32, r.below(300) as u32);
                }
                _ => {}
            }
            // Drain, sometimes partially (as a driver that runs out of room would).
            let partial = r.chance(20);
            let mut guard = 0;
            while let Some(n) = k.poll_transmit(t(now), &mut out) {
                assert!(n > 0, "Some(0)");
                check_output(&k, &out[..n]);
                let mut off = 0;
                while let Some(h) = Header::parse(&out[off..n]) {
                    if h.cmd == 81 {
                        sent_sns.push((h.sn, h.ts));
                        if sent_sns.len() > 64 {
                            sent_sns.remove(0);
                        }
                    }
                    off += OVERHEAD + h.len as usize;
                }
                guard += 1;
                assert!(guard < 10_000, "seed {seed}: poll_transmit loops");
                if partial && r.chance(50) {
                    break;
                }
            }
            if !partial
                && let Some(due) = k.poll_timeout().map(Instant::ms32)
                && diff(due, now) <= 0
            {
                spurious += 1;
                // a second drain must settle it
                while k.poll_transmit(t(now), &mut out).is_some() {}
                let t2 = k.poll_timeout().map(Instant::ms32);
                assert!(t2.is_none_or(|t2| diff(t2, now) > 0), "seed {seed}: busy timer {t2:?} at {now}");
            }
            invariants(&k);
        }
    }
    assert_eq!(spurious, 0, "a drained KCP never reports itself due");
}

/// An idle receiver holds no payload buffers after a full window (found in review: it kept a window's
/// worth, megabytes per session): they go back to the thread's bounded pool, for the next session to use.
#[test]
fn free_list_is_bounded_after_a_burst() {
    let mut k = Kcp::new(1, t(0));
    k.set_stream(true);
    k.set_mtu(1322).unwrap();
    k.set_wndsize(1024, 1024);
    let payload = vec![0u8; k.mss()];
    for sn in 0..1024u32 {
        k.input(t(0), &review_seg(1, Cmd::Push, sn, 0, 0, 1024, &payload), true).unwrap();
    }
    let mut buf = vec![0u8; 1 << 21];
    while k.recv(&mut buf).unwrap() > 0 {}
    review_drain(&mut k, 1);
    assert!(k.rcv_queue.is_empty());
    assert!(crate::proto::pool::pooled() >= 1024, "the window's buffers are back in the pool");
}
