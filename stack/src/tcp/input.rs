//! Segment arrival (RFC 9293 3.10.7), one function per step so each reads against the RFC.
//!
//! Order per segment: parse and checksum; demultiplex (4-tuple, then listener, else CLOSED);
//! then, for a connection, the steps of 3.10.7.4: sequence number check (with PAWS, RFC 7323
//! 5.3), RST (RFC 5961 3), SYN (RFC 5961 4), ACK (RFC 5961 5), text, FIN. Output is not sent
//! here: touched connections are flushed once at the end of the burst.
//!
//! Per burst: a run of segments of one flow is demultiplexed once (`RxBurst::last`); in-order
//! data of an established connection with nothing to acknowledge takes a fast path that does
//! exactly what the steps above do for it (`tcp_fast_input`, header prediction), and large
//! ones of a burst share one receive-queue entry (software GRO, `tcp_rcv_in_order`).
//!
//! ACK policy (RFC 9293 3.8.6.3, RFC 1122 4.2.3.2, RFC 5681 4.2): out-of-order, gap-filling,
//! duplicate and out-of-window segments are acknowledged at once (at the end of their burst);
//! in-order data at least every second full-sized segment, i.e. once per burst that carries two
//! or more (one ACK covers the burst's segments), except that a full burst (the driver has more)
//! leaves that ACK to the end of the receive pass ([`Stack::tcp_rx_done`], called by the host
//! after its last burst), bounded by a quarter of the receive buffer and the delayed-ACK timer.

use super::reassembly::Insert;
use super::wire::{self, flags, SegmentOptions, TcpParseError};
use super::*;
use crate::counters::{DropReason, Event};
use crate::ipv4::{L4Batch, L4Packet};
use crate::wire::checksum::{pseudo_header, Accumulator};
use crate::wire::PROTO_TCP;

/// A received segment; `frame`'s window (or chain) is the payload.
#[derive(Debug)]
pub(crate) struct Seg {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub wnd: u16,
    pub opts: SegmentOptions,
    /// Payload length.
    pub len: u32,
    pub frame: Option<Frame>,
}

impl Seg {
    #[inline]
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
    /// SEG.LEN: payload plus SYN and FIN.
    pub fn seg_len(&self) -> u32 {
        self.len + u32::from(self.has(flags::SYN)) + u32::from(self.has(flags::FIN))
    }
}

/// DupThresh (RFC 5681, RFC 6675).
pub(crate) const DUPTHRESH: u32 = 3;

impl Stack {
    /// TCP input for a sub-burst; touched connections emit their output at the end.
    pub(crate) fn tcp_input(&mut self, batch: &mut L4Batch, now: Instant) {
        self.tcp.rx_full = batch.is_full();
        self.tcp.rx_burst = RxBurst::new(self.tcp_mem_limits());
        for p in batch.drain(..) {
            self.tcp_segment(p, now);
        }
        self.tcp.rx_burst.forget();
        if !self.tcp.rx_full {
            self.tcp_release_acks();
        }
        self.tcp.rx_full = false;
        self.tcp_flush(now);
    }

    /// End of a receive pass (the driver has no more frames for now, or its budget is spent):
    /// ACKs held back by full bursts are sent with the next flush. Call after the last
    /// [`Stack::process_rx`] of a poll; a caller that never does still gets them at the next
    /// burst that is not full, or at the delayed-ACK timer.
    pub fn tcp_rx_done(&mut self) {
        if !self.tcp.ack_deferred.is_empty() {
            self.tcp_release_acks();
        }
    }

    /// Turns held ACKs into owed ones (`F_ACK_NOW`) unless something else acknowledged the data
    /// meanwhile.
    fn tcp_release_acks(&mut self) {
        let mut list = core::mem::take(&mut self.tcp.ack_deferred);
        for idx in list.drain(..) {
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if !c.has(F_ACK_DEFER) {
                continue;
            }
            c.flags &= !F_ACK_DEFER;
            if c.last_ack_sent != c.rcv_nxt {
                c.flags |= F_ACK_NOW;
                self.tcp.touch(idx);
            }
        }
        self.tcp.ack_deferred = list;
    }

    fn tcp_checksum_ok(&self, p: &L4Packet) -> bool {
        if !self.cfg.rx_checksum {
            return true;
        }
        let mut acc = Accumulator::new(pseudo_header(p.src, p.dst, PROTO_TCP, p.len as u32));
        for s in self.pool.chain_iter(&p.frame) {
            acc.add(s);
        }
        acc.finish() == 0
    }

    fn tcp_segment(&mut self, p: L4Packet, now: Instant) {
        self.counters.add(Event::TcpSegsIn, 1);
        if p.broadcast {
            // RFC 9293 3.9.1.3 / RFC 1122 4.2.3.10: no TCP to broadcast or multicast addresses.
            self.drop_frame(p.frame, DropReason::TcpBroadcast);
            return;
        }
        if !self.tcp_checksum_ok(&p) {
            // A field that is exactly the pseudo-header sum is a sender's unfinished offload.
            let d = self.pool.data(&p.frame);
            let stored = (d.len() >= 18).then(|| u16::from_be_bytes([d[16], d[17]]));
            let partial = crate::wire::checksum::partial(p.src, p.dst, PROTO_TCP, p.len as u32);
            if stored != Some(partial) {
                self.drop_frame(p.frame, DropReason::TcpBadChecksum);
                return;
            }
            if !self.cfg.rx_accept_partial_checksum {
                self.drop_frame(p.frame, DropReason::TcpPartialChecksum);
                return;
            }
            self.counters.add(Event::RxPartialChecksumAccepted, 1);
        }
        let h = match wire::parse(self.pool.data(&p.frame), p.len) {
            Ok(h) => h,
            Err(e) => {
                let r = match e {
                    TcpParseError::Truncated => DropReason::TcpTruncated,
                    TcpParseError::BadDataOffset => DropReason::TcpBadDataOffset,
                    TcpParseError::BadOption => DropReason::TcpBadOption,
                };
                self.drop_frame(p.frame, r);
                return;
            }
        };
        // The header lies in the first frame (parse checked hdr_len against it).
        self.pool.pull_front(&p.frame, h.hdr_len);
        let seg = Seg {
            local: SocketAddrV4::new(p.dst, h.dst_port),
            remote: SocketAddrV4::new(p.src, h.src_port),
            seq: h.seq,
            ack: h.ack,
            flags: h.flags,
            wnd: h.window,
            opts: h.opts,
            len: (p.len - h.hdr_len) as u32,
            frame: Some(p.frame),
        };
        if seg.local.port() == 0 || seg.remote.port() == 0 {
            self.tcp_drop_seg(seg, DropReason::TcpBadPort);
            return;
        }
        let tuple = Tuple {
            local: seg.local,
            remote: seg.remote,
        };
        // The burst's last connection first: segments of one flow come in runs. The cache is
        // only set by the fast path, which never changes the 4-tuple map, and cleared before
        // any other processing, so it always names the map's entry for its tuple.
        let cached = match self.tcp.rx_burst.last {
            Some((t, idx)) if t == tuple => Some(idx),
            _ => None,
        };
        let found = cached.or_else(|| self.tcp.by_tuple.get(&tuple).copied());
        let mut seg = seg;
        if let Some(idx) = found {
            if self.tcp_fast_input(idx, &mut seg, now) {
                if cached.is_none() {
                    self.tcp.rx_burst.last = Some((tuple, idx));
                }
                return;
            }
        }
        self.tcp.rx_burst.forget();
        if let Some(idx) = found {
            self.tcp_conn_input(idx, seg, now);
        } else if let Some(l) = self.tcp.lookup_listener(seg.local) {
            self.tcp_listen_input(l, seg, now);
        } else {
            self.tcp_closed_input(seg, now, DropReason::TcpNoSocket);
        }
    }

