//! packetdrill shared-object library (issue #14): cnet's sans-IO [`Stack`] behind packetdrill's
//! system calls, in virtual time.
//!
//! packetdrill loads this library with `--so_filename` and calls `packetdrill_interface_init`.
//! Every socket call of a script lands here and runs against one `Stack`, under one mutex; blocking
//! calls (made by packetdrill on its second thread) sleep on a condition variable until the main
//! thread injects a packet or moves the clock. Socket numbers are real kernel fds (an eventfd
//! each), errors are Linux errno values, `TCP_INFO` has Linux's `struct tcp_info` layout.
//!
//! Time is virtual: `gettimeofday` reads a counter that moves one microsecond per read (packetdrill
//! spins on it for waits under 20 us), `usleep` moves it to the target, and `netdev_receive`, when
//! the stack has nothing to send, moves it to the stack's next timer. Every move runs the stack's
//! timers at their exact deadlines, so a 10-second script runs in milliseconds and gives the same
//! result on every run.
//!
//! Packets are layer 3: `netdev_send` wraps packetdrill's IPv4 packet in an Ethernet header from a
//! fixed neighbour; frames leaving the stack lose theirs (ARP never leaves: the neighbour is
//! permanent).
//!
//! `--so_flags` is `local=A.B.C.D,remote=A.B.C.D` (the addresses given to packetdrill with
//! `--local_ip` / `--remote_ip`; defaults 192.168.0.1 and 192.0.2.1, packetdrill's own).

#![allow(clippy::missing_safety_doc)]

use cnet_stack::config::{ConfigEvent, IfAddr, MacAddr, Neighbor, Route, StackConfig};
use cnet_stack::{
    Batch, Congestion, Instant, Pool, Stack, TcpError, TcpHandle, TcpListener, TcpOpts, TcpState,
};
use libc::{c_char, c_int, c_uint, c_ulong, c_void, size_t, ssize_t};
use std::collections::{HashMap, VecDeque};
use std::ffi::CStr;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Condvar, Mutex, MutexGuard};

mod profile;
pub use profile::linux_profile;

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
/// Linux's `TCP_CC_INFO` option number.
const TCP_CC_INFO: c_int = 26;
/// Linux's `TCP_INQ` option number.
const TCP_INQ: c_int = 36;
/// Linux's `TCP_CM_INQ` control message type (= `TCP_INQ`).
const TCP_CM_INQ: c_int = TCP_INQ;
/// Linux's `SO_MEMINFO` option number and its array length.
const SO_MEMINFO: c_int = 55;
const SK_MEMINFO_VARS: usize = 9;
/// `struct tcp_info` as far as packetdrill's copy of it goes (Linux 6.x, with the accurate-ECN
/// counters); cnet fills the first 248 bytes, the rest reads 0.
const TCP_INFO_LEN: usize = 320;
/// Virtual clock origin (microseconds): any fixed value; this one reads as a plausible date.
const T0: u64 = 1_700_000_000_000_000;

/// What a socket is.
enum Kind {
    /// Made by `socket`, maybe bound.
    Fresh,
    /// `listen` was called.
    Listener(TcpListener),
    /// Connecting or connected.
    Conn(TcpHandle),
}

struct Sock {
    kind: Kind,
    bound: Option<SocketAddrV4>,
    nonblock: bool,
    opts: TcpOpts,
    /// Pending `SO_ERROR`.
    so_error: i32,
    /// A non-blocking connect was started and not yet reported by a second `connect`.
    connect_pending: bool,
    /// The connection ended: the errno that reads/writes report (0: none yet).
    dead: i32,
    shut_rd: bool,
    shut_wr: bool,
    /// `TCP_NOTSENT_LOWAT` (0: unset, Linux's sysctl default of "no limit" applies).
    notsent_lowat: u32,
    /// `TCP_CORK`, `TCP_INQ`, `TCP_USER_TIMEOUT` (ms): remembered and reported back.
    cork: bool,
    inq: bool,
    user_timeout: u32,
    /// Bytes the application has read: with what is pending, the bytes ever received (edge-
    /// triggered epoll reports new data by it).
    read_total: u64,
}

impl Sock {
    fn new(nonblock: bool) -> Sock {
        Sock {
            kind: Kind::Fresh,
            bound: None,
            nonblock,
            opts: TcpOpts::default(),
            so_error: 0,
            connect_pending: false,
            dead: 0,
            shut_rd: false,
            shut_wr: false,
            notsent_lowat: 0,
            cork: false,
            inq: false,
            user_timeout: 0,
            read_total: 0,
        }
    }
}

struct World {
    stack: Stack,
    now: u64,
    out: VecDeque<(u64, Vec<u8>)>,
    socks: HashMap<c_int, Sock>,
    local: Ipv4Addr,
    next_port: u16,
    /// Consecutive `netdev_receive` calls that found nothing to return.
    idle_receives: u32,
    /// Epoll instances (an eventfd each, like the sockets) and their interest lists.
    epolls: HashMap<c_int, Vec<EpEntry>>,
}

/// One file in an epoll interest list.
struct EpEntry {
    fd: c_int,
    events: u32,
    data: u64,
    /// Edge-triggered bookkeeping: the events reported last, and the bytes ever received then.
    reported: u32,
    rx_seen: u64,
}

/// The library's state, behind packetdrill's `userdata`.
pub struct Shared {
    w: Mutex<World>,
    cv: Condvar,
}

type G<'a> = MutexGuard<'a, World>;

fn set_errno(e: i32) {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() = e };
}

fn err<T: From<i8>>(e: i32) -> T {
    set_errno(e);
    T::from(-1)
}

impl World {
    fn instant(&self) -> Instant {
        Instant::from_micros(self.now)
    }

    /// Moves frames out of the stack at the current time.
    fn flush(&mut self) {
        let now = self.instant();
        let mut batch = Batch::new();
        loop {
            if self.stack.poll_tx(&mut batch, now) == 0 {
                break;
            }
            for f in batch.drain() {
                let data = self.stack.pool().data(&f);
                if data.len() > 14 && data[12] == 0x08 && data[13] == 0x00 {
                    self.out.push_back((self.now, data[14..].to_vec()));
                }
                self.stack.pool_mut().free(f);
            }
        }
    }

    /// Moves the clock to `to` (never back), running every timer due on the way at its deadline.
    fn advance(&mut self, to: u64) {
        for _ in 0..100_000 {
            self.flush();
            match self.stack.poll_timeout() {
                Some(t) if t.total_micros() <= to => {
                    let t = t.total_micros().max(self.now);
                    if t == self.now && !self.stack.tx_work_pending() {
                        // Due now and nothing to do after the flush above: step past it.
                        self.now += 1;
                    } else {
                        self.now = t;
                    }
                    if self.now > to {
                        break;
                    }
                }
                _ => break,
            }
        }
        self.now = self.now.max(to);
        self.flush();
    }

    fn inject(&mut self, ip: &[u8]) -> bool {
        let Some(f) = self.stack.pool_mut().alloc() else {
            return false;
        };
        let pool = self.stack.pool_mut();
        if !pool.set_window(&f, Pool::DEFAULT_HEADROOM, 0) {
            pool.free(f);
            return false;
        }
        let Some(b) = pool.push_back(&f, 14 + ip.len()) else {
            pool.free(f);
            return false;
        };
        b[0..6].copy_from_slice(&OUR_MAC.0);
        b[6..12].copy_from_slice(&PEER_MAC.0);
        b[12] = 0x08;
        b[13] = 0x00;
        b[14..].copy_from_slice(ip);
        let mut batch = Batch::new();
        let _ = batch.push(f);
        let now = self.instant();
        self.stack.process_rx(&mut batch, now);
        self.flush();
        true
    }

