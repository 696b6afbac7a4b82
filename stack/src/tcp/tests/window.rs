//! Flow control: zero window and persist probes, receive window closing and reopening,
//! out-of-order data and SACK blocks.

use super::*;

#[test]
fn zero_window_is_probed_with_backoff_until_it_opens() {
    let mut p = Peer::new();
    let h = p.accept();
    let mut closed = p.seg(ACK, b"");
    closed.wnd = 0;
    p.send(&[closed]);
    p.s.tcp_send_slice(h, b"waiting", p.now).unwrap();
    assert!(p.poll().is_empty(), "nothing fits a zero window");
    let mut probes = Vec::new();
    for _ in 0..1000 {
        for s in p.advance(1) {
            assert!(s.data.is_empty(), "Linux-style probe: no data");
            assert_eq!(s.seq, p.ack.wrapping_sub(1), "probe carries SND.UNA - 1");
            probes.push(p.now.total_millis());
        }
    }
    assert_eq!(probes, vec![200, 600], "persist timer backs off");
    assert_eq!(p.s.counters().get(Event::TcpWindowProbes), 2);
    assert_eq!(
        p.s.tcp_state(h),
        Some(TcpState::Established),
        "never gives up"
    );
    let out = p.send(&[p.seg(ACK, b"")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, b"waiting", "window open: data flows");
}

#[test]
fn receive_window_closes_when_unread_and_reopens_with_an_update() {
    let mut p = Peer::with(|c| c.tcp_rcv_buf = 8000);
    let h = p.accept();
    let mut last = None;
    for _ in 0..8 {
        let out = p.push(p.seg(ACK, &[7; 1000]));
        if let Some(s) = out.last() {
            last = Some(s.wnd);
        }
    }
    assert_eq!(p.s.tcp_recv_pending(h), 8000);
    assert_eq!(last, Some(0), "window closed");
    // Beyond the window: dropped, answered with an ACK.
    let out = p.send(&[p.seg(ACK, &[8; 100])]);
    assert_eq!(out.len(), 1);
    assert_eq!(p.s.tcp_recv_pending(h), 8000);
    assert_eq!(p.recv_all(h).len(), 8000);
    let out = p.poll();
    assert_eq!(out.len(), 1, "window update after the read");
    assert_eq!(out[0].wnd, 8000);
}

#[test]
fn out_of_order_data_is_sacked_and_delivered_when_the_hole_fills() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let start = p.seq;
    let mut late = p.seg(ACK, b"BBBB");
    late.seq = start + 4;
    let out = p.send(&[late]);
    assert_eq!(out.len(), 1, "immediate duplicate ACK");
    assert_eq!(out[0].ack, start);
    assert_eq!(out[0].opts.sack.as_slice(), &[(start + 4, start + 8)]);
    assert_eq!(p.s.tcp_recv_pending(h), 0);
    let out = p.send(&[p.seg(ACK, b"AAAA")]);
    assert_eq!(out.len(), 1, "the hole is filled: ACK at once");
    assert_eq!(out[0].ack, start + 8);
    assert!(out[0].opts.sack.is_empty());
    assert_eq!(p.recv_all(h), b"AAAABBBB");
}

#[test]
fn a_window_carried_by_an_ack_below_snd_una_is_not_applied() {
    // RFC 9293 3.10.7.4: the send window is updated only if SND.UNA =< SEG.ACK =< SND.NXT;
    // it counts from SEG.ACK. Here SND.WL2 lags SND.UNA (the ACK that advanced SND.UNA came on
    // a retransmission of B's, below SND.WL1) and a reordered pure ACK at SND.WL1 acknowledges
    // less than SND.UNA: its window must not move the right edge beyond B's offer.
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    let una0 = p.ack;
    p.s.tcp_send_slice(h, &[7u8; 1000], p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    let x = p.seq;
    // B's pure ACK after its 2 bytes of data (which are lost): SND.WL1 = x + 2.
    let mut q = p.seg(ACK, b"");
    q.seq = x + 2;
    q.wnd = 2000;
    p.send(&[q]);
    // B retransmits its data, acknowledging A's 1000 bytes: SND.UNA moves, the window does
    // not (SEG.SEQ < SND.WL1).
    let mut d = p.seg(ACK | PSH, b"hi");
    d.ack = una0 + 1000;
    d.wnd = 2000;
    p.push(d);
    assert_eq!(p.s.tcp_info(h).unwrap().unacked, 0);
    // A reordered pure ACK at SND.WL1 acknowledging half: right edge una0 + 500 + 2500 =
    // SND.UNA + 2000.
    let mut r = p.seg(ACK, b"");
    r.ack = una0 + 500;
    r.wnd = 2500;
    p.send(&[r]);
    assert_eq!(p.s.tcp_info(h).unwrap().snd_wnd, 2000);
    assert_eq!(p.recv_all(h), b"hi");
}
