//! AF_XDP port: the UMEM is the stack's frame pool, received frames are processed in place and
//! transmitted from where they are.
//!
//! ## Layout
//! - [`XdpConfig`] → [`XdpPort::open`] (one queue, its own UMEM) or [`XdpPort::open_all`] (every
//!   configured queue). Each gives back `(XdpPort, Pool)`: the [`Pool`] goes to the stack, the port
//!   keeps only the ring state and what it needs to turn a frame index into a UMEM address.
//! - Pool frame `i` of queue `q` is UMEM frame `q_first + i`, at UMEM offset
//!   `(q_first + i) * frame_size`. RX: descriptor → `Frame::from_index(addr / frame_size - q_first)`,
//!   data window = `addr % frame_size`, `len` (after the kernel's 256-byte XDP headroom, so a reply can
//!   be built in place with room for headers). TX: descriptor = frame base + data offset, length.
//! - Fill and completion rings are refilled / drained in batches inside `rx_burst` and `tx_burst`;
//!   a transmitted frame goes back to the pool (`pool.free`) only when its completion arrives.
//!   [`Port::frames_held`] = frames on the fill ring + frames awaiting completion, so after any run
//!   `pool.available() + port.frames_held() + frames the stack holds == pool.capacity()`.
//!
//! ## Why libxdp directly for the UMEM and socket, and xsk-rs for the rest
//! `xsk_rs::Umem::new` maps its own memory and exposes neither the region's base pointer nor a way to
//! build a UMEM over memory the caller owns (frame access goes through its per-descriptor `FrameDesc`
//! API); its `Socket::new` only takes such a `Umem`. The pool must *be* the UMEM, so this module maps
//! the memory itself ([`HugePages`]: `MAP_HUGETLB` with a logged fallback), registers it with
//! `libxdp_sys::xsk_umem__create`, and creates sockets with `xsk_socket__create_shared` (libxdp-sys is
//! the crate xsk-rs itself is built on). xsk-rs is used where it fits: its validated `UmemConfig`,
//! `SocketConfig` and flag types build the libxdp configuration structs. The ring operations are
//! libxdp's inline helpers re-done in Rust (`ring.rs`) so the data path (`datapath.rs`) is tested
//! without root against a simulated kernel.
//!
//! ## Modes
//! - Attach ([`AttachMode`]): native, generic, or native with fallback to generic. Only relevant when
//!   the port loads the program itself.
//! - Bind ([`BindMode`]): copy, zero-copy, or zero-copy with fallback to copy (veth answers
//!   `EOPNOTSUPP` to zero-copy; explicit zero-copy then fails with [`XdpError::ZeroCopyUnsupported`]).
//!   Each fallback is logged and the outcome is in [`XdpPort::mode`].
//! - `need_wakeup`: with it, system calls happen only when the kernel sets the ring's wake-up flag
//!   (plus every empty RX burst when busy polling); without it, every TX burst calls `sendto`.
//! - Busy polling ([`BusyPoll`]): `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET` on each
//!   socket.
//!
//! ## Several queues
//! One socket per queue. With [`XdpConfig::shared_umem`] one UMEM of `frames * queues` frames is split
//! into disjoint per-queue ranges, each its own [`Pool`]; the first socket owns the UMEM's fill and
//! completion rings, the others are created with `xsk_socket__create_shared` and get their own. A frame
//! lent on queue q's fill ring comes back on queue q's RX ring and a frame sent on queue q completes on
//! queue q's completion ring, so the ranges never mix. Each `(XdpPort, Pool)` pair can move to its own
//! thread; libxdp calls on the shared UMEM (socket deletion) are serialised by a mutex.
//!
//! ## XDP program and XSKMAP ([`XskMapSource`])
//! - `SelfLoad`: libxdp loads its default redirect program when the first socket is created and
//!   detaches it when the last one is deleted (on drop). Needs root. Takes every frame of the queue.
//! - `Redirect`: cnet's own program ([`RedirectProgram`], `redirect.rs`, built by `bpf.rs`): only
//!   ARP and IPv4 for the stack's addresses come to the port, the rest goes to the kernel. The port
//!   attaches it (shared by the interface's queues), then proceeds as with `Fd`. The addresses come
//!   from the stack through [`Port::local_addrs_changed`].
//! - `Fd(fd)` / `Pinned(path)`: program loading is inhibited (`XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD`);
//!   the port inserts its socket with `bpf_map_update_elem(map, &queue, &xsk_fd)`. The kernel removes
//!   the entry when the socket closes. [`XskProgram`] is the privileged half for development and tests:
//!   it loads libxdp's default program and hands out (or pins) the map.
//!
//! The port works in the network namespace of the thread that opens it (interface lookups happen
//! then); the socket stays bound to that device wherever it is used afterwards.

