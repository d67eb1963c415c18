//! Blocking driver: moves bytes between a `std::net` socket (with rustls driven by hand) and
//! the session. No POP3 knowledge.
//!
//! Every wait is cut into 50 ms slices so the caller's `check` hook (Python signal handlers)
//! runs between them: Ctrl-C is seen within a slice during connect, the TLS handshake and any
//! read. The timeout bounds the connect, the whole handshake, and each wait for decrypted
//! bytes, so a TLS record trickling in a byte at a time cannot stretch a read past it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustls::{ClientConfig, ClientConnection};
use socket2::{Domain, Protocol, Socket, Type};

use super::{connect_error, map_io, ConnectOptions, Info};
use crate::error::{Error, Result};
use crate::proto::session::{Done, Job, Session, Step};
use crate::proto::ProtoError;
use crate::tls::server_name;

const SLICE: Duration = Duration::from_millis(50);

/// Called between wait slices; an error aborts the operation (Ctrl-C).
pub type Check<'a> = &'a mut dyn FnMut() -> Result<()>;

pub struct BlockingIo {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    timeout: Option<Duration>,
    host: String,
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A deadline `timeout` from now, checked between slices.
struct Deadline {
    end: Option<(Instant, Duration)>,
    /// When the caller's `check` hook last ran.
    checked: Instant,
}

impl Deadline {
    fn new(timeout: Option<Duration>) -> Self {
        let now = Instant::now();
        // A timeout too far away to be an instant is no deadline at all.
        let end = timeout.and_then(|t| now.checked_add(t).map(|end| (end, t)));
        Deadline { end, checked: now }
    }

    fn check(&self, what: &'static str) -> Result<()> {
        match self.end {
            Some((end, t)) if Instant::now() >= end => Err(Error::Timeout(t.as_secs_f64(), what)),
            _ => Ok(()),
        }
    }

    /// Between reads that did get bytes (a TLS record trickling in byte by byte): the
    /// deadline, and the caller's hook at most once a slice (it takes the GIL).
    fn tick(&mut self, check: Check, what: &'static str) -> Result<()> {
        self.check(what)?;
        if self.checked.elapsed() >= SLICE {
            self.checked = Instant::now();
            check()?;
        }
        Ok(())
    }

    /// How long the next wait may last.
    fn slice(&self) -> Duration {
        self.end.map_or(SLICE, |(end, _)| {
            end.saturating_duration_since(Instant::now()).min(SLICE)
        })
    }
}

impl BlockingIo {
    /// Connects to the first address that accepts, each attempt bounded by the timeout.
    pub fn connect(opts: &ConnectOptions, check: Check) -> Result<Self> {
        let source = opts.source()?;
        let mut errors = Vec::new();
        for addr in opts.addresses()? {
            match open_socket(addr, source, opts.timeout, check) {
                Ok(tcp) => {
                    tcp.set_nodelay(true).ok();
                    tcp.set_read_timeout(Some(SLICE))
                        .map_err(|e| Error::io("setting the read timeout", e))?;
                    tcp.set_write_timeout(Some(SLICE))
                        .map_err(|e| Error::io("setting the write timeout", e))?;
                    return Ok(BlockingIo {
                        tcp,
                        tls: None,
                        timeout: opts.timeout,
                        host: opts.host.clone(),
                    });
                }
                Err(ConnectFailure::Aborted(e)) => return Err(e),
                Err(ConnectFailure::Io(e)) => errors.push((addr, e)),
            }
        }
        Err(connect_error(opts, errors))
    }

