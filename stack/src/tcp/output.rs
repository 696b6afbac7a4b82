//! Segment output: what to send now (RFC 9293 3.8.6 windows, RFC 5681/6675 recovery, Nagle
//! RFC 9293 3.7.4), and how a segment is built (headers in the payload frame's headroom, or a
//! copy into a fresh frame, summed while copied).
//!
//! Data segments of one [`Stack::tcp_send_data`] call share a [`TxTemplate`]: the window, the
//! flow cache lookup and the Ethernet, IPv4 and TCP headers with their sums are done once per
//! call, each segment patches its own fields (software segmentation, issue #17). Everything else
//! (SYN, RST, FIN, pure ACKs, segments with SACK blocks, a flow not cached) takes the general
//! path, [`Stack::tcp_emit`], which writes the same bytes (`tests/template.rs`).
//!
//! Every segment carrying ACK clears the pending-ACK state (delayed ACK timer, ACK-now flag).

use super::wire::{flags, Emit, SegmentOptions};
use super::*;
use crate::counters::{DropReason, Event};
use crate::ipv4::flow::{FastIpv4, ETH_IPV4_HLEN};
use crate::wire::checksum::{fold, pseudo_header, sum, Accumulator};
use crate::wire::PROTO_TCP;

/// Payload of a segment: bytes `off..off+len` (frame-relative) of the frame with index `frame`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Payload {
    frame: u32,
    off: usize,
    len: usize,
    /// The whole entry, from its start: eligible for in-place headers.
    whole: bool,
    /// The payload's one's-complement sum when known (the whole entry, summed when it was copied
    /// in): the checksum then reads only the header.
    sum: Option<u64>,
}

/// Longest header a [`TxTemplate`] holds: Ethernet, IPv4, TCP with timestamps.
const TMPL_MAX: usize = ETH_IPV4_HLEN + wire::TCP_HLEN + 12;
/// The part of every template header: Ethernet, IPv4, TCP without options.
const T_FIXED: usize = ETH_IPV4_HLEN + wire::TCP_HLEN;
/// Offsets of the per-segment fields in a template's header (Ethernet first).
const T_IP_TOTAL: usize = ETH_HLEN + 2;
const T_IP_IDENT: usize = ETH_HLEN + 4;
const T_IP_CSUM: usize = ETH_HLEN + 10;
const T_SEQ: usize = ETH_IPV4_HLEN + 4;
const T_FLAGS: usize = ETH_IPV4_HLEN + 13;
const T_CSUM: usize = ETH_IPV4_HLEN + 16;

/// The headers of a connection's data segments, built once per [`Stack::tcp_send_data`] call
/// (issue #17: header templates, software segmentation). Within one call nothing that the
/// headers carry changes but the sequence number, the flags (ACK or ACK+PSH), the lengths and
/// the IP identification: ports, addresses, ACK number, window, timestamps and the link header
/// are written once here, with the sums of their 16-bit words, and each segment patches six
/// fields and adds their words to the kept sums (RFC 1071 2(B): the sum is order-free).
///
/// Built only where the general path ([`Stack::tcp_emit`] and [`Stack::tcp_emit_df`]) would
/// write these very headers: a cached flow (`ipv4::flow`), the interface up, and no SACK block
/// to send (a segment carrying one goes the general way). It lives on the stack for one call,
/// so a connection's memory does not grow.
pub(crate) struct TxTemplate {
    /// Ethernet, IPv4 and TCP headers; IP length, identification and checksum, sequence
    /// number, flags and TCP checksum are zero.
    hdr: [u8; TMPL_MAX],
    /// TCP header length (with options).
    tcp_hl: usize,
    /// Sum of the IPv4 header's words as written (the length and identification apart).
    ip_sum: u64,
    /// Sum of the pseudo-header's address and protocol words and the TCP header's words as
    /// written (the TCP length apart).
    tcp_sum: u64,
    /// The window field written, and the right edge it advertises (RFC 9293 3.8.6.2.2).
    window: u16,
    adv: u32,
}

#[cfg(test)]
thread_local! {
    /// Tests (`tests/template.rs`): (templates off, data segments sent from a template).
    pub(crate) static TMPL_TEST: core::cell::Cell<(bool, u64)> =
        const { core::cell::Cell::new((false, 0)) };
}

impl TxTemplate {
    /// Ethernet, IPv4 and TCP headers together.
    #[inline]
    fn hl(&self) -> usize {
        ETH_IPV4_HLEN + self.tcp_hl
    }
}

impl Payload {
    /// Bytes `from..from + len` (sequence space) of queue entry `s`.
    #[inline]
    fn of(s: &SendSeg, from: u32, len: u32) -> Payload {
        let skip = from.wrapping_sub(s.seq);
        let whole = skip == 0 && len == u32::from(s.len);
        Payload {
            frame: s.frame.index(),
            off: s.off as usize + skip as usize,
            len: len as usize,
            whole,
            sum: if whole { s.payload_sum() } else { None },
        }
    }
}

impl Stack {
    /// Our timestamp clock (RFC 7323 5.4: 1 ms ticks, per-connection offset).
    pub(crate) fn tcp_ts_now(offset: u32, now: Instant) -> u32 {
        (now.total_millis() as u32).wrapping_add(offset)
    }

