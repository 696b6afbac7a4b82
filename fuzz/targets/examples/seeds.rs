//! Writes seed corpora into `fuzz/corpus/<target>/`: generated valid packets, frames from a real
//! capture (a pcap file given as the first argument), and real rtnetlink dumps of this host.
//!
//! ```text
//! tcpdump -i eth0 -w /tmp/eth0.pcap -c 3000 -s 4096      # while generating some traffic
//! cargo run -p cnet-fuzz-targets --example seeds -- /tmp/eth0.pcap
//! ```
//! Seeds are then fuzzed and minimized (`cargo fuzz cmin`); see `docs/FUZZING.md`.

use cnet_fuzz_targets::encode_datagrams;
use cnet_fuzz_targets::harness::*;
use cnet_stack::wire::{ETHERTYPE_ARP, ETHERTYPE_IPV4};
use cnet_stack::MacAddr;
use core::net::Ipv4Addr;
use std::collections::BTreeMap;
use std::path::Path;

type Seeds = BTreeMap<&'static str, Vec<Vec<u8>>>;

/// Frames of a classic pcap file (any byte order, microsecond or nanosecond stamps).
fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if bytes.len() < 24 {
        return out;
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = matches!(magic, 0xa1b2c3d4 | 0xa1b23c4d);
    let rd = |b: &[u8]| {
        let a: [u8; 4] = b.try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let incl = rd(&bytes[off + 8..off + 12]) as usize;
        let start = off + 16;
        if start + incl > bytes.len() {
            break;
        }
        out.push(bytes[start..start + incl].to_vec());
        off = start + incl;
    }
    out
}

