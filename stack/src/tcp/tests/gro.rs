//! The receive fast path and software GRO (issue #17): in-order segments of one burst share a
//! receive-queue entry, the accounting stays per frame, and the fast path does exactly what the
//! full path does (checked against it segment by segment).

use super::*;

/// Index of the connection behind a handle.
fn conn(p: &Peer, h: TcpHandle) -> &Conn {
    p.s.tcp.get(h).expect("open")
}

/// B's next `n` segments of `len` bytes each, in order, as one burst's worth.
fn run(p: &mut Peer, n: usize, len: usize, fill: u8) -> Vec<S> {
    let mut v = Vec::new();
    for i in 0..n {
        let s = p.seg(ACK, &vec![fill.wrapping_add(i as u8); len]);
        p.seq = p.seq.wrapping_add(len as u32);
        v.push(s);
    }
    v
}

#[test]
fn a_burst_of_in_order_segments_becomes_one_entry_handed_out_frame_by_frame() {
    let mut p = Peer::new();
    let h = p.accept();
    let segs = run(&mut p, 4, 1000, 1);
    p.send(&segs);
    let c = conn(&p, h);
    assert_eq!(c.rxq.len(), 1, "one chain for the burst");
    assert_eq!(c.rx_frames, 4, "accounting stays per frame");
    assert_eq!(c.rcv_queued, 4000);
    assert_eq!(p.s.pool().chain_count(&c.rxq[0]), 4);
    assert_eq!(p.s.tcp_mem_audit().0, 4);
    // tcp_recv: one segment per call, as they arrived, flags cleared.
    for i in 0..4u8 {
        let f = p.s.tcp_recv(h).expect("a frame");
        assert!(p.s.pool().is_single(&f));
        assert_eq!(p.s.pool().flags(&f), 0);
        assert_eq!(p.s.pool().data(&f), &[1 + i; 1000][..]);
        p.s.pool_mut().free(f);
        assert_eq!(conn(&p, h).rx_frames, 3 - u32::from(i));
        let (charged, counted) = p.s.tcp_mem_audit();
        assert_eq!((charged, counted), (3 - usize::from(i), 3 - usize::from(i)));
    }
    assert!(p.s.tcp_recv(h).is_none());
    assert_eq!(p.s.tcp_recv_pending(h), 0);
    assert_eq!(p.s.pool().available(), p.s.pool().capacity());
}

#[test]
fn without_coalescing_every_segment_keeps_its_own_entry() {
    let mut p = Peer::new();
    p.s.tcp_set_rx_coalesce(false);
    let h = p.accept();
    let segs = run(&mut p, 4, 1000, 1);
    p.send(&segs);
    let c = conn(&p, h);
    assert_eq!((c.rxq.len(), c.rx_frames), (4, 4), "one entry per segment");
    let f = p.s.tcp_recv_chain(h).unwrap();
    assert!(p.s.pool().is_single(&f));
    p.s.pool_mut().free(f);
    assert_eq!(p.recv_all(h).len(), 3000);
}

#[test]
fn tcp_recv_chain_takes_a_burst_whole_and_a_second_burst_starts_a_new_entry() {
    let mut p = Peer::new();
    let h = p.accept();
    let segs = run(&mut p, 3, 1460, 10);
    p.send(&segs);
    let segs = run(&mut p, 2, 700, 20);
    p.send(&segs);
    assert_eq!(conn(&p, h).rxq.len(), 2, "one entry per burst");
    let f = p.s.tcp_recv_chain(h).expect("the first burst");
    assert_eq!(p.s.pool().chain_count(&f), 3);
    assert_eq!(p.s.pool().chain_len(&f), 3 * 1460);
    assert_eq!(p.s.pool().flags(&f), 0);
    p.s.pool_mut().free(f);
    assert_eq!(conn(&p, h).rx_frames, 2);
    assert_eq!(p.s.tcp_recv_pending(h), 1400);
    let f = p.s.tcp_recv_chain(h).expect("the second burst");
    let mut v = vec![0u8; 1400];
    assert_eq!(p.s.pool().chain_copy_to(&f, &mut v), 1400);
    assert_eq!(&v[..700], &[20; 700][..]);
    assert_eq!(&v[700..], &[21; 700][..]);
    p.s.pool_mut().free(f);
    assert_eq!(p.s.tcp_mem_audit(), (0, 0));
}

