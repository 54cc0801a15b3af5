//! kcp-go's FEC decoder (spec §3.5–§3.6), sans-IO.
//!
//! Data shards are handed straight back to the caller for KCP (they never wait for their group); the
//! decoder keeps a copy of each shard of the last [`WINDOW`] groups, and when a group holds `ds` shards
//! with a data shard missing it rebuilds the missing ones, which the caller drains with
//! [`Decoder::poll_recovered`] and feeds to KCP as "not regular" input.
//!
//! Differences from kcp-go, none of them visible to the peer:
//! - a group is closed as soon as all its data is in, so the parity that follows is dropped without a copy
//!   or a decode (kcp-go 1+1 re-"recovers" every data shard from its late parity; see `fec.json`);
//! - the group window is counted in groups, like NEW (`maxShardSets = 3` behind the newest), with DEB's
//!   60 s expiry on top;
//! - peer (ds, ps) detection locks on the first gap-free pulse anywhere in the history ([`crate::autotune`]);
//!   a detected code is used only up to [`MAX_DETECTED_SHARDS`] shards, and after the first lock-on the
//!   decoder switches code at most once per [`RETUNE_INTERVAL_GROUPS`] groups (kcp-go follows any pulse at
//!   once), so that a keyed peer cannot make it rebuild codecs and decode matrices over and over.

use crate::autotune::{AutoTune, MAX_DETECTED_SHARDS};
use crate::encoder::paws;
use crate::rs::{MAX_TOTAL_SHARDS, ReedSolomon};
use crate::wire::{self, Class, HEADER_SIZE, MAX_SHARD, Packet, WireError};
use kcpd_time::Instant;

/// Groups kept: the newest and three behind it (kcp-go NEW `maxShardSets = 3`).
pub const WINDOW: usize = 4;
/// kcp-go DEB `fecExpire` (ms): a group incomplete this long is given up.
pub const FEC_EXPIRE_MS: u32 = 60_000;
/// After the first lock-on, a newly detected (ds, ps) is taken only once this many groups' worth of FEC
/// packets (counted in groups of the larger of the old and the new code) have arrived since the code last
/// changed; until then the decoder keeps tuning (no recovery, data still delivered) and counts the refusal.
/// The decoder reads no clock, so the limit counts packets. A switch costs a codec build (up to ~3 ms at
/// [`MAX_DETECTED_SHARDS`]) and fresh decode matrices; spread over at least 64 groups it stays below about
/// half a microsecond per packet, and a sender that changes its code once is followed within 64 groups
/// (at once if the switch comes later than that, as it does in practice). A configured code
/// (`Decoder::new(Some(..))`) is not a lock-on: the first code detected is taken at once either way.
pub const RETUNE_INTERVAL_GROUPS: u64 = 64;
/// Stride of a shard in a group's buffer.
const STRIDE: usize = MAX_SHARD;
/// Per-shard room of a group's buffer, by the longest shard it must hold: small tiers keep the groups of
/// sessions that exchange only small datagrams (ACKs, keepalives, interactive traffic) at a few KiB instead
/// of `n * 1492` bytes each.
const TIERS: [usize; 3] = [128, 512, STRIDE];

fn tier(len: usize) -> usize {
    TIERS.into_iter().find(|&t| t >= len).unwrap_or(STRIDE)
}

/// What the caller does with an input FEC packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// A data shard: feed these KCP bytes (`packet[8..]`) to KCP now, as regular input.
    Data(&'a [u8]),
    /// A parity shard: nothing to deliver (check [`Decoder::poll_recovered`]).
    Parity,
    /// A NEW-profile OOB packet (counted and dropped; kcptun never sends one).
    Oob,
}

