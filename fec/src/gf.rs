//! GF(2^8) with the reducing polynomial x^8+x^4+x^3+x^2+1 (0x11D) and generator 2: the field of
//! klauspost/reedsolomon (`galois.go`, `generatingPolynomial = 29`) and Backblaze JavaReedSolomon.

/// Low byte of the reducing polynomial 0x11D.
pub const POLY: u8 = 0x1D;

const fn build_exp_log() -> ([u8; 512], [u8; 256]) {
    let mut exp = [0u8; 512];
    let mut log = [0u8; 256];
    let mut x: u8 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = x;
        exp[i + 255] = x;
        log[x as usize] = i as u8;
        let hi = x & 0x80;
        x <<= 1;
        if hi != 0 {
            x ^= POLY;
        }
        i += 1;
    }
    exp[510] = exp[0];
    (exp, log)
}

const EXP_LOG: ([u8; 512], [u8; 256]) = build_exp_log();
/// `EXP[i] = 2^i`, doubled so that `EXP[log a + log b]` needs no reduction.
pub static EXP: [u8; 512] = EXP_LOG.0;
/// `LOG[a]` for a != 0.
pub static LOG: [u8; 256] = EXP_LOG.1;

const fn build_mul() -> [[u8; 256]; 256] {
    let (exp, log) = build_exp_log();
    let mut t = [[0u8; 256]; 256];
    let mut a = 1;
    while a < 256 {
        let mut b = 1;
        while b < 256 {
            t[a][b] = exp[log[a] as usize + log[b] as usize];
            b += 1;
        }
        a += 1;
    }
    t
}

/// Full multiplication table (64 KiB): `MUL[a][b] = a·b`. Used by the scalar kernel and table setup.
pub static MUL: [[u8; 256]; 256] = build_mul();

/// Field product `a·b` (polynomial multiplication mod 0x11D, not integer multiplication), by [`MUL`] lookup.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    MUL[a as usize][b as usize]
}

/// Multiplicative inverse; `a` must be non-zero.
#[inline]
pub fn inv(a: u8) -> u8 {
    debug_assert!(a != 0);
    EXP[255 - LOG[a as usize] as usize]
}

/// klauspost `galExp`: a^n with 0^0 = 1.
pub fn pow(a: u8, n: usize) -> u8 {
    if n == 0 {
        return 1;
    }
    if a == 0 {
        return 0;
    }
    EXP[(LOG[a as usize] as usize * n) % 255]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_mul(mut a: u8, mut b: u8) -> u8 {
        let mut r = 0;
        while b != 0 {
            if b & 1 != 0 {
                r ^= a;
            }
            let hi = a & 0x80;
            a <<= 1;
            if hi != 0 {
                a ^= POLY;
            }
            b >>= 1;
        }
        r
    }

    #[test]
    fn tables_match_carryless_multiplication() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), slow_mul(a, b));
            }
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1);
            }
        }
        assert_eq!(pow(0, 0), 1);
        assert_eq!(pow(0, 3), 0);
        assert_eq!(pow(2, 8), POLY);
    }
}
