//! The front door: what every shard's [`Endpoint`](super::endpoint::Endpoint) of a process shares to keep a
//! server on a public port bounded and replay-proof (docs/front-door.md has the threat model and bounds).
//!
//! - **Replay filter.** kcp-go never sends the same datagram twice: each carries a fresh random nonce and
//!   KCP/FEC headers that change. An opened datagram is remembered by a keyed hash of its bytes after the
//!   nonce (with the 8-byte-block CFB ciphers the first nonce bytes of a captured datagram can be changed
//!   without breaking the CRC, so the nonce itself proves nothing), and a repeat within the window is
//!   dropped. Shared by all shards, because a replay sent from another port lands on another shard.
//! - **Recent convs.** Past that window, a long-lived record of the convs sessions were created for stops
//!   an old first datagram from opening a session again (kcp-go clients draw a random conv per session
//!   and never reuse one).
//! - **Admission.** Caps on live sessions in total and per source (an IPv4 address, an IPv6 /64), and a
//!   new-session rate per source (a token bucket).
//! - **Locations.** Which shard has each live conv of a listener (NAT rebinding lands a client on another
//!   shard), so that its datagrams from a new address move it there (or, for a malleable method, are
//!   dropped) instead of opening a second session.
//!
//! Everything here is lock-free or striped: the replay filter takes one bucket's spin lock per datagram
//! (buckets are random, so shards rarely meet), the rest runs only when a session opens or ends.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use kcpd_time::{Duration, Instant};

use super::endpoint::{ConnGauge, Location, Shared};

/// Entries per bucket of a [`FingerprintSet`] (a 64-byte bucket: a lock word and seven entries).
const WAYS: usize = 7;

/// A bounded set of 64-bit hashes with a time window, shared by threads: a hash is "seen" while it was
/// inserted less than `window` ago and has not been pushed out. Each bucket holds seven entries of a
/// 32-bit fingerprint and a 32-bit millisecond stamp; a hash may live in either of two buckets and goes
/// to the less loaded one; when both are full the older entry of the pair is replaced (counted: the window
/// is then shorter than stated for those buckets; it happens once the set is about half full). False
/// positives: at most 14 × 2⁻³² ≈ 3.3e-9 per lookup. Memory: 64 bytes per 7 entries, allocated zeroed, so
/// pages are touched only as used.
pub struct FingerprintSet {
    words: Box<[AtomicU64]>,
    buckets: usize,
    window_ms: u32,
    /// Live entries pushed out before their window ended.
    evicted: AtomicU64,
}

const _: () = assert!(std::mem::align_of::<AtomicU64>() == std::mem::align_of::<u64>());

