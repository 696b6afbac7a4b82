//! # cnet-benches: UDP echo over an in-memory link, cnet against smoltcp
//!
//! One workload, two stacks, one thread:
//!
//! - a client stack keeps a window of `window` datagrams of `payload` bytes outstanding towards
//!   an echo server stack's UDP port 7;
//! - the server sends every datagram back (cnet: zero copy, the received frame goes out again with
//!   `udp_send`; smoltcp: `recv_slice` into a scratch buffer, then `send_slice`, the only way its
//!   ring-buffer socket API allows);
//! - the client counts replies. One *echoed packet* is one request and its reply, each handled
//!   by both stacks (four stack traversals, two link crossings), all on one core.
//!
//! Variants: `cnet` over the workspace's `MemLink` (the in-memory pair the issue names),
//! `cnet-copy` over [`cnet_echo::CopyPort`], and `smoltcp` over [`smoltcp_echo::CopyDevice`];
//! the last two are the same link design, so `cnet-copy` against `smoltcp` compares stacks only.
//!
//! Both sides run the same loop step with virtual time advancing by a fixed step:
//! client receive+transmit, client application, client transmit, server receive+transmit,
//! server application, server transmit. See [`cnet_echo`] and [`smoltcp_echo`] for the link each
//! uses and why their costs match.
//!
//! Addresses, MACs and ports are the same for both stacks ([`CLIENT_IP`], [`SERVER_IP`], ...).
//!
//! TCP (issue #6): [`tcp_mem`] (bulk transfer, cnet against smoltcp, same link design) and
//! [`tcp_scale`] (many established cnet connections: per-packet cost and heap per connection);
//! the binaries `tcp_bulk`, `tcp_conns` and (AF_XDP, root) `tcp_veth`.

#![deny(missing_docs)]

pub mod cli;
pub mod cnet_echo;
pub mod cpu;
pub mod link;
pub mod smoltcp_echo;
pub mod tcp_mem;
pub mod tcp_scale;

use core::net::Ipv4Addr;

/// The client's IPv4 address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The echo server's IPv4 address.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Prefix length of the shared subnet.
pub const PREFIX_LEN: u8 = 24;
/// The client's MAC.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The echo server's MAC.
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The client's UDP port.
pub const CLIENT_PORT: u16 = 49152;
/// The server's UDP port (echo, RFC 862).
pub const ECHO_PORT: u16 = 7;
/// IP MTU of the link.
pub const MTU: usize = 1500;
/// Frames in each cnet pool (and datagrams each smoltcp socket buffer holds).
pub const FRAMES: usize = 1024;

/// Parameters of an echo run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// UDP payload bytes per datagram.
    pub payload: usize,
    /// Datagrams the client keeps outstanding.
    pub window: usize,
    /// Virtual time added per loop step, in microseconds.
    pub step_us: u64,
}

impl Workload {
    /// Largest payload that fits one Ethernet frame at [`MTU`] (no fragmentation in this benchmark).
    pub const MAX_PAYLOAD: usize = MTU - 20 - 8;

    /// Checks the parameters.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=Self::MAX_PAYLOAD).contains(&self.payload),
            "payload {} is outside 1..={}",
            self.payload,
            Self::MAX_PAYLOAD
        );
        anyhow::ensure!(
            (1..=FRAMES / 4).contains(&self.window),
            "window {} is outside 1..={}",
            self.window,
            FRAMES / 4
        );
        anyhow::ensure!(self.step_us > 0, "step must be at least 1 us");
        Ok(())
    }

    /// The payload the client sends: a fixed byte pattern.
    pub fn payload_bytes(&self) -> Vec<u8> {
        (0..self.payload).map(|i| (i * 7 + 1) as u8).collect()
    }
}

/// Loop steps allowed without a reply before a run is declared stuck (fails loudly, never hangs).
pub const MAX_IDLE_STEPS: u64 = 100_000;

/// One side of the benchmark: a client and an echo server joined by a link.
pub trait EchoPair {
    /// Stack and link as printed: `cnet` (over `MemLink`), `cnet-copy` (over the same plain copying
    /// link as smoltcp's) or `smoltcp`.
    fn name(&self) -> &'static str;

    /// Runs until `n` more datagrams were echoed back to the client; returns the loop steps taken.
    /// Ends with nothing outstanding.
    fn run(&mut self, n: u64) -> anyhow::Result<u64>;

    /// Binds `n` more UDP sockets on each side, on ports [`IDLE_PORT_BASE`]`..+n`, that never
    /// receive or send anything (the scaling variant: per-packet cost against the number of
    /// sockets). `before`: where the stack keeps sockets in a list (smoltcp's `SocketSet`), put the
    /// idle ones ahead of the echo sockets (the order in which a lookup walks them); cnet's hash
    /// demultiplexer has no order.
    fn add_idle_sockets(&mut self, n: usize, before: bool) -> anyhow::Result<()> {
        let _ = before;
        anyhow::ensure!(n == 0, "{}: idle sockets not supported", self.name());
        Ok(())
    }
}

/// First UDP port of the idle sockets of [`EchoPair::add_idle_sockets`].
pub const IDLE_PORT_BASE: u16 = 20000;
/// Most idle sockets per side.
pub const MAX_IDLE_SOCKETS: usize = 20000;

/// Every variant [`build`] knows, in the order the benchmark runs them.
pub const VARIANTS: [&str; 3] = ["cnet", "cnet-copy", "smoltcp"];

/// Builds the pair for `stack`: one of [`VARIANTS`].
pub fn build(stack: &str, w: Workload) -> anyhow::Result<Box<dyn EchoPair>> {
    w.validate()?;
    match stack {
        "cnet" => Ok(Box::new(cnet_echo::CnetEcho::over_memlink(w)?)),
        "cnet-copy" => Ok(Box::new(cnet_echo::CnetEcho::over_copy_link(w)?)),
        "smoltcp" => Ok(Box::new(smoltcp_echo::SmoltcpEcho::new(w)?)),
        other => anyhow::bail!("unknown stack {other:?} (cnet, cnet-copy or smoltcp)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant echoes every datagram (correctness only: speed is measured by the binary).
    #[test]
    fn every_variant_echoes() {
        for payload in [1, 64, Workload::MAX_PAYLOAD] {
            let w = Workload {
                payload,
                window: 32,
                step_us: 10,
            };
            for v in VARIANTS {
                let mut pair = build(v, w).expect("valid workload");
                assert_eq!(pair.name(), v);
                pair.run(100).expect("warm-up echoes");
                pair.run(1000).expect("echoes");
            }
        }
    }

    /// Idle sockets change nothing about the echo (either order for smoltcp).
    #[test]
    fn every_variant_echoes_with_idle_sockets() {
        let w = Workload {
            payload: 64,
            window: 32,
            step_us: 10,
        };
        for before in [false, true] {
            for v in VARIANTS {
                let mut pair = build(v, w).expect("valid workload");
                pair.add_idle_sockets(100, before).expect("idle sockets");
                pair.run(100).expect("warm-up echoes");
                pair.run(1000).expect("echoes");
            }
        }
    }
}
