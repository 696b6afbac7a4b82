//! The owner thread's side of the sockets: the table of sockets this queue serves, the commands
//! other threads send, and the loop step that moves data between the stack and the sockets'
//! lock-free queues.
//!
//! Only sockets that moved are served: the stack hands out the connections and UDP sockets that
//! changed (`tcp_take_ready`, `udp_take_ready`), commands name their socket, and a socket whose
//! application queue was full is served again when its reader makes room (`Cmd::Kick`). The cost
//! per event is a hash lookup, whatever the number of sockets.

use crate::queue::{Cmd, QueueShared, SockId};
use crate::ready::Readiness;
use crate::{tcp, udp};
use cnet_stack::tcp::{TcpHandle, TcpListener};
use cnet_stack::{Frame, Instant, Stack, UdpHandle};
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// A socket as its owner thread holds it.
pub(crate) enum Entry {
    Udp(udp::UdpEntry),
    Listener(tcp::ListenEntry),
    Stream(tcp::StreamEntry),
}

impl Entry {
    fn core(&self) -> &crate::ready::SockCore {
        match self {
            Entry::Udp(e) => &e.shared.core,
            Entry::Listener(e) => &e.shared.core,
            Entry::Stream(e) => &e.shared.core,
        }
    }
}

/// The owner thread's socket table and per-queue state.
pub struct Owner {
    pub(crate) q: Arc<QueueShared>,
    pub(crate) socks: HashMap<SockId, Entry>,
    pub(crate) tcp_ids: HashMap<TcpHandle, SockId>,
    pub(crate) listen_ids: HashMap<TcpListener, SockId>,
    pub(crate) udp_ids: HashMap<UdpHandle, SockId>,
    /// Sockets to serve before the next sleep.
    pub(crate) dirty: Vec<SockId>,
    /// Sockets that asked for send frames when there were none.
    frame_waiters: Vec<SockId>,
    spare_target: usize,
    ready_tcp: Vec<TcpHandle>,
    ready_listen: Vec<TcpListener>,
    ready_udp: Vec<UdpHandle>,
    /// Runtime-wide limits.
    pub(crate) limits: crate::runtime::Limits,
}

impl core::fmt::Debug for Owner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Owner")
            .field("queue", &self.q.index)
            .field("sockets", &self.socks.len())
            .finish()
    }
}

impl Owner {
    pub(crate) fn new(q: Arc<QueueShared>, limits: crate::runtime::Limits) -> Owner {
        Owner {
            spare_target: q.spare.capacity(),
            q,
            socks: HashMap::new(),
            tcp_ids: HashMap::new(),
            listen_ids: HashMap::new(),
            udp_ids: HashMap::new(),
            dirty: Vec::new(),
            frame_waiters: Vec::new(),
            ready_tcp: Vec::new(),
            ready_listen: Vec::new(),
            ready_udp: Vec::new(),
            limits,
        }
    }

    /// Sockets this queue serves.
    pub fn sockets(&self) -> usize {
        self.socks.len()
    }

