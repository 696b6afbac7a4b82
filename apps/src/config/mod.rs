//! The service's configuration file (JSONC, in the spirit of CNDP's jsonc files): the model,
//! its checks, and its translation into the drivers', stack's and runtime's settings.
//!
//! See `deploy/cnet.jsonc` for a documented example and `docs/SERVICE.md` for every field.
//! Unknown fields are errors (with the name probably meant); features not built yet are errors,
//! never silently ignored.

pub mod load;

pub use load::{ConfigError, PathError, Pos};

use cnet_drivers::xdp::{AttachMode, BindMode, BusyPoll, HugePages, XdpConfig, XskMapSource};
use cnet_stack::{IfAddr, MacAddr, Neighbor, Route, StackConfig};
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name and description (informational).
    #[serde(default)]
    pub application: Application,
    /// Settings every port inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// UMEM pools by name: frames and frame size per queue.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
    /// Ports by name: one interface each, one runtime (N queues, one thread each) per port.
    pub ports: BTreeMap<String, PortConfig>,
    /// CPU pinning of queue threads.
    #[serde(default)]
    pub threads: Vec<ThreadConfig>,
    /// Stack limits, for every queue's stack.
    #[serde(default)]
    pub stack: StackLimits,
    /// Runtime limits (idle strategy, frames lent to other threads).
    #[serde(default)]
    pub runtime: RuntimeLimits,
    /// Applications run on the ports.
    #[serde(default)]
    pub apps: Apps,
    /// Prometheus metrics and health listener.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Control socket (`cnet stats`, `cnet ss`).
    #[serde(default)]
    pub control: Option<ControlConfig>,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Periodic self-diagnosis (checksum drops that dominate traffic, ...).
    #[serde(default)]
    pub diagnostics: Diagnostics,
}

/// `application`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Service name (logs, metrics `job`).
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// XDP attach mode as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// Native, falling back to generic.
    #[default]
    Auto,
    /// Driver mode.
    Native,
    /// Generic (skb) mode.
    Generic,
}

/// Bind mode as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bind {
    /// Zero-copy where supported, copy otherwise.
    #[default]
    Auto,
    /// Copy mode.
    Copy,
    /// Zero-copy or an error.
    ZeroCopy,
}

/// Huge pages for a pool's UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Huge {
    /// Ordinary pages.
    Never,
    /// Huge pages when reserved.
    #[default]
    IfAvailable,
    /// Huge pages or an error.
    Required,
}

/// Idle strategy of queue threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleMode {
    /// Sleep in poll(2).
    #[default]
    Poll,
    /// Spin.
    Spin,
}

/// `busy_poll`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusyPollConfig {
    /// `SO_BUSY_POLL` microseconds.
    pub timeout_us: u32,
    /// `SO_BUSY_POLL_BUDGET` (1..=65535).
    pub budget: u32,
    /// `SO_PREFER_BUSY_POLL`.
    #[serde(default = "yes")]
    pub prefer: bool,
}

fn yes() -> bool {
    true
}

/// `defaults`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Pool of ports that name none.
    #[serde(default)]
    pub pool: Option<String>,
    /// Attach mode.
    #[serde(default)]
    pub attach: Option<Attach>,
    /// Bind mode.
    #[serde(default)]
    pub bind: Option<Bind>,
    /// `XDP_USE_NEED_WAKEUP`.
    #[serde(default)]
    pub need_wakeup: Option<bool>,
    /// Busy polling.
    #[serde(default)]
    pub busy_poll: Option<BusyPollConfig>,
    /// Learn addresses, routes and neighbours from the kernel.
    #[serde(default)]
    pub netlink: Option<bool>,
}

/// `pools.NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// UMEM frames per queue.
    pub frames: u32,
    /// Frame size: 2048 or 4096.
    #[serde(default = "default_frame_size")]
    pub frame_size: u32,
    /// Headroom of transmit frames.
    #[serde(default = "default_headroom")]
    pub headroom: u32,
    /// Huge pages.
    #[serde(default)]
    pub huge_pages: Huge,
    /// One UMEM for all of a port's queues (`true`) or one per queue.
    #[serde(default = "yes")]
    pub shared: bool,
}

fn default_frame_size() -> u32 {
    2048
}
fn default_headroom() -> u32 {
    192
}

