//! The sync thread: two netlink sockets, the dumps, the multicast loop, fan-out to subscribers.
//!
//! Sockets: `mcast` is subscribed to `RTNLGRP_LINK`, `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV4_ROUTE`
//! and `RTNLGRP_NEIGH` *before* the first dump, so no change falls between dump and subscription;
//! `dump` carries request/response dumps. Notifications queued while a dump runs are decoded after
//! it: every event is keyed (last writer wins per key), so replaying them over the newer dump
//! converges on the kernel's state.
//!
//! The loop `poll(2)`s on `mcast` and an eventfd used to stop it; it reads datagrams until
//! `EAGAIN`, decodes each under the hub lock and broadcasts the events at once, then performs at
//! most one re-dump if the decoder or an `ENOBUFS` asked for it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cnet_stack::ConfigEvent;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::{RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::decode::{frames, parse_rtnl, Decoder, Dump, Resync};
use crate::SyncError;

/// Receive buffer for datagrams; a datagram is at most one page-ish for notifications and up to
/// 32 KiB for dump parts. `MSG_TRUNC` detects anything bigger.
const RECV_BUF: usize = 256 * 1024;
/// How often a dump is retried when the kernel flags it inconsistent (`NLM_F_DUMP_INTR`).
const DUMP_RETRIES: usize = 8;
/// A dump reply that does not come within this time fails the dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(5);

/// State shared by the sync thread and the [`crate::NetlinkSync`] handle.
pub(crate) struct Hub {
    pub decoder: Decoder,
    pub subs: Vec<Sender<ConfigEvent>>,
    pub running: bool,
}

impl Hub {
    pub fn broadcast(&mut self, events: &[ConfigEvent]) {
        if events.is_empty() {
            return;
        }
        self.subs
            .retain(|tx| events.iter().all(|e| tx.send(e.clone()).is_ok()));
    }
}

pub(crate) fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    // A panic while holding the lock leaves the hub consistent enough to read: recover.
    hub.lock().unwrap_or_else(|e| e.into_inner())
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: pointer and length describe a live c_int.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets the receive buffer to `bytes`, past `rmem_max` when privileged (`SO_RCVBUFFORCE`).
fn set_rcvbuf(fd: RawFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v).is_err() {
        if let Err(e) = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v) {
            tracing::warn!(error = %e, "cannot set netlink receive buffer");
        }
    }
}

