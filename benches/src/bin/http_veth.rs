//! `cnet http` (hyper on cnet's tokio adapter, on AF_XDP) against the same hyper service on kernel
//! sockets, same client, over veth (issue #11). Root only: prints `SKIP` and exits 0 elsewhere.
//!
//! ```text
//! http_veth [--conns 16] [--secs 5] [--warmup 1] [--runs 3] [--bytes 64]
//!           [--server-threads 2] [--client-threads 1] [--quick]
//! ```
//!
//! One [`Lab`] (two namespaces joined by veth, removed on exit, also on error or Ctrl-C).
//!
//! - **cnet**: a cnet runtime on AF_XDP on `cnet0` (queue 0) in the stack namespace, with
//!   [`HttpServer`] (`cnet http`) on 198.18.0.2:80, `--server-threads` tokio workers.
//! - **kernel**: cnet stopped (the XDP program detached), a kernel `tokio::net::TcpListener` on
//!   the same 198.18.0.2:80 in the stack namespace, `TCP_NODELAY` on every connection, served by
//!   [`cnet_apps::http::serve_io`]: the same hyper settings and service code as `cnet http`, on a
//!   tokio runtime with the same number of workers.
//! - **client** (kernel namespace, 198.18.0.1): a tokio runtime (`--client-threads`; 1 is a
//!   current-thread runtime) with `--conns` hyper HTTP/1.1 connections kept alive, each doing
//!   `GET /bytes/N` back to back (closed loop), for `--warmup` + `--secs` seconds. Only requests
//!   started after the warm-up and finished before the end count; their latency (request written
//!   to body read whole) goes into an HdrHistogram (ns, 3 significant digits).
//!
//! Runs interleave the two servers (`--runs` times, order alternating); results are medians.
//! Output, one record per line:
//!
//! ```text
//! run variant=cnet run=1 requests=.. rps=.. p50_us=.. p99_us=.. ... server: ..
//! result variant=cnet runs=3 median_rps=.. median_p50_us=.. median_p99_us=..
//! ratio rps_cnet_over_kernel=.. p99_cnet_over_kernel=.. goal=rps>=1.5,p99<=0.7 goal_met=yes|no
//! ```

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use cnet_apps::http::{serve_io, HttpServer, HttpStats};
use cnet_apps::lab::{self, Lab, STACK_DEV, STACK_IP};
use cnet_apps::service::{start_runtime, ServiceConfig};
use cnet_drivers::xdp::XdpConfig;
use cnet_socket::{Limits, Runtime};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PORT: u16 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Cnet,
    Kernel,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Cnet => "cnet",
            Variant::Kernel => "kernel",
        }
    }
}

/// Command-line options (`http_veth --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "http_veth",
    about = "HTTP/1.1 over veth: `cnet http` against hyper on kernel sockets"
)]
struct Options {
    /// Keep-alive client connections.
    #[arg(long, default_value_t = 16, value_parser = cnet_benches::cli::count::<usize>)]
    conns: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Untimed seconds before each run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Runs per variant (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = cnet_benches::cli::count::<usize>)]
    runs: usize,
    /// Response body bytes.
    #[arg(long, default_value_t = 64, value_parser = cnet_benches::cli::count::<u64>)]
    bytes: u64,
    /// Server worker threads (tokio).
    #[arg(long, default_value_t = 2, value_parser = cnet_benches::cli::count::<usize>)]
    server_threads: usize,
    /// Client worker threads (tokio).
    #[arg(long, default_value_t = 1, value_parser = cnet_benches::cli::count::<usize>)]
    client_threads: usize,
    /// A short run: 1 s, 0.3 s warm-up, one run.
    #[arg(long)]
    quick: bool,
}

