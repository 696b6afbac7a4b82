//! UDP sockets.
//!
//! Queues: a socket binds its port on every queue's stack (a datagram may arrive on any queue:
//! RSS picks it), and every queue delivers into the socket's one receive queue. It sends through
//! its home queue, chosen by its port (`port % queues`), so one socket's datagrams leave in order.

use crate::buf::{Datagram, SendBuf};
use crate::error::{Error, Result};
use crate::queue::{call_blocking, Cmd, QueueShared, SockId};
use crate::ready::{Readiness, SockCore, Source};
use crate::runtime::Runtime;
use cnet_stack::udp::UDP_SHALLOW_QUEUE;
use cnet_stack::{Frame, IcmpError, Instant, Stack, UdpHandle, UdpOptions};
use crossbeam_queue::SegQueue;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

/// State shared by a UDP socket's handles and the owner threads that serve it.
pub(crate) struct UdpShared {
    pub core: SockCore,
    rx: SegQueue<Datagram>,
    rx_len: AtomicUsize,
    rx_cap: usize,
    /// An owner left datagrams in its stack because the pool was at its receive floor: the next
    /// read kicks the owners.
    withheld: AtomicBool,
    errors: SegQueue<IcmpError>,
    /// Datagrams senders may still hand over.
    tx_credit: AtomicIsize,
    /// Credit a waiting all-or-nothing batch sender needs ([`UdpSocket::try_send_many`]): the
    /// owner sets WRITABLE when the credit climbs back to it (0: nobody waits for a batch).
    tx_want: AtomicIsize,
    /// Connected peer: `ip << 16 | port`, 0 when none.
    peer: AtomicU64,
    /// The options last set ([`UdpSocket::set_options`]): `dont_frag << 8 | tos`.
    opts: std::sync::atomic::AtomicU16,
}

/// A UDP socket on one queue's owner thread.
pub(crate) struct UdpEntry {
    pub h: UdpHandle,
    pub shared: Arc<UdpShared>,
}

/// Moves received datagrams and errors from the stack to the socket (owner thread).
pub(crate) fn serve(q: &Arc<QueueShared>, e: &UdpEntry, stack: &mut Stack) {
    let s = &e.shared;
    let mut got = false;
    let floor = stack.rx_floor();
    while s.rx_len.load(SeqCst) < s.rx_cap {
        // Beyond a shallow queue, received frames are lent only above the pool's receive floor
        // (`Stack::rx_floor`): datagrams nobody reads must not take the frames the socket's own
        // senders need (a QUIC endpoint that sends before it reads would wait for ever).
        if s.rx_len.load(SeqCst) >= UDP_SHALLOW_QUEUE && stack.pool().available() <= floor {
            if stack.udp_pending(e.h) == 0 {
                break;
            }
            s.withheld.store(true, SeqCst);
            // A reader that emptied the queue meanwhile did not see the flag: serve it now.
            // (It reads `withheld` after taking a datagram; this reads `rx_len` after setting it.)
            if s.rx_len.load(SeqCst) >= UDP_SHALLOW_QUEUE {
                break;
            }
            s.withheld.store(false, SeqCst);
        }
        let Some(d) = stack.udp_recv(e.h) else { break };
        q.counters.rx_bytes.fetch_add(d.len as u64, SeqCst);
        let dg = Datagram::lend(q, stack.pool_mut(), d.frame, d.src, d.dst, d.tos);
        s.rx.push(dg);
        s.rx_len.fetch_add(1, SeqCst);
        got = true;
    }
    while let Some(err) = stack.udp_take_error(e.h) {
        s.errors.push(err);
        s.core.set(Readiness::ERROR);
    }
    if got {
        s.core.set(Readiness::READABLE);
    }
}

/// Sends one datagram handed over by an application (owner thread), from `src` when given.
pub(crate) fn send(
    q: &QueueShared,
    e: &UdpEntry,
    stack: &mut Stack,
    f: Frame,
    (src, dst): (Option<Ipv4Addr>, SocketAddrV4),
    now: Instant,
) {
    let r = match src {
        Some(src) => stack.udp_send_from(e.h, f, src, dst, now),
        None => stack.udp_send(e.h, f, dst, now),
    };
    if let Err(err) = r {
        tracing::debug!(%dst, %err, "UDP send failed");
        q.counters.udp_send_errors.fetch_add(1, SeqCst);
    }
    let credit = e.shared.tx_credit.fetch_add(1, SeqCst) + 1;
    if credit == 1 || credit == e.shared.tx_want.load(SeqCst) {
        e.shared.core.set(Readiness::WRITABLE);
    }
}

