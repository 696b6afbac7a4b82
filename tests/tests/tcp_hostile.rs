//! Hostile TCP peers against an echo server (issue 12), at ten times the sizes that broke it:
//! 20 000 connections that send 5 bytes and never ACK again, 320 connections flooding
//! out-of-order segments, and receivers that renege on SACK. Through each attack an honest
//! client (stack A) keeps a request in flight and must keep getting its echoes; the server's
//! (stack B's) TCP memory stays within its thresholds and every frame stays accounted for.
//!
//! The attackers are scripted segments injected into B; B's answers to them are read back
//! from its transmit queue. Everything runs in virtual time, deterministically.

use cnet_stack::tcp::wire::{self as tw, flags, Emit, SegmentOptions, TcpHeader};
use cnet_stack::wire::checksum::{checksum, pseudo_header, Accumulator};
use cnet_stack::{
    Batch, ConfigEvent, Duration, Event, Instant, MacAddr, Neighbor, Stack, TcpHandle, TcpListener,
    TcpOpts, TcpState, BURST,
};
use cnet_tests::{stack, IP_A, IP_B, MAC_A, MAC_B};
use std::net::{Ipv4Addr, SocketAddrV4};

const ATK_MAC: MacAddr = MacAddr([0x02, 0xc7, 0, 0, 0, 0xee]);
const ECHO: u16 = 7;
const POOL: usize = 4096;

fn atk_addr(i: usize) -> SocketAddrV4 {
    let ip = Ipv4Addr::new(198, 18, 0, 3 + (i % 250) as u8);
    SocketAddrV4::new(ip, 10_000 + (i / 250) as u16)
}

/// A segment from an attacker to B:7, as an Ethernet frame.
#[allow(clippy::too_many_arguments)]
fn seg(
    src: SocketAddrV4,
    seq: u32,
    ack: u32,
    fl: u8,
    opts: SegmentOptions,
    data: &[u8],
) -> Vec<u8> {
    let e = Emit {
        src_port: src.port(),
        dst_port: ECHO,
        seq,
        ack,
        flags: fl,
        window: 65535,
        opts,
    };
    let hl = e.header_len();
    let tl = hl + data.len();
    let mut f = vec![0u8; 34 + tl];
    f[0..6].copy_from_slice(&MAC_B.0);
    f[6..12].copy_from_slice(&ATK_MAC.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tl) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&IP_B.octets());
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    e.write(&mut f[34..34 + hl]);
    f[34 + hl..].copy_from_slice(data);
    let mut acc = Accumulator::new(pseudo_header(*src.ip(), IP_B, 6, tl as u32));
    acc.add(&f[34..]);
    let c = acc.finish();
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

/// A segment B sent to an attacker.
struct Out {
    to: SocketAddrV4,
    h: TcpHeader,
    /// Payload (the reneging receiver reads it).
    #[allow(dead_code)]
    data: Vec<u8>,
}

/// The honest client's request-response loop: one 32-byte request in flight at a time.
struct Client {
    h: TcpHandle,
    n: u32,
    sent_at: Option<Instant>,
    got: Vec<u8>,
    latencies: Vec<(Instant, Duration)>,
}

struct Net {
    a: Stack,
    b: Stack,
    now: Instant,
    listener: TcpListener,
    served: Vec<TcpHandle>,
    inbox: Vec<Out>,
    client: Option<Client>,
    buf: Vec<u8>,
    /// Highest TCP memory charge seen on B, and lowest count of free frames.
    max_mem: usize,
    min_free: usize,
}

impl Net {
    fn new() -> Net {
        let a = stack(MAC_A, IP_A, 0xa, POOL);
        let mut b = stack(MAC_B, IP_B, 0xb, POOL);
        b.apply_config(
            ConfigEvent::NeighborSet(Neighbor {
                ip: IP_A,
                mac: MAC_A,
                permanent: true,
            }),
            Instant::ZERO,
        );
        let mut a = a;
        a.apply_config(
            ConfigEvent::NeighborSet(Neighbor {
                ip: IP_B,
                mac: MAC_B,
                permanent: true,
            }),
            Instant::ZERO,
        );
        for i in 0..250 {
            b.apply_config(
                ConfigEvent::NeighborSet(Neighbor {
                    ip: *atk_addr(i).ip(),
                    mac: ATK_MAC,
                    permanent: true,
                }),
                Instant::ZERO,
            );
        }
        let listener = b
            .tcp_listen(SocketAddrV4::new(IP_B, ECHO), 4096, TcpOpts::default())
            .unwrap();
        let mut n = Net {
            a,
            b,
            now: Instant::ZERO,
            listener,
            served: Vec::new(),
            inbox: Vec::new(),
            client: None,
            buf: vec![0u8; 65536],
            max_mem: 0,
            min_free: POOL,
        };
        n.exchange();
        n.inbox.clear();
        n
    }

