//! Shared pieces of the targets: a stack configured like the capture host, frame builders (also
//! used to generate seed corpora), feeding and draining, and the accounting invariant.

use cnet_stack::wire::{
    checksum, write_eth, Ipv4Header, ETHERTYPE_ARP, ETHERTYPE_IPV4, PROTO_ICMP, PROTO_UDP,
};
use cnet_stack::{
    Batch, ConfigEvent, IfAddr, Instant, MacAddr, Neighbor, Pool, Route, Stack, StackConfig,
};
use core::net::Ipv4Addr;

/// The stack's MAC (that of the host the seed captures were taken on).
pub const OUR_MAC: MacAddr = MacAddr([0x02, 0xfc, 0, 0, 0, 0x01]);
/// The peer's (gateway's) MAC.
pub const PEER_MAC: MacAddr = MacAddr([0x02, 0xfc, 0, 0, 0, 0x05]);
/// The stack's address, on 192.0.2.0/24.
pub const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The peer (gateway) address.
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Frames in the pool of a parser target's stack.
pub const POOL_FRAMES: usize = 64;
/// Frame size of every target's pool.
pub const FRAME_SIZE: usize = 2048;
/// Largest frame a driver can hand in (frame size less headroom).
pub const MAX_FRAME: usize = FRAME_SIZE - Pool::DEFAULT_HEADROOM;

/// A stack with small tables: our address /24, a default route via the peer, and, when
/// `peer_known`, a permanent neighbour entry for the peer (so replies leave at once).
pub fn new_stack(frames: usize, rx_checksum: bool, peer_known: bool) -> Stack {
    let mut cfg = StackConfig::new(OUR_MAC);
    cfg.max_neighbors = 64;
    cfg.tx_queue = 256;
    cfg.udp_rx_queue = 64;
    cfg.reassembly_max_datagrams = 8;
    cfg.reassembly_max_frames = 256;
    cfg.rx_checksum = rx_checksum;
    let pool = Pool::new(frames, FRAME_SIZE, Pool::DEFAULT_HEADROOM).expect("valid geometry");
    let mut s = Stack::new(cfg, pool);
    configure(&mut s, peer_known);
    s
}

/// Applies the default configuration (address, default route, optionally the peer's MAC) and
/// drains what it sends (a gratuitous ARP).
pub fn configure(s: &mut Stack, peer_known: bool) {
    let now = Instant::ZERO;
    s.apply_config(
        ConfigEvent::AddrAdd(IfAddr {
            addr: OUR_IP,
            prefix_len: 24,
        }),
        now,
    );
    s.apply_config(
        ConfigEvent::RouteAdd(Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(PEER_IP),
            metric: 0,
        }),
        now,
    );
    if peer_known {
        s.apply_config(
            ConfigEvent::NeighborSet(Neighbor {
                ip: PEER_IP,
                mac: PEER_MAC,
                permanent: true,
            }),
            now,
        );
    }
    drain_tx(s, now);
}

/// Feeds frames (at most one burst; each cut to [`MAX_FRAME`]) and processes them. Frames the
/// pool has no room for are skipped, as a driver would.
pub fn feed(s: &mut Stack, frames: &[&[u8]], now: Instant) {
    let mut rx = Batch::new();
    for b in frames {
        let b = &b[..b.len().min(MAX_FRAME)];
        let Some(f) = s.pool_mut().alloc_from(b) else {
            continue;
        };
        if let Err(f) = rx.push(f) {
            s.pool_mut().free(f);
        }
    }
    s.process_rx(&mut rx, now);
    assert!(rx.is_empty(), "process_rx consumes every frame");
}

/// Runs `poll_tx` until it returns 0 and returns the frames sent (bytes), freeing them.
pub fn drain_tx(s: &mut Stack, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Batch::new();
    let mut sent = Vec::new();
    loop {
        let n = s.poll_tx(&mut out, now);
        if n == 0 {
            break;
        }
        for f in out.drain() {
            sent.push(s.pool().data(&f).to_vec());
            s.pool_mut().free(f);
        }
    }
    sent
}

/// The accounting invariant: every pool frame is free, held by the stack, or in the
/// application's hands (`app_held`), and nothing was freed twice.
pub fn assert_accounted(s: &Stack, app_held: usize) {
    let p = s.pool();
    assert_eq!(
        p.available() + s.frames_held() + app_held,
        p.capacity(),
        "pool frames unaccounted for: free {} + held {} + app {} != {}",
        p.available(),
        s.frames_held(),
        app_held,
        p.capacity()
    );
    assert_eq!(p.stats().double_frees, 0, "a frame was freed twice");
}

/// Releases everything and checks that the pool is whole again.
pub fn assert_no_leak(s: &mut Stack) {
    s.release_all();
    assert_accounted(s, 0);
    assert_eq!(s.pool().available(), s.pool().capacity(), "frames leaked");
}

