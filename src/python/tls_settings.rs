//! `TlsSettings`: a built rustls client configuration, made once and shared by connections.

use std::sync::Arc;

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
    /// `cadata` is PEM text (one or more CA certificates); `ca_der` DER certificates as
    /// `ssl.SSLContext.get_ca_certs(binary_form=True)` returns them.
    #[new]
    #[pyo3(signature = (*, verify=true, check_hostname=true, cadata=None, ca_der=Vec::new(), min_version=12, max_version=13, client_cert=None))]
    fn new(
        verify: bool,
        check_hostname: bool,
        cadata: Option<&[u8]>,
        ca_der: Vec<Vec<u8>>,
        min_version: u8,
        max_version: u8,
        client_cert: Option<(Vec<u8>, Vec<u8>)>,
    ) -> PyResult<Self> {
        let mut ca_certs = ca_der;
        if let Some(pem) = cadata {
            ca_certs.extend(certs_from_pem(pem)?.into_iter().map(|c| c.to_vec()));
        }
        let options = TlsOptions {
            verify,
            check_hostname,
            ca_certs,
            min_version,
            max_version,
            client_cert,
        };
        Ok(TlsSettings {
            config: options.build()?,
            options,
        })
    }

    fn __repr__(&self) -> String {
        let o = &self.options;
        format!(
            "TlsSettings(verify={}, check_hostname={}, extra_cas={}, versions=1.{}-1.{}, client_cert={})",
            py_bool(o.verify),
            py_bool(o.check_hostname),
            o.ca_certs.len(),
            o.min_version.saturating_sub(10),
            o.max_version.saturating_sub(10),
            py_bool(o.client_cert.is_some())
        )
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}
