//! `cnet`: the cnet service binary.
//!
//! - `cnet demo`: cnet on AF_XDP in a network namespace against the Linux kernel (root);
//! - `cnet demo --mem`: two cnet stacks over the impaired in-memory link (no privileges);
//! - `cnet echo --iface IF [--addr A.B.C.D/P] [--udp PORT]`: UDP echo service on AF_XDP on `IF`
//!   until Ctrl-C or SIGTERM; addresses from the flag and from the kernel (netlink).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cnet_apps::service::{self, Service, ServiceConfig, UdpEcho};
use cnet_drivers::xdp::{AttachMode, BindMode, XdpConfig};
use cnet_stack::IfAddr;

#[derive(Parser)]
#[command(name = "cnet", version, about = "userspace IPv4/UDP stack over AF_XDP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show the stack at work: on AF_XDP against the kernel (root), or `--mem` in memory.
    Demo {
        /// Run two cnet stacks over the in-memory link instead (no privileges needed).
        #[arg(long)]
        mem: bool,
        /// Seed of the stacks (and of the simulated link).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run a UDP echo service on AF_XDP on an interface of this namespace.
    Echo {
        /// Interface to serve.
        #[arg(long)]
        iface: String,
        /// Address to serve besides those the kernel has on the interface (A.B.C.D/P).
        #[arg(long)]
        addr: Option<String>,
        /// UDP echo port.
        #[arg(long, default_value_t = 7)]
        udp: u16,
        /// Queue to serve.
        #[arg(long, default_value_t = 0)]
        queue: u32,
        /// XDP attach mode: auto, native, generic.
        #[arg(long, default_value = "auto")]
        attach: String,
        /// Bind mode: auto, copy, zero-copy.
        #[arg(long, default_value = "auto")]
        bind: String,
        /// Do not learn addresses and routes from the kernel.
        #[arg(long)]
        no_netlink: bool,
    },
}

fn parse_ifaddr(s: &str) -> Result<IfAddr> {
    let (a, p) = s.split_once('/').context("address must be A.B.C.D/P")?;
    let prefix_len: u8 = p.parse().context("bad prefix length")?;
    anyhow::ensure!(prefix_len <= 32, "prefix length {prefix_len} > 32");
    Ok(IfAddr {
        addr: a.parse().context("bad IPv4 address")?,
        prefix_len,
    })
}

fn echo(
    iface: String,
    addr: Option<String>,
    port: u16,
    queue: u32,
    attach: &str,
    bind: &str,
    no_netlink: bool,
) -> Result<()> {
    let mut xdp = XdpConfig::new(&iface);
    xdp.attach_mode = match attach {
        "auto" => AttachMode::Auto,
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        other => anyhow::bail!("unknown attach mode {other:?} (auto, native, generic)"),
    };
    xdp.bind_mode = match bind {
        "auto" => BindMode::Auto,
        "copy" => BindMode::Copy,
        "zero-copy" => BindMode::ZeroCopy,
        other => anyhow::bail!("unknown bind mode {other:?} (auto, copy, zero-copy)"),
    };
    xdp.queues = vec![queue];
    let extra_addrs = addr
        .as_deref()
        .map(parse_ifaddr)
        .transpose()?
        .into_iter()
        .collect();
    let stop = service::stop_on_signals()?;
    let mut svc = Service::open(ServiceConfig {
        xdp,
        queue,
        extra_addrs,
        netlink: !no_netlink,
        seed: std::process::id() as u64 ^ 0x5eed,
    })?;
    let mut app = UdpEcho::bind(&mut svc.host.stack, port)?;
    eprintln!(
        "cnet echo on {iface} queue {queue}: MAC {}, addresses {:?}, UDP port {port}; Ctrl-C stops",
        svc.host.stack.mac(),
        svc.host.stack.addrs()
    );
    svc.run(&stop, |stack, now| app.poll(stack, now))?;
    eprintln!("stopping: {} datagrams echoed", app.echoed);
    let host = svc.shutdown();
    eprint!("{}", service::report(&host));
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { mem: true, seed } => {
            cnet_apps::mem_demo::run(&mut std::io::stdout().lock(), seed)
        }
        Cmd::Demo { mem: false, seed } => cnet_apps::demo::run(&mut std::io::stdout().lock(), seed),
        Cmd::Echo {
            iface,
            addr,
            udp,
            queue,
            attach,
            bind,
            no_netlink,
        } => echo(iface, addr, udp, queue, &attach, &bind, no_netlink),
    }
}
