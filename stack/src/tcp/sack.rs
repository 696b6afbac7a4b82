//! The send queue and its SACK scoreboard (RFC 2018, RFC 6675).
//!
//! The send queue holds the application's frames until they are acknowledged; each entry is at
//! most one MSS and is sent as exactly one segment, so SACK blocks (which the receiver builds from
//! our segments) map onto whole entries and the scoreboard is a few flag bits per entry, like
//! Linux's per-skb `sacked` field.
//!
//! Invariants: entries are in sequence order and contiguous; `sacked_bytes` is the sum of the
//! lengths of entries flagged `SACKED`. Costs: SACK processing O(log n + entries covered); loss
//! marking and `pipe` O(n) and only run during recovery.

use super::rack::{sent_after, Rack};
use super::{seq_ge, seq_gt, seq_le, seq_lt};
use crate::buf::{Frame, Pool};
use arrayvec::ArrayVec;
use std::collections::VecDeque;

/// Selectively acknowledged.
pub(crate) const SACKED: u8 = 1;
/// Retransmitted at least once (Karn: no RTT sample).
pub(crate) const RETRANS: u8 = 2;
/// Deemed lost (RFC 6675 IsLost, or RTO).
pub(crate) const LOST: u8 = 4;
/// Sent at least once.
pub(crate) const SENT: u8 = 8;
/// The payload lives in a frame shared with other entries (`memory::tcp_coalesce_copy`).
pub(crate) const COALESCED: u8 = 16;
/// The last byte of an application write (RFC 9293 3.9.1 PUSH): the segment ending here carries
/// PSH, first transmission or retransmission, as Linux's per-skb PSH. A split keeps it on the
/// tail; data appended by a later write takes it away (the new write's end is marked instead).
pub(crate) const PUSH: u8 = 32;

/// A SACK block the sender may act on: non-empty, starting strictly above the cumulative ACK
/// (a block at or below it is a D-SACK, RFC 2883, or a receiver that reneged or lies: data
/// it holds at SND.UNA it would have acknowledged), and ending at or below SND.MAX (RFC 5961-like:
/// no SACK of data never sent). As Linux `tcp_is_sackblock_valid`.
pub(crate) fn sack_block_valid(l: u32, r: u32, snd_una: u32, snd_max: u32) -> bool {
    seq_lt(l, r) && seq_gt(l, snd_una) && seq_le(r, snd_max)
}

/// One queued segment's worth of payload: bytes `off..off+len` of `frame` (frame-relative).
#[derive(Debug)]
pub(crate) struct SendSeg {
    pub frame: Frame,
    pub seq: u32,
    pub off: u16,
    pub len: u16,
    /// Low 32 bits of the send time in µs.
    pub sent: u32,
    pub flags: u8,
    /// The payload's one's-complement sum, computed when the bytes were copied in (issue #17:
    /// the send path reads the application's bytes once); see [`PayloadSum`].
    pub psum: PayloadSum,
}

impl SendSeg {
    #[inline]
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.len as u32)
    }

    /// The one's-complement sum of the payload (`checksum::sum` form), if known for the entry's
    /// current bytes.
    #[inline]
    pub fn payload_sum(&self) -> Option<u64> {
        self.psum.get(self.off, self.len)
    }
}

/// The one's-complement sum of an entry's payload, tagged with the `off` and `len` it was computed
/// for: it is valid only while the entry still has those (a trim by a partial ACK, a split, an
/// append to the unsent tail or a move into a shared frame changes one of them, and the sum is
/// then ignored and the output path sums the bytes itself). The bytes of a queued range never
/// change, so the tag is the whole validity condition, and nothing has to invalidate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PayloadSum {
    sum: u16,
    off: u16,
    len: u16,
}

impl PayloadSum {
    /// No sum known (`len` is never `u16::MAX`: entries are at most one frame).
    pub const NONE: PayloadSum = PayloadSum {
        sum: 0,
        off: u16::MAX,
        len: u16::MAX,
    };

