//! TCP (RFC 9293 and companions): connections found by a keyed hash of the 4-tuple, listeners by
//! (address, port) with a wildcard fall-back, timers on one hierarchical wheel, zero-copy send
//! and receive queues of frames.
//!
//! | module | does |
//! |---|---|
//! | [`wire`] | segment header and options, parse (with a reason) and emit |
//! | `input` | RFC 9293 3.10.7 "segment arrives", step by step |
//! | `output` | segmentation, Nagle, windows, retransmission, ACKs |
//! | `timers` | RTO, persist, delayed ACK, keepalive, TIME-WAIT on the wheel |
//! | `rtt` | RFC 6298 estimator with Karn's rule and back-off |
//! | [`congestion`] | NewReno (RFC 5681/6582) and CUBIC (RFC 9438), per socket |
//! | `sack` | send queue and SACK scoreboard (RFC 2018, RFC 6675), D-SACK (RFC 2883) |
//! | `rack` | RACK loss detection (RFC 8985) and D-SACK undo of spurious recoveries (RFC 3708) |
//! | `tlp` | tail loss probes (RFC 8985 7) |
//! | `reassembly` | out-of-order queue bounded by the receive window |
//! | `memory` | stack-wide memory accounting and pressure (Linux `tcp_mem`), shared frames for small payloads; see `docs/HARDENING.md` |
//! | `syncookie`, `isn` | SYN cookies; RFC 6528 ISNs with a keyed PRF |
//!
//! Costs: a segment costs one hash probe (none after a segment of the same flow in its burst;
//! two more for a listener), work on its own connection, and O(1) timer-wheel updates; nothing
//! walks the connection table on a per-packet or per-poll path. Segments of one burst are processed first and each touched connection emits output
//! once at the end of the burst (one ACK can cover several segments).
//!
//! Frame ownership: a frame handed to `tcp_send` stays in the send queue until acknowledged. A
//! transmission either writes the headers into the frame's own headroom and hands the driver a
//! shared reference (first transmission, frame not shared with anyone), or copies the payload into
//! a fresh frame (retransmission while the driver may still hold the original, split segments).
//! Small payloads left unacknowledged past an RTO, or written under memory pressure, are copied
//! into a frame shared between send-queue entries (`memory`), so that they do not pin a frame
//! each.

pub mod congestion;
mod input;
mod isn;
mod memory;
mod output;
mod rack;
mod reassembly;
mod rtt;
mod sack;
mod syncookie;
mod timers;
mod tlp;
pub mod wire;

#[cfg(test)]
mod tests;

pub use congestion::Congestion;
pub use memory::TcpMemLimits;

use crate::buf::{Frame, Pool};
use crate::icmp::IcmpError;
use crate::stack::{BindError, Stack};
use crate::time::{Duration, Instant};
use crate::timer::{TimerId, TimerWheel};
use crate::wire::{checksum, ETH_HLEN, IPV4_HLEN};
use core::net::{Ipv4Addr, SocketAddrV4};
use reassembly::OooQueue;
use sack::{PayloadSum, SendQueue, SendSeg};
use slab::Slab;
use std::collections::VecDeque;

/// Headroom an application frame needs for zero-copy sending (Ethernet, IPv4, TCP with options).
pub const TCP_HEADROOM: usize = ETH_HLEN + IPV4_HLEN + wire::TCP_MAX_HLEN;

// --- sequence arithmetic (RFC 9293 3.4: comparisons modulo 2^32) ---

#[inline]
pub(crate) fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
pub(crate) fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}
#[inline]
pub(crate) fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}
#[inline]
pub(crate) fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}
#[inline]
pub(crate) fn seq_max(a: u32, b: u32) -> u32 {
    if seq_gt(a, b) {
        a
    } else {
        b
    }
}

/// Drops `n` bytes from the front of a frame or chain's data.
pub(crate) fn trim_front(pool: &mut Pool, head: &Frame, mut n: usize) {
    let mut cur = Frame::from_index(head.index());
    loop {
        let l = pool.len(&cur);
        let take = l.min(n);
        pool.pull_front(&cur, take);
        n -= take;
        if n == 0 {
            break;
        }
        match pool.chain_split(&cur) {
            Some(next) => {
                // Re-link: chain_split detached it; put it back (we only peeked).
                let idx = next.index();
                pool.chain_append(&cur, next);
                cur = Frame::from_index(idx);
            }
            None => break,
        }
    }
    // `cur` aliases a frame owned by the chain: forget it without freeing.
    let _ = cur.into_index();
}

/// Index of the last frame of a chain (the head's own for a single frame); O(chain length).
pub(crate) fn chain_last(pool: &mut Pool, head: &Frame) -> u32 {
    let mut cur = Frame::from_index(head.index());
    while let Some(next) = pool.chain_split(&cur) {
        // Peek only: the link is put back at once (`chain_append` from a chain's last frame).
        let idx = next.index();
        pool.chain_append(&cur, next);
        let _ = cur.into_index();
        cur = Frame::from_index(idx);
    }
    cur.into_index()
}

/// Keeps the first `keep` bytes of a frame or chain, freeing frames that end up empty.
pub(crate) fn trim_back(pool: &mut Pool, head: &Frame, keep: usize) {
    let mut cur = Frame::from_index(head.index());
    let mut left = keep;
    loop {
        let l = pool.len(&cur);
        if l >= left {
            pool.truncate(&cur, left);
            if let Some(rest) = pool.chain_split(&cur) {
                pool.free(rest);
            }
            break;
        }
        left -= l;
        match pool.chain_split(&cur) {
            Some(next) => {
                let idx = next.index();
                pool.chain_append(&cur, next);
                let _ = cur.into_index();
                cur = Frame::from_index(idx);
            }
            None => break,
        }
    }
    let _ = cur.into_index();
}

/// Connection states (RFC 9293 3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// No connection (after a reset, a time-out or the end of TIME-WAIT).
    Closed,
    /// Waiting for a connection request (listeners only).
    Listen,
    /// SYN sent, waiting for a matching SYN.
    SynSent,
    /// SYN received and answered, waiting for its acknowledgment.
    SynReceived,
    /// Open: data flows both ways.
    Established,
    /// We sent FIN, waiting for its acknowledgment or the peer's FIN.
    FinWait1,
    /// Our FIN was acknowledged, waiting for the peer's FIN.
    FinWait2,
    /// The peer sent FIN, waiting for the application to close.
    CloseWait,
    /// Both sent FIN simultaneously, waiting for the acknowledgment of ours.
    Closing,
    /// The peer closed first, our FIN is waiting for its acknowledgment.
    LastAck,
    /// Waiting 2 MSL so that old duplicates die out.
    TimeWait,
}

impl TcpState {
    /// States in which data may be received (RFC 9293 3.10.7.4 seventh step).
    fn can_receive(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2
        )
    }
    /// States in which the application may queue data.
    fn can_send(self) -> bool {
        matches!(
            self,
            TcpState::Established | TcpState::CloseWait | TcpState::SynSent | TcpState::SynReceived
        )
    }
}

/// Handle of a connection. Stays invalid once the connection is closed, even if its slot is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpHandle {
    idx: u32,
    gen: u32,
}

/// Handle of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpListener {
    idx: u32,
    gen: u32,
}

/// Per-socket options, given at connect or listen time (listeners pass them to accepted
/// connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOpts {
    /// Disable Nagle's algorithm (RFC 9293 3.7.4).
    pub nodelay: bool,
    /// Congestion control.
    pub congestion: Congestion,
    /// Keepalive idle time; `None` disables keepalive (RFC 1122 4.2.3.6: off by default).
    pub keepalive: Option<Duration>,
    /// Send buffer in bytes; `0` takes the stack default.
    pub snd_buf: u32,
    /// Receive buffer in bytes; `0` takes the stack default.
    pub rcv_buf: u32,
    /// Largest segment to send and to announce in the SYN (Linux `TCP_MAXSEG`, clamped to
    /// 88..); `0`: from the interface MTU.
    pub mss: u16,
}

impl Default for TcpOpts {
    fn default() -> Self {
        TcpOpts {
            nodelay: false,
            congestion: Congestion::Cubic,
            keepalive: None,
            snd_buf: 0,
            rcv_buf: 0,
            mss: 0,
        }
    }
}

