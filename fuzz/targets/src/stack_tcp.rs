//! The TCP half of the [`stack`](crate::stack) target: socket calls (listen, connect, accept,
//! send, receive, shutdown, close, abort, options) and a fuzzed peer that answers the stack's own
//! segments. The peer learns every connection's sequence numbers from what the stack emits
//! ([`TcpSide::learn`]), so its segments can be in window (or a chosen distance from it), carry
//! acknowledgments and SACK blocks for data the stack really sent, and echo its timestamps: the
//! fuzzer reaches established connections, loss recovery and the close states without guessing
//! 32-bit numbers.

use crate::harness::*;
use crate::input::Input;
use cnet_stack::tcp::wire::{self, flags, Emit, SegmentOptions, TCP_HLEN};
use cnet_stack::tcp::TcpOpts;
use cnet_stack::wire::{checksum, parse_ipv4, ETHERTYPE_IPV4};
use cnet_stack::{Congestion, Duration, Instant, Stack, TcpHandle, TcpListener};
use core::net::{Ipv4Addr, SocketAddrV4};

/// TCP's protocol number.
pub const TCP: u8 = 6;

/// Ports the fuzzer picks from (one byte): a few fixed ones (so listeners and peers meet) or any.
fn port(inp: &mut Input<'_>) -> u16 {
    match inp.u8() % 8 {
        0 | 1 => 80,
        2 => 5000,
        3 => 7,
        4 => 0,
        _ => 5000 + u16::from(inp.u8() % 8),
    }
}

/// A connection as the peer sees it, learned from the stack's segments.
#[derive(Debug, Clone, Copy)]
struct Flow {
    /// The stack's side.
    local: SocketAddrV4,
    /// The peer's side.
    remote: SocketAddrV4,
    /// Lowest sequence number the stack sent on this flow (its ISN, as far as we saw).
    snd_lo: u32,
    /// One past the highest sequence number the stack sent (SYN and FIN count).
    snd_hi: u32,
    /// The stack's last acknowledgment: the sequence number it expects from the peer.
    rcv_nxt: u32,
    /// The stack's last TSval (echoed as TSecr).
    tsval: u32,
}

/// Most flows remembered (the oldest is forgotten).
const FLOWS: usize = 8;

/// Sockets the application holds and what the peer knows.
#[derive(Default)]
pub struct TcpSide {
    listeners: Vec<TcpListener>,
    conns: Vec<TcpHandle>,
    flows: Vec<Flow>,
    /// The peer's TSval clock.
    ts: u32,
    /// Largest send buffer any connection may have (the stack default or a per-socket option).
    max_snd_buf: u32,
}

fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn opts(inp: &mut Input<'_>) -> TcpOpts {
    let b = inp.u8();
    TcpOpts {
        nodelay: b & 1 != 0,
        congestion: if b & 2 != 0 {
            Congestion::NewReno
        } else {
            Congestion::Cubic
        },
        keepalive: (b & 4 != 0).then(|| {
            // 0xff: an idle time past the TCP timer wheel's span (2^36 ms), finding 5.
            let k = inp.u8();
            Duration::from_secs(if k == 0xff {
                68_719_477
            } else {
                u64::from(k % 8) + 1
            })
        }),
        snd_buf: [0, 1000, 4096, 65536][usize::from((b >> 3) & 3)],
        rcv_buf: [0, 1000, 4096, 65536][usize::from((b >> 5) & 3)],
        mss: 0,
    }
}

impl TcpSide {
    /// No sockets, no flows; no connection may queue more than `max_snd_buf` bytes.
    pub fn new(max_snd_buf: u32) -> Self {
        TcpSide {
            max_snd_buf,
            ..TcpSide::default()
        }
    }

