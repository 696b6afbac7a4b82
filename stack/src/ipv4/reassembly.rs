//! IPv4 fragment reassembly (RFC 791 3.2, RFC 815) with bounded memory, zero copy.
//!
//! Fragments are kept as pool frames whose data windows are their payloads; a complete datagram is
//! handed on as a frame chain in offset order, so the payload is never copied.
//!
//! Bounds (all from `StackConfig`): at most `max_datagrams` datagrams in progress, at most
//! `max_frames` frames held in total, at most [`MAX_FRAGS`] fragments per datagram, and every
//! datagram completes within `timeout` or is dropped. When a bound is hit the *oldest* datagram is
//! evicted, so a flood of never-completed fragments cannot starve legitimate traffic for a whole
//! timeout. Overlapping fragments drop the whole datagram (as RFC 5722 does for IPv6 and Linux does
//! for IPv4); exact duplicates are dropped alone.

use crate::buf::{Frame, Pool};
use crate::counters::DropReason;
use crate::hash::{map, Map};
use crate::time::{Duration, Instant};
use arrayvec::ArrayVec;
use core::net::Ipv4Addr;

/// Most fragments one datagram may have (64 KiB over a 1500-byte MTU needs 45).
pub const MAX_FRAGS: usize = 64;

/// Identity of a datagram under reassembly (RFC 791: source, destination, protocol, identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub proto: u8,
    /// Identification.
    pub ident: u16,
}

#[derive(Debug)]
struct Frag {
    offset: usize,
    len: usize,
    frame: Frame,
}

#[derive(Debug)]
struct Datagram {
    key: Key,
    frags: ArrayVec<Frag, MAX_FRAGS>,
    total: Option<usize>,
    received: usize,
    deadline: Instant,
    started: Instant,
}

/// Outcome of inserting a fragment.
#[derive(Debug)]
pub enum Outcome {
    /// Held; the datagram is not complete yet.
    Held,
    /// Complete: the payload as a frame chain, offset order, and its length.
    Complete(Frame, usize),
    /// The fragment was dropped (its frame freed) for this reason; `whole` if the datagram went too.
    Dropped(DropReason),
}

/// The reassembler. See module docs.
#[derive(Debug)]
pub struct Reassembler {
    slots: Vec<Option<Datagram>>,
    index: Map<Key, usize>,
    frames_held: usize,
    max_frames: usize,
    timeout: Duration,
}

impl Reassembler {
    /// A reassembler with the given bounds.
    pub fn new(max_datagrams: usize, max_frames: usize, timeout: Duration, seed: u64) -> Self {
        let max_datagrams = max_datagrams.max(1);
        Reassembler {
            slots: (0..max_datagrams).map(|_| None).collect(),
            index: map(max_datagrams, seed),
            frames_held: 0,
            max_frames: max_frames.max(1),
            timeout,
        }
    }

    /// Frames currently held.
    pub fn frames_held(&self) -> usize {
        self.frames_held
    }

    /// Datagrams in progress.
    pub fn in_progress(&self) -> usize {
        self.index.len()
    }

    fn release(&mut self, slot: usize, pool: &mut Pool) {
        if let Some(d) = self.slots[slot].take() {
            self.index.remove(&d.key);
            self.frames_held -= d.frags.len();
            for f in d.frags {
                pool.free(f.frame);
            }
        }
    }

