//! The tokio adapter between two runtimes over the in-memory link, on a current-thread and on a
//! multi-thread tokio runtime: `tokio::io::copy` over split halves, a tokio-util codec, UDP, and
//! hyper 1.x server and client (through hyper-util's `TokioIo`) both on cnet. Every test is
//! bounded in time and ends by accounting for every frame of both pools.

mod common;

use bytes::Bytes;
use cnet_socket::tokio::{TcpListener, TcpStream, UdpSocket};
use cnet_socket::Runtime;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Framed, LinesCodec};

/// Longest any one test may run.
const LIMIT: Duration = Duration::from_secs(60);

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Flavor {
    CurrentThread,
    MultiThread,
}

/// Runs `test(a, b)` on a tokio runtime of `flavor` over a fresh pair of cnet runtimes, at most
/// [`LIMIT`]; then shuts tokio down (dropping any task left) and checks the frame accounting.
fn run<F, Fut>(flavor: Flavor, frames: usize, test: F)
where
    F: FnOnce(Runtime, Runtime) -> Fut,
    Fut: Future<Output = ()>,
{
    let p = Pair::new(frames);
    let tokio = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let fut = test(p.a.clone(), p.b.clone());
    tokio.block_on(async {
        tokio::time::timeout(LIMIT, fut)
            .await
            .unwrap_or_else(|_| panic!("{flavor:?}: not done within {LIMIT:?}"))
    });
    tokio.shutdown_timeout(Duration::from_secs(5));
    p.finish();
}

/// Declares the test `$name` twice, on each tokio flavour.
macro_rules! both_flavors {
    ($name:ident, $frames:expr, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn current_thread() {
                run(Flavor::CurrentThread, $frames, $body);
            }
            #[test]
            fn multi_thread() {
                run(Flavor::MultiThread, $frames, $body);
            }
        }
    };
}

async fn echo_copy_1mib(a: Runtime, b: Runtime) {
    let l = TcpListener::bind(&b, addr(IP_B, 7)).await.unwrap();
    let server = tokio::spawn(async move {
        let (s, peer) = l.accept().await.unwrap();
        assert_eq!(peer.ip(), &IP_A);
        let (mut r, mut w) = s.into_split();
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n
    });
    let c = TcpStream::connect(&a, addr(IP_B, 7)).await.unwrap();
    assert_eq!(c.peer_addr().unwrap(), addr(IP_B, 7));
    let data = pattern(1 << 20, 3);
    let (mut r, mut w) = c.into_split();
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        // Uneven writes, so segment boundaries never line up with the pattern's.
        for chunk in d2.chunks(7919) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::with_capacity(data.len());
    r.read_to_end(&mut back).await.unwrap();
    let w = writer.await.unwrap();
    assert_eq!(server.await.unwrap(), data.len() as u64, "server copied");
    assert_eq!(back.len(), data.len());
    let first_diff = back.iter().zip(&data).position(|(x, y)| x != y);
    assert_eq!(first_diff, None, "echo differs");
    drop((r, w));
}

both_flavors!(tcp_echo_with_tokio_io_copy_1mib, 4096, echo_copy_1mib);

