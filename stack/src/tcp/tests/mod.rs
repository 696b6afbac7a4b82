//! TCP tests that read like traces.
//!
//! Two kinds of fixture: [`Peer`] puts the stack under test (A) opposite hand-built segments
//! from B and returns the exact segments A emits; [`crate::tests::Pair`] joins two stacks over a
//! lossless wire for end-to-end behaviour. Files are by state and feature.

mod close;
mod data;
mod gro;
mod handshake;
mod icmp;
mod lifetimes;
mod listen;
mod loss;
mod memory;
mod reneging;
mod rst;
mod template;
mod window;

use super::wire::{self, flags, Emit, SegmentOptions};
use super::*;
use crate::config::{ConfigEvent, Neighbor, StackConfig};
use crate::counters::{DropReason, Event};
use crate::tests::{feed, ipv4_frame, stack, IP_A, IP_B, MAC_A, MAC_B};
use crate::wire::checksum::{pseudo_header, Accumulator};
use crate::wire::PROTO_TCP;

pub const ACK: u8 = flags::ACK;
pub const SYN: u8 = flags::SYN;
pub const FIN: u8 = flags::FIN;
pub const RST: u8 = flags::RST;
pub const PSH: u8 = flags::PSH;

/// A segment, either crafted for B or captured from A.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub wnd: u16,
    pub opts: SegmentOptions,
    pub data: Vec<u8>,
}

/// The stack under test, A (198.18.0.1), and a scripted peer B (198.18.0.2:`B_PORT`).
pub struct Peer {
    pub s: Stack,
    pub now: Instant,
    /// B's next sequence number.
    pub seq: u32,
    /// What B acknowledges.
    pub ack: u32,
    pub port_a: u16,
}

pub const B_PORT: u16 = 40000;
pub const A_PORT: u16 = 80;
pub const B_ISN: u32 = 1_000_000;

pub fn cfg_with(f: impl FnOnce(&mut StackConfig)) -> Stack {
    let mut s = stack(MAC_A, IP_A, 512);
    f(&mut s.cfg);
    s.apply_config(
        ConfigEvent::NeighborSet(Neighbor {
            ip: IP_B,
            mac: MAC_B,
            permanent: true,
        }),
        Instant::ZERO,
    );
    let _ = feed(&mut s, &[], Instant::ZERO);
    s
}

pub fn parse_out(frames: Vec<Vec<u8>>) -> Vec<S> {
    frames
        .into_iter()
        .filter(|f| f.len() > 34 && f[23] == PROTO_TCP)
        .map(|f| {
            let l4 = &f[34..];
            let h = wire::parse(l4, l4.len()).expect("A emits well-formed segments");
            // Verify A's checksum.
            let mut acc = Accumulator::new(pseudo_header(IP_A, IP_B, PROTO_TCP, l4.len() as u32));
            acc.add(l4);
            assert_eq!(acc.finish(), 0, "A's checksum is right");
            S {
                sport: h.src_port,
                dport: h.dst_port,
                seq: h.seq,
                ack: h.ack,
                flags: h.flags,
                wnd: h.window,
                opts: h.opts,
                data: l4[h.hdr_len..].to_vec(),
            }
        })
        .collect()
}

impl Peer {
    pub fn new() -> Peer {
        Peer::with(|_| {})
    }

    pub fn with(f: impl FnOnce(&mut StackConfig)) -> Peer {
        Peer {
            s: cfg_with(f),
            now: Instant::ZERO,
            seq: B_ISN,
            ack: 0,
            port_a: A_PORT,
        }
    }

    /// B's segment as a frame.
    pub fn frame(&self, s: &S) -> Vec<u8> {
        let e = Emit {
            src_port: s.sport,
            dst_port: s.dport,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            window: s.wnd,
            opts: s.opts.clone(),
        };
        let hl = e.header_len();
        let mut l4 = vec![0u8; hl + s.data.len()];
        e.write(&mut l4[..hl]);
        l4[hl..].copy_from_slice(&s.data);
        let mut acc = Accumulator::new(pseudo_header(IP_B, IP_A, PROTO_TCP, l4.len() as u32));
        acc.add(&l4);
        let c = acc.finish();
        l4[16..18].copy_from_slice(&c.to_be_bytes());
        ipv4_frame(PROTO_TCP, &l4, IP_B, IP_A)
    }

    /// A segment from B with B's current seq/ack.
    pub fn seg(&self, fl: u8, data: &[u8]) -> S {
        S {
            sport: B_PORT,
            dport: self.port_a,
            seq: self.seq,
            ack: self.ack,
            flags: fl,
            wnd: 65535,
            opts: SegmentOptions::default(),
            data: data.to_vec(),
        }
    }

    /// Delivers segments to A and returns what A sends back (after flushing).
    pub fn send(&mut self, segs: &[S]) -> Vec<S> {
        let frames: Vec<Vec<u8>> = segs.iter().map(|s| self.frame(s)).collect();
        parse_out(feed(&mut self.s, &frames, self.now))
    }

    /// Sends one segment and advances B's sequence number past its data.
    pub fn push(&mut self, s: S) -> Vec<S> {
        self.seq = s.seq.wrapping_add(s.data.len() as u32);
        self.send(&[s])
    }

