//! Data segments from a header template (issue #17, `output::TxTemplate`) against the general
//! path: the same script run twice, once with templates and once without, must put the same
//! frames on the wire, byte for byte (Ethernet, IPv4, TCP headers, options, checksums,
//! payload), and count the same.

use super::*;
use crate::buf::Batch;
use crate::tcp::output::TMPL_TEST;

/// Runs `f` with templates on or off; returns every frame A sent, A's counters' text and how
/// many data segments came from a template.
fn run(off: bool, f: impl FnOnce(&mut Peer, &mut Vec<Vec<u8>>)) -> (Vec<Vec<u8>>, String, u64) {
    TMPL_TEST.with(|t| t.set((off, 0)));
    let mut p = Peer::new();
    let mut frames = Vec::new();
    f(&mut p, &mut frames);
    let counters = format!("{:?}", p.s.counters());
    (frames, counters, TMPL_TEST.with(|t| t.get().1))
}

/// Both runs of `script`: equal frames and counters, and the template path taken.
fn same_on_the_wire(script: impl Fn(&mut Peer, &mut Vec<Vec<u8>>)) {
    let (general, c_general, n_general) = run(true, &script);
    let (tmpl, c_tmpl, n_tmpl) = run(false, &script);
    assert_eq!(n_general, 0, "templates off");
    assert!(n_tmpl > 0, "the template path was taken");
    assert_eq!(general.len(), tmpl.len(), "as many frames");
    for (i, (g, t)) in general.iter().zip(&tmpl).enumerate() {
        assert_eq!(g.len(), t.len(), "frame {i}: length");
        assert_eq!(g[..14], t[..14], "frame {i}: Ethernet header");
        assert_eq!(g[14..34], t[14..34], "frame {i}: IPv4 header");
        let hl = usize::from(g[34 + 12] >> 4) * 4;
        assert_eq!(g[34..34 + hl], t[34..34 + hl], "frame {i}: TCP header");
        assert!(g[34 + hl..] == t[34 + hl..], "frame {i}: payload");
    }
    assert_eq!(c_general, c_tmpl, "the same counters");
    // Both are right, too (A's checksums, options).
    assert_eq!(parse_out(tmpl).len(), general.len());
}

/// Delivers B's segment to A; keeps what A sends.
fn to_a(p: &mut Peer, out: &mut Vec<Vec<u8>>, s: &S) {
    let frame = p.frame(s);
    out.extend(feed(&mut p.s, &[frame], p.now));
}

/// B acknowledges up to `ack` with window `wnd`.
fn ack(p: &mut Peer, out: &mut Vec<Vec<u8>>, ack: u32, wnd: u16, ts: Option<(u32, u32)>) {
    p.ack = ack;
    let mut s = p.seg(ACK, b"");
    s.wnd = wnd;
    s.opts.timestamps = ts;
    to_a(p, out, &s);
}

