//! The per-thread pool of segment payload buffers (ARCHITECTURE.md §7: pooled 1500-byte buffers). Every
//! KCP on a thread draws from and returns to the same pool, so a shard's buffers follow its traffic from
//! session to session: a bulk flow cycles them without touching the allocator, and an idle session holds
//! only what is still in flight. The pool is capped; buffers beyond the cap go back to the allocator.
//!
//! Thread-local rather than passed in: a shard is one thread, the protocol code stays free of plumbing, and
//! a buffer that ends up on another thread (a session dropped elsewhere) is simply freed or pooled there.

use std::cell::RefCell;

/// Bytes per pooled buffer: a whole Ethernet-sized datagram, enough for any KCP MSS up to MTU 1500.
pub const BUF_SIZE: usize = 1500;
/// Buffers one thread keeps by default (12 MB of payload at most): windows of 1024 both ways on several
/// busy sessions. [`set_cap`] lowers it (the daemon's `--mem-budget`).
pub const POOL_CAP: usize = 8192;

static CAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(POOL_CAP);

/// Buffers each thread keeps from now on (process-wide; at most [`POOL_CAP`]).
pub fn set_cap(buffers: usize) {
    CAP.store(buffers.min(POOL_CAP), std::sync::atomic::Ordering::Relaxed);
}

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `min` bytes.
pub fn take(min: usize) -> Vec<u8> {
    let b = FREE.try_with(|f| f.borrow_mut().pop()).ok().flatten();
    match b {
        Some(mut b) => {
            b.clear();
            if b.capacity() < min {
                b.reserve_exact(min - b.capacity());
            }
            b
        }
        None => Vec::with_capacity(min.max(BUF_SIZE)),
    }
}

/// Return a buffer for reuse. Only buffers of the pool's size are kept: a smaller one is useless to the
/// next `take`, and a larger one would let whoever made it (a peer's oversized segment) pin memory in the
/// pool long after its session ended; both go back to the allocator.
pub fn give(b: Vec<u8>) {
    if b.capacity() != BUF_SIZE {
        return;
    }
    // During thread teardown the pool may be gone already: then the buffer is just freed.
    let _ = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        if f.len() < CAP.load(std::sync::atomic::Ordering::Relaxed) {
            f.push(b);
        }
    });
}

/// Buffers pooled on this thread now.
pub fn pooled() -> usize {
    FREE.try_with(|f| f.borrow().len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused() {
        let a = take(1400);
        let p = a.as_ptr();
        give(a);
        let n = pooled();
        let b = take(1400);
        assert_eq!(b.as_ptr(), p);
        assert!(b.is_empty() && b.capacity() >= 1400);
        assert_eq!(pooled(), n - 1);
        give(Vec::new()); // too small: not pooled
        assert_eq!(pooled(), n - 1);
        give(Vec::with_capacity(64 * 1024)); // too large: never pooled
        assert_eq!(pooled(), n - 1);
        let mut grown = take(BUF_SIZE);
        grown.extend_from_slice(&[0; BUF_SIZE + 1]);
        give(grown);
        assert_eq!(pooled(), n - 1);
    }
}
