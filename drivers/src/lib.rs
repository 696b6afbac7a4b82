//! # cnet-drivers: ports that move bursts of frames between a device and the stack's pool
//!
//! - [`Port`]: the burst interface every driver implements;
//! - [`host`]: a stack joined to a port, and the receive → process → transmit step;
//! - [`mem`]: an in-memory link joining two ports, with seeded impairments;
//! - [`pcap`]: a wrapper that records any port's traffic to a pcap file.

#![deny(missing_docs)]

mod port;
pub mod host;
pub mod mem;
pub mod pcap;

pub use port::{Port, PortError, PortInfo};
