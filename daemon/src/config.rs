//! The settings of both kcptun ends (NEW profile, spec §7.6), kcptun's JSON config (§7.7) and validation.
//!
//! Integers are kept as `i64` (Go `int`) exactly as given; [`Config::validate`] checks the ranges.

use std::fmt;
use std::path::PathBuf;

use kcpd_crypto::{Method, UnknownMethod};
use kcpd_datapath::proto::kcp::NoDelay;
use serde_json::Value;

use crate::settings::{self, Slot};

/// Which end of the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// `kcptun-client`: local TCP listener, KCP towards the server.
    Client,
    /// `kcptun-server`: KCP listener, TCP towards the target.
    Server,
}

impl Side {
    /// `"client"` or `"server"`.
    pub const fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every kcptun setting of both sides. Fields of the other side keep their defaults and are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Client: local listen address, `host:port` or a unix socket path.
    pub localaddr: String,
    /// Client: server address, `host:port` or `host:min-max`.
    pub remoteaddr: String,
    /// Server: KCP listen address, `host:port` or `host:min-max`.
    pub listen: String,
    /// Server: target, `host:port` or a unix socket path.
    pub target: String,
    /// Pre-shared secret.
    pub key: String,
    /// Cipher name (`--crypt`).
    pub crypt: String,
    /// KCP profile: normal, fast, fast2, fast3, manual.
    pub mode: String,
    /// Client: number of KCP sessions.
    pub conn: i64,
    /// Client: session expiry in seconds, 0 = off.
    pub autoexpire: i64,
    /// Client: seconds an expired session may live on.
    pub scavengettl: i64,
    /// UDP MTU.
    pub mtu: i64,
    /// Bytes/s per KCP session, 0 = off.
    pub ratelimit: i64,
    /// KCP send window (packets).
    pub sndwnd: i64,
    /// KCP receive window (packets).
    pub rcvwnd: i64,
    /// FEC data shards (0 disables FEC).
    pub datashard: i64,
    /// FEC parity shards (0 disables FEC).
    pub parityshard: i64,
    /// DSCP, 6 bits.
    pub dscp: i64,
    /// Disable snappy compression.
    pub nocomp: bool,
    /// KCP ACK no-delay.
    pub acknodelay: bool,
    /// KCP nodelay (manual mode only).
    pub nodelay: i64,
    /// KCP interval in ms (manual mode only).
    pub interval: i64,
    /// KCP fast resend (manual mode only).
    pub resend: i64,
    /// KCP no congestion control (manual mode only).
    pub nc: i64,
    /// SO_SNDBUF/SO_RCVBUF bytes.
    pub sockbuf: i64,
    /// smux version; `None` = not given (see [`Config::smux_version`]).
    pub smuxver: Option<i64>,
    /// smux session receive buffer bytes.
    pub smuxbuf: i64,
    /// smux max frame size.
    pub framesize: i64,
    /// smux v2 per-stream buffer bytes.
    pub streambuf: i64,
    /// smux keepalive interval, seconds.
    pub keepalive: i64,
    /// Seconds to wait after one copy direction ends.
    pub closewait: i64,
    /// SNMP CSV file name (Go time layout), empty = off.
    pub snmplog: String,
    /// SNMP CSV period, seconds.
    pub snmpperiod: i64,
    /// Log file, empty = stderr.
    pub log: String,
    /// Suppress stream open/close messages.
    pub quiet: bool,
    /// Fake-TCP transport (unsupported).
    pub tcp: bool,
    /// Profiling server (accepted, ignored).
    pub pprof: bool,
    /// Quantum Permutation Pads.
    pub qpp: bool,
    /// Number of QPP pads.
    pub qpp_count: i64,
}

/// The KCP profiles `--mode` accepts.
pub const MODES: [&str; 5] = ["normal", "fast", "fast2", "fast3", "manual"];

