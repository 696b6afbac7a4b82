//! The `Stack`: one instance per interface queue, owning its pool, tables and sockets.
//!
//! Call order (see the crate docs for the time contract): `apply_config` between bursts,
//! `process_rx` per received burst, application calls, then `poll_tx` until it returns 0, then sleep
//! until `poll_timeout`. Protocol stages live in their modules as further `impl Stack` blocks:
//! `eth`, `arp`, `ipv4`, `icmp`, `udp`, `tcp`.

use crate::arp::table::{NeighborTable, Timing};
use crate::buf::{Batch, Frame, Pool};
use crate::config::{ConfigEvent, IfAddr, MacAddr, Route, StackConfig};
use crate::counters::{Counters, DropReason, Event};
use crate::icmp::{PingTable, TokenBucket};
use crate::ipv4::reassembly::Reassembler;
use crate::ipv4::route::{network, RouteTable};
use crate::tcp::TcpTable;
use crate::time::{Duration, Instant};
use crate::udp::UdpTable;
use core::net::Ipv4Addr;
use std::collections::VecDeque;

/// Why a send failed. The frame handed in is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The socket handle is stale or was never valid.
    #[error("invalid socket handle")]
    InvalidHandle,
    /// No route to the destination.
    #[error("no route to host")]
    NoRoute,
    /// The interface has no address to send from.
    #[error("no source address")]
    NoAddress,
    /// The source address asked for is not one of the interface's (or not the socket's).
    #[error("source address is not one of this socket's addresses")]
    BadSource,
    /// The payload is too large for one datagram.
    #[error("message too long")]
    TooLarge,
    /// The frame lacks headroom for the headers.
    #[error("frame has too little headroom for the headers")]
    NoHeadroom,
    /// The pool had no frame.
    #[error("frame pool exhausted")]
    PoolEmpty,
    /// The transmit queue is full: retry after `poll_tx`.
    #[error("transmit queue full")]
    QueueFull,
    /// The link is down.
    #[error("link down")]
    LinkDown,
}

impl From<DropReason> for SendError {
    fn from(r: DropReason) -> Self {
        match r {
            DropReason::NoRoute => SendError::NoRoute,
            DropReason::PoolEmpty => SendError::PoolEmpty,
            DropReason::LinkDown => SendError::LinkDown,
            DropReason::NeedFragmentation => SendError::TooLarge,
            _ => SendError::QueueFull,
        }
    }
}

/// Why a bind failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The address and port (or identifier) are taken.
    #[error("address in use")]
    AddrInUse,
    /// The address is not one of the interface's.
    #[error("address not available")]
    AddrNotAvailable,
    /// Every ephemeral port is taken.
    #[error("no ephemeral port left")]
    NoPortLeft,
}

/// The interface as the stack sees it.
#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub mac: MacAddr,
    pub mtu: usize,
    pub up: bool,
    pub addrs: Vec<IfAddr>,
}

/// A small, fast, seedable generator (SplitMix64): ephemeral ports, IP IDs, hash keys.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A sans-IO IPv4 stack instance. See the module and crate docs.
pub struct Stack {
    pub(crate) cfg: StackConfig,
    pub(crate) pool: Pool,
    pub(crate) counters: Counters,
    pub(crate) iface: Iface,
    pub(crate) routes: RouteTable,
    pub(crate) neighbors: NeighborTable,
    pub(crate) reassembly: Reassembler,
    pub(crate) udp: UdpTable,
    pub(crate) tcp: TcpTable,
    pub(crate) ping: PingTable,
    pub(crate) unreach_bucket: TokenBucket,
    /// Frames ready for the driver, Ethernet header written.
    pub(crate) tx: VecDeque<Frame>,
    pub(crate) ip_ident: u16,
    pub(crate) rng: Rng,
    /// Scratch for neighbour timer actions, reused.
    pub(crate) arp_actions: Vec<crate::arp::table::TimerAction>,
    /// Output decisions per destination (route, source, neighbour); see `ipv4::flow`.
    pub(crate) flows: crate::ipv4::flow::FlowCache,
}

impl core::fmt::Debug for Stack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("mac", &self.iface.mac)
            .field("addrs", &self.iface.addrs)
            .field("pool", &self.pool)
            .finish()
    }
}