/// Where a port's XSKMAP comes from.
///
/// `"self"`; `"uds"` or `{"uds": SOCKET}` (the AF_XDP device plugin's handshake; default socket
/// `/tmp/afxdp_dp/<interface>/afxdp.sock`); `"pinned"` or `{"pinned": PATH}` (a map pinned by the
/// plugin, default `/tmp/afxdp_dp/<interface>/xsks_map`, or a bpfman CSI volume: a directory
/// means its `xsks_map`). See docs/DEPLOY.md.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum XskMap {
    /// cnet loads its own redirect program (ARP/IPv4 for the stack's addresses only; root, or
    /// CAP_BPF + CAP_NET_ADMIN + CAP_NET_RAW).
    #[default]
    SelfLoad,
    /// The device plugin's UNIX socket (`None`: the default path for the interface).
    Uds(Option<std::path::PathBuf>),
    /// A pinned map (`None`: the plugin's default pin for the interface).
    Pinned(Option<std::path::PathBuf>),
}

impl XskMap {
    /// The device-plugin request of this source (`None` for `self`).
    pub fn request(&self) -> Option<crate::deviceplugin::MapRequest> {
        use crate::deviceplugin::MapRequest;
        match self {
            XskMap::SelfLoad => None,
            XskMap::Uds(p) => Some(MapRequest::Uds(p.clone())),
            XskMap::Pinned(p) => Some(MapRequest::Pinned(p.clone())),
        }
    }
}

impl<'de> Deserialize<'de> for XskMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<XskMap, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Path(BTreeMap<String, String>),
        }
        const EXPECTED: &str =
            "expected \"self\", \"uds\", \"pinned\", {\"uds\": SOCKET} or {\"pinned\": PATH}";
        let raw = Raw::deserialize(d).map_err(|_| serde::de::Error::custom(EXPECTED))?;
        let abs = |p: String| -> Result<std::path::PathBuf, D::Error> {
            if p.starts_with('/') && !p.contains('\0') {
                Ok(p.into())
            } else {
                Err(serde::de::Error::custom(format!(
                    "{p:?}: expected an absolute path"
                )))
            }
        };
        match raw {
            Raw::Name(n) => match n.as_str() {
                "self" => Ok(XskMap::SelfLoad),
                "uds" => Ok(XskMap::Uds(None)),
                "pinned" => Ok(XskMap::Pinned(None)),
                other => Err(serde::de::Error::custom(format!("{other:?}: {EXPECTED}"))),
            },
            Raw::Path(m) if m.len() == 1 => {
                let (k, v) = m.into_iter().next().expect("one entry");
                match k.as_str() {
                    "uds" => Ok(XskMap::Uds(Some(abs(v)?))),
                    "pinned" => Ok(XskMap::Pinned(Some(abs(v)?))),
                    other => Err(serde::de::Error::custom(format!("{other:?}: {EXPECTED}"))),
                }
            }
            Raw::Path(_) => Err(serde::de::Error::custom(EXPECTED)),
        }
    }
}

/// An IPv4 address with prefix, `A.B.C.D/P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IfAddr);

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected A.B.C.D/P"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?}: bad IPv4 address"))?;
        let prefix_len: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..=32"))?;
        Ok(Cidr(IfAddr { addr, prefix_len }))
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A MAC address, `xx:xx:xx:xx:xx:xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub MacAddr);

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        let parts: Vec<&str> = s.split(':').collect();
        let mut mac = [0u8; 6];
        let ok = parts.len() == 6
            && mac
                .iter_mut()
                .zip(&parts)
                .all(|(m, p)| p.len() == 2 && u8::from_str_radix(p, 16).map(|v| *m = v).is_ok());
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "{s:?}: expected a MAC address xx:xx:xx:xx:xx:xx"
            )));
        }
        Ok(Mac(MacAddr(mac)))
    }
}

/// A static route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination network.
    pub dst: Cidr,
    /// Next hop (none: directly connected).
    #[serde(default)]
    pub via: Option<Ipv4Addr>,
    /// Lower is preferred.
    #[serde(default)]
    pub metric: u32,
}

/// A static (permanent) neighbour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: Mac,
}

/// `ports.NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Interface name.
    pub interface: String,
    /// Queue ids served, one thread each.
    #[serde(default = "default_queues")]
    pub queues: Vec<u32>,
    /// Pool name (else `defaults.pool`, else built-in defaults).
    #[serde(default)]
    pub pool: Option<String>,
    /// Attach mode.
    #[serde(default)]
    pub attach: Option<Attach>,
    /// Bind mode.
    #[serde(default)]
    pub bind: Option<Bind>,
    /// `XDP_USE_NEED_WAKEUP`.
    #[serde(default)]
    pub need_wakeup: Option<bool>,
    /// Busy polling.
    #[serde(default)]
    pub busy_poll: Option<BusyPollConfig>,
    /// XSKMAP source: `"self"`, `"uds"`, `{"uds": SOCKET}`, `"pinned"`, `{"pinned": PATH}`.
    #[serde(default)]
    pub xskmap: XskMap,
    /// Learn addresses, routes and neighbours from the kernel.
    #[serde(default)]
    pub netlink: Option<bool>,
    /// Addresses besides the kernel's.
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Static neighbours.
    #[serde(default)]
    pub neighbors: Vec<NeighborConfig>,
}

