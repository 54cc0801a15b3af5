//! Fuzz harness bodies, shared by the cargo-fuzz targets (`tools/fuzz`) and the corpus replay tests.

use std::sync::Arc;

use kcpd_crypto::{Method, NonceGen, PacketCrypto};

use std::net::SocketAddr;

use kcpd_time::{Duration, Instant};

use crate::proto::conn::{ConnConfig, ConnEvent, Upper};
use crate::proto::endpoint::{DatagramEvent, Endpoint, ListenConfig, Migration};
use crate::proto::front::{FrontConfig, FrontDoor};
use crate::proto::kcp::{Kcp, Mode};
use crate::proto::session::SessionConfig;
use crate::proto::snappy;

/// Records of `len u16 LE | byte | bytes` (the byte: a time step or an address).
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 3 {
            return None;
        }
        let len = u16::from_le_bytes([data[0], data[1]]) as usize % 1600;
        let tag = data[2];
        data = &data[3..];
        let rec = &data[..len.min(data.len())];
        data = &data[rec.len()..];
        Some((tag, rec))
    })
}

/// Arbitrary datagrams into a KCP (segment input), then through the shipped receive path ([`endpoint`]).
/// Nothing may panic; reads stay in bounds.
pub fn kcp_input(data: &[u8]) {
    let Some((&cfg, rest)) = data.split_first() else { return };
    // KCP's wrapping millisecond clock wraps 2 s in.
    let mut now = Instant::from_millis(u64::from(u32::MAX) - 2000);
    let mut k = Kcp::new(u32::from_le_bytes([0x44, 0x33, 0x22, 0x11]), now);
    k.set_stream(cfg & 1 == 1);
    k.set_nodelay(Mode::Fast3.nodelay());
    k.set_wndsize(1 + u32::from(cfg >> 4), 1 + u32::from(cfg & 0x0f));
    // The congestion controller's hooks: an in-flight cap, receive-window autotuning, ACK-only output.
    let cc = cfg & 6 == 6;
    if cc {
        k.set_cc_wnd(2 + u32::from(cfg >> 4));
        k.set_rcv_autotune(true);
        k.set_rto_floor(u32::from(cfg));
    }
    let mut out = vec![0u8; k.mtu()];
    let mut rx = [0u8; 3000];
    for (tag, rec) in records(rest) {
        now += Duration::from_millis(u64::from(tag) * 7);
        let _ = k.input(now, rec, tag & 1 == 0);
        if let Some(rs) = k.rate_sample() {
            assert!(rs.newly_acked > 0 && rs.delivered <= k.delivered());
        }
        assert!(k.rcv_wnd() <= crate::proto::kcp::AUTO_RCV_WND_MAX.max(16));
        if cc && tag & 4 != 0 {
            while let Some(n) = k.poll_acks(now, &mut out) {
                assert!(n <= k.mtu());
            }
        }
        while let Some(n) = k.poll_transmit(now, &mut out) {
            assert!(n <= k.mtu());
        }
        let _ = k.recv(&mut rx);
        if tag & 2 == 0 {
            let _ = k.send(&rx[..usize::from(tag)]);
        }
    }
    endpoint(cfg, rest);
}

/// The `endpoint` fuzz target: a configuration byte, then datagram records (see [`endpoint`]).
pub fn endpoint_input(data: &[u8]) {
    if let Some((&cfg, rest)) = data.split_first() {
        endpoint(cfg, rest);
    }
}

/// Records of `len u16 LE | tag | bytes` with lengths up to 65535 (datagrams of any size UDP carries).
fn datagrams(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 3 {
            return None;
        }
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let tag = data[2];
        data = &data[3..];
        let rec = &data[..len.min(data.len())];
        data = &data[rec.len()..];
        Some((tag, rec))
    })
}

