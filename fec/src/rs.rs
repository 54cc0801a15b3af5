//! The Reed–Solomon codec: klauspost/reedsolomon's default code (`reedsolomon.New(ds, ps)` with no
//! options; spec §3.3), with SIMD kernels and cached decode matrices.

use crate::kernel::{self, Backend, Coefs};
use crate::matrix::Matrix;
use std::mem::size_of;

/// Most shards a code can have (GF(2^8) has 256 elements to build distinct Vandermonde rows from).
pub const MAX_TOTAL_SHARDS: usize = 256;
/// Decode matrices kept per codec (one per distinct loss pattern), most recently used first.
const DECODE_CACHE: usize = 32;
/// Bytes of decode coefficients the cache may hold per codec, beyond its newest entry (which is kept
/// whatever its size: it is the one in use). An entry holds `missing × data` coefficients of 64 bytes: about
/// 2 KiB for 10+3, 131 KiB for 70+30 with 30 losses, 1 MiB for 128+128 with 128 losses; so 32 of the largest
/// would be 32 MiB per session. 256 KiB keeps all 32 entries of the small codes kcptun users run (10+3,
/// 20+5: one entry per loss pattern, mostly single losses) and a few of the large ones, whose loss patterns
/// rarely repeat anyway.
const DECODE_CACHE_BYTES: usize = 256 * 1024;

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
    /// [`ReedSolomon::with_backend`] was asked for a kernel whose instruction-set extensions this CPU lacks
    /// ([`Backend::is_available`]); running it would be undefined behaviour (SIGILL at best).
    #[error("the {backend} kernel needs CPU features this CPU lacks")]
    UnsupportedBackend {
        /// The backend asked for.
        backend: Backend,
    },
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

impl DecodeEntry {
    /// Heap bytes the entry holds (what [`DECODE_CACHE_BYTES`] counts).
    fn bytes(&self) -> usize {
        self.coefs.bytes() + (self.inputs.len() + self.missing.len()) * size_of::<usize>()
    }
}

/// A Reed–Solomon code with `data` data shards and `parity` parity shards.
pub struct ReedSolomon {
    data: usize,
    parity: usize,
    matrix: Matrix,
    parity_coefs: Coefs,
    backend: Backend,
    /// Decode matrices by loss pattern, most recently used first: at most [`DECODE_CACHE`] entries and,
    /// past the first, [`DECODE_CACHE_BYTES`] bytes (least recently used evicted first).
    cache: Vec<DecodeEntry>,
    /// `bytes()` of every entry in `cache`.
    cache_bytes: usize,
}

impl ReedSolomon {
    /// The klauspost default code for `data` + `parity` shards, on the fastest kernel this CPU supports
    /// ([`Backend::best`]). Needs `data >= 1`, `parity >= 1`, `data + parity <= 256`.
    pub fn new(data: usize, parity: usize) -> Result<Self, RsError> {
        Self::with_backend(data, parity, Backend::best())
    }

