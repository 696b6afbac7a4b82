//! The pod side of the AF_XDP device plugin (issue #16): how an unprivileged pod gets the XSKMAP
//! of its netdevs, following `shared/afxdp-dp-protocol.md` to the letter.
//!
//! - [`allocations_from_env`]: the devices the plugin gave this container, from every
//!   `AFXDP_DEVICES_<POOL>` variable (split on spaces).
//! - [`DpSession`]: one UDS session per pool (every device of one Allocate shares one server and
//!   one connection): `/connect,<hostname>`, `/version`, `/xsk_map_fd,<dev>` for every device (the
//!   map fd arrives with `SCM_RIGHTS`), optionally `/config_busy_poll,<t>,<b>` with the XSK fd
//!   attached, then `/fin`. Every reply has a timeout; every failure is a typed [`DpError`].
//!   [`DpSession::over`] runs the same client over a socket connected by other means (the fuzz
//!   target `dp_handshake` feeds it plugin replies through a [`wire::pair`]).
//! - [`open_pinned`]: `bpf(BPF_OBJ_GET)` on a pinned map (`/tmp/afxdp_dp/<dev>/xsks_map`, or a
//!   bpfman CSI volume's mount path).
//! - [`resolve_maps`]: per port, the config's source turned into an XSKMAP fd; a mounted
//!   `xsks_map` wins over the socket when both exist (the UDS map is stale then).
//!   [`resolve_maps_open`] keeps sessions open for `/config_busy_poll`, also for a pinned map
//!   when the plugin's socket is mounted beside the pin (a pool with both UDS and pinning).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the plugin mounts its sockets and pinned maps in the container.
pub const DP_DIR: &str = "/tmp/afxdp_dp";
/// Prefix of the env variables naming this container's devices, one variable per pool.
pub const ENV_PREFIX: &str = "AFXDP_DEVICES_";
/// The protocol version the plugin answers to `/version`.
pub const PROTOCOL_VERSION: &str = "0.1";
/// Longest hostname the plugin can validate: `/connect,` + hostname must fit its 64-byte buffer.
pub const MAX_HOSTNAME: usize = 55;
/// Default timeout of every reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The plugin's socket for device `dev`: `/tmp/afxdp_dp/<dev>/afxdp.sock`.
pub fn socket_path(dev: &str) -> PathBuf {
    Path::new(DP_DIR).join(dev).join("afxdp.sock")
}

/// The plugin's pinned map for device `dev`: `/tmp/afxdp_dp/<dev>/xsks_map`.
pub fn pinned_map_path(dev: &str) -> PathBuf {
    Path::new(DP_DIR).join(dev).join("xsks_map")
}

