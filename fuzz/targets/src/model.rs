//! Reassembly against a model: the `Reassembler` alone, outcome by outcome, against a byte map of
//! received ranges; and fragment sequences through the whole stack.

use crate::harness::*;
use crate::input::Input;
use cnet_stack::counters::DropReason;
use cnet_stack::ipv4::reassembly::{Key, Outcome, Reassembler};
use cnet_stack::wire::ETHERTYPE_IPV4;
use cnet_stack::{Duration, Instant, Pool};
use core::net::Ipv4Addr;

/// The byte of datagram `ident` at payload offset `off`: fragments of one datagram agree.
fn pattern(ident: u16, off: usize) -> u8 {
    (off as u32)
        .wrapping_mul(31)
        .wrapping_add(u32::from(ident) * 101)
        .wrapping_add((off >> 8) as u32) as u8
}

/// A datagram in the model: which bytes arrived (a byte map), the fragments (for duplicates), the
/// total length once the last fragment arrived, and when it started.
struct ModelDatagram {
    key: Key,
    bytes: Vec<Option<u8>>,
    frags: Vec<(usize, usize)>,
    total: Option<usize>,
    started: Instant,
}

impl ModelDatagram {
    fn covered(&self, from: usize, to: usize) -> bool {
        (from..to).any(|i| self.bytes.get(i).is_some_and(Option::is_some))
    }
    fn received(&self) -> usize {
        self.bytes.iter().filter(|b| b.is_some()).count()
    }
}

/// The model reassembler: the rules of the module docs, on byte maps.
struct Model {
    slots: Vec<Option<ModelDatagram>>,
    max_frames: usize,
    timeout: Duration,
}

/// What the model predicts for one insert.
#[derive(Debug, PartialEq, Eq)]
enum Predicted {
    Held,
    Complete(Vec<u8>),
    Dropped(DropReason),
}

impl Model {
    fn frames(&self) -> usize {
        self.slots.iter().flatten().map(|d| d.frags.len()).sum()
    }
    fn find(&self, key: &Key) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|d| d.key == *key))
    }
    fn oldest(&self, except: Option<usize>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .filter_map(|(i, s)| s.as_ref().map(|d| (d.started, i)))
            .min()
            .map(|(_, i)| i)
    }

    fn insert(
        &mut self,
        key: Key,
        off: usize,
        data: &[u8],
        more: bool,
        now: Instant,
    ) -> (Predicted, usize) {
        let len = data.len();
        let mut evicted = 0;
        if (more && (!len.is_multiple_of(8) || len == 0)) || off + len > 65535 - 20 {
            return (Predicted::Dropped(DropReason::FragMalformed), 0);
        }
        let slot = match self.find(&key) {
            Some(s) => s,
            None => {
                let s = match self.slots.iter().position(Option::is_none) {
                    Some(s) => s,
                    None => {
                        evicted += 1;
                        self.oldest(None).expect("full")
                    }
                };
                self.slots[s] = Some(ModelDatagram {
                    key,
                    bytes: Vec::new(),
                    frags: Vec::new(),
                    total: None,
                    started: now,
                });
                s
            }
        };
        while self.frames() >= self.max_frames {
            match self.oldest(Some(slot)) {
                Some(s) => {
                    self.slots[s] = None;
                    evicted += 1;
                }
                None => return (Predicted::Dropped(DropReason::FragNoMemory), evicted),
            }
        }
        let d = self.slots[slot].as_mut().expect("occupied");
        let end = off + len;
        let beyond = |d: &ModelDatagram, end: usize| d.covered(end, d.bytes.len());
        if !more {
            if d.total.is_some_and(|t| t != end) || beyond(d, end) {
                self.slots[slot] = None;
                return (Predicted::Dropped(DropReason::FragOverlap), evicted);
            }
            d.total = Some(end);
        } else if d.total.is_some_and(|t| end > t) {
            self.slots[slot] = None;
            return (Predicted::Dropped(DropReason::FragOverlap), evicted);
        }
        if d.frags.contains(&(off, len)) {
            return (Predicted::Dropped(DropReason::FragDuplicate), evicted);
        }
        if d.covered(off, end) || d.frags.len() == cnet_stack::ipv4::reassembly::MAX_FRAGS {
            let r = if d.frags.len() == cnet_stack::ipv4::reassembly::MAX_FRAGS {
                DropReason::FragNoMemory
            } else {
                DropReason::FragOverlap
            };
            self.slots[slot] = None;
            return (Predicted::Dropped(r), evicted);
        }
        if d.bytes.len() < end {
            d.bytes.resize(end, None);
        }
        for (i, b) in data.iter().enumerate() {
            d.bytes[off + i] = Some(*b);
        }
        d.frags.push((off, len));
        match d.total {
            Some(t) if d.received() == t => {
                let whole = d.bytes[..t].iter().map(|b| b.expect("covered")).collect();
                self.slots[slot] = None;
                (Predicted::Complete(whole), evicted)
            }
            _ => (Predicted::Held, evicted),
        }
    }

    fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for s in &mut self.slots {
            if s.as_ref().is_some_and(|d| d.started + self.timeout <= now) {
                *s = None;
                n += 1;
            }
        }
        n
    }
}