/// Decoder counters (kcp-go SNMP names in brackets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecoderStats {
    /// Data packets received (their KCP bytes are handed back for KCP whether or not they enter a group).
    pub data_shards: u64,
    /// Parity packets received (SNMP `FECParityShards`).
    pub parity_shards: u64,
    /// Data shards rebuilt and delivered (SNMP `FECRecovered`).
    pub recovered: u64,
    /// Rebuilt shards with an impossible size field, and codec failures (SNMP `FECErrs`).
    pub errs: u64,
    /// Data shards held by groups given up incomplete (SNMP `FECShortShards`).
    pub short_shards: u64,
    /// Groups that reached `ds` shards (SNMP `FECFullShardSet`).
    pub full_shard_sets: u64,
    /// OOB packets (SNMP `OOBPackets`).
    pub oob: u64,
    /// Shards their still-collecting group already holds (not stored again; data bytes are still handed back).
    pub duplicates: u64,
    /// Shards of groups already closed (complete or recovered): mostly the parity of loss-free groups.
    pub redundant: u64,
    /// Shards older than the group window.
    pub late: u64,
    /// Packets refused by [`Packet::new_checked`](crate::wire::Packet::new_checked): the [`WireError`]s
    /// [`Decoder::input`] returned.
    pub malformed: u64,
    /// seqid at or beyond the wrap point [dropped by NEW receivers].
    pub out_of_range: u64,
    /// Times the detected sender (ds, ps) changed.
    pub retunes: u64,
    /// Times the detector found a new (ds, ps) that the decoder did not switch to: more than
    /// [`MAX_DETECTED_SHARDS`] shards, or within [`RETUNE_INTERVAL_GROUPS`] of the last switch. Counted once
    /// per refused code in a row (the packets that follow while refused count in `untuned`); a switch
    /// allowed later counts in `retunes`.
    pub retunes_refused: u64,
    /// Packets seen while the sender's (ds, ps) was unknown or contradicted (no recovery then).
    pub untuned: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Collecting,
    Closed,
}

struct Group {
    /// Unwrapped group number (counts across seqid wrap).
    id: u64,
    state: State,
    first_seen: Instant,
    present: [u64; 4],
    count: usize,
    data_count: usize,
    lens: Vec<u16>,
    max_len: usize,
    /// Room per shard (one of [`TIERS`]); shard `i` lives at `buf[i * stride..]`.
    stride: usize,
    /// `n * stride` bytes, allocated on first use.
    buf: Vec<u8>,
}

impl Group {
    fn new() -> Self {
        Group {
            id: 0,
            state: State::Free,
            first_seen: Instant::ZERO,
            present: [0; 4],
            count: 0,
            data_count: 0,
            lens: Vec::new(),
            max_len: 0,
            stride: TIERS[0],
            buf: Vec::new(),
        }
    }

    fn has(&self, i: usize) -> bool {
        self.present[i / 64] & (1 << (i % 64)) != 0
    }

    fn reset(&mut self, id: u64, now: Instant, n: usize) {
        self.id = id;
        self.state = State::Collecting;
        self.first_seen = now;
        self.present = [0; 4];
        self.count = 0;
        self.data_count = 0;
        // Keep the room the last group needed (a bulk flow never re-allocates); shrink once a group held
        // only small shards.
        self.stride = tier(self.max_len.max(1));
        self.max_len = 0;
        self.lens.clear();
        self.lens.resize(n, 0);
        // Resized in place: the allocation only grows, so groups of alternating tiers never re-allocate
        // (every byte read is written first: shards are copied in, padding and rebuilt shards written).
        self.buf.resize(n * self.stride, 0);
    }

    /// Make room for a shard of `len` bytes: a larger tier, shards already stored moved to their new
    /// places (from the last, so none is overwritten before it moved).
    fn fit(&mut self, len: usize, n: usize) {
        if len <= self.stride {
            return;
        }
        let (old, new) = (self.stride, tier(len));
        self.buf.resize(n * new, 0);
        for i in (0..n).rev() {
            if self.has(i) {
                let l = self.lens[i] as usize;
                self.buf.copy_within(i * old..i * old + l, i * new);
            }
        }
        self.stride = new;
    }
}