/// A failure talking to the device plugin or opening its map.
#[derive(Debug, thiserror::Error)]
pub enum DpError {
    /// An `AFXDP_DEVICES_*` variable is unusable.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        reason: String,
    },
    /// The device is not in any `AFXDP_DEVICES_*` variable.
    #[error("device {dev} is not allocated to this container (AFXDP_DEVICES_*: {known})")]
    NotAllocated {
        /// The device.
        dev: String,
        /// What the environment lists.
        known: String,
    },
    /// Connecting to the plugin's socket failed.
    #[error("cannot connect to the device plugin at {path}: {source}{hint}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
        /// A hint on the likely cause.
        hint: &'static str,
    },
    /// A system call on the session failed.
    #[error("device plugin session: {what}: {source}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// No reply in time.
    #[error("device plugin did not answer {request:?} within {after:?}")]
    Timeout {
        /// The request.
        request: String,
        /// The timeout.
        after: Duration,
    },
    /// The plugin closed the connection.
    #[error("device plugin closed the session while we waited for the reply to {request:?} (it closes on a bad first message, after its udsTimeout, or after /fin)")]
    Closed {
        /// The request.
        request: String,
    },
    /// `/host_nak`: the plugin did not find this pod.
    #[error("device plugin refused pod {hostname:?} (/host_nak: pod not validated){hint}")]
    HostNak {
        /// The hostname sent.
        hostname: String,
        /// A hint (hostname too long).
        hint: String,
    },
    /// `/error` then `/host_nak`: the plugin could not ask the kubelet (PodResources API).
    #[error("device plugin could not validate pod {hostname:?}: it reported /error (kubelet PodResources API unavailable)")]
    PodResources {
        /// The hostname sent.
        hostname: String,
    },
    /// A version other than [`PROTOCOL_VERSION`].
    #[error("device plugin speaks protocol version {got:?}, expected {PROTOCOL_VERSION:?}")]
    Version {
        /// What it answered.
        got: String,
    },
    /// `/fd_nak`: the plugin does not know the device.
    #[error("device plugin has no XSKMAP for device {dev} (/fd_nak)")]
    FdNak {
        /// The device.
        dev: String,
    },
    /// `/fd_ack` without a descriptor.
    #[error("device plugin sent /fd_ack for {dev} without a file descriptor")]
    FdMissing {
        /// The device.
        dev: String,
    },
    /// The descriptors did not fit (`MSG_CTRUNC`) or there were several.
    #[error("device plugin reply to {request:?} carried {count} descriptor(s){trunc}; exactly one expected")]
    BadFds {
        /// The request.
        request: String,
        /// Descriptors received (all closed).
        count: usize,
        /// ", truncated" when the kernel cut the control data.
        trunc: &'static str,
    },
    /// `/nak`: the plugin found the request malformed (a bug on our side).
    #[error("device plugin rejected request {request:?} as malformed (/nak)")]
    Nak {
        /// The request.
        request: String,
    },
    /// `/config_busy_poll_nak`.
    #[error("device plugin could not configure busy polling (/config_busy_poll_nak)")]
    BusyPollNak,
    /// A request we refuse to send (too long for the plugin's 64-byte buffer, or with a comma).
    #[error("request {request:?} cannot be sent: {reason}")]
    BadRequest {
        /// The request.
        request: String,
        /// Why.
        reason: &'static str,
    },
    /// A reply the protocol does not allow here.
    #[error("unexpected device plugin reply to {request:?}: {reply:?}")]
    Unexpected {
        /// The request.
        request: String,
        /// The reply (lossy UTF-8).
        reply: String,
    },
    /// A descriptor arrived where none is allowed.
    #[error("device plugin attached a file descriptor to its reply to {request:?}")]
    UnexpectedFd {
        /// The request.
        request: String,
    },
    /// `bpf(BPF_OBJ_GET)` on a pinned map failed.
    #[error("cannot open pinned XSKMAP {path}: {source}")]
    Pinned {
        /// Pin path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// This container's devices from one `AFXDP_DEVICES_<POOL>` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The pool, upper case as in the variable name.
    pub pool: String,
    /// Device IDs (netdev names), in the variable's order.
    pub devices: Vec<String>,
}

/// Every `AFXDP_DEVICES_<POOL>` variable among `vars` (pass `std::env::vars()`), sorted by pool.
pub fn allocations_from_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Allocation>, DpError> {
    let mut out = BTreeMap::new();
    for (var, value) in vars {
        let Some(pool) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let bad = |reason: &str| DpError::Env {
            var: var.clone(),
            reason: reason.to_string(),
        };
        if pool.is_empty() || !pool.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad("pool name must be alphanumeric"));
        }
        let devices: Vec<String> = value
            .split(' ')
            .filter(|d| !d.is_empty())
            .map(String::from)
            .collect();
        if devices.is_empty() {
            return Err(bad("no device listed"));
        }
        for d in &devices {
            if d.len() >= 16 || d.contains(['/', ',', '\0']) {
                return Err(bad("not an interface name"));
            }
        }
        out.insert(pool.to_string(), devices);
    }
    Ok(out
        .into_iter()
        .map(|(pool, devices)| Allocation { pool, devices })
        .collect())
}

/// This host's name as the plugin sees it (`gethostname`, the pod name).
pub fn hostname() -> Result<String, DpError> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its length; the kernel NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(DpError::Io {
            what: "gethostname",
            source: io::Error::last_os_error(),
        });
    }
    let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One session with the plugin's UDS server. The plugin serves exactly one session per Allocate:
/// get every map fd over this one session, then [`DpSession::fin`].
#[derive(Debug)]
pub struct DpSession {
    sock: OwnedFd,
    timeout: Duration,
}

