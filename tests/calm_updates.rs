//! Calm updates through the real binary (issue 21, items 3, 4): a tilt meter at Shenmu flapping its landslide alert
//! hundreds of times reaches operators every time, and the public (CAP messages, webhook deliveries) a bounded number
//! of times; a device far faster than its registered interval is throttled from the rules and flagged.

mod common;

use std::time::{Duration, Instant};

use common::{device_password, now_ms, Device, Server};

/// The sum of every sample of `name` whose labels contain `labels` in `/metrics`.
fn metric_sum(server: &Server, name: &str, labels: &str) -> f64 {
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The wire at WS0001 broken (`wire-trip`, the landslide composite's second kind of evidence), and 40 minutes of
/// tilt history at TM0001 (feeding the rate window only: older than `stale_after_s`).
async fn prepare_slope(server: &Server) -> Device {
    let mut wire = Device::connect(server.mqtt, "WS0001", &device_password("WS0001")).await.unwrap();
    wire.publish("sensors/WS0001/readings", format!(r#"{{"ts":{},"values":{{"wire_intact":false}}}}"#, now_ms())).await;
    wire.wait_acks(1).await;
    let mut tilt = Device::connect(server.mqtt, "TM0001", &device_password("TM0001")).await.unwrap();
    let old = now_ms() - 40 * 60_000;
    tilt.publish("sensors/TM0001/readings", format!(r#"{{"ts":{old},"values":{{"tilt_deg":0.0}}}}"#)).await;
    tilt.wait_acks(1).await;
    tilt
}

/// `n` readings of a shaking tilt meter, stamped now and 20 ms apart: 1.5 °/h over the 40 minutes (tilt warning,
/// with the broken wire: landslide warning), then none (cleared), alternately.
async fn shake(tilt: &mut Device, n: usize) {
    let start = now_ms();
    for i in 0..n {
        let value = if i % 2 == 0 { 1.0 } else { 0.0 };
        let ts = start + i as i64 * 20;
        tilt.publish("sensors/TM0001/readings", format!(r#"{{"ts":{ts},"values":{{"tilt_deg":{value}}}}}"#)).await;
    }
    tilt.wait_acks(n).await;
}

#[tokio::test]
async fn a_flapping_tilt_meter_reaches_operators_every_time_and_the_public_a_bounded_number_of_times() {
    // Throttling off, so that every shake reaches the rules and the public side's flapping damping is what bounds it.
    let config = common::config_copy("calm-flapping", |t| t.replace("rate_factor = 10.0", "rate_factor = 0"));
    let server = Server::serve(&config);
    let mut operator = server.operator().await;
    let mut tilt = prepare_slope(&server).await;
    let cap_before = metric_sum(&server, "dc_dissemination_cap_messages_total", r#"status="Actual""#);
    shake(&mut tilt, 200).await;

    // Operators see every landslide alert raise and clear (the composite on the tilt warning and the broken wire).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut landslide_versions, mut flapping_notes, mut warnings) = (0, 0, 0);
    while Instant::now() < deadline && landslide_versions < 100 {
        let Some(frame) = operator.next_json(Duration::from_secs(2)).await else { continue };
        if frame["type"] == "alert" && frame["rule"] == "landslide" {
            landslide_versions += 1;
            if frame["public"]["status"] == "flapping" {
                assert!(frame["public"]["reason"].as_str().unwrap().contains("flapping"), "{frame}");
                flapping_notes += 1;
            }
        }
        if frame["type"] == "public_warning" && frame["event"] == "landslide" {
            warnings += 1;
        }
    }
    assert!(landslide_versions >= 100, "operators saw {landslide_versions} landslide versions; log:\n{}", server.log());
    assert!(flapping_notes > 0, "operators are told it is flapping");
    assert!(server.metric(r#"dc_public_held_total{reason="flapping"}"#) > 0.0);
    // The public: at most the changes before it counted as flapping (6 by default), plus a settled state later.
    assert!((1..=7).contains(&warnings), "{warnings} public landslide warnings");
    // Dissemination writes the CAP messages after operators see the versions: count them once it has written the
    // first and then nothing more for 3 s (an upper bound counted early would prove nothing).
    let cap_messages = || metric_sum(&server, "dc_dissemination_cap_messages_total", r#"status="Actual""#) - cap_before;
    server.wait_until("the first CAP message", Duration::from_secs(30), || cap_messages() >= 1.0).await;
    let cap =
        common::settled("the CAP message count", Duration::from_secs(60), Duration::from_secs(3), cap_messages).await;
    assert!((1.0..=7.0).contains(&cap), "{cap} CAP messages for {landslide_versions} alert versions");
    let deliveries = metric_sum(&server, "dc_dissemination_deliveries_total", r#"channel="webhook""#);
    assert!(deliveries <= 2.0 * 7.0, "{deliveries} webhook delivery attempts");
    println!(
        "flapping tilt meter: {landslide_versions} landslide alert versions for operators, {warnings} public \
         warning versions, {cap} CAP messages, {deliveries} webhook delivery attempts"
    );
}

#[tokio::test]
async fn a_device_far_faster_than_its_interval_is_throttled_stored_and_flagged() {
    let server = Server::start();
    let mut tilt = prepare_slope(&server).await;
    shake(&mut tilt, 200).await;
    // Its readings were valid: counted as accepted, most kept from the rules, by reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(r#"dc_ingest_readings_throttled_total{reason="faster_than_interval"}"#) < 190.0 {
        assert!(Instant::now() < deadline, "not throttled; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Stored all the same (operators' history) and flagged on the operators' map.
    let snapshot = server.snapshot().await;
    let sensor = snapshot["sensors"].as_array().unwrap().iter().find(|s| s["id"] == "TM0001").unwrap().clone();
    assert!(sensor["throttled"]["readings"].as_u64().unwrap() >= 190, "{sensor}");
    // The rules took only the burst: a handful of landslide alert versions, not two hundred.
    let mut operator = server.operator().await;
    let _ = operator.next_json(Duration::from_secs(1)).await;
    let transitions = metric_sum(&server, "dc_alert_transitions_total", "");
    assert!(transitions <= 20.0, "{transitions} alert transitions from a throttled device");
}