    /// The window field, and the new right edge (never moved left, RFC 9293 3.8.6.2.2; small
    /// openings are not advertised, receiver-side SWS avoidance).
    fn tcp_window_field(c: &Conn, syn: bool) -> (u16, u32) {
        let space = c.rcv_space();
        if syn {
            let w = space.min(65535);
            return (w as u16, c.rcv_nxt.wrapping_add(w));
        }
        let ws = c.rcv_wscale;
        let cur = if seq_gt(c.rcv_adv, c.rcv_nxt) {
            c.rcv_adv.wrapping_sub(c.rcv_nxt)
        } else {
            0
        };
        let mut w = space.min(65535u32 << ws);
        if c.has(F_MEM_CLAMP) {
            // Over its memory share under pressure: no new window beyond the right edge
            // already advertised (which is never withdrawn, RFC 9293 3.8.6.2.2).
            w = w.min(cur);
        }
        let thresh = (c.rcv_buf / 2).min(u32::from(c.rcv_mss));
        if w < cur || (w - cur < thresh && w < c.rcv_buf) {
            w = cur;
        }
        let field = w.div_ceil(1 << ws).min(65535);
        (field as u16, c.rcv_nxt.wrapping_add(field << ws))
    }

    /// A segment carrying ACK goes out: the pending-ACK state is cleared and `adv` (the window's
    /// right edge it advertises) recorded unless it would move the edge left.
    #[inline]
    fn tcp_ack_sent(c: &mut Conn, adv: u32) {
        c.last_ack_sent = c.rcv_nxt;
        c.flags &= !F_ACK_NOW;
        c.t_delack = Instant::MAX;
        if seq_gt(adv, c.rcv_adv) || c.rcv_adv == 0 {
            c.rcv_adv = adv;
        }
    }

    /// Builds and sends one segment of connection `idx`.
    pub(crate) fn tcp_emit(
        &mut self,
        idx: u32,
        seq: u32,
        fl: u8,
        payload: Option<Payload>,
        now: Instant,
    ) -> bool {
        let ts_on = self.cfg.tcp_timestamps;
        let ws_on = self.cfg.tcp_window_scaling;
        let ws_buf = self.cfg.tcp_rcv_buf_max;
        let sack_on = self.cfg.tcp_sack;
        let mtu = self.iface.mtu;
        let c = &mut self.tcp.conns[idx as usize];
        let syn = fl & flags::SYN != 0;
        let mut opts = SegmentOptions::default();
        let mut dsack_sent = false;
        let tsval = Stack::tcp_ts_now(c.ts_offset, now);
        if syn {
            opts.mss = Some(c.rcv_mss);
            if c.state == TcpState::SynSent {
                // Active open: offer everything enabled (RFC 7323 2.2, 3.2; RFC 2018 2).
                if ws_on {
                    c.rcv_wscale = Stack::tcp_wscale_for(c.rcv_buf.max(ws_buf));
                    opts.wscale = Some(c.rcv_wscale);
                }
                opts.sack_permitted = sack_on;
                if ts_on {
                    opts.timestamps = Some((tsval, 0));
                }
            } else {
                // SYN-ACK: only what the peer offered.
                if c.has(F_WS) {
                    opts.wscale = Some(c.rcv_wscale);
                }
                opts.sack_permitted = c.has(F_SACK);
                if c.has(F_TS) {
                    opts.timestamps = Some((tsval, c.ts_recent));
                }
            }
        } else {
            if c.has(F_TS) {
                opts.timestamps = Some((tsval, c.ts_recent));
            }
            if c.has(F_SACK) && fl & flags::ACK != 0 {
                let max = if c.has(F_TS) { 3 } else { 4 };
                // RFC 2883 4: a D-SACK block goes first, in one ACK only.
                if let Some(d) = c.ooo.dsack.take() {
                    opts.sack.push(d);
                    dsack_sent = true;
                }
                if !c.ooo.is_empty() {
                    for b in c.ooo.sack_blocks(max) {
                        if opts.sack.len() < max {
                            opts.sack.push(b);
                        }
                    }
                }
            }
        }
        let (window, adv) = if fl & flags::RST != 0 {
            (0, c.rcv_adv)
        } else {
            Stack::tcp_window_field(c, syn)
        };
        let mut e = Emit {
            src_port: c.local.port(),
            dst_port: c.remote.port(),
            seq,
            ack: c.rcv_nxt,
            flags: fl,
            window,
            opts,
        };
        let len = payload.map_or(0, |p| p.len);
        // SACK blocks give way to payload within the MTU.
        while !e.opts.sack.is_empty() && IPV4_HLEN + e.header_len() + len > mtu {
            e.opts.sack.pop();
        }
        let (local, remote) = (c.local, c.remote);
        let sent_mss = c.mss;
        if dsack_sent {
            self.counters.add(Event::TcpDsacksSent, 1);
        }
        let c = &mut self.tcp.conns[idx as usize];
        if fl & flags::ACK != 0 {
            Stack::tcp_ack_sent(c, adv);
        }
        if syn {
            c.rcv_adv = adv;
        }
        match self.tcp_emit_df(local, remote, &e, payload, now) {
            Ok(()) => true,
            Err(DropReason::NeedFragmentation) => {
                // Our own interface's MTU shrank below the segment (DF is set, RFC 1191 3):
                // send smaller from now on, as on an ICMP fragmentation-needed.
                let mtu = self.iface.mtu;
                if self.tcp.conns[idx as usize].mss == sent_mss {
                    self.tcp_pmtu_lower(idx, mtu);
                }
                false
            }
            Err(_) => false,
        }
    }