    /// Handles the commands waiting (at most `max`); returns how many.
    pub(crate) fn handle_cmds(&mut self, stack: &mut Stack, now: Instant, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(cmd) = self.q.next_cmd() else { break };
            n += 1;
            match cmd {
                Cmd::Call(f) => f(stack, self, now),
                Cmd::TcpSend { id, frame, len } => {
                    let f = self.take_lent(stack, frame, len);
                    match self.socks.get_mut(&id) {
                        Some(Entry::Stream(e)) => {
                            e.pending.push_back(f);
                            self.dirty.push(id);
                        }
                        _ => stack.pool_mut().free(f),
                    }
                }
                Cmd::UdpSend {
                    id,
                    frame,
                    len,
                    src,
                    dst,
                } => {
                    let f = self.take_lent(stack, frame, len);
                    match self.socks.get(&id) {
                        Some(Entry::Udp(e)) => udp::send(&self.q, e, stack, f, (src, dst), now),
                        _ => stack.pool_mut().free(f),
                    }
                }
                Cmd::Kick { id } => {
                    // Room in its queue, or it waits for a send frame: serve it, and tell it
                    // when spare frames are there (at once if they already are).
                    self.dirty.push(id);
                    if !self.frame_waiters.contains(&id) {
                        self.frame_waiters.push(id);
                    }
                }
                Cmd::Close { id } => self.close(stack, id, now),
                Cmd::Config(ev) => stack.apply_config(ev, now),
            }
        }
        n
    }

    /// Takes back a frame lent for sending, with its data window set.
    fn take_lent(&self, stack: &mut Stack, frame: u32, len: u32) -> Frame {
        self.q.frames_out.fetch_sub(1, SeqCst);
        self.q.counters.tx_bytes.fetch_add(u64::from(len), SeqCst);
        let f = Frame::from_index(frame);
        let ok = stack
            .pool_mut()
            .set_window(&f, self.q.send_off, len as usize);
        debug_assert!(ok, "send length checked against the capacity");
        f
    }

    /// Frees frames other threads gave back; returns how many.
    pub(crate) fn reclaim(&mut self, stack: &mut Stack) -> usize {
        let mut n = 0;
        while let Some(i) = self.q.returned.pop() {
            stack.pool_mut().free(Frame::from_index(i));
            n += 1;
        }
        n
    }

    /// Tops up the spare frames lent for sending, keeping a reserve of the pool for receiving;
    /// wakes the sockets that waited for one.
    pub(crate) fn refill_spare(&mut self, stack: &mut Stack) {
        // Below 1/8 free, writers wait: the rest serves receiving (the driver's refills) and
        // TCP's reserves; received data that nobody reads stops higher, at `Stack::rx_floor`.
        let reserve = stack.pool().capacity() / 8;
        while self.q.spare.len() < self.spare_target && stack.pool().available() > reserve {
            let Some(f) = stack.pool_mut().alloc() else {
                break;
            };
            if let Err(i) = self.q.spare.push(f.into_index()) {
                stack.pool_mut().free(Frame::from_index(i));
                break;
            }
        }
        if !self.q.spare.is_empty() {
            for id in self.frame_waiters.drain(..) {
                if let Some(e) = self.socks.get(&id) {
                    e.core().set(Readiness::WRITABLE);
                }
            }
        }
    }

    /// Serves the sockets the stack says moved, and those marked dirty.
    pub(crate) fn serve_ready(&mut self, stack: &mut Stack, now: Instant) {
        stack.tcp_take_ready(&mut self.ready_tcp, &mut self.ready_listen);
        stack.udp_take_ready(&mut self.ready_udp);
        for h in self.ready_tcp.drain(..) {
            if let Some(id) = self.tcp_ids.get(&h) {
                self.dirty.push(*id);
            }
        }
        for l in self.ready_listen.drain(..) {
            if let Some(id) = self.listen_ids.get(&l) {
                self.dirty.push(*id);
            }
        }
        for h in self.ready_udp.drain(..) {
            if let Some(id) = self.udp_ids.get(&h) {
                self.dirty.push(*id);
            }
        }
        // A socket may be listed twice; serving is idempotent. Serving may mark others (accept).
        let mut i = 0;
        while i < self.dirty.len() {
            let id = self.dirty[i];
            self.serve(stack, id, now);
            i += 1;
        }
        self.dirty.clear();
    }

    fn serve(&mut self, stack: &mut Stack, id: SockId, now: Instant) {
        let Some(entry) = self.socks.get_mut(&id) else {
            return;
        };
        match entry {
            Entry::Udp(e) => udp::serve(&self.q, e, stack),
            Entry::Stream(e) => {
                if tcp::serve_stream(&self.q, e, stack, now) {
                    self.forget(stack, id);
                }
            }
            Entry::Listener(_) => tcp::serve_listener(self, stack, id, now),
        }
    }

    /// Registers a socket.
    pub(crate) fn insert(&mut self, id: SockId, e: Entry) {
        match &e {
            Entry::Udp(u) => {
                self.udp_ids.insert(u.h, id);
            }
            Entry::Listener(l) => {
                self.listen_ids.insert(l.l, id);
            }
            Entry::Stream(s) => {
                self.tcp_ids.insert(s.h, id);
            }
        }
        self.socks.insert(id, e);
    }

    /// Drops a socket from the table (its stack handle is already given back).
    pub(crate) fn forget(&mut self, stack: &mut Stack, id: SockId) {
        let Some(e) = self.socks.remove(&id) else {
            return;
        };
        match e {
            Entry::Udp(u) => {
                self.udp_ids.remove(&u.h);
            }
            Entry::Listener(l) => {
                self.listen_ids.remove(&l.l);
            }
            Entry::Stream(mut s) => {
                self.tcp_ids.remove(&s.h);
                for f in s.pending.drain(..) {
                    stack.pool_mut().free(f);
                }
            }
        }
    }

    /// The last handle of a socket went away.
    pub(crate) fn close(&mut self, stack: &mut Stack, id: SockId, now: Instant) {
        match self.socks.get_mut(&id) {
            None => {}
            Some(Entry::Udp(u)) => {
                stack.udp_close(u.h);
                self.forget(stack, id);
            }
            Some(Entry::Listener(l)) => {
                stack.tcp_unlisten(l.l, now);
                self.forget(stack, id);
            }
            Some(Entry::Stream(s)) => {
                // Data the application wrote still goes out, then FIN (as close(2) does).
                s.closing = true;
                self.dirty.push(id);
            }
        }
    }

    /// The owner thread ends: every socket reports it, frames go back to the pool.
    pub(crate) fn shutdown(&mut self, stack: &mut Stack) {
        for (_, e) in self.socks.drain() {
            e.core().set(Readiness::ERROR);
            e.core().wake_all();
            if let Entry::Stream(mut s) = e {
                for f in s.pending.drain(..) {
                    stack.pool_mut().free(f);
                }
            }
        }
        self.tcp_ids.clear();
        self.listen_ids.clear();
        self.udp_ids.clear();
        // Commands that raced with the stop: dropping them closes their replies.
        while let Some(cmd) = self.q.next_cmd() {
            match cmd {
                Cmd::TcpSend { frame, len, .. } | Cmd::UdpSend { frame, len, .. } => {
                    let f = self.take_lent(stack, frame, len);
                    stack.pool_mut().free(f);
                }
                other => drop(other),
            }
        }
        while let Some(i) = self.q.spare.pop() {
            stack.pool_mut().free(Frame::from_index(i));
        }
        self.reclaim(stack);
    }
}
