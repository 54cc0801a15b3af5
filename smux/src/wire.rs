//! The smux frame (spec §5.1, smux `frame.go` rawHeader/updHeader) as typed views, and the frame
//! validation rules every received header goes through.
//!
//! ```text
//! off len field
//! 0   1   ver   1 or 2, must equal the session's configured version
//! 1   1   cmd   0 SYN, 1 FIN, 2 PSH, 3 NOP, 4 UPD (v2 only)
//! 2   2   len   u16 LE: payload bytes that follow (length BEFORE stream id)
//! 4   4   sid   u32 LE
//! 8   len payload (PSH data; UPD: consumed u32 LE | window u32 LE)
//! ```
//!
//! Validation is smux v1.5.57's (spec §5.1 "Validation differences", §8 trap 26): SYN/FIN/NOP carry no
//! payload, UPD carries exactly 8 bytes and only on a version-2 session. v1.5.52 (what NEW kcptun pins)
//! does not check the lengths and DEB v1.5.16 also accepts UPD on v1; a frame that fails the strict check
//! here is one that no Go smux ever sends.

/// Bytes of the frame header.
pub const HEADER_SIZE: usize = 8;
/// Bytes of an UPD payload.
pub const UPD_SIZE: usize = 8;
/// The largest payload the u16 length field can announce (receivers accept any of them, spec §5.3).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;
/// The largest frame on the wire.
pub const MAX_FRAME: usize = HEADER_SIZE + MAX_PAYLOAD;
/// A stream's send window before the peer's first UPD (smux `initialPeerWindow`, spec §5.5).
pub const INITIAL_PEER_WINDOW: u32 = 262_144;

mod field {
    use std::ops::Range;
    pub const VER: usize = 0;
    pub const CMD: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const SID: Range<usize> = 4..8;
}

mod upd_field {
    use std::ops::Range;
    pub const CONSUMED: Range<usize> = 0..4;
    pub const WINDOW: Range<usize> = 4..8;
}

/// A frame command (smux `cmdSYN` … `cmdUPD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// Open stream `sid` (length 0).
    Syn = 0,
    /// The sender closed (its write side of) stream `sid` (length 0).
    Fin = 1,
    /// Data for stream `sid`.
    Psh = 2,
    /// Keepalive (length 0, sid 0).
    Nop = 3,
    /// v2 window update: `consumed u32 LE | window u32 LE` (length 8).
    Upd = 4,
}

impl Cmd {
    /// Every command, in wire order (index = wire value).
    pub const ALL: [Cmd; 5] = [Cmd::Syn, Cmd::Fin, Cmd::Psh, Cmd::Nop, Cmd::Upd];

    /// The command for a wire `cmd` byte; `None` for 5..=255 (a [`FrameError::UnknownCmd`] on receive).
    pub fn from_u8(v: u8) -> Option<Cmd> {
        Cmd::ALL.get(usize::from(v)).copied()
    }

    /// Upper-case mnemonic as in smux and the spec (`"SYN"` … `"UPD"`), for logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Syn => "SYN",
            Cmd::Fin => "FIN",
            Cmd::Psh => "PSH",
            Cmd::Nop => "NOP",
            Cmd::Upd => "UPD",
        }
    }
}

/// Why a frame is not acceptable. Each one is `ErrInvalidProtocol` in Go smux and ends the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A view's length check failed: the buffer ends before the header, payload or UPD body it needs.
    /// [`Session`](crate::Session) itself waits for more input instead of reporting this.
    #[error("{len} bytes are too short for a frame (header 8 bytes, payload {need} announced)")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes needed: [`HEADER_SIZE`], header + announced payload, or [`UPD_SIZE`].
        need: usize,
    },
    /// The `ver` byte differs from the session's version (the two ends disagree on `--smuxver`).
    #[error("version byte {got} but the session speaks smux v{want}")]
    BadVersion {
        /// `ver` byte of the received frame.
        got: u8,
        /// The session's version (1 or 2).
        want: u8,
    },
    /// The `cmd` byte (carried here) is above 4.
    #[error("unknown command {0}")]
    UnknownCmd(u8),
    /// A UPD (window update) arrived on a version-1 session, which has no flow control.
    #[error("UPD frame on a version-1 session")]
    UpdOnV1,
    /// A SYN, FIN or NOP announced a payload; these carry none.
    #[error("{} frame with length {len}, must be 0", cmd.name())]
    ControlWithPayload {
        /// The offending command: [`Cmd::Syn`], [`Cmd::Fin`] or [`Cmd::Nop`].
        cmd: Cmd,
        /// The non-zero `len` field.
        len: u16,
    },
    /// A UPD whose `len` field (carried here) is not [`UPD_SIZE`].
    #[error("UPD frame with length {0}, must be 8")]
    BadUpdLength(u16),
}

