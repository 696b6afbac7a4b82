//! `cnet`: the cnet service binary.
//!
//! - `cnet demo`: cnet on AF_XDP in a network namespace against the Linux kernel (root);
//! - `cnet demo --mem`: two cnet stacks over the impaired in-memory link (no privileges);
//! - `cnet echo --iface IF [--addr A.B.C.D/P] [--udp PORT] [--tcp PORT]`: UDP and TCP echo service on AF_XDP on `IF`
//!   until Ctrl-C or SIGTERM; addresses from the flag and from the kernel (netlink);
//! - `cnet txgen --mem | --iface IF [--rate PPS] [--size N|imix] [--flows N]`: UDP traffic
//!   generator against an echo server (see `cnet_apps::txgen`);
//! - `cnet run --config FILE`, `cnet check-config FILE`, `cnet stats [--json]`, `cnet ss`,
//!   `cnet doctor --iface IF`: the service from a JSONC configuration (docs/SERVICE.md);
//! - `cnet quic-echo --iface IF [--port 4433] [--cert C --key K] [--retry] [--impair-loss P
//!   --impair-corrupt P]`: QUIC echo server
//!   (quinn-proto) on cnet's UDP over AF_XDP (see `cnet_apps::quic`);
//! - `cnet quic-client --server IP:PORT [--streams N --bytes M] [--iface IF]`: QUIC echo client
//!   checking every stream by hash; on AF_XDP with `--iface`, else on a kernel UDP socket.
//! - `cnet http --iface IF [--port 80] [--addr A.B.C.D/P] [--queues 0]`: an HTTP/1.1 server (hyper on
//!   cnet's tokio adapter) on AF_XDP on `IF`: `GET /bytes/N`, `POST /echo`, `GET /`; until Ctrl-C or
//!   SIGTERM, then the runtime's counters.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use cnet_apps::service::{self, Idle, ServiceConfig, TcpEcho, UdpEcho};
use cnet_drivers::xdp::{AttachMode, BindMode, BusyPoll, XdpConfig};
use cnet_stack::IfAddr;

