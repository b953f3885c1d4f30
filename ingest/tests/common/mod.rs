//! Helpers for black-box tests of the front door: start it in-process on free 127.0.0.1 ports with a fresh data dir,
//! provision devices, and talk to it with real MQTT clients (rumqttc v4 and v5, plain and TLS) or with a raw socket
//! client when a test needs the exact bytes (return codes, half-sent packets).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use ingest::broker::{start_front_door, BrokerConfig};
use ingest::devices::DeviceStore;
use ingest::front_door::FrontDoor;
use ingest::identity::{provision_with, DataDir, DeploymentCa, Provisioned};
use ingest::RawMessage;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The four device-facing listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    V4,
    V5,
    V4Tls,
    V5Tls,
}

impl Door {
    pub const ALL: [Door; 4] = [Door::V4, Door::V5, Door::V4Tls, Door::V5Tls];

    pub fn tls(self) -> bool {
        matches!(self, Door::V4Tls | Door::V5Tls)
    }

    pub fn v5(self) -> bool {
        matches!(self, Door::V5 | Door::V5Tls)
    }

    /// The CONNACK code for a refused password login.
    pub fn bad_credentials(self) -> u8 {
        if self.v5() {
            0x86
        } else {
            4
        }
    }

    pub fn not_authorized(self) -> u8 {
        if self.v5() {
            0x87
        } else {
            5
        }
    }

    /// What a refused subscription looks like on the wire.
    pub fn sub_refused(self) -> u8 {
        if self.v5() {
            0x87
        } else {
            0x80
        }
    }
}

pub const A: &str = "RG0001";
pub const B: &str = "RG0002";
pub const C: &str = "TM0001";

pub struct Harness {
    pub front_door: FrontDoor,
    pub dir: tempfile::TempDir,
    pub data: DataDir,
    pub devices: Arc<DeviceStore>,
    pub ca: DeploymentCa,
    pub provisioned: HashMap<String, Provisioned>,
    received: Mutex<mpsc::Receiver<RawMessage>>,
}

impl Harness {
    pub fn start() -> Harness {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut BrokerConfig)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::new(dir.path());
        let devices = Arc::new(DeviceStore::open(&data.devices_file()).expect("device store"));
        let ca = DeploymentCa::load_or_create(&data).expect("deployment CA");
        let mut provisioned = HashMap::new();
        for id in [A, B, C] {
            let p = provision_with(&ca, &devices, &data, id, now_ms()).expect("provisioned");
            provisioned.insert(id.to_string(), p);
        }
        let local = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = BrokerConfig {
            v4_listen: Some(local),
            v5_listen: Some(local),
            v4_tls_listen: Some(local),
            v5_tls_listen: Some(local),
            data_dir: Some(dir.path().to_path_buf()),
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        let (tx, rx) = mpsc::channel();
        let front_door = start_front_door(&config, Arc::clone(&devices), move |msg| {
            let _ = tx.send(msg);
        })
        .expect("front door starts");
        Harness { front_door, dir, data, devices, ca, provisioned, received: Mutex::new(rx) }
    }

    pub fn addr(&self, door: Door) -> SocketAddr {
        let a = self.front_door.local_addrs();
        match door {
            Door::V4 => a.v4,
            Door::V5 => a.v5,
            Door::V4Tls => a.v4_tls,
            Door::V5Tls => a.v5_tls,
        }
        .expect("listener bound")
    }

    pub fn password(&self, device: &str) -> String {
        self.provisioned[device].password.clone()
    }

    /// The credentials a device uses on `door`.
    pub fn auth(&self, door: Door, device: &str) -> Auth {
        if door.tls() {
            let p = &self.provisioned[device];
            Auth::Cert { cert: p.cert_path.clone(), key: p.key_path.clone() }
        } else {
            Auth::Password { username: device.to_string(), password: self.password(device) }
        }
    }

    /// The next message that reached the pipeline callback.
    pub fn next_message(&self, within: Duration) -> Option<RawMessage> {
        self.received.lock().recv_timeout(within).ok()
    }

    /// Everything that reaches the pipeline within `wait`.
    pub fn drain(&self, wait: Duration) -> Vec<RawMessage> {
        let rx = self.received.lock();
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(m) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            out.push(m);
        }
        out
    }

    /// A TLS client configuration trusting our CA and presenting `cert`/`key` (if given).
    pub fn tls_client(&self, client_auth: Option<(&PathBuf, &PathBuf)>) -> Arc<ClientConfig> {
        client_tls(&self.data.ca_cert(), client_auth)
    }
}

