//! The whole stack, driven by an operation sequence decoded from the input.

use crate::harness::*;
use crate::input::Input;
use crate::stack_tcp::TcpSide;
use cnet_stack::config::InterfaceSnapshot;
use cnet_stack::wire::{ETHERTYPE_ARP, ETHERTYPE_IPV4};
use cnet_stack::{
    Batch, ConfigEvent, Duration, IfAddr, Instant, MacAddr, Neighbor, PingHandle, Pool, Route,
    Stack, StackConfig, UdpHandle, BURST,
};
use core::net::{Ipv4Addr, SocketAddrV4};

/// Addresses the fuzzer picks from (one byte): ours, the peer, a broadcast, a far host, or any.
pub(crate) fn addr(inp: &mut Input<'_>) -> Ipv4Addr {
    match inp.u8() % 8 {
        0 => OUR_IP,
        1 => PEER_IP,
        2 => Ipv4Addr::new(192, 0, 2, 255),
        3 => Ipv4Addr::new(192, 0, 2, 3),
        4 => Ipv4Addr::new(198, 51, 100, 7),
        5 => Ipv4Addr::UNSPECIFIED,
        6 => Ipv4Addr::BROADCAST,
        _ => Ipv4Addr::from(inp.u32()),
    }
}

fn mac(inp: &mut Input<'_>) -> MacAddr {
    match inp.u8() % 4 {
        0 => OUR_MAC,
        1 => PEER_MAC,
        2 => MacAddr([0xff; 6]),
        _ => {
            let b = inp.bytes(6);
            let mut m = [0u8; 6];
            m[..b.len()].copy_from_slice(b);
            MacAddr(m)
        }
    }
}

/// A frame built from a template (valid checksums), then patched: the fuzzer gets past checksums
/// and lengths without the checksum bypass.
fn template(inp: &mut Input<'_>) -> Vec<u8> {
    let kind = inp.u8();
    let len = usize::from(inp.u16()) % 1473;
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let src = if kind & 0x80 != 0 { addr(inp) } else { PEER_IP };
    let dst = if kind & 0x40 != 0 { addr(inp) } else { OUR_IP };
    let mut f = match kind % 6 {
        0 => arp_request_frame(),
        1 => {
            let op = u16::from(inp.u8() % 3);
            let a = arp_packet(op, mac(inp), src, mac(inp), dst);
            eth_frame(mac(inp), PEER_MAC, ETHERTYPE_ARP, &a)
        }
        2 => {
            let seg = udp_segment(src, dst, inp.u16(), inp.u16() % 16, &data);
            let ip = ipv4_packet(src, dst, UDP, inp.u16(), false, 0, &[], &seg);
            eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip)
        }
        3 => {
            let m = icmp_echo(inp.u16() % 4, inp.u16(), &data);
            let ip = ipv4_packet(src, dst, ICMP, inp.u16(), false, 0, &[], &m);
            eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip)
        }
        4 => {
            // A fragment of a UDP or ICMP datagram.
            let ident = u16::from(inp.u8() % 4);
            let off = inp.u16() & 0x1fff;
            let more = off & 1 == 0;
            let proto = if ident & 1 == 0 { UDP } else { ICMP };
            let ip = ipv4_packet(src, dst, proto, ident, more, (off % 64) * 8, &[], &data);
            eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip)
        }
        _ => {
            // An ICMP error quoting a UDP datagram we could have sent.
            let quoted_udp = udp_segment(dst, src, inp.u16() % 16, inp.u16(), &data[..len.min(8)]);
            let quoted = ipv4_packet(dst, src, UDP, 1, false, 0, &[], &quoted_udp);
            let mut m = vec![
                [3, 11, 12][usize::from(inp.u8() % 3)],
                inp.u8() % 5,
                0,
                0,
                0,
                0,
            ];
            m.extend_from_slice(&inp.u16().to_be_bytes());
            m.extend_from_slice(&quoted);
            fix_icmp_checksum(&mut m);
            let ip = ipv4_packet(src, dst, ICMP, 9, false, 0, &[], &m);
            eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip)
        }
    };
    // Patches: (position, xor) pairs.
    for _ in 0..inp.u8() % 4 {
        let pos = usize::from(inp.u16());
        let x = inp.u8();
        if !f.is_empty() {
            let n = f.len();
            f[pos % n] ^= x;
        }
    }
    f
}

