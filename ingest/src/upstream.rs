//! An external MQTT broker (a cluster of EMQX, HiveMQ, VerneMQ or mosquitto) as the source of readings, instead of our
//! own front door: [`consume`] subscribes and hands every publish to a callback on a thread of its own, exactly as the
//! front door's `ingest-link` thread does, so the same [`crate::Ingest::process`] path (validation, registry, dead
//! letters, metrics) runs on it. [`Publisher`] sends our own messages (alerts, routed readings) to the same broker.
//!
//! Delivery: consumers subscribe at QoS 1 with manual acknowledgements. A publish is PUBACKed only after the callback
//! has returned, so a process killed mid-batch gets the unprocessed publishes again from the broker (with a persistent
//! session, also those that arrived while it was down). Redelivery means at-least-once: the rule engine counts and
//! drops exact duplicates.
//!
//! Why one connection per direction: acknowledgements travel on the consumer's request channel, which must never be
//! crowded out by our own publishes (the pipeline thread would block on an ack while the connection task waits for
//! the pipeline, a deadlock). Pending acks are bounded by the broker's in-flight window (mosquitto's
//! `max_inflight_messages`, EMQX's `max_inflight`), which must stay below [`REQUEST_CAPACITY`].
//!
//! Topics: devices publish `sensors/{id}/readings|status` as in `INTERFACE.md`. Inside the cluster the same publish
//! may travel under a region, `region/{region}/sensors/{id}/…` ([`region_topic`]); [`device_topic`] strips that prefix
//! again before the pipeline sees the topic, so dead letters and metrics read the same as on the front door.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::watch;

use crate::pipeline::RawMessage;
use crate::IngestError;

/// Capacity of each connection's request channel (acks, publishes, subscriptions waiting for the connection task).
pub const REQUEST_CAPACITY: usize = 4096;

/// Where and who we are on the upstream broker.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub host: String,
    pub port: u16,
    /// Unique per process on the broker (a second connection with the same id takes the first one over). Consumers
    /// with a persistent session must keep it across restarts: the broker keeps their queue under it.
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    /// Largest packet either way; above the largest payload we accept plus headers.
    pub max_packet_bytes: usize,
    /// Publishes waiting between the connection task and the pipeline thread.
    pub queue: usize,
}

impl UpstreamConfig {
    /// `mqtt://host[:port]` (port 1883 when not given). TLS to the broker (`mqtts://`) is not supported yet: run the
    /// cluster's internal listener on a private network, or a TLS-terminating sidecar.
    pub fn from_url(url: &str, client_id: &str) -> Result<Self, IngestError> {
        let bad = |why: &str| IngestError::Broker(format!("upstream url `{url}`: {why}"));
        let rest = match url.split_once("://") {
            Some(("mqtt" | "tcp", rest)) => rest,
            Some(("mqtts" | "ssl" | "tls", _)) => return Err(bad("TLS to the upstream broker is not supported yet")),
            Some((scheme, _)) => return Err(bad(&format!("unknown scheme `{scheme}`: use mqtt://host:port"))),
            None => return Err(bad("expected mqtt://host:port")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') {
            return Err(bad("expected mqtt://host:port (credentials go in username/password)"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal in brackets: [::1]:1883.
            Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| bad("port must be 1-65535"))?)
            }
            _ => (rest, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad("host and port must not be empty or 0"));
        }
        if !is_valid_client_id(client_id) {
            return Err(IngestError::Broker(format!(
                "upstream client id `{client_id}`: must be 1-64 ASCII letters, digits or '-'"
            )));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            client_id: client_id.to_string(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            max_packet_bytes: 1024 * 1024,
            queue: 1024,
        })
    }

    fn options(&self, client_id: &str, persistent: bool) -> MqttOptions {
        let mut opts = MqttOptions::new(client_id, self.host.clone(), self.port);
        opts.set_keep_alive(self.keep_alive);
        opts.set_clean_session(!persistent);
        opts.set_max_packet_size(self.max_packet_bytes, self.max_packet_bytes);
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user.clone(), password.clone());
        }
        opts
    }
}

