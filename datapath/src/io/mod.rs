//! Datagram I/O behind one trait. The engine's real backends (mmsg + GSO/GRO, io_uring, poll) implement
//! it next to [`sim`], the deterministic in-memory network the tests run on.

use std::io;
use std::net::{IpAddr, SocketAddr};

pub mod sim;

/// One datagram to send.
#[derive(Clone, Copy, Debug)]
pub struct Transmit<'a> {
    pub dst: SocketAddr,
    pub payload: &'a [u8],
    /// Source IP to send from (a server bound to a wildcard address replies from the address the client
    /// targeted); `None`: the socket's choice.
    pub src_ip: Option<IpAddr>,
}

/// What arrived in one receive buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    pub len: usize,
    pub src: SocketAddr,
    /// The local address the datagram was sent to, when the backend knows it.
    pub dst_ip: Option<IpAddr>,
    /// The datagram was longer than the buffer and was cut (counted and dropped by callers).
    pub truncated: bool,
}

impl RecvMeta {
    pub const EMPTY: RecvMeta = RecvMeta {
        len: 0,
        src: SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        dst_ip: None,
        truncated: false,
    };
}

/// A non-blocking datagram socket that moves batches.
pub trait DatagramIo {
    fn local_addr(&self) -> SocketAddr;

    /// Receive up to `bufs.len()` datagrams without blocking; `Ok(0)` when none is ready.
    fn recv_batch(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize>;

    /// Send datagrams in order; returns how many were taken (retry the rest when writable).
    fn send_batch(&mut self, msgs: &[Transmit<'_>]) -> io::Result<usize>;
}
