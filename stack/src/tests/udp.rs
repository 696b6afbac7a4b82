use super::*;
use crate::counters::{DropReason, Event};
use crate::stack::{BindError, SendError};
use crate::wire::UDP_HEADROOM;
use core::net::SocketAddrV4;

#[test]
fn zero_copy_echo_reuses_the_received_frame() {
    let mut p = Pair::new();
    let hb = p.b.udp_bind("198.18.0.2:7".parse().unwrap()).unwrap();
    let ha = p.a.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    let local = p.a.udp_local_addr(ha).unwrap();
    assert!(local.port() >= crate::udp::EPHEMERAL_FIRST);
    let f = p.a.udp_alloc().unwrap();
    assert!(p.a.pool().headroom_of(&f) >= UDP_HEADROOM);
    p.a.pool_mut()
        .push_back(&f, 5)
        .unwrap()
        .copy_from_slice(b"hello");
    p.a.udp_send(ha, f, "198.18.0.2:7".parse().unwrap(), p.now)
        .unwrap();
    p.settle();
    let d = p.b.udp_recv(hb).unwrap();
    assert_eq!(d.src, core::net::SocketAddrV4::new(IP_A, local.port()));
    let idx = d.frame.index();
    p.b.udp_send(hb, d.frame, d.src, p.now).unwrap();
    let mut out = Batch::new();
    p.b.poll_tx(&mut out, p.now);
    assert_eq!(
        out.iter().next().unwrap().index(),
        idx,
        "reply leaves from the same frame"
    );
    for f in out.drain() {
        let bytes = p.b.pool().data(&f).to_vec();
        p.b.pool_mut().free(f);
        let g = p.a.pool_mut().alloc_from(&bytes).unwrap();
        let mut rx = Batch::new();
        rx.push(g).unwrap();
        p.a.process_rx(&mut rx, p.now);
    }
    let back = p.a.udp_recv(ha).unwrap();
    assert_eq!(p.a.pool().data(&back.frame), b"hello");
    p.a.pool_mut().free(back.frame);
    p.assert_no_leak();
}

#[test]
fn bind_rules_and_stale_handles() {
    let mut s = stack(MAC_A, IP_A, 16);
    let h = s.udp_bind("198.18.0.1:53".parse().unwrap()).unwrap();
    assert_eq!(
        s.udp_bind("198.18.0.1:53".parse().unwrap()),
        Err(BindError::AddrInUse)
    );
    assert_eq!(
        s.udp_bind("0.0.0.0:53".parse().unwrap()),
        Err(BindError::AddrInUse)
    );
    assert_eq!(
        s.udp_bind("198.18.9.9:53".parse().unwrap()),
        Err(BindError::AddrNotAvailable)
    );
    s.udp_close(h);
    let h2 = s.udp_bind("0.0.0.0:53".parse().unwrap()).unwrap();
    assert!(s.udp_recv(h).is_none());
    assert_eq!(
        s.udp_send_slice(h, b"x", "198.18.0.2:1".parse().unwrap(), Instant::ZERO),
        Err(crate::stack::SendError::InvalidHandle)
    );
    assert!(s.udp_local_addr(h2).is_some());
}

#[test]
fn bad_checksum_is_dropped_and_zero_checksum_accepted() {
    let mut s = stack(MAC_A, IP_A, 16);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let h = s.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    let mut udp = vec![
        0x30, 0x39, 0x00, 0x07, 0, 12, 0x12, 0x34, b'a', b'b', b'c', b'd',
    ];
    feed(
        &mut s,
        &[ipv4_frame(crate::wire::PROTO_UDP, &udp, IP_B, IP_A)],
        Instant::ZERO,
    );
    assert_eq!(s.counters().drops(DropReason::UdpBadChecksum), 1);
    udp[6] = 0;
    udp[7] = 0;
    feed(
        &mut s,
        &[ipv4_frame(crate::wire::PROTO_UDP, &udp, IP_B, IP_A)],
        Instant::ZERO,
    );
    let d = s.udp_recv(h).unwrap();
    assert_eq!(s.pool().data(&d.frame), b"abcd");
    s.pool_mut().free(d.frame);
    assert_eq!(s.counters().get(Event::UdpDelivered), 1);
}

#[test]
fn full_receive_queue_drops_and_counts() {
    let mut p = pair_with_small_b(4);
    let hb = p.b.udp_bind("0.0.0.0:9".parse().unwrap()).unwrap();
    let ha = p.a.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    for _ in 0..10 {
        p.a.udp_send_slice(ha, b"x", "198.18.0.2:9".parse().unwrap(), p.now)
            .unwrap();
    }
    p.settle();
    assert_eq!(p.b.udp_pending(hb), 4);
    assert_eq!(p.b.counters().drops(DropReason::UdpQueueFull), 6);
    let mut v = Vec::new();
    assert_eq!(p.b.udp_recv_batch(hb, &mut v, 64), 4);
    for d in v {
        p.b.pool_mut().free(d.frame);
    }
    p.assert_no_leak();
}

