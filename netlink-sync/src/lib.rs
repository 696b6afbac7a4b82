//! # cnet-netlink: learn links, addresses, routes and neighbours from Linux
//!
//! The `cnet` service takes no addresses from its config: it serves one interface by *name* and
//! learns everything else from the kernel. This crate turns rtnetlink state into the stack's
//! contract types ([`ConfigEvent`], [`InterfaceSnapshot`]).
//!
//! ## Layers
//! | module | does | IO |
//! |---|---|---|
//! | [`decode`] | netlink bytes or messages → [`ConfigEvent`]s, per-kind classification rules | none |
//! | [`state`] | [`FoldedState`]: events folded into a table; diffs and snapshots | none |
//! | `sync` | the sync thread: dump + multicast sockets, re-dumps, fan-out | netlink |
//! | [`netns`] | run a thread inside a network namespace | `setns` |
//!
//! ## Why a plain thread on `netlink-sys`, not `rtnetlink`'s async API
//! The work is one socket that is read when readable plus an occasional dump: a `poll(2)` loop
//! says that directly, needs no runtime, and lets us control what `rtnetlink` hides: the receive
//! buffer size (`SO_RCVBUFFORCE`), seeing `ENOBUFS` as an error to act on, `MSG_TRUNC`, and
//! `NLM_F_DUMP_INTR` on dumps. Messages are decoded with `netlink-packet-route`, the crate
//! `rtnetlink` itself builds on.
//!
//! ## Time contract
//! A change is delivered as soon as the kernel's notification is read: the thread sleeps in
//! `poll(2)` and decodes each datagram as it arrives, so propagation is the scheduling latency of
//! one thread plus microseconds of decoding (measured by the namespace tests; see the crate's
//! test output). A re-dump (after an overrun, a link going up or down, an address removal or a new
//! link) costs one dump of links, IPv4 addresses, routes and neighbours: O(size of those tables).
//! Subscribers apply events between bursts; [`Subscription`] queues are unbounded, so a subscriber
//! must drain its queue (its stack does so every loop iteration).
//!
//! ## Usage
//! ```no_run
//! use cnet_netlink::{NetlinkSync, SyncConfig};
//! let (sync, snapshot) = NetlinkSync::start(SyncConfig::new("eth0"))?;
//! let sub = sync.subscribe(); // one per stack instance; first event: a Snapshot
//! # let _ = snapshot;
//! for event in sub.drain() {
//!     // stack.apply_config(event)
//! #   let _ = event;
//! }
//! # Ok::<(), cnet_netlink::SyncError>(())
//! ```

#![deny(missing_docs)]

pub mod decode;
pub mod netns;
pub mod state;
mod sync;

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use cnet_stack::config::InterfaceSnapshot;
pub use cnet_stack::ConfigEvent;

pub use decode::{Decoded, Decoder, Dump, Resync, RT_TABLE_MAIN};
pub use netns::{enter_netns, netns_path, run_in_netns};
pub use state::{FoldedState, RouteKey};

use sync::{lock, Hub, Io};

/// What to synchronise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Name of the interface the stack serves. Names, not indices, identify it: an ifindex is only
    /// unique within one network namespace and changes when the interface is recreated.
    pub ifname: String,
    /// Routing tables whose routes are kept (`RTA_TABLE` ids). Default: main (254).
    pub tables: Vec<u32>,
    /// Network namespace to open the netlink sockets in (e.g. `/run/netns/NAME`); `None`: the
    /// caller's.
    pub netns: Option<PathBuf>,
    /// Receive buffer of the notification socket in bytes (`SO_RCVBUFFORCE` when privileged,
    /// else `SO_RCVBUF`, capped by `net.core.rmem_max`). A larger buffer makes overruns, and so
    /// re-dumps, rarer. Default 32 MiB.
    pub rcvbuf: usize,
}

impl SyncConfig {
    /// Defaults for interface `ifname`: main table, current namespace, 32 MiB buffer.
    pub fn new(ifname: impl Into<String>) -> Self {
        SyncConfig {
            ifname: ifname.into(),
            tables: vec![RT_TABLE_MAIN],
            netns: None,
            rcvbuf: 32 << 20,
        }
    }
}

/// Why [`NetlinkSync::start`] failed, or why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// No interface of that name exists in the sync thread's network namespace.
    #[error("interface {0:?} does not exist (check the name and the network namespace)")]
    NoSuchInterface(String),
    /// The network namespace could not be entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A netlink socket could not be created or set up.
    #[error("netlink socket setup failed: {0}")]
    Socket(#[source] io::Error),
    /// A dump request failed.
    #[error("netlink {what} dump failed: {source}")]
    Dump {
        /// Which dump (link, address, route, neighbour).
        what: &'static str,
        /// The OS or kernel error.
        source: io::Error,
    },
    /// The kernel kept marking a dump inconsistent (tables changing too fast).
    #[error("netlink {0} dump kept being interrupted by concurrent changes")]
    DumpInterrupted(&'static str),
    /// The sync thread could not be started or ended before reporting.
    #[error("netlink sync thread failed: {0}")]
    Thread(#[source] io::Error),
}

/// A subscriber's end: the events for one stack instance, in order.
///
/// The first event is always a [`ConfigEvent::Snapshot`] of the state at the time of subscribing,
/// so a subscriber that joins late misses nothing. When the sync thread ends, the queue reports
/// disconnection after its last event.
#[derive(Debug)]
pub struct Subscription {
    rx: Receiver<ConfigEvent>,
}

impl Subscription {
    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<ConfigEvent> {
        self.rx.try_recv().ok()
    }

    /// The next event, waiting at most `timeout`. `None` on timeout or when the sync ended.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<ConfigEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Whether the sync thread has ended and every queued event has been taken.
    pub fn is_closed(&self) -> bool {
        matches!(
            self.rx.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Disconnected)
        )
    }

    /// Every event queued now, without waiting (the between-bursts call).
    pub fn drain(&self) -> impl Iterator<Item = ConfigEvent> + '_ {
        self.rx.try_iter()
    }

    /// The underlying channel.
    pub fn into_receiver(self) -> Receiver<ConfigEvent> {
        self.rx
    }
}

