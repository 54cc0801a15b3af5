//! The Reed–Solomon codec: klauspost/reedsolomon's default code (`reedsolomon.New(ds, ps)` with no
//! options; spec §3.3), with SIMD kernels and cached decode matrices.

use crate::kernel::{self, Backend, Coefs};
use crate::matrix::Matrix;

/// Most shards a code can have (GF(2^8) has 256 elements to build distinct Vandermonde rows from).
pub const MAX_TOTAL_SHARDS: usize = 256;
/// Decode matrices kept per codec (one per distinct loss pattern).
const DECODE_CACHE: usize = 32;

/// Codec errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RsError {
    /// [`ReedSolomon::new`] was asked for a code it cannot build (zero data or parity shards, or more than
    /// [`MAX_TOTAL_SHARDS`] in all).
    #[error("invalid shard counts {data}+{parity}: need data >= 1, parity >= 1, data + parity <= 256")]
    InvalidShardCounts {
        /// Data shards asked for (kcptun `--datashard`).
        data: usize,
        /// Parity shards asked for (kcptun `--parityshard`).
        parity: usize,
    },
    /// A shard list (or shard index) does not match the code's shard counts.
    #[error("wrong number of shards: expected {expected}, got {got}")]
    ShardCount {
        /// Shards the code needs in that list (data, parity or total).
        expected: usize,
        /// Shards given; for an out-of-range [`ReedSolomon::encode_shard`] index, that index + 1.
        got: usize,
    },
    /// Shards that must be the same length are not (for `encode_shard`: a parity shard is shorter than
    /// the data shard).
    #[error("shards differ in size")]
    ShardSize,
    /// Fewer than `data` shards are present, so the missing data cannot be rebuilt.
    #[error("too few shards to reconstruct: {present} present, {needed} needed")]
    TooFewShards {
        /// Shards marked present (data and parity).
        present: usize,
        /// Shards needed: the code's data shard count.
        needed: usize,
    },
}

/// Present-shard bitmap (up to 256 shards).
type Mask = [u64; 4];

struct DecodeEntry {
    /// The `data` shard indices used as inputs (the first `data` present ones).
    used: Mask,
    inputs: Vec<usize>,
    /// Missing data shard indices, and the rows of the inverted sub-matrix that rebuild them.
    missing: Vec<usize>,
    coefs: Coefs,
}

/// A Reed–Solomon code with `data` data shards and `parity` parity shards.
pub struct ReedSolomon {
    data: usize,
    parity: usize,
    matrix: Matrix,
    parity_coefs: Coefs,
    backend: Backend,
    cache: Vec<DecodeEntry>,
}

impl ReedSolomon {
    /// The klauspost default code for `data` + `parity` shards, on the fastest kernel this CPU supports
    /// ([`Backend::best`]). Needs `data >= 1`, `parity >= 1`, `data + parity <= 256`.
    pub fn new(data: usize, parity: usize) -> Result<Self, RsError> {
        Self::with_backend(data, parity, Backend::best())
    }

    /// With an explicit kernel (tests and benchmarks compare them).
    pub fn with_backend(data: usize, parity: usize, backend: Backend) -> Result<Self, RsError> {
        if data == 0 || parity == 0 || data + parity > MAX_TOTAL_SHARDS {
            return Err(RsError::InvalidShardCounts { data, parity });
        }
        let matrix = Matrix::coding(data, data + parity);
        let rows: Vec<&[u8]> = (data..data + parity).map(|r| matrix.row(r)).collect();
        let parity_coefs = Coefs::new(&rows);
        Ok(ReedSolomon { data, parity, matrix, parity_coefs, backend, cache: Vec::new() })
    }

    /// Data shards per group (kcptun `--datashard`, kcp-go `dataShards`): shard indices `0..data`.
    pub fn data_shards(&self) -> usize {
        self.data
    }

    /// Parity shards per group (kcptun `--parityshard`): shard indices `data..data + parity`; this many
    /// losses per group can be repaired.
    pub fn parity_shards(&self) -> usize {
        self.parity
    }

    /// Data plus parity shards: the group size, and the length of the lists [`reconstruct_data`] takes.
    ///
    /// [`reconstruct_data`]: Self::reconstruct_data
    pub fn total_shards(&self) -> usize {
        self.data + self.parity
    }

    /// The SIMD kernel the codec runs on (chosen at construction; results are identical on every backend).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Row `r` of the coding matrix (`r < data` is the identity; `r >= data` are the parity rows).
    pub fn matrix_row(&self, r: usize) -> &[u8] {
        self.matrix.row(r)
    }

