//! TCP listeners and streams.
//!
//! Queues: a listener listens on every queue's stack and `accept` yields connections from all of
//! them (each connection stays on the queue its SYN arrived on). `connect` picks a queue round
//! robin, or the one given in [`ConnectOptions::queue`]; with several queues on a NIC, the
//! reply must be steered to that queue (RSS or the XDP program), or the connection stalls.
//!
//! Data: received segments reach the application as [`RecvBuf`]s in place (zero copy); each queue
//! of a stream holds at most `Limits::stream_rx_bytes` before the owner leaves data in the stack,
//! whose receive window then closes. Writers hand over frames ([`SendBuf`], zero copy; or
//! `write`, one copy into frames) up to `Limits::stream_tx_bytes` beyond what the stack's send
//! buffer took.

use crate::buf::{split_chain, RecvBuf, SendBuf};
use crate::error::{Error, Result};
use crate::owner::{Entry, Owner};
use crate::queue::{call_async, call_blocking, Cmd, QueueShared, SockId};
use crate::ready::{Readiness, SockCore, Source};
use crate::runtime::Runtime;
use cnet_stack::tcp::{TcpHandle, TcpListener as StackListener, TcpOpts, TcpSendError, TcpState};
use cnet_stack::{Congestion, Frame, Instant, Stack, TcpInfo};
use crossbeam_queue::SegQueue;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicIsize, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

/// Stream flags.
const CONNECTED: u32 = 1;
const RD_EOF: u32 = 2;
const WR_SHUT: u32 = 4;
const RD_SHUT: u32 = 8;
const GONE: u32 = 16;
/// The owner left received data in its stack because the pool was at its receive floor: the
/// next read kicks the owner.
const WITHHELD: u32 = 32;
/// Received bytes a stream's readers always may hold, whatever the pool's level
/// (`Stack::rx_floor`); beyond them data is lent only above the floor.
const SHALLOW_RX_BYTES: usize = 16 * 1024;

/// State shared by a stream's handles and its owner thread.
pub(crate) struct StreamShared {
    pub core: SockCore,
    rx: SegQueue<RecvBuf>,
    rx_bytes: AtomicUsize,
    rx_cap: usize,
    tx_credit: AtomicIsize,
    flags: AtomicU32,
    error: OnceLock<Error>,
    addrs: OnceLock<(SocketAddrV4, SocketAddrV4)>,
    mss: AtomicU32,
}

impl StreamShared {
    fn new(limits: &crate::runtime::Limits) -> StreamShared {
        StreamShared {
            core: SockCore::default(),
            rx: SegQueue::new(),
            rx_bytes: AtomicUsize::new(0),
            rx_cap: limits.stream_rx_bytes.max(1),
            tx_credit: AtomicIsize::new(limits.stream_tx_bytes.max(1) as isize),
            flags: AtomicU32::new(0),
            error: OnceLock::new(),
            addrs: OnceLock::new(),
            mss: AtomicU32::new(536),
        }
    }
    fn has(&self, f: u32) -> bool {
        self.flags.load(SeqCst) & f != 0
    }
}

/// A stream on its owner thread.
pub(crate) struct StreamEntry {
    pub h: TcpHandle,
    pub shared: Arc<StreamShared>,
    /// Frames handed over by writers, waiting for room in the stack's send buffer.
    pub pending: VecDeque<Frame>,
    /// Writers shut down the sending side: FIN after `pending`.
    pub shut_wr: bool,
    shut_sent: bool,
    /// The last handle went away: FIN after `pending`, then forget.
    pub closing: bool,
}

impl StreamEntry {
    fn new(h: TcpHandle, shared: Arc<StreamShared>) -> StreamEntry {
        StreamEntry {
            h,
            shared,
            pending: VecDeque::new(),
            shut_wr: false,
            shut_sent: false,
            closing: false,
        }
    }
}

