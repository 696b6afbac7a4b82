//! `cnet http`: an HTTP/1.1 server (hyper 1.x) on cnet's tokio adapter, so that any HTTP client
//! or load tool can be pointed at cnet.
//!
//! - `GET /` : a short text saying what is served;
//! - `GET /bytes/N` : `N` deterministic bytes, byte `i` = `(i * 31 + 7) mod 256`, with a
//!   `Content-Length`, streamed in 64 KiB chunks (no allocation per request); `N` above
//!   [`MAX_BYTES`] or not a number is a 400;
//! - `POST /echo` : the request body back, with its length. The body is read whole before the
//!   answer starts (at most [`MAX_ECHO`], else 413), so a client that sends everything before it
//!   reads (Python's `http.client`, most load tools) never deadlocks against a full window;
//! - anything else: 404 (405 for a known path with another method).
//!
//! Connections are kept alive (HTTP/1.1). Requests hyper cannot parse get its 4xx answer and the
//! connection is closed; nothing a client sends makes the server panic.
//!
//! The server runs on a multi-thread tokio runtime of its own, over a cnet [`Runtime`] the
//! caller started (on AF_XDP in `cnet http`, any port in tests): tokio's workers only run the
//! connections' tasks, cnet's owner threads move the packets.

use anyhow::{Context, Result};
use bytes::Bytes;
use cnet_socket::tokio::{TcpListener, TcpStream};
use cnet_socket::Runtime;
use cnet_stack::tcp::TcpOpts;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

/// Largest `N` of `GET /bytes/N` (1 GiB).
pub const MAX_BYTES: u64 = 1 << 30;
/// Largest body `POST /echo` takes (64 MiB: it is held in memory before it goes back).
pub const MAX_ECHO: usize = 64 << 20;
/// Size of the chunks `GET /bytes/N` is streamed in.
const CHUNK: usize = 64 * 1024;

/// Byte `i` of every `GET /bytes/N` answer.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) & 0xff) as u8
}

/// Fills `out` with the pattern from offset `off` on.
pub fn fill_pattern(off: u64, out: &mut [u8]) {
    for (j, b) in out.iter_mut().enumerate() {
        *b = pattern_byte(off + j as u64);
    }
}

/// One chunk of the pattern from offset 0; the pattern repeats every 256 bytes, so it serves
/// every chunk (all start at multiples of [`CHUNK`]).
fn pattern_chunk() -> Bytes {
    static P: OnceLock<Bytes> = OnceLock::new();
    P.get_or_init(|| {
        let mut v = vec![0u8; CHUNK];
        fill_pattern(0, &mut v);
        Bytes::from(v)
    })
    .clone()
}

/// The body of `GET /bytes/N`: `left` more bytes of the pattern, cut from one shared chunk.
#[derive(Debug)]
struct PatternBody {
    left: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let me = self.get_mut();
        if me.left == 0 {
            return Poll::Ready(None);
        }
        let k = me.left.min(CHUNK as u64) as usize;
        me.left -= k as u64;
        Poll::Ready(Some(Ok(Frame::data(pattern_chunk().slice(..k)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every answer.
type RespBody = BoxBody<Bytes, BoxError>;

/// What the server counted so far.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Requests answered with a 4xx status by the handler.
    pub client_errors: AtomicU64,
    /// Body bytes answered (`GET /bytes/N` and `POST /echo`).
    pub body_bytes: AtomicU64,
    /// Connections that ended with an error (reset, parse error, time-out).
    pub connection_errors: AtomicU64,
}

impl std::fmt::Display for HttpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} requests ({} answered 4xx), {} body bytes, {} connection errors",
            self.connections.load(Relaxed),
            self.requests.load(Relaxed),
            self.client_errors.load(Relaxed),
            self.body_bytes.load(Relaxed),
            self.connection_errors.load(Relaxed),
        )
    }
}

fn text(status: StatusCode, msg: &'static str) -> Response<RespBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(msg.as_bytes()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn with_length(mut r: Response<RespBody>, n: u64) -> Response<RespBody> {
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(n));
    r
}

/// Answers one request (never fails: every problem is an HTTP status).
pub async fn handle(req: Request<Incoming>, stats: Arc<HttpStats>) -> Response<RespBody> {
    let r = route(req, &stats).await;
    stats.requests.fetch_add(1, Relaxed);
    if r.status().is_client_error() {
        stats.client_errors.fetch_add(1, Relaxed);
    }
    r
}

