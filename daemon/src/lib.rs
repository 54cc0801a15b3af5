//! kcpd, the daemon: kcptun-compatible `client` and `server` on the kcpd-datapath engine.
//!
//! - [`cli`]: kcptun's command line, parsed Go-style (single-dash long flags, base-0 integers);
//! - [`config`]: the settings of both ends, kcptun's JSON config (`-c`) and validation;
//! - [`snmp`]: SNMP counter output in kcptun's formats (SIGUSR1 dump, `--snmplog` CSV), Go time layouts;
//! - [`notify`]: systemd readiness notification; [`eventlog`]: the engine's events as kcptun-style log lines;
//! - [`run`]: a tunnel end from its settings, signals, snmplog; [`demo`]: the loopback demo;
//!   [`engine_flags`]: kcpd's own flags (`--threads`, `--io`, ...).

pub mod cli;
pub mod config;
pub mod demo;
pub mod engine_flags;
pub mod eventlog;
pub mod notify;
pub mod run;
pub mod settings;
pub mod snmp;
