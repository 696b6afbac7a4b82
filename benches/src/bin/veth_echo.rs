//! UDP echo over veth: a kernel client against cnet (AF_XDP) and against the Linux kernel's own
//! UDP stack, on the same veth pair, in the same run (issue #8). Root only.
//!
//! ```text
//! veth_echo [--payload 64] [--rtt-count 20000] [--warmup 2000] [--secs 3] [--window 64]
//!           [--flows 8] [--runs 3] [--max-requests 20000000] [--rtt-spin] [--tput-spin]
//!           [--only cnet-poll,cnet-busy,kernel,kernel-spin] [--quick]
//! ```
//!
//! One [`Lab`] (two namespaces joined by veth; removed on exit, also on Ctrl-C). Servers, each on
//! its own thread in the stack namespace, listening on 198.18.0.2:7:
//!
//! - `cnet-poll`: cnet's `Service::run` with `UdpEcho` on `cnet0` (AF_XDP, the service's default
//!   idle strategy: sleep in `poll(2)` on the AF_XDP socket when a loop step moved nothing);
//! - `cnet-busy`: the same service and echo, driven by a loop that never sleeps (busy polling of
//!   the rings: `apply_events`, `Host::poll`, echo, `Host::flush`);
//! - `kernel`: cnet stopped (XDP program detached), a kernel UDP socket on 198.18.0.2:7 served by
//!   `recvmmsg` (blocking, `MSG_WAITFORONE`, up to 64 datagrams) + `sendmmsg` of the same buffers
//!   back to their senders;
//! - `kernel-spin`: the same kernel server, non-blocking, spinning on `recvmmsg(MSG_DONTWAIT)`.
//!
//! The client is one thread in the kernel namespace (kernel sockets on `kern0`, 198.18.0.1):
//!
//! 1. closed-loop RTT: one request outstanding, `--rtt-count` timed echoes after `--warmup`
//!    untimed ones; each request carries a sequence number and waits at most 100 ms for its reply
//!    (blocking `recv` with `SO_RCVTIMEO`, or spinning on `MSG_DONTWAIT` with `--rtt-spin`);
//!    p50/p90/p99/p99.9 from the recorded round trips;
//! 2. throughput: `--window` requests outstanding, spread over `--flows` connected sockets
//!    (distinct source ports), each refilled as replies come back (`recvmmsg`/`sendmmsg`,
//!    non-blocking; when a pass over the sockets finds no reply twice in a row the client sleeps
//!    in `poll(2)` until one arrives, or spins with `--tput-spin`); replies counted over `--secs`
//!    after 0.5 s of warm-up;
//!    requests unanswered for 20 ms are written off so the window never drains. Stops early after
//!    `--max-requests`.
//!
//! Runs are interleaved (cnet-poll, cnet-busy, kernel, kernel-spin, cnet-poll, ...), so drift in a
//! noisy machine hurts all variants alike. Output, one record per line (`key=value`):
//!
//! ```text
//! run variant=cnet-busy run=1 rtt_n=20000 lost=0 p50_us=.. p90_us=.. p99_us=.. p999_us=.. rps=.. ...
//! result variant=cnet-busy runs=3 p50_us=.. p99_us=.. rps=..          (medians over runs)
//! ratio cnet=cnet-busy kernel=kernel rps_ratio=.. p99_ratio=.. p50_ratio=.. goal_rps=.. goal_p99=..
//! ```
//!
//! Goal (issue #8): `rps_ratio` >= 1.5 and `p99_ratio` <= 0.7.

use anyhow::{bail, Context as _, Result};
use cnet_apps::lab::{self, Lab, STACK_DEV, STACK_IP};
use cnet_apps::service::{Service, ServiceConfig, UdpEcho};
use cnet_drivers::xdp::XdpConfig;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// UDP echo port (RFC 862).
const ECHO_PORT: u16 = 7;
/// Datagrams per `recvmmsg`/`sendmmsg` call.
const BATCH: usize = 64;
/// Receive buffer per datagram (larger than any payload accepted).
const BUF: usize = 2048;
/// A closed-loop request not answered within this is counted lost.
const RTT_TIMEOUT: Duration = Duration::from_millis(100);
/// The closed-loop phase ends after this long whatever `--rtt-count` says.
const RTT_PHASE_LIMIT: Duration = Duration::from_secs(30);
/// Throughput requests unanswered for this long are written off.
const WRITE_OFF: Duration = Duration::from_millis(20);
/// Untimed throughput warm-up.
const TPUT_WARMUP: Duration = Duration::from_millis(500);