async fn route(req: Request<Incoming>, stats: &HttpStats) -> Response<RespBody> {
    let path = req.uri().path();
    let method = req.method();
    if path == "/" {
        if method != Method::GET && method != Method::HEAD {
            return not_allowed("GET, HEAD");
        }
        return text(
            StatusCode::OK,
            "cnet http: GET /bytes/N for N pattern bytes, POST /echo for the body back\n",
        );
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        if method != Method::GET && method != Method::HEAD {
            return not_allowed("GET, HEAD");
        }
        let n = match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => n,
            Ok(_) => return text(StatusCode::BAD_REQUEST, "N is above 1073741824 (1 GiB)\n"),
            Err(_) => return text(StatusCode::BAD_REQUEST, "N must be a decimal number\n"),
        };
        if method == Method::GET {
            stats.body_bytes.fetch_add(n, Relaxed);
        }
        let mut r = Response::new(PatternBody { left: n }.map_err(|e| match e {}).boxed());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return with_length(r, n);
    }
    if path == "/echo" {
        if method != Method::POST {
            return not_allowed("POST");
        }
        let announced = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_ECHO as u64) {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body above 67108864 bytes (64 MiB)\n",
            );
        }
        let body = match Limited::new(req.into_body(), MAX_ECHO).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body above 67108864 bytes (64 MiB)\n",
                )
            }
            Err(e) => {
                // The client went away or sent a broken body: answer if the connection still
                // can, hyper closes it after.
                tracing::debug!(error = %e, "echo body");
                return text(StatusCode::BAD_REQUEST, "could not read the body\n");
            }
        };
        let n = body.len() as u64;
        stats.body_bytes.fetch_add(n, Relaxed);
        let mut r = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return with_length(r, n);
    }
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn not_allowed(allow: &'static str) -> Response<RespBody> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// Serves one connection until the client closes it (keep-alive).
async fn serve_connection(s: TcpStream, stats: Arc<HttpStats>) {
    let peer = s.peer_addr().ok();
    serve_io(s, peer, stats).await
}

/// Serves one connection on any tokio stream (cnet's, or a kernel `tokio::net::TcpStream` for
/// comparisons) with the same hyper settings and service as [`HttpServer`], until the client
/// closes it; `peer` is only logged.
pub async fn serve_io<S>(s: S, peer: impl std::fmt::Debug, stats: Arc<HttpStats>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let st = stats.clone();
    let svc = hyper::service::service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, Infallible>(handle(req, st).await) }
    });
    let r = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true)
        .serve_connection(TokioIo::new(s), svc)
        .await;
    if let Err(e) = r {
        stats.connection_errors.fetch_add(1, Relaxed);
        tracing::debug!(?peer, error = %e, "connection ended with an error");
    }
}

/// A running HTTP server: its tokio runtime, the accept loop and the counters.
#[derive(Debug)]
pub struct HttpServer {
    tokio: tokio::runtime::Runtime,
    stop: Arc<tokio::sync::Notify>,
    accept: tokio::task::JoinHandle<()>,
    stats: Arc<HttpStats>,
    local: SocketAddrV4,
}

impl HttpServer {
    /// Listens on `0.0.0.0:port` on every queue of `rt` (backlog 1024, `TCP_NODELAY` on every
    /// connection) and serves with `threads` tokio worker threads.
    pub fn start(rt: &Runtime, port: u16, threads: usize) -> Result<HttpServer> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("cnet-http")
            .enable_time()
            .build()
            .context("tokio runtime")?;
        let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        // No Nagle: hyper writes an answer's head and body as they come, and a last small
        // segment held for the ACK of the one before meets the client's delayed ACK (40 ms).
        let opts = TcpOpts {
            nodelay: true,
            ..TcpOpts::default()
        };
        let l = cnet_socket::TcpListener::bind_with(rt, local, 1024, opts)
            .map(TcpListener::from_std)
            .with_context(|| format!("listen on {local}"))?;
        let stats = Arc::new(HttpStats::default());
        let stop = Arc::new(tokio::sync::Notify::new());
        let accept = tokio.spawn(accept_loop(l, stats.clone(), stop.clone()));
        Ok(HttpServer {
            tokio,
            stop,
            accept,
            stats,
            local,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// The counters, live.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// Stops accepting, drops every connection (waiting at most `grace` for their tasks) and
    /// returns the counters. Call it before joining the cnet runtime, so that every buffer the
    /// connections held is back in its pool.
    pub fn stop(self, grace: Duration) -> Arc<HttpStats> {
        self.stop.notify_one();
        let _ = self
            .tokio
            .block_on(async { tokio::time::timeout(grace, self.accept).await });
        self.tokio.shutdown_timeout(grace);
        self.stats
    }
}

async fn accept_loop(l: TcpListener, stats: Arc<HttpStats>, stop: Arc<tokio::sync::Notify>) {
    loop {
        let r = tokio::select! {
            _ = stop.notified() => return,
            r = l.accept() => r,
        };
        match r {
            Ok((s, _)) => {
                stats.connections.fetch_add(1, Relaxed);
                tokio::spawn(serve_connection(s, stats.clone()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                // The cnet runtime is down: nothing will be accepted any more.
                tracing::error!(error = %e, "accept: the runtime stopped");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_the_documented_one_and_chunks_line_up() {
        assert_eq!(pattern_byte(0), 7);
        assert_eq!(pattern_byte(1), 38);
        assert_eq!(pattern_byte(9), (9 * 31 + 7) as u8);
        assert_eq!(pattern_byte(256 + 5), pattern_byte(5));
        let c = pattern_chunk();
        let mut want = vec![0u8; CHUNK];
        fill_pattern(3 * CHUNK as u64, &mut want);
        assert_eq!(&c[..], &want[..], "every chunk is the first one");
    }

    #[test]
    fn pattern_body_has_exactly_n_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for n in [
            0u64,
            1,
            CHUNK as u64 - 1,
            CHUNK as u64,
            3 * CHUNK as u64 + 17,
        ] {
            let b = PatternBody { left: n };
            assert_eq!(b.size_hint().exact(), Some(n));
            let got = rt.block_on(b.collect()).unwrap().to_bytes();
            assert_eq!(got.len() as u64, n);
            assert!(got
                .iter()
                .enumerate()
                .all(|(i, x)| *x == pattern_byte(i as u64)));
        }
    }
}
