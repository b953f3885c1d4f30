//! Fixed-size per-sensor series state: accumulation buckets, rate samples and the duplicate filter.
//!
//! Everything here has a size fixed by the rule set, not by how much a sensor sends: that is what keeps a sensor's
//! state within 1 KiB however fast it reports.
//!
//! Accumulation uses event-time buckets of a fixed width (10 min by default). A window of `n` buckets sums the
//! newest bucket and the `n − 1` before it, so "1 h" covers between 50 and 60 minutes of the past — exactly what
//! summing six 10-minute reports means, which is how CWA's gauge data comes. Values are kept in hundredths as
//! integers: sums never drift, and a late reading is simply added to the bucket it belongs to.

/// Stored unit of accumulation values: hundredths (0.01 mm of rain).
pub const SCALE: f64 = 100.0;

/// Converts a reading to stored units; negative values (not physical for accumulated quantities) count as zero.
pub fn to_units(value: f64) -> (u32, bool) {
    if value.is_nan() || value <= 0.0 {
        return (0, value < 0.0);
    }
    let scaled = (value * SCALE).round();
    if scaled >= u32::MAX as f64 {
        (u32::MAX, true)
    } else {
        (scaled as u32, false)
    }
}

/// Where a reading went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Into the newest bucket (or a newer one, advancing the ring).
    Current,
    /// Into an older bucket still inside the ring (a late reading placed where it belongs).
    Late,
    /// Older than the ring: outside every window.
    TooOld,
}

/// A ring of event-time buckets. `head` is the bucket index (`ts.div_euclid(width)`) of the newest bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    head: i64,
    ring: Box<[u32]>,
}

impl Buckets {
    pub const NONE: i64 = i64::MIN;

    pub fn new(len: usize) -> Self {
        Buckets { head: Self::NONE, ring: vec![0; len.max(1)].into_boxed_slice() }
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing was ever added.
    pub fn is_empty(&self) -> bool {
        self.head == Self::NONE
    }

    pub fn head(&self) -> i64 {
        self.head
    }

    fn slot(&self, bucket: i64) -> usize {
        bucket.rem_euclid(self.ring.len() as i64) as usize
    }

    /// Adds `units` at event time `ts_ms`.
    pub fn add(&mut self, width_ms: i64, ts_ms: i64, units: u32) -> Placement {
        let b = ts_ms.div_euclid(width_ms);
        let len = self.ring.len() as i64;
        let placement = if self.head == Self::NONE {
            self.head = b;
            Placement::Current
        } else if b > self.head {
            // Advance: the buckets between the old head and the new one are empty (no reading fell in them) and
            // the slots they reuse still hold sums from a full ring ago.
            if b - self.head >= len {
                self.ring.fill(0);
            } else {
                for k in self.head + 1..=b {
                    let s = self.slot(k);
                    self.ring[s] = 0;
                }
            }
            self.head = b;
            Placement::Current
        } else if b == self.head {
            Placement::Current
        } else if self.head - b < len {
            Placement::Late
        } else {
            return Placement::TooOld;
        };
        let s = self.slot(b);
        self.ring[s] = self.ring[s].saturating_add(units);
        placement
    }

    /// Sum of the newest `n` buckets (n ≤ len), in stored units.
    pub fn sum(&self, n: usize) -> u64 {
        if self.head == Self::NONE || n == 0 {
            return 0;
        }
        let len = self.ring.len();
        let n = n.min(len);
        let start = self.slot(self.head - n as i64 + 1);
        let sum = |s: &[u32]| s.iter().map(|&v| u64::from(v)).sum::<u64>();
        if start + n <= len {
            sum(&self.ring[start..start + n])
        } else {
            sum(&self.ring[start..]) + sum(&self.ring[..start + n - len])
        }
    }

    /// Sums for several window lengths (ascending, each ≤ len) in one backward pass over the ring.
    pub fn sums_into(&self, lengths: &[u32], out: &mut [u64]) {
        let mut acc = 0u64;
        let mut taken = 0usize;
        for (i, &n) in lengths.iter().enumerate() {
            let n = (n as usize).min(self.ring.len());
            if self.head != Self::NONE {
                while taken < n {
                    let s = self.slot(self.head - taken as i64);
                    acc += u64::from(self.ring[s]);
                    taken += 1;
                }
            }
            out[i] = acc;
        }
    }

    /// Non-empty buckets as (bucket index, units), oldest first: the snapshot form.
    pub fn entries(&self) -> Vec<(i64, u32)> {
        if self.head == Self::NONE {
            return Vec::new();
        }
        let len = self.ring.len() as i64;
        (self.head - len + 1..=self.head)
            .filter_map(|b| Some((b, self.ring[self.slot(b)])).filter(|e| e.1 > 0))
            .collect()
    }

    /// Heap bytes.
    pub fn heap_bytes(&self) -> usize {
        self.ring.len() * std::mem::size_of::<u32>()
    }
}

/// Samples for a rate: the newest reading and older ones thinned to at least `step` apart, covering `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateRing {
    /// (event time, value), ascending; at most `CAP`.
    samples: [(i64, f64); RateRing::CAP],
    len: u8,
}

