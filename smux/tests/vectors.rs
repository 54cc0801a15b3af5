//! Every byte stream of `vectors/smux.json` (smux 1.5.16) and `vectors/new/smux_new.json` (1.5.52 and
//! 1.5.57 with kcptun's NEW config): decoded into frames and re-encoded byte-exact, and every recorded
//! exchange replayed through two of our sessions making the same calls, frame for frame.
//!
//! UPD `consumed` values depend on the reader's read sizes. Our `stream_read` returns at most one
//! received frame per call, as Go's `tryRead` does, so replaying the recorded read sizes (4096-byte
//! reads, `io.ReadFull` of 10000-byte pieces, one read per message) reproduces every UPD exactly and
//! nothing is skipped. What differs from Go by design is asserted in `frame_validation_cases` and
//! `half_close_1_5_52_and_1_5_57`.

use kcpd_smux::wire::{Cmd, Frame, FrameError, Repr};
use kcpd_smux::{CloseReason, Config, Error, Event, Role, Session};
use kcpd_vectors::{Value, det_bytes, hex, load, sha256};

use kcpd_time::Instant;

const T0: Instant = Instant::ZERO;

fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

fn cfg(version: u8, frame: usize, stream_buf: usize, half_close: bool) -> Config {
    Config {
        version,
        max_frame_size: frame,
        max_stream_buffer: stream_buf,
        max_send_buffer: 1 << 20,
        half_close,
        ..Config::default()
    }
}

/// smux.json's config: `smux.DefaultConfig()` with the version set.
fn deb(version: u8) -> Config {
    cfg(version, 32_768, 65_536, false)
}

/// smux_new.json's config: kcptun NEW (framesize 8192, streambuf as given).
fn new(version: u8, stream_buf: usize, half_close: bool) -> Config {
    cfg(version, 8192, stream_buf, half_close)
}

fn u(v: &Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Decode a byte stream into frames with our parser, re-encode each, and demand the same bytes.
fn roundtrip_stream(bytes: &[u8], version: u8) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (f, len) = Repr::parse_prefix(rest, version).unwrap();
        let mut out = vec![0u8; f.buffer_len()];
        f.emit(&mut out);
        assert_eq!(out, &rest[..len]);
        frames.push(out);
        rest = &rest[len..];
    }
    frames
}

/// One recorded frame: its header bytes and its payload (bytes, or SHA-256 for large ones).
#[derive(Debug, PartialEq)]
struct Rec {
    header: Vec<u8>,
    payload: Payload,
}

#[derive(Debug, PartialEq)]
enum Payload {
    Bytes(Vec<u8>),
    Sha256(String),
}

impl Rec {
    fn of_vector(f: &Value) -> Rec {
        let header_hex = f.get("header_hex").unwrap_or_else(|| &f["hex"]);
        let header = hex(header_hex)[..8].to_vec();
        let payload = if let Some(s) = f.get("payload_sha256") {
            Payload::Sha256(s.as_str().unwrap().to_owned())
        } else if let Some(h) = f.get("hex") {
            Payload::Bytes(hex(h)[8..].to_vec())
        } else {
            Payload::Bytes(f.get("payload_hex").map(hex).unwrap_or_default())
        };
        // The decoded fields agree with the header bytes.
        let h = kcpd_smux::wire::Header::new_checked(&header[..]).unwrap();
        assert_eq!(u64::from(h.version()), u(&f["ver"]));
        assert_eq!(u64::from(h.sid()), u(&f["sid"]));
        assert_eq!(u64::from(h.length()), u(f.get("length").unwrap_or_else(|| &f["len"])));
        let name = f.get("cmd_name").unwrap_or_else(|| &f["cmd"]).as_str().unwrap();
        assert_eq!(Cmd::from_u8(h.cmd_raw()).unwrap().name(), name);
        if let Some(c) = f.get("upd_consumed") {
            let Payload::Bytes(p) = &payload else { panic!("UPD payload") };
            let up = kcpd_smux::wire::Update::new_checked(&p[..]).unwrap();
            assert_eq!((u64::from(up.consumed()), u64::from(up.window())), (u(c), u(&f["upd_window"])));
        }
        Rec { header, payload }
    }

