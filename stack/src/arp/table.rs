//! The neighbour table: IPv4 address to MAC, with RFC 1122 2.3.2 states and a bounded queue of
//! packets waiting for resolution.
//!
//! States follow the Linux NUD machine in simplified form:
//! `Incomplete` (request sent, packets queued) → `Reachable` (confirmed by an ARP packet from the
//! peer) → `Stale` (after `reachable_ms` without confirmation; still used) → `Probe` (a unicast request
//! was sent on use; RFC 1122 2.3.2.1 "unicast poll") → back to `Reachable` or removed after
//! `max_probes` unanswered requests. `Permanent` entries come from configuration and never change.
//!
//! Aging is lazy: an entry's state is brought up to date when it is looked up, so no periodic walk
//! over all entries is needed. Entries waiting for an answer (`Incomplete`, `Probe`) are few and
//! sit on a separate pending list that the retransmission timer walks.

use crate::buf::Frame;
use crate::config::MacAddr;
use crate::hash::{map, Map};
use crate::time::{Duration, Instant};
use core::net::Ipv4Addr;
use std::collections::VecDeque;

/// State of a neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborState {
    /// Resolution in progress; packets are queued.
    Incomplete,
    /// Recently confirmed.
    Reachable,
    /// Not confirmed lately; used, and re-validated on use.
    Stale,
    /// Being re-validated with unicast requests.
    Probe,
    /// Configured; never aged or replaced.
    Permanent,
}

/// One neighbour.
#[derive(Debug)]
pub struct Entry {
    /// Its MAC (meaningless while `Incomplete`).
    pub mac: MacAddr,
    /// Its state.
    pub state: NeighborState,
    /// Until when a `Reachable` entry stays so.
    pub reachable_until: Instant,
    /// Requests sent in the current resolution or probe round.
    pub probes: u32,
    /// When the next request is due (while `Incomplete` or `Probe`).
    pub next_probe: Instant,
    /// Packets waiting for resolution (Ethernet header not yet written).
    pub queue: VecDeque<Frame>,
}

/// What a lookup tells the output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Send to this MAC now.
    Ready(MacAddr),
    /// Send to this MAC now, and also send a unicast probe (stale entry re-validation).
    ReadyProbe(MacAddr),
    /// Queue the packet; a request must be sent now (new entry).
    Resolve,
    /// Queue the packet; a request is already outstanding.
    Pending,
    /// The table is full of entries that cannot be evicted.
    Full,
}

/// What a timer pass asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a broadcast request for this address.
    Broadcast(Ipv4Addr),
    /// Send a unicast request to this address and MAC.
    Unicast(Ipv4Addr, MacAddr),
    /// Resolution failed: the entry was removed; its queued packets are returned.
    Failed(Ipv4Addr, VecDeque<Frame>),
}

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a confirmation keeps an entry reachable.
    pub reachable: Duration,
    /// Interval between requests.
    pub retransmit: Duration,
    /// Requests before giving up.
    pub max_probes: u32,
}

/// Most learnt neighbours kept for [`NeighborTable::take_learned`]; older ones are dropped.
pub const LEARNED_MAX: usize = 64;

/// The table. See module docs.
#[derive(Debug)]
pub struct NeighborTable {
    entries: Map<Ipv4Addr, Entry>,
    pending: Vec<Ipv4Addr>,
    /// Frames queued over all entries.
    queued: usize,
    /// Neighbours learnt from the wire, for sibling instances on other queues (bounded).
    learned: VecDeque<(Ipv4Addr, MacAddr)>,
    max: usize,
    timing: Timing,
}

impl NeighborTable {
    /// A table of at most `max` entries.
    pub fn new(max: usize, timing: Timing, seed: u64) -> Self {
        NeighborTable {
            entries: map(max.min(1024), seed),
            pending: Vec::with_capacity(64),
            queued: 0,
            learned: VecDeque::with_capacity(LEARNED_MAX),
            max: max.max(1),
            timing,
        }
    }

