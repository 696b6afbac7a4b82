//! cnet's own XDP redirect program (`xskmap: "self"`, `XskMapSource::Redirect`) against the Linux
//! kernel over veth, in network namespaces (root; skipped with a printed reason elsewhere).
//!
//! The point of the program: on a netdev shared with the host, only ARP and IPv4 for the stack's
//! addresses go to cnet; the kernel keeps the rest. What reaches the kernel is observed with an
//! `AF_PACKET` socket on the stack-side device: it sees the frames the XDP program passed, never
//! the ones it redirected.

use cnet_apps::lab::{Lab, PREFIX, STACK_DEV, STACK_IP};
use cnet_apps::service::{Service, ServiceConfig, UdpEcho};
use cnet_drivers::xdp::{
    attached_addrs, AttachMode, BindMode, HugePages, RedirectProgram, XdpConfig, XdpError, XdpPort,
    XskMapSource, XskProgram,
};
use cnet_drivers::Port;
use cnet_stack::IfAddr;
use cnet_tests::require_lab;
use cnet_tests::xdp::{in_kernel, XdpStack};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A second address on the stack-side device that only the kernel owns.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// An address added and removed while cnet runs.
const LATE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);

fn in_stack<T: Send>(lab: &Lab, f: impl FnOnce() -> T + Send) -> T {
    cnet_netlink::run_in_netns(&lab.stack_ns_path(), f).expect("enter the stack namespace")
}

fn small(mut cfg: XdpConfig) -> XdpConfig {
    cfg.frames = 4096;
    cfg.rings.fill = 1024;
    cfg.huge_pages = HugePages::Never;
    cfg.bind_mode = BindMode::Copy;
    cfg.map_source = XskMapSource::Redirect;
    cfg
}

/// The XDP part of `ip -d link show` of the stack device ("" when none is attached).
fn xdp_of_link(lab: &Lab) -> String {
    let out = lab
        .ip_stack(&["-d", "link", "show", "dev", STACK_DEV])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .filter(|l| l.contains("xdp") || l.contains("prog/"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn addrs_in_map(lab: &Lab) -> Option<Vec<Ipv4Addr>> {
    in_stack(lab, || attached_addrs(STACK_DEV)).expect("query the attached program")
}

/// Waits up to 5 s for the attached program's address map to equal `want`.
fn wait_map(lab: &Lab, want: &[Ipv4Addr]) {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < Duration::from_secs(5) {
        last = addrs_in_map(lab);
        if last.as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redirect map is {last:?}, expected {want:?}");
}

/// An `AF_PACKET` socket on the stack-side device: counts the received frames that reached the
/// kernel (passed by XDP) for an IPv4 address, as ARP target or IPv4 destination.
struct KernelTap {
    fd: OwnedFd,
}

impl KernelTap {
    fn open(lab: &Lab) -> KernelTap {
        in_stack(lab, || {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: a new packet socket, wrapped at once.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    i32::from(proto),
                )
            };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: `fd` is new and ours.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new(STACK_DEV).unwrap();
            // SAFETY: NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex > 0);
            // SAFETY: zero is valid for sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            KernelTap { fd }
        })
    }

    /// Frames received (not sent) by the kernel since the last call, addressed to `ip`; reads
    /// what is queued now (at most 10000 frames).
    fn count_for(&self, ip: Ipv4Addr) -> usize {
        let mut n = 0;
        let mut buf = [0u8; 2048];
        for _ in 0..10_000 {
            // SAFETY: zero is valid for sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are writable for the sizes passed.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if r < 0 {
                break;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let f = &buf[..r as usize];
            let o = ip.octets();
            let hit = match f.get(12..14) {
                Some([0x08, 0x06]) => f.get(38..42) == Some(&o[..]),
                Some([0x08, 0x00]) => f.get(30..34) == Some(&o[..]),
                _ => false,
            };
            n += usize::from(hit);
        }
        n
    }
}

/// `count` pings from the kernel side to `ip` (0.2 s apart, 1 s timeout each).
fn ping(lab: &Lab, ip: Ipv4Addr, count: u32) -> anyhow::Result<std::process::Output> {
    let (ip, count) = (ip.to_string(), count.to_string());
    lab.kernel(&["ping", "-c", &count, "-i", "0.2", "-W", "1", &ip])
}

/// One UDP echo exchange from the kernel side to `ip:7` (up to 5 tries); the echo's source
/// address when it came back (cnet's UDP echo answers from the address the request was sent to,
/// `Stack::udp_send_from`).
fn udp_echo_from(lab: &Lab, ip: Ipv4Addr) -> Option<Ipv4Addr> {
    in_kernel(lab, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let dst = SocketAddrV4::new(ip, 7);
        let mut buf = [0u8; 64];
        for _ in 0..5 {
            s.send_to(b"to cnet", dst).unwrap();
            if let Ok((n, std::net::SocketAddr::V4(from))) = s.recv_from(&mut buf) {
                return (from.port() == 7 && &buf[..n] == b"to cnet").then_some(*from.ip());
            }
        }
        None
    })
}

/// [`udp_echo_from`], answered from `ip` itself.
fn udp_echo(lab: &Lab, ip: Ipv4Addr) -> bool {
    udp_echo_from(lab, ip) == Some(ip)
}

/// A TCP exchange from the kernel side with a kernel echo server on the stack side at `ip:9001`.
fn kernel_tcp_echo(lab: &Lab, ip: Ipv4Addr) -> Result<(), String> {
    let listener = in_stack(lab, || TcpListener::bind(SocketAddrV4::new(ip, 9001)))
        .map_err(|e| format!("bind: {e}"))?;
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || -> Result<(), String> {
        let start = Instant::now();
        let (mut c, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(_) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        let n = c.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        c.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))
    });
    let client = in_kernel(lab, || -> Result<(), String> {
        let addr = SocketAddrV4::new(ip, 9001).into();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"host traffic").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).map_err(|e| format!("echo: {e}"))?;
        (&buf == b"host traffic")
            .then_some(())
            .ok_or("wrong echo".into())
    });
    let served = server.join().map_err(|_| "server panicked".to_string())?;
    client.and(served)
}

