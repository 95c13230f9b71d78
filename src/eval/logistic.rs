//! A class-weighted, L2-regularised logistic regression over standardised features: the read-out
//! of the learned harm judge ([`crate::eval::learned_judge`]). In f64, full batch, fitted by
//! Newton's method (iteratively reweighted least squares; Hastie, Tibshirani & Friedman,
//! *The Elements of Statistical Learning*, 2nd ed., section 4.4.1), which converges in a handful
//! of steps on the few thousand rows and about two thousand features a judge has, and gives the
//! same answer on every processor up to rounding.
//!
//! Loss (per row weight `c_y`, so that each class carries half the total weight):
//! `L(w, b) = sum_i c_{y_i} * [log(1 + e^{z_i}) - y_i z_i] / sum_i c_{y_i} + lambda/2 * |w|^2`,
//! `z_i = w . x_i + b` on standardised `x`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A fitted read-out: `p(harmful | x) = sigmoid(w . (x - mean) / std + b)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticHead {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
    /// The L2 strength it was fitted with.
    pub lambda: f64,
}

/// Fitting settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    pub lambda: f64,
    /// Weight classes so that positives and negatives count equally.
    pub balanced: bool,
    pub max_iter: usize,
    /// Stop when the largest Newton step is below this.
    pub tol: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { lambda: 1e-2, balanced: true, max_iter: 50, tol: 1e-8 }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() }
}

impl LogisticHead {
    /// Probability of the positive class for one raw feature row.
    pub fn prob(&self, x: &[f32]) -> f64 {
        sigmoid(self.logit(x))
    }

    pub fn logit(&self, x: &[f32]) -> f64 {
        let mut z = self.bias;
        for (j, &v) in x.iter().enumerate() {
            z += self.weights[j] * (v as f64 - self.mean[j]) / self.std[j];
        }
        z
    }

    /// Check that the head reads `dim` features and holds only finite numbers.
    pub fn check(&self, dim: usize, what: &str) -> Result<()> {
        let lens = [self.mean.len(), self.std.len(), self.weights.len()];
        if lens.iter().any(|&l| l != dim) {
            return Err(Error::Invalid(format!("{what}: head sizes {lens:?} do not match {dim} features")));
        }
        let finite = self.mean.iter().chain(&self.std).chain(&self.weights).all(|v| v.is_finite());
        if !finite || !self.bias.is_finite() || self.std.iter().any(|&s| s <= 0.0) {
            return Err(Error::Invalid(format!("{what}: head holds a non-finite or non-positive-scale value")));
        }
        Ok(())
    }
}

/// Per-feature mean and standard deviation (a zero deviation becomes 1).
pub fn standardiser(rows: &[Vec<f32>]) -> (Vec<f64>, Vec<f64>) {
    let d = rows.first().map(Vec::len).unwrap_or(0);
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += v as f64 / n;
        }
    }
    let mut var = vec![0.0; d];
    for r in rows {
        for ((s, &v), m) in var.iter_mut().zip(r).zip(&mean) {
            *s += (v as f64 - m).powi(2) / n;
        }
    }
    let std = var.into_iter().map(|v: f64| if v > 1e-12 { v.sqrt() } else { 1.0 }).collect();
    (mean, std)
}

/// Row weights: 1 each, or `n / (2 n_class)` when balanced.
fn row_weights(y: &[bool], balanced: bool) -> Vec<f64> {
    let pos = y.iter().filter(|&&v| v).count();
    let neg = y.len() - pos;
    y.iter()
        .map(|&v| {
            if !balanced {
                1.0
            } else if v {
                y.len() as f64 / (2.0 * pos.max(1) as f64)
            } else {
                y.len() as f64 / (2.0 * neg.max(1) as f64)
            }
        })
        .collect()
}

/// The loss `L` and its gradient (`[w..., b]`) at `theta` on standardised rows `z`.
pub fn loss_and_grad(z: &[Vec<f64>], y: &[bool], c: &[f64], lambda: f64, theta: &[f64]) -> (f64, Vec<f64>) {
    let d = theta.len() - 1;
    let total: f64 = c.iter().sum();
    let mut loss = 0.0;
    let mut grad = vec![0.0; d + 1];
    for ((x, &yi), &ci) in z.iter().zip(y).zip(c) {
        let s = x.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>() + theta[d];
        let t = if yi { 1.0 } else { 0.0 };
        loss += ci * (softplus(s) - t * s) / total;
        let r = ci * (sigmoid(s) - t) / total;
        for (g, xj) in grad.iter_mut().zip(x) {
            *g += r * xj;
        }
        grad[d] += r;
    }
    loss += 0.5 * lambda * theta[..d].iter().map(|w| w * w).sum::<f64>();
    for (g, w) in grad.iter_mut().zip(&theta[..d]) {
        *g += lambda * w;
    }
    (loss, grad)
}

/// Fit a head to feature rows `x` and labels `y` (true = positive).
pub fn fit(x: &[Vec<f32>], y: &[bool], opts: &FitOptions) -> Result<LogisticHead> {
    fit_weighted(x, y, None, opts)
}

