//! The output flow cache: for a destination, what routing, source selection and neighbour
//! resolution decided last time (next hop's MAC as a ready Ethernet header, the source address a
//! wildcard socket sends from), so that a datagram of a known flow skips the route lookup, the
//! source choice and the neighbour lookup and gets its headers written in one go.
//!
//! Validity: every entry carries the generation it was filled in; the stack bumps its generation
//! on anything that can change a decision (any configuration event, ARP input that confirms or
//! learns a neighbour, a neighbour timer action, a resolution that is not a plain hit), so a stale
//! entry is never used. A neighbour that is `Reachable` only until some instant is cached only
//! until that instant (then the slow path ages it to `Stale` and probes as before); `Permanent`
//! and broadcast entries stay until the generation changes. Entries that need work on use
//! (`Stale`, `Probe`, `Incomplete`) are never cached.
//!
//! Direct-mapped, [`FLOW_SLOTS`] entries, indexed by a multiplicative hash of the destination:
//! a miss only costs the slow path it replaces.

use crate::time::Instant;
use crate::wire::{checksum, ETH_HLEN, IPV4_HLEN};
use core::net::Ipv4Addr;

/// Ethernet and IPv4 headers together, as the fast paths write them.
pub(crate) const ETH_IPV4_HLEN: usize = ETH_HLEN + IPV4_HLEN;

/// The IPv4 header fields a fast path sends with (no options, not a fragment, TTL
/// [`super::DEFAULT_TTL`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastIpv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// Total length (IPv4 header included).
    pub total: u16,
    pub ident: u16,
    pub dont_frag: bool,
    pub tos: u8,
}

impl FastIpv4 {
    /// Writes `eth` and the IPv4 header into `h` in one store sequence, the header checksum
    /// computed from the fields' words in the CPU's byte order (RFC 1071 2(B): no byte swaps of
    /// the addresses, no pass over the written bytes). The same bytes as the slow path's
    /// `Ipv4Header::write` after `write_eth`. Inlined: UDP's and TCP's fast paths are its callers.
    #[inline(always)]
    pub fn write(&self, h: &mut [u8; ETH_IPV4_HLEN], eth: &[u8; ETH_HLEN]) {
        let flags: u16 = if self.dont_frag { 0x4000 } else { 0 };
        let (src, dst) = (self.src.octets(), self.dst.octets());
        let ttl = super::DEFAULT_TTL;
        let sum = u64::from(u16::from_ne_bytes([0x45, self.tos]))
            + u64::from(self.total.to_be())
            + u64::from(self.ident.to_be())
            + u64::from(flags.to_be())
            + u64::from(u16::from_ne_bytes([ttl, self.proto]))
            + u64::from(u32::from_ne_bytes(src))
            + u64::from(u32::from_ne_bytes(dst));
        let c = !checksum::fold(sum);
        h[..ETH_HLEN].copy_from_slice(eth);
        let ip = ETH_HLEN;
        h[ip] = 0x45;
        h[ip + 1] = self.tos;
        h[ip + 2..ip + 4].copy_from_slice(&self.total.to_be_bytes());
        h[ip + 4..ip + 6].copy_from_slice(&self.ident.to_be_bytes());
        h[ip + 6..ip + 8].copy_from_slice(&flags.to_be_bytes());
        h[ip + 8] = ttl;
        h[ip + 9] = self.proto;
        h[ip + 10..ip + 12].copy_from_slice(&c.to_ne_bytes());
        h[ip + 12..ip + 16].copy_from_slice(&src);
        h[ip + 16..ip + 20].copy_from_slice(&dst);
    }
}

/// Entries in the cache.
pub(crate) const FLOW_SLOTS: usize = 16;

/// One cached flow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    /// Generation it was filled in; 0: empty.
    pub gen: u32,
    /// Destination address (the key).
    pub dst: Ipv4Addr,
    /// Used while `now` is before this.
    pub valid_until: Instant,
    /// The source a socket bound to 0.0.0.0 sends from.
    pub src_wild: Ipv4Addr,
    /// Ethernet header: next hop's MAC (or broadcast), ours, IPv4.
    pub eth: [u8; 14],
}

