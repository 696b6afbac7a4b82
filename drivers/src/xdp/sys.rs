//! System-level pieces of the AF_XDP port: the UMEM mapping, libxdp UMEM and socket objects, XSKMAP
//! access, socket options, interface queries. Everything unsafe about the kernel interface lives here;
//! the data path (`datapath.rs`) only sees ring pointers. (The BPF calls of cnet's own redirect program
//! live next to it, in `redirect.rs`.)

use super::datapath::{Kernel, Rings, XdpDesc};
use super::ring::{Consumer, Producer, RingPtrs};
use super::{HugePages, XdpError, XdpKernelStats};
use cnet_stack::MacAddr;
use libxdp_sys::{
    xsk_ring_cons, xsk_ring_prod, xsk_socket, xsk_socket_config, xsk_umem, xsk_umem_config,
};
use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex, PoisonError};

const HUGE_PAGE: usize = 2 << 20;

/// An anonymous memory mapping: the UMEM's frames.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: *mut u8,
    len: usize,
    huge: bool,
}

// SAFETY: the mapping is plain memory with no thread affinity. Who may touch which frame is decided
// by the pools built over it (disjoint ranges, one pool per queue) and by the rings; this type only
// keeps the mapping alive and unmaps it once, when the last `Arc` goes.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` gives no access to the memory.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes, with huge pages as `huge` says.
    pub(crate) fn new(len: usize, huge: HugePages) -> Result<Mmap, XdpError> {
        if huge != HugePages::Never {
            let rounded = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
            match Self::map(rounded, libc::MAP_HUGETLB) {
                Ok(m) => return Ok(m),
                Err(e) if huge == HugePages::Required => {
                    return Err(XdpError::HugePages {
                        bytes: rounded,
                        source: e,
                    })
                }
                Err(e) => tracing::warn!(
                    bytes = rounded,
                    error = %e,
                    "no huge pages for the UMEM (reserve some with vm.nr_hugepages); using 4 KiB pages"
                ),
            }
        }
        Self::map(len, 0).map_err(XdpError::Mmap)
    }

    fn map(len: usize, extra: libc::c_int) -> io::Result<Mmap> {
        // SAFETY: an anonymous private mapping at an address the kernel picks; no existing memory
        // is affected. The result is checked against MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap {
            ptr: p.cast(),
            len,
            huge: extra != 0,
        })
    }

    /// Start of the mapping.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Backed by huge pages.
    pub(crate) fn huge(&self) -> bool {
        self.huge
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; this is the only unmap (Drop runs
        // once, after every pool and UMEM holding an `Arc` to this mapping is gone).
        if unsafe { libc::munmap(self.ptr.cast(), self.len) } != 0 {
            tracing::error!(error = %io::Error::last_os_error(), "munmap of UMEM failed");
        }
    }
}

/// A libxdp UMEM over an [`Mmap`] and the fill/completion ring structs of its first socket.
///
/// libxdp keeps pointers to the `xsk_ring_prod`/`xsk_ring_cons` passed to `xsk_umem__create` and
/// dereferences them when the first socket is deleted, so they are boxed (stable address) and live
/// as long as this value, which outlives every socket (each holds an `Arc`).
#[derive(Debug)]
pub(crate) struct Umem {
    ptr: *mut xsk_umem,
    fill0: Box<xsk_ring_prod>,
    comp0: Box<xsk_ring_cons>,
    /// A socket has already used `fill0`/`comp0`.
    first_taken: bool,
    mem: Arc<Mmap>,
}

// SAFETY: libxdp's UMEM object has no thread affinity; every use of `ptr` (socket creation and
// deletion, UMEM deletion) happens under the `Mutex` that wraps this value in `SharedUmem`.
unsafe impl Send for Umem {}

/// A UMEM shared by the sockets of several queues.
pub(crate) type SharedUmem = Arc<Mutex<Umem>>;

fn neg_errno(rc: libc::c_int) -> io::Error {
    io::Error::from_raw_os_error(rc.checked_neg().unwrap_or(libc::EINVAL))
}

