//! The `Port` trait: burst receive and transmit over a frame pool.

use cnet_stack::{Batch, Instant, MacAddr, Pool};

/// Errors a port reports. Transient conditions (ring full, nothing received) are not errors: they
/// show as fewer frames moved.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The device is gone or down for good.
    #[error("device unavailable: {0}")]
    Unavailable(String),
    /// A system call failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a port tells the stack about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Interface name (for logs and metrics).
    pub name: String,
    /// MAC address the port receives for.
    pub mac: MacAddr,
    /// IP MTU of the link.
    pub mtu: usize,
}

/// A network port moving bursts of frames between a device and a [`Pool`].
///
/// Ownership: frames in a received batch belong to the caller; frames a port accepted for transmit
/// belong to the port until the device is done with them, when the port gives them back to the pool
/// (an AF_XDP port does so when their TX completion arrives, never earlier).
pub trait Port {
    /// Appends up to `batch.remaining()` received frames to `batch`; returns how many.
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError>;

    /// Transmits frames from the front of `batch`, in order; returns how many it took. Frames it did
    /// not take (ring full) stay in `batch`, in order, for the next call.
    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError>;

    /// Name, MAC and MTU.
    fn info(&self) -> PortInfo;

    /// The next time something will become receivable without outside help (a simulated link's
    /// delayed delivery), if any.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// A file descriptor that becomes readable when frames arrive, for a runner that sleeps in
    /// `poll(2)` while idle (an AF_XDP socket). `None`: the runner cannot sleep on the port and
    /// polls it on a short timer instead (in-memory link, wrappers over such ports).
    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// Frames of the pool the port holds right now (rings, pending completions), for accounting:
    /// after a run, `pool.available() + port.frames_held() + frames held by the stack == capacity`.
    fn frames_held(&self) -> usize {
        0
    }

    /// The stack's own IPv4 addresses, at start and whenever they change ([`crate::host::Host`]
    /// calls it). A port that steers traffic by destination (AF_XDP with cnet's redirect program)
    /// updates its filter; the default ignores it. Wrappers forward it.
    fn local_addrs_changed(&mut self, _addrs: &[cnet_stack::IfAddr]) {}
}
