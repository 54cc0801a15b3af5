//! The engine's [`Event`]s as log lines in kcptun's habits, written by a thread of their own so that no
//! shard ever waits on a log file or a slow stderr.
//!
//! kcptun's own lines are kept word for word where it has one (`stream opened in: … out: …`, `remote
//! address: …`, `smux version: … on connection: … -> …`, Go's `dial tcp …: connect: …`, `scavenger: …`);
//! kcpd adds the conversation id and says why a session ended. `--quiet` hides the stream lines only, as in
//! kcptun. Failed dials are rate-limited: a dead target meets every stream with one, and the log must not
//! become the flood.

#![allow(clippy::disallowed_methods)] // the rate limiter reads the wall clock; nothing here is protocol code

use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use kcpd_datapath::event::{DroppedEvents, Event, SessionEnd, SessionId, SmuxMismatch};
use kcpd_datapath::shard::Endpoint;

use crate::run::Logger;

/// Dial failures logged in a burst, and how many more per second after it.
const DIAL_BURST: f64 = 10.0;
const DIAL_PER_SEC: f64 = 1.0;

/// A token bucket over log lines of one kind, counting what it holds back.
#[derive(Debug)]
struct Limiter {
    tokens: f64,
    at: Instant,
    held: u64,
}

impl Limiter {
    fn new(now: Instant) -> Self {
        Limiter { tokens: DIAL_BURST, at: now, held: 0 }
    }

    fn refill(&mut self, now: Instant) {
        let el = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + el * DIAL_PER_SEC).min(DIAL_BURST);
        self.at = now;
    }

    /// May a line be written now? Otherwise it is counted.
    fn allow(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.held += 1;
            false
        }
    }

    /// The lines held back, once a line may be written again (the count is reset).
    fn release(&mut self, now: Instant) -> Option<u64> {
        self.refill(now);
        if self.held > 0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Some(std::mem::take(&mut self.held))
        } else {
            None
        }
    }
}

/// Turns events into lines; pure apart from the clock passed in, so it is tested without threads.
#[derive(Debug)]
pub struct EventLog {
    quiet: bool,
    dials: Limiter,
    dropped_seen: u64,
}

/// Go's text for a system error: "connection refused", not Rust's "Connection refused (os error 111)".
pub fn go_error(e: &io::Error) -> String {
    let Some(code) = e.raw_os_error() else { return e.to_string() };
    let text = io::Error::from_raw_os_error(code).to_string();
    let text = text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text);
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => text.to_owned(),
    }
}

fn endpoint(e: &Endpoint) -> String {
    match e {
        Endpoint::Tcp(a) => a.to_string(),
        Endpoint::Unix(p) => p.display().to_string(),
    }
}

/// `local -> remote (conv N)`.
fn session(id: &SessionId) -> String {
    format!("{} -> {} (conv {})", id.local, id.remote, id.conv)
}

fn duration(ms: u32) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=59_999 => format!("{:.1} s", f64::from(ms) / 1000.0),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

fn end_text(end: &SessionEnd) -> String {
    match end {
        SessionEnd::KeepaliveTimeout => "no smux frame from the peer for a whole keepalive timeout (30 s)".into(),
        SessionEnd::Protocol(e) => format!("smux protocol error from the peer: {e}"),
        SessionEnd::Smux(e) => e.to_string(),
        SessionEnd::Compression => {
            "the peer's compressed stream is corrupt (is --nocomp the same on both ends?)".into()
        }
        SessionEnd::Replaced => "the peer started a new conversation from the same address".into(),
        SessionEnd::Scavenged => "expired and --scavengettl ran out".into(),
        SessionEnd::Exhausted => "no more smux stream ids; new connections go to a new session".into(),
        SessionEnd::Closed => "closed".into(),
        SessionEnd::Idle => "nothing heard from the peer for the idle timeout".into(),
        SessionEnd::TransportClosed => "its fake-TCP connection ended (refused, reset, closed or expired)".into(),
    }
}

