//! A deterministic network for tests: seeded impairments per direction, and virtual time that jumps to
//! the next event instead of sleeping.
//!
//! Per direction (`from -> to`): one-way delay with uniform jitter, Bernoulli or Gilbert–Elliott loss,
//! duplication, reordering (a packet held back by an extra delay), and a rate limit with a bounded
//! queue (tail drop). Time is in milliseconds (wrapping u32, as KCP) with microsecond bookkeeping for the
//! rate limiter. Single-threaded: sockets share the network through `Rc<RefCell<_>>`.

use std::cell::RefCell;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use super::{DatagramIo, RecvMeta, Transmit};

/// How a direction loses packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Nothing is lost (the default).
    None,
    /// Each packet lost with probability `p`.
    Bernoulli(f64),
    /// Two-state bursty loss: good→bad with `p_gb`, bad→good with `p_bg`, loss probability per state.
    GilbertElliott {
        /// Per packet, the probability of moving from the good state to the bad one.
        p_gb: f64,
        /// Per packet, the probability of moving from bad back to good (mean burst: `1 / p_bg` packets).
        p_bg: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// Gilbert–Elliott with a given average loss and mean burst length (packets), lossless good state and
    /// lossy bad state.
    pub fn bursty(avg: f64, mean_burst: f64) -> Loss {
        let p_bg = 1.0 / mean_burst;
        // Stationary P(bad) = p_gb / (p_gb + p_bg) = avg (with loss_bad = 1).
        let p_gb = avg * p_bg / (1.0 - avg);
        Loss::GilbertElliott { p_gb, p_bg, loss_good: 0.0, loss_bad: 1.0 }
    }
}

/// Impairments of one direction. Jitter varies the delay without reordering (a link is FIFO);
/// `reorder` is what makes packets overtake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Link {
    /// One-way delay of every packet, in milliseconds.
    pub delay_ms: u32,
    /// Extra delay drawn uniformly from `0..=jitter_ms` per packet; packets still arrive in order.
    pub jitter_ms: u32,
    /// How packets are lost (decided first: a lost packet takes no room in the rate limiter's queue).
    pub loss: Loss,
    /// Probability (0–1) that a packet is delivered twice, each copy with its own jitter.
    pub duplicate: f64,
    /// Probability that a packet is held back by `reorder_ms` (so later packets overtake it).
    pub reorder: f64,
    /// The extra delay, in milliseconds, of a packet `reorder` holds back.
    pub reorder_ms: u32,
    /// Bytes per second; `None`: unlimited.
    pub rate: Option<u64>,
    /// Bytes that may wait for the rate limiter before tail drop.
    pub queue_bytes: usize,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay_ms: 0,
            jitter_ms: 0,
            loss: Loss::None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_ms: 0,
            rate: None,
            queue_bytes: 1 << 20,
        }
    }
}

/// What a direction did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams offered to the direction (each segment of a GSO run counts once).
    pub sent: u64,
    /// Copies the receiving socket has read (those still in flight are not counted).
    pub delivered: u64,
    /// Datagrams the `loss` model dropped.
    pub lost: u64,
    /// Datagrams tail-dropped because the rate limiter's queue (`queue_bytes`) was full.
    pub queue_drops: u64,
    /// Extra copies made by `duplicate`.
    pub duplicated: u64,
    /// Copies held back by `reorder_ms`.
    pub reordered: u64,
    /// Bytes of every datagram counted in `sent`, lost and dropped ones included.
    pub bytes: u64,
}

#[derive(Debug)]
struct InFlight {
    at_us: u64,
    seq: u64,
    src: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    // Min-heap by delivery time, then send order.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at_us, o.seq).cmp(&(self.at_us, self.seq))
    }
}

/// One direction's impairments as a state machine over time (microseconds), independent of how time
/// passes: the simulator feeds it virtual time, the `kcpd-netem` relay the wall clock.
pub struct Impairment {
    cfg: Link,
    rng: u64,
    bad: bool,
    busy_until_us: u64,
    /// Latest delivery time of an in-order packet: jitter delays packets but keeps their order (a link
    /// is FIFO); only the `reorder` impairment lets later packets overtake.
    last_in_order_us: u64,
    stats: LinkStats,
}

impl Impairment {
    /// A direction with impairments `cfg`, its random draws seeded by `seed` (same seed and same traffic,
    /// same outcome).
    pub fn new(cfg: Link, seed: u64) -> Self {
        Impairment { cfg, rng: seed, bad: false, busy_until_us: 0, last_in_order_us: 0, stats: LinkStats::default() }
    }