fn default_queues() -> Vec<u32> {
    vec![0]
}

/// `threads[i]`: pin a queue thread to a CPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadConfig {
    /// Port name.
    pub port: String,
    /// Queue id.
    pub queue: u32,
    /// CPU set the thread may run on.
    pub cpus: Vec<usize>,
}

/// `stack`: limits of every queue's stack (unset: the stack's defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackLimits {
    /// Datagrams queued per UDP socket.
    #[serde(default)]
    pub udp_rx_queue: Option<usize>,
    /// Frames queued for the driver.
    #[serde(default)]
    pub tx_queue: Option<usize>,
    /// Neighbour entries.
    #[serde(default)]
    pub max_neighbors: Option<usize>,
    /// TCP send buffer per connection, bytes.
    #[serde(default)]
    pub tcp_snd_buf: Option<u32>,
    /// TCP receive buffer per connection, bytes.
    #[serde(default)]
    pub tcp_rcv_buf: Option<u32>,
    /// TCP connections in the table.
    #[serde(default)]
    pub tcp_max_connections: Option<usize>,
    /// SYN-RECEIVED connections per listener before SYN cookies.
    #[serde(default)]
    pub tcp_syn_backlog: Option<u32>,
    /// SYN cookies.
    #[serde(default)]
    pub tcp_syncookies: Option<bool>,
    /// Received UDP/TCP checksums: `verify` (default) or `accept-partial`.
    #[serde(default)]
    pub rx_checksum: Option<RxChecksum>,
}

/// `stack.rx_checksum`: what the stack does with received UDP/TCP checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RxChecksum {
    /// Verify every checksum (RFC 768, RFC 9293, RFC 1071); a partial one is dropped as
    /// `udp_partial_checksum` / `tcp_partial_checksum` and the service says how to fix the sender.
    #[default]
    Verify,
    /// Also accept a checksum that is exactly the pseudo-header sum a sender with checksum
    /// offload leaves (`CHECKSUM_PARTIAL`), counted as `rx_partial_checksum_accepted`. An explicit
    /// trust decision for a peer that cannot corrupt frames (the kernel end of a veth): the
    /// payload of such frames is covered by no checksum.
    AcceptPartial,
}

impl StackLimits {
    /// Applies the limits set to a stack configuration.
    pub fn apply(&self, c: &mut StackConfig) {
        if let Some(v) = self.udp_rx_queue {
            c.udp_rx_queue = v;
        }
        if let Some(v) = self.tx_queue {
            c.tx_queue = v;
        }
        if let Some(v) = self.max_neighbors {
            c.max_neighbors = v;
        }
        if let Some(v) = self.tcp_snd_buf {
            c.tcp_snd_buf = v;
        }
        if let Some(v) = self.tcp_rcv_buf {
            c.tcp_rcv_buf = v;
        }
        if let Some(v) = self.tcp_max_connections {
            c.tcp_max_connections = v;
        }
        if let Some(v) = self.tcp_syn_backlog {
            c.tcp_syn_backlog = v;
        }
        if let Some(v) = self.tcp_syncookies {
            c.tcp_syncookies = v;
        }
        if let Some(v) = self.rx_checksum {
            c.rx_accept_partial_checksum = v == RxChecksum::AcceptPartial;
        }
    }
}

