//! `serve` is safe by default: it refuses the demo's config copied as it is (every
//! secret kind named), refuses the demo's secrets even from the environment, starts from the production template,
//! keeps the demo receivers unmounted, refuses to deliver to itself unless told it is a drill environment, treats a
//! device taken out of the devices file as revoked, logs its shutdown on SIGTERM, and does not log a rustls warning
//! per TLS client that sends an IP address as SNI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{http_request, Device, Server};

/// `serve --config <main>` run to its end (it is expected to refuse): success and stderr.
fn serve_output(main: &Path, envs: &[(&str, &str)]) -> (bool, String) {
    let data = main.with_file_name("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_disaster-cloud"));
    common::test_env(&mut command)
        .args(["serve", "--config", main.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--http-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt5-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt-tls=false"]);
    for (k, v) in envs {
        command.env(k, v);
    }
    // A refusal is immediate; a server that starts is stopped after a while (the caller then sees success = false
    // and a log without refusals).
    let mut child = command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The production template with its placeholders replaced (the one edit an operator must make to the main file).
fn template(name: &str, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    common::production_copy(name, |t| edit(t.replace("alerts.example.invalid", "localhost")))
}

#[test]
fn serve_refuses_a_copy_of_the_demo_config_naming_every_secret() {
    let dir = common::copy_dir("config", "demo-as-is");
    let (ok, err) = serve_output(&dir.join("disaster-cloud.toml"), &[]);
    assert!(!ok, "serve accepted the demo config:\n{err}");
    for needle in [
        // The inbound push token and the SWCB HMAC secret, both published values.
        "inbound.toml: `push[0].token (demo-agency)`",
        "inbound.toml: `push[1].hmac_secret (swcb)`",
        // Plaintext device passwords.
        "devices.toml: `device[0].password (RG0001)`: a secret written in the config file (and it is the demo's published value)",
        "use `password_hash` instead",
        // Webhook secrets and carriers' CBC tokens.
        "dissemination.toml: `subscriber[0].secret (demo-media)`",
        "dissemination.toml: `carrier[2].token (FarEasTone)`",
        // Deliveries to the server's own /demo/* receivers, with the way out named.
        "`carrier[0].cbc_url (Chunghwa Telecom)`: `http://127.0.0.1:8080/demo/cbc/cht` is this server itself",
        "`subscriber[1].url (demo-drill-desk)`",
        // The demo's stand-in vehicle-detector feed is this server too.
        "inbound.toml: `vd_feed[0].url (demo-nfb)`: `http://127.0.0.1:8080/demo/vd/VDLive.json` is this server itself",
        // Web Push in the clear to the demo's stand-in push service.
        "dissemination.toml: `push.allow_http_loopback`: http:// push endpoints are for tests and the demo",
        "set `drill = true` under `[deployment]`",
    ] {
        assert!(err.contains(needle), "`{needle}` not in the refusal:\n{err}");
    }
}

#[test]
fn serve_refuses_the_demo_secrets_from_the_environment_too() {
    let main = common::config_copy("demo-secret-in-env", |t| t);
    let (ok, err) = serve_output(&main, &[("DC_TEST_HMAC_SECRET", "demo-swcb-secret")]);
    assert!(!ok);
    assert!(
        err.contains("`push[1].hmac_secret_env (swcb)`: environment variable DC_TEST_HMAC_SECRET holds the demo's published value"),
        "{err}"
    );
    // An unset variable is named as well, before anything starts.
    let main = template("template-unset-env", |t| t);
    let (ok, err) = serve_output(&main, &[("DC_INBOUND_SWCB_SECRET", "")]);
    assert!(!ok);
    assert!(
        err.contains("`push[0].hmac_secret_env (swcb)`: environment variable DC_INBOUND_SWCB_SECRET is empty"),
        "{err}"
    );
}

#[test]
fn serve_refuses_the_template_placeholders_until_replaced() {
    let main = common::production_copy("template-as-is", |t| t);
    let (ok, err) = serve_output(&main, &[]);
    assert!(!ok);
    assert!(err.contains("`http.public_url`: `https://alerts.example.invalid` is a placeholder"), "{err}");
    assert!(err.contains("`tls.server_names`"), "{err}");
}

#[tokio::test]
async fn serve_starts_from_the_production_template_without_demo_receivers_and_logs_sigterm() {
    let main = template("template", |t| t);
    let mut server = Server::serve(&main);
    // The demo's receivers are not mounted: POST /demo/* is an unknown path, not an open write endpoint.
    let (status, _) = http_request(server.http, "POST", "/demo/cbc/cht", None, Some("{}")).unwrap();
    assert_eq!(status, 404);
    let (status, _) = http_request(server.http, "GET", "/demo/received", Some(common::TOKEN), None).unwrap();
    assert_eq!(status, 404);
    let (status, _) = http_request(server.http, "GET", "/demo/vd/VDLive.json", None, None).unwrap();
    assert_eq!(status, 404);
    assert_eq!(server.get("/api/v1/broadcasts").0, 200);
    // Nor can an operator add a subscriber that is this server itself (public_url is https://localhost here).
    let own = r#"{"name":"loop","url":"https://localhost/hook","secret":"s3cret-s3cret-s3cret"}"#;
    let (status, body) =
        http_request(server.http, "POST", "/api/v1/subscribers", Some(common::TOKEN), Some(own)).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("this server itself"), "{body}");
    let elsewhere = r#"{"name":"newsroom","url":"https://hooks.newsroom.example/x","secret":"s3cret-s3cret-s3cret"}"#;
    let (status, body) =
        http_request(server.http, "POST", "/api/v1/subscribers", Some(common::TOKEN), Some(elsewhere)).unwrap();
    assert_eq!(status, 201, "{body}");
    // SIGTERM (systemd, Kubernetes) ends it cleanly, and says so.
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(30)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.log());
    let log = server.log();
    assert!(log.contains("shutting down") && log.contains("SIGTERM"), "{log}");
}

