//! Loss recovery: fast retransmit (NewReno, RFC 6582), SACK recovery (RFC 6675), RTO (RFC 6298).

use super::*;

/// A sends `n` full segments of `mss` bytes; returns them.
pub(super) fn burst(p: &mut Peer, h: TcpHandle, n: usize, mss: usize) -> Vec<S> {
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(n * mss), p.now).unwrap();
    let out = p.poll();
    assert_eq!(out.len(), n, "initial window covers the burst");
    assert!(out.iter().all(|s| s.data.len() == mss));
    // The ACKs come back one 10 ms round trip later.
    assert!(p.advance(10).is_empty());
    out
}

pub(super) fn sack_ack(p: &Peer, ack: u32, blocks: &[(u32, u32)]) -> S {
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
    // Four SACKed segments, no reordering seen: no reordering window (RFC 8985 6.2 step 4).
    // Segments 0 and 3 were sent before segment 5, which arrived: both lost, recovery starts.
    let out = p.send(&[sack_ack(&p, s(0), &[(s(4), s(6)), (s(1), s(3))])]);
    let seqs: Vec<u32> = out.iter().map(|x| x.seq).collect();
    assert_eq!(seqs, vec![s(0), s(3)], "within cwnd - pipe");
    let out = p.send(&[sack_ack(
        &p,
        s(0),
        &[(s(7), s(10)), (s(4), s(6)), (s(1), s(3))],
    )]);
    let seqs: Vec<u32> = out.iter().map(|x| x.seq).collect();
    assert_eq!(seqs, vec![s(6)], "the last hole");
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

/// A burst of 10 segments of 1000 bytes on a SACK connection, ACKs one 10 ms RTT later, after
/// the peer has shown reordering (segment 1 delivered after segment 2).
fn reordered_burst(p: &mut Peer, h: TcpHandle) -> Vec<S> {
    let segs = burst(p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    assert!(p.send(&[sack_ack(p, s(1), &[(s(2), s(3))])]).is_empty());
    assert!(p.send(&[sack_ack(p, s(3), &[])]).is_empty());
    segs
}

#[test]
fn reordering_within_rack_window_is_not_taken_for_a_loss() {
    // RFC 8985: once reordering was seen, a hole below SACKed data is lost only after
    // RACK.rtt + min_RTT / 4; DupThresh (RFC 6675) would retransmit at the third SACK.
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = reordered_burst(&mut p, h);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    let out = p.send(&[sack_ack(&p, s(3), &[(s(4), s(8))])]);
    assert!(
        out.is_empty(),
        "four SACKed above the hole: still waiting {out:?}"
    );
    // The late segment arrives 1 ms later: nothing was resent, no recovery.
    assert!(p.advance(1).is_empty());
    assert!(p.send(&[sack_ack(&p, s(10), &[])]).is_empty());
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!((info.retransmits, info.recoveries), (0, 0));
    assert_eq!(info.ssthresh, u32::MAX);
}

#[test]
fn rack_timer_retransmits_a_hole_once_its_reordering_window_passed() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = reordered_burst(&mut p, h);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    assert!(p.send(&[sack_ack(&p, s(3), &[(s(4), s(8))])]).is_empty());
    // min_RTT 10 ms: the window is 2.5 ms; the wheel ticks in ms.
    assert!(p.advance(2).is_empty());
    let out = p.advance(2);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].seq, out[0].data.len()), (s(3), 1000));
    assert_eq!(p.s.counters().get(Event::TcpRackTimeouts), 1);
    assert_eq!(p.s.tcp_info(h).unwrap().recoveries, 1);
}

#[test]
fn a_lost_retransmission_is_detected_by_rack_without_an_rto() {
    // RFC 8985 2.2: RACK also finds retransmissions that were lost, by their send time.
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(4))])]);
    assert_eq!(out[0].seq, s(0), "fast retransmit");
    // New data goes out after the retransmission and is SACKed one RTT later, while the
    // retransmission of segment 0 is not: it was lost too.
    p.s.tcp_send_slice(h, &pattern(1000), p.now).unwrap();
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(10))])]);
    assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![s(10)]);
    let _ = p.advance(10);
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(11))])]);
    let seqs: Vec<u32> = out.iter().map(|x| x.seq).collect();
    assert!(seqs.contains(&s(0)), "segment 0 again: {seqs:?}");
    assert_eq!(p.s.tcp_info(h).unwrap().rto_expirations, 0);
}