/// `recv(2)` with `MSG_TRUNC`: returns the datagram's full length, which may exceed `buf`.
fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is a live, writable slice of the given length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The sync thread's sockets.
pub(crate) struct Io {
    mcast: Socket,
    dump: Socket,
    stop: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Io {
    /// Opens and subscribes both sockets in the calling thread's network namespace.
    pub fn open(rcvbuf: usize, stop: OwnedFd) -> Result<Io, SyncError> {
        let mut mcast = Socket::new(NETLINK_ROUTE).map_err(SyncError::Socket)?;
        mcast.bind_auto().map_err(SyncError::Socket)?;
        set_rcvbuf(mcast.as_raw_fd(), rcvbuf);
        for group in [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_NEIGH,
        ] {
            mcast.add_membership(group).map_err(SyncError::Socket)?;
        }
        mcast.set_non_blocking(true).map_err(SyncError::Socket)?;

        let mut dump = Socket::new(NETLINK_ROUTE).map_err(SyncError::Socket)?;
        dump.bind_auto().map_err(SyncError::Socket)?;
        dump.connect(&SocketAddr::new(0, 0))
            .map_err(SyncError::Socket)?;
        set_rcvbuf(dump.as_raw_fd(), 4 << 20);
        let tv = libc::timeval {
            tv_sec: DUMP_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: pointer and length describe a live timeval.
        cvt(unsafe {
            libc::setsockopt(
                dump.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
        .map_err(SyncError::Socket)?;
        Ok(Io {
            mcast,
            dump,
            stop,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Dumps links, then IPv4 addresses, routes (all tables) and neighbours.
    pub fn dump_all(&mut self) -> Result<Dump, SyncError> {
        let mut dump = Dump::default();
        let link = LinkMessage::default();
        for m in self.dump_kind("link", RouteNetlinkMessage::GetLink(link))? {
            if let RouteNetlinkMessage::NewLink(m) = m {
                dump.links.push(m);
            }
        }
        let mut addr = AddressMessage::default();
        addr.header.family = AddressFamily::Inet;
        for m in self.dump_kind("address", RouteNetlinkMessage::GetAddress(addr))? {
            if let RouteNetlinkMessage::NewAddress(m) = m {
                dump.addrs.push(m);
            }
        }
        let mut route = RouteMessage::default();
        route.header.address_family = AddressFamily::Inet;
        route.header.table = RouteHeader::RT_TABLE_UNSPEC;
        for m in self.dump_kind("route", RouteNetlinkMessage::GetRoute(route))? {
            if let RouteNetlinkMessage::NewRoute(m) = m {
                dump.routes.push(m);
            }
        }
        let mut neigh = NeighbourMessage::default();
        neigh.header.family = AddressFamily::Inet;
        for m in self.dump_kind("neighbour", RouteNetlinkMessage::GetNeighbour(neigh))? {
            if let RouteNetlinkMessage::NewNeighbour(m) = m {
                dump.neighbors.push(m);
            }
        }
        Ok(dump)
    }

    /// One dump, retried while the kernel marks it interrupted.
    fn dump_kind(
        &mut self,
        what: &'static str,
        req: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, SyncError> {
        for _ in 0..DUMP_RETRIES {
            match self.dump_once(what, req.clone())? {
                Some(msgs) => return Ok(msgs),
                None => tracing::debug!(what, "dump interrupted, retrying"),
            }
        }
        Err(SyncError::DumpInterrupted(what))
    }

    /// One dump: `Ok(None)` when the kernel flagged it inconsistent.
    fn dump_once(
        &mut self,
        what: &'static str,
        req: RouteNetlinkMessage,
    ) -> Result<Option<Vec<RouteNetlinkMessage>>, SyncError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(req));
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        let dump_err = |source| SyncError::Dump { what, source };
        self.dump.send(&bytes, 0).map_err(dump_err)?;

        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = match recv(self.dump.as_raw_fd(), &mut self.buf, 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(dump_err(e)),
            };
            if n > self.buf.len() {
                return Err(dump_err(io::Error::other("dump datagram truncated")));
            }
            for frame in frames(&self.buf[..n]) {
                let Ok(f) = frame else {
                    return Err(dump_err(io::Error::other("bad netlink framing")));
                };
                if f.seq != seq {
                    continue;
                }
                interrupted |= f.flags & NLM_F_DUMP_INTR != 0;
                match f.ty {
                    NLMSG_DONE => return Ok((!interrupted).then_some(out)),
                    NLMSG_ERROR => {
                        let code = f
                            .payload
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map(i32::from_ne_bytes)
                            .unwrap_or(-libc::EPROTO);
                        if code == 0 {
                            continue;
                        }
                        if code == -libc::EINTR || code == -libc::EBUSY {
                            return Ok(None);
                        }
                        return Err(dump_err(io::Error::from_raw_os_error(-code)));
                    }
                    ty => match parse_rtnl(ty, f.payload) {
                        Some(m) => out.push(m),
                        None => tracing::debug!(what, ty, "skipping undecodable dump message"),
                    },
                }
            }
        }
    }

    /// Runs until the stop eventfd is written or the multicast socket fails.
    pub fn run(&mut self, hub: &Mutex<Hub>) {
        let mut pending: Option<Resync> = None;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.mcast.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // A failed re-dump is retried after 100 ms.
            let timeout = if pending.is_some() { 100 } else { -1 };
            // SAFETY: fds is a live array of two pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "poll failed; netlink sync stops");
                return;
            }
            if fds[1].revents != 0 {
                tracing::debug!("netlink sync stopping");
                return;
            }
            loop {
                match recv(self.mcast.as_raw_fd(), &mut self.buf, libc::MSG_DONTWAIT) {
                    Ok(n) if n > self.buf.len() => {
                        tracing::warn!(n, "netlink datagram truncated; re-dumping");
                        pending = pending.max(Some(Resync::Snapshot));
                    }
                    Ok(n) => {
                        let mut h = lock(hub);
                        let decoded = h.decoder.decode_bytes(&self.buf[..n]);
                        if decoded.malformed > 0 {
                            tracing::warn!(count = decoded.malformed, "malformed netlink messages");
                        }
                        h.broadcast(&decoded.events);
                        pending = pending.max(decoded.resync);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        tracing::warn!("netlink receive buffer overrun (ENOBUFS); re-dumping");
                        pending = Some(Resync::Snapshot);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::error!(error = %e, "netlink receive failed; netlink sync stops");
                        return;
                    }
                }
            }
            if let Some(mode) = pending {
                match self.dump_all() {
                    Ok(dump) => {
                        let mut h = lock(hub);
                        let events = h.decoder.resync(&dump, mode);
                        tracing::debug!(?mode, events = events.len(), "re-dumped");
                        h.broadcast(&events);
                        pending = None;
                    }
                    Err(e) => tracing::warn!(error = %e, "re-dump failed; will retry"),
                }
            }
        }
    }
}

/// A non-blocking eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fd is a freshly created descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wakes whoever polls the eventfd.
pub(crate) fn signal(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64.
    let _ = unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// The sync thread's body after start-up, shared with [`crate::NetlinkSync`].
pub(crate) fn thread_main(mut io: Io, hub: Arc<Mutex<Hub>>) {
    io.run(&hub);
    let mut h = lock(&hub);
    h.running = false;
    // Dropping the senders tells every subscriber the sync ended.
    h.subs.clear();
}
