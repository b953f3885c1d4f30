//! The front door: our own MQTT listeners in front of the ingest pipeline (design 2 of `RUMQTTD.md`; the why is in
//! `ingest/FRONT_DOOR.md`).
//!
//! - `mod.rs` (this file): binding the listeners, the accept loops, the once-a-second housekeeping (store reload,
//!   revocation sweep, queue gauge) and the [`FrontDoor`] handle.
//! - [`connection`]: one task per connection — TLS handshake and CONNECT under one deadline, login, the session loop.
//! - [`codec`]: framing on rumqttd's public v4/v5 codecs, plus the few raw-frame reads they do not offer.
//! - [`acl`]: what a device may publish and subscribe to.
//! - [`sessions`]: live sessions (takeover, the per-device cap, revocation, commands to devices).
//! - [`throttle`]: failed password logins per address, logins waiting for argon2 per device id.
//! - [`tls`]: rustls with client certificates from the deployment CA and the revocation list.
//! - [`Intake`] (this file): where accepted publishes go and when their PUBACKs may leave — once queued for the
//!   local pipeline (one process), or once a [`DurableIntake`] says they are replicated (a cluster's front door).
//!
//! The accept loop only accepts: everything that can wait on a peer runs in the connection's own task, so a silent
//! socket or a half-finished TLS handshake holds nothing but itself.

pub mod acl;
pub mod codec;
mod connection;
pub mod sessions;
pub mod throttle;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::broker::BrokerConfig;
use crate::devices::{DeviceStore, LoginRefusal};
use crate::identity::{DataDir, DeploymentCa};
use crate::metrics::METRICS;
use crate::pipeline::RawMessage;
use crate::IngestError;
use codec::ConnackCode;
use sessions::{Command, KickReason, Sessions};
use throttle::{FailedLogins, FailurePolicy, PendingLogins};

/// Why a connection was refused; the `reason` label of `dc_ingest_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownDevice,
    BadPassword,
    Revoked,
    UnknownCertificate,
    /// A plain-listener CONNECT without username and password.
    NoCredentials,
    /// The TLS handshake failed: no client certificate, not from our CA, revoked, or not TLS at all.
    TlsHandshake,
    /// No complete TLS handshake + CONNECT (and, for passwords, their check) within the connect timeout.
    Timeout,
    /// Too many failed password logins from the client's address (IPv6: its /64) lately.
    LoginThrottled,
    /// The device id has `max_pending_logins_per_device` logins waiting for a password check already, or the check
    /// did not start before the connect deadline.
    Busy,
    /// Not MQTT, or a malformed CONNECT.
    Protocol,
    /// An MQTT protocol level we do not speak (MQTT 3.1): CONNACK return code 1.
    UnsupportedVersion,
    /// MQTT 3.1.1: empty client id without a clean session.
    ClientIdRejected,
    /// The last will's topic is not one the device may publish to.
    ForbiddenWill,
    /// MQTT 5 enhanced authentication, which we do not offer.
    BadAuthMethod,
    /// `max_connections` reached.
    Overloaded,
}

impl Refusal {
    pub const ALL: [Refusal; 15] = [
        Refusal::UnknownDevice,
        Refusal::BadPassword,
        Refusal::Revoked,
        Refusal::UnknownCertificate,
        Refusal::NoCredentials,
        Refusal::TlsHandshake,
        Refusal::Timeout,
        Refusal::LoginThrottled,
        Refusal::Busy,
        Refusal::Protocol,
        Refusal::UnsupportedVersion,
        Refusal::ClientIdRejected,
        Refusal::ForbiddenWill,
        Refusal::BadAuthMethod,
        Refusal::Overloaded,
    ];