    /// With an explicit kernel (tests and benchmarks compare them). Fails with
    /// [`RsError::UnsupportedBackend`] if this CPU cannot run it ([`Backend::is_available`]): the codec is
    /// only ever built on a kernel the CPU has.
    pub fn with_backend(data: usize, parity: usize, backend: Backend) -> Result<Self, RsError> {
        if data == 0 || parity == 0 || data + parity > MAX_TOTAL_SHARDS {
            return Err(RsError::InvalidShardCounts { data, parity });
        }
        if !backend.is_available() {
            return Err(RsError::UnsupportedBackend { backend });
        }
        let matrix = Matrix::coding(data, data + parity);
        let rows: Vec<&[u8]> = (data..data + parity).map(|r| matrix.row(r)).collect();
        let parity_coefs = Coefs::new(&rows);
        Ok(ReedSolomon { data, parity, matrix, parity_coefs, backend, cache: Vec::new(), cache_bytes: 0 })
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
                // A miss costs one `data × data` inversion; a group is decoded at most once (the decoder
                // closes it at `data` shards), so at most one inversion per group.
                let entry = self.decode_entry(key);
                self.cache_bytes += entry.bytes();
                self.cache.insert(0, entry);
                while self.cache.len() > DECODE_CACHE
                    || (self.cache.len() > 1 && self.cache_bytes > DECODE_CACHE_BYTES + self.cache[0].bytes())
                {
                    let old = self.cache.pop().expect("more than one entry");
                    self.cache_bytes -= old.bytes();
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards of a `data + parity` code (data filled with a pattern, parity computed).
    fn shards(rs: &ReedSolomon, len: usize) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> =
            (0..rs.total_shards()).map(|i| (0..len).map(|j| (i * 7 + j) as u8).collect()).collect();
        let (d, p) = v.split_at_mut(rs.data_shards());
        let d: Vec<&[u8]> = d.iter().map(|s| &s[..]).collect();
        let mut p: Vec<&mut [u8]> = p.iter_mut().map(|s| &mut s[..]).collect();
        rs.encode(&d, &mut p).unwrap();
        v
    }

    /// Lose `lost` and rebuild; the rebuilt data must equal the original.
    fn rebuild(rs: &mut ReedSolomon, orig: &[Vec<u8>], lost: &[usize]) {
        let mut v = orig.to_vec();
        let mut present = vec![true; v.len()];
        for &i in lost {
            present[i] = false;
            v[i].fill(0);
        }
        let mut sh: Vec<&mut [u8]> = v.iter_mut().map(|s| &mut s[..]).collect();
        rs.reconstruct_data(&mut sh, &present).unwrap();
        assert_eq!(&v[..rs.data_shards()], &orig[..rs.data_shards()], "lost {lost:?}");
    }

    #[test]
    fn with_backend_never_builds_a_kernel_the_cpu_lacks() {
        for &b in Backend::ALL {
            match ReedSolomon::with_backend(10, 3, b) {
                Ok(rs) => assert!(b.is_available() && rs.backend() == b, "{b}"),
                Err(e) => assert!(!b.is_available() && e == RsError::UnsupportedBackend { backend: b }, "{b}: {e}"),
            }
        }
        // On a CPU without any SIMD extension only the scalar kernel can be built.
        kernel::tests::without_simd(|| {
            assert_eq!(Backend::available(), [Backend::Scalar]);
            for &b in Backend::ALL {
                let r = ReedSolomon::with_backend(10, 3, b);
                if b == Backend::Scalar {
                    assert_eq!(r.unwrap().backend(), Backend::Scalar);
                } else {
                    assert_eq!(r.unwrap_err(), RsError::UnsupportedBackend { backend: b });
                }
            }
        });
    }

    /// The decode-matrix cache stays within its entry count and byte budget whatever loss patterns come,
    /// and a pattern evicted is rebuilt correctly.
    #[test]
    fn decode_cache_is_bounded_in_entries_and_bytes() {
        // Small code: every single and double loss of 10+3 (55 patterns) — the entry count binds.
        let mut rs = ReedSolomon::new(10, 3).unwrap();
        let orig = shards(&rs, 64);
        for a in 0..10 {
            for b in a..10 {
                rebuild(&mut rs, &orig, &[a, b]);
                assert!(rs.cache.len() <= DECODE_CACHE);
            }
        }
        assert_eq!(rs.cache.len(), DECODE_CACHE);
        // Large code: 64 losses of 64+64 need 64 × 64 coefficients (256 KiB) per pattern — the byte budget
        // binds long before 32 entries.
        let mut rs = ReedSolomon::new(64, 64).unwrap();
        let orig = shards(&rs, 64);
        for shift in 0..8 {
            let lost: Vec<usize> = (0..64).filter(|i| i % 8 != shift).collect();
            rebuild(&mut rs, &orig, &lost);
            let total: usize = rs.cache.iter().map(DecodeEntry::bytes).sum();
            assert_eq!(total, rs.cache_bytes);
            assert!(rs.cache_bytes <= DECODE_CACHE_BYTES + rs.cache[0].bytes(), "{} bytes", rs.cache_bytes);
        }
        assert!(rs.cache.len() < 8, "{} entries of 56 losses each", rs.cache.len());
        // The first pattern was evicted; it is rebuilt (and correct) again.
        let lost: Vec<usize> = (0..64).filter(|i| i % 8 != 0).collect();
        rebuild(&mut rs, &orig, &lost);
    }
}
