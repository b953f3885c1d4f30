//! Device identity: the deployment's own certificate authority, device certificates, and revocation.
//!
//! Each deployment makes its own CA on first use (`<data dir>/pki/ca.pem` + `ca.key`, ECDSA P-256). It signs
//! - device certificates: subject `CN = O = <device id>` (the O is what rumqttd-style tenant isolation keys on, so it
//!   is never empty: device ids are 1–32 letters and digits), extended key usage clientAuth;
//! - the TLS server certificate (`pki/server.pem`) for the names in `BrokerConfig::tls_server_names`, shared by the
//!   MQTT TLS listeners and the HTTPS listener of the binary ([`server_certificate`]).
//!
//! [`provision`] issues a device's key and certificate into `pki/devices/<id>/` (with a copy of the CA certificate
//! and a fresh password for the plain listeners) and registers the certificate's fingerprint in the device store;
//! [`revoke`] marks the device revoked and puts its certificate on the store's revocation list. The front door checks
//! that list during the TLS handshake and again at CONNECT, and closes live sessions of a revoked device.
//!
//! Why fingerprints rather than a CRL: the store already has to be consulted at CONNECT (to map certificate → device),
//! and a fingerprint match makes "only the newest certificate of a device works" and "revocation takes effect within a
//! second" hold without distributing or re-loading CRLs.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::devices::{DeviceStore, Fingerprint};
use crate::persist::{self, FileLock};
use crate::topic::is_valid_device_id;
use crate::IngestError;

/// Where ingest keeps its state inside the server's data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The device store (passwords, certificate fingerprints, revocation list).
    pub fn devices_file(&self) -> PathBuf {
        self.root.join("devices.json")
    }

    /// Operators' changes to the sensor registry.
    pub fn sensors_file(&self) -> PathBuf {
        self.root.join("sensors.json")
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.root.join("pki")
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.pki_dir().join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.pki_dir().join("ca.key")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.pki_dir().join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.pki_dir().join("server.key")
    }

    fn server_names(&self) -> PathBuf {
        self.pki_dir().join("server.names")
    }

    /// Where [`provision`] writes a device's files: `device.pem`, `device.key`, `ca.pem`.
    pub fn device_dir(&self, device_id: &str) -> PathBuf {
        self.pki_dir().join("devices").join(device_id)
    }
}

/// A key and certificate the CA issued.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("Issued").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

/// The deployment's certificate authority.
pub struct DeploymentCa {
    /// The parameters the CA certificate was made from; rcgen signs with the issuer's name and key, which these and
    /// `key` reproduce exactly, so the certificate file never needs parsing.
    params: CertificateParams,
    key: KeyPair,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
}

const CA_COMMON_NAME: &str = "disaster-cloud deployment CA";
const CA_ORGANIZATION: &str = "disaster-cloud";

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    // Signs end-entity certificates only; no intermediate CAs below it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn cert_err(e: impl std::fmt::Display) -> IngestError {
    IngestError::Certificate(e.to_string())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], IngestError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new().fill(&mut out).map_err(|_| cert_err("no randomness from the OS"))?;
    Ok(out)
}

fn serial() -> Result<SerialNumber, IngestError> {
    let mut bytes = random_bytes::<16>()?;
    bytes[0] &= 0x7f; // a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for devices whose clocks run a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * years);
}

impl DeploymentCa {
    /// Loads the CA from `<data dir>/pki`, creating it on first use.
    pub fn load_or_create(data_dir: &DataDir) -> Result<Self, IngestError> {
        let (cert_path, key_path) = (data_dir.ca_cert(), data_dir.ca_key());
        let _lock = FileLock::acquire(&cert_path)?;
        match (persist::read_optional(&cert_path)?, persist::read_optional(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) => {
                let key = KeyPair::from_pem(&key_pem).map_err(|e| cert_err(format!("{}: {e}", key_path.display())))?;
                let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
                    .map_err(|e| cert_err(format!("{}: {e}", cert_path.display())))?;
                Ok(DeploymentCa { params: ca_params(), key, cert_pem, cert_der })
            }
            (None, None) => {
                let key = KeyPair::generate().map_err(cert_err)?;
                let mut params = ca_params();
                validity(&mut params, 30);
                params.serial_number = Some(serial()?);
                let cert = params.self_signed(&key).map_err(cert_err)?;
                persist::write_atomically(&key_path, key.serialize_pem().as_bytes(), true)?;
                persist::write_atomically(&cert_path, cert.pem().as_bytes(), false)?;
                tracing::info!(path = %cert_path.display(), "deployment CA created");
                Ok(DeploymentCa { params: ca_params(), key, cert_pem: cert.pem(), cert_der: cert.der().clone() })
            }
            _ => Err(cert_err(format!(
                "{} and {} must both exist or both be absent",
                cert_path.display(),
                key_path.display()
            ))),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    fn issue(&self, mut params: CertificateParams, years: i64) -> Result<Issued, IngestError> {
        validity(&mut params, years);
        params.serial_number = Some(serial()?);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(cert_err)?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: Fingerprint::of_der(cert.der()),
            cert_der: cert.der().clone(),
        })
    }