/// A server variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Variant {
    /// cnet on AF_XDP, sleeping in poll when idle.
    CnetPoll,
    /// cnet on AF_XDP, busy polling.
    CnetBusy,
    /// The kernel's UDP socket, blocking.
    Kernel,
    /// The kernel's UDP socket, spinning.
    KernelSpin,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::CnetPoll,
        Variant::CnetBusy,
        Variant::Kernel,
        Variant::KernelSpin,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::CnetPoll => "cnet-poll",
            Variant::CnetBusy => "cnet-busy",
            Variant::Kernel => "kernel",
            Variant::KernelSpin => "kernel-spin",
        }
    }

    fn is_cnet(self) -> bool {
        matches!(self, Variant::CnetPoll | Variant::CnetBusy)
    }
}

/// Command-line options (`veth_echo --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "veth_echo",
    about = "UDP echo over veth: cnet on AF_XDP against the kernel's server"
)]
struct Options {
    /// UDP payload bytes (8..=1472; a sequence number rides in the first 8).
    #[arg(long, default_value_t = 64, value_parser = cnet_benches::cli::count::<usize>)]
    payload: usize,
    /// Closed-loop round trips measured per variant.
    #[arg(long, default_value_t = 20_000, value_parser = cnet_benches::cli::count::<usize>)]
    rtt_count: usize,
    /// Untimed closed-loop round trips first.
    #[arg(long, default_value_t = 2_000, value_parser = cnet_benches::cli::count::<usize>)]
    warmup: usize,
    /// Seconds of the open-loop throughput phase.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Requests in flight in the throughput phase.
    #[arg(long, default_value_t = 64, value_parser = cnet_benches::cli::count::<usize>)]
    window: usize,
    /// Client flows (source ports) in the throughput phase.
    #[arg(long, default_value_t = 8, value_parser = cnet_benches::cli::count::<usize>)]
    flows: usize,
    /// Runs per variant (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = cnet_benches::cli::count::<usize>)]
    runs: usize,
    /// Upper bound on throughput requests per run.
    #[arg(long, default_value_t = 20_000_000, value_parser = cnet_benches::cli::count::<u64>)]
    max_requests: u64,
    /// The closed-loop client spins instead of blocking.
    #[arg(long)]
    rtt_spin: bool,
    /// The throughput client spins instead of blocking.
    #[arg(long)]
    tput_spin: bool,
    /// Variants to run, comma-separated.
    #[arg(long = "only", value_enum, value_delimiter = ',', default_values_t = Variant::ALL)]
    variants: Vec<Variant>,
    /// A short run: 2000 round trips, 200 warm-up, 1 s, one run.
    #[arg(long)]
    quick: bool,
}

