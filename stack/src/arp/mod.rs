//! ARP (RFC 826) for Ethernet/IPv4: answering requests for our addresses, resolving next hops,
//! gratuitous announcements (RFC 5227 2.3), and the Ethernet output step that needs a neighbour.

pub mod table;

use crate::buf::{Batch, Frame};
use crate::config::MacAddr;
use crate::counters::{DropReason, Event};
use crate::stack::Stack;
use crate::time::Instant;
use crate::wire::{write_eth, ARP_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HLEN};
use core::net::Ipv4Addr;
use std::collections::VecDeque;
use table::{Resolution, TimerAction};

const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;
const BROADCAST: MacAddr = MacAddr([0xff; 6]);

/// An ARP packet for Ethernet/IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender MAC.
    pub sha: MacAddr,
    /// Sender IP.
    pub spa: Ipv4Addr,
    /// Target MAC.
    pub tha: MacAddr,
    /// Target IP.
    pub tpa: Ipv4Addr,
}

impl ArpPacket {
    /// Parses an Ethernet/IPv4 ARP packet (RFC 826 packet format); `None` if it is anything else.
    pub fn parse(b: &[u8]) -> Option<ArpPacket> {
        if b.len() < ARP_LEN || b[0..6] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        let mac = |o: usize| MacAddr([b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5]]);
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        Some(ArpPacket {
            op: u16::from_be_bytes([b[6], b[7]]),
            sha: mac(8),
            spa: ip(14),
            tha: mac(18),
            tpa: ip(24),
        })
    }

    /// Writes the packet into `b[..28]`.
    pub fn write(&self, b: &mut [u8]) {
        b[0..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sha.0);
        b[14..18].copy_from_slice(&self.spa.octets());
        b[18..24].copy_from_slice(&self.tha.0);
        b[24..28].copy_from_slice(&self.tpa.octets());
    }
}