/// cnet as a service on the lab's stack side, without netlink: its address comes from the
/// configuration only, so the kernel's other addresses on the device stay the kernel's.
struct StaticCnet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<String, String>>>,
}

impl StaticCnet {
    fn start(lab: &Lab, addr: Ipv4Addr) -> StaticCnet {
        let ns = lab.stack_ns_path();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<String, String> {
            let opened = cnet_netlink::enter_netns(&ns)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    Service::open(ServiceConfig {
                        xdp: small(XdpConfig::new(STACK_DEV)),
                        queue: 0,
                        extra_addrs: vec![IfAddr {
                            addr,
                            prefix_len: PREFIX,
                        }],
                        netlink: false,
                        seed: 1,
                    })
                })
                .and_then(|mut svc| {
                    let echo = UdpEcho::bind(&mut svc.host.stack, 7)?;
                    Ok((svc, echo))
                });
            let (mut svc, mut echo) = match opened {
                Ok(v) => {
                    let _ = ready_tx.send(Ok(()));
                    v
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(format!("{e:#}"));
                }
            };
            svc.run(&st, |stack, now| echo.poll(stack, now))
                .map_err(|e| format!("{e:#}"))?;
            let report = cnet_apps::service::report(&svc.host);
            drop(svc.shutdown());
            Ok(report)
        });
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("cnet did not start: {e}"),
            Err(_) => panic!("cnet did not start within 20 s"),
        }
        StaticCnet {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops cnet (its port, and with it the program, goes); returns its report.
    fn stop(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().unwrap().join() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("cnet failed: {e}"),
            Err(_) => panic!("cnet panicked"),
        }
    }
}

