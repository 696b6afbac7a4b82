//! The in-memory wire both stacks' benchmark links share: two rings (one per direction) of fixed
//! frame slots, allocated once. Sending copies a frame into the next free slot, receiving copies
//! the oldest slot out: one copy each way, a few loads and stores of ring indices, nothing else (no
//! heap, no free list, no impairment dice). A ring that drains starts again at its first slot, so
//! the slots in use stay in cache (see [`Ring::advance`]).
//!
//! [`Wire::push`] and [`Wire::pop_into`] are never inlined, so that a callgrind profile can
//! attribute the link's share by function (`benches/callgrind_lean.sh` subtracts it): the stack
//! side of a port or device (cnet's pool allocation and free, smoltcp's tokens) counts as the
//! stack's.

use std::cell::RefCell;
use std::rc::Rc;

/// Frame slots per direction: more than either stack ever has in flight in these benchmarks
/// (cnet's pools hold [`crate::FRAMES`] frames; smoltcp's TCP send buffer is smaller than this in
/// segments). A push onto a full ring is dropped and counted.
pub const SLOTS: usize = 4096;
/// Bytes per slot: the longest Ethernet frame at [`crate::MTU`].
pub const SLOT_BYTES: usize = crate::MTU + 14;

/// One direction: a ring of slots.
struct Ring {
    data: Box<[u8]>,
    lens: Box<[u16]>,
    head: usize,
    tail: usize,
}

impl Ring {
    /// Takes the oldest slot off the ring. A ring left empty starts again at slot 0, so the
    /// next frames reuse the slots just read (still in cache) instead of walking all
    /// [`SLOTS`] x [`SLOT_BYTES`] (6 MiB) and missing the cache on every push: the cheapest link
    /// for both stacks, which is what the benchmark needs (the stacks' share is what it measures).
    #[inline]
    fn advance(&mut self) {
        self.head += 1;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }

    fn new() -> Ring {
        Ring {
            data: vec![0u8; SLOTS * SLOT_BYTES].into_boxed_slice(),
            lens: vec![0u16; SLOTS].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }
}

/// The shared wire: `rings[0]` carries side 0 → side 1, `rings[1]` the reverse.
pub struct Wire {
    rings: [Ring; 2],
    /// Frames dropped because a ring was full, or longer than a slot.
    pub dropped: u64,
    /// Frames pushed by each side, and of those the ones of at most [`SMALL_FRAME`] bytes (on
    /// bulk TCP the receiver's pure ACKs: no payload, headers and options only).
    pub pushed: [u64; 2],
    /// See `pushed`.
    pub small: [u64; 2],
}

/// Largest frame counted as small in [`Wire::small`]: Ethernet, IPv4 and a TCP header with 40
/// bytes of options is 94 bytes; the smallest data segment here is far larger.
pub const SMALL_FRAME: usize = 128;

impl core::fmt::Debug for Wire {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Wire")
            .field("in_flight", &[self.in_flight(0), self.in_flight(1)])
            .field("dropped", &self.dropped)
            .finish()
    }
}

impl Wire {
    /// A wire shared by two ends (side 0 and side 1).
    pub fn shared() -> Rc<RefCell<Wire>> {
        Rc::new(RefCell::new(Wire {
            rings: [Ring::new(), Ring::new()],
            dropped: 0,
            pushed: [0; 2],
            small: [0; 2],
        }))
    }

    /// Frames in flight from `side`.
    pub fn in_flight(&self, side: usize) -> usize {
        let r = &self.rings[side];
        r.tail - r.head
    }

    /// Sends `frame` from `side`: copies it into the next slot. `false` (and counted) if the ring
    /// is full or the frame longer than a slot.
    #[inline(never)]
    pub fn push(&mut self, side: usize, frame: &[u8]) -> bool {
        let r = &mut self.rings[side & 1];
        if r.tail - r.head == SLOTS || frame.len() > SLOT_BYTES {
            self.dropped += 1;
            return false;
        }
        let slot = r.tail % SLOTS;
        r.data[slot * SLOT_BYTES..slot * SLOT_BYTES + frame.len()].copy_from_slice(frame);
        r.lens[slot] = frame.len() as u16;
        r.tail += 1;
        self.pushed[side & 1] += 1;
        self.small[side & 1] += u64::from(frame.len() <= SMALL_FRAME);
        true
    }

    /// Length of the oldest frame in flight towards `side`, if any.
    #[inline]
    pub fn peek_len(&self, side: usize) -> Option<usize> {
        let r = &self.rings[(side & 1) ^ 1];
        (r.head != r.tail).then(|| r.lens[r.head % SLOTS] as usize)
    }

    /// Receives at `side`: copies the oldest frame in flight towards it into `out[..len]` (`out`
    /// must be at least [`Wire::peek_len`] long) and returns its length; `None` if none.
    #[inline(never)]
    pub fn pop_into(&mut self, side: usize, out: &mut [u8]) -> Option<usize> {
        let r = &mut self.rings[(side & 1) ^ 1];
        if r.head == r.tail {
            return None;
        }
        let slot = r.head % SLOTS;
        let len = r.lens[slot] as usize;
        out[..len].copy_from_slice(&r.data[slot * SLOT_BYTES..slot * SLOT_BYTES + len]);
        r.advance();
        Some(len)
    }

    /// Drops the oldest frame in flight towards `side` without copying it.
    pub fn discard(&mut self, side: usize) {
        let r = &mut self.rings[(side & 1) ^ 1];
        if r.head != r.tail {
            r.advance();
            self.dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_in_order_and_overflow_is_counted() {
        let w = Wire::shared();
        let mut w = w.borrow_mut();
        assert!(w.push(0, &[1, 2, 3]));
        assert!(w.push(0, &[4]));
        assert_eq!(w.peek_len(1), Some(3));
        assert_eq!(w.peek_len(0), None);
        let mut out = [0u8; SLOT_BYTES];
        assert_eq!(w.pop_into(1, &mut out), Some(3));
        assert_eq!(&out[..3], &[1, 2, 3]);
        assert_eq!(w.pop_into(1, &mut out), Some(1));
        assert_eq!(w.pop_into(1, &mut out), None);
        // Drained: the next frame goes into slot 0 again (the slot just read, still cached).
        assert_eq!((w.rings[0].head, w.rings[0].tail), (0, 0));
        assert!(w.push(0, &[5, 6]));
        assert!(w.push(0, &[7]));
        w.discard(1);
        assert_eq!(w.pop_into(1, &mut out), Some(1));
        assert_eq!(out[0], 7);
        assert_eq!((w.rings[0].head, w.rings[0].tail), (0, 0));
        for _ in 0..SLOTS {
            assert!(w.push(1, &[0; 60]));
        }
        assert!(!w.push(1, &[0; 60]));
        assert!(!w.push(0, &[0; SLOT_BYTES + 1]));
        assert_eq!(w.dropped, 3);
    }
}
