//! The out-of-order queue: segments received beyond `RCV.NXT`, held as frames (zero copy), kept
//! sorted and non-overlapping, bounded by the advertised window (the caller only inserts data
//! inside it) and by a frame budget.
//!
//! Overlap rule: data already held wins; a new segment is trimmed to the gaps it fills, and held
//! segments it covers entirely are replaced. Cost: O(segments held) per insertion.

#[cfg(test)]
use super::seq_ge;
use super::{seq_gt, seq_le, seq_lt, trim_back, trim_front};
use crate::buf::{Frame, Pool};
use arrayvec::ArrayVec;

#[derive(Debug)]
struct Seg {
    seq: u32,
    len: u32,
    frame: Frame,
}

/// Segments beyond `RCV.NXT`.
#[derive(Debug, Default)]
pub(crate) struct OooQueue {
    segs: Vec<Seg>,
    bytes: u32,
    /// Frames held (chains count every frame).
    nframes: u32,
    /// The block the latest segment went to (RFC 2018 4: reported first).
    last: Option<u32>,
    /// Sequence number of a FIN received out of order.
    pub fin: Option<u32>,
    /// Duplicate data to report in the next ACK (D-SACK, RFC 2883).
    pub dsack: Option<(u32, u32)>,
}

/// What an insertion did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Held (possibly trimmed).
    Stored,
    /// Every byte was already held: freed.
    Duplicate,
}

impl OooQueue {
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    pub fn bytes(&self) -> u32 {
        self.bytes
    }

    /// Frames held; O(1).
    pub fn frames(&self) -> u32 {
        self.nframes
    }

    /// Frees segments from the highest sequence number down (the newest data in sequence
    /// space, the furthest from being deliverable: Linux `tcp_prune_ofo_queue`) until at least
    /// `frames` frames are freed, stopping at segments starting at or below `above` (the
    /// segment being made room for). Returns the frames freed.
    pub fn prune_newest(&mut self, pool: &mut Pool, frames: usize, above: u32) -> usize {
        let mut freed = 0;
        while freed < frames {
            if !self.segs.last().is_some_and(|s| seq_gt(s.seq, above)) {
                break;
            }
            let Some(s) = self.segs.pop() else { break };
            let n = pool.chain_count(&s.frame);
            freed += n;
            self.nframes -= n as u32;
            self.bytes -= s.len;
            pool.free(s.frame);
        }
        if self
            .last
            .is_some_and(|l| !self.segs.iter().any(|s| s.seq == l))
        {
            self.last = self.segs.last().map(|s| s.seq);
        }
        freed
    }

    /// Inserts `len` bytes at `seq` (the frame's window or chain is the payload).
    pub fn insert(&mut self, pool: &mut Pool, mut seq: u32, mut len: u32, frame: Frame) -> Insert {
        // Held segments inside [seq, seq+len) are replaced by the new one.
        let end = seq.wrapping_add(len);
        let mut i = 0;
        while i < self.segs.len() {
            let s = &self.segs[i];
            if seq_le(seq, s.seq) && seq_le(s.seq.wrapping_add(s.len), end) && s.len < len {
                let s = self.segs.remove(i);
                self.bytes -= s.len;
                self.nframes -= pool.chain_count(&s.frame) as u32;
                pool.free(s.frame);
            } else {
                i += 1;
            }
        }
        // Position: first held segment starting after `seq`.
        let pos = self.segs.partition_point(|s| seq_le(s.seq, seq));
        if pos > 0 {
            let p = &self.segs[pos - 1];
            let p_end = p.seq.wrapping_add(p.len);
            if seq_gt(p_end, seq) {
                let cut = p_end.wrapping_sub(seq);
                if cut >= len {
                    pool.free(frame);
                    self.last = Some(p.seq);
                    return Insert::Duplicate;
                }
                trim_front(pool, &frame, cut as usize);
                seq = p_end;
                len -= cut;
            }
        }
        if let Some(n) = self.segs.get(pos) {
            let end = seq.wrapping_add(len);
            if seq_gt(end, n.seq) {
                let keep = n.seq.wrapping_sub(seq);
                if keep == 0 {
                    pool.free(frame);
                    self.last = Some(n.seq);
                    return Insert::Duplicate;
                }
                trim_back(pool, &frame, keep as usize);
                len = keep;
            }
        }
        self.nframes += pool.chain_count(&frame) as u32;
        self.segs.insert(pos, Seg { seq, len, frame });
        self.bytes += len;
        self.last = Some(seq);
        Insert::Stored
    }

    /// Takes the next segment if it starts at or before `rcv_nxt`, trimmed to start there.
    /// Segments entirely before `rcv_nxt` are freed.
    pub fn pop_ready(&mut self, pool: &mut Pool, rcv_nxt: u32) -> Option<(Frame, u32)> {
        while let Some(s) = self.segs.first() {
            if seq_gt(s.seq, rcv_nxt) {
                return None;
            }
            let s = self.segs.remove(0);
            self.bytes -= s.len;
            self.nframes -= pool.chain_count(&s.frame) as u32;
            let end = s.seq.wrapping_add(s.len);
            if seq_le(end, rcv_nxt) {
                pool.free(s.frame);
                continue;
            }
            let cut = rcv_nxt.wrapping_sub(s.seq);
            if cut > 0 {
                trim_front(pool, &s.frame, cut as usize);
            }
            return Some((s.frame, s.len - cut));
        }
        None
    }

