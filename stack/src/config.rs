//! Static configuration of a stack instance and the events that change it at run time.
//!
//! A stack serves one interface (one queue of it, in the shared-nothing multi-queue model). Its
//! addresses, routes and neighbours come from the service config or, through `cnet-netlink`, from the
//! kernel; either way they arrive as [`ConfigEvent`]s applied between bursts
//! (`Stack::apply_config`).

use core::net::Ipv4Addr;

pub use smoltcp::wire::EthernetAddress as MacAddr;

/// Limits and knobs of one stack instance. Every random value the stack uses derives from `seed`.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// The interface's MAC address.
    pub mac: MacAddr,
    /// IP MTU of the link (bytes of IPv4 packet, not counting Ethernet).
    pub mtu: usize,
    /// Seed for every random value (ephemeral ports, IP IDs, hash keys, ISNs).
    pub seed: u64,
    /// Packets held per unresolved neighbour (Linux: `unres_qlen`, 3 packets... we count frames).
    pub arp_queue_per_neighbor: usize,
    /// Most neighbour entries (static ones included).
    pub max_neighbors: usize,
    /// Most datagrams under reassembly at once.
    pub reassembly_max_datagrams: usize,
    /// Most frames held by reassembly in total.
    pub reassembly_max_frames: usize,
    /// Time a datagram may take to reassemble (RFC 791 suggests 15 s; Linux uses 30 s).
    pub reassembly_timeout_ms: u64,
    /// Most datagrams queued per UDP socket.
    pub udp_rx_queue: usize,
    /// Destination-unreachable messages allowed per second (token bucket, RFC 1812 4.3.2.8).
    pub icmp_unreach_per_sec: u32,
    /// Most frames queued for the driver before output is dropped.
    pub tx_queue: usize,
    /// Time an ARP entry stays reachable after confirmation (Linux: `base_reachable_time`, 30 s).
    pub neighbor_reachable_ms: u64,
    /// Time between ARP retransmissions while resolving (RFC 1122 2.3.2.1: at most one per second).
    pub arp_retransmit_ms: u64,
    /// Requests sent before an address is declared unreachable.
    pub arp_max_probes: u32,
    /// Verify checksums of received packets in software (off only where the port verified them).
    pub rx_checksum: bool,
    /// Accept a UDP/TCP checksum that is exactly the folded pseudo-header sum a sender with
    /// checksum offload leaves (Linux `CHECKSUM_PARTIAL`: the device was to finish it, a veth
    /// never does). Off by default: such a frame is dropped as `udp_partial_checksum` /
    /// `tcp_partial_checksum`. Turning it on is an explicit trust decision for a peer whose
    /// frames cannot be corrupted on the way (the kernel side of a veth): the payload is then not
    /// covered by any checksum. Every frame accepted so is counted
    /// (`rx_partial_checksum_accepted`).
    pub rx_accept_partial_checksum: bool,
    /// Default TCP send buffer per connection, bytes.
    pub tcp_snd_buf: u32,
    /// Default TCP receive buffer per connection, bytes (the window scale follows from it).
    pub tcp_rcv_buf: u32,
    /// The largest receive buffer a connection may have (Linux `tcp_rmem[2]`): the window scale
    /// offered in a SYN is chosen to cover it. `0`: the connection's own receive buffer.
    pub tcp_rcv_buf_max: u32,
    /// Connections in SYN-RECEIVED per listener before SYN cookies (or drops) take over.
    pub tcp_syn_backlog: u32,
    /// Most TCP connections in the table (every state).
    pub tcp_max_connections: usize,
    /// Answer SYNs with SYN cookies when the SYN queue is full.
    pub tcp_syncookies: bool,
    /// Offer and accept window scaling (RFC 7323).
    pub tcp_window_scaling: bool,
    /// Offer and accept SACK (RFC 2018).
    pub tcp_sack: bool,
    /// Offer and accept timestamps (RFC 7323).
    pub tcp_timestamps: bool,
    /// Delayed-ACK timeout (RFC 9293 3.8.6.3: under 0.5 s; Linux: 40 ms).
    pub tcp_delack_ms: u64,
    /// Initial RTO (RFC 6298 2.1: 1 s).
    pub tcp_rto_initial_ms: u64,
    /// Lowest RTO. RFC 6298 2.4 says 1 s; Linux (and we, by default) use 200 ms.
    pub tcp_rto_min_ms: u64,
    /// Highest RTO (RFC 6298 2.5: at least 60 s).
    pub tcp_rto_max_ms: u64,
    /// SYN (and SYN-ACK) retransmissions before giving up.
    pub tcp_syn_retries: u32,
    /// Data retransmissions before giving up (Linux `tcp_retries2`).
    pub tcp_retries2: u32,
    /// TIME-WAIT duration, 2 MSL (Linux: 60 s).
    pub tcp_time_wait_ms: u64,
    /// Life of an orphaned FIN-WAIT-2 connection (Linux `tcp_fin_timeout`).
    pub tcp_fin_timeout_ms: u64,
    /// Interval between keepalive probes (RFC 1122 4.2.3.6; Linux 75 s).
    pub tcp_keepalive_intvl_s: u64,
    /// Unanswered keepalive probes before the connection is dropped (Linux 9).
    pub tcp_keepalive_probes: u32,
    /// Challenge ACKs per second for the whole stack (RFC 5961 7; Linux
    /// `tcp_challenge_ack_limit`); each second's budget is drawn at random from
    /// `[limit / 2, 3 * limit / 2)` so the count does not leak to an off-path attacker
    /// (CVE-2016-5696). `u32::MAX` disables the limit.
    pub tcp_challenge_ack_limit: u32,
    /// Path MTU black-hole detection (RFC 4821 5.3 / Linux `tcp_mtu_probing = 1`; off by
    /// default, as Linux's `tcp_mtu_probing = 0`): after `tcp_retries1`-like three consecutive
    /// RTOs, data goes out in smaller segments (MSS 1024, then halved down to what a 552-byte
    /// MTU carries), in case a router drops our DF packets without telling. Only when the
    /// segment being lost is larger than the smaller MSS: a peer that stopped ACKing a small
    /// segment is no black hole.
    pub tcp_mtu_probing: bool,
    /// TCP memory thresholds in frames of the pool, `[low, pressure, high]` (Linux
    /// `tcp_mem`). `[0, 0, 0]` (the default) derives them from the pool: 3/8, 1/2 and 5/8 of
    /// its frames less `pool_driver_frames`; the rest is a reserve TCP cannot take. See
    /// `docs/HARDENING.md`.
    pub tcp_mem: [usize; 3],
    /// Frames of the pool the driver keeps lent out for reception (the AF_XDP fill ring): they
    /// are never free for the stack, so derived shares (`tcp_mem`) are taken from the rest.
    /// Without this, TCP's limits on AF_XDP would count frames that sit in the fill ring and
    /// the pool could run dry below the pressure level.
    pub pool_driver_frames: usize,
    /// Out-of-order data held while `RCV.NXT` does not move for this long is dropped (the
    /// peer resends it; RFC 2018 8 allows discarding SACKed data). 0 disables.
    pub tcp_ooo_timeout_ms: u64,
    /// Default user timeout (RFC 5482; Linux `TCP_USER_TIMEOUT`): a connection whose sent data
    /// stays unacknowledged (retransmitted, or probing a zero window) this long is dropped. 0
    /// (Linux's default) leaves it to `tcp_retries2`.
    pub tcp_user_timeout_ms: u64,
    /// PSH also on the last segment of a burst that the congestion window ends (the rest of
    /// the write waits for ACKs), as Linux's TSO packets carry it; off: PSH only where a write
    /// ends or the send buffer empties (RFC 9293 3.9.1).
    pub tcp_push_cwnd_limited: bool,
    /// Most orphans: connections closed by the application still sending or closing (Linux
    /// `tcp_max_orphans`); beyond it a closing connection is reset.
    pub tcp_max_orphans: usize,
    /// Retransmissions (or zero-window probes) of an orphan before it is dropped (Linux
    /// `tcp_orphan_retries`, whose 0 means 8).
    pub tcp_orphan_retries: u32,
    /// Longest time the peer may hold a zero window while we have data to send (persist
    /// timer, RFC 9293 3.8.6.1), even if it answers every probe. 0: no limit (Linux).
    pub tcp_persist_timeout_ms: u64,
    /// Tail loss probes (RFC 8985 7; Linux `tcp_early_retrans = 3`) on SACK connections: a
    /// flight whose last segments are lost is probed after about two round trips instead of
    /// waiting for the RTO.
    pub tcp_tlp: bool,
}

