//! tokio driver: moves bytes between a tokio socket (tokio-rustls for TLS) and the session.
//! No POP3 knowledge.
//!
//! Every wait is bounded by the timeout. A future dropped half-way (task cancellation) leaves
//! the stream in an unknown state, so the caller closes the connection (`python::connection`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{connect_error, map_io, ConnectOptions, Info};
use crate::error::{Error, Result};
use crate::proto::session::{Done, Job, Session, Step};
use crate::proto::ProtoError;
use crate::tls::server_name;

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the plain and the TLS stream during a handshake that failed.
    Gone,
}

pub struct TokioIo {
    stream: Stream,
    timeout: Option<Duration>,
    host: String,
}

/// Runs `fut` under the optional timeout.
async fn bounded<T>(
    timeout: Option<Duration>,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match timeout {
        None => fut.await,
        Some(t) => tokio::time::timeout(t, fut)
            .await
            .map_err(|_| Error::Timeout(t.as_secs_f64(), what))?,
    }
}

async fn open_socket(addr: SocketAddr, source: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = source {
        socket.bind(src)?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn gone() -> Error {
    Error::Proto(crate::proto::ProtoError::NotConnected(
        "the connection was lost during the TLS handshake; open a new connection".into(),
    ))
}

impl TokioIo {
    /// Resolves without blocking a worker, then connects to the first address that accepts.
    pub async fn connect(opts: &ConnectOptions) -> Result<Self> {
        let source = opts.source()?;
        let lookup = tokio::net::lookup_host((opts.bare_host(), opts.port));
        let addrs = opts.resolved(
            bounded(opts.timeout, "to resolve the host name", async {
                Ok(lookup.await.map(Iterator::collect))
            })
            .await?,
        )?;
        let mut errors = Vec::new();
        for addr in addrs {
            let attempt = match opts.timeout {
                None => open_socket(addr, source).await,
                Some(t) => tokio::time::timeout(t, open_socket(addr, source))
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            };
            match attempt {
                Ok(tcp) => {
                    return Ok(TokioIo {
                        stream: Stream::Plain(tcp),
                        timeout: opts.timeout,
                        host: opts.host.clone(),
                    })
                }
                Err(e) => errors.push((addr, e)),
            }
        }
        Err(connect_error(opts, errors))
    }

    /// Runs `job` to its end: the one pump of the tokio driver (the blocking one's twin).
    pub async fn run(
        &mut self,
        session: &mut Session,
        mut job: Job,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Done> {
        loop {
            match session.step(&mut job)? {
                Step::Done(done) => return Ok(done),
                Step::Write => {
                    self.write_all(session.outgoing()).await?;
                    session.wrote();
                }
                Step::Read => {
                    let n = self.read(session.read_buf()).await?;
                    session.received(n)?;
                }
                Step::Handshake => {
                    let config = tls
                        .ok_or_else(|| Error::TlsConfig("no TLS configuration for STLS".into()))?;
                    self.handshake(config.clone()).await?;
                    session.tls_started();
                }
            }
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let what = "to send the rest of its reply";
        let Self {
            stream,
            host,
            timeout,
        } = self;
        bounded(*timeout, what, async {
            match stream {
                Stream::Plain(s) => s.read(buf).await,
                Stream::Tls(s) => s.read(buf).await,
                Stream::Gone => return Err(gone()),
            }
            .map_err(|e| map_io(e, host, "reading"))
        })
        .await
    }

    async fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let Self {
            stream,
            host,
            timeout,
        } = self;
        bounded(*timeout, "to accept the command", async {
            let written = match stream {
                Stream::Plain(s) => s.write_all(data).await,
                Stream::Tls(s) => match s.write_all(data).await {
                    Ok(()) => s.flush().await,
                    Err(e) => Err(e),
                },
                Stream::Gone => return Err(gone()),
            };
            written.map_err(|e| map_io(e, host, "writing"))
        })
        .await
    }

    /// The TLS handshake (implicit TLS, or after STLS), bounded as a whole by the timeout.
    pub async fn handshake(&mut self, config: Arc<ClientConfig>) -> Result<()> {
        let tcp = match std::mem::replace(&mut self.stream, Stream::Gone) {
            Stream::Plain(tcp) => tcp,
            other => {
                self.stream = other;
                return Err(Error::TlsConfig(
                    "TLS is already active on this connection".into(),
                ));
            }
        };
        let name = server_name(&self.host)?;
        let host = self.host.clone();
        let tls = bounded(self.timeout, "to complete the TLS handshake", async {
            TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => Error::Proto(ProtoError::Closed),
                    _ => map_io(e, &host, "during the TLS handshake"),
                })
        })
        .await?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Sends a TLS close_notify (bounded by the timeout), then closes.
    pub async fn close(&mut self) {
        if let Stream::Tls(s) = &mut self.stream {
            let _ = bounded(self.timeout, "", async { Ok(s.shutdown().await) }).await;
        }
        self.stream = Stream::Gone;
    }

    /// The socket, for Python to take over; only before TLS.
    pub fn into_plain_tcp(self) -> Result<std::net::TcpStream> {
        match self.stream {
            Stream::Plain(tcp) => {
                let tcp = tcp
                    .into_std()
                    .map_err(|e| Error::io("handing the socket over", e))?;
                tcp.set_nonblocking(false)
                    .map_err(|e| Error::io("handing the socket over", e))?;
                Ok(tcp)
            }
            _ => Err(Error::TlsConfig(
                "TLS is already active on this connection".into(),
            )),
        }
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    pub fn info(&self) -> Info {
        let tcp = match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Gone => {
                return Info {
                    fd: -1,
                    ..Info::default()
                }
            }
        };
        let tls = match &self.stream {
            Stream::Tls(s) => Some(super::tls_summary(s.get_ref().1)),
            _ => None,
        };
        Info {
            fd: i64::from(tcp.as_raw_fd()),
            peer: tcp.peer_addr().ok(),
            local: tcp.local_addr().ok(),
            tls,
        }
    }
}
