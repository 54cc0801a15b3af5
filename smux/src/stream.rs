//! Per-stream state (smux `stream.go`): the receive buffer with Go's frame-bounded reads and v2 UPD
//! cadence, and the send queue with the v2 window.

use std::collections::VecDeque;

use crate::Config;
use crate::wire::INITIAL_PEER_WINDOW;

/// Empty buffers larger than this give their memory back (an idle stream should not pin a burst's worth).
const SHRINK_ABOVE: usize = 1 << 18;

/// A v2 reader announces what it consumed each time this share of its window was read: half, as Go's
/// `tryReadv2`, or an eighth with window autotuning. The sender may only fill what was announced, so at
/// half the last announcement can lag a whole half window behind the reader, and a stream gets half its
/// window's worth less per round trip than the window says; an eighth keeps seven eighths usable for a UPD
/// frame (20 bytes) per eighth of a window.
const UPD_CADENCE: [u32; 2] = [2, 8];

#[derive(Debug)]
pub(crate) struct Stream {
    // --- receive (stream.go pushBytes / tryRead / tryReadv2) ---
    /// Received payload: complete frames, then the `partial` bytes of the frame still arriving.
    pub recv: VecDeque<u8>,
    /// Lengths of the complete frames in `recv` (the front one possibly partly read already). A read
    /// returns bytes of one frame at most, as Go's `tryRead` copies from `buffers[0]` only: with the same
    /// read sizes our UPD `consumed` values are then the same as a Go reader's.
    pub segs: VecDeque<usize>,
    pub partial: usize,
    /// v2 `numRead` / `incr` (wrapping u32, as Go).
    pub num_read: u32,
    pub incr: u32,
    /// Window autotuning's epoch: when it began and `num_read` then, and the fewest bytes a read left
    /// waiting since.
    pub epoch: (Option<kcpd_time::Instant>, u32),
    pub epoch_low: usize,
    /// The v2 window this stream advertises (0: `max_stream_buffer`; grown by window autotuning).
    pub window: u32,
    /// A FIN arrived: reads end with EOF once `segs` is empty.
    pub peer_fin: bool,
    /// The next arrival of data or FIN raises `Readable` (cleared when raised, set by a read that leaves
    /// nothing readable).
    pub read_armed: bool,

    // --- send (stream.go writeV2 / update) ---
    /// Bytes accepted by `stream_write`, not yet framed.
    pub send: VecDeque<u8>,
    /// v2 `numWritten` (counted when accepted: the window is checked then, as Go checks it before
    /// handing frames to the shaper), `peerConsumed`, `peerWindow`.
    pub num_written: u32,
    pub peer_consumed: u32,
    pub peer_window: u32,
    /// `stream_close_write` or `stream_close` was called: no more writes, a FIN is owed or sent.
    pub write_closed: bool,
    /// The FIN waits for `send` to drain (it must follow the stream's last PSH).
    pub fin_pending: bool,
    /// `stream_close` was called: the application holds no handle; the stream lives on only until `send`
    /// has been framed (Go removes it at once, after `Write` has already handed everything over).
    pub app_closed: bool,
    /// A `stream_write` accepted less than offered: raise `Writable` when room appears.
    pub write_blocked: bool,

    // --- scheduling (shaper.go) ---
    /// Bytes (v2) or frames (v1) sent, lifted to the scheduler clock when the stream becomes active.
    pub vtime: u64,
    /// The stream has exactly one entry in the scheduler heap.
    pub scheduled: bool,
}

/// What the layer below reports for window autotuning ([`crate::Session::set_path`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path {
    pub now: kcpd_time::Instant,
    /// Round-trip time, ms (0: unknown).
    pub rtt_ms: u32,
    /// Bytes the layer below may hold on their way in (KCP's receive window; 0: unknown).
    pub below: u32,
}

/// Outcome of [`Stream::read`].
pub(crate) enum Read {
    /// `n` bytes copied; `upd` = the `consumed` value to announce (v2 rule), if any.
    Data { n: usize, upd: Option<u32> },
    /// Nothing readable.
    Empty,
}

