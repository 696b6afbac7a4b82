//! `cnet run --config FILE`: every port of the configuration on its own runtime (one owner thread
//! per queue), its apps, static routes and neighbours, CPU pinning, the metrics/health listener,
//! the control socket and the periodic diagnostics, until SIGINT/SIGTERM or a queue fails.

use crate::config::Config;
use crate::http::HttpServer;
use crate::metrics::{self, Heartbeat, PortHandle, Ticks, Watchdog};
use crate::service::{self, ServiceConfig, TcpEcho, UdpEcho};
use anyhow::{Context, Result};
use cnet_socket::LoopApp;
use cnet_stack::{ConfigEvent, Instant, Stack};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Pins the owner thread it runs on to a CPU set, on its first poll (the runtime spawns its
/// threads itself; an in-loop app is the one thing that runs on them).
#[derive(Debug)]
pub struct PinCpus {
    cpus: Vec<usize>,
    done: bool,
    /// The error, if pinning failed.
    pub error: Option<String>,
}

impl PinCpus {
    /// Pins to `cpus` once running.
    pub fn new(cpus: Vec<usize>) -> PinCpus {
        PinCpus {
            cpus,
            done: false,
            error: None,
        }
    }
}

/// Restricts the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, with indices
    // checked against CPU_SETSIZE by the configuration.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for c in cpus {
            if *c >= libc::CPU_SETSIZE as usize {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            libc::CPU_SET(*c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl LoopApp for PinCpus {
    fn poll(&mut self, _stack: &mut Stack, _now: Instant) {
        if !self.done {
            self.done = true;
            match pin_current_thread(&self.cpus) {
                Ok(()) => tracing::info!(cpus = ?self.cpus, "queue thread pinned"),
                Err(e) => {
                    tracing::warn!(cpus = ?self.cpus, error = %e, "cannot pin queue thread");
                    self.error = Some(e.to_string());
                }
            }
        }
    }
    fn report(&self) -> String {
        match &self.error {
            None => format!("pinned to CPUs {:?}", self.cpus),
            Some(e) => format!("pinning to CPUs {:?} failed: {e}", self.cpus),
        }
    }
}

/// Sets up logging from the configuration (`RUST_LOG` overrides the level).
pub fn init_logging(cfg: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            tracing_subscriber::EnvFilter::try_new(&cfg.logging.level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.logging.format {
        crate::config::LogFormat::Text => b.try_init(),
        crate::config::LogFormat::Json => b.json().try_init(),
    };
}

/// The XSKMAP of every port whose `xskmap` is `uds` or `pinned`, by interface: pins opened, and
/// one device-plugin session per pool (see [`crate::deviceplugin::resolve_maps_open`]). The
/// sessions of pools with a `uds` or `pinned` port that wants busy polling (with
/// `SO_PREFER_BUSY_POLL`, which the plugin always sets) are returned open, for
/// `/config_busy_poll` once the ports exist; the others are finished. A pinned port gets such a
/// session only when the plugin's socket is mounted beside its pin.
pub fn device_plugin_maps(
    cfg: &Config,
) -> Result<(
    std::collections::BTreeMap<String, std::os::fd::OwnedFd>,
    Vec<crate::deviceplugin::OpenSession>,
)> {
    use crate::deviceplugin;
    let requests: std::collections::BTreeMap<_, _> = cfg
        .ports
        .values()
        .filter_map(|p| Some((p.interface.clone(), p.xskmap.request()?)))
        .collect();
    if requests.is_empty() {
        return Ok(Default::default());
    }
    let keep_open = cfg
        .ports
        .values()
        .filter(|p| {
            p.xskmap.request().is_some()
                && p.busy_poll
                    .or(cfg.defaults.busy_poll)
                    .is_some_and(|b| b.prefer)
        })
        .map(|p| p.interface.clone())
        .collect();
    let host = deviceplugin::hostname()?;
    deviceplugin::resolve_maps_open(
        &requests,
        std::env::vars(),
        &host,
        deviceplugin::DEFAULT_TIMEOUT,
        &keep_open,
    )
    .context("getting the XSKMAP (AF_XDP device plugin or pinned map)")
}

/// Opens every port of `cfg` and starts its runtime. Busy polling of a port whose pool has a
/// device-plugin session open (its map came from the plugin's socket, or from a pin with the
/// socket beside it) is configured through the plugin (`/config_busy_poll` with each queue's
/// socket, the pod lacking CAP_NET_ADMIN); the sessions end (`/fin`) once every port is open.
pub fn start_ports(cfg: &Config) -> Result<Vec<PortHandle>> {
    let mut ports = Vec::new();
    let (mut maps, mut sessions) = device_plugin_maps(cfg)?;
    for (name, p) in &cfg.ports {
        let mut xdp = cfg
            .xdp_config(name)
            .context("port vanished from the configuration")?;
        if let Some(fd) = maps.remove(&p.interface) {
            xdp.map_source = cnet_drivers::xdp::XskMapSource::Fd(fd);
        }
        // The plugin session of this port's pool, if kept open for busy polling (a pinned map
        // without the plugin's socket beside it has none: the port then sets the options
        // itself, which needs CAP_NET_ADMIN).
        let session = sessions
            .iter()
            .position(|s| s.devices.contains(&p.interface))
            .filter(|_| p.xskmap.request().is_some());
        let via_plugin = xdp.busy_poll.filter(|b| b.prefer).zip(session);
        xdp.busy_poll_by_caller = via_plugin.is_some();
        let mut on_open = |xsk: std::os::fd::BorrowedFd<'_>| -> Result<()> {
            if let Some((b, i)) = via_plugin {
                sessions[i]
                    .session
                    .config_busy_poll(xsk, b.timeout_us, b.budget)
                    .with_context(|| {
                        format!("busy polling on {} through the device plugin", p.interface)
                    })?;
                tracing::info!(iface = %p.interface, timeout_us = b.timeout_us, budget = b.budget,
                    "busy polling configured by the device plugin");
            }
            Ok(())
        };
        let queues = xdp.queues.clone();
        let limits = cfg.runtime.limits();
        let routes = p.stack_routes();
        let neighbors = p.stack_neighbors();
        let stack_limits = cfg.stack.clone();
        let mut qi = 0usize;
        let ticks = Ticks::new(queues.len());
        let runs = |on: &Option<Vec<String>>| on.as_ref().is_none_or(|v| v.contains(name));
        let rt = service::start_runtime_on_open(
            ServiceConfig {
                xdp,
                queue: 0,
                extra_addrs: p.addresses.iter().map(|c| c.0).collect(),
                netlink: cfg.netlink(name),
                seed: seed_from_os(),
            },
            &move |sc| stack_limits.apply(sc),
            limits,
            |stack| {
                let index = qi;
                let queue = queues.get(qi).copied().unwrap_or(0);
                qi += 1;
                for r in &routes {
                    stack.apply_config(ConfigEvent::RouteAdd(*r), Instant::ZERO);
                }
                for n in &neighbors {
                    stack.apply_config(ConfigEvent::NeighborSet(*n), Instant::ZERO);
                }
                let mut apps: Vec<Box<dyn LoopApp>> =
                    vec![Box::new(Heartbeat::new(ticks.clone(), index))];
                if let Some(cpus) = cfg.cpus(name, queue) {
                    apps.push(Box::new(PinCpus::new(cpus.to_vec())));
                }
                if let Some(u) = cfg.apps.udp_echo.as_ref().filter(|u| runs(&u.on)) {
                    apps.push(Box::new(UdpEcho::bind(stack, u.port)?));
                }
                if let Some(t) = cfg.apps.tcp_echo.as_ref().filter(|t| runs(&t.on)) {
                    apps.push(Box::new(TcpEcho::listen(stack, t.port, t.backlog)?));
                }
                tracing::info!(
                    port = %name, iface = %p.interface, queue, mac = %stack.mac(),
                    addrs = ?stack.addrs(), "queue ready to start"
                );
                Ok(apps)
            },
            &mut on_open,
        )
        .with_context(|| format!("port {name} ({})", p.interface))?;
        ports.push(PortHandle {
            name: name.clone(),
            iface: p.interface.clone(),
            queues: p.queues.clone(),
            rt,
            // start_runtime applies netlink's first dump before the queue threads start.
            synced_at_open: true,
            ticks,
        });
    }
    for s in sessions {
        s.session
            .fin()
            .with_context(|| format!("ending the device plugin session of {:?}", s.devices))?;
    }
    Ok(ports)
}

/// Starts `apps.http` on every port it runs on, once that port's runtime is ready (the tokio
/// runtime of each server is owned by the server, so by `run`).
pub fn start_http(cfg: &Config, ports: &[PortHandle]) -> Result<Vec<HttpServer>> {
    let mut servers = Vec::new();
    let Some(h) = &cfg.apps.http else {
        return Ok(servers);
    };
    for p in ports {
        if !h.on.as_ref().is_none_or(|v| v.contains(&p.name)) {
            continue;
        }
        let started =
            p.rt.wait_ready(Duration::from_secs(10))
                .context("the runtime did not get ready")
                .and_then(|()| HttpServer::start(&p.rt, h.port, h.threads))
                .with_context(|| format!("apps.http on port {} ({})", p.name, p.iface));
        match started {
            Ok(s) => {
                tracing::info!(port = %p.name, iface = %p.iface, tcp_port = h.port, threads = h.threads, "http serving");
                servers.push(s);
            }
            Err(e) => {
                for s in servers {
                    s.stop(Duration::from_secs(1));
                }
                return Err(e);
            }
        }
    }
    Ok(servers)
}

/// Runs the service of `cfg` until `stop` is set or a queue fails; joins every runtime.
pub fn run(cfg: Config, stop: Arc<AtomicBool>) -> Result<()> {
    let ports = Arc::new(start_ports(&cfg)?);
    let http = match start_http(&cfg, &ports) {
        Ok(h) => h,
        Err(e) => {
            for p in ports.iter() {
                p.rt.join();
            }
            return Err(e);
        }
    };
    let watchdog = Arc::new(Watchdog::new(
        cfg.diagnostics.bad_checksum_ratio,
        cfg.diagnostics.min_frames,
    ));
    let mut threads = Vec::new();
    if let Some(m) = &cfg.metrics {
        let l = std::net::TcpListener::bind(m.listen)
            .with_context(|| format!("metrics.listen: cannot listen on {}", m.listen))?;
        tracing::info!(listen = %l.local_addr()?, "metrics: /metrics /healthz /readyz");
        threads.push(metrics::serve(
            l,
            ports.clone(),
            Some(watchdog.clone()),
            stop.clone(),
        )?);
    }
    if let Some(c) = &cfg.control {
        threads.push(
            crate::control::serve(&c.socket, ports.clone(), stop.clone()).with_context(|| {
                format!("control.socket: cannot listen on {}", c.socket.display())
            })?,
        );
        tracing::info!(socket = %c.socket.display(), "control socket");
    }
    let interval = Duration::from_secs_f64(cfg.diagnostics.interval_s);
    let mut next_check = std::time::Instant::now() + interval;
    let mut failure = None;
    while !stop.load(Relaxed) {
        if let Err(f) = metrics::health(&ports) {
            tracing::error!("queue failed: {f}");
            failure = Some(f);
            break;
        }
        if std::time::Instant::now() >= next_check {
            watchdog.check(&metrics::snapshot(&ports));
            next_check = std::time::Instant::now() + interval;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    // Before the runtimes stop: the connections give their buffers back.
    for s in http {
        let st = s.stop(Duration::from_secs(2));
        eprintln!("http: {st}");
    }
    for p in ports.iter() {
        for r in p.rt.join() {
            let q = p.queues.get(r.index).copied().unwrap_or(0);
            eprintln!("{} ({}) queue {q}: {}", p.name, p.iface, r.apps.join(", "));
            eprint!("{}", r.counter_lines());
            if let Some(f) = r.failure {
                failure.get_or_insert(f);
            }
        }
    }
    match failure {
        Some(f) => Err(anyhow::anyhow!(f)),
        None => Ok(()),
    }
}

/// A seed for the stack's random values, from the OS.
fn seed_from_os() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => std::process::id() as u64 ^ 0x5eed,
    }
}
