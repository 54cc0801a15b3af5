//! kcp-go's FEC encoder (spec §3.2–§3.4), sans-IO: the caller owns the packet buffers and passes time in.
//!
//! Each outgoing datagram becomes one data shard, framed in place. Its shard bytes are folded into the
//! group's parity right away ([`ReedSolomon::encode_shard`]), so no data shard is ever copied; when the
//! `ds`-th data shard of a group has been framed, the `ps` parity packets are ready to be written into
//! buffers the caller supplies with [`Encoder::poll_parity`].

use crate::rs::{ReedSolomon, RsError};
use crate::wire::{self, HEADER_SIZE, HEADER_SIZE_PLUS2, MAX_PACKET, MAX_SHARD, TYPE_DATA, TYPE_PARITY};
use kcpd_time::Instant;

/// kcp-go ≥ v5.6.10 `maxFECEncodeLatency` (ms).
pub const MAX_FEC_ENCODE_LATENCY: u32 = 500;

/// When a complete group gets its parity (spec §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParityRule {
    /// DEB kcp-go 5.6.1: every complete group.
    Always,
    /// NEW kcp-go ≥ 5.6.21: only if the group's last data shard followed the previous data shard by less
    /// than 500 ms; otherwise parity is skipped and the seqids it would have used are left unused. Sparse
    /// traffic gains nothing from late parity (KCP has retransmitted by then), so this saves bandwidth.
    SkipSparse,
}

/// Encoder-side errors (programming errors of the caller: the datapath sizes its buffers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The Reed–Solomon codec refused; in practice only from [`Encoder::new`], for an invalid (ds, ps)
    /// ([`RsError::InvalidShardCounts`]).
    #[error(transparent)]
    Codec(#[from] RsError),
    /// [`Encoder::encode`] got a packet shorter than its 8-byte header space or longer than
    /// [`MAX_PACKET`]; nothing was framed and no seqid was used.
    #[error("data packet of {len} bytes: need 8 bytes of header space and at most 1500 bytes")]
    PacketSize {
        /// Length of the packet given (header space + KCP bytes), in bytes.
        len: usize,
    },
    /// [`Encoder::poll_parity`] got a buffer that cannot hold the parity packet; it stays pending.
    #[error("output buffer of {len} bytes is shorter than the {needed}-byte parity packet")]
    OutputTooShort {
        /// Length of the buffer given, in bytes.
        len: usize,
        /// [`Encoder::parity_len`]: 6-byte header + the group's longest shard.
        needed: usize,
    },
}

/// Encoder counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EncoderStats {
    /// Data packets framed by [`Encoder::encode`].
    pub data_shards: u64,
    /// Parity packets written by [`Encoder::poll_parity`] (parity discarded unpolled is not counted).
    pub parity_shards: u64,
    /// Groups whose parity the [`ParityRule::SkipSparse`] rule dropped.
    pub parity_skipped_groups: u64,
}

/// FEC encoder for one session.
pub struct Encoder {
    rs: ReedSolomon,
    rule: ParityRule,
    /// `floor(0xffffffff / (ds+ps)) * (ds+ps)`: seqids run modulo this.
    paws: u32,
    next: u32,
    /// Data shards framed in the current group.
    in_group: usize,
    /// Longest shard of the current group.
    max_shard: usize,
    /// `ps` parity accumulators of `stride` bytes each; every byte past `max_shard` is zero.
    parity: Vec<u8>,
    /// Room per parity accumulator: the smallest of [`STRIDE_TIERS`] holding the group's longest shard, so a
    /// session of small datagrams keeps a few hundred bytes here instead of `ps * 1492`.
    stride: usize,
    /// Parity packets of the completed group still to hand out, and the seqid of the first of them.
    pending: usize,
    pending_seqid: u32,
    last_data: Option<Instant>,
    stats: EncoderStats,
}

/// Parity accumulator sizes (the last holds any shard).
const STRIDE_TIERS: [usize; 3] = [128, 512, MAX_SHARD];

fn stride_for(len: usize) -> usize {
    STRIDE_TIERS.into_iter().find(|&t| t >= len).unwrap_or(MAX_SHARD)
}

/// `floor(0xffffffff / n) * n` (spec §3.2).
pub const fn paws(total_shards: usize) -> u32 {
    (u32::MAX / total_shards as u32) * total_shards as u32
}

impl Encoder {
    /// An encoder for kcptun `--datashard` `data_shards` and `--parityshard` `parity_shards`, seqids from 0.
    /// Fails with [`EncodeError::Codec`] unless `ds >= 1`, `ps >= 1`, `ds + ps <= 256` (with either at
    /// 0, kcp-go sends no FEC header at all: the caller then has no encoder).
    pub fn new(data_shards: usize, parity_shards: usize, rule: ParityRule) -> Result<Self, EncodeError> {
        let rs = ReedSolomon::new(data_shards, parity_shards)?;
        Ok(Encoder {
            paws: paws(rs.total_shards()),
            rs,
            rule,
            next: 0,
            in_group: 0,
            max_shard: 0,
            parity: vec![0; parity_shards * STRIDE_TIERS[0]],
            stride: STRIDE_TIERS[0],
            pending: 0,
            pending_seqid: 0,
            last_data: None,
            stats: EncoderStats::default(),
        })
    }

    /// Start from another seqid (a multiple of `ds+ps` below `paws`), for tests of the wrap-around.
    pub fn with_next_seqid(mut self, seqid: u32) -> Self {
        let n = self.rs.total_shards() as u32;
        assert!(seqid < self.paws && seqid.is_multiple_of(n), "seqid must start a group");
        self.next = seqid;
        self
    }

    /// `ds`: data packets per FEC group.
    pub fn data_shards(&self) -> usize {
        self.rs.data_shards()
    }