    /// A device certificate: `CN = O = device id`, client authentication only.
    pub fn issue_device(&self, device_id: &str) -> Result<Issued, IngestError> {
        if !is_valid_device_id(device_id) {
            return Err(IngestError::InvalidDeviceId(device_id.chars().take(64).collect()));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device_id);
        dn.push(DnType::OrganizationName, device_id);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, 10)
    }

    /// The TLS listeners' certificate, valid for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> Result<Issued, IngestError> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("disaster-cloud"));
        dn.push(DnType::OrganizationName, CA_ORGANIZATION);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, 5)
    }

    /// The server certificate and key files for the TLS listeners, issued now if absent or made for other names.
    pub fn ensure_server_cert(&self, data_dir: &DataDir, names: &[String]) -> Result<(PathBuf, PathBuf), IngestError> {
        let (cert, key, names_file) = (data_dir.server_cert(), data_dir.server_key(), data_dir.server_names());
        let _lock = FileLock::acquire(&cert)?;
        let wanted = names.join("\n");
        let current = persist::read_optional(&names_file)?;
        if current.as_deref() != Some(wanted.as_str()) || !cert.exists() || !key.exists() {
            let issued = self.issue_server(names)?;
            persist::write_atomically(&key, issued.key_pem.as_bytes(), true)?;
            persist::write_atomically(&cert, issued.cert_pem.as_bytes(), false)?;
            persist::write_atomically(&names_file, wanted.as_bytes(), false)?;
            tracing::info!(path = %cert.display(), names = ?names, "TLS server certificate issued");
        }
        Ok((cert, key))
    }
}

/// The server certificate and key (PEM files) every TLS listener of a deployment serves: the operator's own pair when
/// both are given, otherwise one issued by the deployment CA in `data_dir` for `names` (made, with the CA, on first use;
/// reissued when the names change). One pair for MQTT and HTTPS, so devices and browsers trust the same CA.
pub fn server_certificate(
    data_dir: &Path,
    names: &[String],
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(PathBuf, PathBuf), IngestError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok((cert.to_path_buf(), key.to_path_buf())),
        (None, None) => {
            let dir = DataDir::new(data_dir);
            DeploymentCa::load_or_create(&dir)?.ensure_server_cert(&dir, names)
        }
        _ => Err(IngestError::Broker("give both a TLS certificate and its key, or neither".into())),
    }
}

/// What [`provision`] made. The password is shown once (only its hash is stored).
pub struct Provisioned {
    pub device_id: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
    pub fingerprint: Fingerprint,
    /// For the plain listeners (username = device id).
    pub password: String,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned")
            .field("device_id", &self.device_id)
            .field("cert_path", &self.cert_path)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// `disaster-cloud device provision <device-id>`: issues the device's key and certificate into
/// `<data dir>/pki/devices/<id>/`, sets a fresh password, and registers both in `<data dir>/devices.json`. Provisioning
/// an existing device rotates its credentials (the old certificate is revoked) and lifts a revocation.
pub fn provision(data_dir: &Path, device_id: &str) -> Result<Provisioned, IngestError> {
    let dir = DataDir::new(data_dir);
    let ca = DeploymentCa::load_or_create(&dir)?;
    let store = DeviceStore::open(&dir.devices_file())?;
    provision_with(&ca, &store, &dir, device_id, now_ms())
}

/// [`provision`] against an already open CA and store (the running server's, so the change applies at once).
pub fn provision_with(
    ca: &DeploymentCa,
    store: &DeviceStore,
    data_dir: &DataDir,
    device_id: &str,
    now_ms: i64,
) -> Result<Provisioned, IngestError> {
    let issued = ca.issue_device(device_id)?;
    let out = data_dir.device_dir(device_id);
    let (cert_path, key_path, ca_path) = (out.join("device.pem"), out.join("device.key"), out.join("ca.pem"));
    persist::write_atomically(&key_path, issued.key_pem.as_bytes(), true)?;
    persist::write_atomically(&cert_path, issued.cert_pem.as_bytes(), false)?;
    persist::write_atomically(&ca_path, ca.cert_pem().as_bytes(), false)?;
    let password: String = random_bytes::<16>()?.iter().map(|b| format!("{b:02x}")).collect();
    store.set_password(device_id, &password)?;
    store.register_certificate(device_id, issued.fingerprint, now_ms)?;
    tracing::info!(device = device_id, fingerprint = %issued.fingerprint, "device provisioned");
    Ok(Provisioned {
        device_id: device_id.to_string(),
        cert_path,
        key_path,
        ca_path,
        fingerprint: issued.fingerprint,
        password,
    })
}

/// `disaster-cloud device revoke <device-id>`: the device can no longer connect on any listener; a running server
/// picks the change up from the store file within a second and closes the device's sessions.
pub fn revoke(data_dir: &Path, device_id: &str) -> Result<(), IngestError> {
    let store = DeviceStore::open(&DataDir::new(data_dir).devices_file())?;
    store.revoke(device_id, now_ms())?;
    tracing::info!(device = device_id, "device revoked");
    Ok(())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_survives_reload_and_signs_verifiable_device_certs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let ca = DeploymentCa::load_or_create(&dir).unwrap();
        let again = DeploymentCa::load_or_create(&dir).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem(), "the CA is made once");