#[test]
fn a_recovery_whose_retransmissions_all_come_back_as_dsack_is_undone() {
    // RFC 2883 / RFC 3708: the peer got the original and the retransmission; the window
    // reduction was needless and is undone (Linux tcp_try_undo_dsack).
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    let before = p.s.tcp_info(h).unwrap();
    let out = p.send(&[sack_ack(&p, s(0), &[(s(1), s(4))])]);
    assert_eq!(out[0].seq, s(0));
    let during = p.s.tcp_info(h).unwrap();
    assert_eq!(during.ssthresh, 7000);
    // The original, only delayed, fills the hole; then the retransmission is reported twice.
    p.send(&[sack_ack(&p, s(10), &[])]);
    assert!(p.s.tcp_info(h).unwrap().cwnd <= 7000);
    p.send(&[sack_ack(&p, s(10), &[(s(0), s(1))])]);
    let after = p.s.tcp_info(h).unwrap();
    assert_eq!(after.undos, 1);
    assert_eq!(p.s.counters().get(Event::TcpSpuriousUndos), 1);
    assert!(
        after.cwnd >= before.cwnd,
        "{} < {}",
        after.cwnd,
        before.cwnd
    );
    assert_eq!(after.ssthresh, before.ssthresh);
}

#[test]
fn a_dsack_for_data_never_retransmitted_undoes_nothing() {
    // A network duplicate of an original is not evidence that a recovery was spurious.
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    p.send(&[sack_ack(&p, s(0), &[(s(1), s(4))])]);
    p.send(&[sack_ack(&p, s(10), &[])]);
    p.send(&[sack_ack(&p, s(10), &[(s(5), s(6))])]);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.undos, 0);
    assert_eq!(info.ssthresh, 7000);
}

#[test]
fn duplicate_data_is_reported_in_a_dsack_block() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    let seg = p.seg(ACK | PSH, b"hello");
    p.push(seg.clone());
    // The same segment again: below RCV.NXT (RFC 2883 4, first block).
    let out = p.send(std::slice::from_ref(&seg));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].opts.sack.to_vec(), vec![(seg.seq, seg.seq + 5)]);
    // Out of order, twice: the D-SACK block, then the block holding it (RFC 2883 4.1).
    let mut ooo = p.seg(ACK, b"world");
    ooo.seq += 100;
    p.send(&[ooo.clone()]);
    let out = p.send(std::slice::from_ref(&ooo));
    let blocks = out[0].opts.sack.to_vec();
    assert_eq!(blocks, vec![(ooo.seq, ooo.seq + 5), (ooo.seq, ooo.seq + 5)]);
    // Reported once only.
    let out = p.send(&[p.seg(ACK, b"")]);
    assert!(out.iter().all(|x| x.opts.sack.len() <= 1));
    assert_eq!(p.s.counters().get(Event::TcpDsacksSent), 2);
    let _ = p.recv_all(h);
}

#[test]
fn after_an_rto_no_fast_recovery_until_the_data_sent_before_it_is_acknowledged() {
    // RFC 6675 5.1 / RFC 6582: the RTO already reduced the window for this loss episode; the
    // segments it marked lost must not start a fast recovery (a second reduction) on the next ACK.
    let mut p = Peer::new();
    let h = p.accept_sack();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    // The tail loss probe (20 ms: 2 SRTT) goes unanswered too; the RTO follows it.
    let out = p.advance(20);
    assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![s(9)]);
    let out = p.advance(200);
    assert_eq!(out[0].seq, s(0), "RTO retransmission");
    let ssthresh = p.s.tcp_info(h).unwrap().ssthresh;
    assert_eq!(ssthresh, 7000);
    let _ = p.send(&[sack_ack(&p, s(1), &[])]);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!((info.recoveries, info.ssthresh), (0, ssthresh));
}

/// The last segment of a 10-segment burst is lost; the peer acknowledges the first eight at
/// once and holds the ninth for a delayed ACK (40 ms). Returns the time from the burst to the
/// ACK of the whole burst.
fn tail_loss(tlp: bool) -> (u64, Peer, TcpHandle, Vec<S>) {
    let mut p = Peer::with(|c| c.tcp_tlp = tlp);
    let h = p.accept_sack();
    let sent_at = p.now.total_millis();
    let segs = burst(&mut p, h, 10, 1000);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    assert!(p.send(&[sack_ack(&p, s(8), &[])]).is_empty());
    for _ in 0..1000 {
        if p.now.total_millis() == sent_at + 50 {
            // The delayed ACK of segment 8.
            assert!(p.send(&[sack_ack(&p, s(9), &[])]).is_empty());
        }
        let out = p.advance(1);
        if !out.is_empty() {
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!((out[0].seq, out[0].data.len()), (s(9), 1000));
            assert!(p.advance(10).is_empty());
            assert!(p.send(&[sack_ack(&p, s(10), &[])]).is_empty());
            return (p.now.total_millis() - sent_at, p, h, segs);
        }
    }
    panic!("never repaired");
}