/// The shipped receive path: arbitrary datagrams (0..=65535 bytes) from arbitrary addresses into an
/// [`Endpoint`] with a listening socket and a dialled conversation, every conversation driven as a shard
/// drives it ([`Conn`](crate::proto::conn::Conn) timers, pump, events, stream reads, transmit).
/// Invariants: nothing panics; every datagram is either taken by a conversation or counted as dropped
/// (InPkts, or InErrs where kcp-go counts only that); every datagram over 1500 bytes is dropped unopened;
/// the front door (replay filter, recent convs, admission caps small enough to be hit) keeps the
/// conversations under its cap; a conversation holds at most twice its receive window in received
/// segments, each at most 1500 bytes.
pub fn endpoint(cfg: u8, data: &[u8]) {
    let method = if cfg & 2 == 0 { Method::Null } else { Method::None };
    let crypto = Arc::new(PacketCrypto::from_password(method, "fuzz"));
    let scfg = SessionConfig {
        data_shards: if cfg & 4 == 0 { 10 } else { 0 },
        parity_shards: if cfg & 4 == 0 { 3 } else { 0 },
        ..SessionConfig::kcptun_server()
    };
    // Close-wait bits both set: the sender runs bbr (pacing, in-flight cap, windows that grow).
    let scfg =
        SessionConfig { cc: if cfg >> 6 == 3 { crate::proto::cc::CcMode::Bbr } else { Default::default() }, ..scfg };
    let mut conn = ConnConfig::new(crypto, scfg);
    conn.smux.window_autotune = cfg >> 6 == 3;
    conn.compress = cfg & 8 != 0;
    conn.close_wait_ms = u32::from(cfg >> 6) * 100;
    conn.rate_limit = if cfg & 32 != 0 { 200_000 } else { 0 };
    let conn = Arc::new(conn);
    let upper = match cfg >> 4 & 3 {
        0 => Upper::Raw,
        v => Upper::Smux { role: kcpd_smux::Role::Server, version: v - 1 },
    };
    let front = FrontConfig {
        max_sessions: 6,
        max_per_source: 3,
        new_per_source: (2, 4),
        replay_entries: 512,
        conv_entries: 64,
        ..FrontConfig::default()
    };
    // cfg bit 0: conversations move to a new peer address, between two endpoints (shards) sharing the
    // front door — forced on for these malleable methods, to reach the migration paths.
    let migrate = cfg & 1 != 0;
    let front = Arc::new(FrontDoor::new(front));
    let mut listen = ListenConfig::new(conn.clone(), upper);
    if migrate {
        listen.migration = Migration::Anywhere;
    }
    let listen = Arc::new(listen);
    let mut eps = [Endpoint::with_shard(front.clone(), 0), Endpoint::with_shard(front, 1)];
    eps[0].listen(0, listen.clone()).expect("valid configuration");
    eps[1].listen(0, listen).expect("valid configuration");
    let peer = SocketAddr::from(([10, 0, 0, 1], 29900));
    let client_upper = match upper {
        Upper::Raw => Upper::Raw,
        Upper::Smux { .. } => Upper::Smux { role: kcpd_smux::Role::Client, version: 2 },
    };
    let mut now = Instant::from_millis(u64::from(u32::MAX) - 2000);
    eps[0].connect(now, 1, peer, 0x1122_3344, conn.clone(), client_upper).expect("valid configuration");
    let mut rng = NonceGen::from_seed([0; 32]);
    let mut buf = vec![0u8; 65536];
    let mut arena = vec![0u8; 16 * 1500];
    let mut lens = [0usize; 16];
    let mut rx = vec![0u8; 4096];
    let mut handed = 0u64;
    let mut oversize = 0u64;
    for (tag, rec) in datagrams(data) {
        oversize += u64::from(rec.len() > crate::proto::endpoint::MAX_DATAGRAM);
        now += Duration::from_millis(u64::from(tag >> 4) * 13);
        // Few addresses (so conversations meet again) on either socket; with migration, "socket 1" is the
        // second endpoint's listening socket.
        let (e, socket) = match (migrate, tag & 1) {
            (true, 1) => (1, 0),
            (_, s) => (0, usize::from(s)),
        };
        let from = SocketAddr::from(([10, 0, 0, 1 + (tag >> 1 & 1)], 29900 + u16::from(tag >> 2 & 3)));
        buf[..rec.len()].copy_from_slice(rec);
        let ev = eps[e].handle_datagram(now, socket, from, &mut buf[..rec.len()]);
        handed += 1;
        match ev {
            DatagramEvent::New(_) | DatagramEvent::Migrated(_) => {}
            DatagramEvent::Elsewhere(ho) => {
                // What the two shards' workers do: ask the one that has it, move it if it may.
                let plain = buf[ho.range()].to_vec();
                assert_ne!(ho.from.shard, e, "asked itself");
                if let Ok(m) = eps[ho.from.shard].migrate_out(now, ho.from.handle, ho.len, &plain) {
                    let moved = eps[e].migrate_in(now, m, socket, from, ho.len, &plain);
                    assert!(moved.is_some(), "a listening socket of the group refused a conversation");
                }
            }
            _ => {}
        }
        for ep in &mut eps {
            while ep.poll_retired().is_some() {}
            while ep.accept().is_some() {}
        }
        let (a, b) = (eps[0].stats(), eps[1].stats());
        let pkts = eps[0].snmp().in_pkts + eps[1].snmp().in_pkts;
        let other = a.foreign_src + a.unknown_socket + b.foreign_src + b.unknown_socket;
        assert_eq!(pkts + other, handed, "a datagram went uncounted");
        assert_eq!(a.oversize + b.oversize, oversize, "an oversized datagram was opened");
        let live = eps[0].len() + eps[1].len();
        assert!(live <= 6 + 1, "{live} conversations past the cap of 6 (+1 dialled)");
        for ep in &mut eps {
            let mut dead = Vec::new();
            for (h, c) in ep.iter_mut() {
                c.handle_timeout(now);
                c.pump(now);
                while let Some(e) = c.poll_event() {
                    match e {
                        ConnEvent::StreamOpened(sid) => c.stream_attach(Some(sid), false),
                        ConnEvent::Closed { .. } => dead.push(h),
                        _ => {}
                    }
                }
                for sid in [None, Some(1), Some(3)] {
                    if c.is_raw() == sid.is_none() {
                        let _ = c.stream_read(sid, &mut rx);
                        if c.stream_over(sid, now) {
                            c.stream_detach(sid);
                        }
                    }
                }
                c.pump(now);
                while c.poll_transmit(now, &mut rng, &mut arena, &mut lens) == lens.len() {}
                let _ = c.poll_timeout(now);
                let (held, wnd) = (c.session().kcp().received_segments(), c.config().session.rcv_wnd as usize);
                assert!(held <= 2 * wnd, "{held} received segments held, window {wnd}");
            }
            for h in dead {
                ep.remove(h);
            }
        }
    }
}