    /// The impairments in force.
    pub fn config(&self) -> &Link {
        &self.cfg
    }

    /// Change the impairments from the next packet on; the random stream, the good/bad loss state, the
    /// rate limiter's backlog and the counters carry over.
    pub fn set_config(&mut self, cfg: Link) {
        self.cfg = cfg;
    }

    /// What this direction has done so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// A datagram of `len` bytes enters at `now_us`: the delivery times of its copies (none if lost or
    /// dropped by the queue, two if duplicated).
    pub fn admit(&mut self, now_us: u64, len: usize) -> ([u64; 2], usize) {
        let cfg = self.cfg;
        self.stats.sent += 1;
        self.stats.bytes += len as u64;
        let lost = match cfg.loss {
            Loss::None => false,
            Loss::Bernoulli(p) => self.chance(p),
            Loss::GilbertElliott { p_gb, p_bg, loss_good, loss_bad } => {
                let flip = self.chance(if self.bad { p_bg } else { p_gb });
                self.bad ^= flip;
                let p = if self.bad { loss_bad } else { loss_good };
                self.chance(p)
            }
        };
        if lost {
            self.stats.lost += 1;
            return ([0; 2], 0);
        }
        // Rate limit: serialise behind what is queued; tail-drop past the queue bound.
        let mut depart = now_us;
        if let Some(rate) = cfg.rate {
            let busy = self.busy_until_us.max(now_us);
            let queued_bytes = (busy - now_us).saturating_mul(rate) / 1_000_000;
            if queued_bytes as usize + len > cfg.queue_bytes {
                self.stats.queue_drops += 1;
                return ([0; 2], 0);
            }
            depart = busy + (len as u64 * 1_000_000).div_ceil(rate.max(1));
            self.busy_until_us = depart;
        }
        let copies = if self.chance(cfg.duplicate) { 2 } else { 1 };
        self.stats.duplicated += copies as u64 - 1;
        let mut at = [0u64; 2];
        for slot in at.iter_mut().take(copies) {
            let mut t = depart + u64::from(cfg.delay_ms) * 1000;
            if cfg.jitter_ms > 0 {
                t += self.next() % (u64::from(cfg.jitter_ms) * 1000 + 1);
            }
            if self.chance(cfg.reorder) {
                t += u64::from(cfg.reorder_ms) * 1000;
                self.stats.reordered += 1;
            } else {
                t = t.max(self.last_in_order_us);
                self.last_in_order_us = t;
            }
            *slot = t;
        }
        (at, copies)
    }

    /// Count a delivered copy.
    pub fn delivered(&mut self) {
        self.stats.delivered += 1;
    }
}

struct Net {
    now_us: u64,
    seq: u64,
    seed: u64,
    default_link: Link,
    links: HashMap<(SocketAddr, SocketAddr), Impairment>,
    inboxes: HashMap<SocketAddr, BinaryHeap<InFlight>>,
    /// Directions that share one link (rate, queue, delay, loss) with a canonical direction
    /// ([`SimNet::share_link`]).
    shared: HashMap<(SocketAddr, SocketAddr), (SocketAddr, SocketAddr)>,
    /// NAT: a socket's datagrams leave from the public address it is mapped to ([`SimNet::rebind`]).
    nat_out: HashMap<SocketAddr, SocketAddr>,
    /// NAT: datagrams to a public address reach the socket behind it.
    nat_in: HashMap<SocketAddr, SocketAddr>,
}

impl Net {
    fn link(&mut self, from: SocketAddr, to: SocketAddr) -> &mut Impairment {
        let (from, to) = self.shared.get(&(from, to)).copied().unwrap_or((from, to));
        let (default, n) = (self.default_link, self.links.len() as u64);
        let seed = self.seed ^ (n + 1).wrapping_mul(0xA076_1D64_78BD_642F);
        self.links.entry((from, to)).or_insert_with(|| Impairment::new(default, seed))
    }

    fn send(&mut self, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let src = self.nat_out.get(&src).copied().unwrap_or(src);
        // Behind a NAT, a socket is reachable at its public address only.
        let dst = match self.nat_in.get(&dst) {
            Some(inside) => *inside,
            None if self.nat_out.contains_key(&dst) => return,
            None => dst,
        };
        let now = self.now_us;
        let (at, copies) = self.link(src, dst).admit(now, data.len());
        for &t in &at[..copies] {
            self.seq += 1;
            let pkt = InFlight { at_us: t, seq: self.seq, src, data: data.to_vec() };
            self.inboxes.entry(dst).or_default().push(pkt);
        }
    }
}

