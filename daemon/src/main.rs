//! `kcpd client|server [kcptun flags]`, `kcpd demo`; invoked as `kcptun-client`/`kcptun-server` (a
//! symlink) it is that subcommand, a drop-in for kcptun.

use std::process::ExitCode;

use kcpd::cli::{self, Command};
use kcpd::config::Side;
use kcpd::run::{Logger, serve};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
kcpd: a kcptun-compatible KCP tunnel

usage:
  kcpd client [kcptun-client flags] [engine flags]
  kcpd server [kcptun-server flags] [engine flags]
  kcpd demo [--mb N] [--serve]     a loopback tunnel on the built-in defaults, with a self-test
  kcpd -v | -V | --version
  kcptun-client ... / kcptun-server ...   (symlinks to kcpd): the same as `kcpd client|server`

`kcpd client -h` and `kcpd server -h` list the kcptun flags of each side.";

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os().map(|a| a.into_string()).collect::<Result<Vec<_>, _>>() {
        Ok(a) => a,
        Err(a) => {
            eprintln!("kcpd: argument {a:?} is not valid UTF-8");
            return ExitCode::from(2);
        }
    };
    let prog = args.first().map(|a| a.rsplit('/').next().unwrap_or(a).to_owned()).unwrap_or_default();
    let (side, rest) = match prog.as_str() {
        "kcptun-client" | "client_linux_amd64" => (Side::Client, &args[1..]),
        "kcptun-server" | "server_linux_amd64" => (Side::Server, &args[1..]),
        _ => match args.get(1).map(String::as_str) {
            Some("client") => (Side::Client, &args[2..]),
            Some("server") => (Side::Server, &args[2..]),
            Some("demo") => return kcpd::demo::main(&args[2..]),
            Some("-v" | "-V" | "--version" | "-version") => {
                println!("kcpd {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Some("-h" | "--help" | "-help" | "help") => {
                println!("{USAGE}\n\n{}", kcpd::engine_flags::HELP);
                return ExitCode::SUCCESS;
            }
            None => {
                eprintln!("{USAGE}\n\n{}", kcpd::engine_flags::HELP);
                return ExitCode::from(2);
            }
            Some(other) => {
                eprintln!("kcpd: unknown command `{other}`: expected client, server or demo\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    let (engine, rest) = match kcpd::engine_flags::split(rest) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("kcpd: {e}");
            return ExitCode::from(2);
        }
    };
    let env_key = std::env::var("KCPTUN_KEY").ok();
    let cfg = match cli::parse(side, &rest, env_key.as_deref()) {
        Ok(Command::Run(cfg, _)) => cfg,
        Ok(Command::Help(text)) => {
            println!("{}\n\n{}", text.trim_end(), kcpd::engine_flags::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("kcpd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kcpd: {e}");
            return ExitCode::from(2);
        }
    };
    let warnings = match cfg.validate(side) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("kcpd: {e}");
            return ExitCode::from(2);
        }
    };
    let log = if cfg.log.is_empty() {
        Logger::stderr()
    } else {
        match Logger::file(&cfg.log) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kcpd: {e}");
                return ExitCode::from(1);
            }
        }
    };
    for w in warnings {
        log.log(&format!("warning: {w}"));
    }
    match serve(side, &cfg, &engine, &log, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.log(&format!("kcpd: {e}"));
            if !cfg.log.is_empty() {
                eprintln!("kcpd: {e}");
            }
            ExitCode::from(1)
        }
    }
}
