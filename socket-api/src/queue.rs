//! What a queue's owner thread shares with every other thread: its command queue, the frames
//! that come back from applications, the spare frames it lends them for sending, its wake-up
//! eventfd and its status. Everything here is lock-free; the one `Mutex` (the graveyard) is
//! taken once, when the owner thread ends.

use crate::error::{Error, Result};
use crate::owner::Owner;
use atomic_waker::AtomicWaker;
use cnet_stack::{ConfigEvent, Instant, Stack};
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

/// A control call run on the owner thread, with its stack.
pub(crate) type Call = Box<dyn FnOnce(&mut Stack, &mut Owner, Instant) + Send>;

/// Socket identifier on its owner thread: unique for the process's life, never reused, so a
/// late command for a closed socket cannot hit another one.
pub(crate) type SockId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh socket identifier.
pub(crate) fn next_id() -> SockId {
    NEXT_ID.fetch_add(1, SeqCst)
}

/// What other threads ask of an owner thread.
pub(crate) enum Cmd {
    /// A control operation (bind, connect, options, info...).
    Call(Call),
    /// Data for a TCP connection: `len` bytes written at the send offset of frame `frame`.
    TcpSend { id: SockId, frame: u32, len: u32 },
    /// A datagram for a UDP socket.
    UdpSend {
        id: SockId,
        frame: u32,
        len: u32,
        /// Source address for a socket bound to every address (`None`: the route's).
        src: Option<std::net::Ipv4Addr>,
        dst: SocketAddrV4,
    },
    /// Serve the socket again (its application queue has room again, or it waits for frames).
    Kick { id: SockId },
    /// The last handle went away.
    Close { id: SockId },
    /// A configuration event (a neighbour a sibling queue learnt).
    Config(ConfigEvent),
}

/// Owner thread status.
pub(crate) const STARTING: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
pub(crate) const STOPPED: u8 = 2;
pub(crate) const FAILED: u8 = 3;

/// Counters of the runtime's own paths (the stack keeps its own).
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// Commands received from other threads.
    pub commands: AtomicU64,
    /// Times another thread woke the sleeping owner through its eventfd.
    pub wakeups: AtomicU64,
    /// Send-buffer requests that found no spare frame (pool short: back-pressure).
    pub spare_empty: AtomicU64,
    /// Frames given back by applications (receive buffers dropped, send buffers unused).
    pub frames_returned: AtomicU64,
    /// Received bytes handed to applications.
    pub rx_bytes: AtomicU64,
    /// Bytes applications handed over for sending.
    pub tx_bytes: AtomicU64,
    /// Datagrams a UDP send could not send (no route, too large...): counted, reported by
    /// `take_error` when an ICMP error follows.
    pub udp_send_errors: AtomicU64,
}

/// The state of one queue shared with other threads.
pub(crate) struct QueueShared {
    /// Queue index in the runtime.
    pub index: usize,
    cmds: SegQueue<Cmd>,
    /// Frame indices given back by other threads; as many slots as the pool has frames, so a
    /// push never fails (each index is given back once).
    pub returned: ArrayQueue<u32>,
    /// Free frames lent to other threads for sending.
    pub spare: ArrayQueue<u32>,
    wake_fd: OwnedFd,
    /// The owner is (about to be) asleep: a command must write the eventfd.
    pub sleeping: AtomicBool,
    state: AtomicU8,
    failure: OnceLock<String>,
    /// The first netlink snapshot was applied (or netlink is off).
    pub synced: AtomicBool,
    /// Start of the pool's memory (frames are reached as `base + index * frame_size`).
    base: usize,
    /// Frame size of the pool.
    pub frame_size: usize,
    /// Offset in a frame where send data starts: room for every header before it.
    pub send_off: usize,
    /// Frames held by other threads right now (receive and send buffers).
    pub frames_out: AtomicUsize,
    /// The runtime's counters for this queue.
    pub counters: RuntimeCounters,
    /// Keeps the stack and port (and so the pool's memory) alive after the owner thread ends,
    /// until the last buffer that points into it is dropped.
    pub graveyard: Mutex<Option<Box<dyn Send>>>,
    /// Woken when the runtime stops, for [`crate::Runtime::join`]'s waiters.
    pub stopped: AtomicWaker,
    /// The port's own statistics (driver and kernel counters, ring levels) as the owner last
    /// published them, every [`crate::runtime::PORT_STATS_EVERY`] (see
    /// [`crate::QueueSetup::port_stats`]).
    pub port_stats: Mutex<Vec<crate::runtime::PortStat>>,
}

// SAFETY: `base` is an address, only turned into pointers to frames that the thread holding them
// owns exclusively (see `buf`); every other field is Sync on its own.
unsafe impl Sync for QueueShared {}
// SAFETY: as above; the graveyard's contents are Send.
unsafe impl Send for QueueShared {}