fn parse_args() -> Result<Options> {
    let mut o = <Options as clap::Parser>::parse();
    if o.quick {
        o.rtt_count = 2_000;
        o.warmup = 200;
        o.secs = 1.0;
        o.runs = 1;
    }
    anyhow::ensure!(
        (8..=1472).contains(&o.payload),
        "--payload must be 8..=1472 (a sequence number is carried in the first 8 bytes)"
    );
    anyhow::ensure!(
        (1..=100_000).contains(&o.rtt_count),
        "--rtt-count 1..=100000"
    );
    anyhow::ensure!(o.warmup <= 100_000, "--warmup at most 100000");
    anyhow::ensure!(o.secs > 0.0 && o.secs <= 60.0, "--secs in (0, 60]");
    anyhow::ensure!((1..=64).contains(&o.flows), "--flows 1..=64");
    anyhow::ensure!(
        (o.flows..=1024).contains(&o.window),
        "--window must be --flows..=1024"
    );
    anyhow::ensure!((1..=20).contains(&o.runs), "--runs 1..=20");
    anyhow::ensure!(!o.variants.is_empty(), "--only: no variant");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Servers

/// A running echo server on its own thread in the stack namespace.
struct Server {
    variant: Variant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<String>>>,
}

impl Server {
    fn start(lab: &Lab, variant: Variant) -> Result<Server> {
        let ns = lab.stack_ns_path();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("server-{}", variant.name()))
            .spawn(move || -> Result<String> {
                let ready = move |r: &Result<()>| {
                    let _ = ready_tx.send(r.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
                };
                match variant {
                    Variant::CnetPoll | Variant::CnetBusy => cnet_server(&ns, variant, &st, ready),
                    Variant::Kernel | Variant::KernelSpin => {
                        kernel_server(&ns, variant == Variant::KernelSpin, &st, ready)
                    }
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
                bail!(
                    "{} server did not start within 20 s ({r:?})",
                    variant.name()
                )
            }
        }
    }

    /// Stops the server; returns its summary.
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

/// cnet's service with `UdpEcho` on the lab's stack side, queue 0, address from netlink.
fn cnet_server(
    ns: &std::path::Path,
    variant: Variant,
    stop: &AtomicBool,
    ready: impl FnOnce(&Result<()>),
) -> Result<String> {
    let setup = || -> Result<(Service, UdpEcho)> {
        cnet_netlink::enter_netns(ns).context("enter the stack namespace")?;
        let mut svc = Service::open(ServiceConfig {
            xdp: XdpConfig::new(STACK_DEV),
            queue: 0,
            extra_addrs: Vec::new(),
            netlink: true,
            seed: 8,
        })?;
        let echo = UdpEcho::bind(&mut svc.host.stack, ECHO_PORT)?;
        Ok((svc, echo))
    };
    let r = setup();
    ready(&r.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e:#}")));
    let (mut svc, mut echo) = r?;
    let loops = match variant {
        Variant::CnetPoll => {
            svc.run(stop, |stack, now| echo.poll(stack, now))?;
            None
        }
        _ => {
            // Busy polling: the service's loop step without the sleep.
            let mut loops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = svc.clock.now();
                svc.apply_events(now);
                svc.host.poll(now)?;
                echo.poll(&mut svc.host.stack, now);
                svc.host.flush(now)?;
                loops += 1;
            }
            Some(loops)
        }
    };
    let c = svc.host.port.counters();
    let summary = format!(
        "echoed={} rx_frames={} tx_frames={} rx_wakeups={} tx_kicks={} loops={}",
        echo.echoed,
        c.rx_frames,
        c.tx_frames,
        c.rx_wakeups,
        c.tx_kicks,
        loops.map_or("-".into(), |l| l.to_string())
    );
    drop(svc.shutdown()); // closes the AF_XDP socket: libxdp detaches the program
    Ok(summary)
}

/// Buffers and headers for `recvmmsg`/`sendmmsg` of up to [`BATCH`] datagrams.
struct MmsgBufs {
    bufs: Vec<[u8; BUF]>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    hdrs: Vec<libc::mmsghdr>,
}

impl MmsgBufs {
    fn new() -> Box<MmsgBufs> {
        let mut m = Box::new(MmsgBufs {
            bufs: vec![[0u8; BUF]; BATCH],
            iov: Vec::with_capacity(BATCH),
            // SAFETY: sockaddr_in and mmsghdr are plain C structs; all-zero is a valid value.
            names: vec![unsafe { std::mem::zeroed() }; BATCH],
            hdrs: Vec::with_capacity(BATCH),
        });
        for i in 0..BATCH {
            let base = m.bufs[i].as_mut_ptr();
            m.iov.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: BUF,
            });
        }
        for i in 0..BATCH {
            // SAFETY: as above.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut m.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = (&mut m.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.hdrs.push(h);
        }
        m
    }

    /// Makes every header ready to receive again (full buffer, full name).
    fn reset(&mut self, n: usize) {
        for i in 0..n {
            self.iov[i].iov_len = BUF;
            self.hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
    }

    /// Receives up to [`BATCH`] datagrams; `Ok(0)` when none is waiting (non-blocking) or the
    /// timeout passed (blocking).
    fn recv(&mut self, fd: i32, flags: i32) -> Result<usize> {
        // SAFETY: `hdrs` holds BATCH headers pointing at live `iov`, `bufs` and `names` owned by
        // `self` (boxed, so they do not move).
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as u32,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e).context("recvmmsg"),
            };
        }
        Ok(n as usize)
    }
}

