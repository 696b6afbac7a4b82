//! A port over a Linux TAP device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`, non-blocking).
//!
//! For machines without AF_XDP and as a comparison point for the AF_XDP port: one `read` per received
//! frame, one `writev` per transmitted frame, each copying between the kernel and a pool frame. The
//! port holds no frame between calls ([`Port::frames_held`] is 0): a received frame is copied into a
//! freshly allocated pool frame, a transmitted one is freed as soon as the kernel has copied it.
//!
//! The TAP interface is the kernel's end of a virtual cable; the stack is the host at the other end,
//! so it uses a MAC address of its own (given to [`TapPort::open`]), not the interface's.
//!
//! The device is created in the network namespace of the calling thread and disappears when the port
//! is dropped (it is not made persistent).

use crate::{Port, PortError, PortInfo};
use cnet_stack::{Batch, Instant, MacAddr, Pool};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const SIOCGIFMTU: libc::c_ulong = 0x8921;
/// Most segments of a chained frame written with one `writev`.
const MAX_SEGMENTS: usize = 16;

/// Errors opening a TAP port.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Interface names are 1..=15 bytes without NUL.
    #[error("bad TAP interface name {0:?}")]
    BadName(String),
    /// `/dev/net/tun` could not be opened (no tun module, or no permission).
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(io::Error),
    /// `TUNSETIFF` failed (`EPERM` without CAP_NET_ADMIN, `EBUSY` if the name is taken by another
    /// kind of device).
    #[error("TUNSETIFF {name}: {source}")]
    SetIff {
        /// Requested name.
        name: String,
        /// Error.
        source: io::Error,
    },
    /// Reading the interface's MTU failed.
    #[error("SIOCGIFMTU {name}: {source}")]
    Mtu {
        /// Interface name.
        name: String,
        /// Error.
        source: io::Error,
    },
}

/// Counters of a TAP port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapCounters {
    /// Frames received.
    pub rx_frames: u64,
    /// Frames transmitted.
    pub tx_frames: u64,
    /// Receive attempts stopped because the pool had no free frame.
    pub rx_no_frame: u64,
    /// Frames the kernel refused (`EIO`: interface down; `EINVAL`: malformed) or too chained to
    /// write; freed.
    pub tx_dropped: u64,
}

/// `struct ifreq` with the `ifr_flags` member of the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &[u8]) -> IfReq {
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        for (d, s) in r.name.iter_mut().zip(name.iter().take(15)) {
            *d = *s as libc::c_char;
        }
        r
    }

    fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A TAP device as a [`Port`].
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    name: String,
    mac: MacAddr,
    mtu: usize,
    counters: TapCounters,
}

fn is_would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR))
}