/// Serves a stream (owner thread): writers' frames into the stack, received data out to the
/// readers, state and errors to the flags. True when the entry is done (closed by its handles).
pub(crate) fn serve_stream(
    q: &Arc<QueueShared>,
    e: &mut StreamEntry,
    stack: &mut Stack,
    now: Instant,
) -> bool {
    let s = e.shared.clone();
    // 1. Writers' data, in order.
    while let Some(f) = e.pending.pop_front() {
        let len = stack.pool().len(&f) as isize;
        match stack.tcp_send(e.h, f, now) {
            Ok(()) => {
                s.tx_credit.fetch_add(len, SeqCst);
            }
            Err((TcpSendError::WouldBlock | TcpSendError::PoolEmpty, f)) => {
                e.pending.push_front(f);
                break;
            }
            Err((err, f)) => {
                tracing::debug!(%err, "stream data dropped");
                stack.pool_mut().free(f);
                s.tx_credit.fetch_add(len, SeqCst);
            }
        }
    }
    if e.shut_wr && e.pending.is_empty() && !e.shut_sent {
        stack.tcp_shutdown(e.h, now);
        e.shut_sent = true;
    }
    // 2. Received data, while the readers' queue has room (else the stack's window closes).
    let mut got = false;
    let floor = stack.rx_floor();
    while s.rx_bytes.load(SeqCst) < s.rx_cap {
        // Data nobody reads must not take the frames writers need: beyond a shallow queue it
        // stays in the stack (whose window then closes) while the pool is at its receive floor.
        if s.rx_bytes.load(SeqCst) >= SHALLOW_RX_BYTES && stack.pool().available() <= floor {
            s.flags.fetch_or(WITHHELD, SeqCst);
            // A reader that emptied the queue meanwhile did not see the flag: serve it now.
            if s.rx_bytes.load(SeqCst) >= SHALLOW_RX_BYTES {
                break;
            }
            s.flags.fetch_and(!WITHHELD, SeqCst);
        }
        let Some(f) = stack.tcp_recv(e.h) else { break };
        if s.has(RD_SHUT) {
            stack.pool_mut().free(f);
            continue;
        }
        for b in split_chain(q, stack.pool_mut(), f) {
            q.counters.rx_bytes.fetch_add(b.len() as u64, SeqCst);
            s.rx_bytes.fetch_add(b.len(), SeqCst);
            s.rx.push(b);
            got = true;
        }
    }
    // 3. State and errors.
    let mut bits = Readiness(0);
    match stack.tcp_state(e.h) {
        None => {
            s.flags.fetch_or(GONE | RD_EOF, SeqCst);
            bits = bits | Readiness::READ_CLOSED;
        }
        Some(TcpState::SynSent | TcpState::SynReceived) => {}
        Some(_) => {
            if s.flags.fetch_or(CONNECTED, SeqCst) & CONNECTED == 0 {
                if let Some(a) = stack.tcp_addrs(e.h) {
                    let _ = s.addrs.set(a);
                }
                if let Some(i) = stack.tcp_info(e.h) {
                    s.mss.store(u32::from(i.mss), SeqCst);
                }
            }
        }
    }
    if let Some(err) = stack.tcp_take_error(e.h) {
        let _ = s.error.set(err.into());
        s.flags.fetch_or(RD_EOF, SeqCst);
        bits = bits | Readiness::ERROR | Readiness::READ_CLOSED;
    }
    if stack.tcp_recv_finished(e.h) {
        s.flags.fetch_or(RD_EOF, SeqCst);
        bits = bits | Readiness::READ_CLOSED;
    }
    if got {
        bits = bits | Readiness::READABLE;
    }
    if s.has(CONNECTED) && s.tx_credit.load(SeqCst) > 0 {
        bits = bits | Readiness::WRITABLE;
    }
    if bits.0 != 0 {
        s.core.set(bits);
    }
    // 4. Closed by its handles: the rest is the stack's (FIN, TIME-WAIT, or RST when data was
    // left unread, as close(2) does).
    if e.closing && e.pending.is_empty() {
        if s.rx_bytes.load(SeqCst) > 0 {
            stack.tcp_abort(e.h, now);
        } else {
            stack.tcp_close(e.h, now);
        }
        return true;
    }
    false
}

/// State shared by a listener's handles and the owner threads.
pub(crate) struct ListenShared {
    pub core: SockCore,
    /// Streams established and not yet taken by `accept`. Held as streams, so that those never
    /// taken (the listener closed first) close their connection when dropped.
    accepted: SegQueue<TcpStream>,
    count: AtomicUsize,
    backlog: usize,
}

/// A listener on one queue's owner thread.
pub(crate) struct ListenEntry {
    pub l: StackListener,
    pub shared: Arc<ListenShared>,
}

