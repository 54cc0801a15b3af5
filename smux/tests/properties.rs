//! Property tests: no input panics a session; chunking never changes what a byte stream does; the frame
//! codec round-trips.

use kcpd_smux::wire::{Cmd, Repr, UPD_SIZE};
use kcpd_smux::{Config, Error, Event, Role, Session};
use proptest::prelude::*;

use kcpd_time::Instant;

const T0: Instant = Instant::ZERO;

/// A well-formed frame with version byte `version` (UPD included, which a v1 session rejects).
fn frame_strategy(version: u8) -> impl Strategy<Value = Vec<u8>> {
    (proptest::sample::select(Cmd::ALL.to_vec()), 0u32..12, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(
        move |(cmd, sid, mut payload)| {
            match cmd {
                Cmd::Psh => {}
                Cmd::Upd => payload.resize(UPD_SIZE, 0),
                _ => payload.clear(),
            }
            let r = Repr { version, cmd, sid, payload: &payload };
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out);
            out
        },
    )
}

/// Events, data read per stream, frames sent, and whether the input failed.
type Observed = (Vec<Event>, Vec<(u32, Vec<u8>)>, Vec<Vec<u8>>, bool);

/// Everything observable after feeding `stream` in the given chunk sizes and reading all streams.
fn observe(version: u8, stream: &[u8], chunks: &[usize]) -> Observed {
    let cfg = Config { version, max_receive_buffer: 1 << 20, max_stream_buffer: 1024, ..Config::default() };
    let mut s = Session::new(Role::Server, cfg, T0).unwrap();
    let mut rest = stream;
    let mut i = 0;
    let mut failed = false;
    while !rest.is_empty() && !failed {
        let n = chunks.get(i).copied().unwrap_or(rest.len()).clamp(1, rest.len());
        i += 1;
        failed = s.handle_input(T0, &rest[..n]).is_err();
        rest = &rest[n..];
    }
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    let mut reads = Vec::new();
    let mut buf = [0u8; 100];
    for e in &events {
        if let Event::Accepted(id) = e {
            loop {
                match s.stream_read(*id, &mut buf) {
                    Ok(0) | Err(Error::WouldBlock) | Err(Error::SessionClosed(_)) => break,
                    Ok(n) => reads.push((*id, buf[..n].to_vec())),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
    let mut out = [0u8; 64];
    let sent = std::iter::from_fn(|| s.poll_transmit(T0, &mut out).map(|n| out[..n].to_vec())).collect();
    (events, reads, sent, failed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Any byte sequence into a session (through the fuzz harness: random chunking, an application
    /// reacting to every event, internal invariants checked after every step) never panics.
    #[test]
    fn any_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        kcpd_smux::fuzzing::frames(&data);
    }

    /// Valid frames with random corruption, in random chunks: the parser gets deep into the state
    /// machine before anything fails.
    #[test]
    fn mostly_valid_frames_never_panic(
        (version, frames) in (1u8..=2).prop_flat_map(|v| (Just(v), proptest::collection::vec(frame_strategy(v), 0..40))),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        chunks in proptest::collection::vec(1usize..=64, 1..100),
        cfg_byte in any::<u8>(),
    ) {
        let mut stream: Vec<u8> = frames.concat();
        for (at, x) in flips {
            if !stream.is_empty() {
                let i = at % stream.len();
                stream[i] ^= x;
            }
        }
        // The harness's record format: a control byte (class 1: chunk of 1 + (ctl & 63) bytes), then the
        // chunk.
        let mut data = vec![(cfg_byte & !1) | (version - 1)];
        let mut rest = &stream[..];
        for &c in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = c.min(rest.len());
            data.push(0x40 | (n as u8 - 1));
            data.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        kcpd_smux::fuzzing::frames(&data);
    }

    /// The same byte stream in any chunking gives the same events, data, output and verdict.
    #[test]
    fn chunking_does_not_matter(
        (version, frames) in (1u8..=2).prop_flat_map(|v| (Just(v), proptest::collection::vec(frame_strategy(v), 1..30))),
        chunks in proptest::collection::vec(1usize..40, 0..200),
    ) {
        let stream: Vec<u8> = frames.concat();
        let whole = observe(version, &stream, &[]);
        let bytewise = observe(version, &stream, &vec![1; stream.len()]);
        let random = observe(version, &stream, &chunks);
        prop_assert_eq!(&whole, &bytewise);
        prop_assert_eq!(&whole, &random);
        // Well-formed frames fail only as UPD on a v1 session.
        let has_upd = frames.iter().any(|f| f[1] == Cmd::Upd as u8);
        prop_assert_eq!(whole.3, version == 1 && has_upd);
    }

    /// emit then parse gives the frame back.
    #[test]
    fn codec_roundtrip(frame in frame_strategy(2)) {
        let (r, n) = Repr::parse_prefix(&frame, 2).unwrap();
        prop_assert_eq!(n, frame.len());
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut out);
        prop_assert_eq!(&out, &frame);
        prop_assert_eq!(Repr::parse_prefix(&frame, 1), Err(kcpd_smux::FrameError::BadVersion { got: 2, want: 1 }));
    }
}
