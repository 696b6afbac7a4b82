//! The cnet service's set-up: one stack per AF_XDP queue, configured from the kernel over
//! netlink, and the echo apps. The loop itself lives in `cnet-socket` (the runtime's owner loop):
//! [`start_runtime`] runs every queue on its own thread with apps inside the loop and sockets for
//! any other thread; [`Service::run`] runs one queue's loop on the calling thread (benchmarks and
//! tests that keep the host afterwards).
//!
//! Several queues: [`Service::open_all`] opens one instance per queue (shared-nothing, each on its own
//! thread). Netlink events go to every instance. A neighbour one instance learns from the wire is
//! told to its siblings, because the kernel's ARP reply lands on one queue only: without that, an
//! instance whose flows need a neighbour another queue resolved would re-ARP and could miss the
//! reply for ever.

use anyhow::{Context, Result};
use cnet_drivers::host::Host;
use cnet_drivers::impair::{ImpairConfig, ImpairPort};
use cnet_drivers::pcap::PcapPort;
use cnet_drivers::xdp::{XdpConfig, XdpPort};
use cnet_drivers::Port;
use cnet_netlink::{NetlinkSync, Subscription, SyncConfig};
use cnet_socket::{ConfigSource, LoopApp, QueueSetup, Runtime};
use cnet_stack::tcp::{TcpHandle, TcpListener, TcpOpts, TcpSendError, TcpState};
use cnet_stack::{ConfigEvent, Frame, IfAddr, Instant, Stack, StackConfig, UdpHandle};
use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

pub use cnet_socket::{Clock, Idle};

/// Where one service instance runs and what it starts with.
#[derive(Debug)]
pub struct ServiceConfig {
    /// AF_XDP settings (interface, modes, frames...).
    pub xdp: XdpConfig,
    /// Queue this instance serves.
    pub queue: u32,
    /// Addresses to add on top of what the kernel reports (kept across netlink re-dumps).
    pub extra_addrs: Vec<IfAddr>,
    /// Learn addresses, routes and neighbours from the kernel.
    pub netlink: bool,
    /// Seed for the stack's random values.
    pub seed: u64,
}

/// A UDP echo application: every datagram goes back to its sender from the frame it arrived in.
#[derive(Debug)]
pub struct UdpEcho {
    handle: UdpHandle,
    /// Datagrams echoed.
    pub echoed: u64,
}

impl UdpEcho {
    /// Binds the echo port on every address.
    pub fn bind(stack: &mut Stack, port: u16) -> Result<UdpEcho> {
        let handle = stack
            .udp_bind(std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::UNSPECIFIED,
                port,
            ))
            .with_context(|| format!("cannot bind UDP port {port}"))?;
        Ok(UdpEcho { handle, echoed: 0 })
    }

    /// Echoes everything waiting, each reply from the address its request was sent to (RFC 1122
    /// 4.1.3.5; a host with several addresses); a request to a broadcast address is answered
    /// from the route's source.
    pub fn poll(&mut self, stack: &mut Stack, now: Instant) {
        while let Some(d) = stack.udp_recv(self.handle) {
            let to = *d.dst.ip();
            let sent = if stack.is_local_addr(to) {
                stack.udp_send_from(self.handle, d.frame, to, d.src, now)
            } else {
                stack.udp_send(self.handle, d.frame, d.src, now)
            };
            if sent.is_ok() {
                self.echoed += 1;
            }
        }
    }
}

impl LoopApp for UdpEcho {
    fn poll(&mut self, stack: &mut Stack, now: Instant) {
        UdpEcho::poll(self, stack, now);
    }
    fn report(&self) -> String {
        format!("{} datagrams echoed", self.echoed)
    }
}

/// A port a service can run on: an AF_XDP port, possibly wrapped (e.g. recorded to pcap).
pub trait ServicePort: Port + Send {
    /// The AF_XDP port underneath.
    fn xdp(&self) -> &XdpPort;
    /// The AF_XDP port underneath, writable.
    fn xdp_mut(&mut self) -> &mut XdpPort;
}

impl ServicePort for XdpPort {
    fn xdp(&self) -> &XdpPort {
        self
    }
    fn xdp_mut(&mut self) -> &mut XdpPort {
        self
    }
}

