//! Listeners: SYN queue and SYN cookies under flood, accept-queue bound, TIME-WAIT reuse.

use super::*;

fn syn_from(p: &Peer, port: u16, opts: SegmentOptions) -> S {
    let mut s = p.seg(SYN, b"");
    s.sport = port;
    s.opts = opts;
    s
}

#[test]
fn syn_cookies_take_over_when_the_syn_queue_is_full_and_keep_the_options() {
    let mut p = Peer::with(|c| c.tcp_syn_backlog = 1);
    let l =
        p.s.tcp_listen(SocketAddrV4::new(IP_A, A_PORT), 8, TcpOpts::default())
            .unwrap();
    let o = SegmentOptions {
        mss: Some(1460),
        wscale: Some(5),
        sack_permitted: true,
        timestamps: Some((100, 0)),
        ..SegmentOptions::default()
    };
    assert_eq!(p.send(&[syn_from(&p, 1001, o.clone())]).len(), 1);
    assert_eq!(p.s.tcp_connections(), 1, "in the SYN queue");
    let out = p.send(&[syn_from(&p, 1002, o.clone())]);
    assert_eq!(out.len(), 1);
    let cookie = &out[0];
    assert_eq!(cookie.flags, SYN | ACK);
    assert_eq!(p.s.tcp_connections(), 1, "a cookie SYN-ACK keeps no state");
    assert_eq!(p.s.counters().get(Event::TcpSynCookiesSent), 1);
    let mut ack = syn_from(&p, 1002, SegmentOptions::default());
    ack.flags = ACK;
    ack.seq = B_ISN + 1;
    ack.ack = cookie.seq + 1;
    ack.opts.timestamps = Some((101, cookie.opts.timestamps.unwrap().0));
    assert!(p.send(&[ack]).is_empty());
    assert_eq!(p.s.counters().get(Event::TcpSynCookiesOk), 1);
    let h =
        p.s.tcp_accept(l)
            .expect("the cookie connection is accepted");
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.remote.port(), 1002);
    assert_eq!(
        info.wscale,
        Some((5, 3)),
        "window scale recovered from the timestamp"
    );
    assert!(info.sack && info.timestamps);
}

#[test]
fn a_forged_cookie_is_answered_with_rst() {
    let mut p = Peer::new();
    p.s.tcp_listen(SocketAddrV4::new(IP_A, A_PORT), 8, TcpOpts::default())
        .unwrap();
    let mut ack = p.seg(ACK, b"");
    ack.ack = 12345;
    let out = p.send(&[ack]);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].seq), (RST, 12345));
    assert_eq!(p.s.counters().drops(DropReason::TcpBadCookie), 1);
    assert_eq!(p.s.tcp_connections(), 0);
}

#[test]
fn a_full_accept_queue_drops_syns_until_the_application_accepts() {
    let mut p = Peer::new();
    let l =
        p.s.tcp_listen(SocketAddrV4::new(IP_A, A_PORT), 1, TcpOpts::default())
            .unwrap();
    let out = p.send(&[syn_from(&p, 2001, SegmentOptions::default())]);
    let mut ack = syn_from(&p, 2001, SegmentOptions::default());
    ack.flags = ACK;
    ack.seq = B_ISN + 1;
    ack.ack = out[0].seq + 1;
    p.send(&[ack]);
    assert_eq!(p.s.tcp_accept_pending(l), 1);
    let infos: Vec<_> = p.s.tcp_listeners().collect();
    assert_eq!(
        infos,
        [crate::ListenerInfo {
            local: SocketAddrV4::new(IP_A, A_PORT),
            accept_queue: 1,
            backlog: 1,
            syn_received: 0,
        }],
        "ss -l: one waiting, backlog 1"
    );
    assert!(p
        .send(&[syn_from(&p, 2002, SegmentOptions::default())])
        .is_empty());
    assert_eq!(p.s.counters().drops(DropReason::TcpAcceptQueueFull), 1);
    assert!(p.s.tcp_accept(l).is_some());
    assert_eq!(
        p.send(&[syn_from(&p, 2002, SegmentOptions::default())])
            .len(),
        1
    );
}

#[test]
fn time_wait_is_reopened_only_by_a_syn_with_a_newer_timestamp() {
    let mut p = Peer::new();
    let o = SegmentOptions {
        mss: Some(1460),
        timestamps: Some((100, 0)),
        ..SegmentOptions::default()
    };
    let (h, synack) = p.accept_with(o);
    let tsecr = synack.opts.timestamps.unwrap().0;
    p.s.tcp_close(h, p.now);
    let fin = p.poll().remove(0);
    p.ack = fin.seq + 1;
    let mut s = p.seg(FIN | ACK, b"");
    s.opts.timestamps = Some((200, tsecr));
    p.push(s);
    p.seq += 1;
    assert_eq!(p.s.tcp_connections(), 1, "orphan in TIME-WAIT");
    // An old incarnation's SYN (older timestamp): no new connection.
    let mut old = p.seg(SYN, b"");
    old.seq += 100_000;
    old.opts.timestamps = Some((150, 0));
    let out = p.send(&[old]);
    assert!(out.iter().all(|s| s.flags & SYN == 0));
    // A newer one reopens it (RFC 6191).
    let mut new = p.seg(SYN, b"");
    new.seq += 100_000;
    new.opts.timestamps = Some((300, 0));
    let out = p.send(&[new]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, SYN | ACK);
    assert_eq!(p.s.counters().get(Event::TcpTimeWaitReused), 1);
}

#[test]
fn partial_checksum_syn_is_diagnosed_and_accepted_only_when_configured() {
    // The frame of B's SYN with checksum field `c` (IPv4 header 20 bytes after Ethernet's 14).
    fn with_csum(p: &Peer, c: u16) -> Vec<u8> {
        let mut f = p.frame(&p.seg(SYN, b""));
        f[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }
    for accept in [false, true] {
        let mut p = Peer::with(|c| c.rx_accept_partial_checksum = accept);
        p.s.tcp_listen(SocketAddrV4::new(IP_A, A_PORT), 8, TcpOpts::default())
            .unwrap();
        let len = (with_csum(&p, 0).len() - 34) as u32;
        let partial = crate::wire::checksum::partial(IP_B, IP_A, PROTO_TCP, len);
        // A wrong value that is not the pseudo-header sum is a bad checksum either way.
        let f = with_csum(&p, partial ^ 0x8001);
        let out = parse_out(feed(&mut p.s, &[f], p.now));
        assert!(out.is_empty());
        assert_eq!(p.s.counters().drops(DropReason::TcpBadChecksum), 1);
        let f = with_csum(&p, partial);
        let out = parse_out(feed(&mut p.s, &[f], p.now));
        if accept {
            assert_eq!(out.len(), 1, "SYN accepted");
            assert_eq!(out[0].flags, SYN | ACK);
            assert_eq!(p.s.counters().get(Event::RxPartialChecksumAccepted), 1);
            assert_eq!(p.s.counters().drops(DropReason::TcpPartialChecksum), 0);
        } else {
            assert!(out.is_empty(), "SYN dropped");
            assert_eq!(p.s.counters().drops(DropReason::TcpPartialChecksum), 1);
            assert_eq!(p.s.counters().get(Event::RxPartialChecksumAccepted), 0);
        }
        assert_eq!(p.s.counters().drops(DropReason::TcpBadChecksum), 1);
    }
}
