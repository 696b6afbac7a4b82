//! `PipePort`: an in-memory link between two ports that live on two threads.
//!
//! [`crate::mem::MemLink`] is single-threaded by design (a simulation in virtual time). A runtime
//! that runs each stack on its own thread, in real time, needs a link whose ends are `Send`: this
//! one. Each direction is a bounded lock-free queue of wire buffers; a receive copies a buffer
//! into a frame of the receiving pool after its headroom (as a NIC would DMA it), a transmit
//! copies the frame out and frees it. Wire buffers are recycled through a second queue, so there
//! is no heap allocation per frame in steady state. Each direction has an eventfd that the
//! receiving side can sleep on ([`Port::wait_fd`]), so an idle runtime costs nothing and wakes at
//! once. Impairments: wrap a port in [`crate::impair::ImpairPort`].
//!
//! A full queue drops the frame and counts it (`tx_dropped`), as a link with a bounded buffer.

use crate::port::{Port, PortError, PortInfo};
use cnet_stack::{Batch, Instant, MacAddr, Pool};
use crossbeam_queue::ArrayQueue;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// One direction of the link.
struct Dir {
    wire: ArrayQueue<Vec<u8>>,
    free: ArrayQueue<Vec<u8>>,
    /// Readable while frames wait (the receiver's `wait_fd`).
    ready: OwnedFd,
    delivered: AtomicU64,
    dropped: AtomicU64,
    rx_no_room: AtomicU64,
}

impl Dir {
    fn new(depth: usize) -> std::io::Result<Dir> {
        // SAFETY: eventfd(2) with valid flags; checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Dir {
            wire: ArrayQueue::new(depth),
            free: ArrayQueue::new(depth),
            // SAFETY: `fd` was just created and is owned by nothing else.
            ready: unsafe { OwnedFd::from_raw_fd(fd) },
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rx_no_room: AtomicU64::new(0),
        })
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: 8 bytes from a valid u64 to our own eventfd.
        unsafe { libc::write(self.ready.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn clear_signal(&self) {
        let mut v: u64 = 0;
        // SAFETY: 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.ready.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Counters of one port's directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Frames this port sent that reached the peer's queue.
    pub tx_delivered: u64,
    /// Frames this port sent that found the peer's queue full.
    pub tx_dropped: u64,
    /// Frames received that did not fit a frame of this port's pool (or found it empty).
    pub rx_no_room: u64,
}

/// One end of a [`pipe`].
pub struct PipePort {
    tx: Arc<Dir>,
    rx: Arc<Dir>,
    info: PortInfo,
}

impl core::fmt::Debug for PipePort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PipePort")
            .field("info", &self.info)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Two ports joined by a link of `depth` frames each way, MTU `mtu`.
pub fn pipe(
    mac_a: MacAddr,
    mac_b: MacAddr,
    mtu: usize,
    depth: usize,
) -> std::io::Result<(PipePort, PipePort)> {
    let ab = Arc::new(Dir::new(depth.max(1))?);
    let ba = Arc::new(Dir::new(depth.max(1))?);
    let info = |name: &str, mac| PortInfo {
        name: name.into(),
        mac,
        mtu,
    };
    Ok((
        PipePort {
            tx: ab.clone(),
            rx: ba.clone(),
            info: info("pipe-a", mac_a),
        },
        PipePort {
            tx: ba,
            rx: ab,
            info: info("pipe-b", mac_b),
        },
    ))
}

impl PipePort {
    /// This port's counters.
    pub fn stats(&self) -> PipeStats {
        PipeStats {
            tx_delivered: self.tx.delivered.load(Relaxed),
            tx_dropped: self.tx.dropped.load(Relaxed),
            rx_no_room: self.rx.rx_no_room.load(Relaxed),
        }
    }
}

impl Port for PipePort {
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        self.rx.clear_signal();
        let mut n = 0;
        while !batch.is_full() {
            let Some(bytes) = self.rx.wire.pop() else {
                break;
            };
            let frame = pool.alloc();
            match frame {
                Some(f) => match pool.push_back(&f, bytes.len()) {
                    Some(dst) => {
                        dst.copy_from_slice(&bytes);
                        batch.push(f).expect("batch checked not full");
                        n += 1;
                    }
                    None => {
                        pool.free(f);
                        self.rx.rx_no_room.fetch_add(1, Relaxed);
                    }
                },
                None => {
                    self.rx.rx_no_room.fetch_add(1, Relaxed);
                }
            }
            let _ = self.rx.free.push(bytes);
        }
        if !self.rx.wire.is_empty() {
            // More than a burst waits: stay readable.
            self.rx.signal();
        }
        Ok(n)
    }

    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        let n = batch.len();
        for f in batch.drain() {
            let mut buf = self.tx.free.pop().unwrap_or_default();
            buf.clear();
            buf.resize(pool.chain_len(&f), 0);
            pool.chain_copy_to(&f, &mut buf);
            pool.free(f);
            match self.tx.wire.push(buf) {
                Ok(()) => {
                    self.tx.delivered.fetch_add(1, Relaxed);
                }
                Err(buf) => {
                    self.tx.dropped.fetch_add(1, Relaxed);
                    let _ = self.tx.free.push(buf);
                }
            }
        }
        if n > 0 {
            self.tx.signal();
        }
        Ok(n)
    }

    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn wait_fd(&self) -> Option<RawFd> {
        Some(self.rx.ready.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_threads_and_full_queues_drop_and_count() {
        let (mut a, mut b) = pipe(
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            1500,
            4,
        )
        .expect("eventfd");
        let t = std::thread::spawn(move || {
            let mut pool = Pool::new(16, 2048, 256).unwrap();
            let mut batch = Batch::new();
            for i in 0..6u8 {
                batch.push(pool.alloc_from(&[i; 60]).unwrap()).unwrap();
            }
            a.tx_burst(&mut pool, &mut batch, Instant::ZERO).unwrap();
            assert_eq!(pool.available(), 16, "sent frames are freed");
            a.stats()
        });
        let st = t.join().unwrap();
        assert_eq!(st.tx_delivered, 4);
        assert_eq!(st.tx_dropped, 2);
        let mut pool = Pool::new(16, 2048, 256).unwrap();
        let mut batch = Batch::new();
        assert_eq!(b.rx_burst(&mut pool, &mut batch, Instant::ZERO).unwrap(), 4);
        let f = batch.pop().unwrap();
        assert_eq!(pool.data(&f), &[3u8; 60][..]);
        assert!(pool.headroom_of(&f) >= 256);
        pool.free(f);
        batch.free_all(&mut pool);
        assert_eq!(pool.available(), 16);
    }
}
