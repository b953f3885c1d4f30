//! Reconnect delays: exponential with jitter.
//!
//! After a broker restart every gateway in the field reconnects at once; without jitter they all retry in lockstep and
//! knock the broker over again. "Equal jitter": half of the exponential step is fixed, half random, so delays still
//! grow but spread out.

use std::time::Duration;

use rand::Rng;

/// Reconnect delay generator of one device.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// Delay before the first retry.
    initial: Duration,
    /// Ceiling: a gateway must keep trying at least this often, however long the outage.
    max: Duration,
    /// Failed attempts since the last successful connection.
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max: max.max(initial), attempt: 0 }
    }

    /// Delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter_ms = rng.gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Upper bound of the next delay (exponential, capped).
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A connection succeeded: the next outage starts from the initial delay again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn grows_exponentially_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(1);
        let ceilings: Vec<u64> = (0..6)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay(&mut rng);
                assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
                c.as_millis() as u64
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_devices_apart() {
        let delays: Vec<Duration> = (0..20)
            .map(|seed| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                b.next_delay(&mut StdRng::seed_from_u64(seed))
            })
            .collect();
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "jitter should give different delays: {delays:?}");
    }
}