impl FingerprintSet {
    /// Room for about `entries` hashes (at least one bucket), each remembered for `window`.
    pub fn new(entries: usize, window: Duration) -> Self {
        let buckets = entries.div_ceil(WAYS).max(1);
        let zeroed = vec![0u64; buckets * (WAYS + 1)].into_boxed_slice();
        // SAFETY: AtomicU64 has the size and (checked above) the alignment of u64, and zero is a valid
        // value; the allocation is the same, only its element type changes (calloc'd: untouched pages).
        let words = unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [AtomicU64]) };
        let window_ms = window.as_millis().clamp(1, u64::from(u32::MAX / 2)) as u32;
        FingerprintSet { words, buckets, window_ms, evicted: AtomicU64::new(0) }
    }

    /// Bytes this set may use.
    pub fn capacity_bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// Live entries pushed out before their window ended.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The two buckets `h` may live in (from its low half, and from its fingerprint), lowest index
    /// first; equal when they coincide.
    fn buckets_of(&self, h: u64) -> (usize, usize) {
        let b1 = ((h & 0xffff_ffff) as usize) % self.buckets;
        let b2 = ((h >> 32).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % self.buckets;
        (b1.min(b2), b1.max(b2))
    }

    fn words_of(&self, b: usize) -> &[AtomicU64] {
        &self.words[b * (WAYS + 1)..(b + 1) * (WAYS + 1)]
    }

    fn lock(lock: &AtomicU64) {
        while lock.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            std::hint::spin_loop();
        }
    }

    /// Lock `h`'s buckets (in index order: no deadlock between threads) and run `f` on their entries.
    fn with_buckets<R>(&self, h: u64, f: impl FnOnce(&[AtomicU64], &[AtomicU64]) -> R) -> R {
        let (b1, b2) = self.buckets_of(h);
        let (w1, w2) = (self.words_of(b1), self.words_of(b2));
        Self::lock(&w1[0]);
        if b2 != b1 {
            Self::lock(&w2[0]);
        }
        let r = f(&w1[1..], if b2 != b1 { &w2[1..] } else { &[] });
        if b2 != b1 {
            w2[0].store(0, Ordering::Release);
        }
        w1[0].store(0, Ordering::Release);
        r
    }

    /// Insert `h` at `now` unless it is there and live: `None` when it was new, else how long ago (ms) it
    /// was inserted (the entry keeps that time). Two candidate buckets of seven entries each: a new entry
    /// goes to the less loaded one, so buckets overflow (pushing out a live entry, counted) only once the
    /// set is about half full, not from a Poisson tail of single buckets long before.
    pub fn insert(&self, now: Instant, h: u64) -> Option<u32> {
        let fp = h >> 32;
        let t = (now.as_millis() as u32) | 1;
        let window = self.window_ms;
        let (seen, evicted) = self.with_buckets(h, |a, b| {
            // Signed: shards read the clock at the top of their loop turns, so an entry another shard made
            // may carry a stamp a few milliseconds ahead of this `now`; it is live, not 49 days old.
            let age = |v: u64| t.wrapping_sub(v as u32) as i32;
            let live = |v: u64| v != 0 && age(v) < window as i32;
            for e in a.iter().chain(b) {
                let v = e.load(Ordering::Relaxed);
                if live(v) && v >> 32 == fp {
                    return (Some(age(v).max(0) as u32), false);
                }
            }
            // The less loaded bucket takes it (two choices keep buckets even); a full pair loses its
            // oldest entry.
            let load = |x: &[AtomicU64]| x.iter().filter(|e| live(e.load(Ordering::Relaxed))).count();
            let target = if b.is_empty() || load(a) <= load(b) { a } else { b };
            let free = target.iter().find(|e| !live(e.load(Ordering::Relaxed)));
            let (slot, evicted) = match free {
                Some(e) => (e, false),
                None => {
                    let oldest =
                        a.iter().chain(b).max_by_key(|e| age(e.load(Ordering::Relaxed))).expect("buckets have entries");
                    (oldest, true)
                }
            };
            slot.store(fp << 32 | u64::from(t), Ordering::Relaxed);
            (None, evicted)
        });
        if evicted {
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        seen
    }

    /// Forget `h` (an insert whose purpose fell through).
    pub fn remove(&self, h: u64) {
        let fp = h >> 32;
        self.with_buckets(h, |a, b| {
            for e in a.iter().chain(b) {
                let v = e.load(Ordering::Relaxed);
                if v != 0 && v >> 32 == fp {
                    e.store(0, Ordering::Relaxed);
                }
            }
        });
    }
}

/// What [`Shared::claim_conv`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No session was created for the conv recently: recorded now.
    New,
    /// One was, within the replay window (so this datagram is fresh): a new one may be created; the first
    /// record stands.
    Again,
    /// One was, longer ago than the replay window remembers datagrams: this is an old datagram replayed.
    Stale,
}

/// Why a new session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The process has [`FrontConfig::max_sessions`] live sessions.
    Total,
    /// The source has [`FrontConfig::max_per_source`] live sessions.
    PerSource,
    /// The source opened sessions faster than [`FrontConfig::new_per_source`] allows.
    Rate,
    /// The process holds its memory budget's worth of received data ([`super::budget`]).
    Memory,
}

/// The front door's settings; [`Default`] is sized for a VPS serving kcptun clients, some behind
/// carrier-grade NAT.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontConfig {
    /// Remember accepted datagrams for this long (at least smux's keepalive timeout, 30 s). `None`: no
    /// replay filter (`--crypt null`, where anyone can forge any datagram anyway).
    pub replay_window: Option<Duration>,
    /// Datagrams the replay filter holds (9.2 bytes each); past `rate × window` the window shortens.
    pub replay_entries: usize,
    /// Remember the conv of every session created for this long.
    pub conv_window: Duration,
    /// Convs remembered (9.2 bytes each).
    pub conv_entries: usize,
    /// Live sessions in the whole process, passive ones only (0: no cap).
    pub max_sessions: usize,
    /// Live sessions per source address (IPv4) or /64 (IPv6) (0: no cap).
    pub max_per_source: usize,
    /// New sessions per second per source, and the burst allowed (0: no limit).
    pub new_per_source: (u32, u32),
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            replay_window: Some(Duration::from_secs(60)),
            replay_entries: 2 << 20,
            conv_window: Duration::from_secs(24 * 3600),
            conv_entries: 1 << 20,
            max_sessions: 16384,
            max_per_source: 1024,
            new_per_source: (20, 200),
        }
    }
}

