//! QUIC on cnet (issue #15): an echo server and a client on `quinn-proto` (sans IO), driven by one
//! thread each with explicit time, over cnet's UDP sockets ([`cnet_socket::UdpSocket`], on
//! AF_XDP or any port) or over a kernel UDP socket.
//!
//! - [`serve_echo`]: accepts connections (ALPN `echo`, `hq-interop`, `hq-29`; Retry optional) and
//!   echoes every bidirectional stream until its FIN.
//! - [`run_client`]: connects, opens N streams of M bytes each (a pattern per stream), checks every
//!   echo by SHA-256, and reports handshake time, goodput and the connection's statistics.
//!
//! rustls uses the `ring` provider, passed explicitly (never the process default). Send batches
//! (`Transmit::segment_size`) go out through [`cnet_socket::UdpSocket::send_many`]. Not carried:
//! ECN bits (cnet's UDP has no TOS yet) and DF (cnet's UDP output does not set it): path MTU
//! discovery is capped at the socket's largest unfragmented payload.

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, ConnectionStats, DatagramEvent, Dir, Endpoint,
    EndpointConfig, Event, MtuDiscoveryConfig, ServerConfig, StreamEvent, StreamId,
    TransportConfig, VarInt,
};
use ring::digest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// ALPN protocols the echo server offers.
pub const SERVER_ALPN: [&[u8]; 3] = [b"echo", b"hq-interop", b"hq-29"];

/// Errors of the QUIC apps.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// A certificate or key file could not be read or parsed.
    #[error("certificate/key: {0}")]
    Cert(String),
    /// TLS or QUIC configuration was refused.
    #[error("configuration: {0}")]
    Config(String),
    /// A socket error (cnet or kernel).
    #[error("socket: {0}")]
    Socket(String),
    /// The connection could not be started.
    #[error("connect: {0}")]
    Connect(#[from] quinn_proto::ConnectError),
    /// The connection was lost before the work was done.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn_proto::ConnectionError),
    /// An echoed stream did not match what was sent.
    #[error("stream {stream}: echo differs from what was sent ({got} bytes back, {sent} sent)")]
    EchoMismatch {
        /// Stream index (0-based, in opening order).
        stream: usize,
        /// Bytes sent.
        sent: u64,
        /// Bytes echoed back.
        got: u64,
    },
    /// The peer reset or stopped a stream.
    #[error("stream {0}: reset or stopped by the peer")]
    StreamAborted(usize),
    /// The work did not finish in time.
    #[error("timed out after {0:?} ({1})")]
    TimedOut(Duration, String),
    /// Bad arguments.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
}

fn sock_err(e: impl std::fmt::Display) -> QuicError {
    QuicError::Socket(e.to_string())
}

