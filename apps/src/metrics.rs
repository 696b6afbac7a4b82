//! Observability of a running service: per-queue snapshots taken on the owner threads
//! (`Runtime::with_stack`), their Prometheus text encoding (`prometheus-client`), the
//! bad-checksum watchdog, and a small blocking HTTP/1.1 server for `/metrics`, `/healthz` and
//! `/readyz` on a kernel socket.

use cnet_socket::Runtime;
use cnet_stack::buf::PoolStats;
use cnet_stack::{Counters, DropReason, Event};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One port (interface) of the service and its runtime.
#[derive(Debug, Clone)]
pub struct PortHandle {
    /// Port name in the configuration.
    pub name: String,
    /// Interface.
    pub iface: String,
    /// Queue ids, in runtime queue order.
    pub queues: Vec<u32>,
    /// Its runtime.
    pub rt: Runtime,
    /// The port's stacks were built from a completed netlink dump before the runtime started
    /// (`Service::open_all` does that), so they count as synced even though the runtime's own
    /// flag only turns on with a snapshot received while running.
    pub synced_at_open: bool,
    /// Last loop iteration of each queue, written by its [`Heartbeat`] app.
    pub ticks: Arc<Ticks>,
}

/// A queue thread that has not ticked for this long is not alive (`/healthz` answers 503).
/// An idle loop still iterates at least every 10 ms (its poll(2) cap).
pub const TICK_STALE: Duration = Duration::from_secs(2);

/// When each queue of a port last ran its loop: milliseconds since `base`, one slot per queue.
#[derive(Debug)]
pub struct Ticks {
    base: std::time::Instant,
    last_ms: Vec<AtomicU64>,
}

