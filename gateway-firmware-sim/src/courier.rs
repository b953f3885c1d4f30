//! The delivery half of a gateway's firmware: store-and-forward buffer, connection, reconnect with backoff, QoS 1
//! resend. Scenario devices and load connections both hand their messages to a `Courier` and let it get them to the
//! broker; it reports, per message, delivered or dropped, so counts stay exact.
//!
//! Used from one task: `wait()` is the only await and is cancel-safe, so a caller can `select!` it against its own
//! timers and then pass what woke it to `handle()`.

use std::future::pending;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::{sleep_until, Instant};

use crate::backoff::Backoff;
use crate::link::{Link, LinkConfig, LinkEvent};
use crate::outbox::Outbox;

/// A message waiting for delivery.
#[derive(Debug, Clone)]
pub struct Parcel {
    pub topic: Arc<str>,
    pub payload: Arc<[u8]>,
    /// Reading sets inside (a batch carries several), for readings-per-second figures.
    pub readings: u32,
    /// Times handed to a connection; more than one means it was resent.
    pub attempts: u32,
}

/// Delivery settings of one device.
#[derive(Debug, Clone)]
pub struct CourierConfig {
    pub link: LinkConfig,
    pub qos: u8,
    pub buffer: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Seeds the backoff jitter (runs stay reproducible apart from the network itself).
    pub seed: u64,
    /// Further brokers (host, port) after `link`'s, for a device provisioned with several addresses (two front doors
    /// of a cluster): when a connection fails or closes the next attempt goes to the next one, round the list, and
    /// what was not acknowledged is sent there. Empty: always `link`'s.
    pub failover: Vec<(String, u16)>,
}

/// Counters shared with the progress bar (all devices add into one).
#[derive(Debug, Default)]
pub struct Live {
    pub queued: AtomicU64,
    pub acked: AtomicU64,
    pub dropped: AtomicU64,
    /// Waiting in buffers or on the wire right now.
    pub pending: AtomicI64,
    pub connected: AtomicI64,
}

/// What one courier did, summed into run summaries.
#[derive(Debug, Default, Clone)]
pub struct Delivery {
    /// Messages given to the courier.
    pub queued: u64,
    /// Publishes written to a connection, resends included.
    pub sent: u64,
    /// Publishes written again after their connection died unacknowledged.
    pub resent: u64,
    /// Messages acknowledged by the broker (QoS 0: written).
    pub acked: u64,
    pub readings_acked: u64,
    pub bytes_acked: u64,
    /// Messages overwritten in a full buffer, or lost when the device died.
    pub dropped: u64,
    /// Messages still buffered or unacknowledged when the run ended.
    pub left: u64,
    /// Most messages buffered at once.
    pub peak_buffered: u64,
    /// Successful connections (the first one included).
    pub connects: u64,
    /// Connections (attempted or lost) after which the next attempt went to another broker of `failover`.
    pub failovers: u64,
    /// Attempts that never reached CONNACK.
    pub connect_failures: u64,
    /// Connections lost after CONNACK.
    pub disconnects: u64,
    pub last_error: Option<String>,
    /// Ack latency of each acknowledged message, in microseconds.
    pub latencies_us: Vec<u32>,
}

/// The connection settings for broker `index` (0: `link`'s own; then `failover`'s, round the list).
pub fn broker_config(cfg: &CourierConfig, index: usize) -> LinkConfig {
    let mut link = cfg.link.clone();
    if let Some((host, port)) = index.checked_sub(1).and_then(|i| cfg.failover.get(i % cfg.failover.len().max(1))) {
        link.host = host.clone();
        link.port = *port;
    }
    link
}

/// What woke `wait()`.
#[derive(Debug)]
pub enum Wake {
    Link(LinkEvent),
    ReconnectDue,
}

pub struct Courier {
    cfg: CourierConfig,
    outbox: Outbox<Parcel>,
    link: Option<Link<Parcel>>,
    backoff: Backoff,
    rng: StdRng,
    /// False while the scenario says the cellular link is down: no attempts then.
    link_up: bool,
    /// When to try connecting next (None: not planned, e.g. link down or connected).
    reconnect_at: Option<Instant>,
    /// Which broker the next connection goes to: 0 is `link`'s, then `failover`'s in order.
    broker: usize,
    stats: Delivery,
    live: Arc<Live>,
}

