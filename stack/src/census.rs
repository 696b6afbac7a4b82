//! A census of the frame pool: who holds the frames that are not free, by category.
//!
//! For diagnosis (tests print it when the pool runs low) and audits, not for the data path: it
//! walks every connection, O(connections + queued frames). Frames held by several owners inside
//! the stack (a send-queue frame also queued for the driver) are counted once, in the first
//! category that holds them. What the stack does not hold is `outside`: the driver's rings (the
//! AF_XDP fill ring, frames on the TX ring waiting for their completion), the runner's batches
//! and the application.

use crate::stack::Stack;

/// Frames of the pool by holder, from [`Stack::frame_census`]. The categories and `free` add up
/// to `capacity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCensus {
    /// Frames in the pool.
    pub capacity: usize,
    /// Frames on the free list.
    pub free: usize,
    /// TCP receive queues (in order, waiting for the application).
    pub tcp_rcv: usize,
    /// TCP out-of-order queues.
    pub tcp_ooo: usize,
    /// Frames of TCP send queues that only the send queue holds.
    pub tcp_snd: usize,
    /// Frames of TCP send queues also held elsewhere: a first transmission still queued for
    /// the driver or on its TX ring (the headers went into the frame's own headroom).
    pub tcp_snd_in_flight: usize,
    /// Frames TCP shares between small send-queue payloads (`tcp_snd_coalesced`).
    pub tcp_coalesced: usize,
    /// The stack's transmit queue (frames not counted above).
    pub tx_queue: usize,
    /// IPv4 reassembly.
    pub reassembly: usize,
    /// UDP receive queues.
    pub udp: usize,
    /// ICMP (ping) reply queues.
    pub icmp: usize,
    /// Packets waiting for ARP resolution.
    pub arp: usize,
    /// Not free and not held by the stack: the driver (fill ring, TX ring in flight), the
    /// runner's batches and the application.
    pub outside: usize,
}

impl FrameCensus {
    /// Frames the stack itself holds (every category but `free` and `outside`).
    pub fn in_stack(&self) -> usize {
        self.tcp() + self.tx_queue + self.reassembly + self.udp + self.icmp + self.arp
    }

    /// Frames TCP holds (queues and shared frames).
    pub fn tcp(&self) -> usize {
        self.tcp_rcv + self.tcp_ooo + self.tcp_snd + self.tcp_snd_in_flight + self.tcp_coalesced
    }
}

impl core::fmt::Display for FrameCensus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "free {} of {}; tcp rcv {} ooo {} snd {} snd-in-flight {} coalesced {}; tx queue {}; \
             reassembly {}; udp {}; icmp {}; arp {}; outside the stack {}",
            self.free,
            self.capacity,
            self.tcp_rcv,
            self.tcp_ooo,
            self.tcp_snd,
            self.tcp_snd_in_flight,
            self.tcp_coalesced,
            self.tx_queue,
            self.reassembly,
            self.udp,
            self.icmp,
            self.arp,
            self.outside
        )
    }
}

impl Stack {
    /// Who holds the pool's frames (see [`FrameCensus`]). O(connections + queued frames): for
    /// tests and diagnosis, not for every packet.
    pub fn frame_census(&self) -> FrameCensus {
        let pool = &self.pool;
        let mut c = FrameCensus {
            capacity: pool.capacity(),
            free: pool.available(),
            ..FrameCensus::default()
        };
        // Send-queue frames that may also sit in the transmit queue: counted once.
        let mut in_snd = vec![false; pool.capacity()];
        self.tcp_census(&mut c, &mut in_snd);
        c.tx_queue = self
            .tx
            .iter()
            .filter(|f| !in_snd.get(f.index() as usize).copied().unwrap_or(false))
            .map(|f| pool.chain_count(f))
            .sum();
        c.reassembly = self.reassembly.frames_held();
        c.udp = self.udp.frames_held(pool);
        c.icmp = self.ping.frames_held(pool);
        c.arp = self
            .neighbors
            .iter()
            .flat_map(|(_, e)| e.queue.iter())
            .map(|f| pool.chain_count(f))
            .sum();
        c.outside = c
            .capacity
            .saturating_sub(c.free)
            .saturating_sub(c.in_stack());
        c
    }
}