/// An Ethernet II header followed by `payload`.
pub fn eth_frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14];
    write_eth(&mut f, dst, src, ethertype);
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet: a valid header (with `options`, padded to 4 bytes) and `payload`.
#[allow(clippy::too_many_arguments)]
pub fn ipv4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ident: u16,
    more_frags: bool,
    frag_offset: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let opt_len = options.len().min(40).div_ceil(4) * 4;
    let hlen = 20 + opt_len;
    let mut p = vec![0u8; hlen];
    Ipv4Header {
        src,
        dst,
        proto,
        ttl: 64,
        ident,
        dont_frag: false,
        tos: 0,
        more_frags,
        frag_offset,
        payload_len: 0,
    }
    .write(&mut p[..20]);
    p[20..20 + options.len().min(40)].copy_from_slice(&options[..options.len().min(40)]);
    p.extend_from_slice(payload);
    p[0] = 0x40 | (hlen / 4) as u8;
    let total = (p.len().min(65535)) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    fix_ipv4_checksum(&mut p);
    p
}

/// Recomputes the header checksum of the IPv4 header at the start of `p`, if its IHL fits.
pub fn fix_ipv4_checksum(p: &mut [u8]) {
    if p.len() < 20 {
        return;
    }
    let hlen = ((p[0] & 0x0f) as usize * 4).max(20);
    if hlen > p.len() {
        return;
    }
    p[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&p[..hlen]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// An Ethernet frame from the peer to us carrying an IPv4 packet.
pub fn ipv4_frame_to_us(proto: u8, payload: &[u8]) -> Vec<u8> {
    let ip = ipv4_packet(PEER_IP, OUR_IP, proto, 1, false, 0, &[], payload);
    eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip)
}

/// Sets the ICMP checksum of `msg` (at bytes 2..4).
pub fn fix_icmp_checksum(msg: &mut [u8]) {
    if msg.len() < 4 {
        return;
    }
    msg[2..4].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
}

/// An ICMP echo request with a correct checksum.
pub fn icmp_echo(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    fix_icmp_checksum(&mut m);
    m
}

/// Sets the UDP checksum of `seg` (header and payload) sent from `src` to `dst`.
pub fn fix_udp_checksum(seg: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr) {
    if seg.len() < 8 {
        return;
    }
    seg[6..8].copy_from_slice(&[0, 0]);
    let s = checksum::pseudo_header(src, dst, PROTO_UDP, seg.len() as u32)
        + checksum::fold(checksum::sum(seg)) as u64;
    let c = match !checksum::fold(s) {
        0 => 0xffff,
        c => c,
    };
    seg[6..8].copy_from_slice(&c.to_be_bytes());
}

/// A UDP segment with a correct length and checksum.
pub fn udp_segment(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(8 + data.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(data);
    fix_udp_checksum(&mut s, src, dst);
    s
}

/// An ARP packet for Ethernet/IPv4.
pub fn arp_packet(op: u16, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut b = vec![0u8; 28];
    cnet_stack::arp::ArpPacket {
        op,
        sha,
        spa,
        tha,
        tpa,
    }
    .write(&mut b);
    b
}

/// An ARP request from the peer for our address, broadcast.
pub fn arp_request_frame() -> Vec<u8> {
    let a = arp_packet(1, PEER_MAC, PEER_IP, MacAddr([0; 6]), OUR_IP);
    eth_frame(MacAddr([0xff; 6]), PEER_MAC, ETHERTYPE_ARP, &a)
}

/// Checks an IPv4 packet the stack emitted: version, header length, total length, checksum.
pub fn assert_valid_ipv4(p: &[u8]) -> cnet_stack::wire::Ipv4Info {
    let info = cnet_stack::wire::parse_ipv4(p, true)
        .unwrap_or_else(|e| panic!("the stack emitted a bad IPv4 header: {e:?}"));
    assert_eq!(info.total_len, p.len(), "emitted IPv4 total length");
    info
}

/// The IPv4 packets (Ethernet stripped) among emitted frames, each checked with
/// [`assert_valid_ipv4`].
pub fn emitted_ipv4(frames: &[Vec<u8>]) -> Vec<&[u8]> {
    frames
        .iter()
        .filter(|f| f.len() >= 14 && f[12..14] == ETHERTYPE_IPV4.to_be_bytes())
        .map(|f| {
            let p = &f[14..];
            assert_valid_ipv4(p);
            p
        })
        .collect()
}

/// Protocol numbers, re-exported for seed builders.
pub const ICMP: u8 = PROTO_ICMP;
/// UDP's protocol number.
pub const UDP: u8 = PROTO_UDP;
