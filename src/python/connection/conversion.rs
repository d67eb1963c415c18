//! Results converted to Python by kind, in one place ([`convert`]): a status line is `bytes`,
//! a multi-line reply `(resp, [lines], octets)` or `(resp, data, octets)`, and so on for each
//! kind of [`Done`]; a `-ERR` is the exception its RESP-CODE (or a login step) calls for. The
//! lines or rows of a large body that were converted while it arrived are continued by
//! [`finish`].

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use pyo3::IntoPyObjectExt;

use crate::error::Error;
use crate::proto::response::{LinesSink, Segment};
use crate::proto::session::{Done, MessageRow, Reply};
use crate::proto::ProtoError;
use crate::python::errors::server_error;
use crate::python::message_info::MessageInfo;

/// A finished job's result; `early` holds the lines (or `messages()` rows) of its body already
/// converted while the rest arrived, and the remainder is appended to it.
pub(super) fn finish(
    py: Python<'_>,
    done: Done,
    early: Option<Py<PyList>>,
    login: bool,
) -> PyResult<Py<PyAny>> {
    match (done, early) {
        (
            Done::Reply(Ok(Reply::Lines {
                status,
                lines,
                octets,
            })),
            Some(early),
        ) => {
            let early = early.into_bound(py);
            extend(&early, lines.into_segments())?;
            (PyBytes::new(py, &status), early, octets).into_py_any(py)
        }
        (Done::Messages(rows), Some(early)) => {
            let early = early.into_bound(py);
            extend_infos(&early, rows)?;
            early.into_py_any(py)
        }
        (done, _) => convert(py, done, login),
    }
}

/// Converts the complete lines or rows taken from a job still running into `early` (made on
/// first use), so the Rust copy is freed as the body arrives.
pub(super) fn convert_early(
    py: Python<'_>,
    early: &mut Option<Py<PyList>>,
    segments: Vec<Segment>,
    rows: Vec<MessageRow>,
) -> PyResult<()> {
    if segments.is_empty() && rows.is_empty() {
        return Ok(());
    }
    let list = early
        .get_or_insert_with(|| PyList::empty(py).unbind())
        .bind(py);
    extend(list, segments).and_then(|()| extend_infos(list, rows))
}

/// Appends the lines of `segments` to `list`, freeing each segment once converted.
fn extend(list: &Bound<'_, PyList>, segments: Vec<Segment>) -> PyResult<()> {
    let py = list.py();
    for segment in segments {
        for line in segment.lines() {
            list.append(PyBytes::new(py, line))?;
        }
    }
    Ok(())
}

fn reply(
    py: Python<'_>,
    outcome: std::result::Result<Reply, ProtoError>,
    login: bool,
) -> PyResult<Py<PyAny>> {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(ProtoError::ServerError(line)) => return Err(server_error(line, login)),
        Err(err) => return Err(Error::from(err).into()),
    };
    match reply {
        Reply::Status(line) => PyBytes::new(py, &line).into_py_any(py),
        Reply::Lines {
            status,
            lines,
            octets,
        } => (PyBytes::new(py, &status), py_lines(py, lines)?, octets).into_py_any(py),
        Reply::Bytes {
            status,
            data,
            octets,
        } => (PyBytes::new(py, &status), PyBytes::new(py, &data), octets).into_py_any(py),
    }
}

/// A finished job as Python sees it; `login`: the job sent a login step, where a bare
/// `-ERR` means the credentials were refused (AuthenticationError).
pub(super) fn convert(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    match done {
        Done::Reply(outcome) => reply(py, outcome, login),
        Done::Sent => Ok(py.None()),
        Done::Capabilities(caps) => caps.list.into_py_any(py),
        // `[MessageInfo(number, size, uid)]`; unique-ids are `str` decoded losslessly (UTF-8
        // with `surrogateescape`: `uid.encode("utf-8", "surrogateescape")` gives the bytes).
        Done::Messages(rows) => {
            let list = PyList::empty(py);
            extend_infos(&list, rows)?;
            list.into_py_any(py)
        }
        // A stream opened: `(resp, stream id)`.
        Done::Stream(id, status) => (PyBytes::new(py, &status), id).into_py_any(py),
        Done::Chunk(chunk) => chunk.map(|c| PyBytes::new(py, &c)).into_py_any(py),
        Done::Line(line) => PyBytes::new(py, &line).into_py_any(py),
        // A batch item: `(index, reply or ServerError)`, `None` when done.
        Done::Item(None) => Ok(py.None()),
        Done::Item(Some((index, Err(ProtoError::ServerError(line))))) => {
            (index, server_error(line, login).into_value(py)).into_py_any(py)
        }
        Done::Item(Some((index, outcome))) => (index, reply(py, outcome, login)?).into_py_any(py),
    }
}

/// Appends each row to `list` as a `MessageInfo`.
fn extend_infos(list: &Bound<'_, PyList>, rows: Vec<MessageRow>) -> PyResult<()> {
    let py = list.py();
    for row in rows {
        list.append(Py::new(py, MessageInfo::from_row(row))?)?;
    }
    Ok(())
}

/// `lines` as a Python list of bytes, freeing each segment of the Rust copy once converted.
fn py_lines(py: Python<'_>, lines: LinesSink) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    extend(&out, lines.into_segments())?;
    Ok(out)
}
