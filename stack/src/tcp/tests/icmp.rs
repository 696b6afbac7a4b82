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

/// IPv4 flags of a frame: (DF, MF).
fn df_mf(f: &[u8]) -> (bool, bool) {
    (f[20] & 0x40 != 0, f[20] & 0x20 != 0)
}

#[test]
fn segments_leave_with_df_set_and_a_smaller_link_mtu_lowers_the_mss_instead_of_fragmenting() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(1460), p.now).unwrap();
    let frames = feed(&mut p.s, &[], p.now);
    assert_eq!(frames.len(), 1);
    assert_eq!(df_mf(&frames[0]), (true, false), "RFC 1191 3: TCP sets DF");
    // The link's MTU shrinks under the connection: the next full segment does not fit.
    p.s.apply_config(
        ConfigEvent::Link {
            up: true,
            mtu: 1000,
            mac: MAC_A,
        },
        p.now,
    );
    p.ack = p.ack.wrapping_add(1460);
    p.send(&[p.seg(ACK, b"")]);
    p.s.tcp_send_slice(h, &pattern(2920), p.now).unwrap();
    let frames = feed(&mut p.s, &[], p.now);
    assert_eq!(
        p.s.counters().drops(DropReason::NeedFragmentation),
        1,
        "dropped at IP, not fragmented"
    );
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 960);
    assert!(frames.iter().all(|f| df_mf(f) == (true, false)));
    let segs = parse_out(frames);
    let total: usize = segs.iter().map(|s| s.data.len()).sum();
    assert_eq!(total, 2920, "{segs:?}");
    assert!(segs.iter().all(|s| s.data.len() <= 960));
    assert_eq!(segs[0].seq, p.ack);
}

#[test]
fn without_mtu_probing_repeated_rtos_keep_the_mss() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(1460), p.now).unwrap();
    assert_eq!(p.poll()[0].data.len(), 1460);
    let out = p.advance(7000);
    assert!(out.len() >= 5 && out.iter().all(|s| s.data.len() == 1460));
    assert_eq!(p.s.counters().get(Event::TcpMtuBlackholes), 0);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 1460);
}

#[test]
fn a_small_segment_left_unacknowledged_is_no_black_hole() {
    let mut p = Peer::with(|c| c.tcp_mtu_probing = true);
    let h = p.accept();
    p.s.tcp_send_slice(h, b"hello", p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    // The peer stopped ACKing: smaller segments cannot help, nor may more frames be pinned.
    let out = p.advance(7000);
    assert!(out.len() >= 5 && out.iter().all(|s| s.data == b"hello"));
    assert_eq!(p.s.counters().get(Event::TcpMtuBlackholes), 0);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 1460);
}

#[test]
fn repeated_rtos_suspect_a_pmtu_black_hole_and_retransmit_smaller() {
    let mut p = Peer::with(|c| c.tcp_mtu_probing = true);
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(1460), p.now).unwrap();
    let first = p.poll();
    assert_eq!(first[0].data.len(), 1460);
    // RTOs at 200, 600, 1400 ms: the first two resend the full segment, the third (Linux
    // tcp_retries1) splits it at MSS 1024.
    let out = p.advance(1000);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|s| s.data.len() == 1460));
    let out = p.advance(500);
    assert_eq!(p.s.counters().get(Event::TcpMtuBlackholes), 1);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 1024);
    assert_eq!(out.len(), 1, "cwnd is one segment after an RTO");
    assert_eq!((out[0].seq, out[0].data.len()), (first[0].seq, 1024));
    // The next RTO halves again, down to the 552-byte floor (512 bytes of payload).
    let _ = p.advance(1700);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 512);
    let _ = p.advance(3300);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 512, "floor");
    // The small segments get through: the connection recovers.
    p.ack = first[0].seq + 1460;
    p.send(&[p.seg(ACK, b"")]);
    assert_eq!(p.s.tcp_info(h).unwrap().unacked, 0);
}

#[test]
fn a_forged_tiny_mtu_is_clamped_to_552() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(1460), p.now).unwrap();
    let out = p.poll();
    let e = icmp_error(types::DEST_UNREACHABLE, codes::FRAG_NEEDED, 68, &out[0], &p);
    feed(&mut p.s, &[e], p.now);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 512, "RFC 5927 7.2");
}