    fn oldest(&self, except: Option<usize>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .filter_map(|(i, s)| s.as_ref().map(|d| (d.started, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// Inserts a fragment whose frame window is its payload. `offset` and `more` come from the
    /// header. Returns what happened; the frame is always consumed.
    pub fn insert(
        &mut self,
        pool: &mut Pool,
        key: Key,
        offset: usize,
        more: bool,
        frame: Frame,
        now: Instant,
    ) -> (Outcome, usize) {
        let len = pool.len(&frame);
        let mut evicted = 0;
        // RFC 791: every fragment but the last carries a multiple of 8 bytes; the datagram fits 64 KiB.
        if (more && (!len.is_multiple_of(8) || len == 0)) || offset + len > 65535 - 20 {
            pool.free(frame);
            return (Outcome::Dropped(DropReason::FragMalformed), evicted);
        }
        let slot = match self.index.get(&key) {
            Some(&s) => s,
            None => {
                let free = match self.slots.iter().position(Option::is_none) {
                    Some(s) => s,
                    None => {
                        let s = self.oldest(None).expect("all slots are full");
                        self.release(s, pool);
                        evicted += 1;
                        s
                    }
                };
                self.slots[free] = Some(Datagram {
                    key,
                    frags: ArrayVec::new(),
                    total: None,
                    received: 0,
                    deadline: now + self.timeout,
                    started: now,
                });
                self.index.insert(key, free);
                free
            }
        };
        while self.frames_held >= self.max_frames {
            match self.oldest(Some(slot)) {
                Some(s) => {
                    self.release(s, pool);
                    evicted += 1;
                }
                None => {
                    pool.free(frame);
                    return (Outcome::Dropped(DropReason::FragNoMemory), evicted);
                }
            }
        }
        let d = self.slots[slot].as_mut().expect("indexed slot is occupied");
        let end = offset + len;
        if !more {
            if d.total.is_some_and(|t| t != end) || d.frags.iter().any(|f| f.offset + f.len > end) {
                self.release(slot, pool);
                pool.free(frame);
                return (Outcome::Dropped(DropReason::FragOverlap), evicted);
            }
            d.total = Some(end);
        } else if d.total.is_some_and(|t| end > t) {
            self.release(slot, pool);
            pool.free(frame);
            return (Outcome::Dropped(DropReason::FragOverlap), evicted);
        }
        let pos = d.frags.partition_point(|f| f.offset < offset);
        let dup = d
            .frags
            .get(pos)
            .is_some_and(|f| f.offset == offset && f.len == len);
        if dup {
            pool.free(frame);
            return (Outcome::Dropped(DropReason::FragDuplicate), evicted);
        }
        let overlaps_prev = pos > 0 && d.frags[pos - 1].offset + d.frags[pos - 1].len > offset;
        let overlaps_next = d.frags.get(pos).is_some_and(|f| f.offset < end);
        if overlaps_prev || overlaps_next || d.frags.is_full() {
            let reason = if d.frags.is_full() {
                DropReason::FragNoMemory
            } else {
                DropReason::FragOverlap
            };
            self.release(slot, pool);
            pool.free(frame);
            return (Outcome::Dropped(reason), evicted);
        }
        d.frags.insert(pos, Frag { offset, len, frame });
        d.received += len;
        self.frames_held += 1;
        match d.total {
            Some(t) if d.received == t => {
                let d = self.slots[slot].take().expect("occupied");
                self.index.remove(&d.key);
                self.frames_held -= d.frags.len();
                let mut it = d.frags.into_iter();
                let head = it.next().expect("a complete datagram has a fragment").frame;
                for f in it {
                    pool.chain_append(&head, f.frame);
                }
                (Outcome::Complete(head, t), evicted)
            }
            _ => (Outcome::Held, evicted),
        }
    }

    /// Earliest deadline of a datagram in progress.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.index.is_empty() {
            return None;
        }
        self.slots.iter().flatten().map(|d| d.deadline).min()
    }

    /// Drops every datagram past its deadline; returns how many (RFC 791: the timer ran out).
    pub fn expire(&mut self, pool: &mut Pool, now: Instant) -> usize {
        let mut n = 0;
        for s in 0..self.slots.len() {
            if self.slots[s].as_ref().is_some_and(|d| d.deadline <= now) {
                self.release(s, pool);
                n += 1;
            }
        }
        n
    }

    /// Drops everything held.
    pub fn clear(&mut self, pool: &mut Pool) {
        for s in 0..self.slots.len() {
            self.release(s, pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key {
        src: Ipv4Addr::new(198, 18, 0, 1),
        dst: Ipv4Addr::new(198, 18, 0, 2),
        proto: 17,
        ident: 9,
    };

    fn frag(pool: &mut Pool, byte: u8, len: usize) -> Frame {
        pool.alloc_from(&vec![byte; len]).unwrap()
    }

    #[test]
    fn out_of_order_fragments_complete_as_an_ordered_chain() {
        let mut pool = Pool::new(8, 2048, 0).unwrap();
        let mut r = Reassembler::new(4, 16, Duration::from_secs(30), 7);
        let now = Instant::ZERO;
        let c = frag(&mut pool, 3, 5);
        assert!(matches!(
            r.insert(&mut pool, KEY, 16, false, c, now).0,
            Outcome::Held
        ));
        let a = frag(&mut pool, 1, 8);
        assert!(matches!(
            r.insert(&mut pool, KEY, 0, true, a, now).0,
            Outcome::Held
        ));
        let b = frag(&mut pool, 2, 8);
        let (Outcome::Complete(head, len), _) = r.insert(&mut pool, KEY, 8, true, b, now) else {
            panic!("not complete");
        };
        assert_eq!(len, 21);
        let mut out = [0u8; 21];
        pool.chain_copy_to(&head, &mut out);
        assert_eq!(
            &out[..],
            &[[1u8; 8].as_slice(), &[2; 8], &[3; 5]].concat()[..]
        );
        pool.free(head);
        assert_eq!(pool.available(), 8);
        assert_eq!(r.frames_held(), 0);
    }

    #[test]
    fn overlap_drops_datagram_duplicate_only_itself() {
        let mut pool = Pool::new(8, 2048, 0).unwrap();
        let mut r = Reassembler::new(4, 16, Duration::from_secs(30), 7);
        let now = Instant::ZERO;
        let a = frag(&mut pool, 1, 16);
        r.insert(&mut pool, KEY, 0, true, a, now);
        let dup = frag(&mut pool, 1, 16);
        let (o, _) = r.insert(&mut pool, KEY, 0, true, dup, now);
        assert!(matches!(o, Outcome::Dropped(DropReason::FragDuplicate)));
        assert_eq!(r.in_progress(), 1);
        let over = frag(&mut pool, 9, 16);
        let (o, _) = r.insert(&mut pool, KEY, 8, true, over, now);
        assert!(matches!(o, Outcome::Dropped(DropReason::FragOverlap)));
        assert_eq!(r.in_progress(), 0);
        assert_eq!(pool.available(), 8);
    }

    #[test]
    fn timeout_and_bounds_release_frames() {
        let mut pool = Pool::new(200, 256, 0).unwrap();
        let mut r = Reassembler::new(2, 64, Duration::from_secs(30), 7);
        for id in 0..5u16 {
            let f = frag(&mut pool, 0, 8);
            let k = Key { ident: id, ..KEY };
            r.insert(&mut pool, k, 0, true, f, Instant::from_millis(id as u64));
        }
        assert_eq!(r.in_progress(), 2, "oldest datagrams are evicted");
        assert_eq!(
            r.next_deadline(),
            Some(Instant::from_millis(3) + Duration::from_secs(30))
        );
        assert_eq!(r.expire(&mut pool, Instant::from_millis(30_004)), 2);
        assert_eq!(pool.available(), 200);
        let bad = frag(&mut pool, 0, 7);
        let (o, _) = r.insert(&mut pool, KEY, 0, true, bad, Instant::ZERO);
        assert!(matches!(o, Outcome::Dropped(DropReason::FragMalformed)));
        let far = frag(&mut pool, 0, 8);
        let (o, _) = r.insert(&mut pool, KEY, 65528, false, far, Instant::ZERO);
        assert!(matches!(o, Outcome::Dropped(DropReason::FragMalformed)));
        assert_eq!(pool.available(), 200);
    }

    #[test]
    fn frame_budget_is_never_exceeded() {
        let mut pool = Pool::new(300, 256, 0).unwrap();
        let mut r = Reassembler::new(8, 64, Duration::from_secs(30), 7);
        for i in 0..200usize {
            let k = Key {
                ident: (i % 8) as u16,
                ..KEY
            };
            let f = frag(&mut pool, 0, 8);
            r.insert(
                &mut pool,
                k,
                (i / 8) * 8,
                true,
                f,
                Instant::from_micros(i as u64),
            );
            assert!(r.frames_held() <= 64);
        }
        r.clear(&mut pool);
        assert_eq!(pool.available(), 300);
    }
}
