//! TAP port against the Linux kernel in a network namespace: the kernel answers an ARP request the
//! port writes, a kernel UDP socket and the port exchange datagrams. Root only (prints SKIPPED
//! otherwise); bounded in time; the namespace is removed on drop.

mod xdp_common;

use cnet_drivers::tap::TapPort;
use cnet_drivers::Port;
use cnet_stack::{Batch, Instant, MacAddr, Pool};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::Duration;
use xdp_common::*;

const MAC_T: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1a];
const IP_KERNEL: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const IP_STACK: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// `(sender MAC, sender IP, target MAC)` of an ARP reply.
fn arp_reply(f: &[u8]) -> Option<([u8; 6], Ipv4Addr, [u8; 6])> {
    if f.len() < 42 || f[12..14] != [0x08, 0x06] || f[20..22] != [0, 2] {
        return None;
    }
    let mut sha = [0u8; 6];
    sha.copy_from_slice(&f[22..28]);
    let spa = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
    let mut tha = [0u8; 6];
    tha.copy_from_slice(&f[32..38]);
    Some((sha, spa, tha))
}

fn link_mac(ns: &str, dev: &str) -> Option<[u8; 6]> {
    let out = sh_out(&["ip", "-n", ns, "-o", "link", "show", dev]);
    let s = out.split("link/ether ").nth(1)?.split_whitespace().next()?;
    let mut m = [0u8; 6];
    for (d, p) in m.iter_mut().zip(s.split(':')) {
        *d = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

#[test]
fn kernel_answers_arp_and_exchanges_udp_over_tap() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("SKIPPED tap test: needs root and /dev/net/tun");
        return;
    }
    let ns = Ns(format!("cx{}t", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    let _g = NsGuard::enter(&ns.0);
    let mut port = TapPort::open("cxtap0", MacAddr(MAC_T)).expect("open tap");
    assert_eq!(port.name(), "cxtap0");
    for key in ["all", "default", "cxtap0"] {
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.0, "sysctl", "-qw"])
            .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
            .output();
    }
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "198.18.2.1/24",
        "dev",
        "cxtap0",
    ]);
    sh(&["ip", "-n", &ns.0, "link", "set", "cxtap0", "up"]);
    let tap_mac = link_mac(&ns.0, "cxtap0").expect("tap MAC");
    assert_eq!(port.info().mtu, 1500);

    let mut pool = Pool::new(256, 2048, 192).unwrap();
    let mut batch = Batch::new();

    // 1. ARP: we ask who has 198.18.2.1; the kernel answers with the TAP interface's MAC.
    let mut reply = None;
    let mut tries = 0;
    until(Duration::from_secs(5), || {
        if tries % 200 == 0 {
            let req = arp_request(MAC_T, IP_STACK, IP_KERNEL);
            batch.push(pool.alloc_from(&req).unwrap()).unwrap();
            assert_eq!(
                port.tx_burst(&mut pool, &mut batch, Instant::ZERO).unwrap(),
                1
            );
        }
        tries += 1;
        port.rx_burst(&mut pool, &mut batch, Instant::ZERO).unwrap();
        for f in batch.drain() {
            if let Some(r) = arp_reply(pool.data(&f)) {
                reply = Some(r);
            }
            pool.free(f);
        }
        reply.is_some()
    });
    let (sha, spa, tha) = reply.expect("ARP reply from the kernel");
    assert_eq!((sha, spa, tha), (tap_mac, IP_KERNEL, MAC_T));

    // 2. Kernel → port: a UDP datagram to the stack's address (the kernel learnt our MAC from the
    //    ARP request).
    let k = UdpSocket::bind(SocketAddrV4::new(IP_KERNEL, 6000)).unwrap();
    k.send_to(b"to-the-stack", SocketAddrV4::new(IP_STACK, 6001))
        .unwrap();
    let mut got = None;
    until(Duration::from_secs(5), || {
        port.rx_burst(&mut pool, &mut batch, Instant::ZERO).unwrap();
        for f in batch.drain() {
            if let Some(u) = parse_udp(pool.data(&f)) {
                if u.dport == 6001 {
                    assert!(u.ip_csum_ok && u.udp_csum_ok);
                    got = Some(u.payload);
                }
            }
            pool.free(f);
        }
        got.is_some()
    });
    assert_eq!(got.as_deref(), Some(&b"to-the-stack"[..]));

    // 3. Port → kernel: a hand-built datagram reaches the kernel socket.
    let frame = udp_frame(
        MAC_T,
        tap_mac,
        IP_STACK,
        IP_KERNEL,
        6001,
        6000,
        b"to-the-kernel",
    );
    batch.push(pool.alloc_from(&frame).unwrap()).unwrap();
    assert_eq!(
        port.tx_burst(&mut pool, &mut batch, Instant::ZERO).unwrap(),
        1
    );
    k.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = k.recv_from(&mut buf).expect("datagram from the port");
    assert_eq!(&buf[..n], b"to-the-kernel");
    assert_eq!(
        from,
        std::net::SocketAddr::V4(SocketAddrV4::new(IP_STACK, 6001))
    );

    // The TAP port holds no frame between calls.
    assert_eq!(port.frames_held(), 0);
    assert_eq!(pool.available(), pool.capacity());
    let c = port.counters();
    assert!(c.rx_frames >= 2 && c.tx_frames >= 2, "{c:?}");
}
