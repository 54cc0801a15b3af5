//! kcpd's own flags (not kcptun's): engine choices, taken out of the argument list before the kcptun
//! parser sees it. Go-style like the rest: `-threads 4`, `--threads=4`, `--io uring`, `--no-pin`,
//! `--halfclose`, `--snmp-layout deb`.

use crate::run::EngineOptions;
use crate::snmp::Layout;
use kcpd_datapath::proto::cc::CcMode;

/// The help text of these flags (shown by `kcpd -h`, `kcpd client -h` and `kcpd server -h`).
pub const HELP: &str = "\
kcpd engine flags (kcpd only, beside kcptun's):
   --threads value      shards (threads); 0 = one per core (default: 0)
   --io value           UDP backend: mmsg (default on Linux), uring, poll
   --no-pin             do not pin shards to cores
   --no-offload         no UDP GSO/GRO (one datagram per send and receive buffer)
   --halfclose          smux half-close between two kcpd ends (kcptun closes both directions at once)
   --snmp-layout value  SNMP dump and --snmplog CSV as kcptun \"new\" (kcp-go 5.6.64, 31 columns) or
                        \"deb\" (Debian's kcptun 20210922, 25 columns) prints them (default: \"new\")
   --cc value           congestion control of what this end sends: bbr (model-based, paced, windows
                        that follow the path), none (kcp-go's sending, windows fixed), rate (pace at
                        --rate) (default: \"bbr\")
   --rate value         Mbit/s to pace at with --cc rate (implies it); parity and resends count
 server front door (docs/front-door.md):
   --mem-budget value       MiB of received data all sessions together may hold; the session cap, the
                            buffer pools and the replay tables follow it (default: 512; 0 = no bound)
   --max-sessions value     live sessions in total; 0 = no cap (default: 16384, or one per 64 KiB
                            of --mem-budget if that is fewer)
   --max-per-source value   live sessions per source IPv4 address or IPv6 /64; 0 = no cap (default: 1024)
   --new-per-source value   new sessions per second per source, as RATE or RATE/BURST; 0 = no limit
                            (default: 20/200)
   --replay-window value    seconds a received datagram is remembered to drop replays; 0 = off
                            (default: 60; always off with --crypt null)
   --max-streams value      streams a session may have open at once; more are closed at once
                            (default: 4096; 0 = no cap)
   --new-streams value      target connects per session per second, as RATE or RATE/BURST; more wait
                            their turn (default: 200/400; 0 = no limit)";

/// A non-negative count for `--flag`.
fn count(v: &str, flag: &str) -> Result<usize, String> {
    v.trim().parse().map_err(|_| format!("--{flag} {v:?}: expected a number (0 or more)"))
}

/// RATE or RATE/BURST for `--flag` (BURST defaults to RATE × `burst_factor`).
fn rate(v: &str, flag: &str, burst_factor: usize) -> Result<(u32, u32), String> {
    let (r, b) = match v.split_once('/') {
        Some((r, b)) => (count(r, flag)?, count(b, flag)?),
        None => {
            let r = count(v, flag)?;
            (r, r.saturating_mul(burst_factor))
        }
    };
    let to32 = |x: usize| u32::try_from(x).map_err(|_| format!("--{flag} {v:?}: too large"));
    Ok((to32(r)?, to32(b.max(r.min(1)))?))
}

/// Split `args` into the engine options and the kcptun flags left.
pub fn split(args: &[String]) -> Result<(EngineOptions, Vec<String>), String> {
    let mut opts = EngineOptions::default();
    let mut rest = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            rest.extend(args[i..].iter().cloned());
            break;
        }
        let body = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        let Some(body) = body else {
            rest.push(a.clone());
            i += 1;
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let mut value = |flag: &str| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i).cloned().ok_or_else(|| format!("flag needs an argument: --{flag}"))
        };
        match name {
            "threads" => {
                let v = value("threads")?;
                opts.threads = v
                    .parse()
                    .map_err(|_| format!("--threads {v:?}: expected a number of shards (0 = one per core)"))?;
            }
            "io" => {
                let v = value("io")?;
                opts.backend = v.parse().map_err(|e| format!("--io: {e}"))?;
                if !opts.backend.is_available() {
                    return Err(format!(
                        "--io {v}: this backend cannot run here (io_uring refused or not Linux); use --io mmsg"
                    ));
                }
            }
            "snmp-layout" => {
                let v = value("snmp-layout")?;
                opts.snmp_layout = match v.as_str() {
                    "new" => Layout::New,
                    "deb" => Layout::Deb,
                    _ => return Err(format!("--snmp-layout {v:?}: expected deb or new")),
                };
            }
            "max-sessions" => {
                opts.front.max_sessions = count(&value("max-sessions")?, "max-sessions")?;
                opts.max_sessions_set = true;
            }
            "mem-budget" => opts.mem_budget_mib = count(&value("mem-budget")?, "mem-budget")?,
            "max-per-source" => opts.front.max_per_source = count(&value("max-per-source")?, "max-per-source")?,
            "new-per-source" => opts.front.new_per_source = rate(&value("new-per-source")?, "new-per-source", 10)?,
            "max-streams" => opts.max_streams = count(&value("max-streams")?, "max-streams")?,
            "new-streams" => opts.stream_rate = rate(&value("new-streams")?, "new-streams", 2)?,
            "replay-window" => {
                let secs = count(&value("replay-window")?, "replay-window")?;
                if secs > 0 && secs < 30 {
                    return Err(format!(
                        "--replay-window {secs}: at least 30 seconds (smux's keepalive timeout), or 0 for off"
                    ));
                }
                opts.front.replay_window = (secs > 0).then(|| kcpd_time::Duration::from_secs(secs as u64));
            }
            "cc" => {
                let v = value("cc")?;
                opts.cc = match (v.as_str(), opts.cc) {
                    ("none", _) => CcMode::None,
                    ("bbr", _) => CcMode::Bbr,
                    ("rate", CcMode::Rate(r)) => CcMode::Rate(r),
                    ("rate", _) => CcMode::Rate(0),
                    _ => return Err(format!("--cc {v:?}: expected none, bbr or rate")),
                };
            }
            "rate" => {
                let v = value("rate")?;
                let mbit: f64 = v.trim().parse().map_err(|_| format!("--rate {v:?}: expected Mbit/s"))?;
                if !(mbit > 0.0 && mbit <= 1e6) {
                    return Err(format!("--rate {v:?}: expected Mbit/s above 0"));
                }
                opts.cc = CcMode::Rate((mbit * 125_000.0) as u64);
            }
            "no-pin" if inline.is_none() => opts.pin = false,
            "halfclose" if inline.is_none() => opts.half_close = true,
            "no-offload" if inline.is_none() => opts.offload = kcpd_datapath::io::udp::Offload::NONE,
            _ => rest.push(a.clone()),
        }
        i += 1;
    }
    if opts.cc == CcMode::Rate(0) {
        return Err("--cc rate needs --rate (Mbit/s to pace at)".to_string());
    }
    Ok((opts, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn engine_flags_are_taken_out() {
        let (o, rest) =
            split(&s(&["-mode", "fast3", "--threads=3", "-io", "poll", "--no-pin", "-nocomp", "--halfclose"])).unwrap();
        assert_eq!((o.threads, o.backend.name(), o.pin, o.half_close), (3, "poll", false, true));
        assert_eq!(rest, s(&["-mode", "fast3", "-nocomp"]));
        assert!(split(&s(&["--threads"])).unwrap_err().contains("needs an argument"));
        assert_eq!(split(&s(&["--no-offload"])).unwrap().0.offload, kcpd_datapath::io::udp::Offload::NONE);
        assert_eq!(split(&s(&[])).unwrap().0.offload, kcpd_datapath::io::udp::Offload::default());
        let (o, _) = split(&s(&["--max-sessions", "9", "--max-per-source=3", "--new-per-source", "5/7"])).unwrap();
        assert_eq!((o.front.max_sessions, o.front.max_per_source, o.front.new_per_source), (9, 3, (5, 7)));
        let (o, _) = split(&s(&["--new-per-source", "4", "--replay-window", "0"])).unwrap();
        assert_eq!((o.front.new_per_source, o.front.replay_window), ((4, 40), None));
        assert!(split(&s(&["--replay-window", "5"])).unwrap_err().contains("at least 30"));
        assert!(split(&s(&["--max-sessions", "-1"])).unwrap_err().contains("expected a number"));
        let (o, _) = split(&s(&["--mem-budget", "64"])).unwrap();
        assert_eq!((o.mem_budget_mib, o.max_sessions_set), (64, false));
        // The session cap, the pools and the tables follow the budget; an explicit cap wins.
        let (b, f) = o.budget(2);
        assert_eq!((b.bytes, f.max_sessions), (64 << 20, 1024));
        assert_eq!(b.pool, (64 << 20) / 8 / 1500 / 2);
        assert!(f.replay_entries * 9 <= (64 << 20) / 24 && f.conv_entries * 9 <= (64 << 20) / 48);
        let (o, _) = split(&s(&["--mem-budget", "64", "--max-sessions", "5000"])).unwrap();
        assert_eq!(o.budget(2).1.max_sessions, 5000);
        let (b, f) = split(&s(&["--mem-budget", "0"])).unwrap().0.budget(2);
        assert_eq!((b.bytes, f.max_sessions), (0, 16384));
        let (o, _) = split(&s(&["--max-streams", "10", "--new-streams", "5"])).unwrap();
        assert_eq!((o.max_streams, o.stream_rate), (10, (5, 10)));
        assert!(split(&s(&["--threads", "x"])).is_err());
        assert!(split(&s(&["--io", "epoll"])).unwrap_err().contains("mmsg, uring or poll"));
        assert_eq!(split(&s(&["--snmp-layout", "deb"])).unwrap().0.snmp_layout, Layout::Deb);
        assert_eq!(split(&s(&["-snmp-layout=new"])).unwrap().0.snmp_layout, Layout::New);
        assert_eq!(split(&s(&[])).unwrap().0.snmp_layout, Layout::New);
        assert!(split(&s(&["--snmp-layout", "old"])).unwrap_err().contains("deb or new"));
        assert_eq!(split(&s(&["--cc", "bbr"])).unwrap().0.cc, CcMode::Bbr);
        assert_eq!(split(&s(&["--rate", "100"])).unwrap().0.cc, CcMode::Rate(12_500_000));
        assert_eq!(split(&s(&["--cc", "rate", "--rate=8"])).unwrap().0.cc, CcMode::Rate(1_000_000));
        assert!(split(&s(&["--cc", "rate"])).unwrap_err().contains("needs --rate"));
        assert!(split(&s(&["--cc", "cubic"])).unwrap_err().contains("none, bbr or rate"));
    }
}