    /// SACK blocks to report (RFC 2018 4): the block holding the latest segment first, then the
    /// others in sequence order, at most `max`.
    pub fn sack_blocks(&self, max: usize) -> ArrayVec<(u32, u32), 4> {
        let mut blocks: ArrayVec<(u32, u32), 4> = ArrayVec::new();
        let mut merged: ArrayVec<(u32, u32), 64> = ArrayVec::new();
        for s in &self.segs {
            let e = s.seq.wrapping_add(s.len);
            match merged.last_mut() {
                Some(b) if b.1 == s.seq => b.1 = e,
                _ => {
                    if merged.try_push((s.seq, e)).is_err() {
                        break;
                    }
                }
            }
        }
        let max = max.min(4);
        if let Some(l) = self.last {
            if let Some(b) = merged.iter().find(|b| seq_le(b.0, l) && seq_lt(l, b.1)) {
                blocks.push(*b);
            }
        }
        for b in &merged {
            if blocks.len() >= max {
                break;
            }
            if !blocks.contains(b) {
                blocks.push(*b);
            }
        }
        blocks
    }

    /// Frees everything.
    pub fn clear(&mut self, pool: &mut Pool) {
        for s in self.segs.drain(..) {
            pool.free(s.frame);
        }
        self.bytes = 0;
        self.nframes = 0;
        self.last = None;
        self.fin = None;
    }

    /// True if `seq` is held.
    #[cfg(test)]
    pub fn holds(&self, seq: u32) -> bool {
        self.segs
            .iter()
            .any(|s| seq_ge(seq, s.seq) && seq_lt(seq, s.seq.wrapping_add(s.len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(pool: &mut Pool, seq: u32, len: u32) -> Frame {
        let bytes: Vec<u8> = (0..len).map(|i| seq.wrapping_add(i) as u8).collect();
        pool.alloc_from(&bytes).unwrap()
    }

    /// Model test: random inserts against a byte-set model; popped data is the right bytes.
    #[test]
    fn random_inserts_match_a_byte_model() {
        let mut pool = Pool::new(256, 2048, 64).unwrap();
        let mut x = 77u32;
        let mut rnd = |m: u32| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % m
        };
        let base = u32::MAX - 3000; // crosses the wrap-around
        for _ in 0..50 {
            let mut q = OooQueue::default();
            let mut model = vec![false; 8000];
            let mut rcv_nxt = base;
            let mut out = Vec::new();
            for _ in 0..60 {
                let off = rnd(4000) + 1;
                let len = rnd(1400) + 1;
                let f = seg(&mut pool, base.wrapping_add(off), len);
                q.insert(&mut pool, base.wrapping_add(off), len, f);
                for b in off..off + len {
                    model[b as usize] = true;
                }
                // Occasionally fill the front.
                if rnd(4) == 0 {
                    let front = rcv_nxt.wrapping_sub(base);
                    let len = rnd(800) + 1;
                    for b in front..front + len {
                        out.push(base.wrapping_add(b) as u8);
                    }
                    rcv_nxt = rcv_nxt.wrapping_add(len);
                    while let Some((f, l)) = q.pop_ready(&mut pool, rcv_nxt) {
                        let mut v = vec![0; l as usize];
                        pool.chain_copy_to(&f, &mut v);
                        let start = rcv_nxt;
                        for (i, byte) in v.iter().enumerate() {
                            assert_eq!(*byte, start.wrapping_add(i as u32) as u8);
                        }
                        rcv_nxt = rcv_nxt.wrapping_add(l);
                        pool.free(f);
                    }
                }
            }
            let blocks = q.sack_blocks(4);
            for (l, r) in &blocks {
                assert!(seq_lt(*l, *r));
                assert!(q.holds(*l));
            }
            q.clear(&mut pool);
            let _ = model;
        }
        assert_eq!(pool.available(), 256);
    }

    #[test]
    fn overlaps_are_trimmed_and_duplicates_freed() {
        let mut pool = Pool::new(16, 2048, 64).unwrap();
        let mut q = OooQueue::default();
        let f = seg(&mut pool, 100, 100);
        assert_eq!(q.insert(&mut pool, 100, 100, f), Insert::Stored);
        let f = seg(&mut pool, 150, 30);
        assert_eq!(q.insert(&mut pool, 150, 30, f), Insert::Duplicate);
        let f = seg(&mut pool, 150, 100);
        assert_eq!(q.insert(&mut pool, 150, 100, f), Insert::Stored);
        assert_eq!(q.bytes(), 150);
        let f = seg(&mut pool, 300, 10);
        q.insert(&mut pool, 300, 10, f);
        assert_eq!(q.sack_blocks(4).as_slice(), &[(300, 310), (100, 250)]);
        let f = seg(&mut pool, 50, 300);
        assert_eq!(q.insert(&mut pool, 50, 300, f), Insert::Stored);
        assert_eq!(q.sack_blocks(4).as_slice(), &[(50, 350)]);
        let (f, l) = q.pop_ready(&mut pool, 60).unwrap();
        assert_eq!((l, pool.data(&f)[0]), (290, 60));
        pool.free(f);
        q.clear(&mut pool);
        assert_eq!(pool.available(), 16);
    }
}
