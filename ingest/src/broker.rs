//! The embedded rumqttd broker and the local link that feeds the ingest pipeline.
//!
//! rumqttd runs its router and listeners on threads of its own (`Broker::start` blocks forever). We subscribe one
//! local link to the sensor topics and hand every publish to a callback on that link's thread.
//!
//! The message log is sized on purpose: rumqttd keeps `max_segment_size × max_segment_count` bytes per filter in
//! memory, so a flood of readings costs at most that much (upstream #1001 reports unbounded growth otherwise).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};

use crate::devices::DeviceStore;
use crate::metrics::METRICS;
use crate::pipeline::RawMessage;
use crate::IngestError;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// MQTT 3.1.1 listener (plain).
    pub v4_listen: Option<SocketAddr>,
    /// MQTT 5 listener (plain).
    pub v5_listen: Option<SocketAddr>,
    /// Payloads above this are dropped by the broker itself (with the connection); keep it above the ingest limit so
    /// that moderately oversized payloads reach the pipeline and are refused there with a reason and a counter.
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    pub segment_bytes: usize,
    pub segment_count: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            v4_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            v5_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1884))),
            max_payload_bytes: 256 * 1024,
            max_connections: 20_000,
            segment_bytes: 4 * 1024 * 1024,
            segment_count: 4,
        }
    }
}

/// Filters the ingest link subscribes to: plain topics and the tenant-prefixed form used on TLS listeners.
const SENSOR_FILTERS: [&str; 4] =
    ["sensors/+/readings", "sensors/+/status", "/tenants/+/sensors/+/readings", "/tenants/+/sensors/+/status"];

fn connection_settings(config: &BrokerConfig, devices: &Arc<DeviceStore>) -> ConnectionSettings {
    let mut settings = ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: config.max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let devices = Arc::clone(devices);
    settings.set_auth_handler(move |_client_id, username: String, password: String| {
        let devices = Arc::clone(&devices);
        async move {
            // argon2 is deliberately slow; keep it off the listener's single-threaded runtime.
            let verdict = tokio::task::spawn_blocking(move || devices.verify(&username, &password).map_err(|r| (r, username)))
                .await;
            match verdict {
                Ok(Ok(())) => {
                    METRICS.logins_accepted.inc();
                    true
                }
                Ok(Err((refusal, username))) => {
                    METRICS.logins_refused.with_label_values(&[refusal.as_label()]).inc();
                    tracing::warn!(device = %username.chars().take(64).collect::<String>(), reason = refusal.as_label(), "MQTT login refused");
                    false
                }
                Err(_) => false,
            }
        }
    });
    settings
}

fn server(name: &str, listen: SocketAddr, connections: ConnectionSettings) -> ServerSettings {
    ServerSettings { name: name.into(), listen, tls: None, next_connection_delay_ms: 0, connections }
}

/// Starts the broker and the ingest link. `on_message` runs on the link's own thread for every sensor publish.
pub fn start(
    config: &BrokerConfig,
    devices: Arc<DeviceStore>,
    mut on_message: impl FnMut(RawMessage) + Send + 'static,
) -> Result<(), IngestError> {
    // rumqttd logs a failed bind on its own thread and carries on without the listener; check first so that a busy
    // port is a clear startup error instead.
    for addr in [config.v4_listen, config.v5_listen].into_iter().flatten() {
        TcpListener::bind(addr).map_err(|e| IngestError::Broker(format!("cannot listen on {addr}: {e}")))?;
    }
    let connections = connection_settings(config, &devices);
    let mut v4 = HashMap::new();
    if let Some(addr) = config.v4_listen {
        v4.insert("v4-plain".to_string(), server("v4-plain", addr, connections.clone()));
    }
    let mut v5 = HashMap::new();
    if let Some(addr) = config.v5_listen {
        v5.insert("v5-plain".to_string(), server("v5-plain", addr, connections));
    }
    let broker_config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: config.segment_bytes,
            max_segment_count: config.segment_count,
            ..RouterConfig::default()
        },
        v4: (!v4.is_empty()).then_some(v4),
        v5: (!v5.is_empty()).then_some(v5),
        ..Config::default()
    };
    let mut broker = Broker::new(broker_config);
    let (mut link_tx, mut link_rx) = broker.link("ingest").map_err(|e| IngestError::Broker(e.to_string()))?;
    for filter in SENSOR_FILTERS {
        link_tx.subscribe(filter).map_err(|e| IngestError::Broker(e.to_string()))?;
    }
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "MQTT broker stopped");
            }
        })
        .map_err(|e| IngestError::Broker(e.to_string()))?;
    std::thread::Builder::new()
        .name("ingest-link".into())
        .spawn(move || {
            // The link keeps `link_tx` alive: dropping it would unsubscribe us.
            let _link_tx = link_tx;
            loop {
                match link_rx.recv() {
                    Ok(Some(Notification::Forward(forward))) => {
                        let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                        on_message(RawMessage { topic, payload: forward.publish.payload });
                    }
                    Ok(Some(Notification::Unschedule)) => {
                        // The router parks a link whose queue it filled; say we are ready or delivery stops.
                        if link_rx.ready().is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "ingest link closed");
                        break;
                    }
                }
            }
        })
        .map_err(|e| IngestError::Broker(e.to_string()))?;
    Ok(())
}