/// Moves established connections from the stack's accept queue to the listener's (owner thread).
pub(crate) fn serve_listener(owner: &mut Owner, stack: &mut Stack, id: SockId, now: Instant) {
    let Some(Entry::Listener(le)) = owner.socks.get(&id) else {
        return;
    };
    let (l, ls) = (le.l, le.shared.clone());
    let mut got = false;
    while ls.count.load(SeqCst) < ls.backlog {
        let Some(h) = stack.tcp_accept(l) else { break };
        let shared = Arc::new(StreamShared::new(&owner.limits));
        let sid = crate::queue::next_id();
        let mut entry = StreamEntry::new(h, shared.clone());
        serve_stream(&owner.q, &mut entry, stack, now);
        owner.insert(sid, Entry::Stream(entry));
        ls.accepted
            .push(TcpStream::from_accepted(shared, owner.q.clone(), sid));
        ls.count.fetch_add(1, SeqCst);
        got = true;
    }
    if got {
        ls.core.set(Readiness::READABLE);
    }
}

/// Options of a connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectOptions {
    /// TCP options: Nagle, congestion control, keepalive, buffer sizes.
    pub tcp: TcpOpts,
    /// Local address or port to use (`None`: the route's source address, an ephemeral port).
    pub local: Option<SocketAddrV4>,
    /// Give up after this long (`None`: the stack's SYN retries decide).
    pub timeout: Option<Duration>,
    /// Queue to connect from (`None`: round robin).
    pub queue: Option<usize>,
}

/// A handle to a stream's shared state; the last one's drop closes the stream.
struct StreamHandle {
    shared: Arc<StreamShared>,
    q: Arc<QueueShared>,
    id: SockId,
    /// Blocking reads' timeout in microseconds; 0: none.
    read_timeout_us: AtomicU64,
}

impl StreamHandle {
    fn new(shared: Arc<StreamShared>, q: Arc<QueueShared>, id: SockId) -> StreamHandle {
        StreamHandle {
            shared,
            q,
            id,
            read_timeout_us: AtomicU64::new(0),
        }
    }

    fn read_deadline(&self) -> Option<StdInstant> {
        match self.read_timeout_us.load(SeqCst) {
            0 => None,
            us => Some(StdInstant::now() + Duration::from_micros(us)),
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let _ = self.q.submit(Cmd::Close { id: self.id });
    }
}

/// A TCP connection. Handles are `Send + Sync`; [`TcpStream::split`] gives a reader and a writer
/// for two threads or tasks.
pub struct TcpStream {
    h: Arc<StreamHandle>,
    partial: Option<RecvBuf>,
}

impl core::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpStream")
            .field("addrs", &self.h.shared.addrs.get())
            .field("ready", &self.h.shared.core.ready())
            .finish()
    }
}

impl Source for TcpStream {
    fn core(&self) -> &SockCore {
        &self.h.shared.core
    }
}

/// Which directions [`TcpStream::shutdown`] closes.
pub use std::net::Shutdown;

static NEXT_QUEUE: AtomicUsize = AtomicUsize::new(0);

impl TcpStream {
    /// Connects to `remote` and waits until the connection is established.
    pub fn connect(rt: &Runtime, remote: SocketAddrV4) -> Result<TcpStream> {
        Self::connect_with(rt, remote, ConnectOptions::default())
    }

    /// Connects with options (timeout, local address, TCP options, queue).
    pub fn connect_with(
        rt: &Runtime,
        remote: SocketAddrV4,
        o: ConnectOptions,
    ) -> Result<TcpStream> {
        let s = Self::start_connect(rt, remote, o)?;
        let deadline = o.timeout.map(|t| StdInstant::now() + t);
        match crate::block::block_on(deadline, |w| s.poll_connected(&mut Context::from_waker(w))) {
            Ok(()) => Ok(s),
            Err(e) => {
                s.abort();
                Err(e)
            }
        }
    }

    /// Sends the SYN and returns at once; [`TcpStream::poll_connected`] tells when it is done.
    pub fn start_connect(
        rt: &Runtime,
        remote: SocketAddrV4,
        o: ConnectOptions,
    ) -> Result<TcpStream> {
        let qi = o.queue.unwrap_or_else(|| NEXT_QUEUE.fetch_add(1, SeqCst));
        let q = rt.queue(qi).clone();
        let shared = Arc::new(StreamShared::new(rt.limits()));
        let id = crate::queue::next_id();
        let sh = shared.clone();
        call_blocking(&q, move |stack, owner, now| {
            let h = stack.tcp_connect(remote, o.local, o.tcp, now)?;
            owner.insert(id, Entry::Stream(StreamEntry::new(h, sh)));
            Ok::<_, Error>(())
        })??;
        Ok(TcpStream {
            h: Arc::new(StreamHandle::new(shared, q, id)),
            partial: None,
        })
    }