/// Reassembly model test: bounds from the first two bytes (1..=4 datagrams, 1..=32 frames), then
/// operations: insert a fragment (key among 4, offset, length, MF), advance time, expire. Every
/// outcome, eviction count, completed payload, deadline and frame count must match the model.
/// Time moves forward by at least 1 µs per operation, so "oldest" is never a tie.
pub fn reassembly(data: &[u8]) {
    let mut inp = Input::new(data);
    let max_datagrams = usize::from(inp.u8() % 4) + 1;
    let max_frames = usize::from(inp.u8() % 32) + 1;
    let timeout = Duration::from_millis(1000);
    let mut pool = Pool::new(max_frames + 2, FRAME_SIZE, 0).expect("geometry");
    let mut r = Reassembler::new(max_datagrams, max_frames, timeout, 1);
    let mut m = Model {
        slots: (0..max_datagrams).map(|_| None).collect(),
        max_frames,
        timeout,
    };
    let mut now = Instant::from_micros(1);
    let mut scratch = vec![0u8; FRAME_SIZE];
    while !inp.is_empty() {
        now = now + Duration::from_micros(1);
        let op = inp.u8();
        match op % 8 {
            0..=5 => {
                let key = Key {
                    src: Ipv4Addr::new(198, 18, 0, 1),
                    dst: Ipv4Addr::new(198, 18, 0, 2),
                    proto: 17,
                    ident: u16::from(op >> 6),
                };
                let off_field = inp.u16();
                let len = usize::from(inp.u16()) % (FRAME_SIZE + 1);
                let more = off_field & 0x8000 != 0;
                // Mostly small offsets so fragments meet; sometimes anywhere in 64 KiB.
                let off = if off_field & 0x4000 != 0 {
                    usize::from(off_field & 0x1fff) * 8
                } else {
                    usize::from(off_field & 0x3f) * 8
                };
                let payload: Vec<u8> = (0..len).map(|i| pattern(key.ident, off + i)).collect();
                let Some(f) = pool.alloc_from(&payload) else {
                    // The only frames outside the reassembler are none: the pool has room.
                    panic!("pool exhausted: reassembler holds {}", r.frames_held());
                };
                let (want, want_evicted) = m.insert(key, off, &payload, more, now);
                let (got, evicted) = r.insert(&mut pool, key, off, more, f, now);
                let got = match got {
                    Outcome::Held => Predicted::Held,
                    Outcome::Dropped(d) => Predicted::Dropped(d),
                    Outcome::Complete(head, len) => {
                        assert_eq!(pool.chain_len(&head), len);
                        let mut out = vec![0u8; len];
                        pool.chain_copy_to(&head, &mut out);
                        pool.free(head);
                        Predicted::Complete(out)
                    }
                };
                assert_eq!(got, want, "insert {key:?} off {off} len {len} more {more}");
                assert_eq!(evicted, want_evicted, "evictions");
            }
            6 => {
                now = now + Duration::from_millis(u64::from(inp.u8()) * 8);
            }
            _ => {
                let want = m.expire(now);
                assert_eq!(r.expire(&mut pool, now), want, "expired datagrams");
            }
        }
        assert_eq!(r.frames_held(), m.frames(), "frames held");
        assert!(r.frames_held() <= max_frames);
        assert_eq!(r.in_progress(), m.slots.iter().flatten().count());
        let deadline = m.slots.iter().flatten().map(|d| d.started + timeout).min();
        assert_eq!(r.next_deadline(), deadline);
        assert_eq!(pool.available() + r.frames_held(), pool.capacity());
        scratch.clear();
    }
    r.clear(&mut pool);
    assert_eq!(pool.available(), pool.capacity());
    assert_eq!(pool.stats().double_frees, 0);
}

