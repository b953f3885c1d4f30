//! The MQTT side of ingest: [`BrokerConfig`], and [`start`] / [`start_front_door`], which open the listeners
//! ([`crate::front_door`]) and run the pipeline callback on a thread of its own.
//!
//! Readings cross exactly one queue between the socket and the callback: a bounded channel of per-read batches. The
//! callback runs on the `ingest-link` thread (synchronously: decode → validate → rules in the binary), so the async
//! workers never wait on it, and a slow callback fills the queue and pushes back on the devices through TCP instead of
//! growing memory. There is no broker message log to size any more (rumqttd's router is not in the path); memory under
//! a flood is bounded by `queue_batches` × one read (64 KiB) plus the per-connection buffers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::devices::DeviceStore;
use crate::front_door::FrontDoor;
use crate::pipeline::RawMessage;
use crate::IngestError;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Plain listener for MQTT 3.1.1 devices (1883). Username = device id, password from the device store.
    pub v4_listen: Option<SocketAddr>,
    /// Plain listener for MQTT 5 devices (1884).
    pub v5_listen: Option<SocketAddr>,
    /// TLS listener with device client certificates, MQTT 3.1.1 (8883). Needs `data_dir`.
    pub v4_tls_listen: Option<SocketAddr>,
    /// TLS listener with device client certificates, MQTT 5 (8884). Needs `data_dir`.
    pub v5_tls_listen: Option<SocketAddr>,
    /// The server's data dir: the deployment CA lives in `<data_dir>/pki` (see [`crate::identity::DataDir`]).
    pub data_dir: Option<PathBuf>,
    /// Names (DNS or IP) the TLS server certificate is issued for when `tls_cert`/`tls_key` are not given.
    pub tls_server_names: Vec<String>,
    /// An operator-supplied server certificate chain and key (PEM) instead of one from the deployment CA.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Publishes above this (plus 1 KiB of headers) close the connection; keep it above the ingest limit so that
    /// moderately oversized payloads reach the pipeline and are refused there with a reason and a counter.
    pub max_payload_bytes: usize,
    /// Connections open at once; further ones are closed on accept and counted (`reason="overloaded"`).
    pub max_connections: usize,
    /// Deadline for the TLS handshake, the CONNECT packet and the login (password checks included: a login still
    /// waiting for the argon2 thread then is refused "server busy").
    pub connect_timeout: Duration,
    /// Failed logins (unknown device, wrong password) an address (IPv6: a /64) may have at once; past it its logins
    /// are refused before any check (`reason="login_throttled"`) until the bucket refills.
    pub failed_login_burst: u32,
    /// One more failed login allowed per this long.
    pub failed_login_refill: Duration,
    /// Logins of one device id waiting for the argon2 check at once; more are refused "server busy"
    /// (`reason="busy"`), so that a flood aimed at one device cannot take every device's turn.
    pub max_pending_logins_per_device: usize,
    /// Sessions one device may have open at once (different client ids; the same client id takes its old session
    /// over). A further session closes the device's oldest (v5: DISCONNECT 0x97), so a device reconnecting with
    /// fresh client ids is never locked out by its own half-dead sessions.
    pub max_sessions_per_device: usize,
    /// Capacity of the queue into the pipeline, in batches (one batch = the publishes of one socket read).
    pub queue_batches: usize,
    /// Worker threads of the front door's own tokio runtime. (argon2 password checks run on one thread of their
    /// own besides: see [`crate::devices`].)
    pub io_threads: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            v4_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            v5_listen: Some(SocketAddr::from(([127, 0, 0, 1], 1884))),
            // Off unless configured: they need a data dir, and tests run many servers side by side.
            v4_tls_listen: None,
            v5_tls_listen: None,
            data_dir: None,
            tls_server_names: vec!["localhost".into(), "127.0.0.1".into()],
            tls_cert: None,
            tls_key: None,
            max_payload_bytes: 256 * 1024,
            max_connections: 20_000,
            connect_timeout: Duration::from_secs(10),
            // Ten wrong passwords at once, then one a minute: a device with a typo is told at once, a guesser gets
            // ~1,400 tries a day per address instead of ~40 a second.
            failed_login_burst: 10,
            failed_login_refill: Duration::from_secs(60),
            max_pending_logins_per_device: 2,
            max_sessions_per_device: 4,
            queue_batches: 1024,
            io_threads: 2,
        }
    }
}

/// Starts the front door and the pipeline thread; `on_message` runs on the `ingest-link` thread for every allowed
/// publish (and every last will). Runs for the life of the process.
pub fn start(
    config: &BrokerConfig,
    devices: Arc<DeviceStore>,
    on_message: impl FnMut(RawMessage) + Send + 'static,
) -> Result<(), IngestError> {
    let front_door = start_front_door(config, devices, on_message)?;
    // The binary has no use for the handle and the listeners must live as long as the process.
    std::mem::forget(front_door);
    Ok(())
}

/// The front door alone, its allowed publishes going to a durable intake (a cluster's replicated log) and their
/// PUBACKs waiting for it: no pipeline thread, the intake is the pipeline. Returns the handle.
pub fn start_durable_front_door(
    config: &BrokerConfig,
    devices: Arc<DeviceStore>,
    intake: Arc<dyn crate::front_door::DurableIntake>,
) -> Result<FrontDoor, IngestError> {
    FrontDoor::start_with_intake(config, devices, crate::front_door::Intake::Durable(intake))
}

/// [`start`], returning the handle: bound addresses (port 0 works), commands to devices, shutdown.
pub fn start_front_door(
    config: &BrokerConfig,
    devices: Arc<DeviceStore>,
    mut on_message: impl FnMut(RawMessage) + Send + 'static,
) -> Result<FrontDoor, IngestError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<RawMessage>>(config.queue_batches.max(1));
    let front_door = FrontDoor::start(config, devices, tx)?;
    std::thread::Builder::new()
        .name("ingest-link".into())
        .spawn(move || {
            // Ends when the front door stops (every sender dropped).
            while let Some(batch) = rx.blocking_recv() {
                for message in batch {
                    on_message(message);
                }
            }
        })
        .map_err(|e| IngestError::Broker(format!("starting the ingest thread: {e}")))?;
    Ok(front_door)
}
