//! Sans-IO protocol code: no clock reads (time is a `now` argument), no sockets.

pub mod budget;
pub mod cc;
pub mod conn;
pub mod endpoint;
pub mod faketcp;
pub mod front;
pub mod kcp;
pub mod mux;
pub mod pool;
pub mod session;
pub mod snappy;
pub mod snmp;
