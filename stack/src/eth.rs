//! Ethernet II input: the first stage of every burst.
//!
//! Splits a burst by EtherType into an ARP sub-burst and an IPv4 sub-burst (Ethernet header pulled
//! off), dropping frames that are too short, not addressed to us, or of another EtherType.

use crate::buf::Batch;
use crate::counters::{DropReason, Event};
use crate::stack::Stack;
use crate::time::Instant;
use crate::wire::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HLEN};

impl Stack {
    pub(crate) fn eth_input(&mut self, batch: &mut Batch, now: Instant) {
        let mut arp = Batch::new();
        let mut ipv4 = Batch::new();
        let mac = self.iface.mac.0;
        for f in batch.drain() {
            let data = self.pool.data(&f);
            self.counters.add(Event::RxFrames, 1);
            self.counters.add(Event::RxBytes, data.len() as u64);
            if data.len() < ETH_HLEN {
                self.drop_frame(f, DropReason::EthTruncated);
                continue;
            }
            let dst = &data[0..6];
            // Unicast to us or broadcast; we join no multicast group.
            if dst != mac && dst != [0xff; 6] {
                self.drop_frame(f, DropReason::EthOtherHost);
                continue;
            }
            match u16::from_be_bytes([data[12], data[13]]) {
                ETHERTYPE_IPV4 => {
                    self.pool.pull_front(&f, ETH_HLEN);
                    // Cannot fail: `ipv4` receives at most as many frames as `batch` held.
                    let _ = ipv4
                        .push(f)
                        .map_err(|f| self.drop_frame(f, DropReason::TxQueueFull));
                }
                ETHERTYPE_ARP => {
                    let _ = arp
                        .push(f)
                        .map_err(|f| self.drop_frame(f, DropReason::TxQueueFull));
                }
                _ => self.drop_frame(f, DropReason::EthUnknownType),
            }
        }
        if !arp.is_empty() {
            self.arp_input(&mut arp, now);
        }
        if !ipv4.is_empty() {
            self.ipv4_input(&mut ipv4, now);
        }
    }
}
