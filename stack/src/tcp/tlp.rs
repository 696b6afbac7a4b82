//! Tail loss probe (RFC 8985 7).
//!
//! When the last segments of a flight are lost, no later segment is SACKed and neither RACK nor
//! DupThresh can see the loss: only the RTO would, after at least 200 ms, collapsing cwnd to one
//! segment. TLP sends one probe about two round trips after the last transmission or
//! acknowledgment instead: new data if the windows allow, else the highest-sequence segment
//! again. The probe's ACK carries the SACK information that lets RACK find the losses, and fast
//! recovery repairs them.
//!
//! The PTO lives in the `t_rack` slot, with `F_TLP` set: the RACK reordering timer and the PTO
//! are never needed at once (a PTO is scheduled only while nothing is SACKed and no recovery is
//! under way, RFC 8985 7.2). A due PTO runs before a due RTO: the PTO is capped at the RTO's
//! expiry and, as in RFC 8985's single timer, takes its place.
//!
//! Episodes (RFC 8985 7.4): a retransmitted probe is remembered (`Rack::tlp_end_seq`) until the
//! peer tells whether both the original and the probe arrived (D-SACK of the probe, or a second
//! duplicate ACK); if an ACK goes beyond the probe without that, the probe repaired a loss and
//! the window is reduced as a fast recovery would (Linux enters CWR).

use super::*;
use crate::counters::Event;

/// Worst-case delayed-ACK time of the peer (RFC 8985 7.2 `WCDelAckT`, 200 ms recommended;
/// Linux adds `TCP_RTO_MIN`, the same 200 ms): added to the PTO when a single segment is in
/// flight, which a receiver may hold for a delayed ACK.
const WC_DEL_ACK_US: u64 = 200_000;
/// PTO without an RTT sample (RFC 8985 7.2: 1 second).
const PTO_NO_SRTT_US: u64 = 1_000_000;

impl Stack {
    /// RFC 8985 7.2: a probe may be scheduled on a SACK connection with data in flight, out of
    /// fast recovery and RTO recovery, while nothing is SACKed.
    fn tcp_tlp_allowed(&self, idx: u32) -> bool {
        let c = &self.tcp.conns[idx as usize];
        self.cfg.tcp_tlp
            && c.has(F_SACK)
            && !c.has(F_RECOVERY)
            && !c.has(F_PERSIST)
            && matches!(
                c.state,
                TcpState::Established
                    | TcpState::CloseWait
                    | TcpState::FinWait1
                    | TcpState::Closing
                    | TcpState::LastAck
            )
            && c.snd_una != c.snd_max
            && c.snd_nxt == c.snd_max
            && !seq_lt(c.snd_una, c.recovery_point)
            && c.sndq.sacked_bytes == 0
    }

    /// Cancels a pending PTO (the RACK reordering timer, if that is what `t_rack` holds, stays).
    pub(crate) fn tcp_tlp_cancel(&mut self, idx: u32) {
        let c = &mut self.tcp.conns[idx as usize];
        if c.has(F_TLP) {
            c.flags &= !F_TLP;
            c.t_rack = Instant::MAX;
        }
    }

    /// Starts or restarts the PTO (RFC 8985 7.2 `TLP_calc_PTO`) after new data was sent or an
    /// ACK acknowledged new data; cancels it when a probe is not allowed. `keep`: a PTO already
    /// pending at that time is kept instead (an ACK that acknowledged nothing new).
    pub(crate) fn tcp_tlp_schedule(&mut self, idx: u32, now: Instant, keep: Option<Instant>) {
        let c = &self.tcp.conns[idx as usize];
        if c.t_rack != Instant::MAX && !c.has(F_TLP) {
            // The RACK reordering timer is pending: it comes first.
            return;
        }
        if !self.tcp_tlp_allowed(idx) {
            self.tcp_tlp_cancel(idx);
            return;
        }
        let c = &mut self.tcp.conns[idx as usize];
        let at = match keep {
            Some(at) => at,
            None => {
                let pto = if c.rtt.sampled {
                    let mut p = 2 * u64::from(c.rtt.srtt);
                    if c.snd_max.wrapping_sub(c.snd_una) <= u32::from(c.mss) {
                        p += WC_DEL_ACK_US;
                    }
                    p
                } else {
                    PTO_NO_SRTT_US
                };
                let at = now + Duration::from_micros(pto);
                if c.has(F_RTO_ARMED) {
                    at.min(c.t_rtx)
                } else {
                    at
                }
            }
        };
        c.t_rack = at;
        c.flags |= F_TLP;
    }

