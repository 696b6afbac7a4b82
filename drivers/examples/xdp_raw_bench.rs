//! Raw AF_XDP receive and transmit rates on veth, no IP stack: every frame is touched and nothing
//! else. Root only. Creates two namespaces joined by veth (removed at exit), runs each direction for
//! a bounded time and prints packets per second.
//!
//! ```text
//! cargo run --release -p cnet-drivers --example xdp_raw_bench -- [--secs 5] [--generic] [--no-need-wakeup] [--size 60]
//! ```
//!
//! - RX: a kernel UDP sender (`sendmmsg`, 64 datagrams per call) in the peer namespace sends to the
//!   port's address; the port receives, reads every frame's bytes, frees them. The sender is usually
//!   the bottleneck on a small machine (see the printed send rate).
//! - TX: the port writes a UDP frame into each pool frame and transmits; the peer drops the frames
//!   early (wrong destination MAC). Rate = TX completions per second.

use cnet_drivers::xdp::{AttachMode, BindMode, HugePages, XdpConfig, XdpPort};
use cnet_drivers::Port;
use cnet_stack::{Batch, Instant as SInstant, Pool};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Net {
    a: String,
    b: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn setup() -> Result<Net, String> {
    let pid = std::process::id();
    let net = Net {
        a: format!("cxb{pid}a"),
        b: format!("cxb{pid}b"),
    };
    sh(&["ip", "netns", "add", &net.a])?;
    sh(&["ip", "netns", "add", &net.b])?;
    for ns in [&net.a, &net.b] {
        let _ = sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ]);
        let _ = sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
    }
    sh(&[
        "ip", "-n", &net.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
        &net.b,
    ])?;
    sh(&[
        "ip",
        "-n",
        &net.a,
        "link",
        "set",
        "va",
        "address",
        "02:00:00:00:00:0a",
    ])?;
    sh(&[
        "ip",
        "-n",
        &net.b,
        "link",
        "set",
        "vb",
        "address",
        "02:00:00:00:00:0b",
    ])?;
    sh(&[
        "ip",
        "-n",
        &net.b,
        "addr",
        "add",
        "198.18.0.2/15",
        "dev",
        "vb",
    ])?;
    sh(&[
        "ip",
        "-n",
        &net.b,
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        "02:00:00:00:00:0a",
        "dev",
        "vb",
        "nud",
        "permanent",
    ])?;
    sh(&[
        "ip", "netns", "exec", &net.b, "ethtool", "-K", "vb", "tx", "off",
    ])?;
    sh(&["ip", "-n", &net.a, "link", "set", "va", "up"])?;
    sh(&["ip", "-n", &net.b, "link", "set", "vb", "up"])?;
    Ok(net)
}

fn enter(ns: &str) -> Result<File, String> {
    let orig = File::open("/proc/thread-self/ns/net").map_err(|e| e.to_string())?;
    let f = File::open(format!("/var/run/netns/{ns}")).map_err(|e| e.to_string())?;
    // SAFETY: a namespace fd; setns affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(orig)
}