fn parse() -> Result<Options> {
    let mut o = <Options as clap::Parser>::parse();
    if o.quick {
        o.secs = 1.0;
        o.warmup = 0.3;
        o.runs = 1;
    }
    anyhow::ensure!(o.secs > 0.0 && o.secs <= 60.0, "--secs in (0, 60]");
    anyhow::ensure!(o.warmup >= 0.0 && o.warmup <= 10.0, "--warmup in [0, 10]");
    anyhow::ensure!((1..=1024).contains(&o.conns), "--conns 1..=1024");
    anyhow::ensure!((1..=20).contains(&o.runs), "--runs 1..=20");
    anyhow::ensure!(
        (1..=16).contains(&o.server_threads),
        "--server-threads 1..=16"
    );
    anyhow::ensure!(
        (1..=16).contains(&o.client_threads),
        "--client-threads 1..=16"
    );
    anyhow::ensure!(o.bytes <= 1 << 20, "--bytes at most 1048576");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Servers (stack namespace)

/// One of the two servers, running.
enum Server {
    Cnet {
        rt: Runtime,
        http: HttpServer,
    },
    Kernel {
        tokio: tokio::runtime::Runtime,
        stop: Arc<tokio::sync::Notify>,
        stats: Arc<HttpStats>,
    },
}

/// A cnet runtime on AF_XDP on the lab's stack end, started from a thread in the stack namespace
/// (its owner thread stays there); retried for up to 5 s while the previous run's AF_XDP socket
/// on the queue is still being torn down (EBUSY).
fn start_cnet(lab: &Lab) -> Result<Runtime> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = cnet_netlink::run_in_netns(&lab.stack_ns_path(), || {
            start_runtime(
                ServiceConfig {
                    xdp: XdpConfig::new(STACK_DEV),
                    queue: 0,
                    extra_addrs: Vec::new(),
                    netlink: true,
                    seed: 0x4876,
                },
                Limits::default(),
                |_| Ok(vec![]),
            )
        })
        .context("enter the stack namespace")?;
        match r {
            Ok(rt) => {
                rt.wait_ready(Duration::from_secs(10))
                    .context("cnet runtime ready (netlink synced)")?;
                return Ok(rt);
            }
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("os error 16") => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).context("cnet runtime on AF_XDP"),
        }
    }
}