/// The datagram I/O a QUIC driver runs over: a cnet UDP socket or a kernel one.
pub trait DatagramIo {
    /// The bound address.
    fn local_addr(&self) -> SocketAddr;
    /// The largest payload sent without IP fragmentation.
    fn max_payload(&self) -> usize;
    /// Hands every waiting datagram (at most `max`) to `f`, waiting until `deadline` for the
    /// first one when none is waiting. Returns how many were handed over.
    fn recv_batch(
        &mut self,
        deadline: Instant,
        max: usize,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, QuicError>;
    /// Sends `data` cut into datagrams of `segment` bytes (the last may be shorter) to `dst`.
    fn send(&mut self, data: &[u8], segment: usize, dst: SocketAddr) -> Result<(), QuicError>;
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// A cnet UDP socket as [`DatagramIo`].
pub struct CnetIo {
    sock: cnet_socket::UdpSocket,
    /// Unparks the thread that last waited (made again when another thread waits).
    waker: Option<(std::thread::ThreadId, Waker)>,
    scratch: Vec<u8>,
}

impl CnetIo {
    /// Wraps a bound cnet UDP socket.
    pub fn new(sock: cnet_socket::UdpSocket) -> CnetIo {
        CnetIo {
            sock,
            waker: None,
            scratch: vec![0; 65_535],
        }
    }

    fn waker(&mut self) -> Waker {
        let me = std::thread::current();
        match &self.waker {
            Some((id, w)) if *id == me.id() => w.clone(),
            _ => {
                let w = Waker::from(Arc::new(ThreadWaker(me.clone())));
                self.waker = Some((me.id(), w.clone()));
                w
            }
        }
    }
}

impl DatagramIo for CnetIo {
    fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().into()
    }

    fn max_payload(&self) -> usize {
        self.sock.max_payload()
    }

    fn recv_batch(
        &mut self,
        deadline: Instant,
        max: usize,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, QuicError> {
        let mut n = 0;
        let waker = self.waker();
        let mut cx = Context::from_waker(&waker);
        while n < max {
            let d = if n == 0 {
                match self.sock.poll_recv_from(&mut cx) {
                    Poll::Ready(r) => r.map_err(sock_err)?,
                    Poll::Pending => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        std::thread::park_timeout(deadline - now);
                        continue;
                    }
                }
            } else {
                match self.sock.try_recv_from() {
                    Ok(d) => d,
                    Err(cnet_socket::Error::WouldBlock) => break,
                    Err(e) => return Err(sock_err(e)),
                }
            };
            let src = SocketAddr::V4(d.src);
            match d.as_slice() {
                Some(s) => f(src, s),
                None => {
                    let len = d.copy_to(&mut self.scratch);
                    f(src, &self.scratch[..len]);
                }
            }
            n += 1;
        }
        Ok(n)
    }

    fn send(&mut self, data: &[u8], segment: usize, dst: SocketAddr) -> Result<(), QuicError> {
        let SocketAddr::V4(dst) = dst else {
            return Err(QuicError::InvalidInput("cnet is IPv4 only"));
        };
        if segment <= self.sock.max_payload() {
            self.sock.send_many(data, segment, dst).map_err(sock_err)?;
        } else {
            for seg in data.chunks(segment) {
                self.sock.send_to(seg, dst).map_err(sock_err)?;
            }
        }
        Ok(())
    }
}

/// A kernel UDP socket as [`DatagramIo`] (the client without `--iface`).
pub struct KernelIo {
    sock: std::net::UdpSocket,
    buf: Vec<u8>,
}

impl KernelIo {
    /// Binds a kernel UDP socket on `local`.
    pub fn bind(local: SocketAddr) -> Result<KernelIo, QuicError> {
        let sock = std::net::UdpSocket::bind(local).map_err(sock_err)?;
        Ok(KernelIo {
            sock,
            buf: vec![0; 65_535],
        })
    }
}

impl DatagramIo for KernelIo {
    fn local_addr(&self) -> SocketAddr {
        self.sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn max_payload(&self) -> usize {
        1472
    }

    fn recv_batch(
        &mut self,
        deadline: Instant,
        max: usize,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, QuicError> {
        let mut n = 0;
        while n < max {
            if n == 0 {
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(100));
                self.sock.set_nonblocking(false).map_err(sock_err)?;
                self.sock.set_read_timeout(Some(wait)).map_err(sock_err)?;
            } else {
                self.sock.set_nonblocking(true).map_err(sock_err)?;
            }
            match self.sock.recv_from(&mut self.buf) {
                Ok((len, src)) => {
                    f(src, &self.buf[..len]);
                    n += 1;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP port unreachable reported on a later call: not fatal for QUIC.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(sock_err(e)),
            }
        }
        Ok(n)
    }

    fn send(&mut self, data: &[u8], segment: usize, dst: SocketAddr) -> Result<(), QuicError> {
        self.sock.set_nonblocking(false).map_err(sock_err)?;
        for seg in data.chunks(segment.max(1)) {
            self.sock.send_to(seg, dst).map_err(sock_err)?;
        }
        Ok(())
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `localhost` and the key (rcgen).
pub fn self_signed() -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), QuicError> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| QuicError::Cert(e.to_string()))?;
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    Ok((ck.cert.der().clone(), key.into()))
}

/// Reads a PEM certificate chain and a PEM private key.
pub fn load_cert(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), QuicError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| QuicError::Cert(format!("{}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QuicError::Cert(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(QuicError::Cert(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| QuicError::Cert(format!("{}: {e}", key.display())))?;
    Ok((chain, key))
}

fn transport(max_payload: usize, streams: u32) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams));
    t.stream_receive_window(VarInt::from_u32(4 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(max_payload.clamp(1200, 65_527) as u16);
    t.mtu_discovery_config(Some(mtu));
    t.max_idle_timeout(Some(VarInt::from_u32(30_000).into()));
    t
}

/// The echo server's QUIC configuration: TLS 1.3 with the ring provider, ALPN [`SERVER_ALPN`],
/// the given chain and key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    max_payload: usize,
) -> Result<ServerConfig, QuicError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| QuicError::Cert(e.to_string()))?;
    tls.alpn_protocols = SERVER_ALPN.iter().map(|a| a.to_vec()).collect();
    tls.max_early_data_size = u32::MAX;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut cfg = ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(max_payload, 1024)));
    Ok(cfg)
}

