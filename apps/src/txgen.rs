//! `cnet txgen`: a UDP traffic generator on the cnet stack (in the spirit of CNDP's txgen).
//!
//! Sends UDP datagrams to an echo server at a target rate (or as fast as the stack and link take
//! them), with fixed or IMIX sizes, over several flows (source ports), and measures what comes
//! back: packets/s and bits/s both ways, loss, and round-trip latency in an HDR histogram. Each
//! datagram carries its send time and a sequence number in its first 16 bytes; the echo returns
//! them unchanged. Progress is printed every second, a summary at the end.
//!
//! Two links: the in-memory link (`--mem`: a cnet echo server stack on the same thread over a
//! perfect [`MemLink`]), or AF_XDP on an interface ([`run_xdp`], root, against any UDP echo
//! server, e.g. `cnet echo` on the other end of a veth).
//!
//! No heap allocation per packet: frames come from the stack's pool, the histogram is allocated
//! once.

use crate::service::{Clock, UdpEcho};
use anyhow::{Context, Result};
use cnet_drivers::host::Host;
use cnet_drivers::mem::{LinkConfig, MemLink};
use cnet_drivers::Port;
use cnet_stack::{
    ConfigEvent, IfAddr, Instant, MacAddr, Neighbor, Pool, Stack, StackConfig, UdpHandle,
};
use hdrhistogram::Histogram;
use std::io::Write;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Bytes every datagram carries in front: send time (ns since the start, big-endian) and
/// sequence number.
pub const STAMP: usize = 16;
/// UDP payload sizes of the simple IMIX (7:4:1 of 64, 594 and 1518-byte Ethernet frames with
/// FCS): 18, 552 and 1472 bytes.
pub const IMIX: [usize; 12] = [18, 18, 18, 18, 552, 18, 18, 552, 18, 552, 552, 1472];
/// Most datagrams sent per loop pass.
const BURST: usize = 64;
/// With a window: how long a full window may get no reply before its datagrams are taken as lost.
const WINDOW_TIMEOUT_NS: u64 = 100_000_000;
/// Ethernet, IPv4 and UDP header bytes (bit/s count whole frames without FCS).
const HDRS: usize = 14 + 20 + 8;

/// Datagram sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizes {
    /// Every UDP payload of this many bytes (at least [`STAMP`]).
    Fixed(usize),
    /// The [`IMIX`] pattern.
    Imix,
}

impl std::str::FromStr for Sizes {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Sizes> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Sizes::Imix);
        }
        let n: usize = s.parse().context("size: a number of bytes or `imix`")?;
        anyhow::ensure!(
            (STAMP..=1472).contains(&n),
            "size {n} outside {STAMP}..=1472 (UDP payload bytes)"
        );
        Ok(Sizes::Fixed(n))
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct TxgenConfig {
    /// Our address and prefix.
    pub src: IfAddr,
    /// The echo server.
    pub dst: SocketAddrV4,
    /// First source port; flow `i` sends from `src_port + i`.
    pub src_port: u16,
    /// Number of flows (source ports), at least 1.
    pub flows: u16,
    /// Target datagrams/s; 0: as fast as possible.
    pub rate: u64,
    /// Datagram sizes.
    pub sizes: Sizes,
    /// How long to send.
    pub duration: Duration,
    /// Most datagrams in flight (sent, not yet back); 0: no limit (open loop).
    pub window: u64,
}

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams echoed back.
    pub received: u64,
    /// Ethernet bytes sent (without FCS).
    pub tx_bytes: u64,
    /// Ethernet bytes received.
    pub rx_bytes: u64,
    /// Sends the stack refused (pool empty, queue full).
    pub send_errors: u64,
    /// Replies whose stamp was not one we sent (too short or from the future).
    pub bad_replies: u64,
}