    /// Frames to B, a burst at a time, each followed by a full exchange.
    fn inject(&mut self, frames: &[Vec<u8>]) {
        for chunk in frames.chunks(BURST) {
            let mut batch = Batch::new();
            for f in chunk {
                // An empty pool drops input, as a NIC with an empty fill ring would.
                if let Some(fr) = self.b.pool_mut().alloc_from(f) {
                    batch.push(fr).unwrap();
                }
            }
            let now = self.now;
            self.b.process_rx(&mut batch, now);
            self.exchange();
        }
    }

    /// B's echo application: accepts everything, echoes what it can, closes finished
    /// connections. Scans every connection, as a poll loop without readiness events would.
    fn echo_app(&mut self) {
        let now = self.now;
        while let Some(h) = self.b.tcp_accept(self.listener) {
            self.served.push(h);
        }
        let b = &mut self.b;
        let buf = &mut self.buf;
        self.served.retain(|&h| {
            match b.tcp_state(h) {
                None | Some(TcpState::Closed) => {
                    b.tcp_close(h, now);
                    return false;
                }
                _ => {}
            }
            let room = b.tcp_can_send(h).min(buf.len());
            if room > 0 && b.tcp_recv_pending(h) > 0 {
                let n = b.tcp_recv_slice(h, &mut buf[..room]);
                let _ = b.tcp_send_slice(h, &buf[..n], now);
            }
            if b.tcp_recv_finished(h) {
                b.tcp_close(h, now);
                return false;
            }
            true
        });
    }

    /// Reads echoes; with `send`, puts the next request out if none is (once per tick: over
    /// a link without delay, request and echo would otherwise loop within one instant).
    fn client_step(&mut self, send: bool) {
        let now = self.now;
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let n = self.a.tcp_recv_slice(c.h, &mut self.buf);
        c.got.extend_from_slice(&self.buf[..n]);
        if c.got.len() >= 32 {
            let want = format!("{:032}", c.n);
            assert_eq!(&c.got[..32], want.as_bytes(), "echo intact and in order");
            c.got.drain(..32);
            let t = c.sent_at.take().expect("a request was out");
            c.latencies.push((now, now.saturating_duration_since(t)));
            c.n += 1;
        }
        if send && c.sent_at.is_none() {
            let req = format!("{:032}", c.n);
            let taken = self.a.tcp_send_slice(c.h, req.as_bytes(), now).unwrap();
            assert_eq!(taken, 32);
            c.sent_at = Some(now);
        }
    }

    /// Moves frames until nothing moves: B to A (or to the attackers' inbox), A to B.
    fn exchange(&mut self) {
        for _ in 0..1000 {
            self.echo_app();
            self.client_step(false);
            let now = self.now;
            let mut moved = 0;
            let mut out = Batch::new();
            let mut to_b: Vec<Vec<u8>> = Vec::new();
            let mut to_a: Vec<Vec<u8>> = Vec::new();
            while self.b.poll_tx(&mut out, now) > 0 {
                for f in out.drain() {
                    let d = self.b.pool().data(&f).to_vec();
                    self.b.pool_mut().free(f);
                    moved += 1;
                    if d.len() < 34 || d[23] != 6 {
                        continue;
                    }
                    let dst = Ipv4Addr::new(d[30], d[31], d[32], d[33]);
                    if dst == IP_A {
                        to_a.push(d);
                    } else {
                        let l4 = &d[34..];
                        let h = tw::parse(l4, l4.len()).expect("B emits valid segments");
                        let to = SocketAddrV4::new(dst, h.dst_port);
                        let data = l4[h.hdr_len..].to_vec();
                        self.inbox.push(Out { to, h, data });
                    }
                }
            }
            while self.a.poll_tx(&mut out, now) > 0 {
                for f in out.drain() {
                    to_b.push(self.a.pool().data(&f).to_vec());
                    self.a.pool_mut().free(f);
                    moved += 1;
                }
            }
            for (s, frames) in [(&mut self.a, to_a), (&mut self.b, to_b)] {
                for chunk in frames.chunks(BURST) {
                    let mut batch = Batch::new();
                    for f in chunk {
                        // A full pool drops input, as a NIC with an empty fill ring would.
                        if let Some(fr) = s.pool_mut().alloc_from(f) {
                            batch.push(fr).unwrap();
                        }
                    }
                    s.process_rx(&mut batch, now);
                }
            }
            self.max_mem = self.max_mem.max(self.b.tcp_mem_frames());
            self.min_free = self.min_free.min(self.b.pool().available());
            if moved == 0 {
                return;
            }
        }
        panic!("no quiescence in 1000 rounds");
    }

