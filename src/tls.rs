//! rustls client configuration from fastpoplib's own TLS keywords (`cafile=`, `cadata=`,
//! `certfile=`/`keyfile=`, `fingerprint=`); an `ssl.SSLContext` is never translated here,
//! Python's `ssl` uses it as given. Only the ring provider is used, always passed explicitly,
//! so that no process-wide default provider is needed.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::{Error, Result};

/// What the caller asked of TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trusted certificates (DER) given by the caller. When non-empty they replace the default
    /// roots, as `cafile=` does for `ssl.create_default_context`.
    pub ca_certs: Vec<Vec<u8>>,
    /// Client certificate chain and private key, PEM.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// SHA-256 digests of the server certificates accepted as they are (pinning, as
    /// fetchmail's `sslfingerprint`). When non-empty, only these certificates are accepted:
    /// neither the roots nor the name are consulted.
    pub pins: Vec<[u8; 32]>,
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(crypto::ring::default_provider()))
        .clone()
}

/// The default trust: webpki-roots plus the operating system's store, or the certificates
/// named by `SSL_CERT_FILE`/`SSL_CERT_DIR` when set (as OpenSSL's default paths, which Python's
/// `ssl.create_default_context()` uses). Loaded once per process.
struct DefaultTrust {
    roots: Arc<RootCertStore>,
    /// The store's certificates (DER): a self-signed one listed there is accepted as the
    /// server's own, as OpenSSL does.
    certs: Vec<Vec<u8>>,
}

fn default_trust() -> &'static DefaultTrust {
    static TRUST: OnceLock<DefaultTrust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Unreadable system certificates are skipped: the bundled roots still apply.
        let native = rustls_native_certs::load_native_certs();
        let certs = native.certs.iter().map(|c| c.to_vec()).collect();
        roots.add_parsable_certificates(native.certs);
        DefaultTrust {
            roots: Arc::new(roots),
            certs,
        }
    })
}

/// The SHA-256 digest of a certificate (DER), for pinning and for error messages.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `SHA256:AB:CD:...`: the digest as `openssl x509 -fingerprint -sha256` prints it.
pub fn show_fingerprint(digest: &[u8; 32]) -> String {
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    format!("SHA256:{}", hex.join(":"))
}

/// A refused certificate with what the server presented, so that the error can show it.
#[derive(Debug)]
pub struct Presented {
    /// Why it was refused; `None`: it is not the pinned certificate.
    pub reason: Option<CertificateError>,
    pub subject: String,
    pub fingerprint: String,
}

impl std::fmt::Display for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{reason:?}"),
            None => f.write_str("not the pinned certificate"),
        }
    }
}

impl std::error::Error for Presented {}

fn presented(reason: Option<CertificateError>, der: &CertificateDer<'_>) -> rustls::Error {
    let subject = x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert.subject().to_string())
        .unwrap_or_else(|_| "(unreadable)".to_owned());
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Presented {
            reason,
            subject,
            fingerprint: show_fingerprint(&fingerprint(der.as_ref())),
        },
    ))))
}

/// Parses every certificate in PEM data (a CA bundle or a certificate chain).
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::TlsConfig(format!("cannot parse PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(Error::TlsConfig(
            "no PEM certificate found in the data given".into(),
        ));
    }
    Ok(certs)
}

impl TlsOptions {
    pub fn build(&self) -> Result<Arc<ClientConfig>> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::TlsConfig(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier()?);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                    Error::TlsConfig(format!("cannot read the client private key: {e}"))
                })?;
                builder
                    .with_client_auth_cert(certs_from_pem(chain)?, key)
                    .map_err(|e| Error::TlsConfig(format!("client certificate rejected: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }

    fn verifier(&self) -> Result<Arc<dyn ServerCertVerifier>> {
        let mut anchors = self.ca_certs.clone();
        let roots = if self.ca_certs.is_empty() {
            let trust = default_trust();
            anchors.extend(trust.certs.iter().cloned());
            trust.roots.clone()
        } else {
            let mut store = RootCertStore::empty();
            for der in &self.ca_certs {
                store
                    .add(CertificateDer::from(der.clone()))
                    .map_err(|e| Error::TlsConfig(format!("cannot use a CA certificate: {e}")))?;
            }
            Arc::new(store)
        };
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| Error::TlsConfig(format!("cannot build the certificate verifier: {e}")))?;
        Ok(Arc::new(Verifier {
            inner: webpki,
            anchors,
            pins: self.pins.clone(),
        }))
    }
}

/// The server name to verify: an IP address when `host` is one, else a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| Error::TlsConfig(format!("{host:?} is not a valid host name for TLS")))
}

/// Chain verification by webpki; plus a certificate trusted byte for byte; or pinning.
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    /// The trusted certificates (the caller's `cafile=`/`cadata=`, else the default store's), DER.
    anchors: Vec<Vec<u8>>,
    pins: Vec<[u8; 32]>,
}

impl Verifier {
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // A self-signed certificate made the usual way (`openssl req -x509`: CA:TRUE, leaf
            // and root at once) that is trusted as is (given by the caller, or listed in the
            // default store, e.g. SSL_CERT_FILE): OpenSSL accepts a trust anchor presented as
            // the server's own certificate, and so do we. Its name and dates are still
            // checked, and the handshake signature is verified with its key.
            // (webpki reports the CA-as-leaf case as `Other(CaUsedAsEndEntity)`.)
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Other(_) | CertificateError::UnknownIssuer,
            )) if self
                .anchors
                .iter()
                .any(|a| a.as_slice() == end_entity.as_ref()) =>
            {
                let parsed = ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                check_dates(end_entity, now)?;
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if !self.pins.is_empty() {
            // Pinned: exactly these certificates, whoever signed them and whatever name they
            // bear (the handshake signature is still verified with the certificate's key).
            return if self.pins.contains(&fingerprint(end_entity.as_ref())) {
                Ok(ServerCertVerified::assertion())
            } else {
                Err(presented(None, end_entity))
            };
        }
        match self.verify_chain(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(reason)) => {
                Err(presented(Some(reason), end_entity))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's validity period contains `now`.
fn check_dates(der: &CertificateDer<'_>, now: UnixTime) -> std::result::Result<(), rustls::Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
    }
    Ok(())
}
