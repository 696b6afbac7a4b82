//! # cnet-drivers: ports that move bursts of frames between a device and the stack's pool
//!
//! - [`Port`]: the burst interface every driver implements;
//! - [`host`]: a stack joined to a port, and the receive → process → transmit step;
//! - [`impair`]: seeded impairments wrapped around any port (a bad path over a real device);
//! - [`mem`]: an in-memory link joining two ports, with seeded impairments;
//! - [`pcap`]: a wrapper that records any port's traffic to a pcap file.
//! - [`pipe`]: a thread-safe in-memory link (two ports on two threads, real time).
//! - `xdp` (feature `xdp`): AF_XDP port whose UMEM is the stack's frame pool.
//! - [`tap`]: a port over a Linux TAP device (one frame per system call, copied).

#![deny(missing_docs)]

pub mod host;
pub mod impair;
pub mod mem;
pub mod pcap;
pub mod pipe;
mod port;
pub mod tap;
#[cfg(feature = "xdp")]
pub mod xdp;

pub use port::{Port, PortError, PortInfo};