fn generated(seeds: &mut Seeds) {
    let peer_udp = |dport: u16, data: &[u8]| udp_segment(PEER_IP, OUR_IP, 40000, dport, data);
    let udp_to_us = |dport: u16, data: &[u8]| ipv4_frame_to_us(UDP, &peer_udp(dport, data));
    let echo = icmp_echo(0x77, 1, b"abcdefgh");
    let frames = vec![
        arp_request_frame(),
        eth_frame(
            OUR_MAC,
            PEER_MAC,
            ETHERTYPE_ARP,
            &arp_packet(2, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP),
        ),
        ipv4_frame_to_us(ICMP, &echo),
        udp_to_us(7, b"hello"),
        udp_to_us(9, &[0xaa; 1000]),
        udp_to_us(5000, b"closed port"),
    ];
    seeds
        .entry("eth")
        .or_default()
        .extend(frames.iter().cloned());
    let arps = seeds.entry("arp").or_default();
    arps.push(arp_packet(1, PEER_MAC, PEER_IP, MacAddr([0; 6]), OUR_IP));
    arps.push(arp_packet(2, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP));
    arps.push(arp_packet(1, PEER_MAC, PEER_IP, MacAddr([0; 6]), PEER_IP));
    let ips = seeds.entry("ipv4").or_default();
    for f in &frames {
        if f[12..14] == ETHERTYPE_IPV4.to_be_bytes() {
            ips.push(f[14..].to_vec());
        }
    }
    // Options: record route, timestamp, NOPs, end of list; and fragments.
    let rr = [7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    ips.push(ipv4_packet(PEER_IP, OUR_IP, ICMP, 3, false, 0, &rr, &echo));
    let ts = [68u8, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ips.push(ipv4_packet(
        PEER_IP,
        OUR_IP,
        UDP,
        4,
        false,
        0,
        &ts,
        &peer_udp(7, b"x"),
    ));
    ips.push(ipv4_packet(
        PEER_IP,
        OUR_IP,
        UDP,
        5,
        true,
        0,
        &[1, 1, 1, 0],
        &[0; 16],
    ));
    ips.push(ipv4_packet(
        PEER_IP,
        OUR_IP,
        UDP,
        5,
        false,
        16,
        &[],
        &[0; 5],
    ));
    ips.push(ipv4_packet(
        PEER_IP,
        OUR_IP,
        253,
        6,
        false,
        0,
        &[],
        b"unknown",
    ));
    let icmps = seeds.entry("icmp").or_default();
    icmps.push([&[1u8][..], &echo].concat());
    icmps.push([&[3u8][..], &echo].concat());
    let mut reply = echo.clone();
    reply[0] = 0;
    reply[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    fix_icmp_checksum(&mut reply);
    icmps.push([&[0u8][..], &reply].concat());
    // Port unreachable about a datagram our socket (port 9) sent.
    let quoted = ipv4_packet(
        OUR_IP,
        PEER_IP,
        UDP,
        1,
        false,
        0,
        &[],
        &udp_segment(OUR_IP, PEER_IP, 9, 53, b"q"),
    );
    let mut unreach = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreach.extend_from_slice(&quoted);
    fix_icmp_checksum(&mut unreach);
    icmps.push([&[0u8][..], &unreach].concat());
    let mut frag_needed = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    frag_needed.extend_from_slice(&quoted);
    fix_icmp_checksum(&mut frag_needed);
    icmps.push([&[0u8][..], &frag_needed].concat());
    let udps = seeds.entry("udp").or_default();
    udps.push([&[0u8][..], &peer_udp(7, b"hello")].concat());
    udps.push([&[0u8][..], &peer_udp(9, &[1; 100])].concat());
    udps.push([&[0u8][..], &peer_udp(5000, b"to a closed port")].concat());
    udps.push([&[7u8][..], &[0, 1, 0, 9, 0, 0, 0, 0, 1, 2, 3]].concat());
    let sums = seeds.entry("checksum").or_default();
    sums.push([&[0u8, 3, 0, 9, 0x12, 0x34][..], &echo].concat());
    sums.push(vec![0, 1, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    // Reassembly: two fragments in order, out of order, an overlap, a timeout.
    let r = seeds.entry("reassembly").or_default();
    r.push(vec![1, 8, 0, 0x80, 0, 0, 16, 0, 0x00, 2, 0, 5]);
    r.push(vec![
        3, 31, 0, 0x00, 2, 0, 5, 0, 0x80, 0, 0, 16, 0x40, 0x80, 0, 0, 16, 6, 200, 7,
    ]);
    r.push(vec![
        0, 0, 0, 0x80, 1, 0, 16, 0, 0x80, 0, 0, 16, 0, 0x80, 1, 0, 8,
    ]);
    // Fragment sequences: an echo request in three fragments, one with options; a duplicate.
    let f = seeds.entry("ipv4_frags").or_default();
    f.push(vec![
        0, 0x01, 0x80, 0x00, 0x00, 0x10, 0x01, 0x80, 0x02, 0x00, 0x10, 0x81, 0x00, 0x04, 0x00, 0x09,
    ]);
    f.push(vec![
        1, 0x05, 0x80, 0x00, 0x00, 0x08, 0x01, 0x00, 0x01, 0x00, 0x08,
    ]);
    f.push(vec![
        0, 0x02, 0x80, 0x00, 0x05, 0xc8, 0x02, 0x80, 0x00, 0x05, 0xc8, 0x82, 0x00, 0xb9, 0x00, 0x20,
    ]);
    // TCP: a SYN with every option to the listener, a segment to the connection, SACK blocks.
    let t = seeds.entry("tcp").or_default();
    let mut syn = cnet_stack::tcp::wire::Emit {
        src_port: 33000,
        dst_port: 80,
        seq: 1000,
        ack: 0,
        flags: 0x02,
        window: 65535,
        opts: Default::default(),
    };
    syn.opts.mss = Some(1460);
    syn.opts.wscale = Some(7);
    syn.opts.sack_permitted = true;
    syn.opts.timestamps = Some((1, 0));
    let mut b = vec![0u8; syn.header_len()];
    syn.write(&mut b);
    t.push([&[1u8][..], &b].concat());
    t.push([&[3u8][..], &b].concat());
    let mut ack = syn.clone();
    ack.flags = 0x18;
    ack.opts = Default::default();
    ack.opts.timestamps = Some((2, 1));
    ack.opts.sack.push((5, 10));
    ack.opts.sack.push((20, 30));
    let mut b = vec![0u8; ack.header_len()];
    ack.write(&mut b);
    b.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    t.push([&[5u8][..], &b].concat());
    // Whole stack programs.
    let s = seeds.entry("stack").or_default();
    let raw = |f: &[u8], end: bool| {
        let mut v = vec![if end { 0x80 } else { 0 }];
        v.extend_from_slice(&(f.len() as u16).to_be_bytes());
        v.extend_from_slice(f);
        v
    };
    let mut p = vec![0x10];
    for f in &frames {
        p.extend(raw(f, false));
    }
    p.extend([0x85, 0x03, 0xe8]); // end of burst, 1 s later
    s.push(p);
    // Bind 0.0.0.0:7, receive a datagram, send one to an unresolved host, let ARP time out.
    s.push(vec![
        0x02, 0x88, 1, 0, 7, 0x82, 2, 0, 0x10, 0, 0, 0x07, 0x8b, 0, 0, 0x89, 0, 0, 0x20, 3, 0, 9,
        0x86, 0x86, 0x86, 0x86,
    ]);
    // Ping: open, send to the peer (resolving it), receive the answer, close.
    s.push(vec![
        0x12, 0x8d, 0, 1, 0x8e, 0, 1, 0, 64, 0, 1, 0x83, 3, 0, 8, 0x8f, 0, 0, 0x8f, 0, 1,
    ]);
    // Config churn: address delete, link down/up, snapshot.
    s.push(vec![
        0x00, 0x87, 2, 0, 24, 0x87, 0, 0, 5, 220, 0, 0x87, 0, 1, 5, 220, 1, 0x87, 7, 2, 1, 1, 0, 5,
        0, 24,
    ]);
    // Fragments of a UDP datagram and tight limits.
    s.push(vec![
        0x0a, 0x04, 4, 0, 16, 0, 0, 0, 0x04, 4, 0, 16, 1, 0, 1, 0x84, 4, 0, 16, 0, 0, 2,
    ]);
    // TCP (opcodes 0x70-0x7f, see `stack_tcp.rs`), peer's MAC known. Passive open: listen on
    // 192.0.2.2:80; the peer's SYN (MSS, window scale 7, SACK permitted, timestamps); its ACK with
    // 100 bytes; accept, read, send 4 KiB; a partial ACK with one SACK block; 256 ms later, close;
    // the peer's FIN; timers run out.
    s.push(vec![
        0x10, // head: peer known
        0x70, 0, 0, 2, 0, // listen 192.0.2.2:80, backlog 2
        0xfc, 0x12, 0, 0, 0x10, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x0f, 7, 1, 0, 0, // SYN
        0xfc, 0x11, 0, 1, 0x08, 1, 0, 100, // ACK + PSH, 100 bytes
        0x73, 0, // accept
        0x76, 0, 1, 1, 0, // read up to 256 bytes
        0xf4, 0, 0x10, 0, // send 4096 bytes
        0xfc, 0x15, 0, 0x08, 0, 0, 0x18, 1, 0x05, 0xb4, 0x05, 0xb4, 0,
        0, // partial ACK + SACK
        0x85, 1, 0, // 256 ms
        0x77, 0, 0, // close
        0xfc, 0x11, 0, 4, 0x08, 1, 0, 0, // FIN
        0x86, 0x86, 0x86, 0x86,
    ]);
    // Active open to 192.0.2.1:5000; the SYN-ACK; 8 KiB sent; three duplicate ACKs with SACK
    // blocks (loss recovery), RTOs, then an in-window RST.
    s.push(vec![
        0x10, 0xf2, 1, 2, 0, 0, // connect
        0xfc, 0x11, 0, 3, 0x0f, 7, 1, 0, 0, // SYN-ACK
        0xf4, 0, 0x20, 0, // send 8192 bytes
        0xfc, 0x19, 0, 0, 0x18, 1, 0x05, 0xb5, 0x05, 0xb4, 0, 0, // dup ACK, SACK 2nd segment
        0xfc, 0x19, 0, 0, 0x18, 1, 0x0b, 0x69, 0x05, 0xb4, 0, 0, // dup ACK, SACK 3rd
        0xfc, 0x19, 0, 0, 0x18, 1, 0x11, 0x1d, 0x05, 0xb4, 0, 0, // dup ACK, SACK 4th
        0x86, 0x86, 0x86, // retransmission timers
        0xfc, 0x11, 0, 5, 0, 0, 0, // RST
        0x86,
    ]);
    // Without SACK, timestamps and window scaling, short timers: connect, the SYN-ACK, send
    // (zero copy) and shut down, the peer's FIN; TIME-WAIT expires; an abort of a stale handle.
    s.push(vec![
        0xb0, 0xf2, 1, 2, 0, 0, 0xfc, 0x11, 0, 3, 0x01, 0, 0, 0xf5, 0, 0x02, 0, 0xf9, 0, 0xfc,
        0x11, 0, 4, 0, 0, 0, 0x86, 0x86, 0x86, 0x78, 0, 0,
    ]);
    // Timer wheel (1 ms ticks): inserts at TCP-like offsets (delayed ACK, RTO, TIME-WAIT), one
    // far in the future, a cancel, a reschedule, an advance, wake-ups at `next_deadline`.
    seeds.entry("timer").or_default().push(vec![
        1, 0, 1, // tick 1 ms, now 1 s
        0, 1, 1, 0, 0, 0x9c, 0x40, // +40 ms
        1, 1, 2, 0, 0x03, 0x0d, 0x40, // +200 ms
        2, 1, 3, 0, 0, 0xea, 0x60, // +60 s
        0, 1, 4, 0, 0x10, 0, 0, // far
        3, 0, 0, // cancel
        4, 1, 1, 0, 0, 0x27, 0x10, // reschedule +10 ms
        5, 1, 0, 1, 0, 0, // advance
        7, 7, 7, 7,
    ]);
    seeds.entry("timer").or_default().push(vec![
        0, 0, 0, 0, 1, 5, 0, 0, 0, 0x40, 0, 1, 5, 0x30, 0, 0, 0, 7, 6, 1, 0, 0, 0, 9, 7, 7,
    ]);
}

/// Real captures: each frame as an `eth` input; ARP payloads, IPv4 packets, and ICMP / UDP
/// payloads to their targets; runs of frames as `stack` programs.
fn captured(seeds: &mut Seeds, frames: &[Vec<u8>]) {
    // Keep every non-TCP frame and a sample of TCP ones (bulk downloads dominate a capture).
    let is_tcp = |f: &Vec<u8>| f.len() > 23 && f[12..14] == [8, 0] && f[23] == 6;
    let frames: Vec<Vec<u8>> = frames
        .iter()
        .filter(|f| !is_tcp(f))
        .chain(frames.iter().filter(|f| is_tcp(f)).step_by(40))
        .cloned()
        .collect();
    for f in &frames {
        if f.len() < 14 {
            continue;
        }
        seeds.entry("eth").or_default().push(f.clone());
        let et = u16::from_be_bytes([f[12], f[13]]);
        if et == ETHERTYPE_ARP {
            seeds.entry("arp").or_default().push(f[14..].to_vec());
        }
        if et == ETHERTYPE_IPV4 {
            let ip = &f[14..];
            seeds.entry("ipv4").or_default().push(ip.to_vec());
            if let Ok(i) = cnet_stack::wire::parse_ipv4(ip, false) {
                let l4 = &ip[i.hdr_len..i.total_len];
                match i.proto {
                    1 => seeds
                        .entry("icmp")
                        .or_default()
                        .push([&[0u8][..], l4].concat()),
                    17 => seeds
                        .entry("udp")
                        .or_default()
                        .push([&[0u8][..], l4].concat()),
                    6 => seeds
                        .entry("tcp")
                        .or_default()
                        .push([&[0u8][..], l4].concat()),
                    _ => {}
                }
            }
        }
    }
    for chunk in frames.chunks(16) {
        let mut p = vec![0x10];
        for f in chunk {
            let f = &f[..f.len().min(MAX_FRAME)];
            p.push(0);
            p.extend_from_slice(&(f.len() as u16).to_be_bytes());
            p.extend_from_slice(f);
        }
        p.extend([0x85, 0x0f, 0xff]);
        seeds.entry("stack").or_default().push(p);
    }
}

/// rtnetlink seeds: messages built with `netlink-packet-route`, and real dumps of this host.
fn netlink(seeds: &mut Seeds) {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
    };
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
    };
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as M};
    let bytes = |msg: M, flags: u16| {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        b
    };
    let mut link = LinkMessage::default();
    link.header.index = 2;
    link.header.flags = LinkFlags::Up | LinkFlags::Running;
    link.attributes = vec![
        LinkAttribute::IfName("eth0".into()),
        LinkAttribute::Mtu(1500),
        LinkAttribute::Address(OUR_MAC.0.to_vec()),
    ];
    let mut addr = AddressMessage::default();
    addr.header.family = AddressFamily::Inet;
    addr.header.index = 2;
    addr.header.prefix_len = 24;
    addr.attributes = vec![
        AddressAttribute::Address(OUR_IP.into()),
        AddressAttribute::Local(OUR_IP.into()),
    ];
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    route.header.table = RouteHeader::RT_TABLE_MAIN;
    route.header.kind = RouteType::Unicast;
    route.attributes = vec![
        RouteAttribute::Table(254),
        RouteAttribute::Oif(2),
        RouteAttribute::Gateway(RouteAddress::Inet(PEER_IP)),
    ];
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = AddressFamily::Inet;
    neigh.header.ifindex = 2;
    neigh.header.state = NeighbourState::Reachable;
    neigh.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet(PEER_IP)),
        NeighbourAttribute::LinkLayerAddress(PEER_MAC.0.to_vec()),
    ];
    let mut down = link.clone();
    down.header.flags = LinkFlags::empty();
    let seq = vec![
        bytes(M::NewLink(link.clone()), 0),
        bytes(M::NewAddress(addr.clone()), 0),
        bytes(M::NewRoute(route.clone()), 0),
        bytes(M::NewNeighbour(neigh.clone()), 0),
        bytes(M::NewLink(down), 0),
        bytes(M::DelNeighbour(neigh), 0),
        bytes(M::DelRoute(route.clone()), 0),
        bytes(M::NewRoute(route), 0x100),
        bytes(M::DelAddress(addr), 0),
        bytes(M::DelLink(link), 0),
    ];
    let n = seeds.entry("netlink").or_default();
    n.push(encode_datagrams(&seq));
    n.push(encode_datagrams(&[seq.concat()]));
    match real_dump() {
        Ok(d) => n.push(encode_datagrams(&d)),
        Err(e) => eprintln!("no real rtnetlink dump: {e}"),
    }
}

