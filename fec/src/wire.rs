//! kcp-go's FEC packet header (spec §3.1) as a typed view, and the FEC-vs-raw-KCP demux (spec §1.6).
//!
//! ```text
//! off len field
//! 0   4   seqid u32 LE
//! 4   2   type  u16 LE: 0xf1 data, 0xf2 parity, 0xf3 OOB (NEW, never sent by kcptun)
//! 6   2   size  u16 LE = 2 + KCP bytes (data; in parity these bytes are parity)
//! 8   ..  KCP bytes (data) / parity
//! ```

/// seqid + type.
pub const HEADER_SIZE: usize = 6;
/// seqid + type + size: where a data shard's KCP bytes start.
pub const HEADER_SIZE_PLUS2: usize = 8;
/// `type` of a data shard: `size` field + KCP bytes, delivered at once and kept for recovery (kcp-go `typeData`).
pub const TYPE_DATA: u16 = 0xf1;
/// `type` of a parity shard: RS parity over the group's data shards, never delivered itself (kcp-go `typeParity`).
pub const TYPE_PARITY: u16 = 0xf2;
/// `type` of a NEW (kcp-go ≥ 5.6.60) out-of-band packet: seqid 0xffffffff, outside FEC; see [`parse_oob`].
pub const TYPE_OOB: u16 = 0xf3;
/// kcp-go `mtuLimit`: no datagram (hence no FEC packet) is longer; receivers read into 1500-byte buffers.
pub const MAX_PACKET: usize = 1500;
/// Longest RS shard (`size` field + KCP bytes).
pub const MAX_SHARD: usize = MAX_PACKET - HEADER_SIZE;

mod field {
    use std::ops::Range;
    pub const SEQID: Range<usize> = 0..4;
    pub const TYPE: Range<usize> = 4..6;
    pub const SIZE: Range<usize> = 6..8;
}

/// What the receive path does with a decrypted datagram (spec §1.6: bytes 4..6 decide).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// [`TYPE_DATA`]: deliver the KCP bytes and feed the shard to the FEC decoder.
    Data,
    /// [`TYPE_PARITY`]: feed to the FEC decoder only.
    Parity,
    /// [`TYPE_OOB`]: counted (`OOBPackets`) and dropped by kcpd.
    Oob,
    /// Anything else is raw KCP (a KCP segment's bytes 4..6 are `cmd | frg`, with cmd in 81..84, which
    /// can never read as 0x00f1..0x00f3).
    Kcp,
}

/// Classify a decrypted datagram; never fails (too short for a type field ⇒ raw KCP, which KCP then
/// rejects itself).
#[inline]
pub fn classify(pkt: &[u8]) -> Class {
    match pkt.get(field::TYPE).map(|t| u16::from_le_bytes([t[0], t[1]])) {
        Some(TYPE_DATA) => Class::Data,
        Some(TYPE_PARITY) => Class::Parity,
        Some(TYPE_OOB) => Class::Oob,
        _ => Class::Kcp,
    }
}

/// A malformed FEC packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the 8-byte seqid + type + size header.
    #[error("FEC packet of {len} bytes is shorter than its 8-byte header")]
    Truncated {
        /// Length of the packet, in bytes.
        len: usize,
    },
    /// Longer than [`MAX_PACKET`] (1500 bytes), which no kcp-go sender produces.
    #[error("FEC packet of {len} bytes exceeds the 1500-byte limit")]
    TooLong {
        /// Length of the packet, in bytes.
        len: usize,
    },
    /// The u16 at bytes 4..6 (carried here) is none of `0xf1`, `0xf2`, `0xf3`: not an FEC packet.
    #[error("type field {0:#06x} is not an FEC type")]
    NotFec(u16),
}

/// A checked view of an FEC packet (data, parity or OOB).
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Length-check once: at least the 8-byte header, at most [`MAX_PACKET`], and an FEC type.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_SIZE_PLUS2 {
            return Err(WireError::Truncated { len: b.len() });
        }
        if b.len() > MAX_PACKET {
            return Err(WireError::TooLong { len: b.len() });
        }
        let p = Packet { buf };
        match p.type_field() {
            TYPE_DATA | TYPE_PARITY | TYPE_OOB => Ok(p),
            t => Err(WireError::NotFec(t)),
        }
    }

    /// The shard sequence number (bytes 0..4): `seqid / (ds + ps)` names the FEC group, `seqid % (ds + ps)`
    /// the shard's index in it (data first, then parity); 0xffffffff on OOB packets.
    pub fn seqid(&self) -> u32 {
        let b = &self.buf.as_ref()[field::SEQID];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The raw `type` field (bytes 4..6): [`TYPE_DATA`], [`TYPE_PARITY`] or [`TYPE_OOB`] once checked.
    pub fn type_field(&self) -> u16 {
        let b = &self.buf.as_ref()[field::TYPE];
        u16::from_le_bytes([b[0], b[1]])
    }

    /// [`classify`] of this packet; never [`Class::Kcp`] for a checked view.
    pub fn class(&self) -> Class {
        classify(self.buf.as_ref())
    }

    /// The `size` field (meaningful for data and OOB packets).
    pub fn size(&self) -> u16 {
        let b = &self.buf.as_ref()[field::SIZE];
        u16::from_le_bytes([b[0], b[1]])
    }

    /// The RS shard: everything after seqid and type (`size` field + payload, or parity bytes).
    pub fn shard(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_SIZE..]
    }

    /// Everything after the 8-byte header: a data packet's KCP bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_SIZE_PLUS2..]
    }

    /// Give back the underlying buffer, whole (header included).
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// Write the 6-byte seqid+type header.
#[inline]
pub fn write_header(buf: &mut [u8], seqid: u32, kind: u16) {
    buf[field::SEQID].copy_from_slice(&seqid.to_le_bytes());
    buf[field::TYPE].copy_from_slice(&kind.to_le_bytes());
}