    fn tick(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
        self.client_step(true);
        self.exchange();
    }

    /// Connects the honest client and starts its request loop.
    fn start_client(&mut self) {
        let h = self
            .a
            .tcp_connect(
                SocketAddrV4::new(IP_B, ECHO),
                None,
                TcpOpts::default(),
                self.now,
            )
            .unwrap();
        self.a.tcp_set_nodelay(h, true, self.now);
        self.client = Some(Client {
            h,
            n: 0,
            sent_at: None,
            got: Vec::new(),
            latencies: Vec::new(),
        });
        for _ in 0..10 {
            self.tick(1);
        }
        assert!(
            self.echoes_since(Instant::ZERO) > 0,
            "client works before the attack"
        );
    }

    /// A new connection from A sends one request: the time until its echo (panics after 5 s).
    fn fresh_client_echo(&mut self) -> Duration {
        let start = self.now;
        let h = self
            .a
            .tcp_connect(
                SocketAddrV4::new(IP_B, ECHO),
                None,
                TcpOpts::default(),
                self.now,
            )
            .unwrap();
        let mut sent = false;
        let mut got = Vec::new();
        for _ in 0..5000 {
            self.tick(1);
            self.inbox.clear();
            if !sent && self.a.tcp_state(h) == Some(TcpState::Established) {
                assert_eq!(
                    self.a.tcp_send_slice(h, b"fresh client", self.now).unwrap(),
                    12
                );
                sent = true;
            }
            let n = self.a.tcp_recv_slice(h, &mut self.buf);
            got.extend_from_slice(&self.buf[..n]);
            if got == b"fresh client" {
                let now = self.now;
                self.a.tcp_close(h, now);
                return now.saturating_duration_since(start);
            }
        }
        panic!("a new client got no echo within 5 s");
    }

    fn echoes_since(&self, t: Instant) -> usize {
        self.client
            .as_ref()
            .map_or(0, |c| c.latencies.iter().filter(|(at, _)| *at >= t).count())
    }

    fn worst_latency_since(&self, t: Instant) -> Duration {
        self.client.as_ref().map_or(Duration::ZERO, |c| {
            c.latencies
                .iter()
                .filter(|(at, _)| *at >= t)
                .map(|(_, l)| *l)
                .max()
                .unwrap_or(Duration::ZERO)
        })
    }

    /// Handshakes for attackers `range` (SYN, then the final ACK carrying `first_data`),
    /// returning each one's (next seq, B's ISN + 1).
    fn open(
        &mut self,
        range: std::ops::Range<usize>,
        sack: bool,
        first_data: &[u8],
    ) -> Vec<(u32, u32)> {
        let mut keys = Vec::with_capacity(range.len());
        for chunk in range.collect::<Vec<_>>().chunks(BURST) {
            let syns: Vec<Vec<u8>> = chunk
                .iter()
                .map(|&i| {
                    let o = SegmentOptions {
                        mss: Some(1460),
                        sack_permitted: sack,
                        wscale: Some(7),
                        ..SegmentOptions::default()
                    };
                    seg(atk_addr(i), isn(i), 0, flags::SYN, o, b"")
                })
                .collect();
            self.inbox.clear();
            self.inject(&syns);
            let mut acks = Vec::new();
            for &i in chunk {
                let a = atk_addr(i);
                let Some(synack) = self
                    .inbox
                    .iter()
                    .find(|o| o.to == a && o.h.flags & flags::SYN != 0)
                else {
                    keys.push((0, 0));
                    continue;
                };
                let b_next = synack.h.seq.wrapping_add(1);
                let f = seg(
                    a,
                    isn(i).wrapping_add(1),
                    b_next,
                    flags::ACK | flags::PSH,
                    SegmentOptions::default(),
                    first_data,
                );
                acks.push(f);
                keys.push((isn(i).wrapping_add(1 + first_data.len() as u32), b_next));
            }
            self.inbox.clear();
            self.inject(&acks);
            self.inbox.clear();
        }
        keys
    }