/// `runtime`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLimits {
    /// Idle strategy.
    #[serde(default)]
    pub idle: IdleMode,
    /// Frames each queue lends to other threads for sending.
    #[serde(default)]
    pub spare_frames: Option<usize>,
}

impl RuntimeLimits {
    /// The runtime's limits.
    pub fn limits(&self) -> cnet_socket::Limits {
        let mut l = cnet_socket::Limits {
            idle: match self.idle {
                IdleMode::Poll => cnet_socket::Idle::Poll,
                IdleMode::Spin => cnet_socket::Idle::Spin,
            },
            ..Default::default()
        };
        if let Some(s) = self.spare_frames {
            l.spare_frames = s;
        }
        l
    }
}

/// `apps.udp_echo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpEchoConfig {
    /// UDP port.
    pub port: u16,
    /// Ports (by name) it runs on; all when absent.
    #[serde(default)]
    pub on: Option<Vec<String>>,
}

/// `apps.tcp_echo`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpEchoConfig {
    /// TCP port.
    pub port: u16,
    /// Listen backlog.
    #[serde(default = "default_backlog")]
    pub backlog: u32,
    /// Ports (by name) it runs on; all when absent.
    #[serde(default)]
    pub on: Option<Vec<String>>,
}

/// `apps.http`: the HTTP/1.1 server of `cnet http` (`GET /`, `GET /bytes/N`, `POST /echo`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP port.
    pub port: u16,
    /// tokio worker threads running the connections (1..=64).
    #[serde(default = "default_http_threads")]
    pub threads: usize,
    /// Ports (by name) it runs on; all when absent.
    #[serde(default)]
    pub on: Option<Vec<String>>,
}

fn default_http_threads() -> usize {
    2
}

fn default_backlog() -> u32 {
    1024
}

/// `apps`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Apps {
    /// UDP echo.
    #[serde(default)]
    pub udp_echo: Option<UdpEchoConfig>,
    /// TCP echo.
    #[serde(default)]
    pub tcp_echo: Option<TcpEchoConfig>,
    /// HTTP server (`cnet http`'s hyper server on the port's runtime).
    #[serde(default)]
    pub http: Option<HttpConfig>,
    /// QUIC: name reserved, not available in this build.
    #[serde(default)]
    pub quic: Option<serde_json::Value>,
}

/// `metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener (`/metrics`, `/healthz`, `/readyz`), a kernel socket.
    pub listen: SocketAddr,
}

/// `control`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Path of the UNIX socket.
    pub socket: PathBuf,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `logging`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `tracing` filter (`info`, `cnet=debug`, ...); `RUST_LOG` overrides it.
    #[serde(default = "default_level")]
    pub level: String,
    /// Format.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_level() -> String {
    "info".into()
}

/// `diagnostics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    /// Seconds between checks.
    #[serde(default = "default_interval")]
    pub interval_s: f64,
    /// Share of received frames dropped for a bad checksum above which the service warns.
    #[serde(default = "default_ratio")]
    pub bad_checksum_ratio: f64,
    /// Fewest received frames in an interval before the ratio is judged.
    #[serde(default = "default_min_frames")]
    pub min_frames: u64,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics {
            interval_s: default_interval(),
            bad_checksum_ratio: default_ratio(),
            min_frames: default_min_frames(),
        }
    }
}

