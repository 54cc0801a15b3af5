//! kcptun's command line (urfave/cli v1 over Go's `flag` package, spec §7.6), parsed the Go way:
//! `-flag` = `--flag`, `-flag=value` or `-flag value`, booleans take no separate value, integers base 0.

use std::fmt::Write as _;

use crate::config::{Config, ConfigError, Side};

/// What the command line asks for.
#[allow(clippy::large_enum_variant, reason = "built once per process")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run with this configuration (defaults, then flags, then the `-c` JSON) and the `-c` path used.
    Run(Config, Option<String>),
    /// Print this help text.
    Help(String),
    /// Print the version.
    Version,
}

/// A command-line error; the binary prints it and exits non-zero.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A flag neither side knows.
    #[error("flag provided but not defined: {0} (see --help)")]
    Unknown(String),
    /// A flag of the other side.
    #[error("{flag} is a {other} flag; the {side} does not accept it")]
    OtherSide {
        /// The flag as written.
        flag: String,
        /// The side being parsed.
        side: Side,
        /// The side that has the flag.
        other: Side,
    },
    /// A non-boolean flag at the end without a value.
    #[error("flag needs an argument: {0}")]
    MissingValue(String),
    /// A value that does not parse.
    #[error("invalid value {value:?} for flag {flag}: {reason}")]
    BadValue {
        /// The flag as written.
        flag: String,
        /// The value given.
        value: String,
        /// Why it does not parse.
        reason: &'static str,
    },
    /// `---x`, `-=x` and the like.
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// A positional argument (kcptun ignores them; kcpd refuses them).
    #[error("unexpected argument {0:?}: only flags are accepted (see --help)")]
    Positional(String),
    /// The `-c` file cannot be read.
    #[error("-c {path}: {error}")]
    ConfigFile {
        /// The path given.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// The `-c` file is not a valid kcptun JSON config.
    #[error("-c {path}: {source}")]
    ConfigJson {
        /// The path given.
        path: String,
        /// What is wrong.
        source: ConfigError,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Bool,
    ConfigPath,
    Help,
    Version,
}

struct Flag {
    /// Names; the first is the canonical one (and the `Config` field).
    names: &'static [&'static str],
    kind: Kind,
    client: bool,
    server: bool,
    hidden: bool,
    usage: &'static str,
}

const fn f(names: &'static [&'static str], kind: Kind, client: bool, server: bool, usage: &'static str) -> Flag {
    Flag { names, kind, client, server, hidden: false, usage }
}

const fn hidden(names: &'static [&'static str], kind: Kind, usage: &'static str) -> Flag {
    Flag { names, kind, client: true, server: true, hidden: true, usage }
}

const CRYPT_USAGE: &str =
    "aes, aes-128, aes-128-gcm, aes-192, salsa20, blowfish, twofish, cast5, 3des, tea, xtea, xor, sm4, none, null";

