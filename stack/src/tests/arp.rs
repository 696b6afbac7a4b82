use super::*;
use crate::arp::table::NeighborState;
use crate::counters::{DropReason, Event};
use crate::wire::ETHERTYPE_ARP;

#[test]
fn address_add_sends_gratuitous_arp_that_peer_does_not_learn_unasked() {
    let mut p = Pair::new();
    p.settle();
    // Both announced their address; each is learnt only by update, and neither had an entry.
    assert_eq!(p.a.counters().get(Event::ArpGratuitousSent), 1);
    let garp = &p.wire[0];
    assert_eq!(&garp[0..6], &[0xff; 6]);
    assert_eq!(u16::from_be_bytes([garp[12], garp[13]]), ETHERTYPE_ARP);
    assert_eq!(&garp[28..32], &garp[38..42], "sender IP == target IP");
    assert!(p.b.neighbors().get(IP_A).is_none());
    assert_eq!(
        p.b.counters().total_drops(),
        0,
        "an announcement is not a drop"
    );
}

#[test]
fn resolution_queues_then_flushes_and_both_sides_learn() {
    let mut p = Pair::new();
    p.settle();
    p.wire.clear();
    let h = p.a.ping_open(7).unwrap();
    p.a.ping_send(h, IP_B, 1, b"hello", p.now).unwrap();
    p.settle();
    // request, reply, echo request, echo reply
    assert_eq!(
        p.wire.len(),
        4,
        "{:?}",
        p.wire.iter().map(|f| f.len()).collect::<Vec<_>>()
    );
    assert_eq!(
        p.a.neighbors().get(IP_B).unwrap().state,
        NeighborState::Reachable
    );
    assert_eq!(p.b.neighbors().get(IP_A).unwrap().mac, MAC_A);
    assert_eq!(p.b.counters().get(Event::ArpRepliesSent), 1);
    // Each side learnt the other once, from the wire, and says so for its sibling instances.
    assert_eq!(
        p.a.take_learned_neighbor().map(|n| (n.ip, n.mac)),
        Some((IP_B, MAC_B))
    );
    assert_eq!(p.a.take_learned_neighbor(), None);
    assert_eq!(
        p.b.take_learned_neighbor().map(|n| (n.ip, n.mac)),
        Some((IP_A, MAC_A))
    );
    let r = p.a.ping_recv(h).unwrap();
    assert_eq!(p.a.pool().data(&r.frame), b"hello");
    p.a.pool_mut().free(r.frame);
    p.assert_no_leak();
}

#[test]
fn unresolvable_neighbour_fails_after_three_requests_and_drops_queue() {
    let mut p = Pair::new();
    let h = p.a.ping_open(7).unwrap();
    let ghost = Ipv4Addr::new(198, 18, 0, 99);
    for seq in 0..3 {
        p.a.ping_send(h, ghost, seq, b"x", p.now).unwrap();
    }
    p.advance(Duration::from_secs(10));
    assert_eq!(p.a.counters().get(Event::ArpRequestsSent), 3);
    assert_eq!(p.a.counters().drops(DropReason::ArpUnresolved), 3);
    assert!(p.a.neighbors().get(ghost).is_none());
    p.assert_no_leak();
}

#[test]
fn static_neighbour_is_used_without_arp() {
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
    let before = p.a.counters().get(Event::ArpRequestsSent);
    let h = p.a.ping_open(1).unwrap();
    p.a.ping_send(h, IP_B, 1, b"x", p.now).unwrap();
    p.settle();
    assert_eq!(p.a.counters().get(Event::ArpRequestsSent), before);
    assert!(p.a.ping_recv(h).is_some_and(|r| {
        p.a.pool_mut().free(r.frame);
        true
    }));
}

#[test]
fn stale_entry_is_revalidated_by_unicast_probe() {
    let mut p = Pair::new();
    let h = p.a.ping_open(1).unwrap();
    p.a.ping_send(h, IP_B, 1, b"x", p.now).unwrap();
    p.settle();
    p.advance(Duration::from_secs(40));
    p.wire.clear();
    p.a.ping_send(h, IP_B, 2, b"x", p.now).unwrap();
    p.settle();
    let unicast_arp = p
        .wire
        .iter()
        .any(|f| u16::from_be_bytes([f[12], f[13]]) == ETHERTYPE_ARP && f[0..6] == MAC_B.0);
    assert!(unicast_arp, "a unicast probe went to the known MAC");
    assert_eq!(
        p.a.neighbors().get(IP_B).unwrap().state,
        NeighborState::Reachable
    );
    while let Some(r) = p.a.ping_recv(h) {
        p.a.pool_mut().free(r.frame);
    }
    p.assert_no_leak();
}

#[test]
fn arp_for_other_hosts_is_dropped_and_counted() {
    let mut s = stack(MAC_A, IP_A, 16);
    let _ = feed(&mut s, &[], Instant::ZERO);
    let mut f = vec![0u8; 42];
    crate::wire::write_eth(&mut f, MacAddr([0xff; 6]), MAC_B, ETHERTYPE_ARP);
    crate::arp::ArpPacket {
        op: 1,
        sha: MAC_B,
        spa: IP_B,
        tha: MacAddr([0; 6]),
        tpa: Ipv4Addr::new(198, 18, 0, 50),
    }
    .write(&mut f[14..]);
    assert!(feed(&mut s, &[f], Instant::ZERO).is_empty());
    assert_eq!(s.counters().drops(DropReason::ArpNotForUs), 1);
}