/// The simulated network. Clones share it.
#[derive(Clone)]
pub struct SimNet {
    net: Rc<RefCell<Net>>,
}

impl SimNet {
    /// A network whose directions all start as `default_link`, seeded for reproducibility.
    pub fn new(seed: u64, default_link: Link) -> Self {
        SimNet {
            net: Rc::new(RefCell::new(Net {
                now_us: 0,
                seq: 0,
                seed,
                default_link,
                links: HashMap::new(),
                inboxes: HashMap::new(),
                nat_out: HashMap::new(),
                nat_in: HashMap::new(),
                shared: HashMap::new(),
            })),
        }
    }

    /// Impairments for packets from `from` to `to`.
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, cfg: Link) {
        self.net.borrow_mut().link(from, to).set_config(cfg);
    }

    /// The counters of the `from -> to` direction (of the link it shares, if it does); all zero if nothing
    /// was ever sent that way.
    pub fn link_stats(&self, from: SocketAddr, to: SocketAddr) -> LinkStats {
        let n = self.net.borrow();
        let key = n.shared.get(&(from, to)).copied().unwrap_or((from, to));
        n.links.get(&key).map(|l| l.stats()).unwrap_or_default()
    }

    /// Make every direction in `dirs` go through one link configured `cfg` — one rate limiter, one queue,
    /// as flows through a real bottleneck share them (the first direction names it: its
    /// [`link_stats`](Self::link_stats) are the shared link's).
    pub fn share_link(&self, dirs: &[(SocketAddr, SocketAddr)], cfg: Link) {
        let Some(&first) = dirs.first() else { return };
        let mut n = self.net.borrow_mut();
        for &d in dirs {
            n.shared.insert(d, first);
        }
        n.link(first.0, first.1).set_config(cfg);
    }

    /// Put the socket at `inside` behind a NAT mapping to `public` (a home router re-dialling, a carrier
    /// NAT's mapping timing out): from now on its datagrams leave from `public`, only datagrams to
    /// `public` reach it, and its previous mapping (if any) is gone. Datagrams already on their way are
    /// delivered as addressed.
    pub fn rebind(&self, inside: SocketAddr, public: SocketAddr) {
        let mut n = self.net.borrow_mut();
        if let Some(old) = n.nat_out.insert(inside, public) {
            n.nat_in.remove(&old);
        }
        n.nat_in.insert(public, inside);
    }

    /// A socket bound to `addr`.
    pub fn socket(&self, addr: SocketAddr) -> SimSocket {
        self.net.borrow_mut().inboxes.entry(addr).or_default();
        SimSocket { net: self.net.clone(), addr }
    }

    /// Virtual time in milliseconds (wrapping, as KCP's clock).
    pub fn now(&self) -> u32 {
        (self.net.borrow().now_us / 1000) as u32
    }

    /// Virtual time as the protocol layers take it.
    pub fn instant(&self) -> kcpd_time::Instant {
        kcpd_time::Instant::from_micros(self.now_us())
    }

    /// Virtual time in microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.net.borrow().now_us
    }

    /// Jump to `ms` (never backwards).
    pub fn advance_to(&self, ms: u64) {
        let mut n = self.net.borrow_mut();
        n.now_us = n.now_us.max(ms * 1000);
    }

    /// The earliest pending delivery, in milliseconds since the start (rounded up).
    pub fn next_delivery_ms(&self) -> Option<u64> {
        let n = self.net.borrow();
        n.inboxes.values().filter_map(|h| h.peek()).map(|p| p.at_us.div_ceil(1000)).min()
    }
}

/// One endpoint of the simulated network.
pub struct SimSocket {
    net: Rc<RefCell<Net>>,
    addr: SocketAddr,
}