impl RateRing {
    pub const CAP: usize = 16;

    pub fn new() -> Self {
        RateRing { samples: [(0, 0.0); Self::CAP], len: 0 }
    }

    pub fn samples(&self) -> &[(i64, f64)] {
        &self.samples[..self.len as usize]
    }

    fn remove(&mut self, i: usize) {
        let len = self.len as usize;
        self.samples.copy_within(i + 1..len, i);
        self.len -= 1;
    }

    fn insert_at(&mut self, i: usize, sample: (i64, f64)) {
        if self.len as usize == Self::CAP {
            // Full: the oldest sample goes (late samples inserted before it included).
            if i == 0 {
                return;
            }
            self.remove(0);
            return self.insert_at(i - 1, sample);
        }
        let len = self.len as usize;
        self.samples.copy_within(i..len, i + 1);
        self.samples[i] = sample;
        self.len += 1;
    }

    /// Records a reading. `step` is the thinning distance, `keep` how far back samples are needed (the longest rate
    /// window of the metric).
    pub fn push(&mut self, ts_ms: i64, value: f64, step: i64, keep: i64) {
        let len = self.len as usize;
        let newest = if len > 0 { self.samples[len - 1].0 } else { i64::MIN };
        if ts_ms > newest {
            // Thinning: the newest sample is always exact; the one before it is replaced until it is `step` away
            // from its predecessor, so the ring holds about window/step samples whatever the reporting rate.
            if len >= 2 && self.samples[len - 1].0.saturating_sub(self.samples[len - 2].0) < step {
                self.samples[len - 1] = (ts_ms, value);
            } else {
                self.insert_at(len, (ts_ms, value));
            }
        } else {
            let i = self.samples().partition_point(|(t, _)| *t < ts_ms);
            if self.samples().get(i).is_some_and(|(t, _)| *t == ts_ms) {
                return;
            }
            self.insert_at(i, (ts_ms, value));
        }
        // Drop samples no window can use: keep one at or before `newest − keep` as the window's far end.
        let newest = self.samples[self.len as usize - 1].0;
        while self.len >= 2 && self.samples[1].0 <= newest.saturating_sub(keep) {
            self.remove(0);
        }
    }

    /// Change per hour between the oldest sample within `window` of the newest and the newest; `None` when that
    /// span is shorter than `min_span` (too little history to call it a rate).
    pub fn rate_per_hour(&self, window: i64, min_span: i64) -> Option<f64> {
        let s = self.samples();
        let &(t1, v1) = s.last()?;
        let mut i = s.partition_point(|(t, _)| *t < t1.saturating_sub(window));
        // After a gap in reports (a link drop, a restart from an older snapshot) the oldest sample inside the window
        // may be too recent; the one just before the window, if not too old, still gives an honest average rate.
        if i > 0
            && s.get(i).is_some_and(|x| t1.saturating_sub(x.0) < min_span)
            && t1.saturating_sub(s[i - 1].0) <= 2 * window
        {
            i -= 1;
        }
        let &(t0, v0) = s.get(i)?;
        let span = t1.saturating_sub(t0);
        if span < min_span || span <= 0 {
            return None;
        }
        Some((v1 - v0) / span as f64 * 3_600_000.0)
    }
}

impl Default for RateRing {
    fn default() -> Self {
        Self::new()
    }
}

/// Remembers the last few timestamps of a series so that a resent reading (MQTT QoS 1 redelivery, a gateway
/// replaying its buffer) is counted once. Stores the low 32 bits of the millisecond timestamp: two different
/// accepted timestamps are within the lateness bound of each other (hours), far less than the 49 days after which
/// the low bits repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Dedup {
    seen: [u32; Dedup::CAP],
    len: u8,
    next: u8,
}

impl Dedup {
    /// A gateway has at most 20 publishes in flight by default; 24 covers a full resend of them.
    pub const CAP: usize = 24;

    pub fn new() -> Self {
        Dedup { seen: [0; Self::CAP], len: 0, next: 0 }
    }

    pub fn contains(&self, ts_ms: i64) -> bool {
        let key = ts_ms as u32;
        self.seen[..self.len as usize].contains(&key)
    }

    pub fn insert(&mut self, ts_ms: i64) {
        self.seen[self.next as usize] = ts_ms as u32;
        self.next = ((self.next as usize + 1) % Self::CAP) as u8;
        self.len = (self.len as usize + 1).min(Self::CAP) as u8;
    }

    /// Oldest first.
    pub fn entries(&self) -> Vec<u32> {
        let len = self.len as usize;
        (0..len).map(|k| self.seen[(self.next as usize + Self::CAP - len + k) % Self::CAP]).collect()
    }
}

impl Default for Dedup {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const W: i64 = 600_000;

