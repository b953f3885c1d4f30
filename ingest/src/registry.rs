//! The sensor registry: which sensors exist, what they measure, where they stand and who owns them.
//!
//! Loaded from `config/sensors.toml` at start. Operators add, update and retire sensors over the HTTP API; those
//! changes go through [`SensorRegistry::upsert`] / [`SensorRegistry::retire`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::reading::Metric;
use crate::topic::is_valid_device_id;
use crate::IngestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    RainGauge,
    RiverGauge,
    AirQuality,
    TiltMeter,
    Extensometer,
    WireSensor,
    SoilMoisture,
    Geophone,
    Seismometer,
    VehicleDetector,
    RoadFlood,
    HazmatGps,
}

impl SensorKind {
    /// What a sensor of this kind may report. Battery voltage is allowed everywhere: every field device has one.
    pub fn measures(self, metric: Metric) -> bool {
        use Metric::*;
        if metric == BatteryV {
            return true;
        }
        match self {
            SensorKind::RainGauge => metric == RainMm,
            SensorKind::RiverGauge => metric == WaterLevelM,
            SensorKind::AirQuality => metric == Pm25Ugm3,
            SensorKind::TiltMeter => metric == TiltDeg,
            SensorKind::Extensometer => metric == DisplacementMm,
            SensorKind::WireSensor => metric == WireIntact,
            SensorKind::SoilMoisture => metric == SoilMoisturePct,
            SensorKind::Geophone => metric == VibrationMmS,
            SensorKind::Seismometer => metric == PgaGal,
            SensorKind::VehicleDetector => matches!(metric, SpeedKmh | FlowVehH | OccupancyPct),
            SensorKind::RoadFlood => metric == FloodDepthCm,
            SensorKind::HazmatGps => matches!(metric, SpeedKmh | UnNumber),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    pub id: String,
    pub kind: SensorKind,
    pub lat: f64,
    pub lon: f64,
    /// Expected seconds between reports; the deadman rule multiplies it.
    pub interval_s: u32,
    pub agency: String,
    pub metrics: Vec<Metric>,
    /// The zone the sensor was placed for (informative; membership is computed from the position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Mobile sensors (trucks) must send a position with every reading set.
    #[serde(default)]
    pub mobile: bool,
    #[serde(default)]
    pub retired: bool,
}

impl Sensor {
    pub fn check(&self) -> Result<(), String> {
        if !is_valid_device_id(&self.id) {
            return Err("id must be 1-32 ASCII letters or digits".into());
        }
        if !(-90.0..=90.0).contains(&self.lat) || !(-180.0..=180.0).contains(&self.lon) {
            return Err(format!("position {},{} is out of range", self.lat, self.lon));
        }
        if self.interval_s == 0 {
            return Err("interval_s must be at least 1".into());
        }
        if let Some(m) = self.metrics.iter().find(|m| !self.kind.measures(**m)) {
            return Err(format!("metric `{m}` is not measured by a {:?}", self.kind));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SensorsFile {
    #[serde(default)]
    sensor: Vec<Sensor>,
}

#[derive(Debug, Clone, Default)]
pub struct SensorRegistry {
    sensors: BTreeMap<String, Sensor>,
}

impl SensorRegistry {
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, IngestError> {
        let parsed: SensorsFile =
            toml::from_str(text).map_err(|e| IngestError::Config { file: file.into(), message: e.to_string() })?;
        let mut registry = SensorRegistry::default();
        for sensor in parsed.sensor {
            sensor.check().map_err(|message| IngestError::Sensor {
                file: file.into(),
                sensor: sensor.id.clone(),
                message,
            })?;
            if registry.sensors.contains_key(&sensor.id) {
                return Err(IngestError::Sensor { file: file.into(), sensor: sensor.id, message: "duplicate id".into() });
            }
            registry.sensors.insert(sensor.id.clone(), sensor);
        }
        Ok(registry)
    }

    pub fn get(&self, id: &str) -> Option<&Sensor> {
        self.sensors.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sensor> {
        self.sensors.values()
    }

    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// Adds or replaces a sensor after checking it.
    pub fn upsert(&mut self, sensor: Sensor) -> Result<(), String> {
        sensor.check()?;
        self.sensors.insert(sensor.id.clone(), sensor);
        Ok(())
    }

    /// Retired sensors stay listed (their history matters) but their readings are refused.
    pub fn retire(&mut self, id: &str) -> bool {
        self.sensors.get_mut(id).map(|s| s.retired = true).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "sensors.toml";

    #[test]
    fn loads_and_checks() {
        let text = r#"
[[sensor]]
id = "RG0001"
kind = "rain_gauge"
lat = 23.5
lon = 120.9
interval_s = 600
agency = "SWCB"
metrics = ["rain_mm", "battery_v"]
"#;
        let reg = SensorRegistry::from_toml(text, Path::new(FILE)).unwrap();
        assert_eq!(reg.get("RG0001").unwrap().kind, SensorKind::RainGauge);
    }

    #[test]
    fn errors_name_file_sensor_and_reason() {
        let wrong_metric = r#"
[[sensor]]
id = "RG0001"
kind = "rain_gauge"
lat = 23.5
lon = 120.9
interval_s = 600
agency = "SWCB"
metrics = ["tilt_deg"]
"#;
        let e = SensorRegistry::from_toml(wrong_metric, Path::new(FILE)).unwrap_err().to_string();
        assert!(e.contains("sensors.toml") && e.contains("RG0001") && e.contains("tilt_deg"), "{e}");

        let unknown_key = "[[sensor]]\nid = \"A1\"\nkind = \"rain_gauge\"\nlat = 1.0\nlon = 1.0\ninterval_s = 1\nagency = \"x\"\nmetrics = []\ncolour = \"red\"\n";
        let e = SensorRegistry::from_toml(unknown_key, Path::new(FILE)).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