#[test]
fn an_unread_socket_queues_a_shallow_queue_then_stops_at_the_receive_floor() {
    // 64 frames: the floor is 16 free. Nobody reads port 9.
    let mut p = pair_with_small_b(1024);
    assert_eq!(p.b.rx_floor(), 16);
    let hb = p.b.udp_bind("0.0.0.0:9".parse().unwrap()).unwrap();
    let ha = p.a.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    for _ in 0..100 {
        p.a.udp_send_slice(ha, b"x", "198.18.0.2:9".parse().unwrap(), p.now)
            .unwrap();
        p.settle();
    }
    let queued = p.b.udp_pending(hb);
    assert!(
        queued >= crate::udp::UDP_SHALLOW_QUEUE,
        "a shallow queue always: {queued}"
    );
    assert!(
        p.b.pool().available() + 1 >= p.b.rx_floor(),
        "the floor held"
    );
    let dropped = p.b.counters().drops(DropReason::UdpRcvMemory);
    assert_eq!(queued as u64 + dropped, 100);
    assert!(dropped > 0);
    let mut v = Vec::new();
    p.b.udp_recv_batch(hb, &mut v, 1024);
    for d in v {
        p.b.pool_mut().free(d.frame);
    }
    p.assert_no_leak();
}

/// A pair whose B has a pool of 64 frames and UDP queues of `udp_rx_queue` datagrams.
fn pair_with_small_b(udp_rx_queue: usize) -> Pair {
    let mut cfg = StackConfig::new(MAC_B);
    cfg.udp_rx_queue = udp_rx_queue;
    let mut b = Stack::new(cfg, Pool::new(64, 2048, 192).unwrap());
    b.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: IP_B,
            prefix_len: 24,
        }),
        Instant::ZERO,
    );
    let mut p = Pair::new();
    p.b = b;
    p
}

/// A UDP datagram from B:12345 to A:7 with `payload` and checksum field `csum`.
fn udp_datagram(payload: &[u8], csum: u16) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = vec![0x30, 0x39, 0x00, 0x07];
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&csum.to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// The right checksum of [`udp_datagram`] (RFC 768 / RFC 1071).
fn udp_good_checksum(payload: &[u8]) -> u16 {
    use crate::wire::checksum::{fold, pseudo_header, sum};
    let u = udp_datagram(payload, 0);
    let c = !fold(pseudo_header(IP_B, IP_A, crate::wire::PROTO_UDP, u.len() as u32) + sum(&u));
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[test]
fn partial_checksum_is_told_apart_from_a_bad_one_and_accepted_only_when_configured() {
    let payload = b"partial!";
    let partial = crate::wire::checksum::partial(IP_B, IP_A, crate::wire::PROTO_UDP, 16);
    let good = udp_good_checksum(payload);
    assert_ne!(partial, good);
    let frame = |c| {
        ipv4_frame(
            crate::wire::PROTO_UDP,
            &udp_datagram(payload, c),
            IP_B,
            IP_A,
        )
    };

    // Default: the exact pseudo-header sum is a partial checksum, dropped with its own reason;
    // other wrong values (a seeded spread of them) are still bad checksums.
    let mut s = stack(MAC_A, IP_A, 64);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let h = s.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    feed(&mut s, &[frame(partial)], Instant::ZERO);
    assert_eq!(s.counters().drops(DropReason::UdpPartialChecksum), 1);
    assert_eq!(s.counters().drops(DropReason::UdpBadChecksum), 0);
    assert!(s.udp_recv(h).is_none());
    let mut x: u32 = 0x9e37_79b9;
    let mut bad = 0;
    for _ in 0..20 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let c = x as u16;
        if c == 0 || c == good || c == partial {
            continue;
        }
        feed(&mut s, &[frame(c)], Instant::ZERO);
        bad += 1;
    }
    assert!(bad > 15);
    assert_eq!(s.counters().drops(DropReason::UdpBadChecksum), bad);
    assert_eq!(s.counters().drops(DropReason::UdpPartialChecksum), 1);
    assert_eq!(s.counters().get(Event::RxPartialChecksumAccepted), 0);
    feed(&mut s, &[frame(good)], Instant::ZERO);
    let d = s.udp_recv(h).unwrap();
    s.pool_mut().free(d.frame);

    // accept-partial: delivered and counted; a bad checksum is still dropped.
    let mut s = stack_with(MAC_A, IP_A, 64, |c| c.rx_accept_partial_checksum = true);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let h = s.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    feed(
        &mut s,
        &[frame(partial), frame(partial ^ 0x0100)],
        Instant::ZERO,
    );
    let d = s.udp_recv(h).unwrap();
    assert_eq!(s.pool().data(&d.frame), payload);
    s.pool_mut().free(d.frame);
    assert!(s.udp_recv(h).is_none());
    assert_eq!(s.counters().get(Event::RxPartialChecksumAccepted), 1);
    assert_eq!(s.counters().drops(DropReason::UdpBadChecksum), 1);
    assert_eq!(s.counters().drops(DropReason::UdpPartialChecksum), 0);
}