impl Flow {
    const EMPTY: Flow = Flow {
        gen: 0,
        dst: Ipv4Addr::UNSPECIFIED,
        valid_until: Instant::ZERO,
        src_wild: Ipv4Addr::UNSPECIFIED,
        eth: [0; 14],
    };
}

/// Receive-side address decisions: the last source that passed the RFC 1122 3.2.1.3 checks
/// and the last destination accepted, with whether it is a broadcast address. They depend on
/// the interface's addresses only, which change by configuration only, which bumps the
/// generation: kept across bursts while it holds, so that a flow's packets are checked once.
///
/// Each entry is one word (an address, and above it 1 for a source that passed, 1 or 2 for a
/// unicast or broadcast destination; 0: empty), so that a burst copies it in and out cheaply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AddrMemo {
    src: u64,
    dst: u64,
}

impl AddrMemo {
    #[inline]
    fn word(addr: Ipv4Addr, tag: u64) -> u64 {
        tag << 32 | u64::from(u32::from_ne_bytes(addr.octets()))
    }

    /// True if `src` passed the source checks.
    #[inline]
    pub fn src_ok(&self, src: Ipv4Addr) -> bool {
        self.src == Self::word(src, 1)
    }

    /// Remembers that `src` passed the source checks.
    #[inline]
    pub fn set_src_ok(&mut self, src: Ipv4Addr) {
        self.src = Self::word(src, 1);
    }