pub fn client_tls(ca: &std::path::Path, client_auth: Option<(&PathBuf, &PathBuf)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("CA added");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match client_auth {
        Some((cert, key)) => {
            let chain =
                CertificateDer::pem_file_iter(cert).expect("cert").collect::<Result<Vec<_>, _>>().expect("certs");
            let key = PrivateKeyDer::from_pem_file(key).expect("key");
            builder.with_client_auth_cert(chain, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Polls `ok` until it holds, for at most 20 s (generous: CI is a loaded 2-core machine); panics naming `what`. Tests
/// wait on the condition they need, never for a fixed time.
pub async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let within = Duration::from_secs(20);
    let deadline = std::time::Instant::now() + within;
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn reading(value: f64) -> String {
    format!(r#"{{"ts":{},"values":{{"rain_mm":{value}}}}}"#, now_ms())
}

// ---------------------------------------------------------------------------------------------------------------
// rumqttc (v4 and v5) behind one small interface.

#[derive(Debug, Clone)]
pub enum Auth {
    Password {
        username: String,
        password: String,
    },
    Cert {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Neither (or, on TLS, no client certificate).
    Nothing,
}

/// What a client saw, with the codes as they are on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    ConnAck(u8),
    PubAck {
        pkid: u16,
        reason: u8,
    },
    SubAck(Vec<u8>),
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// The connection failed or closed (rumqttc's error text).
    Closed(String),
}

#[derive(Debug, Clone)]
pub struct ClientOpts {
    pub client_id: String,
    pub auth: Auth,
    pub keep_alive: Duration,
    pub will: Option<(String, Vec<u8>)>,
}

impl ClientOpts {
    pub fn new(client_id: &str, auth: Auth) -> Self {
        ClientOpts { client_id: client_id.to_string(), auth, keep_alive: Duration::from_secs(30), will: None }
    }
}

enum Inner {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub struct Client {
    inner: Inner,
    pub events: tokio::sync::mpsc::UnboundedReceiver<Ev>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a connect did not give a session.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectFailure {
    /// A CONNACK with this (wire) code.
    Refused(u8),
    /// No CONNACK: TLS failure, closed socket, timeout.
    Failed(String),
}

fn v4_code(code: rumqttc::ConnectReturnCode) -> u8 {
    use rumqttc::ConnectReturnCode as R;
    match code {
        R::Success => 0,
        R::RefusedProtocolVersion => 1,
        R::BadClientId => 2,
        R::ServiceUnavailable => 3,
        R::BadUserNamePassword => 4,
        R::NotAuthorized => 5,
    }
}

fn v5_code(code: rumqttc::v5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as R;
    match code {
        R::Success => 0,
        R::UnsupportedProtocolVersion => 0x84,
        R::ClientIdentifierNotValid => 0x85,
        R::BadUserNamePassword => 0x86,
        R::NotAuthorized => 0x87,
        R::ServerUnavailable => 0x88,
        R::BadAuthenticationMethod => 0x8C,
        other => panic!("unexpected v5 CONNACK {other:?}"),
    }
}

impl Client {
    pub async fn connect(h: &Harness, door: Door, opts: ClientOpts) -> Result<Client, ConnectFailure> {
        let addr = h.addr(door);
        let tls = door.tls().then(|| match &opts.auth {
            Auth::Cert { cert, key } => h.tls_client(Some((cert, key))),
            _ => h.tls_client(None),
        });
        Self::connect_to(addr, door.v5(), tls, opts).await
    }

    pub async fn connect_to(
        addr: SocketAddr,
        v5: bool,
        tls: Option<Arc<ClientConfig>>,
        opts: ClientOpts,
    ) -> Result<Client, ConnectFailure> {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let host = addr.ip().to_string();
        let (inner, task) = if v5 {
            use rumqttc::v5::mqttbytes::v5::Packet as P;
            use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode as S};
            let mut o = rumqttc::v5::MqttOptions::new(&opts.client_id, host, addr.port());
            o.set_keep_alive(opts.keep_alive.max(Duration::from_secs(5)));
            if let Auth::Password { username, password } = &opts.auth {
                o.set_credentials(username, password);
            }
            if let Some(cfg) = tls {
                o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(cfg)));
            }
            if let Some((topic, payload)) = &opts.will {
                o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
                    topic,
                    payload.clone(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    None,
                ));
            }
            let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 1000);
            let task = tokio::spawn(async move {
                loop {
                    let ev = match el.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(p)) => match p {
                            P::ConnAck(c) => Ev::ConnAck(v5_code(c.code)),
                            P::PubAck(a) => Ev::PubAck {
                                pkid: a.pkid,
                                reason: if a.reason == PubAckReason::NotAuthorized { 0x87 } else { 0 },
                            },
                            P::SubAck(s) => Ev::SubAck(
                                s.return_codes
                                    .iter()
                                    .map(|c| match c {
                                        S::Success(q) => *q as u8,
                                        S::NotAuthorized => 0x87,
                                        S::TopicFilterInvalid => 0x8F,
                                        _ => 0x80,
                                    })
                                    .collect(),
                            ),
                            P::Publish(p) => Ev::Publish {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                            },
                            _ => continue,
                        },
                        Ok(_) => continue,
                        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
                            let _ = tx.send(Ev::ConnAck(v5_code(code)));
                            break;
                        }
                        Err(e) => {
                            let _ = tx.send(Ev::Closed(e.to_string()));
                            break;
                        }
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            });
            (Inner::V5(client), task)
        } else {
            use rumqttc::{Packet as P, SubscribeReasonCode as S};
            let mut o = rumqttc::MqttOptions::new(&opts.client_id, host, addr.port());
            o.set_keep_alive(opts.keep_alive);
            if let Auth::Password { username, password } = &opts.auth {
                o.set_credentials(username, password);
            }
            if let Some(cfg) = tls {
                o.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(cfg)));
            }
            if let Some((topic, payload)) = &opts.will {
                o.set_last_will(rumqttc::LastWill::new(topic, payload.clone(), rumqttc::QoS::AtLeastOnce, false));
            }
            let (client, mut el) = rumqttc::AsyncClient::new(o, 1000);
            let task = tokio::spawn(async move {
                loop {
                    let ev = match el.poll().await {
                        Ok(rumqttc::Event::Incoming(p)) => match p {
                            P::ConnAck(c) => Ev::ConnAck(v4_code(c.code)),
                            P::PubAck(a) => Ev::PubAck { pkid: a.pkid, reason: 0 },
                            P::SubAck(s) => Ev::SubAck(
                                s.return_codes
                                    .iter()
                                    .map(|c| match c {
                                        S::Success(q) => *q as u8,
                                        S::Failure => 0x80,
                                    })
                                    .collect(),
                            ),
                            P::Publish(p) => Ev::Publish { topic: p.topic.clone(), payload: p.payload.to_vec() },
                            _ => continue,
                        },
                        Ok(_) => continue,
                        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                            let _ = tx.send(Ev::ConnAck(v4_code(code)));
                            break;
                        }
                        Err(e) => {
                            let _ = tx.send(Ev::Closed(e.to_string()));
                            break;
                        }
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            });
            (Inner::V4(client), task)
        };
        let mut client = Client { inner, events, task };
        match client.next(Duration::from_secs(10)).await {
            Some(Ev::ConnAck(0)) => Ok(client),
            Some(Ev::ConnAck(code)) => Err(ConnectFailure::Refused(code)),
            Some(other) => Err(ConnectFailure::Failed(format!("{other:?}"))),
            None => Err(ConnectFailure::Failed("no CONNACK within 10 s".into())),
        }
    }

    pub async fn next(&mut self, within: Duration) -> Option<Ev> {
        tokio::time::timeout(within, self.events.recv()).await.ok().flatten()
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        let payload = payload.into();
        match &self.inner {
            Inner::V4(c) => c.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.expect("queued"),
            Inner::V5(c) => {
                c.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, payload).await.expect("queued")
            }
        }
    }

    pub async fn subscribe(&self, filter: &str) {
        match &self.inner {
            Inner::V4(c) => c.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.expect("queued"),
            Inner::V5(c) => c.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.expect("queued"),
        }
    }

    pub async fn disconnect(&self) {
        match &self.inner {
            Inner::V4(c) => c.disconnect().await.expect("queued"),
            Inner::V5(c) => c.disconnect().await.expect("queued"),
        }
    }

    /// Waits for the next event of a kind, skipping others.
    pub async fn expect<T>(&mut self, within: Duration, mut pick: impl FnMut(Ev) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let ev = self.next(left).await?;
            if let Some(t) = pick(ev) {
                return Some(t);
            }
        }
    }

    pub async fn puback(&mut self) -> u8 {
        self.expect(Duration::from_secs(10), |e| match e {
            Ev::PubAck { reason, .. } => Some(reason),
            _ => None,
        })
        .await
        .expect("a PUBACK")
    }

    pub async fn suback(&mut self) -> Vec<u8> {
        self.expect(Duration::from_secs(10), |e| match e {
            Ev::SubAck(codes) => Some(codes),
            _ => None,
        })
        .await
        .expect("a SUBACK")
    }

    /// Any publish from the server within `within`.
    pub async fn publish_received(&mut self, within: Duration) -> Option<(String, Vec<u8>)> {
        self.expect(within, |e| match e {
            Ev::Publish { topic, payload } => Some((topic, payload)),
            _ => None,
        })
        .await
    }

    /// Drops the connection without a DISCONNECT (a device losing power).
    pub fn kill(self) {
        self.task.abort();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A raw MQTT client, written independently of the server's codec, for exact bytes.

pub trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}