    fn check_accounting(&mut self) {
        let (charged, counted) = self.b.tcp_mem_audit();
        assert_eq!(charged, counted, "TCP memory accounting matches B's queues");
        for s in [&self.a, &self.b] {
            let p = s.pool().stats();
            assert_eq!(
                p.free + s.frames_held(),
                p.capacity,
                "every frame accounted for"
            );
            assert_eq!(p.double_frees, 0);
        }
    }

    fn report(&self, what: &str, attack_start: Instant, attack_end: Instant) {
        let c = self.b.counters();
        let l = self.b.tcp_mem_thresholds();
        eprintln!(
            "{what}: echoes during attack {} (worst {:?}), after {} (worst {:?}); B max TCP \
             frames {} (low/pressure/high {}/{}/{}), min free {} of {POOL}; mem drops {}, \
             pruned {}, collapsed {}, coalesced {}, mem aborts {}, reneging {}, sack discards {}",
            self.client.as_ref().map_or(0, |c| c
                .latencies
                .iter()
                .filter(|(at, _)| *at >= attack_start && *at < attack_end)
                .count()),
            self.worst_latency_since(attack_start),
            self.echoes_since(attack_end),
            self.worst_latency_since(attack_end),
            self.max_mem,
            l.low,
            l.pressure,
            l.high,
            self.min_free,
            c.drops(cnet_stack::DropReason::TcpMemPressure),
            c.get(Event::TcpOfoPruned),
            c.get(Event::TcpRcvCollapsed),
            c.get(Event::TcpSndCoalesced),
            c.get(Event::TcpAbortOnMemory),
            c.get(Event::TcpSackReneging),
            c.get(Event::TcpSackDiscards),
        );
    }
}

fn isn(i: usize) -> u32 {
    (i as u32).wrapping_mul(2_654_435_761)
}

#[test]
fn twenty_thousand_stalled_connections_do_not_starve_an_honest_client() {
    let mut net = Net::new();
    net.start_client();
    let start = net.now;
    let n = 20_000;
    // 64 connections per millisecond: each sends 5 bytes, gets its echo, and never ACKs.
    for wave in (0..n).step_by(BURST) {
        net.open(wave..(wave + BURST).min(n), false, b"stall");
        net.tick(1);
    }
    let end = net.now;
    assert!(net.b.tcp_connections() >= n, "every attacker got in");
    let during = net.echoes_since(start);
    let fresh = net.fresh_client_echo();
    for _ in 0..3000 {
        net.tick(1);
    }
    net.report("stalled", start, end);
    eprintln!("stalled: a new client right after the attack got its echo in {fresh:?}");
    assert!(fresh < Duration::from_millis(100), "{fresh:?}");
    net.check_accounting();
    let l = net.b.tcp_mem_thresholds();
    assert!(during >= 100, "echoes during the attack: {during}");
    assert!(net.echoes_since(end) >= 1000, "echoes after it");
    assert!(net.worst_latency_since(end + Duration::from_millis(500)) < Duration::from_millis(50));
    assert!(
        net.max_mem <= l.high + BURST,
        "TCP memory {} over high {}",
        net.max_mem,
        l.high
    );
    assert!(
        net.min_free >= POOL / 16 - BURST,
        "pool reserve kept: {}",
        net.min_free
    );
}

