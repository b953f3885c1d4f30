//! TLS for the 8883/8884 listeners: rustls (ring provider) requiring a client certificate from the deployment CA,
//! with the device store's revocation list checked during the handshake. Also [`https_acceptor`], the same server
//! certificate without client certificates, for the binary's HTTPS listener.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{ring as ring_provider, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::TlsAcceptor;

use crate::devices::{DeviceStore, Fingerprint};
use crate::IngestError;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> IngestError {
    IngestError::Tls(e.to_string())
}

/// The CA-chain check of webpki, then our revocation list: a revoked certificate fails the handshake itself.
#[derive(Debug)]
struct RevocationCheck {
    inner: Arc<dyn ClientCertVerifier>,
    devices: Arc<DeviceStore>,
}

impl ClientCertVerifier for RevocationCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if self.devices.is_certificate_revoked(&Fingerprint::of_der(end_entity)) {
            return Err(TlsError::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn server_chain(
    server_cert: &Path,
    server_key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), IngestError> {
    let named = |path: &Path| {
        let path = path.display().to_string();
        move |e: tokio_rustls::rustls::pki_types::pem::Error| tls_err(format!("{path}: {e}"))
    };
    let chain = CertificateDer::pem_file_iter(server_cert)
        .map_err(named(server_cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(named(server_cert))?;
    let key = PrivateKeyDer::from_pem_file(server_key).map_err(named(server_key))?;
    Ok((chain, key))
}

/// An acceptor for HTTPS (and WSS): the server's chain and key, no client certificates (operators authenticate with
/// tokens, citizens are anonymous), HTTP/1.1 by ALPN (websocket upgrades need it).
pub fn https_acceptor(server_cert: &Path, server_key: &Path) -> Result<TlsAcceptor, IngestError> {
    let (chain, key) = server_chain(server_cert, server_key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Builds the acceptor from PEM files: the CA that signs device certificates, and the server's chain and key.
pub fn acceptor(
    ca_cert: &Path,
    server_cert: &Path,
    server_key: &Path,
    devices: Arc<DeviceStore>,
) -> Result<TlsAcceptor, IngestError> {
    fn named(path: &Path) -> impl Fn(tokio_rustls::rustls::pki_types::pem::Error) -> IngestError + '_ {
        move |e| tls_err(format!("{}: {e}", path.display()))
    }
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_cert).map_err(named(ca_cert))? {
        roots.add(cert.map_err(named(ca_cert))?).map_err(tls_err)?;
    }
    let (chain, key) = server_chain(server_cert, server_key)?;
    let provider = provider();
    let webpki =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider)).build().map_err(tls_err)?;
    let verifier = Arc::new(RevocationCheck { inner: webpki, devices });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