impl Umem {
    /// Registers `mem` as a UMEM.
    pub(crate) fn create(mem: Arc<Mmap>, cfg: xsk_umem_config) -> Result<Umem, XdpError> {
        // SAFETY: zeroed ring structs are valid (integers and null pointers); libxdp fills them.
        let (mut fill0, mut comp0): (Box<xsk_ring_prod>, Box<xsk_ring_cons>) =
            unsafe { (Box::new(std::mem::zeroed()), Box::new(std::mem::zeroed())) };
        let mut ptr = ptr::null_mut();
        // SAFETY: `mem` is a live mapping of `len` bytes that stays alive as long as the UMEM (we
        // hold an `Arc`); the ring structs are boxed and outlive the UMEM; `cfg` is a valid config.
        let rc = unsafe {
            libxdp_sys::xsk_umem__create(
                &mut ptr,
                mem.ptr().cast(),
                mem.len() as u64,
                &mut *fill0,
                &mut *comp0,
                &cfg,
            )
        };
        if rc != 0 || ptr.is_null() {
            return Err(XdpError::Umem(neg_errno(if rc == 0 {
                -libc::EINVAL
            } else {
                rc
            })));
        }
        Ok(Umem {
            ptr,
            fill0,
            comp0,
            first_taken: false,
            mem,
        })
    }

    /// The mapping behind the UMEM.
    pub(crate) fn mem(&self) -> &Arc<Mmap> {
        &self.mem
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `xsk_umem__create` and is deleted only here. Every socket holds an
        // `Arc` to this UMEM and deletes itself first, so libxdp's refcount is 0; the ring structs
        // libxdp may dereference are fields, still alive during `drop`.
        let rc = unsafe { libxdp_sys::xsk_umem__delete(self.ptr) };
        if rc != 0 {
            tracing::error!(error = %neg_errno(rc), "xsk_umem__delete failed");
        }
    }
}

/// One AF_XDP socket bound to a queue.
#[derive(Debug)]
pub(crate) struct Xsk {
    ptr: *mut xsk_socket,
    fd: RawFd,
    rx: Box<xsk_ring_cons>,
    tx: Box<xsk_ring_prod>,
    /// Fill/completion rings of a socket that is not the UMEM's first (libxdp keeps pointers to
    /// them in the socket's context until it is deleted).
    own_fq_cq: Option<(Box<xsk_ring_prod>, Box<xsk_ring_cons>)>,
    umem: SharedUmem,
}

// SAFETY: the socket and its rings have no thread affinity; deletion is serialised with every other
// libxdp call on the shared UMEM by its mutex. The rings are single-producer/single-consumer per side
// and only this value's owner (one `XdpPort`) uses the user-space side.
unsafe impl Send for Xsk {}

impl Xsk {
    /// Creates a socket on `ifname`/`queue` over `umem` (the UMEM's first socket uses the UMEM's
    /// own fill/completion rings, later ones get their own: `xsk_socket__create_shared`).
    pub(crate) fn create(
        umem: &SharedUmem,
        ifname: &CStr,
        queue: u32,
        cfg: &xsk_socket_config,
    ) -> io::Result<Xsk> {
        let mut guard = umem.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: zeroed ring structs are valid; libxdp fills them.
        let (mut rx, mut tx): (Box<xsk_ring_cons>, Box<xsk_ring_prod>) =
            unsafe { (Box::new(std::mem::zeroed()), Box::new(std::mem::zeroed())) };
        let mut own: Option<(Box<xsk_ring_prod>, Box<xsk_ring_cons>)> = if guard.first_taken {
            // SAFETY: as above.
            Some(unsafe { (Box::new(std::mem::zeroed()), Box::new(std::mem::zeroed())) })
        } else {
            None
        };
        let (fq, cq): (*mut xsk_ring_prod, *mut xsk_ring_cons) = match own.as_mut() {
            Some((f, c)) => (&mut **f, &mut **c),
            None => (&mut *guard.fill0, &mut *guard.comp0),
        };
        let mut ptr = ptr::null_mut();
        // SAFETY: `guard.ptr` is a live UMEM (we hold its lock); every ring struct is boxed and
        // lives until the socket is deleted (fields of the returned `Xsk`, or of the UMEM for the
        // first socket, which outlives it); `ifname` is NUL-terminated; `cfg` is valid.
        let rc = unsafe {
            libxdp_sys::xsk_socket__create_shared(
                &mut ptr,
                ifname.as_ptr(),
                queue,
                guard.ptr,
                &mut *rx,
                &mut *tx,
                fq,
                cq,
                cfg,
            )
        };
        if rc != 0 || ptr.is_null() {
            return Err(neg_errno(if rc == 0 { -libc::EINVAL } else { rc }));
        }
        guard.first_taken = true;
        // SAFETY: `ptr` is the socket just created.
        let fd = unsafe { libxdp_sys::xsk_socket__fd(ptr) };
        drop(guard);
        Ok(Xsk {
            ptr,
            fd,
            rx,
            tx,
            own_fq_cq: own,
            umem: Arc::clone(umem),
        })
    }