    /// Ready when the connection is established, or with why it failed.
    pub fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let check = |s: &StreamShared| -> Option<Result<()>> {
            if let Some(e) = s.error.get() {
                return Some(Err(e.clone()));
            }
            if s.has(CONNECTED) {
                return Some(Ok(()));
            }
            if s.has(GONE) {
                return Some(Err(Error::ConnectionAborted));
            }
            None
        };
        let s = &self.h.shared;
        if let Some(r) = check(s) {
            return Poll::Ready(r);
        }
        s.core.register_write(cx.waker());
        s.core.register_read(cx.waker());
        if let Some(r) = check(s) {
            return Poll::Ready(r);
        }
        if let Err(e) = self.h.q.alive() {
            return Poll::Ready(Err(e));
        }
        Poll::Pending
    }

    fn from_accepted(shared: Arc<StreamShared>, q: Arc<QueueShared>, id: SockId) -> TcpStream {
        TcpStream {
            h: Arc::new(StreamHandle::new(shared, q, id)),
            partial: None,
        }
    }

    /// Local address.
    pub fn local_addr(&self) -> Result<SocketAddrV4> {
        self.h
            .shared
            .addrs
            .get()
            .map(|a| a.0)
            .ok_or(Error::NotConnected)
    }

    /// Remote address.
    pub fn peer_addr(&self) -> Result<SocketAddrV4> {
        self.h
            .shared
            .addrs
            .get()
            .map(|a| a.1)
            .ok_or(Error::NotConnected)
    }

    /// The queue this connection lives on.
    pub fn queue(&self) -> usize {
        self.h.q.index
    }

    /// Timeout of blocking reads (`recv`, `read`); `None`: wait for ever.
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        let us = t.map_or(0, |t| t.as_micros().clamp(1, u64::MAX as u128) as u64);
        self.h.read_timeout_us.store(us, SeqCst);
    }

    /// Current readiness.
    pub fn readiness(&self) -> Readiness {
        self.h.shared.core.ready()
    }

    /// Takes the next received buffer without waiting (zero copy). `Ok(None)` is the end of the
    /// stream.
    pub fn try_recv(&mut self) -> Result<Option<RecvBuf>> {
        if let Some(b) = self.partial.take() {
            return Ok(Some(b));
        }
        try_recv(&self.h)
    }

    /// Polls for the next received buffer (async form of [`TcpStream::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<RecvBuf>>> {
        if let Some(b) = self.partial.take() {
            return Poll::Ready(Ok(Some(b)));
        }
        poll_recv(&self.h, cx)
    }

    /// Waits for the next received buffer (zero copy). `Ok(None)` is the end of the stream.
    pub fn recv(&mut self) -> Result<Option<RecvBuf>> {
        if let Some(b) = self.partial.take() {
            return Ok(Some(b));
        }
        recv_blocking(&self.h)
    }

    /// Polls to read into `buf` (copy); 0 at the end of the stream.
    pub fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        poll_read_slice(&self.h, &mut self.partial, cx, buf)
    }

    /// A send buffer with room for one segment (zero copy: fill it and pass it to
    /// [`TcpStream::send_buf`]), waiting while the queue has no spare frame.
    pub fn alloc(&self) -> Result<SendBuf> {
        alloc_blocking(&self.h)
    }

    /// As [`TcpStream::alloc`] without waiting: `WouldBlock` when no spare frame is there now.
    pub fn try_alloc(&self) -> Result<SendBuf> {
        alloc(&self.h)
    }

    /// Hands a filled buffer over for sending (zero copy), waiting while the writers are too far
    /// ahead.
    pub fn send_buf(&self, buf: SendBuf) -> Result<()> {
        let mut buf = Some(buf);
        crate::block::block_on(None, |w| poll_send_buf(&self.h, &mut buf, w))
    }

    /// Polls to write `data` (copied into frames); returns the bytes taken.
    pub fn poll_write_slice(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize>> {
        poll_write(&self.h, cx, data)
    }

    /// Polls to write the slices in order (copied); returns the bytes taken. They are packed into
    /// as few frames as fit: a header and a body written together leave in one segment where a
    /// write each would send two.
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<Result<usize>> {
        poll_write_vectored(&self.h, cx, bufs)
    }

    /// Shuts one or both directions: `Write` sends FIN after the queued data; `Read` makes reads
    /// return the end of the stream and discards what arrives.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        shutdown(&self.h, how)
    }

    /// Aborts the connection: RST to the peer, queued data discarded (`SO_LINGER` 0).
    pub fn abort(&self) {
        let id = self.h.id;
        self.h
            .shared
            .flags
            .fetch_or(WR_SHUT | RD_SHUT | RD_EOF, SeqCst);
        let _ = self.h.shared.error.set(Error::ConnectionAborted);
        let _ = call_async(&self.h.q, move |stack, owner, now| {
            if let Some(Entry::Stream(e)) = owner.socks.get(&id) {
                stack.tcp_abort(e.h, now);
            }
            owner.forget(stack, id);
        });
    }

    /// Disables or enables Nagle's algorithm (`TCP_NODELAY`).
    pub fn set_nodelay(&self, on: bool) -> Result<()> {
        self.with_conn(move |stack, h, now| stack.tcp_set_nodelay(h, on, now))
    }

    /// Sets the congestion control (`TCP_CONGESTION`).
    pub fn set_congestion(&self, cc: Congestion) -> Result<()> {
        self.with_conn(move |stack, h, _| stack.tcp_set_congestion(h, cc))
    }

    /// The connection's internals (`TCP_INFO`).
    pub fn info(&self) -> Result<TcpInfo> {
        self.with_conn(|stack, h, _| stack.tcp_info(h))?
            .ok_or(Error::NotConnected)
    }

    fn with_conn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Stack, TcpHandle, Instant) -> T + Send + 'static,
    ) -> Result<T> {
        let id = self.h.id;
        call_blocking(&self.h.q, move |stack, owner, now| {
            match owner.socks.get(&id) {
                Some(Entry::Stream(e)) => Ok(f(stack, e.h, now)),
                _ => Err(Error::Closed),
            }
        })?
    }

    /// The connection's error, if it failed (`SO_ERROR`).
    pub fn take_error(&self) -> Option<Error> {
        self.h.shared.error.get().cloned()
    }

    /// A reader and a writer over the same connection, for two threads or tasks. The connection
    /// closes when both are dropped.
    pub fn split(self) -> (ReadHalf, WriteHalf) {
        (
            ReadHalf {
                h: self.h.clone(),
                partial: self.partial,
            },
            WriteHalf { h: self.h },
        )
    }

    /// Registers `waker` for read readiness.
    pub fn register_read_waker(&self, w: &std::task::Waker) {
        self.h.shared.core.register_read(w);
    }
}