fn config_event(inp: &mut Input<'_>) -> ConfigEvent {
    let ifaddr = |inp: &mut Input<'_>| IfAddr {
        addr: addr(inp),
        prefix_len: inp.u8() % 34,
    };
    let route = |inp: &mut Input<'_>| {
        let dst = addr(inp);
        let prefix_len = inp.u8() % 34;
        let gateway = inp.bool().then(|| addr(inp));
        Route {
            dst,
            prefix_len,
            gateway,
            metric: u32::from(inp.u8() % 4),
        }
    };
    let neighbor = |inp: &mut Input<'_>| Neighbor {
        ip: addr(inp),
        mac: mac(inp),
        permanent: inp.bool(),
    };
    match inp.u8() % 9 {
        0 => ConfigEvent::Link {
            up: inp.bool(),
            mtu: usize::from(inp.u16()),
            mac: if inp.bool() { OUR_MAC } else { mac(inp) },
        },
        1 => ConfigEvent::AddrAdd(ifaddr(inp)),
        2 => ConfigEvent::AddrDel(ifaddr(inp)),
        3 => ConfigEvent::RouteAdd(route(inp)),
        4 => ConfigEvent::RouteDel(route(inp)),
        5 => ConfigEvent::NeighborSet(neighbor(inp)),
        6 => ConfigEvent::NeighborDel(addr(inp)),
        7 => {
            let n = usize::from(inp.u8() % 4);
            ConfigEvent::Snapshot(Box::new(InterfaceSnapshot {
                mac: inp.bool().then_some(OUR_MAC),
                mtu: inp.bool().then(|| usize::from(inp.u16())),
                up: !inp.u8().is_multiple_of(4),
                addrs: (0..n).map(|_| ifaddr(inp)).collect(),
                routes: (0..n).map(|_| route(inp)).collect(),
                neighbors: (0..n).map(|_| neighbor(inp)).collect(),
            }))
        }
        _ => ConfigEvent::AddrAdd(IfAddr {
            addr: OUR_IP,
            prefix_len: 24,
        }),
    }
}

/// Limits the stack was built with, for the bound checks.
struct Limits {
    capacity: usize,
    tx_queue: usize,
    reassembly_frames: usize,
    tcp_conns: usize,
}

fn check_invariants(s: &Stack, lim: &Limits, tcp: &TcpSide, now: Instant, app_held: usize) {
    assert_accounted(s, app_held);
    tcp.check(s, lim.tcp_conns);
    assert!(s.tx_pending() <= lim.tx_queue, "tx queue bound");
    assert!(s.neighbors().len() <= 16, "neighbour table bound");
    assert!(
        s.neighbors().queued() <= lim.capacity / 8,
        "frames waiting for ARP stay within an eighth of the pool"
    );
    let _ = lim.reassembly_frames;
    assert!(
        s.poll_timeout().is_none_or(|t| t > now),
        "a timer is still due after poll_tx({now:?}): {:?}",
        s.poll_timeout()
    );
}

