//! A hierarchical timer wheel: one entry per keyed owner (a TCP connection), O(1) insert, cancel
//! and reschedule, and a next-deadline query that costs a few bit scans whatever the number of
//! entries.
//!
//! Layout (as in the Linux and tokio wheels): `LEVELS` levels of 64 slots; a slot of level `l`
//! spans `64^l` ticks. An entry sits in the level of the highest 6-bit group in which its deadline
//! differs from the wheel's current tick, in the slot given by that group of its deadline. When
//! time reaches a slot of a level above 0, its entries are re-inserted and fall to lower levels;
//! entries of a level-0 slot are due. Each level keeps a 64-bit occupancy mask, so the next
//! deadline is found with one `trailing_zeros` per level.
//!
//! Invariants:
//! - every node is in exactly one slot list, and the slot's bit is set iff its list is non-empty;
//! - a node's deadline is never before the wheel's current tick (late inserts are clamped to it).
//!
//! Costs: `insert`, `cancel`: O(1). `next_deadline`: O(LEVELS). `advance`: O(expired + cascaded),
//! each entry cascading at most `LEVELS - 1` times over its life.
//!
//! `next_deadline` is exact for level 0 and a lower bound (the start of the slot) above it: a wake-up
//! at a lower bound only cascades, and the next query is exact or later.

use crate::time::Instant;
use core::cell::Cell;
use slab::Slab;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const LEVELS: usize = 6;
const NIL: u32 = u32::MAX;

/// Identifies an entry for `cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u32);

#[derive(Debug)]
struct Node {
    key: u32,
    deadline: u64,
    prev: u32,
    next: u32,
    slot: u16,
}

/// The wheel. Time is in ticks of `tick_us` microseconds; deadlines round up to a tick, so a timer
/// never fires early.
#[derive(Debug)]
pub struct TimerWheel {
    nodes: Slab<Node>,
    heads: Box<[u32]>,
    occupied: [u64; LEVELS],
    /// Current tick: every deadline before it has been handed out.
    elapsed: u64,
    tick_us: u64,
    /// `next_deadline`'s last answer in ticks (`Some(None)`: nothing armed), or `None` after any
    /// change: a stack asks several times per loop step and the answer rarely changes.
    next_cache: Cell<Option<Option<u64>>>,
}

impl TimerWheel {
    /// An empty wheel with ticks of `tick_us` microseconds (at least 1).
    pub fn new(tick_us: u64) -> Self {
        TimerWheel {
            nodes: Slab::new(),
            heads: vec![NIL; SLOTS * LEVELS].into_boxed_slice(),
            occupied: [0; LEVELS],
            elapsed: 0,
            tick_us: tick_us.max(1),
            next_cache: Cell::new(Some(None)),
        }
    }

    /// Entries armed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Ticks covered by the wheel (`64^LEVELS`).
    const SPAN: u64 = 1 << (SLOT_BITS as usize * LEVELS);
    /// Ticks of one top-level slot.
    const TOP_SLOT: u64 = 1 << (SLOT_BITS as usize * (LEVELS - 1));

    fn ticks_ceil(&self, t: Instant) -> u64 {
        t.total_micros().div_ceil(self.tick_us)
    }

    fn level_for(&self, when: u64) -> usize {
        let masked = (self.elapsed ^ when) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros() as usize;
        (significant / SLOT_BITS as usize).min(LEVELS - 1)
    }

    fn link(&mut self, id: u32) {
        self.next_cache.set(None);
        // A deadline beyond the wheel's span (`64^LEVELS` ticks) is filed at the last position
        // before the current top-level slot comes round again, and cascades from there: filed at
        // its own position, it would alias to a slot the wheel reaches too early, and `advance`
        // would put it back into the slot it is processing for ever.
        let horizon = (self.elapsed & !(Self::TOP_SLOT - 1)).saturating_add(Self::SPAN - 1);
        let when = self.nodes[id as usize].deadline.min(horizon);
        let level = self.level_for(when);
        let slot = ((when >> (level as u32 * SLOT_BITS)) as usize) & (SLOTS - 1);
        let s = level * SLOTS + slot;
        let head = self.heads[s];
        {
            let n = &mut self.nodes[id as usize];
            n.prev = NIL;
            n.next = head;
            n.slot = s as u16;
        }
        if head != NIL {
            self.nodes[head as usize].prev = id;
        }
        self.heads[s] = id;
        self.occupied[level] |= 1 << slot;
    }

