//! Authentication and least privilege on the backbone, against three real nats-server nodes run with
//! `ops/nats/authorization.conf`: no anonymous client gets in, and each role's user can do its role's work and no
//! other — a fan-out node (public-facing) only reads the alerts stream, a front door only appends readings.

use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use cluster::alerts::{self, AlertWatch, AlertsLog, WatchFrom};
use cluster::lease::{self, Leases};
use cluster::readings::{self, Appended, ReadingsLog};
use cluster::test_support::{sample_reading, NatsCluster};
use cluster::{Backbone, BackboneConfig, ClusterError, NatsAuth};
use tokio::sync::mpsc;

fn config(nats: &NatsCluster, name: &str, user: &str) -> BackboneConfig {
    let mut c = nats.backbone_config(name, user);
    c.start_timeout = Duration::from_secs(30);
    c
}

/// A client logged in as `user` (its inbox prefix, as its role's processes use), and the errors the server sends it.
async fn client_as(nats: &NatsCluster, user: &str) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (errors, received) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), nats.password(user).into())
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .request_timeout(Some(Duration::from_secs(2)))
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = errors.send(e.to_string());
                }
            }
        })
        .connect(nats.urls().as_slice())
        .await
        .expect("the user connects");
    (client, received)
}

/// Waits for the server's permission violation naming `subject` (`what`: `Publish` or `Subscription`).
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let want = format!("permissions violation for {} to \"{}\"", what.to_lowercase(), subject.to_lowercase());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::time::timeout_at(deadline, errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no permission violation for {what} to {subject}"))
            .expect("the client is open");
        if got.to_lowercase().contains(&want) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_gets_in_without_credentials() {
    let nats = NatsCluster::start("auth-anonymous");
    let anonymous = async_nats::connect(nats.urls().as_slice()).await;
    let e = anonymous.expect_err("an anonymous client is refused").to_string();
    assert!(e.contains("authorization violation"), "{e}");

    let mut wrong = config(&nats, "fd-1", "front-door");
    wrong.auth = Some(NatsAuth::UserPassword { user: "front-door".into(), password: nats.password("worker").into() });
    let e = Backbone::connect(wrong).await.expect_err("a wrong password is refused");
    assert!(
        matches!(&e, ClusterError::Connect { message, .. } if message.contains("refused our credentials (user `front-door`)")),
        "{e}"
    );
    // Without credentials the crate connects anonymously, and the cluster refuses that too.
    let mut none = config(&nats, "fd-1", "front-door");
    none.auth = None;
    let e = Backbone::connect(none).await.expect_err("no credentials are refused").to_string();
    assert!(e.contains("refused our credentials (no credentials)"), "{e}");
    // The right ones get in.
    Backbone::connect(config(&nats, "fd-1", "front-door")).await.expect("the front door connects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_node_reads_the_alerts_stream_and_can_do_nothing_else() {
    let mut nats = NatsCluster::start("auth-fan-out");
    nats.expect_permission_violations();
    // A worker sets up what a running cluster has: the alerts stream with an alert, a county's lease.
    let worker = Backbone::connect(config(&nats, "w-1", "worker")).await.expect("the worker connects");
    let alerts_log = AlertsLog::open(&worker).await.expect("the worker opens the alerts stream");
    let subject = alerts::subject("10008", "A1").unwrap();
    alerts_log.publish(&subject, &alerts::publish_id("A1", 1), Bytes::from_static(b"A1 v1")).await.unwrap();
    let leases = Leases::open(&worker, Duration::from_secs(30)).await.expect("the worker opens the leases");
    leases.acquire("10008").await.unwrap().expect("the worker takes the county");

    // What it is for: it reads the alerts stream through its own ordered consumer.
    let fan_out = Backbone::connect(config(&nats, "fan-1", "fan-out")).await.expect("the fan-out node connects");
    AlertsLog::open(&fan_out).await.expect("the fan-out node finds the alerts stream");
    let mut watch = AlertWatch::open(&fan_out, WatchFrom::LastPerSubject).await.expect("the fan-out node watches");
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("a message").unwrap().unwrap();
    assert_eq!((first.subject.as_str(), &first.payload[..]), (subject.as_str(), &b"A1 v1"[..]));

    let (client, mut errors) = client_as(&nats, "fan-out").await;
    let js = jetstream::new(client.clone());
    // No alert of its own on `dc.alerts.…`: refused by the server, nothing stored.
    let forged = alerts::subject("10008", "FORGED").unwrap();
    let published = js.publish(forged.clone(), Bytes::from_static(b"evacuate now")).await.unwrap();
    violation(&mut errors, "Publish", &forged).await;
    assert!(published.await.is_err(), "no acknowledgement for a refused publish");
    // No lease written, taken or deleted: the bucket's subjects and its API are closed to it.
    for key_subject in ["$KV.dc_leases.10008", "$KV.dc_leases.10010"] {
        client.publish(key_subject, Bytes::from_static(b"fan-1")).await.unwrap();
        violation(&mut errors, "Publish", key_subject).await;
    }
    assert!(js.get_key_value(lease::BUCKET).await.is_err(), "the leases bucket is not even visible to it");
    violation(&mut errors, "Publish", "$JS.API.STREAM.INFO.KV_dc_leases").await;
    // Not the dissemination node's durable consumer (pulling from it would steal its changes), not the stream's
    // configuration, not its messages.
    for api in [
        "$JS.API.CONSUMER.MSG.NEXT.DC_ALERTS.dc_dissemination",
        "$JS.API.CONSUMER.DELETE.DC_ALERTS.dc_dissemination",
        "$JS.API.STREAM.PURGE.DC_ALERTS",
        "$JS.API.STREAM.DELETE.DC_ALERTS",
        "$JS.API.STREAM.INFO.DC_READINGS",
    ] {
        client.publish(api.to_string(), Bytes::from_static(b"{}")).await.unwrap();
        violation(&mut errors, "Publish", api).await;
    }
    // Not other roles' replies.
    let _eavesdrop = client.subscribe("_INBOX.dissemination.>").await.unwrap();
    violation(&mut errors, "Subscription", "_INBOX.dissemination.>").await;

    // Nothing it tried changed anything.
    let admin = jetstream::new(nats.admin().await);
    let mut stream = admin.get_stream(alerts::STREAM).await.expect("the alerts stream is still there");
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "only the worker's alert");
    assert_eq!(leases.holder("10008").await.unwrap().as_deref(), Some("w-1"));
    assert_eq!(leases.holder("10010").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_door_appends_readings_and_touches_no_lease_nor_alert() {
    let mut nats = NatsCluster::start("auth-front-door");
    nats.expect_permission_violations();
    let worker = Backbone::connect(config(&nats, "w-1", "worker")).await.expect("the worker connects");
    let alerts_log = AlertsLog::open(&worker).await.unwrap();
    let subject = alerts::subject("10008", "A1").unwrap();
    alerts_log.publish(&subject, &alerts::publish_id("A1", 1), Bytes::from_static(b"A1 v1")).await.unwrap();
    let leases = Leases::open(&worker, Duration::from_secs(30)).await.unwrap();
    leases.acquire("10008").await.unwrap().expect("the worker takes the county");

    // What it is for: the readings stream, created by the first front door, appended to.
    let front_door = Backbone::connect(config(&nats, "fd-1", "front-door")).await.expect("the front door connects");
    let log = ReadingsLog::open(&front_door).await.expect("the front door creates the readings stream");
    assert!(matches!(log.append(&sample_reading("RG0001", 1)).await.unwrap(), Appended::Stored(_)));
    // The worker reads it back (its role); the front door cannot.
    let mut readings =
        readings::RegionReadings::open(&worker, "10008", readings::Start::Sequence(1)).await.expect("the worker reads");
    let got = tokio::time::timeout(Duration::from_secs(10), readings.next()).await.expect("a reading");
    assert!(matches!(got, Some(Ok(_))), "the worker gets the front door's reading");

    let (client, mut errors) = client_as(&nats, "front-door").await;
    let js = jetstream::new(client.clone());
    // Leases: neither read nor written.
    assert!(js.get_key_value(lease::BUCKET).await.is_err(), "the leases bucket is closed to it");
    violation(&mut errors, "Publish", "$JS.API.STREAM.INFO.KV_dc_leases").await;
    for api in ["$JS.API.DIRECT.GET.KV_dc_leases.$KV.dc_leases.10008", "$KV.dc_leases.10008", "$KV.dc_leases.10010"] {
        client.publish(api, Bytes::from_static(b"fd-1")).await.unwrap();
        violation(&mut errors, "Publish", api).await;
    }
    // The alerts stream: neither read, nor written, nor purged; and no stream deleted.
    assert!(js.get_stream(alerts::STREAM).await.is_err(), "the alerts stream is closed to it");
    violation(&mut errors, "Publish", "$JS.API.STREAM.INFO.DC_ALERTS").await;
    let forged = alerts::subject("10008", "FORGED").unwrap();
    for api in [
        forged.as_str(),
        "$JS.API.CONSUMER.CREATE.DC_ALERTS",
        "$JS.API.STREAM.PURGE.DC_ALERTS",
        "$JS.API.STREAM.DELETE.DC_READINGS",
        "$JS.API.CONSUMER.CREATE.DC_READINGS",
        "$KV.dc_deliveries.k",
    ] {
        client.publish(api.to_string(), Bytes::from_static(b"{}")).await.unwrap();
        violation(&mut errors, "Publish", api).await;
    }

    let admin = jetstream::new(nats.admin().await);
    let mut stream = admin.get_stream(alerts::STREAM).await.expect("the alerts stream is still there");
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "only the worker's alert");
    let mut stream = admin.get_stream(readings::STREAM).await.expect("the readings stream is still there");
    assert_eq!(stream.info().await.unwrap().state.messages, 1, "the one reading");
    assert_eq!(leases.holder("10008").await.unwrap().as_deref(), Some("w-1"));
    assert_eq!(leases.holder("10010").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_behind_tls_is_reached_with_its_ca_and_not_without() {
    let nats = NatsCluster::start_tls("auth-tls");
    let ca = nats.ca_file.clone().expect("the test CA");
    // `tls://` and the CA: the password crosses TLS, the front door appends.
    let mut with_ca = config(&nats, "fd-1", "front-door");
    with_ca.urls = nats.tls_urls();
    with_ca.ca_file = Some(ca.clone());
    let front_door = Backbone::connect(with_ca).await.expect("the front door connects over TLS");
    let log = ReadingsLog::open(&front_door).await.expect("the readings stream");
    assert!(matches!(log.append(&sample_reading("RG0001", 1)).await.unwrap(), Appended::Stored(_)));
    // `nats://` URLs with the CA: TLS all the same (the CA makes it required).
    let mut nats_scheme = config(&nats, "fd-2", "front-door");
    nats_scheme.ca_file = Some(ca);
    Backbone::connect(nats_scheme).await.expect("the CA makes nats:// URLs TLS too");
    // Without the CA the system's roots do not know the cluster's certificate: refused, nothing sent in clear.
    let mut no_ca = config(&nats, "fd-3", "front-door");
    no_ca.urls = nats.tls_urls();
    no_ca.start_timeout = Duration::from_secs(10);
    let e = Backbone::connect(no_ca).await.expect_err("an unknown certificate is refused").to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}
