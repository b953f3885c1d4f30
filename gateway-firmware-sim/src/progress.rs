//! The progress bar of long runs. It only reads the shared counters, so it can never slow delivery down; indicatif hides
//! it by itself when stderr is not a terminal (CI logs stay clean).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::courier::Live;

/// Runs shorter than this get no bar: it would only flash.
pub const MIN_RUN_FOR_BAR: Duration = Duration::from_secs(2);

/// A bar ticking from a background task until dropped.
pub struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// `total`: messages expected (None: unknown, e.g. an uncapped load run, shown as a spinner).
    pub fn start(total: Option<u64>, live: Arc<Live>, label: &'static str) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {prefix} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} {prefix} {msg}")
                    .expect("static template"),
            ),
        };
        bar.set_prefix(label);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let acked = live.acked.load(Ordering::Relaxed);
                b.set_position(acked);
                b.set_message(format!(
                    "buffered {} dropped {} connected {}",
                    live.pending.load(Ordering::Relaxed).max(0),
                    live.dropped.load(Ordering::Relaxed),
                    live.connected.load(Ordering::Relaxed).max(0),
                ));
            }
        });
        Progress { bar, task }
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