fn try_recv(h: &StreamHandle) -> Result<Option<RecvBuf>> {
    let s = &h.shared;
    loop {
        if s.has(RD_SHUT) {
            return Ok(None);
        }
        if let Some(b) = s.rx.pop() {
            let before = s.rx_bytes.fetch_sub(b.len(), SeqCst);
            let withheld = s.flags.load(SeqCst) & WITHHELD != 0
                && s.flags.fetch_and(!WITHHELD, SeqCst) & WITHHELD != 0;
            if before >= s.rx_cap || withheld {
                // The owner stopped taking data from the stack: room again.
                let _ = h.q.submit(Cmd::Kick { id: h.id });
            }
            return Ok(Some(b));
        }
        s.core.clear(Readiness::READABLE);
        if !s.rx.is_empty() {
            s.core.set(Readiness::READABLE);
            continue;
        }
        if s.has(RD_EOF) {
            // Data first, then the error or the end of the stream.
            return match s.error.get() {
                Some(e) => Err(e.clone()),
                None => Ok(None),
            };
        }
        h.q.alive()?;
        return Err(Error::WouldBlock);
    }
}

fn poll_recv(h: &StreamHandle, cx: &mut Context<'_>) -> Poll<Result<Option<RecvBuf>>> {
    match try_recv(h) {
        Err(Error::WouldBlock) => {}
        r => return Poll::Ready(r),
    }
    h.shared.core.register_read(cx.waker());
    match try_recv(h) {
        Err(Error::WouldBlock) => Poll::Pending,
        r => Poll::Ready(r),
    }
}

fn recv_blocking(h: &StreamHandle) -> Result<Option<RecvBuf>> {
    crate::block::block_on(h.read_deadline(), |w| {
        poll_recv(h, &mut Context::from_waker(w))
    })
}

