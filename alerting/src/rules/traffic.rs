//! Traffic: what a vehicle detector's readings say about its road (`[traffic]` of `config/rules.toml`), and the
//! classes `traffic` rules grade (`{ traffic = "blocked" }`).
//!
//! A detector (`speed_kmh`, `flow_veh_h`, `occupancy_pct`, one reading set a minute) is classified from its own
//! recent readings and from its neighbours on the same road segment (`engine/traffic.rs`):
//! - **blocked**: speed at most `blocked_speed_kmh` with occupancy at least `blocked_occupancy_pct` (a standing
//!   queue over the loop), or no flow at all while a detector upstream on the segment has that occupancy (the
//!   empty road past an obstruction), held for `blocked_for` of event time — unless every neighbour on the segment
//!   is flowing normally, which a real blockage between them would not allow;
//! - **device fault**: stuck at a standstill for `fault_after` while every neighbour flows normally and has counted
//!   at least `fault_min_vehicles` since the standstill began (an empty night road is not a broken loop), or the
//!   very same reading repeated for `flat_for` (a frozen loop controller) — a broken detector, not a closed road;
//! - **slowed**: speed far below the detector's own normal for that time of the week — below both
//!   `slowed_fraction` × the median and the median − `slowed_mad_k` × 1.4826 × MAD of its 10-minute slot, from the
//!   baseline learned from the readings store (`TrafficBaseline`), taking the most lenient slot within
//!   `slowed_shift` (a rush hour that starts early or runs late) — for `slowed_for`. Without a baseline of at least
//!   `baseline_min_weeks` for those slots, nothing is slowed: an unknown normal is not an incident, and rush hour is
//!   normal;
//! - a detector leaves blocked only when it has flowed again (speed at least `recovered_speed_kmh` with traffic) for
//!   `recovered_for`, so stop-and-go traffic in front of a clearing does not end and reopen the closure.

use serde::{Deserialize, Serialize};

use super::duration_text;

/// What a `traffic` condition asks of the detector's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrafficClass {
    /// Flowing within its normal (or no baseline to say otherwise).
    Normal,
    /// Far below its normal speed for the hour of the week.
    Slowed,
    /// Standing still with the loop occupied, or empty behind a queue.
    Blocked,
    /// Its readings cannot be right given its neighbours (or are frozen).
    DeviceFault,
}

impl TrafficClass {
    pub fn name(self) -> &'static str {
        match self {
            TrafficClass::Normal => "normal",
            TrafficClass::Slowed => "slowed",
            TrafficClass::Blocked => "blocked",
            TrafficClass::DeviceFault => "device_fault",
        }
    }
}

/// `[traffic]`: how detectors are classified. Defaults suit 1-minute detectors on two-lane mountain highways and
/// freeways alike; every limit is in the metric's own unit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSettings {
    /// A standstill: speed at or below this (km/h). Detectors report 0-3 km/h for a queue that creeps.
    #[serde(default = "d_blocked_speed")]
    pub blocked_speed_kmh: f64,
    /// … with the loop occupied at least this share of the time (%).
    #[serde(default = "d_blocked_occupancy")]
    pub blocked_occupancy_pct: f64,
    /// … for this long (event time) before the detector counts as blocked.
    #[serde(default = "d_blocked_for", with = "duration_text::required")]
    pub blocked_for: u64,
    /// Blocked ends after flowing at least this fast (km/h), with vehicles counted …
    #[serde(default = "d_recovered_speed")]
    pub recovered_speed_kmh: f64,
    /// … for this long.
    #[serde(default = "d_recovered_for", with = "duration_text::required")]
    pub recovered_for: u64,
    /// A neighbour "flows normally" at or above this speed (km/h) with vehicles counted.
    #[serde(default = "d_normal_speed")]
    pub normal_speed_kmh: f64,
    /// A neighbour's reading counts for this long after its timestamp (a silent neighbour says nothing).
    #[serde(default = "d_neighbour_fresh", with = "duration_text::required")]
    pub neighbour_fresh_for: u64,
    /// Stuck at a standstill while every neighbour flows normally for this long: a device fault …
    #[serde(default = "d_fault_after", with = "duration_text::required")]
    pub fault_after: u64,
    /// … once every neighbour has counted at least this many vehicles since the standstill began. A working loop
    /// among neighbours that counted 20 misses all of them with odds of e^-20 (Poisson); on a night road with a few
    /// dozen vehicles an hour a loop often counts none for minutes, and reports 0 km/h, as VDLive does: an empty
    /// road, not a broken detector.
    #[serde(default = "d_fault_min_vehicles")]
    pub fault_min_vehicles: f64,
    /// The very same (speed, flow, occupancy) repeated for this long: frozen.
    #[serde(default = "d_flat_for", with = "duration_text::required")]
    pub flat_for: u64,
    /// Slowed: below this fraction of the median for the hour of the week …
    #[serde(default = "d_slowed_fraction")]
    pub slowed_fraction: f64,
    /// … and more than this many robust standard deviations (1.4826 × MAD) below the median …
    #[serde(default = "d_slowed_mad_k")]
    pub slowed_mad_k: f64,
    /// … for this long.
    #[serde(default = "d_slowed_for", with = "duration_text::required")]
    pub slowed_for: u64,
    /// A rush hour comes earlier or later from day to day: the normal a speed is judged against is the most
    /// lenient of the detector's 10-minute slots within this much of the time, so a rush hour that starts up to
    /// this much early or runs this much late is still a rush hour. 0: the slot's own normal only.
    #[serde(default = "d_slowed_shift", with = "duration_text::required")]
    pub slowed_shift: u64,
    /// A baseline hour needs readings from at least this many distinct weeks (one odd week is not a normal).
    #[serde(default = "d_baseline_min_weeks")]
    pub baseline_min_weeks: u32,
}