    /// Notes a connection's end once: its error becomes `SO_ERROR` and what reads/writes report.
    fn reap(&mut self, fd: c_int) {
        let Some(s) = self.socks.get(&fd) else { return };
        let Kind::Conn(h) = s.kind else { return };
        if s.dead != 0 {
            return;
        }
        if let Some(e) = self.stack.tcp_take_error(h) {
            let code = match e {
                TcpError::Refused => libc::ECONNREFUSED,
                TcpError::Reset => libc::ECONNRESET,
                TcpError::TimedOut => libc::ETIMEDOUT,
                TcpError::Unreachable(_) => libc::EHOSTUNREACH,
                TcpError::Aborted => libc::ECONNABORTED,
            };
            let s = self.socks.get_mut(&fd).unwrap();
            s.so_error = code;
            s.dead = code;
        } else if self.stack.tcp_state(h).is_none() {
            let s = self.socks.get_mut(&fd).unwrap();
            s.dead = libc::EPIPE;
        }
    }

    fn state(&self, h: TcpHandle) -> TcpState {
        self.stack.tcp_state(h).unwrap_or(TcpState::Closed)
    }

    fn poll_events(&mut self, fd: c_int) -> i16 {
        self.reap(fd);
        let Some(s) = self.socks.get(&fd) else {
            return libc::POLLNVAL;
        };
        let mut ev = 0i16;
        match s.kind {
            Kind::Fresh => ev |= libc::POLLOUT | libc::POLLHUP,
            Kind::Listener(l) => {
                if self.stack.tcp_accept_pending(l) > 0 {
                    ev |= libc::POLLIN | libc::POLLRDNORM;
                }
            }
            Kind::Conn(h) => {
                let st = self.state(h);
                if self.stack.tcp_recv_pending(h) > 0 {
                    ev |= libc::POLLIN | libc::POLLRDNORM;
                }
                let fin = self.stack.tcp_recv_finished(h)
                    || matches!(
                        st,
                        TcpState::CloseWait | TcpState::LastAck | TcpState::Closing
                    );
                if fin || s.shut_rd {
                    ev |= libc::POLLIN | libc::POLLRDNORM | libc::POLLRDHUP;
                }
                if s.so_error != 0 {
                    ev |= libc::POLLERR;
                }
                let connected = !matches!(
                    st,
                    TcpState::SynSent | TcpState::SynReceived | TcpState::Listen
                );
                if s.dead != 0 || st == TcpState::Closed || (fin && s.shut_wr) {
                    ev |= libc::POLLHUP | libc::POLLIN | libc::POLLRDNORM | libc::POLLRDHUP;
                }
                let lowat_ok = s.notsent_lowat == 0
                    || self
                        .stack
                        .tcp_info(h)
                        .is_none_or(|i| i.send_queued.saturating_sub(i.unacked) < s.notsent_lowat);
                let writable = connected && self.stack.tcp_can_send(h) > 0 && lowat_ok;
                // A shut-down or dead socket is "writable": the write fails at once.
                if writable || s.shut_wr || s.dead != 0 {
                    ev |= libc::POLLOUT | libc::POLLWRNORM;
                }
            }
        }
        ev
    }
}

fn parse_flags(flags: *const c_char) -> (Ipv4Addr, Ipv4Addr) {
    let mut local = Ipv4Addr::new(192, 168, 0, 1);
    let mut remote = Ipv4Addr::new(192, 0, 2, 1);
    if !flags.is_null() {
        // SAFETY: packetdrill passes a NUL-terminated string.
        let s = unsafe { CStr::from_ptr(flags) }.to_string_lossy();
        for kv in s.split([',', ' ']) {
            if let Some((k, v)) = kv.split_once('=') {
                if let Ok(ip) = v.parse() {
                    match k {
                        "local" => local = ip,
                        "remote" => remote = ip,
                        _ => {}
                    }
                }
            }
        }
    }
    (local, remote)
}