/// FEC decoder for one session.
pub struct Decoder {
    /// The sender's parameters as configured or detected; `None` until detected.
    params: Option<(usize, usize)>,
    /// A packet contradicted `params` (or none are known): no recovery until the detector locks.
    tuning: bool,
    rs: Option<ReedSolomon>,
    groups: Vec<Group>,
    /// Newest group seen: wrapped number and unwrapped id.
    newest: Option<(u32, u64)>,
    tune: AutoTune,
    /// A detected code was taken (the first lock-on is immediate; later switches are rate-limited).
    locked: bool,
    /// FEC packets (data and parity) taken since the code last changed (saturating).
    since_change: u64,
    /// The last code refused, so a refusal is counted once while the sender keeps it.
    refused: Option<(usize, usize)>,
    /// Recovered shards awaiting `poll_recovered`: (group slot, shard index).
    ready: Vec<(usize, usize)>,
    ready_pos: usize,
    stats: DecoderStats,
}

/// A rebuilt data shard.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered<'a> {
    /// The whole shard, zero-padded to the group's longest shard (what kcp-go's decoder returns).
    pub shard: &'a [u8],
    /// The KCP bytes in it, `shard[2..size]`.
    pub kcp: &'a [u8],
}

impl Decoder {
    /// A decoder expecting a sender with `params = (ds, ps)`; `None` when this end has FEC off and must
    /// detect the sender's parameters (kcp-go creates its decoder lazily as 1+1 and auto-tunes).
    pub fn new(params: Option<(usize, usize)>) -> Self {
        let mut d = Decoder {
            params: None,
            tuning: true,
            rs: None,
            groups: (0..WINDOW).map(|_| Group::new()).collect(),
            newest: None,
            tune: AutoTune::default(),
            locked: false,
            since_change: 0,
            refused: None,
            ready: Vec::new(),
            ready_pos: 0,
            stats: DecoderStats::default(),
        };
        if let Some((ds, ps)) = params {
            d.set_params(ds, ps);
        }
        d
    }

    /// The sender parameters in use, if known.
    pub fn params(&self) -> Option<(usize, usize)> {
        self.params
    }

    /// True while recovery is off because the sender's parameters are unknown or were contradicted.
    pub fn tuning(&self) -> bool {
        self.tuning
    }

    /// Counters since construction (monotonic; a retune does not reset them).
    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    /// Groups collecting shards now, and the smallest of their (wrapped) group numbers (kcp-go NEW
    /// `FECShardSet` / `FECShardMin`).
    pub fn open_groups(&self) -> (usize, Option<u32>) {
        let Some((ds, ps)) = self.params else { return (0, None) };
        let groups = (paws(ds + ps) / (ds + ps) as u32) as u64;
        let open = self.groups.iter().filter(|g| g.state == State::Collecting);
        let min = open.clone().map(|g| (g.id % groups) as u32).min();
        (open.count(), min)
    }