#[derive(Parser)]
#[command(name = "cnet", version, about = "userspace IPv4/UDP stack over AF_XDP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the stack at work: on AF_XDP against the kernel (root), or `--mem` in memory.
    Demo {
        /// Run two cnet stacks over the in-memory link instead (no privileges needed).
        #[arg(long)]
        mem: bool,
        /// Seed of the stacks (and of the simulated link).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run UDP and TCP echo services on AF_XDP on an interface of this namespace.
    Echo(EchoArgs),
    /// Run an HTTP/1.1 server (hyper on cnet's tokio adapter) on AF_XDP on an interface.
    Http(HttpArgs),
    /// UDP traffic generator against an echo server: `--mem` (in-memory link) or `--iface IF`.
    Txgen(TxgenArgs),
    /// Run the service described by a JSONC configuration file (see deploy/cnet.jsonc).
    Run {
        /// Configuration file.
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Check a configuration file and exit (0: valid).
    CheckConfig {
        /// Configuration file.
        file: std::path::PathBuf,
    },
    /// Live counters of a running service, from its control socket.
    Stats(ControlArgs),
    /// UDP binds and TCP connections of a running service, like `ss -uti`, from its control socket.
    Ss(ControlArgs),
    /// The routing table of every queue's stack, from the control socket.
    Route(ControlArgs),
    /// The neighbour (ARP) table of every queue's stack, from the control socket.
    Neigh(ControlArgs),
    /// Diagnose the usual AF_XDP traps on an interface.
    Doctor {
        /// Interface to check.
        #[arg(long)]
        iface: String,
        /// AF_XDP frame size the service will use.
        #[arg(long, default_value_t = 2048)]
        frame_size: u32,
    },
    /// QUIC echo server (ALPN echo, hq-interop, hq-29) on AF_XDP on an interface.
    QuicEcho(QuicEchoArgs),
    /// QUIC echo client: N streams of M bytes, each echo checked by SHA-256.
    QuicClient(QuicClientArgs),
}

/// AF_XDP options shared by the QUIC subcommands.
#[derive(Args)]
struct XdpArgs {
    /// Address to add besides those the kernel has on the interface (A.B.C.D/P).
    #[arg(long)]
    addr: Option<String>,
    /// XDP attach mode: auto, native, generic.
    #[arg(long, default_value = "auto")]
    attach: String,
    /// Do not learn addresses and routes from the kernel.
    #[arg(long)]
    no_netlink: bool,
}

/// `cnet quic-echo` options.
#[derive(Args)]
struct QuicEchoArgs {
    /// Interface to serve (AF_XDP queue 0).
    #[arg(long)]
    iface: String,
    /// UDP port.
    #[arg(long, default_value_t = 4433)]
    port: u16,
    /// PEM certificate chain (with --key); without it a self-signed one is made.
    #[arg(long, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// PEM private key.
    #[arg(long, requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// Send Retry to validate client addresses first.
    #[arg(long)]
    retry: bool,
    /// Drop this fraction (0..1) of the frames in each direction around cnet's port (testing).
    #[arg(long, default_value_t = 0.0)]
    impair_loss: f64,
    /// Corrupt this fraction (0..1) of the frames in each direction (testing).
    #[arg(long, default_value_t = 0.0)]
    impair_corrupt: f64,
    /// Seed of the impairments.
    #[arg(long, default_value_t = 1)]
    impair_seed: u64,
    #[command(flatten)]
    xdp: XdpArgs,
}

/// `cnet quic-client` options.
#[derive(Args)]
struct QuicClientArgs {
    /// The server (A.B.C.D:PORT).
    #[arg(long)]
    server: std::net::SocketAddrV4,
    /// Streams to open.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Bytes sent (and echoed) on each stream.
    #[arg(long, default_value_t = 1 << 20)]
    bytes: u64,
    /// Run on AF_XDP on this interface (cnet); without it, on a kernel UDP socket.
    #[arg(long)]
    iface: Option<String>,
    /// ALPN to offer.
    #[arg(long, default_value = "echo")]
    alpn: String,
    /// Server name (SNI).
    #[arg(long, default_value = "localhost")]
    name: String,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    #[command(flatten)]
    xdp: XdpArgs,
}

/// Starts a runtime on AF_XDP queue 0 of `iface` with no in-loop app, synced with netlink, its
/// port passed through `impair` when given.
fn quic_runtime(
    iface: &str,
    x: &XdpArgs,
    impair: Option<cnet_drivers::impair::ImpairConfig>,
) -> Result<cnet_socket::Runtime> {
    let mut xdp = XdpConfig::new(iface);
    xdp.attach_mode = match x.attach.as_str() {
        "auto" => AttachMode::Auto,
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        other => anyhow::bail!("unknown attach mode {other:?} (auto, native, generic)"),
    };
    let extra_addrs = x
        .addr
        .as_deref()
        .map(parse_ifaddr)
        .transpose()?
        .into_iter()
        .collect();
    let rt = service::start_runtime_impaired(
        ServiceConfig {
            xdp,
            queue: 0,
            extra_addrs,
            netlink: !x.no_netlink,
            seed: seed_from_os(),
        },
        impair,
        cnet_socket::Limits::default(),
    )?;
    rt.wait_ready(std::time::Duration::from_secs(10))
        .context("runtime not ready")?;
    Ok(rt)
}

fn quic_echo(o: QuicEchoArgs) -> Result<()> {
    use cnet_apps::quic;
    let (chain, key) = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => quic::load_cert(c, k)?,
        _ => {
            let (c, k) = quic::self_signed()?;
            (vec![c], k)
        }
    };
    let stop = service::stop_on_signals()?;
    let impair = (o.impair_loss > 0.0 || o.impair_corrupt > 0.0).then(|| {
        let imp = cnet_drivers::mem::Impairments {
            loss: o.impair_loss,
            corrupt: o.impair_corrupt,
            ..Default::default()
        };
        cnet_drivers::impair::ImpairConfig {
            seed: o.impair_seed,
            tx: imp.clone(),
            rx: imp,
        }
    });
    let rt = quic_runtime(&o.iface, &o.xdp, impair)?;
    let io = quic::cnet_io(
        &rt,
        std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, o.port),
    )?;
    let cfg = quic::server_config(chain, key, cnet_apps::quic::DatagramIo::max_payload(&io))?;
    eprintln!(
        "cnet quic-echo on {}: UDP port {}, ALPN echo/hq-interop/hq-29, retry {}; Ctrl-C stops",
        o.iface, o.port, o.retry
    );
    let r = quic::serve_echo(io, cfg, o.retry, &stop);
    for q in rt.join() {
        eprint!("{}", cnet_socket::counter_lines(&q.counters));
        if let Some(f) = q.failure {
            anyhow::bail!("queue {}: {f}", q.index);
        }
    }
    let sum = r?;
    eprintln!(
        "cnet quic-echo: {} connections, {} datagrams",
        sum.connections, sum.datagrams
    );
    Ok(())
}

