//! Agency vehicle-detector feeds: live VD data in the MOTC transport data exchange format, polled and turned into
//! readings of our registered `vehicle_detector` sensors, so an agency's detectors count without MQTT.
//!
//! # The format (MOTC 即時路況資料標準 v2.0, `VDLive`)
//! Published by the national freeway bureau (NFB), the highway bureau (THB) and cities through PTX/TDX
//! (`https://tdx.transportdata.tw/api/basic/v2/Road/Traffic/Live/VD/Freeway?$format=JSON`, formerly
//! `https://traffic.transportdata.tw/MOTC/v2/Road/Traffic/Live/VD/Freeway?$format=JSON`) and as open files
//! (`https://tisvcloud.freeway.gov.tw/history/motc20/VDLive.xml`, XML in the namespace
//! `http://traffic.transportdata.tw/standard/traffic/schema/`, refreshed every 60 s, no key needed). The shape,
//! as the PTX Swagger documentation describes it (field list and code tables transcribed in GitHub
//! `scchnxx/Road` `VDLiveList.swift`, with a captured NFB document in `Tests/RoadTests/TestData.swift`; the XML
//! element names as read by `tisvcloud` users, e.g. parsers selecting `./ns:VDLives/ns:VDLive` and
//! `./ns:LinkFlows/ns:LinkFlow/ns:Lanes/ns:Lane`):
//! ```text
//! VDLiveList: UpdateTime, UpdateInterval (s), SrcUpdateTime, SrcUpdateInterval (s), AuthorityCode, VDLives[]
//!   VDLive: VDID, SubAuthorityCode, LinkFlows[], Status, DataCollectTime (ISO 8601, +08:00)
//!     Status: 0 normal, 1 communication failure, 2 out of service / under construction, 3 faulty
//!     LinkFlow: LinkID, Lanes[]
//!       Lane: LaneID, LaneType (1 general … 11 other), Speed (km/h, -99 = data error), Occupancy (%), Vehicles[]
//!         Vehicle: VehicleType (S small, L large, T trailer, M motorcycle), Volume (-99 = data error), Speed
//! ```
//! The fixtures in `tests/fixtures/` are an NFB JSON document of that shape and the same detectors as XML.
//! Not built: TDX's OAuth2 client-credentials login (the `tdx.transportdata.tw/api` URLs need a bearer token);
//! the open `tisvcloud` files and agency mirrors need none.
//!
//! # Layout
//! - `decode.rs`: the document (JSON or XML, told apart by content) → [`decode::VdLive`] records, one broken
//!   record never sinking the others.
//! - `readings.rs`: the checks (mapping, Status, time, values) and the lane aggregation → [`DetectorReading`];
//!   pure.
//! - `poll.rs`: one feed's poller: conditional GET through the source's guarded client (`crate::fetch`, the egress
//!   rules of CAP feeds), backoff, duplicates.
//!
//! # Flow
//! ```text
//! VdFeeds poller ─egress─▶ GET (If-None-Match) ─▶ decode ─▶ take (map, check, aggregate) ─▶ VdBatch channel
//!   ─▶ the binary (src/vd_feed.rs): native-JSON readings on `sensors/{sensor}/readings` ─▶ HotPath::process
//! ```
//! Every refusal has a reason: the whole document's ([`poll::VdPollError`]) or one record's
//! ([`readings::RecordRefusal`]); both are counted in `dc_vd_feed_refused_total{source,reason}`.

pub mod decode;
pub mod poll;
pub mod readings;

#[cfg(test)]
mod tests;

use std::sync::{Arc, LazyLock};

use prometheus::{register_int_counter_vec, register_int_gauge_vec, IntCounterVec, IntGaugeVec};
use tokio::sync::mpsc;

pub use readings::DetectorReading;

use crate::config::VdFeedSource;
use crate::error::InboundError;
use crate::Clock;
use poll::{VdPollError, VdPoller};
use readings::RecordRefusal;

/// The readings one poll of one feed gave, for the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct VdBatch {
    /// The `[[vd_feed]]` name.
    pub source: String,
    pub readings: Vec<DetectorReading>,
}

/// `dc_vd_feed_*` in the default registry; every configured source's labels are registered at start.
pub struct VdMetrics {
    /// Polls by `source` and `result` (`ok`, `not_modified`, `error`).
    pub polls: IntCounterVec,
    /// Readings handed to the hot path, by `source` (each carries up to three metrics).
    pub readings: IntCounterVec,
    /// Refused documents and records, by `source` and `reason`.
    pub refused: IntCounterVec,
    /// Consecutive failed polls (0 when healthy).
    pub failures: IntGaugeVec,
}

pub static METRICS: LazyLock<VdMetrics> = LazyLock::new(|| VdMetrics {
    polls: register_int_counter_vec!(
        "dc_vd_feed_polls_total",
        "Vehicle-detector feed polls by result",
        &["source", "result"]
    )
    .expect("metric registers"),
    readings: register_int_counter_vec!(
        "dc_vd_feed_readings_total",
        "Detector records of vehicle-detector feeds turned into readings of our sensors",
        &["source"]
    )
    .expect("metric registers"),
    refused: register_int_counter_vec!(
        "dc_vd_feed_refused_total",
        "Vehicle-detector feed documents and detector records refused, by reason",
        &["source", "reason"]
    )
    .expect("metric registers"),
    failures: register_int_gauge_vec!(
        "dc_vd_feed_consecutive_failures",
        "Consecutive failed polls of a vehicle-detector feed (0 when healthy)",
        &["source"]
    )
    .expect("metric registers"),
});

fn preregister(source: &str) {
    let m = &*METRICS;
    for result in ["ok", "not_modified", "error"] {
        m.polls.with_label_values(&[source, result]);
    }
    m.readings.with_label_values(&[source]);
    for reason in VdPollError::LABELS.iter().chain(RecordRefusal::LABELS) {
        m.refused.with_label_values(&[source, reason]);
    }
    m.failures.with_label_values(&[source]);
}

/// The running pollers; dropping it stops them.
pub struct VdFeeds {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl VdFeeds {
    /// Starts one poller per source (first poll at once) inside the current tokio runtime; their readings arrive on
    /// the returned channel. A full channel makes the pollers wait (a poll every minute can afford to).
    pub fn start(sources: Vec<VdFeedSource>, clock: Clock) -> Result<(VdFeeds, mpsc::Receiver<VdBatch>), InboundError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| InboundError::Invalid("VdFeeds::start must be called inside a tokio runtime".into()))?;
        let (tx, rx) = mpsc::channel(64);
        let mut pollers = Vec::new();
        for source in sources {
            source.validate().map_err(InboundError::Invalid)?;
            preregister(&source.name);
            pollers.push(VdPoller::new(source)?);
        }
        let tasks = pollers
            .into_iter()
            .map(|mut poller| {
                let tx = tx.clone();
                let clock = Arc::clone(&clock);
                runtime.spawn(async move {
                    loop {
                        if let Ok(report) = poller.poll_once(clock()).await {
                            if !report.readings.is_empty() && tx.send(poller.batch(report.readings)).await.is_err() {
                                // The receiver is gone: the server is stopping.
                                return;
                            }
                        }
                        tokio::time::sleep(poller.next_delay()).await;
                    }
                })
            })
            .collect();
        Ok((VdFeeds { tasks }, rx))
    }
}

impl Drop for VdFeeds {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
