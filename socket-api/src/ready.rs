//! Readiness: the bits a socket's owner thread sets and its users clear, the wakers that turn a
//! transition into a wake-up (async tasks, blocked threads), and the registry ([`Poller`]) that
//! reports transitions of many sockets without scanning them.
//!
//! Protocol (no lock anywhere): the owner thread makes data visible first (pushes it on the
//! socket's queue), then sets the bit ([`SockCore::set`]); a consumer that finds the queue empty
//! clears the bit, then looks at the queue again and sets the bit back if something slipped in.
//! So a transition is never lost, and an edge-triggered event fires once per 0 → 1 transition.

use arc_swap::ArcSwapOption;
use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Readiness bits, as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Readiness(pub u32);

impl Readiness {
    /// Data (or a connection to accept) is waiting.
    pub const READABLE: Readiness = Readiness(1);
    /// A send would be taken now.
    pub const WRITABLE: Readiness = Readiness(2);
    /// The peer closed its sending side (end of stream after the queued data).
    pub const READ_CLOSED: Readiness = Readiness(4);
    /// An error is pending (take it with the socket's `take_error`), or the runtime went down.
    pub const ERROR: Readiness = Readiness(8);
    /// Every bit.
    pub const ALL: Readiness = Readiness(15);

    /// True if any bit of `other` is set here.
    pub fn intersects(self, other: Readiness) -> bool {
        self.0 & other.0 != 0
    }
    /// True if readable (or the stream ended, or an error is pending: a read returns at once).
    pub fn is_readable(self) -> bool {
        self.intersects(Readiness(1 | 4 | 8))
    }
    /// True if writable (or an error is pending: a write returns at once).
    pub fn is_writable(self) -> bool {
        self.intersects(Readiness(2 | 8))
    }
}

impl core::ops::BitOr for Readiness {
    type Output = Readiness;
    fn bitor(self, o: Readiness) -> Readiness {
        Readiness(self.0 | o.0)
    }
}

/// What a registration wants to hear about.
pub type Interest = Readiness;

/// A caller-chosen identifier reported with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub usize);

/// One readiness event: the socket registered with `token` became ready for `readiness`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The registration's token.
    pub token: Token,
    /// Bits that went from 0 to 1 (filtered by the interest).
    pub readiness: Readiness,
}

pub(crate) struct Registration {
    poller: Arc<PollerInner>,
    token: Token,
    interest: Readiness,
}

/// Readiness state shared by a socket's handles and its owner thread.
#[derive(Default)]
#[doc(hidden)]
pub struct SockCore {
    ready: AtomicU32,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
    reg: ArcSwapOption<Registration>,
}

impl core::fmt::Debug for SockCore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SockCore")
            .field("ready", &self.ready())
            .finish()
    }
}

impl SockCore {
    /// Current bits.
    pub fn ready(&self) -> Readiness {
        Readiness(self.ready.load(SeqCst))
    }

    /// Sets bits; wakes who waits for the ones that went 0 → 1 and reports them to the registry.
    pub fn set(&self, bits: Readiness) {
        let old = self.ready.fetch_or(bits.0, SeqCst);
        let new = Readiness(bits.0 & !old);
        if new.0 == 0 {
            return;
        }
        if new.is_readable() {
            self.read_waker.wake();
        }
        if new.is_writable() {
            self.write_waker.wake();
        }
        if let Some(r) = &*self.reg.load() {
            let hit = Readiness(new.0 & r.interest.0);
            if hit.0 != 0 {
                r.poller.push(Event {
                    token: r.token,
                    readiness: hit,
                });
            }
        }
    }

    /// Clears bits (a consumer found nothing more to take).
    pub fn clear(&self, bits: Readiness) {
        self.ready.fetch_and(!bits.0, SeqCst);
    }

    /// Registers `waker` for read readiness.
    pub fn register_read(&self, waker: &Waker) {
        self.read_waker.register(waker);
    }

    /// Registers `waker` for write readiness.
    pub fn register_write(&self, waker: &Waker) {
        self.write_waker.register(waker);
    }

    /// Wakes every waiter (runtime down, socket closed).
    pub fn wake_all(&self) {
        self.read_waker.wake();
        self.write_waker.wake();
    }
}

struct PollerInner {
    events: SegQueue<Event>,
    waker: AtomicWaker,
    notified: AtomicBool,
}

impl PollerInner {
    fn push(&self, e: Event) {
        self.events.push(e);
        self.notified.store(true, SeqCst);
        self.waker.wake();
    }
}

/// A readiness registry for many sockets, like `epoll` with `EPOLLET` (or mio's `Poll`).
///
/// A socket registered with an interest reports each 0 → 1 transition of those bits as one
/// [`Event`]; registering a socket that is already ready reports it at once. The owner thread
/// pushes events onto a lock-free queue as they happen: waiting costs the same with 100 000
/// registered sockets as with 10, because nothing is scanned. After an event, use the socket until
/// it says `WouldBlock`, as with any edge-triggered interface: no new event comes for a bit that
/// stayed set.
#[derive(Clone)]
pub struct Poller {
    inner: Arc<PollerInner>,
}

impl core::fmt::Debug for Poller {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Poller")
            .field("queued", &self.inner.events.len())
            .finish()
    }
}

impl Default for Poller {
    fn default() -> Self {
        Poller::new()
    }
}

