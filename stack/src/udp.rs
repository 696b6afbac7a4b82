//! UDP (RFC 768, RFC 1122 4.1): sockets bound to (address, port), found by hash, each with a
//! bounded queue of received datagrams held as frames (zero copy), and an error queue fed by ICMP.
//!
//! Demultiplexing: exact (local address, port) first, then (0.0.0.0, port). One hash probe or two
//! per datagram, whatever the number of sockets.

use crate::buf::{Frame, Pool};
use crate::counters::{DropReason, Event};
use crate::icmp::{codes, IcmpError};
use crate::ipv4::flow::{FastIpv4, ETH_IPV4_HLEN};
use crate::ipv4::{L4Batch, L4Packet};
use crate::stack::{BindError, SendError, Stack};
use crate::time::Instant;
use crate::wire::checksum::{self, Accumulator};
use crate::wire::{ETH_HLEN, IPV4_HLEN, PROTO_UDP, UDP_HLEN};
use core::net::{Ipv4Addr, SocketAddrV4};
use slab::Slab;
use std::collections::VecDeque;

/// First ephemeral port (IANA dynamic range, RFC 6335).
pub const EPHEMERAL_FIRST: u16 = 49152;
const ERROR_QUEUE: usize = 16;

/// Handle of a UDP socket. A handle of a closed socket stays invalid even if its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpHandle {
    idx: u32,
    gen: u32,
}

/// Datagrams a UDP socket always may queue, whatever the pool's level ([`Stack::rx_floor`]):
/// request/response traffic keeps working under memory pressure; only deeper queues pay.
pub const UDP_SHALLOW_QUEUE: usize = 16;

/// A received datagram: its payload is the frame's window (a chain if it was reassembled).
#[derive(Debug)]
pub struct UdpDatagram {
    /// Payload frame; give it back with `Pool::free`, or send it on (echo) with `udp_send`.
    pub frame: Frame,
    /// Sender.
    pub src: SocketAddrV4,
    /// Destination it was sent to (our address, or a broadcast address).
    pub dst: SocketAddrV4,
    /// Payload length (over the whole chain).
    pub len: usize,
    /// The IPv4 TOS byte it came with; [`UdpDatagram::ecn`] is its ECN field.
    pub tos: u8,
}

impl UdpDatagram {
    /// The ECN field (RFC 3168): 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
    pub fn ecn(&self) -> u8 {
        self.tos & 3
    }
}

/// A UDP socket's IP options for what it sends ([`Stack::udp_set_options`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// Set Don't Fragment (RFC 791) on its datagrams: one larger than the MTU is refused
    /// instead of being
    /// fragmented ([`SendError::TooLarge`]); path MTU discovery (QUIC, RFC 9000 14.2) needs it.
    pub dont_frag: bool,
    /// The TOS byte written in its IPv4 headers: DSCP and the ECN field (RFC 3168).
    pub tos: u8,
}

#[derive(Debug)]
struct UdpSocket {
    gen: u32,
    local: SocketAddrV4,
    rx: VecDeque<UdpDatagram>,
    errors: VecDeque<IcmpError>,
    /// Queued in `UdpTable::ready`.
    notified: bool,
    opts: UdpOptions,
}

/// The socket table.
#[derive(Debug)]
pub(crate) struct UdpTable {
    sockets: Slab<UdpSocket>,
    by_addr: crate::hash::Map<SocketAddrV4, usize>,
    next_gen: u32,
    queue_cap: usize,
    /// Sockets that received a datagram or an error since the last `udp_take_ready`, each once.
    ready: Vec<u32>,
    /// The destination the last datagram was delivered to and its socket: tried before the hash
    /// lookup (a flow's datagrams find their socket once). Forgotten on every bind and close.
    last: Option<(SocketAddrV4, usize)>,
}

impl UdpTable {
    pub fn new(queue_cap: usize, seed: u64) -> Self {
        UdpTable {
            sockets: Slab::new(),
            by_addr: crate::hash::map(16, seed),
            next_gen: 1,
            queue_cap: queue_cap.max(1),
            ready: Vec::new(),
            last: None,
        }
    }