    /// The sum `sum` (as `checksum::sum` returns it) of bytes `off..off + len`.
    #[inline]
    pub fn new(sum: u64, off: u16, len: u16) -> PayloadSum {
        PayloadSum {
            sum: crate::wire::checksum::fold(sum),
            off,
            len,
        }
    }

    /// The sum, if it was computed for `off..off + len`.
    #[inline]
    pub fn get(&self, off: u16, len: u16) -> Option<u64> {
        (self.off == off && self.len == len).then_some(u64::from(self.sum))
    }
}

/// The send queue.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    pub segs: VecDeque<SendSeg>,
    pub sacked_bytes: u32,
    /// HighSACK: end of the highest SACKed byte (valid when `sacked_bytes > 0`).
    pub high_sacked: u32,
    /// Entries flagged `COALESCED`.
    pub coalesced: u32,
    /// False only when no entry carries `LOST` (set wherever `LOST` is, cleared by a cumulative
    /// ACK that leaves no `LOST` entry): [`SendQueue::next_lost`] then answers without walking
    /// the queue, which it would otherwise do on every ACK of a loss-free transfer (the whole
    /// flight, thousands of entries with large windows).
    pub maybe_lost: bool,
}

/// What a cumulative ACK freed.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    pub bytes: u32,
    /// RTT of the newest never-retransmitted entry fully acknowledged (µs).
    pub rtt_us: Option<u32>,
}

impl SendQueue {
    /// Index of the entry holding `seq`.
    pub fn find(&self, seq: u32) -> Option<usize> {
        let first = self.segs.front()?;
        let i = self
            .segs
            .partition_point(|s| seq_le(s.end(), seq) && seq_ge(s.seq, first.seq));
        self.segs
            .get(i)
            .filter(|s| seq_ge(seq, s.seq) && seq_lt(seq, s.end()))
            .map(|_| i)
    }

    /// [`SendQueue::find`] trying `hint` first (O(1) when the caller walks the queue in order,
    /// as the output loop does: the entry after the one just sent), then the binary search.
    #[inline]
    pub fn find_from(&self, seq: u32, hint: usize) -> Option<usize> {
        match self.segs.get(hint) {
            Some(s) if seq_ge(seq, s.seq) && seq_lt(seq, s.end()) => Some(hint),
            _ => self.find(seq),
        }
    }

    /// Frees entries below `ack`; trims a partially acknowledged one. Entries delivered by this
    /// ACK (not SACKed before) are reported to RACK in sequence order.
    pub fn ack(&mut self, pool: &mut Pool, ack: u32, now_us: u32, rack: &mut Rack) -> Acked {
        let mut out = Acked::default();
        // Karn (RFC 6298 3) extended: when this ACK also covers a retransmitted segment, the
        // later segments were held up by the repair, so no sample is taken from any of them.
        let mut tainted = false;
        while let Some(s) = self.segs.front_mut() {
            if seq_le(s.end(), ack) {
                let s = self.segs.pop_front().expect("front exists");
                out.bytes += s.len as u32;
                if s.flags & SACKED != 0 {
                    self.sacked_bytes -= s.len as u32;
                }
                if s.flags & COALESCED != 0 {
                    self.coalesced -= 1;
                }
                if s.flags & (SACKED | SENT) == SENT {
                    rack.on_delivered(s.sent, s.end(), s.flags & RETRANS != 0, now_us);
                }
                tainted |= s.flags & RETRANS != 0;
                if s.flags & (RETRANS | SACKED) == 0 && s.flags & SENT != 0 && !tainted {
                    out.rtt_us = Some(now_us.wrapping_sub(s.sent));
                }
                pool.free(s.frame);
            } else {
                if seq_gt(ack, s.seq) {
                    let n = ack.wrapping_sub(s.seq);
                    s.seq = ack;
                    s.off += n as u16;
                    s.len -= n as u16;
                    out.bytes += n;
                    if s.flags & SACKED != 0 {
                        self.sacked_bytes -= n;
                    }
                }
                break;
            }
        }
        if tainted {
            out.rtt_us = None;
        }
        if self.maybe_lost && out.bytes > 0 {
            // Usually stops at the first entry (the oldest is the one lost).
            self.maybe_lost = self.segs.iter().any(|s| s.flags & LOST != 0);
        }
        out
    }