/// Why a connect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The remote address is unspecified, broadcast or multicast, or the port is 0.
    #[error("invalid remote address")]
    InvalidAddress,
    /// No route to the remote address.
    #[error("no route to host")]
    NoRoute,
    /// The interface has no address to connect from.
    #[error("no source address")]
    NoAddress,
    /// The given local address is not ours, or the 4-tuple is in use.
    #[error("address not available or in use")]
    AddrInUse,
    /// Every ephemeral port towards this remote is in use.
    #[error("no ephemeral port left")]
    NoPortLeft,
    /// The connection table is full.
    #[error("too many connections")]
    TooManyConnections,
    /// The pool had no frame for the SYN.
    #[error("frame pool exhausted")]
    PoolEmpty,
}

/// Why a send was refused. `tcp_send` gives the frame back with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpSendError {
    /// The handle is stale or was never valid.
    #[error("invalid connection handle")]
    InvalidHandle,
    /// The connection cannot send (closed, reset, or already shut down for writing).
    #[error("connection not open for sending")]
    NotConnected,
    /// The send buffer is full: retry when `tcp_can_send` says so.
    #[error("send buffer full")]
    WouldBlock,
    /// A chained frame (send a single frame per call).
    #[error("chained frames are not accepted")]
    Chained,
    /// The pool had no frame to copy into.
    #[error("frame pool exhausted")]
    PoolEmpty,
}

/// Why a connection failed, reported once by `tcp_take_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// The peer answered our SYN with a reset.
    #[error("connection refused")]
    Refused,
    /// The peer reset the connection.
    #[error("connection reset by peer")]
    Reset,
    /// Retransmissions or keepalive probes went unanswered.
    #[error("connection timed out")]
    TimedOut,
    /// An ICMP error ended the connect (hard error in SYN-SENT), or was the last soft error
    /// before a time-out.
    #[error("unreachable (ICMP type {}, code {})", .0.icmp_type, .0.code)]
    Unreachable(IcmpError),
    /// The application aborted it.
    #[error("connection aborted")]
    Aborted,
}

/// A snapshot of a connection's internals (like Linux `TCP_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    /// State.
    pub state: TcpState,
    /// Local address.
    pub local: SocketAddrV4,
    /// Remote address.
    pub remote: SocketAddrV4,
    /// Smoothed RTT.
    pub srtt: Duration,
    /// RTT variation.
    pub rttvar: Duration,
    /// Current RTO.
    pub rto: Duration,
    /// Congestion window (bytes).
    pub cwnd: u32,
    /// Slow-start threshold (bytes; `u32::MAX` until the first loss).
    pub ssthresh: u32,
    /// Send MSS.
    pub mss: u16,
    /// Peer's window (bytes, scaled).
    pub snd_wnd: u32,
    /// Window we advertise (bytes).
    pub rcv_wnd: u32,
    /// Bytes sent but not acknowledged.
    pub unacked: u32,
    /// Bytes queued (sent or not) in the send buffer.
    pub send_queued: u32,
    /// Bytes received in order and not read.
    pub recv_queued: u32,
    /// Bytes held out of order.
    pub ooo_bytes: u32,
    /// Segments retransmitted over the connection's life.
    pub retransmits: u32,
    /// Fast-retransmit / SACK recoveries entered.
    pub recoveries: u32,
    /// RTO expirations.
    pub rto_expirations: u32,
    /// Recoveries found spurious by D-SACK and undone (RFC 3708).
    pub undos: u32,
    /// Timestamps negotiated.
    pub timestamps: bool,
    /// SACK negotiated.
    pub sack: bool,
    /// Send and receive window scale shifts (when negotiated).
    pub wscale: Option<(u8, u8)>,
    /// Congestion control in use.
    pub congestion: Congestion,
    /// Bytes acknowledged by the peer over the connection's life.
    pub bytes_acked: u64,
    /// Bytes received in order over the connection's life.
    pub bytes_received: u64,
}

// --- connection flags ---
pub(crate) const F_HANDLE: u32 = 1 << 0;
pub(crate) const F_IN_MAP: u32 = 1 << 1;
pub(crate) const F_SACK: u32 = 1 << 2;
pub(crate) const F_TS: u32 = 1 << 3;
pub(crate) const F_WS: u32 = 1 << 4;
pub(crate) const F_NODELAY: u32 = 1 << 5;
pub(crate) const F_FIN_QUEUED: u32 = 1 << 6;
pub(crate) const F_ACK_NOW: u32 = 1 << 7;
pub(crate) const F_RECOVERY: u32 = 1 << 8;
pub(crate) const F_TOUCHED: u32 = 1 << 9;
pub(crate) const F_PERSIST: u32 = 1 << 10;
pub(crate) const F_ACCEPT_Q: u32 = 1 << 11;
pub(crate) const F_PASSIVE: u32 = 1 << 12;
pub(crate) const F_RTO_ARMED: u32 = 1 << 13;
pub(crate) const F_FIN_RCVD: u32 = 1 << 14;
pub(crate) const F_KEEPALIVE: u32 = 1 << 15;
/// `t_rack` holds the tail loss probe timer (RFC 8985 7), not the RACK reordering timer.
pub(crate) const F_TLP: u32 = 1 << 16;
/// Queued in `TcpTable::app_conns` for the application runtime (see [`Stack::tcp_take_ready`]).
pub(crate) const F_APP_EV: u32 = 1 << 30;
/// Over its memory share under pressure: the advertised window does not grow.
pub(crate) const F_MEM_CLAMP: u32 = 1 << 17;
/// Closed by the application while the connection still had work (counted in `orphans`).
pub(crate) const F_ORPHAN: u32 = 1 << 18;
/// An ACK is owed for in-order data of a full receive burst and held in `TcpTable::ack_deferred`
/// until the receive pass ends (see `Stack::tcp_schedule_ack`).
pub(crate) const F_ACK_DEFER: u32 = 1 << 19;

const NONE: u32 = u32::MAX;

/// Pool flag of a receive-queue entry that is a chain of coalesced segments (software GRO, see
/// `input::tcp_rcv_in_order`), as opposed to one segment reassembled from IPv4 fragments (whose
/// head's flags hold a header length, below this bit). Cleared when the frame is handed out.
pub(crate) const RX_GRO: u32 = 1 << 31;

/// One connection. Compact on purpose: an idle established connection is this struct, its map
/// entry and one wheel node (buffers apart).
#[derive(Debug)]
pub(crate) struct Conn {
    pub gen: u32,
    pub flags: u32,
    pub state: TcpState,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    pub dupacks: u8,
    pub retries: u8,
    pub probes: u8,
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// Listener this connection came from while it is not yet accepted.
    pub listener: u32,
    // Send sequence space (RFC 9293 3.3.1).
    pub iss: u32,
    pub snd_una: u32,
    pub snd_nxt: u32,
    /// Highest sequence number sent + 1 (`snd_nxt` goes back after an RTO).
    pub snd_max: u32,
    /// Sequence number after the last queued byte (the FIN's sequence number once queued).
    pub snd_end: u32,
    pub snd_wnd: u32,
    pub max_snd_wnd: u32,
    pub snd_wl1: u32,
    pub snd_wl2: u32,
    pub snd_buf: u32,
    pub mss: u16,
    /// MSS we advertised.
    pub rcv_mss: u16,
    // Receive sequence space.
    pub irs: u32,
    pub rcv_nxt: u32,
    /// Right edge of the window we advertised.
    pub rcv_adv: u32,
    pub rcv_buf: u32,
    pub rcv_queued: u32,
    /// `rcv_nxt` when we last sent an ACK.
    pub last_ack_sent: u32,
    /// Segments to acknowledge at once before delayed ACKs start (quick-ack mode).
    pub quickack: u8,
    // Timestamps (RFC 7323).
    pub ts_recent: u32,
    pub ts_offset: u32,
    pub recovery_point: u32,
    pub rtt: rtt::Rtt,
    pub cc: congestion::Cc,
    // Timers (Instant::MAX = off) and the wheel entry at their minimum.
    pub t_rtx: Instant,
    pub t_delack: Instant,
    pub t_misc: Instant,
    /// RACK reordering timer (RFC 8985 6.2 step 5) or tail loss probe (RFC 8985 7).
    pub t_rack: Instant,
    pub keepalive_idle_s: u32,
    pub timer: Option<TimerId>,
    pub error: Option<TcpError>,
    pub soft_error: Option<IcmpError>,
    pub sndq: SendQueue,
    pub rxq: VecDeque<Frame>,
    /// Frames in `rxq` (chains count every frame).
    pub rx_frames: u32,
    /// Frames charged to the stack-wide TCP memory (`memory`).
    pub mem: u32,
    /// Out-of-order data held without progress is dropped at this time (`StackConfig::
    /// tcp_ooo_timeout_ms`), or `Instant::MAX`.
    pub t_ooo: Instant,
    /// When the oldest unacknowledged data went out with no ACK of new data since (RFC 5482
    /// user timeout), or `Instant::MAX` when nothing is outstanding.
    pub stalled_since: Instant,
    /// This connection's user timeout in ms (Linux `TCP_USER_TIMEOUT`); 0: the stack's.
    pub user_timeout_ms: u32,
    pub ooo: Box<OooQueue>,
    pub stats: Box<Stats>,
    pub rack: Box<rack::Rack>,
}

