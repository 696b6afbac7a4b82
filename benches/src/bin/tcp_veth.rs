//! TCP over veth: a kernel client against cnet (AF_XDP) and against the Linux kernel's own TCP,
//! on the same veth pair, in the same run (issue #6, benchmarks 2 and 3). Root only.
//!
//! ```text
//! tcp_veth [--bytes 1073741824] [--bulk-secs 5] [--cps-secs 3] [--cps-threads 2] [--runs 3]
//!          [--rcv-buf 1048576] [--only bulk,cps] [--quick]
//! ```
//!
//! One [`Lab`] (two namespaces joined by veth, removed on exit). Servers run on a thread in the
//! stack namespace on 198.18.0.2; clients on threads in the kernel namespace (198.18.0.1).
//!
//! - **bulk** (kernel → server): one connection; the client writes 256 KiB `write_all`s until
//!   `--bytes` are written or `--bulk-secs` pass, shuts down its sending side and waits for the
//!   server's FIN; throughput = bytes written / time from connect to that EOF. Sinks:
//!   `cnet-sink`, cnet's `Service::run` on `cnet0` with an app that accepts, takes every received
//!   frame with `tcp_recv` and frees it, and closes on end of stream (receive buffer `--rcv-buf`);
//!   `kernel-sink`, cnet stopped, a std `TcpListener` reading into a 256 KiB buffer until EOF.
//! - **cps** (connections per second): `--cps-threads` client threads, each looping connect /
//!   write 8 bytes / read the 8 bytes back / close for `--cps-secs`. Servers: `cnet-echo`
//!   (`cnet_apps::service::TcpEcho` in `Service::run`) and `kernel-echo` (std `TcpListener`,
//!   `--cps-threads` worker threads each accepting and serving one connection at a time: read 8,
//!   write 8, read to EOF, close). The kernel namespace gets `ip_local_port_range = 1024 65535`
//!   and `tcp_tw_reuse = 1` so the client's TIME-WAIT sockets do not run it out of ports.
//!
//! Runs interleave cnet and kernel variants. Output, one record per line:
//!
//! ```text
//! run test=bulk variant=cnet-sink run=1 bytes=.. secs=.. gbps=.. ...
//! result test=bulk variant=cnet-sink runs=3 median=..
//! ratio test=bulk cnet_over_kernel=.. goal=1.0 goal_met=yes|no
//! ratio test=cps cnet_over_kernel=..
//! ```

use anyhow::{bail, Context as _, Result};
use cnet_apps::lab::{self, Lab, STACK_DEV, STACK_IP};
use cnet_apps::service::{Service, ServiceConfig, TcpEcho};
use cnet_drivers::xdp::XdpConfig;
use cnet_stack::tcp::{TcpHandle, TcpOpts, TcpState};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SINK_PORT: u16 = 5001;
const ECHO_PORT: u16 = 7;
const WRITE_BUF: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    CnetSink,
    KernelSink,
    CnetEcho,
    KernelEcho,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::CnetSink => "cnet-sink",
            Variant::KernelSink => "kernel-sink",
            Variant::CnetEcho => "cnet-echo",
            Variant::KernelEcho => "kernel-echo",
        }
    }
    fn is_cnet(self) -> bool {
        matches!(self, Variant::CnetSink | Variant::CnetEcho)
    }
}

/// A phase of the benchmark (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Bulk transfer into a sink and through an echo.
    Bulk,
    /// Connections per second.
    Cps,
}

/// Command-line options (`tcp_veth --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tcp_veth",
    about = "TCP over veth: cnet on AF_XDP against the kernel's stack"
)]
struct Options {
    /// Bytes per bulk transfer.
    #[arg(long, default_value_t = 1 << 30, value_parser = cnet_benches::cli::count::<u64>)]
    bytes: u64,
    /// Upper bound in seconds of one bulk transfer.
    #[arg(long, default_value_t = 5.0)]
    bulk_secs: f64,
    /// Seconds of the connections-per-second phase.
    #[arg(long, default_value_t = 3.0)]
    cps_secs: f64,
    /// Client threads in the connections-per-second phase.
    #[arg(long, default_value_t = 2, value_parser = cnet_benches::cli::count::<usize>)]
    cps_threads: usize,
    /// Runs per variant (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = cnet_benches::cli::count::<usize>)]
    runs: usize,
    /// Receive buffer of the sinks, bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = cnet_benches::cli::count::<u32>)]
    rcv_buf: u32,
    /// Phases to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Phase::Bulk, Phase::Cps])]
    only: Vec<Phase>,
    /// A short run: 256 MiB, 1 s phases, one run.
    #[arg(long)]
    quick: bool,
}

