//! kcpd's own flags (not kcptun's): engine choices, taken out of the argument list before the kcptun
//! parser sees it. Go-style like the rest: `-threads 4`, `--threads=4`, `--io uring`, `--no-pin`,
//! `--halfclose`, `--snmp-layout deb`.

use crate::run::EngineOptions;
use crate::snmp::Layout;

/// The help text of these flags (shown by `kcpd -h`, `kcpd client -h` and `kcpd server -h`).
pub const HELP: &str = "\
kcpd engine flags (kcpd only, beside kcptun's):
   --threads value      shards (threads); 0 = one per core (default: 0)
   --io value           UDP backend: mmsg (default on Linux), uring, poll
   --no-pin             do not pin shards to cores
   --halfclose          smux half-close between two kcpd ends (kcptun closes both directions at once)
   --snmp-layout value  SNMP dump and --snmplog CSV as kcptun \"new\" (kcp-go 5.6.64, 31 columns) or
                        \"deb\" (Debian's kcptun 20210922, 25 columns) prints them (default: \"new\")";

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
            "no-pin" if inline.is_none() => opts.pin = false,
            "halfclose" if inline.is_none() => opts.half_close = true,
            _ => rest.push(a.clone()),
        }
        i += 1;
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
        assert!(split(&s(&["--threads", "x"])).is_err());
        assert!(split(&s(&["--io", "epoll"])).unwrap_err().contains("mmsg, uring or poll"));
        assert_eq!(split(&s(&["--snmp-layout", "deb"])).unwrap().0.snmp_layout, Layout::Deb);
        assert_eq!(split(&s(&["-snmp-layout=new"])).unwrap().0.snmp_layout, Layout::New);
        assert_eq!(split(&s(&[])).unwrap().0.snmp_layout, Layout::New);
        assert!(split(&s(&["--snmp-layout", "old"])).unwrap_err().contains("deb or new"));
    }
}
