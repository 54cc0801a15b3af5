//! kcptun's compression layer (spec §6): the Snappy *framing* format over the whole smux byte stream, one
//! framed stream per direction, one chunk (or more, for frames over 64 KiB) per smux frame — what
//! golang/snappy's `BufferedWriter` writes when kcptun's `CompStream` flushes after every `Write`.
//!
//! Sans-IO: [`Encoder::encode`] appends the framed bytes for one smux frame to a caller's buffer;
//! [`Decoder::feed`] takes received stream bytes in any pieces and [`Decoder::decode`] yields the
//! decompressed data chunk by chunk. Compression is `snap`'s raw block codec; CRC-32C is the hardware
//! accelerated `crc32c` crate.
//!
//! ```text
//! stream identifier: ff 06 00 00 "sNaPpY"                (once, before the first data chunk)
//! chunk:             type u8 | length u24 LE | body
//!   0x00 compressed:   masked CRC-32C (LE, of the uncompressed data) | snappy block
//!   0x01 uncompressed: masked CRC-32C | data
//!   0x80..=0xfd skippable, 0xfe padding: skipped; 0x02..=0x7f: unsupported
//! ```

/// The stream identifier chunk.
pub const STREAM_IDENTIFIER: [u8; 10] = [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];
/// Most uncompressed bytes in one chunk.
pub const MAX_BLOCK: usize = 65536;
/// golang/snappy `maxEncodedLenOfMaxBlockSize` + checksum: longer chunks are refused.
pub const MAX_CHUNK_LEN: usize = 76490 + 4;

const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_PADDING: u8 = 0xfe;
const CHUNK_STREAM_ID: u8 = 0xff;
const CHUNK_HEADER: usize = 4;
const CHECKSUM: usize = 4;

/// golang/snappy `crc`: CRC-32C, rotated and offset ("masked").
#[inline]
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Most bytes [`Encoder::encode`] appends for `n` input bytes.
pub fn max_encoded_len(n: usize) -> usize {
    let blocks = n.div_ceil(MAX_BLOCK).max(1);
    STREAM_IDENTIFIER.len()
        + blocks * (CHUNK_HEADER + CHECKSUM)
        + snap::raw::max_compress_len(MAX_BLOCK.min(n)) * blocks
}

/// One direction's framed stream writer.
pub struct Encoder {
    started: bool,
    enc: snap::raw::Encoder,
    scratch: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder that has not sent the stream identifier yet.
    pub fn new() -> Self {
        Encoder { started: false, enc: snap::raw::Encoder::new(), scratch: Vec::new() }
    }

    /// Append the framing of `data` (one smux frame) to `out`: the stream identifier the first time, then
    /// one chunk per 64 KiB block, compressed only if that saves at least 1/8 (golang/snappy's rule).
    /// Nothing at all for empty input.
    pub fn encode(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if !self.started {
            out.extend_from_slice(&STREAM_IDENTIFIER);
            self.started = true;
        }
        for block in data.chunks(MAX_BLOCK) {
            let crc = masked_crc(block);
            let need = snap::raw::max_compress_len(block.len());
            if self.scratch.len() < need {
                self.scratch.resize(need, 0);
            }
            // A block of at most 64 KiB always compresses into max_compress_len bytes.
            let n = self.enc.compress(block, &mut self.scratch).unwrap_or(usize::MAX);
            let (kind, body) = if n < block.len() - block.len() / 8 {
                (CHUNK_COMPRESSED, &self.scratch[..n])
            } else {
                (CHUNK_UNCOMPRESSED, block)
            };
            let len = (CHECKSUM + body.len()) as u32;
            out.push(kind);
            out.extend_from_slice(&len.to_le_bytes()[..3]);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(body);
        }
    }
}

