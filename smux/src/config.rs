//! Session settings (smux `mux.go` Config/DefaultConfig/VerifyConfig, spec §5.6).

/// Settings of one session. Both ends must agree on `version` (spec §8 trap 2); everything else is local.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// smux protocol version, 1 or 2 (kcptun `--smuxver`: DEB default 1, NEW default 2). A server may say
    /// 0: adopt the version of the first frame the client sends (kcpd's default when `--smuxver` is not
    /// given, so DEB and NEW clients both work); nothing is sent before that frame.
    pub version: u8,
    /// Largest PSH payload we send (DEB kcptun 32768 fixed, NEW `--framesize` default 8192). Receiving
    /// accepts any length up to 65535 regardless (spec §5.3).
    pub max_frame_size: usize,
    /// Session receive budget in bytes (`--smuxbuf`, 4 MiB): consumed by received PSH payload, returned
    /// when the application reads; at or below zero [`Session::wants_input`](crate::Session::wants_input)
    /// turns false.
    pub max_receive_buffer: usize,
    /// `--streambuf` (2 MiB): the v2 window we advertise in every UPD, and the UPD cadence (every
    /// `max_stream_buffer / 2` bytes read).
    pub max_stream_buffer: usize,
    /// Per-stream bound on bytes accepted by `stream_write` but not yet framed by `poll_transmit`
    /// (kcpd only, no wire effect; Go blocks the writer instead).
    pub max_send_buffer: usize,
    /// Send a NOP this often (`--keepalive`, 10 s).
    pub keepalive_interval_ms: u32,
    /// Close the session when no frame arrived during one whole period (smux default 30 s; kcptun never
    /// changes it).
    pub keepalive_timeout_ms: u32,
    /// smux >= 1.5.54 `CloseWrite` semantics: a peer's FIN ends only its direction and we may keep
    /// writing. Off when the peer is kcptun (smux 1.5.16 / 1.5.52: a FIN means the peer is done with both
    /// directions, and writing afterwards fails).
    pub half_close: bool,
    /// Grow each v2 stream's advertised window while it limits the peer (kcpd only, no byte format
    /// change): when a whole window was read within [`AUTOTUNE_RTTS`] round trips, it doubles, up to the larger of
    /// `max_receive_buffer` and [`AUTOTUNE_WINDOW_MAX`]; UPDs then go out every eighth of a window
    /// instead of every half. `max_stream_buffer` is where every stream starts. `max_receive_buffer` still
    /// bounds what the session holds unread: past it smux takes no more input and KCP's receive window
    /// closes, so a window above it costs no memory, and a reader that stalls stops its sender as before.
    pub window_autotune: bool,
}

/// Round trips in which a whole stream window must be read for autotuning to double it
/// ([`Config::window_autotune`]): a stream moves at most one window per round trip, and less while a
/// segment lost below holds back what follows it for a second round trip; at two, a stream on a 150 ms
/// path with 1% loss never read a window fast enough to grow it and stayed at 2 MiB per two round trips
/// (7 MB/s). The window then settles near this many round trips of what the reader takes, which costs no
/// memory: `max_receive_buffer` bounds what the session holds unread.
pub const AUTOTUNE_RTTS: u64 = 4;

/// The largest window autotuning grows a stream's to, whatever `--smuxbuf` says: a stream can move at
/// most one window per round trip and window update, so kcptun's 4 MiB session buffer would cap one
/// stream at about 80 MB/s at 40 ms and 25 MB/s at 150 ms. 24 MiB is about what KCP's own receive window
/// reaches when autotuned (16384 segments).
pub const AUTOTUNE_WINDOW_MAX: usize = 24 << 20;

impl Default for Config {
    /// smux `DefaultConfig()`: v1, 32 KiB frames, 4 MiB session buffer, 64 KiB stream buffer, 10 s / 30 s.
    fn default() -> Self {
        Config {
            version: 1,
            max_frame_size: 32_768,
            max_receive_buffer: 4_194_304,
            max_stream_buffer: 65_536,
            max_send_buffer: 65_536,
            keepalive_interval_ms: 10_000,
            keepalive_timeout_ms: 30_000,
            half_close: false,
            window_autotune: false,
        }
    }
}

impl Config {
    /// kcptun 20210922 (DEB profile): `--smuxver 1`, smux default frames, `--smuxbuf 4194304`,
    /// `--streambuf 2097152`, `--keepalive 10`.
    pub fn kcptun_deb() -> Self {
        Config { max_stream_buffer: 2_097_152, ..Config::default() }
    }

    /// kcptun f788cbb (NEW profile): `--smuxver 2`, `--framesize 8192`, buffers as DEB.
    pub fn kcptun_new() -> Self {
        Config { version: 2, max_frame_size: 8192, ..Config::kcptun_deb() }
    }

