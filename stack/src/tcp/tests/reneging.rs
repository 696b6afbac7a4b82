//! Receivers that renege on SACK (RFC 2018 8, RFC 6675 5.1) or send SACK blocks that cannot be
//! true: the sender keeps SACKed data until it is cumulatively acknowledged, clears the
//! scoreboard on an RTO, and sends its FIN only after every byte before it.

use super::loss::{burst, sack_ack};
use super::*;

/// A peer that acknowledges honestly what arrived in order from `rcv` on, until it has seen the
/// FIN or `ms` ran out. Returns (rcv, ms at which the FIN came, the first retransmission's ms).
fn honest_receiver(
    p: &mut Peer,
    mut rcv: u32,
    fin_at: u32,
    ms: u64,
    mut out: Vec<S>,
) -> (u32, Option<u64>) {
    for _ in 0..ms {
        out.extend(p.advance(1));
        let mut got = false;
        for s in &out {
            if s.flags & FIN != 0 {
                assert_eq!(
                    s.seq.wrapping_add(s.data.len() as u32),
                    fin_at,
                    "the FIN is at the end of the data"
                );
            }
            if !s.data.is_empty() && s.seq == rcv {
                rcv = rcv.wrapping_add(s.data.len() as u32);
                got = true;
            }
            if s.flags & FIN != 0 && s.seq.wrapping_add(s.data.len() as u32) == rcv {
                assert_eq!(rcv, fin_at, "the FIN comes after every byte before it");
                return (rcv.wrapping_add(1), Some(p.now.total_millis()));
            }
            if s.flags & FIN != 0 {
                assert!(
                    seq_le(s.seq, rcv) || got,
                    "FIN at {} sent while the receiver misses data from {rcv}",
                    s.seq
                );
            }
        }
        out.clear();
        if got {
            out = p.send(&[sack_ack(p, rcv, &[])]);
        }
    }
    (rcv, None)
}

#[test]
fn a_receiver_that_reneges_gets_every_byte_resent_and_the_fin_after_them() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    p.s.tcp_shutdown(h, p.now);
    let fin = p.poll();
    assert_eq!((fin.len(), fin[0].flags & FIN, fin[0].seq), (1, FIN, s(10)));
    // Segment 0 lost, 1-9 SACKed: a fast retransmit of segment 0 alone.
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(10))])]);
    assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![s(0)]);
    // SACKed data is not acknowledged (RFC 2018 8): all of it stays queued.
    assert_eq!(p.s.tcp_send_queued(h), 10_000);
    assert!(p.advance(10).is_empty());
    // The receiver reneges: it got segment 0 and discarded 1-9.
    let renege_at = p.now.total_millis();
    assert!(p.send(&[sack_ack(&p, s(1), &[])]).is_empty());
    assert_eq!(p.s.counters().get(Event::TcpSackReneging), 1);
    // The shortened timer (10 ms, not the 200 ms RTO) resends from SND.UNA.
    let out = p.advance(15);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].seq, out[0].data.len()), (s(1), 1000));
    assert!(p.now.total_millis() - renege_at <= 15);
    assert_eq!(p.s.counters().get(Event::TcpSackScoreboardResets), 1);
    let out = p.send(&[sack_ack(&p, s(2), &[])]);
    let (rcv, fin_ms) = honest_receiver(&mut p, s(2), s(10), 5_000, out);
    assert!(fin_ms.is_some(), "stalled at {rcv} (expected {})", s(10));
    assert!(
        fin_ms.unwrap() - renege_at < 1_000,
        "no RTO back-off spiral"
    );
    p.send(&[sack_ack(&p, rcv, &[])]);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::FinWait2));
    assert_eq!(p.s.tcp_send_queued(h), 0);
}

#[test]
fn after_an_rto_sacked_data_is_resent_before_the_fin() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 4, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    p.s.tcp_shutdown(h, p.now);
    assert_eq!(p.poll().len(), 1);
    // 0 lost, 1-3 SACKed; then silence (the retransmission of 0 is lost too).
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(4))])]);
    assert_eq!(out.len(), 1);
    // Until the RTO: nothing but possibly a loss probe of the tail.
    let mut after = Vec::new();
    for _ in 0..1000 {
        after.extend(p.advance(1));
        if p.s.counters().get(Event::TcpRtoExpirations) > 0 {
            break;
        }
    }
    assert_eq!(p.s.counters().get(Event::TcpSackScoreboardResets), 1);
    // The receiver still holds nothing but what it ACKed: it must get everything again.
    let (rcv, fin_ms) = honest_receiver(&mut p, s(0), s(4), 10_000, after);
    assert!(fin_ms.is_some(), "stalled at {rcv}");
}

#[test]
fn a_sack_block_starting_at_the_cumulative_ack_is_ignored_and_counted() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    // A liar "SACKs" the hole at the cumulative ACK; then a block beyond what was sent.
    assert!(p.send(&[sack_ack(&p, s(0), &[(s(0), s(10))])]).is_empty());
    assert!(p.send(&[sack_ack(&p, s(0), &[(s(5), s(12))])]).is_empty());
    assert_eq!(p.s.counters().get(Event::TcpSackDiscards), 2);
    assert_eq!(p.s.counters().get(Event::TcpDsacksRecv), 0);
    let c = &p.s.tcp.conns[h.idx as usize];
    assert_eq!(c.sndq.sacked_bytes, 0, "nothing marked SACKed");
    // The hole at SND.UNA goes out again (a loss probe or the RTO: the duplicate ACKs leave
    // no room in cwnd - pipe), which a hole marked SACKed would have blocked for ever.
    let mut resent_at = None;
    for _ in 0..1000 {
        if p.advance(1).iter().any(|x| x.seq == s(0)) {
            resent_at = Some(p.now.total_millis());
            break;
        }
    }
    assert!(resent_at.is_some_and(|t| t < 1000), "{resent_at:?}");
    assert_eq!(p.s.tcp_send_queued(h), 10_000);
}

#[test]
fn a_dsack_below_the_cumulative_ack_is_still_a_dsack() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 4, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    p.send(&[sack_ack(&p, s(2), &[])]);
    // RFC 2883 4.1.1: segment 0 arrived twice.
    p.send(&[sack_ack(&p, s(2), &[(s(0), s(1))])]);
    assert_eq!(p.s.counters().get(Event::TcpDsacksRecv), 1);
    assert_eq!(p.s.counters().get(Event::TcpSackDiscards), 0);
    let _ = h;
}
