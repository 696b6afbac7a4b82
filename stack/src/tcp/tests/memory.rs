//! Stack-wide TCP memory (Linux `tcp_mem`): pressure, fair shares, pruning, collapsing,
//! shared frames for small payloads, the out-of-order timeout.

use super::*;
use crate::tcp::memory;

/// B sends `n` segments of 10 bytes at increasing offsets above RCV.NXT, each leaving a hole.
fn ooo_flood(p: &mut Peer, n: u32) {
    for i in 0..n {
        let mut s = p.seg(ACK, &[i as u8; 10]);
        s.seq = p.seq + 20 * (i + 1);
        p.send(&[s]);
    }
}

#[test]
fn under_pressure_an_out_of_order_queue_over_its_share_is_pruned_newest_first() {
    let mut p = Peer::with(|c| c.tcp_mem = [4, 6, 8]);
    let h = p.accept_sack();
    ooo_flood(&mut p, 30);
    let c = &p.s.tcp.conns[h.idx as usize];
    assert!(c.ooo.frames() <= 8, "{} frames held", c.ooo.frames());
    assert!(p.s.tcp_mem_pressure());
    // Each new segment lay above everything held: it was the one dropped.
    assert!(p.s.counters().drops(DropReason::TcpMemPressure) > 0);
    assert_eq!(p.s.counters().get(Event::TcpOfoPruned), 0);
    let highest = p.seq + 20 * c.ooo.frames();
    assert!(c.ooo.holds(p.seq + 20) && c.ooo.holds(highest));
    // A segment below them makes room: the highest goes (newest in sequence space first).
    let mut s = p.seg(ACK, &[9; 5]);
    s.seq = p.seq + 32;
    p.send(&[s]);
    let c = &p.s.tcp.conns[h.idx as usize];
    assert_eq!(p.s.counters().get(Event::TcpOfoPruned), 1);
    assert!(c.ooo.holds(p.seq + 32) && !c.ooo.holds(highest));
    // In-order data still gets in (pruning made room) and fills the first hole.
    let base = p.seq;
    let out = p.push(p.seg(ACK | PSH, &[7; 20]));
    assert_eq!(out.last().map(|s| s.ack), Some(base + 30));
    assert_eq!(p.recv_all(h).len(), 30);
    let (charged, counted) = p.s.tcp_mem_audit();
    assert_eq!(charged, counted);
}

#[test]
fn out_of_order_data_without_progress_is_released_by_the_timeout() {
    let mut p = Peer::with(|c| c.tcp_ooo_timeout_ms = 5_000);
    let h = p.accept_sack();
    ooo_flood(&mut p, 3);
    assert_eq!(p.s.tcp_info(h).unwrap().ooo_bytes, 30);
    p.advance(4_999);
    assert_eq!(p.s.tcp_info(h).unwrap().ooo_bytes, 30);
    let out = p.advance(2);
    assert_eq!(p.s.tcp_info(h).unwrap().ooo_bytes, 0);
    assert_eq!(p.s.counters().get(Event::TcpOfoTimeouts), 1);
    assert!(
        out.iter().all(|s| s.opts.sack.is_empty()),
        "the next ACK no longer SACKs it: {out:?}"
    );
    assert_eq!(p.s.tcp_mem_frames(), 0);
}

#[test]
fn progress_restarts_the_out_of_order_timeout() {
    let mut p = Peer::with(|c| c.tcp_ooo_timeout_ms = 5_000);
    let h = p.accept_sack();
    let mut far = p.seg(ACK, &[1; 10]);
    far.seq = p.seq + 10_000;
    p.send(&[far]);
    for _ in 0..8 {
        p.advance(1_000);
        p.push(p.seg(ACK, &[2; 10]));
    }
    assert_eq!(
        p.s.tcp_info(h).unwrap().ooo_bytes,
        10,
        "kept: the connection progresses"
    );
    assert_eq!(p.s.counters().get(Event::TcpOfoTimeouts), 0);
}