    /// The socket's file descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is open as long as the socket, which lives as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// User-space views of the four rings.
    ///
    /// # Safety
    /// The returned rings point into memory mapped for this socket: they must not be used after
    /// `self` is dropped, and only one set of rings may exist per socket.
    pub(crate) unsafe fn rings(&self) -> Rings {
        let guard = self.umem.lock().unwrap_or_else(PoisonError::into_inner);
        let (f, c): (&xsk_ring_prod, &xsk_ring_cons) = match &self.own_fq_cq {
            Some((f, c)) => (f, c),
            None => (&guard.fill0, &guard.comp0),
        };
        fn prod<T>(r: &xsk_ring_prod) -> RingPtrs<T> {
            RingPtrs {
                producer: r.producer,
                consumer: r.consumer,
                flags: r.flags,
                ring: r.ring.cast(),
                size: r.size,
            }
        }
        fn cons<T>(r: &xsk_ring_cons) -> RingPtrs<T> {
            RingPtrs {
                producer: r.producer,
                consumer: r.consumer,
                flags: r.flags,
                ring: r.ring.cast(),
                size: r.size,
            }
        }
        // SAFETY: libxdp set these pointers to the rings it mmap'd for this socket (power-of-two
        // sizes, aligned u32 indices the kernel accesses atomically); they stay mapped until
        // `xsk_socket__delete` in our `Drop` (caller's contract: rings do not outlive `self`).
        unsafe {
            Rings {
                fill: Producer::new(prod::<u64>(f)),
                comp: Consumer::new(cons::<u64>(c)),
                rx: Consumer::new(cons::<XdpDesc>(&self.rx)),
                tx: Producer::new(prod::<XdpDesc>(&self.tx)),
            }
        }
    }

