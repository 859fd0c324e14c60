//! The highest offered rate a path sustains: bisection on a log scale
//! between the highest fixed rate that passed and the lowest that failed
//! (doubling first when none failed), to within a given precision.

/// `passed`: a rate known to pass, or 0; `failed`: a rate known to fail,
/// if any (one of the two must be known). Returns the highest rate seen to
/// pass (0 if none) after at most `max_probes` calls of `probe`.
pub async fn highest(
    passed: f64,
    failed: Option<f64>,
    precision: f64,
    max_probes: usize,
    mut probe: impl AsyncFnMut(f64) -> bool,
) -> f64 {
    assert!(passed > 0.0 || failed.is_some(), "nothing to search from");
    let (mut lo, mut hi) = (passed, failed);
    for _ in 0..max_probes {
        let rate = match hi {
            None => lo * 2.0,
            Some(hi) if lo == 0.0 => hi / 2.0,
            Some(hi) if hi / lo <= 1.0 + precision => break,
            Some(hi) => (lo * hi).sqrt(),
        };
        if probe(rate).await {
            lo = rate;
        } else {
            hi = Some(rate);
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn search(passed: f64, failed: Option<f64>, capacity: f64) -> (f64, Vec<f64>) {
        let mut probes = Vec::new();
        let found = highest(passed, failed, 0.1, 8, async |rate| {
            probes.push(rate);
            rate <= capacity
        })
        .await;
        (found, probes)
    }

    #[tokio::test]
    async fn bisects_between_a_pass_and_a_failure() {
        let (found, probes) = search(1000.0, Some(5000.0), 3000.0).await;
        assert!(found <= 3000.0 && found > 3000.0 / 1.1, "{found} after {probes:?}");
        assert!(probes.len() <= 5, "{probes:?}");
    }

    #[tokio::test]
    async fn doubles_until_a_failure_then_bisects() {
        let (found, probes) = search(5000.0, None, 23_000.0).await;
        assert_eq!(&probes[..3], &[10_000.0, 20_000.0, 40_000.0]);
        assert!(found <= 23_000.0 && found > 23_000.0 / 1.1, "{found} after {probes:?}");
    }

    #[tokio::test]
    async fn halves_when_even_the_lowest_rate_failed() {
        let (found, probes) = search(0.0, Some(100.0), 30.0).await;
        assert_eq!(&probes[..2], &[50.0, 25.0]);
        assert!(found <= 30.0 && found > 30.0 / 1.1, "{found} after {probes:?}");
        assert_eq!(search(0.0, Some(100.0), 0.0).await.0, 0.0);
    }
}