    /// Lowers the MSS to what an MTU of `mtu` carries and makes everything in flight go out
    /// again at the new size (Linux `tcp_simple_retransmit`). Returns true if it changed.
    pub(crate) fn tcp_pmtu_lower(&mut self, idx: u32, mtu: usize) -> bool {
        let c = &mut self.tcp.conns[idx as usize];
        let opt = if c.has(F_TS) { 12 } else { 0 };
        let new = (mtu.saturating_sub(IPV4_HLEN + wire::TCP_HLEN + opt)).max(32) as u16;
        if new >= c.mss {
            return false;
        }
        c.mss = new;
        c.snd_nxt = c.snd_una;
        for s in c.sndq.segs.iter_mut() {
            s.flags &= !(sack::RETRANS | sack::LOST);
        }
        self.counters.add(Event::TcpPmtuUpdates, 1);
        self.tcp.touch(idx);
        true
    }

    /// Builds a segment from `e` and an optional payload, checksums it and hands it to IP.
    pub(crate) fn tcp_emit_raw(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        e: &Emit,
        payload: Option<Payload>,
        now: Instant,
    ) -> bool {
        self.tcp_emit_df(local, remote, e, payload, now).is_ok()
    }

    /// [`Stack::tcp_emit_raw`], with the reason when IP did not take the segment. Every TCP
    /// segment leaves with DF set (path MTU discovery, RFC 1191 3 / RFC 9293 3.7.2).
    fn tcp_emit_df(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        e: &Emit,
        payload: Option<Payload>,
        now: Instant,
    ) -> Result<(), DropReason> {
        let hl = e.header_len();
        let need = hl + IPV4_HLEN + ETH_HLEN;
        let mut payload_sum = payload.and_then(|p| p.sum);
        let frame = match payload {
            Some(p) => {
                let src = Frame::from_index(p.frame);
                let f = if p.whole && self.pool.refs(&src) == 1 && p.off >= need {
                    // Zero copy: headers go into the frame's own headroom; we keep our reference.
                    self.pool.set_window(&src, p.off - hl, p.len + hl);
                    Some(self.pool.share(&src))
                } else {
                    self.tcp_copy_payload(&src, p.off, p.len, 0, hl)
                        .map(|(f, psum)| {
                            payload_sum = Some(psum);
                            f
                        })
                };
                // `src` aliases the send queue's handle.
                let _ = src.into_index();
                f
            }
            None => self.tcp_reserve_alloc(false).and_then(|f| {
                let hr = self.pool.headroom().max(IPV4_HLEN + ETH_HLEN);
                if self.pool.set_window(&f, hr, hl) {
                    Some(f)
                } else {
                    self.pool.free(f);
                    None
                }
            }),
        };
        let Some(f) = frame else {
            return Err(self.tcp_no_frame());
        };
        let total = self.pool.len(&f);
        e.write(&mut self.pool.data_mut(&f)[..hl]);
        let pseudo = pseudo_header(*local.ip(), *remote.ip(), PROTO_TCP, total as u32);
        let ck = match payload_sum {
            // The header is a whole number of 32-bit words: the payload's sum needs no swap.
            Some(psum) => !fold(pseudo + sum(&self.pool.data(&f)[..hl]) + psum),
            None => {
                let mut acc = Accumulator::new(pseudo);
                acc.add(self.pool.data(&f));
                acc.finish()
            }
        };
        self.pool.data_mut(&f)[16..18].copy_from_slice(&ck.to_be_bytes());
        self.counters.add(Event::TcpSegsOut, 1);
        let (src, dst) = (*local.ip(), *remote.ip());
        // Fast path (issue #17): a known flow (`ipv4::flow`, as UDP's) and a segment that fits
        // the MTU: the Ethernet and IPv4 headers in one store sequence, no route or neighbour
        // lookup. The same bytes, counters and drops as the path below, which fills the cache.
        if self.iface.up && total + IPV4_HLEN <= self.iface.mtu && self.pool.is_single(&f) {
            if let Some(flow) = self.flows.get(dst, now) {
                let eth = flow.eth;
                let ip = FastIpv4 {
                    src,
                    dst,
                    proto: PROTO_TCP,
                    total: (total + IPV4_HLEN) as u16,
                    ident: self.next_ident(),
                    dont_frag: true,
                    tos: 0,
                };
                let Some(h) = self.pool.push_front(&f, ETH_IPV4_HLEN) else {
                    self.drop_frame(f, DropReason::PoolEmpty);
                    return Err(DropReason::PoolEmpty);
                };
                let Ok(h) = <&mut [u8; ETH_IPV4_HLEN]>::try_from(h) else {
                    unreachable!("push_front returns exactly the bytes asked for");
                };
                ip.write(h, &eth);
                self.enqueue_tx(f);
                return Ok(());
            }
        }
        let (next_hop, broadcast) = match self.route_to(dst) {
            Ok(r) => r,
            Err(r) => {
                self.drop_frame(f, r);
                return Err(r);
            }
        };
        let r = self.ip_output_via(f, src, dst, PROTO_TCP, next_hop, broadcast, true, 0, now);
        if r.is_ok() {
            self.flow_fill(dst, next_hop, broadcast, now);
        }
        r
    }

