//! `cnet doctor --iface IF`: checks for the usual AF_XDP traps, each reported as what works and
//! what to change: privileges, AF_XDP support, the interface (exists, up, MTU against the frame
//! size, queues, an XDP program already attached), the veth peer's TX checksum offload (a kernel
//! sender on veth leaves UDP/TCP checksums partial, and cnet drops every such frame), memlock,
//! bpffs, huge pages, kernel version.

use std::fmt;
use std::path::Path;
use std::process::Command;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine.
    Ok,
    /// Informational.
    Info,
    /// Works, but probably not as wanted.
    Warn,
    /// Will not work.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// Level.
    pub level: Level,
    /// What was checked.
    pub name: &'static str,
    /// What was found.
    pub message: String,
    /// What to change, if anything.
    pub fix: Option<String>,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.level {
            Level::Ok => " ok ",
            Level::Info => "info",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "[{tag}] {:<18} {}", self.name, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// Every check's outcome.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In the order run.
    pub checks: Vec<Check>,
}

impl Report {
    fn add(&mut self, level: Level, name: &'static str, message: String, fix: Option<String>) {
        self.checks.push(Check {
            level,
            name,
            message,
            fix,
        });
    }

    /// The worst level found.
    pub fn worst(&self) -> Level {
        self.checks
            .iter()
            .map(|c| c.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// The check named `name`, if run.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            writeln!(f, "{c}")?;
        }
        Ok(())
    }
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn cmd(prog: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Effective capabilities of this process.
fn cap_eff() -> u64 {
    read("/proc/self/status")
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether `ethtool -k IF` reports TX checksum offload on (`None`: could not tell).
pub fn tx_checksum_on(iface: &str) -> Option<bool> {
    let out = cmd("ethtool", &["-k", iface])?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("tx-checksumming:"))
        .map(|v| v.trim().starts_with("on"))
}

/// The veth peer of `iface` in this namespace: `Ok(name)`, or `Err(ifindex)` when it is elsewhere.
fn veth_peer(iface: &str) -> Option<Result<String, u32>> {
    let peer_index: u32 = read(format!("/sys/class/net/{iface}/iflink"))?
        .parse()
        .ok()?;
    let own: u32 = read(format!("/sys/class/net/{iface}/ifindex"))?
        .parse()
        .ok()?;
    if peer_index == own {
        return None;
    }
    let found = std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (read(e.path().join("ifindex"))?.parse::<u32>().ok()? == peer_index && name != iface)
                .then_some(name)
        });
    // An ifindex found here may be another namespace's peer with the same number: confirm it
    // points back at us.
    match found {
        Some(name)
            if read(format!("/sys/class/net/{name}/iflink")).as_deref()
                == Some(own.to_string().as_str()) =>
        {
            Some(Ok(name))
        }
        _ => Some(Err(peer_index)),
    }
}