fn quic_client(o: QuicClientArgs) -> Result<()> {
    use cnet_apps::quic;
    anyhow::ensure!(
        o.timeout > 0.0 && o.timeout <= 86_400.0,
        "--timeout in (0, 86400]"
    );
    anyhow::ensure!(o.streams >= 1, "--streams must be at least 1");
    let opts = quic::ClientOptions {
        server: o.server.into(),
        server_name: o.name,
        alpn: o.alpn.into_bytes(),
        streams: o.streams,
        bytes: o.bytes,
        timeout: std::time::Duration::from_secs_f64(o.timeout),
        trust: None,
    };
    let (r, rt) = match &o.iface {
        Some(iface) => {
            let rt = quic_runtime(iface, &o.xdp, None)?;
            let io = quic::cnet_io(
                &rt,
                std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
            )?;
            (quic::run_client(io, opts), Some(rt))
        }
        None => {
            let io = quic::KernelIo::bind("0.0.0.0:0".parse()?)?;
            (quic::run_client(io, opts), None)
        }
    };
    if let Some(rt) = rt {
        rt.join();
    }
    let r = r?;
    println!(
        "handshake {:.3} ms, {} streams x {} B echoed and checked (SHA-256) in {:.3} s: goodput {:.1} Mbit/s, ALPN {}",
        r.handshake.as_secs_f64() * 1e3,
        r.streams,
        o.bytes,
        r.transfer.as_secs_f64(),
        r.goodput_mbps(),
        r.alpn
            .as_deref()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_else(|| "-".into())
    );
    println!(
        "rtt {:?}, cwnd {}, sent {} datagrams ({} B), received {} datagrams ({} B), lost {} packets, congestion events {}",
        r.stats.path.rtt,
        r.stats.path.cwnd,
        r.stats.udp_tx.datagrams,
        r.stats.udp_tx.bytes,
        r.stats.udp_rx.datagrams,
        r.stats.udp_rx.bytes,
        r.stats.path.lost_packets,
        r.stats.path.congestion_events
    );
    Ok(())
}

