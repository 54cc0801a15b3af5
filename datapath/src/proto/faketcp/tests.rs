use super::*;
use std::net::Ipv6Addr;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The packets of `tools/vectors/captures/deb_faketcp.md`: (client to server, IPv4 packet).
fn capture() -> Vec<(bool, Vec<u8>)> {
    let text = kcpd_vectors::capture("deb_faketcp.md");
    let block = text.split("```text").nth(1).unwrap().split("```").next().unwrap();
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1] == "C>S", hex::decode(f[2]).unwrap())
        })
        .collect()
}

/// A plain 16-bit-word checksum, written the obvious way, to check [`checksum`] against.
fn naive_checksum(src: IpAddr, dst: IpAddr, seg: &[u8]) -> u16 {
    let mut bytes = Vec::new();
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            bytes.extend(a.octets());
            bytes.extend(b.octets());
            bytes.extend([0, 6]);
            bytes.extend((seg.len() as u16).to_be_bytes());
        }
        (a, b) => {
            bytes.extend(v6_octets(a));
            bytes.extend(v6_octets(b));
            bytes.extend((seg.len() as u32).to_be_bytes());
            bytes.extend([0, 0, 0, 6]);
        }
    }
    bytes.extend(seg);
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u32 = 0;
    for w in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn the_debian_capture_parses_and_its_segments_carry_full_checksums() {
    let pkts = capture();
    assert_eq!(pkts.len(), 31);
    let mut data = 0;
    for (n, (_, p)) in pkts.iter().enumerate() {
        let ip = Ipv4Packet::parse(p).unwrap_or_else(|e| panic!("packet {}: {e}", n + 1));
        assert_eq!(ip.ttl, 64, "packet {}", n + 1);
        let seg = Segment::parse(ip.segment).unwrap();
        if !seg.has(PSH) {
            continue; // the kernels' handshake: partial checksums, left to offload
        }
        data += 1;
        // tcpraw 1.2.25: PSH|ACK, 20 bytes, no options, a window with the top bit set, no urgent pointer.
        assert_eq!((seg.flags, seg.options.len(), seg.window & 0x8000), (PSH | ACK, 0, 0x8000));
        assert_eq!(&ip.segment[18..20], &[0, 0]);
        let mut zeroed = ip.segment.to_vec();
        zeroed[16..18].fill(0);
        let want = u16::from_be_bytes([ip.segment[16], ip.segment[17]]);
        let (s, d) = (IpAddr::V4(ip.src), IpAddr::V4(ip.dst));
        assert_eq!(checksum(s, d, &zeroed[..20], &zeroed[20..]), want, "packet {}", n + 1);
        assert_eq!(naive_checksum(s, d, &zeroed), want);
    }
    assert_eq!(data, 28);
}

/// Both ends of the capture replayed through a [`Flow`] (client) and a [`FlowTable`] (server): every datagram
/// is delivered despite tcpraw's rewinding sequence numbers, and the first segment each way is rebuilt byte
/// for byte from what the flow learnt of the handshake.
#[test]
fn the_debian_capture_replays_through_both_ends() {
    let pkts = capture();
    let (client, server) = (addr("127.0.0.1:39012"), addr("127.0.0.1:29900"));
    let mut c = Flow::new(t(0), true);
    let mut s = FlowTable::new(4, Shape::Deb);
    let (mut first_c, mut first_s) = (true, true);
    let mut delivered = 0;
    for (to_server, p) in &pkts {
        let ip = Ipv4Packet::parse(p).unwrap();
        let seg = Segment::parse(ip.segment).unwrap();
        let payload_off = ip.segment.len() - seg.payload.len();
        // Rebuild the first data segment each way before the receiver sees it.
        if seg.has(PSH) && (if *to_server { first_c } else { first_s }) {
            let stamp = Stamp { random: seg.window & 0x7fff, wall_ms: 0 };
            let h = if *to_server {
                first_c = false;
                c.next_header((client.port(), server.port()), seg.payload.len(), Shape::Deb, stamp).unwrap()
            } else {
                first_s = false;
                s.next_header(server.port(), client, seg.payload.len(), stamp).unwrap()
            };
            let mut out = [0u8; MAX_HEADER];
            let n = h.write(IpAddr::V4(ip.src), IpAddr::V4(ip.dst), seg.payload, &mut out);
            assert_eq!(
                &out[..n],
                &ip.segment[..payload_off],
                "first segment {}",
                if *to_server { "C>S" } else { "S>C" }
            );
        }
        let rx = if *to_server { s.on_segment(t(1), client, ip.segment) } else { c.on_segment(t(1), &seg) };
        match rx {
            Rx::Datagram(d) => {
                assert_eq!(d, seg.payload);
                delivered += 1;
            }
            Rx::Control => assert!(!seg.has(PSH)),
            other => panic!("{other:?}"),
        }
        if !*to_server {
            continue;
        }
        // The server confirms the flow once the kernel would have accepted it (after the handshake ACK).
        if seg.flags == ACK {
            assert!(s.confirm(t(1), client));
        }
    }
    assert_eq!(delivered, 28);
    assert_eq!(s.stats.rx_datagrams, 16);
    assert!(!first_c && !first_s);
}