    pub fn as_label(self) -> &'static str {
        match self {
            Refusal::UnknownDevice => "unknown_device",
            Refusal::BadPassword => "bad_password",
            Refusal::Revoked => "revoked",
            Refusal::UnknownCertificate => "unknown_certificate",
            Refusal::NoCredentials => "no_credentials",
            Refusal::TlsHandshake => "tls_handshake",
            Refusal::Timeout => "timeout",
            Refusal::LoginThrottled => "login_throttled",
            Refusal::Busy => "busy",
            Refusal::Protocol => "protocol",
            Refusal::UnsupportedVersion => "unsupported_version",
            Refusal::ClientIdRejected => "client_id_rejected",
            Refusal::ForbiddenWill => "forbidden_will",
            Refusal::BadAuthMethod => "bad_auth_method",
            Refusal::Overloaded => "overloaded",
        }
    }

    /// The CONNACK a refused client gets, when it got far enough to understand one. Unknown device and wrong
    /// password share "bad user name or password" so that the answer does not reveal which device ids exist.
    pub fn connack(self) -> Option<ConnackCode> {
        match self {
            Refusal::UnknownDevice | Refusal::BadPassword => Some(ConnackCode::BadCredentials),
            Refusal::Revoked | Refusal::UnknownCertificate | Refusal::NoCredentials | Refusal::ForbiddenWill => {
                Some(ConnackCode::NotAuthorized)
            }
            Refusal::ClientIdRejected => Some(ConnackCode::ClientIdRejected),
            Refusal::BadAuthMethod => Some(ConnackCode::BadAuthMethod),
            Refusal::Overloaded => Some(ConnackCode::ServerUnavailable),
            Refusal::LoginThrottled => Some(ConnackCode::RateExceeded),
            Refusal::Busy => Some(ConnackCode::ServerBusy),
            // Sent before the CONNECT is decoded (return code 1) or not at all.
            Refusal::UnsupportedVersion | Refusal::TlsHandshake | Refusal::Timeout | Refusal::Protocol => None,
        }
    }
}

impl From<LoginRefusal> for Refusal {
    fn from(r: LoginRefusal) -> Self {
        match r {
            LoginRefusal::UnknownDevice => Refusal::UnknownDevice,
            LoginRefusal::BadPassword => Refusal::BadPassword,
            LoginRefusal::Revoked => Refusal::Revoked,
            LoginRefusal::UnknownCertificate => Refusal::UnknownCertificate,
        }
    }
}

/// One listening socket's identity.
pub(crate) struct Listener {
    /// `v4-plain`, `v5-plain`, `v4-tls`, `v5-tls` (logs). Either version is accepted on every listener: the CONNECT
    /// says which it speaks; the ports follow `INTERFACE.md`.
    name: &'static str,
    tls: Option<TlsAcceptor>,
}

pub(crate) struct Settings {
    /// Deadline for the TLS handshake, the CONNECT frame and the login (the wait for a password check included).
    connect_timeout: Duration,
    /// Largest packet accepted; bigger ones close the connection (v5: DISCONNECT 0x95).
    max_packet: usize,
}

/// Accepts a batch of publishes durably: the future resolves `true` once every publish of the batch will survive
/// the loss of any one machine, `false` when that could not be had in time. Implemented outside ingest (a cluster's
/// front door appends to a replicated stream, `cluster::readings`); the front door only waits for the answer.
pub trait DurableIntake: Send + Sync + 'static {
    fn accept(&self, batch: Vec<RawMessage>) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>>;
}

/// Where accepted publishes go, and so when a PUBACK may leave: a PUBACK is our promise that the reading is ours now.
#[derive(Clone)]
pub enum Intake {
    /// The local pipeline's bounded queue (one process): acknowledged once queued, as the process's own journals
    /// take it from there.
    Queue(mpsc::Sender<Vec<RawMessage>>),
    /// A replicated log (a cluster's front door): acknowledged only once the log has it. A batch it cannot take in
    /// time closes the connection unacknowledged, so that the device sends it again (to us or another front door).
    Durable(Arc<dyn DurableIntake>),
}

/// What became of a batch handed to the [`Intake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOver {
    Accepted,
    /// The pipeline is gone: the server is stopping.
    Closed,
    /// The durable intake could not take it in time (a cluster without quorum): no PUBACK may leave.
    NotDurable,
}

