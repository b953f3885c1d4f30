//! The sensor registry: which sensors exist, what they measure, where they stand and who owns them.
//!
//! Loaded from `config/sensors.toml` at start. Operators add, update and retire sensors over the HTTP API; those
//! changes go through [`SensorRegistry::add`] / [`SensorRegistry::update`] / [`SensorRegistry::retire`], which write
//! them to `<data dir>/sensors.json` (atomically) before they take effect. On restart [`SensorRegistry::restore`] lays
//! that file over the config file: the operators' records win, sensors they never touched follow the config file.
//! (The H3 cell of each sensor is computed by the binary with `geo-index`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::persist::{self, FileLock};
use crate::reading::Metric;
use crate::topic::is_valid_device_id;
use crate::IngestError;

/// Why an operator's change to the registry was refused (the HTTP layer maps these to 409 / 404 / 400 / 500).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("sensor `{0}` already exists")]
    Exists(String),
    #[error("no sensor `{0}`")]
    NotFound(String),
    #[error("sensor `{sensor}`: {message}")]
    Invalid { sensor: String, message: String },
    #[error("saving the registry: {0}")]
    Persist(#[from] IngestError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sensor {
    /// 1–32 ASCII letters or digits: the device's MQTT client id and topic segment.
    #[schema(pattern = "^[A-Za-z0-9]{1,32}$")]
    pub id: String,
    pub kind: SensorKind,
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub lat: f64,
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub lon: f64,
    /// Expected seconds between reports; the deadman rule multiplies it.
    #[schema(minimum = 1)]
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

/// Told the new record of every sensor added, updated or retired, after it is saved and before the registry's write
/// lock is released: a reading validated against the new record reaches an observer's queue after the change does.
/// Must not block (it runs under the lock the hot path reads through).
pub type SensorObserver = Arc<dyn Fn(&Sensor) + Send + Sync>;

#[derive(Clone, Default)]
pub struct SensorRegistry {
    sensors: BTreeMap<String, Sensor>,
    /// The operators' changes (whole records), as saved in `store`.
    overlay: BTreeMap<String, Sensor>,
    /// Where operators' changes are persisted; `None` keeps them in memory only (tests, the demo without data dir).
    store: Option<PathBuf>,
    /// Copies of the registry kept elsewhere, told every change ([`Self::observe`]).
    observers: Vec<SensorObserver>,
}

impl std::fmt::Debug for SensorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorRegistry")
            .field("sensors", &self.sensors)
            .field("overlay", &self.overlay)
            .field("store", &self.store)
            .field("observers", &self.observers.len())
            .finish()
    }
}

