//! A KCP echo client on the embeddable API: sends `MB` megabytes to `echo_server`, checks that every byte
//! comes back, and prints the round-trip goodput.
//!
//! ```sh
//! cargo run --release -p kcpd-datapath --example echo_client -- 127.0.0.1:12345 aes-128 secret 64
//! ```
#![allow(clippy::disallowed_methods)] // an application times itself

use std::io::{Read, Write};
use std::time::Instant;

use kcpd_datapath::api::{Options, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:12345".into()).parse()?;
    let method = args.next().unwrap_or_else(|| "aes".into());
    let key = args.next().unwrap_or_else(|| "it's a secrect".into());
    let mb: usize = args.next().map_or(Ok(16), |s| s.parse())?;
    let rt = Runtime::new(Default::default())?;
    let opts = Options::new(&method, &key)?.nodelay(true, 10, 2, true).window(1024, 1024).fec(10, 3);
    let mut conn = rt.dial(addr, &opts)?;
    let data: Vec<u8> = (0..mb << 20).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();
    let mut reader = conn.try_clone()?;
    let expect = data.clone();
    let t = Instant::now();
    let check = std::thread::spawn(move || -> std::io::Result<bool> {
        let mut got = vec![0u8; expect.len()];
        reader.read_exact(&mut got)?;
        Ok(got == expect)
    });
    conn.write_all(&data)?;
    let same = check.join().expect("reader thread")?;
    let secs = t.elapsed().as_secs_f64();
    if !same {
        return Err("the echo differs from what was sent".into());
    }
    let s = rt.snmp();
    println!(
        "{mb} MB echoed intact in {secs:.2} s: {:.1} MB/s each way; {} datagrams out, {} retransmitted segments",
        mb as f64 / secs,
        s.out_pkts,
        s.retrans_segs
    );
    Ok(())
}
