//! One device connection, from `accept()` to close, in its own task.
//!
//! 1. **Open** (under one deadline): TLS handshake on the TLS listeners, then the CONNECT frame. A silent socket or a
//!    stalled handshake only ever holds its own task.
//! 2. **Log in** (under the same deadline): the client certificate (TLS) or username + password (plain; the address's
//!    failed logins and the device's waiting logins limited by [`super::throttle`]), and the last will's topic. A
//!    refusal is answered with a CONNACK return code before the socket closes; a password check that has not begun
//!    by the deadline is refused "server busy", so a queue of logins cannot hold a connection longer than a slow
//!    handshake could.
//! 3. **Session**: PUBLISHes allowed by [`acl`] are batched per read and handed to the intake (the pipeline's bounded
//!    queue, or a cluster's replicated log); their PUBACKs go out only once the intake has the batch (a durable
//!    intake that cannot take it in time closes the connection unacknowledged). Forbidden publishes are acknowledged (v5: "not authorized"),
//!    dropped and counted. SUBSCRIBE is limited to the device's own command topics. On an abnormal end the last will
//!    goes to the pipeline.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use rumqttd::protocol::{
    ConnAckProperties, Connect, ConnectProperties, DisconnectReasonCode, LastWill, Login, Packet, PubAck, Publish,
    PublishProperties, QoS, Subscribe, SubscribeReasonCode, UnsubAckReason, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::acl::{self, FilterVerdict};
use super::codec::{self, reason, Codec, ConnackCode, Sniff, Version};
use super::sessions::{Command, KickReason, Registration};
use super::{HandOver, Listener, Refusal, Shared};
use crate::devices::{Credential, FastCheck, Fingerprint, LoginRefusal};
use crate::metrics::METRICS;
use crate::pipeline::RawMessage;

/// A plain or TLS socket.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Read buffer sizes: a busy gateway's reads grow to the largest (and so do its batches to the pipeline); an idle
/// sensor's shrink back to the smallest, so that 20 000 quiet devices cost 20 000 × 4 KiB, not × 64 KiB.
const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;

/// How long we try to deliver a CONNACK refusal or a DISCONNECT before giving up on a peer that does not read.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// A CONNECT, decoded.
struct Opened {
    io: Io,
    codec: Codec,
    /// Bytes after the CONNECT frame (a client may pipeline its first publishes behind it).
    rest: BytesMut,
    connect: Connect,
    properties: Option<ConnectProperties>,
    will: Option<LastWill>,
    login: Option<Login>,
}

/// Why a connection ended before it had a session.
enum Failed {
    /// Refused, with the socket (when there is still someone to tell) and the code to tell them.
    Refused(Refusal, Option<(Io, Codec)>),
    /// Closed before sending a CONNECT (port probes, health checks): not a refusal, not counted.
    Silent,
}

pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + shared.settings.connect_timeout;
    let opened = match tokio::time::timeout_at(deadline, open(stream, &listener, &shared)).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(Failed::Silent)) => return,
        Ok(Err(Failed::Refused(refusal, socket))) => {
            refuse(refusal, socket, peer, &listener, None).await;
            return;
        }
        Err(_) => {
            refuse(Refusal::Timeout, None, peer, &listener, None).await;
            return;
        }
    };
    let Opened { io, codec, rest, connect, properties, will, login } = opened;

    let (device_id, credential) = match tokio::time::timeout_at(deadline, log_in(&io, login, peer, &shared)).await {
        Ok(Ok(ok)) => ok,
        Ok(Err((refusal, name))) => {
            refuse(refusal, Some((io, codec)), peer, &listener, name.as_deref()).await;
            return;
        }
        // Still waiting for a password check: the client may try again; the check, if it had begun, finishes on the
        // argon2 thread holding its slot (see `log_in`), so abandoning it frees nothing that is still in use.
        Err(_) => {
            refuse(Refusal::Busy, Some((io, codec)), peer, &listener, None).await;
            return;
        }
    };
    let version = codec.version();
    if version == Version::V4 && connect.client_id.is_empty() && !connect.clean_session {
        // MQTT 3.1.1 §3.1.3-8: an empty client id needs a clean session.
        refuse(Refusal::ClientIdRejected, Some((io, codec)), peer, &listener, Some(&device_id)).await;
        return;
    }
    if properties.as_ref().is_some_and(|p| p.authentication_method.is_some()) {
        refuse(Refusal::BadAuthMethod, Some((io, codec)), peer, &listener, Some(&device_id)).await;
        return;
    }
    let will = match will {
        None => None,
        Some(w) => match std::str::from_utf8(&w.topic) {
            Ok(topic) if rumqttd::protocol::valid_topic(topic) && acl::may_publish(&device_id, topic) => {
                Some(RawMessage { topic: topic.to_string(), payload: w.message })
            }
            _ => {
                METRICS.forbidden.with_label_values(&["will"]).inc();
                refuse(Refusal::ForbiddenWill, Some((io, codec)), peer, &listener, Some(&device_id)).await;
                return;
            }
        },
    };

    let assigned_id = connect.client_id.is_empty().then(|| format!("{device_id}-{}", peer.port()));
    let client_id = assigned_id.clone().unwrap_or_else(|| connect.client_id.clone());
    let registration = shared.sessions.register(&device_id, &client_id, credential);
    METRICS.logins_accepted.inc();
    tracing::info!(device = %device_id, client = %truncate(&client_id), listener = listener.name, %peer, mqtt = version.label(), keep_alive_s = connect.keep_alive, "device connected");

    let mut session = Session {
        io,
        codec,
        rbuf: rest,
        wbuf: BytesMut::with_capacity(4096),
        device_id: device_id.clone(),
        shared: Arc::clone(&shared),
        max_packet: shared.settings.max_packet,
        qos2_pending: HashSet::new(),
        filters: Arc::clone(&registration.filters),
        warned_forbidden: false,
        disconnect: None,
    };
    let connack = ConnAckProperties {
        // We keep no session state across connections: say so to clients asking for one.
        session_expiry_interval: properties.as_ref().and_then(|p| p.session_expiry_interval).map(|_| 0),
        retain_available: Some(0),
        max_packet_size: u32::try_from(shared.settings.max_packet).ok(),
        assigned_client_identifier: assigned_id,
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(0),
        ..ConnAckProperties::default()
    };
    session.codec.connack(ConnackCode::Accepted, Some(connack), &mut session.wbuf);
    let keep_alive = (connect.keep_alive > 0).then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let end = session.run(registration, keep_alive).await;

    shared.sessions.unregister(&device_id, end.session_id);
    METRICS.disconnects.with_label_values(&[end.why]).inc();
    tracing::info!(device = %device_id, client = %truncate(&client_id), why = end.why, will = end.will && will.is_some(), "device disconnected");
    if end.will {
        if let Some(will) = will {
            METRICS.wills.inc();
            // A closed queue means the server is stopping, and a durable intake without quorum refuses it: either
            // way the will has nowhere to go (nobody waits for its acknowledgement).
            let _ = shared.intake.hand_over(vec![will]).await;
        }
    }
}

/// TLS handshake (TLS listeners) and the CONNECT frame.
async fn open(stream: TcpStream, listener: &Listener, shared: &Shared) -> Result<Opened, Failed> {
    let mut io = match &listener.tls {
        None => Io::Plain(stream),
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => Io::Tls(Box::new(tls)),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return Err(Failed::Refused(Refusal::TlsHandshake, None));
            }
        },
    };
    // A CONNECT carries at most a will message besides a few short strings.
    let max_connect = shared.settings.max_packet + 1024;
    let mut buf = BytesMut::with_capacity(1024);
    let version = loop {
        match codec::sniff_connect(&buf, max_connect) {
            Sniff::NeedMore => match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) if buf.is_empty() => return Err(Failed::Silent),
                Ok(0) | Err(_) => return Err(Failed::Refused(Refusal::Protocol, None)),
                Ok(n) => METRICS.network_in.inc_by(n as u64),
            },
            Sniff::Connect(version) => break version,
            Sniff::UnsupportedLevel(level) => {
                tracing::debug!(level, "unsupported MQTT protocol level");
                let _ = tokio::time::timeout(GOODBYE_TIMEOUT, io.write_all(&codec::CONNACK_UNSUPPORTED_LEVEL)).await;
                return Err(Failed::Refused(Refusal::UnsupportedVersion, None));
            }
            Sniff::NotMqtt => return Err(Failed::Refused(Refusal::Protocol, None)),
        }
    };
    let mut codec = Codec::new(version);
    match codec.read(&mut buf, max_connect) {
        Ok(Packet::Connect(connect, properties, will, _will_properties, login)) => {
            Ok(Opened { io, codec, rest: buf, connect, properties, will, login })
        }
        Ok(_) | Err(_) => Err(Failed::Refused(Refusal::Protocol, Some((io, codec)))),
    }
}