impl Stack {
    pub(crate) fn arp_input(&mut self, batch: &mut Batch, now: Instant) {
        // ARP may confirm, learn or replace neighbours: cached output decisions go.
        self.flows.invalidate();
        for f in batch.drain() {
            let Some(p) = ArpPacket::parse(&self.pool.data(&f)[ETH_HLEN..]) else {
                self.drop_frame(f, DropReason::ArpMalformed);
                continue;
            };
            if p.op != OP_REQUEST && p.op != OP_REPLY {
                self.drop_frame(f, DropReason::ArpBadOp);
                continue;
            }
            let for_us = self.is_local_addr(p.tpa);
            // RFC 826 merge: update an existing entry; add one if we are the target. A sender
            // claiming one of our addresses, or a broadcast/zero sender, is not learnt.
            let learnable = !p.spa.is_unspecified()
                && !p.spa.is_broadcast()
                && !self.is_local_addr(p.spa)
                && p.sha != BROADCAST
                && p.sha.is_unicast();
            if learnable {
                let before = self.neighbors.get(p.spa).map(|e| (e.mac, e.state));
                if let Some(q) = self.neighbors.confirm(p.spa, p.sha, for_us, now) {
                    self.flush_neighbor_queue(p.sha, q);
                }
                let after = self.neighbors.get(p.spa).map(|e| (e.mac, e.state));
                let news = match (before, after) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some((mac, state)), Some((new_mac, _))) => {
                        mac != new_mac || state == table::NeighborState::Incomplete
                    }
                };
                if news {
                    self.neighbors.note_learned(p.spa, p.sha);
                }
            }
            if p.op == OP_REQUEST && for_us && learnable {
                // Answer in place: the request frame becomes the reply.
                let reply = ArpPacket {
                    op: OP_REPLY,
                    sha: self.iface.mac,
                    spa: p.tpa,
                    tha: p.sha,
                    tpa: p.spa,
                };
                let mac = self.iface.mac;
                let buf = self.pool.data_mut(&f);
                write_eth(buf, p.sha, mac, ETHERTYPE_ARP);
                reply.write(&mut buf[ETH_HLEN..]);
                self.pool.truncate(&f, ETH_HLEN + ARP_LEN);
                self.counters.add(Event::ArpRepliesSent, 1);
                self.enqueue_tx(f);
            } else if p.op == OP_REQUEST && !for_us && p.spa != p.tpa {
                // (A gratuitous request, sender == target, is an announcement: learnt above.)
                self.drop_frame(f, DropReason::ArpNotForUs);
            } else {
                self.pool.free(f);
            }
        }
    }

    /// Builds and queues an ARP packet.
    fn send_arp(&mut self, eth_dst: MacAddr, p: ArpPacket) {
        let Some(f) = self.pool.alloc() else {
            self.counters.drop(DropReason::PoolEmpty);
            return;
        };
        let Some(buf) = self.pool.push_back(&f, ETH_HLEN + ARP_LEN) else {
            self.drop_frame(f, DropReason::PoolEmpty);
            return;
        };
        write_eth(buf, eth_dst, p.sha, ETHERTYPE_ARP);
        p.write(&mut buf[ETH_HLEN..]);
        self.enqueue_tx(f);
    }

    /// Sends a request for `target`: broadcast, or unicast to `mac` when re-validating.
    fn send_arp_request(&mut self, target: Ipv4Addr, unicast: Option<MacAddr>) {
        let Some(spa) = self.source_for(target) else {
            return;
        };
        self.counters.add(Event::ArpRequestsSent, 1);
        let p = ArpPacket {
            op: OP_REQUEST,
            sha: self.iface.mac,
            spa,
            tha: MacAddr([0; 6]),
            tpa: target,
        };
        self.send_arp(unicast.unwrap_or(BROADCAST), p);
    }

    /// Announces `addr` with a gratuitous ARP request (RFC 5227 2.3: sender and target are `addr`).
    pub(crate) fn send_gratuitous_arp(&mut self, addr: Ipv4Addr, _now: Instant) {
        if !self.iface.up {
            return;
        }
        self.counters.add(Event::ArpGratuitousSent, 1);
        let p = ArpPacket {
            op: OP_REQUEST,
            sha: self.iface.mac,
            spa: addr,
            tha: MacAddr([0; 6]),
            tpa: addr,
        };
        self.send_arp(BROADCAST, p);
    }

    /// Sends packets that were waiting for resolution, now that `mac` is known.
    pub(crate) fn flush_neighbor_queue(&mut self, mac: MacAddr, q: VecDeque<Frame>) {
        for f in q {
            self.eth_output(f, mac);
        }
    }

    /// Prepends the Ethernet header to an IPv4 packet and queues it.
    fn eth_output(&mut self, f: Frame, dst: MacAddr) {
        let src = self.iface.mac;
        match self.pool.push_front(&f, ETH_HLEN) {
            Some(h) => {
                write_eth(h, dst, src, ETHERTYPE_IPV4);
                self.enqueue_tx(f);
            }
            None => self.drop_frame(f, DropReason::PoolEmpty),
        }
    }

    /// Sends an IPv4 packet (window = IP header onward) to the neighbour `next_hop`, resolving it
    /// first if needed. `broadcast` sends to the Ethernet broadcast address without resolution.
    pub(crate) fn l2_output(
        &mut self,
        f: Frame,
        next_hop: Ipv4Addr,
        broadcast: bool,
        now: Instant,
    ) {
        if !self.iface.up {
            self.drop_frame(f, DropReason::LinkDown);
            return;
        }
        if broadcast {
            self.eth_output(f, BROADCAST);
            return;
        }
        let res = self.neighbors.resolve(next_hop, now);
        if !matches!(res, Resolution::Ready(_)) {
            // The entry changed state (or was created or evicted).
            self.flows.invalidate();
        }
        match res {
            Resolution::Ready(mac) => self.eth_output(f, mac),
            Resolution::ReadyProbe(mac) => {
                self.eth_output(f, mac);
                self.send_arp_request(next_hop, Some(mac));
            }
            res @ (Resolution::Resolve | Resolution::Pending) => {
                let limit = self.cfg.arp_queue_per_neighbor;
                // Like reassembly, resolution may never starve the pool.
                let total = self.pool.capacity() / 8;
                if let Err(f) = self.neighbors.enqueue(next_hop, f, limit, total) {
                    self.drop_frame(f, DropReason::ArpQueueFull);
                }
                if res == Resolution::Resolve {
                    self.send_arp_request(next_hop, None);
                }
            }
            Resolution::Full => self.drop_frame(f, DropReason::ArpQueueFull),
        }
    }

    /// Caches the output decision for `dst` (see `ipv4::flow`) after the slow path sent to it via
    /// `next_hop`: only when nothing about it needs work on the next use (a broadcast, a
    /// `Permanent` neighbour, or a `Reachable` one until it ages), and the interface has a source
    /// address.
    pub(crate) fn flow_fill(
        &mut self,
        dst: Ipv4Addr,
        next_hop: Ipv4Addr,
        broadcast: bool,
        now: Instant,
    ) {
        if !self.iface.up {
            return;
        }
        let (mac, until) = if broadcast {
            (BROADCAST, Instant::MAX)
        } else {
            match self.neighbors.get(next_hop) {
                Some(e) if e.state == table::NeighborState::Permanent => (e.mac, Instant::MAX),
                Some(e)
                    if e.state == table::NeighborState::Reachable && now < e.reachable_until =>
                {
                    (e.mac, e.reachable_until)
                }
                _ => return,
            }
        };
        let Some(src_wild) = self.source_for(next_hop) else {
            return;
        };
        let mut eth = [0u8; ETH_HLEN];
        write_eth(&mut eth, mac, self.iface.mac, ETHERTYPE_IPV4);
        self.flows.put(dst, until, src_wild, eth);
    }

    /// Takes the oldest neighbour this instance learnt from the wire (new, or with a new MAC), so
    /// that a service running one instance per queue can tell the others: an ARP reply lands on
    /// one queue only.
    pub fn take_learned_neighbor(&mut self) -> Option<crate::config::Neighbor> {
        self.neighbors
            .take_learned()
            .map(|(ip, mac)| crate::config::Neighbor {
                ip,
                mac,
                permanent: false,
            })
    }

    pub(crate) fn arp_on_timer(&mut self, now: Instant) {
        let mut actions = core::mem::take(&mut self.arp_actions);
        self.neighbors.on_timer(now, &mut actions);
        if !actions.is_empty() {
            self.flows.invalidate();
        }
        for a in actions.drain(..) {
            match a {
                TimerAction::Broadcast(ip) => self.send_arp_request(ip, None),
                TimerAction::Unicast(ip, mac) => self.send_arp_request(ip, Some(mac)),
                TimerAction::Failed(_, q) => {
                    for f in q {
                        self.drop_frame(f, DropReason::ArpUnresolved);
                    }
                }
            }
        }
        self.arp_actions = actions;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_write_round_trip_and_rejects_non_ipv4() {
        let p = ArpPacket {
            op: OP_REQUEST,
            sha: MacAddr([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(198, 18, 0, 1),
            tha: MacAddr([0; 6]),
            tpa: Ipv4Addr::new(198, 18, 0, 2),
        };
        let mut b = [0u8; 28];
        p.write(&mut b);
        assert_eq!(ArpPacket::parse(&b), Some(p));
        let smol = smoltcp::wire::ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(smol.operation(), smoltcp::wire::ArpOperation::Request);
        assert!(ArpPacket::parse(&b[..27]).is_none());
        b[2] = 0x86;
        assert!(ArpPacket::parse(&b).is_none());
    }
}