impl<P: ServicePort> ServicePort for PcapPort<P> {
    fn xdp(&self) -> &XdpPort {
        self.inner().xdp()
    }
    fn xdp_mut(&mut self) -> &mut XdpPort {
        self.inner_mut().xdp_mut()
    }
}

impl<P: ServicePort> ServicePort for ImpairPort<P> {
    fn xdp(&self) -> &XdpPort {
        self.inner().xdp()
    }
    fn xdp_mut(&mut self) -> &mut XdpPort {
        self.inner_mut().xdp_mut()
    }
}

/// A TCP echo application: every byte received goes back on the same connection, from the frames
/// it arrived in when their headroom allows (zero copy), copied otherwise. Back-pressure: a
/// connection whose send buffer is full keeps its frames until there is room, and reads nothing
/// more meanwhile (the peer's window closes). A connection the peer half-closes is closed once its
/// data is echoed.
///
/// Each poll serves the connections the stack reports as moved (`Stack::tcp_ready_peek`) and
/// new ones; every [`ECHO_SCAN_INTERVAL`] it walks all of them (events a runtime took first,
/// room that came back when memory pressure ended). Walking 16 000 idle connections on every
/// pass left the loop too little time for the connections that had work (issue #12, stalled
/// connections on AF_XDP).
#[derive(Debug)]
pub struct TcpEcho {
    listener: TcpListener,
    conns: Vec<EchoConn>,
    /// Position of each connection in `conns`.
    index: std::collections::HashMap<TcpHandle, usize>,
    /// Connections to serve this pass (reused).
    ready: Vec<TcpHandle>,
    /// When all connections are walked next.
    next_scan: Instant,
    /// Connections accepted.
    pub accepted: u64,
    /// Bytes echoed.
    pub bytes: u64,
    /// Reused for the rare copies (chains, frames without headroom): no allocation per segment.
    scratch: Vec<u8>,
}

/// Drops the first `n` bytes of a frame chain, freeing frames that empties; `None` when nothing
/// is left.
fn chain_advance(pool: &mut cnet_stack::Pool, f: Frame, mut n: usize) -> Option<Frame> {
    let mut cur = f;
    loop {
        let len = pool.len(&cur);
        if n < len {
            pool.pull_front(&cur, n);
            return Some(cur);
        }
        n -= len;
        let next = pool.chain_split(&cur);
        pool.free(cur);
        cur = next?;
    }
}

#[derive(Debug)]
struct EchoConn {
    h: TcpHandle,
    pending: VecDeque<Frame>,
    /// Small payloads waiting for send room, copied out of their frames (see `park`); sent
    /// before `pending`.
    stash: Vec<u8>,
    closing: bool,
}

/// How often [`TcpEcho`] serves every connection, not only those the stack reports as moved.
pub const ECHO_SCAN_INTERVAL: cnet_stack::Duration = cnet_stack::Duration::from_millis(50);

/// Payloads up to this size wait in a connection's stash rather than in their frame.
const STASH_MAX: usize = 512;

/// Keeps data that could not be sent yet. A small payload is copied out so that its frame goes
/// back to the pool: a peer that stops acknowledging must not pin a frame per connection in the
/// app, outside TCP's memory accounting (16 000 stalled connections would hold the whole pool).
/// Called with an empty stash (the loop sends the stash first and stops while it is not empty).
fn park(pool: &mut cnet_stack::Pool, c: &mut EchoConn, f: Frame) {
    let len = pool.chain_len(&f);
    if c.stash.is_empty() && len <= STASH_MAX {
        c.stash.resize(len, 0);
        pool.chain_copy_to(&f, &mut c.stash);
        pool.free(f);
    } else {
        c.pending.push_front(f);
    }
}

impl TcpEcho {
    /// Listens on `port` on every address.
    pub fn listen(stack: &mut Stack, port: u16, backlog: u32) -> Result<TcpEcho> {
        let listener = stack
            .tcp_listen(
                std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port),
                backlog,
                TcpOpts {
                    nodelay: true,
                    ..TcpOpts::default()
                },
            )
            .with_context(|| format!("cannot listen on TCP port {port}"))?;
        Ok(TcpEcho {
            listener,
            conns: Vec::new(),
            index: std::collections::HashMap::new(),
            ready: Vec::new(),
            next_scan: Instant::ZERO,
            accepted: 0,
            bytes: 0,
            scratch: Vec::new(),
        })
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Frees the frames waiting to be echoed (before a frame-accounting check or shutdown).
    pub fn release(&mut self, stack: &mut Stack) {
        for c in &mut self.conns {
            for f in c.pending.drain(..) {
                stack.pool_mut().free(f);
            }
        }
    }