/// Counters of a connection, boxed to keep `Conn` small.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub retransmits: u32,
    pub recoveries: u32,
    pub rto_expirations: u32,
    pub bytes_acked: u64,
    pub bytes_received: u64,
}

impl Conn {
    #[inline]
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
    pub fn fin_acked(&self) -> bool {
        self.has(F_FIN_QUEUED) && seq_gt(self.snd_una, self.snd_end)
    }
    /// Free receive space in bytes.
    pub fn rcv_space(&self) -> u32 {
        self.rcv_buf
            .saturating_sub(self.rcv_queued)
            .saturating_sub(self.ooo.bytes())
    }
}

/// A listening socket.
#[derive(Debug)]
pub(crate) struct Listener {
    pub gen: u32,
    pub local: SocketAddrV4,
    pub backlog: u32,
    pub syn_backlog: u32,
    /// Connections in SYN-RECEIVED born here.
    pub syn_count: u32,
    /// Established, not yet accepted: (slab index, generation).
    pub accept: VecDeque<(u32, u32)>,
    pub opts: TcpOpts,
    /// Queued in `TcpTable::app_listeners`.
    pub notified: bool,
}

/// A listener as [`Stack::tcp_listeners`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Local address (`0.0.0.0` for every address).
    pub local: SocketAddrV4,
    /// Connections established and not yet accepted.
    pub accept_queue: u32,
    /// The most connections that can wait to be accepted.
    pub backlog: u32,
    /// Handshakes in progress (SYN-RECEIVED) born of this listener.
    pub syn_received: u32,
}

/// The 4-tuple key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tuple {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
}

/// Every TCP socket of a stack.
#[derive(Debug)]
pub(crate) struct TcpTable {
    pub conns: Slab<Conn>,
    pub by_tuple: crate::hash::Map<Tuple, u32>,
    pub listeners: Slab<Listener>,
    pub by_local: crate::hash::Map<SocketAddrV4, u32>,
    pub wheel: TimerWheel,
    pub next_gen: u32,
    pub key: isn::Key,
    /// Connections touched by the current burst or an application call, to flush.
    pub touched: Vec<u32>,
    /// The list a flush works through (kept to reuse its allocation): connections touched again
    /// while it runs land in `touched`, for the next flush.
    flushing: Vec<u32>,
    /// Connections whose timer expired and that wait for their turn (at most
    /// `timers::TIMER_BUDGET` are run per pass), oldest first; their wheel entries are gone.
    pub expired: VecDeque<u32>,
    /// Scratch: keys of the timers the wheel gives back in one pass.
    pub fired: Vec<u32>,
    /// When timers last ran: the deadline reported while `expired` is not empty.
    pub timers_at: Instant,
    /// Scratch for copying a payload between frames of the pool.
    pub scratch: Vec<u8>,
    /// Challenge ACK budget (RFC 5961 7): the second it was drawn for, and what is left.
    pub challenge_second: u64,
    pub challenge_left: u32,
    /// Connections with a handle whose application-visible state may have changed, each once
    /// (`F_APP_EV`), for [`Stack::tcp_take_ready`].
    pub app_conns: Vec<u32>,
    /// Listeners whose accept queue grew, each once (`Listener::notified`).
    pub app_listeners: Vec<u32>,
    /// Stack-wide memory accounting (Linux `tcp_mem`).
    pub mem: memory::TcpMem,
    /// Connections closed by the application with work left (Linux orphans).
    pub orphans: usize,
    /// The TCP sub-burst being processed is full ([`crate::BURST`] segments): the driver likely
    /// has more, so ACKs owed only by the every-second-segment rule wait for the end of the
    /// receive pass.
    pub rx_full: bool,
    /// Connections with `F_ACK_DEFER`, each at most once per pass (see `rx_full`).
    pub ack_deferred: Vec<u32>,
    /// Per-burst receive state (reset at the start and end of each TCP sub-burst).
    pub rx_burst: RxBurst,
    /// Software GRO on (the default; see [`Stack::tcp_set_rx_coalesce`]).
    pub rx_coalesce: bool,
    /// Tests: every segment takes the full receive path (the fast path's reference).
    #[cfg(test)]
    pub rx_fast_off: bool,
}

/// What the receive fast path remembers within one TCP sub-burst (`input`). `last` and `tail`
/// are set by the fast path only and forgotten before any segment takes the full path, which is
/// the only one that can change the 4-tuple map, free a connection or touch a receive queue
/// other than by appending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RxBurst {
    /// The last connection a segment went to, with its tuple (one hash probe per run of
    /// segments of one flow).
    pub last: Option<(Tuple, u32)>,
    /// (connection, frame index): the last frame of the chain at the back of that connection's
    /// receive queue, which the next large in-order segment is linked to (software GRO).
    pub tail: Option<(u32, u32)>,
    /// The memory thresholds in force, computed once per sub-burst (configuration and pool do
    /// not change within one).
    pub limits: TcpMemLimits,
}

impl RxBurst {
    pub fn new(limits: TcpMemLimits) -> RxBurst {
        RxBurst {
            last: None,
            tail: None,
            limits,
        }
    }

    /// Forgets the connection and the chain remembered (see the type's doc).
    pub fn forget(&mut self) {
        self.last = None;
        self.tail = None;
    }
}

impl TcpTable {
    pub fn new(seed_a: u64, seed_b: u64, seed_c: u64) -> Self {
        TcpTable {
            conns: Slab::new(),
            by_tuple: crate::hash::map(64, seed_a),
            listeners: Slab::new(),
            by_local: crate::hash::map(8, seed_a ^ 0x5555),
            wheel: TimerWheel::new(1000),
            next_gen: 1,
            key: isn::Key::new(seed_b, seed_c),
            touched: Vec::with_capacity(64),
            flushing: Vec::with_capacity(64),
            expired: VecDeque::with_capacity(64),
            fired: Vec::with_capacity(64),
            timers_at: Instant::ZERO,
            scratch: vec![0; 65536],
            challenge_second: u64::MAX,
            challenge_left: 0,
            app_conns: Vec::with_capacity(64),
            app_listeners: Vec::new(),
            mem: memory::TcpMem::default(),
            orphans: 0,
            rx_full: false,
            ack_deferred: Vec::new(),
            rx_burst: RxBurst::new(TcpMemLimits::for_pool(0)),
            rx_coalesce: true,
            #[cfg(test)]
            rx_fast_off: false,
        }
    }

    pub fn gen(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        g
    }

    pub fn get(&self, h: TcpHandle) -> Option<&Conn> {
        self.conns
            .get(h.idx as usize)
            .filter(|c| c.gen == h.gen && c.has(F_HANDLE))
    }

    pub fn get_mut(&mut self, h: TcpHandle) -> Option<&mut Conn> {
        self.conns
            .get_mut(h.idx as usize)
            .filter(|c| c.gen == h.gen && c.has(F_HANDLE))
    }