/// A configuration error; the message names the flag or JSON key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Unknown `--crypt`.
    #[error("--crypt: {0}")]
    Crypt(#[from] UnknownMethod),
    /// Unknown `--mode`.
    #[error("--mode: unknown mode {0:?}; valid modes: normal, fast, fast2, fast3, manual")]
    Mode(String),
    /// An integer setting outside its range.
    #[error("--{flag} {value} is out of range; allowed: {allowed}")]
    Range {
        /// Flag name without dashes.
        flag: &'static str,
        /// The value given.
        value: i64,
        /// The allowed values, in words.
        allowed: &'static str,
    },
    /// More than 256 FEC shards.
    #[error("--datashard {ds} + --parityshard {ps} = {} shards; at most 256 are allowed", ds + ps)]
    FecShards {
        /// Data shards.
        ds: i64,
        /// Parity shards.
        ps: i64,
    },
    /// `--streambuf` larger than `--smuxbuf` (smux VerifyConfig).
    #[error("--streambuf {streambuf} must not exceed --smuxbuf {smuxbuf}")]
    StreamBuf {
        /// The per-stream buffer.
        streambuf: i64,
        /// The session buffer.
        smuxbuf: i64,
    },
    /// `--tcp` where fake TCP cannot run.
    #[error("--tcp (fake TCP) needs Linux")]
    TcpUnsupported,
    /// A malformed address.
    #[error("--{flag} {value:?}: {reason}")]
    Address {
        /// Flag name without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The JSON text does not parse.
    #[error("JSON config: {0}")]
    Json(String),
    /// The JSON document is not an object.
    #[error("JSON config: expected an object at the top level, got {0}")]
    JsonNotObject(&'static str),
    /// A JSON value of the wrong type.
    #[error("JSON config: key {key:?} must be {expected}, got {found}")]
    JsonType {
        /// The key as written in the file.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// What was found.
        found: String,
    },
}

fn json_type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Store JSON value `v` of `key` in `slot`, checking its type as Go's `encoding/json` does.
fn set_json(key: &str, slot: Slot<'_>, v: &Value) -> Result<(), ConfigError> {
    let bad =
        |expected: &'static str| ConfigError::JsonType { key: key.to_owned(), expected, found: json_type_name(v) };
    // Go decodes an int field with ParseInt(literal, 10, 64): no fraction, no exponent, within i64.
    let int = || match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| bad("an integer within the 64-bit signed range")),
        _ => Err(bad("an integer")),
    };
    match (slot, v) {
        (Slot::Str(f), Value::String(s)) => *f = s.clone(),
        (Slot::Str(_), _) => return Err(bad("a string")),
        (Slot::Bool(f), Value::Bool(b)) => *f = *b,
        (Slot::Bool(_), _) => return Err(bad("a boolean")),
        (Slot::Int(f), _) => *f = int()?,
        (Slot::OptInt(f), _) => *f = Some(int()?),
    }
    Ok(())
}

fn port_of(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go `net.SplitHostPort`: `host:port` or `[v6]:port`; host returned without brackets.
pub fn split_host_port(s: &str) -> Result<(&str, &str), String> {
    let Some(i) = s.rfind(':') else { return Err("missing port in address".into()) };
    let (host, j, k) = if s.starts_with('[') {
        let Some(end) = s.find(']') else { return Err("missing ']' in address".into()) };
        if end + 1 == s.len() {
            return Err("missing port in address".into());
        } else if end + 1 != i {
            return Err(if s.as_bytes()[end + 1] == b':' {
                "too many colons in address"
            } else {
                "missing port in address"
            }
            .into());
        }
        (&s[1..end], 1, end + 1)
    } else {
        let host = &s[..i];
        if host.contains(':') {
            return Err("too many colons in address".into());
        }
        (host, 0, 0)
    };
    if s[j..].contains('[') {
        return Err("unexpected '[' in address".into());
    }
    if s[k..].contains(']') {
        return Err("unexpected ']' in address".into());
    }
    Ok((host, &s[i + 1..]))
}

/// `host` and `port` joined as Go `net.JoinHostPort` does (brackets around a host with a colon).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn addr_err(flag: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Address { flag, value: value.to_owned(), reason: reason.into() }
}

