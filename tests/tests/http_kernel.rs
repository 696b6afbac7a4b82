//! `cnet http` (hyper on cnet's tokio adapter, on AF_XDP) against the Linux kernel over veth, in
//! network namespaces (root; skipped with a printed reason elsewhere): curl fetching several URLs
//! on one kept-alive connection, a Python `http.client` doing 1 000 keep-alive requests, 10 MB
//! down and up checked by SHA-256, malformed requests answered with HTTP errors; and the other
//! way, a tokio + hyper client on cnet fetching from Python's `http.server` in the kernel's
//! namespace. Every run ends by accounting for every UMEM frame.

use bytes::Bytes;
use cnet_apps::http::{fill_pattern, HttpServer, HttpStats};
use cnet_apps::lab::{Lab, KERNEL_IP, STACK_DEV, STACK_IP};
use cnet_apps::service::{start_runtime, ServiceConfig};
use cnet_drivers::xdp::XdpConfig;
use cnet_socket::{ConnectOptions, Limits, Runtime};
use cnet_tests::require_lab;
use cnet_tests::xdp::in_kernel;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PORT: u16 = 80;

/// Skips the calling test, with the reason, when `cmd` cannot run here.
macro_rules! require_cmd {
    ($cmd:expr) => {
        if Command::new($cmd).arg("--version").output().is_err() {
            eprintln!(
                "SKIP {}: no `{}` (scripts/install-deps.sh installs it)",
                module_path!(),
                $cmd
            );
            return;
        }
    };
}

/// A cnet runtime on AF_XDP on the lab's stack end (netlink tells it its address), started on a
/// thread inside the stack namespace (its owner threads stay there).
fn start_cnet(lab: &Lab) -> Runtime {
    let rt = cnet_netlink::run_in_netns(&lab.stack_ns_path(), || {
        start_runtime(
            ServiceConfig {
                xdp: XdpConfig::new(STACK_DEV),
                queue: 0,
                extra_addrs: Vec::new(),
                netlink: true,
                seed: 0x4774,
            },
            Limits::default(),
            |_| Ok(vec![]),
        )
    })
    .expect("enter the stack namespace")
    .expect("cnet runtime on AF_XDP");
    rt.wait_ready(Duration::from_secs(10))
        .expect("runtime ready (netlink synced)");
    rt
}

/// Joins the runtime; checks it did not fail and that every UMEM frame came back.
fn finish(rt: Runtime) {
    for r in rt.join() {
        assert_eq!(r.failure, None, "queue {} failed", r.index);
        assert_eq!(r.frames_lost, 0, "frames lost: {r:?}");
        assert_eq!(r.frames_lent, 0, "frames still lent: {r:?}");
    }
}

/// `cnet http` on the stack side, and the runtime under it.
struct CnetHttp {
    rt: Runtime,
    server: HttpServer,
}

impl CnetHttp {
    fn start(lab: &Lab) -> CnetHttp {
        let rt = start_cnet(lab);
        let server = HttpServer::start(&rt, PORT, 2).expect("http server");
        CnetHttp { rt, server }
    }

    fn stop(self) -> Arc<HttpStats> {
        let stats = self.server.stop(Duration::from_secs(2));
        finish(self.rt);
        eprintln!("cnet http: {stats}");
        stats
    }
}

fn url(path: &str) -> String {
    format!("http://{STACK_IP}:{PORT}{path}")
}

/// A scratch directory for the test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(lab: &Lab) -> Scratch {
        let d = std::env::temp_dir().join(format!("cnet-http-{}", lab.stack_ns));
        std::fs::create_dir_all(&d).expect("temp dir");
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum runs");
    assert!(out.status.success(), "sha256sum {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_string()
}

fn pattern_vec(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fill_pattern(0, &mut v);
    v
}