/// Why AF_XDP cannot be used by this process, if it cannot: not root, or the kernel refuses AF_XDP
/// sockets. (A process with only CAP_NET_RAW and a map handed over can still use it, see
/// [`XskMapSource`]; this check is for tests and demos that set everything up themselves.)
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "not root: creating namespaces and loading the XDP program needs CAP_SYS_ADMIN, \
             CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF and locked memory"
                .into(),
        );
    }
    // SAFETY: creating and closing a socket; nothing is shared.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Some(format!(
            "this kernel refuses AF_XDP sockets: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` is ours and open.
    unsafe { libc::close(fd) };
    None
}

mod bpf;
mod config;
mod datapath;
mod log;
mod redirect;
mod ring;
mod sys;

pub use config::{
    AttachMode, BindMode, BusyPoll, HugePages, RingSizes, XdpConfig, XdpConfigError, XskMapSource,
    XDP_PACKET_HEADROOM,
};
pub use redirect::{attached_addrs, RedirectProgram, ADDR_MAP_NAME, MAX_ADDRS, PROG_NAME};

use crate::{Port, PortError, PortInfo};
use cnet_stack::buf::PoolError;
use cnet_stack::{Batch, Instant, Pool};
use datapath::Datapath;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sys::{Mmap, SharedUmem, Umem, Xsk};
use xsk_rs::config::{
    BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};

/// Errors opening or querying an AF_XDP port.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The configuration cannot work.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(#[from] XdpConfigError),
    /// The interface does not exist in this network namespace.
    #[error("interface {ifname:?}: {source}")]
    NoSuchInterface {
        /// Interface name.
        ifname: String,
        /// Lookup error.
        source: io::Error,
    },
    /// Mapping the UMEM failed.
    #[error("mmap of the UMEM failed: {0}")]
    Mmap(io::Error),
    /// Huge pages were required and are not available.
    #[error("{bytes} bytes of huge pages for the UMEM not available (vm.nr_hugepages): {source}")]
    HugePages {
        /// Bytes asked for.
        bytes: usize,
        /// mmap error.
        source: io::Error,
    },
    /// Registering the UMEM failed (`EPERM`: no CAP_NET_RAW; `ENOBUFS`/`ENOMEM`: locked-memory limit).
    #[error("xsk_umem__create failed: {0}")]
    Umem(io::Error),
    /// Zero-copy was required and the driver does not support it.
    #[error("zero-copy AF_XDP is not supported by {ifname} queue {queue} (EOPNOTSUPP; veth has no zero-copy): use BindMode::Copy or Auto")]
    ZeroCopyUnsupported {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
    },
    /// Creating or binding the socket failed in every mode tried.
    #[error("AF_XDP socket on {ifname} queue {queue} failed (tried {tried}): {source}")]
    Socket {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// Modes tried, in order.
        tried: String,
        /// The last error.
        source: io::Error,
    },
    /// Opening the pinned XSKMAP failed.
    #[error("cannot open pinned XSKMAP {path}: {source}")]
    PinnedMap {
        /// Pin path.
        path: PathBuf,
        /// `bpf_obj_get` error.
        source: io::Error,
    },
    /// Inserting the socket into the XSKMAP failed.
    #[error("inserting the socket of queue {queue} into the XSKMAP failed: {source}")]
    MapUpdate {
        /// Queue (the map key).
        queue: u32,
        /// `bpf_map_update_elem` error.
        source: io::Error,
    },
    /// Loading, pinning or detaching the XDP program failed.
    #[error("XDP program on {ifname}: {what}: {source}")]
    Program {
        /// Interface.
        ifname: String,
        /// What failed.
        what: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// The kernel's verifier (or the loader) refused cnet's redirect program.
    #[error(
        "loading cnet's XDP redirect program for {ifname} failed: {source}; verifier log:\n{log}"
    )]
    ProgramLoad {
        /// Interface.
        ifname: String,
        /// `bpf_prog_load` error (`EPERM`: needs CAP_BPF or root).
        source: io::Error,
        /// The verifier's log (empty when the kernel gave none).
        log: String,
    },
    /// Updating the redirect program's address map failed (`E2BIG`: more than
    /// [`MAX_ADDRS`] addresses).
    #[error("address {addr} in the redirect program's map: {source}")]
    AddrMap {
        /// The address.
        addr: std::net::Ipv4Addr,
        /// `bpf_map_update_elem` / `bpf_map_delete_elem` error.
        source: io::Error,
    },
    /// A socket option failed.
    #[error("setsockopt {name}: {source}")]
    Sockopt {
        /// Option name.
        name: &'static str,
        /// Underlying error.
        source: io::Error,
    },
    /// Reading kernel statistics failed.
    #[error("XDP_STATISTICS: {0}")]
    Stats(io::Error),
    /// Building the pool over the UMEM failed.
    #[error("pool over the UMEM: {0}")]
    Pool(#[from] PoolError),
}