impl DpSession {
    /// Connects to `path`, validates the pod as `hostname` (`/connect`) and checks `/version`.
    /// A hostname over [`MAX_HOSTNAME`] characters is warned about first: the plugin cuts the
    /// request to 64 bytes and will answer `/host_nak`.
    pub fn connect(path: &Path, hostname: &str, timeout: Duration) -> Result<DpSession, DpError> {
        let req = connect_request(hostname)?;
        let sock = wire::connect(path).map_err(|source| {
            let hint = match source.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => {
                    " (no plugin session: it serves one session per pod and removes the socket \
                     after /fin or after its udsTimeout since pod admission; a restarted container \
                     cannot get the map again, and a slow start needs a larger udsTimeout)"
                }
                Some(libc::EACCES) => " (permission: set the pool's uid to the pod's uid)",
                _ => "",
            };
            DpError::Connect {
                path: path.to_path_buf(),
                source,
                hint,
            }
        })?;
        Self::handshake(sock, &req, hostname, timeout)
    }

    /// [`DpSession::connect`] over a socket already connected to a plugin (a SOCK_SEQPACKET
    /// socket: one datagram per message). The handshake client's seam for tests and fuzzing,
    /// which feed it plugin replies through a `socketpair` ([`wire::pair`]).
    pub fn over(sock: OwnedFd, hostname: &str, timeout: Duration) -> Result<DpSession, DpError> {
        let req = connect_request(hostname)?;
        Self::handshake(sock, &req, hostname, timeout)
    }

    /// `/connect` (request `req`) and `/version` on a connected socket.
    fn handshake(
        sock: OwnedFd,
        req: &str,
        hostname: &str,
        timeout: Duration,
    ) -> Result<DpSession, DpError> {
        wire::set_timeouts(sock.as_fd(), timeout).map_err(|source| DpError::Io {
            what: "setting socket timeouts",
            source,
        })?;
        let mut s = DpSession { sock, timeout };
        // Sent even when too long: the plugin cuts it and answers /host_nak, reported below.
        s.send(req, None)?;
        match s.recv_text(req)?.as_str() {
            "/host_ok" => {}
            "/host_nak" => {
                let hint = if hostname.len() > MAX_HOSTNAME {
                    format!(
                        "; the pod name has {} characters, the plugin handles at most {MAX_HOSTNAME}",
                        hostname.len()
                    )
                } else {
                    String::new()
                };
                return Err(DpError::HostNak {
                    hostname: hostname.to_string(),
                    hint,
                });
            }
            "/error" => {
                // The plugin follows /error with /host_nak, then closes: drain it (best effort).
                let _ = s.recv_text(req);
                return Err(DpError::PodResources {
                    hostname: hostname.to_string(),
                });
            }
            other => return Err(s.unexpected(req, other)),
        }
        match s.exchange("/version", None)?.as_str() {
            PROTOCOL_VERSION => Ok(s),
            "/nak" => Err(DpError::Nak {
                request: "/version".into(),
            }),
            other => Err(DpError::Version {
                got: other.to_string(),
            }),
        }
    }

    /// `/xsk_map_fd,<dev>`: the XSKMAP of `dev`.
    pub fn map_fd(&mut self, dev: &str) -> Result<OwnedFd, DpError> {
        let req = format!("/xsk_map_fd,{dev}");
        if dev.contains(',') {
            return Err(DpError::BadRequest {
                request: req,
                reason: "device name contains a comma",
            });
        }
        self.check_len(&req)?;
        self.send(&req, None)?;
        let (reply, fds, ctrunc) = self.recv(&req)?;
        match reply.as_str() {
            "/fd_ack" => {
                let count = fds.len();
                if ctrunc || count > 1 {
                    return Err(DpError::BadFds {
                        request: req,
                        count,
                        trunc: if ctrunc { ", truncated" } else { "" },
                    });
                }
                fds.into_iter().next().ok_or(DpError::FdMissing {
                    dev: dev.to_string(),
                })
            }
            _ if !fds.is_empty() || ctrunc => Err(DpError::UnexpectedFd { request: req }),
            "/fd_nak" => Err(DpError::FdNak {
                dev: dev.to_string(),
            }),
            "/nak" => Err(DpError::Nak { request: req }),
            other => Err(self.unexpected(&req, other)),
        }
    }

    /// `/config_busy_poll,<timeout_us>,<budget>` with the AF_XDP socket `xsk` attached: the plugin
    /// sets `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL` and `SO_BUSY_POLL_BUDGET` on it, which the pod
    /// lacks the privilege for. (An ack does not prove the last two held: the plugin rolls them
    /// back silently on failure; check with `getsockopt` where it matters.)
    pub fn config_busy_poll(
        &mut self,
        xsk: BorrowedFd<'_>,
        timeout_us: u32,
        budget: u32,
    ) -> Result<(), DpError> {
        let req = format!("/config_busy_poll,{timeout_us},{budget}");
        match self.exchange(&req, Some(xsk))?.as_str() {
            "/config_busy_poll_ack" => Ok(()),
            "/config_busy_poll_nak" => Err(DpError::BusyPollNak),
            "/nak" => Err(DpError::Nak { request: req }),
            other => Err(self.unexpected(&req, other)),
        }
    }

    /// `/fin`: ends the session (the plugin then removes its socket for good).
    pub fn fin(mut self) -> Result<(), DpError> {
        match self.exchange("/fin", None)?.as_str() {
            "/fin_ack" => Ok(()),
            "/nak" => Err(DpError::Nak {
                request: "/fin".into(),
            }),
            other => Err(self.unexpected("/fin", other)),
        }
    }

    fn unexpected(&self, request: &str, reply: &str) -> DpError {
        DpError::Unexpected {
            request: request.to_string(),
            reply: reply.to_string(),
        }
    }

    fn check_len(&self, req: &str) -> Result<(), DpError> {
        if req.len() > 64 {
            return Err(DpError::BadRequest {
                request: req.to_string(),
                reason: "longer than the plugin's 64-byte buffer",
            });
        }
        Ok(())
    }

    fn send(&mut self, req: &str, fd: Option<BorrowedFd<'_>>) -> Result<(), DpError> {
        wire::send(self.sock.as_fd(), req.as_bytes(), fd).map_err(|source| {
            if is_timeout(&source) {
                DpError::Timeout {
                    request: req.to_string(),
                    after: self.timeout,
                }
            } else if source.raw_os_error() == Some(libc::EPIPE) {
                DpError::Closed {
                    request: req.to_string(),
                }
            } else {
                DpError::Io {
                    what: "sending a request",
                    source,
                }
            }
        })
    }

    /// Receives one reply: text, descriptors, whether the control data was cut.
    fn recv(&mut self, req: &str) -> Result<(String, Vec<OwnedFd>, bool), DpError> {
        let mut buf = [0u8; 256];
        let m = wire::recv(self.sock.as_fd(), &mut buf).map_err(|source| {
            if is_timeout(&source) {
                DpError::Timeout {
                    request: req.to_string(),
                    after: self.timeout,
                }
            } else if source.raw_os_error() == Some(libc::ECONNRESET) {
                DpError::Closed {
                    request: req.to_string(),
                }
            } else {
                DpError::Io {
                    what: "receiving a reply",
                    source,
                }
            }
        })?;
        if m.len == 0 && !m.truncated {
            return Err(DpError::Closed {
                request: req.to_string(),
            });
        }
        let text = String::from_utf8_lossy(&buf[..m.len.min(buf.len())]).into_owned();
        if m.truncated {
            return Err(DpError::Unexpected {
                request: req.to_string(),
                reply: format!("{text}... (longer than {} bytes)", buf.len()),
            });
        }
        Ok((text, m.fds, m.ctrunc))
    }

    fn recv_text(&mut self, req: &str) -> Result<String, DpError> {
        let (text, fds, ctrunc) = self.recv(req)?;
        if !fds.is_empty() || ctrunc {
            return Err(DpError::UnexpectedFd {
                request: req.to_string(),
            });
        }
        Ok(text)
    }

    fn exchange(&mut self, req: &str, fd: Option<BorrowedFd<'_>>) -> Result<String, DpError> {
        self.check_len(req)?;
        self.send(req, fd)?;
        self.recv_text(req)
    }
}