pub struct Raw {
    pub io: Box<dyn RawIo>,
    buf: Vec<u8>,
    pub v5: bool,
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

pub fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![byte1];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// A CONNECT packet.
pub fn connect_packet(
    v5: bool,
    client_id: &str,
    login: Option<(&str, &str)>,
    keep_alive: u16,
    will: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.push(if v5 { 5 } else { 4 });
    let mut flags = 0x02;
    if will.is_some() {
        flags |= 0x04 | 0x08; // will, QoS 1
    }
    if login.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if v5 {
        body.push(0);
    }
    string(client_id.as_bytes(), &mut body);
    if let Some((topic, payload)) = will {
        if v5 {
            body.push(0);
        }
        string(topic.as_bytes(), &mut body);
        string(payload, &mut body);
    }
    if let Some((u, p)) = login {
        string(u.as_bytes(), &mut body);
        string(p.as_bytes(), &mut body);
    }
    frame(0x10, &body)
}

pub fn publish_packet(v5: bool, topic: &str, payload: &[u8], qos: u8, pkid: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(topic.as_bytes(), &mut body);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1), &body)
}

pub fn subscribe_packet(v5: bool, pkid: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    for f in filters {
        string(f.as_bytes(), &mut body);
        body.push(1);
    }
    frame(0x82, &body)
}