/// Kernel statistics of one socket (`getsockopt(XDP_STATISTICS)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpKernelStats {
    /// Frames dropped for reasons other than invalid descriptors (e.g. RX ring full in older kernels).
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the TX ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when asked to send.
    pub tx_ring_empty_descs: u64,
}

/// The port's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// TX completions received (frames given back to the pool).
    pub tx_completed: u64,
    /// Refills that found the fill ring empty (the kernel had or was about to have nothing to
    /// receive into).
    pub fill_ring_empty: u64,
    /// Refills that found the pool empty (the stack holds every frame not lent to the kernel).
    pub fill_pool_empty: u64,
    /// TX bursts that found the TX ring full (frames left in the batch).
    pub tx_ring_full: u64,
    /// RX wake-up system calls (kernel asked, or busy polling).
    pub rx_wakeups: u64,
    /// TX kick system calls.
    pub tx_kicks: u64,
    /// Frames refused for transmit (empty, or chained: multi-buffer is not enabled) and freed.
    pub tx_dropped: u64,
    /// RX or completion descriptors pointing outside this queue's frames, or with a bad length.
    pub bad_descs: u64,
}

/// The mode a port ended up in after fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpMode {
    /// How the program was attached; `None` when the XSKMAP came from elsewhere.
    pub attach: Option<AttachMode>,
    /// Bound in zero-copy mode.
    pub zero_copy: bool,
    /// `XDP_USE_NEED_WAKEUP` in effect.
    pub need_wakeup: bool,
    /// Busy polling configured.
    pub busy_poll: bool,
    /// UMEM on huge pages.
    pub huge_pages: bool,
}

/// An AF_XDP socket on one queue, implementing [`Port`] over a [`Pool`] that is its UMEM.
///
/// Dropping the port deletes the socket (and, for [`XskMapSource::SelfLoad`], libxdp detaches the
/// program with the last socket; for [`XskMapSource::Redirect`] the last port of the interface
/// detaches cnet's program). Frames on its rings at that time are not returned to the pool.
#[derive(Debug)]
pub struct XdpPort {
    // `dp` holds raw pointers into `xsk`'s rings: declared first so it is dropped first.
    dp: Datapath,
    xsk: Xsk,
    // After `xsk`: the program is detached (last port) once the socket is closed.
    redirect: Option<Arc<RedirectProgram>>,
    info: PortInfo,
    queue: u32,
    ifindex: u32,
    mode: XdpMode,
}

#[derive(Clone, Copy)]
struct Attempt {
    xdp: XdpFlags,
    bind: BindFlags,
    attach: Option<AttachMode>,
    zero_copy: bool,
    label: &'static str,
}