/// The strict receive rule (smux v1.5.57 `recvLoop` + "add protocol validation"): version first, then
/// the command, then its length. Returns the command.
pub fn check(session_version: u8, ver: u8, cmd: u8, len: u16) -> Result<Cmd, FrameError> {
    if ver != session_version {
        return Err(FrameError::BadVersion { got: ver, want: session_version });
    }
    let cmd = Cmd::from_u8(cmd).ok_or(FrameError::UnknownCmd(cmd))?;
    match cmd {
        Cmd::Syn | Cmd::Fin | Cmd::Nop if len != 0 => Err(FrameError::ControlWithPayload { cmd, len }),
        Cmd::Upd if session_version == 1 => Err(FrameError::UpdOnV1),
        Cmd::Upd if usize::from(len) != UPD_SIZE => Err(FrameError::BadUpdLength(len)),
        _ => Ok(cmd),
    }
}

/// A view of the 8-byte header at the start of `buf`.
#[derive(Clone, Copy, Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// A view without the length check: accessors panic if `buf` is shorter than [`HEADER_SIZE`]. For
    /// buffers that are 8 bytes by construction.
    pub fn new_unchecked(buf: T) -> Self {
        Header { buf }
    }

    /// Length-check once: at least [`HEADER_SIZE`] bytes.
    pub fn new_checked(buf: T) -> Result<Self, FrameError> {
        let len = buf.as_ref().len();
        if len < HEADER_SIZE {
            return Err(FrameError::Truncated { len, need: HEADER_SIZE });
        }
        Ok(Header { buf })
    }

    /// The `ver` byte: 1 or 2 in any valid frame (not checked here; see [`validate`](Self::validate)).
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER]
    }

    /// The raw command byte (may be unknown).
    pub fn cmd_raw(&self) -> u8 {
        self.buf.as_ref()[field::CMD]
    }

    /// The `len` field: payload bytes following the 8-byte header (0 for SYN/FIN/NOP, 8 for UPD).
    pub fn length(&self) -> u16 {
        let b = &self.buf.as_ref()[field::LENGTH];
        u16::from_le_bytes([b[0], b[1]])
    }

    /// The stream id (`sid`): odd for streams the client opened, even for the server's; 0 on a NOP.
    pub fn sid(&self) -> u32 {
        let b = &self.buf.as_ref()[field::SID];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// [`check`] this header against a session's version.
    pub fn validate(&self, session_version: u8) -> Result<Cmd, FrameError> {
        check(session_version, self.version(), self.cmd_raw(), self.length())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Write all four fields.
    pub fn set(&mut self, ver: u8, cmd: Cmd, len: u16, sid: u32) {
        let b = self.buf.as_mut();
        b[field::VER] = ver;
        b[field::CMD] = cmd as u8;
        b[field::LENGTH].copy_from_slice(&len.to_le_bytes());
        b[field::SID].copy_from_slice(&sid.to_le_bytes());
    }
}

/// A view of one whole frame (header + announced payload) at the start of `buf`; bytes after it are
/// ignored (they belong to the next frame).
#[derive(Clone, Copy, Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Length-check once: the header and all `length` payload bytes are present.
    pub fn new_checked(buf: T) -> Result<Self, FrameError> {
        let hdr = Header::new_checked(buf.as_ref())?;
        let need = HEADER_SIZE + usize::from(hdr.length());
        let len = buf.as_ref().len();
        if len < need {
            return Err(FrameError::Truncated { len, need });
        }
        Ok(Frame { buf })
    }

    /// The frame's 8-byte header (length already checked; version and command not yet validated).
    pub fn header(&self) -> Header<&[u8]> {
        Header { buf: &self.buf.as_ref()[..HEADER_SIZE] }
    }

    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        HEADER_SIZE + usize::from(self.header().length())
    }

    /// The `length` payload bytes after the header (PSH data or UPD body); trailing bytes excluded.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_SIZE..self.total_len()]
    }
}

/// A view of an UPD payload (smux `updHeader`).
#[derive(Clone, Copy, Debug)]
pub struct Update<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Update<T> {
    /// A view without the length check: accessors panic if `buf` is shorter than [`UPD_SIZE`].
    pub fn new_unchecked(buf: T) -> Self {
        Update { buf }
    }

    /// Length-check once: exactly the first [`UPD_SIZE`] bytes are read.
    pub fn new_checked(buf: T) -> Result<Self, FrameError> {
        let len = buf.as_ref().len();
        if len < UPD_SIZE {
            return Err(FrameError::Truncated { len, need: UPD_SIZE });
        }
        Ok(Update { buf })
    }