    fn unlink(&mut self, id: u32) {
        self.next_cache.set(None);
        let (prev, next, s) = {
            let n = &self.nodes[id as usize];
            (n.prev, n.next, n.slot as usize)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.heads[s] = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if self.heads[s] == NIL {
            self.occupied[s / SLOTS] &= !(1 << (s % SLOTS));
        }
    }

    /// Arms a timer for `key` at `at` (clamped to now if in the past).
    pub fn insert(&mut self, key: u32, at: Instant) -> TimerId {
        let deadline = self.ticks_ceil(at).max(self.elapsed);
        let id = self.nodes.insert(Node {
            key,
            deadline,
            prev: NIL,
            next: NIL,
            slot: 0,
        }) as u32;
        self.link(id);
        TimerId(id)
    }

    /// Disarms a timer. A stale id (already fired) is ignored only if the caller cleared it when
    /// it fired; the table layer does.
    pub fn cancel(&mut self, id: TimerId) {
        if self.nodes.contains(id.0 as usize) {
            self.unlink(id.0);
            self.nodes.remove(id.0 as usize);
        }
    }

    /// Moves an armed timer to `at`.
    pub fn reschedule(&mut self, id: TimerId, at: Instant) {
        if !self.nodes.contains(id.0 as usize) {
            return;
        }
        let deadline = self.ticks_ceil(at).max(self.elapsed);
        if self.nodes[id.0 as usize].deadline == deadline {
            return;
        }
        self.unlink(id.0);
        self.nodes[id.0 as usize].deadline = deadline;
        self.link(id.0);
    }

    /// The deadline of an armed timer.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.nodes
            .get(id.0 as usize)
            .map(|n| Instant::from_micros(n.deadline.saturating_mul(self.tick_us)))
    }

    /// The tick of the next slot to process, and its level and slot index.
    fn next_slot(&self) -> Option<(u64, usize, usize)> {
        for level in 0..LEVELS {
            let occ = self.occupied[level];
            if occ == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let range = 1u64 << shift;
            let level_range = range << SLOT_BITS;
            let now_slot = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            // Slots at or after the current position, wrapping within this level's span.
            let rotated = occ.rotate_right(now_slot as u32);
            let zeros = rotated.trailing_zeros() as usize;
            let slot = (now_slot + zeros) & (SLOTS - 1);
            let level_start = self.elapsed & !(level_range.wrapping_sub(1));
            // A slot before the current one is in the level's next turn (only the top level
            // wraps: its entries may lie past the current turn).
            let mut at = level_start.saturating_add((now_slot + zeros) as u64 * range);
            if at < self.elapsed && level > 0 {
                // The slot holding the current tick at this level: its entries are due within it.
                at = self.elapsed;
            } else if at < self.elapsed {
                at = self.elapsed;
            }
            return Some((at, level, slot));
        }
        None
    }

