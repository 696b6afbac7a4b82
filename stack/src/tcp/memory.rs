//! Stack-wide TCP memory accounting, in frames of the pool, like Linux's `tcp_mem`.
//!
//! Every connection is charged the frames its queues hold: receive queue, out-of-order queue
//! and the send-queue entries that own a frame. Small payloads copied into frames shared by
//! many connections (see `coalesce`) are charged once, to the stack. The sum is compared to
//! three thresholds (`StackConfig::tcp_mem`):
//!
//! - below `low`, nothing is limited (Linux leaves memory pressure below `tcp_mem[0]`);
//! - from `pressure` on (until the total falls below `low` again), a connection holding more
//!   than its fair share, `high / connections holding frames` (at least
//!   [`MIN_SHARE`] frames), pays: its out-of-order queue is pruned newest first (Linux
//!   `tcp_prune_ofo_queue`), its small received segments are collapsed into fewer frames
//!   (`tcp_collapse`), its advertised window stops growing, and what still does not fit is
//!   dropped with `tcp_mem_pressure`. Connections under their share are served as before;
//! - from `high` on, only connections holding no frame at all whose peer has acknowledged
//!   data before (an honest request-response client between requests) may take one, and only
//!   while the pool keeps its reserve (1/16) for ARP, ICMP, UDP and the driver. Connections
//!   whose peer leaves data unacknowledged through two RTOs are reset then (`timers`).
//!
//! The thresholds are far below the pool's size: the rest is the reserve TCP cannot capture.
//! Costs are O(1) per segment: the totals are updated from per-connection counters kept by
//! the queues, never by walking connections.

use super::*;
use crate::counters::{DropReason, Event};

/// The fair share never falls below this many frames (a segment in each direction and one
/// out of order).
pub(crate) const MIN_SHARE: usize = 3;
/// Payloads up to this many bytes are worth copying into a shared frame rather than pinning a
/// frame of their own (a 2 KiB frame holds a few hundred of them).
pub(crate) const COALESCE_MAX: usize = 256;
/// Longest out-of-order data is held without progress while under memory pressure.
pub(crate) const OOO_PRESSURE_TIMEOUT: Duration = Duration::from_secs(1);
/// Retired shared frames checked for release per call (bounded work).
const RECLAIM_SCAN: usize = 8;
/// TCP data (new, retransmitted, split or coalesced) takes no frame while fewer than
/// 1/`DATA_RESERVE_DIV` of the pool's frames are free.
const DATA_RESERVE_DIV: usize = 16;
/// Control segments (pure ACKs, SYN-ACKs, RSTs, FINs, probes) take none below 1/32.
const CTL_RESERVE_DIV: usize = 32;

/// Memory pressure thresholds, in frames (Linux `tcp_mem`, which counts pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpMemLimits {
    /// Below this, memory pressure ends (`tcp_mem[0]`).
    pub low: usize,
    /// From this on, connections above their fair share are limited (`tcp_mem[1]`).
    pub pressure: usize,
    /// Hard limit: only connections holding nothing may take a frame (`tcp_mem[2]`).
    pub high: usize,
}

impl TcpMemLimits {
    /// The defaults for a pool of `capacity` frames: 3/8, 1/2 and 5/8 of it. The 3/8 left
    /// above `high` are the reserve (the AF_XDP fill ring, transmission, ARP, ICMP, UDP,
    /// reassembly) that TCP can never take.
    pub fn for_pool(capacity: usize) -> TcpMemLimits {
        TcpMemLimits {
            low: capacity * 3 / 8,
            pressure: capacity / 2,
            high: capacity * 5 / 8,
        }
    }
}

/// The stack-wide state.
#[derive(Debug, Default)]
pub(crate) struct TcpMem {
    /// Frames charged to connections plus shared frames.
    pub frames: usize,
    /// Connections charged at least one frame.
    pub holders: usize,
    /// In memory pressure (entered at `pressure`, left below `low`).
    pub pressure: bool,
    /// The shared frame small payloads are being copied into, and its next free offset.
    pub coalesce: Option<(Frame, usize)>,
    /// Shared frames handed out, each with one reference of ours, freed once nobody else
    /// holds them.
    pub retired: VecDeque<Frame>,
}