/// A socket type that can be registered with a [`Poller`].
pub trait Source {
    #[doc(hidden)]
    fn core(&self) -> &SockCore;
}

impl Poller {
    /// An empty registry.
    pub fn new() -> Poller {
        Poller {
            inner: Arc::new(PollerInner {
                events: SegQueue::new(),
                waker: AtomicWaker::new(),
                notified: AtomicBool::new(false),
            }),
        }
    }

    /// Registers (or re-registers) `source` with `token` for `interest`. A socket belongs to one
    /// registry at a time; the last registration wins.
    pub fn register(&self, source: &impl Source, token: Token, interest: Interest) {
        let core = source.core();
        core.reg.store(Some(Arc::new(Registration {
            poller: self.inner.clone(),
            token,
            interest,
        })));
        let now = Readiness(core.ready().0 & interest.0);
        if now.0 != 0 {
            self.inner.push(Event {
                token,
                readiness: now,
            });
        }
    }

    /// Stops reporting `source`'s events.
    pub fn deregister(&self, source: &impl Source) {
        source.core().reg.store(None);
    }

    /// Wakes a thread blocked in [`Poller::poll`] (from any thread).
    pub fn notify(&self) {
        self.inner.notified.store(true, SeqCst);
        self.inner.waker.wake();
    }

    /// Moves queued events into `events` (up to its spare capacity, at least one slot), waiting up
    /// to `timeout` (`None`: for ever) for the first one or a [`Poller::notify`]. Returns how many.
    pub fn poll(&self, events: &mut Vec<Event>, timeout: Option<Duration>) -> usize {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let n = self.drain(events);
            if n > 0 || self.inner.notified.swap(false, SeqCst) {
                return n;
            }
            let parked = crate::block::park_waker();
            self.inner.waker.register(&parked);
            if !self.inner.events.is_empty() || self.inner.notified.load(SeqCst) {
                continue;
            }
            if !crate::block::park_until(deadline) {
                return self.drain(events);
            }
        }
    }

    /// The async form of [`Poller::poll`]: ready when at least one event is queued.
    pub fn poll_events(&self, cx: &mut Context<'_>, events: &mut Vec<Event>) -> Poll<usize> {
        let n = self.drain(events);
        if n > 0 {
            return Poll::Ready(n);
        }
        self.inner.waker.register(cx.waker());
        match self.drain(events) {
            0 => Poll::Pending,
            n => Poll::Ready(n),
        }
    }

    fn drain(&self, events: &mut Vec<Event>) -> usize {
        let room = (events.capacity() - events.len()).max(1);
        let mut n = 0;
        while n < room {
            let Some(e) = self.inner.events.pop() else {
                break;
            };
            events.push(e);
            n += 1;
        }
        n
    }
}

/// A waker that unparks a thread: how the blocking calls wait.
pub(crate) struct ThreadWaker(pub std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(SockCore);
    impl Source for S {
        fn core(&self) -> &SockCore {
            &self.0
        }
    }

    #[test]
    fn edge_triggered_events_fire_once_per_transition() {
        let p = Poller::new();
        let s = S(SockCore::default());
        p.register(&s, Token(7), Readiness::READABLE);
        s.0.set(Readiness::READABLE);
        s.0.set(Readiness::READABLE); // already set: no second event
        s.0.set(Readiness::WRITABLE); // not in the interest
        let mut ev = Vec::with_capacity(8);
        assert_eq!(p.poll(&mut ev, Some(Duration::ZERO)), 1);
        assert_eq!(ev[0].token, Token(7));
        s.0.clear(Readiness::READABLE);
        s.0.set(Readiness::READABLE);
        ev.clear();
        assert_eq!(p.poll(&mut ev, Some(Duration::ZERO)), 1);
        ev.clear();
        assert_eq!(p.poll(&mut ev, Some(Duration::from_millis(5))), 0);
    }

    #[test]
    fn registering_a_ready_socket_reports_it() {
        let p = Poller::new();
        let s = S(SockCore::default());
        s.0.set(Readiness::WRITABLE);
        p.register(&s, Token(1), Readiness::ALL);
        let mut ev = Vec::with_capacity(4);
        assert_eq!(p.poll(&mut ev, Some(Duration::ZERO)), 1);
        assert_eq!(ev[0].readiness, Readiness::WRITABLE);
    }

    #[test]
    fn notify_wakes_a_blocked_poll_from_another_thread() {
        let p = Poller::new();
        let q = p.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            q.notify();
        });
        let mut ev = Vec::with_capacity(4);
        let start = Instant::now();
        assert_eq!(p.poll(&mut ev, Some(Duration::from_secs(10))), 0);
        assert!(start.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn cost_per_event_does_not_scan_registrations() {
        // 100 000 registered sockets, one becomes ready: poll returns exactly that one.
        let p = Poller::new();
        let socks: Vec<S> = (0..100_000).map(|_| S(SockCore::default())).collect();
        for (i, s) in socks.iter().enumerate() {
            p.register(s, Token(i), Readiness::READABLE);
        }
        socks[77_777].0.set(Readiness::READABLE);
        let mut ev = Vec::with_capacity(16);
        assert_eq!(p.poll(&mut ev, Some(Duration::ZERO)), 1);
        assert_eq!(ev[0].token, Token(77_777));
    }
}