impl Stream {
    pub fn new() -> Self {
        Stream {
            recv: VecDeque::new(),
            segs: VecDeque::new(),
            partial: 0,
            num_read: 0,
            incr: 0,
            epoch: (None, 0),
            epoch_low: usize::MAX,
            window: 0,
            peer_fin: false,
            read_armed: true,
            send: VecDeque::new(),
            num_written: 0,
            peer_consumed: 0,
            peer_window: INITIAL_PEER_WINDOW,
            write_closed: false,
            fin_pending: false,
            app_closed: false,
            write_blocked: false,
            vtime: 0,
            scheduled: false,
        }
    }

    /// Bytes of complete frames not yet read.
    pub fn readable(&self) -> usize {
        self.recv.len() - self.partial
    }

    /// Append a piece of a PSH payload.
    pub fn push_partial(&mut self, bytes: &[u8]) {
        self.recv.extend(bytes);
        self.partial += bytes.len();
    }

    /// The PSH frame being received is complete; true when it carried bytes for this stream.
    pub fn finish_frame(&mut self) -> bool {
        if self.partial == 0 {
            return false;
        }
        self.segs.push_back(self.partial);
        self.partial = 0;
        true
    }

    /// Drop everything received (stream closed by the application); returns the bytes dropped, which
    /// go back to the session's token bucket (smux `recycleTokens`).
    pub fn drop_received(&mut self) -> usize {
        let n = self.recv.len();
        self.recv = VecDeque::new();
        self.segs = VecDeque::new();
        self.partial = 0;
        n
    }

    /// Copy out bytes of at most one received frame (smux `tryRead`/`tryReadv2`).
    pub fn read(&mut self, buf: &mut [u8], cfg: &Config, path: Path) -> Read {
        let Some(front) = self.segs.front_mut() else { return Read::Empty };
        let n = buf.len().min(*front);
        let (a, b) = self.recv.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv.drain(..n);
        *front -= n;
        if *front == 0 {
            self.segs.pop_front();
        }
        if self.recv.is_empty() && self.recv.capacity() > SHRINK_ABOVE {
            self.recv = VecDeque::new();
        }
        self.epoch_low = self.epoch_low.min(self.readable());
        if cfg.version != 2 || n == 0 {
            return Read::Data { n, upd: None };
        }
        // stream.go tryReadv2: UPD on the first read (numRead == n) and whenever incr reaches
        // MaxStreamBuffer/2; a zero `consumed` is never sent (`notifyConsumed > 0`).
        // n <= 65535 (one frame) and max_stream_buffer <= i32::MAX (Config::validate): both fit u32.
        let n32 = n as u32;
        self.num_read = self.num_read.wrapping_add(n32);
        self.incr = self.incr.wrapping_add(n32);
        let mut upd = None;
        if self.incr >= self.window(cfg) / UPD_CADENCE[usize::from(cfg.window_autotune)] || self.num_read == n32 {
            if self.num_read > 0 {
                upd = Some(self.num_read);
            }
            self.incr = 0;
            if cfg.window_autotune {
                self.tune_window(cfg, path);
            }
        }
        Read::Data { n, upd }
    }

    /// The v2 window this stream advertises.
    pub fn window(&self, cfg: &Config) -> u32 {
        // max_stream_buffer <= i32::MAX (Config::validate).
        self.window.max(cfg.max_stream_buffer as u32)
    }

