//! Stack tests that read like traces: two stacks joined by a lossless in-test wire, or one stack fed
//! hand-built frames. Impaired links live in the workspace's integration tests (`cnet-tests`).

mod arp;
mod icmp;
mod ipv4;
mod malformed;
mod udp;

use crate::buf::{Batch, Pool};
use crate::config::{ConfigEvent, IfAddr, MacAddr, StackConfig};
use crate::stack::Stack;
use crate::time::{Duration, Instant};
use core::net::Ipv4Addr;

pub const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
pub const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub fn stack(mac: MacAddr, ip: Ipv4Addr, frames: usize) -> Stack {
    stack_with(mac, ip, frames, |_| {})
}

/// [`stack`], with `tune` applied to its configuration first.
pub fn stack_with(
    mac: MacAddr,
    ip: Ipv4Addr,
    frames: usize,
    tune: impl FnOnce(&mut StackConfig),
) -> Stack {
    let mut cfg = StackConfig::new(mac);
    cfg.seed = u64::from(mac.0[5]);
    tune(&mut cfg);
    let pool = Pool::new(frames, 2048, Pool::DEFAULT_HEADROOM).unwrap();
    let mut s = Stack::new(cfg, pool);
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: 24,
        }),
        Instant::ZERO,
    );
    s
}

/// Stack A with B as a permanent neighbour and its start-up output (gratuitous ARP) drained: what
/// it sends next is the reply under test.
pub fn stack_knowing_b(frames: usize) -> Stack {
    let mut s = stack(MAC_A, IP_A, frames);
    let _ = feed(&mut s, &[], Instant::ZERO);
    s.apply_config(
        ConfigEvent::NeighborSet(crate::config::Neighbor {
            ip: IP_B,
            mac: MAC_B,
            permanent: true,
        }),
        Instant::ZERO,
    );
    s
}

/// Moves every frame `from` has to send into `to`, copying bytes. Returns frames moved.
pub fn transfer(from: &mut Stack, to: &mut Stack, now: Instant, log: &mut Vec<Vec<u8>>) -> usize {
    let mut moved = 0;
    let mut out = Batch::new();
    loop {
        let n = from.poll_tx(&mut out, now);
        if n == 0 {
            break;
        }
        let mut rx = Batch::new();
        for f in out.drain() {
            let bytes = from.pool().data(&f).to_vec();
            from.pool_mut().free(f);
            let g = to
                .pool_mut()
                .alloc_from(&bytes)
                .expect("receiver pool has room");
            log.push(bytes);
            rx.push(g).unwrap();
        }
        moved += rx.len();
        to.process_rx(&mut rx, now);
    }
    moved
}

/// Two stacks on one wire, in virtual time.
pub struct Pair {
    pub a: Stack,
    pub b: Stack,
    pub now: Instant,
    /// Every frame that crossed the wire, A→B and B→A interleaved in order.
    pub wire: Vec<Vec<u8>>,
}

impl Pair {
    pub fn new() -> Pair {
        Pair {
            a: stack(MAC_A, IP_A, 512),
            b: stack(MAC_B, IP_B, 512),
            now: Instant::ZERO,
            wire: Vec::new(),
        }
    }

    /// Exchanges frames until both sides are quiet; fails loudly on livelock.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let n = transfer(&mut self.a, &mut self.b, self.now, &mut self.wire)
                + transfer(&mut self.b, &mut self.a, self.now, &mut self.wire);
            for s in [&self.a, &self.b] {
                let (charged, counted) = s.tcp_mem_audit();
                assert_eq!(charged, counted, "TCP memory accounting matches the queues");
            }
            if n == 0 {
                return;
            }
        }
        panic!("the pair did not settle in 1000 rounds");
    }

    /// Advances virtual time, exchanging frames as it goes.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.settle();
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|t| *t <= end)
                .min();
            match next {
                Some(t) => self.now = t.max(self.now),
                None => break,
            }
            self.settle();
            if self.now >= end {
                break;
            }
        }
        self.now = end;
        self.settle();
    }

    /// Asserts no frame is lost: everything is back in the pools once the stacks let go.
    pub fn assert_no_leak(&mut self) {
        for s in [&mut self.a, &mut self.b] {
            s.release_all();
            let p = s.pool().stats();
            assert_eq!(p.free, p.capacity, "frames leaked");
            assert_eq!(p.double_frees, 0);
        }
    }
}

/// An Ethernet/IPv4 frame from B to A with the given protocol and L4 bytes (checksums of L4 are
/// the caller's business).
pub fn ipv4_frame(proto: u8, l4: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + l4.len()];
    crate::wire::write_eth(&mut f, MAC_A, MAC_B, crate::wire::ETHERTYPE_IPV4);
    crate::wire::Ipv4Header {
        src,
        dst,
        proto,
        ttl: 64,
        ident: 1,
        dont_frag: false,
        tos: 0,
        more_frags: false,
        frag_offset: 0,
        payload_len: l4.len() as u16,
    }
    .write(&mut f[14..34]);
    f[34..].copy_from_slice(l4);
    f
}

/// Feeds raw frames to a stack and returns what it sends back.
pub fn feed(s: &mut Stack, frames: &[Vec<u8>], now: Instant) -> Vec<Vec<u8>> {
    let mut rx = Batch::new();
    for b in frames {
        let f = s.pool_mut().alloc_from(b).expect("room");
        rx.push(f).unwrap();
    }
    s.process_rx(&mut rx, now);
    let mut out = Batch::new();
    let mut sent = Vec::new();
    while s.poll_tx(&mut out, now) > 0 {
        for f in out.drain() {
            sent.push(s.pool().data(&f).to_vec());
            s.pool_mut().free(f);
        }
    }
    let (charged, counted) = s.tcp_mem_audit();
    assert_eq!(charged, counted, "TCP memory accounting matches the queues");
    sent
}
