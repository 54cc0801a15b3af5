//! What runs above a KCP session in kcptun (spec §1.1): smux, over snappy framing unless `--nocomp`.
//!
//! [`Mux::pump`] moves bytes between the layers: in-order bytes from KCP are (decompressed and) fed to
//! smux while smux wants input (its receive buffer is what pushes back on the KCP window); smux frames
//! are (compressed one chunk per frame, as kcptun's `CompStream` does and) queued on KCP while its send
//! window has room. The application uses the smux session directly.

use kcpd_smux as smux;
use kcpd_time::Instant;

use crate::proto::session::Session;
use crate::proto::snappy;

/// The tunnel above this session broke: the session must be closed (kcptun closes it too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    /// smux failed (a protocol error from the peer, or the session closed).
    #[error("smux: {0}")]
    Smux(#[from] smux::Error),
    /// The peer's snappy stream is corrupt.
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
    /// Room for one outgoing frame (`8 + max_frame_size`).
    frame_len: usize,
}

/// Per-thread scratch buffers for [`Mux::pump`] (bytes from KCP, one outgoing frame): every session of a
/// shard shares them instead of holding 64 KiB + a frame each while idle.
struct Scratch {
    rx: Vec<u8>,
    frame: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> =
        const { std::cell::RefCell::new(Scratch { rx: Vec::new(), frame: Vec::new() }) };
}

const RX_SCRATCH: usize = 64 << 10;

/// Segments of smux frames queued in KCP but not yet sent, beyond which [`Mux::pump`] leaves frames in smux
/// (more with a pacer whose burst is larger: [`Session::send_ahead`]).
/// What KCP has queued is sent in order, whichever stream it belongs to: keeping that queue short lets smux's
/// scheduler (control frames first, then the stream that sent least) put a small response ahead of a bulk
/// flow instead of behind a whole send window of it. The engine pumps again on every ACK, so the queue
/// never runs dry while the window is open.
const AHEAD: usize = 64;

impl Mux {
    /// smux in `role` with `cfg`, over snappy framing when `compress` (kcptun without `--nocomp`).
    pub fn new(role: smux::Role, cfg: smux::Config, compress: bool, now: Instant) -> Result<Self, smux::ConfigError> {
        let frame_len = smux::HEADER_SIZE + cfg.max_frame_size;
        Ok(Mux {
            smux: smux::Session::new(role, cfg, now)?,
            comp: compress.then(|| Compression { enc: snappy::Encoder::new(), dec: snappy::Decoder::new() }),
            tx: Vec::new(),
            tx_pos: 0,
            frame_len,
        })
    }

    /// The smux session, to open, read, write and close streams.
    pub fn smux(&mut self) -> &mut smux::Session {
        &mut self.smux
    }

    /// The smux version in use (0: a detecting server that has not seen a frame yet).
    pub fn version(&self) -> u8 {
        self.smux.version()
    }

    /// smux is closed (keepalive timeout, protocol error, or closed here).
    pub fn is_closed(&self) -> bool {
        self.smux.is_closed()
    }

    /// The smux session's counters.
    pub fn stats(&self) -> &smux::Stats {
        self.smux.stats()
    }

    /// Move bytes both ways between KCP and smux; returns how many moved (0: nothing to do).
    pub fn pump(&mut self, now: Instant, session: &mut Session) -> Result<usize, MuxError> {
        let r = SCRATCH.try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                let Scratch { rx, frame } = &mut *s;
                self.pump_with(now, session, rx, frame)
            }
            // Not reentrant in practice; if it ever were, use buffers of our own.
            Err(_) => self.pump_with(now, session, &mut Vec::new(), &mut Vec::new()),
        });
        match r {
            Ok(r) => r,
            // Thread teardown: the thread-local is gone.
            Err(_) => self.pump_with(now, session, &mut Vec::new(), &mut Vec::new()),
        }
    }

    fn pump_with(
        &mut self,
        now: Instant,
        session: &mut Session,
        rx: &mut Vec<u8>,
        frame: &mut Vec<u8>,
    ) -> Result<usize, MuxError> {
        if rx.len() < RX_SCRATCH {
            rx.resize(RX_SCRATCH, 0);
        }
        if frame.len() < self.frame_len {
            frame.resize(self.frame_len, 0);
        }
        let frame = &mut frame[..self.frame_len];
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
            let n = session.recv(rx);
            if n == 0 {
                break;
            }
            moved += n;
            match &mut self.comp {
                Some(c) => c.dec.feed(&rx[..n]),
                None => self.smux.handle_input(now, &rx[..n])?,
            }
        }
        // Outbound: leftovers first, then new frames while KCP takes them. What stops it says whether
        // smux has more than KCP holds (its rate samples are not application-limited then).
        let mut sent = false;
        let backlog = loop {
            if self.tx_pos < self.tx.len() {
                let n = session.send(&self.tx[self.tx_pos..]);
                self.tx_pos += n;
                moved += n;
                sent |= n > 0;
                if self.tx_pos < self.tx.len() {
                    break true;
                }
            }
            self.tx.clear();
            self.tx_pos = 0;
            if session.send_capacity() == 0 || session.unsent() >= session.send_ahead(AHEAD) {
                break true;
            }
            let Some(n) = self.smux.poll_transmit(now, frame) else { break false };
            match &mut self.comp {
                Some(c) => c.enc.encode(&frame[..n], &mut self.tx),
                None => {
                    let k = session.send(&frame[..n]);
                    moved += k;
                    sent |= k > 0;
                    self.tx.extend_from_slice(&frame[k..n]);
                }
            }
        };
        session.set_backlog(backlog);
        if sent {
            session.flush();
        }
        Ok(moved)
    }

    /// The next smux deadline (keepalive).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.smux.poll_timeout()
    }

    /// Run smux keepalive when [`poll_timeout`](Self::poll_timeout) is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.smux.handle_timeout(now);
    }
}
