//! Sensors indexed by H3 cell. Positions can change (GPS units on hazmat trucks, moved gauges): moving a sensor
//! re-files it under its new cell.

use ahash::RandomState;
use h3o::CellIndex;
use serde::Serialize;
use std::collections::HashMap;

/// A sensor's last known position.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sensor {
    /// The sensor id as ingest knows it (the MQTT topic's device id).
    pub id: String,
    /// Latitude, degrees WGS84.
    pub lat: f64,
    /// Longitude, degrees WGS84.
    pub lon: f64,
    /// Its H3 cell at the index resolution, so a query can ask "which sensors are in these cells" by lookup.
    #[serde(serialize_with = "serialize_cell")]
    pub cell: CellIndex,
}

fn serialize_cell<S: serde::Serializer>(cell: &CellIndex, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(cell)
}

/// Both directions of the sensor ↔ cell relation.
#[derive(Debug, Default, Clone)]
pub(crate) struct SensorIndex {
    /// Sensor id → position: for moves and for exact edge tests.
    pub(crate) by_id: HashMap<String, Sensor, RandomState>,
    /// Cell → ids of the sensors in it: for every area query. Vectors stay tiny (a few sensors a cell), so removal
    /// by linear search is cheaper than a nested set.
    pub(crate) by_cell: HashMap<CellIndex, Vec<String>, RandomState>,
}

impl SensorIndex {
    /// Inserts or moves a sensor; returns the cell it was in before, if any.
    pub(crate) fn upsert(&mut self, id: &str, lat: f64, lon: f64, cell: CellIndex) -> Option<CellIndex> {
        let previous = match self.by_id.get_mut(id) {
            Some(sensor) => {
                let old = sensor.cell;
                sensor.lat = lat;
                sensor.lon = lon;
                sensor.cell = cell;
                Some(old)
            }
            None => {
                self.by_id.insert(id.to_owned(), Sensor { id: id.to_owned(), lat, lon, cell });
                None
            }
        };
        if previous != Some(cell) {
            if let Some(old) = previous {
                self.unfile(id, old);
            }
            self.by_cell.entry(cell).or_default().push(id.to_owned());
        }
        previous
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<Sensor> {
        let sensor = self.by_id.remove(id)?;
        self.unfile(id, sensor.cell);
        Some(sensor)
    }

    fn unfile(&mut self, id: &str, cell: CellIndex) {
        if let Some(ids) = self.by_cell.get_mut(&cell) {
            ids.retain(|s| s != id);
            if ids.is_empty() {
                self.by_cell.remove(&cell);
            }
        }
    }

    /// The sensors filed under a cell.
    pub(crate) fn in_cell(&self, cell: CellIndex) -> impl Iterator<Item = &Sensor> + '_ {
        self.by_cell.get(&cell).into_iter().flatten().filter_map(|id| self.by_id.get(id))
    }
}