/// As [`fit`], each row's loss term also multiplied by `w[i]` (on top of the class balance): a
/// weight of 5 counts a row five times (the standardiser still counts it once).
pub fn fit_weighted(x: &[Vec<f32>], y: &[bool], w: Option<&[f64]>, opts: &FitOptions) -> Result<LogisticHead> {
    if w.is_some_and(|w| w.len() != y.len() || w.iter().any(|v| !v.is_finite() || *v < 0.0)) {
        return Err(Error::Invalid("logistic fit: one finite, non-negative weight per row".into()));
    }
    if x.is_empty() || x.len() != y.len() {
        return Err(Error::Invalid(format!("logistic fit: {} rows and {} labels", x.len(), y.len())));
    }
    if y.iter().all(|&v| v) || y.iter().all(|&v| !v) {
        return Err(Error::Invalid("logistic fit: the labels hold a single class".into()));
    }
    let (mean, std) = standardiser(x);
    let z: Vec<Vec<f64>> =
        x.iter().map(|r| r.iter().zip(&mean).zip(&std).map(|((&v, m), s)| (v as f64 - m) / s).collect()).collect();
    let mut c = row_weights(y, opts.balanced);
    if let Some(w) = w {
        c.iter_mut().zip(w).for_each(|(c, w)| *c *= w);
    }
    let d = mean.len();
    let total: f64 = c.iter().sum();
    let mut theta = vec![0.0; d + 1];
    let (mut loss, _) = loss_and_grad(&z, y, &c, opts.lambda, &theta);
    for _ in 0..opts.max_iter {
        let (_, grad) = loss_and_grad(&z, y, &c, opts.lambda, &theta);
        // Hessian: X^T diag(c p (1-p) / total) X + lambda on the weights (not the bias).
        let mut h = vec![0.0; (d + 1) * (d + 1)];
        let mut row = vec![0.0; d + 1];
        for (x, &ci) in z.iter().zip(&c) {
            let s = x.iter().zip(&theta).map(|(a, b)| a * b).sum::<f64>() + theta[d];
            let p = sigmoid(s);
            let w = ci * p * (1.0 - p) / total;
            row[..d].copy_from_slice(x);
            row[d] = 1.0;
            for i in 0..=d {
                let wi = w * row[i];
                if wi == 0.0 {
                    continue;
                }
                let hi = &mut h[i * (d + 1)..(i + 1) * (d + 1)];
                for (hij, rj) in hi[i..].iter_mut().zip(&row[i..]) {
                    *hij += wi * rj;
                }
            }
        }
        for i in 0..=d {
            for j in 0..i {
                h[i * (d + 1) + j] = h[j * (d + 1) + i];
            }
            if i < d {
                h[i * (d + 1) + i] += opts.lambda;
            }
        }
        let step = cholesky_solve(&mut h, &grad, d + 1)?;
        // Damped Newton: halve the step until the loss does not rise.
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..30 {
            let trial: Vec<f64> = theta.iter().zip(&step).map(|(a, s)| a - t * s).collect();
            let (l, _) = loss_and_grad(&z, y, &c, opts.lambda, &trial);
            if l.is_finite() && l <= loss + 1e-15 {
                theta = trial;
                loss = l;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        let max_step = step.iter().fold(0.0f64, |m, s| m.max((t * s).abs()));
        if !accepted || max_step < opts.tol {
            break;
        }
    }
    if !loss.is_finite() {
        return Err(Error::NonFinite { step: 0, what: "logistic loss".into() });
    }
    let bias = theta[d];
    theta.truncate(d);
    Ok(LogisticHead { mean, std, weights: theta, bias, lambda: opts.lambda })
}

/// Solve `A s = g` for a symmetric positive-definite `A` (`n x n`, overwritten by its factor).
fn cholesky_solve(a: &mut [f64], g: &[f64], n: usize) -> Result<Vec<f64>> {
    for j in 0..n {
        let mut s = a[j * n + j];
        for k in 0..j {
            s -= a[j * n + k] * a[j * n + k];
        }
        if s <= 0.0 || !s.is_finite() {
            return Err(Error::Invalid("logistic fit: the Hessian is not positive definite".into()));
        }
        let l = s.sqrt();
        a[j * n + j] = l;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / l;
        }
    }
    let mut y = g.to_vec();
    for i in 0..n {
        for k in 0..i {
            y[i] -= a[i * n + k] * y[k];
        }
        y[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            y[i] -= a[k * n + i] * y[k];
        }
        y[i] /= a[i * n + i];
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng_rows(n: usize, d: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<bool>) {
        let mut rng = crate::rng::Rng::new(seed);
        let w: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        let mut x = vec![];
        let mut y = vec![];
        for i in 0..n {
            let r: Vec<f32> = (0..d).map(|_| (rng.normal() * 2.0 + 1.0) as f32).collect();
            let s: f64 = r.iter().zip(&w).map(|(a, b)| *a as f64 * b).sum::<f64>() - 1.0;
            // A noisy label, with a few of each class guaranteed.
            y.push(if i < 3 { i % 2 == 0 } else { s + rng.normal() > 0.0 });
            x.push(r);
        }
        (x, y)
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let (x, y) = rng_rows(40, 5, 1);
        let (mean, std) = standardiser(&x);
        let z: Vec<Vec<f64>> =
            x.iter().map(|r| r.iter().zip(&mean).zip(&std).map(|((&v, m), s)| (v as f64 - m) / s).collect()).collect();
        let c = row_weights(&y, true);
        let theta = vec![0.3, -0.2, 0.1, 0.5, -0.4, 0.05];
        let (_, g) = loss_and_grad(&z, &y, &c, 0.1, &theta);
        let mut max_diff = 0.0f64;
        for j in 0..theta.len() {
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[j] += 1e-6;
            down[j] -= 1e-6;
            let fd = (loss_and_grad(&z, &y, &c, 0.1, &up).0 - loss_and_grad(&z, &y, &c, 0.1, &down).0) / 2e-6;
            max_diff = max_diff.max((fd - g[j]).abs());
        }
        assert!(max_diff < 1e-7, "max |finite difference - gradient| = {max_diff:e}");
    }

    #[test]
    fn newton_reaches_a_stationary_point_and_hand_computed_cases() {
        let (x, y) = rng_rows(300, 6, 2);
        let head = fit(&x, &y, &FitOptions { lambda: 0.05, ..Default::default() }).unwrap();
        head.check(6, "test").unwrap();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| r.iter().zip(&head.mean).zip(&head.std).map(|((&v, m), s)| (v as f64 - m) / s).collect())
            .collect();
        let mut theta = head.weights.clone();
        theta.push(head.bias);
        let (_, g) = loss_and_grad(&z, &y, &row_weights(&y, true), 0.05, &theta);
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(gmax < 1e-9, "gradient at the fit: {gmax:e}");
        // One feature, balanced classes, no penalty, separable except for one flip per side:
        // x = -1 (3 neg, 1 pos), x = +1 (3 pos, 1 neg) -> p(+1) = 3/4 exactly at the optimum.
        let x1: Vec<Vec<f32>> = [-1.0f32, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0].iter().map(|&v| vec![v]).collect();
        let y1 = [false, false, false, true, true, true, true, false];
        let h = fit(&x1, &y1, &FitOptions { lambda: 0.0, ..Default::default() }).unwrap();
        assert!((h.prob(&[1.0]) - 0.75).abs() < 1e-9, "{}", h.prob(&[1.0]));
        assert!((h.prob(&[-1.0]) - 0.25).abs() < 1e-9, "{}", h.prob(&[-1.0]));
        assert!(fit(&x1, &[true; 8], &FitOptions::default()).is_err());
    }

    #[test]
    fn a_row_weight_of_five_is_the_row_five_times() {
        let (x, y) = rng_rows(60, 3, 5);
        let opts = FitOptions { lambda: 0.1, balanced: false, ..Default::default() };
        let mut w = vec![1.0; 60];
        w[7] = 5.0;
        let weighted = fit_weighted(&x, &y, Some(&w), &opts).unwrap();
        let (mut x2, mut y2) = (x.clone(), y.clone());
        for _ in 0..4 {
            x2.push(x[7].clone());
            y2.push(y[7]);
        }
        let copies = fit(&x2, &y2, &opts).unwrap();
        let plain = fit(&x, &y, &opts).unwrap();
        // The standardiser sees the copies (not the weights), so predictions agree closely but
        // not exactly; ignoring the weight would leave them as far apart as the plain fit.
        let gap = |h: &LogisticHead| x.iter().map(|r| (h.prob(r) - copies.prob(r)).abs()).fold(0f64, f64::max);
        let (dw, dp) = (gap(&weighted), gap(&plain));
        assert!(dw < dp / 3.0, "weighted vs copies {dw:e}, plain vs copies {dp:e}");
        assert!(fit_weighted(&x, &y, Some(&w[..3]), &opts).is_err());
    }

    #[test]
    fn balanced_weights_move_the_boundary_towards_the_majority() {
        // 1 positive at x = 1, 9 negatives at x = 0: unweighted, p(x=1) stays below 1/2 under a
        // strong penalty; balanced, the positive class weighs as much as all negatives.
        let x: Vec<Vec<f32>> = (0..10).map(|i| vec![if i == 0 { 1.0 } else { 0.0 }]).collect();
        let y: Vec<bool> = (0..10).map(|i| i == 0).collect();
        let strong = |balanced| FitOptions { lambda: 1.0, balanced, ..Default::default() };
        let plain = fit(&x, &y, &strong(false)).unwrap();
        let balanced = fit(&x, &y, &strong(true)).unwrap();
        assert!(plain.prob(&[1.0]) < 0.5, "{}", plain.prob(&[1.0]));
        assert!(balanced.prob(&[1.0]) > 0.5, "{}", balanced.prob(&[1.0]));
    }
}