impl Stack {
    /// A stack over `pool`, with no address and no route until configuration arrives.
    pub fn new(cfg: StackConfig, pool: Pool) -> Stack {
        let mut rng = Rng(cfg.seed);
        let timing = Timing {
            reachable: Duration::from_millis(cfg.neighbor_reachable_ms),
            retransmit: Duration::from_millis(cfg.arp_retransmit_ms),
            max_probes: cfg.arp_max_probes,
        };
        let ip_ident = rng.next_u64() as u16;
        Stack {
            iface: Iface {
                mac: cfg.mac,
                mtu: cfg.mtu.clamp(
                    68,
                    pool.frame_size()
                        .saturating_sub(pool.headroom().max(256) + crate::wire::ETH_HLEN),
                ),
                up: true,
                addrs: Vec::new(),
            },
            routes: RouteTable::default(),
            neighbors: NeighborTable::new(cfg.max_neighbors, timing, rng.next_u64()),
            reassembly: Reassembler::new(
                cfg.reassembly_max_datagrams,
                // Reassembly may never starve the pool (with AF_XDP, the fill ring) of frames.
                cfg.reassembly_max_frames.min(pool.capacity() / 4),
                Duration::from_millis(cfg.reassembly_timeout_ms),
                rng.next_u64(),
            ),
            udp: UdpTable::new(cfg.udp_rx_queue, rng.next_u64()),
            tcp: TcpTable::new(rng.next_u64(), rng.next_u64(), rng.next_u64()),
            ping: PingTable::default(),
            unreach_bucket: TokenBucket::new(cfg.icmp_unreach_per_sec),
            tx: VecDeque::with_capacity(cfg.tx_queue),
            ip_ident,
            rng,
            arp_actions: Vec::with_capacity(16),
            flows: Default::default(),
            counters: Counters::default(),
            pool,
            cfg,
        }
    }

    /// The frame pool (to read received data, or to allocate frames to send).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The frame pool, writable.
    pub fn pool_mut(&mut self) -> &mut Pool {
        &mut self.pool
    }

    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The interface's MAC.
    pub fn mac(&self) -> MacAddr {
        self.iface.mac
    }

    /// The interface's IP MTU.
    pub fn mtu(&self) -> usize {
        self.iface.mtu
    }

    /// Whether the link is up.
    pub fn link_up(&self) -> bool {
        self.iface.up
    }

    /// The interface's addresses.
    pub fn addrs(&self) -> &[IfAddr] {
        &self.iface.addrs
    }

    /// A number that changes whenever a configuration event is applied
    /// ([`Stack::apply_config`]), the only way the interface, its addresses or the routes change:
    /// a caller that keeps something derived from them (a driver's address map) compares one word
    /// per poll instead of the data. It is the `config_events` counter, which nothing resets.
    #[inline]
    pub fn config_generation(&self) -> u64 {
        self.counters.get(Event::ConfigEvents)
    }

    /// The routing table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The neighbour table.
    pub fn neighbors(&self) -> &crate::arp::table::NeighborTable {
        &self.neighbors
    }

    /// Frames held inside the stack (queues, reassembly, sockets, pending ARP), for accounting:
    /// with a heap pool and nothing in the application's hands,
    /// `pool.available() + frames_held() == pool.capacity()`.
    pub fn frames_held(&self) -> usize {
        let chain = |f: &Frame| self.pool.chain_count(f);
        self.tx.iter().map(chain).sum::<usize>()
            + self.reassembly.frames_held()
            + self.udp.frames_held(&self.pool)
            + self.tcp.frames_held(&self.pool)
            + self.ping.frames_held(&self.pool)
            + self
                .neighbors
                .iter()
                .flat_map(|(_, e)| e.queue.iter())
                .map(chain)
                .sum::<usize>()
    }

    /// True if `ip` is one of our addresses.
    #[inline]
    pub fn is_local_addr(&self, ip: Ipv4Addr) -> bool {
        self.iface.addrs.iter().any(|a| a.addr == ip)
    }

    /// True if `ip` is the limited broadcast or the directed broadcast of one of our subnets.
    #[inline]
    pub(crate) fn is_broadcast(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::BROADCAST
            || self.iface.addrs.iter().any(|a| {
                a.prefix_len < 31 && u32::from(ip) == u32::from(a.addr) | (u32::MAX >> a.prefix_len)
            })
    }

    /// Source address for packets to `next_hop`: an address on the next hop's subnet, else the first.
    pub(crate) fn source_for(&self, next_hop: Ipv4Addr) -> Option<Ipv4Addr> {
        self.iface
            .addrs
            .iter()
            .find(|a| network(a.addr, a.prefix_len) == network(next_hop, a.prefix_len))
            .or(self.iface.addrs.first())
            .map(|a| a.addr)
    }