/// The kernel echo server: `recvmmsg` up to 64 datagrams, `sendmmsg` them back from the same
/// buffers to the addresses they came from.
fn kernel_server(
    ns: &std::path::Path,
    spin: bool,
    stop: &AtomicBool,
    ready: impl FnOnce(&Result<()>),
) -> Result<String> {
    let setup = || -> Result<UdpSocket> {
        cnet_netlink::enter_netns(ns).context("enter the stack namespace")?;
        let s = UdpSocket::bind(SocketAddrV4::new(STACK_IP, ECHO_PORT))
            .context("bind the kernel echo socket")?;
        if spin {
            s.set_nonblocking(true)?;
        } else {
            s.set_read_timeout(Some(Duration::from_millis(10)))?;
        }
        Ok(s)
    };
    let r = setup();
    ready(&r.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e:#}")));
    let sock = r?;
    let fd = sock.as_raw_fd();
    let flags = if spin {
        libc::MSG_DONTWAIT
    } else {
        libc::MSG_WAITFORONE
    };
    let mut m = MmsgBufs::new();
    let (mut echoed, mut calls, mut send_errors) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let n = m.recv(fd, flags)?;
        if n == 0 {
            continue;
        }
        calls += 1;
        for i in 0..n {
            m.iov[i].iov_len = m.hdrs[i].msg_len as usize;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: headers `done..n` are valid (see `MmsgBufs::recv`); names hold the senders.
            let k =
                unsafe { libc::sendmmsg(fd, m.hdrs.as_mut_ptr().add(done), (n - done) as u32, 0) };
            if k <= 0 {
                send_errors += 1;
                break;
            }
            done += k as usize;
        }
        echoed += done as u64;
        m.reset(n);
    }
    Ok(format!(
        "echoed={echoed} recvmmsg_calls={calls} avg_batch={:.1} send_errors={send_errors}",
        echoed as f64 / calls.max(1) as f64
    ))
}

// ---------------------------------------------------------------------------------------------
// Client

/// Runs `f` on a fresh thread in the lab's kernel namespace.
fn in_kernel_ns<T: Send>(lab: &Lab, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = cnet_netlink::netns_path(&lab.kernel_ns);
    cnet_netlink::run_in_netns(&path, f).context("enter the kernel namespace")?
}

fn client_socket() -> Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddrV4::new(lab::KERNEL_IP, 0)).context("client bind")?;
    s.connect(SocketAddrV4::new(STACK_IP, ECHO_PORT))
        .context("client connect")?;
    Ok(s)
}

#[derive(Debug, Default, Clone)]
struct RttResult {
    /// Round trips in nanoseconds, sorted.
    samples: Vec<u64>,
    lost: u64,
    stale: u64,
}

impl RttResult {
    fn pct_us(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let i = ((self.samples.len() as f64 * p).ceil() as usize).clamp(1, self.samples.len()) - 1;
        self.samples[i] as f64 / 1000.0
    }
}