    /// Accepts, echoes, closes: the connections that moved (and new ones), and every
    /// [`ECHO_SCAN_INTERVAL`] all of them.
    pub fn poll(&mut self, stack: &mut Stack, now: Instant) {
        self.ready.clear();
        while let Some(h) = stack.tcp_accept(self.listener) {
            self.accepted += 1;
            self.index.insert(h, self.conns.len());
            self.conns.push(EchoConn {
                h,
                pending: VecDeque::new(),
                stash: Vec::new(),
                closing: false,
            });
            self.ready.push(h);
        }
        if now >= self.next_scan {
            self.next_scan = now + ECHO_SCAN_INTERVAL;
            let mut i = 0;
            while i < self.conns.len() {
                if self.serve_at(i, stack, now) {
                    i += 1;
                }
            }
            return;
        }
        stack.tcp_ready_peek(&mut self.ready);
        for k in 0..self.ready.len() {
            if let Some(&i) = self.index.get(&self.ready[k]) {
                self.serve_at(i, stack, now);
            }
        }
    }

    /// Serves `conns[i]`; false when it is gone (removed, the last one moved to `i`).
    fn serve_at(&mut self, i: usize, stack: &mut Stack, now: Instant) -> bool {
        let c = &mut self.conns[i];
        if Self::serve(c, stack, now, &mut self.bytes, &mut self.scratch) {
            return true;
        }
        let c = self.conns.swap_remove(i);
        self.index.remove(&c.h);
        if let Some(moved) = self.conns.get(i) {
            self.index.insert(moved.h, i);
        }
        for f in c.pending {
            stack.pool_mut().free(f);
        }
        false
    }

    /// Serves one connection; false when it is gone.
    fn serve(
        c: &mut EchoConn,
        stack: &mut Stack,
        now: Instant,
        bytes: &mut u64,
        scratch: &mut Vec<u8>,
    ) -> bool {
        match stack.tcp_state(c.h) {
            None => return false,
            Some(TcpState::Closed) | Some(TcpState::TimeWait) => {
                // Hands the connection back: a closed one is freed, TIME-WAIT runs out alone.
                stack.tcp_close(c.h, now);
                return false;
            }
            _ => {}
        }
        if !c.stash.is_empty() {
            match stack.tcp_send_slice(c.h, &c.stash, now) {
                Ok(n) => {
                    *bytes += n as u64;
                    c.stash.drain(..n);
                }
                Err(_) => c.stash.clear(),
            }
            if !c.stash.is_empty() {
                return true;
            }
        }
        loop {
            let f = match c.pending.pop_front() {
                Some(f) => f,
                None => match stack.tcp_recv(c.h) {
                    Some(f) => f,
                    None => break,
                },
            };
            let len = stack.pool().chain_len(&f) as u64;
            let single = stack.pool().is_single(&f);
            let room = stack.pool().headroom_of(&f) >= cnet_stack::tcp::TCP_HEADROOM;
            if single && room {
                match stack.tcp_send(c.h, f, now) {
                    Ok(()) => *bytes += len,
                    Err((TcpSendError::WouldBlock | TcpSendError::PoolEmpty, f)) => {
                        park(stack.pool_mut(), c, f);
                        break;
                    }
                    Err((_, f)) => {
                        stack.pool_mut().free(f);
                        return true;
                    }
                }
            } else {
                // Too little headroom or a reassembled chain: copy, through a reused buffer.
                if (stack.tcp_can_send(c.h) as u64) < len {
                    park(stack.pool_mut(), c, f);
                    break;
                }
                scratch.clear();
                scratch.resize(len as usize, 0);
                stack.pool().chain_copy_to(&f, scratch);
                match stack.tcp_send_slice(c.h, scratch, now) {
                    Ok(n) => {
                        *bytes += n as u64;
                        // What the send buffer or the pool did not take waits, in its frames.
                        if let Some(rest) = chain_advance(stack.pool_mut(), f, n) {
                            c.pending.push_front(rest);
                            break;
                        }
                    }
                    Err(_) => {
                        stack.pool_mut().free(f);
                        return true;
                    }
                }
            }
        }
        if c.pending.is_empty() && c.stash.is_empty() && !c.closing && stack.tcp_recv_finished(c.h)
        {
            stack.tcp_close(c.h, now);
            c.closing = true;
        }
        true
    }
}

