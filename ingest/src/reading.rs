//! The validated reading and the metric vocabulary of `INTERFACE.md`.

use serde::{Deserialize, Serialize};

/// One measured value of one sensor at one event time. A device's reading set (`{"ts":…,"values":{…}}`) becomes one
/// `Reading` per metric, because rules, storage and history all work per metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub sensor_id: String,
    /// Event time (Unix milliseconds) as the device stamped it; rules window on this, never on arrival time.
    pub ts_ms: i64,
    pub metric: Metric,
    pub value: f64,
    /// Present for mobile devices (hazmat trucks), which report where they are with every reading set.
    pub position: Option<Position>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
}

/// How a metric's value is carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Number,
    /// Carried as JSON `true`/`false` (SenML `vb`); stored as 1.0 / 0.0.
    Bool,
    /// A whole number (UN cargo numbers).
    Integer,
}

macro_rules! vocabulary {
    ($( $variant:ident => $name:literal, $unit:literal, [$($alias:literal),*], $kind:ident, $min:expr, $max:expr; )*) => {
        /// The metric vocabulary. Names, units and plausible ranges are part of the public contract.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum Metric { $($variant),* }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),*];

            pub fn name(self) -> &'static str { match self { $(Metric::$variant => $name),* } }

            pub fn from_name(name: &str) -> Option<Metric> {
                match name { $($name => Some(Metric::$variant),)* _ => None }
            }

            /// The unit as `INTERFACE.md` writes it (empty for booleans).
            pub fn unit(self) -> &'static str { match self { $(Metric::$variant => $unit),* } }

            /// Whether `unit` (as a SenML record spells it) names this metric's unit.
            pub fn accepts_unit(self, unit: &str) -> bool {
                match self { $(Metric::$variant => unit == $unit $(|| unit == $alias)*),* }
            }

            pub fn value_kind(self) -> ValueKind { match self { $(Metric::$variant => ValueKind::$kind),* } }

            /// The physically plausible range: a value outside it is a broken sensor or a forged message, not weather.
            pub fn plausible_range(self) -> (f64, f64) { match self { $(Metric::$variant => ($min, $max)),* } }
        }
    };
}

vocabulary! {
    RainMm => "rain_mm", "mm", [], Number, 0.0, 500.0;
    WaterLevelM => "water_level_m", "m", [], Number, -50.0, 4000.0;
    Pm25Ugm3 => "pm25_ugm3", "µg/m³", ["ug/m3", "µg/m3"], Number, 0.0, 2000.0;
    TiltDeg => "tilt_deg", "°", ["deg"], Number, -90.0, 90.0;
    DisplacementMm => "displacement_mm", "mm", [], Number, -10000.0, 10000.0;
    WireIntact => "wire_intact", "", [], Bool, 0.0, 1.0;
    SoilMoisturePct => "soil_moisture_pct", "%", ["%RH", "%EL"], Number, 0.0, 100.0;
    VibrationMmS => "vibration_mm_s", "mm/s", [], Number, 0.0, 5000.0;
    PgaGal => "pga_gal", "gal", ["Gal"], Number, 0.0, 5000.0;
    SpeedKmh => "speed_kmh", "km/h", [], Number, 0.0, 300.0;
    FlowVehH => "flow_veh_h", "veh/h", ["1/h", "/h"], Number, 0.0, 20000.0;
    OccupancyPct => "occupancy_pct", "%", [], Number, 0.0, 100.0;
    FloodDepthCm => "flood_depth_cm", "cm", [], Number, 0.0, 1000.0;
    BatteryV => "battery_v", "V", [], Number, 0.0, 60.0;
    UnNumber => "un_number", "", [], Integer, 1.0, 3600.0;
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_round_trips_by_name() {
        for &m in Metric::ALL {
            assert_eq!(Metric::from_name(m.name()), Some(m));
            let json = serde_json::to_string(&m).expect("serialises");
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
    }

    #[test]
    fn ranges_are_ordered() {
        for &m in Metric::ALL {
            let (lo, hi) = m.plausible_range();
            assert!(lo < hi, "{m}");
        }
    }
}