/// Counters of the front door (process-wide).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontStats {
    /// Sessions refused because of the total cap.
    pub refused_total: u64,
    /// Sessions refused because of the per-source cap.
    pub refused_per_source: u64,
    /// Sessions refused because of the per-source rate.
    pub refused_rate: u64,
    /// Sessions refused because the process was over its memory budget.
    pub refused_memory: u64,
    /// Replay filter entries pushed out before their window ended (the filter is too small for the rate).
    pub replay_evicted: u64,
    /// Conv record entries pushed out before their window ended.
    pub conv_evicted: u64,
    /// Datagrams the replay filter dropped.
    pub replays: u64,
    /// Datagrams that would have opened a session for a conv used too long ago (old, replayed).
    pub conv_reused: u64,
}

impl FrontStats {
    /// Counts since `earlier`.
    pub fn since(&self, earlier: &FrontStats) -> FrontStats {
        FrontStats {
            refused_total: self.refused_total - earlier.refused_total,
            refused_per_source: self.refused_per_source - earlier.refused_per_source,
            refused_rate: self.refused_rate - earlier.refused_rate,
            refused_memory: self.refused_memory - earlier.refused_memory,
            replay_evicted: self.replay_evicted - earlier.replay_evicted,
            conv_evicted: self.conv_evicted - earlier.conv_evicted,
            replays: self.replays - earlier.replays,
            conv_reused: self.conv_reused - earlier.conv_reused,
        }
    }

    /// Everything refused or dropped, summed.
    pub fn refusals(&self) -> u64 {
        self.refused_total
            + self.refused_per_source
            + self.refused_rate
            + self.refused_memory
            + self.replays
            + self.conv_reused
    }

    /// Anything refused or dropped.
    pub fn any_refused(&self) -> bool {
        self.refusals() > 0
    }
}

/// How often the operator hears of what the front door refused (at most one report per interval).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Admission state of one source.
struct Source {
    live: u32,
    tokens: f64,
    at: Instant,
}

const STRIPES: usize = 64;

/// The process-wide front door (see the module docs); every shard's endpoint holds it as its [`Shared`].
pub struct FrontDoor {
    cfg: FrontConfig,
    gauge: ConnGauge,
    /// Passive sessions alive (the total cap counts these).
    passive: AtomicUsize,
    keys: RandomState,
    replay: Option<FingerprintSet>,
    convs: FingerprintSet,
    sources: Vec<Mutex<HashMap<u64, Source>>>,
    /// Live convs of listeners, striped by a keyed hash of the conv (bounded by the live sessions).
    locations: Vec<Mutex<HashMap<u32, Location>>>,
    refused: [AtomicU64; 4],
    replays: AtomicU64,
    conv_reused: AtomicU64,
    /// When the last report was made, and the counts it covered up to.
    reported: Mutex<(Instant, FrontStats)>,
    /// No report before this (µs): the last report's time plus [`REPORT_INTERVAL`].
    report_due: AtomicU64,
    /// [`FrontStats::refusals`] at the last report.
    reported_sum: AtomicU64,
}

impl Default for FrontDoor {
    fn default() -> Self {
        FrontDoor::new(FrontConfig::default())
    }
}