impl LoopApp for TcpEcho {
    fn poll(&mut self, stack: &mut Stack, now: Instant) {
        TcpEcho::poll(self, stack, now);
    }
    fn release(&mut self, stack: &mut Stack) {
        TcpEcho::release(self, stack);
    }
    fn report(&self) -> String {
        format!(
            "{} TCP connections, {} bytes echoed",
            self.accepted, self.bytes
        )
    }
}

/// One stack on one AF_XDP queue, ready to run (on this thread with [`Service::run`], or on a
/// runtime thread through [`Service::into_setup`]).
#[derive(Debug)]
pub struct Service<P = XdpPort> {
    /// The stack and its port.
    pub host: Host<P>,
    source: ServiceSource,
    extra_addrs: Vec<IfAddr>,
    idle: Idle,
    /// The clock the loop runs on.
    pub clock: Clock,
}

/// A service's configuration: netlink events, and the neighbours sibling queues learn (the
/// kernel's ARP reply lands on one queue only: without them, a queue whose flows need a neighbour
/// another queue resolved would re-ARP and could miss the reply for ever).
#[derive(Debug, Default)]
struct ServiceSource {
    sync: Option<NetlinkSync>,
    events: Option<Subscription>,
    siblings: Vec<mpsc::Sender<ConfigEvent>>,
    inbox: Option<mpsc::Receiver<ConfigEvent>>,
}

impl ConfigSource for ServiceSource {
    fn drain(&mut self, out: &mut Vec<ConfigEvent>) {
        if let Some(inbox) = &self.inbox {
            out.extend(inbox.try_iter());
        }
        if let Some(events) = &self.events {
            out.extend(events.drain());
        }
    }
    fn learned(&mut self, n: cnet_stack::Neighbor) {
        for s in &self.siblings {
            let _ = s.send(ConfigEvent::NeighborSet(n));
        }
    }
    fn finish(&mut self) {
        if let Some(s) = self.sync.take() {
            s.stop();
        }
    }
}