impl Intake {
    pub(crate) async fn hand_over(&self, batch: Vec<RawMessage>) -> HandOver {
        match self {
            Intake::Queue(queue) => match queue.send(batch).await {
                Ok(()) => HandOver::Accepted,
                Err(_) => HandOver::Closed,
            },
            Intake::Durable(intake) => match intake.accept(batch).await {
                true => HandOver::Accepted,
                false => HandOver::NotDurable,
            },
        }
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    settings: Settings,
    devices: Arc<DeviceStore>,
    sessions: Sessions,
    /// Where accepted publishes go: the bounded queue into the pipeline (one entry per read, a batch of publishes),
    /// or a durable intake.
    intake: Intake,
    /// Logins waiting for the argon2 thread at once (each holds a blocking thread while it waits).
    auth_slots: Arc<Semaphore>,
    /// Failed logins per address ([`throttle`]).
    failed_logins: Mutex<FailedLogins>,
    /// Logins waiting for a password check, per device id ([`throttle`]).
    pending_logins: Arc<PendingLogins>,
    /// Connections open at once (`max_connections`).
    connection_slots: Arc<Semaphore>,
    /// The slots' number, to tell how many are taken.
    max_connections: usize,
}

/// Where the listeners are bound (useful with port 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenAddrs {
    pub v4: Option<SocketAddr>,
    pub v5: Option<SocketAddr>,
    pub v4_tls: Option<SocketAddr>,
    pub v5_tls: Option<SocketAddr>,
}

/// The running front door. Dropping it stops the listeners and closes every connection.
pub struct FrontDoor {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    addrs: ListenAddrs,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor").field("addrs", &self.addrs).finish_non_exhaustive()
    }
}

/// Why a command was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("`{topic}` is not a command topic of device `{device}` (devices/{device}/…)")]
    NotACommandTopic { device: String, topic: String },
}

/// argon2 runs on one thread anyway; a couple of waiters keep it busy without parking many blocking threads.
const AUTH_WAITERS: usize = 2;

/// Addresses whose failed logins are remembered at once; past it the fully refilled ones are forgotten first.
const MAX_THROTTLED_NETWORKS: usize = 100_000;

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, IngestError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| IngestError::Broker(format!("cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| IngestError::Broker(format!("{addr}: {e}")))?;
    Ok(listener)
}

impl FrontDoor {
    /// Binds the configured listeners (synchronously: a busy port is a start error, and the ports accept the moment
    /// this returns) and starts serving them on a runtime of its own. Allowed publishes go to `pipeline`.
    pub fn start(
        config: &BrokerConfig,
        devices: Arc<DeviceStore>,
        pipeline: mpsc::Sender<Vec<RawMessage>>,
    ) -> Result<FrontDoor, IngestError> {
        Self::start_with_intake(config, devices, Intake::Queue(pipeline))
    }

    /// [`FrontDoor::start`] with allowed publishes going to `intake` (and PUBACKs waiting for it).
    pub fn start_with_intake(
        config: &BrokerConfig,
        devices: Arc<DeviceStore>,
        intake: Intake,
    ) -> Result<FrontDoor, IngestError> {
        let mut bound = Vec::new();
        let mut addrs = ListenAddrs::default();
        for (addr, name, slot) in
            [(config.v4_listen, "v4-plain", &mut addrs.v4), (config.v5_listen, "v5-plain", &mut addrs.v5)]
        {
            if let Some(addr) = addr {
                let l = bind(addr)?;
                *slot = l.local_addr().ok();
                bound.push((l, Listener { name, tls: None }));
            }
        }
        if config.v4_tls_listen.is_some() || config.v5_tls_listen.is_some() {
            let acceptor = tls_acceptor(config, &devices)?;
            for (addr, name, slot) in [
                (config.v4_tls_listen, "v4-tls", &mut addrs.v4_tls),
                (config.v5_tls_listen, "v5-tls", &mut addrs.v5_tls),
            ] {
                if let Some(addr) = addr {
                    let l = bind(addr)?;
                    *slot = l.local_addr().ok();
                    bound.push((l, Listener { name, tls: Some(acceptor.clone()) }));
                }
            }
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.io_threads.max(1))
            .thread_name("mqtt-io")
            .enable_all()
            .build()
            .map_err(|e| IngestError::Broker(format!("starting the MQTT runtime: {e}")))?;
        let shared = Arc::new(Shared {
            settings: Settings {
                connect_timeout: config.connect_timeout,
                max_packet: config.max_payload_bytes.saturating_add(1024),
            },
            devices,
            sessions: Sessions::new(config.max_sessions_per_device),
            intake,
            auth_slots: Arc::new(Semaphore::new(AUTH_WAITERS)),
            failed_logins: Mutex::new(FailedLogins::new(
                FailurePolicy { burst: config.failed_login_burst, refill: config.failed_login_refill },
                MAX_THROTTLED_NETWORKS,
            )),
            pending_logins: PendingLogins::new(config.max_pending_logins_per_device),
            connection_slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            max_connections: config.max_connections.max(1),
        });
        {
            let _context = runtime.enter();
            for (std_listener, listener) in bound {
                let name = listener.name;
                let listener_addr = std_listener.local_addr().ok();
                let tokio_listener =
                    TcpListener::from_std(std_listener).map_err(|e| IngestError::Broker(format!("{name}: {e}")))?;
                tracing::info!(listener = name, addr = ?listener_addr, "MQTT listening");
                runtime.spawn(accept_loop(tokio_listener, Arc::new(listener), Arc::clone(&shared)));
            }
            runtime.spawn(housekeeping(Arc::clone(&shared)));
        }
        Ok(FrontDoor { runtime: Some(runtime), shared, addrs })
    }

    pub fn local_addrs(&self) -> ListenAddrs {
        self.addrs
    }

    /// Sends a command (QoS 0) to every session of `device_id` subscribed to a matching filter; returns how many.
    /// The topic must be one of the device's own command topics (`devices/{id}/…`).
    pub fn send_command(&self, device_id: &str, topic: &str, payload: impl Into<Bytes>) -> Result<usize, CommandError> {
        if !acl::is_command_topic(device_id, topic) {
            return Err(CommandError::NotACommandTopic { device: device_id.to_string(), topic: topic.to_string() });
        }
        let command = Command { topic: Bytes::copy_from_slice(topic.as_bytes()), payload: payload.into() };
        Ok(self.shared.sessions.send_command(device_id, &command))
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.count()
    }

    /// Connections accepted and not yet closed, logged in or not (what `max_connections` bounds).
    pub fn open_connections(&self) -> usize {
        self.shared.max_connections - self.shared.connection_slots.available_permits()
    }

    pub fn is_connected(&self, device_id: &str) -> bool {
        self.shared.sessions.is_connected(device_id)
    }

    /// Closes every session (v5 clients get DISCONNECT 0x8B), then stops. Wills are not published.
    pub fn shutdown(mut self) {
        self.shared.sessions.kick_all(KickReason::Shutdown);
        std::thread::sleep(Duration::from_millis(100));
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // `shutdown_background` is the one way to stop a runtime that is allowed inside another's async context.
            rt.shutdown_background();
        }
    }
}

