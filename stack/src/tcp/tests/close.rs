//! FIN-WAIT-1/2, CLOSING, TIME-WAIT, CLOSE-WAIT, LAST-ACK: orderly, half and simultaneous close.

use super::*;

#[test]
fn active_close_goes_through_fin_wait_and_time_wait_for_2msl() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_shutdown(h, p.now);
    let out = p.poll();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, FIN | ACK);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::FinWait1));
    p.ack = out[0].seq + 1;
    assert!(p.send(&[p.seg(ACK, b"")]).is_empty());
    assert_eq!(p.s.tcp_state(h), Some(TcpState::FinWait2));
    // Half-close: the peer may still send.
    p.push(p.seg(ACK, b"late data"));
    let out = p.push(p.seg(FIN | ACK, b""));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].ack), (ACK, p.seq + 1));
    assert_eq!(p.s.tcp_state(h), Some(TcpState::TimeWait));
    assert_eq!(p.recv_all(h), b"late data");
    assert!(p.s.tcp_recv_finished(h));
    // A retransmitted FIN is acknowledged again in TIME-WAIT.
    let mut fin = p.seg(FIN | ACK, b"");
    fin.seq = p.seq;
    assert_eq!(p.send(&[fin]).len(), 1);
    p.advance(59_999);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::TimeWait));
    p.advance(1);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    p.s.tcp_close(h, p.now);
    assert_eq!(p.s.tcp_connections(), 0);
}

#[test]
fn passive_close_goes_through_close_wait_and_last_ack() {
    let mut p = Peer::new();
    let h = p.accept();
    let out = p.push(p.seg(FIN | ACK, b"bye"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, p.seq + 1, "data and FIN acknowledged at once");
    p.seq += 1;
    assert_eq!(p.s.tcp_state(h), Some(TcpState::CloseWait));
    // The receiving direction is finished; sending still works (half-close).
    p.s.tcp_send_slice(h, b"reply", p.now).unwrap();
    let out = p.poll();
    assert_eq!(out[0].data, b"reply");
    assert_eq!(p.recv_all(h), b"bye");
    p.s.tcp_close(h, p.now);
    let out = p.poll();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].flags, FIN | ACK);
    p.ack = out[0].seq + 1;
    p.send(&[p.seg(ACK, b"")]);
    assert_eq!(p.s.tcp_connections(), 0, "LAST-ACK -> CLOSED, slot freed");
}

#[test]
fn simultaneous_close_meets_in_closing_then_time_wait_on_both_sides() {
    let (mut p, ha, hb) = connected_pair(TcpOpts::default(), TcpOpts::default());
    p.a.tcp_shutdown(ha, p.now);
    p.b.tcp_shutdown(hb, p.now);
    // Both FINs are on the wire before either side reads.
    let mut out = crate::buf::Batch::new();
    let mut wire_a = Vec::new();
    while p.a.poll_tx(&mut out, p.now) > 0 {
        for f in out.drain() {
            wire_a.push(p.a.pool().data(&f).to_vec());
            p.a.pool_mut().free(f);
        }
    }
    assert_eq!(p.a.tcp_state(ha), Some(TcpState::FinWait1));
    assert_eq!(p.b.tcp_state(hb), Some(TcpState::FinWait1));
    let from_b = feed(&mut p.b, &wire_a, p.now);
    assert_eq!(p.b.tcp_state(hb), Some(TcpState::Closing));
    let back = feed(&mut p.a, &from_b, p.now);
    let _ = feed(&mut p.b, &back, p.now);
    p.settle();
    assert_eq!(p.a.tcp_state(ha), Some(TcpState::TimeWait));
    assert_eq!(p.b.tcp_state(hb), Some(TcpState::TimeWait));
    p.advance(Duration::from_secs(60));
    assert_eq!(p.a.tcp_state(ha), Some(TcpState::Closed));
    assert_eq!(p.b.tcp_state(hb), Some(TcpState::Closed));
}