impl DatagramIo for SimSocket {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let mut n = self.net.borrow_mut();
        let now = n.now_us;
        let addr = self.addr;
        let mut count = 0;
        while count < bufs.len().min(meta.len()) {
            let inbox = n.inboxes.get_mut(&addr).expect("created with the socket");
            if inbox.peek().is_none_or(|p| p.at_us > now) {
                break;
            }
            let p = inbox.pop().expect("peeked");
            let len = p.data.len().min(bufs[count].len());
            bufs[count][..len].copy_from_slice(&p.data[..len]);
            meta[count] =
                RecvMeta { len, stride: len, src: p.src, dst_ip: Some(addr.ip()), truncated: len < p.data.len() };
            let key = n.shared.get(&(p.src, addr)).copied().unwrap_or((p.src, addr));
            if let Some(l) = n.links.get_mut(&key) {
                l.delivered();
            }
            count += 1;
        }
        Ok(count)
    }

    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize> {
        let mut n = self.net.borrow_mut();
        for m in msgs {
            for d in m.payload.chunks(m.segment_size.unwrap_or(m.payload.len()).max(1)) {
                n.send(self.addr, m.dst, d);
            }
        }
        Ok(msgs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    fn run(link: Link, n: usize, seed: u64) -> (Vec<(u64, u8)>, LinkStats) {
        let net = SimNet::new(seed, link);
        let (mut a, mut b) = (net.socket(addr(1)), net.socket(addr(2)));
        for i in 0..n {
            let p = [i as u8; 100];
            a.send_batch(&[Transmit::new(addr(2), &p)]).unwrap();
            net.advance_to(i as u64);
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1500];
        let mut meta = [RecvMeta::EMPTY];
        while let Some(t) = net.next_delivery_ms() {
            net.advance_to(t);
            while b.recv_batch(&mut [&mut buf[..]], &mut meta).unwrap() == 1 {
                got.push((net.now_us(), buf[0]));
            }
        }
        (got, net.link_stats(addr(1), addr(2)))
    }

    #[test]
    fn delay_loss_duplication_reordering_are_applied_and_seeded() {
        let (got, _) = run(Link { delay_ms: 20, ..Default::default() }, 10, 1);
        assert_eq!(got.len(), 10);
        assert_eq!(got[0].0, 20_000);
        let link =
            Link { loss: Loss::Bernoulli(0.1), duplicate: 0.05, reorder: 0.05, reorder_ms: 7, ..Default::default() };
        let (a, sa) = run(link, 10_000, 7);
        let (b, _) = run(link, 10_000, 7);
        assert_eq!(a, b, "same seed, same run");
        assert!((800..1200).contains(&sa.lost), "{sa:?}");
        assert!(sa.duplicated > 300 && sa.reordered > 300, "{sa:?}");
        assert_eq!(a.len() as u64, sa.sent - sa.lost + sa.duplicated);
        assert!(a.windows(2).any(|w| w[1].1 < w[0].1), "something overtook");
    }

    #[test]
    fn bursty_loss_has_the_requested_average_and_bursts() {
        let (got, s) = run(Link { loss: Loss::bursty(0.3, 8.0), ..Default::default() }, 20_000, 3);
        let rate = s.lost as f64 / s.sent as f64;
        assert!((0.25..0.35).contains(&rate), "{rate}");
        // Mean gap length between delivered packets reflects bursts (> 2 for mean burst 8).
        let gaps: Vec<u8> = got.windows(2).map(|w| w[1].1.wrapping_sub(w[0].1)).filter(|&g| g > 1).collect();
        let mean = gaps.iter().map(|&g| g as f64 - 1.0).sum::<f64>() / gaps.len() as f64;
        assert!(mean > 4.0, "{mean}");
    }

    #[test]
    fn rate_limit_queues_then_drops() {
        // 100 kB/s: each 100-byte packet takes 1 ms on the wire; queue of 1000 bytes.
        let link = Link { rate: Some(100_000), queue_bytes: 1000, ..Default::default() };
        let net = SimNet::new(1, link);
        let (mut a, mut b) = (net.socket(addr(1)), net.socket(addr(2)));
        let p = [0u8; 100];
        for _ in 0..50 {
            a.send_batch(&[Transmit::new(addr(2), &p)]).unwrap();
        }
        let s = net.link_stats(addr(1), addr(2));
        assert_eq!(s.queue_drops, 40, "10 fit in the queue");
        net.advance_to(5);
        let mut meta = [RecvMeta::EMPTY; 20];
        let mut bufs: Vec<&mut [u8]> = Vec::new();
        let mut store = vec![[0u8; 200]; 20];
        for s in store.iter_mut() {
            bufs.push(&mut s[..]);
        }
        assert_eq!(b.recv_batch(&mut bufs, &mut meta).unwrap(), 5, "1 per ms");
    }
}