/// Raw datagrams of link, IPv4 address, route and neighbour dumps of this host.
fn real_dump() -> std::io::Result<Vec<Vec<u8>>> {
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
    };
    use netlink_packet_route::address::AddressMessage;
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::neighbour::NeighbourMessage;
    use netlink_packet_route::route::RouteMessage;
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as M};
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    let mut addr = AddressMessage::default();
    addr.header.family = AddressFamily::Inet;
    let mut route = RouteMessage::default();
    route.header.address_family = AddressFamily::Inet;
    let mut neigh = NeighbourMessage::default();
    neigh.header.family = AddressFamily::Inet;
    let reqs = [
        M::GetLink(LinkMessage::default()),
        M::GetAddress(addr),
        M::GetRoute(route),
        M::GetNeighbour(neigh),
    ];
    let mut out = Vec::new();
    for (i, req) in reqs.into_iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = i as u32 + 1;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(req));
        msg.finalize();
        let mut b = vec![0; msg.buffer_len()];
        msg.serialize(&mut b);
        sock.send(&b, 0)?;
        loop {
            let mut buf = vec![0u8; 65536];
            let n = sock.recv(&mut &mut buf[..], 0)?;
            buf.truncate(n);
            // NLMSG_DONE (type 3) or NLMSG_ERROR (2), anywhere in the datagram, ends the dump.
            let mut done = false;
            let mut off = 0;
            while off + 16 <= buf.len() {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                done |= matches!(u16::from_ne_bytes([buf[off + 4], buf[off + 5]]), 2 | 3);
                if len < 16 {
                    break;
                }
                off += (len + 3) & !3;
            }
            out.push(buf);
            if done {
                break;
            }
        }
    }
    Ok(out)
}

fn main() -> std::io::Result<()> {
    let mut seeds = Seeds::new();
    generated(&mut seeds);
    if let Some(path) = std::env::args().nth(1) {
        let frames = pcap_frames(&std::fs::read(path)?);
        eprintln!("{} captured frames", frames.len());
        captured(&mut seeds, &frames);
    }
    netlink(&mut seeds);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for (target, inputs) in &seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in inputs.iter().enumerate() {
            if seen.insert(s.clone()) {
                std::fs::write(dir.join(format!("seed-{i:04}")), s)?;
            }
        }
        eprintln!("{target}: {} seeds", seen.len());
    }
    let _ = Ipv4Addr::UNSPECIFIED;
    Ok(())
}
