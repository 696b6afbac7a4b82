//! An in-memory link joining two ports, with seeded, reproducible impairments.
//!
//! [`MemLink::pair`] returns two [`MemPort`]s, usually handed to two stacks that each own a
//! [`Pool`]. A frame transmitted on one port is copied onto the "wire" (a byte buffer owned by the
//! link), its pool frame is freed at once, and it becomes receivable on the other port at its
//! delivery [`Instant`]; receive copies it into a frame allocated from the receiving pool, after the
//! pool's headroom. A simulation loop jumps virtual time to the earlier of the stacks' timeouts and
//! the ports' [`Port::poll_timeout`].
//!
//! Each direction has its own [`Impairments`] and its own PRNG, seeded from [`LinkConfig::seed`]
//! and the direction, so a run is reproducible: same config and same calls ⇒ same deliveries. Every
//! transmitted frame consumes the same number of random draws whatever the knobs, so turning one
//! impairment on does not change which frames another one hits.
//!
//! What happens to a transmitted frame, in order:
//! 1. longer than `mtu + 14` bytes: dropped, `mtu_dropped`;
//! 2. `queue_limit` frames already in flight in that direction: tail drop, `queue_dropped`;
//! 3. serialized at the optional bandwidth limit (the link is busy until the previous frame left);
//! 4. lost with probability `loss`: `lost` (a lost frame still used its serialization time);
//! 5. duplicated with probability `duplicate` (the copy is delivered right after the original and
//!    needs a queue slot of its own, else `queue_dropped`);
//! 6. corrupted with probability `corrupt`: one random bit of one random byte flipped;
//! 7. delivered at `sent + delay + U[0, jitter]`, never before the previous in-order frame (jitter
//!    alone does not reorder); with probability `reorder` it is held back by a further
//!    `reorder_delay`, so that frames sent after it may overtake it: `reordered`.
//!
//! On receive, a due frame is dropped when the receiving pool is empty (`rx_pool_empty`) or its
//! frames are too small for it after the headroom (`rx_no_room`), as a NIC drops when its receive
//! ring is empty. Per direction, at every moment:
//! `sent + duplicated == delivered + lost + mtu_dropped + queue_dropped + rx_pool_empty + rx_no_room
//! + in_flight`.
//!
//! Costs and invariants:
//! - no heap allocation per frame in steady state: wire buffers (each `mtu + 14` bytes) come from
//!   a free list and are allocated lazily, at most `queue_limit` per direction; the delivery heap
//!   and the free list are reserved to `queue_limit` at construction and never grow;
//! - transmit is O(log q) per frame, receive O(log q) per frame, [`Port::poll_timeout`] O(1);
//! - a port never holds pool frames ([`Port::frames_held`] is 0): the wire holds copies;
//! - single-threaded: the two ports share the link through `Rc<RefCell<_>>` and are not `Send`.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::binary_heap::PeekMut;
use std::collections::{BinaryHeap, VecDeque};
use std::rc::Rc;

use cnet_stack::{Batch, Duration, Frame, Instant, MacAddr, Pool};

use crate::{Port, PortError, PortInfo};

/// Ethernet II header length: the link carries frames of at most `mtu + ETH_HEADER` bytes.
const ETH_HEADER: usize = 14;

/// Smallest IP MTU a link accepts (RFC 791: every host must handle 68-byte datagrams).
pub const MIN_MTU: usize = 68;
/// Largest IP MTU a link accepts.
pub const MAX_MTU: usize = 65535;

/// Impairments of one direction of a [`MemLink`]. [`Impairments::default`] is a perfect link:
/// no loss, no delay, unlimited bandwidth, 1024 frames in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairments {
    /// Probability in `0.0..=1.0` that a frame is lost.
    pub loss: f64,
    /// Probability in `0.0..=1.0` that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability in `0.0..=1.0` that one random bit of one random byte is flipped.
    pub corrupt: f64,
    /// Probability in `0.0..=1.0` that a frame is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of a frame picked for reordering; must be non-zero when `reorder > 0`.
    pub reorder_delay: Duration,
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Uniform random extra delay in `0..=jitter` (microsecond resolution); does not reorder.
    pub jitter: Duration,
    /// Serialization rate in bytes per second, `None` for unlimited.
    pub bandwidth: Option<u64>,
    /// Most frames in flight in this direction (queued, serializing or propagating); more are
    /// tail-dropped. Also the most wire buffers the direction ever allocates.
    pub queue_limit: usize,
}

impl Default for Impairments {
    fn default() -> Self {
        Impairments {
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth: None,
            queue_limit: 1024,
        }
    }
}