    /// Marks entry `i` lost (to be retransmitted: a retransmission in flight no longer counts).
    pub fn mark_lost(&mut self, i: usize) {
        if let Some(s) = self.segs.get_mut(i) {
            s.flags = (s.flags & !RETRANS) | LOST;
            self.maybe_lost = true;
        }
    }

    /// Applies SACK blocks (RFC 2018); only blocks inside `(snd_una, snd_max]` count.
    /// Returns true if any entry became SACKed; those are reported to RACK, lowest first.
    pub fn apply_sack(
        &mut self,
        blocks: &[(u32, u32)],
        snd_una: u32,
        snd_max: u32,
        now_us: u32,
        rack: &mut Rack,
    ) -> bool {
        let mut any = false;
        let mut blocks: ArrayVec<(u32, u32), 4> = blocks.iter().copied().collect();
        blocks.sort_unstable_by(|a, b| (a.0.wrapping_sub(b.0) as i32).cmp(&0));
        for &(l, r) in &blocks {
            if !sack_block_valid(l, r, snd_una, snd_max) {
                continue; // D-SACK or bogus: the caller filtered and counted them
            }
            let Some(mut i) = self.find(l).or_else(|| self.find_after(l)) else {
                continue;
            };
            while let Some(s) = self.segs.get_mut(i) {
                if seq_gt(s.end(), r) {
                    break;
                }
                if seq_ge(s.seq, l) && s.flags & SACKED == 0 {
                    if s.flags & SENT != 0 {
                        rack.on_delivered(s.sent, s.end(), s.flags & RETRANS != 0, now_us);
                    }
                    s.flags |= SACKED;
                    s.flags &= !LOST;
                    self.sacked_bytes += s.len as u32;
                    any = true;
                    if self.sacked_bytes == s.len as u32 || seq_gt(s.end(), self.high_sacked) {
                        self.high_sacked = s.end();
                    }
                }
                i += 1;
            }
        }
        any
    }

    fn find_after(&self, seq: u32) -> Option<usize> {
        let i = self.segs.partition_point(|s| seq_lt(s.seq, seq));
        (i < self.segs.len()).then_some(i)
    }

    /// RFC 8985 6.2 step 5 (RACK_detect_loss): every entry sent before RACK's segment and
    /// longer ago than `RACK.rtt + reo_wnd` is lost (a lost retransmission too: it becomes
    /// eligible for retransmission again). Returns whether any entry became lost, and how long
    /// (µs) until the next one would, for the reordering timer (0: none pending).
    ///
    /// Cost: the walk stops at the first entry sent after RACK's segment, never retransmitted:
    /// every entry above it was sent later still.
    pub fn rack_detect(&mut self, rack: &Rack, reo_wnd: u32, now_us: u32) -> (bool, u32) {
        let mut any = false;
        let mut timeout = 0u32;
        if !rack.valid {
            return (false, 0);
        }
        for s in self.segs.iter_mut() {
            if s.flags & SENT == 0 {
                break;
            }
            if s.flags & SACKED != 0 || s.flags & (LOST | RETRANS) == LOST {
                continue;
            }
            if !sent_after(rack.xmit_ts, rack.end_seq, s.sent, s.end()) {
                if s.flags & RETRANS == 0 {
                    break;
                }
                continue;
            }
            let deadline = s.sent.wrapping_add(rack.rtt).wrapping_add(reo_wnd);
            let remaining = deadline.wrapping_sub(now_us) as i32;
            if remaining <= 0 {
                s.flags = (s.flags | LOST) & !RETRANS;
                any = true;
            } else {
                timeout = timeout.max(remaining as u32);
            }
        }
        self.maybe_lost |= any;
        (any, timeout)
    }

