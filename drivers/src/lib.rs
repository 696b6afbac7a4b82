//! # cnet-drivers: ports that move bursts of frames between a device and the stack's pool
//!
//! - [`Port`]: the burst interface every driver implements;

#![deny(missing_docs)]

mod port;

pub use port::{Port, PortError, PortInfo};
