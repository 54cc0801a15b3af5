//! `kcpd demo`: a whole tunnel on loopback from the built-in defaults — an echo target, a kcpd server in
//! front of it, a kcpd client in front of that — then a self-test through it (8 connections, every byte
//! checked) with the figures printed. `--serve` keeps it running for your own connections.
#![allow(clippy::disallowed_methods)] // the demo times itself

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use kcpd_datapath::shard::{Endpoint, Engine, Role};

use crate::config::{Config, Side};
use crate::run::{EngineOptions, tunnel_config};

fn echo_target() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(a)
}

fn run_demo(mb: usize, serve: bool) -> Result<(), String> {
    let target = echo_target().map_err(|e| format!("echo target: {e}"))?;
    let opts = EngineOptions { threads: 1, ..EngineOptions::default() };
    let mut scfg = Config::defaults(Side::Server);
    scfg.listen = "127.0.0.1:0".into();
    scfg.target = target.to_string();
    scfg.mode = "fast3".into();
    scfg.validate(Side::Server).map_err(|e| e.to_string())?;
    let server = Engine::start(tunnel_config(Side::Server, &scfg, &opts).map_err(|e| e.to_string())?)
        .map_err(|e| format!("server: {e}"))?;
    let udp = server.udp_addrs()[0];
    let mut ccfg = Config::defaults(Side::Client);
    ccfg.localaddr = "127.0.0.1:0".into();
    ccfg.remoteaddr = udp.to_string();
    ccfg.mode = "fast3".into();
    ccfg.sndwnd = 1024;
    ccfg.rcvwnd = 1024;
    ccfg.validate(Side::Client).map_err(|e| e.to_string())?;
    let mut tc = tunnel_config(Side::Client, &ccfg, &opts).map_err(|e| e.to_string())?;
    if let Role::Client { remote, .. } = &mut tc.role {
        *remote = vec![udp];
    }
    let client = Engine::start(tc).map_err(|e| format!("client: {e}"))?;
    let Some(Endpoint::Tcp(local)) = client.listen_endpoint().cloned() else {
        return Err("client did not listen on TCP".into());
    };
    println!(
        "kcpd demo: tcp {local} -> kcpd client -> udp {udp} (KCP: aes, fast3, FEC 10/3, snappy, smux v2) -> kcpd server -> echo {target}"
    );
    let per = (mb << 20) / 8;
    let t = Instant::now();
    let hs: Vec<_> = (0..8u8)
        .map(|k| {
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = TcpStream::connect(local).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
                let data: Vec<u8> = (0..per).map(|i| (i as u8).wrapping_mul(31).wrapping_add(k)).collect();
                let mut r = s.try_clone().map_err(|e| e.to_string())?;
                let expect = data.clone();
                let reader = std::thread::spawn(move || {
                    let mut got = vec![0u8; expect.len()];
                    r.read_exact(&mut got).map(|_| got == expect)
                });
                s.write_all(&data).map_err(|e| e.to_string())?;
                match reader.join() {
                    Ok(Ok(true)) => Ok(()),
                    Ok(Ok(false)) => Err("echo differs".into()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("reader failed".into()),
                }
            })
        })
        .collect();
    for h in hs {
        h.join().map_err(|_| "stream thread failed".to_string())??;
    }
    let secs = t.elapsed().as_secs_f64();
    let s = server.snmp();
    println!(
        "self-test: {mb} MB echoed over 8 streams, every byte checked, in {secs:.2} s ({:.0} MB/s each way)",
        mb as f64 / secs
    );
    println!(
        "server SNMP: in {} out {} datagrams, {} retransmitted segments, {} FEC parity shards sent",
        s.in_pkts, s.out_pkts, s.retrans_segs, s.fec_parity_shards
    );
    if serve {
        println!("serving; connect to {local} (echo), Ctrl-C to stop");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(())
}

/// `kcpd demo [--mb N] [--serve]`.
pub fn main(args: &[String]) -> ExitCode {
    let mut mb = 64;
    let mut serve = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].trim_start_matches('-') {
            "serve" => serve = true,
            "mb" => {
                i += 1;
                match args.get(i).and_then(|v| v.parse().ok()) {
                    Some(v) if v > 0 => mb = v,
                    _ => {
                        eprintln!("kcpd demo: --mb needs a positive number of megabytes");
                        return ExitCode::from(2);
                    }
                }
            }
            other => {
                eprintln!("kcpd demo: unknown flag `{other}` (expected --mb N, --serve)");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    match run_demo(mb, serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcpd demo: {e}");
            ExitCode::from(1)
        }
    }
}