/// Runs every check for `iface`, AF_XDP frames of `frame_size` bytes.
pub fn diagnose(iface: &str, frame_size: u32) -> Report {
    let mut r = Report::default();
    // Kernel.
    let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into());
    r.add(Level::Info, "kernel", kernel, None);
    // Privileges.
    let caps = cap_eff();
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    let (net_admin, net_raw, ipc_lock, sys_admin, bpf) =
        (has(12), has(13), has(14), has(21), has(39));
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if net_raw && (net_admin && (bpf || sys_admin)) {
        r.add(Level::Ok, "privileges", format!("euid {euid}, CAP_NET_RAW and CAP_NET_ADMIN with CAP_BPF/CAP_SYS_ADMIN: can load the XDP program itself (xskmap \"self\")"), None);
    } else if net_raw {
        r.add(Level::Warn, "privileges", format!("euid {euid}: CAP_NET_RAW{} but cannot load an XDP program", if ipc_lock { " and CAP_IPC_LOCK" } else { "" }),
            Some("run as root (or with CAP_NET_ADMIN + CAP_BPF) for xskmap \"self\"; an inherited or pinned XSKMAP needs only CAP_NET_RAW (+ CAP_IPC_LOCK for large UMEMs), issue #16".into()));
    } else {
        r.add(Level::Fail, "privileges", format!("euid {euid} without CAP_NET_RAW: AF_XDP sockets cannot be created"),
            Some("run as root, or grant CAP_NET_RAW (and CAP_NET_ADMIN + CAP_BPF to load the program)".into()));
    }
    // AF_XDP support.
    // SAFETY: socket(2) with constant arguments; the descriptor is closed right away.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd >= 0 {
        // SAFETY: fd was just opened by us.
        unsafe { libc::close(fd) };
        r.add(
            Level::Ok,
            "af_xdp",
            "the kernel creates AF_XDP sockets".into(),
            None,
        );
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            r.add(
                Level::Fail,
                "af_xdp",
                format!("AF_XDP not supported: {e}"),
                Some("a kernel built with CONFIG_XDP_SOCKETS=y (4.18+, 5.x recommended)".into()),
            );
        } else {
            r.add(
                Level::Warn,
                "af_xdp",
                format!("cannot open an AF_XDP socket: {e}"),
                Some("check privileges (above)".into()),
            );
        }
    }
    // Memlock.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0 {
        if lim.rlim_cur == libc::RLIM_INFINITY || ipc_lock {
            r.add(
                Level::Ok,
                "memlock",
                "unlimited (or CAP_IPC_LOCK)".into(),
                None,
            );
        } else {
            let mib = lim.rlim_cur / (1 << 20);
            r.add(
                Level::Warn,
                "memlock",
                format!("RLIMIT_MEMLOCK {mib} MiB: a larger UMEM fails with ENOBUFS"),
                Some(
                    "`ulimit -l unlimited`, LimitMEMLOCK=infinity (systemd), or CAP_IPC_LOCK"
                        .into(),
                ),
            );
        }
    }
    // bpffs, huge pages.
    let bpffs = read("/proc/mounts").is_some_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("bpf"))
    });
    r.add(
        if bpffs { Level::Ok } else { Level::Info },
        "bpffs",
        if bpffs {
            "mounted".into()
        } else {
            "not mounted (only needed for pinned XSKMAPs and libxdp's dispatcher)".into()
        },
        (!bpffs).then(|| "mount -t bpf bpf /sys/fs/bpf".into()),
    );
    let huge = read("/proc/meminfo")
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("HugePages_Total:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "0".into());
    r.add(
        Level::Info,
        "huge_pages",
        format!("{huge} reserved (UMEMs use ordinary pages without them)"),
        None,
    );
    // Interface.
    let sys = format!("/sys/class/net/{iface}");
    if !Path::new(&sys).exists() {
        r.add(
            Level::Fail,
            "interface",
            format!("{iface} does not exist in this network namespace"),
            Some("check the name (`ip link`) and the namespace the service runs in".into()),
        );
        return r;
    }
    let flags = read(format!("{sys}/flags"))
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let oper = read(format!("{sys}/operstate")).unwrap_or_default();
    if flags & libc::IFF_UP as u32 == 0 {
        r.add(
            Level::Fail,
            "link",
            format!("{iface} is down"),
            Some(format!("ip link set {iface} up")),
        );
    } else {
        r.add(
            Level::Ok,
            "link",
            format!("{iface} is up (operstate {oper})"),
            None,
        );
    }
    let driver = cmd("ethtool", &["-i", iface])
        .and_then(|o| {
            o.lines()
                .find_map(|l| l.strip_prefix("driver:").map(|d| d.trim().to_string()))
        })
        .unwrap_or_else(|| "?".into());
    r.add(Level::Info, "driver", driver.clone(), None);
    // MTU vs frame size: the kernel puts XDP_PACKET_HEADROOM (256) before each received frame.
    let mtu: u32 = read(format!("{sys}/mtu"))
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let room = frame_size.saturating_sub(256);
    if mtu + 14 > room {
        r.add(Level::Fail, "mtu", format!("MTU {mtu} + 14 bytes of Ethernet does not fit a {frame_size}-byte frame after 256 bytes of XDP headroom ({room} bytes)"),
            Some(format!("ip link set {iface} mtu {} (or frame_size 4096)", room - 14)));
    } else {
        r.add(
            Level::Ok,
            "mtu",
            format!("MTU {mtu} fits {frame_size}-byte frames"),
            None,
        );
    }
    // Queues.
    let rxq = std::fs::read_dir(format!("{sys}/queues"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count()
        })
        .unwrap_or(0);
    let combined = cmd("ethtool", &["-l", iface]).and_then(|o| {
        o.split("Current hardware settings:")
            .nth(1)
            .and_then(|cur| {
                cur.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("Combined:")
                        .map(|v| v.trim().to_string())
                })
            })
    });
    let mut msg = format!("{rxq} RX queues");
    if let Some(c) = &combined {
        msg.push_str(&format!(", {c} combined channels active"));
    }
    let fix = (driver == "veth").then(|| format!("veth steers to its active channels only: `ethtool -L {iface} rx N tx N` to serve N queues; frames on a queue without a socket go to the kernel"));
    r.add(Level::Info, "queues", msg, fix);
    // XDP program attached.
    match cmd("ip", &["-d", "link", "show", "dev", iface]) {
        Some(o) if o.contains("prog/xdp") => {
            let id = o
                .split("prog/xdp")
                .nth(1)
                .and_then(|s| s.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_string();
            r.add(Level::Warn, "xdp_program", format!("an XDP program (id {id}) is already attached to {iface}"),
                Some(format!("if no other cnet/AF_XDP user owns it: `ip link set dev {iface} xdp off` (and xdpgeneric off); libxdp cannot attach over a foreign program")));
        }
        Some(_) => r.add(Level::Ok, "xdp_program", "none attached".into(), None),
        None => r.add(
            Level::Info,
            "xdp_program",
            "cannot run `ip -d link show`".into(),
            None,
        ),
    }
    // The veth peer's TX checksum offload.
    if driver == "veth" {
        match veth_peer(iface) {
            Some(Ok(peer)) => match tx_checksum_on(&peer) {
                Some(true) => r.add(Level::Fail, "peer_tx_checksum",
                    format!("veth peer {peer} has TX checksum offload on: UDP/TCP frames a kernel socket sends through it arrive with a partial checksum and cnet drops every one (drop_udp_bad_checksum / drop_tcp_bad_checksum)"),
                    Some(format!("ethtool -K {peer} tx off"))),
                Some(false) => r.add(Level::Ok, "peer_tx_checksum", format!("veth peer {peer}: TX checksum offload off"), None),
                None => r.add(Level::Warn, "peer_tx_checksum", format!("cannot read `ethtool -k {peer}`"), Some(format!("ethtool -K {peer} tx off"))),
            },
            Some(Err(idx)) => r.add(Level::Warn, "peer_tx_checksum",
                format!("the veth peer (ifindex {idx}) is in another network namespace: if a kernel socket sends through it with TX checksum offload on, its UDP/TCP frames arrive partial and are dropped"),
                Some("in the peer's namespace: `ethtool -K <peer> tx off`".into())),
            None => r.add(Level::Info, "peer_tx_checksum", "no veth peer found".into(), None),
        }
    }
    r
}