fn poll_read_slice(
    h: &StreamHandle,
    partial: &mut Option<RecvBuf>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<Result<usize>> {
    if buf.is_empty() {
        return Poll::Ready(Ok(0));
    }
    let mut n = 0;
    while n < buf.len() {
        let mut b = match partial.take() {
            Some(b) => b,
            None => match if n == 0 {
                poll_recv(h, cx)
            } else {
                Poll::Ready(try_recv(h))
            } {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Some(b))) => b,
                Poll::Ready(Ok(None)) => break,
                Poll::Ready(Err(Error::WouldBlock)) => break,
                Poll::Ready(Err(e)) if n == 0 => return Poll::Ready(Err(e)),
                Poll::Ready(Err(_)) => break,
            },
        };
        let k = b.len().min(buf.len() - n);
        buf[n..n + k].copy_from_slice(&b[..k]);
        n += k;
        b.advance(k);
        if !b.is_empty() {
            *partial = Some(b);
        }
    }
    Poll::Ready(Ok(n))
}

fn alloc(h: &StreamHandle) -> Result<SendBuf> {
    h.q.alive()?;
    let mss = h.shared.mss.load(SeqCst) as usize;
    match SendBuf::take(&h.q, mss) {
        Some(b) => Ok(b),
        None => {
            h.q.counters.spare_empty.fetch_add(1, SeqCst);
            h.shared.core.clear(Readiness::WRITABLE);
            h.q.submit(Cmd::Kick { id: h.id })?;
            Err(Error::WouldBlock)
        }
    }
}

fn alloc_blocking(h: &StreamHandle) -> Result<SendBuf> {
    crate::block::block_on(None, |w| match alloc(h) {
        Err(Error::WouldBlock) => {
            h.shared.core.register_write(w);
            match alloc(h) {
                Err(Error::WouldBlock) => Poll::Pending,
                r => Poll::Ready(r),
            }
        }
        r => Poll::Ready(r),
    })
}

fn write_error(h: &StreamHandle) -> Option<Error> {
    let s = &h.shared;
    if let Some(e) = s.error.get() {
        return Some(e.clone());
    }
    if s.has(WR_SHUT) || s.has(GONE) {
        return Some(Error::BrokenPipe);
    }
    if !s.has(CONNECTED) {
        return Some(Error::NotConnected);
    }
    h.q.alive().err()
}

/// Takes `len` bytes of write credit, or says why not (`WouldBlock` with the waker registered).
fn poll_credit(h: &StreamHandle, w: &std::task::Waker) -> Poll<Result<()>> {
    let s = &h.shared;
    for attempt in 0..2 {
        if let Some(e) = write_error(h) {
            return Poll::Ready(Err(e));
        }
        if s.tx_credit.load(SeqCst) > 0 {
            return Poll::Ready(Ok(()));
        }
        if attempt == 0 {
            s.core.clear(Readiness::WRITABLE);
            s.core.register_write(w);
        }
    }
    Poll::Pending
}

fn submit_buf(h: &StreamHandle, buf: SendBuf) -> Result<()> {
    let (frame, len) = buf.into_raw();
    h.shared.tx_credit.fetch_sub(len as isize, SeqCst);
    h.q.submit(Cmd::TcpSend {
        id: h.id,
        frame,
        len,
    })
}

