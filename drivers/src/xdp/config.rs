//! Configuration of an AF_XDP port, with validation.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// How the XDP program is attached (only used when the port loads it itself,
/// [`XskMapSource::SelfLoad`] or [`XskMapSource::Redirect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Driver (native) mode: `XDP_FLAGS_DRV_MODE`. Fails on a driver without XDP support.
    Native,
    /// Generic (skb) mode: `XDP_FLAGS_SKB_MODE`. Works everywhere, slower.
    Generic,
    /// Native, falling back to generic when the driver refuses.
    #[default]
    Auto,
}

/// How the socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Copy mode (`XDP_COPY`): the kernel copies frames between its buffers and the UMEM.
    Copy,
    /// Zero-copy (`XDP_ZEROCOPY`): the driver DMAs straight into the UMEM. An error where the driver
    /// does not support it (veth: `EOPNOTSUPP`).
    ZeroCopy,
    /// Zero-copy where the driver supports it, copy mode otherwise (logged).
    #[default]
    Auto,
}

/// Busy-polling settings (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`, `SO_BUSY_POLL_BUDGET`).
///
/// With busy polling the application drives the device's NAPI context from its own
/// `recvfrom`/`sendto` calls: the port then wakes the kernel on every empty receive burst. It pays
/// off together with `napi_defer_hard_irqs` / `gro_flush_timeout` set on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL`: microseconds to busy-poll in a blocking call.
    pub timeout_us: u32,
    /// `SO_BUSY_POLL_BUDGET`: packets per busy-poll round (1..=65535).
    pub budget: u32,
    /// `SO_PREFER_BUSY_POLL`: prefer busy polling over softirq processing.
    pub prefer: bool,
}

impl Default for BusyPoll {
    fn default() -> Self {
        BusyPoll {
            timeout_us: 20,
            budget: 64,
            prefer: true,
        }
    }
}

/// Whether the UMEM is backed by huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Ordinary pages.
    Never,
    /// Huge pages (`MAP_HUGETLB`) when the system has them reserved, else ordinary pages with a
    /// logged warning.
    #[default]
    IfAvailable,
    /// Huge pages or an error.
    Required,
}

/// Where the XSKMAP comes from.
#[derive(Debug, Default)]
pub enum XskMapSource {
    /// libxdp loads its default redirect program and map when the socket is created and removes
    /// them when the last socket goes (needs root / CAP_NET_ADMIN + CAP_BPF). It redirects
    /// **every** frame of the bound queues: for tests and dedicated netdevs.
    #[default]
    SelfLoad,
    /// cnet's own redirect program ([`super::RedirectProgram`]): ARP and IPv4 for the stack's own
    /// addresses go to the port, everything else to the kernel, so the host keeps its traffic on
    /// a shared netdev. The port loads and attaches it (one per interface, shared by its queues;
    /// root / CAP_BPF + CAP_NET_ADMIN), creates its socket with program loading inhibited and
    /// inserts it. The addresses follow the stack's (`Port::local_addrs_changed`, called by
    /// `Host`); until the stack tells any, nothing is redirected.
    Redirect,
    /// An XSKMAP file descriptor obtained elsewhere (the device plugin's UNIX socket, a parent
    /// process, [`super::XskProgram`]). Program loading is inhibited; the port inserts its socket
    /// at key = queue id.
    Fd(OwnedFd),
    /// An XSKMAP pinned in a bpffs (`bpf_obj_get`), e.g. `/tmp/afxdp_dp/<dev>/xsks_map` from the
    /// AF_XDP device plugin. Program loading is inhibited; the port inserts its socket.
    Pinned(PathBuf),
}

/// Ring sizes in descriptors (each a power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizes {
    /// RX ring.
    pub rx: u32,
    /// TX ring.
    pub tx: u32,
    /// Fill ring: the most frames lent to the kernel for reception at once.
    pub fill: u32,
    /// Completion ring (at least `tx`, so every frame on the TX ring can complete).
    pub comp: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            rx: 2048,
            tx: 2048,
            fill: 2048,
            comp: 2048,
        }
    }
}