    /// The next IPv4 identification value.
    pub(crate) fn next_ident(&mut self) -> u16 {
        self.ip_ident = self.ip_ident.wrapping_add(1);
        self.ip_ident
    }

    /// Queues a finished frame for the driver.
    #[inline]
    pub(crate) fn enqueue_tx(&mut self, frame: Frame) {
        if self.tx.len() >= self.cfg.tx_queue {
            self.counters.drop(DropReason::TxQueueFull);
            self.pool.free(frame);
            return;
        }
        self.tx.push_back(frame);
    }

    /// Frees a frame counting a drop.
    #[inline]
    pub(crate) fn drop_frame(&mut self, frame: Frame, reason: DropReason) {
        self.counters.drop(reason);
        self.pool.free(frame);
    }

    /// Processes a received burst; every frame is consumed (delivered, answered, held or dropped).
    pub fn process_rx(&mut self, batch: &mut Batch, now: Instant) {
        self.eth_input(batch, now);
    }

    /// Moves up to `out.remaining()` frames ready for the driver into `out`, after running due
    /// timers. Returns how many. Call until it returns 0.
    pub fn poll_tx(&mut self, out: &mut Batch, now: Instant) -> usize {
        self.on_timers(now);
        // Nothing touched (always so with no TCP connection): the flush would find no work.
        if !self.tcp.touched.is_empty() {
            self.tcp_flush(now);
        }
        let mut n = 0;
        while !out.is_full() {
            let Some(f) = self.tx.pop_front() else { break };
            self.counters.add(Event::TxFrames, 1);
            self.counters.add(Event::TxBytes, self.pool.len(&f) as u64);
            if let Err(f) = out.push(f) {
                self.tx.push_front(f);
                break;
            }
            n += 1;
        }
        n
    }

    /// Frames waiting for `poll_tx`.
    pub fn tx_pending(&self) -> usize {
        self.tx.len()
    }

    /// True if a `poll_tx` at the same `now` as the last one could produce frames: some are
    /// queued, or connections wait to be flushed. False means that another `poll_tx` before time
    /// advances or anything else is called would return 0 (a driver loop can skip it).
    #[inline]
    pub fn tx_work_pending(&self) -> bool {
        !self.tx.is_empty() || !self.tcp.touched.is_empty()
    }