/// Every flag, in kcptun's help order.
static FLAGS: &[Flag] = &[
    f(&["localaddr", "l"], Kind::Str, true, false, "local listen address, host:port or a unix socket path"),
    f(
        &["remoteaddr", "r"],
        Kind::Str,
        true,
        false,
        "kcp server address, eg: \"IP:29900\" for a single port, \"IP:minport-maxport\" for port range",
    ),
    f(
        &["listen", "l"],
        Kind::Str,
        false,
        true,
        "kcp server listen address, eg: \"IP:29900\" for a single port, \"IP:minport-maxport\" for port range",
    ),
    f(&["target", "t"], Kind::Str, false, true, "target server address, or path/to/unix_socket"),
    f(&["key"], Kind::Str, true, true, "pre-shared secret between client and server"),
    f(&["crypt"], Kind::Str, true, true, CRYPT_USAGE),
    f(&["mode"], Kind::Str, true, true, "profiles: fast3, fast2, fast, normal, manual"),
    f(&["QPP", "qpp"], Kind::Bool, true, true, "enable Quantum Permutation Pads(QPP)"),
    f(
        &["QPPCount", "qppcount"],
        Kind::Int,
        true,
        true,
        "the prime number of pads to use for QPP: The more pads you use, the more secure the encryption. Each pad requires 256 bytes.",
    ),
    f(&["conn"], Kind::Int, true, false, "set num of UDP connections to server"),
    f(
        &["autoexpire"],
        Kind::Int,
        true,
        false,
        "set auto expiration time(in seconds) for a single UDP connection, 0 to disable",
    ),
    f(&["scavengettl"], Kind::Int, true, false, "set how long an expired connection can live (in seconds)"),
    f(&["mtu"], Kind::Int, true, true, "set maximum transmission unit for UDP packets"),
    f(
        &["ratelimit"],
        Kind::Int,
        true,
        true,
        "set maximum outgoing speed (in bytes per second) for a single KCP connection, 0 to disable. Also known as packet pacing.",
    ),
    f(&["sndwnd"], Kind::Int, true, true, "set send window size(num of packets)"),
    f(&["rcvwnd"], Kind::Int, true, true, "set receive window size(num of packets)"),
    f(&["datashard", "ds"], Kind::Int, true, true, "set reed-solomon erasure coding - datashard"),
    f(&["parityshard", "ps"], Kind::Int, true, true, "set reed-solomon erasure coding - parityshard"),
    f(&["dscp"], Kind::Int, true, true, "set DSCP(6bit)"),
    f(&["nocomp"], Kind::Bool, true, true, "disable compression"),
    f(&["sockbuf"], Kind::Int, true, true, "per-socket buffer in bytes"),
    f(&["smuxver"], Kind::Int, true, true, "specify smux version, available 1,2"),
    f(&["smuxbuf"], Kind::Int, true, true, "the overall de-mux buffer in bytes"),
    f(&["framesize"], Kind::Int, true, true, "smux max frame size"),
    f(&["streambuf"], Kind::Int, true, true, "per stream receive buffer in bytes, smux v2+"),
    f(&["keepalive"], Kind::Int, true, true, "seconds between heartbeats"),
    f(&["closewait"], Kind::Int, true, true, "the seconds to wait before tearing down a connection"),
    f(
        &["snmplog"],
        Kind::Str,
        true,
        true,
        "collect snmp to file, aware of timeformat in golang, like: ./snmp-20060102.log",
    ),
    f(&["snmpperiod"], Kind::Int, true, true, "snmp collect period, in seconds"),
    f(&["log"], Kind::Str, true, true, "specify a log file to output, default goes to stderr"),
    f(&["quiet"], Kind::Bool, true, true, "to suppress the 'stream open/close' messages"),
    f(&["tcp"], Kind::Bool, true, true, "to emulate a TCP connection(linux) (not supported by kcpd yet)"),
    f(&["pprof"], Kind::Bool, true, true, "start profiling server on :6060 (accepted, ignored by kcpd)"),
    f(&["c"], Kind::ConfigPath, true, true, "config from json file, which will override the command from shell"),
    hidden(&["acknodelay"], Kind::Bool, "flush ack immediately when a packet is received"),
    hidden(&["nodelay"], Kind::Int, "KCP nodelay (mode manual)"),
    hidden(&["interval"], Kind::Int, "KCP interval in ms (mode manual)"),
    hidden(&["resend"], Kind::Int, "KCP fast resend (mode manual)"),
    hidden(&["nc"], Kind::Int, "KCP no congestion control (mode manual)"),
    f(&["help", "h"], Kind::Help, true, true, "show help"),
    f(&["version", "v"], Kind::Version, true, true, "print the version"),
    hidden(&["V"], Kind::Version, "print the version"),
];

fn on_side(fl: &Flag, side: Side) -> bool {
    match side {
        Side::Client => fl.client,
        Side::Server => fl.server,
    }
}

fn lookup(side: Side, name: &str) -> Option<&'static Flag> {
    FLAGS.iter().find(|fl| on_side(fl, side) && fl.names.contains(&name))
}

/// Go `strconv.ParseInt(s, 0, 64)`: optional sign, `0x`/`0o`/`0b`/leading-`0` prefixes, `_` between digits.
pub fn parse_go_int(s: &str) -> Result<i64, &'static str> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let b = body.as_bytes();
    if b.is_empty() {
        return Err("parse error");
    }
    let (radix, digits) = if b[0] == b'0' && b.len() >= 3 && matches!(b[1] | 0x20, b'x' | b'o' | b'b') {
        let r = match b[1] | 0x20 {
            b'x' => 16,
            b'o' => 8,
            _ => 2,
        };
        (r, &body[2..])
    } else if b[0] == b'0' && b.len() > 1 {
        (8, &body[1..])
    } else {
        (10, body)
    };
    let mut mag: u64 = 0;
    let mut underscores = false;
    for c in digits.chars() {
        if c == '_' {
            underscores = true;
            continue;
        }
        let d = c.to_digit(radix).ok_or("parse error")?;
        mag =
            mag.checked_mul(u64::from(radix)).and_then(|m| m.checked_add(u64::from(d))).ok_or("value out of range")?;
    }
    if underscores && !underscore_ok(s) {
        return Err("parse error");
    }
    if neg {
        if mag <= i64::MAX as u64 + 1 { Ok((mag as i64).wrapping_neg()) } else { Err("value out of range") }
    } else {
        i64::try_from(mag).map_err(|_| "value out of range")
    }
}