/// Closed loop: one request at a time.
fn rtt_phase(o: &Options, stop: &AtomicBool) -> Result<RttResult> {
    let s = client_socket()?;
    if o.rtt_spin {
        s.set_nonblocking(true)?;
    } else {
        s.set_read_timeout(Some(RTT_TIMEOUT))?;
    }
    let mut req = vec![0x5au8; o.payload];
    let mut rep = vec![0u8; BUF];
    let mut r = RttResult {
        samples: Vec::with_capacity(o.rtt_count),
        ..Default::default()
    };
    let phase_end = Instant::now() + RTT_PHASE_LIMIT;
    let total = (o.warmup + o.rtt_count) as u64;
    for seq in 0..total {
        if stop.load(Ordering::Relaxed) || Instant::now() > phase_end {
            break;
        }
        req[..8].copy_from_slice(&seq.to_le_bytes());
        let t0 = Instant::now();
        s.send(&req).context("client send")?;
        loop {
            let got = s.recv(&mut rep);
            let rtt = t0.elapsed();
            match got {
                Ok(n) if n == o.payload && rep[..8] == seq.to_le_bytes() => {
                    if seq >= o.warmup as u64 {
                        r.samples.push(rtt.as_nanos() as u64);
                    }
                    break;
                }
                Ok(_) => r.stale += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if rtt >= RTT_TIMEOUT {
                        r.lost += 1;
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("client recv"),
            }
        }
    }
    r.samples.sort_unstable();
    Ok(r)
}

#[derive(Debug, Clone)]
struct TputResult {
    rps: f64,
    replies: u64,
    sent: u64,
    written_off: u64,
    bad_len: u64,
    /// Times the client slept in `poll(2)` for want of replies.
    polls: u64,
    secs: f64,
    /// The client thread's CPU time per reply in the measured interval, microseconds.
    client_cpu_us: f64,
    /// Per-CPU user/system/softirq shares over the measured interval.
    cpus: String,
}

impl Default for TputResult {
    fn default() -> Self {
        TputResult {
            rps: 0.0,
            replies: 0,
            sent: 0,
            written_off: 0,
            bad_len: 0,
            polls: 0,
            secs: 0.0,
            client_cpu_us: 0.0,
            cpus: String::new(),
        }
    }
}

/// Open window: `window` requests outstanding over `flows` sockets.
fn tput_phase(o: &Options, stop: &AtomicBool) -> Result<TputResult> {
    let socks = (0..o.flows)
        .map(|_| {
            let s = client_socket()?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<Result<Vec<_>>>()?;
    let per: Vec<usize> = (0..o.flows)
        .map(|i| o.window / o.flows + usize::from(i < o.window % o.flows))
        .collect();
    let payload = vec![0x5au8; o.payload];
    let mut send_iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let mut send_hdrs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|_| {
            // SAFETY: a plain C struct; zeroed is an empty header (connected socket: no name).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = &mut send_iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut m = MmsgBufs::new();
    let mut out = vec![0usize; o.flows];
    let mut last = vec![Instant::now(); o.flows];
    let mut r = TputResult::default();
    let start = Instant::now();
    let measure_from = start + TPUT_WARMUP;
    let end = measure_from + Duration::from_secs_f64(o.secs);
    let mut measuring = false;
    let (mut ticks0, mut cpu0) = (Vec::new(), 0u64);
    let mut idle_passes = 0u32;
    // SAFETY: pollfd is a plain C struct; all-zero is valid (filled before each use).
    let mut pfds: Vec<libc::pollfd> = vec![unsafe { std::mem::zeroed() }; o.flows];
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            ticks0 = cpu_ticks();
            cpu0 = thread_cpu_us();
        }
        if now >= end || r.sent >= o.max_requests || stop.load(Ordering::Relaxed) {
            break;
        }
        let mut progress = false;
        for (i, s) in socks.iter().enumerate() {
            let fd = s.as_raw_fd();
            let n = m.recv(fd, libc::MSG_DONTWAIT)?;
            if n > 0 {
                progress = true;
                for h in &m.hdrs[..n] {
                    if h.msg_len as usize != o.payload {
                        r.bad_len += 1;
                    }
                }
                m.reset(n);
                out[i] = out[i].saturating_sub(n);
                last[i] = now;
                if measuring {
                    r.replies += n as u64;
                }
            }
            let want = per[i].saturating_sub(out[i]).min(BATCH);
            if want > 0 {
                // SAFETY: `send_hdrs` holds BATCH headers pointing at `send_iov`/`payload`, alive
                // for the call.
                let k = unsafe {
                    libc::sendmmsg(fd, send_hdrs.as_mut_ptr(), want as u32, libc::MSG_DONTWAIT)
                };
                if k > 0 {
                    out[i] += k as usize;
                    r.sent += k as u64;
                    if out[i] == k as usize {
                        last[i] = now;
                    }
                }
            }
        }
        if progress {
            idle_passes = 0;
            continue;
        }
        idle_passes += 1;
        for i in 0..o.flows {
            if out[i] > 0 && now.duration_since(last[i]) > WRITE_OFF {
                r.written_off += out[i] as u64;
                out[i] = 0;
                last[i] = now;
            }
        }
        if !o.tput_spin && idle_passes >= 2 {
            // Nothing came back twice in a row: sleep until a reply arrives (or 5 ms), leaving the
            // CPU to the server and to softirq work (2 vCPU: a spinning client starves them).
            for (p, s) in pfds.iter_mut().zip(&socks) {
                p.fd = s.as_raw_fd();
                p.events = libc::POLLIN;
                p.revents = 0;
            }
            // SAFETY: `pfds` is a live array of `flows` pollfd structs.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 5) };
            r.polls += 1;
        }
    }
    r.secs = Instant::now()
        .duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    r.rps = r.replies as f64 / r.secs;
    r.client_cpu_us = thread_cpu_us().saturating_sub(cpu0) as f64 / r.replies.max(1) as f64;
    r.cpus = cpu_busy(&ticks0, &cpu_ticks());
    drop(send_hdrs);
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Driver

#[derive(Debug, Clone)]
struct RunResult {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    rps: f64,
}

/// Starts a server; a cnet server is retried for up to 5 s while the kernel still tears down the
/// previous AF_XDP socket on the queue (bind fails with EBUSY for a moment after a close).
fn start_server(lab: &Lab, v: Variant) -> Result<Server> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tries = 1;
    loop {
        match Server::start(lab, v) {
            Ok(s) => {
                if tries > 1 {
                    println!("# {} started after {tries} tries (EBUSY)", v.name());
                }
                return Ok(s);
            }
            Err(e)
                if v.is_cnet()
                    && Instant::now() < deadline
                    && format!("{e:#}").contains("os error 16") =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

fn one_run(lab: &Lab, v: Variant, run: usize, o: &Options, stop: &AtomicBool) -> Result<RunResult> {
    let mut server = start_server(lab, v)?;
    let rtt = in_kernel_ns(lab, || rtt_phase(o, stop));
    let tput = in_kernel_ns(lab, || tput_phase(o, stop));
    let summary = server.stop()?;
    let (rtt, tput) = (rtt?, tput?);
    if v.is_cnet() {
        // The next variant may be the kernel's: make sure nothing is left attached.
        let out = lab.ip_stack(&["-d", "link", "show", "dev", STACK_DEV])?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            !text.contains("prog/xdp"),
            "an XDP program is still attached to {STACK_DEV} after cnet stopped:\n{text}"
        );
    }
    let res = RunResult {
        p50: rtt.pct_us(0.50),
        p90: rtt.pct_us(0.90),
        p99: rtt.pct_us(0.99),
        p999: rtt.pct_us(0.999),
        rps: tput.rps,
    };
    println!(
        "run variant={} run={run} payload={} rtt_n={} lost={} stale={} p50_us={:.1} p90_us={:.1} \
         p99_us={:.1} p999_us={:.1} max_us={:.1} window={} flows={} rps={:.0} replies={} sent={} \
         written_off={} bad_len={} client_polls={} client_cpu_us_per_req={:.2} cpu_user/sys/softirq%={} secs={:.2} load={} \
         server: {summary}",
        v.name(),
        o.payload,
        rtt.samples.len(),
        rtt.lost,
        rtt.stale,
        res.p50,
        res.p90,
        res.p99,
        res.p999,
        rtt.samples.last().map_or(f64::NAN, |&x| x as f64 / 1000.0),
        o.window,
        o.flows,
        tput.rps,
        tput.replies,
        tput.sent,
        tput.written_off,
        tput.bad_len,
        tput.polls,
        tput.client_cpu_us,
        tput.cpus,
        tput.secs,
        loadavg(),
    );
    Ok(res)
}

/// Per-CPU time counters from `/proc/stat` (user+nice, system, softirq+irq, idle+iowait), in ticks.
fn cpu_ticks() -> Vec<[u64; 4]> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            let g = |i: usize| f.get(i).copied().unwrap_or(0);
            [g(0) + g(1), g(2), g(5) + g(6), g(3) + g(4)]
        })
        .collect()
}

/// `cpuN=user/sys/softirq%` for the interval between two [`cpu_ticks`] samples.
fn cpu_busy(before: &[[u64; 4]], after: &[[u64; 4]]) -> String {
    let mut out = Vec::new();
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let d: Vec<u64> = (0..4).map(|k| a[k].saturating_sub(b[k])).collect();
        let total = d.iter().sum::<u64>().max(1) as f64;
        out.push(format!(
            "cpu{i}={:.0}/{:.0}/{:.0}",
            100.0 * d[0] as f64 / total,
            100.0 * d[1] as f64 / total,
            100.0 * d[2] as f64 / total
        ));
    }
    out.join(",")
}

