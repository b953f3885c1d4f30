//! The live sessions: who is connected, so that the front door can take over a session (same device and client
//! id reconnecting), keep each device to `max_sessions_per_device` sessions, close the sessions of a revoked device,
//! and deliver commands to a device's subscriptions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::devices::Credential;
use crate::metrics::METRICS;

/// Why the front door ends a session from outside its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// The same device connected again with the same client id (MQTT's session takeover).
    TakenOver = 1,
    /// The device was revoked (or its certificate replaced) while connected.
    Revoked = 2,
    Shutdown = 3,
    /// The device opened more sessions than `max_sessions_per_device`: its oldest is closed.
    TooMany = 4,
}

/// A one-shot signal to a connection task. `Notify` keeps the wake-up if the task is busy when it is sent.
#[derive(Default)]
pub struct Kick {
    notify: Notify,
    reason: AtomicU8,
}

impl Kick {
    fn send(&self, reason: KickReason) {
        self.reason.store(reason as u8, Ordering::Release);
        self.notify.notify_one();
    }

    pub async fn wait(&self) -> KickReason {
        self.notify.notified().await;
        match self.reason.load(Ordering::Acquire) {
            1 => KickReason::TakenOver,
            2 => KickReason::Revoked,
            4 => KickReason::TooMany,
            _ => KickReason::Shutdown,
        }
    }
}

/// A command for a device (QoS 0, MQTT's "at most once": dropped if the device's queue is full).
#[derive(Debug, Clone)]
pub struct Command {
    pub topic: Bytes,
    pub payload: Bytes,
}

/// Commands queued per session before further ones are dropped.
const COMMAND_QUEUE: usize = 64;

struct Entry {
    id: u64,
    client_id: String,
    credential: Credential,
    kick: Arc<Kick>,
    commands: mpsc::Sender<Command>,
    filters: Arc<Mutex<Vec<String>>>,
}

/// What a connection task gets when its session is registered.
pub struct Registration {
    pub id: u64,
    pub kick: Arc<Kick>,
    pub commands: mpsc::Receiver<Command>,
    /// The session's granted subscriptions (own command topics only), read when a command is delivered.
    pub filters: Arc<Mutex<Vec<String>>>,
}

pub struct Sessions {
    /// Oldest first per device.
    by_device: Mutex<HashMap<String, Vec<Entry>>>,
    /// Sessions one device may have at once.
    max_per_device: usize,
    next_id: AtomicU64,
    /// Kept beside the map so that the gauge costs nothing per connect (a reconnect storm of 20k devices would
    /// otherwise sum the map 20k times).
    open: AtomicUsize,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(4)
    }
}

impl Sessions {
    pub fn new(max_per_device: usize) -> Self {
        Self {
            by_device: Mutex::default(),
            max_per_device: max_per_device.max(1),
            next_id: AtomicU64::default(),
            open: AtomicUsize::default(),
        }
    }

