//! The in-memory demo: two cnet stacks on a seeded, impaired in-memory link, in virtual time.
//!
//! It shows, with the stacks' own counters, ARP resolution, ping, a UDP echo round trip, a 64 KiB
//! datagram fragmented and reassembled, and the same again over a lossy, reordering, corrupting
//! link. It needs no privileges and runs anywhere.

use anyhow::{bail, Context, Result};
use cnet_drivers::host::Host;
use cnet_drivers::mem::{Impairments, LinkConfig, MemLink, MemPort};
use cnet_stack::{ConfigEvent, Duration, IfAddr, Instant, MacAddr, Pool, Stack, StackConfig};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

const MAC_A: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0x0b]);
const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

struct Pair {
    a: Host<MemPort>,
    b: Host<MemPort>,
    now: Instant,
}

fn host(mac: MacAddr, ip: Ipv4Addr, seed: u64, port: MemPort) -> Result<Host<MemPort>> {
    let mut cfg = StackConfig::new(mac);
    cfg.seed = seed;
    let pool = Pool::new(4096, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM)?;
    let mut s = Stack::new(cfg, pool);
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: ip,
            prefix_len: 24,
        }),
        Instant::ZERO,
    );
    Ok(Host::new(s, port))
}

impl Pair {
    fn new(seed: u64, imp: Impairments) -> Result<Pair> {
        let (pa, pb) = MemLink::pair(LinkConfig::new(seed, MAC_A, MAC_B).with_impairments(imp))?;
        Ok(Pair {
            a: host(MAC_A, IP_A, seed, pa)?,
            b: host(MAC_B, IP_B, seed + 1, pb)?,
            now: Instant::ZERO,
        })
    }

    /// Steps both hosts in virtual time until `done`, at most `limit`.
    fn run(&mut self, limit: Duration, mut done: impl FnMut(&mut Pair) -> bool) -> Result<()> {
        let end = self.now + limit;
        while !done(self) {
            if self.now >= end {
                bail!("not done within {limit:?} of virtual time");
            }
            let sa = self.a.poll(self.now)?;
            let sb = self.b.poll(self.now)?;
            if sa.is_idle() && sb.is_idle() {
                let step = self.now + Duration::from_millis(1);
                let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .filter(|t| *t > self.now)
                    .min()
                    .unwrap_or(step);
                self.now = next.min(step);
            }
        }
        Ok(())
    }

    /// Echo `payload` from A to B's port 7 until it comes back intact; returns resends.
    fn echo(&mut self, payload: &[u8]) -> Result<usize> {
        let server = self.b.stack.udp_bind("0.0.0.0:7".parse()?)?;
        let client = self.a.stack.udp_bind("0.0.0.0:0".parse()?)?;
        let dst = SocketAddrV4::new(IP_B, 7);
        let mut sent_at: Option<Instant> = None;
        let mut resends = 0;
        let mut ok = false;
        self.run(Duration::from_secs(30), |p| {
            let now = p.now;
            while let Some(d) = p.b.stack.udp_recv(server) {
                let _ = p.b.stack.udp_send(server, d.frame, d.src, now);
            }
            while let Some(d) = p.a.stack.udp_recv(client) {
                let mut got = vec![0u8; d.len];
                p.a.stack.pool().chain_copy_to(&d.frame, &mut got);
                p.a.stack.pool_mut().free(d.frame);
                ok |= got == payload;
            }
            if ok {
                return true;
            }
            if sent_at.is_none_or(|t| now >= t + Duration::from_millis(20)) {
                resends += usize::from(sent_at.is_some());
                let _ = p.a.stack.udp_send_slice(client, payload, dst, now);
                sent_at = Some(now);
            }
            false
        })
        .context("UDP echo")?;
        self.a.stack.udp_close(client);
        self.b.stack.udp_close(server);
        Ok(resends)
    }
}

fn print_counters(out: &mut impl Write, name: &str, s: &Stack) -> Result<()> {
    writeln!(out, "  {name} counters:")?;
    for (k, v) in s.counters().nonzero() {
        writeln!(out, "    {k:<28} {v}")?;
    }
    Ok(())
}

/// Runs the demo, printing what happens to `out`.
pub fn run(out: &mut impl Write, seed: u64) -> Result<()> {
    writeln!(
        out,
        "cnet in-memory demo: stack A {IP_A} <-> stack B {IP_B} (seed {seed})"
    )?;
    let mut p = Pair::new(seed, Impairments::default())?;
    let h = p.a.stack.ping_open(1)?;
    let now = p.now;
    p.a.stack.ping_send(h, IP_B, 1, b"cnet", now)?;
    let mut answered = false;
    p.run(Duration::from_secs(1), |p| {
        if let Some(r) = p.a.stack.ping_recv(h) {
            p.a.stack.pool_mut().free(r.frame);
            answered = true;
        }
        answered
    })?;
    let mac = p.a.stack.neighbors().get(IP_B).map(|e| e.mac);
    writeln!(
        out,
        "ARP: A resolved {IP_B} to {}",
        mac.context("no ARP entry")?
    )?;
    writeln!(out, "ping: A -> B echo request answered")?;
    p.echo(b"hello from cnet")?;
    writeln!(out, "UDP echo: 15 bytes A -> B:7 -> A, intact")?;
    let big: Vec<u8> = (0..65507u32).map(|i| (i % 251) as u8).collect();
    p.echo(&big)?;
    writeln!(
        out,
        "UDP echo: 65507 bytes in {} fragments each way, reassembled zero-copy",
        p.a.stack.counters().get(cnet_stack::Event::FragCreated)
    )?;
    print_counters(out, "A", &p.a.stack)?;
    print_counters(out, "B", &p.b.stack)?;

    let imp = Impairments {
        loss: 0.05,
        duplicate: 0.02,
        corrupt: 0.02,
        reorder: 0.05,
        reorder_delay: Duration::from_millis(3),
        delay: Duration::from_millis(1),
        ..Impairments::default()
    };
    writeln!(
        out,
        "\nsame again over a link with 5% loss, 2% duplication, 2% corruption, 5% reordering:"
    )?;
    let mut p = Pair::new(seed, imp)?;
    let mut resends = 0;
    for n in [1usize, 100, 1472, 4000, 65507] {
        let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        resends += p.echo(&payload)?;
    }
    writeln!(
        out,
        "UDP echo of 1, 100, 1472, 4000 and 65507 bytes: all intact, {resends} resends needed"
    )?;
    let drops = p.a.stack.counters().total_drops() + p.b.stack.counters().total_drops();
    writeln!(
        out,
        "frames dropped by the stacks' checks (corrupted, duplicate fragments...): {drops}"
    )?;
    print_counters(out, "A", &p.a.stack)?;
    print_counters(out, "B", &p.b.stack)?;
    Ok(())
}
