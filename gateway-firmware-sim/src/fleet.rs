//! The devices in the field: `config/sensors.toml` (what each sensor is and where) joined with `config/devices.toml`
//! (its MQTT password). Both files belong to the server and may grow, so unknown keys are ignored here, unlike in
//! scenario files, which belong to us.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::SimError;

/// Sensor kinds of the brief, as written in `sensors.toml`.
pub const SENSOR_KINDS: &[&str] = &[
    "rain_gauge",
    "river_gauge",
    "air_quality",
    "tilt_meter",
    "extensometer",
    "wire_sensor",
    "soil_moisture",
    "geophone",
    "vehicle_detector",
    "road_flood",
    "hazmat_gps",
    "seismometer",
];

/// One field device: a sensor of the registry plus the credentials it logs in with.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    /// MQTT username and client id; also the `{device_id}` of the topics.
    pub id: String,
    /// Demo password from `devices.toml`; `None` when the device has no entry (it then connects without credentials,
    /// which only an anonymous broker accepts).
    pub password: Option<String>,
    /// One of [`SENSOR_KINDS`].
    pub kind: String,
    /// Installed position, sent with readings only by mobile devices (whose position changes).
    pub lat: f64,
    pub lon: f64,
    /// Reporting interval in scenario seconds: a scenario samples its tracks for this device this often.
    pub interval_s: u64,
    /// Metric names the registry expects from this sensor; scenario tracks must use these.
    pub metrics: Vec<String>,
    /// Hazmat trucks and other mobile units send `lat`/`lon` with every reading set.
    pub mobile: bool,
    /// Zone the sensor was placed for (informational).
    pub zone: Option<String>,
}

/// All devices the simulator may play, keyed by id (ordered, so runs are deterministic).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    pub(crate) devices: BTreeMap<String, Device>,
}

#[derive(Deserialize)]
struct SensorsFile {
    #[serde(default)]
    sensor: Vec<SensorEntry>,
}

#[derive(Deserialize)]
struct SensorEntry {
    id: String,
    kind: String,
    lat: f64,
    lon: f64,
    interval_s: u64,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    mobile: Option<bool>,
}

#[derive(Deserialize)]
struct DevicesFile {
    #[serde(default)]
    device: Vec<DeviceEntry>,
}

#[derive(Deserialize)]
struct DeviceEntry {
    id: String,
    password: String,
}