impl Courier {
    /// A courier that will try to connect right away.
    pub fn new(cfg: CourierConfig, live: Arc<Live>) -> Self {
        Courier {
            outbox: Outbox::new(cfg.buffer),
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            rng: StdRng::seed_from_u64(cfg.seed),
            link: None,
            link_up: true,
            reconnect_at: Some(Instant::now()),
            broker: 0,
            stats: Delivery::default(),
            live,
            cfg,
        }
    }

    /// Buffer a message for delivery.
    pub fn enqueue(&mut self, parcel: Parcel) {
        self.stats.queued += 1;
        self.live.queued.fetch_add(1, Ordering::Relaxed);
        self.live.pending.fetch_add(1, Ordering::Relaxed);
        if self.outbox.push(parcel).is_some() {
            self.count_dropped(1);
        }
        self.stats.peak_buffered = self.stats.peak_buffered.max(self.outbox.peak() as u64);
        self.pump();
    }

    fn count_dropped(&mut self, n: u64) {
        self.stats.dropped += n;
        self.live.dropped.fetch_add(n, Ordering::Relaxed);
        self.live.pending.fetch_sub(n as i64, Ordering::Relaxed);
    }

    /// Messages buffered or on the wire.
    pub fn pending(&self) -> usize {
        self.outbox.len() + self.link.as_ref().map_or(0, |l| l.outstanding())
    }

