//! The on-air ledger: per carrier, every (message identifiers, serial number, cells) we asked its CBC to put on the
//! air and have not seen stopped, and the recent history of what was stopped.
//!
//! Why it exists: with the Concurrent-Warning-Message-Indicator set and Number-of-Broadcasts-Requested 0, an eNB
//! broadcasts every Write-Replace with a new serial number *beside* what it already broadcasts, until a
//! Stop-Warning (the MME's Kill, TS 36.413 §8.12.2) names that identifier and serial in that cell. So what is on the
//! air is exactly what was written and not stopped, per carrier and per cell — and the only way to end a broadcast
//! is to name it. Planning stops from this ledger (not from the alert's latest broadcast, not from today's
//! targeting of its zone) is what lets "an end stops everything of the alert's" hold after updates, area changes,
//! carrier failures and restarts.
//!
//! Nothing here is journaled separately: the ledger is rebuilt by [`Ledger::written`] / [`Ledger::stopping`] from
//! the broadcasts of every journaled change and by [`Ledger::attempt`] from every delivery outcome, through the same
//! `State::apply` the live path uses. A restart therefore restores it exactly, and the outbox re-sends what was in
//! flight (a write not acknowledged, a stop not acknowledged) in order, because those deliveries are still pending.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::broadcast::{BroadcastKind, BroadcastRecord};

/// Stopped entries kept for `GET /api/v1/broadcasts`' history (newest last).
const HISTORY: usize = 500;

/// Where one carrier's broadcast stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AirState {
    /// The Write-Replace is queued or being retried: it may be on the air (the CBC may have taken it before an error).
    Writing,
    /// The CBC acknowledged the Write-Replace.
    OnAir,
    /// A Stop-Warning is queued or being retried.
    Stopping,
    /// The CBC acknowledged the Stop-Warning.
    Stopped,
}

/// One broadcast on one carrier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AirEntry {
    pub carrier: String,
    pub alert_id: String,
    /// The alert version whose message it carries.
    pub version: u32,
    pub class: String,
    /// Chinese channel, then English channel.
    pub message_ids: [u16; 2],
    pub serial: u16,
    pub message_code: u16,
    pub update_number: u8,
    /// The cells it was written to (`466-92-2560257`): the cells its stop names.
    pub cells: Vec<String>,
    pub state: AirState,
    pub write_delivery: u64,
    pub stop_delivery: Option<u64>,
    /// The Write-Replace went to the dead letters: the CBC may or may not have it, so it is still stopped.
    pub write_failed: bool,
    /// The Stop-Warning went to the dead letters: it is still on the air until an operator replays the stop.
    pub stop_failed: bool,
    /// Unix ms: queued, acknowledged on the air, stop acknowledged.
    pub queued_ms: i64,
    pub on_air_ms: Option<i64>,
    pub stopped_ms: Option<i64>,
}

impl AirEntry {
    /// Still (possibly) broadcasting and no stop planned yet.
    pub fn needs_stop(&self) -> bool {
        matches!(self.state, AirState::Writing | AirState::OnAir)
    }
}

/// What a delivery id is to the ledger.
#[derive(Debug, Clone)]
struct Ref {
    carrier: String,
    key: (u16, u16),
    stop: bool,
}

/// The ledger (see the module doc).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Carrier → (first message identifier, serial) → entry, for everything not yet seen stopped.
    live: BTreeMap<String, BTreeMap<(u16, u16), AirEntry>>,
    /// Stopped entries, oldest first.
    history: VecDeque<AirEntry>,
    by_delivery: HashMap<u64, Ref>,
    /// Carriers the on-air gauge has a series for.
    gauge_carriers: std::collections::BTreeSet<String>,
}

impl Ledger {
    /// A broadcast was journaled: its Write-Replace envelopes enter the ledger as `Writing`, its Stop-Warning
    /// envelopes move their entries to `Stopping`.
    pub fn apply(&mut self, r: &BroadcastRecord, at_ms: i64) {
        if r.error.is_some() {
            return;
        }
        let key = (r.message_ids[0], r.serial);
        for c in &r.carriers {
            let Some(delivery) = c.delivery_id else { continue };
            match r.kind {
                BroadcastKind::WriteReplace => {
                    let entry = AirEntry {
                        carrier: c.carrier.clone(),
                        alert_id: r.alert_id.clone(),
                        version: r.version,
                        class: r.class.clone(),
                        message_ids: r.message_ids,
                        serial: r.serial,
                        message_code: r.message_code,
                        update_number: r.update_number,
                        cells: c.cell_ids.clone(),
                        state: AirState::Writing,
                        write_delivery: delivery,
                        stop_delivery: None,
                        write_failed: false,
                        stop_failed: false,
                        queued_ms: at_ms,
                        on_air_ms: None,
                        stopped_ms: None,
                    };
                    self.by_delivery.insert(delivery, Ref { carrier: c.carrier.clone(), key, stop: false });
                    self.live.entry(c.carrier.clone()).or_default().insert(key, entry);
                }
                BroadcastKind::Stop => {
                    if let Some(e) = self.live.get_mut(&c.carrier).and_then(|m| m.get_mut(&key)) {
                        self.by_delivery.insert(delivery, Ref { carrier: c.carrier.clone(), key, stop: true });
                        e.state = AirState::Stopping;
                        e.stop_delivery = Some(delivery);
                        e.stop_failed = false;
                    }
                }
            }
        }
    }

