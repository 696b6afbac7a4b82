//! Blocking waits for the blocking socket types: a waker that unparks the calling thread, and a
//! loop that polls an operation until it is ready or a deadline passes. No lock, no condition
//! variable: the same wakers serve async tasks and blocked threads.

use crate::error::{Error, Result};
use crate::ready::ThreadWaker;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

/// A waker that unparks the current thread.
pub(crate) fn park_waker() -> Waker {
    Waker::from(Arc::new(ThreadWaker(std::thread::current())))
}

/// Parks until unparked or `deadline`; false once the deadline has passed.
pub(crate) fn park_until(deadline: Option<Instant>) -> bool {
    match deadline {
        None => {
            std::thread::park();
            true
        }
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                return false;
            }
            std::thread::park_timeout(d - now);
            true
        }
    }
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
