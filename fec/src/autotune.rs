//! Detection of the sender's (ds, ps) from the packets themselves (spec §3.6), so that FEC settings bind
//! only the sending side.
//!
//! kcp-go's two auto-tuners both look for one clean "pulse" (a data run and a parity run bounded by type
//! edges) starting at the *oldest* sample, so a single loss early in the history stalls them for ~260
//! packets (vectors `new/fec_new.json`, autotune). This one keeps the same 258-sample history but accepts
//! any gap-free pulse anywhere in it, newest first, and checks what a real sender guarantees:
//! - a complete data run followed (or preceded) by a complete parity run, each bounded by type edges on
//!   consecutive seqids, gives `ds` and `ps`;
//! - a group starts at a multiple of `ds+ps`, so the data run must start at `seqid % (ds+ps) == 0`;
//! - seqids of parity a NEW sender skipped are never sent, so a skipped group shows up as a gap and can
//!   never be mistaken for a longer data run.

/// Samples kept (kcp-go uses 258).
pub const HISTORY: usize = 258;
/// Most shards (data + parity) of a code the [`Decoder`](crate::Decoder) switches to when it detects one;
/// [`detect`](AutoTune::detect) reports codes up to [`MAX_TOTAL_SHARDS`](crate::rs::MAX_TOTAL_SHARDS) and
/// the decoder refuses larger ones (counted in `retunes_refused`). kcptun users run 10+3, 20+5, at most
/// 70+30 (100 shards); Reed–Solomon allows 256, but the cost grows with the cube of the data shards: building
/// the codec takes ~8 µs for 10+3, ~0.8 ms for 70+30, ~3 ms for 127+1 and ~27 ms for 255+1, and a group whose
/// loss pattern misses the decode-matrix cache ~3 µs, ~38 µs, ~66 µs and ~250 µs (one core, 1400-byte
/// shards). 128 keeps every code kcptun users run, with room, and bounds what a keyed peer can make us pay.
/// A receiver configured with FEC (`Decoder::new(Some(..))`) still uses any configured code up to 256.
pub const MAX_DETECTED_SHARDS: usize = 128;

#[derive(Clone, Copy, Default)]
struct Sample {
    seqid: u32,
    is_data: bool,
    valid: bool,
}

/// History of (seqid, is-data) samples, indexed by `seqid % HISTORY`.
#[derive(Clone)]
pub struct AutoTune {
    ring: Box<[Sample; HISTORY]>,
}

impl Default for AutoTune {
    fn default() -> Self {
        AutoTune { ring: Box::new([Sample::default(); HISTORY]) }
    }
}

impl AutoTune {
    /// Record one received FEC packet's seqid and whether it was data (`0xf1`) or parity (`0xf2`); it
    /// replaces whatever sample held the same slot `seqid % HISTORY`.
    pub fn sample(&mut self, seqid: u32, is_data: bool) {
        self.ring[seqid as usize % HISTORY] = Sample { seqid, is_data, valid: true };
    }

    /// Forget every sample, as if no packet had been seen.
    pub fn clear(&mut self) {
        self.ring.fill(Sample::default());
    }

    fn get(&self, seqid: u32) -> Option<bool> {
        let s = self.ring[seqid as usize % HISTORY];
        (s.valid && s.seqid == seqid).then_some(s.is_data)
    }

    /// The newest (ds, ps) pulse in the history up to `newest`, if any.
    pub fn detect(&self, newest: u32) -> Option<(usize, usize)> {
        let mut found = None;
        // Walking oldest to newest: `run` is the current run of equal types; `complete` the last run that
        // was bounded by edges on both sides, if it ended where `run` began.
        let mut run: Option<(bool, u32, usize, bool)> = None; // (is_data, start, len, started_at_edge)
        let mut complete: Option<(bool, u32, usize)> = None;
        for back in (0..HISTORY as u32).rev() {
            let seqid = newest.wrapping_sub(back);
            let Some(is_data) = self.get(seqid) else {
                run = None;
                complete = None;
                continue;
            };
            match run {
                Some((t, start, len, at_edge)) if t == is_data => run = Some((t, start, len + 1, at_edge)),
                Some((t, start, len, at_edge)) => {
                    // An edge: the run before it is complete if it also began at an edge.
                    let prev = complete.take();
                    if at_edge {
                        if let Some(p) = prev.and_then(|prev| pulse(prev, (t, start, len))) {
                            found = Some(p);
                        }
                        complete = Some((t, start, len));
                    }
                    run = Some((is_data, seqid, 1, true));
                }
                None => run = Some((is_data, seqid, 1, false)),
            }
        }
        found
    }
}

/// Two adjacent complete runs of opposite types: a valid (ds, ps) if the data run starts a group.
fn pulse(a: (bool, u32, usize), b: (bool, u32, usize)) -> Option<(usize, usize)> {
    if a.0 == b.0 {
        return None;
    }
    let (data, parity) = if a.0 { (a, b) } else { (b, a) };
    let (ds, ps) = (data.2, parity.2);
    let n = ds + ps;
    if n > crate::rs::MAX_TOTAL_SHARDS {
        return None;
    }
    (data.1.is_multiple_of(n as u32) && data.1 < crate::encoder::paws(n)).then_some((ds, ps))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(pattern: &[(u32, bool)]) -> AutoTune {
        let mut t = AutoTune::default();
        for &(s, d) in pattern {
            t.sample(s, d);
        }
        t
    }

    fn stream(ds: u32, ps: u32, seqids: impl Iterator<Item = u32>) -> Vec<(u32, bool)> {
        seqids.map(|s| (s, s % (ds + ps) < ds)).collect()
    }

    #[test]
    fn locks_on_the_first_complete_pulse() {
        let s = stream(10, 3, 0..23);
        assert_eq!(feed(&s).detect(22), None, "data run 13..22 not yet closed");
        let s = stream(10, 3, 0..24);
        assert_eq!(feed(&s).detect(23), Some((10, 3)));
        let s = stream(3, 2, 0..9);
        assert_eq!(feed(&s).detect(8), Some((3, 2)));
        let s = stream(1, 1, 0..4);
        assert_eq!(feed(&s).detect(3), Some((1, 1)));
    }

    #[test]
    fn an_early_loss_does_not_stall_it() {
        let s: Vec<_> = stream(10, 3, 0..40).into_iter().filter(|&(s, _)| s != 3).collect();
        assert_eq!(feed(&s).detect(39), Some((10, 3)));
    }

    #[test]
    fn skipped_parity_is_a_gap_not_a_long_data_run() {
        // Group 0's parity (10..12) was never sent.
        let s: Vec<_> = stream(10, 3, 0..50).into_iter().filter(|&(s, _)| !(10..13).contains(&s)).collect();
        let t = feed(&s);
        assert_eq!(t.detect(35), None);
        assert_eq!(t.detect(49), Some((10, 3)));
    }

    #[test]
    fn misaligned_runs_are_rejected() {
        // A pattern no real sender produces: data run of 3 starting at seqid 1.
        let s = [(0, false), (1, true), (2, true), (3, true), (4, false), (5, false), (6, true)];
        assert_eq!(feed(&s).detect(6), None);
    }
}