    /// At a window update, once a whole window was read since the epoch began: when that took less than
    /// [`AUTOTUNE_RTTS`](crate::config::AUTOTUNE_RTTS) round trips, the window (not the path, not the
    /// reader) limits the stream: double it, up to [`Config::window_autotune`]'s cap (as QUIC stacks
    /// tune stream flow control). Below the layer below's receive window, it doubles too while the reader
    /// keeps up (an eighth of the window or less waits unread), however long the window took: at 5% loss
    /// some segment's repair is lost in most round trips, holding in-order delivery for one and then
    /// releasing it at once, and a stream that must read its window in a few round trips to grow stayed at
    /// 2 MiB a round trip on a 300 ms path (a third of a 100 Mbit/s link in the simulator) while KCP's
    /// window had room for four. A new epoch begins then.
    fn tune_window(&mut self, cfg: &Config, path: Path) {
        let w = self.window(cfg);
        let Some(at) = self.epoch.0 else {
            (self.epoch, self.epoch_low) = ((Some(path.now), self.num_read), usize::MAX);
            return;
        };
        if self.num_read.wrapping_sub(self.epoch.1) < w {
            return;
        }
        let cap = cfg.max_receive_buffer.max(crate::config::AUTOTUNE_WINDOW_MAX).min(i32::MAX as usize) as u32;
        let rtts = crate::config::AUTOTUNE_RTTS * u64::from(path.rtt_ms);
        let fast = path.rtt_ms > 0 && path.now.saturating_since(at) < kcpd_time::Duration::from_millis(rtts);
        let below = w < path.below && self.epoch_low <= (w / 8) as usize;
        if (fast || below) && w < cap {
            let to = if fast { cap } else { path.below.min(cap) };
            self.window = w.saturating_mul(2).min(to);
        }
        self.epoch_low = usize::MAX;
        self.epoch = (Some(path.now), self.num_read);
    }

    /// v2 `inflight = numWritten - peerConsumed` as Go's int32; negative means the peer claims to have
    /// consumed more than we sent (`ErrConsumed`).
    pub fn inflight(&self) -> i32 {
        self.num_written.wrapping_sub(self.peer_consumed) as i32
    }

    /// How many more bytes `stream_write` may accept now: send-queue room, and for v2 the peer window
    /// (`peerWindow - inflight`; the window is read as u32, so a peer advertising more than 2 GiB gets it,
    /// where Go would stall — no Go peer sends that, VerifyConfig caps it at MaxInt32).
    pub fn send_room(&self, cfg: &Config) -> usize {
        let room = cfg.max_send_buffer.saturating_sub(self.send.len());
        if cfg.version != 2 {
            return room;
        }
        let win = i64::from(self.peer_window) - i64::from(self.inflight());
        room.min(usize::try_from(win).unwrap_or(0))
    }

    /// A blocked writer should try again: there is room, or an error to report.
    pub fn write_unblocked(&self, cfg: &Config) -> bool {
        (cfg.version == 2 && self.inflight() < 0) || self.send_room(cfg) > 0
    }

    /// Take `n` queued bytes into `out`.
    pub fn take_send(&mut self, out: &mut [u8]) {
        let n = out.len();
        let (a, b) = self.send.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..].copy_from_slice(&b[..n - from_a]);
        self.send.drain(..n);
        if self.send.is_empty() && self.send.capacity() > SHRINK_ABOVE {
            self.send = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer below's report at `ms` with a round trip of `rtt_ms` (no receive window reported).
    fn at(ms: u64, rtt_ms: u32) -> Path {
        Path { now: kcpd_time::Instant::from_millis(ms), rtt_ms, below: 0 }
    }

    fn read_all(s: &mut Stream, size: usize, cfg: &Config) -> (Vec<u8>, Vec<u32>) {
        let (mut data, mut upds) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; size];
        while let Read::Data { n, upd } = s.read(&mut buf, cfg, at(0, 0)) {
            data.extend_from_slice(&buf[..n]);
            upds.extend(upd);
        }
        (data, upds)
    }

    #[test]
    fn reads_stop_at_frame_boundaries_and_partial_frames_are_hidden() {
        let cfg = Config { version: 2, max_stream_buffer: 16, max_receive_buffer: 16, ..Config::default() };
        let mut s = Stream::new();
        s.push_partial(b"abc");
        s.push_partial(b"de");
        assert!(s.finish_frame());
        s.push_partial(b"fgh");
        assert_eq!(s.readable(), 5);
        let mut buf = [0u8; 100];
        let Read::Data { n: 5, upd: Some(5) } = s.read(&mut buf, &cfg, at(0, 0)) else {
            panic!("one frame, first-read UPD")
        };
        assert!(matches!(s.read(&mut buf, &cfg, at(0, 0)), Read::Empty));
        assert!(s.finish_frame());
        assert!(!s.finish_frame());
        // Reads of 2: incr reaches 8 (= 16/2) after 8 more bytes; frame boundaries cut the reads too.
        s.push_partial(b"ijklmno");
        s.finish_frame();
        let (data, upds) = read_all(&mut s, 2, &cfg);
        assert_eq!(data, b"fghijklmno");
        assert_eq!(upds, vec![14]);
    }

