//! The AF_XDP data path over four rings and a [`Pool`], independent of sockets and devices.
//!
//! Frame ownership, for every frame of the port's pool (checked by the tests below):
//!
//! | where | counted by |
//! |---|---|
//! | pool free list | `pool.available()` |
//! | fill ring / kernel, waiting for a packet | `in_fill` |
//! | received, handed to the caller's batch | the caller (stack) |
//! | TX ring / kernel, waiting for its completion | `in_tx` |
//!
//! `frames_held() = in_fill + in_tx`. A frame only leaves `in_tx` when its address comes back on the
//! completion ring: it is never reused before the kernel is done with it.
//!
//! Addresses: pool frame `i` is UMEM frame `first_frame + i`, at UMEM offset
//! `(first_frame + i) * frame_size`. A received descriptor's address is that offset plus where the
//! kernel put the data (XDP headroom + UMEM headroom), which becomes the frame's data window.
//!
//! Cost per burst: one pass over the completion ring, one over the RX descriptors, one batched fill
//! refill; system calls only when the kernel asks (`need_wakeup`), when busy polling, or for copy-mode
//! TX without `need_wakeup` (the kernel transmits copy-mode frames only inside `sendto`).

use super::ring::{Consumer, Producer};
use super::XdpCounters;
use crate::PortError;
use cnet_stack::{Batch, Frame, Pool};
use std::io;

/// An AF_XDP descriptor (`struct xdp_desc`) as it sits in the RX and TX rings.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct XdpDesc {
    /// UMEM offset of the data.
    pub addr: u64,
    /// Data length.
    pub len: u32,
    /// Options (multi-buffer continuation bit); 0 here.
    pub options: u32,
}

/// Most `sendto` kicks per burst while the kernel keeps taking descriptors from the TX ring:
/// a full 2048-entry ring at Linux's 32 frames per copy-mode `sendto` (`TX_BATCH_SIZE`).
pub(crate) const MAX_TX_KICKS: u32 = 64;

/// Fill refills smaller than this wait while the fill ring still holds at least this many frames.
pub(crate) const REFILL_BATCH: u32 = 64;

/// The four rings of one socket, user-space side.
#[derive(Debug)]
pub(crate) struct Rings {
    /// Fill ring: frames lent to the kernel for reception.
    pub fill: Producer<u64>,
    /// Completion ring: transmitted frames the kernel is done with.
    pub comp: Consumer<u64>,
    /// RX ring: received frames.
    pub rx: Consumer<XdpDesc>,
    /// TX ring: frames to transmit.
    pub tx: Producer<XdpDesc>,
}

/// The system calls the data path may need (a socket in real life, a recorder in tests).
pub(crate) trait Kernel {
    /// Lets the kernel process the fill/RX side (`recvfrom(MSG_DONTWAIT)`).
    fn wake_rx(&mut self) -> io::Result<()>;
    /// Lets the kernel process the TX ring (`sendto(MSG_DONTWAIT)`).
    fn kick_tx(&mut self) -> io::Result<()>;
}

/// Ring and accounting state of one queue.
#[derive(Debug)]
pub(crate) struct Datapath {
    rings: Rings,
    frame_size: u64,
    first_frame: u64,
    frames: u64,
    in_fill: u32,
    in_tx: u32,
    need_wakeup: bool,
    busy_poll: bool,
    refilled_once: bool,
    pub(crate) counters: XdpCounters,
}

/// Errors of a wake-up call that only mean "try again later".
fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
    )
}

fn port_error(e: io::Error) -> PortError {
    match e.raw_os_error() {
        Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV) => {
            PortError::Unavailable(format!("AF_XDP socket: {e}"))
        }
        _ => PortError::Io(e),
    }
}

impl Datapath {
    /// A data path for a pool of `frames` frames of `frame_size` bytes that starts at UMEM frame
    /// `first_frame`.
    pub(crate) fn new(
        rings: Rings,
        frame_size: u32,
        first_frame: u64,
        frames: u32,
        need_wakeup: bool,
        busy_poll: bool,
    ) -> Self {
        Datapath {
            rings,
            frame_size: u64::from(frame_size),
            first_frame,
            frames: u64::from(frames),
            in_fill: 0,
            in_tx: 0,
            need_wakeup,
            busy_poll,
            refilled_once: false,
            counters: XdpCounters::default(),
        }
    }

