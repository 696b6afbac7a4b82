//! Buffers: the frame pool and bursts of frames.

mod batch;
mod pool;

pub use batch::{Batch, BURST};
pub use pool::{ChainIter, Frame, Pool, PoolError, PoolStats};
