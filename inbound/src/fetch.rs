//! One source's HTTP client: every request it makes goes only where the source's [`EgressPolicy`] allows
//! (`egress.rs`), under one deadline and one size bound, with redirects followed by hand and checked per hop. The
//! CAP feed poller (`poll.rs`) and the vehicle-detector feed poller (`vd/poll.rs`) both fetch through it, so a new
//! kind of polled source gets the same egress rules by construction.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION};
use http::{HeaderName, HeaderValue, StatusCode};

use super::egress::{EgressPolicy, GuardedResolver, Network, Refusal, MAX_REDIRECTS};
use super::error::InboundError;

/// A client bound to one source's policy: redirects off (followed by hand), no proxy from the environment (the
/// proxy's address, not the target's, would be the one checked), and a resolver that enforces the policy on every
/// address it returns.
pub(crate) struct GuardedClient {
    client: reqwest::Client,
    /// Where this source's requests may go.
    policy: Arc<EgressPolicy>,
    /// Whole-request deadline, redirect hops and body included.
    timeout: Duration,
}

/// The wait before a poller's next poll: `interval_s` when healthy, doubling per consecutive failure up to
/// `max_backoff_s`.
pub(crate) fn poll_delay(interval_s: u64, failures: u32, max_backoff_s: u64) -> Duration {
    let factor = 1u64.checked_shl(failures.min(20)).unwrap_or(u64::MAX);
    Duration::from_secs(interval_s.saturating_mul(factor).min(max_backoff_s))
}

/// What a GET brought back.
pub(crate) enum Fetched {
    /// 304: the validators we sent still hold.
    NotModified,
    /// 200, with the validators to send next time.
    Body { bytes: Vec<u8>, validators: Validators },
}

/// A feed's validators from its last whole answer (`ETag`, `Last-Modified`), sent back as `If-None-Match` /
/// `If-Modified-Since` so that an unchanged feed costs a 304. Both pollers (CAP feeds, detector feeds) keep one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Validators {
    etag: Option<HeaderValue>,
    last_modified: Option<HeaderValue>,
}

impl Validators {
    /// The conditional request headers these validators make.
    pub(crate) fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut conditional = Vec::new();
        if let Some(v) = &self.etag {
            conditional.push((IF_NONE_MATCH, v.clone()));
        }
        if let Some(v) = &self.last_modified {
            conditional.push((IF_MODIFIED_SINCE, v.clone()));
        }
        conditional
    }
}

/// Why a GET brought nothing back.
pub(crate) enum FetchError {
    /// Connection refused, DNS, TLS, timeout (the error chain, for the log).
    Unreachable(String),
    /// An answer other than 200 or 304.
    Status(u16),
    /// A body (or a Content-Length) over the limit.
    TooLarge { size: usize },
    /// The URL, a redirect or a resolved address is not somewhere this source may reach.
    Refused(Refusal),
}

impl GuardedClient {
    /// The client of the source whose own URL is `url`; `source` names it in errors (`[[feed]] \`ncdr\``).
    pub fn new(
        source: &str,
        url: &reqwest::Url,
        hosts: &[String],
        allow: &[Network],
        timeout: Duration,
    ) -> Result<Self, InboundError> {
        let policy = Arc::new(
            EgressPolicy::new(url, hosts, allow).map_err(|e| InboundError::Invalid(format!("{source}: {e}")))?,
        );
        let client = reqwest::Client::builder()
            .user_agent(concat!("disaster-cloud-inbound/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
            .build()
            .map_err(|e| InboundError::Client(e.to_string()))?;
        Ok(GuardedClient { client, policy, timeout })
    }

    /// GET with the egress checks, the deadline and the size bound; `limit` bytes at most are read. `headers`: the
    /// conditional headers (If-None-Match, If-Modified-Since) or none.
    pub async fn get(
        &self,
        url: reqwest::Url,
        limit: usize,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<Fetched, FetchError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let unreachable = |e: reqwest::Error| match Refusal::within(&e) {
            // The resolver refused the name's addresses: a policy refusal, not a transport failure.
            Some(r) => FetchError::Refused(r),
            None => FetchError::Unreachable(error_chain(&e)),
        };
        let mut url = url;
        let mut hops = 0;
        let mut resp = loop {
            self.policy.check_url(&url).map_err(FetchError::Refused)?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut req = self.client.get(url.clone()).timeout(left);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(unreachable)?;
            // The address actually connected to, checked again before anything of the answer is used.
            if let Some(remote) = resp.remote_addr() {
                self.policy
                    .check_address(url.host_str().unwrap_or_default(), remote.ip())
                    .map_err(FetchError::Refused)?;
            }
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED {
                break resp;
            }
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(FetchError::Refused(Refusal::BadRedirect(format!("more than {MAX_REDIRECTS} redirects"))));
            }
            let next =
                resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()).and_then(|l| url.join(l).ok()).ok_or_else(
                    || FetchError::Refused(Refusal::BadRedirect(format!("{} without a Location", resp.status()))),
                )?;
            self.policy.check_redirect(&url, &next).map_err(FetchError::Refused)?;
            url = next;
        };
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if resp.status() != StatusCode::OK {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let validators = Validators {
            etag: resp.headers().get(ETAG).cloned(),
            last_modified: resp.headers().get(LAST_MODIFIED).cloned(),
        };
        // Content-Length is a claim; the loop below enforces the bound on what actually arrives.
        if let Some(len) = resp.content_length() {
            if len > limit as u64 {
                return Err(FetchError::TooLarge { size: usize::try_from(len).unwrap_or(usize::MAX) });
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { size: bytes.len() + chunk.len() });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, validators })
    }
}

/// reqwest's Display hides the cause ("error sending request"); the chain says "connection refused".
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