impl Drop for StaticCnet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn verifier_accepts_the_program_which_nobody_can_replace_while_attached() {
    require_lab!();
    let lab = Lab::new("cxr", 1).unwrap();
    in_stack(&lab, || {
        let p = RedirectProgram::attach(STACK_DEV, AttachMode::Auto, 1)
            .unwrap_or_else(|e| panic!("load and attach: {e}"));
        assert_eq!(p.mode(), AttachMode::Native, "veth has native XDP");
        assert!(p.prog_id() > 0);
        let again = RedirectProgram::attach(STACK_DEV, AttachMode::Auto, 1).unwrap();
        assert!(Arc::ptr_eq(&p, &again), "one program per interface");
        drop(again);
        assert_eq!(attached_addrs(STACK_DEV).unwrap(), Some(vec![]));
        p.set_queue_addrs(
            0,
            [STACK_IP, Ipv4Addr::BROADCAST, Ipv4Addr::new(224, 0, 0, 1)],
        )
        .unwrap();
        assert_eq!(
            attached_addrs(STACK_DEV).unwrap(),
            Some(vec![STACK_IP]),
            "broadcast and multicast stay with the kernel"
        );
        // Attached through a BPF link: `ip` cannot remove or replace it behind cnet's back.
        assert!(lab
            .ip_stack(&["link", "set", "dev", STACK_DEV, "xdp", "off"])
            .is_err());
        assert!(
            XskProgram::load(STACK_DEV).is_err(),
            "libxdp cannot replace it"
        );
        assert_eq!(attached_addrs(STACK_DEV).unwrap(), Some(vec![STACK_IP]));
        drop(p);
        assert_eq!(attached_addrs(STACK_DEV).unwrap(), None, "detached on drop");
        // Generic mode; and with a foreign program attached, attaching ours is a clear error.
        let p = RedirectProgram::attach(STACK_DEV, AttachMode::Generic, 1).unwrap();
        assert_eq!(p.mode(), AttachMode::Generic);
        drop(p);
        let foreign = XskProgram::load(STACK_DEV).expect("libxdp's program");
        match RedirectProgram::attach(STACK_DEV, AttachMode::Auto, 1) {
            Err(XdpError::Program { source, .. }) => assert!(
                matches!(source.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)),
                "{source}"
            ),
            other => panic!("expected EBUSY, got {other:?}"),
        }
        drop(foreign);
    });
    assert_eq!(xdp_of_link(&lab), "", "nothing left attached");
}

#[test]
fn queues_share_one_program_and_the_map_is_the_union_of_their_addresses() {
    require_lab!();
    let lab = Lab::new("cxr", 2).unwrap();
    let mut cfg = small(XdpConfig::new(STACK_DEV));
    cfg.queues = vec![0, 1];
    cfg.frames = 1024;
    cfg.rings.fill = 512;
    let mut ports = in_stack(&lab, || XdpPort::open_all(&cfg)).expect("open two queues");
    let prog = Arc::clone(ports[0].0.redirect_program().expect("redirect program"));
    assert!(Arc::ptr_eq(&prog, ports[1].0.redirect_program().unwrap()));
    assert_eq!(ports[0].0.mode().attach, Some(prog.mode()));
    let a = |ip| IfAddr {
        addr: ip,
        prefix_len: PREFIX,
    };
    ports[0].0.local_addrs_changed(&[a(STACK_IP)]);
    ports[1].0.local_addrs_changed(&[a(STACK_IP), a(LATE_IP)]);
    assert_eq!(prog.addrs(), vec![STACK_IP, LATE_IP]);
    assert_eq!(addrs_in_map(&lab), Some(vec![STACK_IP, LATE_IP]));
    ports[1].0.local_addrs_changed(&[a(STACK_IP)]);
    assert_eq!(addrs_in_map(&lab), Some(vec![STACK_IP]));
    ports[0].0.local_addrs_changed(&[]);
    assert_eq!(
        addrs_in_map(&lab),
        Some(vec![STACK_IP]),
        "queue 1 still has it"
    );
    drop(prog);
    ports.pop();
    assert!(
        !xdp_of_link(&lab).is_empty(),
        "queue 0's port still holds it"
    );
    ports.pop();
    assert_eq!(xdp_of_link(&lab), "", "detached with the last port");
}