#[test]
fn small_segments_keep_entries_of_their_own_and_other_flows_break_a_chain() {
    let mut p = Peer::new();
    let h = p.accept();
    // Small, large, large, small, large: the two large in a row share an entry.
    let mut segs = run(&mut p, 1, 100, 1);
    segs.extend(run(&mut p, 2, 1000, 2));
    segs.extend(run(&mut p, 1, 200, 4));
    segs.extend(run(&mut p, 1, 1000, 5));
    p.send(&segs);
    let c = conn(&p, h);
    let counts: Vec<usize> = c.rxq.iter().map(|f| p.s.pool().chain_count(f)).collect();
    assert_eq!(counts, [1, 2, 1, 1]);
    assert_eq!(c.rx_frames, 5);
    let got = p.recv_all(h);
    let mut want = vec![1u8; 100];
    want.extend([2u8; 1000]);
    want.extend([3u8; 1000]);
    want.extend([4u8; 200]);
    want.extend([5u8; 1000]);
    assert!(got == want);
    assert_eq!(p.s.pool().available(), p.s.pool().capacity());
}

#[test]
fn partial_reads_free_each_frame_of_a_chain_as_soon_as_it_is_read() {
    let mut p = Peer::new();
    let h = p.accept();
    let segs = run(&mut p, 4, 1000, 1);
    p.send(&segs);
    let free0 = p.s.pool().available();
    let mut b = vec![0u8; 2500];
    assert_eq!(p.s.tcp_recv_slice(h, &mut b), 2500);
    assert_eq!(&b[..1000], &[1; 1000][..]);
    assert_eq!(&b[2000..], &[3; 500][..]);
    assert_eq!(
        p.s.pool().available(),
        free0 + 2,
        "two frames read whole, freed"
    );
    let c = conn(&p, h);
    assert_eq!((c.rx_frames, c.rcv_queued, c.rxq.len()), (2, 1500, 1));
    assert_eq!(p.s.tcp_mem_audit(), (2, 2));
    // The rest of the chain is still one entry, still split by tcp_recv.
    let f = p.s.tcp_recv(h).unwrap();
    assert_eq!(p.s.pool().data(&f), &[3; 500][..]);
    p.s.pool_mut().free(f);
    assert_eq!(p.recv_all(h), vec![4u8; 1000]);
    assert_eq!(p.s.pool().available(), p.s.pool().capacity());
}

#[test]
fn a_small_segment_is_collapsed_into_the_last_frame_of_a_chain() {
    let mut p = Peer::new();
    let h = p.accept();
    let mut segs = run(&mut p, 2, 1000, 1);
    segs.extend(run(&mut p, 1, 100, 3));
    p.send(&segs);
    assert_eq!(conn(&p, h).rxq.len(), 2);
    let idx = h.idx;
    p.s.tcp_collapse_rxq(idx);
    let c = conn(&p, h);
    assert_eq!(
        c.rxq.len(),
        1,
        "the small segment went into the chain's tail"
    );
    assert_eq!((c.rx_frames, c.rcv_queued), (2, 2100));
    assert_eq!(p.s.counters().get(Event::TcpRcvCollapsed), 1);
    assert_eq!(
        p.s.tcp_mem_audit().0,
        p.s.tcp_mem_audit().1 + 1,
        "synced lazily"
    );
    p.s.tcp_mem_sync(idx);
    assert_eq!(p.s.tcp_mem_audit(), (2, 2));
    let mut want = vec![1u8; 1000];
    want.extend([2u8; 1000]);
    want.extend([3u8; 100]);
    assert!(p.recv_all(h) == want);
}

/// A small random generator (xorshift), deterministic per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % m
    }
}