    /// Entries SACKed (RACK.segs_sacked, approximately: bytes over the MSS).
    pub fn segs_sacked(&self, mss: u32) -> u32 {
        self.sacked_bytes / mss.max(1)
    }

    /// RFC 6675 `pipe`: octets in flight below `snd_nxt`.
    pub fn pipe(&self, snd_nxt: u32) -> u32 {
        let mut p = 0u32;
        for s in &self.segs {
            if seq_ge(s.seq, snd_nxt) {
                break;
            }
            if s.flags & SACKED != 0 {
                continue;
            }
            if s.flags & LOST == 0 {
                p += s.len as u32;
            }
            if s.flags & RETRANS != 0 {
                p += s.len as u32;
            }
        }
        p
    }

    /// RFC 6675 NextSeg rule 1: the first lost, not yet retransmitted entry below `snd_nxt`.
    pub fn next_lost(&self, snd_nxt: u32) -> Option<usize> {
        if !self.maybe_lost {
            debug_assert!(
                self.segs.iter().all(|s| s.flags & LOST == 0),
                "an entry is LOST without maybe_lost"
            );
            return None;
        }
        self.segs
            .iter()
            .take_while(|s| seq_lt(s.seq, snd_nxt))
            .position(|s| s.flags & (LOST | SACKED | RETRANS) == LOST)
    }

    /// After an RTO the scoreboard is cleared and everything sent is deemed lost: RFC 2018 8
    /// ("after a retransmit timeout the data sender SHOULD turn off all of the SACKed bits,
    /// since the timeout might indicate that the data receiver has reneged") and RFC 6675 5.1
    /// ("the data sender SHOULD reset the scoreboard"). SACKed data was never freed (only a
    /// cumulative ACK frees), so it can be sent again. Returns the bytes that were SACKed.
    pub fn on_rto(&mut self) -> u32 {
        let was = self.sacked_bytes;
        for s in &mut self.segs {
            s.flags &= !(LOST | RETRANS | SACKED);
            if s.flags & SENT != 0 {
                s.flags |= LOST;
            }
        }
        self.maybe_lost = true;
        self.sacked_bytes = 0;
        was
    }

    /// Linux `tcp_check_sack_reneging`: after a cumulative ACK, the entry at SND.UNA is marked
    /// SACKed. The receiver has discarded data it SACKed (RFC 2018 8 allows it), since it would
    /// otherwise have acknowledged it.
    pub fn reneged(&self) -> bool {
        self.segs.front().is_some_and(|s| s.flags & SACKED != 0)
    }

    /// Bytes queued (sent or not).
    pub fn bytes(&self) -> u32 {
        match (self.segs.front(), self.segs.back()) {
            (Some(f), Some(b)) => b.end().wrapping_sub(f.seq),
            _ => 0,
        }
    }

    /// Frames held only by the queue (frames also held elsewhere are counted there).
    pub fn frames_held(&self, pool: &Pool) -> usize {
        self.segs
            .iter()
            .filter(|s| pool.refs(&s.frame) == 1)
            .count()
    }

    /// Entries owning a frame of their own (not coalesced into a shared one); O(1).
    pub fn own_frames(&self) -> u32 {
        self.segs.len() as u32 - self.coalesced
    }