#[test]
fn new_shape_is_tcpraw_1_2_32s_bytes() {
    let mut f = Flow::new(t(0), true);
    // A SYN-ACK with a standard timestamp option (what a kernel sends), then a tcpraw 1.2.32 segment.
    let synack = seg_bytes(1000, 5001, SYN | ACK, &[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0], &[]);
    assert_eq!(f.on_segment(t(0), &Segment::parse(&synack).unwrap()), Rx::Control);
    let h = f.next_header((40000, 29900), 3, Shape::New, Stamp { random: 0x1234, wall_ms: 0xdead_beef }).unwrap();
    assert_eq!((h.seq, h.ack, h.window, h.timestamps), (5001, 1001, 65535, Some((0xdead_beef, 7))));
    let mut out = [0u8; MAX_HEADER];
    let (src, dst) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let n = h.write(src, dst, b"abc", &mut out);
    assert_eq!(n, 36);
    assert_eq!(out[12], 9 << 4);
    assert_eq!(out[13], PSH | ACK);
    assert_eq!(&out[20..36], &[1, 1, 8, 12, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7, 0, 0, 0, 0]);
    let mut seg = out[..n].to_vec();
    seg.extend(b"abc");
    assert_eq!(naive_checksum(src, dst, &seg), 0, "a segment with its checksum in place sums to zero");
    // Its own option reads back (tcpraw 1.2.32 echoes it), and the next segment follows on.
    assert_eq!(Segment::parse(&seg).unwrap().timestamp(), Some(0xdead_beef));
    assert_eq!(f.next_header((1, 2), 10, Shape::New, Stamp::default()).unwrap().seq, 5004);
}

/// A TCP segment from the peer (ports 29900 → 40000).
fn seg_bytes(seq: u32, ack: u32, flags: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut b = Vec::new();
    b.extend(29900u16.to_be_bytes());
    b.extend(40000u16.to_be_bytes());
    b.extend(seq.to_be_bytes());
    b.extend(ack.to_be_bytes());
    b.push((((20 + options.len()) / 4) as u8) << 4);
    b.push(flags);
    b.extend([0xff, 0xff, 0, 0, 0, 0]);
    b.extend(options);
    b.extend(payload);
    b
}

