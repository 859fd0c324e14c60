//! Latency summaries from every sample (sorted, nearest rank): at these
//! sample counts exact percentiles are cheap, and a histogram's buckets
//! would blur the sub-millisecond differences the benchmark is about.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one set of durations, in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// `None` for no samples.
    pub fn of(mut samples: Vec<Duration>) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let count = samples.len();
        // Nearest rank: the smallest sample with at least q of all at or below it.
        let at = |q: f64| ms(samples[((count as f64 * q).ceil() as usize).clamp(1, count) - 1]);
        Some(Summary {
            count,
            min_ms: ms(samples[0]),
            mean_ms: ms(samples.iter().sum::<Duration>() / count as u32),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: ms(samples[count - 1]),
        })
    }

    /// The percentiles the tables show, in order.
    pub fn shown(&self) -> [f64; 5] {
        [self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms]
    }
}

/// The p99 of a summary that may be missing: NaN then, which fails every
/// comparison and prints as such.
pub fn p99(summary: Option<&Summary>) -> f64 {
    summary.map_or(f64::NAN, |s| s.p99_ms)
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let summary = Summary::of(samples).unwrap();
        assert_eq!(summary.shown(), [500.0, 900.0, 990.0, 999.0, 1000.0]);
        assert_eq!((summary.count, summary.min_ms), (1000, 1.0));
        assert!((summary.mean_ms - 500.5).abs() < 1e-9, "{}", summary.mean_ms);
        let one = Summary::of(vec![Duration::from_micros(1500)]).unwrap();
        assert_eq!(one.shown(), [1.5; 5]);
        assert!(Summary::of(Vec::new()).is_none());
    }
}