    /// When the stack next needs `poll_tx` to be called for its timers, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.neighbors.next_deadline(),
            self.reassembly.next_deadline(),
            self.tcp_next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True if a timer of any subsystem is due at `now` (`poll_timeout() <= now`, without
    /// taking the minimum). Each check is O(1) when its subsystem has nothing armed (the common
    /// case for neighbours and reassembly), and the TCP wheel caches its answer between changes,
    /// so this is cheap enough for every `poll_tx` and every driver poll.
    #[inline]
    pub fn timers_due(&self, now: Instant) -> bool {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        due(self.tcp_next_deadline())
            || due(self.neighbors.next_deadline())
            || due(self.reassembly.next_deadline())
    }

    fn on_timers(&mut self, now: Instant) {
        if self.timers_due(now) {
            let expired = self.reassembly.expire(&mut self.pool, now);
            for _ in 0..expired {
                self.counters.drop(DropReason::FragTimeout);
            }
            self.arp_on_timer(now);
            self.tcp_on_timers(now);
        }
    }

    /// The largest IP MTU the pool's frames can carry: a frame holds the Ethernet header and the
    /// packet after the headroom (received frames start at least 256 bytes in, AF_XDP's
    /// `XDP_PACKET_HEADROOM`). A link with a larger MTU is used with this one (RFC 1122 3.3.3:
    /// we never send more than we can build).
    pub fn max_mtu(&self) -> usize {
        let head = self.pool.headroom().max(256);
        self.pool
            .frame_size()
            .saturating_sub(head + crate::wire::ETH_HLEN)
    }

    /// Applies a configuration change (from the service config or netlink), between bursts.
    pub fn apply_config(&mut self, ev: ConfigEvent, now: Instant) {
        self.counters.add(Event::ConfigEvents, 1);
        // Any event may change a route, an address, the link or a neighbour.
        self.flows.invalidate();
        match ev {
            ConfigEvent::Link { up, mtu, mac } => {
                let was_up = self.iface.up;
                self.iface.up = up;
                self.iface.mtu = mtu.clamp(68, self.max_mtu());
                self.iface.mac = mac;
                if up && !was_up {
                    self.announce_all(now);
                }
            }
            ConfigEvent::AddrAdd(a) => self.addr_add(a, now),
            ConfigEvent::AddrDel(a) => {
                self.iface.addrs.retain(|x| x.addr != a.addr);
                self.remove_connected_route(a);
            }
            ConfigEvent::RouteAdd(r) => {
                self.routes.add(r);
            }
            ConfigEvent::RouteDel(r) => {
                self.routes.remove(&r);
            }
            ConfigEvent::NeighborSet(n) => self.neighbor_set(n, now),
            ConfigEvent::NeighborDel(ip) => {
                if let Some(q) = self.neighbors.remove(ip) {
                    for f in q {
                        self.drop_frame(f, DropReason::ArpUnresolved);
                    }
                }
            }
            ConfigEvent::Snapshot(s) => {
                if let Some(mac) = s.mac {
                    self.iface.mac = mac;
                }
                if let Some(mtu) = s.mtu {
                    self.iface.mtu = mtu.clamp(68, self.max_mtu());
                }
                self.iface.up = s.up;
                let old: Vec<IfAddr> = core::mem::take(&mut self.iface.addrs);
                self.routes.clear();
                for a in s.addrs {
                    if old.contains(&a) {
                        self.iface.addrs.push(a);
                        self.routes.add(connected_route(a));
                    } else {
                        self.addr_add(a, now);
                    }
                }
                for r in s.routes {
                    self.routes.add(r);
                }
                let keep: Vec<Ipv4Addr> = s.neighbors.iter().map(|n| n.ip).collect();
                let dropped = self.neighbors.retain(|ip, e| {
                    e.state != crate::arp::table::NeighborState::Permanent || keep.contains(&ip)
                });
                for f in dropped {
                    self.drop_frame(f, DropReason::ArpUnresolved);
                }
                for n in s.neighbors {
                    self.neighbor_set(n, now);
                }
            }
        }
    }

    /// A neighbour from configuration; counted when the full table refuses it.
    fn neighbor_set(&mut self, n: crate::config::Neighbor, now: Instant) {
        if let Some(q) = self.neighbors.set(n.ip, n.mac, n.permanent, now) {
            self.flush_neighbor_queue(n.mac, q);
        }
        if self.neighbors.get(n.ip).is_none() {
            self.counters.add(Event::NeighborTableFull, 1);
        }
    }

    fn addr_add(&mut self, a: IfAddr, now: Instant) {
        if a.prefix_len > 32 {
            return;
        }
        if let Some(x) = self.iface.addrs.iter_mut().find(|x| x.addr == a.addr) {
            let old = *x;
            *x = a;
            self.remove_connected_route(old);
        } else {
            self.iface.addrs.push(a);
        }
        self.routes.add(connected_route(a));
        self.send_gratuitous_arp(a.addr, now);
    }

    /// Removes the connected route of an address that went, unless another of our addresses
    /// is in the same subnet (a secondary address's removal keeps the primary's route, as Linux).
    fn remove_connected_route(&mut self, gone: IfAddr) {
        let r = connected_route(gone);
        if !self.iface.addrs.iter().any(|x| connected_route(*x) == r) {
            self.routes.remove(&r);
        }
    }

    fn announce_all(&mut self, now: Instant) {
        let addrs: Vec<Ipv4Addr> = self.iface.addrs.iter().map(|a| a.addr).collect();
        for a in addrs {
            self.send_gratuitous_arp(a, now);
        }
    }

    /// Frees every frame held inside the stack (on shutdown, or before an accounting check).
    pub fn release_all(&mut self) {
        self.flows.invalidate();
        while let Some(f) = self.tx.pop_front() {
            self.pool.free(f);
        }
        self.reassembly.clear(&mut self.pool);
        self.udp.clear(&mut self.pool);
        self.tcp.clear(&mut self.pool);
        self.ping.clear(&mut self.pool);
        // Only `Incomplete` entries hold packets; they are dropped with them.
        for f in self.neighbors.retain(|_, e| e.queue.is_empty()) {
            self.pool.free(f);
        }
    }
}

/// The route the kernel installs for an address: its subnet, directly connected, metric 0.
pub(crate) fn connected_route(a: IfAddr) -> Route {
    Route {
        dst: Ipv4Addr::from(network(a.addr, a.prefix_len)),
        prefix_len: a.prefix_len,
        gateway: None,
        metric: 0,
    }
}