/// Retries `open` for up to 2 s while the kernel reports EBUSY: a queue's previous AF_XDP socket
/// releases its buffers a moment after it is closed, so an immediate reopen can find it busy.
fn retry_busy<T>(
    mut open: impl FnMut() -> Result<T, cnet_drivers::xdp::XdpError>,
) -> Result<T, cnet_drivers::xdp::XdpError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match open() {
            Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "AF_XDP queue busy, retrying");
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn is_busy(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EBUSY) {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Starts netlink-sync for the service's interface when configured, with its first snapshot.
fn start_netlink(
    cfg: &ServiceConfig,
) -> Result<(
    Option<NetlinkSync>,
    Option<cnet_stack::config::InterfaceSnapshot>,
)> {
    if !cfg.netlink {
        return Ok((None, None));
    }
    let ifname = &cfg.xdp.ifname;
    let (s, snap) = NetlinkSync::start(SyncConfig::new(ifname))
        .with_context(|| format!("netlink-sync on {ifname}"))?;
    Ok((Some(s), Some(snap)))
}

impl Service<XdpPort> {
    /// Opens the AF_XDP port, starts netlink-sync (in the calling thread's namespace) and builds the
    /// stack from what the kernel reports.
    pub fn open(cfg: ServiceConfig) -> Result<Service> {
        let ifname = cfg.xdp.ifname.clone();
        let (sync, snapshot) = start_netlink(&cfg)?;
        let (port, pool) = retry_busy(|| XdpPort::open(&cfg.xdp, cfg.queue))
            .with_context(|| format!("AF_XDP on {ifname} queue {}", cfg.queue))?;
        let events = sync.as_ref().map(|s| s.subscribe());
        Self::build(&cfg, port, pool, snapshot, sync, events, cfg.seed, &|_| {})
    }

    /// One instance per queue of `cfg.xdp.queues` (sharing one UMEM if so configured), sharing one
    /// netlink-sync, each told of the neighbours the others learn. Move each to its own thread.
    pub fn open_all(cfg: ServiceConfig) -> Result<Vec<Service>> {
        Self::open_all_with(cfg, &|_| {})
    }

    /// [`Service::open_all`], with `tune` applied to each stack's configuration before the stack
    /// is built (limits from a configuration file).
    pub fn open_all_with(
        cfg: ServiceConfig,
        tune: &dyn Fn(&mut StackConfig),
    ) -> Result<Vec<Service>> {
        let ifname = cfg.xdp.ifname.clone();
        let (sync, snapshot) = start_netlink(&cfg)?;
        let ports = retry_busy(|| XdpPort::open_all(&cfg.xdp))
            .with_context(|| format!("AF_XDP on {ifname}"))?;
        let mut sync = sync;
        let mut services = Vec::with_capacity(ports.len());
        for (i, (port, pool)) in ports.into_iter().enumerate() {
            let events = sync.as_ref().map(|s| s.subscribe());
            // The first instance owns the netlink thread; the others hold subscriptions.
            let owner = if i == 0 { sync.take() } else { None };
            let seed = cfg.seed.wrapping_add(i as u64);
            services.push(Self::build(
                &cfg,
                port,
                pool,
                snapshot.clone(),
                owner,
                events,
                seed,
                tune,
            )?);
        }
        let (txs, rxs): (Vec<_>, Vec<_>) = services.iter().map(|_| mpsc::channel()).unzip();
        for (i, (svc, rx)) in services.iter_mut().zip(rxs).enumerate() {
            svc.source.inbox = Some(rx);
            svc.source.siblings = txs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, t)| t.clone())
                .collect();
        }
        Ok(services)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        cfg: &ServiceConfig,
        port: XdpPort,
        pool: cnet_stack::Pool,
        snapshot: Option<cnet_stack::config::InterfaceSnapshot>,
        sync: Option<NetlinkSync>,
        events: Option<Subscription>,
        seed: u64,
        tune: &dyn Fn(&mut StackConfig),
    ) -> Result<Service> {
        let mac = match snapshot.as_ref().and_then(|s| s.mac) {
            Some(m) => m,
            // The port's own `SIOCGIFHWADDR` (in the namespace it was opened in; sysfs shows
            // the namespace it was mounted in, which differs after a bare setns).
            None => port.info().mac,
        };
        let mut sc = StackConfig::new(mac);
        sc.seed = seed;
        // The fill ring keeps this many frames of the pool lent to the kernel.
        sc.pool_driver_frames = cfg.xdp.rings.fill as usize;
        if cfg.xdp.frames as usize <= sc.pool_driver_frames {
            // TCP's memory shares come from the frames not lent to the fill ring: none here.
            tracing::warn!(
                frames = cfg.xdp.frames,
                fill_ring = cfg.xdp.rings.fill,
                "the fill ring can hold every frame of the pool: TCP gets no memory and accepts \
                 no connection; raise the pool's frames above the fill ring size"
            );
        }
        if let Some(mtu) = snapshot.as_ref().and_then(|s| s.mtu) {
            sc.mtu = mtu;
        }
        tune(&mut sc);
        let mut stack = Stack::new(sc, pool);
        let clock = Clock::start();
        if let Some(snap) = snapshot {
            stack.apply_config(ConfigEvent::Snapshot(Box::new(snap)), clock.now());
        }
        for a in &cfg.extra_addrs {
            stack.apply_config(ConfigEvent::AddrAdd(*a), clock.now());
        }
        Ok(Service {
            host: Host::new(stack, port),
            source: ServiceSource {
                sync,
                events,
                ..ServiceSource::default()
            },
            extra_addrs: cfg.extra_addrs.clone(),
            idle: Idle::Poll,
            clock,
        })
    }
}

impl<P: ServicePort> Service<P> {
    /// Replaces the port by `f(port)`, keeping everything else.
    fn map_port<Q: ServicePort>(self, f: impl FnOnce(P) -> Q) -> Service<Q> {
        Service {
            host: self.host.map_port(f),
            source: self.source,
            extra_addrs: self.extra_addrs,
            idle: self.idle,
            clock: self.clock,
        }
    }