fn attempts(cfg: &XdpConfig, self_load: bool) -> Vec<Attempt> {
    let binds: &[(bool, &str)] = match cfg.bind_mode {
        BindMode::Copy => &[(false, "copy")],
        BindMode::ZeroCopy => &[(true, "zero-copy")],
        BindMode::Auto => &[(true, "zero-copy"), (false, "copy")],
    };
    let attaches: &[(Option<AttachMode>, &str)] = if !self_load {
        &[(None, "external program")]
    } else {
        match cfg.attach_mode {
            AttachMode::Native => &[(Some(AttachMode::Native), "native")],
            AttachMode::Generic => &[(Some(AttachMode::Generic), "generic")],
            AttachMode::Auto => &[
                (Some(AttachMode::Native), "native"),
                (Some(AttachMode::Generic), "generic"),
            ],
        }
    };
    let mut out = Vec::new();
    for &(zc, bl) in binds {
        for &(attach, al) in attaches {
            let mut bind = if zc {
                BindFlags::XDP_ZEROCOPY
            } else {
                BindFlags::XDP_COPY
            };
            if cfg.need_wakeup {
                bind |= BindFlags::XDP_USE_NEED_WAKEUP;
            }
            let xdp = match attach {
                Some(AttachMode::Generic) => XdpFlags::XDP_FLAGS_SKB_MODE,
                Some(_) => XdpFlags::XDP_FLAGS_DRV_MODE,
                None => XdpFlags::empty(),
            };
            let label = match (zc, al) {
                (true, "native") => "zero-copy/native",
                (true, "generic") => "zero-copy/generic",
                (false, "native") => "copy/native",
                (false, "generic") => "copy/generic",
                _ => bl,
            };
            out.push(Attempt {
                xdp,
                bind,
                attach,
                zero_copy: zc,
                label,
            });
        }
    }
    out
}

fn queue_size(n: u32) -> Result<QueueSize, XdpConfigError> {
    QueueSize::new(n).map_err(|_| XdpConfigError::BadRingSize {
        ring: "ring",
        size: n,
    })
}

fn umem_config(cfg: &XdpConfig) -> Result<libxdp_sys::xsk_umem_config, XdpConfigError> {
    let frame_size =
        FrameSize::new(cfg.frame_size).map_err(|_| XdpConfigError::BadFrameSize(cfg.frame_size))?;
    let c = UmemConfig::builder()
        .frame_size(frame_size)
        .fill_queue_size(queue_size(cfg.rings.fill)?)
        .comp_queue_size(queue_size(cfg.rings.comp)?)
        .frame_headroom(0)
        .build()
        .map_err(|_| XdpConfigError::BadFrameSize(cfg.frame_size))?;
    Ok(c.into())
}

fn socket_config(
    cfg: &XdpConfig,
    a: &Attempt,
    self_load: bool,
) -> Result<libxdp_sys::xsk_socket_config, XdpConfigError> {
    let libxdp = if self_load {
        LibxdpFlags::empty()
    } else {
        LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD
    };
    let c = SocketConfig::builder()
        .rx_queue_size(queue_size(cfg.rings.rx)?)
        .tx_queue_size(queue_size(cfg.rings.tx)?)
        .libxdp_flags(libxdp)
        .xdp_flags(a.xdp)
        .bind_flags(a.bind)
        .build();
    Ok(c.into())
}

/// A map fd borrowed from the config or opened from a pin for the time of the insertions.
enum MapFd<'a> {
    None,
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
}

impl MapFd<'_> {
    fn get(&self) -> Option<BorrowedFd<'_>> {
        match self {
            MapFd::None => None,
            MapFd::Borrowed(b) => Some(*b),
            MapFd::Owned(o) => Some(o.as_fd()),
        }
    }
}

/// The XSKMAP of `cfg.map_source`, and cnet's redirect program when the port attaches it.
fn map_fd(cfg: &XdpConfig) -> Result<(MapFd<'_>, Option<Arc<RedirectProgram>>), XdpError> {
    Ok(match &cfg.map_source {
        XskMapSource::SelfLoad => (MapFd::None, None),
        XskMapSource::Fd(fd) => (MapFd::Borrowed(fd.as_fd()), None),
        XskMapSource::Pinned(path) => (
            MapFd::Owned(sys::obj_get(path).map_err(|source| XdpError::PinnedMap {
                path: path.clone(),
                source,
            })?),
            None,
        ),
        XskMapSource::Redirect => {
            let queues = cfg.queues.iter().max().map_or(1, |q| q.saturating_add(1));
            let prog = RedirectProgram::attach(&cfg.ifname, cfg.attach_mode, queues)?;
            let fd = prog
                .xsk_map()
                .try_clone_to_owned()
                .map_err(|source| XdpError::Program {
                    ifname: cfg.ifname.clone(),
                    what: "dup of the XSKMAP fd",
                    source,
                })?;
            (MapFd::Owned(fd), Some(prog))
        }
    })
}

