//! The one table of kcptun's settings: flag names, JSON key, type, the sides that have it, help text and
//! the [`Config`] field it sets. The flag parser ([`crate::cli`]), the JSON reader
//! ([`Config::apply_json`]) and the help text all read it, so a setting is declared once.

use crate::config::{Config, Side};

/// How a setting's value is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer (Go `int`; flags in any base Go's `ParseInt(s, 0, 64)` accepts).
    Int,
    /// A boolean (a flag without a value sets it).
    Bool,
    /// `-c`: the JSON config file (a flag only).
    ConfigPath,
    /// `--help` (a flag only).
    Help,
    /// `--version` (a flag only).
    Version,
}

/// Where a setting's value goes.
pub enum Slot<'a> {
    /// A string field.
    Str(&'a mut String),
    /// An integer field.
    Int(&'a mut i64),
    /// An integer field that remembers whether it was given.
    OptInt(&'a mut Option<i64>),
    /// A boolean field.
    Bool(&'a mut bool),
}

/// One setting (or command-line-only flag).
pub struct Setting {
    /// Flag names; the first is the canonical one (help text, error messages).
    pub names: &'static [&'static str],
    /// kcptun's JSON key (`None`: a flag only).
    pub json: Option<&'static str>,
    /// The value's type.
    pub kind: Kind,
    /// `kcptun-client` has it.
    pub client: bool,
    /// `kcptun-server` has it.
    pub server: bool,
    /// Left out of the help text (kcptun's hidden flags).
    pub hidden: bool,
    /// The help text.
    pub usage: &'static str,
    field: Option<for<'a> fn(&'a mut Config) -> Slot<'a>>,
}

impl Setting {
    /// Whether `side` has this setting.
    pub fn on(&self, side: Side) -> bool {
        match side {
            Side::Client => self.client,
            Side::Server => self.server,
        }
    }

    /// The field of `c` this setting sets (`None` for `-c`, `--help`, `--version`).
    pub fn slot<'a>(&self, c: &'a mut Config) -> Option<Slot<'a>> {
        self.field.map(|f| f(c))
    }
}

const fn both(
    names: &'static [&'static str],
    kind: Kind,
    usage: &'static str,
    field: for<'a> fn(&'a mut Config) -> Slot<'a>,
) -> Setting {
    Setting { names, json: Some(names[0]), kind, client: true, server: true, hidden: false, usage, field: Some(field) }
}

const fn client(
    names: &'static [&'static str],
    kind: Kind,
    usage: &'static str,
    field: for<'a> fn(&'a mut Config) -> Slot<'a>,
) -> Setting {
    Setting { server: false, ..both(names, kind, usage, field) }
}

const fn server(
    names: &'static [&'static str],
    kind: Kind,
    usage: &'static str,
    field: for<'a> fn(&'a mut Config) -> Slot<'a>,
) -> Setting {
    Setting { client: false, ..both(names, kind, usage, field) }
}

const fn hidden(
    names: &'static [&'static str],
    kind: Kind,
    usage: &'static str,
    field: for<'a> fn(&'a mut Config) -> Slot<'a>,
) -> Setting {
    Setting { hidden: true, ..both(names, kind, usage, field) }
}

const fn flag_only(names: &'static [&'static str], kind: Kind, hidden: bool, usage: &'static str) -> Setting {
    Setting { names, json: None, kind, client: true, server: true, hidden, usage, field: None }
}

const CRYPT_USAGE: &str =
    "aes, aes-128, aes-128-gcm, aes-192, salsa20, blowfish, twofish, cast5, 3des, tea, xtea, xor, sm4, none, null";