    /// The PTO expired (RFC 8985 7.3 `TLP_send_probe`): new data if the peer's window takes
    /// it, else the highest-sequence segment again; then the RTO, not another PTO, is armed.
    pub(crate) fn tcp_tlp_fire(&mut self, idx: u32, now: Instant) {
        if !self.tcp_tlp_allowed(idx) {
            return;
        }
        if self.tcp.conns[idx as usize].rack.tlp_end_seq.is_some() {
            // RFC 8985 7.4.2: one probe outstanding at most; the RTO stays armed.
            return;
        }
        let new = self.tcp_send_data(idx, now, true) > 0;
        let c = &self.tcp.conns[idx as usize];
        let probe_seq = if new {
            None
        } else {
            // The highest-sequence segment sent: the last data entry (its retransmission is
            // the one whose ACK or SACK reveals holes below it), or the FIN alone.
            let i = c.sndq.segs.iter().rposition(|s| seq_lt(s.seq, c.snd_nxt));
            match i {
                Some(i) if seq_le(c.sndq.segs[i].end(), c.snd_max) => {
                    let seq = c.sndq.segs[i].seq;
                    if !self.tcp_retransmit(idx, i, now, false) {
                        return;
                    }
                    Some(seq)
                }
                Some(_) => return,
                None if c.has(F_FIN_QUEUED) && c.snd_max == c.snd_end.wrapping_add(1) => {
                    let seq = c.snd_end;
                    if !self.tcp_emit(idx, seq, flags_fin_ack(), None, now) {
                        return;
                    }
                    let c = &mut self.tcp.conns[idx as usize];
                    c.stats.retransmits += 1;
                    self.counters.add(Event::TcpRetransSegs, 1);
                    Some(seq)
                }
                None => return,
            }
        };
        let c = &mut self.tcp.conns[idx as usize];
        c.rack.tlp_is_retrans = probe_seq.is_some();
        c.rack.tlp_seq = probe_seq.unwrap_or(0);
        c.rack.tlp_end_seq = Some(c.snd_max);
        // RFC 8985 7.3: the RTO, restarted from the probe.
        c.t_rtx = now + c.rtt.rto();
        c.flags |= F_RTO_ARMED;
        self.counters.add(Event::TcpLossProbes, 1);
    }

    /// RFC 8985 7.4.3 on every ACK: a probe found to have repaired a loss reduces the window
    /// once, as entering fast recovery would (Linux: CWR); `flight` is the flight before the
    /// ACK.
    pub(crate) fn tcp_tlp_on_ack(
        &mut self,
        idx: u32,
        ack: u32,
        pure_dupack: bool,
        dsack: Option<(u32, u32)>,
        flight: u32,
        now: Instant,
    ) {
        let c = &mut self.tcp.conns[idx as usize];
        if c.rack.tlp_on_ack(ack, pure_dupack, dsack) && !c.has(F_RECOVERY) {
            let mss = u32::from(c.mss);
            c.cc.on_congestion(flight, mss, now);
            c.cc.cwnd = c.cc.ssthresh;
            self.counters.add(Event::TcpLossProbeRecoveries, 1);
        }
    }
}

fn flags_fin_ack() -> u8 {
    wire::flags::FIN | wire::flags::ACK
}