    /// Whether `dst` is a broadcast address, if it is the destination remembered.
    #[inline]
    pub fn dst(&self, dst: Ipv4Addr) -> Option<bool> {
        if self.dst as u32 != u32::from_ne_bytes(dst.octets()) {
            return None;
        }
        match self.dst >> 32 {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    /// Remembers that `dst` is accepted, and whether it is a broadcast address.
    #[inline]
    pub fn set_dst(&mut self, dst: Ipv4Addr, broadcast: bool) {
        self.dst = Self::word(dst, 1 + u64::from(broadcast));
    }
}

/// The cache. See the module docs.
#[derive(Debug)]
pub(crate) struct FlowCache {
    slots: [Flow; FLOW_SLOTS],
    gen: u32,
    /// The receive memo and the generation it was filled in.
    rx: (u32, AddrMemo),
}

impl Default for FlowCache {
    fn default() -> Self {
        FlowCache {
            slots: [Flow::EMPTY; FLOW_SLOTS],
            gen: 1,
            rx: (0, AddrMemo::default()),
        }
    }
}

#[inline]
fn slot(dst: Ipv4Addr) -> usize {
    (u32::from(dst).wrapping_mul(0x9e37_79b1) >> 28) as usize % FLOW_SLOTS
}

impl FlowCache {
    /// Forgets every entry (O(1)).
    #[inline]
    pub fn invalidate(&mut self) {
        self.gen = self.gen.wrapping_add(1).max(1);
    }

    /// The valid entry for `dst` at `now`, if any.
    #[inline]
    pub fn get(&self, dst: Ipv4Addr, now: Instant) -> Option<&Flow> {
        let f = &self.slots[slot(dst)];
        (f.gen == self.gen && f.dst == dst && now < f.valid_until).then_some(f)
    }

    /// The receive memo for a burst: the stored one if still valid, else an empty one.
    #[inline]
    pub fn rx_memo(&self) -> AddrMemo {
        if self.rx.0 == self.gen {
            self.rx.1
        } else {
            AddrMemo::default()
        }
    }

    /// Keeps the memo a burst filled in, valid until the generation changes. `gen` is the
    /// generation when the burst started: a memo filled under an older one is never used.
    #[inline]
    pub fn keep_rx_memo(&mut self, gen: u32, memo: AddrMemo) {
        self.rx = (gen, memo);
    }

    /// The current generation.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.gen
    }

    /// Caches a decision for `dst` (replacing whatever shared its slot).
    #[inline]
    pub fn put(&mut self, dst: Ipv4Addr, valid_until: Instant, src_wild: Ipv4Addr, eth: [u8; 14]) {
        self.slots[slot(dst)] = Flow {
            gen: self.gen,
            dst,
            valid_until,
            src_wild,
            eth,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-sequence header write gives the slow path's bytes, checksum included.
    #[test]
    fn fast_header_equals_the_slow_path_header() {
        use crate::wire::{write_eth, Ipv4Header};
        use smoltcp::wire::EthernetAddress;
        let mut x = 0x2545_f491u32;
        for i in 0..2000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let ip = FastIpv4 {
                src: Ipv4Addr::from(x),
                dst: Ipv4Addr::from(x.rotate_left(11) ^ i),
                proto: [1, 6, 17][i as usize % 3],
                total: (x >> 16) as u16 | 20,
                ident: x as u16,
                dont_frag: i % 2 == 0,
                tos: (x >> 8) as u8,
            };
            let eth = [i as u8; ETH_HLEN];
            let mut fast = [0u8; ETH_IPV4_HLEN];
            ip.write(&mut fast, &eth);
            let mut slow = [0u8; ETH_IPV4_HLEN];
            write_eth(
                &mut slow,
                EthernetAddress([i as u8; 6]),
                EthernetAddress([i as u8; 6]),
                u16::from_be_bytes([i as u8; 2]),
            );
            Ipv4Header {
                src: ip.src,
                dst: ip.dst,
                proto: ip.proto,
                ttl: crate::ipv4::DEFAULT_TTL,
                ident: ip.ident,
                dont_frag: ip.dont_frag,
                tos: ip.tos,
                more_frags: false,
                frag_offset: 0,
                payload_len: ip.total - 20,
            }
            .write(&mut slow[ETH_HLEN..]);
            assert_eq!(fast, slow, "case {i}");
        }
    }

    #[test]
    fn entries_expire_and_invalidate() {
        let mut c = FlowCache::default();
        let d = Ipv4Addr::new(198, 18, 0, 2);
        assert!(c.get(d, Instant::ZERO).is_none());
        c.put(
            d,
            Instant::from_millis(5),
            Ipv4Addr::new(198, 18, 0, 1),
            [1; 14],
        );
        assert_eq!(
            c.get(d, Instant::from_millis(4)).map(|f| f.eth),
            Some([1; 14])
        );
        assert!(c.get(d, Instant::from_millis(5)).is_none());
        assert!(c.get(Ipv4Addr::new(198, 18, 0, 3), Instant::ZERO).is_none());
        c.invalidate();
        assert!(c.get(d, Instant::ZERO).is_none());
    }

    #[test]
    fn the_receive_memo_lasts_for_its_generation() {
        let mut c = FlowCache::default();
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::UNSPECIFIED);
        // Empty: nothing passes, not even the address whose word is all zeros.
        let m = c.rx_memo();
        assert!(!m.src_ok(a) && !m.src_ok(b) && m.dst(a).is_none() && m.dst(b).is_none());
        let gen = c.generation();
        let mut m = AddrMemo::default();
        m.set_src_ok(a);
        m.set_dst(b, true);
        c.keep_rx_memo(gen, m);
        let m = c.rx_memo();
        assert!(m.src_ok(a) && !m.src_ok(b));
        assert_eq!((m.dst(b), m.dst(a)), (Some(true), None));
        let mut m2 = m;
        m2.set_dst(a, false);
        assert_eq!((m2.dst(a), m2.dst(b)), (Some(false), None));
        c.invalidate();
        assert_eq!(c.rx_memo(), AddrMemo::default());
        // Filled under an older generation (invalidated during its burst): never used.
        c.keep_rx_memo(gen, m);
        assert_eq!(c.rx_memo(), AddrMemo::default());
    }
}
