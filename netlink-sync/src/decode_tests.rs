//! Decoder tests: messages are built with `netlink-packet-route`, serialised, and fed as bytes.

use super::*;
use netlink_packet_core::NetlinkHeader;
use netlink_packet_route::route::RouteNextHop;

const IDX: u32 = 7;
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x07];

fn bytes(msg: RouteNetlinkMessage, flags: u16) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut b = vec![0; m.buffer_len()];
    m.serialize(&mut b);
    b
}

fn link(index: u32, name: &str, flags: LinkFlags, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = flags;
    m.attributes = vec![
        LinkAttribute::IfName(name.into()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::Address(MAC.to_vec()),
    ];
    m
}

fn up() -> LinkFlags {
    LinkFlags::Up | LinkFlags::Running
}

fn addr(index: u32, a: [u8; 4], len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.index = index;
    m.header.prefix_len = len;
    m.attributes = vec![
        AddressAttribute::Address(IpAddr::V4(a.into())),
        AddressAttribute::Local(IpAddr::V4(a.into())),
    ];
    m
}

fn route(oif: u32, dst: [u8; 4], len: u8, gw: Option<[u8; 4]>, metric: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![
        RouteAttribute::Table(RT_TABLE_MAIN),
        RouteAttribute::Destination(RouteAddress::Inet(dst.into())),
        RouteAttribute::Oif(oif),
    ];
    if let Some(g) = gw {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(g.into())));
    }
    if metric != 0 {
        m.attributes.push(RouteAttribute::Priority(metric));
    }
    m
}

fn neigh(index: u32, ip: [u8; 4], mac: Option<[u8; 6]>, state: NeighbourState) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = state;
    m.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
        ip.into(),
    ))];
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m
}

fn r(dst: [u8; 4], len: u8, gw: Option<[u8; 4]>, metric: u32) -> Route {
    Route {
        dst: dst.into(),
        prefix_len: len,
        gateway: gw.map(Ipv4Addr::from),
        metric,
    }
}

/// A decoder that has adopted interface `v0` with index `IDX`, up, MTU 1500.
fn adopted() -> Decoder {
    let mut d = Decoder::new("v0", vec![RT_TABLE_MAIN]);
    let dump = Dump {
        links: vec![link(1, "lo", up(), 65536), link(IDX, "v0", up(), 1500)],
        addrs: vec![addr(IDX, [198, 18, 0, 2], 24), addr(1, [127, 0, 0, 1], 8)],
        routes: vec![route(IDX, [198, 18, 0, 0], 24, None, 0)],
        neighbors: vec![neigh(
            IDX,
            [198, 18, 0, 1],
            Some([2, 0, 0, 0, 0, 1]),
            NeighbourState::Permanent,
        )],
    };
    let ev = d.resync(&dump, Resync::Snapshot);
    assert_eq!(ev.len(), 1);
    let ConfigEvent::Snapshot(s) = &ev[0] else {
        panic!("expected a snapshot, got {ev:?}")
    };
    assert!(s.up);
    assert_eq!(s.mtu, Some(1500));
    assert_eq!(s.mac, Some(MacAddr(MAC)));
    assert_eq!(s.addrs.len(), 1);
    assert_eq!(s.routes, vec![r([198, 18, 0, 0], 24, None, 0)]);
    assert_eq!(s.neighbors.len(), 1);
    assert!(s.neighbors[0].permanent);
    d
}

#[test]
fn link_by_name_is_adopted_with_a_snapshot_request() {
    let mut d = Decoder::new("v0", vec![RT_TABLE_MAIN]);
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewLink(link(3, "other", up(), 1500)),
        0,
    ));
    assert_eq!(out, Decoded::default());
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewLink(link(IDX, "v0", up(), 1500)),
        0,
    ));
    assert_eq!(out.resync, Some(Resync::Snapshot));
    assert_eq!(d.ifindex(), Some(IDX));
}

#[test]
fn missing_link_in_dump_leaves_no_ifindex() {
    let mut d = Decoder::new("v0", vec![RT_TABLE_MAIN]);
    let dump = Dump {
        links: vec![link(1, "lo", up(), 65536)],
        ..Dump::default()
    };
    d.resync(&dump, Resync::Snapshot);
    assert_eq!(d.ifindex(), None);
}

