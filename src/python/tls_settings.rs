//! `TlsSettings`: a built rustls client configuration, made once and shared by connections.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use rustls::ClientConfig;

use crate::tls::{certs_from_pem, TlsOptions};

#[pyclass(module = "fastpoplib._core", frozen)]
pub struct TlsSettings {
    pub config: Arc<ClientConfig>,
    options: TlsOptions,
}

#[pymethods]
impl TlsSettings {
    /// `cadata`: PEM text, one or more certificates to trust instead of the default roots;
    /// `client_cert`: `(chain PEM, key PEM)`; `pins`: SHA-256 digests (32 bytes each) of the
    /// only server certificates to accept.
    #[new]
    #[pyo3(signature = (*, cadata=None, client_cert=None, pins=None))]
    fn new(
        cadata: Option<&[u8]>,
        client_cert: Option<(Vec<u8>, Vec<u8>)>,
        pins: Option<Vec<Vec<u8>>>,
    ) -> PyResult<Self> {
        let ca_certs = match cadata {
            Some(pem) => certs_from_pem(pem)?
                .into_iter()
                .map(|c| c.to_vec())
                .collect(),
            None => Vec::new(),
        };
        let pins = pins
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                <[u8; 32]>::try_from(p.as_slice()).map_err(|_| {
                    PyValueError::new_err("a certificate pin is a SHA-256 digest of 32 bytes")
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let options = TlsOptions {
            ca_certs,
            client_cert,
            pins,
        };
        Ok(TlsSettings {
            config: options.build()?,
            options,
        })
    }

    fn __repr__(&self) -> String {
        let o = &self.options;
        let roots = if o.ca_certs.is_empty() {
            "default".to_owned()
        } else {
            format!("{} given", o.ca_certs.len())
        };
        let client = if o.client_cert.is_some() {
            "True"
        } else {
            "False"
        };
        format!(
            "TlsSettings(roots={roots}, client_cert={client}, pins={})",
            o.pins.len()
        )
    }
}