    #[test]
    fn buckets_advance_and_place_late_readings() {
        let mut b = Buckets::new(6);
        assert_eq!(b.add(W, 0, 100), Placement::Current);
        assert_eq!(b.add(W, 3 * W, 200), Placement::Current);
        assert_eq!(b.add(W, W + 5, 50), Placement::Late);
        assert_eq!(b.sum(6), 350);
        assert_eq!(b.sum(3), 250);
        assert_eq!(b.sum(1), 200);
        // Six buckets later the first ones are gone.
        b.add(W, 7 * W, 1);
        assert_eq!(b.sum(6), 201);
        assert_eq!(b.add(W, W, 1), Placement::TooOld);
        // A jump longer than the ring empties it.
        b.add(W, 100 * W, 7);
        assert_eq!(b.sum(6), 7);
        assert_eq!(b.entries(), vec![(100, 7)]);
    }

    #[test]
    fn rate_ring_thins_and_measures() {
        let mut r = RateRing::new();
        let h = 3_600_000;
        for i in 0..=60 {
            // 0.1 per hour, a reading a minute.
            r.push(i * 60_000, 0.1 * i as f64 / 60.0, h / 12, h);
        }
        assert!(r.samples().len() <= 14, "{}", r.samples().len());
        let rate = r.rate_per_hour(h, h / 4).unwrap();
        assert!((rate - 0.1).abs() < 1e-9, "{rate}");
        let mut short = RateRing::new();
        short.push(0, 0.0, h / 12, h);
        short.push(60_000, 1.0, h / 12, h);
        assert_eq!(short.rate_per_hour(h, h / 4), None);
    }

    #[test]
    fn dedup_remembers_recent_timestamps() {
        let mut d = Dedup::new();
        for t in 0..30 {
            d.insert(t * 1000);
        }
        assert!(d.contains(29_000) && d.contains(6_000) && !d.contains(5_000));
        assert_eq!(d.entries().first(), Some(&6000));
    }

    proptest! {
        /// The bucketed window sums equal a naive recomputation over every reading ever added: the sum of the
        /// readings whose bucket lies in the last `n` buckets up to the newest one (the ring's definition), and the
        /// result is bracketed by exact time windows of length (n − 1) and n buckets.
        #[test]
        fn window_sums_match_naive_recomputation(
            len in 1usize..40,
            readings in prop::collection::vec((0i64..60 * W, 0.0f64..120.0), 1..200),
            n in 1usize..40,
        ) {
            let n = n.min(len);
            let mut ring = Buckets::new(len);
            let mut all: Vec<(i64, u32)> = Vec::new();
            for &(ts, v) in &readings {
                let (units, _) = to_units(v);
                ring.add(W, ts, units);
                all.push((ts, units));
            }
            let head = all.iter().map(|(t, _)| t.div_euclid(W)).max().unwrap();
            let naive: u64 = all
                .iter()
                .filter(|(t, _)| { let b = t.div_euclid(W); b > head - n as i64 && b <= head })
                .map(|(_, u)| u64::from(*u))
                .sum();
            prop_assert_eq!(ring.sum(n), naive);
            let mut out = [0u64; 1];
            ring.sums_into(&[n as u32], &mut out);
            prop_assert_eq!(out[0], naive);
            // Bracketing by exact event-time windows ending at the newest reading.
            let newest = all.iter().map(|(t, _)| *t).max().unwrap();
            let exact = |span: i64| -> u64 {
                all.iter().filter(|(t, _)| *t > newest - span && *t <= newest).map(|(_, u)| u64::from(*u)).sum()
            };
            prop_assert!(exact((n as i64 - 1) * W) <= naive, "shorter exact window exceeds the bucket sum");
            prop_assert!(naive <= exact(n as i64 * W), "bucket sum exceeds the longer exact window");
        }

        /// Rates from the thinned ring equal the naive rate between the same two samples, and the far sample is
        /// never more than one thinning step inside the window.
        #[test]
        fn rate_matches_naive(steps in prop::collection::vec((1i64..900_000, -1.0f64..1.0), 2..200)) {
            let window = 3_600_000;
            let step = window / 12;
            let mut ring = RateRing::new();
            let mut t = 0;
            let mut v = 0.0;
            let mut all = vec![(0i64, 0.0f64)];
            ring.push(0, 0.0, step, window);
            for (dt, dv) in steps {
                t += dt;
                v += dv;
                ring.push(t, v, step, window);
                all.push((t, v));
            }
            let s = ring.samples();
            prop_assert_eq!(s.last().copied(), all.last().copied());
            if let Some(rate) = ring.rate_per_hour(window, 0) {
                let i = s.partition_point(|(ts, _)| *ts < t - window);
                let (t0, v0) = s[i];
                prop_assert!(all.contains(&(t0, v0)));
                let naive = (v - v0) / (t - t0) as f64 * 3_600_000.0;
                prop_assert!((rate - naive).abs() < 1e-9);
                // The far end is within one step (plus one report gap) of the window's start.
                let earliest_in_window = all.iter().find(|(ts, _)| *ts >= t - window).map(|x| x.0).unwrap();
                prop_assert!(t0 - earliest_in_window <= step + 900_000, "far end {t0} vs {earliest_in_window}");
            }
        }
    }
}