impl Raw {
    /// A raw client on a socket the test opened itself (from a chosen address, say).
    pub fn from_stream(stream: TcpStream, v5: bool) -> Raw {
        let _ = stream.set_nodelay(true);
        Raw { io: Box::new(stream), buf: Vec::new(), v5 }
    }

    pub async fn open(h: &Harness, door: Door, client_cert: Option<&str>) -> std::io::Result<Raw> {
        let stream = TcpStream::connect(h.addr(door)).await?;
        stream.set_nodelay(true)?;
        let io: Box<dyn RawIo> = if door.tls() {
            let auth = client_cert.map(|d| {
                let p = &h.provisioned[d];
                (p.cert_path.clone(), p.key_path.clone())
            });
            let config = h.tls_client(auth.as_ref().map(|(c, k)| (c, k)));
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = ServerName::try_from("localhost").expect("name").to_owned();
            Box::new(connector.connect(name, stream).await?)
        } else {
            Box::new(stream)
        };
        Ok(Raw { io, buf: Vec::new(), v5: door.v5() })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// The next packet as (first byte, body); `None` on close or timeout.
    pub async fn read(&mut self, within: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some((b1, len, header)) = parse_header(&self.buf) {
                if self.buf.len() >= header + len {
                    let body = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((b1, body));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await.ok()?.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends CONNECT and returns the CONNACK code (`None`: closed without one).
    pub async fn connect(
        &mut self,
        client_id: &str,
        login: Option<(&str, &str)>,
        keep_alive: u16,
        will: Option<(&str, &[u8])>,
    ) -> Option<u8> {
        self.send(&connect_packet(self.v5, client_id, login, keep_alive, will)).await.ok()?;
        let (b1, body) = self.read(Duration::from_secs(10)).await?;
        assert_eq!(b1 >> 4, 2, "expected a CONNACK, got {b1:#x}");
        body.get(1).copied()
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason code (0 when omitted).
    pub async fn publish_qos1(&mut self, topic: &str, payload: &[u8], pkid: u16) -> Option<u8> {
        self.send(&publish_packet(self.v5, topic, payload, 1, pkid)).await.ok()?;
        loop {
            let (b1, body) = self.read(Duration::from_secs(10)).await?;
            if b1 >> 4 == 4 {
                assert_eq!(u16::from_be_bytes([body[0], body[1]]), pkid);
                return Some(body.get(2).copied().unwrap_or(0));
            }
        }
    }

    /// Subscribes and returns the SUBACK's codes.
    pub async fn subscribe(&mut self, pkid: u16, filters: &[&str]) -> Option<Vec<u8>> {
        self.send(&subscribe_packet(self.v5, pkid, filters)).await.ok()?;
        loop {
            let (b1, body) = self.read(Duration::from_secs(10)).await?;
            if b1 >> 4 == 9 {
                let mut at = 2;
                if self.v5 {
                    let (props, used) = read_varint(&body[2..])?;
                    at += used + props;
                }
                return Some(body[at..].to_vec());
            }
        }
    }
}

fn read_varint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// (first byte, remaining length, header length) once the fixed header is complete.
fn parse_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let b1 = *buf.first()?;
    let (len, used) = read_varint(buf.get(1..)?)?;
    Some((b1, len, 1 + used))
}
