//! `afxdp-test-dp`: a test AF_XDP device plugin, the host side of one Allocate (issue #16).
//!
//! Runs as root. For every `--dev` it loads libxdp's redirect program and its XSKMAP
//! ([`XskProgram`]), then plays the AF_XDP device plugin as `shared/afxdp-dp-protocol.md`
//! specifies it:
//!
//! - `--mode uds` (the plugin's default): one UDS server for all the devices, listening at
//!   `<dir>/<dev>/afxdp.sock` for each device (one socket, linked under every device's directory,
//!   as the plugin bind-mounts one socket per device), serving exactly one session
//!   ([`server::Session`]), then unlinking it; `udsTimeout` on the accept (from start) and on every
//!   read;
//! - `--mode pinned` (`BpfMapPinningEnable` with `UdsServerDisable`, dpSyncer-like): a bpffs per
//!   device at `<dir>/.bpffs/<dev>` with the map pinned as `xsks_map`, bind-mounted at
//!   `<dir>/<dev>/xsks_map` as the kubelet mounts it into the container;
//! - `--mode both`: the two (here the socket hands over the same map that is pinned).
//!
//! `--uid` is the pool's `uid`: it owns the socket and the pin (mode 0600); without it only root
//! can use them. `--misbehave` selects an error path ([`server::Misbehave`]).
//!
//! Stdout carries one event per line for tests: `ready socket=<path|-> pin=<path|->`,
//! `request <text>[ +fd]`, `busy_poll <t>,<b> <applied|rolled-back> read back prefer=<v>
//! busy_poll=<v>`, `session <outcome>`, `exit`. Logs go to stderr (`RUST_LOG`). The program stays
//! attached (and the pin in place) until SIGTERM / SIGINT or `--lifetime` seconds; then
//! everything is undone.

mod host;
mod server;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cnet_apps::deviceplugin::wire;
use cnet_drivers::xdp::XskProgram;
use host::Host;
use server::{Misbehave, Outcome, Session};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the map is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// The UDS handshake (the map fd by SCM_RIGHTS).
    Uds,
    /// A map pinned on a bpffs, no socket.
    Pinned,
    /// Both a socket and a pin.
    Both,
}

#[derive(Debug, Parser)]
#[command(
    name = "afxdp-test-dp",
    about = "Test AF_XDP device plugin: loads the redirect program and serves its XSKMAP over \
             the plugin's UDS protocol and/or a pin (root)"
)]
struct Args {
    /// A device of this Allocate (repeat for several: one server serves them all).
    #[arg(long = "dev", required = true)]
    devs: Vec<String>,
    /// Enter this network namespace first (a path, or a name under /run/netns).
    #[arg(long)]
    netns: Option<String>,
    /// Directory of the per-device socket and pin directories.
    #[arg(long, default_value = cnet_apps::deviceplugin::DP_DIR)]
    dir: PathBuf,
    /// How the map is handed over.
    #[arg(long, value_enum, default_value_t = Mode::Uds)]
    mode: Mode,
    /// The pod the kubelet would list with these devices: the hostname `/connect` must carry
    /// (default: this host's name, which `cnet run` sends when it runs here).
    #[arg(long)]
    pod: Option<String>,
    /// The devices the kubelet lists for that pod under this resource (default: `--dev`s); a
    /// different set makes `/connect` fail with `/host_nak`.
    #[arg(long = "pod-dev")]
    pod_devs: Vec<String>,
    /// The pool's `uid`: owner of the socket and the pin (default: root only).
    #[arg(long)]
    uid: Option<u32>,
    /// `udsTimeout` in seconds: -1 none, 0 the plugin's default 30, else 1..=300 (the plugin
    /// accepts 30..=300; shorter values are for tests).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    uds_timeout: i64,
    /// Misbehave on purpose (error-path tests).
    #[arg(long, value_enum, default_value_t = Misbehave::None)]
    misbehave: Misbehave,
    /// Exit (undoing everything) after this many seconds, at the latest.
    #[arg(long, default_value_t = 600)]
    lifetime: u64,
}

fn main() -> Result<()> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let timeout = match args.uds_timeout {
        -1 => None,
        0 => Some(Duration::from_secs(30)),
        t @ 1..=300 => Some(Duration::from_secs(t as u64)),
        t => bail!("--uds-timeout {t}: expected -1, 0 or 1..=300 seconds"),
    };
    for d in &args.devs {
        if d.is_empty() || d.len() >= 16 || d.contains(['/', ',', ' ', '\0']) {
            bail!("--dev {d:?}: not an interface name");
        }
    }
    // Before any other thread exists: every thread of the process is then in the namespace.
    if let Some(ns) = &args.netns {
        let path = if ns.contains('/') {
            PathBuf::from(ns)
        } else {
            Path::new("/run/netns").join(ns)
        };
        host::enter_netns(&path)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let end = Instant::now() + Duration::from_secs(args.lifetime);
    // The lifetime bounds everything, a session waiting for its udsTimeout included.
    let watchdog = Arc::clone(&stop);
    std::thread::spawn(move || {
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        watchdog.store(true, Ordering::Relaxed);
    });
    let mut host = Host::default();
    let r = run(&args, timeout, &stop, &mut host);
    drop(host);
    println!("exit");
    r
}