/// Accepts any server certificate (checks only the handshake signature): the client talks to
/// self-signed echo servers.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client's QUIC configuration: TLS 1.3 with the ring provider and ALPN `alpn`; the server
/// certificate is checked against `trust` when given, else any certificate is accepted.
pub fn client_config(
    alpn: &[u8],
    trust: Option<CertificateDer<'static>>,
    max_payload: usize,
) -> Result<ClientConfig, QuicError> {
    let p = provider();
    let builder = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| QuicError::Config(e.to_string()))?;
    let mut tls = match trust {
        Some(cert) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(cert)
                .map_err(|e| QuicError::Cert(e.to_string()))?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(p)))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut cfg = ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport(max_payload, 1024)));
    Ok(cfg)
}

/// What a connection's application does with its events.
trait ConnApp {
    /// Handles the connection's application events and moves its streams.
    fn drive(&mut self, conn: &mut Connection, now: Instant);
}

/// Datagrams handed to `poll_transmit` at once (GSO-like batches).
const MAX_BATCH: usize = 10;

/// The sans-IO driver: one endpoint, its connections and their apps, over one socket.
struct Driver<Io: DatagramIo, A: ConnApp> {
    io: Io,
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, (Connection, A)>,
    buf: Vec<u8>,
    /// Server only: send Retry to unvalidated addresses.
    retry: bool,
    /// Datagrams received and handled.
    rx: u64,
    /// Connections accepted.
    accepted: u64,
}

