//! Blocking driver: `std::net` + rustls, a plain loop around the sans-IO core.
//!
//! Reads wait in 50 ms slices so the caller's `check` hook (Python signal handling) runs
//! between them; the user's timeout bounds the wait for each read, as a socket timeout does.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use socket2::{Domain, Protocol, Socket, Type};

use super::{connect_error, map_io, ConnectOptions};
use crate::error::{Error, Result};
use crate::proto::command::{encode_line, encode_lines};
use crate::proto::response::{check_status, BodyDecoder, BodySink, BytesSink, LineReader, Limits};
use crate::tls::server_name;

const POLL: Duration = Duration::from_millis(50);

/// Called between read slices; returning an error aborts the operation (Ctrl-C).
pub type Check<'a> = &'a mut dyn FnMut() -> Result<()>;

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

pub struct BlockingConn {
    stream: Option<Stream>,
    reader: LineReader,
    pub limits: Limits,
    timeout: Option<Duration>,
    host: String,
    /// Why the connection is closed, for the error raised by later calls.
    closed: Option<String>,
    /// A multi-line body being streamed chunk by chunk (`begin_body` .. `read_chunk`).
    body: Option<BodyDecoder>,
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl BlockingConn {
    pub fn connect(opts: &ConnectOptions) -> Result<Self> {
        let source = opts.source()?;
        let mut errors = Vec::new();
        for addr in opts.addresses()? {
            match open_socket(addr, source, opts.timeout) {
                Ok(tcp) => {
                    tcp.set_nodelay(true).ok();
                    tcp.set_read_timeout(Some(POLL)).map_err(|e| Error::io("setting the read timeout", e))?;
                    tcp.set_write_timeout(opts.timeout).map_err(|e| Error::io("setting the write timeout", e))?;
                    return Ok(BlockingConn {
                        stream: Some(Stream::Plain(tcp)),
                        reader: LineReader::new(),
                        limits: opts.limits,
                        timeout: opts.timeout,
                        host: opts.host.clone(),
                        closed: None,
                        body: None,
                    });
                }
                Err(e) => errors.push((addr, e)),
            }
        }
        Err(connect_error(opts, errors))
    }

    fn stream(&mut self) -> Result<&mut Stream> {
        match (&mut self.stream, &self.closed) {
            (Some(s), _) => Ok(s),
            (None, reason) => Err(Error::NotConnected(reason.clone().unwrap_or_else(|| "the connection is closed".into()))),
        }
    }

    /// Runs `op`; a fatal error closes the connection so the stream can never be misread.
    fn guarded<T>(&mut self, op: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let result = op(self);
        if let Err(e) = &result {
            if e.is_fatal() && self.stream.is_some() {
                self.shutdown(format!("the connection was closed after an earlier error: {e}"));
            }
        }
        result
    }

    /// Reads once into the line buffer, waiting at most the timeout.
    fn fill(&mut self, check: Check, what: &'static str) -> Result<()> {
        let timeout = self.timeout;
        let started = Instant::now();
        let host = self.host.clone();
        let Self { stream, reader, .. } = self;
        let stream = stream.as_mut().ok_or_else(|| Error::NotConnected("the connection is closed".into()))?;
        loop {
            let buf = reader.read_buf();
            let got = match stream {
                Stream::Plain(s) => s.read(buf),
                Stream::Tls(s) => s.read(buf),
            };
            match got {
                Ok(0) => return Err(Error::Closed(what)),
                Ok(n) => {
                    reader.commit(n);
                    return Ok(());
                }
                Err(e) if is_timeout(&e) => {
                    check()?;
                    if timeout.is_some_and(|t| started.elapsed() >= t) {
                        return Err(Error::Timeout(timeout.unwrap_or_default().as_secs_f64(), what));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => check()?,
                Err(e) => return Err(map_io(e, &host, what)),
            }
        }
    }

    /// Sends one command line (CR, LF and NUL refused before anything is written).
    pub fn send_line(&mut self, line: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(line.len() + 2);
        encode_line(line, &mut out)?;
        self.send_raw(&out)
    }

    /// Sends several commands in one write (pipelining); nothing is sent if any line is bad.
    pub fn send_lines(&mut self, lines: &[Vec<u8>]) -> Result<()> {
        let out = encode_lines(lines)?;
        self.send_raw(&out)
    }

    /// Writes already-encoded bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.guarded(|c| {
            let host = c.host.clone();
            let timeout = c.timeout;
            let result = match c.stream()? {
                Stream::Plain(s) => s.write_all(bytes),
                Stream::Tls(s) => s.write_all(bytes).and_then(|_| s.flush()),
            };
            result.map_err(|e| match is_timeout(&e) {
                true => Error::Timeout(timeout.unwrap_or_default().as_secs_f64(), "to accept the command"),
                false => map_io(e, &host, "while sending"),
            })
        })
    }

    /// Reads one line: its content (terminator stripped as poplib does) and octet count.
    pub fn read_line(&mut self, check: Check) -> Result<(Vec<u8>, usize)> {
        self.guarded(|c| loop {
            if let Some(raw) = c.reader.next_raw_line(c.limits.max_status_line, "status")? {
                return Ok((c.reader.content(raw).to_vec(), raw.octets));
            }
            c.fill(check, "while a reply line was expected")?;
        })
    }

    /// Reads a status line; `-ERR` becomes `ProtoError::ServerError`.
    pub fn read_status(&mut self, check: Check) -> Result<Vec<u8>> {
        let (line, _) = self.read_line(check)?;
        check_status(&line)?;
        Ok(line)
    }