impl TapPort {
    /// Creates (or attaches to) TAP interface `name` — a pattern like `tap%d` lets the kernel pick —
    /// in the calling thread's network namespace. `mac` is the stack's own address on the link.
    /// The interface is left down; bring it up and address it with `ip`.
    pub fn open(name: &str, mac: MacAddr) -> Result<TapPort, TapError> {
        if name.is_empty() || name.len() >= 16 || name.contains('\0') {
            return Err(TapError::BadName(name.into()));
        }
        let path = CString::new("/dev/net/tun").map_err(|_| TapError::BadName(name.into()))?;
        // SAFETY: `path` is NUL-terminated; the result is checked and wrapped at once.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(TapError::OpenTun(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReq::new(name.as_bytes());
        let flags = IFF_TAP | IFF_NO_PI;
        req.data[..2].copy_from_slice(&flags.to_ne_bytes());
        // SAFETY: `req` is a properly laid out `struct ifreq` (name + flags) for TUNSETIFF, which
        // reads it and writes the chosen name back.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
        if rc != 0 {
            return Err(TapError::SetIff {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        let name = req.name();
        let mtu = mtu_of(&name).map_err(|source| TapError::Mtu {
            name: name.clone(),
            source,
        })?;
        tracing::info!(ifname = %name, %mac, mtu, "TAP port open");
        Ok(TapPort {
            fd,
            name,
            mac,
            mtu,
            counters: TapCounters::default(),
        })
    }

    /// The interface name (the kernel's choice when a `%d` pattern was given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counters.
    pub fn counters(&self) -> TapCounters {
        self.counters
    }

    /// Waits until a frame can be read or `timeout_ms` passes; `true` if readable.
    pub fn wait_rx(&self, timeout_ms: i32) -> Result<bool, PortError> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return if is_would_block(&e) {
                Ok(false)
            } else {
                Err(e.into())
            };
        }
        Ok(rc > 0 && p.revents & libc::POLLIN != 0)
    }
}

fn mtu_of(name: &str) -> io::Result<usize> {
    // SAFETY: an ordinary datagram socket for the interface ioctl, wrapped at once.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a new descriptor we own.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    let mut req = IfReq::new(name.as_bytes());
    // SAFETY: `req` is a `struct ifreq`; SIOCGIFMTU writes an int at the start of the union.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), SIOCGIFMTU as _, &mut req as *mut IfReq) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mtu = libc::c_int::from_ne_bytes([req.data[0], req.data[1], req.data[2], req.data[3]]);
    Ok(usize::try_from(mtu).unwrap_or(0))
}

impl AsFd for TapPort {
    /// The TAP file descriptor (for `poll`/`epoll`).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Port for TapPort {
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        let mut got = 0;
        while !batch.is_full() {
            let Some(f) = pool.alloc() else {
                self.counters.rx_no_frame += 1;
                break;
            };
            let headroom = pool.headroom();
            let buf = &mut pool.buffer_mut(&f)[headroom..];
            // SAFETY: `buf` is a writable slice of the frame; read writes at most `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                pool.free(f);
                if n == 0 {
                    break;
                }
                let e = io::Error::last_os_error();
                if is_would_block(&e) {
                    break;
                }
                return match e.raw_os_error() {
                    Some(libc::EBADFD | libc::ENODEV) => {
                        Err(PortError::Unavailable(format!("TAP {}: {e}", self.name)))
                    }
                    _ => Err(e.into()),
                };
            }
            let ok = pool.set_window(&f, headroom, n as usize);
            if !ok {
                pool.free(f);
                continue;
            }
            if let Err(f) = batch.push(f) {
                pool.free(f);
                break;
            }
            got += 1;
        }
        self.counters.rx_frames += got as u64;
        Ok(got)
    }

    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        let mut taken = 0;
        let mut result = Ok(());
        for f in batch.iter() {
            let mut iov = [libc::iovec {
                iov_base: core::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEGMENTS];
            let mut segs = 0;
            let mut too_long = false;
            for seg in pool.chain_iter(f) {
                if segs == MAX_SEGMENTS {
                    too_long = true;
                    break;
                }
                iov[segs] = libc::iovec {
                    iov_base: seg.as_ptr() as *mut libc::c_void,
                    iov_len: seg.len(),
                };
                segs += 1;
            }
            if too_long {
                self.counters.tx_dropped += 1;
                taken += 1;
                continue;
            }
            // SAFETY: `iov[..segs]` describe live, readable slices of the pool (borrowed for the
            // duration of the call); writev only reads them.
            let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), segs as libc::c_int) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if is_would_block(&e) || e.raw_os_error() == Some(libc::ENOBUFS) {
                    break;
                }
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                ) {
                    self.counters.tx_dropped += 1;
                    taken += 1;
                    continue;
                }
                result = Err(PortError::Io(e));
                break;
            }
            self.counters.tx_frames += 1;
            taken += 1;
        }
        for f in batch.drain_front(taken) {
            pool.free(f);
        }
        result.map(|()| taken)
    }

    fn info(&self) -> PortInfo {
        PortInfo {
            name: self.name.clone(),
            mac: self.mac,
            mtu: self.mtu,
        }
    }
}
