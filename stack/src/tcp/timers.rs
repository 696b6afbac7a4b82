//! Connection timers on the stack's timer wheel.
//!
//! A connection keeps four deadlines: `t_rtx` (RTO, SYN/SYN-ACK retransmission, or the persist
//! timer when `F_PERSIST`), `t_delack` (delayed ACK), `t_misc` (TIME-WAIT, orphaned
//! FIN-WAIT-2, keepalive) and `t_rack` (RACK reordering timer, or the tail loss probe timer
//! when `F_TLP`). The wheel holds one entry per connection at the earliest of them,
//! moved in O(1) when they change; expiry runs only the connections that are due.

use super::*;
use crate::counters::Event;

/// Consecutive RTOs after which a path MTU black hole is suspected (Linux `tcp_retries1`).
const BLACKHOLE_RTOS: u32 = 3;
/// RTOs without progress after which, under memory pressure, a connection holding frames is
/// reset (`tcp_mem_stalled_over_share`).
const STALLED_RTOS: u32 = 4;
/// Connections whose timers expired that one pass runs at most; the rest wait for the next
/// pass (`tcp_next_deadline` says "now" meanwhile). When thousands of connections stalled at
/// the same moment their RTOs expire together: run in one pass, the storm held the loop (and
/// every other connection's segments) for its whole length.
pub(crate) const TIMER_BUDGET: usize = 512;
/// First MSS tried on a black hole (Linux `tcp_base_mss`).
const BASE_MSS: u16 = 1024;
/// Smallest path MTU we go down to, on a black hole or an ICMP report (Linux `min_pmtu`).
pub(crate) const MIN_PMTU: usize = 552;