    #[test]
    fn window_and_room() {
        let cfg = Config { version: 2, max_send_buffer: 1 << 20, ..Config::default() };
        let mut s = Stream::new();
        assert_eq!(s.send_room(&cfg), INITIAL_PEER_WINDOW as usize);
        s.num_written = 262_000;
        assert_eq!(s.send_room(&cfg), 144);
        s.peer_consumed = 262_001;
        assert!(s.inflight() < 0);
        assert!(s.write_unblocked(&cfg));
        let v1 = Config { max_send_buffer: 10, ..Config::default() };
        s.send.extend(b"0123");
        assert_eq!(s.send_room(&v1), 6);
        let mut out = [0u8; 3];
        s.take_send(&mut out);
        assert_eq!(&out, b"012");
        assert_eq!(s.send.len(), 1);
    }

    /// With autotuning, a reader that keeps up doubles its window up to [`AUTOTUNE_WINDOW_MAX`], past the
    /// session buffer, and announces what it read every eighth of a window; without, Go's cadence (half a
    /// window) and a fixed window.
    #[test]
    fn autotuned_windows_grow_past_the_session_buffer_and_update_every_eighth() {
        use crate::config::AUTOTUNE_WINDOW_MAX;
        let run = |autotune: bool| {
            let cfg = Config {
                version: 2,
                max_stream_buffer: 65_536,
                max_receive_buffer: 1 << 20,
                window_autotune: autotune,
                ..Config::default()
            };
            let (mut s, chunk, mut buf) = (Stream::new(), vec![7u8; 32_768], vec![0u8; 32_768]);
            // Every read within two round trips of the last window's start: the window limits the peer.
            let path = at(1000, 100);
            let (mut last, mut gap) = (0u32, 0u32);
            for _ in 0..2_500 {
                s.push_partial(&chunk);
                assert!(s.finish_frame());
                let Read::Data { upd, .. } = s.read(&mut buf, &cfg, path) else { panic!("a frame to read") };
                if let Some(consumed) = upd {
                    (gap, last) = (consumed - last, consumed);
                }
            }
            (s.window(&cfg), gap)
        };
        assert_eq!(run(false), (65_536, 32_768));
        let (window, gap) = run(true);
        assert_eq!(window as usize, AUTOTUNE_WINDOW_MAX);
        assert_eq!(gap as usize, AUTOTUNE_WINDOW_MAX / 8);
    }

    /// A slow reader that keeps up (a window read in ten round trips, as when holes below hold delivery)
    /// grows its window to the layer below's receive window and no further; one that lets more than an
    /// eighth of its window wait unread does not grow.
    #[test]
    fn a_reader_that_keeps_up_grows_to_the_window_below() {
        let cfg = Config {
            version: 2,
            max_stream_buffer: 65_536,
            max_receive_buffer: 1 << 20,
            window_autotune: true,
            ..Config::default()
        };
        let run = |backlog: usize| {
            let (mut s, chunk, mut buf) = (Stream::new(), vec![7u8; 32_768], vec![0u8; 32_768]);
            for _ in 0..backlog {
                s.push_partial(&chunk);
                s.finish_frame();
            }
            let mut ms = 0;
            for _ in 0..200 {
                s.push_partial(&chunk);
                assert!(s.finish_frame());
                let Read::Data { .. } = s.read(&mut buf, &cfg, Path { below: 1 << 20, ..at(ms, 100) }) else {
                    panic!("a frame to read")
                };
                // 32 KiB per ten 100 ms round trips: far slower than a window in four.
                ms += 1_000;
            }
            s.window(&cfg)
        };
        assert_eq!(run(0), 1 << 20);
        assert_eq!(run(3), 65_536);
    }
}