/// A script: bursts of full segments with PSH at the end of each write, a window that cuts a
/// queue entry (its pieces are copied), an RTO retransmission of everything in flight, data
/// from B out of order (A's segments then carry SACK blocks and go the general way), a
/// retransmission while the driver still holds the first transmission (copied), and a FIN.
fn script(opts: SegmentOptions) -> impl Fn(&mut Peer, &mut Vec<Vec<u8>>) {
    move |p, out| {
        let ts_on = opts.timestamps.is_some();
        let wshift = opts.wscale.unwrap_or(0);
        let (h, _) = p.accept_with(opts.clone());
        let ts = |p: &Peer| ts_on.then(|| (100 + p.now.total_millis() as u32, 0));
        let snd_max = |p: &Peer| p.s.tcp.get(h).unwrap().snd_max;
        let retransmits = |p: &Peer| p.s.tcp_info(h).unwrap().retransmits;
        // B acknowledges everything sent so far, offering `wnd` bytes.
        let ack_all = |p: &mut Peer, out: &mut Vec<Vec<u8>>, wnd: u32| {
            p.now = p.now + Duration::from_millis(5);
            ack(p, out, snd_max(p), (wnd >> wshift) as u16, ts(p));
        };
        // 1. One write of 20 000 bytes: several segments per `tcp_send_data` call.
        p.s.tcp_send_slice(h, &pattern(20_000), p.now).unwrap();
        out.extend(feed(&mut p.s, &[], p.now));
        for _ in 0..4 {
            ack_all(p, out, 65535);
        }
        assert_eq!(p.s.tcp_send_queued(h), 0, "all acknowledged");
        // 2. A window of 1000 bytes: part of an entry, then the rest from its middle.
        ack_all(p, out, 1000);
        let before = out.len();
        p.s.tcp_send_slice(h, &pattern(3000), p.now).unwrap();
        out.extend(feed(&mut p.s, &[], p.now));
        let first = &parse_out(out[before..].to_vec())[0];
        assert_eq!(
            first.data.len(),
            (1000 >> wshift) << wshift,
            "cut by the window"
        );
        ack_all(p, out, 65535);
        ack_all(p, out, 65535);
        // 3. In flight, no ACK: the RTO sends it again.
        p.s.tcp_send_slice(h, &pattern(4000), p.now).unwrap();
        out.extend(feed(&mut p.s, &[], p.now));
        for _ in 0..100 {
            if retransmits(p) > 0 {
                break;
            }
            p.now = p.now + Duration::from_millis(50);
            out.extend(feed(&mut p.s, &[], p.now));
        }
        assert!(retransmits(p) > 0, "RTO");
        for _ in 0..4 {
            ack_all(p, out, 65535);
        }
        // 4. B's data out of order: A's next segments carry SACK blocks (if permitted).
        let mut s = p.seg(ACK, &[9; 100]);
        s.seq = s.seq.wrapping_add(500);
        s.opts.timestamps = ts(p);
        to_a(p, out, &s);
        let before = out.len();
        p.s.tcp_send_slice(h, &pattern(300), p.now).unwrap();
        out.extend(feed(&mut p.s, &[], p.now));
        if opts.sack_permitted {
            let segs = parse_out(out[before..].to_vec());
            assert!(
                segs.iter()
                    .any(|s| !s.data.is_empty() && !s.opts.sack.is_empty()),
                "data with SACK blocks: {segs:?}"
            );
        }
        ack_all(p, out, 65535);
        let mut s = p.seg(ACK, &[8; 600]);
        s.opts.timestamps = ts(p);
        p.seq = p.seq.wrapping_add(600);
        to_a(p, out, &s);
        assert_eq!(p.recv_all(h).len(), 600);
        ack_all(p, out, 65535);
        // 5. Sent, still in the driver's hands when the RTO fires: the retransmission is a copy.
        let r = retransmits(p);
        p.s.tcp_send_slice(h, &pattern(1000), p.now).unwrap();
        let mut held = Batch::new();
        p.s.poll_tx(&mut held, p.now);
        assert_eq!(held.len(), 1);
        for _ in 0..100 {
            if retransmits(p) > r {
                break;
            }
            p.now = p.now + Duration::from_millis(100);
            out.extend(feed(&mut p.s, &[], p.now));
        }
        assert!(retransmits(p) > r, "RTO");
        for f in held.drain() {
            out.push(p.s.pool().data(&f).to_vec());
            p.s.pool_mut().free(f);
        }
        ack_all(p, out, 65535);
        // 6. FIN.
        p.s.tcp_close(h, p.now);
        out.extend(feed(&mut p.s, &[], p.now));
    }
}

#[test]
fn template_segments_equal_the_general_paths_without_options() {
    same_on_the_wire(script(SegmentOptions {
        mss: Some(1460),
        ..SegmentOptions::default()
    }));
}

#[test]
fn template_segments_equal_the_general_paths_with_timestamps_and_sack() {
    same_on_the_wire(script(SegmentOptions {
        mss: Some(1460),
        sack_permitted: true,
        timestamps: Some((7, 0)),
        wscale: Some(7),
        ..SegmentOptions::default()
    }));
}