    /// What A sends (timers included) at the current time.
    pub fn poll(&mut self) -> Vec<S> {
        parse_out(feed(&mut self.s, &[], self.now))
    }

    /// Advances time by `ms`, running A's timers on the way; returns everything A sent.
    pub fn advance(&mut self, ms: u64) -> Vec<S> {
        let end = self.now + Duration::from_millis(ms);
        let mut out = Vec::new();
        loop {
            match self.s.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = t.max(self.now);
                    out.extend(self.poll());
                    if self.s.poll_timeout() == Some(t) && t == self.now {
                        // Lower-bound wake-ups cascade; never spin on the same instant.
                        self.now = self.now + Duration::from_micros(1);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        out.extend(self.poll());
        out
    }

    /// A listens on port 80; B performs the handshake (with `opts` on its SYN). Returns A's
    /// accepted handle and A's SYN-ACK.
    pub fn accept_with(&mut self, opts: SegmentOptions) -> (TcpHandle, S) {
        self.accept_with_rtt(opts, 0)
    }

    /// As [`Peer::accept_with`], B's ACK arriving `rtt_ms` after A's SYN-ACK (A's first RTT
    /// sample).
    pub fn accept_with_rtt(&mut self, opts: SegmentOptions, rtt_ms: u64) -> (TcpHandle, S) {
        let l = self
            .s
            .tcp_listen(SocketAddrV4::new(IP_A, A_PORT), 8, TcpOpts::default())
            .unwrap();
        let mut syn = self.seg(SYN, b"");
        let ts = opts.timestamps.map(|t| t.0);
        syn.opts = opts;
        let out = self.send(&[syn]);
        assert_eq!(out.len(), 1, "{out:?}");
        let synack = out[0].clone();
        assert_eq!(synack.flags, SYN | ACK);
        assert_eq!(synack.ack, B_ISN + 1);
        self.seq = B_ISN + 1;
        self.ack = synack.seq.wrapping_add(1);
        if rtt_ms > 0 {
            assert!(self.advance(rtt_ms).is_empty());
        }
        let mut ack = self.seg(ACK, b"");
        if let Some((v, _)) = synack.opts.timestamps {
            ack.opts.timestamps = Some((ts.unwrap_or(0) + 1, v));
        }
        let out = self.send(&[ack]);
        assert!(out.is_empty(), "{out:?}");
        let h = self.s.tcp_accept(l).expect("established connection queued");
        assert_eq!(self.s.tcp_state(h), Some(TcpState::Established));
        (h, synack)
    }

    /// Handshake without options (MSS 536 default... we send MSS 1460).
    pub fn accept(&mut self) -> TcpHandle {
        let o = SegmentOptions {
            mss: Some(1460),
            ..SegmentOptions::default()
        };
        self.accept_with(o).0
    }

    /// Handshake with SACK permitted (and MSS 1000 for round numbers) over a 10 ms round trip
    /// (SRTT 10 ms: a tail loss probe would come 20 ms after a flight, RFC 8985 7.2).
    pub fn accept_sack(&mut self) -> TcpHandle {
        let o = SegmentOptions {
            mss: Some(1000),
            sack_permitted: true,
            ..SegmentOptions::default()
        };
        self.accept_with_rtt(o, 10).0
    }

    pub fn recv_all(&mut self, h: TcpHandle) -> Vec<u8> {
        let mut v = vec![0u8; self.s.tcp_recv_pending(h)];
        let n = self.s.tcp_recv_slice(h, &mut v);
        v.truncate(n);
        v
    }
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Drives data from `src` to `dst` over a Pair until everything is received; returns it.
pub fn pump(
    p: &mut crate::tests::Pair,
    ha: TcpHandle,
    hb: TcpHandle,
    data: &[u8],
    limit_ms: u64,
) -> Vec<u8> {
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    for _ in 0..limit_ms {
        if sent < data.len() {
            sent += p.a.tcp_send_slice(ha, &data[sent..], p.now).unwrap();
        }
        p.settle();
        loop {
            let n = p.b.tcp_recv_slice(hb, &mut buf);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() == data.len() {
            return got;
        }
        p.advance(Duration::from_millis(1));
    }
    panic!("transfer stalled: {} of {} bytes", got.len(), data.len());
}

/// A connected pair: A connects to B's listener on port 80.
pub fn connected_pair(
    opts_a: TcpOpts,
    opts_b: TcpOpts,
) -> (crate::tests::Pair, TcpHandle, TcpHandle) {
    let mut p = crate::tests::Pair::new();
    let l =
        p.b.tcp_listen(SocketAddrV4::new(IP_B, 80), 16, opts_b)
            .unwrap();
    let ha =
        p.a.tcp_connect(SocketAddrV4::new(IP_B, 80), None, opts_a, p.now)
            .unwrap();
    p.settle();
    let hb = p.b.tcp_accept(l).expect("accepted");
    assert_eq!(p.a.tcp_state(ha), Some(TcpState::Established));
    assert_eq!(p.b.tcp_state(hb), Some(TcpState::Established));
    (p, ha, hb)
}