/// The `/connect` request for `hostname`, warning first when the plugin will refuse it for its
/// length (its 64-byte buffer cuts the request; it is sent anyway, and the `/host_nak` that
/// follows is reported with the reason).
fn connect_request(hostname: &str) -> Result<String, DpError> {
    if hostname.len() > MAX_HOSTNAME {
        tracing::warn!(
            hostname,
            len = hostname.len(),
            "pod name longer than {MAX_HOSTNAME} characters: the AF_XDP device plugin cuts \
             /connect to 64 bytes and will refuse this pod (/host_nak); use a shorter pod name"
        );
    }
    let req = format!("/connect,{hostname}");
    if hostname.contains(',') {
        return Err(DpError::BadRequest {
            request: req,
            reason: "hostname contains a comma",
        });
    }
    Ok(req)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ETIMEDOUT))
}

/// `bpf(BPF_OBJ_GET, path)`: opens a pinned map (read-write). Needs no BPF capability on Linux
/// 5.19+, only write access to the pin.
pub fn open_pinned(path: &Path) -> Result<OwnedFd, DpError> {
    let err = |source| DpError::Pinned {
        path: path.to_path_buf(),
        source,
    };
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))?;
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32), path_fd (i32).
    let mut attr = [0u64; 3];
    attr[0] = c.as_ptr() as u64;
    const BPF_OBJ_GET: libc::c_long = 7;
    // SAFETY: `attr` is a zeroed bpf_attr prefix of 24 bytes whose pathname points to a
    // NUL-terminated string alive during the call; the kernel reads only `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: the kernel returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The BPF map type of `fd` from `/proc/self/fdinfo` (`None` if it is not a BPF map).