/// The diagnosis of a client session that died of a smux version mismatch, with the `--smuxver` to use.
pub fn mismatch_text(remote: std::net::SocketAddr, m: &SmuxMismatch) -> String {
    let theirs = m.theirs.unwrap_or(if m.ours == 1 { 2 } else { 1 });
    let cause = match m.theirs {
        Some(t) => format!("the server at {remote} sent a smux v{t} frame to this v{} client", m.ours),
        None => format!(
            "this client opened streams with smux v{} and the server at {remote} acknowledged them but never \
             sent a single frame back before the session timed out (kcptun drops a session without a word \
             on a frame of the other version)",
            m.ours
        ),
    };
    let deb = if theirs == 1 { " (Debian's kcptun 20210922 speaks v1 unless told otherwise)" } else { "" };
    format!(
        "smux version mismatch{}: {cause}; give both ends the same --smuxver: --smuxver {theirs} here, or \
         --smuxver {} on that server{deb}",
        if m.theirs.is_some() { "" } else { ", most likely" },
        m.ours
    )
}

impl EventLog {
    pub fn new(quiet: bool, now: Instant) -> Self {
        EventLog { quiet, dials: Limiter::new(now), dropped_seen: 0 }
    }

    /// The lines for `e` (none when `--quiet` hides it or the rate limit holds it back).
    pub fn lines(&mut self, e: &Event, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        match e {
            Event::SessionOpened { id, by_peer: true, smux } => {
                out.push(format!("remote address: {} (conv {})", id.remote, id.conv));
                if let Some(v @ 1..) = smux {
                    out.push(format!("smux version: {v} on connection: {} -> {}", id.local, id.remote));
                }
            }
            Event::SessionOpened { id, by_peer: false, smux } => match smux {
                Some(v) => out.push(format!("smux version: {v} on connection: {}", session(id))),
                None => out.push(format!("session opened: {}", session(id))),
            },
            Event::SessionMigrated { id, from, .. } => {
                out.push(format!("session moved: {} -> {} (conv {}, NAT rebinding)", from, id.remote, id.conv))
            }
            Event::SmuxDetected { id, version } => out.push(format!(
                "smux version: {version} on connection: {} -> {} (detected from its first frame)",
                id.local, id.remote
            )),
            Event::SessionExpired { id } => out.push(format!(
                "session expired (--autoexpire): {}; new connections go to a new session, its streams stay \
                 until --scavengettl",
                session(id)
            )),
            Event::SessionClosed { id, end: SessionEnd::Scavenged, .. } => {
                out.push(format!("scavenger: session closed due to ttl: {}", session(id)));
            }
            Event::SessionClosed { id, end, age_ms, mismatch, .. } => {
                out.push(format!("session closed: {} after {}: {}", session(id), duration(*age_ms), end_text(end)));
                if let Some(m) = mismatch {
                    out.push(mismatch_text(id.remote, m));
                }
            }
            Event::SmuxFallback { remote, from, to } => out.push(format!(
                "no --smuxver given: new sessions to {remote} speak smux v{to} instead of v{from}; pass \
                 --smuxver {to} to start with it"
            )),
            Event::StreamOpened { id, sid, app, by_peer } | Event::StreamClosed { id, sid, app, by_peer } => {
                if !self.quiet {
                    let what = if matches!(e, Event::StreamOpened { .. }) { "opened" } else { "closed" };
                    let (app, tunnel) = (endpoint(app), format!("{}({sid})", id.remote));
                    out.push(if *by_peer {
                        format!("stream {what} in: {tunnel} out: {app}")
                    } else {
                        format!("stream {what} in: {app} out: {tunnel}")
                    });
                }
            }
            Event::TargetDialFailed { target, error } => {
                if self.dials.allow(now) {
                    let net = if matches!(target, Endpoint::Tcp(_)) { "tcp" } else { "unix" };
                    out.push(format!("dial {net} {}: connect: {}", endpoint(target), go_error(error)));
                }
            }
            Event::SessionDialFailed { remote, error } => {
                if self.dials.allow(now) {
                    out.push(format!("cannot open a session to {remote}: {}", go_error(error)));
                }
            }
            Event::ShardError { shard, what, error } => out.push(format!("shard {shard}: {what}: {error}")),
            Event::FrontDoor { refused: r } => {
                let mut parts = Vec::new();
                let sessions = r.refused_total + r.refused_per_source + r.refused_rate + r.refused_memory;
                if sessions > 0 {
                    parts.push(format!(
                        "refused {sessions} new sessions (total cap {}, per-source cap {}, per-source rate {}, \
                         memory budget {})",
                        r.refused_total, r.refused_per_source, r.refused_rate, r.refused_memory
                    ));
                }
                if r.replays > 0 {
                    parts.push(format!("dropped {} replayed datagrams", r.replays));
                }
                if r.conv_reused > 0 {
                    parts.push(format!("dropped {} old first datagrams of used convs", r.conv_reused));
                }
                out.push(format!("front door: {}", parts.join("; ")));
            }
        }
        out
    }

