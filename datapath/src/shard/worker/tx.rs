//! Transmit batching: conversations write their datagrams back to back into one arena; runs of equal
//! length from one conversation become one UDP GSO send, and every socket's sends go out in one batch.

use kcpd_time::Instant;
use std::net::{IpAddr, SocketAddr};

use super::Worker;
use crate::io::Transmit;
use crate::proto::endpoint::ConnHandle;

/// Transmit arena (datagrams packed back to back).
const TX_ARENA: usize = 64 * 1500;
const TX_MAX: usize = 64;

struct Pending {
    udp: usize,
    dst: SocketAddr,
    src_ip: Option<IpAddr>,
    off: usize,
    len: usize,
    segs: usize,
}

/// Datagrams written but not yet sent.
pub(super) struct TxBatch {
    arena: Vec<u8>,
    used: usize,
    pending: Vec<Pending>,
    lens: Vec<usize>,
}

impl TxBatch {
    pub(super) fn new() -> Self {
        TxBatch { arena: vec![0u8; TX_ARENA], used: 0, pending: Vec::with_capacity(TX_MAX), lens: vec![0; TX_MAX] }
    }
}

impl Worker {
    /// Send what conversation `h` has ready (within `--ratelimit`, which the conversation applies).
    pub(super) fn transmit(&mut self, h: ConnHandle, now: Instant) {
        loop {
            let (Some(conn), Some(io)) =
                (self.ep.get_mut(h), self.conns.get(h.index).and_then(Option::as_ref).filter(|c| c.handle == h))
            else {
                return;
            };
            let tx = &mut self.tx;
            let room = TX_MAX - tx.pending.len().min(TX_MAX);
            if room == 0 || tx.arena.len() - tx.used < conn.max_datagram() {
                self.flush_tx();
                continue;
            }
            let off = tx.used;
            let n = conn.poll_transmit(now, &mut self.rng, &mut tx.arena[off..], &mut tx.lens[..room]);
            if n == 0 {
                return;
            }
            let (udp, dst, src_ip) = (io.udp, io.peer, io.local_ip);
            let gso = self.udps.get(udp).map_or(1, |u| u.io.max_gso_segments());
            let mut o = off;
            for &len in &tx.lens[..n] {
                // Extend the previous run when it is this conversation's and the same size (UDP GSO).
                match tx.pending.last_mut() {
                    Some(last)
                        if last.udp == udp
                            && last.dst == dst
                            && last.len == len
                            && last.segs < gso
                            && last.off + last.len * last.segs == o =>
                    {
                        last.segs += 1;
                    }
                    _ => tx.pending.push(Pending { udp, dst, src_ip, off: o, len, segs: 1 }),
                }
                o += len;
            }
            tx.used = o;
            if n < room {
                return;
            }
        }
    }

    pub(super) fn flush_tx(&mut self) {
        let tx = &mut self.tx;
        let mut i = 0;
        while i < tx.pending.len() {
            let udp = tx.pending[i].udp;
            let mut j = i;
            while j < tx.pending.len() && tx.pending[j].udp == udp {
                j += 1;
            }
            let mut msgs: [Transmit<'_>; TX_MAX] =
                core::array::from_fn(|_| Transmit::new(SocketAddr::from(([0, 0, 0, 0], 0)), &[]));
            for (m, p) in msgs.iter_mut().zip(&tx.pending[i..j]) {
                *m = Transmit {
                    dst: p.dst,
                    payload: &tx.arena[p.off..p.off + p.len * p.segs],
                    src_ip: p.src_ip,
                    segment_size: (p.segs > 1).then_some(p.len),
                };
            }
            let mut sent = 0;
            if let Some(u) = self.udps.get_mut(udp) {
                while sent < j - i {
                    match u.io.send_batch(&msgs[sent..j - i]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => sent += n,
                    }
                }
            }
            // What the kernel would not take is lost, as on a full link; KCP retransmits it.
            for p in &tx.pending[i + sent..j] {
                self.stats.tx_dropped += p.segs as u64;
            }
            i = j;
        }
        tx.pending.clear();
        tx.used = 0;
    }
}