    /// The template for connection `idx`'s data segments at `now`, or `None` where the general
    /// path must build them (see [`TxTemplate`]).
    fn tcp_tx_template(&self, idx: u32, now: Instant) -> Option<TxTemplate> {
        #[cfg(test)]
        if TMPL_TEST.with(|t| t.get().0) {
            return None;
        }
        let c = &self.tcp.conns[idx as usize];
        if !self.iface.up || (c.has(F_SACK) && (c.ooo.dsack.is_some() || !c.ooo.is_empty())) {
            return None;
        }
        let (src, dst) = (*c.local.ip(), *c.remote.ip());
        let flow = self.flows.get(dst, now)?;
        let (window, adv) = Stack::tcp_window_field(c, false);
        // As `tcp_emit` sets them for a segment with ACK and without SYN or SACK blocks.
        let opts = SegmentOptions {
            timestamps: c
                .has(F_TS)
                .then(|| (Stack::tcp_ts_now(c.ts_offset, now), c.ts_recent)),
            ..SegmentOptions::default()
        };
        let e = Emit {
            src_port: c.local.port(),
            dst_port: c.remote.port(),
            seq: 0,
            ack: c.rcv_nxt,
            flags: flags::ACK,
            window,
            opts,
        };
        let tcp_hl = e.header_len();
        let mut hdr = [0u8; TMPL_MAX];
        let ip = FastIpv4 {
            src,
            dst,
            proto: PROTO_TCP,
            total: 0,
            ident: 0,
            dont_frag: true,
            tos: 0,
        };
        let (front, tcp) = hdr.split_at_mut(ETH_IPV4_HLEN);
        ip.write(front.try_into().ok()?, &flow.eth);
        e.write(&mut tcp[..tcp_hl]);
        hdr[T_IP_CSUM..T_IP_CSUM + 2].fill(0);
        hdr[T_FLAGS] = 0;
        Some(TxTemplate {
            hdr,
            tcp_hl,
            ip_sum: sum(&hdr[ETH_HLEN..ETH_IPV4_HLEN]),
            tcp_sum: pseudo_header(src, dst, PROTO_TCP, 0)
                + sum(&hdr[ETH_IPV4_HLEN..ETH_IPV4_HLEN + tcp_hl]),
            window,
            adv,
        })
    }

