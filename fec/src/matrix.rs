//! Small dense matrices over GF(2^8), enough to build klauspost/reedsolomon's coding matrix and invert
//! the sub-matrices that decoding needs.

use crate::gf;

/// A `rows × cols` matrix of GF(2^8) elements, stored row-major; index it with `m[(row, col)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl Matrix {
    /// A `rows × cols` matrix of zeros (the additive identity of the field).
    pub fn zero(rows: usize, cols: usize) -> Self {
        Matrix { rows, cols, data: vec![0; rows * cols] }
    }

    /// The `n × n` identity matrix.
    pub fn identity(n: usize) -> Self {
        let mut m = Self::zero(n, n);
        for i in 0..n {
            m[(i, i)] = 1;
        }
        m
    }

    /// `V[r][c] = r^c` (klauspost `vandermonde`).
    pub fn vandermonde(rows: usize, cols: usize) -> Self {
        let mut m = Self::zero(rows, cols);
        for r in 0..rows {
            for c in 0..cols {
                m[(r, c)] = gf::pow(r as u8, c);
            }
        }
        m
    }

    /// klauspost `buildMatrix`: the Vandermonde matrix times the inverse of its top square, so the top
    /// `data` rows are the identity (systematic code). Valid for `data + parity <= 256`.
    pub fn coding(data: usize, total: usize) -> Self {
        let vm = Self::vandermonde(total, data);
        let top_inv = vm
            .sub_rows(&(0..data).collect::<Vec<_>>())
            .invert()
            .expect("a square Vandermonde matrix with distinct rows is invertible");
        vm.mul(&top_inv)
    }

    /// Number of rows (for a coding matrix: data + parity shards).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (for a coding matrix: data shards).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r` as a `cols`-byte slice; in a coding matrix, the coefficients that combine the data shards
    /// into shard `r`. Panics if `r >= rows`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// The matrix made of the given rows.
    pub fn sub_rows(&self, rows: &[usize]) -> Self {
        let mut m = Self::zero(rows.len(), self.cols);
        for (i, &r) in rows.iter().enumerate() {
            m.data[i * self.cols..(i + 1) * self.cols].copy_from_slice(self.row(r));
        }
        m
    }

    /// Matrix product `self · rhs` over GF(2^8) (additions are XOR). Panics unless `self.cols == rhs.rows`.
    pub fn mul(&self, rhs: &Matrix) -> Matrix {
        assert_eq!(self.cols, rhs.rows);
        let mut out = Matrix::zero(self.rows, rhs.cols);
        for r in 0..self.rows {
            for c in 0..rhs.cols {
                let mut acc = 0u8;
                for k in 0..self.cols {
                    acc ^= gf::mul(self[(r, k)], rhs[(k, c)]);
                }
                out[(r, c)] = acc;
            }
        }
        out
    }

    /// Gauss–Jordan inverse; `None` if singular.
    pub fn invert(&self) -> Option<Matrix> {
        assert_eq!(self.rows, self.cols);
        let n = self.rows;
        let mut a = self.clone();
        let mut inv = Matrix::identity(n);
        for col in 0..n {
            let pivot = (col..n).find(|&r| a[(r, col)] != 0)?;
            if pivot != col {
                a.swap_rows(pivot, col);
                inv.swap_rows(pivot, col);
            }
            let scale = gf::inv(a[(col, col)]);
            for c in 0..n {
                a[(col, c)] = gf::mul(a[(col, c)], scale);
                inv[(col, c)] = gf::mul(inv[(col, c)], scale);
            }
            for r in 0..n {
                let f = a[(r, col)];
                if r != col && f != 0 {
                    for c in 0..n {
                        a[(r, c)] ^= gf::mul(f, a[(col, c)]);
                        inv[(r, c)] ^= gf::mul(f, inv[(col, c)]);
                    }
                }
            }
        }
        Some(inv)
    }

    fn swap_rows(&mut self, a: usize, b: usize) {
        for c in 0..self.cols {
            self.data.swap(a * self.cols + c, b * self.cols + c);
        }
    }
}

impl std::ops::Index<(usize, usize)> for Matrix {
    type Output = u8;
    fn index(&self, (r, c): (usize, usize)) -> &u8 {
        &self.data[r * self.cols + c]
    }
}

impl std::ops::IndexMut<(usize, usize)> for Matrix {
    fn index_mut(&mut self, (r, c): (usize, usize)) -> &mut u8 {
        &mut self.data[r * self.cols + c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec §3.3: the (10,3) parity rows and the (4,2) rows of Appendix B.
    #[test]
    fn coding_matrix_rows_from_the_spec() {
        let m = Matrix::coding(10, 13);
        assert_eq!(m.row(10), [129, 150, 175, 184, 210, 196, 254, 232, 3, 2]);
        assert_eq!(m.row(11), [150, 129, 184, 175, 196, 210, 232, 254, 2, 3]);
        assert_eq!(m.row(12), [191, 214, 98, 10, 6, 111, 223, 183, 5, 4]);
        let m = Matrix::coding(4, 6);
        assert_eq!(m.row(4), [27, 28, 18, 20]);
        assert_eq!(m.row(5), [28, 27, 20, 18]);
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(m[(r, c)], (r == c) as u8);
            }
        }
    }

    #[test]
    fn inverse_round_trips() {
        let m = Matrix::coding(10, 13).sub_rows(&[0, 1, 3, 4, 6, 7, 8, 10, 11, 12]);
        let inv = m.invert().unwrap();
        assert_eq!(m.mul(&inv), Matrix::identity(10));
        let mut singular = Matrix::identity(3);
        singular[(2, 2)] = 0;
        assert!(singular.invert().is_none());
    }
}