/// Client ids double as alert-id prefixes and metric labels: keep them plain.
pub fn is_valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A region name is one topic level: 1-32 ASCII letters, digits or '-' (county codes such as `10008`).
pub fn is_valid_region(region: &str) -> bool {
    (1..=32).contains(&region.len()) && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `sensors/{id}/readings` under `region`: `region/{region}/sensors/{id}/readings`.
pub fn region_topic(region: &str, device_topic: &str) -> String {
    format!("region/{region}/{device_topic}")
}

/// The device topic inside a region topic (or the topic itself when it carries no region), and the region.
pub fn device_topic(topic: &str) -> (Option<&str>, &str) {
    match topic.strip_prefix("region/").and_then(|rest| rest.split_once('/')) {
        Some((region, rest)) => (Some(region), rest),
        None => (None, topic),
    }
}

struct UpstreamMetrics {
    connected: IntGaugeVec,
    subscribed: IntGaugeVec,
    connections: IntCounterVec,
    errors: IntCounterVec,
    received: IntCounterVec,
    published: IntCounterVec,
}

static METRICS: LazyLock<UpstreamMetrics> = LazyLock::new(|| UpstreamMetrics {
    connected: register_int_gauge_vec!(
        "dc_upstream_connected",
        "Connections to the upstream MQTT broker that are up, by link (consumer, publisher)",
        &["link"]
    )
    .expect("metric registers"),
    subscribed: register_int_gauge_vec!(
        "dc_upstream_subscribed",
        "1 once the broker has granted every subscription of the consumer link on the current connection",
        &["link"]
    )
    .expect("metric registers"),
    connections: register_int_counter_vec!(
        "dc_upstream_connections_total",
        "Connections accepted by the upstream broker (CONNACK), by link",
        &["link"]
    )
    .expect("metric registers"),
    errors: register_int_counter_vec!(
        "dc_upstream_errors_total",
        "Upstream connection errors and refused subscriptions, by link and kind",
        &["link", "kind"]
    )
    .expect("metric registers"),
    received: register_int_counter_vec!(
        "dc_upstream_received_total",
        "Publishes received from the upstream broker, by link",
        &["link"]
    )
    .expect("metric registers"),
    published: register_int_counter_vec!(
        "dc_upstream_published_total",
        "Publishes handed to the upstream broker, by link",
        &["link"]
    )
    .expect("metric registers"),
});

const CONSUMER: &str = "consumer";
const PUBLISHER: &str = "publisher";

/// A running consumer: which connection it is on (the count of CONNACKs so far) and whether it is subscribed.
pub struct Consumer {
    connections: watch::Receiver<u64>,
    subscribed: Arc<AtomicBool>,
}

impl Consumer {
    /// Ticks on every (re)connection.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.connections.clone()
    }

    /// Whether the broker has granted our subscriptions on the current connection.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }
}