/// Who is on the other end: the certificate's device on TLS, the username's on plain listeners (password checked).
/// On refusal, returns the claimed device id for the log when there is one.
async fn log_in(
    io: &Io,
    login: Option<Login>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(String, Credential), (Refusal, Option<String>)> {
    if let Io::Tls(tls) = io {
        // The handshake required a certificate chaining to our CA; map it to its device.
        let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
            return Err((Refusal::TlsHandshake, None));
        };
        let fingerprint = Fingerprint::of_der(cert);
        return match shared.devices.identify_certificate(&fingerprint) {
            Ok(device_id) => Ok((device_id, Credential::Certificate(fingerprint))),
            Err(r) => Err((r.into(), Some(fingerprint.to_hex()))),
        };
    }
    let Some(Login { username, password }) = login else { return Err((Refusal::NoCredentials, None)) };
    let ip = peer.ip();
    // Before any check, the remembered-password one included: a throttled address must not test guesses at all.
    if !shared.failed_logins.lock().admits(ip, std::time::Instant::now()) {
        return Err((Refusal::LoginThrottled, Some(username)));
    }
    let verdict = match shared.devices.check_fast(&username, &password) {
        FastCheck::Accepted => Ok(()),
        FastCheck::Refused(r) => Err(r),
        FastCheck::NeedsHash => {
            // A flood aimed at one device id holds at most a few places in the queue below.
            let Some(pending) = shared.pending_logins.enter(&username) else {
                return Err((Refusal::Busy, Some(username)));
            };
            // argon2 is slow on purpose and runs on one dedicated thread (`devices`): a crowd of new logins queues
            // here, one blocking thread waiting at a time, instead of taking the cores from sessions already
            // sending readings.
            let Ok(slot) = Arc::clone(&shared.auth_slots).acquire_owned().await else {
                return Err((Refusal::Overloaded, Some(username)));
            };
            // Logins from one address admitted together wait here while the first of them fail: look again.
            if !shared.failed_logins.lock().admits(ip, std::time::Instant::now()) {
                return Err((Refusal::LoginThrottled, Some(username)));
            }
            let devices = Arc::clone(&shared.devices);
            let (user, pass) = (username.clone(), password);
            // The slot and the place go with the check: if the connect deadline abandons this login, the check still
            // runs to its end on the argon2 thread, and until then it counts against both limits.
            tokio::task::spawn_blocking(move || {
                let _held = (slot, pending);
                devices.verify(&user, &pass)
            })
            .await
            .unwrap_or(Err(crate::devices::LoginRefusal::BadPassword))
        }
    };
    match verdict {
        Ok(()) => Ok((username, Credential::Password)),
        Err(r) => {
            if matches!(r, LoginRefusal::UnknownDevice | LoginRefusal::BadPassword) {
                shared.failed_logins.lock().take(ip, std::time::Instant::now());
            }
            Err((r.into(), Some(username)))
        }
    }
}

