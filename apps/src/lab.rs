//! A two-namespace lab for the demo and the end-to-end tests: the stack's namespace and the
//! kernel's, joined by a veth pair. Everything is removed on drop, also when a test panics or the
//! demo is interrupted.
//!
//! Names are unique per process and lab (`<prefix><pid>n<k>s` / `…k`); addresses come from
//! 198.18.0.0/15 (RFC 2544 benchmarking range). The kernel side has TX checksum offload turned off:
//! veth otherwise hands the peer frames with a partial checksum that only the kernel knows to trust
//! (see shared/notes/afxdp-facts.md), and cnet verifies every checksum.

use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The stack side's address on the lab link.
pub const STACK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The kernel side's address on the lab link.
pub const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Prefix length of the lab link.
pub const PREFIX: u8 = 24;
/// The veth end the stack runs on (in the stack namespace).
pub const STACK_DEV: &str = "cnet0";
/// The veth end the kernel uses (in the kernel namespace).
pub const KERNEL_DEV: &str = "kern0";

/// Why the lab cannot run here, if it cannot: root, `ip`, AF_XDP sockets.
pub fn missing_requirements() -> Option<String> {
    if let Some(why) = cnet_drivers::xdp::unavailable_reason() {
        return Some(why);
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` command: install iproute2 (scripts/install-deps.sh)".into());
    }
    if Command::new("ethtool").arg("--version").output().is_err() {
        return Some("no `ethtool` command: install ethtool (scripts/install-deps.sh)".into());
    }
    None
}

/// Runs a command, failing with its output.
pub fn run(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Two namespaces joined by veth; see the module docs.
#[derive(Debug)]
pub struct Lab {
    /// The stack's namespace (its veth end has the stack's address in Linux too, so that
    /// netlink-sync learns it; AF_XDP takes every frame before the kernel sees it).
    pub stack_ns: String,
    /// The kernel peer's namespace.
    pub kernel_ns: String,
}

impl Lab {
    /// Creates the lab with `queues` queues on each veth end.
    pub fn new(prefix: &str, queues: u32) -> Result<Lab> {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!("{prefix}{}n{k}", std::process::id());
        let lab = Lab {
            stack_ns: format!("{id}s"),
            kernel_ns: format!("{id}k"),
        };
        run(&["ip", "netns", "add", &lab.stack_ns])?;
        // From here on, drop removes whatever was made.
        run(&["ip", "netns", "add", &lab.kernel_ns])?;
        for ns in [&lab.stack_ns, &lab.kernel_ns] {
            // No IPv6: no stray router solicitations or DAD on the link.
            let _ = lab.exec(ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            let _ = lab.exec(
                ns,
                &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            );
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let q = queues.to_string();
        run(&[
            "ip",
            "-n",
            &lab.stack_ns,
            "link",
            "add",
            STACK_DEV,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            KERNEL_DEV,
            "netns",
            &lab.kernel_ns,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        lab.exec(&lab.kernel_ns, &["ethtool", "-K", KERNEL_DEV, "tx", "off"])?;
        if queues > 1 {
            lab.exec(
                &lab.stack_ns,
                &["ethtool", "-L", STACK_DEV, "rx", &q, "tx", &q],
            )?;
            lab.exec(
                &lab.kernel_ns,
                &["ethtool", "-L", KERNEL_DEV, "rx", &q, "tx", &q],
            )?;
        }
        let kip = format!("{KERNEL_IP}/{PREFIX}");
        let sip = format!("{STACK_IP}/{PREFIX}");
        run(&[
            "ip",
            "-n",
            &lab.kernel_ns,
            "addr",
            "add",
            &kip,
            "dev",
            KERNEL_DEV,
        ])?;
        run(&[
            "ip",
            "-n",
            &lab.stack_ns,
            "addr",
            "add",
            &sip,
            "dev",
            STACK_DEV,
        ])?;
        run(&["ip", "-n", &lab.kernel_ns, "link", "set", KERNEL_DEV, "up"])?;
        run(&["ip", "-n", &lab.stack_ns, "link", "set", STACK_DEV, "up"])?;
        lab.wait_carrier()?;
        Ok(lab)
    }

    /// Waits until both veth ends are operationally up. Linux reports carrier changes through
    /// linkwatch up to a second late; a stack started before that learns "down" from netlink.
    pub fn wait_carrier(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for (ns, dev) in [(&self.stack_ns, STACK_DEV), (&self.kernel_ns, KERNEL_DEV)] {
            loop {
                let out = run(&["ip", "-n", ns, "-o", "link", "show", "dev", dev])?;
                if String::from_utf8_lossy(&out.stdout).contains("state UP") {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("{dev} in {ns} did not come up within 5 s");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Runs a command inside namespace `ns` (`ip netns exec`).
    pub fn exec(&self, ns: &str, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Runs a command on the kernel side.
    pub fn kernel(&self, args: &[&str]) -> Result<Output> {
        self.exec(&self.kernel_ns, args)
    }

    /// `ip -n <ns> ...` on the stack side (netlink changes the stack should follow).
    pub fn ip_stack(&self, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "-n", &self.stack_ns];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Path of the stack namespace, for `setns`.
    pub fn stack_ns_path(&self) -> std::path::PathBuf {
        cnet_netlink::netns_path(&self.stack_ns)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.stack_ns, &self.kernel_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
