use super::*;
use crate::config::Route;
use crate::counters::{DropReason, Event};

#[test]
fn datagram_of_64k_is_fragmented_and_reassembled_zero_copy() {
    let mut p = Pair::new();
    let ha = p.a.udp_bind("198.18.0.1:5000".parse().unwrap()).unwrap();
    let hb = p.b.udp_bind("0.0.0.0:6000".parse().unwrap()).unwrap();
    let data: Vec<u8> = (0..65507u32).map(|i| (i * 31 % 251) as u8).collect();
    p.a.udp_send_slice(ha, &data, "198.18.0.2:6000".parse().unwrap(), p.now)
        .unwrap();
    p.settle();
    assert_eq!(p.a.counters().get(Event::FragCreated), 45);
    assert_eq!(p.b.counters().get(Event::FragReassembled), 1);
    let d = p.b.udp_recv(hb).expect("reassembled datagram delivered");
    assert_eq!(d.len, data.len());
    assert_eq!(
        p.b.pool().chain_count(&d.frame),
        45,
        "payload stays in the received frames"
    );
    let mut got = vec![0u8; d.len];
    p.b.pool().chain_copy_to(&d.frame, &mut got);
    assert_eq!(got, data);
    // Echo it back as it is: the chain is the payload.
    p.b.udp_send(hb, d.frame, d.src, p.now).unwrap();
    p.settle();
    let back = p.a.udp_recv(ha).unwrap();
    let mut got = vec![0u8; back.len];
    p.a.pool().chain_copy_to(&back.frame, &mut got);
    assert_eq!(got, data);
    p.a.pool_mut().free(back.frame);
    p.assert_no_leak();
}

#[test]
fn incomplete_datagram_times_out_and_frees_its_frames() {
    let mut p = Pair::new();
    p.settle();
    p.a.apply_config(
        ConfigEvent::NeighborSet(crate::config::Neighbor {
            ip: IP_B,
            mac: MAC_B,
            permanent: true,
        }),
        p.now,
    );
    p.b.udp_bind("0.0.0.0:6000".parse().unwrap()).unwrap();
    let ha = p.a.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    p.a.udp_send_slice(ha, &[7u8; 4000], "198.18.0.2:6000".parse().unwrap(), p.now)
        .unwrap();
    // Lose the middle fragment on the way.
    let mut out = Batch::new();
    p.a.poll_tx(&mut out, p.now);
    let frames: Vec<_> = out.drain().collect();
    assert_eq!(frames.len(), 3);
    let mut rx = Batch::new();
    for (i, f) in frames.into_iter().enumerate() {
        if i != 1 {
            let bytes = p.a.pool().data(&f).to_vec();
            rx.push(p.b.pool_mut().alloc_from(&bytes).unwrap()).unwrap();
        }
        p.a.pool_mut().free(f);
    }
    p.b.process_rx(&mut rx, p.now);
    assert!(p.b.frames_held() == 2);
    p.advance(Duration::from_secs(31));
    assert_eq!(p.b.counters().drops(DropReason::FragTimeout), 1);
    assert_eq!(p.b.frames_held(), 0);
    p.assert_no_leak();
}

#[test]
fn gateway_route_sends_to_the_gateways_mac_and_no_route_is_an_error() {
    let mut p = Pair::new();
    let h = p.a.udp_bind("0.0.0.0:0".parse().unwrap()).unwrap();
    let far: core::net::SocketAddrV4 = "198.19.7.7:53".parse().unwrap();
    assert_eq!(
        p.a.udp_send_slice(h, b"q", far, p.now),
        Err(crate::stack::SendError::NoRoute)
    );
    p.a.apply_config(
        ConfigEvent::RouteAdd(Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(IP_B),
            metric: 0,
        }),
        p.now,
    );
    p.a.udp_send_slice(h, b"q", far, p.now).unwrap();
    p.settle();
    // B resolved as the gateway and received the packet, which is not for it: dropped as a host.
    assert_eq!(p.a.neighbors().get(IP_B).unwrap().mac, MAC_B);
    assert_eq!(p.b.counters().drops(DropReason::Ipv4NotForUs), 1);
    p.assert_no_leak();
}

