//! RST and SYN on a synchronized connection: RFC 5961 validation and challenge ACKs, PAWS.

use super::*;

fn established() -> (Peer, TcpHandle) {
    let mut p = Peer::new();
    let h = p.accept();
    (p, h)
}

#[test]
fn rst_exactly_at_rcv_nxt_resets_the_connection() {
    let (mut p, h) = established();
    assert!(p.send(&[p.seg(RST, b"")]).is_empty());
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert_eq!(p.s.tcp_take_error(h), Some(TcpError::Reset));
}

#[test]
fn rst_in_window_but_not_at_rcv_nxt_gets_a_challenge_ack() {
    let (mut p, h) = established();
    let mut rst = p.seg(RST, b"");
    rst.seq += 1000;
    let out = p.send(&[rst]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].flags, out[0].ack),
        (ACK, p.seq),
        "challenge ACK (RFC 5961 3.2)"
    );
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    assert_eq!(p.s.counters().get(Event::TcpChallengeAcks), 1);
}

#[test]
fn rst_outside_the_window_is_dropped_without_reply() {
    let (mut p, h) = established();
    let mut rst = p.seg(RST, b"");
    rst.seq = rst.seq.wrapping_add(1 << 30);
    assert!(p.send(&[rst]).is_empty());
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    assert_eq!(p.s.counters().drops(DropReason::TcpBadSeq), 1);
}

#[test]
fn syn_on_an_established_connection_gets_a_challenge_ack() {
    let (mut p, h) = established();
    let out = p.send(&[p.seg(SYN, b"")]);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].ack), (ACK, p.seq));
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    assert_eq!(p.s.counters().drops(DropReason::TcpSynInWindow), 1);
}

#[test]
fn ack_of_unsent_data_is_answered_and_dropped() {
    let (mut p, h) = established();
    let mut s = p.seg(ACK, b"data");
    s.ack = s.ack.wrapping_add(5000);
    let out = p.send(&[s]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, p.seq, "the data was not taken");
    assert_eq!(p.s.tcp_recv_pending(h), 0);
    assert_eq!(p.s.counters().drops(DropReason::TcpAckUnsent), 1);
}

#[test]
fn data_outside_the_window_is_answered_with_an_ack() {
    let (mut p, h) = established();
    let mut s = p.seg(ACK, b"far away");
    s.seq = s.seq.wrapping_add(10_000_000);
    let out = p.send(&[s]);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].flags, out[0].ack), (ACK, p.seq));
    assert_eq!(p.s.tcp_recv_pending(h), 0);
}

#[test]
fn an_old_timestamp_is_rejected_by_paws() {
    let mut p = Peer::new();
    let o = SegmentOptions {
        mss: Some(1460),
        timestamps: Some((1000, 0)),
        ..SegmentOptions::default()
    };
    let (h, synack) = p.accept_with(o);
    let tsecr = synack.opts.timestamps.unwrap().0;
    let mut s = p.seg(ACK, b"new");
    s.opts.timestamps = Some((2000, tsecr));
    p.push(s);
    let mut old = p.seg(ACK, b"old");
    old.opts.timestamps = Some((1500, tsecr));
    let out = p.send(&[old]);
    assert_eq!(out.len(), 1, "PAWS: an ACK, the data dropped");
    assert_eq!(p.recv_all(h), b"new");
    assert_eq!(p.s.counters().drops(DropReason::TcpPaws), 1);
}

#[test]
fn challenge_acks_are_limited_per_second_with_a_randomized_budget() {
    // RFC 5961 7: a stack-wide limit; Linux draws each second's budget from
    // [limit / 2, 3 * limit / 2) so that the number sent does not reveal the limit.
    let mut p = Peer::with(|c| c.tcp_challenge_ack_limit = 10);
    let h = p.accept();
    let mut budgets = Vec::new();
    for second in 0..6u64 {
        p.now = Instant::from_millis(1000 * second + 500);
        let mut answered = 0;
        for k in 0..40 {
            let mut rst = p.seg(RST, b"");
            rst.seq += 100 + k;
            answered += p.send(&[rst]).len();
        }
        assert!((5..15).contains(&answered), "second {second}: {answered}");
        budgets.push(answered);
        assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    }
    let c = p.s.counters();
    assert_eq!(
        c.get(Event::TcpChallengeAcks) + c.get(Event::TcpChallengeAcksLimited),
        240
    );
    assert_eq!(
        c.get(Event::TcpChallengeAcks),
        budgets.iter().sum::<usize>() as u64
    );
    budgets.dedup();
    assert!(budgets.len() > 1, "the budget varies: {budgets:?}");
}