#[test]
fn link_mtu_and_state_changes() {
    let mut d = adopted();
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewLink(link(IDX, "v0", up(), 1400)),
        0,
    ));
    assert_eq!(
        out.events,
        vec![ConfigEvent::Link {
            up: true,
            mtu: 1400,
            mac: MacAddr(MAC)
        }]
    );
    assert_eq!(out.resync, None);
    // Same again: nothing changed, nothing emitted.
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewLink(link(IDX, "v0", up(), 1400)),
        0,
    ));
    assert!(out.events.is_empty());
    // Admin up without carrier counts as down, and asks for a re-dump (silent route flush).
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewLink(link(IDX, "v0", LinkFlags::Up, 1400)),
        0,
    ));
    assert_eq!(
        out.events,
        vec![ConfigEvent::Link {
            up: false,
            mtu: 1400,
            mac: MacAddr(MAC)
        }]
    );
    assert_eq!(out.resync, Some(Resync::Diff));
}

#[test]
fn operstate_up_counts_without_running() {
    let mut m = link(IDX, "v0", LinkFlags::Up, 1500);
    m.attributes.push(LinkAttribute::OperState(State::Up));
    assert!(link_info(&m).up);
}

#[test]
fn rename_away_and_delete_remove_everything() {
    for msg in [
        RouteNetlinkMessage::NewLink(link(IDX, "v9", LinkFlags::empty(), 1500)),
        RouteNetlinkMessage::DelLink(link(IDX, "v0", LinkFlags::empty(), 1500)),
    ] {
        let mut d = adopted();
        let out = d.decode_bytes(&bytes(msg, 0));
        assert_eq!(
            out.events[0],
            ConfigEvent::Link {
                up: false,
                mtu: 1500,
                mac: MacAddr(MAC)
            }
        );
        assert!(out
            .events
            .contains(&ConfigEvent::RouteDel(r([198, 18, 0, 0], 24, None, 0))));
        assert!(out
            .events
            .contains(&ConfigEvent::NeighborDel([198, 18, 0, 1].into())));
        assert_eq!(out.events.len(), 4, "{:?}", out.events);
        assert_eq!(d.ifindex(), None);
        // Messages for the old index are now ignored.
        let out = d.decode_bytes(&bytes(
            RouteNetlinkMessage::NewAddress(addr(IDX, [198, 18, 9, 9], 24)),
            0,
        ));
        assert!(out.events.is_empty());
        // A link that takes the name is adopted.
        let out = d.decode_bytes(&bytes(
            RouteNetlinkMessage::NewLink(link(12, "v0", up(), 1500)),
            0,
        ));
        assert_eq!(out.resync, Some(Resync::Snapshot));
        assert_eq!(d.ifindex(), Some(12));
    }
}

#[test]
fn addresses() {
    let mut d = adopted();
    let a = IfAddr {
        addr: [198, 18, 1, 2].into(),
        prefix_len: 24,
    };
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewAddress(addr(IDX, [198, 18, 1, 2], 24)),
        0,
    ));
    assert_eq!(out.events, vec![ConfigEvent::AddrAdd(a)]);
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewAddress(addr(IDX + 1, [198, 18, 3, 2], 24)),
        0,
    ));
    assert!(out.events.is_empty(), "other interface");
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::DelAddress(addr(IDX, [198, 18, 1, 2], 24)),
        0,
    ));
    assert_eq!(out.events, vec![ConfigEvent::AddrDel(a)]);
    assert_eq!(out.resync, Some(Resync::Diff));
}

#[test]
fn routes_add_replace_delete() {
    let mut d = adopted();
    let gw = route(IDX, [198, 19, 0, 0], 16, Some([198, 18, 0, 1]), 50);
    let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(gw.clone()), 0));
    let want = r([198, 19, 0, 0], 16, Some([198, 18, 0, 1]), 50);
    assert_eq!(out.events, vec![ConfigEvent::RouteAdd(want)]);
    // Replace with another gateway on our interface.
    let gw2 = route(IDX, [198, 19, 0, 0], 16, Some([198, 18, 0, 3]), 50);
    let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(gw2), NLM_F_REPLACE));
    assert_eq!(
        out.events,
        vec![ConfigEvent::RouteAdd(r(
            [198, 19, 0, 0],
            16,
            Some([198, 18, 0, 3]),
            50
        ))]
    );
    // Replaced by a route on another interface: ours is gone.
    let away = route(IDX + 1, [198, 19, 0, 0], 16, None, 50);
    let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(away.clone()), 0));
    assert!(
        out.events.is_empty(),
        "an append elsewhere is not a replace"
    );
    let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(away), NLM_F_REPLACE));
    assert_eq!(
        out.events,
        vec![ConfigEvent::RouteDel(r(
            [198, 19, 0, 0],
            16,
            Some([198, 18, 0, 3]),
            50
        ))]
    );
    // Delete.
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::DelRoute(route(IDX, [198, 18, 0, 0], 24, None, 0)),
        0,
    ));
    assert_eq!(
        out.events,
        vec![ConfigEvent::RouteDel(r([198, 18, 0, 0], 24, None, 0))]
    );
    assert_eq!(d.state().routes().count(), 0);
}