impl Shared {
    /// A stack at `local` with `remote` as a permanent neighbour, under Linux's defaults.
    pub fn new(local: Ipv4Addr, remote: Ipv4Addr) -> Shared {
        let cfg = linux_profile(StackConfig::new(OUR_MAC));
        // 16 KiB frames: packetdrill injects GRO-sized segments (several MSS in one packet).
        // The memory is zero-allocated, so only frames in use cost pages.
        let pool = Pool::new(16384, 16384, Pool::DEFAULT_HEADROOM).expect("frame pool");
        let mut stack = Stack::new(cfg, pool);
        let t = Instant::from_micros(T0);
        stack.apply_config(
            ConfigEvent::AddrAdd(IfAddr {
                addr: local,
                prefix_len: 32,
            }),
            t,
        );
        stack.apply_config(
            ConfigEvent::RouteAdd(Route {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(remote),
                metric: 0,
            }),
            t,
        );
        stack.apply_config(
            ConfigEvent::RouteAdd(Route {
                dst: remote,
                prefix_len: 32,
                gateway: None,
                metric: 0,
            }),
            t,
        );
        stack.apply_config(
            ConfigEvent::NeighborSet(Neighbor {
                ip: remote,
                mac: PEER_MAC,
                permanent: true,
            }),
            t,
        );
        Shared {
            w: Mutex::new(World {
                stack,
                now: T0,
                out: VecDeque::new(),
                socks: HashMap::new(),
                local,
                next_port: 40000,
                idle_receives: 0,
                epolls: HashMap::new(),
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> G<'_> {
        self.w.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps until the main thread changes something.
    fn wait<'a>(&'a self, g: G<'a>) -> G<'a> {
        self.cv.wait(g).unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.cv.notify_all();
    }
}

// ---- helpers over raw C arguments ----

unsafe fn sockaddr_in(addr: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddrV4> {
    if addr.is_null() || (len as usize) < std::mem::size_of::<libc::sockaddr_in>() {
        return None;
    }
    let sin = &*(addr as *const libc::sockaddr_in);
    if sin.sin_family as c_int != libc::AF_INET {
        return None;
    }
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

unsafe fn put_sockaddr(a: SocketAddrV4, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let mut sin: libc::sockaddr_in = std::mem::zeroed();
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    let n = (*len as usize).min(std::mem::size_of::<libc::sockaddr_in>());
    std::ptr::copy_nonoverlapping(&sin as *const _ as *const u8, addr as *mut u8, n);
    *len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
}

unsafe fn sh<'a>(ud: *mut c_void) -> &'a Shared {
    &*(ud as *const Shared)
}

fn new_fd() -> c_int {
    // SAFETY: plain syscall.
    unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }
}

// ---- the interface ----

unsafe extern "C" fn pd_free(ud: *mut c_void) {
    if !ud.is_null() {
        let s = Box::from_raw(ud as *mut Shared);
        let w = s.lock();
        for fd in w.socks.keys().chain(w.epolls.keys()) {
            libc::close(*fd);
        }
    }
}

unsafe extern "C" fn pd_socket(ud: *mut c_void, domain: c_int, ty: c_int, _proto: c_int) -> c_int {
    let s = sh(ud);
    if domain != libc::AF_INET {
        return err(libc::EAFNOSUPPORT);
    }
    if ty & 0xf != libc::SOCK_STREAM {
        return err(libc::EPROTONOSUPPORT);
    }
    let fd = new_fd();
    if fd < 0 {
        return -1;
    }
    let mut w = s.lock();
    w.socks.insert(fd, Sock::new(ty & libc::SOCK_NONBLOCK != 0));
    fd
}

unsafe extern "C" fn pd_bind(
    ud: *mut c_void,
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    let s = sh(ud);
    let Some(a) = sockaddr_in(addr, len) else {
        return err(libc::EINVAL);
    };
    let mut w = s.lock();
    let local = w.local;
    if !a.ip().is_unspecified() && *a.ip() != local {
        return err(libc::EADDRNOTAVAIL);
    }
    let Some(so) = w.socks.get_mut(&fd) else {
        return err(libc::EBADF);
    };
    if so.bound.is_some() || !matches!(so.kind, Kind::Fresh) {
        return err(libc::EINVAL);
    }
    so.bound = Some(a);
    0
}

unsafe extern "C" fn pd_listen(ud: *mut c_void, fd: c_int, backlog: c_int) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    let w = &mut *w;
    let port = w.next_port;
    let Some(so) = w.socks.get_mut(&fd) else {
        return err(libc::EBADF);
    };
    match so.kind {
        Kind::Listener(_) => return 0,
        Kind::Conn(_) => return err(libc::EINVAL),
        Kind::Fresh => {}
    }
    let bound = match so.bound {
        Some(b) if b.port() != 0 => b,
        b => {
            w.next_port += 1;
            SocketAddrV4::new(b.map_or(Ipv4Addr::UNSPECIFIED, |b| *b.ip()), port)
        }
    };
    match w
        .stack
        .tcp_listen(bound, backlog.max(0) as u32 + 1, so.opts)
    {
        Ok(l) => {
            so.kind = Kind::Listener(l);
            so.bound = Some(bound);
            0
        }
        Err(_) => err(libc::EADDRINUSE),
    }
}

unsafe extern "C" fn pd_accept(
    ud: *mut c_void,
    fd: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    loop {
        let Some(so) = w.socks.get(&fd) else {
            return err(libc::EBADF);
        };
        let Kind::Listener(l) = so.kind else {
            return err(libc::EINVAL);
        };
        let nonblock = so.nonblock;
        let (opts, lowat, user_timeout) = (so.opts, so.notsent_lowat, so.user_timeout);
        if let Some(h) = w.stack.tcp_accept(l) {
            let nfd = new_fd();
            if nfd < 0 {
                return -1;
            }
            // Linux's children inherit the listener's options.
            let mut ns = Sock::new(false);
            ns.kind = Kind::Conn(h);
            ns.opts = opts;
            ns.notsent_lowat = lowat;
            ns.user_timeout = user_timeout;
            w.stack.tcp_set_user_timeout(h, user_timeout);
            w.socks.insert(nfd, ns);
            if let Some((_, remote)) = w.stack.tcp_addrs(h) {
                put_sockaddr(remote, addr, len);
            }
            return nfd;
        }
        if nonblock {
            return err(libc::EAGAIN);
        }
        w = s.wait(w);
    }
}

unsafe extern "C" fn pd_connect(
    ud: *mut c_void,
    fd: c_int,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
) -> c_int {
    let s = sh(ud);
    let Some(remote) = sockaddr_in(addr, len) else {
        return err(libc::EINVAL);
    };
    let mut w = s.lock();
    let Some(so) = w.socks.get(&fd) else {
        return err(libc::EBADF);
    };
    let h = match so.kind {
        Kind::Listener(_) => return err(libc::EISCONN),
        Kind::Conn(h) => {
            let nonblock = so.nonblock;
            let pending = so.connect_pending;
            w.reap(fd);
            let st = w.state(h);
            let so = w.socks.get_mut(&fd).unwrap();
            if matches!(st, TcpState::SynSent | TcpState::SynReceived) {
                if nonblock {
                    return err(libc::EALREADY);
                }
                h
            } else if so.dead != 0 || st == TcpState::Closed {
                let e = std::mem::take(&mut so.so_error);
                return err(if e != 0 { e } else { libc::ECONNABORTED });
            } else if pending {
                so.connect_pending = false;
                return 0;
            } else {
                return err(libc::EISCONN);
            }
        }
        Kind::Fresh => {
            let (bound, opts, nonblock) = (so.bound, so.opts, so.nonblock);
            let now = w.instant();
            match w.stack.tcp_connect(remote, bound, opts, now) {
                Ok(h) => {
                    let so = w.socks.get_mut(&fd).unwrap();
                    so.kind = Kind::Conn(h);
                    let ut = so.user_timeout;
                    w.stack.tcp_set_user_timeout(h, ut);
                    w.flush();
                    if nonblock {
                        w.socks.get_mut(&fd).unwrap().connect_pending = true;
                        return err(libc::EINPROGRESS);
                    }
                    h
                }
                Err(cnet_stack::ConnectError::AddrInUse) => return err(libc::EADDRINUSE),
                Err(cnet_stack::ConnectError::NoRoute) => return err(libc::ENETUNREACH),
                Err(_) => return err(libc::EADDRNOTAVAIL),
            }
        }
    };
    loop {
        w.reap(fd);
        let st = w.state(h);
        if !matches!(st, TcpState::SynSent | TcpState::SynReceived) {
            let so = w.socks.get_mut(&fd).unwrap();
            if so.dead != 0 || st == TcpState::Closed {
                let e = std::mem::take(&mut so.so_error);
                return err(if e != 0 { e } else { libc::ECONNREFUSED });
            }
            return 0;
        }
        w = s.wait(w);
    }
}

/// The common receive path of read/readv/recv/recvfrom/recvmsg.
unsafe fn recv_iov(s: &Shared, fd: c_int, iov: &[libc::iovec], flags: c_int) -> ssize_t {
    let mut w = s.lock();
    let want: usize = iov.iter().map(|v| v.iov_len).sum();
    loop {
        w.reap(fd);
        let Some(so) = w.socks.get(&fd) else {
            return err(libc::EBADF);
        };
        let Kind::Conn(h) = so.kind else {
            return err(libc::ENOTCONN);
        };
        let nonblock = so.nonblock || flags & libc::MSG_DONTWAIT != 0;
        let (dead, shut_rd) = (so.dead, so.shut_rd);
        let st = w.state(h);
        if matches!(st, TcpState::SynSent | TcpState::SynReceived) && nonblock {
            return err(libc::EAGAIN);
        }
        if want == 0 {
            return 0;
        }
        if w.stack.tcp_recv_pending(h) > 0 {
            if flags & libc::MSG_PEEK != 0 {
                return err(libc::EOPNOTSUPP);
            }
            let mut total = 0usize;
            for v in iov {
                if v.iov_len == 0 {
                    continue;
                }
                let mut scratch;
                let buf = if v.iov_base.is_null() {
                    scratch = vec![0u8; v.iov_len];
                    &mut scratch[..]
                } else {
                    std::slice::from_raw_parts_mut(v.iov_base as *mut u8, v.iov_len)
                };
                let n = w.stack.tcp_recv_slice(h, buf);
                total += n;
                if let Some(so) = w.socks.get_mut(&fd) {
                    so.read_total += n as u64;
                }
                if n < v.iov_len {
                    break;
                }
            }
            w.flush();
            return total as ssize_t;
        }
        if dead != 0 && dead != libc::EPIPE {
            let so = w.socks.get_mut(&fd).unwrap();
            so.so_error = 0;
            so.dead = libc::EPIPE;
            return err(dead);
        }
        if w.stack.tcp_recv_finished(h) || dead != 0 || shut_rd || st == TcpState::Closed {
            return 0;
        }
        if nonblock {
            return err(libc::EAGAIN);
        }
        w = s.wait(w);
    }
}

/// The common send path of write/writev/send/sendto/sendmsg.
unsafe fn send_iov(s: &Shared, fd: c_int, iov: &[libc::iovec], flags: c_int) -> ssize_t {
    let mut w = s.lock();
    let want: usize = iov.iter().map(|v| v.iov_len).sum();
    let mut done = 0usize;
    loop {
        w.reap(fd);
        let Some(so) = w.socks.get(&fd) else {
            return err(libc::EBADF);
        };
        let Kind::Conn(h) = so.kind else {
            return err(libc::EPIPE);
        };
        let nonblock = so.nonblock || flags & libc::MSG_DONTWAIT != 0;
        if so.shut_wr {
            return if done > 0 {
                done as ssize_t
            } else {
                err(libc::EPIPE)
            };
        }
        if so.dead != 0 {
            if done > 0 {
                return done as ssize_t;
            }
            let d = so.dead;
            let so = w.socks.get_mut(&fd).unwrap();
            so.so_error = 0;
            so.dead = libc::EPIPE;
            return err(d);
        }
        let st = w.state(h);
        if matches!(st, TcpState::SynSent | TcpState::SynReceived) {
            if nonblock {
                return err(libc::EAGAIN);
            }
            w = s.wait(w);
            continue;
        }
        if done == want {
            return done as ssize_t;
        }
        // Copy from where we left off.
        let mut skip = done;
        let now = w.instant();
        for v in iov {
            if skip >= v.iov_len {
                skip -= v.iov_len;
                continue;
            }
            let zeros;
            let buf = if v.iov_base.is_null() {
                // packetdrill may pass no buffer for `...`: send zeros.
                zeros = vec![0u8; v.iov_len - skip];
                &zeros[..]
            } else {
                std::slice::from_raw_parts((v.iov_base as *const u8).add(skip), v.iov_len - skip)
            };
            skip = 0;
            let n = match w.stack.tcp_send_slice(h, buf, now) {
                Ok(n) => n,
                Err(_) => {
                    if done > 0 {
                        return done as ssize_t;
                    }
                    return err(libc::EPIPE);
                }
            };
            done += n;
            if n < buf.len() {
                break;
            }
        }
        w.flush();
        if done == want {
            return done as ssize_t;
        }
        if nonblock {
            return if done > 0 {
                done as ssize_t
            } else {
                err(libc::EAGAIN)
            };
        }
        w = s.wait(w);
    }
}

unsafe fn one(buf: *const c_void, len: size_t) -> [libc::iovec; 1] {
    [libc::iovec {
        iov_base: buf as *mut c_void,
        iov_len: len,
    }]
}

unsafe fn iovs<'a>(iov: *const libc::iovec, n: c_int) -> &'a [libc::iovec] {
    if iov.is_null() || n <= 0 {
        &[]
    } else {
        std::slice::from_raw_parts(iov, n as usize)
    }
}

unsafe extern "C" fn pd_read(ud: *mut c_void, fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    recv_iov(sh(ud), fd, &one(buf, n), 0)
}
unsafe extern "C" fn pd_readv(
    ud: *mut c_void,
    fd: c_int,
    iov: *const libc::iovec,
    n: c_int,
) -> ssize_t {
    recv_iov(sh(ud), fd, iovs(iov, n), 0)
}
unsafe extern "C" fn pd_recv(
    ud: *mut c_void,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
) -> ssize_t {
    recv_iov(sh(ud), fd, &one(buf, n), flags)
}
unsafe extern "C" fn pd_recvfrom(
    ud: *mut c_void,
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> ssize_t {
    let r = recv_iov(sh(ud), fd, &one(buf, n), flags);
    if r >= 0 && !len.is_null() {
        *len = 0;
        let _ = addr;
    }
    r
}
unsafe extern "C" fn pd_recvmsg(
    ud: *mut c_void,
    fd: c_int,
    msg: *mut libc::msghdr,
    flags: c_int,
) -> ssize_t {
    if msg.is_null() {
        return err(libc::EFAULT);
    }
    let m = &mut *msg;
    let s = sh(ud);
    let r = recv_iov(s, fd, iovs(m.msg_iov, m.msg_iovlen as c_int), flags);
    if r >= 0 {
        m.msg_namelen = 0;
        m.msg_flags = 0;
        // TCP_INQ: a TCP_CM_INQ message with the bytes left to read (Linux `tcp_inq`: 1 when
        // none are left and the peer's FIN arrived).
        let inq = {
            let w = s.lock();
            match w.socks.get(&fd) {
                Some(so) if so.inq => match so.kind {
                    Kind::Conn(h) => {
                        let n = w.stack.tcp_recv_pending(h) as c_int;
                        Some(if n == 0 && w.stack.tcp_recv_finished(h) {
                            1
                        } else {
                            n
                        })
                    }
                    _ => Some(0),
                },
                _ => None,
            }
        };
        let space = libc::CMSG_SPACE(4) as usize;
        match inq {
            Some(v) if !m.msg_control.is_null() && m.msg_controllen >= space => {
                std::ptr::write_bytes(m.msg_control as *mut u8, 0, space);
                let c = libc::CMSG_FIRSTHDR(m);
                (*c).cmsg_len = libc::CMSG_LEN(4) as _;
                (*c).cmsg_level = libc::SOL_TCP;
                (*c).cmsg_type = TCP_CM_INQ;
                (libc::CMSG_DATA(c) as *mut c_int).write_unaligned(v);
                m.msg_controllen = space as _;
            }
            Some(_) if !m.msg_control.is_null() && m.msg_controllen > 0 => {
                m.msg_flags |= libc::MSG_CTRUNC;
                m.msg_controllen = 0;
            }
            _ => m.msg_controllen = 0,
        }
    }
    r
}
unsafe extern "C" fn pd_write(
    ud: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
) -> ssize_t {
    send_iov(sh(ud), fd, &one(buf, n), 0)
}
unsafe extern "C" fn pd_writev(
    ud: *mut c_void,
    fd: c_int,
    iov: *const libc::iovec,
    n: c_int,
) -> ssize_t {
    send_iov(sh(ud), fd, iovs(iov, n), 0)
}
unsafe extern "C" fn pd_send(
    ud: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
) -> ssize_t {
    send_iov(sh(ud), fd, &one(buf, n), flags)
}
unsafe extern "C" fn pd_sendto(
    ud: *mut c_void,
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    _addr: *const libc::sockaddr,
    _len: libc::socklen_t,
) -> ssize_t {
    send_iov(sh(ud), fd, &one(buf, n), flags)
}
unsafe extern "C" fn pd_sendmsg(
    ud: *mut c_void,
    fd: c_int,
    msg: *const libc::msghdr,
    flags: c_int,
) -> ssize_t {
    if msg.is_null() {
        return err(libc::EFAULT);
    }
    let m = &*msg;
    send_iov(sh(ud), fd, iovs(m.msg_iov, m.msg_iovlen as c_int), flags)
}

/// `fcntl(fd, cmd, ...)`: the variadic argument read as one integer register (x86-64 / AArch64
/// pass the first variadic integer argument as a named one would be).
unsafe extern "C" fn pd_fcntl(ud: *mut c_void, fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    let Some(so) = w.socks.get_mut(&fd) else {
        return err(libc::EBADF);
    };
    match cmd {
        libc::F_GETFL => libc::O_RDWR | if so.nonblock { libc::O_NONBLOCK } else { 0 },
        libc::F_SETFL => {
            so.nonblock = arg as c_int & libc::O_NONBLOCK != 0;
            0
        }
        libc::F_GETFD => libc::FD_CLOEXEC,
        libc::F_SETFD => 0,
        _ => err(libc::EINVAL),
    }
}

unsafe extern "C" fn pd_ioctl(ud: *mut c_void, fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    w.reap(fd);
    let Some(so) = w.socks.get(&fd) else {
        return err(libc::EBADF);
    };
    let p = arg as *mut c_int;
    if p.is_null() {
        return err(libc::EFAULT);
    }
    match (req, &so.kind) {
        (libc::FIONREAD, Kind::Listener(_)) | (libc::TIOCOUTQ, Kind::Listener(_)) => {
            err(libc::EINVAL)
        }
        (libc::FIONREAD, Kind::Conn(h)) => {
            *p = w.stack.tcp_recv_pending(*h) as c_int;
            0
        }
        (libc::TIOCOUTQ, Kind::Conn(h)) => {
            *p = w.stack.tcp_send_queued(*h) as c_int;
            0
        }
        (libc::FIONREAD | libc::TIOCOUTQ, Kind::Fresh) => {
            *p = 0;
            0
        }
        (libc::FIONBIO, _) => {
            let nb = *p != 0;
            w.socks.get_mut(&fd).unwrap().nonblock = nb;
            0
        }
        _ => err(libc::ENOTTY),
    }
}

unsafe extern "C" fn pd_close(ud: *mut c_void, fd: c_int) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    if w.epolls.remove(&fd).is_some() {
        drop(w);
        return libc::close(fd);
    }
    for list in w.epolls.values_mut() {
        list.retain(|e| e.fd != fd);
    }
    let Some(so) = w.socks.remove(&fd) else {
        // Not ours (a pipe, or an fd of packetdrill's): the kernel's.
        drop(w);
        return libc::close(fd);
    };
    let now = w.instant();
    match so.kind {
        Kind::Conn(h) => w.stack.tcp_close(h, now),
        Kind::Listener(l) => w.stack.tcp_unlisten(l, now),
        Kind::Fresh => {}
    }
    w.flush();
    drop(w);
    s.changed();
    libc::close(fd)
}

unsafe extern "C" fn pd_shutdown(ud: *mut c_void, fd: c_int, how: c_int) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    let now = w.instant();
    let Some(so) = w.socks.get_mut(&fd) else {
        return err(libc::EBADF);
    };
    let kind = match so.kind {
        Kind::Conn(h) => Some(h),
        Kind::Listener(_) => None,
        Kind::Fresh => return err(libc::ENOTCONN),
    };
    if !(0..=2).contains(&how) {
        return err(libc::EINVAL);
    }
    if how == libc::SHUT_RD || how == libc::SHUT_RDWR {
        so.shut_rd = true;
    }
    let wr = how == libc::SHUT_WR || how == libc::SHUT_RDWR;
    if wr {
        so.shut_wr = true;
    }
    match kind {
        Some(h) if wr => w.stack.tcp_shutdown(h, now),
        Some(_) => {}
        None => {
            if let Some(so) = w.socks.get_mut(&fd) {
                if let Kind::Listener(l) = so.kind {
                    so.kind = Kind::Fresh;
                    w.stack.tcp_unlisten(l, now);
                }
            }
        }
    }
    w.flush();
    drop(w);
    s.changed();
    0
}

unsafe fn put_int(optval: *mut c_void, optlen: *mut libc::socklen_t, v: c_int) -> c_int {
    if optval.is_null() || optlen.is_null() {
        return err(libc::EFAULT);
    }
    let n = (*optlen as usize).min(4);
    std::ptr::copy_nonoverlapping(&v as *const c_int as *const u8, optval as *mut u8, n);
    *optlen = n as libc::socklen_t;
    0
}

fn linux_state(st: TcpState) -> u8 {
    match st {
        TcpState::Established => 1,
        TcpState::SynSent => 2,
        TcpState::SynReceived => 3,
        TcpState::FinWait1 => 4,
        TcpState::FinWait2 => 5,
        TcpState::TimeWait => 6,
        TcpState::Closed => 7,
        TcpState::CloseWait => 8,
        TcpState::LastAck => 9,
        TcpState::Listen => 10,
        TcpState::Closing => 11,
    }
}

/// Linux's `struct tcp_info` (up to `tcpi_total_rto_time`, 248 bytes) from cnet's `TcpInfo`.
fn tcp_info_bytes(w: &World, so: &Sock) -> [u8; TCP_INFO_LEN] {
    let mut b = [0u8; TCP_INFO_LEN];
    let put32 = |b: &mut [u8; TCP_INFO_LEN], off: usize, v: u32| {
        b[off..off + 4].copy_from_slice(&v.to_ne_bytes())
    };
    let put64 = |b: &mut [u8; TCP_INFO_LEN], off: usize, v: u64| {
        b[off..off + 8].copy_from_slice(&v.to_ne_bytes())
    };
    match so.kind {
        Kind::Listener(_) => b[0] = 10,
        Kind::Fresh => b[0] = 7,
        Kind::Conn(h) => {
            let Some(i) = w.stack.tcp_info(h) else {
                b[0] = 7;
                return b;
            };
            let mss = u32::from(i.mss).max(1);
            b[0] = linux_state(i.state);
            b[2] = i.rto_expirations.min(255) as u8;
            let mut opts = 0u8;
            if i.timestamps {
                opts |= 1;
            }
            if i.sack {
                opts |= 2;
            }
            if let Some((snd, rcv)) = i.wscale {
                opts |= 4;
                b[6] = (snd & 0xf) | ((rcv & 0xf) << 4);
            }
            b[5] = opts;
            put32(&mut b, 8, i.rto.as_micros() as u32);
            put32(&mut b, 12, 40_000);
            put32(&mut b, 16, mss);
            put32(&mut b, 20, mss);
            put32(&mut b, 24, i.unacked.div_ceil(mss));
            put32(&mut b, 60, 1500);
            put32(&mut b, 64, i.rcv_wnd);
            put32(&mut b, 68, i.srtt.as_micros() as u32);
            put32(&mut b, 72, i.rttvar.as_micros() as u32);
            let ss = if i.ssthresh >= 0x7fff_ffff / 2 {
                0x7fff_ffff
            } else {
                i.ssthresh / mss
            };
            put32(&mut b, 76, ss);
            put32(&mut b, 80, i.cwnd / mss);
            put32(&mut b, 84, mss);
            put32(&mut b, 88, 3);
            put32(&mut b, 100, i.retransmits);
            put64(&mut b, 120, i.bytes_acked);
            put64(&mut b, 128, i.bytes_received);
            put32(&mut b, 144, i.send_queued.saturating_sub(i.unacked));
            put32(&mut b, 228, i.snd_wnd);
            put32(&mut b, 232, i.rcv_wnd);
        }
    }
    b
}

unsafe extern "C" fn pd_getsockopt(
    ud: *mut c_void,
    fd: c_int,
    level: c_int,
    name: c_int,
    optval: *mut c_void,
    optlen: *mut libc::socklen_t,
) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    w.reap(fd);
    let Some(so) = w.socks.get(&fd) else {
        return err(libc::EBADF);
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_ERROR) => {
            let e = so.so_error;
            w.socks.get_mut(&fd).unwrap().so_error = 0;
            put_int(optval, optlen, e)
        }
        (libc::SOL_SOCKET, libc::SO_TYPE) => put_int(optval, optlen, libc::SOCK_STREAM),
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
            let v = if so.opts.snd_buf != 0 {
                so.opts.snd_buf
            } else {
                256 * 1024
            };
            put_int(optval, optlen, v as c_int)
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
            let v = if so.opts.rcv_buf != 0 {
                so.opts.rcv_buf
            } else {
                540_000
            };
            put_int(optval, optlen, v as c_int)
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            put_int(optval, optlen, c_int::from(so.opts.nodelay))
        }
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
            // Linux: the current MSS once connected, else the user's value or 536.
            let user = if so.opts.mss != 0 {
                i32::from(so.opts.mss)
            } else {
                536
            };
            let mss = match so.kind {
                Kind::Conn(h) => w.stack.tcp_info(h).map_or(user, |i| i32::from(i.mss)),
                _ => user,
            };
            put_int(optval, optlen, mss)
        }
        (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT) => {
            put_int(optval, optlen, so.notsent_lowat as c_int)
        }
        (libc::IPPROTO_TCP, libc::TCP_CORK) => put_int(optval, optlen, c_int::from(so.cork)),
        (libc::IPPROTO_TCP, TCP_INQ) => put_int(optval, optlen, c_int::from(so.inq)),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => {
            put_int(optval, optlen, so.user_timeout as c_int)
        }
        (libc::SOL_SOCKET, SO_MEMINFO) => {
            // Linux's SK_MEMINFO_* array: receive and send queue bytes and buffer sizes; the
            // accounting fields cnet has no equivalent of read 0.
            if optval.is_null() || optlen.is_null() {
                return err(libc::EFAULT);
            }
            let mut v = [0u32; SK_MEMINFO_VARS];
            v[1] = if so.opts.rcv_buf != 0 {
                so.opts.rcv_buf
            } else {
                540_000
            };
            v[3] = if so.opts.snd_buf != 0 {
                so.opts.snd_buf
            } else {
                256 * 1024
            };
            if let Kind::Conn(h) = so.kind {
                if let Some(i) = w.stack.tcp_info(h) {
                    v[0] = i.recv_queued;
                    v[2] = i.unacked;
                    v[5] = i.send_queued;
                }
            }
            let n = (*optlen as usize).min(std::mem::size_of_val(&v));
            std::ptr::copy_nonoverlapping(v.as_ptr() as *const u8, optval as *mut u8, n);
            *optlen = n as libc::socklen_t;
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_INFO) => {
            if optval.is_null() || optlen.is_null() {
                return err(libc::EFAULT);
            }
            let b = tcp_info_bytes(&w, so);
            let n = (*optlen as usize).min(b.len());
            std::ptr::copy_nonoverlapping(b.as_ptr(), optval as *mut u8, n);
            *optlen = n as libc::socklen_t;
            0
        }
        (libc::IPPROTO_TCP, TCP_CC_INFO) => {
            // Linux's CUBIC and Reno have no `get_info`: success with nothing written.
            if optlen.is_null() {
                return err(libc::EFAULT);
            }
            *optlen = 0;
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            if optval.is_null() || optlen.is_null() {
                return err(libc::EFAULT);
            }
            let name: &[u8] = match so.opts.congestion {
                Congestion::Cubic => b"cubic\0",
                Congestion::NewReno => b"reno\0",
            };
            let n = (*optlen as usize).min(name.len());
            std::ptr::copy_nonoverlapping(name.as_ptr(), optval as *mut u8, n);
            *optlen = n as libc::socklen_t;
            0
        }
        _ => err(libc::ENOPROTOOPT),
    }
}

