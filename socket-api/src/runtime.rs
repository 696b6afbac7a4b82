//! The runtime: one owner thread per queue, each running its port, its stack, its configuration
//! source (netlink) and the sockets it serves, shared nothing.
//!
//! Per iteration of an owner thread: configuration events → frames given back by applications →
//! commands from other threads → receive, process, transmit (`Host::poll`) → in-loop apps
//! ([`LoopApp`], run to completion with `&mut Stack`) → serve the sockets that moved → lend spare
//! frames → flush output. When nothing moved it sleeps in `poll(2)` on its eventfd and the port's
//! descriptor (AF_XDP) until a frame, a command or the stack's next deadline; a port without a
//! descriptor (the in-memory link) is polled every 200 µs instead.
//!
//! Failure: a panic or a port error on an owner thread marks the queue failed with its reason;
//! every socket of that queue reports [`crate::Error::RuntimeDown`] with it, every waiter is
//! woken, and [`Runtime::join`] returns the reason. Nothing hangs.

use crate::error::{Error, Result};
use crate::owner::Owner;
use crate::queue::{QueueShared, FAILED, RUNNING, STOPPED};
use cnet_drivers::host::Host;
use cnet_drivers::Port;
use cnet_stack::buf::PoolStats;
use cnet_stack::{ConfigEvent, Counters, IfAddr, Instant, Stack};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A monotonic clock mapped onto the stack's `Instant`.
#[derive(Debug, Clone, Copy)]
pub struct Clock(std::time::Instant);

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Clock {
        Clock(std::time::Instant::now())
    }

    /// Microseconds since the epoch, as the stack's `Instant`.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as u64)
    }
}

/// What an owner thread does when an iteration moved nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Idle {
    /// Sleep in `poll(2)` until a frame, a command or the next deadline.
    #[default]
    Poll,
    /// Spin: lowest latency, one core at 100 %.
    Spin,
}

/// An application run inside the owner thread's loop, with direct access to the stack (the
/// zero-overhead path, like CNDP's chnl callbacks): no queue, no wake-up, no thread switch.
pub trait LoopApp: Send {
    /// Called every iteration, after received frames were processed.
    fn poll(&mut self, stack: &mut Stack, now: Instant);
    /// Called once when the thread stops: give back every frame held.
    fn release(&mut self, _stack: &mut Stack) {}
    /// One line about what it did, for the stop report.
    fn report(&self) -> String {
        String::new()
    }
}

/// A source of configuration events for one queue's stack (netlink-sync's subscription).
pub trait ConfigSource: Send {
    /// Appends the events queued now.
    fn drain(&mut self, out: &mut Vec<ConfigEvent>);
    /// A neighbour this queue learnt from the wire (to tell sibling queues run elsewhere).
    fn learned(&mut self, _n: cnet_stack::Neighbor) {}
    /// Called once when the owner thread stops (e.g. stop the netlink thread it owns).
    fn finish(&mut self) {}
}

/// Netlink-sync as a configuration source: a subscription, and for one queue the sync itself.
#[derive(Debug)]
pub struct NetlinkSource {
    /// The subscription.
    pub sub: cnet_netlink::Subscription,
    /// The sync thread, owned by one queue (stopped when it stops).
    pub sync: Option<cnet_netlink::NetlinkSync>,
}

impl ConfigSource for NetlinkSource {
    fn drain(&mut self, out: &mut Vec<ConfigEvent>) {
        out.extend(self.sub.drain());
    }
    fn finish(&mut self) {
        if let Some(s) = self.sync.take() {
            s.stop();
        }
    }
}

/// Everything one queue's owner thread starts with.
pub struct QueueSetup<P> {
    /// Its stack and port.
    pub host: Host<P>,
    /// Where its configuration changes come from (`None`: static configuration).
    pub config: Option<Box<dyn ConfigSource>>,
    /// Addresses kept across configuration snapshots (given on a command line or in a config).
    pub extra_addrs: Vec<IfAddr>,
    /// Apps run inside the loop.
    pub apps: Vec<Box<dyn LoopApp>>,
    /// Describes the port's own counters for the stop report (e.g. AF_XDP ring statistics).
    pub describe_port: Option<fn(&P) -> String>,
    /// The port's live statistics as named values (driver counters, the kernel's AF_XDP
    /// statistics, ring levels): the owner thread calls it every [`PORT_STATS_EVERY`] and
    /// publishes the result for [`Runtime::port_stats`] (metrics, `cnet stats`). A port's
    /// statistics can only be read on the thread that owns it; publishing them on a timer keeps
    /// metrics readers off the data path (one time comparison per loop iteration).
    pub port_stats: Option<fn(&P) -> Vec<PortStat>>,
    /// The stack already holds its first configuration snapshot (applied before the start):
    /// the queue is synced from the start. Always true without a configuration source.
    pub synced: bool,
}