impl QueueShared {
    /// Shared state for a queue whose pool starts at `base`.
    pub fn new(
        index: usize,
        pool: &mut cnet_stack::Pool,
        send_off: usize,
        spare: usize,
    ) -> Result<QueueShared> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::NoResources("eventfd"));
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let wake_fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(QueueShared {
            index,
            cmds: SegQueue::new(),
            returned: ArrayQueue::new(pool.capacity().max(1)),
            spare: ArrayQueue::new(spare.max(1)),
            wake_fd,
            sleeping: AtomicBool::new(false),
            state: AtomicU8::new(STARTING),
            failure: OnceLock::new(),
            synced: AtomicBool::new(false),
            base: pool.region_ptr() as usize,
            frame_size: pool.frame_size(),
            send_off,
            frames_out: AtomicUsize::new(0),
            counters: RuntimeCounters::default(),
            graveyard: Mutex::new(None),
            stopped: AtomicWaker::new(),
            port_stats: Mutex::new(Vec::new()),
        })
    }

    /// Pointer to the start of frame `idx`.
    pub fn frame_ptr(&self, idx: u32) -> *mut u8 {
        (self.base + idx as usize * self.frame_size) as *mut u8
    }

    /// The owner's wake-up eventfd.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_fd.as_raw_fd()
    }

    /// `Ok` while the owner thread runs; the reason it stopped otherwise.
    pub fn alive(&self) -> Result<()> {
        match self.state.load(SeqCst) {
            STARTING | RUNNING => Ok(()),
            STOPPED => Err(Error::RuntimeDown(format!("queue {} stopped", self.index))),
            _ => Err(Error::RuntimeDown(
                self.failure
                    .get()
                    .cloned()
                    .unwrap_or_else(|| format!("queue {} failed", self.index)),
            )),
        }
    }

    /// Status as one of the constants above.
    pub fn state(&self) -> u8 {
        self.state.load(SeqCst)
    }

    /// Sets the status (owner thread only); a failure keeps its reason.
    pub fn set_state(&self, state: u8, failure: Option<String>) {
        if let Some(f) = failure {
            let _ = self.failure.set(f);
        }
        self.state.store(state, SeqCst);
        self.stopped.wake();
    }

    /// Queues a command and wakes the owner if it sleeps. Fails when the owner is gone (a command
    /// pushed while it stops is dropped by its final drain: any reply it carries reports so).
    pub fn submit(&self, cmd: Cmd) -> Result<()> {
        self.alive()?;
        self.cmds.push(cmd);
        self.counters.commands.fetch_add(1, SeqCst);
        self.wake();
        self.alive()
    }

    /// Takes the next command (owner thread).
    pub fn next_cmd(&self) -> Option<Cmd> {
        self.cmds.pop()
    }

    /// True when commands wait.
    pub fn has_cmds(&self) -> bool {
        !self.cmds.is_empty()
    }

    /// Wakes the owner thread if it sleeps (one eventfd write per sleep, not per command).
    pub fn wake(&self) {
        if self.sleeping.swap(false, SeqCst) {
            self.counters.wakeups.fetch_add(1, SeqCst);
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a valid u64 to our own eventfd.
            unsafe { libc::write(self.wake_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Empties the eventfd after a wake-up (owner thread).
    pub fn drain_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.wake_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// Gives a frame back to the owner (any thread).
    pub fn give_back(&self, idx: u32) {
        self.frames_out.fetch_sub(1, SeqCst);
        self.counters.frames_returned.fetch_add(1, SeqCst);
        if self.returned.push(idx).is_err() {
            // Unreachable while indices are unique: the queue has a slot per frame.
            tracing::error!(
                queue = self.index,
                idx,
                "frame return queue full: frame leaked"
            );
        }
    }
}

/// The receiving end of a reply from the owner thread.
pub(crate) struct ReplyRx<T>(Arc<Slot<T>>);
/// The sending end, moved into the owner's call. Dropped unsent, it reports the runtime down.
pub(crate) struct ReplyTx<T>(Arc<Slot<T>>);

struct Slot<T> {
    value: ArrayQueue<T>,
    closed: AtomicBool,
    waker: AtomicWaker,
}

/// A one-shot reply channel, lock-free.
pub(crate) fn reply<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let s = Arc::new(Slot {
        value: ArrayQueue::new(1),
        closed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    (ReplyTx(s.clone()), ReplyRx(s))
}

impl<T> ReplyTx<T> {
    /// Sends the reply.
    pub fn send(self, v: T) {
        let _ = self.0.value.push(v);
        // Drop marks the slot closed and wakes the receiver.
    }
}

impl<T> Drop for ReplyTx<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, SeqCst);
        self.0.waker.wake();
    }
}

impl<T> ReplyRx<T> {
    /// Ready with the reply, or with `RuntimeDown` if the owner dropped the call unanswered.
    pub fn poll(&self, cx: &mut Context<'_>, q: &QueueShared) -> Poll<Result<T>> {
        if let Some(v) = self.0.value.pop() {
            return Poll::Ready(Ok(v));
        }
        self.0.waker.register(cx.waker());
        if let Some(v) = self.0.value.pop() {
            return Poll::Ready(Ok(v));
        }
        if self.0.closed.load(SeqCst) {
            return Poll::Ready(Err(q.alive().err().unwrap_or_else(|| {
                Error::RuntimeDown(format!("queue {} dropped the call", q.index))
            })));
        }
        if let Err(e) = q.alive() {
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }
}

/// Runs `f` on `q`'s owner thread and waits for its result (blocking).
pub(crate) fn call_blocking<T: Send + 'static>(
    q: &QueueShared,
    f: impl FnOnce(&mut Stack, &mut Owner, Instant) -> T + Send + 'static,
) -> Result<T> {
    let rx = call_async(q, f)?;
    crate::block::block_on(None, |w| rx.poll(&mut Context::from_waker(w), q))
}

/// Sends `f` to `q`'s owner thread; the reply comes on the returned receiver.
pub(crate) fn call_async<T: Send + 'static>(
    q: &QueueShared,
    f: impl FnOnce(&mut Stack, &mut Owner, Instant) -> T + Send + 'static,
) -> Result<ReplyRx<T>> {
    let (tx, rx) = reply();
    q.submit(Cmd::Call(Box::new(move |stack, owner, now| {
        tx.send(f(stack, owner, now))
    })))?;
    Ok(rx)
}