    pub(crate) fn tcp_drop_seg(&mut self, mut seg: Seg, r: DropReason) {
        self.counters.drop(r);
        if let Some(f) = seg.frame.take() {
            self.pool.free(f);
        }
    }

    fn tcp_free_seg(&mut self, mut seg: Seg) {
        if let Some(f) = seg.frame.take() {
            self.pool.free(f);
        }
    }

    /// RFC 9293 3.10.7.1: no connection. A RST is answered by nothing; anything else by a RST.
    fn tcp_closed_input(&mut self, seg: Seg, now: Instant, r: DropReason) {
        if !seg.has(flags::RST) {
            if seg.has(flags::ACK) {
                // <SEQ=SEG.ACK><CTL=RST>
                self.tcp_send_rst_raw(seg.local, seg.remote, seg.ack, None, now);
            } else {
                // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
                let ack = seg.seq.wrapping_add(seg.seg_len());
                self.tcp_send_rst_raw(seg.local, seg.remote, 0, Some(ack), now);
            }
        }
        self.tcp_drop_seg(seg, r);
    }

    /// RFC 9293 3.10.7.2: LISTEN.
    fn tcp_listen_input(&mut self, l: u32, seg: Seg, now: Instant) {
        if seg.has(flags::RST) {
            self.tcp_drop_seg(seg, DropReason::TcpListenRst);
            return;
        }
        if seg.has(flags::ACK) {
            if !seg.has(flags::SYN) && self.cfg.tcp_syncookies {
                self.tcp_cookie_ack(l, seg, now);
            } else {
                self.tcp_closed_input(seg, now, DropReason::TcpListenAck);
            }
            return;
        }
        if !seg.has(flags::SYN) {
            self.tcp_drop_seg(seg, DropReason::TcpStateDrop);
            return;
        }
        self.tcp_syn_to_listener(l, seg, now);
    }

    fn tcp_syn_to_listener(&mut self, l: u32, seg: Seg, now: Instant) {
        let lst = &self.tcp.listeners[l as usize];
        if lst.accept.len() as u32 >= lst.backlog {
            // As Linux: with a full accept queue the SYN is dropped; the peer retries.
            self.tcp_drop_seg(seg, DropReason::TcpAcceptQueueFull);
            return;
        }
        if lst.syn_count >= lst.syn_backlog || self.tcp.conns.len() >= self.cfg.tcp_max_connections
        {
            if self.cfg.tcp_syncookies {
                self.tcp_send_cookie_synack(&seg, now);
                self.tcp_free_seg(seg);
            } else {
                self.tcp_drop_seg(seg, DropReason::TcpSynQueueFull);
            }
            return;
        }
        let opts = lst.opts;
        let idx = self.tcp_new_conn(seg.local, seg.remote, opts, now);
        self.tcp.listeners[l as usize].syn_count += 1;
        let c = &mut self.tcp.conns[idx as usize];
        c.state = TcpState::SynReceived;
        c.listener = l;
        c.flags |= F_PASSIVE;
        c.irs = seg.seq;
        c.rcv_nxt = seg.seq.wrapping_add(1);
        c.last_ack_sent = c.rcv_nxt;
        c.snd_wnd = u32::from(seg.wnd);
        c.snd_wl1 = seg.seq;
        self.tcp_apply_syn_opts(idx, &seg.opts, opts.congestion);
        self.counters.add(Event::TcpPassiveOpens, 1);
        self.tcp_send_syn(idx, now);
        self.tcp_arm_rto(idx, now);
        self.tcp_timers_changed(idx);
        // RFC 9293: data on a SYN is queued until ESTABLISHED; we drop it (the peer resends).
        self.tcp_free_seg(seg);
    }

    /// Options negotiated by a SYN (RFC 7323 2.2, 3.2; RFC 2018 2; RFC 9293 3.7.1).
    pub(crate) fn tcp_apply_syn_opts(&mut self, idx: u32, o: &SegmentOptions, cc: Congestion) {
        let ws_buf = self.cfg.tcp_rcv_buf_max;
        let (ws_on, sack_on, ts_on) = (
            self.cfg.tcp_window_scaling,
            self.cfg.tcp_sack,
            self.cfg.tcp_timestamps,
        );
        let c = &mut self.tcp.conns[idx as usize];
        if let (true, Some(ws)) = (ws_on, o.wscale) {
            c.flags |= F_WS;
            c.snd_wscale = ws;
            c.rcv_wscale = Stack::tcp_wscale_for(c.rcv_buf.max(ws_buf));
        } else {
            c.flags &= !F_WS;
            c.snd_wscale = 0;
            c.rcv_wscale = 0;
            c.rcv_buf = c.rcv_buf.min(65535);
        }
        if sack_on && o.sack_permitted {
            c.flags |= F_SACK;
        } else {
            c.flags &= !F_SACK;
        }
        if let (true, Some((tsval, _))) = (ts_on, o.timestamps) {
            c.flags |= F_TS;
            c.ts_recent = tsval;
        } else {
            c.flags &= !F_TS;
        }
        // RFC 9293 3.7.1: without the option, assume 536; RFC 6691: the MSS excludes options,
        // so the timestamp option's 12 bytes come off what each segment carries.
        let peer = o.mss.unwrap_or(536).max(64);
        let opt = if c.has(F_TS) { 12 } else { 0 };
        c.mss = peer.min(c.rcv_mss).saturating_sub(opt).max(32);
        c.cc = congestion::Cc::new(cc, u32::from(c.mss));
    }

    /// A bare ACK to a listener: the third segment of a cookie handshake?
    fn tcp_cookie_ack(&mut self, l: u32, seg: Seg, now: Instant) {
        let Some(mss) =
            syncookie::check(&self.tcp.key, seg.local, seg.remote, seg.seq, seg.ack, now)
        else {
            self.tcp_closed_input(seg, now, DropReason::TcpBadCookie);
            return;
        };
        let lst = &self.tcp.listeners[l as usize];
        if lst.accept.len() as u32 >= lst.backlog
            || self.tcp.conns.len() >= self.cfg.tcp_max_connections
        {
            self.tcp_drop_seg(seg, DropReason::TcpAcceptQueueFull);
            return;
        }
        self.counters.add(Event::TcpSynCookiesOk, 1);
        let opts = lst.opts;
        let idx = self.tcp_new_conn(seg.local, seg.remote, opts, now);
        self.tcp.listeners[l as usize].syn_count += 1;
        // Rebuild what the SYN negotiated from the cookie and the echoed timestamp.
        let mut o = SegmentOptions {
            mss: Some(mss),
            ..SegmentOptions::default()
        };
        if let Some((tsval, tsecr)) = seg.opts.timestamps {
            let (ws, sack) = syncookie::decode_ts(tsecr);
            o.wscale = ws;
            o.sack_permitted = sack;
            o.timestamps = Some((tsval, tsecr));
        }
        let c = &mut self.tcp.conns[idx as usize];
        let iss = seg.ack.wrapping_sub(1);
        c.state = TcpState::SynReceived;
        c.listener = l;
        c.flags |= F_PASSIVE;
        c.iss = iss;
        c.snd_una = iss;
        c.snd_nxt = seg.ack;
        c.snd_max = seg.ack;
        c.snd_end = seg.ack;
        c.recovery_point = iss;
        c.irs = seg.seq.wrapping_sub(1);
        c.rcv_nxt = seg.seq;
        c.last_ack_sent = seg.seq;
        c.snd_wl1 = c.irs;
        self.tcp_apply_syn_opts(idx, &o, opts.congestion);
        let c = &mut self.tcp.conns[idx as usize];
        // The SYN-ACK advertised an unscaled window of at most 64 KiB from rcv_nxt.
        c.rcv_adv = c.rcv_nxt.wrapping_add(c.rcv_space().min(65535));
        self.tcp_conn_input(idx, seg, now);
    }