    /// One data segment of connection `idx` from template `t`: the bytes, counters and drops of
    /// [`Stack::tcp_emit`] for a segment with ACK that fits the MTU, without building an
    /// [`Emit`], summing headers, or looking the flow up. Headers go into the payload frame's
    /// headroom when it is ours alone, else into a copy. `first`: the call's first segment from
    /// `t`, which records the ACK and window sent.
    fn tcp_emit_tmpl(
        &mut self,
        idx: u32,
        t: &TxTemplate,
        seq: u32,
        fl: u8,
        p: Payload,
        first: bool,
    ) -> Result<(), DropReason> {
        if first {
            // Once per call: for the segments after the first it changes nothing (the ACK
            // number is the same, and so is the window, `tcp_window_field` returning the right
            // edge it just recorded).
            Stack::tcp_ack_sent(&mut self.tcp.conns[idx as usize], t.adv);
        }
        debug_assert_eq!(
            Stack::tcp_window_field(&self.tcp.conns[idx as usize], false),
            (t.window, t.adv)
        );
        let hl = t.hl();
        let src = Frame::from_index(p.frame);
        let (f, psum) =
            if p.whole && p.off >= hl && self.pool.refs(&src) == 1 && self.pool.is_single(&src) {
                // Zero copy: headers go into the frame's own headroom; we keep our reference.
                self.pool.set_window(&src, p.off - hl, p.len + hl);
                (Some(self.pool.share(&src)), p.sum)
            } else {
                match self.tcp_copy_payload(&src, p.off, p.len, ETH_IPV4_HLEN, t.tcp_hl) {
                    Some((f, s)) => (Some(f), Some(s)),
                    None => (None, None),
                }
            };
        // `src` aliases the send queue's handle.
        let _ = src.into_index();
        let Some(f) = f else {
            return Err(self.tcp_no_frame());
        };
        let ident = self.next_ident();
        let tcp_len = (t.tcp_hl + p.len) as u32;
        let ip_total = tcp_len as u16 + IPV4_HLEN as u16;
        let d = self.pool.data_mut(&f);
        let psum = match psum {
            Some(s) => s,
            None => sum(&d[hl..]),
        };
        let ip_ck = !fold(t.ip_sum + u64::from(ip_total) + u64::from(ident));
        let ck = !fold(
            t.tcp_sum
                + u64::from(seq >> 16)
                + u64::from(seq & 0xffff)
                + u64::from(fl)
                + u64::from(tcp_len)
                + psum,
        );
        // Fixed lengths: a few vector stores instead of a `memcpy` call, and patches at constant
        // offsets without bounds checks (every template header has the fixed part).
        if t.tcp_hl == wire::TCP_HLEN {
            d[..T_FIXED].copy_from_slice(&t.hdr[..T_FIXED]);
        } else if hl == TMPL_MAX {
            d[..TMPL_MAX].copy_from_slice(&t.hdr);
        } else {
            d[..hl].copy_from_slice(&t.hdr[..hl]);
        }
        let Some((h, _)) = d.split_first_chunk_mut::<T_FIXED>() else {
            unreachable!("the window holds the headers it was set for");
        };
        h[T_IP_TOTAL..T_IP_TOTAL + 2].copy_from_slice(&ip_total.to_be_bytes());
        h[T_IP_IDENT..T_IP_IDENT + 2].copy_from_slice(&ident.to_be_bytes());
        h[T_IP_CSUM..T_IP_CSUM + 2].copy_from_slice(&ip_ck.to_be_bytes());
        h[T_SEQ..T_SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        h[T_FLAGS] = fl;
        h[T_CSUM..T_CSUM + 2].copy_from_slice(&ck.to_be_bytes());
        self.counters.add(Event::TcpSegsOut, 1);
        #[cfg(test)]
        TMPL_TEST.with(|c| c.set((c.get().0, c.get().1 + 1)));
        self.enqueue_tx(f);
        Ok(())
    }

    /// Counts and returns why no frame could be had for a segment.
    fn tcp_no_frame(&mut self) -> DropReason {
        let why = if self.pool.available() == 0 {
            DropReason::PoolEmpty
        } else {
            DropReason::TcpPoolReserve
        };
        self.counters.drop(why);
        why
    }

    /// A fresh frame whose window is `front` bytes (lower-layer headers written with the TCP
    /// header), `hl` bytes (the TCP header) and a copy of bytes `off..off + len` of `src`'s
    /// buffer, with their sum (copied and summed in one pass, so the checksum then reads only the
    /// header). The source may be in the driver's hands: its window is left alone. `None` when
    /// no frame can be had (the caller counts the drop).
    fn tcp_copy_payload(
        &mut self,
        src: &Frame,
        off: usize,
        len: usize,
        front: usize,
        hl: usize,
    ) -> Option<(Frame, u64)> {
        let f = self.tcp_reserve_alloc(true)?;
        let hr = self.pool.headroom().max(IPV4_HLEN + ETH_HLEN);
        if self.pool.set_window(&f, hr - front, front + hl + len) {
            // A send queue entry lies inside its frame (`tcp_queue_frame` builds it from a
            // window), so the copy cannot fail; were it to, the segment is not sent.
            if let Some(sum) = self
                .pool
                .copy_sum_from_buffer(src, off, &f, front + hl, len)
            {
                return Some((f, sum));
            }
            debug_assert!(false, "send queue entry outside its frame");
        }
        self.pool.free(f);
        None
    }

    /// A bare RST (RFC 9293 3.10.7.1): `ack` adds the ACK flag.
    pub(crate) fn tcp_send_rst_raw(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seq: u32,
        ack: Option<u32>,
        now: Instant,
    ) {
        let e = Emit {
            src_port: local.port(),
            dst_port: remote.port(),
            seq,
            ack: ack.unwrap_or(0),
            flags: flags::RST | if ack.is_some() { flags::ACK } else { 0 },
            window: 0,
            opts: SegmentOptions::default(),
        };
        self.counters.add(Event::TcpResetsSent, 1);
        self.tcp_emit_raw(local, remote, &e, None, now);
    }

    /// RST,ACK for a connection being aborted.
    pub(crate) fn tcp_send_rst_for(&mut self, idx: u32, seq: u32, _ack: u32, now: Instant) {
        self.counters.add(Event::TcpResetsSent, 1);
        self.tcp_emit(idx, seq, flags::RST | flags::ACK, None, now);
    }

    /// SYN (SYN-SENT) or SYN,ACK (SYN-RECEIVED) with our ISS.
    pub(crate) fn tcp_send_syn(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        let fl = if c.state == TcpState::SynSent {
            flags::SYN
        } else {
            flags::SYN | flags::ACK
        };
        let iss = c.iss;
        c.snd_nxt = iss.wrapping_add(1);
        c.snd_max = seq_max(c.snd_max, c.snd_nxt);
        self.tcp_emit(idx, iss, fl, None, now);
    }

    /// A pure ACK.
    pub(crate) fn tcp_send_ack(&mut self, idx: u32, now: Instant) {
        let seq = self.tcp.conns[idx as usize].snd_nxt;
        self.tcp_emit(idx, seq, flags::ACK, None, now);
    }

    /// A window probe / keepalive: an ACK with an old sequence number, which the peer must
    /// answer (RFC 9293 3.8.6.1 and RFC 1122 4.2.3.6, in Linux's form without data).
    pub(crate) fn tcp_send_probe(&mut self, idx: u32, now: Instant) {
        let seq = self.tcp.conns[idx as usize].snd_una.wrapping_sub(1);
        self.tcp_emit(idx, seq, flags::ACK, None, now);
    }

    /// A stateless SYN-ACK carrying a SYN cookie (listener's SYN queue full).
    pub(crate) fn tcp_send_cookie_synack(&mut self, seg: &input::Seg, now: Instant) {
        let Some(l) = self.tcp.lookup_listener(seg.local) else {
            return;
        };
        let rcv_buf = self.tcp.listeners[l as usize].opts.rcv_buf;
        let peer_mss = seg.opts.mss.unwrap_or(536);
        let (iss, _mss) =
            syncookie::make(&self.tcp.key, seg.local, seg.remote, seg.seq, peer_mss, now);
        let mut opts = SegmentOptions {
            mss: Some(
                (self.iface.mtu.saturating_sub(IPV4_HLEN + wire::TCP_HLEN)).min(65535) as u16,
            ),
            ..SegmentOptions::default()
        };
        // Window scale and SACK can only be remembered inside the timestamp.
        if let (true, Some((tsval, _))) = (self.cfg.tcp_timestamps, seg.opts.timestamps) {
            let peer_ws = seg.opts.wscale.filter(|_| self.cfg.tcp_window_scaling);
            let sack = seg.opts.sack_permitted && self.cfg.tcp_sack;
            let off = isn::ts_offset(&self.tcp.key, seg.local, seg.remote);
            let ours = syncookie::encode_ts(Stack::tcp_ts_now(off, now), peer_ws, sack);
            opts.timestamps = Some((ours, tsval));
            opts.sack_permitted = sack;
            if peer_ws.is_some() {
                let rcv_buf = rcv_buf.max(4 * 536);
                opts.wscale = Some(Stack::tcp_wscale_for(rcv_buf.max(self.cfg.tcp_rcv_buf_max)));
            }
        }
        let e = Emit {
            src_port: seg.local.port(),
            dst_port: seg.remote.port(),
            seq: iss,
            ack: seg.seq.wrapping_add(1),
            flags: flags::SYN | flags::ACK,
            window: rcv_buf.min(65535) as u16,
            opts,
        };
        self.counters.add(Event::TcpSynCookiesSent, 1);
        self.tcp_emit_raw(seg.local, seg.remote, &e, None, now);
    }

    pub(crate) fn tcp_arm_rto(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        c.t_rtx = now + c.rtt.rto();
        c.flags |= F_RTO_ARMED;
    }

    /// Sends what the state, the windows and Nagle allow, then a pure ACK if one is still owed.
    pub(crate) fn tcp_output(&mut self, idx: u32, now: Instant) {
        let Some(c) = self.tcp.conns.get(idx as usize) else {
            return;
        };
        match c.state {
            TcpState::Closed | TcpState::Listen | TcpState::SynSent => {}
            TcpState::SynReceived | TcpState::TimeWait => {
                if c.has(F_ACK_NOW) {
                    self.tcp_send_ack(idx, now);
                }
            }
            _ => {
                if self.tcp_send_data(idx, now, false) > 0 {
                    // RFC 8985 7.2: new data (re)starts the loss probe timer.
                    self.tcp_tlp_schedule(idx, now, None);
                }
                if self.tcp.conns[idx as usize].has(F_ACK_NOW) {
                    self.tcp_send_ack(idx, now);
                }
            }
        }
        self.tcp_mem_sync(idx);
        self.tcp_timers_changed(idx);
    }

    fn tcp_payload(&self, idx: u32, i: usize, from: u32, len: u32) -> Payload {
        Payload::of(&self.tcp.conns[idx as usize].sndq.segs[i], from, len)
    }

    /// Retransmits entry `i` whole; `recovery`: a loss-recovery retransmission, which a D-SACK
    /// undo waits for (a loss probe is not).
    pub(crate) fn tcp_retransmit(
        &mut self,
        idx: u32,
        i: usize,
        now: Instant,
        recovery: bool,
    ) -> bool {
        let (seq, len, fl) = {
            let s = &self.tcp.conns[idx as usize].sndq.segs[i];
            let fl = if s.flags & sack::PUSH != 0 {
                flags::ACK | flags::PSH
            } else {
                flags::ACK
            };
            (s.seq, u32::from(s.len), fl)
        };
        let p = self.tcp_payload(idx, i, seq, len);
        if !self.tcp_emit(idx, seq, fl, Some(p), now) {
            return false;
        }
        let c = &mut self.tcp.conns[idx as usize];
        let s = &mut c.sndq.segs[i];
        s.flags |= sack::RETRANS | sack::SENT;
        s.sent = now.total_micros() as u32;
        c.stats.retransmits += 1;
        if recovery {
            c.rack.on_retransmit(seq);
        }
        if !c.has(F_RTO_ARMED) {
            c.t_rtx = now + c.rtt.rto();
            c.flags |= F_RTO_ARMED;
        }
        self.counters.add(Event::TcpRetransSegs, 1);
        true
    }

    /// Splits entry `i` at `at` bytes, copying the tail into a fresh frame.
    fn tcp_split(&mut self, idx: u32, i: usize, at: u16) -> bool {
        let Some(f) = self.tcp_reserve_alloc(true) else {
            return false;
        };
        let hr = self.pool.headroom().max(TCP_HEADROOM);
        let c = &mut self.tcp.conns[idx as usize];
        let s = &mut c.sndq.segs[i];
        let n = usize::from(s.len - at);
        if !self.pool.set_window(&f, hr, n) {
            self.pool.free(f);
            return false;
        }
        let start = usize::from(s.off + at);
        // One copy, summed on the way: the tail's first transmission then reads only its header.
        let Some(sum) = self.pool.copy_sum_from_buffer(&s.frame, start, &f, 0, n) else {
            debug_assert!(false, "send queue entry outside its frame");
            self.pool.free(f);
            return false;
        };
        let tail = SendSeg {
            frame: f,
            seq: s.seq.wrapping_add(u32::from(at)),
            off: hr as u16,
            len: n as u16,
            sent: s.sent,
            flags: s.flags & !sack::COALESCED,
            psum: sack::PayloadSum::new(sum, hr as u16, n as u16),
        };
        s.len = at;
        s.flags &= !sack::PUSH;
        if s.flags & sack::SACKED != 0 {
            // Both halves stay SACKed: the byte count is unchanged.
        }
        c.sndq.segs.insert(i + 1, tail);
        true
    }

    /// New data and retransmissions (RFC 6675 NextSeg order: lost segments first). Returns
    /// the segments of new data sent. `probe`: a tail loss probe (RFC 8985 7.3): at most one
    /// segment of new data, whatever cwnd and Nagle say, within the peer's window.
    pub(crate) fn tcp_send_data(&mut self, idx: u32, now: Instant, probe: bool) -> u32 {
        let mut new_segs = 0u32;
        // Room to send: in the stack's transmit queue, and in the pool, whose last 1/16 stays a
        // reserve (frames on their way out, on the TX ring or in the fill ring are not free:
        // a retransmission storm of thousands of connections must wait for completions, not
        // take the frames receive needs).
        let tx_room = |s: &Stack| {
            s.tx.len() + 2 < s.cfg.tx_queue && s.pool.available() > s.tcp_pool_reserve(true)
        };
        // 1. Loss recovery retransmissions.
        let (recovery, sack_on) = {
            let c = &self.tcp.conns[idx as usize];
            (c.has(F_RECOVERY), c.has(F_SACK))
        };
        let mut pipe = 0u32;
        if recovery && !probe {
            if sack_on {
                let c = &self.tcp.conns[idx as usize];
                pipe = c.sndq.pipe(c.snd_nxt);
                loop {
                    let c = &self.tcp.conns[idx as usize];
                    let Some(i) = c.sndq.next_lost(c.snd_nxt) else {
                        break;
                    };
                    let len = u32::from(c.sndq.segs[i].len);
                    // RFC 6675 5 (C): while cwnd - pipe >= 1 SMSS.
                    if pipe + len > c.cc.cwnd || !tx_room(self) {
                        break;
                    }
                    if !self.tcp_retransmit(idx, i, now, true) {
                        break;
                    }
                    pipe += len;
                }
            } else {
                let c = &self.tcp.conns[idx as usize];
                let head = c
                    .sndq
                    .segs
                    .front()
                    .is_some_and(|s| s.flags & (sack::LOST | sack::RETRANS) == sack::LOST);
                if head && tx_room(self) {
                    self.tcp_retransmit(idx, 0, now, true);
                }
            }
        }
        // 2. New data (and, after an RTO, everything from SND.UNA again).
        let push_cwnd = self.cfg.tcp_push_cwnd_limited;
        let mut budget = 4096usize;
        // The entry expected to hold SND.NXT: after a whole entry went out, the next one (the
        // queue is walked in order, so `find` is O(1) but for the first lookup of the call).
        let mut hint = usize::MAX;
        // The data segments' headers, built at the first segment (none may go out).
        let mut tmpl: Option<TxTemplate> = None;
        let mut tmpl_tried = false;
        let mut tmpl_used = false;
        loop {
            budget -= 1;
            if probe && new_segs > 0 {
                break;
            }
            let c = &self.tcp.conns[idx as usize];
            if c.snd_nxt == c.snd_end || seq_gt(c.snd_nxt, c.snd_end) {
                break;
            }
            if budget == 0 || !tx_room(self) {
                // Resume at the next flush (poll_tx) once the driver took frames.
                self.tcp.touch(idx);
                break;
            }
            let c = &mut self.tcp.conns[idx as usize];
            let Some(i) = c.sndq.find_from(c.snd_nxt, hint) else {
                break;
            };
            hint = i;
            let s = &c.sndq.segs[i];
            if s.flags & sack::SACKED != 0 {
                c.snd_nxt = s.end();
                hint = i + 1;
                continue;
            }
            let mss = c.mss;
            if s.len > mss && c.snd_nxt == s.seq {
                if !self.tcp_split(idx, i, mss) {
                    break;
                }
                continue;
            }
            let c = &mut self.tcp.conns[idx as usize];
            let s = &c.sndq.segs[i];
            let mut n = s.end().wrapping_sub(c.snd_nxt).min(u32::from(mss));
            let last = i + 1 == c.sndq.segs.len();
            let (seg_end, seg_push) = (s.end(), s.flags & sack::PUSH != 0);
            let flight = if recovery && sack_on {
                pipe
            } else {
                c.snd_nxt.wrapping_sub(c.snd_una)
            };
            let nothing_in_flight = c.snd_nxt == c.snd_una;
            let rwnd_end = c.snd_una.wrapping_add(c.snd_wnd);
            if seq_gt(c.snd_nxt.wrapping_add(n), rwnd_end) {
                let usable = if seq_gt(rwnd_end, c.snd_nxt) {
                    rwnd_end.wrapping_sub(c.snd_nxt)
                } else {
                    0
                };
                if nothing_in_flight && usable > 0 {
                    // RFC 9293 3.8.6.2.1: nothing in flight, send what the window allows.
                    n = usable;
                } else {
                    if nothing_in_flight && !c.has(F_PERSIST) {
                        if c.stalled_since == Instant::MAX {
                            c.stalled_since = now;
                        }
                        // Zero window: the persist timer (RFC 9293 3.8.6.1).
                        c.flags |= F_PERSIST;
                        c.flags &= !F_RTO_ARMED;
                        c.t_rtx = now + c.rtt.rto();
                    }
                    break;
                }
            }
            if !nothing_in_flight && flight + n > c.cc.cwnd && !probe {
                break;
            }
            // Nagle (RFC 9293 3.7.4): a short segment waits while data is unacknowledged.
            if !probe
                && n < u32::from(mss)
                && last
                && !nothing_in_flight
                && !c.has(F_NODELAY)
                && !c.has(F_FIN_QUEUED)
            {
                break;
            }
            let seq = c.snd_nxt;
            let retrans = seq_lt(seq, c.snd_max);
            // PSH (RFC 9293 3.9.1): on the segment that ends a write, and on one that empties
            // the send buffer.
            let ends_write = seg_push && seq.wrapping_add(n) == seg_end;
            let end = seq.wrapping_add(n);
            let cwnd_ends = push_cwnd
                && !probe
                && !seq_lt(seq, c.snd_max)
                && end != c.snd_end
                && flight + n + c.snd_end.wrapping_sub(end).min(u32::from(mss)) > c.cc.cwnd;
            let fl = if ends_write || cwnd_ends || (last && seq.wrapping_add(n) == c.snd_end) {
                flags::ACK | flags::PSH
            } else {
                flags::ACK
            };
            let p = Payload::of(&c.sndq.segs[i], seq, n);
            if !tmpl_tried {
                tmpl_tried = true;
                tmpl = self.tcp_tx_template(idx, now);
            }
            let mtu = self.iface.mtu;
            let sent = if let Some(t) = tmpl
                .as_ref()
                .filter(|t| IPV4_HLEN + t.tcp_hl + p.len <= mtu)
            {
                let first = !tmpl_used;
                tmpl_used = true;
                self.tcp_emit_tmpl(idx, t, seq, fl, p, first).is_ok()
            } else {
                // The general path may change what the template was built from (a route or
                // neighbour decision, the MSS): not used again in this call.
                tmpl = None;
                self.tcp_emit(idx, seq, fl, Some(p), now)
            };
            if !sent {
                break;
            }
            let c = &mut self.tcp.conns[idx as usize];
            let s = &mut c.sndq.segs[i];
            s.flags |= sack::SENT;
            s.sent = now.total_micros() as u32;
            if retrans {
                s.flags |= sack::RETRANS;
                c.stats.retransmits += 1;
                c.rack.on_retransmit(seq);
                self.counters.add(Event::TcpRetransSegs, 1);
            } else {
                new_segs += 1;
            }
            c.snd_nxt = seq.wrapping_add(n);
            c.snd_max = seq_max(c.snd_max, c.snd_nxt);
            if c.snd_nxt == seg_end {
                hint = i + 1;
            }
            if c.stalled_since == Instant::MAX {
                c.stalled_since = now;
            }
            pipe += n;
            if !c.has(F_RTO_ARMED) {
                c.t_rtx = now + c.rtt.rto();
                c.flags |= F_RTO_ARMED;
                c.flags &= !F_PERSIST;
            }
        }
        // 3. FIN once every byte before it went out.
        let c = &mut self.tcp.conns[idx as usize];
        if !probe
            && c.has(F_FIN_QUEUED)
            && c.snd_nxt == c.snd_end
            && matches!(
                c.state,
                TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck
            )
        {
            let seq = c.snd_end;
            let first = c.snd_max == seq;
            if self.tcp_emit(idx, seq, flags::FIN | flags::ACK, None, now) {
                let c = &mut self.tcp.conns[idx as usize];
                new_segs += u32::from(first);
                c.snd_nxt = seq.wrapping_add(1);
                c.snd_max = seq_max(c.snd_max, c.snd_nxt);
                if c.stalled_since == Instant::MAX {
                    c.stalled_since = now;
                }
                if !c.has(F_RTO_ARMED) || c.has(F_PERSIST) {
                    c.flags &= !F_PERSIST;
                    c.t_rtx = now + c.rtt.rto();
                    c.flags |= F_RTO_ARMED;
                }
            }
        }
        new_segs
    }
}
