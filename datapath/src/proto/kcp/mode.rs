//! kcptun's `--mode` presets: the one table (spec §4.3).

/// The `nodelay, interval, resend, nc` quadruple (kcp-go `NoDelay`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoDelay {
    /// Minimum RTO 30 ms instead of 100, and half (not full) RTO backoff.
    pub nodelay: bool,
    /// Flush interval in ms.
    pub interval: u32,
    /// Duplicate ACKs that trigger a fast retransmission (0: off).
    pub resend: u32,
    /// No congestion window: send as the windows allow.
    pub nc: bool,
}

/// kcptun's `--mode` presets (spec §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `--mode normal`: 0, 40, 2, 1.
    Normal,
    /// `--mode fast` (kcptun's default): 0, 30, 2, 1.
    Fast,
    /// `--mode fast2`: 1, 20, 2, 1.
    Fast2,
    /// `--mode fast3`: 1, 10, 2, 1.
    Fast3,
    /// The hidden `--nodelay --interval --resend --nc` flags.
    Manual(NoDelay),
}

impl Mode {
    /// The preset kcptun's `--mode NAME` selects; `None` for `manual` and any other string, which kcptun
    /// treats alike (the hidden flags apply).
    pub fn preset(name: &str) -> Option<Mode> {
        match name {
            "normal" => Some(Mode::Normal),
            "fast" => Some(Mode::Fast),
            "fast2" => Some(Mode::Fast2),
            "fast3" => Some(Mode::Fast3),
            _ => None,
        }
    }

    /// The quadruple this mode sets.
    pub fn nodelay(self) -> NoDelay {
        let p = |nodelay, interval, resend, nc| NoDelay { nodelay, interval, resend, nc };
        match self {
            Mode::Normal => p(false, 40, 2, true),
            Mode::Fast => p(false, 30, 2, true),
            Mode::Fast2 => p(true, 20, 2, true),
            Mode::Fast3 => p(true, 10, 2, true),
            Mode::Manual(n) => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_by_name() {
        assert_eq!(
            Mode::preset("fast3").map(Mode::nodelay),
            Some(NoDelay { nodelay: true, interval: 10, resend: 2, nc: true })
        );
        assert_eq!(Mode::preset("normal").map(Mode::nodelay).map(|n| n.interval), Some(40));
        assert_eq!(Mode::preset("manual"), None);
        assert_eq!(Mode::preset("Fast"), None, "kcptun compares names exactly");
    }
}