/// Subscribes to `filters` (QoS 1) on every connection and runs `on_message` on a thread named `thread_name` for
/// each publish, with the topic as received (see [`device_topic`]); the publish is acknowledged after the callback
/// returns. `persistent`: keep the session (subscriptions and queued publishes) on the broker while we are away.
/// Runs for the life of the process, reconnecting with a one-second pause.
pub fn consume(
    config: &UpstreamConfig,
    filters: Vec<String>,
    persistent: bool,
    thread_name: &str,
    mut on_message: impl FnMut(RawMessage) + Send + 'static,
) -> Result<Consumer, IngestError> {
    if filters.is_empty() {
        return Err(IngestError::Broker("an upstream consumer needs at least one topic filter".into()));
    }
    let mut opts = config.options(&config.client_id, persistent);
    opts.set_manual_acks(true);
    let (client, eventloop) = AsyncClient::new(opts, REQUEST_CAPACITY);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<rumqttc::Publish>(config.queue.max(1));
    let (connections_tx, connections) = watch::channel(0u64);
    let subscribed = Arc::new(AtomicBool::new(false));
    let link = Link {
        name: CONSUMER,
        client: client.clone(),
        filters,
        connections: connections_tx,
        subscribed: Arc::clone(&subscribed),
        incoming: Some(tx),
    };
    spawn_connection(&format!("upstream-{}", config.client_id), eventloop, link)?;
    // The callback's own thread, like the front door's: decoding and rules never run on the connection task.
    let acker = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| IngestError::Broker(format!("starting the upstream ack runtime: {e}")))?;
    std::thread::Builder::new()
        .name(thread_name.to_string())
        .spawn(move || {
            while let Some(publish) = rx.blocking_recv() {
                METRICS.received.with_label_values(&[CONSUMER]).inc();
                on_message(RawMessage { topic: publish.topic.clone(), payload: publish.payload.clone() });
                // Fails only when the connection task is gone, i.e. the process is ending.
                if acker.block_on(client.ack(&publish)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| IngestError::Broker(format!("starting the {thread_name} thread: {e}")))?;
    Ok(Consumer { connections, subscribed })
}

/// Our own publishes to the upstream broker, on a connection of their own (client id `<client id>-pub`).
#[derive(Clone)]
pub struct Publisher {
    client: AsyncClient,
    connections: watch::Receiver<u64>,
    /// For [`Publisher::publish_blocking`] from threads outside any runtime.
    blocking: Arc<tokio::runtime::Runtime>,
}

impl Publisher {
    pub fn start(config: &UpstreamConfig) -> Result<Self, IngestError> {
        let client_id = format!("{}-pub", config.client_id);
        let (client, eventloop) = AsyncClient::new(config.options(&client_id, false), REQUEST_CAPACITY);
        let (connections_tx, connections) = watch::channel(0u64);
        let link = Link {
            name: PUBLISHER,
            client: client.clone(),
            filters: Vec::new(),
            connections: connections_tx,
            subscribed: Arc::new(AtomicBool::new(false)),
            incoming: None,
        };
        spawn_connection(&format!("upstream-{client_id}"), eventloop, link)?;
        let blocking = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| IngestError::Broker(format!("starting the upstream publish runtime: {e}")))?;
        Ok(Self { client, connections, blocking: Arc::new(blocking) })
    }

    /// Ticks on every (re)connection: what was published while the broker was unreachable may be lost (a clean
    /// session), so owners of retained state publish it again.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.connections.clone()
    }

    /// Queues a QoS 1 publish; waits only while the request channel is full (the broker is slow or unreachable).
    pub async fn publish(&self, topic: String, payload: Bytes, retain: bool) -> Result<(), IngestError> {
        self.client
            .publish_bytes(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| IngestError::Broker(format!("upstream publish: {e}")))?;
        METRICS.published.with_label_values(&[PUBLISHER]).inc();
        Ok(())
    }

    /// [`Publisher::publish`] for a plain thread (the pipeline thread). Must not be called inside a runtime.
    pub fn publish_blocking(&self, topic: String, payload: Bytes, retain: bool) -> Result<(), IngestError> {
        self.blocking.block_on(self.publish(topic, payload, retain))
    }
}

struct Link {
    name: &'static str,
    client: AsyncClient,
    filters: Vec<String>,
    connections: watch::Sender<u64>,
    subscribed: Arc<AtomicBool>,
    incoming: Option<tokio::sync::mpsc::Sender<rumqttc::Publish>>,
}