/// Write the `size` field.
#[inline]
pub fn write_size(buf: &mut [u8], size: u16) {
    buf[field::SIZE].copy_from_slice(&size.to_le_bytes());
}

/// The KCP bytes of a recovered shard: `shard[2..size]` if `2 <= size <= shard.len()` (kcp-go
/// `sess.go` kcpInput), else `None` (counted as FECErrs).
#[inline]
pub fn recovered_payload(shard: &[u8]) -> Option<&[u8]> {
    let size = u16::from_le_bytes([*shard.first()?, *shard.get(1)?]) as usize;
    (2..=shard.len()).contains(&size).then(|| &shard[2..size])
}

/// NEW OOB packet (v5.6.60+, spec §3.4): `seqid 0xffffffff | 0xf3 | size = 6 + len | conv u32 LE |
/// payload`. Returns `(conv, payload)`, or `None` when the size field disagrees with the length.
pub fn parse_oob(pkt: &[u8]) -> Option<(u32, &[u8])> {
    let p = Packet::new_checked(pkt).ok()?;
    let size = p.size() as usize;
    if p.type_field() != TYPE_OOB || size < 6 || HEADER_SIZE + size > pkt.len() {
        return None;
    }
    let conv = u32::from_le_bytes(pkt[8..12].try_into().ok()?);
    Some((conv, &pkt[12..HEADER_SIZE + size]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demux_by_type_field() {
        assert_eq!(classify(&[0, 0, 0, 0, 0xf1, 0, 2, 0]), Class::Data);
        assert_eq!(classify(&[0, 0, 0, 0, 0xf2, 0]), Class::Parity);
        assert_eq!(classify(&[0, 0, 0, 0, 0xf3, 0]), Class::Oob);
        // A KCP PUSH (cmd 81, frg 0) and short garbage are raw KCP.
        assert_eq!(classify(&[0x44, 0x33, 0x22, 0x11, 81, 0, 32, 0]), Class::Kcp);
        assert_eq!(classify(&[1, 2, 3]), Class::Kcp);
        // Every KCP command with any frg.
        for cmd in 81..=84u8 {
            for frg in 0..=255u8 {
                assert_eq!(classify(&[0, 0, 0, 0, cmd, frg]), Class::Kcp);
            }
        }
    }

    #[test]
    fn checked_view() {
        assert_eq!(Packet::new_checked(&[0u8; 7][..]).unwrap_err(), WireError::Truncated { len: 7 });
        assert_eq!(Packet::new_checked(&[0u8; 1501][..]).unwrap_err(), WireError::TooLong { len: 1501 });
        assert_eq!(Packet::new_checked(&[0, 0, 0, 0, 0x51, 0, 0, 0][..]).unwrap_err(), WireError::NotFec(0x51));
        let p = Packet::new_checked(&[5, 0, 0, 0, 0xf1, 0, 3, 0, 9][..]).unwrap();
        assert_eq!(
            (p.seqid(), p.class(), p.size(), p.payload(), p.shard()),
            (5, Class::Data, 3, &[9][..], &[3, 0, 9][..])
        );
        assert_eq!(recovered_payload(&[3, 0, 9, 0, 0]), Some(&[9][..]));
        assert_eq!(recovered_payload(&[1, 0, 9]), None);
        assert_eq!(recovered_payload(&[9, 0, 9]), None);
        assert_eq!(recovered_payload(&[2]), None);
    }

    #[test]
    fn oob_layout_from_the_new_vectors() {
        let pkt = ::hex::decode("fffffffff3000a004433221170696e67").unwrap();
        assert_eq!(parse_oob(&pkt), Some((0x11223344, &b"ping"[..])));
        assert_eq!(parse_oob(&pkt[..15]), None);
    }
}