/// Sets everything up, serves the session (UDS modes), then waits for the end.
fn run(args: &Args, timeout: Option<Duration>, stop: &AtomicBool, host: &mut Host) -> Result<()> {
    let start = Instant::now();
    for dev in &args.devs {
        let p = XskProgram::load(dev).with_context(|| format!("loading the program on {dev}"))?;
        tracing::info!(dev, "redirect program attached, XSKMAP created");
        host.programs.push((dev.clone(), p));
        host.mkdir(&args.dir.join(dev), 0o755)?;
    }
    let mut pin_shown = String::from("-");
    if args.mode != Mode::Uds {
        for i in 0..host.programs.len() {
            let dev = host.programs[i].0.clone();
            let fs = args.dir.join(".bpffs").join(&dev);
            host.mount_bpffs(&fs)?;
            let pin = fs.join("xsks_map");
            host.programs[i].1.pin(&pin).context("pinning the XSKMAP")?;
            host::own(&pin, args.uid, 0o600)?;
            let shown = args.dir.join(&dev).join("xsks_map");
            host.bind_file(&pin, &shown)?;
            tracing::info!(dev, pin = %shown.display(), "XSKMAP pinned");
            pin_shown = shown.display().to_string();
        }
    }
    let listener = if args.mode == Mode::Pinned {
        None
    } else {
        Some(listen(args, host)?)
    };
    println!(
        "ready socket={} pin={pin_shown}",
        listener
            .as_ref()
            .map_or("-".into(), |(_, p)| p.display().to_string())
    );
    if let Some((l, _)) = listener {
        let (outcome, conn) = serve_one(args, timeout, stop, host, &l, start);
        // Close = unlink the socket, close the listener and the connection: in this order, so
        // that a client that sees the session end finds the socket gone.
        host.unlink_sockets();
        drop(l);
        drop(conn);
        println!("session {outcome}");
    }
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The listening socket at `<dir>/<dev>/afxdp.sock` of the first device, linked under the other
/// devices' directories; owned by `--uid`, mode 0600.
fn listen(args: &Args, host: &mut Host) -> Result<(OwnedFd, PathBuf)> {
    let first = args.dir.join(&args.devs[0]).join("afxdp.sock");
    let l = wire::listen(&first).with_context(|| format!("listen on {}", first.display()))?;
    host.socket(&first);
    host::own(&first, args.uid, 0o600)?;
    for d in &args.devs[1..] {
        let other = args.dir.join(d).join("afxdp.sock");
        std::fs::hard_link(&first, &other)
            .with_context(|| format!("linking {}", other.display()))?;
        host.socket(&other);
    }
    Ok((l, first))
}

/// Accepts one connection within the `udsTimeout` since start, and serves it; returns how the
/// session ended and the connection (still open).
fn serve_one(
    args: &Args,
    timeout: Option<Duration>,
    stop: &AtomicBool,
    host: &Host,
    listener: &OwnedFd,
    start: Instant,
) -> (Outcome, Option<OwnedFd>) {
    match server::wait_readable(listener.as_fd(), timeout.map(|t| start + t), stop) {
        Ok(true) => {}
        Ok(false) => return (Outcome::Timeout, None),
        Err(o) => return (o, None),
    }
    let conn = match wire::accept(listener.as_fd()) {
        Ok(c) => c,
        Err(e) => return (Outcome::Error(format!("accept: {e}")), None),
    };
    let pod = match &args.pod {
        Some(p) => p.clone(),
        None => cnet_apps::deviceplugin::hostname().unwrap_or_default(),
    };
    let pod_devices = if args.pod_devs.is_empty() {
        args.devs.clone()
    } else {
        args.pod_devs.clone()
    };
    let session = Session {
        pod: &pod,
        pod_devices: &pod_devices,
        maps: host
            .programs
            .iter()
            .map(|(d, p)| (d.clone(), p.map_fd()))
            .collect(),
        timeout,
        misbehave: args.misbehave,
        stop,
    };
    let outcome = session.serve(&conn, &mut |line| println!("{line}"));
    (outcome, Some(conn))
}