impl<Io: DatagramIo, A: ConnApp> Driver<Io, A> {
    fn new(io: Io, server: Option<ServerConfig>, retry: bool) -> Self {
        let endpoint = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            server.map(Arc::new),
            true,
            None,
        );
        Driver {
            io,
            endpoint,
            conns: HashMap::new(),
            buf: Vec::with_capacity(65_535),
            retry,
            rx: 0,
            accepted: 0,
        }
    }

    /// One round: receive (waiting at most until `limit`), timers, apps, endpoint events,
    /// transmits. `accept` builds the app of a new connection (server).
    fn turn(
        &mut self,
        limit: Instant,
        accept: &mut dyn FnMut() -> Option<A>,
    ) -> Result<(), QuicError> {
        let next = self
            .conns
            .values_mut()
            .filter_map(|(c, _)| c.poll_timeout())
            .min()
            .map_or(limit, |t| t.min(limit));
        let mut got = Vec::new();
        self.io.recv_batch(next, 64, &mut |src, data| {
            got.push((src, BytesMut::from(data)));
        })?;
        let now = Instant::now();
        let local_ip = Some(self.io.local_addr().ip()).filter(|ip| !ip.is_unspecified());
        for (src, data) in got {
            self.rx += 1;
            self.buf.clear();
            match self
                .endpoint
                .handle(now, src, local_ip, None, data, &mut self.buf)
            {
                Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                    if let Some((c, _)) = self.conns.get_mut(&h) {
                        c.handle_event(ev);
                    }
                }
                Some(DatagramEvent::NewConnection(incoming)) => {
                    let Some(app) = accept() else {
                        self.endpoint.ignore(incoming);
                        continue;
                    };
                    if self.retry && !incoming.remote_address_validated() {
                        self.buf.clear();
                        match self.endpoint.retry(incoming, &mut self.buf) {
                            Ok(t) => self.transmit(t.destination, t.size, t.segment_size)?,
                            Err(e) => self.endpoint.ignore(e.into_incoming()),
                        }
                        continue;
                    }
                    self.buf.clear();
                    match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                        Ok((h, c)) => {
                            self.accepted += 1;
                            tracing::debug!(remote = %c.remote_address(), "QUIC connection accepted");
                            self.conns.insert(h, (c, app));
                        }
                        Err(e) => {
                            tracing::debug!(cause = %e.cause, "QUIC connection refused");
                            if let Some(t) = e.response {
                                self.transmit(t.destination, t.size, t.segment_size)?;
                            }
                        }
                    }
                }
                Some(DatagramEvent::Response(t)) => {
                    self.transmit(t.destination, t.size, t.segment_size)?
                }
                None => {}
            }
        }
        self.flush(now)
    }

    /// Timers, apps, endpoint events and transmits of every connection; drops drained ones.
    fn flush(&mut self, now: Instant) -> Result<(), QuicError> {
        let mut drained = Vec::new();
        for (&h, (c, app)) in self.conns.iter_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
            app.drive(c, now);
            while let Some(ev) = c.poll_endpoint_events() {
                let is_drained = ev.is_drained();
                if let Some(ce) = self.endpoint.handle_event(h, ev) {
                    c.handle_event(ce);
                }
                if is_drained {
                    drained.push(h);
                }
            }
            loop {
                self.buf.clear();
                let Some(t) = c.poll_transmit(now, MAX_BATCH, &mut self.buf) else {
                    break;
                };
                let seg = t.segment_size.unwrap_or(t.size);
                self.io.send(&self.buf[..t.size], seg, t.destination)?;
            }
            // Events the transmits may have raised (e.g. a stream became writable).
            app.drive(c, now);
        }
        for h in drained {
            self.conns.remove(&h);
        }
        Ok(())
    }

    fn transmit(
        &mut self,
        dst: SocketAddr,
        size: usize,
        segment: Option<usize>,
    ) -> Result<(), QuicError> {
        let seg = segment.unwrap_or(size);
        self.io.send(&self.buf[..size], seg, dst)
    }
}

/// One echoed stream: bytes read but not yet written back.
#[derive(Default)]
struct EchoStream {
    pending: VecDeque<Bytes>,
    fin: bool,
}

/// The echo app of one server connection.
#[derive(Default)]
struct EchoApp {
    streams: HashMap<StreamId, EchoStream>,
    /// Streams echoed to their FIN.
    done: u64,
    /// Bytes echoed.
    bytes: u64,
}