    /// Frames lent to the kernel (fill ring) or waiting for a TX completion.
    pub(crate) fn frames_held(&self) -> usize {
        self.in_fill as usize + self.in_tx as usize
    }

    fn addr_of(&self, index: u32, offset: usize) -> u64 {
        (self.first_frame + u64::from(index)) * self.frame_size + offset as u64
    }

    /// Pool index of the frame holding UMEM offset `addr`, with the offset inside the frame.
    fn index_of(&self, addr: u64) -> Option<(u32, usize)> {
        let umem_frame = addr / self.frame_size;
        let index = umem_frame.checked_sub(self.first_frame)?;
        (index < self.frames).then_some((index as u32, (addr % self.frame_size) as usize))
    }

    /// True while the kernel has not taken every descriptor from the TX ring (a runner should
    /// come back at once rather than sleep: the next receive step kicks the ring again).
    pub(crate) fn tx_backlog(&self) -> bool {
        self.rings.tx.occupied() > 0
    }

    /// Gives every completed TX frame back to the pool.
    pub(crate) fn drain_completions(&mut self, pool: &mut Pool) {
        loop {
            let n = self.rings.comp.peek(self.rings.comp.size());
            if n == 0 {
                return;
            }
            for k in 0..n {
                let addr = self.rings.comp.read(k);
                match self.index_of(addr) {
                    Some((i, _)) => pool.free(Frame::from_index(i)),
                    None => self.counters.bad_descs += 1,
                }
            }
            self.rings.comp.release();
            self.in_tx = self.in_tx.saturating_sub(n);
            self.counters.tx_completed += u64::from(n);
        }
    }

    /// Tops the fill ring up from the pool, in batches.
    ///
    /// The frames lent for reception stay within the fill ring's size, counting those the
    /// kernel already moved to the RX ring that the stack has not taken yet (`in_fill` counts
    /// both). Topping the fill ring up to its size whatever the RX ring holds would lend up to
    /// fill + RX ring frames (4096 by default: the whole default pool) whenever the stack falls
    /// behind, and the stack's share of the pool (`StackConfig::pool_driver_frames` is the fill
    /// ring) would be gone. A backed-up RX ring then means the kernel drops at the fill ring
    /// instead of at the RX ring: the same packets, with the pool kept.
    pub(crate) fn refill(&mut self, pool: &mut Pool) {
        let occupied = self.rings.fill.occupied();
        if occupied == 0 && self.refilled_once {
            // The kernel had nothing to receive into (or was about to): the ring ran dry.
            self.counters.fill_ring_empty += 1;
        }
        let size = self.rings.fill.size();
        let room = self
            .rings
            .fill
            .free(size)
            .min(size.saturating_sub(self.in_fill));
        let want = room.min(u32::try_from(pool.available()).unwrap_or(u32::MAX));
        if want < room && pool.available() == 0 {
            self.counters.fill_pool_empty += 1;
        }
        if want == 0 || (want < REFILL_BATCH && occupied >= REFILL_BATCH) {
            return;
        }
        let n = self.rings.fill.reserve(want);
        let mut written = 0;
        while written < n {
            let Some(f) = pool.alloc() else { break };
            let addr = self.addr_of(f.into_index(), 0);
            self.rings.fill.write(written, addr);
            written += 1;
        }
        self.rings.fill.cancel(n - written);
        self.rings.fill.submit();
        self.in_fill += written;
        self.refilled_once = true;
    }

