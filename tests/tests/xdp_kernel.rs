//! cnet on AF_XDP against the Linux kernel over veth, in network namespaces (root; skipped with a
//! printed reason elsewhere). The kernel is the peer: its `ping`, its UDP sockets, its ARP, and
//! netlink changes made with `ip` while the stack runs.

use cnet_apps::lab::{Lab, KERNEL_IP, STACK_DEV, STACK_IP};
use cnet_drivers::xdp::{AttachMode, XdpConfig};
use cnet_stack::{DropReason, Event};
use cnet_tests::require_lab;
use cnet_tests::xdp::{in_kernel, wait_for, XdpStack};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

fn ping_ok(lab: &Lab, ip: Ipv4Addr) -> bool {
    lab.kernel(&["ping", "-c", "1", "-W", "1", &ip.to_string()])
        .is_ok()
}

#[test]
fn arp_and_ping_both_ways() {
    require_lab!();
    let lab = Lab::new("cxk", 1).unwrap();
    let stack = XdpStack::start(&lab, XdpConfig::new(STACK_DEV));
    let out = lab.kernel(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        &STACK_IP.to_string(),
    ]);
    assert!(out.is_ok(), "kernel ping to cnet: {out:?}");
    let neigh = lab
        .kernel(&["ip", "neigh", "show", &STACK_IP.to_string()])
        .unwrap();
    let stack_mac = stack.with(|s, _| s.mac());
    let text = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(
        text.contains(&stack_mac.to_string().replace('-', ":")),
        "kernel resolved cnet's MAC: {text}"
    );
    // Now cnet pings the kernel.
    let h = stack.with(|s, _| s.ping_open(77).unwrap());
    stack.with(move |s, now| s.ping_send(h, KERNEL_IP, 1, b"from cnet", now).unwrap());
    let got = wait_for(&stack, Duration::from_secs(3), move |s| {
        match s.ping_recv(h) {
            Some(r) => {
                let ok = s.pool().data(&r.frame) == b"from cnet";
                s.pool_mut().free(r.frame);
                ok
            }
            None => false,
        }
    });
    assert!(got.is_some(), "the kernel answered cnet's ping");
    let kernel_mac_known = stack.with(|s, _| s.neighbors().get(KERNEL_IP).map(|e| e.mac));
    assert!(kernel_mac_known.is_some());
    let report = stack.stop();
    assert!(report.contains("icmp_echo_replies"), "{report}");
}

#[test]
fn udp_echo_every_size_and_64k_datagrams_fragmented_both_ways() {
    require_lab!();
    let lab = Lab::new("cxk", 1).unwrap();
    let stack = XdpStack::start(&lab, XdpConfig::new(STACK_DEV));
    let (done, resends) = in_kernel(&lab, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let dst = SocketAddrV4::new(STACK_IP, 7);
        let mut buf = vec![0u8; 70000];
        let mut sizes: Vec<usize> = (1..=1472).collect();
        sizes.extend([1473, 4000, 9000, 30000, 65507]);
        let (mut done, mut resends) = (0, 0);
        for n in sizes {
            let d: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
            for attempt in 0..5 {
                s.send_to(&d, dst).unwrap();
                match s.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        assert_eq!(from, std::net::SocketAddr::V4(dst));
                        assert_eq!(&buf[..len], &d[..], "echo of {n} bytes intact");
                        done += 1;
                        break;
                    }
                    Err(_) => {
                        resends += 1;
                        assert!(attempt < 4, "no echo for {n} bytes");
                    }
                }
            }
        }
        (done, resends)
    });
    assert_eq!(done, 1477);
    eprintln!("UDP echo: {done} sizes, {resends} resends");
    let (frags, reassembled) = stack.with(|s, _| {
        (
            s.counters().get(Event::FragCreated),
            s.counters().get(Event::FragReassembled),
        )
    });
    assert_eq!(reassembled, 5, "the kernel's fragments were reassembled");
    // 1473, 4000, 9000, 30000 and 65507 bytes over a 1500-byte MTU: 2 + 3 + 7 + 21 + 45 fragments.
    assert_eq!(frags, 78, "cnet fragmented its replies");
    stack.stop();
}

const INJECT: &str = r#"
import socket, struct, sys
dev, dst_mac = sys.argv[1], bytes.fromhex(sys.argv[2].replace(':', ''))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
src_mac = s.getsockname()[4]
def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff
def ip(payload, bad=False):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                    socket.inet_aton(sys.argv[3]), socket.inet_aton(sys.argv[4]))
    c = csum(h) ^ (0x1234 if bad else 0)
    return h[:10] + struct.pack('!H', c) + h[12:] + payload