struct FirstSocket {
    ifname: CString,
    umem: SharedUmem,
    xsk: Xsk,
    attempt: Attempt,
}

impl XdpPort {
    /// Opens queue `queue` of `cfg.ifname` with a UMEM of its own (`cfg.queues` and
    /// `cfg.shared_umem` are not used). The interface is looked up in the calling thread's network
    /// namespace.
    pub fn open(cfg: &XdpConfig, queue: u32) -> Result<(XdpPort, Pool), XdpError> {
        log::route_to_tracing();
        cfg.validate()?;
        let (map, prog) = map_fd(cfg)?;
        let bytes = cfg.frames as usize * cfg.frame_size as usize;
        let mem = Arc::new(Mmap::new(bytes, cfg.huge_pages)?);
        let first = Self::first_socket(cfg, &mem, queue, map.get(), prog.as_ref())?;
        Self::assemble(
            cfg,
            &first.umem,
            first.xsk,
            queue,
            0,
            first.attempt,
            (map.get(), prog.as_ref()),
        )
    }

    /// Opens every queue of `cfg.queues`, in order: one UMEM split into per-queue pools when
    /// `cfg.shared_umem`, else one UMEM per queue.
    pub fn open_all(cfg: &XdpConfig) -> Result<Vec<(XdpPort, Pool)>, XdpError> {
        log::route_to_tracing();
        cfg.validate()?;
        if !cfg.shared_umem {
            return cfg.queues.iter().map(|&q| Self::open(cfg, q)).collect();
        }
        let (map, prog) = map_fd(cfg)?;
        let mem = Arc::new(Mmap::new(cfg.umem_bytes(), cfg.huge_pages)?);
        let q0 = cfg.queues[0];
        let first = Self::first_socket(cfg, &mem, q0, map.get(), prog.as_ref())?;
        let (ifname, umem, attempt) = (first.ifname, first.umem, first.attempt);
        let mut out = Vec::with_capacity(cfg.queues.len());
        out.push(Self::assemble(
            cfg,
            &umem,
            first.xsk,
            q0,
            0,
            attempt,
            (map.get(), prog.as_ref()),
        )?);
        for (i, &q) in cfg.queues.iter().enumerate().skip(1) {
            let first_frame = i as u64 * u64::from(cfg.frames);
            let xsk_cfg = socket_config(cfg, &attempt, map.get().is_none())?;
            let xsk =
                Xsk::create(&umem, &ifname, q, &xsk_cfg).map_err(|source| XdpError::Socket {
                    ifname: cfg.ifname.clone(),
                    queue: q,
                    tried: format!("shared UMEM, {}", attempt.label),
                    source,
                })?;
            out.push(Self::assemble(
                cfg,
                &umem,
                xsk,
                q,
                first_frame,
                attempt,
                (map.get(), prog.as_ref()),
            )?);
        }
        Ok(out)
    }