    fn get_mut(&mut self, h: UdpHandle) -> Option<&mut UdpSocket> {
        self.sockets
            .get_mut(h.idx as usize)
            .filter(|s| s.gen == h.gen)
    }

    fn get(&self, h: UdpHandle) -> Option<&UdpSocket> {
        self.sockets.get(h.idx as usize).filter(|s| s.gen == h.gen)
    }

    #[inline]
    fn lookup(&self, dst: SocketAddrV4) -> Option<usize> {
        self.by_addr
            .get(&dst)
            .or_else(|| {
                self.by_addr
                    .get(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dst.port()))
            })
            .copied()
    }

    fn port_in_use(&self, port: u16) -> bool {
        // Rare path (bind): any address on this port.
        self.by_addr.keys().any(|a| a.port() == port)
    }

    pub fn frames_held(&self, pool: &Pool) -> usize {
        self.sockets
            .iter()
            .flat_map(|(_, s)| s.rx.iter())
            .map(|d| pool.chain_count(&d.frame))
            .sum()
    }

    pub fn clear(&mut self, pool: &mut Pool) {
        for (_, s) in self.sockets.iter_mut() {
            for d in s.rx.drain(..) {
                pool.free(d.frame);
            }
        }
    }
}

impl Stack {
    /// Binds a UDP socket. Address `0.0.0.0` receives on every address; port 0 picks an ephemeral
    /// port from the seeded generator.
    pub fn udp_bind(&mut self, local: SocketAddrV4) -> Result<UdpHandle, BindError> {
        if !local.ip().is_unspecified() && !self.is_local_addr(*local.ip()) {
            return Err(BindError::AddrNotAvailable);
        }
        let local = if local.port() == 0 {
            let span = (u16::MAX - EPHEMERAL_FIRST) as u64 + 1;
            let start = self.rng.next_u64() % span;
            let port = (0..span)
                .map(|i| EPHEMERAL_FIRST + ((start + i) % span) as u16)
                .find(|p| !self.udp.port_in_use(*p))
                .ok_or(BindError::NoPortLeft)?;
            SocketAddrV4::new(*local.ip(), port)
        } else {
            let wild = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local.port());
            if self.udp.by_addr.contains_key(&local) || self.udp.by_addr.contains_key(&wild) {
                return Err(BindError::AddrInUse);
            }
            if local.ip().is_unspecified() && self.udp.port_in_use(local.port()) {
                return Err(BindError::AddrInUse);
            }
            local
        };
        let gen = self.udp.next_gen;
        self.udp.next_gen = self.udp.next_gen.wrapping_add(1).max(1);
        let cap = self.udp.queue_cap.min(256);
        let idx = self.udp.sockets.insert(UdpSocket {
            gen,
            local,
            rx: VecDeque::with_capacity(cap),
            errors: VecDeque::new(),
            notified: false,
            opts: UdpOptions::default(),
        });
        self.udp.by_addr.insert(local, idx);
        // What a destination finds may change with any bind or close: the remembered socket goes.
        self.udp.last = None;
        Ok(UdpHandle {
            idx: idx as u32,
            gen,
        })
    }

    /// Closes a socket, freeing datagrams not yet received.
    pub fn udp_close(&mut self, h: UdpHandle) {
        if self.udp.get(h).is_none() {
            return;
        }
        let s = self.udp.sockets.remove(h.idx as usize);
        self.udp.by_addr.remove(&s.local);
        self.udp.last = None;
        for d in s.rx {
            self.pool.free(d.frame);
        }
    }

    /// Every bound UDP socket: its local address and the datagrams waiting in its receive queue
    /// (a listing like `ss -u`).
    pub fn udp_sockets(&self) -> impl Iterator<Item = (SocketAddrV4, usize)> + '_ {
        self.udp.sockets.iter().map(|(_, s)| (s.local, s.rx.len()))
    }

    /// Sets the socket's IP options for what it sends from now on (DF, TOS/ECN). False for a
    /// closed socket.
    pub fn udp_set_options(&mut self, h: UdpHandle, opts: UdpOptions) -> bool {
        match self.udp.get_mut(h) {
            Some(s) => {
                s.opts = opts;
                true
            }
            None => false,
        }
    }

    /// The socket's IP options ([`Stack::udp_set_options`]).
    pub fn udp_options(&self, h: UdpHandle) -> Option<UdpOptions> {
        self.udp.get(h).map(|s| s.opts)
    }

    /// The socket's local address.
    pub fn udp_local_addr(&self, h: UdpHandle) -> Option<SocketAddrV4> {
        self.udp.get(h).map(|s| s.local)
    }

    /// Hands out, once each, the sockets that received a datagram or an ICMP error since the last
    /// call (a runtime serves only those; cost per event independent of the socket count).
    pub fn udp_take_ready(&mut self, out: &mut Vec<UdpHandle>) {
        for idx in self.udp.ready.drain(..) {
            if let Some(s) = self.udp.sockets.get_mut(idx as usize) {
                s.notified = false;
                out.push(UdpHandle { idx, gen: s.gen });
            }
        }
    }

    /// Takes the next received datagram.
    pub fn udp_recv(&mut self, h: UdpHandle) -> Option<UdpDatagram> {
        self.udp.get_mut(h)?.rx.pop_front()
    }

    /// Takes up to `max` datagrams at once, appending them to `out`. Returns how many.
    pub fn udp_recv_batch(
        &mut self,
        h: UdpHandle,
        out: &mut Vec<UdpDatagram>,
        max: usize,
    ) -> usize {
        let Some(s) = self.udp.get_mut(h) else {
            return 0;
        };
        let n = max.min(s.rx.len());
        out.extend(s.rx.drain(..n));
        n
    }

    /// Datagrams waiting on the socket.
    pub fn udp_pending(&self, h: UdpHandle) -> usize {
        self.udp.get(h).map_or(0, |s| s.rx.len())
    }

    /// Takes the oldest ICMP error reported for datagrams this socket sent.
    pub fn udp_take_error(&mut self, h: UdpHandle) -> Option<IcmpError> {
        self.udp.get_mut(h)?.errors.pop_front()
    }

    /// A frame for a UDP payload: window empty, headroom for Ethernet, IPv4 and UDP headers.
    pub fn udp_alloc(&mut self) -> Option<Frame> {
        let f = self.pool.alloc()?;
        let hr = self.pool.headroom();
        let ok = self
            .pool
            .set_window(&f, hr.max(ETH_HLEN + IPV4_HLEN + UDP_HLEN), 0);
        debug_assert!(ok);
        Some(f)
    }

    /// The free frames below which received data is no longer queued beyond a shallow queue:
    /// 1/4 of the pool. Below it sit, in order, what senders may still take (an application
    /// runtime lends send frames down to 1/8, cnet-socket's `refill_spare`) and TCP's reserves
    /// (1/16, 1/32): received data that nobody reads cannot starve a sender, the driver or
    /// TCP's control segments. UDP sockets ([`UDP_SHALLOW_QUEUE`]) and the socket runtime's
    /// receive lending use it.
    pub fn rx_floor(&self) -> usize {
        self.pool.capacity() / 4
    }

    /// Sends `payload` (the frame's window, or a chain) to `dst`, zero copy when it fits the MTU:
    /// the UDP and IP headers are written into the frame's headroom. The frame is consumed even on
    /// error.
    pub fn udp_send(
        &mut self,
        h: UdpHandle,
        payload: Frame,
        dst: SocketAddrV4,
        now: Instant,
    ) -> Result<(), SendError> {
        self.udp_send_summed(h, payload, None, dst, now, None)
    }

    /// [`Stack::udp_send`] from source address `src` (Linux's `IP_PKTINFO` on `sendmsg`): a
    /// socket bound to every address answers a request from the address it was sent to
    /// ([`UdpDatagram::dst`]), as RFC 1122 4.1.3.5 asks of a reply and as a client that checks
    /// its peer's address (QUIC) needs. `src` must be one of the interface's addresses and, for a
    /// socket bound to one address, that address; else `BadSource` and the frame is freed.
    pub fn udp_send_from(
        &mut self,
        h: UdpHandle,
        payload: Frame,
        src: Ipv4Addr,
        dst: SocketAddrV4,
        now: Instant,
    ) -> Result<(), SendError> {
        self.udp_send_summed(h, payload, Some(src), dst, now, None)
    }

    /// [`Stack::udp_send`]; `psum`: the payload's one's-complement sum (`checksum::sum` form) when
    /// the caller has it (it copied a single-frame payload in with `checksum::copy_sum`), so the
    /// checksum does not read the payload again.
    fn udp_send_summed(
        &mut self,
        h: UdpHandle,
        payload: Frame,
        src: Option<Ipv4Addr>,
        dst: SocketAddrV4,
        now: Instant,
        psum: Option<u64>,
    ) -> Result<(), SendError> {
        let Some((mut local, opts)) = self.udp.get(h).map(|s| (s.local, s.opts)) else {
            self.pool.free(payload);
            return Err(SendError::InvalidHandle);
        };
        if let Some(src) = src {
            let bound_elsewhere = !local.ip().is_unspecified() && *local.ip() != src;
            if bound_elsewhere || !self.is_local_addr(src) {
                self.pool.free(payload);
                return Err(SendError::BadSource);
            }
            local.set_ip(src);
        }
        // One metadata access for the checks (a handle the pool does not know reads as a frame
        // without headroom: refused, and its free counted as a double free).
        let (headroom, first_len, single) = self.pool.shape(&payload).unwrap_or((0, 0, true));
        let len = if single {
            first_len
        } else {
            self.pool.chain_len(&payload)
        };
        if len + UDP_HLEN + IPV4_HLEN > 65535 {
            self.pool.free(payload);
            return Err(SendError::TooLarge);
        }
        if headroom < UDP_HLEN + IPV4_HLEN + ETH_HLEN {
            self.pool.free(payload);
            return Err(SendError::NoHeadroom);
        }
        // Fast path: a known flow, one frame that fits the MTU. Same bytes, counters and drops as
        // the routed path (which fills the cache).
        if single && self.iface.up && len + UDP_HLEN + IPV4_HLEN <= self.iface.mtu {
            if let Some(flow) = self.flows.get(*dst.ip(), now) {
                let (eth, src_wild) = (flow.eth, flow.src_wild);
                let src_ip = if local.ip().is_unspecified() {
                    src_wild
                } else {
                    *local.ip()
                };
                self.udp_emit(payload, len, local.port(), src_ip, dst, &eth, opts, psum);
                return Ok(());
            }
        }
        self.udp_send_routed(payload, len, local, opts, dst, now, psum)
    }

    /// [`Stack::udp_send_summed`] through routing, source choice and neighbour resolution (then
    /// the flow cache is filled): out of line, so that the fast path's frame stays small.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn udp_send_routed(
        &mut self,
        payload: Frame,
        len: usize,
        local: SocketAddrV4,
        opts: UdpOptions,
        dst: SocketAddrV4,
        now: Instant,
        psum: Option<u64>,
    ) -> Result<(), SendError> {
        let dst_ip = *dst.ip();
        let (next_hop, broadcast) = match self.route_to(dst_ip) {
            Ok(r) => r,
            Err(r) => {
                self.drop_frame(payload, r);
                return Err(SendError::from(r));
            }
        };
        let src_ip = if local.ip().is_unspecified() {
            match self.source_for(next_hop) {
                Some(a) => a,
                None => {
                    self.pool.free(payload);
                    return Err(SendError::NoAddress);
                }
            }
        } else {
            *local.ip()
        };
        let ulen = (len + UDP_HLEN) as u16;
        let pseudo = checksum::pseudo_header(src_ip, *dst.ip(), PROTO_UDP, ulen as u32);
        let mut hdr = [0u8; UDP_HLEN];
        hdr[0..2].copy_from_slice(&local.port().to_be_bytes());
        hdr[2..4].copy_from_slice(&dst.port().to_be_bytes());
        hdr[4..6].copy_from_slice(&ulen.to_be_bytes());
        let c = if self.pool.is_single(&payload) {
            // The header is 8 bytes (even), so its sum and the payload's simply add.
            let payload_sum = psum.unwrap_or_else(|| checksum::sum(self.pool.data(&payload)));
            let s = pseudo + checksum::sum(&hdr) + payload_sum;
            !checksum::fold(s)
        } else {
            let mut acc = Accumulator::new(pseudo);
            acc.add(&hdr);
            for seg in self.pool.chain_iter(&payload) {
                acc.add(seg);
            }
            acc.finish()
        };
        // RFC 768: a computed zero is sent as all ones.
        let c = if c == 0 { 0xffff } else { c };
        hdr[6..8].copy_from_slice(&c.to_be_bytes());
        self.pool
            .push_front(&payload, UDP_HLEN)
            .expect("headroom checked")
            .copy_from_slice(&hdr);
        self.counters.add(Event::UdpSent, 1);
        let r = self
            .ip_output_via(
                payload,
                src_ip,
                *dst.ip(),
                PROTO_UDP,
                next_hop,
                broadcast,
                opts.dont_frag,
                opts.tos,
                now,
            )
            .map_err(SendError::from);
        if r.is_ok() {
            self.flow_fill(dst_ip, next_hop, broadcast, now);
        }
        r
    }

    /// The fast path's output: Ethernet, IPv4 and UDP headers (42 bytes) written in one go in
    /// front of a single-frame payload of `len` bytes (whose sum is `psum` when known), then
    /// queued. The caller checked the headroom, the MTU and the link. Inlined into its two
    /// callers (its arguments are most of its inputs).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn udp_emit(
        &mut self,
        payload: Frame,
        len: usize,
        sport: u16,
        src: Ipv4Addr,
        dst: SocketAddrV4,
        eth: &[u8; ETH_HLEN],
        opts: UdpOptions,
        psum: Option<u64>,
    ) {
        const HDRS: usize = ETH_IPV4_HLEN + UDP_HLEN;
        let ulen = (len + UDP_HLEN) as u16;
        let dport = dst.port();
        let ip = FastIpv4 {
            src,
            dst: *dst.ip(),
            proto: PROTO_UDP,
            total: ulen + IPV4_HLEN as u16,
            ident: self.next_ident(),
            dont_frag: opts.dont_frag,
            tos: opts.tos,
        };
        // Headers in front of the payload, and the payload to sum, from one pool access.
        let Some((h, data)) = self.pool.push_front_split::<HDRS>(&payload) else {
            // Unreachable: the caller checked the headroom.
            self.drop_frame(payload, DropReason::PoolEmpty);
            return;
        };
        // Pseudo-header (addresses, protocol, length), UDP header words, payload, all in the
        // CPU's byte order (RFC 1071 2(B)): one fold, and the field stored in that order.
        let payload_sum = match psum {
            Some(s) => checksum::network_to_native(s),
            None => checksum::sum_native(data),
        };
        let udp_sum = checksum::pseudo_native(src, *dst.ip(), PROTO_UDP, ulen)
            + u64::from(ulen.to_be())
            + u64::from(sport.to_be())
            + u64::from(dport.to_be())
            + payload_sum;
        let c = !checksum::fold(udp_sum);
        // RFC 768: a computed zero is sent as all ones (either byte order).
        let c = if c == 0 { 0xffff } else { c };
        let (hdrs, u) = h.split_at_mut(ETH_IPV4_HLEN);
        let Ok(hdrs) = <&mut [u8; ETH_IPV4_HLEN]>::try_from(hdrs) else {
            unreachable!("split at ETH_IPV4_HLEN");
        };
        ip.write(hdrs, eth);
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&ulen.to_be_bytes());
        u[6..8].copy_from_slice(&c.to_ne_bytes());
        self.counters.add(Event::UdpSent, 1);
        self.enqueue_tx(payload);
    }

    /// Copies `data` into pool frames and sends it (datagrams up to 65507 bytes, fragmented as
    /// needed).
    pub fn udp_send_slice(
        &mut self,
        h: UdpHandle,
        data: &[u8],
        dst: SocketAddrV4,
        now: Instant,
    ) -> Result<(), SendError> {
        if self.udp.get(h).is_none() {
            return Err(SendError::InvalidHandle);
        }
        if data.len() + UDP_HLEN + IPV4_HLEN > 65535 {
            return Err(SendError::TooLarge);
        }
        let room = self.pool.frame_size() - self.pool.headroom();
        if data.len() <= room {
            // One frame: copied and summed in one pass (issue #17).
            let Some(f) = self.pool.alloc() else {
                self.counters.drop(DropReason::PoolEmpty);
                return Err(SendError::PoolEmpty);
            };
            if let Some(buf) = self.pool.push_back(&f, data.len()) {
                let sum = checksum::copy_sum(buf, data);
                return self.udp_send_summed(h, f, None, dst, now, Some(sum));
            }
            // Not expected (the length is within the frame's room): the general path below.
            self.pool.free(f);
        }
        let f = self.build_l4(&[], data)?;
        self.udp_send(h, f, dst, now)
    }

    pub(crate) fn udp_deliver_error(&mut self, local: SocketAddrV4, err: IcmpError) -> bool {
        let Some(idx) = self.udp.lookup(local) else {
            return false;
        };
        let s = &mut self.udp.sockets[idx];
        if s.errors.len() >= ERROR_QUEUE {
            s.errors.pop_front();
        }
        s.errors.push_back(err);
        if !s.notified {
            s.notified = true;
            self.udp.ready.push(idx as u32);
        }
        true
    }

    /// The UDP checksum of a reassembled datagram (a frame chain) verifies.
    fn udp_chain_checksum_ok(&self, p: &L4Packet) -> bool {
        let mut acc = Accumulator::new(checksum::pseudo_header(
            p.src,
            p.dst,
            PROTO_UDP,
            p.len as u32,
        ));
        for seg in self.pool.chain_iter(&p.frame) {
            acc.add(seg);
        }
        acc.finish() == 0
    }

    pub(crate) fn udp_input(&mut self, batch: &mut L4Batch, now: Instant) {
        // Per-flow work: traffic is mostly one flow, so the socket found for the previous
        // datagram's destination (in this burst or an earlier one: `UdpTable::last`) is tried
        // first; deliveries are counted once per burst.
        let mut last = self.udp.last;
        let mut delivered = 0;
        let verify = self.cfg.rx_checksum;
        for mut p in batch.drain(..) {
            // The header and, for a single frame, the checksum from one read of the window.
            let b = self.pool.data(&p.frame);
            let Some(&h) = b.first_chunk::<UDP_HLEN>() else {
                self.drop_frame(p.frame, DropReason::UdpMalformed);
                continue;
            };
            let sport = u16::from_be_bytes([h[0], h[1]]);
            let dport = u16::from_be_bytes([h[2], h[3]]);
            let ulen = u16::from_be_bytes([h[4], h[5]]) as usize;
            let stored = u16::from_be_bytes([h[6], h[7]]);
            // RFC 768: the length covers header and data; the IP payload may only be longer.
            if p.len < UDP_HLEN || ulen < UDP_HLEN || ulen > p.len {
                self.drop_frame(p.frame, DropReason::UdpMalformed);
                continue;
            }
            // RFC 768: zero means the sender computed no checksum. A single frame's window is the
            // whole IP payload, so its first `ulen` bytes are the datagram.
            let sum_ok = if stored == 0 || !verify {
                true
            } else if !p.chained {
                // In the CPU's byte order (all ones is its own byte swap): one fold, no swaps.
                let s = checksum::pseudo_native(p.src, p.dst, PROTO_UDP, ulen as u16)
                    + checksum::sum_native(&b[..ulen.min(b.len())]);
                checksum::fold(s) == 0xffff
            } else {
                // Verified below, once the length is settled.
                false
            };
            if ulen < p.len {
                if p.chained {
                    self.drop_frame(p.frame, DropReason::UdpMalformed);
                    continue;
                }
                self.pool.truncate(&p.frame, ulen);
                p.len = ulen;
            }
            let sum_ok = sum_ok || (p.chained && stored != 0 && self.udp_chain_checksum_ok(&p));
            if !sum_ok {
                // Verification failed; a field that is exactly the pseudo-header sum is a
                // sender's unfinished offload, told apart (and accepted only if configured).
                if stored == checksum::partial(p.src, p.dst, PROTO_UDP, p.len as u32) {
                    if !self.cfg.rx_accept_partial_checksum {
                        self.drop_frame(p.frame, DropReason::UdpPartialChecksum);
                        continue;
                    }
                    self.counters.add(Event::RxPartialChecksumAccepted, 1);
                } else {
                    self.drop_frame(p.frame, DropReason::UdpBadChecksum);
                    continue;
                }
            }
            let dst = SocketAddrV4::new(p.dst, dport);
            let found = match last {
                Some((a, i)) if a == dst => Some(i),
                _ => self.udp.lookup(dst),
            };
            let Some(idx) = found else {
                self.counters.drop(DropReason::UdpNoSocket);
                self.send_unreachable(p, codes::PORT_UNREACHABLE, now);
                continue;
            };
            last = Some((dst, idx));
            let floor = self.rx_floor();
            let s = &mut self.udp.sockets[idx];
            if s.rx.len() >= self.udp.queue_cap {
                self.drop_frame(p.frame, DropReason::UdpQueueFull);
                continue;
            }
            // A flood to one port must not hold the pool: beyond a shallow queue, a datagram is
            // queued only while the pool stays above the receive floor.
            if s.rx.len() >= UDP_SHALLOW_QUEUE && self.pool.available() <= floor {
                self.drop_frame(p.frame, DropReason::UdpRcvMemory);
                continue;
            }
            // The window becomes the payload (one update for a single frame; a chain's head
            // loses the header).
            let len = p.len - UDP_HLEN;
            if p.chained {
                self.pool.pull_front(&p.frame, UDP_HLEN);
            } else {
                let ok = self.pool.narrow(&p.frame, UDP_HLEN, len);
                debug_assert!(ok, "the window is the datagram");
            }
            s.rx.push_back(UdpDatagram {
                frame: p.frame,
                src: SocketAddrV4::new(p.src, sport),
                dst,
                len,
                tos: p.tos,
            });
            if !s.notified {
                s.notified = true;
                self.udp.ready.push(idx as u32);
            }
            delivered += 1;
        }
        self.udp.last = last;
        self.counters.add(Event::UdpDelivered, delivered);
    }
}

