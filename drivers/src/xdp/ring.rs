//! Single-producer / single-consumer descriptor rings with the AF_XDP memory layout.
//!
//! The kernel maps four rings per socket (fill, completion, RX, TX). Each is a power-of-two array of
//! descriptors plus a shared `producer` index, a shared `consumer` index and a `flags` word (bit 0 =
//! `XDP_RING_NEED_WAKEUP`). Indices are free-running `u32`s; a slot is `index & mask`.
//!
//! These types re-implement libxdp's inline helpers (`xsk_ring_prod__reserve`/`submit`,
//! `xsk_ring_cons__peek`/`release`, `xsk_prod_nb_free`, `xsk_cons_nb_avail`) in Rust, with the same
//! acquire/release ordering, so that:
//! - the data path does not make an FFI call per ring operation;
//! - the same code runs over plain memory in unit tests, where a test plays the kernel's side
//!   (see `datapath` tests) — no root, no device.
//!
//! Invariants (as in libxdp): for a producer, `cached_cons` is the last seen consumer index **plus the
//! ring size**, so `cached_cons - cached_prod` is the free room; for a consumer, `cached_prod -
//! cached_cons` is what can be read without touching shared memory. Reserved-but-unsubmitted slots and
//! peeked-but-unreleased slots are tracked so `submit`/`release` publish exactly those.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, Ordering};

/// `XDP_RING_NEED_WAKEUP` in a ring's flags word.
pub(crate) const NEED_WAKEUP: u32 = 1;

/// Raw pointers to one ring's shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingPtrs<T> {
    /// Shared producer index.
    pub producer: *mut u32,
    /// Shared consumer index.
    pub consumer: *mut u32,
    /// Shared flags word.
    pub flags: *mut u32,
    /// First descriptor.
    pub ring: *mut T,
    /// Number of descriptors (a power of two).
    pub size: u32,
}

/// The side that writes descriptors (user space: fill and TX rings).
#[derive(Debug)]
pub(crate) struct Producer<T: Copy> {
    p: RingPtrs<T>,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
    /// Index of the first reserved, not yet submitted slot.
    submitted: u32,
    _t: PhantomData<T>,
}

/// The side that reads descriptors (user space: completion and RX rings).
#[derive(Debug)]
pub(crate) struct Consumer<T: Copy> {
    p: RingPtrs<T>,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
    /// Index of the first peeked, not yet released slot.
    released: u32,
    _t: PhantomData<T>,
}

// SAFETY: a ring side is a single-producer or single-consumer handle over shared memory that stays
// mapped as long as its owner (the constructors' contract); nothing in it is tied to a thread, and
// moving it moves the only user-space handle for that side, so there is never a second one.
unsafe impl<T: Copy + Send> Send for Producer<T> {}
// SAFETY: as for `Producer`.
unsafe impl<T: Copy + Send> Send for Consumer<T> {}

/// # Safety (shared by both constructors)
/// Accesses go through `AtomicU32::from_ptr`, which needs the index words to be valid, 4-aligned
/// and only accessed atomically by anyone else (the kernel uses `smp_load_acquire` /
/// `smp_store_release` on them).
unsafe fn atomic<'a>(p: *mut u32) -> &'a AtomicU32 {
    // SAFETY: the caller's contract (see the constructors): `p` is valid, aligned, lives as long as
    // the ring and is only accessed atomically.
    unsafe { AtomicU32::from_ptr(p) }
}

impl<T: Copy> Producer<T> {
    /// A producer over `p`, starting from the current shared indices.
    ///
    /// # Safety
    /// Every pointer in `p` must stay valid for reads and writes for the life of the returned value,
    /// `ring` must point to `size` descriptors, `size` must be a power of two, the index words must
    /// be 4-aligned and accessed atomically by the other side, and there must be no other producer.
    pub(crate) unsafe fn new(p: RingPtrs<T>) -> Self {
        // SAFETY: the caller's contract.
        let (prod, cons) = unsafe {
            (
                atomic(p.producer).load(Ordering::Relaxed),
                atomic(p.consumer).load(Ordering::Acquire),
            )
        };
        Producer {
            p,
            mask: p.size - 1,
            cached_prod: prod,
            cached_cons: cons.wrapping_add(p.size),
            submitted: prod,
            _t: PhantomData,
        }
    }