    /// Reads a status line and, on `+OK`, its multi-line body into `sink`.
    pub fn read_long_reply(&mut self, sink: &mut dyn BodySink, check: Check) -> Result<(Vec<u8>, usize)> {
        let resp = self.read_status(check)?;
        let octets = self.read_body(sink, check)?;
        Ok((resp, octets))
    }

    /// Reads a multi-line body into `sink`; returns poplib's octet count.
    pub fn read_body(&mut self, sink: &mut dyn BodySink, check: Check) -> Result<usize> {
        self.guarded(|c| {
            let mut decoder = BodyDecoder::new();
            loop {
                if let Some(octets) = decoder.advance(&mut c.reader, &c.limits, sink)? {
                    return Ok(octets);
                }
                c.fill(check, "in the middle of a multi-line response")?;
            }
        })
    }

    /// Sends a command whose body will be streamed with [`Self::read_chunk`].
    pub fn begin_body(&mut self, line: &[u8], check: Check) -> Result<Vec<u8>> {
        self.send_line(line)?;
        let resp = self.read_status(check)?;
        self.body = Some(BodyDecoder::new());
        Ok(resp)
    }

    /// The next chunk (about `max` bytes, CRLF line ends) of the body being streamed; `None`
    /// once it has ended. Memory stays bounded whatever the message size.
    pub fn read_chunk(&mut self, max: usize, check: Check) -> Result<Option<Vec<u8>>> {
        let Some(mut decoder) = self.body.take() else { return Ok(None) };
        // A stream has no total-size limit (that is the point); lines are still bounded.
        let limits = Limits { max_response: usize::MAX, ..self.limits };
        let mut sink = BytesSink::chunked(max);
        self.guarded(|c| {
            loop {
                if decoder.advance(&mut c.reader, &limits, &mut sink)?.is_some() {
                    return Ok(Some(sink.data));
                }
                if sink.full() {
                    c.body = Some(decoder);
                    return Ok(Some(sink.data));
                }
                c.fill(check, "in the middle of a multi-line response")?;
            }
        })
    }

    /// STLS: the `+OK` must be the last plaintext byte, then the TLS handshake.
    pub fn starttls(&mut self, config: Arc<ClientConfig>, check: Check) -> Result<Vec<u8>> {
        self.send_line(b"STLS")?;
        let resp = self.read_status(check)?;
        self.guarded(|c| {
            let extra = c.reader.buffered().len();
            if extra > 0 {
                return Err(Error::StlsInjection(extra));
            }
            c.handshake(config, check)
        })?;
        Ok(resp)
    }

    /// Wraps the TCP stream in TLS (implicit TLS right after connect, or after STLS).
    pub fn handshake(&mut self, config: Arc<ClientConfig>, check: Check) -> Result<()> {
        self.guarded(|c| {
            let name = server_name(&c.host)?;
            let Some(Stream::Plain(tcp)) = c.stream.take() else {
                return Err(Error::TlsConfig("TLS is already active on this connection".into()));
            };
            let conn = ClientConnection::new(config, name).map_err(|source| Error::Tls { source, host: c.host.clone() })?;
            let mut tls = StreamOwned::new(conn, tcp);
            let started = Instant::now();
            while tls.conn.is_handshaking() {
                match tls.conn.complete_io(&mut tls.sock) {
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {
                        if let Err(err) = check() {
                            c.stream = Some(Stream::Tls(Box::new(tls)));
                            return Err(err);
                        }
                        if c.timeout.is_some_and(|t| started.elapsed() >= t) {
                            c.stream = Some(Stream::Tls(Box::new(tls)));
                            return Err(Error::Timeout(c.timeout.unwrap_or_default().as_secs_f64(), "during the TLS handshake"));
                        }
                    }
                    Err(e) => {
                        c.stream = Some(Stream::Tls(Box::new(tls)));
                        return Err(map_io(e, &c.host, "during the TLS handshake"));
                    }
                }
            }
            c.stream = Some(Stream::Tls(Box::new(tls)));
            Ok(())
        })
    }

    /// Closes the socket (after a TLS close_notify where possible). Idempotent.
    pub fn shutdown(&mut self, reason: String) {
        if let Some(stream) = self.stream.take() {
            if let Stream::Tls(mut s) = stream {
                s.conn.send_close_notify();
                let _ = s.conn.write_tls(&mut s.sock);
                let _ = s.sock.shutdown(Shutdown::Both);
            } else if let Stream::Plain(s) = stream {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        self.closed.get_or_insert(reason);
    }

    pub fn tcp(&self) -> Option<&TcpStream> {
        self.stream.as_ref().map(Stream::tcp)
    }

    /// `(protocol version, cipher suite)` once TLS is up.
    pub fn tls_info(&self) -> Option<(String, String)> {
        match &self.stream {
            Some(Stream::Tls(s)) => Some((
                s.conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
                s.conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default(),
            )),
            _ => None,
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.timeout = timeout;
        if let Some(s) = &self.stream {
            s.tcp().set_write_timeout(timeout).map_err(|e| Error::io("setting the write timeout", e))?;
        }
        Ok(())
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.tcp().and_then(|t| t.peer_addr().ok())
    }
}

fn open_socket(addr: SocketAddr, source: Option<SocketAddr>, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(src) = source {
        socket.bind(&src.into())?;
    }
    match timeout {
        Some(t) => socket.connect_timeout(&addr.into(), t)?,
        None => socket.connect(&addr.into())?,
    }
    Ok(socket.into())
}