    /// Runs `job` to its end: the one pump of the blocking driver. `tls` is the configuration
    /// for a handshake the session asks for (STLS); `arrived` runs after each read (the caller
    /// may take what is complete of a large body).
    pub fn run(
        &mut self,
        session: &mut Session,
        mut job: Job,
        tls: Option<&Arc<ClientConfig>>,
        check: Check,
        arrived: &mut dyn FnMut(&mut Session, &mut Job),
    ) -> Result<Done> {
        loop {
            match session.step(&mut job)? {
                Step::Done(done) => return Ok(done),
                Step::Write => {
                    self.write_all(session.outgoing(), check)?;
                    session.wrote();
                }
                Step::Read => {
                    let n = self.read(session.read_buf(), check)?;
                    session.received(n)?;
                    arrived(session, &mut job);
                }
                Step::Handshake => {
                    let config = tls
                        .ok_or_else(|| Error::TlsConfig("no TLS configuration for STLS".into()))?;
                    self.handshake(config.clone(), check)?;
                    session.tls_started();
                }
            }
        }
    }

    /// Reads decrypted bytes into `buf`; `Ok(0)` when the server closed the connection.
    fn read(&mut self, buf: &mut [u8], check: Check) -> Result<usize> {
        let mut deadline = Deadline::new(self.timeout);
        let what = "to send the rest of its reply";
        loop {
            if let Some(tls) = &mut self.tls {
                match tls.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(map_io(e, &self.host, "reading")),
                }
                match tls.read_tls(&mut self.tcp) {
                    Ok(0) => return Ok(0),
                    Ok(_) => {
                        tls.process_new_packets().map_err(|source| Error::Tls {
                            source,
                            host: self.host.clone(),
                        })?;
                        // Alerts or key updates the peer is owed.
                        while tls.wants_write() {
                            tls.write_tls(&mut self.tcp)
                                .map_err(|e| map_io(e, &self.host, "writing"))?;
                        }
                        deadline.tick(check, what)?;
                        continue;
                    }
                    Err(e) if is_wait(&e) => {}
                    Err(e) => return Err(map_io(e, &self.host, "reading")),
                }
            } else {
                match self.tcp.read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if is_wait(&e) => {}
                    Err(e) => return Err(map_io(e, &self.host, "reading")),
                }
            }
            check()?;
            deadline.check(what)?;
        }
    }

    fn write_all(&mut self, mut data: &[u8], check: Check) -> Result<()> {
        let deadline = Deadline::new(self.timeout);
        let what = "to accept the command";
        if let Some(tls) = &mut self.tls {
            tls.writer()
                .write_all(data)
                .map_err(|e| map_io(e, &self.host, "writing"))?;
            while tls.wants_write() {
                match tls.write_tls(&mut self.tcp) {
                    Ok(_) => {}
                    Err(e) if is_wait(&e) => {
                        check()?;
                        deadline.check(what)?;
                    }
                    Err(e) => return Err(map_io(e, &self.host, "writing")),
                }
            }
            return Ok(());
        }
        while !data.is_empty() {
            match self.tcp.write(data) {
                Ok(0) => return Err(Error::io("writing", io::ErrorKind::WriteZero.into())),
                Ok(n) => data = &data[n..],
                Err(e) if is_wait(&e) => {
                    check()?;
                    deadline.check(what)?;
                }
                Err(e) => return Err(map_io(e, &self.host, "writing")),
            }
        }
        Ok(())
    }

    /// The TLS handshake (implicit TLS right after connect, or after STLS), bounded as a whole
    /// by the timeout.
    pub fn handshake(&mut self, config: Arc<ClientConfig>, check: Check) -> Result<()> {
        if self.tls.is_some() {
            return Err(Error::TlsConfig(
                "TLS is already active on this connection".into(),
            ));
        }
        let name = server_name(&self.host)?;
        let mut tls = ClientConnection::new(config, name).map_err(|source| Error::Tls {
            source,
            host: self.host.clone(),
        })?;
        let mut deadline = Deadline::new(self.timeout);
        let what = "to complete the TLS handshake";
        while tls.is_handshaking() || tls.wants_write() {
            let io = if tls.wants_write() {
                tls.write_tls(&mut self.tcp)
            } else {
                match tls.read_tls(&mut self.tcp) {
                    Ok(0) => return Err(ProtoError::Closed.into()),
                    Ok(n) => {
                        if let Err(source) = tls.process_new_packets() {
                            // Tell the server why (a certificate alert, say), then report it.
                            let _ = tls.write_tls(&mut self.tcp);
                            return Err(Error::Tls {
                                source,
                                host: self.host.clone(),
                            });
                        }
                        Ok(n)
                    }
                    Err(e) => Err(e),
                }
            };
            match io {
                Ok(_) => deadline.tick(check, what)?,
                Err(e) if is_wait(&e) => {
                    check()?;
                    deadline.check(what)?;
                }
                Err(e) => return Err(map_io(e, &self.host, "during the TLS handshake")),
            }
        }
        self.tls = Some(Box::new(tls));
        Ok(())
    }

    /// Sends a TLS close_notify where possible, then closes the socket.
    pub fn close(&mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = tls.write_tls(&mut self.tcp);
        }
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// A second handle on the socket, to shut it down from another thread.
    pub fn shutdown_handle(&self) -> Option<TcpStream> {
        self.tcp.try_clone().ok()
    }

    /// The socket, for Python to take over; only before TLS (rustls state cannot move).
    pub fn into_plain_tcp(self) -> Result<TcpStream> {
        if self.tls.is_some() {
            return Err(Error::TlsConfig(
                "TLS is already active on this connection".into(),
            ));
        }
        self.tcp
            .set_read_timeout(None)
            .map_err(|e| Error::io("handing the socket over", e))?;
        self.tcp
            .set_write_timeout(None)
            .map_err(|e| Error::io("handing the socket over", e))?;
        Ok(self.tcp)
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    pub fn info(&self) -> Info {
        Info {
            fd: i64::from(self.tcp.as_raw_fd()),
            peer: self.tcp.peer_addr().ok(),
            local: self.tcp.local_addr().ok(),
            tls: self.tls.as_deref().map(|c| super::tls_summary(c)),
        }
    }
}