impl StackConfig {
    /// Defaults for a stack with this MAC.
    pub fn new(mac: MacAddr) -> Self {
        StackConfig {
            mac,
            mtu: 1500,
            seed: 0x00c0_ffee,
            arp_queue_per_neighbor: 64,
            max_neighbors: 4096,
            reassembly_max_datagrams: 64,
            reassembly_max_frames: 1024,
            reassembly_timeout_ms: 30_000,
            udp_rx_queue: 1024,
            icmp_unreach_per_sec: 100,
            tx_queue: 4096,
            neighbor_reachable_ms: 30_000,
            arp_retransmit_ms: 1_000,
            arp_max_probes: 3,
            rx_checksum: true,
            rx_accept_partial_checksum: false,
            tcp_snd_buf: 256 * 1024,
            tcp_rcv_buf: 256 * 1024,
            tcp_rcv_buf_max: 0,
            tcp_syn_backlog: 256,
            tcp_max_connections: 65536,
            tcp_syncookies: true,
            tcp_window_scaling: true,
            tcp_sack: true,
            tcp_timestamps: true,
            tcp_delack_ms: 40,
            tcp_rto_initial_ms: 1000,
            tcp_rto_min_ms: 200,
            tcp_rto_max_ms: 60_000,
            tcp_syn_retries: 6,
            tcp_retries2: 15,
            tcp_time_wait_ms: 60_000,
            tcp_fin_timeout_ms: 60_000,
            tcp_keepalive_intvl_s: 75,
            tcp_keepalive_probes: 9,
            tcp_challenge_ack_limit: 1000,
            tcp_mtu_probing: false,
            tcp_mem: [0, 0, 0],
            pool_driver_frames: 0,
            tcp_ooo_timeout_ms: 30_000,
            tcp_user_timeout_ms: 0,
            tcp_push_cwnd_limited: false,
            tcp_max_orphans: 4096,
            tcp_orphan_retries: 8,
            tcp_persist_timeout_ms: 0,
            tcp_tlp: true,
        }
    }
}