impl EchoApp {
    /// Writes back what is pending, then reads while the send side keeps up.
    fn service(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        loop {
            while let Some(b) = st.pending.front_mut() {
                match conn.send_stream(id).write(b) {
                    Ok(n) => {
                        self.bytes += n as u64;
                        if n == b.len() {
                            st.pending.pop_front();
                        } else {
                            let _ = b.split_to(n);
                        }
                    }
                    Err(quinn_proto::WriteError::Blocked) => return,
                    Err(_) => {
                        self.streams.remove(&id);
                        return;
                    }
                }
            }
            if st.fin {
                let _ = conn.send_stream(id).finish();
                self.streams.remove(&id);
                self.done += 1;
                return;
            }
            let mut recv = conn.recv_stream(id);
            let mut chunks = match recv.read(true) {
                Ok(c) => c,
                Err(_) => {
                    self.streams.remove(&id);
                    return;
                }
            };
            let mut moved = false;
            loop {
                match chunks.next(64 * 1024) {
                    Ok(Some(ch)) => {
                        st.pending.push_back(ch.bytes);
                        moved = true;
                        if st.pending.len() >= 16 {
                            break;
                        }
                    }
                    Ok(None) => {
                        st.fin = true;
                        moved = true;
                        break;
                    }
                    Err(quinn_proto::ReadError::Blocked) => break,
                    Err(quinn_proto::ReadError::Reset(_)) => {
                        let _ = chunks.finalize();
                        let _ = conn.send_stream(id).reset(VarInt::from_u32(0));
                        self.streams.remove(&id);
                        return;
                    }
                }
            }
            let _ = chunks.finalize();
            if !moved {
                return;
            }
        }
    }
}

impl ConnApp for EchoApp {
    fn drive(&mut self, conn: &mut Connection, _now: Instant) {
        while let Some(ev) = conn.poll() {
            match ev {
                Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                    while let Some(id) = conn.streams().accept(Dir::Bi) {
                        self.streams.insert(id, EchoStream::default());
                        self.service(conn, id);
                    }
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    // Not echoed: read and drop.
                    while let Some(id) = conn.streams().accept(Dir::Uni) {
                        let _ = conn.recv_stream(id).stop(VarInt::from_u32(0));
                    }
                }
                Event::Stream(StreamEvent::Readable { id })
                | Event::Stream(StreamEvent::Writable { id }) => self.service(conn, id),
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    self.streams.remove(&id);
                }
                Event::ConnectionLost { reason } => {
                    tracing::debug!(%reason, streams = self.done, bytes = self.bytes, "QUIC connection ended");
                }
                _ => {}
            }
        }
    }
}

/// Counters of an echo server run.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoSummary {
    /// Connections accepted (after Retry, if on).
    pub connections: u64,
    /// Datagrams received.
    pub datagrams: u64,
}

/// Runs the QUIC echo server on `io` until `stop` is set.
pub fn serve_echo<Io: DatagramIo>(
    io: Io,
    cfg: ServerConfig,
    retry: bool,
    stop: &AtomicBool,
) -> Result<EchoSummary, QuicError> {
    let mut d: Driver<Io, EchoApp> = Driver::new(io, Some(cfg), retry);
    while !stop.load(Ordering::Relaxed) {
        let limit = Instant::now() + Duration::from_millis(50);
        d.turn(limit, &mut || Some(EchoApp::default()))?;
    }
    Ok(EchoSummary {
        connections: d.accepted,
        datagrams: d.rx,
    })
}

/// Byte `i` of stream `s`'s pattern.
fn pattern_chunk(s: usize, off: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let i = off + k as u64;
        *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8 ^ (s as u8).wrapping_mul(151);
    }
}

/// What the client does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The server.
    pub server: SocketAddr,
    /// Name for SNI and certificate checks.
    pub server_name: String,
    /// ALPN offered.
    pub alpn: Vec<u8>,
    /// Streams opened.
    pub streams: usize,
    /// Bytes sent on each stream (and expected back).
    pub bytes: u64,
    /// Bound on the whole run.
    pub timeout: Duration,
    /// Certificate the server must present (`None`: any).
    pub trust: Option<CertificateDer<'static>>,
}