        // A certificate signed by the reloaded CA verifies against the original CA certificate.
        let issued = again.issue_device("TM0001").unwrap();
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier =
            tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&issued.cert_der, &[], tokio_rustls::rustls::pki_types::UnixTime::now())
            .expect("device certificate verifies against the deployment CA");
        assert!(again.issue_device("bad-id").is_err());
        assert!(again.issue_device("").is_err());
    }

    /// The subject's O is the device id (what rumqttd-style tenant isolation keys on): never empty.
    #[test]
    fn device_certificate_subject_o_is_the_device_id() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = DeploymentCa::load_or_create(&DataDir::new(tmp.path())).unwrap();
        let der = ca.issue_device("RG0042").unwrap().cert_der;
        // OID 2.5.4.10 (organizationName), then the string: tag, length, bytes. Present in the subject (the issuer's
        // O is "disaster-cloud").
        let oid = [0x06, 0x03, 0x55, 0x04, 0x0A];
        let values: Vec<&[u8]> = der
            .windows(oid.len())
            .enumerate()
            .filter(|(_, w)| *w == oid)
            .map(|(i, _)| {
                let at = i + oid.len();
                let len = usize::from(der[at + 1]);
                &der[at + 2..at + 2 + len]
            })
            .collect();
        assert_eq!(values, vec![&b"disaster-cloud"[..], &b"RG0042"[..]]);
    }

    #[test]
    fn provision_and_revoke_update_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let first = provision(tmp.path(), "RG0009").unwrap();
        assert!(first.key_path.exists() && first.cert_path.exists() && first.ca_path.exists());
        let store = DeviceStore::open(&DataDir::new(tmp.path()).devices_file()).unwrap();
        assert_eq!(store.identify_certificate(&first.fingerprint), Ok("RG0009".into()));
        assert_eq!(store.verify("RG0009", &first.password), Ok(()));

        let second = provision(tmp.path(), "RG0009").unwrap();
        store.refresh().unwrap();
        assert!(store.identify_certificate(&first.fingerprint).is_err(), "rotation retires the old certificate");
        assert_eq!(store.identify_certificate(&second.fingerprint), Ok("RG0009".into()));

        revoke(tmp.path(), "RG0009").unwrap();
        store.refresh().unwrap();
        assert!(store.is_certificate_revoked(&second.fingerprint));
        assert!(store.verify("RG0009", &second.password).is_err());
        assert!(matches!(revoke(tmp.path(), "NOSUCH"), Err(IngestError::NoSuchDevice(_))));
    }

    #[test]
    fn server_cert_is_reissued_only_when_names_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        let ca = DeploymentCa::load_or_create(&dir).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, _) = ca.ensure_server_cert(&dir, &names).unwrap();
        let first = std::fs::read_to_string(&cert).unwrap();
        ca.ensure_server_cert(&dir, &names).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), first);
        ca.ensure_server_cert(&dir, &["mqtt.example.tw".to_string()]).unwrap();
        assert_ne!(std::fs::read_to_string(&cert).unwrap(), first);
    }
}
