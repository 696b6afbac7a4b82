//! ICMP errors delivered to connections: hard errors in SYN-SENT, PMTU from fragmentation-needed.

use super::*;
use crate::icmp::{codes, types};
use crate::wire::PROTO_ICMP;

/// An ICMP error from B quoting A's segment `quote` (IP header + first 8 bytes).
fn icmp_error(ty: u8, code: u8, mtu: u16, quote: &S, peer: &Peer) -> Vec<u8> {
    let seg = peer.frame(&S {
        sport: quote.sport,
        dport: quote.dport,
        seq: quote.seq,
        ack: quote.ack,
        flags: quote.flags,
        wnd: 0,
        opts: SegmentOptions::default(),
        data: vec![],
    });
    // Re-address the quoted IP header as A -> B.
    let mut ip = seg[14..34 + 8].to_vec();
    ip[12..16].copy_from_slice(&IP_A.octets());
    ip[16..20].copy_from_slice(&IP_B.octets());
    let mut icmp = vec![ty, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&ip);
    let c = crate::wire::checksum::checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(PROTO_ICMP, &icmp, IP_B, IP_A)
}

#[test]
fn port_unreachable_in_syn_sent_fails_the_connect() {
    let mut p = Peer::new();
    let h =
        p.s.tcp_connect(
            SocketAddrV4::new(IP_B, B_PORT),
            None,
            TcpOpts::default(),
            p.now,
        )
        .unwrap();
    let syn = p.poll().remove(0);
    let e = icmp_error(
        types::DEST_UNREACHABLE,
        codes::PORT_UNREACHABLE,
        0,
        &syn,
        &p,
    );
    feed(&mut p.s, &[e], p.now);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert!(matches!(
        p.s.tcp_take_error(h),
        Some(TcpError::Unreachable(_))
    ));
}

#[test]
fn fragmentation_needed_lowers_the_mss_and_resends_smaller_segments() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(2920), p.now).unwrap();
    let out = p.poll();
    assert_eq!(out.len(), 2);
    let e = icmp_error(
        types::DEST_UNREACHABLE,
        codes::FRAG_NEEDED,
        1000,
        &out[0],
        &p,
    );
    let resent = parse_out(feed(&mut p.s, &[e], p.now));
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 960);
    assert!(resent.iter().all(|s| s.data.len() <= 960));
    assert_eq!(resent[0].seq, out[0].seq);
    assert_eq!(p.s.counters().get(Event::TcpPmtuUpdates), 1);
    // A quote whose sequence number is not in flight is ignored (RFC 5927).
    let mut bogus = out[0].clone();
    bogus.seq = bogus.seq.wrapping_sub(100_000);
    let e = icmp_error(types::DEST_UNREACHABLE, codes::FRAG_NEEDED, 600, &bogus, &p);
    feed(&mut p.s, &[e], p.now);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 960);
}