pub fn map_type(fd: BorrowedFd<'_>) -> Option<u32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("map_type:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `BPF_MAP_TYPE_XSKMAP`.
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;

/// Where one port's XSKMAP comes from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapRequest {
    /// The plugin's socket (`None`: `/tmp/afxdp_dp/<dev>/afxdp.sock`).
    Uds(Option<PathBuf>),
    /// A pinned map (`None`: `/tmp/afxdp_dp/<dev>/xsks_map`; a directory: its `xsks_map`).
    Pinned(Option<PathBuf>),
}

/// The pinned map path a request resolves to (a directory, e.g. a bpfman CSI mount, means its
/// `xsks_map`).
pub fn pin_path(dev: &str, path: Option<&Path>) -> PathBuf {
    match path {
        None => pinned_map_path(dev),
        Some(p) if p.is_dir() => p.join("xsks_map"),
        Some(p) => p.to_path_buf(),
    }
}

/// Resolves every port's XSKMAP: `ports` maps an interface to its request. Pinned requests (and
/// UDS requests whose device also has a mounted `xsks_map`, which wins: the UDS map is stale
/// then) open the pin; the rest are served by one [`DpSession`] per pool, asking for every device
/// of that pool. `env` is the process environment (`std::env::vars()`); `hostname` the pod name.
/// Returns the map fd of every interface.
pub fn resolve_maps(
    ports: &BTreeMap<String, MapRequest>,
    env: impl IntoIterator<Item = (String, String)>,
    hostname: &str,
    timeout: Duration,
) -> Result<BTreeMap<String, OwnedFd>, DpError> {
    let (maps, open) = resolve_maps_open(ports, env, hostname, timeout, &BTreeSet::new())?;
    debug_assert!(open.is_empty());
    Ok(maps)
}

/// A device-plugin session kept open after the map fds were received, for `/config_busy_poll`
/// once the ports exist; end it with [`DpSession::fin`].
#[derive(Debug)]
pub struct OpenSession {
    /// The devices of the session's pool.
    pub devices: Vec<String>,
    /// The session, map fds received.
    pub session: DpSession,
}