#[test]
fn routes_ignored_by_type_table_family_and_clone() {
    let mut d = adopted();
    let mut local = route(IDX, [198, 18, 0, 2], 32, None, 0);
    local.header.kind = RouteType::Local;
    let mut other_table = route(IDX, [198, 18, 5, 0], 24, None, 0);
    other_table.attributes[0] = RouteAttribute::Table(100);
    let mut cloned = route(IDX, [198, 18, 6, 0], 24, None, 0);
    cloned.header.flags = RouteFlags::Cloned;
    let mut blackhole = route(IDX, [198, 18, 7, 0], 24, None, 0);
    blackhole.header.kind = RouteType::BlackHole;
    let mut v6 = route(IDX, [198, 18, 8, 0], 24, None, 0);
    v6.header.address_family = AddressFamily::Inet6;
    for m in [local, other_table.clone(), cloned, blackhole, v6] {
        let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(m), 0));
        assert!(out.events.is_empty(), "{:?}", out.events);
    }
    // With table 100 configured it counts.
    let mut d = Decoder::new("v0", vec![RT_TABLE_MAIN, 100]);
    d.decode_bytes(&bytes(
        RouteNetlinkMessage::NewLink(link(IDX, "v0", up(), 1500)),
        0,
    ));
    let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(other_table), 0));
    assert_eq!(
        out.events,
        vec![ConfigEvent::RouteAdd(r([198, 18, 5, 0], 24, None, 0))]
    );
}

#[test]
fn multipath_takes_our_next_hop() {
    let mut d = adopted();
    let mut m = route(0, [0, 0, 0, 0], 0, None, 10);
    m.attributes
        .retain(|a| !matches!(a, RouteAttribute::Oif(_) | RouteAttribute::Destination(_)));
    let hop = |ifindex, gw: [u8; 4]| {
        let mut h = RouteNextHop::default();
        h.interface_index = ifindex;
        h.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gw.into()))];
        h
    };
    m.attributes.push(RouteAttribute::MultiPath(vec![
        hop(IDX + 1, [198, 18, 50, 1]),
        hop(IDX, [198, 18, 0, 1]),
    ]));
    let out = d.decode_bytes(&bytes(RouteNetlinkMessage::NewRoute(m), 0));
    assert_eq!(
        out.events,
        vec![ConfigEvent::RouteAdd(r(
            [0, 0, 0, 0],
            0,
            Some([198, 18, 0, 1]),
            10
        ))]
    );
}

#[test]
fn neighbours_by_state() {
    let mut d = adopted();
    let ip = [198, 18, 0, 9];
    let mac = [2, 0, 0, 0, 0, 9];
    let set = |permanent| {
        ConfigEvent::NeighborSet(Neighbor {
            ip: ip.into(),
            mac: MacAddr(mac),
            permanent,
        })
    };
    let mut feed = |state, lladdr: Option<[u8; 6]>| {
        d.decode_bytes(&bytes(
            RouteNetlinkMessage::NewNeighbour(neigh(IDX, ip, lladdr, state)),
            0,
        ))
        .events
    };
    assert_eq!(
        feed(NeighbourState::Incomplete, None),
        vec![],
        "unknown and unusable: nothing"
    );
    assert_eq!(feed(NeighbourState::Reachable, Some(mac)), vec![set(false)]);
    assert_eq!(feed(NeighbourState::Stale, Some(mac)), vec![], "same entry");
    assert_eq!(feed(NeighbourState::Permanent, Some(mac)), vec![set(true)]);
    assert_eq!(
        feed(NeighbourState::Failed, None),
        vec![ConfigEvent::NeighborDel(ip.into())]
    );
    assert_eq!(feed(NeighbourState::Delay, Some(mac)), vec![set(false)]);
    let mut proxy = neigh(IDX, ip, None, NeighbourState::None);
    proxy.header.flags = NeighbourFlags::Proxy;
    assert!(d
        .decode_bytes(&bytes(RouteNetlinkMessage::NewNeighbour(proxy), 0))
        .events
        .is_empty());
    let out = d.decode_bytes(&bytes(
        RouteNetlinkMessage::DelNeighbour(neigh(IDX, ip, Some(mac), NeighbourState::Stale)),
        0,
    ));
    assert_eq!(out.events, vec![ConfigEvent::NeighborDel(ip.into())]);
}