    /// Lines owed by the passing of time: dial failures held back, events the queue dropped.
    pub fn tick(&mut self, now: Instant, dropped_total: u64) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.dials.release(now) {
            out.push(format!("{n} more failed dials not logged (at most {DIAL_PER_SEC} per second)"));
        }
        if dropped_total > self.dropped_seen {
            out.push(format!("{} log events dropped: the log could not keep up", dropped_total - self.dropped_seen));
            self.dropped_seen = dropped_total;
        }
        out
    }
}

/// Log every event of `rx` until the engine's senders are gone.
pub fn spawn(log: Logger, quiet: bool, rx: Receiver<Event>, dropped: DroppedEvents) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("kcpd-log".into()).spawn(move || {
        let mut el = EventLog::new(quiet, Instant::now());
        loop {
            let r = rx.recv_timeout(Duration::from_secs(1));
            let now = Instant::now();
            if let Ok(e) = &r {
                for line in el.lines(e, now) {
                    log.log(&line);
                }
            }
            for line in el.tick(now, dropped.get()) {
                log.log(&line);
            }
            if matches!(r, Err(RecvTimeoutError::Disconnected)) {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcpd_datapath::event::SmuxSummary;

    fn id() -> SessionId {
        SessionId { conv: 7, local: "0.0.0.0:40000".parse().unwrap(), remote: "10.0.0.1:29900".parse().unwrap() }
    }

    #[test]
    fn stream_lines_as_kcptun_prints_them_and_quiet_hides_only_them() {
        let t = Instant::now();
        let app = Endpoint::Tcp("127.0.0.1:5000".parse().unwrap());
        let open = Event::StreamOpened { id: id(), sid: 3, app: app.clone(), by_peer: false };
        let mut el = EventLog::new(false, t);
        assert_eq!(el.lines(&open, t), ["stream opened in: 127.0.0.1:5000 out: 10.0.0.1:29900(3)"]);
        let close = Event::StreamClosed { id: id(), sid: 3, app, by_peer: true };
        assert_eq!(el.lines(&close, t), ["stream closed in: 10.0.0.1:29900(3) out: 127.0.0.1:5000"]);
        let mut quiet = EventLog::new(true, t);
        assert!(quiet.lines(&open, t).is_empty() && quiet.lines(&close, t).is_empty());
        let failed = Event::TargetDialFailed {
            target: Endpoint::Tcp("127.0.0.1:19001".parse().unwrap()),
            error: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(quiet.lines(&failed, t), ["dial tcp 127.0.0.1:19001: connect: connection refused"]);
    }

    #[test]
    fn front_door_reports_name_what_was_refused() {
        let t = Instant::now();
        let mut el = EventLog::new(true, t);
        let refused = kcpd_datapath::proto::front::FrontStats {
            refused_rate: 5,
            refused_per_source: 2,
            replays: 50,
            ..Default::default()
        };
        assert_eq!(
            el.lines(&Event::FrontDoor { refused }, t),
            ["front door: refused 7 new sessions (total cap 0, per-source cap 2, per-source rate 5, memory \
              budget 0); dropped 50 replayed datagrams"]
        );
    }

    #[test]
    fn dial_failures_are_rate_limited_and_counted() {
        let t = Instant::now();
        let mut el = EventLog::new(false, t);
        let failed = || Event::TargetDialFailed {
            target: Endpoint::Unix("/run/app.sock".into()),
            error: io::Error::from_raw_os_error(libc::ENOENT),
        };
        let logged: usize = (0..1000).map(|_| el.lines(&failed(), t).len()).sum();
        assert_eq!(logged, DIAL_BURST as usize);
        assert_eq!(
            el.lines(&failed(), t + Duration::from_millis(500)),
            Vec::<String>::new(),
            "half a token is not a line"
        );
        let later = t + Duration::from_secs(2);
        assert_eq!(el.tick(later, 0), ["991 more failed dials not logged (at most 1 per second)"]);
        assert!(el.tick(later, 0).is_empty());
        assert_eq!(el.lines(&failed(), later), ["dial unix /run/app.sock: connect: no such file or directory"]);
        assert_eq!(el.tick(later, 5), ["5 log events dropped: the log could not keep up"]);
        assert!(el.tick(later, 5).is_empty());
    }

    #[test]
    fn session_lines_name_the_conversation_and_the_reason() {
        let t = Instant::now();
        let mut el = EventLog::new(true, t);
        let server =
            SessionId { local: "[::]:29900".parse().unwrap(), remote: "10.0.0.2:5555".parse().unwrap(), conv: 9 };
        assert_eq!(
            el.lines(&Event::SessionOpened { id: server, by_peer: true, smux: Some(0) }, t),
            ["remote address: 10.0.0.2:5555 (conv 9)"]
        );
        let moved = SessionId { remote: "10.0.0.2:6000".parse().unwrap(), ..server };
        assert_eq!(
            el.lines(&Event::SessionMigrated { id: moved, from: server.remote, shards: (0, 1) }, t),
            ["session moved: 10.0.0.2:5555 -> 10.0.0.2:6000 (conv 9, NAT rebinding)"]
        );
        assert_eq!(
            el.lines(&Event::SmuxDetected { id: server, version: 1 }, t),
            ["smux version: 1 on connection: [::]:29900 -> 10.0.0.2:5555 (detected from its first frame)"]
        );
        assert_eq!(
            el.lines(&Event::SessionOpened { id: id(), by_peer: false, smux: Some(2) }, t),
            ["smux version: 2 on connection: 0.0.0.0:40000 -> 10.0.0.1:29900 (conv 7)"]
        );
        let closed = Event::SessionClosed {
            id: id(),
            end: SessionEnd::KeepaliveTimeout,
            age_ms: 30_500,
            smux: Some(SmuxSummary { version: 2, frames_in: 0, syns_sent: 1 }),
            mismatch: Some(SmuxMismatch { ours: 2, theirs: None }),
        };
        let lines = el.lines(&closed, t);
        assert_eq!(
            lines[0],
            "session closed: 0.0.0.0:40000 -> 10.0.0.1:29900 (conv 7) after 30.5 s: no smux frame from the peer for a whole keepalive timeout (30 s)"
        );
        assert!(
            lines[1].starts_with("smux version mismatch, most likely: ") && lines[1].contains("--smuxver 1"),
            "{lines:?}"
        );
        let scavenged =
            Event::SessionClosed { id: id(), end: SessionEnd::Scavenged, age_ms: 1, smux: None, mismatch: None };
        assert_eq!(
            el.lines(&scavenged, t),
            ["scavenger: session closed due to ttl: 0.0.0.0:40000 -> 10.0.0.1:29900 (conv 7)"]
        );
        assert_eq!(duration(61_000), "1 min 1 s");
        assert_eq!(go_error(&io::Error::other("x")), "x");
    }
}