#[test]
fn host_keeps_its_traffic_while_cnet_gets_its_own_address() {
    require_lab!();
    let lab = Lab::new("cxr", 1).unwrap();
    let host = format!("{HOST_IP}/{PREFIX}");
    lab.ip_stack(&["addr", "add", &host, "dev", STACK_DEV])
        .unwrap();
    // Before cnet: the kernel answers on both addresses.
    kernel_tcp_echo(&lab, HOST_IP).expect("kernel TCP before cnet");
    let tap = KernelTap::open(&lab);
    let cnet = StaticCnet::start(&lab, STACK_IP);
    wait_map(&lab, &[STACK_IP]);
    let xdp = xdp_of_link(&lab);
    assert!(xdp.contains("xdp"), "program attached: {xdp}");
    tap.count_for(HOST_IP);
    tap.count_for(STACK_IP);

    // cnet's address: ping (ARP first: the kernel side's neighbour entry is fresh) and UDP echo.
    lab.kernel(&["ip", "neigh", "flush", "dev", cnet_apps::lab::KERNEL_DEV])
        .unwrap();
    ping(&lab, STACK_IP, 2).expect("cnet answers ping on its address");
    assert!(udp_echo(&lab, STACK_IP), "cnet echoes UDP on its address");
    // The host's address on the same netdev: ARP, TCP both ways, ping, all by the kernel.
    kernel_tcp_echo(&lab, HOST_IP).expect("the kernel keeps TCP on its address");
    ping(&lab, HOST_IP, 2).expect("the kernel answers ping on its address");
    let (to_host, to_cnet) = (tap.count_for(HOST_IP), tap.count_for(STACK_IP));
    assert!(
        to_host >= 4,
        "frames for the host reached the kernel: {to_host}"
    );
    assert_eq!(to_cnet, 0, "no frame for cnet's address reached the kernel");

    let report = cnet.stop();
    assert!(report.contains("icmp_echo_replies"), "{report}");
    // cnet gone: the program is detached and the kernel gets everything again.
    assert_eq!(xdp_of_link(&lab), "", "program detached after cnet exits");
    assert_eq!(addrs_in_map(&lab), None);
    kernel_tcp_echo(&lab, HOST_IP).expect("kernel TCP after cnet");
    ping(&lab, STACK_IP, 1).expect("the kernel answers for cnet's old address now");
    assert!(
        tap.count_for(STACK_IP) >= 1,
        "frames for it reach the kernel"
    );
}

#[test]
fn address_map_follows_netlink() {
    require_lab!();
    let lab = Lab::new("cxr", 1).unwrap();
    let stack = XdpStack::start(&lab, small(XdpConfig::new(STACK_DEV)));
    wait_map(&lab, &[STACK_IP]);
    assert!(udp_echo(&lab, STACK_IP), "cnet echoes on its address");
    let tap = KernelTap::open(&lab);
    // Not ours yet: the kernel side's ARP requests for it reach the kernel (nobody answers).
    let _ = ping(&lab, LATE_IP, 1);
    assert!(
        tap.count_for(LATE_IP) >= 1,
        "before: frames for it reach the kernel"
    );

    let cidr = format!("{LATE_IP}/{PREFIX}");
    lab.ip_stack(&["addr", "add", &cidr, "dev", STACK_DEV])
        .unwrap();
    wait_map(&lab, &[STACK_IP, LATE_IP]);
    // What was on its way before the map changed (ARP probes of the ping above) does not count.
    tap.count_for(LATE_IP);
    let adopted = stack.with(|s, _| s.addrs().iter().any(|a| a.addr == LATE_IP));
    assert!(adopted, "the stack adopted the address from netlink");
    lab.kernel(&["ip", "neigh", "flush", "dev", cnet_apps::lab::KERNEL_DEV])
        .unwrap();
    // The kernel has no UDP port 7 (it would answer "port unreachable"): an echo is cnet's.
    assert_eq!(
        udp_echo_from(&lab, LATE_IP),
        Some(LATE_IP),
        "cnet echoes what is sent to the new address, from that address"
    );
    assert_eq!(
        tap.count_for(LATE_IP),
        0,
        "while ours, nothing for it reaches the kernel"
    );

    lab.ip_stack(&["addr", "del", &cidr, "dev", STACK_DEV])
        .unwrap();
    wait_map(&lab, &[STACK_IP]);
    assert_eq!(
        udp_echo_from(&lab, LATE_IP),
        None,
        "no echo once the address is gone"
    );
    assert!(
        tap.count_for(LATE_IP) >= 1,
        "after: frames for it reach the kernel again"
    );
    assert!(
        udp_echo(&lab, STACK_IP),
        "cnet still serves its first address"
    );
    stack.stop();
    assert_eq!(xdp_of_link(&lab), "", "program detached after cnet stops");
}