impl<P> QueueSetup<P> {
    /// A queue with a stack and a port, nothing else.
    pub fn new(host: Host<P>) -> QueueSetup<P> {
        QueueSetup {
            host,
            config: None,
            extra_addrs: Vec::new(),
            apps: Vec::new(),
            describe_port: None,
            port_stats: None,
            synced: false,
        }
    }
}

/// One statistic of a port ([`QueueSetup::port_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortStat {
    /// Name, `snake_case` (exported as `cnet_port_<name>`).
    pub name: &'static str,
    /// Value.
    pub value: u64,
    /// A level (ring fill, frames held) rather than a monotonic count.
    pub gauge: bool,
}

impl PortStat {
    /// A monotonic count.
    pub const fn count(name: &'static str, value: u64) -> PortStat {
        PortStat {
            name,
            value,
            gauge: false,
        }
    }

    /// A level.
    pub const fn level(name: &'static str, value: u64) -> PortStat {
        PortStat {
            name,
            value,
            gauge: true,
        }
    }
}

/// How often an owner thread publishes its port's statistics ([`QueueSetup::port_stats`]).
pub const PORT_STATS_EVERY: core::time::Duration = core::time::Duration::from_millis(250);

/// Runtime limits and behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Idle strategy.
    pub idle: Idle,
    /// Free frames each queue lends to other threads for sending (the depth of its spare queue).
    pub spare_frames: usize,
    /// Received bytes a TCP stream's application queue holds before the owner leaves data in the
    /// stack (whose window then closes).
    pub stream_rx_bytes: usize,
    /// Bytes a TCP stream's writers may hand over beyond what the stack's send buffer took.
    pub stream_tx_bytes: usize,
    /// Datagrams a UDP socket's application queue holds (beyond them the stack's own queue fills,
    /// then drops are counted as `udp_queue_full`).
    pub udp_rx_datagrams: usize,
    /// Datagrams a UDP socket's senders may have in flight to the owner thread.
    pub udp_tx_datagrams: usize,
    /// Commands handled per iteration at most (so the port is never starved).
    pub cmds_per_iteration: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Idle::Poll,
            spare_frames: 256,
            stream_rx_bytes: 256 * 1024,
            stream_tx_bytes: 256 * 1024,
            udp_rx_datagrams: 1024,
            udp_tx_datagrams: 256,
            cmds_per_iteration: 1024,
        }
    }
}

/// What a queue reports when its thread ended.
#[derive(Debug, Clone)]
pub struct QueueReport {
    /// Queue index.
    pub index: usize,
    /// The stack's counters.
    pub counters: Counters,
    /// Pool statistics after everything was released.
    pub pool: PoolStats,
    /// Frames still lent to application threads (dropping those buffers gives them back).
    pub frames_lent: usize,
    /// Frames neither free, nor lent, nor held by the port: an accounting bug if not 0.
    pub frames_lost: usize,
    /// What the in-loop apps report.
    pub apps: Vec<String>,
    /// The port's own counters, when the setup said how to describe them.
    pub port: String,
    /// Why the thread failed, if it did.
    pub failure: Option<String>,
}

/// A stack's non-zero counters, one `  name value` line each.
pub fn counter_lines(c: &Counters) -> String {
    c.nonzero()
        .map(|(k, v)| format!("  {k:<30} {v}\n"))
        .collect()
}

impl QueueReport {
    /// The stack's non-zero counters, one per line, then the port's own counters.
    pub fn counter_lines(&self) -> String {
        counter_lines(&self.counters) + &self.port
    }

    /// A report with nothing counted yet.
    fn empty(index: usize, failure: Option<String>) -> QueueReport {
        QueueReport {
            index,
            counters: Counters::default(),
            pool: PoolStats::default(),
            frames_lent: 0,
            frames_lost: 0,
            apps: Vec::new(),
            port: String::new(),
            failure,
        }
    }
}

/// A queue's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStatus {
    /// Queue index.
    pub index: usize,
    /// The owner thread runs.
    pub running: bool,
    /// The first configuration snapshot was applied (or there is no configuration source).
    pub synced: bool,
    /// Why it stopped, if it failed.
    pub failure: Option<String>,
}

struct RtInner {
    queues: Vec<Arc<QueueShared>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<QueueReport>>>,
    limits: Limits,
}