#[test]
fn a_small_unacknowledged_payload_moves_into_a_shared_frame_after_an_rto() {
    let mut p = Peer::new();
    let h = p.accept();
    let before = p.s.pool().available();
    p.s.tcp_send_slice(h, b"stall", p.now).unwrap();
    let first = p.poll();
    assert_eq!(p.s.tcp.conns[h.idx as usize].sndq.own_frames(), 1);
    let out = p.advance(250);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].data, first[0].data,
        "the retransmission carries the same bytes"
    );
    let c = &p.s.tcp.conns[h.idx as usize];
    assert_eq!((c.sndq.own_frames(), c.sndq.coalesced), (0, 1));
    assert_eq!(p.s.counters().get(Event::TcpSndCoalesced), 1);
    // One shared frame, no frame of its own: as many frames in use as before the write.
    assert_eq!(before - p.s.pool().available(), 1);
    p.ack = first[0].seq + 5;
    p.send(&[p.seg(ACK, b"")]);
    assert_eq!(p.s.tcp_send_queued(h), 0);
    // The shared frame stays, the one the next small payloads go to, from its start.
    assert_eq!(before - p.s.pool().available(), 1);
    assert_eq!(p.s.tcp_mem_frames(), 1);
    p.s.tcp_send_slice(h, b"again", p.now).unwrap();
    let second = p.poll();
    p.advance(1_000);
    let c = &p.s.tcp.conns[h.idx as usize];
    assert_eq!(c.sndq.coalesced, 1);
    assert_eq!(c.sndq.segs[0].off, 0, "reused from its start");
    assert_eq!(before - p.s.pool().available(), 1);
    p.ack = second[0].seq + 5;
    p.send(&[p.seg(ACK, b"")]);
}

#[test]
fn small_received_segments_are_collapsed_when_the_connection_budget_is_reached() {
    // A 4 KiB receive buffer: a budget of 16 frames.
    let mut p = Peer::new();
    let o = SegmentOptions {
        mss: Some(1460),
        ..SegmentOptions::default()
    };
    let l =
        p.s.tcp_listen(
            SocketAddrV4::new(IP_A, 81),
            8,
            TcpOpts {
                rcv_buf: 4096,
                ..TcpOpts::default()
            },
        )
        .unwrap();
    p.port_a = 81;
    let mut syn = p.seg(SYN, b"");
    syn.opts = o;
    let synack = p.send(&[syn]).remove(0);
    p.seq = B_ISN + 1;
    p.ack = synack.seq + 1;
    p.send(&[p.seg(ACK, b"")]);
    let h = p.s.tcp_accept(l).unwrap();
    for i in 0..40u8 {
        p.push(p.seg(ACK | PSH, &[i; 3]));
    }
    assert_eq!(p.s.tcp_recv_pending(h), 120, "nothing dropped");
    assert!(p.s.counters().get(Event::TcpRcvCollapsed) > 0);
    assert_eq!(p.s.counters().drops(DropReason::TcpRcvMemory), 0);
    let got = p.recv_all(h);
    let want: Vec<u8> = (0..40u8).flat_map(|i| [i; 3]).collect();
    assert_eq!(got, want, "collapsing keeps the bytes in order");
}

#[test]
fn under_pressure_a_stalled_connection_over_its_share_is_reset_at_its_second_rto() {
    let mut p = Peer::with(|c| c.tcp_mem = [4, 6, 8]);
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    let n = p.s.tcp_send_slice(h, &pattern(10 * 1460), p.now).unwrap();
    assert_eq!(n, 10 * 1460);
    assert!(!p.poll().is_empty());
    assert!(p.s.tcp_mem_pressure(), "10 frames held, pressure at 6");
    // Over its share and in pressure, the writer waits (Linux sk_stream_memory_free).
    assert_eq!(p.s.tcp_can_send(h), memory::COALESCE_MAX);
    // The peer never ACKs: the first RTO retransmits, the second resets.
    let out = p.advance(250);
    assert!(out.iter().all(|s| s.flags & RST == 0));
    let out = p.advance(500);
    assert!(out.iter().any(|s| s.flags & RST != 0), "{out:?}");
    assert_eq!(p.s.counters().get(Event::TcpAbortOnMemory), 1);
    assert_eq!(p.s.tcp_take_error(h), Some(TcpError::TimedOut));
    assert_eq!(p.s.tcp_mem_frames(), 0);
    assert!(!p.s.tcp_mem_pressure());
}