/// `<data dir>/sensors.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayFile {
    #[serde(default)]
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
                return Err(IngestError::Sensor {
                    file: file.into(),
                    sensor: sensor.id,
                    message: "duplicate id".into(),
                });
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

    /// Lays the operators' changes saved at `path` (normally `<data dir>/sensors.json`) over this registry, and
    /// persists every further change there. An absent file means no changes yet.
    pub fn restore(mut self, path: &Path) -> Result<Self, IngestError> {
        if let Some(text) = persist::read_optional(path)? {
            let file: OverlayFile = serde_json::from_str(&text)
                .map_err(|e| IngestError::Config { file: path.into(), message: e.to_string() })?;
            for (id, sensor) in file.sensors {
                let invalid = |message: String| IngestError::Sensor { file: path.into(), sensor: id.clone(), message };
                if sensor.id != id {
                    return Err(invalid(format!("recorded under `{id}` but its id is `{}`", sensor.id)));
                }
                sensor.check().map_err(invalid)?;
                self.sensors.insert(id.clone(), sensor.clone());
                self.overlay.insert(id, sensor);
            }
        }
        self.store = Some(path.to_path_buf());
        Ok(self)
    }

    /// Registers `observer` for every later change (see [`SensorObserver`]). Take the current records
    /// ([`Self::iter`]) under the same write lock, so that no change falls between the copy and the first call.
    pub fn observe(&mut self, observer: SensorObserver) {
        self.observers.push(observer);
    }

    /// Adds a new sensor (operator API).
    pub fn add(&mut self, sensor: Sensor) -> Result<(), RegistryError> {
        if self.sensors.contains_key(&sensor.id) {
            return Err(RegistryError::Exists(sensor.id));
        }
        self.save(sensor)
    }

    /// Replaces an existing sensor's record (operator API); the id names the sensor and cannot change.
    pub fn update(&mut self, sensor: Sensor) -> Result<(), RegistryError> {
        if !self.sensors.contains_key(&sensor.id) {
            return Err(RegistryError::NotFound(sensor.id));
        }
        self.save(sensor)
    }

    /// Retires a sensor (operator API). Retired sensors stay listed (their history matters) but their readings are
    /// refused (`retired_device`).
    pub fn retire(&mut self, id: &str) -> Result<(), RegistryError> {
        let mut sensor = self.sensors.get(id).cloned().ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        sensor.retired = true;
        self.save(sensor)
    }

    /// Adds or replaces a sensor after checking it (kept for callers that do not distinguish add from update).
    pub fn upsert(&mut self, sensor: Sensor) -> Result<(), String> {
        self.save(sensor).map_err(|e| e.to_string())
    }

    /// Checks, persists, then applies: a change that cannot be saved does not take effect (it would vanish on
    /// restart otherwise).
    fn save(&mut self, sensor: Sensor) -> Result<(), RegistryError> {
        sensor.check().map_err(|message| RegistryError::Invalid { sensor: sensor.id.clone(), message })?;
        let mut overlay = self.overlay.clone();
        overlay.insert(sensor.id.clone(), sensor.clone());
        if let Some(path) = &self.store {
            let _lock = FileLock::acquire(path)?;
            let text = serde_json::to_string_pretty(&OverlayFile { sensors: overlay.clone() })
                .map_err(|e| IngestError::Config { file: path.clone(), message: e.to_string() })?;
            persist::write_atomically(path, text.as_bytes(), false)?;
        }
        self.overlay = overlay;
        for observer in &self.observers {
            observer(&sensor);
        }
        self.sensors.insert(sensor.id.clone(), sensor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "sensors.toml";

    const TWO: &str = r#"
[[sensor]]
id = "RG0001"
kind = "rain_gauge"
lat = 23.5
lon = 120.9
interval_s = 600
agency = "SWCB"
metrics = ["rain_mm", "battery_v"]

[[sensor]]
id = "RG0002"
kind = "rain_gauge"
lat = 23.6
lon = 120.8
interval_s = 600
agency = "CWA"
metrics = ["rain_mm"]
"#;

    #[test]
    fn operator_changes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("sensors.json");
        let base = || SensorRegistry::from_toml(TWO, Path::new(FILE)).unwrap();
        let mut reg = base().restore(&store).unwrap();
        let mut new = reg.get("RG0001").unwrap().clone();
        new.id = "RG0003".into();
        reg.add(new.clone()).unwrap();
        assert!(matches!(reg.add(new.clone()), Err(RegistryError::Exists(_))));
        let mut moved = reg.get("RG0002").unwrap().clone();
        moved.lat = 24.0;
        reg.update(moved).unwrap();
        reg.retire("RG0001").unwrap();
        assert!(matches!(reg.retire("NOPE"), Err(RegistryError::NotFound(_))));
        let mut bad = new.clone();
        bad.metrics = vec![Metric::TiltDeg];
        assert!(matches!(reg.update(bad), Err(RegistryError::Invalid { .. })));
        assert_eq!(reg.get("RG0003").unwrap().metrics, new.metrics, "a refused change is not applied");

        let restarted = base().restore(&store).unwrap();
        assert!(restarted.get("RG0001").unwrap().retired);
        assert_eq!(restarted.get("RG0002").unwrap().lat, 24.0);
        assert!(restarted.get("RG0003").is_some());
        assert_eq!(restarted.len(), 3);
    }

    #[test]
    fn observers_hear_every_change_that_took_effect_and_only_those() {
        let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut reg = SensorRegistry::from_toml(TWO, Path::new(FILE)).unwrap();
        let ear = Arc::clone(&heard);
        reg.observe(Arc::new(move |s: &Sensor| ear.lock().push((s.id.clone(), s.agency.clone(), s.retired))));
        let mut new = reg.get("RG0001").unwrap().clone();
        new.id = "RG0003".into();
        reg.add(new.clone()).unwrap();
        let _ = reg.add(new.clone());
        new.agency = "WRA".into();
        reg.update(new.clone()).unwrap();
        new.metrics = vec![Metric::TiltDeg];
        let _ = reg.update(new);
        reg.retire("RG0002").unwrap();
        let _ = reg.retire("NOPE");
        assert_eq!(
            *heard.lock(),
            [
                ("RG0003".to_string(), "SWCB".to_string(), false),
                ("RG0003".to_string(), "WRA".to_string(), false),
                ("RG0002".to_string(), "CWA".to_string(), true),
            ]
        );
    }

    #[test]
    fn a_change_that_cannot_be_saved_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the write fails.
        let store = dir.path().join("sensors.json");
        std::fs::create_dir(&store).unwrap();
        let mut reg = SensorRegistry::from_toml(TWO, Path::new(FILE)).unwrap();
        reg.store = Some(store);
        assert!(matches!(reg.retire("RG0001"), Err(RegistryError::Persist(_))));
        assert!(!reg.get("RG0001").unwrap().retired);
    }

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
