//! The process's memory budget for what peers make it hold: received KCP segments waiting in reorder
//! buffers and receive queues, across every session of every shard. A peer decides how much of that it
//! makes us keep (holes before a segment, data the target does not read), so it is the part a budget must
//! bound; what this end sends is bounded by its own windows and applications.
//!
//! Process-wide (like the allocator): [`set_limit`] once at start-up. Each thread charges and releases
//! into a thread-local sum, flushed to the shared total every 256 KiB of change, so the datapath pays no
//! atomic per segment and the total is exact to 256 KiB per thread. Over the limit, a session takes only
//! in-order segments, and only while fewer than [`OVER_QUEUE`] wait to be read (KCP retransmits the rest;
//! every session still makes progress as its reader drains it), and the front door admits no new session.
//! The bound is therefore the limit plus [`OVER_QUEUE`] segments per session.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Over the budget, in-order segments a session may still queue for its reader.
pub const OVER_QUEUE: usize = 8;

static LIMIT: AtomicUsize = AtomicUsize::new(0);
static HELD: AtomicI64 = AtomicI64::new(0);
static DROPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
const FLUSH: i64 = 256 << 10;

thread_local! {
    static LOCAL: Cell<i64> = const { Cell::new(0) };
}

/// Bound what peers make the process hold, in bytes (0: no bound, the default).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
}

/// The bound (0: none).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// `bytes` more (or, negative, fewer) held on this thread.
pub(crate) fn charge(bytes: isize) {
    let _ = LOCAL.try_with(|l| {
        let v = l.get() + bytes as i64;
        if v.abs() >= FLUSH {
            HELD.fetch_add(v, Ordering::Relaxed);
            l.set(0);
        } else {
            l.set(v);
        }
    });
}

/// Bytes held now, all threads (this one's unflushed part included).
pub fn held() -> usize {
    let local = LOCAL.try_with(Cell::get).unwrap_or(0);
    (HELD.load(Ordering::Relaxed) + local).max(0) as usize
}

/// A segment was not kept because the process was over its budget (counted process-wide; only
/// happens over the budget, so an atomic is cheap enough).
pub(crate) fn count_drop() {
    DROPS.fetch_add(1, Ordering::Relaxed);
}

/// Segments not kept because the process was over its budget, all sessions ever.
pub fn drops() -> u64 {
    DROPS.load(Ordering::Relaxed)
}

/// Over the bound: take no more than the session needs to make progress.
pub fn over() -> bool {
    let l = limit();
    l != 0 && held() >= l
}