#[test]
fn a_wildcard_socket_answers_from_the_address_it_was_asked_at() {
    let mut p = Pair::new();
    let ip_b2 = Ipv4Addr::new(198, 18, 0, 3);
    p.b.apply_config(
        crate::ConfigEvent::AddrAdd(crate::IfAddr {
            addr: ip_b2,
            prefix_len: 24,
        }),
        p.now,
    );
    p.settle();
    let hb = p.b.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    let ha = p.a.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    let to_b2 = SocketAddrV4::new(ip_b2, 7);
    p.a.udp_send_slice(ha, b"ask", to_b2, p.now).unwrap();
    p.settle();
    let d = p.b.udp_recv(hb).unwrap();
    assert_eq!(d.dst, to_b2, "the datagram tells where it was sent");
    // Plain send: the route's source (the first address), not where the request went.
    p.b.udp_send_slice(hb, b"ask", d.src, p.now).unwrap();
    // send_from the request's destination.
    p.b.udp_send_from(hb, d.frame, *d.dst.ip(), d.src, p.now)
        .unwrap();
    p.settle();
    let first = p.a.udp_recv(ha).unwrap();
    let second = p.a.udp_recv(ha).unwrap();
    assert_eq!(first.src, SocketAddrV4::new(IP_B, 7));
    assert_eq!(second.src, to_b2, "the reply comes from the address asked");
    for f in [first.frame, second.frame] {
        p.a.pool_mut().free(f);
    }
    // Not ours, or not the bound address: refused, the frame freed.
    let f = p.b.udp_alloc().unwrap();
    let not_ours = Ipv4Addr::new(198, 18, 0, 9);
    assert_eq!(
        p.b.udp_send_from(hb, f, not_ours, d.src, p.now),
        Err(SendError::BadSource)
    );
    let hb1 = p.b.udp_bind(SocketAddrV4::new(IP_B, 9)).unwrap();
    let f = p.b.udp_alloc().unwrap();
    assert_eq!(
        p.b.udp_send_from(hb1, f, ip_b2, d.src, p.now),
        Err(SendError::BadSource)
    );
    let f = p.b.udp_alloc().unwrap();
    assert_eq!(p.b.udp_send_from(hb1, f, IP_B, d.src, p.now), Ok(()));
    p.settle();
    let third = p.a.udp_recv(ha).unwrap();
    assert_eq!(third.src, SocketAddrV4::new(IP_B, 9));
    p.a.pool_mut().free(third.frame);
    p.assert_no_leak();
}

/// The receive side remembers the last destination's socket across bursts; a close or a bind
/// forgets it, so a datagram never reaches a socket that was closed, or one that took a closed
/// socket's slot on another port.
#[test]
fn the_remembered_socket_never_outlives_a_close() {
    let datagram = |port: u16| {
        let mut l4 = vec![0, 9, 0, 0, 0, 12, 0, 0, b'p', b'i', b'n', b'g'];
        l4[2..4].copy_from_slice(&port.to_be_bytes());
        ipv4_frame(crate::wire::PROTO_UDP, &l4, IP_B, IP_A)
    };
    let mut s = stack(MAC_A, IP_A, 64);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let h1 = s.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    for _ in 0..2 {
        assert!(feed(&mut s, &[datagram(7)], Instant::ZERO).is_empty());
        let d = s.udp_recv(h1).expect("delivered to the wildcard socket");
        s.pool_mut().free(d.frame);
    }
    s.udp_close(h1);
    let out = feed(&mut s, &[datagram(7)], Instant::ZERO);
    assert_eq!(out.len(), 1, "port unreachable after the close");
    assert_eq!(s.counters().drops(DropReason::UdpNoSocket), 1);
    // A socket on another port takes the closed one's slot: port 7 stays unreachable.
    let h2 = s.udp_bind("198.18.0.1:9".parse().unwrap()).unwrap();
    let _ = feed(&mut s, &[datagram(7)], Instant::ZERO);
    assert_eq!(s.udp_pending(h2), 0);
    assert_eq!(s.counters().drops(DropReason::UdpNoSocket), 2);
    // A specific socket on port 7 gets the next one.
    let h3 = s.udp_bind("198.18.0.1:7".parse().unwrap()).unwrap();
    let _ = feed(&mut s, &[datagram(7)], Instant::ZERO);
    let d = s.udp_recv(h3).expect("delivered to the new socket");
    assert_eq!(d.dst, "198.18.0.1:7".parse::<SocketAddrV4>().unwrap());
    s.pool_mut().free(d.frame);
    assert_eq!(s.counters().get(Event::UdpDelivered), 3);
}
