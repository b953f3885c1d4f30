//! Limits on password logins, so that a flood of wrong passwords cannot hold the argon2 thread (and with it every
//! real device's login) or guess passwords at speed:
//!
//! - **Per address** ([`FailedLogins`]): each failed login (unknown device or wrong password: one answer, one count)
//!   takes a token from its address's bucket (`failed_login_burst` at once, one more per `failed_login_refill`). An
//!   address with no token left is refused at once (CONNACK 5 / v5 0x9F "connection rate exceeded"), before any
//!   password check, the cheap remembered-password one included (otherwise that cache would let a throttled address
//!   test guesses at full speed), and again just before its argon2 run (logins admitted together wait in the queue
//!   while the first of them fail). Successful logins cost nothing, so a crowd of real devices behind one NAT
//!   reconnecting after an outage is not refused. IPv6 addresses count per /64 (what one subscriber is given),
//!   IPv4-mapped IPv6 as the IPv4 address.
//! - **Per device id** ([`PendingLogins`]): at most `max_pending_logins_per_device` logins of one device id wait for
//!   argon2 at a time; more are refused at once (CONNACK 3 / v5 0x89 "server busy", which clients retry). A flood
//!   aimed at one device id from many addresses then holds a few places in the argon2 queue, not all of them, and
//!   the other devices' first logins keep their turn.
//!
//! Both are pure bookkeeping: time is passed in, so tests need no clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The network an address counts for: the IPv4 address itself, or the IPv6 /64 (the binary's HTTP limits key
/// addresses the same way, `reports::address_key`).
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// [`network_of`] as the key of a per-address limit: `a.b.c.d`, or the IPv6 network as `x:x:x:x::/64`. The binary's
/// HTTP and report limits and the Web Push subscription bounds key addresses with this too.
pub fn address_key(ip: IpAddr) -> String {
    match network_of(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(net) => format!("{net}/64"),
    }
}

/// How generous the per-address bucket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePolicy {
    /// Failed logins an address may have at once.
    pub burst: u32,
    /// One more every this long.
    pub refill: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of failed logins, one per network. Memory is bounded: past `max_networks`, the
/// buckets that have refilled completely (which behave exactly like a new one) are forgotten first, then the least
/// recently used half.
#[derive(Debug)]
pub struct FailedLogins {
    policy: FailurePolicy,
    buckets: HashMap<IpAddr, Bucket>,
    max_networks: usize,
}

impl FailedLogins {
    pub fn new(policy: FailurePolicy, max_networks: usize) -> Self {
        let policy = FailurePolicy { burst: policy.burst.max(1), refill: policy.refill.max(Duration::from_millis(1)) };
        Self { policy, buckets: HashMap::new(), max_networks: max_networks.max(1) }
    }

    fn level(&self, network: IpAddr, now: Instant) -> f64 {
        let burst = f64::from(self.policy.burst);
        match self.buckets.get(&network) {
            // `saturating_duration_since`: a clock read out of order refills nothing rather than panicking.
            Some(b) => (b.tokens
                + now.saturating_duration_since(b.at).as_secs_f64() / self.policy.refill.as_secs_f64())
            .min(burst),
            None => burst,
        }
    }

    /// Whether `ip` may try a login now (takes nothing).
    pub fn admits(&self, ip: IpAddr, now: Instant) -> bool {
        self.level(network_of(ip), now) >= 1.0
    }

    /// One failed login from `ip`.
    pub fn take(&mut self, ip: IpAddr, now: Instant) {
        let network = network_of(ip);
        let level = self.level(network, now);
        if !self.buckets.contains_key(&network) && self.buckets.len() >= self.max_networks {
            self.make_room(now);
        }
        self.buckets.insert(network, Bucket { tokens: level - 1.0, at: now });
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        let burst = f64::from(self.policy.burst);
        let refill = self.policy.refill.as_secs_f64();
        self.buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / refill < burst);
        if self.buckets.len() >= self.max_networks {
            let mut ages: Vec<Instant> = self.buckets.values().map(|b| b.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.buckets.retain(|_, b| b.at > cut);
        }
    }
}

/// Logins waiting for (or in) an argon2 check, per device id.
#[derive(Debug)]
pub struct PendingLogins {
    max_per_device: usize,
    waiting: Mutex<HashMap<String, usize>>,
}

/// One login's place in [`PendingLogins`]; the place is freed when this is dropped (the check ended, or the login
/// was abandoned before it began).
#[derive(Debug)]
pub struct Pending {
    logins: Arc<PendingLogins>,
    device_id: String,
}

impl PendingLogins {
    pub fn new(max_per_device: usize) -> Arc<Self> {
        Arc::new(Self { max_per_device: max_per_device.max(1), waiting: Mutex::new(HashMap::new()) })
    }

    /// A place for one more login of `device_id`, or `None` when it has `max_per_device` waiting already.
    pub fn enter(self: &Arc<Self>, device_id: &str) -> Option<Pending> {
        let mut waiting = self.waiting.lock();
        let count = waiting.entry(device_id.to_string()).or_insert(0);
        if *count >= self.max_per_device {
            return None;
        }
        *count += 1;
        Some(Pending { logins: Arc::clone(self), device_id: device_id.to_string() })
    }

    /// Logins of `device_id` waiting now.
    pub fn waiting(&self, device_id: &str) -> usize {
        self.waiting.lock().get(device_id).copied().unwrap_or(0)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut waiting = self.logins.waiting.lock();
        if let Some(count) = waiting.get_mut(&self.device_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                waiting.remove(&self.device_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_are_ipv4_addresses_and_ipv6_slash_64s() {
        assert_eq!(network_of(ip("2001:db8:1:2::5")), network_of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(network_of(ip("2001:db8:1:2::5")), network_of(ip("2001:db8:1:3::5")));
        assert_eq!(network_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_ne!(network_of(ip("10.0.0.1")), network_of(ip("10.0.0.2")));
    }

    #[test]
    fn failures_use_up_an_address_and_come_back_with_time() {
        let t0 = Instant::now();
        let mut failed = FailedLogins::new(FailurePolicy { burst: 3, refill: Duration::from_secs(10) }, 100);
        for _ in 0..3 {
            assert!(failed.admits(ip("10.0.0.1"), t0));
            failed.take(ip("10.0.0.1"), t0);
        }
        assert!(!failed.admits(ip("10.0.0.1"), t0), "the burst is used up");
        assert!(!failed.admits(ip("::ffff:10.0.0.1"), t0), "the same address over a dual-stack socket");
        assert!(failed.admits(ip("10.0.0.2"), t0), "another address has its own bucket");
        assert!(!failed.admits(ip("10.0.0.1"), t0 + Duration::from_secs(9)));
        assert!(failed.admits(ip("10.0.0.1"), t0 + Duration::from_secs(10)), "one more per refill");
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut failed = FailedLogins::new(FailurePolicy { burst: 2, refill: Duration::from_secs(1) }, 100);
        for i in 0..10_000u32 {
            failed.take(IpAddr::from(i.to_be_bytes()), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(failed.len() <= 100, "{}", failed.len());
    }

    #[test]
    fn pending_places_per_device_are_freed_on_drop() {
        let pending = PendingLogins::new(2);
        let a = pending.enter("RG0001").unwrap();
        let _b = pending.enter("RG0001").unwrap();
        assert!(pending.enter("RG0001").is_none(), "two wait already");
        assert!(pending.enter("RG0002").is_some(), "another device has its own places");
        drop(a);
        assert_eq!(pending.waiting("RG0001"), 1);
        assert!(pending.enter("RG0001").is_some());
    }
}