/// What a client run measured.
#[derive(Debug, Clone)]
pub struct ClientReport {
    /// From the first Initial to the handshake's completion.
    pub handshake: Duration,
    /// From the handshake's completion to the last echo checked.
    pub transfer: Duration,
    /// Payload bytes echoed and checked (all streams).
    pub bytes: u64,
    /// Streams echoed and checked.
    pub streams: usize,
    /// ALPN agreed.
    pub alpn: Option<Vec<u8>>,
    /// The connection's statistics at the end.
    pub stats: ConnectionStats,
}

impl ClientReport {
    /// Goodput in Mbit/s: echoed payload bytes over the transfer time.
    pub fn goodput_mbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.transfer.as_secs_f64().max(1e-9) / 1e6
    }
}

struct ClientStream {
    index: usize,
    sent: u64,
    got: u64,
    fin_sent: bool,
    tx_hash: digest::Context,
    rx_hash: digest::Context,
}

struct ClientApp {
    o: ClientOptions,
    connected: Option<Instant>,
    opened: usize,
    streams: HashMap<StreamId, ClientStream>,
    checked: usize,
    failure: Option<QuicError>,
    lost: Option<quinn_proto::ConnectionError>,
    chunk: Vec<u8>,
}

impl ClientApp {
    fn open_more(&mut self, conn: &mut Connection) {
        while self.opened < self.o.streams {
            let Some(id) = conn.streams().open(Dir::Bi) else {
                break;
            };
            self.streams.insert(
                id,
                ClientStream {
                    index: self.opened,
                    sent: 0,
                    got: 0,
                    fin_sent: false,
                    tx_hash: digest::Context::new(&digest::SHA256),
                    rx_hash: digest::Context::new(&digest::SHA256),
                },
            );
            self.opened += 1;
            self.write(conn, id);
        }
    }

    fn write(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        while st.sent < self.o.bytes {
            let n = (self.o.bytes - st.sent).min(self.chunk.len() as u64) as usize;
            pattern_chunk(st.index, st.sent, &mut self.chunk[..n]);
            match conn.send_stream(id).write(&self.chunk[..n]) {
                Ok(w) => {
                    st.tx_hash.update(&self.chunk[..w]);
                    st.sent += w as u64;
                }
                Err(quinn_proto::WriteError::Blocked) => return,
                Err(_) => {
                    self.failure = Some(QuicError::StreamAborted(st.index));
                    return;
                }
            }
        }
        if !st.fin_sent {
            st.fin_sent = true;
            let _ = conn.send_stream(id).finish();
        }
    }

    fn read(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        let mut recv = conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return;
        };
        let mut fin = false;
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(ch)) => {
                    st.rx_hash.update(&ch.bytes);
                    st.got += ch.bytes.len() as u64;
                }
                Ok(None) => {
                    fin = true;
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(_)) => {
                    self.failure = Some(QuicError::StreamAborted(st.index));
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        if fin {
            let st = self.streams.remove(&id).expect("present");
            let tx = st.tx_hash.finish();
            let rx = st.rx_hash.finish();
            if st.got != st.sent || tx.as_ref() != rx.as_ref() || st.sent != self.o.bytes {
                self.failure = Some(QuicError::EchoMismatch {
                    stream: st.index,
                    sent: st.sent,
                    got: st.got,
                });
            } else {
                self.checked += 1;
            }
        }
    }

    fn finished(&self) -> bool {
        self.checked == self.o.streams || self.failure.is_some() || self.lost.is_some()
    }
}

impl ConnApp for ClientApp {
    fn drive(&mut self, conn: &mut Connection, now: Instant) {
        while let Some(ev) = conn.poll() {
            match ev {
                Event::Connected => {
                    self.connected = Some(now);
                    self.open_more(conn);
                }
                Event::Stream(StreamEvent::Available { dir: Dir::Bi }) => self.open_more(conn),
                Event::Stream(StreamEvent::Writable { id }) => self.write(conn, id),
                Event::Stream(StreamEvent::Readable { id }) => self.read(conn, id),
                Event::Stream(StreamEvent::Stopped { id, .. }) => {
                    if let Some(st) = self.streams.get(&id) {
                        self.failure = Some(QuicError::StreamAborted(st.index));
                    }
                }
                Event::ConnectionLost { reason } => self.lost = Some(reason),
                _ => {}
            }
        }
        if self.connected.is_some() {
            // Streams whose writes were cut short by flow control resume on Writable; new
            // credit for streams opens more.
            self.open_more(conn);
        }
    }
}