/// What the memory rules allow a connection to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Take it.
    Yes,
    /// Over its share under pressure (or the hard limit): make room or drop.
    OverShare,
}

impl Stack {
    /// The thresholds in force (configured, or derived from the pool).
    pub(crate) fn tcp_mem_limits(&self) -> TcpMemLimits {
        let [low, pressure, high] = self.cfg.tcp_mem;
        if high == 0 {
            TcpMemLimits::for_pool(
                self.pool
                    .capacity()
                    .saturating_sub(self.cfg.pool_driver_frames),
            )
        } else {
            TcpMemLimits {
                low: low.min(pressure),
                pressure: pressure.min(high),
                high,
            }
        }
    }

    /// Frames a connection holds: receive and out-of-order queues, own send-queue frames.
    fn tcp_conn_frames(c: &Conn) -> u32 {
        c.rx_frames + c.ooo.frames() + c.sndq.own_frames()
    }

    /// Brings the stack-wide totals up to date with a connection's queues; O(1).
    pub(crate) fn tcp_mem_sync(&mut self, idx: u32) {
        let l = self.tcp_mem_limits();
        self.tcp_mem_sync_in(idx, &l);
    }

    /// [`Stack::tcp_mem_sync`] with the thresholds in force (`l`, from `tcp_mem_limits`).
    #[inline(always)]
    pub(crate) fn tcp_mem_sync_in(&mut self, idx: u32, l: &TcpMemLimits) {
        let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
            return;
        };
        let now = Self::tcp_conn_frames(c);
        let was = c.mem;
        if now == was {
            return;
        }
        c.mem = now;
        let clamped = c.has(F_MEM_CLAMP);
        let m = &mut self.tcp.mem;
        m.frames = m.frames + now as usize - was as usize;
        match (was == 0, now == 0) {
            (true, false) => m.holders += 1,
            (false, true) => m.holders -= 1,
            _ => {}
        }
        self.tcp_mem_level_changed_in(l);
        if clamped && (!self.tcp.mem.pressure || now as usize <= self.tcp_mem_share_in(l)) {
            self.tcp.conns[idx as usize].flags &= !F_MEM_CLAMP;
        }
    }

    /// Removes a connection's charge (it is being freed, its queues emptied).
    pub(crate) fn tcp_mem_release(&mut self, idx: u32) {
        let c = &mut self.tcp.conns[idx as usize];
        let was = core::mem::take(&mut c.mem);
        if was > 0 {
            self.tcp.mem.frames -= was as usize;
            self.tcp.mem.holders -= 1;
            self.tcp_mem_level_changed();
        }
    }

    fn tcp_mem_level_changed(&mut self) {
        let l = self.tcp_mem_limits();
        self.tcp_mem_level_changed_in(&l);
    }

    fn tcp_mem_level_changed_in(&mut self, l: &TcpMemLimits) {
        let m = &mut self.tcp.mem;
        if !m.pressure && m.frames >= l.pressure {
            m.pressure = true;
            self.counters.add(Event::TcpMemPressures, 1);
            tracing::debug!(frames = m.frames, "tcp memory pressure");
        } else if m.pressure && m.frames < l.low {
            m.pressure = false;
        }
    }

    /// The fair share of a connection under pressure: `high` over the connections holding
    /// frames, at least [`MIN_SHARE`].
    pub(crate) fn tcp_mem_fair_share(&self) -> usize {
        self.tcp_mem_share_in(&self.tcp_mem_limits())
    }

    fn tcp_mem_share_in(&self, l: &TcpMemLimits) -> usize {
        (l.high / self.tcp.mem.holders.max(1)).max(MIN_SHARE)
    }

    /// May connection `idx` take `n` more frames?
    pub(crate) fn tcp_mem_admit(&self, idx: u32, n: usize) -> Admit {
        self.tcp_mem_admit_in(idx, n, &self.tcp_mem_limits())
    }

    /// [`Stack::tcp_mem_admit`] with the thresholds in force (`l`, from `tcp_mem_limits`).
    #[inline(always)]
    pub(crate) fn tcp_mem_admit_in(&self, idx: u32, n: usize, l: &TcpMemLimits) -> Admit {
        let c = &self.tcp.conns[idx as usize];
        let m = &self.tcp.mem;
        let held = c.mem as usize;
        // The pool's own reserve, for everything that is not TCP (and the driver's fill
        // ring): never taken.
        if self.pool.available() < self.tcp_pool_reserve(true) + n {
            return Admit::OverShare;
        }
        if m.frames + n > l.high {
            // Past the hard limit only a connection holding nothing whose peer has shown it
            // acknowledges data (a request-response client between requests) gets a frame; a
            // new connection waits for the stalled ones to be shed.
            return if held == 0 && c.stats.bytes_acked > 0 {
                Admit::Yes
            } else {
                Admit::OverShare
            };
        }
        if !m.pressure || held + n <= self.tcp_mem_share_in(l) {
            Admit::Yes
        } else {
            Admit::OverShare
        }
    }

    /// Makes room for `need` frames for a segment at `seq` on a connection over its share:
    /// out-of-order segments above `seq` go first, newest (highest) first, as Linux
    /// `tcp_prune_ofo_queue` does (RFC 2018 8 lets a receiver discard data it SACKed): data
    /// nearer RCV.NXT is worth more. Then small in-order segments are collapsed. Returns true
    /// when the segment may be queued. Bounded by the connection's own queues.
    pub(crate) fn tcp_mem_prune(&mut self, idx: u32, need: usize, seq: u32) -> bool {
        let share = self.tcp_mem_fair_share();
        let high = self.tcp_mem_limits().high;
        let total = self.tcp.mem.frames;
        let c = &mut self.tcp.conns[idx as usize];
        let held = Self::tcp_conn_frames(c) as usize;
        let over = (held + need)
            .saturating_sub(share)
            .max((total + need).saturating_sub(high));
        if over > 0 && !c.ooo.is_empty() {
            let pruned = c.ooo.prune_newest(&mut self.pool, over, seq);
            if pruned > 0 {
                self.counters.add(Event::TcpOfoPruned, pruned as u64);
                // RFC 2018 8 / RFC 2883: what we SACKed may be gone; the next ACK says so.
                c.flags |= F_ACK_NOW;
            }
        }
        self.tcp_collapse_rxq(idx);
        self.tcp_mem_sync(idx);
        self.tcp_mem_admit(idx, need) == Admit::Yes
    }

    /// Linux `tcp_collapse`: copies small in-order segments into the frame of the segment
    /// before them when it has room, freeing theirs. In place, bounded by the receive queue.
    /// The segment before may be the last frame of a chain of coalesced segments (GRO, which
    /// links only segments larger than [`COALESCE_MAX`]): the same frame it would be without.
    pub(crate) fn tcp_collapse_rxq(&mut self, idx: u32) {
        let c = &mut self.tcp.conns[idx as usize];
        let mut collapsed = 0u32;
        let mut i = 0;
        while i + 1 < c.rxq.len() {
            // The frame the bytes would go to: the entry, or its last frame for a GRO chain.
            let head = &c.rxq[i];
            let ai = if self.pool.flags(head) & RX_GRO != 0 {
                chain_last(&mut self.pool, head)
            } else {
                head.index()
            };
            let (a, b) = (Frame::from_index(ai), &c.rxq[i + 1]);
            let single = |f: &Frame| self.pool.chain_count(f) == 1 && self.pool.refs(f) == 1;
            let (la, lb) = (self.pool.len(&a), self.pool.len(b));
            let fits = single(&a)
                && single(b)
                && lb <= COALESCE_MAX
                && self.pool.push_back(&a, lb).is_some();
            if fits {
                let ok = self.pool.copy_between(b, 0, &a, la, lb);
                debug_assert!(ok, "both ranges are inside their windows");
                // `a` aliases a frame the queue owns.
                let _ = a.into_index();
                let b = c.rxq.remove(i + 1).expect("index checked");
                self.pool.free(b);
                collapsed += 1;
            } else {
                let _ = a.into_index();
                i += 1;
            }
        }
        c.rx_frames -= collapsed;
        if collapsed > 0 {
            self.counters
                .add(Event::TcpRcvCollapsed, u64::from(collapsed));
        }
    }

    /// Receive-side admission of one segment of `frames` frames (RFC 9293 3.10.7.4 seventh
    /// step happens only if this says yes). Drops are counted by the caller.
    pub(crate) fn tcp_mem_rcv_ok(&mut self, idx: u32, frames: usize, seq: u32) -> bool {
        if self.tcp_mem_admit(idx, frames) == Admit::Yes {
            return true;
        }
        let ok = self.tcp_mem_prune(idx, frames, seq);
        if !ok {
            // Stop opening the window of a connection over its share (Linux clamps
            // rcv_ssthresh under pressure); the right edge already advertised stays.
            let c = &mut self.tcp.conns[idx as usize];
            c.flags |= F_MEM_CLAMP;
        }
        ok
    }

    /// Copies a small send-queue payload into a frame shared with other entries (of any
    /// connection), so that a stalled peer pins a few bytes rather than a whole frame.
    /// Returns the shared frame (one reference for the caller) and the payload's offset.
    pub(crate) fn tcp_coalesce_copy(
        &mut self,
        src: &Frame,
        off: usize,
        len: usize,
    ) -> Option<(Frame, usize)> {
        if len == 0 || len > COALESCE_MAX {
            return None;
        }
        let fs = self.pool.frame_size();
        if let Some((f, used)) = &mut self.tcp.mem.coalesce {
            if self.pool.refs(f) == 1 {
                // Every payload it held was acknowledged: start it over.
                *used = 0;
            }
        }
        let need_new = match &self.tcp.mem.coalesce {
            Some((_, used)) => used + len > fs,
            None => true,
        };
        if need_new {
            self.tcp_coalesce_reclaim();
            let f = self.tcp_reserve_alloc(true)?;
            if let Some((old, _)) = self.tcp.mem.coalesce.take() {
                self.tcp.mem.retired.push_back(old);
            }
            // Whole-frame window: payloads are addressed by offset.
            let ok = self.pool.set_window(&f, 0, fs);
            debug_assert!(ok);
            self.tcp.mem.coalesce = Some((f, 0));
            self.tcp.mem.frames += 1;
        }
        let (f, used) = self.tcp.mem.coalesce.as_mut().expect("set above");
        let at = *used;
        *used += len;
        let fi = f.index();
        // Through scratch: the source window may belong to another owner.
        self.tcp.scratch[..len].copy_from_slice(&self.pool.buffer_mut(src)[off..off + len]);
        let dst = Frame::from_index(fi);
        self.pool.buffer_mut(&dst)[at..at + len].copy_from_slice(&self.tcp.scratch[..len]);
        let shared = self.pool.share(&dst);
        let _ = dst.into_index();
        self.counters.add(Event::TcpSndCoalesced, 1);
        Some((shared, at))
    }

    /// Moves small sent payloads of a connection's send queue that only the queue holds
    /// into shared frames (at most `max` entries); the connection's own frames are freed.
    /// For connections whose data sits unacknowledged: after an RTO, or under pressure.
    pub(crate) fn tcp_collapse_sndq(&mut self, idx: u32, max: usize) {
        let mut done = 0;
        let mut i = 0;
        while done < max {
            let c = &self.tcp.conns[idx as usize];
            let Some(s) = c.sndq.segs.get(i) else { break };
            i += 1;
            if s.flags & sack::COALESCED != 0
                || usize::from(s.len) > COALESCE_MAX
                || self.pool.refs(&s.frame) != 1
            {
                continue;
            }
            let (fi, off, len) = (s.frame.index(), usize::from(s.off), usize::from(s.len));
            let src = Frame::from_index(fi);
            let got = self.tcp_coalesce_copy(&src, off, len);
            let _ = src.into_index();
            let Some((shared, at)) = got else { break };
            let c = &mut self.tcp.conns[idx as usize];
            let s = &mut c.sndq.segs[i - 1];
            let old = core::mem::replace(&mut s.frame, shared);
            s.off = at as u16;
            s.flags |= sack::COALESCED;
            c.sndq.coalesced += 1;
            self.pool.free(old);
            done += 1;
        }
        if done > 0 {
            self.tcp_mem_sync(idx);
        }
    }

    /// Frees retired shared frames nobody else holds any more (a bounded number per call).
    pub(crate) fn tcp_coalesce_reclaim(&mut self) {
        for _ in 0..RECLAIM_SCAN.min(self.tcp.mem.retired.len()) {
            let f = self.tcp.mem.retired.pop_front().expect("len checked");
            if self.pool.refs(&f) == 1 {
                self.pool.free(f);
                self.tcp.mem.frames -= 1;
            } else {
                self.tcp.mem.retired.push_back(f);
            }
        }
        self.tcp_mem_level_changed();
    }

    /// Free frames TCP never takes (item 6 of issue #12): the pool's last 1/16 for data, its
    /// last 1/32 for control segments (`data` false). Every frame TCP takes from the pool, for
    /// any segment of any connection, passes here (`tcp_reserve_alloc`, `tcp_mem_admit`), so
    /// however many connections are stuck, what is left serves the driver (the AF_XDP fill
    /// ring refills from it), ARP, ICMP, UDP, handshakes and the ACKs of connections that make
    /// progress. Frames on their way out (transmit queue, TX ring) came from above the
    /// reserve, so they are bounded by it too.
    pub(crate) fn tcp_pool_reserve(&self, data: bool) -> usize {
        let div = if data {
            DATA_RESERVE_DIV
        } else {
            CTL_RESERVE_DIV
        };
        self.pool.capacity() / div
    }

    /// A fresh frame for a TCP segment, unless that would take one of the reserved free frames
    /// (see [`Stack::tcp_pool_reserve`]); the caller counts the drop.
    pub(crate) fn tcp_reserve_alloc(&mut self, data: bool) -> Option<Frame> {
        if self.pool.available() <= self.tcp_pool_reserve(data) {
            return None;
        }
        self.pool.alloc()
    }

    /// Frames TCP is charged for, stack-wide (connections and shared frames).
    pub fn tcp_mem_frames(&self) -> usize {
        self.tcp.mem.frames
    }

    /// `(charged, counted)`: the frames the accounting charges to TCP, and the same total
    /// recounted from every queue (O(connections); for tests and audits). Equal unless the
    /// accounting has a bug.
    pub fn tcp_mem_audit(&self) -> (usize, usize) {
        let counted = self
            .tcp
            .conns
            .iter()
            .map(|(_, c)| {
                c.rxq
                    .iter()
                    .map(|f| self.pool.chain_count(f))
                    .sum::<usize>()
                    + c.ooo.frames() as usize
                    + c.sndq
                        .segs
                        .iter()
                        .filter(|s| s.flags & sack::COALESCED == 0)
                        .count()
            })
            .sum::<usize>()
            + self.tcp.mem.retired.len()
            + usize::from(self.tcp.mem.coalesce.is_some());
        (self.tcp.mem.frames, counted)
    }

    /// The memory thresholds in force, in frames.
    pub fn tcp_mem_thresholds(&self) -> TcpMemLimits {
        self.tcp_mem_limits()
    }

    /// True while TCP is under memory pressure.
    pub fn tcp_mem_pressure(&self) -> bool {
        self.tcp.mem.pressure
    }

    /// Counts and drops a segment refused for memory.
    pub(crate) fn tcp_mem_drop(&mut self, frame: Frame) {
        self.counters.drop(DropReason::TcpMemPressure);
        self.pool.free(frame);
    }
}

impl Stack {
    /// TCP's part of [`Stack::frame_census`]: queues and shared frames; marks in `in_snd` the
    /// send-queue frames it counted (the transmit queue may hold them too).
    pub(crate) fn tcp_census(&self, c: &mut crate::census::FrameCensus, in_snd: &mut [bool]) {
        let pool = &self.pool;
        for (_, conn) in self.tcp.conns.iter() {
            c.tcp_rcv += conn.rxq.iter().map(|f| pool.chain_count(f)).sum::<usize>();
            c.tcp_ooo += conn.ooo.frames() as usize;
            for s in conn.sndq.segs.iter() {
                if s.flags & sack::COALESCED != 0 {
                    continue;
                }
                let Some(seen) = in_snd.get_mut(s.frame.index() as usize) else {
                    continue;
                };
                if !*seen {
                    *seen = true;
                    if pool.refs(&s.frame) > 1 {
                        c.tcp_snd_in_flight += 1;
                    } else {
                        c.tcp_snd += 1;
                    }
                }
            }
        }
        c.tcp_coalesced = self.tcp.mem.retired.len() + usize::from(self.tcp.mem.coalesce.is_some());
    }
}