unsafe extern "C" fn pd_setsockopt(
    ud: *mut c_void,
    fd: c_int,
    level: c_int,
    name: c_int,
    optval: *const c_void,
    optlen: libc::socklen_t,
) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    let now = w.instant();
    // Linux's IP options also take a one-byte value.
    let ival = if optval.is_null() {
        0
    } else if optlen as usize >= 4 {
        (optval as *const c_int).read_unaligned()
    } else if optlen >= 1 && level == libc::IPPROTO_IP {
        c_int::from(*(optval as *const u8))
    } else {
        0
    };
    let w = &mut *w;
    let Some(so) = w.socks.get_mut(&fd) else {
        return err(libc::EBADF);
    };
    match (level, name) {
        (libc::SOL_SOCKET, libc::SO_REUSEADDR | libc::SO_REUSEPORT) => 0,
        // MSG_ZEROCOPY itself is skipped (skip.txt); enabling the option alone changes nothing.
        (libc::SOL_SOCKET, libc::SO_ZEROCOPY) => 0,
        // Path MTU discovery (cnet sends DF and never fragments TCP), non-local binds (cnet binds
        // only its own addresses) and the TOS byte are accepted and have no effect.
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER | libc::IP_FREEBIND | libc::IP_TOS) => {
            if optlen < 1 {
                return err(libc::EINVAL);
            }
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_MAXSEG) => {
            // Linux: 0 or 88..=32767; before connect/listen it clamps the MSS of the connection.
            if ival != 0 && !(88..=32767).contains(&ival) {
                return err(libc::EINVAL);
            }
            so.opts.mss = ival as u16;
            if let Kind::Listener(l) = so.kind {
                w.stack.tcp_listener_set_mss(l, so.opts.mss);
            }
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT) => {
            so.notsent_lowat = ival as u32;
            s.changed();
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_CORK) => {
            // Remembered only: cnet has no cork (the writes go out as Nagle allows).
            so.cork = ival != 0;
            0
        }
        (libc::IPPROTO_TCP, TCP_INQ) => {
            so.inq = ival != 0;
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => {
            if ival < 0 {
                return err(libc::EINVAL);
            }
            so.user_timeout = ival as u32;
            if let Kind::Conn(h) = so.kind {
                w.stack.tcp_set_user_timeout(h, ival as u32);
            }
            0
        }
        (libc::SOL_SOCKET, libc::SO_SNDBUF) => {
            // Linux doubles the value for its bookkeeping and takes at least 4608.
            so.opts.snd_buf = (ival.max(0) as u32).saturating_mul(2).max(4608);
            if let Kind::Conn(h) = so.kind {
                w.stack.tcp_set_snd_buf(h, so.opts.snd_buf);
            }
            0
        }
        (libc::SOL_SOCKET, libc::SO_RCVBUF) => {
            so.opts.rcv_buf = (ival.max(0) as u32).saturating_mul(2).max(2304);
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => {
            so.opts.nodelay = ival != 0;
            if let Kind::Conn(h) = so.kind {
                w.stack.tcp_set_nodelay(h, ival != 0, now);
                w.flush();
            }
            0
        }
        (libc::IPPROTO_TCP, libc::TCP_CONGESTION) => {
            if optval.is_null() {
                return err(libc::EFAULT);
            }
            let bytes = std::slice::from_raw_parts(optval as *const u8, optlen as usize);
            let name = bytes.split(|&c| c == 0).next().unwrap_or(&[]);
            let cc = match name {
                b"cubic" => Congestion::Cubic,
                b"reno" => Congestion::NewReno,
                _ => return err(libc::ENOENT),
            };
            so.opts.congestion = cc;
            if let Kind::Conn(h) = so.kind {
                w.stack.tcp_set_congestion(h, cc);
            }
            0
        }
        _ => err(libc::ENOPROTOOPT),
    }
}