    /// smux `VerifyConfig`, plus our own `max_send_buffer`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const MAX_I32: usize = i32::MAX as usize;
        if self.version > 2 {
            return Err(ConfigError::Version(self.version));
        }
        if self.keepalive_interval_ms == 0 {
            return Err(ConfigError::KeepaliveInterval);
        }
        if self.keepalive_timeout_ms < self.keepalive_interval_ms {
            return Err(ConfigError::KeepaliveTimeout);
        }
        if self.max_frame_size == 0 || self.max_frame_size > crate::wire::MAX_PAYLOAD {
            return Err(ConfigError::FrameSize(self.max_frame_size));
        }
        if self.max_receive_buffer == 0 || self.max_receive_buffer > MAX_I32 {
            return Err(ConfigError::ReceiveBuffer(self.max_receive_buffer));
        }
        if self.max_stream_buffer == 0 || self.max_stream_buffer > MAX_I32 {
            return Err(ConfigError::StreamBuffer(self.max_stream_buffer));
        }
        if self.max_stream_buffer > self.max_receive_buffer {
            return Err(ConfigError::StreamAboveReceive);
        }
        if self.max_send_buffer == 0 || self.max_send_buffer > MAX_I32 {
            return Err(ConfigError::SendBuffer(self.max_send_buffer));
        }
        Ok(())
    }
}

/// A [`Config`] that smux `VerifyConfig` would refuse (messages follow smux's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// [`Config::version`] (carried here) is above 2; 0 (server adopts the client's), 1 and 2 are accepted.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// [`Config::keepalive_interval_ms`] is 0.
    #[error("keep-alive interval must be positive")]
    KeepaliveInterval,
    /// [`Config::keepalive_timeout_ms`] is shorter than the interval (equal is accepted), e.g. kcptun
    /// `--keepalive 31` against smux's fixed 30 s timeout.
    #[error("keep-alive timeout must be larger than keep-alive interval")]
    KeepaliveTimeout,
    /// [`Config::max_frame_size`] (carried here) is 0 or does not fit the u16 length field.
    #[error("max frame size must be in 1..=65535, got {0}")]
    FrameSize(usize),
    /// [`Config::max_receive_buffer`] (carried here) is 0 or above `i32::MAX`.
    #[error("max receive buffer must be positive and not exceed MaxInt32, got {0}")]
    ReceiveBuffer(usize),
    /// [`Config::max_stream_buffer`] (carried here) is 0 or above `i32::MAX`.
    #[error("max stream buffer must be positive and not exceed MaxInt32, got {0}")]
    StreamBuffer(usize),
    /// [`Config::max_stream_buffer`] exceeds [`Config::max_receive_buffer`] (`--streambuf` > `--smuxbuf`).
    #[error("max stream buffer must not be larger than max receive buffer")]
    StreamAboveReceive,
    /// [`Config::max_send_buffer`] (carried here) is 0 or above `i32::MAX` (a kcpd-only check).
    #[error("max send buffer must be positive and not exceed MaxInt32, got {0}")]
    SendBuffer(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for c in [Config::default(), Config::kcptun_deb(), Config::kcptun_new()] {
            c.validate().unwrap();
        }
        assert_eq!(Config::kcptun_new().version, 2);
        assert_eq!(Config::kcptun_new().max_frame_size, 8192);
    }

    #[test]
    fn verify_config_rules() {
        let ok = Config::kcptun_new();
        let bad = |f: fn(&mut Config)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.version = 3), ConfigError::Version(3));
        assert_eq!(bad(|c| c.keepalive_interval_ms = 0), ConfigError::KeepaliveInterval);
        // spec §8 trap 12: --keepalive 31 against the fixed 30 s timeout
        assert_eq!(bad(|c| c.keepalive_interval_ms = 31_000), ConfigError::KeepaliveTimeout);
        assert_eq!(bad(|c| c.max_frame_size = 0), ConfigError::FrameSize(0));
        assert_eq!(bad(|c| c.max_frame_size = 65_536), ConfigError::FrameSize(65_536));
        assert_eq!(bad(|c| c.max_receive_buffer = 0), ConfigError::ReceiveBuffer(0));
        assert_eq!(bad(|c| c.max_stream_buffer = 0), ConfigError::StreamBuffer(0));
        assert_eq!(bad(|c| c.max_stream_buffer = 8 << 20), ConfigError::StreamAboveReceive);
        assert_eq!(bad(|c| c.max_send_buffer = 0), ConfigError::SendBuffer(0));
        let mut c = ok.clone();
        c.keepalive_interval_ms = 30_000;
        c.max_frame_size = 65_535;
        c.validate().unwrap();
    }
}
