//! kcptun's command line (urfave/cli v1 over Go's `flag` package, spec §7.6), parsed the Go way:
//! `-flag` = `--flag`, `-flag=value` or `-flag value`, booleans take no separate value, integers base 0.

use std::fmt::Write as _;

use crate::config::{Config, ConfigError, Side};
use crate::settings::{self, Kind, SETTINGS, Setting, Slot};

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
        let Some(fl) = settings::flag(side, name) else {
            let other = match side {
                Side::Client => Side::Server,
                Side::Server => Side::Client,
            };
            return Err(match settings::flag(other, name) {
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
                    if let Some(Slot::Bool(slot)) = fl.slot(&mut cfg) {
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
        if fl.kind == Kind::ConfigPath {
            config_path = value;
            continue;
        }
        let int = || {
            parse_go_int(&value).map_err(|reason| CliError::BadValue {
                flag: shown.to_owned(),
                value: value.clone(),
                reason,
            })
        };
        match fl.slot(&mut cfg) {
            Some(Slot::Str(slot)) => *slot = value,
            Some(Slot::Int(slot)) => *slot = int()?,
            Some(Slot::OptInt(slot)) => *slot = Some(int()?),
            Some(Slot::Bool(_)) | None => {}
        }
    }
    if config_path.is_empty() {
        return Ok(Command::Run(cfg, None));
    }
    let text = read(&config_path).map_err(|error| CliError::ConfigFile { path: config_path.clone(), error })?;
    cfg.apply_json(side, &text).map_err(|source| CliError::ConfigJson { path: config_path.clone(), source })?;
    Ok(Command::Run(cfg, Some(config_path)))
}

fn default_text(cfg: &Config, side: Side, fl: &Setting) -> Option<String> {
    let mut c = cfg.clone();
    match fl.slot(&mut c)? {
        Slot::Str(s) => Some(format!("{s:?}")),
        Slot::Int(v) => Some(v.to_string()),
        Slot::OptInt(_) => Some(cfg.smux_version(side).map_or("auto".into(), |v| v.to_string())),
        Slot::Bool(_) => None,
    }
}

/// The help text for `side`: every visible flag with its default, in urfave/cli's layout.
pub fn usage(side: Side) -> String {
    let cfg = Config::defaults(side);
    let rows: Vec<(String, String)> = SETTINGS
        .iter()
        .filter(|fl| fl.on(side) && !fl.hidden)
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
}
