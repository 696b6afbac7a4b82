//! AF_XDP port against the Linux kernel over veth, with no IP stack: raw frames both ways.
//!
//! Run as root (CI is root and has AF_XDP); without root or AF_XDP each test prints SKIPPED and
//! returns. Every loop is bounded in count and time; namespaces are removed on drop.

#![cfg(feature = "xdp")]

mod xdp_common;

use cnet_drivers::xdp::{
    AttachMode, BindMode, BusyPoll, HugePages, XdpConfig, XdpError, XdpPort, XskMapSource,
    XskProgram,
};
use cnet_drivers::Port;
use cnet_stack::{Batch, Instant, Pool};
use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;
use xdp_common::*;

const TIMEOUT: Duration = Duration::from_secs(5);

fn small(mut cfg: XdpConfig) -> XdpConfig {
    cfg.frames = 1024;
    cfg.rings.rx = 512;
    cfg.rings.tx = 512;
    cfg.rings.fill = 512;
    cfg.rings.comp = 512;
    cfg.huge_pages = HugePages::Never;
    cfg
}

fn check_accounting(port: &XdpPort, pool: &Pool) {
    assert_eq!(
        pool.available() + port.frames_held(),
        pool.capacity(),
        "frame accounting: pool {} + port {} != {}",
        pool.available(),
        port.frames_held(),
        pool.capacity()
    );
    assert_eq!(pool.stats().double_frees, 0);
}

/// Receives until `want` UDP datagrams to `dport` arrived (or the timeout); returns their payloads.
/// Every frame is given back to the pool.
fn receive_udp(port: &mut XdpPort, pool: &mut Pool, dport: u16, want: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut batch = Batch::new();
    until(TIMEOUT, || {
        port.rx_burst(pool, &mut batch, Instant::ZERO)
            .expect("rx_burst");
        for f in batch.drain() {
            if let Some(u) = parse_udp(pool.data(&f)) {
                if u.dport == dport {
                    assert!(
                        u.ip_csum_ok && u.udp_csum_ok,
                        "checksums of a kernel-sent frame"
                    );
                    got.push(u.payload);
                }
            }
            pool.free(f);
        }
        got.len() >= want
    });
    got
}

/// The kernel side sends, the port receives every payload, accounting holds.
fn rx_case(cfg: XdpConfig, tag: &str) {
    let net = NetPair::new(1);
    let (mut port, mut pool) = {
        let _ns = net.enter_a();
        XdpPort::open(&cfg, 0).expect("open")
    };
    assert_eq!(port.info().mac.0, MAC_A);
    assert!(!port.mode().zero_copy, "veth has no zero-copy");
    // Lend frames to the kernel before traffic starts.
    let mut b = Batch::new();
    port.rx_burst(&mut pool, &mut b, Instant::ZERO).unwrap();
    b.free_all(&mut pool);
    let sent = net.send_udp(9000, 200, 4, tag);
    let got = receive_udp(&mut port, &mut pool, 9000, sent.len());
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut sent_sorted = sent.clone();
    sent_sorted.sort();
    assert_eq!(
        got_sorted, sent_sorted,
        "every datagram received once, intact"
    );
    check_accounting(&port, &pool);
    let k = port.kernel_stats().expect("stats");
    assert_eq!(k.rx_invalid_descs, 0);
    let c = port.counters();
    assert!(c.rx_frames >= 200);
    eprintln!(
        "{tag}: mode {:?}, counters {c:?}, kernel {k:?}",
        port.mode()
    );
}

#[test]
fn receives_native_copy_need_wakeup() {
    require_root!();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.attach_mode = AttachMode::Native;
    cfg.bind_mode = BindMode::Copy;
    cfg.need_wakeup = true;
    rx_case(cfg, "native-nw");
}

#[test]
fn receives_native_copy_without_need_wakeup() {
    require_root!();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.attach_mode = AttachMode::Native;
    cfg.bind_mode = BindMode::Copy;
    cfg.need_wakeup = false;
    rx_case(cfg, "native-nonw");
}

#[test]
fn receives_generic_copy_need_wakeup_and_off() {
    require_root!();
    for nw in [true, false] {
        let mut cfg = small(XdpConfig::new("va"));
        cfg.attach_mode = AttachMode::Generic;
        cfg.bind_mode = BindMode::Copy;
        cfg.need_wakeup = nw;
        rx_case(cfg, if nw { "generic-nw" } else { "generic-nonw" });
    }
}