    /// A segment for an existing connection.
    pub(crate) fn tcp_conn_input(&mut self, idx: u32, seg: Seg, now: Instant) {
        self.tcp.touch(idx);
        match self.tcp.conns[idx as usize].state {
            TcpState::SynSent => self.tcp_syn_sent_input(idx, seg, now),
            TcpState::Closed | TcpState::Listen => {
                self.tcp_closed_input(seg, now, DropReason::TcpNoSocket)
            }
            _ => self.tcp_sync_input(idx, seg, now),
        }
        self.tcp_mem_sync(idx);
        if self
            .tcp
            .conns
            .get(idx as usize)
            .is_some_and(|c| c.has(F_KEEPALIVE))
        {
            self.tcp_keepalive_touch(idx, now);
        }
    }

    /// RFC 9293 3.10.7.3: SYN-SENT.
    fn tcp_syn_sent_input(&mut self, idx: u32, seg: Seg, now: Instant) {
        let c = &self.tcp.conns[idx as usize];
        // First: check the ACK bit.
        let ack_ok = seg.has(flags::ACK) && seq_gt(seg.ack, c.iss) && seq_le(seg.ack, c.snd_max);
        if seg.has(flags::ACK) && !ack_ok {
            if seg.has(flags::RST) {
                self.tcp_drop_seg(seg, DropReason::TcpBadAck);
            } else {
                self.tcp_send_rst_raw(seg.local, seg.remote, seg.ack, None, now);
                self.tcp_drop_seg(seg, DropReason::TcpBadAck);
            }
            return;
        }
        // Second: the RST bit (RFC 5961 3.2 for SYN-SENT: only with an acceptable ACK).
        if seg.has(flags::RST) {
            if ack_ok {
                self.counters.add(Event::TcpResetsRecv, 1);
                self.tcp_fail(idx, TcpError::Refused);
                self.tcp_free_seg(seg);
            } else {
                self.tcp_drop_seg(seg, DropReason::TcpBadRst);
            }
            return;
        }
        // Fourth: the SYN bit.
        if !seg.has(flags::SYN) {
            self.tcp_drop_seg(seg, DropReason::TcpStateDrop);
            return;
        }
        let cc = self.tcp.conns[idx as usize].cc.kind();
        self.tcp_apply_syn_opts(idx, &seg.opts, cc);
        let c = &mut self.tcp.conns[idx as usize];
        c.irs = seg.seq;
        c.rcv_nxt = seg.seq.wrapping_add(1);
        if ack_ok {
            // Our SYN is acknowledged: ESTABLISHED.
            c.snd_una = seg.ack;
            c.flags |= F_ACK_NOW;
            self.tcp_enter_established(idx, &seg, now);
            // Data or FIN on the SYN-ACK: process from the sixth step.
            let mut seg = seg;
            seg.seq = seg.seq.wrapping_add(1);
            seg.flags &= !flags::SYN;
            self.tcp_text_and_fin(idx, seg, now);
        } else {
            // Simultaneous open: SYN-RECEIVED, answer with SYN,ACK (same ISS).
            c.state = TcpState::SynReceived;
            c.snd_wnd = u32::from(seg.wnd);
            c.snd_wl1 = seg.seq;
            self.tcp_send_syn(idx, now);
            self.tcp_free_seg(seg);
        }
    }

    /// RFC 9293 3.10.7.4: every synchronized state, and SYN-RECEIVED.
    fn tcp_sync_input(&mut self, idx: u32, seg: Seg, now: Instant) {
        let state = self.tcp.conns[idx as usize].state;
        if state == TcpState::TimeWait
            && seg.has(flags::SYN)
            && !seg.has(flags::ACK | flags::RST)
            && self.tcp_time_wait_reuse(idx, &seg)
        {
            {
                self.counters.add(Event::TcpTimeWaitReused, 1);
                self.tcp_set_closed(idx);
                match self.tcp.lookup_listener(seg.local) {
                    Some(l) => self.tcp_listen_input(l, seg, now),
                    None => self.tcp_closed_input(seg, now, DropReason::TcpNoSocket),
                }
                return;
            }
        }
        // Simultaneous open: our SYN,ACK crossed theirs. Their SYN is old news but the ACK of
        // our SYN completes the handshake (RFC 9293 figure 8, segment 5/6).
        if state == TcpState::SynReceived
            && seg.has(flags::SYN)
            && seg.has(flags::ACK)
            && !seg.has(flags::RST)
            && seg.seq == self.tcp.conns[idx as usize].irs
        {
            let mut seg = seg;
            seg.seq = seg.seq.wrapping_add(1);
            seg.flags &= !flags::SYN;
            if seg.len > 0 {
                // Data on a SYN: dropped, as on SYNs to a listener.
                self.counters.drop(DropReason::TcpStateDrop);
                if let Some(f) = seg.frame.take() {
                    self.pool.free(f);
                }
                seg.len = 0;
            }
            return self.tcp_sync_input(idx, seg, now);
        }
        // First: sequence number (with PAWS first, RFC 7323 5.3).
        if !self.tcp_check_seq(idx, &seg) {
            let c = &mut self.tcp.conns[idx as usize];
            if !seg.has(flags::RST) {
                c.flags |= F_ACK_NOW;
                let end = seg.seq.wrapping_add(seg.len);
                if seg.len > 0 && c.has(F_SACK) && seq_le(end, c.rcv_nxt) {
                    // RFC 2883 4: data received twice is reported in a D-SACK block.
                    c.ooo.dsack = Some((seg.seq, end));
                }
            }
            return self.tcp_drop_seg(seg, DropReason::TcpBadSeq);
        }
        // Second: RST.
        if seg.has(flags::RST) {
            return self.tcp_rst_input(idx, seg, now);
        }
        // Fourth: SYN in a synchronized state: RFC 5961 4.2 challenge ACK.
        if seg.has(flags::SYN) {
            self.tcp_challenge_ack(idx, now);
            return self.tcp_drop_seg(seg, DropReason::TcpSynInWindow);
        }
        // Fifth: ACK.
        if !seg.has(flags::ACK) {
            return self.tcp_drop_seg(seg, DropReason::TcpNoAck);
        }
        let Some(seg) = self.tcp_ack_input(idx, seg, now) else {
            return;
        };
        // RFC 7323 4.3: record the timestamp of a segment that covers RCV.NXT... (done in
        // tcp_check_seq for in-window segments at or before Last.ACK.sent).
        self.tcp_text_and_fin(idx, seg, now);
    }

    /// RFC 6191: a SYN may reopen a TIME-WAIT connection when it is newer than the old one.
    fn tcp_time_wait_reuse(&self, idx: u32, seg: &Seg) -> bool {
        let c = &self.tcp.conns[idx as usize];
        match (c.has(F_TS), seg.opts.timestamps) {
            (true, Some((tsval, _))) => seq_gt(tsval, c.ts_recent),
            (true, None) => false,
            (false, _) => seq_gt(seg.seq, c.rcv_nxt),
        }
    }

