//! Token buckets, one per key (a client id or an address). Time is passed in, so tests need no clock.
//! [`address_key`] is the one way an address becomes a key, for the report limits and the public endpoints' limit
//! (`web/public.rs`) alike.
//!
//! A bucket holds at most `burst` tokens and gains one every `refill_every_ms`; a report takes one. Memory is
//! bounded: past `max_keys` buckets, the ones that have refilled completely (which behave exactly like a new
//! bucket) are forgotten first, then the least recently used half.

use std::collections::HashMap;

/// The key of an address's bucket: an IPv4 address, or an IPv6 /64 (what one subscriber is given, so rotating
/// addresses inside it does not escape a limit). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
/// listener reports for IPv4 clients) is its IPv4 address. One definition with the MQTT login limits.
pub use ingest::front_door::throttle::address_key;

/// How generous one kind of bucket is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketPolicy {
    /// Reports allowed at once.
    pub burst: u32,
    /// One more report allowed per this many milliseconds.
    pub refill_every_ms: i64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    policy: BucketPolicy,
    buckets: HashMap<String, Bucket>,
    max_keys: usize,
}

impl RateLimiter {
    pub fn new(policy: BucketPolicy, max_keys: usize) -> Self {
        Self { policy, buckets: HashMap::new(), max_keys: max_keys.max(1) }
    }

    /// Tokens `key` has at `now_ms`.
    fn level(&self, key: &str, now_ms: i64) -> f64 {
        let burst = f64::from(self.policy.burst);
        match self.buckets.get(key) {
            // A clock that steps back refills nothing rather than draining the bucket.
            Some(b) => {
                (b.tokens + (now_ms - b.last_ms).max(0) as f64 / self.policy.refill_every_ms.max(1) as f64).min(burst)
            }
            None => burst,
        }
    }

    /// `None` when `key` may report now, otherwise how long until it may (milliseconds). Takes nothing.
    pub fn wait_ms(&self, key: &str, now_ms: i64) -> Option<i64> {
        let level = self.level(key, now_ms);
        (level < 1.0).then(|| ((1.0 - level) * self.policy.refill_every_ms as f64).ceil() as i64)
    }

    /// Takes one token from `key` (call after [`RateLimiter::wait_ms`] said yes).
    pub fn take(&mut self, key: &str, now_ms: i64) {
        let level = self.level(key, now_ms);
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.make_room(now_ms);
        }
        self.buckets.insert(key.to_string(), Bucket { tokens: level - 1.0, last_ms: now_ms });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now_ms: i64) {
        let burst = f64::from(self.policy.burst);
        let refill = self.policy.refill_every_ms.max(1) as f64;
        self.buckets.retain(|_, b| b.tokens + (now_ms - b.last_ms).max(0) as f64 / refill < burst);
        if self.buckets.len() >= self.max_keys {
            let mut ages: Vec<i64> = self.buckets.values().map(|b| b.last_ms).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.last_ms > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut limiter = RateLimiter::new(BucketPolicy { burst: 3, refill_every_ms: 1000 }, 10);
        for _ in 0..3 {
            assert_eq!(limiter.wait_ms("a", 0), None);
            limiter.take("a", 0);
        }
        assert_eq!(limiter.wait_ms("a", 0), Some(1000));
        assert_eq!(limiter.wait_ms("a", 400), Some(600));
        assert_eq!(limiter.wait_ms("b", 0), None, "other keys are not affected");
        assert_eq!(limiter.wait_ms("a", 1000), None);
        limiter.take("a", 1000);
        assert_eq!(limiter.wait_ms("a", 1000), Some(1000));
        assert_eq!(limiter.wait_ms("a", 100_000), None);
    }

    #[test]
    fn ipv6_neighbours_share_a_key_ipv4_mapped_is_ipv4() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::5"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(key("2001:db8:1:2::5"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::5"), key("2001:db8:1:3::5"), "the next /64 is someone else");
        assert_eq!(key("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(key("10.0.0.1"), "10.0.0.1");
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut limiter = RateLimiter::new(BucketPolicy { burst: 2, refill_every_ms: 1000 }, 100);
        for i in 0..10_000 {
            limiter.take(&format!("k{i}"), i);
        }
        assert!(limiter.len() <= 100, "{}", limiter.len());
        // The newest key is still limited after eviction.
        limiter.take("k9999", 9999);
        assert!(limiter.wait_ms("k9999", 9999).is_some());
    }
}
