//! A raw AF_XDP UDP reflector with no IP stack: the reference a stack's echo is measured against
//! on the same veth and under the same load (`benches/veth_txgen.sh`, issue #17). Root only.
//!
//! ```text
//! ip netns exec NS xdp_reflect --iface IF [--secs 5] [--generic]
//! ```
//!
//! Every received IPv4/UDP frame goes back out of the same port with its Ethernet, IPv4 and UDP
//! source and destination swapped in place. Swapping is neutral for both checksums (the one's
//! complement sum is commutative), so nothing is recomputed: this is the least work an echo over
//! AF_XDP can do: receive, touch the headers, transmit. Everything else (ARP, other protocols,
//! truncated frames) is freed and counted. Spins for `--secs`, then prints one `reflect` line:
//! frames reflected and dropped per second.

use clap::Parser;
use cnet_drivers::xdp::{AttachMode, BindMode, HugePages, XdpConfig, XdpPort};
use cnet_drivers::Port;
use cnet_stack::{Batch, Instant as SInstant};
use std::time::{Duration, Instant};

/// Command line.
#[derive(Parser)]
#[command(name = "xdp_reflect", about = "Raw AF_XDP UDP reflector (no IP stack)")]
struct Args {
    /// Interface to bind (queue 0), in the calling namespace.
    #[arg(long)]
    iface: String,
    /// Seconds to run (1..=120).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    secs: u64,
    /// Attach the XDP program in generic (SKB) mode instead of native.
    #[arg(long)]
    generic: bool,
}

/// Swaps source and destination of an IPv4/UDP frame in place; false for anything else.
fn reflect(f: &mut [u8]) -> bool {
    if f.len() < 42 || f[12..14] != [8, 0] || f[14] >> 4 != 4 || f[23] != 17 {
        return false;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if ihl < 20 || f.len() < 14 + ihl + 8 {
        return false;
    }
    let (dst, src) = f[0..12].split_at_mut(6);
    dst.swap_with_slice(src);
    let (ip_src, ip_dst) = f[26..34].split_at_mut(4);
    ip_src.swap_with_slice(ip_dst);
    let udp = 14 + ihl;
    let (sport, dport) = f[udp..udp + 4].split_at_mut(2);
    sport.swap_with_slice(dport);
    true
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("xdp_reflect: needs root (AF_XDP); skipped");
        return std::process::ExitCode::SUCCESS;
    }
    let mut cfg = XdpConfig::new(&args.iface);
    cfg.attach_mode = if args.generic {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    cfg.bind_mode = BindMode::Auto;
    cfg.huge_pages = HugePages::IfAvailable;
    let (mut port, mut pool) = match XdpPort::open(&cfg, 0) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xdp_reflect: cannot open {}: {e}", args.iface);
            return std::process::ExitCode::FAILURE;
        }
    };
    let (mut rx, mut tx) = (Batch::new(), Batch::new());
    let (mut reflected, mut dropped) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.secs);
    while Instant::now() < end {
        if let Err(e) = port.rx_burst(&mut pool, &mut rx, SInstant::ZERO) {
            eprintln!("xdp_reflect: receive failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
        for f in rx.drain() {
            if !tx.is_full() && reflect(pool.data_mut(&f)) {
                let _ = tx.push(f);
                reflected += 1;
            } else {
                pool.free(f);
                dropped += 1;
            }
        }
        if let Err(e) = port.tx_burst(&mut pool, &mut tx, SInstant::ZERO) {
            eprintln!("xdp_reflect: transmit failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    tx.free_all(&mut pool);
    println!(
        "reflect iface={} mode={:?} secs={secs:.2} reflected={reflected} dropped={dropped} \
         reflect_pps={:.0}",
        args.iface,
        port.mode(),
        reflected as f64 / secs
    );
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::reflect;

    #[test]
    fn swaps_udp_endpoints_and_refuses_the_rest() {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[1; 6]);
        f[6..12].copy_from_slice(&[2; 6]);
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..38].copy_from_slice(&[0x15, 0xb3, 0, 7]);
        assert!(reflect(&mut f));
        assert_eq!(&f[0..12], &[2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1]);
        assert_eq!(&f[26..34], &[198, 18, 0, 2, 198, 18, 0, 1]);
        assert_eq!(&f[34..38], &[0, 7, 0x15, 0xb3]);
        f[23] = 6;
        assert!(!reflect(&mut f), "TCP is not reflected");
        assert!(!reflect(&mut [0u8; 20]), "short frame");
    }
}