/// Every setting and flag, in kcptun's help order.
pub static SETTINGS: &[Setting] = &[
    client(&["localaddr", "l"], Kind::Str, "local listen address, host:port or a unix socket path", |c| {
        Slot::Str(&mut c.localaddr)
    }),
    client(
        &["remoteaddr", "r"],
        Kind::Str,
        "kcp server address, eg: \"IP:29900\" for a single port, \"IP:minport-maxport\" for port range",
        |c| Slot::Str(&mut c.remoteaddr),
    ),
    server(
        &["listen", "l"],
        Kind::Str,
        "kcp server listen address, eg: \"IP:29900\" for a single port, \"IP:minport-maxport\" for port range",
        |c| Slot::Str(&mut c.listen),
    ),
    server(&["target", "t"], Kind::Str, "target server address, or path/to/unix_socket", |c| Slot::Str(&mut c.target)),
    both(&["key"], Kind::Str, "pre-shared secret between client and server", |c| Slot::Str(&mut c.key)),
    both(&["crypt"], Kind::Str, CRYPT_USAGE, |c| Slot::Str(&mut c.crypt)),
    both(&["mode"], Kind::Str, "profiles: fast3, fast2, fast, normal, manual", |c| Slot::Str(&mut c.mode)),
    Setting {
        json: Some("qpp"),
        ..both(&["QPP", "qpp"], Kind::Bool, "enable Quantum Permutation Pads(QPP)", |c| Slot::Bool(&mut c.qpp))
    },
    Setting {
        json: Some("qpp-count"),
        ..both(
            &["QPPCount", "qppcount"],
            Kind::Int,
            "the prime number of pads to use for QPP: The more pads you use, the more secure the encryption. Each pad requires 256 bytes.",
            |c| Slot::Int(&mut c.qpp_count),
        )
    },
    client(&["conn"], Kind::Int, "set num of UDP connections to server", |c| Slot::Int(&mut c.conn)),
    client(
        &["autoexpire"],
        Kind::Int,
        "set auto expiration time(in seconds) for a single UDP connection, 0 to disable",
        |c| Slot::Int(&mut c.autoexpire),
    ),
    client(&["scavengettl"], Kind::Int, "set how long an expired connection can live (in seconds)", |c| {
        Slot::Int(&mut c.scavengettl)
    }),
    both(&["mtu"], Kind::Int, "set maximum transmission unit for UDP packets", |c| Slot::Int(&mut c.mtu)),
    both(
        &["ratelimit"],
        Kind::Int,
        "set maximum outgoing speed (in bytes per second) for a single KCP connection, 0 to disable. Also known as packet pacing.",
        |c| Slot::Int(&mut c.ratelimit),
    ),
    both(&["sndwnd"], Kind::Int, "set send window size(num of packets)", |c| Slot::Int(&mut c.sndwnd)),
    both(&["rcvwnd"], Kind::Int, "set receive window size(num of packets)", |c| Slot::Int(&mut c.rcvwnd)),
    both(&["datashard", "ds"], Kind::Int, "set reed-solomon erasure coding - datashard", |c| {
        Slot::Int(&mut c.datashard)
    }),
    both(&["parityshard", "ps"], Kind::Int, "set reed-solomon erasure coding - parityshard", |c| {
        Slot::Int(&mut c.parityshard)
    }),
    both(&["dscp"], Kind::Int, "set DSCP(6bit)", |c| Slot::Int(&mut c.dscp)),
    both(&["nocomp"], Kind::Bool, "disable compression", |c| Slot::Bool(&mut c.nocomp)),
    both(&["sockbuf"], Kind::Int, "per-socket buffer in bytes", |c| Slot::Int(&mut c.sockbuf)),
    both(&["smuxver"], Kind::Int, "specify smux version, available 1,2", |c| Slot::OptInt(&mut c.smuxver)),
    both(&["smuxbuf"], Kind::Int, "the overall de-mux buffer in bytes", |c| Slot::Int(&mut c.smuxbuf)),
    both(&["framesize"], Kind::Int, "smux max frame size", |c| Slot::Int(&mut c.framesize)),
    both(&["streambuf"], Kind::Int, "per stream receive buffer in bytes, smux v2+", |c| Slot::Int(&mut c.streambuf)),
    both(&["keepalive"], Kind::Int, "seconds between heartbeats", |c| Slot::Int(&mut c.keepalive)),
    both(&["closewait"], Kind::Int, "the seconds to wait before tearing down a connection", |c| {
        Slot::Int(&mut c.closewait)
    }),
    both(
        &["snmplog"],
        Kind::Str,
        "collect snmp to file, aware of timeformat in golang, like: ./snmp-20060102.log",
        |c| Slot::Str(&mut c.snmplog),
    ),
    both(&["snmpperiod"], Kind::Int, "snmp collect period, in seconds", |c| Slot::Int(&mut c.snmpperiod)),
    both(&["log"], Kind::Str, "specify a log file to output, default goes to stderr", |c| Slot::Str(&mut c.log)),
    both(&["quiet"], Kind::Bool, "to suppress the 'stream open/close' messages", |c| Slot::Bool(&mut c.quiet)),
    both(&["tcp"], Kind::Bool, "to emulate a TCP connection(linux) (not supported by kcpd yet)", |c| {
        Slot::Bool(&mut c.tcp)
    }),
    both(&["pprof"], Kind::Bool, "start profiling server on :6060 (accepted, ignored by kcpd)", |c| {
        Slot::Bool(&mut c.pprof)
    }),
    flag_only(&["c"], Kind::ConfigPath, false, "config from json file, which will override the command from shell"),
    hidden(&["acknodelay"], Kind::Bool, "flush ack immediately when a packet is received", |c| {
        Slot::Bool(&mut c.acknodelay)
    }),
    hidden(&["nodelay"], Kind::Int, "KCP nodelay (mode manual)", |c| Slot::Int(&mut c.nodelay)),
    hidden(&["interval"], Kind::Int, "KCP interval in ms (mode manual)", |c| Slot::Int(&mut c.interval)),
    hidden(&["resend"], Kind::Int, "KCP fast resend (mode manual)", |c| Slot::Int(&mut c.resend)),
    hidden(&["nc"], Kind::Int, "KCP no congestion control (mode manual)", |c| Slot::Int(&mut c.nc)),
    flag_only(&["help", "h"], Kind::Help, false, "show help"),
    flag_only(&["version", "v"], Kind::Version, false, "print the version"),
    flag_only(&["V"], Kind::Version, true, "print the version"),
];