/// A running netlink sync: a thread that follows one interface and broadcasts [`ConfigEvent`]s.
///
/// Dropping it (or [`NetlinkSync::stop`]) wakes the thread through an eventfd and joins it.
pub struct NetlinkSync {
    hub: Arc<Mutex<Hub>>,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NetlinkSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = lock(&self.hub);
        f.debug_struct("NetlinkSync")
            .field("ifname", &h.decoder.ifname())
            .field("ifindex", &h.decoder.ifindex())
            .field("running", &h.running)
            .field("subscribers", &h.subs.len())
            .finish()
    }
}

impl NetlinkSync {
    /// Opens the sockets (in `cfg.netns` if set), subscribes to link, IPv4 address, IPv4 route and
    /// neighbour notifications, dumps the current state and starts the sync thread.
    ///
    /// Returns the interface's state from the dump. Fails with [`SyncError::NoSuchInterface`] if
    /// no interface is called `cfg.ifname`.
    pub fn start(cfg: SyncConfig) -> Result<(NetlinkSync, InterfaceSnapshot), SyncError> {
        let stop = sync::eventfd().map_err(SyncError::Thread)?;
        let stop_thread = stop.try_clone().map_err(SyncError::Thread)?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let cfg2 = cfg.clone();
        let thread = std::thread::Builder::new()
            .name(format!("netlink-{}", cfg.ifname))
            .spawn(move || {
                let setup = || -> Result<(Io, Arc<Mutex<Hub>>, InterfaceSnapshot), SyncError> {
                    if let Some(path) = &cfg2.netns {
                        netns::enter_netns(path).map_err(|source| SyncError::Netns {
                            path: path.clone(),
                            source,
                        })?;
                    }
                    let mut io = Io::open(cfg2.rcvbuf, stop_thread)?;
                    let dump = io.dump_all()?;
                    let mut decoder = Decoder::new(cfg2.ifname.clone(), cfg2.tables.clone());
                    decoder.resync(&dump, Resync::Snapshot);
                    if decoder.ifindex().is_none() {
                        return Err(SyncError::NoSuchInterface(cfg2.ifname.clone()));
                    }
                    let snapshot = decoder.snapshot();
                    let hub = Arc::new(Mutex::new(Hub {
                        decoder,
                        subs: Vec::new(),
                        running: true,
                    }));
                    Ok((io, hub, snapshot))
                };
                match setup() {
                    Ok((io, hub, snapshot)) => {
                        if ready_tx.send(Ok((hub.clone(), snapshot))).is_ok() {
                            sync::thread_main(io, hub);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(SyncError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok((hub, snapshot))) => {
                tracing::info!(ifname = %cfg.ifname, addrs = snapshot.addrs.len(),
                    routes = snapshot.routes.len(), neighbors = snapshot.neighbors.len(),
                    "netlink sync started");
                Ok((
                    NetlinkSync {
                        hub,
                        stop,
                        thread: Some(thread),
                    },
                    snapshot,
                ))
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(SyncError::Thread(io::Error::other(
                    "sync thread ended during start-up",
                )))
            }
        }
    }

    /// A new subscriber queue. Its first event is a `Snapshot` of the current state; every change
    /// after that follows in order. One per stack instance.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel();
        let mut h = lock(&self.hub);
        if h.running {
            let snap = h.decoder.snapshot();
            if tx.send(ConfigEvent::Snapshot(Box::new(snap))).is_ok() {
                h.subs.push(tx);
            }
        }
        Subscription { rx }
    }

    /// A copy of the state as folded from all events so far.
    pub fn state(&self) -> FoldedState {
        lock(&self.hub).decoder.state().clone()
    }

    /// The interface's current ifindex, `None` while it does not exist.
    pub fn ifindex(&self) -> Option<u32> {
        lock(&self.hub).decoder.ifindex()
    }

    /// Whether the sync thread is still running.
    pub fn is_running(&self) -> bool {
        lock(&self.hub).running
    }

    /// Stops the sync thread and waits for it (also done on drop).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            sync::signal(&self.stop);
            if thread.join().is_err() {
                tracing::error!("netlink sync thread panicked");
            }
        }
    }
}

impl Drop for NetlinkSync {
    fn drop(&mut self) {
        self.shutdown();
    }
}