    /// Creates the UMEM and its first socket, trying each mode the config allows.
    fn first_socket(
        cfg: &XdpConfig,
        mem: &Arc<Mmap>,
        queue: u32,
        map: Option<BorrowedFd<'_>>,
        prog: Option<&Arc<RedirectProgram>>,
    ) -> Result<FirstSocket, XdpError> {
        let ifname = CString::new(cfg.ifname.as_bytes())
            .map_err(|_| XdpConfigError::BadIfname(cfg.ifname.clone()))?;
        sys::ifindex(&ifname).map_err(|source| XdpError::NoSuchInterface {
            ifname: cfg.ifname.clone(),
            source,
        })?;
        let self_load = map.is_none();
        let umem_cfg = umem_config(cfg)?;
        let mut tries = attempts(cfg, self_load);
        if let Some(p) = prog {
            for t in &mut tries {
                t.attach = Some(p.mode());
            }
        }
        let mut tried = Vec::new();
        let mut last = None;
        for (i, a) in tries.iter().enumerate() {
            // A fresh UMEM per attempt: a failed attempt may leave the UMEM's socket bound.
            let umem: SharedUmem = Arc::new(Mutex::new(Umem::create(Arc::clone(mem), umem_cfg)?));
            let xsk_cfg = socket_config(cfg, a, self_load)?;
            tried.push(a.label);
            match Xsk::create(&umem, &ifname, queue, &xsk_cfg) {
                Ok(xsk) => {
                    if i > 0 {
                        tracing::info!(ifname = %cfg.ifname, queue, mode = a.label,
                            "AF_XDP socket opened after fallback");
                    }
                    return Ok(FirstSocket {
                        ifname,
                        umem,
                        xsk,
                        attempt: *a,
                    });
                }
                Err(e) => {
                    let code = e.raw_os_error();
                    if a.zero_copy
                        && cfg.bind_mode == BindMode::ZeroCopy
                        && code == Some(libc::EOPNOTSUPP)
                    {
                        return Err(XdpError::ZeroCopyUnsupported {
                            ifname: cfg.ifname.clone(),
                            queue,
                        });
                    }
                    let may_fall_back = matches!(
                        code,
                        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::EPROTONOSUPPORT)
                    );
                    let next = tries.get(i + 1).filter(|_| may_fall_back);
                    if let Some(next) = next {
                        tracing::info!(
                            ifname = %cfg.ifname, queue, mode = a.label, error = %e,
                            next = next.label, "AF_XDP socket mode not supported here, falling back"
                        );
                    }
                    last = Some(e);
                    if next.is_none() {
                        break;
                    }
                }
            }
        }
        Err(XdpError::Socket {
            ifname: cfg.ifname.clone(),
            queue,
            tried: tried.join(", "),
            source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }

    /// Map insertion, socket options, rings and pool for a created socket.
    fn assemble(
        cfg: &XdpConfig,
        umem: &SharedUmem,
        xsk: Xsk,
        queue: u32,
        first_frame: u64,
        attempt: Attempt,
        (map, prog): (Option<BorrowedFd<'_>>, Option<&Arc<RedirectProgram>>),
    ) -> Result<(XdpPort, Pool), XdpError> {
        if let Some(map) = map {
            xsk.insert_into_map(map, queue)
                .map_err(|source| XdpError::MapUpdate { queue, source })?;
        }
        if let Some(b) = cfg.busy_poll.filter(|_| !cfg.busy_poll_by_caller) {
            const SO_BUSY_POLL: libc::c_int = 46;
            const SO_PREFER_BUSY_POLL: libc::c_int = 69;
            const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
            let opts = [
                (
                    "SO_PREFER_BUSY_POLL",
                    SO_PREFER_BUSY_POLL,
                    libc::c_int::from(b.prefer),
                ),
                ("SO_BUSY_POLL", SO_BUSY_POLL, b.timeout_us as libc::c_int),
                (
                    "SO_BUSY_POLL_BUDGET",
                    SO_BUSY_POLL_BUDGET,
                    b.budget as libc::c_int,
                ),
            ];
            for (name, opt, value) in opts {
                xsk.set_sockopt(opt, value)
                    .map_err(|source| XdpError::Sockopt { name, source })?;
            }
        }
        let ifname = CString::new(cfg.ifname.as_bytes())
            .map_err(|_| XdpConfigError::BadIfname(cfg.ifname.clone()))?;
        let no_if = |source| XdpError::NoSuchInterface {
            ifname: cfg.ifname.clone(),
            source,
        };
        let ifindex = sys::ifindex(&ifname).map_err(no_if)?;
        let mac = sys::mac_of(&ifname).map_err(no_if)?;
        let mtu = sys::mtu_of(&ifname).map_err(no_if)?;
        let mem = Arc::clone(
            umem.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .mem(),
        );
        let frame_size = cfg.frame_size as usize;
        let offset = first_frame as usize * frame_size;
        let len = cfg.frames as usize * frame_size;
        if offset + len > mem.len() {
            return Err(XdpError::Pool(PoolError::RegionTooSmall {
                len: mem.len().saturating_sub(offset),
                frames: cfg.frames as usize,
                frame_size,
            }));
        }
        let huge = mem.huge();
        // SAFETY: `offset + len <= mem.len()` (checked above), so the range is inside the live
        // mapping; the pool keeps the mapping alive through its owner (`Arc<Mmap>`); the range is
        // disjoint from every other queue's pool; the kernel only touches frames this port lends it
        // through the rings. `Arc<Mmap>` is `Send`, so the pool may move to another thread.
        let pool = unsafe {
            Pool::from_external(
                mem.ptr().add(offset),
                len,
                cfg.frames as usize,
                frame_size,
                cfg.headroom as usize,
                Box::new(Arc::clone(&mem)),
            )
        }?;
        let busy = cfg.busy_poll.is_some();
        // SAFETY: the rings are stored in `dp`, a field of the port declared before `xsk`, so they
        // are dropped before the socket that maps them; this is the only ring set of this socket.
        let rings = unsafe { xsk.rings() };
        let mut dp = Datapath::new(
            rings,
            cfg.frame_size,
            first_frame,
            cfg.frames,
            cfg.need_wakeup,
            busy,
        );
        // Lend frames to the kernel now, so traffic arriving before the first `rx_burst` is received.
        let mut pool = pool;
        dp.refill(&mut pool);
        let mode = XdpMode {
            attach: attempt.attach,
            zero_copy: attempt.zero_copy,
            need_wakeup: cfg.need_wakeup,
            busy_poll: busy,
            huge_pages: huge,
        };
        tracing::info!(ifname = %cfg.ifname, queue, mode = attempt.label, need_wakeup = cfg.need_wakeup,
            busy_poll = busy, huge_pages = huge, frames = cfg.frames, "AF_XDP port open");
        let port = XdpPort {
            dp,
            xsk,
            redirect: prog.cloned(),
            info: PortInfo {
                name: cfg.ifname.clone(),
                mac,
                mtu,
            },
            queue,
            ifindex,
            mode,
        };
        Ok((port, pool))
    }

    /// The queue this port is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Interface index (in the namespace the port was opened in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The mode the port ended up in.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// cnet's redirect program this port's traffic comes through ([`XskMapSource::Redirect`]).
    pub fn redirect_program(&self) -> Option<&Arc<RedirectProgram>> {
        self.redirect.as_ref()
    }

    /// The port's own counters.
    pub fn counters(&self) -> XdpCounters {
        self.dp.counters
    }

    /// The kernel's statistics for this socket.
    pub fn kernel_stats(&self) -> Result<XdpKernelStats, XdpError> {
        self.xsk.stats().map_err(XdpError::Stats)
    }

    /// Gives completed TX frames back to the pool without sending or receiving.
    pub fn reclaim(&mut self, pool: &mut Pool) {
        self.dp.drain_completions(pool);
    }

    /// Waits until the socket has something to receive or `timeout` passes; `true` if readable.
    /// For an idle service loop (a busy one just calls `rx_burst`).
    pub fn wait_rx(&self, timeout: Duration) -> Result<bool, PortError> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        Ok(sys::poll_in(self.xsk.fd(), ms)?)
    }
}

impl AsFd for XdpPort {
    /// The AF_XDP socket (for `poll`/`epoll` in a service loop).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.xsk.fd()
    }
}