/// Connects to `o.server` over `io`, echoes `o.streams` streams of `o.bytes` bytes and checks
/// each by SHA-256.
pub fn run_client<Io: DatagramIo>(io: Io, o: ClientOptions) -> Result<ClientReport, QuicError> {
    if o.streams == 0 {
        return Err(QuicError::InvalidInput("streams must be at least 1"));
    }
    let cfg = client_config(&o.alpn, o.trust.clone(), io.max_payload())?;
    let mut d: Driver<Io, ClientApp> = Driver::new(io, None, false);
    let start = Instant::now();
    let (h, conn) = d.endpoint.connect(start, cfg, o.server, &o.server_name)?;
    let deadline = start + o.timeout;
    d.conns.insert(
        h,
        (
            conn,
            ClientApp {
                o: o.clone(),
                connected: None,
                opened: 0,
                streams: HashMap::new(),
                checked: 0,
                failure: None,
                lost: None,
                chunk: vec![0; 64 * 1024],
            },
        ),
    );
    d.flush(start)?;
    loop {
        let (c, app) = d.conns.get_mut(&h).ok_or_else(|| {
            QuicError::Socket("connection drained before the work was done".into())
        })?;
        if app.finished() {
            let now = Instant::now();
            let stats = c.stats();
            let alpn = c
                .crypto_session()
                .handshake_data()
                .and_then(|h| {
                    h.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                        .ok()
                })
                .and_then(|h| h.protocol);
            let connected = app.connected;
            let (failure, lost, checked) = (app.failure.take(), app.lost.take(), app.checked);
            c.close(now, VarInt::from_u32(0), Bytes::from_static(b"done"));
            d.flush(now)?;
            if let Some(f) = failure {
                return Err(f);
            }
            if let Some(l) = lost {
                return Err(QuicError::ConnectionLost(l));
            }
            let connected = connected.unwrap_or(now);
            return Ok(ClientReport {
                handshake: connected - start,
                transfer: now - connected,
                bytes: checked as u64 * o.bytes,
                streams: checked,
                alpn,
                stats,
            });
        }
        let now = Instant::now();
        if now >= deadline {
            let what = format!(
                "handshake {}, {} of {} streams checked",
                if app.connected.is_some() {
                    "done"
                } else {
                    "not done"
                },
                app.checked,
                o.streams
            );
            return Err(QuicError::TimedOut(o.timeout, what));
        }
        d.turn(deadline, &mut || None)?;
    }
}

/// Binds a cnet UDP socket on `rt` at `local` and wraps it for the QUIC driver.
pub fn cnet_io(rt: &cnet_socket::Runtime, local: SocketAddrV4) -> Result<CnetIo, QuicError> {
    Ok(CnetIo::new(
        cnet_socket::UdpSocket::bind(rt, local).map_err(sock_err)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_cert_files_are_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("cnet-quic-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("c.pem");
        std::fs::write(&c, "not a pem").unwrap();
        assert!(matches!(load_cert(&c, &c), Err(QuicError::Cert(_))));
        assert!(matches!(
            load_cert(&dir.join("missing"), &c),
            Err(QuicError::Cert(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn configs_build_with_the_ring_provider() {
        let (cert, key) = self_signed().unwrap();
        server_config(vec![cert.clone()], key, 1472).unwrap();
        client_config(b"echo", Some(cert), 1472).unwrap();
        client_config(b"echo", None, 1472).unwrap();
    }
}