    fn of_ours(f: &[u8], sha_for: &Payload) -> Rec {
        let payload = match sha_for {
            Payload::Sha256(_) => Payload::Sha256(hex::encode(sha256(&f[8..]))),
            Payload::Bytes(_) => Payload::Bytes(f[8..].to_vec()),
        };
        Rec { header: f[..8].to_vec(), payload }
    }
}

/// Compare our frames with a recorded list.
fn assert_frames(ours: &[Vec<u8>], recorded: &Value, what: &str) {
    let want: Vec<Rec> = recorded.as_array().unwrap().iter().map(Rec::of_vector).collect();
    assert_eq!(
        ours.len(),
        want.len(),
        "{what}: frame count; ours {:?}",
        ours.iter().map(|f| hex::encode(&f[..8])).collect::<Vec<_>>()
    );
    for (i, (o, w)) in ours.iter().zip(&want).enumerate() {
        assert_eq!(Rec::of_ours(o, &w.payload), *w, "{what}: frame {i}");
    }
}

/// Two sessions and the frames each has sent, per direction (each net.Pipe write = one frame).
struct Pair {
    client: Session,
    server: Session,
    c2s: Vec<Vec<u8>>,
    s2c: Vec<Vec<u8>>,
}

impl Pair {
    fn new(c: Config, s: Config) -> Pair {
        Pair {
            client: Session::new(Role::Client, c, T0).unwrap(),
            server: Session::new(Role::Server, s, T0).unwrap(),
            c2s: Vec::new(),
            s2c: Vec::new(),
        }
    }