/// kcptun's multiport address `host:port` or `host:min-max` (§7.1), as `(host, min, max)`.
///
/// The host is returned without brackets; empty means all addresses. A single port may be 0; a range
/// needs `1 <= min <= max <= 65535`.
pub fn parse_port_range(s: &str) -> Result<(String, u16, u16), ConfigError> {
    let err = |r: &str| addr_err("remoteaddr/listen", s, r);
    let Some(i) = s.rfind(':') else { return Err(err("expected host:port or host:min-max")) };
    let (host, ports) = (&s[..i], &s[i + 1..]);
    let host = if let Some(h) = host.strip_prefix('[') {
        match h.strip_suffix(']') {
            Some(h) if !h.contains(['[', ']']) => h,
            _ => return Err(err("malformed [IPv6] host")),
        }
    } else if host.contains([':', '[', ']']) {
        return Err(err("an IPv6 host must be written in brackets, e.g. [::1]:29900"));
    } else {
        host
    };
    let (min, max) = match ports.split_once('-') {
        None => {
            let p = port_of(ports).ok_or_else(|| err("the port must be a number in 0..=65535"))?;
            (p, p)
        }
        Some((a, b)) => {
            let (Some(a), Some(b)) = (port_of(a), port_of(b)) else {
                return Err(err("a port range must be min-max with ports in 1..=65535"));
            };
            if a == 0 || a > b {
                return Err(err("a port range must be min-max with 1 <= min <= max <= 65535"));
            }
            (a, b)
        }
    };
    Ok((host.to_owned(), min, max))
}

/// `host:port` (numeric port) or, when it has no port, a unix socket path (NEW kcptun).
fn tcp_or_unix(flag: &'static str, value: &str, min_port: u16) -> Result<LocalAddr, ConfigError> {
    match split_host_port(value) {
        Ok((host, port)) => match port_of(port) {
            Some(port) if port >= min_port => Ok(LocalAddr::Tcp { host: host.to_owned(), port }),
            _ => Err(addr_err(flag, value, format!("the port must be a number in {min_port}..=65535"))),
        },
        Err(_) if value.is_empty() => Err(addr_err(flag, value, "expected host:port or a unix socket path")),
        Err(_) if value.contains('\0') => Err(addr_err(flag, value, "a unix socket path must not contain NUL")),
        Err(_) => Ok(LocalAddr::Unix(PathBuf::from(value))),
    }
}

/// kcptun's multiport address, parsed: `host:port` (`min == max`) or `host:min-max`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// Without brackets; empty: every address.
    pub host: String,
    /// The first port.
    pub min: u16,
    /// The last port.
    pub max: u16,
}

/// A local endpoint, parsed: TCP `host:port`, or (NEW kcptun) a unix socket path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalAddr {
    /// `host:port` (host without brackets; empty: every address).
    Tcp {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

/// The addresses of one side, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addrs {
    /// `--localaddr` and `--remoteaddr`.
    Client {
        /// Where local connections are accepted.
        local: LocalAddr,
        /// The server's port range.
        remote: PortRange,
    },
    /// `--listen` and `--target`.
    Server {
        /// The UDP port range to listen on.
        listen: PortRange,
        /// Where streams are connected.
        target: LocalAddr,
    },
}

/// A valid configuration in typed form: what [`Config::settings`] makes of the strings and `i64`s, once,
/// for the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `--crypt`.
    pub method: Method,
    /// `--mode`, or the hidden manual flags (kcp-go's clamping applied).
    pub nodelay: NoDelay,
    /// The smux version ([`Config::smux_version`]).
    pub smux_version: Option<u8>,
    /// The side's addresses.
    pub addrs: Addrs,
    /// What kcptun would warn about (the tunnel still runs).
    pub warnings: Vec<String>,
}

fn range(flag: &'static str, value: i64, lo: i64, hi: i64, allowed: &'static str) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) { Ok(()) } else { Err(ConfigError::Range { flag, value, allowed }) }
}

const I32_MAX: i64 = i32::MAX as i64;

impl Config {
    /// kcptun's NEW-profile defaults for `side`.
    pub fn defaults(side: Side) -> Self {
        let (sndwnd, rcvwnd, closewait, smuxver) = match side {
            // No --smuxver: v2 first, then whatever a version mismatch teaches (see `smux_version`).
            Side::Client => (128, 512, 0, None),
            Side::Server => (1024, 1024, 30, None),
        };
        Config {
            localaddr: ":12948".into(),
            remoteaddr: "vps:29900".into(),
            listen: ":29900".into(),
            target: "127.0.0.1:12948".into(),
            key: "it's a secrect".into(),
            crypt: "aes".into(),
            mode: "fast".into(),
            conn: 1,
            autoexpire: 0,
            scavengettl: 600,
            mtu: 1350,
            ratelimit: 0,
            sndwnd,
            rcvwnd,
            datashard: 10,
            parityshard: 3,
            dscp: 0,
            nocomp: false,
            acknodelay: false,
            nodelay: 0,
            interval: 50,
            resend: 0,
            nc: 0,
            sockbuf: 4_194_304,
            smuxver,
            smuxbuf: 4_194_304,
            framesize: 8192,
            streambuf: 2_097_152,
            keepalive: 10,
            closewait,
            snmplog: String::new(),
            snmpperiod: 60,
            log: String::new(),
            quiet: false,
            tcp: false,
            pprof: false,
            qpp: false,
            qpp_count: 61,
        }
    }

