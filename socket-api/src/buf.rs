//! Zero-copy buffers: frames of a queue's pool (the AF_XDP UMEM, or heap memory) lent to
//! application threads.
//!
//! - [`RecvBuf`]: received payload, read in place. Dropping it (on any thread) gives the frame back
//!   to its queue through a lock-free queue; the owner thread frees it into the pool.
//! - [`SendBuf`]: a free frame lent for sending, its data starting after room for every header.
//!   Filled in place and handed to a socket's send call: the stack writes the headers in front of
//!   the data, nothing is copied. Dropped unsent, it goes back like a receive buffer.
//!
//! Why this is sound without locks: a frame lent out is owned by its buffer alone; the owner
//! thread neither reads nor writes it (nor its metadata) until it comes back. The pool's memory
//! outlives every buffer: each holds an `Arc` of its queue, whose graveyard keeps the stack (and
//! so the pool or UMEM) alive after the owner thread ends, until the last buffer is dropped.

use crate::queue::QueueShared;
use cnet_stack::{Frame, Pool};
use smallvec::SmallVec;
use std::net::SocketAddrV4;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// Received payload in a pool frame, read in place.
pub struct RecvBuf {
    q: Arc<QueueShared>,
    idx: u32,
    ptr: *const u8,
    len: usize,
    start: usize,
}

// SAFETY: the frame is owned by this buffer alone (see the module docs); the pointer stays valid
// while `q` (and so the pool memory) is alive.
unsafe impl Send for RecvBuf {}
// SAFETY: shared access only reads the frame.
unsafe impl Sync for RecvBuf {}

impl RecvBuf {
    /// Lends `frame` (a single frame, not a chain) to another thread (owner thread only).
    pub(crate) fn lend(q: &Arc<QueueShared>, pool: &Pool, frame: Frame) -> RecvBuf {
        let data = pool.data(&frame);
        let (ptr, len) = (data.as_ptr(), data.len());
        q.frames_out.fetch_add(1, SeqCst);
        RecvBuf {
            q: q.clone(),
            idx: frame.into_index(),
            ptr,
            len,
            start: 0,
        }
    }

    /// Drops the first `n` bytes (a reader that consumed part of the buffer).
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.len);
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.len - self.start
    }

    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.len == self.start
    }
}

impl core::ops::Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is the frame's data window, owned by this buffer and alive while
        // `q` is (module docs); `start <= len`.
        unsafe { core::slice::from_raw_parts(self.ptr.add(self.start), self.len - self.start) }
    }
}

impl AsRef<[u8]> for RecvBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl core::fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RecvBuf")
            .field("queue", &self.q.index)
            .field("frame", &self.idx)
            .field("len", &self.len())
            .finish()
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        self.q.give_back(self.idx);
    }
}

/// A frame lent for sending: fill it in place, then hand it to a socket's `send_buf` call.
pub struct SendBuf {
    q: Arc<QueueShared>,
    idx: u32,
    len: usize,
    cap: usize,
}

// SAFETY: the frame is owned by this buffer alone (module docs).
unsafe impl Send for SendBuf {}
// SAFETY: `&SendBuf` only reads.
unsafe impl Sync for SendBuf {}

impl SendBuf {
    /// Takes a spare frame of `q` with `cap` bytes of payload room, if one is there.
    pub(crate) fn take(q: &Arc<QueueShared>, cap: usize) -> Option<SendBuf> {
        let idx = q.spare.pop()?;
        q.frames_out.fetch_add(1, SeqCst);
        Some(SendBuf {
            q: q.clone(),
            idx,
            len: 0,
            cap: cap.min(q.frame_size - q.send_off),
        })
    }

    /// The queue whose pool holds the frame.
    pub(crate) fn queue(&self) -> &Arc<QueueShared> {
        &self.q
    }