fn poll_send_buf(
    h: &StreamHandle,
    buf: &mut Option<SendBuf>,
    w: &std::task::Waker,
) -> Poll<Result<()>> {
    let Some(b) = buf.take() else {
        return Poll::Ready(Err(Error::Closed));
    };
    if !Arc::ptr_eq(b.queue(), &h.q) {
        return Poll::Ready(Err(Error::InvalidInput("buffer of another queue")));
    }
    match poll_credit(h, w) {
        Poll::Ready(Ok(())) => Poll::Ready(submit_buf(h, b)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => {
            *buf = Some(b);
            Poll::Pending
        }
    }
}

fn poll_write(h: &StreamHandle, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize>> {
    poll_write_vectored(h, cx, &[IoSlice::new(data)])
}

/// Copies `bufs` in order into as few frames as they fit in: the slices of one vectored write
/// (an HTTP header and its body) share a segment rather than sending one each.
fn poll_write_vectored(
    h: &StreamHandle,
    cx: &mut Context<'_>,
    bufs: &[IoSlice<'_>],
) -> Poll<Result<usize>> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total == 0 {
        return Poll::Ready(write_error(h).map_or(Ok(0), Err));
    }
    let (mut n, mut i, mut off) = (0, 0, 0);
    while n < total {
        match poll_credit(h, cx.waker()) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) if n == 0 => return Poll::Ready(Err(e)),
            Poll::Pending if n == 0 => return Poll::Pending,
            _ => break,
        }
        let mut b = match alloc(h) {
            Ok(b) => b,
            Err(Error::WouldBlock) if n == 0 => {
                h.shared.core.register_write(cx.waker());
                // A spare frame may have come in between: try once more.
                match alloc(h) {
                    Ok(b) => b,
                    Err(Error::WouldBlock) => return Poll::Pending,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            Err(Error::WouldBlock) => break,
            Err(e) if n == 0 => return Poll::Ready(Err(e)),
            Err(_) => break,
        };
        // Fill this frame from the slices, moving on while each one fits whole.
        while i < bufs.len() {
            let k = b.put(&bufs[i][off..]);
            n += k;
            off += k;
            if off < bufs[i].len() {
                break; // the frame is full
            }
            i += 1;
            off = 0;
        }
        if let Err(e) = submit_buf(h, b) {
            return Poll::Ready(if n == 0 { Err(e) } else { Ok(n) });
        }
    }
    Poll::Ready(Ok(n))
}

fn shutdown(h: &StreamHandle, how: Shutdown) -> Result<()> {
    let id = h.id;
    let (rd, wr) = match how {
        Shutdown::Read => (true, false),
        Shutdown::Write => (false, true),
        Shutdown::Both => (true, true),
    };
    if rd {
        h.shared.flags.fetch_or(RD_SHUT, SeqCst);
        h.shared.core.set(Readiness::READ_CLOSED);
    }
    if wr && h.shared.flags.fetch_or(WR_SHUT, SeqCst) & WR_SHUT != 0 {
        return Ok(());
    }
    // Fire and forget (no wait: usable from a poll function); a closed stream has nothing to
    // shut.
    call_async(&h.q, move |_, owner, _| {
        if let Some(Entry::Stream(e)) = owner.socks.get_mut(&id) {
            e.shut_wr |= wr;
            owner.dirty.push(id);
        }
    })
    .map(drop)
}

/// The reading half of a [`TcpStream`].
pub struct ReadHalf {
    h: Arc<StreamHandle>,
    partial: Option<RecvBuf>,
}

impl core::fmt::Debug for ReadHalf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadHalf").finish()
    }
}

impl ReadHalf {
    /// Waits for the next received buffer (zero copy); `Ok(None)` at the end of the stream.
    pub fn recv(&mut self) -> Result<Option<RecvBuf>> {
        if let Some(b) = self.partial.take() {
            return Ok(Some(b));
        }
        recv_blocking(&self.h)
    }

    /// Polls to read into `buf` (copy); 0 at the end of the stream.
    pub fn poll_read_slice(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize>> {
        poll_read_slice(&self.h, &mut self.partial, cx, buf)
    }
}

/// The writing half of a [`TcpStream`].
pub struct WriteHalf {
    h: Arc<StreamHandle>,
}

impl core::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WriteHalf").finish()
    }
}

impl WriteHalf {
    /// A send buffer for one segment (zero copy), waiting while the queue has none spare.
    pub fn alloc(&self) -> Result<SendBuf> {
        alloc_blocking(&self.h)
    }

    /// Hands a filled buffer over for sending (zero copy).
    pub fn send_buf(&self, buf: SendBuf) -> Result<()> {
        let mut buf = Some(buf);
        crate::block::block_on(None, |w| poll_send_buf(&self.h, &mut buf, w))
    }

    /// Polls to write `data` (copied into frames).
    pub fn poll_write_slice(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize>> {
        poll_write(&self.h, cx, data)
    }

    /// Polls to write the slices in order, packed into shared frames (see
    /// [`TcpStream::poll_write_vectored`]).
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<Result<usize>> {
        poll_write_vectored(&self.h, cx, bufs)
    }

    /// Shuts the sending side (FIN after the queued data).
    pub fn shutdown(&self) -> Result<()> {
        shutdown(&self.h, Shutdown::Write)
    }
}

impl std::io::Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (h, partial) = (&self.h, &mut self.partial);
        Ok(crate::block::block_on(h.read_deadline(), |w| {
            poll_read_slice(h, partial, &mut Context::from_waker(w), buf)
        })?)
    }
}