    /// Records everything the port sends and receives to a pcap file at `path`.
    pub fn record(self, path: &std::path::Path) -> Result<Service<PcapPort<P>>> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let writer = cnet_drivers::pcap::PcapWriter::new(file)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(self.map_port(|p| PcapPort::new(p, writer)))
    }

    /// Passes the port's traffic through seeded impairments (tests over a bad path).
    pub fn impair(self, cfg: ImpairConfig) -> Result<Service<ImpairPort<P>>> {
        cfg.validate()?;
        Ok(self.map_port(|p| ImpairPort::new(p, cfg).expect("configuration validated above")))
    }

    /// Sets the idle strategy.
    pub fn set_idle(&mut self, idle: Idle) {
        self.idle = idle;
    }

    /// Applies pending configuration (netlink, sibling queues' neighbours) now.
    pub fn apply_events(&mut self, now: Instant) {
        let mut events = Vec::new();
        while let Some(n) = self.host.stack.take_learned_neighbor() {
            self.source.learned(n);
        }
        self.source.drain(&mut events);
        cnet_socket::apply_config(&mut self.host.stack, events, &self.extra_addrs, now);
    }

    /// Runs the loop (`cnet_socket::run_inline`) on this thread until `stop` is set; `app` gets
    /// the stack after every receive step.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut app: impl FnMut(&mut Stack, Instant),
    ) -> Result<()> {
        cnet_socket::run_inline(
            &mut self.host,
            Some(&mut self.source),
            &self.extra_addrs,
            stop,
            self.idle,
            &mut app,
        )?;
        Ok(())
    }

    /// Stops netlink-sync and frees what the stack holds.
    pub fn shutdown(mut self) -> Host<P> {
        self.source.finish();
        self.host.release_all();
        self.host
    }
}

impl<P: ServicePort + 'static> Service<P> {
    /// The queue as a runtime's set-up, with `apps` run inside its loop.
    pub fn into_setup(self, apps: Vec<Box<dyn LoopApp>>) -> QueueSetup<P> {
        // With netlink, `build` applied the first snapshot: the queue starts synced.
        let synced = self.source.events.is_some();
        QueueSetup {
            host: self.host,
            config: Some(Box::new(self.source)),
            extra_addrs: self.extra_addrs,
            apps,
            describe_port: Some(describe_port::<P>),
            port_stats: Some(port_stats::<P>),
            synced,
        }
    }
}

/// The AF_XDP socket's counters, the kernel's statistics of the socket (`XDP_STATISTICS`: what
/// the kernel dropped before cnet saw it) and the frames the port holds, published by the queue's
/// owner thread for `/metrics` and `cnet stats`.
fn port_stats<P: ServicePort>(p: &P) -> Vec<cnet_socket::PortStat> {
    use cnet_socket::PortStat as S;
    let x = p.xdp();
    let c = x.counters();
    let mut v = vec![
        S::count("xdp_rx_frames", c.rx_frames),
        S::count("xdp_tx_frames", c.tx_frames),
        S::count("xdp_tx_completed", c.tx_completed),
        S::count("xdp_fill_ring_empty", c.fill_ring_empty),
        S::count("xdp_fill_pool_empty", c.fill_pool_empty),
        S::count("xdp_tx_ring_full", c.tx_ring_full),
        S::count("xdp_rx_wakeups", c.rx_wakeups),
        S::count("xdp_tx_kicks", c.tx_kicks),
        S::count("xdp_tx_dropped", c.tx_dropped),
        S::count("xdp_bad_descs", c.bad_descs),
        S::level("xdp_frames_held", p.frames_held() as u64),
    ];
    if let Ok(k) = x.kernel_stats() {
        v.extend([
            S::count("kernel_rx_dropped", k.rx_dropped),
            S::count("kernel_rx_invalid_descs", k.rx_invalid_descs),
            S::count("kernel_tx_invalid_descs", k.tx_invalid_descs),
            S::count("kernel_rx_ring_full", k.rx_ring_full),
            S::count(
                "kernel_rx_fill_ring_empty_descs",
                k.rx_fill_ring_empty_descs,
            ),
            S::count("kernel_tx_ring_empty_descs", k.tx_ring_empty_descs),
        ]);
    }
    v
}

/// The AF_XDP socket's and the kernel's counters, for a stop report.
fn describe_port<P: ServicePort>(p: &P) -> String {
    let mut s = format!("  xdp: {:?}\n", p.xdp().counters());
    if let Ok(k) = p.xdp().kernel_stats() {
        s.push_str(&format!("  kernel: {k:?}\n"));
    }
    s
}