#[tokio::test]
async fn serve_refuses_to_deliver_to_itself_unless_a_drill() {
    let add_subscriber = |main: &Path| {
        let path = main.with_file_name("dissemination.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let hook = "[[subscriber]]\nname = \"loop\"\nurl = \"https://localhost/demo/webhook\"\nsecret_env = \"DC_TEST_SECRET\"\n\n";
        // Before the first table after the subscribers' comment block.
        std::fs::write(&path, text.replacen("[cell_broadcast]", &format!("{hook}[cell_broadcast]"), 1)).unwrap();
    };
    let main = template("self-delivery", |t| t);
    add_subscriber(&main);
    let (ok, err) = serve_output(&main, &[]);
    assert!(!ok);
    assert!(
        err.contains(
            "dissemination.toml: `subscriber[0].url (loop)`: `https://localhost/demo/webhook` is this server itself"
        ),
        "{err}"
    );
    assert!(err.contains("`drill = true` under `[deployment]`"), "{err}");

    // A drill environment says so, and then has the demo receivers to deliver to.
    let main = template("self-delivery-drill", |t| t.replace("drill = false", "drill = true"));
    add_subscriber(&main);
    let server = Server::serve(&main);
    let (status, _) = http_request(server.http, "POST", "/demo/webhook", None, Some("{}")).unwrap();
    assert_eq!(status, 204);
}

#[tokio::test]
async fn a_device_taken_out_of_the_devices_file_cannot_log_in_after_a_restart() {
    let main = template("device-removal", |t| t);
    let devices = main.with_file_name("devices.toml");
    let password = "field-gauge-password-1";
    let hash = ingest::devices::hash_password(password).unwrap();
    std::fs::write(
        &devices,
        format!("[[device]]\nid = \"RG0001\"\npassword_hash = \"{hash}\"\n[[device]]\nid = \"RG0002\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let data = main.with_file_name("data");
    let server = Server::serve_in(&main, &data);
    Device::connect(server.mqtt, "RG0001", password).await.expect("listed: logs in");
    server.kill();

    // The operator takes RG0001 out of the file and restarts.
    std::fs::write(&devices, format!("[[device]]\nid = \"RG0002\"\npassword_hash = \"{hash}\"\n")).unwrap();
    let server = Server::serve_in(&main, &data);
    let refused = Device::connect(server.mqtt, "RG0001", password).await.err().expect("removed: refused");
    assert!(refused.to_lowercase().contains("refused"), "{refused}");
    assert!(server.metric("dc_ingest_connections_refused_total{reason=\"unknown_device\"}") >= 1.0);
    Device::connect(server.mqtt, "RG0002", password).await.expect("still listed: logs in");
    assert!(server.log().contains("device no longer in the devices file"), "{}", server.log());
}

/// OpenSSL-based clients (`mosquitto_pub -h 127.0.0.1 --cafile …`) send the IP address as SNI, which RFC 6066
/// forbids; rustls ignores it but warned on every connection.
#[tokio::test]
async fn tls_clients_connecting_by_ip_do_not_fill_the_log() {
    let server = Server::start();
    let ca = server.data_dir.join("pki").join("ca.pem");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ca.exists() {
        assert!(std::time::Instant::now() < deadline, "no CA at {}", ca.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    // mosquitto_pub (OpenSSL) puts the `-h` address in SNI. Without a client certificate the broker refuses the
    // session, after the ClientHello (and its SNI) was read: enough to see what gets logged.
    let refused = || -> f64 {
        let (_, body) = server.get("/metrics");
        body.lines()
            .filter(|l| l.starts_with("dc_ingest_connections_refused_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = refused();
    for _ in 0..3 {
        let _ = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &server.mqtt_tls.port().to_string()])
            .args(["--cafile", ca.to_str().unwrap(), "-t", "sensors/RG0001/readings", "-m", "{}"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("mosquitto_pub");
    }
    // The log is read once the broker has refused all three, so after it handled their ClientHellos.
    server.wait_until("the three sessions refused", Duration::from_secs(20), || refused() >= before + 3.0).await;
    let log = server.log();
    assert!(!log.contains("Illegal SNI"), "{log}");
}