/// Counts and logs a refusal and, where the client can understand one, answers with a CONNACK code.
async fn refuse(
    refusal: Refusal,
    socket: Option<(Io, Codec)>,
    peer: SocketAddr,
    listener: &Listener,
    name: Option<&str>,
) {
    METRICS.logins_refused.with_label_values(&[refusal.as_label()]).inc();
    let claimed = name.map(truncate).unwrap_or_default();
    tracing::warn!(device = %claimed, reason = refusal.as_label(), listener = listener.name, %peer, "MQTT connection refused");
    let Some((mut io, codec)) = socket else { return };
    if let Some(code) = refusal.connack() {
        let mut buf = BytesMut::with_capacity(8);
        codec.connack(code, None, &mut buf);
        let goodbye = async {
            io.write_all(&buf).await?;
            io.flush().await?;
            io.shutdown().await
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }
}

/// Names from outside are echoed into logs: keep them short.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// How a session ended.
struct End {
    session_id: u64,
    /// `dc_ingest_disconnects_total` label.
    why: &'static str,
    /// Whether the last will is published (MQTT: any end but a DISCONNECT; not on takeover or revocation).
    will: bool,
}

/// A protocol-level reason to close, with the v5 DISCONNECT reason code to send first.
struct Violation {
    why: &'static str,
    reason: u8,
}

struct Session {
    io: Io,
    codec: Codec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    device_id: String,
    shared: Arc<Shared>,
    max_packet: usize,
    /// QoS 2 packet ids received and not yet released: a resend of one is acknowledged, not delivered twice.
    qos2_pending: HashSet<u16>,
    filters: Arc<Mutex<Vec<String>>>,
    /// One warning per connection for forbidden publishes; the counter has the rest.
    warned_forbidden: bool,
    /// Set by a DISCONNECT packet: whether the client asked for its will to be sent anyway.
    disconnect: Option<bool>,
}

impl Session {
    async fn run(&mut self, registration: Registration, keep_alive: Option<Duration>) -> End {
        let Registration { id, kick, mut commands, .. } = registration;
        let end = |why, will| End { session_id: id, why, will };
        let mut batch: Vec<RawMessage> = Vec::new();
        let mut last_heard = Instant::now();
        let mut read_size = READ_MIN;
        // The keep-alive timer is re-armed only when it fires (cheaper than resetting it on every read).
        let far = Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep(keep_alive.unwrap_or(far));
        tokio::pin!(timer);
        loop {
            let decoded = self.decode(&mut batch);
            if !batch.is_empty() {
                // The PUBACKs in `wbuf` promise the readings are accepted: queue them first. A full queue blocks this
                // connection only (TCP pushes back on the device); other devices' tasks go on.
                let full = std::mem::replace(&mut batch, Vec::with_capacity(16));
                match self.shared.intake.hand_over(full).await {
                    HandOver::Accepted => {}
                    HandOver::Closed => {
                        self.goodbye(reason::SERVER_SHUTTING_DOWN).await;
                        return end("shutdown", false);
                    }
                    HandOver::NotDurable => {
                        // The PUBACKs waiting in `wbuf` would promise what the cluster could not: drop them, and
                        // the connection, so that the device sends the batch again (its ids make that harmless).
                        self.wbuf.clear();
                        self.goodbye(reason::SERVER_BUSY).await;
                        return end("not_durable", false);
                    }
                }
                // Time spent waiting on the queue is ours, not the device's silence.
                last_heard = Instant::now();
            }
            if let Err(v) = decoded {
                // The publishes decoded before the violation are queued above, so their PUBACKs may still go out.
                self.goodbye(v.reason).await;
                return end(v.why, true);
            }
            if !self.wbuf.is_empty() && self.flush().await.is_err() {
                return end("io_error", true);
            }
            if let Some(with_will) = self.disconnect {
                return end("disconnect", with_will);
            }
            if self.rbuf.capacity() - self.rbuf.len() < read_size / 2 {
                self.rbuf.reserve(read_size);
            }
            let spare = self.rbuf.capacity() - self.rbuf.len();
            tokio::select! {
                biased;
                why = kick.wait() => {
                    let (label, code) = match why {
                        KickReason::TakenOver => ("taken_over", reason::SESSION_TAKEN_OVER),
                        KickReason::Revoked => ("revoked", reason::NOT_AUTHORIZED),
                        KickReason::Shutdown => ("shutdown", reason::SERVER_SHUTTING_DOWN),
                        KickReason::TooMany => ("too_many_sessions", reason::QUOTA_EXCEEDED),
                    };
                    tracing::info!(device = %self.device_id, why = label, "session closed by the server");
                    self.goodbye(code).await;
                    return end(label, false);
                }
                Some(Command { topic, payload }) = commands.recv() => {
                    self.codec.publish(topic, payload, &mut self.wbuf);
                }
                read = self.io.read_buf(&mut self.rbuf) => match read {
                    Ok(0) => return end("closed", true),
                    Ok(n) => {
                        METRICS.network_in.inc_by(n as u64);
                        last_heard = Instant::now();
                        if n == spare {
                            read_size = (read_size * 2).min(READ_MAX);
                        } else if n < read_size / 4 {
                            read_size = (read_size / 2).max(READ_MIN);
                        }
                    }
                    Err(_) => return end("io_error", true),
                },
                () = &mut timer, if keep_alive.is_some() => {
                    let limit = keep_alive.unwrap_or(far);
                    if last_heard.elapsed() >= limit {
                        self.goodbye(reason::KEEP_ALIVE_TIMEOUT).await;
                        return end("keep_alive", true);
                    }
                    timer.as_mut().reset(last_heard + limit);
                }
            }
        }
    }

    /// Handles every complete frame in the read buffer.
    fn decode(&mut self, batch: &mut Vec<RawMessage>) -> Result<(), Violation> {
        while self.disconnect.is_none() {
            let info = match codec::peek(&mut self.rbuf, self.max_packet) {
                Ok(Some(info)) => info,
                Ok(None) => return Ok(()),
                Err(rumqttd::protocol::Error::PayloadSizeLimitExceeded(_)) => {
                    return Err(Violation { why: "too_large", reason: reason::PACKET_TOO_LARGE })
                }
                Err(_) => return Err(Violation { why: "malformed", reason: reason::MALFORMED_PACKET }),
            };
            let packet = self
                .codec
                .read(&mut self.rbuf, self.max_packet)
                .map_err(|_| Violation { why: "malformed", reason: reason::MALFORMED_PACKET })?;
            match packet {
                Packet::Publish(publish, properties) => self.on_publish(publish, properties, info, batch)?,
                Packet::PubRel(rel, _) => {
                    self.qos2_pending.remove(&rel.pkid);
                    self.codec.pubcomp(rel.pkid, &mut self.wbuf);
                }
                Packet::Subscribe(subscribe, _) => self.on_subscribe(subscribe),
                Packet::Unsubscribe(unsubscribe, _) => self.on_unsubscribe(unsubscribe),
                Packet::PingReq(_) => self.codec.pingresp(&mut self.wbuf),
                Packet::Disconnect(d, _) => {
                    self.disconnect = Some(d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage);
                }
                // Acks of our QoS 0 commands cannot happen; tolerate them rather than drop a device over it.
                Packet::PubAck(PubAck { .. }, _) | Packet::PubRec(..) | Packet::PubComp(..) => {}
                // A second CONNECT, or packets only a server sends.
                _ => return Err(Violation { why: "protocol", reason: reason::PROTOCOL_ERROR }),
            }
        }
        Ok(())
    }

    fn on_publish(
        &mut self,
        publish: Publish,
        properties: Option<PublishProperties>,
        info: codec::FrameInfo,
        batch: &mut Vec<RawMessage>,
    ) -> Result<(), Violation> {
        // We announce no topic aliases (CONNACK topic_alias_max absent = 0), so a publish using one is an error.
        if properties.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
            return Err(Violation { why: "protocol", reason: reason::TOPIC_ALIAS_INVALID });
        }
        let topic = match std::str::from_utf8(&publish.topic) {
            Ok(t) if !t.is_empty() && rumqttd::protocol::valid_topic(t) => t,
            _ => return Err(Violation { why: "protocol", reason: reason::PROTOCOL_ERROR }),
        };
        if info.qos == 2 && self.qos2_pending.contains(&info.pkid) {
            // A resend before PUBREL: delivered already.
            self.codec.pubrec(info.pkid, true, &mut self.wbuf);
            return Ok(());
        }
        let allowed = acl::may_publish(&self.device_id, topic);
        if allowed {
            batch.push(RawMessage { topic: topic.to_string(), payload: publish.payload });
        } else {
            METRICS.forbidden.with_label_values(&["publish"]).inc();
            if !self.warned_forbidden {
                self.warned_forbidden = true;
                tracing::warn!(device = %self.device_id, topic = %truncate(topic), "publish to another device's topic dropped (further ones on this connection are only counted)");
            }
        }
        match info.qos {
            1 => self.codec.puback(info.pkid, allowed, &mut self.wbuf),
            2 => {
                if allowed {
                    self.qos2_pending.insert(info.pkid);
                }
                self.codec.pubrec(info.pkid, allowed, &mut self.wbuf);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_subscribe(&mut self, subscribe: Subscribe) {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in subscribe.filters {
            match acl::may_subscribe(&self.device_id, &filter.path) {
                FilterVerdict::Allowed => {
                    let mut filters = self.filters.lock();
                    if !filters.contains(&filter.path) {
                        filters.push(filter.path);
                    }
                    // Commands are delivered at most once.
                    codes.push(SubscribeReasonCode::Success(QoS::AtMostOnce));
                }
                FilterVerdict::Invalid => codes.push(self.codec.sub_refused(true)),
                FilterVerdict::Forbidden => {
                    METRICS.forbidden.with_label_values(&["subscribe"]).inc();
                    tracing::warn!(device = %self.device_id, filter = %truncate(&filter.path), "subscription refused");
                    codes.push(self.codec.sub_refused(false));
                }
            }
        }
        self.codec.suback(subscribe.pkid, codes, &mut self.wbuf);
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let mut filters = self.filters.lock();
        let reasons = unsubscribe
            .filters
            .iter()
            .map(|f| match filters.iter().position(|have| have == f) {
                Some(i) => {
                    filters.remove(i);
                    UnsubAckReason::Success
                }
                None => UnsubAckReason::NoSubscriptionExisted,
            })
            .collect();
        drop(filters);
        self.codec.unsuback(unsubscribe.pkid, reasons, &mut self.wbuf);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        METRICS.network_out.inc_by(self.wbuf.len() as u64);
        self.io.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.io.flush().await
    }

    /// Best effort: tell a v5 client why (a DISCONNECT reason code), then close.
    async fn goodbye(&mut self, reason: u8) {
        self.codec.disconnect(reason, &mut self.wbuf);
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
            if !self.wbuf.is_empty() {
                self.flush().await?;
            }
            self.io.shutdown().await
        })
        .await;
    }
}