#[test]
fn several_messages_in_one_datagram() {
    let mut d = adopted();
    let mut b = bytes(
        RouteNetlinkMessage::NewRoute(route(IDX, [198, 19, 1, 0], 24, None, 0)),
        0,
    );
    b.extend(bytes(
        RouteNetlinkMessage::NewRoute(route(IDX, [198, 19, 2, 0], 24, None, 0)),
        0,
    ));
    let out = d.decode_bytes(&b);
    assert_eq!(out.events.len(), 2);
    assert_eq!(out.malformed, 0);
}

#[test]
fn diff_resync_reports_silent_flush() {
    let mut d = adopted();
    let dump = Dump {
        links: vec![link(IDX, "v0", LinkFlags::Up, 1500)],
        addrs: vec![addr(IDX, [198, 18, 0, 2], 24)],
        routes: vec![],
        neighbors: vec![],
    };
    let ev = d.resync(&dump, Resync::Diff);
    assert_eq!(
        ev,
        vec![
            ConfigEvent::Link {
                up: false,
                mtu: 1500,
                mac: MacAddr(MAC)
            },
            ConfigEvent::RouteDel(r([198, 18, 0, 0], 24, None, 0)),
            ConfigEvent::NeighborDel([198, 18, 0, 1].into()),
        ]
    );
}

/// xorshift64*, so the garbage is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x5eed);
    let mut seeds: Vec<Vec<u8>> = vec![
        bytes(RouteNetlinkMessage::NewLink(link(IDX, "v0", up(), 1500)), 0),
        bytes(
            RouteNetlinkMessage::NewAddress(addr(IDX, [198, 18, 1, 2], 24)),
            0,
        ),
        bytes(
            RouteNetlinkMessage::NewRoute(route(
                IDX,
                [198, 19, 0, 0],
                16,
                Some([198, 18, 0, 1]),
                5,
            )),
            0,
        ),
        bytes(
            RouteNetlinkMessage::NewNeighbour(neigh(
                IDX,
                [198, 18, 0, 9],
                Some([2, 0, 0, 0, 0, 9]),
                NeighbourState::Reachable,
            )),
            0,
        ),
        bytes(RouteNetlinkMessage::DelLink(link(IDX, "v0", up(), 1500)), 0),
    ];
    let mut d = adopted();
    let mut total_malformed = 0;
    for i in 0..40_000u32 {
        let mut b = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
        match i % 4 {
            0 => {
                // Pure noise with a plausible header.
                let len = (rng.next() % 200) as usize;
                b = (0..len).map(|_| rng.next() as u8).collect();
                if b.len() >= 8 {
                    b[..4].copy_from_slice(&(len as u32).to_ne_bytes());
                    b[4..6].copy_from_slice(&(16 + (rng.next() % 14) as u16).to_ne_bytes());
                }
            }
            1 => {
                // Flip bytes past the netlink header.
                for _ in 0..1 + rng.next() % 4 {
                    if b.len() > 16 {
                        let at = 16 + (rng.next() as usize % (b.len() - 16));
                        b[at] = rng.next() as u8;
                    }
                }
            }
            2 => {
                // Truncate, keeping the header's claimed length in step or not.
                let keep = rng.next() as usize % (b.len() + 1);
                b.truncate(keep);
                if rng.next().is_multiple_of(2) && b.len() >= 4 {
                    b[..4].copy_from_slice(&(keep as u32).to_ne_bytes());
                }
            }
            _ => {
                // Concatenate two, corrupting a length.
                let other = seeds[(rng.next() % seeds.len() as u64) as usize].clone();
                b.extend(other);
                let at = rng.next() as usize % b.len();
                b[at] = rng.next() as u8;
            }
        }
        let out = d.decode_bytes(&b);
        total_malformed += out.malformed;
        if i % 1000 == 0 {
            // Occasionally let a good message re-adopt the link, so decoding goes deep again.
            d.decode_bytes(&seeds[0]);
            if d.ifindex().is_none() {
                d = adopted();
            }
        }
        if i % 5000 == 0 && b.len() > 16 {
            seeds.push(b);
        }
    }
    assert!(
        total_malformed > 0,
        "the mutations should produce some bad messages"
    );
}