/// The generator: its sockets, pacing and measurements. Drive it with [`Generator::receive`] and
/// [`Generator::send`] between the host's poll and flush.
#[derive(Debug)]
pub struct Generator {
    cfg: TxgenConfig,
    socks: Vec<UdpHandle>,
    next_flow: usize,
    next_size: usize,
    /// Datagrams given up on for the window (no reply within [`WINDOW_TIMEOUT_NS`]).
    forgiven: u64,
    /// When a reply last arrived (or the window was last reset), ns since the start.
    last_progress_ns: u64,
    /// Totals so far.
    pub totals: Totals,
    /// Round-trip times in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Generator {
    /// Binds one socket per flow on `stack`.
    pub fn new(stack: &mut Stack, cfg: TxgenConfig) -> Result<Generator> {
        anyhow::ensure!(cfg.flows >= 1, "at least one flow");
        let mut socks = Vec::with_capacity(cfg.flows as usize);
        for i in 0..cfg.flows {
            let port = cfg
                .src_port
                .checked_add(i)
                .context("source ports past 65535")?;
            socks.push(
                stack
                    .udp_bind(SocketAddrV4::new(cfg.src.addr, port))
                    .with_context(|| format!("bind source port {port}"))?,
            );
        }
        Ok(Generator {
            cfg,
            socks,
            next_flow: 0,
            next_size: 0,
            forgiven: 0,
            last_progress_ns: 0,
            totals: Totals::default(),
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .context("histogram bounds")?,
        })
    }

    fn next_payload(&mut self) -> usize {
        match self.cfg.sizes {
            Sizes::Fixed(n) => n,
            Sizes::Imix => {
                let n = IMIX[self.next_size];
                self.next_size = (self.next_size + 1) % IMIX.len();
                n
            }
        }
    }

    /// Sends what the rate (and window) allow at `t_ns` (ns since the start), at most one burst.
    /// Returns the datagrams sent.
    pub fn send(&mut self, stack: &mut Stack, now: Instant, t_ns: u64) -> usize {
        let mut allowed = BURST as u64;
        if self.cfg.rate > 0 {
            let due = (self.cfg.rate as u128 * t_ns as u128 / 1_000_000_000) as u64;
            allowed = allowed.min(due.saturating_sub(self.totals.sent));
        }
        if self.cfg.window > 0 {
            let mut in_flight =
                (self.totals.sent - self.totals.received).saturating_sub(self.forgiven);
            if in_flight >= self.cfg.window
                && t_ns.saturating_sub(self.last_progress_ns) > WINDOW_TIMEOUT_NS
            {
                // A full window and no reply for a while: what is out is lost (it still counts
                // as lost in the totals); open the window again.
                self.forgiven += in_flight;
                in_flight = 0;
                self.last_progress_ns = t_ns;
            }
            allowed = allowed.min(self.cfg.window.saturating_sub(in_flight));
        }
        let mut n = 0;
        for _ in 0..allowed {
            let len = self.next_payload();
            let Some(f) = stack.udp_alloc() else {
                self.totals.send_errors += 1;
                break;
            };
            match stack.pool_mut().push_back(&f, len) {
                Some(buf) => {
                    buf[..8].copy_from_slice(&t_ns.to_be_bytes());
                    buf[8..16].copy_from_slice(&self.totals.sent.to_be_bytes());
                }
                None => {
                    stack.pool_mut().free(f);
                    self.totals.send_errors += 1;
                    break;
                }
            }
            let sock = self.socks[self.next_flow];
            self.next_flow = (self.next_flow + 1) % self.socks.len();
            if stack.udp_send(sock, f, self.cfg.dst, now).is_err() {
                self.totals.send_errors += 1;
                break;
            }
            self.totals.sent += 1;
            self.totals.tx_bytes += (len + HDRS) as u64;
            n += 1;
        }
        n
    }

    /// Takes every reply waiting, recording its round-trip time against `t_ns`.
    pub fn receive(&mut self, stack: &mut Stack, t_ns: u64) -> usize {
        let mut n = 0;
        for &sock in &self.socks {
            while let Some(d) = stack.udp_recv(sock) {
                let data = stack.pool().data(&d.frame);
                let stamp = (d.len >= STAMP && data.len() >= 8)
                    .then(|| u64::from_be_bytes(data[..8].try_into().expect("8 bytes")));
                match stamp {
                    Some(sent) if sent <= t_ns => {
                        let _ = self.latency.record((t_ns - sent).max(1));
                        self.totals.received += 1;
                        self.last_progress_ns = t_ns;
                        self.totals.rx_bytes += (d.len + HDRS) as u64;
                        n += 1;
                    }
                    _ => self.totals.bad_replies += 1,
                }
                stack.pool_mut().free(d.frame);
            }
        }
        n
    }
}