impl Ticks {
    /// `n` queues, each counted as having ticked now.
    pub fn new(n: usize) -> Arc<Ticks> {
        Arc::new(Ticks {
            base: std::time::Instant::now(),
            last_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Queue `i` ticks now.
    pub fn tick(&self, i: usize) {
        self.tick_at(i, std::time::Instant::now());
    }

    /// Queue `i` ticked at `at`.
    pub fn tick_at(&self, i: usize, at: std::time::Instant) {
        if let Some(t) = self.last_ms.get(i) {
            t.store(
                at.saturating_duration_since(self.base).as_millis() as u64,
                Relaxed,
            );
        }
    }

    /// How long ago queue `i` last ticked, seen at `now` (`None`: no such queue).
    pub fn age(&self, i: usize, now: std::time::Instant) -> Option<Duration> {
        let last = self.base + Duration::from_millis(self.last_ms.get(i)?.load(Relaxed));
        Some(now.saturating_duration_since(last))
    }
}

/// An in-loop app that records every iteration of its queue's loop in [`Ticks`]: the liveness
/// signal of `/healthz` (the runtime exposes no tick of its own; nothing added to socket-api).
#[derive(Debug)]
pub struct Heartbeat {
    ticks: Arc<Ticks>,
    index: usize,
}

impl Heartbeat {
    /// Ticks slot `index` of `ticks`.
    pub fn new(ticks: Arc<Ticks>, index: usize) -> Heartbeat {
        Heartbeat { ticks, index }
    }
}

impl cnet_socket::LoopApp for Heartbeat {
    fn poll(&mut self, _stack: &mut cnet_stack::Stack, _now: cnet_stack::Instant) {
        self.ticks.tick(self.index);
    }
}

/// A look at one queue, taken on its owner thread.
#[derive(Debug, Clone)]
pub struct QueueSnapshot {
    /// Port name.
    pub port: String,
    /// Interface.
    pub iface: String,
    /// Queue id.
    pub queue: u32,
    /// The owner thread runs.
    pub running: bool,
    /// First configuration snapshot applied.
    pub synced: bool,
    /// Why it failed, if it did.
    pub failure: Option<String>,
    /// Stack counters (`None` when the queue did not answer).
    pub counters: Option<Counters>,
    /// Pool statistics.
    pub pool: Option<PoolStats>,
    /// Frames the stack holds (queues, reassembly, send buffers).
    pub frames_held: usize,
    /// TCP connections in the table.
    pub tcp_connections: usize,
    /// The runtime's counters: (name, value).
    pub runtime: Vec<(&'static str, u64)>,
    /// The port's statistics (AF_XDP socket and kernel), as the owner thread last published them.
    pub port_stats: Vec<cnet_socket::PortStat>,
}

/// Takes a snapshot of every queue of every port.
pub fn snapshot(ports: &[PortHandle]) -> Vec<QueueSnapshot> {
    let mut out = Vec::new();
    for p in ports {
        let status = p.rt.status();
        for (i, st) in status.into_iter().enumerate() {
            let look = if st.running {
                p.rt.with_stack(i, |s, _| {
                    (
                        s.counters().clone(),
                        s.pool().stats(),
                        s.frames_held(),
                        s.tcp_connections(),
                    )
                })
                .ok()
            } else {
                None
            };
            let c = p.rt.counters(i);
            let runtime = vec![
                ("commands", c.commands.load(Relaxed)),
                ("wakeups", c.wakeups.load(Relaxed)),
                ("spare_empty", c.spare_empty.load(Relaxed)),
                ("frames_returned", c.frames_returned.load(Relaxed)),
                ("rx_bytes", c.rx_bytes.load(Relaxed)),
                ("tx_bytes", c.tx_bytes.load(Relaxed)),
                ("udp_send_errors", c.udp_send_errors.load(Relaxed)),
            ];
            let (counters, pool, frames_held, tcp_connections) = match look {
                Some((c, p, h, t)) => (Some(c), Some(p), h, t),
                None => (None, None, 0, 0),
            };
            out.push(QueueSnapshot {
                port: p.name.clone(),
                iface: p.iface.clone(),
                queue: p.queues.get(i).copied().unwrap_or(i as u32),
                running: st.running,
                synced: st.synced || p.synced_at_open,
                failure: st.failure,
                counters,
                pool,
                frames_held,
                tcp_connections,
                runtime,
                port_stats: p.rt.port_stats(i),
            });
        }
    }
    out
}

/// Frames dropped for a bad UDP or TCP checksum.
pub fn bad_checksum_drops(c: &Counters) -> u64 {
    c.drops(DropReason::UdpBadChecksum)
        + c.drops(DropReason::TcpBadChecksum)
        + partial_checksum_drops(c)
}

/// Frames dropped because their UDP or TCP checksum was left partial by the sender.
pub fn partial_checksum_drops(c: &Counters) -> u64 {
    c.drops(DropReason::UdpPartialChecksum) + c.drops(DropReason::TcpPartialChecksum)
}

/// Frames the kernel dropped at the AF_XDP socket before cnet saw them, split by cause:
/// (RX ring full, fill ring empty, other), from the published port statistics.
pub fn kernel_xdp_drops(s: &QueueSnapshot) -> (u64, u64, u64) {
    let get = |n: &str| {
        s.port_stats
            .iter()
            .find(|p| p.name == n)
            .map_or(0, |p| p.value)
    };
    (
        get("kernel_rx_ring_full"),
        get("kernel_rx_fill_ring_empty_descs"),
        get("kernel_rx_dropped"),
    )
}

#[derive(Debug, Default, Clone, Copy)]
struct WatchState {
    rx: u64,
    bad: u64,
    xdp_rx: u64,
    kernel_drops: (u64, u64, u64),
    alarm: bool,
    ratio: f64,
    partial_told: bool,
    accepted_told: bool,
}

/// The bad-checksum watchdog: compares, per queue and interval, frames dropped for a bad UDP/TCP
/// checksum with frames received, and warns loudly (with the fix) when they dominate. A kernel
/// sender with checksum offload on a veth leaves checksums partial: every such frame is dropped.
#[derive(Debug)]
pub struct Watchdog {
    ratio: f64,
    min_frames: u64,
    state: Mutex<BTreeMap<(String, u32), WatchState>>,
    /// Warnings given.
    pub warnings: AtomicU64,
}

impl Watchdog {
    /// A watchdog that warns when more than `ratio` of at least `min_frames` received frames in
    /// an interval were dropped for a bad checksum.
    pub fn new(ratio: f64, min_frames: u64) -> Watchdog {
        Watchdog {
            ratio,
            min_frames,
            state: Mutex::new(BTreeMap::new()),
            warnings: AtomicU64::new(0),
        }
    }

    /// Judges one interval's snapshots; returns the warnings given (also logged).
    pub fn check(&self, snaps: &[QueueSnapshot]) -> Vec<String> {
        let mut warnings = Vec::new();
        let Ok(mut state) = self.state.lock() else {
            return warnings;
        };
        for s in snaps {
            let Some(c) = &s.counters else { continue };
            let rx = c.get(Event::RxFrames);
            let bad = bad_checksum_drops(c);
            let st = state.entry((s.port.clone(), s.queue)).or_default();
            let partial = partial_checksum_drops(c);
            if partial > 0 && !st.partial_told {
                st.partial_told = true;
                let w = format!(
                    "{}/{} queue {}: {partial} frames dropped with a partial UDP/TCP checksum (exactly the \
                     pseudo-header sum: the sender offloads checksums, CHECKSUM_PARTIAL, and a veth never \
                     finishes them). Fix: `ethtool -K <peer-interface> tx off` on the sending side, or, for \
                     a trusted veth peer only, `\"stack\": {{ \"rx_checksum\": \"accept-partial\" }}` in the configuration",
                    s.port, s.iface, s.queue
                );
                tracing::warn!(port = %s.port, iface = %s.iface, queue = s.queue, dropped = partial, "{w}");
                self.warnings.fetch_add(1, Relaxed);
                warnings.push(w);
            }
            let accepted = c.get(Event::RxPartialChecksumAccepted);
            if accepted > 0 && !st.accepted_told {
                st.accepted_told = true;
                tracing::info!(
                    port = %s.port, iface = %s.iface, queue = s.queue, accepted,
                    "accepting partial UDP/TCP checksums (rx_checksum: accept-partial): their payload is covered by no checksum"
                );
            }
            if let Some(w) = self.check_kernel_drops(s, st) {
                tracing::warn!(port = %s.port, iface = %s.iface, queue = s.queue, "{w}");
                self.warnings.fetch_add(1, Relaxed);
                warnings.push(w);
            }
            let (drx, dbad) = (rx.saturating_sub(st.rx), bad.saturating_sub(st.bad));
            st.rx = rx;
            st.bad = bad;
            if drx < self.min_frames {
                st.alarm = false;
                st.ratio = 0.0;
                continue;
            }
            st.ratio = dbad as f64 / drx as f64;
            st.alarm = st.ratio > self.ratio;
            if st.alarm {
                let w = format!(
                    "{}/{} queue {}: {dbad} of {drx} received frames dropped for a bad UDP/TCP checksum ({:.0}%). \
                     A kernel sender with checksum offload (veth, or a VM's virtio) leaves checksums partial: \
                     run `ethtool -K <peer-interface> tx off` on the sending side (see `cnet doctor --iface {}`)",
                    s.port,
                    s.iface,
                    s.queue,
                    st.ratio * 100.0,
                    s.iface
                );
                tracing::warn!(port = %s.port, iface = %s.iface, queue = s.queue, dropped = dbad, received = drx, "{w}");
                self.warnings.fetch_add(1, Relaxed);
                warnings.push(w);
            }
        }
        warnings
    }

    /// The kernel's AF_XDP drops of one interval: a warning with the cause and the fix when more
    /// than the ratio of at least `min_frames` frames that reached the queue never got to cnet.
    fn check_kernel_drops(&self, s: &QueueSnapshot, st: &mut WatchState) -> Option<String> {
        let xdp_rx = s
            .port_stats
            .iter()
            .find(|p| p.name == "xdp_rx_frames")?
            .value;
        let now = kernel_xdp_drops(s);
        let before = std::mem::replace(&mut st.kernel_drops, now);
        let d = (
            now.0.saturating_sub(before.0),
            now.1.saturating_sub(before.1),
            now.2.saturating_sub(before.2),
        );
        let drx = xdp_rx.saturating_sub(std::mem::replace(&mut st.xdp_rx, xdp_rx));
        let dropped = d.0 + d.1 + d.2;
        let arrived = drx + dropped;
        if arrived < self.min_frames || dropped as f64 <= self.ratio * arrived as f64 {
            return None;
        }
        let cause = if d.1 >= d.0 && d.1 >= d.2 {
            "the fill ring was empty (no free frame to receive into: the pool is short, or the \
             application holds received buffers). Fix: raise the port's `frames`, return \
             received buffers sooner"
        } else if d.0 >= d.2 {
            "the RX ring was full (the queue's thread does not keep up). Fix: give the queue its \
             own core (`cpu` in the configuration), `idle: \"spin\"` or busy polling, or spread \
             the load over more queues"
        } else {
            "the kernel refused them (frame larger than a UMEM frame, or invalid descriptors). \
             Fix: check the MTU against the port's frame size"
        };
        Some(format!(
            "{}/{} queue {}: the kernel dropped {dropped} of {arrived} frames at the AF_XDP socket \
             before cnet saw them ({:.0}%; ring full {}, fill ring empty {}, other {}): {cause}",
            s.port,
            s.iface,
            s.queue,
            dropped as f64 * 100.0 / arrived as f64,
            d.0,
            d.1,
            d.2
        ))
    }

    /// Whether `port`'s queue `queue` is in alarm, and its last ratio.
    pub fn alarm(&self, port: &str, queue: u32) -> (bool, f64) {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.get(&(port.to_string(), queue)).copied())
            .map_or((false, 0.0), |s| (s.alarm, s.ratio))
    }
}

type Labels = Vec<(String, String)>;

fn labels(s: &QueueSnapshot) -> Labels {
    vec![
        ("port".into(), s.port.clone()),
        ("iface".into(), s.iface.clone()),
        ("queue".into(), s.queue.to_string()),
    ]
}

/// The Prometheus text (OpenMetrics) encoding of the snapshots.
pub fn encode(snaps: &[QueueSnapshot], watchdog: Option<&Watchdog>) -> String {
    let mut reg = Registry::with_prefix("cnet");
    for e in Event::ALL {
        let f = Family::<Labels, Counter>::default();
        for s in snaps {
            if let Some(c) = &s.counters {
                f.get_or_create(&labels(s)).inc_by(c.get(*e));
            }
        }
        reg.register(
            format!("stack_{}", e.name()),
            format!("stack counter {}", e.name()),
            f,
        );
    }
    let drops = Family::<Labels, Counter>::default();
    for s in snaps {
        if let Some(c) = &s.counters {
            for r in DropReason::ALL {
                let mut l = labels(s);
                l.push(("reason".into(), r.name().into()));
                drops.get_or_create(&l).inc_by(c.drops(*r));
            }
        }
    }
    reg.register(
        "stack_drops",
        "frames dropped by the stack, by reason",
        drops,
    );
    let rt_names = snaps.first().map(|s| s.runtime.clone()).unwrap_or_default();
    for (i, (name, _)) in rt_names.iter().enumerate() {
        let f = Family::<Labels, Counter>::default();
        for s in snaps {
            if let Some((_, v)) = s.runtime.get(i) {
                f.get_or_create(&labels(s)).inc_by(*v);
            }
        }
        reg.register(
            format!("runtime_{name}"),
            format!("runtime counter {name}"),
            f,
        );
    }
    let mut port_names: Vec<cnet_socket::PortStat> = Vec::new();
    for st in snaps.iter().flat_map(|s| &s.port_stats) {
        if !port_names.iter().any(|n| n.name == st.name) {
            port_names.push(*st);
        }
    }
    for n in &port_names {
        let value = |s: &QueueSnapshot| {
            s.port_stats
                .iter()
                .find(|x| x.name == n.name)
                .map(|x| x.value)
        };
        let (name, help) = (
            format!("port_{}", n.name),
            format!("port statistic {}", n.name),
        );
        if n.gauge {
            let f = Family::<Labels, Gauge>::default();
            for s in snaps {
                if let Some(v) = value(s) {
                    f.get_or_create(&labels(s)).set(v as i64);
                }
            }
            reg.register(name, help, f);
        } else {
            let f = Family::<Labels, Counter>::default();
            for s in snaps {
                if let Some(v) = value(s) {
                    f.get_or_create(&labels(s)).inc_by(v);
                }
            }
            reg.register(name, help, f);
        }
    }
    let gauge =
        |reg: &mut Registry, name: &str, help: &str, v: &dyn Fn(&QueueSnapshot) -> Option<i64>| {
            let f = Family::<Labels, Gauge>::default();
            for s in snaps {
                if let Some(x) = v(s) {
                    f.get_or_create(&labels(s)).set(x);
                }
            }
            reg.register(name, help, f);
        };
    gauge(
        &mut reg,
        "queue_running",
        "1 while the queue's owner thread runs",
        &|s| Some(s.running as i64),
    );
    gauge(
        &mut reg,
        "queue_synced",
        "1 once the queue applied its first netlink snapshot",
        &|s| Some(s.synced as i64),
    );
    gauge(
        &mut reg,
        "pool_frames",
        "frames in the queue's pool",
        &|s| s.pool.map(|p| p.capacity as i64),
    );
    gauge(
        &mut reg,
        "pool_free_frames",
        "free frames in the queue's pool",
        &|s| s.pool.map(|p| p.free as i64),
    );
    gauge(
        &mut reg,
        "pool_alloc_failures",
        "allocations that found the pool empty (monotonic)",
        &|s| s.pool.map(|p| p.alloc_failures as i64),
    );
    gauge(
        &mut reg,
        "stack_frames_held",
        "frames the stack holds (queues, reassembly, buffers)",
        &|s| s.counters.as_ref().map(|_| s.frames_held as i64),
    );
    gauge(
        &mut reg,
        "tcp_connections",
        "TCP connections in the table, every state",
        &|s| s.counters.as_ref().map(|_| s.tcp_connections as i64),
    );
    if let Some(w) = watchdog {
        gauge(
            &mut reg,
            "bad_checksum_alarm",
            "1 while bad UDP/TCP checksums dominate received frames (see cnet doctor)",
            &|s| Some(w.alarm(&s.port, s.queue).0 as i64),
        );
        let warnings = Counter::<u64>::default();
        warnings.inc_by(w.warnings.load(Relaxed));
        reg.register(
            "diagnostic_warnings",
            "warnings the diagnostics gave",
            warnings,
        );
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// Failures only: no queue thread failed. Returns the reasons when some did.
pub fn health(ports: &[PortHandle]) -> Result<(), String> {
    let failed: Vec<String> = ports
        .iter()
        .flat_map(|p| {
            p.rt.status().into_iter().filter_map(move |s| {
                s.failure.map(|f| {
                    format!(
                        "{} queue {}: {f}",
                        p.name,
                        p.queues.get(s.index).copied().unwrap_or(0)
                    )
                })
            })
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

/// Liveness (`/healthz`): no queue failed and every queue thread ticked within `stale`.
pub fn live(ports: &[PortHandle], stale: Duration) -> Result<(), String> {
    health(ports)?;
    let now = std::time::Instant::now();
    let mut failed = Vec::new();
    for p in ports {
        for (i, q) in p.queues.iter().enumerate() {
            if let Some(age) = p.ticks.age(i, now) {
                if age > stale {
                    failed.push(format!(
                        "{} queue {q}: no loop iteration for {} ms",
                        p.name,
                        age.as_millis()
                    ));
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

/// Readiness: every queue runs (its XSK bound) and applied its first netlink snapshot.
pub fn ready(ports: &[PortHandle]) -> Result<(), String> {
    let not: Vec<String> = ports
        .iter()
        .flat_map(|p| readiness(&p.name, &p.queues, &p.rt.status(), p.synced_at_open))
        .collect();
    if not.is_empty() {
        Ok(())
    } else {
        Err(not.join("\n"))
    }
}

/// Readiness of queues from their statuses: each runs and is synced (or was at open); the
/// reasons of those that are not.
pub fn readiness(
    name: &str,
    queues: &[u32],
    status: &[cnet_socket::QueueStatus],
    synced_at_open: bool,
) -> Vec<String> {
    let mut not = Vec::new();
    for s in status {
        let q = queues.get(s.index).copied().unwrap_or(0);
        if !s.running {
            not.push(format!("{name} queue {q}: not running"));
        } else if !s.synced && !synced_at_open {
            not.push(format!("{name} queue {q}: netlink not synced"));
        }
    }
    not
}

/// Largest request head read.
const MAX_REQUEST: usize = 8192;
/// Read and write timeout of a connection.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn respond(s: &mut TcpStream, status: &str, ctype: &str, body: &str, head_only: bool) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    if !head_only {
        let _ = s.write_all(body.as_bytes());
    }
    let _ = s.flush();
}

fn handle(mut s: TcpStream, ports: &[PortHandle], watchdog: Option<&Watchdog>) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= MAX_REQUEST {
            return respond(
                &mut s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "too large\n",
                false,
            );
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            "GET or HEAD\n",
            false,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    let text = "text/plain; charset=utf-8";
    match path {
        "/metrics" => {
            let body = encode(&snapshot(ports), watchdog);
            respond(
                &mut s,
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                &body,
                head_only,
            )
        }
        "/healthz" => match live(ports, TICK_STALE) {
            Ok(()) => respond(&mut s, "200 OK", text, "ok\n", head_only),
            Err(e) => respond(
                &mut s,
                "503 Service Unavailable",
                text,
                &format!("{e}\n"),
                head_only,
            ),
        },
        "/readyz" => match ready(ports) {
            Ok(()) => respond(&mut s, "200 OK", text, "ready\n", head_only),
            Err(e) => respond(
                &mut s,
                "503 Service Unavailable",
                text,
                &format!("{e}\n"),
                head_only,
            ),
        },
        _ => respond(
            &mut s,
            "404 Not Found",
            text,
            "/metrics, /healthz, /readyz\n",
            head_only,
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` from a thread, one request per
/// connection, until `stop` is set.
pub fn serve(
    listener: TcpListener,
    ports: Arc<Vec<PortHandle>>,
    watchdog: Option<Arc<Watchdog>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("cnet-metrics".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        handle(s, &ports, watchdog.as_deref());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics listener: accept failed");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnet_socket::QueueStatus;

    fn st(index: usize, running: bool, synced: bool) -> QueueStatus {
        QueueStatus {
            index,
            running,
            synced,
            failure: None,
        }
    }

    #[test]
    fn readiness_flips_once_every_queue_runs_and_synced() {
        let q = [0, 3];
        let not = readiness("p0", &q, &[st(0, false, false), st(1, true, false)], false);
        assert_eq!(
            not,
            vec!["p0 queue 0: not running", "p0 queue 3: netlink not synced"]
        );
        assert!(readiness("p0", &q, &[st(0, true, true), st(1, true, false)], false).len() == 1);
        assert!(readiness("p0", &q, &[st(0, true, true), st(1, true, true)], false).is_empty());
        assert!(
            readiness("p0", &q, &[st(0, true, false), st(1, true, false)], true).is_empty(),
            "synced at open"
        );
    }

    #[test]
    fn ticks_age_and_turn_stale() {
        let t = Ticks::new(2);
        let now = std::time::Instant::now();
        t.tick_at(0, now);
        t.tick_at(1, now);
        assert!(t.age(0, now).unwrap() <= Duration::from_millis(1));
        let later = now + TICK_STALE + Duration::from_millis(500);
        t.tick_at(1, later);
        assert!(
            t.age(0, later).unwrap() > TICK_STALE,
            "queue 0 stopped ticking"
        );
        assert!(t.age(1, later).unwrap() < TICK_STALE);
        assert_eq!(t.age(2, later), None);
    }

    /// A running, synced queue `p0`/`vb` 0 with these counters and port statistics.
    fn running_queue(c: Counters, port_stats: Vec<cnet_socket::PortStat>) -> QueueSnapshot {
        QueueSnapshot {
            port: "p0".into(),
            iface: "vb".into(),
            queue: 0,
            running: true,
            synced: true,
            failure: None,
            counters: Some(c),
            pool: None,
            frames_held: 0,
            tcp_connections: 0,
            runtime: Vec::new(),
            port_stats,
        }
    }

    #[test]
    fn partial_checksum_drops_are_told_once_with_the_fix() {
        let w = Watchdog::new(0.5, 1_000_000);
        let mut c = Counters::default();
        c.drop(DropReason::UdpPartialChecksum);
        let snap = running_queue(c.clone(), Vec::new());
        let got = w.check(std::slice::from_ref(&snap));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("partial UDP/TCP checksum"));
        assert!(got[0].contains("ethtool -K <peer-interface> tx off"));
        assert!(got[0].contains("accept-partial"));
        assert!(w.check(&[snap]).is_empty(), "once");
        assert_eq!(bad_checksum_drops(&c), 1);
    }

    #[test]
    fn kernel_drops_at_the_socket_are_told_with_cause_and_fix() {
        use cnet_socket::PortStat as S;
        let w = Watchdog::new(0.5, 100);
        let snap = |rx: u64, fill_empty: u64, ring_full: u64| {
            running_queue(
                Counters::default(),
                vec![
                    S::count("xdp_rx_frames", rx),
                    S::count("kernel_rx_fill_ring_empty_descs", fill_empty),
                    S::count("kernel_rx_ring_full", ring_full),
                    S::count("kernel_rx_dropped", 0),
                ],
            )
        };
        assert!(w.check(&[snap(0, 0, 0)]).is_empty());
        // A healthy interval: a few drops among many frames.
        assert!(w.check(&[snap(10_000, 10, 0)]).is_empty());
        // The fill ring ran dry: 9 000 of 10 000 dropped.
        let got = w.check(&[snap(11_000, 9_010, 0)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("dropped 9000 of 10000"), "{}", got[0]);
        assert!(got[0].contains("fill ring was empty"), "{}", got[0]);
        assert!(got[0].contains("raise the port's `frames`"), "{}", got[0]);
        // Then the RX ring overflows.
        let got = w.check(&[snap(11_500, 9_010, 2_000)]);
        assert!(got[0].contains("RX ring was full"), "{got:?}");
        // Too few frames to judge.
        assert!(w.check(&[snap(11_510, 9_010, 2_050)]).is_empty());
    }
}
