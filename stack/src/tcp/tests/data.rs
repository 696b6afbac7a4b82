//! ESTABLISHED: data transfer, zero copy, delayed ACK, Nagle.

use super::*;

#[test]
fn a_64k_transfer_arrives_intact_and_every_frame_comes_back() {
    let (mut p, ha, hb) = connected_pair(TcpOpts::default(), TcpOpts::default());
    let data = pattern(64 * 1024 + 77);
    let got = pump(&mut p, ha, hb, &data, 2000);
    assert!(got == data, "data arrives intact and in order");
    p.advance(Duration::from_millis(100));
    let info = p.a.tcp_info(ha).unwrap();
    assert_eq!(
        info.retransmits, 0,
        "a lossless wire needs no retransmission"
    );
    assert_eq!(info.bytes_acked, data.len() as u64);
    assert!(info.sack && info.timestamps && info.wscale.is_some());
    p.a.tcp_close(ha, p.now);
    p.b.tcp_close(hb, p.now);
    p.advance(Duration::from_secs(61));
    assert_eq!(p.a.tcp_connections() + p.b.tcp_connections(), 0);
    p.assert_no_leak();
}

#[test]
fn both_directions_at_once_with_newreno_and_cubic() {
    let o = |c| TcpOpts {
        congestion: c,
        ..TcpOpts::default()
    };
    let (mut p, ha, hb) = connected_pair(o(Congestion::NewReno), o(Congestion::Cubic));
    let up = pattern(100_000);
    let down: Vec<u8> = pattern(90_000).into_iter().rev().collect();
    let (mut su, mut sd) = (0, 0);
    let (mut gu, mut gd) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 8192];
    for _ in 0..2000 {
        su += p.a.tcp_send_slice(ha, &up[su..], p.now).unwrap();
        sd += p.b.tcp_send_slice(hb, &down[sd..], p.now).unwrap();
        p.settle();
        loop {
            let n = p.b.tcp_recv_slice(hb, &mut buf);
            gu.extend_from_slice(&buf[..n]);
            let m = p.a.tcp_recv_slice(ha, &mut buf);
            gd.extend_from_slice(&buf[..m]);
            if n + m == 0 {
                break;
            }
        }
        if gu.len() == up.len() && gd.len() == down.len() {
            break;
        }
        p.advance(Duration::from_millis(1));
    }
    assert!(gu == up && gd == down);
    assert_eq!(p.a.tcp_info(ha).unwrap().congestion, Congestion::NewReno);
    assert_eq!(p.b.tcp_info(hb).unwrap().congestion, Congestion::Cubic);
}

#[test]
fn a_frame_sent_with_headroom_leaves_zero_copy_and_is_kept_until_acked() {
    let mut p = Peer::new();
    let h = p.accept();
    let f = p.s.tcp_alloc().unwrap();
    let idx = f.index();
    p.s.pool_mut().push_back(&f, 1000).unwrap().fill(0xab);
    p.s.tcp_send(h, f, p.now).unwrap();
    let mut out = crate::buf::Batch::new();
    p.s.poll_tx(&mut out, p.now);
    assert_eq!(out.len(), 1);
    let tx = out.pop().unwrap();
    assert_eq!(
        tx.index(),
        idx,
        "the segment leaves from the application's frame"
    );
    assert_eq!(
        p.s.pool().refs(&tx),
        2,
        "the send queue keeps its own reference"
    );
    let bytes = p.s.pool().data(&tx).to_vec();
    p.s.pool_mut().free(tx);
    let seg = &parse_out(vec![bytes])[0];
    assert_eq!(seg.data, vec![0xab; 1000]);
    assert_eq!(p.s.tcp_send_queued(h), 1000);
    p.ack = seg.seq + 1000;
    p.send(&[p.seg(ACK, b"")]);
    assert_eq!(p.s.tcp_send_queued(h), 0);
    assert_eq!(
        p.s.pool().available(),
        p.s.pool().capacity(),
        "acked frame freed"
    );
}

#[test]
fn received_data_is_handed_out_as_frames_holding_only_payload() {
    let mut p = Peer::new();
    let h = p.accept();
    p.push(p.seg(ACK | PSH, b"hello"));
    p.push(p.seg(ACK | PSH, b" world"));
    assert_eq!(p.s.tcp_recv_pending(h), 11);
    let f = p.s.tcp_recv(h).unwrap();
    assert_eq!(p.s.pool().data(&f), b"hello");
    p.s.pool_mut().free(f);
    let mut b = [0u8; 3];
    assert_eq!(p.s.tcp_recv_slice(h, &mut b), 3);
    assert_eq!(&b, b" wo");
    assert_eq!(p.recv_all(h), b"rld");
}

