//! Timing: run a closure for a fixed time, repeat, take the median rate.

use std::time::{Duration, Instant};

pub struct Measure {
    pub seconds: f64,
    pub reps: usize,
}

impl Measure {
    /// Median bytes per second of `f`, which processes `bytes` per call.
    pub fn rate(&self, bytes: usize, mut f: impl FnMut()) -> f64 {
        // Warm up (caches, frequency, lazily built tables).
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_millis(50) {
            f();
        }
        let mut rates: Vec<f64> = (0..self.reps)
            .map(|_| {
                let start = Instant::now();
                let mut calls = 0u64;
                let limit = Duration::from_secs_f64(self.seconds);
                loop {
                    for _ in 0..16 {
                        f();
                    }
                    calls += 16;
                    let el = start.elapsed();
                    if el >= limit {
                        break calls as f64 * bytes as f64 / el.as_secs_f64();
                    }
                }
            })
            .collect();
        rates.sort_by(|a, b| a.total_cmp(b));
        rates[rates.len() / 2]
    }
}

pub fn mbs(rate: f64) -> String {
    format!("{:.0} MB/s", rate / 1e6)
}

pub fn gbs(rate: f64) -> String {
    format!("{:.2} GB/s", rate / 1e9)
}

/// Median of `reps` runs of an external command's figure.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}
