//! The frame pool: fixed-size frames in one contiguous region, with per-frame metadata.
//!
//! The region is either owned heap memory (tests, the in-memory driver, TAP) or memory that someone
//! else mapped (the AF_XDP UMEM), so that a frame index is also a UMEM offset: `index * frame_size`.
//! A received frame is processed in place and a reply or forward can leave from the same frame.
//!
//! Invariants:
//! - a [`Frame`] handle is owned by exactly one place (it is neither `Clone` nor `Copy`); an extra
//!   owner is made explicitly with [`Pool::share`], which bumps the reference count;
//! - `off + len <= frame_size` for every frame's data window, so accessors never panic;
//! - the free list never holds more than `frames` entries and is allocated once: alloc and free are
//!   O(1) and never touch the heap.

use core::any::Any;
use core::fmt;

/// Sentinel for "no next frame" in a chain.
const NONE: u32 = u32::MAX;

/// An owned handle to one frame of a [`Pool`].
///
/// Dropping a handle without giving it back to the pool leaks the frame (the pool's accounting shows
/// it); every path in the stack hands frames back with [`Pool::free`] or passes them on.
#[derive(Debug, PartialEq, Eq, Hash)]
#[must_use = "a frame must be freed or passed on"]
pub struct Frame(u32);

impl Frame {
    /// The frame's index in its pool.
    pub fn index(&self) -> u32 {
        self.0
    }

    /// Re-creates a handle from an index a driver got back from its rings (e.g. an AF_XDP
    /// descriptor). The caller transfers ownership: the index must not be owned elsewhere.
    pub fn from_index(index: u32) -> Frame {
        Frame(index)
    }

    /// Gives up the handle and returns its index, for a driver that puts the frame on a ring.
    pub fn into_index(self) -> u32 {
        self.0
    }
}

/// Per-frame metadata.
#[derive(Debug, Clone, Copy)]
struct Meta {
    /// Start of the data window within the frame.
    off: u32,
    /// Length of the data window.
    len: u32,
    /// Owners of the frame; 0 means free.
    refs: u16,
    /// Next frame of a chain (reassembled datagrams), or `NONE`.
    next: u32,
    /// Free-form per-frame annotation (e.g. checksum already verified).
    flags: u32,
}

impl Meta {
    const FREE: Meta = Meta {
        off: 0,
        len: 0,
        refs: 0,
        next: NONE,
        flags: 0,
    };
}

/// Who keeps the frames' memory alive. The pool reaches the memory only through its cached
/// `base` pointer; the owner is never touched again until it is dropped with the pool.
enum Region {
    /// Heap memory; its buffer does not move when the `Vec` does.
    Heap(#[allow(dead_code)] Vec<u8>),
    /// Memory mapped by someone else (the AF_XDP UMEM), kept alive by its owner.
    External(#[allow(dead_code)] Box<dyn Any>),
}

/// Pool construction errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Frame size must be a power of two between 256 and 65536.
    #[error("frame size {0} is not a power of two in 256..=65536")]
    BadFrameSize(usize),
    /// Headroom must leave at least 64 bytes of data room.
    #[error("headroom {headroom} leaves no data room in a {frame_size}-byte frame")]
    BadHeadroom {
        /// Requested headroom.
        headroom: usize,
        /// Frame size.
        frame_size: usize,
    },
    /// A pool needs at least one frame and at most 2^31.
    #[error("frame count {0} is out of range")]
    BadCount(usize),
    /// The external region is smaller than `frames * frame_size`.
    #[error("region of {len} bytes cannot hold {frames} frames of {frame_size} bytes")]
    RegionTooSmall {
        /// Region length.
        len: usize,
        /// Frames requested.
        frames: usize,
        /// Frame size.
        frame_size: usize,
    },
}

/// Pool statistics, for metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Frames in the pool.
    pub capacity: usize,
    /// Frames currently free.
    pub free: usize,
    /// Allocations that failed because the pool was empty.
    pub alloc_failures: u64,
    /// Frees of a frame that was already free (an accounting bug somewhere; never a crash).
    pub double_frees: u64,
}

/// A pool of fixed-size frames with headroom. See the module docs for invariants.
pub struct Pool {
    /// Start of the frames' memory: `len` bytes, valid for the pool's life (see `Region`).
    base: *mut u8,
    len: usize,
    _region: Region,
    frame_size: usize,
    headroom: u32,
    meta: Box<[Meta]>,
    free: Vec<u32>,
    alloc_failures: u64,
    double_frees: u64,
}