fn parse() -> Result<Options> {
    let mut o = <Options as clap::Parser>::parse();
    if o.quick {
        o.bytes = 256 << 20;
        o.bulk_secs = 1.0;
        o.cps_secs = 1.0;
        o.runs = 1;
    }
    anyhow::ensure!(
        o.bulk_secs > 0.0 && o.bulk_secs <= 60.0 && o.cps_secs > 0.0 && o.cps_secs <= 60.0,
        "durations in (0, 60] s"
    );
    anyhow::ensure!((1..=16).contains(&o.cps_threads), "--cps-threads 1..=16");
    anyhow::ensure!((1..=20).contains(&o.runs), "--runs 1..=20");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Servers

struct Server {
    variant: Variant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<String>>>,
}

impl Server {
    fn start(lab: &Lab, variant: Variant, o: &Options) -> Result<Server> {
        let ns = lab.stack_ns_path();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let st = stop.clone();
        let (rcv_buf, threads) = (o.rcv_buf, o.cps_threads);
        let thread = std::thread::Builder::new()
            .name(format!("server-{}", variant.name()))
            .spawn(move || -> Result<String> {
                let ready = move |r: Result<(), String>| {
                    let _ = ready_tx.send(r);
                };
                cnet_netlink::enter_netns(&ns).context("enter the stack namespace")?;
                match variant {
                    Variant::CnetSink | Variant::CnetEcho => {
                        cnet_server(variant, rcv_buf, &st, ready)
                    }
                    Variant::KernelSink => kernel_sink(&st, ready),
                    Variant::KernelEcho => kernel_echo(threads, &st, ready),
                }
            })
            .context("spawn server thread")?;
        let mut server = Server {
            variant,
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => Ok(server),
            Ok(Err(e)) => {
                let _ = server.stop();
                bail!("{} server did not start: {e}", variant.name())
            }
            Err(_) => {
                let r = server.stop();
                bail!("{} server did not start in 20 s ({r:?})", variant.name())
            }
        }
    }

    fn stop(&mut self) -> Result<String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r.with_context(|| format!("{} server", self.variant.name())),
                Err(_) => bail!("{} server thread panicked", self.variant.name()),
            },
            None => Ok(String::new()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A sink application: accepts, drops every received frame, closes at end of stream.
struct Sink {
    listener: cnet_stack::tcp::TcpListener,
    conns: Vec<TcpHandle>,
    bytes: u64,
}

impl Sink {
    fn poll(&mut self, s: &mut cnet_stack::Stack, now: cnet_stack::Instant) {
        while let Some(h) = s.tcp_accept(self.listener) {
            self.conns.push(h);
        }
        let mut i = 0;
        while i < self.conns.len() {
            let h = self.conns[i];
            while let Some(f) = s.tcp_recv(h) {
                self.bytes += s.pool().chain_len(&f) as u64;
                s.pool_mut().free(f);
            }
            let gone = match s.tcp_state(h) {
                None => true,
                Some(TcpState::Closed) => {
                    s.tcp_close(h, now);
                    true
                }
                _ if s.tcp_recv_finished(h) => {
                    s.tcp_close(h, now);
                    true
                }
                _ => false,
            };
            if gone {
                self.conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

fn cnet_server(
    variant: Variant,
    rcv_buf: u32,
    stop: &AtomicBool,
    ready: impl FnOnce(Result<(), String>),
) -> Result<String> {
    let mut svc = match Service::open(ServiceConfig {
        xdp: XdpConfig::new(STACK_DEV),
        queue: 0,
        extra_addrs: Vec::new(),
        netlink: true,
        seed: 6,
    }) {
        Ok(s) => s,
        Err(e) => {
            ready(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    let summary = if variant == Variant::CnetSink {
        let listener = svc
            .host
            .stack
            .tcp_listen(
                SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, SINK_PORT),
                64,
                TcpOpts {
                    rcv_buf,
                    ..TcpOpts::default()
                },
            )
            .context("listen")?;
        let mut sink = Sink {
            listener,
            conns: Vec::new(),
            bytes: 0,
        };
        ready(Ok(()));
        svc.run(stop, |s, now| sink.poll(s, now))?;
        for h in sink.conns.drain(..) {
            svc.host.stack.tcp_abort(h, svc.clock.now());
        }
        format!("sunk={}", sink.bytes)
    } else {
        let mut echo = TcpEcho::listen(&mut svc.host.stack, ECHO_PORT, 1024)?;
        ready(Ok(()));
        svc.run(stop, |s, now| echo.poll(s, now))?;
        echo.release(&mut svc.host.stack);
        format!("accepted={} echoed_bytes={}", echo.accepted, echo.bytes)
    };
    let c = svc.host.port.counters();
    let out = format!(
        "{summary} rx_frames={} tx_frames={} rx_wakeups={} tx_kicks={} tcp_conns_left={}",
        c.rx_frames,
        c.tx_frames,
        c.rx_wakeups,
        c.tx_kicks,
        svc.host.stack.tcp_connections()
    );
    drop(svc.shutdown());
    Ok(out)
}

/// Waits up to `ms` for `fd` to become readable (a connection to accept).
fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn kernel_listener(port: u16) -> Result<TcpListener> {
    let l = TcpListener::bind(SocketAddrV4::new(STACK_IP, port))
        .with_context(|| format!("bind the kernel listener on port {port}"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn kernel_sink(stop: &AtomicBool, ready: impl FnOnce(Result<(), String>)) -> Result<String> {
    let l = match kernel_listener(SINK_PORT) {
        Ok(l) => l,
        Err(e) => {
            ready(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    ready(Ok(()));
    let mut buf = vec![0u8; WRITE_BUF];
    let mut total = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if !wait_readable(l.as_raw_fd(), 10) {
            continue;
        }
        let Ok((mut s, _)) = l.accept() else { continue };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => total += k as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    Ok(format!("sunk={total}"))
}

fn kernel_echo(
    threads: usize,
    stop: &AtomicBool,
    ready: impl FnOnce(Result<(), String>),
) -> Result<String> {
    let l = match kernel_listener(ECHO_PORT) {
        Ok(l) => l,
        Err(e) => {
            ready(Err(format!("{e:#}")));
            return Err(e);
        }
    };
    ready(Ok(()));
    let served = AtomicU64::new(0);
    std::thread::scope(|sc| {
        for _ in 0..threads {
            sc.spawn(|| {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if !wait_readable(l.as_raw_fd(), 10) {
                        continue;
                    }
                    let Ok((mut s, _)) = l.accept() else { continue };
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut msg = [0u8; 8];
                    if s.read_exact(&mut msg).is_err() || s.write_all(&msg).is_err() {
                        continue;
                    }
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(format!("served={}", served.load(Ordering::Relaxed)))
}

/// Starts a server, retrying a cnet one for up to 5 s while the previous AF_XDP socket on the
/// queue is still being torn down (EBUSY).
fn start_server(lab: &Lab, v: Variant, o: &Options) -> Result<Server> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Server::start(lab, v, o) {
            Ok(s) => return Ok(s),
            Err(e)
                if v.is_cnet()
                    && Instant::now() < deadline
                    && format!("{e:#}").contains("os error 16") =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients (kernel namespace)

fn in_kernel_ns<T: Send>(lab: &Lab, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = cnet_netlink::netns_path(&lab.kernel_ns);
    cnet_netlink::run_in_netns(&path, f).context("enter the kernel namespace")?
}

struct BulkResult {
    bytes: u64,
    secs: f64,
}

fn bulk_client(o: &Options) -> Result<BulkResult> {
    let t = Instant::now();
    let addr = SocketAddrV4::new(STACK_IP, SINK_PORT).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).context("connect")?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let buf: Vec<u8> = (0..WRITE_BUF).map(|i| (i * 31) as u8).collect();
    let limit = Duration::from_secs_f64(o.bulk_secs);
    let mut sent = 0u64;
    while sent < o.bytes && t.elapsed() < limit {
        let k = ((o.bytes - sent) as usize).min(WRITE_BUF);
        s.write_all(&buf[..k]).context("write")?;
        sent += k as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(_) => bail!("the sink sent data"),
        Err(e) => return Err(e).context("waiting for the sink's FIN"),
    }
    Ok(BulkResult {
        bytes: sent,
        secs: t.elapsed().as_secs_f64(),
    })
}

struct CpsResult {
    ok: u64,
    errors: u64,
    secs: f64,
}

fn cps_client(o: &Options) -> Result<CpsResult> {
    let (ok, errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let t = Instant::now();
    let end = t + Duration::from_secs_f64(o.cps_secs);
    let addr = SocketAddrV4::new(STACK_IP, ECHO_PORT).into();
    std::thread::scope(|sc| {
        for _ in 0..o.cps_threads {
            sc.spawn(|| {
                let mut consecutive = 0;
                while Instant::now() < end && consecutive < 100 {
                    let one = || -> std::io::Result<()> {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(Duration::from_secs(1)))?;
                        s.write_all(b"cnet-cps")?;
                        let mut r = [0u8; 8];
                        s.read_exact(&mut r)?;
                        if &r != b"cnet-cps" {
                            return Err(std::io::Error::other("bad echo"));
                        }
                        Ok(())
                    };
                    match one() {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            consecutive = 0;
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            consecutive += 1;
                        }
                    }
                }
            });
        }
    });
    Ok(CpsResult {
        ok: ok.into_inner(),
        errors: errors.into_inner(),
        secs: t.elapsed().as_secs_f64(),
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

fn check_detached(lab: &Lab) -> Result<()> {
    let out = lab.ip_stack(&["-d", "link", "show", "dev", STACK_DEV])?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        !text.contains("prog/xdp"),
        "an XDP program is still attached to {STACK_DEV} after cnet stopped:\n{text}"
    );
    Ok(())
}

fn one_run(lab: &Lab, v: Variant, run: usize, o: &Options) -> Result<f64> {
    let mut server = start_server(lab, v, o)?;
    let (test, value, line) = match v {
        Variant::CnetSink | Variant::KernelSink => {
            let r = in_kernel_ns(lab, || bulk_client(o));
            let summary = server.stop()?;
            let r = r?;
            let gbps = r.bytes as f64 * 8.0 / r.secs / 1e9;
            (
                "bulk",
                gbps,
                format!(
                    "bytes={} secs={:.3} gbps={gbps:.3} server: {summary}",
                    r.bytes, r.secs
                ),
            )
        }
        Variant::CnetEcho | Variant::KernelEcho => {
            let r = in_kernel_ns(lab, || cps_client(o));
            let summary = server.stop()?;
            let r = r?;
            let cps = r.ok as f64 / r.secs;
            (
                "cps",
                cps,
                format!(
                    "threads={} ok={} errors={} secs={:.3} cps={cps:.0} server: {summary}",
                    o.cps_threads, r.ok, r.errors, r.secs
                ),
            )
        }
    };
    if v.is_cnet() {
        check_detached(lab)?;
    }
    println!(
        "run test={test} variant={} run={run} load={} {line}",
        v.name(),
        loadavg()
    );
    Ok(value)
}

fn main() -> Result<()> {
    let o = parse()?;
    if let Some(why) = lab::missing_requirements() {
        println!("SKIP tcp_veth: {why}");
        return Ok(());
    }
    let stop = cnet_apps::service::stop_on_signals()?;
    println!(
        "# tcp_veth bytes={} bulk_secs={} cps_secs={} cps_threads={} runs={} rcv_buf={} load={} build={}",
        o.bytes,
        o.bulk_secs,
        o.cps_secs,
        o.cps_threads,
        o.runs,
        o.rcv_buf,
        loadavg(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let lab = Lab::new("tcv", 1)?;
    lab.kernel(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"])?;
    lab.kernel(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    let mut variants = Vec::new();
    if o.only.contains(&Phase::Bulk) {
        variants.extend([Variant::CnetSink, Variant::KernelSink]);
    }
    if o.only.contains(&Phase::Cps) {
        variants.extend([Variant::CnetEcho, Variant::KernelEcho]);
    }
    let mut results: Vec<(Variant, Vec<f64>)> = variants.iter().map(|&v| (v, vec![])).collect();
    'runs: for run in 1..=o.runs {
        for (v, rs) in results.iter_mut() {
            if stop.load(Ordering::Relaxed) {
                println!("# interrupted");
                break 'runs;
            }
            rs.push(one_run(&lab, *v, run, &o)?);
        }
    }
    let med: Vec<(Variant, f64)> = results
        .iter()
        .map(|(v, rs)| (*v, median(rs.clone())))
        .collect();
    for ((v, rs), (_, m)) in results.iter().zip(&med) {
        let test = if matches!(v, Variant::CnetSink | Variant::KernelSink) {
            "bulk gbps"
        } else {
            "cps cps"
        };
        let (t, unit) = test.split_once(' ').unwrap_or((test, ""));
        println!(
            "result test={t} variant={} runs={} median_{unit}={m:.3}",
            v.name(),
            rs.len()
        );
    }
    let get = |v: Variant| med.iter().find(|(x, _)| *x == v).map(|(_, m)| *m);
    if let (Some(c), Some(k)) = (get(Variant::CnetSink), get(Variant::KernelSink)) {
        let r = c / k;
        println!(
            "ratio test=bulk cnet_over_kernel={r:.2} cnet_gbps={c:.3} kernel_gbps={k:.3} goal=1.0 goal_met={}",
            if r >= 1.0 { "yes" } else { "no" }
        );
    }
    if let (Some(c), Some(k)) = (get(Variant::CnetEcho), get(Variant::KernelEcho)) {
        println!(
            "ratio test=cps cnet_over_kernel={:.2} cnet_cps={c:.0} kernel_cps={k:.0} threads={}",
            c / k,
            o.cps_threads
        );
    }
    drop(lab);
    Ok(())
}