    /// Number of descriptors in the ring.
    pub(crate) fn size(&self) -> u32 {
        self.p.size
    }

    /// Free slots, re-reading the consumer index only when fewer than `want` are known free.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        // SAFETY: constructor contract.
        let cons = unsafe { atomic(self.p.consumer) }.load(Ordering::Acquire);
        self.cached_cons = cons.wrapping_add(self.p.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Slots the other side has not consumed yet (submitted and not consumed), from shared memory.
    pub(crate) fn occupied(&self) -> u32 {
        // SAFETY: constructor contract.
        let cons = unsafe { atomic(self.p.consumer) }.load(Ordering::Acquire);
        self.submitted.wrapping_sub(cons)
    }

    /// Reserves up to `n` slots; returns how many were reserved (fill them with [`Self::write`]).
    pub(crate) fn reserve(&mut self, n: u32) -> u32 {
        let n = n.min(self.free(n));
        self.cached_prod = self.cached_prod.wrapping_add(n);
        n
    }

    /// Writes the `k`-th reserved slot (0-based among those not yet submitted).
    pub(crate) fn write(&mut self, k: u32, value: T) {
        debug_assert!(k < self.cached_prod.wrapping_sub(self.submitted));
        let slot = (self.submitted.wrapping_add(k) & self.mask) as usize;
        // SAFETY: `slot < size` (masked) and `ring` points to `size` descriptors (constructor
        // contract); the slot is reserved, so the other side does not read it until `submit`.
        unsafe { self.p.ring.add(slot).write(value) };
    }

    /// Gives back the last `n` reserved, unwritten slots (at most those not yet submitted).
    pub(crate) fn cancel(&mut self, n: u32) {
        let n = n.min(self.cached_prod.wrapping_sub(self.submitted));
        self.cached_prod = self.cached_prod.wrapping_sub(n);
    }

    /// Publishes every reserved slot to the other side.
    pub(crate) fn submit(&mut self) {
        if self.submitted == self.cached_prod {
            return;
        }
        self.submitted = self.cached_prod;
        // SAFETY: constructor contract. Release orders the descriptor writes before the index.
        unsafe { atomic(self.p.producer) }.store(self.cached_prod, Ordering::Release);
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: constructor contract.
        unsafe { atomic(self.p.flags) }.load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

impl<T: Copy> Consumer<T> {
    /// A consumer over `p`, starting from the current shared indices.
    ///
    /// # Safety
    /// As for [`Producer::new`], with "no other consumer".
    pub(crate) unsafe fn new(p: RingPtrs<T>) -> Self {
        // SAFETY: the caller's contract.
        let (prod, cons) = unsafe {
            (
                atomic(p.producer).load(Ordering::Acquire),
                atomic(p.consumer).load(Ordering::Relaxed),
            )
        };
        Consumer {
            p,
            mask: p.size - 1,
            cached_prod: prod,
            cached_cons: cons,
            released: cons,
            _t: PhantomData,
        }
    }

    /// Number of descriptors in the ring.
    pub(crate) fn size(&self) -> u32 {
        self.p.size
    }

    /// Takes up to `n` readable slots; returns how many (read them with [`Self::read`]).
    pub(crate) fn peek(&mut self, n: u32) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail == 0 {
            // SAFETY: constructor contract. Acquire orders the descriptor reads after the index.
            self.cached_prod = unsafe { atomic(self.p.producer) }.load(Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        let n = n.min(avail);
        self.cached_cons = self.cached_cons.wrapping_add(n);
        n
    }

    /// Reads the `k`-th peeked slot (0-based among those not yet released).
    pub(crate) fn read(&self, k: u32) -> T {
        debug_assert!(k < self.cached_cons.wrapping_sub(self.released));
        let slot = (self.released.wrapping_add(k) & self.mask) as usize;
        // SAFETY: `slot < size` (masked) and `ring` points to `size` descriptors; the slot was
        // published by the producer (acquire in `peek`) and is not rewritten before `release`.
        unsafe { self.p.ring.add(slot).read() }
    }

    /// Gives every peeked slot back to the producer.
    pub(crate) fn release(&mut self) {
        if self.released == self.cached_cons {
            return;
        }
        self.released = self.cached_cons;
        // SAFETY: constructor contract. Release orders our descriptor reads before the index.
        unsafe { atomic(self.p.consumer) }.store(self.cached_cons, Ordering::Release);
    }

    /// Whether the kernel asked to be woken up (`XDP_RING_NEED_WAKEUP`).
    #[allow(dead_code)] // RX wake-ups are driven by the fill ring's flag; kept for symmetry.
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: constructor contract.
        unsafe { atomic(self.p.flags) }.load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }
}

/// A ring in ordinary heap memory, for tests: both sides can be built over it.
#[cfg(test)]
pub(crate) struct MemRing<T> {
    idx: Box<[u32; 3]>,
    ring: Box<[T]>,
}

#[cfg(test)]
impl<T: Copy + Default> MemRing<T> {
    /// A ring of `size` descriptors (a power of two), indices starting at `start`.
    pub(crate) fn new(size: u32, start: u32) -> Self {
        assert!(size.is_power_of_two());
        MemRing {
            idx: Box::new([start, start, 0]),
            ring: vec![T::default(); size as usize].into_boxed_slice(),
        }
    }

    /// Pointers for [`Producer::new`] / [`Consumer::new`]. The ring must outlive both sides.
    pub(crate) fn ptrs(&mut self) -> RingPtrs<T> {
        let base = self.idx.as_mut_ptr();
        RingPtrs {
            producer: base,
            // SAFETY: `idx` has three elements.
            consumer: unsafe { base.add(1) },
            // SAFETY: as above.
            flags: unsafe { base.add(2) },
            ring: self.ring.as_mut_ptr(),
            size: self.ring.len() as u32,
        }
    }

    /// Sets or clears `XDP_RING_NEED_WAKEUP`.
    pub(crate) fn set_need_wakeup(&mut self, on: bool) {
        // SAFETY: the flags word is a valid, aligned u32 owned by this ring.
        unsafe { atomic(&mut self.idx[2]) }
            .store(if on { NEED_WAKEUP } else { 0 }, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(size: u32, start: u32) -> (MemRing<u64>, Producer<u64>, Consumer<u64>) {
        let mut m = MemRing::new(size, start);
        let p = m.ptrs();
        // SAFETY: `m` outlives both sides within each test (returned together, dropped last).
        let (prod, cons) = unsafe { (Producer::new(p), Consumer::new(p)) };
        (m, prod, cons)
    }

    #[test]
    fn fills_to_capacity_then_refuses() {
        let (_m, mut p, mut c) = pair(4, 0);
        assert_eq!(p.reserve(10), 4);
        for k in 0..4 {
            p.write(k, u64::from(k) + 100);
        }
        assert_eq!(p.reserve(1), 0, "ring full");
        assert_eq!(c.peek(8), 0, "nothing visible before submit");
        p.submit();
        assert_eq!(p.occupied(), 4);
        assert_eq!(c.peek(3), 3);
        assert_eq!((c.read(0), c.read(2)), (100, 102));
        c.release();
        assert_eq!(p.occupied(), 1);
        assert_eq!(p.reserve(4), 3, "room after release");
    }

    #[test]
    fn indices_wrap_around_u32() {
        // Start near u32::MAX so every index crosses the wrap.
        let (_m, mut p, mut c) = pair(8, u32::MAX - 5);
        let mut next = 0u64;
        let mut expect = 0u64;
        for round in 0..50u32 {
            let n = p.reserve(round % 7 + 1);
            for k in 0..n {
                p.write(k, next);
                next += 1;
            }
            p.submit();
            let got = c.peek(round % 5 + 1);
            for k in 0..got {
                assert_eq!(c.read(k), expect);
                expect += 1;
            }
            c.release();
        }
        let rest = c.peek(u32::MAX);
        for k in 0..rest {
            assert_eq!(c.read(k), expect);
            expect += 1;
        }
        c.release();
        assert_eq!(expect, next, "every descriptor read once, in order");
        assert_eq!(p.occupied(), 0);
    }

    #[test]
    fn need_wakeup_flag_is_read_from_shared_memory() {
        let (mut m, p, c) = pair(2, 0);
        assert!(!p.needs_wakeup() && !c.needs_wakeup());
        m.set_need_wakeup(true);
        assert!(p.needs_wakeup() && c.needs_wakeup());
    }
}
