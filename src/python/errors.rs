//! The one place where the crate's errors become Python exceptions.

use pyo3::exceptions::PyValueError;
use pyo3::types::PyBytes;
use pyo3::{import_exception, PyErr, Python};

use crate::error::Error;
use crate::proto::response::resp_code;
use crate::proto::ProtoError;

import_exception!(fastpoplib.exceptions, ServerError);
import_exception!(fastpoplib.exceptions, AuthenticationError);
import_exception!(fastpoplib.exceptions, InUseError);
import_exception!(fastpoplib.exceptions, LoginDelayError);
import_exception!(fastpoplib.exceptions, SysTempError);
import_exception!(fastpoplib.exceptions, SysPermError);
import_exception!(fastpoplib.exceptions, RemoteProtocolError);
import_exception!(fastpoplib.exceptions, LocalProtocolError);
import_exception!(fastpoplib.exceptions, InvalidArgumentError);
import_exception!(fastpoplib.exceptions, POP3ConnectionError);
import_exception!(fastpoplib.exceptions, ConnectionClosedError);
import_exception!(fastpoplib.exceptions, POP3TimeoutError);
import_exception!(fastpoplib.exceptions, TLSError);
import_exception!(fastpoplib.exceptions, CertificateVerificationError);

/// A `-ERR` reply as the most specific exception its RESP-CODE allows. `login` marks replies
/// to USER/PASS/APOP/AUTH, where a bare `-ERR` means the credentials were refused.
pub fn server_error(line: Vec<u8>, login: bool) -> PyErr {
    let code = resp_code(&line).map(<[u8]>::to_ascii_uppercase);
    Python::attach(|py| {
        let arg = PyBytes::new(py, &line).unbind();
        match code.as_deref() {
            Some(b"IN-USE") => InUseError::new_err((arg,)),
            Some(b"LOGIN-DELAY") => LoginDelayError::new_err((arg,)),
            Some(b"SYS/TEMP") => SysTempError::new_err((arg,)),
            Some(b"SYS/PERM") => SysPermError::new_err((arg,)),
            Some(b"AUTH") => AuthenticationError::new_err((arg,)),
            _ if login => AuthenticationError::new_err((arg,)),
            _ => ServerError::new_err((arg,)),
        }
    })
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::Proto(ProtoError::ServerError(line)) => server_error(line, false),
            Error::Proto(ProtoError::InvalidArgument(_)) => InvalidArgumentError::new_err(msg),
            Error::Proto(ProtoError::Usage(_)) => LocalProtocolError::new_err(msg),
            // The server closed the connection, or it was closed: an `error_proto` too, as
            // poplib-style code expects.
            Error::Proto(ProtoError::Closed | ProtoError::NotConnected(_)) => {
                ConnectionClosedError::new_err(msg)
            }
            Error::Proto(_) => RemoteProtocolError::new_err(msg),
            Error::Timeout(..) => POP3TimeoutError::new_err(msg),
            Error::Io { .. } | Error::Connect(_) => POP3ConnectionError::new_err(msg),
            Error::Tls {
                source: rustls::Error::InvalidCertificate(_),
                ..
            } => CertificateVerificationError::new_err(msg),
            Error::Tls { .. } => TLSError::new_err(msg),
            Error::TlsConfig(_) => PyValueError::new_err(msg),
            Error::Busy => LocalProtocolError::new_err(msg),
            // Replaced by the pending Python exception before it gets here.
            Error::Interrupted => LocalProtocolError::new_err(msg),
        }
    }
}
