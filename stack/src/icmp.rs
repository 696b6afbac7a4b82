//! ICMP (RFC 792, RFC 1122 3.2.2): echo replies, destination-unreachable messages (rate limited,
//! RFC 1812 4.3.2.8), errors from the network delivered to the socket they concern, and ping
//! sockets for the stack's own echo requests.

use crate::buf::Frame;
use crate::counters::{DropReason, Event};
use crate::ipv4::{L4Batch, L4Packet};
use crate::stack::{BindError, SendError, Stack};
use crate::time::Instant;
use crate::wire::checksum::{self, Accumulator};
use crate::wire::{ICMP_HLEN, IPV4_HLEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use core::net::{Ipv4Addr, SocketAddrV4};
use slab::Slab;
use std::collections::VecDeque;

/// ICMP types we handle.
pub mod types {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// Destination-unreachable codes.
pub mod codes {
    /// Protocol unreachable.
    pub const PROTO_UNREACHABLE: u8 = 2;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Fragmentation needed and DF set (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
}

/// An ICMP error reported by the network about a datagram a socket sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// ICMP type (3, 11 or 12).
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// Who sent the error.
    pub from: Ipv4Addr,
    /// The original datagram's destination.
    pub dst: SocketAddrV4,
    /// Next-hop MTU, for "fragmentation needed".
    pub mtu: Option<u16>,
}

/// Token bucket limiting the rate of ICMP errors we send.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_sec: u32,
    tokens: u32,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: u32) -> Self {
        TokenBucket {
            per_sec,
            tokens: per_sec,
            last: Instant::ZERO,
        }
    }

    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_micros() as u64;
        let refill = elapsed * self.per_sec as u64 / 1_000_000;
        if refill > 0 {
            self.tokens = (self.tokens as u64 + refill).min(self.per_sec as u64) as u32;
            self.last = now;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

/// An echo reply received on a ping socket.
#[derive(Debug)]
pub struct EchoReply {
    /// Who answered.
    pub src: Ipv4Addr,
    /// Sequence number.
    pub seq: u16,
    /// The payload (window after the 8-byte ICMP header; a chain if it was fragmented).
    pub frame: Frame,
    /// Payload length.
    pub len: usize,
}

/// Handle of a ping socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingHandle(usize);

#[derive(Debug)]
struct PingSocket {
    ident: u16,
    replies: VecDeque<EchoReply>,
}

/// Ping sockets by echo identifier.
#[derive(Debug)]
pub(crate) struct PingTable {
    sockets: Slab<PingSocket>,
    by_ident: crate::hash::Map<u16, usize>,
}

impl Default for PingTable {
    fn default() -> Self {
        PingTable {
            sockets: Slab::new(),
            by_ident: crate::hash::map(0, 0),
        }
    }
}

const PING_QUEUE: usize = 256;

impl PingTable {
    pub fn frames_held(&self, pool: &crate::buf::Pool) -> usize {
        self.sockets
            .iter()
            .flat_map(|(_, s)| s.replies.iter())
            .map(|r| pool.chain_count(&r.frame))
            .sum()
    }

    pub fn clear(&mut self, pool: &mut crate::buf::Pool) {
        for (_, s) in self.sockets.iter_mut() {
            for r in s.replies.drain(..) {
                pool.free(r.frame);
            }
        }
    }
}

impl Stack {
    pub(crate) fn icmp_input(&mut self, batch: &mut L4Batch, now: Instant) {
        for p in batch.drain(..) {
            if p.len < ICMP_HLEN || !self.icmp_checksum_ok(&p) {
                self.drop_frame(p.frame, DropReason::IcmpMalformed);
                continue;
            }
            let head = self.pool.data(&p.frame);
            let (ty, code) = (head[0], head[1]);
            match ty {
                types::ECHO_REQUEST if !p.broadcast => self.echo_reply(p, now),
                types::ECHO_REPLY => self.echo_reply_input(p),
                types::DEST_UNREACHABLE | types::TIME_EXCEEDED | types::PARAMETER_PROBLEM => {
                    self.icmp_error_input(p, ty, code, now)
                }
                // RFC 1122 3.2.2.6: echo to a broadcast address MAY be ignored; we do.
                _ => self.drop_frame(p.frame, DropReason::IcmpIgnored),
            }
        }
    }

    fn icmp_checksum_ok(&self, p: &L4Packet) -> bool {
        if !self.cfg.rx_checksum {
            return true;
        }
        if !p.chained {
            return checksum::checksum(self.pool.data(&p.frame)) == 0;
        }
        let mut acc = Accumulator::new(0);
        for seg in self.pool.chain_iter(&p.frame) {
            acc.add(seg);
        }
        acc.finish() == 0
    }

    /// RFC 792 echo: answer in place, same identifier, sequence and data.
    fn echo_reply(&mut self, p: L4Packet, now: Instant) {
        let buf = self.pool.data_mut(&p.frame);
        let old = u16::from_be_bytes([buf[0], buf[1]]);
        let ck = u16::from_be_bytes([buf[2], buf[3]]);
        buf[0] = types::ECHO_REPLY;
        let new = u16::from_be_bytes([buf[0], buf[1]]);
        let mut c = checksum::update(ck, old, new);
        if c == 0 && !p.chained && buf[..2] == [0, 0] && buf[4..].iter().all(|&b| b == 0) {
            // RFC 1624 eqn. 3 gives +0 for all-zero data, whose checksum is 0xffff (found by
            // fuzzing: fuzz/regressions/icmp/echo-reply-all-zero-checksum).
            c = 0xffff;
        }
        buf[2..4].copy_from_slice(&c.to_be_bytes());
        self.counters.add(Event::IcmpEchoReplies, 1);
        let _ = self.ip_output(p.frame, p.dst, p.src, PROTO_ICMP, now);
    }

    fn echo_reply_input(&mut self, p: L4Packet) {
        let b = self.pool.data(&p.frame);
        let ident = u16::from_be_bytes([b[4], b[5]]);
        let seq = u16::from_be_bytes([b[6], b[7]]);
        let Some(&idx) = self.ping.by_ident.get(&ident) else {
            self.drop_frame(p.frame, DropReason::IcmpEchoNoSocket);
            return;
        };
        let sock = &mut self.ping.sockets[idx];
        if sock.replies.len() >= PING_QUEUE {
            self.drop_frame(p.frame, DropReason::UdpQueueFull);
            return;
        }
        self.pool.pull_front(&p.frame, ICMP_HLEN);
        sock.replies.push_back(EchoReply {
            src: p.src,
            seq,
            frame: p.frame,
            len: p.len - ICMP_HLEN,
        });
    }

    /// An error about a datagram we sent: find the socket from the quoted header (RFC 1122
    /// 3.2.2: the quote holds the original IP header and at least 8 bytes of its payload).
    fn icmp_error_input(&mut self, p: L4Packet, ty: u8, code: u8, now: Instant) {
        let b = self.pool.data(&p.frame);
        let mtu = (ty == types::DEST_UNREACHABLE && code == codes::FRAG_NEEDED)
            .then(|| u16::from_be_bytes([b[6], b[7]]));
        let q = &b[ICMP_HLEN..];
        if q.len() < IPV4_HLEN || q[0] >> 4 != 4 {
            self.drop_frame(p.frame, DropReason::IcmpMalformed);
            return;
        }
        let ihl = ((q[0] & 0x0f) as usize) * 4;
        if ihl < IPV4_HLEN || q.len() < ihl + 8 {
            self.drop_frame(p.frame, DropReason::IcmpMalformed);
            return;
        }
        let proto = q[9];
        let src = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
        let dst = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
        let l4 = &q[ihl..];
        let sport = u16::from_be_bytes([l4[0], l4[1]]);
        let dport = u16::from_be_bytes([l4[2], l4[3]]);
        let err = IcmpError {
            icmp_type: ty,
            code,
            from: p.src,
            dst: SocketAddrV4::new(dst, dport),
            mtu,
        };
        let local = SocketAddrV4::new(src, sport);
        let delivered = match proto {
            PROTO_UDP => self.udp_deliver_error(local, err),
            PROTO_TCP => {
                let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
                self.tcp_icmp_error(local, err.dst, seq, err, now)
            }
            _ => false,
        };
        if delivered {
            self.counters.add(Event::IcmpErrorsDelivered, 1);
            self.pool.free(p.frame);
        } else {
            self.drop_frame(p.frame, DropReason::IcmpErrorNoSocket);
        }
    }

    /// Sends a destination-unreachable error about `p` (whose window is its L4 header), unless it
    /// was sent to a broadcast address (RFC 1122 3.2.2) or the rate limit says no. Frees `p`.
    pub(crate) fn send_unreachable(&mut self, p: L4Packet, code: u8, now: Instant) {
        if p.broadcast {
            self.pool.free(p.frame);
            return;
        }
        if !self.unreach_bucket.take(now) {
            self.counters.add(Event::IcmpUnreachRateLimited, 1);
            self.pool.free(p.frame);
            return;
        }
        // Quote the original IP header and as much payload as keeps the error within 576 bytes
        // (RFC 1812 4.3.2.3).
        let Some(err) = self.pool.alloc() else {
            self.drop_frame(p.frame, DropReason::PoolEmpty);
            return;
        };
        self.pool.push_front(&p.frame, p.ip_hdr_len);
        let orig = self.pool.data(&p.frame);
        let quote = orig.len().min(576 - IPV4_HLEN - ICMP_HLEN);
        let buf = self
            .pool
            .push_back(&err, ICMP_HLEN + quote)
            .expect("576 bytes fit any frame");
        buf[..ICMP_HLEN].copy_from_slice(&[types::DEST_UNREACHABLE, code, 0, 0, 0, 0, 0, 0]);
        let ok = self.pool.copy_between(&p.frame, 0, &err, ICMP_HLEN, quote);
        debug_assert!(ok);
        let c = checksum::checksum(self.pool.data(&err));
        self.pool.data_mut(&err)[2..4].copy_from_slice(&c.to_be_bytes());
        self.pool.free(p.frame);
        self.counters.add(Event::IcmpUnreachSent, 1);
        let _ = self.ip_output(err, p.dst, p.src, PROTO_ICMP, now);
    }

    pub(crate) fn proto_unreachable(&mut self, p: L4Packet, now: Instant) {
        self.counters.drop(DropReason::Ipv4UnknownProtocol);
        self.send_unreachable(p, codes::PROTO_UNREACHABLE, now);
    }

    /// Opens a ping socket receiving echo replies with identifier `ident`.
    pub fn ping_open(&mut self, ident: u16) -> Result<PingHandle, BindError> {
        if self.ping.by_ident.contains_key(&ident) {
            return Err(BindError::AddrInUse);
        }
        let idx = self.ping.sockets.insert(PingSocket {
            ident,
            replies: VecDeque::with_capacity(16),
        });
        self.ping.by_ident.insert(ident, idx);
        Ok(PingHandle(idx))
    }

    /// Closes a ping socket, freeing replies not yet taken.
    pub fn ping_close(&mut self, h: PingHandle) {
        if let Some(s) = self.ping.sockets.try_remove(h.0) {
            self.ping.by_ident.remove(&s.ident);
            for r in s.replies {
                self.pool.free(r.frame);
            }
        }
    }

    /// Sends an echo request with `payload` to `dst`.
    pub fn ping_send(
        &mut self,
        h: PingHandle,
        dst: Ipv4Addr,
        seq: u16,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), SendError> {
        let ident = self
            .ping
            .sockets
            .get(h.0)
            .ok_or(SendError::InvalidHandle)?
            .ident;
        let mut hdr = [types::ECHO_REQUEST, 0, 0, 0, 0, 0, 0, 0];
        hdr[4..6].copy_from_slice(&ident.to_be_bytes());
        hdr[6..8].copy_from_slice(&seq.to_be_bytes());
        // The source first: failing after `build_l4` would leak its frames (found by fuzzing:
        // ping_send without an address; fuzz/regressions/stack/ping-send-no-address-leak).
        let next_hop = self.routes.lookup(dst).map(|h| h.addr).unwrap_or(dst);
        let src = self.source_for(next_hop).ok_or(SendError::NoAddress)?;
        let f = self.build_l4(&hdr, payload)?;
        let mut acc = Accumulator::new(0);
        for seg in self.pool.chain_iter(&f) {
            acc.add(seg);
        }
        let c = acc.finish();
        self.pool.data_mut(&f)[2..4].copy_from_slice(&c.to_be_bytes());
        self.ip_output(f, src, dst, PROTO_ICMP, now)
            .map_err(SendError::from)
    }

    /// Takes the next echo reply; free its frame when done.
    pub fn ping_recv(&mut self, h: PingHandle) -> Option<EchoReply> {
        self.ping.sockets.get_mut(h.0)?.replies.pop_front()
    }

    /// Builds an L4 packet from a header and a payload of any length (a chain when it exceeds one
    /// frame).
    pub(crate) fn build_l4(&mut self, hdr: &[u8], payload: &[u8]) -> Result<Frame, SendError> {
        let room = self.pool.frame_size() - self.pool.headroom();
        let total = hdr.len() + payload.len();
        if total > 65535 - IPV4_HLEN {
            return Err(SendError::TooLarge);
        }
        let frames = total.div_ceil(room).max(1);
        if self.pool.available() < frames {
            self.counters.drop(DropReason::PoolEmpty);
            return Err(SendError::PoolEmpty);
        }
        let head = self.pool.alloc().expect("checked availability");
        let first = (room - hdr.len()).min(payload.len());
        let b = self
            .pool
            .push_back(&head, hdr.len() + first)
            .expect("fits: sized from the frame room");
        b[..hdr.len()].copy_from_slice(hdr);
        b[hdr.len()..].copy_from_slice(&payload[..first]);
        let mut rest = &payload[first..];
        while !rest.is_empty() {
            let n = rest.len().min(room);
            let f = self
                .pool
                .alloc_from(&rest[..n])
                .expect("checked availability");
            self.pool.chain_append(&head, f);
            rest = &rest[n..];
        }
        Ok(head)
    }
}