    pub fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.connected)
    }

    /// Room on the wire for another message (load mode generates only when there is).
    pub fn has_window(&self) -> bool {
        self.is_connected() && self.link.as_ref().is_some_and(|l| l.outstanding() < self.cfg.link.max_inflight as usize)
    }

    pub fn buffered(&self) -> usize {
        self.outbox.len()
    }

    /// Which broker the current (or next) connection goes to: 0 is `link`'s, then `failover`'s in order.
    pub fn broker(&self) -> usize {
        self.broker
    }

    /// Hand buffered messages to the connection while the in-flight window has room.
    pub fn pump(&mut self) {
        let Some(link) = self.link.as_mut().filter(|l| l.connected) else {
            return;
        };
        while link.outstanding() < self.cfg.link.max_inflight as usize {
            let Some(mut p) = self.outbox.pop() else {
                break;
            };
            p.attempts += 1;
            let resend = p.attempts > 1;
            let (topic, payload) = (p.topic.clone(), p.payload.to_vec());
            match link.submit(&topic, payload, p) {
                Ok(()) => {
                    self.stats.sent += 1;
                    if resend {
                        self.stats.resent += 1;
                    }
                }
                Err(mut p) => {
                    // Channel full or closed: keep the message first in line; the close event will follow.
                    p.attempts -= 1;
                    self.outbox.requeue_front(vec![p]);
                    break;
                }
            }
        }
    }

    /// Wait for the next thing that needs handling. Cancel-safe.
    pub async fn wait(&mut self) -> Wake {
        if let Some(link) = self.link.as_mut() {
            return Wake::Link(link.recv().await);
        }
        match self.reconnect_at {
            Some(at) if self.link_up => {
                sleep_until(at).await;
                Wake::ReconnectDue
            }
            _ => pending().await,
        }
    }

    /// Act on what `wait()` returned.
    pub fn handle(&mut self, wake: Wake) {
        match wake {
            Wake::ReconnectDue => {
                self.reconnect_at = None;
                if self.link_up && self.link.is_none() {
                    let link = broker_config(&self.cfg, self.broker);
                    self.link = Some(Link::open(&link, self.cfg.qos));
                }
            }
            Wake::Link(ev) => self.on_link(ev),
        }
        self.pump();
    }

    fn on_link(&mut self, ev: LinkEvent) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        match ev {
            LinkEvent::Connected => {
                link.connected = true;
                self.backoff.reset();
                self.stats.connects += 1;
                self.live.connected.fetch_add(1, Ordering::Relaxed);
            }
            LinkEvent::Sent(pkid) => {
                if let Some((p, latency)) = link.on_sent(pkid) {
                    self.delivered(p, latency);
                }
            }
            LinkEvent::Acked(pkid) => {
                if let Some((p, latency)) = link.on_acked(pkid) {
                    self.delivered(p, latency);
                }
            }
            LinkEvent::Closed(reason) => {
                let link = self.link.take().expect("checked above");
                if link.connected {
                    self.stats.disconnects += 1;
                    self.live.connected.fetch_sub(1, Ordering::Relaxed);
                } else {
                    self.stats.connect_failures += 1;
                }
                tracing::debug!(client = %self.cfg.link.client_id, %reason, "connection closed");
                self.stats.last_error = Some(reason);
                self.requeue(link.abort());
                // Firmware provisioned with several addresses tries the next one: the broker that just failed may be
                // gone for good (a front door's machine died), and another one takes the same readings.
                if !self.cfg.failover.is_empty() {
                    self.broker = (self.broker + 1) % (self.cfg.failover.len() + 1);
                    self.stats.failovers += 1;
                }
                if self.link_up {
                    let delay = self.backoff.next_delay(&mut self.rng);
                    self.reconnect_at = Some(Instant::now() + delay);
                }
            }
        }
    }

    fn delivered(&mut self, p: Parcel, latency: Duration) {
        self.stats.acked += 1;
        self.stats.readings_acked += p.readings as u64;
        self.stats.bytes_acked += p.payload.len() as u64;
        self.stats.latencies_us.push(latency.as_micros().min(u32::MAX as u128) as u32);
        self.live.acked.fetch_add(1, Ordering::Relaxed);
        self.live.pending.fetch_sub(1, Ordering::Relaxed);
    }

    fn requeue(&mut self, unacked: Vec<Parcel>) {
        let dropped = self.outbox.requeue_front(unacked).len() as u64;
        if dropped > 0 {
            self.count_dropped(dropped);
        }
        self.stats.peak_buffered = self.stats.peak_buffered.max(self.outbox.peak() as u64);
    }

    /// The link drops (scenario event): abrupt, so the broker publishes the will; unacknowledged messages go back to
    /// the buffer and no reconnect is tried until `link_restored`.
    pub fn link_lost(&mut self) {
        self.link_up = false;
        self.reconnect_at = None;
        if let Some(link) = self.link.take() {
            if link.connected {
                self.stats.disconnects += 1;
                self.live.connected.fetch_sub(1, Ordering::Relaxed);
            }
            self.requeue(link.abort());
        }
    }

    /// The link is back: connect now.
    pub fn link_restored(&mut self) {
        self.link_up = true;
        self.backoff.reset();
        if self.link.is_none() {
            self.reconnect_at = Some(Instant::now());
        }
    }

    /// The device dies: connection dropped without DISCONNECT, buffer lost (counted as dropped).
    pub fn kill(mut self) -> Delivery {
        self.link_lost();
        let lost = self.outbox.drain().len() as u64;
        if lost > 0 {
            self.count_dropped(lost);
        }
        self.stats
    }

    /// End of run: DISCONNECT if connected; whatever is still pending is counted as left over.
    pub async fn finish(mut self) -> Delivery {
        let unacked = match self.link.take() {
            Some(link) => {
                if link.connected {
                    self.live.connected.fetch_sub(1, Ordering::Relaxed);
                }
                link.close().await
            }
            None => Vec::new(),
        };
        let left = unacked.len() as u64 + self.outbox.drain().len() as u64;
        self.stats.left = left;
        self.live.pending.fetch_sub(left as i64, Ordering::Relaxed);
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_goes_round_the_brokers_starting_with_the_links_own() {
        let link = LinkConfig {
            host: "fd-1".into(),
            port: 1883,
            client_id: "RG0001".into(),
            credentials: None,
            keep_alive: Duration::from_secs(30),
            will: None,
            max_inflight: 1,
            max_packet_size: 1024,
        };
        let mut cfg = CourierConfig {
            link,
            qos: 1,
            buffer: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            seed: 0,
            failover: vec![("fd-2".into(), 1884), ("fd-3".into(), 1885)],
        };
        let at = |cfg: &CourierConfig, i| {
            let l = broker_config(cfg, i);
            (l.host, l.port, l.client_id)
        };
        assert_eq!(at(&cfg, 0), ("fd-1".into(), 1883, "RG0001".into()));
        assert_eq!(at(&cfg, 1), ("fd-2".into(), 1884, "RG0001".into()));
        assert_eq!(at(&cfg, 2), ("fd-3".into(), 1885, "RG0001".into()));
        cfg.failover.clear();
        assert_eq!(at(&cfg, 0), ("fd-1".into(), 1883, "RG0001".into()), "no failover: always the link's own");
    }
}