/// Options of the control-socket clients.
#[derive(Args)]
struct ControlArgs {
    /// Control socket path.
    #[arg(long, conflicts_with = "config")]
    socket: Option<std::path::PathBuf>,
    /// Take the control socket path from this configuration file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// JSON output (stats).
    #[arg(long)]
    json: bool,
    /// Refresh every `--interval` seconds until Ctrl-C (stats).
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch (0.1..=3600).
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop --watch after this many refreshes (0: until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

impl ControlArgs {
    fn path(&self) -> Result<std::path::PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        let file = self
            .config
            .as_ref()
            .context("give --socket PATH or --config FILE")?;
        let cfg = cnet_apps::config::Config::load(file)?;
        Ok(cfg
            .control
            .context("the configuration has no `control` section")?
            .socket)
    }
}

fn control(args: ControlArgs, cmd: &str) -> Result<()> {
    if args.watch {
        anyhow::ensure!(cmd == "stats", "--watch is for `cnet stats`");
        anyhow::ensure!(
            (0.1..=3600.0).contains(&args.interval),
            "--interval must be within 0.1..=3600 seconds"
        );
        let stop = service::stop_on_signals()?;
        let path = args.path()?;
        let cmd = if args.json { "stats json" } else { "stats" };
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let out = cnet_apps::control::request(&path, cmd)?;
            if !args.json {
                // Clear the screen and home the cursor, like watch(1).
                print!("\x1b[2J\x1b[H");
            }
            print!("{out}");
            use std::io::Write;
            std::io::stdout().flush()?;
            n += 1;
            if args.count != 0 && n >= args.count {
                break;
            }
            let until =
                std::time::Instant::now() + std::time::Duration::from_secs_f64(args.interval);
            while std::time::Instant::now() < until
                && !stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        return Ok(());
    }
    let path = args.path()?;
    let cmd = if args.json && cmd == "stats" {
        "stats json"
    } else {
        cmd
    };
    let out = cnet_apps::control::request(&path, cmd)?;
    print!("{out}");
    anyhow::ensure!(
        !out.starts_with("error:"),
        "the service refused the request"
    );
    Ok(())
}

/// `cnet txgen` options.
#[derive(Args)]
struct TxgenArgs {
    /// Run against a cnet echo server over the in-memory link (no privileges needed).
    #[arg(long, conflicts_with = "iface")]
    mem: bool,
    /// Send on AF_XDP queue 0 of this interface (root).
    #[arg(long, required_unless_present = "mem")]
    iface: Option<String>,
    /// Our address (A.B.C.D/P).
    #[arg(long, default_value = "198.18.0.1/24")]
    src: String,
    /// The echo server (A.B.C.D:PORT).
    #[arg(long, default_value = "198.18.0.2:7")]
    dst: std::net::SocketAddrV4,
    /// The echo server's MAC (AF_XDP; without it ARP resolves it).
    #[arg(long)]
    dst_mac: Option<String>,
    /// Datagrams per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// UDP payload bytes (16..=1472) or `imix`.
    #[arg(long, default_value = "64")]
    size: cnet_apps::txgen::Sizes,
    /// Flows (source ports from --src-port).
    #[arg(long, default_value_t = 1)]
    flows: u16,
    /// First source port.
    #[arg(long, default_value_t = 40000)]
    src_port: u16,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Most datagrams in flight (0: open loop).
    #[arg(long, default_value_t = 0)]
    window: u64,
}

fn txgen(o: TxgenArgs) -> Result<()> {
    use cnet_apps::txgen::{run_mem, run_xdp, TxgenConfig};
    anyhow::ensure!(
        o.duration > 0.0 && o.duration <= 86_400.0,
        "--duration in (0, 86400]"
    );
    let cfg = TxgenConfig {
        src: parse_ifaddr(&o.src)?,
        dst: o.dst,
        src_port: o.src_port,
        flows: o.flows.max(1),
        rate: o.rate,
        sizes: o.size,
        duration: std::time::Duration::from_secs_f64(o.duration),
        window: o.window,
    };
    let stop = service::stop_on_signals()?;
    let out = &mut std::io::stdout().lock();
    match o.iface {
        None => run_mem(cfg, &stop, out).map(|_| ()),
        Some(iface) => {
            let mac = o.dst_mac.as_deref().map(parse_mac).transpose()?;
            run_xdp(cfg, &iface, mac, &stop, out).map(|_| ())
        }
    }
}

fn parse_mac(s: &str) -> Result<cnet_stack::MacAddr> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "MAC must be xx:xx:xx:xx:xx:xx");
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).context("bad MAC")?;
    }
    Ok(cnet_stack::MacAddr(mac))
}

/// `cnet echo` options.
#[derive(Args)]
struct EchoArgs {
    /// Interface to serve.
    #[arg(long)]
    iface: String,
    /// Address to serve besides those the kernel has on the interface (A.B.C.D/P).
    #[arg(long)]
    addr: Option<String>,
    /// UDP echo port.
    #[arg(long, default_value_t = 7)]
    udp: u16,
    /// TCP echo port (0: no TCP echo).
    #[arg(long, default_value_t = 7)]
    tcp: u16,
    /// Queues to serve, one stack instance and thread each (e.g. `0,1`).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    queues: Vec<u32>,
    /// XDP attach mode: auto, native, generic.
    #[arg(long, default_value = "auto")]
    attach: String,
    /// Bind mode: auto, copy, zero-copy.
    #[arg(long, default_value = "auto")]
    bind: String,
    /// Do not learn addresses and routes from the kernel.
    #[arg(long)]
    no_netlink: bool,
    /// Idle strategy: poll (sleep in poll(2)) or spin.
    #[arg(long, default_value = "poll")]
    idle: String,
    /// Busy polling: SO_BUSY_POLL microseconds and SO_BUSY_POLL_BUDGET (e.g. `20,64`).
    #[arg(long)]
    busy_poll: Option<String>,
}

