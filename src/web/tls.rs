//! HTTPS and WSS on the HTTP port (`http.tls`, flag `--http-tls`): the router is served unchanged over rustls, with
//! the server certificate the MQTT TLS listeners use (`ingest::identity::server_certificate`).
//!
//! Like the MQTT front door, the accept loop only accepts: each connection's TLS handshake runs in a task of its own
//! under [`HANDSHAKE_TIMEOUT`], so a silent socket or a half-sent ClientHello holds nothing but itself. Finished
//! handshakes are handed to `axum::serve` through [`HttpsListener`] (an `axum::serve::Listener`).
//!
//! A client that speaks plain HTTP to this port gets a readable `400` ("use https://") instead of a TLS alert it
//! cannot show, and is counted (`dc_http_refused_total{reason="plain_http_on_tls"}`); failed handshakes (a client
//! that does not trust the certificate, garbage) are counted as `tls_handshake`, timeouts as `tls_timeout`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::metrics::HTTP_REFUSED;

/// Deadline for the TLS handshake of one connection.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first octet of a TLS record carrying a handshake message (ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

const PLAIN_HTTP_ANSWER: &str = "This port serves HTTPS only: use https:// (and wss:// for websockets).\n";

/// The HTTPS acceptor when `http.tls` is on: the `[tls]` certificate, or the deployment CA's for `tls.server_names`
/// (the same `pki/server.pem` as the MQTT TLS listeners). Needs the data dir (the CA lives there).
pub fn acceptor(cfg: &crate::config::Config, data_dir: Option<&Path>) -> Result<Option<TlsAcceptor>, HttpsError> {
    if !cfg.http.tls {
        return Ok(None);
    }
    let dir = data_dir.ok_or(HttpsError::NoDataDir)?;
    let tls = &cfg.tls;
    let (cert, key) =
        ingest::identity::server_certificate(dir, &tls.server_names, tls.cert.as_deref(), tls.key.as_deref())?;
    Ok(Some(ingest::front_door::tls::https_acceptor(&cert, &key)?))
}

/// Why HTTPS could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("http.tls needs a data dir (it holds the deployment CA)")]
    NoDataDir,
    #[error("HTTPS (http.tls) server certificate: {0}")]
    Certificate(#[from] ingest::IngestError),
}

/// Connections whose TLS handshake has finished, for `axum::serve`.
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Starts accepting on `tcp`. The accept task ends when this listener is dropped.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        // A small queue: past it, finished handshakes wait in their own tasks until axum takes them.
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    () = tx.closed() => return,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        // As on plain HTTP: small alert frames go out at once (no Nagle wait).
                        let _ = stream.set_nodelay(true);
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            if let Some(tls) = handshake(stream, peer, acceptor).await {
                                let _ = tx.send((tls, peer)).await;
                            }
                        });
                    }
                    // Out of file descriptors and the like: wait a little rather than spin (as axum's own loop does).
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Self { ready, local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept task only ends once this listener is gone, so this cannot happen while we are polled.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The TLS handshake of one connection, or `None` (answered, refused or timed out; counted and logged at debug).
async fn handshake(stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor) -> Option<TlsStream<TcpStream>> {
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut first = [0u8; 1];
        if stream.peek(&mut first).await.ok()? == 0 {
            return None;
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            HTTP_REFUSED.with_label_values(&["plain_http_on_tls"]).inc();
            tracing::debug!(%peer, "plain HTTP on the HTTPS port");
            answer_plain_http(stream).await;
            return None;
        }
        match acceptor.accept(stream).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                HTTP_REFUSED.with_label_values(&["tls_handshake"]).inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
        }
    })
    .await;
    result.unwrap_or_else(|_| {
        HTTP_REFUSED.with_label_values(&["tls_timeout"]).inc();
        None
    })
}

/// A `400` a browser or curl can show, then close. The request is read first (closing with unread data would send
/// a reset, and the client might lose the answer), and the socket drained briefly after our half-close.
async fn answer_plain_http(mut stream: TcpStream) {
    let mut request = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PLAIN_HTTP_ANSWER}",
        PLAIN_HTTP_ANSWER.len()
    );
    if stream.write_all(response.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut request).await, Ok(n) if n > 0) {}
    })
    .await;
}