impl Drop for RtInner {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        for q in &self.queues {
            q.wake();
        }
        if let Ok(mut t) = self.threads.lock() {
            for h in t.drain(..) {
                let _ = h.join();
            }
        }
    }
}

/// The running stacks: a cheap, cloneable handle. The threads stop when [`Runtime::stop`] is
/// called or the last handle is dropped (sockets do not keep them alive; theirs then report
/// [`Error::RuntimeDown`]).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RtInner>,
}

impl core::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Runtime")
            .field("queues", &self.inner.queues.len())
            .finish()
    }
}

/// Offset of send data in a frame: room for Ethernet, IPv4 and the largest TCP header.
fn send_offset(stack: &Stack) -> usize {
    stack.pool().headroom().max(cnet_stack::tcp::TCP_HEADROOM)
}

impl Runtime {
    /// Starts one owner thread per queue. Neighbours one queue learns from the wire are told to
    /// the others (the kernel's ARP reply lands on one queue only).
    pub fn start<P: Port + Send + 'static>(
        setups: Vec<QueueSetup<P>>,
        limits: Limits,
    ) -> Result<Runtime> {
        if setups.is_empty() {
            return Err(Error::InvalidInput("a runtime needs at least one queue"));
        }
        let mut setups = setups;
        let mut queues = Vec::with_capacity(setups.len());
        for (i, s) in setups.iter_mut().enumerate() {
            let off = send_offset(&s.host.stack);
            queues.push(Arc::new(QueueShared::new(
                i,
                s.host.stack.pool_mut(),
                off,
                limits.spare_frames,
            )?));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(setups.len());
        for (i, setup) in setups.into_iter().enumerate() {
            let q = queues[i].clone();
            let siblings: Vec<_> = queues.iter().filter(|s| s.index != i).cloned().collect();
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("cnet-q{i}"))
                .spawn(move || owner_thread(setup, q, siblings, stop, limits))
                .map_err(|_| Error::NoResources("threads"))?;
            threads.push(t);
        }
        Ok(Runtime {
            inner: Arc::new(RtInner {
                queues,
                stop,
                threads: Mutex::new(threads),
                limits,
            }),
        })
    }

    /// Number of queues.
    pub fn queues(&self) -> usize {
        self.inner.queues.len()
    }

    pub(crate) fn queue(&self, i: usize) -> &Arc<QueueShared> {
        &self.inner.queues[i % self.inner.queues.len()]
    }

    pub(crate) fn all_queues(&self) -> &[Arc<QueueShared>] {
        &self.inner.queues
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Each queue's status.
    pub fn status(&self) -> Vec<QueueStatus> {
        self.inner
            .queues
            .iter()
            .map(|q| QueueStatus {
                index: q.index,
                running: q.state() == RUNNING,
                synced: q.synced.load(SeqCst),
                failure: q
                    .alive()
                    .err()
                    .filter(|_| q.state() == FAILED)
                    .map(|e| e.to_string()),
            })
            .collect()
    }

    /// The runtime's own counters of queue `i`.
    pub fn counters(&self, i: usize) -> &crate::queue::RuntimeCounters {
        &self.queue(i).counters
    }

    /// Queue `i`'s port statistics as its owner thread last published them (at most
    /// [`PORT_STATS_EVERY`] old while it runs; the last values once it stopped). Empty when the
    /// queue has no [`QueueSetup::port_stats`].
    pub fn port_stats(&self, i: usize) -> Vec<PortStat> {
        self.queue(i)
            .port_stats
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Waits until every queue runs and applied its first configuration snapshot, at most
    /// `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let mut ready = true;
            for q in &self.inner.queues {
                q.alive()?;
                ready &= q.state() == RUNNING && q.synced.load(SeqCst);
            }
            if ready {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs `f` with queue `i`'s stack on its owner thread and returns its result (control
    /// operations: configuration, counters, a look at the stack).
    pub fn with_stack<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce(&mut Stack, Instant) -> T + Send + 'static,
    ) -> Result<T> {
        crate::queue::call_blocking(self.queue(i), move |s, _, now| f(s, now))
    }

    /// Asks every owner thread to stop (returns at once; see [`Runtime::join`]).
    pub fn stop(&self) {
        self.inner.stop.store(true, SeqCst);
        for q in &self.inner.queues {
            q.wake();
        }
    }

    /// Stops and waits for every owner thread; their reports, in queue order. A second call
    /// returns nothing.
    pub fn join(&self) -> Vec<QueueReport> {
        self.stop();
        let threads: Vec<_> = match self.inner.threads.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        threads
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.join().unwrap_or_else(|_| {
                    QueueReport::empty(i, Some("owner thread panicked outside its loop".into()))
                })
            })
            .collect()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

struct Loop<'a, P> {
    host: &'a mut Host<P>,
    owner: Owner,
    config: Option<&'a mut dyn ConfigSource>,
    extra_addrs: &'a [IfAddr],
    app: &'a mut dyn FnMut(&mut Stack, Instant),
    siblings: Vec<Arc<QueueShared>>,
    events: Vec<ConfigEvent>,
    clock: Clock,
    port_stats: Option<fn(&P) -> Vec<PortStat>>,
    next_port_stats: Instant,
}