/// The fast path against the full path: the same scripted peer (in-order runs, gaps, duplicates,
/// segments beyond the window, old timestamps, pure ACKs, full bursts, ends of receive passes,
/// a FIN) against two stacks, one with the fast path off. Every segment A emits, every counter,
/// the connection's state and the bytes read must be equal.
#[test]
fn the_fast_path_does_exactly_what_the_full_path_does() {
    let mut any_deferred = false;
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let opts = SegmentOptions {
            mss: Some(1460),
            wscale: Some(2),
            sack_permitted: seed % 2 == 0,
            timestamps: (seed % 3 != 0).then_some((100, 0)),
            ..SegmentOptions::default()
        };
        let mut fast = Peer::new();
        // GRO off for the fast path's stack on even seeds: either way nothing visible changes.
        fast.s.tcp_set_rx_coalesce(seed % 2 == 1);
        let mut full = Peer::new();
        full.s.tcp.rx_fast_off = true;
        let (hf, _) = fast.accept_with(opts.clone());
        let (hs, _) = full.accept_with(opts.clone());
        let (mut tsval, mut seq) = (200u32, fast.seq);
        let (mut read_f, mut read_s) = (Vec::new(), Vec::new());
        let mut deferred = false;
        for step in 0..150 {
            let mut burst = Vec::new();
            // Now and then a full burst (`BURST` segments): ACKs of in-order data wait for the
            // end of the receive pass (`F_ACK_DEFER`), which the fast path must keep too.
            let n = if rng.next(6) == 0 {
                crate::BURST as u64
            } else {
                1 + rng.next(12)
            };
            for _ in 0..n {
                let len = match rng.next(4) {
                    0 => 1 + rng.next(256) as usize,
                    _ => 257 + rng.next(1204) as usize,
                };
                let mut s = fast.seg(ACK, &vec![(seq % 251) as u8; len]);
                s.seq = match rng.next(16) {
                    0 => seq.wrapping_add(1 + rng.next(3000) as u32), // a gap
                    1 => seq.wrapping_sub(rng.next(2000) as u32),     // old data
                    2 => seq.wrapping_add(300_000),                   // beyond the window
                    _ => seq,
                };
                if rng.next(8) == 0 {
                    s.flags |= PSH;
                }
                if rng.next(20) == 0 {
                    s.data.clear(); // a pure ACK
                }
                if opts.timestamps.is_some() {
                    tsval = tsval.wrapping_add(rng.next(2) as u32);
                    let v = if rng.next(25) == 0 { tsval - 50 } else { tsval };
                    s.opts.timestamps = Some((v, 0));
                }
                if s.seq == seq {
                    seq = seq.wrapping_add(s.data.len() as u32);
                }
                burst.push(s);
            }
            if step == 149 {
                let mut f = fast.seg(ACK | FIN, b"");
                f.seq = seq;
                burst.truncate(crate::BURST - 1);
                burst.push(f);
            }
            let out_f = fast.send(&burst);
            let out_s = full.send(&burst);
            assert_eq!(out_f, out_s, "seed {seed} step {step}: A's segments");
            deferred |= conn(&fast, hf).has(F_ACK_DEFER);
            if rng.next(4) == 0 {
                // The end of a receive pass.
                fast.s.tcp_rx_done();
                full.s.tcp_rx_done();
                assert_eq!(
                    fast.poll(),
                    full.poll(),
                    "seed {seed} step {step}: end of pass"
                );
            }
            if rng.next(3) == 0 {
                let mut b = vec![0u8; rng.next(9000) as usize];
                let n = fast.s.tcp_recv_slice(hf, &mut b);
                read_f.extend_from_slice(&b[..n]);
                let n = full.s.tcp_recv_slice(hs, &mut b);
                read_s.extend_from_slice(&b[..n]);
            }
            if rng.next(10) == 0 {
                let ms = rng.next(50);
                assert_eq!(fast.advance(ms), full.advance(ms), "seed {seed} timers");
            }
            assert_eq!(
                fast.s.tcp_info(hf),
                full.s.tcp_info(hs),
                "seed {seed} step {step}"
            );
            assert_eq!(fast.s.tcp_recv_pending(hf), full.s.tcp_recv_pending(hs));
            assert_eq!(fast.s.tcp_mem_frames(), full.s.tcp_mem_frames());
            let (cf, cs) = (conn(&fast, hf), conn(&full, hs));
            assert_eq!(
                (
                    cf.rx_frames,
                    cf.flags,
                    cf.ts_recent,
                    cf.t_delack,
                    cf.quickack
                ),
                (
                    cs.rx_frames,
                    cs.flags,
                    cs.ts_recent,
                    cs.t_delack,
                    cs.quickack
                ),
                "seed {seed} step {step}: connection state"
            );
        }
        read_f.extend(fast.recv_all(hf));
        read_s.extend(full.recv_all(hs));
        assert!(read_f == read_s, "seed {seed}: the same bytes");
        assert_eq!(
            format!("{:?}", fast.s.counters()),
            format!("{:?}", full.s.counters()),
            "seed {seed}: every counter"
        );
        assert!(fast.s.tcp_recv_finished(hf) == full.s.tcp_recv_finished(hs));
        any_deferred |= deferred;
    }
    assert!(any_deferred, "some full burst deferred its ACK");
}