/// Opens every queue of `cfg` (AF_XDP, netlink) and starts a runtime with one owner thread per
/// queue; `apps(stack)` builds each queue's in-loop apps (binding their ports on its stack).
pub fn start_runtime(
    cfg: ServiceConfig,
    limits: cnet_socket::Limits,
    apps: impl FnMut(&mut Stack) -> Result<Vec<Box<dyn LoopApp>>>,
) -> Result<Runtime> {
    start_runtime_with(cfg, &|_| {}, limits, apps)
}

/// [`start_runtime`], with `tune` applied to each stack's configuration before the stack is
/// built (see [`Service::open_all_with`]).
pub fn start_runtime_with(
    cfg: ServiceConfig,
    tune: &dyn Fn(&mut StackConfig),
    limits: cnet_socket::Limits,
    apps: impl FnMut(&mut Stack) -> Result<Vec<Box<dyn LoopApp>>>,
) -> Result<Runtime> {
    start_runtime_on_open(cfg, tune, limits, apps, &mut |_| Ok(()))
}

/// [`start_runtime_with`], calling `on_open(xsk)` with each queue's AF_XDP socket, in queue
/// order, after the queue is open and before any queue thread starts (busy polling configured
/// through the AF_XDP device plugin, see [`crate::run::start_ports`]). An error stops the start.
pub fn start_runtime_on_open(
    cfg: ServiceConfig,
    tune: &dyn Fn(&mut StackConfig),
    limits: cnet_socket::Limits,
    mut apps: impl FnMut(&mut Stack) -> Result<Vec<Box<dyn LoopApp>>>,
    on_open: &mut dyn FnMut(std::os::fd::BorrowedFd<'_>) -> Result<()>,
) -> Result<Runtime> {
    let mut setups = Vec::new();
    for mut svc in Service::open_all_with(cfg, tune)? {
        if let Some(fd) = svc.host.port.wait_fd() {
            // SAFETY: the port owns `fd` and outlives this borrow (`svc` is alive until the end
            // of the iteration; `on_open` does not keep it).
            on_open(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })?;
        }
        let a = apps(&mut svc.host.stack)?;
        setups.push(svc.into_setup(a));
    }
    Ok(Runtime::start(setups, limits)?)
}

/// [`start_runtime`] with no in-loop app, each queue's port passed through seeded impairments
/// when `impair` is given ([`Service::impair`]): loss and corruption around cnet's port over a
/// real device, for the QUIC apps' tests (issue #15).
pub fn start_runtime_impaired(
    cfg: ServiceConfig,
    impair: Option<ImpairConfig>,
    limits: cnet_socket::Limits,
) -> Result<Runtime> {
    let Some(imp) = impair else {
        return start_runtime(cfg, limits, |_| Ok(Vec::new()));
    };
    // Before any device is opened: bad knobs are an error, not a half-started service.
    imp.validate().context("impairments")?;
    let mut setups = Vec::new();
    for svc in Service::open_all_with(cfg, &|_| {})? {
        setups.push(svc.impair(imp.clone())?.into_setup(Vec::new()));
    }
    Ok(Runtime::start(setups, limits)?)
}

/// A stop flag set by SIGINT or SIGTERM.
pub fn stop_on_signals() -> Result<std::sync::Arc<AtomicBool>> {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    Ok(stop)
}

/// The stack's counters and the port's, one per line.
pub fn report<P: ServicePort>(host: &Host<P>) -> String {
    cnet_socket::counter_lines(host.stack.counters()) + &describe_port(&host.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_advance_drops_whole_frames_then_part_of_one() {
        let mut pool = cnet_stack::Pool::new(4, 256, 0).unwrap();
        let head = pool.alloc_from(b"abc").unwrap();
        let b = pool.alloc_from(b"defg").unwrap();
        pool.chain_append(&head, b);
        let rest = chain_advance(&mut pool, head, 5).expect("two bytes left");
        let mut out = [0u8; 8];
        let n = pool.chain_copy_to(&rest, &mut out);
        assert_eq!(&out[..n], b"fg");
        assert!(chain_advance(&mut pool, rest, 2).is_none());
        assert_eq!(pool.available(), 4, "every frame freed");
        let f = pool.alloc_from(b"xy").unwrap();
        let f = chain_advance(&mut pool, f, 0).expect("nothing taken");
        assert_eq!(pool.data(&f), b"xy");
        pool.free(f);
    }
}