impl Impairments {
    /// Checks every knob; `what` names the direction in the error.
    pub(crate) fn validate(&self, direction: &'static str) -> Result<(), LinkConfigError> {
        for (knob, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("reorder", self.reorder),
        ] {
            // `contains` is false for NaN.
            if !(0.0..=1.0).contains(&p) {
                return Err(LinkConfigError::BadProbability {
                    direction,
                    knob,
                    value: p,
                });
            }
        }
        if self.reorder > 0.0 && self.reorder_delay.is_zero() {
            return Err(LinkConfigError::ReorderWithoutDelay { direction });
        }
        if self.bandwidth == Some(0) {
            return Err(LinkConfigError::ZeroBandwidth { direction });
        }
        if self.queue_limit == 0 {
            return Err(LinkConfigError::ZeroQueueLimit { direction });
        }
        Ok(())
    }
}

/// One end of a [`MemLink`]: what its [`PortInfo`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// Interface name.
    pub name: String,
    /// MAC address the port reports.
    pub mac: MacAddr,
}

/// Configuration of a [`MemLink`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Seed of both directions' PRNGs.
    pub seed: u64,
    /// IP MTU of the link, in `MIN_MTU..=MAX_MTU`; both ports report it, and frames longer than
    /// `mtu + 14` bytes are dropped.
    pub mtu: usize,
    /// The first port returned by [`MemLink::pair`].
    pub a: EndpointConfig,
    /// The second port returned by [`MemLink::pair`].
    pub b: EndpointConfig,
    /// Impairments of frames transmitted by `a` and received by `b`.
    pub a_to_b: Impairments,
    /// Impairments of frames transmitted by `b` and received by `a`.
    pub b_to_a: Impairments,
}

impl LinkConfig {
    /// A perfect 1500-byte-MTU link between `mem0` (`mac_a`) and `mem1` (`mac_b`).
    pub fn new(seed: u64, mac_a: MacAddr, mac_b: MacAddr) -> Self {
        LinkConfig {
            seed,
            mtu: 1500,
            a: EndpointConfig {
                name: "mem0".into(),
                mac: mac_a,
            },
            b: EndpointConfig {
                name: "mem1".into(),
                mac: mac_b,
            },
            a_to_b: Impairments::default(),
            b_to_a: Impairments::default(),
        }
    }

    /// The same impairments in both directions.
    pub fn with_impairments(mut self, impairments: Impairments) -> Self {
        self.a_to_b = impairments.clone();
        self.b_to_a = impairments;
        self
    }

    fn validate(&self) -> Result<(), LinkConfigError> {
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(LinkConfigError::BadMtu(self.mtu));
        }
        self.a_to_b.validate("a_to_b")?;
        self.b_to_a.validate("b_to_a")
    }
}

/// Why a [`LinkConfig`] or [`Impairments`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkConfigError {
    /// A probability is outside `0.0..=1.0` or NaN.
    #[error("{direction}.{knob} = {value} is not a probability in 0..=1")]
    BadProbability {
        /// `a_to_b` or `b_to_a`.
        direction: &'static str,
        /// The knob.
        knob: &'static str,
        /// The value given.
        value: f64,
    },
    /// `reorder > 0` with a zero `reorder_delay` would count reorderings that cannot happen.
    #[error("{direction}.reorder is set but reorder_delay is zero")]
    ReorderWithoutDelay {
        /// `a_to_b` or `b_to_a`.
        direction: &'static str,
    },
    /// A bandwidth of zero bytes per second never delivers anything.
    #[error("{direction}.bandwidth is zero")]
    ZeroBandwidth {
        /// `a_to_b` or `b_to_a`.
        direction: &'static str,
    },
    /// A queue limit of zero drops every frame.
    #[error("{direction}.queue_limit is zero")]
    ZeroQueueLimit {
        /// `a_to_b` or `b_to_a`.
        direction: &'static str,
    },
    /// The MTU is outside `MIN_MTU..=MAX_MTU`.
    #[error("mtu {0} is outside 68..=65535")]
    BadMtu(usize),
}

