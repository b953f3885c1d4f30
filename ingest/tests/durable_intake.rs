//! The front door with a durable intake (a cluster's replicated log): a PUBACK leaves only once the intake says the
//! batch is durable, and a batch it cannot take closes the connection without one. Real MQTT clients (rumqttc).

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use common::{now_ms, A};
use ingest::broker::{start_durable_front_door, BrokerConfig};
use ingest::devices::DeviceStore;
use ingest::front_door::{DurableIntake, FrontDoor};
use ingest::identity::{provision_with, DataDir, DeploymentCa};
use ingest::RawMessage;
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::watch;

/// An intake whose answers the test gives: each batch waits until the verdict is set (`Some`), then takes it.
struct Gate {
    verdict: watch::Receiver<Option<bool>>,
    seen: Arc<Mutex<Vec<RawMessage>>>,
}

impl DurableIntake for Gate {
    fn accept(&self, batch: Vec<RawMessage>) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> {
        self.seen.lock().extend(batch);
        let mut verdict = self.verdict.clone();
        Box::pin(async move {
            let answer = verdict.wait_for(Option::is_some).await.map(|v| *v);
            answer.ok().flatten().unwrap_or(false)
        })
    }
}

struct Setup {
    _front_door: FrontDoor,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    password: String,
    verdict: watch::Sender<Option<bool>>,
    seen: Arc<Mutex<Vec<RawMessage>>>,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = DataDir::new(dir.path());
    let devices = Arc::new(DeviceStore::open(&data.devices_file()).expect("device store"));
    let ca = DeploymentCa::load_or_create(&data).expect("deployment CA");
    let password = provision_with(&ca, &devices, &data, A, now_ms()).expect("provisioned").password;
    let (verdict, rx) = watch::channel(None);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let config = BrokerConfig {
        v4_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        v5_listen: None,
        data_dir: Some(dir.path().to_path_buf()),
        ..BrokerConfig::default()
    };
    let gate = Arc::new(Gate { verdict: rx, seen: Arc::clone(&seen) });
    let front_door = start_durable_front_door(&config, devices, gate).expect("front door starts");
    let addr = front_door.local_addrs().v4.expect("bound");
    Setup { _front_door: front_door, _dir: dir, addr, password, verdict, seen }
}

async fn device(setup: &Setup) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new("gw-a", "127.0.0.1", setup.addr.port());
    opts.set_credentials(A, &setup.password);
    let (client, mut eventloop) = AsyncClient::new(opts, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return (client, eventloop),
            Ok(Ok(_)) => {}
            other => panic!("no CONNACK: {other:?}"),
        }
    }
}

/// The next PUBACK within `within`; `Err` with what ended the wait instead (silence, or the connection's end).
async fn puback(eventloop: &mut EventLoop, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("connection ended: {e}")),
            Err(_) => return Err("silence".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_puback_waits_for_the_durable_intake() {
    let setup = start();
    let (client, mut eventloop) = device(&setup).await;
    client
        .publish(format!("sensors/{A}/readings"), QoS::AtLeastOnce, false, r#"{"values":{"rain_mm":1}}"#)
        .await
        .unwrap();
    // Received and handed over, but not yet durable: no PUBACK.
    assert_eq!(puback(&mut eventloop, Duration::from_millis(700)).await, Err("silence".into()));
    assert_eq!(setup.seen.lock().len(), 1);
    assert_eq!(setup.seen.lock()[0].topic, format!("sensors/{A}/readings"));
    setup.verdict.send_replace(Some(true));
    puback(&mut eventloop, Duration::from_secs(5)).await.expect("the PUBACK once the intake has it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_intake_cannot_take_is_never_acknowledged() {
    let setup = start();
    let (client, mut eventloop) = device(&setup).await;
    let closed_before = ingest::metrics::METRICS.disconnects.with_label_values(&["not_durable"]).get();
    setup.verdict.send_replace(Some(false));
    client
        .publish(format!("sensors/{A}/readings"), QoS::AtLeastOnce, false, r#"{"values":{"rain_mm":1}}"#)
        .await
        .unwrap();
    let outcome = puback(&mut eventloop, Duration::from_secs(5)).await;
    assert!(outcome.as_ref().is_err_and(|e| e.starts_with("connection ended")), "{outcome:?}");
    // The session's socket closes as its task ends, a moment before the task counts why: wait for the count.
    let counted = || ingest::metrics::METRICS.disconnects.with_label_values(&["not_durable"]).get();
    common::wait_until("the disconnect counted", || counted() > closed_before).await;
    assert_eq!(counted(), closed_before + 1);
}