    /// `ps`: parity packets per FEC group (also the seqids each group reserves for them, sent or skipped).
    pub fn parity_shards(&self) -> usize {
        self.rs.parity_shards()
    }

    /// Bytes the caller must reserve in front of the KCP bytes of each data packet.
    pub const fn header_len(&self) -> usize {
        HEADER_SIZE_PLUS2
    }

    /// Counters since construction (monotonic, never reset).
    pub fn stats(&self) -> &EncoderStats {
        &self.stats
    }

    /// The seqid the next data shard gets.
    pub fn next_seqid(&self) -> u32 {
        self.next
    }

    fn advance(&mut self) -> u32 {
        let s = self.next;
        self.next = (self.next + 1) % self.paws;
        s
    }

    /// Frame one data packet in place: `pkt[..8]` is header space, `pkt[8..]` the KCP bytes. Returns how
    /// many parity packets are now ready for [`poll_parity`](Self::poll_parity) (0 or `ps`).
    ///
    /// Any parity of the previous group not yet polled is discarded: parity follows its group at once.
    pub fn encode(&mut self, now: Instant, pkt: &mut [u8]) -> Result<usize, EncodeError> {
        if pkt.len() < HEADER_SIZE_PLUS2 || pkt.len() > MAX_PACKET {
            return Err(EncodeError::PacketSize { len: pkt.len() });
        }
        if self.pending > 0 {
            self.pending = 0;
            self.clear_parity();
        }
        let index = self.in_group;
        let seqid = self.advance();
        wire::write_header(pkt, seqid, TYPE_DATA);
        wire::write_size(pkt, (pkt.len() - HEADER_SIZE) as u16);
        let ps = self.rs.parity_shards();
        self.fit(pkt.len() - HEADER_SIZE);
        let shard = &pkt[HEADER_SIZE..];
        {
            let mut outs: [&mut [u8]; crate::rs::MAX_TOTAL_SHARDS] = core::array::from_fn(|_| &mut [][..]);
            for (o, chunk) in outs.iter_mut().zip(self.parity.chunks_exact_mut(self.stride)) {
                *o = chunk;
            }
            self.rs.encode_shard(index, shard, &mut outs[..ps])?;
        }
        self.max_shard = self.max_shard.max(shard.len());
        self.stats.data_shards += 1;
        let gap = self.last_data.map(|t| (now - t).as_millis());
        self.last_data = Some(now);
        self.in_group += 1;
        if self.in_group < self.rs.data_shards() {
            return Ok(0);
        }
        // The group is complete.
        self.in_group = 0;
        let emit = match self.rule {
            ParityRule::Always => true,
            // kcp-go: `now - tsLatestPacket < rto`; the very first packet has no predecessor.
            ParityRule::SkipSparse => gap.is_some_and(|g| g < u64::from(MAX_FEC_ENCODE_LATENCY)),
        };
        if emit {
            self.pending = ps;
            self.pending_seqid = self.next;
        } else {
            self.stats.parity_skipped_groups += 1;
            self.clear_parity();
        }
        // The parity seqids are consumed either way, keeping groups aligned.
        for _ in 0..ps {
            self.advance();
        }
        Ok(self.pending)
    }

    /// Parity packets of the completed group not yet polled.
    pub fn pending_parity(&self) -> usize {
        self.pending
    }

    /// Length of each pending parity packet: 6 + the group's longest shard.
    pub fn parity_len(&self) -> usize {
        HEADER_SIZE + self.max_shard
    }

    /// Write the next parity packet of the completed group into `out`; returns its length, or `None` when
    /// none is pending.
    pub fn poll_parity(&mut self, out: &mut [u8]) -> Result<Option<usize>, EncodeError> {
        if self.pending == 0 {
            return Ok(None);
        }
        let len = self.parity_len();
        if out.len() < len {
            return Err(EncodeError::OutputTooShort { len: out.len(), needed: len });
        }
        let j = self.rs.parity_shards() - self.pending;
        wire::write_header(out, self.pending_seqid.wrapping_add(j as u32), TYPE_PARITY);
        let st = self.stride;
        out[HEADER_SIZE..len].copy_from_slice(&self.parity[j * st..j * st + self.max_shard]);
        self.pending -= 1;
        self.stats.parity_shards += 1;
        if self.pending == 0 {
            self.clear_parity();
        }
        Ok(Some(len))
    }

    fn clear_parity(&mut self) {
        for chunk in self.parity.chunks_exact_mut(self.stride) {
            chunk[..self.max_shard].fill(0);
        }
        // The next group starts in the tier this one needed (no re-layout in a steady flow); the buffer
        // is resized in place, so its allocation only ever grows.
        let ps = self.rs.parity_shards();
        let want = stride_for(self.max_shard.max(1));
        if want < self.stride {
            // Zero parity stays zero: compact the (all-zero) accumulators to the smaller stride.
            self.stride = want;
            self.parity.truncate(ps * want);
            self.parity.fill(0);
        }
        self.max_shard = 0;
    }

    /// Room for a shard of `len` bytes in every accumulator: move to a larger tier, each accumulator to
    /// its new place (from the last, so none is overwritten before it moved), the new room zeroed.
    fn fit(&mut self, len: usize) {
        if len <= self.stride {
            return;
        }
        let (old, new) = (self.stride, stride_for(len));
        let ps = self.rs.parity_shards();
        self.parity.resize(ps * new, 0);
        for j in (0..ps).rev() {
            self.parity.copy_within(j * old..j * old + old, j * new);
            self.parity[j * new + old..j * new + new].fill(0);
        }
        self.stride = new;
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("ds", &self.rs.data_shards())
            .field("ps", &self.rs.parity_shards())
            .field("rule", &self.rule)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}