/// A UDP socket. `Send + Sync`: use it from any thread, or clone it (`Arc`) across threads.
pub struct UdpSocket {
    shared: Arc<UdpShared>,
    /// (queue, socket id on that queue) for every queue it is bound on; the first is home.
    binds: Vec<(Arc<QueueShared>, SockId)>,
    local: SocketAddrV4,
    max_payload: usize,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl core::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local", &self.local)
            .field("ready", &self.shared.core.ready())
            .finish()
    }
}

impl Source for UdpSocket {
    fn core(&self) -> &SockCore {
        &self.shared.core
    }
}

fn encode(a: SocketAddrV4) -> u64 {
    (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port()) | (1 << 48)
}

fn decode(v: u64) -> Option<SocketAddrV4> {
    (v != 0).then(|| SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16))
}

impl UdpSocket {
    /// Binds `local` (address `0.0.0.0`: every address; port 0: an ephemeral port, the same on
    /// every queue).
    pub fn bind(rt: &Runtime, local: SocketAddrV4) -> Result<UdpSocket> {
        let l = *rt.limits();
        let shared = Arc::new(UdpShared {
            core: SockCore::default(),
            rx: SegQueue::new(),
            rx_len: AtomicUsize::new(0),
            rx_cap: l.udp_rx_datagrams.max(1),
            withheld: AtomicBool::new(false),
            errors: SegQueue::new(),
            tx_credit: AtomicIsize::new(l.udp_tx_datagrams.max(1) as isize),
            tx_want: AtomicIsize::new(0),
            peer: AtomicU64::new(0),
            opts: std::sync::atomic::AtomicU16::new(0),
        });
        shared.core.set(Readiness::WRITABLE);
        // The port is picked on queue 0 when it is 0, then bound on the others.
        let mut binds = Vec::with_capacity(rt.queues());
        let mut addr = local;
        let mut max_payload = 0;
        for q in rt.all_queues() {
            let id = crate::queue::next_id();
            let sh = shared.clone();
            let res = call_blocking(q, move |stack, owner, _| {
                let h = stack.udp_bind(addr)?;
                let bound = stack.udp_local_addr(h).expect("just bound");
                owner.insert(id, crate::owner::Entry::Udp(UdpEntry { h, shared: sh }));
                Ok::<_, Error>((bound, stack.mtu() - 28))
            })
            .and_then(|r| r);
            match res {
                Ok((bound, mp)) => {
                    addr = bound;
                    max_payload = mp;
                    binds.push((q.clone(), id));
                }
                Err(e) => {
                    for (q, id) in binds {
                        let _ = q.submit(Cmd::Close { id });
                    }
                    return Err(e);
                }
            }
        }
        // Home queue by port, so one socket's datagrams leave in order from one queue.
        let home = addr.port() as usize % binds.len();
        binds.swap(0, home);
        Ok(UdpSocket {
            shared,
            binds,
            local: addr,
            max_payload,
            read_timeout: None,
            write_timeout: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Sets a default peer for [`UdpSocket::send`] and [`UdpSocket::recv`] (which then only
    /// return its datagrams, as `connect(2)` does).
    pub fn connect(&self, peer: SocketAddrV4) -> Result<()> {
        if peer.ip().is_unspecified() || peer.port() == 0 {
            return Err(Error::InvalidInput("peer address"));
        }
        self.shared.peer.store(encode(peer), SeqCst);
        Ok(())
    }

    /// The connected peer.
    pub fn peer_addr(&self) -> Result<SocketAddrV4> {
        decode(self.shared.peer.load(SeqCst)).ok_or(Error::NotConnected)
    }

    /// Sets the IP options of the datagrams sent from now on: Don't Fragment (a datagram above
    /// the MTU then fails instead of being fragmented) and the TOS byte (DSCP and ECN, RFC 3168).
    /// Does not wait: the change is queued ahead of later sends, so it applies to them in order.
    pub fn set_options(&self, opts: UdpOptions) -> Result<()> {
        for (q, id) in &self.binds {
            let id = *id;
            q.submit(Cmd::Call(Box::new(move |stack, owner, _now| {
                if let Some(crate::owner::Entry::Udp(e)) = owner.socks.get(&id) {
                    stack.udp_set_options(e.h, opts);
                }
            })))?;
        }
        self.shared
            .opts
            .store(u16::from(opts.dont_frag) << 8 | u16::from(opts.tos), SeqCst);
        Ok(())
    }

    /// The options last set with [`UdpSocket::set_options`] (default: no DF, TOS 0).
    pub fn options(&self) -> UdpOptions {
        let v = self.shared.opts.load(SeqCst);
        UdpOptions {
            dont_frag: v >> 8 != 0,
            tos: v as u8,
        }
    }

    /// Timeout of the blocking receive calls (`None`: wait for ever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// Timeout of the blocking send calls (`alloc`, `send_to`, `send_buf_to`, `send_many`...):
    /// `TimedOut` once a call waited that long for a frame or send credit (`None`: wait for
    /// ever, as `SO_SNDTIMEO` 0).
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    fn write_deadline(&self) -> Option<StdInstant> {
        self.write_timeout.map(|t| StdInstant::now() + t)
    }

    /// The largest payload sent without IP fragmentation (larger ones are fragmented, up to
    /// 65 507 bytes).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    fn home(&self) -> &Arc<QueueShared> {
        &self.binds[0].0
    }

    /// Takes the next datagram if one is waiting.
    pub fn try_recv_from(&self) -> Result<Datagram> {
        let s = &self.shared;
        loop {
            match s.rx.pop() {
                Some(d) => {
                    let before = s.rx_len.fetch_sub(1, SeqCst);
                    let withheld = s.withheld.load(SeqCst) && s.withheld.swap(false, SeqCst);
                    if before >= s.rx_cap || withheld {
                        // The owner threads stopped taking from their stacks: ask again.
                        for (q, id) in &self.binds {
                            let _ = q.submit(Cmd::Kick { id: *id });
                        }
                    }
                    if let Some(p) = decode(s.peer.load(SeqCst)) {
                        if d.src != p {
                            continue;
                        }
                    }
                    return Ok(d);
                }
                None => {
                    s.core.clear(Readiness::READABLE);
                    if !s.rx.is_empty() {
                        s.core.set(Readiness::READABLE);
                        continue;
                    }
                    self.home().alive()?;
                    return Err(Error::WouldBlock);
                }
            }
        }
    }

    /// Polls for a datagram (async form of [`UdpSocket::recv_from`]).
    pub fn poll_recv_from(&self, cx: &mut Context<'_>) -> Poll<Result<Datagram>> {
        match self.try_recv_from() {
            Err(Error::WouldBlock) => {}
            r => return Poll::Ready(r),
        }
        self.shared.core.register_read(cx.waker());
        match self.try_recv_from() {
            Err(Error::WouldBlock) => Poll::Pending,
            r => Poll::Ready(r),
        }
    }

    /// Waits for the next datagram (zero copy: the payload stays in its frame).
    pub fn recv_from(&self) -> Result<Datagram> {
        let deadline = self.read_timeout.map(|t| StdInstant::now() + t);
        crate::block::block_on(deadline, |w| {
            self.poll_recv_from(&mut Context::from_waker(w))
        })
    }

    /// Receives into `buf` (copy); returns the length copied and the sender. A datagram longer
    /// than `buf` is cut, as `recv(2)` does.
    pub fn recv_from_slice(&self, buf: &mut [u8]) -> Result<(usize, SocketAddrV4)> {
        let d = self.recv_from()?;
        Ok((d.copy_to(buf), d.src))
    }

    /// Receives from the connected peer into `buf` (copy).
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        self.peer_addr()?;
        Ok(self.recv_from_slice(buf)?.0)
    }

    /// Takes up to `max` waiting datagrams at once (no wait); returns how many.
    pub fn recv_burst(&self, out: &mut Vec<Datagram>, max: usize) -> Result<usize> {
        let mut n = 0;
        while n < max {
            match self.try_recv_from() {
                Ok(d) => {
                    out.push(d);
                    n += 1;
                }
                Err(Error::WouldBlock) => break,
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }

    /// A send buffer from the home queue's pool with room for `max_payload` bytes (zero copy:
    /// fill it and pass it to [`UdpSocket::send_buf_to`]), waiting while the queue has no spare
    /// frame (the pool is short: buffers held elsewhere).
    pub fn alloc(&self) -> Result<SendBuf> {
        self.alloc_until(self.write_deadline())
    }

    /// [`UdpSocket::alloc`], waiting until `deadline` at most.
    fn alloc_until(&self, deadline: Option<StdInstant>) -> Result<SendBuf> {
        crate::block::block_on(deadline, |w| match self.try_alloc() {
            Err(Error::WouldBlock) => {
                self.shared.core.register_write(w);
                match self.try_alloc() {
                    Err(Error::WouldBlock) => Poll::Pending,
                    r => Poll::Ready(r),
                }
            }
            r => Poll::Ready(r),
        })
    }

    /// As [`UdpSocket::alloc`], without waiting: `WouldBlock` when no spare frame is there now
    /// (the socket turns writable when one is).
    pub fn try_alloc(&self) -> Result<SendBuf> {
        let q = self.home();
        q.alive()?;
        match SendBuf::take(q, self.max_payload) {
            Some(b) => Ok(b),
            None => {
                q.counters.spare_empty.fetch_add(1, SeqCst);
                self.shared.core.clear(Readiness::WRITABLE);
                q.submit(Cmd::Kick {
                    id: self.binds[0].1,
                })?;
                Err(Error::WouldBlock)
            }
        }
    }

    fn take_credit(&self) -> Result<()> {
        let s = &self.shared;
        if s.tx_credit.fetch_sub(1, SeqCst) <= 0 {
            s.tx_credit.fetch_add(1, SeqCst);
            s.core.clear(Readiness::WRITABLE);
            if s.tx_credit.load(SeqCst) > 0 {
                s.core.set(Readiness::WRITABLE);
            }
            return Err(Error::WouldBlock);
        }
        Ok(())
    }

    /// Sends a filled buffer to `dst` without copying (no wait). `WouldBlock` when the senders
    /// are too far ahead of the owner thread: the buffer comes back with it (and with
    /// `InvalidInput` for a buffer of another queue); with `RuntimeDown` it is gone.
    pub fn try_send_buf_to(
        &self,
        buf: SendBuf,
        dst: SocketAddrV4,
    ) -> core::result::Result<(), (Error, Option<SendBuf>)> {
        self.try_send_buf(buf, None, dst)
    }

    /// As [`UdpSocket::try_send_buf_to`], from source address `src` (`IP_PKTINFO` on
    /// `sendmsg`): a socket bound to every address answers from the address a request came to
    /// ([`Datagram::dst`]). `src` must be the socket's own address when it is bound to one
    /// (`InvalidInput` at once); an address that is not the interface's is refused by the owner
    /// thread, which counts it in `udp_send_errors`.
    pub fn try_send_buf_from(
        &self,
        buf: SendBuf,
        src: Ipv4Addr,
        dst: SocketAddrV4,
    ) -> core::result::Result<(), (Error, Option<SendBuf>)> {
        if let Err(e) = self.check_src(src) {
            return Err((e, Some(buf)));
        }
        self.try_send_buf(buf, Some(src), dst)
    }

    /// The arguments of a `send_many*` call: a segment size that fits one frame, and `src`.
    fn check_many(&self, segment_size: usize, src: Option<Ipv4Addr>) -> Result<()> {
        if segment_size == 0 || segment_size > self.max_payload {
            return Err(Error::InvalidInput("segment size"));
        }
        src.map_or(Ok(()), |src| self.check_src(src))
    }

    /// `InvalidInput` when the socket is bound to one address and `src` is another.
    fn check_src(&self, src: Ipv4Addr) -> Result<()> {
        let bound = *self.local.ip();
        if !bound.is_unspecified() && bound != src {
            return Err(Error::InvalidInput("source address is not the socket's"));
        }
        Ok(())
    }

    fn try_send_buf(
        &self,
        buf: SendBuf,
        src: Option<Ipv4Addr>,
        dst: SocketAddrV4,
    ) -> core::result::Result<(), (Error, Option<SendBuf>)> {
        if !Arc::ptr_eq(buf.queue(), self.home()) {
            return Err((Error::InvalidInput("buffer of another queue"), Some(buf)));
        }
        if let Err(e) = self.home().alive() {
            return Err((e, None));
        }
        if let Err(e) = self.take_credit() {
            return Err((e, Some(buf)));
        }
        let (frame, len) = buf.into_raw();
        self.home()
            .submit(Cmd::UdpSend {
                id: self.binds[0].1,
                frame,
                len,
                src,
                dst,
            })
            .map_err(|e| (e, None))
    }

    /// Sends a filled buffer to `dst` without copying, waiting for room.
    pub fn send_buf_to(&self, buf: SendBuf, dst: SocketAddrV4) -> Result<()> {
        self.send_buf_until(buf, None, dst, self.write_deadline())
    }

    /// As [`UdpSocket::send_buf_to`], from source address `src` (see
    /// [`UdpSocket::try_send_buf_from`]).
    pub fn send_buf_from(&self, buf: SendBuf, src: Ipv4Addr, dst: SocketAddrV4) -> Result<()> {
        self.check_src(src)?;
        self.send_buf_until(buf, Some(src), dst, self.write_deadline())
    }

    /// Sends `buf`, waiting for send credit until `deadline` at most.
    fn send_buf_until(
        &self,
        buf: SendBuf,
        src: Option<Ipv4Addr>,
        dst: SocketAddrV4,
        deadline: Option<StdInstant>,
    ) -> Result<()> {
        let mut buf = Some(buf);
        crate::block::block_on(deadline, |w| {
            let Some(b) = buf.take() else {
                return Poll::Ready(Err(Error::Closed));
            };
            match self.try_send_buf(b, src, dst) {
                Ok(()) => Poll::Ready(Ok(())),
                Err((Error::WouldBlock, b)) => {
                    self.shared.core.register_write(w);
                    buf = b;
                    Poll::Pending
                }
                Err((e, _)) => Poll::Ready(Err(e)),
            }
        })
    }

    /// Polls to send `data` to `dst` (copy into a pool frame); the async form of `send_to`.
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        data: &[u8],
        dst: SocketAddrV4,
    ) -> Poll<Result<usize>> {
        if data.len() > 65_507 {
            return Poll::Ready(Err(Error::MessageTooLarge));
        }
        if data.len() > self.max_payload {
            // Fragmented: built by the owner from a copy (the rare path).
            let v = data.to_vec();
            let id = self.binds[0].1;
            let r = call_blocking(self.home(), move |stack, owner, now| {
                match owner.socks.get(&id) {
                    Some(crate::owner::Entry::Udp(e)) => stack
                        .udp_send_slice(e.h, &v, dst, now)
                        .map_err(|_| Error::HostUnreachable),
                    _ => Err(Error::Closed),
                }
            });
            return Poll::Ready(r.and_then(|r| r).map(|_| data.len()));
        }
        let attempt = |me: &Self| -> Result<()> {
            let mut b = me.try_alloc()?;
            b.put(data);
            // On WouldBlock the buffer is dropped: its frame goes back to the queue.
            me.try_send_buf_to(b, dst).map_err(|(e, _)| e)
        };
        match attempt(self) {
            Err(Error::WouldBlock) => {}
            r => return Poll::Ready(r.map(|_| data.len())),
        }
        self.shared.core.register_write(cx.waker());
        match attempt(self) {
            Err(Error::WouldBlock) => Poll::Pending,
            r => Poll::Ready(r.map(|_| data.len())),
        }
    }

    /// Sends `data` to `dst` (copied into a pool frame; fragmented above the MTU), waiting for
    /// room.
    pub fn send_to(&self, data: &[u8], dst: SocketAddrV4) -> Result<usize> {
        crate::block::block_on(self.write_deadline(), |w| {
            self.poll_send_to(&mut Context::from_waker(w), data, dst)
        })
    }

    /// Sends to the connected peer.
    pub fn send(&self, data: &[u8]) -> Result<usize> {
        let p = self.peer_addr()?;
        self.send_to(data, p)
    }

    /// Sends filled buffers, each to its destination, in order (one wake-up of the owner for the
    /// burst).
    pub fn send_burst(
        &self,
        bufs: impl IntoIterator<Item = (SendBuf, SocketAddrV4)>,
    ) -> Result<usize> {
        let mut n = 0;
        for (b, dst) in bufs {
            self.send_buf_to(b, dst)?;
            n += 1;
        }
        Ok(n)
    }

    /// Sends many datagrams in one call, as `sendmsg` with `UDP_SEGMENT` does for QUIC: `data`
    /// is cut into datagrams of `segment_size` bytes (the last may be shorter), each copied into
    /// its own frame, all to `dst`. Returns the datagrams sent.
    pub fn send_many(&self, data: &[u8], segment_size: usize, dst: SocketAddrV4) -> Result<usize> {
        self.send_many_from(data, segment_size, None, dst)
    }

    /// As [`UdpSocket::send_many`], from source address `src` when given (see
    /// [`UdpSocket::try_send_buf_from`]).
    pub fn send_many_from(
        &self,
        data: &[u8],
        segment_size: usize,
        src: Option<Ipv4Addr>,
        dst: SocketAddrV4,
    ) -> Result<usize> {
        self.check_many(segment_size, src)?;
        // One deadline for the whole call, not one per datagram.
        let deadline = self.write_deadline();
        let mut n = 0;
        for seg in data.chunks(segment_size) {
            let mut b = self.alloc_until(deadline)?;
            b.put(seg);
            self.send_buf_until(b, src, dst, deadline)?;
            n += 1;
        }
        Ok(n)
    }

    /// As [`UdpSocket::send_many`] without waiting and all or nothing: `WouldBlock`, with nothing
    /// sent, when the home queue has not the spare frames or the send credit for every datagram
    /// now; the socket is then not writable until it has (a waker registered for writing is
    /// woken then). Batches of more datagrams than `Limits::udp_tx_datagrams` never fit.
    pub fn try_send_many(
        &self,
        data: &[u8],
        segment_size: usize,
        dst: SocketAddrV4,
    ) -> Result<usize> {
        self.try_send_many_from(data, segment_size, None, dst)
    }

    /// As [`UdpSocket::try_send_many`], from source address `src` when given (see
    /// [`UdpSocket::try_send_buf_from`]): QUIC's transmits carry the address to answer from.
    pub fn try_send_many_from(
        &self,
        data: &[u8],
        segment_size: usize,
        src: Option<Ipv4Addr>,
        dst: SocketAddrV4,
    ) -> Result<usize> {
        self.check_many(segment_size, src)?;
        let n = data.len().div_ceil(segment_size);
        let mut bufs = smallvec::SmallVec::<[SendBuf; 16]>::with_capacity(n);
        for seg in data.chunks(segment_size) {
            // On WouldBlock the buffers taken so far are dropped: their frames go back.
            let mut b = self.try_alloc()?;
            b.put(seg);
            bufs.push(b);
        }
        let s = &self.shared;
        let want = n as isize;
        if s.tx_credit.fetch_sub(want, SeqCst) < want {
            s.tx_credit.fetch_add(want, SeqCst);
            s.tx_want.store(want, SeqCst);
            s.core.clear(Readiness::WRITABLE);
            if s.tx_credit.load(SeqCst) >= want {
                s.core.set(Readiness::WRITABLE);
            }
            return Err(Error::WouldBlock);
        }
        for b in bufs {
            let (frame, len) = b.into_raw();
            self.home().submit(Cmd::UdpSend {
                id: self.binds[0].1,
                frame,
                len,
                src,
                dst,
            })?;
        }
        Ok(n)
    }

    /// Takes the oldest ICMP error reported for datagrams this socket sent.
    pub fn take_error(&self) -> Option<IcmpError> {
        let e = self.shared.errors.pop();
        if self.shared.errors.is_empty() {
            self.shared.core.clear(Readiness::ERROR);
        }
        e
    }

    /// Current readiness.
    pub fn readiness(&self) -> Readiness {
        self.shared.core.ready()
    }

    /// Registers `waker` for when the socket becomes readable.
    pub fn register_read_waker(&self, waker: &std::task::Waker) {
        self.shared.core.register_read(waker);
    }

    /// Registers `waker` for when the socket becomes writable.
    pub fn register_write_waker(&self, waker: &std::task::Waker) {
        self.shared.core.register_write(waker);
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        for (q, id) in &self.binds {
            let _ = q.submit(Cmd::Close { id: *id });
        }
    }
}