/// The flag `name` (as written, without dashes) of `side`.
pub fn flag(side: Side, name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.on(side) && s.names.contains(&name))
}

/// The setting of `side` whose JSON key matches `key` as Go's `encoding/json` matches field names
/// (case-insensitively, [`key_matches`]).
pub fn json_key(side: Side, key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.on(side) && s.json.is_some_and(|j| key_matches(key, j)))
}

/// Go `bytes.EqualFold` for a key against an ASCII field name: ASCII case-fold, plus the two non-ASCII
/// letters that fold to ASCII (KELVIN SIGN → k, LONG S → s).
pub fn key_matches(given: &str, field: &str) -> bool {
    let mut g = given.chars();
    for f in field.chars() {
        let Some(c) = g.next() else { return false };
        let c = match c {
            '\u{212A}' => 'k',
            '\u{17F}' => 's',
            c => c.to_ascii_lowercase(),
        };
        if c != f.to_ascii_lowercase() {
            return false;
        }
    }
    g.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_field_of_its_kind() {
        for s in SETTINGS {
            let mut c = Config::defaults(Side::Client);
            match (s.kind, s.slot(&mut c)) {
                (Kind::Str, Some(Slot::Str(_)))
                | (Kind::Int, Some(Slot::Int(_) | Slot::OptInt(_)))
                | (Kind::Bool, Some(Slot::Bool(_)))
                | (Kind::ConfigPath | Kind::Help | Kind::Version, None) => {}
                _ => panic!("{}: kind and field disagree", s.names[0]),
            }
            assert_eq!(s.json.is_some(), s.slot(&mut c).is_some(), "{}: a setting has a JSON key", s.names[0]);
        }
    }

    #[test]
    fn names_are_unique_per_side() {
        for side in [Side::Client, Side::Server] {
            let mut seen = std::collections::HashSet::new();
            for s in SETTINGS.iter().filter(|s| s.on(side)) {
                for n in s.names {
                    assert!(seen.insert(*n), "{side}: flag {n} twice");
                }
            }
        }
    }

    #[test]
    fn fold_matches_go() {
        assert!(key_matches("KEY", "key"));
        assert!(key_matches("\u{212A}ey", "key"));
        assert!(key_matches("\u{17F}ndwnd", "sndwnd"));
        assert!(key_matches("QPP-Count", "qpp-count"));
        assert!(!key_matches("keys", "key"));
        assert!(!key_matches("ke", "key"));
    }
}