    /// Linux `tcp_disordered_ack`: a segment failing PAWS that is only a duplicate ACK
    /// overtaken by a later one (ACKs reordered on the way). Its ACK and SACK information is
    /// still good, and dropping it (with an ACK in reply) would lose SACK blocks that loss
    /// detection needs. Exactly Linux's conditions: (1) a pure ACK at RCV.NXT, (2) a duplicate
    /// ACK (SEG.ACK = SND.UNA), (3) that could not update the window
    /// (`tcp_may_update_window`), and (4) a timestamp at most one RTO (in 1/1024 s units, as
    /// Linux counts it) older than TS.Recent.
    fn tcp_disordered_ack(c: &Conn, seg: &Seg, tsval: u32) -> bool {
        let nwin = u32::from(seg.wnd) << c.snd_wscale;
        let may_update_window = seq_gt(seg.ack, c.snd_una)
            || seq_gt(seg.seq, c.snd_wl1)
            || (seg.seq == c.snd_wl1 && (nwin > c.snd_wnd || nwin == 0));
        let tolerance = (u64::from(c.rtt.rto) * 1024 / 1_000_000).min(i32::MAX as u64) as i32;
        seg.has(flags::ACK)
            && seg.seg_len() == 0
            && seg.seq == c.rcv_nxt
            && seg.ack == c.snd_una
            && !may_update_window
            && (c.ts_recent.wrapping_sub(tsval) as i32) <= tolerance
    }