impl Port for XdpPort {
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        self.dp.rx_burst(pool, batch, &mut self.xsk)
    }

    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        _now: Instant,
    ) -> Result<usize, PortError> {
        self.dp.tx_burst(pool, batch, &mut self.xsk)
    }

    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn wait_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.xsk.fd().as_raw_fd())
    }

    fn frames_held(&self) -> usize {
        self.dp.frames_held()
    }

    /// "Now" while the TX ring holds descriptors the kernel has not taken (a copy-mode kick sends
    /// a bounded batch): the runner polls again instead of sleeping, and its receive step kicks.
    fn poll_timeout(&self) -> Option<Instant> {
        self.dp.tx_backlog().then_some(Instant::ZERO)
    }

    /// With cnet's redirect program: this queue's addresses in its map (the map holds the union
    /// over the interface's queues). A failure is logged; the previous addresses stay.
    fn local_addrs_changed(&mut self, addrs: &[cnet_stack::IfAddr]) {
        if let Some(p) = &self.redirect {
            if let Err(e) = p.set_queue_addrs(self.queue, addrs.iter().map(|a| a.addr)) {
                tracing::warn!(ifname = %self.info.name, queue = self.queue, error = %e,
                    "cannot update the redirect program's addresses");
            }
        }
    }
}