udp = struct.pack('!HHHH', 4000, 7, 12, 0) + b'abcd'
eth = lambda dst: dst + src_mac + b'\x08\x00'
s.send(eth(b'\x02\x11\x22\x33\x44\x55') + ip(udp))          # other host's MAC
s.send(eth(dst_mac) + ip(udp, bad=True))                    # bad IPv4 checksum
s.send(eth(dst_mac) + ip(udp)[:16])                         # truncated IPv4 header
s.send(eth(dst_mac) + ip(struct.pack('!HHHH', 4000, 7, 12, 0x5555) + b'abcd'))  # bad UDP checksum
"#;

#[test]
fn frames_the_stack_must_drop_are_counted_by_reason() {
    require_lab!();
    let lab = Lab::new("cxk", 1).unwrap();
    let stack = XdpStack::start(&lab, XdpConfig::new(STACK_DEV));
    let mac = stack.with(|s, _| s.mac().to_string().replace('-', ":"));
    lab.kernel(&[
        "python3",
        "-c",
        INJECT,
        "kern0",
        &mac,
        &KERNEL_IP.to_string(),
        &STACK_IP.to_string(),
    ])
    .unwrap();
    let reasons = [
        DropReason::EthOtherHost,
        DropReason::Ipv4BadChecksum,
        DropReason::Ipv4Truncated,
        DropReason::UdpBadChecksum,
    ];
    let ok = wait_for(&stack, Duration::from_secs(3), move |s| {
        reasons.iter().all(|r| s.counters().drops(*r) == 1)
    });
    let counters = stack.with(|s, _| s.counters().nonzero().collect::<Vec<_>>());
    assert!(ok.is_some(), "each bad frame counted once: {counters:?}");
    stack.stop();
}

#[test]
fn generic_mode_without_need_wakeup_serves_ping_and_udp() {
    require_lab!();
    let lab = Lab::new("cxk", 1).unwrap();
    let mut cfg = XdpConfig::new(STACK_DEV);
    cfg.attach_mode = AttachMode::Generic;
    cfg.need_wakeup = false;
    let stack = XdpStack::start(&lab, cfg);
    assert!(ping_ok(&lab, STACK_IP));
    let echoed = in_kernel(&lab, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(b"generic", SocketAddrV4::new(STACK_IP, 7))
            .unwrap();
        let mut b = [0u8; 16];
        s.recv(&mut b)
            .map(|n| b[..n] == *b"generic")
            .unwrap_or(false)
    });
    assert!(echoed);
    stack.stop();
}

