//! One worker task per target (subscriber or carrier): send the head of its outbox, record the outcome, back off
//! and retry, move on. One task per target is what makes delivery strictly ordered per subscriber while a slow
//! or hanging receiver delays nobody else.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use tokio::sync::{watch, Notify};

use super::config::Retry;
use super::journal::{AttemptRecord, Outcome, Record};
use super::outbox::Job;
use super::signature::{delivery_signature_header, SIGNATURE_HEADER};
use super::Inner;

/// Most response bytes kept as a CBC's acknowledgement or a receiver's error text.
const DETAIL_BYTES: usize = 512;

/// The detail of an attempt that hit the request timeout.
const TIMED_OUT: &str = "timed out";

/// The detail of a delivery the ledger says a receiver confirmed before (not sent again).
const CONFIRMED_EARLIER: &str = "confirmed earlier (delivery ledger): not sent again";

/// The crate's one clock (everything inside takes time as input).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Wait before attempt `failed + 1`: `initial · 2^(failed−1)` capped at `max`, then scaled by a random factor in
/// [0.5, 1] ("equal jitter") so receivers coming back up are not hit by every sender at the same instant.
pub(crate) fn backoff(retry: &Retry, failed: u32) -> Duration {
    let exp = failed.saturating_sub(1).min(30);
    let base = retry.backoff_initial.saturating_mul(1u32 << exp).min(retry.backoff_max);
    base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// The receiver's answer: status and the start of its body.
struct Answer {
    status: u16,
    body: String,
}

/// What an attempt says about itself: the delivery id receivers de-duplicate on, and the attempt's number.
struct Said {
    /// The local counter on one process; the delivery's key (`ledger.rs`) in cluster mode.
    id: String,
    /// The local count; the ledger's count across nodes in cluster mode (above 1: a retry).
    attempt: u32,
}

async fn send(
    client: &reqwest::Client,
    job: &Job,
    said: &Said,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut req = client
        .post(&job.request.url)
        .timeout(timeout)
        .header(CONTENT_TYPE, job.request.content_type)
        .header(USER_AGENT, concat!("disaster-cloud/", env!("CARGO_PKG_VERSION")))
        // Receivers de-duplicate on this (delivery is at-least-once) …
        .header("X-DC-Delivery", said.id.as_str())
        // … and can tell a drill from the real thing without parsing the body.
        .header("X-DC-Status", job.status)
        .header("X-DC-Message", job.identifier.as_str())
        .header("X-DC-Attempt", said.attempt.to_string());
    // The channel's own authentication (signature, bearer token).
    for (name, value) in &job.request.auth {
        req = req.header(*name, value.as_str());
    }
    if let Some(signer) = &job.request.signer {
        let signature =
            delivery_signature_header(signer.secret.as_bytes(), signer.unix_s, &said.id, said.attempt, &body);
        req = req.header(SIGNATURE_HEADER, signature);
    }
    let mut resp = req.body(body).send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let mut kept = Vec::new();
    while kept.len() < DETAIL_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => kept.extend_from_slice(&c),
            Ok(None) => break,
            // The status already arrived; a broken body does not turn a 2xx into a failure.
            Err(_) => break,
        }
    }
    kept.truncate(DETAIL_BYTES);
    Ok(Answer { status, body: String::from_utf8_lossy(&kept).into_owned() })
}

fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        TIMED_OUT.into()
    } else if e.is_connect() {
        format!("connect failed: {}", root_cause(&e))
    } else {
        format!("request failed: {}", root_cause(&e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Inner {
    fn retry_of(&self, job: &Job) -> Retry {
        job.channel.retry(&self.cfg)
    }

    /// Journals and applies one attempt's outcome; returns how long to wait before the next try of the same
    /// delivery (None: it is finished, go on with the next).
    fn finish_attempt(&self, job: &Job, result: Result<Answer, String>, elapsed: Duration) -> Option<Duration> {
        let retry = self.retry_of(job);
        let (ok, http_status, detail) = match result {
            Ok(a) if (200..300).contains(&a.status) => (true, Some(a.status), (!a.body.is_empty()).then_some(a.body)),
            Ok(a) => (false, Some(a.status), Some(format!("HTTP {}: {}", a.status, a.body))),
            Err(e) => (false, None, Some(e)),
        };
        let outcome = if ok {
            Outcome::Delivered
        } else if job.attempt >= retry.max_attempts {
            Outcome::Dead
        } else {
            Outcome::Retry
        };
        let record = Record::Attempt(AttemptRecord {
            id: job.id,
            target: job.target.clone(),
            attempt: job.attempt,
            at_ms: now_ms(),
            outcome,
            http_status,
            detail: detail.clone(),
            elapsed_ms: elapsed.as_millis() as u64,
        });
        self.commit(&record, false);
        match outcome {
            Outcome::Delivered => None,
            Outcome::Dead => {
                tracing::warn!(target_name = %job.target, delivery = job.id, attempts = job.attempt, detail = ?detail, "delivery moved to dead letters");
                None
            }
            Outcome::Retry => {
                let wait = backoff(&retry, job.attempt);
                tracing::debug!(target_name = %job.target, delivery = job.id, attempt = job.attempt, ?wait, detail = ?detail, "delivery failed; retrying");
                Some(wait)
            }
        }
    }
}

/// What the delivery ledger says before an attempt.
enum Gate {
    /// Send, as attempt `n` across the cluster.
    Send(u32),
    /// A receiver confirmed this delivery before (on a node that died, or here before a restart): not sent again.
    ConfirmedEarlier,
    /// The process is stopping.
    Stop,
}

/// How long an unanswered ledger is asked again; the delivery waits meanwhile (nothing is sent without its record).
const LEDGER_RETRY: Duration = Duration::from_millis(500);

/// Asks the ledger before an attempt, as long as it takes (see [`Gate`]).
async fn gate(ledger: &dyn super::DeliveryLedger, job: &Job, key: &str, stop: &mut watch::Receiver<bool>) -> Gate {
    let mut warned = false;
    let delivery =
        super::PlannedDelivery { key: key.to_string(), target: job.target.clone(), identifier: job.identifier.clone() };
    loop {
        match ledger.begin(&delivery).await {
            Ok(super::Begin::Attempt(n)) => {
                let outcome = if n > 1 { "retry" } else { "first" };
                super::metrics::METRICS.ledger.with_label_values(&[outcome]).inc();
                return Gate::Send(n);
            }
            Ok(super::Begin::Confirmed) => {
                super::metrics::METRICS.ledger.with_label_values(&["confirmed_earlier"]).inc();
                return Gate::ConfirmedEarlier;
            }
            Err(e) => {
                super::metrics::METRICS.ledger.with_label_values(&["unavailable"]).inc();
                if !warned {
                    tracing::warn!(error = %e, target_name = %job.target, delivery = key, "delivery ledger did not answer: the delivery waits");
                    warned = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(LEDGER_RETRY) => {}
                    _ = stop.changed() => return Gate::Stop,
                }
            }
        }
    }
}

/// Tells the ledger a receiver took the delivery; tried for a while. If it never hears, the next node to take
/// dissemination over sends the delivery again as a retry (receivers de-duplicate on its id): a duplicate, never a
/// loss.
async fn confirm(ledger: &dyn super::DeliveryLedger, key: &str) {
    for attempt in 0..20 {
        match ledger.confirm(key).await {
            Ok(()) => return,
            Err(e) if attempt == 0 => {
                tracing::warn!(error = %e, delivery = key, "delivery ledger: confirmation not recorded; retrying")
            }
            Err(_) => {}
        }
        tokio::time::sleep(LEDGER_RETRY).await;
    }
    super::metrics::METRICS.ledger.with_label_values(&["confirm_failed"]).inc();
}

/// The worker loop of one target. Ends when `stop` turns true (or its sender is gone).
pub(crate) async fn run_target(
    inner: Arc<Inner>,
    target: String,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let job = inner.next_job(&target);
        let Some(job) = job else {
            tokio::select! {
                _ = notify.notified() => continue,
                _ = stop.changed() => return,
            }
        };
        // Cluster mode: the attempt is recorded in the replicated ledger before the call.
        let keyed: Option<(Arc<dyn super::DeliveryLedger>, Arc<str>)> =
            inner.ledger.get().cloned().zip(job.key.clone());
        let said = match &keyed {
            Some((ledger, key)) => match gate(&**ledger, &job, key, &mut stop).await {
                Gate::Send(n) => Said { id: key.to_string(), attempt: n },
                Gate::ConfirmedEarlier => {
                    inner.finish_attempt(
                        &job,
                        Ok(Answer { status: 200, body: CONFIRMED_EARLIER.into() }),
                        Duration::ZERO,
                    );
                    continue;
                }
                Gate::Stop => return,
            },
            None => Said { id: job.id.to_string(), attempt: job.attempt },
        };
        let timeout = inner.retry_of(&job).request_timeout;
        let started = Instant::now();
        let result = match job.request.body.clone() {
            Ok(body) => {
                tokio::select! {
                    r = send(&inner.client, &job, &said, body, timeout) => r,
                    _ = stop.changed() => return,
                }
            }
            Err(e) => Err(e),
        };
        if let (Some((ledger, key)), Ok(answer)) = (&keyed, &result) {
            if (200..300).contains(&answer.status) {
                confirm(&**ledger, key).await;
            }
        }
        if matches!(&result, Err(e) if e == TIMED_OUT) {
            super::metrics::METRICS.timeouts.with_label_values(&[job.channel.label()]).inc();
            tracing::warn!(target_name = %target, delivery = job.id, ?timeout, "delivery timed out");
        }
        if let Some(wait) = inner.finish_attempt(&job, result, started.elapsed()) {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let r = Retry {
            request_timeout: Duration::from_secs(1),
            max_attempts: 10,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
        };
        for _ in 0..100 {
            let d1 = backoff(&r, 1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d3 = backoff(&r, 3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            let d20 = backoff(&r, 20);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_millis(1000), "{d20:?}");
        }
    }
}