impl Stack {
    /// Re-arms the connection's wheel entry at its earliest deadline.
    pub(crate) fn tcp_timers_changed(&mut self, idx: u32) {
        let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
            return;
        };
        let next = c
            .t_rtx
            .min(c.t_delack)
            .min(c.t_misc)
            .min(c.t_rack)
            .min(c.t_ooo);
        match (next == Instant::MAX, c.timer) {
            (true, Some(id)) => {
                self.tcp.wheel.cancel(id);
                c.timer = None;
            }
            (true, None) => {}
            (false, Some(id)) => self.tcp.wheel.reschedule(id, next),
            (false, None) => c.timer = Some(self.tcp.wheel.insert(idx, next)),
        }
    }

    /// The earliest TCP deadline (the wheel's), or "now" while expired connections wait for
    /// their turn.
    pub(crate) fn tcp_next_deadline(&self) -> Option<Instant> {
        if !self.tcp.expired.is_empty() {
            return Some(self.tcp.timers_at);
        }
        self.tcp.wheel.next_deadline()
    }

    /// Runs the connection timers due at `now`: at most [`TIMER_BUDGET`] connections, oldest
    /// expiry first; the others wait for the next pass.
    pub(crate) fn tcp_on_timers(&mut self, now: Instant) {
        self.tcp.timers_at = now;
        let mut fired = core::mem::take(&mut self.tcp.fired);
        fired.clear();
        self.tcp.wheel.advance(now, &mut fired);
        for &idx in &fired {
            // The wheel dropped these entries: forget their ids at once (a later change arms a
            // fresh entry instead of moving a dead one, whose slot may be someone else's now).
            if let Some(c) = self.tcp.conns.get_mut(idx as usize) {
                c.timer = None;
            }
        }
        self.tcp.expired.extend(fired.drain(..));
        self.tcp.fired = fired;
        let n = self.tcp.expired.len().min(TIMER_BUDGET);
        for _ in 0..n {
            let idx = self.tcp.expired.pop_front().expect("counted");
            self.tcp.note_app(idx);
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if let Some(id) = c.timer.take() {
                // Re-armed while it waited: this pass runs whatever is due, and re-arms below.
                self.tcp.wheel.cancel(id);
            }
            if c.has(F_TLP) && c.t_rack <= now {
                // The PTO first: capped at the RTO's expiry, it stands in for it (RFC 8985 7.2).
                c.t_rack = Instant::MAX;
                c.flags &= !F_TLP;
                self.tcp_tlp_fire(idx, now);
            }
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if c.t_rtx <= now {
                c.t_rtx = Instant::MAX;
                if c.has(F_PERSIST) {
                    self.tcp_persist_expired(idx, now);
                } else {
                    c.flags &= !F_RTO_ARMED;
                    self.tcp_rto_expired(idx, now);
                }
            }
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if c.t_rack <= now && !c.has(F_TLP) {
                c.t_rack = Instant::MAX;
                self.tcp_rack_timer(idx, now);
            }
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if c.t_delack <= now {
                c.t_delack = Instant::MAX;
                if c.last_ack_sent != c.rcv_nxt || c.has(F_ACK_NOW) {
                    self.counters.add(Event::TcpDelayedAcks, 1);
                    c.flags |= F_ACK_NOW;
                }
                self.tcp_output(idx, now);
            }
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if c.t_misc <= now {
                c.t_misc = Instant::MAX;
                self.tcp_misc_expired(idx, now);
            }
            let Some(c) = self.tcp.conns.get_mut(idx as usize) else {
                continue;
            };
            if c.t_ooo <= now {
                // No progress for tcp_ooo_timeout_ms: the out-of-order data is released (the
                // peer resends what it still needs delivered; RFC 2018 8).
                c.t_ooo = Instant::MAX;
                if !c.ooo.is_empty() {
                    c.ooo.clear(&mut self.pool);
                    c.flags |= F_ACK_NOW;
                    self.counters.add(Event::TcpOfoTimeouts, 1);
                    self.tcp.touch(idx);
                }
            }
            if self.tcp.conns.contains(idx as usize) {
                self.tcp_mem_sync(idx);
                self.tcp_timers_changed(idx);
            }
        }
        self.tcp_coalesce_reclaim();
        self.tcp_flush(now);
    }

    /// RFC 6298 5.4-5.7 (and RFC 9293 3.8.3 for the SYN states).
    fn tcp_rto_expired(&mut self, idx: u32, now: Instant) {
        let syn_retries = self.cfg.tcp_syn_retries;
        let retries2 = self.cfg.tcp_retries2;
        let mtu_probing = self.cfg.tcp_mtu_probing;
        if self.tcp_out_of_time(idx, now) {
            return;
        }
        let c = &mut self.tcp.conns[idx as usize];
        c.retries = c.retries.saturating_add(1);
        c.stats.rto_expirations += 1;
        self.counters.add(Event::TcpRtoExpirations, 1);
        match c.state {
            TcpState::SynSent | TcpState::SynReceived => {
                if u32::from(c.retries) > syn_retries {
                    let e = c
                        .soft_error
                        .map_or(TcpError::TimedOut, TcpError::Unreachable);
                    self.tcp_fail(idx, e);
                    return;
                }
                c.rtt.back_off();
                self.tcp_send_syn(idx, now);
                self.tcp_arm_rto(idx, now);
            }
            TcpState::Closed | TcpState::Listen | TcpState::TimeWait => {}
            _ => {
                if c.snd_una == c.snd_max {
                    return;
                }
                if u32::from(c.retries) > retries2 {
                    let e = c
                        .soft_error
                        .map_or(TcpError::TimedOut, TcpError::Unreachable);
                    self.tcp_fail(idx, e);
                    return;
                }
                // Only where smaller segments can help: the segment that keeps being lost is
                // larger than what the next step would send. A peer that simply stopped
                // ACKing a small segment is no black hole, and splitting would only multiply
                // the frames it pins.
                let head_len = c.sndq.segs.front().map_or(0, |s| s.len);
                let next_mss = if c.mss > BASE_MSS {
                    BASE_MSS
                } else {
                    c.mss / 2
                };
                if mtu_probing && u32::from(c.retries) >= BLACKHOLE_RTOS && head_len > next_mss {
                    // RFC 4821 5.3 / Linux tcp_mtu_probing: our DF segments may be dropped by
                    // a router that sends no ICMP; try smaller ones (1024, then halving down to
                    // a 552-byte path MTU). Lost segments are split on the resend below.
                    let opt = if c.has(F_TS) { 12 } else { 0 };
                    let floor = (MIN_PMTU - IPV4_HLEN - wire::TCP_HLEN - opt) as u16;
                    let next = if c.mss > BASE_MSS {
                        BASE_MSS
                    } else {
                        c.mss / 2
                    };
                    let next = next.max(floor);
                    if next < c.mss {
                        c.mss = next;
                        self.counters.add(Event::TcpMtuBlackholes, 1);
                    }
                }
                let mss = u32::from(c.mss);
                if c.retries == 1 {
                    // RFC 5681 (4): ssthresh from the flight size, once per loss episode.
                    let flight = c.snd_max.wrapping_sub(c.snd_una);
                    if !c.has(F_RECOVERY) {
                        c.rack.start_undo(c.cc);
                    }
                    c.cc.on_rto(flight, mss, now);
                } else {
                    c.cc.cwnd = mss;
                }
                // RFC 6675 5.1: recovery ends; the scoreboard is cleared (RFC 2018 8: the
                // receiver may have reneged) and everything is resent from SND.UNA.
                // RFC 8985 7.4.1: a new TLP episode.
                c.flags &= !F_RECOVERY;
                c.rack.tlp_end_seq = None;
                if c.has(F_TLP) {
                    c.flags &= !F_TLP;
                    c.t_rack = Instant::MAX;
                }
                c.recovery_point = c.snd_max;
                c.dupacks = 0;
                if c.sndq.on_rto() > 0 {
                    self.counters.add(Event::TcpSackScoreboardResets, 1);
                }
                c.snd_nxt = c.snd_una;
                c.rtt.back_off();
                // Data the peer leaves unacknowledged this long should not pin whole frames:
                // small payloads move into shared frames before the resend.
                self.tcp_collapse_sndq(idx, 16);
                if self.tcp_mem_stalled_over_share(idx, now) {
                    return;
                }
                self.tcp_output(idx, now);
                let c = &mut self.tcp.conns[idx as usize];
                if !c.has(F_RTO_ARMED) {
                    c.t_rtx = now + c.rtt.rto();
                    c.flags |= F_RTO_ARMED;
                }
            }
        }
    }

    /// The RACK reordering timer (RFC 8985 6.3): segments not deemed lost on the last ACK only
    /// because their reordering window had not passed.
    fn tcp_rack_timer(&mut self, idx: u32, now: Instant) {
        if !matches!(
            self.tcp.conns[idx as usize].state,
            TcpState::Established
                | TcpState::FinWait1
                | TcpState::Closing
                | TcpState::LastAck
                | TcpState::CloseWait
        ) {
            return;
        }
        if self.tcp_rack_detect(idx, now) {
            self.counters.add(Event::TcpRackTimeouts, 1);
            self.tcp_maybe_enter_recovery(idx, now);
            self.tcp_output(idx, now);
        }
    }

    /// RFC 5482 user timeout, the persist timeout and `tcp_orphan_retries`, checked when the
    /// retransmission or persist timer fires: true if the connection was dropped.
    fn tcp_out_of_time(&mut self, idx: u32, now: Instant) -> bool {
        let c = &self.tcp.conns[idx as usize];
        if matches!(
            c.state,
            TcpState::SynSent | TcpState::SynReceived | TcpState::Closed | TcpState::TimeWait
        ) {
            return false;
        }
        let stalled = if c.stalled_since == Instant::MAX {
            Duration::ZERO
        } else {
            now.saturating_duration_since(c.stalled_since)
        };
        let user = match c.user_timeout_ms {
            0 => self.cfg.tcp_user_timeout_ms,
            ms => u64::from(ms),
        };
        let persist = self.cfg.tcp_persist_timeout_ms;
        let reason = if user > 0 && stalled >= Duration::from_millis(user) {
            Some(Event::TcpUserTimeouts)
        } else if c.has(F_PERSIST) && persist > 0 && stalled >= Duration::from_millis(persist) {
            Some(Event::TcpPersistTimeouts)
        } else if c.has(F_ORPHAN)
            && u32::from(c.retries.max(c.probes)) >= self.cfg.tcp_orphan_retries
        {
            Some(Event::TcpOrphanTimeouts)
        } else {
            None
        };
        let Some(ev) = reason else { return false };
        self.counters.add(ev, 1);
        tracing::debug!(reason = ev.name(), "tcp connection dropped");
        let e = c
            .soft_error
            .map_or(TcpError::TimedOut, TcpError::Unreachable);
        if c.has(F_ORPHAN) {
            // Linux tcp_out_of_resources / tcp_write_timeout: an orphan is reset.
            self.tcp_reset_and_close(idx, now);
        } else {
            self.tcp_fail(idx, e);
        }
        true
    }

    /// Under memory pressure, a connection whose peer leaves data unacknowledged is reset
    /// when it holds frames and: it is over its fair share, or TCP is at its hard limit, after
    /// two RTOs without progress (0.6 s at the minimum RTO); in any case after
    /// [`STALLED_RTOS`] RTOs (3 s). The stalled pay, not the connections making progress
    /// (Linux resets orphans this way, `tcp_out_of_resources`; we extend it to every stalled
    /// connection, which is what keeps new connections served). True if reset.
    fn tcp_mem_stalled_over_share(&mut self, idx: u32, now: Instant) -> bool {
        let c = &self.tcp.conns[idx as usize];
        let at_high = self.tcp.mem.frames >= self.tcp_mem_limits().high;
        let held = c.mem as usize;
        let over = held > self.tcp_mem_fair_share() || at_high;
        if !self.tcp.mem.pressure
            || held == 0
            || !(u32::from(c.retries) >= STALLED_RTOS || (c.retries >= 2 && over))
        {
            return false;
        }
        self.counters.add(Event::TcpAbortOnMemory, 1);
        let e = c
            .soft_error
            .map_or(TcpError::TimedOut, TcpError::Unreachable);
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_HANDLE) {
            c.error = Some(e);
        }
        let (seq, ack) = (c.snd_nxt, c.rcv_nxt);
        self.tcp_send_rst_for(idx, seq, ack, now);
        self.tcp_set_closed(idx);
        true
    }

    /// Zero-window probe, backed off like the RTO; gives up only by the user timeout, the
    /// persist timeout or, for an orphan, `tcp_orphan_retries` (Linux tcp_probe_timer).
    fn tcp_persist_expired(&mut self, idx: u32, now: Instant) {
        if self.tcp_out_of_time(idx, now) {
            return;
        }
        let c = &mut self.tcp.conns[idx as usize];
        c.probes = c.probes.saturating_add(1);
        self.counters.add(Event::TcpWindowProbes, 1);
        self.tcp_send_probe(idx, now);
        let c = &mut self.tcp.conns[idx as usize];
        c.rtt.back_off();
        c.t_rtx = now + c.rtt.rto();
    }

    fn tcp_misc_expired(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        match c.state {
            TcpState::TimeWait | TcpState::FinWait2 => {
                // End of 2 MSL, or an orphaned FIN-WAIT-2 timing out.
                if c.state == TcpState::FinWait2 {
                    self.counters.add(Event::TcpFinWait2Timeouts, 1);
                }
                self.tcp_set_closed(idx);
                let c = &self.tcp.conns.get(idx as usize);
                if c.is_some_and(|c| !c.has(F_HANDLE) && !c.has(F_TOUCHED)) {
                    self.tcp_free(idx);
                }
            }
            TcpState::Established | TcpState::CloseWait if c.has(F_KEEPALIVE) => {
                // RFC 1122 4.2.3.6: probes after the idle time; the connection dies after
                // `tcp_keepalive_probes` unanswered ones.
                if u32::from(c.probes) >= self.cfg.tcp_keepalive_probes {
                    self.tcp_fail(idx, TcpError::TimedOut);
                    return;
                }
                c.probes += 1;
                c.t_misc = now + Duration::from_secs(self.cfg.tcp_keepalive_intvl_s);
                self.counters.add(Event::TcpKeepaliveProbes, 1);
                self.tcp_send_probe(idx, now);
            }
            _ => {}
        }
    }

    /// TIME-WAIT for 2 MSL (RFC 9293 3.10.7.4); the connection keeps only its sequence state.
    pub(crate) fn tcp_enter_time_wait(&mut self, idx: u32, now: Instant) {
        let tw = Duration::from_millis(self.cfg.tcp_time_wait_ms);
        let c = &mut self.tcp.conns[idx as usize];
        c.state = TcpState::TimeWait;
        c.t_rtx = Instant::MAX;
        c.t_rack = Instant::MAX;
        c.flags &= !(F_RTO_ARMED | F_PERSIST | F_TLP);
        c.t_misc = now + tw;
        c.sndq.clear(&mut self.pool);
        c.ooo.clear(&mut self.pool);
    }

    /// An orphaned FIN-WAIT-2 lasts `tcp_fin_timeout_ms` (Linux `tcp_fin_timeout`).
    pub(crate) fn tcp_arm_fin_wait2(&mut self, idx: u32, now: Instant) {
        let t = Duration::from_millis(self.cfg.tcp_fin_timeout_ms);
        let c = &mut self.tcp.conns[idx as usize];
        if !c.has(F_HANDLE) {
            c.t_misc = now + t;
        }
    }

    /// Keepalive: armed while established and idle.
    pub(crate) fn tcp_keepalive_touch(&mut self, idx: u32, now: Instant) {
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_KEEPALIVE) && matches!(c.state, TcpState::Established | TcpState::CloseWait) {
            c.probes = 0;
            c.t_misc = now + Duration::from_secs(u64::from(c.keepalive_idle_s));
        }
    }
}