    fn set_params(&mut self, ds: usize, ps: usize) -> bool {
        match ReedSolomon::new(ds, ps) {
            Ok(rs) => {
                if self.params.is_some() {
                    self.stats.retunes += 1;
                }
                self.rs = Some(rs);
                self.params = Some((ds, ps));
                self.tuning = false;
                self.since_change = 0;
                self.refused = None;
                self.newest = None;
                for g in &mut self.groups {
                    g.state = State::Free;
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the decoder may switch to the detected code `(ds, ps)` now ([`MAX_DETECTED_SHARDS`],
    /// [`RETUNE_INTERVAL_GROUPS`]).
    fn may_switch(&self, ds: usize, ps: usize) -> bool {
        let n = ds + ps;
        if n > MAX_DETECTED_SHARDS {
            return false;
        }
        if !self.locked {
            return true;
        }
        let widest = self.params.map_or(n, |(d, p)| n.max(d + p)) as u64;
        self.since_change >= RETUNE_INTERVAL_GROUPS * widest
    }

    /// Take one FEC packet (already decrypted; a datagram that [`wire::classify`] did not call raw KCP).
    /// Any recovered shards from the previous call that were not polled are dropped.
    pub fn input<'p>(&mut self, now: Instant, pkt: &'p [u8]) -> Result<Input<'p>, WireError> {
        self.ready.clear();
        self.ready_pos = 0;
        let p = Packet::new_checked(pkt).inspect_err(|_| self.stats.malformed += 1)?;
        let is_data = match p.class() {
            Class::Data => {
                self.stats.data_shards += 1;
                true
            }
            Class::Parity => {
                self.stats.parity_shards += 1;
                false
            }
            Class::Oob => {
                self.stats.oob += 1;
                return Ok(Input::Oob);
            }
            Class::Kcp => unreachable!("new_checked accepts FEC types only"),
        };
        self.since_change = self.since_change.saturating_add(1);
        let out = if is_data { Input::Data(&pkt[wire::HEADER_SIZE_PLUS2..]) } else { Input::Parity };
        let seqid = p.seqid();

        if let Some((ds, ps)) = self.params
            && seqid >= paws(ds + ps)
        {
            // NEW receivers keep seqids at or beyond the wrap point out of FEC (spec §3.2); a data shard's
            // KCP bytes are still delivered.
            self.stats.out_of_range += 1;
            return Ok(out);
        }
        self.tune.sample(seqid, is_data);
        if let Some((ds, ps)) = self.params
            && !self.tuning
            && ((seqid % (ds + ps) as u32) < ds as u32) != is_data
        {
            self.tuning = true;
        }
        if self.tuning {
            self.stats.untuned += 1;
            match self.tune.detect(seqid) {
                // Contradicted, but the sender is what we thought: resume with the groups we have.
                Some(found) if Some(found) == self.params => {
                    self.tuning = false;
                    self.refused = None;
                }
                Some((ds, ps)) if self.may_switch(ds, ps) => {
                    if !self.set_params(ds, ps) {
                        return Ok(out);
                    }
                    self.locked = true;
                }
                Some(found) => {
                    if self.refused != Some(found) {
                        self.refused = Some(found);
                        self.stats.retunes_refused += 1;
                    }
                    return Ok(out);
                }
                None => return Ok(out),
            }
        }
        let (ds, ps) = self.params.expect("set when not tuning");
        let n = ds + ps;
        if seqid >= paws(n) {
            // Only possible right after a retune to a smaller code.
            self.stats.out_of_range += 1;
            return Ok(out);
        }
        self.store(now, seqid / n as u32, (seqid % n as u32) as usize, p.shard(), is_data);
        Ok(out)
    }

    fn store(&mut self, now: Instant, group: u32, index: usize, shard: &[u8], is_data: bool) {
        let (ds, ps) = self.params.expect("tuned");
        let n = ds + ps;
        let groups = paws(n) / n as u32;
        // Unwrap the group number against the newest one (half the group space either way).
        let id = match self.newest {
            None => {
                self.newest = Some((group, u64::from(group)));
                u64::from(group)
            }
            Some((ng, nid)) => {
                let fwd = (group + groups - ng) % groups;
                if fwd == 0 {
                    nid
                } else if fwd <= groups / 2 {
                    let id = nid + u64::from(fwd);
                    self.newest = Some((group, id));
                    id
                } else {
                    let back = u64::from(groups - fwd);
                    if back >= WINDOW as u64 || back > nid {
                        self.stats.late += 1;
                        return;
                    }
                    nid - back
                }
            }
        };
        let slot = (id % WINDOW as u64) as usize;
        let g = &mut self.groups[slot];
        let expired = g.state != State::Free && (now - g.first_seen).as_millis() >= u64::from(FEC_EXPIRE_MS);
        if g.state == State::Free || g.id != id || expired {
            if g.state == State::Collecting {
                self.stats.short_shards += g.data_count as u64;
            }
            g.reset(id, now, n);
        }
        match g.state {
            State::Closed => {
                self.stats.redundant += 1;
                return;
            }
            State::Collecting if g.has(index) => {
                self.stats.duplicates += 1;
                return;
            }
            _ => {}
        }
        g.fit(shard.len(), n);
        let st = g.stride;
        g.buf[index * st..index * st + shard.len()].copy_from_slice(shard);
        g.lens[index] = shard.len() as u16;
        g.max_len = g.max_len.max(shard.len());
        g.present[index / 64] |= 1 << (index % 64);
        g.count += 1;
        g.data_count += is_data as usize;
        if g.count < ds {
            return;
        }
        self.stats.full_shard_sets += 1;
        g.state = State::Closed;
        if g.data_count == ds {
            return;
        }
        self.recover(slot, n);
    }

    fn recover(&mut self, slot: usize, n: usize) {
        let rs = self.rs.as_mut().expect("tuned");
        let g = &mut self.groups[slot];
        let len = g.max_len;
        let st = g.stride;
        let mut present = [false; MAX_TOTAL_SHARDS];
        for (i, p) in present.iter_mut().enumerate().take(n) {
            *p = g.has(i);
            if *p {
                // Zero-pad to the longest present shard (kcp-go pads every shard to it).
                let l = g.lens[i] as usize;
                g.buf[i * st + l..i * st + len].fill(0);
            }
        }
        let mut shards: [&mut [u8]; MAX_TOTAL_SHARDS] = core::array::from_fn(|_| &mut [][..]);
        for (s, chunk) in shards.iter_mut().zip(g.buf.chunks_exact_mut(st)) {
            *s = &mut chunk[..len];
        }
        match rs.reconstruct_data(&mut shards[..n], &present[..n]) {
            Ok(_) => {
                let ds = rs.data_shards();
                for i in (0..ds).filter(|&i| !present[i]) {
                    g.lens[i] = len as u16;
                    self.ready.push((slot, i));
                }
            }
            Err(_) => self.stats.errs += 1,
        }
    }

    /// The next shard rebuilt by the last [`input`](Self::input), in shard order; shards whose size field
    /// is impossible are counted in `errs` and skipped.
    pub fn poll_recovered(&mut self) -> Option<Recovered<'_>> {
        while self.ready_pos < self.ready.len() {
            let (slot, i) = self.ready[self.ready_pos];
            self.ready_pos += 1;
            let g = &self.groups[slot];
            let st = g.stride;
            let shard = &g.buf[i * st..i * st + g.lens[i] as usize];
            match wire::recovered_payload(shard) {
                Some(_) => {
                    self.stats.recovered += 1;
                    let shard = &self.groups[slot].buf[i * st..i * st + g.lens[i] as usize];
                    let kcp = wire::recovered_payload(shard).expect("checked above");
                    return Some(Recovered { shard, kcp });
                }
                None => self.stats.errs += 1,
            }
        }
        None
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("params", &self.params)
            .field("tuning", &self.tuning)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

const _: () = assert!(HEADER_SIZE + STRIDE == wire::MAX_PACKET);

#[cfg(test)]
mod tests {
    use super::*;

    const T0: kcpd_time::Instant = kcpd_time::Instant::ZERO;

    fn ms(x: u64) -> kcpd_time::Instant {
        kcpd_time::Instant::from_millis(x)
    }

    use crate::{Encoder, ParityRule};

    /// Packets of `groups` 3+2 groups, in emission order.
    fn group_packets(groups: usize) -> Vec<Vec<u8>> {
        let mut enc = Encoder::new(3, 2, ParityRule::Always).unwrap();
        let mut out = Vec::new();
        for i in 0..groups * 3 {
            let mut p = vec![i as u8; 8 + 20 + i];
            enc.encode(T0, &mut p).unwrap();
            out.push(p);
            let mut buf = [0u8; 1500];
            while let Some(n) = enc.poll_parity(&mut buf).unwrap() {
                out.push(buf[..n].to_vec());
            }
        }
        out
    }

    fn drain(d: &mut Decoder) -> usize {
        let mut n = 0;
        while d.poll_recovered().is_some() {
            n += 1;
        }
        n
    }

    /// Shards of every size class in one group, small ones first: the group's buffer moves up through
    /// the tiers and every lost data shard is still rebuilt byte for byte; the next group of small shards
    /// drops back to the small tier.
    #[test]
    fn group_buffer_grows_through_tiers_and_recovers() {
        let sizes = [40usize, 100, 300, 700, 1400, 60];
        let mut enc = Encoder::new(6, 3, ParityRule::Always).unwrap();
        let mut pkts = Vec::new();
        for (i, &sz) in sizes.iter().enumerate() {
            let mut p: Vec<u8> = (0..8 + sz).map(|j| (i * 31 + j) as u8).collect();
            enc.encode(T0, &mut p).unwrap();
            pkts.push(p);
        }
        let mut buf = [0u8; 1500];
        while let Some(n) = enc.poll_parity(&mut buf).unwrap() {
            pkts.push(buf[..n].to_vec());
        }
        assert_eq!(pkts.len(), 9);
        // Lose data shards 1, 4 and 5: arrivals 40, 300, 700 (tiers 128 -> 512 -> 1492) and the parity.
        let mut d = Decoder::new(Some((6, 3)));
        for (i, p) in pkts.iter().enumerate() {
            if ![1, 4, 5].contains(&i) {
                d.input(T0, p).unwrap();
            }
        }
        let mut got = Vec::new();
        while let Some(r) = d.poll_recovered() {
            got.push(r.kcp.to_vec());
        }
        let want: Vec<Vec<u8>> = [1, 4, 5].iter().map(|&i| pkts[i][8..].to_vec()).collect();
        assert_eq!(got, want);
        assert_eq!(d.groups[0].stride, STRIDE);
        // A later group of small shards only: back to the smallest tier.
        let mut small = Vec::new();
        for i in 0..6 {
            let mut p = vec![i as u8; 8 + 50];
            enc.encode(T0, &mut p).unwrap();
            small.push(p);
        }
        d.input(T0, &small[0]).unwrap();
        assert_eq!(d.groups[1].stride, TIERS[0]);
        assert_eq!(d.groups[1].buf.len(), 9 * TIERS[0]);
    }

    #[test]
    fn incomplete_groups_expire_after_60_s() {
        let p = group_packets(1);
        let mut d = Decoder::new(Some((3, 2)));
        d.input(T0, &p[0]).unwrap();
        d.input(ms(1000), &p[1]).unwrap();
        // Data shard 2 lost; the parity arrives a minute later: the group was given up.
        d.input(ms(u64::from(FEC_EXPIRE_MS) + 1), &p[3]).unwrap();
        assert_eq!(drain(&mut d), 0);
        assert_eq!(d.stats().short_shards, 2);
        // Within the minute it is rebuilt.
        let mut d = Decoder::new(Some((3, 2)));
        d.input(T0, &p[0]).unwrap();
        d.input(ms(1000), &p[1]).unwrap();
        d.input(ms(u64::from(FEC_EXPIRE_MS) - 1), &p[3]).unwrap();
        assert_eq!(drain(&mut d), 1);
    }

    #[test]
    fn groups_behind_the_window_are_late() {
        let p = group_packets(WINDOW + 2);
        let mut d = Decoder::new(Some((3, 2)));
        // Newest group first, then a packet of group 0 (WINDOW + 1 groups behind).
        d.input(T0, &p[5 * (WINDOW + 1)]).unwrap();
        d.input(T0, &p[0]).unwrap();
        assert_eq!(d.stats().late, 1);
        // Within the window: accepted and usable.
        d.input(T0, &p[5 * 2]).unwrap();
        assert_eq!(d.stats().late, 1);
    }

    #[test]
    fn loss_free_groups_drop_their_parity_without_decoding() {
        let p = group_packets(3);
        let mut d = Decoder::new(Some((3, 2)));
        for pkt in &p {
            d.input(T0, pkt).unwrap();
            assert_eq!(drain(&mut d), 0);
        }
        let s = d.stats();
        assert_eq!((s.full_shard_sets, s.redundant, s.recovered, s.parity_shards), (3, 6, 0, 6));
    }

    /// `groups` groups of a `ds`+`ps` sender whose first seqid is `first`, in emission order, each packet
    /// with its group number and index (in the sender's numbering) and whether it is data.
    fn code_packets(ds: usize, ps: usize, first: u32, groups: usize) -> Vec<(usize, usize, bool, Vec<u8>)> {
        let mut enc = Encoder::new(ds, ps, ParityRule::Always).unwrap().with_next_seqid(first);
        let mut out = Vec::new();
        for g in 0..groups {
            for i in 0..ds {
                let mut p = vec![0u8; 8 + 30];
                p[8..16].copy_from_slice(&((first as u64) << 32 | (g * 1000 + i) as u64).to_le_bytes());
                enc.encode(T0, &mut p).unwrap();
                out.push((g, i, true, p));
            }
            let mut buf = [0u8; 1500];
            let mut j = ds;
            while let Some(n) = enc.poll_parity(&mut buf).unwrap() {
                out.push((g, j, false, buf[..n].to_vec()));
                j += 1;
            }
        }
        out
    }

    /// Feed `pkts`, losing data shard `lose` of every odd group from the third on (detection needs a clean
    /// group bounded by others, so the first groups are kept whole); returns what was rebuilt and the KCP
    /// bytes of the packets lost. Every data packet that arrives must be handed back.
    fn feed_lossy(
        d: &mut Decoder,
        pkts: &[(usize, usize, bool, Vec<u8>)],
        lose: usize,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut got, mut lost) = (Vec::new(), Vec::new());
        for (g, i, data, p) in pkts {
            if g % 2 == 1 && *g >= 3 && *i == lose {
                lost.push(p[8..].to_vec());
                continue;
            }
            let r = d.input(T0, p).unwrap();
            if *data {
                assert_eq!(r, Input::Data(&p[8..]));
            }
            while let Some(r) = d.poll_recovered() {
                got.push(r.kcp.to_vec());
            }
        }
        (got, lost)
    }

    /// A sender that changes its code once, long after locking on (10+3, then 20+5): the decoder follows at
    /// once and rebuilds the losses after the switch.
    #[test]
    fn a_sender_switching_code_once_is_followed() {
        let mut d = Decoder::new(None);
        let (got, lost) = feed_lossy(&mut d, &code_packets(10, 3, 0, 150), 4);
        assert_eq!(d.params(), Some((10, 3)));
        assert_eq!(got, lost, "every odd group of 10+3 rebuilt");
        // 150 groups of 13 packets = 1950, past 64 groups of 25: the switch is taken at the first clean pulse.
        let (got, lost) = feed_lossy(&mut d, &code_packets(20, 5, 1950, 100), 7);
        assert_eq!(d.params(), Some((20, 5)));
        assert_eq!(got, lost, "every odd group of 20+5 rebuilt");
        let s = d.stats();
        assert_eq!((s.retunes, s.retunes_refused), (1, 0));
    }

    /// The same switch right after the first lock-on: refused (counted) until 64 groups of 20+5 have
    /// arrived, then followed, and the losses after that are rebuilt.
    #[test]
    fn an_early_switch_is_followed_after_the_retune_interval() {
        let mut d = Decoder::new(None);
        feed_lossy(&mut d, &code_packets(10, 3, 0, 5), 4);
        assert_eq!(d.params(), Some((10, 3)));
        let pkts = code_packets(20, 5, 75, 150);
        let interval = (RETUNE_INTERVAL_GROUPS * 25) as usize;
        let (got, _) = feed_lossy(&mut d, &pkts[..interval - 100], 7);
        assert!(got.is_empty() && d.tuning());
        assert_eq!((d.stats().retunes, d.stats().retunes_refused), (0, 1));
        let (got, lost) = feed_lossy(&mut d, &pkts[interval - 100..], 7);
        assert_eq!(d.params(), Some((20, 5)));
        assert_eq!((d.stats().retunes, d.stats().retunes_refused), (1, 1));
        // Locked on at the first clean group once the interval is over (100 packets, 4 groups, from here):
        // every loss from the group after it on is rebuilt.
        assert!(got.len() + 3 >= lost.len() && lost.ends_with(&got), "{} of {}", got.len(), lost.len());
    }

    /// A peer that flips between two codes every four groups gets at most one switch per 64 groups.
    #[test]
    fn retunes_are_rate_limited() {
        let mut d = Decoder::new(None);
        let mut next = 0u32;
        let mut packets = 0u64;
        for k in 0..100 {
            let (ds, ps) = if k % 2 == 0 { (10, 3) } else { (20, 5) };
            let n = (ds + ps) as u32;
            let first = next.div_ceil(n) * n;
            let pkts = code_packets(ds, ps, first, 4);
            next = first + 4 * n;
            packets += pkts.len() as u64;
            feed_lossy(&mut d, &pkts, usize::MAX);
        }
        let s = d.stats();
        assert!(s.retunes <= packets / (RETUNE_INTERVAL_GROUPS * 13), "{s:?} over {packets} packets");
        assert!(s.retunes_refused > 0, "{s:?}");
    }

    /// A detected code over MAX_DETECTED_SHARDS is refused (data still delivered, nothing rebuilt); one at the
    /// cap is used; a configured one of any size still works.
    #[test]
    fn codes_over_the_detection_cap_are_refused() {
        let big = code_packets(150, 50, 0, 6);
        let mut d = Decoder::new(None);
        let (got, _) = feed_lossy(&mut d, &big, 3);
        assert_eq!((d.params(), got.len()), (None, 0));
        assert_eq!(d.stats().retunes_refused, 1);
        let mut d = Decoder::new(Some((150, 50)));
        let (got, lost) = feed_lossy(&mut d, &big, 3);
        assert_eq!(got, lost);
        const _: () = assert!(100 + 28 == MAX_DETECTED_SHARDS);
        let mut d = Decoder::new(None);
        let (got, lost) = feed_lossy(&mut d, &code_packets(100, 28, 0, 6), 3);
        assert_eq!(d.params(), Some((100, 28)));
        assert_eq!(got, lost);
    }

    #[test]
    fn unpolled_parity_is_discarded_and_cleared() {
        let mut enc = Encoder::new(2, 1, ParityRule::Always).unwrap();
        let mut a = vec![0xffu8; 8 + 100];
        enc.encode(T0, &mut a).unwrap();
        let mut b = vec![0xffu8; 8 + 100];
        assert_eq!(enc.encode(T0, &mut b).unwrap(), 1);
        // Not polled; the next group must start from clean accumulators.
        let mut c = vec![1u8; 8 + 10];
        let mut e = vec![2u8; 8 + 10];
        enc.encode(T0, &mut c).unwrap();
        enc.encode(T0, &mut e).unwrap();
        let mut out = [0u8; 1500];
        let n = enc.poll_parity(&mut out).unwrap().unwrap();
        let mut fresh = Encoder::new(2, 1, ParityRule::Always).unwrap().with_next_seqid(3);
        let (mut c2, mut e2) = (vec![1u8; 18], vec![2u8; 18]);
        fresh.encode(T0, &mut c2).unwrap();
        fresh.encode(T0, &mut e2).unwrap();
        let mut out2 = [0u8; 1500];
        let n2 = fresh.poll_parity(&mut out2).unwrap().unwrap();
        assert_eq!(out[..n], out2[..n2]);
    }
}
