//! What runs above a KCP session in kcptun (spec §1.1): smux, over snappy framing unless `--nocomp`.
//!
//! [`Mux::pump`] moves bytes between the layers: in-order bytes from KCP are (decompressed and) fed to
//! smux while smux wants input (its receive buffer is what pushes back on the KCP window); smux frames
//! are (compressed one chunk per frame, as kcptun's `CompStream` does and) queued on KCP while its send
//! window has room. The application uses the smux session directly.

use kcpd_smux as smux;

use crate::proto::session::Session;
use crate::proto::snappy;

/// The tunnel above this session broke: the session must be closed (kcptun closes it too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("smux: {0}")]
    Smux(#[from] smux::Error),
    #[error("compression: {0}")]
    Snappy(#[from] snappy::SnappyError),
}

struct Compression {
    enc: snappy::Encoder,
    dec: snappy::Decoder,
}

/// smux (and snappy) over one [`Session`].
pub struct Mux {
    smux: smux::Session,
    comp: Option<Compression>,
    /// Bytes for KCP that did not fit its send window yet.
    tx: Vec<u8>,
    tx_pos: usize,
    frame: Vec<u8>,
    rx: Vec<u8>,
}

impl Mux {
    pub fn new(role: smux::Role, cfg: smux::Config, compress: bool, now: u32) -> Result<Self, smux::ConfigError> {
        let frame = vec![0u8; smux::HEADER_SIZE + cfg.max_frame_size];
        Ok(Mux {
            smux: smux::Session::new(role, cfg, now)?,
            comp: compress.then(|| Compression { enc: snappy::Encoder::new(), dec: snappy::Decoder::new() }),
            tx: Vec::new(),
            tx_pos: 0,
            frame,
            rx: vec![0u8; 64 << 10],
        })
    }

    pub fn smux(&mut self) -> &mut smux::Session {
        &mut self.smux
    }

    /// Move bytes both ways between KCP and smux; returns how many moved (0: nothing to do).
    pub fn pump(&mut self, now: u32, session: &mut Session) -> Result<usize, MuxError> {
        let mut moved = 0;
        // Inbound: feed smux only while it wants input (its budget is what closes the KCP window); with
        // compression, decoded chunks already buffered go first.
        while self.smux.wants_input() {
            if let Some(c) = &mut self.comp
                && let Some(chunk) = c.dec.decode()?
            {
                self.smux.handle_input(now, chunk)?;
                continue;
            }
            let n = session.recv(&mut self.rx);
            if n == 0 {
                break;
            }
            moved += n;
            match &mut self.comp {
                Some(c) => c.dec.feed(&self.rx[..n]),
                None => self.smux.handle_input(now, &self.rx[..n])?,
            }
        }
        // Outbound: leftovers first, then new frames while KCP takes them.
        let mut sent = false;
        loop {
            if self.tx_pos < self.tx.len() {
                let n = session.send(&self.tx[self.tx_pos..]);
                self.tx_pos += n;
                moved += n;
                sent |= n > 0;
                if self.tx_pos < self.tx.len() {
                    break;
                }
            }
            self.tx.clear();
            self.tx_pos = 0;
            if session.send_capacity() == 0 {
                break;
            }
            let Some(n) = self.smux.poll_transmit(now, &mut self.frame) else { break };
            match &mut self.comp {
                Some(c) => c.enc.encode(&self.frame[..n], &mut self.tx),
                None => {
                    let k = session.send(&self.frame[..n]);
                    moved += k;
                    sent |= k > 0;
                    self.tx.extend_from_slice(&self.frame[k..n]);
                }
            }
        }
        if sent {
            session.flush();
        }
        Ok(moved)
    }

    /// The next smux deadline (keepalive).
    pub fn poll_timeout(&self) -> Option<u32> {
        self.smux.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: u32) {
        self.smux.handle_timeout(now);
    }
}