/// Counters of one direction of a [`MemLink`]; see the module docs for the invariant they keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames handed to `tx_burst`.
    pub sent: u64,
    /// Frames handed to the receiver (duplicates included).
    pub delivered: u64,
    /// Frames lost on the wire.
    pub lost: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames held back by the reorder delay.
    pub reordered: u64,
    /// Frames longer than `mtu + 14` bytes.
    pub mtu_dropped: u64,
    /// Frames (or copies) tail-dropped because `queue_limit` frames were in flight.
    pub queue_dropped: u64,
    /// Due frames dropped because the receiving pool was empty.
    pub rx_pool_empty: u64,
    /// Due frames dropped because they did not fit a receiving pool frame after its headroom.
    pub rx_no_room: u64,
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for impairment dice.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Maps a random `u64` to `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our `n`).
fn below(r: u64, n: u64) -> u64 {
    ((u128::from(r) * u128::from(n)) >> 64) as u64
}

/// The dice rolled for one transmitted frame (always all of them: see the module docs).
struct Fate {
    lose: bool,
    duplicate: bool,
    corrupt: bool,
    corrupt_pos: u64,
    corrupt_bit: u8,
    reorder: bool,
    jitter: Duration,
}

impl Fate {
    fn roll(rng: &mut SplitMix64, imp: &Impairments) -> Fate {
        let lose = rng.unit() < imp.loss;
        let duplicate = rng.unit() < imp.duplicate;
        let corrupt = rng.unit() < imp.corrupt;
        let corrupt_pos = rng.next_u64();
        let corrupt_bit = (rng.next_u64() & 7) as u8;
        let reorder = rng.unit() < imp.reorder;
        let jitter_us = u64::try_from(imp.jitter.as_micros()).unwrap_or(u64::MAX);
        let jitter = Duration::from_micros(below(rng.next_u64(), jitter_us.saturating_add(1)));
        Fate {
            lose,
            duplicate,
            corrupt,
            corrupt_pos,
            corrupt_bit,
            reorder,
            jitter,
        }
    }
}

/// A frame on the wire.
struct InFlight {
    at: Instant,
    seq: u64,
    len: usize,
    buf: Box<[u8]>,
}

impl InFlight {
    fn key(&self) -> (Instant, u64) {
        (self.at, self.seq)
    }
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// One direction of the link (also the engine of [`crate::impair::ImpairPort`]).
pub(crate) struct Direction {
    imp: Impairments,
    /// Longest frame carried: `mtu + 14`; also the size of every wire buffer.
    max_frame: usize,
    rng: SplitMix64,
    /// Frames in flight, earliest (delivery time, sequence) first.
    wire: BinaryHeap<Reverse<InFlight>>,
    /// Frames in flight on a perfect link (no impairment: no dice, no heap), in send order, which
    /// is also delivery order. `receive` merges it with `wire` by (time, sequence).
    fifo: VecDeque<InFlight>,
    /// No impairment is set: frames take the FIFO fast path.
    perfect: bool,
    /// Wire buffers not in flight.
    spare: Vec<Box<[u8]>>,
    /// Sequence number of the next frame put on the wire (ties at equal times go in this order).
    seq: u64,
    /// The serializer is busy until then, in nanoseconds of the caller's clock.
    busy_until_ns: u64,
    /// Delivery time of the last in-order frame: later in-order frames are not delivered before.
    in_order_floor: Instant,
    pub(crate) stats: LinkStats,
}

impl Direction {
    pub(crate) fn new(imp: Impairments, mtu: usize, seed: u64) -> Direction {
        let mut d = Direction {
            imp: Impairments::default(),
            max_frame: mtu + ETH_HEADER,
            rng: SplitMix64(seed),
            wire: BinaryHeap::new(),
            fifo: VecDeque::new(),
            perfect: true,
            spare: Vec::new(),
            seq: 0,
            busy_until_ns: 0,
            in_order_floor: Instant::ZERO,
            stats: LinkStats::default(),
        };
        d.set_impairments(imp);
        d
    }

    /// Installs validated impairments, reserving room for the queue limit (allocates only when the
    /// limit grows past what was reserved).
    fn set_impairments(&mut self, imp: Impairments) {
        let limit = imp.queue_limit;
        self.perfect = Impairments {
            queue_limit: limit,
            ..Impairments::default()
        } == imp;
        self.wire.reserve(limit.saturating_sub(self.wire.len()));
        self.fifo.reserve(limit.saturating_sub(self.fifo.len()));
        self.spare.reserve(limit.saturating_sub(self.spare.len()));
        self.imp = imp;
    }

    /// A wire buffer. Only called with fewer than `queue_limit` frames in flight, so the number of
    /// buffers ever allocated stays within `queue_limit` (plus any limit that was lowered later).
    fn buffer(&mut self) -> Box<[u8]> {
        self.spare
            .pop()
            .unwrap_or_else(|| vec![0u8; self.max_frame].into_boxed_slice())
    }

    fn has_room(&self) -> bool {
        self.in_flight() < self.imp.queue_limit
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.wire.len() + self.fifo.len()
    }

    fn push(&mut self, at: Instant, len: usize, buf: Box<[u8]>) {
        let seq = self.seq;
        self.seq += 1;
        self.wire.push(Reverse(InFlight { at, seq, len, buf }));
    }

    /// Takes the frames of `batch` (all of them: drops are counted, not refused) onto the wire and
    /// frees them into `pool`.
    pub(crate) fn transmit(&mut self, pool: &mut Pool, batch: &mut Batch, now: Instant) -> usize {
        let n = batch.len();
        for frame in batch.drain() {
            self.transmit_one(pool, &frame, now);
            pool.free(frame);
        }
        n
    }

    fn transmit_one(&mut self, pool: &Pool, frame: &Frame, now: Instant) {
        self.stats.sent += 1;
        if self.perfect {
            return self.transmit_perfect(pool, frame, now);
        }
        let fate = Fate::roll(&mut self.rng, &self.imp);
        let len = pool.chain_len(frame);
        if len > self.max_frame {
            self.stats.mtu_dropped += 1;
            return;
        }
        if !self.has_room() {
            self.stats.queue_dropped += 1;
            return;
        }
        let sent = self.serialize(len, now);
        if fate.lose {
            self.stats.lost += 1;
            return;
        }
        let mut buf = self.buffer();
        let copied = pool.chain_copy_to(frame, &mut buf[..len]);
        debug_assert_eq!(copied, len);

        let mut at = (sent + self.imp.delay + fate.jitter).max(self.in_order_floor);
        if fate.reorder {
            at = at + self.imp.reorder_delay;
            self.stats.reordered += 1;
        } else {
            self.in_order_floor = at;
        }

        // The duplicate is a copy of the frame as sent, before any corruption.
        let dup = if fate.duplicate {
            self.stats.duplicated += 1;
            if self.in_flight() + 1 < self.imp.queue_limit {
                let mut copy = self.buffer();
                copy[..len].copy_from_slice(&buf[..len]);
                Some(copy)
            } else {
                self.stats.queue_dropped += 1;
                None
            }
        } else {
            None
        };

        if fate.corrupt && len > 0 {
            let pos = below(fate.corrupt_pos, len as u64) as usize;
            buf[pos] ^= 1 << fate.corrupt_bit;
            self.stats.corrupted += 1;
        }
        self.push(at, len, buf);
        if let Some(copy) = dup {
            self.push(at, len, copy);
        }
    }

    /// A perfect link: no dice, delivery at `now` in send order.
    fn transmit_perfect(&mut self, pool: &Pool, frame: &Frame, now: Instant) {
        let len = pool.chain_len(frame);
        if len > self.max_frame {
            self.stats.mtu_dropped += 1;
            return;
        }
        if !self.has_room() {
            self.stats.queue_dropped += 1;
            return;
        }
        let mut buf = self.buffer();
        let copied = pool.chain_copy_to(frame, &mut buf[..len]);
        debug_assert_eq!(copied, len);
        let at = now.max(self.in_order_floor);
        self.in_order_floor = at;
        let seq = self.seq;
        self.seq += 1;
        self.fifo.push_back(InFlight { at, seq, len, buf });
    }

    /// Runs the serializer for a `len`-byte frame handed over at `now`; returns when its last byte
    /// has left.
    fn serialize(&mut self, len: usize, now: Instant) -> Instant {
        let Some(rate) = self.imp.bandwidth else {
            return now;
        };
        let now_ns = now.total_micros().saturating_mul(1000);
        let start = self.busy_until_ns.max(now_ns);
        let ser_ns = (len as u128 * 1_000_000_000).div_ceil(u128::from(rate));
        self.busy_until_ns = start.saturating_add(u64::try_from(ser_ns).unwrap_or(u64::MAX));
        Instant::from_micros(self.busy_until_ns.div_ceil(1000))
    }

    /// Moves due frames into `batch` (frames allocated from `pool`); returns how many.
    pub(crate) fn receive(&mut self, pool: &mut Pool, batch: &mut Batch, now: Instant) -> usize {
        let mut n = 0;
        while !batch.is_full() {
            let from_fifo = match (self.fifo.front(), self.wire.peek()) {
                (Some(f), Some(w)) => f.key() <= w.0.key(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if from_fifo {
                match self.fifo.front() {
                    Some(f) if f.at <= now => self.fifo.pop_front(),
                    _ => None,
                }
            } else {
                match self.wire.peek_mut() {
                    Some(top) if top.0.at <= now => Some(PeekMut::pop(top).0),
                    _ => None,
                }
            };
            let Some(InFlight { len, buf, .. }) = next else {
                break;
            };
            self.deliver(pool, batch, &buf[..len], &mut n);
            self.spare.push(buf);
        }
        n
    }

    fn deliver(&mut self, pool: &mut Pool, batch: &mut Batch, bytes: &[u8], n: &mut usize) {
        let Some(frame) = pool.alloc() else {
            self.stats.rx_pool_empty += 1;
            return;
        };
        let Some(dst) = pool.push_back(&frame, bytes.len()) else {
            self.stats.rx_no_room += 1;
            pool.free(frame);
            return;
        };
        dst.copy_from_slice(bytes);
        match batch.push(frame) {
            Ok(()) => {
                self.stats.delivered += 1;
                *n += 1;
            }
            // Not reached: `receive` checks for room first. Keep the accounting right anyway.
            Err(frame) => {
                self.stats.rx_no_room += 1;
                pool.free(frame);
            }
        }
    }

    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        let w = self.wire.peek().map(|f| f.0.at);
        let f = self.fifo.front().map(|f| f.at);
        w.into_iter().chain(f).min()
    }
}

/// The state both ports of a link share: `dirs[0]` carries a→b, `dirs[1]` b→a.
struct Shared {
    dirs: [Direction; 2],
}

/// An in-memory link between two ports. See the module docs.
#[derive(Debug)]
pub struct MemLink {
    _private: (),
}

impl MemLink {
    /// Builds a link and returns its two ports, `a` first.
    pub fn pair(config: LinkConfig) -> Result<(MemPort, MemPort), LinkConfigError> {
        config.validate()?;
        let LinkConfig {
            seed,
            mtu,
            a,
            b,
            a_to_b,
            b_to_a,
        } = config;
        // Each direction gets its own stream, derived from the seed.
        let mut seeder = SplitMix64(seed);
        let shared = Rc::new(RefCell::new(Shared {
            dirs: [
                Direction::new(a_to_b, mtu, seeder.next_u64()),
                Direction::new(b_to_a, mtu, seeder.next_u64()),
            ],
        }));
        let port = |end: EndpointConfig, side| MemPort {
            link: Rc::clone(&shared),
            side,
            info: PortInfo {
                name: end.name,
                mac: end.mac,
                mtu,
            },
        };
        Ok((port(a, 0), port(b, 1)))
    }
}

/// One end of a [`MemLink`].
pub struct MemPort {
    link: Rc<RefCell<Shared>>,
    /// 0 for `a`, 1 for `b`: the index of the direction this port transmits on.
    side: usize,
    info: PortInfo,
}

impl core::fmt::Debug for MemPort {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemPort")
            .field("name", &self.info.name)
            .field("side", &self.side)
            .field("pending_rx", &self.pending_rx())
            .finish()
    }
}

impl MemPort {
    /// Counters of the direction this port transmits on.
    pub fn tx_stats(&self) -> LinkStats {
        self.link.borrow().dirs[self.side].stats
    }

    /// Counters of the direction this port receives from.
    pub fn rx_stats(&self) -> LinkStats {
        self.link.borrow().dirs[1 - self.side].stats
    }

    /// Frames in flight towards this port (not yet received or dropped).
    pub fn pending_rx(&self) -> usize {
        self.link.borrow().dirs[1 - self.side].in_flight()
    }

    /// Frames in flight from this port.
    pub fn pending_tx(&self) -> usize {
        self.link.borrow().dirs[self.side].in_flight()
    }

    /// Replaces the impairments of the direction this port transmits on, from the next frame on
    /// (frames in flight keep their delivery time). Allocates only if the queue limit grows.
    pub fn set_tx_impairments(&self, impairments: Impairments) -> Result<(), LinkConfigError> {
        let direction = if self.side == 0 { "a_to_b" } else { "b_to_a" };
        impairments.validate(direction)?;
        self.link.borrow_mut().dirs[self.side].set_impairments(impairments);
        Ok(())
    }
}

impl Port for MemPort {
    /// Appends frames due at `now`, in (delivery time, send order) order. Due frames that find the
    /// pool empty are dropped and counted.
    fn rx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError> {
        Ok(self.link.borrow_mut().dirs[1 - self.side].receive(pool, batch, now))
    }

    /// Takes every frame of `batch` (drops are counted, never refused) and frees it into `pool`.
    fn tx_burst(
        &mut self,
        pool: &mut Pool,
        batch: &mut Batch,
        now: Instant,
    ) -> Result<usize, PortError> {
        Ok(self.link.borrow_mut().dirs[self.side].transmit(pool, batch, now))
    }

    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    /// The earliest delivery time of a frame in flight towards this port.
    fn poll_timeout(&self) -> Option<Instant> {
        self.link.borrow().dirs[1 - self.side].next_delivery()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn link(seed: u64, imp: Impairments) -> (MemPort, MemPort) {
        MemLink::pair(LinkConfig::new(seed, MAC_A, MAC_B).with_impairments(imp))
            .expect("test config is valid")
    }

    fn pool(frames: usize) -> Pool {
        Pool::new(frames, Pool::DEFAULT_FRAME_SIZE, Pool::DEFAULT_HEADROOM).expect("valid pool")
    }

    /// A 64-byte frame carrying `seq` in its first 4 bytes.
    fn frame_bytes(seq: u32) -> [u8; 64] {
        let mut b = [0xa5u8; 64];
        b[..4].copy_from_slice(&seq.to_be_bytes());
        b
    }

    fn seq_of(bytes: &[u8]) -> u32 {
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// Sends one frame with these bytes.
    fn send(port: &mut MemPort, pool: &mut Pool, bytes: &[u8], now: Instant) {
        let mut batch = Batch::new();
        let f = pool.alloc_from(bytes).expect("sender pool has room");
        batch.push(f).expect("empty batch");
        assert_eq!(port.tx_burst(pool, &mut batch, now).unwrap(), 1);
        assert!(batch.is_empty());
    }

    /// Receives everything due at `now`, returning (bytes) per frame and freeing the frames.
    fn recv_now(port: &mut MemPort, pool: &mut Pool, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let mut batch = Batch::new();
            let n = port.rx_burst(pool, &mut batch, now).unwrap();
            assert_eq!(n, batch.len());
            for f in batch.drain() {
                out.push(pool.data(&f).to_vec());
                pool.free(f);
            }
            if n == 0 {
                return out;
            }
        }
    }

    /// Jumps virtual time through every pending delivery, returning (time, bytes) per frame.
    fn drain(port: &mut MemPort, pool: &mut Pool) -> Vec<(Instant, Vec<u8>)> {
        let mut out = Vec::new();
        let mut guard = 0;
        while let Some(t) = port.poll_timeout() {
            guard += 1;
            assert!(guard < 1_000_000, "drain does not terminate");
            for bytes in recv_now(port, pool, t) {
                out.push((t, bytes));
            }
        }
        out
    }

    /// Sends `n` numbered frames from a to b, one every `gap`, receiving as it goes; returns what b
    /// got, with times.
    fn run(
        seed: u64,
        imp: Impairments,
        n: u32,
        gap: Duration,
    ) -> (Vec<(Instant, Vec<u8>)>, LinkStats) {
        let (mut a, mut b) = link(seed, imp);
        let (mut pa, mut pb) = (pool(64), pool(256));
        let mut got = Vec::new();
        let mut now = Instant::ZERO;
        for seq in 0..n {
            send(&mut a, &mut pa, &frame_bytes(seq), now);
            for bytes in recv_now(&mut b, &mut pb, now) {
                got.push((now, bytes));
            }
            now = now + gap;
        }
        got.extend(drain(&mut b, &mut pb));
        assert_eq!(pa.available(), pa.capacity());
        assert_eq!(pb.available(), pb.capacity());
        assert_eq!(b.pending_rx(), 0);
        (got, a.tx_stats())
    }

    fn check_accounting(s: &LinkStats, in_flight: u64) {
        assert_eq!(
            s.sent + s.duplicated,
            s.delivered
                + s.lost
                + s.mtu_dropped
                + s.queue_dropped
                + s.rx_pool_empty
                + s.rx_no_room
                + in_flight,
            "{s:?}"
        );
    }

    fn everything() -> Impairments {
        Impairments {
            loss: 0.05,
            duplicate: 0.05,
            corrupt: 0.05,
            reorder: 0.1,
            reorder_delay: Duration::from_micros(700),
            delay: Duration::from_millis(2),
            jitter: Duration::from_micros(300),
            bandwidth: Some(12_500_000),
            queue_limit: 1024,
        }
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        let gap = Duration::from_micros(50);
        let (first, s1) = run(42, everything(), 2000, gap);
        let (second, s2) = run(42, everything(), 2000, gap);
        assert_eq!(first, second);
        assert_eq!(s1, s2);
        let (other, _) = run(43, everything(), 2000, gap);
        assert_ne!(first, other);
    }

    #[test]
    fn loss_rate_is_as_configured() {
        let imp = Impairments {
            loss: 0.2,
            ..Impairments::default()
        };
        let (got, s) = run(7, imp, 10_000, Duration::from_micros(10));
        // 10 000 Bernoulli(0.2) trials: sd = 40 frames; allow ~4 sd.
        assert!((1840..=2160).contains(&s.lost), "{s:?}");
        assert_eq!(got.len() as u64, 10_000 - s.lost);
        assert_eq!(s.delivered, got.len() as u64);
        check_accounting(&s, 0);
        // No loss: no other impairment shows up.
        assert_eq!((s.duplicated, s.corrupted, s.reordered), (0, 0, 0));
    }

    #[test]
    fn nothing_is_receivable_before_its_delay() {
        let delay = Duration::from_millis(10);
        let imp = Impairments {
            delay,
            jitter: Duration::from_millis(2),
            ..Impairments::default()
        };
        let (mut a, mut b) = link(1, imp);
        let (mut pa, mut pb) = (pool(8), pool(8));
        let t0 = Instant::from_millis(100);
        for seq in 0..4 {
            send(&mut a, &mut pa, &frame_bytes(seq), t0);
        }
        assert_eq!(a.poll_timeout(), None, "nothing travels towards a");
        let due = b.poll_timeout().expect("frames in flight");
        assert!(due >= t0 + delay && due <= t0 + delay + Duration::from_millis(2));
        assert!(recv_now(&mut b, &mut pb, due - Duration::from_micros(1)).is_empty());
        assert!(!recv_now(&mut b, &mut pb, due).is_empty());
        let rest = drain(&mut b, &mut pb);
        assert!(rest.iter().all(|(t, _)| *t >= t0 + delay));
        assert_eq!(b.rx_stats().delivered, 4);
        assert_eq!(pb.available(), pb.capacity());
    }

    #[test]
    fn jitter_alone_keeps_order() {
        let imp = Impairments {
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(5),
            ..Impairments::default()
        };
        let (got, s) = run(3, imp, 1000, Duration::from_micros(100));
        let seqs: Vec<u32> = got.iter().map(|(_, b)| seq_of(b)).collect();
        assert_eq!(seqs, (0..1000).collect::<Vec<_>>());
        assert_eq!(s.reordered, 0);
    }

    #[test]
    fn reordering_reorders() {
        let imp = Impairments {
            reorder: 0.2,
            reorder_delay: Duration::from_micros(350),
            delay: Duration::from_millis(1),
            ..Impairments::default()
        };
        let (got, s) = run(11, imp, 1000, Duration::from_micros(100));
        let seqs: Vec<u32> = got.iter().map(|(_, b)| seq_of(b)).collect();
        let inversions = seqs.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 100, "{inversions} inversions, {s:?}");
        assert!((150..=250).contains(&s.reordered), "{s:?}");
        // Everything still arrives exactly once.
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn duplication_duplicates() {
        let imp = Impairments {
            duplicate: 0.3,
            ..Impairments::default()
        };
        let (got, s) = run(5, imp, 1000, Duration::from_micros(10));
        assert!((240..=360).contains(&s.duplicated), "{s:?}");
        assert_eq!(got.len() as u64, 1000 + s.duplicated);
        let mut counts = vec![0u32; 1000];
        for (_, b) in &got {
            counts[seq_of(b) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c == 1 || c == 2));
        assert_eq!(
            counts.iter().filter(|&&c| c == 2).count() as u64,
            s.duplicated
        );
        check_accounting(&s, 0);
    }

    #[test]
    fn corruption_flips_exactly_one_bit() {
        let imp = Impairments {
            corrupt: 1.0,
            ..Impairments::default()
        };
        let (mut a, mut b) = link(9, imp);
        let (mut pa, mut pb) = (pool(8), pool(8));
        let mut positions = std::collections::HashSet::new();
        for seq in 0..200u32 {
            let sent = [seq as u8; 100];
            send(&mut a, &mut pa, &sent, Instant::ZERO);
            let got = recv_now(&mut b, &mut pb, Instant::ZERO);
            assert_eq!(got.len(), 1);
            let diff: Vec<usize> = (0..100).filter(|&i| got[0][i] != sent[i]).collect();
            assert_eq!(diff.len(), 1);
            assert_eq!((got[0][diff[0]] ^ sent[diff[0]]).count_ones(), 1);
            positions.insert(diff[0]);
        }
        assert!(positions.len() > 50, "flips spread over the frame");
        assert_eq!(a.tx_stats().corrupted, 200);
    }

    #[test]
    fn frames_longer_than_the_mtu_are_dropped() {
        let mut config = LinkConfig::new(0, MAC_A, MAC_B);
        config.mtu = 1000;
        let (mut a, mut b) = MemLink::pair(config).unwrap();
        assert_eq!(a.info().mtu, 1000);
        assert_eq!(b.info().mac, MAC_B);
        let (mut pa, mut pb) = (pool(8), pool(8));
        send(&mut a, &mut pa, &[1; 1014], Instant::ZERO);
        send(&mut a, &mut pa, &[2; 1015], Instant::ZERO);
        let got = recv_now(&mut b, &mut pb, Instant::ZERO);
        assert_eq!(got, vec![vec![1u8; 1014]]);
        let s = a.tx_stats();
        assert_eq!((s.sent, s.delivered, s.mtu_dropped), (2, 1, 1));
        assert_eq!(pa.available(), pa.capacity());
    }

    #[test]
    fn queue_limit_tail_drops() {
        let imp = Impairments {
            delay: Duration::from_millis(1),
            queue_limit: 4,
            ..Impairments::default()
        };
        let (mut a, mut b) = link(0, imp);
        let (mut pa, mut pb) = (pool(16), pool(16));
        for seq in 0..10 {
            send(&mut a, &mut pa, &frame_bytes(seq), Instant::ZERO);
        }
        assert_eq!(a.pending_tx(), 4);
        let got = drain(&mut b, &mut pb);
        let seqs: Vec<u32> = got.iter().map(|(_, b)| seq_of(b)).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert_eq!(a.tx_stats().queue_dropped, 6);
    }

    #[test]
    fn bandwidth_serializes_frames() {
        // 1 MB/s: a 1000-byte frame takes 1 ms on the wire.
        let imp = Impairments {
            bandwidth: Some(1_000_000),
            delay: Duration::from_millis(5),
            ..Impairments::default()
        };
        let (mut a, mut b) = link(0, imp);
        let (mut pa, mut pb) = (pool(16), pool(16));
        for _ in 0..10 {
            send(&mut a, &mut pa, &[0; 1000], Instant::ZERO);
        }
        let times: Vec<u64> = drain(&mut b, &mut pb)
            .iter()
            .map(|(t, _)| t.total_millis())
            .collect();
        assert_eq!(times, (6..=15).collect::<Vec<_>>());
        // An idle link does not bank its idle time.
        send(&mut a, &mut pa, &[0; 1000], Instant::from_millis(100));
        assert_eq!(b.poll_timeout(), Some(Instant::from_millis(106)));
        drain(&mut b, &mut pb);
    }

    #[test]
    fn empty_or_small_receive_pool_drops_and_counts() {
        let (mut a, mut b) = link(0, Impairments::default());
        let mut pa = pool(8);
        let mut pb = pool(2);
        for seq in 0..5 {
            send(&mut a, &mut pa, &frame_bytes(seq), Instant::ZERO);
        }
        let mut batch = Batch::new();
        assert_eq!(b.rx_burst(&mut pb, &mut batch, Instant::ZERO).unwrap(), 2);
        assert_eq!(b.rx_stats().rx_pool_empty, 3);
        batch.free_all(&mut pb);

        // A frame that does not fit after the headroom of a 256-byte frame.
        let mut tiny = Pool::new(2, 256, 192).unwrap();
        send(&mut a, &mut pa, &[0; 100], Instant::ZERO);
        assert_eq!(b.rx_burst(&mut tiny, &mut batch, Instant::ZERO).unwrap(), 0);
        assert_eq!(b.rx_stats().rx_no_room, 1);
        assert_eq!(tiny.available(), 2);
        check_accounting(&a.tx_stats(), 0);
    }

    #[test]
    fn a_burst_never_overfills_the_batch() {
        let (mut a, mut b) = link(0, Impairments::default());
        let (mut pa, mut pb) = (pool(256), pool(256));
        for seq in 0..100 {
            send(&mut a, &mut pa, &frame_bytes(seq), Instant::ZERO);
        }
        let mut batch = Batch::new();
        let f = pb.alloc().unwrap();
        batch.push(f).unwrap();
        assert_eq!(b.rx_burst(&mut pb, &mut batch, Instant::ZERO).unwrap(), 63);
        assert_eq!(b.pending_rx(), 37);
        batch.free_all(&mut pb);
        assert_eq!(recv_now(&mut b, &mut pb, Instant::ZERO).len(), 37);
    }

    #[test]
    fn every_frame_comes_back_both_ways() {
        let (mut a, mut b) = link(77, everything());
        let (mut pa, mut pb) = (pool(32), pool(32));
        let mut now = Instant::ZERO;
        // The receiver at b hoards what it receives for a while, so that its pool runs dry.
        let mut hoard = Batch::new();
        for i in 0..3000u32 {
            send(&mut a, &mut pa, &frame_bytes(i), now);
            if pb.available() > 0 {
                send(&mut b, &mut pb, &frame_bytes(i), now);
            }
            let mut batch = Batch::new();
            b.rx_burst(&mut pb, &mut batch, now).unwrap();
            for f in batch.drain() {
                if let Err(f) = hoard.push(f) {
                    pb.free(f);
                }
            }
            if i % 200 == 199 {
                hoard.free_all(&mut pb);
            }
            a.rx_burst(&mut pa, &mut batch, now).unwrap();
            batch.free_all(&mut pa);
            now = now + Duration::from_micros(30);
        }
        hoard.free_all(&mut pb);
        drain(&mut a, &mut pa);
        drain(&mut b, &mut pb);
        assert_eq!(pa.available(), pa.capacity());
        assert_eq!(pb.available(), pb.capacity());
        assert_eq!(pa.stats().double_frees + pb.stats().double_frees, 0);
        assert!(b.rx_stats().rx_pool_empty > 0, "the hoard starved b's pool");
        check_accounting(&a.tx_stats(), 0);
        check_accounting(&b.tx_stats(), 0);
        assert_eq!(a.frames_held() + b.frames_held(), 0);
        assert_eq!(a.pending_tx() + b.pending_tx(), 0);
    }
}