    pub fn clear(&mut self, pool: &mut Pool) {
        for s in self.segs.drain(..) {
            pool.free(s.frame);
        }
        self.sacked_bytes = 0;
        self.coalesced = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(pool: &mut Pool, base: u32, n: usize) -> SendQueue {
        let mut q = SendQueue::default();
        for i in 0..n {
            let f = pool.alloc_from(&[i as u8; 100]).unwrap();
            let off = pool.data_offset(&f) as u16;
            q.segs.push_back(SendSeg {
                frame: f,
                seq: base.wrapping_add(100 * i as u32),
                off,
                len: 100,
                sent: 10 * i as u32,
                flags: SENT,
                psum: PayloadSum::NONE,
            });
        }
        q
    }

    #[test]
    fn several_sack_holes_mark_the_holes_lost_and_pipe_counts_the_rest() {
        let mut pool = Pool::new(32, 2048, 64).unwrap();
        let base = u32::MAX - 250;
        let mut q = queue(&mut pool, base, 10);
        let s = |i: u32| base.wrapping_add(100 * i);
        // Holes at entries 0 and 4; entries 1-3 and 5-8 SACKed (entry i sent at 10 i µs).
        let mut rack = Rack::default();
        let sack = [(s(5), s(9)), (s(1), s(4))];
        assert!(q.apply_sack(&sack, base, s(10), 1000, &mut rack));
        assert_eq!(q.sacked_bytes, 700);
        assert_eq!(q.high_sacked, s(9));
        assert_eq!((rack.xmit_ts, rack.rtt), (80, 920), "entry 8: sent last");
        // Within a reordering window of 100 µs nothing is lost yet: 20 µs to go for entry 0.
        assert_eq!(q.rack_detect(&rack, 100, 1000), (false, 60));
        assert_eq!(q.rack_detect(&rack, 0, 1000), (true, 0));
        let lost: Vec<usize> = (0..10).filter(|&i| q.segs[i].flags & LOST != 0).collect();
        assert_eq!(lost, vec![0, 4], "entry 9 was sent after entry 8: not lost");
        assert_eq!(q.pipe(s(10)), 100, "only entry 9 is in flight");
        assert_eq!(q.next_lost(s(10)), Some(0));
        q.segs[0].flags |= RETRANS;
        assert_eq!(q.next_lost(s(10)), Some(4));
        assert_eq!(q.pipe(s(10)), 200);
        let a = q.ack(&mut pool, s(4), 2000, &mut rack);
        assert_eq!(a.bytes, 400);
        assert_eq!(q.sacked_bytes, 400);
        assert_eq!(q.find(s(4)), Some(0));
        assert_eq!(q.find(s(4) + 50), Some(0));
        assert_eq!(q.find(s(10)), None);
        q.clear(&mut pool);
        assert_eq!(pool.available(), 32);
    }

    #[test]
    fn find_from_agrees_with_find_for_every_hint() {
        let mut pool = Pool::new(32, 2048, 64).unwrap();
        let base = u32::MAX - 250;
        let q = queue(&mut pool, base, 10);
        for off in (0..1100u32).step_by(7) {
            let seq = base.wrapping_add(off);
            for hint in [0, 1, 3, 9, 10, 11, usize::MAX] {
                assert_eq!(
                    q.find_from(seq, hint),
                    q.find(seq),
                    "seq +{off} hint {hint}"
                );
            }
        }
        let mut q = q;
        q.clear(&mut pool);
    }

    #[test]
    fn a_payload_sum_is_valid_only_for_the_range_it_was_computed_for() {
        let mut pool = Pool::new(32, 2048, 64).unwrap();
        let mut q = queue(&mut pool, 1000, 2);
        let s = &mut q.segs[0];
        assert_eq!(s.payload_sum(), None);
        s.psum = PayloadSum::new(0x1_2345, s.off, s.len);
        assert_eq!(s.payload_sum(), Some(0x2346), "stored folded");
        // A partial ACK trims the entry: the sum no longer applies.
        let a = q.ack(&mut pool, 1010, 0, &mut Rack::default());
        assert_eq!(a.bytes, 10);
        assert_eq!(q.segs[0].payload_sum(), None);
        q.clear(&mut pool);
    }
}