/// Configuration of AF_XDP ports on one interface.
#[derive(Debug)]
pub struct XdpConfig {
    /// Interface name (in the network namespace of the thread that opens the port).
    pub ifname: String,
    /// Queue ids to open, for [`super::XdpPort::open_all`].
    pub queues: Vec<u32>,
    /// Frames per queue (the size of each queue's [`cnet_stack::Pool`]).
    pub frames: u32,
    /// Frame size: 2048 or 4096 (the kernel's aligned-chunk limits on 4 KiB pages).
    pub frame_size: u32,
    /// Headroom of frames the stack allocates for transmit. Received frames start after the
    /// kernel's `XDP_PACKET_HEADROOM` (256 bytes) instead.
    pub headroom: u32,
    /// XDP attach mode.
    pub attach_mode: AttachMode,
    /// Copy or zero-copy.
    pub bind_mode: BindMode,
    /// `XDP_USE_NEED_WAKEUP`: system calls only when the kernel asks.
    pub need_wakeup: bool,
    /// Busy polling, if wanted.
    pub busy_poll: Option<BusyPoll>,
    /// `busy_poll`'s socket options are set by a privileged party on the port's socket (the AF_XDP
    /// device plugin's `/config_busy_poll`, since raising them needs CAP_NET_ADMIN): the port
    /// polls as busy polling wants but does not call `setsockopt` itself.
    pub busy_poll_by_caller: bool,
    /// Huge pages for the UMEM.
    pub huge_pages: HugePages,
    /// Where the XSKMAP comes from.
    pub map_source: XskMapSource,
    /// Ring sizes.
    pub rings: RingSizes,
    /// Several queues: one UMEM split into per-queue pools (`true`) or one UMEM per queue.
    pub shared_umem: bool,
}

impl XdpConfig {
    /// Defaults: queue 0, 4096 frames of 2 KiB, 192 bytes headroom, auto attach and bind modes,
    /// need_wakeup on, no busy polling, huge pages if available, self-loaded program, 2048-entry
    /// rings, shared UMEM.
    pub fn new(ifname: impl Into<String>) -> Self {
        XdpConfig {
            ifname: ifname.into(),
            queues: vec![0],
            frames: 4096,
            frame_size: 2048,
            headroom: 192,
            attach_mode: AttachMode::Auto,
            bind_mode: BindMode::Auto,
            need_wakeup: true,
            busy_poll: None,
            busy_poll_by_caller: false,
            huge_pages: HugePages::IfAvailable,
            map_source: XskMapSource::SelfLoad,
            rings: RingSizes::default(),
            shared_umem: true,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), XdpConfigError> {
        if self.ifname.is_empty()
            || self.ifname.len() >= 16
            || self
                .ifname
                .bytes()
                .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
        {
            return Err(XdpConfigError::BadIfname(self.ifname.clone()));
        }
        if self.queues.is_empty() {
            return Err(XdpConfigError::NoQueues);
        }
        for (i, q) in self.queues.iter().enumerate() {
            if self.queues[..i].contains(q) {
                return Err(XdpConfigError::DuplicateQueue(*q));
            }
        }
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(XdpConfigError::BadFrameSize(self.frame_size));
        }
        if self.headroom + 64 > self.frame_size - XDP_PACKET_HEADROOM {
            return Err(XdpConfigError::BadHeadroom {
                headroom: self.headroom,
                frame_size: self.frame_size,
            });
        }
        let r = self.rings;
        for (name, size) in [
            ("rx", r.rx),
            ("tx", r.tx),
            ("fill", r.fill),
            ("comp", r.comp),
        ] {
            if size == 0 || !size.is_power_of_two() || size > (1 << 20) {
                return Err(XdpConfigError::BadRingSize { ring: name, size });
            }
        }
        if r.comp < r.tx {
            return Err(XdpConfigError::CompRingTooSmall {
                tx: r.tx,
                comp: r.comp,
            });
        }
        let queues = if self.shared_umem {
            self.queues.len() as u64
        } else {
            1
        };
        let total = u64::from(self.frames) * queues;
        if self.frames < r.fill.min(64) || total > (1 << 24) {
            return Err(XdpConfigError::BadFrameCount(self.frames));
        }
        if let Some(b) = self.busy_poll {
            if b.budget == 0 || b.budget > 65535 || b.timeout_us > i32::MAX as u32 {
                return Err(XdpConfigError::BadBusyPoll(b));
            }
        }
        Ok(())
    }