/// The whole stack: the first byte sets checksum verification (bit 0 clear: on), the pool size
/// (bits 1-2: 16, 64, 256 or 1024 frames) and tight limits (bit 3); then operations, one byte of
/// opcode each: a frame of raw bytes, a frame from a template with patches, end of burst, time
/// advance (by an amount, or to `poll_timeout`), a configuration event, UDP bind / send (copying
/// or zero copy) / receive / close / take error, ping open / send / receive / close. After every
/// burst the stack's output is drained and the invariants checked: every pool frame is free or
/// held by the stack (the application hands everything back at once), no double free, queues
/// within their bounds, no timer left due after `poll_tx`. At the end everything is released and
/// the pool must be whole.
pub fn stack(data: &[u8]) {
    let mut inp = Input::new(data);
    let head = inp.u8();
    let capacity = [16, 64, 256, 1024][usize::from((head >> 1) & 3)];
    let tight = head & 8 != 0;
    let mut cfg = StackConfig::new(OUR_MAC);
    cfg.rx_checksum = head & 1 == 0;
    cfg.seed = u64::from(head);
    cfg.max_neighbors = 16;
    cfg.tx_queue = if tight { 8 } else { 512 };
    cfg.udp_rx_queue = if tight { 2 } else { 64 };
    cfg.reassembly_max_datagrams = if tight { 2 } else { 16 };
    cfg.reassembly_max_frames = if tight { 4 } else { 512 };
    cfg.arp_queue_per_neighbor = if tight { 1 } else { 8 };
    cfg.icmp_unreach_per_sec = if tight { 1 } else { 100 };
    cfg.tcp_max_connections = if tight { 4 } else { 64 };
    cfg.tcp_syn_backlog = if tight { 2 } else { 16 };
    cfg.tcp_snd_buf = if tight { 8192 } else { 256 * 1024 };
    cfg.tcp_rcv_buf = if tight { 8192 } else { 256 * 1024 };
    if head & 0x20 != 0 {
        cfg.tcp_sack = false;
        cfg.tcp_timestamps = false;
        cfg.tcp_window_scaling = false;
    }
    cfg.tcp_syncookies = head & 0x40 == 0;
    if head & 0x80 != 0 {
        // Short timers, so time steps of the fuzzer reach them.
        cfg.tcp_rto_min_ms = 10;
        cfg.tcp_rto_initial_ms = 50;
        cfg.tcp_rto_max_ms = 2000;
        cfg.tcp_time_wait_ms = 500;
        cfg.tcp_fin_timeout_ms = 500;
        cfg.tcp_keepalive_intvl_s = 1;
        cfg.tcp_keepalive_probes = 2;
        cfg.tcp_challenge_ack_limit = 2;
    }
    let lim = Limits {
        capacity,
        tx_queue: cfg.tx_queue,
        reassembly_frames: cfg.reassembly_max_frames.min(capacity / 4),
        tcp_conns: cfg.tcp_max_connections,
    };
    let mut tcp = TcpSide::new(cfg.tcp_snd_buf.max(65536));
    let pool = Pool::new(capacity, FRAME_SIZE, Pool::DEFAULT_HEADROOM).expect("geometry");
    let mut s = Stack::new(cfg, pool);
    configure(&mut s, head & 16 != 0);
    let mut now = Instant::from_millis(1);
    let mut udp: Vec<UdpHandle> = Vec::new();
    let mut ping: Vec<PingHandle> = Vec::new();
    let mut rx = Batch::new();
    let mut ops = 0;
    while !inp.is_empty() && ops < 4096 {
        ops += 1;
        let op = inp.u8();
        if op & 0x70 == 0x70 {
            // TCP: socket calls, or a segment from the peer.
            if let Some(f) = tcp.op(&mut s, op, &mut inp, now) {
                if let Some(f) = s.pool_mut().alloc_from(&f[..f.len().min(MAX_FRAME)]) {
                    rx.push(f).expect("room in the burst");
                }
            }
        } else {
            match op % 16 {
                0 | 1 => {
                    let len = usize::from(inp.u16()) % (MAX_FRAME + 1);
                    let bytes = inp.bytes(len);
                    if let Some(f) = s.pool_mut().alloc_from(bytes) {
                        // Never full: the burst is processed when it fills.
                        rx.push(f).expect("room in the burst");
                    }
                }
                2..=4 => {
                    let f = template(&mut inp);
                    if let Some(f) = s.pool_mut().alloc_from(&f[..f.len().min(MAX_FRAME)]) {
                        rx.push(f).expect("room in the burst");
                    }
                }
                5 => {
                    now = now + Duration::from_micros(u64::from(inp.u16()) * 1000);
                }
                6 => {
                    if let Some(t) = s.poll_timeout() {
                        now = now.max(t);
                    }
                }
                7 => {
                    let ev = config_event(&mut inp);
                    s.apply_config(ev, now);
                }
                8 => {
                    let a = SocketAddrV4::new(
                        if inp.bool() {
                            Ipv4Addr::UNSPECIFIED
                        } else {
                            addr(&mut inp)
                        },
                        inp.u16() % 16,
                    );
                    if let Ok(h) = s.udp_bind(a) {
                        udp.push(h);
                    }
                }
                9 => {
                    let (Some(&h), len) = (pick(&udp, &mut inp), usize::from(inp.u16())) else {
                        continue;
                    };
                    let dst = SocketAddrV4::new(addr(&mut inp), inp.u16() % 16);
                    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let _ = s.udp_send_slice(h, &payload, dst, now);
                }
                10 => {
                    let Some(&h) = pick(&udp, &mut inp) else {
                        continue;
                    };
                    let len = usize::from(inp.u16()) % 2048;
                    let dst = SocketAddrV4::new(addr(&mut inp), inp.u16() % 16);
                    if let Some(f) = s.udp_alloc() {
                        if let Some(b) = s.pool_mut().push_back(&f, len) {
                            b.fill(0x5a);
                        }
                        let _ = s.udp_send(h, f, dst, now);
                    }
                }
                11 => {
                    let Some(&h) = pick(&udp, &mut inp) else {
                        continue;
                    };
                    let mut got = Vec::new();
                    s.udp_recv_batch(h, &mut got, usize::from(inp.u8()));
                    if let Some(d) = s.udp_recv(h) {
                        got.push(d);
                    }
                    for d in got {
                        assert_eq!(s.pool().chain_len(&d.frame), d.len, "datagram length");
                        s.pool_mut().free(d.frame);
                    }
                    while s.udp_take_error(h).is_some() {}
                }
                12 => {
                    let Some(i) = pick_index(udp.len(), &mut inp) else {
                        continue;
                    };
                    s.udp_close(udp[i]);
                    if inp.bool() {
                        udp.swap_remove(i); // else keep the stale handle: it must stay invalid
                    }
                }
                13 => {
                    if let Ok(h) = s.ping_open(inp.u16() % 4) {
                        ping.push(h);
                    }
                }
                14 => {
                    let Some(&h) = pick(&ping, &mut inp) else {
                        continue;
                    };
                    let dst = addr(&mut inp);
                    let len = usize::from(inp.u16());
                    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                    let _ = s.ping_send(h, dst, inp.u16(), &payload, now);
                }
                _ => {
                    let Some(i) = pick_index(ping.len(), &mut inp) else {
                        continue;
                    };
                    if inp.bool() {
                        s.ping_close(ping.swap_remove(i));
                    } else {
                        while let Some(r) = s.ping_recv(ping[i]) {
                            assert_eq!(s.pool().chain_len(&r.frame), r.len, "reply length");
                            s.pool_mut().free(r.frame);
                        }
                    }
                }
            }
        }
        let end_of_burst = op & 0x80 != 0 || rx.len() == BURST || inp.is_empty();
        if end_of_burst {
            s.process_rx(&mut rx, now);
            assert!(rx.is_empty(), "process_rx consumes the burst");
        }
        // Application calls may queue output too: drain after every operation, as a service
        // loop does after each iteration.
        let out = drain_tx(&mut s, now);
        emitted_ipv4(&out);
        tcp.learn(&out);
        check_invariants(&s, &lim, &tcp, now, rx.len());
    }
    s.process_rx(&mut rx, now);
    now = now + Duration::from_secs(120);
    drain_tx(&mut s, now);
    check_invariants(&s, &lim, &tcp, now, 0);
    assert_no_leak(&mut s);
}

fn pick_index(len: usize, inp: &mut Input<'_>) -> Option<usize> {
    let b = usize::from(inp.u8());
    (len > 0).then(|| b % len)
}

fn pick<'h, T>(v: &'h [T], inp: &mut Input<'_>) -> Option<&'h T> {
    pick_index(v.len(), inp).map(|i| &v[i])
}
