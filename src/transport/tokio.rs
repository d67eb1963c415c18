//! tokio driver: tokio + tokio-rustls around the same sans-IO core as the blocking driver.
//!
//! Every wait is bounded by the connection's timeout. A future dropped half-way (task
//! cancellation) leaves the stream in an unknown state, so the caller closes the connection
//! (see `python::async_client`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{connect_error, map_io, ConnectOptions};
use crate::error::{Error, Result};
use crate::proto::command::{encode_line, encode_lines};
use crate::proto::response::{check_status, BodyDecoder, BodySink, BytesSink, LineReader, Limits};
use crate::tls::server_name;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

pub struct TokioConn {
    stream: Option<Stream>,
    reader: LineReader,
    pub limits: Limits,
    timeout: Option<Duration>,
    host: String,
    closed: Option<String>,
    /// A multi-line body being streamed chunk by chunk (`begin_body` .. `read_chunk`).
    body: Option<BodyDecoder>,
}

/// Runs `fut` under the optional timeout.
async fn bounded<T>(timeout: Option<Duration>, what: &'static str, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match timeout {
        None => fut.await,
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| Error::Timeout(t.as_secs_f64(), what))?,
    }
}

async fn open_socket(addr: SocketAddr, source: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(src) = source {
        socket.bind(src)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl TokioConn {
    pub async fn connect(opts: &ConnectOptions) -> Result<Self> {
        let source = opts.source()?;
        let mut errors = Vec::new();
        for addr in opts.addresses()? {
            let attempt = match opts.timeout {
                None => open_socket(addr, source).await,
                Some(t) => tokio::time::timeout(t, open_socket(addr, source))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            };
            match attempt {
                Ok(tcp) => {
                    return Ok(TokioConn {
                        stream: Some(Stream::Plain(tcp)),
                        reader: LineReader::new(),
                        limits: opts.limits,
                        timeout: opts.timeout,
                        host: opts.host.clone(),
                        closed: None,
                        body: None,
                    })
                }
                Err(e) => errors.push((addr, e)),
            }
        }
        Err(connect_error(opts, errors))
    }

    fn not_connected(&self) -> Error {
        Error::NotConnected(self.closed.clone().unwrap_or_else(|| "the connection is closed".into()))
    }

    /// Closes after a fatal error so a half-read stream is never reused.
    fn check_fatal<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.is_fatal() && self.stream.is_some() {
                self.shutdown_now(format!("the connection was closed after an earlier error: {e}"));
            }
        }
        result
    }

    async fn fill(&mut self, what: &'static str) -> Result<()> {
        let Self { stream, reader, host, closed, timeout, .. } = self;
        let stream = stream.as_mut().ok_or_else(|| Error::NotConnected(closed.clone().unwrap_or_default()))?;
        let buf = reader.read_buf();
        let n = bounded(*timeout, what, async {
            match stream {
                Stream::Plain(s) => s.read(buf).await,
                Stream::Tls(s) => s.read(buf).await,
            }
            .map_err(|e| map_io(e, host, what))
        })
        .await?;
        if n == 0 {
            return Err(Error::Closed(what));
        }
        reader.commit(n);
        Ok(())
    }

    pub async fn send_line(&mut self, line: &[u8]) -> Result<()> {
        let mut out = Vec::with_capacity(line.len() + 2);
        encode_line(line, &mut out)?;
        self.send_raw(&out).await
    }

    /// Sends several commands in one write (pipelining); nothing is sent if any line is bad.
    pub async fn send_lines(&mut self, lines: &[Vec<u8>]) -> Result<()> {
        let out = encode_lines(lines)?;
        self.send_raw(&out).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let timeout = self.timeout;
        let host = self.host.clone();
        let result = match self.stream.as_mut() {
            None => Err(self.not_connected()),
            Some(stream) => {
                bounded(timeout, "to accept the command", async {
                    match stream {
                        Stream::Plain(s) => s.write_all(bytes).await,
                        Stream::Tls(s) => async {
                            s.write_all(bytes).await?;
                            s.flush().await
                        }
                        .await,
                    }
                    .map_err(|e| map_io(e, &host, "while sending"))
                })
                .await
            }
        };
        self.check_fatal(result)
    }

    pub async fn read_line(&mut self) -> Result<(Vec<u8>, usize)> {
        let result = async {
            loop {
                if let Some(raw) = self.reader.next_raw_line(self.limits.max_status_line, "status")? {
                    return Ok((self.reader.content(raw).to_vec(), raw.octets));
                }
                self.fill("while a reply line was expected").await?;
            }
        }
        .await;
        self.check_fatal(result)
    }

    pub async fn read_status(&mut self) -> Result<Vec<u8>> {
        let (line, _) = self.read_line().await?;
        check_status(&line)?;
        Ok(line)
    }

    /// Reads a status line and, on `+OK`, its multi-line body into `sink`.
    pub async fn read_long_reply(&mut self, sink: &mut (dyn BodySink + Send)) -> Result<(Vec<u8>, usize)> {
        let resp = self.read_status().await?;
        let octets = self.read_body(sink).await?;
        Ok((resp, octets))
    }

    pub async fn read_body(&mut self, sink: &mut (dyn BodySink + Send)) -> Result<usize> {
        let result = async {
            let mut decoder = BodyDecoder::new();
            loop {
                if let Some(octets) = decoder.advance(&mut self.reader, &self.limits, sink)? {
                    return Ok(octets);
                }
                self.fill("in the middle of a multi-line response").await?;
            }
        }
        .await;
        self.check_fatal(result)
    }

    /// Sends a command whose body will be streamed with [`Self::read_chunk`].
    pub async fn begin_body(&mut self, line: &[u8]) -> Result<Vec<u8>> {
        self.send_line(line).await?;
        let resp = self.read_status().await?;
        self.body = Some(BodyDecoder::new());
        Ok(resp)
    }

    /// The next chunk (about `max` bytes, CRLF line ends) of the body being streamed; `None`
    /// once it has ended. Memory stays bounded whatever the message size.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>> {
        let Some(mut decoder) = self.body.take() else { return Ok(None) };
        // A stream has no total-size limit (that is the point); lines are still bounded.
        let limits = Limits { max_response: usize::MAX, ..self.limits };
        let mut sink = BytesSink::chunked(max);
        let result = async {
            loop {
                if decoder.advance(&mut self.reader, &limits, &mut sink)?.is_some() {
                    return Ok(Some(sink.data));
                }
                if sink.full() {
                    self.body = Some(decoder);
                    return Ok(Some(sink.data));
                }
                self.fill("in the middle of a multi-line response").await?;
            }
        }
        .await;
        self.check_fatal(result)
    }

    pub async fn starttls(&mut self, config: Arc<ClientConfig>) -> Result<Vec<u8>> {
        self.send_line(b"STLS").await?;
        let resp = self.read_status().await?;
        let extra = self.reader.buffered().len();
        if extra > 0 {
            return self.check_fatal(Err(Error::StlsInjection(extra)));
        }
        self.handshake(config).await?;
        Ok(resp)
    }

    pub async fn handshake(&mut self, config: Arc<ClientConfig>) -> Result<()> {
        let result = async {
            let name = server_name(&self.host)?;
            let Some(Stream::Plain(tcp)) = self.stream.take() else {
                return Err(Error::TlsConfig("TLS is already active on this connection".into()));
            };
            let host = self.host.clone();
            let tls = bounded(self.timeout, "during the TLS handshake", async {
                TlsConnector::from(config).connect(name, tcp).await.map_err(|e| map_io(e, &host, "during the TLS handshake"))
            })
            .await?;
            self.stream = Some(Stream::Tls(Box::new(tls)));
            Ok(())
        }
        .await;
        self.check_fatal(result)
    }

    /// Graceful close: TLS close_notify, then FIN. Bounded by the timeout.
    pub async fn shutdown(&mut self, reason: String) {
        if let Some(mut stream) = self.stream.take() {
            let _ = bounded(self.timeout.or(Some(Duration::from_secs(5))), "to close", async {
                match &mut stream {
                    Stream::Plain(s) => s.shutdown().await,
                    Stream::Tls(s) => s.shutdown().await,
                }
                .map_err(|e| Error::io("closing", e))
            })
            .await;
        }
        self.closed.get_or_insert(reason);
    }

    /// Immediate close (no await possible: used from `Drop` on cancellation).
    pub fn shutdown_now(&mut self, reason: String) {
        self.stream = None;
        self.closed.get_or_insert(reason);
    }

    pub fn tcp(&self) -> Option<&TcpStream> {
        self.stream.as_ref().map(Stream::tcp)
    }

    pub fn tls_info(&self) -> Option<(String, String)> {
        match &self.stream {
            Some(Stream::Tls(s)) => {
                let conn = s.get_ref().1;
                Some((
                    conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default(),
                    conn.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default(),
                ))
            }
            _ => None,
        }
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }
}