/// An arbitrary byte stream into the snappy framing decoder, fed in pieces; decoded chunks never exceed
/// 64 KiB; whatever decodes re-encodes and decodes back to the same bytes.
pub fn snappy_frames(data: &[u8]) {
    let mut d = snappy::Decoder::new();
    let mut decoded = Vec::new();
    for piece in data.chunks(1 + data.first().copied().unwrap_or(0) as usize) {
        d.feed(piece);
        while let Ok(Some(x)) = d.decode() {
            assert!(x.len() <= snappy::MAX_BLOCK);
            decoded.extend_from_slice(x);
        }
    }
    let mut enc = snappy::Encoder::new();
    let mut framed = Vec::new();
    enc.encode(&decoded, &mut framed);
    let mut d = snappy::Decoder::new();
    d.feed(&framed);
    let mut again = Vec::new();
    while let Some(x) = d.decode().expect("own encoding decodes") {
        again.extend_from_slice(x);
    }
    assert_eq!(again, decoded);
}

/// Captured packets into fake TCP's parser and flow table (`--tcp`): records of arbitrary bytes as IPv4
/// packets (tag bit 0) or bare TCP segments, from one of eight peers (tag bits 1–3), time moving on by the
/// tag's top bits; some peers get confirmed, segments are sent, flows expire. Invariants: nothing panics;
/// the table stays within its capacity; every segment is counted exactly once; a datagram is the payload of
/// the segment it came from; every header written parses back with its own fields and checksum.
pub fn faketcp_segments(data: &[u8]) {
    use crate::proto::faketcp::{FlowTable, Ipv4Packet, MAX_HEADER, Rx, Segment, Shape, Stamp};
    let Some((&cfg, rest)) = data.split_first() else { return };
    let shape = if cfg & 1 == 0 { Shape::Deb } else { Shape::New };
    let cap = 1 + usize::from(cfg >> 5);
    let mut table = FlowTable::new(cap, shape);
    let mut now = Instant::from_millis(0);
    let peer = |i: u8| -> SocketAddr {
        if i & 4 == 0 {
            ([192, 0, 2, i], 1000 + u16::from(i)).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, u16::from(i)).into()
        }
    };
    let (local, remote) = (std::net::IpAddr::from([10, 0, 0, 1]), std::net::IpAddr::from([10, 0, 0, 2]));
    let mut counted = 0u64;
    for (tag, rec) in records(rest) {
        now += Duration::from_millis(u64::from(tag >> 4) * 997);
        let src = peer(tag >> 1 & 7);
        let bytes = if tag & 1 == 1 {
            match Ipv4Packet::parse(rec) {
                Ok(p) => {
                    assert!(p.segment.len() <= rec.len());
                    p.segment
                }
                Err(_) => continue,
            }
        } else {
            rec
        };
        if tag & 0x0e == 0x0e {
            let _ = table.confirm(now, src);
        }
        let rx = table.on_segment(now, src, bytes);
        counted += 1;
        if let Rx::Datagram(d) = rx {
            let seg = Segment::parse(bytes).expect("a datagram came from a segment");
            assert_eq!(d, seg.payload);
        }
        assert!(table.len() <= cap);
        let st = table.stats;
        let dropped = st.rx_malformed
            + st.rx_no_flow
            + st.rx_full
            + st.rx_out_of_window
            + st.rx_stray_resets
            + st.rx_stray_syns
            + st.rx_unconfirmed;
        // Every segment is a datagram, a drop, a close, or a control segment (not counted separately).
        assert!(st.rx_datagrams + dropped + st.closed <= st.rx_segments);
        assert_eq!(st.rx_segments, counted);
        let stamp = Stamp { random: u16::from(tag), wall_ms: now.ms32() };
        if let Some(h) = table.next_header(29900, src, rec.len(), stamp) {
            let mut out = [0u8; MAX_HEADER];
            let n = h.write(local, remote, rec, &mut out);
            let mut seg = out[..n].to_vec();
            seg.extend_from_slice(rec);
            let back = Segment::parse(&seg).expect("own header parses");
            assert_eq!((back.seq, back.ack, back.payload), (h.seq, h.ack, rec));
            let mut out2 = [0u8; MAX_HEADER];
            h.write(local, remote, rec, &mut out2);
            assert_eq!(out, out2);
            assert_eq!(crate::proto::faketcp::checksum(local, remote, &seg, &[]), 0);
        }
        if tag & 0xf0 == 0xf0 {
            table.expire(now, |_| {});
        }
    }
}