    /// The smux version to use: the given one, else 2 on a client (which falls back to 1 when a v1 server
    /// does not understand it) and `None` (detect per session) on a server. `None` also for a value that is
    /// not a `u8` (rejected by [`Config::validate`]).
    pub fn smux_version(&self, side: Side) -> Option<u8> {
        match (self.smuxver, side) {
            (Some(v), _) => u8::try_from(v).ok(),
            (None, Side::Client) => Some(2),
            (None, Side::Server) => None,
        }
    }

    /// `(nodelay, interval, resend, nc)` after applying `mode` as kcptun does; `manual` (or an unknown mode)
    /// uses the fields.
    pub fn nodelay_params(&self) -> (i64, i64, i64, i64) {
        match kcpd_datapath::proto::kcp::Mode::preset(&self.mode).map(|m| m.nodelay()) {
            Some(n) => (i64::from(n.nodelay), i64::from(n.interval), i64::from(n.resend), i64::from(n.nc)),
            None => (self.nodelay, self.interval, self.resend, self.nc),
        }
    }

    /// The parsed `--crypt` method.
    pub fn method(&self) -> Result<Method, ConfigError> {
        Ok(self.crypt.parse::<Method>()?)
    }

    /// Applies a kcptun JSON config over the current values, as Go `encoding/json` decodes into kcptun's
    /// Config: keys matched case-insensitively, unknown keys (and the other side's keys) ignored, `null`
    /// leaves a value unchanged, a wrong type is an error. Only the first JSON value of `text` is read
    /// (Go `json.Decoder`). On error `self` may be partly updated.
    pub fn apply_json(&mut self, side: Side, text: &str) -> Result<(), ConfigError> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        let doc = match stream.next() {
            None => return Err(ConfigError::Json("empty document".into())),
            Some(Err(e)) => return Err(ConfigError::Json(e.to_string())),
            Some(Ok(v)) => v,
        };
        let obj = match doc {
            Value::Object(m) => m,
            Value::Null => return Ok(()),
            Value::Bool(_) => return Err(ConfigError::JsonNotObject("a boolean")),
            Value::Number(_) => return Err(ConfigError::JsonNotObject("a number")),
            Value::String(_) => return Err(ConfigError::JsonNotObject("a string")),
            Value::Array(_) => return Err(ConfigError::JsonNotObject("an array")),
        };
        for (key, v) in &obj {
            // Unknown keys (and the other side's) are ignored, as are nulls.
            let Some(setting) = settings::json_key(side, key) else { continue };
            if v.is_null() {
                continue;
            }
            if let Some(slot) = setting.slot(self) {
                set_json(key, slot, v)?;
            }
        }
        Ok(())
    }

    /// Checks every setting `side` uses; returns the warnings kcptun would print (the tunnel still runs).
    pub fn validate(&self, side: Side) -> Result<Vec<String>, ConfigError> {
        self.settings(side).map(|s| s.warnings)
    }

    /// Checks every setting `side` uses and returns them typed (the one place they are parsed).
    pub fn settings(&self, side: Side) -> Result<Settings, ConfigError> {
        let mut warnings = Vec::new();
        let addrs = match side {
            Side::Client => {
                let local = tcp_or_unix("localaddr", &self.localaddr, 0)?;
                let (host, min, max) = parse_port_range(&self.remoteaddr).map_err(|e| rename_addr(e, "remoteaddr"))?;
                range("conn", self.conn, 1, 65535, "1..=65535")?;
                range("autoexpire", self.autoexpire, 0, i64::MAX, "0 (off) or more seconds")?;
                range("scavengettl", self.scavengettl, 0, i64::MAX, "0 or more seconds")?;
                if self.autoexpire > 0 && self.scavengettl > self.autoexpire {
                    warnings.push(format!(
                        "--scavengettl {} is larger than --autoexpire {}: expired sessions pile up",
                        self.scavengettl, self.autoexpire
                    ));
                }
                Addrs::Client { local, remote: PortRange { host, min, max } }
            }
            Side::Server => {
                let (host, min, max) = parse_port_range(&self.listen).map_err(|e| rename_addr(e, "listen"))?;
                let target = tcp_or_unix("target", &self.target, 1)?;
                Addrs::Server { listen: PortRange { host, min, max }, target }
            }
        };
        let method = self.method()?;
        if !MODES.contains(&self.mode.as_str()) {
            return Err(ConfigError::Mode(self.mode.clone()));
        }
        range("mtu", self.mtu, 50, 1500, "50..=1500")?;
        range("ratelimit", self.ratelimit, 0, i64::MAX, "0 (off) or more bytes/s")?;
        range("sndwnd", self.sndwnd, 1, 65535, "1..=65535")?;
        range("rcvwnd", self.rcvwnd, 1, 65535, "1..=65535")?;
        range("datashard", self.datashard, 0, 255, "0..=255 (0 disables FEC)")?;
        range("parityshard", self.parityshard, 0, 255, "0..=255 (0 disables FEC)")?;
        if self.datashard + self.parityshard > 256 {
            return Err(ConfigError::FecShards { ds: self.datashard, ps: self.parityshard });
        }
        range("dscp", self.dscp, 0, 63, "0..=63")?;
        range("sockbuf", self.sockbuf, 1, I32_MAX, "1..=2147483647 bytes")?;
        if let Some(v) = self.smuxver {
            range("smuxver", v, 1, 2, "1 or 2")?;
        }
        range("smuxbuf", self.smuxbuf, 1, I32_MAX, "1..=2147483647 bytes")?;
        range("streambuf", self.streambuf, 1, I32_MAX, "1..=2147483647 bytes")?;
        if self.streambuf > self.smuxbuf {
            return Err(ConfigError::StreamBuf { streambuf: self.streambuf, smuxbuf: self.smuxbuf });
        }
        range("framesize", self.framesize, 1, 65535, "1..=65535")?;
        range("keepalive", self.keepalive, 1, 30, "1..=30 seconds (smux keepalive timeout is 30 s)")?;
        range("closewait", self.closewait, 0, i64::MAX, "0 or more seconds")?;
        range("snmpperiod", self.snmpperiod, 0, i64::MAX, "0 (off) or more seconds")?;
        range("QPPCount", self.qpp_count, 1, 65535, "1..=65535")?;
        if self.tcp && !cfg!(target_os = "linux") {
            return Err(ConfigError::TcpUnsupported);
        }
        if self.pprof {
            warnings.push("--pprof is accepted but ignored: kcpd has no profiling server".into());
        }
        if self.qpp {
            // In range after the check above.
            let count = u16::try_from(self.qpp_count).unwrap_or(u16::MAX);
            warnings.extend(kcpd_crypto::qpp::warnings(self.key.as_bytes(), count));
        }
        let (nodelay, interval, resend, nc) = self.nodelay_params();
        // kcp-go NoDelay ignores negative values (keeps its defaults: off, 100 ms, 0, congestion control on).
        let nodelay = NoDelay {
            nodelay: nodelay > 0,
            interval: if interval < 0 { 100 } else { interval.min(5000) as u32 },
            resend: resend.clamp(0, i64::from(u32::MAX)) as u32,
            nc: nc > 0,
        };
        Ok(Settings { method, nodelay, smux_version: self.smux_version(side), addrs, warnings })
    }
}

fn rename_addr(e: ConfigError, flag: &'static str) -> ConfigError {
    match e {
        ConfigError::Address { value, reason, .. } => ConfigError::Address { flag, value, reason },
        e => e,
    }
}

/// Fuzz harness: `data` as a JSON config for both sides, then validation. Never panics.
pub fn fuzz_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for side in [Side::Client, Side::Server] {
        let mut c = Config::defaults(side);
        if c.apply_json(side, text).is_ok() {
            let _ = c.validate(side);
            let _ = c.nodelay_params();
            let _ = c.smux_version(side);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_port_like_go() {
        assert_eq!(split_host_port("a:1"), Ok(("a", "1")));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert!(split_host_port("::1:80").is_err());
        assert!(split_host_port("/tmp/sock").is_err());
        assert!(split_host_port("[::1]").is_err());
        assert!(split_host_port("[::1]x:80").is_err());
    }

    #[test]
    fn join() {
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
        assert_eq!(join_host_port("", 5), ":5");
    }
}