unsafe extern "C" fn pd_poll(
    ud: *mut c_void,
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: c_int,
) -> c_int {
    let s = sh(ud);
    let fds: &mut [libc::pollfd] = if fds.is_null() || nfds == 0 {
        &mut []
    } else {
        std::slice::from_raw_parts_mut(fds, nfds as usize)
    };
    let mut w = s.lock();
    let deadline = (timeout >= 0).then(|| w.now + timeout as u64 * 1000);
    loop {
        let mut ready = 0;
        for p in fds.iter_mut() {
            let ev = w.poll_events(p.fd);
            let always = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;
            p.revents = ev & (p.events | always);
            if p.revents != 0 {
                ready += 1;
            }
        }
        if ready > 0 {
            return ready;
        }
        if deadline.is_some_and(|d| w.now >= d) {
            return 0;
        }
        w = s.wait(w);
    }
}

unsafe extern "C" fn pd_netdev_send(ud: *mut c_void, buf: *const c_void, n: size_t) -> c_int {
    let s = sh(ud);
    let pkt = std::slice::from_raw_parts(buf as *const u8, n);
    let mut w = s.lock();
    let ok = w.inject(pkt);
    drop(w);
    s.changed();
    if ok {
        0
    } else {
        -1
    }
}

unsafe extern "C" fn pd_netdev_receive(
    ud: *mut c_void,
    buf: *mut c_void,
    count: *mut size_t,
    time_usecs: *mut i64,
) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    if w.out.is_empty() {
        // Nothing to send now: run the clock to the stack's next timer (a retransmission, a
        // delayed ACK, a probe...). A timer that sends nothing is followed by the next one.
        for _ in 0..64 {
            let Some(t) = w.stack.poll_timeout() else {
                break;
            };
            let t = t.total_micros().max(w.now + 1);
            w.advance(t);
            if !w.out.is_empty() {
                break;
            }
        }
        drop(w);
        s.changed();
        w = s.lock();
    }
    match w.out.pop_front() {
        Some((t, pkt)) => {
            w.idle_receives = 0;
            let n = pkt.len().min(*count);
            std::ptr::copy_nonoverlapping(pkt.as_ptr(), buf as *mut u8, n);
            *count = n;
            *time_usecs = t as i64;
            0
        }
        None => {
            // No packet and no timer: packetdrill calls again at once. A blocking call on its
            // other thread may still produce one; after ~2 s of real time, give up (count 0 fails
            // the script instead of hanging until the outer time-out).
            w.idle_receives += 1;
            if w.idle_receives > 2000 {
                w.idle_receives = 0;
                *count = 0;
                return 0;
            }
            drop(w);
            std::thread::sleep(std::time::Duration::from_millis(1));
            -1
        }
    }
}

