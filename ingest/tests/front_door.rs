//! Isolation and abuse tests of the front door with real clients (rumqttc v4/v5 over plain and TLS, Debian's
//! mosquitto clients, and a raw socket client for exact bytes), against the front door started in-process on free
//! 127.0.0.1 ports. Every isolation property is checked on every listener a device can reach.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Auth, Client, ClientOpts, ConnectFailure, Door, Ev, Harness, Raw, A, B, C};
use tokio::io::AsyncWriteExt;

const QUIET: Duration = Duration::from_millis(500);

fn readings(device: &str) -> String {
    format!("sensors/{device}/readings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_device_is_refused_with_a_connack_code_on_every_listener() {
    let h = Harness::start();
    for door in [Door::V4, Door::V5] {
        let opts = ClientOpts::new("x", Auth::Password { username: "NOSUCH1".into(), password: "whatever".into() });
        let refused = Client::connect(&h, door, opts).await.err();
        assert_eq!(refused, Some(ConnectFailure::Refused(door.bad_credentials())), "{door:?}");
        // The raw bytes agree: a CONNACK with the code, not a silent close.
        let mut raw = Raw::open(&h, door, None).await.unwrap();
        assert_eq!(raw.connect("x", Some(("NOSUCH1", "pw")), 30, None).await, Some(door.bad_credentials()));
    }
    // On TLS the identity is the certificate: one our CA signed but never registered is refused at CONNECT ...
    let stray = h.ca.issue_device("NOSUCH2").unwrap();
    let (cert, key) = (h.dir.path().join("stray.pem"), h.dir.path().join("stray.key"));
    std::fs::write(&cert, &stray.cert_pem).unwrap();
    std::fs::write(&key, &stray.key_pem).unwrap();
    for door in [Door::V4Tls, Door::V5Tls] {
        let opts = ClientOpts::new("x", Auth::Cert { cert: cert.clone(), key: key.clone() });
        let refused = Client::connect(&h, door, opts).await.err();
        assert_eq!(refused, Some(ConnectFailure::Refused(door.not_authorized())), "{door:?}");
        // ... and no certificate at all fails the handshake.
        let refused = Client::connect(&h, door, ClientOpts::new("x", Auth::Nothing)).await.err();
        assert!(matches!(refused, Some(ConnectFailure::Failed(_))), "{door:?}: {refused:?}");
    }
    let metric = |reason: &str| ingest::metrics::METRICS.logins_refused.with_label_values(&[reason]).get();
    assert!(metric("unknown_device") >= 4);
    assert!(metric("unknown_certificate") >= 2);
    assert!(metric("tls_handshake") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_a_connack_code() {
    let h = Harness::start();
    for door in [Door::V4, Door::V5] {
        let opts = ClientOpts::new("x", Auth::Password { username: A.into(), password: "not-it".into() });
        assert_eq!(Client::connect(&h, door, opts).await.err(), Some(ConnectFailure::Refused(door.bad_credentials())));
        // No credentials at all: not authorised.
        let mut raw = Raw::open(&h, door, None).await.unwrap();
        assert_eq!(raw.connect("x", None, 30, None).await, Some(door.not_authorized()));
        // The right password works.
        let ok = Client::connect(&h, door, ClientOpts::new("ok", h.auth(door, A))).await;
        assert!(ok.is_ok(), "{door:?}");
    }
    // A certificate-holding device cannot use its certificate's device id with a made-up password either.
    let mut raw = Raw::open(&h, Door::V4, None).await.unwrap();
    assert_eq!(raw.connect("x", Some((C, "guess")), 30, None).await, Some(4));
    assert!(ingest::metrics::METRICS.logins_refused.with_label_values(&["bad_password"]).get() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishing_as_another_device_gets_nothing_into_the_pipeline() {
    let h = Harness::start();
    for door in Door::ALL {
        let mut a = Client::connect(&h, door, ClientOpts::new(&format!("a-{door:?}"), h.auth(door, A))).await.unwrap();
        for forged in [
            readings(B),
            format!("/tenants/{B}/sensors/{B}/readings"),
            format!("/tenants/{A}/sensors/{B}/readings"),
            "sensors/+/x".replace('+', "ALL"),
        ] {
            a.publish(&forged, common::reading(99.0)).await;
            // Acknowledged (closing would make a QoS 1 client resend forever); v5 says "not authorized".
            let reason = a.puback().await;
            assert_eq!(reason, if door.v5() { 0x87 } else { 0 }, "{door:?} {forged}");
        }
        // The device's own topic still works, and it is the only thing that arrives.
        a.publish(&readings(A), common::reading(1.0)).await;
        assert_eq!(a.puback().await, 0);
        let arrived = h.drain(QUIET);
        assert_eq!(arrived.len(), 1, "{door:?}: {arrived:?}");
        assert_eq!(arrived[0].topic, readings(A));
    }
    assert!(ingest::metrics::METRICS.forbidden.with_label_values(&["publish"]).get() >= 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_subscribing_to_everything_receives_no_other_devices_data() {
    let h = Harness::start();
    for door in Door::ALL {
        let mut a = Client::connect(&h, door, ClientOpts::new(&format!("a-{door:?}"), h.auth(door, A))).await.unwrap();
        for filter in ["#", "sensors/#", "+/+/readings", &format!("devices/{B}/#"), "devices/+/#", "$SYS/#"] {
            a.subscribe(filter).await;
            assert_eq!(a.suback().await, vec![door.sub_refused()], "{door:?} {filter}");
        }
        a.subscribe(&format!("devices/{A}/#")).await;
        assert_eq!(a.suback().await, vec![0], "its own command topics are allowed (granted at QoS 0)");

        let b = Client::connect(&h, door, ClientOpts::new(&format!("b-{door:?}"), h.auth(door, B))).await.unwrap();
        b.publish(&readings(B), common::reading(2.0)).await;
        b.publish(&format!("sensors/{B}/status"), r#"{"battery_v":3.7}"#).await;
        b.publish(&format!("devices/{A}/commands/reboot"), "forged command").await;
        assert_eq!(h.front_door.send_command(B, &format!("devices/{B}/commands/x"), "for B").unwrap(), 0);
        assert_eq!(a.publish_received(QUIET).await, None, "{door:?}: A received something not meant for it");

        // The subscription does work for what is A's: a command to A arrives.
        assert_eq!(h.front_door.send_command(A, &format!("devices/{A}/commands/reboot"), "now").unwrap(), 1);
        let (topic, payload) = a.publish_received(Duration::from_secs(5)).await.expect("A's command");
        assert_eq!(
            (topic.as_str(), payload.as_slice()),
            (format!("devices/{A}/commands/reboot").as_str(), &b"now"[..])
        );
        h.drain(Duration::from_millis(100));
    }
    assert!(h.front_door.send_command(A, &format!("devices/{B}/x"), "no").is_err());
}

/// Connects a valid device and returns how long the CONNACK took.
async fn time_to_connack(h: &Harness, door: Door, id: &str) -> Duration {
    let started = Instant::now();
    let client = Client::connect(h, door, ClientOpts::new(id, h.auth(door, A))).await;
    assert!(client.is_ok(), "{door:?}: {:?}", client.err());
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_and_half_handshakes_do_not_delay_other_devices() {
    let h = Harness::start();
    // Warm the login cache so the timing below measures the door, not argon2.
    let _warm = Client::connect(&h, Door::V4, ClientOpts::new("warm", h.auth(Door::V4, A))).await.unwrap();
    let mut hostile = Vec::new();
    for door in Door::ALL {
        let addr = h.addr(door);
        for _ in 0..20 {
            // Connects and never sends a byte.
            hostile.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        if door.tls() {
            // The first bytes of a ClientHello, then nothing.
            half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).await.unwrap();
        } else {
            // Half a CONNECT, then nothing.
            half.write_all(&[0x10, 0x30, 0x00, 0x04, b'M', b'Q']).await.unwrap();
        }
        hostile.push(half);
    }
    // Measured once the door has taken every hostile connection (and the warm-up one), not while they queue.
    let open = hostile.len() + 1;
    wait_until("the hostile connections accepted", || h.front_door.open_connections() >= open).await;
    for door in Door::ALL {
        let took = time_to_connack(&h, door, &format!("t-{door:?}")).await;
        assert!(took < Duration::from_secs(1), "{door:?}: CONNACK took {took:?} behind silent connections");
    }
    drop(hostile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_dropped_at_the_connect_deadline() {
    let h = Harness::start_with(|c| c.connect_timeout = Duration::from_millis(300));
    let before = ingest::metrics::METRICS.logins_refused.with_label_values(&["timeout"]).get();
    let mut silent = tokio::net::TcpStream::connect(h.addr(Door::V4Tls)).await.unwrap();
    silent.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut byte = [0u8; 1];
    let closed =
        tokio::time::timeout(Duration::from_secs(3), tokio::io::AsyncReadExt::read(&mut silent, &mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "closed by the server: {closed:?}");
    // The socket closes as the deadline fires; the counter follows a moment later.
    let timeouts = || ingest::metrics::METRICS.logins_refused.with_label_values(&["timeout"]).get();
    wait_until("the stalled connection counted as a timeout", || timeouts() > before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_zero_is_served() {
    let h = Harness::start();
    // rumqttc (v4) with keep-alive off, on plain and TLS.
    for door in [Door::V4, Door::V4Tls] {
        let mut opts = ClientOpts::new(&format!("ka0-{door:?}"), h.auth(door, A));
        opts.keep_alive = Duration::ZERO;
        let mut a = Client::connect(&h, door, opts).await.expect("keep-alive 0 connects");
        a.publish(&readings(A), common::reading(3.0)).await;
        assert_eq!(a.puback().await, 0);
        assert_eq!(h.next_message(Duration::from_secs(5)).unwrap().topic, readings(A));
    }
    // Raw, MQTT 5, TLS: idle for longer than any keep-alive timer would allow at 1 s, then publish again.
    let mut raw = Raw::open(&h, Door::V5Tls, Some(A)).await.unwrap();
    assert_eq!(raw.connect("raw-ka0", None, 0, None).await, Some(0));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(raw.publish_qos1(&readings(A), common::reading(4.0).as_bytes(), 7).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_timeout_sends_the_will() {
    let h = Harness::start();
    let mut raw = Raw::open(&h, Door::V4, None).await.unwrap();
    let pw = h.password(A);
    let will_topic = format!("sensors/{A}/status");
    assert_eq!(raw.connect("ka1", Some((A, &pw)), 1, Some((&will_topic, br#"{"online": false}"#))).await, Some(0));
    // Silent for more than 1.5 × keep-alive: the server closes and publishes the will.
    let will = h.next_message(Duration::from_secs(4)).expect("the will");
    assert_eq!(will.topic, will_topic);
    assert_eq!(raw.read(Duration::from_secs(1)).await, None, "socket closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_work_on_plain_and_tls() {
    let h = Harness::start();
    for door in [Door::V5, Door::V5Tls] {
        let mut a = Client::connect(&h, door, ClientOpts::new(&format!("v5-{door:?}"), h.auth(door, A))).await.unwrap();
        for i in 0..10 {
            a.publish(&readings(A), common::reading(f64::from(i))).await;
        }
        for _ in 0..10 {
            assert_eq!(a.puback().await, 0);
        }
        let got = h.drain(QUIET);
        assert_eq!(got.len(), 10, "{door:?}");
        assert!(got.iter().all(|m| m.topic == readings(A)));
    }
    // Either protocol version is understood on every port (the CONNECT says which).
    let mut raw = Raw::open(&h, Door::V4, None).await.unwrap();
    raw.v5 = true;
    assert_eq!(raw.connect("v5-on-1883", Some((A, &h.password(A))), 30, None).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt31_gets_return_code_1() {
    let h = Harness::start();
    let mut raw = Raw::open(&h, Door::V4, None).await.unwrap();
    // CONNECT "MQIsdp" level 3.
    let mut body = vec![0, 6];
    body.extend_from_slice(b"MQIsdp");
    body.extend_from_slice(&[3, 0x02, 0, 30, 0, 1, b'x']);
    raw.send(&common::frame(0x10, &body)).await.unwrap();
    let (b1, ack) = raw.read(Duration::from_secs(5)).await.expect("a CONNACK");
    assert_eq!((b1, ack), (0x20, vec![0, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_reaches_the_pipeline_when_a_device_drops_without_disconnect() {
    let h = Harness::start();
    let will_topic = format!("sensors/{A}/status");
    for door in Door::ALL {
        let mut opts = ClientOpts::new(&format!("will-{door:?}"), h.auth(door, A));
        opts.will = Some((will_topic.clone(), br#"{"online": false}"#.to_vec()));
        let a = Client::connect(&h, door, opts.clone()).await.unwrap();
        a.kill();
        let will = h.next_message(Duration::from_secs(5)).unwrap_or_else(|| panic!("{door:?}: no will"));
        assert_eq!(will.topic, will_topic);
        assert_eq!(&will.payload[..], br#"{"online": false}"#);

        // A clean DISCONNECT sends no will.
        let a = Client::connect(&h, door, opts).await.unwrap();
        a.disconnect().await;
        assert!(h.drain(QUIET).is_empty(), "{door:?}: will after a clean disconnect");
    }
    // A will on another device's topic is refused at CONNECT.
    let mut raw = Raw::open(&h, Door::V4, None).await.unwrap();
    let forged = format!("sensors/{B}/status");
    let pw = h.password(A);
    assert_eq!(raw.connect("w", Some((A, &pw)), 30, Some((&forged, b"{}"))).await, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_is_decoded_as_an_offline_status() {
    let h = Harness::start();
    let registry = ingest::SensorRegistry::from_toml(
        "[[sensor]]\nid = \"RG0001\"\nkind = \"rain_gauge\"\nlat = 23.5\nlon = 120.9\ninterval_s = 600\nagency = \"SWCB\"\nmetrics = [\"rain_mm\"]\n",
        std::path::Path::new("sensors.toml"),
    )
    .unwrap();
    let ingest = ingest::Ingest::new(std::sync::Arc::new(parking_lot::RwLock::new(registry)), Default::default());
    let mut opts = ClientOpts::new("w", h.auth(Door::V4, A));
    opts.will = Some((format!("sensors/{A}/status"), br#"{"online": false}"#.to_vec()));
    Client::connect(&h, Door::V4, opts).await.unwrap().kill();
    let will = h.next_message(Duration::from_secs(5)).unwrap();
    let status = ingest.process(&will, common::now_ms()).status.expect("a status");
    assert!(!status.online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_device_closes_its_sessions_and_refuses_it_everywhere() {
    let h = Harness::start();
    let mut plain = Client::connect(&h, Door::V4, ClientOpts::new("p", h.auth(Door::V4, C))).await.unwrap();
    let mut tls = Client::connect(&h, Door::V5Tls, ClientOpts::new("t", h.auth(Door::V5Tls, C))).await.unwrap();
    // Revoked through the CLI's function (another handle on the same store file, like another process).
    ingest::identity::revoke(h.dir.path(), C).unwrap();
    for client in [&mut plain, &mut tls] {
        let closed = client.expect(Duration::from_secs(5), |e| matches!(e, Ev::Closed(_)).then_some(())).await;
        assert!(closed.is_some(), "a live session of a revoked device is closed within seconds");
    }
    let refused = Client::connect(&h, Door::V4, ClientOpts::new("p2", h.auth(Door::V4, C))).await.err();
    assert_eq!(refused, Some(ConnectFailure::Refused(5)));
    // On TLS the revoked certificate fails the handshake itself.
    let refused = Client::connect(&h, Door::V4Tls, ClientOpts::new("t2", h.auth(Door::V4Tls, C))).await.err();
    assert!(matches!(refused, Some(ConnectFailure::Failed(_))), "{refused:?}");
    // Other devices are untouched.
    assert!(Client::connect(&h, Door::V4Tls, ClientOpts::new("a", h.auth(Door::V4Tls, A))).await.is_ok());

    // Provisioning again issues a new certificate and lifts the revocation; the old certificate stays refused.
    let generation = h.devices.generation();
    let fresh = ingest::identity::provision(h.dir.path(), C).unwrap();
    // The door picks up the other process's change on its once-a-second refresh.
    wait_until("the door to read the provisioning", || h.devices.generation() > generation).await;
    let again = Client::connect(
        &h,
        Door::V4Tls,
        ClientOpts::new("t3", Auth::Cert { cert: fresh.cert_path.clone(), key: fresh.key_path.clone() }),
    )
    .await;
    assert!(again.is_ok(), "{:?}", again.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_id_takes_over_without_a_will() {
    let h = Harness::start();
    let mut opts = ClientOpts::new("same", h.auth(Door::V4, A));
    opts.will = Some((format!("sensors/{A}/status"), br#"{"online": false}"#.to_vec()));
    let mut first = Client::connect(&h, Door::V4, opts.clone()).await.unwrap();
    let second = Client::connect(&h, Door::V4, opts).await.unwrap();
    assert!(first.expect(Duration::from_secs(5), |e| matches!(e, Ev::Closed(_)).then_some(())).await.is_some());
    assert!(h.drain(QUIET).is_empty(), "no offline will while the device is online on its new connection");
    second.publish(&readings(A), common::reading(5.0)).await;
    assert_eq!(h.next_message(Duration::from_secs(5)).unwrap().topic, readings(A));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos2_is_delivered_once() {
    let h = Harness::start();
    let mut raw = Raw::open(&h, Door::V5, None).await.unwrap();
    assert_eq!(raw.connect("q2", Some((A, &h.password(A))), 30, None).await, Some(0));
    let packet = common::publish_packet(true, &readings(A), common::reading(6.0).as_bytes(), 2, 9);
    raw.send(&packet).await.unwrap();
    assert_eq!(raw.read(Duration::from_secs(5)).await.unwrap().0, 0x50, "PUBREC");
    // A resend (DUP) before PUBREL is acknowledged but not delivered again.
    let mut dup = packet.clone();
    dup[0] |= 0x08;
    raw.send(&dup).await.unwrap();
    assert_eq!(raw.read(Duration::from_secs(5)).await.unwrap().0, 0x50);
    raw.send(&[0x62, 0x02, 0, 9]).await.unwrap();
    assert_eq!(raw.read(Duration::from_secs(5)).await.unwrap().0, 0x70, "PUBCOMP");
    assert_eq!(h.drain(QUIET).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_connect_closes_only_that_connection() {
    let h = Harness::start();
    let mut good = Client::connect(&h, Door::V4, ClientOpts::new("good", h.auth(Door::V4, A))).await.unwrap();
    for garbage in
        [&[0xF0, 0x00][..], &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], &[0x20, 0x02, 0, 0], b"GET / HTTP/1.1\r\n\r\n"]
    {
        let mut raw = Raw::open(&h, Door::V4, None).await.unwrap();
        assert_eq!(raw.connect("bad", Some((B, &h.password(B))), 30, None).await, Some(0));
        raw.send(garbage).await.unwrap();
        assert_eq!(raw.read(Duration::from_secs(5)).await, None, "{garbage:?}: closed");
    }
    // An oversized publish closes its connection too (v5: DISCONNECT 0x95 first).
    let h2 = Harness::start_with(|c| c.max_payload_bytes = 1024);
    let mut raw = Raw::open(&h2, Door::V5, None).await.unwrap();
    assert_eq!(raw.connect("big", Some((B, &h2.password(B))), 30, None).await, Some(0));
    raw.send(&common::publish_packet(true, &readings(B), &vec![b'x'; 4096], 1, 1)).await.unwrap();
    assert_eq!(raw.read(Duration::from_secs(5)).await, Some((0xE0, vec![0x95])));
    good.publish(&readings(A), common::reading(7.0)).await;
    assert_eq!(good.puback().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_new_connections_does_not_starve_readings_already_flowing() {
    let h = Harness::start();
    let mut flowing = Raw::open(&h, Door::V4, None).await.unwrap();
    assert_eq!(flowing.connect("flowing", Some((A, &h.password(A))), 30, None).await, Some(0));

    let storm = {
        let addrs: Vec<_> = Door::ALL.iter().map(|d| (*d, h.addr(*d))).collect();
        let tls = h.tls_client(Some((&h.provisioned[B].cert_path, &h.provisioned[B].key_path)));
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for i in 0..300u16 {
                let (door, addr) = addrs[usize::from(i) % addrs.len()];
                let tls = tls.clone();
                tasks.push(tokio::spawn(async move {
                    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else { return };
                    let packet =
                        common::connect_packet(door.v5(), &format!("crowd{i}"), Some((B, "wrong-password")), 30, None);
                    if door.tls() {
                        let connector = tokio_rustls::TlsConnector::from(tls);
                        let name =
                            tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap().to_owned();
                        if let Ok(mut s) = connector.connect(name, stream).await {
                            let _ = s
                                .write_all(&common::connect_packet(door.v5(), &format!("crowd{i}"), None, 30, None))
                                .await;
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                    } else if i % 3 == 0 {
                        // Silent.
                        let _keep = stream;
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    } else {
                        // Wrong password: an argon2 run each.
                        let mut s = stream;
                        let _ = s.write_all(&packet).await;
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };

    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut acked = 0u16;
    while started.elapsed() < Duration::from_secs(3) {
        let sent = Instant::now();
        let pkid = acked % 60_000 + 1;
        let ack = flowing.publish_qos1(&readings(A), common::reading(1.0).as_bytes(), pkid).await;
        assert_eq!(ack, Some(0));
        worst = worst.max(sent.elapsed());
        acked += 1;
    }
    storm.await.unwrap();
    eprintln!("during the crowd: {acked} readings acknowledged, slowest PUBACK {worst:?}");
    assert!(worst < Duration::from_secs(1), "a reading waited {worst:?} for its PUBACK during the crowd");
    assert!(acked > 100, "only {acked} readings acknowledged in 3 s");
    assert!(h.drain(Duration::from_millis(200)).len() >= usize::from(acked));
}

// ---------------------------------------------------------------------------------------------------------------
// Debian's mosquitto clients.

fn mosquitto_available() -> bool {
    std::process::Command::new("mosquitto_pub").arg("--help").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_plain_and_tls() {
    if !mosquitto_available() {
        eprintln!("mosquitto-clients not installed; skipping");
        return;
    }
    let h = Harness::start();
    let pub_plain = |door: Door, user: &str, pass: &str, topic: &str| {
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &h.addr(door).port().to_string()])
            .args(["-V", if door.v5() { "mqttv5" } else { "mqttv311" }])
            .args(["-u", user, "-P", pass, "-q", "1", "-t", topic, "-m", r#"{"values":{"rain_mm":1}}"#])
            .output()
            .expect("mosquitto_pub runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for door in [Door::V4, Door::V5] {
        let (ok, err) = pub_plain(door, A, &h.password(A), &readings(A));
        assert!(ok, "{door:?}: {err}");
        assert_eq!(h.next_message(Duration::from_secs(5)).unwrap().topic, readings(A));
        let (ok, err) = pub_plain(door, A, "wrong", &readings(A));
        assert!(!ok && err.to_lowercase().contains("bad user name or password"), "{door:?}: {err}");
        let (ok, _) = pub_plain(door, A, &h.password(A), &readings(B));
        assert!(ok, "a forged publish is acknowledged");
        assert!(h.drain(QUIET).is_empty(), "{door:?}: the forged publish reached the pipeline");
    }
    for door in [Door::V4Tls, Door::V5Tls] {
        let p = &h.provisioned[A];
        let out = std::process::Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &h.addr(door).port().to_string()])
            .args(["-V", if door.v5() { "mqttv5" } else { "mqttv311" }])
            .arg("--cafile")
            .arg(h.data.ca_cert())
            .arg("--cert")
            .arg(&p.cert_path)
            .arg("--key")
            .arg(&p.key_path)
            .args(["-q", "1", "-t", &readings(A), "-m", r#"{"values":{"rain_mm":2}}"#])
            .output()
            .expect("mosquitto_pub runs");
        assert!(out.status.success(), "{door:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(h.next_message(Duration::from_secs(5)).unwrap().topic, readings(A));
    }
    // mosquitto_sub on `#` with valid credentials: refused subscription, and none of B's data.
    let forbidden_subscribes = || ingest::metrics::METRICS.forbidden.with_label_values(&["subscribe"]).get();
    let subscribes_before = forbidden_subscribes();
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &h.addr(Door::V4).port().to_string()])
        .args(["-u", A, "-P", &h.password(A), "-t", "#", "-v", "-W", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    // B publishes once the door has answered the subscription (refused: counted), so B's data had its chance.
    wait_until("mosquitto_sub's subscription answered", || forbidden_subscribes() > subscribes_before).await;
    let b = Client::connect(&h, Door::V4, ClientOpts::new("b", h.auth(Door::V4, B))).await.unwrap();
    b.publish(&readings(B), common::reading(8.0)).await;
    let out = sub.wait_with_output().await.expect("mosquitto_sub ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(B), "mosquitto_sub on # saw B's data: {stdout}");
}

/// One wrong-password CONNECT from `from` (a loopback address of the attacker's): the CONNACK code, `None` if the
/// connection closed (or stayed silent) without one.
async fn wrong_password_connect(addr: std::net::SocketAddr, from: [u8; 4], i: usize) -> Option<u8> {
    use tokio::io::AsyncReadExt;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(std::net::SocketAddr::from((from, 0))).ok()?;
    let mut stream = socket.connect(addr).await.ok()?;
    let packet = common::connect_packet(false, &format!("guess{i}"), Some((A, "not-the-password")), 30, None);
    stream.write_all(&packet).await.ok()?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut connack)).await.ok()?.ok()?;
    (connack[0] == 0x20).then_some(connack[3])
}

/// 5,000 wrong-password CONNECTs for a real device id, from four addresses, 100 at a time, while 100 real devices
/// log in for the first time (an argon2 check each) and publish: every real device gets in within the connect
/// deadline's reach, and every reading it got a PUBACK for reaches the pipeline. The flood's logins for the one device
/// id hold at most two places in the argon2 queue (the rest: CONNACK 3, counted as `busy`), and its addresses are
/// throttled once they have failed a few times (CONNACK 5, `login_throttled`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_does_not_keep_real_devices_out() {
    const FLOOD: usize = 5_000;
    const DEVICES: usize = 100;
    const READINGS: u16 = 5;
    let h = Harness::start();
    let devices: Vec<(String, String)> =
        (0..DEVICES).map(|i| (format!("FL{i:04}"), format!("field-password-{i}-{}", i * 7919))).collect();
    {
        let store = std::sync::Arc::clone(&h.devices);
        let list = devices.clone();
        tokio::task::spawn_blocking(move || {
            for (id, password) in &list {
                store.set_password(id, password).expect("device added");
            }
        })
        .await
        .unwrap();
    }
    // Logins refused before an argon2 check.
    let refused_early = || {
        ["busy", "login_throttled"]
            .map(|r| ingest::metrics::METRICS.logins_refused.with_label_values(&[r]).get())
            .iter()
            .sum::<u64>()
    };
    let refused_before = refused_early();
    let addr = h.addr(Door::V4);

    let flood = tokio::spawn(async move {
        let at_once = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
        let mut tasks = Vec::with_capacity(FLOOD);
        for i in 0..FLOOD {
            let permit = std::sync::Arc::clone(&at_once).acquire_owned().await.unwrap();
            let from = [127, 0, 0, 2 + (i % 4) as u8];
            tasks.push(tokio::spawn(async move {
                let code = wrong_password_connect(addr, from, i).await;
                drop(permit);
                code
            }));
        }
        let mut codes = std::collections::BTreeMap::<Option<u8>, usize>::new();
        for t in tasks {
            *codes.entry(t.await.unwrap()).or_default() += 1;
        }
        codes
    });
    // The flood is under way (its logins are being refused) before the devices come.
    wait_until("the flood under way", || refused_early() > refused_before).await;

    let started = Instant::now();
    let give_up = started + Duration::from_secs(45);
    let mut fleet = Vec::new();
    for (n, (id, password)) in devices.iter().cloned().enumerate() {
        let h_addr = addr;
        fleet.push(tokio::spawn(async move {
            // Spread over a second, as devices coming back after an outage are.
            tokio::time::sleep(Duration::from_millis(10 * n as u64)).await;
            let mut tries = 0;
            let mut device = loop {
                tries += 1;
                assert!(Instant::now() < give_up, "{id} could not log in within 45 s ({tries} tries)");
                let Ok(stream) = tokio::net::TcpStream::connect(h_addr).await else { continue };
                let mut raw = Raw::from_stream(stream, false);
                match raw.connect(&id, Some((&id, &password)), 30, None).await {
                    Some(0) => break raw,
                    // "Server busy" or no answer in time: a device tries again shortly, as firmware does.
                    Some(3) | None => tokio::time::sleep(Duration::from_millis(200)).await,
                    Some(other) => panic!("{id} refused with CONNACK {other}"),
                }
            };
            let mut acked = 0u16;
            for pkid in 1..=READINGS {
                let payload = common::reading(f64::from(pkid));
                if device.publish_qos1(&readings(&id), payload.as_bytes(), pkid).await == Some(0) {
                    acked += 1;
                }
            }
            (id, acked, tries)
        }));
    }
    let mut acked = std::collections::HashMap::new();
    let mut most_tries = 0;
    for d in fleet {
        let (id, n, tries) = d.await.unwrap();
        most_tries = most_tries.max(tries);
        acked.insert(id, n);
    }
    let fleet_took = started.elapsed();
    let codes = flood.await.unwrap();
    eprintln!(
        "flood answers {codes:?}; {DEVICES} devices in and published after {fleet_took:?} (at most {most_tries} tries)"
    );

    assert_eq!(codes.values().sum::<usize>(), FLOOD);
    assert_eq!(codes.get(&Some(0)), None, "no wrong password got in");
    // Each wrong password that was checked cost an argon2 run; the rest were refused before one: busy (the device
    // id had two logins waiting already) or throttled (the address had failed too often).
    let checked = codes.get(&Some(4)).copied().unwrap_or(0);
    assert!(checked <= 4 * 10 + 10, "the flood cost {checked} password checks: {codes:?}");
    assert_eq!(codes.get(&None), None, "every attempt got an answer: {codes:?}");
    let refused = refused_early();
    assert!(refused - refused_before >= (FLOOD - checked) as u64, "counted: {refused}");

    // Every acknowledged reading reached the pipeline.
    assert!(acked.values().all(|n| *n == READINGS), "every publish acknowledged: {acked:?}");
    let arrived = h.drain(Duration::from_millis(500));
    for (id, n) in &acked {
        let topic = readings(id);
        let got = arrived.iter().filter(|m| m.topic == topic).count();
        assert_eq!(got, usize::from(*n), "{id}: {n} PUBACKed, {got} arrived");
    }

    // The attacked device itself logs in from its own address once the flood is over.
    let mut real = Raw::open(&h, Door::V4, None).await.unwrap();
    assert_eq!(real.connect("real-a", Some((A, &h.password(A))), 30, None).await, Some(0));
}

/// An address that failed `failed_login_burst` logins is refused before any check — right passwords included, so
/// that it cannot test guesses against the remembered-password cache — until its bucket refills; other addresses are
/// not affected, and the refusal is counted. MQTT 5 clients read 0x9F (connection rate exceeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_is_throttled_others_are_not() {
    let h = Harness::start_with(|c| {
        c.failed_login_burst = 3;
        c.failed_login_refill = Duration::from_secs(3600);
    });
    // A right login first, so that A's password is remembered (the cheap check a throttled address must not reach).
    let mut warm = Raw::open(&h, Door::V4, None).await.unwrap();
    assert_eq!(warm.connect("warm", Some((A, &h.password(A))), 30, None).await, Some(0));
    let before = ingest::metrics::METRICS.logins_refused.with_label_values(&["login_throttled"]).get();
    let from = |last: u8, door: Door| {
        let addr = h.addr(door);
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(std::net::SocketAddr::from(([127, 0, 0, last], 0))).unwrap();
            Raw::from_stream(socket.connect(addr).await.unwrap(), door.v5())
        }
    };
    for (i, device) in [A, B, "NOSUCH1"].into_iter().enumerate() {
        let mut raw = from(7, Door::V4).await;
        assert_eq!(raw.connect(&format!("g{i}"), Some((device, "wrong")), 30, None).await, Some(4), "{device}");
    }
    let mut raw = from(7, Door::V4).await;
    assert_eq!(raw.connect("g3", Some((A, "wrong")), 30, None).await, Some(5), "throttled");
    let mut raw = from(7, Door::V4).await;
    assert_eq!(raw.connect("g4", Some((A, &h.password(A))), 30, None).await, Some(5), "even the right password");
    let mut raw = from(7, Door::V5).await;
    assert_eq!(raw.connect("g5", Some((B, &h.password(B))), 30, None).await, Some(0x9F), "MQTT 5's code");
    // Another address, the same devices: in.
    let mut raw = from(8, Door::V4).await;
    assert_eq!(raw.connect("ok", Some((B, &h.password(B))), 30, None).await, Some(0));
    let after = ingest::metrics::METRICS.logins_refused.with_label_values(&["login_throttled"]).get();
    assert!(after - before >= 3, "counted: {before} → {after}");
}

/// The connect deadline covers the wait for a password check: a login queued behind others that does not reach
/// argon2 in time is refused "server busy" (CONNACK 3) at the deadline instead of holding its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waiting_past_the_connect_deadline_is_told_the_server_is_busy() {
    let h = Harness::start_with(|c| {
        c.connect_timeout = Duration::from_millis(300);
        c.max_pending_logins_per_device = 1000;
        c.failed_login_burst = 100_000;
    });
    // Many first logins at once (each an argon2 check) for three devices: the queue is longer than 300 ms.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let device = [A, B, C][i % 3];
        let (addr, password) = (h.addr(Door::V4), h.password(device));
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut raw = Raw::from_stream(stream, false);
            let code = raw.connect(&format!("q{i}"), Some((device, &password)), 30, None).await;
            (code, started.elapsed())
        }));
    }
    let mut busy = 0;
    for t in tasks {
        let (code, took) = t.await.unwrap();
        assert!(matches!(code, Some(0) | Some(3)), "{code:?}");
        assert!(took < Duration::from_secs(3), "an answer by the deadline (plus one check), not {took:?}");
        busy += usize::from(code == Some(3));
    }
    assert!(busy > 0, "some logins were still queued at the deadline");
}

/// A device opening more sessions than `max_sessions_per_device` (fresh client ids, as a device whose old connection
/// has not timed out yet) gets in; its oldest session is closed (MQTT 5: DISCONNECT 0x97), the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_session_cap_the_oldest_session_of_a_device_is_closed() {
    let h = Harness::start_with(|c| c.max_sessions_per_device = 4);
    let mut sessions = Vec::new();
    for i in 0..5 {
        let mut raw = Raw::open(&h, Door::V5, None).await.unwrap();
        assert_eq!(raw.connect(&format!("s{i}"), Some((A, &h.password(A))), 30, None).await, Some(0), "s{i}");
        sessions.push(raw);
    }
    let (first, body) = sessions[0].read(Duration::from_secs(5)).await.expect("a DISCONNECT for the oldest");
    assert_eq!((first, body.first().copied()), (0xE0, Some(0x97)), "quota exceeded");
    for (i, raw) in sessions.iter_mut().enumerate().skip(1) {
        assert_eq!(raw.publish_qos1(&readings(A), common::reading(1.0).as_bytes(), 1).await, Some(0), "s{i}");
    }
    assert_eq!(h.front_door.sessions(), 4);
}