impl FrontDoor {
    /// A front door with these settings; the hash keys are random per process.
    pub fn new(cfg: FrontConfig) -> Self {
        FrontDoor {
            gauge: ConnGauge::default(),
            passive: AtomicUsize::new(0),
            keys: RandomState::new(),
            replay: cfg.replay_window.map(|w| FingerprintSet::new(cfg.replay_entries, w)),
            convs: FingerprintSet::new(cfg.conv_entries, cfg.conv_window),
            sources: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            locations: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            refused: Default::default(),
            replays: AtomicU64::new(0),
            conv_reused: AtomicU64::new(0),
            reported: Mutex::new((Instant::ZERO, FrontStats::default())),
            report_due: AtomicU64::new(0),
            reported_sum: AtomicU64::new(0),
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &FrontConfig {
        &self.cfg
    }

    /// Live conversations of the process and their peak.
    pub fn gauge(&self) -> &ConnGauge {
        &self.gauge
    }

    /// The counters.
    pub fn stats(&self) -> FrontStats {
        let r = |i: usize| self.refused[i].load(Ordering::Relaxed);
        FrontStats {
            refused_total: r(0),
            refused_per_source: r(1),
            refused_rate: r(2),
            refused_memory: r(3),
            replay_evicted: self.replay.as_ref().map_or(0, FingerprintSet::evicted),
            conv_evicted: self.convs.evicted(),
            replays: self.replays.load(Ordering::Relaxed),
            conv_reused: self.conv_reused.load(Ordering::Relaxed),
        }
    }

    fn refused_sum(&self) -> u64 {
        self.refused.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>()
            + self.replays.load(Ordering::Relaxed)
            + self.conv_reused.load(Ordering::Relaxed)
    }

    /// What was refused since the last report, when [`REPORT_INTERVAL`] has passed since it and something
    /// was; one caller (shard) gets it, the others `None`.
    pub fn poll_report(&self, now: Instant) -> Option<FrontStats> {
        // Every shard asks every loop turn: answer the usual "nothing" with reads only (no lock, no
        // write to a line the shards share).
        if now.as_micros() < self.report_due.load(Ordering::Relaxed)
            || self.refused_sum() == self.reported_sum.load(Ordering::Relaxed)
        {
            return None;
        }
        let mut r = self.reported.try_lock().ok()?;
        if now.saturating_since(r.0) < REPORT_INTERVAL {
            return None;
        }
        let cur = self.stats();
        let delta = cur.since(&r.1);
        if !delta.any_refused() {
            return None;
        }
        *r = (now, cur);
        self.report_due.store((now + REPORT_INTERVAL).as_micros(), Ordering::Relaxed);
        self.reported_sum.store(cur.refusals(), Ordering::Relaxed);
        Some(delta)
    }

    /// Bytes the replay filter and conv record may use.
    pub fn table_bytes(&self) -> usize {
        self.replay.as_ref().map_or(0, FingerprintSet::capacity_bytes) + self.convs.capacity_bytes()
    }

    /// A source's admission key: the address (IPv4, or IPv4-mapped IPv6), or the /64 of an IPv6 one.
    fn source_key(ip: IpAddr) -> u64 {
        match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u64::from(u32::from(v4)),
                None => (u128::from(v6) >> 64) as u64 | 1 << 63,
            },
        }
    }

    fn stripe(&self, key: u64) -> &Mutex<HashMap<u64, Source>> {
        let mut h = self.keys.build_hasher();
        h.write_u64(key);
        &self.sources[(h.finish() % STRIPES as u64) as usize]
    }

    fn locations_of(&self, conv: u32) -> std::sync::MutexGuard<'_, HashMap<u32, Location>> {
        let stripe = &self.locations[(self.hash_conv(conv) % STRIPES as u64) as usize];
        stripe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Live convs whose location is kept.
    pub fn located(&self) -> usize {
        self.locations.iter().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    fn hash_conv(&self, conv: u32) -> u64 {
        let mut h = self.keys.build_hasher();
        h.write_u8(0xC0);
        h.write_u32(conv);
        h.finish()
    }
}

/// Bytes of an opened datagram the replay key covers: the head (CRC, FEC and KCP headers: what makes
/// every datagram of a session unique) and the tail, with the length. A different datagram that passes
/// the check differs from a captured one within these bytes unless the method is malleable (`none`,
/// `xor`, `salsa20`: there any byte can be changed and the CRC fixed, full hash or not).
const KEY_HEAD: usize = 64;
const KEY_TAIL: usize = 32;

impl Shared for FrontDoor {
    fn opened(&self, src: Option<IpAddr>) {
        self.gauge.opened(src);
    }

    fn closed(&self, src: Option<IpAddr>) {
        self.gauge.closed(src);
        let Some(ip) = src else { return };
        self.passive.fetch_sub(1, Ordering::Relaxed);
        let key = Self::source_key(ip);
        let mut m = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get_mut(&key) {
            s.live = s.live.saturating_sub(1);
        }
    }