    /// Completions, then up to `batch.remaining()` received frames, then a fill refill.
    pub(crate) fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        kernel: &mut impl Kernel,
    ) -> Result<usize, PortError> {
        self.drain_completions(pool);
        // Descriptors the kernel has not taken from the TX ring yet (a busy device refused
        // them): kick again here, or those frames stay out of the pool until the next transmit,
        // which may never come.
        if self.rings.tx.occupied() > 0 {
            self.kick_tx(kernel)?;
            self.drain_completions(pool);
        }
        let n = self.rings.rx.peek(batch.remaining() as u32);
        let mut got = 0;
        for k in 0..n {
            let d = self.rings.rx.read(k);
            let Some((index, off)) = self.index_of(d.addr) else {
                // Not one of our frames: nothing to give back; counted (kernel statistics show
                // the kernel's own view in `rx_invalid_descs`).
                self.counters.bad_descs += 1;
                continue;
            };
            let f = Frame::from_index(index);
            if !pool.set_window(&f, off, d.len as usize) {
                self.counters.bad_descs += 1;
                pool.free(f);
                continue;
            }
            if let Err(f) = batch.push(f) {
                // Cannot happen: at most `remaining()` were peeked. Keep the frame accounted.
                pool.free(f);
                continue;
            }
            got += 1;
        }
        self.rings.rx.release();
        self.in_fill = self.in_fill.saturating_sub(n);
        self.counters.rx_frames += got as u64;
        self.refill(pool);
        let kernel_asks = self.need_wakeup && self.rings.fill.needs_wakeup();
        if kernel_asks || (self.busy_poll && n == 0) {
            self.counters.rx_wakeups += 1;
            if let Err(e) = kernel.wake_rx() {
                if !transient(&e) {
                    return Err(port_error(e));
                }
            }
        }
        Ok(got)
    }

    /// Transmits frames from the front of `batch`; returns how many it took.
    pub(crate) fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        kernel: &mut impl Kernel,
    ) -> Result<usize, PortError> {
        self.drain_completions(pool);
        let want = batch.len() as u32;
        let n = self.rings.tx.reserve(want);
        if n < want {
            self.counters.tx_ring_full += 1;
        }
        let mut written = 0;
        for f in batch.drain_front(n as usize) {
            let len = pool.len(&f);
            if len == 0 || pool.chain_count(&f) > 1 {
                // AF_XDP multi-buffer is not enabled: a chained or empty frame cannot be sent.
                self.counters.tx_dropped += 1;
                pool.free(f);
                continue;
            }
            let addr = self.addr_of(f.index(), pool.data_offset(&f));
            let _owned_by_ring = f.into_index();
            self.rings.tx.write(
                written,
                XdpDesc {
                    addr,
                    len: len as u32,
                    options: 0,
                },
            );
            written += 1;
        }
        self.rings.tx.cancel(n - written);
        self.rings.tx.submit();
        self.in_tx += written;
        self.counters.tx_frames += u64::from(written);
        let pending = written > 0 || (n < want && self.rings.tx.occupied() > 0);
        if pending {
            self.kick_tx(kernel)?;
        }
        self.drain_completions(pool);
        Ok(n as usize)
    }

    /// Kicks the kernel while it keeps taking descriptors from the TX ring, until the ring is
    /// empty, at most [`MAX_TX_KICKS`] times. In copy mode one `sendto` sends a bounded batch
    /// (32 frames on Linux) and the rest waits for the next kick: with one kick per burst of up
    /// to 64 frames, a retransmission storm left well over a thousand frames on the TX ring,
    /// neither sent nor free (the pool ran dry, and whatever was queued behind them waited).
    /// A kick that takes nothing (a zero-copy driver sends from its interrupt; a busy device)
    /// ends the loop: the next burst kicks again. With `need_wakeup`, only while the kernel
    /// asks.
    fn kick_tx(&mut self, kernel: &mut impl Kernel) -> Result<(), PortError> {
        for _ in 0..MAX_TX_KICKS {
            let before = self.rings.tx.occupied();
            if before == 0 || (self.need_wakeup && !self.rings.tx.needs_wakeup()) {
                break;
            }
            self.counters.tx_kicks += 1;
            if let Err(e) = kernel.kick_tx() {
                if !transient(&e) {
                    return Err(port_error(e));
                }
            }
            if self.rings.tx.occupied() >= before {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ring::{MemRing, RingPtrs};
    use super::*;
    use cnet_stack::BURST;

    const XDP_HEADROOM: u64 = 256;

    /// The kernel's side of the four rings, over plain memory, plus the memory behind them.
    struct SimKernel {
        _mem: (
            MemRing<u64>,
            MemRing<u64>,
            MemRing<XdpDesc>,
            MemRing<XdpDesc>,
        ),
        fill: Consumer<u64>,
        comp: Producer<u64>,
        rx: Producer<XdpDesc>,
        tx: Consumer<XdpDesc>,
        wakes: u32,
        kicks: u32,
        /// Transmitted frames not yet completed (the "NIC" holds them until `complete`).
        sent: Vec<(u64, Vec<u8>)>,
        /// Copy mode: each kick takes up to this many descriptors and completes them at once
        /// (Linux `xsk_generic_xmit`, 32 per `sendto`). `None`: kicks do nothing.
        copy_batch: Option<u32>,
    }

    impl Kernel for SimKernel {
        fn wake_rx(&mut self) -> io::Result<()> {
            self.wakes += 1;
            Ok(())
        }
        fn kick_tx(&mut self) -> io::Result<()> {
            self.kicks += 1;
            let Some(batch) = self.copy_batch else {
                return Ok(());
            };
            let room = self.comp.reserve(batch);
            let n = self.tx.peek(room);
            for k in 0..n {
                let addr = self.tx.read(k).addr;
                self.comp.write(k, addr & !2047);
            }
            self.tx.release();
            self.comp.cancel(room - n);
            self.comp.submit();
            if n == batch {
                // Linux: the batch is spent, more may wait: "try again".
                return Err(io::Error::from_raw_os_error(libc::EAGAIN));
            }
            Ok(())
        }
    }

    fn setup(
        pool_frames: usize,
        first_frame: u64,
        ring: u32,
        need_wakeup: bool,
    ) -> (Pool, Datapath, SimKernel) {
        let pool = Pool::new(pool_frames, 2048, 192).unwrap();
        let mut f = MemRing::<u64>::new(ring, 0);
        let mut c = MemRing::<u64>::new(ring, 0);
        let mut r = MemRing::<XdpDesc>::new(ring, 0);
        let mut t = MemRing::<XdpDesc>::new(ring, 0);
        let (fp, cp, rp, tp): (
            RingPtrs<u64>,
            RingPtrs<u64>,
            RingPtrs<XdpDesc>,
            RingPtrs<XdpDesc>,
        ) = (f.ptrs(), c.ptrs(), r.ptrs(), t.ptrs());
        // SAFETY: the MemRings are boxed memory kept alive in `SimKernel::_mem`, which outlives
        // both sides in every test (the test owns both and drops them together).
        let (rings, k) = unsafe {
            (
                Rings {
                    fill: Producer::new(fp),
                    comp: Consumer::new(cp),
                    rx: Consumer::new(rp),
                    tx: Producer::new(tp),
                },
                SimKernel {
                    fill: Consumer::new(fp),
                    comp: Producer::new(cp),
                    rx: Producer::new(rp),
                    tx: Consumer::new(tp),
                    _mem: (f, c, r, t),
                    wakes: 0,
                    kicks: 0,
                    sent: Vec::new(),
                    copy_batch: None,
                },
            )
        };
        let dp = Datapath::new(
            rings,
            2048,
            first_frame,
            pool_frames as u32,
            need_wakeup,
            false,
        );
        (pool, dp, k)
    }

    impl SimKernel {
        /// Receives up to `n` packets into frames from the fill ring; returns how many.
        fn receive(&mut self, pool: &mut Pool, first_frame: u64, n: u32, payload: &[u8]) -> u32 {
            // Like the kernel: a packet needs both a fill entry and RX ring room (else it is dropped
            // before taking a frame).
            let room = self.rx.reserve(n);
            let got = self.fill.peek(room);
            self.rx.cancel(room - got);
            for k in 0..got {
                let base = self.fill.read(k);
                let addr = base + XDP_HEADROOM;
                // Write the packet where the kernel would: frame memory of the pool.
                let index = (base / 2048 - first_frame) as usize;
                let start = index * 2048 + XDP_HEADROOM as usize;
                let ptr = pool.region_ptr();
                // SAFETY: the frame is lent to the "kernel" (it came from the fill ring), the
                // write stays inside the pool's region (frame `index` < capacity, 256 + len < 2048).
                unsafe {
                    core::ptr::copy_nonoverlapping(payload.as_ptr(), ptr.add(start), payload.len())
                };
                self.rx.write(
                    k,
                    XdpDesc {
                        addr,
                        len: payload.len() as u32,
                        options: 0,
                    },
                );
            }
            self.fill.release();
            self.rx.submit();
            got
        }

        /// Takes every TX descriptor, copying the frame's bytes out.
        fn transmit(&mut self, pool: &mut Pool, first_frame: u64) {
            let n = self.tx.peek(u32::MAX);
            let base = pool.region_ptr();
            let region = pool.capacity() * 2048;
            for k in 0..n {
                let d = self.tx.read(k);
                let off = (d.addr - first_frame * 2048) as usize;
                assert!(off + d.len as usize <= region, "descriptor inside the pool");
                // SAFETY: the descriptor lies inside the pool's region (asserted above); the frame
                // is owned by the "kernel" until completed.
                let bytes =
                    unsafe { core::slice::from_raw_parts(base.add(off), d.len as usize) }.to_vec();
                self.sent.push((d.addr, bytes));
            }
            self.tx.release();
        }

        /// Completes up to `n` transmitted frames.
        fn complete(&mut self, n: usize) {
            let n = n.min(self.sent.len());
            let room = self.comp.reserve(n as u32) as usize;
            for (k, (addr, _)) in self.sent.drain(..room).enumerate() {
                self.comp.write(k as u32, addr & !2047);
            }
            self.comp.submit();
        }
    }

    fn check_accounting(pool: &Pool, dp: &Datapath, in_stack: usize) {
        assert_eq!(
            pool.available() + dp.frames_held() + in_stack,
            pool.capacity(),
            "every frame is in exactly one place"
        );
        assert_eq!(pool.stats().double_frees, 0);
    }

    #[test]
    fn receive_sets_window_and_refills_in_batches() {
        let (mut pool, mut dp, mut k) = setup(512, 0, 256, true);
        let mut b = Batch::new();
        // First call: nothing received, fill ring filled from the pool.
        assert_eq!(dp.rx_burst(&mut pool, &mut b, &mut k).unwrap(), 0);
        assert_eq!(dp.frames_held(), 256);
        assert_eq!(pool.available(), 256);
        check_accounting(&pool, &dp, 0);

        assert_eq!(k.receive(&mut pool, 0, 10, b"hello"), 10);
        assert_eq!(dp.rx_burst(&mut pool, &mut b, &mut k).unwrap(), 10);
        for f in b.iter() {
            assert_eq!(pool.data(f), b"hello");
            assert_eq!(pool.data_offset(f), XDP_HEADROOM as usize);
        }
        // Ten slots free but fewer than a refill batch and the ring is far from empty: no refill.
        assert_eq!(dp.frames_held(), 246);
        check_accounting(&pool, &dp, 10);
        b.free_all(&mut pool);
        check_accounting(&pool, &dp, 0);
        assert_eq!(k.wakes, 0, "need_wakeup flag clear: no system call");
        assert_eq!(dp.counters.rx_frames, 10);
    }

    #[test]
    fn need_wakeup_flag_triggers_exactly_the_asked_syscalls() {
        let (mut pool, mut dp, mut k) = setup(64, 0, 32, true);
        let mut b = Batch::new();
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.wakes, 0);
        k._mem.0.set_need_wakeup(true);
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.wakes, 1);

        // TX: with need_wakeup on, kick only when the TX ring's flag asks.
        let f = pool.alloc_from(b"x").unwrap();
        b.push(f).unwrap();
        dp.tx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.kicks, 0);
        k._mem.3.set_need_wakeup(true);
        b.push(pool.alloc_from(b"y").unwrap()).unwrap();
        dp.tx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.kicks, 1);
    }

    #[test]
    fn without_need_wakeup_every_tx_burst_kicks() {
        let (mut pool, mut dp, mut k) = setup(64, 0, 32, false);
        let mut b = Batch::new();
        for _ in 0..3 {
            b.push(pool.alloc_from(b"abc").unwrap()).unwrap();
            dp.tx_burst(&mut pool, &mut b, &mut k).unwrap();
        }
        assert_eq!(k.kicks, 3);
        // The RX side never needs a syscall in that mode (no busy poll).
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.wakes, 0);
    }

    #[test]
    fn tx_frames_return_only_on_completion() {
        let (mut pool, mut dp, mut k) = setup(128, 7, 16, false);
        let mut b = Batch::new();
        for i in 0..20u8 {
            b.push(pool.alloc_from(&[i; 60]).unwrap()).unwrap();
        }
        // Ring of 16: 16 taken, 4 stay in the batch in order; ring-full counted.
        assert_eq!(dp.tx_burst(&mut pool, &mut b, &mut k).unwrap(), 16);
        assert_eq!(b.len(), 4);
        assert_eq!(pool.data(b.iter().next().unwrap()), &[16u8; 60]);
        assert_eq!(dp.counters.tx_ring_full, 1);
        check_accounting(&pool, &dp, 4);
        k.transmit(&mut pool, 7);
        assert_eq!(k.sent.len(), 16);
        // Frames sit in the kernel's hands until completion: still held by the port.
        assert_eq!(dp.frames_held(), 16);
        for (i, (addr, bytes)) in k.sent.iter().enumerate() {
            assert_eq!(bytes, &vec![i as u8; 60]);
            // first_frame = 7: addresses are shifted by 7 frames, data after the headroom.
            assert!(*addr >= 7 * 2048 && addr % 2048 == 192);
        }
        k.complete(10);
        dp.drain_completions(&mut pool);
        assert_eq!(dp.frames_held(), 6);
        check_accounting(&pool, &dp, 4);
        k.complete(6);
        assert_eq!(dp.tx_burst(&mut pool, &mut b, &mut k).unwrap(), 4);
        k.transmit(&mut pool, 7);
        k.complete(4);
        dp.drain_completions(&mut pool);
        check_accounting(&pool, &dp, 0);
        assert_eq!(pool.available(), 128);
    }

    #[test]
    fn empty_or_chained_frames_are_dropped_and_counted() {
        let (mut pool, mut dp, mut k) = setup(16, 0, 8, false);
        let mut b = Batch::new();
        let empty = pool.alloc().unwrap();
        let head = pool.alloc_from(b"a").unwrap();
        let tail = pool.alloc_from(b"b").unwrap();
        pool.chain_append(&head, tail);
        let good = pool.alloc_from(b"c").unwrap();
        b.push(empty).unwrap();
        b.push(head).unwrap();
        b.push(good).unwrap();
        assert_eq!(dp.tx_burst(&mut pool, &mut b, &mut k).unwrap(), 3);
        assert_eq!(dp.counters.tx_dropped, 2);
        k.transmit(&mut pool, 0);
        assert_eq!(k.sent.len(), 1);
        assert_eq!(k.sent[0].1, b"c");
        k.complete(1);
        dp.drain_completions(&mut pool);
        check_accounting(&pool, &dp, 0);
    }

    #[test]
    fn foreign_addresses_are_counted_not_trusted() {
        let (mut pool, mut dp, mut k) = setup(16, 4, 8, false);
        let mut b = Batch::new();
        // An RX descriptor for UMEM frame 0, which belongs to another queue's range.
        assert_eq!(k.rx.reserve(1), 1);
        k.rx.write(
            0,
            XdpDesc {
                addr: 256,
                len: 60,
                options: 0,
            },
        );
        k.rx.submit();
        assert_eq!(dp.rx_burst(&mut pool, &mut b, &mut k).unwrap(), 0);
        assert_eq!(dp.counters.bad_descs, 1);
        assert!(b.is_empty());
        assert_eq!(pool.stats().double_frees, 0);
    }

    #[test]
    fn fill_ring_running_dry_is_counted_and_pool_exhaustion_too() {
        // 16 frames, fill ring of 16: the kernel receives everything, the stack keeps the frames.
        let (mut pool, mut dp, mut k) = setup(16, 0, 16, false);
        let mut held = Vec::new();
        let mut b = Batch::new();
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.receive(&mut pool, 0, 16, b"p"), 16);
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        held.extend(b.drain());
        assert_eq!(dp.counters.fill_ring_empty, 1);
        assert!(dp.counters.fill_pool_empty >= 1);
        check_accounting(&pool, &dp, held.len());
        for f in held {
            pool.free(f);
        }
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(dp.frames_held(), 16, "refilled once frames are back");
    }

    /// Copy mode sends 32 frames per kick: a burst is kicked until the TX ring is empty, so
    /// its frames come back at once instead of waiting on the ring for later bursts' kicks.
    #[test]
    fn copy_mode_kicks_until_the_tx_ring_is_empty() {
        let (mut pool, mut dp, mut k) = setup(512, 0, 256, false);
        k.copy_batch = Some(32);
        let mut b = Batch::new();
        for round in 0..4 {
            for i in 0..64u8 {
                b.push(pool.alloc_from(&[i; 60]).unwrap()).unwrap();
            }
            assert_eq!(dp.tx_burst(&mut pool, &mut b, &mut k).unwrap(), 64);
            assert_eq!(
                dp.frames_held(),
                0,
                "round {round}: every frame sent and completed"
            );
            check_accounting(&pool, &dp, 0);
        }
        assert_eq!(k.kicks, 4 * 2, "two kicks of 32 per burst of 64");
        assert_eq!(dp.counters.tx_completed, 256);
        // A kick that takes nothing ends the loop (bounded): one kick per burst.
        k.copy_batch = Some(0);
        b.push(pool.alloc_from(b"x").unwrap()).unwrap();
        dp.tx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(k.kicks, 9);
        assert_eq!(dp.in_tx, 1);
        k.copy_batch = Some(32);
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(dp.in_tx, 0, "the receive step kicked the leftover out");
        check_accounting(&pool, &dp, 0);
    }

    /// A stack that falls behind leaves received frames on the RX ring: they count against the
    /// fill ring's budget, so the frames lent for reception never exceed the fill ring's size
    /// (before, the fill ring was topped up to its size whatever the RX ring held).
    #[test]
    fn frames_waiting_on_the_rx_ring_count_against_the_fill_budget() {
        let (mut pool, mut dp, mut k) = setup(1024, 0, 256, false);
        let mut b = Batch::new();
        dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
        assert_eq!(dp.frames_held(), 256);
        // The kernel fills the RX ring; the stack takes one burst at a time.
        assert_eq!(k.receive(&mut pool, 0, 256, b"p"), 256);
        for _ in 0..3 {
            dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
            b.free_all(&mut pool);
            assert!(dp.frames_held() <= 256, "lent {}", dp.frames_held());
            check_accounting(&pool, &dp, 0);
        }
        // What the stack took was lent again (in refill batches), no more.
        assert_eq!(dp.frames_held(), 256);
        assert_eq!(pool.available(), 1024 - 256);
        while dp.rx_burst(&mut pool, &mut b, &mut k).unwrap() > 0 {
            b.free_all(&mut pool);
        }
        assert_eq!(dp.frames_held(), 256);
        check_accounting(&pool, &dp, 0);
    }

    /// A long random run: traffic both ways, partial completions, the stack holding frames for a
    /// while. Accounting must hold after every step and the fill ring must not run dry while the
    /// pool has frames to give.
    #[test]
    fn accounting_holds_under_random_traffic() {
        let first = 3;
        let (mut pool, mut dp, mut k) = setup(1024, first, 256, true);
        let mut stack: Vec<Frame> = Vec::new();
        let mut seed = 0x1234_5678_9abc_def0u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut b = Batch::new();
        let mut received = 0u64;
        for _ in 0..5000 {
            match rnd(4) {
                0 => {
                    received += u64::from(k.receive(&mut pool, first, rnd(80) as u32, b"data"));
                }
                1 => {
                    dp.rx_burst(&mut pool, &mut b, &mut k).unwrap();
                    stack.extend(b.drain());
                }
                2 => {
                    // The stack transmits some of what it holds (in place) and frees some.
                    let n = rnd(BURST as u64) as usize;
                    for _ in 0..n.min(stack.len()) {
                        let f = stack.pop().unwrap();
                        if rnd(2) == 0 {
                            b.push(f).unwrap();
                        } else {
                            pool.free(f);
                        }
                    }
                    dp.tx_burst(&mut pool, &mut b, &mut k).unwrap();
                    stack.extend(b.drain());
                }
                _ => {
                    k.transmit(&mut pool, first);
                    k.complete(rnd(100) as usize);
                }
            }
            check_accounting(&pool, &dp, stack.len());
        }
        assert!(received > 0 && dp.counters.tx_frames > 0);
        for f in stack.drain(..) {
            pool.free(f);
        }
        while dp.rx_burst(&mut pool, &mut b, &mut k).unwrap() > 0 {
            b.free_all(&mut pool);
        }
        k.transmit(&mut pool, first);
        k.complete(usize::MAX);
        dp.drain_completions(&mut pool);
        check_accounting(&pool, &dp, 0);
        assert_eq!(
            dp.counters.rx_frames, received,
            "every received frame delivered once"
        );
    }
}