unsafe extern "C" fn pd_usleep(ud: *mut c_void, us: c_uint) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    let to = w.now + u64::from(us);
    w.advance(to);
    drop(w);
    s.changed();
    0
}

unsafe extern "C" fn pd_gettimeofday(
    ud: *mut c_void,
    tv: *mut libc::timeval,
    _tz: *mut c_void,
) -> c_int {
    let s = sh(ud);
    let mut w = s.lock();
    let to = w.now + 1;
    let before = w.out.len();
    w.advance(to);
    let now = w.now;
    let sent = w.out.len() != before;
    drop(w);
    if sent {
        s.changed();
    }
    if !tv.is_null() {
        (*tv).tv_sec = (now / 1_000_000) as libc::time_t;
        (*tv).tv_usec = (now % 1_000_000) as libc::suseconds_t;
    }
    0
}

unsafe extern "C" fn pd_epoll_create(ud: *mut c_void, size: c_int) -> c_int {
    if size <= 0 {
        return err(libc::EINVAL);
    }
    let fd = new_fd();
    if fd < 0 {
        return -1;
    }
    sh(ud).lock().epolls.insert(fd, Vec::new());
    fd
}

unsafe extern "C" fn pd_epoll_ctl(
    ud: *mut c_void,
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> c_int {
    let mut w = sh(ud).lock();
    if !w.epolls.contains_key(&epfd) {
        return err(libc::EBADF);
    }
    if fd == epfd {
        return err(libc::EINVAL);
    }
    if !w.socks.contains_key(&fd) {
        // Only the library's sockets (and no nested epoll) can be watched here.
        return err(if w.epolls.contains_key(&fd) {
            libc::EINVAL
        } else {
            libc::EPERM
        });
    }
    let (events, data) = if ev.is_null() {
        if op != libc::EPOLL_CTL_DEL {
            return err(libc::EFAULT);
        }
        (0, 0)
    } else {
        let e = ev.read_unaligned();
        (e.events, e.u64)
    };
    let list = w.epolls.get_mut(&epfd).expect("checked");
    let at = list.iter().position(|e| e.fd == fd);
    match (op, at) {
        (libc::EPOLL_CTL_ADD, Some(_)) => err(libc::EEXIST),
        (libc::EPOLL_CTL_ADD, None) => {
            list.push(EpEntry {
                fd,
                events,
                data,
                reported: 0,
                rx_seen: u64::MAX,
            });
            0
        }
        (libc::EPOLL_CTL_MOD, Some(i)) => {
            // Linux re-arms: the current state is reported again.
            list[i] = EpEntry {
                fd,
                events,
                data,
                reported: 0,
                rx_seen: u64::MAX,
            };
            0
        }
        (libc::EPOLL_CTL_DEL, Some(i)) => {
            list.remove(i);
            0
        }
        (libc::EPOLL_CTL_MOD | libc::EPOLL_CTL_DEL, None) => err(libc::ENOENT),
        _ => err(libc::EINVAL),
    }
}

/// Bytes a connection ever received (read plus pending): edge-triggered EPOLLIN fires when it
/// grows, as Linux's data-ready callback does.
fn rx_total(w: &World, fd: c_int) -> u64 {
    match w.socks.get(&fd) {
        Some(so) => {
            let pending = match so.kind {
                Kind::Conn(h) => w.stack.tcp_recv_pending(h) as u64,
                Kind::Listener(l) => w.stack.tcp_accept_pending(l) as u64,
                Kind::Fresh => 0,
            };
            so.read_total + pending
        }
        None => 0,
    }
}

unsafe extern "C" fn pd_epoll_wait(
    ud: *mut c_void,
    epfd: c_int,
    out: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    if max <= 0 {
        return err(libc::EINVAL);
    }
    if out.is_null() {
        return err(libc::EFAULT);
    }
    let s = sh(ud);
    let mut w = s.lock();
    if !w.epolls.contains_key(&epfd) {
        return err(libc::EINVAL);
    }
    let deadline = (timeout >= 0).then(|| w.now + timeout as u64 * 1000);
    loop {
        let Some(mut list) = w.epolls.remove(&epfd) else {
            return err(libc::EBADF);
        };
        let mut n = 0usize;
        for e in list.iter_mut() {
            if n == max as usize {
                break;
            }
            if e.events & libc::EPOLLONESHOT as u32 != 0 && e.reported == u32::MAX {
                continue;
            }
            let ev = w.poll_events(e.fd) as u16 as u32;
            let always = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
            let ready = ev & (e.events | always);
            if ready == 0 {
                e.reported = 0;
                continue;
            }
            let rx = rx_total(&w, e.fd);
            if e.events & libc::EPOLLET as u32 != 0 {
                // Edge-triggered: only an event that was not ready at the last report, or new
                // data since then.
                let new_bits = ready & !e.reported != 0;
                let new_data = ready & libc::EPOLLIN as u32 != 0 && rx != e.rx_seen;
                e.reported = ready;
                e.rx_seen = rx;
                if !new_bits && !new_data {
                    continue;
                }
            }
            out.add(n).write_unaligned(libc::epoll_event {
                events: ready,
                u64: e.data,
            });
            n += 1;
            if e.events & libc::EPOLLONESHOT as u32 != 0 {
                e.reported = u32::MAX;
            }
        }
        w.epolls.insert(epfd, list);
        if n > 0 {
            return n as c_int;
        }
        if deadline.is_some_and(|d| w.now >= d) {
            return 0;
        }
        w = s.wait(w);
    }
}
unsafe extern "C" fn pd_pipe(_ud: *mut c_void, fds: *mut c_int) -> c_int {
    libc::pipe(fds)
}
unsafe extern "C" fn pd_splice(
    _ud: *mut c_void,
    _fd_in: c_int,
    _off_in: *mut i64,
    _fd_out: c_int,
    _off_out: *mut i64,
    _len: size_t,
    _flags: c_uint,
) -> c_int {
    err(libc::ENOSYS)
}

/// packetdrill's `struct packetdrill_interface` (packetdrill.h), field for field.
#[repr(C)]
pub struct PacketdrillInterface {
    userdata: *mut c_void,
    free: unsafe extern "C" fn(*mut c_void),
    socket: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int) -> c_int,
    bind: unsafe extern "C" fn(*mut c_void, c_int, *const libc::sockaddr, libc::socklen_t) -> c_int,
    listen: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int,
    accept: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> c_int,
    connect:
        unsafe extern "C" fn(*mut c_void, c_int, *const libc::sockaddr, libc::socklen_t) -> c_int,
    read: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t) -> ssize_t,
    readv: unsafe extern "C" fn(*mut c_void, c_int, *const libc::iovec, c_int) -> ssize_t,
    recv: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, size_t, c_int) -> ssize_t,
    recvfrom: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *mut c_void,
        size_t,
        c_int,
        *mut libc::sockaddr,
        *mut libc::socklen_t,
    ) -> ssize_t,
    recvmsg: unsafe extern "C" fn(*mut c_void, c_int, *mut libc::msghdr, c_int) -> ssize_t,
    write: unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t) -> ssize_t,
    writev: unsafe extern "C" fn(*mut c_void, c_int, *const libc::iovec, c_int) -> ssize_t,
    send: unsafe extern "C" fn(*mut c_void, c_int, *const c_void, size_t, c_int) -> ssize_t,
    sendto: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *const c_void,
        size_t,
        c_int,
        *const libc::sockaddr,
        libc::socklen_t,
    ) -> ssize_t,
    sendmsg: unsafe extern "C" fn(*mut c_void, c_int, *const libc::msghdr, c_int) -> ssize_t,
    fcntl: unsafe extern "C" fn(*mut c_void, c_int, c_int, c_ulong) -> c_int,
    ioctl: unsafe extern "C" fn(*mut c_void, c_int, c_ulong, c_ulong) -> c_int,
    close: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    shutdown: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> c_int,
    getsockopt: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        c_int,
        c_int,
        *mut c_void,
        *mut libc::socklen_t,
    ) -> c_int,
    setsockopt: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        c_int,
        c_int,
        *const c_void,
        libc::socklen_t,
    ) -> c_int,
    poll: unsafe extern "C" fn(*mut c_void, *mut libc::pollfd, libc::nfds_t, c_int) -> c_int,
    netdev_send: unsafe extern "C" fn(*mut c_void, *const c_void, size_t) -> c_int,
    netdev_receive: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut size_t, *mut i64) -> c_int,
    usleep: unsafe extern "C" fn(*mut c_void, c_uint) -> c_int,
    gettimeofday: unsafe extern "C" fn(*mut c_void, *mut libc::timeval, *mut c_void) -> c_int,
    epoll_create: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    epoll_ctl:
        unsafe extern "C" fn(*mut c_void, c_int, c_int, c_int, *mut libc::epoll_event) -> c_int,
    epoll_wait:
        unsafe extern "C" fn(*mut c_void, c_int, *mut libc::epoll_event, c_int, c_int) -> c_int,
    pipe: unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int,
    splice: unsafe extern "C" fn(
        *mut c_void,
        c_int,
        *mut i64,
        c_int,
        *mut i64,
        size_t,
        c_uint,
    ) -> c_int,
}

