use super::*;
use crate::counters::{DropReason, Event};
use crate::wire::{checksum, PROTO_ICMP, PROTO_UDP};

#[test]
fn echo_request_is_answered_in_place_with_same_payload() {
    let mut s = stack_knowing_b(16);
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 9, 1, 2, 3, 4, 5];
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let out = feed(
        &mut s,
        &[ipv4_frame(PROTO_ICMP, &icmp, IP_B, IP_A)],
        Instant::ZERO,
    );
    assert_eq!(out.len(), 1);
    let r = &out[0];
    assert_eq!(&r[0..6], &MAC_B.0);
    assert_eq!(&r[26..30], &IP_A.octets());
    assert_eq!(&r[30..34], &IP_B.octets());
    assert_eq!(r[34], 0, "echo reply");
    assert_eq!(&r[38..], &icmp[4..], "identifier, sequence and data echoed");
    assert_eq!(checksum::checksum(&r[34..]), 0);
    assert_eq!(checksum::checksum(&r[14..34]), 0);
    assert_eq!(s.counters().get(Event::IcmpEchoReplies), 1);
    assert_eq!(s.pool().available(), 16);
}

#[test]
fn closed_udp_port_gets_rate_limited_port_unreachable() {
    let mut s = stack_knowing_b(64);
    let udp = [0x30, 0x39, 0x00, 0x07, 0, 12, 0, 0, b'a', b'b', b'c', b'd'];
    let frame = ipv4_frame(PROTO_UDP, &udp, IP_B, IP_A);
    let mut sent = 0;
    for _ in 0..3 {
        let burst: Vec<Vec<u8>> = (0..50).map(|_| frame.clone()).collect();
        let out = feed(&mut s, &burst, Instant::from_millis(10));
        sent += out.len();
        if let Some(e) = out.first() {
            assert_eq!((e[34], e[35]), (3, 3), "port unreachable");
            assert_eq!(&e[42..62], &frame[14..34], "quotes the original header");
            assert_eq!(checksum::checksum(&e[34..]), 0);
        }
    }
    assert_eq!(sent, 100, "100 per second allowed");
    assert_eq!(s.counters().get(Event::IcmpUnreachRateLimited), 50);
    assert_eq!(s.counters().drops(DropReason::UdpNoSocket), 150);
    assert_eq!(
        feed(&mut s, &[frame], Instant::from_millis(1500)).len(),
        1,
        "bucket refills"
    );
}

#[test]
fn port_unreachable_reaches_the_sending_socket() {
    let mut p = Pair::new();
    let h = p.a.udp_bind("0.0.0.0:4000".parse().unwrap()).unwrap();
    p.a.udp_send_slice(h, b"knock", "198.18.0.2:9".parse().unwrap(), p.now)
        .unwrap();
    p.settle();
    let e = p.a.udp_take_error(h).expect("error delivered");
    assert_eq!((e.icmp_type, e.code), (3, 3));
    assert_eq!(e.from, IP_B);
    assert_eq!(e.dst, "198.18.0.2:9".parse().unwrap());
    assert_eq!(p.a.counters().get(Event::IcmpErrorsDelivered), 1);
    p.assert_no_leak();
}

#[test]
fn echo_to_broadcast_is_ignored_and_unknown_protocol_is_refused() {
    let mut s = stack_knowing_b(16);
    let mut icmp = vec![8, 0, 0, 0, 0, 1, 0, 1];
    let c = checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let bcast = Ipv4Addr::new(198, 18, 0, 255);
    assert!(feed(
        &mut s,
        &[ipv4_frame(PROTO_ICMP, &icmp, IP_B, bcast)],
        Instant::ZERO
    )
    .is_empty());
    assert_eq!(s.counters().drops(DropReason::IcmpIgnored), 1);
    let out = feed(
        &mut s,
        &[ipv4_frame(200, b"????????", IP_B, IP_A)],
        Instant::ZERO,
    );
    assert_eq!((out[0][34], out[0][35]), (3, 2), "protocol unreachable");
    assert_eq!(s.counters().drops(DropReason::Ipv4UnknownProtocol), 1);
    assert_eq!(s.pool().available(), 16);
}