    pub fn lookup_listener(&self, local: SocketAddrV4) -> Option<u32> {
        self.by_local
            .get(&local)
            .or_else(|| {
                self.by_local
                    .get(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local.port()))
            })
            .copied()
    }

    pub fn frames_held(&self, pool: &Pool) -> usize {
        self.conns
            .iter()
            .map(|(_, c)| {
                c.sndq.frames_held(pool)
                    + c.rxq.iter().map(|f| pool.chain_count(f)).sum::<usize>()
                    + c.ooo.frames() as usize
            })
            .sum::<usize>()
            + self.mem.retired.len()
            + usize::from(self.mem.coalesce.is_some())
    }

    /// Frees every frame and forgets every connection and listener.
    pub fn clear(&mut self, pool: &mut Pool) {
        for mut c in self.conns.drain() {
            c.sndq.clear(pool);
            for f in c.rxq.drain(..) {
                pool.free(f);
            }
            c.ooo.clear(pool);
        }
        if let Some((f, _)) = self.mem.coalesce.take() {
            pool.free(f);
        }
        for f in self.mem.retired.drain(..) {
            pool.free(f);
        }
        self.mem.frames = 0;
        self.mem.holders = 0;
        self.mem.pressure = false;
        self.orphans = 0;
        self.rx_full = false;
        self.ack_deferred.clear();
        self.rx_burst.forget();
        self.by_tuple.clear();
        self.listeners.clear();
        self.by_local.clear();
        self.wheel = TimerWheel::new(1000);
    }

    /// Marks a connection to be flushed at the end of the burst or call.
    pub fn touch(&mut self, idx: u32) {
        if let Some(c) = self.conns.get_mut(idx as usize) {
            if !c.has(F_TOUCHED) {
                c.flags |= F_TOUCHED;
                self.touched.push(idx);
            }
            if !c.has(F_APP_EV) {
                c.flags |= F_APP_EV;
                self.app_conns.push(idx);
            }
        }
    }

    /// Notes that a connection's application-visible state may have changed (timers).
    pub fn note_app(&mut self, idx: u32) {
        if let Some(c) = self.conns.get_mut(idx as usize) {
            if !c.has(F_APP_EV) {
                c.flags |= F_APP_EV;
                self.app_conns.push(idx);
            }
        }
    }
}

/// Frame budget of a receive buffer: bounds frames held for tiny segments.
pub(crate) fn rcv_frame_budget(rcv_buf: u32) -> usize {
    (rcv_buf as usize / 256).max(16)
}

impl Stack {
    fn tcp_default_opts(&self, o: TcpOpts) -> TcpOpts {
        TcpOpts {
            snd_buf: if o.snd_buf == 0 {
                self.cfg.tcp_snd_buf
            } else {
                o.snd_buf
            },
            rcv_buf: if o.rcv_buf == 0 {
                self.cfg.tcp_rcv_buf
            } else {
                o.rcv_buf
            },
            ..o
        }
    }

    /// Opens a listening socket on `local` (address `0.0.0.0` listens on every address) with an
    /// accept queue of at most `backlog` established connections.
    pub fn tcp_listen(
        &mut self,
        local: SocketAddrV4,
        backlog: u32,
        opts: TcpOpts,
    ) -> Result<TcpListener, BindError> {
        if !local.ip().is_unspecified() && !self.is_local_addr(*local.ip()) {
            return Err(BindError::AddrNotAvailable);
        }
        if local.port() == 0 {
            return Err(BindError::AddrNotAvailable);
        }
        if self.tcp.by_local.contains_key(&local) {
            return Err(BindError::AddrInUse);
        }
        let gen = self.tcp.gen();
        let opts = self.tcp_default_opts(opts);
        let idx = self.tcp.listeners.insert(Listener {
            gen,
            local,
            backlog: backlog.max(1),
            syn_backlog: self.cfg.tcp_syn_backlog.max(1),
            syn_count: 0,
            accept: VecDeque::new(),
            opts,
            notified: false,
        }) as u32;
        self.tcp.by_local.insert(local, idx);
        Ok(TcpListener { idx, gen })
    }

    fn listener(&self, l: TcpListener) -> Option<&Listener> {
        self.tcp
            .listeners
            .get(l.idx as usize)
            .filter(|x| x.gen == l.gen)
    }

    /// Takes the next established connection from the listener's accept queue.
    pub fn tcp_accept(&mut self, l: TcpListener) -> Option<TcpHandle> {
        self.listener(l)?;
        loop {
            let (idx, gen) = self.tcp.listeners[l.idx as usize].accept.pop_front()?;
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if c.gen != gen || !c.has(F_ACCEPT_Q) {
                continue;
            }
            c.flags = (c.flags & !F_ACCEPT_Q) | F_HANDLE;
            c.listener = NONE;
            return Some(TcpHandle { idx, gen });
        }
    }

    /// Connections waiting in the listener's accept queue.
    pub fn tcp_accept_pending(&self, l: TcpListener) -> usize {
        self.listener(l).map_or(0, |x| x.accept.len())
    }

    /// Hands out, once each, the connections (with a handle) and listeners whose state as an
    /// application sees it may have changed since the last call: data or a FIN arrived, data was
    /// acknowledged, an error or a state change happened, or a connection is ready to accept.
    /// A runtime uses it to serve only the sockets that moved, so its cost per event does not
    /// grow with the number of sockets. Stale entries are filtered; spurious ones are possible.
    pub fn tcp_take_ready(&mut self, conns: &mut Vec<TcpHandle>, listeners: &mut Vec<TcpListener>) {
        for idx in self.tcp.app_conns.drain(..) {
            if let Some(c) = self.tcp.conns.get_mut(idx as usize) {
                c.flags &= !F_APP_EV;
                if c.has(F_HANDLE) {
                    conns.push(TcpHandle { idx, gen: c.gen });
                }
            }
        }
        for idx in self.tcp.app_listeners.drain(..) {
            if let Some(l) = self.tcp.listeners.get_mut(idx as usize) {
                l.notified = false;
                listeners.push(TcpListener { idx, gen: l.gen });
            }
        }
    }

    /// The connections [`Stack::tcp_take_ready`] would hand out now, appended to `out`
    /// without taking them: for an application inside the stack's loop that shares it with a
    /// runtime (which takes them after the application ran), so that it serves the connections
    /// that moved rather than walking all of them. Stale entries are filtered.
    pub fn tcp_ready_peek(&self, out: &mut Vec<TcpHandle>) {
        for &idx in &self.tcp.app_conns {
            if let Some(c) = self.tcp.conns.get(idx as usize) {
                if c.has(F_HANDLE) {
                    out.push(TcpHandle { idx, gen: c.gen });
                }
            }
        }
    }

    /// Closes a listener: connections not yet accepted are reset.
    pub fn tcp_unlisten(&mut self, l: TcpListener, now: Instant) {
        if self.listener(l).is_none() {
            return;
        }
        let lst = self.tcp.listeners.remove(l.idx as usize);
        self.tcp.by_local.remove(&lst.local);
        // Not-yet-accepted children: those queued, and those still in SYN-RECEIVED. The latter are
        // found by their `listener` field when they next act (timers, segments); they check that
        // the listener still exists with the same generation.
        for (idx, gen) in lst.accept {
            if self
                .tcp
                .conns
                .get(idx as usize)
                .is_some_and(|c| c.gen == gen)
            {
                self.tcp_reset_and_close(idx, now);
            }
        }
    }

    /// Sets the MSS clamp (`TcpOpts::mss`) the listener gives the connections it accepts from
    /// now on (Linux `TCP_MAXSEG` on a listening socket: its children inherit it).
    pub fn tcp_listener_set_mss(&mut self, l: TcpListener, mss: u16) -> bool {
        if self.listener(l).is_none() {
            return false;
        }
        self.tcp.listeners[l.idx as usize].opts.mss = mss;
        true
    }

    /// The listener's local address.
    pub fn tcp_listener_addr(&self, l: TcpListener) -> Option<SocketAddrV4> {
        self.listener(l).map(|x| x.local)
    }