/// One progress or summary line.
fn report_line(
    out: &mut impl Write,
    what: &str,
    secs: f64,
    t: &Totals,
    prev: &Totals,
    interval: f64,
    h: &Histogram<u64>,
) -> std::io::Result<()> {
    let rate = |a: u64, b: u64| (a - b) as f64 / interval.max(1e-9);
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    writeln!(
        out,
        "txgen {what} t={secs:.1}s tx_pps={:.0} rx_pps={:.0} tx_bps={:.0} rx_bps={:.0} sent={} \
         received={} {}={} send_errors={} lat_us_p50={:.1} p99={:.1} p999={:.1} max={:.1}",
        rate(t.sent, prev.sent),
        rate(t.received, prev.received),
        8.0 * rate(t.tx_bytes, prev.tx_bytes),
        8.0 * rate(t.rx_bytes, prev.rx_bytes),
        t.sent,
        t.received,
        // In flight during the run; lost once the summary's drain is over.
        if what == "summary" {
            "lost"
        } else {
            "outstanding"
        },
        t.sent - t.received,
        t.send_errors,
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0,
    )
}

/// Drives `gen` on `host` (plus `also`, e.g. an in-process echo server, after each pass) for the
/// configured duration, then up to `drain` more for replies in flight; prints progress each second
/// and a summary. Returns the totals.
fn drive<P: Port>(
    host: &mut Host<P>,
    gen: &mut Generator,
    stop: &AtomicBool,
    drain: Duration,
    out: &mut impl Write,
    mut also: impl FnMut(Instant) -> Result<()>,
) -> Result<Totals> {
    let clock = Clock::start();
    let start = std::time::Instant::now();
    let (mut last_report, mut prev) = (Duration::ZERO, Totals::default());
    let end = gen.cfg.duration;
    let mut draining_since = None;
    loop {
        let elapsed = start.elapsed();
        let t_ns = elapsed.as_nanos() as u64;
        let now = clock.now();
        host.poll(now)?;
        gen.receive(&mut host.stack, t_ns);
        if elapsed < end && !stop.load(Ordering::Relaxed) {
            gen.send(&mut host.stack, now, t_ns);
        } else {
            let since = *draining_since.get_or_insert(elapsed);
            if gen.totals.received >= gen.totals.sent || elapsed - since >= drain {
                break;
            }
        }
        host.flush(now)?;
        also(now)?;
        if elapsed - last_report >= Duration::from_secs(1) {
            let iv = (elapsed - last_report).as_secs_f64();
            report_line(
                out,
                "progress",
                elapsed.as_secs_f64(),
                &gen.totals,
                &prev,
                iv,
                &gen.latency,
            )?;
            prev = gen.totals;
            last_report = elapsed;
        }
    }
    let secs = end.as_secs_f64().min(start.elapsed().as_secs_f64());
    report_line(
        out,
        "summary",
        secs,
        &gen.totals,
        &Totals::default(),
        secs,
        &gen.latency,
    )?;
    Ok(gen.totals)
}

fn stack(mac: MacAddr, addr: IfAddr, seed: u64, frames: usize) -> Result<Stack> {
    let mut cfg = StackConfig::new(mac);
    cfg.seed = seed;
    let pool = Pool::new(frames, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM)?;
    let mut s = Stack::new(cfg, pool);
    s.apply_config(ConfigEvent::AddrAdd(addr), Instant::ZERO);
    Ok(s)
}