/// Why a framed stream is unreadable (golang/snappy `ErrCorrupt` / `ErrUnsupported`). Fatal for the
/// stream: kcptun's smux session dies with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnappyError {
    /// The first chunk is not the `sNaPpY` stream identifier.
    #[error("snappy stream does not start with the stream identifier")]
    MissingStreamIdentifier,
    /// A stream identifier chunk with the wrong length or magic.
    #[error("bad stream identifier chunk")]
    BadStreamIdentifier,
    /// A reserved unskippable chunk type (0x02..=0x7f).
    #[error("unsupported snappy chunk type {0:#04x}")]
    UnsupportedChunk(u8),
    /// A chunk longer than the format allows.
    #[error("snappy chunk of {0} bytes exceeds the limit")]
    ChunkTooLong(usize),
    /// A data chunk without room for its 4-byte CRC.
    #[error("snappy chunk shorter than its checksum")]
    ChunkTooShort,
    /// A compressed block that does not decode.
    #[error("corrupt snappy block")]
    CorruptBlock,
    /// A block that decodes to more than 64 KiB (the format's limit).
    #[error("snappy block decodes to more than 64 KiB")]
    BlockTooLarge,
    /// The masked CRC-32C of a chunk does not match its data.
    #[error("snappy chunk checksum mismatch")]
    Checksum,
}

/// One direction's framed stream reader.
pub struct Decoder {
    started: bool,
    /// Received bytes not yet decoded (at most one partial chunk after `decode` returns `None`).
    input: Vec<u8>,
    pos: usize,
    dec: snap::raw::Decoder,
    out: Vec<u8>,
    failed: Option<SnappyError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder expecting the stream identifier first.
    pub fn new() -> Self {
        Decoder {
            started: false,
            input: Vec::new(),
            pos: 0,
            dec: snap::raw::Decoder::new(),
            // Grown to the largest chunk seen: an idle session keeps a few bytes, not a 64 KiB block.
            out: Vec::new(),
            failed: None,
        }
    }