fn tls_acceptor(config: &BrokerConfig, devices: &Arc<DeviceStore>) -> Result<TlsAcceptor, IngestError> {
    let Some(dir) = &config.data_dir else {
        return Err(IngestError::Broker("the TLS listeners need `data_dir` (it holds the deployment CA)".into()));
    };
    let (cert, key) = crate::identity::server_certificate(
        dir,
        &config.tls_server_names,
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
    )?;
    let dir = DataDir::new(dir);
    // The CA exists now either way: device certificates chain to it, whoever signed the server's.
    DeploymentCa::load_or_create(&dir)?;
    tls::acceptor(&dir.ca_cert(), &cert, &key, Arc::clone(devices))
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Listener>, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(slot) = Arc::clone(&shared.connection_slots).try_acquire_owned() else {
                    // Counted, not logged: an overload is exactly when a log line per connection hurts.
                    METRICS.logins_refused.with_label_values(&[Refusal::Overloaded.as_label()]).inc();
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection::serve(stream, peer, Arc::clone(&ctx), Arc::clone(&shared), slot));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin on the error.
                tracing::warn!(listener = ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Once a second: pick up device-store changes made by other processes (the `device` CLI), close sessions the store
/// no longer allows, and publish the pipeline queue's depth.
async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = shared.devices.generation();
    loop {
        tick.tick().await;
        let devices = Arc::clone(&shared.devices);
        match tokio::task::spawn_blocking(move || devices.refresh()).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "device store reload failed; keeping the previous state"),
            Ok(Ok(true)) => tracing::info!("device store reloaded"),
            _ => {}
        }
        let generation = shared.devices.generation();
        if generation != seen {
            seen = generation;
            let closed =
                shared.sessions.sweep(|device, credential| shared.devices.session_still_valid(device, credential));
            if closed > 0 {
                tracing::info!(sessions = closed, "closing sessions the device store no longer allows");
            }
        }
        if let Intake::Queue(queue) = &shared.intake {
            METRICS.queue_batches.set((queue.max_capacity() - queue.capacity()) as i64);
        }
    }
}