#[test]
fn checksums_match_the_plain_sum_for_both_families_and_odd_lengths() {
    let v4 = (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
    let v6 = (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6("2001:db8::1".parse().unwrap()));
    let bytes: Vec<u8> = (0..1500u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    for (s, d) in [v4, v6] {
        for (h, p) in [(20, 0), (20, 1), (36, 1350), (20, 1351), (36, 7), (20, 1480)] {
            let seg = &bytes[..h + p];
            assert_eq!(checksum(s, d, &seg[..h], &seg[h..]), naive_checksum(s, d, seg), "{h}+{p}");
        }
    }
    // Runs that split a 16-bit word.
    let mut sum = Sum::default();
    for chunk in bytes[..101].chunks(7) {
        sum.add(chunk);
    }
    let mut whole = Sum::default();
    whole.add(&bytes[..101]);
    assert_eq!(sum.finish(), whole.finish());
}

#[test]
fn malformed_packets_are_typed_errors() {
    assert_eq!(Ipv4Packet::parse(&[]), Err(SegmentError::BadIpHeader));
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
    ip.extend(seg_bytes(1, 1, ACK, &[], &[]));
    assert!(Ipv4Packet::parse(&ip).is_ok());
    let bad = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = ip.clone();
        f(&mut p);
        Ipv4Packet::parse(&p).err()
    };
    assert_eq!(bad(&|p| p[0] = 0x65), Some(SegmentError::NotIpv4));
    assert_eq!(bad(&|p| p[0] = 0x44), Some(SegmentError::BadIpHeader));
    assert_eq!(bad(&|p| p[0] = 0x4f), Some(SegmentError::BadIpHeader));
    assert_eq!(bad(&|p| p[3] = 41), Some(SegmentError::BadIpHeader));
    assert_eq!(bad(&|p| p[3] = 19), Some(SegmentError::BadIpHeader));
    assert_eq!(bad(&|p| p[9] = 17), Some(SegmentError::NotTcp));
    assert_eq!(bad(&|p| p[6] = 0x20), Some(SegmentError::Fragment));
    assert_eq!(bad(&|p| p[7] = 1), Some(SegmentError::Fragment));
    // A total length shorter than the capture trims the segment (trailing bytes are not payload).
    assert_eq!(bad(&|p| p.push(0xaa)), None);
    assert_eq!(Segment::parse(&[0; 19]), Err(SegmentError::BadTcpHeader));
    let mut s = seg_bytes(1, 1, ACK, &[], &[]);
    s[12] = 4 << 4;
    assert_eq!(Segment::parse(&s), Err(SegmentError::BadTcpHeader));
    s[12] = 6 << 4;
    assert_eq!(Segment::parse(&s), Err(SegmentError::BadTcpHeader));
    // Options that run past their end, or say length 0 or 1, end the walk without a timestamp.
    for opts in [[8, 12, 0, 0], [8, 1, 0, 0], [8, 0, 0, 0], [1, 1, 1, 8]] {
        assert_eq!(Segment::parse(&seg_bytes(1, 1, ACK, &opts, &[])).unwrap().timestamp(), None);
    }
    assert_eq!(Segment::parse(&seg_bytes(1, 1, ACK, &[0, 8, 10, 0], &[])).unwrap().timestamp(), None);
}

#[test]
fn sequence_state_follows_the_peer_and_never_waits_for_a_gap() {
    let mut f = Flow::new(t(0), true);
    assert!(f.next_header((1, 2), 10, Shape::Deb, Stamp::default()).is_none(), "nothing learnt yet");
    f.on_segment(t(0), &Segment::parse(&seg_bytes(100, 500, SYN | ACK, &[], &[])).unwrap());
    let next = |f: &mut Flow, n| f.next_header((1, 2), n, Shape::Deb, Stamp::default()).unwrap();
    assert_eq!((next(&mut f, 10).seq, next(&mut f, 10).seq), (500, 510));
    // A segment lost before this one: the ack moves past the gap (tcpraw's would stay at 101).
    let seg = seg_bytes(111, 505, PSH | ACK, &[], &[7; 10]);
    assert_eq!(f.on_segment(t(1), &Segment::parse(&seg).unwrap()), Rx::Datagram(&[7; 10]));
    let h = next(&mut f, 4);
    // The peer acked 505 of our 520: the sequence rewinds to it, as tcpraw's does.
    assert_eq!((h.seq, h.ack), (505, 121));
    // The late segment is still a datagram, and the ack does not go back.
    let seg = seg_bytes(101, 505, PSH | ACK, &[], &[8; 10]);
    assert_eq!(f.on_segment(t(2), &Segment::parse(&seg).unwrap()), Rx::Datagram(&[8; 10]));
    assert_eq!(next(&mut f, 0).ack, 121);
    // An empty PSH is an empty datagram (tcpraw delivers it; the layers above count it).
    assert_eq!(
        f.on_segment(t(2), &Segment::parse(&seg_bytes(121, 505, PSH | ACK, &[], &[])).unwrap()),
        Rx::Datagram(&[])
    );
    // Far from the ack: dropped, nothing learnt from it.
    for seq in [121 + SEQ_WINDOW + 1, 121u32.wrapping_sub(SEQ_WINDOW + 1)] {
        let seg = seg_bytes(seq, 9999, PSH | ACK, &[], &[1]);
        assert_eq!(f.on_segment(t(3), &Segment::parse(&seg).unwrap()), Rx::Dropped(Drop::OutOfWindow));
    }
    assert_eq!(next(&mut f, 0).seq, 505, "the dropped segments taught nothing");
    // Across the wrap of the sequence space.
    let mut f = Flow::new(t(0), true);
    f.on_segment(t(0), &Segment::parse(&seg_bytes(u32::MAX - 4, 1, SYN | ACK, &[], &[])).unwrap());
    let seg = seg_bytes(u32::MAX - 3, 1, PSH | ACK, &[], &[0; 10]);
    assert!(matches!(f.on_segment(t(1), &Segment::parse(&seg).unwrap()), Rx::Datagram(_)));
    assert_eq!(next(&mut f, 0).ack, 6);
}

#[test]
fn resets_and_fins_close_only_when_they_match() {
    let mut f = Flow::new(t(0), true);
    f.on_segment(t(0), &Segment::parse(&seg_bytes(100, 500, SYN | ACK, &[], &[])).unwrap());
    for seq in [100, 102, 0] {
        let rst = seg_bytes(seq, 0, RST, &[], &[]);
        assert_eq!(f.on_segment(t(1), &Segment::parse(&rst).unwrap()), Rx::Dropped(Drop::StrayReset));
    }
    assert_eq!(f.on_segment(t(1), &Segment::parse(&seg_bytes(101, 0, RST | ACK, &[], &[])).unwrap()), Rx::Closed);
    let mut g = Flow::new(t(0), true);
    g.on_segment(t(0), &Segment::parse(&seg_bytes(100, 500, SYN | ACK, &[], &[])).unwrap());
    assert_eq!(g.on_segment(t(1), &Segment::parse(&seg_bytes(101, 500, FIN | ACK, &[], &[])).unwrap()), Rx::Closed);
    // A SYN-ACK again once the handshake is over changes nothing.
    let mut k = Flow::new(t(0), true);
    k.on_segment(t(0), &Segment::parse(&seg_bytes(100, 500, SYN | ACK, &[], &[])).unwrap());
    let again = seg_bytes(7000, 9000, SYN | ACK, &[], &[]);
    assert_eq!(k.on_segment(t(1), &Segment::parse(&again).unwrap()), Rx::Dropped(Drop::StraySyn));
    let h = k.next_header((1, 2), 0, Shape::Deb, Stamp::default()).unwrap();
    assert_eq!((h.seq, h.ack), (500, 101));
    // A RST before anything was learnt cannot be checked: dropped.
    let mut h = Flow::new(t(0), true);
    assert_eq!(
        h.on_segment(t(0), &Segment::parse(&seg_bytes(1, 0, RST, &[], &[])).unwrap()),
        Rx::Dropped(Drop::StrayReset)
    );
}

#[test]
fn a_server_table_opens_on_syn_delivers_once_confirmed_and_stays_bounded() {
    let mut s = FlowTable::new(2, Shape::New);
    let (a, b, c) = (addr("192.0.2.1:1000"), addr("192.0.2.2:1000"), addr("[2001:db8::3]:1000"));
    let syn = seg_bytes(7, 0, SYN, &[], &[]);
    let data = seg_bytes(8, 1, PSH | ACK, &[], b"datagram");
    assert_eq!(s.on_segment(t(0), a, &data), Rx::Dropped(Drop::NoFlow), "no flow without a SYN");
    assert_eq!(s.on_segment(t(0), a, &[0x50; 10]), Rx::Dropped(Drop::Malformed));
    assert_eq!(s.on_segment(t(0), a, &syn), Rx::Control);
    assert_eq!(s.on_segment(t(0), a, &data), Rx::Dropped(Drop::Unconfirmed), "tcpraw's orphans");
    assert!(s.next_header(29900, b, 5, Stamp::default()).is_none());
    assert!(s.confirm(t(0), a));
    assert_eq!(s.on_segment(t(0), a, &data), Rx::Datagram(b"datagram"));
    assert_eq!(s.next_header(29900, a, 5, Stamp::default()).map(|h| (h.seq, h.ack)), Some((1, 16)));
    assert_eq!(s.on_segment(t(0), b, &syn), Rx::Control);
    assert_eq!(s.on_segment(t(0), c, &syn), Rx::Dropped(Drop::Full));
    assert!(!s.confirm(t(0), c));
    assert_eq!(s.len(), 2);
    // b never gets confirmed: gone after PENDING_TTL; a lives until IDLE_TTL of silence.
    let mut gone = Vec::new();
    s.expire(t(0) + PENDING_TTL, |p| gone.push(p));
    assert_eq!(gone, vec![b]);
    s.expire(t(0) + IDLE_TTL - Duration::from_millis(1), |p| gone.push(p));
    assert_eq!(s.len(), 1);
    s.expire(t(0) + IDLE_TTL, |p| gone.push(p));
    assert_eq!((gone, s.len()), (vec![b, a], 0));
    let st = s.stats;
    assert_eq!(
        (st.rx_no_flow, st.rx_malformed, st.rx_unconfirmed, st.rx_full, st.refused, st.expired),
        (1, 1, 1, 1, 1, 2)
    );
    assert_eq!((st.rx_datagrams, st.tx_no_flow), (1, 1));
    // A FIN removes the flow.
    s.on_segment(t(0), a, &syn);
    assert_eq!(s.on_segment(t(0), a, &seg_bytes(8, 1, FIN | ACK, &[], &[])), Rx::Closed);
    assert!(s.is_empty());
}
