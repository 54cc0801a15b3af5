//! Fuzz harness bodies, shared by the cargo-fuzz target (`tools/fuzz`, `smux_frames`) and the corpus
//! replay test that runs on stable.

use crate::wire::{Cmd, HEADER_SIZE, MAX_FRAME, Repr, UPD_SIZE};
use crate::{Config, Error, Event, Role, Session};

/// Any byte stream into a session. Byte 0 picks the configuration (version, half-close, tiny buffers,
/// role); then each record is one control byte (chunk size class, time step, how the application
/// behaves) and that many input bytes. After every chunk the harness plays the application (accepts,
/// reads, writes, closes), drains `poll_transmit` and checks that every frame we emit passes the strict
/// validation of our own version and that the session's internal accounting holds.
pub fn frames(data: &[u8]) {
    let Some((&cfg, mut rest)) = data.split_first() else { return };
    let mut config = if cfg & 1 == 0 { Config::kcptun_deb() } else { Config::kcptun_new() };
    config.half_close = cfg & 2 != 0;
    if cfg & 4 != 0 {
        // Tiny budgets reach token exhaustion, window stalls and short frames within a few frames.
        config.max_receive_buffer = 64;
        config.max_stream_buffer = 32;
        config.max_send_buffer = 24;
        config.max_frame_size = 7;
    }
    let role = if cfg & 8 != 0 { Role::Client } else { Role::Server };
    // Stream windows that grow (kcpd's --cc bbr) on the high half of the clock choices.
    config.window_autotune = cfg & 0x80 != 0;
    // Start anywhere on KCP's wrapping clock, near its wrap too.
    let mut now = kcpd_time::Instant::from_millis(u64::from(u32::from(cfg >> 4).wrapping_mul(0x1111_1111)));
    // The configurations above are valid by construction (presets with consistent small overrides).
    let mut s = Session::new(role, config.clone(), now).expect("harness configs are valid");
    let mut out = vec![0u8; MAX_FRAME];
    let mut read_buf = [0u8; 300];
    while let Some((&ctl, tail)) = rest.split_first() {
        let want = match ctl >> 6 {
            0 => 1 + usize::from(ctl & 7),
            1 => 1 + usize::from(ctl & 63),
            2 => 1 + usize::from(ctl & 63) * 64,
            _ => tail.len(),
        };
        let (chunk, next) = tail.split_at(want.min(tail.len()));
        rest = next;
        now += kcpd_time::Duration::from_millis(u64::from(ctl & 0x30) * 700);
        s.set_path(now, u32::from(ctl & 0x0f) * 10, u32::from(ctl >> 4) << 16);
        s.handle_timeout(now);
        let was_closed = s.is_closed();
        match s.handle_input(now, chunk) {
            Ok(()) => assert!(!was_closed),
            Err(Error::Protocol(_)) => assert!(!was_closed && s.is_closed()),
            Err(Error::SessionClosed(_)) => assert!(was_closed),
            Err(e) => panic!("handle_input returned {e:?}"),
        }
        if ctl & 1 != 0 && !s.is_closed() {
            let _ = s.open_stream();
        }
        while let Some(ev) = s.poll_event() {
            match ev {
                Event::Accepted(id) | Event::Writable(id) => {
                    if ctl & 2 != 0 {
                        let _ = s.stream_write(id, &chunk[..chunk.len().min(100)]);
                    }
                }
                Event::Readable(id) => {
                    let size = 1 + usize::from(ctl) % read_buf.len();
                    loop {
                        match s.stream_read(id, &mut read_buf[..size]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => assert!(n <= size),
                        }
                    }
                }
                Event::PeerFinished(id) => {
                    let r = if ctl & 4 != 0 { s.stream_close(id) } else { s.stream_close_write(id) };
                    assert!(r.is_ok() || s.is_closed());
                }
                Event::Closed(_) => {}
                Event::SessionClosed(_) => assert!(s.is_closed()),
            }
        }
        s.check_invariants();
        let mut frames = 0usize;
        while let Some(n) = s.poll_transmit(now, &mut out) {
            let (f, len) = Repr::parse_prefix(&out[..n], config.version).expect("we emit only valid frames");
            assert_eq!(len, n);
            match f.cmd {
                Cmd::Psh => assert!(!f.payload.is_empty() && f.payload.len() <= config.max_frame_size),
                Cmd::Upd => assert_eq!((config.version, n), (2, HEADER_SIZE + UPD_SIZE)),
                Cmd::Nop => assert_eq!(f.sid, 0),
                Cmd::Syn | Cmd::Fin => {}
            }
            frames += 1;
            assert!(frames < 1 << 20, "poll_transmit never runs dry");
        }
        s.check_invariants();
        if s.is_closed() {
            assert!(!s.wants_input() && s.poll_timeout().is_none());
        }
    }
}