/// libxdp's default XSK redirect program and its XSKMAP, loaded by a privileged party (root) for a
/// port created with [`XskMapSource::Fd`] or [`XskMapSource::Pinned`].
///
/// This is the development stand-in for the AF_XDP device plugin: load, then hand the map over
/// ([`XskProgram::map_fd`] / [`XskProgram::clone_map_fd`], or [`XskProgram::pin`]). Dropping it
/// detaches the program from the interface (and removes a pin made with [`XskProgram::pin`]).
#[derive(Debug)]
pub struct XskProgram {
    ifname: String,
    ifindex: u32,
    map: OwnedFd,
    pins: Vec<PathBuf>,
}

impl XskProgram {
    /// Loads and attaches libxdp's default redirect program on `ifname` (in the calling thread's
    /// network namespace) with `xsk_setup_xdp_prog`, and keeps its XSKMAP.
    pub fn load(ifname: &str) -> Result<XskProgram, XdpError> {
        log::route_to_tracing();
        let c = CString::new(ifname).map_err(|_| XdpConfigError::BadIfname(ifname.into()))?;
        let ifindex = sys::ifindex(&c).map_err(|source| XdpError::NoSuchInterface {
            ifname: ifname.into(),
            source,
        })?;
        let map = sys::setup_default_prog(ifindex).map_err(|source| XdpError::Program {
            ifname: ifname.into(),
            what: "xsk_setup_xdp_prog",
            source,
        })?;
        Ok(XskProgram {
            ifname: ifname.into(),
            ifindex,
            map,
            pins: Vec::new(),
        })
    }

    /// The XSKMAP.
    pub fn map_fd(&self) -> BorrowedFd<'_> {
        self.map.as_fd()
    }

    /// A duplicate of the XSKMAP descriptor, to give away (e.g. as [`XskMapSource::Fd`]).
    pub fn clone_map_fd(&self) -> Result<OwnedFd, XdpError> {
        self.map.try_clone().map_err(|source| XdpError::Program {
            ifname: self.ifname.clone(),
            what: "dup of the XSKMAP fd",
            source,
        })
    }

    /// Pins the XSKMAP at `path` in a bpffs (removed again on drop).
    pub fn pin(&mut self, path: &Path) -> Result<(), XdpError> {
        sys::obj_pin(self.map.as_fd(), path).map_err(|source| XdpError::Program {
            ifname: self.ifname.clone(),
            what: "bpf_obj_pin",
            source,
        })?;
        self.pins.push(path.to_path_buf());
        Ok(())
    }

    /// Detaches the program now (also done on drop), reporting errors.
    pub fn detach(mut self) -> Result<(), XdpError> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<(), XdpError> {
        for p in self.pins.drain(..) {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "removing XSKMAP pin failed");
            }
        }
        if self.ifindex == 0 {
            return Ok(());
        }
        let ifindex = std::mem::take(&mut self.ifindex);
        sys::detach_xdp(ifindex).map_err(|source| XdpError::Program {
            ifname: self.ifname.clone(),
            what: "detach",
            source,
        })
    }
}

impl Drop for XskProgram {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!(error = %e, "XDP program cleanup failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_and_pool_can_move_to_a_queue_thread() {
        fn send<T: Send>() {}
        send::<XdpPort>();
        send::<Pool>();
        send::<XskProgram>();
    }

    #[test]
    fn mode_attempts_follow_the_config() {
        let mut cfg = XdpConfig::new("eth0");
        let labels = |c: &XdpConfig, self_load| -> Vec<&str> {
            attempts(c, self_load).iter().map(|a| a.label).collect()
        };
        assert_eq!(
            labels(&cfg, true),
            [
                "zero-copy/native",
                "zero-copy/generic",
                "copy/native",
                "copy/generic"
            ]
        );
        assert_eq!(labels(&cfg, false), ["zero-copy", "copy"]);
        cfg.bind_mode = BindMode::Copy;
        cfg.attach_mode = AttachMode::Generic;
        assert_eq!(labels(&cfg, true), ["copy/generic"]);
        cfg.need_wakeup = false;
        let a = attempts(&cfg, true);
        assert!(!a[0].bind.contains(BindFlags::XDP_USE_NEED_WAKEUP));
        assert!(a[0].xdp.contains(XdpFlags::XDP_FLAGS_SKB_MODE));
    }
}