    /// Gives up the buffer for a send command: (frame index, length). The owner thread takes the
    /// frame over when it handles the command.
    pub(crate) fn into_raw(self) -> (u32, u32) {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped; its Arc is moved out exactly once and released here.
        drop(unsafe { core::ptr::read(&me.q) });
        (me.idx, me.len as u32)
    }

    /// Payload room in bytes.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends as much of `data` as fits; returns how much.
    pub fn put(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        let at = self.len;
        self.len += n;
        self[at..].copy_from_slice(&data[..n]);
        n
    }

    /// The whole payload room, to fill before [`SendBuf::set_len`].
    pub fn room(&mut self) -> &mut [u8] {
        // SAFETY: the payload room of a frame this buffer owns (module docs); pool memory is
        // initialised (zeroed heap or mapped UMEM).
        unsafe { core::slice::from_raw_parts_mut(self.data_ptr(), self.cap) }
    }

    /// Sets the filled length (at most the capacity).
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.cap);
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: `send_off < frame_size`, inside the frame.
        unsafe { self.q.frame_ptr(self.idx).add(self.q.send_off) }
    }
}

impl core::ops::Deref for SendBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as `room`, the first `len` bytes.
        unsafe { core::slice::from_raw_parts(self.data_ptr(), self.len) }
    }
}

impl core::ops::DerefMut for SendBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `room`, the first `len` bytes.
        unsafe { core::slice::from_raw_parts_mut(self.data_ptr(), self.len) }
    }
}

impl core::fmt::Debug for SendBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendBuf")
            .field("queue", &self.q.index)
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Drop for SendBuf {
    fn drop(&mut self) {
        self.q.give_back(self.idx);
    }
}

/// A received datagram: its payload in place, one frame, or several when it was reassembled
/// from fragments.
#[derive(Debug)]
pub struct Datagram {
    /// Sender.
    pub src: SocketAddrV4,
    /// Address it was sent to (ours, or a broadcast address).
    pub dst: SocketAddrV4,
    /// The IPv4 TOS byte it came with (DSCP and ECN; [`Datagram::ecn`]).
    pub tos: u8,
    parts: SmallVec<[RecvBuf; 1]>,
}

impl Datagram {
    /// Lends a (possibly chained) payload frame (owner thread).
    pub(crate) fn lend(
        q: &Arc<QueueShared>,
        pool: &mut Pool,
        frame: Frame,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        tos: u8,
    ) -> Datagram {
        Datagram {
            src,
            dst,
            tos,
            parts: split_chain(q, pool, frame).collect(),
        }
    }

    /// The ECN field of its IPv4 header (RFC 3168): 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
    pub fn ecn(&self) -> u8 {
        self.tos & 3
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    /// True for an empty datagram.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload when it is in one frame (every datagram that was not fragmented).
    pub fn as_slice(&self) -> Option<&[u8]> {
        match self.parts.as_slice() {
            [] => Some(&[]),
            [one] => Some(one),
            _ => None,
        }
    }

    /// The payload's pieces, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.parts.iter().map(|p| &p[..])
    }

    /// Copies the payload into `out`; returns the bytes copied (the rest is cut, as `recv` does).
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut n = 0;
        for c in self.chunks() {
            let k = c.len().min(out.len() - n);
            out[n..n + k].copy_from_slice(&c[..k]);
            n += k;
        }
        n
    }

    /// The payload, copied into one vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.chunks().for_each(|c| v.extend_from_slice(c));
        v
    }
}

/// Splits a chain into its frames, each lent as a [`RecvBuf`] (owner thread).
pub(crate) fn split_chain<'a>(
    q: &'a Arc<QueueShared>,
    pool: &'a mut Pool,
    frame: Frame,
) -> impl Iterator<Item = RecvBuf> + 'a {
    let mut cur = Some(frame);
    core::iter::from_fn(move || {
        let f = cur.take()?;
        cur = pool.chain_split(&f);
        Some(RecvBuf::lend(q, pool, f))
    })
}