    fn admit(&self, now: Instant, src: IpAddr) -> Result<(), Refusal> {
        let refuse = |r: Refusal| {
            self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
            Err(r)
        };
        if self.cfg.max_sessions > 0 && self.passive.load(Ordering::Relaxed) >= self.cfg.max_sessions {
            return refuse(Refusal::Total);
        }
        if super::budget::over() {
            return refuse(Refusal::Memory);
        }
        let key = Self::source_key(src);
        let mut m = self.stripe(key).lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: past a stripe's share of the session cap (×4), sources with no live session go (their
        // rate history with them: the total cap still holds).
        let limit = (self.cfg.max_sessions.max(STRIPES) * 4).div_ceil(STRIPES);
        if m.len() >= limit {
            m.retain(|_, s| s.live > 0);
        }
        let (rate, burst) = self.cfg.new_per_source;
        let s = m.entry(key).or_insert(Source { live: 0, tokens: f64::from(burst), at: now });
        if self.cfg.max_per_source > 0 && s.live as usize >= self.cfg.max_per_source {
            return refuse(Refusal::PerSource);
        }
        if rate > 0 {
            let dt = now.saturating_since(s.at).as_micros() as f64 / 1e6;
            s.tokens = (s.tokens + dt * f64::from(rate)).min(f64::from(burst.max(1)));
            s.at = now;
            if s.tokens < 1.0 {
                return refuse(Refusal::Rate);
            }
            s.tokens -= 1.0;
        }
        s.live += 1;
        self.passive.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn replayed(&self, now: Instant, after_nonce: &[u8]) -> bool {
        let Some(f) = &self.replay else { return false };
        let mut h = self.keys.build_hasher();
        h.write_usize(after_nonce.len());
        if after_nonce.len() <= KEY_HEAD + KEY_TAIL {
            h.write(after_nonce);
        } else {
            h.write(&after_nonce[..KEY_HEAD]);
            h.write(&after_nonce[after_nonce.len() - KEY_TAIL..]);
        }
        let seen = f.insert(now, h.finish()).is_some();
        if seen {
            self.replays.fetch_add(1, Ordering::Relaxed);
        }
        seen
    }

    fn claim_conv(&self, now: Instant, conv: u32) -> Claim {
        match self.convs.insert(now, self.hash_conv(conv)) {
            None => Claim::New,
            // Within the replay window every datagram that gets here is fresh (a client's retransmission
            // after its session here closed): as kcp-go, a new session. Past it, an old one replayed.
            Some(age) => match self.replay.as_ref() {
                Some(f) if age < f.window_ms => Claim::Again,
                _ => {
                    self.conv_reused.fetch_add(1, Ordering::Relaxed);
                    Claim::Stale
                }
            },
        }
    }

    fn release_conv(&self, conv: u32) {
        self.convs.remove(self.hash_conv(conv));
    }

    fn locate(&self, conv: u32) -> Option<Location> {
        self.locations_of(conv).get(&conv).copied()
    }

    fn place(&self, conv: u32, loc: Location) {
        self.locations_of(conv).insert(conv, loc);
    }

    fn unplace(&self, conv: u32, loc: Location) {
        let mut m = self.locations_of(conv);
        if m.get(&conv) == Some(&loc) {
            m.remove(&conv);
        }
    }

    fn moved(&self, from: IpAddr, to: IpAddr) {
        let (a, b) = (Self::source_key(from), Self::source_key(to));
        if a == b {
            return;
        }
        if let Some(s) = self.stripe(a).lock().unwrap_or_else(|e| e.into_inner()).get_mut(&a) {
            s.live = s.live.saturating_sub(1);
        }
        // Counted against the new source's cap from now on, though not refused by it: a moving session
        // is not a new one.
        let (_, burst) = self.cfg.new_per_source;
        let mut m = self.stripe(b).lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::ZERO;
        m.entry(b).or_insert(Source { live: 0, tokens: f64::from(burst), at: now }).live += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn a_fingerprint_is_seen_within_its_window_only() {
        let f = FingerprintSet::new(70, Duration::from_secs(60));
        assert_eq!(f.insert(at(1000), 42), None);
        // Another shard, whose `now` was read a little earlier: seen (not 49 days old).
        assert_eq!(f.insert(at(997), 42), Some(0), "seen from a clock a few ms behind");
        assert_eq!(f.insert(at(31_000), 42), Some(30_000), "seen, with its age");
        assert_eq!(f.insert(at(61_001), 42), None, "forgotten after the window, remembered again");
        f.remove(42);
        assert_eq!(f.insert(at(61_002), 42), None);
        assert_eq!(f.evicted(), 0);
    }

    #[test]
    fn a_full_bucket_pushes_out_its_oldest_and_counts_it() {
        let f = FingerprintSet::new(1, Duration::from_secs(60));
        // One bucket: distinct fingerprints (high bits), same bucket.
        for i in 0..WAYS as u64 {
            assert_eq!(f.insert(at(1000 + 2 * i), (i + 1) << 32), None);
        }
        assert_eq!(f.evicted(), 0);
        assert_eq!(f.insert(at(2000), 99 << 32), None);
        assert_eq!(f.evicted(), 1);
        assert_eq!(f.insert(at(2001), 1 << 32), None, "the oldest went");
        assert!(f.insert(at(2002), 7 << 32).is_some(), "the newest stayed");
    }

    /// Two candidate buckets per entry: filled to 55%, no live entry is pushed out (with one bucket per
    /// entry, dozens are: a Poisson tail of buckets overflows long before), and every entry is still
    /// found.
    #[test]
    fn two_choices_keep_every_entry_until_the_set_is_half_full() {
        let f = FingerprintSet::new(7000, Duration::from_secs(60));
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let hashes: Vec<u64> = (0..3850)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect();
        for &h in &hashes {
            assert_eq!(f.insert(at(1000), h), None);
        }
        assert_eq!(f.evicted(), 0, "live entries pushed out at 55% load");
        assert!(hashes.iter().all(|&h| f.insert(at(2000), h).is_some()), "an entry was lost");
    }

    #[test]
    fn admission_caps_and_rates_per_source() {
        let cfg = FrontConfig { max_sessions: 5, max_per_source: 3, new_per_source: (1, 2), ..Default::default() };
        let front = FrontDoor::new(cfg);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t = at(0);
        // Burst of 2, then one per second.
        assert_eq!(front.admit(t, a), Ok(()));
        assert_eq!(front.admit(t, a), Ok(()));
        assert_eq!(front.admit(t, a), Err(Refusal::Rate));
        assert_eq!(front.admit(at(1000), a), Ok(()));
        // Three live: the per-source cap, whatever the rate allows.
        assert_eq!(front.admit(at(10_000), a), Err(Refusal::PerSource));
        front.closed(Some(a));
        assert_eq!(front.admit(at(10_000), a), Ok(()));
        // An IPv4-mapped address is the same source; another source has its own budget, up to the total.
        assert_eq!(front.admit(at(10_000), "::ffff:192.0.2.1".parse().unwrap()), Err(Refusal::PerSource));
        assert_eq!(front.admit(t, b), Ok(()));
        assert_eq!(front.admit(t, b), Ok(()));
        assert_eq!(front.admit(at(20_000), b), Err(Refusal::Total));
        let s = front.stats();
        assert_eq!((s.refused_total, s.refused_per_source, s.refused_rate), (1, 2, 1));
        // Reported once per interval, only when something was refused.
        let r = front.poll_report(at(20_000)).expect("a report");
        assert_eq!(r.refused_total + r.refused_per_source + r.refused_rate, 4);
        assert_eq!(front.poll_report(at(25_000)), None, "within the interval");
        assert_eq!(front.poll_report(at(40_000)), None, "nothing new");
        assert_eq!(front.admit(at(40_000), b), Err(Refusal::Total));
        assert_eq!(front.poll_report(at(40_001)).map(|r| r.refused_total), Some(1));
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let cfg = FrontConfig { max_per_source: 1, new_per_source: (0, 0), ..Default::default() };
        let front = FrontDoor::new(cfg);
        assert_eq!(front.admit(at(0), "2001:db8:1:2::1".parse().unwrap()), Ok(()));
        let same64 = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(front.admit(at(0), same64), Err(Refusal::PerSource));
        assert_eq!(front.admit(at(0), "2001:db8:1:3::1".parse().unwrap()), Ok(()));
    }

    #[test]
    fn a_conv_claimed_again_is_fresh_within_the_replay_window_and_stale_after() {
        let front = FrontDoor::default();
        assert_eq!(front.claim_conv(at(0), 7), Claim::New);
        assert_eq!(front.claim_conv(at(5_000), 7), Claim::Again);
        assert_eq!(front.claim_conv(at(61_000), 7), Claim::Stale);
        front.release_conv(7);
        assert_eq!(front.claim_conv(at(61_000), 7), Claim::New);
    }
}