async fn kernel_accept(
    l: tokio::net::TcpListener,
    stats: Arc<HttpStats>,
    stop: Arc<tokio::sync::Notify>,
) {
    loop {
        let r = tokio::select! {
            _ = stop.notified() => return,
            r = l.accept() => r,
        };
        match r {
            Ok((s, peer)) => {
                // As `cnet http` does: no Nagle.
                let _ = s.set_nodelay(true);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(serve_io(s, peer, stats.clone()));
            }
            Err(e) => {
                eprintln!("kernel accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl Server {
    fn start(lab: &Lab, v: Variant, o: &Options) -> Result<Server> {
        match v {
            Variant::Cnet => {
                let rt = start_cnet(lab)?;
                let http = HttpServer::start(&rt, PORT, o.server_threads)?;
                Ok(Server::Cnet { rt, http })
            }
            Variant::Kernel => {
                // The listening socket belongs to the namespace it is made in; the runtime's
                // threads can be anywhere.
                let addr = SocketAddrV4::new(STACK_IP, PORT);
                let l = cnet_netlink::run_in_netns(&lab.stack_ns_path(), || {
                    std::net::TcpListener::bind(addr)
                })
                .context("enter the stack namespace")?
                .with_context(|| format!("kernel listen on {addr}"))?;
                l.set_nonblocking(true)?;
                let tokio = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(o.server_threads)
                    .thread_name("kernel-http")
                    .enable_all()
                    .build()
                    .context("tokio runtime")?;
                let l = {
                    let _g = tokio.enter();
                    tokio::net::TcpListener::from_std(l)?
                };
                let stats = Arc::new(HttpStats::default());
                let stop = Arc::new(tokio::sync::Notify::new());
                tokio.spawn(kernel_accept(l, stats.clone(), stop.clone()));
                Ok(Server::Kernel { tokio, stop, stats })
            }
        }
    }

    /// Stops the server; a summary of what it counted (and, for cnet, its frame accounting).
    fn stop(self, lab: &Lab) -> Result<String> {
        match self {
            Server::Cnet { rt, http } => {
                let stats = http.stop(Duration::from_secs(2));
                let mut out = format!("{stats}");
                for r in rt.join() {
                    if let Some(f) = r.failure {
                        bail!("cnet queue {} failed: {f}", r.index);
                    }
                    if r.frames_lost != 0 || r.frames_lent != 0 {
                        bail!(
                            "cnet queue {}: frames lost {} lent {}",
                            r.index,
                            r.frames_lost,
                            r.frames_lent
                        );
                    }
                    out.push_str(", frames accounted");
                }
                // The kernel server needs the frames back. libxdp detaches its program with the
                // last socket when it runs with its dispatcher; where the dispatcher cannot load
                // (it falls back to a single program, as on this test machine) the program stays,
                // dropping every frame: the benchmark takes it off then.
                let deadline = Instant::now() + Duration::from_secs(1);
                loop {
                    let link = lab.ip_stack(&["-d", "link", "show", "dev", STACK_DEV])?;
                    if !String::from_utf8_lossy(&link.stdout).contains("prog/xdp") {
                        break;
                    }
                    if Instant::now() > deadline {
                        lab.ip_stack(&["link", "set", "dev", STACK_DEV, "xdp", "off"])?;
                        out.push_str(", XDP program left by libxdp taken off");
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(out)
            }
            Server::Kernel { tokio, stop, stats } => {
                stop.notify_one();
                tokio.shutdown_timeout(Duration::from_secs(2));
                Ok(format!("{stats}"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client (kernel namespace)

struct ClientResult {
    requests: u64,
    errors: u64,
    secs: f64,
    hist: Histogram<u64>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddrV4) -> Result<Sender> {
    let s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")?
        .context("connect")?;
    s.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .context("handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn one_request(send: &mut Sender, path: &str, want: u64) -> Result<()> {
    send.ready().await.context("connection not ready")?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "198.18.0.2")
        .body(Empty::<Bytes>::new())?;
    let resp = send.send_request(req).await.context("send")?;
    anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
    let body = resp.into_body().collect().await.context("body")?.to_bytes();
    anyhow::ensure!(body.len() as u64 == want, "body of {} bytes", body.len());
    Ok(())
}

/// One connection's closed loop.
async fn conn_loop(
    path: Arc<str>,
    want: u64,
    start: Instant,
    end: Instant,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Histogram<u64>) {
    let addr = SocketAddrV4::new(STACK_IP, PORT);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut send = None;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let s = match send.as_mut() {
            Some(s) => s,
            None => match connect(addr).await {
                Ok(s) => send.insert(s),
                Err(_) => {
                    errors += 1;
                    if errors > 100 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let t0 = Instant::now();
        match one_request(s, &path, want).await {
            Ok(()) => {
                let t1 = Instant::now();
                if t0 >= start && t1 <= end {
                    ok += 1;
                    let _ = hist.record((t1 - t0).as_nanos().max(1) as u64);
                }
            }
            Err(_) => {
                errors += 1;
                send = None;
                if errors > 100 {
                    break;
                }
            }
        }
    }
    (ok, errors, hist)
}

fn client(o: &Options, stop: &Arc<AtomicBool>) -> Result<ClientResult> {
    let tokio = if o.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(o.client_threads)
            .enable_all()
            .build()?
    };
    let path: Arc<str> = format!("/bytes/{}", o.bytes).into();
    let start = Instant::now() + Duration::from_secs_f64(o.warmup);
    let end = start + Duration::from_secs_f64(o.secs);
    tokio.block_on(async {
        let tasks: Vec<_> = (0..o.conns)
            .map(|_| tokio::spawn(conn_loop(path.clone(), o.bytes, start, end, stop.clone())))
            .collect();
        let mut r = ClientResult {
            requests: 0,
            errors: 0,
            secs: o.secs,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        };
        for t in tasks {
            let (ok, errors, h) = t.await?;
            r.requests += ok;
            r.errors += errors;
            r.hist.add(h)?;
        }
        if stop.load(Ordering::Relaxed) {
            let now = Instant::now().min(end);
            r.secs = now.saturating_duration_since(start).as_secs_f64();
        }
        Ok(r)
    })
}

// ---------------------------------------------------------------------------------------------
// Driver

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[derive(Debug, Clone, Copy)]
struct RunResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn one_run(
    lab: &Lab,
    v: Variant,
    run: usize,
    o: &Options,
    stop: &Arc<AtomicBool>,
) -> Result<RunResult> {
    let server = Server::start(lab, v, o)?;
    let path = cnet_netlink::netns_path(&lab.kernel_ns);
    let r =
        cnet_netlink::run_in_netns(&path, || client(o, stop)).context("enter the kernel namespace");
    let summary = server.stop(lab)?;
    let r = r??;
    anyhow::ensure!(
        r.requests > 0,
        "{}: no request completed ({} errors)",
        v.name(),
        r.errors
    );
    let us = |q: f64| r.hist.value_at_quantile(q) as f64 / 1e3;
    let res = RunResult {
        rps: r.requests as f64 / r.secs,
        p50_us: us(0.5),
        p99_us: us(0.99),
    };
    println!(
        "run variant={} run={run} load={} conns={} requests={} errors={} secs={:.2} rps={:.0} \
         p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} server: {summary}",
        v.name(),
        loadavg(),
        o.conns,
        r.requests,
        r.errors,
        r.secs,
        res.rps,
        res.p50_us,
        us(0.9),
        res.p99_us,
        us(0.999),
        r.hist.max() as f64 / 1e3,
    );
    Ok(res)
}

fn main() -> Result<()> {
    let o = parse()?;
    if let Some(why) = lab::missing_requirements() {
        println!("SKIP http_veth: {why}");
        return Ok(());
    }
    let stop = cnet_apps::service::stop_on_signals()?;
    println!(
        "# http_veth conns={} secs={} warmup={} runs={} bytes={} server_threads={} \
         client_threads={} cpus={} load={} build={}",
        o.conns,
        o.secs,
        o.warmup,
        o.runs,
        o.bytes,
        o.server_threads,
        o.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    // Dropped on every way out of main (return, `?`), which removes the namespaces.
    let lab = Lab::new("htv", 1)?;
    let mut results: Vec<(Variant, Vec<RunResult>)> =
        vec![(Variant::Cnet, Vec::new()), (Variant::Kernel, Vec::new())];
    'runs: for run in 1..=o.runs {
        // Alternate the order, so that neither server always runs on a warmer machine.
        let order: [usize; 2] = if run % 2 == 1 { [0, 1] } else { [1, 0] };
        for i in order {
            if stop.load(Ordering::Relaxed) {
                println!("# interrupted");
                break 'runs;
            }
            let v = results[i].0;
            let r = one_run(&lab, v, run, &o, &stop)?;
            results[i].1.push(r);
        }
    }
    let mut med = Vec::new();
    for (v, rs) in &results {
        let m = RunResult {
            rps: median(rs.iter().map(|r| r.rps).collect()),
            p50_us: median(rs.iter().map(|r| r.p50_us).collect()),
            p99_us: median(rs.iter().map(|r| r.p99_us).collect()),
        };
        println!(
            "result variant={} runs={} median_rps={:.0} median_p50_us={:.1} median_p99_us={:.1}",
            v.name(),
            rs.len(),
            m.rps,
            m.p50_us,
            m.p99_us
        );
        med.push(m);
    }
    let (c, k) = (med[0], med[1]);
    let (rps, p99) = (c.rps / k.rps, c.p99_us / k.p99_us);
    println!(
        "ratio rps_cnet_over_kernel={rps:.2} p99_cnet_over_kernel={p99:.2} \
         p50_cnet_over_kernel={:.2} goal=rps>=1.5,p99<=0.7 goal_met={}",
        c.p50_us / k.p50_us,
        if rps >= 1.5 && p99 <= 0.7 {
            "yes"
        } else {
            "no"
        }
    );
    drop(lab);
    Ok(())
}