async fn lines(a: Runtime, b: Runtime) {
    let l = TcpListener::bind(&b, addr(IP_B, 9000)).await.unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        s.get_ref().set_nodelay(true).unwrap();
        let mut f = Framed::new(s, LinesCodec::new_with_max_length(64 * 1024));
        let mut n = 0usize;
        while let Some(line) = f.next().await {
            let line = line.unwrap();
            f.send(format!("{}:{}", line.len(), line.to_uppercase()))
                .await
                .unwrap();
            n += 1;
        }
        n
    });
    let c = TcpStream::connect(&a, addr(IP_B, 9000)).await.unwrap();
    // Without it each exchange whose line ends in a small segment waits for a delayed ACK.
    c.get_ref().set_nodelay(true).unwrap();
    let mut f = Framed::new(c, LinesCodec::new());
    const LINES: usize = 500;
    for i in 0..LINES {
        // Lines of 0 to ~5 000 bytes: some span several segments.
        let line: String =
            std::iter::repeat_n("ab", i * 5 % 2500).collect::<String>() + &i.to_string();
        f.send(line.clone()).await.unwrap();
        let back = f.next().await.expect("a reply line").unwrap();
        assert_eq!(back, format!("{}:{}", line.len(), line.to_uppercase()));
    }
    // Close our side: the server's stream of lines ends.
    let mut s = f.into_inner();
    s.shutdown().await.unwrap();
    assert_eq!(server.await.unwrap(), LINES);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "nothing after the last reply");
}

both_flavors!(lines_codec_framed_over_a_stream, 1024, lines);

async fn udp(a: Runtime, b: Runtime) {
    const N: usize = 200;
    let server = UdpSocket::bind(&b, addr(IP_B, 5353)).await.unwrap();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        for _ in 0..N {
            let (n, src) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(server.send_to(&buf[..n], src).await.unwrap(), n);
        }
    });
    // The first send follows the bind at once: the owner thread may not have lent its spare
    // send frames yet (this once lost the sender's wake-up).
    let client = UdpSocket::bind(&a, addr(IP_A, 0)).await.unwrap();
    let mut buf = vec![0u8; 2048];
    for i in 0..N {
        let msg = pattern(1 + i * 7, i as u8);
        tokio::time::timeout(
            Duration::from_secs(5),
            client.send_to(&msg, addr(IP_B, 5353)),
        )
        .await
        .expect("send within 5 s")
        .unwrap();
        let (n, src) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("echo within 5 s (the link does not lose datagrams)")
            .unwrap();
        assert_eq!(src, addr(IP_B, 5353));
        assert_eq!(&buf[..n], &msg[..]);
    }
    echo.await.unwrap();
    client.writable().await.unwrap();
}

both_flavors!(udp_send_to_recv_from, 1024, udp);

async fn hyper_handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_string();
    match (req.method().as_str(), path.as_str()) {
        ("POST", "/echo") => {
            let body = req.into_body().collect().await?.to_bytes();
            Ok(Response::new(Full::new(body)))
        }
        ("GET", p) if p.starts_with("/n/") => Ok(Response::new(Full::new(Bytes::from(format!(
            "request {}",
            &p[3..]
        ))))),
        _ => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            Ok(r)
        }
    }
}

async fn hyper_both_ends(a: Runtime, b: Runtime) {
    let l = TcpListener::bind(&b, addr(IP_B, 80)).await.unwrap();
    // The server serves exactly one connection: a client that did not keep it alive fails.
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), hyper::service::service_fn(hyper_handler))
            .await
    });
    let c = TcpStream::connect(&a, addr(IP_B, 80)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(c))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for i in 0..100 {
        send.ready().await.unwrap();
        let req = Request::get(format!("http://{IP_B}/n/{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("request {i}").as_bytes());
    }
    // Ready first: the connection task (maybe on another worker) finishes the last exchange.
    send.ready().await.unwrap();
    let missing = send
        .send_request(
            Request::get(format!("http://{IP_B}/nothing"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    drop(missing.into_body().collect().await.unwrap());
    let data = Bytes::from(pattern(1_000_000, 11));
    send.ready().await.unwrap();
    let req = Request::post(format!("http://{IP_B}/echo"))
        .header("content-length", data.len())
        .body(Full::new(data.clone()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let back = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "1 MB POST body echoed intact");
    // Closing the client ends the connection on both sides.
    drop(send);
    conn.await.unwrap().unwrap();
    server
        .await
        .unwrap()
        .expect("server connection ended cleanly");
}

both_flavors!(hyper_server_and_client_on_cnet, 4096, hyper_both_ends);
