//! The KCP segment header (spec §4.1), a typed view: 24 bytes, little-endian.
//!
//! ```text
//! off len field
//! 0   4   conv   conversation id
//! 4   1   cmd    81 PUSH, 82 ACK, 83 WASK, 84 WINS
//! 5   1   frg    fragment countdown (message mode; 0 in stream mode)
//! 6   2   wnd    sender's free receive window (segments)
//! 8   4   ts     PUSH: send time; ACK: echo of the acked PUSH's ts
//! 12  4   sn     PUSH: sequence number; ACK: acked sn
//! 16  4   una    sender's rcv_nxt
//! 20  4   len    payload bytes that follow
//! ```

/// Header bytes (kcp-go `IKCP_OVERHEAD`).
pub const OVERHEAD: usize = 24;

mod field {
    use std::ops::Range;
    pub const CONV: Range<usize> = 0..4;
    pub const CMD: usize = 4;
    pub const FRG: usize = 5;
    pub const WND: Range<usize> = 6..8;
    pub const TS: Range<usize> = 8..12;
    pub const SN: Range<usize> = 12..16;
    pub const UNA: Range<usize> = 16..20;
    pub const LEN: Range<usize> = 20..24;
}

/// Segment commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Cmd {
    /// Data (`IKCP_CMD_PUSH`).
    Push = 81,
    /// Acknowledges `sn`, echoing the sender's `ts` (`IKCP_CMD_ACK`).
    Ack = 82,
    /// Window probe: ask the peer for its window.
    Wask = 83,
    /// Window probe answer: tell our window.
    Wins = 84,
}

impl Cmd {
    /// The command with wire value `v`, if it is one.
    pub fn from_u8(v: u8) -> Option<Cmd> {
        match v {
            81 => Some(Cmd::Push),
            82 => Some(Cmd::Ack),
            83 => Some(Cmd::Wask),
            84 => Some(Cmd::Wins),
            _ => None,
        }
    }
}

/// A decoded segment header (the `Repr` of the view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Conversation id.
    pub conv: u32,
    /// Command ([`Cmd`] as a byte).
    pub cmd: u8,
    /// Fragments of the message that follow this one (message mode; 0 in stream mode).
    pub frg: u8,
    /// The sender's free receive window, in segments.
    pub wnd: u16,
    /// Send time on the sender's KCP clock (ms), echoed in the ACK.
    pub ts: u32,
    /// Sequence number.
    pub sn: u32,
    /// The sender's next expected sequence number: everything below is acknowledged.
    pub una: u32,
    /// Payload bytes that follow the header.
    pub len: u32,
}

#[inline(always)]
fn u32_at(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_le_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

impl Header {
    /// Decode the header at the start of `buf`; `None` if fewer than 24 bytes.
    #[inline]
    pub fn parse(buf: &[u8]) -> Option<Header> {
        if buf.len() < OVERHEAD {
            return None;
        }
        Some(Header {
            conv: u32_at(buf, field::CONV),
            cmd: buf[field::CMD],
            frg: buf[field::FRG],
            wnd: u16::from_le_bytes([buf[field::WND.start], buf[field::WND.start + 1]]),
            ts: u32_at(buf, field::TS),
            sn: u32_at(buf, field::SN),
            una: u32_at(buf, field::UNA),
            len: u32_at(buf, field::LEN),
        })
    }

    /// Encode into the first 24 bytes of `out` (which must hold them).
    #[inline]
    pub fn write(&self, out: &mut [u8]) {
        out[field::CONV].copy_from_slice(&self.conv.to_le_bytes());
        out[field::CMD] = self.cmd;
        out[field::FRG] = self.frg;
        out[field::WND].copy_from_slice(&self.wnd.to_le_bytes());
        out[field::TS].copy_from_slice(&self.ts.to_le_bytes());
        out[field::SN].copy_from_slice(&self.sn.to_le_bytes());
        out[field::UNA].copy_from_slice(&self.una.to_le_bytes());
        out[field::LEN].copy_from_slice(&self.len.to_le_bytes());
    }
}

/// conv of a raw KCP datagram (spec §4.2 listener demux).
#[inline]
pub fn conv_of(buf: &[u8]) -> Option<u32> {
    (buf.len() >= OVERHEAD).then(|| u32_at(buf, field::CONV))
}

/// sn of the first segment of a raw KCP datagram.
#[inline]
pub fn sn_of(buf: &[u8]) -> Option<u32> {
    (buf.len() >= OVERHEAD).then(|| u32_at(buf, field::SN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_spec_bytes() {
        // spec Appendix B: PUSH sn0 "abc", conv 0x11223344, wnd 128, ts 1000.
        let bytes = ::hex::decode("4433221151008000e8030000000000000000000003000000").unwrap();
        let h = Header::parse(&bytes).unwrap();
        assert_eq!(h, Header { conv: 0x11223344, cmd: 81, frg: 0, wnd: 128, ts: 1000, sn: 0, una: 0, len: 3 });
        let mut out = [0u8; 24];
        h.write(&mut out);
        assert_eq!(&out[..], &bytes[..]);
        assert_eq!(Header::parse(&bytes[..23]), None);
        assert_eq!(conv_of(&bytes), Some(0x11223344));
        assert_eq!(sn_of(&bytes), Some(0));
        assert_eq!(Cmd::from_u8(85), None);
    }
}
