//! Test fixtures: a pair of network namespaces joined by veth, frame builders and parsers.
//!
//! `NetPair::new` creates `cx<pid>n<k>a` (the stack's side, where AF_XDP or TAP runs, no IP address)
//! and `cx<pid>n<k>b` (the kernel's side, 198.18.0.2/15, a static neighbour entry for the stack's
//! 198.18.0.1), joined by veth `va` (in a) — `vb` (in b), IPv6 off (no stray router solicitations),
//! TX checksum offload off on `vb` (veth otherwise hands partial checksums to the peer). Everything is
//! removed on drop, also when a test panics.
//!
//! The stack's side is entered with `setns` on the calling thread ([`NetPair::enter_a`]), never with
//! `ip netns exec` (which remounts /sys and hides bpffs).

#![allow(dead_code)]

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Stack side MAC (on `va`).
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
/// Kernel side MAC (on `vb`).
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
/// Stack side address.
pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Kernel side address.
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why a privileged test cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    if let Some(why) = cnet_drivers::xdp::unavailable_reason() {
        return Some(why);
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command (run scripts/install-deps.sh)".into());
    }
    None
}

/// Returns from the test with a printed reason when privileged tests cannot run.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(why) = xdp_common::skip_reason() {
            eprintln!("SKIPPED {}: {why}", module_path!());
            return;
        }
    };
}

/// Runs a command; panics with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command and returns its stdout (empty on failure).
pub fn sh_out(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Two namespaces joined by veth; removed on drop.
pub struct NetPair {
    /// Stack side namespace.
    pub ns_a: String,
    /// Kernel side namespace.
    pub ns_b: String,
    /// Queues per veth end.
    pub queues: u32,
}

impl NetPair {
    /// Creates the pair with `queues` RX/TX queues on each end, all enabled.
    pub fn new(queues: u32) -> NetPair {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let pair = NetPair {
            ns_a: format!("cx{pid}n{k}a"),
            ns_b: format!("cx{pid}n{k}b"),
            queues,
        };
        // From here on, drop cleans up whatever was created.
        sh(&["ip", "netns", "add", &pair.ns_a]);
        sh(&["ip", "netns", "add", &pair.ns_b]);
        for ns in [&pair.ns_a, &pair.ns_b] {
            for key in ["all", "default"] {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "sysctl", "-qw"])
                    .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                    .output();
            }
        }
        let q = queues.to_string();
        sh(&[
            "ip",
            "-n",
            &pair.ns_a,
            "link",
            "add",
            "va",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            "vb",
            "netns",
            &pair.ns_b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.ns_a,
            "link",
            "set",
            "va",
            "address",
            &mac_str(&MAC_A),
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.ns_b,
            "link",
            "set",
            "vb",
            "address",
            &mac_str(&MAC_B),
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.ns_b,
            "addr",
            "add",
            "198.18.0.2/15",
            "dev",
            "vb",
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.ns_b,
            "neigh",
            "add",
            "198.18.0.1",
            "lladdr",
            &mac_str(&MAC_A),
            "dev",
            "vb",
            "nud",
            "permanent",
        ]);
        sh(&[
            "ip", "netns", "exec", &pair.ns_b, "ethtool", "-K", "vb", "tx", "off",
        ]);
        if queues > 1 {
            for (ns, dev) in [(&pair.ns_a, "va"), (&pair.ns_b, "vb")] {
                sh(&[
                    "ip", "netns", "exec", ns, "ethtool", "-L", dev, "rx", &q, "tx", &q,
                ]);
            }
        }
        sh(&["ip", "-n", &pair.ns_a, "link", "set", "va", "up"]);
        sh(&["ip", "-n", &pair.ns_b, "link", "set", "vb", "up"]);
        sh(&["ip", "-n", &pair.ns_a, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &pair.ns_b, "link", "set", "lo", "up"]);
        pair
    }

    /// Moves the calling thread into the stack's namespace until the guard drops.
    pub fn enter_a(&self) -> NsGuard {
        NsGuard::enter(&self.ns_a)
    }

    /// Runs `f` on a new thread inside the kernel side namespace.
    pub fn in_b<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = self.ns_b.clone();
        std::thread::spawn(move || {
            let _g = NsGuard::enter(&ns);
            f()
        })
    }

    /// `ip -n <a> ...` output.
    pub fn ip_a(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.ns_a];
        v.extend_from_slice(args);
        sh_out(&v)
    }

    /// Sends `count` UDP datagrams from the kernel side to `IP_A:dport`, from `flows` sockets in
    /// turn, payload = `tag` + sequence number. Returns the payloads sent.
    pub fn send_udp(&self, dport: u16, count: usize, flows: usize, tag: &str) -> Vec<Vec<u8>> {
        let tag = tag.to_string();
        self.in_b(move || {
            let socks: Vec<UdpSocket> = (0..flows.max(1))
                .map(|_| UdpSocket::bind(SocketAddrV4::new(IP_B, 0)).expect("bind in b"))
                .collect();
            let mut sent = Vec::new();
            for i in 0..count {
                let payload = format!("{tag}-{i:06}").into_bytes();
                socks[i % socks.len()]
                    .send_to(&payload, SocketAddrV4::new(IP_A, dport))
                    .expect("send_to");
                sent.push(payload);
            }
            sent
        })
        .join()
        .expect("sender thread")
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A thread's stay in another network namespace; restores the original on drop.
pub struct NsGuard {
    orig: File,
}

impl NsGuard {
    /// Enters namespace `name` (from `/var/run/netns`).
    pub fn enter(name: &str) -> NsGuard {
        let orig = File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = File::open(format!("/var/run/netns/{name}")).expect("netns file");
        // SAFETY: both are namespace descriptors; setns only affects the calling thread.
        let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        NsGuard { orig }
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        // SAFETY: `orig` is the namespace this thread came from.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// `aa:bb:..` form.
pub fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 1071 checksum over `data` starting from `sum`.
pub fn csum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame with correct IP and UDP checksums.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = csum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    // Pseudo-header: src, dst, zero, protocol, UDP length.
    let mut pseudo = Vec::with_capacity(12 + udp_len);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp);
    let mut c = csum(&pseudo, 0);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f
}

/// A parsed UDP-in-IPv4 frame.
#[derive(Debug)]
pub struct Udp {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Payload.
    pub payload: Vec<u8>,
    /// IP header checksum verified.
    pub ip_csum_ok: bool,
    /// UDP checksum verified (or absent).
    pub udp_csum_ok: bool,
}

/// Parses an Ethernet/IPv4/UDP frame; `None` for anything else.
pub fn parse_udp(f: &[u8]) -> Option<Udp> {
    if f.len() < 42 || f[12..14] != [0x08, 0x00] || f[14] != 0x45 || f[23] != 17 {
        return None;
    }
    let ip = &f[14..34];
    let ip_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip_len < 28 || 14 + ip_len > f.len() {
        return None;
    }
    let udp = &f[34..14 + ip_len];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&udp[..udp_len]);
    let udp_csum_ok = udp[6..8] == [0, 0] || csum(&pseudo, 0) == 0;
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&f[6..12]);
    Some(Udp {
        src_mac,
        src,
        dst,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp[8..udp_len].to_vec(),
        ip_csum_ok: csum(ip, 0) == 0,
        udp_csum_ok,
    })
}

/// Calls `step` until it returns true or `timeout` passes; returns whether it succeeded.
pub fn until(timeout: Duration, mut step: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if step() {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}