    /// Every listener, as `ss -l` shows them: local address, connections established and not yet
    /// accepted (Linux's Recv-Q of a listener), the backlog (its Send-Q), and handshakes in
    /// progress (SYN-RECEIVED).
    pub fn tcp_listeners(&self) -> impl Iterator<Item = ListenerInfo> + '_ {
        self.tcp.listeners.iter().map(|(_, l)| ListenerInfo {
            local: l.local,
            accept_queue: l.accept.len() as u32,
            backlog: l.backlog,
            syn_received: l.syn_count,
        })
    }

    /// Opens a connection to `remote` (active open, RFC 9293 3.10.1). `local` picks the source
    /// address and/or port (port 0 or `None`: ephemeral, chosen so the 4-tuple is free).
    pub fn tcp_connect(
        &mut self,
        remote: SocketAddrV4,
        local: Option<SocketAddrV4>,
        opts: TcpOpts,
        now: Instant,
    ) -> Result<TcpHandle, ConnectError> {
        let rip = *remote.ip();
        if rip.is_unspecified()
            || rip.is_broadcast()
            || rip.is_multicast()
            || remote.port() == 0
            || self.is_broadcast(rip)
        {
            return Err(ConnectError::InvalidAddress);
        }
        let next_hop = self
            .routes
            .lookup(rip)
            .map(|h| h.addr)
            .ok_or(ConnectError::NoRoute)?;
        let src_ip = match local {
            Some(l) if !l.ip().is_unspecified() => {
                if !self.is_local_addr(*l.ip()) {
                    return Err(ConnectError::AddrInUse);
                }
                *l.ip()
            }
            _ => self.source_for(next_hop).ok_or(ConnectError::NoAddress)?,
        };
        if self.tcp.conns.len() >= self.cfg.tcp_max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        let port = local.map_or(0, |l| l.port());
        let local = if port != 0 {
            let l = SocketAddrV4::new(src_ip, port);
            if self.tcp.by_tuple.contains_key(&Tuple { local: l, remote }) {
                return Err(ConnectError::AddrInUse);
            }
            l
        } else {
            self.tcp_ephemeral(src_ip, remote)?
        };
        let opts = self.tcp_default_opts(opts);
        let idx = self.tcp_new_conn(local, remote, opts, now);
        let c = &mut self.tcp.conns[idx as usize];
        c.state = TcpState::SynSent;
        c.flags |= F_HANDLE;
        let gen = c.gen;
        self.counters.add(crate::counters::Event::TcpActiveOpens, 1);
        self.tcp_send_syn(idx, now);
        self.tcp_arm_rto(idx, now);
        self.tcp_timers_changed(idx);
        Ok(TcpHandle { idx, gen })
    }

    /// An ephemeral port for `remote`: a random start in the dynamic range, then the first
    /// port whose 4-tuple is free and that no listener uses (RFC 6056 algorithm 1-like).
    fn tcp_ephemeral(
        &mut self,
        ip: Ipv4Addr,
        remote: SocketAddrV4,
    ) -> Result<SocketAddrV4, ConnectError> {
        let first = crate::udp::EPHEMERAL_FIRST;
        let span = u32::from(u16::MAX - first) + 1;
        let start = (self.rng.next_u64() % u64::from(span)) as u32;
        for i in 0..span {
            let port = first + ((start + i) % span) as u16;
            let l = SocketAddrV4::new(ip, port);
            if !self.tcp.by_tuple.contains_key(&Tuple { local: l, remote })
                && self.tcp.lookup_listener(l).is_none()
            {
                return Ok(l);
            }
        }
        Err(ConnectError::NoPortLeft)
    }

    /// Allocates a connection (state CLOSED, in the 4-tuple map).
    pub(crate) fn tcp_new_conn(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        opts: TcpOpts,
        now: Instant,
    ) -> u32 {
        let gen = self.tcp.gen();
        let iss = isn::isn(&self.tcp.key, local, remote, now);
        let ts_offset = isn::ts_offset(&self.tcp.key, local, remote);
        let mss =
            (self.iface.mtu.saturating_sub(IPV4_HLEN + wire::TCP_HLEN)).clamp(88, 65495) as u16;
        let mss = if opts.mss != 0 {
            mss.min(opts.mss.max(88))
        } else {
            mss
        };
        let rcv_buf = opts.rcv_buf.max(4 * u32::from(mss));
        let mut flags = F_IN_MAP;
        if opts.nodelay {
            flags |= F_NODELAY;
        }
        let conn = Conn {
            gen,
            flags,
            state: TcpState::Closed,
            snd_wscale: 0,
            rcv_wscale: 0,
            dupacks: 0,
            retries: 0,
            probes: 0,
            local,
            remote,
            listener: NONE,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_end: iss.wrapping_add(1),
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: 0,
            snd_wl2: 0,
            snd_buf: opts.snd_buf.max(2 * u32::from(mss)),
            mss: mss.min(536),
            rcv_mss: mss,
            irs: 0,
            rcv_nxt: 0,
            rcv_adv: 0,
            rcv_buf,
            rcv_queued: 0,
            last_ack_sent: 0,
            quickack: 16,
            ts_recent: 0,
            ts_offset,
            recovery_point: iss,
            rtt: rtt::Rtt::new(
                Duration::from_millis(self.cfg.tcp_rto_initial_ms),
                Duration::from_millis(self.cfg.tcp_rto_min_ms),
                Duration::from_millis(self.cfg.tcp_rto_max_ms),
            ),
            cc: congestion::Cc::new(opts.congestion, u32::from(mss)),
            t_rtx: Instant::MAX,
            t_delack: Instant::MAX,
            t_misc: Instant::MAX,
            t_rack: Instant::MAX,
            keepalive_idle_s: opts
                .keepalive
                .map_or(0, |d| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32),
            timer: None,
            error: None,
            soft_error: None,
            sndq: SendQueue::default(),
            rxq: VecDeque::new(),
            rx_frames: 0,
            mem: 0,
            t_ooo: Instant::MAX,
            stalled_since: Instant::MAX,
            user_timeout_ms: 0,
            ooo: Box::default(),
            stats: Box::default(),
            rack: Box::default(),
        };
        let idx = self.tcp.conns.insert(conn) as u32;
        self.tcp.by_tuple.insert(Tuple { local, remote }, idx);
        if opts.keepalive.is_some() {
            self.tcp.conns[idx as usize].flags |= F_KEEPALIVE;
        }
        idx
    }

    /// The window scale we offer for a receive buffer (RFC 7323 2.3).
    pub(crate) fn tcp_wscale_for(rcv_buf: u32) -> u8 {
        let mut s = 0u8;
        while s < 14 && (rcv_buf >> s) > 65535 {
            s += 1;
        }
        s
    }

    /// Removes a connection from the 4-tuple map (its state is CLOSED now or soon).
    pub(crate) fn tcp_unmap(&mut self, idx: u32) {
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_IN_MAP) {
            c.flags &= !F_IN_MAP;
            let t = Tuple {
                local: c.local,
                remote: c.remote,
            };
            if self.tcp.by_tuple.get(&t) == Some(&idx) {
                self.tcp.by_tuple.remove(&t);
            }
        }
    }

    /// Enters CLOSED: unmapped, timers off, send queue freed; the slot goes when no handle holds it.
    pub(crate) fn tcp_set_closed(&mut self, idx: u32) {
        self.tcp_unmap(idx);
        let c = &mut self.tcp.conns[idx as usize];
        let was_syn_rcvd = c.state == TcpState::SynReceived;
        c.state = TcpState::Closed;
        c.t_rtx = Instant::MAX;
        c.t_delack = Instant::MAX;
        c.t_misc = Instant::MAX;
        c.t_rack = Instant::MAX;
        c.flags &= !(F_ACK_NOW | F_PERSIST | F_RTO_ARMED | F_TLP);
        c.t_ooo = Instant::MAX;
        c.sndq.clear(&mut self.pool);
        c.ooo.clear(&mut self.pool);
        if let Some(id) = c.timer.take() {
            self.tcp.wheel.cancel(id);
        }
        let listener = c.listener;
        self.tcp_mem_sync(idx);
        if was_syn_rcvd && listener != NONE {
            if let Some(l) = self.tcp.listeners.get_mut(listener as usize) {
                l.syn_count = l.syn_count.saturating_sub(1);
            }
        }
        let c = &self.tcp.conns[idx as usize];
        if !c.has(F_HANDLE) && !c.has(F_TOUCHED) {
            self.tcp_free(idx);
        }
    }

    /// Frees a connection's slot (CLOSED, no handle).
    pub(crate) fn tcp_free(&mut self, idx: u32) {
        self.tcp_unmap(idx);
        self.tcp_mem_release(idx);
        if self.tcp.conns[idx as usize].has(F_ORPHAN) {
            self.tcp.orphans -= 1;
        }
        let mut c = self.tcp.conns.remove(idx as usize);
        if let Some(id) = c.timer.take() {
            self.tcp.wheel.cancel(id);
        }
        c.sndq.clear(&mut self.pool);
        for f in c.rxq.drain(..) {
            self.pool.free(f);
        }
        c.ooo.clear(&mut self.pool);
    }

    /// Sends a RST for a synchronized connection and closes it (abort, RFC 9293 3.10.5).
    pub(crate) fn tcp_reset_and_close(&mut self, idx: u32, now: Instant) {
        let c = &self.tcp.conns[idx as usize];
        if !matches!(
            c.state,
            TcpState::Closed | TcpState::SynSent | TcpState::TimeWait
        ) {
            let (seq, ack) = (c.snd_nxt, c.rcv_nxt);
            self.tcp_send_rst_for(idx, seq, ack, now);
        }
        self.tcp_set_closed(idx);
    }

    fn conn_of(&self, h: TcpHandle) -> Option<u32> {
        self.tcp.get(h).map(|_| h.idx)
    }

    /// Queues `frame`'s window as data (zero copy: the frame is kept until acknowledged and its
    /// headroom used for the headers, see [`TCP_HEADROOM`]). All or nothing: if the send buffer
    /// cannot take the whole frame, it comes back with [`TcpSendError::WouldBlock`].
    pub fn tcp_send(
        &mut self,
        h: TcpHandle,
        frame: Frame,
        now: Instant,
    ) -> Result<(), (TcpSendError, Frame)> {
        let Some(idx) = self.conn_of(h) else {
            return Err((TcpSendError::InvalidHandle, frame));
        };
        let c = &self.tcp.conns[idx as usize];
        if !c.state.can_send() || c.has(F_FIN_QUEUED) {
            return Err((TcpSendError::NotConnected, frame));
        }
        if self.pool.chain_count(&frame) != 1 {
            return Err((TcpSendError::Chained, frame));
        }
        let len = self.pool.len(&frame) as u32;
        if len == 0 {
            self.pool.free(frame);
            return Ok(());
        }
        if c.sndq.bytes() + len > c.snd_buf {
            return Err((TcpSendError::WouldBlock, frame));
        }
        if len as usize > memory::COALESCE_MAX
            && self.tcp_mem_admit(idx, 1) == memory::Admit::OverShare
        {
            // Linux sk_stream_memory_free: over its share under pressure, the writer waits.
            return Err((TcpSendError::WouldBlock, frame));
        }
        let mss = u32::from(c.mss);
        // Frames beyond one MSS: the first MSS stays in place, the rest is copied (slow path).
        let extra = len.saturating_sub(mss).div_ceil(mss.max(1)) as usize;
        if self.pool.available() < extra {
            return Err((TcpSendError::PoolEmpty, frame));
        }
        self.tcp_queue_frame(idx, frame, None);
        self.tcp_mark_push(idx);
        self.tcp_output(idx, now);
        self.tcp_mem_sync(idx);
        Ok(())
    }

    /// Marks the end of an application write: the segment holding its last byte carries PSH
    /// (RFC 9293 3.9.1; Linux `tcp_push` marks the tail skb of each `sendmsg`).
    fn tcp_mark_push(&mut self, idx: u32) {
        if let Some(t) = self.tcp.conns[idx as usize].sndq.segs.back_mut() {
            t.flags |= sack::PUSH;
        }
    }

    /// Appends a frame to the send queue: merges small frames into an unsent tail, splits frames
    /// above the MSS. `sum`: the one's-complement sum of the frame's bytes when the caller has it
    /// (it copied them in with `checksum::copy_sum`), kept with the entry for the output path.
    fn tcp_queue_frame(&mut self, idx: u32, frame: Frame, sum: Option<u64>) {
        let c = &mut self.tcp.conns[idx as usize];
        let mss = usize::from(c.mss);
        let len = self.pool.len(&frame);
        // Merge into the unsent tail when it has room (copy of a small payload).
        if let Some(t) = c.sndq.segs.back_mut() {
            let t_end = t.off as usize + t.len as usize;
            if seq_ge(t.seq, c.snd_max)
                && t.flags & !sack::PUSH == 0
                && self.pool.refs(&t.frame) == 1
                && t.len as usize + len <= mss
                && t_end + len <= self.pool.frame_size()
            {
                self.pool
                    .set_window(&t.frame, t.off as usize, t.len as usize);
                if self.pool.push_back(&t.frame, len).is_some() {
                    let ok = self
                        .pool
                        .copy_between(&frame, 0, &t.frame, t.len as usize, len);
                    debug_assert!(ok, "both ranges are inside their windows");
                    // Both sums known: the joined entry's is their sum, the appended one's
                    // byte-swapped when it starts at an odd offset (RFC 1071 2(B)).
                    t.psum = match (t.payload_sum(), sum) {
                        (Some(a), Some(b)) => {
                            let b = if t.len % 2 == 1 {
                                u64::from(checksum::fold(b).swap_bytes())
                            } else {
                                b
                            };
                            PayloadSum::new(a + b, t.off, t.len + len as u16)
                        }
                        _ => PayloadSum::NONE,
                    };
                    t.len += len as u16;
                    t.flags &= !sack::PUSH;
                    c.snd_end = c.snd_end.wrapping_add(len as u32);
                    self.pool.free(frame);
                    return;
                }
            }
        }
        // Under memory pressure a small write costs no frame of its own: it is copied into a
        // frame shared with other entries (`memory`).
        if self.tcp.mem.pressure && len <= memory::COALESCE_MAX && len <= mss {
            let off = self.pool.data_offset(&frame);
            if let Some((shared, at)) = self.tcp_coalesce_copy(&frame, off, len) {
                let c = &mut self.tcp.conns[idx as usize];
                c.sndq.segs.push_back(SendSeg {
                    frame: shared,
                    seq: c.snd_end,
                    off: at as u16,
                    len: len as u16,
                    sent: 0,
                    flags: sack::COALESCED,
                    psum: PayloadSum::NONE,
                });
                c.sndq.coalesced += 1;
                c.snd_end = c.snd_end.wrapping_add(len as u32);
                self.pool.free(frame);
                return;
            }
        }
        let c = &mut self.tcp.conns[idx as usize];
        let off = self.pool.data_offset(&frame);
        let first = len.min(mss);
        let mut seq = c.snd_end;
        let psum = match sum {
            Some(sum) if first == len => PayloadSum::new(sum, off as u16, first as u16),
            _ => PayloadSum::NONE,
        };
        c.sndq.segs.push_back(SendSeg {
            frame: self.pool.share(&frame),
            seq,
            off: off as u16,
            len: first as u16,
            sent: 0,
            flags: 0,
            psum,
        });
        seq = seq.wrapping_add(first as u32);
        let mut done = first;
        while done < len {
            let n = (len - done).min(mss);
            // Checked by the caller: enough frames are available.
            let Some(f) = self.pool.alloc() else { break };
            let hr = self.pool.headroom().max(TCP_HEADROOM);
            self.pool.set_window(&f, hr, n);
            let ok = self.pool.copy_between(&frame, done, &f, 0, n);
            debug_assert!(ok);
            c.sndq.segs.push_back(SendSeg {
                frame: f,
                seq,
                off: hr as u16,
                len: n as u16,
                sent: 0,
                flags: 0,
                psum: PayloadSum::NONE,
            });
            seq = seq.wrapping_add(n as u32);
            done += n;
        }
        c.snd_end = seq;
        self.pool.truncate(&frame, first);
        self.pool.free(frame);
    }

    /// Copies as much of `data` as the send buffer takes; returns the bytes taken (0 when full).
    pub fn tcp_send_slice(
        &mut self,
        h: TcpHandle,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, TcpSendError> {
        let idx = self.conn_of(h).ok_or(TcpSendError::InvalidHandle)?;
        let c = &self.tcp.conns[idx as usize];
        if !c.state.can_send() || c.has(F_FIN_QUEUED) {
            return Err(TcpSendError::NotConnected);
        }
        let mut room = c.snd_buf.saturating_sub(c.sndq.bytes()) as usize;
        let mss = usize::from(c.mss);
        if self.tcp_mem_admit(idx, 1) == memory::Admit::OverShare {
            // Over its share under pressure: only what a shared frame takes.
            room = room.min(memory::COALESCE_MAX);
        }
        let mut taken = 0;
        let want = data.len().min(room);
        let hr = self.pool.headroom().max(TCP_HEADROOM);
        let cap = mss.min(self.pool.frame_size() - hr);
        let reserve = self.pool.capacity() / 16;
        while taken < want {
            let n = (want - taken).min(cap);
            if self.pool.available() <= reserve {
                // The pool's reserve (ARP, ICMP, UDP, the driver) is not for TCP's buffers.
                break;
            }
            let Some(f) = self.pool.alloc() else { break };
            self.pool.set_window(&f, hr, n);
            // Copied and summed in one pass: the output path then checksums only the header.
            let sum = checksum::copy_sum(self.pool.data_mut(&f), &data[taken..taken + n]);
            self.tcp_queue_frame(idx, f, Some(sum));
            taken += n;
        }
        if taken == 0 && want > 0 {
            return Err(TcpSendError::PoolEmpty);
        }
        if taken > 0 {
            self.tcp_mark_push(idx);
        }
        self.tcp_output(idx, now);
        self.tcp_mem_sync(idx);
        Ok(taken)
    }

    /// Takes the next received in-order data: a frame whose window is payload only (a chain for
    /// a segment that came in IPv4 fragments). Segments coalesced on receive (software GRO, see
    /// [`Stack::tcp_recv_chain`]) are handed out one frame at a time, as they arrived.
    pub fn tcp_recv(&mut self, h: TcpHandle) -> Option<Frame> {
        self.tcp_recv_take(h, false)
    }

    /// Takes the next received in-order data whole: a frame or a chain whose windows are payload
    /// only. With software GRO ([`Stack::tcp_set_rx_coalesce`], on by default), in-order
    /// segments of one connection that arrived in one burst come as one chain, so a reader takes
    /// them in one call.
    pub fn tcp_recv_chain(&mut self, h: TcpHandle) -> Option<Frame> {
        self.tcp_recv_take(h, true)
    }

    /// Software GRO on (the default) or off: in-order segments of more than 256 bytes of one
    /// connection that arrive in one burst are linked into one receive-queue entry, which
    /// [`Stack::tcp_recv_chain`] hands out whole (`tcp_recv` still one segment per call,
    /// `tcp_recv_slice` reads the same bytes either way). Accounting, budgets and ACKs are the
    /// same either way; off, every segment keeps an entry of its own, as before GRO.
    pub fn tcp_set_rx_coalesce(&mut self, on: bool) {
        self.tcp.rx_coalesce = on;
    }

    fn tcp_recv_take(&mut self, h: TcpHandle, whole: bool) -> Option<Frame> {
        let idx = self.conn_of(h)?;
        let c = &mut self.tcp.conns[idx as usize];
        let front = c.rxq.front_mut()?;
        // A coalesced chain's frames are segments of their own; a segment reassembled from
        // fragments is never coalesced, so it stays whole.
        let rest = (!whole && self.pool.flags(front) & RX_GRO != 0)
            .then(|| self.pool.chain_split(front))
            .flatten();
        let f = match rest {
            Some(rest) => {
                self.pool.set_flags(&rest, RX_GRO);
                core::mem::replace(front, rest)
            }
            None => c.rxq.pop_front().expect("front exists"),
        };
        self.pool.set_flags(&f, 0);
        c.rcv_queued -= self.pool.chain_len(&f) as u32;
        c.rx_frames -= self.pool.chain_count(&f) as u32;
        self.tcp_mem_sync(idx);
        self.tcp_after_read(idx);
        Some(f)
    }

    /// Copies received data into `buf`; returns the bytes copied. Frames are freed as soon as
    /// they are read whole, one at a time, also from the middle of a coalesced chain.
    pub fn tcp_recv_slice(&mut self, h: TcpHandle, buf: &mut [u8]) -> usize {
        let Some(idx) = self.conn_of(h) else { return 0 };
        let c = &mut self.tcp.conns[idx as usize];
        let mut n = 0;
        let mut freed = 0u32;
        while n < buf.len() {
            let Some(f) = c.rxq.front_mut() else { break };
            let d = self.pool.data(f);
            let got = d.len().min(buf.len() - n);
            buf[n..n + got].copy_from_slice(&d[..got]);
            n += got;
            if got < d.len() {
                self.pool.pull_front(f, got);
                break;
            }
            // The first frame is read: unlink it and free it alone.
            let head = match self.pool.chain_split(f) {
                Some(rest) => {
                    let fl = self.pool.flags(f);
                    self.pool.set_flags(&rest, fl);
                    core::mem::replace(f, rest)
                }
                None => c.rxq.pop_front().expect("front exists"),
            };
            // (A freed frame's flags are reset when it is allocated again.)
            self.pool.free(head);
            freed += 1;
        }
        c.rcv_queued -= n as u32;
        c.rx_frames -= freed;
        if n > 0 {
            self.tcp_mem_sync(idx);
            self.tcp_after_read(idx);
        }
        n
    }

    /// After the application read: a window update when the window opened enough (RFC 9293
    /// 3.8.6.2.2: at least min(rcv_buf / 2, MSS) beyond the last advertised right edge).
    fn tcp_after_read(&mut self, idx: u32) {
        let c = &self.tcp.conns[idx as usize];
        if !c.state.can_receive() {
            return;
        }
        let adv_room = c.rcv_adv.wrapping_sub(c.rcv_nxt);
        let space = c.rcv_space();
        let thresh = (c.rcv_buf / 2).min(u32::from(c.rcv_mss));
        if space >= adv_room + thresh || (adv_room < u32::from(c.rcv_mss) && space >= thresh) {
            self.tcp.conns[idx as usize].flags |= F_ACK_NOW;
            self.tcp.touch(idx);
        }
    }

    /// Bytes received and not yet read.
    pub fn tcp_recv_pending(&self, h: TcpHandle) -> usize {
        self.tcp.get(h).map_or(0, |c| c.rcv_queued as usize)
    }

    /// True once the peer has sent FIN and every byte before it was read (end of stream).
    pub fn tcp_recv_finished(&self, h: TcpHandle) -> bool {
        self.tcp
            .get(h)
            .is_some_and(|c| c.has(F_FIN_RCVD) && c.rxq.is_empty())
    }

    /// Bytes `tcp_send_slice` would take now (0 if the connection cannot send).
    pub fn tcp_can_send(&self, h: TcpHandle) -> usize {
        self.tcp.get(h).map_or(0, |c| {
            if c.state.can_send() && !c.has(F_FIN_QUEUED) {
                let room = c.snd_buf.saturating_sub(c.sndq.bytes()) as usize;
                if self.tcp_mem_admit(h.idx, 1) == memory::Admit::OverShare {
                    room.min(memory::COALESCE_MAX)
                } else {
                    room
                }
            } else {
                0
            }
        })
    }

    /// Bytes queued and not yet acknowledged.
    pub fn tcp_send_queued(&self, h: TcpHandle) -> usize {
        self.tcp.get(h).map_or(0, |c| c.sndq.bytes() as usize)
    }

    /// Shuts the sending direction: a FIN follows the queued data (RFC 9293 3.10.4).
    pub fn tcp_shutdown(&mut self, h: TcpHandle, now: Instant) {
        let Some(idx) = self.conn_of(h) else { return };
        self.tcp_queue_fin(idx, now);
    }

    fn tcp_queue_fin(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_FIN_QUEUED) {
            return;
        }
        match c.state {
            TcpState::SynSent => {
                self.tcp_set_closed(idx);
                return;
            }
            TcpState::SynReceived | TcpState::Established => c.state = TcpState::FinWait1,
            TcpState::CloseWait => c.state = TcpState::LastAck,
            _ => return,
        }
        c.flags |= F_FIN_QUEUED;
        self.tcp_output(idx, now);
    }

    /// Closes the connection: FIN after queued data, then the stack finishes the close on its
    /// own; the handle becomes invalid. Unread received data makes it an abort (RST), as RFC
    /// 2525 2.17 and Linux do.
    pub fn tcp_close(&mut self, h: TcpHandle, now: Instant) {
        let Some(idx) = self.conn_of(h) else { return };
        let c = &mut self.tcp.conns[idx as usize];
        c.flags &= !F_HANDLE;
        if !c.rxq.is_empty() {
            for f in c.rxq.drain(..) {
                self.pool.free(f);
            }
            c.rcv_queued = 0;
            c.rx_frames = 0;
            self.tcp_reset_and_close(idx, now);
            return;
        }
        match c.state {
            TcpState::Closed => self.tcp_free(idx),
            TcpState::SynSent => self.tcp_set_closed(idx),
            _ => {
                // An orphan (Linux): closed by the application, the stack finishes the close.
                // Too many of them, or one holding more than its share of memory under
                // pressure, is reset at once (Linux tcp_close: tcp_check_oom,
                // tcp_too_many_orphans).
                c.flags |= F_ORPHAN;
                self.tcp.orphans += 1;
                if self.tcp.orphans > self.cfg.tcp_max_orphans {
                    self.counters
                        .add(crate::counters::Event::TcpTooManyOrphans, 1);
                    self.tcp_reset_and_close(idx, now);
                    return;
                }
                if self.tcp.mem.pressure
                    && self.tcp.conns[idx as usize].mem as usize > self.tcp_mem_fair_share()
                {
                    self.counters
                        .add(crate::counters::Event::TcpAbortOnMemory, 1);
                    self.tcp_reset_and_close(idx, now);
                    return;
                }
                self.tcp_queue_fin(idx, now);
                // FIN-WAIT-2 of an orphan does not last for ever (Linux tcp_fin_timeout).
                if self.tcp.conns[idx as usize].state == TcpState::FinWait2 {
                    self.tcp_arm_fin_wait2(idx, now);
                }
                self.tcp_timers_changed(idx);
            }
        }
    }

    /// Aborts the connection: RST to the peer, everything freed, the handle becomes invalid.
    pub fn tcp_abort(&mut self, h: TcpHandle, now: Instant) {
        let Some(idx) = self.conn_of(h) else { return };
        let c = &mut self.tcp.conns[idx as usize];
        c.flags &= !F_HANDLE;
        for f in c.rxq.drain(..) {
            self.pool.free(f);
        }
        c.rcv_queued = 0;
        c.rx_frames = 0;
        self.tcp_mem_sync(idx);
        if self.tcp.conns[idx as usize].state == TcpState::Closed {
            self.tcp_free(idx);
        } else {
            self.tcp_reset_and_close(idx, now);
        }
    }

    /// The connection's state (`None` for a stale handle).
    pub fn tcp_state(&self, h: TcpHandle) -> Option<TcpState> {
        self.tcp.get(h).map(|c| c.state)
    }

    /// Disables (true) or enables Nagle's algorithm.
    pub fn tcp_set_nodelay(&mut self, h: TcpHandle, nodelay: bool, now: Instant) {
        if let Some(idx) = self.conn_of(h) {
            let c = &mut self.tcp.conns[idx as usize];
            if nodelay {
                c.flags |= F_NODELAY;
            } else {
                c.flags &= !F_NODELAY;
            }
            self.tcp_output(idx, now);
        }
    }

    /// Chooses the congestion control of a connection (state carries over as cwnd/ssthresh).
    pub fn tcp_set_congestion(&mut self, h: TcpHandle, cc: Congestion) {
        if let Some(c) = self.tcp.get_mut(h) {
            c.cc.set_kind(cc);
        }
    }

    /// Sets the connection's send buffer (Linux `SO_SNDBUF` on a connected socket; at least
    /// two segments). Data already queued beyond it stays; writes wait until it drains.
    pub fn tcp_set_snd_buf(&mut self, h: TcpHandle, bytes: u32) {
        if let Some(c) = self.tcp.get_mut(h) {
            c.snd_buf = bytes.max(2 * u32::from(c.mss));
        }
    }

    /// Sets the connection's user timeout (RFC 5482; Linux `TCP_USER_TIMEOUT`): sent data
    /// unacknowledged this long drops the connection. 0: the stack's `tcp_user_timeout_ms`.
    pub fn tcp_set_user_timeout(&mut self, h: TcpHandle, ms: u32) {
        if let Some(c) = self.tcp.get_mut(h) {
            c.user_timeout_ms = ms;
        }
    }

    /// Takes the error that ended the connection, if any.
    pub fn tcp_take_error(&mut self, h: TcpHandle) -> Option<TcpError> {
        self.tcp.get_mut(h)?.error.take()
    }

    /// Local and remote addresses.
    pub fn tcp_addrs(&self, h: TcpHandle) -> Option<(SocketAddrV4, SocketAddrV4)> {
        self.tcp.get(h).map(|c| (c.local, c.remote))
    }

    /// Connections in the table (every state, TIME-WAIT included).
    pub fn tcp_connections(&self) -> usize {
        self.tcp.conns.len()
    }

    /// Handles of every connection an application holds (accepted or connected, not yet closed
    /// by it), in table order: with [`Stack::tcp_info`], a listing like `ss`.
    pub fn tcp_handles(&self) -> impl Iterator<Item = TcpHandle> + '_ {
        self.tcp
            .conns
            .iter()
            .filter(|(_, c)| c.has(F_HANDLE))
            .map(|(idx, c)| TcpHandle {
                idx: idx as u32,
                gen: c.gen,
            })
    }

    /// Internals of a connection.
    pub fn tcp_info(&self, h: TcpHandle) -> Option<TcpInfo> {
        let c = self.tcp.get(h)?;
        let us = |v: u32| Duration::from_micros(u64::from(v));
        Some(TcpInfo {
            state: c.state,
            local: c.local,
            remote: c.remote,
            srtt: us(c.rtt.srtt),
            rttvar: us(c.rtt.rttvar),
            rto: us(c.rtt.rto),
            cwnd: c.cc.cwnd,
            ssthresh: c.cc.ssthresh,
            mss: c.mss,
            snd_wnd: c.snd_wnd,
            rcv_wnd: c.rcv_adv.wrapping_sub(c.rcv_nxt),
            unacked: c.snd_max.wrapping_sub(c.snd_una),
            send_queued: c.sndq.bytes(),
            recv_queued: c.rcv_queued,
            ooo_bytes: c.ooo.bytes(),
            retransmits: c.stats.retransmits,
            recoveries: c.stats.recoveries,
            rto_expirations: c.stats.rto_expirations,
            undos: c.rack.undos,
            timestamps: c.has(F_TS),
            sack: c.has(F_SACK),
            wscale: c.has(F_WS).then_some((c.snd_wscale, c.rcv_wscale)),
            congestion: c.cc.kind(),
            bytes_acked: c.stats.bytes_acked,
            bytes_received: c.stats.bytes_received,
        })
    }

    /// A frame for `tcp_send`: window empty after [`TCP_HEADROOM`] bytes.
    pub fn tcp_alloc(&mut self) -> Option<Frame> {
        let f = self.pool.alloc()?;
        let hr = self.pool.headroom().max(TCP_HEADROOM);
        let ok = self.pool.set_window(&f, hr, 0);
        debug_assert!(ok);
        Some(f)
    }

    /// Size in bytes of one connection's state (buffers apart): the struct plus its boxed parts.
    pub fn tcp_conn_size() -> usize {
        core::mem::size_of::<Conn>()
            + core::mem::size_of::<OooQueue>()
            + core::mem::size_of::<Stats>()
            + core::mem::size_of::<rack::Rack>()
    }

    /// Flushes connections touched by application calls or a burst: one output pass each.
    ///
    /// Each connection touched before the call gets one pass. One that touches itself again (its
    /// output stopped because the transmit queue is full) waits for the next flush, when the
    /// driver has taken frames: looping here until it could send would never end.
    pub(crate) fn tcp_flush(&mut self, now: Instant) {
        let mut work = core::mem::take(&mut self.tcp.flushing);
        core::mem::swap(&mut work, &mut self.tcp.touched);
        for idx in work.drain(..) {
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            c.flags &= !F_TOUCHED;
            if c.state == TcpState::Closed {
                if !c.has(F_HANDLE) && !c.has(F_ACCEPT_Q) {
                    self.tcp_free(idx);
                }
                continue;
            }
            self.tcp_output(idx, now);
            self.tcp_timers_changed(idx);
        }
        self.tcp.flushing = work;
    }
}