    /// Registers a session; an older session of the same device and client id is taken over (closed, no will).
    /// Past `max_per_device` sessions, the device's oldest is closed: the newest is the one most likely alive (a
    /// device that reconnects with a fresh client id while its old connection has not timed out yet), and a leaked
    /// credential cannot pile up sessions.
    pub fn register(&self, device_id: &str, client_id: &str, credential: Credential) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let kick = Arc::new(Kick::default());
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let filters = Arc::new(Mutex::new(Vec::new()));
        let mut map = self.by_device.lock();
        let entries = map.entry(device_id.to_string()).or_default();
        let before = entries.len();
        entries.retain(|e| {
            let same = e.client_id == client_id;
            if same {
                e.kick.send(KickReason::TakenOver);
            }
            !same
        });
        while entries.len() >= self.max_per_device {
            let oldest = entries.remove(0);
            // Counted when its task ends (`dc_ingest_disconnects_total{why="too_many_sessions"}`).
            oldest.kick.send(KickReason::TooMany);
        }
        let taken_over = before - entries.len();
        entries.push(Entry {
            id,
            client_id: client_id.to_string(),
            credential,
            kick: Arc::clone(&kick),
            commands: tx,
            filters: Arc::clone(&filters),
        });
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1 - taken_over;
        self.open.fetch_sub(taken_over, Ordering::AcqRel);
        METRICS.connected_devices.set(open as i64);
        Registration { id, kick, commands: rx, filters }
    }

    pub fn unregister(&self, device_id: &str, id: u64) {
        let mut map = self.by_device.lock();
        let Some(entries) = map.get_mut(device_id) else { return };
        let before = entries.len();
        entries.retain(|e| e.id != id);
        // A taken-over session was removed (and counted) at takeover already.
        let removed = before - entries.len();
        if entries.is_empty() {
            map.remove(device_id);
        }
        let open = self.open.fetch_sub(removed, Ordering::AcqRel) - removed;
        METRICS.connected_devices.set(open as i64);
    }

    /// Closes every session whose credential the store no longer accepts. Returns how many.
    pub fn sweep(&self, still_valid: impl Fn(&str, &Credential) -> bool) -> usize {
        let map = self.by_device.lock();
        let mut kicked = 0;
        for (device, entries) in map.iter() {
            for e in entries.iter().filter(|e| !still_valid(device, &e.credential)) {
                e.kick.send(KickReason::Revoked);
                kicked += 1;
            }
        }
        kicked
    }

    pub fn kick_all(&self, reason: KickReason) {
        for e in self.by_device.lock().values().flatten() {
            e.kick.send(reason);
        }
    }

    /// Queues a command for every session of the device subscribed to a matching filter. Returns how many.
    pub fn send_command(&self, device_id: &str, command: &Command) -> usize {
        let Ok(topic) = std::str::from_utf8(&command.topic) else { return 0 };
        let map = self.by_device.lock();
        let Some(entries) = map.get(device_id) else { return 0 };
        entries
            .iter()
            .filter(|e| e.filters.lock().iter().any(|f| rumqttd::protocol::matches(topic, f)))
            .filter(|e| e.commands.try_send(command.clone()).is_ok())
            .count()
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn is_connected(&self, device_id: &str) -> bool {
        self.by_device.lock().get(device_id).is_some_and(|e| !e.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takeover_kicks_the_older_session_of_the_same_client() {
        let sessions = Sessions::default();
        let first = sessions.register("RG0001", "c1", Credential::Password);
        let other_client = sessions.register("RG0001", "c2", Credential::Password);
        let _second = sessions.register("RG0001", "c1", Credential::Password);
        assert_eq!(first.kick.wait().await, KickReason::TakenOver);
        assert_eq!(sessions.count(), 2);
        sessions.unregister("RG0001", other_client.id);
        assert_eq!(sessions.count(), 1);
    }

    #[tokio::test]
    async fn commands_reach_matching_subscriptions_only() {
        let sessions = Sessions::default();
        let mut reg = sessions.register("RG0001", "c1", Credential::Password);
        let cmd = Command { topic: Bytes::from_static(b"devices/RG0001/commands/reboot"), payload: Bytes::new() };
        assert_eq!(sessions.send_command("RG0001", &cmd), 0, "not subscribed yet");
        reg.filters.lock().push("devices/RG0001/#".into());
        assert_eq!(sessions.send_command("RG0001", &cmd), 1);
        assert_eq!(sessions.send_command("RG0002", &cmd), 0);
        assert_eq!(reg.commands.recv().await.unwrap().topic, cmd.topic);
    }

    #[tokio::test]
    async fn sweep_kicks_invalid_credentials() {
        let sessions = Sessions::default();
        let a = sessions.register("A1", "a", Credential::Password);
        let _b = sessions.register("B1", "b", Credential::Password);
        assert_eq!(sessions.sweep(|device, _| device != "A1"), 1);
        assert_eq!(a.kick.wait().await, KickReason::Revoked);
    }

    #[tokio::test]
    async fn past_the_cap_the_oldest_session_of_the_device_closes() {
        let sessions = Sessions::new(2);
        let first = sessions.register("RG0001", "c1", Credential::Password);
        let _second = sessions.register("RG0001", "c2", Credential::Password);
        let _other = sessions.register("RG0002", "c1", Credential::Password);
        let _third = sessions.register("RG0001", "c3", Credential::Password);
        assert_eq!(first.kick.wait().await, KickReason::TooMany);
        assert_eq!(sessions.count(), 3, "two of RG0001, one of RG0002");
        // A reconnect with a known client id takes its own session over and closes no other.
        let _again = sessions.register("RG0001", "c3", Credential::Password);
        assert_eq!(sessions.count(), 3);
    }
}