#[test]
fn twenty_thousand_stalled_connections_with_payloads_too_big_to_share() {
    // 1000 bytes each: too big for a shared frame, every stalled echo pins a frame of its own.
    let mut net = Net::new();
    net.start_client();
    let start = net.now;
    let n = 20_000;
    let data = [0x33u8; 1000];
    for wave in (0..n).step_by(BURST) {
        net.open(wave..(wave + BURST).min(n), false, &data);
        net.tick(1);
        net.inbox.clear();
    }
    let end = net.now;
    let during = net.echoes_since(start);
    let fresh = net.fresh_client_echo();
    for _ in 0..3000 {
        net.tick(1);
        net.inbox.clear();
    }
    net.report("stalled, 1000 bytes", start, end);
    eprintln!("stalled, 1000 bytes: a new client right after the attack got its echo in {fresh:?}");
    assert!(fresh < Duration::from_secs(4), "{fresh:?}");
    net.check_accounting();
    let c = net.b.counters();
    eprintln!(
        "stalled, 1000 bytes: {} connections left, {} frames charged to TCP",
        net.b.tcp_connections(),
        net.b.tcp_mem_frames()
    );
    assert!(
        c.get(Event::TcpAbortOnMemory) > 0,
        "stalled connections were shed"
    );
    assert!(during >= 20, "echoes during the attack: {during}");
    assert!(net.echoes_since(end) >= 1000, "echoes after it");
    assert!(net.worst_latency_since(end + Duration::from_secs(1)) < Duration::from_millis(50));
    assert!(
        net.min_free >= POOL / 16 - BURST,
        "pool reserve kept: {}",
        net.min_free
    );
}

#[test]
fn three_hundred_twenty_out_of_order_floods_do_not_starve_an_honest_client() {
    let mut net = Net::new();
    net.start_client();
    let start = net.now;
    let n = 320;
    let keys = net.open(0..n, true, b"");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    // 300 segments of 100 bytes each, at random offsets inside the 64 KiB window, never at
    // RCV.NXT: the holes are never filled.
    let mut segs = Vec::with_capacity(n * 300);
    for _ in 0..300 {
        for (i, &(next, ack)) in keys.iter().enumerate() {
            let off = 1 + rnd(60_000) as u32;
            let data = [0x5au8; 100];
            let f = seg(
                atk_addr(i),
                next.wrapping_add(off),
                ack,
                flags::ACK,
                SegmentOptions::default(),
                &data,
            );
            segs.push(f);
        }
    }
    for (k, chunk) in segs.chunks(BURST * 10).enumerate() {
        net.inject(chunk);
        net.inbox.clear();
        if k % 2 == 0 {
            net.tick(1);
        }
    }
    let end = net.now;
    let during = net.echoes_since(start);
    let held_after_flood = net.b.tcp_mem_frames();
    let fresh = net.fresh_client_echo();
    eprintln!("out-of-order flood: a new client right after it got its echo in {fresh:?}");
    assert!(fresh < Duration::from_millis(1500), "{fresh:?}");
    for _ in 0..3000 {
        net.tick(1);
        net.inbox.clear();
    }
    net.report("out-of-order flood", start, end);
    net.check_accounting();
    let l = net.b.tcp_mem_thresholds();
    assert!(during >= 50, "echoes during the flood: {during}");
    assert!(net.echoes_since(end) >= 1000, "echoes after it");
    assert!(net.worst_latency_since(start) < Duration::from_millis(50));
    assert!(
        net.max_mem <= l.high + BURST,
        "TCP memory {} over high {}",
        net.max_mem,
        l.high
    );
    assert!(
        net.b.counters().get(Event::TcpOfoPruned) > 0,
        "pruned under pressure"
    );
    // Under pressure, out-of-order data waits at most a second for its holes: by now (3 s
    // after the flood) every flooder's queue was released.
    let c = net.b.counters();
    eprintln!(
        "out-of-order flood: {} frames held right after, {} 3 s later; {} queues timed out",
        held_after_flood,
        net.b.tcp_mem_frames(),
        c.get(Event::TcpOfoTimeouts)
    );
    assert!(c.get(Event::TcpOfoTimeouts) >= n as u64 / 2);
    assert!(net.b.tcp_mem_frames() < 16, "{}", net.b.tcp_mem_frames());
    assert!(!net.b.tcp_mem_pressure());
    net.check_accounting();
}

/// A receiver (of B's echo) that SACKs what it does not hold, then reneges, then acknowledges
/// honestly; `at_ack`: its lying SACK block starts at the cumulative ACK instead.
struct Liar {
    to: SocketAddrV4,
    seq: u32,
    base: u32,
    rcv: u32,
    held: std::collections::BTreeMap<u32, u32>,
    /// 0: first flight (lie once, hold nothing); 1: waiting for the first segment again
    /// (acknowledge it alone: reneging); 2: honest.
    phase: u8,
    at_ack: bool,
}