/// CPU time (user + system) the calling thread has used, in microseconds.
fn thread_cpu_us() -> u64 {
    // SAFETY: rusage is plain data; getrusage writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage owned by this frame.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// The 1-minute load average (`/proc/loadavg`), to judge how noisy a run was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> Result<()> {
    let o = parse_args()?;
    if let Some(why) = lab::missing_requirements() {
        println!("SKIP veth_echo: {why}");
        return Ok(());
    }
    let stop = cnet_apps::service::stop_on_signals()?;
    println!(
        "# veth_echo payload={} rtt_count={} warmup={} secs={} window={} flows={} runs={} \
         rtt_client={} tput_client={} load={} build={}",
        o.payload,
        o.rtt_count,
        o.warmup,
        o.secs,
        o.window,
        o.flows,
        o.runs,
        if o.rtt_spin { "spin" } else { "blocking" },
        if o.tput_spin { "spin" } else { "poll" },
        loadavg(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    let lab = Lab::new("vbe", 1)?;
    let mut results: Vec<(Variant, Vec<RunResult>)> =
        o.variants.iter().map(|&v| (v, Vec::new())).collect();
    'runs: for run in 1..=o.runs {
        for (v, rs) in results.iter_mut() {
            if stop.load(Ordering::Relaxed) {
                println!("# interrupted");
                break 'runs;
            }
            rs.push(one_run(&lab, *v, run, &o, &stop)?);
        }
    }
    let mut med = Vec::new();
    for (v, rs) in &results {
        let m = |f: fn(&RunResult) -> f64| median(rs.iter().map(f).collect());
        let r = RunResult {
            p50: m(|r| r.p50),
            p90: m(|r| r.p90),
            p99: m(|r| r.p99),
            p999: m(|r| r.p999),
            rps: m(|r| r.rps),
        };
        println!(
            "result variant={} runs={} payload={} p50_us={:.1} p90_us={:.1} p99_us={:.1} \
             p999_us={:.1} rps={:.0}",
            v.name(),
            rs.len(),
            o.payload,
            r.p50,
            r.p90,
            r.p99,
            r.p999,
            r.rps
        );
        med.push((*v, r));
    }
    let get = |v: Variant| med.iter().find(|(x, _)| *x == v).map(|(_, r)| r.clone());
    for (c, k) in [
        (Variant::CnetPoll, Variant::Kernel),
        (Variant::CnetBusy, Variant::Kernel),
        (Variant::CnetBusy, Variant::KernelSpin),
        (Variant::CnetPoll, Variant::KernelSpin),
    ] {
        let (Some(cr), Some(kr)) = (get(c), get(k)) else {
            continue;
        };
        let rps_ratio = cr.rps / kr.rps;
        let p99_ratio = cr.p99 / kr.p99;
        println!(
            "ratio cnet={} kernel={} payload={} rps_ratio={rps_ratio:.2} p50_ratio={:.2} \
             p99_ratio={p99_ratio:.2} goal_rps={} goal_p99={}",
            c.name(),
            k.name(),
            o.payload,
            cr.p50 / kr.p50,
            if rps_ratio >= 1.5 { "met" } else { "not-met" },
            if p99_ratio <= 0.7 { "met" } else { "not-met" },
        );
    }
    drop(lab);
    Ok(())
}