#[test]
fn receives_with_busy_polling() {
    require_root!();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.busy_poll = Some(BusyPoll::default());
    rx_case(cfg, "busy-poll");
}

/// The port sends hand-built UDP frames; a kernel socket receives them.
fn tx_case(cfg: XdpConfig) {
    let net = NetPair::new(1);
    let (mut port, mut pool) = {
        let _ns = net.enter_a();
        XdpPort::open(&cfg, 0).expect("open")
    };
    // Kernel side socket, bound before anything is sent.
    let sock = net
        .in_b(|| {
            let s = UdpSocket::bind(SocketAddrV4::new(IP_B, 7000)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .join()
        .unwrap();
    // Send in small bursts and read between them, so the kernel socket's buffer never overflows.
    sock.set_nonblocking(true).unwrap();
    let n = 300;
    let mut batch = Batch::new();
    let mut queued = 0;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    until(TIMEOUT, || {
        while queued < n && batch.len() < 16 {
            let payload = format!("tx-{queued:05}");
            let frame = udp_frame(MAC_A, MAC_B, IP_A, IP_B, 5555, 7000, payload.as_bytes());
            let f = pool.alloc_from(&frame).expect("pool frame");
            batch.push(f).unwrap();
            queued += 1;
        }
        port.tx_burst(&mut pool, &mut batch, Instant::ZERO)
            .expect("tx_burst");
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            assert_eq!(
                from,
                std::net::SocketAddr::V4(SocketAddrV4::new(IP_A, 5555))
            );
            got.push(buf[..len].to_vec());
        }
        got.len() == n
    });
    assert!(batch.is_empty(), "all frames taken by the TX ring");
    assert_eq!(got.len(), n, "kernel received every frame");
    assert_eq!(got[0], b"tx-00000");
    // Completions: every frame back in the pool.
    assert!(until(TIMEOUT, || {
        port.reclaim(&mut pool);
        port.counters().tx_completed == n as u64
    }));
    let mut b = Batch::new();
    port.rx_burst(&mut pool, &mut b, Instant::ZERO).unwrap();
    b.free_all(&mut pool);
    check_accounting(&port, &pool);
    assert_eq!(port.kernel_stats().unwrap().tx_invalid_descs, 0);
    eprintln!("tx: mode {:?}, counters {:?}", port.mode(), port.counters());
}

#[test]
fn transmits_native_copy_need_wakeup() {
    require_root!();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.attach_mode = AttachMode::Native;
    cfg.bind_mode = BindMode::Copy;
    tx_case(cfg);
}

#[test]
fn transmits_generic_copy_without_need_wakeup() {
    require_root!();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.attach_mode = AttachMode::Generic;
    cfg.bind_mode = BindMode::Copy;
    cfg.need_wakeup = false;
    tx_case(cfg);
}

#[test]
fn zero_copy_on_veth_falls_back_in_auto_and_fails_when_required() {
    require_root!();
    let net = NetPair::new(1);
    let _ns = net.enter_a();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.bind_mode = BindMode::ZeroCopy;
    match XdpPort::open(&cfg, 0) {
        Err(XdpError::ZeroCopyUnsupported { ifname, queue }) => {
            assert_eq!((ifname.as_str(), queue), ("va", 0));
        }
        other => panic!("expected ZeroCopyUnsupported, got {other:?}"),
    }
    cfg.bind_mode = BindMode::Auto;
    let (port, pool) = XdpPort::open(&cfg, 0).expect("auto falls back to copy");
    assert!(!port.mode().zero_copy);
    assert_eq!(port.mode().attach, Some(AttachMode::Native));
    check_accounting(&port, &pool);
}

#[test]
fn self_loaded_program_is_detached_on_drop() {
    require_root!();
    let net = NetPair::new(1);
    let _ns = net.enter_a();
    let cfg = small(XdpConfig::new("va"));
    let (port, pool) = XdpPort::open(&cfg, 0).expect("open");
    assert!(
        net.ip_a(&["link", "show", "va"]).contains("xdp"),
        "program attached"
    );
    drop(port);
    drop(pool);
    assert!(
        !net.ip_a(&["link", "show", "va"]).contains("xdp"),
        "program detached on drop"
    );
}

#[test]
fn huge_pages_required_without_reservation_is_an_error() {
    require_root!();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = meminfo
        .lines()
        .find(|l| l.starts_with("HugePages_Free:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let net = NetPair::new(1);
    let _ns = net.enter_a();
    let mut cfg = small(XdpConfig::new("va"));
    cfg.huge_pages = HugePages::Required;
    match XdpPort::open(&cfg, 0) {
        Err(XdpError::HugePages { .. }) if free == 0 => {}
        Ok((port, _pool)) if free > 0 => assert!(port.mode().huge_pages),
        other => panic!("huge pages free {free}: unexpected {other:?}"),
    }
    // IfAvailable falls back.
    cfg.huge_pages = HugePages::IfAvailable;
    let (port, _pool) = XdpPort::open(&cfg, 0).expect("fallback to 4 KiB pages");
    assert_eq!(port.mode().huge_pages, free > 0);
}

#[test]
fn two_queues_share_one_umem_and_each_gets_traffic() {
    require_root!();
    let net = NetPair::new(2);
    let mut cfg = small(XdpConfig::new("va"));
    cfg.queues = vec![0, 1];
    cfg.shared_umem = true;
    let mut ports = {
        let _ns = net.enter_a();
        XdpPort::open_all(&cfg).expect("open_all")
    };
    assert_eq!(ports.len(), 2);
    let mut b = Batch::new();
    for (p, pool) in ports.iter_mut() {
        p.rx_burst(pool, &mut b, Instant::ZERO).unwrap();
        b.free_all(pool);
    }
    // Many flows so the sender's TX queue choice (hence veth's RX queue) spreads over both.
    let sent = net.send_udp(9100, 400, 32, "mq");
    let mut per_queue = [0usize; 2];
    let mut all = Vec::new();
    until(TIMEOUT, || {
        for (i, (p, pool)) in ports.iter_mut().enumerate() {
            p.rx_burst(pool, &mut b, Instant::ZERO).unwrap();
            for f in b.drain() {
                if let Some(u) = parse_udp(pool.data(&f)) {
                    if u.dport == 9100 {
                        per_queue[i] += 1;
                        all.push(u.payload);
                    }
                }
                pool.free(f);
            }
        }
        all.len() >= sent.len()
    });
    all.sort();
    let mut sent = sent;
    sent.sort();
    assert_eq!(
        all, sent,
        "every datagram received once over the two queues"
    );
    assert!(
        per_queue[0] > 0 && per_queue[1] > 0,
        "both queues got traffic: {per_queue:?}"
    );
    for (p, pool) in &ports {
        assert_eq!(p.counters().bad_descs, 0);
        check_accounting(p, pool);
    }
    eprintln!("per queue: {per_queue:?}");
    // Each queue can also transmit from its own range.
    let sock = net
        .in_b(|| {
            let s = UdpSocket::bind(SocketAddrV4::new(IP_B, 7100)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .join()
        .unwrap();
    for (i, (p, pool)) in ports.iter_mut().enumerate() {
        let frame = udp_frame(
            MAC_A,
            MAC_B,
            IP_A,
            IP_B,
            5000 + i as u16,
            7100,
            b"from-queue",
        );
        b.push(pool.alloc_from(&frame).unwrap()).unwrap();
        assert_eq!(p.tx_burst(pool, &mut b, Instant::ZERO).unwrap(), 1);
    }
    let mut buf = [0u8; 64];
    let mut from = Vec::new();
    until(TIMEOUT, || {
        if let Ok((_, a)) = sock.recv_from(&mut buf) {
            from.push(a.port());
        }
        from.len() == 2
    });
    from.sort();
    assert_eq!(from, vec![5000, 5001]);
    for (p, pool) in ports.iter_mut() {
        assert!(until(TIMEOUT, || {
            p.reclaim(pool);
            p.counters().tx_completed == 1
        }));
        check_accounting(p, pool);
    }
}

#[test]
fn two_queues_with_separate_umems() {
    require_root!();
    let net = NetPair::new(2);
    let mut cfg = small(XdpConfig::new("va"));
    cfg.queues = vec![0, 1];
    cfg.shared_umem = false;
    let mut ports = {
        let _ns = net.enter_a();
        XdpPort::open_all(&cfg).expect("open_all")
    };
    // No rx_burst before traffic: the ports lent their fill rings at open.
    for (p, pool) in &ports {
        assert!(p.frames_held() > 0);
        check_accounting(p, pool);
    }
    let sent = net.send_udp(9200, 200, 32, "sep");
    let mut total = 0;
    let mut per_queue = [0usize; 2];
    let mut b = Batch::new();
    until(TIMEOUT, || {
        for (i, (p, pool)) in ports.iter_mut().enumerate() {
            p.rx_burst(pool, &mut b, Instant::ZERO).unwrap();
            for f in b.drain() {
                if parse_udp(pool.data(&f)).is_some_and(|u| u.dport == 9200) {
                    per_queue[i] += 1;
                    total += 1;
                }
                pool.free(f);
            }
        }
        total >= sent.len()
    });
    assert_eq!(total, sent.len());
    assert!(
        per_queue[0] > 0 && per_queue[1] > 0,
        "both queues got traffic: {per_queue:?}"
    );
    for (p, pool) in &ports {
        check_accounting(p, pool);
    }
}

/// The privileged part loads the program and hands the XSKMAP fd over; the port is created with
/// program loading inhibited and inserts itself.
#[test]
fn external_xskmap_fd() {
    require_root!();
    let net = NetPair::new(1);
    let _ns = net.enter_a();
    let prog = XskProgram::load("va").expect("load default program");
    let mut cfg = small(XdpConfig::new("va"));
    cfg.map_source = XskMapSource::Fd(prog.clone_map_fd().unwrap());
    let (mut port, mut pool) = XdpPort::open(&cfg, 0).expect("open with external map");
    assert_eq!(port.mode().attach, None, "program not loaded by the port");
    let mut b = Batch::new();
    port.rx_burst(&mut pool, &mut b, Instant::ZERO).unwrap();
    let sent = net.send_udp(9300, 100, 2, "extfd");
    let got = receive_udp(&mut port, &mut pool, 9300, sent.len());
    assert_eq!(got.len(), sent.len());
    check_accounting(&port, &pool);
    drop(port);
    // The program stays until its owner lets go.
    assert!(net.ip_a(&["link", "show", "va"]).contains("xdp"));
    prog.detach().expect("detach");
    assert!(!net.ip_a(&["link", "show", "va"]).contains("xdp"));
}

/// As above through a pin in bpffs (`bpf_obj_get`).
#[test]
fn pinned_xskmap() {
    require_root!();
    let bpffs = std::path::Path::new("/sys/fs/bpf");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        let ok = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED pinned_xskmap: cannot mount bpffs on /sys/fs/bpf");
            return;
        }
    }
    let net = NetPair::new(1);
    let _ns = net.enter_a();
    let pin = bpffs.join(format!("cnet_test_{}_xsks_map", std::process::id()));
    let mut prog = XskProgram::load("va").expect("load default program");
    prog.pin(&pin).expect("pin");
    let mut cfg = small(XdpConfig::new("va"));
    cfg.map_source = XskMapSource::Pinned(pin.clone());
    let (mut port, mut pool) = XdpPort::open(&cfg, 0).expect("open with pinned map");
    let mut b = Batch::new();
    port.rx_burst(&mut pool, &mut b, Instant::ZERO).unwrap();
    let sent = net.send_udp(9400, 100, 2, "pinned");
    let got = receive_udp(&mut port, &mut pool, 9400, sent.len());
    assert_eq!(got.len(), sent.len());
    check_accounting(&port, &pool);
    drop(port);
    drop(prog);
    assert!(!pin.exists(), "pin removed with the program");
    // A missing pin is a clear error.
    cfg.map_source = XskMapSource::Pinned(pin.clone());
    assert!(matches!(
        XdpPort::open(&cfg, 0),
        Err(XdpError::PinnedMap { .. })
    ));
}

#[test]
fn missing_interface_is_a_typed_error() {
    require_root!();
    let cfg = small(XdpConfig::new("nosuchdev0"));
    assert!(matches!(
        XdpPort::open(&cfg, 0),
        Err(XdpError::NoSuchInterface { .. })
    ));
}