fn owner_thread<P: Port + Send + 'static>(
    setup: QueueSetup<P>,
    q: Arc<QueueShared>,
    siblings: Vec<Arc<QueueShared>>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) -> QueueReport {
    let QueueSetup {
        mut host,
        mut config,
        extra_addrs,
        mut apps,
        describe_port,
        port_stats,
        synced,
    } = setup;
    if config.is_none() || synced {
        q.synced.store(true, SeqCst);
    }
    let mut run_apps = |stack: &mut Stack, now: Instant| {
        for a in apps.iter_mut() {
            a.poll(stack, now);
        }
    };
    let mut lp = Loop {
        host: &mut host,
        owner: Owner::new(q.clone(), limits),
        config: config.as_deref_mut().map(|c| c as &mut dyn ConfigSource),
        extra_addrs: &extra_addrs,
        app: &mut run_apps,
        siblings,
        events: Vec::new(),
        clock: Clock::start(),
        port_stats,
        next_port_stats: Instant::ZERO,
    };
    q.set_state(RUNNING, None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lp.run(&stop, &limits)));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("queue {}: port error: {e}", q.index)),
        Err(p) => Some(format!(
            "queue {}: panicked: {}",
            q.index,
            panic_message(&*p)
        )),
    };
    if let Some(f) = &failure {
        tracing::error!(queue = q.index, "{f}");
    }
    q.set_state(
        if failure.is_some() { FAILED } else { STOPPED },
        failure.clone(),
    );
    // The port's last figures stay readable after the stop.
    lp.next_port_stats = Instant::ZERO;
    lp.publish_port_stats(&q, Instant::ZERO);
    // After the state change: commands that raced with it are dropped here, their replies
    // closed; every socket is told.
    let mut report = lp.finish(failure);
    drop(lp);
    for a in apps.iter_mut() {
        a.release(&mut host.stack);
    }
    report.apps = apps.iter().map(|a| a.report()).collect();
    if let Some(d) = describe_port {
        report.port = d(&host.port);
    }
    host.release_all();
    account(&mut report, &host, &q);
    if let Ok(mut g) = q.graveyard.lock() {
        *g = Some(Box::new(host));
    }
    report
}

/// Fills the frame accounting of a report once everything was released.
fn account<P: Port>(report: &mut QueueReport, host: &Host<P>, q: &QueueShared) {
    let lent = q.frames_out.load(SeqCst);
    let pool = host.stack.pool().stats();
    let accounted = pool.free + host.port.frames_held() + lent;
    report.pool = pool;
    report.frames_lent = lent;
    report.frames_lost = pool.capacity.saturating_sub(accounted);
    report.counters = host.stack.counters().clone();
}

/// Applies configuration events to a stack; addresses in `extra_addrs` survive snapshots (a
/// re-dump that does not list them). True if a snapshot was among the events.
pub fn apply_config(
    stack: &mut Stack,
    events: impl IntoIterator<Item = ConfigEvent>,
    extra_addrs: &[IfAddr],
    now: Instant,
) -> bool {
    let mut synced = false;
    for ev in events {
        tracing::debug!(?ev, "configuration event");
        let snapshot = matches!(ev, ConfigEvent::Snapshot(_));
        stack.apply_config(ev, now);
        if snapshot {
            for a in extra_addrs {
                if !stack.addrs().contains(a) {
                    stack.apply_config(ConfigEvent::AddrAdd(*a), now);
                }
            }
            synced = true;
        }
    }
    synced
}

