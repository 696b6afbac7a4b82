//! TCP segments and options: the parser alone (emit/parse round trip of what it accepts), then
//! segments through a stack that has a listener and a connection.

use crate::harness::*;
use crate::input::Input;
use cnet_stack::tcp::wire::{self, Emit, TCP_HLEN, TCP_MAX_HLEN};
use cnet_stack::tcp::TcpOpts;
use cnet_stack::wire::checksum;
use cnet_stack::{Duration, Instant};
use core::net::SocketAddrV4;

const TCP: u8 = 6;

/// Sets the TCP checksum of `seg` sent from the peer to us.
fn fix_tcp_checksum(seg: &mut [u8]) {
    if seg.len() < 18 {
        return;
    }
    seg[16..18].copy_from_slice(&[0, 0]);
    let s = checksum::pseudo_header(PEER_IP, OUR_IP, TCP, seg.len() as u32)
        + u64::from(checksum::fold(checksum::sum(seg)));
    seg[16..18].copy_from_slice(&(!checksum::fold(s)).to_be_bytes());
}

/// TCP: the first byte chooses fix-ups (bit 0: checksum, bit 1: SYN to the listener's port,
/// bit 2: to the connection's ports), the rest is the segment. The parser must agree with itself
/// after emit (every option it accepted is written back and re-parsed to the same values); then
/// the segment goes to a stack listening on port 80 with a connection open to the peer's port
/// 5000, twice (the second time 3 s later, after timers ran). Every frame must be accounted for.
pub fn tcp(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let mut seg = inp.bytes(1400).to_vec();
    if let Ok(h) = wire::parse(&seg, seg.len()) {
        assert!(h.hdr_len >= TCP_HLEN && h.hdr_len <= TCP_MAX_HLEN && h.hdr_len <= seg.len());
        let e = Emit {
            src_port: h.src_port,
            dst_port: h.dst_port,
            seq: h.seq,
            ack: h.ack,
            flags: h.flags,
            window: h.window,
            opts: h.opts.clone(),
        };
        let n = e.header_len();
        let mut b = vec![0u8; n];
        e.write(&mut b);
        let back = wire::parse(&b, n).expect("an emitted header parses");
        assert_eq!(
            (back.src_port, back.dst_port, back.seq),
            (h.src_port, h.dst_port, h.seq)
        );
        assert_eq!((back.flags, back.window), (h.flags, h.window));
        let fits = {
            let mut probe = e.clone();
            probe.opts.sack.clear();
            probe.header_len() + 4 + 8 * h.opts.sack.len() <= TCP_MAX_HLEN || h.opts.sack.is_empty()
        };
        if fits {
            assert_eq!(back.opts, h.opts, "options survive emit and parse");
        }
    }
    let mut s = new_stack(256, true, true);
    let now = Instant::from_millis(1);
    let l = s
        .tcp_listen(SocketAddrV4::new(OUR_IP, 80), 4, TcpOpts::default())
        .expect("fresh stack");
    let c = s
        .tcp_connect(
            SocketAddrV4::new(PEER_IP, 5000),
            Some(SocketAddrV4::new(OUR_IP, 4000)),
            TcpOpts::default(),
            now,
        )
        .expect("fresh stack");
    emitted_ipv4(&drain_tx(&mut s, now));
    if seg.len() >= 20 {
        if flags & 2 != 0 {
            seg[2..4].copy_from_slice(&80u16.to_be_bytes());
            seg[13] = (seg[13] & !0x17) | 0x02;
        } else if flags & 4 != 0 {
            seg[0..2].copy_from_slice(&5000u16.to_be_bytes());
            seg[2..4].copy_from_slice(&4000u16.to_be_bytes());
        }
    }
    if flags & 1 != 0 {
        fix_tcp_checksum(&mut seg);
    }
    let frame = ipv4_frame_to_us(TCP, &seg);
    for t in [now, now + Duration::from_secs(3)] {
        feed(&mut s, &[&frame], t);
        emitted_ipv4(&drain_tx(&mut s, t));
        if let Some(a) = s.tcp_accept(l) {
            let mut buf = [0u8; 256];
            while s.tcp_recv_slice(a, &mut buf) > 0 {}
            s.tcp_abort(a, t);
        }
        let mut buf = [0u8; 256];
        while s.tcp_recv_slice(c, &mut buf) > 0 {}
        emitted_ipv4(&drain_tx(&mut s, t));
        assert_accounted(&s, 0);
    }
    assert_no_leak(&mut s);
}