    /// Kernel statistics (`XDP_STATISTICS`).
    pub(crate) fn stats(&self) -> io::Result<XdpKernelStats> {
        let mut s = MaybeUninit::<libxdp_sys::xdp_statistics>::zeroed();
        let mut len = std::mem::size_of::<libxdp_sys::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` is a writable buffer of `len` bytes; the kernel writes at most `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                libxdp_sys::XDP_STATISTICS as libc::c_int,
                s.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zero-initialised and (partly) written by the kernel: every bit pattern is a valid
        // struct of u64s.
        let s = unsafe { s.assume_init() };
        Ok(XdpKernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Sets an integer `SOL_SOCKET` option.
    pub(crate) fn set_sockopt(&self, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` is a readable c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Inserts this socket into an XSKMAP at key `queue`.
    pub(crate) fn insert_into_map(&self, map: BorrowedFd<'_>, queue: u32) -> io::Result<()> {
        let fd: u32 = self.fd as u32;
        // SAFETY: key and value point to u32s as an XSKMAP (u32 -> u32) expects; `map` is open.
        let rc = unsafe {
            libxdp_sys::bpf_map_update_elem(
                map.as_raw_fd(),
                (&queue as *const u32).cast(),
                (&fd as *const u32).cast(),
                0,
            )
        };
        if rc != 0 {
            return Err(neg_errno(rc));
        }
        Ok(())
    }
}

impl Kernel for Xsk {
    fn wake_rx(&mut self) -> io::Result<()> {
        // SAFETY: a zero-length, non-blocking receive on our own socket with null buffers, which
        // the kernel accepts for AF_XDP (it only runs the RX/busy-poll path).
        let rc = unsafe {
            libc::recvfrom(
                self.fd,
                ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn kick_tx(&mut self) -> io::Result<()> {
        // SAFETY: a zero-length, non-blocking send on our own socket; AF_XDP then processes the TX
        // ring. No buffer is read.
        let rc =
            unsafe { libc::sendto(self.fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Xsk {
    fn drop(&mut self) {
        let _guard = self.umem.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `ptr` came from `xsk_socket__create_shared` and is deleted only here, under the
        // UMEM lock (libxdp updates the UMEM's context list). The ring structs libxdp dereferences
        // are fields of `self` or of the UMEM (kept alive by our `Arc`), all alive during `drop`.
        unsafe { libxdp_sys::xsk_socket__delete(self.ptr) };
    }
}

/// Opens a pinned BPF object (`bpf_obj_get`).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstring(path)?;
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let fd = unsafe { libxdp_sys::bpf_obj_get(c.as_ptr()) };
    if fd < 0 {
        return Err(neg_errno(fd));
    }
    // SAFETY: `fd` is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins a BPF object (`bpf_obj_pin`).
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = path_cstring(path)?;
    // SAFETY: `fd` is open, `c` is NUL-terminated.
    let rc = unsafe { libxdp_sys::bpf_obj_pin(fd.as_raw_fd(), c.as_ptr()) };
    if rc != 0 {
        return Err(neg_errno(rc));
    }
    Ok(())
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Loads libxdp's default XSK redirect program on `ifindex`; returns its XSKMAP.
pub(crate) fn setup_default_prog(ifindex: u32) -> io::Result<OwnedFd> {
    let mut map_fd: libc::c_int = -1;
    let ifindex =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `map_fd` is a writable int; libxdp loads and attaches the program.
    let rc = unsafe { libxdp_sys::xsk_setup_xdp_prog(ifindex, &mut map_fd) };
    if rc != 0 || map_fd < 0 {
        return Err(neg_errno(if rc == 0 { -libc::EINVAL } else { rc }));
    }
    // SAFETY: libxdp returned a new map descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(map_fd) })
}

/// Detaches whatever XDP program (or libxdp dispatcher) is attached to `ifindex`.
pub(crate) fn detach_xdp(ifindex: u32) -> io::Result<()> {
    let Ok(ifindex) = libc::c_int::try_from(ifindex) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: plain call; the result is an object pointer or an error encoded in the pointer,
    // decoded with `libxdp_get_error`.
    let mp = unsafe { libxdp_sys::xdp_multiprog__get_from_ifindex(ifindex) };
    // SAFETY: `libxdp_get_error` accepts any pointer libxdp returned.
    let err = unsafe { libxdp_sys::libxdp_get_error(mp.cast()) };
    if err != 0 {
        return Err(io::Error::from_raw_os_error((-err) as i32));
    }
    if mp.is_null() {
        return Ok(());
    }
    // SAFETY: `mp` is a valid multiprog object, detached then closed exactly once.
    let rc = unsafe {
        let rc = libxdp_sys::xdp_multiprog__detach(mp);
        libxdp_sys::xdp_multiprog__close(mp);
        rc
    };
    if rc != 0 {
        return Err(neg_errno(rc));
    }
    Ok(())
}

/// Index of `ifname` in the calling thread's network namespace.
pub(crate) fn ifindex(ifname: &CStr) -> io::Result<u32> {
    // SAFETY: `ifname` is NUL-terminated.
    let i = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

/// `struct ifreq`: name, then a 24-byte union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; 16],
    data: [u8; 24],
}

fn ifreq_ioctl(ifname: &CStr, req: libc::c_ulong) -> io::Result<[u8; 24]> {
    // SAFETY: an ordinary datagram socket, only used for interface ioctls, wrapped at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut r = IfReq {
        name: [0; 16],
        data: [0; 24],
    };
    for (d, s) in r.name.iter_mut().zip(ifname.to_bytes().iter().take(15)) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `r` is a properly laid out `struct ifreq` the kernel reads the name from and writes
    // the union of.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &mut r as *mut IfReq) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r.data)
}

/// MAC address of `ifname` (`SIOCGIFHWADDR`).
pub(crate) fn mac_of(ifname: &CStr) -> io::Result<MacAddr> {
    const SIOCGIFHWADDR: libc::c_ulong = 0x8927;
    let d = ifreq_ioctl(ifname, SIOCGIFHWADDR)?;
    // struct sockaddr: 2 bytes family, then the address.
    Ok(MacAddr([d[2], d[3], d[4], d[5], d[6], d[7]]))
}

/// MTU of `ifname` (`SIOCGIFMTU`).
pub(crate) fn mtu_of(ifname: &CStr) -> io::Result<usize> {
    const SIOCGIFMTU: libc::c_ulong = 0x8921;
    let d = ifreq_ioctl(ifname, SIOCGIFMTU)?;
    let mtu = libc::c_int::from_ne_bytes([d[0], d[1], d[2], d[3]]);
    Ok(usize::try_from(mtu).unwrap_or(0))
}

/// Waits up to `timeout_ms` for the socket to become readable; `true` if it did.
pub(crate) fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0 && p.revents & libc::POLLIN != 0)
}