/// Runs the owner loop on the calling thread with `app` in it, until `stop` is set: the same
/// loop as a [`Runtime`]'s queue thread, for a caller that keeps its host (benchmarks, tests,
/// apps that want the stack back afterwards). No other thread can reach this stack's sockets.
pub fn run_inline<'a, P: Port>(
    host: &'a mut Host<P>,
    config: Option<&'a mut (dyn ConfigSource + 'a)>,
    extra_addrs: &'a [IfAddr],
    stop: &AtomicBool,
    idle: Idle,
    app: &'a mut (dyn FnMut(&mut Stack, Instant) + 'a),
) -> core::result::Result<(), cnet_drivers::PortError> {
    let limits = Limits {
        idle,
        spare_frames: 1,
        ..Limits::default()
    };
    let q = Arc::new(
        QueueShared::new(0, host.stack.pool_mut(), 0, 1)
            .map_err(|e| cnet_drivers::PortError::Unavailable(e.to_string()))?,
    );
    let mut lp = Loop {
        host,
        owner: Owner::new(q, limits),
        config,
        extra_addrs,
        app,
        siblings: Vec::new(),
        events: Vec::new(),
        clock: Clock::start(),
        port_stats: None,
        next_port_stats: Instant::ZERO,
    };
    let r = lp.run(stop, &limits);
    // Nothing else can hold this queue's frames: take back the one spare lent.
    lp.owner.shutdown(&mut lp.host.stack);
    r
}

impl<P: Port> Loop<'_, P> {
    fn run(
        &mut self,
        stop: &AtomicBool,
        limits: &Limits,
    ) -> core::result::Result<(), cnet_drivers::PortError> {
        let q = self.owner.q.clone();
        while !stop.load(SeqCst) {
            let now = self.clock.now();
            self.apply_config(now);
            let mut moved = self.owner.reclaim(&mut self.host.stack);
            moved += self
                .owner
                .handle_cmds(&mut self.host.stack, now, limits.cmds_per_iteration);
            let stats = self.host.poll(now)?;
            self.publish_port_stats(&q, now);
            (self.app)(&mut self.host.stack, now);
            self.owner.serve_ready(&mut self.host.stack, now);
            self.owner.refill_spare(&mut self.host.stack);
            let sent = self.host.flush(now)?;
            // Output of the flush may have changed sockets (acknowledged data, new state).
            self.owner.serve_ready(&mut self.host.stack, now);
            if moved > 0 || !stats.is_idle() || sent > 0 || self.host.tx_waiting() > 0 {
                continue;
            }
            if limits.idle == Idle::Spin {
                core::hint::spin_loop();
                continue;
            }
            self.sleep(&q);
        }
        Ok(())
    }

    /// Publishes the port's statistics when they are due ([`QueueSetup::port_stats`]).
    fn publish_port_stats(&mut self, q: &QueueShared, now: Instant) {
        let Some(f) = self.port_stats else { return };
        if now < self.next_port_stats {
            return;
        }
        self.next_port_stats = now + PORT_STATS_EVERY;
        let v = f(&self.host.port);
        if let Ok(mut slot) = q.port_stats.lock() {
            *slot = v;
        }
    }

    /// Sleeps until a frame, a command or the next deadline.
    fn sleep(&mut self, q: &QueueShared) {
        q.sleeping.store(true, SeqCst);
        if q.has_cmds() || !q.returned.is_empty() {
            q.sleeping.store(false, SeqCst);
            return;
        }
        let now = self.clock.now();
        let cap = if self.host.port.wait_fd().is_some() {
            Duration::from_millis(10)
        } else {
            Duration::from_micros(200)
        };
        let wait = self.host.poll_timeout().map_or(cap, |t| t - now).min(cap);
        if !wait.is_zero() {
            let mut fds = [
                libc::pollfd {
                    fd: q.wake_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.host.port.wait_fd().unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let ts = libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            };
            // SAFETY: two valid pollfd entries (a negative fd is ignored by the kernel) and a
            // valid timespec; no signal mask.
            unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, core::ptr::null()) };
        }
        q.sleeping.store(false, SeqCst);
        q.drain_wake();
    }

    /// Applies configuration events; shares neighbours learnt here with the sibling queues.
    fn apply_config(&mut self, now: Instant) {
        let stack = &mut self.host.stack;
        while let Some(n) = stack.take_learned_neighbor() {
            for s in &self.siblings {
                let _ = s.submit(crate::queue::Cmd::Config(ConfigEvent::NeighborSet(n)));
            }
            if let Some(c) = &mut self.config {
                c.learned(n);
            }
        }
        let Some(src) = &mut self.config else { return };
        src.drain(&mut self.events);
        if apply_config(stack, self.events.drain(..), self.extra_addrs, now) {
            self.owner.q.synced.store(true, SeqCst);
        }
    }

    /// Tells every socket the queue is down and takes back every frame the loop holds (the
    /// caller releases apps and the stack, then accounts).
    fn finish(&mut self, failure: Option<String>) -> QueueReport {
        self.owner.shutdown(&mut self.host.stack);
        if let Some(c) = &mut self.config {
            c.finish();
        }
        QueueReport::empty(self.owner.q.index, failure)
    }
}