/// Go `strconv.underscoreOK`: every `_` sits between digits (a base prefix counts as a digit).
fn underscore_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if let Some(b'-' | b'+') = b.first() {
        b = &b[1..];
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1] | 0x20, b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1] | 0x20 == b'x';
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || hex && (b'a'..=b'f').contains(&(c | 0x20)) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// Go `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn str_field<'a>(c: &'a mut Config, name: &str) -> Option<&'a mut String> {
    Some(match name {
        "localaddr" => &mut c.localaddr,
        "remoteaddr" => &mut c.remoteaddr,
        "listen" => &mut c.listen,
        "target" => &mut c.target,
        "key" => &mut c.key,
        "crypt" => &mut c.crypt,
        "mode" => &mut c.mode,
        "snmplog" => &mut c.snmplog,
        "log" => &mut c.log,
        _ => return None,
    })
}

fn bool_field<'a>(c: &'a mut Config, name: &str) -> Option<&'a mut bool> {
    Some(match name {
        "QPP" => &mut c.qpp,
        "nocomp" => &mut c.nocomp,
        "quiet" => &mut c.quiet,
        "tcp" => &mut c.tcp,
        "pprof" => &mut c.pprof,
        "acknodelay" => &mut c.acknodelay,
        _ => return None,
    })
}

/// Parses kcptun's flags for `side` (`args` without the program/subcommand name). `env_key` is the value
/// of `KCPTUN_KEY`, if set: it replaces the key default; an explicit `--key` and the JSON still win.
pub fn parse(side: Side, args: &[String], env_key: Option<&str>) -> Result<Command, CliError> {
    parse_with(side, args, env_key, &|path| {
        std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).map_err(|e| e.to_string())
    })
}

/// [`parse`] with the `-c` file read by `read`.
pub fn parse_with(
    side: Side,
    args: &[String],
    env_key: Option<&str>,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Command, CliError> {
    let mut cfg = Config::defaults(side);
    if let Some(k) = env_key {
        cfg.key = k.to_owned();
    }
    let mut config_path = String::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let b = arg.as_bytes();
        if b.len() < 2 || b[0] != b'-' {
            return Err(CliError::Positional(arg.clone()));
        }
        let dashes = if b[1] == b'-' { 2 } else { 1 };
        if arg == "--" {
            if let Some(rest) = args.get(i) {
                return Err(CliError::Positional(rest.clone()));
            }
            break;
        }
        let spec = &arg[dashes..];
        if spec.is_empty() || spec.starts_with('-') || spec.starts_with('=') {
            return Err(CliError::BadSyntax(arg.clone()));
        }
        let (name, inline) = match spec.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (spec, None),
        };
        let shown = &arg[..dashes + name.len()];
        let Some(fl) = lookup(side, name) else {
            let other = match side {
                Side::Client => Side::Server,
                Side::Server => Side::Client,
            };
            return Err(match lookup(other, name) {
                Some(_) => CliError::OtherSide { flag: shown.to_owned(), side, other },
                None => CliError::Unknown(shown.to_owned()),
            });
        };
        if matches!(fl.kind, Kind::Bool | Kind::Help | Kind::Version) {
            let on = match inline {
                None => true,
                Some(v) => parse_go_bool(v).ok_or_else(|| CliError::BadValue {
                    flag: shown.to_owned(),
                    value: v.to_owned(),
                    reason: "parse error",
                })?,
            };
            match fl.kind {
                Kind::Help if on => return Ok(Command::Help(usage(side))),
                Kind::Version if on => return Ok(Command::Version),
                Kind::Bool => {
                    if let Some(slot) = bool_field(&mut cfg, fl.names[0]) {
                        *slot = on;
                    }
                }
                _ => {}
            }
            continue;
        }
        let value = match inline {
            Some(v) => v.to_owned(),
            None => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(CliError::MissingValue(shown.to_owned())),
            },
        };
        let name = fl.names[0];
        match fl.kind {
            Kind::Str => {
                if let Some(slot) = str_field(&mut cfg, name) {
                    *slot = value;
                }
            }
            Kind::ConfigPath => config_path = value,
            _ => {
                let n = parse_go_int(&value).map_err(|reason| CliError::BadValue {
                    flag: shown.to_owned(),
                    value: value.clone(),
                    reason,
                })?;
                if name == "smuxver" {
                    cfg.smuxver = Some(n);
                } else if let Some(slot) = cfg.int_field(&name.to_ascii_lowercase()) {
                    *slot = n;
                }
            }
        }
    }
    if config_path.is_empty() {
        return Ok(Command::Run(cfg, None));
    }
    let text = read(&config_path).map_err(|error| CliError::ConfigFile { path: config_path.clone(), error })?;
    cfg.apply_json(side, &text).map_err(|source| CliError::ConfigJson { path: config_path.clone(), source })?;
    Ok(Command::Run(cfg, Some(config_path)))
}

