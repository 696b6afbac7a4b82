//! [`FoldedState`]: the model table that [`ConfigEvent`]s are folded into.
//!
//! It is what a stack instance holds after applying every event in order, so it serves three
//! purposes: the sync thread keeps one to suppress events that change nothing and to turn a
//! re-dump into a minimal diff; a late subscriber gets it as its first `Snapshot`; tests compare it
//! with `ip route show`.
//!
//! Invariants: routes are keyed by `(dst, prefix_len, metric)`, neighbours by IP, addresses by
//! `(addr, prefix_len)`, as the kernel keys them (ConfigEvent's contract). Cost: every operation is
//! a `BTreeMap` operation, O(log n); [`FoldedState::diff`] is O(n) in both tables.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use cnet_stack::config::InterfaceSnapshot;
use cnet_stack::{ConfigEvent, IfAddr, MacAddr, Neighbor, Route};

/// Key of a route, as the kernel and [`Route`]'s docs define it: destination, prefix, metric.
pub type RouteKey = (Ipv4Addr, u8, u32);

/// The state of one interface as built by applying [`ConfigEvent`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldedState {
    mac: Option<MacAddr>,
    mtu: Option<usize>,
    up: bool,
    addrs: BTreeMap<(Ipv4Addr, u8), IfAddr>,
    routes: BTreeMap<RouteKey, Route>,
    neighbors: BTreeMap<Ipv4Addr, Neighbor>,
}

/// The key of `route` in a [`FoldedState`].
pub fn route_key(route: &Route) -> RouteKey {
    (route.dst, route.prefix_len, route.metric)
}

impl FoldedState {
    /// An empty state: link down, nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state a [`ConfigEvent::Snapshot`] of `snap` leaves.
    pub fn from_snapshot(snap: &InterfaceSnapshot) -> Self {
        let mut state = FoldedState::new();
        state.apply(&ConfigEvent::Snapshot(Box::new(snap.clone())));
        state
    }

    /// Applies one event; returns whether anything changed.
    pub fn apply(&mut self, event: &ConfigEvent) -> bool {
        match event {
            ConfigEvent::Link { up, mtu, mac } => {
                let changed = self.up != *up || self.mtu != Some(*mtu) || self.mac != Some(*mac);
                self.up = *up;
                self.mtu = Some(*mtu);
                self.mac = Some(*mac);
                changed
            }
            ConfigEvent::AddrAdd(a) => self.addrs.insert((a.addr, a.prefix_len), *a).is_none(),
            ConfigEvent::AddrDel(a) => self.addrs.remove(&(a.addr, a.prefix_len)).is_some(),
            ConfigEvent::RouteAdd(r) => self.routes.insert(route_key(r), *r) != Some(*r),
            ConfigEvent::RouteDel(r) => self.routes.remove(&route_key(r)).is_some(),
            ConfigEvent::NeighborSet(n) => self.neighbors.insert(n.ip, *n) != Some(*n),
            ConfigEvent::NeighborDel(ip) => self.neighbors.remove(ip).is_some(),
            ConfigEvent::Snapshot(snap) => {
                let mut next = FoldedState {
                    mac: snap.mac,
                    mtu: snap.mtu,
                    up: snap.up,
                    ..FoldedState::default()
                };
                for a in &snap.addrs {
                    next.addrs.insert((a.addr, a.prefix_len), *a);
                }
                for r in &snap.routes {
                    next.routes.insert(route_key(r), *r);
                }
                for n in &snap.neighbors {
                    next.neighbors.insert(n.ip, *n);
                }
                let changed = next != *self;
                *self = next;
                changed
            }
        }
    }

    /// The whole state as a snapshot (addresses, routes and neighbours sorted by key).
    pub fn snapshot(&self) -> InterfaceSnapshot {
        InterfaceSnapshot {
            mac: self.mac,
            mtu: self.mtu,
            up: self.up,
            addrs: self.addrs.values().copied().collect(),
            routes: self.routes.values().copied().collect(),
            neighbors: self.neighbors.values().copied().collect(),
        }
    }

    /// The events that turn `self` into `target`, in this order: link, address removals, address
    /// additions, route removals, route additions/replacements, neighbour removals, neighbour
    /// changes. Empty when the two are equal.
    ///
    /// A link that is known in `self` but unknown in `target` (interface gone) is reported as
    /// `Link { up: false }` with the last known MTU and MAC.
    pub fn diff(&self, target: &FoldedState) -> Vec<ConfigEvent> {
        let mut out = Vec::new();
        let mac = target.mac.or(self.mac);
        let mtu = target.mtu.or(self.mtu);
        if (self.up, self.mtu, self.mac) != (target.up, mtu, mac) {
            out.push(ConfigEvent::Link {
                up: target.up,
                mtu: mtu.unwrap_or(0),
                mac: mac.unwrap_or(MacAddr([0; 6])),
            });
        }
        for (k, a) in &self.addrs {
            if !target.addrs.contains_key(k) {
                out.push(ConfigEvent::AddrDel(*a));
            }
        }
        for (k, a) in &target.addrs {
            if !self.addrs.contains_key(k) {
                out.push(ConfigEvent::AddrAdd(*a));
            }
        }
        for (k, r) in &self.routes {
            if !target.routes.contains_key(k) {
                out.push(ConfigEvent::RouteDel(*r));
            }
        }
        for (k, r) in &target.routes {
            if self.routes.get(k) != Some(r) {
                out.push(ConfigEvent::RouteAdd(*r));
            }
        }
        for ip in self.neighbors.keys() {
            if !target.neighbors.contains_key(ip) {
                out.push(ConfigEvent::NeighborDel(*ip));
            }
        }
        for (ip, n) in &target.neighbors {
            if self.neighbors.get(ip) != Some(n) {
                out.push(ConfigEvent::NeighborSet(*n));
            }
        }
        out
    }

