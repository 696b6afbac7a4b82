//! Every kind of malformed frame is dropped with its reason; none panics or leaks a frame.

use super::*;
use crate::counters::DropReason;
use crate::wire::{checksum, PROTO_ICMP, PROTO_UDP};

fn fresh_with_socket() -> (Stack, crate::udp::UdpHandle) {
    let mut s = stack(MAC_A, IP_A, 64);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let h = s.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    (s, h)
}

fn fresh() -> Stack {
    fresh_with_socket().0
}

/// Frames the stack holds never exceed its bounds (reassembly: a quarter of the pool; packets
/// waiting for ARP: an eighth), so the next burst always finds frames.
fn assert_pool_not_starved(s: &Stack) {
    assert!(
        s.frames_held() <= 64 / 4 + 64 / 8,
        "stack holds {} frames",
        s.frames_held()
    );
}

fn check(frame: Vec<u8>, reason: DropReason) {
    let mut s = fresh();
    let out = feed(&mut s, &[frame], Instant::ZERO);
    assert!(out.is_empty(), "{reason:?}: nothing is sent");
    assert_eq!(
        s.counters().drops(reason),
        1,
        "{reason:?}: {:?}",
        s.counters()
    );
    assert_eq!(s.counters().total_drops(), 1);
    assert_eq!(s.pool().available(), 64);
}

fn udp_ok() -> Vec<u8> {
    ipv4_frame(PROTO_UDP, &[0, 9, 0, 7, 0, 8, 0, 0], IP_B, IP_A)
}

#[test]
fn truncated_and_foreign_ethernet() {
    check(vec![0; 13], DropReason::EthTruncated);
    let mut f = udp_ok();
    f[0] = 0x04;
    check(f, DropReason::EthOtherHost);
    let mut f = udp_ok();
    f[12] = 0x86;
    f[13] = 0xdd;
    check(f, DropReason::EthUnknownType);
}

#[test]
fn every_bad_ipv4_header() {
    check(udp_ok()[..30].to_vec(), DropReason::Ipv4Truncated);
    let mut f = udp_ok();
    f[14] = 0x65;
    check(f, DropReason::Ipv4BadVersion);
    let mut f = udp_ok();
    f[14] = 0x43;
    check(f, DropReason::Ipv4BadHeaderLen);
    let mut f = udp_ok();
    f[24] ^= 0xff;
    check(f, DropReason::Ipv4BadChecksum);
    let fix = |f: &mut Vec<u8>| {
        f[24] = 0;
        f[25] = 0;
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
    };
    let mut f = udp_ok();
    f[17] = 200;
    fix(&mut f);
    check(f, DropReason::Ipv4Truncated);
    let mut f = udp_ok();
    f[16] = 0;
    f[17] = 10;
    fix(&mut f);
    check(f, DropReason::Ipv4BadTotalLen);
    let mut f = udp_ok();
    f[22] = 0;
    fix(&mut f);
    check(f, DropReason::Ipv4TtlZero);
    check(
        ipv4_frame(PROTO_UDP, &[0; 8], Ipv4Addr::BROADCAST, IP_A),
        DropReason::Ipv4BadSource,
    );
    check(
        ipv4_frame(PROTO_UDP, &[0; 8], IP_A, IP_A),
        DropReason::Ipv4BadSource,
    );
    check(
        ipv4_frame(PROTO_UDP, &[0; 8], IP_B, Ipv4Addr::new(198, 18, 0, 3)),
        DropReason::Ipv4NotForUs,
    );
}

#[test]
fn bad_udp_and_icmp() {
    check(
        ipv4_frame(PROTO_UDP, &[0, 9, 0, 7], IP_B, IP_A),
        DropReason::UdpMalformed,
    );
    check(
        ipv4_frame(PROTO_UDP, &[0, 9, 0, 7, 0, 4, 0, 0], IP_B, IP_A),
        DropReason::UdpMalformed,
    );
    check(
        ipv4_frame(PROTO_UDP, &[0, 9, 0, 7, 0, 9, 0, 0], IP_B, IP_A),
        DropReason::UdpMalformed,
    );
    check(
        ipv4_frame(PROTO_ICMP, &[8, 0, 0], IP_B, IP_A),
        DropReason::IcmpMalformed,
    );
    check(
        ipv4_frame(PROTO_ICMP, &[8, 0, 0, 0, 0, 0, 0, 0], IP_B, IP_A),
        DropReason::IcmpMalformed,
    );
    // A well-formed ICMP error quoting a header too short to name a socket.
    let mut e = vec![3, 3, 0, 0, 0, 0, 0, 0, 0x45, 0, 0];
    let c = checksum::checksum(&e);
    e[2..4].copy_from_slice(&c.to_be_bytes());
    check(
        ipv4_frame(PROTO_ICMP, &e, IP_B, IP_A),
        DropReason::IcmpMalformed,
    );
}

#[test]
fn bad_fragments() {
    // MF set with a payload that is not a multiple of 8.
    let mut f = ipv4_frame(PROTO_UDP, &[0; 13], IP_B, IP_A);
    f[20] = 0x20;
    f[24] = 0;
    f[25] = 0;
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    check(f, DropReason::FragMalformed);
}

#[test]
fn pseudo_random_garbage_never_panics_or_leaks() {
    let (mut s, h) = fresh_with_socket();
    let mut x = 0x9e37_79b9u32;
    let base = udp_ok();
    for round in 0..2000 {
        let mut f = base.clone();
        let flips = 1 + round % 5;
        for _ in 0..flips {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % f.len();
            f[i] ^= (x >> 24) as u8 | 1;
        }
        if round % 7 == 0 {
            f.truncate(x as usize % f.len());
        }
        let _ = feed(&mut s, &[f], Instant::from_millis(round as u64));
        while let Some(d) = s.udp_recv(h) {
            s.pool_mut().free(d.frame);
        }
        assert_pool_not_starved(&s);
    }
    s.release_all();
    assert_eq!(s.pool().available(), 64);
}