/// An IPv4 address with its prefix length, as on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    /// The address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

/// An IPv4 route. Routes are keyed like the kernel's: (destination, prefix length, metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network (host bits are ignored).
    pub dst: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
    /// Next hop, or `None` for a directly connected destination.
    pub gateway: Option<Ipv4Addr>,
    /// Lower is preferred among routes of the same prefix.
    pub metric: u32,
}

/// A neighbour (ARP) entry given from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
    /// Permanent (static) entries are never aged nor replaced by ARP.
    pub permanent: bool,
}

/// Everything the kernel says about the interface, for a full (re)synchronisation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterfaceSnapshot {
    /// MAC, if known.
    pub mac: Option<MacAddr>,
    /// IP MTU, if known.
    pub mtu: Option<usize>,
    /// Operational state.
    pub up: bool,
    /// Addresses.
    pub addrs: Vec<IfAddr>,
    /// Routes through this interface.
    pub routes: Vec<Route>,
    /// Neighbours on this interface.
    pub neighbors: Vec<Neighbor>,
}

/// One change to apply to a stack instance.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigEvent {
    /// Link state, MTU or MAC changed.
    Link {
        /// Operationally up.
        up: bool,
        /// IP MTU.
        mtu: usize,
        /// MAC.
        mac: MacAddr,
    },
    /// An address was added (a connected route and a gratuitous ARP follow).
    AddrAdd(IfAddr),
    /// An address was removed (its connected route goes too).
    AddrDel(IfAddr),
    /// A route was added or replaced (same destination, prefix and metric).
    RouteAdd(Route),
    /// A route was removed.
    RouteDel(Route),
    /// A neighbour was added or changed.
    NeighborSet(Neighbor),
    /// A neighbour was removed.
    NeighborDel(Ipv4Addr),
    /// Replace all addresses, routes and neighbours (start-up dump, or re-dump after an overrun).
    Snapshot(Box<InterfaceSnapshot>),
}
