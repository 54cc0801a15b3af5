//! Table-driven reference kernel; also finishes the tails the SIMD kernels leave.

use super::Coefs;
use crate::gf::MUL;

pub(super) fn dot(coefs: &Coefs, inputs: &[&[u8]], outputs: &mut [&mut [u8]], from: usize, to: usize) {
    if from >= to {
        return;
    }
    for (j, out) in outputs.iter_mut().enumerate() {
        let out = &mut out[from..to];
        out.fill(0);
        for (i, input) in inputs.iter().enumerate() {
            let t = &MUL[coefs.get(j, i).c as usize];
            for (o, &x) in out.iter_mut().zip(&input[from..to]) {
                *o ^= t[x as usize];
            }
        }
    }
}

pub(super) fn mul_add(coefs: &Coefs, col: usize, input: &[u8], outputs: &mut [&mut [u8]], from: usize, to: usize) {
    for (j, out) in outputs.iter_mut().enumerate() {
        let t = &MUL[coefs.get(j, col).c as usize];
        for (o, &x) in out[from..to].iter_mut().zip(&input[from..to]) {
            *o ^= t[x as usize];
        }
    }
}
