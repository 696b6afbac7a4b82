//! `cnet demo`: the stack on AF_XDP in a network namespace, against the Linux kernel in another.
//!
//! It creates the lab (two namespaces joined by veth, see [`crate::lab`]), starts cnet on the veth
//! end of its namespace with AF_XDP (the address comes from the kernel over netlink), and from the
//! kernel side shows: ARP resolved, `ping` answered, UDP echo round trips up to 64 KiB datagrams
//! (fragmented both ways), a TCP echo of 4 MiB checked by SHA-256 with the options Linux
//! negotiated, `curl` fetching from a hyper server that runs on cnet's socket API (tokio adapter),
//! then cnet pinging the kernel, and prints the stack's counters. The stack runs on the
//! `cnet-socket` runtime: the echo apps and the pinger inside its owner loop, the HTTP server on
//! tokio tasks in other threads. The lab is removed at the end, on error, and on Ctrl-C.

use crate::lab::{self, Lab, KERNEL_IP, STACK_DEV, STACK_IP};
use crate::service::{self, Service, ServiceConfig, TcpEcho, UdpEcho};
use anyhow::{anyhow, bail, Context, Result};
use cnet_drivers::xdp::XdpConfig;
use cnet_socket::{LoopApp, Runtime};
use cnet_stack::Stack;
use cnet_stack::{Duration, Instant};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

const UDP_CLIENT: &str = r#"
import socket, sys
ip = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
for n in (1, 100, 1472, 8000, 65507):
    d = bytes((i * 7 + n) & 255 for i in range(n))
    got = None
    for attempt in range(5):
        s.sendto(d, (ip, 7))
        try:
            got, _ = s.recvfrom(70000)
            break
        except socket.timeout:
            continue
    print(n, "bytes:", "echoed intact" if got == d else ("LOST" if got is None else "CORRUPTED"), "after", attempt + 1, "send(s)")
"#;