    /// Records the TCP segments among the stack's emitted frames.
    pub fn learn(&mut self, frames: &[Vec<u8>]) {
        for f in frames {
            if f.len() < 14 || f[12..14] != ETHERTYPE_IPV4.to_be_bytes() {
                continue;
            }
            let p = &f[14..];
            let Ok(ip) = parse_ipv4(p, true) else {
                continue;
            };
            if ip.proto != TCP || ip.is_fragment() {
                continue;
            }
            let seg = &p[ip.hdr_len..ip.total_len];
            let Ok(h) = wire::parse(seg, seg.len()) else {
                panic!("the stack emitted a TCP header it cannot parse: {seg:02x?}");
            };
            let len = (seg.len() - h.hdr_len) as u32
                + u32::from(h.has(flags::SYN))
                + u32::from(h.has(flags::FIN));
            let local = SocketAddrV4::new(ip.src, h.src_port);
            let remote = SocketAddrV4::new(ip.dst, h.dst_port);
            let end = h.seq.wrapping_add(len);
            let i = match self
                .flows
                .iter()
                .position(|x| x.local == local && x.remote == remote)
            {
                Some(i) => i,
                None => {
                    if self.flows.len() == FLOWS {
                        self.flows.remove(0);
                    }
                    self.flows.push(Flow {
                        local,
                        remote,
                        snd_lo: h.seq,
                        snd_hi: end,
                        rcv_nxt: 0,
                        tsval: 0,
                    });
                    self.flows.len() - 1
                }
            };
            let fl = &mut self.flows[i];
            if h.has(flags::SYN) {
                fl.snd_lo = h.seq;
                fl.snd_hi = end;
            }
            if seq_gt(end, fl.snd_hi) {
                fl.snd_hi = end;
            }
            if h.has(flags::ACK) {
                fl.rcv_nxt = h.ack;
            }
            if let Some((v, _)) = h.opts.timestamps {
                fl.tsval = v;
            }
        }
    }