#[test]
fn receivers_that_renege_on_sack_get_everything_and_an_honest_client_is_served() {
    let mut net = Net::new();
    net.start_client();
    let start = net.now;
    let n = 10;
    let size = 14_600usize;
    let keys = net.open(0..n, true, b"");
    let mut liars: Vec<Liar> = keys
        .iter()
        .enumerate()
        .map(|(i, &(seq, base))| Liar {
            to: atk_addr(i),
            seq,
            base,
            rcv: base,
            held: Default::default(),
            phase: 0,
            at_ack: i % 2 == 1,
        })
        .collect();
    // Each sends 14 600 bytes for B to echo.
    let mut frames = Vec::new();
    for l in &mut liars {
        for k in 0..10 {
            let d = vec![b'a' + k as u8; 1460];
            frames.push(seg(
                l.to,
                l.seq,
                l.base,
                flags::ACK,
                SegmentOptions::default(),
                &d,
            ));
            l.seq = l.seq.wrapping_add(1460);
        }
    }
    net.inbox.clear();
    net.inject(&frames);
    let ack = |l: &Liar, a: u32, blocks: &[(u32, u32)]| {
        let o = SegmentOptions {
            sack: blocks.iter().copied().collect(),
            ..SegmentOptions::default()
        };
        seg(l.to, l.seq, a, flags::ACK, o, b"")
    };
    let mut done_at = None;
    for _ in 0..10_000 {
        let inbox = std::mem::take(&mut net.inbox);
        let mut replies = Vec::new();
        for o in inbox.iter().filter(|o| !o.data.is_empty()) {
            let Some(l) = liars.iter_mut().find(|l| l.to == o.to) else {
                continue;
            };
            let len = o.data.len() as u32;
            if l.phase == 0 {
                // The first flight: everything "SACKed" but the first segment, three times;
                // nothing is kept.
                l.phase = 1;
                let end = l.base.wrapping_add(size as u32);
                let left = if l.at_ack {
                    l.base
                } else {
                    l.base.wrapping_add(1460)
                };
                for _ in 0..3 {
                    replies.push(ack(l, l.base, &[(left, end)]));
                }
                continue;
            }
            if l.phase == 1 {
                if o.h.seq == l.base {
                    // The first segment again: acknowledged alone. What was SACKed is gone.
                    l.phase = 2;
                    l.rcv = l.rcv.wrapping_add(len);
                    replies.push(ack(l, l.rcv, &[]));
                }
                continue;
            }
            // Honest from now on: in-order delivery, out-of-order data kept.
            let off = o.h.seq.wrapping_sub(l.base);
            l.held.insert(off, len);
            loop {
                let have = l.rcv.wrapping_sub(l.base);
                let next = l
                    .held
                    .range(..=have)
                    .map(|(&s, &n)| s + n)
                    .filter(|&e| e > have)
                    .max();
                match next {
                    Some(e) => l.rcv = l.base.wrapping_add(e),
                    None => break,
                }
            }
            replies.push(ack(l, l.rcv, &[]));
        }
        net.inject(&replies);
        if liars
            .iter()
            .all(|l| l.rcv == l.base.wrapping_add(size as u32))
        {
            done_at = Some(net.now);
            break;
        }
        net.tick(1);
    }
    let end = net.now;
    for _ in 0..1000 {
        net.tick(1);
        net.inbox.clear();
    }
    net.report("reneging receivers", start, end);
    net.check_accounting();
    let c = net.b.counters();
    let stuck: Vec<u32> = liars.iter().map(|l| l.rcv.wrapping_sub(l.base)).collect();
    assert!(
        done_at.is_some(),
        "every echo delivered despite reneging: {stuck:?}"
    );
    assert!(
        end.saturating_duration_since(start) < Duration::from_secs(5),
        "{:?}",
        end.saturating_duration_since(start)
    );
    assert!(c.get(Event::TcpSackReneging) >= (n / 2) as u64);
    assert!(c.get(Event::TcpSackDiscards) >= 3 * (n / 2) as u64);
    assert!(net.echoes_since(end) >= 900);
}