#[test]
fn delayed_ack_after_quickack_every_second_full_segment_or_40ms() {
    let mut p = Peer::new();
    let _h = p.accept();
    // Quick-ack mode: the first segments are acknowledged at once.
    for _ in 0..16 {
        let out = p.push(p.seg(ACK, &[1; 100]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ack, p.seq);
    }
    // Then one small segment waits for the delayed-ACK timer...
    assert!(p.push(p.seg(ACK, &[1; 100])).is_empty());
    let out = p.advance(39);
    assert!(out.is_empty());
    let out = p.advance(1);
    assert_eq!(out.len(), 1, "ACK after 40 ms");
    assert_eq!(out[0].ack, p.seq);
    assert_eq!(p.s.counters().get(Event::TcpDelayedAcks), 1);
    // ... and two full-sized segments are acknowledged at once.
    assert!(p.push(p.seg(ACK, &[2; 1460])).is_empty());
    let out = p.push(p.seg(ACK, &[2; 1460]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, p.seq);
}

#[test]
fn nagle_holds_a_small_segment_while_data_is_unacked_and_nodelay_does_not() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_send_slice(h, b"first", p.now).unwrap();
    assert_eq!(p.poll().len(), 1, "nothing in flight: sent at once");
    p.s.tcp_send_slice(h, b"second", p.now).unwrap();
    assert!(p.poll().is_empty(), "Nagle: waits for the ACK");
    p.ack = p.ack.wrapping_add(5);
    let out = p.send(&[p.seg(ACK, b"")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, b"second");
    p.s.tcp_set_nodelay(h, true, p.now);
    p.s.tcp_send_slice(h, b"third", p.now).unwrap();
    let out = p.poll();
    assert_eq!(out.len(), 1, "nodelay: sent although 'second' is unacked");
    assert_eq!(out[0].data, b"third");
}

#[test]
fn small_writes_coalesce_into_one_segment() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_send_slice(h, b"a", p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    for _ in 0..10 {
        p.s.tcp_send_slice(h, b"bc", p.now).unwrap();
    }
    p.ack = p.ack.wrapping_add(1);
    let out = p.send(&[p.seg(ACK, b"")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, b"bcbcbcbcbcbcbcbcbcbc");
}

/// The payload sum computed while copying a write in (issue #17) is kept across appends to the
/// unsent tail, odd lengths included (the appended piece's sum swapped), and gives the right
/// checksum: `parse_out` verifies every segment A emits.
#[test]
fn payload_sums_of_appended_odd_writes_give_right_checksums() {
    let mut p = Peer::new();
    let h = p.accept();
    p.s.tcp_send_slice(h, b"a", p.now).unwrap();
    assert_eq!(p.poll().len(), 1);
    let data = pattern(3 + 65 + 7 + 130 + 1 + 99 + 256);
    let mut at = 0;
    for n in [3, 65, 7, 130, 1, 99, 256] {
        p.s.tcp_send_slice(h, &data[at..at + n], p.now).unwrap();
        at += n;
    }
    let idx = p.s.conn_of(h).unwrap();
    let q = &p.s.tcp.conns[idx as usize].sndq;
    assert_eq!(
        q.segs.len(),
        2,
        "the first byte, then one entry of the merged writes"
    );
    assert!(q.segs[1].payload_sum().is_some(), "sum kept across appends");
    p.ack = p.ack.wrapping_add(1);
    let out = p.send(&[p.seg(ACK, b"")]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, data);
}

/// Segments of a flow the output cache knows (issue #17) leave with the same Ethernet and IPv4
/// headers the routed path writes (DF, TTL, ident, header checksum), as a byte comparison of the
/// first frame (routed, fills the cache) and the second (cached) shows.
#[test]
fn cached_flow_segments_have_the_routed_paths_headers() {
    let mut p = Peer::new();
    let h = p.accept();
    let mut frames = Vec::new();
    for (i, n) in [(0u32, 100usize), (100, 200)] {
        p.s.tcp_send_slice(h, &pattern(n), p.now).unwrap();
        frames.extend(feed(&mut p.s, &[], p.now));
        p.ack = p.ack.wrapping_add(n as u32);
        assert!(p.send(&[p.seg(ACK, b"")]).is_empty(), "write at {i}");
    }
    assert!(
        p.s.flows.get(IP_B, p.now).is_some(),
        "the first segment filled the cache"
    );
    assert_eq!(frames.len(), 2);
    for f in &frames {
        assert_eq!(
            crate::wire::checksum::checksum(&f[14..34]),
            0,
            "IPv4 header checksum"
        );
    }
    let (a, b) = (&frames[0], &frames[1]);
    // Ethernet, version/IHL, TOS, flags/fragment, TTL, protocol, addresses: equal. Total length
    // follows the payload, the ident the count.
    assert_eq!(a[..16], b[..16]);
    assert_eq!(a[20..24], b[20..24]);
    assert_eq!(a[26..34], b[26..34]);
    assert_eq!(u16::from_be_bytes([b[16], b[17]]), 20 + 20 + 200);
    let ident = |f: &[u8]| u16::from_be_bytes([f[18], f[19]]);
    assert_eq!(ident(b), ident(a).wrapping_add(1));
    assert_eq!(a[20] & 0x40, 0x40, "DF");
}

/// Sends `n` in-order segments of `len` bytes from B in one burst; returns A's answer.
fn burst(p: &mut Peer, n: usize, len: usize) -> Vec<S> {
    let mut segs = Vec::new();
    for _ in 0..n {
        let s = p.seg(ACK, &vec![3; len]);
        p.seq = p.seq.wrapping_add(len as u32);
        segs.push(s);
    }
    p.send(&segs)
}

#[test]
fn one_ack_per_burst_and_full_bursts_wait_for_the_end_of_the_receive_pass() {
    let mut p = Peer::new();
    let h = p.accept();
    for _ in 0..16 {
        assert_eq!(p.push(p.seg(ACK, &[1; 100])).len(), 1, "quick-ack");
    }
    // A burst that is not full: its in-order segments get one ACK covering all of them.
    let out = burst(&mut p, 10, 1460);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, p.seq);
    p.recv_all(h);
    p.poll(); // the window update, if the read opened the window enough
              // A full burst (the driver may have more): the ACK waits for the end of the pass...
    let out = burst(&mut p, crate::BURST, 200);
    assert!(out.is_empty(), "{out:?}");
    assert!(p.poll().is_empty());
    // ... which the host signals after its last burst.
    p.s.tcp_rx_done();
    let out = p.poll();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, p.seq);
    p.recv_all(h);
    p.poll(); // the window update, if the read opened the window enough
              // Without that signal: the next burst that is not full, here a single segment.
    assert!(burst(&mut p, crate::BURST, 200).is_empty());
    let out = burst(&mut p, 1, 100);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, p.seq);
    p.recv_all(h);
    p.poll(); // the window update, if the read opened the window enough
              // Or, with nothing more arriving, the delayed-ACK timer.
    assert!(burst(&mut p, crate::BURST, 200).is_empty());
    let out = p.advance(40);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, p.seq);
    p.recv_all(h);
    p.poll(); // the window update, if the read opened the window enough
              // Held data is bounded: past a quarter of the receive buffer (here the 64 KiB window
              // without scaling) the burst's ACK goes at once, at its end.
    let out = burst(&mut p, crate::BURST, 500);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].ack, p.seq);
    p.s.tcp_rx_done();
    assert!(p.poll().is_empty(), "nothing left to acknowledge");
    assert_eq!(p.recv_all(h).len(), 64 * 500);
}

#[test]
fn a_full_burst_with_a_gap_is_acknowledged_at_once() {
    let mut p = Peer::new();
    let _h = p.accept();
    for _ in 0..16 {
        assert_eq!(p.push(p.seg(ACK, &[1; 100])).len(), 1, "quick-ack");
    }
    let acked = p.seq;
    let mut segs = Vec::new();
    for i in 0..crate::BURST {
        let s = p.seg(ACK, &[4; 500]);
        p.seq = p.seq.wrapping_add(500);
        if i != 1 {
            segs.push(s);
        }
    }
    let out = p.send(&segs[..crate::BURST - 1]);
    // RFC 5681 4.2: out-of-order data is acknowledged without delay (one duplicate ACK for
    // the burst, at its end).
    assert!(!out.is_empty(), "{out:?}");
    assert!(out.iter().all(|s| s.ack == acked + 500), "{out:?}");
}
