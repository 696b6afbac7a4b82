//! IPv4 input and output (RFC 791, RFC 1122 3.2.1).
//!
//! Input validates each header, drops what is not for us, hands fragments to [`reassembly`], and
//! splits the burst by protocol into L4 sub-bursts whose frames' windows start at the L4 header.
//! It runs frame by frame inside the Ethernet stage's loop (one read of the frame's window for
//! both headers); the sub-bursts go up after the burst's ARP input.
//! Output prepends a 20-byte header into headroom, or fragments to the path MTU (copying: this is
//! the slow path; payloads up to the MTU leave from the frame they were written in).

pub(crate) mod flow;
pub mod reassembly;
pub mod route;

use crate::buf::{Frame, BURST};
use crate::counters::{DropReason, Event};
use crate::stack::Stack;
use crate::time::Instant;
use crate::wire::{
    Ipv4Error, Ipv4Header, Ipv4Info, ETH_HLEN, IPV4_HLEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use arrayvec::ArrayVec;
use core::net::Ipv4Addr;
pub(crate) use flow::AddrMemo;
use reassembly::{Key, Outcome};

/// TTL of packets we originate (RFC 1700 default, as Linux).
pub const DEFAULT_TTL: u8 = 64;

/// An L4 packet on its way up: the frame's window (or chain) is the L4 header and payload.
#[derive(Debug)]
pub(crate) struct L4Packet {
    pub frame: Frame,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Length of the IP header the window starts after (to quote it in ICMP errors).
    pub ip_hdr_len: usize,
    /// L4 length (over the whole chain).
    pub len: usize,
    /// Sent to a broadcast address.
    pub broadcast: bool,
    /// A frame chain (reassembled), not a single frame.
    pub chained: bool,
    /// The IPv4 TOS byte (of the last fragment when reassembled); its 2 low bits are ECN.
    pub tos: u8,
}

pub(crate) type L4Batch = ArrayVec<L4Packet, BURST>;

/// The L4 sub-bursts a receive burst is split into, filled frame by frame as the Ethernet stage
/// reads them (each packet's descriptor is written once, here) and handed on by
/// [`Stack::l4_input`] after the burst's ARP input, in a fixed order: unknown protocols (answered
/// with an ICMP error), ICMP, UDP, TCP.
#[derive(Default)]
pub(crate) struct L4Bursts {
    other: L4Batch,
    icmp: L4Batch,
    udp: L4Batch,
    tcp: L4Batch,
}

impl Stack {
    /// IPv4 input of one frame whose window still starts at its Ethernet header: `parsed` is
    /// `parse_ipv4` of what follows. Validates the addresses (RFC 1122 3.2.1.3), hands fragments
    /// to reassembly, and adds the L4 packet (window narrowed to the L4 header and payload in one
    /// update) to its sub-burst in `l4`.
    pub(crate) fn ipv4_frame(
        &mut self,
        f: Frame,
        parsed: Result<Ipv4Info, Ipv4Error>,
        l4: &mut L4Bursts,
        memo: &mut AddrMemo,
        now: Instant,
    ) {
        let info = match parsed {
            Ok(i) => i,
            Err(e) => {
                let r = match e {
                    Ipv4Error::Truncated => DropReason::Ipv4Truncated,
                    Ipv4Error::BadVersion => DropReason::Ipv4BadVersion,
                    Ipv4Error::BadHeaderLen => DropReason::Ipv4BadHeaderLen,
                    Ipv4Error::BadTotalLen => DropReason::Ipv4BadTotalLen,
                    Ipv4Error::BadChecksum => DropReason::Ipv4BadChecksum,
                };
                self.drop_frame(f, r);
                return;
            }
        };
        if info.ttl == 0 {
            self.drop_frame(f, DropReason::Ipv4TtlZero);
            return;
        }
        // RFC 1122 3.2.1.3: silently discard packets from broadcast, multicast, loopback,
        // "this network" or our own addresses.
        let src = info.src;
        if !memo.src_ok(src) {
            if src.is_broadcast()
                || src.is_multicast()
                || src.is_loopback()
                || src.is_unspecified()
                || self.is_local_addr(src)
                || self.is_broadcast(src)
            {
                self.drop_frame(f, DropReason::Ipv4BadSource);
                return;
            }
            memo.set_src_ok(src);
        }
        let broadcast = match memo.dst(info.dst) {
            Some(b) => b,
            None => {
                let b = if self.is_local_addr(info.dst) {
                    false
                } else if self.is_broadcast(info.dst) {
                    true
                } else {
                    // We are a host, not a router (RFC 1122 3.3.1: forwarding is off).
                    self.drop_frame(f, DropReason::Ipv4NotForUs);
                    return;
                };
                memo.set_dst(info.dst, b);
                b
            }
        };
        // The window becomes the L4 header and payload: Ethernet and IP headers consumed, and
        // Ethernet padding cut (the IP total length is authoritative). `parse_ipv4` checked that
        // this lies inside the window.
        let l4_len = info.total_len - info.hdr_len;
        if !self.pool.narrow(&f, ETH_HLEN + info.hdr_len, l4_len) {
            self.drop_frame(f, DropReason::Ipv4Truncated);
            return;
        }
        self.counters.add(Event::Ipv4Delivered, 1);
        let (frame, len, chained, ip_hdr_len) = if info.is_fragment() {
            // Each fragment remembers its own header length: the first fragment's is the one
            // an ICMP error about the datagram quotes (options may differ between fragments).
            self.pool.set_flags(&f, info.hdr_len as u32);
            let key = Key {
                src,
                dst: info.dst,
                proto: info.proto,
                ident: info.ident,
            };
            let (outcome, evicted) = self.reassembly.insert(
                &mut self.pool,
                key,
                info.frag_offset,
                info.more_frags,
                f,
                now,
            );
            for _ in 0..evicted {
                self.counters.drop(DropReason::FragNoMemory);
            }
            match outcome {
                Outcome::Held => return,
                Outcome::Dropped(r) => {
                    self.counters.drop(r);
                    return;
                }
                Outcome::Complete(head, len) => {
                    self.counters.add(Event::FragReassembled, 1);
                    let first_hdr_len = self.pool.flags(&head) as usize;
                    (head, len, true, first_hdr_len)
                }
            }
        } else {
            (f, l4_len, false, info.hdr_len)
        };
        let pkt = L4Packet {
            frame,
            src,
            dst: info.dst,
            ip_hdr_len,
            len,
            broadcast,
            chained,
            tos: info.tos,
        };
        let sub = match info.proto {
            PROTO_UDP => &mut l4.udp,
            PROTO_ICMP => &mut l4.icmp,
            PROTO_TCP => &mut l4.tcp,
            _ => &mut l4.other,
        };
        // Cannot overflow: a sub-burst holds at most as many packets as the burst.
        if let Err(e) = sub.try_push(pkt) {
            self.drop_frame(e.element().frame, DropReason::TxQueueFull);
        }
    }

    /// Hands a burst's L4 packets to their protocols, after its ARP input: unknown protocols
    /// first (RFC 1122 3.2.2.1: protocol unreachable), then ICMP, UDP and TCP.
    pub(crate) fn l4_input(&mut self, l4: &mut L4Bursts, now: Instant) {
        if !l4.other.is_empty() {
            for p in l4.other.drain(..) {
                self.proto_unreachable(p, now);
            }
        }
        if !l4.icmp.is_empty() {
            self.icmp_input(&mut l4.icmp, now);
        }
        if !l4.udp.is_empty() {
            self.udp_input(&mut l4.udp, now);
        }
        if !l4.tcp.is_empty() {
            self.tcp_input(&mut l4.tcp, now);
        }
    }

    /// Sends an L4 packet (window or chain = L4 header and payload) from `src` to `dst`.
    /// Routes it, prepends the IPv4 header, fragments if needed, resolves the next hop.
    pub(crate) fn ip_output(
        &mut self,
        f: Frame,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        now: Instant,
    ) -> Result<(), DropReason> {
        self.ip_output_routed(f, src, dst, proto, false, now)
    }

    /// Routes, then [`Stack::ip_output_hop`].
    fn ip_output_routed(
        &mut self,
        f: Frame,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        dont_frag: bool,
        now: Instant,
    ) -> Result<(), DropReason> {
        match self.route_to(dst) {
            Ok((next_hop, broadcast)) => {
                self.ip_output_hop(f, src, dst, proto, next_hop, broadcast, dont_frag, 0, now)
            }
            Err(r) => {
                self.drop_frame(f, r);
                Err(r)
            }
        }
    }

    /// The neighbour to send to for `dst`, and whether `dst` is a broadcast address.
    #[inline]
    pub(crate) fn route_to(&self, dst: Ipv4Addr) -> Result<(Ipv4Addr, bool), DropReason> {
        if self.is_broadcast(dst) {
            return Ok((dst, true));
        }
        match self.routes.lookup(dst) {
            Some(h) => Ok((h.addr, false)),
            None => Err(DropReason::NoRoute),
        }
    }

    /// [`Stack::ip_output`] once the route is known (callers that looked it up to pick a source
    /// address do not look it up twice), with a choice of the Don't Fragment bit and the TOS
    /// byte (UDP sockets' options).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ip_output_via(
        &mut self,
        f: Frame,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        next_hop: Ipv4Addr,
        broadcast: bool,
        dont_frag: bool,
        tos: u8,
        now: Instant,
    ) -> Result<(), DropReason> {
        self.ip_output_hop(f, src, dst, proto, next_hop, broadcast, dont_frag, tos, now)
    }

    /// [`Stack::ip_output_via`] with a choice of the Don't Fragment bit and the TOS byte.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ip_output_hop(
        &mut self,
        f: Frame,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        next_hop: Ipv4Addr,
        broadcast: bool,
        dont_frag: bool,
        tos: u8,
        now: Instant,
    ) -> Result<(), DropReason> {
        if !self.iface.up {
            self.drop_frame(f, DropReason::LinkDown);
            return Err(DropReason::LinkDown);
        }
        let len = self.pool.chain_len(&f);
        let mtu = self.iface.mtu;
        let single = self.pool.is_single(&f);
        let hdr = Ipv4Header {
            src,
            dst,
            proto,
            ttl: DEFAULT_TTL,
            ident: self.next_ident(),
            dont_frag,
            tos,
            more_frags: false,
            frag_offset: 0,
            payload_len: len as u16,
        };
        if single && len + IPV4_HLEN <= mtu {
            match self.pool.push_front(&f, IPV4_HLEN) {
                Some(h) => hdr.write(h),
                None => {
                    self.drop_frame(f, DropReason::PoolEmpty);
                    return Err(DropReason::PoolEmpty);
                }
            }
            self.l2_output(f, next_hop, broadcast, now);
            return Ok(());
        }
        if len + IPV4_HLEN > 65535 || (dont_frag && len + IPV4_HLEN > mtu) {
            // RFC 1191 3: DF set and too big: not fragmented (the sender learns the MTU).
            self.drop_frame(f, DropReason::NeedFragmentation);
            return Err(DropReason::NeedFragmentation);
        }
        self.fragment_output(f, hdr, len, next_hop, broadcast, now)
    }

    /// RFC 791 3.2 fragmentation: copies the payload into MTU-sized fragments (8-byte aligned).
    fn fragment_output(
        &mut self,
        f: Frame,
        mut hdr: Ipv4Header,
        len: usize,
        next_hop: Ipv4Addr,
        broadcast: bool,
        now: Instant,
    ) -> Result<(), DropReason> {
        let max = (self.iface.mtu - IPV4_HLEN) & !7;
        let room = self.pool.frame_size() - self.pool.headroom();
        let per_frag = max.min(room & !7);
        let needed = len.div_ceil(per_frag);
        if self.pool.available() < needed {
            self.drop_frame(f, DropReason::PoolEmpty);
            return Err(DropReason::PoolEmpty);
        }
        // Walk the source chain once, copying consecutive ranges.
        let mut src = Some(f);
        let mut src_off = 0usize;
        let mut offset = 0usize;
        while offset < len {
            let chunk = per_frag.min(len - offset);
            // Checked above, but `l2_output` of an earlier fragment may have taken a frame (an
            // ARP request for the next hop): the rest of the datagram is dropped then.
            let Some(frag) = self.pool.alloc() else {
                if let Some(rest) = src {
                    self.drop_frame(rest, DropReason::PoolEmpty);
                }
                return Err(DropReason::PoolEmpty);
            };
            self.pool
                .push_back(&frag, chunk)
                .expect("fragment sized to fit the frame");
            let mut filled = 0;
            while filled < chunk {
                let cur = src.as_ref().expect("the chain holds `len` bytes");
                let cur_len = self.pool.len(cur);
                if src_off == cur_len {
                    let next = self.pool.chain_split(cur);
                    let done = src.take().expect("present");
                    self.pool.free(done);
                    src = next;
                    src_off = 0;
                    continue;
                }
                let take = (cur_len - src_off).min(chunk - filled);
                let ok = self.pool.copy_between(cur, src_off, &frag, filled, take);
                debug_assert!(ok, "ranges are inside both windows");
                filled += take;
                src_off += take;
            }
            hdr.frag_offset = offset as u16;
            hdr.more_frags = offset + chunk < len;
            hdr.payload_len = chunk as u16;
            let h = self
                .pool
                .push_front(&frag, IPV4_HLEN)
                .expect("fresh frame has headroom");
            hdr.write(h);
            self.counters.add(Event::FragCreated, 1);
            self.l2_output(frag, next_hop, broadcast, now);
            offset += chunk;
        }
        if let Some(rest) = src {
            self.pool.free(rest);
        }
        Ok(())
    }
}
