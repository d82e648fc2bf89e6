//! Order statistics for the benchmarks' summaries, one definition for all of
//! them, so that a p99 or a median means the same in every table of
//! BENCHMARKS.md.

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` (ascending) by nearest rank: the
/// smallest value with at least `q` of the values at or below it; `q` = 1 is
/// the maximum. NaN when there are no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (sorted in place): for an even count the mean of
/// the two middle values, so a median of two runs is neither the better nor
/// the worse of them. NaN when there are no values.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_an_odd_count_is_the_middle_value() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&mut [7_799.0, 7_545.0]), 7_672.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn no_values_have_no_median_nor_percentile() {
        assert!(median(&mut []).is_nan());
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn percentile_is_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&values, 0.0), 1.0);
        // With fewer values than 1 / (1 - q), the p99 is the maximum.
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.99), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 0.5), 2.0);
    }
}
