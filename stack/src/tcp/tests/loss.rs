//! Loss recovery: fast retransmit (NewReno, RFC 6582), SACK recovery (RFC 6675), RTO (RFC 6298).

use super::*;

/// A sends `n` full segments of `mss` bytes; returns them.
fn burst(p: &mut Peer, h: TcpHandle, n: usize, mss: usize) -> Vec<S> {
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(n * mss), p.now).unwrap();
    let out = p.poll();
    assert_eq!(out.len(), n, "initial window covers the burst");
    assert!(out.iter().all(|s| s.data.len() == mss));
    out
}

fn sack_ack(p: &Peer, ack: u32, blocks: &[(u32, u32)]) -> S {
    let mut s = p.seg(ACK, b"");
    s.ack = ack;
    s.opts.sack = blocks.iter().copied().collect();
    s
}

#[test]
fn single_loss_with_sack_is_fast_retransmitted_alone() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    // Segment 0 is lost; the receiver reports 1, 1-2, 1-3 with SACK.
    assert!(p.send(&[sack_ack(&p, s(0), &[(s(1), s(2))])]).is_empty());
    assert!(p.send(&[sack_ack(&p, s(0), &[(s(1), s(3))])]).is_empty());
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(4))])]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].seq, out[0].data.len()), (s(0), 1000));
    assert_eq!(p.s.counters().get(Event::TcpFastRecoveries), 1);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(
        info.ssthresh, 7000,
        "CUBIC: beta 0.7 of a 10-segment window"
    );
    // The hole is filled: recovery ends, new data may flow.
    assert!(p.send(&[sack_ack(&p, s(10), &[])]).is_empty());
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.retransmits, 1);
    assert_eq!(info.unacked, 0);
}

#[test]
fn newreno_three_dupacks_then_partial_ack_retransmits_the_next_hole() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_congestion(h, Congestion::NewReno);
    let segs = burst(&mut p, h, 10, 1460);
    let s = |i: usize| segs[0].seq + 1460 * i as u32;
    // Segments 0 and 4 lost: three duplicate ACKs for 0.
    assert!(p.send(&[sack_ack(&p, s(0), &[])]).is_empty());
    assert!(p.send(&[sack_ack(&p, s(0), &[])]).is_empty());
    let out = p.send(&[sack_ack(&p, s(0), &[])]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seq, s(0), "fast retransmit of the first hole");
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.ssthresh, 7300, "RFC 5681 (4): FlightSize / 2");
    assert_eq!(info.cwnd, 7300 + 3 * 1460, "RFC 6582: ssthresh + 3 SMSS");
    // Partial ACK up to the second hole: it goes out at once.
    let out = p.send(&[sack_ack(&p, s(4), &[])]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seq, s(4));
    // Full ACK: recovery over.
    p.send(&[sack_ack(&p, s(10), &[])]);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.unacked, 0);
    assert_eq!(info.retransmits, 2);
    assert_eq!(info.recoveries, 1);
}

#[test]
fn several_sack_holes_are_all_retransmitted_in_one_recovery() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    // Lost: 0, 3 and 6.
    assert!(p.send(&[sack_ack(&p, s(0), &[(s(1), s(3))])]).is_empty());
    // Four SACKed segments above segment 0: lost (RFC 6675 IsLost), recovery starts.
    let out = p.send(&[sack_ack(&p, s(0), &[(s(4), s(6)), (s(1), s(3))])]);
    let seqs: Vec<u32> = out.iter().map(|x| x.seq).collect();
    assert_eq!(seqs, vec![s(0)]);
    let out = p.send(&[sack_ack(
        &p,
        s(0),
        &[(s(7), s(10)), (s(4), s(6)), (s(1), s(3))],
    )]);
    let seqs: Vec<u32> = out.iter().map(|x| x.seq).collect();
    assert_eq!(
        seqs,
        vec![s(3), s(6)],
        "the other holes, within cwnd - pipe"
    );
    assert!(p.send(&[sack_ack(&p, s(10), &[])]).is_empty());
    assert_eq!(p.s.tcp_info(h).unwrap().retransmits, 3);
}

#[test]
fn tail_loss_is_recovered_by_rto_with_exponential_backoff() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_send_slice(h, b"tail", p.now).unwrap();
    let first = p.poll();
    assert_eq!(first.len(), 1);
    let mut at = Vec::new();
    for _ in 0..2000 {
        let out = p.advance(1);
        for s in out {
            assert_eq!((s.seq, &s.data[..]), (first[0].seq, &b"tail"[..]));
            at.push(p.now.total_millis());
        }
        if at.len() == 3 {
            break;
        }
    }
    // RTO 200 ms (the minimum; the handshake RTT was ~0), then doubled (Karn: no new sample).
    assert_eq!(at, vec![200, 600, 1400]);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(
        info.cwnd,
        u32::from(info.mss),
        "RFC 5681: one segment after an RTO"
    );
    assert_eq!(info.rto_expirations, 3);
    p.ack = first[0].seq + 4;
    p.send(&[p.seg(ACK, b"")]);
    assert_eq!(p.s.tcp_info(h).unwrap().unacked, 0);
}

#[test]
fn retransmissions_give_up_after_retries2_and_report_a_timeout() {
    let mut p = Peer::with(|c| c.tcp_retries2 = 3);
    let h = p.accept();
    p.s.tcp_send_slice(h, b"x", p.now).unwrap();
    p.poll();
    p.advance(10_000);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Closed));
    assert_eq!(p.s.tcp_take_error(h), Some(TcpError::TimedOut));
}