/// Entry point packetdrill looks up after `dlopen`.
#[no_mangle]
pub unsafe extern "C" fn packetdrill_interface_init(
    flags: *const c_char,
    ifc: *mut PacketdrillInterface,
) -> c_int {
    if ifc.is_null() {
        return -1;
    }
    let (local, remote) = parse_flags(flags);
    let shared = Box::into_raw(Box::new(Shared::new(local, remote)));
    std::ptr::write(
        ifc,
        PacketdrillInterface {
            userdata: shared as *mut c_void,
            free: pd_free,
            socket: pd_socket,
            bind: pd_bind,
            listen: pd_listen,
            accept: pd_accept,
            connect: pd_connect,
            read: pd_read,
            readv: pd_readv,
            recv: pd_recv,
            recvfrom: pd_recvfrom,
            recvmsg: pd_recvmsg,
            write: pd_write,
            writev: pd_writev,
            send: pd_send,
            sendto: pd_sendto,
            sendmsg: pd_sendmsg,
            fcntl: pd_fcntl,
            ioctl: pd_ioctl,
            close: pd_close,
            shutdown: pd_shutdown,
            getsockopt: pd_getsockopt,
            setsockopt: pd_setsockopt,
            poll: pd_poll,
            netdev_send: pd_netdev_send,
            netdev_receive: pd_netdev_receive,
            usleep: pd_usleep,
            gettimeofday: pd_gettimeofday,
            epoll_create: pd_epoll_create,
            epoll_ctl: pd_epoll_ctl,
            epoll_wait: pd_epoll_wait,
            pipe: pd_pipe,
            splice: pd_splice,
        },
    );
    0
}