#[test]
fn netlink_changes_reach_the_running_stack() {
    require_lab!();
    let lab = Lab::new("cxk", 1).unwrap();
    let stack = XdpStack::start(&lab, XdpConfig::new(STACK_DEV));
    let extra = Ipv4Addr::new(198, 18, 0, 3);
    let mut delays = Vec::new();

    // A new address answers ping.
    lab.ip_stack(&["addr", "add", "198.18.0.3/24", "dev", STACK_DEV])
        .unwrap();
    let d = wait_for(&stack, Duration::from_secs(2), move |s| {
        s.is_local_addr(extra)
    });
    delays.push(("addr add", d.expect("address learnt")));
    assert!(ping_ok(&lab, extra), "the new address answers ping");

    // A route appears and goes.
    lab.ip_stack(&[
        "route",
        "add",
        "198.19.5.0/24",
        "via",
        "198.18.0.1",
        "metric",
        "7",
    ])
    .unwrap();
    let far = Ipv4Addr::new(198, 19, 5, 9);
    let d = wait_for(&stack, Duration::from_secs(2), move |s| {
        s.routes().lookup(far).is_some_and(|h| h.addr == KERNEL_IP)
    });
    delays.push(("route add", d.expect("route learnt")));
    lab.ip_stack(&[
        "route",
        "del",
        "198.19.5.0/24",
        "via",
        "198.18.0.1",
        "metric",
        "7",
    ])
    .unwrap();
    let d = wait_for(&stack, Duration::from_secs(2), move |s| {
        s.routes().lookup(far).is_none()
    });
    delays.push(("route del", d.expect("route removed")));
    let err = stack.with(move |s, now| {
        let h = s.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
        s.udp_send_slice(h, b"x", SocketAddrV4::new(far, 9), now)
    });
    assert_eq!(
        err,
        Err(cnet_stack::SendError::NoRoute),
        "traffic to the prefix stops"
    );

    // A static neighbour is used without ARP.
    let ghost = Ipv4Addr::new(198, 18, 0, 77);
    lab.ip_stack(&[
        "neigh",
        "add",
        "198.18.0.77",
        "lladdr",
        "02:00:00:00:00:77",
        "nud",
        "permanent",
        "dev",
        STACK_DEV,
    ])
    .unwrap();
    let d = wait_for(&stack, Duration::from_secs(2), move |s| {
        s.neighbors()
            .get(ghost)
            .is_some_and(|e| e.mac.0 == [2, 0, 0, 0, 0, 0x77])
    });
    delays.push(("neigh add", d.expect("neighbour learnt")));
    let arp_before = stack.with(|s, _| s.counters().get(Event::ArpRequestsSent));
    stack.with(move |s, now| {
        let h = s.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
        s.udp_send_slice(h, b"x", SocketAddrV4::new(ghost, 9), now)
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        stack.with(|s, _| s.counters().get(Event::ArpRequestsSent)),
        arp_before
    );

    // MTU change: replies larger than the new MTU leave fragmented. (veth drops frames longer than
    // the receiving end's MTU, so the kernel's end gets the same MTU.)
    lab.ip_stack(&["link", "set", STACK_DEV, "mtu", "1280"])
        .unwrap();
    lab.kernel(&["ip", "link", "set", "kern0", "mtu", "1280"])
        .unwrap();
    let d = wait_for(&stack, Duration::from_secs(2), |s| s.mtu() == 1280);
    delays.push(("link mtu", d.expect("mtu learnt")));
    let frags_before = stack.with(|s, _| s.counters().get(Event::FragCreated));
    let echoed = in_kernel(&lab, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(&[9u8; 1400], SocketAddrV4::new(STACK_IP, 7))
            .unwrap();
        let mut b = [0u8; 2000];
        s.recv(&mut b).map(|n| n == 1400).unwrap_or(false)
    });
    assert!(echoed);
    assert!(stack.with(|s, _| s.counters().get(Event::FragCreated)) > frags_before);

    // Link down and up.
    lab.ip_stack(&["link", "set", STACK_DEV, "down"]).unwrap();
    let d = wait_for(&stack, Duration::from_secs(3), |s| !s.link_up());
    delays.push(("link down", d.expect("down learnt")));
    lab.ip_stack(&["link", "set", STACK_DEV, "up"]).unwrap();
    lab.wait_carrier().unwrap();
    let d = wait_for(&stack, Duration::from_secs(3), |s| s.link_up());
    delays.push(("link up", d.expect("up learnt")));
    assert!(ping_ok(&lab, STACK_IP), "the stack survives link down/up");
    for (what, d) in &delays {
        eprintln!("netlink propagation, {what}: {d:?}");
    }
    for (what, d) in &delays {
        if !what.starts_with("link") {
            assert!(*d < Duration::from_millis(100), "{what} took {d:?}");
        }
    }
    stack.stop();
}

#[test]
fn two_queues_two_stacks_each_serves_the_flows_of_its_queue() {
    require_lab!();
    let lab = Lab::new("cxq", 2).unwrap();
    let ns = lab.stack_ns_path();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let st = stop.clone();
    // Open both queues inside the stack namespace, then give each instance its own thread.
    let opener = std::thread::spawn(move || {
        cnet_netlink::enter_netns(&ns).unwrap();
        let mut xdp = XdpConfig::new(STACK_DEV);
        xdp.queues = vec![0, 1];
        let services = cnet_apps::service::Service::open_all(cnet_apps::service::ServiceConfig {
            xdp,
            queue: 0,
            extra_addrs: Vec::new(),
            netlink: true,
            seed: 3,
        })
        .unwrap();
        let threads: Vec<_> = services
            .into_iter()
            .map(|mut svc| {
                let st = st.clone();
                std::thread::spawn(move || {
                    let mut echo =
                        cnet_apps::service::UdpEcho::bind(&mut svc.host.stack, 7).unwrap();
                    svc.run(&st, |s, now| echo.poll(s, now)).unwrap();
                    (svc.host.port.queue(), echo.echoed)
                })
            })
            .collect();
        ready_tx.send(()).unwrap();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    ready_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let answered = in_kernel(&lab, || {
        let mut ok = 0;
        for flow in 0..32 {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let msg = format!("flow {flow}");
            for _ in 0..3 {
                s.send_to(msg.as_bytes(), SocketAddrV4::new(STACK_IP, 7))
                    .unwrap();
                let mut b = [0u8; 64];
                if let Ok(n) = s.recv(&mut b) {
                    assert_eq!(&b[..n], msg.as_bytes());
                    ok += 1;
                    break;
                }
            }
        }
        ok
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let per_queue = opener.join().unwrap();
    eprintln!("echoes per queue: {per_queue:?}");
    assert_eq!(
        answered, 32,
        "every flow was answered by the stack of its queue"
    );
    assert_eq!(per_queue.len(), 2);
    assert!(
        per_queue.iter().all(|(_, n)| *n > 0),
        "both queues' stacks served flows: {per_queue:?}"
    );
}
