//! Blocking waits for the blocking socket types: a waker that unparks the calling thread, and a
//! loop that polls an operation until it is ready or a deadline passes. No lock, no condition
//! variable: the same wakers serve async tasks and blocked threads.

use crate::error::{Error, Result};
use crate::ready::ThreadWaker;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// A waker that unparks the current thread.
pub(crate) fn park_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(std::thread::current())))
}

/// The longest a blocked call sleeps before it looks at its socket again, woken or not. Wakers
/// are the fast path; this bound makes progress certain even if a wake-up were lost (a blocked
/// sender whose credit came back, a frame that was refilled): the cost of a lost wake-up is then
/// at most this much latency, never a hang.
const RECHECK: Duration = Duration::from_millis(10);

/// Parks until unparked, `deadline`, or [`RECHECK`]; false once the deadline has passed.
pub(crate) fn park_until(deadline: Option<Instant>) -> bool {
    let now = Instant::now();
    let wait = match deadline {
        None => RECHECK,
        Some(d) if now >= d => return false,
        Some(d) => (d - now).min(RECHECK),
    };
    std::thread::park_timeout(wait);
    true
}

/// Polls `op` with a thread-unparking waker until it is ready; `Error::TimedOut` at `deadline`.
/// `op` must register the waker before it returns `Pending` (as a `poll_*` function does).
pub(crate) fn block_on<T>(
    deadline: Option<Instant>,
    mut op: impl FnMut(&Waker) -> Poll<Result<T>>,
) -> Result<T> {
    let waker = park_waker();
    loop {
        if let Poll::Ready(r) = op(&waker) {
            return r;
        }
        if !park_until(deadline) {
            return match op(&waker) {
                Poll::Ready(r) => r,
                Poll::Pending => Err(Error::TimedOut),
            };
        }
    }
}