    /// Compute all parity shards from the data shards (all the same length).
    pub fn encode(&self, data: &[&[u8]], parity: &mut [&mut [u8]]) -> Result<(), RsError> {
        if data.len() != self.data {
            return Err(RsError::ShardCount { expected: self.data, got: data.len() });
        }
        if parity.len() != self.parity {
            return Err(RsError::ShardCount { expected: self.parity, got: parity.len() });
        }
        let len = data[0].len();
        if data.iter().any(|d| d.len() != len) || parity.iter().any(|p| p.len() != len) {
            return Err(RsError::ShardSize);
        }
        kernel::dot(self.backend, &self.parity_coefs, data, parity);
        Ok(())
    }

    /// Fold data shard `index` into the parity: `parity[j][..shard.len()] ^= P[j][index] · shard`.
    /// Starting from zeroed parity and folding every data shard (each zero-padded implicitly to the
    /// parity length) gives exactly [`encode`](Self::encode)'s result; the FEC encoder does this as each
    /// packet leaves, so data shards are never copied.
    pub fn encode_shard(&self, index: usize, shard: &[u8], parity: &mut [&mut [u8]]) -> Result<(), RsError> {
        if index >= self.data {
            return Err(RsError::ShardCount { expected: self.data, got: index + 1 });
        }
        if parity.len() != self.parity {
            return Err(RsError::ShardCount { expected: self.parity, got: parity.len() });
        }
        if parity.iter().any(|p| p.len() < shard.len()) {
            return Err(RsError::ShardSize);
        }
        kernel::mul_add(self.backend, &self.parity_coefs, index, shard, parity);
        Ok(())
    }

    /// Rebuild the missing data shards in place. `shards` holds all `data + parity` shards, equal in
    /// length; `present[i]` says which hold received bytes. Missing parity shards are left alone. Returns
    /// how many data shards were rebuilt.
    pub fn reconstruct_data(&mut self, shards: &mut [&mut [u8]], present: &[bool]) -> Result<usize, RsError> {
        let total = self.total_shards();
        if shards.len() != total || present.len() != total {
            return Err(RsError::ShardCount { expected: total, got: shards.len().min(present.len()) });
        }
        let len = shards[0].len();
        if shards.iter().any(|s| s.len() != len) {
            return Err(RsError::ShardSize);
        }
        let n_present = present.iter().filter(|p| **p).count();
        if present[..self.data].iter().all(|p| *p) {
            return Ok(0);
        }
        if n_present < self.data {
            return Err(RsError::TooFewShards { present: n_present, needed: self.data });
        }
        // klauspost uses the first `data` present shards; any choice gives the same bytes (MDS code).
        let mut key: Mask = [0; 4];
        for (i, _) in present.iter().enumerate().filter(|(_, p)| **p).take(self.data) {
            key[i / 64] |= 1 << (i % 64);
        }
        let pos = match self.cache.iter().position(|e| e.used == key) {
            Some(p) => p,
            None => {
                let entry = self.decode_entry(key);
                if self.cache.len() == DECODE_CACHE {
                    self.cache.pop();
                }
                self.cache.insert(0, entry);
                0
            }
        };
        // Move to front: hot loss patterns stay cached.
        if pos != 0 {
            let e = self.cache.remove(pos);
            self.cache.insert(0, e);
        }
        let entry = &self.cache[0];
        // Split the shard list into inputs (read) and missing data shards (written), on the stack: no
        // allocation on the recovery path.
        let mut inputs: [&[u8]; MAX_TOTAL_SHARDS] = [&[]; MAX_TOTAL_SHARDS];
        let mut outputs: [&mut [u8]; MAX_TOTAL_SHARDS] = core::array::from_fn(|_| &mut [][..]);
        let (mut ii, mut mi) = (0, 0);
        for (i, s) in shards.iter_mut().enumerate() {
            if ii < entry.inputs.len() && entry.inputs[ii] == i {
                inputs[ii] = &s[..];
                ii += 1;
            } else if mi < entry.missing.len() && entry.missing[mi] == i {
                outputs[mi] = &mut s[..];
                mi += 1;
            }
        }
        let (inputs, outputs) = (&inputs[..ii], &mut outputs[..mi]);
        kernel::dot(self.backend, &entry.coefs, inputs, outputs);
        Ok(entry.missing.len())
    }

    fn decode_entry(&self, key: Mask) -> DecodeEntry {
        let used = |i: usize| key[i / 64] & (1 << (i % 64)) != 0;
        let inputs: Vec<usize> = (0..self.total_shards()).filter(|&i| used(i)).collect();
        let missing: Vec<usize> = (0..self.data).filter(|&i| !used(i)).collect();
        let inv = self
            .matrix
            .sub_rows(&inputs)
            .invert()
            .expect("any `data` rows of a Vandermonde-derived coding matrix are independent");
        let rows: Vec<&[u8]> = missing.iter().map(|&i| inv.row(i)).collect();
        DecodeEntry { used: key, inputs, missing, coefs: Coefs::new(&rows) }
    }
}

impl std::fmt::Debug for ReedSolomon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReedSolomon")
            .field("data", &self.data)
            .field("parity", &self.parity)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}