    /// The MAC, if known.
    pub fn mac(&self) -> Option<MacAddr> {
        self.mac
    }

    /// The IP MTU, if known.
    pub fn mtu(&self) -> Option<usize> {
        self.mtu
    }

    /// Whether the link is operationally up.
    pub fn up(&self) -> bool {
        self.up
    }

    /// Addresses, sorted by (address, prefix length).
    pub fn addrs(&self) -> impl Iterator<Item = &IfAddr> + '_ {
        self.addrs.values()
    }

    /// Routes, sorted by [`RouteKey`].
    pub fn routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes.values()
    }

    /// The route stored under `key`, if any.
    pub fn route(&self, key: &RouteKey) -> Option<&Route> {
        self.routes.get(key)
    }

    /// Neighbours, sorted by IP.
    pub fn neighbors(&self) -> impl Iterator<Item = &Neighbor> + '_ {
        self.neighbors.values()
    }

    /// The neighbour entry for `ip`, if any.
    pub fn neighbor(&self, ip: Ipv4Addr) -> Option<&Neighbor> {
        self.neighbors.get(&ip)
    }

    /// Sets link fields without an event (used while building a dump's target state).
    pub(crate) fn set_link(&mut self, up: bool, mtu: Option<usize>, mac: Option<MacAddr>) {
        self.up = up;
        self.mtu = mtu;
        self.mac = mac;
    }

    /// Forgets addresses, routes and neighbours and sets the link down, keeping MTU and MAC.
    pub(crate) fn clear_keep_link(&self) -> FoldedState {
        FoldedState {
            mac: self.mac,
            mtu: self.mtu,
            ..FoldedState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: [u8; 4], len: u8, gw: Option<[u8; 4]>, metric: u32) -> Route {
        Route {
            dst: dst.into(),
            prefix_len: len,
            gateway: gw.map(Ipv4Addr::from),
            metric,
        }
    }

    #[test]
    fn apply_reports_changes_only() {
        let mut s = FoldedState::new();
        let r = route([198, 18, 1, 0], 24, None, 0);
        assert!(s.apply(&ConfigEvent::RouteAdd(r)));
        assert!(!s.apply(&ConfigEvent::RouteAdd(r)));
        let r2 = route([198, 18, 1, 0], 24, Some([198, 18, 0, 1]), 0);
        assert!(s.apply(&ConfigEvent::RouteAdd(r2)), "replace with same key");
        assert_eq!(s.routes().count(), 1);
        assert!(s.apply(&ConfigEvent::RouteDel(r)));
        assert!(!s.apply(&ConfigEvent::RouteDel(r)));
    }

    #[test]
    fn diff_then_apply_reaches_target() {
        let mut a = FoldedState::new();
        a.apply(&ConfigEvent::RouteAdd(route([198, 18, 1, 0], 24, None, 0)));
        a.apply(&ConfigEvent::RouteAdd(route([198, 18, 2, 0], 24, None, 5)));
        a.apply(&ConfigEvent::AddrAdd(IfAddr {
            addr: [198, 18, 0, 2].into(),
            prefix_len: 24,
        }));
        let mut b = FoldedState::new();
        b.apply(&ConfigEvent::Link {
            up: true,
            mtu: 1400,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
        });
        b.apply(&ConfigEvent::RouteAdd(route(
            [198, 18, 2, 0],
            24,
            Some([198, 18, 0, 1]),
            5,
        )));
        b.apply(&ConfigEvent::NeighborSet(Neighbor {
            ip: [198, 18, 0, 1].into(),
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            permanent: true,
        }));
        let events = a.diff(&b);
        let mut c = a.clone();
        for e in &events {
            assert!(c.apply(e), "diff emitted a no-op: {e:?}");
        }
        assert_eq!(c, b);
        assert!(c.diff(&b).is_empty());
    }

    #[test]
    fn snapshot_round_trip() {
        let mut a = FoldedState::new();
        a.apply(&ConfigEvent::RouteAdd(route(
            [0, 0, 0, 0],
            0,
            Some([198, 18, 0, 1]),
            100,
        )));
        let b = FoldedState::from_snapshot(&a.snapshot());
        assert_eq!(a, b);
    }
}