#[cfg(test)]
mod flow_tests {
    use crate::buf::Batch;
    use crate::counters::Event;
    use crate::tests::{stack_knowing_b, IP_B};
    use crate::time::Instant;
    use core::net::SocketAddrV4;

    /// A datagram sent through the flow cache is byte for byte the one the slow path builds
    /// (same IP identification), and counts the same.
    #[test]
    fn fast_path_frame_equals_slow_path_frame() {
        let long: Vec<u8> = (0..1001u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for (bound, payload) in [
            ("198.18.0.1:5000", &b"hello, flow"[..]),
            ("0.0.0.0:5001", &b"hello, flow"[..]),
            ("198.18.0.1:5002", &long[..]),
        ] {
            let mut s = stack_knowing_b(64);
            let h = s.udp_bind(bound.parse().unwrap()).unwrap();
            let dst = SocketAddrV4::new(IP_B, 7);
            let mut frames = Vec::new();
            for i in 0..3 {
                // Later sends reuse the first's identification: only the path differs. The
                // first two copy and sum in one pass (`udp_send_slice`: routed, then cached), the
                // third is zero copy (`udp_send`: the payload summed when the header is built).
                let ident = s.ip_ident;
                if i < 2 {
                    s.udp_send_slice(h, payload, dst, Instant::ZERO).unwrap();
                } else {
                    let f = s.udp_alloc().unwrap();
                    s.pool_mut()
                        .push_back(&f, payload.len())
                        .unwrap()
                        .copy_from_slice(payload);
                    s.udp_send(h, f, dst, Instant::ZERO).unwrap();
                }
                s.ip_ident = ident;
                let mut out = Batch::new();
                assert_eq!(s.poll_tx(&mut out, Instant::ZERO), 1);
                for f in out.drain() {
                    frames.push(s.pool().data(&f).to_vec());
                    s.pool_mut().free(f);
                }
                assert!(s.flows.get(IP_B, Instant::ZERO).is_some(), "cached");
            }
            assert_eq!(frames[0], frames[1], "{bound}");
            assert_eq!(frames[0], frames[2], "{bound}");
            assert_eq!(s.counters().get(Event::UdpSent), 3);
            // The UDP checksum verifies (pseudo-header + datagram sums to all ones).
            let f = &frames[0];
            let udp = &f[34..];
            let src = core::net::Ipv4Addr::new(f[26], f[27], f[28], f[29]);
            let pseudo = crate::wire::checksum::pseudo_header(src, IP_B, 17, udp.len() as u32);
            let sum = crate::wire::checksum::fold(pseudo + crate::wire::checksum::sum(udp));
            assert_eq!(sum, 0xffff, "{bound}: UDP checksum");
        }
    }

    /// DF and the TOS byte of a socket's options are written by both send paths, with a valid
    /// header checksum, and the receiver reports the TOS (ECN) it came with.
    #[test]
    fn options_set_df_and_tos_on_both_paths_and_tos_is_received() {
        use crate::tests::{feed, stack, MAC_B};
        use crate::udp::UdpOptions;
        use crate::wire::{parse_ipv4, ETH_HLEN};
        let mut s = stack_knowing_b(64);
        let h = s.udp_bind("0.0.0.0:5000".parse().unwrap()).unwrap();
        let opts = UdpOptions {
            dont_frag: true,
            tos: 0x2e << 2 | 2, // DSCP EF, ECT(0)
        };
        assert!(s.udp_set_options(h, opts));
        assert_eq!(s.udp_options(h), Some(opts));
        let dst = SocketAddrV4::new(IP_B, 7);
        let mut frames = Vec::new();
        for _ in 0..2 {
            let ident = s.ip_ident;
            s.udp_send_slice(h, b"ecn", dst, Instant::ZERO).unwrap();
            s.ip_ident = ident;
            let mut out = Batch::new();
            assert_eq!(s.poll_tx(&mut out, Instant::ZERO), 1);
            for f in out.drain() {
                frames.push(s.pool().data(&f).to_vec());
                s.pool_mut().free(f);
            }
        }
        assert_eq!(
            frames[0], frames[1],
            "slow path (first) and fast path agree"
        );
        let info = parse_ipv4(&frames[1][ETH_HLEN..], true).expect("valid checksum");
        assert!(info.dont_frag);
        assert_eq!(info.tos, opts.tos);
        // The receiver sees the TOS and its ECN field.
        let mut b = stack(MAC_B, IP_B, 64);
        let hb = b.udp_bind(dst).unwrap();
        feed(&mut b, &frames[1..], Instant::ZERO);
        let d = b.udp_recv(hb).expect("delivered");
        assert_eq!((d.tos, d.ecn()), (opts.tos, 2));
        b.pool_mut().free(d.frame);
        // Options of a closed socket are refused.
        s.udp_close(h);
        assert!(!s.udp_set_options(h, opts));
    }

    /// With DF a datagram above the MTU is refused, not fragmented; without, it is fragmented.
    #[test]
    fn df_refuses_a_datagram_above_the_mtu() {
        use crate::stack::SendError;
        let mut s = stack_knowing_b(64);
        let h = s.udp_bind("0.0.0.0:5000".parse().unwrap()).unwrap();
        let dst = SocketAddrV4::new(IP_B, 7);
        let big = vec![7u8; 3000];
        let mut out = Batch::new();
        s.udp_set_options(
            h,
            crate::udp::UdpOptions {
                dont_frag: true,
                tos: 0,
            },
        );
        assert_eq!(
            s.udp_send_slice(h, &big, dst, Instant::ZERO),
            Err(SendError::TooLarge)
        );
        assert_eq!(s.poll_tx(&mut out, Instant::ZERO), 0, "nothing sent");
        s.udp_set_options(h, crate::udp::UdpOptions::default());
        s.udp_send_slice(h, &big, dst, Instant::ZERO).unwrap();
        assert!(s.poll_tx(&mut out, Instant::ZERO) >= 3, "fragmented");
        for f in out.drain() {
            s.pool_mut().free(f);
        }
    }
}