/// Runs curl in the kernel namespace; returns its `-w` output.
fn curl(lab: &Lab, args: &[&str]) -> String {
    let mut v = vec!["curl", "-sS", "--max-time", "60"];
    v.extend_from_slice(args);
    let out = lab.kernel(&v).expect("curl succeeded");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn curl_fetches_several_urls_on_one_kept_alive_connection() {
    require_lab!();
    require_cmd!("curl");
    let lab = Lab::new("cxh", 1).unwrap();
    let files = Scratch::new(&lab);
    let srv = CnetHttp::start(&lab);
    let (f1, f2, f3, f4) = (
        files.path("1"),
        files.path("2"),
        files.path("3"),
        files.path("4"),
    );
    // One curl, four URLs: curl reuses the connection (num_connects 0 after the first).
    let w = "%{http_code} %{size_download} %{num_connects}\\n";
    let report = curl(
        &lab,
        &[
            "-w",
            w,
            "-o",
            f1.to_str().unwrap(),
            &url("/"),
            "-o",
            f2.to_str().unwrap(),
            &url("/bytes/1000"),
            "-o",
            f3.to_str().unwrap(),
            &url("/bytes/300000"),
            "-o",
            f4.to_str().unwrap(),
            &url("/no/such/thing"),
        ],
    );
    let lines: Vec<&str> = report.lines().collect();
    let text = std::fs::read(&f1).unwrap();
    assert_eq!(lines.len(), 4, "{report}");
    assert_eq!(lines[0], format!("200 {} 1", text.len()), "{report}");
    assert!(text.starts_with(b"cnet http"));
    assert_eq!(lines[1], "200 1000 0", "{report}");
    assert_eq!(lines[2], "200 300000 0", "{report}");
    assert!(
        lines[3].starts_with("404 ") && lines[3].ends_with(" 0"),
        "{report}"
    );
    assert_eq!(std::fs::read(&f2).unwrap(), pattern_vec(1000));
    assert_eq!(std::fs::read(&f3).unwrap(), pattern_vec(300_000));
    // Requests cnet must refuse with an HTTP error, each on a connection of its own.
    let bad = in_kernel(&lab, || {
        [
            &b"GET /bytes/1073741825 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /bytes/12ab HTTP/1.1\r\nHost: x\r\n\r\n",
            b"DELETE /echo HTTP/1.1\r\nHost: x\r\n\r\n",
            b"THIS IS NOT HTTP\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        ]
        .iter()
        .map(|req| {
            let mut s = TcpStream::connect(SocketAddrV4::new(STACK_IP, PORT)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(req).unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).expect("an answer");
            String::from_utf8_lossy(&head).to_string()
        })
        .collect::<Vec<_>>()
    });
    assert_eq!(
        bad,
        [
            "HTTP/1.1 400",
            "HTTP/1.1 400",
            "HTTP/1.1 405",
            "HTTP/1.1 400",
            "HTTP/1.1 400"
        ]
    );
    let stats = srv.stop();
    assert_eq!(
        stats.connections.load(std::sync::atomic::Ordering::Relaxed),
        1 + 5,
        "curl used one connection"
    );
}

/// 1 000 requests on one connection: `GET /bytes/N` of varying size, every tenth a `POST /echo`;
/// every answer checked. Prints `requests seconds`.
const PY_CLIENT: &str = r#"
import http.client, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pat = bytes(((j * 31 + 7) & 255) for j in range(4096))
c = http.client.HTTPConnection(host, port, timeout=10)
t = time.monotonic()
for i in range(n):
    if i % 10 == 9:
        body = bytes((i + j) & 255 for j in range(i % 3000))
        c.request("POST", "/echo", body=body)
        want = body
    else:
        size = (i * 37) % 4096
        c.request("GET", "/bytes/%d" % size)
        want = pat[:size]
    r = c.getresponse()
    got = r.read()
    if r.status != 200 or got != want or r.will_close:
        sys.exit("request %d: status %d, %d bytes, will_close %s" % (i, r.status, len(got), r.will_close))
dt = time.monotonic() - t
c.close()
print(n, "%.3f" % dt)
"#;

#[test]
fn python_client_makes_1000_keep_alive_requests() {
    require_lab!();
    require_cmd!("python3");
    let lab = Lab::new("cxh", 1).unwrap();
    let srv = CnetHttp::start(&lab);
    let out = lab
        .kernel(&[
            "timeout",
            "120",
            "python3",
            "-c",
            PY_CLIENT,
            &STACK_IP.to_string(),
            &PORT.to_string(),
            "1000",
        ])
        .expect("python client succeeded");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut it = text.split_whitespace();
    let n: u64 = it.next().and_then(|s| s.parse().ok()).expect("count");
    let secs: f64 = it.next().and_then(|s| s.parse().ok()).expect("seconds");
    assert_eq!(n, 1000);
    eprintln!(
        "python http.client -> cnet http: {n} keep-alive requests in {secs:.3} s ({:.0} requests/s)",
        n as f64 / secs
    );
    let stats = srv.stop();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        stats.connections.load(Relaxed),
        1,
        "one kept-alive connection"
    );
    assert_eq!(stats.requests.load(Relaxed), 1000);
    assert_eq!(stats.connection_errors.load(Relaxed), 0);
}

#[test]
fn ten_mb_down_and_up_checked_by_sha256() {
    require_lab!();
    require_cmd!("curl");
    require_cmd!("sha256sum");
    const N: usize = 10 << 20;
    let lab = Lab::new("cxh", 1).unwrap();
    let files = Scratch::new(&lab);
    let srv = CnetHttp::start(&lab);
    // Down: GET /bytes/10485760 against the pattern computed here.
    let (want, got) = (files.path("want"), files.path("got"));
    std::fs::write(&want, pattern_vec(N)).unwrap();
    let w = "%{http_code} %{size_download} %{time_total}";
    let path = format!("/bytes/{N}");
    let down = curl(&lab, &["-w", w, "-o", got.to_str().unwrap(), &url(&path)]);
    let f: Vec<&str> = down.split_whitespace().collect();
    assert_eq!(&f[..2], ["200", &N.to_string()], "{down}");
    assert_eq!(sha256_file(&got), sha256_file(&want), "10 MB GET intact");
    let secs: f64 = f[2].parse().unwrap();
    eprintln!(
        "curl GET 10 MB from cnet http: {secs:.3} s ({:.0} Mbit/s)",
        N as f64 * 8.0 / secs / 1e6
    );
    // Up and back: POST /echo of 10 MB of pseudo-random bytes (curl sends Expect: 100-continue).
    let (sent, back) = (files.path("sent"), files.path("back"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let body: Vec<u8> = (0..N)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&sent, &body).unwrap();
    let up = curl(
        &lab,
        &[
            "-w",
            "%{http_code} %{size_upload} %{size_download} %{time_total}",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", sent.display()),
            "-o",
            back.to_str().unwrap(),
            &url("/echo"),
        ],
    );
    let f: Vec<&str> = up.split_whitespace().collect();
    assert_eq!(&f[..3], ["200", &N.to_string(), &N.to_string()], "{up}");
    assert_eq!(
        sha256_file(&back),
        sha256_file(&sent),
        "10 MB POST echoed intact"
    );
    let secs: f64 = f[3].parse().unwrap();
    eprintln!(
        "curl POST 10 MB to cnet http /echo and back: {secs:.3} s ({:.0} Mbit/s each way)",
        N as f64 * 8.0 / secs / 1e6
    );
    let stats = srv.stop();
    assert_eq!(
        stats
            .connection_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// Python's `http.server` in the kernel namespace, bounded by `timeout`; stopped on drop.
struct KernelServer(std::process::Child);

impl Drop for KernelServer {
    fn drop(&mut self) {
        // SIGTERM to `timeout`, which passes it on to python.
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn tokio_client_on_cnet_fetches_from_a_kernel_http_server() {
    require_lab!();
    require_cmd!("python3");
    const N: usize = 3 << 20;
    const KPORT: u16 = 8080;
    let lab = Lab::new("cxh", 1).unwrap();
    let files = Scratch::new(&lab);
    let mut blob = vec![0u8; N];
    for (i, b) in blob.iter_mut().enumerate() {
        *b = (i.wrapping_mul(131) ^ (i >> 9)) as u8;
    }
    std::fs::write(files.path("blob"), &blob).unwrap();
    let dir = files.0.to_str().unwrap().to_string();
    let _kernel = KernelServer(
        Command::new("ip")
            .args(["netns", "exec", &lab.kernel_ns, "timeout", "90", "python3"])
            .args(["-m", "http.server", &KPORT.to_string()])
            .args(["--bind", &KERNEL_IP.to_string(), "--directory", &dir])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server"),
    );
    // Wait until it listens (probed from its own namespace), at most 10 s.
    let listening = in_kernel(&lab, || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(SocketAddrV4::new(KERNEL_IP, KPORT)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(listening, "http.server did not listen within 10 s");
    let rt = start_cnet(&lab);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rt2 = rt.clone();
    let fetched = tokio.block_on(async move {
        tokio::time::timeout(Duration::from_secs(60), async move {
            let mut out = Vec::new();
            // http.server speaks HTTP/1.0: one connection per request.
            for path in ["/blob", "/missing"] {
                let o = ConnectOptions {
                    timeout: Some(Duration::from_secs(5)),
                    ..Default::default()
                };
                let s = cnet_socket::tokio::TcpStream::connect_with(
                    &rt2,
                    SocketAddrV4::new(KERNEL_IP, KPORT),
                    o,
                )
                .await
                .expect("cnet connects to the kernel's server");
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                    .await
                    .expect("handshake");
                let conn = tokio::spawn(conn);
                let req = hyper::Request::get(path)
                    .header("host", format!("{KERNEL_IP}:{KPORT}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let t = Instant::now();
                let resp = send.send_request(req).await.expect("response");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                out.push((status, body, t.elapsed()));
                drop(send);
                conn.await.unwrap().expect("connection ended cleanly");
            }
            out
        })
        .await
        .expect("fetched within 60 s")
    });
    tokio.shutdown_timeout(Duration::from_secs(2));
    finish(rt);
    let (status, body, took) = &fetched[0];
    assert_eq!(*status, hyper::StatusCode::OK);
    assert_eq!(body.len(), N);
    assert!(body[..] == blob[..], "body from the kernel's server intact");
    eprintln!(
        "hyper on cnet GET {N} bytes from python http.server: {:.3} s",
        took.as_secs_f64()
    );
    assert_eq!(fetched[1].0, hyper::StatusCode::NOT_FOUND);
}