fn default_text(cfg: &Config, side: Side, fl: &Flag) -> Option<String> {
    let mut c = cfg.clone();
    let name = fl.names[0];
    match fl.kind {
        Kind::Str => str_field(&mut c, name).map(|s| format!("{s:?}")),
        Kind::Int if name == "smuxver" => Some(c.smux_version(side).map_or("auto".into(), |v| v.to_string())),
        Kind::Int => c.int_field(&name.to_ascii_lowercase()).map(|v| v.to_string()),
        _ => None,
    }
}

/// The help text for `side`: every visible flag with its default, in urfave/cli's layout.
pub fn usage(side: Side) -> String {
    let cfg = Config::defaults(side);
    let rows: Vec<(String, String)> = FLAGS
        .iter()
        .filter(|fl| on_side(fl, side) && !fl.hidden)
        .map(|fl| {
            let takes_value = matches!(fl.kind, Kind::Str | Kind::Int | Kind::ConfigPath);
            let mut names: Vec<&str> = fl.names.to_vec();
            // Long names first, then the one-letter alias, as urfave/cli prints them.
            names.sort_by_key(|n| n.len() == 1);
            let left = names
                .iter()
                .map(|n| {
                    let dash = if n.len() == 1 { "-" } else { "--" };
                    if takes_value { format!("{dash}{n} value") } else { format!("{dash}{n}") }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let mut right = fl.usage.to_owned();
            if let Some(d) = default_text(&cfg, side, fl) {
                let _ = write!(right, " (default: {d})");
            }
            if fl.names[0] == "key" {
                right.push_str(" [$KCPTUN_KEY]");
            }
            (left, right)
        })
        .collect();
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out =
        format!("NAME:\n   kcpd {side} - kcptun-compatible {side}\n\nUSAGE:\n   kcpd {side} [options]\n\nOPTIONS:\n");
    for (l, r) in rows {
        let _ = writeln!(out, "   {l:width$}  {r}");
    }
    out
}

/// Fuzz harness: byte 0 picks the side, the rest is NUL-separated arguments; `-c X` reads `X` itself
/// as the JSON text. Never panics.
pub fn fuzz_args(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let side = if sel & 1 == 0 { Side::Client } else { Side::Server };
    let args: Vec<String> = rest.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let env = (sel & 2 != 0).then_some("envkey");
    // kcpd's own flags come off first, as in `main`.
    let args = match crate::engine_flags::split(&args) {
        Ok((_, rest)) => rest,
        Err(_) => args,
    };
    if let Ok(Command::Run(cfg, _)) = parse_with(side, &args, env, &|p| Ok(p.to_owned())) {
        let _ = cfg.validate(side);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_ints() {
        for (s, v) in [
            ("0", 0),
            ("10", 10),
            ("-10", -10),
            ("+7", 7),
            ("0x10", 16),
            ("0X1f", 31),
            ("0o17", 15),
            ("017", 15),
            ("0b101", 5),
            ("1_000", 1000),
            ("0x_1f", 31),
            ("0_17", 15),
            ("-0x10", -16),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_go_int(s), Ok(v), "{s}");
        }
        for s in ["", "-", "0x", "08", "1__0", "_1", "1_", "0x_", "1e3", "1.0", " 1", "abc", "0b2", "--1"] {
            assert_eq!(parse_go_int(s), Err("parse error"), "{s}");
        }
        assert_eq!(parse_go_int("9223372036854775808"), Err("value out of range"));
        assert_eq!(parse_go_int("-9223372036854775809"), Err("value out of range"));
        assert_eq!(parse_go_int("0x1ffffffffffffffff"), Err("value out of range"));
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("False"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool(""), None);
    }

    #[test]
    fn every_flag_has_a_field() {
        for side in [Side::Client, Side::Server] {
            for fl in FLAGS.iter().filter(|fl| on_side(fl, side)) {
                let mut c = Config::defaults(side);
                let n = fl.names[0];
                let ok = match fl.kind {
                    Kind::Str => str_field(&mut c, n).is_some(),
                    Kind::Bool => bool_field(&mut c, n).is_some(),
                    Kind::Int => n == "smuxver" || c.int_field(&n.to_ascii_lowercase()).is_some(),
                    _ => true,
                };
                assert!(ok, "{n}");
            }
        }
    }
}
