//! Longest-prefix-match routing: one hash map per prefix length, probed from /32 down.
//!
//! Cost per lookup: one hash probe per prefix length *in use* (a 64-bit mask tracks which lengths
//! have routes), typically two or three; independent of the number of routes. Routes of the same
//! prefix are kept sorted by metric; the lowest wins, as in the kernel.

use crate::config::Route;
use crate::hash::{map, Map};
use core::net::Ipv4Addr;

/// The result of a lookup: where to send a packet for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// The neighbour to resolve: the gateway, or the destination itself when directly connected.
    pub addr: Ipv4Addr,
    /// The route used.
    pub route: Route,
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - prefix_len.min(32))
    }
}

/// Network part of `addr` under `prefix_len`.
pub fn network(addr: Ipv4Addr, prefix_len: u8) -> u32 {
    u32::from(addr) & mask(prefix_len)
}

/// A routing table.
#[derive(Debug)]
pub struct RouteTable {
    by_len: Vec<Map<u32, Vec<Route>>>,
    in_use: u64,
    count: usize,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            by_len: (0..=32).map(|_| map(0, 0)).collect(),
            in_use: 0,
            count: 0,
        }
    }
}

impl RouteTable {
    /// Adds a route, replacing one with the same destination, prefix and metric.
    /// Returns false for a prefix length above 32 (nothing changes).
    pub fn add(&mut self, mut r: Route) -> bool {
        if r.prefix_len > 32 {
            return false;
        }
        let key = network(r.dst, r.prefix_len);
        r.dst = Ipv4Addr::from(key);
        let list = self.by_len[r.prefix_len as usize].entry(key).or_default();
        match list.iter_mut().find(|x| x.metric == r.metric) {
            Some(x) => *x = r,
            None => {
                let pos = list.partition_point(|x| x.metric < r.metric);
                list.insert(pos, r);
                self.count += 1;
            }
        }
        self.in_use |= 1 << r.prefix_len;
        true
    }

    /// Removes the route with this destination, prefix and metric. Returns whether one was removed.
    pub fn remove(&mut self, r: &Route) -> bool {
        if r.prefix_len > 32 {
            return false;
        }
        let key = network(r.dst, r.prefix_len);
        let map = &mut self.by_len[r.prefix_len as usize];
        let Some(list) = map.get_mut(&key) else {
            return false;
        };
        let before = list.len();
        list.retain(|x| x.metric != r.metric);
        let removed = before != list.len();
        if list.is_empty() {
            map.remove(&key);
            if map.is_empty() {
                self.in_use &= !(1 << r.prefix_len);
            }
        }
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Removes every route.
    pub fn clear(&mut self) {
        for m in &mut self.by_len {
            m.clear();
        }
        self.in_use = 0;
        self.count = 0;
    }

    /// Longest-prefix match for `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<NextHop> {
        let d = u32::from(dst);
        let mut lens = self.in_use;
        while lens != 0 {
            let len = 63 - lens.leading_zeros() as u8;
            lens &= !(1 << len);
            if let Some(list) = self.by_len[len as usize].get(&(d & mask(len))) {
                let route = list[0];
                return Some(NextHop {
                    addr: route.gateway.unwrap_or(dst),
                    route,
                });
            }
        }
        None
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every route, longest prefixes first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.by_len.iter().rev().flat_map(|m| m.values().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dst: [u8; 4], len: u8, gw: Option<[u8; 4]>, metric: u32) -> Route {
        Route {
            dst: dst.into(),
            prefix_len: len,
            gateway: gw.map(Into::into),
            metric,
        }
    }

    #[test]
    fn longest_prefix_then_lowest_metric_wins() {
        let mut t = RouteTable::default();
        t.add(r([0, 0, 0, 0], 0, Some([198, 18, 0, 1]), 0));
        t.add(r([198, 18, 0, 0], 24, None, 0));
        t.add(r([198, 19, 5, 0], 24, Some([198, 18, 0, 2]), 100));
        t.add(r([198, 19, 5, 0], 24, Some([198, 18, 0, 3]), 50));
        t.add(r([198, 19, 5, 7], 32, Some([198, 18, 0, 4]), 0));
        assert_eq!(t.len(), 5);
        let hop = |t: &RouteTable, a: [u8; 4]| t.lookup(a.into()).unwrap().addr.octets();
        assert_eq!(hop(&t, [198, 18, 0, 77]), [198, 18, 0, 77]);
        assert_eq!(hop(&t, [198, 19, 5, 8]), [198, 18, 0, 3]);
        assert_eq!(hop(&t, [198, 19, 5, 7]), [198, 18, 0, 4]);
        assert_eq!(hop(&t, [8, 8, 8, 8]), [198, 18, 0, 1]);
        assert!(t.remove(&r([198, 19, 5, 0], 24, None, 50)));
        assert_eq!(hop(&t, [198, 19, 5, 8]), [198, 18, 0, 2]);
        assert!(t.remove(&r([0, 0, 0, 0], 0, None, 0)));
        assert!(t.lookup([8, 8, 8, 8].into()).is_none());
        assert!(!t.remove(&r([1, 2, 3, 0], 24, None, 0)));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn same_key_replaces_and_host_bits_are_ignored() {
        let mut t = RouteTable::default();
        t.add(r([198, 18, 1, 9], 24, Some([198, 18, 0, 1]), 5));
        t.add(r([198, 18, 1, 0], 24, Some([198, 18, 0, 2]), 5));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.lookup([198, 18, 1, 1].into()).unwrap().addr,
            Ipv4Addr::new(198, 18, 0, 2)
        );
        assert!(!t.add(r([1, 1, 1, 1], 33, None, 0)));
    }

    #[test]
    fn many_routes_add_and_remove_cleanly() {
        let mut t = RouteTable::default();
        for i in 0..10_000u32 {
            let a = Ipv4Addr::from(0xc600_0000 | (i << 8));
            t.add(Route {
                dst: a,
                prefix_len: 24,
                gateway: None,
                metric: 0,
            });
        }
        assert_eq!(t.len(), 10_000);
        for i in 0..10_000u32 {
            let a = Ipv4Addr::from(0xc600_0000 | (i << 8));
            assert!(t.remove(&Route {
                dst: a,
                prefix_len: 24,
                gateway: None,
                metric: 0
            }));
        }
        assert!(t.is_empty());
        assert!(t.lookup(Ipv4Addr::new(198, 18, 0, 1)).is_none());
    }
}