enum ConnectFailure {
    /// This address failed: try the next.
    Io(io::Error),
    /// Ctrl-C or the like: stop.
    Aborted(Error),
}

/// A non-blocking connect waited for in slices, so signals are seen while it is pending.
fn open_socket(
    addr: SocketAddr,
    source: Option<SocketAddr>,
    timeout: Option<Duration>,
    check: Check,
) -> Result<TcpStream, ConnectFailure> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(ConnectFailure::Io)?;
    if let Some(src) = source {
        socket.bind(&src.into()).map_err(ConnectFailure::Io)?;
    }
    socket.set_nonblocking(true).map_err(ConnectFailure::Io)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            wait_connected(&socket, timeout, check)?;
        }
        Err(e) => return Err(ConnectFailure::Io(e)),
    }
    socket.set_nonblocking(false).map_err(ConnectFailure::Io)?;
    Ok(socket.into())
}

fn wait_connected(
    socket: &Socket,
    timeout: Option<Duration>,
    check: Check,
) -> Result<(), ConnectFailure> {
    let mut poll = Poll::new().map_err(ConnectFailure::Io)?;
    let fd = socket.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::WRITABLE)
        .map_err(ConnectFailure::Io)?;
    let mut events = Events::with_capacity(1);
    let deadline = Deadline::new(timeout);
    loop {
        match poll.poll(&mut events, Some(deadline.slice())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ConnectFailure::Io(e)),
        }
        if !events.is_empty() {
            if let Some(e) = socket.take_error().map_err(ConnectFailure::Io)? {
                return Err(ConnectFailure::Io(e));
            }
            if socket.peer_addr().is_ok() {
                return Ok(());
            }
        }
        check().map_err(ConnectFailure::Aborted)?;
        if deadline.check("").is_err() {
            return Err(ConnectFailure::Io(io::ErrorKind::TimedOut.into()));
        }
    }
}
