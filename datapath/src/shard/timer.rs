//! A hashed timing wheel with millisecond slots: O(1) to arm, lazy cancellation (an entry fires only if
//! it still matches its owner's current deadline), an occupancy bitmap to find the next non-empty slot in
//! a few word scans. Thousands of idle sessions cost nothing until their deadline. Deadlines are
//! [`Instant`]s, rounded up to the next millisecond (a timer never fires early).

use kcpd_time::Instant;

const SLOTS: usize = 4096;

/// Milliseconds since the epoch, rounded up.
fn ceil_ms(t: Instant) -> u64 {
    t.as_micros().div_ceil(1000)
}

/// Deadlines for `u32` keys (connection slots).
pub struct Wheel {
    slots: Vec<Vec<(u32, u64)>>,
    /// Bit per non-empty slot.
    occupied: [u64; SLOTS / 64],
    /// Current deadline (ms) per key (`None`: not armed). An entry in a slot is stale unless it matches.
    armed: Vec<Option<u64>>,
    /// Millisecond up to which slots have been swept.
    cursor: u64,
    len: usize,
}

impl Wheel {
    /// An empty wheel, swept from `now` on; later deadlines must come from the same clock (the shard's).
    pub fn new(now: Instant) -> Self {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; SLOTS / 64],
            armed: Vec::new(),
            cursor: now.as_millis(),
            len: 0,
        }
    }

    /// Arm `key` for `at` (replacing any earlier deadline). Deadlines in the past fire at the next sweep.
    pub fn arm(&mut self, key: u32, at: Instant) {
        let at = ceil_ms(at);
        let k = key as usize;
        if self.armed.len() <= k {
            self.armed.resize(k + 1, None);
        }
        if self.armed[k] == Some(at) {
            return;
        }
        self.armed[k] = Some(at);
        // A deadline already past goes into the current slot (the entry keeps the real deadline).
        let slot = (at.max(self.cursor) % SLOTS as u64) as usize;
        self.slots[slot].push((key, at));
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
    }

    /// Cancel `key`'s deadline, if any. Lazy: its entry stays in the slot and is skipped when swept.
    pub fn disarm(&mut self, key: u32) {
        if let Some(a) = self.armed.get_mut(key as usize) {
            *a = None;
        }
    }

    /// Milliseconds from `now` until the next non-empty slot (at most `limit`); `None` when nothing is
    /// armed. May be early (a stale entry, or one a lap later): the sweep then finds nothing, which is
    /// harmless.
    pub fn next_in(&self, now: Instant, limit: u32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let now = now.as_millis();
        if now >= self.cursor && self.slot_occupied((self.cursor % SLOTS as u64) as usize) {
            return Some(0);
        }
        let start = (self.cursor % SLOTS as u64) as usize;
        let mut d = 0usize;
        while d < SLOTS.min(limit as usize + 1) {
            let pos = (start + d) % SLOTS;
            let word = self.occupied[pos / 64] >> (pos % 64);
            if word != 0 {
                let hit = d + word.trailing_zeros() as usize;
                let at = self.cursor + hit as u64;
                return Some(at.saturating_sub(now).min(u64::from(limit)) as u32);
            }
            d += 64 - pos % 64;
        }
        Some(limit)
    }

    fn slot_occupied(&self, slot: usize) -> bool {
        self.occupied[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Keys whose deadline is at or before `now`, appended to `out` (each once; they are disarmed).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<u32>) {
        let now = now.as_millis();
        if now < self.cursor {
            return;
        }
        // A long stall sweeps every slot once.
        let steps = (now - self.cursor).min(SLOTS as u64 - 1);
        for d in 0..=steps {
            let idx = ((self.cursor + d) % SLOTS as u64) as usize;
            if !self.slot_occupied(idx) {
                continue;
            }
            let slot = &mut self.slots[idx];
            let mut i = 0;
            while i < slot.len() {
                let (k, at) = slot[i];
                if at <= now {
                    slot.swap_remove(i);
                    self.len -= 1;
                    if self.armed.get(k as usize) == Some(&Some(at)) {
                        self.armed[k as usize] = None;
                        out.push(k);
                    }
                } else {
                    // A later lap of the wheel.
                    i += 1;
                }
            }
            if slot.is_empty() {
                self.occupied[idx / 64] &= !(1 << (idx % 64));
            }
        }
        self.cursor = now + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Instant {
        Instant::from_millis(x)
    }

    #[test]
    fn fires_once_at_the_latest_deadline() {
        let mut w = Wheel::new(ms(1000));
        w.arm(1, ms(1010));
        w.arm(2, ms(1005));
        w.arm(1, ms(1020)); // re-armed later: the 1010 entry is stale
        w.arm(3, ms(1000 + 5000)); // beyond one lap
        assert_eq!(w.next_in(ms(1000), 100), Some(5));
        let mut out = Vec::new();
        w.expire(ms(1009), &mut out);
        assert_eq!(out, [2]);
        out.clear();
        w.expire(ms(1015), &mut out);
        assert!(out.is_empty());
        w.expire(ms(1020), &mut out);
        assert_eq!(out, [1]);
        out.clear();
        w.expire(ms(1000 + 4096 + 10), &mut out);
        assert!(out.is_empty(), "a later lap does not fire early");
        w.expire(ms(6000), &mut out);
        assert_eq!(out, [3]);
        w.disarm(3);
        assert_eq!(w.next_in(ms(6000), 100), None);
    }

    #[test]
    fn past_deadlines_fire_now_and_none_fires_early() {
        let mut w = Wheel::new(ms(5000));
        w.arm(0, ms(4990));
        // 10.3 ms ahead: not at 5010 ms, at 5011.
        w.arm(1, Instant::from_micros(5_010_300));
        let mut out = Vec::new();
        w.expire(ms(5000), &mut out);
        assert_eq!(out, [0]);
        out.clear();
        w.expire(Instant::from_micros(5_010_900), &mut out);
        assert!(out.is_empty());
        w.expire(ms(5011), &mut out);
        assert_eq!(out, [1]);
    }
}
