//! Bursts of frames: the unit every stage of the stack and every driver call works on.
//!
//! A [`Batch`] is a fixed-capacity array on the stack (no heap), so splitting a burst by next stage
//! allocates nothing.

use super::pool::{Frame, Pool};
use arrayvec::ArrayVec;

/// Largest burst a stage handles at once.
pub const BURST: usize = 64;

/// Up to [`BURST`] owned frames.
#[derive(Debug, Default)]
pub struct Batch {
    frames: ArrayVec<Frame, BURST>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch {
            frames: ArrayVec::new(),
        }
    }

    /// Frames in the batch.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// True when no frame can be added.
    pub fn is_full(&self) -> bool {
        self.frames.is_full()
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        BURST - self.frames.len()
    }

    /// Adds a frame; gives it back when the batch is full.
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        self.frames.try_push(frame).map_err(|e| e.element())
    }

    /// Removes the last frame.
    pub fn pop(&mut self) -> Option<Frame> {
        self.frames.pop()
    }

    /// Takes every frame out, in order.
    pub fn drain(&mut self) -> arrayvec::Drain<'_, Frame, BURST> {
        self.frames.drain(..)
    }

    /// Removes the first `n` frames (those a driver consumed), keeping the rest in order.
    pub fn drain_front(&mut self, n: usize) -> arrayvec::Drain<'_, Frame, BURST> {
        let n = n.min(self.frames.len());
        self.frames.drain(..n)
    }

    /// The frames, in order.
    pub fn iter(&self) -> core::slice::Iter<'_, Frame> {
        self.frames.iter()
    }

    /// Frees every frame into `pool`.
    pub fn free_all(&mut self, pool: &mut Pool) {
        for f in self.frames.drain(..) {
            pool.free(f);
        }
    }
}

impl Extend<Frame> for Batch {
    /// Extends up to capacity.
    ///
    /// # Panics
    /// If more than [`Batch::remaining`] frames are given: a frame cannot be silently lost.
    fn extend<I: IntoIterator<Item = Frame>>(&mut self, iter: I) {
        for f in iter {
            if let Err(f) = self.push(f) {
                panic!("Batch::extend past capacity would lose frame {}", f.index());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_until_full_then_refuse() {
        let mut pool = Pool::new(BURST + 1, 256, 0).unwrap();
        let mut b = Batch::new();
        while let Some(f) = pool.alloc() {
            if let Err(f) = b.push(f) {
                assert!(b.is_full());
                pool.free(f);
                break;
            }
        }
        assert_eq!(b.len(), BURST);
        let first: Vec<u32> = b.drain_front(2).map(Frame::into_index).collect();
        assert_eq!(first, vec![0, 1]);
        for i in first {
            pool.free(Frame::from_index(i));
        }
        b.free_all(&mut pool);
        assert_eq!(pool.available(), BURST + 1);
    }
}