    /// A delivery's attempt ended: `delivered` (2xx), or `dead` (given up). Retries change nothing here.
    pub fn attempt(&mut self, delivery: u64, delivered: bool, dead: bool, at_ms: i64) {
        let Some(r) = self.by_delivery.get(&delivery).cloned() else { return };
        let Some(live) = self.live.get_mut(&r.carrier) else { return };
        let Some(e) = live.get_mut(&r.key) else { return };
        match (r.stop, delivered, dead) {
            (false, true, _) if e.write_delivery == delivery => {
                if e.state == AirState::Writing {
                    e.state = AirState::OnAir;
                }
                e.on_air_ms.get_or_insert(at_ms);
                e.write_failed = false;
            }
            (false, false, true) if e.write_delivery == delivery => e.write_failed = true,
            (true, true, _) if e.stop_delivery == Some(delivery) => {
                let mut e = live.remove(&r.key).expect("present above");
                // Its deliveries are done with: the references go, so the map holds only what is on the air.
                self.by_delivery.remove(&e.write_delivery);
                self.by_delivery.remove(&delivery);
                e.state = AirState::Stopped;
                e.stopped_ms = Some(at_ms);
                self.history.push_back(e);
                while self.history.len() > HISTORY {
                    self.history.pop_front();
                }
            }
            (true, false, true) if e.stop_delivery == Some(delivery) => e.stop_failed = true,
            _ => {}
        }
        if live.is_empty() {
            self.live.remove(&r.carrier);
        }
    }

    /// An operator replayed dead letter `old` as `new`: the entry follows the new delivery.
    pub fn replayed(&mut self, old: u64, new: u64) {
        let Some(r) = self.by_delivery.get(&old).cloned() else { return };
        if let Some(e) = self.live.get_mut(&r.carrier).and_then(|m| m.get_mut(&r.key)) {
            if r.stop {
                e.stop_delivery = Some(new);
                e.stop_failed = false;
            } else {
                e.write_delivery = new;
                e.write_failed = false;
            }
        }
        self.by_delivery.insert(new, r);
    }

    /// The alert's entries that still broadcast (or may) and have no stop planned, per carrier in carrier order.
    pub fn to_stop<'a>(&'a self, alert_id: &'a str) -> impl Iterator<Item = &'a AirEntry> + 'a {
        self.live.values().flat_map(|m| m.values()).filter(move |e| e.alert_id == alert_id && e.needs_stop())
    }

    /// Whether anything of the alert is (or may be) on the air, stops in flight included.
    pub fn has_live(&self, alert_id: &str) -> bool {
        self.live.values().flat_map(|m| m.values()).any(|e| e.alert_id == alert_id)
    }

    /// Message codes on the air (or in flight) on any carrier: the allocator skips them.
    pub fn codes_in_use(&self) -> impl Iterator<Item = u16> + '_ {
        self.live.values().flat_map(|m| m.values()).map(|e| e.message_code)
    }

    /// Every carrier's live entries, carrier by carrier.
    pub fn live(&self) -> impl Iterator<Item = &AirEntry> {
        self.live.values().flat_map(|m| m.values())
    }

    /// Stopped entries, newest first.
    pub fn history(&self) -> impl Iterator<Item = &AirEntry> {
        self.history.iter().rev()
    }

    /// Sets `dc_cbc_on_air{carrier}` (carriers seen since the start keep their series, at 0 once empty).
    pub fn export_gauge(&mut self) {
        for c in self.live.keys() {
            self.gauge_carriers.insert(c.clone());
        }
        for c in &self.gauge_carriers {
            let n = self.live.get(c).map_or(0, BTreeMap::len);
            crate::metrics::METRICS.cbc_on_air.with_label_values(&[c]).set(n as i64);
        }
    }
}