#[test]
fn small_mtu_fragments_and_link_down_stops_output() {
    let mut p = Pair::new();
    for s in [&mut p.a, &mut p.b] {
        let mac = s.mac();
        s.apply_config(
            ConfigEvent::Link {
                up: true,
                mtu: 576,
                mac,
            },
            Instant::ZERO,
        );
    }
    let ha = p.a.udp_bind("0.0.0.0:1".parse().unwrap()).unwrap();
    let hb = p.b.udp_bind("0.0.0.0:2".parse().unwrap()).unwrap();
    p.a.udp_send_slice(ha, &[1u8; 1400], "198.18.0.2:2".parse().unwrap(), p.now)
        .unwrap();
    p.settle();
    assert_eq!(p.a.counters().get(Event::FragCreated), 3);
    assert!(p.wire.iter().all(|f| f.len() <= 576 + 14));
    let d = p.b.udp_recv(hb).unwrap();
    assert_eq!(d.len, 1400);
    p.b.pool_mut().free(d.frame);
    let mac = p.a.mac();
    p.a.apply_config(
        ConfigEvent::Link {
            up: false,
            mtu: 576,
            mac,
        },
        p.now,
    );
    assert_eq!(
        p.a.udp_send_slice(ha, b"x", "198.18.0.2:2".parse().unwrap(), p.now),
        Err(crate::stack::SendError::LinkDown)
    );
    p.assert_no_leak();
}

#[test]
fn options_are_skipped_and_several_addresses_answer() {
    let mut s = stack(MAC_A, IP_A, 16);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let second = Ipv4Addr::new(198, 18, 0, 9);
    s.apply_config(
        ConfigEvent::AddrAdd(crate::config::IfAddr {
            addr: second,
            prefix_len: 24,
        }),
        Instant::ZERO,
    );
    let h = s.udp_bind("0.0.0.0:7".parse().unwrap()).unwrap();
    // IHL 6: a 4-byte options field (NOP, NOP, NOP, EOL) before the UDP header.
    let udp = [0x30, 0x39, 0x00, 0x07, 0, 10, 0, 0, b'o', b'k'];
    let mut f = vec![0u8; 14 + 24 + udp.len()];
    crate::wire::write_eth(&mut f, MAC_A, MAC_B, crate::wire::ETHERTYPE_IPV4);
    let ip = &mut f[14..38];
    ip[0] = 0x46;
    ip[2..4].copy_from_slice(&((24 + udp.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = crate::wire::PROTO_UDP;
    ip[12..16].copy_from_slice(&IP_B.octets());
    ip[16..20].copy_from_slice(&second.octets());
    ip[20..24].copy_from_slice(&[1, 1, 1, 0]);
    let c = crate::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[38..].copy_from_slice(&udp);
    feed(&mut s, &[f], Instant::ZERO);
    let d = s.udp_recv(h).expect("delivered past the options");
    assert_eq!(s.pool().data(&d.frame), b"ok");
    assert_eq!(*d.dst.ip(), second, "the second address receives too");
    s.pool_mut().free(d.frame);
    // A reply goes out from the address it was sent to.
    s.apply_config(
        ConfigEvent::NeighborSet(crate::config::Neighbor {
            ip: IP_B,
            mac: MAC_B,
            permanent: true,
        }),
        Instant::ZERO,
    );
    let h2 = s.udp_bind(core::net::SocketAddrV4::new(second, 8)).unwrap();
    s.udp_send_slice(h2, b"r", "198.18.0.2:9".parse().unwrap(), Instant::ZERO)
        .unwrap();
    let out = feed(&mut s, &[], Instant::ZERO);
    assert_eq!(&out[0][26..30], &second.octets());
}

#[test]
fn removing_a_second_address_of_a_subnet_keeps_the_subnets_route() {
    let mut s = stack(MAC_A, IP_A, 16);
    let second = crate::config::IfAddr {
        addr: Ipv4Addr::new(198, 18, 0, 9),
        prefix_len: 24,
    };
    s.apply_config(ConfigEvent::AddrAdd(second), Instant::ZERO);
    s.apply_config(ConfigEvent::AddrDel(second), Instant::ZERO);
    assert!(
        s.routes().lookup(IP_B).is_some(),
        "198.18.0.1/24 still reaches its subnet"
    );
    let first = s.addrs()[0];
    s.apply_config(ConfigEvent::AddrDel(first), Instant::ZERO);
    assert!(s.routes().lookup(IP_B).is_none(), "the last one takes it");
}

#[test]
fn a_link_mtu_larger_than_a_frame_is_capped_to_what_frames_carry() {
    let mut s = stack(MAC_A, IP_A, 16);
    let mac = s.mac();
    s.apply_config(
        ConfigEvent::Link {
            up: true,
            mtu: 9000,
            mac,
        },
        Instant::ZERO,
    );
    assert_eq!(s.mtu(), 2048 - 256 - 14);
    assert_eq!(s.mtu(), s.max_mtu());
    s.apply_config(
        ConfigEvent::Link {
            up: true,
            mtu: 20,
            mac,
        },
        Instant::ZERO,
    );
    assert_eq!(s.mtu(), 68, "RFC 791: every host takes 68 bytes");
}
