//! Time for sans-IO protocol code.
//!
//! No layer of kcpd reads a clock: the driver (a shard, the simulator, a fuzzer) reads it once per loop
//! turn and passes an [`Instant`] down. An `Instant` counts microseconds since the driver's epoch (the
//! process start, or the start of a simulation) in a `u64`, which never wraps in practice (585 000 years);
//! deadlines compare with `<`. Microseconds leave room for pacing, which needs sub-millisecond timing.
//!
//! KCP's own clock is kcp-go's `currentMs()`: milliseconds since process start as a wrapping `u32`,
//! echoed on the wire in the `ts` field and compared wrap-aware (`int32(a - b)`). [`Instant::ms32`]
//! derives it, and [`ms32_diff`] is the one wrap-aware comparison that remains for those values.
#![no_std]
#![warn(missing_docs)]

use core::fmt;
use core::ops::{Add, AddAssign, Sub, SubAssign};

/// A point in time: microseconds since the driver's epoch.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

/// A span of time in microseconds.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// `us` microseconds after the epoch.
    pub const fn from_micros(us: u64) -> Self {
        Instant(us)
    }

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms.saturating_mul(1000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }

    /// KCP's clock at this instant: whole milliseconds since the epoch, wrapping at 2^32 (kcp-go
    /// `currentMs()`; about 49.7 days).
    pub const fn ms32(self) -> u32 {
        (self.0 / 1000) as u32
    }

    /// The first instant at which KCP's clock reads `ts`, seen from `self`: `ts` is taken as the nearest
    /// wrapping millisecond value (up to 2^31 ms ahead or behind); a `ts` already past gives `self`.
    pub fn at_ms32(self, ts: u32) -> Instant {
        let d = ms32_diff(ts, self.ms32());
        if d <= 0 { self } else { Instant((self.0 / 1000 + d as u64) * 1000) }
    }

    /// The time since `earlier`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the end of time.
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);
    /// The longest span (deadlines this far away never come).
    pub const MAX: Duration = Duration(u64::MAX);

    /// `us` microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Duration(us)
    }

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms.saturating_mul(1000))
    }

    /// `s` seconds.
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1_000_000))
    }

    /// In microseconds.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// In whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1000
    }
}

/// Wrap-aware `a - b` of KCP's millisecond clock values (kcp-go `_itimediff`): positive when `a` is later.
#[inline(always)]
pub const fn ms32_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d.0))
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// The time from `rhs` to `self`, zero if `rhs` is later.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        Duration(self.0.saturating_add(d.0))
    }
}

impl Sub for Duration {
    type Output = Duration;
    fn sub(self, d: Duration) -> Duration {
        Duration(self.0.saturating_sub(d.0))
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Self {
        Duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_micros(d.0)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) { write!(f, "{}ms", self.0 / 1000) } else { write!(f, "{}us", self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcp_clock_wraps_and_compares_across_the_wrap() {
        let before = Instant::from_millis(u64::from(u32::MAX) - 5);
        let after = before + Duration::from_millis(10);
        assert_eq!(after.ms32(), 4);
        assert_eq!(ms32_diff(after.ms32(), before.ms32()), 10);
        assert!(after > before);
        assert_eq!(after - before, Duration::from_millis(10));
        assert_eq!(before - after, Duration::ZERO);
    }

    #[test]
    fn deadlines_from_kcp_timestamps() {
        let now = Instant::from_micros(1_234_567);
        assert_eq!(now.ms32(), 1234);
        // 10 ms ahead on KCP's clock: the first instant its clock reads 1244.
        assert_eq!(now.at_ms32(1244), Instant::from_millis(1244));
        assert_eq!(now.at_ms32(1244).ms32(), 1244);
        // Already past (or now): now.
        assert_eq!(now.at_ms32(1200), now);
        assert_eq!(now.at_ms32(1234), now);
        // Across the wrap.
        let near = Instant::from_millis(u64::from(u32::MAX));
        assert_eq!(near.at_ms32(3), Instant::from_millis(u64::from(u32::MAX) + 4));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(Instant::from_micros(u64::MAX - 1) + Duration::from_secs(1), Instant::from_micros(u64::MAX));
        assert_eq!(Duration::from(core::time::Duration::from_millis(3)), Duration::from_millis(3));
    }
}