/// Drives one connection's event loop on a thread of its own (a current-thread runtime), so that the broker link
/// neither waits for the app's async workers nor competes with them.
fn spawn_connection(thread: &str, mut eventloop: EventLoop, link: Link) -> Result<(), IngestError> {
    // Every series of this link shows (at zero) before the first event.
    let name = link.name;
    METRICS.connected.with_label_values(&[name]).set(0);
    METRICS.subscribed.with_label_values(&[name]).set(0);
    for m in [&METRICS.connections, &METRICS.received, &METRICS.published] {
        m.with_label_values(&[name]);
    }
    for kind in ["connection", "subscription_refused"] {
        METRICS.errors.with_label_values(&[name, kind]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| IngestError::Broker(format!("starting the upstream runtime: {e}")))?;
    std::thread::Builder::new()
        .name(thread.chars().take(15).collect())
        .spawn(move || runtime.block_on(run_connection(&mut eventloop, link)))
        .map_err(|e| IngestError::Broker(format!("starting the upstream thread: {e}")))?;
    Ok(())
}

async fn run_connection(eventloop: &mut EventLoop, link: Link) {
    let name = link.name;
    let mut up = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                up = true;
                METRICS.connected.with_label_values(&[name]).set(1);
                METRICS.connections.with_label_values(&[name]).inc();
                tracing::info!(link = name, session_present = ack.session_present, "upstream broker connected");
                if !link.filters.is_empty() {
                    // Also with a session present: subscribing again is harmless and covers a broker that lost it.
                    let filters =
                        link.filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if let Err(e) = link.client.try_subscribe_many(filters) {
                        tracing::error!(link = name, error = %e, "upstream subscribe not queued");
                    }
                }
                link.connections.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused = ack.return_codes.iter().filter(|c| matches!(c, SubscribeReasonCode::Failure)).count();
                if refused > 0 {
                    METRICS.errors.with_label_values(&[name, "subscription_refused"]).inc();
                    tracing::error!(link = name, refused, filters = ?link.filters, "the upstream broker refused subscriptions (ACL?)");
                } else {
                    link.subscribed.store(true, Ordering::Relaxed);
                    METRICS.subscribed.with_label_values(&[name]).set(1);
                    tracing::info!(link = name, filters = ?link.filters, "upstream subscriptions granted");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let Some(incoming) = &link.incoming else { continue };
                // Waiting here is the backpressure: unacknowledged publishes stop the broker's in-flight window.
                if incoming.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if up {
                    tracing::warn!(link = name, error = %e, "upstream broker connection lost; reconnecting");
                } else {
                    tracing::warn!(link = name, error = %e, "upstream broker unreachable; retrying");
                }
                up = false;
                link.subscribed.store(false, Ordering::Relaxed);
                METRICS.connected.with_label_values(&[name]).set(0);
                METRICS.subscribed.with_label_values(&[name]).set(0);
                METRICS.errors.with_label_values(&[name, "connection"]).inc();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_or_say_why_not() {
        let c = UpstreamConfig::from_url("mqtt://10.0.0.5:1884", "w1").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("10.0.0.5", 1884));
        let c = UpstreamConfig::from_url("mqtt://broker.internal", "w1").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("broker.internal", 1883));
        let c = UpstreamConfig::from_url("mqtt://[::1]:1885/", "w1").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 1885));
        for (url, why) in [
            ("mqtts://b:8883", "TLS"),
            ("http://b:1883", "unknown scheme"),
            ("b:1883", "expected mqtt://"),
            ("mqtt://b:99999", "port"),
            ("mqtt://user:pw@b:1883", "credentials"),
            ("mqtt://:1883", "empty"),
        ] {
            let e = UpstreamConfig::from_url(url, "w1").unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(url), "{url}: {e}");
        }
        let e = UpstreamConfig::from_url("mqtt://b", "w/1").unwrap_err().to_string();
        assert!(e.contains("client id"), "{e}");
    }

    #[test]
    fn region_topics_round_trip() {
        let t = region_topic("10008", "sensors/RG0001/readings");
        assert_eq!(t, "region/10008/sensors/RG0001/readings");
        assert_eq!(device_topic(&t), (Some("10008"), "sensors/RG0001/readings"));
        assert_eq!(device_topic("sensors/RG0001/status"), (None, "sensors/RG0001/status"));
        assert!(crate::topic::parse(device_topic(&t).1).is_some());
        assert!(is_valid_region("10008") && !is_valid_region("a/b") && !is_valid_region("+") && !is_valid_region(""));
    }
}