fn d_blocked_speed() -> f64 {
    5.0
}
fn d_blocked_occupancy() -> f64 {
    80.0
}
fn d_blocked_for() -> u64 {
    60_000
}
fn d_recovered_speed() -> f64 {
    30.0
}
fn d_recovered_for() -> u64 {
    120_000
}
fn d_normal_speed() -> f64 {
    40.0
}
fn d_neighbour_fresh() -> u64 {
    300_000
}
fn d_fault_after() -> u64 {
    300_000
}
fn d_fault_min_vehicles() -> f64 {
    20.0
}
fn d_flat_for() -> u64 {
    1_800_000
}
fn d_slowed_fraction() -> f64 {
    0.5
}
fn d_slowed_mad_k() -> f64 {
    3.0
}
fn d_slowed_for() -> u64 {
    600_000
}
fn d_slowed_shift() -> u64 {
    1_800_000
}
fn d_baseline_min_weeks() -> u32 {
    3
}

impl Default for TrafficSettings {
    fn default() -> Self {
        TrafficSettings {
            blocked_speed_kmh: d_blocked_speed(),
            blocked_occupancy_pct: d_blocked_occupancy(),
            blocked_for: d_blocked_for(),
            recovered_speed_kmh: d_recovered_speed(),
            recovered_for: d_recovered_for(),
            normal_speed_kmh: d_normal_speed(),
            neighbour_fresh_for: d_neighbour_fresh(),
            fault_after: d_fault_after(),
            fault_min_vehicles: d_fault_min_vehicles(),
            flat_for: d_flat_for(),
            slowed_fraction: d_slowed_fraction(),
            slowed_mad_k: d_slowed_mad_k(),
            slowed_for: d_slowed_for(),
            slowed_shift: d_slowed_shift(),
            baseline_min_weeks: d_baseline_min_weeks(),
        }
    }
}

impl TrafficSettings {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let non_negative = [
            ("blocked_speed_kmh", self.blocked_speed_kmh),
            ("recovered_speed_kmh", self.recovered_speed_kmh),
            ("normal_speed_kmh", self.normal_speed_kmh),
            ("slowed_mad_k", self.slowed_mad_k),
        ];
        for (name, v) in non_negative {
            if !v.is_finite() || !(0.0..=300.0).contains(&v) {
                return Err(format!("`{name}` {v} must be a number between 0 and 300"));
            }
        }
        if !(self.fault_min_vehicles.is_finite() && (0.0..=10_000.0).contains(&self.fault_min_vehicles)) {
            return Err(format!(
                "`fault_min_vehicles` {} must be a number between 0 and 10000",
                self.fault_min_vehicles
            ));
        }
        if self.slowed_shift > 6 * 3_600_000 {
            return Err("`slowed_shift` must be at most 6 h".into());
        }
        if !(0.0..=100.0).contains(&self.blocked_occupancy_pct) {
            return Err(format!("`blocked_occupancy_pct` {} must be 0-100", self.blocked_occupancy_pct));
        }
        if !(self.slowed_fraction > 0.0 && self.slowed_fraction < 1.0) {
            return Err(format!("`slowed_fraction` {} must be between 0 and 1", self.slowed_fraction));
        }
        if self.recovered_speed_kmh <= self.blocked_speed_kmh {
            return Err("`recovered_speed_kmh` must be above `blocked_speed_kmh` (hysteresis)".into());
        }
        for (name, v) in [
            ("blocked_for", self.blocked_for),
            ("recovered_for", self.recovered_for),
            ("neighbour_fresh_for", self.neighbour_fresh_for),
            ("fault_after", self.fault_after),
            ("flat_for", self.flat_for),
            ("slowed_for", self.slowed_for),
        ] {
            if v == 0 || v > 86_400_000 {
                return Err(format!("`{name}` must be between 1 ms and 24 h"));
            }
        }
        if self.baseline_min_weeks == 0 {
            return Err("`baseline_min_weeks` must be at least 1".into());
        }
        Ok(())
    }

    /// How much history a detector keeps: enough for the longest of the durations above.
    pub fn history_ms(&self) -> i64 {
        [self.blocked_for, self.recovered_for, self.fault_after, self.flat_for, self.slowed_for]
            .into_iter()
            .max()
            .unwrap_or(0) as i64
    }
}
