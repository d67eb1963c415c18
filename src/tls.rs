//! rustls client configuration built from our options (which the Python layer fills from
//! keyword arguments or from an `ssl.SSLContext`). Only the ring provider is used, and it is
//! always passed explicitly so that no process-wide default provider is needed.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, Result};

/// What the caller asked of TLS.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// Verify the certificate chain (`ssl.CERT_REQUIRED`).
    pub verify: bool,
    /// Check that the certificate names the host we connected to.
    pub check_hostname: bool,
    /// Extra trusted CAs (DER). When non-empty they replace the default roots, as
    /// `load_verify_locations` on a fresh `SSLContext` does.
    pub ca_certs: Vec<Vec<u8>>,
    /// Lowest TLS version: 12 or 13.
    pub min_version: u8,
    /// Highest TLS version: 12 or 13.
    pub max_version: u8,
    /// Client certificate chain and private key, PEM.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            verify: true,
            check_hostname: true,
            ca_certs: vec![],
            min_version: 12,
            max_version: 13,
            client_cert: None,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(crypto::ring::default_provider()))
        .clone()
}

/// webpki-roots plus the operating system's store, loaded once per process.
fn default_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            // Unreadable system certificates are skipped: the bundled roots still apply.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            Arc::new(roots)
        })
        .clone()
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
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| (self.min_version..=self.max_version).contains(v))
                .map(|(_, v)| v)
                .collect();
        if versions.is_empty() {
            return Err(Error::TlsConfig(format!(
                "no TLS version between 1.{} and 1.{} is supported; fastpoplib speaks TLS 1.2 and 1.3",
                self.min_version.saturating_sub(10),
                self.max_version.saturating_sub(10)
            )));
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
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
        if !self.verify {
            return Ok(Arc::new(NoVerification(provider())));
        }
        let roots = if self.ca_certs.is_empty() {
            default_roots()
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
            check_hostname: self.check_hostname,
        }))
    }
}

/// The server name to verify: an IP address when `host` is one, else a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| Error::TlsConfig(format!("{host:?} is not a valid host name for TLS")))
}

/// Chain verification by webpki, with the host-name check optional (`check_hostname=False`).
#[derive(Debug)]
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    check_hostname: bool,
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
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if !self.check_hostname => Ok(ServerCertVerified::assertion()),
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

/// `verify_mode=CERT_NONE`: any certificate is accepted, but handshake signatures are still
/// checked so the session keys belong to whoever presented the certificate.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