    /// Move everything due, both ways, until quiet.
    fn pump(&mut self) {
        let mut buf = vec![0u8; 8 + 65_535];
        loop {
            let mut moved = false;
            while let Some(n) = self.client.poll_transmit(T0, &mut buf) {
                self.server.handle_input(T0, &buf[..n]).unwrap();
                self.c2s.push(buf[..n].to_vec());
                moved = true;
            }
            while let Some(n) = self.server.poll_transmit(T0, &mut buf) {
                self.client.handle_input(T0, &buf[..n]).unwrap();
                self.s2c.push(buf[..n].to_vec());
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn accept(&mut self) -> u32 {
        loop {
            match self.server.poll_event() {
                Some(Event::Accepted(id)) => return id,
                Some(_) => {}
                None => panic!("nothing to accept"),
            }
        }
    }
}

/// A Go `Read(buf[..size])` loop until EOF; frames flow between reads (net.Pipe is synchronous).
fn read_to_eof(p: &mut Pair, server_side: bool, id: u32, size: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; size];
    loop {
        let s = if server_side { &mut p.server } else { &mut p.client };
        match s.stream_read(id, &mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(Error::WouldBlock) => p.pump(),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One Go `Read` that returns data (pumping until some arrives).
fn read_once(p: &mut Pair, server_side: bool, id: u32, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    loop {
        let s = if server_side { &mut p.server } else { &mut p.client };
        match s.stream_read(id, &mut buf) {
            Ok(n) if n > 0 => return buf[..n].to_vec(),
            Err(Error::WouldBlock) => p.pump(),
            r => panic!("read: {r:?}"),
        }
    }
}

/// Write everything (pumping whenever our send buffer or the peer's window is full).
fn write_all(p: &mut Pair, id: u32, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        off += p.client.stream_write(id, &data[off..]).unwrap();
        p.pump();
    }
}

/// hello/world: client opens 3, writes "hello"; server reads it, writes "world"; client reads, closes;
/// server reads EOF, closes.
fn hello_world(p: &mut Pair) {
    let id = p.client.open_stream().unwrap();
    assert_eq!(id, 3);
    p.pump();
    assert_eq!(p.accept(), 3);
    assert_eq!(p.client.stream_write(3, b"hello"), Ok(5));
    p.pump();
    assert_eq!(read_once(p, true, 3, 4096), b"hello");
    assert_eq!(p.server.stream_write(3, b"world"), Ok(5));
    p.pump();
    assert_eq!(read_once(p, false, 3, 4096), b"world");
    p.client.stream_close(3).unwrap();
    p.pump();
    assert_eq!(read_to_eof(p, true, 3, 4096), b"");
    p.server.stream_close(3).unwrap();
    p.pump();
}

#[test]
fn smux_1_5_16_frame_examples_and_streams_roundtrip() {
    let v = load("smux.json");
    let versions = v["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    for ver in versions {
        let version = u(&ver["version"]) as u8;
        let examples = ver["frame_examples"].as_object().unwrap();
        assert_eq!(examples.len(), if version == 2 { 5 } else { 4 });
        for f in examples.values() {
            let bytes = hex(&f["frame_hex_or_header"]);
            assert_eq!(roundtrip_stream(&bytes, version).len(), 1);
            Rec::of_vector(f);
        }
        let hw = &ver["hello_world_session"];
        for (dir, frames) in
            [("client_to_server", "client_to_server_frames"), ("server_to_client", "server_to_client_frames")]
        {
            let stream = hex(&hw[format!("{dir}_hex")]);
            let ours = roundtrip_stream(&stream, version);
            assert_frames(&ours, &hw[frames], dir);
        }
        for f in ver["large_write_session"]["client_to_server_frames"].as_array().unwrap() {
            Rec::of_vector(f);
        }
        assert_eq!(roundtrip_stream(&hex(&ver["keepalive_nop_frame_hex"]), version).len(), 1);
    }
}

#[test]
fn smux_1_5_16_exchanges_replayed() {
    let v = load("smux.json");
    for ver in v["versions"].as_array().unwrap() {
        let version = u(&ver["version"]) as u8;
        let mut p = Pair::new(deb(version), deb(version));
        hello_world(&mut p);
        let hw = &ver["hello_world_session"];
        assert_eq!(p.c2s.concat(), hex(&hw["client_to_server_hex"]), "v{version} hello c2s");
        assert_eq!(p.s2c.concat(), hex(&hw["server_to_client_hex"]), "v{version} hello s2c");

        // large_write_session: hello/world, then stream 5 carries detBytes("smux-40000") in one write and
        // is closed; the server reads 4096 bytes at a time until EOF, then closes.
        let lw = &ver["large_write_session"];
        let mut p = Pair::new(deb(version), deb(version));
        hello_world(&mut p);
        let data = det_bytes("smux-40000", 40_000);
        let id = p.client.open_stream().unwrap();
        assert_eq!(id, 5);
        assert_eq!(p.client.stream_write(id, &data), Ok(40_000));
        p.client.stream_close(id).unwrap();
        p.pump();
        assert_eq!(p.accept(), 5);
        assert_eq!(read_to_eof(&mut p, true, id, 4096), data);
        p.server.stream_close(id).unwrap();
        p.pump();
        assert_frames(&p.c2s, &lw["client_to_server_frames"], &format!("v{version} large c2s"));
        assert_frames(&p.s2c, &lw["server_to_client_frames"], &format!("v{version} large s2c"));
        // Same PSH payloads as Go, byte for byte (the vector gives their SHA-256).
        let psh: Vec<&Vec<u8>> = p.c2s.iter().filter(|f| f[1] == 2 && f[4] == 5).collect();
        assert_eq!(psh.iter().map(|f| &f[8..]).collect::<Vec<_>>().concat(), data);

        // keepalive: a NOP every KeepAliveInterval.
        let mut s = Session::new(Role::Client, deb(version), T0).unwrap();
        s.handle_timeout(ms(10_000));
        let mut buf = [0u8; 64];
        let n = s.poll_transmit(ms(10_000), &mut buf).unwrap();
        assert_eq!(buf[..n], hex(&ver["keepalive_nop_frame_hex"]));
        assert_frames(&[buf[..n].to_vec()], &ver["keepalive_nop_frame"], "NOP");
    }
}

fn new_versions(v: &Value) -> [(&'static str, &Value); 2] {
    [("1.5.52", &v["v1_5_52"]), ("1.5.57", &v["v1_5_57"])]
}

#[test]
fn smux_new_hello_world_and_large_writes_replayed() {
    let v = load("new/smux_new.json");
    for (name, s) in new_versions(&v) {
        for (key, version) in [("hello_world_v2", 2u8), ("hello_world_v1", 1)] {
            let hw = &s[key];
            assert_eq!(u(&hw["version"]), u64::from(version));
            for dir in ["client_to_server", "server_to_client"] {
                for f in hw[dir].as_array().unwrap() {
                    roundtrip_stream(&hex(&f["hex"]), version);
                }
            }
            let mut p = Pair::new(new(version, 2 << 20, false), new(version, 2 << 20, false));
            hello_world(&mut p);
            assert_frames(&p.c2s, &hw["client_to_server"], &format!("{name} {key} c2s"));
            assert_frames(&p.s2c, &hw["server_to_client"], &format!("{name} {key} s2c"));
        }
        // A 200000-byte write in one call, read with io.ReadFull in 10000-byte pieces: 8192-byte PSH frames
        // and the server's UPDs for streambuf 2 MiB (one, at the first read) and 64 KiB (every 32 KiB).
        for key in ["large_write_v2_kcptun_streambuf", "large_write_v2_streambuf_65536"] {
            let lw = &s[key];
            let stream_buf = u(&lw["MaxStreamBuffer"]) as usize;
            let mut p = Pair::new(new(2, stream_buf, false), new(2, stream_buf, false));
            let data = det_bytes("smux-large", 200_000);
            let id = p.client.open_stream().unwrap();
            write_all(&mut p, id, &data);
            assert_eq!(p.accept(), id);
            let mut got = Vec::new();
            while got.len() < data.len() {
                // io.ReadFull(stream, buf[:10000])
                let mut piece = Vec::new();
                while piece.len() < 10_000 {
                    piece.extend(read_once(&mut p, true, id, 10_000 - piece.len()));
                }
                got.extend(piece);
            }
            p.pump();
            assert_eq!(got, data);
            assert_frames(&p.c2s, &lw["client_to_server"], &format!("{name} {key} c2s"));
            assert_frames(&p.s2c, &lw["server_to_client"], &format!("{name} {key} s2c"));
        }
    }
}

/// How one validation case ended, in the vector's terms.
#[derive(Debug, PartialEq)]
struct Outcome {
    accepted: Vec<(u32, String, &'static str)>,
    accept_error_after: &'static str,
    wrote: Option<Vec<String>>,
}

impl Outcome {
    fn of_vector(r: &Value) -> Outcome {
        let end = |s: &str| match s {
            "EOF" => "EOF",
            "timeout" => "timeout",
            "invalid protocol" => "invalid protocol",
            other => panic!("unexpected outcome {other}"),
        };
        Outcome {
            accepted: r["accepted_streams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        u(&a["sid"]) as u32,
                        a["data_utf8"].as_str().unwrap().to_owned(),
                        end(a["read_end"].as_str().unwrap()),
                    )
                })
                .collect(),
            accept_error_after: end(r["accept_error_after"].as_str().unwrap()),
            wrote: r["server_wrote_hex"].as_array().map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect()),
        }
    }
}

/// Inject `input` into a fresh server session (in chunks of `chunk` bytes), then accept every stream
/// and read it until it ends, like the Go generator.
fn run_case(version: u8, input: &[u8], chunk: usize) -> (Outcome, Option<FrameError>) {
    let mut s = Session::new(Role::Server, new(version, 2 << 20, false), T0).unwrap();
    let mut err = None;
    for c in input.chunks(chunk) {
        match s.handle_input(T0, c) {
            Ok(()) => {}
            Err(Error::Protocol(e)) => {
                err = Some(e);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let mut accepted = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(ev) = s.poll_event() {
        let Event::Accepted(id) = ev else { continue };
        let mut data = Vec::new();
        let end = loop {
            match s.stream_read(id, &mut buf) {
                Ok(0) => break "EOF",
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(Error::WouldBlock) => break "timeout",
                Err(Error::SessionClosed(CloseReason::Protocol(_))) => break "invalid protocol",
                Err(e) => panic!("{e}"),
            }
        };
        accepted.push((id, String::from_utf8(data).unwrap(), end));
    }
    let accept_error_after = if s.is_closed() { "invalid protocol" } else { "timeout" };
    let mut out = [0u8; 64];
    let wrote: Vec<String> =
        std::iter::from_fn(|| s.poll_transmit(T0, &mut out).map(|n| hex::encode(&out[..n]))).collect();
    (Outcome { accepted, accept_error_after, wrote: (!wrote.is_empty()).then_some(wrote) }, err)
}

/// The 16 raw-injection cases. We follow smux 1.5.57 in every case; 1.5.52 differs in two (it does not
/// check SYN/FIN/NOP/UPD lengths): "SYN 3 with length 5" (1.5.52 creates stream 3 before the payload,
/// read as the next header, fails) and "UPD with length field 0" (1.5.52 always reads 8 UPD bytes and so
/// accepts the stream). Both are frames no Go smux sends (spec §8 trap 26).
#[test]
fn frame_validation_cases() {
    let v = load("new/smux_new.json");
    let expected_error: [(&str, Option<FrameError>); 16] = [
        ("valid", None),
        ("version byte 1", Some(FrameError::BadVersion { got: 1, want: 2 })),
        ("unknown cmd 5", Some(FrameError::UnknownCmd(5))),
        ("UPD (cmd 4) sent to a version-1", Some(FrameError::UpdOnV1)),
        ("NOP with length 4", Some(FrameError::ControlWithPayload { cmd: Cmd::Nop, len: 4 })),
        ("SYN 3 with length 5", Some(FrameError::ControlWithPayload { cmd: Cmd::Syn, len: 5 })),
        ("FIN for sid 3 with length 3", Some(FrameError::ControlWithPayload { cmd: Cmd::Fin, len: 3 })),
        ("UPD with length field 0", Some(FrameError::BadUpdLength(0))),
        ("UPD with length 12", Some(FrameError::BadUpdLength(12))),
        ("PSH with length 0", None),
        ("PSH to a sid that was never opened", None),
        ("duplicate SYN", None),
        ("FIN for a sid that was never opened", None),
        ("PSH after FIN", None),
        ("SYN with sid 0", None),
        ("even (server-side) sid 4", None),
    ];
    let cases_57 = v["v1_5_57"]["frame_validation"].as_array().unwrap();
    let cases_52 = v["v1_5_52"]["frame_validation"].as_array().unwrap();
    assert_eq!(cases_57.len(), 16);
    assert_eq!(cases_52.len(), 16);
    for (i, ((c57, c52), (prefix, want_err))) in cases_57.iter().zip(cases_52).zip(expected_error).enumerate() {
        let name = c57["case"].as_str().unwrap();
        assert!(name.starts_with(prefix), "case {i}: {name}");
        assert_eq!(c52["case"], c57["case"]);
        assert_eq!(c52["input_hex"], c57["input_hex"]);
        let version = u(&c57["session_version"]) as u8;
        let input = hex(&c57["input_hex"]);
        // Our wire parser alone finds the same first error.
        let mut rest = &input[..];
        let mut parse_err = None;
        while !rest.is_empty() {
            match Repr::parse_prefix(rest, version) {
                Ok((_, n)) => rest = &rest[n..],
                Err(e) => {
                    parse_err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(parse_err, want_err, "{name}: parser");
        let want = Outcome::of_vector(&c57["result"]);
        assert!(!c57["result"]["session_closed_by_itself"].as_bool().unwrap());
        for chunk in [input.len(), 1, 3, 8] {
            let (got, err) = run_case(version, &input, chunk);
            assert_eq!(err, want_err, "{name}: session error (chunk {chunk})");
            assert_eq!(got, want, "{name}: as smux 1.5.57 (chunk {chunk})");
        }
        let old = Outcome::of_vector(&c52["result"]);
        if prefix.starts_with("SYN 3 with length 5") || prefix.starts_with("UPD with length field 0") {
            assert_ne!(old, want, "{name}: 1.5.52 is the lenient one here");
        } else {
            assert_eq!(old, want, "{name}: 1.5.52 agrees");
        }
    }
}

/// Stream.CloseWrite (1.5.57) with `half_close: true`, and Close (1.5.52) with `half_close: false`.
#[test]
fn half_close_1_5_52_and_1_5_57() {
    let v = load("new/smux_new.json");
    for (name, s) in new_versions(&v) {
        let hc = &s["half_close"];
        let modern = name == "1.5.57";
        let c = new(2, 2 << 20, modern);
        let mut p = Pair::new(c.clone(), c);
        let id = p.client.open_stream().unwrap();
        assert_eq!(p.client.stream_write(id, b"request"), Ok(7));
        if modern {
            p.client.stream_close_write(id).unwrap();
        } else {
            p.client.stream_close(id).unwrap();
        }
        p.pump();
        assert_eq!(p.accept(), id);
        let got = read_once(&mut p, true, id, 4096);
        assert_eq!(got, hc["server_read_1"].as_str().unwrap().as_bytes());
        assert_eq!(hc["server_read_2_error"], "EOF");
        assert_eq!(read_to_eof(&mut p, true, id, 4096), b"");
        let w = p.server.stream_write(id, b"response");
        if modern {
            assert_eq!(w, Ok(u(&hc["server_write_after_peer_FIN"]["n"]) as usize));
        } else {
            // Go: n 0, io.EOF.
            assert_eq!(hc["server_write_after_peer_FIN"]["err"], "EOF");
            assert_eq!(w, Err(Error::PeerClosed(id)));
        }
        p.server.stream_close(id).unwrap();
        p.pump();
        if modern {
            assert_eq!(
                read_to_eof(&mut p, false, id, 4096),
                hc["client_read_after_own_half_close"]["data_utf8"].as_str().unwrap().as_bytes()
            );
            p.client.stream_close(id).unwrap();
            p.pump();
        } else {
            // Go reads EOF on its own closed stream; ours has forgotten the id.
            assert_eq!(hc["client_read_after_own_half_close"]["err"], "EOF");
            assert_eq!(p.client.stream_read(id, &mut [0u8; 16]), Err(Error::UnknownStream(id)));
        }
        assert_frames(&p.c2s, &hc["client_to_server"], &format!("{name} half-close c2s"));
        assert_frames(&p.s2c, &hc["server_to_client"], &format!("{name} half-close s2c"));
        assert_eq!((p.client.num_streams(), p.server.num_streams()), (0, 0));
    }
}

/// Every `hex` field anywhere in smux_new.json outside the validation inputs is a valid frame.
#[test]
fn smux_new_every_recorded_frame_roundtrips() {
    fn walk(v: &Value, version: u8, n: &mut usize) {
        match v {
            Value::Object(m) => {
                let version = m.get("version").or(m.get("ver")).map(|x| u(x) as u8).unwrap_or(version);
                if let Some(Value::String(h)) = m.get("hex") {
                    let bytes = hex::decode(h).unwrap();
                    let f = Frame::new_checked(&bytes[..]).unwrap();
                    assert_eq!(f.total_len(), bytes.len());
                    roundtrip_stream(&bytes, version);
                    *n += 1;
                }
                for (k, x) in m {
                    if k != "frame_validation" {
                        walk(x, version, n);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, version, n)),
            _ => {}
        }
    }
    let v = load("new/smux_new.json");
    let mut n = 0;
    walk(&v, 2, &mut n);
    assert!(n > 40, "only {n} frames found");
}