    /// Bytes of this stream the peer's application has read so far (u32, wrapping).
    pub fn consumed(&self) -> u32 {
        let b = &self.buf.as_ref()[upd_field::CONSUMED];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The peer's `MaxStreamBuffer`.
    pub fn window(&self) -> u32 {
        let b = &self.buf.as_ref()[upd_field::WINDOW];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// Write an UPD payload.
pub fn write_update(buf: &mut [u8], consumed: u32, window: u32) {
    buf[upd_field::CONSUMED].copy_from_slice(&consumed.to_le_bytes());
    buf[upd_field::WINDOW].copy_from_slice(&window.to_le_bytes());
}

/// A parsed, validated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr<'a> {
    /// smux protocol version in the `ver` byte: 1 or 2 (after [`parse`](Self::parse), the session's).
    pub version: u8,
    /// The command; on parse, one whose payload length has been checked against it.
    pub cmd: Cmd,
    /// Stream id the frame belongs to (0 for NOP).
    pub sid: u32,
    /// The payload: PSH data, an 8-byte UPD body (see [`Update`]), or empty.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Validate `frame` for a session of `session_version` ([`check`]).
    pub fn parse(frame: &Frame<&'a [u8]>, session_version: u8) -> Result<Self, FrameError> {
        let h = frame.header();
        let cmd = h.validate(session_version)?;
        let buf: &'a [u8] = frame.buf;
        Ok(Repr { version: h.version(), cmd, sid: h.sid(), payload: &buf[HEADER_SIZE..frame.total_len()] })
    }

    /// Parse the first frame of `buf`; returns it and the bytes it occupies.
    pub fn parse_prefix(buf: &'a [u8], session_version: u8) -> Result<(Self, usize), FrameError> {
        let f = Frame::new_checked(buf)?;
        Ok((Repr::parse(&f, session_version)?, f.total_len()))
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        HEADER_SIZE + self.payload.len()
    }

    /// Write the frame into `buf[..self.buffer_len()]`. Panics if `buf` is shorter or the payload is
    /// longer than [`MAX_PAYLOAD`] (a caller bug, never peer input).
    pub fn emit(&self, buf: &mut [u8]) {
        // Invariant (documented above): callers build reprs from parsed frames or from payloads they sized.
        let len = u16::try_from(self.payload.len()).expect("smux payload longer than 65535 bytes");
        Header { buf: &mut buf[..HEADER_SIZE] }.set(self.version, self.cmd, len, self.sid);
        buf[HEADER_SIZE..self.buffer_len()].copy_from_slice(self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_bytes() {
        // spec §5.1 / §9.10
        let mut b = [0u8; 16];
        Repr { version: 1, cmd: Cmd::Syn, sid: 3, payload: &[] }.emit(&mut b);
        assert_eq!(&b[..8], &[1, 0, 0, 0, 3, 0, 0, 0]);
        let mut p = [0u8; 8];
        write_update(&mut p, 4096, 2_097_152);
        Repr { version: 2, cmd: Cmd::Upd, sid: 3, payload: &p }.emit(&mut b);
        assert_eq!(b, [2, 4, 8, 0, 3, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0x20, 0]);
        let u = Update::new_checked(&b[8..]).unwrap();
        assert_eq!((u.consumed(), u.window()), (4096, 2_097_152));
    }

    #[test]
    fn strict_rules() {
        assert_eq!(check(2, 1, 0, 0), Err(FrameError::BadVersion { got: 1, want: 2 }));
        assert_eq!(check(2, 2, 5, 0), Err(FrameError::UnknownCmd(5)));
        assert_eq!(check(1, 1, 4, 8), Err(FrameError::UpdOnV1));
        assert_eq!(check(2, 2, 4, 0), Err(FrameError::BadUpdLength(0)));
        assert_eq!(check(2, 2, 4, 12), Err(FrameError::BadUpdLength(12)));
        for c in [Cmd::Syn, Cmd::Fin, Cmd::Nop] {
            assert_eq!(check(2, 2, c as u8, 1), Err(FrameError::ControlWithPayload { cmd: c, len: 1 }));
            assert_eq!(check(1, 1, c as u8, 0), Ok(c));
        }
        assert_eq!(check(2, 2, 2, 65535), Ok(Cmd::Psh));
        assert_eq!(check(2, 2, 4, 8), Ok(Cmd::Upd));
    }

    #[test]
    fn truncation() {
        assert!(matches!(Header::new_checked(&[0u8; 7][..]), Err(FrameError::Truncated { len: 7, need: 8 })));
        let f = [2u8, 2, 3, 0, 1, 0, 0, 0, b'a', b'b'];
        assert!(matches!(Frame::new_checked(&f[..]), Err(FrameError::Truncated { len: 10, need: 11 })));
        let f = [2u8, 2, 2, 0, 1, 0, 0, 0, b'a', b'b', 9];
        let fr = Frame::new_checked(&f[..]).unwrap();
        assert_eq!((fr.payload(), fr.total_len()), (&b"ab"[..], 10));
    }
}
