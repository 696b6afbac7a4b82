//! LISTEN, SYN-SENT, SYN-RECEIVED: three-way handshake, options, simultaneous open, failures.

use super::*;

#[test]
fn passive_open_answers_syn_with_synack_carrying_negotiated_options() {
    let mut p = Peer::new();
    let o = SegmentOptions {
        mss: Some(1200),
        wscale: Some(7),
        sack_permitted: true,
        timestamps: Some((555, 0)),
        ..SegmentOptions::default()
    };
    let (h, synack) = p.accept_with(o);
    assert_eq!(synack.opts.mss, Some(1460));
    assert_eq!(
        synack.opts.wscale,
        Some(3),
        "256 KiB receive buffer needs shift 3"
    );
    assert!(synack.opts.sack_permitted);
    assert_eq!(
        synack.opts.timestamps.map(|t| t.1),
        Some(555),
        "TSecr echoes TSval"
    );
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.mss, 1200 - 12, "peer MSS less the timestamp option");
    assert!(info.sack && info.timestamps);
    assert_eq!(info.wscale, Some((7, 3)));
}

#[test]
fn syn_without_options_gets_a_synack_without_them() {
    let mut p = Peer::new();
    let (h, synack) = p.accept_with(SegmentOptions::default());
    assert_eq!(synack.opts.wscale, None);
    assert!(!synack.opts.sack_permitted);
    assert_eq!(synack.opts.timestamps, None);
    assert_eq!(p.s.tcp_info(h).unwrap().mss, 536, "RFC 9293 3.7.1 default");
}

#[test]
fn active_open_sends_syn_and_completes_on_synack() {
    let mut p = Peer::new();
    let h =
        p.s.tcp_connect(
            SocketAddrV4::new(IP_B, B_PORT),
            None,
            TcpOpts::default(),
            p.now,
        )
        .unwrap();
    let out = p.poll();
    assert_eq!(out.len(), 1);
    let syn = &out[0];
    assert_eq!(syn.flags, SYN);
    assert_eq!(syn.opts.mss, Some(1460));
    assert!(syn.opts.sack_permitted && syn.opts.wscale.is_some() && syn.opts.timestamps.is_some());
    assert!(syn.sport >= crate::udp::EPHEMERAL_FIRST);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::SynSent));
    p.port_a = syn.sport;
    let mut synack = S {
        sport: B_PORT,
        dport: syn.sport,
        seq: B_ISN,
        ack: syn.seq + 1,
        flags: SYN | ACK,
        wnd: 1000,
        opts: SegmentOptions {
            mss: Some(1460),
            ..SegmentOptions::default()
        },
        data: vec![],
    };
    p.now = p.now + Duration::from_millis(10);
    let out = p.send(&[synack.clone()]);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].flags, out[0].seq, out[0].ack),
        (ACK, syn.seq + 1, B_ISN + 1)
    );
    assert_eq!(
        out[0].opts.timestamps, None,
        "the peer did not agree to timestamps"
    );
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.srtt, Duration::from_millis(10), "handshake RTT sample");
    // A duplicate SYN-ACK is answered by an ACK (unacceptable segment), nothing else changes.
    synack.wnd = 1000;
    let out = p.send(&[synack]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, ACK);
}

#[test]
fn simultaneous_open_reaches_established_on_both_sides() {
    let mut pair = crate::tests::Pair::new();
    let a_addr = SocketAddrV4::new(IP_A, 5000);
    let b_addr = SocketAddrV4::new(IP_B, 6000);
    let ha = pair
        .a
        .tcp_connect(b_addr, Some(a_addr), TcpOpts::default(), pair.now)
        .unwrap();
    let hb = pair
        .b
        .tcp_connect(a_addr, Some(b_addr), TcpOpts::default(), pair.now)
        .unwrap();
    pair.settle();
    assert_eq!(pair.a.tcp_state(ha), Some(TcpState::Established));
    assert_eq!(pair.b.tcp_state(hb), Some(TcpState::Established));
    let got = pump(&mut pair, ha, hb, b"crossed SYNs", 100);
    assert_eq!(got, b"crossed SYNs");
    pair.a.tcp_close(ha, pair.now);
    pair.b.tcp_close(hb, pair.now);
    pair.advance(Duration::from_secs(61));
    assert_eq!(pair.a.tcp_connections() + pair.b.tcp_connections(), 0);
    pair.assert_no_leak();
}

#[test]
fn syn_to_a_closed_port_is_answered_with_rst_ack() {
    let mut p = Peer::new();
    let out = p.send(&[p.seg(SYN, b"")]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].flags, out[0].seq, out[0].ack),
        (RST | ACK, 0, B_ISN + 1)
    );
    assert_eq!(p.s.counters().drops(DropReason::TcpNoSocket), 1);
    // A RST to a closed port gets nothing back.
    assert!(p.send(&[p.seg(RST, b"")]).is_empty());
}

#[test]
fn syn_is_retransmitted_with_backoff_then_connect_times_out() {
    let mut p = Peer::new();
    let h =
        p.s.tcp_connect(
            SocketAddrV4::new(IP_B, B_PORT),
            None,
            TcpOpts::default(),
            p.now,
        )
        .unwrap();
    assert_eq!(p.poll().len(), 1);
    // 1 s, 2 s, 4 s ... six retransmissions, then the connection fails.
    let mut p = Peer::new();
    let h2 =
        p.s.tcp_connect(
            SocketAddrV4::new(IP_B, B_PORT),
            None,
            TcpOpts::default(),
            p.now,
        )
        .unwrap();
    p.poll();
    let mut at = Vec::new();
    for _ in 0..200 {
        let out = p.advance(1000);
        if !out.is_empty() {
            assert!(out.iter().all(|s| s.flags == SYN));
            at.push(p.now.total_millis() / 1000);
        }
    }
    assert_eq!(at, vec![1, 3, 7, 15, 31, 63]);
    assert_eq!(p.s.tcp_state(h2), Some(TcpState::Closed));
    assert_eq!(p.s.tcp_take_error(h2), Some(TcpError::TimedOut));
    let _ = h;
}

#[test]
fn rst_answering_our_syn_refuses_the_connection() {
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
    p.port_a = syn.sport;
    // A RST without an acceptable ACK is ignored (RFC 5961 3.2 / RFC 9293 3.10.7.3).
    let mut rst = p.seg(RST, b"");
    assert!(p.send(&[rst.clone()]).is_empty());
    assert_eq!(p.s.tcp_state(h), Some(TcpState::SynSent));
    rst.flags = RST | ACK;
    rst.ack = syn.seq + 1;
    p.send(&[rst]);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert_eq!(p.s.tcp_take_error(h), Some(TcpError::Refused));
}