// SAFETY: the external region is only reached through `&self`/`&mut self` of the pool that owns its
// keep-alive object, so moving the pool to another thread moves exclusive access with it. The keep-alive
// (e.g. an mmap owner) is only dropped, never used; drivers that hand in a non-`Send` owner must not move
// the pool across threads (documented on `from_external`).
unsafe impl Send for Pool {}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("frames", &self.meta.len())
            .field("frame_size", &self.frame_size)
            .field("headroom", &self.headroom)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Pool {
    /// Default frame size: 2 KiB holds a 1500-byte MTU frame after the headroom.
    pub const DEFAULT_FRAME_SIZE: usize = 2048;
    /// Default headroom: room for Ethernet (14) + IPv4 with options (60) + TCP with options (60).
    pub const DEFAULT_HEADROOM: usize = 192;

    fn check(frames: usize, frame_size: usize, headroom: usize) -> Result<(), PoolError> {
        if !frame_size.is_power_of_two() || !(256..=65536).contains(&frame_size) {
            return Err(PoolError::BadFrameSize(frame_size));
        }
        if headroom + 64 > frame_size {
            return Err(PoolError::BadHeadroom {
                headroom,
                frame_size,
            });
        }
        if frames == 0 || frames > (1 << 31) {
            return Err(PoolError::BadCount(frames));
        }
        Ok(())
    }

    fn build(
        base: *mut u8,
        region: Region,
        frames: usize,
        frame_size: usize,
        headroom: usize,
    ) -> Pool {
        let mut free = Vec::with_capacity(frames);
        // Hand out low indices first (LIFO free list): keeps the working set in cache.
        free.extend((0..frames as u32).rev());
        Pool {
            base,
            len: frames * frame_size,
            _region: region,
            frame_size,
            headroom: headroom as u32,
            meta: vec![Meta::FREE; frames].into_boxed_slice(),
            free,
            alloc_failures: 0,
            double_frees: 0,
        }
    }

    /// A heap-backed pool of `frames` frames of `frame_size` bytes, `headroom` reserved at the front
    /// of each freshly allocated frame.
    pub fn new(frames: usize, frame_size: usize, headroom: usize) -> Result<Pool, PoolError> {
        Self::check(frames, frame_size, headroom)?;
        let mut mem = vec![0u8; frames * frame_size];
        let base = mem.as_mut_ptr();
        Ok(Self::build(
            base,
            Region::Heap(mem),
            frames,
            frame_size,
            headroom,
        ))
    }

    /// A pool over memory mapped by someone else (the AF_XDP UMEM). Frame `i` is
    /// `base + i * frame_size`. `owner` is kept alive as long as the pool and dropped after it.
    ///
    /// The pool starts with every frame free; a driver that lends frames to the kernel (fill ring)
    /// allocates them from the pool like anyone else.
    ///
    /// # Safety
    /// `base..base + len` must be valid for reads and writes for the pool's whole life, not be
    /// accessed by anything but this pool while a frame is owned through it (the kernel only touches
    /// frames the driver lent it), and `owner` must keep the mapping alive. If `owner` is not `Send`,
    /// the pool must not be moved to another thread.
    pub unsafe fn from_external(
        base: *mut u8,
        len: usize,
        frames: usize,
        frame_size: usize,
        headroom: usize,
        owner: Box<dyn Any>,
    ) -> Result<Pool, PoolError> {
        Self::check(frames, frame_size, headroom)?;
        if frames.checked_mul(frame_size).is_none_or(|need| need > len) {
            return Err(PoolError::RegionTooSmall {
                len,
                frames,
                frame_size,
            });
        }
        Ok(Self::build(
            base,
            Region::External(owner),
            frames,
            frame_size,
            headroom,
        ))
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `base..base + len` is valid for the pool's life: a heap buffer the pool owns and
        // never touches otherwise, or mapped memory under `from_external`'s contract.
        unsafe { core::slice::from_raw_parts(self.base, self.len) }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` gives exclusive access.
        unsafe { core::slice::from_raw_parts_mut(self.base, self.len) }
    }

    /// True if `frame` is the last of its chain (the common case: one frame per packet).
    #[inline]
    pub fn is_single(&self, frame: &Frame) -> bool {
        self.meta[frame.0 as usize].next == NONE
    }

    /// Base address of the region (for drivers that register it with the kernel).
    pub fn region_ptr(&mut self) -> *mut u8 {
        self.bytes_mut().as_mut_ptr()
    }

    /// Number of frames.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Size of each frame in bytes.
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Headroom of a fresh frame.
    pub fn headroom(&self) -> usize {
        self.headroom as usize
    }

    /// Frames currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Statistics.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            capacity: self.capacity(),
            free: self.available(),
            alloc_failures: self.alloc_failures,
            double_frees: self.double_frees,
        }
    }

    /// Takes a frame: data window empty, starting after the headroom.
    pub fn alloc(&mut self) -> Option<Frame> {
        match self.free.pop() {
            Some(i) => {
                self.meta[i as usize] = Meta {
                    off: self.headroom,
                    len: 0,
                    refs: 1,
                    next: NONE,
                    flags: 0,
                };
                Some(Frame(i))
            }
            None => {
                self.alloc_failures += 1;
                None
            }
        }
    }

    /// Adds an owner to `frame` (e.g. TCP keeps a sent segment until it is acknowledged while the
    /// driver transmits it). Both handles must be freed.
    pub fn share(&mut self, frame: &Frame) -> Frame {
        let m = &mut self.meta[frame.0 as usize];
        m.refs = m.refs.saturating_add(1);
        Frame(frame.0)
    }

    /// Number of owners of `frame`.
    pub fn refs(&self, frame: &Frame) -> u16 {
        self.meta[frame.0 as usize].refs
    }

    /// Gives a frame (and, when the last owner lets go, the rest of its chain) back.
    #[inline]
    pub fn free(&mut self, frame: Frame) {
        let i = frame.0;
        // The common case first: the last owner of a single frame.
        if let Some(m) = self.meta.get_mut(i as usize) {
            if m.refs == 1 && m.next == NONE {
                m.refs = 0;
                self.free.push(i);
                return;
            }
        }
        self.free_chain(i);
    }

    /// [`Pool::free`] of a shared frame or a chain (and the accounting of bad frees).
    fn free_chain(&mut self, mut i: u32) {
        while i != NONE {
            let Some(m) = self.meta.get_mut(i as usize) else {
                self.double_frees += 1;
                return;
            };
            if m.refs == 0 {
                self.double_frees += 1;
                return;
            }
            m.refs -= 1;
            if m.refs > 0 {
                return;
            }
            let next = m.next;
            m.next = NONE;
            self.free.push(i);
            i = next;
        }
    }

    #[inline]
    fn range(&self, i: u32) -> core::ops::Range<usize> {
        let m = &self.meta[i as usize];
        let start = i as usize * self.frame_size + m.off as usize;
        start..start + m.len as usize
    }

    /// The frame's data window.
    #[inline]
    pub fn data(&self, frame: &Frame) -> &[u8] {
        let r = self.range(frame.0);
        // SAFETY: `range` indexed `meta` (so `frame.0 < frames`) and every window keeps
        // `off + len <= frame_size` (module invariant, kept by `set_window` and `truncate`), so
        // `r` lies inside `base..base + len`, valid for the pool's life (see `bytes`). The slice
        // borrows `self`, as `bytes()[r]` would; only the second bounds check is saved.
        unsafe { core::slice::from_raw_parts(self.base.add(r.start), r.len()) }
    }

    /// The frame's data window, writable.
    #[inline]
    pub fn data_mut(&mut self, frame: &Frame) -> &mut [u8] {
        let r = self.range(frame.0);
        // SAFETY: as in `data`; `&mut self` gives exclusive access to the region.
        unsafe { core::slice::from_raw_parts_mut(self.base.add(r.start), r.len()) }
    }

    /// The whole frame buffer, for drivers that copy a received frame in.
    pub fn buffer_mut(&mut self, frame: &Frame) -> &mut [u8] {
        let start = frame.0 as usize * self.frame_size;
        let end = start + self.frame_size;
        &mut self.bytes_mut()[start..end]
    }

    /// Offset of the data window within the frame.
    pub fn data_offset(&self, frame: &Frame) -> usize {
        self.meta[frame.0 as usize].off as usize
    }

    /// Length of the data window.
    pub fn len(&self, frame: &Frame) -> usize {
        self.meta[frame.0 as usize].len as usize
    }

    /// Bytes free before the data window.
    pub fn headroom_of(&self, frame: &Frame) -> usize {
        self.meta[frame.0 as usize].off as usize
    }

    /// Bytes free after the data window.
    pub fn tailroom_of(&self, frame: &Frame) -> usize {
        let m = &self.meta[frame.0 as usize];
        self.frame_size - m.off as usize - m.len as usize
    }

    /// Sets the data window. Returns `false` (and changes nothing) if it does not fit the frame.
    pub fn set_window(&mut self, frame: &Frame, off: usize, len: usize) -> bool {
        if off.checked_add(len).is_none_or(|end| end > self.frame_size) {
            return false;
        }
        let m = &mut self.meta[frame.0 as usize];
        m.off = off as u32;
        m.len = len as u32;
        true
    }

    /// Grows the window by `n` bytes at the front (to write a header) and returns the new front.
    /// `None` (and nothing changed) if the headroom is shorter than `n` or there is no such frame.
    #[inline]
    pub fn push_front(&mut self, frame: &Frame, n: usize) -> Option<&mut [u8]> {
        let (start, _) = self.grow_front(frame, n)?;
        // SAFETY: `grow_front` returns the frame's new window, inside the region, and `n` is at
        // most its length (it grew by `n`); `&mut self` gives exclusive access.
        Some(unsafe { core::slice::from_raw_parts_mut(self.base.add(start), n) })
    }

    /// Grows a frame's window by `N` bytes at the front and returns them together with the rest
    /// of the window (the payload they will head), from one metadata access: a send path sums the
    /// payload and writes the headers in front without looking the frame up again. `None` (and
    /// nothing changed) if the headroom is shorter than `N` or there is no such frame.
    #[inline(always)]
    pub fn push_front_split<const N: usize>(
        &mut self,
        frame: &Frame,
    ) -> Option<(&mut [u8; N], &mut [u8])> {
        let (start, len) = self.grow_front(frame, N)?;
        // SAFETY: `grow_front` returns the frame's new window, inside the region (its contract).
        let w = unsafe { core::slice::from_raw_parts_mut(self.base.add(start), len) };
        w.split_first_chunk_mut::<N>()
    }

    /// Moves the window's start `n` bytes back (into the headroom) and returns where the new
    /// window starts in the region and its length: one metadata access. `None` (and nothing
    /// changed) if the headroom is shorter than `n` or there is no such frame. The range returned
    /// lies inside `base..base + len`: the frame exists and `off + len <= frame_size` holds
    /// (unchanged by the move).
    #[inline]
    fn grow_front(&mut self, frame: &Frame, n: usize) -> Option<(usize, usize)> {
        let i = frame.0 as usize;
        let m = self.meta.get_mut(i)?;
        if n > m.off as usize {
            return None;
        }
        m.off -= n as u32;
        m.len += n as u32;
        Some((i * self.frame_size + m.off as usize, m.len as usize))
    }

    /// Headroom, window length and whether the frame is the last of its chain, from one metadata
    /// access (a send path's checks). `None` if there is no such frame.
    #[inline]
    pub fn shape(&self, frame: &Frame) -> Option<(usize, usize, bool)> {
        let m = self.meta.get(frame.0 as usize)?;
        Some((m.off as usize, m.len as usize, m.next == NONE))
    }

    /// Shrinks the window by `n` bytes at the front (header consumed). `false` (and nothing
    /// changed) if shorter than `n` or there is no such frame.
    #[inline]
    pub fn pull_front(&mut self, frame: &Frame, n: usize) -> bool {
        let Some(m) = self.meta.get_mut(frame.0 as usize) else {
            return false;
        };
        if n > m.len as usize {
            return false;
        }
        // `off + len` is unchanged: the window invariant holds.
        m.off += n as u32;
        m.len -= n as u32;
        true
    }

    /// Grows the window by `n` bytes at the back and returns them. `None` (and nothing
    /// changed) if they do not fit the frame, or there is no such frame. One metadata access and
    /// one bounds check (a driver's receive copy and a sender's payload copy go through here).
    #[inline]
    pub fn push_back(&mut self, frame: &Frame, n: usize) -> Option<&mut [u8]> {
        let i = frame.0 as usize;
        let m = self.meta.get_mut(i)?;
        // `off + len <= frame_size` (invariant), so only `n` can overflow.
        let end = (m.off as usize + m.len as usize).checked_add(n)?;
        if end > self.frame_size {
            return None;
        }
        m.len += n as u32;
        let start = i * self.frame_size + end - n;
        // SAFETY: `i` indexed `meta`, so the frame exists; `start..start + n` ends at the
        // window's new end, at most `frame_size` into frame `i` (checked just above), so it lies
        // inside `base..base + len`, valid for the pool's life (see `bytes`); `&mut self` gives
        // exclusive access.
        Some(unsafe { core::slice::from_raw_parts_mut(self.base.add(start), n) })
    }

    /// Narrows the window to `len` bytes starting `skip` bytes in (headers consumed and padding
    /// cut in one update: what `pull_front(skip)` then `truncate(len)` do, with one metadata
    /// access). `false` (and nothing changed) if that is not inside the window.
    #[inline]
    pub fn narrow(&mut self, frame: &Frame, skip: usize, len: usize) -> bool {
        let Some(m) = self.meta.get_mut(frame.0 as usize) else {
            return false;
        };
        // Inside the old window keeps `off + len <= frame_size`.
        if skip.checked_add(len).is_none_or(|end| end > m.len as usize) {
            return false;
        }
        m.off += skip as u32;
        m.len = len as u32;
        true
    }

    /// Cuts the window to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, frame: &Frame, len: usize) {
        let m = &mut self.meta[frame.0 as usize];
        if (len as u32) < m.len {
            m.len = len as u32;
        }
    }

    /// Copies `src` into a fresh frame after the headroom. `None` if the pool is empty or `src` does
    /// not fit.
    pub fn alloc_from(&mut self, src: &[u8]) -> Option<Frame> {
        if src.len() + self.headroom() > self.frame_size {
            return None;
        }
        let f = self.alloc()?;
        self.push_back(&f, src.len())
            .expect("checked: src fits after the headroom")
            .copy_from_slice(src);
        Some(f)
    }

    /// Copies `len` bytes from `from`'s window at `from_off` to `to`'s window at `to_off`.
    /// Returns `false` (copying nothing) if either range is outside its window.
    pub fn copy_between(
        &mut self,
        from: &Frame,
        from_off: usize,
        to: &Frame,
        to_off: usize,
        len: usize,
    ) -> bool {
        let (src, dst) = (self.range(from.0), self.range(to.0));
        if from_off + len > src.len() || to_off + len > dst.len() {
            return false;
        }
        let start = src.start + from_off;
        self.bytes_mut()
            .copy_within(start..start + len, dst.start + to_off);
        true
    }

    /// Copies `len` bytes at `from_off` of `from`'s *buffer* (whatever its window: the frame may
    /// be in a driver's hands, its window is left alone) to `to`'s window at `to_off`, summing
    /// them on the way (`checksum::copy_sum`). `None` (copying nothing) if either range is
    /// outside its frame or window, or both are the same frame.
    pub fn copy_sum_from_buffer(
        &mut self,
        from: &Frame,
        from_off: usize,
        to: &Frame,
        to_off: usize,
        len: usize,
    ) -> Option<u64> {
        let fs = self.frame_size;
        let dst = self.range(to.0);
        if from.0 == to.0
            || from_off.checked_add(len).is_none_or(|e| e > fs)
            || to_off.checked_add(len).is_none_or(|e| e > dst.len())
        {
            return None;
        }
        let s = from.0 as usize * fs + from_off;
        let d = dst.start + to_off;
        let bytes = self.bytes_mut();
        // Different frames: the two ranges are disjoint.
        let (src, dst) = if s < d {
            let (a, b) = bytes.split_at_mut(d);
            (&a[s..s + len], &mut b[..len])
        } else {
            let (a, b) = bytes.split_at_mut(s);
            (&b[..len], &mut a[d..d + len])
        };
        Some(crate::wire::checksum::copy_sum(dst, src))
    }

    /// Per-frame flags.
    pub fn flags(&self, frame: &Frame) -> u32 {
        self.meta[frame.0 as usize].flags
    }

    /// Sets per-frame flags.
    pub fn set_flags(&mut self, frame: &Frame, flags: u32) {
        self.meta[frame.0 as usize].flags = flags;
    }

    /// Appends `tail` (and its chain) at the end of `head`'s chain. The chain owns `tail`.
    pub fn chain_append(&mut self, head: &Frame, tail: Frame) {
        let mut i = head.0;
        while self.meta[i as usize].next != NONE {
            i = self.meta[i as usize].next;
        }
        self.meta[i as usize].next = tail.into_index();
    }

    /// Detaches and returns the frame after `frame` in its chain.
    pub fn chain_split(&mut self, frame: &Frame) -> Option<Frame> {
        let m = &mut self.meta[frame.0 as usize];
        let next = core::mem::replace(&mut m.next, NONE);
        (next != NONE).then_some(Frame(next))
    }

    /// Total data length over a chain.
    #[inline]
    pub fn chain_len(&self, head: &Frame) -> usize {
        let m = &self.meta[head.0 as usize];
        if m.next == NONE {
            return m.len as usize;
        }
        self.chain_iter(head).map(<[u8]>::len).sum()
    }

    /// Number of frames in a chain.
    #[inline]
    pub fn chain_count(&self, head: &Frame) -> usize {
        if self.is_single(head) {
            return 1;
        }
        self.chain_iter(head).count()
    }

    /// The data windows of a chain, in order.
    pub fn chain_iter<'a>(&'a self, head: &Frame) -> ChainIter<'a> {
        ChainIter {
            pool: self,
            next: head.0,
        }
    }

    /// Copies a chain's data into `out`, returning the number of bytes copied (at most `out.len()`).
    pub fn chain_copy_to(&self, head: &Frame, out: &mut [u8]) -> usize {
        let mut n = 0;
        for seg in self.chain_iter(head) {
            let take = seg.len().min(out.len() - n);
            out[n..n + take].copy_from_slice(&seg[..take]);
            n += take;
            if n == out.len() {
                break;
            }
        }
        n
    }
}

/// Iterator over the data windows of a frame chain.
pub struct ChainIter<'a> {
    pool: &'a Pool,
    next: u32,
}

impl<'a> Iterator for ChainIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.next == NONE {
            return None;
        }
        let i = self.next;
        self.next = self.pool.meta[i as usize].next;
        let r = self.pool.range(i);
        Some(&self.pool.bytes()[r])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_accounting() {
        let mut p = Pool::new(4, 2048, 192).unwrap();
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert_eq!(p.available(), 2);
        assert_eq!(p.headroom_of(&a), 192);
        assert_eq!(p.len(&a), 0);
        p.free(a);
        p.free(b);
        assert_eq!(p.available(), 4);
        // A forged double free is counted, never a panic or a corrupted free list.
        p.free(Frame::from_index(0));
        p.free(Frame::from_index(99));
        assert_eq!(p.stats().double_frees, 2);
        assert_eq!(p.available(), 4);
    }

    #[test]
    fn exhaustion_is_counted() {
        let mut p = Pool::new(1, 256, 0).unwrap();
        let a = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        assert_eq!(p.stats().alloc_failures, 1);
        p.free(a);
    }

    #[test]
    fn window_operations_stay_in_bounds() {
        let mut p = Pool::new(1, 256, 16).unwrap();
        let f = p.alloc().unwrap();
        p.push_back(&f, 10).unwrap().copy_from_slice(&[7; 10]);
        assert_eq!(p.push_front(&f, 4).unwrap().len(), 4);
        assert_eq!(p.len(&f), 14);
        assert!(p.push_front(&f, 13).is_none());
        assert!(p.push_back(&f, 1000).is_none());
        assert!(p.push_back(&f, usize::MAX).is_none(), "overflow");
        assert!(p.push_back(&Frame(3), 1).is_none(), "no such frame");
        assert!(p.push_front(&Frame(3), 1).is_none() && !p.pull_front(&Frame(3), 1));
        assert_eq!(p.len(&f), 14, "unchanged");
        p.push_back(&f, 256 - 26)
            .expect("up to the frame's end")
            .fill(9);
        assert_eq!((p.data(&f).len(), p.data(&f)[243]), (244, 9));
        assert!(p.push_back(&f, 1).is_none(), "past the frame's end");
        p.truncate(&f, 14);
        assert!(p.pull_front(&f, 4));
        assert_eq!(p.data(&f), &[7; 10]);
        assert!(!p.pull_front(&f, 11));
        assert!(!p.set_window(&f, 250, 7));
        p.truncate(&f, 3);
        assert_eq!(p.data(&f), &[7; 3]);
        p.data_mut(&f).copy_from_slice(&[1, 2, 3]);
        assert!(!p.narrow(&f, 2, 2), "past the window");
        assert!(!p.narrow(&f, usize::MAX, 2), "overflow");
        assert!(!p.narrow(&Frame(7), 0, 0), "no such frame");
        assert_eq!(p.data(&f), &[1, 2, 3], "unchanged");
        assert!(p.narrow(&f, 1, 1));
        assert_eq!(p.shape(&f), Some((17, 1, true)));
        assert!(p.push_front_split::<18>(&f).is_none(), "past the headroom");
        let (h, rest) = p.push_front_split::<2>(&f).unwrap();
        assert_eq!(rest, &[2]);
        h.copy_from_slice(&[8, 9]);
        assert_eq!(p.data(&f), &[8, 9, 2]);
        assert_eq!(p.shape(&f), Some((15, 3, true)));
        assert!(p.shape(&Frame(7)).is_none() && p.push_front_split::<1>(&Frame(7)).is_none());
        p.free(f);
    }

    #[test]
    fn shared_frames_need_every_owner_to_free() {
        let mut p = Pool::new(2, 256, 0).unwrap();
        let a = p.alloc().unwrap();
        let a2 = p.share(&a);
        assert_eq!(p.refs(&a), 2);
        p.free(a);
        assert_eq!(p.available(), 1);
        p.free(a2);
        assert_eq!(p.available(), 2);
    }

    #[test]
    fn chains_iterate_copy_and_free_together() {
        let mut p = Pool::new(3, 256, 0).unwrap();
        let a = p.alloc_from(b"abc").unwrap();
        let b = p.alloc_from(b"de").unwrap();
        let c = p.alloc_from(b"f").unwrap();
        p.chain_append(&a, b);
        p.chain_append(&a, c);
        assert_eq!(p.chain_len(&a), 6);
        assert_eq!(p.chain_count(&a), 3);
        let mut out = [0u8; 5];
        assert_eq!(p.chain_copy_to(&a, &mut out), 5);
        assert_eq!(&out, b"abcde");
        p.free(a);
        assert_eq!(p.available(), 3);
    }

    #[test]
    fn copy_sum_from_buffer_reads_outside_the_window_and_sums() {
        let mut p = Pool::new(4, 2048, 192).unwrap();
        let (a, b) = (p.alloc().unwrap(), p.alloc().unwrap());
        for (i, x) in p.buffer_mut(&a).iter_mut().enumerate() {
            *x = (i * 13) as u8;
        }
        // `a`'s window elsewhere (a driver's view): the copy reads its buffer at 1000..1301.
        p.set_window(&a, 0, 10);
        p.set_window(&b, 100, 400);
        let want: Vec<u8> = p.buffer_mut(&a)[1000..1301].to_vec();
        let sum = p.copy_sum_from_buffer(&a, 1000, &b, 50, 301);
        assert_eq!(sum, Some(crate::wire::checksum::sum(&want)));
        assert_eq!(&p.data(&b)[50..351], &want[..]);
        assert_eq!(
            (p.data_offset(&a), p.len(&a)),
            (0, 10),
            "source window untouched"
        );
        // From a higher frame to a lower one, too.
        let s2 = p.copy_sum_from_buffer(&b, 150, &a, 0, 10);
        assert_eq!(s2, Some(crate::wire::checksum::sum(&want[..10])));
        assert_eq!(p.copy_sum_from_buffer(&a, 0, &a, 0, 4), None, "same frame");
        assert_eq!(
            p.copy_sum_from_buffer(&a, 2000, &b, 0, 49),
            None,
            "past the frame"
        );
        assert_eq!(
            p.copy_sum_from_buffer(&a, 0, &b, 399, 2),
            None,
            "past the window"
        );
        p.free(a);
        p.free(b);
    }

    #[test]
    fn bad_geometry_is_an_error() {
        assert_eq!(
            Pool::new(1, 1000, 0).unwrap_err(),
            PoolError::BadFrameSize(1000)
        );
        assert!(matches!(
            Pool::new(1, 256, 200),
            Err(PoolError::BadHeadroom { .. })
        ));
        assert_eq!(Pool::new(0, 2048, 0).unwrap_err(), PoolError::BadCount(0));
    }
}
