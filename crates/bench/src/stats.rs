//! Small statistics over repeated measurements: median, quartiles, spread, ratios.

use serde::Serialize;

/// Summary of one series of measurements.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// 25th percentile (linear interpolation).
    pub p25: f64,
    /// 75th percentile (linear interpolation).
    pub p75: f64,
}

impl Summary {
    /// `median [min–max]` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        if self.n == 1 {
            return format!("{:.digits$}", self.median);
        }
        format!("{:.digits$} [{:.digits$}–{:.digits$}]", self.median, self.min, self.max)
    }

    /// Relative spread `(max - min) / median`, 0 for a single value.
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 { 0.0 } else { (self.max - self.min) / self.median }
    }
}

/// Quantile `q` in [0,1] of sorted values, linear interpolation between neighbours.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// Summarize; `None` for an empty series. NaNs are ignored.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Summary {
        n: v.len(),
        median: quantile_sorted(&v, 0.5),
        min: v[0],
        max: v[v.len() - 1],
        p25: quantile_sorted(&v, 0.25),
        p75: quantile_sorted(&v, 0.75),
    })
}

/// Median of `values`, NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    summarize(values).map_or(f64::NAN, |s| s.median)
}

/// Ratios of paired measurements (same repetition, same run of the suite): `a[i] / b[i]`.
pub fn paired_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).filter(|(_, y)| **y != 0.0).map(|(x, y)| x / y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quartiles() {
        let s = summarize(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 3.0, 1.0, 5.0));
        assert_eq!(s.p25, 2.0);
        assert_eq!(s.p75, 4.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(summarize(&[]).is_none());
        assert!(median(&[]).is_nan());
        assert_eq!(summarize(&[f64::NAN, 2.0]).unwrap().n, 1);
    }

    #[test]
    fn show_and_spread() {
        let s = summarize(&[10.0, 12.0, 8.0]).unwrap();
        assert_eq!(s.show(1), "10.0 [8.0–12.0]");
        assert!((s.spread() - 0.4).abs() < 1e-12);
        assert_eq!(summarize(&[7.0]).unwrap().show(0), "7");
    }

    #[test]
    fn ratios_pair_up() {
        assert_eq!(paired_ratios(&[10.0, 20.0, 5.0], &[5.0, 0.0, 5.0]), vec![2.0, 1.0]);
    }
}