/// Runs the generator against a cnet echo server (UDP port `cfg.dst`'s) on the same thread over
/// a perfect in-memory link. Both stacks know each other as permanent neighbours.
pub fn run_mem(cfg: TxgenConfig, stop: &AtomicBool, out: &mut impl Write) -> Result<Totals> {
    const MAC_G: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x1a]);
    const MAC_E: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x1b]);
    let server = IfAddr {
        addr: *cfg.dst.ip(),
        prefix_len: cfg.src.prefix_len,
    };
    let (pg, pe) = MemLink::pair(LinkConfig::new(1, MAC_G, MAC_E)).context("in-memory link")?;
    let mut g = Host::new(stack(MAC_G, cfg.src, 1, 4096)?, pg);
    let mut e = Host::new(stack(MAC_E, server, 2, 4096)?, pe);
    for (h, ip, mac) in [(&mut g, server.addr, MAC_E), (&mut e, cfg.src.addr, MAC_G)] {
        h.stack.apply_config(
            ConfigEvent::NeighborSet(Neighbor {
                ip,
                mac,
                permanent: true,
            }),
            Instant::ZERO,
        );
    }
    let mut echo = UdpEcho::bind(&mut e.stack, cfg.dst.port())?;
    let mut gen = Generator::new(&mut g.stack, cfg)?;
    let totals = drive(
        &mut g,
        &mut gen,
        stop,
        Duration::from_millis(100),
        out,
        |now| {
            e.poll(now)?;
            echo.poll(&mut e.stack, now);
            e.flush(now)?;
            Ok(())
        },
    )?;
    g.release_all();
    e.release_all();
    Ok(totals)
}

/// Runs the generator on AF_XDP queue 0 of `iface` (root). `dst_mac`: the echo server's (or
/// gateway's) MAC as a permanent neighbour; without it, ARP resolves it.
pub fn run_xdp(
    cfg: TxgenConfig,
    iface: &str,
    dst_mac: Option<MacAddr>,
    stop: &AtomicBool,
    out: &mut impl Write,
) -> Result<Totals> {
    use crate::service::{Service, ServiceConfig};
    let mut svc = Service::open(ServiceConfig {
        xdp: cnet_drivers::xdp::XdpConfig::new(iface),
        queue: 0,
        extra_addrs: vec![cfg.src],
        netlink: false,
        seed: 0x7867,
    })?;
    let now = svc.clock.now();
    if let Some(mac) = dst_mac {
        svc.host.stack.apply_config(
            ConfigEvent::NeighborSet(Neighbor {
                ip: *cfg.dst.ip(),
                mac,
                permanent: true,
            }),
            now,
        );
    }
    let mut gen = Generator::new(&mut svc.host.stack, cfg)?;
    let totals = drive(
        &mut svc.host,
        &mut gen,
        stop,
        Duration::from_millis(500),
        out,
        |_| Ok(()),
    )?;
    svc.shutdown();
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg(rate: u64, sizes: Sizes) -> TxgenConfig {
        TxgenConfig {
            src: IfAddr {
                addr: Ipv4Addr::new(198, 18, 0, 1),
                prefix_len: 24,
            },
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 7),
            src_port: 40000,
            flows: 4,
            rate,
            sizes,
            duration: Duration::from_millis(300),
            window: 0,
        }
    }

    /// Over the perfect in-memory link every datagram comes back, at a set rate and at the
    /// maximum, fixed and IMIX sizes.
    #[test]
    fn mem_run_loses_nothing() {
        let stop = AtomicBool::new(false);
        for (rate, sizes) in [(20_000, Sizes::Fixed(64)), (0, Sizes::Imix)] {
            let mut out = Vec::new();
            let t = run_mem(cfg(rate, sizes), &stop, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(t.sent > 0, "{text}");
            assert_eq!(t.received, t.sent, "{text}");
            assert_eq!(t.bad_replies, 0);
            assert!(text.contains("txgen summary"), "{text}");
            if rate > 0 {
                // 0.3 s at 20 kpps: about 6000, never more than the rate allows.
                assert!(t.sent <= 6_100 && t.sent > 3_000, "{}", t.sent);
            }
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("imix".parse::<Sizes>().unwrap(), Sizes::Imix);
        assert_eq!("64".parse::<Sizes>().unwrap(), Sizes::Fixed(64));
        assert!("8".parse::<Sizes>().is_err());
        assert!("1473".parse::<Sizes>().is_err());
    }
}