fn leave(orig: File) {
    // SAFETY: back to the namespace the thread came from.
    unsafe { libc::setns(orig.as_raw_fd(), libc::CLONE_NEWNET) };
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A UDP frame of `size` bytes (UDP checksum 0 = none) to `dst_mac`.
fn frame(size: usize, dst_mac: [u8; 6]) -> Vec<u8> {
    let size = size.max(42);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0a]);
    f[12..14].copy_from_slice(&[8, 0]);
    let ip_len = (size - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, 0, 1]);
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    let c = csum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&5555u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// Sends `payload` with sendmmsg in batches of 64 until `stop`; returns datagrams sent.
fn sender(ns: String, payload: usize, stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) {
    let Ok(orig) = enter(&ns) else { return };
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 0)).expect("bind");
    s.connect(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 9000))
        .expect("connect");
    let buf = vec![0x5au8; payload];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
    let mut msgs: Vec<libc::mmsghdr> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` holds 64 valid headers pointing at `iov`/`buf`, alive during the call.
        let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), 64, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    leave(orig);
}

fn rx_bench(port: &mut XdpPort, pool: &mut Pool, ns_b: &str, secs: u64, size: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let t = {
        let (ns, stop, sent) = (ns_b.to_string(), stop.clone(), sent.clone());
        std::thread::spawn(move || sender(ns, size.saturating_sub(42).max(1), stop, sent))
    };
    let mut b = Batch::new();
    let mut rx = 0u64;
    let mut touched = 0u64;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        if port.rx_burst(pool, &mut b, SInstant::ZERO).unwrap_or(0) == 0 {
            continue;
        }
        for f in b.drain() {
            touched = touched.wrapping_add(pool.data(&f).iter().map(|&x| u64::from(x)).sum());
            rx += 1;
            pool.free(f);
        }
    }
    let el = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    let k = port.kernel_stats().unwrap_or_default();
    println!(
        "RX: {:.0} pps received ({rx} frames in {el:.2} s); kernel sender {:.0} pps; \
         kernel stats {k:?}; counters {:?}; checksum {touched:x}",
        rx as f64 / el,
        sent.load(Ordering::Relaxed) as f64 / el,
        port.counters()
    );
}

fn tx_bench(port: &mut XdpPort, pool: &mut Pool, secs: u64, size: usize) {
    // Destination MAC that nobody has: the peer drops the frames right after veth delivers them.
    let tmpl = frame(size, [2, 0, 0, 0, 0, 0xee]);
    let mut b = Batch::new();
    let before = port.counters().tx_completed;
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    while Instant::now() < end {
        while !b.is_full() {
            let Some(f) = pool.alloc_from(&tmpl) else {
                break;
            };
            let _ = b.push(f);
        }
        if port.tx_burst(pool, &mut b, SInstant::ZERO).is_err() {
            break;
        }
    }
    port.reclaim(pool);
    let el = start.elapsed().as_secs_f64();
    b.free_all(pool);
    let done = port.counters().tx_completed - before;
    println!(
        "TX: {:.0} pps completed ({done} frames in {el:.2} s); counters {:?}",
        done as f64 / el,
        port.counters()
    );
}

/// Command line (`xdp_raw_bench --help`).
#[derive(clap::Parser)]
#[command(
    name = "xdp_raw_bench",
    about = "Raw AF_XDP receive and transmit rates on veth"
)]
struct Args {
    /// Seconds per direction (1..=60).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    secs: u64,
    /// Frame size in bytes (42..=1514).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(42..=1514))]
    size: u16,
    /// Attach the XDP program in generic (SKB) mode.
    #[arg(long)]
    generic: bool,
    /// Bind without XDP_USE_NEED_WAKEUP.
    #[arg(long)]
    no_need_wakeup: bool,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let (secs, size, generic) = (args.secs, usize::from(args.size), args.generic);
    let need_wakeup = !args.no_need_wakeup;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xdp_raw_bench: needs root (netns, veth, AF_XDP); skipped");
        return;
    }
    let net = match setup() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    };
    let mut cfg = XdpConfig::new("va");
    cfg.attach_mode = if generic {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    cfg.bind_mode = BindMode::Auto;
    cfg.need_wakeup = need_wakeup;
    cfg.huge_pages = HugePages::IfAvailable;
    let orig = enter(&net.a).expect("enter netns");
    let opened = XdpPort::open(&cfg, 0);
    leave(orig);
    let (mut port, mut pool) = match opened {
        Ok(p) => p,
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "mode {:?}, {size}-byte frames, {secs} s per direction",
        port.mode()
    );
    rx_bench(&mut port, &mut pool, &net.b, secs, size);
    tx_bench(&mut port, &mut pool, secs, size);
    drop(port);
    drop(pool);
    drop(net);
}