    /// When the earliest entry is due (exact at level 0, a lower bound above). O(1) when nothing
    /// changed since the last call (cached), else O(LEVELS).
    #[inline]
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = match self.next_cache.get() {
            Some(t) => t,
            None => {
                let t = self.next_slot().map(|(t, _, _)| t);
                self.next_cache.set(Some(t));
                t
            }
        };
        t.map(|t| Instant::from_micros(t.saturating_mul(self.tick_us)))
    }

    /// Advances to `now`, appending the keys of due timers to `out` (their ids become invalid).
    pub fn advance(&mut self, now: Instant, out: &mut Vec<u32>) {
        self.next_cache.set(None);
        let now_tick = now.total_micros() / self.tick_us;
        if now_tick.saturating_sub(self.elapsed) >= Self::SPAN {
            // A jump past the whole wheel: every entry is due or re-filed from the new position
            // (walking there turn by turn of the top level could take 2^28 steps).
            self.elapsed = now_tick;
            self.heads.fill(NIL);
            self.occupied = [0; LEVELS];
            let ids: Vec<usize> = self.nodes.iter().map(|(id, _)| id).collect();
            for id in ids {
                if self.nodes[id].deadline <= now_tick {
                    out.push(self.nodes.remove(id).key);
                } else {
                    self.link(id as u32);
                }
            }
            return;
        }
        while let Some((at, level, slot)) = self.next_slot() {
            if at > now_tick {
                break;
            }
            self.elapsed = self.elapsed.max(at);
            let s = level * SLOTS + slot;
            let mut id = core::mem::replace(&mut self.heads[s], NIL);
            self.occupied[level] &= !(1 << slot);
            while id != NIL {
                let next = self.nodes[id as usize].next;
                if self.nodes[id as usize].deadline <= self.elapsed {
                    let n = self.nodes.remove(id as usize);
                    out.push(n.key);
                } else {
                    self.link(id);
                }
                id = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    /// Model test: the wheel fires exactly the timers a sorted list says are due, never early,
    /// and each at the first advance at or after its deadline.
    #[test]
    fn matches_a_sorted_list_model() {
        let mut w = TimerWheel::new(1000);
        let mut model: Vec<(u64, u32, Option<TimerId>)> = Vec::new();
        let mut x = 0x9e37_79b9u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut now = 0u64;
        let mut out = Vec::new();
        for step in 0..20_000u32 {
            match rnd(10) {
                0..=4 => {
                    let span = [10, 100, 5_000, 300_000, 20_000_000][rnd(5) as usize];
                    let at = now + rnd(span);
                    let id = w.insert(step, ms(at));
                    model.push((at, step, Some(id)));
                }
                5 => {
                    if !model.is_empty() {
                        let i = rnd(model.len() as u64) as usize;
                        let (_, _, id) = model.swap_remove(i);
                        w.cancel(id.unwrap());
                    }
                }
                6 => {
                    if !model.is_empty() {
                        let i = rnd(model.len() as u64) as usize;
                        let at = now + rnd(1000);
                        w.reschedule(model[i].2.unwrap(), ms(at));
                        model[i].0 = at;
                    }
                }
                _ => {
                    let next = w.next_deadline().map(|t| t.total_millis());
                    let model_next = model.iter().map(|m| m.0).min();
                    if let (Some(n), Some(m)) = (next, model_next) {
                        assert!(n <= m, "next deadline {n} after the earliest timer {m}");
                    }
                    assert_eq!(next.is_some(), model_next.is_some());
                    now += rnd(3) * rnd(2000) + 1;
                    out.clear();
                    w.advance(ms(now), &mut out);
                    let mut due: Vec<u32> =
                        model.iter().filter(|m| m.0 <= now).map(|m| m.1).collect();
                    model.retain(|m| m.0 > now);
                    due.sort_unstable();
                    out.sort_unstable();
                    assert_eq!(out, due, "at {now}");
                }
            }
        }
        assert_eq!(w.len(), model.len());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance() {
        let mut w = TimerWheel::new(1000);
        let mut out = Vec::new();
        w.advance(ms(500), &mut out);
        w.insert(7, ms(100));
        assert_eq!(w.next_deadline(), Some(ms(500)));
        w.advance(ms(500), &mut out);
        assert_eq!(out, vec![7]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    /// Fuzz finding (docs/FUZZING.md, `timer`): a deadline more than `64^6` ticks ahead aliased
    /// to a top-level slot the wheel reached early, and `advance` re-filed it into that slot for
    /// ever.
    #[test]
    fn deadlines_beyond_the_span_neither_hang_nor_fire_early() {
        let mut w = TimerWheel::new(1000);
        let mut out = Vec::new();
        w.insert(1, Instant::from_micros(u64::MAX));
        w.insert(2, ms((1 << 36) + 5));
        let mut now = 0;
        for _ in 0..200 {
            let t = w.next_deadline().expect("armed");
            assert!(t.total_millis() > now, "progress");
            now = t.total_millis().min((1 << 36) + 5);
            w.advance(ms(now), &mut out);
            if !out.is_empty() {
                break;
            }
        }
        assert_eq!(out, vec![2], "fires at its deadline, not before");
        assert_eq!(now, (1 << 36) + 5);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn deadlines_round_up_to_a_tick() {
        let mut w = TimerWheel::new(1000);
        let mut out = Vec::new();
        w.insert(1, Instant::from_micros(1500));
        w.advance(Instant::from_micros(1999), &mut out);
        assert!(out.is_empty(), "never early");
        w.advance(Instant::from_micros(2000), &mut out);
        assert_eq!(out, vec![1]);
    }
}