    /// Bytes of UMEM for one queue (or for all of them with a shared UMEM).
    pub fn umem_bytes(&self) -> usize {
        let queues = if self.shared_umem {
            self.queues.len()
        } else {
            1
        };
        self.frames as usize * self.frame_size as usize * queues
    }
}

/// `XDP_PACKET_HEADROOM`: where the kernel puts received data in a frame (plus any UMEM headroom).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XdpConfigError {
    /// Interface names are 1..=15 bytes, no NUL, `/` or whitespace.
    #[error("bad interface name {0:?}")]
    BadIfname(String),
    /// At least one queue is needed.
    #[error("no queue configured")]
    NoQueues,
    /// Each queue once.
    #[error("queue {0} listed twice")]
    DuplicateQueue(u32),
    /// Frame size must be 2048 or 4096.
    #[error("frame size {0} is not 2048 or 4096")]
    BadFrameSize(u32),
    /// Headroom leaves less than 64 bytes after the kernel's 256-byte XDP headroom.
    #[error("headroom {headroom} leaves no room for data in a {frame_size}-byte frame after the 256-byte XDP headroom")]
    BadHeadroom {
        /// Configured headroom.
        headroom: u32,
        /// Configured frame size.
        frame_size: u32,
    },
    /// Ring sizes are powers of two in 1..=2^20.
    #[error("{ring} ring size {size} is not a power of two in 1..=1048576")]
    BadRingSize {
        /// Which ring.
        ring: &'static str,
        /// Configured size.
        size: u32,
    },
    /// The completion ring must hold every frame the TX ring can hold.
    #[error("completion ring ({comp}) smaller than TX ring ({tx})")]
    CompRingTooSmall {
        /// TX ring size.
        tx: u32,
        /// Completion ring size.
        comp: u32,
    },
    /// Frames per queue: at least min(fill ring, 64); at most 2^24 frames per UMEM.
    #[error("frame count {0} out of range")]
    BadFrameCount(u32),
    /// Busy-poll budget 1..=65535, timeout within i32.
    #[error("bad busy-poll settings {0:?}")]
    BadBusyPoll(BusyPoll),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(XdpConfig::new("eth0").validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = |f: fn(&mut XdpConfig)| {
            let mut c = XdpConfig::new("eth0");
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|c| c.ifname = "a-very-long-ifname".into()),
            XdpConfigError::BadIfname(_)
        ));
        assert!(matches!(
            bad(|c| c.ifname.clear()),
            XdpConfigError::BadIfname(_)
        ));
        assert_eq!(bad(|c| c.queues.clear()), XdpConfigError::NoQueues);
        assert_eq!(
            bad(|c| c.queues = vec![0, 1, 0]),
            XdpConfigError::DuplicateQueue(0)
        );
        assert_eq!(
            bad(|c| c.frame_size = 1024),
            XdpConfigError::BadFrameSize(1024)
        );
        assert!(matches!(
            bad(|c| c.headroom = 1800),
            XdpConfigError::BadHeadroom { .. }
        ));
        assert!(matches!(
            bad(|c| c.rings.rx = 1000),
            XdpConfigError::BadRingSize { ring: "rx", .. }
        ));
        assert!(matches!(
            bad(|c| c.rings.comp = 1024),
            XdpConfigError::CompRingTooSmall { .. }
        ));
        assert_eq!(bad(|c| c.frames = 10), XdpConfigError::BadFrameCount(10));
        assert!(matches!(
            bad(|c| c.busy_poll = Some(BusyPoll {
                budget: 0,
                ..BusyPoll::default()
            })),
            XdpConfigError::BadBusyPoll(_)
        ));
    }
}