/// [`resolve_maps`], but the sessions serving a device in `keep_open` are returned open (not
/// `/fin`ished), so that the caller can configure busy polling on its sockets through them.
///
/// A device in `keep_open` whose map comes from a pin gets a session too when the plugin's
/// socket is mounted beside the pin (`afxdp.sock` in the pin's directory, or the `uds` socket
/// the pin won over): a pool with both UDS and pinning serves `/config_busy_poll` on that socket
/// (the plugin sets the options on the socket it receives, whatever map the socket is in). Such
/// a session asks for no map. Without a socket there is no session: busy polling is then the
/// port's own business (which needs CAP_NET_ADMIN for `SO_PREFER_BUSY_POLL`).
pub fn resolve_maps_open(
    ports: &BTreeMap<String, MapRequest>,
    env: impl IntoIterator<Item = (String, String)>,
    hostname: &str,
    timeout: Duration,
    keep_open: &BTreeSet<String>,
) -> Result<(BTreeMap<String, OwnedFd>, Vec<OpenSession>), DpError> {
    let mut out = BTreeMap::new();
    // Devices served over a socket: the socket (`None`: the default) and whether the session
    // must get their map (false: the map came from a pin, the session is for busy polling).
    let mut wanted: BTreeMap<String, (Option<PathBuf>, bool)> = BTreeMap::new();
    for (dev, req) in ports {
        let (pin, sock) = match req {
            MapRequest::Pinned(p) => {
                let pin = pin_path(dev, p.as_deref());
                let beside = pin.with_file_name("afxdp.sock");
                (pin, beside)
            }
            MapRequest::Uds(sock) => {
                let pin = pinned_map_path(dev);
                if !pin.exists() {
                    wanted.insert(dev.clone(), (sock.clone(), true));
                    continue;
                }
                tracing::info!(dev, pin = %pin.display(),
                    "both the plugin socket and a pinned xsks_map are mounted: using the pin");
                (pin, sock.clone().unwrap_or_else(|| socket_path(dev)))
            }
        };
        out.insert(dev.clone(), open_pinned(&pin)?);
        if keep_open.contains(dev) {
            if sock.exists() {
                tracing::info!(dev, socket = %sock.display(),
                    "pinned map: busy polling through the device plugin's socket");
                wanted.insert(dev.clone(), (Some(sock), false));
            } else {
                tracing::info!(dev, socket = %sock.display(),
                    "pinned map and no device plugin socket: the port sets busy polling itself");
            }
        }
    }
    if wanted.is_empty() {
        return Ok((out, Vec::new()));
    }
    let allocs = allocations_from_env(env)?;
    let mut open = Vec::new();
    for planned in group_sessions(&wanted, &allocs)? {
        let (devs, fetch) = (planned.devices, planned.fetch);
        let path = planned.socket.unwrap_or_else(|| socket_path(&devs[0]));
        tracing::info!(path = %path.display(), devices = ?devs, maps = fetch,
            "AF_XDP device plugin session");
        let mut s = DpSession::connect(&path, hostname, timeout)?;
        // Every device of the pool, as the plugin expects; only those that did not come from a
        // pin are kept.
        for d in devs.iter().filter(|_| fetch) {
            let fd = s.map_fd(d)?;
            if wanted.get(d).is_some_and(|w| w.1) {
                out.insert(d.clone(), fd);
            }
        }
        if devs.iter().any(|d| keep_open.contains(d)) {
            open.push(OpenSession {
                devices: devs,
                session: s,
            });
        } else {
            s.fin()?;
        }
    }
    Ok((out, open))
}

/// One planned session: every device of one Allocate shares one server.
struct PlannedSession {
    /// The devices of the pool.
    devices: Vec<String>,
    /// The socket (the first one configured, else the default of the first device).
    socket: Option<PathBuf>,
    /// Whether the session fetches maps (false: busy polling only).
    fetch: bool,
}

/// One session per pool. A device in no `AFXDP_DEVICES_*` variable gets a session of its own
/// when its socket is known, else it is [`DpError::NotAllocated`].
fn group_sessions(
    wanted: &BTreeMap<String, (Option<PathBuf>, bool)>,
    allocs: &[Allocation],
) -> Result<Vec<PlannedSession>, DpError> {
    let mut sessions: Vec<PlannedSession> = Vec::new();
    for (dev, (socket, fetch)) in wanted {
        let devices = match allocs.iter().find(|a| a.devices.contains(dev)) {
            Some(a) => a.devices.clone(),
            None if socket.is_some() => vec![dev.clone()],
            None => {
                let known = allocs
                    .iter()
                    .map(|a| format!("{}={}", a.pool, a.devices.join(" ")))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(DpError::NotAllocated {
                    dev: dev.clone(),
                    known: if known.is_empty() {
                        "none set".into()
                    } else {
                        known
                    },
                });
            }
        };
        match sessions.iter_mut().find(|s| s.devices == devices) {
            Some(s) => {
                if s.socket.is_none() {
                    s.socket = socket.clone();
                }
                s.fetch |= fetch;
            }
            None => sessions.push(PlannedSession {
                devices,
                socket: socket.clone(),
                fetch: *fetch,
            }),
        }
    }
    Ok(sessions)
}

/// SOCK_SEQPACKET messages with at most one `SCM_RIGHTS` descriptor, as the plugin speaks them.
/// Public for tests and mock plugins.
pub mod wire {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
    use std::path::Path;
    use std::time::Duration;

    fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let b = path.as_os_str().as_encoded_bytes();
        if b.len() >= sa.sun_path.len() || b.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        for (d, s) in sa.sun_path.iter_mut().zip(b) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + b.len() + 1;
        Ok((sa, len as libc::socklen_t))
    }

    fn socket() -> io::Result<OwnedFd> {
        // SAFETY: plain call; the result is checked.
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// A connected pair of SOCK_SEQPACKET sockets (`socketpair`): one end for a client, the
    /// other for whoever plays the plugin (tests, the fuzz target).
    pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes; the result is checked.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: two new descriptors we own.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// A connected SOCK_SEQPACKET socket to `path`.
    pub fn connect(path: &Path) -> io::Result<OwnedFd> {
        let (sa, len) = sockaddr(path)?;
        let fd = socket()?;
        // SAFETY: `sa` is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// A listening SOCK_SEQPACKET socket bound to `path`.
    pub fn listen(path: &Path) -> io::Result<OwnedFd> {
        let (sa, len) = sockaddr(path)?;
        let fd = socket()?;
        // SAFETY: `sa` is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain call on our socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 1) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Accepts one connection.
    pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
        // SAFETY: null address pointers are allowed; the result is checked.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Sets receive and send timeouts.
    pub fn set_timeouts(fd: BorrowedFd<'_>, t: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        };
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: `tv` is a timeval of the size given.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// `setsockopt(fd, SOL_SOCKET, opt, v)` for an int option (e.g. the busy-poll options the
    /// plugin sets on a pod's socket).
    pub fn set_int_opt(fd: BorrowedFd<'_>, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
        // SAFETY: an int option of an open descriptor, from a local of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `getsockopt(fd, SOL_SOCKET, opt)` for an int option.
    pub fn int_opt(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an int option of an open descriptor, into a local of the right size.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(v)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends one datagram with the descriptors `fds` (`SCM_RIGHTS`; none when empty).
    pub fn send_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
        let mut iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let payload = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: msghdr is plain data; zeroed is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points to `space` writable, aligned bytes, enough for one cmsg
            // carrying `payload` bytes; CMSG_FIRSTHDR is therefore non-null.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(c),
                    payload,
                );
            }
        }
        // SAFETY: `msg` points to live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one datagram with at most one descriptor.
    pub fn send(sock: BorrowedFd<'_>, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        match fd {
            Some(f) => send_fds(sock, data, &[f.as_raw_fd()]),
            None => send_fds(sock, data, &[]),
        }
    }

    /// One received datagram.
    #[derive(Debug)]
    pub struct Received {
        /// Bytes in the datagram (more than the buffer when `truncated`).
        pub len: usize,
        /// The datagram did not fit the buffer (`MSG_TRUNC`).
        pub truncated: bool,
        /// The control data did not fit (`MSG_CTRUNC`).
        pub ctrunc: bool,
        /// Descriptors received (`SCM_RIGHTS`, close-on-exec).
        pub fds: Vec<OwnedFd>,
    }

    /// Receives one datagram into `buf`, with room for one descriptor (as the plugin has);
    /// 0 bytes and no truncation = EOF.
    pub fn recv(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
        recv_with(sock, buf, 1)
    }

    /// [`recv`] with room for `max_fds` descriptors.
    pub fn recv_with(sock: BorrowedFd<'_>, buf: &mut [u8], max_fds: usize) -> io::Result<Received> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE((max_fds * 4) as u32) } as usize;
        let mut cbuf = vec![0u64; space.div_ceil(8)];
        // SAFETY: msghdr is plain data; zeroed is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let n = loop {
            // SAFETY: `msg` points to live, writable buffers of the sizes given.
            let n = unsafe {
                libc::recvmsg(
                    sock.as_raw_fd(),
                    &mut msg,
                    libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut fds = Vec::new();
        // SAFETY: walking the control data the kernel filled in, within msg_controllen; each
        // SCM_RIGHTS payload holds whole ints, each a new descriptor we now own.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                    for i in 0..bytes / 4 {
                        let fd = std::ptr::read_unaligned(data.add(i * 4).cast::<RawFd>());
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Received {
            len: n,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            ctrunc: msg.msg_flags & libc::MSG_CTRUNC != 0,
            fds,
        })
    }
}
