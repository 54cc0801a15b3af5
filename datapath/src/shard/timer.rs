//! A hashed timing wheel with millisecond slots: O(1) to arm, lazy cancellation (an entry fires only if
//! it still matches its owner's current deadline), an occupancy bitmap to find the next non-empty slot in
//! a few word scans. Thousands of idle sessions cost nothing until their deadline.

const SLOTS: usize = 4096;

/// Deadlines for `u32` keys (connection slots), in wrapping u32 milliseconds.
pub struct Wheel {
    slots: Vec<Vec<(u32, u32)>>,
    /// Bit per non-empty slot.
    occupied: [u64; SLOTS / 64],
    /// Current deadline per key (`None`: not armed). An entry in a slot is stale unless it matches.
    armed: Vec<Option<u32>>,
    /// Time up to which slots have been swept.
    cursor: u32,
    len: usize,
}

impl Wheel {
    pub fn new(now: u32) -> Self {
        Wheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; SLOTS / 64],
            armed: Vec::new(),
            cursor: now,
            len: 0,
        }
    }

    /// Arm `key` for `at` (replacing any earlier deadline). Deadlines in the past fire at the next sweep.
    pub fn arm(&mut self, key: u32, at: u32) {
        let k = key as usize;
        if self.armed.len() <= k {
            self.armed.resize(k + 1, None);
        }
        if self.armed[k] == Some(at) {
            return;
        }
        self.armed[k] = Some(at);
        // A deadline already past goes into the current slot (the entry keeps the real deadline).
        let place = if (at.wrapping_sub(self.cursor) as i32) < 0 { self.cursor } else { at };
        let slot = place as usize % SLOTS;
        self.slots[slot].push((key, at));
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
    }

    pub fn disarm(&mut self, key: u32) {
        if let Some(a) = self.armed.get_mut(key as usize) {
            *a = None;
        }
    }

    /// Milliseconds from `now` until the next non-empty slot (at most `limit`); `None` when nothing is
    /// armed. May be early (a stale entry, or one a lap later): the sweep then finds nothing, which is
    /// harmless.
    pub fn next_in(&self, now: u32, limit: u32) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        if now.wrapping_sub(self.cursor) as i32 >= 0 && self.slot_occupied(self.cursor as usize % SLOTS) {
            return Some(0);
        }
        let start = self.cursor as usize % SLOTS;
        let mut d = 0usize;
        while d < SLOTS.min(limit as usize + 1) {
            let pos = (start + d) % SLOTS;
            let word = self.occupied[pos / 64] >> (pos % 64);
            if word != 0 {
                let hit = d + word.trailing_zeros() as usize;
                let at = self.cursor.wrapping_add(hit as u32);
                return Some((at.wrapping_sub(now) as i32).max(0).min(limit as i32) as u32);
            }
            d += 64 - pos % 64;
        }
        Some(limit)
    }

    fn slot_occupied(&self, slot: usize) -> bool {
        self.occupied[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Keys whose deadline is at or before `now`, appended to `out` (each once; they are disarmed).
    pub fn expire(&mut self, now: u32, out: &mut Vec<u32>) {
        let steps = now.wrapping_sub(self.cursor);
        if (steps as i32) < 0 {
            return;
        }
        // A long stall sweeps every slot once.
        let steps = steps.min(SLOTS as u32 - 1);
        for d in 0..=steps {
            let t = self.cursor.wrapping_add(d);
            let idx = t as usize % SLOTS;
            if !self.slot_occupied(idx) {
                continue;
            }
            let slot = &mut self.slots[idx];
            let mut i = 0;
            while i < slot.len() {
                let (k, at) = slot[i];
                if (at.wrapping_sub(now) as i32) <= 0 {
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
        self.cursor = now.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_at_the_latest_deadline() {
        let mut w = Wheel::new(1000);
        w.arm(1, 1010);
        w.arm(2, 1005);
        w.arm(1, 1020); // re-armed later: the 1010 entry is stale
        w.arm(3, 1000 + 5000); // beyond one lap
        assert_eq!(w.next_in(1000, 100), Some(5));
        let mut out = Vec::new();
        w.expire(1009, &mut out);
        assert_eq!(out, [2]);
        out.clear();
        w.expire(1015, &mut out);
        assert!(out.is_empty());
        w.expire(1020, &mut out);
        assert_eq!(out, [1]);
        out.clear();
        w.expire(1000 + 4096 + 10, &mut out);
        assert!(out.is_empty(), "a later lap does not fire early");
        w.expire(6000, &mut out);
        assert_eq!(out, [3]);
        w.disarm(3);
        assert_eq!(w.next_in(6000, 100), None);
    }

    #[test]
    fn past_deadlines_fire_now_and_time_wraps() {
        let mut w = Wheel::new(u32::MAX - 5);
        w.arm(0, u32::MAX - 10);
        w.arm(1, 3);
        let mut out = Vec::new();
        w.expire(u32::MAX - 5, &mut out);
        assert_eq!(out, [0]);
        out.clear();
        w.expire(2, &mut out);
        assert!(out.is_empty());
        w.expire(3, &mut out);
        assert_eq!(out, [1]);
    }
}