    /// Append received stream bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.input.extend_from_slice(data);
    }

    /// Bytes fed but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next decoded chunk's data, `Ok(None)` if the next chunk is incomplete. After an error every
    /// call returns it again.
    pub fn decode(&mut self) -> Result<Option<&[u8]>, SnappyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.next_chunk() {
            Ok(Some(n)) => Ok(Some(&self.out[..n])),
            Ok(None) => {
                // Keep the buffer from growing: move the partial chunk to the front.
                if self.pos > 0 {
                    self.input.drain(..self.pos);
                    self.pos = 0;
                }
                Ok(None)
            }
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    /// Decodes into `self.out`, returns its length.
    fn next_chunk(&mut self) -> Result<Option<usize>, SnappyError> {
        loop {
            let buf = &self.input[self.pos..];
            if buf.len() < CHUNK_HEADER {
                return Ok(None);
            }
            let kind = buf[0];
            let len = u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as usize;
            if !self.started && kind != CHUNK_STREAM_ID {
                return Err(SnappyError::MissingStreamIdentifier);
            }
            // golang/snappy: any chunk longer than its buffer is unsupported, whatever its type; refuse it
            // before buffering it (a 16 MiB padding chunk would otherwise sit in memory unaccounted).
            if len > MAX_CHUNK_LEN {
                return Err(SnappyError::ChunkTooLong(len));
            }
            if kind == CHUNK_STREAM_ID && len != STREAM_IDENTIFIER.len() - CHUNK_HEADER {
                return Err(SnappyError::BadStreamIdentifier);
            }
            if (0x02..=0x7f).contains(&kind) {
                return Err(SnappyError::UnsupportedChunk(kind));
            }
            if buf.len() < CHUNK_HEADER + len {
                return Ok(None);
            }
            let body = &buf[CHUNK_HEADER..CHUNK_HEADER + len];
            self.pos += CHUNK_HEADER + len;
            match kind {
                CHUNK_STREAM_ID => {
                    if body != &STREAM_IDENTIFIER[CHUNK_HEADER..] {
                        return Err(SnappyError::BadStreamIdentifier);
                    }
                    self.started = true;
                }
                CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                    if body.len() < CHECKSUM {
                        return Err(SnappyError::ChunkTooShort);
                    }
                    let crc = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                    let payload = &body[CHECKSUM..];
                    let n = if kind == CHUNK_COMPRESSED {
                        let n = snap::raw::decompress_len(payload).map_err(|_| SnappyError::CorruptBlock)?;
                        if n > MAX_BLOCK {
                            return Err(SnappyError::BlockTooLarge);
                        }
                        if self.out.len() < n {
                            self.out.resize(n, 0);
                        }
                        self.dec.decompress(payload, &mut self.out[..n]).map_err(|_| SnappyError::CorruptBlock)?
                    } else {
                        if payload.len() > MAX_BLOCK {
                            return Err(SnappyError::BlockTooLarge);
                        }
                        if self.out.len() < payload.len() {
                            self.out.resize(payload.len(), 0);
                        }
                        self.out[..payload.len()].copy_from_slice(payload);
                        payload.len()
                    };
                    if masked_crc(&self.out[..n]) != crc {
                        return Err(SnappyError::Checksum);
                    }
                    if n > 0 {
                        return Ok(Some(n));
                    }
                }
                // Padding and skippable chunks (0x80..=0xfd).
                _ => debug_assert!(kind == CHUNK_PADDING || (0x80..=0xfd).contains(&kind)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vector_and_masked_crc() {
        // spec §6: the client's first frame (SYN v1 sid 3).
        let syn = [1u8, 0, 0, 0, 3, 0, 0, 0];
        assert_eq!(masked_crc(&syn), 0x2fac3944);
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        enc.encode(&syn, &mut out);
        assert_eq!(hex::encode(&out), "ff060000734e61507059010c00004439ac2f0100000003000000");
        let mut dec = Decoder::new();
        dec.feed(&out);
        assert_eq!(dec.decode().unwrap(), Some(&syn[..]));
        assert_eq!(dec.decode().unwrap(), None);
    }

    #[test]
    fn reader_rules() {
        let mut d = Decoder::new();
        d.feed(&[0x01, 0x05, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(d.decode(), Err(SnappyError::MissingStreamIdentifier));
        assert_eq!(d.decode(), Err(SnappyError::MissingStreamIdentifier), "sticky");
        // Padding and skippable chunks are skipped; a second stream identifier too.
        let mut d = Decoder::new();
        let mut s = STREAM_IDENTIFIER.to_vec();
        s.extend_from_slice(&[0xfe, 2, 0, 0, 0, 0, 0x80, 1, 0, 0, 9]);
        s.extend_from_slice(&STREAM_IDENTIFIER);
        let mut e = Encoder::new();
        let mut chunk = Vec::new();
        e.encode(b"abc", &mut chunk);
        s.extend_from_slice(&chunk[10..]);
        // Fed a byte at a time.
        let mut got = Vec::new();
        for b in &s {
            d.feed(std::slice::from_ref(b));
            while let Some(x) = d.decode().unwrap() {
                got.extend_from_slice(x);
            }
        }
        assert_eq!(got, b"abc");
        let mut d = Decoder::new();
        d.feed(&STREAM_IDENTIFIER);
        d.feed(&[0x02, 0, 0, 0]);
        assert_eq!(d.decode(), Err(SnappyError::UnsupportedChunk(2)));
        let mut d = Decoder::new();
        d.feed(&STREAM_IDENTIFIER);
        let mut bad = chunk[10..].to_vec();
        bad[5] ^= 1;
        d.feed(&bad);
        assert_eq!(d.decode(), Err(SnappyError::Checksum));
        let mut d = Decoder::new();
        d.feed(&[0xff, 6, 0, 0, b's', b'N', b'a', b'P', b'p', b'X']);
        assert_eq!(d.decode(), Err(SnappyError::BadStreamIdentifier));
        let mut d = Decoder::new();
        d.feed(&STREAM_IDENTIFIER);
        d.feed(&[0x00, 0xff, 0xff, 0x01]);
        assert_eq!(d.decode(), Err(SnappyError::ChunkTooLong(0x01ffff)));
        // Padding and skippable chunks too, before their body is buffered.
        let mut d = Decoder::new();
        d.feed(&STREAM_IDENTIFIER);
        d.feed(&[0xfe, 0xff, 0xff, 0xff]);
        assert_eq!(d.decode(), Err(SnappyError::ChunkTooLong(0xffffff)));
        let mut d = Decoder::new();
        d.feed(&[0xff, 0x07, 0, 0]);
        assert_eq!(d.decode(), Err(SnappyError::BadStreamIdentifier));
    }

    #[test]
    fn large_frames_split_into_64k_chunks() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut e = Encoder::new();
        let mut out = Vec::new();
        e.encode(&data, &mut out);
        assert!(out.len() <= max_encoded_len(data.len()));
        let mut d = Decoder::new();
        d.feed(&out);
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(x) = d.decode().unwrap() {
            assert!(x.len() <= MAX_BLOCK);
            got.extend_from_slice(x);
            chunks += 1;
        }
        assert_eq!(chunks, 4);
        assert_eq!(got, data);
    }
}
