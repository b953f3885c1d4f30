//! The sensor registry over the operator API (admin scope), persisted in the data dir; device provisioning from the
//! command line against a running server.

mod common;

use common::{http_get, http_request, now_ms, Device, Server, TOKEN};

const NEW_SENSOR: &str = r#"{"id":"RG0099","kind":"rain_gauge","lat":23.52,"lon":120.93,"interval_s":600,"agency":"CWA","metrics":["rain_mm"]}"#;

#[tokio::test]
async fn sensors_added_over_the_api_survive_a_restart_and_provisioned_devices_publish() {
    let data = std::env::temp_dir().join(format!("dc-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    {
        let server = Server::start_in(&data);
        let (status, body) =
            http_request(server.http, "POST", "/api/v1/sensors", Some(TOKEN), Some(NEW_SENSOR)).unwrap();
        assert_eq!(status, 201, "{body}");
        let (status, body) =
            http_request(server.http, "POST", "/api/v1/sensors", Some(TOKEN), Some(NEW_SENSOR)).unwrap();
        assert_eq!(status, 409, "{body}");

        // Provision the device from the command line while the server runs; it logs in at once.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_disaster-cloud"))
            .args(["device", "provision", "RG0099", "--data-dir", data.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let password =
            text.lines().find_map(|l| l.split("stored hashed): ").nth(1)).expect("a password line").trim().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut device = loop {
            match Device::connect(server.mqtt, "RG0099", &password).await {
                Ok(d) => break d,
                Err(e) if std::time::Instant::now() > deadline => panic!("provisioned device refused: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        };
        let before = server.metric("dc_ingest_readings_accepted_total");
        device.publish("sensors/RG0099/readings", format!(r#"{{"ts":{},"values":{{"rain_mm":1.5}}}}"#, now_ms())).await;
        device.wait_acks(1).await;
        // The PUBACK can come before the pipeline has counted the reading.
        let accepted = || server.metric("dc_ingest_readings_accepted_total") - before;
        server
            .wait_until("the provisioned device's reading accepted", std::time::Duration::from_secs(20), || {
                accepted() >= 1.0
            })
            .await;
        assert_eq!(accepted(), 1.0);
    }
    let server = Server::start_in(&data);
    let (_, body) = http_get(server.http, "/api/v1/sensors", Some(TOKEN)).unwrap();
    assert!(body.contains("RG0099"), "the added sensor survives a restart: {body}");
    let (status, _) = http_request(server.http, "POST", "/api/v1/sensors/RG0099/retire", Some(TOKEN), None).unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_registry_changes_name_the_problem() {
    let server = Server::start();
    let cases = [
        (r#"{"id":"RG0098"}"#, 400, "missing field"),
        (&NEW_SENSOR.replace("RG0099", "RG-98") as &str, 400, "letters"),
        (&NEW_SENSOR.replace("\"rain_mm\"", "\"tilt_deg\"") as &str, 400, "tilt_deg"),
        (&NEW_SENSOR.replace("23.52", "123.52") as &str, 400, "out of range"),
        (&NEW_SENSOR.replace("}", r#","colour":"red"}"#) as &str, 400, "colour"),
    ];
    for (body, status, needle) in cases {
        let (got, reply) = http_request(server.http, "POST", "/api/v1/sensors", Some(TOKEN), Some(body)).unwrap();
        assert_eq!(got, status, "{body} → {reply}");
        assert!(reply.contains(needle), "{body} → {reply}");
    }
    let (status, reply) = http_request(server.http, "POST", "/api/v1/sensors/NOPE1/retire", Some(TOKEN), None).unwrap();
    assert_eq!(status, 404, "{reply}");
    let (status, reply) =
        http_request(server.http, "PUT", "/api/v1/sensors/RG0001", Some(TOKEN), Some(NEW_SENSOR)).unwrap();
    assert_eq!(status, 400, "{reply}");
}
