//! Ethernet II input: the first stage of every burst.
//!
//! Reads each frame's window once: drops frames that are too short, not addressed to us, or of
//! another EtherType; ARP frames form a sub-burst; an IPv4 frame's header is parsed from the same
//! read and the frame goes straight to its L4 sub-burst ([`Stack::ipv4_frame`]). ARP input runs
//! after the loop, then the L4 sub-bursts ([`Stack::l4_input`]), in the order the stages always
//! had.

use crate::buf::Batch;
use crate::counters::{DropReason, Event};
use crate::ipv4::L4Bursts;
use crate::stack::Stack;
use crate::time::Instant;
use crate::wire::{parse_ipv4, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETH_HLEN};

impl Stack {
    pub(crate) fn eth_input(&mut self, batch: &mut Batch, now: Instant) {
        let mut arp = Batch::new();
        let mut l4 = L4Bursts::default();
        // Address decisions of earlier bursts still valid (see `AddrMemo`).
        let gen = self.flows.generation();
        let mut memo = self.flows.rx_memo();
        let mac = self.iface.mac.0;
        let verify = self.cfg.rx_checksum;
        for f in batch.drain() {
            let data = self.pool.data(&f);
            self.counters.add(Event::RxFrames, 1);
            self.counters.add(Event::RxBytes, data.len() as u64);
            let Some(h) = data.first_chunk::<ETH_HLEN>() else {
                self.drop_frame(f, DropReason::EthTruncated);
                continue;
            };
            let dst = &h[0..6];
            // Unicast to us or broadcast; we join no multicast group.
            if dst != mac && dst != [0xff; 6] {
                self.drop_frame(f, DropReason::EthOtherHost);
                continue;
            }
            match u16::from_be_bytes([h[12], h[13]]) {
                ETHERTYPE_IPV4 => {
                    let parsed = parse_ipv4(&data[ETH_HLEN..], verify);
                    self.ipv4_frame(f, parsed, &mut l4, &mut memo, now);
                }
                ETHERTYPE_ARP => {
                    // Cannot fail: `arp` receives at most as many frames as `batch` held.
                    let _ = arp
                        .push(f)
                        .map_err(|f| self.drop_frame(f, DropReason::TxQueueFull));
                }
                _ => self.drop_frame(f, DropReason::EthUnknownType),
            }
        }
        self.flows.keep_rx_memo(gen, memo);
        if !arp.is_empty() {
            self.arp_input(&mut arp, now);
        }
        self.l4_input(&mut l4, now);
    }
}