/// Fragment sequences through the stack. The first byte picks the protocol (ICMP echo or an
/// unknown one) and checksum verification is off, so any fragment set that completes is
/// processed; each following record is a fragment of one of four datagrams (identification,
/// offset, MF, length, options), with payload bytes fixed by (identification, offset) so that
/// overlapping fragments agree. Every echo reply must carry, after its 8-byte header, exactly the
/// pattern of the request; every protocol-unreachable must quote a header of the datagram.
pub fn ipv4_frags(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let proto = if flags & 1 == 0 { ICMP } else { 253 };
    let mut s = new_stack(512, false, true);
    let mut now = Instant::from_millis(1);
    let mut burst: Vec<Vec<u8>> = Vec::new();
    while !inp.is_empty() {
        let a = inp.u8();
        if a == 0xff {
            now = now + Duration::from_millis(u64::from(inp.u16()));
            continue;
        }
        let ident = u16::from(a & 3);
        let off_field = inp.u16();
        let more = off_field & 0x8000 != 0;
        let off = if off_field & 0x4000 != 0 {
            usize::from(off_field & 0x1fff) * 8
        } else {
            usize::from(off_field & 0x7f) * 8
        };
        let len = usize::from(inp.u16()) % 1481;
        let opts = usize::from(a >> 2) % 11 * 4;
        let mut payload: Vec<u8> = (off..off + len).map(|o| pattern(ident, o)).collect();
        // The datagram's first bytes: an echo request header (type 8, code 0).
        for (i, b) in payload.iter_mut().enumerate() {
            match off + i {
                0 => *b = 8,
                1 => *b = 0,
                _ => {}
            }
        }
        let options = vec![1u8; opts];
        let ip = ipv4_packet(
            PEER_IP,
            OUR_IP,
            proto,
            ident,
            more,
            off.min(0xffff) as u16,
            &options,
            &payload,
        );
        burst.push(eth_frame(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, &ip));
        if burst.len() == 8 || inp.is_empty() || a & 0x80 != 0 {
            let refs: Vec<&[u8]> = burst.iter().map(Vec::as_slice).collect();
            feed(&mut s, &refs, now);
            burst.clear();
            check_replies(&drain_tx(&mut s, now));
            assert_accounted(&s, 0);
            assert!(
                s.frames_held() <= 512 / 4,
                "reassembly stays within a quarter of the pool"
            );
        }
    }
    now = now + Duration::from_secs(60);
    check_replies(&drain_tx(&mut s, now));
    assert_eq!(s.frames_held(), 0, "everything expired");
    assert_no_leak(&mut s);
}

/// Reassembles the stack's own output (by identification) and checks each datagram.
fn check_replies(sent: &[Vec<u8>]) {
    // (identification, byte map, total length once the last fragment is seen, protocol)
    type Emitted = (u16, Vec<Option<u8>>, Option<usize>, u8);
    let mut datagrams: Vec<Emitted> = Vec::new();
    for p in emitted_ipv4(sent) {
        let info = assert_valid_ipv4(p);
        let body = &p[info.hdr_len..];
        let i = match datagrams.iter().position(|d| d.0 == info.ident) {
            Some(i) => i,
            None => {
                datagrams.push((info.ident, Vec::new(), None, info.proto));
                datagrams.len() - 1
            }
        };
        let d = &mut datagrams[i];
        let end = info.frag_offset + body.len();
        if d.1.len() < end {
            d.1.resize(end, None);
        }
        for (k, b) in body.iter().enumerate() {
            assert!(d.1[info.frag_offset + k].is_none(), "our fragments overlap");
            d.1[info.frag_offset + k] = Some(*b);
        }
        if !info.more_frags {
            d.2 = Some(end);
        }
    }
    for (ident, bytes, total, proto) in datagrams {
        let total =
            total.unwrap_or_else(|| panic!("datagram {ident} sent without its last fragment"));
        assert_eq!(bytes.len(), total);
        let b: Vec<u8> = bytes
            .iter()
            .map(|x| x.expect("our fragments leave no hole"))
            .collect();
        assert_eq!(proto, ICMP);
        match b[0] {
            0 => {
                // Echo reply: the request's identification is in bytes 4..6 of the pattern.
                let req_ident = (0..4u16)
                    .find(|&id| (8..b.len().min(64)).all(|o| b[o] == pattern(id, o)))
                    .expect("echo reply carries the pattern of some request");
                assert!((8..b.len()).all(|o| b[o] == pattern(req_ident, o)));
            }
            3 => {
                assert_eq!(b[1], 2, "protocol unreachable");
                let q = &b[8..];
                assert!(q.len() >= 20, "quotes a header");
                // The quote starts with the datagram's first header, whatever the header
                // lengths of the other fragments (docs/FUZZING.md, finding 1).
                assert_eq!(q[0] >> 4, 4, "quoted header is IPv4: {:02x?}", &q[..20]);
                assert_eq!(
                    q[9],
                    253,
                    "quoted header is the datagram's: {:02x?}",
                    &q[..20]
                );
                assert_eq!(&q[12..16], &PEER_IP.octets());
            }
            t => panic!("unexpected ICMP type {t} from the stack"),
        }
    }
}
