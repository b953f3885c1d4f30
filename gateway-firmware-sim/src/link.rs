//! One MQTT connection of one device (a "generation": every reconnect makes a new one).
//!
//! rumqttc's event loop runs in its own task because it must not be cancelled mid-write, while the firmware waits on
//! timers and scenario steps at the same time. The task forwards only what the firmware needs (connected, a publish
//! got its packet id, a PUBACK came, the connection died) and ends with the connection: the firmware, not rumqttc,
//! decides when to reconnect (backoff) and what to resend (its own buffer), so each generation starts empty.
//!
//! rumqttc assigns packet ids inside its event loop; it reports them as `Outgoing::Publish(pkid)` in the order the
//! publishes were handed over, which is how a PUBACK is matched back to the message it acknowledges.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How to reach the broker and who to be.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Username and password (device id and demo password); `None` connects anonymously.
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    /// Topic and payload the broker publishes when this connection dies without DISCONNECT.
    pub will: Option<(String, String)>,
    pub max_inflight: u16,
    /// Largest packet either way; rumqttc's 10 KiB default is too small for load runs with big batches.
    pub max_packet_size: usize,
}

/// What the event-loop task reports.
#[derive(Debug)]
pub enum LinkEvent {
    Connected,
    /// The next handed-over publish went on the wire with this packet id (0 for QoS 0).
    Sent(u16),
    /// The broker acknowledged this packet id.
    Acked(u16),
    /// The connection is gone (or never came up); the task has ended.
    Closed(String),
}

/// A message handed to a link, with what is needed to time and requeue it.
#[derive(Debug)]
struct InFlight<T> {
    item: T,
    /// Hand-over order, so unacknowledged messages are requeued in the order they were sent.
    seq: u64,
    since: Instant,
}

/// One connection generation.
pub struct Link<T> {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    task: JoinHandle<()>,
    qos: QoS,
    /// Handed to rumqttc, packet id not yet known.
    submitted: VecDeque<InFlight<T>>,
    /// On the wire, waiting for PUBACK, by packet id.
    inflight: HashMap<u16, InFlight<T>>,
    next_seq: u64,
    /// CONNACK received on this generation.
    pub connected: bool,
}

impl<T> Link<T> {
    /// Start connecting (returns at once; `Connected` or `Closed` follows as an event).
    pub fn open(cfg: &LinkConfig, qos: u8) -> Self {
        let mut opts = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
        opts.set_keep_alive(cfg.keep_alive);
        // The firmware keeps its own buffer and resends after reconnecting, so a broker session adds nothing.
        opts.set_clean_session(true);
        opts.set_inflight(cfg.max_inflight.max(1));
        opts.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
        if let Some((u, p)) = &cfg.credentials {
            opts.set_credentials(u.clone(), p.clone());
        }
        if let Some((topic, payload)) = &cfg.will {
            opts.set_last_will(LastWill::new(topic.clone(), payload.clone(), QoS::AtLeastOnce, false));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, cfg.max_inflight as usize + 16);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let forward = match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
                    Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::Acked(ack.pkid),
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(LinkEvent::Closed(e.to_string()));
                        return;
                    }
                };
                if tx.send(forward).is_err() {
                    return; // the firmware dropped this generation
                }
            }
        });
        let qos = if qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        Link {
            client,
            events,
            task,
            qos,
            submitted: VecDeque::new(),
            inflight: HashMap::new(),
            next_seq: 0,
            connected: false,
        }
    }

    /// Messages handed over and not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.submitted.len() + self.inflight.len()
    }

    /// Hand a publish to rumqttc. Gives the item back if the request channel is full or closed.
    pub fn submit(&mut self, topic: &str, payload: Vec<u8>, item: T) -> Result<(), T> {
        match self.client.try_publish(topic, self.qos, false, payload) {
            Ok(()) => {
                self.submitted.push_back(InFlight { item, seq: self.next_seq, since: Instant::now() });
                self.next_seq += 1;
                Ok(())
            }
            Err(_) => Err(item),
        }
    }

    /// Next event from the task (cancel-safe: an mpsc receive).
    pub async fn recv(&mut self) -> LinkEvent {
        self.events.recv().await.unwrap_or_else(|| LinkEvent::Closed("event loop ended".into()))
    }

    /// Book-keeping for `Sent`: returns an item that is complete already (QoS 0 counts as delivered once written).
    pub fn on_sent(&mut self, pkid: u16) -> Option<(T, Duration)> {
        let f = self.submitted.pop_front()?;
        if pkid == 0 {
            return Some((f.item, f.since.elapsed()));
        }
        self.inflight.insert(pkid, f);
        None
    }

    /// Book-keeping for `Acked`: the acknowledged item and its ack latency.
    pub fn on_acked(&mut self, pkid: u16) -> Option<(T, Duration)> {
        self.inflight.remove(&pkid).map(|f| (f.item, f.since.elapsed()))
    }

    /// Take every unacknowledged item, in send order, leaving the link empty.
    pub fn take_unacked(&mut self) -> Vec<T> {
        let mut all: Vec<InFlight<T>> = self.inflight.drain().map(|(_, f)| f).chain(self.submitted.drain(..)).collect();
        all.sort_by_key(|f| f.seq);
        all.into_iter().map(|f| f.item).collect()
    }

    /// Drop the connection without DISCONNECT, as a dead link or a dead device does: the broker publishes the will.
    pub fn abort(mut self) -> Vec<T> {
        self.task.abort();
        self.take_unacked()
    }

    /// Say DISCONNECT and wait briefly for the connection to end, so the broker does not publish the will.
    pub async fn close(mut self) -> Vec<T> {
        if self.connected && self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while !matches!(self.recv().await, LinkEvent::Closed(_)) {}
            })
            .await;
        }
        self.task.abort();
        self.take_unacked()
    }
}

impl<T> Drop for Link<T> {
    fn drop(&mut self) {
        // A dropped generation must not keep a socket open behind the firmware's back.
        self.task.abort();
    }
}
