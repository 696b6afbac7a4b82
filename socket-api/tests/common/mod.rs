//! Two runtimes joined by the thread-safe in-memory link, addresses 198.18.0.1 (A) and
//! 198.18.0.2 (B), neighbours known so no ARP is needed. Frame accounting checked at the end.

#![allow(dead_code)]

use cnet_drivers::host::Host;
use cnet_drivers::pipe::{pipe, PipePort};
use cnet_socket::{Limits, QueueSetup, Runtime};
use cnet_stack::{ConfigEvent, IfAddr, Instant, MacAddr, Neighbor, Pool, Stack, StackConfig};
use std::net::{Ipv4Addr, SocketAddrV4};

pub const MAC_A: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0a]);
pub const MAC_B: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0b]);
pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

pub fn stack(
    mac: MacAddr,
    ip: Ipv4Addr,
    peer: (Ipv4Addr, MacAddr),
    seed: u64,
    frames: usize,
) -> Stack {
    let mut cfg = StackConfig::new(mac);
    cfg.seed = seed;
    let pool = Pool::new(frames, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM).unwrap();
    let mut s = Stack::new(cfg, pool);
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: 24,
        }),
        Instant::ZERO,
    );
    s.apply_config(
        ConfigEvent::NeighborSet(Neighbor {
            ip: peer.0,
            mac: peer.1,
            permanent: true,
        }),
        Instant::ZERO,
    );
    s
}

/// Two runtimes over a pipe.
pub struct Pair {
    pub a: Runtime,
    pub b: Runtime,
}

impl Pair {
    pub fn new(frames: usize) -> Pair {
        Pair::with_limits(frames, Limits::default())
    }

    pub fn with_limits(frames: usize, limits: Limits) -> Pair {
        let (pa, pb) = pipe(MAC_A, MAC_B, 1500, 1024).unwrap();
        let a = stack(MAC_A, IP_A, (IP_B, MAC_B), 1, frames);
        let b = stack(MAC_B, IP_B, (IP_A, MAC_A), 2, frames);
        let a = Runtime::start(vec![QueueSetup::new(Host::new(a, pa))], limits).unwrap();
        let b = Runtime::start(vec![QueueSetup::new(Host::new(b, pb))], limits).unwrap();
        Pair { a, b }
    }

    /// Stops both and checks that every frame is accounted for: none lost, none still lent.
    pub fn finish(self) {
        for (name, rt) in [("A", &self.a), ("B", &self.b)] {
            for r in rt.join() {
                assert_eq!(r.failure, None, "runtime {name} failed");
                assert_eq!(r.frames_lost, 0, "runtime {name} lost frames: {r:?}");
                assert_eq!(r.frames_lent, 0, "runtime {name}: frames still lent: {r:?}");
            }
        }
    }
}

/// Keeps a port type in scope for tests that build their own setups.
pub type Port = PipePort;
