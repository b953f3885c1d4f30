//! A forecast posted by an operator drives the debris-flow yellow rule (SWCB: forecast rain over the area's threshold).

mod common;

use std::time::Duration;

use common::{http_request, Server, TOKEN};

#[tokio::test]
async fn a_forecast_over_the_threshold_raises_debris_flow_yellow() {
    let server = Server::start();
    let mut operator = server.operator().await;
    let (status, body) = http_request(
        server.http,
        "POST",
        "/api/v1/zones/dfa-xinyi-shenmu/forecast",
        Some(TOKEN),
        Some(r#"{"value": 400}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let alert = operator
        .alert_where(Duration::from_secs(10), |m| m["event"] == "debris_flow" && m["state"] == "raised")
        .await
        .unwrap_or_else(|| panic!("no debris-flow alert from the forecast; log:\n{}", server.log()));
    assert_eq!(alert["area_id"], "dfa-xinyi-shenmu");
    assert!(alert["level"].as_str().unwrap().contains("黃"), "{alert}");
}

#[tokio::test]
async fn bad_forecasts_are_refused_with_the_reason() {
    let server = Server::start();
    for (path, body, status, needle) in [
        ("/api/v1/zones/nowhere/forecast", r#"{"value": 1}"#, 404, "nowhere"),
        ("/api/v1/zones/dfa-xinyi-shenmu/forecast", r#"{"value": -5}"#, 400, "-5"),
        ("/api/v1/zones/dfa-xinyi-shenmu/forecast", r#"{"valu": 5}"#, 400, "valu"),
        ("/api/v1/zones/dfa-xinyi-shenmu/forecast", "not json", 400, "forecast"),
    ] {
        let (got, reply) = http_request(server.http, "POST", path, Some(TOKEN), Some(body)).unwrap();
        assert_eq!(got, status, "{body} → {reply}");
        assert!(reply.contains(needle), "{body} → {reply}");
    }
    let (got, _) =
        http_request(server.http, "POST", "/api/v1/zones/dfa-xinyi-shenmu/forecast", None, Some(r#"{"value": 1}"#))
            .unwrap();
    assert_eq!(got, 401);
}