    /// Entry for `ip`, if any (state as last updated; see [`NeighborTable::resolve`]).
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Entry> {
        self.entries.get(&ip)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (&Ipv4Addr, &Entry)> {
        self.entries.iter()
    }

    /// Looks up `ip` for output, creating an `Incomplete` entry if absent.
    pub fn resolve(&mut self, ip: Ipv4Addr, now: Instant) -> Resolution {
        if let Some(e) = self.entries.get_mut(&ip) {
            return match e.state {
                NeighborState::Permanent => Resolution::Ready(e.mac),
                NeighborState::Reachable if now < e.reachable_until => Resolution::Ready(e.mac),
                NeighborState::Reachable | NeighborState::Stale => {
                    e.state = NeighborState::Probe;
                    e.probes = 1;
                    e.next_probe = now + self.timing.retransmit;
                    self.pending.push(ip);
                    Resolution::ReadyProbe(e.mac)
                }
                NeighborState::Probe => Resolution::Ready(e.mac),
                NeighborState::Incomplete => Resolution::Pending,
            };
        }
        if self.entries.len() >= self.max && !self.evict_one() {
            return Resolution::Full;
        }
        self.entries.insert(
            ip,
            Entry {
                mac: MacAddr([0; 6]),
                state: NeighborState::Incomplete,
                reachable_until: now,
                probes: 1,
                next_probe: now + self.timing.retransmit,
                queue: VecDeque::new(),
            },
        );
        self.pending.push(ip);
        Resolution::Resolve
    }

    /// Queues a packet on an `Incomplete` entry, at most `limit` per entry and `total` over all
    /// entries. Gives the frame back when there is no room (or no such entry).
    pub fn enqueue(
        &mut self,
        ip: Ipv4Addr,
        frame: Frame,
        limit: usize,
        total: usize,
    ) -> Result<(), Frame> {
        if self.queued >= total {
            return Err(frame);
        }
        match self.entries.get_mut(&ip) {
            Some(e) if e.state == NeighborState::Incomplete && e.queue.len() < limit => {
                e.queue.push_back(frame);
                self.queued += 1;
                Ok(())
            }
            _ => Err(frame),
        }
    }

    /// Records that `ip` was learnt (or changed MAC) from the wire.
    pub fn note_learned(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        if self.learned.len() == LEARNED_MAX {
            self.learned.pop_front();
        }
        self.learned.push_back((ip, mac));
    }

    /// Takes the oldest neighbour learnt from the wire since the last call.
    pub fn take_learned(&mut self) -> Option<(Ipv4Addr, MacAddr)> {
        self.learned.pop_front()
    }

    /// Frames queued over all entries.
    pub fn queued(&self) -> usize {
        self.queued
    }

    fn take_queue(queued: &mut usize, e: &mut Entry) -> VecDeque<Frame> {
        *queued -= e.queue.len();
        core::mem::take(&mut e.queue)
    }

    /// Evicts a non-permanent entry with nothing queued; Stale first. Rare path (table full).
    fn evict_one(&mut self) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.state != NeighborState::Permanent && e.queue.is_empty())
            .min_by_key(|(_, e)| (e.state != NeighborState::Stale, e.reachable_until))
            .map(|(ip, _)| *ip);
        match victim {
            Some(ip) => {
                self.entries.remove(&ip);
                self.pending.retain(|p| *p != ip);
                true
            }
            None => false,
        }
    }

    /// An ARP packet from `ip` with `mac` arrived (RFC 826 "merge"). `create` says whether to add an
    /// entry if none exists (we were the target). Returns packets that were waiting for `ip`.
    pub fn confirm(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
        create: bool,
        now: Instant,
    ) -> Option<VecDeque<Frame>> {
        let reachable_until = now + self.timing.reachable;
        match self.entries.get_mut(&ip) {
            Some(e) if e.state == NeighborState::Permanent => None,
            Some(e) => {
                e.mac = mac;
                e.state = NeighborState::Reachable;
                e.reachable_until = reachable_until;
                e.probes = 0;
                self.pending.retain(|p| *p != ip);
                (!e.queue.is_empty()).then(|| Self::take_queue(&mut self.queued, e))
            }
            None if create => {
                if self.entries.len() >= self.max && !self.evict_one() {
                    return None;
                }
                self.entries.insert(
                    ip,
                    Entry {
                        mac,
                        state: NeighborState::Reachable,
                        reachable_until,
                        probes: 0,
                        next_probe: now,
                        queue: VecDeque::new(),
                    },
                );
                None
            }
            None => None,
        }
    }

    /// Sets an entry from configuration. A permanent entry replaces whatever was there; a dynamic one
    /// counts as a fresh confirmation. Returns packets that were waiting. A new entry that finds
    /// the table full evicts a dynamic one; when every entry is permanent or has packets waiting
    /// it is not stored (the table's bound holds for configuration too: check with `get`).
    pub fn set(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
        permanent: bool,
        now: Instant,
    ) -> Option<VecDeque<Frame>> {
        if !permanent {
            return self.confirm(ip, mac, true, now);
        }
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.max && !self.evict_one() {
            return None;
        }
        self.pending.retain(|p| *p != ip);
        let queued = self
            .entries
            .remove(&ip)
            .map(|mut e| Self::take_queue(&mut self.queued, &mut e));
        self.entries.insert(
            ip,
            Entry {
                mac,
                state: NeighborState::Permanent,
                reachable_until: Instant::MAX,
                probes: 0,
                next_probe: Instant::MAX,
                queue: VecDeque::new(),
            },
        );
        queued.filter(|q| !q.is_empty())
    }

    /// Removes an entry, returning packets that were waiting on it.
    pub fn remove(&mut self, ip: Ipv4Addr) -> Option<VecDeque<Frame>> {
        self.pending.retain(|p| *p != ip);
        self.entries
            .remove(&ip)
            .map(|mut e| Self::take_queue(&mut self.queued, &mut e))
    }

    /// Removes every entry that `keep` rejects, returning their queued packets.
    pub fn retain(&mut self, mut keep: impl FnMut(Ipv4Addr, &Entry) -> bool) -> Vec<Frame> {
        let mut dropped = Vec::new();
        let queued = &mut self.queued;
        self.entries.retain(|ip, e| {
            let k = keep(*ip, e);
            if !k {
                dropped.extend(Self::take_queue(queued, e));
            }
            k
        });
        let entries = &self.entries;
        self.pending.retain(|p| entries.contains_key(p));
        dropped
    }

    /// Earliest retransmission due.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending
            .iter()
            .filter_map(|ip| self.entries.get(ip))
            .map(|e| e.next_probe)
            .min()
    }

    /// Runs due retransmissions and failures, pushing what must be done into `out`.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<TimerAction>) {
        let mut i = 0;
        while i < self.pending.len() {
            let ip = self.pending[i];
            let Some(e) = self.entries.get_mut(&ip) else {
                self.pending.swap_remove(i);
                continue;
            };
            if e.next_probe > now {
                i += 1;
                continue;
            }
            if e.probes >= self.timing.max_probes {
                self.pending.swap_remove(i);
                let mut e = self.entries.remove(&ip).expect("looked up above");
                out.push(TimerAction::Failed(
                    ip,
                    Self::take_queue(&mut self.queued, &mut e),
                ));
                continue;
            }
            e.probes += 1;
            e.next_probe = now + self.timing.retransmit;
            out.push(match e.state {
                NeighborState::Probe => TimerAction::Unicast(ip, e.mac),
                _ => TimerAction::Broadcast(ip),
            });
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::Pool;

    const T: Timing = Timing {
        reachable: Duration::from_secs(30),
        retransmit: Duration::from_secs(1),
        max_probes: 3,
    };
    const IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn resolve_queue_confirm_flushes() {
        let mut pool = Pool::new(4, 256, 0).unwrap();
        let mut t = NeighborTable::new(8, T, 1);
        let now = Instant::ZERO;
        assert_eq!(t.resolve(IP, now), Resolution::Resolve);
        assert_eq!(t.resolve(IP, now), Resolution::Pending);
        t.enqueue(IP, pool.alloc().unwrap(), 1, 10).unwrap();
        let extra = t.enqueue(IP, pool.alloc().unwrap(), 1, 10).unwrap_err();
        pool.free(extra);
        let q = t.confirm(IP, MAC, false, now).unwrap();
        assert_eq!(q.len(), 1);
        q.into_iter().for_each(|f| pool.free(f));
        assert_eq!(t.resolve(IP, now), Resolution::Ready(MAC));
        assert_eq!(t.next_deadline(), None);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn unanswered_resolution_retries_then_fails() {
        let mut t = NeighborTable::new(8, T, 1);
        let mut now = Instant::ZERO;
        assert_eq!(t.resolve(IP, now), Resolution::Resolve);
        let mut out = Vec::new();
        let mut broadcasts = 1;
        for _ in 0..10 {
            now = now + Duration::from_secs(1);
            t.on_timer(now, &mut out);
            for a in out.drain(..) {
                match a {
                    TimerAction::Broadcast(_) => broadcasts += 1,
                    TimerAction::Failed(ip, q) => {
                        assert_eq!(ip, IP);
                        assert!(q.is_empty());
                        assert_eq!(broadcasts, 3);
                        assert!(t.get(IP).is_none());
                        return;
                    }
                    TimerAction::Unicast(..) => panic!("no unicast while incomplete"),
                }
            }
        }
        panic!("resolution never failed");
    }

    #[test]
    fn stale_entries_are_probed_by_unicast_and_permanent_ones_never() {
        let mut t = NeighborTable::new(8, T, 1);
        t.confirm(IP, MAC, true, Instant::ZERO);
        let later = Instant::ZERO + Duration::from_secs(31);
        assert_eq!(t.resolve(IP, later), Resolution::ReadyProbe(MAC));
        let mut out = Vec::new();
        t.on_timer(later + Duration::from_secs(1), &mut out);
        assert_eq!(out, vec![TimerAction::Unicast(IP, MAC)]);
        let p = Ipv4Addr::new(198, 18, 0, 9);
        t.set(p, MAC, true, Instant::ZERO);
        assert_eq!(t.resolve(p, Instant::MAX), Resolution::Ready(MAC));
        assert!(t.confirm(p, MacAddr([9; 6]), true, later).is_none());
        assert_eq!(t.get(p).unwrap().mac, MAC);
    }

    #[test]
    fn full_table_evicts_dynamic_but_not_permanent() {
        let mut t = NeighborTable::new(2, T, 1);
        t.set(Ipv4Addr::new(198, 18, 0, 10), MAC, true, Instant::ZERO);
        t.confirm(Ipv4Addr::new(198, 18, 0, 11), MAC, true, Instant::ZERO);
        assert_eq!(t.resolve(IP, Instant::ZERO), Resolution::Resolve);
        assert!(t.get(Ipv4Addr::new(198, 18, 0, 11)).is_none());
        assert!(t.get(Ipv4Addr::new(198, 18, 0, 10)).is_some());
        // Configuration respects the bound too: a permanent entry evicts a dynamic one, and is
        // refused when only permanent entries are left.
        t.confirm(Ipv4Addr::new(198, 18, 0, 13), MAC, true, Instant::ZERO);
        t.set(Ipv4Addr::new(198, 18, 0, 14), MAC, true, Instant::ZERO);
        assert!(t.get(Ipv4Addr::new(198, 18, 0, 14)).is_some());
        assert!(t.len() <= 2);
        let mut pool = Pool::new(1, 256, 0).unwrap();
        t.remove(Ipv4Addr::new(198, 18, 0, 14));
        assert_eq!(t.resolve(IP, Instant::ZERO), Resolution::Resolve);
        t.enqueue(IP, pool.alloc().unwrap(), 4, 10).unwrap();
        t.set(Ipv4Addr::new(198, 18, 0, 15), MAC, true, Instant::ZERO);
        assert!(
            t.get(Ipv4Addr::new(198, 18, 0, 15)).is_none(),
            "refused: table full"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.queued(), 1);
        assert_eq!(
            t.resolve(Ipv4Addr::new(198, 18, 0, 12), Instant::ZERO),
            Resolution::Full
        );
        for f in t.remove(IP).unwrap() {
            pool.free(f);
        }
    }
}