#[test]
fn close_with_unread_data_resets_and_abort_resets() {
    let (mut p, ha, hb) = connected_pair(TcpOpts::default(), TcpOpts::default());
    p.a.tcp_send_slice(ha, b"unread", p.now).unwrap();
    p.settle();
    p.b.tcp_close(hb, p.now);
    p.settle();
    assert_eq!(p.a.tcp_state(ha), Some(TcpState::Closed));
    assert_eq!(p.a.tcp_take_error(ha), Some(TcpError::Reset));
    assert_eq!(p.b.tcp_connections(), 0);

    let (mut p, ha, hb) = connected_pair(TcpOpts::default(), TcpOpts::default());
    p.a.tcp_abort(ha, p.now);
    p.settle();
    assert_eq!(p.b.tcp_take_error(hb), Some(TcpError::Reset));
    assert_eq!(p.a.tcp_state(ha), None, "the handle is gone");
    assert_eq!(p.a.tcp_connections(), 0);
}

#[test]
fn orphaned_fin_wait2_times_out() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_close(h, p.now);
    let out = p.poll();
    p.ack = out[0].seq + 1;
    p.send(&[p.seg(ACK, b"")]);
    assert_eq!(p.s.tcp_connections(), 1);
    p.advance(60_000);
    assert_eq!(p.s.tcp_connections(), 0);
    assert_eq!(p.s.counters().get(Event::TcpFinWait2Timeouts), 1);
    assert_eq!(p.s.tcp.orphans, 0, "the orphan is no longer counted");
}

#[test]
fn rst_in_time_wait_is_ignored_rfc1337() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_shutdown(h, p.now);
    let fin = p.poll().remove(0);
    p.ack = fin.seq + 1;
    p.push(p.seg(FIN | ACK, b""));
    p.seq += 1;
    assert_eq!(p.s.tcp_state(h), Some(TcpState::TimeWait));
    assert!(p.send(&[p.seg(RST, b"")]).is_empty());
    assert_eq!(p.s.tcp_state(h), Some(TcpState::TimeWait));
    assert_eq!(p.s.counters().drops(DropReason::TcpRstInTimeWait), 1);
}

#[test]
fn keepalive_probes_an_idle_connection_and_gives_up_when_unanswered() {
    let mut p = Peer::new();
    let opts = TcpOpts {
        keepalive: Some(Duration::from_secs(10)),
        ..TcpOpts::default()
    };
    let h =
        p.s.tcp_connect(SocketAddrV4::new(IP_B, B_PORT), None, opts, p.now)
            .unwrap();
    let syn = p.poll().remove(0);
    p.port_a = syn.sport;
    p.ack = syn.seq + 1;
    let mut synack = p.seg(SYN | ACK, b"");
    synack.opts.mss = Some(1460);
    p.send(&[synack]);
    p.seq += 1;
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    let out = p.advance(10_000);
    assert_eq!(out.len(), 1, "a probe after the idle time");
    assert_eq!((out[0].seq, out[0].data.len()), (p.ack - 1, 0));
    // Answered: idle again for 10 s.
    p.send(&[p.seg(ACK, b"")]);
    assert!(p.advance(9_999).is_empty());
    assert_eq!(p.advance(1).len(), 1);
    // Unanswered: 9 probes 75 s apart, then the connection is dropped.
    let out = p.advance(75_000 * 9);
    assert_eq!(out.len(), 8);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert_eq!(p.s.tcp_take_error(h), Some(TcpError::TimedOut));
}

#[test]
fn connection_state_is_small() {
    let n = Stack::tcp_conn_size();
    eprintln!(
        "per-connection state: {n} bytes (Conn {} + boxed parts)",
        core::mem::size_of::<Conn>()
    );
    // 512 before the hardening fields (frame and memory charges, out-of-order and user
    // timeouts: 24 bytes).
    assert!(n <= 576, "{n} bytes");
}