const TCP_CLIENT: &str = r#"
import hashlib, socket, subprocess, sys, threading, time
ip = sys.argv[1]
n = 4 << 20
data = bytes((i * 31) & 255 for i in range(65536)) * (n // 65536)
s = socket.create_connection((ip, 7), timeout=5)
got = bytearray()
def reader():
    while True:
        b = s.recv(1 << 16)
        if not b:
            break
        got.extend(b)
t = threading.Thread(target=reader)
t.start()
start = time.time()
s.sendall(data)
info = subprocess.run(["ss", "-tin", "dst", ip], capture_output=True, text=True).stdout.splitlines()
s.shutdown(socket.SHUT_WR)
t.join(10)
secs = time.time() - start
ok = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
print("%d bytes sent and echoed back %s in %.3f s (%.0f Mbit/s each way)" % (n, "intact (SHA-256 equal)" if ok else "CORRUPTED", secs, n * 8 / secs / 1e6))
for l in info:
    if "wscale" in l:
        kv = dict(w.split(":", 1) for w in l.split() if ":" in w and not w.startswith("bbr"))
        mss = int(kv.get("mss", "0"))
        print("Linux's view (ss -ti): wscale %s (cnet's,Linux's shift), mss %d%s, rtt %s ms" % (kv.get("wscale"), mss, " = 1460 - 12: timestamps negotiated" if mss == 1448 else "", kv.get("rtt")))
"#;

/// What the stack thread reports about its pings to the kernel.
#[derive(Debug, Default)]
struct PingResult {
    sent: u16,
    rtts: Vec<Duration>,
}

/// Pings the kernel three times when asked (in the owner loop, with the stack's ping API).
struct Pinger {
    ping: cnet_stack::PingHandle,
    go: mpsc::Receiver<()>,
    done: mpsc::Sender<PingResult>,
    pinging: Option<(PingResult, Vec<Instant>)>,
}

impl LoopApp for Pinger {
    fn poll(&mut self, stack: &mut Stack, now: Instant) {
        if self.go.try_recv().is_ok() {
            self.pinging = Some((PingResult::default(), Vec::new()));
        }
        let Some((res, sent_at)) = self.pinging.as_mut() else {
            return;
        };
        while let Some(r) = stack.ping_recv(self.ping) {
            if let Some(t) = sent_at.get(r.seq as usize) {
                res.rtts.push(now - *t);
            }
            stack.pool_mut().free(r.frame);
        }
        let due = sent_at
            .last()
            .is_none_or(|t| now >= *t + Duration::from_millis(200));
        if res.sent < 3 && due {
            if stack
                .ping_send(self.ping, KERNEL_IP, res.sent, b"cnet ping", now)
                .is_ok()
            {
                sent_at.push(now);
                res.sent += 1;
            }
        } else if res.sent == 3 && (res.rtts.len() == 3 || due) {
            let (done, _) = self.pinging.take().expect("checked above");
            let _ = self.done.send(done);
        }
    }
}

/// The expected SHA-256 of `GET /bytes/N` from `cnet http`'s pattern, in hex.
fn pattern_sha256(n: u64) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < n {
        let k = (n - off).min(buf.len() as u64) as usize;
        crate::http::fill_pattern(off, &mut buf[..k]);
        ctx.update(&buf[..k]);
        off += k as u64;
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Port of the demo's HTTP server.
const HTTP_PORT: u16 = 80;

/// Runs the demo; `seed` seeds the stack.
pub fn run(out: &mut impl Write, seed: u64) -> Result<()> {
    if let Some(why) = lab::missing_requirements() {
        bail!(
            "cnet demo cannot run here: {why}.\n\
             `cnet demo --mem` runs two cnet stacks over the in-memory link without privileges."
        );
    }
    let stop = service::stop_on_signals()?;
    let lab = Lab::new("cnd", 1)?;
    writeln!(
        out,
        "lab: namespace {} runs cnet on AF_XDP ({STACK_DEV}, {STACK_IP}); namespace {} is Linux ({KERNEL_IP})",
        lab.stack_ns, lab.kernel_ns
    )?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (result_tx, result_rx) = mpsc::channel::<PingResult>();
    let ns = lab.stack_ns_path();
    let thread_stop = Arc::new(AtomicBool::new(false));
    let ts = thread_stop.clone();
    let stack_thread = std::thread::spawn(move || -> Result<String> {
        // The runtime's threads are created here, so they inherit the stack namespace.
        let setup = || -> Result<(Runtime, String, crate::http::HttpServer)> {
            cnet_netlink::enter_netns(&ns).context("cannot enter the stack namespace")?;
            let mut svc = Service::open(ServiceConfig {
                xdp: XdpConfig::new(STACK_DEV),
                queue: 0,
                extra_addrs: Vec::new(),
                netlink: true,
                seed,
            })?;
            let stack = &mut svc.host.stack;
            let apps: Vec<Box<dyn LoopApp>> = vec![
                Box::new(UdpEcho::bind(stack, 7)?),
                Box::new(TcpEcho::listen(stack, 7, 64)?),
                Box::new(Pinger {
                    ping: stack.ping_open(0xc0de)?,
                    go: ping_rx,
                    done: result_tx,
                    pinging: None,
                }),
            ];
            let addrs: Vec<String> = stack
                .addrs()
                .iter()
                .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                .collect();
            let banner = format!(
                "cnet up: MAC {}, addresses from netlink [{}], AF_XDP {:?}",
                stack.mac(),
                addrs.join(", "),
                svc.host.port.mode()
            );
            let rt = Runtime::start(vec![svc.into_setup(apps)], cnet_socket::Limits::default())?;
            let http = crate::http::HttpServer::start(&rt, HTTP_PORT, 1)?;
            Ok((rt, banner, http))
        };
        let (rt, banner, http) = match setup() {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("{e:#}");
                let _ = ready_tx.send(Err(e));
                return Err(anyhow!(msg));
            }
        };
        let _ = ready_tx.send(Ok(banner));
        while !ts.load(Ordering::Relaxed) {
            if let Some(f) = rt.status().into_iter().find_map(|s| s.failure) {
                bail!("the stack failed: {f}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let served = http.stop(std::time::Duration::from_secs(2));
        let mut text = String::new();
        for r in rt.join() {
            text.push_str(&format!(
                "{}, {} HTTP requests answered\n",
                r.apps
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                served.requests.load(Ordering::Relaxed)
            ));
            text.push_str(&r.counter_lines());
            if r.frames_lost != 0 {
                bail!("{} frames of the UMEM unaccounted for", r.frames_lost);
            }
        }
        Ok(text)
    });
    let outcome = (|| -> Result<()> {
        let ready = ready_rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .context("the stack did not start within 20 s")??;
        writeln!(out, "{ready}")?;
        let ping = lab.kernel(&[
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            &STACK_IP.to_string(),
        ])?;
        let text = String::from_utf8_lossy(&ping.stdout);
        writeln!(out, "\n$ ping -c 3 {STACK_IP}   (from Linux)")?;
        for l in text
            .lines()
            .filter(|l| l.contains("bytes from") || l.contains("packets"))
        {
            writeln!(out, "  {l}")?;
        }
        let neigh = lab.kernel(&["ip", "neigh", "show", &STACK_IP.to_string()])?;
        writeln!(
            out,
            "\n$ ip neigh show {STACK_IP}   (Linux learnt cnet's MAC by ARP)"
        )?;
        writeln!(out, "  {}", String::from_utf8_lossy(&neigh.stdout).trim())?;
        writeln!(out, "\nUDP echo from a Linux socket to cnet port 7:")?;
        let udp = lab.kernel(&["python3", "-c", UDP_CLIENT, &STACK_IP.to_string()])?;
        for l in String::from_utf8_lossy(&udp.stdout).lines() {
            writeln!(out, "  {l}")?;
        }
        writeln!(out, "\nTCP echo from a Linux socket to cnet port 7:")?;
        let tcp = lab.kernel(&["python3", "-c", TCP_CLIENT, &STACK_IP.to_string()])?;
        for l in String::from_utf8_lossy(&tcp.stdout).lines() {
            writeln!(out, "  {l}")?;
        }
        writeln!(
            out,
            "\nHTTP from Linux's curl to a hyper server on cnet's socket API (tokio adapter):"
        )?;
        let url = format!("http://{STACK_IP}:{HTTP_PORT}");
        let hello = lab.kernel(&["curl", "-s", "--max-time", "10", &format!("{url}/")])?;
        writeln!(out, "  $ curl {url}/")?;
        for l in String::from_utf8_lossy(&hello.stdout).lines().take(3) {
            writeln!(out, "    {l}")?;
        }
        const N: u64 = 8 << 20;
        let get = lab.kernel(&[
            "sh",
            "-c",
            &format!("curl -s --max-time 20 -o /dev/stdout -w '%{{time_total}}' {url}/bytes/{N} | python3 -c 'import hashlib,sys; d=sys.stdin.buffer.read(); print(hashlib.sha256(d[:{N}]).hexdigest(), d[{N}:].decode())'"),
        ])?;
        let got = String::from_utf8_lossy(&get.stdout);
        let mut it = got.split_whitespace();
        let (hash, secs) = (it.next().unwrap_or(""), it.next().unwrap_or("?"));
        let ok = hash == pattern_sha256(N);
        writeln!(
            out,
            "  $ curl {url}/bytes/{N}: {} in {secs} s",
            if ok {
                "SHA-256 matches the pattern"
            } else {
                "BODY DIFFERS"
            }
        )?;
        anyhow::ensure!(ok, "HTTP body differs from the pattern (got hash {hash:?})");
        ping_tx
            .send(())
            .map_err(|_| anyhow!("the stack thread ended early"))?;
        let r = result_rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .context("cnet's pings did not finish")?;
        writeln!(
            out,
            "\ncnet pings Linux {}: {} sent, {} answered, RTTs {:?}",
            KERNEL_IP,
            r.sent,
            r.rtts.len(),
            r.rtts
        )?;
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    })();
    thread_stop.store(true, Ordering::Relaxed);
    let report = stack_thread
        .join()
        .map_err(|_| anyhow!("the stack thread panicked"))?;
    match (&outcome, report) {
        (_, Ok(r)) => writeln!(out, "\ncnet counters:\n{r}")?,
        (Ok(()), Err(e)) => return Err(e),
        (Err(_), Err(e)) => writeln!(out, "stack thread: {e:#}")?,
    }
    drop(lab);
    outcome
}
