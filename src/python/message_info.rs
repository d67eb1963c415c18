//! `MessageInfo`, one row of `messages()`, kept natively: two integers and the unique-id's
//! bytes (about 100 bytes a row: a 64-byte object, the unique-id on the heap and its list
//! slot, where a named tuple of two `int`s and a `str` took about 200). The Python objects
//! are made when a field is read; the row still behaves as the `(number, size, uid)` tuple
//! it used to be.

use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PySlice, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::proto::session::MessageRow;

/// One message of the maildrop, as :meth:`POP3.messages` returns it: a sequence
/// ``(number, size, uid)`` that unpacks, indexes, compares and hashes as that tuple does
/// (``MessageInfo(1, 10, "a") == (1, 10, "a")``), and pickles.
///
/// ``number``: the message number (RFC 1939 §5 LIST); ``size``: its size in octets as LIST
/// gives it; ``uid``: its UIDL unique-id (RFC 1939 §7), or ``None`` when the server has no
/// UIDL. Unique-ids are kept exactly: decoded as UTF-8 with ``surrogateescape``, so
/// ``uid.encode("utf-8", "surrogateescape")`` gives the server's bytes back.
#[pyclass(frozen, module = "fastpoplib", name = "MessageInfo", sequence)]
pub struct MessageInfo {
    number: u64,
    size: u64,
    uid: Option<Box<[u8]>>,
}

impl MessageInfo {
    pub fn from_row((number, size, uid): MessageRow) -> Self {
        MessageInfo {
            number,
            size,
            uid: uid.map(Vec::into_boxed_slice),
        }
    }

    fn uid_object(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let Some(bytes) = &self.uid else {
            return Ok(py.None());
        };
        Ok(match std::str::from_utf8(bytes) {
            Ok(text) => PyString::new(py, text).into_any().unbind(),
            Err(_) => PyBytes::new(py, bytes)
                .call_method1("decode", ("utf-8", "surrogateescape"))?
                .unbind(),
        })
    }

    /// The row as the plain tuple it stands for.
    fn tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                self.number.into_py_any(py)?,
                self.size.into_py_any(py)?,
                self.uid_object(py)?,
            ],
        )
    }
}

fn uid_bytes(uid: Option<&Bound<'_, PyString>>) -> PyResult<Option<Box<[u8]>>> {
    uid.map(|uid| {
        let bytes = uid.call_method1("encode", ("utf-8", "surrogateescape"))?;
        Ok(bytes.cast::<PyBytes>()?.as_bytes().into())
    })
    .transpose()
}

#[pymethods]
impl MessageInfo {
    #[new]
    fn new(number: u64, size: u64, uid: Option<&Bound<'_, PyString>>) -> PyResult<Self> {
        Ok(MessageInfo {
            number,
            size,
            uid: uid_bytes(uid)?,
        })
    }

    /// The message number (RFC 1939 §5).
    #[getter]
    fn number(&self) -> u64 {
        self.number
    }

    /// The size in octets, as LIST gives it.
    #[getter]
    fn size(&self) -> u64 {
        self.size
    }

    /// The UIDL unique-id (RFC 1939 §7), or None when the server has no UIDL.
    #[getter]
    fn uid(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.uid_object(py)
    }

    #[classattr]
    fn _fields() -> (&'static str, &'static str, &'static str) {
        ("number", "size", "uid")
    }

    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("number", "size", "uid")
    }

    /// The object and the unique-id's bytes (held outside Python's heap).
    fn __sizeof__(slf: &Bound<'_, Self>) -> PyResult<usize> {
        let object: usize = slf.get_type().getattr("__basicsize__")?.extract()?;
        Ok(object + slf.get().uid.as_ref().map_or(0, |uid| uid.len()))
    }

    fn __len__(&self) -> usize {
        3
    }

    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if index.is_instance_of::<PySlice>() {
            return self.tuple(py)?.as_any().get_item(index).map(Bound::unbind);
        }
        let Ok(i) = index.extract::<isize>() else {
            return Err(PyTypeError::new_err(format!(
                "MessageInfo indices must be integers or slices, not {}",
                index.get_type().name()?
            )));
        };
        match if i < 0 { i + 3 } else { i } {
            0 => self.number.into_py_any(py),
            1 => self.size.into_py_any(py),
            2 => self.uid_object(py),
            _ => Err(PyIndexError::new_err("MessageInfo index out of range")),
        }
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.tuple(py)?.try_iter().map(Bound::into_any)
    }

    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let other = if let Ok(row) = other.cast::<MessageInfo>() {
            row.get().tuple(py)?.into_any()
        } else if other.is_instance_of::<PyTuple>() {
            other.clone()
        } else {
            return Ok(py.NotImplemented());
        };
        self.tuple(py)?.rich_compare(other, op).map(Bound::unbind)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.tuple(py)?.hash()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let uid = self.uid_object(py)?.into_bound(py).repr()?;
        Ok(format!(
            "MessageInfo(number={}, size={}, uid={uid})",
            self.number, self.size
        ))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        Ok((slf.get_type().into_any(), slf.get().tuple(slf.py())?))
    }

    /// How many of the three fields equal ``value``, as ``tuple.count``.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.tuple(py)?.call_method1("count", (value,))?.extract()
    }

    /// The position of the first field equal to ``value``, as ``tuple.index`` (ValueError if
    /// none is).
    fn index(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        self.tuple(py)?.call_method1("index", (value,))?.extract()
    }

    /// ``{"number": ..., "size": ..., "uid": ...}``, as a named tuple's ``_asdict()``.
    fn _asdict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("number", self.number)?;
        dict.set_item("size", self.size)?;
        dict.set_item("uid", self.uid_object(py)?)?;
        Ok(dict)
    }

    /// A copy with the fields given replaced, as a named tuple's ``_replace()``.
    #[pyo3(signature = (**changes))]
    fn _replace(&self, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let mut row = MessageInfo {
            number: self.number,
            size: self.size,
            uid: self.uid.clone(),
        };
        for (name, value) in changes.into_iter().flatten() {
            match name.extract::<String>()?.as_str() {
                "number" => row.number = value.extract()?,
                "size" => row.size = value.extract()?,
                "uid" => {
                    row.uid = uid_bytes(value.extract::<Option<Bound<'_, PyString>>>()?.as_ref())?
                }
                other => {
                    return Err(PyValueError::new_err(format!(
                        "Got unexpected field names: ['{other}']"
                    )))
                }
            }
        }
        Ok(row)
    }
}
