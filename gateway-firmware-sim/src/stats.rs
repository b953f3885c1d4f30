//! Ack-latency percentiles. Exact (sorted samples), because runs are at most a few million messages and an exact p99
//! is easier to trust in a benchmark than a histogram bucket.

use std::fmt;
use std::time::Duration;

/// Latency from handing a publish to the connection until its PUBACK (QoS 0: until written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Samples (acknowledged messages).
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl LatencyStats {
    /// Percentiles of microsecond samples (sorts in place).
    pub fn from_micros(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest-rank: the smallest sample with at least q of all samples at or below it.
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            Duration::from_micros(samples[rank - 1] as u64)
        };
        LatencyStats { count: samples.len() as u64, p50: at(0.50), p99: at(0.99), max: at(1.0) }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for LatencyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(f, "p50 {}, p99 {}, max {}", ms(self.p50), ms(self.p99), ms(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let s = LatencyStats::from_micros(&mut v);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.max, Duration::from_micros(100));
        assert_eq!(LatencyStats::from_micros(&mut []), LatencyStats::default());
        let one = LatencyStats::from_micros(&mut [7]);
        assert_eq!((one.p50, one.p99), (Duration::from_micros(7), Duration::from_micros(7)));
    }
}