    /// PAWS and the acceptability test (RFC 9293 3.10.7.4 first, RFC 7323 5.3). Records
    /// TS.Recent (RFC 7323 4.3) for acceptable segments.
    fn tcp_check_seq(&mut self, idx: u32, seg: &Seg) -> bool {
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_TS) && !seg.has(flags::RST) {
            if let Some((tsval, _)) = seg.opts.timestamps {
                if seq_lt(tsval, c.ts_recent) {
                    if !Self::tcp_disordered_ack(c, seg, tsval) {
                        self.counters.drop(DropReason::TcpPaws);
                        c.flags |= F_ACK_NOW;
                        return false;
                    }
                    self.counters.add(Event::TcpPawsDisorderedAcks, 1);
                }
            }
        }
        let wnd = if seq_gt(c.rcv_adv, c.rcv_nxt) {
            c.rcv_adv.wrapping_sub(c.rcv_nxt)
        } else {
            0
        };
        let len = seg.seg_len();
        let (seq, nxt) = (seg.seq, c.rcv_nxt);
        let in_wnd = |s: u32| seq_le(nxt, s) && seq_lt(s, nxt.wrapping_add(wnd));
        let ok = match (len, wnd) {
            (0, 0) => seq == nxt,
            (0, _) => in_wnd(seq),
            (_, 0) => false,
            _ => in_wnd(seq) || in_wnd(seq.wrapping_add(len - 1)),
        };
        if ok {
            Self::tcp_note_ts_recent(c, seg, len);
        }
        ok
    }

    /// RFC 7323 4.3 (3): TS.Recent from an acceptable segment with SEG.SEQ =< Last.ACK.sent <
    /// SEG.SEQ + SEG.LEN (or = for SEG.LEN 0). `len` is SEG.LEN.
    #[inline(always)]
    fn tcp_note_ts_recent(c: &mut Conn, seg: &Seg, len: u32) {
        if let (true, Some((tsval, _))) = (c.has(F_TS), seg.opts.timestamps) {
            if seq_le(seg.seq, c.last_ack_sent)
                && (seq_lt(c.last_ack_sent, seg.seq.wrapping_add(len.max(1))))
                && seq_ge(tsval, c.ts_recent)
            {
                c.ts_recent = tsval;
            }
        }
    }

    /// RFC 5961 3.2: a RST exactly at RCV.NXT resets; elsewhere in the window it gets a
    /// challenge ACK.
    fn tcp_rst_input(&mut self, idx: u32, seg: Seg, now: Instant) {
        let c = &self.tcp.conns[idx as usize];
        if seg.seq != c.rcv_nxt {
            self.tcp_challenge_ack(idx, now);
            return self.tcp_drop_seg(seg, DropReason::TcpRstInWindow);
        }
        if c.state == TcpState::TimeWait {
            // RFC 1337: a RST must not cut TIME-WAIT short (TIME-WAIT assassination).
            return self.tcp_drop_seg(seg, DropReason::TcpRstInTimeWait);
        }
        self.counters.add(Event::TcpResetsRecv, 1);
        let err = match c.state {
            TcpState::SynReceived if c.has(F_PASSIVE) => None,
            TcpState::SynReceived => Some(TcpError::Refused),
            TcpState::Established
            | TcpState::FinWait1
            | TcpState::FinWait2
            | TcpState::CloseWait => Some(TcpError::Reset),
            _ => None,
        };
        match err {
            Some(e) => self.tcp_fail(idx, e),
            None => self.tcp_set_closed(idx),
        }
        self.tcp_free_seg(seg);
    }

    /// A challenge ACK (RFC 5961 3.2, 4.2, 5.2), within the stack-wide budget of RFC 5961 7.
    /// As Linux since CVE-2016-5696: each second's budget is drawn at random from
    /// `[limit / 2, limit + limit / 2)`, so an off-path attacker cannot count the ACKs it
    /// provokes to infer whether its guess hit a connection's window.
    fn tcp_challenge_ack(&mut self, idx: u32, now: Instant) {
        let limit = self.cfg.tcp_challenge_ack_limit;
        if limit != u32::MAX {
            let second = now.total_millis() / 1000;
            if second != self.tcp.challenge_second {
                self.tcp.challenge_second = second;
                let half = limit.div_ceil(2);
                let span = u64::from(limit.max(1));
                self.tcp.challenge_left = half + (self.rng.next_u64() % span) as u32;
            }
            if self.tcp.challenge_left == 0 {
                self.counters.add(Event::TcpChallengeAcksLimited, 1);
                return;
            }
            self.tcp.challenge_left -= 1;
        }
        self.counters.add(Event::TcpChallengeAcks, 1);
        self.tcp.conns[idx as usize].flags |= F_ACK_NOW;
    }

    /// Ends a connection with an error for the application.
    pub(crate) fn tcp_fail(&mut self, idx: u32, e: TcpError) {
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_HANDLE) {
            c.error = Some(e);
        }
        self.tcp_set_closed(idx);
    }

    /// Fifth step: the ACK field. Returns the segment if processing goes on.
    fn tcp_ack_input(&mut self, idx: u32, seg: Seg, now: Instant) -> Option<Seg> {
        let c = &mut self.tcp.conns[idx as usize];
        if c.state == TcpState::SynReceived {
            if !(seq_gt(seg.ack, c.snd_una) && seq_le(seg.ack, c.snd_max)) {
                // <SEQ=SEG.ACK><CTL=RST>
                let (l, r, a) = (seg.local, seg.remote, seg.ack);
                self.tcp_send_rst_raw(l, r, a, None, now);
                self.tcp_drop_seg(seg, DropReason::TcpBadAck);
                return None;
            }
            if !self.tcp_establish_passive(idx, &seg, now) {
                self.tcp_drop_seg(seg, DropReason::TcpAcceptQueueFull);
                return None;
            }
        }
        let c = &mut self.tcp.conns[idx as usize];
        // RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT].
        if seq_gt(seg.ack, c.snd_max) {
            self.tcp_challenge_ack(idx, now);
            self.tcp_drop_seg(seg, DropReason::TcpAckUnsent);
            return None;
        }
        if seq_lt(seg.ack, c.snd_una.wrapping_sub(c.max_snd_wnd.max(1))) {
            self.tcp_challenge_ack(idx, now);
            self.tcp_drop_seg(seg, DropReason::TcpAckTooOld);
            return None;
        }
        self.tcp_process_ack(idx, &seg, now);
        let c = &mut self.tcp.conns[idx as usize];
        match c.state {
            TcpState::FinWait1 if c.fin_acked() => {
                c.state = TcpState::FinWait2;
                self.tcp_arm_fin_wait2(idx, now);
            }
            TcpState::Closing if c.fin_acked() => {
                self.tcp_enter_time_wait(idx, now);
            }
            TcpState::LastAck if c.fin_acked() => {
                self.tcp_set_closed(idx);
                self.tcp_free_seg(seg);
                return None;
            }
            _ => {}
        }
        Some(seg)
    }

    /// SYN-RECEIVED to ESTABLISHED; a passive child goes to its listener's accept queue.
    /// False when that queue is full (the ACK is dropped and the SYN-ACK will be repeated).
    fn tcp_establish_passive(&mut self, idx: u32, seg: &Seg, now: Instant) -> bool {
        let c = &self.tcp.conns[idx as usize];
        let (listener, gen) = (c.listener, c.gen);
        if c.has(F_PASSIVE) && listener != NONE {
            let Some(l) = self.tcp.listeners.get_mut(listener as usize) else {
                // The listener went away.
                self.tcp_reset_and_close(idx, now);
                return false;
            };
            if l.accept.len() as u32 >= l.backlog {
                return false;
            }
            l.accept.push_back((idx, gen));
            l.syn_count = l.syn_count.saturating_sub(1);
            if !l.notified {
                l.notified = true;
                self.tcp.app_listeners.push(listener);
            }
            self.tcp.conns[idx as usize].flags |= F_ACCEPT_Q;
        }
        self.tcp_enter_established(idx, seg, now);
        true
    }

    /// The handshake's end, from SYN-SENT (SYN-ACK) or SYN-RECEIVED (ACK): ESTABLISHED, the send
    /// window from this segment (RFC 9293 3.10.7.3/3.10.7.4), an RTT sample from the SYN or
    /// SYN-ACK unless it was retransmitted (Karn), the retransmission timer stopped.
    fn tcp_enter_established(&mut self, idx: u32, seg: &Seg, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        c.state = TcpState::Established;
        c.snd_wnd = u32::from(seg.wnd) << c.snd_wscale;
        c.max_snd_wnd = c.snd_wnd;
        c.snd_wl1 = seg.seq;
        c.snd_wl2 = seg.ack;
        c.retries = 0;
        if c.rtt.backoff == 0 && c.t_rtx != Instant::MAX {
            // The SYN (or SYN-ACK) went out one RTO before its timer's deadline.
            let r = now.saturating_duration_since(c.t_rtx - c.rtt.rto());
            c.rtt.sample(r.as_micros().min(u32::MAX as u128) as u32);
        }
        c.t_rtx = Instant::MAX;
        c.flags &= !F_RTO_ARMED;
        c.rtt.backoff = 0;
        self.counters.add(Event::TcpEstablished, 1);
    }

    /// ACK processing proper: window update, acknowledged data, RTT, congestion, recovery.
    fn tcp_process_ack(&mut self, idx: u32, seg: &Seg, now: Instant) {
        let now_us = now.total_micros() as u32;
        let c = &mut self.tcp.conns[idx as usize];
        let mss = u32::from(c.mss);
        let old_wnd = c.snd_wnd;
        let flight_before = c.snd_max.wrapping_sub(c.snd_una);
        let advanced = seq_gt(seg.ack, c.snd_una);
        let pto = c.has(F_TLP).then_some(c.t_rack);
        Self::tcp_snd_wnd_update(c, seg);
        if Self::tcp_ack_predicted(c, seg) {
            return;
        }
        // RFC 2883 4: the first block is a D-SACK when it lies below the cumulative ACK or
        // inside the second block.
        let mut blocks = &seg.opts.sack[..];
        let mut dsack = None;
        if c.has(F_SACK) {
            if let Some(&(l, r)) = blocks.first() {
                let inside_next = blocks
                    .get(1)
                    .is_some_and(|&(l2, r2)| seq_le(l2, l) && seq_le(r, r2));
                if seq_lt(l, r) && (seq_le(r, seg.ack) || inside_next) {
                    dsack = Some((l, r));
                    blocks = &blocks[1..];
                }
            }
        }
        if advanced {
            let acked = seg.ack.wrapping_sub(c.snd_una);
            // RFC 7661 / Linux tcp_is_cwnd_limited: grow cwnd only when it limited the sender.
            let cwnd_limited = if c.cc.cwnd < c.cc.ssthresh {
                c.cc.cwnd < 2 * flight_before
            } else {
                flight_before + mss >= c.cc.cwnd
            };
            let data_ack = if seq_gt(seg.ack, c.snd_end) {
                c.snd_end
            } else {
                seg.ack
            };
            let a = c.sndq.ack(&mut self.pool, data_ack, now_us, &mut c.rack);
            c.snd_una = seg.ack;
            if seq_lt(c.snd_nxt, c.snd_una) {
                c.snd_nxt = c.snd_una;
            }
            c.stats.bytes_acked += u64::from(a.bytes);
            if let Some(r) = a.rtt_us {
                c.rtt.sample(r);
            }
            c.retries = 0;
            c.dupacks = 0;
            c.probes = 0;
            // RFC 5482: the user timeout measures time without progress.
            c.stalled_since = if c.snd_una == c.snd_max {
                Instant::MAX
            } else {
                now
            };
            if c.has(F_RECOVERY) {
                if seq_ge(seg.ack, c.recovery_point) {
                    // RFC 6582 3.2 step 3 / RFC 6675 5: full ACK, recovery ends (an undone
                    // recovery keeps the window it got back).
                    c.flags &= !F_RECOVERY;
                    c.rack.on_recovery_end();
                    if !c.rack.undone {
                        let flight = c.snd_nxt.wrapping_sub(c.snd_una);
                        c.cc.cwnd = c.cc.ssthresh.min(flight.max(mss) + mss).max(2 * mss);
                    }
                } else if !c.has(F_SACK) {
                    // RFC 6582 3.2 step 4: partial ACK: retransmit the next hole, deflate.
                    c.cc.cwnd = c.cc.cwnd.saturating_sub(acked).saturating_add(mss).max(mss);
                    c.sndq.mark_lost(0);
                }
            } else if a.bytes > 0 && cwnd_limited {
                let srtt = c.rtt.srtt;
                c.cc.on_ack(a.bytes, mss, now, srtt);
            }
            // RFC 6298 5.2 / 5.3: stop the timer when all is acknowledged, else restart it.
            if c.snd_una == c.snd_max {
                c.t_rtx = Instant::MAX;
                c.flags &= !F_RTO_ARMED;
            } else if !c.has(F_PERSIST) {
                c.t_rtx = now + c.rtt.rto();
                c.flags |= F_RTO_ARMED;
            }
        } else if seg.ack == c.snd_una
            && seg.len == 0
            && !seg.has(flags::SYN | flags::FIN)
            && c.snd_wnd == old_wnd
            && c.snd_max != c.snd_una
        {
            // RFC 5681 2: a duplicate acknowledgment.
            c.dupacks = c.dupacks.saturating_add(1);
            if c.has(F_RECOVERY) && !c.has(F_SACK) {
                // RFC 6582 3.2 step 3 (inflation): each further dup ACK adds one MSS.
                c.cc.cwnd = c.cc.cwnd.saturating_add(mss);
            }
        }
        let mut sacked = false;
        let mut discards = 0u64;
        if c.has(F_SACK) && !blocks.is_empty() {
            // RFC 2018 / RFC 2883: a block at or below the cumulative ACK that is no D-SACK, or
            // one beyond what was sent, carries nothing to act on (Linux
            // tcp_is_sackblock_valid); acting on it would mark the hole at SND.UNA as SACKed and
            // never resend it.
            let mut valid: arrayvec::ArrayVec<(u32, u32), 4> = arrayvec::ArrayVec::new();
            for &(l, r) in blocks {
                if sack::sack_block_valid(l, r, c.snd_una, c.snd_max) {
                    valid.push((l, r));
                } else {
                    discards += 1;
                }
            }
            sacked = c
                .sndq
                .apply_sack(&valid, c.snd_una, c.snd_max, now_us, &mut c.rack);
        }
        let reneged = advanced && c.sndq.reneged();
        if reneged {
            // RFC 2018 8: the receiver discarded data it SACKed. As Linux
            // (tcp_check_sack_reneging), the retransmission timer fires soon, max(SRTT / 16,
            // 10 ms), and clears the scoreboard; waiting a little lets reordered ACKs catch up.
            let soon = now + Duration::from_micros(u64::from(c.rtt.srtt / 16).max(10_000));
            if !c.has(F_PERSIST) && (!c.has(F_RTO_ARMED) || c.t_rtx > soon) {
                c.t_rtx = soon;
                c.flags |= F_RTO_ARMED;
            }
        }
        self.counters.add(Event::TcpSackDiscards, discards);
        self.counters
            .add(Event::TcpSackReneging, u64::from(reneged));
        let pure_dupack = !advanced
            && seg.len == 0
            && !seg.has(flags::SYN | flags::FIN)
            && c.snd_wnd == old_wnd
            && !sacked;
        if let Some((l, r)) = dsack {
            self.tcp_dsack(idx, l, r);
        }
        self.tcp_tlp_on_ack(idx, seg.ack, pure_dupack, dsack, flight_before, now);
        self.tcp_rack_detect(idx, now);
        self.tcp_maybe_enter_recovery(idx, now);
        // RFC 8985 7.2: an ACK of new data restarts the loss probe timer; any other keeps it.
        if advanced {
            self.tcp_tlp_schedule(idx, now, None);
        } else if let Some(at) = pto {
            self.tcp_tlp_schedule(idx, now, Some(at));
        }
    }

    /// RFC 9293 3.10.7.4 fifth: window update if newer (SND.WL1/WL2 rule), and only when
    /// SND.UNA =< SEG.ACK: the window is an offset from SEG.ACK, so one carried by an ACK below
    /// SND.UNA would move the right edge beyond what the peer offered.
    #[inline(always)]
    fn tcp_snd_wnd_update(c: &mut Conn, seg: &Seg) {
        if seq_ge(seg.ack, c.snd_una)
            && (seq_lt(c.snd_wl1, seg.seq) || (c.snd_wl1 == seg.seq && seq_le(c.snd_wl2, seg.ack)))
        {
            c.snd_wnd = u32::from(seg.wnd) << c.snd_wscale;
            c.max_snd_wnd = c.max_snd_wnd.max(c.snd_wnd);
            c.snd_wl1 = seg.seq;
            c.snd_wl2 = seg.ack;
            if c.snd_wnd > 0 && c.has(F_PERSIST) {
                c.flags &= !F_PERSIST;
                c.t_rtx = Instant::MAX;
                c.rtt.backoff = 0;
                c.probes = 0;
            }
        }
    }

    /// Header prediction for the receiver of a one-way transfer: nothing outstanding, the
    /// segment repeats SND.UNA and carries no SACK blocks, no recovery, loss probe or RACK timer
    /// pending. The rest of ACK processing would find nothing to do (no duplicate ACK without
    /// flight, no blocks, RACK and recovery return at once with SND.UNA = SND.MAX).
    #[inline]
    fn tcp_ack_predicted(c: &Conn, seg: &Seg) -> bool {
        seg.ack == c.snd_una
            && c.snd_una == c.snd_max
            && seg.opts.sack.is_empty()
            && c.flags & (F_RECOVERY | F_TLP) == 0
            && c.t_rack == Instant::MAX
            && c.rack.tlp_end_seq.is_none()
    }

    /// The receiver's fast path (header prediction, as BSD's `tcp_input` and Linux's
    /// `tcp_rcv_established` have it): an in-order data segment of an ESTABLISHED connection,
    /// inside the window, that acknowledges nothing new (nothing outstanding), carries no flag but
    /// ACK (and PSH) and passes PAWS, on a connection with no out-of-order data and within its
    /// frame budget and memory share. For such a segment every step of RFC 9293 3.10.7.4 comes
    /// down to what is done here, in the same order and with the same helpers: TS.Recent, the
    /// window update, the in-order queueing with its accounting and the ACK decision. Anything
    /// else goes back to the caller for the full path ([`Stack::tcp_conn_input`]).
    fn tcp_fast_input(&mut self, idx: u32, seg: &mut Seg, now: Instant) -> bool {
        #[cfg(test)]
        if self.tcp.rx_fast_off {
            return false;
        }
        let c = &self.tcp.conns[idx as usize];
        let single = seg.frame.as_ref().is_some_and(|f| self.pool.is_single(f));
        let end = seg.seq.wrapping_add(seg.len);
        let paws_ok = match (c.has(F_TS), seg.opts.timestamps) {
            (true, Some((tsval, _))) => seq_ge(tsval, c.ts_recent),
            _ => true,
        };
        if !single
            || c.state != TcpState::Established
            || seg.flags & !flags::PSH != flags::ACK
            || seg.len == 0
            || seg.seq != c.rcv_nxt
            || !seq_gt(c.rcv_adv, c.rcv_nxt)
            || seq_gt(end, c.rcv_adv)
            || !paws_ok
            || !Self::tcp_ack_predicted(c, seg)
            || !c.ooo.is_empty()
            || (c.rx_frames + c.ooo.frames()) as usize >= rcv_frame_budget(c.rcv_buf)
        {
            return false;
        }
        let limits = self.tcp.rx_burst.limits;
        if self.tcp_mem_admit_in(idx, 1, &limits) != memory::Admit::Yes {
            return false;
        }
        let Some(frame) = seg.frame.take() else {
            return false;
        };
        // `touch` does nothing more for a connection already marked both ways.
        let c = &self.tcp.conns[idx as usize];
        if c.flags & (F_TOUCHED | F_APP_EV) != F_TOUCHED | F_APP_EV {
            self.tcp.touch(idx);
        }
        let c = &mut self.tcp.conns[idx as usize];
        Self::tcp_note_ts_recent(c, seg, seg.len);
        Self::tcp_snd_wnd_update(c, seg);
        self.tcp_rcv_in_order(idx, frame, 1, seg.len, now, true);
        self.tcp_mem_sync_in(idx, &limits);
        if self.tcp.conns[idx as usize].has(F_KEEPALIVE) {
            self.tcp_keepalive_touch(idx, now);
        }
        true
    }

    /// A D-SACK from the peer (RFC 2883): widens RACK's reordering window (RFC 8985 6.2 step
    /// 4) and, once every retransmission of the last recovery was reported as a duplicate,
    /// undoes that recovery's window reduction (RFC 3708 2; Linux tcp_try_undo_dsack).
    fn tcp_dsack(&mut self, idx: u32, l: u32, r: u32) {
        self.counters.add(Event::TcpDsacksRecv, 1);
        let c = &mut self.tcp.conns[idx as usize];
        c.rack.on_dsack(c.snd_una, c.snd_nxt);
        if let Some(prior) = c.rack.dsack_undo(l, r) {
            let cwnd = c.cc.cwnd.max(prior.cwnd);
            let ssthresh = c.cc.ssthresh.max(prior.ssthresh);
            c.cc = prior;
            c.cc.cwnd = cwnd;
            c.cc.ssthresh = ssthresh;
            self.counters.add(Event::TcpSpuriousUndos, 1);
        }
    }

    /// RACK loss detection (RFC 8985 6.2 step 5) for SACK connections; arms the reordering
    /// timer for segments that are not lost yet. Returns true if a segment became lost.
    pub(crate) fn tcp_rack_detect(&mut self, idx: u32, now: Instant) -> bool {
        let c = &mut self.tcp.conns[idx as usize];
        c.t_rack = Instant::MAX;
        c.flags &= !F_TLP;
        if !c.has(F_SACK) || c.snd_una == c.snd_max {
            return false;
        }
        let reo = c.rack.reo_wnd(
            c.has(F_RECOVERY),
            c.sndq.segs_sacked(u32::from(c.mss)),
            c.rtt.srtt,
        );
        let (any, timeout) = c.sndq.rack_detect(&c.rack, reo, now.total_micros() as u32);
        if timeout > 0 {
            // The wheel ticks in milliseconds: round up so the timer never fires early.
            c.t_rack = now + Duration::from_micros(u64::from(timeout));
        }
        any
    }

    /// Fast recovery. With SACK, entered when RACK deems a segment lost (RFC 8985, replacing
    /// RFC 6675's DupThresh); without SACK information, on three duplicate ACKs (RFC 5681 3.2,
    /// RFC 6582). Not entered again for data sent before the last recovery or RTO.
    pub(crate) fn tcp_maybe_enter_recovery(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        let mss = u32::from(c.mss);
        if c.has(F_RECOVERY) || c.snd_una == c.snd_max {
            return;
        }
        let rack_lost = c.has(F_SACK) && c.sndq.next_lost(c.snd_max).is_some();
        let dupthresh = u32::from(c.dupacks) >= DUPTHRESH && c.sndq.sacked_bytes == 0;
        if !rack_lost && !dupthresh {
            return;
        }
        // RFC 6582 3.2 step 2, RFC 6675 5.1: not again for the window already recovered.
        if seq_lt(c.snd_una, c.recovery_point) {
            return;
        }
        let flight = c.snd_max.wrapping_sub(c.snd_una);
        c.rack.start_undo(c.cc);
        c.cc.on_congestion(flight, mss, now);
        c.recovery_point = c.snd_max;
        c.flags |= F_RECOVERY;
        c.stats.recoveries += 1;
        // RFC 8985 7.4.1: a new TLP episode; fast recovery takes over from the probe.
        c.rack.tlp_end_seq = None;
        if c.has(F_TLP) {
            c.flags &= !F_TLP;
            c.t_rack = Instant::MAX;
        }
        if c.has(F_SACK) {
            // RFC 6675 5 (4.2): cwnd = ssthresh; NextSeg() retransmits from the lost ones.
            c.cc.cwnd = c.cc.ssthresh;
        } else {
            // RFC 6582 3.2 step 2: cwnd = ssthresh + 3 * SMSS.
            c.cc.cwnd = c.cc.ssthresh + 3 * mss;
        }
        if dupthresh
            && !rack_lost
            && c.sndq
                .segs
                .front()
                .is_some_and(|s| s.flags & sack::SACKED == 0)
        {
            c.sndq.mark_lost(0);
        }
        self.counters.add(Event::TcpFastRecoveries, 1);
    }

    /// Seventh and eighth steps: segment text, then FIN.
    fn tcp_text_and_fin(&mut self, idx: u32, mut seg: Seg, now: Instant) {
        let fin_seq = seg.seq.wrapping_add(seg.len);
        let has_fin = seg.has(flags::FIN);
        let state = self.tcp.conns[idx as usize].state;
        if seg.len > 0 {
            if state.can_receive() {
                self.tcp_data(idx, &mut seg, now);
            } else {
                // RFC 9293: after a FIN from the peer, text is ignored.
                self.counters.drop(DropReason::TcpDataAfterFin);
            }
        }
        self.tcp_free_seg(seg);
        if self.tcp.conns.get(idx as usize).is_none() {
            return;
        }
        if has_fin {
            let c = &mut self.tcp.conns[idx as usize];
            if matches!(c.state, TcpState::Closed | TcpState::SynSent) {
                return;
            }
            if fin_seq == c.rcv_nxt {
                self.tcp_fin(idx, now);
            } else if seq_gt(fin_seq, c.rcv_nxt) && seq_le(fin_seq, c.rcv_adv) {
                c.ooo.fin = Some(fin_seq);
                c.flags |= F_ACK_NOW;
            }
        }
    }

    /// Eighth step: the FIN at RCV.NXT.
    fn tcp_fin(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        if !c.has(F_FIN_RCVD) {
            c.rcv_nxt = c.rcv_nxt.wrapping_add(1);
            c.flags |= F_FIN_RCVD;
        }
        c.ooo.fin = None;
        c.flags |= F_ACK_NOW;
        match c.state {
            TcpState::SynReceived | TcpState::Established => c.state = TcpState::CloseWait,
            TcpState::FinWait1 => {
                if c.fin_acked() {
                    self.tcp_enter_time_wait(idx, now);
                } else {
                    c.state = TcpState::Closing;
                }
            }
            TcpState::FinWait2 => self.tcp_enter_time_wait(idx, now),
            TcpState::TimeWait => self.tcp_enter_time_wait(idx, now),
            _ => {}
        }
    }

    /// Seventh step: in-order data to the receive queue, the rest to the out-of-order queue.
    fn tcp_data(&mut self, idx: u32, seg: &mut Seg, now: Instant) {
        let Some(frame) = seg.frame.take() else {
            return;
        };
        let c = &mut self.tcp.conns[idx as usize];
        let mut seq = seg.seq;
        let mut len = seg.len;
        // Already received part: trimmed (RFC 9293: only the new part is processed).
        if seq_lt(seq, c.rcv_nxt) {
            let cut = c.rcv_nxt.wrapping_sub(seq);
            if c.has(F_SACK) {
                // RFC 2883 4: the part received twice goes in a D-SACK block.
                c.ooo.dsack = Some((seq, seq.wrapping_add(cut.min(len))));
            }
            if cut >= len {
                c.flags |= F_ACK_NOW;
                self.counters.drop(DropReason::TcpDuplicateData);
                self.pool.free(frame);
                return;
            }
            trim_front(&mut self.pool, &frame, cut as usize);
            seq = c.rcv_nxt;
            len -= cut;
        }
        // Beyond the advertised window: trimmed.
        let right = seq_max(c.rcv_adv, c.rcv_nxt);
        if seq_gt(seq.wrapping_add(len), right) {
            let keep = right.wrapping_sub(seq);
            if keep == 0 || seq_gt(seq, right) {
                c.flags |= F_ACK_NOW;
                self.counters.drop(DropReason::TcpBeyondWindow);
                self.pool.free(frame);
                return;
            }
            trim_back(&mut self.pool, &frame, keep as usize);
            len = keep;
        }
        // Memory: the connection's own frame budget (bounds frames pinned by tiny segments),
        // then the stack-wide accounting (`memory`): only a connection over its fair share
        // under pressure pays.
        let held = c.rx_frames + c.ooo.frames();
        let nf = self.pool.chain_count(&frame);
        if held as usize >= rcv_frame_budget(c.rcv_buf) {
            if !c.rxq.is_empty() {
                self.tcp_collapse_rxq(idx);
            }
            let c = &self.tcp.conns[idx as usize];
            if (c.rx_frames + c.ooo.frames()) as usize >= rcv_frame_budget(c.rcv_buf) {
                self.counters.drop(DropReason::TcpRcvMemory);
                self.pool.free(frame);
                return;
            }
        }
        if !self.tcp_mem_rcv_ok(idx, nf, seq) {
            self.tcp.conns[idx as usize].flags |= F_ACK_NOW;
            self.tcp_mem_drop(frame);
            return;
        }
        let c = &mut self.tcp.conns[idx as usize];
        if seq == c.rcv_nxt {
            self.tcp_rcv_in_order(idx, frame, nf, len, now, false);
        } else {
            // RFC 5681 4.2 / RFC 2018: out of order: an immediate duplicate ACK with SACK.
            c.flags |= F_ACK_NOW;
            if c.ooo.insert(&mut self.pool, seq, len, frame) == Insert::Stored {
                self.counters.add(Event::TcpOutOfOrder, 1);
                if c.t_ooo == Instant::MAX && self.cfg.tcp_ooo_timeout_ms > 0 {
                    c.t_ooo = now + Duration::from_millis(self.cfg.tcp_ooo_timeout_ms);
                }
                if self.tcp.mem.pressure {
                    // Under memory pressure out-of-order data waits at most a second for the
                    // hole to be filled: connections that make no progress give it back even
                    // if they send nothing more (new connections need it).
                    let c = &mut self.tcp.conns[idx as usize];
                    c.t_ooo = c.t_ooo.min(now + memory::OOO_PRESSURE_TIMEOUT);
                }
            } else {
                if c.has(F_SACK) {
                    // RFC 2883 4.1: a duplicate above RCV.NXT; its block follows it.
                    c.ooo.dsack = Some((seq, seq.wrapping_add(len)));
                }
                self.counters.drop(DropReason::TcpDuplicateData);
            }
        }
    }

    /// In-order data at RCV.NXT (`len` bytes in `nf` frames, admitted) to the receive queue,
    /// then what the out-of-order queue holds from there on; the ACK decision.
    ///
    /// Software GRO (unless turned off, `Stack::tcp_set_rx_coalesce`): on the fast path (`fast`), a segment
    /// of more than [`memory::COALESCE_MAX`] bytes that follows another such segment of the same
    /// connection in the same burst is linked to the end of that segment's receive-queue entry
    /// (one chain, one entry) instead of taking an entry of its own. The accounting stays per frame
    /// (`rx_frames`, `rcv_queued`, the memory totals), so budgets and admissions are what they
    /// are without it; small segments keep entries of their own so that `tcp_collapse_rxq` can
    /// still copy them together.
    #[inline(always)]
    fn tcp_rcv_in_order(
        &mut self,
        idx: u32,
        frame: Frame,
        nf: usize,
        len: u32,
        now: Instant,
        fast: bool,
    ) {
        let c = &mut self.tcp.conns[idx as usize];
        let had_ooo = !c.ooo.is_empty();
        c.rx_frames += nf as u32;
        let big = self.tcp.rx_coalesce && len as usize > memory::COALESCE_MAX;
        match self.tcp.rx_burst.tail {
            Some((i, tail)) if fast && big && i == idx => {
                // The chain's last frame: `tail` is the end of `rxq.back()` (see `RxBurst`).
                let t = Frame::from_index(tail);
                let fi = frame.index();
                self.pool.chain_append(&t, frame);
                let _ = t.into_index();
                self.tcp.rx_burst.tail = Some((idx, fi));
            }
            _ => {
                if fast && big {
                    self.pool.set_flags(&frame, RX_GRO);
                    self.tcp.rx_burst.tail = Some((idx, frame.index()));
                } else {
                    self.tcp.rx_burst.tail = None;
                }
                c.rxq.push_back(frame);
            }
        }
        c.rcv_queued += len;
        c.rcv_nxt = c.rcv_nxt.wrapping_add(len);
        c.stats.bytes_received += u64::from(len);
        // What the out-of-order queue held and this segment made contiguous.
        while let Some((f, l)) = had_ooo
            .then(|| c.ooo.pop_ready(&mut self.pool, c.rcv_nxt))
            .flatten()
        {
            c.rx_frames += self.pool.chain_count(&f) as u32;
            c.rxq.push_back(f);
            c.rcv_queued += l;
            c.rcv_nxt = c.rcv_nxt.wrapping_add(l);
            c.stats.bytes_received += u64::from(l);
        }
        self.counters.add(Event::TcpBytesReceived, u64::from(len));
        // Progress: the out-of-order timeout starts again (or stops with nothing held).
        c.t_ooo = if c.ooo.is_empty() {
            Instant::MAX
        } else {
            now + Duration::from_millis(self.cfg.tcp_ooo_timeout_ms)
        };
        if had_ooo {
            // RFC 5681 4.2: an ACK at once when a segment fills (part of) a gap.
            c.flags |= F_ACK_NOW;
            if c.ooo.fin == Some(c.rcv_nxt) {
                self.tcp_fin(idx, now);
            }
        } else {
            self.tcp_schedule_ack(idx, now);
        }
    }

    /// Delayed ACK (RFC 9293 3.8.6.3, RFC 5681 4.2): at least every second full-sized segment,
    /// at most `tcp_delack_ms` later; quick-ack mode acknowledges the first segments at once.
    #[inline(always)]
    fn tcp_schedule_ack(&mut self, idx: u32, now: Instant) {
        let delack_ms = self.cfg.tcp_delack_ms;
        let c = &mut self.tcp.conns[idx as usize];
        if c.quickack > 0 {
            c.quickack -= 1;
            c.flags |= F_ACK_NOW;
            return;
        }
        let unacked = c.rcv_nxt.wrapping_sub(c.last_ack_sent);
        let mss = u32::from(c.rcv_mss);
        if unacked >= 2 * mss {
            if c.has(F_ACK_NOW) || !self.tcp.rx_full || unacked >= (c.rcv_buf / 4).max(4 * mss) {
                c.flags |= F_ACK_NOW;
                return;
            }
            // More of this burst's stream is waiting in the driver: one ACK at the end of the
            // receive pass covers it (bounded by the delayed-ACK timer).
            if !c.has(F_ACK_DEFER) {
                c.flags |= F_ACK_DEFER;
                self.tcp.ack_deferred.push(idx);
            }
        }
        if c.t_delack == Instant::MAX {
            c.t_delack = now + Duration::from_millis(delack_ms);
        }
    }

    /// An ICMP error about a segment we sent (RFC 5927 checks; RFC 1122 4.2.3.9 hard/soft;
    /// RFC 1191 for fragmentation needed). Returns true if a connection took it.
    pub(crate) fn tcp_icmp_error(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        seq: u32,
        err: IcmpError,
        now: Instant,
    ) -> bool {
        let Some(&idx) = self.tcp.by_tuple.get(&Tuple { local, remote }) else {
            return false;
        };
        let c = &mut self.tcp.conns[idx as usize];
        // RFC 5927 4.1: the quoted sequence number must be in flight.
        if !(seq_ge(seq, c.snd_una) && seq_lt(seq, c.snd_max.max(c.snd_una.wrapping_add(1)))) {
            self.counters.drop(DropReason::TcpIcmpBadSeq);
            return true;
        }
        self.counters.add(Event::TcpIcmpErrors, 1);
        use crate::icmp::{codes, types};
        if err.icmp_type == types::DEST_UNREACHABLE && err.code == codes::FRAG_NEEDED {
            let Some(mtu) = err.mtu.map(usize::from).filter(|&m| m >= 68) else {
                return true;
            };
            // RFC 5927 7.2: a forged tiny MTU would make us crawl; as Linux (min_pmtu), no
            // lower than 552.
            let mtu = mtu.max(timers::MIN_PMTU);
            // Resend what is in flight at the new size (Linux tcp_simple_retransmit).
            if self.tcp_pmtu_lower(idx, mtu) {
                self.tcp_flush(now);
            }
            return true;
        }
        if c.state == TcpState::SynSent && err.icmp_type == types::DEST_UNREACHABLE {
            self.tcp_fail(idx, TcpError::Unreachable(err));
            return true;
        }
        c.soft_error = Some(err);
        true
    }
}
