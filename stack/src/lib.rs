//! # cnet-stack: a sans-IO, burst-processing IPv4 stack
//!
//! Layers, bottom up, each a module that takes a burst and splits it by next stage:
//!
//! | module | does |
//! |---|---|
//! | [`buf`] | frame pool (heap or AF_XDP UMEM) and fixed-capacity bursts |
//! | [`wire`] | header views and checksums not covered by `smoltcp::wire` |
//! | [`eth`] | Ethernet II demux by destination and EtherType |
//! | [`arp`] | ARP replies, resolution, neighbour table with RFC 1122 states |
//! | [`ipv4`] | validation, reassembly, fragmentation, routing (LPM) |
//! | [`icmp`] | echo, destination unreachable, errors delivered to sockets |
//! | [`udp`] | sockets by (addr, port), zero-copy receive queues |
//! | [`tcp`] | RFC 9293 connections: SACK, timestamps, window scaling, NewReno/CUBIC, SYN cookies |
//! | [`timer`] | hierarchical timer wheel (TCP timers) |
//!
//! ## Time contract
//! The stack reads no clock and owns no socket or thread. The caller drives it:
//! 1. [`Stack::apply_config`] for configuration changes, between bursts;
//! 2. [`Stack::process_rx`] with each received burst and the current time;
//! 3. application calls (`udp_*`, `ping_*`);
//! 4. [`Stack::poll_tx`] until it returns 0, handing each burst to the driver;
//! 5. sleep until [`Stack::poll_timeout`] or the next received frame.
//!
//! Every random value derives from [`StackConfig::seed`], so a run is reproducible.

#![deny(missing_docs)]

pub mod arp;
pub mod buf;
pub mod census;
pub mod config;
pub mod counters;
mod eth;
pub mod hash;
pub mod icmp;
pub mod ipv4;
mod stack;
pub mod tcp;
pub mod time;
pub mod timer;
pub mod udp;
pub mod wire;

#[cfg(test)]
mod tests;

pub use buf::{Batch, Frame, Pool, BURST};
pub use census::FrameCensus;
pub use config::{ConfigEvent, IfAddr, MacAddr, Neighbor, Route, StackConfig};
pub use counters::{Counters, DropReason, Event};
pub use icmp::{EchoReply, IcmpError, PingHandle};
pub use stack::{BindError, SendError, Stack};
pub use tcp::{
    Congestion, ConnectError, ListenerInfo, TcpError, TcpHandle, TcpInfo, TcpListener, TcpOpts,
    TcpSendError, TcpState,
};
pub use time::{Duration, Instant};
pub use udp::{UdpDatagram, UdpHandle, UdpOptions};
