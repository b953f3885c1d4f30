//! Rate limits of the public read-only endpoints: per client address (IPv4, or IPv6 /64: [`address_key`], the same
//! key as the report limits), a token bucket (`http.public_burst` requests at
//! once, `http.public_per_s` more per second); beyond it `429 Too Many Requests` with `Retry-After`, counted as
//! `dc_http_refused_total{reason="rate_limited"}`.
//!
//! Limited: `/`, `/app` (the pages), `/cap/*` (CAP feed and messages), `/opendata/*`, `/metrics`, `/api/v1/push/*`
//! (Web Push key and subscriptions) — what anyone may fetch or send and what costs us work per request. Not limited: `/static/*` (bytes compiled into the binary, revalidated by
//! ETag or cached; one page load fetches several, and a phone behind a carrier's NAT must not lose its map to its
//! neighbours' page loads), `/healthz` (load balancers poll it), the citizen websocket
//! (a carrier's NAT puts thousands of phones behind one address, and after an outage they all reconnect at once; its
//! frames, places and queue are bounded in `citizen.rs`), citizen reports (their own per-client and per-address limits
//! in `reports/`), everything that needs an operator token, and requests to the public endpoints that carry a valid
//! operator token (`Authorization: Bearer`: operators' tools and a Prometheus scraper with a `read` token).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde_json::json;

use crate::app::App;
use crate::clock::now_ms;
use crate::metrics::HTTP_REFUSED;
use crate::reports::{address_key, BucketPolicy, RateLimiter};
use crate::web::auth::TokenSet;

/// Addresses tracked at once; past it, the fully refilled buckets are forgotten first (see `RateLimiter`).
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// The buckets of the public endpoints, one per client IPv4 address or IPv6 /64.
pub struct PublicLimit {
    limiter: Mutex<RateLimiter>,
}

impl PublicLimit {
    pub fn new(burst: u32, per_s: u32) -> Self {
        let policy = BucketPolicy { burst: burst.max(1), refill_every_ms: (1000 / i64::from(per_s.max(1))).max(1) };
        Self { limiter: Mutex::new(RateLimiter::new(policy, MAX_TRACKED_ADDRESSES)) }
    }

    /// `None` when `ip` may have one more request now (and takes it), otherwise the seconds to wait.
    fn admit(&self, ip: IpAddr, now_ms: i64) -> Option<u64> {
        let key = address_key(ip);
        let mut limiter = self.limiter.lock();
        match limiter.wait_ms(&key, now_ms) {
            Some(wait_ms) => Some((wait_ms.max(0) as u64).div_ceil(1000).max(1)),
            None => {
                limiter.take(&key, now_ms);
                None
            }
        }
    }
}

/// Whether `path` is one of the limited public endpoints.
fn limited(path: &str) -> bool {
    matches!(path, "/" | "/app" | "/metrics")
        || path.starts_with("/cap/")
        || path.starts_with("/opendata/")
        // Each subscribe is a P-256 point check and an fsync; its bounds (`[push]`) cap what is kept, this caps the
        // rate (an app sends its subscription once per start).
        || path.starts_with("/api/v1/push/")
}

/// The middleware. Without a peer address (a server run without connection info) nothing is limited.
pub async fn limit(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    limit_with(&app.web.public_limit, &app.web.tokens, request, next).await
}

/// [`limit`] on its parts, so that it can be tested on a router of its own.
async fn limit_with(public_limit: &PublicLimit, tokens: &TokenSet, request: Request, next: Next) -> Response {
    if !limited(request.uri().path()) {
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|token| tokens.check(token).is_some()) {
        return next.run(request).await;
    }
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(request).await;
    };
    match public_limit.admit(peer.ip(), now_ms()) {
        None => next.run(request).await,
        Some(retry_after_s) => {
            HTTP_REFUSED.with_label_values(&["rate_limited"]).inc();
            let body = json!({"error": "rate_limited", "message": format!(
                "too many requests from your address to the public endpoints; retry in {retry_after_s} s")});
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_per_address() {
        let limit = PublicLimit::new(3, 2);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.admit(ip("10.0.0.1"), 0), None);
        }
        assert_eq!(limit.admit(ip("10.0.0.1"), 0), Some(1), "the 4th at once waits (500 ms → 1 s)");
        assert_eq!(limit.admit(ip("::ffff:10.0.0.1"), 0), Some(1), "the same address seen by a dual-stack socket");
        assert_eq!(limit.admit(ip("10.0.0.2"), 0), None, "another address has its own bucket");
        assert_eq!(limit.admit(ip("10.0.0.1"), 500), None, "one more after 1/per_s");
        assert!(limit.admit(ip("10.0.0.1"), 500).is_some());
    }

    /// Through the router, as a client sees it: an IPv6 client rotating addresses inside its /64 shares one budget.
    #[tokio::test]
    async fn ipv6_addresses_in_one_slash_64_share_the_budget() {
        use axum::body::Body;
        use axum::extract::ConnectInfo;
        use tower::ServiceExt;

        // One refill a day: nothing comes back while the test runs.
        let limit = Arc::new(PublicLimit {
            limiter: Mutex::new(RateLimiter::new(BucketPolicy { burst: 2, refill_every_ms: 86_400_000 }, 100)),
        });
        let router = axum::Router::new()
            .route("/opendata/alerts.geojson", axum::routing::get(|| async { "{}" }))
            .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
                let limit = Arc::clone(&limit);
                async move { limit_with(&limit, &TokenSet::default(), request, next).await }
            }));
        let get = |peer: &str| {
            let mut request = axum::http::Request::get("/opendata/alerts.geojson").body(Body::empty()).unwrap();
            let peer: SocketAddr = peer.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        };
        assert_eq!(get("[2001:db8:1:2::5]:40000").await.unwrap().status(), StatusCode::OK);
        assert_eq!(get("[2001:db8:1:2::6]:40001").await.unwrap().status(), StatusCode::OK);
        let third = get("[2001:db8:1:2:dead:beef:0:7]:40002").await.unwrap();
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS, "a third address of the same /64");
        assert!(third.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(get("[2001:db8:1:3::5]:40003").await.unwrap().status(), StatusCode::OK, "the next /64");
    }

    #[test]
    fn which_paths_are_limited() {
        for path in ["/", "/app", "/metrics", "/cap/feed.atom", "/cap/x.xml", "/opendata/alerts.geojson"] {
            assert!(limited(path), "{path}");
        }
        for path in ["/healthz", "/ws/citizen", "/api/v1/reports", "/api/v1/alerts", "/ws/operator"] {
            assert!(!limited(path), "{path}");
        }
    }
}