#[test]
fn a_lost_tail_is_probed_after_two_srtt_instead_of_waiting_for_the_rto() {
    // RFC 8985 7: two segments were in flight at the last ACK: PTO = 2 SRTT = 20 ms. The probe
    // retransmits the highest segment; its ACK repairs the tail. Without TLP: the RTO.
    let (with, p, h, _) = tail_loss(true);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!((info.rto_expirations, info.retransmits), (0, 1));
    assert_eq!(p.s.counters().get(Event::TcpLossProbes), 1);
    let (without, q, h2, _) = tail_loss(false);
    assert_eq!(q.s.tcp_info(h2).unwrap().rto_expirations, 1);
    eprintln!("tail loss repaired after {with} ms with TLP, {without} ms without");
    assert_eq!(
        with, 40,
        "probe at 2 SRTT after the ACK at 10 ms, its ACK 10 ms later"
    );
    assert_eq!(without, 260, "RTO 200 ms after the delayed ACK at 60 ms");
    assert!(info.cwnd >= 10_000, "no window collapse: {}", info.cwnd);
}

#[test]
fn a_probe_that_repaired_a_loss_reduces_the_window_once_the_ack_goes_past_it() {
    // RFC 8985 7.4: the ACK of the probe alone cannot tell a repaired loss from a late ACK of
    // the original; an ACK beyond it without a D-SACK of the probe can (Linux: CWR).
    let (_, mut p, h, segs) = tail_loss(true);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    let before = p.s.tcp_info(h).unwrap();
    assert_eq!(before.ssthresh, u32::MAX);
    p.s.tcp_send_slice(h, &pattern(1000), p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    p.send(&[sack_ack(&p, s(11), &[])]);
    let after = p.s.tcp_info(h).unwrap();
    assert_eq!(p.s.counters().get(Event::TcpLossProbeRecoveries), 1);
    assert!(
        after.ssthresh.abs_diff(before.cwnd * 7 / 10) <= 1,
        "CUBIC beta 0.7 of {}: {}",
        before.cwnd,
        after.ssthresh
    );
    assert_eq!(after.cwnd, after.ssthresh);
    assert_eq!(after.recoveries, 0, "no fast recovery entered");
}

#[test]
fn a_probe_reported_as_a_duplicate_leaves_the_window_alone() {
    // Only the ACK was late: the original arrived, and the probe comes back in a D-SACK.
    let (_, mut p, h, segs) = tail_loss(true);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    let before = p.s.tcp_info(h).unwrap();
    p.send(&[sack_ack(&p, s(10), &[(s(9), s(10))])]);
    p.s.tcp_send_slice(h, &pattern(1000), p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    p.send(&[sack_ack(&p, s(11), &[])]);
    let after = p.s.tcp_info(h).unwrap();
    assert_eq!(p.s.counters().get(Event::TcpLossProbeRecoveries), 0);
    assert_eq!(after.ssthresh, before.ssthresh);
}

#[test]
fn the_probe_sends_new_data_when_the_windows_allow_it_even_beyond_cwnd() {
    // RFC 8985 7.3: unsent data goes first (cwnd is full: ten segments of 1000 bytes).
    let mut p = Peer::new();
    let h = p.accept_sack();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(11_000), p.now).unwrap();
    let segs = p.poll();
    assert_eq!(segs.len(), 10);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    assert!(p.advance(19).is_empty());
    let out = p.advance(1);
    assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![s(10)]);
    assert_eq!(p.s.tcp_info(h).unwrap().retransmits, 0);
    // Every ACK had been lost: the probe's brings them all; new data probed, no loss inferred.
    p.send(&[sack_ack(&p, s(11), &[])]);
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!((info.unacked, info.ssthresh), (0, u32::MAX));
    assert_eq!(p.s.counters().get(Event::TcpLossProbeRecoveries), 0);
}

#[test]
fn the_probe_retransmits_when_the_peer_window_has_no_room_and_is_sent_once_per_flight() {
    let mut p = Peer::new();
    let h = p.accept_sack();
    // The peer's window: exactly ten segments.
    let mut w = p.seg(ACK, b"");
    w.wnd = 10_000;
    p.send(&[w]);
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(11_000), p.now).unwrap();
    let segs = p.poll();
    assert_eq!(segs.len(), 10);
    let s = |i: usize| segs[0].seq + 1000 * i as u32;
    let out = p.advance(20);
    assert_eq!(out.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![s(9)]);
    // No second probe: the RTO, 200 ms after the probe, is next.
    assert!(p.advance(199).is_empty());
    let out = p.advance(1);
    assert_eq!(out[0].seq, s(0));
    assert_eq!(p.s.tcp_info(h).unwrap().rto_expirations, 1);
    assert_eq!(p.s.counters().get(Event::TcpLossProbes), 1);
}