impl std::io::Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (h, partial) = (&self.h, &mut self.partial);
        Ok(crate::block::block_on(h.read_deadline(), |w| {
            poll_read_slice(h, partial, &mut Context::from_waker(w), buf)
        })?)
    }
}

fn write_blocking(h: &StreamHandle, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    Ok(crate::block::block_on(None, |w| {
        poll_write_vectored(h, &mut Context::from_waker(w), bufs)
    })?)
}

/// `std::io::Write` for a stream or its writing half: writes wait for send credit and frames
/// (at least one byte taken), vectored writes share frames, and there is nothing to flush.
macro_rules! std_write {
    ($t:ty) => {
        impl std::io::Write for $t {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                write_blocking(&self.h, &[IoSlice::new(buf)])
            }
            fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
                write_blocking(&self.h, bufs)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}

std_write!(TcpStream);
std_write!(WriteHalf);

/// A listening socket on every queue.
pub struct TcpListener {
    shared: Arc<ListenShared>,
    binds: Vec<(Arc<QueueShared>, SockId)>,
    local: SocketAddrV4,
}

impl core::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .finish()
    }
}

impl Source for TcpListener {
    fn core(&self) -> &SockCore {
        &self.shared.core
    }
}

impl TcpListener {
    /// Listens on `local` (address `0.0.0.0`: every address) with an accept backlog of 128.
    pub fn bind(rt: &Runtime, local: SocketAddrV4) -> Result<TcpListener> {
        Self::bind_with(rt, local, 128, TcpOpts::default())
    }

    /// Listens with a backlog (per queue, in the stack and again in the listener's queue) and
    /// options that accepted connections inherit.
    pub fn bind_with(
        rt: &Runtime,
        local: SocketAddrV4,
        backlog: u32,
        opts: TcpOpts,
    ) -> Result<TcpListener> {
        if backlog == 0 {
            return Err(Error::InvalidInput("backlog 0"));
        }
        let shared = Arc::new(ListenShared {
            core: SockCore::default(),
            accepted: SegQueue::new(),
            count: AtomicUsize::new(0),
            backlog: backlog as usize * rt.queues(),
        });
        let mut binds: Vec<(Arc<QueueShared>, SockId)> = Vec::with_capacity(rt.queues());
        for q in rt.all_queues() {
            let id = crate::queue::next_id();
            let sh = shared.clone();
            let r = call_blocking(q, move |stack, owner, _| {
                let l = stack.tcp_listen(local, backlog, opts)?;
                owner.insert(id, Entry::Listener(ListenEntry { l, shared: sh }));
                Ok::<_, Error>(())
            })
            .and_then(|r| r);
            if let Err(e) = r {
                for (q, id) in binds {
                    let _ = q.submit(Cmd::Close { id });
                }
                return Err(e);
            }
            binds.push((q.clone(), id));
        }
        Ok(TcpListener {
            shared,
            binds,
            local,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Takes an established connection if one waits.
    pub fn try_accept(&self) -> Result<TcpStream> {
        let s = &self.shared;
        loop {
            if let Some(stream) = s.accepted.pop() {
                let before = s.count.fetch_sub(1, SeqCst);
                if before >= s.backlog {
                    for (q, id) in &self.binds {
                        let _ = q.submit(Cmd::Kick { id: *id });
                    }
                }
                return Ok(stream);
            }
            s.core.clear(Readiness::READABLE);
            if !s.accepted.is_empty() {
                s.core.set(Readiness::READABLE);
                continue;
            }
            for (q, _) in &self.binds {
                q.alive()?;
            }
            return Err(Error::WouldBlock);
        }
    }

    /// Polls for a connection (async form of [`TcpListener::accept`]).
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Result<TcpStream>> {
        match self.try_accept() {
            Err(Error::WouldBlock) => {}
            r => return Poll::Ready(r),
        }
        self.shared.core.register_read(cx.waker());
        match self.try_accept() {
            Err(Error::WouldBlock) => Poll::Pending,
            r => Poll::Ready(r),
        }
    }

    /// Waits for a connection.
    pub fn accept(&self) -> Result<TcpStream> {
        crate::block::block_on(None, |w| self.poll_accept(&mut Context::from_waker(w)))
    }

    /// Waits for a connection at most `timeout`.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<TcpStream> {
        let deadline = Some(StdInstant::now() + timeout);
        crate::block::block_on(deadline, |w| self.poll_accept(&mut Context::from_waker(w)))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        for (q, id) in &self.binds {
            let _ = q.submit(Cmd::Close { id: *id });
        }
    }
}