#[test]
fn below_pressure_a_stalled_connection_is_left_to_its_retries() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, &pattern(10 * 1460), p.now).unwrap();
    let _ = p.poll();
    p.advance(10_000);
    assert_eq!(p.s.tcp_state(h), Some(TcpState::Established));
    assert_eq!(p.s.counters().get(Event::TcpAbortOnMemory), 0);
}

#[test]
fn under_pressure_out_of_order_data_waits_at_most_a_second() {
    let mut p = Peer::with(|c| c.tcp_mem = [2, 3, 40]);
    let h = p.accept_sack();
    ooo_flood(&mut p, 5);
    assert!(p.s.tcp_mem_pressure());
    assert_eq!(p.s.tcp_info(h).unwrap().ooo_bytes, 50);
    p.advance(999);
    assert_eq!(p.s.tcp_info(h).unwrap().ooo_bytes, 50);
    p.advance(2);
    assert_eq!(p.s.tcp_info(h).unwrap().ooo_bytes, 0);
    assert_eq!(p.s.counters().get(Event::TcpOfoTimeouts), 1);
    assert!(!p.s.tcp_mem_pressure());
}

/// Issue #12 item 6: whatever TCP sends, it takes no frame from the pool's reserve: control
/// segments stop at 1/32 of the pool free, data (first transmissions that must copy, and
/// retransmissions) at 1/16. What waited goes out once frames are back.
#[test]
fn tcp_never_takes_the_pools_reserved_frames() {
    let mut p = Peer::new();
    let h = p.accept();
    let idx = h.idx;
    let cap = p.s.pool().capacity();
    // Someone else (the driver, another protocol) holds everything but the control reserve.
    let mut held = Vec::new();
    while p.s.pool().available() > cap / 32 {
        held.push(p.s.pool_mut().alloc().unwrap());
    }
    let now = p.now;
    p.s.tcp_send_ack(idx, now);
    assert_eq!(p.poll(), vec![], "no ACK built from a reserved frame");
    assert_eq!(p.s.counters().drops(DropReason::TcpPoolReserve), 1);
    assert_eq!(p.s.pool().available(), cap / 32);
    // One frame above the control reserve: the ACK goes out.
    p.s.pool_mut().free(held.pop().unwrap());
    p.s.tcp_send_ack(idx, now);
    assert_eq!(p.poll().len(), 1);
    // A write that needs frames waits below the data reserve.
    assert!(p.s.tcp_send_slice(h, &[5; 100], now).is_err());
    assert_eq!(p.poll(), vec![], "no data segment from the reserve");
    assert!(p.s.pool().available() >= cap / 32);
    for f in held.drain(..) {
        p.s.pool_mut().free(f);
    }
    assert_eq!(p.s.tcp_send_slice(h, &[5; 100], now), Ok(100));
    let out = p.advance(1);
    assert_eq!(
        out.iter().map(|s| s.data.len()).sum::<usize>(),
        100,
        "{out:?}"
    );
}

/// Connections whose timers expire at the same moment (thousands stalled together) are run at
/// most `TIMER_BUDGET` per pass, so segments of other connections are processed in between;
/// the stack reports the rest as due at once, and the next pass runs them.
#[test]
fn timers_expiring_together_run_a_budget_per_pass() {
    let budget = crate::tcp::timers::TIMER_BUDGET;
    let mut p = Peer::new();
    let n = budget + 88;
    for _ in 0..n {
        p.s.tcp_connect(
            SocketAddrV4::new(IP_B, B_PORT),
            None,
            TcpOpts::default(),
            p.now,
        )
        .unwrap();
    }
    let _ = p.poll();
    // The initial RTO (1 s) of every SYN expires now.
    let t = p.now + Duration::from_millis(1_001);
    let mut out = crate::Batch::new();
    let rtos = |s: &Stack| s.counters().get(Event::TcpRtoExpirations) as usize;
    p.s.poll_tx(&mut out, t);
    assert_eq!(rtos(&p.s), budget, "one pass runs the budget");
    assert!(
        p.s.poll_timeout().is_some_and(|d| d <= t),
        "the rest is due now"
    );
    out.free_all(p.s.pool_mut());
    p.now = t;
    let _ = p.poll();
    assert_eq!(rtos(&p.s), n, "the next pass runs the rest");
    assert!(
        p.s.poll_timeout().is_some_and(|d| d > t),
        "nothing left waiting"
    );
}
