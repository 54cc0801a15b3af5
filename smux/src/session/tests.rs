//! Unit tests of [`Session`](super::Session): stream ids, keepalive, timers.

use super::*;

const T0: Instant = Instant::ZERO;

fn ms(x: u64) -> Instant {
    Instant::from_millis(x)
}

fn drain(s: &mut Session) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 8 + 65_535];
    std::iter::from_fn(|| s.poll_transmit(T0, &mut buf).map(|n| buf[..n].to_vec())).collect()
}

#[test]
fn stream_ids_and_go_away() {
    let mut c = Session::new(Role::Client, Config::default(), T0).unwrap();
    let mut s = Session::new(Role::Server, Config::default(), T0).unwrap();
    assert_eq!([c.open_stream(), c.open_stream(), c.open_stream()], [Ok(3), Ok(5), Ok(7)]);
    assert_eq!([s.open_stream(), s.open_stream()], [Ok(2), Ok(4)]);
    // session.go OpenStream: the last odd id is u32::MAX; the next wraps to 1 and sets goAway for good.
    c.next_stream_id = u32::MAX - 4;
    assert_eq!(c.open_stream(), Ok(u32::MAX - 2));
    assert_eq!(c.open_stream(), Ok(u32::MAX));
    assert_eq!(c.open_stream(), Err(Error::GoAway));
    assert_eq!(c.open_stream(), Err(Error::GoAway));
    s.next_stream_id = u32::MAX - 3;
    assert_eq!(s.open_stream(), Ok(u32::MAX - 1));
    assert_eq!(s.open_stream(), Err(Error::GoAway));
    // The existing streams still work after GoAway.
    assert_eq!(c.stream_write(3, b"x"), Ok(1));
    assert_eq!(c.stats().streams_opened, 5);
}

#[test]
fn ids_the_peer_already_uses_are_skipped() {
    let mut c = Session::new(Role::Client, Config::default(), T0).unwrap();
    // The peer opened our next id (5) itself: SYN v1 sid 5.
    c.handle_input(T0, &[1, 0, 0, 0, 5, 0, 0, 0]).unwrap();
    assert_eq!(c.open_stream(), Ok(3));
    assert_eq!(c.open_stream(), Ok(7));
}

#[test]
fn keepalive_nop_and_timeout_with_a_silent_peer() {
    let mut s = Session::new(Role::Server, Config::kcptun_new(), ms(1000)).unwrap();
    assert_eq!(s.poll_timeout(), Some(ms(11_000)));
    s.handle_timeout(ms(10_999));
    assert!(drain(&mut s).is_empty());
    s.handle_timeout(ms(11_000));
    assert_eq!(drain(&mut s), vec![vec![2, 3, 0, 0, 0, 0, 0, 0]]);
    assert_eq!(s.poll_timeout(), Some(ms(21_000)));
    s.handle_timeout(ms(21_000));
    assert_eq!(s.poll_timeout(), Some(ms(31_000)));
    s.handle_timeout(ms(31_000));
    assert!(s.is_closed());
    assert_eq!(s.close_reason(), Some(CloseReason::KeepaliveTimeout));
    assert_eq!(s.poll_event(), Some(Event::SessionClosed(CloseReason::KeepaliveTimeout)));
    assert!(drain(&mut s).is_empty(), "the NOP queued at 31 s dies with the session");
    assert_eq!(s.poll_timeout(), None);
    assert!(!s.wants_input());
    assert_eq!(
        s.handle_input(ms(31_001), &[2, 3, 0, 0, 0, 0, 0, 0]),
        Err(Error::SessionClosed(CloseReason::KeepaliveTimeout))
    );
    assert_eq!(s.stats().keepalive_timeouts, 1);
}

#[test]
fn any_frame_per_period_keeps_the_session_alive_across_time_wrap() {
    // KCP's clock wraps 45 s in; smux's deadlines do not care.
    let start = ms(u64::from(u32::MAX) - 45_000);
    let mut s = Session::new(Role::Server, Config::kcptun_new(), start).unwrap();
    let mut now = start;
    for _ in 0..30 {
        now += Duration::from_millis(10_000);
        s.handle_input(now, &[2, 3, 0, 0, 0, 0, 0, 0]).unwrap();
        s.handle_timeout(now);
        assert!(!s.is_closed());
        drain(&mut s);
    }
    // Now silence: the check that follows a full silent period closes it.
    for _ in 0..7 {
        now += Duration::from_millis(10_000);
        s.handle_timeout(now);
    }
    assert_eq!(s.close_reason(), Some(CloseReason::KeepaliveTimeout));
}

#[test]
fn a_reader_starved_of_tokens_is_not_timed_out() {
    let cfg = Config { max_receive_buffer: 16, max_stream_buffer: 16, ..Config::default() };
    let mut s = Session::new(Role::Server, cfg, T0).unwrap();
    let mut input = vec![1, 0, 0, 0, 3, 0, 0, 0, 1, 2, 16, 0, 3, 0, 0, 0];
    input.extend_from_slice(&[7; 16]);
    s.handle_input(T0, &input).unwrap();
    assert!(!s.wants_input());
    assert_eq!(s.receive_budget(), 0);
    for t in 1..=10 {
        s.handle_timeout(ms(t * 30_000));
    }
    assert!(!s.is_closed(), "smux keepalive: bucket <= 0 means our reader is blocked, not the peer dead");
    let mut buf = [0u8; 4];
    assert_eq!(s.stream_read(3, &mut buf), Ok(4));
    assert!(s.wants_input());
    s.handle_timeout(ms(330_000));
    assert!(s.is_closed());
}

#[test]
fn nop_is_not_queued_twice() {
    let mut s = Session::new(Role::Client, Config::default(), T0).unwrap();
    s.handle_timeout(ms(10_000));
    s.handle_timeout(ms(20_000));
    assert_eq!(drain(&mut s).len(), 1);
}

#[test]
fn late_timers_resynchronise() {
    let mut s = Session::new(Role::Client, Config::default(), T0).unwrap();
    s.handle_input(T0, &[1, 3, 0, 0, 0, 0, 0, 0]).unwrap();
    s.handle_timeout(ms(35_000));
    assert_eq!(s.poll_timeout(), Some(ms(45_000)));
    assert_eq!(s.next_check, ms(60_000));
}
