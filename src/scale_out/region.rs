//! Regions: a region is a county, the first five digits of a zone's Taiwan_Geocode_103 `geocode`. Workers own
//! regions, writers route readings to them, and alerts are published under them.

use serde::Deserialize;

use super::ScaleOutError;
use crate::app::App;

/// The region of each zone of a zones GeoJSON text, in file order: `(zone id, county code)`. Every zone needs a
/// geocode here; the error names the first that has none.
pub(super) fn zone_regions(geojson: &str, file: &str) -> Result<Vec<(String, String)>, ScaleOutError> {
    #[derive(Deserialize)]
    struct Doc {
        features: Vec<Feature>,
    }
    #[derive(Deserialize)]
    struct Feature {
        properties: Props,
    }
    #[derive(Deserialize)]
    struct Props {
        id: String,
        geocode: Option<String>,
    }
    let doc: Doc = serde_json::from_str(geojson)
        .map_err(|e| ScaleOutError::Zones { file: file.into(), message: e.to_string() })?;
    doc.features
        .into_iter()
        .map(|f| match f.properties.geocode.as_deref().and_then(county_of) {
            Some(region) => Ok((f.properties.id, region.to_string())),
            None => Err(ScaleOutError::Zones {
                file: file.into(),
                message: format!(
                    "zone `{}`: no geocode; in cluster mode every zone needs one (its county is its region)",
                    f.properties.id
                ),
            }),
        })
        .collect()
}

/// The county (region) of a Taiwan_Geocode_103 code: its first five digits.
pub(super) fn county_of(geocode: &str) -> Option<&str> {
    geocode.get(..5).filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
}

/// The region of a loaded zone, if it has a geocode.
pub fn zone_region<'a>(app: &'a App, zone_id: &str) -> Option<&'a str> {
    app.geo.zone(zone_id).and_then(|z| z.geocode.as_deref()).and_then(county_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_without_a_geocode_are_refused_by_name() {
        let text =
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"z1"},"geometry":null}]}"#;
        let e = zone_regions(text, "zones.geojson").unwrap_err().to_string();
        assert!(e.contains("zones.geojson") && e.contains("z1") && e.contains("geocode"), "{e}");
    }
}