#[test]
fn with_one_segment_in_flight_the_probe_waits_for_a_delayed_ack_and_stands_in_for_the_rto() {
    // RFC 8985 7.2: PTO = 2 SRTT + WCDelAckT (200 ms) = 220 ms, capped at the RTO (200 ms
    // after the send): the probe goes out at the RTO's time instead of the RTO, so the window
    // does not collapse to one segment.
    let mut p = Peer::new();
    let h = p.accept_sack();
    p.s.tcp_send_slice(h, b"one", p.now).unwrap();
    let first = p.poll();
    assert_eq!(first.len(), 1);
    assert!(p.advance(199).is_empty());
    let out = p.advance(1);
    assert_eq!((out.len(), out[0].seq), (1, first[0].seq));
    let info = p.s.tcp_info(h).unwrap();
    assert_eq!(info.rto_expirations, 0);
    assert_eq!(info.cwnd, 10_000);
    assert_eq!(p.s.counters().get(Event::TcpLossProbes), 1);
}

/// A timestamps connection without SACK, ten segments of 1460 bytes in flight, segment 0 lost:
/// returns the first data segment and B's tsecr.
fn ts_burst(p: &mut Peer) -> (TcpHandle, u32, u32) {
    let o = SegmentOptions {
        mss: Some(1460),
        timestamps: Some((1000, 0)),
        ..SegmentOptions::default()
    };
    let (h, synack) = p.accept_with(o);
    p.s.tcp_set_congestion(h, Congestion::NewReno);
    let segs = burst(p, h, 10, 1448);
    (h, segs[0].seq, synack.opts.timestamps.unwrap().0)
}

fn ts_dupack(p: &Peer, ack: u32, tsval: u32, tsecr: u32) -> S {
    let mut s = p.seg(ACK, b"");
    s.ack = ack;
    s.opts.timestamps = Some((tsval, tsecr));
    s
}

#[test]
fn a_reordered_duplicate_ack_with_a_slightly_old_timestamp_passes_paws() {
    // Linux tcp_disordered_ack: the third duplicate ACK was overtaken by the fourth; its
    // timestamp is 1 ms old. PAWS (RFC 7323 5.3) alone would drop it, answer it with an ACK,
    // and lose the third duplicate ACK that starts fast retransmit.
    let mut p = Peer::new();
    let (h, s0, tsecr) = ts_burst(&mut p);
    assert!(p.send(&[ts_dupack(&p, s0, 2000, tsecr)]).is_empty());
    assert!(p.send(&[ts_dupack(&p, s0, 2002, tsecr)]).is_empty());
    let out = p.send(&[ts_dupack(&p, s0, 2001, tsecr)]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].seq, out[0].data.len()),
        (s0, 1448),
        "fast retransmit"
    );
    let c = p.s.counters();
    assert_eq!(c.get(Event::TcpPawsDisorderedAcks), 1);
    assert_eq!(c.drops(DropReason::TcpPaws), 0);
    assert_eq!(p.s.tcp_info(h).unwrap().recoveries, 1);
}

#[test]
fn paws_still_drops_old_acks_that_are_not_plain_reordered_duplicates() {
    let mut p = Peer::new();
    let (_h, s0, tsecr) = ts_burst(&mut p);
    assert!(p.send(&[ts_dupack(&p, s0, 2000, tsecr)]).is_empty());
    // Older than one RTO (200 ms = 204 ticks of 1/1024 s): dropped, answered by an ACK.
    let out = p.send(&[ts_dupack(&p, s0, 2000 - 205, tsecr)]);
    assert_eq!(out.len(), 1);
    assert!(out[0].data.is_empty());
    // One that may update the window (here: closes it) is not a plain duplicate.
    let mut w = ts_dupack(&p, s0, 1999, tsecr);
    w.wnd = 0;
    assert_eq!(p.send(&[w]).len(), 1);
    // Nor is an ACK of new data.
    assert_eq!(p.send(&[ts_dupack(&p, s0 + 1448, 1999, tsecr)]).len(), 1);
    // Nor data.
    let mut d = ts_dupack(&p, s0, 1999, tsecr);
    d.data = b"x".to_vec();
    assert_eq!(p.send(&[d]).len(), 1);
    let c = p.s.counters();
    assert_eq!(c.get(Event::TcpPawsDisorderedAcks), 0);
    assert_eq!(c.drops(DropReason::TcpPaws), 4);
}