fn parse_ifaddr(s: &str) -> Result<IfAddr> {
    let (a, p) = s.split_once('/').context("address must be A.B.C.D/P")?;
    let prefix_len: u8 = p.parse().context("bad prefix length")?;
    anyhow::ensure!(prefix_len <= 32, "prefix length {prefix_len} > 32");
    Ok(IfAddr {
        addr: a.parse().context("bad IPv4 address")?,
        prefix_len,
    })
}

fn echo(o: EchoArgs) -> Result<()> {
    let EchoArgs {
        iface,
        addr,
        udp: port,
        tcp: tcp_port,
        queues,
        attach,
        bind,
        no_netlink,
        idle,
        busy_poll,
    } = o;
    let idle = match idle.as_str() {
        "poll" => Idle::Poll,
        "spin" => Idle::Spin,
        other => anyhow::bail!("unknown idle strategy {other:?} (poll, spin)"),
    };
    let mut xdp = XdpConfig::new(&iface);
    if let Some(bp) = busy_poll {
        let (t, b) = bp
            .split_once(',')
            .context("--busy-poll takes TIMEOUT_US,BUDGET")?;
        xdp.busy_poll = Some(BusyPoll {
            timeout_us: t.trim().parse().context("bad busy-poll timeout")?,
            budget: b.trim().parse().context("bad busy-poll budget")?,
            prefer: true,
        });
    }
    xdp.attach_mode = match attach.as_str() {
        "auto" => AttachMode::Auto,
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        other => anyhow::bail!("unknown attach mode {other:?} (auto, native, generic)"),
    };
    xdp.bind_mode = match bind.as_str() {
        "auto" => BindMode::Auto,
        "copy" => BindMode::Copy,
        "zero-copy" => BindMode::ZeroCopy,
        other => anyhow::bail!("unknown bind mode {other:?} (auto, copy, zero-copy)"),
    };
    anyhow::ensure!(!queues.is_empty(), "no queue to serve");
    xdp.queues = queues;
    let extra_addrs = addr
        .as_deref()
        .map(parse_ifaddr)
        .transpose()?
        .into_iter()
        .collect();
    let stop = service::stop_on_signals()?;
    let limits = cnet_socket::Limits {
        idle,
        ..Default::default()
    };
    let rt = service::start_runtime(
        ServiceConfig {
            xdp,
            queue: 0,
            extra_addrs,
            netlink: !no_netlink,
            seed: seed_from_os(),
        },
        limits,
        |stack| {
            let mut apps: Vec<Box<dyn cnet_socket::LoopApp>> =
                vec![Box::new(UdpEcho::bind(stack, port)?)];
            if tcp_port != 0 {
                apps.push(Box::new(TcpEcho::listen(stack, tcp_port, 1024)?));
            }
            eprintln!(
                "cnet echo on {iface}: MAC {}, addresses {:?}, UDP port {port}, TCP port {tcp_port}; Ctrl-C stops",
                stack.mac(),
                stack.addrs()
            );
            Ok(apps)
        },
    )?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(f) = rt.status().into_iter().find_map(|s| s.failure) {
            eprintln!("cnet echo: {f}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut failed = None;
    for r in rt.join() {
        eprintln!("queue {}: {}", r.index, r.apps.join(", "));
        eprint!("{}", r.counter_lines());
        if let Some(f) = r.failure {
            failed = Some(anyhow::anyhow!(f));
        }
    }
    failed.map_or(Ok(()), Err)
}

/// `cnet http` options.
#[derive(Args)]
struct HttpArgs {
    /// Interface to serve.
    #[arg(long)]
    iface: String,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Address to serve besides those the kernel has on the interface (A.B.C.D/P).
    #[arg(long)]
    addr: Option<String>,
    /// Queues to serve, one stack instance and thread each (e.g. `0,1`).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    queues: Vec<u32>,
    /// tokio worker threads running the connections.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn http(o: HttpArgs) -> Result<()> {
    anyhow::ensure!(!o.queues.is_empty(), "no queue to serve");
    let mut xdp = XdpConfig::new(&o.iface);
    xdp.queues = o.queues;
    let extra_addrs = o
        .addr
        .as_deref()
        .map(parse_ifaddr)
        .transpose()?
        .into_iter()
        .collect();
    let stop = service::stop_on_signals()?;
    let rt = service::start_runtime(
        ServiceConfig {
            xdp,
            queue: 0,
            extra_addrs,
            netlink: true,
            seed: seed_from_os(),
        },
        cnet_socket::Limits::default(),
        |_| Ok(vec![]),
    )?;
    let served = rt
        .wait_ready(std::time::Duration::from_secs(10))
        .context("the runtime did not get ready")
        .and_then(|()| cnet_apps::http::HttpServer::start(&rt, o.port, o.threads));
    let server = match served {
        Ok(s) => s,
        Err(e) => {
            drop(rt.join());
            return Err(e);
        }
    };
    let addrs = rt
        .with_stack(0, |s, _| s.addrs().to_vec())
        .unwrap_or_default();
    eprintln!(
        "cnet http on {}: addresses {addrs:?}, port {}; Ctrl-C stops",
        o.iface, o.port
    );
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(f) = rt.status().into_iter().find_map(|s| s.failure) {
            eprintln!("cnet http: {f}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stats = server.stop(std::time::Duration::from_secs(2));
    eprintln!("http: {stats}");
    let mut failed = None;
    for r in rt.join() {
        eprintln!(
            "queue {}: frames lent {}, lost {}",
            r.index, r.frames_lent, r.frames_lost
        );
        eprint!("{}", r.counter_lines());
        if let Some(f) = r.failure {
            failed = Some(anyhow::anyhow!(f));
        }
    }
    failed.map_or(Ok(()), Err)
}

/// A seed for the stack's random values (ephemeral ports, IP IDs, hash keys) from the OS.
fn seed_from_os() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::process::id() as u64 ^ 0x5eed,
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { mem: true, seed } => {
            cnet_apps::mem_demo::run(&mut std::io::stdout().lock(), seed)
        }
        Cmd::Demo { mem: false, seed } => cnet_apps::demo::run(&mut std::io::stdout().lock(), seed),
        Cmd::Echo(args) => echo(args),
        Cmd::Http(args) => http(args),
        Cmd::Txgen(args) => txgen(args),
        Cmd::QuicEcho(args) => quic_echo(args),
        Cmd::QuicClient(args) => quic_client(args),
        Cmd::Run { config } => {
            let cfg = cnet_apps::config::Config::load(&config)?;
            cnet_apps::run::init_logging(&cfg);
            let stop = service::stop_on_signals()?;
            cnet_apps::run::run(cfg, stop)
        }
        Cmd::CheckConfig { file } => {
            let cfg = cnet_apps::config::Config::load(&file)?;
            let queues: usize = cfg.ports.values().map(|p| p.queues.len()).sum();
            println!(
                "{}: valid ({} ports, {queues} queues)",
                file.display(),
                cfg.ports.len()
            );
            Ok(())
        }
        Cmd::Stats(args) => control(args, "stats"),
        Cmd::Ss(args) => control(args, "ss"),
        Cmd::Route(args) => control(args, "route"),
        Cmd::Neigh(args) => control(args, "neigh"),
        Cmd::Doctor { iface, frame_size } => {
            let r = cnet_apps::doctor::diagnose(&iface, frame_size);
            print!("{r}");
            anyhow::ensure!(
                r.worst() < cnet_apps::doctor::Level::Fail,
                "doctor: {iface} will not work as is (see FAIL above)"
            );
            Ok(())
        }
    }
}
