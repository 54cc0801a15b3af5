//! A KCP echo server on the embeddable API (kcp-go's `examples/echo.go`, server half).
//!
//! ```sh
//! cargo run --release -p kcpd-datapath --example echo_server -- 127.0.0.1:12345 aes-128 secret
//! ```
//! Arguments: listen address (default `127.0.0.1:12345`), `--crypt` method (default `aes`), key (default
//! `it's a secrect`, kcptun's). Every session echoes what it reads until the peer closes it.

use std::io::{Read, Write};

use kcpd_datapath::api::{Options, Runtime, RuntimeConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:12345".into()).parse()?;
    let method = args.next().unwrap_or_else(|| "aes".into());
    let key = args.next().unwrap_or_else(|| "it's a secrect".into());
    let rt = Runtime::new(RuntimeConfig { threads: 0, ..Default::default() })?;
    let opts = Options::new(&method, &key)?.nodelay(true, 10, 2, true).window(1024, 1024).fec(10, 3);
    let listener = rt.listen(addr, &opts)?;
    eprintln!("echo server on {} ({method}, FEC 10/3, fast3)", listener.local_addr());
    loop {
        let mut s = listener.accept()?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}
