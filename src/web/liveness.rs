//! Is the client at the other end of a websocket still reading? Every connection is pinged on a timer; one that has
//! sent nothing (not even the pong every websocket stack answers by itself) for the idle timeout has stopped reading
//! or vanished, and is dropped before its backlog can grow. Without this, a phone that loses its radio would hold its
//! socket until TCP gave up, many minutes later.

use std::time::Duration;

use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

pub struct Liveness {
    timeout: Duration,
    last_heard: Instant,
    tick: Interval,
}

/// What to do on a liveness tick.
pub enum Probe {
    Ping,
    Dead,
}

impl Liveness {
    pub fn new(timeout: Duration) -> Self {
        // Three pings per timeout: one lost pong is not yet a dead client.
        let every = (timeout / 3).max(Duration::from_millis(100));
        let mut tick = interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { timeout, last_heard: Instant::now(), tick }
    }

    /// Anything arrived from the client.
    pub fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    pub async fn tick(&mut self) -> Probe {
        self.tick.tick().await;
        if self.last_heard.elapsed() > self.timeout {
            Probe::Dead
        } else {
            Probe::Ping
        }
    }
}