/// 1–32 ASCII letters and digits (INTERFACE.md): ids double as certificate tenant ids.
pub fn valid_device_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Fleet {
    /// Join the sensor registry and the device credentials (file texts, not paths, so tests and the demo can pass
    /// embedded copies).
    pub fn from_files(sensors_toml: &str, devices_toml: &str) -> Result<Self, SimError> {
        Self::from_files_named(sensors_toml, "sensors.toml", devices_toml, "devices.toml")
    }

    /// As [`Fleet::from_files`], with the names errors should use for the two files.
    pub fn from_files_named(
        sensors_toml: &str,
        sensors_origin: &str,
        devices_toml: &str,
        devices_origin: &str,
    ) -> Result<Self, SimError> {
        let sensors: SensorsFile =
            toml::from_str(sensors_toml).map_err(|e| SimError::from_toml(sensors_origin, sensors_toml, e))?;
        let creds: DevicesFile =
            toml::from_str(devices_toml).map_err(|e| SimError::from_toml(devices_origin, devices_toml, e))?;

        let mut passwords = BTreeMap::new();
        for (i, d) in creds.device.into_iter().enumerate() {
            if !valid_device_id(&d.id) {
                return Err(SimError::invalid(
                    devices_origin,
                    format!("device[{i}].id"),
                    format!("`{}` is not 1-32 ASCII letters and digits", d.id),
                ));
            }
            if passwords.insert(d.id.clone(), d.password).is_some() {
                return Err(SimError::invalid(
                    devices_origin,
                    format!("device[{i}].id"),
                    format!("`{}` is listed twice", d.id),
                ));
            }
        }

        let mut devices = BTreeMap::new();
        for (i, s) in sensors.sensor.into_iter().enumerate() {
            let key = |k: &str| format!("sensor[{i}].{k}");
            if !valid_device_id(&s.id) {
                return Err(SimError::invalid(
                    sensors_origin,
                    key("id"),
                    format!("`{}` is not 1-32 ASCII letters and digits", s.id),
                ));
            }
            if !SENSOR_KINDS.contains(&s.kind.as_str()) {
                return Err(SimError::invalid(
                    sensors_origin,
                    key("kind"),
                    format!("`{}` is not a sensor kind (expected one of {})", s.kind, SENSOR_KINDS.join(", ")),
                ));
            }
            if !(-90.0..=90.0).contains(&s.lat) || !(-180.0..=180.0).contains(&s.lon) {
                return Err(SimError::invalid(
                    sensors_origin,
                    key("lat"),
                    format!("position {},{} is not on Earth", s.lat, s.lon),
                ));
            }
            if s.interval_s == 0 {
                return Err(SimError::invalid(sensors_origin, key("interval_s"), "must be at least 1 second"));
            }
            let mobile = s.mobile.unwrap_or(s.kind == "hazmat_gps");
            let device = Device {
                password: passwords.get(&s.id).cloned(),
                id: s.id.clone(),
                kind: s.kind,
                lat: s.lat,
                lon: s.lon,
                interval_s: s.interval_s,
                metrics: s.metrics,
                mobile,
                zone: s.zone,
            };
            if devices.insert(s.id.clone(), device).is_some() {
                return Err(SimError::invalid(sensors_origin, key("id"), format!("`{}` is listed twice", s.id)));
            }
        }
        Ok(Fleet { devices })
    }

    /// The device with this id.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// All devices in id order.
    pub fn devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.values()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Add or replace one device (tests and generated fleets).
    pub fn insert(&mut self, device: Device) {
        self.devices.insert(device.id.clone(), device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENSORS: &str = r#"
[[sensor]]
id = "RG0001"
kind = "rain_gauge"
lat = 23.5185
lon = 120.9280
interval_s = 600
agency = "SWCB"
metrics = ["rain_mm", "battery_v"]
zone = "dfa-xinyi-shenmu"
future_field = { anything = 1 }

[[sensor]]
id = "HZ0001"
kind = "hazmat_gps"
lat = 23.7
lon = 120.4
interval_s = 30
agency = "MOTC"
metrics = ["speed_kmh"]
"#;
    const DEVICES: &str = "[[device]]\nid = \"RG0001\"\npassword = \"pw\"\n";

    #[test]
    fn joins_sensors_and_passwords_ignoring_unknown_server_fields() {
        let fleet = Fleet::from_files(SENSORS, DEVICES).unwrap();
        let rg = fleet.device("RG0001").unwrap();
        assert_eq!(rg.password.as_deref(), Some("pw"));
        assert_eq!(rg.interval_s, 600);
        assert!(!rg.mobile);
        let hz = fleet.device("HZ0001").unwrap();
        assert!(hz.mobile, "hazmat units are mobile by default");
        assert_eq!(hz.password, None);
    }

    #[test]
    fn bad_ids_and_kinds_name_the_key() {
        let bad = SENSORS.replace("RG0001", "RG-0001");
        let err = Fleet::from_files(&bad, "").unwrap_err().to_string();
        assert_eq!(err, "sensors.toml: sensor[0].id: `RG-0001` is not 1-32 ASCII letters and digits");
        let bad = SENSORS.replace("rain_gauge", "rain_gage");
        let err = Fleet::from_files(&bad, "").unwrap_err().to_string();
        assert!(err.starts_with("sensors.toml: sensor[0].kind: `rain_gage` is not a sensor kind"), "{err}");
        let err = Fleet::from_files(SENSORS, "[[device]]\nid = \"X\"\n").unwrap_err().to_string();
        assert!(err.starts_with("devices.toml: line 1"), "{err}");
        assert!(err.contains("missing field `password`"), "{err}");
    }
}
