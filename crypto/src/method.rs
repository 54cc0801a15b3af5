//! The `--crypt` names kcptun accepts, and the key slice each one takes (spec §2.2).

use std::fmt;
use std::str::FromStr;

/// A kcptun `--crypt` method.
///
/// kcptun silently falls back to `aes` for an unknown name (spec §2.2); kcpd refuses it instead, with an
/// error that lists the valid names, so a typo never turns into a tunnel that passes no traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// AES-256-CFB with the full 32-byte key (kcptun's default).
    Aes,
    /// AES-128-CFB, `pass[..16]`.
    Aes128,
    /// AES-192-CFB, `pass[..24]`.
    Aes192,
    /// Salsa20/20, 8-byte nonce in clear at the start of the datagram.
    Salsa20,
    /// Blowfish-CFB64 with the 32-byte key.
    Blowfish,
    /// Twofish-256-CFB.
    Twofish,
    /// CAST-128-CFB64, `pass[..16]`.
    Cast5,
    /// 3DES-EDE3-CFB64, `pass[..24]`.
    TripleDes,
    /// TEA with kcp-go's 16 rounds (8 cycles), big-endian, CFB64, `pass[..16]`.
    Tea,
    /// XTEA (64 rounds), big-endian, CFB64, `pass[..16]`.
    Xtea,
    /// XOR with a 1500-byte PBKDF2 table.
    Xor,
    /// SM4-CFB, `pass[..16]`.
    Sm4,
    /// Nonce + CRC header kept, no encryption.
    None,
    /// NEW profile: no crypto header at all.
    Null,
    /// NEW profile: AES-128-GCM, 12-byte nonce, 16-byte tag, no CRC, `pass[..16]`.
    Aes128Gcm,
}

impl Method {
    /// Every method, in kcptun's documentation order.
    pub const ALL: [Method; 15] = [
        Method::Aes,
        Method::Aes128,
        Method::Aes192,
        Method::Salsa20,
        Method::Blowfish,
        Method::Twofish,
        Method::Cast5,
        Method::TripleDes,
        Method::Tea,
        Method::Xtea,
        Method::Xor,
        Method::Sm4,
        Method::None,
        Method::Null,
        Method::Aes128Gcm,
    ];

    /// The name as kcptun spells it on the command line and in JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Aes => "aes",
            Method::Aes128 => "aes-128",
            Method::Aes192 => "aes-192",
            Method::Salsa20 => "salsa20",
            Method::Blowfish => "blowfish",
            Method::Twofish => "twofish",
            Method::Cast5 => "cast5",
            Method::TripleDes => "3des",
            Method::Tea => "tea",
            Method::Xtea => "xtea",
            Method::Xor => "xor",
            Method::Sm4 => "sm4",
            Method::None => "none",
            Method::Null => "null",
            Method::Aes128Gcm => "aes-128-gcm",
        }
    }

    /// How many bytes of the 32-byte PBKDF2 output the cipher takes (spec §2.2). `none`/`null` take none.
    pub const fn key_len(self) -> usize {
        match self {
            Method::Aes128 | Method::Cast5 | Method::Tea | Method::Xtea | Method::Sm4 | Method::Aes128Gcm => 16,
            Method::Aes192 | Method::TripleDes => 24,
            Method::Aes | Method::Salsa20 | Method::Blowfish | Method::Twofish | Method::Xor => 32,
            Method::None | Method::Null => 0,
        }
    }

    /// True for the methods only the NEW profile (kcptun ≥ 2022) knows. A Debian kcptun 20210922 peer
    /// silently maps them to `aes`, so they only work between NEW-profile peers.
    pub const fn new_profile_only(self) -> bool {
        matches!(self, Method::Null | Method::Aes128Gcm)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--crypt` name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown crypt method {given:?}; valid methods: {}", valid_names())]
pub struct UnknownMethod {
    /// What the user wrote.
    pub given: String,
}

fn valid_names() -> String {
    Method::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
}

impl FromStr for Method {
    type Err = UnknownMethod;

    /// Exact, case-sensitive match, as kcptun's `switch` on the string.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Method::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMethod { given: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>(), Ok(m));
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let e = "aes256".parse::<Method>().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"aes256\""), "{msg}");
        for m in Method::ALL {
            assert!(msg.contains(m.name()), "{msg} lacks {m}");
        }
        assert!("AES".parse::<Method>().is_err(), "kcptun's switch is case-sensitive");
    }
}