fn default_interval() -> f64 {
    5.0
}
fn default_ratio() -> f64 {
    0.5
}
fn default_min_frames() -> u64 {
    10
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        load::parse_file(file, Config::check)
    }

    /// Parses and checks configuration text (`file` names it in messages).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        load::parse_str(file, text, Config::check)
    }

    /// Checks what the types alone do not: cross references, ranges, duplicates.
    pub fn check(&self) -> Result<(), PathError> {
        if self.ports.is_empty() {
            return Err(PathError::new("ports", "at least one port is needed"));
        }
        for (name, p) in &self.pools {
            let at = format!("pools.{name}");
            if p.frame_size != 2048 && p.frame_size != 4096 {
                return Err(PathError::new(
                    format!("{at}.frame_size"),
                    format!("{} is not 2048 or 4096", p.frame_size),
                ));
            }
            if p.frames < 64 || !p.frames.is_power_of_two() {
                return Err(PathError::new(
                    format!("{at}.frames"),
                    format!("{} must be a power of two, at least 64", p.frames),
                ));
            }
            if p.headroom >= p.frame_size / 2 {
                return Err(PathError::new(
                    format!("{at}.headroom"),
                    "headroom must be under half the frame size",
                ));
            }
        }
        let check_pool = |path: String, pool: &Option<String>| -> Result<(), PathError> {
            match pool {
                Some(n) if !self.pools.contains_key(n) => {
                    let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
                    Err(PathError::new(
                        path,
                        format!("no pool named {n:?} (pools: {known:?})"),
                    ))
                }
                _ => Ok(()),
            }
        };
        check_pool("defaults.pool".into(), &self.defaults.pool)?;
        let mut ifaces = BTreeSet::new();
        for (name, p) in &self.ports {
            let at = format!("ports.{name}");
            check_pool(format!("{at}.pool"), &p.pool)?;
            if p.interface.is_empty() || p.interface.len() > 15 || p.interface.contains('/') {
                return Err(PathError::new(
                    format!("{at}.interface"),
                    format!("{:?} is not an interface name", p.interface),
                ));
            }
            if !ifaces.insert(&p.interface) {
                return Err(PathError::new(
                    format!("{at}.interface"),
                    format!(
                        "interface {:?} is used by another port: one port per interface (list its queues instead)",
                        p.interface
                    ),
                ));
            }
            if p.queues.is_empty() {
                return Err(PathError::new(format!("{at}.queues"), "no queue to serve"));
            }
            let mut seen = BTreeSet::new();
            for (i, q) in p.queues.iter().enumerate() {
                if !seen.insert(q) {
                    return Err(PathError::new(
                        format!("{at}.queues[{i}]"),
                        format!("queue {q} listed twice"),
                    ));
                }
            }
            if let Some(bp) = p.busy_poll.or(self.defaults.busy_poll) {
                if matches!(p.xskmap, XskMap::Uds(_)) && !bp.prefer {
                    return Err(PathError::new(
                        format!("{at}.busy_poll.prefer"),
                        "with xskmap \"uds\" the device plugin sets busy polling \
                         (/config_busy_poll) and always sets SO_PREFER_BUSY_POLL: \
                         prefer must be true",
                    ));
                }
                if bp.budget == 0 || bp.budget > 65535 {
                    return Err(PathError::new(
                        format!("{at}.busy_poll.budget"),
                        "budget must be 1..=65535",
                    ));
                }
            }
        }
        for (i, t) in self.threads.iter().enumerate() {
            let at = format!("threads[{i}]");
            let Some(p) = self.ports.get(&t.port) else {
                return Err(PathError::new(
                    format!("{at}.port"),
                    format!("no port named {:?}", t.port),
                ));
            };
            if !p.queues.contains(&t.queue) {
                return Err(PathError::new(
                    format!("{at}.queue"),
                    format!("port {:?} does not serve queue {}", t.port, t.queue),
                ));
            }
            if t.cpus.is_empty() || t.cpus.iter().any(|c| *c >= libc::CPU_SETSIZE as usize) {
                return Err(PathError::new(
                    format!("{at}.cpus"),
                    "give one or more CPU numbers",
                ));
            }
        }
        let check_on = |path: &str, on: &Option<Vec<String>>| -> Result<(), PathError> {
            for (i, n) in on.iter().flatten().enumerate() {
                if !self.ports.contains_key(n) {
                    return Err(PathError::new(
                        format!("{path}.on[{i}]"),
                        format!("no port named {n:?}"),
                    ));
                }
            }
            Ok(())
        };
        if let Some(u) = &self.apps.udp_echo {
            check_on("apps.udp_echo", &u.on)?;
        }
        if let Some(t) = &self.apps.tcp_echo {
            check_on("apps.tcp_echo", &t.on)?;
        }
        if let Some(h) = &self.apps.http {
            check_on("apps.http", &h.on)?;
            if h.threads == 0 || h.threads > 64 {
                return Err(PathError::new("apps.http.threads", "must be within 1..=64"));
            }
            if let Some(t) = &self.apps.tcp_echo {
                let overlap = self.ports.keys().any(|p| {
                    let runs = |on: &Option<Vec<String>>| on.as_ref().is_none_or(|v| v.contains(p));
                    runs(&h.on) && runs(&t.on)
                });
                if t.port == h.port && overlap {
                    return Err(PathError::new(
                        "apps.http.port",
                        format!(
                            "TCP port {} is taken by apps.tcp_echo on the same port",
                            h.port
                        ),
                    ));
                }
            }
        }
        if self.apps.quic.is_some() {
            return Err(PathError::new(
                "apps.quic",
                "app `quic` is not available in this build",
            ));
        }
        if self.apps.udp_echo.is_none() && self.apps.tcp_echo.is_none() && self.apps.http.is_none()
        {
            return Err(PathError::new(
                "apps",
                "no app configured: nothing to serve",
            ));
        }
        let d = &self.diagnostics;
        if !(d.interval_s >= 0.1 && d.interval_s <= 3600.0) {
            return Err(PathError::new(
                "diagnostics.interval_s",
                "must be within 0.1..=3600",
            ));
        }
        if !(d.bad_checksum_ratio > 0.0 && d.bad_checksum_ratio <= 1.0) {
            return Err(PathError::new(
                "diagnostics.bad_checksum_ratio",
                "must be within (0, 1]",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.logging.level) {
            return Err(PathError::new("logging.level", format!("bad filter: {e}")));
        }
        Ok(())
    }

    /// The AF_XDP settings of port `name`.
    pub fn xdp_config(&self, name: &str) -> Option<XdpConfig> {
        let p = self.ports.get(name)?;
        let d = &self.defaults;
        let mut x = XdpConfig::new(&p.interface);
        x.queues = p.queues.clone();
        if let Some(pool) = p
            .pool
            .as_ref()
            .or(d.pool.as_ref())
            .and_then(|n| self.pools.get(n))
        {
            x.frames = pool.frames;
            x.frame_size = pool.frame_size;
            x.headroom = pool.headroom;
            x.shared_umem = pool.shared;
            x.huge_pages = match pool.huge_pages {
                Huge::Never => HugePages::Never,
                Huge::IfAvailable => HugePages::IfAvailable,
                Huge::Required => HugePages::Required,
            };
        }
        x.attach_mode = match p.attach.or(d.attach).unwrap_or_default() {
            Attach::Auto => AttachMode::Auto,
            Attach::Native => AttachMode::Native,
            Attach::Generic => AttachMode::Generic,
        };
        x.bind_mode = match p.bind.or(d.bind).unwrap_or_default() {
            Bind::Auto => BindMode::Auto,
            Bind::Copy => BindMode::Copy,
            Bind::ZeroCopy => BindMode::ZeroCopy,
        };
        if let Some(w) = p.need_wakeup.or(d.need_wakeup) {
            x.need_wakeup = w;
        }
        x.busy_poll = p.busy_poll.or(d.busy_poll).map(|b| BusyPoll {
            timeout_us: b.timeout_us,
            budget: b.budget,
            prefer: b.prefer,
        });
        if p.xskmap == XskMap::SelfLoad {
            // cnet's own program: only the stack's addresses come to cnet (docs/DEPLOY.md).
            x.map_source = XskMapSource::Redirect;
        }
        Some(x)
    }

    /// Whether port `name` learns from netlink (default on).
    pub fn netlink(&self, name: &str) -> bool {
        self.ports
            .get(name)
            .and_then(|p| p.netlink)
            .or(self.defaults.netlink)
            .unwrap_or(true)
    }

    /// The CPU set of `port`'s queue `queue`, if pinned.
    pub fn cpus(&self, port: &str, queue: u32) -> Option<&[usize]> {
        self.threads
            .iter()
            .find(|t| t.port == port && t.queue == queue)
            .map(|t| t.cpus.as_slice())
    }
}

impl PortConfig {
    /// Its static routes, as the stack's.
    pub fn stack_routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|r| Route {
                dst: r.dst.0.addr,
                prefix_len: r.dst.0.prefix_len,
                gateway: r.via,
                metric: r.metric,
            })
            .collect()
    }

    /// Its static neighbours, as the stack's (permanent).
    pub fn stack_neighbors(&self) -> Vec<Neighbor> {
        self.neighbors
            .iter()
            .map(|n| Neighbor {
                ip: n.ip,
                mac: n.mac.0,
                permanent: true,
            })
            .collect()
    }
}