    /// A segment from the peer: to a flow the stack opened or answered (in window, or a chosen
    /// distance from it), or to any port with any numbers.
    fn segment(&mut self, inp: &mut Input<'_>) -> Vec<u8> {
        let kind = inp.u8();
        let flow = if kind & 1 != 0 {
            pick(&self.flows, inp).copied()
        } else {
            None
        };
        // A hostile peer (issue 12), on a known flow: 0 lies in SACK (a block at the
        // cumulative ACK, which a reneging receiver sends), 1 floods out of order (a small
        // segment above RCV.NXT, never at it), 2 stalls (acknowledges nothing new, zero window).
        let hostile = (kind & 0x80 != 0 && flow.is_some()).then(|| inp.u8() % 3);
        let (src, sport, dport, seq, ack, tsecr, snd_lo, snd_hi) = match flow {
            Some(f) => {
                let seq = if hostile == Some(1) {
                    f.rcv_nxt.wrapping_add(1 + u32::from(inp.u16()))
                } else if kind & 2 != 0 {
                    f.rcv_nxt.wrapping_add(i32::from(inp.u16() as i16) as u32)
                } else {
                    f.rcv_nxt
                };
                let ack = match ((kind >> 2) & 3, hostile) {
                    (_, Some(2)) => f.snd_lo.wrapping_add(1),
                    (0, _) => f.snd_hi,
                    (1, _) => f.snd_hi.wrapping_sub(
                        u32::from(inp.u16()) % f.snd_hi.wrapping_sub(f.snd_lo).max(1),
                    ),
                    (2, _) => f.snd_lo.wrapping_add(1),
                    _ => f.snd_hi.wrapping_add(i32::from(inp.u16() as i16) as u32),
                };
                (
                    *f.remote.ip(),
                    f.remote.port(),
                    f.local.port(),
                    seq,
                    ack,
                    f.tsval,
                    f.snd_lo,
                    f.snd_hi,
                )
            }
            None => {
                let src = if kind & 2 != 0 {
                    PEER_IP
                } else {
                    Ipv4Addr::new(192, 0, 2, 3 + inp.u8() % 4)
                };
                let seq = inp.u32();
                (src, port(inp), port(inp), seq, inp.u32(), inp.u32(), 0, 0)
            }
        };
        let mut fl = inp.u8();
        if kind & 0x10 != 0 {
            // Plain flag sets (the common ones) more often than raw bytes.
            fl = [
                flags::ACK,
                flags::ACK | flags::PSH,
                flags::SYN,
                flags::SYN | flags::ACK,
                flags::FIN | flags::ACK,
                flags::RST,
                flags::RST | flags::ACK,
                flags::ACK | flags::URG,
            ][usize::from(fl % 8)];
        }
        let window = if hostile == Some(2) {
            0
        } else if kind & 0x20 != 0 {
            inp.u16()
        } else {
            65535
        };
        let o = inp.u8();
        let mut opts = SegmentOptions::default();
        if o & 1 != 0 {
            opts.mss = Some(if o & 0x80 != 0 { inp.u16() } else { 1460 });
        }
        if o & 2 != 0 {
            opts.wscale = Some(inp.u8() % 16);
        }
        opts.sack_permitted = o & 4 != 0;
        if o & 8 != 0 {
            self.ts = self.ts.wrapping_add(u32::from(inp.u8()));
            opts.timestamps = Some((self.ts, tsecr));
        }
        for _ in 0..(o >> 4) % 5 {
            // A SACK block over data the stack sent (or anywhere, when the flow is unknown).
            let span = snd_hi.wrapping_sub(snd_lo).max(1);
            let left = snd_lo.wrapping_add(u32::from(inp.u16()) % span);
            let right = left.wrapping_add(u32::from(inp.u16()) % 4096);
            let _ = opts.sack.try_push((left, right));
        }
        if hostile == Some(0) {
            // The block a reneging or lying receiver sends: from the cumulative ACK up.
            let right = ack.wrapping_add(1 + u32::from(inp.u16()) % 4096);
            opts.sack.clear();
            let _ = opts.sack.try_push((ack, right));
        }
        let len = match hostile {
            Some(1) => 1 + usize::from(inp.u8() % 64),
            Some(2) => 0,
            _ => usize::from(inp.u16()) % 1461,
        };
        let e = Emit {
            src_port: sport,
            dst_port: dport,
            seq,
            ack,
            flags: fl,
            window,
            opts,
        };
        let hl = e.header_len();
        let mut seg = vec![0u8; hl];
        e.write(&mut seg);
        seg.extend((0..len).map(|i| (i as u8) ^ kind));
        if kind & 0x40 == 0 {
            fix_tcp_checksum(&mut seg, src, OUR_IP);
        }
        let ip = ipv4_packet(src, OUR_IP, TCP, 7, false, 0, &[], &seg);
        eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip)
    }

    /// One TCP operation (the low 4 bits of `op`); a peer segment comes back as a frame to feed.
    pub fn op(
        &mut self,
        s: &mut Stack,
        op: u8,
        inp: &mut Input<'_>,
        now: Instant,
    ) -> Option<Vec<u8>> {
        match op % 16 {
            0 => {
                let ip = if inp.bool() {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    OUR_IP
                };
                let local = SocketAddrV4::new(ip, port(inp));
                let backlog = u32::from(inp.u8() % 4);
                if let Ok(l) = s.tcp_listen(local, backlog, opts(inp)) {
                    self.listeners.push(l);
                }
            }
            1 => {
                let i = pick_index(self.listeners.len(), inp)?;
                s.tcp_unlisten(self.listeners[i], now);
                if inp.bool() {
                    self.listeners.swap_remove(i); // else keep the stale handle
                }
            }
            2 => {
                let remote = SocketAddrV4::new(
                    if !inp.u8().is_multiple_of(4) {
                        PEER_IP
                    } else {
                        crate::stack_target::addr(inp)
                    },
                    port(inp),
                );
                let local = match inp.u8() % 3 {
                    0 => None,
                    1 => Some(SocketAddrV4::new(OUR_IP, port(inp))),
                    _ => Some(SocketAddrV4::new(crate::stack_target::addr(inp), port(inp))),
                };
                if let Ok(h) = s.tcp_connect(remote, local, opts(inp), now) {
                    self.conns.push(h);
                }
            }
            3 => {
                let &l = pick(&self.listeners, inp)?;
                while let Some(h) = s.tcp_accept(l) {
                    self.conns.push(h);
                }
                let _ = s.tcp_listener_addr(l);
            }
            4 => {
                let &h = pick(&self.conns, inp)?;
                let len = usize::from(inp.u16());
                let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                if let Ok(n) = s.tcp_send_slice(h, &data, now) {
                    assert!(n <= len, "tcp_send_slice took more than it was given");
                }
            }
            5 => {
                let &h = pick(&self.conns, inp)?;
                let len = usize::from(inp.u16()) % 2048;
                let f = s.tcp_alloc()?;
                if let Some(b) = s.pool_mut().push_back(&f, len) {
                    b.fill(0xa5);
                }
                if let Err((_, f)) = s.tcp_send(h, f, now) {
                    s.pool_mut().free(f);
                }
            }
            6 => {
                let &h = pick(&self.conns, inp)?;
                if inp.bool() {
                    let pending = s.tcp_recv_pending(h);
                    let mut buf = vec![0u8; usize::from(inp.u16())];
                    let n = s.tcp_recv_slice(h, &mut buf);
                    assert!(n <= pending, "read more than was pending");
                } else {
                    for _ in 0..inp.u8() % 8 + 1 {
                        let Some(f) = s.tcp_recv(h) else { break };
                        s.pool_mut().free(f);
                    }
                }
                let _ = s.tcp_recv_finished(h);
            }
            7 => {
                let i = pick_index(self.conns.len(), inp)?;
                s.tcp_close(self.conns[i], now);
                assert!(
                    s.tcp_state(self.conns[i]).is_none(),
                    "handle valid after close"
                );
                if inp.bool() {
                    self.conns.swap_remove(i);
                }
            }
            8 => {
                let i = pick_index(self.conns.len(), inp)?;
                s.tcp_abort(self.conns[i], now);
                assert!(
                    s.tcp_state(self.conns[i]).is_none(),
                    "handle valid after abort"
                );
                if inp.bool() {
                    self.conns.swap_remove(i);
                }
            }
            9 => {
                let &h = pick(&self.conns, inp)?;
                s.tcp_shutdown(h, now);
            }
            10 => {
                let &h = pick(&self.conns, inp)?;
                let b = inp.u8();
                if b & 1 != 0 {
                    s.tcp_set_nodelay(h, b & 2 != 0, now);
                } else {
                    s.tcp_set_congestion(
                        h,
                        if b & 2 != 0 {
                            Congestion::NewReno
                        } else {
                            Congestion::Cubic
                        },
                    );
                }
            }
            11 => {
                let &h = pick(&self.conns, inp)?;
                while s.tcp_take_error(h).is_some() {}
            }
            _ => return Some(self.segment(inp)),
        }
        None
    }

    /// Bounds on every connection the application holds.
    pub fn check(&self, s: &Stack, max_conns: usize) {
        assert!(s.tcp_connections() <= max_conns, "connection table bound");
        let (charged, counted) = s.tcp_mem_audit();
        assert_eq!(charged, counted, "TCP memory accounting matches the queues");
        assert!(charged <= s.pool().capacity(), "TCP memory within the pool");
        for &h in &self.conns {
            let Some(info) = s.tcp_info(h) else {
                assert!(s.tcp_state(h).is_none(), "tcp_info and tcp_state disagree");
                continue;
            };
            assert_eq!(Some(info.state), s.tcp_state(h));
            assert_eq!(info.send_queued as usize, s.tcp_send_queued(h));
            assert!(
                info.send_queued <= self.max_snd_buf,
                "send buffer bound: {} > {}",
                info.send_queued,
                self.max_snd_buf
            );
            assert_eq!(info.recv_queued as usize, s.tcp_recv_pending(h));
            assert!(info.mss > 0, "MSS 0");
            let _ = s.tcp_addrs(h);
            let _ = s.tcp_can_send(h);
        }
    }
}

/// Sets the TCP checksum of `seg` sent from `src` to `dst`.
pub fn fix_tcp_checksum(seg: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    if seg.len() < TCP_HLEN {
        return;
    }
    seg[16..18].copy_from_slice(&[0, 0]);
    let s = checksum::pseudo_header(src, dst, TCP, seg.len() as u32)
        + u64::from(checksum::fold(checksum::sum(seg)));
    seg[16..18].copy_from_slice(&(!checksum::fold(s)).to_be_bytes());
}

fn pick_index(len: usize, inp: &mut Input<'_>) -> Option<usize> {
    let b = usize::from(inp.u8());
    (len > 0).then(|| b % len)
}

fn pick<'h, T>(v: &'h [T], inp: &mut Input<'_>) -> Option<&'h T> {
    pick_index(v.len(), inp).map(|i| &v[i])
}
